//! Round trips of 64 B in one thread, one by one, with their distribution: procwire's echo
//! actor, the raw echo over one connection (the report's baseline), and a raw echo over two
//! connections, one each way (what a link cost before two-way links).
//!
//! `cargo run --release -p procwire-benches --example rtt_modes -- [tcp|unix] [all|procwire|raw|raw2] [N]`
//!
//! With one mode and a large N it is also the workload to count syscalls or instructions
//! of one side alone (`perf stat -e 'syscalls:sys_enter_*'`, `valgrind --tool=callgrind`
//! over two values of N, differenced).

use std::time::{Duration, Instant};

use procwire_benches::raw::RawBench;
use procwire_benches::wire::ProcwireBench;
use procwire_benches::{runtime, Error, Net, SMALL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// Percentiles and mean of `v`, in µs.
fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let n = v.len();
    let at = |p: f64| v[((n - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / n as f64 * 1e6;
    format!(
        "p10 {:.2}  p30 {:.2}  p50 {:.2}  p70 {:.2}  p90 {:.2}  mean {:.2} µs",
        at(0.1),
        at(0.3),
        at(0.5),
        at(0.7),
        at(0.9),
        mean
    )
}

type Stream = Box<dyn Duplex>;
trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Duplex for T {}

/// Two connected ends.
async fn pair(net: Net) -> Result<(Stream, Stream), Error> {
    match net {
        Net::Unix => {
            let (a, b) = UnixStream::pair()?;
            Ok((Box::new(a), Box::new(b)))
        }
        Net::Tcp => {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            let addr = l.local_addr()?;
            let (a, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
            let (a, b) = (a?, accepted?.0);
            procwire_benches::tcp_setup().apply(&a)?;
            procwire_benches::tcp_setup().apply(&b)?;
            Ok((Box::new(a), Box::new(b)))
        }
    }
}

/// The raw echo over two connections: requests go out on one, replies come back on the
/// other. Returns the client's two ends.
async fn two_way_echo(net: Net) -> Result<(Stream, Stream), Error> {
    let (out, mut far_in) = pair(net).await?;
    let (mut far_out, back) = pair(net).await?;
    tokio::spawn(async move {
        let mut buf = [0u8; SMALL + 4];
        while far_in.read_exact(&mut buf).await.is_ok() {
            if far_out.write_all(&buf).await.is_err() {
                return;
            }
        }
    });
    Ok((out, back))
}

async fn run(net: Net, mode: &str, n: usize) -> Result<(), Error> {
    let (mut out, mut back) = two_way_echo(net).await?;
    let mut raw = RawBench::new(net).await?;
    let mut procwire = ProcwireBench::new(net).await?;
    let (msg, mut buf) = ([7u8; SMALL + 4], [0u8; SMALL + 4]);
    for _ in 0..3 {
        if matches!(mode, "all" | "raw") {
            let mut v = Vec::with_capacity(n);
            raw.round_trip_times(n, &mut v).await?;
            println!("raw, one connection    {}", summary(v));
        }
        if matches!(mode, "all" | "raw2") {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                out.write_all(&msg).await?;
                back.read_exact(&mut buf).await?;
                v.push(t.elapsed());
            }
            println!("raw, two connections   {}", summary(v));
        }
        if matches!(mode, "all" | "procwire") {
            let mut v = Vec::with_capacity(n);
            procwire.round_trip_times(n, &mut v).await?;
            println!("procwire               {}", summary(v));
        }
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let net = match args.next().as_deref() {
        Some("unix") => Net::Unix,
        _ => Net::Tcp,
    };
    let mode = args.next().unwrap_or_else(|| "all".into());
    let n = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    runtime().block_on(run(net, &mode, n))
}
