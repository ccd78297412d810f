//! Runs every scenario once, each with its raw baseline, and prints one markdown table.
//!
//! ```sh
//! cargo run --release -p procwire-benches --bin report            # ~30 s
//! cargo run --release -p procwire-benches --bin report -- --quick # ~8 s
//! cargo run --release -p procwire-benches --bin report -- --only unix   # codec, unix, tcp
//! ```
//!
//! No criterion here: each side of each scenario is calibrated (which warms it up) to a
//! fixed wall time per repetition, then a fixed number of repetitions alternate procwire
//! and its baseline (so load that comes and goes hits both alike), and the table shows the
//! median of each, with the CPU time ratio next to the wall-time figures.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procwire_benches::codec::{CodecBench, UnixCopy};
use procwire_benches::raw::RawBench;
use procwire_benches::wire::ProcwireBench;
use procwire_benches::{runtime, Error, Net, BULK, BULK_BURST, PIPELINE_N, SMALL};

/// How long each figure is measured.
struct Plan {
    /// Timed repetitions per side (alternating procwire and raw); the median is shown.
    reps: usize,
    /// Wall time each repetition aims at (the work per repetition is calibrated to it).
    target: Duration,
}

const FULL: Plan = Plan {
    reps: 7,
    target: Duration::from_millis(200),
};

const QUICK: Plan = Plan {
    reps: 5,
    target: Duration::from_millis(60),
};

/// How a figure reads.
#[derive(Clone, Copy)]
enum Unit {
    /// Microseconds per round trip (lower is better).
    MicrosPerOp,
    /// Messages per second (higher is better).
    MsgsPerSec,
    /// MiB per second (higher is better).
    MibPerSec,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::MicrosPerOp => format!("{v:.2} µs/RT"),
            Unit::MsgsPerSec => {
                if v >= 1e6 {
                    format!("{:.2} M msg/s", v / 1e6)
                } else {
                    format!("{:.0} k msg/s", v / 1e3)
                }
            }
            Unit::MibPerSec => format!("{v:.0} MiB/s"),
        }
    }

    fn better(self) -> &'static str {
        match self {
            Unit::MicrosPerOp => "lower",
            Unit::MsgsPerSec | Unit::MibPerSec => "higher",
        }
    }
}

struct Row {
    scenario: String,
    transport: String,
    unit: Unit,
    procwire: f64,
    raw: f64,
    /// procwire's CPU time per unit of work divided by raw's, if the OS tells.
    cpu_ratio: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// CPU time this thread has used, in ns (Linux schedstat). Every task of a current-thread
/// runtime runs on the thread that calls `block_on`, so this counts all of a scenario's
/// user and system time except kernel work done on other CPUs (e.g. TCP softirqs).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Seconds of wall and CPU time per unit of work, medians over the repetitions.
struct PerUnit {
    wall: f64,
    cpu: Option<f64>,
}

/// Warms up, then finds how many units take about `target`.
fn calibrate(target: Duration, f: &mut dyn FnMut(u64) -> Duration) -> u64 {
    f(1);
    let mut n = 1u64;
    loop {
        let d = f(n);
        if d >= target / 8 || n >= 1 << 30 {
            let scaled = n as f64 * target.as_secs_f64() / d.as_secs_f64().max(1e-9);
            return (scaled.round() as u64).max(1);
        }
        n *= 4;
    }
}

/// Calibrates both sides, then runs `reps` alternating timed repetitions of each.
fn compare(
    plan: &Plan,
    procwire: &mut dyn FnMut(u64) -> Duration,
    raw: &mut dyn FnMut(u64) -> Duration,
) -> (PerUnit, PerUnit) {
    let np = calibrate(plan.target, procwire);
    let nr = calibrate(plan.target, raw);
    let mut samples: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    let mut cpu_ok = true;
    for i in 0..plan.reps {
        let order: [usize; 2] = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (f, n): (&mut dyn FnMut(u64) -> Duration, u64) = if side == 0 {
                (&mut *procwire, np)
            } else {
                (&mut *raw, nr)
            };
            let c0 = thread_cpu_ns();
            let wall = f(n);
            let c1 = thread_cpu_ns();
            samples[side].0.push(wall.as_secs_f64() / n as f64);
            match (c0, c1) {
                (Some(a), Some(b)) => samples[side].1.push((b - a) as f64 / 1e9 / n as f64),
                _ => cpu_ok = false,
            }
        }
    }
    let [p, r] = samples.map(|(wall, cpu)| PerUnit {
        wall: median(wall),
        cpu: if cpu_ok { Some(median(cpu)) } else { None },
    });
    (p, r)
}

fn row(
    scenario: String,
    transport: String,
    unit: Unit,
    figure: impl Fn(f64) -> f64,
    (p, r): (PerUnit, PerUnit),
) -> Row {
    Row {
        scenario,
        transport,
        unit,
        procwire: figure(p.wall),
        raw: figure(r.wall),
        cpu_ratio: p.cpu.zip(r.cpu).map(|(p, r)| p / r),
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn codec_rows(plan: &Plan, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<(), Error> {
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
        rows.push(row(
            label.to_string(),
            "none (vs unix pair copy)".to_string(),
            Unit::MibPerSec,
            |secs| per_batch / MIB / secs,
            cmp,
        ));
    }
    Ok(())
}

fn transport_rows(
    plan: &Plan,
    net: Net,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    let rt = runtime();
    let mut pw = rt.block_on(ProcwireBench::new(net))?;
    let mut raw = rt.block_on(RawBench::new(net))?;
    let ok =
        |r: Result<Duration, Error>| r.unwrap_or_else(|e| panic!("{net} scenario failed: {e}"));

    let (a0, b0) = pw.stats();
    let cmp = compare(
        plan,
        &mut |n| ok(rt.block_on(pw.round_trips(n))),
        &mut |n| ok(rt.block_on(raw.round_trips(n))),
    );
    let (a1, b1) = pw.stats();
    rows.push(row(
        format!("round trip, {SMALL} B"),
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

    let (a0, b0) = pw.stats();
    let cmp = compare(plan, &mut |n| ok(rt.block_on(pw.pipelined(n))), &mut |n| {
        ok(rt.block_on(raw.pipelined(n)))
    });
    let (a1, b1) = pw.stats();
    rows.push(row(
        format!("pipelined, {PIPELINE_N} × {SMALL} B one way"),
        net.to_string(),
        Unit::MsgsPerSec,
        |secs| PIPELINE_N as f64 / secs,
        cmp,
    ));
    let data = a1.data_frames_sent - a0.data_frames_sent;
    let acks = b1.acks_sent - b0.acks_sent;
    notes.push(format!(
        "{net} pipelined: the receiving proc sent {acks} acks for {data} data frames \
         (1 per {:.0}).",
        data as f64 / acks.max(1) as f64
    ));

    let burst_mib = (BULK_BURST * BULK) as f64 / MIB;
    let cmp = compare(plan, &mut |n| ok(rt.block_on(pw.bulk(n))), &mut |n| {
        ok(rt.block_on(raw.bulk(n)))
    });
    rows.push(row(
        format!("bulk, {BULK_BURST} × 1 MiB one way"),
        net.to_string(),
        Unit::MibPerSec,
        |secs| burst_mib / secs,
        cmp,
    ));
    let cmp = compare(
        plan,
        &mut |n| ok(rt.block_on(pw.bulk_untyped(n))),
        &mut |n| ok(rt.block_on(raw.bulk(n))),
    );
    rows.push(row(
        format!("bulk, {BULK_BURST} × 1 MiB one way, untyped (`send_bytes`)"),
        net.to_string(),
        Unit::MibPerSec,
        |secs| burst_mib / secs,
        cmp,
    ));

    drop(raw);
    rt.block_on(pw.shutdown());
    Ok(())
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn load_avg() -> String {
    read_trimmed("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_string())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// Today's date (UTC) as YYYY-MM-DD, from the days since 1970 (civil-from-days).
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn usage(why: &str) -> ! {
    eprintln!("usage: report [--quick] [--only codec|unix|tcp]...   ({why})");
    std::process::exit(2);
}

fn main() -> Result<(), Error> {
    let mut quick = false;
    let mut only: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => match args.next().as_deref() {
                Some(part @ ("codec" | "unix" | "tcp")) => only.push(part.to_string()),
                _ => usage("--only takes codec, unix or tcp"),
            },
            _ => usage(&format!("unknown argument {a:?}")),
        }
    }
    let wanted = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    let plan = if quick { &QUICK } else { &FULL };
    let started = Instant::now();
    let load_before = load_avg();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    if wanted("codec") {
        codec_rows(plan, &mut rows, &mut notes)?;
    }
    for net in Net::ALL {
        if wanted(&net.to_string()) {
            transport_rows(plan, net, &mut rows, &mut notes)?;
        }
    }

    let load_after = load_avg();
    println!(
        "procwire vs raw sockets, {} UTC, {} run ({:.0} s): {cpus} CPUs ({}), kernel {}, \
         load average {load_before} before / {load_after} after.",
        today(),
        if quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64(),
        cpu_model(),
        read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".to_string()),
    );
    println!(
        "Topology: one OS thread (tokio current-thread runtime) drives both ends of every \
         connection, for procwire (two procs in one process) and for the raw baseline alike. \
         Median of {} alternating runs of ~{} ms per figure.",
        plan.reps,
        plan.target.as_millis()
    );
    println!();
    println!(
        "| scenario | transport | procwire | raw baseline | procwire / raw | better | CPU time, procwire / raw |"
    );
    println!("|---|---|---:|---:|---:|---|---:|");
    for r in &rows {
        let ratio = r.procwire / r.raw;
        println!(
            "| {} | {} | {} | {} | {:.2}× | {} | {} |",
            r.scenario,
            r.transport,
            r.unit.format(r.procwire),
            r.unit.format(r.raw),
            ratio,
            r.unit.better(),
            r.cpu_ratio
                .map_or("n/a".to_string(), |c| format!("{c:.2}×")),
        );
    }
    println!();
    println!(
        "\"procwire / raw\" divides the procwire figure by the raw one: for µs/RT lower is \
         better (2.00× = twice as slow), for msg/s and MiB/s higher is better (0.50× = half \
         the rate). \"CPU time\" divides the CPU time the driving thread spent per unit of \
         work (lower is better, 2.00× = twice the CPU): it is less disturbed by other load \
         on the machine than wall time."
    );
    for n in notes {
        println!("- {n}");
    }
    println!(
        "- procwire: typed ports of `bytes::Bytes` (postcard) unless marked untyped, default \
         `ProcOptions`; raw: 4-byte length prefix, 64 KiB buffered reads and writes."
    );
    Ok(())
}
