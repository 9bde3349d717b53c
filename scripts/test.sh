#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs every check: formatting, lints, unit tests
# and the end-to-end tests that scan a target in throwaway network namespaces (root needed).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
if [[ $(id -u) -ne 0 ]]; then
    exec sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "$0" "$@"
fi
scripts/setup.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -f "${HOME}/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    source "${HOME}/.cargo/env"
fi
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --release -- --test-threads=2
