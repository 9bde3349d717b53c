//! Per-packet cost of the decision core: parse → classify → engine, without the kernel.
//!
//! Figures to read as ratios within one run: `parse_only` is the baseline, the other cases add
//! classification and the per-source state (a scan from one source, and a spoofed flood where
//! every packet is a new source and the table is full and evicting).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipnet::IpNet;
use nfsentry::addrset::AddrSet;
use nfsentry::config::Verdict;
use nfsentry::engine::{Engine, EngineSettings};
use nfsentry::packet;

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

fn engine(max_sources: usize) -> Engine {
    let ignore: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
    Engine::new(EngineSettings {
        // High enough that nothing is blocked: the steady per-packet path is measured.
        scan_trigger: u32::MAX,
        window: Duration::from_secs(600),
        max_sources: NonZeroUsize::new(max_sources).unwrap(),
        max_blocks: 65536,
        block_timeout: None,
        verdict: Verdict::Drop,
        ignore: AddrSet::new(&ignore),
        block: true,
    })
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

    let mut e = engine(65536);
    let now = Instant::now();
    let mut i = 0usize;
    group.bench_function("parse_classify_state_one_scanner", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            let p = packet::parse(black_box(&packets[i])).unwrap();
            let kind = packet::classify(&p);
            black_box(e.observe(&p, kind, now).verdict)
        })
    });

    // A table of 4096 sources under a flood of 65536 distinct spoofed ones: every packet
    // inserts and evicts.
    let mut e = engine(4096);
    let mut i = 0usize;
    group.bench_function("parse_classify_state_spoofed_flood", |b| {
        b.iter(|| {
            i = (i + 1) % spoofed.len();
            let p = packet::parse(black_box(&spoofed[i])).unwrap();
            let kind = packet::classify(&p);
            black_box(e.observe(&p, kind, now).verdict)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
