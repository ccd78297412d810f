//! The raw-socket baselines: the three transport patterns over bare tokio sockets.
//!
//! Framing is a 4-byte little-endian length followed by the payload. Readers go through a
//! 64 KiB `BufReader` (one `read` syscall per batch of small frames, as procwire's reader
//! does); the pipelined writer goes through a 64 KiB `BufWriter` (procwire coalesces small
//! frames into writes of up to 64 KiB); round-trip requests are written as one buffer and
//! flushed at once. Every frame is read exactly (length, then payload), so the baseline does
//! the work a minimal protocol must do and nothing more.
//!
//! Two connections per baseline:
//! * an echo connection, whose far end is a spawned task that reads a frame and writes it
//!   back (procwire: an echo actor);
//! * a one-way connection for the pipelined and bulk patterns, whose reading end the
//!   measuring task drains concurrently with the writes (`tokio::join!` in one task).

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream, UnixStream};

use crate::{Error, Net, BULK, BULK_BURST, PIPELINE_N, SMALL};

type Reader = BufReader<Box<dyn AsyncRead + Send + Unpin>>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

const BUF: usize = 64 * 1024;

async fn stream_pair(net: Net) -> io::Result<((Reader, Writer), (Reader, Writer))> {
    fn halves<R, W>(r: R, w: W) -> (Reader, Writer)
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        (BufReader::with_capacity(BUF, Box::new(r)), Box::new(w))
    }
    match net {
        Net::Unix => {
            let (a, b) = UnixStream::pair()?;
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            Ok((halves(ar, aw), halves(br, bw)))
        }
        Net::Tcp => {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            let addr = l.local_addr()?;
            let (a, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
            let (a, (b, _)) = (a?, accepted?);
            crate::tcp_setup().apply(&a)?;
            crate::tcp_setup().apply(&b)?;
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            Ok((halves(ar, aw), halves(br, bw)))
        }
    }
}

/// Reads one length-prefixed frame into `buf` (resized to the frame). `Ok(false)` on a
/// clean end of stream before a frame starts.
async fn read_frame(r: &mut Reader, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
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

/// Raw sockets doing what [`crate::wire::ProcwireBench`] does.
pub struct RawBench {
    net: Net,
    echo_r: Reader,
    echo_w: Writer,
    oneway_w: BufWriter<Writer>,
    oneway_r: Reader,
    small: Vec<u8>,
    bulk: Vec<u8>,
    rbuf: Vec<u8>,
}

impl RawBench {
    /// Connects both pairs and starts the echo task (on the current runtime).
    pub async fn new(net: Net) -> Result<Self, Error> {
        let ((echo_r, echo_w), (far_r, far_w)) = stream_pair(net).await?;
        tokio::spawn(echo(far_r, far_w));
        let ((_, oneway_w), (oneway_r, _)) = stream_pair(net).await?;
        let mut b = RawBench {
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

    /// `n` round trips of a 64-byte payload through the echo task.
    pub async fn round_trips(&mut self, n: u64) -> Result<Duration, Error> {
        let t = Instant::now();
        for _ in 0..n {
            self.echo_w.write_all(&self.small).await?;
            if !read_frame(&mut self.echo_r, &mut self.rbuf).await? {
                return Err("echo connection closed".into());
            }
            debug_assert_eq!(self.rbuf.len(), SMALL);
        }
        Ok(t.elapsed())
    }

    /// `n` round trips like [`RawBench::round_trips`], each one timed into `out` (for
    /// percentiles).
    pub async fn round_trip_times(
        &mut self,
        n: usize,
        out: &mut Vec<Duration>,
    ) -> Result<(), Error> {
        for _ in 0..n {
            let t = Instant::now();
            self.echo_w.write_all(&self.small).await?;
            if !read_frame(&mut self.echo_r, &mut self.rbuf).await? {
                return Err("echo connection closed".into());
            }
            out.push(t.elapsed());
        }
        Ok(())
    }

    /// `bursts` bursts of [`PIPELINE_N`] 64-byte messages one way, each until all are read.
    pub async fn pipelined(&mut self, bursts: u64) -> Result<Duration, Error> {
        let RawBench {
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
        let RawBench {
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

/// `bursts` bursts of `count` messages one way, each message written as `parts` (a framed
/// message, possibly in pieces), each burst timed until every message has been read.
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
        let (s, r) = tokio::join!(send, recv);
        s?;
        r?;
    }
    Ok(t.elapsed())
}
