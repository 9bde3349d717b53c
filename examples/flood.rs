//! The sender for `benches/throughput.sh`: TCP SYNs to bait ports from many spoofed sources, at a
//! steady rate or as fast as it can, through a raw socket of the namespace it runs in. It only
//! sends; what the target makes of the packets is measured elsewhere.
//!
//!   flood TARGET_IPV4 RATE_PER_SECOND SECONDS PORT[,PORT...]
//!
//! RATE 0 means unpaced: 64 packets per system call, as fast as they go. A paced flood goes out
//! in small bursts (about 10k of them a second), so the target sees a steady stream rather than
//! a big burst now and then. Sources cycle through 198.18.0.0/16 (RFC 2544's benchmarking range),
//! so the target sees 65536 of them; source ports change every cycle, so flows repeat rarely.
//! Checksums are real, so the target's TCP answers the SYNs as it would a scanner's.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const BATCH: usize = 64;
/// Bursts per second a paced flood aims at.
const BURSTS_PER_SECOND: u64 = 10_000;
const PACKET_BYTES: usize = 40;
const SOURCES: u32 = 1 << 16;
const FIRST_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);

fn usage() -> ! {
    eprintln!("usage: flood TARGET_IPV4 RATE_PER_SECOND SECONDS PORT[,PORT...]");
    std::process::exit(2)
}

fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let high = u32::from(pair.first().copied().unwrap_or(0)) << 8;
            sum += high | u32::from(pair.get(1).copied().unwrap_or(0));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 + TCP SYN; the kernel fills in the IP checksum and total length of a raw packet.
fn syn(source: Ipv4Addr, target: Ipv4Addr, source_port: u16, port: u16, sequence: u32) -> [u8; 40] {
    let mut packet = [0u8; PACKET_BYTES];
    let (ip, tcp) = packet.split_at_mut(20);
    ip.copy_from_slice(&[
        0x45,
        0,
        0,
        PACKET_BYTES as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    ip[12..16].copy_from_slice(&source.octets());
    ip[16..20].copy_from_slice(&target.octets());
    tcp[0..2].copy_from_slice(&source_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[4..8].copy_from_slice(&sequence.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&source.octets());
    pseudo[4..8].copy_from_slice(&target.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let sum = checksum(&[&pseudo, tcp]);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    packet
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, rate, seconds, ports] = args.as_slice() else {
        usage()
    };
    let target: Ipv4Addr = target.parse().unwrap_or_else(|_| usage());
    let rate: u64 = rate.parse().unwrap_or_else(|_| usage());
    let seconds: f64 = seconds.parse().unwrap_or_else(|_| usage());
    let ports: Vec<u16> = ports
        .split(',')
        .map(|p| p.parse().unwrap_or_else(|_| usage()))
        .collect();

    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is not owned elsewhere.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut destination: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    destination.sin_family = libc::AF_INET as libc::sa_family_t;
    destination.sin_addr.s_addr = u32::from_ne_bytes(target.octets());

    // Sleeps of tens of microseconds need the timer slack (50 us by default) out of the way.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let burst = match rate {
        0 => BATCH,
        _ => (rate / BURSTS_PER_SECOND).clamp(1, BATCH as u64) as usize,
    };
    let started = Instant::now();
    let stop = started + Duration::from_secs_f64(seconds);
    let mut sent: u64 = 0;
    let mut packets = [[0u8; PACKET_BYTES]; BATCH];
    while Instant::now() < stop {
        for (i, packet) in packets.iter_mut().enumerate() {
            let n = sent + i as u64;
            let source = u32::from(FIRST_SOURCE) + (n % u64::from(SOURCES)) as u32;
            let source_port = 1024 + ((n / u64::from(SOURCES)) % 60000) as u16;
            let port = ports[(n % ports.len() as u64) as usize];
            *packet = syn(source.into(), target, source_port, port, n as u32);
        }
        // SAFETY: all-zero is a valid iovec and mmsghdr.
        let mut vectors: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for ((packet, vector), header) in packets.iter_mut().zip(&mut vectors).zip(&mut headers) {
            vector.iov_base = packet.as_mut_ptr().cast();
            vector.iov_len = PACKET_BYTES;
            header.msg_hdr.msg_iov = vector;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_name = std::ptr::from_mut(&mut destination).cast();
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        }
        // SAFETY: every header points at its own packet and at `destination`, all of which
        // outlive the call.
        let done =
            unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), burst as u32, 0) };
        if done < 0 {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                // A full device queue: try again.
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                _ => return Err(error),
            }
        }
        sent += done as u64;
        if rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "sent {sent} in {elapsed:.2}s ({:.0}/s)",
        sent as f64 / elapsed
    );
    Ok(())
}
