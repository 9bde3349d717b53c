#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs every check: formatting, lints, unit tests
# and the end-to-end tests that scan a target in throwaway network namespaces (root needed).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/as-root.sh"
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --release -- --test-threads=2
