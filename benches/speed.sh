#!/usr/bin/env bash
# Every figure nfsentry's speed goals name, in one table: runs the benches one after the other,
# each against its baseline measured in the same run, and prints one table (figure, nfsentry,
# baseline, ratio, goal), ready for README's Speed section:
#
#   throughput.sh             CPU per packet against a bare NFQUEUE loop, paced and deep, and
#                             what a stalled reader loses
#   the pipeline bench        parse + classify + track per packet, allocations, bytes per source
#   flood.sh --sources        the daemon's RSS per source with a million spoofed sources
#   trigger_to_block.sh       detection to the kernel's ack, against the kernel's commit alone
#   examples/block_storm      addresses/s into a blocked set, against `nft add element` processes
#   latency.sh                what the queue adds to a packet, against a bare NFQUEUE loop's
#
#   bash benches/speed.sh
#
# About ten minutes; needs root and what the benches need (nft, hping3, nmap, /usr/bin/python3).
# Each bench's own output goes to a log named at the end. These machines are shared: compare
# the ratios of one run, not absolute figures across runs.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SPEED_ROWS=$(mktemp)
LOG=$(mktemp --suffix=.speed.log)
export SPEED_ROWS
trap 'rm -f "$SPEED_ROWS"' EXIT

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
run() { # what command...
  local what=$1
  shift
  echo "speed: $what" >&2
  echo "### $what" >> "$LOG"
  "$@" >> "$LOG" 2>&1
}
# The markdown rows of a table a bench printed, with the goal as a fifth column.
rows_of() { # pattern goal
  grep -E "^\| $1" "$LOG" | sed "s/ |\$/ | $2 |/" >> "$SPEED_ROWS"
}

run "throughput.sh" bash benches/throughput.sh
run "the pipeline bench" cargo bench --quiet --bench pipeline -- nothing_matches
rows_of "parse \+ classify \+ track" "< 100"
rows_of "heap allocations/packet" "0"
rows_of "state bytes/tracked source" "≤ 64"
run "flood.sh --sources 1000000" bash benches/flood.sh --sources 1000000
run "trigger_to_block.sh" bash benches/trigger_to_block.sh
cargo build --release --quiet --example block_storm
run "block_storm" "${CARGO_TARGET_DIR:-target}/release/examples/block_storm"
rows_of "addresses/s into a blocked set" "≥ 500000"
run "latency.sh" bash benches/latency.sh

echo
echo "nfsentry $(git describe --always --dirty 2>/dev/null || echo '?') on $(nproc) CPUs" \
  "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), kernel $(uname -r);" \
  "load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo
echo "| figure | nfsentry | baseline | ratio | goal |"
echo "| --- | --- | --- | --- | --- |"
cat "$SPEED_ROWS"
echo
echo "each bench's own output: $LOG"
