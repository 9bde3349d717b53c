#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs nfsentry in the foreground: with
# /etc/nfsentry/nfsentry.toml when it exists, else on built-in defaults. Extra arguments go to
# `nfsentry run` (e.g. --config PATH, --verbose). Stop it with Ctrl-C; its nft tables go too.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/as-root.sh"
exec "${CARGO_TARGET_DIR:-target}/release/nfsentry" run "$@"
