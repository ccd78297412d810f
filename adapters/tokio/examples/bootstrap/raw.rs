//! The raw baseline of the bootstrap demo: the same round trips between the same two OS
//! processes over the same transport, with no procwire at all. The root listens, starts
//! this binary again with `--raw-peer <address>`, and the peer echoes: each request is a
//! 4-byte little-endian length and that many bytes, each answer an 8-byte sequence number
//! (what the echo actor answers too). Both processes run tokio's current-thread runtime,
//! as the procwire side does, and set TCP streams up as procwire's default options do
//! ([`tcp_setup`]).

use std::os::linux::net::SocketAddrExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use procwire_tokio::{ChannelTransport, ProcOptions, TcpSetup};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::BoxError;

/// `TCP_NODELAY` and the congestion control procwire's default options give a stream to
/// this host, as on the procwire side.
fn tcp_setup() -> TcpSetup {
    ProcOptions::default().tcp_setup()
}

/// A connected stream of either transport.
trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

/// Round-trip times of `count` raw requests of `size` bytes to a second OS process over
/// `t` (Unix or TCP).
pub async fn round_trips(
    t: ChannelTransport,
    count: u64,
    size: usize,
) -> Result<Vec<Duration>, BoxError> {
    let (mut stream, mut child) = match t {
        ChannelTransport::Tcp => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let child = spawn_peer(&format!("tcp:{}", l.local_addr()?))?;
            let (s, _) = l.accept().await?;
            tcp_setup().apply(&s)?;
            (Box::new(s) as Box<dyn Stream>, child)
        }
        _ => {
            let name = format!("procwire-bootstrap-raw-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            let l = std::os::unix::net::UnixListener::bind_addr(&addr)?;
            l.set_nonblocking(true)?;
            let l = tokio::net::UnixListener::from_std(l)?;
            let child = spawn_peer(&format!("unix:@{name}"))?;
            let (s, _) = l.accept().await?;
            (Box::new(s) as Box<dyn Stream>, child)
        }
    };
    let mut request = (size as u32).to_le_bytes().to_vec();
    request.resize(4 + size, 0xA5);
    let mut answer = [0u8; 8];
    let mut rtts = Vec::with_capacity(count as usize);
    for seq in 0..count {
        request[4..4 + size.min(8)].copy_from_slice(&seq.to_le_bytes()[..size.min(8)]);
        let start = Instant::now();
        stream.write_all(&request).await?;
        stream.read_exact(&mut answer).await?;
        rtts.push(start.elapsed());
        if size >= 8 && u64::from_le_bytes(answer) != seq {
            return Err(
                format!("raw answer {} to request {seq}", u64::from_le_bytes(answer)).into(),
            );
        }
    }
    drop(stream);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .map_err(|_| "the raw peer did not exit within 30 s")??;
    if !status.success() {
        return Err(format!("raw peer failed: {status}").into());
    }
    Ok(rtts)
}

fn spawn_peer(addr: &str) -> Result<tokio::process::Child, BoxError> {
    Ok(tokio::process::Command::new(std::env::current_exe()?)
        .arg("--raw-peer")
        .arg(addr)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// The raw peer: connect to `addr` and echo until the root hangs up.
pub async fn peer(addr: &str) -> Result<(), BoxError> {
    let mut stream: Box<dyn Stream> = if let Some(tcp) = addr.strip_prefix("tcp:") {
        let s = tokio::net::TcpStream::connect(tcp).await?;
        tcp_setup().apply(&s)?;
        Box::new(s)
    } else if let Some(name) = addr.strip_prefix("unix:@") {
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let s = std::os::unix::net::UnixStream::connect_addr(&a)?;
        s.set_nonblocking(true)?;
        Box::new(tokio::net::UnixStream::from_std(s)?)
    } else {
        return Err(format!("--raw-peer: unknown address {addr:?}").into());
    };
    let mut len = [0u8; 4];
    let mut body = Vec::new();
    loop {
        match stream.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        body.resize(u32::from_le_bytes(len) as usize, 0);
        stream.read_exact(&mut body).await?;
        let mut seq = [0u8; 8];
        let n = body.len().min(8);
        seq[..n].copy_from_slice(&body[..n]);
        stream.write_all(&seq).await?;
    }
}
