//! Binding addresses (runtime-neutral: std sockets, then the runtime registers them), socket
//! files, and the per-connection reader and writer tasks. No protocol logic: bytes go to the
//! engine as they come, and the engine's bytes go out in order.
//!
//! # Writing
//!
//! Engine turns queue a connection's bytes in order under the engine lock
//! ([`ConnCtl::writes`]), waking nobody. The write half lives in a [`WriteHalf`] behind its
//! own mutex: parked (nobody writing), taken (someone writing) or handed off (the writer
//! task must continue). After its turn, a task that queued bytes on an idle connection
//! ([`flush`]) takes the write half if it is parked and writes from the head of the queue
//! with the *writer task's* waker, until the queue is empty; it then parks it again after
//! checking, under that mutex, that nothing was queued meanwhile. If the socket would
//! block, a write is partial or fails, or a close or abandon comes up, it hands the write
//! half (with what it took from the queue) to the writer task and wakes it; the writer
//! task reports failures and closes, as before. Bytes queued on a busy connection (a
//! producer sending in a row) wake the writer task instead, which gathers them into
//! vectored writes. So the bytes of a request or a reply cost no task hop, and whoever
//! writes always takes from the head of the one queue: order holds on every runtime.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use futures_io::{AsyncRead, AsyncWrite};
use procwire_core::id::{ChannelAddr, UnixAddr};
use procwire_core::proc::ConnId;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::engine::{ConnCtl, Engine, WriteCmd};
use crate::links::{LinkError, Links};
use crate::local::LocalListener;
use crate::runtime::{Connection, Reader, StdListener, Writer};
use crate::sync::{PopError, Queue};

/// Size of a read buffer.
const READ_BUF: usize = 64 * 1024;
/// Read buffers a proc keeps for reuse (1 MiB); more are freed when returned.
const SPARE_READ_BUFS: usize = 16;
/// Bytes of large-frame body buffers a proc keeps handles of, to reuse once nothing else
/// refers to them (see [`ReadBufs::take_body`]).
const SPARE_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOV: usize = 64;
/// Listen backlog of Unix path sockets (the kernel caps it at `net.core.somaxconn`).
const UNIX_BACKLOG: i32 = 1024;
/// The default mode of a Unix socket file: owner read and write only.
pub(crate) const DEFAULT_UNIX_MODE: u32 = 0o600;

/// The path to connect to for a Unix address: the socket file's path, or for a Linux
/// abstract name the name behind a NUL byte (the form tokio/mio and async-io accept).
pub fn unix_socket_path(addr: &UnixAddr) -> PathBuf {
    match addr {
        UnixAddr::Path(p) => PathBuf::from(p.as_str()),
        UnixAddr::Abstract(n) => {
            let mut bytes = Vec::with_capacity(n.len() + 1);
            bytes.push(0);
            bytes.extend_from_slice(n.as_bytes());
            PathBuf::from(OsStr::from_bytes(&bytes))
        }
    }
}

/// A socket file this proc created; removed when the proc goes away, unless another proc
/// has replaced it meanwhile.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    ino: u64,
    dev: u64,
}

impl SocketFile {
    /// Removes the file if it is still ours.
    pub(crate) fn remove(&self) {
        if let Ok(md) = std::fs::symlink_metadata(&self.path) {
            if md.ino() == self.ino && md.dev() == self.dev {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// A bound listener of any transport, before the runtime registers socket ones.
pub(crate) enum BoundListener {
    Socket(StdListener),
    Local(LocalListener),
}

/// What `bind` produced.
pub(crate) struct Bound {
    pub(crate) listener: BoundListener,
    /// The address others dial, with any "pick one" part resolved.
    pub(crate) addr: ChannelAddr,
    /// The socket file to remove at the end, for Unix paths.
    pub(crate) file: Option<SocketFile>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn bind_abstract(name: &str) -> io::Result<UnixListener> {
    UnixListener::bind_addr(&UnixSocketAddr::from_abstract_name(name.as_bytes())?)
}

/// Binds a socket file at `path` with permission bits `mode`, whatever the umask. The mode
/// is set after `bind` and before `listen`: until then a connect is refused, so nobody can
/// get in through the wider mode the umask may have given the file.
fn bind_path(path: &Path, mode: u32) -> io::Result<UnixListener> {
    if mode & !0o777 != 0 {
        return Err(invalid(format!(
            "Unix socket mode {mode:#o} has bits beyond 0o777"
        )));
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let ready = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .and_then(|()| socket.listen(UNIX_BACKLOG));
    if let Err(e) = ready {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(std::os::fd::OwnedFd::from(socket)))
}

/// Binds `addr`; an `any()` address gets a free concrete one. A socket file gets the
/// permission bits `unix_mode`.
pub(crate) fn bind(addr: &ChannelAddr, unix_mode: u32) -> io::Result<Bound> {
    match addr {
        ChannelAddr::Tcp(sa) => {
            // std sets SO_REUSEADDR, so a restarted proc can take its port back at once.
            let l = std::net::TcpListener::bind(sa)?;
            let bound = l.local_addr()?;
            Ok(Bound {
                listener: BoundListener::Socket(StdListener::Tcp(l)),
                addr: ChannelAddr::Tcp(bound),
                file: None,
            })
        }
        ChannelAddr::Unix(UnixAddr::Abstract(name)) if name.is_empty() => {
            // Pick a random abstract name; retry on the (unlikely) collision.
            let mut last = None;
            for _ in 0..8 {
                let name = format!(
                    "procwire-{}-{:016x}",
                    std::process::id(),
                    crate::proc::random_u64()
                );
                let unix = UnixAddr::abstract_name(&name)
                    .map_err(|e| invalid(format!("generated abstract name {name}: {e}")))?;
                match bind_abstract(&name) {
                    Ok(l) => {
                        return Ok(Bound {
                            listener: BoundListener::Socket(StdListener::Unix(l)),
                            addr: ChannelAddr::Unix(unix),
                            file: None,
                        })
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
        }
        ChannelAddr::Unix(UnixAddr::Abstract(name)) => Ok(Bound {
            listener: BoundListener::Socket(StdListener::Unix(bind_abstract(name.as_str())?)),
            addr: addr.clone(),
            file: None,
        }),
        ChannelAddr::Unix(UnixAddr::Path(p)) => {
            if p.is_empty() {
                return Err(invalid("empty Unix socket path".to_string()));
            }
            let path = PathBuf::from(p.as_str());
            let l = match bind_path(&path, unix_mode) {
                Ok(l) => l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale(&path) => {
                    // A socket file left by a proc that is gone: nobody accepts on it.
                    tracing::debug!(path = %path.display(), "removing a stale socket file");
                    std::fs::remove_file(&path)?;
                    bind_path(&path, unix_mode)?
                }
                Err(e) => return Err(e),
            };
            let md = std::fs::symlink_metadata(&path)?;
            Ok(Bound {
                listener: BoundListener::Socket(StdListener::Unix(l)),
                addr: addr.clone(),
                file: Some(SocketFile {
                    path,
                    ino: md.ino(),
                    dev: md.dev(),
                }),
            })
        }
        ChannelAddr::Local(id) => {
            let l = LocalListener::bind(*id)?;
            let id = l.id();
            Ok(Bound {
                listener: BoundListener::Local(l),
                addr: ChannelAddr::Local(id),
                file: None,
            })
        }
        // Host names are resolved by the caller (on the runtime), then bound with
        // `bind_resolved`.
        other => Err(invalid(format!("{other} must be resolved before binding"))),
    }
}

/// Binds the first of `ips` (the resolved addresses of the host-name address `addr`) that
/// can be bound. The bound address keeps the host name, with the port the OS gave.
pub(crate) fn bind_resolved(addr: &ChannelAddr, ips: &[std::net::SocketAddr]) -> io::Result<Bound> {
    let mut last = None;
    for ip in ips {
        match std::net::TcpListener::bind(ip) {
            Ok(l) => {
                let port = l.local_addr()?.port();
                return Ok(Bound {
                    listener: BoundListener::Socket(StdListener::Tcp(l)),
                    addr: addr.with_tcp_port(port),
                    file: None,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolved to no address"),
        )
    }))
}

/// Whether the socket file at `path` has no listener behind it.
fn is_stale(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    is_socket
        && matches!(
            std::os::unix::net::UnixStream::connect(path),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
        )
}

/// The read buffers of a proc's connections. A connection holds one only while its socket
/// has bytes to give: the reader takes one to read, and puts it back as soon as the socket
/// has nothing more (the read is pending), so idle connections hold no buffer at all and a
/// proc with thousands of quiet links costs a few spare buffers, not 64 KiB per link.
///
/// It also keeps handles of the buffers large frames' bodies were read into (at most
/// [`SPARE_BODY_BYTES`] of them): their payloads are handed out as slices, and a buffer is
/// reused once every slice of it is dropped, so its memory needs no zeroing again.
pub(crate) struct ReadBufs {
    spare: std::sync::Mutex<Vec<Box<[u8]>>>,
    bodies: std::sync::Mutex<VecDeque<Bytes>>,
}

impl ReadBufs {
    pub(crate) fn new() -> Self {
        ReadBufs {
            spare: std::sync::Mutex::new(Vec::new()),
            bodies: std::sync::Mutex::new(VecDeque::new()),
        }
    }

    /// A buffer of `len` initialized bytes for a large frame's body: a kept one nothing else
    /// refers to any more, or a new one.
    pub(crate) fn take_body(&self, len: usize) -> BytesMut {
        let mut bodies = crate::sync::lock(&self.bodies);
        let free = bodies.iter().position(|b| b.len() >= len && b.is_unique());
        if let Some(Ok(mut body)) = free.and_then(|i| bodies.remove(i)).map(Bytes::try_into_mut) {
            body.truncate(len);
            return body;
        }
        BytesMut::zeroed(len)
    }

    /// Keeps a handle of `body` (from [`ReadBufs::take_body`]) to reuse its buffer later,
    /// forgetting the oldest handles beyond [`SPARE_BODY_BYTES`].
    fn keep_body(&self, body: &Bytes) {
        if body.len() > SPARE_BODY_BYTES {
            return;
        }
        let mut bodies = crate::sync::lock(&self.bodies);
        let mut kept: usize = bodies.iter().map(Bytes::len).sum();
        while kept + body.len() > SPARE_BODY_BYTES {
            match bodies.pop_front() {
                Some(b) => kept -= b.len(),
                None => break,
            }
        }
        bodies.push_back(body.clone());
    }

    fn take(&self) -> Box<[u8]> {
        crate::sync::lock(&self.spare)
            .pop()
            .unwrap_or_else(|| vec![0u8; READ_BUF].into_boxed_slice())
    }

    fn give(&self, buf: Box<[u8]>) {
        let mut spare = crate::sync::lock(&self.spare);
        if spare.len() < SPARE_READ_BUFS {
            spare.push(buf);
        }
    }

    /// Buffers kept for reuse now.
    #[cfg(test)]
    fn spare(&self) -> usize {
        crate::sync::lock(&self.spare).len()
    }
}

/// Reads from `r` into a buffer of `bufs` held only while bytes come: `None` once `ctl`
/// says stop. The buffer goes back to `bufs` whenever the read is pending.
async fn read_some<'b>(
    r: &mut Reader,
    ctl: &ConnCtl,
    bufs: &ReadBufs,
    held: &'b mut Option<Box<[u8]>>,
) -> Option<io::Result<&'b [u8]>> {
    let res = poll_fn(|cx| {
        // Stopping wins over reading (the connection is being closed or is gone).
        if ctl.poll_stopped(cx).is_ready() {
            return Poll::Ready(None);
        }
        let buf = held.get_or_insert_with(|| bufs.take());
        match Pin::new(&mut *r).poll_read(cx, buf) {
            Poll::Pending => {
                if let Some(b) = held.take() {
                    bufs.give(b);
                }
                Poll::Pending
            }
            Poll::Ready(res) => Poll::Ready(Some(res)),
        }
    })
    .await;
    match res? {
        Ok(n) => Some(Ok(&held.as_deref().unwrap_or_default()[..n])),
        Err(e) => Some(Err(e)),
    }
}

/// What a read step of a connection came to.
enum ReadStep {
    /// Go on reading.
    More,
    /// Stop: the engine no longer wants the connection.
    Stop,
    /// The connection ended.
    End(LinkError),
}

/// Reads from `r` into `buf` until it is full, or, once something was read, until the
/// socket has nothing more for now: how many bytes, and how the stream ended if it did
/// (`Ok` at EOF). `None` once `ctl` says stop.
async fn read_into(
    r: &mut Reader,
    ctl: &ConnCtl,
    buf: &mut [u8],
) -> Option<(usize, Option<io::Result<()>>)> {
    let mut filled = 0;
    poll_fn(|cx| {
        if ctl.poll_stopped(cx).is_ready() {
            return Poll::Ready(None);
        }
        while filled < buf.len() {
            match Pin::new(&mut *r).poll_read(cx, &mut buf[filled..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Some((filled, Some(Ok(()))))),
                Poll::Ready(Ok(n)) => filled += n,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Some((filled, Some(Err(e))))),
                Poll::Pending if filled > 0 => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Some((filled, None)))
    })
    .await
}

/// Reads the rest of a large frame's body into `body` (its first `have` bytes are those
/// the engine held), then hands the whole body to the engine. While the socket has nothing
/// more for now, the engine hears that bytes came (they keep the connection alive).
async fn body_step(
    engine: &Arc<Engine>,
    conn: ConnId,
    r: &mut Reader,
    ctl: &ConnCtl,
    (mut body, have): (BytesMut, usize),
) -> ReadStep {
    let mut at = have;
    loop {
        let Some((n, end)) = read_into(r, ctl, &mut body[at..]).await else {
            return ReadStep::Stop;
        };
        at += n;
        match end {
            Some(Ok(())) => {
                tracing::debug!("connection closed by peer");
                return ReadStep::End(LinkError::ClosedByPeer);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                return ReadStep::End(LinkError::io(&e));
            }
            None => {}
        }
        if at == body.len() {
            let body = body.freeze();
            engine.read_bufs().keep_body(&body);
            return match engine.body(conn, body, have) {
                true => ReadStep::More,
                false => ReadStep::Stop,
            };
        }
        if !engine.bytes(conn, &[]) {
            return ReadStep::Stop;
        }
    }
}

/// The reader and the writer task of `conn`, dialed or accepted, to spawn or run.
pub(crate) fn conn_tasks(
    engine: &Arc<Engine>,
    conn: ConnId,
    stream: Connection,
    ctl: Arc<ConnCtl>,
    links: Arc<Links>,
) -> (
    impl std::future::Future<Output = ()> + Send + 'static,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let reader = reader_task(
        engine.clone(),
        conn,
        stream.reader,
        ctl.clone(),
        links.clone(),
    );
    let writer = writer_task(engine.clone(), conn, stream.writer, ctl, links);
    (reader, writer)
}

/// Feeds what `conn` reads to the engine until EOF, an error, or the engine stops it. How
/// the connection ended is told to `links` before the engine hears of it. The rest of
/// a large frame's body is read straight into the buffer its payload stays in (see
/// `Proc::large_body`), not through the read buffer.
async fn reader_task(
    engine: Arc<Engine>,
    conn: ConnId,
    mut r: Reader,
    ctl: Arc<ConnCtl>,
    links: Arc<Links>,
) {
    let bufs = engine.read_bufs().clone();
    let mut held = None;
    let mut large = None;
    loop {
        if let Some(body) = large.take() {
            match body_step(&engine, conn, &mut r, &ctl, body).await {
                ReadStep::More => continue,
                ReadStep::Stop => break,
                ReadStep::End(end) => {
                    engine.closed(conn, &links, end);
                    break;
                }
            }
        }
        let end = match read_some(&mut r, &ctl, &bufs, &mut held).await {
            None => break,
            Some(Ok([])) => {
                tracing::debug!("connection closed by peer");
                LinkError::ClosedByPeer
            }
            Some(Ok(bytes)) => match engine.bytes_then_body(conn, bytes, &bufs) {
                None => break,
                Some(body) => {
                    large = body;
                    continue;
                }
            },
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                LinkError::io(&e)
            }
        };
        engine.closed(conn, &links, end);
        break;
    }
    if let Some(b) = held.take() {
        bufs.give(b);
    }
}

/// Who holds a connection's write half (see [`WriteHalf`]).
enum Holder {
    /// The writer task has not started yet.
    Absent,
    /// Nobody is writing: whoever has bytes to write may take it.
    Parked(Held),
    /// Someone is writing with it (the writer task, or a task after its turn).
    Taken,
    /// The writer task must continue: the socket would block, a write was partial or
    /// failed, or the connection is closing or abandoned.
    Handoff(Held),
    /// The writer task ended (or was dropped): whoever holds the write half drops it.
    Gone,
}

/// The write half with what was taken from the queue but not written yet.
struct Held {
    w: Writer,
    /// Bytes taken from the queue, in order, not (completely) written yet.
    pending: VecDeque<Bytes>,
    /// A `Close` was taken: close once `pending` is written.
    closing: bool,
    /// An inline write failed with this; the writer task reports it.
    failed: Option<io::Error>,
}

struct HalfState {
    holder: Holder,
    /// The writer task's waker: inline writes register it with the socket, and a handoff,
    /// close or abandon wakes it.
    task: Option<Waker>,
}

/// A connection's write half, shared by its writer task and the tasks that run engine
/// turns. Bytes are queued in order under the engine lock ([`ConnCtl::writes`]); whoever
/// holds the write half always writes from the head of that queue, and parks it again only
/// after checking, under this mutex, that the queue is empty, so bytes queued meanwhile are
/// written by the holder and never stranded.
///
/// A connection is *idle* when the engine ran another turn since the last one that queued
/// bytes on it, and its writer task is not already woken to write. Only then does a turn write its bytes inline: a task producing messages in
/// a row without yielding (pipelining) leaves them to the writer task, which gathers them
/// into one vectored write once the producer yields, while a request and its reply each go
/// out inline.
pub(crate) struct WriteHalf {
    state: std::sync::Mutex<HalfState>,
    /// The number of the engine turn that last queued bytes on this connection. Written
    /// only under the engine lock; a hint only: ordering never depends on it.
    last_turn: AtomicU64,
    /// The writer task was woken for queued bytes and has not run since.
    nudged: AtomicBool,
}

impl WriteHalf {
    pub(crate) fn new() -> Self {
        WriteHalf {
            state: std::sync::Mutex::new(HalfState {
                holder: Holder::Absent,
                task: None,
            }),
            last_turn: AtomicU64::new(0),
            nudged: AtomicBool::new(false),
        }
    }

    /// Turn number `turn` (counted from 1) queued bytes (under the engine lock): whether
    /// the connection was idle, so that the turn writes them itself; otherwise they are
    /// left to the writer task.
    pub(crate) fn queued(&self, turn: u64) -> bool {
        let last = self.last_turn.swap(turn, Ordering::Relaxed);
        // Once the writer task was woken for this run of bytes, it writes them all.
        last.saturating_add(1) < turn && !self.nudged.load(Ordering::Relaxed)
    }

    /// After bytes were queued on a busy connection: wakes the writer task, unless it was
    /// woken so already and has not run since (it clears `nudged` before it looks at the
    /// queue, under the queue's lock, so it sees these bytes or this call sees it cleared).
    pub(crate) fn nudge(&self) {
        if self.nudged.load(Ordering::SeqCst) || self.nudged.swap(true, Ordering::SeqCst) {
            return;
        }
        let task = crate::sync::lock(&self.state).task.clone();
        if let Some(t) = task {
            t.wake();
        }
    }

    /// Wakes the writer task (a close or abandon was queued).
    pub(crate) fn wake_task(&self) {
        let task = crate::sync::lock(&self.state).task.clone();
        if let Some(t) = task {
            t.wake();
        }
    }

    /// Parks `held` unless `writes` has something (or was closed): then it is given back.
    fn park(&self, held: Held, writes: &Queue<WriteCmd>) -> Result<(), Held> {
        let mut st = crate::sync::lock(&self.state);
        if writes.has_work() && !matches!(st.holder, Holder::Gone) {
            return Err(held);
        }
        if matches!(st.holder, Holder::Taken) {
            st.holder = Holder::Parked(held);
        }
        Ok(())
    }

    /// Leaves `held` to the writer task and wakes it.
    fn hand_off(&self, held: Held) {
        let task = {
            let mut st = crate::sync::lock(&self.state);
            if !matches!(st.holder, Holder::Taken) {
                return; // the writer task is gone: drop the write half
            }
            st.holder = Holder::Handoff(held);
            st.task.clone()
        };
        if let Some(t) = task {
            t.wake();
        }
    }

    /// For the writer task: installs `w` on the first call, then takes the write half
    /// once there is work for the writer task (a handoff, or queued commands nobody else
    /// writes: the ones queued before it started, a close, an abandon).
    fn poll_take(
        &self,
        cx: &mut Context<'_>,
        w: &mut Option<Writer>,
        writes: &Queue<WriteCmd>,
    ) -> Poll<Held> {
        self.nudged.store(false, Ordering::SeqCst);
        let mut st = crate::sync::lock(&self.state);
        match &st.task {
            Some(t) if t.will_wake(cx.waker()) => {}
            _ => st.task = Some(cx.waker().clone()),
        }
        if matches!(st.holder, Holder::Absent) {
            if let Some(w) = w.take() {
                st.holder = Holder::Parked(Held {
                    w,
                    pending: VecDeque::new(),
                    closing: false,
                    failed: None,
                });
            }
        }
        match std::mem::replace(&mut st.holder, Holder::Taken) {
            Holder::Handoff(held) => Poll::Ready(held),
            Holder::Parked(held) if writes.has_work() => Poll::Ready(held),
            other => {
                st.holder = other;
                Poll::Pending
            }
        }
    }

    /// The writer task ended: drop the write half wherever it is.
    fn retire(&self) {
        let dropped = {
            let mut st = crate::sync::lock(&self.state);
            st.task = None;
            std::mem::replace(&mut st.holder, Holder::Gone)
        };
        drop(dropped);
    }
}

/// The connections a turn queued bytes for, written after the engine lock is released.
/// Most turns queue for one connection, which needs no allocation.
#[derive(Default)]
pub(crate) enum Flushes {
    #[default]
    None,
    One(Arc<ConnCtl>),
    Many(Vec<Arc<ConnCtl>>),
}

impl Flushes {
    pub(crate) fn add(&mut self, ctl: &Arc<ConnCtl>) {
        match self {
            Flushes::None => *self = Flushes::One(ctl.clone()),
            Flushes::One(c) if Arc::ptr_eq(c, ctl) => {}
            Flushes::One(c) => *self = Flushes::Many(vec![c.clone(), ctl.clone()]),
            // Only the last is compared: a repeat costs one look at an idle connection.
            Flushes::Many(v) => {
                if !v.last().is_some_and(|c| Arc::ptr_eq(c, ctl)) {
                    v.push(ctl.clone());
                }
            }
        }
    }

    /// Whether `ctl` is the connection added last.
    pub(crate) fn is_last(&self, ctl: &Arc<ConnCtl>) -> bool {
        match self {
            Flushes::None => false,
            Flushes::One(c) => Arc::ptr_eq(c, ctl),
            Flushes::Many(v) => v.last().is_some_and(|c| Arc::ptr_eq(c, ctl)),
        }
    }

    pub(crate) fn run(self) {
        match self {
            Flushes::None => {}
            Flushes::One(c) => flush(&c),
            Flushes::Many(v) => v.iter().for_each(|c| flush(c)),
        }
    }
}

/// After an engine turn queued bytes for `ctl`'s idle connection (see [`WriteHalf`]):
/// writes them on this task if nobody else is writing, with the writer task's waker. If the
/// socket would block, a write is partial or fails, or a close or abandon comes up, the
/// writer task takes over.
pub(crate) fn flush(ctl: &ConnCtl) {
    let (mut held, waker) = {
        let mut st = crate::sync::lock(&ctl.write.state);
        match std::mem::replace(&mut st.holder, Holder::Taken) {
            Holder::Parked(held) => match &st.task {
                Some(t) => (held, t.clone()),
                None => {
                    st.holder = Holder::Parked(held);
                    return;
                }
            },
            other => {
                st.holder = other;
                return;
            }
        }
    };
    let mut cx = Context::from_waker(&waker);
    loop {
        match pump(&mut held, &ctl.writes, &mut cx, true) {
            Step::Idle => match ctl.write.park(held, &ctl.writes) {
                Ok(()) => return,
                Err(back) => held = back,
            },
            Step::Failed(e) => {
                held.failed = Some(e);
                return ctl.write.hand_off(held);
            }
            Step::Blocked | Step::Close | Step::Abandoned => return ctl.write.hand_off(held),
        }
    }
}

/// Where [`pump`] stopped.
enum Step {
    /// Everything queued is written.
    Idle,
    /// The socket would block, or (inline) a write was partial.
    Blocked,
    /// A close was queued and everything before it is written.
    Close,
    /// The queue was closed without a close command (the connection is gone), and is empty.
    Abandoned,
    /// A write failed.
    Failed(io::Error),
}

/// Takes queued commands into `held.pending` (up to [`MAX_IOV`] buffers, stopping at a
/// close). True if the queue is closed and empty.
fn refill(held: &mut Held, writes: &Queue<WriteCmd>) -> bool {
    while held.pending.len() < MAX_IOV && !held.closing {
        match writes.try_pop() {
            Ok(WriteCmd::Data(b)) => {
                if !b.is_empty() {
                    held.pending.push_back(b);
                }
            }
            Ok(WriteCmd::Close) => held.closing = true,
            Err(PopError::Empty) => break,
            Err(PopError::Closed) => return true,
        }
    }
    false
}

/// Writes from the head of `writes` (through `held.pending`), gathering queued buffers into
/// vectored writes, until there is nothing more to write or it cannot go on.
fn pump(held: &mut Held, writes: &Queue<WriteCmd>, cx: &mut Context<'_>, inline: bool) -> Step {
    if let Some(e) = held.failed.take() {
        return Step::Failed(e);
    }
    loop {
        let closed = refill(held, writes);
        if held.pending.is_empty() {
            return match (held.closing, closed) {
                (true, _) => Step::Close,
                (false, true) => Step::Abandoned,
                (false, false) => Step::Idle,
            };
        }
        match write_some(&mut held.w, &held.pending, cx) {
            Poll::Pending => return Step::Blocked,
            Poll::Ready(Ok(0)) => return Step::Failed(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => {
                advance(&mut held.pending, n);
                if inline {
                    // Partial: the writer task goes on. Complete: the park that follows
                    // looks at the queue again anyway, under the write half's lock.
                    return if held.pending.is_empty() {
                        Step::Idle
                    } else {
                        Step::Blocked
                    };
                }
            }
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Poll::Ready(Err(e)) => return Step::Failed(e),
        }
    }
}

/// One write of the head of `pending` (not empty): a plain write for one buffer (a request
/// or a reply, the common case, without building the slice array), else a vectored write
/// of up to [`MAX_IOV`] buffers.
fn write_some(
    w: &mut Writer,
    pending: &VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if let [one] = pending.as_slices().0 {
        if pending.len() == 1 {
            return Pin::new(w).poll_write(cx, one);
        }
    }
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let n = pending.len().min(MAX_IOV);
    for (s, b) in slices.iter_mut().zip(pending) {
        *s = IoSlice::new(b);
    }
    Pin::new(w).poll_write_vectored(cx, &slices[..n])
}

/// Drops the first `n` written bytes of `pending`.
fn advance(pending: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = pending.front_mut() else {
            break;
        };
        if n >= front.len() {
            n -= front.len();
            pending.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

/// Drops the write half when the writer task ends or is dropped.
struct Retire<'a>(&'a WriteHalf);

impl Drop for Retire<'_> {
    fn drop(&mut self) {
        self.0.retire();
    }
}

/// How the writer task's service of a connection ended.
enum End {
    /// A close was queued and everything before it is written.
    Close(Held),
    /// The connection is gone.
    Abandoned,
    /// A write failed.
    Failed(io::Error),
}

/// Takes the write half whenever there is work for the writer task, writes until there is
/// none (then parks it), and repeats until the connection closes, is abandoned or fails.
async fn serve(ctl: &ConnCtl, w: Writer) -> End {
    let mut w = Some(w);
    loop {
        let mut held = poll_fn(|cx| ctl.write.poll_take(cx, &mut w, &ctl.writes)).await;
        loop {
            let step = poll_fn(|cx| match pump(&mut held, &ctl.writes, cx, false) {
                Step::Blocked => Poll::Pending,
                step => Poll::Ready(step),
            })
            .await;
            match step {
                Step::Idle | Step::Blocked => match ctl.write.park(held, &ctl.writes) {
                    Ok(()) => break,
                    Err(back) => held = back, // more came meanwhile
                },
                Step::Close => return End::Close(held),
                Step::Abandoned => return End::Abandoned,
                Step::Failed(e) => return End::Failed(e),
            }
        }
    }
}

/// Writes what the engine queues for `conn` whenever the tasks that ran the turns could not
/// (see [`flush`]): the bytes queued before it started, and whenever the socket would
/// block, a write failed or was partial, or the connection closes. Gathers queued buffers
/// into vectored writes. How the connection ended is told to `links` before the engine
/// hears of it.
async fn writer_task(
    engine: Arc<Engine>,
    conn: ConnId,
    w: Writer,
    ctl: Arc<ConnCtl>,
    links: Arc<Links>,
) {
    let ended = |error| links.ended(conn, error);
    let _retire = Retire(&ctl.write);
    let mut held = match serve(&ctl, w).await {
        End::Close(held) => held,
        End::Abandoned => return,
        End::Failed(e) => {
            if e.kind() == io::ErrorKind::WriteZero {
                tracing::debug!("write returned zero");
            } else {
                tracing::debug!(error = %e, "write failed");
            }
            engine.closed(conn, &links, LinkError::io(&e));
            return;
        }
    };
    ended(LinkError::ClosedHere);
    let _ = poll_fn(|cx| Pin::new(&mut held.w).poll_flush(cx)).await;
    let _ = poll_fn(|cx| Pin::new(&mut held.w).poll_close(cx)).await;
    tracing::debug!("connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn temp_socket(tag: &str) -> (PathBuf, ChannelAddr) {
        let path = std::env::temp_dir().join(format!(
            "procwire-host-mode-{tag}-{}-{:x}.sock",
            std::process::id(),
            crate::proc::random_u64()
        ));
        let addr = ChannelAddr::Unix(UnixAddr::path(path.to_str().expect("utf-8")).expect("fits"));
        (path, addr)
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("socket file").mode() & 0o7777
    }

    #[test]
    fn an_idle_connection_holds_no_read_buffer() {
        use futures_io::AsyncWrite;
        let (r, mut w) = crate::pipe::pipe(1024);
        let mut r: Reader = Box::new(r);
        let ctl = ConnCtl::new();
        let bufs = ReadBufs::new();
        let mut held = None;
        let mut cx = Context::from_waker(Waker::noop());
        {
            let read = std::pin::pin!(read_some(&mut r, &ctl, &bufs, &mut held));
            assert!(read.poll(&mut cx).is_pending());
        }
        // Nothing to read: the buffer went back to the pool.
        assert!(held.is_none());
        assert_eq!(bufs.spare(), 1);
        let wrote = Pin::new(&mut w).poll_write(&mut cx, b"hello");
        assert!(matches!(wrote, Poll::Ready(Ok(5))));
        {
            let read = std::pin::pin!(read_some(&mut r, &ctl, &bufs, &mut held));
            match read.poll(&mut cx) {
                Poll::Ready(Some(Ok(b))) => assert_eq!(b, b"hello"),
                _ => panic!("the bytes written are read"),
            }
        }
        // While bytes come, the connection holds the buffer it took from the pool.
        assert!(held.is_some());
        assert_eq!(bufs.spare(), 0);
        ctl.abandon();
        let read = std::pin::pin!(read_some(&mut r, &ctl, &bufs, &mut held));
        assert!(matches!(read.poll(&mut cx), Poll::Ready(None)));
    }

    /// The `i`th chunk: its number, then `i % 13` bytes of `i as u8`.
    fn chunk(i: u64) -> Bytes {
        let mut v = i.to_be_bytes().to_vec();
        v.resize(8 + (i % 13) as usize, i as u8);
        Bytes::from(v)
    }

    /// Reads chunks from `r` until end-of-stream, checking they come in order; tells `all`
    /// once `total` came; returns how many came.
    fn read_chunks(
        mut r: crate::pipe::PipeReader,
        slow: bool,
        total: u64,
        all: std::sync::mpsc::Sender<()>,
    ) -> u64 {
        use futures_io::AsyncRead;
        let mut buf = Vec::new();
        let mut next = 0u64;
        let mut tmp = [0u8; 97];
        loop {
            let n = crate::sync::block_on(poll_fn(|cx| Pin::new(&mut r).poll_read(cx, &mut tmp)))
                .expect("read");
            if n == 0 {
                assert!(buf.is_empty(), "a partial chunk at the end");
                return next;
            }
            buf.extend_from_slice(&tmp[..n]);
            while buf.len() >= 8 {
                let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                let len = 8 + (seq % 13) as usize;
                if buf.len() < len {
                    break;
                }
                assert_eq!(seq, next, "chunks out of order");
                assert!(
                    buf[8..len].iter().all(|b| *b == seq as u8),
                    "chunk {seq} mangled"
                );
                buf.drain(..len);
                next += 1;
                if next == total {
                    let _ = all.send(());
                }
            }
            if slow && next % 64 == 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }

    /// Runs the writer task's service of `ctl` on a thread, closing the stream at the end.
    fn writer_thread(
        ctl: &Arc<ConnCtl>,
        w: crate::pipe::PipeWriter,
    ) -> std::thread::JoinHandle<()> {
        let ctl = ctl.clone();
        let w: Writer = Box::new(w);
        std::thread::spawn(move || match crate::sync::block_on(serve(&ctl, w)) {
            End::Close(mut held) => {
                crate::sync::block_on(poll_fn(|cx| Pin::new(&mut held.w).poll_close(cx)))
                    .expect("close");
            }
            End::Abandoned => panic!("abandoned"),
            End::Failed(e) => panic!("write failed: {e}"),
        })
    }

    /// One engine turn of a producer: numbers and queues a chunk under `engine` (the engine
    /// lock: turns so far, chunks so far), then writes it inline if the connection was idle
    /// (or always, with `always_inline`), else leaves it to the writer task.
    fn produce(ctl: &ConnCtl, engine: &std::sync::Mutex<(u64, u64)>, always_inline: bool) {
        let idle = {
            let mut st = crate::sync::lock(engine);
            st.0 += 1;
            assert!(ctl.writes.push(WriteCmd::Data(chunk(st.1))).is_ok());
            st.1 += 1;
            let idle = ctl.write.queued(st.0) || always_inline;
            if !idle {
                ctl.write.nudge();
            }
            idle
        };
        if idle {
            flush(ctl);
        }
    }

    /// `threads` producers each run `per_thread` turns (see [`produce`]) into a pipe of
    /// `cap` bytes. Every chunk must arrive, in order, before the connection is closed (a
    /// close would wake the writer task, which would write stranded bytes).
    fn producers_through_pipe(
        threads: u64,
        per_thread: u64,
        cap: usize,
        slow: bool,
        always_inline: bool,
    ) {
        let total = threads * per_thread;
        let (r, w) = crate::pipe::pipe(cap);
        let ctl = ConnCtl::new();
        let writer = writer_thread(&ctl, w);
        let (all_tx, all_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || read_chunks(r, slow, total, all_tx));
        let engine = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
        let producers: Vec<_> = (0..threads)
            .map(|_| {
                let (ctl, engine) = (ctl.clone(), engine.clone());
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        produce(&ctl, &engine, always_inline);
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().expect("producer");
        }
        all_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("every chunk arrives before the close (none stranded)");
        ctl.close_after_flush();
        assert_eq!(reader.join().expect("reader"), total);
        writer.join().expect("writer task");
    }

    #[test]
    fn concurrent_turns_write_in_queue_order_and_strand_nothing() {
        producers_through_pipe(4, 5_000, 64 * 1024, false, true);
        producers_through_pipe(4, 5_000, 64 * 1024, false, false);
    }

    #[test]
    fn a_full_pipe_hands_writing_over_to_the_writer_task() {
        // 7 bytes of room: nearly every write is partial or pending.
        producers_through_pipe(3, 1_000, 7, true, true);
        producers_through_pipe(3, 1_000, 7, true, false);
    }

    #[test]
    fn a_single_idle_producer_writes_inline_without_the_writer_task() {
        let (mut r, w) = crate::pipe::pipe(1024);
        let ctl = ConnCtl::new();
        let mut w = Some(Box::new(w) as Writer);
        // The writer task's first poll installs the write half, then waits: nothing queued.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(ctl
            .write
            .poll_take(&mut cx, &mut w, &ctl.writes)
            .is_pending());
        assert!(ctl.writes.push(WriteCmd::Data(chunk(0))).is_ok());
        assert!(ctl.write.queued(2));
        flush(&ctl);
        // Written by this thread: the bytes are in the pipe, the queue is empty and the
        // write half is parked again.
        let mut buf = [0u8; 64];
        let n = Pin::new(&mut r).poll_read(&mut cx, &mut buf);
        assert!(matches!(n, Poll::Ready(Ok(8))));
        assert!(!ctl.writes.has_work());
        let parked = matches!(
            crate::sync::lock(&ctl.write.state).holder,
            Holder::Parked(_)
        );
        assert!(parked);
        // The next turn in a row finds the connection busy.
        assert!(!ctl.write.queued(3));
    }

    #[test]
    fn bytes_queued_while_someone_writes_are_written_by_them() {
        let (mut r, w) = crate::pipe::pipe(1024);
        let ctl = ConnCtl::new();
        let mut w = Some(Box::new(w) as Writer);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(ctl
            .write
            .poll_take(&mut cx, &mut w, &ctl.writes)
            .is_pending());
        // Someone takes the write half (as `flush` does) and finds the queue empty...
        let held = match std::mem::replace(
            &mut crate::sync::lock(&ctl.write.state).holder,
            Holder::Taken,
        ) {
            Holder::Parked(held) => held,
            _ => panic!("the write half is parked"),
        };
        // ...meanwhile a turn queues bytes; its flush finds the write half taken.
        assert!(ctl.writes.push(WriteCmd::Data(chunk(0))).is_ok());
        flush(&ctl);
        // The holder may not park it: the bytes would be stranded.
        let Err(mut held) = ctl.write.park(held, &ctl.writes) else {
            panic!("parked over queued bytes");
        };
        assert!(matches!(
            pump(&mut held, &ctl.writes, &mut cx, true),
            Step::Idle
        ));
        assert!(ctl.write.park(held, &ctl.writes).is_ok());
        let mut buf = [0u8; 64];
        let n = Pin::new(&mut r).poll_read(&mut cx, &mut buf);
        assert!(matches!(n, Poll::Ready(Ok(8))));
    }

    #[test]
    fn a_body_buffer_is_reused_once_nothing_refers_to_it() {
        let bufs = ReadBufs::new();
        let mut body = bufs.take_body(100);
        assert_eq!(body.len(), 100);
        body[..3].copy_from_slice(b"abc");
        let body = body.freeze();
        let at = body.as_ptr();
        bufs.keep_body(&body);
        let payload = body.slice(1..3);
        drop(body);
        // A payload still refers to it: a new buffer.
        let other = bufs.take_body(50);
        assert_ne!(other.as_ptr(), at);
        drop(payload);
        let again = bufs.take_body(60);
        assert_eq!(
            (again.as_ptr(), again.len()),
            (at, 60),
            "the same memory, no zeroing"
        );
        assert_eq!(&again[..3], b"abc");
        // Larger than any kept: a new one.
        assert_ne!(bufs.take_body(200).as_ptr(), at);
    }

    #[test]
    fn kept_body_buffers_stay_within_their_bound() {
        let bufs = ReadBufs::new();
        let big = SPARE_BODY_BYTES / 4 + 1;
        // Payloads of all of them still live: none can be reused.
        let mut live = Vec::new();
        for _ in 0..8 {
            let b = bufs.take_body(big).freeze();
            bufs.keep_body(&b);
            live.push(b);
        }
        let kept: usize = crate::sync::lock(&bufs.bodies).iter().map(Bytes::len).sum();
        assert!(kept <= SPARE_BODY_BYTES, "{kept}");
        assert_eq!(crate::sync::lock(&bufs.bodies).len(), 3);
    }

    #[test]
    fn socket_files_get_the_mode_asked_for_and_still_accept() {
        for mode in [DEFAULT_UNIX_MODE, 0o660, 0o666] {
            let (path, addr) = temp_socket("ok");
            let bound = bind(&addr, mode).expect("bind");
            assert_eq!(mode_of(&path), mode, "mode of {}", path.display());
            std::os::unix::net::UnixStream::connect(&path).expect("the listener accepts");
            bound.file.expect("a socket file").remove();
            assert!(!path.exists());
        }
    }

    #[test]
    fn a_mode_beyond_permission_bits_is_refused_and_leaves_no_file() {
        let (path, addr) = temp_socket("bad");
        let err = bind(&addr, 0o4777).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_socket_file_is_replaced_with_the_mode_asked_for() {
        let (path, addr) = temp_socket("stale");
        drop(UnixListener::bind(&path).expect("a listener that goes away"));
        let bound = bind(&addr, 0o640).expect("bind over the stale file");
        assert_eq!(mode_of(&path), 0o640);
        bound.file.expect("a socket file").remove();
    }
}
