//! What each batch nfsentry sends to nf_tables contains, step by step, with the words each step
//! is named by when the kernel refuses it: the whole ruleset, the removal of its tables, and
//! blocked addresses added to or removed from their sets. The rules' byte code is
//! [`super::bytecode`]'s and the libnftnl objects are [`super::objects`]'; sending is
//! [`super::netlink`]'s.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use nftnl::{Batch, MsgType, NlMsg, ProtoFamily, Table};

use super::bytecode::{
    address_key, handshake_rule, prerouting_rule, short_header_rule, KeyBytes, KeyKind,
};
use super::objects::{
    ChainObject, ElementChunks, ElementObject, ElementOp, Hook, SetFlush, SetObject,
};
use super::ruleset::{
    blocked_range_set, blocked_set, ignore_set, port_set, short_header_rule_text, HandshakeRule,
    IntervalBoundary, IntervalKey, IntervalList, IpFamily, QueueMode, RulesetSpec, Transport,
    HANDSHAKE_ANSWER_CHAIN, HANDSHAKE_ANSWER_RULES, HANDSHAKE_OUTPUT_CHAIN,
    HANDSHAKE_OUTPUT_PRIORITY, PREROUTING_CHAIN, PREROUTING_PRIORITY, SHORT_HEADER_CHAIN,
    SHORT_HEADER_PRIORITY,
};
use crate::netlink_wire::{align4, read_u16_ne, read_u32_ne, MESSAGE_HEADER_BYTES};

/// One message of a batch, for matching the kernel's answer to what was asked.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) seq: u32,
    pub(super) what: String,
    /// The message carries the native `queue` expression.
    pub(super) native_queue: bool,
}

/// A batch under construction and the steps in it. Objects are serialised into the batch as
/// they are pushed, so they can be dropped right after.
pub(super) struct Transaction {
    pub(super) batch: Batch,
    pub(super) steps: Vec<Step>,
}

impl Transaction {
    fn new() -> Self {
        Transaction {
            batch: Batch::new(),
            steps: Vec::new(),
        }
    }

    /// The finished batch, as the pages of bytes to send, and its steps.
    ///
    /// The batch's BEGIN and END messages go without NLM_F_ACK, which nftnl raises on them on
    /// kernels from 6.10 (the first to honour it there). Nothing waits for those two answers: a
    /// refused step is answered on its own message, and a commit that fails on the BEGIN message
    /// whatever its flags. Each acknowledgement is a datagram of its own, which the kernel
    /// allocates and queues and the sender must read: without them a commit of one element
    /// takes two receive calls fewer, and leaves no END answer for the next commit to discard
    /// (16 µs back to back became 12 µs here).
    pub(super) fn into_pages(self) -> (Vec<Vec<u8>>, Vec<Step>) {
        let Transaction { batch, steps } = self;
        let finalized = batch.finalize();
        let mut pages: Vec<Vec<u8>> = finalized.iter().map(<[u8]>::to_vec).collect();
        for page in &mut pages {
            unacknowledged_bounds(page);
        }
        (pages, steps)
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

/// Clears NLM_F_ACK on the batch BEGIN and END messages among the netlink messages of `page`.
fn unacknowledged_bounds(page: &mut [u8]) {
    let mut start = 0;
    while let Some(length) = read_u32_ne(page, start).and_then(|l| usize::try_from(l).ok()) {
        // A header that cannot be right ends the walk, as `Messages` ends it.
        if length < MESSAGE_HEADER_BYTES || start.saturating_add(length) > page.len() {
            return;
        }
        let flags_at = start + 6;
        if matches!(read_u16_ne(page, start + 4), Some(BATCH_BEGIN | BATCH_END)) {
            if let (Some(flags), Some(field)) = (
                read_u16_ne(page, flags_at),
                page.get_mut(flags_at..flags_at + 2),
            ) {
                field.copy_from_slice(&(flags & !NLM_F_ACK).to_ne_bytes());
            }
        }
        start = match start.checked_add(align4(length)) {
            Some(next) => next,
            None => return,
        };
    }
}

const BATCH_BEGIN: u16 = libc::NFNL_MSG_BATCH_BEGIN as u16;
const BATCH_END: u16 = libc::NFNL_MSG_BATCH_END as u16;
const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;

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

/// The whole ruleset as one batch, with `blocks` already in the blocked sets.
pub(super) fn install_batch(
    spec: &RulesetSpec,
    table: &CStr,
    devices: &[CString],
    mode: QueueMode,
    blocks: &[(IpAddr, Option<Duration>)],
) -> Transaction {
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
        let set = SetObject::declared(table, name, key.type_and_length(), flags, id);
        batch.push(
            &set,
            MsgType::Add,
            format!("add set inet {table_label}/{name}"),
        );
        set
    };
    // With `blocked_table` the admin's table holds the blocked sets; nfsentry's has none.
    if spec.holds_blocks() {
        for family in [IpFamily::V4, IpFamily::V6] {
            declare(
                &mut batch,
                blocked_set(family),
                KeyKind::address(family),
                libc::NFT_SET_TIMEOUT as u32,
            );
        }
    }
    if spec.blocked_ranges {
        for family in [IpFamily::V4, IpFamily::V6] {
            declare(
                &mut batch,
                blocked_range_set(family),
                KeyKind::address(family),
                libc::NFT_SET_INTERVAL as u32,
            );
        }
    }
    let interval_sets = [
        (
            ignore_set(IpFamily::V4),
            KeyKind::Ipv4,
            interval_elements(&spec.ignore_v4_intervals()),
        ),
        (
            ignore_set(IpFamily::V6),
            KeyKind::Ipv6,
            interval_elements(&spec.ignore_v6_intervals()),
        ),
        (
            port_set(Transport::Tcp),
            KeyKind::Port,
            interval_elements(&spec.port_intervals(Transport::Tcp)),
        ),
        (
            port_set(Transport::Udp),
            KeyKind::Port,
            interval_elements(&spec.port_intervals(Transport::Udp)),
        ),
    ];
    let mut filled = Vec::new();
    // Only the blocked sets are kept over a stop: nothing is queued then.
    let interval_sets = interval_sets.into_iter().filter(|_| !spec.blocks_only);
    for (name, key, elements) in interval_sets {
        let mut set = declare(&mut batch, name, key, libc::NFT_SET_INTERVAL as u32);
        for element in elements {
            set.push_element(element);
        }
        filled.push(set);
    }
    // Every set is declared before any elements are sent, as `nft` does.
    for set in &filled {
        if set.has_elements() {
            let what = format!(
                "add elements to inet {table_label}/{}",
                set.name().to_string_lossy()
            );
            batch.push_elements(set, ElementOp::Add, &what);
        }
    }
    if spec.holds_blocks() {
        push_blocked(
            &mut batch,
            table,
            ElementOp::Add,
            blocks.iter().copied(),
            |set| format!("add elements to inet {table_label}/{set}"),
        );
    }

    if spec.reply_mark.is_some() {
        push_handshake_chains(&mut batch, table);
    }

    let prerouting = PREROUTING_CHAIN.to_string_lossy();
    let chain = ChainObject::base(
        table,
        PREROUTING_CHAIN,
        Hook::InetPrerouting,
        PREROUTING_PRIORITY,
    );
    batch.push(
        &chain,
        MsgType::Add,
        format!("add chain inet {table_label}/{prerouting}"),
    );
    if let Some(mark) = spec.reply_mark {
        push_handshake_rules(&mut batch, spec, table, mode, mark);
    }
    let lookup_id = |name: &'static str| set_ids.get(name).copied().unwrap_or(0);
    for (position, rule) in spec.prerouting_rules().into_iter().enumerate() {
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
    if !devices.is_empty() {
        let netdev = Table::new(table, ProtoFamily::NetDev);
        batch.push(
            &netdev,
            MsgType::Add,
            format!("add table netdev {table_label}"),
        );
        let short_header = SHORT_HEADER_CHAIN.to_string_lossy();
        let chain = ChainObject::base(
            table,
            SHORT_HEADER_CHAIN,
            Hook::NetdevIngress(devices),
            SHORT_HEADER_PRIORITY,
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
                short_header_rule_text(spec.nflog_group)
            ),
        );
    }
    batch
}

/// Replaces the contents of the ignore and port sets with `spec`'s in one batch: each set is
/// emptied, then filled. The chains, their rules (and so their counters) and the blocked sets
/// stay as they are; the kernel switches from the old contents to the new at the commit, so no
/// packet sees a half-filled set.
pub(super) fn refill_batch(spec: &RulesetSpec, table: &CStr) -> Transaction {
    let table_label = table_text(table);
    let mut batch = Transaction::new();
    let contents = [
        (
            ignore_set(IpFamily::V4),
            interval_elements(&spec.ignore_v4_intervals()),
        ),
        (
            ignore_set(IpFamily::V6),
            interval_elements(&spec.ignore_v6_intervals()),
        ),
        (
            port_set(Transport::Tcp),
            interval_elements(&spec.port_intervals(Transport::Tcp)),
        ),
        (
            port_set(Transport::Udp),
            interval_elements(&spec.port_intervals(Transport::Udp)),
        ),
    ];
    for (name, elements) in contents {
        let empty = SetObject::new(ProtoFamily::Inet, table, name);
        batch.push(
            &SetFlush(&empty),
            MsgType::Del,
            format!("flush set inet {table_label}/{name}"),
        );
        let mut set = SetObject::new(ProtoFamily::Inet, table, name);
        for element in elements {
            set.push_element(element);
        }
        if set.has_elements() {
            let what = format!("add elements to inet {table_label}/{name}");
            batch.push_elements(&set, ElementOp::Add, &what);
        }
    }
    batch
}

/// The chains of `verify = "handshake"`: the regular chain the prerouting chain jumps to with a
/// possible answer to a challenge, and the output chain that keeps nfsentry's replies
/// untracked. Declared with the prerouting chain before any rule, as `nft` does (the jump must
/// find its chain, and the rule handles then come out as `nft -f` numbers them).
fn push_handshake_chains(batch: &mut Transaction, table: &CStr) {
    let table_label = table_text(table);
    let answer = ChainObject::regular(table, HANDSHAKE_ANSWER_CHAIN);
    batch.push(
        &answer,
        MsgType::Add,
        format!(
            "add chain inet {table_label}/{}",
            HANDSHAKE_ANSWER_CHAIN.to_string_lossy()
        ),
    );
    let output = ChainObject::base(
        table,
        HANDSHAKE_OUTPUT_CHAIN,
        Hook::InetOutput,
        HANDSHAKE_OUTPUT_PRIORITY,
    );
    batch.push(
        &output,
        MsgType::Add,
        format!(
            "add chain inet {table_label}/{}",
            HANDSHAKE_OUTPUT_CHAIN.to_string_lossy()
        ),
    );
}

/// The rules of the handshake chains.
fn push_handshake_rules(
    batch: &mut Transaction,
    spec: &RulesetSpec,
    table: &CStr,
    mode: QueueMode,
    mark: u32,
) {
    let table_label = table_text(table);
    let answer_rules = HANDSHAKE_ANSWER_RULES.map(|rule| (HANDSHAKE_ANSWER_CHAIN, rule));
    let output_rule = (HANDSHAKE_OUTPUT_CHAIN, HandshakeRule::UntrackReplies(mark));
    for (chain, rule) in answer_rules.into_iter().chain([output_rule]) {
        let object = handshake_rule(table, chain, rule, spec.queue, mode);
        batch.push_step(
            &object,
            MsgType::Add,
            format!(
                "add rule to inet {table_label}/{}: {}",
                chain.to_string_lossy(),
                rule.nft_text(spec.queue)
            ),
            mode == QueueMode::Native && rule == HandshakeRule::QueueAnswer,
        );
    }
}

/// The element objects of an interval list, laid out as [`IntervalList::kernel_elements`] says.
fn interval_elements<K: IntervalKey + KeyBytes>(list: &IntervalList<K>) -> Vec<ElementObject> {
    list.kernel_elements()
        .into_iter()
        .map(|element| {
            let mut object = ElementObject::new(&element.key.key_bytes());
            match element.boundary {
                IntervalBoundary::Start => {}
                IntervalBoundary::StartOpen => object.mark_interval_open(),
                IntervalBoundary::End => object.mark_interval_end(),
            }
            object
        })
        .collect()
}

/// Deletes nfsentry's `inet` and `netdev` tables; absent ones are fine.
pub(super) fn remove_batch(table: &CStr) -> Transaction {
    let mut batch = Transaction::new();
    for family in [ProtoFamily::Inet, ProtoFamily::NetDev] {
        remove_table_if_present(&mut batch, table, family);
    }
    batch
}

/// Adds addresses to the blocked set of their family, each with its timeout (`None`: until
/// released).
pub(super) fn block_batch(table: &CStr, entries: &[(IpAddr, Option<Duration>)]) -> Transaction {
    blocked_set_batch(table, ElementOp::Add, entries.iter().copied(), |set| {
        format!("add elements to inet {}/{set}", table_text(table))
    })
}

/// Removes addresses from the blocked set of their family, with `op` saying whether an absent
/// one is an error.
pub(super) fn release_batch(table: &CStr, op: ElementOp, addrs: &[IpAddr]) -> Transaction {
    let what = match addrs {
        [one] => format!("{} {one}", op.verb()),
        many => format!("{} {} addresses", op.verb(), many.len()),
    };
    let elements = addrs.iter().map(|addr| (*addr, None));
    blocked_set_batch(table, op, elements, |set| {
        format!("{what} in inet {}/{set}", table_text(table))
    })
}

/// Replaces the contents of the range sets: the elements of `before` (exactly what the sets
/// hold) are deleted and those of `after` added, in one transaction, so a network stays blocked
/// while the sets change and overlapping networks never meet in the kernel. A family whose
/// merged list is unchanged is left alone.
pub(super) fn range_batch(table: &CStr, before: &[IpNet], after: &[IpNet]) -> Transaction {
    let mut batch = Transaction::new();
    let v4 = |nets: &[IpNet]| {
        IntervalList::from_ranges(nets.iter().filter_map(|net| match net {
            IpNet::V4(net) => Some(net.network()..=net.broadcast()),
            IpNet::V6(_) => None,
        }))
    };
    let v6 = |nets: &[IpNet]| {
        IntervalList::from_ranges(nets.iter().filter_map(|net| match net {
            IpNet::V6(net) => Some(net.network()..=net.broadcast()),
            IpNet::V4(_) => None,
        }))
    };
    replace_range_elements(&mut batch, table, IpFamily::V4, &v4(before), &v4(after));
    replace_range_elements(&mut batch, table, IpFamily::V6, &v6(before), &v6(after));
    batch
}

fn replace_range_elements<K: IntervalKey + KeyBytes>(
    batch: &mut Transaction,
    table: &CStr,
    family: IpFamily,
    before: &IntervalList<K>,
    after: &IntervalList<K>,
) {
    if before == after {
        return;
    }
    let name = blocked_range_set(family);
    let label = format!("inet {}/{name}", table_text(table));
    let mut old = SetObject::new(ProtoFamily::Inet, table, name);
    for element in interval_elements(before) {
        old.push_element(element);
    }
    if old.has_elements() {
        batch.push_elements(
            &old,
            ElementOp::Delete,
            &format!("delete elements of {label}"),
        );
    }
    let mut new = SetObject::new(ProtoFamily::Inet, table, name);
    for element in interval_elements(after) {
        new.push_element(element);
    }
    if new.has_elements() {
        batch.push_elements(&new, ElementOp::Add, &format!("add elements to {label}"));
    }
}

/// One step per blocked set that has elements to change; `what` names the step from the set.
fn blocked_set_batch(
    table: &CStr,
    op: ElementOp,
    elements: impl Iterator<Item = (IpAddr, Option<Duration>)>,
    what: impl Fn(&str) -> String,
) -> Transaction {
    let mut batch = Transaction::new();
    push_blocked(&mut batch, table, op, elements, what);
    batch
}

/// Pushes the element steps of [`blocked_set_batch`] onto `batch`.
fn push_blocked(
    batch: &mut Transaction,
    table: &CStr,
    op: ElementOp,
    elements: impl Iterator<Item = (IpAddr, Option<Duration>)>,
    what: impl Fn(&str) -> String,
) {
    let mut v4 = SetObject::new(ProtoFamily::Inet, table, blocked_set(IpFamily::V4));
    let mut v6 = SetObject::new(ProtoFamily::Inet, table, blocked_set(IpFamily::V6));
    for (addr, timeout) in elements {
        let (family, key) = address_key(addr);
        let mut element = ElementObject::new(&key);
        if let Some(timeout) = timeout {
            element.set_timeout(timeout);
        }
        match family {
            IpFamily::V4 => v4.push_element(element),
            IpFamily::V6 => v6.push_element(element),
        }
    }
    for set in [&v4, &v6] {
        if set.has_elements() {
            batch.push_elements(set, op, &what(&set.name().to_string_lossy()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink_wire::Messages;

    /// (type, flags, sequence) of every message of the pages.
    fn headers(pages: &[Vec<u8>]) -> Vec<(u16, u16, u32)> {
        pages
            .iter()
            .flat_map(|page| Messages::new(page))
            .map(|message| (message.kind, message.flags, message.sequence))
            .collect()
    }

    #[test]
    fn only_the_steps_of_a_batch_ask_for_an_acknowledgement() {
        let table = CString::new("nfsentry").unwrap();
        let entries = [
            ("192.0.2.7".parse().unwrap(), None),
            ("2001:db8::7".parse().unwrap(), None),
        ];
        let (pages, steps) = block_batch(&table, &entries).into_pages();
        let headers = headers(&pages);
        assert_eq!(headers.len(), steps.len() + 2, "{headers:?}");
        let (first, last) = (headers[0], headers[headers.len() - 1]);
        assert_eq!(
            (first.0, first.1 & NLM_F_ACK),
            (BATCH_BEGIN, 0),
            "{headers:?}"
        );
        assert_eq!((last.0, last.1 & NLM_F_ACK), (BATCH_END, 0), "{headers:?}");
        let acknowledged: Vec<u32> = headers
            .iter()
            .filter(|(_, flags, _)| flags & NLM_F_ACK != 0)
            .map(|&(_, _, sequence)| sequence)
            .collect();
        let awaited: Vec<u32> = steps.iter().map(|step| step.seq).collect();
        assert_eq!(acknowledged, awaited);
    }

    #[test]
    fn a_page_cut_short_is_left_as_it_is_past_the_cut() {
        let mut begin = [0u8; 20];
        begin[..4].copy_from_slice(&20u32.to_ne_bytes());
        begin[4..6].copy_from_slice(&BATCH_BEGIN.to_ne_bytes());
        begin[6..8].copy_from_slice(&(NLM_F_ACK | 1).to_ne_bytes());
        let mut page = begin.to_vec();
        // A second header that claims more than is there, then garbage shorter than a header.
        page.extend_from_slice(&400u32.to_ne_bytes());
        page.extend_from_slice(&BATCH_END.to_ne_bytes());
        page.extend_from_slice(&NLM_F_ACK.to_ne_bytes());
        let mut cut = page.clone();
        unacknowledged_bounds(&mut cut);
        assert_eq!(read_u16_ne(&cut, 6), Some(1));
        assert_eq!(
            cut[20..],
            page[20..],
            "nothing past a header is read or written"
        );
        unacknowledged_bounds(&mut []);
        unacknowledged_bounds(&mut [0xff; 3]);
    }
}
