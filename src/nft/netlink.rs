//! Applies nfsentry's nftables state to the kernel over nf_tables netlink: the whole ruleset as
//! one atomic batch, and blocked addresses as set elements. It does not decide what the ruleset
//! contains (that is [`super::ruleset`]) and never runs the `nft` program.
//!
//! The safe `nftnl` API covers tables and batch framing; sets with flags, interval elements,
//! element timeouts, device lists and the `queue`/`target`/`socket`/`fib`/`exthdr`/`log`
//! expressions are built here through `nftnl_sys`, in small owned wrappers whose `unsafe` blocks
//! each say what they rely on. The byte code mirrors what `nft` 1.0.6 generates for the rendered text, so
//! `nft list` prints a netlink-installed table exactly like one loaded with `nft -f`.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

use nftnl::{Batch, MsgType, NlMsg, ProtoFamily, Table};
use nftnl_sys as sys;
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, SockProtocol};

use super::ruleset::{
    blocked_set, ignore_set, port_set, IntervalBoundary, IntervalKey, IntervalList, IpFamily,
    PreroutingRule, QueueMode, RulesetSpec, Transport, PREROUTING_CHAIN, PREROUTING_PRIORITY,
    PREROUTING_RULES, SHORT_HEADER_CHAIN, SHORT_HEADER_PRIORITY,
};
use crate::netlink_wire::{self, kernel_says, OpenError, RequestError, Wait};

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

/// A connection to nf_tables. Every method sends one batch and reads the kernel's answer to
/// every message in it before returning.
pub struct Nft {
    socket: OwnedFd,
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

/// `NFT_MSG_DESTROYSETELEM` (kernel >= 6.3), newer than the `libc` crate's list.
const NFT_MSG_DESTROYSETELEM: u16 = 30;
/// `NFT_SOCKET_TRANSPARENT` from linux/netfilter/nf_tables.h.
const NFT_SOCKET_TRANSPARENT: u32 = 0;
/// `NFTA_FIB_F_DADDR` and `NFT_FIB_RESULT_ADDRTYPE` from linux/netfilter/nf_tables.h, missing
/// from the `libc` crate: look up the destination address and load its route type.
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
/// `RTN_LOCAL`: the route type of an address assigned to this host.
const RTN_LOCAL: u32 = libc::RTN_LOCAL as u32;
/// `NFT_EXTHDR_OP_IPV6` and `NFT_EXTHDR_F_PRESENT` from linux/netfilter/nf_tables.h, missing
/// from the `libc` crate: look in the IPv6 extension header chain and load 1 if the header
/// type is there rather than bytes of it.
const NFT_EXTHDR_OP_IPV6: u32 = 0;
const NFT_EXTHDR_F_PRESENT: u32 = 1;
/// `IPPROTO_ROUTING`: the next-header value of the IPv6 Routing extension header.
const IPV6_ROUTING_HEADER: u8 = libc::IPPROTO_ROUTING as u8;
/// Data types `nft` uses for set keys (nftables' `enum datatypes`).
const NFT_TYPE_IPV4_ADDR: u32 = 7;
const NFT_TYPE_IPV6_ADDR: u32 = 8;
const NFT_TYPE_INET_SERVICE: u32 = 13;
/// Set user data `nft` attaches: key byte order big endian (`NFTNL_UDATA_SET_KEYBYTEORDER` = 0,
/// `BYTEORDER_BIG_ENDIAN` = 2), so `nft list` prints keys the same as for its own sets.
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// Element user data marking a range that runs to the largest key
/// (`NFTNL_UDATA_SET_ELEM_FLAGS` = 1, `NFTNL_SET_ELEM_F_INTERVAL_OPEN` = 1).
const UDATA_SET_ELEM_FLAGS: u8 = 1;
const SET_ELEM_F_INTERVAL_OPEN: u32 = 1;
/// xt NFQUEUE target: revision 3 takes `xt_NFQ_info_v3`.
const XT_NFQUEUE_NAME: &CStr = c"NFQUEUE";
const XT_NFQUEUE_REVISION: u32 = 3;
/// `NFQ_FLAG_BYPASS` in `xt_NFQ_info_v3.flags`: accept packets when no reader is bound.
const XT_NFQ_FLAG_BYPASS: u16 = 0x01;
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
        Ok(Nft {
            socket,
            answer_buffer: vec![0; ANSWER_BUFFER_BYTES],
            send_buffer_bytes: 0,
            native_queue: None,
            destroy_element: kernel_at_least(6, 3),
        })
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
        let names = CheckedNames::new(spec)?;
        let first_try = match prefer {
            Some(mode) => mode,
            None if self.native_queue == Some(false) => QueueMode::Compat,
            None => QueueMode::Native,
        };
        let attempt = self.commit(install_batch(spec, &names, first_try), "install");
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
                self.commit(install_batch(spec, &names, QueueMode::Compat), "install")?;
                Ok(QueueMode::Compat)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes nfsentry's `inet` and `netdev` tables named `table`. Absent tables are fine: each
    /// is added before it is deleted, in the same batch.
    pub fn remove(&mut self, table: &str) -> Result<(), NftError> {
        let table = checked_name("table", table, TABLE_NAME_MAX_BYTES)?;
        let mut batch = Transaction::new();
        for family in [ProtoFamily::Inet, ProtoFamily::NetDev] {
            remove_table_if_present(&mut batch, &table, family);
        }
        Ok(self.commit(batch, "remove")?)
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
        let mut v4 = SetObject::new(ProtoFamily::Inet, &table, blocked_set(IpFamily::V4));
        let mut v6 = SetObject::new(ProtoFamily::Inet, &table, blocked_set(IpFamily::V6));
        for (addr, timeout) in entries {
            let (family, key) = address_key(*addr);
            let mut element = ElementObject::new(&key);
            if let Some(timeout) = timeout {
                element.set_timeout(*timeout);
            }
            match family {
                IpFamily::V4 => v4.push_element(element),
                IpFamily::V6 => v6.push_element(element),
            }
        }
        let mut batch = Transaction::new();
        for set in [&v4, &v6] {
            if set.has_elements() {
                let what = format!(
                    "add elements to inet {}/{}",
                    table_text(&table),
                    set.name.to_string_lossy()
                );
                batch.push_elements(set, ElementOp::Add, &what);
            }
        }
        Ok(self.commit(batch, "block")?)
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
        let release_batch = |op: ElementOp, addrs: &[IpAddr]| {
            let mut v4 = SetObject::new(ProtoFamily::Inet, &table, blocked_set(IpFamily::V4));
            let mut v6 = SetObject::new(ProtoFamily::Inet, &table, blocked_set(IpFamily::V6));
            for addr in addrs {
                let (family, key) = address_key(*addr);
                match family {
                    IpFamily::V4 => v4.push_element(ElementObject::new(&key)),
                    IpFamily::V6 => v6.push_element(ElementObject::new(&key)),
                }
            }
            let mut batch = Transaction::new();
            for set in [&v4, &v6] {
                if set.has_elements() {
                    let what = match addrs {
                        [one] => format!("{} {one}", op.verb()),
                        many => format!("{} {} addresses", op.verb(), many.len()),
                    };
                    let what = format!(
                        "{what} in inet {}/{}",
                        table_text(&table),
                        set.name.to_string_lossy()
                    );
                    batch.push_elements(set, op, &what);
                }
            }
            batch
        };
        if self.destroy_element {
            match self.commit(release_batch(ElementOp::Destroy, addrs), "release") {
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
                release_batch(ElementOp::Delete, std::slice::from_ref(addr)),
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

    /// Sends the batch and reads an answer for each of its messages.
    fn commit(
        &mut self,
        transaction: Transaction,
        operation: &'static str,
    ) -> Result<(), CommitError> {
        let Transaction { batch, steps } = transaction;
        let batch = batch.finalize();
        let pages: Vec<&[u8]> = batch.iter().collect();
        let bytes: usize = pages.iter().map(|page| page.len()).sum();
        self.ensure_send_buffer(bytes)
            .map_err(CommitError::Failed)?;
        let awaited: Vec<u32> = steps.iter().map(|step| step.seq).collect();
        let wait = Wait::new(&mut self.answer_buffer, ANSWER_TIMEOUT);
        netlink_wire::request_batch(&self.socket, &pages, &awaited, wait).map_err(|error| {
            let step = |sequence: u32| steps.iter().find(|step| step.seq == sequence).cloned();
            match error {
                RequestError::Send(source) => CommitError::Failed(NftError::Send {
                    operation,
                    bytes,
                    source,
                }),
                RequestError::Receive(source) => {
                    CommitError::Failed(NftError::Receive { operation, source })
                }
                RequestError::Unanswered { sequence, .. } => {
                    CommitError::Failed(NftError::Unanswered {
                        operation,
                        step: step(sequence).map(|s| s.what).unwrap_or_default(),
                    })
                }
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

/// One message of a batch, for matching the kernel's answer to what was asked.
#[derive(Debug, Clone)]
struct Step {
    seq: u32,
    what: String,
    /// The message carries the native `queue` expression.
    native_queue: bool,
}

/// A batch under construction and the steps in it. Objects are serialised into the batch as
/// they are pushed, so they can be dropped right after.
struct Transaction {
    batch: Batch,
    steps: Vec<Step>,
}

impl Transaction {
    fn new() -> Self {
        Transaction {
            batch: Batch::new(),
            steps: Vec::new(),
        }
    }

    fn push(&mut self, message: &impl NlMsg, kind: MsgType, what: String) {
        self.push_step(message, kind, what, false);
    }

    fn push_step(&mut self, message: &impl NlMsg, kind: MsgType, what: String, native_queue: bool) {
        let probe = SeqProbe {
            message,
            seq: Cell::new(0),
        };
        self.batch.add(&probe, kind);
        self.steps.push(Step {
            seq: probe.seq.get(),
            what,
            native_queue,
        });
    }

    /// Pushes as many element messages as the set's elements need (each holds up to 64 KiB).
    fn push_elements(&mut self, set: &SetObject, op: ElementOp, what: &str) {
        let chunks = ElementChunks::new(set, op);
        let mut part = 1;
        while chunks.has_more() {
            let what = if part == 1 {
                what.to_owned()
            } else {
                format!("{what} (message {part})")
            };
            self.push(&chunks, MsgType::Add, what);
            part += 1;
        }
    }
}

/// Records the sequence number `Batch` gives a message.
struct SeqProbe<'m, M> {
    message: &'m M,
    seq: Cell<u32>,
}

// SAFETY: writes exactly what the wrapped message writes.
unsafe impl<M: NlMsg> NlMsg for SeqProbe<'_, M> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        self.seq.set(seq);
        // SAFETY: the caller's guarantee about `buf` is passed on unchanged.
        unsafe { self.message.write(buf, seq, msg_type) }
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

fn table_text(table: &CStr) -> std::borrow::Cow<'_, str> {
    table.to_string_lossy()
}

/// Adds then deletes `table`: the delete cannot fail for a missing table, and a table present
/// from an earlier run goes with everything in it.
fn remove_table_if_present(batch: &mut Transaction, table: &CStr, family: ProtoFamily) {
    let object = Table::new(table, family);
    let label = format!("{} {}", family_text(family), table_text(table));
    batch.push(&object, MsgType::Add, format!("add table {label}"));
    batch.push(&object, MsgType::Del, format!("delete table {label}"));
}

fn family_text(family: ProtoFamily) -> &'static str {
    match family {
        ProtoFamily::Inet => "inet",
        ProtoFamily::NetDev => "netdev",
        _ => "other",
    }
}

/// The whole ruleset as one batch.
fn install_batch(spec: &RulesetSpec, names: &CheckedNames, mode: QueueMode) -> Transaction {
    let table = names.table.as_c_str();
    let table_label = table_text(table);
    let mut batch = Transaction::new();

    remove_table_if_present(&mut batch, table, ProtoFamily::Inet);
    let inet = Table::new(table, ProtoFamily::Inet);
    batch.push(&inet, MsgType::Add, format!("add table inet {table_label}"));

    let mut set_ids: HashMap<&'static str, u32> = HashMap::new();
    let mut next_set_id = 1;
    let mut declare = |batch: &mut Transaction, name: &'static str, key: KeyKind, flags: u32| {
        let id = next_set_id;
        next_set_id += 1;
        set_ids.insert(name, id);
        let set = SetObject::declared(table, name, key, flags, id);
        batch.push(
            &set,
            MsgType::Add,
            format!("add set inet {table_label}/{name}"),
        );
        set
    };
    for family in [IpFamily::V4, IpFamily::V6] {
        declare(
            &mut batch,
            blocked_set(family),
            KeyKind::address(family),
            libc::NFT_SET_TIMEOUT as u32,
        );
    }
    let interval = libc::NFT_SET_INTERVAL as u32;
    let mut ignore_v4 = declare(
        &mut batch,
        ignore_set(IpFamily::V4),
        KeyKind::Ipv4,
        interval,
    );
    fill_interval_set(&mut ignore_v4, &spec.ignore_v4_intervals());
    let mut ignore_v6 = declare(
        &mut batch,
        ignore_set(IpFamily::V6),
        KeyKind::Ipv6,
        interval,
    );
    fill_interval_set(&mut ignore_v6, &spec.ignore_v6_intervals());
    let mut tcp = declare(
        &mut batch,
        port_set(Transport::Tcp),
        KeyKind::Port,
        interval,
    );
    fill_interval_set(&mut tcp, &spec.port_intervals(Transport::Tcp));
    let mut udp = declare(
        &mut batch,
        port_set(Transport::Udp),
        KeyKind::Port,
        interval,
    );
    fill_interval_set(&mut udp, &spec.port_intervals(Transport::Udp));
    for set in [&ignore_v4, &ignore_v6, &tcp, &udp] {
        if set.has_elements() {
            let what = format!(
                "add elements to inet {table_label}/{}",
                set.name.to_string_lossy()
            );
            batch.push_elements(set, ElementOp::Add, &what);
        }
    }

    let prerouting = PREROUTING_CHAIN.to_string_lossy();
    let chain = ChainObject::base(
        ProtoFamily::Inet,
        table,
        PREROUTING_CHAIN,
        libc::NF_INET_PRE_ROUTING as u32,
        PREROUTING_PRIORITY,
        &[],
    );
    batch.push(
        &chain,
        MsgType::Add,
        format!("add chain inet {table_label}/{prerouting}"),
    );
    let lookup_id = |name: &'static str| set_ids.get(name).copied().unwrap_or(0);
    for (position, rule) in PREROUTING_RULES.into_iter().enumerate() {
        let object = prerouting_rule(table, PREROUTING_CHAIN, rule, spec.queue, mode, &lookup_id);
        batch.push_step(
            &object,
            MsgType::Add,
            format!(
                "add rule {} to inet {table_label}/{prerouting}: {}",
                position + 1,
                rule.nft_text(spec.queue)
            ),
            mode == QueueMode::Native && rule.queues(),
        );
    }

    remove_table_if_present(&mut batch, table, ProtoFamily::NetDev);
    if !names.devices.is_empty() {
        let netdev = Table::new(table, ProtoFamily::NetDev);
        batch.push(
            &netdev,
            MsgType::Add,
            format!("add table netdev {table_label}"),
        );
        let short_header = SHORT_HEADER_CHAIN.to_string_lossy();
        let chain = ChainObject::base(
            ProtoFamily::NetDev,
            table,
            SHORT_HEADER_CHAIN,
            libc::NF_NETDEV_INGRESS as u32,
            SHORT_HEADER_PRIORITY,
            &names.devices,
        );
        batch.push(
            &chain,
            MsgType::Add,
            format!(
                "add chain netdev {table_label}/{short_header} (ingress devices {:?})",
                spec.ingress_devices
            ),
        );
        let rule = short_header_rule(table, SHORT_HEADER_CHAIN, spec.nflog_group);
        batch.push(
            &rule,
            MsgType::Add,
            format!(
                "add rule to netdev {table_label}/{short_header}: {}",
                super::ruleset::short_header_rule_text(spec.nflog_group)
            ),
        );
    }
    batch
}

fn fill_interval_set<K: IntervalKey + KeyBytes>(set: &mut SetObject, list: &IntervalList<K>) {
    for element in list.kernel_elements() {
        let mut object = ElementObject::new(&element.key.key_bytes());
        match element.boundary {
            IntervalBoundary::Start => {}
            IntervalBoundary::StartOpen => object.mark_interval_open(),
            IntervalBoundary::End => object.mark_interval_end(),
        }
        set.push_element(object);
    }
}

/// The byte code `nft` generates for each rule of the model.
fn prerouting_rule(
    table: &CStr,
    chain: &CStr,
    rule: PreroutingRule,
    queue: u16,
    mode: QueueMode,
    set_id: &dyn Fn(&'static str) -> u32,
) -> RuleObject {
    let mut object = RuleObject::new(ProtoFamily::Inet, table, chain);
    match rule {
        PreroutingRule::DropBlocked(family) | PreroutingRule::AcceptIgnored(family) => {
            let set = match rule {
                PreroutingRule::DropBlocked(_) => blocked_set(family),
                _ => ignore_set(family),
            };
            let (nfproto, offset, length) = match family {
                IpFamily::V4 => (libc::NFPROTO_IPV4 as u8, 12, 4),
                IpFamily::V6 => (libc::NFPROTO_IPV6 as u8, 8, 16),
            };
            object.push(expr::meta(libc::NFT_META_NFPROTO as u32));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[nfproto]));
            object.push(expr::payload(
                libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
                offset,
                length,
            ));
            object.push(expr::lookup(set, set_id(set)));
        }
        PreroutingRule::AcceptEstablished => {
            // ct state is a 32-bit mask in host order: established 1<<1, related 1<<2.
            let established_or_related: u32 = (1 << 1) | (1 << 2);
            object.push(expr::ct(libc::NFT_CT_STATE as u32));
            object.push(expr::bitwise(
                &established_or_related.to_ne_bytes(),
                &0u32.to_ne_bytes(),
            ));
            object.push(expr::cmp(libc::NFT_CMP_NEQ as u32, &0u32.to_ne_bytes()));
        }
        PreroutingRule::AcceptNotAddressedHere => {
            // The route type is a 32-bit value in host order, as `nft` compares it.
            object.push(expr::fib(NFTA_FIB_F_DADDR, NFT_FIB_RESULT_ADDRTYPE));
            object.push(expr::cmp(
                libc::NFT_CMP_NEQ as u32,
                &RTN_LOCAL.to_ne_bytes(),
            ));
        }
        PreroutingRule::AcceptOwnedBySocket => {
            object.push(expr::socket(NFT_SOCKET_TRANSPARENT));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[0]));
        }
        PreroutingRule::QueueIpOptions => {
            object.push(expr::meta(libc::NFT_META_NFPROTO as u32));
            object.push(expr::cmp(
                libc::NFT_CMP_EQ as u32,
                &[libc::NFPROTO_IPV4 as u8],
            ));
            push_ip_header_length(&mut object);
            object.push(expr::cmp(libc::NFT_CMP_GT as u32, &[5]));
        }
        PreroutingRule::QueueIpv6RoutingHeader => {
            // `nft --debug=netlink` for `exthdr rt exists` in an inet chain: nfproto ipv6, then
            // `exthdr load ipv6 1b @ 43 + 0 present`, compared with 1.
            object.push(expr::meta(libc::NFT_META_NFPROTO as u32));
            object.push(expr::cmp(
                libc::NFT_CMP_EQ as u32,
                &[libc::NFPROTO_IPV6 as u8],
            ));
            object.push(expr::ipv6_extension_header_present(IPV6_ROUTING_HEADER));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[1]));
        }
        PreroutingRule::QueueTcpFlags(probe) => {
            push_l4proto(&mut object, libc::IPPROTO_TCP as u8);
            object.push(expr::payload(
                libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
                13,
                1,
            ));
            object.push(expr::bitwise(&[probe.mask()], &[0]));
            object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[probe.expected()]));
        }
        PreroutingRule::QueueWatchedPort(transport) => {
            let protocol = match transport {
                Transport::Tcp => libc::IPPROTO_TCP as u8,
                Transport::Udp => libc::IPPROTO_UDP as u8,
            };
            push_l4proto(&mut object, protocol);
            object.push(expr::payload(
                libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
                2,
                2,
            ));
            let set = port_set(transport);
            object.push(expr::lookup(set, set_id(set)));
        }
    }
    if rule.counts() {
        object.push(expr::counter());
    }
    match rule {
        PreroutingRule::DropBlocked(_) => object.push(expr::verdict(libc::NF_DROP as u32)),
        _ if rule.queues() => object.push(match mode {
            QueueMode::Native => expr::queue(queue),
            QueueMode::Compat => expr::xt_nfqueue(queue),
        }),
        _ => object.push(expr::verdict(libc::NF_ACCEPT as u32)),
    }
    object
}

fn push_l4proto(object: &mut RuleObject, protocol: u8) {
    object.push(expr::meta(libc::NFT_META_L4PROTO as u32));
    object.push(expr::cmp(libc::NFT_CMP_EQ as u32, &[protocol]));
}

/// `ip hdrlength`: the low nibble of the first header byte, in 32-bit words.
fn push_ip_header_length(object: &mut RuleObject) {
    object.push(expr::payload(libc::NFT_PAYLOAD_NETWORK_HEADER as u32, 0, 1));
    object.push(expr::bitwise(&[0x0f], &[0]));
}

fn short_header_rule(table: &CStr, chain: &CStr, nflog_group: u16) -> RuleObject {
    let mut object = RuleObject::new(ProtoFamily::NetDev, table, chain);
    // In a netdev chain `ip` first checks the ethertype, in network byte order.
    object.push(expr::meta(libc::NFT_META_PROTOCOL as u32));
    object.push(expr::cmp(
        libc::NFT_CMP_EQ as u32,
        &(libc::ETH_P_IP as u16).to_be_bytes(),
    ));
    push_ip_header_length(&mut object);
    object.push(expr::cmp(libc::NFT_CMP_LT as u32, &[5]));
    object.push(expr::counter());
    object.push(expr::log_group(nflog_group));
    object
}

/// Key type and length of a set, as `nft` declares them.
#[derive(Debug, Clone, Copy)]
enum KeyKind {
    Ipv4,
    Ipv6,
    Port,
}

impl KeyKind {
    fn address(family: IpFamily) -> Self {
        match family {
            IpFamily::V4 => KeyKind::Ipv4,
            IpFamily::V6 => KeyKind::Ipv6,
        }
    }

    fn type_and_length(self) -> (u32, u32) {
        match self {
            KeyKind::Ipv4 => (NFT_TYPE_IPV4_ADDR, 4),
            KeyKind::Ipv6 => (NFT_TYPE_IPV6_ADDR, 16),
            KeyKind::Port => (NFT_TYPE_INET_SERVICE, 2),
        }
    }
}

/// A set key as the kernel stores it: network byte order.
trait KeyBytes {
    fn key_bytes(&self) -> Vec<u8>;
}

impl KeyBytes for u16 {
    fn key_bytes(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
}

impl KeyBytes for Ipv4Addr {
    fn key_bytes(&self) -> Vec<u8> {
        self.octets().to_vec()
    }
}

impl KeyBytes for Ipv6Addr {
    fn key_bytes(&self) -> Vec<u8> {
        self.octets().to_vec()
    }
}

/// The blocked set and key for an address; IPv4-mapped IPv6 counts as IPv4, which is what
/// such a peer's packets carry on the wire.
fn address_key(addr: IpAddr) -> (IpFamily, Vec<u8>) {
    match addr.to_canonical() {
        IpAddr::V4(v4) => (IpFamily::V4, v4.key_bytes()),
        IpAddr::V6(v6) => (IpFamily::V6, v6.key_bytes()),
    }
}

/// Element timeouts travel in milliseconds; 0 would mean "no timeout", so anything shorter than
/// a millisecond is sent as one.
fn timeout_millis(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Aborts like the standard library does when libnftnl cannot allocate a few bytes.
fn allocated<T>(pointer: *mut T) -> NonNull<T> {
    NonNull::new(pointer).unwrap_or_else(|| std::process::abort())
}

/// An owned `nftnl_set`: a declaration with its elements, or just the name elements are sent to.
struct SetObject {
    raw: NonNull<sys::nftnl_set>,
    family: ProtoFamily,
    name: CString,
    elements: usize,
}

impl SetObject {
    /// Names an existing set, to send elements to it.
    fn new(family: ProtoFamily, table: &CStr, name: &'static str) -> Self {
        let name = CString::new(name).unwrap_or_default();
        // SAFETY: an allocator with no preconditions; null is handled by `allocated`.
        let raw = allocated(unsafe { sys::nftnl_set_alloc() });
        // SAFETY: `raw` is a live set; libnftnl copies the strings.
        unsafe {
            sys::nftnl_set_set_str(raw.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(raw.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
            sys::nftnl_set_set_u32(raw.as_ptr(), sys::NFTNL_SET_FAMILY as u16, family as u32);
        }
        SetObject {
            raw,
            family,
            name,
            elements: 0,
        }
    }

    /// A set declaration as `nft` sends it; `id` lets rules in the same batch refer to it.
    fn declared(table: &CStr, name: &'static str, key: KeyKind, flags: u32, id: u32) -> Self {
        let set = SetObject::new(ProtoFamily::Inet, table, name);
        let (key_type, key_length) = key.type_and_length();
        let mut user_data = vec![UDATA_SET_KEYBYTEORDER, 4];
        user_data.extend_from_slice(&BYTEORDER_BIG_ENDIAN.to_ne_bytes());
        let raw = set.raw.as_ptr();
        // SAFETY: `raw` is a live set; libnftnl copies the user data.
        unsafe {
            sys::nftnl_set_set_u32(raw, sys::NFTNL_SET_FLAGS as u16, flags);
            sys::nftnl_set_set_u32(raw, sys::NFTNL_SET_KEY_TYPE as u16, key_type);
            sys::nftnl_set_set_u32(raw, sys::NFTNL_SET_KEY_LEN as u16, key_length);
            sys::nftnl_set_set_u32(raw, sys::NFTNL_SET_ID as u16, id);
            sys::nftnl_set_set_data(
                raw,
                sys::NFTNL_SET_USERDATA as u16,
                user_data.as_ptr().cast::<c_void>(),
                user_data.len() as u32,
            );
        }
        set
    }

    fn push_element(&mut self, element: ElementObject) {
        // SAFETY: both are live; the set takes ownership of the element, which must not be
        // freed by us any more (hence `into_raw`).
        unsafe { sys::nftnl_set_elem_add(self.raw.as_ptr(), element.into_raw()) };
        self.elements += 1;
    }

    fn has_elements(&self) -> bool {
        self.elements > 0
    }
}

impl Drop for SetObject {
    fn drop(&mut self) {
        // SAFETY: we own the set (and through it its elements).
        unsafe { sys::nftnl_set_free(self.raw.as_ptr()) };
    }
}

// SAFETY: writes one NEWSET message; a set message is far below `nft_nlmsg_maxsize`.
unsafe impl NlMsg for SetObject {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _always_add: MsgType) {
        // SAFETY: `buf` has room for a maximal message (the trait's contract).
        unsafe {
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                libc::NFT_MSG_NEWSET as u16,
                self.family as u16,
                (libc::NLM_F_CREATE | libc::NLM_F_ACK) as u16,
                seq,
            );
            sys::nftnl_set_nlmsg_build_payload(header, self.raw.as_ptr());
        }
    }
}

/// An owned `nftnl_set_elem`, until a set takes it.
struct ElementObject {
    raw: NonNull<sys::nftnl_set_elem>,
}

impl ElementObject {
    fn new(key: &[u8]) -> Self {
        // SAFETY: an allocator with no preconditions; null is handled by `allocated`.
        let raw = allocated(unsafe { sys::nftnl_set_elem_alloc() });
        // SAFETY: `raw` is live; libnftnl copies the key (at most 16 bytes here).
        unsafe {
            sys::nftnl_set_elem_set(
                raw.as_ptr(),
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr().cast::<c_void>(),
                key.len() as u32,
            );
        }
        ElementObject { raw }
    }

    fn set_timeout(&mut self, timeout: Duration) {
        // SAFETY: `raw` is live.
        unsafe {
            sys::nftnl_set_elem_set_u64(
                self.raw.as_ptr(),
                sys::NFTNL_SET_ELEM_TIMEOUT as u16,
                timeout_millis(timeout),
            );
        }
    }

    fn mark_interval_end(&mut self) {
        // SAFETY: `raw` is live.
        unsafe {
            sys::nftnl_set_elem_set_u32(
                self.raw.as_ptr(),
                sys::NFTNL_SET_ELEM_FLAGS as u16,
                libc::NFT_SET_ELEM_INTERVAL_END as u32,
            );
        }
    }

    fn mark_interval_open(&mut self) {
        let mut user_data = vec![UDATA_SET_ELEM_FLAGS, 4];
        user_data.extend_from_slice(&SET_ELEM_F_INTERVAL_OPEN.to_ne_bytes());
        // SAFETY: `raw` is live; libnftnl copies the user data.
        unsafe {
            sys::nftnl_set_elem_set(
                self.raw.as_ptr(),
                sys::NFTNL_SET_ELEM_USERDATA as u16,
                user_data.as_ptr().cast::<c_void>(),
                user_data.len() as u32,
            );
        }
    }

    fn into_raw(self) -> *mut sys::nftnl_set_elem {
        let raw = self.raw.as_ptr();
        std::mem::forget(self);
        raw
    }
}

impl Drop for ElementObject {
    fn drop(&mut self) {
        // SAFETY: not yet handed to a set, so still ours.
        unsafe { sys::nftnl_set_elem_free(self.raw.as_ptr()) };
    }
}

/// What an element message does.
#[derive(Debug, Clone, Copy)]
enum ElementOp {
    /// Add, or refresh the timeout of a present element (no `NLM_F_EXCL`).
    Add,
    /// Delete; ENOENT when absent.
    Delete,
    /// Delete, succeeding when absent (kernel >= 6.3).
    Destroy,
}

impl ElementOp {
    fn message_type_and_flags(self) -> (u16, u16) {
        match self {
            ElementOp::Add => (
                libc::NFT_MSG_NEWSETELEM as u16,
                (libc::NLM_F_CREATE | libc::NLM_F_ACK) as u16,
            ),
            ElementOp::Delete => (libc::NFT_MSG_DELSETELEM as u16, libc::NLM_F_ACK as u16),
            ElementOp::Destroy => (NFT_MSG_DESTROYSETELEM, libc::NLM_F_ACK as u16),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            ElementOp::Add => "add",
            ElementOp::Delete => "delete",
            ElementOp::Destroy => "destroy",
        }
    }
}

/// Walks a set's elements, one netlink message per `write`, as many per message as fit.
struct ElementChunks<'s> {
    set: &'s SetObject,
    iter: NonNull<sys::nftnl_set_elems_iter>,
    op: ElementOp,
    /// libnftnl reports whether the last message stopped early because it was full.
    more: Cell<bool>,
}

impl<'s> ElementChunks<'s> {
    fn new(set: &'s SetObject, op: ElementOp) -> Self {
        // SAFETY: the set outlives the iterator (lifetime `'s`) and is not changed meanwhile.
        let iter = allocated(unsafe { sys::nftnl_set_elems_iter_create(set.raw.as_ptr()) });
        ElementChunks {
            set,
            iter,
            op,
            more: Cell::new(true),
        }
    }

    fn has_more(&self) -> bool {
        // SAFETY: the iterator is live.
        self.more.get() && !unsafe { sys::nftnl_set_elems_iter_cur(self.iter.as_ptr()) }.is_null()
    }
}

impl Drop for ElementChunks<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the iterator; the set it points into is still alive.
        unsafe { sys::nftnl_set_elems_iter_destroy(self.iter.as_ptr()) };
    }
}

// SAFETY: libnftnl stops adding elements before the nest passes 64 KiB, which fits in
// `nft_nlmsg_maxsize`.
unsafe impl NlMsg for ElementChunks<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _op_carried_by_self: MsgType) {
        let (kind, flags) = self.op.message_type_and_flags();
        // SAFETY: `buf` has room for a maximal message; the iterator and set are live.
        let filled_up = unsafe {
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                kind,
                self.set.family as u16,
                flags,
                seq,
            );
            sys::nftnl_set_elems_nlmsg_build_payload_iter(header, self.iter.as_ptr())
        };
        self.more.set(filled_up > 0);
    }
}

/// An owned base chain.
struct ChainObject {
    raw: NonNull<sys::nftnl_chain>,
    family: ProtoFamily,
}

impl ChainObject {
    fn base(
        family: ProtoFamily,
        table: &CStr,
        name: &CStr,
        hook: u32,
        priority: i32,
        devices: &[CString],
    ) -> Self {
        // SAFETY: an allocator with no preconditions; null is handled by `allocated`.
        let raw = allocated(unsafe { sys::nftnl_chain_alloc() });
        let chain = raw.as_ptr();
        // SAFETY: `chain` is live; libnftnl copies every string, and the device array is
        // NULL-terminated as `nftnl_chain_set_array` requires, with the strings outliving the
        // call.
        unsafe {
            sys::nftnl_chain_set_u32(chain, sys::NFTNL_CHAIN_FAMILY as u16, family as u32);
            sys::nftnl_chain_set_str(chain, sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
            sys::nftnl_chain_set_str(chain, sys::NFTNL_CHAIN_NAME as u16, name.as_ptr());
            sys::nftnl_chain_set_str(chain, sys::NFTNL_CHAIN_TYPE as u16, c"filter".as_ptr());
            sys::nftnl_chain_set_u32(chain, sys::NFTNL_CHAIN_HOOKNUM as u16, hook);
            sys::nftnl_chain_set_s32(chain, sys::NFTNL_CHAIN_PRIO as u16, priority);
            sys::nftnl_chain_set_u32(
                chain,
                sys::NFTNL_CHAIN_POLICY as u16,
                libc::NF_ACCEPT as u32,
            );
            if !devices.is_empty() {
                let mut array: Vec<*const c_char> =
                    devices.iter().map(|device| device.as_ptr()).collect();
                array.push(std::ptr::null());
                sys::nftnl_chain_set_array(
                    chain,
                    sys::NFTNL_CHAIN_DEVICES as u16,
                    array.as_mut_ptr(),
                );
            }
        }
        ChainObject { raw, family }
    }
}

impl Drop for ChainObject {
    fn drop(&mut self) {
        // SAFETY: we own the chain.
        unsafe { sys::nftnl_chain_free(self.raw.as_ptr()) };
    }
}

// SAFETY: writes one NEWCHAIN message, far below `nft_nlmsg_maxsize`.
unsafe impl NlMsg for ChainObject {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _always_add: MsgType) {
        // SAFETY: `buf` has room for a maximal message.
        unsafe {
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                libc::NFT_MSG_NEWCHAIN as u16,
                self.family as u16,
                (libc::NLM_F_CREATE | libc::NLM_F_ACK) as u16,
                seq,
            );
            sys::nftnl_chain_nlmsg_build_payload(header, self.raw.as_ptr());
        }
    }
}

/// An owned rule, appended to its chain.
struct RuleObject {
    raw: NonNull<sys::nftnl_rule>,
    family: ProtoFamily,
}

impl RuleObject {
    fn new(family: ProtoFamily, table: &CStr, chain: &CStr) -> Self {
        // SAFETY: an allocator with no preconditions; null is handled by `allocated`.
        let raw = allocated(unsafe { sys::nftnl_rule_alloc() });
        // SAFETY: `raw` is live; libnftnl copies the strings.
        unsafe {
            sys::nftnl_rule_set_u32(raw.as_ptr(), sys::NFTNL_RULE_FAMILY as u16, family as u32);
            sys::nftnl_rule_set_str(raw.as_ptr(), sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
            sys::nftnl_rule_set_str(raw.as_ptr(), sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
        }
        RuleObject { raw, family }
    }

    fn push(&mut self, expression: expr::Expr) {
        // SAFETY: both live; the rule takes ownership of the expression.
        unsafe { sys::nftnl_rule_add_expr(self.raw.as_ptr(), expression.into_raw()) };
    }
}

impl Drop for RuleObject {
    fn drop(&mut self) {
        // SAFETY: we own the rule and, through it, its expressions.
        unsafe { sys::nftnl_rule_free(self.raw.as_ptr()) };
    }
}

// SAFETY: writes one NEWRULE message of a handful of expressions, far below the maximum.
unsafe impl NlMsg for RuleObject {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _always_add: MsgType) {
        // SAFETY: `buf` has room for a maximal message.
        unsafe {
            let header = sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                libc::NFT_MSG_NEWRULE as u16,
                self.family as u16,
                (libc::NLM_F_CREATE | libc::NLM_F_APPEND | libc::NLM_F_ACK) as u16,
                seq,
            );
            sys::nftnl_rule_nlmsg_build_payload(header, self.raw.as_ptr());
        }
    }
}

/// Expression builders. Each loads into or reads from register 1, the way `nft` does for a
/// single match.
mod expr {
    use super::{
        allocated, sys, NFT_EXTHDR_F_PRESENT, NFT_EXTHDR_OP_IPV6, XT_NFQUEUE_NAME,
        XT_NFQUEUE_REVISION, XT_NFQ_FLAG_BYPASS,
    };
    use std::ffi::{c_void, CStr, CString};
    use std::ptr::NonNull;

    /// An owned `nftnl_expr`, until a rule takes it.
    pub(super) struct Expr {
        raw: NonNull<sys::nftnl_expr>,
    }

    impl Expr {
        fn new(name: &CStr) -> Self {
            Expr {
                // SAFETY: `name` is NUL-terminated. Null (out of memory, or a name this libnftnl
                // lacks; all used here exist since libnftnl 1.1.1) is handled by `allocated`.
                raw: allocated(unsafe { sys::nftnl_expr_alloc(name.as_ptr()) }),
            }
        }

        fn u8(self, attribute: u32, value: u8) -> Self {
            // SAFETY: `raw` is live.
            unsafe { sys::nftnl_expr_set_u8(self.raw.as_ptr(), attribute as u16, value) };
            self
        }

        fn u16(self, attribute: u32, value: u16) -> Self {
            // SAFETY: `raw` is live.
            unsafe { sys::nftnl_expr_set_u16(self.raw.as_ptr(), attribute as u16, value) };
            self
        }

        fn u32(self, attribute: u32, value: u32) -> Self {
            // SAFETY: `raw` is live.
            unsafe { sys::nftnl_expr_set_u32(self.raw.as_ptr(), attribute as u16, value) };
            self
        }

        /// For attributes libnftnl copies (cmp and bitwise data, names): not for `TG_INFO`.
        fn bytes(self, attribute: u32, data: &[u8]) -> Self {
            // SAFETY: `raw` is live; the attributes passed here are copied by libnftnl.
            unsafe {
                sys::nftnl_expr_set(
                    self.raw.as_ptr(),
                    attribute as u16,
                    data.as_ptr().cast::<c_void>(),
                    data.len() as u32,
                )
            };
            self
        }

        fn string(self, attribute: u32, value: &CStr) -> Self {
            // SAFETY: `raw` is live; libnftnl copies the string.
            unsafe { sys::nftnl_expr_set_str(self.raw.as_ptr(), attribute as u16, value.as_ptr()) };
            self
        }

        pub(super) fn into_raw(self) -> *mut sys::nftnl_expr {
            let raw = self.raw.as_ptr();
            std::mem::forget(self);
            raw
        }
    }

    impl Drop for Expr {
        fn drop(&mut self) {
            // SAFETY: not handed to a rule, so still ours.
            unsafe { sys::nftnl_expr_free(self.raw.as_ptr()) };
        }
    }

    const REG_1: u32 = libc::NFT_REG_1 as u32;

    pub(super) fn meta(key: u32) -> Expr {
        Expr::new(c"meta")
            .u32(sys::NFTNL_EXPR_META_KEY, key)
            .u32(sys::NFTNL_EXPR_META_DREG, REG_1)
    }

    pub(super) fn ct(key: u32) -> Expr {
        Expr::new(c"ct")
            .u32(sys::NFTNL_EXPR_CT_KEY, key)
            .u32(sys::NFTNL_EXPR_CT_DREG, REG_1)
    }

    pub(super) fn payload(base: u32, offset: u32, length: u32) -> Expr {
        Expr::new(c"payload")
            .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, REG_1)
            .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base)
            .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
            .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, length)
    }

    /// `reg1 = (reg1 & mask) ^ xor` over `mask.len()` bytes.
    pub(super) fn bitwise(mask: &[u8], xor: &[u8]) -> Expr {
        Expr::new(c"bitwise")
            .u32(sys::NFTNL_EXPR_BITWISE_SREG, REG_1)
            .u32(sys::NFTNL_EXPR_BITWISE_DREG, REG_1)
            .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
            .bytes(sys::NFTNL_EXPR_BITWISE_MASK, mask)
            .bytes(sys::NFTNL_EXPR_BITWISE_XOR, xor)
    }

    pub(super) fn cmp(op: u32, data: &[u8]) -> Expr {
        Expr::new(c"cmp")
            .u32(sys::NFTNL_EXPR_CMP_SREG, REG_1)
            .u32(sys::NFTNL_EXPR_CMP_OP, op)
            .bytes(sys::NFTNL_EXPR_CMP_DATA, data)
    }

    /// Matches when register 1 is in the named set; `id` finds a set created in the same batch.
    pub(super) fn lookup(set: &'static str, id: u32) -> Expr {
        let name = CString::new(set).unwrap_or_default();
        Expr::new(c"lookup")
            .u32(sys::NFTNL_EXPR_LOOKUP_SREG, REG_1)
            .string(sys::NFTNL_EXPR_LOOKUP_SET, &name)
            .u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, id)
    }

    /// Loads a property of the socket the packet belongs to; no socket means no match.
    pub(super) fn socket(key: u32) -> Expr {
        Expr::new(c"socket")
            .u32(sys::NFTNL_EXPR_SOCKET_KEY, key)
            .u32(sys::NFTNL_EXPR_SOCKET_DREG, REG_1)
            .u32(sys::NFTNL_EXPR_SOCKET_LEVEL, 0)
    }

    /// Looks up the packet in the routing table (`flags` says which addresses and devices) and
    /// loads `result`; on a failed lookup the register holds 0 (`RTN_UNSPEC`).
    pub(super) fn fib(flags: u32, result: u32) -> Expr {
        Expr::new(c"fib")
            .u32(sys::NFTNL_EXPR_FIB_FLAGS, flags)
            .u32(sys::NFTNL_EXPR_FIB_RESULT, result)
            .u32(sys::NFTNL_EXPR_FIB_DREG, REG_1)
    }

    /// Loads 1 (one byte) when the packet's IPv6 extension header chain holds a header of
    /// `header_type`, 0 when it does not.
    pub(super) fn ipv6_extension_header_present(header_type: u8) -> Expr {
        Expr::new(c"exthdr")
            .u32(sys::NFTNL_EXPR_EXTHDR_DREG, REG_1)
            .u8(sys::NFTNL_EXPR_EXTHDR_TYPE, header_type)
            .u32(sys::NFTNL_EXPR_EXTHDR_OFFSET, 0)
            .u32(sys::NFTNL_EXPR_EXTHDR_LEN, 1)
            .u32(sys::NFTNL_EXPR_EXTHDR_FLAGS, NFT_EXTHDR_F_PRESENT)
            .u32(sys::NFTNL_EXPR_EXTHDR_OP, NFT_EXTHDR_OP_IPV6)
    }

    pub(super) fn counter() -> Expr {
        Expr::new(c"counter")
    }

    pub(super) fn verdict(code: u32) -> Expr {
        Expr::new(c"immediate")
            .u32(sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
            .u32(sys::NFTNL_EXPR_IMM_VERDICT, code)
    }

    /// Native `queue num N bypass`.
    pub(super) fn queue(number: u16) -> Expr {
        Expr::new(c"queue")
            .u16(sys::NFTNL_EXPR_QUEUE_NUM, number)
            .u16(sys::NFTNL_EXPR_QUEUE_TOTAL, 1)
            .u16(
                sys::NFTNL_EXPR_QUEUE_FLAGS,
                libc::NFT_QUEUE_FLAG_BYPASS as u16,
            )
    }

    /// The xtables NFQUEUE target through `nft_compat`, for kernels without `nft_queue`.
    pub(super) fn xt_nfqueue(number: u16) -> Expr {
        // xt_NFQ_info_v3 { u16 queuenum; u16 queues_total; u16 flags; }, host byte order.
        let mut info = [0u8; 6];
        info[..2].copy_from_slice(&number.to_ne_bytes());
        info[2..4].copy_from_slice(&1u16.to_ne_bytes());
        info[4..].copy_from_slice(&XT_NFQ_FLAG_BYPASS.to_ne_bytes());
        let expression = Expr::new(c"target")
            .string(sys::NFTNL_EXPR_TG_NAME, XT_NFQUEUE_NAME)
            .u32(sys::NFTNL_EXPR_TG_REV, XT_NFQUEUE_REVISION);
        // libnftnl keeps the TG_INFO pointer itself and free()s it with the expression, so the
        // data must come from malloc.
        // SAFETY: `owned` is checked non-null and sized for `info`; after `nftnl_expr_set` the
        // expression owns it.
        unsafe {
            let owned = allocated(libc::malloc(info.len()).cast::<u8>());
            std::ptr::copy_nonoverlapping(info.as_ptr(), owned.as_ptr(), info.len());
            sys::nftnl_expr_set(
                expression.raw.as_ptr(),
                sys::NFTNL_EXPR_TG_INFO as u16,
                owned.as_ptr().cast::<c_void>(),
                info.len() as u32,
            );
        }
        expression
    }

    pub(super) fn log_group(group: u16) -> Expr {
        Expr::new(c"log").u16(sys::NFTNL_EXPR_LOG_GROUP, group)
    }
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

    #[test]
    fn short_timeouts_never_become_permanent() {
        assert_eq!(timeout_millis(Duration::from_micros(10)), 1);
        assert_eq!(timeout_millis(Duration::ZERO), 1);
        assert_eq!(timeout_millis(Duration::from_secs(90)), 90_000);
    }

    #[test]
    fn mapped_ipv6_addresses_block_the_ipv4_host() {
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(address_key(mapped), (IpFamily::V4, vec![192, 0, 2, 9]));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(address_key(v6).0, IpFamily::V6);
    }
}
