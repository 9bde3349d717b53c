//! The connection to nf_tables: opens the netfilter netlink socket, sizes its buffers, and
//! commits each batch through [`netlink_wire::request_batch`], naming the step the kernel refused.
//! Its verbs apply nfsentry's state (the whole ruleset as one atomic batch, its removal, blocked
//! addresses as set elements) and fall back where the kernel lacks `nft_queue` or
//! `DESTROYSETELEM`. It also reads a set's elements back with one dump, and keeps the list of
//! its sockets' ports by which nfsentry's own changes are told from other processes'. What a
//! batch contains is [`super::batches`]'s, what the ruleset is [`super::ruleset`]'s; it never
//! runs the `nft` program.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, NetlinkAddr, SockProtocol};

use super::batches::{
    block_batch, install_batch, range_batch, refill_batch, release_batch, remove_batch, Step,
    Transaction,
};
use super::messages::{
    dumped_elements, Element, MSG_GETSETELEM, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE,
    SUBSYSTEM,
};
use super::objects::ElementOp;
use super::ruleset::{QueueMode, RulesetSpec};
use crate::netlink_wire::{self, kernel_says, Dump, OpenError, Request, RequestError, Wait};

/// Why talking to nf_tables failed. Kernel refusals carry the errno and the step of the batch
/// the kernel refused, e.g. `add rule 8 to inet nfsentry/prerouting: ip hdrlength > 5 ...`.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open a netfilter netlink socket")]
    Open(#[source] OpenError),
    #[error("cannot set {option} on the netfilter netlink socket")]
    SocketOption {
        option: &'static str,
        #[source]
        source: Errno,
    },
    #[error("{what} {name:?} cannot be used: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("sending the {operation} batch ({bytes} bytes) to the kernel failed")]
    Send {
        operation: &'static str,
        bytes: usize,
        #[source]
        source: Errno,
    },
    #[error("reading the kernel's answer to the {operation} batch failed")]
    Receive {
        operation: &'static str,
        #[source]
        source: Errno,
    },
    /// The errno is the refusal itself rather than a cause behind it, so the message carries
    /// it, followed by the kernel's own explanation when it gave one.
    #[error(
        "the kernel refused the {operation} batch at `{step}`: {errno}{}",
        kernel_says(.kernel_message)
    )]
    Refused {
        operation: &'static str,
        step: String,
        errno: Errno,
        /// The kernel's extended-ack text, when it had one.
        kernel_message: Option<String>,
    },
    #[error("the kernel did not answer `{step}` of the {operation} batch in time")]
    Unanswered {
        operation: &'static str,
        step: String,
    },
}

impl NftError {
    /// The errno behind the failure, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NftError::Open(error) => Some(error.errno()),
            NftError::SocketOption { source, .. }
            | NftError::Send { source, .. }
            | NftError::Receive { source, .. } => Some(*source),
            NftError::Refused { errno, .. } => Some(*errno),
            NftError::InvalidName { .. } | NftError::Unanswered { .. } => None,
        }
    }
}

/// The netlink ports of this process's open nf_tables sockets, each with the number of sockets
/// that have it. A change notification names the port of the socket whose transaction made the
/// change, so one from any of these is nfsentry's own, whichever thread or action made it; a
/// process-wide list is the one place that knows them all. Ports are unique per network
/// namespace only: sockets of one process in two namespaces (tests do that) can share one,
/// hence the count.
static OWN_PORTS: Mutex<BTreeMap<u32, usize>> = Mutex::new(BTreeMap::new());

/// Whether `port` is one of this process's open nf_tables sockets (see [`Nft::open`]).
pub fn is_own_port(port: u32) -> bool {
    own_ports().contains_key(&port)
}

fn own_ports() -> std::sync::MutexGuard<'static, BTreeMap<u32, usize>> {
    // The map stays consistent even if a holder panicked: every change is one entry's.
    OWN_PORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection to nf_tables. Every method sends one batch (or one dump request) and reads the
/// kernel's answer to every message in it before returning.
pub struct Nft {
    socket: OwnedFd,
    /// This socket's netlink port, listed in [`OWN_PORTS`] while it is open.
    port: u32,
    answer_buffer: Vec<u8>,
    /// What `SO_SNDBUF(FORCE)` was last raised to; big batches go out in one `sendmsg`.
    send_buffer_bytes: usize,
    /// Learned on the first install that tries it: `Some(false)` after the kernel refused the
    /// `queue` expression, so later installs go straight to the compat target.
    native_queue: Option<bool>,
    /// Whether to delete elements with `DESTROYSETELEM` (kernel >= 6.3), which succeeds when the
    /// element is already gone. Cleared if the kernel turns out not to know the message.
    destroy_element: bool,
}

/// Large enough for several hundred acknowledgements at once (each costs a full skb of buffer).
const ANSWER_SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// The kernel answers a batch before `sendmsg` returns; this bound on the whole wait for the
/// answers only matters if one is lost.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// One answer is at most an error with an echoed 64 KiB message, should `NETLINK_CAP_ACK` be
/// unsupported; the buffer holds that twice.
const ANSWER_BUFFER_BYTES: usize = 128 << 10;
/// Headroom over the batch size when raising the send buffer.
const SEND_BUFFER_SLACK_BYTES: usize = 64 << 10;

/// A dump of a big set takes longer than an answer to a batch: the kernel sends it in 32 KiB
/// parts, each waiting for the reader.
const DUMP_TIMEOUT: Duration = Duration::from_secs(60);
/// A dump the kernel flags as mixing old and new state is read again, this often at most.
const DUMP_ATTEMPTS: usize = 3;
/// Sequence numbers of dump requests, apart from the small numbers libnftnl gives batches.
static DUMP_SEQUENCE: AtomicU32 = AtomicU32::new(0x4e46_0000);

/// Longest table name the kernel takes (`NFT_NAME_MAXLEN` 256, with the NUL).
const TABLE_NAME_MAX_BYTES: usize = 255;
/// Longest device name (`IFNAMSIZ` 16, with the NUL).
const DEVICE_NAME_MAX_BYTES: usize = 15;

impl Nft {
    /// Opens a netfilter netlink socket. Needs `CAP_NET_ADMIN` for everything after this.
    pub fn open() -> Result<Nft, NftError> {
        // The socket also asks for short refusals (NETLINK_CAP_ACK) with the kernel's text
        // (NETLINK_EXT_ACK).
        let socket = netlink_wire::open_socket(SockProtocol::NetlinkNetFilter, ANSWER_TIMEOUT)
            .map_err(NftError::Open)?;
        netlink_wire::grow_receive_buffer(&socket, ANSWER_SOCKET_BUFFER_BYTES).map_err(
            |source| NftError::SocketOption {
                option: "SO_RCVBUF",
                source,
            },
        )?;
        let port = socket::getsockname::<NetlinkAddr>(socket.as_raw_fd())
            .map_err(|source| NftError::SocketOption {
                option: "getsockname",
                source,
            })?
            .pid();
        *own_ports().entry(port).or_default() += 1;
        Ok(Nft {
            socket,
            port,
            answer_buffer: vec![0; ANSWER_BUFFER_BYTES],
            send_buffer_bytes: 0,
            native_queue: None,
            destroy_element: kernel_at_least(6, 3),
        })
    }

    /// This socket's netlink port: notifications of the changes it makes carry it.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Replaces nfsentry's `inet` and `netdev` tables with `spec`, atomically: the batch adds
    /// each table, deletes it, then builds it afresh, so a stale table left by a crash is
    /// replaced rather than merged. Without `devices` the `netdev` table is only removed.
    ///
    /// The queue statement is the native `queue` expression unless `prefer` says `Compat`. When
    /// the kernel lacks `nft_queue` (the batch is refused with ENOENT at a queue rule) and
    /// `prefer` is `None`, the batch is rebuilt with the xt `NFQUEUE` target and sent again.
    /// Returns the mode that was installed.
    pub fn install(
        &mut self,
        spec: &RulesetSpec,
        prefer: Option<QueueMode>,
    ) -> Result<QueueMode, NftError> {
        self.install_with_blocks(spec, prefer, &[])
    }

    /// [`Nft::install`] with `blocks` in the blocked sets from the start, in the same
    /// transaction: a repaired or replaced ruleset never drops a blocked source in between.
    pub fn install_with_blocks(
        &mut self,
        spec: &RulesetSpec,
        prefer: Option<QueueMode>,
        blocks: &[(IpAddr, Option<Duration>)],
    ) -> Result<QueueMode, NftError> {
        let names = CheckedNames::new(spec)?;
        let first_try = match prefer {
            Some(mode) => mode,
            None if self.native_queue == Some(false) => QueueMode::Compat,
            None => QueueMode::Native,
        };
        let attempt = self.commit(names.install_batch(spec, first_try, blocks), "install");
        match attempt {
            Ok(()) => {
                if first_try == QueueMode::Native {
                    self.native_queue = Some(true);
                }
                Ok(first_try)
            }
            Err(CommitError::Refused {
                step: Some(step),
                errno: Errno::ENOENT,
                ..
            }) if step.native_queue && prefer.is_none() => {
                log::info!(
                    "the kernel has no native nft queue ({}); installing the ruleset with {}",
                    step.what,
                    QueueMode::Compat
                );
                self.native_queue = Some(false);
                self.commit(
                    names.install_batch(spec, QueueMode::Compat, blocks),
                    "install",
                )?;
                Ok(QueueMode::Compat)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the ignore and port sets of the installed ruleset `spec`'s contents, as one
    /// transaction; rules, counters and blocked sets are kept. Only the set contents of `spec`
    /// are read: a changed table name, queue or device list needs [`Nft::install`].
    pub fn refill_sets(&mut self, spec: &RulesetSpec) -> Result<(), NftError> {
        let table = checked_name("table", &spec.table, TABLE_NAME_MAX_BYTES)?;
        Ok(self.commit(refill_batch(spec, &table), "reload")?)
    }

    /// Deletes nfsentry's `inet` and `netdev` tables named `table`. Absent tables are fine: each
    /// is added before it is deleted, in the same batch.
    pub fn remove(&mut self, table: &str) -> Result<(), NftError> {
        let table = checked_name("table", table, TABLE_NAME_MAX_BYTES)?;
        Ok(self.commit(remove_batch(&table), "remove")?)
    }

    /// Adds `addr` to the blocked set of its family; `timeout` `None` blocks until released.
    /// Re-adding a present address succeeds (the element is sent without `NLM_F_EXCL`); kernel
    /// 6.18 then sets its timeout to the new one, `None` included, while kernels without element
    /// timeout updates keep the old one. An IPv4-mapped IPv6 address is treated as IPv4.
    pub fn block(
        &mut self,
        table: &str,
        addr: IpAddr,
        timeout: Option<Duration>,
    ) -> Result<(), NftError> {
        self.block_many(table, &[(addr, timeout)])
    }

    /// Adds many addresses in one batch (restoring blocks at start). All or none are added.
    pub fn block_many(
        &mut self,
        table: &str,
        entries: &[(IpAddr, Option<Duration>)],
    ) -> Result<(), NftError> {
        if entries.is_empty() {
            return Ok(());
        }
        let table = checked_name("table", table, TABLE_NAME_MAX_BYTES)?;
        Ok(self.commit(block_batch(&table, entries), "block")?)
    }

    /// Removes `addr` from its blocked set. An absent element (never added, or expired) is not
    /// an error. On kernels without `DESTROYSETELEM` the delete goes in a batch of its own and
    /// ENOENT counts as success, which also hides a missing table or set.
    pub fn release(&mut self, table: &str, addr: IpAddr) -> Result<(), NftError> {
        self.release_many(table, &[addr])
    }

    /// Removes many addresses: one batch where the kernel has `DESTROYSETELEM` (absent elements
    /// are fine there), else one batch per address, since an absent element's ENOENT would abort
    /// a shared batch.
    pub fn release_many(&mut self, table: &str, addrs: &[IpAddr]) -> Result<(), NftError> {
        if addrs.is_empty() {
            return Ok(());
        }
        let table = checked_name("table", table, TABLE_NAME_MAX_BYTES)?;
        if self.destroy_element {
            match self.commit(release_batch(&table, ElementOp::Destroy, addrs), "release") {
                Ok(()) => return Ok(()),
                // An unknown message type in a batch is refused with EINVAL.
                Err(CommitError::Refused {
                    errno: Errno::EINVAL | Errno::EOPNOTSUPP,
                    ..
                }) => {
                    log::info!("the kernel has no DESTROYSETELEM; releasing with DELSETELEM");
                    self.destroy_element = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        for addr in addrs {
            match self.commit(
                release_batch(&table, ElementOp::Delete, std::slice::from_ref(addr)),
                "release",
            ) {
                Ok(())
                | Err(CommitError::Refused {
                    errno: Errno::ENOENT,
                    ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Makes the range sets hold `after` instead of `before`, which must be what they hold now
    /// (the caller keeps it; overlapping networks may be in either, they are merged): one
    /// transaction, so a network never goes unblocked while the sets change.
    pub fn replace_ranges(
        &mut self,
        table: &str,
        before: &[IpNet],
        after: &[IpNet],
    ) -> Result<(), NftError> {
        let table = checked_name("table", table, TABLE_NAME_MAX_BYTES)?;
        let batch = range_batch(&table, before, after);
        if batch.steps.is_empty() {
            return Ok(());
        }
        Ok(self.commit(batch, "replace ranges")?)
    }

    /// The elements of set `set` in the `inet` table `table`, read with one dump (retried when
    /// the kernel flags it as inconsistent); `None` when the table or the set does not exist.
    /// A dump costs time in proportion to the set: nfsentry reads its blocked sets once, at
    /// start.
    pub fn set_elements(
        &mut self,
        table: &str,
        set: &str,
    ) -> Result<Option<Vec<Element>>, NftError> {
        let table_name = checked_name("table", table, TABLE_NAME_MAX_BYTES)?;
        let set_name = checked_name("set", set, TABLE_NAME_MAX_BYTES)?;
        let step = format!("list set inet {table} {set}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sequence = DUMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
            let kind = (SUBSYSTEM << 8) | u16::from(MSG_GETSETELEM);
            let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
            let nfgenmsg = [libc::NFPROTO_INET as u8, libc::NFNETLINK_V0 as u8, 0, 0];
            let request = Request::new(kind, flags, sequence)
                .family_header(&nfgenmsg)
                .attribute_bytes(NFTA_SET_ELEM_LIST_TABLE, table_name.as_bytes_with_nul())
                .and_then(|r| {
                    r.attribute_bytes(NFTA_SET_ELEM_LIST_SET, set_name.as_bytes_with_nul())
                })
                .map(Request::finish)
                .ok_or_else(|| NftError::InvalidName {
                    what: "table",
                    name: table.to_owned(),
                    reason: "too long",
                })?;
            let mut elements = Vec::new();
            let wait = Wait::new(&mut self.answer_buffer, DUMP_TIMEOUT);
            let dumped = netlink_wire::request_dump(&self.socket, &request, sequence, wait, |m| {
                if let Some((_, _, mut part)) = dumped_elements(&m) {
                    elements.append(&mut part);
                }
            });
            match dumped {
                Ok(Dump::Inconsistent) if attempt < DUMP_ATTEMPTS => continue,
                Ok(_) => return Ok(Some(elements)),
                Err(RequestError::Refused {
                    errno: Errno::ENOENT,
                    ..
                }) => return Ok(None),
                Err(error) => {
                    return Err(request_failure(error, "dump", request.len(), || {
                        step.clone()
                    }))
                }
            }
        }
    }

    /// Sends the batch and reads an answer for each of its messages.
    fn commit(
        &mut self,
        transaction: Transaction,
        operation: &'static str,
    ) -> Result<(), CommitError> {
        let (pages, steps) = transaction.into_pages();
        let pages: Vec<&[u8]> = pages.iter().map(Vec::as_slice).collect();
        let bytes: usize = pages.iter().map(|page| page.len()).sum();
        self.ensure_send_buffer(bytes)
            .map_err(CommitError::Failed)?;
        let awaited: Vec<u32> = steps.iter().map(|step| step.seq).collect();
        let wait = Wait::new(&mut self.answer_buffer, ANSWER_TIMEOUT);
        netlink_wire::request_batch(&self.socket, &pages, &awaited, wait).map_err(|error| {
            let step = |sequence: u32| steps.iter().find(|step| step.seq == sequence).cloned();
            match error {
                RequestError::Refused {
                    sequence,
                    errno,
                    kernel_message,
                } => CommitError::Refused {
                    operation,
                    step: step(sequence),
                    errno,
                    kernel_message,
                },
                RequestError::Unanswered { sequence, .. } => {
                    CommitError::Failed(request_failure(error, operation, bytes, || {
                        step(sequence).map(|s| s.what).unwrap_or_default()
                    }))
                }
                other => CommitError::Failed(request_failure(other, operation, bytes, String::new)),
            }
        })
    }

    fn ensure_send_buffer(&mut self, batch_bytes: usize) -> Result<(), NftError> {
        let wanted = batch_bytes.saturating_add(SEND_BUFFER_SLACK_BYTES);
        if wanted <= self.send_buffer_bytes {
            return Ok(());
        }
        let fd = self.socket.as_fd();
        socket::setsockopt(&fd, sockopt::SndBufForce, &wanted)
            .or_else(|_| socket::setsockopt(&fd, sockopt::SndBuf, &wanted))
            .map_err(|source| NftError::SocketOption {
                option: "SO_SNDBUF",
                source,
            })?;
        self.send_buffer_bytes = wanted;
        Ok(())
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        let mut ports = own_ports();
        if let Some(count) = ports.get_mut(&self.port) {
            *count -= 1;
            if *count == 0 {
                ports.remove(&self.port);
            }
        }
    }
}

/// A request that failed, as the [`NftError`] of `operation`; `step` names what was asked.
fn request_failure(
    error: RequestError,
    operation: &'static str,
    bytes: usize,
    step: impl FnOnce() -> String,
) -> NftError {
    match error {
        RequestError::Send(source) => NftError::Send {
            operation,
            bytes,
            source,
        },
        RequestError::Receive(source) => NftError::Receive { operation, source },
        RequestError::Unanswered { .. } => NftError::Unanswered {
            operation,
            step: step(),
        },
        RequestError::Refused {
            errno,
            kernel_message,
            ..
        } => NftError::Refused {
            operation,
            step: step(),
            errno,
            kernel_message,
        },
    }
}

/// Whether the running kernel is at least `major.minor`, from /proc (no answer means no).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|release| parse_kernel_release(&release))
        .is_some_and(|version| version >= (major, minor))
}

fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// How a commit failed: a refusal keeps its step so `install` can tell a missing `nft_queue`
/// from any other refusal.
enum CommitError {
    Refused {
        operation: &'static str,
        step: Option<Step>,
        errno: Errno,
        kernel_message: Option<String>,
    },
    Failed(NftError),
}

impl From<CommitError> for NftError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Refused {
                operation,
                step,
                errno,
                kernel_message,
            } => NftError::Refused {
                operation,
                step: step
                    .map(|s| s.what)
                    .unwrap_or_else(|| "the batch as a whole".to_owned()),
                errno,
                kernel_message,
            },
            CommitError::Failed(error) => error,
        }
    }
}

/// Names checked once and turned into C strings.
struct CheckedNames {
    table: CString,
    devices: Vec<CString>,
}

impl CheckedNames {
    fn new(spec: &RulesetSpec) -> Result<Self, NftError> {
        Ok(CheckedNames {
            table: checked_name("table", &spec.table, TABLE_NAME_MAX_BYTES)?,
            devices: spec
                .ingress_devices
                .iter()
                .map(|device| checked_name("device", device, DEVICE_NAME_MAX_BYTES))
                .collect::<Result<_, _>>()?,
        })
    }

    fn install_batch(
        &self,
        spec: &RulesetSpec,
        mode: QueueMode,
        blocks: &[(IpAddr, Option<Duration>)],
    ) -> Transaction {
        install_batch(spec, &self.table, &self.devices, mode, blocks)
    }
}

fn checked_name(what: &'static str, name: &str, max_bytes: usize) -> Result<CString, NftError> {
    let invalid = |reason| NftError::InvalidName {
        what,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > max_bytes {
        return Err(invalid("too long"));
    }
    CString::new(name).map_err(|_| invalid("contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_shows_the_errno_then_the_kernel_text() {
        let refused = |kernel_message: Option<&str>| NftError::Refused {
            operation: "install",
            step: "add rule 8 to inet nfsentry/prerouting".to_owned(),
            errno: Errno::ENOENT,
            kernel_message: kernel_message.map(str::to_owned),
        };
        let plain = "the kernel refused the install batch at `add rule 8 to inet \
                     nfsentry/prerouting`: ENOENT: No such file or directory";
        assert_eq!(refused(None).to_string(), plain);
        assert_eq!(
            refused(Some("Unknown expression")).to_string(),
            format!("{plain} (Unknown expression)")
        );
        assert_eq!(refused(None).errno(), Some(Errno::ENOENT));
    }

    #[test]
    fn kernel_release_strings() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v595\n"), Some((6, 18)));
        assert_eq!(parse_kernel_release("6.3-rc1"), Some((6, 3)));
        assert_eq!(parse_kernel_release("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_kernel_release("garbage"), None);
    }

    #[test]
    fn names_are_checked_before_reaching_the_kernel() {
        assert!(checked_name("table", "nfsentry", TABLE_NAME_MAX_BYTES).is_ok());
        assert!(checked_name("table", "", TABLE_NAME_MAX_BYTES).is_err());
        assert!(checked_name("table", "a\0b", TABLE_NAME_MAX_BYTES).is_err());
        assert!(checked_name("device", "sixteen-chars-xx", DEVICE_NAME_MAX_BYTES).is_err());
        assert!(checked_name("device", "eth0", DEVICE_NAME_MAX_BYTES).is_ok());
    }
}
