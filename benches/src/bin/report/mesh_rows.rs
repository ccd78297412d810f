//! The many-peers rows (issue 8): K procs in one process, all connected, against two.
//!
//! Runs before every other part, because two of its figures are the whole process's (peak
//! resident set, CPU time of all threads) and would otherwise carry what earlier parts left
//! behind. The phases, all on one current-thread runtime:
//!
//! 1. a mesh of two (the pair alone): set up and connected; resident set after setup, idle
//!    CPU; the first half of the pair's timed pipelined runs (calibrated here); its peak
//!    resident set; shut down;
//! 2. the mesh of K (peak reset first): set up and connected; resident set, idle CPU; the
//!    busy pair (node 0 → node 1) timed as often as the pair alone in all; allocations per
//!    message of one more burst; its peak resident set; shut down;
//! 3. a fresh mesh of two: the second half of the pair's timed runs, so load that drifts
//!    over the part hits both sides.

use std::time::{Duration, Instant};

use procwire_benches::mesh::{reset_peak_rss, rss, Mesh};
use procwire_benches::{alloc_count, runtime, Error, PIPELINE_N, SMALL};
use tokio::runtime::Runtime;

use crate::measure::{calibrate, median, thread_cpu_ns, Plan, Row, Unit};
use crate::transport_rows::MIB;

/// Lets a freshly connected mesh go quiet (acknowledgements, first heartbeats) before its
/// idle CPU time is taken.
const SETTLE: Duration = Duration::from_millis(300);

/// What one mesh cost.
struct Cost {
    k: usize,
    setup_secs: f64,
    /// Resident set after setup, bytes.
    rss_after_setup: f64,
    /// Peak resident set of the phase (including the busy pair's runs), bytes.
    peak: f64,
    /// Peak of the bytes allocated and not freed on this thread during the phase (pages
    /// touched or not), if the counting allocator is installed.
    heap_peak: Option<f64>,
    /// CPU time of the whole process while the mesh is idle, fraction of one core.
    idle_cpu: f64,
}

/// Wall and CPU seconds per message of timed pipelined runs.
#[derive(Default)]
struct Samples {
    wall: Vec<f64>,
    cpu: Vec<Option<f64>>,
}

impl Samples {
    fn take(&mut self, rt: &Runtime, mesh: &mut Mesh, bursts: u64, reps: usize) {
        let msgs = (bursts * PIPELINE_N as u64) as f64;
        for _ in 0..reps {
            let c0 = thread_cpu_ns();
            let wall = ok(rt.block_on(mesh.pipelined(bursts)));
            let c1 = thread_cpu_ns();
            self.wall.push(wall.as_secs_f64() / msgs);
            self.cpu
                .push(c0.zip(c1).map(|(a, b)| (b - a) as f64 / 1e9 / msgs));
        }
    }

    fn wall(&self) -> f64 {
        median(self.wall.clone())
    }

    fn cpu(&self) -> Option<f64> {
        let cpu: Option<Vec<f64>> = self.cpu.iter().copied().collect();
        cpu.map(median)
    }
}

fn ok<T>(r: Result<T, Error>) -> T {
    r.unwrap_or_else(|e| panic!("mesh scenario failed: {e}"))
}

/// Stands up and connects a mesh of `k`, then takes its resident set and, unless `idle` is
/// zero, its CPU time over `idle` of idle wall time.
fn stand_up(rt: &Runtime, k: usize, idle: Duration) -> (Mesh, Cost) {
    alloc_count::reset_thread_heap_peak();
    let t = Instant::now();
    let mut mesh = ok(rt.block_on(Mesh::new(k)));
    let arrived = ok(rt.block_on(mesh.connect_all()));
    assert_eq!(arrived, k * (k - 1), "every ordered pair said hello");
    let setup_secs = t.elapsed().as_secs_f64();
    let rss_after_setup = rss().map_or(f64::NAN, |(now, _)| now as f64);
    let idle_cpu = if idle.is_zero() {
        f64::NAN
    } else {
        rt.block_on(mesh.idle_cpu(SETTLE, idle)).unwrap_or(f64::NAN)
    };
    let cost = Cost {
        k,
        setup_secs,
        rss_after_setup,
        peak: f64::NAN,
        heap_peak: None,
        idle_cpu,
    };
    (mesh, cost)
}

fn end_phase(rt: &Runtime, mesh: Mesh, cost: &mut Cost) {
    cost.peak = rss().map_or(f64::NAN, |(_, peak)| peak as f64);
    cost.heap_peak = alloc_count::is_counting().then(|| alloc_count::thread_heap().1 as f64);
    rt.block_on(mesh.shutdown());
}

/// The three rows (peak RSS, idle CPU, busy pair) for a mesh of `k` against a mesh of two.
pub fn mesh_rows(plan: &Plan, k: usize, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let rt = runtime();
    let reset_ok = reset_peak_rss();
    let (mut pair, mut two) = stand_up(&rt, 2, plan.mesh_idle);
    let bursts = calibrate(plan.target, &mut |n| ok(rt.block_on(pair.pipelined(n))));
    let mut alone = Samples::default();
    alone.take(&rt, &mut pair, bursts, plan.reps.div_ceil(2));
    end_phase(&rt, pair, &mut two);

    reset_peak_rss();
    let (mut mesh, mut many) = stand_up(&rt, k, plan.mesh_idle);
    let mut busy = Samples::default();
    busy.take(&rt, &mut mesh, bursts, plan.reps);
    let allocs = alloc_count::is_counting().then(|| {
        let (res, allocs) = alloc_count::count(|| rt.block_on(mesh.pipelined(1)));
        ok(res);
        allocs as f64 / PIPELINE_N as f64
    });
    end_phase(&rt, mesh, &mut many);

    let (mut pair, _) = stand_up(&rt, 2, Duration::ZERO);
    alone.take(&rt, &mut pair, bursts, plan.reps / 2);
    rt.block_on(pair.shutdown());

    push_rows(rows, &many, &two, &busy, &alone, allocs);
    push_notes(notes, &many, &two, reset_ok, plan.mesh_idle);
}

fn push_rows(
    rows: &mut Vec<Row>,
    many: &Cost,
    two: &Cost,
    busy: &Samples,
    alone: &Samples,
    allocs: Option<f64>,
) {
    let (k, transport) = (many.k, "unix (tokio)".to_string());
    let base = |scenario: String, unit, procwire, raw, workload| Row {
        scenario,
        transport: transport.clone(),
        unit,
        procwire,
        raw,
        cpu_ratio: None,
        allocs: None,
        json: Some(("tokio", "unix", workload, SMALL as u64)),
    };
    rows.push(base(
        format!("many peers: peak RSS, {k} procs all connected (baseline: 2 procs)"),
        Unit::Mib,
        many.peak / MIB,
        two.peak / MIB,
        "mesh_rss",
    ));
    rows.push(base(
        format!("many peers: CPU of the idle mesh, {k} procs (baseline: 2 procs)"),
        Unit::PercentCore,
        many.idle_cpu * 100.0,
        two.idle_cpu * 100.0,
        "mesh_idle_cpu",
    ));
    if let Some((m, t)) = many.heap_peak.zip(two.heap_peak) {
        let mut r = base(
            format!(
                "many peers: peak heap (allocated, pages touched or not), {k} procs \
                 (baseline: 2 procs)"
            ),
            Unit::Mib,
            m / MIB,
            t / MIB,
            "",
        );
        // Markdown only: not one of the agreed workloads.
        r.json = None;
        rows.push(r);
    }
    let mut r = base(
        format!(
            "many peers: pipelined {PIPELINE_N} × {SMALL} B, a pair of {k} connected procs \
             (baseline: the pair alone)"
        ),
        Unit::MsgsPerSec,
        1.0 / busy.wall(),
        1.0 / alone.wall(),
        "mesh_pipelined",
    );
    r.cpu_ratio = busy.cpu().zip(alone.cpu()).map(|(b, a)| b / a);
    r.allocs = allocs;
    rows.push(r);
}

fn push_notes(notes: &mut Vec<String>, many: &Cost, two: &Cost, reset_ok: bool, idle: Duration) {
    let mib = |b: f64| b / MIB;
    notes.push(format!(
        "many peers: {} procs connected in {:.2} s ({} links, one 64 B message per ordered \
         pair); resident set after setup {:.1} MiB ({:.1} MiB with 2 procs); peak {:.1} MiB \
         ({:.1} MiB){}. Targets (issue 8): busy pair ≥ 0.8× alone, idle mesh ≤ 3 % of a \
         core, peak RSS ≤ 96 MiB.",
        many.k,
        many.setup_secs,
        many.k * (many.k - 1),
        mib(many.rss_after_setup),
        mib(two.rss_after_setup),
        mib(many.peak),
        mib(two.peak),
        if reset_ok {
            ", each peak taken since its own phase began"
        } else {
            "; the kernel refused to reset the peak, so the K-proc peak may carry the 2-proc phase"
        },
    ));
    notes.push(format!(
        "many peers: idle CPU is the CPU time of every thread of the process over {:.1} s of \
         wall time while the runtime only sleeps, after {} ms of quiet; the 2-proc mesh took \
         {:.2} s to set up.",
        idle.as_secs_f64(),
        SETTLE.as_millis(),
        two.setup_secs,
    ));
}
