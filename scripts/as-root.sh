# Sourced by scripts/run.sh and scripts/test.sh: move to the repository root, re-run the
# calling script as root when it is not (nft, NFQUEUE and network namespaces need root), set
# the machine up, and make sure cargo is on PATH.
repo_root="$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)"
cd "${repo_root}"
if [[ $(id -u) -ne 0 ]]; then
    exec sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME,CARGO_TARGET_DIR bash "$0" "$@"
fi
scripts/setup.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -f "${HOME}/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    source "${HOME}/.cargo/env"
fi
