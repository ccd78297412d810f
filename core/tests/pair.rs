//! Procs wired together by an in-memory network with zero latency, time jumping to the
//! next deadline: the timer rules of the drive-loop contract, routing decisions, and each
//! failure path, one scenario per test.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use procwire_core::auth::{self, Cookie, NONCE_LEN};
use procwire_core::envelope::{append_envelope, Envelope, Link, RefuseReason, Undeliverable};
use procwire_core::frame::{
    append_frame, preamble, FrameDecoder, FrameHeader, FrameKind, Hello, Item, Welcome, HEADER_LEN,
    MAX_HELLO_LEN, VERSION,
};
use procwire_core::id::{ActorId, ChannelAddr, Name, PortId, ProcId};
use procwire_core::proc::{Config, ConnError, ConnId, Event, Output, Proc, SendError, Violation};
use procwire_core::registry::PortKind;
use procwire_core::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Node(usize, ConnId),
    Raw(usize),
}

struct Node {
    proc: Proc,
    delivered: Vec<Envelope>,
    returned: Vec<Envelope>,
    events: Vec<(Instant, Event)>,
    dials: Vec<Instant>,
}

struct Pair {
    now: Instant,
    nodes: Vec<Node>,
    config: Config,
    wires: BTreeMap<End, End>,
    pending: VecDeque<(End, Option<Bytes>)>,
    /// Dials to these nodes fail.
    unreachable: BTreeSet<usize>,
    /// Bytes from these nodes vanish (a peer gone silent).
    silent: BTreeSet<usize>,
    raw_rx: Vec<BytesMut>,
    raw_closed: Vec<bool>,
    incarnation: u64,
    /// Deliveries stay in their ports' queues until the test consumes them.
    hold_deliveries: bool,
    /// Dials to the address of node `k` (`pid(k)`) reach a raw end instead, whose id is
    /// the value (a raw acceptor: the test plays the accepting proc).
    raw_acceptors: BTreeMap<usize, usize>,
    /// Connections a node closed: each is closed once, and nothing is written to it after.
    closed_here: BTreeSet<(usize, ConnId)>,
}

fn pid(i: usize) -> ProcId {
    ProcId::new(
        ChannelAddr::Local(i as u64 + 1),
        Name::new(&format!("p{i}")).unwrap(),
    )
}

fn actor(i: usize, name: &str) -> ActorId {
    pid(i).actor(Name::new(name).unwrap(), 0)
}

impl Pair {
    fn new(n: usize, config: Config) -> Pair {
        let mut pair = Pair {
            now: Instant::from_micros(1_000_000),
            nodes: Vec::new(),
            config,
            wires: BTreeMap::new(),
            pending: VecDeque::new(),
            unreachable: BTreeSet::new(),
            silent: BTreeSet::new(),
            raw_rx: Vec::new(),
            raw_closed: Vec::new(),
            incarnation: 100,
            hold_deliveries: false,
            raw_acceptors: BTreeMap::new(),
            closed_here: BTreeSet::new(),
        };
        for i in 0..n {
            let node = pair.fresh(i);
            pair.nodes.push(node);
        }
        pair
    }

    fn fresh(&mut self, i: usize) -> Node {
        self.incarnation += 1;
        let mut proc = Proc::new(pid(i), self.config.clone(), self.incarnation, i as u64);
        let a = proc.reserve_root("a").unwrap();
        proc.bind_port(&a.port(1), PortKind::Stream, None).unwrap();
        Node {
            proc,
            delivered: Vec::new(),
            returned: Vec::new(),
            events: Vec::new(),
            dials: Vec::new(),
        }
    }

    fn restart(&mut self, i: usize) {
        // The new incarnation numbers its connections afresh.
        self.closed_here.retain(|(n, _)| *n != i);
        let ends: Vec<End> = self
            .wires
            .keys()
            .copied()
            .filter(|e| matches!(e, End::Node(n, _) if *n == i))
            .collect();
        for e in ends {
            if let Some(other) = self.wires.remove(&e) {
                self.wires.remove(&other);
                self.pending.push_back((other, None));
            }
        }
        self.nodes[i] = self.fresh(i);
    }

    fn send(&mut self, from: usize, to: PortId, payload: &'static [u8]) -> Result<(), SendError> {
        let env = Envelope::new(actor(from, "a"), to, Bytes::from_static(payload));
        let r = self.nodes[from].proc.handle_send(self.now, env);
        if r.is_ok() {
            // A send queued behind a reconnect backoff has no output yet; otherwise the
            // deadline is "now" while output waits.
            let t = self.nodes[from].proc.poll_timeout();
            assert!(t.is_some_and(|t| t >= self.now), "{t:?}");
        }
        r
    }

    /// Opens a raw connection to node `to`; returns its raw id.
    fn raw_connect(&mut self, to: usize) -> usize {
        let id = self.raw_rx.len();
        self.raw_rx.push(BytesMut::new());
        self.raw_closed.push(false);
        let conn = self.nodes[to].proc.handle_accepted(self.now);
        self.wires.insert(End::Raw(id), End::Node(to, conn));
        self.wires.insert(End::Node(to, conn), End::Raw(id));
        id
    }

    /// Dials to `pid(k)` reach a new raw end (the test accepts for proc `k`); its id.
    fn raw_acceptor(&mut self, k: usize) -> usize {
        let id = self.raw_rx.len();
        self.raw_rx.push(BytesMut::new());
        self.raw_closed.push(false);
        self.raw_acceptors.insert(k, id);
        id
    }

    /// Node `i` starts again with `config` (and a fresh incarnation).
    fn reconfigure(&mut self, i: usize, config: Config) {
        let keep = std::mem::replace(&mut self.config, config);
        self.restart(i);
        self.config = keep;
    }

    /// The raw side closes its connection.
    fn raw_close(&mut self, raw: usize) {
        if let Some(end) = self.wires.remove(&End::Raw(raw)) {
            self.wires.remove(&end);
            self.pending.push_back((end, None));
        }
        self.raw_closed[raw] = true;
        self.drive();
    }

    /// Frames node `i` refused, from its events.
    fn refusals(&self, i: usize) -> Vec<RefuseReason> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Refused { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn raw_write(&mut self, raw: usize, bytes: &[u8]) {
        if let Some(&End::Node(n, conn)) = self.wires.get(&End::Raw(raw)) {
            self.nodes[n].proc.handle_bytes(self.now, conn, bytes);
        }
        self.drive();
    }

    /// Carries out outputs and moves bytes until everything is quiet.
    fn drive(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while let Some(o) = self.nodes[i].proc.poll_output() {
                    busy = true;
                    let Output::Deliver { port, env } = o else {
                        self.carry_out(i, o);
                        continue;
                    };
                    // The deliveries to the same port that follow, in one run.
                    let mut run = VecDeque::from([env]);
                    self.nodes[i].proc.poll_deliveries(port, &mut run);
                    for env in run {
                        self.carry_out(i, Output::Deliver { port, env });
                    }
                }
            }
            while let Some((to, bytes)) = self.pending.pop_front() {
                busy = true;
                match (to, bytes) {
                    (End::Node(n, conn), Some(b)) => {
                        self.nodes[n].proc.handle_bytes(self.now, conn, &b)
                    }
                    (End::Node(n, conn), None) => self.nodes[n].proc.handle_closed(self.now, conn),
                    (End::Raw(r), Some(b)) => self.raw_rx[r].extend_from_slice(&b),
                    (End::Raw(r), None) => self.raw_closed[r] = true,
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn carry_out(&mut self, i: usize, o: Output) {
        let now = self.now;
        match o {
            Output::Deliver { port, env } => {
                // The handle names the destination (a once-port is retired by now).
                let bound = self.nodes[i].proc.local_port(&env.dest);
                assert!(bound.is_none_or(|b| b == port), "{env:?} under {port:?}");
                // The consumer takes it at once (the slow-consumer tests take over).
                if !self.hold_deliveries {
                    let len = env.payload.len();
                    self.nodes[i].proc.handle_consumed(now, port, 1, len);
                }
                self.nodes[i].delivered.push(env)
            }
            Output::Returned(env) => self.nodes[i].returned.push(env),
            Output::Event(e) => self.nodes[i].events.push((now, e)),
            Output::Dial { conn, addr } => {
                self.nodes[i].dials.push(now);
                let ChannelAddr::Local(k) = *addr else {
                    panic!("address {addr}")
                };
                let target = k as usize - 1;
                if let Some(&raw) = self.raw_acceptors.get(&target) {
                    self.wires.insert(End::Node(i, conn), End::Raw(raw));
                    self.wires.insert(End::Raw(raw), End::Node(i, conn));
                    self.nodes[i].proc.handle_connected(now, conn);
                    return;
                }
                if target >= self.nodes.len() || self.unreachable.contains(&target) {
                    self.pending.push_back((End::Node(i, conn), None));
                    return;
                }
                let tconn = self.nodes[target].proc.handle_accepted(now);
                self.wires
                    .insert(End::Node(i, conn), End::Node(target, tconn));
                self.wires
                    .insert(End::Node(target, tconn), End::Node(i, conn));
                self.nodes[i].proc.handle_connected(now, conn);
            }
            Output::Transmit { conn, data } => {
                assert!(
                    !self.closed_here.contains(&(i, conn)),
                    "node {i} wrote to {conn:?} after closing it"
                );
                if self.silent.contains(&i) {
                    return;
                }
                if let Some(&to) = self.wires.get(&End::Node(i, conn)) {
                    self.pending.push_back((to, Some(data)));
                }
            }
            Output::Close { conn } => {
                assert!(
                    self.closed_here.insert((i, conn)),
                    "node {i} closed {conn:?} twice"
                );
                if let Some(to) = self.wires.remove(&End::Node(i, conn)) {
                    self.wires.remove(&to);
                    self.pending.push_back((to, None));
                }
            }
            other => panic!("the harness does not know output {other:?}"),
        }
    }

    /// Runs until `until`, jumping to each deadline, checking the timer rules.
    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        let mut spins = 0;
        loop {
            self.drive();
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.proc.poll_timeout())
                .min();
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = until;
                return;
            };
            assert!(
                next >= self.now,
                "deadline in the past: {next:?} < {:?}",
                self.now
            );
            spins = if next == self.now { spins + 1 } else { 0 };
            assert!(spins < 1000, "busy loop at {next:?}");
            self.now = next;
            for i in 0..self.nodes.len() {
                if self.nodes[i].proc.poll_timeout().is_some_and(|t| t <= next) {
                    self.nodes[i].proc.handle_timeout(next);
                    while let Some(o) = self.nodes[i].proc.poll_output() {
                        self.carry_out(i, o);
                    }
                    let t = self.nodes[i].proc.poll_timeout();
                    assert!(
                        t.is_none_or(|t| t > next),
                        "stale deadline {t:?} after handle_timeout({next:?})"
                    );
                }
            }
        }
    }

    fn payloads(&self, i: usize) -> Vec<Bytes> {
        self.nodes[i]
            .delivered
            .iter()
            .map(|e| e.payload.clone())
            .collect()
    }

    fn returns(&self, i: usize) -> Vec<(Bytes, Undeliverable)> {
        self.nodes[i]
            .returned
            .iter()
            .map(|e| (e.payload.clone(), e.returned.unwrap()))
            .collect()
    }

    fn failures(&self, i: usize) -> Vec<ConnError> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::ConnectionFailed { error, .. } => Some(error.clone()),
                _ => None,
            })
            .collect()
    }
}

fn target(i: usize) -> PortId {
    actor(i, "a").port(1)
}

fn quick() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(200),
        unreachable_timeout: Duration::from_secs(2),
        session_retention: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(1),
        ..Config::default()
    }
}

#[test]
fn messages_arrive_in_order_and_acks_empty_the_window() {
    let mut p = Pair::new(2, quick());
    for m in [&b"one"[..], b"two", b"three"] {
        p.send(0, target(1), m).unwrap();
    }
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.payloads(1), ["one", "two", "three"]);
    assert_eq!(
        p.nodes[0].proc.queued(&pid(1)),
        (0, 0),
        "acknowledged within the ack delay"
    );
    assert!(p.nodes[1].proc.stats().acks_sent >= 1);
}

#[test]
fn small_sends_coalesce_into_one_transmit() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"warm-up").unwrap();
    p.run_for(Duration::from_millis(10));
    for _ in 0..50 {
        p.send(0, target(1), b"x").unwrap();
    }
    let mut transmits = 0;
    while let Some(o) = p.nodes[0].proc.poll_output() {
        if matches!(o, Output::Transmit { .. }) {
            transmits += 1;
        }
        p.carry_out(0, o);
    }
    assert_eq!(transmits, 1, "fifty frames, one write");
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1).len(), 51);
}

#[test]
fn idle_link_stays_up_on_heartbeats_without_busy_looping() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"hi").unwrap();
    p.run_for(Duration::from_secs(30));
    assert!(p.failures(0).is_empty() && p.failures(1).is_empty());
    assert_eq!(p.nodes[0].dials.len(), 1, "one connection the whole time");
    // While idle the next deadline is a heartbeat or ack, never "now".
    let t = p.nodes[0].proc.poll_timeout().unwrap();
    assert!(t > p.now && t <= p.now + quick().heartbeat_interval);
}

#[test]
fn silent_peer_hits_the_idle_timeout_and_the_link_recovers() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"first").unwrap();
    p.run_for(Duration::from_millis(10));
    p.silent.insert(1);
    p.send(0, target(1), b"second").unwrap();
    p.run_for(Duration::from_millis(600));
    assert!(p.failures(0).contains(&ConnError::IdleTimeout));
    p.silent.clear();
    p.run_for(Duration::from_secs(1));
    assert_eq!(
        p.payloads(1),
        ["first", "second"],
        "resent once, delivered once"
    );
    assert_eq!(p.nodes[0].proc.queued(&pid(1)), (0, 0));
}

#[test]
fn unreachable_peer_returns_everything_once_after_backing_off() {
    let mut p = Pair::new(2, quick());
    p.unreachable.insert(1);
    p.send(0, target(1), b"a").unwrap();
    p.send(0, target(1), b"b").unwrap();
    p.run_for(Duration::from_secs(5));
    assert_eq!(
        p.returns(0),
        [
            (Bytes::from("a"), Undeliverable::Unreachable),
            (Bytes::from("b"), Undeliverable::Unreachable)
        ]
    );
    let dials = &p.nodes[0].dials;
    assert!(dials.len() >= 5, "retried: {dials:?}");
    let gaps: Vec<u64> = dials
        .windows(2)
        .map(|w| (w[1] - w[0]).as_micros())
        .collect();
    assert!(
        gaps.windows(2).take(4).all(|g| g[1] >= g[0]),
        "backoff grows: {gaps:?}"
    );
    assert!(dials.last().unwrap().as_micros() - dials[0].as_micros() <= 2_000_000);
    // Nothing more happens: no dials while nothing waits.
    let before = dials.len();
    p.run_for(Duration::from_secs(10));
    assert_eq!(p.nodes[0].dials.len(), before);
}

#[test]
fn wrong_proc_name_is_refused_and_returned_with_the_reason() {
    let mut p = Pair::new(2, quick());
    let wrong = ProcId::new(pid(1).addr().clone(), Name::new("nobody").unwrap());
    let dest = wrong.actor(Name::new("a").unwrap(), 0).port(1);
    p.send(0, dest, b"lost?").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(
        p.returns(0),
        [(
            Bytes::from("lost?"),
            Undeliverable::Refused(RefuseReason::WrongProc)
        )]
    );
    assert!(p
        .failures(0)
        .contains(&ConnError::Refused(RefuseReason::WrongProc)));
}

#[test]
fn unknown_actor_and_port_come_back_from_the_remote_proc() {
    let mut p = Pair::new(2, quick());
    p.send(0, actor(1, "ghost").port(1), b"actor").unwrap();
    p.send(0, actor(1, "a").port(77), b"port").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(
        p.returns(0),
        [
            (Bytes::from("actor"), Undeliverable::NoSuchActor),
            (Bytes::from("port"), Undeliverable::NoSuchPort)
        ]
    );
    assert!(p.payloads(1).is_empty());
}

#[test]
fn once_port_takes_one_message_the_second_comes_back() {
    let mut p = Pair::new(2, quick());
    let b = actor(1, "a");
    let once = p.nodes[1].proc.open_port(&b, PortKind::Once, None).unwrap();
    p.send(0, once.clone(), b"1").unwrap();
    p.send(0, once, b"2").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["1"]);
    assert_eq!(
        p.returns(0),
        [(Bytes::from("2"), Undeliverable::NoSuchPort)]
    );
}

#[test]
fn local_sends_deliver_without_the_network() {
    let mut p = Pair::new(1, quick());
    p.send(0, target(0), b"self").unwrap();
    p.send(0, actor(0, "a").port(5), b"none").unwrap();
    p.drive();
    assert_eq!(p.payloads(0), ["self"]);
    assert_eq!(
        p.returns(0),
        [(Bytes::from("none"), Undeliverable::NoSuchPort)]
    );
    assert!(p.nodes[0].dials.is_empty());
}

#[test]
fn oversized_message_fails_at_the_sender_with_the_limit() {
    let config = Config {
        max_frame_len: 100,
        ..quick()
    };
    let mut p = Pair::new(2, config);
    let big = Bytes::from(vec![0u8; 200]);
    let env = Envelope::new(actor(0, "a"), target(1), big.clone());
    let err = p.nodes[0].proc.handle_send(p.now, env).unwrap_err();
    assert!(
        matches!(err, SendError::TooLarge { len, max: 100 } if len > 200),
        "{err:?}"
    );
    let env = Envelope::new(actor(0, "a"), target(0), big);
    assert_eq!(
        p.nodes[0].proc.handle_send(p.now, env),
        Err(SendError::TooLarge { len: 200, max: 100 })
    );
    assert!(err.to_string().contains("limit of 100"));
}

#[test]
fn full_window_blocks_then_announces_room() {
    let config = Config {
        window_msgs: 4,
        ..quick()
    };
    let mut p = Pair::new(2, config);
    for _ in 0..4 {
        p.send(0, target(1), b"m").unwrap();
    }
    assert!(!p.nodes[0].proc.can_send(&pid(1)));
    assert_eq!(p.send(0, target(1), b"m"), Err(SendError::WouldBlock));
    p.run_for(Duration::from_millis(20));
    assert!(p.nodes[0]
        .events
        .iter()
        .any(|(_, e)| *e == Event::Writable { peer: pid(1) }));
    assert!(p.nodes[0].proc.can_send(&pid(1)));
    assert_eq!(p.payloads(1).len(), 4);
}

#[test]
fn sender_must_be_a_live_local_actor() {
    let mut p = Pair::new(2, quick());
    let env = Envelope::new(actor(1, "a"), target(1), Bytes::new());
    assert_eq!(
        p.nodes[0].proc.handle_send(p.now, env),
        Err(SendError::SenderNotLive)
    );
}

#[test]
fn restarted_peer_is_detected_and_unacknowledged_messages_return() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"before").unwrap();
    p.run_for(Duration::from_millis(10));
    // Sent but never acknowledged: the peer dies with it.
    p.silent.insert(1);
    p.send(0, target(1), b"in flight").unwrap();
    p.drive();
    p.silent.clear();
    p.restart(1);
    p.run_for(Duration::from_millis(200));
    assert_eq!(
        p.returns(0),
        [(Bytes::from("in flight"), Undeliverable::PeerRestarted)]
    );
    assert!(p.nodes[0].events.iter().any(
        |(_, e)| matches!(e, Event::PeerRestarted { peer, previous, incarnation }
            if *peer == pid(1) && previous != incarnation)
    ));
    // The link works with the new incarnation.
    p.send(0, target(1), b"after").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["after"]);
}

#[test]
fn forgotten_session_returns_what_was_sent_as_session_lost() {
    let config = Config {
        session_retention: Duration::from_millis(300),
        ..quick()
    };
    let mut p = Pair::new(2, config);
    p.send(0, target(1), b"acked").unwrap();
    p.run_for(Duration::from_millis(10));
    p.silent.insert(1);
    p.unreachable.insert(1);
    p.send(0, target(1), b"unknown").unwrap();
    // The idle timeout cuts the link; the receiver forgets the session after retention.
    p.run_for(Duration::from_millis(1200));
    p.silent.clear();
    p.unreachable.clear();
    // The next redial (backoff is at 640 ms by now) resumes; the receiver does not know it.
    p.run_for(Duration::from_millis(1000));
    assert_eq!(
        p.returns(0),
        [(Bytes::from("unknown"), Undeliverable::SessionLost)]
    );
    assert_eq!(
        p.payloads(1),
        ["acked", "unknown"],
        "it was delivered; the sender could not know"
    );
}

#[test]
fn malformed_frame_closes_that_connection_only() {
    let mut p = Pair::new(2, quick());
    let raw = p.raw_connect(1);
    p.raw_write(raw, &preamble());
    p.raw_write(raw, &[0xEE, 0, 0, 0, 0, 0]);
    assert!(p.raw_closed[raw], "the bad connection is closed");
    assert!(p
        .failures(1)
        .iter()
        .any(|e| matches!(e, ConnError::Frame(_))));
    p.send(0, target(1), b"still serving").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["still serving"]);
}

#[test]
fn unsupported_version_is_refused_with_a_reason() {
    let mut p = Pair::new(1, quick());
    let raw = p.raw_connect(0);
    let mut pre = preamble();
    pre[4..6].copy_from_slice(&(VERSION + 1).to_le_bytes());
    p.raw_write(raw, &pre);
    assert!(p.raw_closed[raw]);
    let mut d = FrameDecoder::new(1024, BytesMut::new());
    let rx = p.raw_rx[raw].clone();
    let first = d.decode(&rx).unwrap();
    assert_eq!(first.item, Some(Item::Preamble { version: VERSION }));
    let second = d.decode(&rx[first.consumed..]).unwrap();
    assert!(matches!(second.item, Some(Item::Frame(h)) if h.kind == FrameKind::Refuse));
    let reason: RefuseReason = postcard::from_bytes(d.body()).unwrap();
    assert_eq!(
        reason,
        RefuseReason::UnsupportedVersion { supported: VERSION }
    );
}

/// A hand-driven dialer that speaks the protocol, to craft what a real proc never sends.
fn raw_session(p: &mut Pair, to: usize, from: &ProcId) -> usize {
    let raw = p.raw_connect(to);
    let hello = Hello {
        from: from.clone(),
        to: pid(to),
        incarnation: 9,
        session: 42,
        resume: false,
        max_frame_len: 1 << 20,
        auth: None,
    };
    let mut out = BytesMut::from(&preamble()[..]);
    append_frame(
        FrameKind::Hello,
        0,
        &[&postcard::to_allocvec(&hello).unwrap()],
        &mut out,
    )
    .unwrap();
    p.raw_write(raw, &out);
    let mut d = FrameDecoder::new(1024, BytesMut::new());
    let rx = p.raw_rx[raw].split();
    let a = d.decode(&rx).unwrap();
    let b = d.decode(&rx[a.consumed..]).unwrap();
    assert!(matches!(b.item, Some(Item::Frame(h)) if h.kind == FrameKind::Welcome));
    let w: Welcome = postcard::from_bytes(d.body()).unwrap();
    assert_eq!(w.next, Some(0));
    raw
}

#[test]
fn envelope_for_another_proc_is_forwarded_and_ttl_stops_loops() {
    let mut p = Pair::new(3, quick());
    let outsider = ProcId::new(ChannelAddr::Local(99), Name::new("outsider").unwrap());
    let raw = raw_session(&mut p, 1, &outsider);
    // From proc 0's actor (so the return comes back to a live sender), via proc 1, to proc 2.
    let mut fwd = Envelope::new(actor(0, "a"), target(2), Bytes::from_static(b"hop"));
    fwd.ttl = 1;
    let mut dead = Envelope::new(actor(0, "a"), target(2), Bytes::from_static(b"no hops"));
    dead.ttl = 0;
    let me = pid(1);
    let link = Link {
        sender: &outsider,
        receiver: &me,
    };
    let mut out = BytesMut::new();
    append_envelope(&fwd, Some(link), 1 << 20, &mut out).unwrap();
    append_envelope(&dead, Some(link), 1 << 20, &mut out).unwrap();
    p.raw_write(raw, &out);
    p.run_for(Duration::from_millis(20));
    assert_eq!(p.payloads(2), ["hop"]);
    assert_eq!(p.nodes[2].delivered[0].ttl, 0, "one hop spent");
    assert_eq!(
        p.returns(0),
        [(Bytes::from("no hops"), Undeliverable::TtlExhausted)]
    );
}

#[test]
fn shutdown_flushes_then_completes_and_refuses_new_sends() {
    let mut p = Pair::new(2, quick());
    for m in [&b"x"[..], b"y"] {
        p.send(0, target(1), m).unwrap();
    }
    p.nodes[0].proc.handle_shutdown(p.now);
    assert_eq!(p.send(0, target(1), b"late"), Err(SendError::ShuttingDown));
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.payloads(1), ["x", "y"]);
    assert!(p.nodes[0]
        .events
        .iter()
        .any(|(_, e)| *e == Event::ShutdownComplete));
    assert!(p.returns(0).is_empty());
}

#[test]
fn shutdown_returns_what_cannot_be_flushed_in_time() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"first").unwrap();
    p.run_for(Duration::from_millis(10));
    p.silent.insert(1);
    p.unreachable.insert(1);
    p.send(0, target(1), b"stuck").unwrap();
    p.nodes[0].proc.handle_shutdown(p.now);
    p.run_for(Duration::from_secs(2));
    let done: Vec<Instant> = p.nodes[0]
        .events
        .iter()
        .filter(|(_, e)| *e == Event::ShutdownComplete)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(done.len(), 1);
    // It was transmitted before the peer fell silent: delivery unknown.
    assert_eq!(
        p.returns(0),
        [(Bytes::from("stuck"), Undeliverable::Unconfirmed)]
    );
}

#[test]
fn handshake_must_complete_in_time() {
    let mut p = Pair::new(1, quick());
    let raw = p.raw_connect(0);
    p.run_for(Duration::from_millis(300));
    assert!(p.raw_closed[raw]);
    assert!(p.failures(0).contains(&ConnError::HandshakeTimeout));
    assert_eq!(
        p.nodes[0].proc.poll_timeout(),
        None,
        "nothing left to wait for"
    );
}

#[test]
fn draining_output_never_moves_a_deadline() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"warm-up").unwrap();
    p.run_for(Duration::from_millis(10));
    for _ in 0..3 {
        p.send(0, target(1), b"m").unwrap();
    }
    // While anything is queued the answer is "now"; once drained, the deadline is one the
    // inputs set, and asking again (or draining an empty queue) does not change it.
    let mut outputs = Vec::new();
    loop {
        let t = p.nodes[0].proc.poll_timeout();
        match p.nodes[0].proc.poll_output() {
            Some(o) => {
                assert_eq!(t, Some(p.now));
                outputs.push(o);
            }
            None => break,
        }
    }
    let after = p.nodes[0].proc.poll_timeout();
    assert!(after.is_some_and(|t| t > p.now), "{after:?}");
    assert!(p.nodes[0].proc.poll_output().is_none());
    assert_eq!(p.nodes[0].proc.poll_timeout(), after);
    for o in outputs {
        p.carry_out(0, o);
    }
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1).len(), 4);
}

#[test]
fn inbound_session_limit_refuses_further_dialers() {
    let config = Config {
        max_inbound_sessions: 1,
        ..quick()
    };
    let mut p = Pair::new(3, config);
    p.send(0, target(1), b"first").unwrap();
    p.run_for(Duration::from_millis(10));
    p.send(2, target(1), b"second").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["first"]);
    assert_eq!(
        p.returns(2),
        [(
            Bytes::from("second"),
            Undeliverable::Refused(RefuseReason::TooManySessions)
        )]
    );
}

/// Pongs a raw connection received since the handshake (taken from its buffer).
fn pongs_received(p: &mut Pair, raw: usize) -> usize {
    let rx = p.raw_rx[raw].split();
    let mut d = FrameDecoder::frames_only(1024, BytesMut::new());
    let (mut at, mut pongs) = (0, 0);
    while at < rx.len() {
        let step = d.decode(&rx[at..]).unwrap();
        at += step.consumed;
        if matches!(step.item, Some(Item::Frame(h)) if h.kind == FrameKind::Pong) {
            pongs += 1;
        }
    }
    pongs
}

#[test]
fn acceptor_sends_keepalives_of_its_own_accord() {
    let mut p = Pair::new(2, quick());
    // A dialer that never pings (it could be busy writing one huge frame).
    let outsider = ProcId::new(ChannelAddr::Local(99), Name::new("outsider").unwrap());
    let raw = raw_session(&mut p, 1, &outsider);
    p.run_for(Duration::from_millis(450));
    let pongs = pongs_received(&mut p, raw);
    assert_eq!(pongs, 4, "one every 100 ms");
    // Silence from the dialer still ends the connection at the idle timeout.
    p.run_for(Duration::from_millis(100));
    assert!(p.raw_closed[raw]);
    assert!(p.failures(1).contains(&ConnError::IdleTimeout));
}

#[test]
fn an_acceptor_that_answers_pings_sends_no_keepalive_of_its_own() {
    let mut p = Pair::new(2, quick());
    let outsider = ProcId::new(ChannelAddr::Local(99), Name::new("outsider").unwrap());
    let raw = raw_session(&mut p, 1, &outsider);
    let mut ping = BytesMut::new();
    append_frame(FrameKind::Ping, 0, &[], &mut ping).unwrap();
    // A dialer pinging every 90 ms, a little more often than the 100 ms heartbeat.
    for _ in 0..10 {
        p.raw_write(raw, &ping);
        p.run_for(Duration::from_millis(90));
    }
    let pongs = pongs_received(&mut p, raw);
    assert_eq!(pongs, 10, "one answer per ping and no keepalive besides");
    assert!(!p.raw_closed[raw]);
}

#[test]
fn giving_up_splits_transmitted_from_never_sent() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"acked").unwrap();
    p.run_for(Duration::from_millis(10));
    // The peer receives but never answers, then becomes unreachable.
    p.silent.insert(1);
    p.send(0, target(1), b"sent").unwrap();
    p.drive();
    p.unreachable.insert(1);
    p.run_for(Duration::from_millis(600));
    p.send(0, target(1), b"never sent").unwrap();
    p.run_for(Duration::from_secs(3));
    assert_eq!(
        p.returns(0),
        [
            (Bytes::from("sent"), Undeliverable::Unconfirmed),
            (Bytes::from("never sent"), Undeliverable::Unreachable)
        ]
    );
    assert!(Undeliverable::Unconfirmed.delivery_unknown());
    assert!(!Undeliverable::Unreachable.delivery_unknown());
    assert_eq!(p.payloads(1), ["acked", "sent"], "the peer did get it");
}

#[test]
fn retransmission_after_a_cut_slices_what_was_encoded() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"warm").unwrap();
    p.run_for(Duration::from_millis(50));
    let before = p.nodes[0].proc.stats();
    for m in [&b"a"[..], b"b", b"c"] {
        p.send(0, target(1), m).unwrap();
    }
    // The data leaves node 0, then the connection is cut before any of it arrives.
    let mut cut = None;
    while let Some(o) = p.nodes[0].proc.poll_output() {
        match o {
            Output::Transmit { conn, .. } => cut = Some(conn),
            other => p.carry_out(0, other),
        }
    }
    let conn = cut.expect("the three messages were handed out");
    if let Some(to) = p.wires.remove(&End::Node(0, conn)) {
        p.wires.remove(&to);
        p.pending.push_back((to, None));
    }
    p.nodes[0].proc.handle_closed(p.now, conn);
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.payloads(1), ["warm", "a", "b", "c"]);
    let after = p.nodes[0].proc.stats();
    assert_eq!(
        after.frames_encoded - before.frames_encoded,
        3,
        "encoded once"
    );
    assert_eq!(after.retransmitted - before.retransmitted, 3);
    assert_eq!(p.nodes[0].proc.queued(&pid(1)), (0, 0));
}

/// A payload large enough to be kept apart from the chunk store (written from the
/// sender's own `Bytes`).
fn large(fill: u8) -> Bytes {
    Bytes::from(
        (0..64 * 1024)
            .map(|i| fill ^ (i as u8))
            .collect::<Vec<u8>>(),
    )
}

#[test]
fn large_payloads_are_written_from_the_senders_bytes_and_resent_whole_after_a_cut() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"warm").unwrap();
    p.run_for(Duration::from_millis(50));
    let before = p.nodes[0].proc.stats();
    let (l1, l2) = (large(1), large(2));
    let msgs = [Bytes::from("a"), l1.clone(), Bytes::from("b"), l2.clone()];
    for m in &msgs {
        let env = Envelope::new(actor(0, "a"), target(1), m.clone());
        p.nodes[0].proc.handle_send(p.now, env).unwrap();
    }
    let mut sent = Vec::new();
    let mut conn = None;
    while let Some(o) = p.nodes[0].proc.poll_output() {
        match o {
            Output::Transmit { conn: c, data } => {
                conn = Some(c);
                sent.push(data)
            }
            other => p.carry_out(0, other),
        }
    }
    let conn = conn.expect("handed out");
    let at = |b: &Bytes| b.as_ptr();
    assert_eq!(sent.len(), 4, "run, payload, run, payload");
    assert_eq!(
        (at(&sent[1]), sent[1].len()),
        (at(&l1), l1.len()),
        "no copy"
    );
    assert_eq!(
        (at(&sent[3]), sent[3].len()),
        (at(&l2), l2.len()),
        "no copy"
    );
    // "a" and the head of the first large frame arrive; the cut loses the rest.
    let to = p.wires[&End::Node(0, conn)];
    p.pending.push_back((to, Some(sent[0].clone())));
    p.drive();
    assert_eq!(p.payloads(1), ["warm", "a"]);
    p.wires.remove(&End::Node(0, conn));
    p.wires.remove(&to);
    p.pending.push_back((to, None));
    p.nodes[0].proc.handle_closed(p.now, conn);
    p.run_for(Duration::from_secs(1));
    let want: Vec<Bytes> = [Bytes::from("warm")].into_iter().chain(msgs).collect();
    assert_eq!(p.payloads(1), want, "each once, in order, whole");
    let after = p.nodes[0].proc.stats();
    assert_eq!(
        after.frames_encoded - before.frames_encoded,
        4,
        "encoded once"
    );
    assert_eq!(after.retransmitted - before.retransmitted, 3);
    assert_eq!(p.nodes[0].proc.queued(&pid(1)), (0, 0));
}

#[test]
fn large_payloads_cut_mid_frame_come_back_whole_when_the_peer_restarts() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"warm").unwrap();
    p.run_for(Duration::from_millis(50));
    let l1 = large(3);
    let env = Envelope::new(actor(0, "a"), target(1), l1.clone());
    p.nodes[0].proc.handle_send(p.now, env).unwrap();
    // Node 1 restarts before anything arrives: the message comes back whole.
    p.silent.insert(0);
    p.drive();
    p.silent.remove(&0);
    p.restart(1);
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.payloads(1), Vec::<Bytes>::new());
    assert_eq!(p.returns(0), [(l1, Undeliverable::PeerRestarted)]);
}

/// Node 0 sends `payload` to node 1; returns what node 0 wrote for it, and the connection
/// on node 1's side, without delivering anything.
/// The bytes node `from` writes for one message with `payload` to node `to`, and on
/// which connection of `to` they arrive.
fn written_between(p: &mut Pair, from: usize, to: usize, payload: &Bytes) -> (Vec<u8>, ConnId) {
    let env = Envelope::new(actor(from, "a"), target(to), payload.clone());
    written_from(p, from, to, |proc, now| proc.handle_send(now, env))
}

/// The bytes node 0 writes, and on which connection of node 1 they arrive, for one
/// message `send` hands it.
fn written_by(
    p: &mut Pair,
    send: impl FnOnce(&mut Proc, Instant) -> Result<(), SendError>,
) -> (Vec<u8>, ConnId) {
    written_from(p, 0, 1, send)
}

fn written_from(
    p: &mut Pair,
    from: usize,
    to: usize,
    send: impl FnOnce(&mut Proc, Instant) -> Result<(), SendError>,
) -> (Vec<u8>, ConnId) {
    let now = p.now;
    send(&mut p.nodes[from].proc, now).unwrap();
    let mut wire = Vec::new();
    let mut end = None;
    while let Some(o) = p.nodes[from].proc.poll_output() {
        match o {
            Output::Transmit { conn, data } => {
                end = p.wires.get(&End::Node(from, conn)).copied();
                wire.extend_from_slice(&data);
            }
            other => p.carry_out(from, other),
        }
    }
    match end {
        Some(End::Node(n, conn)) if n == to => (wire, conn),
        other => panic!("written to {other:?}"),
    }
}

#[test]
fn a_large_body_read_by_the_driver_is_delivered_from_its_buffer() {
    // On the connection node 0 dialed: node 0's data to node 1, then node 1's to node 0
    // (the answering session of a two-way link).
    for (from, to) in [(0, 1), (1, 0)] {
        let mut p = Pair::new(2, quick());
        p.send(0, target(1), b"warm").unwrap();
        p.run_for(Duration::from_millis(50));
        if from == 1 {
            p.send(1, target(0), b"warm").unwrap();
            p.run_for(Duration::from_millis(50));
            assert_eq!(p.nodes[1].proc.stats().shared_opens, 1);
        }
        large_body_round(&mut p, from, to);
    }
}

fn large_body_round(p: &mut Pair, from: usize, to: usize) {
    let big = Bytes::from(
        (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let (wire, conn) = written_between(p, from, to, &big);
    let node = &mut p.nodes[to].proc;
    node.handle_bytes(p.now, conn, &wire[..1000]);
    let (len, held) = node.large_body(conn).expect("in a large body");
    let held = held.to_vec();
    assert_eq!(len, wire.len() - HEADER_LEN);
    assert_eq!(&held[..], &wire[HEADER_LEN..1000]);
    // The driver reads the rest of the body after the bytes held, into its own buffer.
    let mut body = held.clone();
    body.extend_from_slice(&wire[1000..]);
    let body = Bytes::from(body);
    node.handle_body(p.now, conn, body.clone(), held.len());
    assert!(node.large_body(conn).is_none());
    p.drive();
    let got = p.payloads(to);
    assert_eq!(got.len(), 2, "delivered once");
    assert!(got[1] == big, "whole");
    let range = body.as_ptr_range();
    assert!(
        range.contains(&got[1].as_ptr()),
        "a slice of the driver's buffer"
    );
    // A buffer that does not start with the bytes held is not the body: what follows
    // them is taken as bytes read, in order (copied).
    let (wire, conn) = written_between(p, from, to, &big);
    let node = &mut p.nodes[to].proc;
    node.handle_bytes(p.now, conn, &wire[..1000]);
    let mut wrong = vec![0u8; 1000 - HEADER_LEN];
    wrong.extend_from_slice(&wire[1000..]);
    let wrong = Bytes::from(wrong);
    node.handle_body(p.now, conn, wrong.clone(), 1000 - HEADER_LEN);
    p.drive();
    assert!(p.failures(to).is_empty(), "{:?}", p.failures(to));
    let got = p.payloads(to);
    assert_eq!(got.len(), 3);
    assert!(got[2] == big, "delivered whole");
    assert!(!wrong.as_ptr_range().contains(&got[2].as_ptr()));
}

#[test]
fn messages_between_actors_that_talked_before_name_them_by_index() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"warm").unwrap();
    p.run_for(Duration::from_millis(50));
    let payload = Bytes::from(vec![9u8; 64]);
    for _ in 0..3 {
        let env = Envelope::new(actor(0, "a"), target(1), payload.clone());
        p.nodes[0].proc.handle_send(p.now, env).unwrap();
    }
    let mut wire = 0;
    while let Some(o) = p.nodes[0].proc.poll_output() {
        if let Output::Transmit { data, .. } = &o {
            wire += data.len();
        }
        p.carry_out(0, o);
    }
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.payloads(1).len(), 4);
    // Header 6, sender index 1, dest index 1, port 1, ttl 1, returned 1, headers 1.
    assert_eq!(
        wire,
        3 * (6 + 6 + 64),
        "three frames coalesced into one write"
    );
}

#[test]
fn acknowledgements_follow_the_bytes_delivered_without_waiting_for_the_timer() {
    let mut cfg = quick();
    cfg.ack_every_msgs = 1000;
    cfg.ack_every_bytes = 1000;
    cfg.ack_delay = Duration::from_secs(1);
    let mut p = Pair::new(2, cfg);
    static BIG: [u8; 600] = [7; 600];
    let big = &BIG;
    p.send(0, target(1), big).unwrap();
    p.drive();
    assert_eq!(p.payloads(1).len(), 1);
    assert_eq!(
        p.nodes[0].proc.queued(&pid(1)).0,
        1,
        "600 B: below the byte threshold"
    );
    p.send(0, target(1), big).unwrap();
    p.drive();
    // 1200 B delivered: acknowledged at once, long before the 1 s ack delay.
    assert_eq!(p.payloads(1).len(), 2);
    assert_eq!(p.nodes[0].proc.queued(&pid(1)), (0, 0));
}

#[test]
fn a_full_port_holds_its_link_unacknowledged_until_consumed() {
    let mut cfg = quick();
    cfg.port_queue_msgs = 3;
    let mut p = Pair::new(2, cfg);
    p.hold_deliveries = true;
    for m in [&b"1"[..], b"2", b"3", b"4", b"5"] {
        p.send(0, target(1), m).unwrap();
    }
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.payloads(1), ["1", "2", "3"], "the port holds three");
    assert_eq!(p.nodes[1].proc.registry().queued(&target(1)), (3, 3));
    assert_eq!(
        p.nodes[0].proc.queued(&pid(1)),
        (2, p.nodes[0].proc.queued(&pid(1)).1),
        "the two held messages stay unacknowledged at the sender"
    );
    // A local send into the full port waits too.
    let local = Envelope::new(actor(1, "a"), target(1), Bytes::from_static(b"L"));
    assert_eq!(
        p.nodes[1].proc.handle_send(p.now, local.clone()),
        Err(SendError::WouldBlock)
    );
    // The link stays alive while it waits: heartbeats are not consumption.
    p.run_for(Duration::from_secs(2));
    assert!(p.failures(0).is_empty() && p.failures(1).is_empty());
    // Consuming one lets one more in, in order; the local sender hears it may retry.
    let port = p.nodes[1].proc.local_port(&target(1)).unwrap();
    p.nodes[1].proc.handle_consumed(p.now, port, 1, 1);
    p.drive();
    assert_eq!(p.payloads(1), ["1", "2", "3", "4"]);
    assert!(p.nodes[1]
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::Writable { peer } if *peer == pid(1))));
    p.nodes[1].proc.handle_consumed(p.now, port, 4, 4);
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.payloads(1), ["1", "2", "3", "4", "5"]);
    assert_eq!(p.nodes[0].proc.queued(&pid(1)), (0, 0), "all acknowledged");
    p.nodes[1].proc.handle_send(p.now, local).unwrap();
}

#[test]
fn two_procs_draining_together_finish_as_fast_as_one() {
    let mut p = Pair::new(2, quick());
    for _ in 0..20 {
        p.send(0, target(1), b"ab").unwrap();
        p.send(1, target(0), b"ba").unwrap();
    }
    let start = p.now;
    p.nodes[0].proc.handle_shutdown(p.now);
    p.nodes[1].proc.handle_shutdown(p.now);
    p.run_for(Duration::from_millis(100));
    for i in 0..2 {
        let done = p.nodes[i]
            .events
            .iter()
            .find(|(_, e)| *e == Event::ShutdownComplete)
            .map(|(t, _)| *t);
        let done = done.unwrap_or_else(|| panic!("node {i} did not finish its shutdown"));
        assert!(
            done - start < Duration::from_millis(50),
            "node {i} took {:?} (shutdown timeout {:?})",
            done - start,
            quick().shutdown_timeout
        );
        assert!(p.returns(i).is_empty(), "node {i}: {:?}", p.returns(i));
    }
    assert_eq!(p.payloads(0).len(), 20);
    assert_eq!(p.payloads(1).len(), 20);
}

// ---- untrusted peers (issue 9) ----

/// The frames a raw connection received after the preamble: (kind, body).
fn raw_frames(p: &Pair, raw: usize) -> Vec<(FrameKind, Vec<u8>)> {
    let mut d = FrameDecoder::new(MAX_HELLO_LEN, BytesMut::new());
    let mut rx = &p.raw_rx[raw][..];
    let mut out = Vec::new();
    while !rx.is_empty() {
        let step = d.decode(rx).expect("the proc frames what it writes");
        rx = &rx[step.consumed..];
        if let Some(Item::Frame(h)) = step.item {
            out.push((h.kind, d.body().to_vec()));
        }
    }
    out
}

fn hello_bytes(from: &ProcId, to: ProcId, session: u64, auth: Option<[u8; NONCE_LEN]>) -> Vec<u8> {
    let hello = Hello {
        from: from.clone(),
        to,
        incarnation: 9,
        session,
        resume: false,
        max_frame_len: 1 << 20,
        auth,
    };
    postcard::to_allocvec(&hello).unwrap()
}

fn framed(kind: FrameKind, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    append_frame(kind, 0, &[body], &mut out).unwrap();
    out
}

fn cookie(s: &[u8]) -> Cookie {
    Cookie::new(s).unwrap()
}

fn with_cookie(c: &[u8]) -> Config {
    Config {
        cookie: Some(cookie(c)),
        ..quick()
    }
}

#[test]
fn a_hello_header_over_the_handshake_limit_is_refused_before_any_body_byte() {
    let mut p = Pair::new(1, quick());
    let raw = p.raw_connect(0);
    let mut h = [0u8; HEADER_LEN];
    FrameHeader {
        kind: FrameKind::Hello,
        flags: 0,
        len: MAX_HELLO_LEN + 1,
    }
    .write(&mut h);
    let mut bytes = preamble().to_vec();
    bytes.extend_from_slice(&h);
    p.raw_write(raw, &bytes);
    assert!(p.raw_closed[raw], "closed at once, not at the deadline");
    assert!(p.failures(0).contains(&ConnError::Frame(
        procwire_core::frame::FrameError::TooLarge {
            len: MAX_HELLO_LEN + 1,
            max: MAX_HELLO_LEN
        }
    )));
}

#[test]
fn the_oldest_handshake_is_evicted_for_a_new_connection() {
    let config = Config {
        max_handshaking: 2,
        ..quick()
    };
    let mut p = Pair::new(2, config);
    let raws: Vec<usize> = (0..3).map(|_| p.raw_connect(1)).collect();
    p.drive();
    assert_eq!(
        raws.iter().map(|&r| p.raw_closed[r]).collect::<Vec<_>>(),
        [true, false, false],
        "the oldest made room"
    );
    assert_eq!(p.refusals(1), [RefuseReason::HandshakeEvicted]);
    // A legitimate dialer still gets through (evicting the next oldest silent one).
    p.send(0, target(1), b"through").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["through"]);
    assert_eq!(
        p.nodes[1]
            .proc
            .stats()
            .refused
            .get(RefuseReason::HandshakeEvicted),
        2
    );
}

#[test]
fn connections_over_the_total_are_closed_at_accept() {
    let config = Config {
        max_inbound_conns: 2,
        ..quick()
    };
    let mut p = Pair::new(2, config);
    p.send(0, target(1), b"first").unwrap();
    p.run_for(Duration::from_millis(10));
    let held = p.raw_connect(1);
    let over = p.raw_connect(1);
    p.drive();
    assert!(!p.raw_closed[held]);
    assert!(p.raw_closed[over]);
    assert!(p.raw_rx[over].is_empty(), "closed without a word");
    assert_eq!(p.refusals(1), [RefuseReason::TooManyConnections]);
    // Once the held one goes, there is room again.
    p.raw_close(held);
    let again = p.raw_connect(1);
    p.drive();
    assert!(!p.raw_closed[again]);
    p.send(0, target(1), b"second").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["first", "second"]);
}

#[test]
fn thousands_of_made_up_sessions_cannot_exhaust_the_session_table() {
    let config = Config {
        max_inbound_sessions: 64,
        ..quick()
    };
    let mut p = Pair::new(2, config);
    let fakes: Vec<ProcId> = (0..3).map(|k| pid(10 + k)).collect();
    for i in 0..5000u64 {
        let raw = p.raw_connect(1);
        let mut bytes = BytesMut::from(&preamble()[..]);
        let from = &fakes[i as usize % fakes.len()];
        bytes.extend_from_slice(&framed(
            FrameKind::Hello,
            &hello_bytes(from, pid(1), 1_000 + i, None),
        ));
        p.raw_write(raw, &bytes);
        assert!(
            matches!(raw_frames(&p, raw).first(), Some((FrameKind::Welcome, _))),
            "hello {i} welcomed"
        );
        p.raw_close(raw);
        assert!(
            p.nodes[1].proc.inbound_sessions() <= fakes.len(),
            "hello {i}"
        );
    }
    p.send(0, target(1), b"legit").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["legit"]);
    assert!(p.returns(0).is_empty());
}

#[test]
fn a_full_table_evicts_the_longest_disconnected_session_for_a_new_peer() {
    let config = Config {
        max_inbound_sessions: 4,
        ..quick()
    };
    let mut p = Pair::new(3, config);
    // Node 0's session is the first in, and disconnected when the flood comes.
    p.send(0, target(1), b"early").unwrap();
    p.run_for(Duration::from_millis(10));
    p.silent.insert(0);
    p.send(0, target(1), b"held").unwrap();
    p.run_for(Duration::from_millis(600));
    for k in 0..100 {
        let raw = p.raw_connect(1);
        let mut bytes = BytesMut::from(&preamble()[..]);
        bytes.extend_from_slice(&framed(
            FrameKind::Hello,
            &hello_bytes(&pid(10 + k), pid(1), 7, None),
        ));
        p.raw_write(raw, &bytes);
        p.raw_close(raw);
    }
    assert_eq!(p.nodes[1].proc.inbound_sessions(), 4);
    assert!(p.nodes[1].proc.stats().sessions_evicted >= 97);
    // A new peer still gets a session.
    p.send(2, target(1), b"newcomer").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["early", "newcomer"]);
    // Node 0 resumes a forgotten session: what it sent comes back, delivery unknown.
    p.silent.clear();
    p.run_for(Duration::from_secs(2));
    assert_eq!(
        p.returns(0),
        [(Bytes::from("held"), Undeliverable::SessionLost)]
    );
}

#[test]
fn the_right_cookie_delivers_both_ways() {
    let mut p = Pair::new(2, with_cookie(b"open sesame"));
    p.send(0, target(1), b"ping").unwrap();
    p.send(1, target(0), b"pong").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["ping"]);
    assert_eq!(p.payloads(0), ["pong"]);
    for i in 0..2 {
        assert_eq!(p.nodes[i].proc.stats().refused.total(), 0);
    }
    // And across a reconnect (a new challenge on the new connection).
    p.silent.insert(0);
    p.run_for(Duration::from_millis(700));
    p.silent.clear();
    p.send(0, target(1), b"again").unwrap();
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.payloads(1), ["ping", "again"]);
}

#[test]
fn a_wrong_cookie_is_refused_both_ways() {
    let mut p = Pair::new(2, with_cookie(b"ours"));
    p.reconfigure(1, with_cookie(b"theirs"));
    p.send(0, target(1), b"0 to 1").unwrap();
    p.send(1, target(0), b"1 to 0").unwrap();
    p.run_for(Duration::from_millis(10));
    assert!(p.payloads(0).is_empty() && p.payloads(1).is_empty());
    let refused = Undeliverable::Refused(RefuseReason::BadAuth);
    assert_eq!(p.returns(0), [(Bytes::from("0 to 1"), refused)]);
    assert_eq!(p.returns(1), [(Bytes::from("1 to 0"), refused)]);
    for i in 0..2 {
        // The dialer found the acceptor's proof wrong; the acceptor refused its empty one.
        assert!(p
            .failures(i)
            .contains(&ConnError::Auth(auth::AuthError::BadProof)));
        assert_eq!(p.refusals(i), [RefuseReason::BadAuth]);
        assert_eq!(
            p.nodes[i].proc.inbound_sessions(),
            0,
            "no session allocated"
        );
    }
}

#[test]
fn a_cookie_on_one_side_only_is_refused_with_a_reason() {
    let mut p = Pair::new(2, with_cookie(b"secret"));
    p.reconfigure(1, quick());
    p.send(0, target(1), b"with").unwrap();
    p.send(1, target(0), b"without").unwrap();
    p.run_for(Duration::from_millis(10));
    assert!(p.payloads(0).is_empty() && p.payloads(1).is_empty());
    assert_eq!(
        p.returns(0),
        [(
            Bytes::from("with"),
            Undeliverable::Refused(RefuseReason::AuthUnexpected)
        )]
    );
    assert_eq!(
        p.returns(1),
        [(
            Bytes::from("without"),
            Undeliverable::Refused(RefuseReason::AuthRequired)
        )]
    );
    assert_eq!(p.refusals(0), [RefuseReason::AuthRequired]);
    assert_eq!(p.refusals(1), [RefuseReason::AuthUnexpected]);
}

#[test]
fn an_acceptor_that_skips_the_challenge_is_not_trusted() {
    let mut p = Pair::new(1, with_cookie(b"secret"));
    p.send(
        0,
        PortId::new(pid(1).actor(Name::new("a").unwrap(), 0), 1),
        b"x",
    )
    .unwrap();
    // Node 1 does not exist: play it by hand, welcoming without a challenge.
    let conn = match p.nodes[0].proc.poll_output() {
        Some(Output::Dial { conn, .. }) => conn,
        other => panic!("{other:?}"),
    };
    let now = p.now;
    p.nodes[0].proc.handle_connected(now, conn);
    while p.nodes[0].proc.poll_output().is_some() {}
    p.nodes[0].proc.handle_bytes(now, conn, &welcomed(5));
    let mut saw = Vec::new();
    while let Some(o) = p.nodes[0].proc.poll_output() {
        saw.push(o);
    }
    assert!(saw.iter().any(|o| matches!(
        o,
        Output::Event(Event::ConnectionFailed {
            error: ConnError::Auth(auth::AuthError::Unproven),
            ..
        })
    )));
    assert!(
        !saw.iter()
            .any(|o| matches!(o, Output::Event(Event::PeerConnected { .. }))),
        "{saw:?}"
    );
}

#[test]
fn a_replayed_handshake_is_refused() {
    let c = cookie(b"shared");
    let mut p = Pair::new(1, with_cookie(b"shared"));
    let me = pid(5);
    // A genuine dialer, by hand: hello with a nonce, then the proof for the challenge.
    let hello = hello_bytes(&me, pid(0), 77, Some([4; NONCE_LEN]));
    let first = p.raw_connect(0);
    let mut sent = BytesMut::from(&preamble()[..]);
    sent.extend_from_slice(&framed(FrameKind::Hello, &hello));
    p.raw_write(first, &sent);
    let frames = raw_frames(&p, first);
    let (FrameKind::Challenge, challenge) = &frames[0] else {
        panic!("{frames:?}")
    };
    let proof = auth::answer_challenge(&c, &hello, challenge).expect("the acceptor proves");
    let proof = framed(FrameKind::Proof, &proof);
    p.raw_write(first, &proof);
    sent.extend_from_slice(&proof);
    assert!(
        matches!(raw_frames(&p, first).get(1), Some((FrameKind::Welcome, _))),
        "the genuine handshake is welcomed"
    );
    assert_eq!(p.nodes[0].proc.inbound_sessions(), 1);
    p.raw_close(first);
    // Everything the dialer wrote, replayed on a new connection, in one piece.
    let replay = p.raw_connect(0);
    p.raw_write(replay, &sent);
    assert!(p.raw_closed[replay]);
    let frames = raw_frames(&p, replay);
    assert_eq!(frames[0].0, FrameKind::Challenge);
    assert_ne!(frames[0].1, *challenge, "a fresh nonce");
    assert_eq!(frames[1].0, FrameKind::Refuse);
    let reason: RefuseReason = postcard::from_bytes(&frames[1].1).unwrap();
    assert_eq!(reason, RefuseReason::BadAuth);
    assert_eq!(p.refusals(0), [RefuseReason::BadAuth]);
    assert_eq!(
        p.nodes[0].proc.stats().refused.get(RefuseReason::BadAuth),
        1
    );
}

#[test]
fn what_peers_make_a_proc_hold_stays_within_the_limits() {
    let cfg = Config {
        max_handshaking: 8,
        ..quick()
    };
    let mut p = Pair::new(2, cfg);
    // Forty connections each send a preamble and the start of a maximal hello, then stall.
    let mut start = preamble().to_vec();
    let header = FrameHeader {
        kind: FrameKind::Hello,
        flags: 0,
        len: MAX_HELLO_LEN,
    };
    let mut h = [0u8; HEADER_LEN];
    header.write(&mut h);
    start.extend_from_slice(&h);
    start.extend_from_slice(&vec![0u8; MAX_HELLO_LEN as usize - 1]);
    for _ in 0..40 {
        let raw = p.raw_connect(1);
        p.raw_write(raw, &start);
    }
    let held = p.nodes[1].proc.held();
    assert_eq!(held.handshaking, 8, "{held:?}");
    assert!(
        held.handshake_bytes <= 8 * (MAX_HELLO_LEN as usize + HEADER_LEN),
        "{held:?}"
    );
    assert!(
        held.handshake_bytes >= 8 * (MAX_HELLO_LEN as usize - 1),
        "{held:?}"
    );
    // A legitimate peer still gets through, and the stalled ones time out.
    p.send(0, target(1), b"through").unwrap();
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.payloads(1), ["through"]);
    let held = p.nodes[1].proc.held();
    assert_eq!((held.handshaking, held.handshake_bytes), (0, 0), "{held:?}");
    assert_eq!(held.inbound_sessions, 1);
}

#[test]
fn a_failed_dial_is_reported_at_once_and_its_error_comes_back_with_the_returns() {
    use procwire_core::proc::{DialError, DialErrorKind};
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"x").unwrap();
    let refused = DialError::new(DialErrorKind::Refused, "Connection refused (os error 111)");
    // Every dial of node 0 fails with the OS error, as a driver reports it.
    let mut failures = 0;
    let deadline = p.now + quick().unreachable_timeout + Duration::from_millis(500);
    while p.now < deadline {
        while let Some(o) = p.nodes[0].proc.poll_output() {
            match o {
                Output::Dial { conn, .. } => {
                    failures += 1;
                    p.nodes[0]
                        .proc
                        .handle_dial_failed(p.now, conn, refused.clone());
                }
                other => p.carry_out(0, other),
            }
        }
        let Some(t) = p.nodes[0].proc.poll_timeout() else {
            break;
        };
        p.now = t.max(p.now);
        p.nodes[0].proc.handle_timeout(p.now);
    }
    assert!(failures >= 2, "retried under the backoff: {failures}");
    let events: Vec<&Event> = p.nodes[0].events.iter().map(|(_, e)| e).collect();
    let first = events
        .iter()
        .position(
            |e| matches!(e, Event::DialFailed { attempts: 1, error, .. } if **error == refused),
        )
        .expect("the first failure is an event with the OS error");
    let gave_up = events
        .iter()
        .position(|e| matches!(e, Event::Unreachable { last_error: Some(e), .. } if **e == refused))
        .expect("giving up names the last dial error");
    assert!(first < gave_up);
    assert_eq!(
        p.returns(0),
        [(Bytes::from_static(b"x"), Undeliverable::Unreachable)]
    );
}

#[test]
fn many_messages_in_one_read_are_not_an_overrun_when_no_port_is_full() {
    let cfg = Config {
        link_held_msgs: 1,
        ..quick()
    };
    let mut p = Pair::new(2, cfg);
    for m in [&b"1"[..], b"2", b"3", b"4"] {
        p.send(0, target(1), m).unwrap();
    }
    p.run_for(Duration::from_millis(50));
    assert_eq!(p.payloads(1), ["1", "2", "3", "4"]);
    assert!(p.failures(1).is_empty(), "{:?}", p.failures(1));
}

/// The acceptor reports each connection of a session a peer dialed to it: gained at the
/// hello, lost when it is cut, gained again when the dialer resumes; the dialer reports
/// none of its own sessions this way.
#[test]
fn inbound_sessions_report_their_connections() {
    let mut p = Pair::new(2, quick());
    let inbound = |p: &Pair, i: usize| -> Vec<(ProcId, bool)> {
        p.nodes[i]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::InboundSession {
                    peer, connected, ..
                } => Some((peer.clone(), *connected)),
                _ => None,
            })
            .collect()
    };
    p.send(0, target(1), b"first").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(inbound(&p, 1), [(pid(0), true)]);
    p.silent.insert(1);
    p.send(0, target(1), b"second").unwrap();
    p.run_for(Duration::from_millis(600));
    p.silent.clear();
    p.run_for(Duration::from_secs(1));
    // Cut, then redialed (maybe more than once while the acceptor stayed silent): gained
    // and lost alternate, starting and ending with gained.
    let seen = inbound(&p, 1);
    assert!(seen.len() >= 3 && seen.len() % 2 == 1, "{seen:?}");
    for (i, (peer, connected)) in seen.iter().enumerate() {
        assert_eq!((peer, *connected), (&pid(0), i % 2 == 0), "{seen:?}");
    }
    assert!(inbound(&p, 0).is_empty());
    assert_eq!(p.payloads(1), ["first", "second"]);
}

/// The transmits node 0 of a connected pair makes for one message sent by `send`.
fn frames_of(send: impl FnOnce(&mut Proc, Instant) -> Result<(), SendError>) -> Vec<u8> {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"warm-up").unwrap();
    p.run_for(Duration::from_millis(10));
    written_by(&mut p, send).0
}

#[test]
fn borrowed_sends_put_the_same_frames_on_the_wire_and_deliver_owned_copies() {
    let fp = procwire_core::fingerprint::TypeFingerprint::of_type_name("borrowed");
    let head = |dest: PortId| {
        Envelope::typed(
            actor(0, "a"),
            dest,
            fp,
            Bytes::from_static(b"not looked at"),
        )
    };
    let whole = Envelope::typed(actor(0, "a"), target(1), fp, Bytes::from_static(b"payload"));
    let owned = frames_of(|p, now| p.handle_send(now, whole.clone()));
    let by_ref = frames_of(|p, now| p.handle_send_ref(now, &whole));
    let parts = frames_of(|p, now| p.handle_send_parts(now, &head(target(1)), b"payload"));
    assert!(!owned.is_empty());
    assert_eq!(by_ref, owned);
    assert_eq!(parts, owned);

    let mut p = Pair::new(2, quick());
    let now = p.now;
    let remote = head(target(1));
    for m in [&b"one"[..], b"two", b"three"] {
        p.nodes[0].proc.handle_send_parts(now, &remote, m).unwrap();
    }
    let local = head(target(0));
    let mut buf = b"self".to_vec();
    p.nodes[0]
        .proc
        .handle_send_parts(now, &local, &buf)
        .unwrap();
    // The delivery owns its payload: the caller's buffer is free again.
    buf.clear();
    p.run_for(Duration::from_millis(20));
    assert_eq!(p.payloads(1), ["one", "two", "three"]);
    assert_eq!(p.payloads(0), ["self"]);
    for env in p.nodes[1].delivered.iter().chain(&p.nodes[0].delivered) {
        assert_eq!(env.fingerprint, Some(fp));
        assert_eq!(env.sender, actor(0, "a"));
    }

    let config = Config {
        max_frame_len: 100,
        ..quick()
    };
    let mut p = Pair::new(2, config);
    let now = p.now;
    let err = p.nodes[0]
        .proc
        .handle_send_parts(now, &remote, &[0u8; 200])
        .unwrap_err();
    assert!(
        matches!(err, SendError::TooLarge { len, max: 100 } if len > 200),
        "{err:?}"
    );
}

/// Cuts the connection `conn` of node `i` under both ends.
fn cut(p: &mut Pair, i: usize, conn: ConnId) {
    if let Some(to) = p.wires.remove(&End::Node(i, conn)) {
        p.wires.remove(&to);
        p.pending.push_back((to, None));
    }
    p.nodes[i].proc.handle_closed(p.now, conn);
}

/// The connections node `i` holds, each once.
fn conns_of(p: &Pair, i: usize) -> Vec<ConnId> {
    p.wires
        .keys()
        .filter_map(|e| match e {
            End::Node(n, c) if *n == i => Some(*c),
            _ => None,
        })
        .collect()
}

#[test]
fn the_answer_rides_the_dialers_connection_and_survives_cuts() {
    two_way_round(quick());
}

/// Node 0 asks, node 1 answers over node 0's connection; then both directions survive cuts
/// of the one connection from either end.
fn two_way_round(config: Config) {
    let mut p = Pair::new(2, config);
    p.send(0, target(1), b"ask").unwrap();
    p.run_for(Duration::from_millis(10));
    p.send(1, target(0), b"answer").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["ask"]);
    assert_eq!(p.payloads(0), ["answer"]);
    assert!(
        p.nodes[1].dials.is_empty(),
        "node 1 answered without dialing"
    );
    assert_eq!(p.nodes[1].proc.stats().shared_opens, 1);
    assert_eq!(conns_of(&p, 0).len(), 1, "one connection for both ways");
    // Both directions in flight when the one connection is cut: each goes on exactly once,
    // in order, from where the other end says it stopped.
    for round in 0..3u8 {
        let msgs: [&'static [u8]; 3] = match round {
            0 => [b"a0", b"a1", b"a2"],
            1 => [b"b0", b"b1", b"b2"],
            _ => [b"c0", b"c1", b"c2"],
        };
        for m in msgs {
            p.send(0, target(1), m).unwrap();
            p.send(1, target(0), m).unwrap();
        }
        let conn = conns_of(&p, 0)[0];
        let side = usize::from(round % 2);
        let conn = if side == 0 { conn } else { conns_of(&p, 1)[0] };
        cut(&mut p, side, conn);
        p.run_for(Duration::from_secs(1));
    }
    let want = ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"];
    assert_eq!(p.payloads(1)[1..], want);
    assert_eq!(p.payloads(0)[1..], want);
    assert!(p.returns(0).is_empty() && p.returns(1).is_empty());
    assert_eq!(p.nodes[0].proc.queued(&pid(1)), (0, 0));
    assert_eq!(p.nodes[1].proc.queued(&pid(0)), (0, 0));
    assert_eq!(
        conns_of(&p, 0).len(),
        1,
        "still one connection after the cuts"
    );
}

#[test]
fn without_two_way_links_each_proc_dials_its_own() {
    let config = Config {
        two_way: false,
        ..quick()
    };
    let mut p = Pair::new(2, config);
    p.send(0, target(1), b"ask").unwrap();
    p.run_for(Duration::from_millis(10));
    p.send(1, target(0), b"answer").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(0), ["answer"]);
    assert_eq!(p.nodes[1].dials.len(), 1);
    assert_eq!(p.nodes[1].proc.stats().shared_opens, 0);
    assert_eq!(conns_of(&p, 0).len(), 2);
}

#[test]
fn a_refused_answering_session_leaves_the_dialers_link_up() {
    // Node 0 holds no inbound session at all: it refuses node 1's session over its own
    // connection, and that connection goes on carrying node 0's messages.
    let mut p = Pair::new(2, quick());
    p.reconfigure(
        0,
        Config {
            max_inbound_sessions: 0,
            ..quick()
        },
    );
    p.send(0, target(1), b"ask").unwrap();
    p.run_for(Duration::from_millis(10));
    p.send(1, target(0), b"answer").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(
        p.returns(1),
        [(
            Bytes::from("answer"),
            Undeliverable::Refused(RefuseReason::TooManySessions)
        )]
    );
    assert_eq!(p.refusals(0), [RefuseReason::TooManySessions]);
    p.send(0, target(1), b"again").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(1), ["ask", "again"]);
    assert!(p.failures(0).is_empty() && p.failures(1).is_empty());
    assert_eq!(conns_of(&p, 0).len(), 1);
}

/// What an acceptor of `incarnation` writes to open a new session: its preamble and a
/// welcome from sequence number 0.
fn welcomed(incarnation: u64) -> BytesMut {
    let welcome = Welcome {
        incarnation,
        next: Some(0),
        max_frame_len: 1 << 20,
        id_cache: 16,
    };
    let mut bytes = BytesMut::from(&preamble()[..]);
    bytes.extend_from_slice(&framed(
        FrameKind::Welcome,
        &postcard::to_allocvec(&welcome).unwrap(),
    ));
    bytes
}

/// The test plays proc 1, accepting node 0's dial: it welcomes node 0's session and
/// writes `then` on the same connection. Returns the raw end.
fn accept_as_raw(p: &mut Pair, then: &[u8]) -> usize {
    let raw = p.raw_acceptor(1);
    p.send(0, target(1), b"ask").unwrap();
    p.run_for(Duration::from_millis(1));
    assert_eq!(raw_frames(p, raw)[0].0, FrameKind::Hello);
    let mut bytes = welcomed(9);
    bytes.extend_from_slice(then);
    p.raw_write(raw, &bytes);
    p.run_for(Duration::from_millis(1));
    raw
}

#[test]
fn the_acceptor_opens_its_own_session_on_the_dialers_connection() {
    let mut p = Pair::new(1, quick());
    let hello = framed(FrameKind::Hello, &hello_bytes(&pid(1), pid(0), 77, None));
    let raw = accept_as_raw(&mut p, &hello);
    let frames = raw_frames(&p, raw);
    let kinds: Vec<FrameKind> = frames.iter().map(|f| f.0).collect();
    assert_eq!(
        kinds,
        [FrameKind::Hello, FrameKind::Data, FrameKind::Welcome]
    );
    let w: Welcome = postcard::from_bytes(&frames[2].1).unwrap();
    assert_eq!(w.next, Some(0), "a new session, welcomed from its start");
    // Proc 1's data on the same connection reaches node 0; node 0's acknowledgement of it
    // and proc 1's of node 0's message travel on it too.
    let env = Envelope::new(actor(1, "x"), target(0), Bytes::from_static(b"answer"));
    let (me, peer) = (pid(0), pid(1));
    let link = Link {
        sender: &peer,
        receiver: &me,
    };
    let mut out = BytesMut::new();
    append_envelope(&env, Some(link), 1 << 20, &mut out).unwrap();
    out.extend_from_slice(&framed(
        FrameKind::Ack,
        &postcard::to_allocvec(&1u64).unwrap(),
    ));
    out.extend_from_slice(&framed(FrameKind::Ping, &[]));
    p.raw_write(raw, &out);
    p.run_for(Duration::from_millis(5));
    assert_eq!(p.payloads(0), ["answer"]);
    assert_eq!(p.nodes[0].proc.queued(&pid(1)), (0, 0), "acknowledged");
    let kinds: Vec<FrameKind> = raw_frames(&p, raw)[3..].iter().map(|f| f.0).collect();
    assert_eq!(
        kinds,
        [FrameKind::Ack, FrameKind::Pong],
        "a ping is answered at once"
    );
    assert!(p.failures(0).is_empty() && !p.raw_closed[raw]);
    assert_eq!(p.nodes[0].proc.inbound_sessions(), 1);
}

#[test]
fn only_the_dialed_proc_may_open_a_session_on_the_dialers_connection() {
    let other = ProcId::new(ChannelAddr::Local(1), Name::new("p2").unwrap());
    let cases = [
        // Another proc than the one dialed.
        hello_bytes(&other, pid(0), 77, None),
        // With a nonce: the connection is authenticated already, or not at all.
        hello_bytes(&pid(1), pid(0), 77, Some([7; NONCE_LEN])),
        // Not a hello.
        b"\xff\xff".to_vec(),
    ];
    for body in cases {
        let mut p = Pair::new(1, quick());
        let raw = accept_as_raw(&mut p, &framed(FrameKind::Hello, &body));
        let v = Violation::UnexpectedFrame {
            kind: FrameKind::Hello,
            dialed: true,
        };
        assert_eq!(p.failures(0), [ConnError::Protocol(v)]);
        assert!(p.raw_closed[raw]);
        assert_eq!(p.nodes[0].proc.inbound_sessions(), 0);
    }
}

#[test]
fn frames_of_a_session_that_is_not_there_close_the_connection() {
    // Data on a dialed connection before any session of the peer's was opened on it, and
    // an acknowledgement on an accepted one that carries no session of this proc's.
    let mut p = Pair::new(1, quick());
    let raw = accept_as_raw(&mut p, &framed(FrameKind::Close, &[]));
    let v = Violation::UnexpectedFrame {
        kind: FrameKind::Close,
        dialed: true,
    };
    assert_eq!(p.failures(0), [ConnError::Protocol(v)]);
    assert!(p.raw_closed[raw]);
    let mut p = Pair::new(1, quick());
    let raw = raw_session(&mut p, 0, &pid(5));
    let ack = framed(FrameKind::Ack, &postcard::to_allocvec(&0u64).unwrap());
    p.raw_write(raw, &ack);
    let v = Violation::UnexpectedFrame {
        kind: FrameKind::Ack,
        dialed: false,
    };
    assert_eq!(p.failures(0), [ConnError::Protocol(v)]);
    assert!(p.raw_closed[raw]);
}

#[test]
fn with_a_cookie_the_answer_still_rides_the_dialers_connection() {
    two_way_round(with_cookie(b"secret"));
}

#[test]
fn once_the_dialer_ends_its_session_the_answering_proc_dials_for_itself() {
    let mut p = Pair::new(2, quick());
    p.send(0, target(1), b"ask").unwrap();
    p.run_for(Duration::from_millis(10));
    p.send(1, target(0), b"answer").unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.payloads(0), ["answer"]);
    // Node 0 shuts down: its session ends with a close, and the connection with it.
    p.nodes[0].proc.handle_shutdown(p.now);
    p.run_for(Duration::from_millis(50));
    assert!(conns_of(&p, 1).is_empty());
    // Node 1 has something for node 0 again: no connection to answer over, so it dials
    // (and node 0, shut down, refuses).
    p.send(1, target(0), b"late").unwrap();
    p.run_for(Duration::from_secs(1));
    assert_eq!(p.nodes[1].dials.len(), 1);
    assert_eq!(
        p.returns(1),
        [(
            Bytes::from("late"),
            Undeliverable::Refused(RefuseReason::ShuttingDown)
        )]
    );
}

#[test]
fn procs_that_dial_each_other_at_once_end_up_on_one_connection() {
    let mut p = Pair::new(2, quick());
    // Both send before either has run: both dial.
    p.send(0, target(1), b"from 0").unwrap();
    p.send(1, target(0), b"from 1").unwrap();
    p.run_for(Duration::from_millis(20));
    assert_eq!(p.payloads(1), ["from 0"]);
    assert_eq!(p.payloads(0), ["from 1"]);
    assert_eq!(p.nodes[0].dials.len() + p.nodes[1].dials.len(), 2);
    // The proc with the larger id gave its dial up and answers over the other's.
    assert!(pid(1) > pid(0));
    assert_eq!(p.nodes[1].proc.stats().shared_opens, 1);
    assert_eq!(p.nodes[0].proc.stats().shared_opens, 0);
    assert_eq!(conns_of(&p, 0).len(), 1, "one connection for both ways");
    for m in [&b"a"[..], b"b", b"c"] {
        p.send(0, target(1), m).unwrap();
        p.send(1, target(0), m).unwrap();
    }
    p.run_for(Duration::from_millis(20));
    assert_eq!(p.payloads(1), ["from 0", "a", "b", "c"]);
    assert_eq!(p.payloads(0), ["from 1", "a", "b", "c"]);
    assert!(p.returns(0).is_empty() && p.returns(1).is_empty());
    assert!(p.failures(0).is_empty() && p.failures(1).is_empty());
}

#[test]
fn after_an_unanswered_hello_on_the_peers_connection_the_next_one_is_dialed() {
    let config = Config {
        connect_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        unreachable_timeout: Duration::from_secs(1),
        ..quick()
    };
    let mut p = Pair::new(2, config);
    // Node 0 cannot reach proc 1 at first: its dial fails and the give-up clock runs.
    p.unreachable.insert(1);
    p.send(0, target(1), b"first").unwrap();
    p.run_for(Duration::from_millis(1));
    // Then "proc 1" dials node 0 (the test plays it), and node 0's session answers over
    // that connection: its hello goes there and is not answered in time.
    let raw = raw_session(&mut p, 0, &pid(1));
    p.run_for(Duration::from_secs(2));
    assert_eq!(
        p.returns(0),
        [(Bytes::from("first"), Undeliverable::Unreachable)]
    );
    let mut d = FrameDecoder::frames_only(1024, BytesMut::new());
    let step = d.decode(&p.raw_rx[raw]).unwrap();
    assert!(matches!(step.item, Some(Item::Frame(h)) if h.kind == FrameKind::Hello));
    // The answer comes late; node 0 must not take it for a later hello's.
    let late = Welcome {
        incarnation: 9,
        next: Some(0),
        max_frame_len: 1 << 20,
        id_cache: 16,
    };
    p.raw_write(
        raw,
        &framed(FrameKind::Welcome, &postcard::to_allocvec(&late).unwrap()),
    );
    p.unreachable.remove(&1);
    p.send(0, target(1), b"second").unwrap();
    p.run_for(Duration::from_millis(100));
    assert_eq!(p.payloads(1), ["second"], "dialed to proc 1 itself");
    assert_eq!(p.nodes[0].dials.len(), 2);
    assert!(
        p.failures(0).iter().all(|e| !e.is_peer_fault()),
        "{:?}",
        p.failures(0)
    );
}
