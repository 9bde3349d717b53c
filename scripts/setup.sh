#!/usr/bin/env bash
# Prepares a fresh Debian machine to build and test nfsentry: the system packages the build and
# the end-to-end tests need (CrowdSec's Local API among them), then a release build. Safe to run again; it does not install Rust
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

# CrowdSec's Local API, for the fleet tests (tests/crowdsec_lapi.rs start private instances of
# it; the system's own service is neither started nor needed). Debian's postinst registers with
# the Central API, which needs the internet and fails the install under `set -e`, unless
# online_api_credentials.yaml already exists and is not empty; a comment line is enough and
# leaves the Central API off. Only done once: an installed crowdsec is left as it is.
if ! dpkg-query -W -f='${Status}' crowdsec 2>/dev/null | grep -q '^install ok installed$'; then
    capi_credentials=/etc/crowdsec/online_api_credentials.yaml
    "${as_root[@]}" mkdir -p /etc/crowdsec
    if [[ ! -s "${capi_credentials}" ]]; then
        echo '# Central API off: written by nfsentry scripts/setup.sh before installing crowdsec' |
            "${as_root[@]}" tee "${capi_credentials}" >/dev/null
    fi
    # Keep the install from starting the service: invoke-rc.d and deb-systemd-invoke ask
    # policy-rc.d, and 101 means "not now". A policy the machine already has is left alone.
    policy=/usr/sbin/policy-rc.d
    own_policy=false
    if [[ ! -e "${policy}" ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "${policy}" >/dev/null
        "${as_root[@]}" chmod 755 "${policy}"
        own_policy=true
    fi
    install_status=0
    "${as_root[@]}" apt-get install -y --no-install-recommends crowdsec || install_status=$?
    if [[ "${own_policy}" == true ]]; then
        "${as_root[@]}" rm -f "${policy}"
    fi
    if [[ ${install_status} -ne 0 ]]; then
        echo "setup.sh: installing crowdsec failed (exit ${install_status})" >&2
        exit "${install_status}"
    fi
    # Nor at boot: the tests run their own instances on ports of their own.
    if [[ -d /run/systemd/system ]]; then
        "${as_root[@]}" systemctl disable crowdsec >/dev/null 2>&1 || true
    fi
fi

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
