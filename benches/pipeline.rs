//! Per-packet cost of the decision core without the kernel: the same `Pipeline::handle` the
//! daemon calls (parse → classify → engine → alert limiter → block orders).
//!
//! Figures to read as ratios within one run: `parse_only` is the baseline, `parse_classify`
//! adds classification, and the `handle_*` cases add the per-source state and everything the
//! daemon's loop asks of the pipeline, for a scan from one source and for a spoofed flood where
//! every packet is a new source and the table is full and evicting. Nothing is blocked, and the
//! clock stands still: once the alert budget is spent, every detection is counted as a
//! suppressed line and never formatted, as in a real flood.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nfsentry::config::Config;
use nfsentry::packet;
use nfsentry::pipeline::{Arrival, Pipeline};
use nfsentry::spoof::HostFacts;

/// An nmap -sS SYN (IPv4, MSS option only) from 198.51.100.7 to port `dport`.
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
    p[12..16].copy_from_slice(&src.octets());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p
}

fn pipeline(max_sources: usize) -> Pipeline {
    let mut config = Config::defaults();
    // High enough that nothing is blocked: the steady per-packet path is measured.
    config.detect.scan_trigger = u32::MAX;
    config.detect.max_sources = max_sources;
    Pipeline::new(&config, HostFacts::default())
}

fn bench(c: &mut Criterion) {
    let scanner = Ipv4Addr::new(198, 51, 100, 7);
    let packets: Vec<Vec<u8>> = (1..=1024).map(|port| syn_packet(scanner, port)).collect();
    let spoofed: Vec<Vec<u8>> = (0..65536u32)
        .map(|i| syn_packet(Ipv4Addr::from(0x0a00_0000 | i), 80))
        .collect();

    let mut group = c.benchmark_group("per_packet");
    group.throughput(Throughput::Elements(1));

    let mut i = 0usize;
    group.bench_function("parse_only", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            black_box(packet::parse(black_box(&packets[i])).is_ok())
        })
    });

    let mut i = 0usize;
    group.bench_function("parse_classify", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            let p = packet::parse(black_box(&packets[i])).unwrap();
            black_box(packet::classify(&p))
        })
    });

    let mut p = pipeline(65536);
    let now = Instant::now();
    let wall_clock = SystemTime::now();
    let mut i = 0usize;
    group.bench_function("handle_one_scanner", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            black_box(p.handle(
                black_box(&packets[i]),
                Arrival::Queued,
                Some(2),
                now,
                wall_clock,
            ))
        })
    });

    // A table of 4096 sources under a flood of 65536 distinct spoofed ones: every packet
    // inserts and evicts.
    let mut p = pipeline(4096);
    let mut i = 0usize;
    group.bench_function("handle_spoofed_flood", |b| {
        b.iter(|| {
            i = (i + 1) % spoofed.len();
            black_box(p.handle(
                black_box(&spoofed[i]),
                Arrival::Queued,
                Some(2),
                now,
                wall_clock,
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
