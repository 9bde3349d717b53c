//! The throughput baseline for `benches/throughput.sh`: the least an NFQUEUE consumer can do —
//! receive each packet and accept it — with the same queue settings as nfsentry.
//!
//! Prints `count N` (packets answered so far) on SIGUSR1; exits on SIGTERM/SIGINT.

use std::sync::atomic::{AtomicBool, Ordering};

use nfq::{Queue, Verdict};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

static REPORT: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signo: libc::c_int) {
    if signo == libc::SIGUSR1 {
        REPORT.store(true, Ordering::Relaxed);
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

fn main() -> std::io::Result<()> {
    let number: u16 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    for sig in [Signal::SIGUSR1, Signal::SIGTERM, Signal::SIGINT] {
        // No SA_RESTART: a blocked recv() must return EINTR so the loop sees the flags.
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only stores to atomics.
        unsafe { signal::sigaction(sig, &action) }.map_err(std::io::Error::from)?;
    }
    let mut queue = Queue::open()?;
    queue.bind(number)?;
    queue.set_copy_range(number, nfsentry::queue::COPY_RANGE_BYTES)?;
    queue.set_queue_max_len(number, nfsentry::queue::QUEUE_MAX_LEN)?;
    queue.set_fail_open(number, false)?;
    println!("ready");
    let mut count: u64 = 0;
    while !STOP.load(Ordering::Relaxed) {
        if REPORT.swap(false, Ordering::Relaxed) {
            println!("count {count}");
        }
        match queue.recv() {
            Ok(mut message) => {
                message.set_verdict(Verdict::Accept);
                queue.verdict(message)?;
                count += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    println!("count {count}");
    Ok(())
}
