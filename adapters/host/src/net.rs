//! Binding addresses (runtime-neutral: std sockets, then the runtime registers them), socket
//! files, and the per-connection reader and writer tasks. No protocol logic: bytes go to the
//! engine as they come, and the engine's bytes go out in order.

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
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use futures_io::{AsyncRead, AsyncWrite};
use procwire_core::id::{ChannelAddr, UnixAddr};
use procwire_core::proc::ConnId;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::engine::{ConnCtl, Engine, WriteCmd};
use crate::links::{LinkError, Links};
use crate::local::LocalListener;
use crate::runtime::{Reader, StdListener, Writer};

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
enum Step {
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
) -> Step {
    let mut at = have;
    loop {
        let Some((n, end)) = read_into(r, ctl, &mut body[at..]).await else {
            return Step::Stop;
        };
        at += n;
        match end {
            Some(Ok(())) => {
                tracing::debug!("connection closed by peer");
                return Step::End(LinkError::ClosedByPeer);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                return Step::End(LinkError::io(&e));
            }
            None => {}
        }
        if at == body.len() {
            let body = body.freeze();
            engine.read_bufs().keep_body(&body);
            return match engine.body(conn, body, have) {
                true => Step::More,
                false => Step::Stop,
            };
        }
        if !engine.bytes(conn, &[]) {
            return Step::Stop;
        }
    }
}

/// Feeds what `conn` reads to the engine until EOF, an error, or the engine stops it. How
/// a dialed connection ended is told to `links` before the engine hears of it. The rest of
/// a large frame's body is read straight into the buffer its payload stays in (see
/// `Proc::large_body`), not through the read buffer.
pub(crate) async fn reader_task(
    engine: Arc<Engine>,
    conn: ConnId,
    mut r: Reader,
    ctl: Arc<ConnCtl>,
    links: Option<Arc<Links>>,
) {
    let bufs = engine.read_bufs().clone();
    let mut held = None;
    let mut large = None;
    loop {
        if let Some(body) = large.take() {
            match body_step(&engine, conn, &mut r, &ctl, body).await {
                Step::More => continue,
                Step::Stop => break,
                Step::End(end) => {
                    if let Some(links) = &links {
                        links.ended(conn, end);
                    }
                    engine.closed(conn);
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
        if let Some(links) = &links {
            links.ended(conn, end);
        }
        engine.closed(conn);
        break;
    }
    if let Some(b) = held.take() {
        bufs.give(b);
    }
}

/// Writes what the engine queues for `conn`, gathering queued buffers into vectored writes.
/// How a dialed connection ended is told to `links` before the engine hears of it.
pub(crate) async fn writer_task(
    engine: Arc<Engine>,
    conn: ConnId,
    mut w: Writer,
    ctl: Arc<ConnCtl>,
    links: Option<Arc<Links>>,
) {
    let ended = |error| {
        if let Some(links) = &links {
            links.ended(conn, error);
        }
    };
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut closing = false;
    loop {
        if pending.is_empty() {
            if closing {
                break;
            }
            match ctl.writes.pop().await {
                None => return, // abandoned: the connection is gone
                Some(WriteCmd::Close) => {
                    closing = true;
                    continue;
                }
                Some(WriteCmd::Data(b)) => {
                    if !b.is_empty() {
                        pending.push_back(b);
                    }
                    continue;
                }
            }
        }
        while pending.len() < MAX_IOV && !closing {
            match ctl.writes.try_pop() {
                Ok(WriteCmd::Data(b)) => {
                    if !b.is_empty() {
                        pending.push_back(b);
                    }
                }
                Ok(WriteCmd::Close) => closing = true,
                Err(_) => break,
            }
        }
        let res = {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n = pending.len().min(MAX_IOV);
            for (s, b) in slices.iter_mut().zip(&pending) {
                *s = IoSlice::new(b);
            }
            poll_fn(|cx| Pin::new(&mut w).poll_write_vectored(cx, &slices[..n])).await
        };
        match res {
            Ok(0) => {
                tracing::debug!("write returned zero");
                ended(LinkError::io(&io::ErrorKind::WriteZero.into()));
                engine.closed(conn);
                return;
            }
            Ok(mut n) => {
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
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(error = %e, "write failed");
                ended(LinkError::io(&e));
                engine.closed(conn);
                return;
            }
        }
    }
    ended(LinkError::ClosedHere);
    let _ = poll_fn(|cx| Pin::new(&mut w).poll_flush(cx)).await;
    let _ = poll_fn(|cx| Pin::new(&mut w).poll_close(cx)).await;
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
        use std::task::{Context, Waker};
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
