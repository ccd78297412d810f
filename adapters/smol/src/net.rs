//! The smol [`Runtime`]: `std::time::Instant` and the timer thread's deadlines, tasks on smol's global
//! executor or on one the caller gives, and async-io sockets behind the runtime-neutral
//! byte-stream halves procwire-host's reader and writer tasks use.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::timer::Deadline;
use async_executor::Executor;
use async_io::{Async, Timer as IoTimer};
use futures_io::{AsyncRead, AsyncWrite};
use procwire_core::id::ChannelAddr;
use procwire_core::time::Instant;
use procwire_host::{
    unix_socket_path, BoxFuture, Connection, Runtime, StdListener, TcpSetup, Timer,
};

/// Where a proc's tasks run.
#[derive(Clone)]
enum Spawner {
    /// smol's global executor (`smol::spawn`).
    Global,
    /// An executor the caller runs.
    Executor(Arc<Executor<'static>>),
}

/// Hosts a proc on async-io's reactor, with tasks on a smol executor.
#[derive(Clone)]
pub(crate) struct SmolRuntime {
    spawner: Spawner,
    epoch: std::time::Instant,
}

impl SmolRuntime {
    /// Tasks on smol's global executor.
    pub(crate) fn global() -> Self {
        SmolRuntime {
            spawner: Spawner::Global,
            epoch: std::time::Instant::now(),
        }
    }

    /// Tasks on `executor`.
    pub(crate) fn on(executor: Arc<Executor<'static>>) -> Self {
        SmolRuntime {
            spawner: Spawner::Executor(executor),
            epoch: std::time::Instant::now(),
        }
    }

    fn deadline(&self, at: Instant) -> std::time::Instant {
        self.epoch
            .checked_add(Duration::from_micros(at.as_micros()))
            .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(86_400 * 365))
    }
}

/// A proc's timer: a deadline on the process's timer thread ([`crate::timer`]), so that
/// async-io's reactor holds no timers; an async-io timer only if that thread cannot start.
pub(crate) enum SmolTimer {
    Thread(Deadline, SmolRuntime),
    Io {
        timer: IoTimer,
        rt: SmolRuntime,
        /// Fired since the last reset (async-io's one-shot timer is pending again after
        /// firing; the host's contract is that it stays ready).
        fired: bool,
    },
}

impl Timer for SmolTimer {
    fn reset(&mut self, deadline: Instant) {
        match self {
            SmolTimer::Thread(d, rt) => d.reset(rt.deadline(deadline)),
            SmolTimer::Io { timer, rt, fired } => {
                timer.set_at(rt.deadline(deadline));
                *fired = false;
            }
        }
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            SmolTimer::Thread(d, _) => d.poll_elapsed(cx),
            SmolTimer::Io { timer, fired, .. } => {
                if *fired {
                    return Poll::Ready(());
                }
                ready!(Pin::new(timer).poll(cx));
                *fired = true;
                Poll::Ready(())
            }
        }
    }
}

/// The listeners async-io serves.
pub(crate) enum SmolListener {
    Tcp(Async<TcpListener>),
    Unix(Async<UnixListener>),
}

impl Runtime for SmolRuntime {
    type Timer = SmolTimer;
    type Listener = SmolListener;

    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn timer(&self) -> SmolTimer {
        match Deadline::new() {
            Some(d) => SmolTimer::Thread(d, self.clone()),
            None => SmolTimer::Io {
                timer: IoTimer::never(),
                rt: self.clone(),
                fired: false,
            },
        }
    }

    fn spawn(&self, task: BoxFuture) {
        // Detached: procwire-host tracks and aborts its tasks itself.
        match &self.spawner {
            Spawner::Global => smol::spawn(task).detach(),
            Spawner::Executor(ex) => ex.spawn(task).detach(),
        }
    }

    fn listen(&self, listener: StdListener) -> io::Result<SmolListener> {
        // `Async::new` switches the socket to non-blocking mode.
        match listener {
            StdListener::Tcp(l) => Ok(SmolListener::Tcp(Async::new(l)?)),
            StdListener::Unix(l) => Ok(SmolListener::Unix(Async::new(l)?)),
        }
    }

    async fn accept(&self, listener: &mut SmolListener, tcp: &TcpSetup) -> io::Result<Connection> {
        match listener {
            SmolListener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                tcp.apply(s.get_ref())?;
                Ok(connection(s, peer.to_string()))
            }
            SmolListener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok(connection(s, "unix".to_string()))
            }
        }
    }

    async fn connect(&self, addr: &ChannelAddr, tcp: &TcpSetup) -> io::Result<Connection> {
        match addr {
            ChannelAddr::Tcp(sa) => {
                let s = Async::<TcpStream>::connect(*sa).await?;
                tcp.apply(s.get_ref())?;
                Ok(connection(s, sa.to_string()))
            }
            ChannelAddr::Unix(u) => {
                // async-io connects to a Linux abstract name given as a path with a leading
                // NUL byte, which is what `unix_socket_path` makes of one.
                let s = Async::<UnixStream>::connect(unix_socket_path(u)).await?;
                Ok(connection(s, "unix".to_string()))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr}: local addresses and host names are handled by procwire-host"),
            )),
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        // async-net's resolver: the system resolver on smol's blocking thread pool.
        smol::net::resolve((host, port)).await
    }
}

/// A stream socket whose write direction can be shut down.
trait Socket: Send + Sync + 'static {
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Socket for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Socket for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

fn connection<T>(s: Async<T>, peer: String) -> Connection
where
    T: Socket + std::os::fd::AsFd,
    for<'a> &'a T: Read + Write,
{
    let s = Arc::new(s);
    Connection {
        reader: Box::new(Half::new(s.clone())),
        writer: Box::new(Half::new(s)),
        peer,
    }
}

/// One half of a socket shared by its reader and writer tasks (async-io reads and writes
/// through `&Async<T>`, so the halves need no lock).
struct Half<T> {
    io: Arc<Async<T>>,
    /// The last read came back short of the buffer: the socket is most likely empty.
    drained: bool,
    /// The last write took less than it was given: the socket is most likely full.
    full: bool,
}

impl<T> Half<T> {
    fn new(io: Arc<Async<T>>) -> Self {
        Half {
            io,
            drained: false,
            full: false,
        }
    }
}

/// Reads as async-io does (a `read`, and on `WouldBlock` a wait for readiness), except that
/// after a read that came back short of the buffer the next one waits for readiness first,
/// as tokio does. async-io alone asks the kernel twice more before it waits (the readiness
/// event that led to the short read is still pending, so the first wait returns at once):
/// in a one-thread round trip between two procs that was 6 `recvfrom` calls where 2 do.
/// No wake-up is lost: readiness is registered in one-shot mode, and registering checks
/// the socket as it is then, so bytes that came after the short read are reported.
impl<T> AsyncRead for Half<T>
where
    for<'a> &'a T: Read,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.drained {
            ready!(this.io.poll_readable(cx))?;
            this.drained = false;
        }
        let res = ready!(Pin::new(&mut &*this.io).poll_read(cx, buf));
        if let Ok(n) = res {
            if n > 0 && n < buf.len() {
                this.drained = true;
                // Take the readiness event that led here, so the next wait registers
                // interest instead of returning at once. An error shows up on that wait.
                let _ = this.io.poll_readable(cx);
            }
        }
        Poll::Ready(res)
    }
}

impl<T> Half<T>
where
    for<'a> &'a T: Write,
{
    /// Writes as async-io does, except that after a write that took less than it was given
    /// the next one waits for writability first, as tokio does: the socket is full, and
    /// asking the kernel again would only be told so (the reads' `drained`, for writes).
    fn write(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        op: impl FnOnce(&mut &Async<T>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.full {
            ready!(self.io.poll_writable(cx))?;
            self.full = false;
        }
        let res = ready!(op(&mut &*self.io, cx));
        if let Ok(n) = res {
            if n > 0 && n < len {
                self.full = true;
                // As for reads: take the event that led here, so the next wait registers.
                let _ = self.io.poll_writable(cx);
            }
        }
        Poll::Ready(res)
    }
}

impl<T: Socket> AsyncWrite for Half<T>
where
    for<'a> &'a T: Write,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.write(cx, buf.len(), |io, cx| Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len = bufs.iter().map(|b| b.len()).sum();
        this.write(cx, len, |io, cx| Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut &*self.io).poll_flush(cx))?;
        // The peer sees end-of-stream. A peer that is already gone is not an error here.
        match self.io.get_ref().shutdown_write() {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{future, AsyncReadExt};
    use std::future::poll_fn;

    #[test]
    fn halves_write_vectored_and_shut_down() {
        future::block_on(async {
            let (conn, mut b) = wired();
            let mut w = conn.writer;
            let mut sent = 0;
            while sent < 11 {
                let rest: Vec<IoSlice<'_>> = if sent < 6 {
                    vec![IoSlice::new(&b"hello "[sent..]), IoSlice::new(b"world")]
                } else {
                    vec![IoSlice::new(&b"world"[sent - 6..])]
                };
                sent += poll_fn(|cx| Pin::new(&mut w).poll_write_vectored(cx, &rest))
                    .await
                    .expect("write");
            }
            poll_fn(|cx| Pin::new(&mut w).poll_close(cx))
                .await
                .expect("close");
            let mut got = String::new();
            b.read_to_string(&mut got).await.expect("read to end");
            assert_eq!(got, "hello world");
        });
    }

    /// A connection's halves over one end of a Unix socket pair, and the other end.
    fn wired() -> (Connection, Async<UnixStream>) {
        let (a, b) = UnixStream::pair().expect("pair");
        let conn = connection(Async::new(a).expect("async a"), "test".to_string());
        (conn, Async::new(b).expect("async b"))
    }

    /// `f`'s output, or `None` if it takes more than 5 s.
    async fn in_time<T>(f: impl Future<Output = T>) -> Option<T> {
        let done = async { Some(f.await) };
        let late = async {
            IoTimer::after(Duration::from_secs(5)).await;
            None
        };
        future::or(done, late).await
    }

    #[test]
    fn a_short_read_waits_for_readiness_and_loses_no_bytes() {
        async_io::block_on(async {
            let (conn, mut b) = wired();
            let mut r = conn.reader;
            let mut buf = [0u8; 64];
            futures_lite::AsyncWriteExt::write_all(&mut b, b"abc")
                .await
                .expect("write");
            let n = poll_fn(|cx| Pin::new(&mut r).poll_read(cx, &mut buf))
                .await
                .expect("read");
            assert_eq!(&buf[..n], b"abc");
            // Short: the next read waits for readiness first, and reports nothing yet.
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(Pin::new(&mut r).poll_read(&mut cx, &mut buf).is_pending());
            // Bytes that come after the short read are still reported and read.
            futures_lite::AsyncWriteExt::write_all(&mut b, b"defg")
                .await
                .expect("write");
            let n = in_time(poll_fn(|cx| Pin::new(&mut r).poll_read(cx, &mut buf)))
                .await
                .expect("the reader is woken for the bytes")
                .expect("read");
            assert_eq!(&buf[..n], b"defg");
            // A read that fills the buffer reads again at once.
            let big = [7u8; 100];
            futures_lite::AsyncWriteExt::write_all(&mut b, &big)
                .await
                .expect("write");
            let mut got = 0;
            while got < big.len() {
                got += poll_fn(|cx| Pin::new(&mut r).poll_read(cx, &mut buf))
                    .await
                    .expect("read");
            }
            assert_eq!(got, big.len());
            drop(b);
            let n = poll_fn(|cx| Pin::new(&mut r).poll_read(cx, &mut buf))
                .await
                .expect("eof");
            assert_eq!(n, 0, "end of stream");
        });
    }

    #[test]
    fn after_a_short_write_the_writer_is_woken_for_room_and_loses_no_bytes() {
        async_io::block_on(async {
            let (conn, mut b) = wired();
            let mut w = conn.writer;
            // Write until the socket takes less than it is given.
            let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
            let mut sent = Vec::new();
            loop {
                let n = poll_fn(|cx| Pin::new(&mut w).poll_write(cx, &chunk))
                    .await
                    .expect("write");
                sent.extend_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    break;
                }
            }
            // The next write waits for writability (whether it is pending at once depends on
            // when async-io's reactor, which may run on its own thread, sees the room made
            // below, so that is not asserted): it is woken for the room and writes, and
            // nothing is lost or repeated.
            let mut got = vec![0u8; sent.len()];
            let mut at = 0;
            while at < 64 * 1024 {
                at += b.read(&mut got[at..]).await.expect("read");
            }
            let n = in_time(poll_fn(|cx| Pin::new(&mut w).poll_write(cx, b"tail")))
                .await
                .expect("the writer is woken for the room")
                .expect("write");
            assert_eq!(n, 4);
            sent.extend_from_slice(b"tail");
            drop(w);
            got.resize(sent.len(), 0);
            b.read_exact(&mut got[at..]).await.expect("read the rest");
            assert!(got == sent, "the bytes arrive as written");
        });
    }

    #[test]
    fn timer_fires_only_once_armed_and_stays_ready() {
        future::block_on(async {
            let rt = SmolRuntime::global();
            let mut t = rt.timer();
            let idle = future::or(
                async {
                    poll_fn(|cx| t.poll_elapsed(cx)).await;
                    false
                },
                async {
                    IoTimer::after(Duration::from_millis(30)).await;
                    true
                },
            )
            .await;
            assert!(idle, "an unarmed timer never fires");
            t.reset(rt.now().saturating_add(Duration::from_millis(10).into()));
            poll_fn(|cx| t.poll_elapsed(cx)).await;
            poll_fn(|cx| t.poll_elapsed(cx)).await;
        });
    }
}
