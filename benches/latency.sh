#!/usr/bin/env bash
# The latency nfsentry adds to a queued packet at low load: a TCP SYN to a bait port waits in
# the NFQUEUE for nfsentry's verdict before the kernel answers it; a SYN to a closed port that is
# not watched is answered without it. Both are timed in the same run, alternately, from another
# namespace over a veth pair, as the time a connect() takes to be refused (SYN out, RST back).
# A third port, in the same run and alternately too, is queued to the least an NFQUEUE consumer
# can do (examples/accept_all.rs, on a queue and a table of its own, behind the same ruleset):
# what any queue reader adds on this machine, the wake-up of a thread and a verdict.
#
#   bash benches/latency.sh [PROBES] [GAP_MS] [BUSY]
#
# PROBES triples (default 2000), one probe every GAP_MS milliseconds (default 2: low load).
# BUSY (default 0) CPU-bound loops run beside them: a busy host, where a woken reader thread
# competes for the CPU.
# nfsentry runs alert-only with verdict "accept" and a trigger no probe reaches, so every bait
# probe is queued, parsed, counted and accepted, and the kernel then answers it with a RST as it
# does the unwatched port. Prints one table: p50 and p99 of each in microseconds, the ratio, and
# what the queue adds (queued less unqueued), for nfsentry and for the bare loop. These machines
# are shared: read the ratios.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
PROBES=${1:-2000}
GAP_MS=${2:-2}
BUSY=${3:-0}
BAIT_PORT=111
BARE_PORT=112  # queued to the bare loop
OPEN_PORT=4444 # not watched, nothing listens: the kernel refuses it at once
# shellcheck source=benches/lab.sh
source benches/lab.sh
lab_init nfsl
lab_build --bin nfsentry --example accept_all
lab_veth 10.214.0.1/24 10.214.0.2/24

cat > "$WORK/nfsentry.toml" <<CONF
[daemon]
state_dir = "$WORK/state"
interfaces = ["$TAG-b"]
[monitor]
tcp_ports = [$BAIT_PORT]
[detect]
scan_trigger = 4000000000
[respond]
verdict = "accept"
actions = []
CONF

# The bare loop's own table and queue, watching its own port.
cat > "$WORK/bare.toml" <<CONF
[daemon]
table = "nfsbare"
queue = 1
state_dir = "$WORK/bare-state"
interfaces = ["$TAG-b"]
[monitor]
tcp_ports = [$BARE_PORT]
udp_ports = []
[respond]
verdict = "accept"
actions = []
CONF

ip netns exec "$TGT" "$BIN/nfsentry" run --config "$WORK/nfsentry.toml" > /dev/null 2> "$WORK/nfsentry.log" &
LAB_SHOW_ON_GIVE_UP=$WORK/nfsentry.log
wait_until 30 "nfsentry to start" grep -qs "watching;" "$WORK/nfsentry.log"
ip netns exec "$TGT" "$BIN/examples/accept_all" "$WORK/bare.toml" > "$WORK/bare.log" 2>&1 &
LAB_SHOW_ON_GIVE_UP=$WORK/bare.log
wait_until 30 "the bare loop to start" grep -qs ready "$WORK/bare.log"

for _ in $(seq "$BUSY"); do
  sh -c 'while :; do :; done' &
  LAB_PIDS+=($!)
done

ip netns exec "$SCAN" /usr/bin/python3 - "$PROBES" "$GAP_MS" "$BAIT_PORT" "$BARE_PORT" "$OPEN_PORT" "$BUSY" <<'PY'
import socket, sys, time

probes, gap_ms, bait, bare, unwatched, busy = (int(a) for a in sys.argv[1:])
target = "10.214.0.2"

def refused_in_us(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    start = time.perf_counter_ns()
    try:
        s.connect((target, port))
        raise SystemExit(f"bench: port {port} accepted a connection")
    except ConnectionRefusedError:
        elapsed = time.perf_counter_ns() - start
    finally:
        s.close()
    return elapsed / 1000

# Warm-up: caches, ARP, nfsentry's first packet from this source.
for _ in range(50):
    for port in (bait, bare, unwatched):
        refused_in_us(port)
queued, bare_queued, unqueued = [], [], []
for i in range(probes):
    # Rotate which goes first, so none always follows another's wake-ups.
    triple = [(bait, queued), (bare, bare_queued), (unwatched, unqueued)]
    shift = i % 3
    for port, into in triple[shift:] + triple[:shift]:
        into.append(refused_in_us(port))
    time.sleep(gap_ms / 1000)

def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

print(f"{probes} probes each, one triple every {gap_ms} ms, {busy} busy loops beside; SYN to RST round trip in µs")
print("| figure | nfsentry (queued) | baseline (unqueued) | ratio | added by nfsentry | added by a bare NFQUEUE loop |")
print("| --- | --- | --- | --- | --- | --- |")
for name, q in (("p50", 0.50), ("p99", 0.99)):
    a, b, c = percentile(queued, q), percentile(unqueued, q), percentile(bare_queued, q)
    print(f"| {name} round trip, µs | {a:.1f} | {b:.1f} | {a / b:.2f} | {a - b:.1f} | {c - b:.1f} |")

# For benches/speed.sh: what the queue adds, nfsentry's against the bare loop's.
import os
rows = os.environ.get("SPEED_ROWS")
if rows:
    with open(rows, "a") as table:
        for name, q, goal in (("p50", 0.50, ""), ("p99", 0.99, "< 100")):
            b = percentile(unqueued, q)
            ours, bare = percentile(queued, q) - b, percentile(bare_queued, q) - b
            ratio = f"{ours / bare:.2f}" if bare > 0 else ""
            table.write(f"| latency added to a queued packet at low load{' with ' + str(busy) + ' busy loops' if busy else ''}, {name} µs (baseline: a bare NFQUEUE loop's) | {ours:.1f} | {bare:.1f} | {ratio} | {goal} |\n")
PY
