//! The codec rows and the transport rows: two procwire procs in one thread against raw
//! sockets on the same runtime, for procwire-tokio (tokio current-thread runtime, raw tokio
//! sockets) and procwire-smol (one async-executor run by the measuring thread, raw async-io
//! sockets).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_executor::Executor;
use procwire_benches::alloc_count;
use procwire_benches::codec::{CodecBench, UnixCopy};
use procwire_benches::raw::RawBench;
use procwire_benches::raw_smol::RawSmolBench;
use procwire_benches::wire::{AdapterProc, ProcwireBench};
use procwire_benches::{
    runtime, smol_block_on, smol_executor, Error, Net, BULK, BULK_BURST, PIPELINE_N, SMALL,
};
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
                 header + envelope metadata + payload); a typed message adds its 8 B type \
                 fingerprint (a `Bytes` message's payload is its bytes as they are).",
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

/// Runs a scenario's future to completion on the measuring thread.
pub trait Driver {
    fn run<F: Future>(&self, f: F) -> F::Output;
}

impl Driver for Runtime {
    fn run<F: Future>(&self, f: F) -> F::Output {
        self.block_on(f)
    }
}

/// A single-threaded smol executor, run by the measuring thread.
pub struct Smol(pub Arc<Executor<'static>>);

impl Driver for Smol {
    fn run<F: Future>(&self, f: F) -> F::Output {
        smol_block_on(&self.0, f)
    }
}

/// The raw baseline of one runtime.
pub trait RawSide {
    fn round_trips(&mut self, n: u64) -> impl Future<Output = Result<Duration, Error>>;
    fn round_trip_times(
        &mut self,
        n: usize,
        out: &mut Vec<Duration>,
    ) -> impl Future<Output = Result<(), Error>>;
    fn pipelined(&mut self, bursts: u64) -> impl Future<Output = Result<Duration, Error>>;
    fn bulk(&mut self, bursts: u64) -> impl Future<Output = Result<Duration, Error>>;
}

macro_rules! raw_side {
    ($t:ty) => {
        impl RawSide for $t {
            async fn round_trips(&mut self, n: u64) -> Result<Duration, Error> {
                <$t>::round_trips(self, n).await
            }
            async fn round_trip_times(
                &mut self,
                n: usize,
                out: &mut Vec<Duration>,
            ) -> Result<(), Error> {
                <$t>::round_trip_times(self, n, out).await
            }
            async fn pipelined(&mut self, bursts: u64) -> Result<Duration, Error> {
                <$t>::pipelined(self, bursts).await
            }
            async fn bulk(&mut self, bursts: u64) -> Result<Duration, Error> {
                <$t>::bulk(self, bursts).await
            }
        }
    };
}

raw_side!(RawBench);
raw_side!(RawSmolBench);

/// One adapter's scenario pair, on its driver.
struct Side<'a, D, P, R> {
    adapter: &'static str,
    d: &'a D,
    pw: &'a mut ProcwireBench<P>,
    raw: &'a mut R,
}

impl<D, P: AdapterProc, R> Side<'_, D, P, R> {
    fn transport(&self) -> String {
        format!("{} ({})", self.pw.net(), self.adapter)
    }
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
fn rtt_rows<D: Driver, P: AdapterProc, R: RawSide>(
    plan: &Plan,
    s: &mut Side<'_, D, P, R>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let (net, d) = (s.pw.net(), s.d);
    let (a0, b0) = s.pw.stats();
    let cmp = compare(
        plan,
        &mut |n| ok(net, d.run(s.pw.round_trips(n))),
        &mut |n| ok(net, d.run(s.raw.round_trips(n))),
    );
    let (a1, b1) = s.pw.stats();
    rows.push(row(
        format!("round trip, {SMALL} B, mean"),
        s.transport(),
        Unit::MicrosPerOp,
        |secs| secs * 1e6,
        cmp,
    ));
    let data =
        (a1.data_frames_sent - a0.data_frames_sent) + (b1.data_frames_sent - b0.data_frames_sent);
    let acks = (a1.acks_sent - a0.acks_sent) + (b1.acks_sent - b0.acks_sent);
    notes.push(format!(
        "{} round trip: both procs sent {acks} acks for {data} data frames ({:.2} per data \
         frame).",
        s.transport(),
        acks as f64 / data.max(1) as f64
    ));
    let (mut p, mut r) = (Vec::new(), Vec::new());
    let chunk = (plan.rtt_samples / 8).max(1);
    for _ in 0..8 {
        ok(net, d.run(s.pw.round_trip_times(chunk, &mut p)));
        ok(net, d.run(s.raw.round_trip_times(chunk, &mut r)));
    }
    for (pct, workload) in [(50.0, "rtt_p50"), (99.0, "rtt_p99")] {
        let us = |v: &mut Vec<Duration>| percentile(v, pct).as_secs_f64() * 1e6;
        rows.push(Row {
            scenario: format!("round trip, {SMALL} B, p{pct:.0} of {}", p.len()),
            transport: s.transport(),
            unit: Unit::MicrosPerOp,
            procwire: us(&mut p),
            raw: us(&mut r),
            cpu_ratio: None,
            allocs: None,
            json: Some((s.adapter, net_name(net), workload, SMALL as u64)),
        });
    }
}

fn pipelined_row<D: Driver, P: AdapterProc, R: RawSide>(
    plan: &Plan,
    s: &mut Side<'_, D, P, R>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let (net, d) = (s.pw.net(), s.d);
    let (a0, b0) = s.pw.stats();
    let cmp = compare(plan, &mut |n| ok(net, d.run(s.pw.pipelined(n))), &mut |n| {
        ok(net, d.run(s.raw.pipelined(n)))
    });
    let (a1, b1) = s.pw.stats();
    let mut r = row(
        format!("pipelined, {PIPELINE_N} × {SMALL} B one way"),
        s.transport(),
        Unit::MsgsPerSec,
        |secs| PIPELINE_N as f64 / secs,
        cmp,
    );
    if alloc_count::is_counting() {
        let (res, allocs) = alloc_count::count(|| d.run(s.pw.pipelined(1)));
        ok(net, res);
        r.allocs = Some(allocs as f64 / PIPELINE_N as f64);
    }
    r.json = Some((s.adapter, net_name(net), "pipelined", SMALL as u64));
    rows.push(r);
    let data = a1.data_frames_sent - a0.data_frames_sent;
    let acks = b1.acks_sent - b0.acks_sent;
    notes.push(format!(
        "{} pipelined: the receiving proc sent {acks} acks for {data} data frames \
         (1 per {:.0}).",
        s.transport(),
        data as f64 / acks.max(1) as f64
    ));
}

fn bulk_rows<D: Driver, P: AdapterProc, R: RawSide>(
    plan: &Plan,
    s: &mut Side<'_, D, P, R>,
    rows: &mut Vec<Row>,
) {
    let (net, d) = (s.pw.net(), s.d);
    let burst_mib = (BULK_BURST * BULK) as f64 / MIB;
    let cmp = compare(plan, &mut |n| ok(net, d.run(s.pw.bulk(n))), &mut |n| {
        ok(net, d.run(s.raw.bulk(n)))
    });
    let mut r = row(
        format!("bulk, {BULK_BURST} × 1 MiB one way"),
        s.transport(),
        Unit::MibPerSec,
        |secs| burst_mib / secs,
        cmp,
    );
    r.json = Some((s.adapter, net_name(net), "bulk", BULK as u64));
    rows.push(r);
    // Not in the JSON report: its key would be the same as the typed row's.
    let cmp = compare(
        plan,
        &mut |n| ok(net, d.run(s.pw.bulk_untyped(n))),
        &mut |n| ok(net, d.run(s.raw.bulk(n))),
    );
    rows.push(row(
        format!("bulk, {BULK_BURST} × 1 MiB one way, untyped (`send_bytes`)"),
        s.transport(),
        Unit::MibPerSec,
        |secs| burst_mib / secs,
        cmp,
    ));
}

fn side_rows<D: Driver, P: AdapterProc, R: RawSide>(
    plan: &Plan,
    s: &mut Side<'_, D, P, R>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    rtt_rows(plan, s, rows, notes);
    pipelined_row(plan, s, rows, notes);
    bulk_rows(plan, s, rows);
}

/// procwire-tokio against raw tokio sockets on `net`.
pub fn tokio_rows(
    plan: &Plan,
    net: Net,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    let rt = runtime();
    let mut pw = rt.block_on(ProcwireBench::new(net))?;
    let mut raw = rt.block_on(RawBench::new(net))?;
    let mut side = Side {
        adapter: "tokio",
        d: &rt,
        pw: &mut pw,
        raw: &mut raw,
    };
    side_rows(plan, &mut side, rows, notes);
    drop(raw);
    rt.block_on(pw.shutdown());
    Ok(())
}

/// procwire-smol against raw async-io sockets on `net`, one thread running the executor.
pub fn smol_rows(
    plan: &Plan,
    net: Net,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    let smol = Smol(smol_executor());
    let ex = smol.0.clone();
    let mut pw = smol.run(ProcwireBench::new_smol(net, &ex))?;
    let mut raw = smol.run(RawSmolBench::new(net, &ex))?;
    let mut side = Side {
        adapter: "smol",
        d: &smol,
        pw: &mut pw,
        raw: &mut raw,
    };
    side_rows(plan, &mut side, rows, notes);
    drop(raw);
    smol.run(pw.shutdown());
    Ok(())
}
