//! Deterministic simulation: several procs on a seeded network that splits reads at random
//! points, delays bytes, kills connections, partitions links and restarts procs. Time jumps
//! to the next deadline or network event.
//!
//! Checked on every seed:
//! - no message is delivered twice, and per (sender incarnation, destination) delivery
//!   order is send order;
//! - each message has at most one definite outcome (delivered, or returned with a definite
//!   reason such as `NoSuchPort` or `Unreachable`) and at most one "delivery unknown"
//!   return (restarted, session lost, unconfirmed), which a link failure before the
//!   acknowledgement produces whatever the destination did with the message;
//! - after the faults stop, every accepted message of a live sender has been delivered or
//!   returned, and none is left queued;
//! - no link holds more than its window, and no port queue more than its bound, while some
//!   consumers are slow (their ports fill and hold the links that feed them);
//!   `poll_timeout` is never a handled deadline (no busy loop) and reports `now` while
//!   output is queued.
//!
//! Odd seeds run every link with a cookie (the authenticated handshake on each connection).
//!
//! `PROCWIRE_SIM_SEEDS=a..b` widens the sweep (default `0..32`); `PROCWIRE_SIM_TRACE=1`
//! prints what happens, to follow a failing seed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::Bytes;
use procwire_core::envelope::{Envelope, Undeliverable};
use procwire_core::id::{ActorId, ChannelAddr, Name, PortId, ProcId};
use procwire_core::proc::{Config, ConnId, Output, Proc};
use procwire_core::registry::PortKind;
use procwire_core::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// Node `p` dialed `conn` to node `target`.
    Dial {
        p: usize,
        gen: u32,
        conn: ConnId,
        target: usize,
    },
    /// Bytes for one side of a link (payload kept in `Sim::chunks`).
    Bytes {
        link: usize,
        to: usize,
        chunk: usize,
    },
    /// The other side closed; notify `to` once its earlier bytes arrived.
    Closed { link: usize, to: usize },
    /// A sender actor sends its next message.
    Send { p: usize },
    /// Node `p`'s consumer takes messages from its port's queue.
    Consume { p: usize, gen: u32 },
    /// Fault injection tick.
    Fault,
}

#[derive(Debug)]
struct Link {
    ends: [(usize, u32, ConnId); 2],
    alive: bool,
    /// Side closed by its own proc (no further notifications to it).
    closed: [bool; 2],
    /// Last scheduled arrival per direction, to keep bytes in order.
    last: [Instant; 2],
}

struct Node {
    proc: Proc,
    gen: u32,
    sender: ActorId,
    port: PortId,
    /// Next message counter per destination.
    counters: Vec<u64>,
    /// Delivered, not yet consumed: payload sizes, oldest first.
    backlog: std::collections::VecDeque<usize>,
    /// A consumer scheduled to run.
    consuming: bool,
    /// Gap between consumer runs, and messages taken per run (a slow consumer's
    /// port fills, holds its links and slows its senders).
    consume_gap: Duration,
    consume_batch: usize,
}

#[derive(Default)]
struct Ledger {
    /// Accepted message -> (sender node, sender gen, dest node).
    accepted: BTreeMap<(usize, u32, usize, u64), bool /* to a missing port */>,
    delivered: BTreeSet<(usize, u32, usize, u64)>,
    returned: BTreeMap<(usize, u32, usize, u64), Vec<Undeliverable>>,
    /// Returns that could not reach their sender (counted by the proc).
    dropped: BTreeSet<(usize, u32, usize, u64)>,
    /// When each accepted message was accepted.
    accepted_at: BTreeMap<(usize, u32, usize, u64), Instant>,
    /// Restart times per node.
    restarts: BTreeMap<usize, Vec<Instant>>,
    /// Highest counter delivered per (sender, gen, dest).
    order: BTreeMap<(usize, u32, usize), u64>,
}

struct Sim {
    rng: Rng,
    now: Instant,
    nodes: Vec<Node>,
    config: Config,
    events: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    seq: u64,
    links: Vec<Link>,
    /// (node, gen, conn) -> (link, side)
    conn_link: BTreeMap<(usize, u32, ConnId), (usize, usize)>,
    /// Connections a proc closed: each is closed once and never written to again.
    closed_here: BTreeSet<(usize, u32, ConnId)>,
    chunks: Vec<Option<Bytes>>,
    partitioned: BTreeSet<(usize, usize)>,
    faults: bool,
    sending: bool,
    ledger: Ledger,
    next_incarnation: u64,
    window_slack: usize,
    /// `PROCWIRE_SIM_TRACE=1` prints deliveries, returns, restarts and events.
    trace: bool,
}

fn key(src: usize, gen: u32, dst: usize, n: u64) -> (usize, u32, usize, u64) {
    (src, gen, dst, n)
}

fn payload(rng: &mut Rng, src: usize, gen: u32, dst: usize, n: u64) -> Bytes {
    let mut v = Vec::new();
    v.extend_from_slice(&(src as u32).to_le_bytes());
    v.extend_from_slice(&gen.to_le_bytes());
    v.extend_from_slice(&(dst as u32).to_le_bytes());
    v.extend_from_slice(&n.to_le_bytes());
    let extra = match rng.below(10) {
        0 => rng.below(6000),
        1..=3 => rng.below(300),
        _ => 0,
    };
    v.resize(v.len() + extra as usize, 0xAB);
    Bytes::from(v)
}

fn parse(p: &Bytes) -> (usize, u32, usize, u64) {
    let u = |r: std::ops::Range<usize>| u32::from_le_bytes(p[r].try_into().unwrap());
    (
        u(0..4) as usize,
        u(4..8),
        u(8..12) as usize,
        u64::from_le_bytes(p[12..20].try_into().unwrap()),
    )
}

fn proc_id(i: usize) -> ProcId {
    ProcId::new(
        ChannelAddr::Local(i as u64 + 1),
        Name::new(&format!("p{i}")).unwrap(),
    )
}

impl Sim {
    fn new(seed: u64, n: usize) -> Sim {
        let config = Config {
            window_msgs: 24,
            window_bytes: 24 * 1024,
            port_queue_msgs: 6,
            port_queue_bytes: 16 * 1024,
            link_held_msgs: 24,
            link_held_bytes: 24 * 1024,
            max_frame_len: 8 * 1024,
            ack_every_msgs: 8,
            ack_every_bytes: 8 * 1024,
            ack_delay: Duration::from_millis(3),
            heartbeat_interval: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_millis(200),
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(400),
            unreachable_timeout: Duration::from_secs(3),
            session_retention: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(2),
            // Chunks from 64 B (every frame straddles or fills one) to 8 KiB, and id caches
            // from none to a few entries, so ids also travel whole once the cache is full.
            chunk_bytes: 64 << (seed % 8),
            id_cache_entries: (seed % 5) as u16,
            // Odd seeds authenticate every link with a cookie (a challenge-response on
            // each connection), even seeds go without.
            cookie: (seed % 2 == 1)
                .then(|| procwire_core::auth::Cookie::new(b"sim cookie").expect("a cookie")),
            ..Config::default()
        };
        let mut sim = Sim {
            rng: Rng(seed),
            now: Instant::ZERO,
            nodes: Vec::new(),
            config,
            events: BinaryHeap::new(),
            seq: 0,
            links: Vec::new(),
            conn_link: BTreeMap::new(),
            closed_here: BTreeSet::new(),
            chunks: Vec::new(),
            partitioned: BTreeSet::new(),
            faults: true,
            sending: true,
            ledger: Ledger::default(),
            next_incarnation: seed.wrapping_mul(1000) + 1,
            window_slack: 0,
            trace: std::env::var_os("PROCWIRE_SIM_TRACE").is_some(),
        };
        for i in 0..n {
            let node = sim.fresh_node(i, 0);
            sim.nodes.push(node);
            sim.schedule(Duration::from_millis(1), Ev::Send { p: i });
        }
        sim.schedule(Duration::from_millis(100), Ev::Fault);
        sim
    }

    fn fresh_node(&mut self, i: usize, gen: u32) -> Node {
        self.next_incarnation += 1;
        let seed = self.rng.next();
        let mut proc = Proc::new(proc_id(i), self.config.clone(), self.next_incarnation, seed);
        let a = proc.reserve_root("a").unwrap();
        let port = proc.open_port(&a, PortKind::Stream, None).unwrap();
        let sender = proc.reserve_root("s").unwrap();
        let slow = self.rng.chance(400);
        Node {
            proc,
            gen,
            sender,
            port,
            counters: Vec::new(),
            backlog: std::collections::VecDeque::new(),
            consuming: false,
            consume_gap: Duration::from_micros(if slow {
                2_000 + self.rng.below(8_000)
            } else {
                20
            }),
            consume_batch: if slow {
                1 + self.rng.below(4) as usize
            } else {
                usize::MAX
            },
        }
    }

    fn schedule(&mut self, after: Duration, ev: Ev) {
        self.schedule_at(self.now + after, ev);
    }

    fn schedule_at(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev)));
    }

    fn latency(&mut self) -> Duration {
        let span = if self.rng.chance(50) { 30_000 } else { 2_000 };
        Duration::from_micros(50 + self.rng.below(span))
    }

    fn blocked(&self, a: usize, b: usize) -> bool {
        self.partitioned.contains(&(a.min(b), a.max(b)))
    }

    /// Drains one node's outputs, checking the timer contract first.
    fn drain(&mut self, p: usize) {
        let node = &mut self.nodes[p];
        let gen = node.gen;
        let mut outputs = Vec::new();
        let mut first = true;
        while let Some(o) = node.proc.poll_output() {
            if first {
                first = false;
            }
            // Every other node takes runs of deliveries to one port in one call.
            let Output::Deliver { port, env } = o else {
                outputs.push(o);
                continue;
            };
            if p % 2 == 1 {
                outputs.push(Output::Deliver { port, env });
                continue;
            }
            let mut run = std::collections::VecDeque::from([env]);
            node.proc.poll_deliveries(port, &mut run);
            outputs.extend(run.into_iter().map(|env| Output::Deliver { port, env }));
        }
        if let Some(t) = node.proc.poll_timeout() {
            assert!(
                t > self.now,
                "stale deadline {t:?} at {:?} after draining",
                self.now
            );
        }
        for o in outputs {
            self.carry_out(p, gen, o);
        }
    }

    fn check_queued_now(&self, p: usize) {
        // While output is queued, poll_timeout must say "now".
        let t = self.nodes[p].proc.poll_timeout();
        assert!(t.is_none_or(|t| t >= self.now));
    }

    fn carry_out(&mut self, p: usize, gen: u32, o: Output) {
        match o {
            Output::Deliver { port, env } => {
                assert_eq!(Some(port), self.nodes[p].proc.local_port(&env.dest));
                self.on_deliver(p, env)
            }
            Output::Returned(env) => self.on_returned(p, env),
            Output::Dial { conn, addr } => {
                let ChannelAddr::Local(n) = *addr else {
                    panic!("unexpected address {addr}")
                };
                let target = (n - 1) as usize;
                let lat = self.latency();
                self.schedule(
                    lat,
                    Ev::Dial {
                        p,
                        gen,
                        conn,
                        target,
                    },
                );
            }
            Output::Transmit { conn, data } => {
                assert!(
                    !self.closed_here.contains(&(p, gen, conn)),
                    "node {p} wrote to {conn:?} after closing it"
                );
                let Some(&(link, side)) = self.conn_link.get(&(p, gen, conn)) else {
                    return;
                };
                if !self.links[link].alive || self.links[link].closed[side] {
                    return;
                }
                // Split at random points; each piece arrives in order.
                let mut rest = data;
                while !rest.is_empty() {
                    let cut = if self.rng.chance(300) {
                        1 + self.rng.below(rest.len() as u64) as usize
                    } else {
                        rest.len()
                    };
                    let piece = rest.split_to(cut);
                    let at = (self.now + self.latency()).max(self.links[link].last[side]);
                    self.links[link].last[side] = at;
                    self.chunks.push(Some(piece));
                    let chunk = self.chunks.len() - 1;
                    self.schedule_at(
                        at,
                        Ev::Bytes {
                            link,
                            to: 1 - side,
                            chunk,
                        },
                    );
                }
            }
            Output::Close { conn } => {
                assert!(
                    self.closed_here.insert((p, gen, conn)),
                    "node {p} closed {conn:?} twice"
                );
                let Some((link, side)) = self.conn_link.remove(&(p, gen, conn)) else {
                    return;
                };
                if self.links[link].closed[side] {
                    return;
                }
                self.links[link].closed[side] = true;
                let at = (self.now + self.latency()).max(self.links[link].last[side]);
                self.schedule_at(at, Ev::Closed { link, to: 1 - side });
            }
            Output::Event(procwire_core::proc::Event::ReturnDropped {
                reason, payload, ..
            }) => {
                let k = parse(&payload);
                assert!(self.ledger.dropped.insert(k), "return dropped twice: {k:?}");
                if self.ledger.delivered.contains(&k) {
                    assert!(
                        uncertain(reason),
                        "delivered, then returned with {reason:?}"
                    );
                }
            }
            Output::Event(e) => {
                if self.trace {
                    eprintln!("{:?} node {p} gen {gen}: {e:?}", self.now);
                }
            }
            other => panic!("the simulation does not know output {other:?}"),
        }
    }

    fn on_deliver(&mut self, p: usize, env: Envelope) {
        let (src, gen, dst, n) = parse(&env.payload);
        assert_eq!(dst, p, "delivered to the wrong proc");
        assert_eq!(env.dest, self.nodes[p].port);
        assert_eq!(
            env.sender, self.nodes[src].sender,
            "delivered with another sender"
        );
        let k = key(src, gen, dst, n);
        assert!(
            self.ledger.accepted.contains_key(&k),
            "delivered a message never accepted: {k:?}"
        );
        assert!(
            !self.ledger.accepted[&k],
            "delivered to a missing port: {k:?}"
        );
        assert!(
            self.ledger.delivered.insert(k),
            "duplicate delivery of {k:?}"
        );
        if self.trace {
            eprintln!("{:?} delivered {k:?}", self.now);
        }
        let node = &mut self.nodes[p];
        node.backlog.push_back(env.payload.len());
        let (queued, _) = node.proc.registry().queued(&node.port);
        assert!(
            queued <= self.config.port_queue_msgs,
            "port queue over its bound: {queued}"
        );
        if !node.consuming {
            node.consuming = true;
            let (gap, gen) = (node.consume_gap, node.gen);
            self.schedule(gap, Ev::Consume { p, gen });
        }
        let last = self.ledger.order.entry((src, gen, dst)).or_insert(0);
        assert!(n >= *last, "out of order: {k:?} after {last}");
        *last = n + 1;
        // Every other delivery's ids go back for reuse, so both paths are exercised.
        if n % 2 == 0 {
            self.nodes[p].proc.recycle(env);
        }
        if let Some(r) = self.ledger.returned.get(&k) {
            assert!(
                r.iter().all(|r| uncertain(*r)),
                "delivered after a definite return {r:?}: {k:?}"
            );
        }
    }

    fn on_returned(&mut self, p: usize, env: Envelope) {
        let (src, gen, dst, n) = parse(&env.payload);
        assert_eq!(src, p);
        let k = key(src, gen, dst, n);
        let reason = env.returned.expect("returned without reason");
        assert_eq!(gen, self.nodes[p].gen, "returned to a later incarnation");
        if self.trace {
            eprintln!("{:?} returned {k:?}: {reason}", self.now);
        }
        let seen = self.ledger.returned.entry(k).or_default();
        // At most one definite outcome and at most one "delivery unknown" return.
        assert!(
            seen.iter().all(|r| uncertain(*r) != uncertain(reason)),
            "returned twice ({seen:?} then {reason:?}): {k:?}"
        );
        seen.push(reason);
        if self.ledger.delivered.contains(&k) {
            assert!(
                uncertain(reason),
                "delivered and returned with {reason:?}: {k:?}"
            );
        }
        if self.ledger.accepted[&k] {
            assert!(
                reason == Undeliverable::NoSuchPort
                    || reason == Undeliverable::Unreachable
                    || uncertain(reason),
                "missing port returned with {reason:?}"
            );
        } else {
            assert_ne!(reason, Undeliverable::NoSuchPort);
        }
    }

    fn send(&mut self, p: usize) {
        let n_nodes = self.nodes.len();
        let mut dst = self.rng.below(n_nodes as u64 - 1) as usize;
        if dst >= p {
            dst += 1;
        }
        let missing = self.rng.chance(20);
        let node = &mut self.nodes[p];
        if node.counters.len() < n_nodes {
            node.counters.resize(n_nodes, 0);
        }
        let n = node.counters[dst];
        let gen = node.gen;
        let body = payload(&mut self.rng, p, gen, dst, n);
        let a = proc_id(dst).actor(Name::new("a").unwrap(), 0);
        let port = if missing {
            a.port(9999)
        } else {
            a.port(self.nodes[p].port.index())
        };
        let node = &mut self.nodes[p];
        let env = Envelope::new(node.sender.clone(), port, body);
        match node.proc.handle_send(self.now, env) {
            Ok(()) => {
                node.counters[dst] += 1;
                self.ledger.accepted.insert(key(p, gen, dst, n), missing);
                self.ledger
                    .accepted_at
                    .insert(key(p, gen, dst, n), self.now);
                if self.trace {
                    eprintln!("{:?} sent {:?}", self.now, key(p, gen, dst, n));
                }
                if missing {
                    self.window_slack += 1;
                }
                self.check_queued_now(p);
            }
            Err(procwire_core::proc::SendError::WouldBlock) => {
                assert!(
                    !node.proc.can_send(&proc_id(dst)) || node.proc.queued(&proc_id(dst)).1 > 0
                );
            }
            Err(procwire_core::proc::SendError::TooLarge { len, max }) => {
                assert!(len > max && max == self.config.max_frame_len);
            }
            Err(e) => panic!("send refused: {e}"),
        }
        let (msgs, _) = self.nodes[p].proc.queued(&proc_id(dst));
        assert!(
            msgs <= self.config.window_msgs + self.window_slack,
            "window exceeded: {msgs}"
        );
        self.drain(p);
    }

    fn kill_link(&mut self, link: usize) {
        if !self.links[link].alive {
            return;
        }
        self.links[link].alive = false;
        for side in 0..2 {
            let (p, gen, conn) = self.links[link].ends[side];
            if self.links[link].closed[side] || self.nodes[p].gen != gen {
                continue;
            }
            self.conn_link.remove(&(p, gen, conn));
            self.nodes[p].proc.handle_closed(self.now, conn);
            self.drain(p);
        }
    }

    fn fault(&mut self) {
        if !self.faults {
            return;
        }
        let n = self.nodes.len();
        let roll = self.rng.below(100);
        if roll < 35 {
            let live: Vec<usize> = (0..self.links.len())
                .filter(|l| self.links[*l].alive)
                .collect();
            if !live.is_empty() {
                let l = live[self.rng.below(live.len() as u64) as usize];
                self.kill_link(l);
            }
        } else if roll < 50 {
            let a = self.rng.below(n as u64) as usize;
            let b = (a + 1 + self.rng.below(n as u64 - 1) as usize) % n;
            let pair = (a.min(b), a.max(b));
            if !self.partitioned.remove(&pair) {
                self.partitioned.insert(pair);
                for l in 0..self.links.len() {
                    let ends = (self.links[l].ends[0].0, self.links[l].ends[1].0);
                    if (ends.0.min(ends.1), ends.0.max(ends.1)) == pair {
                        self.kill_link(l);
                    }
                }
            }
        } else if roll < 55 {
            let p = self.rng.below(n as u64) as usize;
            self.restart(p);
        }
        let next = Duration::from_millis(20 + self.rng.below(400));
        self.schedule(next, Ev::Fault);
    }

    /// Outbound sessions the live procs opened over a peer's connection.
    fn shared_opens(&self) -> u64 {
        self.nodes.iter().map(|n| n.proc.stats().shared_opens).sum()
    }

    fn restart(&mut self, p: usize) {
        if self.trace {
            eprintln!("{:?} restart {p}", self.now);
        }
        // The old incarnation's connections die with it.
        for l in 0..self.links.len() {
            if self.links[l].alive
                && self.links[l]
                    .ends
                    .iter()
                    .any(|e| e.0 == p && e.1 == self.nodes[p].gen)
            {
                let side = usize::from(self.links[l].ends[1].0 == p);
                self.links[l].closed[side] = true;
                self.kill_link(l);
            }
        }
        let gen = self.nodes[p].gen + 1;
        self.nodes[p] = self.fresh_node(p, gen);
        self.ledger.restarts.entry(p).or_default().push(self.now);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Dial {
                p,
                gen,
                conn,
                target,
            } => {
                if self.nodes[p].gen != gen {
                    return;
                }
                if self.blocked(p, target) {
                    self.nodes[p].proc.handle_closed(self.now, conn);
                    return self.drain(p);
                }
                let tgen = self.nodes[target].gen;
                let tconn = self.nodes[target].proc.handle_accepted(self.now);
                let link = self.links.len();
                self.links.push(Link {
                    ends: [(p, gen, conn), (target, tgen, tconn)],
                    alive: true,
                    closed: [false, false],
                    last: [self.now, self.now],
                });
                self.conn_link.insert((p, gen, conn), (link, 0));
                self.conn_link.insert((target, tgen, tconn), (link, 1));
                self.drain(target);
                self.nodes[p].proc.handle_connected(self.now, conn);
                self.drain(p);
            }
            Ev::Bytes { link, to, chunk } => {
                let data = self.chunks[chunk].take().unwrap();
                let l = &self.links[link];
                let (p, gen, conn) = l.ends[to];
                if !l.alive || l.closed[to] || self.nodes[p].gen != gen {
                    return;
                }
                self.nodes[p].proc.handle_bytes(self.now, conn, &data);
                self.drain(p);
            }
            Ev::Closed { link, to } => {
                let l = &mut self.links[link];
                let (p, gen, conn) = l.ends[to];
                if !l.alive || l.closed[to] || self.nodes[p].gen != gen {
                    return;
                }
                l.alive = false;
                self.conn_link.remove(&(p, gen, conn));
                self.nodes[p].proc.handle_closed(self.now, conn);
                self.drain(p);
            }
            Ev::Send { p } => {
                if !self.sending {
                    return;
                }
                self.send(p);
                let gap = Duration::from_micros(self.rng.below(3_000));
                self.schedule(gap, Ev::Send { p });
            }
            Ev::Consume { p, gen } => self.consume(p, gen),
            Ev::Fault => self.fault(),
        }
    }

    fn consume(&mut self, p: usize, gen: u32) {
        let node = &mut self.nodes[p];
        if node.gen != gen {
            return;
        }
        let (mut msgs, mut bytes) = (0, 0);
        while msgs < node.consume_batch {
            let Some(len) = node.backlog.pop_front() else {
                break;
            };
            msgs += 1;
            bytes += len;
        }
        let port = node
            .proc
            .local_port(&node.port)
            .expect("the port stays bound");
        node.proc.handle_consumed(self.now, port, msgs, bytes);
        let node = &mut self.nodes[p];
        node.consuming = !node.backlog.is_empty();
        if node.consuming {
            let gap = node.consume_gap;
            self.schedule(gap, Ev::Consume { p, gen });
        }
        self.drain(p);
    }

    /// Runs until `until`, jumping time to the next event or deadline.
    fn run(&mut self, until: Instant) {
        let mut same_instant = 0u32;
        loop {
            let next_ev = self.events.peek().map(|Reverse((t, _, _))| *t);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.proc.poll_timeout())
                .min();
            let next = match (next_ev, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(Instant::MAX),
            };
            if next > until {
                self.now = until;
                return;
            }
            assert!(next >= self.now, "time went backwards");
            same_instant = if next == self.now {
                same_instant + 1
            } else {
                0
            };
            assert!(same_instant < 100_000, "busy loop at {:?}", self.now);
            self.now = next;
            if next_timer == Some(next) {
                for p in 0..self.nodes.len() {
                    if self.nodes[p].proc.poll_timeout().is_some_and(|t| t <= next) {
                        self.nodes[p].proc.handle_timeout(next);
                        self.drain(p);
                    }
                }
            } else if let Some(Reverse((_, _, ev))) = self.events.pop() {
                self.handle(ev);
            }
        }
    }

    fn heal(&mut self) {
        self.faults = false;
        self.partitioned.clear();
    }

    fn final_check(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            for j in 0..self.nodes.len() {
                if i != j {
                    assert_eq!(
                        n.proc.queued(&proc_id(j)),
                        (0, 0),
                        "{i}->{j} still holds messages"
                    );
                }
            }
        }
        let mut delivered = 0;
        for (k, missing) in self.ledger.accepted.iter() {
            let (src, gen, dst, _) = *k;
            if self.nodes[src].gen != gen {
                continue; // the sender died with whatever it held
            }
            let at = self.ledger.accepted_at[k];
            let bouncer_died = self
                .ledger
                .restarts
                .get(&dst)
                .is_some_and(|r| r.iter().any(|t| *t >= at));
            if *missing && bouncer_died {
                continue; // the return died with the proc that made it
            }
            let d = self.ledger.delivered.contains(k);
            let r = self.ledger.returned.get(k);
            let dropped = self.ledger.dropped.contains(k);
            assert!(
                d || r.is_some() || dropped,
                "accepted but neither delivered nor returned: {k:?}"
            );

            if d {
                delivered += 1;
            }
            let _ = dst;
        }
        assert!(delivered > 0, "nothing was delivered");
    }
}

fn uncertain(r: Undeliverable) -> bool {
    r.delivery_unknown()
}

fn run_seed(seed: u64) -> (usize, usize, usize, u64) {
    let nodes = 3 + (seed % 2) as usize;
    let mut sim = Sim::new(seed, nodes);
    sim.run(Instant::ZERO + Duration::from_secs(8));
    sim.heal();
    sim.run(Instant::ZERO + Duration::from_secs(12));
    sim.sending = false;
    sim.run(Instant::ZERO + Duration::from_secs(30));
    sim.final_check();
    (
        sim.ledger.accepted.len(),
        sim.ledger.delivered.len(),
        sim.ledger.returned.len(),
        sim.shared_opens(),
    )
}

fn seeds() -> std::ops::Range<u64> {
    std::env::var("PROCWIRE_SIM_SEEDS")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(0..32)
}

#[test]
fn simulated_network_delivers_exactly_once_in_order_or_returns() {
    let mut totals = (0, 0, 0, 0);
    for seed in seeds() {
        let r = std::panic::catch_unwind(|| run_seed(seed));
        match r {
            Ok((a, d, ret, shared)) => {
                totals.0 += a;
                totals.1 += d;
                totals.2 += ret;
                totals.3 += shared;
            }
            Err(e) => {
                eprintln!("seed {seed} failed");
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!(
        "accepted {} delivered {} returned {}; sessions opened over the peer's connection \
         (by the procs alive at the end) {}",
        totals.0, totals.1, totals.2, totals.3
    );
    assert!(totals.3 > 0, "no two-way link was ever used");
}

/// A calm network: no faults at all; everything must be delivered, nothing returned but
/// the sends to a missing port.
#[test]
fn calm_network_delivers_everything() {
    let mut sim = Sim::new(7, 3);
    sim.heal();
    sim.run(Instant::ZERO + Duration::from_secs(5));
    sim.sending = false;
    sim.run(Instant::ZERO + Duration::from_secs(10));
    sim.final_check();
    assert!(
        sim.shared_opens() > 0,
        "answers ride the dialers' connections"
    );
    for (k, missing) in &sim.ledger.accepted {
        if *missing {
            assert_eq!(
                sim.ledger.returned.get(k),
                Some(&vec![Undeliverable::NoSuchPort])
            );
        } else {
            assert!(sim.ledger.delivered.contains(k), "{k:?} not delivered");
            assert!(!sim.ledger.returned.contains_key(k));
        }
    }
}
