//! Hostile peers: raw connections to a proc that send garbage, other protocols, bad
//! preambles and frames, hellos for another proc, or nothing at all, one at a time and by
//! the hundred, while a legitimate session between two procs keeps running.
//!
//! Every case checks behaviour, not wording: the bad connection is closed by the proc (read
//! to end-of-stream or reset) within a bound, the proc's refusal counters moved by exactly
//! what the case caused, no connection is left behind, and the legitimate session delivered
//! every message once and in order, during the attack and after it.
//!
//! Throughout each case the victim's own counters ([`Held`]: connections, connections in
//! their handshake, bytes they buffer, sessions, messages held) are sampled, during the
//! attack and after it, and each must stay within the bound its configuration sets
//! ([`HeldBounds`]); a case returns the peaks and timings it saw ([`Figures`]), which
//! `examples/hostile_report.rs` prints as a table.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_io::Async;
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use procwire_smol::procwire_core::frame::{
    preamble, FrameHeader, FrameKind, Hello, HEADER_LEN, MAGIC, MAX_HANDSHAKE_FRAME_LEN,
    PREAMBLE_LEN,
};
use procwire_smol::{
    ChannelAddr, ChannelTransport, Config, Cookie, Held, Name, ProcId, RefusalReason, Refusals,
    RefuseReason, Undeliverable, UnixAddr,
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
    hello_from("mallory", to, 7)
}

/// The kind of the first frame in a reply that starts with the proc's preamble.
pub fn first_frame_kind(reply: &[u8]) -> Option<FrameKind> {
    if reply.get(..4) != Some(&MAGIC[..]) {
        return None;
    }
    FrameKind::from_u8(*reply.get(PREAMBLE_LEN)?)
}

/// Sessions a victim may hold during a case: the legitimate one. No attacker gets one.
const LEGIT_SESSIONS: usize = 1;

/// The most a victim may hold at once ([`Held`]), from its configuration.
#[derive(Clone, Copy, Debug)]
pub struct HeldBounds {
    /// `max_inbound_conns`.
    pub inbound_conns: usize,
    /// `max_handshaking`.
    pub handshaking: usize,
    /// `max_handshaking` × (the largest handshake frame + its header).
    pub handshake_bytes: usize,
    /// `max_inbound_sessions`, and no more than the legitimate session.
    pub inbound_sessions: usize,
    /// `link_held_msgs`, per inbound session.
    pub link_held_msgs: usize,
    /// `link_held_bytes`, per inbound session.
    pub link_held_bytes: usize,
}

impl HeldBounds {
    /// The bounds `cfg` sets.
    pub fn of(cfg: &Config) -> Self {
        HeldBounds {
            inbound_conns: cfg.max_inbound_conns,
            handshaking: cfg.max_handshaking,
            handshake_bytes: cfg.max_handshaking * (MAX_HANDSHAKE_FRAME_LEN as usize + HEADER_LEN),
            inbound_sessions: cfg.max_inbound_sessions.min(LEGIT_SESSIONS),
            link_held_msgs: cfg.link_held_msgs,
            link_held_bytes: cfg.link_held_bytes,
        }
    }

    /// Checks every figure of `h` (sampled `when`) against its bound.
    pub fn check(&self, h: &Held, when: &str) {
        let within = |what: &str, got: usize, bound: usize| {
            assert!(
                got <= bound,
                "{when}: {what} {got} over its bound {bound}: {h:?}"
            );
        };
        within("inbound_conns", h.inbound_conns, self.inbound_conns);
        within("handshaking", h.handshaking, self.handshaking);
        within("handshaking", h.handshaking, h.inbound_conns);
        within("handshake_bytes", h.handshake_bytes, self.handshake_bytes);
        within(
            "inbound_sessions",
            h.inbound_sessions,
            self.inbound_sessions,
        );
        let links = h.inbound_sessions;
        within(
            "link_held_msgs",
            h.link_held_msgs,
            links * self.link_held_msgs,
        );
        within(
            "link_held_bytes",
            h.link_held_bytes,
            links * self.link_held_bytes,
        );
    }
}

/// The larger of each figure of `a` and `b`.
fn max_each(a: Held, b: Held) -> Held {
    Held {
        inbound_conns: a.inbound_conns.max(b.inbound_conns),
        handshaking: a.handshaking.max(b.handshaking),
        handshake_bytes: a.handshake_bytes.max(b.handshake_bytes),
        inbound_sessions: a.inbound_sessions.max(b.inbound_sessions),
        link_held_msgs: a.link_held_msgs.max(b.link_held_msgs),
        link_held_bytes: a.link_held_bytes.max(b.link_held_bytes),
    }
}

/// Samples of a victim's [`Held`]: each is checked against the bounds, and the peaks kept.
#[derive(Debug)]
pub struct HeldWatch {
    bounds: HeldBounds,
    peak: Mutex<Held>,
    samples: AtomicU64,
}

impl HeldWatch {
    /// A watch for a proc configured with `cfg`.
    pub fn new(cfg: &Config) -> Self {
        HeldWatch {
            bounds: HeldBounds::of(cfg),
            peak: Mutex::new(Held::default()),
            samples: AtomicU64::new(0),
        }
    }

    /// Samples `p` (`when` names the moment, for failures); returns the sample.
    pub fn sample<P: TestProc>(&self, p: &P, when: &str) -> Held {
        let h = p.held();
        self.bounds.check(&h, when);
        let mut peak = self.peak.lock().unwrap_or_else(|e| e.into_inner());
        *peak = max_each(*peak, h);
        self.samples.fetch_add(1, Ordering::Relaxed);
        h
    }

    /// The largest of each figure over every sample so far.
    pub fn peak(&self) -> Held {
        *self.peak.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Samples taken so far.
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }
}

/// The proc under attack, with the watch on what it holds.
#[derive(Clone)]
pub struct Victim<P> {
    proc: P,
    watch: Arc<HeldWatch>,
}

impl<P: TestProc> Victim<P> {
    /// `proc`, started with `cfg`.
    pub fn new(proc: P, cfg: &Config) -> Self {
        Victim {
            proc,
            watch: Arc::new(HeldWatch::new(cfg)),
        }
    }

    /// Samples what the victim holds now and checks it against the bounds.
    pub fn sample(&self, when: &str) -> Held {
        self.watch.sample(&self.proc, when)
    }

    /// The watch.
    pub fn watch(&self) -> &HeldWatch {
        &self.watch
    }
}

impl<P> Deref for Victim<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.proc
    }
}

/// Samples `victim` every couple of milliseconds until `done` is set.
async fn sample_until<P: TestProc>(victim: &Victim<P>, done: &AtomicBool) {
    while !done.load(Ordering::Relaxed) {
        victim.sample("during the case");
        sleep(Duration::from_millis(2)).await;
    }
}

/// What one case saw.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Hostile connections the case opened.
    pub bad_conns: usize,
    /// The largest of each [`Held`] figure over the case.
    pub peak: Held,
    /// `Held` samples taken (each checked against the bounds).
    pub samples: u64,
    /// Per bad connection the victim closed: from its bytes being sent (or its connect, for
    /// one that sends nothing) to the victim closing it.
    pub refusal_times: Vec<Duration>,
    /// The largest gap between consecutive deliveries of the legitimate session during
    /// the attack (`None`: no legitimate session ran).
    pub legit_gap: Option<Duration>,
}

impl Figures {
    /// The median of [`Figures::refusal_times`] (`None` if the victim closed nothing).
    pub fn median_refusal(&self) -> Option<Duration> {
        let mut t = self.refusal_times.clone();
        t.sort();
        t.get(t.len() / 2).copied()
    }

    /// The longest of [`Figures::refusal_times`].
    pub fn max_refusal(&self) -> Option<Duration> {
        self.refusal_times.iter().max().copied()
    }
}

/// Polls every future of `futs` until all are done: their outputs, in order.
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every one ready"))
        .collect()
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

    /// A hello header announcing `MAX_FRAME` body bytes, and that whole body: the victim
    /// must refuse it on the header, and buffer none of the body.
    pub fn oversized_hello_with_body() -> Self {
        let mut bad = Self::frame_of_len(MAX_FRAME);
        bad.send.resize(bad.send.len() + MAX_FRAME as usize, 0x5a);
        bad
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

    /// A preamble and a hello header announcing the largest valid hello, then all of its
    /// body but the last byte: the most a connection in its handshake makes the proc hold.
    pub fn almost_whole_hello() -> Self {
        let mut v = preamble().to_vec();
        let len = MAX_HANDSHAKE_FRAME_LEN as usize;
        v.extend(frame(FrameKind::Hello, &vec![0x5a; len]));
        v.pop();
        Self::new(v, RefusalReason::HandshakeTimeout)
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

/// Opens `bad` to the victim, samples what the victim holds once the bytes are sent, and
/// checks the victim closes it as it must. Returns how long after it began sending the
/// bytes (after connecting, for a connection that sends nothing) that took.
pub async fn run_bad_conn<P: TestProc>(victim: &Victim<P>, bad: &BadConn) -> Duration {
    let mut s = connect_raw(victim.addr())
        .await
        .expect("connect to the victim");
    let sent = Instant::now();
    if !bad.send.is_empty() {
        // The proc may close as soon as it has seen enough; a failed write is fine then.
        let _ = s.write_all(&bad.send).await;
        let _ = s.flush().await;
    }
    victim.sample("a bad connection's bytes sent");
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
    sent.elapsed()
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

/// The largest gap between consecutive deliveries, counting only those made while
/// `counted`.
#[derive(Default)]
struct Gaps {
    last: Option<Instant>,
    largest: Duration,
}

impl Gaps {
    fn delivered(&mut self, counted: bool) {
        let now = Instant::now();
        if let (true, Some(last)) = (counted, self.last) {
            self.largest = self.largest.max(now - last);
        }
        self.last = Some(now);
    }
}

/// What an attack did.
#[derive(Debug, Default)]
pub struct Attack {
    /// Hostile connections opened.
    pub conns: usize,
    /// How long the victim took to close (or refuse) each one it did.
    pub refusal_times: Vec<Duration>,
}

/// Runs `attack` against proc `b` while `a` keeps sending to `b`, and checks the session
/// delivered everything in order during and after it, and that what `b` holds stayed
/// within its bounds throughout.
pub async fn under_attack<A, F, Fut>(x: &A, t: ChannelTransport, attack: F) -> Figures
where
    A: Adapter,
    F: FnOnce(Victim<A::Proc>) -> Fut,
    Fut: Future<Output = Attack>,
{
    under_attack_with(x, t, hostile_options(), attack).await
}

/// [`under_attack`] with both legitimate procs started with `opts`.
pub async fn under_attack_with<A, F, Fut>(
    x: &A,
    t: ChannelTransport,
    opts: procwire_smol::ProcOptions,
    attack: F,
) -> Figures
where
    A: Adapter,
    F: FnOnce(Victim<A::Proc>) -> Fut,
    Fut: Future<Output = Attack>,
{
    init_logging();
    let cfg = opts.core.clone();
    let a = x
        .start(raw_reachable(t), "a", opts.clone())
        .await
        .expect("a");
    let b = x.start(raw_reachable(t), "b", opts).await.expect("b");
    let victim = Victim::new(b, &cfg);
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = victim.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<()>();
    let dest = port.port_id().clone();
    let legit = Legit::new();
    let attacking = AtomicBool::new(false);
    let during = AtomicU64::new(0);
    let finished = AtomicBool::new(false);

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
        let mut gaps = Gaps::default();
        loop {
            let next = legit.received.load(Ordering::Relaxed);
            if legit.done.load(Ordering::Relaxed) && next == legit.sent.load(Ordering::Relaxed) {
                return gaps.largest;
            }
            let env = within(20, "a legit message", rx.recv_envelope())
                .await
                .expect("legit message");
            let seq = u64::from_le_bytes(env.payload[..8].try_into().expect("8 bytes"));
            assert_eq!(seq, next, "legit messages arrive once and in order");
            legit.received.store(next + 1, Ordering::Relaxed);
            let now_attacking = attacking.load(Ordering::Relaxed);
            gaps.delivered(now_attacking);
            if now_attacking {
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
        let before = victim.connection_count();
        attacking.store(true, Ordering::Relaxed);
        let trickle = async {
            let mut i = 0;
            while attacking.load(Ordering::Relaxed) || i < 50 {
                send_n(5).await;
                sleep(Duration::from_millis(3)).await;
                i += 5;
            }
        };
        let ((), done) = futures_lite::future::zip(trickle, async {
            let done = attack(victim.clone()).await;
            // A quick attack may be over before the trickle got through: the session must
            // carry some of it before the attack counts as over.
            while during.load(Ordering::Relaxed) < 20 {
                sleep(Duration::from_millis(2)).await;
            }
            attacking.store(false, Ordering::Relaxed);
            done
        })
        .await;
        send_n(200).await;
        legit.done.store(true, Ordering::Relaxed);
        (before, done)
    };
    let session = async {
        let r = futures_lite::future::zip(drive, receive).await;
        finished.store(true, Ordering::Relaxed);
        r
    };
    let (((before, done), gap), ()) = within(60, "the attack and the legit session", async {
        futures_lite::future::zip(session, sample_until(&victim, &finished)).await
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
    attack_cleared(&victim, before).await;
    drop((rx, port, sender, receiver));
    a.shutdown().await;
    victim.shutdown().await;
    Figures {
        bad_conns: done.conns,
        peak: victim.watch().peak(),
        samples: victim.watch().samples(),
        refusal_times: done.refusal_times,
        legit_gap: Some(gap),
    }
}

/// Waits until the attack's connections are gone from `victim` (no more connections than
/// `before` it, none in a handshake), then checks it holds no handshake bytes.
async fn attack_cleared<P: TestProc>(victim: &Victim<P>, before: usize) {
    within(10, "the attack's connections to be gone", async {
        while victim.connection_count() > before || victim.held().handshaking > 0 {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let after = victim.sample("after the attack");
    assert_eq!(after.handshake_bytes, 0, "after the attack: {after:?}");
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

/// Bad connections of kind `bad(victim)`, one after another (ten, or three for those that
/// last until the handshake deadline), under a legitimate session. Those that do not wait
/// for the deadline are closed well before it; those that do are not closed before it.
pub async fn one_bad_conn<A: Adapter>(
    x: &A,
    t: ChannelTransport,
    bad: impl FnOnce(&ProcId) -> BadConn,
) -> Figures {
    under_attack(x, t, |b| async move {
        let bad = bad(b.proc_id());
        let slow = bad.reason == RefusalReason::HandshakeTimeout;
        let times = if slow { 3 } else { 10 };
        let before = b.refusals();
        let mut took = Vec::with_capacity(times);
        for _ in 0..times {
            let t = run_bad_conn(&b, &bad).await;
            if slow {
                assert!(
                    t >= HANDSHAKE_DEADLINE / 2,
                    "closed after {t:?}, before the handshake deadline"
                );
            } else {
                assert!(
                    t < HANDSHAKE_DEADLINE / 2,
                    "{:?} closed after {t:?}, not at once",
                    bad.reason
                );
            }
            took.push(t);
        }
        expect_refusals(&*b, &before, bad.reason, times as u64).await;
        Attack {
            conns: times,
            refusal_times: took,
        }
    })
    .await
}

/// Waits for the victim to close each of `conns` (opened at the instant beside it):
/// how long after its opening each was closed.
async fn close_times(conns: Vec<(Box<dyn RawStream>, Instant)>) -> Vec<Duration> {
    let limit = HANDSHAKE_DEADLINE + SLACK;
    let n = conns.len();
    let waits = conns
        .into_iter()
        .enumerate()
        .map(|(i, (mut s, opened))| async move {
            if read_until_closed(&mut *s, limit).await.is_none() {
                panic!("held connection {i} of {n} still open after {limit:?}");
            }
            opened.elapsed()
        })
        .collect();
    join_all(waits).await
}

/// `n` connections held open at once, each after sending `send` (a handshake that never
/// completes): every one is closed by the handshake deadline at the latest; beyond
/// `max_handshaking`, the oldest are closed at once to make room. What the victim holds
/// stays within its bounds however many are open.
pub async fn many_held_conns<A: Adapter>(
    x: &A,
    t: ChannelTransport,
    n: usize,
    send: &[u8],
) -> Figures {
    under_attack(x, t, |b| async move {
        let before = b.refusals();
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = connect_raw(b.addr()).await.expect("connect");
            let opened = Instant::now();
            // An evicted connection may be closed before its bytes are all written.
            let _ = s.write_all(send).await;
            held.push((s, opened));
        }
        b.sample("every held connection open");
        let times = close_times(held).await;
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
        held_to_the_cap(b.watch(), n, send);
        Attack {
            conns: n,
            refusal_times: times,
        }
    })
    .await
}

/// Checks that `n` held connections that each sent `send` took the victim to its
/// handshake cap (when `n` exceeds it), and that it held some of their bytes: the bound
/// checks were not met trivially.
fn held_to_the_cap(watch: &HeldWatch, n: usize, send: &[u8]) {
    let peak = watch.peak();
    let cap = hostile_options().core.max_handshaking;
    assert_eq!(peak.handshaking, n.min(cap), "peaks: {peak:?}");
    if !send.is_empty() {
        assert!(peak.handshake_bytes > 0, "peaks: {peak:?}");
    }
}

/// `n` connections opened and closed at once (every other one after a wrong magic).
pub async fn connect_close_cycles<A: Adapter>(x: &A, t: ChannelTransport, n: usize) -> Figures {
    under_attack(x, t, |b| async move {
        for i in 0..n {
            let mut s = connect_raw(b.addr()).await.expect("connect");
            if i % 2 == 1 {
                let _ = s.write_all(b"PWIX\x01\x00\x00\x00").await;
            }
            drop(s);
            if i % 100 == 99 {
                b.sample("between connect/close bursts");
                // Let the victim's tasks run between bursts on a single-threaded executor.
                sleep(Duration::from_millis(1)).await;
            }
        }
        let r = b.refusals();
        // Closes without a byte are plain closes, not refusals; the wrong magics are,
        // unless the close overtook them.
        assert!(r.get(RefusalReason::BadMagic) <= n as u64 / 2, "{r}");
        Attack {
            conns: n,
            refusal_times: Vec::new(),
        }
    })
    .await
}

/// Procs sharing a cookie keep a session delivering while a proc with another cookie tries
/// to send to one of them: its message comes back refused (`BadAuth`), and the victim
/// counts one `bad_auth` refusal and nothing else. The refusal time runs from the send to
/// the return.
pub async fn wrong_cookie_is_refused<A: Adapter>(x: &A, t: ChannelTransport) -> Figures {
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
        let sent = Instant::now();
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
        let took = sent.elapsed();
        assert_eq!(back.reason, Undeliverable::Refused(RefuseReason::BadAuth));
        expect_refusals(&*b, &before, RefusalReason::BadAuth, 1).await;
        drop(sender);
        m.shutdown().await;
        Attack {
            conns: 1,
            refusal_times: vec![took],
        }
    })
    .await
}

/// Every case of the suite, for the tests and the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// [`BadConn::garbage`].
    GarbageBytes,
    /// [`BadConn::http`].
    HttpRequest,
    /// [`BadConn::wrong_magic`].
    WrongMagic,
    /// [`BadConn::wrong_version`].
    WrongVersion,
    /// [`BadConn::frame_of_len`] `u32::MAX`.
    HugeFrameLength,
    /// [`BadConn::frame_of_len`] one over [`MAX_FRAME`].
    FrameJustOverTheLimit,
    /// [`BadConn::frame_of_len`] [`MAX_FRAME`]: within the message limit, far over the
    /// largest hello; refused at once (design §5), before any body byte is buffered.
    OversizedHello,
    /// [`BadConn::oversized_hello_with_body`].
    OversizedHelloWithBody,
    /// [`wrong_cookie_is_refused`].
    WrongCookie,
    /// [`BadConn::hello_for_another_proc`].
    HelloForAnotherProc,
    /// [`BadConn::malformed_hello`].
    MalformedHello,
    /// [`BadConn::data_before_hello`].
    DataBeforeHello,
    /// [`BadConn::silent`].
    SilentConnection,
    /// [`BadConn::stalled_preamble`].
    StalledPreamble,
    /// [`many_held_conns`] with 200, silent.
    TwoHundredHeldConnections,
    /// [`many_held_conns`] with 200, each one byte short of a whole hello
    /// ([`BadConn::almost_whole_hello`]).
    TwoHundredAlmostWholeHellos,
    /// [`connect_close_cycles`] with 1000.
    AThousandConnectCloseCycles,
    /// [`session_table_flood`]: valid hellos from 200 made-up procs against a table of 32.
    SessionTableFlood,
}

impl Case {
    /// Every case, in the report's order.
    pub const ALL: [Case; 18] = [
        Case::GarbageBytes,
        Case::HttpRequest,
        Case::WrongMagic,
        Case::WrongVersion,
        Case::HugeFrameLength,
        Case::FrameJustOverTheLimit,
        Case::OversizedHello,
        Case::OversizedHelloWithBody,
        Case::WrongCookie,
        Case::HelloForAnotherProc,
        Case::MalformedHello,
        Case::DataBeforeHello,
        Case::SilentConnection,
        Case::StalledPreamble,
        Case::TwoHundredHeldConnections,
        Case::TwoHundredAlmostWholeHellos,
        Case::AThousandConnectCloseCycles,
        Case::SessionTableFlood,
    ];

    /// For the report.
    pub fn name(self) -> &'static str {
        match self {
            Case::GarbageBytes => "garbage bytes",
            Case::HttpRequest => "HTTP request",
            Case::WrongMagic => "wrong magic",
            Case::WrongVersion => "wrong version",
            Case::HugeFrameLength => "frame length u32::MAX",
            Case::FrameJustOverTheLimit => "frame length limit + 1",
            Case::OversizedHello => "1 MiB hello header",
            Case::OversizedHelloWithBody => "1 MiB hello header + body",
            Case::WrongCookie => "wrong cookie",
            Case::HelloForAnotherProc => "hello for another proc",
            Case::MalformedHello => "malformed hello",
            Case::DataBeforeHello => "data before hello",
            Case::SilentConnection => "silent connection",
            Case::StalledPreamble => "stalled half preamble",
            Case::TwoHundredHeldConnections => "200 held connections",
            Case::TwoHundredAlmostWholeHellos => "200 held, each a hello but 1 byte",
            Case::AThousandConnectCloseCycles => "1000 connect/close cycles",
            Case::SessionTableFlood => "200 made-up procs' hellos, table of 32",
        }
    }

    /// Runs the case against procs of `x` over `t`.
    pub async fn run<A: Adapter>(self, x: &A, t: ChannelTransport) -> Figures {
        match self {
            Case::GarbageBytes => one_bad_conn(x, t, |_| BadConn::garbage()).await,
            Case::HttpRequest => one_bad_conn(x, t, |_| BadConn::http()).await,
            Case::WrongMagic => one_bad_conn(x, t, |_| BadConn::wrong_magic()).await,
            Case::WrongVersion => one_bad_conn(x, t, |_| BadConn::wrong_version()).await,
            Case::HugeFrameLength => one_bad_conn(x, t, |_| BadConn::frame_of_len(u32::MAX)).await,
            Case::FrameJustOverTheLimit => {
                one_bad_conn(x, t, |_| BadConn::frame_of_len(MAX_FRAME + 1)).await
            }
            Case::OversizedHello => one_bad_conn(x, t, |_| BadConn::frame_of_len(MAX_FRAME)).await,
            Case::OversizedHelloWithBody => {
                one_bad_conn(x, t, |_| BadConn::oversized_hello_with_body()).await
            }
            Case::WrongCookie => wrong_cookie_is_refused(x, t).await,
            Case::HelloForAnotherProc => one_bad_conn(x, t, BadConn::hello_for_another_proc).await,
            Case::MalformedHello => one_bad_conn(x, t, |_| BadConn::malformed_hello()).await,
            Case::DataBeforeHello => one_bad_conn(x, t, |_| BadConn::data_before_hello()).await,
            Case::SilentConnection => one_bad_conn(x, t, |_| BadConn::silent()).await,
            Case::StalledPreamble => one_bad_conn(x, t, |_| BadConn::stalled_preamble()).await,
            Case::TwoHundredHeldConnections => many_held_conns(x, t, 200, &[]).await,
            Case::TwoHundredAlmostWholeHellos => {
                let send = BadConn::almost_whole_hello().send;
                many_held_conns(x, t, 200, &send).await
            }
            Case::AThousandConnectCloseCycles => connect_close_cycles(x, t, 1000).await,
            Case::SessionTableFlood => session_table_flood(x, t, 200, 32).await,
        }
    }
}

/// A valid hello from the made-up proc `from` (no cookie) to `to`, in session `session`
/// (also its incarnation).
pub fn hello_from(from: &str, to: ProcId, session: u64) -> Vec<u8> {
    let from: ProcId = format!("tcp:127.0.0.1:9,{from}")
        .parse()
        .expect("a proc id");
    let hello = Hello {
        from,
        to,
        incarnation: session,
        session,
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

/// Session-table exhaustion: `n` made-up procs each open a session with a valid hello on
/// a short connection (read the welcome, close), against a victim that keeps `table`
/// sessions. The table never holds more than `table`; the attackers' sessions, all
/// disconnected, are evicted oldest first; and a legitimate proc that comes afterwards
/// still gets a session and delivers every message in order.
pub async fn session_table_flood<A: Adapter>(
    x: &A,
    t: ChannelTransport,
    n: usize,
    table: usize,
) -> Figures {
    init_logging();
    let mut opts = hostile_options();
    opts.core.max_inbound_sessions = table;
    let cfg = opts.core.clone();
    let b = x
        .start(raw_reachable(t), "b", opts.clone())
        .await
        .expect("b");
    let mut bounds = HeldBounds::of(&cfg);
    bounds.inbound_sessions = table;
    let mut peak = Held::default();
    let mut samples = 0;
    let mut refusal_times = Vec::new();
    for i in 0..n {
        let mut s = connect_raw(b.addr()).await.expect("connect");
        let sent = Instant::now();
        s.write_all(&hello_from(
            &format!("m{i}"),
            b.proc_id().clone(),
            i as u64 + 1,
        ))
        .await
        .expect("send hello");
        let mut reply = [0u8; PREAMBLE_LEN + HEADER_LEN];
        s.read_exact(&mut reply).await.expect("a reply");
        refusal_times.push(sent.elapsed());
        assert_eq!(
            first_frame_kind(&reply),
            Some(FrameKind::Welcome),
            "attacker {i} is welcomed: the table makes room"
        );
        drop(s);
        let h = b.held();
        bounds.check(&h, "during the flood");
        peak = max_each(peak, h);
        samples += 1;
    }
    // Let the victim see the last attacker's close.
    sleep(Duration::from_millis(50)).await;
    let h = b.held();
    bounds.check(&h, "after the flood");
    assert_eq!(
        h.inbound_sessions, table,
        "the table is full of attackers: {h:?}"
    );

    // A legitimate proc arrives after the flood: it gets a session and delivers.
    let a = x.start(raw_reachable(t), "a", opts).await.expect("a");
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<u64>();
    let started = Instant::now();
    let mut gaps = Duration::ZERO;
    for i in 0..100u64 {
        port.port_ref().send(&sender, i).await.expect("legit send");
        let at = Instant::now();
        let got = within(10, "a legit message after the flood", rx.recv())
            .await
            .expect("a message");
        assert_eq!(got, i, "legit messages arrive once and in order");
        gaps = gaps.max(at.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        b.stats().sessions_evicted >= 1,
        "the legitimate session evicted a retained attacker's"
    );
    let h = b.held();
    bounds.check(&h, "after the legitimate session");
    peak = max_each(peak, h);
    drop((sender, receiver, rx, port));
    crate::scenarios::shutdown_clean(&a).await;
    crate::scenarios::shutdown_clean(&b).await;
    Figures {
        bad_conns: n,
        peak,
        samples: samples + 2,
        refusal_times,
        legit_gap: Some(gaps),
    }
}
