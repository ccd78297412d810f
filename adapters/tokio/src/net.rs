//! Transports on tokio: binding, accepting, dialing, and the per-connection reader and
//! writer tasks. No protocol logic: bytes go to the engine as they come, and the engine's
//! bytes go out in order.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{self, IoSlice};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use procwire_core::id::{ChannelAddr, UnixAddr};
use procwire_core::proc::ConnId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::engine::{ConnCtl, Engine, WriteCmd};
use crate::local::{self, LocalListener};

/// Read buffer per connection.
const READ_BUF: usize = 64 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOV: usize = 64;

/// The read half of a connection.
pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection.
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A connected byte stream of any transport.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Local(DuplexStream),
}

impl Stream {
    /// Splits into halves that can move to separate tasks.
    pub(crate) fn split(self) -> (Reader, Writer) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Local(s) => {
                let (r, w) = tokio::io::split(s);
                (Box::new(r), Box::new(w))
            }
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

/// A bound listener of any transport.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    Local(LocalListener),
}

/// What `bind` produced.
pub(crate) struct Bound {
    pub(crate) listener: Listener,
    /// The address others dial, with any "pick one" part resolved.
    pub(crate) addr: ChannelAddr,
    /// The socket file to remove at the end, for Unix paths.
    pub(crate) file: Option<SocketFile>,
}

fn abstract_os_path(name: &str) -> PathBuf {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(0);
    bytes.extend_from_slice(name.as_bytes());
    PathBuf::from(OsStr::from_bytes(&bytes))
}

fn unix_os_path(addr: &UnixAddr) -> PathBuf {
    match addr {
        UnixAddr::Path(p) => PathBuf::from(p.as_str()),
        UnixAddr::Abstract(n) => abstract_os_path(n.as_str()),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Binds `addr`; an `any()` address gets a free concrete one.
pub(crate) async fn bind(addr: &ChannelAddr) -> io::Result<Bound> {
    match addr {
        ChannelAddr::Tcp(sa) => {
            let l = TcpListener::bind(sa).await?;
            let bound = l.local_addr()?;
            Ok(Bound {
                listener: Listener::Tcp(l),
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
                match UnixListener::bind(abstract_os_path(&name)) {
                    Ok(l) => {
                        return Ok(Bound {
                            listener: Listener::Unix(l),
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
        ChannelAddr::Unix(unix @ UnixAddr::Abstract(_)) => Ok(Bound {
            listener: Listener::Unix(UnixListener::bind(unix_os_path(unix))?),
            addr: addr.clone(),
            file: None,
        }),
        ChannelAddr::Unix(unix @ UnixAddr::Path(p)) => {
            let path = unix_os_path(unix);
            if p.is_empty() {
                return Err(invalid("empty Unix socket path".to_string()));
            }
            let l = match UnixListener::bind(&path) {
                Ok(l) => l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale(&path) => {
                    // A socket file left by a proc that is gone: nobody accepts on it.
                    tracing::debug!(path = %path.display(), "removing a stale socket file");
                    std::fs::remove_file(&path)?;
                    UnixListener::bind(&path)?
                }
                Err(e) => return Err(e),
            };
            let md = std::fs::symlink_metadata(&path)?;
            Ok(Bound {
                listener: Listener::Unix(l),
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
                listener: Listener::Local(l),
                addr: ChannelAddr::Local(id),
                file: None,
            })
        }
    }
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

impl Listener {
    /// The next inbound connection, with a description of the peer for logs.
    pub(crate) async fn accept(&mut self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), peer.to_string()))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), "unix".to_string()))
            }
            Listener::Local(l) => Ok((Stream::Local(l.accept().await?), "local".to_string())),
        }
    }
}

/// Connects to `addr`.
pub(crate) async fn connect(addr: &ChannelAddr) -> io::Result<Stream> {
    if addr.is_any() {
        return Err(invalid(format!("{addr} names no particular endpoint")));
    }
    match addr {
        ChannelAddr::Tcp(sa) => {
            let s = TcpStream::connect(sa).await?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
        ChannelAddr::Unix(u) => Ok(Stream::Unix(UnixStream::connect(unix_os_path(u)).await?)),
        ChannelAddr::Local(id) => Ok(Stream::Local(local::connect(*id)?)),
    }
}

/// Feeds what `conn` reads to the engine until EOF, an error, or the engine stops it.
pub(crate) async fn reader_task(
    engine: Arc<Engine>,
    conn: ConnId,
    mut r: Reader,
    ctl: Arc<ConnCtl>,
) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        if ctl.is_stopped() {
            return;
        }
        let res = tokio::select! {
            biased;
            () = ctl.reading_stopped() => return,
            res = r.read(&mut buf) => res,
        };
        match res {
            Ok(0) => {
                tracing::debug!("connection closed by peer");
                break;
            }
            Ok(n) => {
                if !engine.bytes(conn, &buf[..n]) {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                break;
            }
        }
    }
    engine.closed(conn);
}

/// Writes what the engine queues for `conn`, gathering queued buffers into vectored writes.
pub(crate) async fn writer_task(
    engine: Arc<Engine>,
    conn: ConnId,
    mut w: Writer,
    ctl: Arc<ConnCtl>,
) {
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
            let slices: Vec<IoSlice<'_>> = pending
                .iter()
                .take(MAX_IOV)
                .map(|b| IoSlice::new(b))
                .collect();
            w.write_vectored(&slices).await
        };
        match res {
            Ok(0) => {
                tracing::debug!("write returned zero");
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
            Err(e) => {
                tracing::debug!(error = %e, "write failed");
                engine.closed(conn);
                return;
            }
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
    tracing::debug!("connection closed");
}
