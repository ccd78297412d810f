//! Timing: calibration, alternating repetitions, medians, CPU time; and the row type.

use std::time::Duration;

use procwire_benches::json::JsonRow;

/// How long each figure is measured.
pub struct Plan {
    /// Timed repetitions per side (alternating procwire and raw); the median is shown.
    pub reps: usize,
    /// Wall time each repetition aims at (the work per repetition is calibrated to it).
    pub target: Duration,
    /// Round trips timed one by one per side, for percentiles.
    pub rtt_samples: usize,
    /// Timeout rounds timed per number of idle sessions.
    pub timeout_rounds: usize,
    /// Wall time over which the idle mesh's CPU time is taken: whole heartbeat intervals
    /// (default 2 s), so each link's heartbeats are in it as often whatever the phase.
    pub mesh_idle: Duration,
}

pub const FULL: Plan = Plan {
    reps: 7,
    target: Duration::from_millis(200),
    rtt_samples: 20_000,
    timeout_rounds: 2_000,
    mesh_idle: Duration::from_secs(6),
};

pub const QUICK: Plan = Plan {
    reps: 5,
    target: Duration::from_millis(60),
    rtt_samples: 4_000,
    timeout_rounds: 400,
    mesh_idle: Duration::from_secs(4),
};

/// How a figure reads.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Microseconds per round trip (lower is better).
    MicrosPerOp,
    /// Messages per second (higher is better).
    MsgsPerSec,
    /// MiB per second (higher is better).
    MibPerSec,
    /// MiB of memory (lower is better).
    Mib,
    /// Percent of one core's time (lower is better).
    PercentCore,
}

impl Unit {
    pub fn format(self, v: f64) -> String {
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
            Unit::Mib => format!("{v:.1} MiB"),
            Unit::PercentCore => format!("{v:.2} % core"),
        }
    }

    pub fn better(self) -> &'static str {
        match self {
            Unit::MicrosPerOp | Unit::Mib | Unit::PercentCore => "lower",
            Unit::MsgsPerSec | Unit::MibPerSec => "higher",
        }
    }

    /// The unit's name in the JSON report.
    pub fn json(self) -> &'static str {
        match self {
            Unit::MicrosPerOp => "us",
            Unit::MsgsPerSec => "msg/s",
            Unit::MibPerSec => "MiB/s",
            Unit::Mib => "MiB",
            Unit::PercentCore => "%core",
        }
    }
}

/// Where a row goes in the JSON report: (adapter, transport, workload, payload bytes).
pub type JsonKey = (&'static str, &'static str, &'static str, u64);

pub struct Row {
    pub scenario: String,
    pub transport: String,
    pub unit: Unit,
    pub procwire: f64,
    pub raw: f64,
    /// procwire's CPU time per unit of work divided by raw's, if the OS tells.
    pub cpu_ratio: Option<f64>,
    /// Allocations per message in a timed run, if measured.
    pub allocs: Option<f64>,
    /// Set if the row is part of the JSON report.
    pub json: Option<JsonKey>,
}

impl Row {
    /// The JSON object of this row, if it has one (every row is measured in one thread).
    pub fn to_json(&self) -> Option<JsonRow> {
        let (adapter, transport, workload, payload_bytes) = self.json?;
        Some(JsonRow {
            adapter,
            transport,
            topology: "one-thread",
            workload,
            payload_bytes,
            value: self.procwire,
            unit: self.unit.json(),
            raw_value: self.raw,
            allocs_per_msg: self.allocs,
        })
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `p`-th percentile (0..=100) of `v`, nearest rank.
pub fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// CPU time this thread has used, in ns (Linux schedstat). Every task of a current-thread
/// runtime runs on the thread that calls `block_on`, so this counts all of a scenario's
/// user and system time except kernel work done on other CPUs (e.g. TCP softirqs).
pub fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Seconds of wall and CPU time per unit of work, medians over the repetitions.
pub struct PerUnit {
    pub wall: f64,
    pub cpu: Option<f64>,
}

/// Warms up, then finds how many units take about `target`.
pub fn calibrate(target: Duration, f: &mut dyn FnMut(u64) -> Duration) -> u64 {
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
pub fn compare(
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

/// A row from a comparison, `figure` turning seconds per unit into the row's unit.
pub fn row(
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
        allocs: None,
        json: None,
    }
}
