//! The core-only rows: the pipelined link in memory against a memcpy of its wire bytes,
//! and the many-idle-sessions table.

use std::time::Instant;

use procwire_benches::alloc_count;
use procwire_benches::core_idle::IdleNet;
use procwire_benches::core_mem::{CorePipe, MemcpyTwin, BATCH};
use procwire_benches::SMALL;

use crate::measure::{compare, row, Plan, Row, Unit};

/// Messages in the window over which allocations are counted.
const ALLOC_WINDOW: u64 = 10_000;

pub fn core_row(plan: &Plan, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let mut pipe = CorePipe::new(SMALL);
    let wire = pipe.measure_wire_bytes(20_000);
    let mut twin = MemcpyTwin::new(wire.round() as usize, BATCH);
    let cmp = compare(plan, &mut |n| pipe.run(n), &mut |n| twin.run(n));
    notes.push(format!(
        "core alone: {wire:.1} B on the wire A→B per {SMALL} B message (data frames and \
         pings, measured over 20 000 messages); {:.0} ns per message through both core procs, \
         {:.1} ns for the memcpy twin ({} B frames, batches of {BATCH}).",
        cmp.0.wall * 1e9,
        cmp.1.wall * 1e9,
        twin.frame_len(),
    ));
    let mut r = row(
        format!("core alone, pipelined {SMALL} B A→B, in memory"),
        "memory (vs memcpy of the same bytes)".to_string(),
        Unit::MsgsPerSec,
        |secs| 1.0 / secs,
        cmp,
    );
    if alloc_count::is_counting() {
        let (_, allocs) = alloc_count::count(|| pipe.run(ALLOC_WINDOW));
        r.allocs = Some(allocs as f64 / ALLOC_WINDOW as f64);
    }
    r.json = Some(("core", "memory", "pipelined", SMALL as u64));
    rows.push(r);
}

/// One line of the many-idle table.
pub struct IdleLine {
    pub k: usize,
    pub setup_secs: f64,
    /// ns per message on the busy link with `k` idle sessions, and alone (same run).
    pub per_msg_ns: (f64, f64),
    /// CPU time per message with `k` idle sessions / alone.
    pub cpu_ratio: Option<f64>,
    /// Median wall time of one timeout round of the receiver, µs.
    pub round_us: f64,
    pub transmits_per_round: f64,
}

/// The busy link beside each `k` of `ks` idle sessions, against the link alone; and the
/// receiver's timeout round for `k` = 0 (alone) and each `k`.
pub fn idle_lines(plan: &Plan, ks: &[usize]) -> Vec<IdleLine> {
    let mut alone = IdleNet::new(0, SMALL);
    let rounds = alone.timeout_rounds(plan.timeout_rounds);
    let mut lines = vec![IdleLine {
        k: 0,
        setup_secs: 0.0,
        per_msg_ns: (f64::NAN, f64::NAN),
        cpu_ratio: None,
        round_us: rounds.median().as_secs_f64() * 1e6,
        transmits_per_round: rounds.transmits_per_round(),
    }];
    for &k in ks {
        let t = Instant::now();
        let mut idle = IdleNet::new(k, SMALL);
        let setup_secs = t.elapsed().as_secs_f64();
        let cmp = compare(plan, &mut |n| idle.run(n), &mut |n| alone.run(n));
        let rounds = idle.timeout_rounds(plan.timeout_rounds);
        lines.push(IdleLine {
            k,
            setup_secs,
            per_msg_ns: (cmp.0.wall * 1e9, cmp.1.wall * 1e9),
            cpu_ratio: cmp.0.cpu.zip(cmp.1.cpu).map(|(p, r)| p / r),
            round_us: rounds.median().as_secs_f64() * 1e6,
            transmits_per_round: rounds.transmits_per_round(),
        });
    }
    lines
}

/// The many-idle table in Markdown.
pub fn print_idle(lines: &[IdleLine]) {
    println!();
    println!(
        "Many idle sessions (core alone, in memory, one thread): receiver B of the busy link \
         also holds K inbound sessions from K idle procs, opened spread over one heartbeat \
         interval."
    );
    println!();
    println!(
        "| idle sessions K | busy link, ns/msg with K idle | alone, ns/msg | with K / alone | CPU time, with K / alone | B timeout round, median µs | transmits per round | setup s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in lines {
        let (with, alone) = l.per_msg_ns;
        let fmt = |v: f64| {
            if v.is_finite() {
                format!("{v:.0}")
            } else {
                "–".to_string()
            }
        };
        let ratio = with / alone;
        let times = |v: f64| {
            if v.is_finite() {
                format!("{v:.2}×")
            } else {
                "–".to_string()
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} |",
            l.k,
            fmt(with),
            fmt(alone),
            times(ratio),
            times(l.cpu_ratio.unwrap_or(f64::NAN)),
            l.round_us,
            l.transmits_per_round,
            l.setup_secs,
        );
    }
    println!();
    println!(
        "A timeout round: the clock jumps to B's next deadline; B's `handle_timeout`, the \
         draining of its output and the read of its next deadline are timed. Sessions' \
         deadlines are spread out, so a round has about one session due whatever K: a round \
         time that grows with K is work proportional to the number of sessions."
    );
}
