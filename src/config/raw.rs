//! The configuration file exactly as written: serde structs that refuse unknown keys and keep
//! the position of every value; nothing here checks ranges or meaning.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A value with its byte span in the file, absent when the key is not set.
pub(crate) type Field<T> = Option<Spanned<T>>;

/// A list whose elements each keep their own span, so an error can point at the bad element.
pub(crate) type ListField<T> = Field<Vec<Spanned<T>>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub(crate) daemon: RawDaemon,
    pub(crate) monitor: RawMonitor,
    pub(crate) detect: RawDetect,
    pub(crate) respond: RawRespond,
    /// Spanned so that an error about a key the section lacks can point at the section.
    pub(crate) crowdsec: Field<RawCrowdsec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDaemon {
    pub(crate) queue: Field<RawQueue>,
    pub(crate) table: Field<String>,
    pub(crate) state_dir: Field<String>,
    pub(crate) control_socket: Field<String>,
    pub(crate) log: Field<String>,
    pub(crate) interfaces: ListField<String>,
    pub(crate) nflog_group: Field<i64>,
    pub(crate) queue_mode: Field<String>,
    pub(crate) history_max_bytes: Field<i64>,
    pub(crate) keep_blocks_on_exit: Field<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMonitor {
    pub(crate) tcp_ports: ListField<RawPortItem>,
    pub(crate) udp_ports: ListField<RawPortItem>,
    pub(crate) advanced_tcp: Field<i64>,
    pub(crate) advanced_udp: Field<i64>,
    pub(crate) exclude_tcp: ListField<RawPortItem>,
    pub(crate) exclude_udp: ListField<RawPortItem>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDetect {
    pub(crate) scan_trigger: Field<i64>,
    pub(crate) window: Field<RawDuration>,
    pub(crate) ignore: ListField<String>,
    pub(crate) ignore_file: Field<String>,
    pub(crate) max_sources: Field<i64>,
    pub(crate) verify: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRespond {
    pub(crate) verdict: Field<String>,
    pub(crate) block_timeout: Field<RawDuration>,
    pub(crate) max_blocks: Field<i64>,
    pub(crate) actions: ListField<String>,
    pub(crate) hosts_deny: Field<String>,
    pub(crate) hosts_deny_line: Field<String>,
    pub(crate) route: Field<String>,
    pub(crate) command: ListField<String>,
    pub(crate) command_first: Field<bool>,
    pub(crate) command_timeout: Field<RawDuration>,
    pub(crate) ipfilter_interface: Field<String>,
    pub(crate) port_banner: Field<String>,
    pub(crate) unverified_timeout: Field<RawDuration>,
    pub(crate) max_blocks_per_sec: Field<i64>,
    pub(crate) blocked_table: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCrowdsec {
    pub(crate) url: Field<String>,
    pub(crate) push: Field<bool>,
    pub(crate) machine_id: Field<String>,
    pub(crate) password_file: Field<String>,
    pub(crate) pull: Field<bool>,
    pub(crate) bouncer_key_file: Field<String>,
    pub(crate) pull_every: Field<RawDuration>,
    pub(crate) resync_every: Field<RawDuration>,
    pub(crate) scenario: Field<String>,
    pub(crate) actions: ListField<String>,
}

/// One element of a port list: `80` or `"32771-32774"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawPortItem {
    Number(i64),
    Text(String),
}

/// `daemon.queue`: `0`, `"0"` or `"0-3"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawQueue {
    Number(i64),
    Text(String),
}

/// A duration: a TOML integer counts seconds, a string uses units ("10m").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawDuration {
    Seconds(i64),
    Text(String),
}

/// Hand-written rather than `#[serde(untagged)]`: an untagged enum's error says only "did not
/// match any variant", while this one says what was expected.
impl<'de> Deserialize<'de> for RawPortItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawPortItem, D::Error> {
        deserializer.deserialize_any(NumberOrText {
            expecting: "a port number or a \"first-last\" range string",
            number: RawPortItem::Number,
            text: RawPortItem::Text,
        })
    }
}

impl<'de> Deserialize<'de> for RawQueue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawQueue, D::Error> {
        deserializer.deserialize_any(NumberOrText {
            expecting: "a queue number or a \"first-last\" range string",
            number: RawQueue::Number,
            text: RawQueue::Text,
        })
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawDuration, D::Error> {
        deserializer.deserialize_any(NumberOrText {
            expecting: "a duration such as \"10m\" or a number of seconds",
            number: RawDuration::Seconds,
            text: RawDuration::Text,
        })
    }
}

/// Accepts a TOML integer or string and wraps it with the matching constructor.
struct NumberOrText<T> {
    expecting: &'static str,
    number: fn(i64) -> T,
    text: fn(String) -> T,
}

impl<T> Visitor<'_> for NumberOrText<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        Ok((self.number)(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        // Larger than any i64 is out of every range we accept; saturate and let the validator
        // say so with the key and the line.
        Ok((self.number)(i64::try_from(value).unwrap_or(i64::MAX)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        Ok((self.text)(value.to_owned()))
    }
}
