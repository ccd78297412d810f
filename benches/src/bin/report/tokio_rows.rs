//! The codec rows and the tokio transport rows (two procwire-tokio procs in one thread
//! against raw tokio sockets).

use std::time::Duration;

use procwire_benches::alloc_count;
use procwire_benches::codec::{CodecBench, UnixCopy};
use procwire_benches::raw::RawBench;
use procwire_benches::wire::ProcwireBench;
use procwire_benches::{runtime, Error, Net, BULK, BULK_BURST, PIPELINE_N, SMALL};
use tokio::runtime::Runtime;

use crate::measure::{compare, percentile, row, Plan, Row, Unit};

pub const MIB: f64 = 1024.0 * 1024.0;

pub fn codec_rows(plan: &Plan, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<(), Error> {
    for (payload, batch, label) in [
        (SMALL, 1000, "codec: encode+decode 1000 × 64 B envelopes"),
        (64 * 1024, 16, "codec: encode+decode 16 × 64 KiB envelopes"),
    ] {
        let mut codec = CodecBench::new(payload, batch);
        let mut copy = UnixCopy::new()?;
        let bytes = codec.encoded().clone();
        let per_batch = codec.batch_bytes() as f64;
        if payload == SMALL {
            notes.push(format!(
                "A {SMALL} B payload is {} B on the wire with link-relative ids (6 B frame \
                 header + envelope metadata + payload); a typed `Bytes` message adds 1 B of \
                 postcard length.",
                codec.frame_bytes()
            ));
        }
        let cmp = compare(plan, &mut |n| codec.time_encode_decode(n), &mut |n| {
            copy.time_copy(&bytes, n)
        });
        let per_env = |secs: f64| secs / batch as f64;
        notes.push(format!(
            "{label}: {:.0} ns per envelope through the codec; the socket copy of the same \
             bytes takes {:.0} ns per envelope-equivalent.",
            per_env(cmp.0.wall) * 1e9,
            per_env(cmp.1.wall) * 1e9,
        ));
        let mut r = row(
            label.to_string(),
            "none (vs unix pair copy)".to_string(),
            Unit::MibPerSec,
            |secs| per_batch / MIB / secs,
            cmp,
        );
        r.json = Some(("core", "memory", "codec", payload as u64));
        rows.push(r);
    }
    Ok(())
}

fn net_name(net: Net) -> &'static str {
    match net {
        Net::Unix => "unix",
        Net::Tcp => "tcp",
    }
}

fn ok<T>(net: Net, r: Result<T, Error>) -> T {
    r.unwrap_or_else(|e| panic!("{net} scenario failed: {e}"))
}

/// The mean round trip (calibrated repetitions), then p50 and p99 from round trips timed
/// one by one, alternating procwire and raw in chunks.
fn rtt_rows(
    plan: &Plan,
    rt: &Runtime,
    (pw, raw): (&mut ProcwireBench, &mut RawBench),
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let net = pw.net();
    let (a0, b0) = pw.stats();
    let cmp = compare(
        plan,
        &mut |n| ok(net, rt.block_on(pw.round_trips(n))),
        &mut |n| ok(net, rt.block_on(raw.round_trips(n))),
    );
    let (a1, b1) = pw.stats();
    rows.push(row(
        format!("round trip, {SMALL} B, mean"),
        net.to_string(),
        Unit::MicrosPerOp,
        |secs| secs * 1e6,
        cmp,
    ));
    let data =
        (a1.data_frames_sent - a0.data_frames_sent) + (b1.data_frames_sent - b0.data_frames_sent);
    let acks = (a1.acks_sent - a0.acks_sent) + (b1.acks_sent - b0.acks_sent);
    notes.push(format!(
        "{net} round trip: both procs sent {acks} acks for {data} data frames ({:.2} per data \
         frame).",
        acks as f64 / data.max(1) as f64
    ));
    let (mut p, mut r) = (Vec::new(), Vec::new());
    let chunk = (plan.rtt_samples / 8).max(1);
    for _ in 0..8 {
        ok(net, rt.block_on(pw.round_trip_times(chunk, &mut p)));
        ok(net, rt.block_on(raw.round_trip_times(chunk, &mut r)));
    }
    for (pct, workload) in [(50.0, "rtt_p50"), (99.0, "rtt_p99")] {
        let us = |v: &mut Vec<Duration>| percentile(v, pct).as_secs_f64() * 1e6;
        rows.push(Row {
            scenario: format!("round trip, {SMALL} B, p{pct:.0} of {}", p.len()),
            transport: net.to_string(),
            unit: Unit::MicrosPerOp,
            procwire: us(&mut p),
            raw: us(&mut r),
            cpu_ratio: None,
            allocs: None,
            json: Some(("tokio", net_name(net), workload, SMALL as u64)),
        });
    }
}

fn pipelined_row(
    plan: &Plan,
    rt: &Runtime,
    (pw, raw): (&mut ProcwireBench, &mut RawBench),
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let net = pw.net();
    let (a0, b0) = pw.stats();
    let cmp = compare(
        plan,
        &mut |n| ok(net, rt.block_on(pw.pipelined(n))),
        &mut |n| ok(net, rt.block_on(raw.pipelined(n))),
    );
    let (a1, b1) = pw.stats();
    let mut r = row(
        format!("pipelined, {PIPELINE_N} × {SMALL} B one way"),
        net.to_string(),
        Unit::MsgsPerSec,
        |secs| PIPELINE_N as f64 / secs,
        cmp,
    );
    if alloc_count::is_counting() {
        let (res, allocs) = alloc_count::count(|| rt.block_on(pw.pipelined(1)));
        ok(net, res);
        r.allocs = Some(allocs as f64 / PIPELINE_N as f64);
    }
    r.json = Some(("tokio", net_name(net), "pipelined", SMALL as u64));
    rows.push(r);
    let data = a1.data_frames_sent - a0.data_frames_sent;
    let acks = b1.acks_sent - b0.acks_sent;
    notes.push(format!(
        "{net} pipelined: the receiving proc sent {acks} acks for {data} data frames \
         (1 per {:.0}).",
        data as f64 / acks.max(1) as f64
    ));
}

fn bulk_rows(
    plan: &Plan,
    rt: &Runtime,
    (pw, raw): (&mut ProcwireBench, &mut RawBench),
    rows: &mut Vec<Row>,
) {
    let net = pw.net();
    let burst_mib = (BULK_BURST * BULK) as f64 / MIB;
    let cmp = compare(plan, &mut |n| ok(net, rt.block_on(pw.bulk(n))), &mut |n| {
        ok(net, rt.block_on(raw.bulk(n)))
    });
    let mut r = row(
        format!("bulk, {BULK_BURST} × 1 MiB one way"),
        net.to_string(),
        Unit::MibPerSec,
        |secs| burst_mib / secs,
        cmp,
    );
    r.json = Some(("tokio", net_name(net), "bulk", BULK as u64));
    rows.push(r);
    // Not in the JSON report: its key would be the same as the typed row's.
    let cmp = compare(
        plan,
        &mut |n| ok(net, rt.block_on(pw.bulk_untyped(n))),
        &mut |n| ok(net, rt.block_on(raw.bulk(n))),
    );
    rows.push(row(
        format!("bulk, {BULK_BURST} × 1 MiB one way, untyped (`send_bytes`)"),
        net.to_string(),
        Unit::MibPerSec,
        |secs| burst_mib / secs,
        cmp,
    ));
}

pub fn transport_rows(
    plan: &Plan,
    net: Net,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    let rt = runtime();
    let mut pw = rt.block_on(ProcwireBench::new(net))?;
    let mut raw = rt.block_on(RawBench::new(net))?;
    rtt_rows(plan, &rt, (&mut pw, &mut raw), rows, notes);
    pipelined_row(plan, &rt, (&mut pw, &mut raw), rows, notes);
    bulk_rows(plan, &rt, (&mut pw, &mut raw), rows);
    drop(raw);
    rt.block_on(pw.shutdown());
    Ok(())
}
