//! What an adapter supplies: the [`Runtime`] trait, and the types it trades in.
//!
//! procwire-host runs everything else (the engine around core's machine, the listener loop,
//! the single timer, dialing, per-connection reader and writer tasks, task bookkeeping,
//! shutdown, and the in-process `local` transport). An adapter only says how to read a
//! clock, arm a timer, spawn a task, and turn sockets into async byte streams.
//!
//! Byte streams are [`futures_io::AsyncRead`] / [`futures_io::AsyncWrite`] halves, the
//! runtime-neutral traits that smol's `Async<T>` implements directly; the tokio adapter wraps
//! its stream halves in a small shim.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::pin::Pin;
use std::task::{Context, Poll};

use procwire_core::id::ChannelAddr;
use procwire_core::time::Instant;

/// A boxed, sendable task body.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The read half of a connection.
pub type Reader = Box<dyn futures_io::AsyncRead + Send + Unpin>;

/// The write half of a connection. `poll_write_vectored` should gather all the slices it is
/// given (up to 64 queued buffers at once). It is called from the connection's writer task
/// and, with that task's waker, from tasks running engine turns. `poll_close` should
/// flush and then shut the write direction down so the peer sees end-of-stream.
pub type Writer = Box<dyn futures_io::AsyncWrite + Send + Unpin>;

/// A connected byte stream, split into halves that live on separate tasks.
pub struct Connection {
    /// Bytes from the peer.
    pub reader: Reader,
    /// Bytes to the peer.
    pub writer: Writer,
    /// A description of the peer for logs (`127.0.0.1:5000`, `unix`, ...).
    pub peer: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.peer)
    }
}

/// How a runtime sets up each TCP stream it dials or accepts for a proc
/// ([`Runtime::connect`], [`Runtime::accept`]): `TCP_NODELAY` on every stream, and on a
/// stream whose two ends are on this host, the congestion control named by
/// [`ProcOptions::same_host_tcp_congestion`](crate::ProcOptions::same_host_tcp_congestion)
/// (Linux only). Made from a proc's options; cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpSetup {
    congestion: Option<std::sync::Arc<str>>,
}

impl TcpSetup {
    /// `TCP_NODELAY` on every stream, and congestion control `congestion` (if any) on
    /// streams to this host.
    pub fn new(congestion: Option<&str>) -> Self {
        TcpSetup {
            congestion: congestion.map(Into::into),
        }
    }

    /// The congestion control set on streams to this host, if any.
    pub fn congestion(&self) -> Option<&str> {
        self.congestion.as_deref()
    }

    /// Sets `stream` up: `TCP_NODELAY` (an error if the OS refuses it), then, if both its
    /// ends are on this host, the congestion control. A congestion control the OS refuses
    /// leaves the stream with the system's and is logged at `debug` (procs check the name
    /// when they start: [`TcpSetup::check`]).
    pub fn apply(&self, stream: &impl AsFd) -> io::Result<()> {
        let s = socket2::SockRef::from(stream);
        s.set_tcp_nodelay(true)?;
        let Some(name) = &self.congestion else {
            return Ok(());
        };
        let ends = s
            .local_addr()
            .ok()
            .and_then(|l| Some((l.as_socket()?, s.peer_addr().ok()?.as_socket()?)));
        if let Some((local, peer)) = ends {
            if same_host(local, peer) {
                if let Err(e) = set_congestion(&s, name) {
                    tracing::debug!(error = %e, congestion = %name, "congestion control refused");
                }
            }
        }
        Ok(())
    }

    /// Whether the OS accepts this setup's congestion control, tried on a fresh TCP socket
    /// (nothing to check without one, or where the OS has no such setting). `Err` is what the
    /// OS said: say, not found (`ENOENT`) for an algorithm the kernel does not have, or
    /// permission denied (`EPERM`) for one not in `net.ipv4.tcp_allowed_congestion_control`.
    pub fn check(&self) -> io::Result<()> {
        let Some(name) = &self.congestion else {
            return Ok(());
        };
        let Ok(probe) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        else {
            return Ok(());
        };
        set_congestion(&probe, name)
    }
}

#[cfg(target_os = "linux")]
fn set_congestion(s: &socket2::Socket, name: &str) -> io::Result<()> {
    s.set_tcp_congestion(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn set_congestion(_: &socket2::Socket, _: &str) -> io::Result<()> {
    Ok(())
}

/// Whether a TCP stream from `local` to `peer` stays on this host: the peer is a loopback
/// address, or this end's own address (a connection to one of this host's interface
/// addresses goes over loopback too).
pub(crate) fn same_host(local: SocketAddr, peer: SocketAddr) -> bool {
    let canon = |ip: IpAddr| ip.to_canonical();
    let peer_ip = canon(peer.ip());
    peer_ip.is_loopback() || peer_ip == canon(local.ip())
}

/// A bound, listening OS socket (blocking mode, as std makes it), for
/// [`Runtime::listen`] to register with the runtime's reactor.
#[derive(Debug)]
pub enum StdListener {
    /// A TCP listener. Accepted streams are set up with [`TcpSetup::apply`].
    Tcp(std::net::TcpListener),
    /// A Unix stream listener (a socket file or a Linux abstract name).
    Unix(StdUnixListener),
}

/// A timer that can be re-armed without being re-created: each proc owns one for core's
/// deadlines (re-armed from `poll_timeout`), and timeouts use short-lived ones.
pub trait Timer: Send + 'static {
    /// Arms the timer for `deadline` on the runtime's clock ([`Runtime::now`]), replacing
    /// whatever it was armed for.
    fn reset(&mut self, deadline: Instant);

    /// `Ready` once the armed deadline has passed (and stays ready until the next
    /// [`Timer::reset`]); otherwise registers `cx`'s waker.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// An async runtime that can host procs.
///
/// A value is a cheap handle (cloned into tasks), created by the adapter when a proc starts;
/// it also fixes the proc's clock epoch. Every method must be callable from any thread.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The runtime's timer.
    type Timer: Timer;
    /// A listener registered with the runtime's reactor.
    type Listener: Send + 'static;

    /// Now, on this proc's clock: monotonic, microseconds since an epoch fixed when the
    /// handle was made.
    fn now(&self) -> Instant;

    /// A new timer, not armed (it never fires until [`Timer::reset`]).
    fn timer(&self) -> Self::Timer;

    /// Runs `task` to completion in the background. procwire-host tracks and aborts its own
    /// tasks (by waking them and dropping their bodies), so the runtime only has to run it;
    /// a detached task is fine.
    fn spawn(&self, task: BoxFuture);

    /// Registers a freshly bound listener with the runtime (switching it to non-blocking
    /// mode as the runtime requires).
    fn listen(&self, listener: StdListener) -> io::Result<Self::Listener>;

    /// The next inbound connection on `listener`. TCP streams are set up with
    /// [`TcpSetup::apply`].
    fn accept(
        &self,
        listener: &mut Self::Listener,
        tcp: &TcpSetup,
    ) -> impl Future<Output = io::Result<Connection>> + Send;

    /// Connects to a TCP address by IP (`ChannelAddr::Tcp`) or a Unix address (never
    /// `local`, never a host name, never an `any()` address). For a Unix address,
    /// [`unix_socket_path`](crate::unix_socket_path) gives the path to connect to, with a
    /// leading NUL byte for a Linux abstract name. TCP streams are set up with
    /// [`TcpSetup::apply`].
    /// procwire-host bounds the attempt with core's `connect_timeout`, resolves host names
    /// first with [`Runtime::resolve`], and tries each resolved address in turn.
    fn connect(
        &self,
        addr: &ChannelAddr,
        tcp: &TcpSetup,
    ) -> impl Future<Output = io::Result<Connection>> + Send;

    /// Resolves `host` (a validated RFC 1123 name such as `localhost` or
    /// `node7.example`) to the socket addresses for `port`, in the resolver's order of
    /// preference, without blocking the executor (the runtime's own resolver, or the system
    /// resolver on a blocking thread). procwire-host calls it each time it dials or binds a
    /// `tcp:host:port` address, within the dial's `connect_timeout`.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn same_host_means_loopback_or_this_ends_own_address() {
        assert!(same_host(addr("127.0.0.1:1"), addr("127.0.0.1:2")));
        assert!(same_host(addr("10.1.2.3:1"), addr("127.0.0.9:2")));
        assert!(same_host(addr("[::1]:1"), addr("[::1]:2")));
        assert!(same_host(addr("10.1.2.3:1"), addr("10.1.2.3:2")));
        assert!(same_host(addr("[::ffff:10.1.2.3]:1"), addr("10.1.2.3:2")));
        assert!(same_host(
            addr("[::ffff:127.0.0.1]:1"),
            addr("[::ffff:127.0.0.1]:2")
        ));
        assert!(!same_host(addr("10.1.2.3:1"), addr("10.1.2.4:2")));
        assert!(!same_host(addr("127.0.0.1:1"), addr("10.1.2.4:2")));
        assert!(!same_host(addr("[fd00::1]:1"), addr("[fd00::2]:2")));
    }

    /// A connected loopback pair: (dialed, accepted).
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (a, _) = l.accept().expect("accept");
        (c, a)
    }

    #[cfg(target_os = "linux")]
    fn congestion_of(s: &TcpStream) -> String {
        let name = socket2::SockRef::from(s)
            .tcp_congestion()
            .expect("TCP_CONGESTION");
        String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_string()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_loopback_stream_gets_nodelay_and_the_congestion_control_asked_for() {
        let (c, a) = pair();
        let system = congestion_of(&c);
        // Whatever the system's default, switch to the other of two every kernel allows.
        let want = if system == "reno" { "cubic" } else { "reno" };
        let setup = TcpSetup::new(Some(want));
        if setup.check().is_err() {
            // cubic is not always allowed to unprivileged users; reno always is.
            assert_eq!(want, "cubic", "reno is always allowed");
            return;
        }
        setup.apply(&c).expect("apply");
        setup.apply(&a).expect("apply");
        assert_eq!(congestion_of(&c), want);
        assert_eq!(congestion_of(&a), want);
        assert!(c.nodelay().expect("nodelay") && a.nodelay().expect("nodelay"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn without_a_congestion_control_or_with_a_refused_one_the_systems_stays() {
        let (c, a) = pair();
        let system = congestion_of(&c);
        TcpSetup::new(None).apply(&c).expect("apply");
        assert_eq!(congestion_of(&c), system);
        assert!(c.nodelay().expect("nodelay"));
        let unknown = TcpSetup::new(Some("no-such-cc"));
        let refused = unknown
            .check()
            .expect_err("an unknown algorithm is refused");
        assert_eq!(refused.kind(), io::ErrorKind::NotFound, "{refused}");
        unknown
            .apply(&a)
            .expect("a refused congestion control is not an error here");
        assert_eq!(congestion_of(&a), system);
        assert!(a.nodelay().expect("nodelay"));
    }
}
