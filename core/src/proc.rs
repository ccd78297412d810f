//! The proc machine: one per proc, owning its registry, routing, and every session.
//!
//! # The drive loop
//!
//! Every driver (the tokio and smol adapters, a test harness, your own event loop) runs the
//! same loop:
//!
//! 1. **Mutate**: feed each input with the `handle_*` call for it, passing the current time.
//! 2. **Drain**: call [`Proc::poll_output`] until it returns `None`, carrying out each
//!    [`Output`] (deliver to a port, dial, write, close).
//! 3. **Wait**: read [`Proc::poll_timeout`] and sleep until that deadline or the next input,
//!    whichever is first; at the deadline call [`Proc::handle_timeout`]. Go to 2.
//!
//! `poll_timeout` reports the last `now` while output is queued, never reports a deadline
//! that `handle_timeout` has already handled, and is only changed by `handle_*` calls.
//!
//! ```
//! use procwire_core::id::{ChannelAddr, Name, ProcId};
//! use procwire_core::proc::{Config, Output, Proc};
//! use procwire_core::registry::PortKind;
//! use procwire_core::envelope::Envelope;
//! use procwire_core::time::Instant;
//!
//! let id = ProcId::new(ChannelAddr::Local(7), Name::new("root").unwrap());
//! let mut proc = Proc::new(id, Config::default(), /* incarnation */ 1, /* seed */ 2);
//! let me = proc.reserve_root("client").unwrap();
//! let port = proc.open_port(&me, PortKind::Stream).unwrap();
//!
//! let mut now = Instant::ZERO;
//! // 1. mutate
//! proc.handle_send(now, Envelope::new(me.clone(), port.clone(), "hello".into())).unwrap();
//! // 2. drain
//! let mut delivered = Vec::new();
//! while let Some(output) = proc.poll_output() {
//!     match output {
//!         Output::Deliver(env) => delivered.push(env.payload),
//!         Output::Dial { .. } | Output::Transmit { .. } | Output::Close { .. } => {
//!             // hand to the sockets
//!         }
//!         Output::Returned(_) | Output::Event(_) => {}
//!     }
//! }
//! // 3. wait
//! if let Some(deadline) = proc.poll_timeout() {
//!     now = deadline; // a real driver sleeps until then, or until input arrives
//!     proc.handle_timeout(now);
//! }
//! assert_eq!(delivered, ["hello"]);
//! ```
//!
//! # Routing
//!
//! An envelope goes to the proc named by its destination (or, when it is being returned,
//! by its sender). In this proc it is delivered if the registry has the port, or returned
//! with `NoSuchActor` / `NoSuchPort`. Elsewhere it joins the outbound session to that proc,
//! created and dialed on first use at the address from the address book
//! ([`Proc::set_address`]) or from the proc id. Forwarding costs one hop of TTL; an
//! envelope out of hops is returned. A returned envelope that cannot reach its sender
//! either is counted in [`Stats::returns_dropped`] and reported, never bounced again.
//!
//! Returns and forwards are not subject to the window (the proc cannot make them wait);
//! they are bounded by what peers' own windows let them send.
//!
//! Inbound buffering is not bounded per link here: delivery means placing the message in
//! the port's queue, and the acknowledgement follows at once.

use alloc::collections::btree_map::Entry;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use bytes::BytesMut;

use crate::envelope::{Envelope, Undeliverable, DEFAULT_TTL};
use crate::frame::{
    preamble, FrameDecoder, FrameError, FrameKind, Hello, Item, RefuseReason, Welcome,
};
use crate::id::{ActorId, ChannelAddr, PortId, ProcId};
use crate::inbound::{Fate, Inbound};
use crate::output::Outputs;
use crate::registry::{PortKind, Registry, RegistryError};
use crate::session::{write_postcard, Outbound};
use crate::time::Instant;

pub use crate::config::Config;
pub use crate::output::{ConnError, ConnId, Event, Output};

/// Why a send was not accepted. Nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The encoded message exceeds the frame limit of the link.
    TooLarge {
        /// Encoded size.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The link's window is full; wait for [`Event::Writable`] and send again. The event
    /// follows a refused send only: a driver that wants to wait must have tried.
    WouldBlock,
    /// The proc is shutting down.
    ShuttingDown,
    /// The sender is not a live actor of this proc (failures could not come back to it).
    ForeignSender,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max}")
            }
            SendError::WouldBlock => f.write_str("link window full; try again when writable"),
            SendError::ShuttingDown => f.write_str("proc is shutting down"),
            SendError::ForeignSender => f.write_str("sender is not a live actor of this proc"),
        }
    }
}

impl core::error::Error for SendError {}

/// Counters, for tests and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages placed into local ports.
    pub delivered: u64,
    /// Returns handed to local senders.
    pub returned: u64,
    /// Returns that could not reach their sender.
    pub returns_dropped: u64,
    /// Data frames written (including retransmissions).
    pub data_frames_sent: u64,
    /// Data frames written again after a reconnect.
    pub retransmitted: u64,
    /// Acknowledgement frames written.
    pub acks_sent: u64,
    /// Connections closed for a protocol or framing error.
    pub conn_errors: u64,
}

/// A small deterministic generator (SplitMix64) over the seed the driver passes in: core
/// draws no randomness of its own.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What every session of a proc shares: identity, config, the output queue.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: ProcId,
    pub(crate) incarnation: u64,
    pub(crate) config: Config,
    pub(crate) out: Outputs,
    pub(crate) rng: Rng,
    pub(crate) stats: Stats,
    /// Messages a session gave up on, with why; the proc routes them back.
    pub(crate) failed: Vec<(Envelope, Undeliverable)>,
    /// Connections sessions have dialed since the last settle, with their peer.
    pub(crate) dialed: Vec<(ConnId, ProcId)>,
    next_conn: u64,
}

impl Shared {
    pub(crate) fn new_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }
}

#[derive(Debug)]
enum Role {
    /// Accepted, waiting for the hello.
    Accepting {
        decoder: FrameDecoder<BytesMut>,
        deadline: Instant,
    },
    /// Dialed by one of our outbound sessions.
    Out(ProcId),
    /// Bound to an inbound session.
    In(InKey),
}

type InKey = (ProcId, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Running,
    Draining,
    Done,
}

/// The proc machine.
#[derive(Debug)]
pub struct Proc {
    sh: Shared,
    registry: Registry,
    book: BTreeMap<ProcId, ChannelAddr>,
    outbound: BTreeMap<ProcId, Outbound>,
    inbound: BTreeMap<InKey, Inbound>,
    conns: BTreeMap<ConnId, Role>,
    now: Instant,
    life: Lifecycle,
    received: Vec<Envelope>,
}

impl Proc {
    /// A proc named `id`. `incarnation` must differ between starts of the same proc (pass a
    /// random number); `seed` seeds session ids and backoff jitter.
    pub fn new(id: ProcId, config: Config, incarnation: u64, seed: u64) -> Proc {
        Proc {
            registry: Registry::new(id.clone()),
            sh: Shared {
                out: Outputs::new(config.coalesce_bytes),
                id,
                incarnation,
                config,
                rng: Rng(seed),
                stats: Stats::default(),
                failed: Vec::new(),
                dialed: Vec::new(),
                next_conn: 0,
            },
            book: BTreeMap::new(),
            outbound: BTreeMap::new(),
            inbound: BTreeMap::new(),
            conns: BTreeMap::new(),
            now: Instant::ZERO,
            life: Lifecycle::Running,
            received: Vec::new(),
        }
    }

    /// This proc's id.
    pub fn id(&self) -> &ProcId {
        &self.sh.id
    }

    /// This proc's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.sh.incarnation
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.sh.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.sh.stats
    }

    /// Reserves a root name; see [`Registry::reserve_root`].
    pub fn reserve_root(&mut self, name: &str) -> Result<ActorId, RegistryError> {
        self.registry.reserve_root(name)
    }

    /// Creates a child actor id of `parent`.
    pub fn child(&mut self, parent: &ActorId) -> Result<ActorId, RegistryError> {
        self.registry.child(parent)
    }

    /// Opens an ephemeral port.
    pub fn open_port(&mut self, actor: &ActorId, kind: PortKind) -> Result<PortId, RegistryError> {
        self.registry.open_port(actor, kind)
    }

    /// Binds a well-known port.
    pub fn bind_port(&mut self, port: &PortId, kind: PortKind) -> Result<(), RegistryError> {
        self.registry.bind_port(port, kind)
    }

    /// Unbinds a port.
    pub fn close_port(&mut self, port: &PortId) {
        self.registry.close_port(port)
    }

    /// Removes an actor and its ports.
    pub fn remove_actor(&mut self, actor: &ActorId) {
        self.registry.remove_actor(actor)
    }

    /// The registry, to inspect.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Dials `proc` at `addr` from now on (a proxy, an alias, a moved peer).
    pub fn set_address(&mut self, proc: ProcId, addr: ChannelAddr) {
        if let Some(s) = self.outbound.get_mut(&proc) {
            s.set_addr(addr.clone());
        }
        self.book.insert(proc, addr);
    }

    /// Whether a small send to `dest` would be taken now. A hint: waiting for room means
    /// trying the send and, on `WouldBlock`, waiting for [`Event::Writable`].
    pub fn can_send(&self, dest: &ProcId) -> bool {
        self.outbound.get(dest).is_none_or(|s| s.can_send(&self.sh))
    }

    /// Unacknowledged (messages, bytes) on the link to `dest`.
    pub fn queued(&self, dest: &ProcId) -> (usize, usize) {
        self.outbound.get(dest).map_or((0, 0), |s| s.queued())
    }

    /// Sends a message from a local actor. On `Ok` the proc owns it: it will be delivered,
    /// or come back to its sender as an [`Output::Returned`].
    pub fn handle_send(&mut self, now: Instant, mut env: Envelope) -> Result<(), SendError> {
        self.now = now;
        if self.life != Lifecycle::Running {
            return Err(SendError::ShuttingDown);
        }
        if !self.registry.contains_actor(&env.sender) {
            return Err(SendError::ForeignSender);
        }
        env.returned = None;
        let result = if self.is_local(env.dest.actor().proc()) {
            let max = self.sh.config.max_frame_len;
            match u32::try_from(env.payload.len()) {
                Ok(len) if len <= max => {
                    self.deliver_local(env, None);
                    Ok(())
                }
                _ => Err(SendError::TooLarge {
                    len: u32::try_from(env.payload.len()).unwrap_or(u32::MAX),
                    max,
                }),
            }
        } else {
            self.send_remote(now, &env, false, None)
        };
        self.settle(now);
        result
    }

    /// The driver accepted a connection; the proc names it.
    pub fn handle_accepted(&mut self, now: Instant) -> ConnId {
        self.now = now;
        let conn = self.sh.new_conn();
        self.sh.out.write(conn, &preamble());
        let decoder = FrameDecoder::new(self.sh.config.max_frame_len, BytesMut::new());
        let deadline = now + self.sh.config.connect_timeout;
        self.conns
            .insert(conn, Role::Accepting { decoder, deadline });
        conn
    }

    /// A dial the proc asked for has connected.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        if let Some(Role::Out(peer)) = self.conns.get(&conn) {
            if let Some(s) = self.outbound.get_mut(peer) {
                s.on_connected(&mut self.sh, conn);
            }
        }
        self.settle(now);
    }

    /// Bytes arrived on `conn`.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.now = now;
        let rest = match self.conns.get_mut(&conn) {
            None => None,
            Some(Role::Out(peer)) => {
                if let Some(s) = self.outbound.get_mut(peer) {
                    s.on_bytes(now, &mut self.sh, conn, bytes);
                }
                None
            }
            Some(Role::In(key)) => {
                let key = key.clone();
                self.inbound_bytes(now, conn, key, bytes);
                None
            }
            Some(Role::Accepting { .. }) => self.accept_bytes(now, conn, bytes),
        };
        if let Some(consumed) = rest {
            // The hello bound the connection to a session; the rest belongs to it.
            if let Some(Role::In(key)) = self.conns.get(&conn) {
                let key = key.clone();
                self.inbound_bytes(now, conn, key, &bytes[consumed..]);
            }
        }
        self.settle(now);
    }

    /// `conn` was closed by the peer, failed, or could not be dialed.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        match self.conns.remove(&conn) {
            Some(Role::Out(peer)) => {
                if let Some(s) = self.outbound.get_mut(&peer) {
                    s.on_closed(now, &mut self.sh, conn);
                }
            }
            Some(Role::In(key)) => {
                if let Some(s) = self.inbound.get_mut(&key) {
                    s.on_closed(now, &mut self.sh, conn);
                }
            }
            Some(Role::Accepting { .. }) | None => {}
        }
        self.settle(now);
    }

    /// The driver could not place a delivered envelope (its receiver is gone): it goes back
    /// to its sender with `reason`.
    pub fn handle_undeliverable(&mut self, now: Instant, env: Envelope, reason: Undeliverable) {
        self.now = now;
        self.bounce(now, env, reason, None);
        self.settle(now);
    }

    /// Starts a graceful shutdown: new sends and sessions are refused, outbound links flush
    /// and wait for acknowledgements up to `shutdown_timeout`, the rest comes back
    /// (`ShuttingDown` if never transmitted, `Unconfirmed` if transmitted), then
    /// [`Event::ShutdownComplete`].
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.now = now;
        if self.life == Lifecycle::Running {
            self.life = Lifecycle::Draining;
            for s in self.outbound.values_mut() {
                s.shutdown(now, &mut self.sh);
            }
        }
        self.settle(now);
    }

    /// Time has reached a deadline from [`Proc::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        for s in self.outbound.values_mut() {
            if s.next_deadline().is_some_and(|t| t <= now) {
                s.on_timeout(now, &mut self.sh);
            }
        }
        let mut ended = Vec::new();
        for (key, s) in self.inbound.iter_mut() {
            if s.next_deadline().is_some_and(|t| t <= now)
                && s.on_timeout(now, &mut self.sh) == Fate::Ended
            {
                ended.push(key.clone());
            }
        }
        for key in ended {
            self.end_inbound(&key);
        }
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, r)| matches!(r, Role::Accepting { deadline, .. } if *deadline <= now))
            .map(|(c, _)| *c)
            .collect();
        for conn in late {
            self.conns.remove(&conn);
            self.sh.out.event(Event::ConnectionFailed {
                conn,
                error: ConnError::HandshakeTimeout,
            });
            self.sh.out.push(Output::Close { conn });
        }
        self.settle(now);
    }

    /// The next action for the driver, until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.sh.out.pop()
    }

    /// When [`Proc::handle_timeout`] should be called next: the last `now` while output is
    /// queued, otherwise the earliest deadline of any machine.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.sh.out.is_empty() {
            return Some(self.now);
        }
        let sessions = self.outbound.values().filter_map(|s| s.next_deadline());
        let inbound = self.inbound.values().filter_map(|s| s.next_deadline());
        let accepting = self.conns.values().filter_map(|r| match r {
            Role::Accepting { deadline, .. } => Some(*deadline),
            _ => None,
        });
        sessions.chain(inbound).chain(accepting).min()
    }

    // ---- routing ----

    fn is_local(&self, proc: &ProcId) -> bool {
        proc == &self.sh.id
    }

    /// Queues `env` on the session to its next proc. `origin` is the incarnation of the
    /// proc a return goes back to, when known.
    fn send_remote(
        &mut self,
        now: Instant,
        env: &Envelope,
        force: bool,
        origin: Option<u64>,
    ) -> Result<(), SendError> {
        // One session per peer proc, created (and dialed) on first use.
        let s = match self.outbound.entry(env.next_proc().clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let addr = self.book.get(e.key()).unwrap_or(e.key().addr()).clone();
                let s = Outbound::new(e.key().clone(), addr, &mut self.sh);
                e.insert(s)
            }
        };
        s.send(now, &mut self.sh, env, force, origin)
    }

    /// Routes an envelope that arrived from a peer (of incarnation `origin`) or came back
    /// from a session.
    fn route(&mut self, now: Instant, mut env: Envelope, origin: Option<u64>) {
        if self.is_local(env.next_proc()) {
            return self.deliver_local(env, origin);
        }
        if env.ttl == 0 {
            return self.bounce(now, env, Undeliverable::TtlExhausted, origin);
        }
        env.ttl -= 1;
        // A forward's return, if any, goes to the original sender, not to `origin`.
        let for_incarnation = env.returned.and(origin);
        if let Err(e) = self.send_remote(now, &env, true, for_incarnation) {
            let reason = match e {
                SendError::TooLarge { len, max } => Undeliverable::TooLarge { len, max },
                _ => Undeliverable::ShuttingDown,
            };
            self.bounce(now, env, reason, None);
        }
    }

    fn deliver_local(&mut self, env: Envelope, origin: Option<u64>) {
        match env.returned {
            None => match self.registry.deliver(&env.dest) {
                Ok(()) => {
                    self.sh.stats.delivered += 1;
                    self.sh.out.push(Output::Deliver(env));
                }
                Err(reason) => self.bounce(self.now, env, reason, origin),
            },
            Some(reason) => {
                if self.registry.contains_actor(&env.sender) {
                    self.sh.stats.returned += 1;
                    self.sh.out.push(Output::Returned(env));
                } else {
                    self.drop_return(env, reason);
                }
            }
        }
    }

    /// Sends `env` back to its sender. `origin` is the incarnation of the proc it came
    /// from when that proc is the sender's (a direct message), so the return cannot reach
    /// a later incarnation.
    fn bounce(
        &mut self,
        now: Instant,
        mut env: Envelope,
        reason: Undeliverable,
        origin: Option<u64>,
    ) {
        if let Some(first) = env.returned {
            return self.drop_return(env, first);
        }
        env.returned = Some(reason);
        env.ttl = DEFAULT_TTL;
        self.route(now, env, origin);
    }

    fn drop_return(&mut self, env: Envelope, reason: Undeliverable) {
        self.sh.stats.returns_dropped += 1;
        self.sh.out.event(Event::ReturnDropped {
            sender: env.sender,
            dest: env.dest,
            reason,
            payload: env.payload,
        });
    }

    /// After every input: route what sessions gave back, forget closed connections, and
    /// finish a shutdown whose links have all drained.
    fn settle(&mut self, now: Instant) {
        while !self.sh.failed.is_empty() {
            for (env, reason) in core::mem::take(&mut self.sh.failed) {
                self.bounce(now, env, reason, None);
            }
        }
        for conn in self.sh.out.take_closed() {
            self.conns.remove(&conn);
        }
        for s in self.outbound.values() {
            if let Some(conn) = s.conn() {
                self.conns
                    .entry(conn)
                    .or_insert_with(|| Role::Out(s.peer().clone()));
            }
        }
        if self.life == Lifecycle::Draining && self.outbound.values().all(|s| s.is_closed()) {
            self.life = Lifecycle::Done;
            for s in self.inbound.values_mut() {
                s.close_conn(now, &mut self.sh);
            }
            let accepting: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, r)| matches!(r, Role::Accepting { .. }))
                .map(|(c, _)| *c)
                .collect();
            for conn in accepting {
                self.sh.out.push(Output::Close { conn });
            }
            for conn in self.sh.out.take_closed() {
                self.conns.remove(&conn);
            }
            self.sh.out.event(Event::ShutdownComplete);
        }
    }

    // ---- accepting ----

    /// Feeds an accepted connection until its hello; returns how many bytes were consumed
    /// when the connection got bound to a session (the rest is for the session).
    fn accept_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) -> Option<usize> {
        let mut consumed = 0;
        loop {
            let Some(Role::Accepting { decoder, .. }) = self.conns.get_mut(&conn) else {
                return None;
            };
            let progress = match decoder.decode(&bytes[consumed..]) {
                Ok(p) => p,
                Err(e) => {
                    self.refuse_frame_error(conn, e);
                    return None;
                }
            };
            consumed += progress.consumed;
            match progress.item {
                None => return None,
                Some(Item::Preamble { .. }) => continue,
                Some(Item::Frame(h)) if h.kind == FrameKind::Hello => {
                    let hello = postcard::from_bytes::<Hello>(decoder.body());
                    let Some(Role::Accepting { decoder, .. }) = self.conns.remove(&conn) else {
                        return None;
                    };
                    match hello {
                        Ok(hello) => self.on_hello(now, conn, hello, decoder),
                        Err(_) => self.refuse(conn, RefuseReason::BadHello),
                    }
                    return Some(consumed);
                }
                Some(Item::Frame(_)) => {
                    self.conns.remove(&conn);
                    self.fail_accepted(conn, ConnError::Protocol("expected a hello"));
                    return None;
                }
            }
        }
    }

    fn refuse_frame_error(&mut self, conn: ConnId, e: FrameError) {
        self.conns.remove(&conn);
        if let FrameError::UnsupportedVersion { supported, .. } = e {
            self.refuse(conn, RefuseReason::UnsupportedVersion { supported });
        }
        self.fail_accepted(conn, ConnError::Frame(e));
    }

    fn fail_accepted(&mut self, conn: ConnId, error: ConnError) {
        self.sh.stats.conn_errors += 1;
        self.sh.out.event(Event::ConnectionFailed { conn, error });
        self.sh.out.push(Output::Close { conn });
    }

    fn refuse(&mut self, conn: ConnId, reason: RefuseReason) {
        write_postcard(&mut self.sh, conn, FrameKind::Refuse, &reason);
        self.sh.out.push(Output::Close { conn });
    }

    fn on_hello(
        &mut self,
        now: Instant,
        conn: ConnId,
        hello: Hello,
        decoder: FrameDecoder<BytesMut>,
    ) {
        if hello.to.name() != self.sh.id.name() {
            return self.refuse(conn, RefuseReason::WrongProc);
        }
        if self.life != Lifecycle::Running {
            return self.refuse(conn, RefuseReason::ShuttingDown);
        }
        // Sessions from an earlier start of the same peer can never resume.
        let stale: Vec<InKey> = self
            .inbound
            .iter()
            .filter(|((p, _), s)| *p == hello.from && s.incarnation() != hello.incarnation)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.end_inbound(&key);
        }
        let key = (hello.from.clone(), hello.session);
        if !self.inbound.contains_key(&key) {
            if hello.resume {
                // We do not know this session: say so; the dialer returns what it cannot
                // prove delivered and starts a new one.
                let welcome = Welcome {
                    incarnation: self.sh.incarnation,
                    next: None,
                    max_frame_len: self.sh.config.max_frame_len,
                };
                write_postcard(&mut self.sh, conn, FrameKind::Welcome, &welcome);
                self.sh.out.push(Output::Close { conn });
                return;
            }
            if self.inbound.len() >= self.sh.config.max_inbound_sessions {
                return self.refuse(conn, RefuseReason::TooManySessions);
            }
            self.inbound.insert(
                key.clone(),
                Inbound::new(hello.from.clone(), hello.incarnation),
            );
        }
        if let Some(s) = self.inbound.get_mut(&key) {
            s.attach(now, &mut self.sh, conn, decoder);
            self.conns.insert(conn, Role::In(key));
        }
    }

    fn inbound_bytes(&mut self, now: Instant, conn: ConnId, key: InKey, bytes: &[u8]) {
        let Some(s) = self.inbound.get_mut(&key) else {
            return;
        };
        let mut received = core::mem::take(&mut self.received);
        let fate = s.on_bytes(now, &mut self.sh, conn, bytes, &mut received);
        let origin = s.incarnation();
        for env in received.drain(..) {
            // Only a message whose sender lives in the dialing proc ties its return to
            // that proc's incarnation.
            let from_dialer = env.returned.is_none() && env.sender.proc() == &key.0;
            self.route(now, env, from_dialer.then_some(origin));
        }
        self.received = received;
        if fate == Fate::Ended {
            self.end_inbound(&key);
        }
    }

    fn end_inbound(&mut self, key: &InKey) {
        if let Some(mut s) = self.inbound.remove(key) {
            if let Some(conn) = s.conn() {
                s.close_conn(self.now, &mut self.sh);
                self.conns.remove(&conn);
            }
        }
    }
}
