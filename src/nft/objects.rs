//! Owned wrappers around the libnftnl objects nfsentry builds through `nftnl_sys`, because the
//! safe `nftnl` API lacks what they need: sets with flags, interval elements, element timeouts,
//! device lists and any expression. They free what they own and write their messages into a
//! batch. Every `unsafe` call into libnftnl is here, each saying what it relies on; what the
//! objects contain is decided by [`super::batches`] and [`super::bytecode`].

use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

use nftnl::{MsgType, NlMsg, ProtoFamily};
use nftnl_sys as sys;

/// `NFT_MSG_DESTROYSETELEM` (kernel >= 6.3), newer than the `libc` crate's list.
const NFT_MSG_DESTROYSETELEM: u16 = 30;
/// Set user data `nft` attaches: key byte order big endian (`NFTNL_UDATA_SET_KEYBYTEORDER` = 0,
/// `BYTEORDER_BIG_ENDIAN` = 2), so `nft list` prints keys the same as for its own sets.
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const BYTEORDER_BIG_ENDIAN: u32 = 2;
/// Element user data marking a range that runs to the largest key
/// (`NFTNL_UDATA_SET_ELEM_FLAGS` = 1, `NFTNL_SET_ELEM_F_INTERVAL_OPEN` = 1).
const UDATA_SET_ELEM_FLAGS: u8 = 1;
const SET_ELEM_F_INTERVAL_OPEN: u32 = 1;

/// Aborts like the standard library does when libnftnl cannot allocate a few bytes.
fn allocated<T>(pointer: *mut T) -> NonNull<T> {
    NonNull::new(pointer).unwrap_or_else(|| std::process::abort())
}

/// A libnftnl object type and the function that frees one.
pub(super) trait Free {
    /// # Safety
    /// `raw` is a live object of this type that nothing else owns; it is not used again.
    unsafe fn free(raw: *mut Self);
}

macro_rules! freed_by {
    ($($object:ty => $free:path),* $(,)?) => {
        $(
            impl Free for $object {
                unsafe fn free(raw: *mut Self) {
                    // SAFETY: the caller's guarantee, passed on.
                    unsafe { $free(raw) }
                }
            }
        )*
    };
}

freed_by!(
    sys::nftnl_set => sys::nftnl_set_free,
    sys::nftnl_set_elem => sys::nftnl_set_elem_free,
    sys::nftnl_set_elems_iter => sys::nftnl_set_elems_iter_destroy,
    sys::nftnl_chain => sys::nftnl_chain_free,
    sys::nftnl_rule => sys::nftnl_rule_free,
    sys::nftnl_expr => sys::nftnl_expr_free,
);

/// One libnftnl object, owned until it is freed or handed to another object that then frees it
/// (an element to its set, an expression to its rule).
pub(super) struct Owned<T: Free>(NonNull<T>);

impl<T: Free> Owned<T> {
    /// Takes a freshly allocated object; null (out of memory) aborts.
    fn new(raw: *mut T) -> Self {
        Owned(allocated(raw))
    }

    fn as_ptr(&self) -> *mut T {
        self.0.as_ptr()
    }

    /// Hands the object over; its new owner frees it.
    fn into_raw(self) -> *mut T {
        let raw = self.as_ptr();
        std::mem::forget(self);
        raw
    }
}

impl<T: Free> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: still owned, since `into_raw` forgets the wrapper it hands over.
        unsafe { T::free(self.as_ptr()) };
    }
}

/// Writes an object's own message into a batch: the header with its message type and flags,
/// then the payload libnftnl builds from the object.
macro_rules! object_message {
    ($wrapper:ty, $message_type:expr, $flags:expr, $build_payload:path) => {
        // SAFETY: writes one message of one object; a set declaration, a chain or a rule of a
        // handful of expressions is far below `nft_nlmsg_maxsize`.
        unsafe impl NlMsg for $wrapper {
            unsafe fn write(&self, buf: *mut c_void, seq: u32, _always_add: MsgType) {
                // SAFETY: `buf` has room for a maximal message (the trait's contract), and the
                // object is live.
                unsafe {
                    let header =
                        message_header(buf, $message_type as u16, self.family, $flags, seq);
                    $build_payload(header, self.raw.as_ptr());
                }
            }
        }
    };
}

/// Writes the netlink and `nfgenmsg` headers into `buf` and returns the message they start.
///
/// # Safety
/// `buf` has room for a maximal message.
unsafe fn message_header(
    buf: *mut c_void,
    message_type: u16,
    family: ProtoFamily,
    flags: i32,
    seq: u32,
) -> *mut sys::libc::nlmsghdr {
    // SAFETY: the caller's guarantee about `buf`.
    unsafe {
        sys::nftnl_nlmsg_build_hdr(
            buf.cast::<c_char>(),
            message_type,
            family as u16,
            flags as u16,
            seq,
        )
    }
}

/// An owned `nftnl_set`: a declaration with its elements, or just the name elements are sent to.
pub(super) struct SetObject {
    raw: Owned<sys::nftnl_set>,
    family: ProtoFamily,
    name: CString,
    elements: usize,
}

impl SetObject {
    /// Names an existing set, to send elements to it.
    pub(super) fn new(family: ProtoFamily, table: &CStr, name: &'static str) -> Self {
        let name = CString::new(name).unwrap_or_default();
        // SAFETY: an allocator with no preconditions; null is handled by `Owned::new`.
        let raw = Owned::new(unsafe { sys::nftnl_set_alloc() });
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

    /// A set declaration as `nft` sends it, its keys of data type `key_type` and `key_length`
    /// bytes; `id` lets rules in the same batch refer to it.
    pub(super) fn declared(
        table: &CStr,
        name: &'static str,
        (key_type, key_length): (u32, u32),
        flags: u32,
        id: u32,
    ) -> Self {
        let set = SetObject::new(ProtoFamily::Inet, table, name);
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

    pub(super) fn name(&self) -> &CStr {
        &self.name
    }

    pub(super) fn push_element(&mut self, element: ElementObject) {
        // SAFETY: both are live; the set takes ownership of the element, which must not be
        // freed by us any more (hence `into_raw`).
        unsafe { sys::nftnl_set_elem_add(self.raw.as_ptr(), element.raw.into_raw()) };
        self.elements += 1;
    }

    pub(super) fn has_elements(&self) -> bool {
        self.elements > 0
    }
}

object_message!(
    SetObject,
    libc::NFT_MSG_NEWSET,
    libc::NLM_F_CREATE | libc::NLM_F_ACK,
    sys::nftnl_set_nlmsg_build_payload
);

/// Empties a set: a `DELSETELEM` message that names the set and lists no elements, which the
/// kernel reads as "every element" (what `nft flush set` sends).
pub(super) struct SetFlush<'s>(pub(super) &'s SetObject);

// SAFETY: the payload is the table and set names only.
unsafe impl NlMsg for SetFlush<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _op_carried_by_self: MsgType) {
        let set = self.0;
        // SAFETY: `buf` has room for a maximal message; the set is live and has no elements, so
        // libnftnl writes no element list.
        unsafe {
            let header = message_header(
                buf,
                libc::NFT_MSG_DELSETELEM as u16,
                set.family,
                libc::NLM_F_ACK,
                seq,
            );
            sys::nftnl_set_elems_nlmsg_build_payload(header, set.raw.as_ptr());
        }
    }
}

/// An owned `nftnl_set_elem`, until a set takes it.
pub(super) struct ElementObject {
    raw: Owned<sys::nftnl_set_elem>,
}

impl ElementObject {
    pub(super) fn new(key: &[u8]) -> Self {
        // SAFETY: an allocator with no preconditions; null is handled by `Owned::new`.
        let raw = Owned::new(unsafe { sys::nftnl_set_elem_alloc() });
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

    pub(super) fn set_timeout(&mut self, timeout: Duration) {
        // SAFETY: `raw` is live.
        unsafe {
            sys::nftnl_set_elem_set_u64(
                self.raw.as_ptr(),
                sys::NFTNL_SET_ELEM_TIMEOUT as u16,
                timeout_millis(timeout),
            );
        }
    }

    pub(super) fn mark_interval_end(&mut self) {
        // SAFETY: `raw` is live.
        unsafe {
            sys::nftnl_set_elem_set_u32(
                self.raw.as_ptr(),
                sys::NFTNL_SET_ELEM_FLAGS as u16,
                libc::NFT_SET_ELEM_INTERVAL_END as u32,
            );
        }
    }

    pub(super) fn mark_interval_open(&mut self) {
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
}

/// The longest element timeout the kernel takes, in milliseconds: it converts them to
/// nanoseconds and refuses (ERANGE) anything that overflows 64 bits, just under 213504 days.
const MAX_TIMEOUT_MILLIS: u64 = u64::MAX / 1_000_000 - 1;

/// Element timeouts travel in milliseconds; 0 would mean "no timeout", so anything shorter than
/// a millisecond is sent as one, and anything longer than the kernel takes is sent as the
/// longest it takes (some 584 years) rather than refused.
fn timeout_millis(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TIMEOUT_MILLIS)
}

/// What an element message does.
#[derive(Debug, Clone, Copy)]
pub(super) enum ElementOp {
    /// Add, or refresh the timeout of a present element (no `NLM_F_EXCL`).
    Add,
    /// Delete; ENOENT when absent.
    Delete,
    /// Delete, succeeding when absent (kernel >= 6.3).
    Destroy,
}

impl ElementOp {
    fn message_type_and_flags(self) -> (u16, i32) {
        match self {
            ElementOp::Add => (
                libc::NFT_MSG_NEWSETELEM as u16,
                libc::NLM_F_CREATE | libc::NLM_F_ACK,
            ),
            ElementOp::Delete => (libc::NFT_MSG_DELSETELEM as u16, libc::NLM_F_ACK),
            ElementOp::Destroy => (NFT_MSG_DESTROYSETELEM, libc::NLM_F_ACK),
        }
    }

    pub(super) fn verb(self) -> &'static str {
        match self {
            ElementOp::Add => "add",
            ElementOp::Delete => "delete",
            ElementOp::Destroy => "destroy",
        }
    }
}

/// Walks a set's elements, one netlink message per `write`, as many per message as fit.
pub(super) struct ElementChunks<'s> {
    set: &'s SetObject,
    iter: Owned<sys::nftnl_set_elems_iter>,
    op: ElementOp,
    /// libnftnl reports whether the last message stopped early because it was full.
    more: Cell<bool>,
}

impl<'s> ElementChunks<'s> {
    pub(super) fn new(set: &'s SetObject, op: ElementOp) -> Self {
        // SAFETY: the set outlives the iterator (lifetime `'s`) and is not changed meanwhile.
        let iter = Owned::new(unsafe { sys::nftnl_set_elems_iter_create(set.raw.as_ptr()) });
        ElementChunks {
            set,
            iter,
            op,
            more: Cell::new(true),
        }
    }

    pub(super) fn has_more(&self) -> bool {
        // SAFETY: the iterator is live.
        self.more.get() && !unsafe { sys::nftnl_set_elems_iter_cur(self.iter.as_ptr()) }.is_null()
    }
}

// SAFETY: libnftnl stops adding elements before the nest passes 64 KiB, which fits in
// `nft_nlmsg_maxsize`.
unsafe impl NlMsg for ElementChunks<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _op_carried_by_self: MsgType) {
        let (kind, flags) = self.op.message_type_and_flags();
        // SAFETY: `buf` has room for a maximal message; the iterator and set are live.
        let filled_up = unsafe {
            let header = message_header(buf, kind, self.set.family, flags, seq);
            sys::nftnl_set_elems_nlmsg_build_payload_iter(header, self.iter.as_ptr())
        };
        self.more.set(filled_up > 0);
    }
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, Copy)]
pub(super) enum Hook<'d> {
    InetPrerouting,
    InetOutput,
    /// Ingress on these devices, which a `netdev` chain must name.
    NetdevIngress(&'d [CString]),
}

/// An owned base chain.
pub(super) struct ChainObject {
    raw: Owned<sys::nftnl_chain>,
    family: ProtoFamily,
}

impl ChainObject {
    /// A base chain of type `filter` with policy `accept`, on `hook` at `priority`.
    pub(super) fn base(table: &CStr, name: &CStr, hook: Hook<'_>, priority: i32) -> Self {
        let (family, hook_number, devices) = match hook {
            Hook::InetPrerouting => (ProtoFamily::Inet, libc::NF_INET_PRE_ROUTING, &[][..]),
            Hook::InetOutput => (ProtoFamily::Inet, libc::NF_INET_LOCAL_OUT, &[][..]),
            Hook::NetdevIngress(devices) => (ProtoFamily::NetDev, libc::NF_NETDEV_INGRESS, devices),
        };
        // SAFETY: an allocator with no preconditions; null is handled by `Owned::new`.
        let raw = Owned::new(unsafe { sys::nftnl_chain_alloc() });
        let chain = raw.as_ptr();
        // SAFETY: `chain` is live; libnftnl copies every string, and the device array is
        // NULL-terminated as `nftnl_chain_set_array` requires, with the strings outliving the
        // call.
        unsafe {
            sys::nftnl_chain_set_u32(chain, sys::NFTNL_CHAIN_FAMILY as u16, family as u32);
            sys::nftnl_chain_set_str(chain, sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
            sys::nftnl_chain_set_str(chain, sys::NFTNL_CHAIN_NAME as u16, name.as_ptr());
            sys::nftnl_chain_set_str(chain, sys::NFTNL_CHAIN_TYPE as u16, c"filter".as_ptr());
            sys::nftnl_chain_set_u32(chain, sys::NFTNL_CHAIN_HOOKNUM as u16, hook_number as u32);
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

    /// A regular chain of the `inet` table: no hook, reached only by a jump.
    pub(super) fn regular(table: &CStr, name: &CStr) -> Self {
        // SAFETY: an allocator with no preconditions; null is handled by `Owned::new`.
        let raw = Owned::new(unsafe { sys::nftnl_chain_alloc() });
        let chain = raw.as_ptr();
        // SAFETY: `chain` is live; libnftnl copies the strings.
        unsafe {
            sys::nftnl_chain_set_u32(
                chain,
                sys::NFTNL_CHAIN_FAMILY as u16,
                ProtoFamily::Inet as u32,
            );
            sys::nftnl_chain_set_str(chain, sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
            sys::nftnl_chain_set_str(chain, sys::NFTNL_CHAIN_NAME as u16, name.as_ptr());
        }
        ChainObject {
            raw,
            family: ProtoFamily::Inet,
        }
    }
}

object_message!(
    ChainObject,
    libc::NFT_MSG_NEWCHAIN,
    libc::NLM_F_CREATE | libc::NLM_F_ACK,
    sys::nftnl_chain_nlmsg_build_payload
);

/// An owned rule, appended to its chain.
pub(super) struct RuleObject {
    raw: Owned<sys::nftnl_rule>,
    family: ProtoFamily,
}

impl RuleObject {
    pub(super) fn new(family: ProtoFamily, table: &CStr, chain: &CStr) -> Self {
        // SAFETY: an allocator with no preconditions; null is handled by `Owned::new`.
        let raw = Owned::new(unsafe { sys::nftnl_rule_alloc() });
        // SAFETY: `raw` is live; libnftnl copies the strings.
        unsafe {
            sys::nftnl_rule_set_u32(raw.as_ptr(), sys::NFTNL_RULE_FAMILY as u16, family as u32);
            sys::nftnl_rule_set_str(raw.as_ptr(), sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
            sys::nftnl_rule_set_str(raw.as_ptr(), sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
        }
        RuleObject { raw, family }
    }

    pub(super) fn push(&mut self, expression: ExprObject) {
        // SAFETY: both live; the rule takes ownership of the expression.
        unsafe { sys::nftnl_rule_add_expr(self.raw.as_ptr(), expression.raw.into_raw()) };
    }
}

object_message!(
    RuleObject,
    libc::NFT_MSG_NEWRULE,
    libc::NLM_F_CREATE | libc::NLM_F_APPEND | libc::NLM_F_ACK,
    sys::nftnl_rule_nlmsg_build_payload
);

/// An owned `nftnl_expr`, until a rule takes it. Which expressions and attributes make up a rule
/// is [`super::bytecode`]'s.
pub(super) struct ExprObject {
    raw: Owned<sys::nftnl_expr>,
}

impl ExprObject {
    pub(super) fn new(name: &CStr) -> Self {
        ExprObject {
            // SAFETY: `name` is NUL-terminated. Null (out of memory, or a name this libnftnl
            // lacks; all used here exist since libnftnl 1.1.1) is handled by `Owned::new`.
            raw: Owned::new(unsafe { sys::nftnl_expr_alloc(name.as_ptr()) }),
        }
    }

    pub(super) fn u8(self, attribute: u32, value: u8) -> Self {
        // SAFETY: `raw` is live.
        unsafe { sys::nftnl_expr_set_u8(self.raw.as_ptr(), attribute as u16, value) };
        self
    }

    pub(super) fn u16(self, attribute: u32, value: u16) -> Self {
        // SAFETY: `raw` is live.
        unsafe { sys::nftnl_expr_set_u16(self.raw.as_ptr(), attribute as u16, value) };
        self
    }

    pub(super) fn u32(self, attribute: u32, value: u32) -> Self {
        // SAFETY: `raw` is live.
        unsafe { sys::nftnl_expr_set_u32(self.raw.as_ptr(), attribute as u16, value) };
        self
    }

    /// For attributes libnftnl copies (cmp and bitwise data, names): not for `TG_INFO`.
    pub(super) fn bytes(self, attribute: u32, data: &[u8]) -> Self {
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

    /// For attributes whose pointer libnftnl keeps and free()s with the expression (`TG_INFO`):
    /// the data goes in a malloc'd copy.
    pub(super) fn malloced_bytes(self, attribute: u32, data: &[u8]) -> Self {
        // SAFETY: `owned` is checked non-null and sized for `data`; after `nftnl_expr_set` the
        // expression owns it.
        unsafe {
            let owned = allocated(libc::malloc(data.len()).cast::<u8>());
            std::ptr::copy_nonoverlapping(data.as_ptr(), owned.as_ptr(), data.len());
            sys::nftnl_expr_set(
                self.raw.as_ptr(),
                attribute as u16,
                owned.as_ptr().cast::<c_void>(),
                data.len() as u32,
            );
        }
        self
    }

    pub(super) fn string(self, attribute: u32, value: &CStr) -> Self {
        // SAFETY: `raw` is live; libnftnl copies the string.
        unsafe { sys::nftnl_expr_set_str(self.raw.as_ptr(), attribute as u16, value.as_ptr()) };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_timeouts_never_become_permanent() {
        assert_eq!(timeout_millis(Duration::from_micros(10)), 1);
        assert_eq!(timeout_millis(Duration::ZERO), 1);
        assert_eq!(timeout_millis(Duration::from_secs(90)), 90_000);
        let ten_million_days = Duration::from_secs(10_000_000 * 86_400);
        assert_eq!(timeout_millis(ten_million_days), MAX_TIMEOUT_MILLIS);
        assert_eq!(timeout_millis(Duration::MAX), MAX_TIMEOUT_MILLIS);
    }
}
