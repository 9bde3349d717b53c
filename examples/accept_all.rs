//! The baseline for `benches/throughput.sh`: the least an NFQUEUE consumer can do — one blocking
//! receive and one verdict per packet, accepting everything without looking at it — behind the
//! very nft ruleset nfsentry installs for the same config, bound the same way (whole packets,
//! same queue length and socket buffer, fail closed).
//!
//!   accept_all CONFIG [drop]
//!
//! With `drop` the same loop drops everything instead, which leaves out the kernel's work after an
//! accept (routing, the TCP reset) and so measures the queue alone.
//!
//! Prints `ready` once the queue is bound and the ruleset installed; removes the ruleset and exits
//! on SIGTERM or SIGINT. It keeps no count: the benchmark reads the kernel's.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

use nfsentry::config::{Config, Verdict};
use nfsentry::firewall::{self, Firewall};
use nfsentry::netlink_wire::Messages;
use nfsentry::nft::ruleset::RulesetSpec;
use nfsentry::queue::wire::{self, Event, Reach};
use nfsentry::queue::PacketQueue;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let (path, verdict) = match args.as_slice() {
        [path] => (PathBuf::from(path), Verdict::Accept),
        [path, drop] if drop == "drop" => (PathBuf::from(path), Verdict::Drop),
        _ => return Err("usage: accept_all CONFIG [drop]".into()),
    };
    let config = Config::load(&path)?;
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // No SA_RESTART: a blocked recv() must return EINTR so the loop sees the flag.
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal::sigaction(sig, &action) }?;
    }
    firewall::clear_stale(&config.daemon.table);
    let queue = PacketQueue::open(config.daemon.queue.first())?;
    let devices = nfsentry::host::ingress_devices(&config);
    let spec = RulesetSpec::from_config(&config, devices);
    let (firewall, _) = Firewall::install(spec, config.daemon.queue_mode, &[])?;
    let socket = queue.fd().as_raw_fd();
    // The plain loop blocks in recv(); the queue's socket comes non-blocking.
    // SAFETY: fcntl on a descriptor `queue` keeps open, changing only O_NONBLOCK.
    unsafe {
        let flags = libc::fcntl(socket, libc::F_GETFL);
        libc::fcntl(socket, libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    println!("ready");

    let number = queue.number();
    let mut buffer = vec![0u8; 0x10000 + 8192];
    let mut outcome = Ok(());
    while !STOP.load(Ordering::Relaxed) {
        // SAFETY: the buffer pointer and length describe `buffer`, which outlives the call.
        let length = unsafe { libc::recv(socket, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if length < 0 {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                // EAGAIN: the receive timeout the set-up left on the socket ran out.
                Some(libc::EINTR | libc::EAGAIN | libc::ENOBUFS) => continue,
                _ => {
                    outcome = Err(error.into());
                    break;
                }
            }
        }
        let datagram = buffer.get(..length as usize).unwrap_or_default();
        for message in Messages::new(datagram) {
            let id = match wire::read_message(message) {
                Event::Packet(packet) => packet.id,
                Event::Unreadable { id } => id,
                _ => continue,
            };
            let verdict = wire::verdict_message(Reach::One, number, verdict, id);
            // SAFETY: the pointer and length describe `verdict`, which outlives the call.
            let sent = unsafe { libc::send(socket, verdict.as_ptr().cast(), verdict.len(), 0) };
            if sent < 0 {
                outcome = Err(std::io::Error::last_os_error().into());
            }
        }
    }
    firewall.remove();
    drop(queue);
    outcome
}
