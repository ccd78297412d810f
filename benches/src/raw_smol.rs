//! The raw-socket baselines on smol: the patterns of [`crate::raw`] over bare async-io
//! sockets, driven by the same single-threaded executor as the procwire-smol procs they are
//! compared with.
//!
//! Framing, buffering and connections are as in [`crate::raw`]: a 4-byte little-endian
//! length, 64 KiB buffered reads, a 64 KiB buffered writer for the one-way patterns, an
//! echo task (spawned on the executor) for round trips, TCP streams set up by
//! [`crate::tcp_setup`].

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_io::Async;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

use crate::{Error, Net, BULK, BULK_BURST, PIPELINE_N, SMALL};

type Reader = BufReader<Pin<Box<dyn AsyncRead + Send>>>;
type Writer = Pin<Box<dyn AsyncWrite + Send>>;

const BUF: usize = 64 * 1024;

fn halves<S>(s: Async<S>) -> (Reader, Writer)
where
    for<'a> &'a Async<S>: AsyncRead + AsyncWrite,
    S: Send + Sync + 'static,
{
    let s = Arc::new(s);
    let r: Pin<Box<dyn AsyncRead + Send>> = Box::pin(ArcIo(s.clone()));
    let w: Writer = Box::pin(ArcIo(s));
    (BufReader::with_capacity(BUF, r), w)
}

/// A shared async-io socket usable as both halves (reads and writes go through `&Async`).
struct ArcIo<S>(Arc<Async<S>>);

impl<S> AsyncRead for ArcIo<S>
where
    for<'a> &'a Async<S>: AsyncRead,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for ArcIo<S>
where
    for<'a> &'a Async<S>: AsyncWrite,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_close(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

async fn stream_pair(net: Net) -> io::Result<((Reader, Writer), (Reader, Writer))> {
    match net {
        Net::Unix => {
            let (a, b) = UnixStream::pair()?;
            Ok((halves(Async::new(a)?), halves(Async::new(b)?)))
        }
        Net::Tcp => {
            let l = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
            let addr = l.get_ref().local_addr()?;
            let (a, accepted) =
                futures_lite::future::zip(Async::<TcpStream>::connect(addr), l.accept()).await;
            let (a, (b, _)) = (a?, accepted?);
            crate::tcp_setup().apply(a.get_ref())?;
            crate::tcp_setup().apply(b.get_ref())?;
            Ok((halves(a), halves(b)))
        }
    }
}

/// Reads one length-prefixed frame into `buf`. `Ok(false)` on a clean end of stream.
async fn read_frame(r: &mut Reader, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    buf.resize(u32::from_le_bytes(len) as usize, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

/// Reads frames and writes each straight back, until the other end closes.
async fn echo(mut r: Reader, mut w: Writer) {
    let mut buf = Vec::with_capacity(SMALL);
    let mut out = Vec::with_capacity(SMALL + 4);
    while let Ok(true) = read_frame(&mut r, &mut buf).await {
        out.clear();
        out.extend_from_slice(&(buf.len() as u32).to_le_bytes());
        out.extend_from_slice(&buf);
        if w.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Raw async-io sockets doing what [`crate::wire::ProcwireBench`] does on smol.
pub struct RawSmolBench {
    net: Net,
    echo_r: Reader,
    echo_w: Writer,
    oneway_w: BufWriter<Writer>,
    oneway_r: Reader,
    small: Vec<u8>,
    bulk: Vec<u8>,
    rbuf: Vec<u8>,
}

impl RawSmolBench {
    /// Connects both pairs and spawns the echo task on `executor`.
    pub async fn new(net: Net, executor: &Arc<Executor<'static>>) -> Result<Self, Error> {
        let ((echo_r, echo_w), (far_r, far_w)) = stream_pair(net).await?;
        executor.spawn(echo(far_r, far_w)).detach();
        let ((_, oneway_w), (oneway_r, _)) = stream_pair(net).await?;
        let mut b = RawSmolBench {
            net,
            echo_r,
            echo_w,
            oneway_w: BufWriter::with_capacity(BUF, oneway_w),
            oneway_r,
            small: frame(&crate::payload(SMALL)),
            bulk: crate::payload(BULK).to_vec(),
            rbuf: Vec::with_capacity(BULK),
        };
        b.round_trips(16).await?;
        Ok(b)
    }

    /// The socket family.
    pub fn net(&self) -> Net {
        self.net
    }

    async fn round_trip(&mut self) -> Result<(), Error> {
        self.echo_w.write_all(&self.small).await?;
        if !read_frame(&mut self.echo_r, &mut self.rbuf).await? {
            return Err("echo connection closed".into());
        }
        Ok(())
    }

    /// `n` round trips of a 64-byte payload through the echo task.
    pub async fn round_trips(&mut self, n: u64) -> Result<Duration, Error> {
        let t = Instant::now();
        for _ in 0..n {
            self.round_trip().await?;
        }
        Ok(t.elapsed())
    }

    /// `n` round trips, each one timed into `out`.
    pub async fn round_trip_times(
        &mut self,
        n: usize,
        out: &mut Vec<Duration>,
    ) -> Result<(), Error> {
        for _ in 0..n {
            let t = Instant::now();
            self.round_trip().await?;
            out.push(t.elapsed());
        }
        Ok(())
    }

    /// `bursts` bursts of [`PIPELINE_N`] 64-byte messages one way, each until all are read.
    pub async fn pipelined(&mut self, bursts: u64) -> Result<Duration, Error> {
        let RawSmolBench {
            oneway_w,
            oneway_r,
            small,
            rbuf,
            ..
        } = self;
        one_way(oneway_w, oneway_r, rbuf, bursts, PIPELINE_N, &[small]).await
    }

    /// `bursts` bursts of [`BULK_BURST`] 1 MiB messages one way, each until all are read.
    pub async fn bulk(&mut self, bursts: u64) -> Result<Duration, Error> {
        let RawSmolBench {
            oneway_w,
            oneway_r,
            bulk,
            rbuf,
            ..
        } = self;
        let len = (bulk.len() as u32).to_le_bytes();
        one_way(oneway_w, oneway_r, rbuf, bursts, BULK_BURST, &[&len, bulk]).await
    }
}

/// `bursts` bursts of `count` messages one way (each written as `parts`), each burst timed
/// until every message has been read; writer and reader run concurrently in one task.
async fn one_way(
    w: &mut BufWriter<Writer>,
    r: &mut Reader,
    rbuf: &mut Vec<u8>,
    bursts: u64,
    count: usize,
    parts: &[&[u8]],
) -> Result<Duration, Error> {
    let t = Instant::now();
    for _ in 0..bursts {
        let send = async {
            for _ in 0..count {
                for p in parts {
                    w.write_all(p).await?;
                }
            }
            w.flush().await
        };
        let recv = async {
            for _ in 0..count {
                if !read_frame(r, rbuf).await? {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Ok::<_, io::Error>(())
        };
        let (s, r) = futures_lite::future::zip(send, recv).await;
        s?;
        r?;
    }
    Ok(t.elapsed())
}
