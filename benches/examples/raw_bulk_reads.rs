//! Raw TCP bulk in one thread (16 × 1 MiB per burst, 8 bursts per figure, ten figures after
//! two warm-ups), read two ways: each message with `read_exact` straight into one reused
//! buffer, or (`split K`) first whatever is there into a K KiB buffer, copied, then the rest
//! of the message with `read_exact`, which is what a reader that does not know the next
//! message's size in advance does (procwire's reader, and the report's raw baseline through
//! its `BufReader`). On this VM both ways land in one of two regimes (about 3.5–4.5 or
//! 7–9 GB/s) that change from one start to the next: the swing of the report's raw TCP
//! bulk baseline.
//!
//! `cargo run --release -p procwire-benches --example raw_bulk_reads -- [exact | split K]`

use std::time::Instant;

use procwire_benches::{runtime, Error, BULK, BULK_BURST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn run(first: Option<usize>) -> Result<(), Error> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let (w, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
    let (mut w, mut r) = (w?, accepted?.0);
    procwire_benches::tcp_setup().apply(&w)?;
    procwire_benches::tcp_setup().apply(&r)?;
    let payload = vec![7u8; BULK];
    let mut body = vec![0u8; BULK];
    let mut scratch = vec![0u8; first.unwrap_or(0).min(BULK)];
    for round in 0..12 {
        let t = Instant::now();
        for _ in 0..8 {
            let send = async {
                for _ in 0..BULK_BURST {
                    w.write_all(&payload).await?;
                }
                Ok::<_, std::io::Error>(())
            };
            let recv = async {
                for _ in 0..BULK_BURST {
                    let mut have = 0;
                    if first.is_some() {
                        let n = r.read(&mut scratch).await?;
                        body[..n].copy_from_slice(&scratch[..n]);
                        have = n;
                    }
                    r.read_exact(&mut body[have..]).await?;
                }
                Ok::<_, std::io::Error>(())
            };
            let (s, r) = tokio::join!(send, recv);
            s?;
            r?;
        }
        let mib_s = (8 * BULK_BURST * BULK) as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64;
        if round >= 2 {
            print!("{mib_s:.0} ");
        }
    }
    println!("MiB/s");
    Ok(())
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let first = match args.next().as_deref() {
        Some("split") => Some(args.next().and_then(|k| k.parse().ok()).unwrap_or(64) * 1024),
        _ => None,
    };
    runtime().block_on(run(first))
}
