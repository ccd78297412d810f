//! procwire-core's codecs without sockets, next to the kernel copying the same bytes.
//!
//! `cargo bench -p procwire-benches --bench codec`
//!
//! Groups `codec_64B` (1000 envelopes of 64 B per iteration) and `codec_64KiB` (16 of
//! 64 KiB): `encode`, `decode`, `encode_decode`, and the baseline `unix_pair_copy` (the same
//! wire bytes written into a std `UnixStream::pair()` and read back in this thread, in
//! 64 KiB chunks). Throughput is in envelopes and in wire bytes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use procwire_benches::codec::{CodecBench, UnixCopy};

fn group(c: &mut Criterion, name: &str, payload: usize, batch: usize) {
    let mut codec = CodecBench::new(payload, batch);
    let mut copy = UnixCopy::new().expect("unix pair");
    let bytes = codec.encoded().clone();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::ElementsAndBytes {
        elements: batch as u64,
        bytes: codec.batch_bytes() as u64,
    });
    g.bench_function("encode", |b| b.iter_custom(|n| codec.time_encode(n)));
    g.bench_function("decode", |b| b.iter_custom(|n| codec.time_decode(n)));
    g.bench_function("encode_decode", |b| {
        b.iter_custom(|n| codec.time_encode_decode(n))
    });
    g.bench_function("unix_pair_copy", |b| {
        b.iter_custom(|n| copy.time_copy(&bytes, n))
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    group(c, "codec_64B", procwire_benches::SMALL, 1000);
    group(c, "codec_64KiB", 64 * 1024, 16);
}

criterion_group!(benches, codec);
criterion_main!(benches);
