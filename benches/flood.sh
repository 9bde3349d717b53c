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
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOD_SECONDS=${1:-20}
EXTRA_RESPOND=${2:-}
# shellcheck source=benches/lab.sh
source benches/lab.sh
lab_init nfsf
lab_build --bin nfsentry
lab_veth 10.214.0.1/24 10.214.0.2/24
SCANNER=10.214.0.1 TARGET=10.214.0.2

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
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

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
