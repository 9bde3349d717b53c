#!/usr/bin/env bash
# What a spoofed flood costs nfsentry with its limits on, and whether a real scanner still gets
# blocked in the middle of it.
#
#   bash benches/flood.sh [SECONDS] [EXTRA_RESPOND_TOML]
#
# hping3 --flood --rand-source sends SYNs to a bait port from a scanner namespace, as fast as it
# goes, for SECONDS (default 20). Halfway through, nmap scans four bait ports from the scanner
# namespace's own address, again and again until that address is in the kernel's blocked set.
# Prints: packets the daemon answered, blocks created and blocks a second, the blocked set's
# size, the daemon's peak RSS, log and history bytes a second, and when the real scanner was
# blocked. EXTRA_RESPOND_TOML is added to [respond], e.g. 'max_blocks_per_sec = 0' to compare
# with the rate cap off. Needs root, hping3, nmap, nft. Figures from a shared machine: compare
# runs made together.
#
#   bash benches/flood.sh --sources N [LIMIT_SECONDS] [HOLD_SECONDS]
#
# Memory held within max_sources: the same flood, alert-only with a trigger no source reaches,
# against a daemon with `max_sources = N`, until its status reports N sources tracked (giving up
# after LIMIT_SECONDS, default 300), then for HOLD_SECONDS more (default 10) while the full table
# evicts, after the default table of 65536 in the same run. Prints for each: sources tracked and
# evicted, seconds to fill, RSS at start, peak RSS (VmHWM), RSS at the end, and the RSS added
# per tracked source.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_SOURCES=""
if [ "${1:-}" = --sources ]; then
  MAX_SOURCES=${2:?--sources takes the table size, such as 1000000}
  FILL_LIMIT=${3:-300}
  HOLD_SECONDS=${4:-10}
  shift 2
  set --
fi
FLOOD_SECONDS=${1:-20}
EXTRA_RESPOND=${2:-}
# shellcheck source=benches/lab.sh
source benches/lab.sh
lab_init nfsf
lab_build --bin nfsentry
lab_veth 10.214.0.1/24 10.214.0.2/24
SCANNER=10.214.0.1 TARGET=10.214.0.2
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# With --sources: how much memory a source table of that many spoofed sources takes, the
# default table (65536) measured first in the same run for comparison.
if [ -n "$MAX_SOURCES" ]; then
  # Each try runs `nfsentry status`: no need to ask twenty times a second.
  LAB_POLL=0.25
  # Fields of the daemon's status, from its control socket (e.g. sources_tracked).
  status_of() { # field...
    "$BIN/nfsentry" status --json --config "$WORK/table.toml" 2>/dev/null |
      /usr/bin/python3 -c 'import json, sys
status = json.load(sys.stdin)
print(*(status[field] for field in sys.argv[1:]))' "$@" 2>/dev/null
  }
  # shellcheck disable=SC2317 # called by wait_until
  table_full() { [ "$(status_of sources_tracked || echo 0)" -ge "$1" ]; }
  kb() { awk -v k="$2" '$1 == k ":" { print $2 }' "/proc/$1/status"; }
  # Fills the table, keeps flooding for HOLD_SECONDS more (the full table evicting), and sets
  # ROW to "max_sources tracked evicted seconds start_kB peak_kB now_kB bytes_per_source".
  measure_table() { # max_sources
    rm -rf "$WORK/state" "$WORK/daemon.log"
    # Alert-only, with a trigger no source reaches: every spoofed source is tracked, none is
    # detected, logged or blocked, so the table is all that grows.
    cat > "$WORK/table.toml" <<CONF
[daemon]
state_dir = "$WORK/state"
log = "file:$WORK/daemon.log"
control_socket = "$WORK/control.sock"
interfaces = ["$TAG-b"]
[detect]
scan_trigger = 4000000000
max_sources = $1
[respond]
verdict = "drop"
actions = []
CONF
    ip netns exec "$TGT" "$BIN/nfsentry" run --config "$WORK/table.toml" 2> "$WORK/stderr" &
    local daemon=$! flood start_kb start peak_kb now_kb counts seconds
    LAB_PIDS+=("$daemon")
    LAB_SHOW_ON_GIVE_UP=$WORK/stderr
    wait_until 30 "nfsentry to start" grep -qs "watching;" "$WORK/daemon.log"
    start_kb=$(kb "$daemon" VmRSS)
    start=$(now)
    ip netns exec "$SCAN" hping3 -q --flood --rand-source -S -p 111 "$TARGET" >/dev/null 2>&1 &
    flood=$!
    LAB_PIDS+=("$flood")
    wait_until "$FILL_LIMIT" "$1 sources tracked" table_full "$1"
    seconds=$(elapsed "$start")
    sleep "$HOLD_SECONDS"
    kill "$flood"
    wait "$flood" 2>/dev/null || true
    counts=$(status_of sources_tracked sources_evicted)
    peak_kb=$(kb "$daemon" VmHWM)
    now_kb=$(kb "$daemon" VmRSS)
    kill -TERM "$daemon"
    wait "$daemon" 2>/dev/null || true
    ROW=$(echo "$1 $counts $seconds $start_kb $peak_kb $now_kb" |
      awk '{ printf "%s %.1f\n", $0, ($6 - $5) * 1024 / $2 }')
  }
  echo "spoofed flood (hping3 --flood --rand-source to a bait port, alert-only, trigger never"
  echo "reached: every source tracked, none blocked) until the source table is full, then"
  echo "$HOLD_SECONDS s more; RSS in kB; bytes/source: (peak RSS - RSS at start) / sources tracked"
  printf '%-12s %-16s %-10s %-8s %-14s %-18s %-10s %s\n' max_sources "sources tracked" evicted \
    "to fill" "RSS at start" "peak RSS (VmHWM)" "RSS now" bytes/source
  for max in 65536 "$MAX_SOURCES"; do
    measure_table "$max"
    # shellcheck disable=SC2086 # the fields of one row
    printf '%-12s %-16s %-10s %-8s %-14s %-18s %-10s %s\n' $ROW
  done
  speed_row "daemon RSS bytes/tracked source, spoofed flood until $MAX_SOURCES sources are tracked" \
    "${ROW##* }" "" "" "printed"

  exit 0
fi

cat > "$WORK/nfsentry.toml" <<CONF
[daemon]
state_dir = "$WORK/state"
log = "file:$WORK/daemon.log"
interfaces = ["$TAG-b"]
[respond]
$EXTRA_RESPOND
CONF
ip netns exec "$TGT" "$BIN/nfsentry" run --config "$WORK/nfsentry.toml" 2> "$WORK/stderr" &
D=$!; LAB_PIDS+=("$D")
until grep -qs "watching;" "$WORK/daemon.log"; do
  kill -0 "$D" 2>/dev/null || { cat "$WORK/stderr"; exit 1; }
  sleep 0.1
done

# Plain text, not -j: nft's JSON output of a set with 65,536 elements takes minutes.
blocked_set() {
  ip netns exec "$TGT" nft list set inet nfsentry blocked_v4 > "$WORK/set.txt"
}
blocked_count() {
  blocked_set
  grep -oE '\b[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\b' "$WORK/set.txt" | wc -l
}
scanner_blocked() {
  blocked_set || return 1
  grep -qF "$SCANNER " "$WORK/set.txt"
}

START=$(now)
ip netns exec "$SCAN" hping3 -q --flood --rand-source -S -p 111 "$TARGET" >/dev/null 2>&1 &
FLOOD=$!; LAB_PIDS+=("$FLOOD")

HALF=$(awk -v s="$FLOOD_SECONDS" 'BEGIN { print s / 2 }')
sleep "$HALF"
SCAN_START=$(now)
SCANNER_BLOCKED="not blocked"
NMAP_RUNS=0
DEADLINE=$(awk -v s="$START" -v f="$FLOOD_SECONDS" 'BEGIN { printf "%.3f", s + f }')
while awk -v d="$DEADLINE" -v n="$(now)" 'BEGIN { exit !(n < d) }'; do
  if scanner_blocked; then
    SCANNER_BLOCKED="blocked $(elapsed "$SCAN_START") s after the scan began ($NMAP_RUNS nmap runs)"
    break
  fi
  ip netns exec "$SCAN" timeout 10 nmap -n -Pn -T4 --max-retries 1 -sS -p 1,11,79,31337 \
    "$TARGET" >/dev/null 2>&1 || true
  NMAP_RUNS=$((NMAP_RUNS + 1))
done
REST=$(awk -v d="$DEADLINE" -v n="$(now)" 'BEGIN { r = d - n; printf "%.3f", (r > 0 ? r : 0) }')
sleep "$REST"
SECONDS_RUN=$(elapsed "$START")
kill "$FLOOD"

RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/"$D"/status)
BLOCKED_NOW=$(blocked_count)
kill -USR1 "$D"
until grep -qs "status: " "$WORK/daemon.log"; do sleep 0.1; done
STATUS=$(grep "status: " "$WORK/daemon.log" | tail -1 | sed 's/.*status: //')
kill -TERM "$D"; wait "$D" 2>/dev/null || true

HISTORY_LINES=$(wc -l < "$WORK/state/history")
HISTORY_BYTES=$(wc -c < "$WORK/state/history")
LOG_BYTES=$(wc -c < "$WORK/daemon.log")
per_second() { awk -v n="$1" -v s="$SECONDS_RUN" 'BEGIN { printf "%.0f", n / s }'; }
echo "spoofed flood, ${SECONDS_RUN} s, hping3 --flood --rand-source to a bait port${EXTRA_RESPOND:+ ($EXTRA_RESPOND)}:"
echo "  packets answered:   $(echo "$STATUS" | grep -o '^[0-9]* packets queued' | awk '{print $1}') ($(per_second "$(echo "$STATUS" | grep -o '^[0-9]*')")/s)"
echo "  blocks created:     $HISTORY_LINES ($(per_second "$HISTORY_LINES")/s); $BLOCKED_NOW in blocked_v4 at the end"
echo "  daemon peak RSS:    ${RSS_KB} kB"
echo "  log:                $LOG_BYTES bytes ($(per_second "$LOG_BYTES") bytes/s)"
echo "  history:            $HISTORY_BYTES bytes ($(per_second "$HISTORY_BYTES") bytes/s)"
echo "  real scanner:       $SCANNER_BLOCKED"
echo "  status:             $STATUS"
