//! procwire-tokio between two procs in one process, next to raw tokio sockets doing the
//! same, all on one current-thread runtime (one thread drives both ends).
//!
//! `cargo bench -p procwire-benches --bench transport`
//!
//! Groups `round_trip_{unix,tcp}` (one 64 B request/reply per iteration),
//! `pipelined_{unix,tcp}` (10 000 one-way 64 B messages per iteration, until all arrived) and
//! `bulk_{unix,tcp}` (16 one-way 1 MiB messages per iteration), each with the functions
//! `procwire` and `raw` (and, for bulk, `procwire_untyped`: `send_bytes`, no postcard).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use procwire_benches::raw::RawBench;
use procwire_benches::wire::ProcwireBench;
use procwire_benches::{runtime, Net, BULK, BULK_BURST, PIPELINE_N, SMALL};

fn transport(c: &mut Criterion) {
    for net in Net::ALL {
        let rt = runtime();
        let mut pw = rt
            .block_on(ProcwireBench::new(net))
            .expect("procwire setup");
        let mut raw = rt.block_on(RawBench::new(net)).expect("raw setup");

        let mut g = c.benchmark_group(format!("round_trip_{net}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("procwire", |b| {
            b.iter_custom(|n| {
                rt.block_on(pw.round_trips(n))
                    .expect("procwire round trips")
            })
        });
        g.bench_function("raw", |b| {
            b.iter_custom(|n| rt.block_on(raw.round_trips(n)).expect("raw round trips"))
        });
        g.finish();

        let mut g = c.benchmark_group(format!("pipelined_{net}"));
        g.throughput(Throughput::ElementsAndBytes {
            elements: PIPELINE_N as u64,
            bytes: (PIPELINE_N * SMALL) as u64,
        });
        g.sample_size(20).measurement_time(Duration::from_secs(4));
        g.bench_function("procwire", |b| {
            b.iter_custom(|n| rt.block_on(pw.pipelined(n)).expect("procwire pipelined"))
        });
        g.bench_function("raw", |b| {
            b.iter_custom(|n| rt.block_on(raw.pipelined(n)).expect("raw pipelined"))
        });
        g.finish();

        let mut g = c.benchmark_group(format!("bulk_{net}"));
        g.throughput(Throughput::ElementsAndBytes {
            elements: BULK_BURST as u64,
            bytes: (BULK_BURST * BULK) as u64,
        });
        g.sample_size(20).measurement_time(Duration::from_secs(4));
        g.bench_function("procwire", |b| {
            b.iter_custom(|n| rt.block_on(pw.bulk(n)).expect("procwire bulk"))
        });
        g.bench_function("procwire_untyped", |b| {
            b.iter_custom(|n| {
                rt.block_on(pw.bulk_untyped(n))
                    .expect("procwire untyped bulk")
            })
        });
        g.bench_function("raw", |b| {
            b.iter_custom(|n| rt.block_on(raw.bulk(n)).expect("raw bulk"))
        });
        g.finish();

        drop(raw);
        rt.block_on(pw.shutdown());
    }
}

criterion_group!(benches, transport);
criterion_main!(benches);
