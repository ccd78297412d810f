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
use std::net::SocketAddr;
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

/// A bound, listening OS socket (blocking mode, as std makes it), for
/// [`Runtime::listen`] to register with the runtime's reactor.
#[derive(Debug)]
pub enum StdListener {
    /// A TCP listener. Accepted streams must get `TCP_NODELAY`.
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

    /// The next inbound connection on `listener`. TCP streams get `TCP_NODELAY`.
    fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> impl Future<Output = io::Result<Connection>> + Send;

    /// Connects to a TCP address by IP (`ChannelAddr::Tcp`) or a Unix address (never
    /// `local`, never a host name, never an `any()` address). For a Unix address,
    /// [`unix_socket_path`](crate::unix_socket_path) gives the path to connect to, with a
    /// leading NUL byte for a Linux abstract name. TCP streams get `TCP_NODELAY`.
    /// procwire-host bounds the attempt with core's `connect_timeout`, resolves host names
    /// first with [`Runtime::resolve`], and tries each resolved address in turn.
    fn connect(&self, addr: &ChannelAddr) -> impl Future<Output = io::Result<Connection>> + Send;

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
