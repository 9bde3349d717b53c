#!/usr/bin/env bash
# Packets per second through nfsentry's NFQUEUE pipeline, against a minimal accept-everything
# NFQUEUE consumer (examples/accept_all.rs) measured in the same run on the same namespaces.
#
#   bash benches/throughput.sh [SECONDS]
#
# Traffic: hping3 --flood from a scanner namespace to a target namespace over a veth pair.
#  1. one scanner, SYNs to a monitored port; nfsentry in alert-only mode
#     (actions = []) so every packet goes through parse, classify, state and verdict;
#  2. a spoofed flood (--rand-source) with blocking on: every packet is a new source, so every
#     packet is a detection plus a block order (nft set insert, journal, history line).
# Figures are packets answered per second by each consumer; read the ratios, not the absolute
# numbers (these machines are shared).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-5}
TAG=nfsb$$
SCAN=$TAG-s TGT=$TAG-t
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$SCAN" 2>/dev/null || true
  ip netns del "$TGT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet --bin nfsentry --example accept_all
BIN=${CARGO_TARGET_DIR:-target}/release

ip netns add "$SCAN"; ip netns add "$TGT"
ip link add "$TAG-a" netns "$SCAN" type veth peer name "$TAG-b" netns "$TGT"
ip -n "$SCAN" addr add 10.213.0.1/24 dev "$TAG-a"
ip -n "$TGT" addr add 10.213.0.2/24 dev "$TAG-b"
for ns in "$SCAN" "$TGT"; do ip -n "$ns" link set lo up; done
ip -n "$SCAN" link set "$TAG-a" up; ip -n "$TGT" link set "$TAG-b" up

flood() { # extra hping3 args...
  ip netns exec "$SCAN" hping3 -q --flood -S -p 23 "$@" 10.213.0.2 >/dev/null 2>&1 &
  echo $!
}

# Packets answered during the measuring window; $1 = command printing the running total.
measure() {
  local read_total=$1 before after
  sleep 1 # warm-up
  before=$($read_total)
  sleep "$SECONDS_PER_RUN"
  after=$($read_total)
  echo $(( (after - before) / SECONDS_PER_RUN ))
}

# --- baseline: accept everything, same ports queued by one plain rule ---
ip netns exec "$TGT" nft add table inet base
ip netns exec "$TGT" nft add chain inet base pre '{ type filter hook prerouting priority mangle; }'
ip netns exec "$TGT" iptables-nft -t mangle -A PREROUTING -p tcp --dport 1:1023 -j NFQUEUE --queue-num 0 --queue-bypass
ip netns exec "$TGT" "$BIN/examples/accept_all" 0 > "$WORK/base.out" &
BASE=$!; PIDS+=("$BASE")
until grep -qs ready "$WORK/base.out"; do sleep 0.1; done
base_total() { kill -USR1 "$BASE"; sleep 0.2; grep count "$WORK/base.out" | tail -1 | awk '{print $2}'; }
FLOOD=$(flood); PIDS+=("$FLOOD")
BASE_PPS=$(measure base_total)
kill "$FLOOD"; kill "$BASE"; wait "$BASE" 2>/dev/null || true
ip netns exec "$TGT" iptables-nft -t mangle -F PREROUTING
ip netns exec "$TGT" nft delete table inet base

# --- nfsentry ---
run_nfsentry() { # config-extra
  cat > "$WORK/nfsentry.toml" <<CONF
[daemon]
state_dir = "$WORK/state-$1"
interfaces = ["$TAG-b"]
[monitor]
tcp_ports = ["1-1023"]
[detect]
max_sources = 65536
$2
CONF
  ip netns exec "$TGT" "$BIN/nfsentry" run --config "$WORK/nfsentry.toml" >/dev/null 2> "$WORK/$1.log" &
  echo $!
}
daemon_total() { # pid log
  kill -USR1 "$1"; sleep 0.2
  grep -o '[0-9]* packets queued' "$2" | tail -1 | awk '{print $1}'
}
wait_ready() { until grep -qs "watching;" "$1"; do sleep 0.1; done; }
# The daemon is not this shell's child (it was started in a command substitution).
stop_daemon() { kill -TERM "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

D=$(run_nfsentry alert $'[respond]\nactions = []'); PIDS+=("$D")
wait_ready "$WORK/alert.log"
FLOOD=$(flood); PIDS+=("$FLOOD")
ALERT_PPS=$(measure "daemon_total $D $WORK/alert.log")
kill "$FLOOD"; stop_daemon "$D"

D=$(run_nfsentry spoofed $'[respond]\nmax_blocks = 1000000\n'); PIDS+=("$D")
wait_ready "$WORK/spoofed.log"
FLOOD=$(flood --rand-source); PIDS+=("$FLOOD")
SPOOF_PPS=$(measure "daemon_total $D $WORK/spoofed.log")
kill "$FLOOD"; sleep 0.5
BLOCKED=$(ip netns exec "$TGT" nft -j list set inet nfsentry blocked_v4 | grep -o '"elem": \[[^]]*' | tr ',' '\n' | wc -l)
RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/"$D"/status)
stop_daemon "$D"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
echo "throughput over ${SECONDS_PER_RUN}s windows (packets answered per second):"
printf '  %-48s %10s pps  ratio 1.00 (baseline)\n' "accept-all NFQUEUE consumer" "$BASE_PPS"
printf '  %-48s %10s pps  ratio %s\n' "nfsentry, one scanner, alert-only" "$ALERT_PPS" "$(ratio "$ALERT_PPS" "$BASE_PPS")"
printf '  %-48s %10s pps  ratio %s\n' "nfsentry, spoofed flood, blocking every source" "$SPOOF_PPS" "$(ratio "$SPOOF_PPS" "$BASE_PPS")"
echo "  spoofed flood: $BLOCKED sources in blocked_v4 afterwards; daemon peak RSS ${RSS_KB} kB"
