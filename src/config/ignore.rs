//! Parses addresses and CIDRs, one at a time or as an ignore file (one a line, '#' comments);
//! it does not read files or decide what to do with an ignored source.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::error::{quote, ConfigError};

/// Why an ignore entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "is not an IP address or CIDR (e.g. \"192.0.2.7\", \"198.51.100.0/24\", \"2001:db8::/32\")"
)]
pub(crate) struct NotANetwork;

/// Why an ignore entry that covers a whole address family was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "covers every {family} address: nothing would ever be counted or blocked; list the \
     networks you trust instead"
)]
pub(crate) struct CoversEverything {
    pub(crate) family: &'static str,
}

/// Refuses a network that ignores a whole family: a scan detector that ignores everyone is
/// switched off, and nothing in its log would say so.
pub(crate) fn ignorable(network: IpNet) -> Result<IpNet, CoversEverything> {
    match network {
        IpNet::V4(v4) if v4.prefix_len() == 0 => Err(CoversEverything { family: "IPv4" }),
        IpNet::V6(v6) if v6.prefix_len() == 0 => Err(CoversEverything { family: "IPv6" }),
        network => Ok(network),
    }
}

/// Parses `"198.51.100.0/24"` or a bare address, which means the host alone (/32 or /128).
/// Host bits after the prefix are cleared: "192.0.2.7/24" ignores all of 192.0.2.0/24, which is
/// what someone writing it almost always means.
pub(crate) fn parse_network(text: &str) -> Result<IpNet, NotANetwork> {
    let text = text.trim();
    if let Ok(network) = text.parse::<IpNet>() {
        return Ok(network.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| NotANetwork)
}

/// Parses the text of an ignore file: one address or CIDR a line; '#' starts a comment that
/// runs to the end of the line; blank lines are skipped. `file` is only used in errors, which
/// carry the line number.
pub fn parse_ignore_list(text: &str, file: &Path) -> Result<Vec<IpNet>, ConfigError> {
    let mut networks = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if content.is_empty() {
            continue;
        }
        let refuse = |problem: &dyn std::fmt::Display| {
            ConfigError::new(
                file,
                Some(index + 1),
                format!("{} {problem}", quote(content)),
            )
        };
        let network = parse_network(content).map_err(|problem| refuse(&problem))?;
        let network = ignorable(network).map_err(|problem| refuse(&problem))?;
        networks.push(network);
    }
    Ok(networks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        match text.parse() {
            Ok(network) => network,
            Err(error) => panic!("test network {text:?}: {error}"),
        }
    }

    #[test]
    fn bare_addresses_are_single_hosts() {
        assert_eq!(parse_network("192.0.2.7"), Ok(net("192.0.2.7/32")));
        assert_eq!(parse_network("2001:db8::1"), Ok(net("2001:db8::1/128")));
        assert_eq!(parse_network(" 0.0.0.0 "), Ok(net("0.0.0.0/32")));
    }

    #[test]
    fn cidrs_are_truncated_to_their_network() {
        assert_eq!(parse_network("198.51.100.0/24"), Ok(net("198.51.100.0/24")));
        assert_eq!(parse_network("192.0.2.77/24"), Ok(net("192.0.2.0/24")));
        assert_eq!(parse_network("2001:db8::5/32"), Ok(net("2001:db8::/32")));
        assert_eq!(parse_network("0.0.0.0/0"), Ok(net("0.0.0.0/0")));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0.0/",
            "10.0.0",
            "256.1.1.1",
            "example.org",
            "",
            "10.0.0.0/8/8",
            "10.0.0.1-10.0.0.9",
        ] {
            assert_eq!(parse_network(bad), Err(NotANetwork), "{bad:?}");
        }
    }

    #[test]
    fn ignore_file_comments_blanks_and_line_numbers() {
        let text = "# shipped with PortSentry\n127.0.0.1/32\n\n0.0.0.0\n  198.51.100.0/24   # lab\r\n2001:db8::/32\n   # indented comment\n";
        let networks = parse_ignore_list(text, Path::new("/etc/nfsentry/ignore"));
        let networks = networks.map_err(|error| error.to_string());
        assert_eq!(
            networks,
            Ok(vec![
                net("127.0.0.1/32"),
                net("0.0.0.0/32"),
                net("198.51.100.0/24"),
                net("2001:db8::/32"),
            ])
        );
    }

    #[test]
    fn ignore_file_error_names_file_line_and_value() {
        let text = "# header\n192.0.2.1\n\n10.0.0.0/33  # typo\n";
        let error = parse_ignore_list(text, Path::new("/tmp/ignore")).err();
        let error = error.map(|error| (error.file.clone(), error.line, error.to_string()));
        assert_eq!(
            error,
            Some((
                Path::new("/tmp/ignore").to_path_buf(),
                Some(4),
                "/tmp/ignore:4: \"10.0.0.0/33\" is not an IP address or CIDR (e.g. \"192.0.2.7\", \"198.51.100.0/24\", \"2001:db8::/32\")".to_owned()
            ))
        );
    }

    #[test]
    fn empty_ignore_file_is_empty_list() {
        assert_eq!(
            parse_ignore_list("", Path::new("/x")).map_err(|error| error.to_string()),
            Ok(Vec::new())
        );
        assert_eq!(
            parse_ignore_list("\n# only comments\n\n", Path::new("/x"))
                .map_err(|error| error.to_string()),
            Ok(Vec::new())
        );
    }
}
