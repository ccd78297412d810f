//! # procwire-benches
//!
//! The scenarios behind procwire's speed figures, shared by the criterion benches
//! (`benches/codec.rs`, `benches/transport.rs`) and the report binary (`src/bin/report.rs`),
//! so that both measure exactly the same code.
//!
//! Every procwire scenario has a raw-socket twin that does the same job with the least code
//! a careful programmer would write (a 4-byte length prefix, buffered reads), run in the
//! same process, on the same runtime and in the same topology. Figures are only ever read
//! as a ratio to that twin.
//!
//! * [`codec`]: procwire-core's envelope and frame codecs without sockets, against the same
//!   bytes written and read back through a std `UnixStream::pair()` in one thread.
//! * [`wire`]: two procwire procs in one process, on procwire-tokio (a current-thread
//!   runtime) or procwire-smol (one `async_executor::Executor` run by one thread).
//! * [`raw`]: the raw tokio `UnixStream` / `TcpStream` baselines for [`wire`] on tokio.
//! * [`raw_smol`]: the same baselines on async-io sockets, for [`wire`] on smol.
//! * [`core_mem`]: procwire-core alone, two procs wired in memory on one thread with a
//!   fake clock, against a memcpy of the same wire bytes ([`core_mem::MemcpyTwin`]).
//! * [`core_idle`]: the same busy link beside thousands of idle sessions, and the cost of
//!   a timeout round as the number of sessions grows.
//! * [`mesh`]: many peers, K procwire-tokio procs in one process, all connected: memory,
//!   idle CPU, and a busy pair beside the idle mesh against the pair alone.
//! * [`alloc_count`]: a counting global allocator for allocations per message.
//! * [`json`]: the report's machine-readable rows.
//!
//! The tokio transport scenarios run on one current-thread tokio runtime ([`runtime`]), the
//! smol ones on one executor ([`smol_executor`]) run by the measuring thread
//! ([`smol_block_on`]): one OS thread drives both ends, so no figure includes a cross-CPU
//! wake-up (async-io keeps a helper thread that may poll the reactor while the measuring
//! thread is busy; it used about 2 % of the measuring thread's CPU time in a pipelined run).
//!
//! Each measuring function does a fixed amount of work and returns the time it took, which
//! is what criterion's `iter_custom` wants and what the report takes medians of.

pub mod alloc_count;
pub mod codec;
pub mod core_idle;
pub mod core_mem;
pub mod json;
pub mod mesh;
pub mod raw;
pub mod raw_smol;
pub mod wire;

use std::fmt;

/// Payload of a "small" message, in bytes.
pub const SMALL: usize = 64;
/// Messages in one pipelined burst.
pub const PIPELINE_N: usize = 10_000;
/// Payload of a bulk message, in bytes (1 MiB).
pub const BULK: usize = 1 << 20;
/// Bulk messages in one burst (16 MiB).
pub const BULK_BURST: usize = 16;

/// Error of a scenario (setup or a failed send/receive); benches stop on it.
pub type Error = Box<dyn std::error::Error>;

/// Which socket family a transport scenario runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// Unix stream sockets (an abstract name for procwire, `UnixStream::pair` for raw).
    Unix,
    /// TCP over 127.0.0.1, set up on both sides as procwire's default options set up a
    /// connection to this host ([`tcp_setup`]).
    Tcp,
}

impl Net {
    /// Both, in report order.
    pub const ALL: [Net; 2] = [Net::Unix, Net::Tcp];
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Net::Unix => "unix",
            Net::Tcp => "tcp",
        })
    }
}

/// The single-threaded executor the smol scenarios run on: every task of both procs (and
/// of the raw baseline) is spawned on it, and the measuring thread runs it with
/// [`smol_block_on`].
pub fn smol_executor() -> std::sync::Arc<async_executor::Executor<'static>> {
    std::sync::Arc::new(async_executor::Executor::new())
}

/// Runs `fut` on the current thread while running `executor`'s tasks there too (and
/// async-io's reactor), so one thread drives everything.
pub fn smol_block_on<T>(
    executor: &async_executor::Executor<'static>,
    fut: impl std::future::Future<Output = T>,
) -> T {
    async_io::block_on(executor.run(fut))
}

/// How the raw baselines set their TCP streams up: as a procwire proc with default options
/// sets up its own (`TCP_NODELAY`, and the congestion control of
/// `ProcOptions::same_host_tcp_congestion`, since every benchmark connection is on this
/// host), so both sides of a comparison run the same kernel path.
pub fn tcp_setup() -> procwire_tokio::TcpSetup {
    procwire_tokio::ProcOptions::default().tcp_setup()
}

/// The runtime every tokio transport scenario runs on: tokio's current-thread runtime, so one
/// thread drives both ends (the topology all figures are stated for).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("build a current-thread tokio runtime")
}

/// A payload of `len` bytes with a recognisable pattern.
pub fn payload(len: usize) -> bytes::Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}
