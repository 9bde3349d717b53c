#!/usr/bin/env bash
# Trigger to block when calm: SOURCES scanners (default 100), one after the other every 20 ms,
# each probing one bait port once, with scan_trigger 0 and the nft-set action, so that every
# probe is detected and blocked at once. nfsentry times each block from its detection to the
# kernel's ack of the element in the blocked set; this prints what `nfsentry status` reports
# (p50 and p99 are the upper bounds of log2 buckets of microseconds) and the buckets. Then, as
# the baseline, `examples/block_storm calm` times the kernel's own commit of one element, alone
# in a namespace of its own, as often and as far apart: the part of the figure no reader can
# remove.
#
#   bash benches/trigger_to_block.sh [SOURCES]
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
SOURCES=${1:-100}
# shellcheck source=benches/lab.sh
source benches/lab.sh
lab_init nfst
lab_build --bin nfsentry --example block_storm
# One scanner address per source, added below.
lab_veth "" 10.215.0.2/16
for i in $(seq 1 "$SOURCES"); do
  ip -n "$SCAN" addr add "10.215.$((i / 256 + 1)).$((i % 256))/16" dev "$TAG-a"
done

cat > "$WORK/nfsentry.toml" <<CONF
[daemon]
state_dir = "$WORK/state"
control_socket = "$WORK/control.sock"
interfaces = ["$TAG-b"]
[monitor]
tcp_ports = [111]
[detect]
scan_trigger = 0
[respond]
actions = ["nft-set"]
CONF
ip netns exec "$TGT" "$BIN/nfsentry" run --config "$WORK/nfsentry.toml" > /dev/null 2> "$WORK/nfsentry.log" &
wait_until 30 "nfsentry to start" grep -qs "watching;" "$WORK/nfsentry.log"

ip netns exec "$SCAN" /usr/bin/python3 - "$SOURCES" <<'PY'
import socket, sys, time
for i in range(1, int(sys.argv[1]) + 1):
    s = socket.socket()
    s.settimeout(0.05)  # the SYN is dropped once blocked: no answer to wait for
    s.bind((f"10.215.{i // 256 + 1}.{i % 256}", 0))
    try:
        s.connect(("10.215.0.2", 111))
    except OSError:
        pass
    s.close()
    time.sleep(0.02)
PY

status() { "$BIN/nfsentry" status --json --config "$WORK/nfsentry.toml"; }
all_timed() { status | /usr/bin/python3 -c 'import json, sys
sys.exit(json.load(sys.stdin)["trigger_to_block"]["blocks"] < int(sys.argv[1]))' "$SOURCES"; }
wait_until 30 "every block to be timed" all_timed
"$BIN/nfsentry" status --config "$WORK/nfsentry.toml" | grep -E '^(blocks|to block)'
status | /usr/bin/python3 -c 'import json, sys
t = json.load(sys.stdin)["trigger_to_block"]
print("buckets (µs below):", ", ".join(f"{1 << (i + 1)}: {n}" for i, n in enumerate(t["buckets"]) if n))'
read -r _ base_p50 _ base_p99 < <("$BIN/examples/block_storm" calm "$SOURCES" 20)
bucket() { /usr/bin/python3 -c 'import sys; v = float(sys.argv[1]); b = 2
while b <= v: b *= 2
print(b)' "$1"; }
echo "baseline, the kernel's commit of one element alone, every 20 ms ($SOURCES commits):" \
  "p50 $base_p50 µs (< $(bucket "$base_p50")), p99 $base_p99 µs (< $(bucket "$base_p99"))"
# The upper bound of the bucket that holds a quantile, from the daemon's status.
below() { status | /usr/bin/python3 -c 'import json, sys
print(json.load(sys.stdin)["trigger_to_block"][sys.argv[1]])' "$1"; }
for q in 50 99; do
  base=base_p$q
  goal=""
  if [ "$q" = 99 ]; then goal="< 100"; fi
  speed_row "trigger to block when calm, p$q µs (baseline: the kernel's commit of one element alone)" \
    "< $(below "p${q}_us")" "${!base} (< $(bucket "${!base}"))" "" "$goal"
done
