//! Runs every scenario once, each with its raw baseline, prints one markdown table, and
//! optionally writes the figures as JSON.
//!
//! ```sh
//! cargo run --release -p procwire-benches --bin report            # full run
//! cargo run --release -p procwire-benches --bin report -- --quick # quick run
//! cargo run --release -p procwire-benches --bin report -- --only unix
//! #   --only: codec, unix, tcp (tokio), smol (or smol-unix, smol-tcp), core, idle, mesh
//! cargo run --release -p procwire-benches --bin report -- --quick --json target/bench-report.json
//! cargo run --release -p procwire-benches --bin report -- --only idle --idle 10,100,2000
//! cargo run --release -p procwire-benches --bin report -- --only mesh --mesh 50
//! ```
//!
//! No criterion here: each side of each scenario is calibrated (which warms it up) to a
//! fixed wall time per repetition, then a fixed number of repetitions alternate procwire
//! and its baseline (so load that comes and goes hits both alike), and the table shows the
//! median of each, with the CPU time ratio next to the wall-time figures.
//!
//! The counting allocator is installed here, so rows that measure `allocs_per_msg` can.

mod core_rows;
mod measure;
mod mesh_rows;
mod transport_rows;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use procwire_benches::alloc_count::CountingAlloc;
use procwire_benches::json::to_json_array;
use procwire_benches::mesh::MESH_PROCS;
use procwire_benches::{Error, Net};

use measure::{Row, FULL, QUICK};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Idle sessions of the many-idle table unless `--idle` says otherwise.
const DEFAULT_IDLE: [usize; 3] = [10, 100, 2000];

const PARTS: [&str; 9] = [
    "codec",
    "unix",
    "tcp",
    "core",
    "idle",
    "smol",
    "smol-unix",
    "smol-tcp",
    "mesh",
];

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
    eprintln!(
        "usage: report [--quick] [--only codec|unix|tcp|core|idle|smol|smol-unix|smol-tcp|mesh]... \
         [--json PATH] [--idle K,K,...] [--mesh K]   ({why})"
    );
    std::process::exit(2);
}

struct Args {
    quick: bool,
    only: Vec<String>,
    json: Option<String>,
    idle: Vec<usize>,
    mesh: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        quick: false,
        only: Vec::new(),
        json: None,
        idle: DEFAULT_IDLE.to_vec(),
        mesh: MESH_PROCS,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--only" => match args.next() {
                Some(part) if PARTS.contains(&part.as_str()) => a.only.push(part),
                _ => usage(&format!("--only takes one of {}", PARTS.join(", "))),
            },
            "--json" => match args.next() {
                Some(path) => a.json = Some(path),
                None => usage("--json takes a path"),
            },
            "--idle" => {
                let list = args.next().unwrap_or_default();
                let ks: Result<Vec<usize>, _> = list.split(',').map(str::parse).collect();
                match ks {
                    Ok(ks) if !ks.is_empty() => a.idle = ks,
                    _ => usage("--idle takes a comma-separated list of session counts"),
                }
            }
            "--mesh" => match args.next().and_then(|k| k.parse().ok()) {
                Some(k) if k >= 2 => a.mesh = k,
                _ => usage("--mesh takes a number of procs, at least 2"),
            },
            _ => usage(&format!("unknown argument {arg:?}")),
        }
    }
    a
}

fn print_table(rows: &[Row]) {
    println!(
        "| scenario | transport | procwire | raw baseline | procwire / raw | better | CPU time, procwire / raw | allocs/msg |"
    );
    println!("|---|---|---:|---:|---:|---|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.2}× | {} | {} | {} |",
            r.scenario,
            r.transport,
            r.unit.format(r.procwire),
            r.unit.format(r.raw),
            r.procwire / r.raw,
            r.unit.better(),
            r.cpu_ratio
                .map_or("n/a".to_string(), |c| format!("{c:.2}×")),
            r.allocs.map_or("–".to_string(), |a| format!("{a:.3}")),
        );
    }
    println!();
    println!(
        "\"procwire / raw\" divides the procwire figure by the raw one: for µs/RT lower is \
         better (2.00× = twice as slow), for msg/s and MiB/s higher is better (0.50× = half \
         the rate). \"CPU time\" divides the CPU time the driving thread spent per unit of \
         work (lower is better, 2.00× = twice the CPU): it is less disturbed by other load \
         on the machine than wall time. \"allocs/msg\": heap allocations on the driving \
         thread per message in one timed run."
    );
}

fn write_json(path: &str, rows: &[Row]) -> Result<(), Error> {
    let objects: Vec<_> = rows.iter().filter_map(Row::to_json).collect();
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(path, to_json_array(&objects))?;
    eprintln!("wrote {} figures to {path}", objects.len());
    Ok(())
}

fn main() -> Result<(), Error> {
    let args = parse_args();
    let wanted = |part: &str| args.only.is_empty() || args.only.iter().any(|o| o == part);
    let plan = if args.quick { &QUICK } else { &FULL };
    let started = Instant::now();
    let load_before = load_avg();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    // First: its peak RSS and idle CPU are the whole process's.
    if wanted("mesh") {
        mesh_rows::mesh_rows(plan, args.mesh, &mut rows, &mut notes);
    }
    if wanted("core") {
        core_rows::core_row(plan, &mut rows, &mut notes);
    }
    if wanted("codec") {
        transport_rows::codec_rows(plan, &mut rows, &mut notes)?;
    }
    for net in Net::ALL {
        if wanted(&net.to_string()) {
            transport_rows::tokio_rows(plan, net, &mut rows, &mut notes)?;
        }
    }
    for (net, part) in Net::ALL.into_iter().zip(["smol-unix", "smol-tcp"]) {
        if wanted(part) || wanted("smol") {
            transport_rows::smol_rows(plan, net, &mut rows, &mut notes)?;
        }
    }
    let idle = if wanted("idle") {
        core_rows::idle_lines(plan, &args.idle)
    } else {
        Vec::new()
    };

    let load_after = load_avg();
    println!(
        "procwire vs raw sockets, {} UTC, {} run ({:.0} s): {cpus} CPUs ({}), kernel {}, \
         load average {load_before} before / {load_after} after.",
        today(),
        if args.quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64(),
        cpu_model(),
        read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".to_string()),
    );
    println!(
        "Topology: one OS thread drives both ends of every connection: a tokio \
         current-thread runtime for procwire-tokio (two procs in one process) and raw tokio \
         sockets, one async-executor run by the measuring thread for procwire-smol and raw \
         async-io sockets; the core rows drive two core procs wired in memory with a fake clock; \
         the many-peers rows run K procwire-tokio procs on one current-thread runtime. \
         Median of {} alternating runs of ~{} ms per figure.",
        plan.reps,
        plan.target.as_millis()
    );
    println!();
    print_table(&rows);
    for n in notes {
        println!("- {n}");
    }
    println!(
        "- procwire: typed ports of `bytes::Bytes` (postcard) unless marked untyped, default \
         `ProcOptions`; raw: 4-byte length prefix, 64 KiB buffered reads and writes."
    );
    println!(
        "- TCP on both sides: `TCP_NODELAY`, congestion control {} (procwire's default for \
         connections to this host, `ProcOptions::same_host_tcp_congestion`); the system's \
         default is {}.",
        procwire_benches::tcp_setup()
            .congestion()
            .unwrap_or("the system's"),
        read_trimmed("/proc/sys/net/ipv4/tcp_congestion_control").unwrap_or_else(|| "?".into()),
    );
    if !idle.is_empty() {
        core_rows::print_idle(&idle);
    }
    if let Some(path) = &args.json {
        write_json(path, &rows)?;
    }
    Ok(())
}
