//! Follows nf_tables' change notifications (netlink group NFNLGRP_NFTABLES) for nfsentry's
//! tables. It gathers each committed transaction's notifications up to the generation message
//! that ends it, keeps what another process deleted from nfsentry's tables, and hands that on as
//! a [`ForeignChange`]. nfsentry's own changes, made through a socket whose port
//! [`super::netlink::is_own_port`] knows, and other tables are passed over; so are additions,
//! which take nothing away. It judges nothing ([`crate::heal`] does) and changes nothing.
//!
//! A set element that times out makes no notification, so the kernel's expiries never show up
//! here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::error;
use nix::errno::Errno;
use nix::sys::socket::SockProtocol;

use super::messages::{notification, Change, ObjectKind};
use super::netlink::{is_own_port, NftError};
use super::ruleset::{blocked_set, IpFamily};
use crate::heal::ForeignChange;
use crate::netlink_wire::{self, Messages};

/// How long one receive waits, so that the thread notices a closed channel now and then.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Emptying a set makes one notification per element: a 65536-block flush is several MiB of
/// notifications, which must fit while the responder is busy. An overrun is not fatal (see
/// [`Seen::Lost`]), only more work.
const SOCKET_BUFFER_BYTES: usize = 16 << 20;
/// The kernel packs notifications into datagrams of at most a few pages; a longer one would be
/// cut, and its elements lost.
const DATAGRAM_BYTES: usize = 256 << 10;
/// After a receive error other than a timeout, wait this long before the next receive.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

const NFPROTO_INET: u8 = libc::NFPROTO_INET as u8;
const NFPROTO_NETDEV: u8 = libc::NFPROTO_NETDEV as u8;

/// What the watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// One transaction of another process that deleted something of nfsentry's.
    Changed(ForeignChange),
    /// The kernel dropped notifications because the socket's buffer was full: what happened
    /// meanwhile is unknown.
    Lost,
}

/// A socket on the nf_tables notification group, for one table name.
pub struct Watch {
    socket: OwnedFd,
    gathering: Gathering,
    buffer: Vec<u8>,
}

impl Watch {
    /// Joins the notification group; needs CAP_NET_ADMIN. `table` names nfsentry's `inet` and
    /// `netdev` tables; `blocked_table` the admin's `inet` table holding the blocked sets
    /// (`respond.blocked_table`), of which only the table and those two sets are followed.
    pub fn open(table: &str, blocked_table: Option<&str>) -> Result<Watch, NftError> {
        let socket = netlink_wire::open_socket(SockProtocol::NetlinkNetFilter, RECEIVE_TIMEOUT)
            .map_err(NftError::Open)?;
        netlink_wire::join_group(&socket, libc::NFNLGRP_NFTABLES as u32).map_err(|source| {
            NftError::SocketOption {
                option: "NETLINK_ADD_MEMBERSHIP NFNLGRP_NFTABLES",
                source,
            }
        })?;
        netlink_wire::grow_receive_buffer(&socket, SOCKET_BUFFER_BYTES).map_err(|source| {
            NftError::SocketOption {
                option: "SO_RCVBUF",
                source,
            }
        })?;
        Ok(Watch {
            socket,
            gathering: Gathering::new(table, blocked_table),
            buffer: vec![0; DATAGRAM_BYTES],
        })
    }

    /// Reads one datagram, waiting up to a second, and returns the transactions it completed.
    /// EAGAIN means nothing came.
    pub fn receive(&mut self) -> Result<Vec<Seen>, Errno> {
        match netlink_wire::receive_from_kernel(&self.socket, &mut self.buffer) {
            Ok(Some(datagram)) => Ok(self.gathering.read(datagram)),
            Ok(None) => Ok(Vec::new()),
            Err(Errno::ENOBUFS) => {
                self.gathering.forget();
                Ok(vec![Seen::Lost])
            }
            Err(errno) => Err(errno),
        }
    }

    /// Runs the watch on a thread of its own, handing everything it sees to `deliver`, until
    /// `deliver` returns false (its receiver is gone) or the process ends.
    pub fn spawn(
        mut self,
        mut deliver: impl FnMut(Seen) -> bool + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("nft-watch".into())
            .spawn(move || loop {
                match self.receive() {
                    Ok(seen) => {
                        if !seen.into_iter().all(&mut deliver) {
                            return;
                        }
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(errno) => {
                        error!("reading nftables change notifications failed: {errno}");
                        thread::sleep(ERROR_PAUSE);
                    }
                }
            })
    }
}

/// Notifications of transactions not yet ended, per committing port. Transactions are committed
/// one at a time, so there is normally one.
struct Gathering {
    table: String,
    /// The admin's table holding the blocked sets, when it is not nfsentry's.
    blocked_table: Option<String>,
    open: BTreeMap<u32, ForeignChange>,
}

impl Gathering {
    fn new(table: &str, blocked_table: Option<&str>) -> Gathering {
        Gathering {
            table: table.to_owned(),
            blocked_table: blocked_table.map(str::to_owned),
            open: BTreeMap::new(),
        }
    }

    /// The table whose blocked sets hold the blocks.
    fn blocks_table(&self) -> &str {
        self.blocked_table.as_deref().unwrap_or(&self.table)
    }

    /// Whether a deleted object of the admin's table takes blocks with it: the table itself or
    /// one of the two blocked sets. The admin's chains and rules are the admin's business.
    fn admin_object_holds_blocks(&self, kind: ObjectKind, table: &str, name: Option<&str>) -> bool {
        self.blocked_table.as_deref() == Some(table)
            && match kind {
                ObjectKind::Table => true,
                ObjectKind::Set => name.is_some_and(is_blocked_set),
                ObjectKind::Chain | ObjectKind::Rule => false,
            }
    }

    fn forget(&mut self) {
        self.open.clear();
    }

    fn read(&mut self, datagram: &[u8]) -> Vec<Seen> {
        let mut ended = Vec::new();
        for notification in Messages::new(datagram).filter_map(|m| notification(&m)) {
            let port = notification.port;
            if is_own_port(port) {
                continue;
            }
            match notification.change {
                Change::Generation { process, .. } => {
                    if let Some(mut change) = self.open.remove(&port) {
                        change.process = process;
                        only_tables_when_deleted_whole(&mut change.damaged);
                        ended.push(Seen::Changed(change));
                    }
                }
                change => self.note(port, change),
            }
        }
        ended
    }

    /// Keeps what `change` took from nfsentry's tables.
    fn note(&mut self, port: u32, change: Change) {
        let (damaged, removed): (Option<String>, Vec<IpAddr>) = match change {
            Change::Object {
                kind,
                deleted: true,
                family,
                table,
                name,
            } if table == self.table
                || (family == NFPROTO_INET
                    && self.admin_object_holds_blocks(kind, &table, name.as_deref())) =>
            {
                let Some(family) = family_word(family) else {
                    return;
                };
                let chain_or_set = name.unwrap_or_default();
                let what = match kind {
                    ObjectKind::Table => format!("table {family} {table}"),
                    ObjectKind::Chain => format!("chain {family} {table}/{chain_or_set}"),
                    ObjectKind::Rule => format!("rules of chain {family} {table}/{chain_or_set}"),
                    ObjectKind::Set => format!("set {family} {table}/{chain_or_set}"),
                };
                (Some(what), Vec::new())
            }
            Change::Elements {
                deleted: true,
                family: NFPROTO_INET,
                table,
                set,
                elements,
            } if table == self.table || table == self.blocks_table() => {
                if table == self.blocks_table() && is_blocked_set(&set) {
                    (None, elements.iter().filter_map(|e| e.address()).collect())
                } else if table != self.table {
                    // Another set of the admin's table.
                    return;
                } else {
                    (
                        Some(format!("elements of set inet {table}/{set}")),
                        Vec::new(),
                    )
                }
            }
            _ => return,
        };
        let entry = self.open.entry(port).or_insert_with(|| ForeignChange {
            port,
            ..ForeignChange::default()
        });
        if let Some(what) = damaged {
            if !entry.damaged.contains(&what) {
                entry.damaged.push(what);
            }
        }
        entry.removed.extend(removed);
    }
}

fn is_blocked_set(name: &str) -> bool {
    name == blocked_set(IpFamily::V4) || name == blocked_set(IpFamily::V6)
}

/// A deleted table takes its chains, rules and sets along; naming them all says nothing more.
fn only_tables_when_deleted_whole(damaged: &mut Vec<String>) {
    let tables: Vec<String> = damaged
        .iter()
        .filter_map(|what| what.strip_prefix("table "))
        .map(|family_and_name| format!(" {family_and_name}/"))
        .collect();
    damaged.retain(|what| {
        what.starts_with("table ") || !tables.iter().any(|table| what.contains(table.as_str()))
    });
}

fn family_word(family: u8) -> Option<&'static str> {
    match family {
        NFPROTO_INET => Some("inet"),
        NFPROTO_NETDEV => Some("netdev"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink_wire::fixtures::{attribute, message};

    /// No socket of this test process has this port (a process's first socket gets its pid).
    const NFT_PORT: u32 = u32::MAX - 7;

    fn text(value: &str) -> Vec<u8> {
        [value.as_bytes(), b"\0"].concat()
    }

    fn notification(kind: u8, family: u8, port: u32, attributes: &[u8]) -> Vec<u8> {
        let mut payload = vec![family, 0, 0, 0];
        payload.extend_from_slice(attributes);
        message((10 << 8) | u16::from(kind), 0, 0, port, &payload)
    }

    fn table(kind: u8, family: u8, name: &str) -> Vec<u8> {
        notification(kind, family, NFT_PORT, &attribute(1, &text(name)))
    }

    fn elements(kind: u8, table: &str, set: &str, keys: &[&[u8]]) -> Vec<u8> {
        let list: Vec<u8> = keys
            .iter()
            .flat_map(|key| attribute(1, &attribute(1, &attribute(1, key))))
            .collect();
        let mut attributes = attribute(1, &text(table));
        attributes.extend(attribute(2, &text(set)));
        attributes.extend(attribute(3, &list));
        notification(kind, NFPROTO_INET, NFT_PORT, &attributes)
    }

    fn generation(port: u32) -> Vec<u8> {
        let mut attributes = attribute(1, &7u32.to_be_bytes());
        attributes.extend(attribute(3, &text("nft")));
        notification(15, 0, port, &attributes)
    }

    /// A change made by the `nft` command: what it damaged, which blocked addresses it removed.
    fn by_nft(damaged: &[&str], removed: &[&str]) -> Seen {
        Seen::Changed(ForeignChange {
            port: NFT_PORT,
            process: Some("nft".into()),
            damaged: damaged.iter().map(|d| d.to_string()).collect(),
            removed: removed.iter().map(|a| a.parse().unwrap()).collect(),
        })
    }

    #[test]
    fn a_transaction_ends_at_its_generation_and_names_what_was_deleted() {
        let mut watch = Gathering::new("nfsentry", None);
        // `nft flush ruleset`: a deleted table names neither its chains nor its sets.
        let mut flush = notification(
            5,
            NFPROTO_INET,
            NFT_PORT,
            &[
                attribute(1, &text("nfsentry")),
                attribute(3, &text("prerouting")),
            ]
            .concat(),
        );
        flush.extend(table(2, NFPROTO_INET, "nfsentry"));
        flush.extend(table(2, NFPROTO_NETDEV, "nfsentry"));
        flush.extend(table(2, NFPROTO_INET, "filter"));
        flush.extend(generation(NFT_PORT));
        assert_eq!(
            watch.read(&flush),
            vec![by_nft(
                &["table inet nfsentry", "table netdev nfsentry"],
                &[]
            )]
        );

        // One transaction over two datagrams.
        let first = elements(14, "nfsentry", "blocked_v4", &[&[192, 0, 2, 1]]);
        assert_eq!(watch.read(&first), vec![], "no generation yet");
        let mut second = elements(14, "nfsentry", "blocked_v4", &[&[192, 0, 2, 2]]);
        second.extend(elements(14, "nfsentry", "tcp_ports", &[&[0, 23]]));
        second.extend(elements(14, "nfsentry", "tcp_ports", &[&[0, 25]]));
        second.extend(elements(12, "nfsentry", "blocked_v4", &[&[192, 0, 2, 3]]));
        second.extend(generation(NFT_PORT));
        assert_eq!(
            watch.read(&second),
            vec![by_nft(
                &["elements of set inet nfsentry/tcp_ports"],
                &["192.0.2.1", "192.0.2.2"]
            )]
        );
        // Additions alone, and other tables, end no change worth reporting.
        let mut third = elements(12, "nfsentry", "blocked_v4", &[&[192, 0, 2, 3]]);
        third.extend(table(2, NFPROTO_INET, "filter"));
        third.extend(generation(NFT_PORT));
        assert_eq!(watch.read(&third), vec![]);
    }

    #[test]
    fn in_the_admins_table_only_the_table_and_the_blocked_sets_count() {
        let mut watch = Gathering::new("nfsentry", Some("filter"));
        // The admin's own chains, rules and other sets are theirs to change.
        let mut own_business = notification(
            3,
            NFPROTO_INET,
            NFT_PORT,
            &[attribute(1, &text("filter")), attribute(3, &text("input"))].concat(),
        );
        own_business.extend(elements(14, "filter", "trusted", &[&[192, 0, 2, 9]]));
        own_business.extend(generation(NFT_PORT));
        assert_eq!(watch.read(&own_business), vec![]);
        // A block deleted from the admin's set is the same as one deleted from ours.
        let mut by_hand = elements(14, "filter", "blocked_v4", &[&[192, 0, 2, 1]]);
        by_hand.extend(generation(NFT_PORT));
        assert_eq!(watch.read(&by_hand), vec![by_nft(&[], &["192.0.2.1"])]);
        // Reloading the admin's ruleset deletes both tables.
        let mut reload = table(2, NFPROTO_INET, "nfsentry");
        reload.extend(table(2, NFPROTO_INET, "filter"));
        reload.extend(table(2, NFPROTO_INET, "other"));
        reload.extend(generation(NFT_PORT));
        assert_eq!(
            watch.read(&reload),
            vec![by_nft(&["table inet nfsentry", "table inet filter"], &[])]
        );
    }

    #[test]
    fn changes_through_this_processs_own_sockets_are_passed_over() {
        let own = crate::nft::Nft::open();
        let Ok(own) = own else {
            eprintln!("skipped: cannot open an nf_tables socket here");
            return;
        };
        let port = own.port();
        let mut watch = Gathering::new("nfsentry", None);
        let mut datagram = notification(2, NFPROTO_INET, port, &attribute(1, &text("nfsentry")));
        datagram.extend(generation(port));
        assert_eq!(watch.read(&datagram), vec![]);
        drop(own);
        // Once closed, the port is another process's to take.
        assert!(!is_own_port(port));
    }
}
