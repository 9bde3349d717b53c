//! What this host is: its network interfaces and its own addresses, as the kernel lists them now
//! (getifaddrs, /sys/class/net). It only reads; what to do with the answers is the caller's.

use std::net::IpAddr;
use std::path::Path;

use log::warn;

use crate::config::Config;

/// Where the kernel lists network devices, one symlink per device.
const NET_DEVICES_DIR: &str = "/sys/class/net";

/// The devices for the netdev ingress chain: the configured ones, or every non-loopback
/// interface present now.
pub fn ingress_devices(config: &Config) -> Vec<String> {
    if !config.daemon.interfaces.is_empty() {
        for name in &config.daemon.interfaces {
            if !Path::new(NET_DEVICES_DIR).join(name).exists() {
                warn!("interface {name} (daemon.interfaces) does not exist now; short IPv4 headers arriving on it are caught only once it does");
            }
        }
        return config.daemon.interfaces.clone();
    }
    let mut names: Vec<String> = std::fs::read_dir(NET_DEVICES_DIR)
        .map(|dir| {
            // Devices are symlinks there; plain files such as bonding_masters are not devices.
            dir.filter_map(|entry| entry.ok())
                .filter(|entry| entry.file_type().is_ok_and(|t| t.is_symlink()))
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| name != "lo")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The host's own addresses, sorted and without duplicates. They are never counted nor blocked,
/// so spoofing them cannot make nfsentry shut the host out of itself. Empty (with a warning)
/// when the kernel cannot be asked: the configured ignore list then protects them alone.
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        warn!("cannot list local addresses; only the configured ignore list protects them");
        return Vec::new();
    };
    let mut found: Vec<IpAddr> = addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The broadcast addresses of the host's IPv4 networks now (192.0.2.255 for 192.0.2.1/24):
/// those the kernel lists, and those the netmasks give, since `ip address add` sets none
/// unless told to while the kernel still treats the address as broadcast. Empty when the
/// kernel cannot be asked.
pub fn broadcast_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut found: Vec<IpAddr> = Vec::new();
    for ifa in addrs {
        let v4 = |address: Option<nix::sys::socket::SockaddrStorage>| {
            address.and_then(|a| a.as_sockaddr_in().map(|s| s.ip()))
        };
        if let Some(listed) = v4(ifa.broadcast) {
            found.push(IpAddr::V4(listed));
        }
        if let (Some(address), Some(netmask)) = (v4(ifa.address), v4(ifa.netmask)) {
            // /31 and /32 networks have no broadcast address (RFC 3021).
            if netmask.to_bits().count_ones() < 31 {
                let broadcast = address.to_bits() | !netmask.to_bits();
                found.push(IpAddr::V4(std::net::Ipv4Addr::from_bits(broadcast)));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}
