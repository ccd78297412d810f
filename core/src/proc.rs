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
//! Exactly one mutation may be followed by a full drain, but the loop does not have to be
//! that strict: calling `handle_*` while outputs are still queued (between two
//! `poll_output` calls) is allowed, and the new outputs queue behind the old ones. A
//! driver that carries out a [`Output::Deliver`] and reports it consumed at once with
//! [`Proc::handle_consumed`], or that completes a [`Output::Dial`] immediately with
//! [`Proc::handle_connected`], may do so in the middle of a drain.
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
//! let port = proc.open_port(&me, PortKind::Stream, None).unwrap();
//!
//! let mut now = Instant::ZERO;
//! // 1. mutate
//! proc.handle_send(now, Envelope::new(me.clone(), port.clone(), "hello".into())).unwrap();
//! // 2. drain
//! let mut delivered = Vec::new();
//! while let Some(output) = proc.poll_output() {
//!     match output {
//!         Output::Deliver { env, .. } => delivered.push(env.payload),
//!         Output::Dial { .. } | Output::Transmit { .. } | Output::Close { .. } => {
//!             // hand to the sockets
//!         }
//!         Output::Returned(_) | Output::Event(_) => {}
//!         _ => {} // `Output` is non-exhaustive
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
//! # Bounded receivers
//!
//! Delivery means placing the message in its port's queue ([`Output::Deliver`]); the port
//! counts it until the driver reports it taken ([`Proc::handle_consumed`], one by one or in
//! batches). A port at `Config::port_queue_msgs` or `port_queue_bytes` is full: the inbound
//! link whose next message is for it waits there, unacknowledged, and so does everything
//! behind it on that link (head-of-line within a link, so per-link order needs nothing
//! more; other links go on). Its sender's window fills and its sends wait. A link holds at
//! most `Config::link_held_msgs` / `link_held_bytes` this way; a peer that sends more has
//! its connection closed (`ConnError::Overrun`) and resumes from the first message not
//! delivered. What a link holds is dropped when its connection goes (the dialer still has
//! it, unacknowledged, and sends it again or returns it), so nothing held is ever delivered
//! after a newer session's messages. Local sends to a full port get `WouldBlock`, then
//! `Event::Writable` (naming this proc) once a consumer takes something. Liveness does not
//! depend on consumption: pings, keepalives and idle timeouts go on while a link waits.
//!
//! # Costs that do not grow with the number of peers
//!
//! Sessions live in slots; connections name their session's slot. Every machine's next
//! deadline sits in one heap (`schedule`): `poll_timeout` reads its top,
//! `handle_timeout` visits only the machines that are due, and an input reschedules only
//! the machines it touched, and only those whose timers changed (a send or a run of data
//! frames changes none). Idle deadlines are not moved on every byte; they re-arm from the
//! last byte heard when they fire.
//!
//! # The per-message path
//!
//! A message costs no allocation in steady state (buffers are reused, see `recycle`) and
//! no id comparison by value: the registry, the peer table and the id cache each keep a
//! small memo of the ids last seen, matched by identity (`ActorId::is_same`,
//! `ProcId::is_same`); a local delivery is one registry call (`admit`: placed, full, or
//! refused). Outputs wait in the queue in a compact form and become an [`Output`] only
//! when polled. [`Proc::handle_send_ref`] sends from a borrowed envelope, so a sender that
//! reuses one envelope touches no reference count; deliveries name their port by a
//! [`LocalPort`] handle, so the driver finds the receiver by index.
//!
//! # Two-way links
//!
//! A connection carries at most one session each way. The session that opened it (the
//! outbound session that dialed it, or on the accepting side the dialer's inbound session)
//! decodes its bytes and hands the frames of the other session on it to the proc, which
//! routes them by kind after the input (`Ctx::hand_over`). An accepted connection whose
//! dialer's session is open becomes *shareable*: this proc's outbound session to that
//! dialer, when it needs a connection, sends its hello on it instead of dialing
//! (`Config::two_way`). A hello arriving on a connection this proc dialed is that: it may
//! only come from the proc dialed, without a nonce. Two procs that dial each other at once
//! converge on one connection: the one with the larger id abandons its own while it is
//! still in its handshake (`Proc::converge`). Either session may close the
//! connection (the other is told when the proc forgets it), and within one input a
//! connection is closed and reported failed once, and nothing is written to it after.
//!
//! # Data is pulled
//!
//! Data frames are encoded once into their session's chunks (see `session`). While a
//! connection has frames not yet handed out, the output queue holds a pull marker for it
//! at the position of the first such frame; `poll_output` turns the marker into
//! [`Output::Transmit`]s that are slices of the chunks, so many small messages leave in
//! one write without being copied, and a retransmission after a reconnect is a slice of
//! what is stored.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;

use bytes::Bytes;

use crate::auth::{self, Side, Tag, NONCE_LEN};
use crate::ctx::{Ctx, Rx};
use crate::envelope::{Envelope, Undeliverable, DEFAULT_TTL};
use crate::fingerprint::TypeFingerprint;
use crate::frame::{
    preamble, FrameDecoder, FrameError, FrameHeader, FrameKind, Hello, Item, RecycledBody,
    RefuseReason, Welcome, CHALLENGE_LEN, MAX_HANDSHAKE_FRAME_LEN,
};
use crate::id::{ActorId, ChannelAddr, PortId, ProcId};
use crate::inbound::{Fate, Inbound};
use crate::output::Popped;
use crate::registry::{Admit, PortKind, Registry, RegistryError};
use crate::schedule::{Owner, Schedule};
use crate::session::Outbound;
use crate::time::Instant;

pub use crate::config::Config;
pub use crate::ctx::{RefusedCounts, SendError, Stats};
pub use crate::output::{ConnError, ConnId, DialError, DialErrorKind, Event, Output, Violation};
pub use crate::registry::LocalPort;

#[derive(Debug)]
enum Role {
    /// Accepted, waiting for the hello (or, with a cookie, for the proof).
    Accepting {
        decoder: FrameDecoder<RecycledBody>,
        deadline: Instant,
        /// The hello, once challenged, until the dialer proves the cookie.
        proving: Option<Box<Proving>>,
    },
    /// Dialed by the outbound session in slot `out`, which decodes it; `inb`: the peer's
    /// session to this proc over it (a two-way link), if any.
    Out { out: usize, inb: Option<usize> },
    /// Accepted and bound to the dialer's inbound session in slot `inb`, which decodes it;
    /// `out`: this proc's session to the dialer over it, if any.
    In { inb: usize, out: Option<usize> },
}

type InKey = (ProcId, u64);

/// A hello whose dialer was challenged, and the proof it must answer with.
#[derive(Debug)]
struct Proving {
    hello: Hello,
    expect: Tag,
}

/// An inbound session in its slot.
#[derive(Debug)]
struct InSlot {
    key: InKey,
    session: Inbound,
}

/// What peers make a proc hold at one moment: each figure is bounded by configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Inbound connections open (at most `Config::max_inbound_conns`).
    pub inbound_conns: usize,
    /// Of those, connections still in their handshake (at most `max_handshaking`).
    pub handshaking: usize,
    /// Bytes buffered by connections in their handshake (at most `max_handshaking` ×
    /// the largest handshake frame plus its header).
    pub handshake_bytes: usize,
    /// Inbound sessions, connected or retained (at most `max_inbound_sessions`).
    pub inbound_sessions: usize,
    /// Messages received and held behind full ports, over all links (at most
    /// `link_held_msgs` per link).
    pub link_held_msgs: usize,
    /// Their payload bytes (at most `link_held_bytes` per link).
    pub link_held_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Running,
    Draining,
    Done,
}

/// The proc machine.
#[derive(Debug)]
pub struct Proc {
    cx: Ctx,
    registry: Registry,
    book: BTreeMap<ProcId, ChannelAddr>,
    /// Outbound session slot per peer proc.
    peers: BTreeMap<ProcId, usize>,
    /// The last peer looked up and its slot, matched by id identity (`ProcId::is_same`):
    /// consecutive sends to one peer skip the map. Slots are never reused.
    last_peer: Option<(ProcId, usize)>,
    outbound: Vec<Outbound>,
    /// Inbound session slot per (dialer, session id).
    in_keys: BTreeMap<InKey, usize>,
    inbound: Vec<Option<InSlot>>,
    in_free: Vec<usize>,
    conns: BTreeMap<ConnId, Role>,
    /// Accepted connections (a superset: those closed since are pruned when it fills up).
    accepted: BTreeSet<ConnId>,
    /// Accepted connections in their handshake, oldest (smallest id) first; a superset too.
    handshaking: BTreeSet<ConnId>,
    schedule: Schedule,
    /// Machines an input touched, to reschedule when it is done.
    touched: Vec<Owner>,
    /// The connection whose data `poll_output` is handing out.
    pulling: Option<ConnId>,
    /// Inbound links waiting for room in a full local port.
    blocked: Vec<(LocalPort, usize)>,
    /// A local send was refused because its port was full: announce room.
    local_blocked: bool,
    now: Instant,
    life: Lifecycle,
}

impl Proc {
    /// A proc named `id`. `incarnation` must differ between starts of the same proc (pass a
    /// random number); `seed` seeds session ids and backoff jitter.
    pub fn new(id: ProcId, config: Config, incarnation: u64, seed: u64) -> Proc {
        Proc {
            registry: Registry::new(id.clone()),
            cx: Ctx::new(id, config, incarnation, seed),
            book: BTreeMap::new(),
            peers: BTreeMap::new(),
            last_peer: None,
            outbound: Vec::new(),
            in_keys: BTreeMap::new(),
            inbound: Vec::new(),
            in_free: Vec::new(),
            conns: BTreeMap::new(),
            accepted: BTreeSet::new(),
            handshaking: BTreeSet::new(),
            schedule: Schedule::default(),
            touched: Vec::new(),
            pulling: None,
            blocked: Vec::new(),
            local_blocked: false,
            now: Instant::ZERO,
            life: Lifecycle::Running,
        }
    }

    /// This proc's id.
    pub fn id(&self) -> &ProcId {
        &self.cx.id
    }

    /// This proc's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.cx.incarnation
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cx.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.cx.stats
    }

    /// What peers make this proc hold right now (see [`Held`]); computed on demand, for
    /// monitoring and tests.
    pub fn held(&self) -> Held {
        let mut h = Held {
            inbound_conns: self.accepted.len(),
            inbound_sessions: self.in_keys.len(),
            ..Held::default()
        };
        for role in self.conns.values() {
            if let Role::Accepting { decoder, .. } = role {
                h.handshaking += 1;
                h.handshake_bytes += decoder.buffered();
            }
        }
        for s in self.inbound.iter().flatten() {
            let (msgs, bytes) = s.session.pending();
            h.link_held_msgs += msgs;
            h.link_held_bytes += bytes;
        }
        h
    }

    /// Inbound sessions held (connected or retained for their dialer to resume).
    pub fn inbound_sessions(&self) -> usize {
        self.in_keys.len()
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
    pub fn open_port(
        &mut self,
        actor: &ActorId,
        kind: PortKind,
        accepts: Option<TypeFingerprint>,
    ) -> Result<PortId, RegistryError> {
        self.registry.open_port(actor, kind, accepts)
    }

    /// Binds a well-known port.
    pub fn bind_port(
        &mut self,
        port: &PortId,
        kind: PortKind,
        accepts: Option<TypeFingerprint>,
    ) -> Result<(), RegistryError> {
        self.registry.bind_port(port, kind, accepts)
    }

    /// The handle the driver names a bound local port by ([`Output::Deliver`],
    /// [`Proc::handle_consumed`]); `None` if it is not bound.
    pub fn local_port(&self, port: &PortId) -> Option<LocalPort> {
        self.registry.local_port(port)
    }

    /// Unbinds a port. Links waiting on it go on (its messages now come back as
    /// `NoSuchPort`).
    pub fn close_port(&mut self, port: &PortId) {
        self.registry.close_port(port);
        self.unblock_after_registry_change();
    }

    /// Removes an actor and its ports.
    pub fn remove_actor(&mut self, actor: &ActorId) {
        self.registry.remove_actor(actor);
        self.unblock_after_registry_change();
    }

    fn unblock_after_registry_change(&mut self) {
        if !self.blocked.is_empty() {
            let now = self.now;
            self.unblock(now, None);
            self.settle(now);
        }
    }

    /// The registry, to inspect.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Dials `proc` at `addr` from now on (a proxy, an alias, a moved peer).
    pub fn set_address(&mut self, proc: ProcId, addr: ChannelAddr) {
        if let Some(&slot) = self.peers.get(&proc) {
            self.outbound[slot].set_addr(addr.clone());
        }
        self.book.insert(proc, addr);
    }

    /// Whether a small send to `dest` would be taken now. A hint: waiting for room means
    /// trying the send and, on `WouldBlock`, waiting for [`Event::Writable`].
    pub fn can_send(&self, dest: &ProcId) -> bool {
        self.peers
            .get(dest)
            .is_none_or(|&s| self.outbound[s].can_send(&self.cx))
    }

    /// Unacknowledged (messages, bytes) on the link to `dest`.
    pub fn queued(&self, dest: &ProcId) -> (usize, usize) {
        self.peers
            .get(dest)
            .map_or((0, 0), |&s| self.outbound[s].queued())
    }

    /// Sends a message from a local actor. On `Ok` the proc owns it: it will be delivered,
    /// or come back to its sender as an [`Output::Returned`]. [`Proc::handle_send_keep`]
    /// is the same, handing the envelope back when it is refused.
    pub fn handle_send(&mut self, now: Instant, env: Envelope) -> Result<(), SendError> {
        self.handle_send_keep(now, env).map_err(|(e, _)| e)
    }

    /// [`Proc::handle_send`] that hands a refused envelope back with the error, so a
    /// caller that waits for room ([`SendError::WouldBlock`], then [`Event::Writable`])
    /// offers the same envelope again without keeping a copy of it.
    // The envelope comes back by value: boxing it would allocate on every refusal.
    #[allow(clippy::result_large_err)]
    pub fn handle_send_keep(
        &mut self,
        now: Instant,
        mut env: Envelope,
    ) -> Result<(), (SendError, Envelope)> {
        self.now = now;
        if let Err(e) = self.may_send(&env) {
            return Err((e, env));
        }
        env.returned = None;
        let result = if self.is_local(env.dest.actor().proc()) {
            self.send_local(now, env)
        } else {
            match self.send_remote(now, &env, None, false, None) {
                Ok(()) => Ok(()),
                Err(e) => Err((e, env)),
            }
        };
        self.settle(now);
        result
    }

    /// [`Proc::handle_send`] of a borrowed envelope, which the caller keeps whatever the
    /// outcome (so there is nothing to hand back). A message for another proc is encoded
    /// from it at once: neither its ids nor its payload are cloned, and no reference count
    /// is touched, so a caller that sends many messages from one sender to one port can
    /// reuse one envelope, replacing only its payload. A message for a port of this proc
    /// is cloned, since its delivery owns it. `env.returned` is ignored, as by
    /// `handle_send`.
    pub fn handle_send_ref(&mut self, now: Instant, env: &Envelope) -> Result<(), SendError> {
        self.send_borrowed(now, env, None)
    }

    /// [`Proc::handle_send_ref`] with `payload` in place of `head.payload` (which is not
    /// looked at): a driver that serializes messages into a buffer of its own sends them
    /// from it without making each payload a `Bytes`. The payload is copied into the
    /// link's chunk (or, for a port of this proc, into an allocation of its own), so the
    /// buffer is free again on return.
    pub fn handle_send_parts(
        &mut self,
        now: Instant,
        head: &Envelope,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.send_borrowed(now, head, Some(payload))
    }

    fn send_borrowed(
        &mut self,
        now: Instant,
        env: &Envelope,
        payload: Option<&[u8]>,
    ) -> Result<(), SendError> {
        self.now = now;
        self.may_send(env)?;
        let local = self.is_local(env.dest.actor().proc());
        let result = if local || env.returned.is_some() {
            let mut env = env.clone();
            env.returned = None;
            if let Some(p) = payload {
                env.payload = Bytes::copy_from_slice(p);
            }
            match local {
                true => self.send_local(now, env).map_err(|(e, _)| e),
                false => self.send_remote(now, &env, None, false, None),
            }
        } else {
            self.send_remote(now, env, payload, false, None)
        };
        self.settle(now);
        result
    }

    /// Why a send of `env` is refused before it is looked at further, if it is.
    fn may_send(&mut self, env: &Envelope) -> Result<(), SendError> {
        if self.life != Lifecycle::Running {
            return Err(SendError::ShuttingDown);
        }
        if !self.registry.is_live(&env.sender) {
            return Err(SendError::SenderNotLive);
        }
        Ok(())
    }

    /// A send to a port of this proc: placed at once, refused while the port is full, or
    /// returned to its sender.
    #[allow(clippy::result_large_err)] // as `handle_send_keep`
    fn send_local(&mut self, now: Instant, env: Envelope) -> Result<(), (SendError, Envelope)> {
        let max = self.cx.config.max_frame_len;
        let len = u32::try_from(env.payload.len()).unwrap_or(u32::MAX);
        if len > max {
            return Err((SendError::TooLarge { len, max }, env));
        }
        let limits = self.cx.config.port_limits();
        match self
            .registry
            .admit(&env.dest, env.payload.len(), env.fingerprint, limits)
        {
            Admit::Full(_) => {
                self.local_blocked = true;
                Err((SendError::WouldBlock, env))
            }
            Admit::Placed(port) => {
                self.cx.deliver(port, env);
                Ok(())
            }
            Admit::Refused(reason) => {
                self.bounce(now, env, reason, None);
                Ok(())
            }
        }
    }

    /// The driver accepted a connection; the proc names it. Under the connection limits
    /// (`Config::max_handshaking`, `Config::max_inbound_conns`) the oldest handshake may be
    /// closed, or this connection closed at once: both are reported as [`Event::Refused`]
    /// followed by [`Output::Close`].
    pub fn handle_accepted(&mut self, now: Instant) -> ConnId {
        self.now = now;
        let conn = self.cx.new_conn();
        if self.admit(conn) {
            self.cx.out.write(conn, &[&preamble()]);
            let decoder = FrameDecoder::new(
                MAX_HANDSHAKE_FRAME_LEN,
                RecycledBody::new(self.cx.config.spare_buffers),
            );
            let deadline = now + self.cx.config.connect_timeout;
            self.accepting(conn, decoder, deadline, None);
        }
        self.settle(now);
        conn
    }

    /// A dial the proc asked for has connected.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        if let Some(&Role::Out { out: slot, .. }) = self.conns.get(&conn) {
            self.outbound[slot].on_connected(now, &mut self.cx, conn);
            self.touch(Owner::Out(slot));
        }
        self.settle(now);
    }

    /// Bytes arrived on `conn`.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.now = now;
        let rest = match self.conns.get_mut(&conn) {
            None => None,
            Some(&mut Role::Out { out: slot, .. }) => {
                self.outbound[slot].on_bytes(now, &mut self.cx, conn, bytes);
                self.touch(Owner::Out(slot));
                None
            }
            Some(&mut Role::In { inb: slot, .. }) => {
                self.inbound_bytes(now, conn, slot, bytes);
                None
            }
            Some(Role::Accepting { .. }) => self.accept_bytes(now, conn, bytes),
        };
        if let Some(consumed) = rest {
            // The hello bound the connection to a session; the rest belongs to it.
            if let Some(&Role::In { inb: slot, .. }) = self.conns.get(&conn) {
                self.inbound_bytes(now, conn, slot, &bytes[consumed..]);
            }
        }
        self.settle(now);
    }

    /// For `conn` in the middle of a large data frame's body: the body's length and the
    /// bytes of it received so far. The driver may read the rest of the body straight into
    /// a buffer of that length that starts with those bytes, and hand the whole body over
    /// with [`Proc::handle_body`]: the payload is then a slice of that buffer, never copied.
    /// No other bytes of `conn` may come in between. `None` when `conn` is not in such a
    /// body: read into any buffer and call [`Proc::handle_bytes`].
    ///
    /// The length was checked against `Config::max_frame_len` when the header arrived.
    pub fn large_body(&self, conn: ConnId) -> Option<(usize, &[u8])> {
        match self.conns.get(&conn) {
            Some(&Role::In { inb: slot, .. }) => {
                let s = self.inbound.get(slot).and_then(Option::as_ref)?;
                s.session.large_body(conn)
            }
            // The peer's data on a connection this proc dialed (a two-way link).
            Some(&Role::Out { out, inb: Some(_) }) => self.outbound[out].large_body(conn),
            _ => None,
        }
    }

    /// The whole body of the large frame `conn` is in (see [`Proc::large_body`]): its first
    /// `have` bytes are those `large_body` gave, the rest was read after them. A `body` that
    /// does not fit the frame is taken as bytes read (those after `have`), as by
    /// [`Proc::handle_bytes`].
    pub fn handle_body(&mut self, now: Instant, conn: ConnId, body: Bytes, have: usize) {
        let slot = match self.conns.get(&conn) {
            Some(&Role::In { inb: slot, .. }) => slot,
            Some(&Role::Out { out, inb: Some(_) }) => {
                self.now = now;
                self.outbound[out].on_body(now, &mut self.cx, conn, body, have);
                self.touch(Owner::Out(out));
                return self.settle(now);
            }
            _ => return self.handle_bytes(now, conn, body.get(have..).unwrap_or_default()),
        };
        self.now = now;
        if let Some(s) = self.inbound.get_mut(slot).and_then(Option::as_mut) {
            let reg = &mut self.registry;
            let fate = s.session.on_body(now, &mut self.cx, reg, conn, body, have);
            self.route_pending(now, slot);
            if fate == Fate::Ended {
                self.end_inbound(slot);
            }
        }
        self.settle(now);
    }

    /// A dial the proc asked for failed with `error` (refused, unreachable, timed out...):
    /// reported at once as [`Event::DialFailed`]; the session then retries under its
    /// backoff like after any lost connection. `handle_closed` does the same without the
    /// error.
    pub fn handle_dial_failed(&mut self, now: Instant, conn: ConnId, error: DialError) {
        if let Some(&Role::Out { out: slot, .. }) = self.conns.get(&conn) {
            self.outbound[slot].on_dial_failed(&mut self.cx, conn, error);
        }
        self.handle_closed(now, conn);
    }

    /// `conn` was closed by the peer, failed, or could not be dialed.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        self.cx.out.forget(conn);
        self.forget_conn(conn);
        self.settle(now);
    }

    /// The driver's consumer took `msgs` delivered messages, of `bytes` payload bytes in
    /// all, from the queue of `port` ([`Output::Deliver`]s it carried out; report them one
    /// by one or in batches). Until then they count against the port's limits
    /// (`Config::port_queue_msgs` / `port_queue_bytes`); a full port holds its inbound
    /// links and refuses local sends with `WouldBlock`.
    /// A handle of a port closed since is ignored.
    pub fn handle_consumed(&mut self, now: Instant, port: LocalPort, msgs: usize, bytes: usize) {
        self.now = now;
        self.registry.consumed(port, msgs, bytes);
        let limits = self.cx.config.port_limits();
        if self.local_blocked && !self.registry.is_full_at(port, limits) {
            self.local_blocked = false;
            self.cx.event(Event::Writable {
                peer: self.cx.id.clone(),
            });
        }
        self.unblock(now, Some(port));
        self.settle(now);
    }

    /// Hands back an envelope the driver is done with (typically a delivered message its
    /// consumer took, after `handle_consumed`). Optional: the proc keeps its two ids (up to
    /// `Config::recycled_ids` pairs) and gives them to the next message between the same
    /// two actors, which then costs no update of the ids' shared reference counts, neither
    /// when it is decoded nor when the driver drops it. The payload is dropped.
    pub fn recycle(&mut self, env: Envelope) {
        let Envelope { sender, dest, .. } = env;
        self.cx.spare_ids.put(sender, dest.into_actor());
    }

    /// The driver could not place a delivered envelope (its receiver is gone): it goes back
    /// to its sender with `reason`.
    pub fn handle_undeliverable(&mut self, now: Instant, env: Envelope, reason: Undeliverable) {
        self.now = now;
        self.bounce(now, env, reason, None);
        self.settle(now);
    }

    /// Starts a graceful shutdown: new sends are refused, outbound links flush and wait for
    /// acknowledgements up to `shutdown_timeout`, the rest comes back (`ShuttingDown` if
    /// never transmitted, `Unconfirmed` if transmitted), then [`Event::ShutdownComplete`].
    /// Until then the proc keeps accepting sessions and acknowledging what its peers send,
    /// so peers that drain at the same time are not held up.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.now = now;
        if self.life == Lifecycle::Running {
            self.life = Lifecycle::Draining;
            for slot in 0..self.outbound.len() {
                self.outbound[slot].shutdown(now, &mut self.cx);
                self.touch(Owner::Out(slot));
            }
        }
        self.settle(now);
    }

    /// Time has reached a deadline from [`Proc::poll_timeout`]. Only the machines that are
    /// due are visited.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        while let Some(owner) = self.schedule.pop_due(now) {
            // Popping took its deadline off the schedule: record it again whatever the
            // machine does with its timers.
            match owner {
                Owner::Out(slot) => {
                    self.outbound[slot].reschedule();
                    self.outbound[slot].on_timeout(now, &mut self.cx)
                }
                Owner::In(slot) => {
                    if let Some(s) = self.inbound[slot].as_mut() {
                        s.session.reschedule();
                    }
                    self.inbound_timeout(now, slot)
                }
                Owner::Accept(conn) => self.accept_timeout(conn),
            }
            self.touch(owner);
        }
        self.settle(now);
    }

    /// The next action for the driver, until `None`. Data frames are pulled from their
    /// session here, as slices of its chunks.
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(conn) = self.pulling {
                if let Some(data) = self.pull(conn) {
                    return Some(Output::Transmit { conn, data });
                }
                self.pulling = None;
            }
            match self.cx.out.pop()? {
                Popped::Output(o) => return Some(o.into_output()),
                Popped::Pull(conn) => self.pulling = Some(conn),
            }
        }
    }

    /// After [`Proc::poll_output`] returned [`Output::Deliver`] for `port`: moves the
    /// deliveries to that same port that come next into `out`, in order, up to the first
    /// other output, and says how many. The same as taking them one by one with
    /// `poll_output`, for a driver that queues a port's messages in a `VecDeque` anyway:
    /// each envelope is moved once instead of through an `Output`.
    pub fn poll_deliveries(&mut self, port: LocalPort, out: &mut VecDeque<Envelope>) -> usize {
        if self.pulling.is_some() {
            return 0;
        }
        self.cx.out.pop_deliveries(port, out)
    }

    fn pull(&mut self, conn: ConnId) -> Option<Bytes> {
        match self.conns.get(&conn) {
            Some(
                &Role::Out { out: slot, .. }
                | &Role::In {
                    out: Some(slot), ..
                },
            ) => self.outbound[slot].poll_transmit(&mut self.cx, conn),
            _ => None,
        }
    }

    /// When [`Proc::handle_timeout`] should be called next: the last `now` while output is
    /// queued, otherwise the earliest deadline of any machine. It changes only with
    /// `handle_*` calls, never while output is drained.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.cx.out.is_empty() || self.pulling.is_some() {
            return Some(self.now);
        }
        self.schedule.peek()
    }

    // ---- routing ----

    /// Whether `proc` is this proc. Ids on the data path are mostly the very ids this
    /// proc or its last peer hold, so identity answers before a comparison of values.
    fn is_local(&self, proc: &ProcId) -> bool {
        if proc.is_same(&self.cx.id) {
            return true;
        }
        if self
            .last_peer
            .as_ref()
            .is_some_and(|(p, _)| p.is_same(proc))
        {
            return false;
        }
        proc == &self.cx.id
    }

    fn touch(&mut self, owner: Owner) {
        if self.touched.last() != Some(&owner) {
            self.touched.push(owner);
        }
    }

    /// The outbound session to `peer`, created on first use.
    fn outbound_slot(&mut self, peer: &ProcId) -> usize {
        if let Some((p, slot)) = &self.last_peer {
            if p.is_same(peer) {
                return *slot;
            }
        }
        if let Some(&slot) = self.peers.get(peer) {
            self.last_peer = Some((peer.clone(), slot));
            return slot;
        }
        let slot = self.outbound.len();
        let addr = self.book.get(peer).unwrap_or(peer.addr()).clone();
        let s = Outbound::new(slot, peer.clone(), addr, &mut self.cx);
        self.outbound.push(s);
        self.peers.insert(peer.clone(), slot);
        slot
    }

    /// Queues `env` on the session to its next proc. `origin` is the incarnation of the
    /// proc a return goes back to, when known.
    fn send_remote(
        &mut self,
        now: Instant,
        env: &Envelope,
        payload: Option<&[u8]>,
        force: bool,
        origin: Option<u64>,
    ) -> Result<(), SendError> {
        let slot = self.outbound_slot(env.next_proc());
        self.touch(Owner::Out(slot));
        self.outbound[slot].send(now, &mut self.cx, env, payload, force, origin)
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
        if let Err(e) = self.send_remote(now, &env, None, true, for_incarnation) {
            let reason = match e {
                SendError::TooLarge { len, max } => Undeliverable::TooLarge { len, max },
                _ => Undeliverable::ShuttingDown,
            };
            self.bounce(now, env, reason, None);
        }
    }

    fn deliver_local(&mut self, env: Envelope, origin: Option<u64>) {
        match env.returned {
            None => match self
                .registry
                .deliver(&env.dest, env.payload.len(), env.fingerprint)
            {
                Ok(port) => self.cx.deliver(port, env),
                Err(reason) => self.bounce(self.now, env, reason, origin),
            },
            Some(reason) => {
                if self.registry.is_live(&env.sender) {
                    self.cx.stats.returned += 1;
                    self.cx.out.returned(env);
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
        self.cx.stats.returns_dropped += 1;
        self.cx.event(Event::ReturnDropped {
            sender: env.sender,
            dest: env.dest,
            reason,
            payload: env.payload,
        });
    }

    /// After every input: route what sessions gave back, bind dialed connections, forget
    /// closed ones, reschedule the machines touched, and finish a shutdown whose links have
    /// all drained. Costs what the input touched, not what the proc holds.
    #[inline]
    fn settle(&mut self, now: Instant) {
        if let Some(frames) = self.cx.take_handed() {
            self.handed_over(now, frames);
        }
        if self.cx.has_failed()
            || self.cx.has_dialed()
            || self.cx.out.has_closed()
            || self.life == Lifecycle::Draining
        {
            self.settle_effects(now);
        }
        self.reschedule_touched();
    }

    /// The part of [`Proc::settle`] that most inputs (a send, a run of data frames) do not
    /// need: returns, new and closed connections, the end of a drain.
    #[inline(never)]
    fn settle_effects(&mut self, now: Instant) {
        while self.cx.has_failed() {
            for (env, reason) in self.cx.take_failed() {
                self.bounce(now, env, reason, None);
            }
        }
        while let Some((conn, slot, shared)) = self.cx.take_dialed() {
            match self.conns.get_mut(&conn) {
                Some(Role::In { out, .. }) if shared => *out = Some(slot),
                // Closed before the session could take it over.
                _ if shared => {
                    self.outbound[slot].on_closed(now, &mut self.cx, conn);
                    self.touch(Owner::Out(slot));
                }
                _ => {
                    self.conns.insert(
                        conn,
                        Role::Out {
                            out: slot,
                            inb: None,
                        },
                    );
                }
            }
        }
        while let Some(conn) = self.cx.out.take_closed() {
            self.forget_conn(conn);
        }
        if self.life == Lifecycle::Draining
            && (self.outbound.is_empty() || self.touched.iter().any(|o| matches!(o, Owner::Out(_))))
            && self.outbound.iter().all(|s| s.is_closed())
        {
            self.finish_shutdown(now);
        }
    }

    /// Records the deadlines of the machines the input touched.
    fn reschedule_touched(&mut self) {
        // Indexed, so the list keeps its capacity: no allocation per input.
        for i in 0..self.touched.len() {
            let owner = self.touched[i];
            // A session's deadline is recorded again only when one of its timers changed
            // (most inputs, a send or a run of data frames, change none).
            let at = match owner {
                Owner::Out(slot) => self.outbound[slot].deadline_if_changed(),
                Owner::In(slot) => match self.inbound[slot].as_mut() {
                    Some(s) => s.session.deadline_if_changed(),
                    None => Some(None),
                },
                Owner::Accept(conn) => match self.conns.get(&conn) {
                    Some(Role::Accepting { deadline, .. }) => Some(Some(*deadline)),
                    _ => Some(None),
                },
            };
            if let Some(at) = at {
                self.schedule.set(owner, at);
            }
        }
        self.touched.clear();
        self.schedule.clean();
    }

    fn finish_shutdown(&mut self, now: Instant) {
        self.life = Lifecycle::Done;
        for slot in 0..self.inbound.len() {
            if let Some(s) = self.inbound[slot].as_mut() {
                s.session.close_conn(now, &mut self.cx);
                self.touched.push(Owner::In(slot));
            }
        }
        let accepting: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, r)| matches!(r, Role::Accepting { .. }))
            .map(|(c, _)| *c)
            .collect();
        for conn in accepting {
            self.cx.close(conn);
        }
        while let Some(conn) = self.cx.out.take_closed() {
            self.forget_conn(conn);
        }
        self.cx.event(Event::ShutdownComplete);
    }

    // ---- accepting ----

    fn accept_timeout(&mut self, conn: ConnId) {
        if let Some(Role::Accepting { .. }) = self.conns.get(&conn) {
            self.conns.remove(&conn);
            self.cx.fail_conn(conn, ConnError::HandshakeTimeout);
        }
    }

    /// Applies the connection limits to the new inbound `conn`: when `max_handshaking`
    /// connections are in their handshake, the oldest is closed; then, when
    /// `max_inbound_conns` are open, `conn` is closed at once. The sets are pruned of closed
    /// connections only when they look full, so an accept costs O(log n), and O(limit)
    /// while a limit is reached.
    fn admit(&mut self, conn: ConnId) -> bool {
        let max_handshaking = self.cx.config.max_handshaking.max(1);
        if self.handshaking.len() >= max_handshaking {
            let conns = &self.conns;
            self.handshaking
                .retain(|c| matches!(conns.get(c), Some(Role::Accepting { .. })));
            while self.handshaking.len() >= max_handshaking {
                let Some(oldest) = self.handshaking.pop_first() else {
                    break;
                };
                self.evict_handshake(oldest);
            }
        }
        let max_conns = self.cx.config.max_inbound_conns;
        if self.accepted.len() >= max_conns {
            let conns = &self.conns;
            self.accepted.retain(|c| conns.contains_key(c));
            if self.accepted.len() >= max_conns {
                self.cx.refused(conn, RefuseReason::TooManyConnections);
                self.cx.close(conn);
                return false;
            }
        }
        self.accepted.insert(conn);
        self.handshaking.insert(conn);
        true
    }

    /// Forgets a closed connection: its role, its deadline, its place in the connection
    /// limits (so they are counted exactly, without scans), and its sessions, which are
    /// told it is gone (the one that closed it knows already; the other may not).
    fn forget_conn(&mut self, conn: ConnId) {
        let now = self.now;
        self.accepted.remove(&conn);
        self.handshaking.remove(&conn);
        let (out, inb) = match self.conns.remove(&conn) {
            Some(Role::Accepting { .. }) => {
                self.schedule.set(Owner::Accept(conn), None);
                return;
            }
            Some(Role::Out { out, inb }) => (Some(out), inb),
            Some(Role::In { inb, out }) => {
                if let Some(s) = self.inbound.get(inb).and_then(Option::as_ref) {
                    self.cx.unshare(&s.key.0, conn);
                }
                (out, Some(inb))
            }
            None => return,
        };
        if let Some(slot) = out {
            self.outbound[slot].on_closed(now, &mut self.cx, conn);
            self.touch(Owner::Out(slot));
        }
        if let Some(slot) = inb {
            if let Some(s) = self.inbound.get_mut(slot).and_then(Option::as_mut) {
                s.session.on_closed(now, &mut self.cx, conn);
                self.touch(Owner::In(slot));
            }
        }
    }

    /// Closes a connection in its handshake to make room for a newer one.
    fn evict_handshake(&mut self, conn: ConnId) {
        if let Some(Role::Accepting { .. }) = self.conns.remove(&conn) {
            self.schedule.set(Owner::Accept(conn), None);
            self.cx.refused(conn, RefuseReason::HandshakeEvicted);
            self.cx.close(conn);
        }
    }

    /// Feeds an accepted connection until its handshake is over; returns how many bytes
    /// were consumed when the connection got bound to a session (the rest is for the
    /// session).
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
            let header = match progress.item {
                None => return None,
                Some(Item::Preamble { .. }) => continue,
                Some(Item::Frame(h)) => h,
            };
            let Some(Role::Accepting {
                decoder,
                deadline,
                proving,
            }) = self.conns.remove(&conn)
            else {
                return None;
            };
            self.schedule.set(Owner::Accept(conn), None);
            self.handshake_frame(now, conn, header, decoder, deadline, proving);
            match self.conns.get(&conn) {
                Some(Role::In { .. }) => {
                    // Out of its handshake: no longer counted against `max_handshaking`.
                    self.handshaking.remove(&conn);
                    return Some(consumed);
                }
                Some(Role::Accepting { .. }) => continue,
                _ => return None,
            }
        }
    }

    /// One frame of an accepted connection's handshake; the connection was taken out of
    /// `conns`, and is put back as accepting (challenged) or bound, or is closed.
    fn handshake_frame(
        &mut self,
        now: Instant,
        conn: ConnId,
        header: FrameHeader,
        decoder: FrameDecoder<RecycledBody>,
        deadline: Instant,
        proving: Option<Box<Proving>>,
    ) {
        match (header.kind, proving) {
            (FrameKind::Hello, None) => match postcard::from_bytes::<Hello>(decoder.body()) {
                Ok(hello) => self.check_auth(now, conn, hello, decoder, deadline),
                Err(_) => self.refuse(conn, RefuseReason::BadHello),
            },
            (FrameKind::Proof, Some(p)) => {
                if auth::tags_match(&p.expect, decoder.body()) {
                    self.on_hello(now, conn, p.hello, Rx::Own(decoder));
                } else {
                    self.refuse(conn, RefuseReason::BadAuth);
                }
            }
            (kind, None) => {
                let v = Violation::ExpectedHello(kind);
                self.cx.fail_conn(conn, ConnError::Protocol(v));
            }
            (kind, Some(_)) => {
                let v = Violation::UnexpectedFrame {
                    kind,
                    dialed: false,
                };
                self.cx.fail_conn(conn, ConnError::Protocol(v));
            }
        }
    }

    /// A hello goes on only if both sides agree on authentication; with a cookie, its dialer
    /// is challenged first, and nothing is looked up or allocated for it before it proves
    /// the cookie.
    fn check_auth(
        &mut self,
        now: Instant,
        conn: ConnId,
        hello: Hello,
        decoder: FrameDecoder<RecycledBody>,
        deadline: Instant,
    ) {
        match (self.cx.config.cookie.is_some(), hello.auth.is_some()) {
            (false, false) => self.on_hello(now, conn, hello, Rx::Own(decoder)),
            (false, true) => self.refuse(conn, RefuseReason::AuthUnexpected),
            (true, false) => self.refuse(conn, RefuseReason::AuthRequired),
            (true, true) => self.challenge(conn, hello, decoder, deadline),
        }
    }

    /// Sends the challenge (a fresh nonce and our tag over the hello and it), and keeps the
    /// hello with the tag the dialer must answer with, until the handshake deadline.
    fn challenge(
        &mut self,
        conn: ConnId,
        hello: Hello,
        decoder: FrameDecoder<RecycledBody>,
        deadline: Instant,
    ) {
        let tags = self.cx.nonce().and_then(|nonce| {
            let cookie = self.cx.config.cookie.as_ref()?;
            let ours = auth::tag(cookie, Side::Acceptor, decoder.body(), &nonce)?;
            let expect = auth::tag(cookie, Side::Dialer, decoder.body(), &nonce)?;
            Some((nonce, ours, expect))
        });
        let Some((nonce, ours, expect)) = tags else {
            return self.refuse(conn, RefuseReason::BadAuth);
        };
        let mut body = [0u8; CHALLENGE_LEN];
        body[..NONCE_LEN].copy_from_slice(&nonce);
        body[NONCE_LEN..].copy_from_slice(&ours);
        self.cx.write_frame(conn, FrameKind::Challenge, &body);
        let proving = Some(Box::new(Proving { hello, expect }));
        self.accepting(conn, decoder, deadline, proving);
    }

    /// `conn` is (still) in its handshake until `deadline`.
    fn accepting(
        &mut self,
        conn: ConnId,
        decoder: FrameDecoder<RecycledBody>,
        deadline: Instant,
        proving: Option<Box<Proving>>,
    ) {
        let role = Role::Accepting {
            decoder,
            deadline,
            proving,
        };
        self.conns.insert(conn, role);
        self.schedule.set(Owner::Accept(conn), Some(deadline));
    }

    fn refuse_frame_error(&mut self, conn: ConnId, e: FrameError) {
        self.conns.remove(&conn);
        self.schedule.set(Owner::Accept(conn), None);
        if let FrameError::UnsupportedVersion { supported, .. } = e {
            return self.refuse(conn, RefuseReason::UnsupportedVersion { supported });
        }
        self.cx.fail_conn(conn, ConnError::Frame(e));
    }

    /// Refuses `conn` with `reason` (reported as [`Event::Refused`]) and closes it.
    fn refuse(&mut self, conn: ConnId, reason: RefuseReason) {
        self.refuse_on(conn, reason, true);
    }

    /// Refuses a session on `conn`, closing the connection if `close` (not when the
    /// refused session is the peer's on a connection this proc dialed: that one goes on).
    fn refuse_on(&mut self, conn: ConnId, reason: RefuseReason, close: bool) {
        self.cx.refused(conn, reason);
        if self
            .cx
            .write_postcard(conn, FrameKind::Refuse, &reason)
            .is_ok()
            && close
        {
            self.cx.close(conn);
        }
    }

    /// An (authenticated, if a cookie is configured) hello: bind the connection to its
    /// session, creating or replacing one as needed. `rx` is the accepted connection's
    /// decoder, or [`Rx::Shared`] for a hello on a connection this proc dialed (the
    /// peer's session over it, see [`Proc::reverse_hello`]).
    fn on_hello(&mut self, now: Instant, conn: ConnId, hello: Hello, rx: Rx) {
        let close = matches!(rx, Rx::Own(_));
        if hello.to.name() != self.cx.id.name() {
            return self.refuse_on(conn, RefuseReason::WrongProc, close);
        }
        if self.life == Lifecycle::Done {
            return self.refuse_on(conn, RefuseReason::ShuttingDown, close);
        }
        self.end_stale_sessions(&hello);
        let key = (hello.from.clone(), hello.session);
        let slot = match self.in_keys.get(&key).copied() {
            Some(slot) => slot,
            None if hello.resume => return self.forgotten(conn, close),
            None if !self.make_room() => {
                return self.refuse_on(conn, RefuseReason::TooManySessions, close);
            }
            None => self.new_inbound(key, hello.incarnation),
        };
        let rx = match rx {
            Rx::Own(mut decoder) => {
                // The handshake is over: from here on frames may be as large as messages.
                decoder.set_max_len(self.cx.config.max_frame_len);
                Rx::Own(decoder)
            }
            Rx::Shared => Rx::Shared,
        };
        let Some(s) = self.inbound[slot].as_mut() else {
            return;
        };
        s.session.attach(now, &mut self.cx, conn, rx);
        self.touch(Owner::In(slot));
        if close {
            self.conns.insert(
                conn,
                Role::In {
                    inb: slot,
                    out: None,
                },
            );
            self.converge(now, &hello.from, conn);
            self.cx.make_shareable(hello.from, conn);
        } else if let Some(Role::Out { inb, .. }) = self.conns.get_mut(&conn) {
            *inb = Some(slot);
        }
    }

    /// Simultaneous dials: `peer` dialed this proc (its session is open on `conn`) while
    /// this proc's session to it is still dialing or in its handshake. Of the two procs,
    /// the one with the larger id gives its own connection up and opens over the other's,
    /// so both sessions end up on one connection (the other proc keeps its dial; its
    /// session's hello reaches this one over it).
    fn converge(&mut self, now: Instant, peer: &ProcId, conn: ConnId) {
        if !self.cx.config.two_way || self.cx.id <= *peer {
            return;
        }
        if let Some(&slot) = self.peers.get(peer) {
            self.outbound[slot].converge(now, &mut self.cx, conn);
            self.touch(Owner::Out(slot));
        }
    }

    /// A hello on a connection this proc dialed: the acceptor opens its own session to this
    /// proc over it (a two-way link). Only the proc this connection reached may, and
    /// without a cookie handshake of its own: both ends proved the cookie on it already.
    fn reverse_hello(&mut self, now: Instant, conn: ConnId, out: usize, body: &[u8]) {
        let hello = postcard::from_bytes::<Hello>(body).ok();
        let Some(hello) =
            hello.filter(|h| h.auth.is_none() && h.from == *self.outbound[out].peer())
        else {
            return self.unexpected(conn, FrameKind::Hello, true);
        };
        self.on_hello(now, conn, hello, Rx::Shared);
    }

    /// Frames the session that owns a connection decoded for the other session on it.
    /// A run of data frames for one inbound session is routed once, after the run.
    fn handed_over(&mut self, now: Instant, mut frames: Vec<(ConnId, FrameKind, Bytes)>) {
        let mut routing = None;
        for (conn, kind, body) in frames.drain(..) {
            let (out, inb, dialed) = match self.conns.get(&conn) {
                Some(&Role::Out { out, inb }) => (Some(out), inb, true),
                Some(&Role::In { inb, out }) => (out, Some(inb), false),
                _ => continue,
            };
            if let (true, Some(slot)) = (dialed, inb) {
                if kind != FrameKind::Hello {
                    if routing.is_some_and(|r| r != slot) {
                        self.route_after_shared(now, routing.take());
                    }
                    routing = Some(slot);
                    self.shared_inbound_frame(now, conn, slot, kind, body);
                    continue;
                }
            }
            self.route_after_shared(now, routing.take());
            match (dialed, out, kind) {
                (true, Some(out), FrameKind::Hello) => self.reverse_hello(now, conn, out, &body),
                (true, _, FrameKind::Ping) => self.cx.write_frame(conn, FrameKind::Pong, &[]),
                (false, Some(slot), kind) => {
                    self.outbound[slot].on_shared_frame(now, &mut self.cx, conn, kind, &body);
                    self.touch(Owner::Out(slot));
                }
                // Without a session of this proc on it, a pong is only a keepalive.
                (false, None, FrameKind::Pong) => {}
                (dialed, _, kind) => self.unexpected(conn, kind, dialed),
            }
        }
        self.route_after_shared(now, routing);
        self.cx.reuse_handed(frames);
    }

    fn unexpected(&mut self, conn: ConnId, kind: FrameKind, dialed: bool) {
        let v = Violation::UnexpectedFrame { kind, dialed };
        self.cx.fail_conn(conn, ConnError::Protocol(v));
    }

    /// One frame for the inbound session in `slot` over a connection this proc dialed.
    fn shared_inbound_frame(
        &mut self,
        now: Instant,
        conn: ConnId,
        slot: usize,
        kind: FrameKind,
        body: Bytes,
    ) {
        let Some(s) = self.inbound.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let reg = &mut self.registry;
        let fate = s
            .session
            .on_shared_frame(now, &mut self.cx, reg, conn, kind, body);
        if fate == Fate::Ended {
            self.route_pending(now, slot);
            self.end_inbound(slot);
        }
    }

    fn route_after_shared(&mut self, now: Instant, slot: Option<usize>) {
        if let Some(slot) = slot {
            if self.inbound.get(slot).is_some_and(Option::is_some) {
                self.route_pending(now, slot);
            }
        }
    }

    /// Sessions the hello makes obsolete: those of an earlier start of the same peer, which
    /// can never resume, and, when the hello starts a new session, the peer's other ones (a
    /// proc dials one session per peer and starts a new one only when it gave the old one
    /// up). So a dialing proc holds one session here, however many hellos it sends.
    fn end_stale_sessions(&mut self, hello: &Hello) {
        let stale: Vec<usize> = self
            .in_keys
            .range((hello.from.clone(), 0)..=(hello.from.clone(), u64::MAX))
            .map(|(_, &slot)| slot)
            .filter(|&slot| {
                self.inbound[slot].as_ref().is_some_and(|s| {
                    s.session.incarnation() != hello.incarnation
                        || (!hello.resume && s.key.1 != hello.session)
                })
            })
            .collect();
        for slot in stale {
            self.end_inbound(slot);
        }
    }

    /// Room for one more inbound session: the table has room, or the session disconnected
    /// longest (earliest retention deadline) is evicted; false when every session is
    /// connected. Scans the table, only when it is full.
    fn make_room(&mut self) -> bool {
        let max = self.cx.config.max_inbound_sessions;
        if self.in_keys.len() < max {
            return true;
        }
        let oldest = self
            .inbound
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| {
                let s = s.as_ref().filter(|s| s.session.conn().is_none())?;
                Some((s.session.next_deadline(), slot))
            })
            .min();
        let Some((_, slot)) = oldest else {
            return false;
        };
        self.end_inbound(slot);
        self.cx.stats.sessions_evicted += 1;
        self.in_keys.len() < max
    }

    /// We do not know the session the dialer resumes: say so; the dialer returns what it
    /// cannot prove delivered and starts a new one.
    fn forgotten(&mut self, conn: ConnId, close: bool) {
        let welcome = Welcome {
            incarnation: self.cx.incarnation,
            next: None,
            max_frame_len: self.cx.config.max_frame_len,
            id_cache: 0,
        };
        if self
            .cx
            .write_postcard(conn, FrameKind::Welcome, &welcome)
            .is_ok()
            && close
        {
            self.cx.close(conn);
        }
    }

    fn new_inbound(&mut self, key: InKey, incarnation: u64) -> usize {
        let session = Inbound::new(key.0.clone(), incarnation, self.cx.config.id_cache_entries);
        let entry = Some(InSlot {
            key: key.clone(),
            session,
        });
        let slot = match self.in_free.pop() {
            Some(slot) => {
                self.inbound[slot] = entry;
                slot
            }
            None => {
                self.inbound.push(entry);
                self.inbound.len() - 1
            }
        };
        self.in_keys.insert(key, slot);
        slot
    }

    fn inbound_bytes(&mut self, now: Instant, conn: ConnId, slot: usize, bytes: &[u8]) {
        let Some(s) = self.inbound.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let fate = s
            .session
            .on_bytes(now, &mut self.cx, &mut self.registry, conn, bytes);
        self.route_pending(now, slot);
        if fate == Fate::Ended {
            self.end_inbound(slot);
        }
    }

    /// Routes what the inbound link in `slot` received, in order, until a message whose
    /// local port is full: the link waits there (see `inbound`) until the port's consumer
    /// takes something ([`Proc::handle_consumed`]).
    fn route_pending(&mut self, now: Instant, slot: usize) {
        while self.route_front(now, slot) {}
        if let Some(s) = self.inbound.get_mut(slot).and_then(Option::as_mut) {
            s.session.after_routing(now, &mut self.cx);
        }
        self.touch(Owner::In(slot));
    }

    /// Routes the first message the inbound link in `slot` holds, with one registry lookup
    /// when it is for a local port. False when there is none, or when its port is full and
    /// the link must wait.
    fn route_front(&mut self, now: Instant, slot: usize) -> bool {
        let Some(s) = self.inbound.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        let Some(env) = s.session.front() else {
            s.session.set_blocked(false);
            return false;
        };
        // Only a message whose sender lives in the dialing proc ties its return to that
        // proc's incarnation.
        let from_dialer = env.returned.is_none() && env.sender.proc() == &s.key.0;
        let origin = from_dialer.then_some(s.session.incarnation());
        let admit = self.cx.admit(&mut self.registry, env);
        if let Some(Admit::Full(port)) = admit {
            s.session.set_blocked(true);
            if !self.blocked.iter().any(|(_, b)| *b == slot) {
                self.blocked.push((port, slot));
            }
            return false;
        }
        let Some(env) = s.session.pop_front() else {
            return false;
        };
        match admit {
            None => self.route(now, env, origin),
            Some(Admit::Refused(reason)) => self.bounce(now, env, reason, origin),
            // A full port returned above.
            Some(Admit::Placed(port) | Admit::Full(port)) => self.cx.deliver(port, env),
        }
        true
    }

    /// Links waiting on `port` (or on any port, with `None`) try again.
    fn unblock(&mut self, now: Instant, port: Option<LocalPort>) {
        let limits = self.cx.config.port_limits();
        let mut i = 0;
        while i < self.blocked.len() {
            let (p, slot) = self.blocked[i];
            let wanted = port.is_none_or(|port| port == p);
            if wanted && !self.registry.is_full_at(p, limits) {
                self.blocked.swap_remove(i);
                self.route_pending(now, slot);
            } else {
                i += 1;
            }
        }
    }

    fn inbound_timeout(&mut self, now: Instant, slot: usize) {
        let Some(s) = self.inbound.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if s.session.on_timeout(now, &mut self.cx) == Fate::Ended {
            self.end_inbound(slot);
        }
    }

    fn end_inbound(&mut self, slot: usize) {
        let Some(mut s) = self.inbound.get_mut(slot).and_then(Option::take) else {
            return;
        };
        // The dialer's accepted connection bound to this session (it may have let go of
        // it already, on the dialer's close) is no longer one to answer over.
        if let Some(c) = self.cx.shared_with(&s.key.0) {
            if matches!(self.conns.get(&c), Some(Role::In { inb, .. }) if *inb == slot) {
                self.cx.unshare(&s.key.0, c);
            }
        }
        if let Some(conn) = s.session.conn() {
            // An accepted connection closes (and is forgotten when the proc takes the
            // close); on one this proc dialed, only the peer's session over it ends.
            s.session.close_conn(self.now, &mut self.cx);
            if let Some(Role::Out { inb, .. }) = self.conns.get_mut(&conn) {
                if *inb == Some(slot) {
                    *inb = None;
                }
            }
        }
        self.in_keys.remove(&s.key);
        self.in_free.push(slot);
        self.schedule.set(Owner::In(slot), None);
        self.touched.retain(|o| *o != Owner::In(slot));
    }
}
