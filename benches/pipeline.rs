//! Per-packet cost of the decision core without the kernel: the same `Pipeline::handle` the
//! daemon calls (parse → classify → engine → alert limiter → block orders).
//!
//! Figures to read as ratios within one run: `parse_only` is the baseline, `parse_classify`
//! adds classification, the `track_*` cases add the per-source count alone, and the `handle_*`
//! cases everything the daemon's loop asks of the pipeline, each for a scan from one source and
//! for a spoofed flood where every packet is a new source and the table is full and evicting.
//! Nothing is blocked, and the clock stands still: once the alert budget is spent, every
//! detection is counted as a suppressed line and never formatted, as in a real flood. Each packet is in one buffer that
//! is rewritten for the next (its port, or its source), as the daemon finds each packet in the
//! receive buffer the kernel has just written: in the cache, not one of 65536 buffers spread
//! over 4 MB.
//!
//! Before criterion's own figures it prints one table (figure, nfsentry, baseline, ratio) from
//! a counting global allocator and plain timed loops:
//! - heap allocations per handled packet once warm, for the scan source (with the clock
//!   standing still, and with it moving so that its detections are logged within the alert
//!   budget) and for the spoofed flood with a full table;
//! - bytes of nfsentry state per tracked source, from the allocator's own count of live bytes,
//!   with 1,000,000 sources in the table;
//! - nanoseconds per packet, the best of several rounds, against parse only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, Criterion, Throughput};
use nfsentry::config::Config;
use nfsentry::packet::{self, Transport};
use nfsentry::pipeline::{Arrival, Pipeline};
use nfsentry::spoof::HostFacts;
use nfsentry::tracker::{Target, Tracker};

/// The system allocator, counting every allocation (a growing realloc counts as one) and the
/// bytes live at any moment.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        LIVE_BYTES.fetch_add(new_size as u64, Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// An nmap -sS SYN (IPv4, MSS option only) from `src` to port `dport`.
fn syn_packet(src: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut p = vec![
        0x45, 0x00, 0x00, 0x2c, 0x12, 0x34, 0x00, 0x00, 0x30, 0x06, 0x00, 0x00, // ver..csum
        0, 0, 0, 0, // src
        203, 0, 113, 1, // dst
        0xd4, 0x31, 0, 0, // sport, dport
        0, 0, 0, 1, 0, 0, 0, 0, // seq, ack
        0x60, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, // off=6, SYN, win, csum, urg
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
    ];
    set_source(&mut p, src);
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p
}

fn set_source(packet: &mut [u8], src: Ipv4Addr) {
    packet[12..16].copy_from_slice(&src.octets());
}

fn pipeline(max_sources: usize) -> Pipeline {
    let mut config = Config::defaults();
    // High enough that nothing is blocked: the steady per-packet path is measured.
    config.detect.scan_trigger = u32::MAX;
    config.detect.max_sources = max_sources;
    Pipeline::new(&config, HostFacts::default())
}

/// Packets as the daemon reads them: each one in the receive buffer the kernel has just
/// written, so in the cache, the next written over the last. Rewriting the buffer is inside
/// every timed step, the baseline's too.
struct Traffic {
    packet: Vec<u8>,
    n: u32,
    period: u32,
    rewrite: fn(&mut [u8], u32),
}

impl Traffic {
    /// 1024 ports probed by one scanner, round and round.
    fn scan() -> Traffic {
        Traffic {
            packet: syn_packet(Ipv4Addr::new(198, 51, 100, 7), 1),
            n: 0,
            period: 1024,
            rewrite: |packet, n| packet[22..24].copy_from_slice(&(n as u16 + 1).to_be_bytes()),
        }
    }

    /// One SYN from each of 65536 spoofed sources, round and round.
    fn spoofed() -> Traffic {
        Traffic {
            packet: syn_packet(Ipv4Addr::UNSPECIFIED, 80),
            n: 0,
            period: 65536,
            rewrite: |packet, n| set_source(packet, Ipv4Addr::from(0x0a00_0000 | n)),
        }
    }

    /// Every packet of one round.
    fn len(&self) -> usize {
        self.period as usize
    }

    fn next(&mut self) -> &[u8] {
        self.n = (self.n + 1) % self.period;
        (self.rewrite)(&mut self.packet, self.n);
        &self.packet
    }
}

/// Heap allocations per packet over `rounds` rounds of `traffic`, after one round to warm up
/// (the table filled, the buffers grown). `step` moves the clock on per packet.
fn allocations_per_packet(
    p: &mut Pipeline,
    traffic: &mut Traffic,
    rounds: usize,
    step: Duration,
) -> f64 {
    let mut now = Instant::now();
    let wall_clock = SystemTime::now();
    let handle = |p: &mut Pipeline, traffic: &mut Traffic, now: Instant| {
        let handled = p.handle(traffic.next(), Arrival::Queued, Some(2), now, wall_clock);
        assert!(handled.orders.is_empty(), "nothing is blocked here");
        black_box(&handled);
        p.recycle(handled.lines);
    };
    for _ in 0..traffic.len() {
        handle(p, traffic, now);
        now += step;
    }
    let before = ALLOCATIONS.load(Relaxed);
    for _ in 0..rounds * traffic.len() {
        handle(p, traffic, now);
        now += step;
    }
    (ALLOCATIONS.load(Relaxed) - before) as f64 / (rounds * traffic.len()) as f64
}

/// Live heap bytes per tracked source: a pipeline with `max_sources` = 1,000,000 built and
/// filled with that many spoofed sources, against the live bytes before it was built.
fn bytes_per_source() -> (f64, usize) {
    const SOURCES: u32 = 1_000_000;
    let mut packet = syn_packet(Ipv4Addr::UNSPECIFIED, 80);
    let now = Instant::now();
    let wall_clock = SystemTime::now();
    let before = LIVE_BYTES.load(Relaxed);
    let mut p = pipeline(SOURCES as usize);
    for i in 0..SOURCES {
        set_source(&mut packet, Ipv4Addr::from(0x0a00_0000 | i));
        let handled = p.handle(&packet, Arrival::Queued, Some(2), now, wall_clock);
        p.recycle(handled.lines);
    }
    let bytes = LIVE_BYTES.load(Relaxed) - before;
    let tracked = p.status().sources_tracked;
    (bytes as f64 / tracked as f64, tracked)
}

/// Nanoseconds per call of `f`, the best of 5 rounds of 1,000,000 calls.
fn nanos_per_call(mut f: impl FnMut()) -> f64 {
    const CALLS: u32 = 1_000_000;
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..CALLS {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .fold(f64::INFINITY, f64::min)
}

fn print_table() {
    let now = Instant::now();
    let wall_clock = SystemTime::now();

    let mut scan = Traffic::scan();
    let parse_only = nanos_per_call(|| {
        black_box(packet::parse(black_box(scan.next())).is_ok());
    });
    let parse_classify = nanos_per_call(|| {
        let p = packet::parse(black_box(scan.next())).unwrap();
        black_box(packet::classify(&p));
    });
    let timed = |p: &mut Pipeline, mut traffic: Traffic| {
        nanos_per_call(|| handle_next(p, &mut traffic, now, wall_clock))
    };
    let scanner_ns = timed(&mut pipeline(65536), Traffic::scan());
    let flood_ns = timed(&mut pipeline(4096), Traffic::spoofed());
    let tracked = |tracker: &mut Tracker, mut traffic: Traffic| {
        nanos_per_call(|| track_next(tracker, &mut traffic, now))
    };
    let scanner_tracked_ns = tracked(&mut tracker(65536), Traffic::scan());
    let flood_tracked_ns = tracked(&mut tracker(4096), Traffic::spoofed());

    let scan_still = allocations_per_packet(
        &mut pipeline(65536),
        &mut Traffic::scan(),
        100,
        Duration::ZERO,
    );
    let scan_logged = allocations_per_packet(
        &mut pipeline(65536),
        &mut Traffic::scan(),
        100,
        Duration::from_millis(10),
    );
    let flood = allocations_per_packet(
        &mut pipeline(4096),
        &mut Traffic::spoofed(),
        10,
        Duration::ZERO,
    );
    let (per_source, tracked) = bytes_per_source();

    println!("| figure | nfsentry | baseline (parse only) | ratio |");
    println!("| --- | --- | --- | --- |");
    for (what, ns) in [
        ("parse + classify", parse_classify),
        (
            "parse + classify + track (the source table), one scanner",
            scanner_tracked_ns,
        ),
        (
            "parse + classify + track (the source table), spoofed flood (4096 sources, evicting)",
            flood_tracked_ns,
        ),
        ("the whole pipeline as the daemon calls it, one scanner", scanner_ns),
        (
            "the whole pipeline as the daemon calls it, spoofed flood (4096-source table full, evicting)",
            flood_ns,
        ),
    ] {
        println!(
            "| {what}: ns/packet | {ns:.1} | {parse_only:.1} | {:.2} |",
            ns / parse_only
        );
    }
    for (what, count) in [
        ("one scanner, clock still", scan_still),
        ("one scanner, every detection logged", scan_logged),
        ("spoofed flood, table full", flood),
    ] {
        println!("| heap allocations/packet, {what} | {count:.3} | | |");
    }
    println!("| state bytes/tracked source ({tracked} sources) | {per_source:.1} | | |");
}

/// A source table of `capacity` sources with the default detection window.
fn tracker(capacity: usize) -> Tracker {
    let config = Config::defaults();
    Tracker::new(
        config.detect.window,
        NonZeroUsize::new(capacity).expect("a capacity"),
    )
}

/// The next packet of `traffic` parsed, classified and counted for its source: the figure the
/// per-packet goal names, without the engine's decision around it.
fn track_next(tracker: &mut Tracker, traffic: &mut Traffic, now: Instant) {
    let parsed = packet::parse(black_box(traffic.next())).unwrap();
    black_box(packet::classify(&parsed));
    let target = match parsed.transport {
        Transport::Tcp { dport, .. } => Target {
            protocol: 6,
            port: dport,
        },
        Transport::Udp { dport, .. } => Target {
            protocol: 17,
            port: dport,
        },
        Transport::Other { protocol } => Target {
            protocol,
            port: u16::from(protocol),
        },
    };
    black_box(tracker.record(parsed.src, target, now));
}

/// The next packet of `traffic` through the pipeline, as the daemon hands it one: the step
/// both the plain timed loops and criterion time.
fn handle_next(p: &mut Pipeline, traffic: &mut Traffic, now: Instant, wall_clock: SystemTime) {
    let handled = p.handle(
        black_box(traffic.next()),
        Arrival::Queued,
        Some(2),
        now,
        wall_clock,
    );
    p.recycle(black_box(handled).lines);
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_packet");
    group.throughput(Throughput::Elements(1));

    let mut scan = Traffic::scan();
    group.bench_function("parse_only", |b| {
        b.iter(|| black_box(packet::parse(black_box(scan.next())).is_ok()))
    });
    group.bench_function("parse_classify", |b| {
        b.iter(|| {
            let p = packet::parse(black_box(scan.next())).unwrap();
            black_box(packet::classify(&p))
        })
    });

    let now = Instant::now();
    let wall_clock = SystemTime::now();
    let mut cases = [
        ("handle_one_scanner", pipeline(65536), Traffic::scan()),
        // A table of 4096 sources under a flood of 65536 distinct spoofed ones: every packet
        // inserts and evicts.
        ("handle_spoofed_flood", pipeline(4096), Traffic::spoofed()),
    ];
    for (name, p, traffic) in &mut cases {
        group.bench_function(*name, |b| {
            b.iter(|| handle_next(p, traffic, now, wall_clock))
        });
    }
    let mut tracked = [
        ("track_one_scanner", tracker(65536), Traffic::scan()),
        ("track_spoofed_flood", tracker(4096), Traffic::spoofed()),
    ];
    for (name, tracker, traffic) in &mut tracked {
        group.bench_function(*name, |b| b.iter(|| track_next(tracker, traffic, now)));
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    print_table();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
