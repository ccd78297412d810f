//! The proc machine driven by an arbitrary sequence of operations.
//!
//! Two procs, `a` at `local:1` and `b` at `local:2`, sit on a harness network: dials to
//! `local:1` / `local:2` reach them, anything else (`local:3`, proc `c`) goes nowhere. The
//! operations (decoded with `arbitrary`) send messages of every kind (local and remote
//! ports, missing ports and actors, a wrong proc name, an unreachable proc, oversized
//! payloads, foreign senders), complete or fail dials, move bytes across connections in
//! arbitrary amounts (or run the network fairly for a few rounds), cut connections, advance
//! time by arbitrary amounts or to the next deadline, shut procs down, restart them with a
//! new incarnation, open and close ports, remove actors, hand deliveries back as
//! undeliverable, change the address book, and inject hostile bytes (raw garbage, a valid
//! preamble and then garbage, or forged hello / welcome / data / ack frames) on new or
//! existing connections.
//!
//! Checked at every step:
//! - no panic, whatever the bytes;
//! - while output is queued `poll_timeout()` is `Some(last now)`; after `handle_timeout(t)`
//!   and draining, `poll_timeout()` is `None` or later than `t`;
//! - `Deliver` only for ports that exist (a once-port takes one delivery), never with a
//!   return reason; `Returned` only to live local senders, with a reason;
//! - `Transmit` and `Close` only name connections the proc has and has not closed;
//! - sends: refused when shutting down, from a foreign sender, or over the frame limit;
//!   `WouldBlock` never on an empty link; a remote send is accepted only with window room
//!   and then adds exactly one message to the link's queue; a local send is resolved
//!   (delivered or returned) at once;
//! - `ShutdownComplete` at most once per proc start.
//!
//! While no hostile bytes were injected (the harness only moves real bytes, in order):
//! - no connection fails with a framing, envelope or protocol error (a frame over a tiny
//!   configured limit excepted);
//! - per (sending proc start, receiving proc), deliveries follow send order;
//! - no message is delivered twice, delivered to another port than it was sent to, or
//!   returned to another sender; it is returned at most once by the receiving proc's
//!   verdict (no such actor or port, hop budget) and at most once by the sending side
//!   (unreachable, refused, restarted, session lost, too large, shutting down). Both may
//!   happen to one message, and so may delivery and a return: a message transmitted but
//!   not yet acknowledged when the sender gives up has an unknown fate;
//! - if no proc was restarted either, then after the operations a fair network (every dial
//!   succeeds where a proc listens, every byte arrives, time runs to each next deadline)
//!   resolves every accepted message (delivered, returned, or reported as a dropped
//!   return), and every link that refused a send with `WouldBlock` announces `Writable`.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use procwire_core::auth::{Cookie, NONCE_LEN};
use procwire_core::envelope::{append_envelope, Envelope, Link, RefuseReason, Undeliverable};
use procwire_core::frame::{append_frame, preamble, FrameError, FrameKind, Hello, Welcome};
use procwire_core::id::{ActorId, ChannelAddr, Name, PortId, ProcId};
use procwire_core::proc::{Config, ConnError, ConnId, Event, LocalPort, Output, Proc, SendError};
use procwire_core::registry::PortKind;
use procwire_core::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------

#[derive(Arbitrary, Debug)]
struct Cfg {
    max_frame: u16,
    window_msgs: u8,
    window_bytes: u16,
    ack_every_msgs: u8,
    ack_every_bytes: u16,
    coalesce: u16,
    inbound: u8,
    /// Cookies: none on either side (0 mod 4 on a's), else the same on both, or (b's 0
    /// mod 8) another one on b: the authenticated handshake, and its failures.
    cookie: u8,
    timing: Timing,
}

#[derive(Arbitrary, Debug)]
enum Timing {
    /// `Config::default()`'s intervals.
    Default,
    /// Everything in milliseconds, sessions forgotten quickly.
    Fast,
    /// Idle timeout shorter than the heartbeat, retention shorter than everything.
    Hostile,
    /// Each interval 1 µs ..= 65.5 s.
    Custom([u16; 12]),
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Cfg {
    fn build(&self) -> Config {
        let mut c = Config {
            max_frame_len: 32 + u32::from(self.max_frame) % 8192,
            window_bytes: 64 + usize::from(self.window_bytes),
            window_msgs: 1 + usize::from(self.window_msgs % 16),
            ack_every_msgs: 1 + u64::from(self.ack_every_msgs % 8),
            ack_every_bytes: 1 + usize::from(self.ack_every_bytes),
            coalesce_bytes: usize::from(self.coalesce),
            max_inbound_sessions: 1 + usize::from(self.inbound % 4),
            // Small chunks and caches: frames straddle chunk boundaries and ids overflow
            // the cache (travelling whole) within a few messages.
            chunk_bytes: 16 + usize::from(self.coalesce % 512),
            id_cache_entries: u16::from(self.ack_every_msgs % 3),
            // Ports fill after a few messages: links hold until `Consume`.
            port_queue_msgs: 1 + usize::from(self.window_msgs % 6),
            link_held_msgs: 1 + usize::from(self.inbound % 16),
            ..Config::default()
        };
        match &self.timing {
            Timing::Default => {}
            Timing::Fast => {
                c.ack_delay = ms(1);
                c.heartbeat_interval = ms(50);
                c.idle_timeout = ms(200);
                c.connect_timeout = ms(100);
                c.backoff_base = ms(1);
                c.backoff_max = ms(20);
                c.unreachable_timeout = ms(500);
                c.session_retention = ms(300);
                c.shutdown_timeout = ms(200);
            }
            Timing::Hostile => {
                c.ack_delay = ms(50);
                c.heartbeat_interval = ms(100);
                c.idle_timeout = ms(30);
                c.connect_timeout = ms(20);
                c.backoff_base = ms(1);
                c.backoff_max = ms(5);
                c.backoff_jitter_pct = 100;
                c.unreachable_timeout = ms(100);
                c.session_retention = ms(10);
                c.shutdown_timeout = ms(50);
            }
            Timing::Custom(t) => {
                // Zero-length intervals are not a meaningful configuration; keep >= 1 µs.
                let d = |i: usize| Duration::from_micros(1 + u64::from(t[i]) * 1000 / 2);
                c.ack_delay = d(0);
                c.heartbeat_interval = d(1);
                c.idle_timeout = d(2);
                c.connect_timeout = d(3);
                c.backoff_base = d(4);
                c.backoff_max = d(5);
                c.backoff_jitter_pct = u64::from(t[6] % 101);
                c.unreachable_timeout = d(7);
                c.session_retention = d(8);
                c.shutdown_timeout = d(9);
            }
        }
        c
    }
}

#[derive(Arbitrary, Debug)]
enum Dest {
    /// A port of the sending proc (open or closed).
    Local(u8),
    /// A port of the other proc (open or closed).
    Remote(u8),
    LocalNoActor,
    RemoteNoActor,
    /// The other proc's address with another proc's name: refused as `WrongProc`.
    WrongName,
    /// Proc `c` at `local:3`: nobody listens.
    Nowhere,
}

#[derive(Arbitrary, Debug)]
enum Size {
    Small(u8),
    Large(u16),
    /// Over the sending proc's frame limit by this much.
    OverLimit(u8),
}

#[derive(Arbitrary, Debug)]
enum Step {
    Micros(u16),
    Millis(u16),
    Secs(u8),
}

impl Step {
    fn duration(&self) -> Duration {
        match *self {
            Step::Micros(n) => Duration::from_micros(n.into()),
            Step::Millis(n) => Duration::from_millis(n.into()),
            Step::Secs(n) => Duration::from_secs(n.into()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Amount {
    All,
    One,
    Some(u16),
}

#[derive(Arbitrary, Debug)]
enum Which {
    A,
    B,
    Both,
}

/// A forged frame.
#[derive(Arbitrary, Debug)]
enum Fake {
    Hello {
        from: u8,
        to: u8,
        incarnation: u8,
        session: u8,
        resume: bool,
        max: u16,
        /// A nonce (all this byte), as a dialer with a cookie sends.
        auth: Option<u8>,
    },
    Welcome {
        incarnation: u8,
        next: Option<u8>,
        max: u16,
    },
    Refuse(u8),
    Data {
        sender: u8,
        port: u8,
        ttl: u8,
        returned: Option<u8>,
        short_ids: bool,
        payload: Vec<u8>,
    },
    Ack(u16),
    Ping,
    Pong,
    Close,
    Raw {
        kind: u8,
        flags: u8,
        body: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
enum Injection {
    Raw(Vec<u8>),
    PreambleThen(Vec<u8>),
    Frames { preamble: bool, frames: Vec<Fake> },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Send {
        b: bool,
        sender: u8,
        dest: Dest,
        size: Size,
    },
    /// Complete a pending dial: the proc listening at the address accepts it.
    Connect {
        pick: u8,
    },
    /// A pending dial fails.
    FailDial {
        pick: u8,
    },
    /// Move bytes waiting on a connection into its proc (and, once drained, a close).
    Flow {
        pick: u8,
        amount: Amount,
    },
    /// The network cuts a connection: both ends learn it is closed.
    Cut {
        pick: u8,
    },
    Tick {
        which: Which,
        step: Step,
    },
    NextDeadline {
        b: bool,
    },
    Shutdown {
        b: bool,
    },
    Restart {
        b: bool,
    },
    OpenPort {
        b: bool,
        actor: u8,
        once: bool,
    },
    ClosePort {
        b: bool,
        pick: u8,
    },
    /// Removes an actor and its ports; later sends from it are foreign.
    RemoveActor {
        b: bool,
        actor: u8,
    },
    /// The consumer of a port takes some of what was delivered to it.
    Consume {
        b: bool,
        pick: u8,
        msgs: u8,
    },
    /// The driver could not place a delivered envelope and hands it back.
    HandBack {
        b: bool,
        pick: u8,
    },
    /// Points the address book entry of proc `proc` at another address.
    Readdress {
        b: bool,
        proc: u8,
        addr: u8,
    },
    /// Hostile bytes on a fresh accepted connection or an existing one.
    Inject {
        b: bool,
        target: u8,
        chunk: u8,
        bytes: Injection,
    },
    /// Runs the network fairly for a few rounds (see `fair_round`), so that short inputs
    /// reach established sessions.
    Pump {
        rounds: u8,
        advance: bool,
    },
    /// Answer a pending dial as a fake acceptor speaking forged frames.
    FakeAcceptor {
        pick: u8,
        chunk: u8,
        frames: Vec<Fake>,
    },
}

#[derive(Arbitrary, Debug)]
struct Scenario {
    cfg_a: Cfg,
    cfg_b: Cfg,
    ops: Vec<Op>,
}

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// `PROCWIRE_FUZZ_TRACE=1` prints every operation and output (to read a crash).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("PROCWIRE_FUZZ_TRACE").is_some())
}

fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

fn proc_id(i: usize) -> ProcId {
    ProcId::new(ChannelAddr::Local(i as u64 + 1), name(["a", "b", "c"][i]))
}

/// Proc ids forged frames may claim.
fn claimed(i: u8) -> ProcId {
    match i % 5 {
        0 => proc_id(0),
        1 => proc_id(1),
        2 => proc_id(2),
        3 => ProcId::new(ChannelAddr::Local(1), name("b")),
        _ => ProcId::new(ChannelAddr::Local(9), name("zz")),
    }
}

#[derive(Debug)]
struct PortModel {
    id: PortId,
    kind: PortKind,
    open: bool,
    /// The handle core gave it when it was opened; it goes stale when the port closes.
    handle: LocalPort,
}

struct Node {
    proc: Proc,
    cfg: Config,
    /// `now` of the last `handle_*` call.
    last_now: Instant,
    actors: Vec<ActorId>,
    removed: Vec<bool>,
    /// Envelopes delivered and not yet handed back by `HandBack`.
    placed: Vec<Envelope>,
    /// Every port opened in this start of the proc, open or not.
    ports: Vec<PortModel>,
    shutting: bool,
    shutdown_complete: bool,
    starts: u64,
}

impl Node {
    fn start(i: usize, cfg: Config, starts: u64) -> Node {
        let incarnation = 1000 * (i as u64 + 1) + starts;
        let seed = 77 * incarnation;
        let mut proc = Proc::new(proc_id(i), cfg.clone(), incarnation, seed);
        let x = proc.reserve_root("x").expect("fresh registry");
        let xc = proc.child(&x).expect("x exists");
        let y = proc.reserve_root("y").expect("fresh registry");
        let mut ports = Vec::new();
        for (actor, kind) in [
            (&x, PortKind::Stream),
            (&x, PortKind::Once),
            (&xc, PortKind::Stream),
            (&y, PortKind::Stream),
        ] {
            let id = proc.open_port(actor, kind, None).expect("actor exists");
            let handle = proc.local_port(&id).expect("just opened");
            ports.push(PortModel {
                id,
                kind,
                open: true,
                handle,
            });
        }
        for (index, kind) in [(7, PortKind::Stream), (8, PortKind::Once)] {
            let id = y.port(index);
            proc.bind_port(&id, kind, None)
                .expect("well-known port is free");
            let handle = proc.local_port(&id).expect("just bound");
            ports.push(PortModel {
                id,
                kind,
                open: true,
                handle,
            });
        }
        Node {
            proc,
            cfg,
            last_now: Instant::ZERO,
            actors: vec![x, xc, y],
            removed: vec![false; 3],
            placed: Vec::new(),
            ports,
            shutting: false,
            shutdown_complete: false,
            starts,
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum EndState {
    /// The proc asked to dial; the harness has not answered yet.
    Dialing,
    Open,
}

/// One end of a connection, as the harness sees it.
#[derive(Debug)]
struct End {
    node: usize,
    conn: ConnId,
    addr: Option<ChannelAddr>,
    state: EndState,
    /// The proc still has this connection (not closed by it or reported closed to it).
    live: bool,
    /// The other end, for connections between the two procs.
    peer: Option<usize>,
    /// Bytes written by the other end, not yet handed to this end's proc.
    inbox: Vec<u8>,
    /// The other end closed: once the inbox is drained, this end's proc is told.
    peer_closed: bool,
}

#[derive(Debug)]
struct Sent {
    from: usize,
    from_start: u64,
    sender: ActorId,
    dest: PortId,
}

struct World {
    nodes: [Node; 2],
    ends: Vec<End>,
    now: Instant,
    /// Hostile bytes were injected: message accounting no longer holds.
    tainted: bool,
    restarted: bool,
    next_id: u64,
    sent: BTreeMap<u64, Sent>,
    delivered: BTreeMap<u64, u32>,
    /// Returns by kind of verdict: `[receiver's, sender side's]`.
    returned: BTreeMap<u64, [u32; 2]>,
    dropped: BTreeMap<u64, u32>,
    /// Links that refused a send with `WouldBlock` and have not announced `Writable` yet.
    blocked: BTreeSet<(usize, ProcId)>,
    /// Per (sending proc, its start, receiving proc): the last message id delivered, to
    /// check send order (ids grow in send order).
    last_delivered: BTreeMap<(usize, u64, usize), u64>,
}

const TAG: &[u8; 2] = b"PW";

fn payload_id(p: &[u8]) -> Option<u64> {
    if p.len() >= 10 && &p[..2] == TAG {
        Some(u64::from_le_bytes(p[2..10].try_into().expect("8 bytes")))
    } else {
        None
    }
}

impl World {
    fn new(s: &Scenario) -> World {
        let mut cfgs = [s.cfg_a.build(), s.cfg_b.build()];
        if s.cfg_a.cookie % 4 != 0 {
            let ours = Cookie::new(b"fuzz cookie").expect("a cookie");
            let theirs = Cookie::new(b"another cookie").expect("a cookie");
            cfgs[0].cookie = Some(ours.clone());
            cfgs[1].cookie = Some(if s.cfg_b.cookie % 8 == 0 {
                theirs
            } else {
                ours
            });
        }
        // Keep the number of timer rounds a fair network needs to resolve everything
        // bounded: no periodic timer (heartbeat, reconnect backoff) may tick more than a few
        // hundred times within the longest wait (giving up on a peer, graceful shutdown).
        let longest = cfgs
            .iter()
            .flat_map(|c| [c.unreachable_timeout, c.shutdown_timeout, c.connect_timeout])
            .max()
            .unwrap_or(Duration::ZERO);
        let floor = Duration::from_micros(longest.as_micros() / 256);
        for c in &mut cfgs {
            c.heartbeat_interval = c.heartbeat_interval.max(floor);
            c.backoff_base = c.backoff_base.max(floor);
            c.backoff_max = c.backoff_max.max(c.backoff_base);
        }
        let [cfg_a, cfg_b] = cfgs;
        World {
            nodes: [Node::start(0, cfg_a, 0), Node::start(1, cfg_b, 0)],
            ends: Vec::new(),
            now: Instant::from_micros(1_000_000),
            tainted: false,
            restarted: false,
            next_id: 1,
            sent: BTreeMap::new(),
            delivered: BTreeMap::new(),
            returned: BTreeMap::new(),
            dropped: BTreeMap::new(),
            blocked: BTreeSet::new(),
            last_delivered: BTreeMap::new(),
        }
    }

    fn find_end(&self, node: usize, conn: ConnId) -> Option<usize> {
        self.ends
            .iter()
            .position(|e| e.node == node && e.conn == conn && e.live)
    }

    fn touch(&mut self, n: usize) {
        self.nodes[n].last_now = self.now;
    }

    /// Drains node `n`'s outputs, checking each.
    fn drain(&mut self, n: usize) {
        let mut guard = 0u32;
        loop {
            let t = self.nodes[n].proc.poll_timeout();
            let Some(out) = self.nodes[n].proc.poll_output() else {
                break;
            };
            assert_eq!(
                t,
                Some(self.nodes[n].last_now),
                "poll_timeout must report the last now while output is queued"
            );
            guard += 1;
            assert!(guard < 1_000_000, "output never runs dry");
            self.output(n, out);
        }
    }

    fn output(&mut self, n: usize, out: Output) {
        if trace() {
            eprintln!("  {} {:?} out {out:?}", ["a", "b"][n], self.now);
        }
        match out {
            Output::Deliver { port: handle, env } => {
                assert!(env.returned.is_none(), "delivered a return: {env:?}");
                assert_eq!(env.dest.actor().proc(), self.nodes[n].proc.id());
                let port = self.nodes[n]
                    .ports
                    .iter_mut()
                    .find(|p| p.id == env.dest && p.open)
                    .unwrap_or_else(|| panic!("delivered to a port that is not open: {env:?}"));
                assert_eq!(port.handle, handle, "delivered under another port's handle");
                if port.kind == PortKind::Once {
                    port.open = false;
                }
                let placed = &mut self.nodes[n].placed;
                if placed.len() < 8 {
                    placed.push(env.clone());
                }
                if let Some(id) = payload_id(&env.payload) {
                    *self.delivered.entry(id).or_default() += 1;
                    if !self.tainted {
                        let sent = self.sent.get(&id).expect("delivered a message never sent");
                        assert_eq!(
                            env.dest, sent.dest,
                            "message {id} delivered to another port"
                        );
                        assert_eq!(env.sender, sent.sender, "message {id} changed sender");
                        assert_eq!(self.delivered[&id], 1, "message {id} delivered twice");
                        let link = (sent.from, sent.from_start, n);
                        if let Some(last) = self.last_delivered.insert(link, id) {
                            assert!(last < id, "message {id} delivered after {last}, sent later");
                        }
                    }
                }
                // Its ids go back for reuse: the checks above then also cover recycling.
                self.nodes[n].proc.recycle(env);
            }
            Output::Returned(env) => {
                assert!(env.returned.is_some(), "a return without a reason: {env:?}");
                assert_eq!(env.sender.proc(), self.nodes[n].proc.id());
                assert!(
                    self.nodes[n].proc.registry().contains_actor(&env.sender),
                    "returned to a sender that is gone: {env:?}"
                );
                if let Some(id) = payload_id(&env.payload) {
                    let verdict = match env.returned {
                        Some(
                            Undeliverable::NoSuchActor
                            | Undeliverable::NoSuchPort
                            | Undeliverable::TtlExhausted,
                        ) => 0,
                        _ => 1,
                    };
                    let count = &mut self.returned.entry(id).or_default()[verdict];
                    *count += 1;
                    let count = *count;
                    if !self.tainted {
                        let sent = self.sent.get(&id).expect("returned a message never sent");
                        assert_eq!(env.sender, sent.sender, "message {id} returned elsewhere");
                        assert_eq!(env.dest, sent.dest);
                        assert_eq!(count, 1, "message {id} returned twice: {env:?}");
                    }
                }
            }
            Output::Dial { conn, addr } => {
                assert!(
                    self.find_end(n, conn).is_none(),
                    "dial reuses live connection {conn}"
                );
                self.ends.push(End {
                    node: n,
                    conn,
                    addr: Some(*addr),
                    state: EndState::Dialing,
                    live: true,
                    peer: None,
                    inbox: Vec::new(),
                    peer_closed: false,
                });
            }
            Output::Transmit { conn, data } => {
                let e = self
                    .find_end(n, conn)
                    .unwrap_or_else(|| panic!("transmit on unknown or closed {conn}"));
                assert_eq!(
                    self.ends[e].state,
                    EndState::Open,
                    "transmit on {conn} before it connected"
                );
                if let Some(p) = self.ends[e].peer {
                    if self.ends[p].live {
                        self.ends[p].inbox.extend_from_slice(&data);
                    }
                }
            }
            Output::Close { conn } => {
                let e = self
                    .find_end(n, conn)
                    .unwrap_or_else(|| panic!("close of unknown or closed {conn}"));
                self.ends[e].live = false;
                self.ends[e].inbox.clear();
                if let Some(p) = self.ends[e].peer {
                    self.ends[p].peer_closed = true;
                }
            }
            Output::Event(ev) => match ev {
                Event::ShutdownComplete => {
                    let node = &mut self.nodes[n];
                    assert!(node.shutting, "shutdown completed without being asked");
                    assert!(!node.shutdown_complete, "shutdown completed twice");
                    node.shutdown_complete = true;
                }
                Event::ReturnDropped { payload, .. } => {
                    if let Some(id) = payload_id(&payload) {
                        *self.dropped.entry(id).or_default() += 1;
                    }
                }
                Event::Writable { peer } => {
                    self.blocked.remove(&(n, peer));
                }
                Event::ConnectionFailed { conn, error } => {
                    // Real bytes, moved in order, always frame and parse. A frame over the
                    // acceptor's limit can still happen honestly (a hello larger than a tiny
                    // configured limit); timeouts and refusals are not stream errors.
                    let stream_error = match &error {
                        ConnError::Frame(FrameError::TooLarge { .. }) => false,
                        ConnError::Frame(_) | ConnError::Envelope(_) | ConnError::Protocol(_) => {
                            true
                        }
                        _ => false,
                    };
                    assert!(
                        self.tainted || !stream_error,
                        "{} closed {conn} for {error:?} though only real bytes were sent",
                        ["a", "b"][n]
                    );
                }
                _ => {}
            },
            other => panic!("the fuzz harness does not know output {other:?}"),
        }
    }

    fn resolved(&self, id: u64) -> bool {
        self.delivered.contains_key(&id)
            || self.returned.contains_key(&id)
            || self.dropped.contains_key(&id)
    }

    fn timeout(&mut self, n: usize) {
        let now = self.now;
        self.touch(n);
        self.nodes[n].proc.handle_timeout(now);
        self.drain(n);
        if let Some(t) = self.nodes[n].proc.poll_timeout() {
            assert!(
                t > now,
                "poll_timeout {t:?} not after handle_timeout({now:?}): a busy loop"
            );
        }
    }

    fn send(&mut self, n: usize, sender: u8, dest: &Dest, size: &Size) {
        let other = 1 - n;
        let node = &self.nodes[n];
        let (sender, foreign) = match sender % 4 {
            3 => (self.nodes[other].actors[0].clone(), true),
            i => (
                node.actors[usize::from(i)].clone(),
                node.removed[usize::from(i)],
            ),
        };
        let pick = |ports: &[PortModel], i: u8| ports[usize::from(i) % ports.len()].id.clone();
        let ghost = |p: ProcId| p.actor(name("ghost"), 0).port(1024);
        let (dest, local) = match dest {
            Dest::Local(i) => (pick(&node.ports, *i), true),
            Dest::Remote(i) => (pick(&self.nodes[other].ports, *i), false),
            Dest::LocalNoActor => (ghost(proc_id(n)), true),
            Dest::RemoteNoActor => (ghost(proc_id(other)), false),
            Dest::WrongName => (
                ProcId::new(proc_id(other).addr().clone(), name("q"))
                    .actor(name("x"), 0)
                    .port(1024),
                false,
            ),
            Dest::Nowhere => (proc_id(2).actor(name("x"), 0).port(1024), false),
        };
        let max = node.cfg.max_frame_len as usize;
        let len = match *size {
            Size::Small(k) => 10 + usize::from(k),
            Size::Large(k) => 10 + usize::from(k),
            Size::OverLimit(k) => max + 1 + usize::from(k),
        };
        let id = self.next_id;
        self.next_id += 1;
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(TAG);
        payload.extend_from_slice(&id.to_le_bytes());
        payload.resize(len, 0xAB);
        let env = Envelope::new(sender.clone(), dest.clone(), Bytes::from(payload));

        let peer = dest.actor().proc().clone();
        let before = node.proc.queued(&peer);
        let cfg = node.cfg.clone();
        let port_full = local && node.proc.registry().is_full(&dest, cfg.port_limits());
        let shutting = node.shutting;
        let now = self.now;
        self.touch(n);
        // Every third message each way a driver can send: owned, borrowed, and borrowed
        // with the payload as a slice of the driver's own.
        let proc = &mut self.nodes[n].proc;
        let result = match id % 3 {
            0 => proc.handle_send(now, env),
            1 => proc.handle_send_ref(now, &env),
            _ => {
                let head = Envelope {
                    payload: Bytes::new(),
                    ..env.clone()
                };
                proc.handle_send_parts(now, &head, &env.payload)
            }
        };
        if shutting {
            assert_eq!(result, Err(SendError::ShuttingDown));
        } else if foreign {
            assert_eq!(result, Err(SendError::SenderNotLive));
        } else if len > max {
            assert!(
                matches!(result, Err(SendError::TooLarge { .. })),
                "{len}-byte payload over the {max}-byte limit: {result:?}"
            );
        }
        match result {
            Ok(()) => {
                self.sent.insert(
                    id,
                    Sent {
                        from: n,
                        from_start: self.nodes[n].starts,
                        sender,
                        dest,
                    },
                );
                if !local {
                    assert!(
                        before.0 == 0
                            || (before.0 < cfg.window_msgs && before.1 + len <= cfg.window_bytes),
                        "send accepted into a full window: {before:?} {cfg:?}"
                    );
                    let after = self.nodes[n].proc.queued(&peer);
                    assert_eq!(after.0, before.0 + 1, "an accepted send is queued once");
                }
            }
            Err(SendError::WouldBlock) if local => {
                assert!(port_full, "a local send blocked on a port with room");
            }
            Err(SendError::WouldBlock) => {
                assert!(before.0 > 0, "WouldBlock on an empty link");
                self.blocked.insert((n, peer.clone()));
            }
            Err(_) => {}
        }
        self.drain(n);
        if port_full && !shutting && !foreign && len <= max {
            assert_eq!(
                result,
                Err(SendError::WouldBlock),
                "a send into a full port"
            );
        }
        if result.is_ok() && local {
            assert!(
                self.resolved(id),
                "local send {id} neither delivered nor returned"
            );
        }
    }

    fn live_ends(&self, f: impl Fn(&End) -> bool) -> Vec<usize> {
        (0..self.ends.len())
            .filter(|&i| self.ends[i].live && f(&self.ends[i]))
            .collect()
    }

    fn node_at(&self, addr: &ChannelAddr) -> Option<usize> {
        (0..2).find(|&i| self.nodes[i].proc.id().addr() == addr)
    }

    fn connect(&mut self, e: usize) {
        let n = self.ends[e].node;
        let conn = self.ends[e].conn;
        let addr = self.ends[e]
            .addr
            .clone()
            .expect("a dialing end has an address");
        let Some(m) = self.node_at(&addr) else {
            return self.fail_dial(e);
        };
        let now = self.now;
        self.touch(m);
        let accepted = self.nodes[m].proc.handle_accepted(now);
        assert!(
            self.find_end(m, accepted).is_none(),
            "accepted a live {accepted}"
        );
        self.ends.push(End {
            node: m,
            conn: accepted,
            addr: None,
            state: EndState::Open,
            live: true,
            peer: Some(e),
            inbox: Vec::new(),
            peer_closed: false,
        });
        let a = self.ends.len() - 1;
        self.ends[e].peer = Some(a);
        self.ends[e].state = EndState::Open;
        self.drain(m);
        self.touch(n);
        self.nodes[n].proc.handle_connected(now, conn);
        self.drain(n);
    }

    /// The proc is told `e` is closed (a failed dial, a cut, or the peer's close).
    fn report_closed(&mut self, e: usize) {
        if !self.ends[e].live {
            return;
        }
        let n = self.ends[e].node;
        let conn = self.ends[e].conn;
        self.ends[e].live = false;
        self.ends[e].inbox.clear();
        let now = self.now;
        self.touch(n);
        self.nodes[n].proc.handle_closed(now, conn);
        self.drain(n);
    }

    fn fail_dial(&mut self, e: usize) {
        self.report_closed(e);
    }

    fn cut(&mut self, e: usize) {
        let peer = self.ends[e].peer;
        if let Some(p) = peer {
            self.ends[p].peer_closed = true;
        }
        self.ends[e].peer_closed = true;
        self.report_closed(e);
        if let Some(p) = peer {
            self.report_closed(p);
        }
    }

    /// Hands up to `amount` waiting bytes of `e` to its proc; reports the close once the
    /// peer closed and nothing is left.
    fn flow(&mut self, e: usize, amount: usize) {
        let n = self.ends[e].node;
        let conn = self.ends[e].conn;
        if !self.ends[e].inbox.is_empty() {
            let take = amount.clamp(1, self.ends[e].inbox.len());
            let chunk: Vec<u8> = self.ends[e].inbox.drain(..take).collect();
            let now = self.now;
            self.touch(n);
            self.nodes[n].proc.handle_bytes(now, conn, &chunk);
            self.drain(n);
        }
        if self.ends[e].live && self.ends[e].inbox.is_empty() && self.ends[e].peer_closed {
            self.report_closed(e);
        }
    }

    /// Feeds hostile bytes to `conn` of node `n` in chunks of `chunk` bytes (0 = whole).
    fn feed(&mut self, n: usize, conn: ConnId, bytes: &[u8], chunk: u8) {
        self.tainted = true;
        let size = if chunk == 0 {
            bytes.len().max(1)
        } else {
            usize::from(chunk)
        };
        for part in bytes.chunks(size) {
            if self.find_end(n, conn).is_none() {
                return;
            }
            let now = self.now;
            self.touch(n);
            self.nodes[n].proc.handle_bytes(now, conn, part);
            self.drain(n);
        }
    }

    fn restart(&mut self, n: usize) {
        self.restarted = true;
        self.blocked.retain(|(m, _)| *m != n);
        for e in 0..self.ends.len() {
            if self.ends[e].node == n && self.ends[e].live {
                self.ends[e].live = false;
                self.ends[e].inbox.clear();
                if let Some(p) = self.ends[e].peer {
                    self.ends[p].peer_closed = true;
                }
            }
        }
        let cfg = self.nodes[n].cfg.clone();
        let starts = self.nodes[n].starts + 1;
        self.nodes[n] = Node::start(n, cfg, starts);
    }

    fn op(&mut self, op: &Op) {
        if trace() {
            eprintln!("{:?} op {op:?}", self.now);
        }
        let node = |b: bool| usize::from(b);
        match op {
            Op::Send {
                b,
                sender,
                dest,
                size,
            } => self.send(node(*b), *sender, dest, size),
            Op::Connect { pick } => {
                let ends = self.live_ends(|e| e.state == EndState::Dialing);
                if !ends.is_empty() {
                    self.connect(ends[usize::from(*pick) % ends.len()]);
                }
            }
            Op::FailDial { pick } => {
                let ends = self.live_ends(|e| e.state == EndState::Dialing);
                if !ends.is_empty() {
                    self.fail_dial(ends[usize::from(*pick) % ends.len()]);
                }
            }
            Op::Flow { pick, amount } => {
                let ends = self.live_ends(|e| !e.inbox.is_empty() || e.peer_closed);
                if !ends.is_empty() {
                    let e = ends[usize::from(*pick) % ends.len()];
                    let amount = match amount {
                        Amount::All => usize::MAX,
                        Amount::One => 1,
                        Amount::Some(k) => usize::from(*k),
                    };
                    self.flow(e, amount);
                }
            }
            Op::Cut { pick } => {
                let ends = self.live_ends(|e| e.state == EndState::Open);
                if !ends.is_empty() {
                    self.cut(ends[usize::from(*pick) % ends.len()]);
                }
            }
            Op::Tick { which, step } => {
                self.now += step.duration();
                match which {
                    Which::A => self.timeout(0),
                    Which::B => self.timeout(1),
                    Which::Both => {
                        self.timeout(0);
                        self.timeout(1);
                    }
                }
            }
            Op::NextDeadline { b } => {
                let n = node(*b);
                if let Some(t) = self.nodes[n].proc.poll_timeout() {
                    self.now = self.now.max(t);
                    self.timeout(n);
                }
            }
            Op::Shutdown { b } => {
                let n = node(*b);
                self.nodes[n].shutting = true;
                let now = self.now;
                self.touch(n);
                self.nodes[n].proc.handle_shutdown(now);
                self.drain(n);
            }
            Op::Restart { b } => self.restart(node(*b)),
            Op::Pump { rounds, advance } => {
                for _ in 0..=(rounds % 16) {
                    if !self.fair_round(*advance) {
                        break;
                    }
                }
            }
            Op::OpenPort { b, actor, once } => {
                let node = &mut self.nodes[node(*b)];
                let i = usize::from(*actor) % node.actors.len();
                let actor = node.actors[i].clone();
                let kind = if *once {
                    PortKind::Once
                } else {
                    PortKind::Stream
                };
                let opened = node.proc.open_port(&actor, kind, None);
                if node.removed[i] {
                    assert!(opened.is_err(), "opened a port on a removed actor");
                    return;
                }
                let id = opened.expect("actor exists");
                assert!(
                    node.ports.iter().all(|p| p.id != id),
                    "ephemeral port {id:?} reused"
                );
                let handle = node.proc.local_port(&id).expect("just opened");
                node.ports.push(PortModel {
                    id,
                    kind,
                    open: true,
                    handle,
                });
            }
            Op::RemoveActor { b, actor } => {
                let node = &mut self.nodes[node(*b)];
                let i = usize::from(*actor) % node.actors.len();
                let actor = node.actors[i].clone();
                node.proc.remove_actor(&actor);
                node.removed[i] = true;
                for p in node.ports.iter_mut().filter(|p| p.id.actor() == &actor) {
                    p.open = false;
                }
            }
            Op::HandBack { b, pick } => {
                let n = node(*b);
                let placed = &mut self.nodes[n].placed;
                if placed.is_empty() {
                    return;
                }
                let env = placed.swap_remove(usize::from(*pick) % placed.len());
                let now = self.now;
                self.touch(n);
                self.nodes[n]
                    .proc
                    .handle_undeliverable(now, env, Undeliverable::NoSuchPort);
                self.drain(n);
            }
            Op::Consume { b, pick, msgs } => {
                let n = node(*b);
                let ports = &self.nodes[n].ports;
                if ports.is_empty() {
                    return;
                }
                // The handle may be stale (its port closed): core must ignore it.
                let port = ports[usize::from(*pick) % ports.len()].handle;
                let now = self.now;
                self.touch(n);
                let msgs = usize::from(*msgs % 8);
                self.nodes[n]
                    .proc
                    .handle_consumed(now, port, msgs, msgs * 64);
                self.drain(n);
            }
            Op::Readdress { b, proc, addr } => {
                let n = node(*b);
                let addr = ChannelAddr::Local(u64::from(*addr % 4));
                self.nodes[n]
                    .proc
                    .set_address(proc_id(usize::from(*proc) % 3), addr);
            }
            Op::ClosePort { b, pick } => {
                let node = &mut self.nodes[node(*b)];
                let i = usize::from(*pick) % node.ports.len();
                node.proc.close_port(&node.ports[i].id);
                node.ports[i].open = false;
            }
            Op::Inject {
                b,
                target,
                chunk,
                bytes,
            } => {
                let n = node(*b);
                let bytes = self.injection(n, bytes);
                let ends = self.live_ends(|e| e.node == n && e.state == EndState::Open);
                let conn = match ends.get(usize::from(*target)) {
                    Some(&e) => self.ends[e].conn,
                    None => {
                        let now = self.now;
                        self.touch(n);
                        let conn = self.nodes[n].proc.handle_accepted(now);
                        assert!(self.find_end(n, conn).is_none(), "accepted a live {conn}");
                        self.ends.push(End {
                            node: n,
                            conn,
                            addr: None,
                            state: EndState::Open,
                            live: true,
                            peer: None,
                            inbox: Vec::new(),
                            peer_closed: false,
                        });
                        self.drain(n);
                        conn
                    }
                };
                self.feed(n, conn, &bytes, *chunk);
            }
            Op::FakeAcceptor {
                pick,
                chunk,
                frames,
            } => {
                let ends = self.live_ends(|e| e.state == EndState::Dialing);
                if ends.is_empty() {
                    return;
                }
                let e = ends[usize::from(*pick) % ends.len()];
                let (n, conn) = (self.ends[e].node, self.ends[e].conn);
                self.tainted = true;
                self.ends[e].state = EndState::Open;
                let now = self.now;
                self.touch(n);
                self.nodes[n].proc.handle_connected(now, conn);
                self.drain(n);
                let mut bytes = preamble().to_vec();
                for f in frames {
                    self.fake_frame(n, f, &mut bytes);
                }
                self.feed(n, conn, &bytes, *chunk);
            }
        }
    }

    fn injection(&self, n: usize, inj: &Injection) -> Vec<u8> {
        match inj {
            Injection::Raw(b) => b.clone(),
            Injection::PreambleThen(b) => {
                let mut v = preamble().to_vec();
                v.extend_from_slice(b);
                v
            }
            Injection::Frames {
                preamble: p,
                frames,
            } => {
                let mut v = if *p { preamble().to_vec() } else { Vec::new() };
                for f in frames {
                    self.fake_frame(n, f, &mut v);
                }
                v
            }
        }
    }

    /// Appends one forged frame meant for node `n`.
    fn fake_frame(&self, n: usize, f: &Fake, out: &mut Vec<u8>) {
        let mut buf = BytesMut::new();
        let postcard_frame = |kind: FrameKind, body: Vec<u8>, buf: &mut BytesMut| {
            append_frame(kind, 0, &[&body], buf).expect("small frame");
        };
        match f {
            Fake::Hello {
                from,
                to,
                incarnation,
                session,
                resume,
                max,
                auth,
            } => {
                let hello = Hello {
                    from: claimed(*from),
                    to: claimed(*to),
                    incarnation: u64::from(*incarnation % 4),
                    session: u64::from(*session % 4),
                    resume: *resume,
                    max_frame_len: u32::from(*max),
                    auth: auth.map(|b| [b; NONCE_LEN]),
                };
                let body = postcard::to_allocvec(&hello).expect("in memory");
                postcard_frame(FrameKind::Hello, body, &mut buf);
            }
            Fake::Welcome {
                incarnation,
                next,
                max,
            } => {
                let w = Welcome {
                    incarnation: u64::from(*incarnation % 4),
                    next: next.map(u64::from),
                    max_frame_len: u32::from(*max),
                    // Small and varying: exercises re-encoding for a smaller peer cache.
                    id_cache: u16::from(*max % 4),
                };
                let body = postcard::to_allocvec(&w).expect("in memory");
                postcard_frame(FrameKind::Welcome, body, &mut buf);
            }
            Fake::Refuse(r) => {
                let r = match r % 7 {
                    0 => RefuseReason::WrongProc,
                    1 => RefuseReason::UnsupportedVersion { supported: 9 },
                    2 => RefuseReason::ShuttingDown,
                    3 => RefuseReason::AuthRequired,
                    4 => RefuseReason::AuthUnexpected,
                    5 => RefuseReason::BadAuth,
                    _ => RefuseReason::BadHello,
                };
                let body = postcard::to_allocvec(&r).expect("in memory");
                postcard_frame(FrameKind::Refuse, body, &mut buf);
            }
            Fake::Data {
                sender,
                port,
                ttl,
                returned,
                short_ids,
                payload,
            } => {
                let ports = &self.nodes[n].ports;
                let dest = match usize::from(*port) {
                    i if i < 2 * ports.len() => ports[i % ports.len()].id.clone(),
                    i => claimed(i as u8).actor(name("x"), 0).port(1024),
                };
                let sender_proc = claimed(*sender);
                let env = Envelope {
                    sender: sender_proc.actor(name("x"), u64::from(*sender / 5 % 2)),
                    dest,
                    ttl: *ttl % 4,
                    returned: returned.map(|r| match r % 3 {
                        0 => Undeliverable::NoSuchPort,
                        1 => Undeliverable::Unreachable,
                        _ => Undeliverable::SessionLost,
                    }),
                    fingerprint: None,
                    headers: Default::default(),
                    payload: Bytes::copy_from_slice(payload),
                };
                let me = proc_id(n);
                let link = Link {
                    sender: &sender_proc,
                    receiver: &me,
                };
                let link = short_ids.then_some(link);
                append_envelope(&env, link, u32::MAX, &mut buf).expect("no limit");
            }
            Fake::Ack(k) => {
                let body = postcard::to_allocvec(&u64::from(*k)).expect("in memory");
                postcard_frame(FrameKind::Ack, body, &mut buf);
            }
            Fake::Ping => postcard_frame(FrameKind::Ping, Vec::new(), &mut buf),
            Fake::Pong => postcard_frame(FrameKind::Pong, Vec::new(), &mut buf),
            Fake::Close => postcard_frame(FrameKind::Close, Vec::new(), &mut buf),
            Fake::Raw { kind, flags, body } => {
                out.push(*kind);
                out.push(*flags);
                out.extend_from_slice(&(body.len() as u32).to_le_bytes());
                out.extend_from_slice(body);
                return;
            }
        }
        out.extend_from_slice(&buf);
    }

    /// One round of a fair network: complete every pending dial (failing those to an
    /// address where no proc listens), hand over every waiting byte and close; if nothing
    /// was pending and `advance`, move time to the earliest deadline and fire it. Returns
    /// false when there was nothing at all to do.
    fn fair_round(&mut self, advance: bool) -> bool {
        let mut moved = false;
        for e in self.live_ends(|e| e.state == EndState::Dialing) {
            if self.ends[e].live {
                self.connect(e);
                moved = true;
            }
        }
        for e in self.live_ends(|e| !e.inbox.is_empty() || e.peer_closed) {
            if self.ends[e].live {
                self.flow(e, usize::MAX);
                moved = true;
            }
        }
        if moved || !advance {
            return moved;
        }
        let next = (0..2)
            .filter_map(|n| self.nodes[n].proc.poll_timeout())
            .min();
        let Some(t) = next else {
            return false;
        };
        self.now = self.now.max(t);
        for n in 0..2 {
            if self.nodes[n]
                .proc
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                self.timeout(n);
            }
        }
        true
    }

    /// Every port's consumer takes all that was delivered to it; whether anything was.
    fn consume_all(&mut self) -> bool {
        let now = self.now;
        let mut any = false;
        for n in 0..2 {
            let ports: Vec<PortId> = self.nodes[n].ports.iter().map(|p| p.id.clone()).collect();
            for port in ports {
                let (msgs, bytes) = self.nodes[n].proc.registry().queued(&port);
                let handle = self.nodes[n].proc.local_port(&port);
                if let (true, Some(handle)) = (msgs > 0, handle) {
                    any = true;
                    self.touch(n);
                    self.nodes[n].proc.handle_consumed(now, handle, msgs, bytes);
                    self.drain(n);
                }
            }
        }
        any
    }

    /// A fair network until every accepted message is accounted for.
    fn settle(&mut self) {
        for _round in 0..20_000 {
            let open: Vec<u64> = self
                .sent
                .keys()
                .copied()
                .filter(|id| !self.resolved(*id))
                .collect();
            if open.is_empty() && self.blocked.is_empty() {
                return;
            }
            // Fair consumers too: every port's queue is drained, so links held behind a
            // full port go on.
            let consumed = self.consume_all();
            if !self.fair_round(true) && !consumed {
                break;
            }
        }
        let lost: Vec<(&u64, &Sent)> = self
            .sent
            .iter()
            .filter(|(id, _)| !self.resolved(**id))
            .collect();
        assert!(
            lost.is_empty(),
            "accepted messages neither delivered nor returned on a fair network: {lost:?}"
        );
        assert!(
            self.blocked.is_empty(),
            "links refused a send and never became writable: {:?}",
            self.blocked
        );
    }
}

fuzz_target!(|scenario: Scenario| {
    let mut world = World::new(&scenario);
    for op in scenario.ops.iter().take(256) {
        world.op(op);
    }
    if !world.tainted && !world.restarted {
        world.settle();
    }
    // Every message the world accepted from a proc that was never restarted is accounted
    // for at most once per kind of outcome when nothing hostile was injected.
    if !world.tainted {
        for (id, s) in &world.sent {
            if s.from_start == world.nodes[s.from].starts {
                assert!(world.delivered.get(id).copied().unwrap_or(0) <= 1);
                let [receiver, sender] = world.returned.get(id).copied().unwrap_or_default();
                assert!(receiver <= 1 && sender <= 1);
            }
        }
    }
});
