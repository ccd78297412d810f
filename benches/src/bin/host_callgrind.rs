//! Scenarios of the whole host path (one thread, Unix or TCP, tokio or smol) for a fixed
//! amount of work, for instruction counts:
//!
//! ```sh
//! cargo build --release -p procwire-benches --bin host_callgrind
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/hg.2 target/release/host_callgrind 2
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/hg.12 target/release/host_callgrind 12
//! ```
//!
//! `host_callgrind <n> [unix|tcp] [pipe|rtt] [tokio|smol]`. In `pipe` mode (the default)
//! `n` is a number of bursts of [`PIPELINE_N`] 64 B messages; in `rtt` mode it is a number
//! of 64 B round trips through the echo actor. Setup is the same whatever `n`, so
//! (Ir(n2) - Ir(n1)) / (n2 - n1) is the steady-state cost of one burst or one round trip;
//! the same difference of call counts (`callgrind_annotate --inclusive=yes`, or the calls of
//! `epoll_wait`, `writev`, `recvfrom` and the task polls) says how many syscalls, polls and
//! wakes one round trip takes.

use procwire_benches::wire::ProcwireBench;
use procwire_benches::{runtime, smol_block_on, smol_executor, Net, PIPELINE_N};

/// What to run.
#[derive(Clone, Copy)]
enum Mode {
    Pipelined,
    RoundTrip,
}

fn parse() -> Option<(u64, Net, Mode, bool)> {
    let mut args = std::env::args().skip(1);
    let n = args.next()?.parse::<u64>().ok()?;
    let (mut net, mut mode, mut smol) = (Net::Unix, Mode::Pipelined, false);
    for a in args {
        match a.as_str() {
            "unix" => net = Net::Unix,
            "tcp" => net = Net::Tcp,
            "pipe" => mode = Mode::Pipelined,
            "rtt" => mode = Mode::RoundTrip,
            "tokio" => smol = false,
            "smol" => smol = true,
            _ => return None,
        }
    }
    Some((n, net, mode, smol))
}

async fn run<P: procwire_benches::wire::AdapterProc>(
    mut bench: ProcwireBench<P>,
    n: u64,
    mode: Mode,
) -> std::time::Duration {
    let took = match mode {
        Mode::Pipelined => bench.pipelined(n).await,
        Mode::RoundTrip => bench.round_trips(n).await,
    }
    .expect("the scenario runs");
    bench.shutdown().await;
    took
}

fn main() {
    let Some((n, net, mode, smol)) = parse() else {
        eprintln!("usage: host_callgrind <n> [unix|tcp] [pipe|rtt] [tokio|smol]");
        std::process::exit(2);
    };
    let took = if smol {
        let ex = smol_executor();
        smol_block_on(&ex.clone(), async move {
            let bench = ProcwireBench::new_smol(net, &ex).await.expect("two procs");
            run(bench, n, mode).await
        })
    } else {
        runtime().block_on(async {
            let bench = ProcwireBench::new(net).await.expect("two procs");
            run(bench, n, mode).await
        })
    };
    let (what, count) = match mode {
        Mode::Pipelined => ("messages of 64 B delivered", n * PIPELINE_N as u64),
        Mode::RoundTrip => ("round trips of 64 B", n),
    };
    println!(
        "{count} {what} in {:.3} ms ({:.2} us each)",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / count as f64
    );
}
