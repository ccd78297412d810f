//! The core-only pipelined bench for a fixed number of messages, for instruction counts:
//!
//! ```sh
//! cargo build --release -p procwire-benches --bin core_callgrind
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.20000 target/release/core_callgrind 20000
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.120000 target/release/core_callgrind 120000
//! ```
//!
//! Setup and warm-up are the same whatever N, so (Ir(N2) - Ir(N1)) / (N2 - N1) is the
//! instructions per message in steady state.
//!
//! `core_callgrind <messages> <k>` runs the same busy link beside `k` idle sessions at the
//! receiver ([`IdleNet`]), for instructions per message with `k` idle sessions.
//!
//! `core_callgrind <messages> answering` runs the link the other way round on the same
//! connection: B dialed A, and A's messages to B ride B's connection (a two-way link,
//! [`CorePipe::answering`]).
//!
//! `core_callgrind timeouts <rounds> <k>` runs `rounds` timeout rounds of the receiver with
//! `k` idle sessions ([`IdleNet::timeout_rounds`]): differencing two round counts at the
//! same `k` gives the instructions of one round (every node's work in it, untimed parts
//! included), to compare across `k`.

use procwire_benches::core_idle::IdleNet;
use procwire_benches::core_mem::CorePipe;
use procwire_benches::SMALL;

fn arg(i: usize) -> Option<u64> {
    match std::env::args().nth(i).map(|a| a.parse()) {
        None => None,
        Some(Err(_)) if std::env::args().nth(i).as_deref() == Some("answering") => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            eprintln!("usage: core_callgrind <messages> [idle sessions]");
            std::process::exit(2);
        }
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("timeouts") {
        return timeouts();
    }
    let Some(n) = arg(1) else {
        eprintln!("usage: core_callgrind <messages> [idle sessions]");
        std::process::exit(2);
    };
    let answering = std::env::args().nth(2).as_deref() == Some("answering");
    let took = match arg(2).filter(|_| !answering) {
        Some(k) => IdleNet::new(k as usize, SMALL).run(n),
        None => {
            let mut pipe = match answering {
                true => CorePipe::answering(SMALL),
                false => CorePipe::new(SMALL),
            };
            let (sent0, bytes0) = (pipe.sent(), pipe.wire_bytes());
            let took = pipe.run(n);
            let wire = (pipe.wire_bytes() - bytes0) as f64 / (pipe.sent() - sent0) as f64;
            println!("{wire:.1} B on the wire A->B per message");
            took
        }
    };
    println!(
        "{n} messages of {SMALL} B delivered in order in {:.3} ms",
        took.as_secs_f64() * 1e3
    );
}

fn timeouts() {
    let (Some(rounds), Some(k)) = (arg(2), arg(3)) else {
        eprintln!("usage: core_callgrind timeouts <rounds> <idle sessions>");
        std::process::exit(2);
    };
    let mut net = IdleNet::new(k as usize, SMALL);
    let r = net.timeout_rounds(rounds as usize);
    println!(
        "{rounds} timeout rounds with {k} idle sessions, {} transmits",
        r.transmits
    );
}
