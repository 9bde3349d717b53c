//! The words nfsentry writes about detections and blocks, in PortSentry's formats.
//!
//! Admins' log watchers and fail2ban's shipped `portsentry` filter parse these lines, so the
//! wording here is an interface: change it only together with the tests that pin it. This
//! module formats text; it writes nothing.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::Detection;

/// `attackalert: SYN/Normal scan from host: 198.51.100.7/198.51.100.7 to TCP port: 23`.
/// Portless detections (short headers, options on ICMP) name the IP protocol instead.
pub fn detection_line(d: &Detection) -> String {
    let host = host_label(d.source);
    match d.protocol {
        "IP" => format!(
            "attackalert: {} scan from host: {host} to IP protocol: {}",
            d.kind, d.port
        ),
        proto => format!(
            "attackalert: {} scan from host: {host} to {proto} port: {}",
            d.kind, d.port
        ),
    }
}

/// `attackalert: Host 198.51.100.7 has been blocked`.
pub fn blocked_line(source: IpAddr) -> String {
    format!("attackalert: Host {source} has been blocked")
}

/// `attackalert: Host 198.51.100.7 has been released`.
pub fn released_line(source: IpAddr, why: &str) -> String {
    format!("attackalert: Host {source} has been released ({why})")
}

/// PortSentry's history/blocked file line:
/// `942286729 - 11/10/1999 20:18:49 Host: 10.0.0.9/10.0.0.9 Port: 111 TCP Blocked`.
/// fail2ban's filter matches `/<HOST> Port: N (TCP|UDP) Blocked$` against it.
pub fn history_line(at: SystemTime, source: IpAddr, protocol: &str, port: u16) -> String {
    let unix = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{unix} - {} Host: {} Port: {port} {protocol} Blocked",
        local_timestamp(unix),
        host_label(source)
    )
}

/// `name/address`, as PortSentry prints hosts. nfsentry never resolves names on the packet
/// path (an attacker controls the reverse zone and its latency), so the name is the address.
fn host_label(source: IpAddr) -> String {
    format!("{source}/{source}")
}

/// `MM/DD/YYYY HH:MM:SS` in local time, as PortSentry wrote it.
fn local_timestamp(unix: u64) -> String {
    let t = libc::time_t::try_from(unix).unwrap_or(0);
    // SAFETY: localtime_r only writes the tm we own; it is the thread-safe variant.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return "00/00/0000 00:00:00".to_string();
    }
    format!(
        "{:02}/{:02}/{:04} {:02}:{:02}:{:02}",
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{IpOption, IpOptions, ScanKind, TcpFlags};
    use std::time::Duration;

    fn detection(kind: ScanKind, protocol: &'static str, port: u16) -> Detection {
        Detection {
            source: "198.51.100.7".parse().unwrap(),
            kind,
            protocol,
            port,
            hits: 1,
        }
    }

    #[test]
    fn detection_lines_keep_portsentry_wording() {
        assert_eq!(
            detection_line(&detection(ScanKind::SynNormal, "TCP", 23)),
            "attackalert: SYN/Normal scan from host: 198.51.100.7/198.51.100.7 to TCP port: 23"
        );
        assert_eq!(
            detection_line(&detection(ScanKind::Udp, "UDP", 161)),
            "attackalert: UDP scan from host: 198.51.100.7/198.51.100.7 to UDP port: 161"
        );
        assert_eq!(
            detection_line(&detection(ScanKind::BadHeaderLength(4), "IP", 6)),
            "attackalert: Bad-IP-header-length (4 words) scan from host: \
             198.51.100.7/198.51.100.7 to IP protocol: 6"
        );
        let mut opts = IpOptions::default();
        opts.insert(IpOption::RecordRoute);
        let line = detection_line(&detection(ScanKind::IpOptions(opts), "TCP", 80));
        assert!(line.starts_with("attackalert: IP-options (record-route) scan from host:"));
        let odd = ScanKind::Unknown(TcpFlags(TcpFlags::ACK | TcpFlags::PSH));
        assert!(detection_line(&detection(odd, "TCP", 1)).contains("Unknown (flags: ACK PSH)"));
    }

    #[test]
    fn history_lines_match_fail2ban_portsentry_filter() {
        let at = UNIX_EPOCH + Duration::from_secs(942_286_729);
        let line = history_line(at, "198.51.100.7".parse().unwrap(), "TCP", 111);
        assert!(line.starts_with("942286729 - "), "{line}");
        assert!(line.ends_with(" Host: 198.51.100.7/198.51.100.7 Port: 111 TCP Blocked"));
        // `MM/DD/YYYY HH:MM:SS` between the epoch and the host, whatever the local zone.
        let stamp = &line["942286729 - ".len()..line.find(" Host:").unwrap()];
        assert_eq!(stamp.len(), 19, "{stamp}");
        assert_eq!(&stamp[2..3], "/");
        assert!(stamp.contains("/1999 "), "{stamp}");
    }

    #[test]
    fn ipv6_hosts_are_written_plainly() {
        let line = history_line(UNIX_EPOCH, "2001:db8::7".parse().unwrap(), "TCP", 22);
        assert!(line.ends_with("Host: 2001:db8::7/2001:db8::7 Port: 22 TCP Blocked"));
        assert_eq!(
            blocked_line("2001:db8::7".parse().unwrap()),
            "attackalert: Host 2001:db8::7 has been blocked"
        );
    }
}
