//! A fault-injecting TCP/Unix proxy: forwards each accepted connection to an upstream
//! address and cuts it (both sides, abruptly) after a random number of forwarded bytes, so
//! cuts land anywhere: inside the preamble, the hello, a frame header or a frame body.
//!
//! It runs on tokio ([`FaultProxy::start`] must be called within a tokio runtime), whatever
//! adapter the procs it sits between use.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use procwire_tokio::{ChannelAddr, UnixAddr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

type R = Box<dyn AsyncRead + Send + Unpin>;
type W = Box<dyn AsyncWrite + Send + Unpin>;

/// How the proxy misbehaves.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Each connection is cut after a number of bytes drawn uniformly from this range
    /// (counting both directions).
    pub min_bytes: u64,
    /// See `min_bytes`.
    pub max_bytes: u64,
    /// After this many cuts the proxy forwards faithfully (so a test always finishes).
    pub max_cuts: u64,
    /// PRNG seed, for reproducible runs.
    pub seed: u64,
}

/// A running proxy. Dropping it stops it.
pub struct FaultProxy {
    addr: ChannelAddr,
    cuts: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

fn split_tcp(s: TcpStream) -> (R, W) {
    let _ = s.set_nodelay(true);
    let (r, w) = s.into_split();
    (Box::new(r), Box::new(w))
}

fn split_unix(s: UnixStream) -> (R, W) {
    let (r, w) = s.into_split();
    (Box::new(r), Box::new(w))
}

fn abstract_path(name: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut b = vec![0u8];
    b.extend_from_slice(name.as_bytes());
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&b))
}

fn unix_path(u: &UnixAddr) -> std::path::PathBuf {
    match u {
        UnixAddr::Path(p) => std::path::PathBuf::from(p.as_str()),
        UnixAddr::Abstract(n) => abstract_path(n.as_str()),
    }
}

async fn connect(addr: &ChannelAddr) -> std::io::Result<(R, W)> {
    match addr {
        ChannelAddr::Tcp(sa) => Ok(split_tcp(TcpStream::connect(sa).await?)),
        ChannelAddr::Unix(u) => Ok(split_unix(UnixStream::connect(unix_path(u)).await?)),
        other => Err(std::io::Error::other(format!(
            "the proxy does not do {other}"
        ))),
    }
}

impl FaultProxy {
    /// Starts a proxy of the same transport as `upstream` (TCP on 127.0.0.1, or a fresh
    /// abstract Unix name) that forwards to `upstream` with `faults`.
    pub async fn start(upstream: ChannelAddr, faults: Faults) -> FaultProxy {
        let (listener, addr) = match &upstream {
            ChannelAddr::Tcp(_) => {
                let l = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
                let a = l.local_addr().expect("proxy addr");
                (Listener::Tcp(l), ChannelAddr::Tcp(a))
            }
            ChannelAddr::Unix(_) => {
                let name = format!("procwire-proxy-{}-{:x}", std::process::id(), faults.seed);
                let l = UnixListener::bind(abstract_path(&name)).expect("proxy bind");
                (
                    Listener::Unix(l),
                    ChannelAddr::Unix(UnixAddr::abstract_name(&name).expect("name fits")),
                )
            }
            other => panic!("the proxy does not do {other}"),
        };
        let cuts = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(serve(
            listener,
            upstream,
            faults,
            cuts.clone(),
            connections.clone(),
            paused.clone(),
        ));
        FaultProxy {
            addr,
            cuts,
            connections,
            paused,
            task,
        }
    }

    /// Where to dial the proxy.
    pub fn addr(&self) -> &ChannelAddr {
        &self.addr
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// While paused, new connections are accepted and immediately dropped.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }
}

async fn serve(
    listener: Listener,
    upstream: ChannelAddr,
    faults: Faults,
    cuts: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
) {
    let mut rng = Rng(faults.seed);
    let mut pumps = tokio::task::JoinSet::new();
    loop {
        let client = match &listener {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| split_tcp(s)),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| split_unix(s)),
        };
        let Ok(client) = client else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        if paused.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let budget = if cuts.load(Ordering::SeqCst) >= faults.max_cuts {
            u64::MAX
        } else {
            rng.range(faults.min_bytes, faults.max_bytes)
        };
        let upstream = upstream.clone();
        let cuts = cuts.clone();
        pumps.spawn(async move {
            let Ok(server) = connect(&upstream).await else {
                return;
            };
            if pump(client, server, budget).await {
                cuts.fetch_add(1, Ordering::SeqCst);
            }
        });
        while pumps.try_join_next().is_some() {}
    }
}

/// Forwards both ways until either side closes (false) or `budget` bytes have passed
/// (true: cut). Dropping the halves closes both connections.
async fn pump(client: (R, W), server: (R, W), mut budget: u64) -> bool {
    let (mut cr, mut cw) = client;
    let (mut sr, mut sw) = server;
    let mut a = vec![0u8; 16 * 1024];
    let mut b = vec![0u8; 16 * 1024];
    loop {
        let (n, from_client) = tokio::select! {
            r = cr.read(&mut a) => match r { Ok(0) | Err(_) => return false, Ok(n) => (n, true) },
            r = sr.read(&mut b) => match r { Ok(0) | Err(_) => return false, Ok(n) => (n, false) },
        };
        let take = (n as u64).min(budget) as usize;
        budget -= take as u64;
        let res = if from_client {
            sw.write_all(&a[..take]).await
        } else {
            cw.write_all(&b[..take]).await
        };
        if res.is_err() {
            return false;
        }
        if budget == 0 {
            return true;
        }
    }
}
