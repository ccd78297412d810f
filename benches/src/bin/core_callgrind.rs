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

use procwire_benches::core_mem::CorePipe;
use procwire_benches::SMALL;

fn main() {
    let n: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: core_callgrind <messages>");
            std::process::exit(2);
        }
    };
    let mut pipe = CorePipe::new(SMALL);
    let (sent0, bytes0) = (pipe.sent(), pipe.wire_bytes());
    let took = pipe.run(n);
    println!(
        "{n} messages of {SMALL} B delivered in order in {:.3} ms; {:.1} B on the wire A->B \
         per message",
        took.as_secs_f64() * 1e3,
        (pipe.wire_bytes() - bytes0) as f64 / (pipe.sent() - sent0) as f64
    );
}
