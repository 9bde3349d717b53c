//! Short scheduler time slices for the threads every queued packet waits on.
//!
//! A queue reader sleeps until the kernel queues a packet, and the packet waits for its verdict
//! until the reader runs. On a busy host a thread that just woke waits behind whatever holds the
//! CPU. Linux's EEVDF scheduler (6.6 and later) lets a thread of the normal class ask for a
//! shorter slice (`sched_setattr` with `sched_runtime` set, honoured since 6.12): its virtual
//! deadline comes sooner, so it preempts on wake-up sooner, yet its share of the CPU is what it
//! was. Unlike a real-time class, a flood that keeps the reader busy cannot take the CPU from the
//! rest of the host. The price: a reader draining a deep queue while other work waits for the
//! CPU is switched out after each short slice rather than a long one, a few more context
//! switches a millisecond for the same share. The policy, nice value and everything else the
//! admin set (`Nice=` in the unit, say) are kept; an older kernel ignores the slice, or refuses
//! it, and nothing changes.

use std::time::Duration;

use nix::errno::Errno;

/// The slice asked for: the scheduler's shortest (0.1 ms). A reader runs for a few
/// microseconds per packet, so it rarely uses a slice up.
pub const READER_SLICE: Duration = Duration::from_micros(100);

/// `struct sched_attr` as of Linux 4.13 (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

const SCHED_ATTR_SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;

/// Asks for `slice` for the calling thread, keeping its policy and nice value. Err: the kernel
/// refused (the slice is then the default); a kernel that predates custom slices may also
/// accept it and ignore it.
pub fn ask_for_slice(slice: Duration) -> Result<(), Errno> {
    let mut attr = SchedAttr::default();
    // SAFETY: `attr` is a writable sched_attr of the size passed; pid 0 is the calling thread;
    // flags must be 0.
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            SCHED_ATTR_SIZE,
            0,
        )
    };
    Errno::result(got)?;
    if attr.policy != libc::SCHED_OTHER as u32 && attr.policy != libc::SCHED_BATCH as u32 {
        // A real-time or deadline policy the admin chose: not ours to change.
        return Ok(());
    }
    attr.size = SCHED_ATTR_SIZE;
    attr.runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: `attr` is a readable sched_attr of the size it says; pid 0 is the calling thread.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    Errno::result(set).map(drop)
}

/// The slice the calling thread runs with, as the kernel reports it (0 when it reports none).
pub fn current_slice() -> Result<Duration, Errno> {
    let mut attr = SchedAttr::default();
    // SAFETY: as in `ask_for_slice`.
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            SCHED_ATTR_SIZE,
            0,
        )
    };
    Errno::result(got)?;
    Ok(Duration::from_nanos(attr.runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 6.12 or later.
    fn kernel_has_custom_slices() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut numbers = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let minor: u32 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (major, minor) >= (6, 12)
    }

    #[test]
    fn a_thread_keeps_its_nice_value_and_gets_the_slice_where_the_kernel_has_them() {
        std::thread::spawn(|| {
            // SAFETY: setpriority on the calling thread (who 0) only.
            let reniced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 5) };
            assert_eq!(reniced, 0, "{}", Errno::last());
            let before = current_slice().unwrap();
            let asked = ask_for_slice(READER_SLICE);
            if kernel_has_custom_slices() {
                asked.unwrap();
                assert_eq!(current_slice().unwrap(), READER_SLICE);
            } else if asked.is_err() {
                assert_eq!(current_slice().unwrap(), before, "refused: nothing changed");
            }
            // SAFETY: getpriority on the calling thread only.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            assert_eq!(nice, 5, "the nice value is kept");
        })
        .join()
        .unwrap();
    }
}
