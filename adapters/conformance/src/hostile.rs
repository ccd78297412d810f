//! Hostile peers: raw connections to a proc that send garbage, other protocols, bad
//! preambles and frames, hellos for another proc, or nothing at all, one at a time and by
//! the hundred, while a legitimate session between two procs keeps running.
//!
//! Every case checks behaviour, not wording: the bad connection is closed by the proc (read
//! to end-of-stream or reset) within a bound, the proc's refusal counters moved by exactly
//! what the case caused, no connection is left behind, and the legitimate session delivered
//! every message once and in order, during the attack and after it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_io::Async;
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use procwire_smol::procwire_core::frame::{
    preamble, FrameHeader, FrameKind, Hello, HEADER_LEN, MAGIC, PREAMBLE_LEN,
};
use procwire_smol::{
    ChannelAddr, ChannelTransport, Cookie, Name, ProcId, RefusalReason, Refusals, RefuseReason,
    Undeliverable, UnixAddr,
};

use crate::{fixed_addr, init_logging, options, sleep, within, Adapter, TestProc};

/// The victim's handshake deadline (`connect_timeout`): silent connections last this long.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_millis(800);
/// The victim's frame limit.
pub const MAX_FRAME: u32 = 1024 * 1024;
/// Slack on top of a deadline before a test calls a connection "not closed".
const SLACK: Duration = Duration::from_secs(4);

/// A raw byte stream to a proc's address.
pub trait RawStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawStream for T {}

/// Connects a raw socket to `addr` (TCP or a Unix socket file).
pub async fn connect_raw(addr: &ChannelAddr) -> std::io::Result<Box<dyn RawStream>> {
    Ok(match addr {
        ChannelAddr::Tcp(sa) => Box::new(Async::<std::net::TcpStream>::connect(*sa).await?),
        ChannelAddr::Unix(UnixAddr::Path(p)) => {
            Box::new(Async::<std::os::unix::net::UnixStream>::connect(p.as_str()).await?)
        }
        other => panic!("no raw sockets to {other}"),
    })
}

/// How a raw connection ended.
#[derive(Debug)]
pub struct Closed {
    /// What the proc wrote before closing.
    pub reply: Vec<u8>,
    /// How long after the call the end came.
    pub after: Duration,
}

/// Reads until the proc closes the connection (end-of-stream or reset); `None` if it is
/// still open after `limit`.
pub async fn read_until_closed(s: &mut dyn RawStream, limit: Duration) -> Option<Closed> {
    let start = Instant::now();
    let mut reply = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = futures_lite::future::or(
        async {
            read_all.await;
            true
        },
        async {
            sleep(limit).await;
            false
        },
    )
    .await;
    closed.then(|| Closed {
        reply,
        after: start.elapsed(),
    })
}

/// A frame header followed by `body`.
pub fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
    let mut h = [0u8; HEADER_LEN];
    FrameHeader {
        kind,
        flags: 0,
        len: u32::try_from(body.len()).expect("small body"),
    }
    .write(&mut h);
    let mut v = h.to_vec();
    v.extend_from_slice(body);
    v
}

/// A hello from a made-up proc to `to`.
pub fn hello_to(to: ProcId) -> Vec<u8> {
    let from: ProcId = "tcp:127.0.0.1:9,mallory".parse().expect("a proc id");
    let hello = Hello {
        from,
        to,
        incarnation: 7,
        session: 7,
        resume: false,
        max_frame_len: MAX_FRAME,
        auth: None,
    };
    let mut v = preamble().to_vec();
    v.extend(frame(
        FrameKind::Hello,
        &postcard::to_allocvec(&hello).expect("encode hello"),
    ));
    v
}

/// The kind of the first frame in a reply that starts with the proc's preamble.
pub fn first_frame_kind(reply: &[u8]) -> Option<FrameKind> {
    if reply.get(..4) != Some(&MAGIC[..]) {
        return None;
    }
    FrameKind::from_u8(*reply.get(PREAMBLE_LEN)?)
}

/// What one hostile connection sends, and what the proc must make of it.
#[derive(Clone, Debug)]
pub struct BadConn {
    /// Bytes sent right after connecting (nothing: a silent connection).
    pub send: Vec<u8>,
    /// The counter this connection must raise by one.
    pub reason: RefusalReason,
    /// The proc answers with a `Refuse` frame before closing.
    pub refused_with_frame: bool,
}

impl BadConn {
    /// Garbage bytes that cannot start a preamble.
    pub fn garbage() -> Self {
        let send = (0..256u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
            .collect();
        Self::new(send, RefusalReason::BadMagic)
    }

    /// A plain HTTP request.
    pub fn http() -> Self {
        let req = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: hostile\r\n\r\n";
        Self::new(req.to_vec(), RefusalReason::BadMagic)
    }

    /// A preamble with the wrong magic.
    pub fn wrong_magic() -> Self {
        let mut p = preamble();
        p[3] = b'X';
        Self::new(p.to_vec(), RefusalReason::BadMagic)
    }

    /// A preamble of protocol version 99.
    pub fn wrong_version() -> Self {
        let mut p = preamble();
        p[4..6].copy_from_slice(&99u16.to_le_bytes());
        BadConn {
            refused_with_frame: true,
            ..Self::new(p.to_vec(), RefusalReason::UnsupportedVersion)
        }
    }

    /// A hello header announcing `len` body bytes, and no body.
    pub fn frame_of_len(len: u32) -> Self {
        let mut v = preamble().to_vec();
        let mut h = [0u8; HEADER_LEN];
        FrameHeader {
            kind: FrameKind::Hello,
            flags: 0,
            len,
        }
        .write(&mut h);
        v.extend_from_slice(&h);
        Self::new(v, RefusalReason::FrameTooLarge)
    }

    /// A well-formed hello for another proc name at the victim's address.
    pub fn hello_for_another_proc(victim: &ProcId) -> Self {
        let to = ProcId::new(
            victim.addr().clone(),
            Name::new("not_the_victim").expect("name"),
        );
        BadConn {
            refused_with_frame: true,
            ..Self::new(hello_to(to), RefusalReason::WrongProc)
        }
    }

    /// A hello frame whose body is not a hello.
    pub fn malformed_hello() -> Self {
        let mut v = preamble().to_vec();
        v.extend(frame(FrameKind::Hello, &[0xff; 24]));
        BadConn {
            refused_with_frame: true,
            ..Self::new(v, RefusalReason::BadHello)
        }
    }

    /// A data frame where a hello must come.
    pub fn data_before_hello() -> Self {
        let mut v = preamble().to_vec();
        v.extend(frame(FrameKind::Data, b"not yet"));
        Self::new(v, RefusalReason::ProtocolViolation)
    }

    /// Nothing at all: the handshake deadline must close it.
    pub fn silent() -> Self {
        Self::new(Vec::new(), RefusalReason::HandshakeTimeout)
    }

    /// Half a preamble, then nothing.
    pub fn stalled_preamble() -> Self {
        Self::new(b"PWI".to_vec(), RefusalReason::HandshakeTimeout)
    }

    fn new(send: Vec<u8>, reason: RefusalReason) -> Self {
        BadConn {
            send,
            reason,
            refused_with_frame: false,
        }
    }

    /// How long the proc may take to close it.
    fn limit(&self) -> Duration {
        HANDSHAKE_DEADLINE + SLACK
    }
}

/// Opens `bad` to `addr` and checks the proc closes it as it must. Returns how long that
/// took.
pub async fn run_bad_conn(addr: &ChannelAddr, bad: &BadConn) -> Duration {
    let mut s = connect_raw(addr).await.expect("connect to the victim");
    if !bad.send.is_empty() {
        // The proc may close as soon as it has seen enough; a failed write is fine then.
        let _ = s.write_all(&bad.send).await;
        let _ = s.flush().await;
    }
    let closed = read_until_closed(&mut *s, bad.limit())
        .await
        .unwrap_or_else(|| panic!("{bad:?}: still open after {:?}", bad.limit()));
    if bad.refused_with_frame {
        assert_eq!(
            first_frame_kind(&closed.reply),
            Some(FrameKind::Refuse),
            "{:?}: reply {:02x?}",
            bad.reason,
            closed.reply
        );
    }
    closed.after
}

/// The victim's (and its peer's) options: a short handshake deadline and a 1 MiB frame
/// limit.
pub fn hostile_options() -> procwire_smol::ProcOptions {
    let mut o = options();
    o.core.connect_timeout = HANDSHAKE_DEADLINE.into();
    o.core.max_frame_len = MAX_FRAME;
    o
}

/// An address of `t` that raw sockets can reach (a socket file for Unix).
fn raw_reachable(t: ChannelTransport) -> ChannelAddr {
    match t {
        ChannelTransport::Unix => fixed_addr(t),
        _ => t.any(),
    }
}

/// A legitimate session from `a` to `b`: `a`'s sender numbers messages, `b`'s receiver
/// checks each arrives once and in order.
struct Legit {
    sent: AtomicU64,
    received: AtomicU64,
    /// Set when the sender is done; the receiver then stops at `sent`.
    done: AtomicBool,
}

impl Legit {
    fn new() -> Self {
        Legit {
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }
}

/// Runs `attack` against proc `b` while `a` keeps sending to `b`, and checks the session
/// delivered everything in order during and after it. `attack` gets `b`'s address.
pub async fn under_attack<A, F, Fut>(x: &A, t: ChannelTransport, attack: F)
where
    A: Adapter,
    F: FnOnce(A::Proc) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    under_attack_with(x, t, hostile_options(), attack).await
}

/// [`under_attack`] with both legitimate procs started with `opts`.
pub async fn under_attack_with<A, F, Fut>(
    x: &A,
    t: ChannelTransport,
    opts: procwire_smol::ProcOptions,
    attack: F,
) where
    A: Adapter,
    F: FnOnce(A::Proc) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    init_logging();
    let a = x
        .start(raw_reachable(t), "a", opts.clone())
        .await
        .expect("a");
    let b = x.start(raw_reachable(t), "b", opts).await.expect("b");
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<()>();
    let dest = port.port_id().clone();
    let legit = Legit::new();
    let attacking = AtomicBool::new(false);
    let during = AtomicU64::new(0);

    let send_n = |n: u64| {
        let (sender, dest, legit) = (&sender, &dest, &legit);
        async move {
            for _ in 0..n {
                let i = legit.sent.load(Ordering::Relaxed);
                let body = Bytes::copy_from_slice(&i.to_le_bytes());
                sender.send_bytes(dest, body).await.expect("legit send");
                legit.sent.store(i + 1, Ordering::Relaxed);
            }
        }
    };
    let receive = async {
        loop {
            let next = legit.received.load(Ordering::Relaxed);
            if legit.done.load(Ordering::Relaxed) && next == legit.sent.load(Ordering::Relaxed) {
                return;
            }
            let env = within(20, "a legit message", rx.recv_envelope())
                .await
                .expect("legit message");
            let seq = u64::from_le_bytes(env.payload[..8].try_into().expect("8 bytes"));
            assert_eq!(seq, next, "legit messages arrive once and in order");
            legit.received.store(next + 1, Ordering::Relaxed);
            if attacking.load(Ordering::Relaxed) {
                during.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let drive = async {
        // The session is up before the attack starts.
        send_n(100).await;
        while legit.received.load(Ordering::Relaxed) < 100 {
            sleep(Duration::from_millis(2)).await;
        }
        let before = b.connection_count();
        attacking.store(true, Ordering::Relaxed);
        let trickle = async {
            let mut i = 0;
            while attacking.load(Ordering::Relaxed) || i < 50 {
                send_n(5).await;
                sleep(Duration::from_millis(3)).await;
                i += 5;
            }
        };
        futures_lite::future::zip(trickle, async {
            attack(b.clone()).await;
            // A quick attack may be over before the trickle got through: the session must
            // carry some of it before the attack counts as over.
            while during.load(Ordering::Relaxed) < 20 {
                sleep(Duration::from_millis(2)).await;
            }
            attacking.store(false, Ordering::Relaxed);
        })
        .await;
        send_n(200).await;
        legit.done.store(true, Ordering::Relaxed);
        before
    };
    let (before, ()) = within(60, "the attack and the legit session", async {
        futures_lite::future::zip(drive, receive).await
    })
    .await;
    assert!(
        during.load(Ordering::Relaxed) > 0,
        "nothing delivered during the attack"
    );
    assert!(
        sender.try_next_undeliverable().is_none(),
        "a legit message came back"
    );
    assert_eq!(
        a.refusals().total(),
        0,
        "a refused nothing: {}",
        a.refusals()
    );
    within(10, "the attack's connections to be gone", async {
        while b.connection_count() > before {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop((rx, port, sender, receiver));
    a.shutdown().await;
    b.shutdown().await;
}

/// Waits (briefly) until `p` counted `added` more refusals for `reason` than in `before`,
/// then checks that nothing else was counted.
pub async fn expect_refusals<P: TestProc>(
    p: &P,
    before: &Refusals,
    reason: RefusalReason,
    added: u64,
) {
    let want = before.get(reason) + added;
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.refusals().get(reason) < want && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    let r = p.refusals();
    assert_eq!(r.get(reason), want, "{reason}: {r}");
    assert_eq!(
        r.total() - before.total(),
        added,
        "only {reason} was counted: {r}"
    );
}

/// Bad connections of kind `bad(victim)`, one after another (ten, or one for those that
/// last until the handshake deadline), under a legitimate session.
pub async fn one_bad_conn<A: Adapter>(
    x: &A,
    t: ChannelTransport,
    bad: impl FnOnce(&ProcId) -> BadConn,
) {
    under_attack(x, t, |b| async move {
        let bad = bad(b.proc_id());
        let slow = bad.reason == RefusalReason::HandshakeTimeout;
        let times = if slow { 1 } else { 10 };
        let before = b.refusals();
        for _ in 0..times {
            let took = run_bad_conn(b.addr(), &bad).await;
            if slow {
                assert!(
                    took >= HANDSHAKE_DEADLINE / 2,
                    "closed after {took:?}, before the handshake deadline"
                );
            }
        }
        expect_refusals(&b, &before, bad.reason, times).await;
    })
    .await;
}

/// `n` silent connections held open at once: every one is closed by the handshake deadline
/// at the latest; beyond `max_handshaking`, the oldest are closed at once to make room.
pub async fn many_held_conns<A: Adapter>(x: &A, t: ChannelTransport, n: usize) {
    under_attack(x, t, |b| async move {
        let before = b.refusals();
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(connect_raw(b.addr()).await.expect("connect"));
        }
        let limit = HANDSHAKE_DEADLINE + SLACK;
        for (i, s) in held.iter_mut().enumerate() {
            if read_until_closed(&mut **s, limit).await.is_none() {
                panic!("held connection {i} of {n} still open after {limit:?}");
            }
        }
        let evicted = (n as u64).saturating_sub(hostile_options().core.max_handshaking as u64);
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.refusals().total() - before.total() < n as u64 && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        let r = b.refusals();
        let (timeout, evict) = (
            RefusalReason::HandshakeTimeout,
            RefusalReason::HandshakeEvicted,
        );
        assert_eq!(r.get(evict) - before.get(evict), evicted, "{r}");
        assert_eq!(
            r.get(timeout) - before.get(timeout),
            n as u64 - evicted,
            "{r}"
        );
        assert_eq!(r.total() - before.total(), n as u64, "nothing else: {r}");
    })
    .await;
}

/// `n` connections opened and closed at once (every other one after a wrong magic).
pub async fn connect_close_cycles<A: Adapter>(x: &A, t: ChannelTransport, n: usize) {
    under_attack(x, t, |b| async move {
        for i in 0..n {
            let mut s = connect_raw(b.addr()).await.expect("connect");
            if i % 2 == 1 {
                let _ = s.write_all(b"PWIX\x01\x00\x00\x00").await;
            }
            drop(s);
            if i % 100 == 99 {
                // Let the victim's tasks run between bursts on a single-threaded executor.
                sleep(Duration::from_millis(1)).await;
            }
        }
        let r = b.refusals();
        // Closes without a byte are plain closes, not refusals; the wrong magics are,
        // unless the close overtook them.
        assert!(r.get(RefusalReason::BadMagic) <= n as u64 / 2, "{r}");
    })
    .await;
}

/// A hello header announcing a body far over the largest valid hello (but within the
/// message limit) must be refused at once, before any body byte is buffered (design §5:
/// before the handshake the limit is the largest valid hello). Today core buffers it until
/// the handshake deadline closes the connection.
pub async fn oversized_hello_is_refused_at_once<A: Adapter>(x: &A, t: ChannelTransport) {
    init_logging();
    let b = x
        .start(raw_reachable(t), "b", hostile_options())
        .await
        .expect("b");
    let bad = BadConn::frame_of_len(MAX_FRAME);
    let took = run_bad_conn(b.addr(), &bad).await;
    let r = b.refusals();
    b.shutdown().await;
    assert!(
        took < HANDSHAKE_DEADLINE / 2 && r.get(RefusalReason::FrameTooLarge) == 1,
        "a {MAX_FRAME}-byte hello header was closed after {took:?}; counts: {r}"
    );
}

/// Procs sharing a cookie keep a session delivering while a proc with another cookie tries
/// to send to one of them: its message comes back refused (`BadAuth`), and the victim
/// counts one `bad_auth` refusal and nothing else.
pub async fn wrong_cookie_is_refused<A: Adapter>(x: &A, t: ChannelTransport) {
    let shared = Cookie::new(b"conformance: the shared cookie").expect("a cookie");
    let opts = hostile_options().with_cookie(shared);
    under_attack_with(x, t, opts, |b| async move {
        let before = b.refusals();
        let guessed = Cookie::new(b"conformance: a guessed cookie").expect("a cookie");
        let m = x
            .start(
                raw_reachable(t),
                "mallory",
                hostile_options().with_cookie(guessed),
            )
            .await
            .expect("mallory");
        let (sender, _) = m.instance("sender").expect("sender");
        let dest = b
            .proc_id()
            .actor(Name::new("receiver").expect("a name"), 0)
            .port(1);
        sender
            .send_bytes(&dest, Bytes::from_static(b"let me in"))
            .await
            .expect("taken for sending");
        let back = within(
            10,
            "the refused message to come back",
            sender.next_undeliverable(),
        )
        .await
        .expect("a return");
        assert_eq!(back.reason, Undeliverable::Refused(RefuseReason::BadAuth));
        expect_refusals(&b, &before, RefusalReason::BadAuth, 1).await;
        drop(sender);
        m.shutdown().await;
    })
    .await;
}
