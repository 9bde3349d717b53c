#!/usr/bin/env bash
# Prepares a fresh Debian machine to build and test nfsentry: the system packages the build and
# the end-to-end tests need, then a release build. Safe to run again; it does not install Rust
# (use rustup) and does not change any firewall state.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

packages=(
    nftables iptables nmap hping3 tcpdump conntrack python3-scapy
    libnftnl-dev libmnl-dev libnetfilter-queue-dev
    build-essential pkg-config iproute2 curl
    # The packaging tests: the .deb's maintainer scripts (adduser), the man pages, the
    # logrotate rule, and systemd-analyze for the unit (nothing here needs systemd running).
    adduser man-db logrotate systemd
)

# Package installs need root; fall back to sudo when run as a normal user.
as_root=()
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "setup.sh: run as root or install sudo" >&2
        exit 1
    fi
    as_root=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends "${packages[@]}"

# A rustup install under sudo or in a fresh CI shell is often not on PATH yet.
if ! command -v cargo >/dev/null 2>&1 && [[ -f "${HOME}/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    source "${HOME}/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup.sh: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi
# .ci/run checks formatting and lints; make sure the tools exist when rustup manages them.
if command -v rustup >/dev/null 2>&1; then
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi

# Builds the Debian package (tests/package_deb.rs); compiling it takes a minute or two, once.
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked
fi

cd "${repo_root}"
cargo build --release --quiet
