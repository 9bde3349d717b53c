# The lab the benches share, sourced by them (after `set -euo pipefail` and a cd to the
# repository): two network namespaces, a scanner's and a target's, joined by a veth pair, a work
# directory, and a cleanup on exit that stops what runs in them and deletes them.
#
#   source benches/lab.sh
#   lab_init nfsx                          # TAG=nfsx<pid>, SCAN, TGT, WORK; the cleanup trap
#   lab_build --bin nfsentry               # cargo build --release; BIN is the binaries' directory
#   lab_veth 10.9.0.1/24 10.9.0.2/24       # the namespaces, the veth pair "$TAG-a"/"$TAG-b"
#   wait_until 30 "nfsentry to start" grep -qs "watching;" "$WORK/nfsentry.log"
#
# A bench with more to clean than the namespaces' processes adds the process ids to LAB_PIDS
# (killed first), or defines lab_cleanup_more (run first).
#
# Run by benches/speed.sh, a bench also hands its headline figures to speed_row, which adds
# them to the one table speed.sh prints (the file SPEED_ROWS names).
# shellcheck shell=bash

# How often wait_until tries its command, in seconds; a bench that times what it waits for polls
# faster.
LAB_POLL=${LAB_POLL:-0.05}
# A file wait_until shows when it gives up (the daemon's log, say), if set.
LAB_SHOW_ON_GIVE_UP=""
LAB_PIDS=()

# Names the lab after $1 and this shell's pid, so that runs side by side never share a
# namespace, makes the work directory and sets the cleanup on exit.
lab_init() { # tag
  TAG=$1$$
  SCAN=$TAG-s
  TGT=$TAG-t
  WORK=$(mktemp -d)
  trap lab_cleanup EXIT
  trap 'exit 130' INT TERM
}

lab_cleanup() {
  if declare -F lab_cleanup_more >/dev/null; then lab_cleanup_more || true; fi
  local pid ns
  for pid in "${LAB_PIDS[@]:-}"; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  done
  # Whatever still runs in the two namespaces was started here.
  for ns in "$SCAN" "$TGT"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  done
  wait 2>/dev/null || true
  ip netns del "$SCAN" 2>/dev/null || true
  ip netns del "$TGT" 2>/dev/null || true
  rm -rf "$WORK"
}

# Builds what the bench runs (cargo build --release arguments, e.g. --bin nfsentry).
lab_build() { # cargo-build-arguments...
  cargo build --release --quiet "$@"
  # shellcheck disable=SC2034 # read by the bench that sourced this
  BIN=${CARGO_TARGET_DIR:-target}/release
}

# The two namespaces, loopback up, and the veth pair "$TAG-a" (scanner) / "$TAG-b" (target) up
# with these addresses; an empty scanner address leaves the bench to add its own.
lab_veth() { # scanner-cidr target-cidr
  ip netns add "$SCAN"
  ip netns add "$TGT"
  ip link add "$TAG-a" netns "$SCAN" type veth peer name "$TAG-b" netns "$TGT"
  [ -n "$1" ] && ip -n "$SCAN" addr add "$1" dev "$TAG-a"
  ip -n "$TGT" addr add "$2" dev "$TAG-b"
  local ns
  for ns in "$SCAN" "$TGT"; do ip -n "$ns" link set lo up; done
  ip -n "$SCAN" link set "$TAG-a" up
  ip -n "$TGT" link set "$TAG-b" up
}

# Waits until the command succeeds; gives up, and ends the bench, after $1 seconds.
wait_until() { # seconds what command...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "bench: gave up waiting for $what" >&2
      [ -n "$LAB_SHOW_ON_GIVE_UP" ] && cat "$LAB_SHOW_ON_GIVE_UP" >&2
      exit 1
    fi
    sleep "$LAB_POLL"
  done
}

# One row of benches/speed.sh's table, when it runs this bench: the figure, nfsentry's value,
# the baseline's, their ratio and the goal.
speed_row() { # figure nfsentry baseline ratio goal
  [ -n "${SPEED_ROWS:-}" ] || return 0
  printf '| %s | %s | %s | %s | %s |\n' "$@" >> "$SPEED_ROWS"
}
