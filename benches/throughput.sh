#!/usr/bin/env bash
# What nfsentry's NFQUEUE reader costs per packet, against the least an NFQUEUE consumer can do:
# examples/accept_all.rs, one blocking recv and one verdict per packet, accepting everything
# unread. Both sit behind the very ruleset nfsentry installs (conntrack, fib and socket lookups
# before the queue rule), get the same flood from the same sender, and are measured in the same
# run, alternately.
#
#   bash benches/throughput.sh [SECONDS] [RUNS] [MODERATE_RATE]
#   bash benches/throughput.sh --queues "1 2 4" [RUNS]
#
# With --queues, nfsentry alone (no baseline) drains a deep queue, as in (b) below with verdict
# drop, once per number of queues listed (`daemon.queue = "0-N-1"`), all with the same sender in
# the same run: the kernel spreads the flood over the queues by source address, and each queue
# has its reader thread. Figures summed over the queues and over the reader threads (the main
# thread and the `queue-N` ones); the last column is packets/s against one queue's. A spread over
# more queues than cores only adds threads: the figures say what the machine's cores allow.
# benches/queues_chart.py draws the table this prints.
#
# Traffic (examples/flood.rs): TCP SYNs to bait ports from 65536 spoofed sources over a veth pair,
#   (a) moderate flood: MODERATE_RATE packets/s (default 10000), which both consumers keep up
#       with, measured over a SECONDS window (default 2) after a second of warm-up;
#   (b) deep queue: the reader is stopped (SIGSTOP) while the unpaced sender fills the queue with
#       10000 packets, then the sender is stopped and the reader drains the backlog, 3 times; only
#       the draining counts, so the figure does not depend on how fast the sender is.
# nfsentry runs alert-only (every packet parsed, classified and counted per source), first with
# verdict "accept" against the accept-all loop: the kernel then routes each packet on and answers
# it with a RST, in the thread that gave the verdict, for both alike. Then both drop everything,
# which leaves that work out and shows the queue reading and answering alone.
#
# Figures, from the kernel's own counters (/proc/net/netfilter/nfnetlink_queue) and the reading
# thread's on-CPU time (/proc/PID/task/TID/schedstat: user + system time in nanoseconds):
#   CPU us/packet   reading thread's CPU time / packets verdicted
#   packets/s       packets verdicted per second
#   dropped         user_dropped/queue_dropped: packets the kernel could not hand to the socket
#                   (its buffer was full) / could not queue (the queue was full), summed
# Each figure is printed as the range over RUNS runs (default 2); the ratio column is the range
# of nfsentry/baseline taken run by run. These machines are shared: read the ratios. With the
# defaults the whole run, build aside, takes about a minute and a half.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
QUEUE_COUNTS=""
if [ "${1:-}" = --queues ]; then
  QUEUE_COUNTS=${2:?--queues takes a list such as \"1 2 4\"}
  shift 2
  set -- 2 "${1:-2}"
fi
WINDOW=${1:-2}
RUNS=${2:-2}
MODERATE_RATE=${3:-10000}
WARMUP=1
DEEP_FILL=10000
# With --queues, a longer drain, so that waking several readers weighs less; still within one
# queue's length (16384), for the one-queue case.
[ -n "$QUEUE_COUNTS" ] && DEEP_FILL=15000
DEEP_CYCLES=3
QUEUE=0
# How many queues, from QUEUE on, the consumer being measured reads.
QUEUES=1
BAIT_PORTS=1,11,15,79,111,119,143,540,635
# wait_until polls often: the drain it waits for is timed.
LAB_POLL=0.005
# shellcheck source=benches/lab.sh
source benches/lab.sh
lab_init nfsb
lab_build --bin nfsentry --example accept_all --example flood
lab_veth 10.213.0.1/24 10.213.0.2/24
# The RSTs for the spoofed sources go back over the veth, as they would to a real scanner.
ip -n "$TGT" route add 198.18.0.0/16 via 10.213.0.1

for verdict in accept drop; do
cat > "$WORK/$verdict.toml" <<CONF
[daemon]
queue = $QUEUE
state_dir = "$WORK/state"
interfaces = ["$TAG-b"]
[monitor]
tcp_ports = ["1-1023"]
[detect]
max_sources = 65536
[respond]
verdict = "$verdict"
actions = []
CONF
done

# queue_total queue_dropped user_dropped id_sequence of our QUEUES queues, summed, as seen by
# process $1 (a consumer in the target namespace: /proc/PID/net is that process's namespace).
queue_counters() {
  awk -v q="$QUEUE" -v n="$QUEUES" '$1 >= q && $1 < q + n {
      found = 1; t += $3; qd += $6; ud += $7; id += $8 }
    END { if (found) print t, qd, ud, id }' "/proc/$1/net/netfilter/nfnetlink_queue"
}
# Whether the queue of process $1 holds at least $2 / at most $3 packets; false when the process
# has no queue bound (it died, or has not bound it yet).
queue_holds() { queue_counters "$1" | awk -v lo="$2" -v hi="$3" 'NF { found = 1; n = $1 }
  END { exit !(found && n >= lo && n <= hi) }'; }
# On-CPU nanoseconds of thread $1 (the main thread of process $1, which reads the queue in both
# consumers); utime + stime in clock ticks where schedstat is missing.
thread_cpu_ns() {
  if [ "$QUEUES" -gt 1 ]; then
    # Several readers: the main thread and the queue-N threads, summed.
    local task total=0
    for task in /proc/"$1"/task/*; do
      if [ "${task##*/}" = "$1" ] || grep -qs '^queue-' "$task/comm"; then
        total=$((total + $(awk '{ print $1 }' "$task/schedstat" 2>/dev/null || echo 0)))
      fi
    done
    echo "$total"
  elif [ -r "/proc/$1/task/$1/schedstat" ]; then
    awk '{ print $1 }' "/proc/$1/task/$1/schedstat"
  else
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%d\n", ($14 + $15) * 1e9 / hz }' "/proc/$1/task/$1/stat"
  fi
}
now_ns() { date +%s%N; }

start_consumer() { # base|nfsentry accept|drop -> pid
  case $1 in
    # The log goes first: the consumer's own redirection may truncate it only after the wait
    # below has read a stale "ready" from the one before.
    base) local drop=(); [ "$2" = drop ] && drop=(drop)
          rm -f "$WORK/base.log"
          ip netns exec "$TGT" "$BIN/examples/accept_all" "$WORK/$2.toml" "${drop[@]}" > "$WORK/base.log" 2>&1 &
          echo $!
          wait_until 30 "accept_all to start" grep -qs ready "$WORK/base.log" ;;
    nfsentry) rm -rf "$WORK/state" "$WORK/nfsentry.log"
          ip netns exec "$TGT" "$BIN/nfsentry" run --config "$WORK/$2.toml" > /dev/null 2> "$WORK/nfsentry.log" &
          echo $!
          wait_until 30 "nfsentry to start" grep -qs "watching;" "$WORK/nfsentry.log" ;;
  esac
}
# Consumers are not this shell's children (started in a command substitution).
stop_consumer() { kill -TERM "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }
flood() { # rate seconds -> pid
  ip netns exec "$SCAN" "$BIN/examples/flood" 10.213.0.2 "$1" "$2" "$BAIT_PORTS" > /dev/null &
  echo $!
}

# Prints "cpu_us_per_packet packets_per_second user_dropped queue_dropped" from the kernel's
# counters and the reader's CPU time before ($1: "counters cpu_ns wall_ns") and after ($2).
# Packets verdicted: ids handed out, less those the socket could not take, less those still
# waiting. (A packet the full queue turns away gets no id.)
figures() {
  echo "$1 $2" | awk '{
    verdicted = ($10 - $4) - ($9 - $3) - ($7 - $1)
    if (verdicted <= 0) { print "nan 0", $9 - $3, $8 - $2; exit }
    printf "%.3f %d %d %d\n", ($11 - $5) / 1000 / verdicted, verdicted * 1e9 / ($12 - $6), \
      $9 - $3, $8 - $2
  }'
}
snapshot() { echo "$(queue_counters "$1") $(thread_cpu_ns "$1") $(now_ns)"; }

# (a) A paced flood for WINDOW seconds after a warm-up.
measure_moderate() { # base|nfsentry accept|drop
  local consumer sender before after
  consumer=$(start_consumer "$1" "$2")
  sender=$(flood "$MODERATE_RATE" $((WARMUP + WINDOW + 1)))
  sleep "$WARMUP"
  before=$(snapshot "$consumer")
  sleep "$WINDOW"
  after=$(snapshot "$consumer")
  kill "$sender" 2>/dev/null || true
  stop_consumer "$consumer"
  figures "$before" "$after"
}

# (b) A deep queue: the reader is stopped while the sender fills the queue with DEEP_FILL packets,
# then the sender is stopped and the reader drains the backlog; DEEP_CYCLES times. Only the
# draining is timed, and only the reader's own CPU time counts, so the figures hold however fast
# the sender is on a busy machine.
measure_deep() { # base|nfsentry accept|drop
  local consumer sender start end totals=""
  consumer=$(start_consumer "$1" "$2")
  sender=$(flood 0 100000)
  for _ in $(seq "$DEEP_CYCLES"); do
    kill -STOP "$consumer"
    kill -CONT "$sender"
    wait_until 30 "the queue to fill" queue_holds "$consumer" "$DEEP_FILL" 1000000000
    kill -STOP "$sender"
    sleep 0.05 # packets in flight reach the queue
    start=$(snapshot "$consumer")
    kill -CONT "$consumer"
    wait_until 30 "the queue to drain" queue_holds "$consumer" 0 0
    end=$(snapshot "$consumer")
    totals+="$(figures "$start" "$end" | awk -v s="$start" -v e="$end" '{
      split(s, a, " "); split(e, b, " ")
      print $0, (b[5] - a[5]), (b[6] - a[6])
    }')"$'\n'
  done
  kill -CONT "$sender" 2>/dev/null; kill "$sender" 2>/dev/null || true
  stop_consumer "$consumer"
  # Totals over the cycles: CPU over packets, packets over drain time.
  printf '%s' "$totals" | awk '{ dropped += $3; full += $4 } $1 != "nan" {
    n += $5 / 1000 / $1; cpu += $5; wall += $6
  } END { if (n == 0) print "nan 0", dropped, full
          else printf "%.3f %d %d %d\n", cpu / 1000 / n, n * 1e9 / wall, dropped, full }'
}

if [ -n "$QUEUE_COUNTS" ]; then
  declare -A BY_QUEUES
  for run in $(seq "$RUNS"); do
    for QUEUES in $QUEUE_COUNTS; do
      range_text=$QUEUE
      [ "$QUEUES" -gt 1 ] && range_text="$QUEUE-$((QUEUE + QUEUES - 1))"
      sed "s/^queue = .*/queue = \"$range_text\"/" "$WORK/drop.toml" > "$WORK/q$QUEUES.toml"
      BY_QUEUES[$QUEUES,$run]=$(measure_deep nfsentry "q$QUEUES")
      echo "run $run, $QUEUES queues: ${BY_QUEUES[$QUEUES,$run]}" >&2
    done
  done
  cores=$(nproc)
  echo
  echo "nfsentry (alert-only, verdict drop) draining a deep queue spread over 1..N NFQUEUEs by"
  echo "source address, one reader thread each; TCP SYNs from 65536 sources; $cores CPUs;"
  echo "best of $RUNS runs (packets/s) with its CPU per packet"
  printf '%-8s %-12s %-16s %s\n' queues packets/s "CPU us/packet" "vs 1 queue"
  first=""
  for QUEUES in $QUEUE_COUNTS; do
    best=$(for run in $(seq "$RUNS"); do echo "${BY_QUEUES[$QUEUES,$run]}"; done |
      awk '$1 != "nan"' | sort -k2,2n | tail -1)
    rate=$(echo "$best" | awk '{ print $2 + 0 }')
    cpu=$(echo "$best" | awk '{ print $1 }')
    [ -z "$first" ] && first=$rate
    printf '%-8s %-12s %-16s %s\n' "$QUEUES" "$rate" "${cpu:-n/a}" \
      "$(awk -v r="$rate" -v f="$first" 'BEGIN { if (f > 0) printf "%.2fx", r / f; else print "n/a" }')"
  done
  exit 0
fi

CASES="accept,moderate accept,deep drop,moderate drop,deep"
declare -A RESULT
for run in $(seq "$RUNS"); do
  for case in $CASES; do
    for consumer in base nfsentry; do
      RESULT[$case,$consumer,$run]=$(measure_"${case#*,}" "$consumer" "${case%,*}")
      echo "run $run, $case, $consumer: ${RESULT[$case,$consumer,$run]}" >&2
    done
  done
done

# min-max of column $2 of the results of $1 (case) for $3 (nfsentry, base or ratio), in format $4.
range() {
  local case=$1 column=$2 values=() run n b
  for run in $(seq "$RUNS"); do
    n=$(echo "${RESULT[$case,nfsentry,$run]}" | awk -v c="$column" '{ print $c }')
    b=$(echo "${RESULT[$case,base,$run]}" | awk -v c="$column" '{ print $c }')
    case $3 in
      nfsentry) values+=("$n") ;;
      base) values+=("$b") ;;
      ratio) values+=("$(awk -v n="$n" -v b="$b" 'BEGIN { if (b == 0 || n == "nan" || b == "nan") print "nan"; else printf "%.2f", n / b }')") ;;
    esac
  done
  printf '%s\n' "${values[@]}" | awk -v fmt="$4" '
    $1 == "nan" { bad = 1; next }
    !seen++ || $1 < lo { lo = $1 } seen == 1 || $1 > hi { hi = $1 }
    END { if (bad || !seen) { print "n/a"; exit }
          if (lo == hi) printf fmt "\n", lo; else printf fmt "-" fmt "\n", lo, hi }'
}

echo
echo "NFQUEUE reader: nfsentry (alert-only) vs a bare one-verdict-per-packet loop, both giving every"
echo "packet the same verdict (accept, then drop), same ruleset, same sender (TCP SYNs from 65536"
echo "sources); ranges over $RUNS runs (ratio: nfsentry/baseline, run by run)"
printf '%-44s %-15s %-15s %s\n' figure nfsentry baseline ratio
for case in $CASES; do
  case ${case#*,} in
    moderate) label="$MODERATE_RATE/s" ;;
    deep) label="deep queue" ;;
  esac
  label="${case%,*}, $label"
  printf '%-44s %-15s %-15s %s\n' "$label: CPU us/packet" \
    "$(range "$case" 1 nfsentry %.2f)" "$(range "$case" 1 base %.2f)" "$(range "$case" 1 ratio %.2f)"
  printf '%-44s %-15s %-15s %s\n' "$label: packets/s" \
    "$(range "$case" 2 nfsentry %d)" "$(range "$case" 2 base %d)" "$(range "$case" 2 ratio %.2f)"
  printf '%-44s %-15s %-15s\n' "$label: dropped (user/queue)" \
    "$(range "$case" 3 nfsentry %d)/$(range "$case" 4 nfsentry %d)" \
    "$(range "$case" 3 base %d)/$(range "$case" 4 base %d)"
done

for case in $CASES; do
  case ${case#*,} in
    moderate) label="paced, $MODERATE_RATE/s"; goal="≤ 1.0" ;;
    deep) label="deep queue"; goal="≤ 0.6" ;;
  esac
  speed_row "CPU µs/packet, ${case%,*}, $label (baseline: a bare one-verdict-per-packet loop)" \
    "$(range "$case" 1 nfsentry %.2f)" "$(range "$case" 1 base %.2f)" "$(range "$case" 1 ratio %.2f)" "$goal"
done
speed_row "packets lost while the reader is stopped and 10000 pile up, drop (socket/queue)" \
  "$(range drop,deep 3 nfsentry %d)/$(range drop,deep 4 nfsentry %d)" \
  "$(range drop,deep 3 base %d)/$(range drop,deep 4 base %d)" "" "0"
