//! Reading what nf_tables sends back on its own: the elements of a dumped set, and the
//! notifications of committed changes (which table, chain, rule, set or elements were added or
//! deleted, and by which netlink port). Bytes are untrusted as everywhere in
//! [`crate::netlink_wire`]: anything malformed is skipped. It does no I/O and knows nothing of
//! what the objects mean to nfsentry.
//!
//! Numbers from include/uapi/linux/netfilter/nf_tables.h and nfnetlink.h.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::netlink_wire::{Attribute, Attributes, Message};

/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nf_tables message type.
pub(super) const SUBSYSTEM: u16 = libc::NFNL_SUBSYS_NFTABLES as u16;
/// `struct nfgenmsg`: u8 family, u8 version, be16 resource id.
pub(super) const NFGENMSG_BYTES: usize = 4;

/// `enum nf_tables_msg_types`, the low byte of the message type.
mod msg {
    pub(super) const NEWTABLE: u8 = 0;
    pub(super) const DELTABLE: u8 = 2;
    pub(super) const NEWCHAIN: u8 = 3;
    pub(super) const DELCHAIN: u8 = 5;
    pub(super) const NEWRULE: u8 = 6;
    pub(super) const DELRULE: u8 = 8;
    pub(super) const NEWSET: u8 = 9;
    pub(super) const DELSET: u8 = 11;
    pub(super) const NEWSETELEM: u8 = 12;
    pub(super) const DELSETELEM: u8 = 14;
    pub(super) const NEWGEN: u8 = 15;
    pub(super) const DESTROYTABLE: u8 = 26;
    pub(super) const DESTROYCHAIN: u8 = 27;
    pub(super) const DESTROYRULE: u8 = 28;
    pub(super) const DESTROYSET: u8 = 29;
    pub(super) const DESTROYSETELEM: u8 = 30;
}

/// `GETSETELEM`, for the dump request.
pub(super) const MSG_GETSETELEM: u8 = 13;

// Attribute numbers, each enum of nf_tables.h.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_GEN_ID: u16 = 1;
const NFTA_GEN_PROC_NAME: u16 = 3;

/// The object a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Table,
    Chain,
    Rule,
    Set,
}

/// One set element as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    /// The element's own timeout; `None` (or absent) when it never times out.
    pub timeout: Option<Duration>,
    /// Time left before it times out, when it does.
    pub expires_in: Option<Duration>,
}

impl Element {
    /// The key as an address: 4 bytes are IPv4, 16 bytes IPv6, anything else is no address.
    pub fn address(&self) -> Option<IpAddr> {
        match self.key.len() {
            4 => <[u8; 4]>::try_from(self.key.as_slice())
                .ok()
                .map(|bytes| IpAddr::V4(Ipv4Addr::from(bytes))),
            16 => <[u8; 16]>::try_from(self.key.as_slice())
                .ok()
                .map(|bytes| IpAddr::V6(Ipv6Addr::from(bytes))),
            _ => None,
        }
    }

    /// How long the element still blocks: `None` for ever, else the time left.
    pub fn remaining(&self) -> Option<Duration> {
        self.timeout?;
        Some(self.expires_in.unwrap_or_default())
    }
}

/// What one notification says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A table, chain, rule or set was added or deleted. `name` is the chain's or set's name,
    /// for a rule its chain's; a table has none.
    Object {
        kind: ObjectKind,
        deleted: bool,
        family: u8,
        table: String,
        name: Option<String>,
    },
    /// Elements were added to or deleted from a set.
    Elements {
        deleted: bool,
        family: u8,
        table: String,
        set: String,
        elements: Vec<Element>,
    },
    /// The end of one committed transaction: every notification before it since the last one
    /// belongs to it.
    Generation { id: u32, process: Option<String> },
}

/// One nf_tables notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The netlink port of the socket whose transaction made the change (0: the kernel's own).
    pub port: u32,
    pub change: Change,
}

/// Reads one message heard on the nf_tables multicast group; `None` for anything else
/// (another subsystem, a message type not followed here, malformed bytes).
pub fn notification(message: &Message<'_>) -> Option<Notification> {
    let (kind, family, attributes) = split(message)?;
    let text = |wanted: u16| string(attributes, wanted);
    let object = |kind: ObjectKind, deleted: bool, table: u16, name: Option<u16>| {
        Some(Change::Object {
            kind,
            deleted,
            family,
            table: text(table)?,
            name: name.and_then(text),
        })
    };
    let change = match kind {
        msg::NEWTABLE | msg::DELTABLE | msg::DESTROYTABLE => object(
            ObjectKind::Table,
            kind != msg::NEWTABLE,
            NFTA_TABLE_NAME,
            None,
        )?,
        msg::NEWCHAIN | msg::DELCHAIN | msg::DESTROYCHAIN => object(
            ObjectKind::Chain,
            kind != msg::NEWCHAIN,
            NFTA_CHAIN_TABLE,
            Some(NFTA_CHAIN_NAME),
        )?,
        msg::NEWRULE | msg::DELRULE | msg::DESTROYRULE => object(
            ObjectKind::Rule,
            kind != msg::NEWRULE,
            NFTA_RULE_TABLE,
            Some(NFTA_RULE_CHAIN),
        )?,
        msg::NEWSET | msg::DELSET | msg::DESTROYSET => object(
            ObjectKind::Set,
            kind != msg::NEWSET,
            NFTA_SET_TABLE,
            Some(NFTA_SET_NAME),
        )?,
        msg::NEWSETELEM | msg::DELSETELEM | msg::DESTROYSETELEM => {
            let (table, set, elements) = element_list(attributes)?;
            Change::Elements {
                deleted: kind != msg::NEWSETELEM,
                family,
                table,
                set,
                elements,
            }
        }
        msg::NEWGEN => Change::Generation {
            id: attribute(attributes, NFTA_GEN_ID)
                .and_then(|value| value.get(..4)?.try_into().ok())
                .map_or(0, u32::from_be_bytes),
            process: text(NFTA_GEN_PROC_NAME),
        },
        _ => return None,
    };
    Some(Notification {
        port: message.port,
        change,
    })
}

/// Reads one message of a set-element dump: the table, the set and its elements.
pub fn dumped_elements(message: &Message<'_>) -> Option<(String, String, Vec<Element>)> {
    let (kind, _family, attributes) = split(message)?;
    (kind == msg::NEWSETELEM).then_some(())?;
    element_list(attributes)
}

/// The nf_tables message type, the family, and the attributes behind `nfgenmsg`.
fn split<'a>(message: &Message<'a>) -> Option<(u8, u8, &'a [u8])> {
    let [subsystem, kind] = message.kind.to_be_bytes();
    (u16::from(subsystem) == SUBSYSTEM).then_some(())?;
    let family = *message.payload.first()?;
    let attributes = message.payload.get(NFGENMSG_BYTES..)?;
    Some((kind, family, attributes))
}

/// The well-formed attributes up to the first malformed one.
fn walk(bytes: &[u8]) -> impl Iterator<Item = Attribute<'_>> {
    Attributes::new(bytes).map_while(Result::ok)
}

fn attribute(bytes: &[u8], wanted: u16) -> Option<&[u8]> {
    walk(bytes)
        .find(|attribute| attribute.kind == wanted)
        .map(|attribute| attribute.value)
}

/// A NUL-terminated string attribute, cut at its NUL.
fn string(bytes: &[u8], wanted: u16) -> Option<String> {
    let value = attribute(bytes, wanted)?;
    let text = value.split(|&byte| byte == 0).next()?;
    Some(String::from_utf8_lossy(text).into_owned())
}

fn element_list(attributes: &[u8]) -> Option<(String, String, Vec<Element>)> {
    let table = string(attributes, NFTA_SET_ELEM_LIST_TABLE)?;
    let set = string(attributes, NFTA_SET_ELEM_LIST_SET)?;
    let elements = attribute(attributes, NFTA_SET_ELEM_LIST_ELEMENTS)
        .map(|list| {
            walk(list)
                .filter(|item| item.kind == NFTA_LIST_ELEM)
                .filter_map(|item| element(item.value))
                .collect()
        })
        .unwrap_or_default();
    Some((table, set, elements))
}

fn element(bytes: &[u8]) -> Option<Element> {
    let key = attribute(attribute(bytes, NFTA_SET_ELEM_KEY)?, NFTA_DATA_VALUE)?.to_vec();
    let millis = |wanted: u16| {
        attribute(bytes, wanted)
            .and_then(|value| value.get(..8)?.try_into().ok())
            .map(u64::from_be_bytes)
    };
    // Kernels that give every element of a timeout set a timeout say "never" with 0.
    let timeout = millis(NFTA_SET_ELEM_TIMEOUT)
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    let expires_in = millis(NFTA_SET_ELEM_EXPIRATION).map(Duration::from_millis);
    Some(Element {
        key,
        timeout,
        expires_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink_wire::fixtures::{attribute as attr, message, truncations_and_corruptions};
    use crate::netlink_wire::Messages;

    const INET: u8 = libc::NFPROTO_INET as u8;
    const NFT_PORT: u32 = 22337;

    fn kind(message_type: u8) -> u16 {
        (SUBSYSTEM << 8) | u16::from(message_type)
    }

    fn nfgenmsg(family: u8) -> Vec<u8> {
        vec![family, 0, 0, 0]
    }

    fn text(value: &str) -> Vec<u8> {
        [value.as_bytes(), b"\0"].concat()
    }

    fn notification_of(message_type: u8, family: u8, attributes: &[u8]) -> Vec<u8> {
        let mut payload = nfgenmsg(family);
        payload.extend_from_slice(attributes);
        message(kind(message_type), 0, 0, NFT_PORT, &payload)
    }

    fn element_bytes(key: &[u8], timeout_ms: Option<u64>, expiration_ms: Option<u64>) -> Vec<u8> {
        let mut inner = attr(NFTA_SET_ELEM_KEY, &attr(NFTA_DATA_VALUE, key));
        if let Some(ms) = timeout_ms {
            inner.extend(attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes()));
        }
        if let Some(ms) = expiration_ms {
            inner.extend(attr(NFTA_SET_ELEM_EXPIRATION, &ms.to_be_bytes()));
        }
        attr(NFTA_LIST_ELEM, &inner)
    }

    fn element_message(message_type: u8, elements: &[Vec<u8>]) -> Vec<u8> {
        let mut attributes = attr(NFTA_SET_ELEM_LIST_TABLE, &text("nfsentry"));
        attributes.extend(attr(NFTA_SET_ELEM_LIST_SET, &text("blocked_v4")));
        attributes.extend(attr(NFTA_SET_ELEM_LIST_ELEMENTS, &elements.concat()));
        notification_of(message_type, INET, &attributes)
    }

    fn parsed(datagram: &[u8]) -> Vec<Notification> {
        Messages::new(datagram)
            .filter_map(|m| notification(&m))
            .collect()
    }

    #[test]
    fn a_deleted_table_chain_rule_and_set_name_their_table_and_port() {
        let mut datagram = Vec::new();
        let mut rule = attr(NFTA_RULE_TABLE, &text("nfsentry"));
        rule.extend(attr(NFTA_RULE_CHAIN, &text("prerouting")));
        datagram.extend(notification_of(msg::DELRULE, INET, &rule));
        let mut set = attr(NFTA_SET_TABLE, &text("nfsentry"));
        set.extend(attr(NFTA_SET_NAME, &text("blocked_v4")));
        datagram.extend(notification_of(msg::DELSET, INET, &set));
        // The kernel puts the chain's handle (attribute 2) before its name.
        let mut chain = attr(NFTA_CHAIN_TABLE, &text("nfsentry"));
        chain.extend(attr(2, &2u64.to_be_bytes()));
        chain.extend(attr(NFTA_CHAIN_NAME, &text("prerouting")));
        datagram.extend(notification_of(msg::DELCHAIN, INET, &chain));
        let netdev = libc::NFPROTO_NETDEV as u8;
        datagram.extend(notification_of(
            msg::DESTROYTABLE,
            netdev,
            &attr(NFTA_TABLE_NAME, &text("nfsentry")),
        ));
        let mut generation = attr(NFTA_GEN_ID, &10u32.to_be_bytes());
        generation.extend(attr(2, &NFT_PORT.to_be_bytes()));
        generation.extend(attr(NFTA_GEN_PROC_NAME, &text("nft")));
        datagram.extend(notification_of(msg::NEWGEN, 0, &generation));

        let object = |kind, family, name: Option<&str>| Change::Object {
            kind,
            deleted: true,
            family,
            table: "nfsentry".into(),
            name: name.map(str::to_owned),
        };
        let changes: Vec<(u32, Change)> = parsed(&datagram)
            .into_iter()
            .map(|n| (n.port, n.change))
            .collect();
        assert_eq!(
            changes,
            vec![
                (NFT_PORT, object(ObjectKind::Rule, INET, Some("prerouting"))),
                (NFT_PORT, object(ObjectKind::Set, INET, Some("blocked_v4"))),
                (
                    NFT_PORT,
                    object(ObjectKind::Chain, INET, Some("prerouting"))
                ),
                (NFT_PORT, object(ObjectKind::Table, netdev, None)),
                (
                    NFT_PORT,
                    Change::Generation {
                        id: 10,
                        process: Some("nft".into())
                    }
                ),
            ]
        );
    }

    #[test]
    fn deleted_elements_carry_their_addresses_and_time_left() {
        let datagram = element_message(
            msg::DELSETELEM,
            &[
                element_bytes(&[192, 0, 2, 1], None, None),
                element_bytes(&[198, 51, 100, 7], Some(60_000), Some(59_500)),
                element_bytes(&[203, 0, 113, 9], Some(0), None),
            ],
        );
        let notifications = parsed(&datagram);
        let [Notification {
            port,
            change:
                Change::Elements {
                    deleted,
                    family,
                    table,
                    set,
                    elements,
                },
        }] = notifications.as_slice()
        else {
            panic!("expected one element notification");
        };
        assert_eq!((*port, *deleted, *family), (NFT_PORT, true, INET));
        assert_eq!((table.as_str(), set.as_str()), ("nfsentry", "blocked_v4"));
        let read: Vec<_> = elements
            .iter()
            .map(|e| (e.address().map(|a| a.to_string()), e.remaining()))
            .collect();
        assert_eq!(
            read,
            vec![
                (Some("192.0.2.1".into()), None),
                (
                    Some("198.51.100.7".into()),
                    Some(Duration::from_millis(59_500))
                ),
                (Some("203.0.113.9".into()), None),
            ]
        );
    }

    #[test]
    fn a_dump_message_reads_like_a_notification_and_other_subsystems_are_skipped() {
        let v6: [u8; 16] = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
        let datagram = element_message(
            msg::NEWSETELEM,
            &[element_bytes(&v6, Some(3_600_000), Some(1_000))],
        );
        let messages: Vec<_> = Messages::new(&datagram).collect();
        let (table, set, elements) = dumped_elements(&messages[0]).expect("elements");
        assert_eq!((table.as_str(), set.as_str()), ("nfsentry", "blocked_v4"));
        assert_eq!(elements[0].address(), Some("2001:db8::7".parse().unwrap()));
        assert_eq!(elements[0].remaining(), Some(Duration::from_secs(1)));

        // NFQUEUE (subsystem 3) uses the same low numbers for its own messages.
        let queue = message(0x0300, 0, 0, 0, &nfgenmsg(INET));
        assert!(parsed(&queue).is_empty());
        let short_key = element_bytes(&[1, 2, 3], None, None);
        let datagram = element_message(msg::DELSETELEM, &[short_key]);
        let notifications = parsed(&datagram);
        let [Notification {
            change: Change::Elements { elements, .. },
            ..
        }] = notifications.as_slice()
        else {
            panic!("expected one element notification");
        };
        assert_eq!(elements[0].address(), None);
    }

    #[test]
    fn truncated_and_corrupted_notifications_never_panic() {
        let mut datagram = element_message(
            msg::DELSETELEM,
            &[
                element_bytes(&[192, 0, 2, 1], Some(5), Some(4)),
                element_bytes(&[192, 0, 2, 2], None, None),
            ],
        );
        datagram.extend(notification_of(
            msg::DELTABLE,
            INET,
            &attr(NFTA_TABLE_NAME, &text("nfsentry")),
        ));
        for bytes in truncations_and_corruptions(&datagram, 20_000) {
            for message in Messages::new(&bytes) {
                let _ = notification(&message);
                let _ = dumped_elements(&message);
            }
        }
    }
}
