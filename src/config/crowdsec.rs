//! The `[crowdsec]` section: where the CrowdSec Local API (LAPI) is, which directions are on
//! (push our blocks as alerts, pull the fleet's bans), and the secrets each direction needs.
//!
//! The secret files are read here, once, so that `check-config` names a missing or unreadable
//! one; their contents live in [`Secret`], which never prints. Nothing here talks to the LAPI:
//! a URL that parses may still point nowhere, and a password that reads may still be wrong.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, SourceText};
use super::files::{read_regular, FileProblem};
use super::raw::{Field, RawCrowdsec, RawRespond};
use super::validate::{duration, duration_error, list, non_empty, unknown_word_error};
use super::{format_duration, ActionKind, ConfigWord};

/// CrowdSec's own default listen address for its LAPI.
const DEFAULT_URL: &str = "http://127.0.0.1:8080/";
/// The scenario name our alerts and decisions carry, as `author/name` like the hub's.
const DEFAULT_SCENARIO: &str = "nfsentry/portscan";
/// A ban from elsewhere in the fleet reaches this host within about this long.
const DEFAULT_PULL_EVERY: Duration = Duration::from_secs(1);
/// How often the whole list is fetched again: the 1.4.6 LAPI's deltas can miss decisions, and
/// a full pull is what finds them.
const DEFAULT_RESYNC_EVERY: Duration = Duration::from_secs(300);
/// Every poll is a database query on the LAPI; faster than this only loads it.
const MIN_PULL_EVERY: Duration = Duration::from_millis(100);
/// A password or key file longer than this is not a password or a key.
const SECRET_MAX_BYTES: u64 = 4096;
const SCENARIO_MAX_CHARS: usize = 128;
const MACHINE_ID_MAX_CHARS: usize = 128;

/// `[crowdsec]`, validated. Present only when the section is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crowdsec {
    pub url: LapiUrl,
    /// Report our blocks as alerts carrying one `ban` decision; None when `push = false`.
    pub push: Option<Push>,
    /// Enforce the fleet's `ban` decisions; None when `pull = false`.
    pub pull: Option<Pull>,
    /// The scenario our alerts and decisions name.
    pub scenario: String,
    /// Actions that pulled decisions run besides the nft sets (which they always go to),
    /// without duplicates and never `nft-set`. Single addresses only: ranges are enforced in
    /// the nft sets alone.
    pub actions: Vec<ActionKind>,
}

/// The watcher side: how nfsentry logs in to push alerts and delete its own decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub machine_id: String,
    /// Where the password came from, for messages.
    pub password_file: PathBuf,
    pub password: Secret,
}

/// The bouncer side: how nfsentry pulls the decision stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    /// Where the key came from, for messages.
    pub bouncer_key_file: PathBuf,
    /// Sent as `X-Api-Key`; visible ASCII only.
    pub bouncer_key: Secret,
    /// Between two polls of the stream; at least 100ms.
    pub every: Duration,
    /// Between two full pulls (`startup=true`); at least `every`.
    pub resync_every: Duration,
}

/// A password or API key. It prints as `Secret(..)` in every format, so a config dumped with
/// `{:?}` in a log line or an error leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(..)")
    }
}

/// The LAPI's base URL: `http://HOST[:PORT]/[PATH/]`, always ending in `/`, without
/// credentials, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LapiUrl(String);

impl LapiUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL of an API path such as `v1/decisions/stream`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.0, path.trim_start_matches('/'))
    }
}

impl fmt::Display for LapiUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl Crowdsec {
    /// One line for the start-up log and `check-config`; it names no secret.
    pub fn summary(&self) -> String {
        let push = match &self.push {
            Some(push) => format!("push as {} ({})", push.machine_id, self.scenario),
            None => "push off".to_owned(),
        };
        let pull = match &self.pull {
            Some(pull) => {
                let actions = if self.actions.is_empty() {
                    String::new()
                } else {
                    let words: Vec<&str> = self.actions.iter().map(|a| a.as_str()).collect();
                    format!(", also {}", words.join(","))
                };
                format!(
                    "pull every {}, resync every {}{actions}",
                    format_duration(pull.every),
                    format_duration(pull.resync_every)
                )
            }
            None => "pull off".to_owned(),
        };
        format!("crowdsec {}: {push}, {pull}", self.url)
    }
}

pub(super) fn validate(
    section: Option<&Spanned<RawCrowdsec>>,
    respond: &RawRespond,
    source: SourceText<'_>,
) -> Result<Option<Crowdsec>, ConfigError> {
    let Some(section) = section else {
        return Ok(None);
    };
    let raw = section.get_ref();
    let url = match &raw.url {
        None => LapiUrl(DEFAULT_URL.to_owned()),
        Some(url) => parse_url(url.get_ref()).map_err(|problem| {
            source.value_error(&url.span(), "crowdsec.url", url.get_ref(), problem)
        })?,
    };
    let scenario = match &raw.scenario {
        None => DEFAULT_SCENARIO.to_owned(),
        Some(scenario) => {
            if !is_scenario(scenario.get_ref()) {
                return Err(source.value_error(
                    &scenario.span(),
                    "crowdsec.scenario",
                    scenario.get_ref(),
                    format_args!(
                        "is not a scenario name (1-{SCENARIO_MAX_CHARS} characters of A-Z, a-z, \
                         0-9, '_', '-', '.' and '/', e.g. \"nfsentry/portscan\")"
                    ),
                ));
            }
            scenario.get_ref().clone()
        }
    };
    let push = match enabled(&raw.push) {
        false => None,
        true => Some(push(raw, section, source)?),
    };
    let pull = match enabled(&raw.pull) {
        false => None,
        true => Some(pull(raw, section, source)?),
    };
    Ok(Some(Crowdsec {
        url,
        push,
        pull,
        scenario,
        actions: actions(raw, respond, source)?,
    }))
}

/// `push` and `pull` are on unless set to false: the section itself is the switch.
fn enabled(field: &Field<bool>) -> bool {
    field.as_ref().map_or(true, |on| *on.get_ref())
}

fn push(
    raw: &RawCrowdsec,
    section: &Spanned<RawCrowdsec>,
    source: SourceText<'_>,
) -> Result<Push, ConfigError> {
    let machine_id = required(
        source,
        section,
        &raw.push,
        "push",
        &raw.machine_id,
        "machine_id",
    )?;
    if !is_machine_id(machine_id.get_ref()) {
        return Err(source.value_error(
            &machine_id.span(),
            "crowdsec.machine_id",
            machine_id.get_ref(),
            format_args!(
                "is not a machine name (1-{MACHINE_ID_MAX_CHARS} printable characters, no \
                 blanks)"
            ),
        ));
    }
    let file = required(
        source,
        section,
        &raw.push,
        "push",
        &raw.password_file,
        "password_file",
    )?;
    let (password_file, password) = secret(source, file, "crowdsec.password_file", |_| true)?;
    Ok(Push {
        machine_id: machine_id.get_ref().clone(),
        password_file,
        password,
    })
}

fn pull(
    raw: &RawCrowdsec,
    section: &Spanned<RawCrowdsec>,
    source: SourceText<'_>,
) -> Result<Pull, ConfigError> {
    let file = required(
        source,
        section,
        &raw.pull,
        "pull",
        &raw.bouncer_key_file,
        "bouncer_key_file",
    )?;
    // The key travels in an HTTP header, which carries visible ASCII only.
    let (bouncer_key_file, bouncer_key) =
        secret(source, file, "crowdsec.bouncer_key_file", |key| {
            key.bytes().all(|byte| byte.is_ascii_graphic())
        })?;
    let every = duration(
        source,
        &raw.pull_every,
        "crowdsec.pull_every",
        DEFAULT_PULL_EVERY,
    )?;
    if every < MIN_PULL_EVERY {
        return Err(duration_error(
            source,
            &raw.pull_every,
            "crowdsec.pull_every",
            format_args!(
                "is too short (at least {}: every poll is a query on the LAPI's database)",
                format_duration(MIN_PULL_EVERY)
            ),
        ));
    }
    let resync_every = duration(
        source,
        &raw.resync_every,
        "crowdsec.resync_every",
        DEFAULT_RESYNC_EVERY,
    )?;
    if resync_every < every {
        return Err(duration_error(
            source,
            &raw.resync_every,
            "crowdsec.resync_every",
            format_args!(
                "is shorter than crowdsec.pull_every ({})",
                format_duration(every)
            ),
        ));
    }
    Ok(Pull {
        bouncer_key_file,
        bouncer_key,
        every,
        resync_every,
    })
}

fn actions(
    raw: &RawCrowdsec,
    respond: &RawRespond,
    source: SourceText<'_>,
) -> Result<Vec<ActionKind>, ConfigError> {
    let mut actions = Vec::new();
    for written in list(&raw.actions) {
        let action = ActionKind::from_word(written.get_ref())
            .ok_or_else(|| unknown_word_error::<ActionKind>(source, written, "crowdsec.actions"))?;
        let problem = if action == ActionKind::NftSet {
            Some("is where pulled decisions always go; list only the other actions")
        } else if actions.contains(&action) {
            Some("is listed twice")
        } else if action == ActionKind::Command && list(&respond.command).next().is_none() {
            Some("needs respond.command, the program and its arguments")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(source.value_error(
                &written.span(),
                "crowdsec.actions",
                written.get_ref(),
                problem,
            ));
        }
        actions.push(action);
    }
    Ok(actions)
}

/// The string key `key`, which the direction `switch` needs. Its absence is reported at the
/// switch when it is written, else at the section, the two places an admin would look.
fn required<'f>(
    source: SourceText<'_>,
    section: &Spanned<RawCrowdsec>,
    switch: &Field<bool>,
    switch_key: &str,
    field: &'f Field<String>,
    key: &str,
) -> Result<&'f Spanned<String>, ConfigError> {
    if let Some(value) = non_empty(field) {
        return Ok(value);
    }
    Err(match switch {
        Some(on) => source.value_error(
            &on.span(),
            &format!("crowdsec.{switch_key}"),
            "true",
            format_args!("needs crowdsec.{key}"),
        ),
        None => source.value_error(
            &section.span(),
            "crowdsec",
            "[crowdsec]",
            format_args!(
                "turns {switch_key} on, which needs crowdsec.{key} (or set {switch_key} = false)"
            ),
        ),
    })
}

/// Reads a secret file: a regular file (a FIFO would hang the start) of at most 4 KiB, blanks
/// around it trimmed (the trailing newline an editor adds), one line, no control characters,
/// and `acceptable` to the caller. A relative path is taken from the directory of the config
/// file. Errors name the file, never its text.
fn secret(
    source: SourceText<'_>,
    field: &Spanned<String>,
    key: &str,
    acceptable: fn(&str) -> bool,
) -> Result<(PathBuf, Secret), ConfigError> {
    let written = field.get_ref();
    let path = match source.file.parent() {
        Some(directory) => directory.join(written),
        None => PathBuf::from(written),
    };
    let problem =
        |problem: &dyn fmt::Display| source.value_error(&field.span(), key, written, problem);
    let bytes = match read_regular(&path, SECRET_MAX_BYTES) {
        Ok(bytes) => bytes,
        Err(FileProblem::Io(cause)) => {
            let mut error = problem(&format_args!("cannot be read: {cause}"));
            error.cause = Some(cause);
            return Err(error);
        }
        Err(FileProblem::TooLarge { .. }) => {
            return Err(problem(&format_args!(
                "is longer than {SECRET_MAX_BYTES} bytes"
            )));
        }
        Err(not_regular) => {
            return Err(problem(&format_args!("cannot be read: it {not_regular}")));
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Err(problem(&"is not UTF-8 text"));
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(problem(&"is empty"));
    }
    if text.chars().any(char::is_control) {
        return Err(problem(&"holds more than one line or control characters"));
    }
    if !acceptable(text) {
        return Err(problem(&"holds characters an HTTP header cannot carry"));
    }
    Ok((path, Secret(text.to_owned())))
}

/// `http://HOST[:PORT][/PATH]` to its canonical form with a trailing `/`.
fn parse_url(text: &str) -> Result<LapiUrl, &'static str> {
    let scheme_end = text.find("://");
    let scheme = scheme_end.map(|end| text[..end].to_ascii_lowercase());
    let rest = match (scheme.as_deref(), scheme_end) {
        (Some("http"), Some(end)) => &text[end + 3..],
        (Some("https"), _) => {
            return Err(
                "uses https, which nfsentry does not speak yet; reach the LAPI over \
                        http on loopback or a trusted network",
            );
        }
        _ => return Err("is not an http URL (e.g. \"http://127.0.0.1:8080/\")"),
    };
    if rest.contains(['?', '#']) {
        return Err("has a query or fragment; give the LAPI's base URL only");
    }
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        // Credentials in a URL end up in logs; the files below exist so that they do not.
        return Err("carries credentials; use password_file and bouncer_key_file instead");
    }
    if !is_authority(authority) {
        return Err(
            "does not name a host and port (e.g. \"http://127.0.0.1:8080/\", \
                    \"http://[::1]:8080/\", \"http://lapi.example:8080/\")",
        );
    }
    let path_ok = path.bytes().all(|byte| {
        byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'.' | b'_' | b'~' | b'%')
    });
    if !path_ok {
        return Err("has a path with characters a URL path does not carry unescaped");
    }
    let slash = if path.ends_with('/') { "" } else { "/" };
    Ok(LapiUrl(format!("http://{authority}{path}{slash}")))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, where host is an IPv4 address or a DNS name and
/// the port is 1-65535.
fn is_authority(authority: &str) -> bool {
    let (host_ok, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((v6, after)) = bracketed.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        (v6.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        (is_host_name(host), port)
    };
    let port_ok = port.map_or(true, |port| {
        !port.is_empty()
            && port.bytes().all(|byte| byte.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|port| port != 0)
    });
    host_ok && port_ok
}

/// A DNS name or dotted IPv4 address: labels of letters, digits and '-', none empty.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_scenario(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= SCENARIO_MAX_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

fn is_machine_id(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MACHINE_ID_MAX_CHARS
        && name.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_canonical_with_a_trailing_slash() {
        let cases = [
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
            ("HTTP://lapi.example", "http://lapi.example/"),
            ("http://[::1]:8080", "http://[::1]:8080/"),
            ("http://[2001:db8::7]", "http://[2001:db8::7]/"),
            (
                "http://proxy.example/crowdsec",
                "http://proxy.example/crowdsec/",
            ),
        ];
        for (written, canonical) in cases {
            assert_eq!(
                parse_url(written).map(|url| url.0),
                Ok(canonical.to_owned()),
                "{written}"
            );
        }
        let url = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            url.endpoint("v1/watchers/login"),
            "http://127.0.0.1:8080/v1/watchers/login"
        );
        assert_eq!(
            url.endpoint("/v1/alerts"),
            "http://127.0.0.1:8080/v1/alerts"
        );
    }

    #[test]
    fn malformed_urls_are_refused() {
        for bad in [
            "",
            "127.0.0.1:8080",
            "ftp://127.0.0.1/",
            "https://127.0.0.1:8080/",
            "http://",
            "http://:8080/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:65536/",
            "http://127.0.0.1:80a/",
            "http://127.0.0.1:/",
            "http://user:pw@127.0.0.1/",
            "http://127.0.0.1/?x=1",
            "http://127.0.0.1/#top",
            "http://2001:db8::7/",
            "http://[2001:db8::7/",
            "http://[2001:db8::7]x/",
            "http://[not-v6]:80/",
            "http://lapi..example/",
            "http://lap i/",
            "http://127.0.0.1/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        assert_eq!(format!("{secret:#?}"), "Secret(..)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn names() {
        assert!(is_scenario("nfsentry/portscan"));
        assert!(is_scenario("crowdsecurity/ssh-bf_v2.1"));
        assert!(!is_scenario(""));
        assert!(!is_scenario("a b"));
        assert!(!is_scenario("a\"b"));
        assert!(!is_scenario(&"x".repeat(SCENARIO_MAX_CHARS + 1)));
        assert!(is_machine_id("web-01"));
        assert!(is_machine_id("4f1c0a1d3e6b40b6a5bb1c0c9d7f2e11Xq2pL0mN"));
        assert!(!is_machine_id("web 01"));
        assert!(!is_machine_id(""));
    }
}
