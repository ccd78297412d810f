//! The tokio [`Runtime`]: tokio's clock and timers, tasks on the current runtime, and tokio
//! sockets behind the runtime-neutral byte-stream halves procwire-host's reader and writer
//! tasks use.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use procwire_core::id::ChannelAddr;
use procwire_core::time::Instant;
use procwire_host::{
    unix_socket_path, BoxFuture, Connection, Runtime, StdListener, TcpSetup, Timer,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Hosts a proc on the tokio runtime it was started in.
#[derive(Clone)]
pub(crate) struct TokioRuntime {
    handle: tokio::runtime::Handle,
    epoch: tokio::time::Instant,
}

impl TokioRuntime {
    /// A handle on the current tokio runtime; panics outside one (as tokio's own
    /// constructors do).
    pub(crate) fn current() -> Self {
        TokioRuntime {
            handle: tokio::runtime::Handle::current(),
            epoch: tokio::time::Instant::now(),
        }
    }

    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.epoch
            .checked_add(Duration::from_micros(at.as_micros()))
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365))
    }
}

/// A tokio `Sleep`, re-armed in place.
pub(crate) struct TokioTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    epoch: TokioRuntime,
    armed: bool,
}

impl Timer for TokioTimer {
    fn reset(&mut self, deadline: Instant) {
        let at = self.epoch.deadline(deadline);
        self.sleep.as_mut().reset(at);
        self.armed = true;
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            return Poll::Pending;
        }
        self.sleep.as_mut().poll(cx)
    }
}

/// The listeners tokio serves.
pub(crate) enum TokioListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Runtime for TokioRuntime {
    type Timer = TokioTimer;
    type Listener = TokioListener;

    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn timer(&self) -> TokioTimer {
        // A proc's futures (a shutdown, a timeout) may be polled off the runtime's threads.
        let _guard = self.handle.enter();
        TokioTimer {
            sleep: Box::pin(tokio::time::sleep_until(self.epoch)),
            epoch: self.clone(),
            armed: false,
        }
    }

    fn spawn(&self, task: BoxFuture) {
        // Detached: procwire-host tracks and aborts its tasks itself.
        drop(self.handle.spawn(task));
    }

    fn listen(&self, listener: StdListener) -> io::Result<TokioListener> {
        let _guard = self.handle.enter();
        match listener {
            StdListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Ok(TokioListener::Tcp(TcpListener::from_std(l)?))
            }
            StdListener::Unix(l) => {
                l.set_nonblocking(true)?;
                Ok(TokioListener::Unix(UnixListener::from_std(l)?))
            }
        }
    }

    async fn accept(&self, listener: &mut TokioListener, tcp: &TcpSetup) -> io::Result<Connection> {
        match listener {
            TokioListener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                tcp.apply(&s)?;
                Ok(tcp_connection(s, peer.to_string()))
            }
            TokioListener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok(unix_connection(s))
            }
        }
    }

    async fn connect(&self, addr: &ChannelAddr, tcp: &TcpSetup) -> io::Result<Connection> {
        match addr {
            ChannelAddr::Tcp(sa) => {
                let s = TcpStream::connect(sa).await?;
                tcp.apply(&s)?;
                Ok(tcp_connection(s, sa.to_string()))
            }
            ChannelAddr::Unix(u) => Ok(unix_connection(
                UnixStream::connect(unix_socket_path(u)).await?,
            )),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr}: local addresses and host names are handled by procwire-host"),
            )),
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

fn tcp_connection(s: TcpStream, peer: String) -> Connection {
    let (r, w) = s.into_split();
    Connection {
        reader: Box::new(Compat(r)),
        writer: Box::new(Compat(w)),
        peer,
    }
}

fn unix_connection(s: UnixStream) -> Connection {
    let (r, w) = s.into_split();
    Connection {
        reader: Box::new(Compat(r)),
        writer: Box::new(Compat(w)),
        peer: "unix".to_string(),
    }
}

/// A tokio stream half seen through the `futures-io` traits.
struct Compat<T>(T);

impl<T: AsyncRead + Unpin> futures_io::AsyncRead for Compat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    }
}

impl<T: AsyncWrite + Unpin> futures_io::AsyncWrite for Compat<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shuts the write direction down: the peer sees end-of-stream.
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_io::AsyncWrite as _;
    use std::future::poll_fn;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn compat_writes_vectored_and_shuts_down() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let (_r, w) = a.into_split();
        let mut w = Compat(w);
        let mut n = 0;
        while n < 11 {
            let rest: Vec<IoSlice<'_>> = if n < 6 {
                vec![IoSlice::new(&b"hello "[n..]), IoSlice::new(b"world")]
            } else {
                vec![IoSlice::new(&b"world"[n - 6..])]
            };
            n += poll_fn(|cx| Pin::new(&mut w).poll_write_vectored(cx, &rest))
                .await
                .expect("write");
        }
        poll_fn(|cx| Pin::new(&mut w).poll_close(cx))
            .await
            .expect("close");
        let mut got = String::new();
        b.read_to_string(&mut got).await.expect("read to end");
        assert_eq!(got, "hello world");
    }

    #[tokio::test]
    async fn timer_fires_only_once_armed() {
        let rt = TokioRuntime::current();
        let mut t = rt.timer();
        let idle =
            tokio::time::timeout(Duration::from_millis(30), poll_fn(|cx| t.poll_elapsed(cx))).await;
        assert!(idle.is_err(), "an unarmed timer never fires");
        t.reset(rt.now().saturating_add(Duration::from_millis(10).into()));
        tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| t.poll_elapsed(cx)))
            .await
            .expect("armed timer fires");
    }
}
