//! The tokio adapter's pipelined scenario (one thread, Unix or TCP) for a fixed number of
//! bursts, for instruction counts of the whole host path:
//!
//! ```sh
//! cargo build --release -p procwire-benches --bin host_callgrind
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/hg.2 target/release/host_callgrind 2
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/hg.12 target/release/host_callgrind 12
//! ```
//!
//! Each burst is [`PIPELINE_N`] 64 B messages; setup is the same whatever the burst count,
//! so (Ir(12) - Ir(2)) / (10 × PIPELINE_N) is the instructions per message in steady state.
//! `host_callgrind <bursts> tcp` runs over TCP instead of Unix.

use procwire_benches::wire::ProcwireBench;
use procwire_benches::{runtime, Net, PIPELINE_N};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(Ok(bursts)) = args.next().map(|a| a.parse::<u64>()) else {
        eprintln!("usage: host_callgrind <bursts> [unix|tcp]");
        std::process::exit(2);
    };
    let net = match args.next().as_deref() {
        None | Some("unix") => Net::Unix,
        Some("tcp") => Net::Tcp,
        Some(other) => {
            eprintln!("unknown transport {other}: unix or tcp");
            std::process::exit(2);
        }
    };
    let took = runtime().block_on(async {
        let mut bench = ProcwireBench::new(net).await.expect("stand up two procs");
        let took = bench.pipelined(bursts).await.expect("pipelined bursts");
        bench.shutdown().await;
        took
    });
    let n = bursts * PIPELINE_N as u64;
    println!(
        "{n} messages of 64 B delivered in {:.3} ms ({:.2} M msg/s)",
        took.as_secs_f64() * 1e3,
        n as f64 / took.as_secs_f64() / 1e6
    );
}
