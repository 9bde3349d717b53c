#!/usr/bin/env bash
# The latency nfsentry adds to a queued packet at low load: a TCP SYN to a bait port waits in
# the NFQUEUE for nfsentry's verdict before the kernel answers it; a SYN to a closed port that is
# not watched is answered without it. Both are timed in the same run, alternately, from another
# namespace over a veth pair, as the time a connect() takes to be refused (SYN out, RST back).
#
#   bash benches/latency.sh [PROBES] [GAP_MS] [BUSY]
#
# PROBES pairs (default 2000), one probe every GAP_MS milliseconds (default 2: low load).
# BUSY (default 0) CPU-bound loops run beside them: a busy host, where a woken reader thread
# competes for the CPU.
# nfsentry runs alert-only with verdict "accept" and a trigger no probe reaches, so every bait
# probe is queued, parsed, counted and accepted, and the kernel then answers it with a RST as it
# does the unwatched port. Prints one table: p50 and p99 of each in microseconds, the ratio, and
# what the queue adds (queued less unqueued). These machines are shared: read the ratios.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
PROBES=${1:-2000}
GAP_MS=${2:-2}
BUSY=${3:-0}
BAIT_PORT=111
OPEN_PORT=4444 # not watched, nothing listens: the kernel refuses it at once
# shellcheck source=benches/lab.sh
source benches/lab.sh
lab_init nfsl
lab_build --bin nfsentry
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

ip netns exec "$TGT" "$BIN/nfsentry" run --config "$WORK/nfsentry.toml" > /dev/null 2> "$WORK/nfsentry.log" &
LAB_SHOW_ON_GIVE_UP=$WORK/nfsentry.log
wait_until 30 "nfsentry to start" grep -qs "watching;" "$WORK/nfsentry.log"

for _ in $(seq "$BUSY"); do
  sh -c 'while :; do :; done' &
  LAB_PIDS+=($!)
done

ip netns exec "$SCAN" /usr/bin/python3 - "$PROBES" "$GAP_MS" "$BAIT_PORT" "$OPEN_PORT" "$BUSY" <<'PY'
import socket, sys, time

probes, gap_ms, bait, unwatched, busy = (int(a) for a in sys.argv[1:])
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
    refused_in_us(bait); refused_in_us(unwatched)
queued, unqueued = [], []
for i in range(probes):
    # Alternate which goes first, so neither always follows the other's wake-ups.
    pair = [(bait, queued), (unwatched, unqueued)]
    for port, into in (pair if i % 2 == 0 else pair[::-1]):
        into.append(refused_in_us(port))
    time.sleep(gap_ms / 1000)

def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

print(f"{probes} probes each, one pair every {gap_ms} ms, {busy} busy loops beside; SYN to RST round trip in µs")
print("| figure | nfsentry (queued) | baseline (unqueued) | ratio | added by the queue |")
print("| --- | --- | --- | --- | --- |")
for name, q in (("p50", 0.50), ("p99", 0.99)):
    a, b = percentile(queued, q), percentile(unqueued, q)
    print(f"| {name} round trip, µs | {a:.1f} | {b:.1f} | {a / b:.2f} | {a - b:.1f} |")
PY
