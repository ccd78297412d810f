//! The outbound half of a reliable link: everything one proc sends to one peer proc.
//!
//! A session outlives connections. Each message is encoded once into the session's
//! [`ChunkStore`] and gets the next sequence number (implicit: frames on a connection are
//! consecutive); it stays there until the peer's cumulative acknowledgement covers it.
//! Data is pulled: the session asks for a pull marker ([`Outputs::pull`]) and hands out
//! slices of its chunks when the driver drains it. After a reconnect the peer's welcome
//! says how far it has received, and exactly the rest is handed out again by slicing the
//! stored chunks, so each message is delivered once and in order while both procs live,
//! and nothing is encoded twice.
//!
//! [`Outputs::pull`]: crate::output::Outputs
//!
//! States of the current connection: `Idle` (none; a send dials) → `Dialing` (driver is
//! connecting) → `Handshake` (hello sent) → `Open` (data flows) → on loss `Backoff` (a
//! pure function of attempt number and injected jitter) → `Dialing` again. When the peer
//! has a connection to this proc whose session is open, the session skips `Dialing` and
//! sends its hello on that connection (a two-way link, `Config::two_way`): it is then
//! [`Rx::Shared`], handed its frames by the peer's inbound session that decodes them, and
//! it never closes that connection itself (a refusal or a new session leaves it to the
//! peer's session; a protocol violation or a silent peer closes it for both). With messages
//! waiting and no connection for `unreachable_timeout`, everything is returned and the
//! session starts afresh: what was never transmitted as `Unreachable` (certainly not
//! delivered), what was transmitted but not acknowledged as `Unconfirmed` (delivery
//! unknown). A graceful close that times out splits the same way (`ShuttingDown` /
//! `Unconfirmed`).
//!
//! Failures, by what the welcome says:
//! - another incarnation than before: the peer restarted; every message ever transmitted
//!   to the old incarnation and not acknowledged comes back as `PeerRestarted`;
//! - `next: None`: the peer forgot the session; messages that were ever transmitted come
//!   back as `SessionLost`.
//!
//! In both cases delivery of the returned messages cannot be proven either way, and they
//! are never retried, so never duplicated. Messages never transmitted cannot have reached
//! anyone: they go on, in order, in a new session with the peer as it is now (a return
//! addressed to a restarted sender must reach its new incarnation, not die with the old).
//! - refused: every queued message comes back with the refusal.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use bytes::Bytes;

use crate::auth::{self, AuthError};
use crate::chunks::ChunkStore;
use crate::ctx::{Ctx, Rx, SendError};
use crate::envelope::{
    append_envelope_head_cached, append_parts_cached, decode, Envelope, Link, Undeliverable,
};
use crate::frame::{
    preamble, FrameDecoder, FrameKind, Hello, Item, RecycledBody, RefuseReason, Welcome,
    HEADER_LEN, MAX_HANDSHAKE_FRAME_LEN,
};
use crate::id::{ChannelAddr, ProcId};
use crate::idcache::IdCache;
use crate::output::{ConnError, ConnId, DialError, Event, Violation};
use crate::time::Instant;
use crate::timer::{timer_keys, Timers};

timer_keys! {
    /// Deadlines of an outbound session.
    pub(crate) enum OutTimer {
        /// Dial plus handshake.
        Connect,
        /// Next reconnect attempt.
        Backoff,
        /// Next ping on an open connection.
        Heartbeat,
        /// Check whether the peer has been silent for too long.
        Idle,
        /// Give up on an unreachable peer.
        GiveUp,
        /// Graceful close stops waiting for acknowledgements.
        Shutdown,
    }
}

/// Room the encoder asks of the chunk store beyond the payload, for header and metadata.
const META_HINT: usize = 256;

#[derive(Debug)]
enum Conn {
    Idle,
    Backoff,
    Dialing(ConnId),
    Handshake(ConnId, Rx),
    Open(ConnId, Rx),
}

/// Where the session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Taking messages.
    Running,
    /// Graceful close: flushing, waiting for acknowledgements.
    Closing,
    /// Closed for good.
    Closed,
}

/// Outbound session state toward one peer proc.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// This session's slot in the proc.
    slot: usize,
    peer: ProcId,
    addr: ChannelAddr,
    session: u64,
    /// A welcome was received in this session: hellos ask to resume it.
    resume: bool,
    peer_incarnation: Option<u64>,
    peer_max: u32,
    /// Encoded data frames, `store.base()..store.end()`.
    store: ChunkStore,
    /// Ids this session has defined for the peer.
    ids: IdCache,
    /// Returns among the frames held, with the incarnation of the peer whose message each
    /// returns: a return must not reach a later incarnation, whose actors merely share the
    /// names. `(sequence number, incarnation)`, in order.
    bound: VecDeque<(u64, u64)>,
    /// Next sequence number to hand out on the open connection.
    next_tx: u64,
    /// One past the highest sequence number that may have reached the peer: everything
    /// handed out, until a welcome says how far the peer really got.
    high_tx: u64,
    /// One past the highest sequence number ever handed out (for the retransmission count).
    ever_tx: u64,
    /// A send was refused for lack of room; announce room when it comes back.
    blocked: bool,
    conn: Conn,
    attempt: u32,
    phase: Phase,
    /// Last time anything arrived on the open connection.
    heard: Instant,
    /// Why the last dial failed, since the session last connected.
    last_dial_error: Option<DialError>,
    timers: Timers<OutTimer, 6>,
    /// With a cookie: the handshake of the current connection (see `crate::auth`).
    auth: Option<Box<DialAuth>>,
}

/// A dialer's side of the cookie handshake on one connection.
#[derive(Debug)]
struct DialAuth {
    conn: ConnId,
    /// The hello's body as sent: both tags cover it.
    hello: Vec<u8>,
    /// The acceptor proved the cookie (and we answered with our proof).
    proven: bool,
}

impl Outbound {
    pub(crate) fn new(slot: usize, peer: ProcId, addr: ChannelAddr, cx: &mut Ctx) -> Self {
        Outbound {
            slot,
            peer,
            addr,
            session: cx.rng.next_u64(),
            resume: false,
            peer_incarnation: None,
            peer_max: cx.config.max_frame_len,
            store: ChunkStore::new(cx.config.chunk_bytes, cx.config.spare_buffers),
            ids: IdCache::new(cx.config.id_cache_entries),
            bound: VecDeque::new(),
            next_tx: 0,
            high_tx: 0,
            ever_tx: 0,
            blocked: false,
            conn: Conn::Idle,
            attempt: 0,
            phase: Phase::Running,
            heard: Instant::ZERO,
            last_dial_error: None,
            timers: Timers::default(),
            auth: None,
        }
    }

    pub(crate) fn peer(&self) -> &ProcId {
        &self.peer
    }

    pub(crate) fn set_addr(&mut self, addr: ChannelAddr) {
        self.addr = addr;
    }

    /// Unacknowledged (messages, bytes) held.
    pub(crate) fn queued(&self) -> (usize, usize) {
        (self.store.len(), self.store.bytes())
    }

    /// Makes the next [`Self::deadline_if_changed`] report the deadline.
    pub(crate) fn reschedule(&mut self) {
        self.timers.mark_changed();
    }

    /// The earliest deadline, if any deadline changed since the last call.
    pub(crate) fn deadline_if_changed(&mut self) -> Option<Option<Instant>> {
        self.timers.take_changed().then(|| self.timers.next())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    pub(crate) fn conn(&self) -> Option<ConnId> {
        match self.conn {
            Conn::Dialing(c) | Conn::Handshake(c, _) | Conn::Open(c, _) => Some(c),
            Conn::Idle | Conn::Backoff => None,
        }
    }

    #[inline]
    fn has_room(&self, cx: &Ctx, len: usize) -> bool {
        self.store.is_empty()
            || (self.store.len() < cx.config.window_msgs
                && self.store.bytes() + len <= cx.config.window_bytes)
    }

    /// Whether a small send would be taken now.
    pub(crate) fn can_send(&self, cx: &Ctx) -> bool {
        self.has_room(cx, 1)
    }

    /// Takes one message. `force` skips the window check (returns and forwards, which the
    /// proc cannot make wait). `for_incarnation` ties a return to the incarnation of the
    /// peer that sent the original. The window is checked before anything is encoded.
    #[inline]
    pub(crate) fn send(
        &mut self,
        now: Instant,
        cx: &mut Ctx,
        env: &Envelope,
        payload: Option<&[u8]>,
        force: bool,
        for_incarnation: Option<u64>,
    ) -> Result<(), SendError> {
        let len = payload.map_or(env.payload.len(), <[u8]>::len);
        if self.phase != Phase::Running {
            return Err(SendError::ShuttingDown);
        }
        if !force && !self.has_room(cx, len) {
            let max = cx.config.max_frame_len.min(self.peer_max);
            if len > max as usize {
                // Over the limit whatever the metadata: waiting would not help.
                let len = u32::try_from(len).unwrap_or(u32::MAX);
                return Err(SendError::TooLarge { len, max });
            }
            self.blocked = true;
            return Err(SendError::WouldBlock);
        }
        if let (Some(want), Some(now_is)) = (for_incarnation, self.peer_incarnation) {
            if want != now_is {
                let mut env = env.clone();
                if let Some(p) = payload {
                    env.payload = Bytes::copy_from_slice(p);
                }
                cx.fail(env, Undeliverable::PeerRestarted);
                return Ok(());
            }
        }
        let seq = self.encode(cx, env, payload)?;
        if let Some(i) = for_incarnation {
            self.bound.push_back((seq, i));
        }
        match self.conn {
            Conn::Open(conn, _) => cx.out.pull(conn),
            Conn::Idle => self.dial(now, cx),
            Conn::Backoff | Conn::Dialing(_) | Conn::Handshake(..) => {}
        }
        Ok(())
    }

    /// Encodes `env` once, at the end of the chunk store, with `payload` in place of its own
    /// if given (then always copied into the chunk; only an envelope's own payload can be
    /// kept apart).
    #[inline]
    fn encode(
        &mut self,
        cx: &mut Ctx,
        env: &Envelope,
        payload: Option<&[u8]>,
    ) -> Result<u64, SendError> {
        let max = cx.config.max_frame_len.min(self.peer_max);
        let link = Link {
            sender: &cx.id,
            receiver: &self.peer,
        };
        let seq = self.store.end();
        // A large payload is kept apart from the chunk, not copied (see `crate::chunks`).
        let data = payload.unwrap_or(&env.payload);
        let apart = payload.is_none() && self.store.keeps_apart(data.len());
        let inline = if apart { 0 } else { data.len() };
        let buf = self.store.reserve(inline + META_HINT);
        let start = buf.len();
        let appended = if apart {
            append_envelope_head_cached(env, link, max, buf, &mut self.ids, seq)
        } else {
            append_parts_cached(env, data, link, max, buf, &mut self.ids, seq)
        };
        if let Err(e) = appended {
            // Nothing was appended: the ids it defined must not count as sent.
            self.ids.rewind(seq);
            return Err(match e {
                Undeliverable::TooLarge { len, max } => SendError::TooLarge { len, max },
                _ => SendError::ShuttingDown,
            });
        }
        cx.stats.frames_encoded += 1;
        Ok(if apart {
            self.store.commit_apart(start, env.payload.clone())
        } else {
            self.store.commit(start)
        })
    }

    /// The driver pulls data for `conn`: the next run of frames not yet handed out on it.
    pub(crate) fn poll_transmit(&mut self, cx: &mut Ctx, conn: ConnId) -> Option<Bytes> {
        if !matches!(self.conn, Conn::Open(c, _) if c == conn) {
            return None;
        }
        let (bytes, n) = self.store.slice_from(self.next_tx, conn)?;
        cx.stats.data_frames_sent += n;
        cx.stats.retransmitted += self.ever_tx.saturating_sub(self.next_tx).min(n);
        self.next_tx += n;
        self.high_tx = self.high_tx.max(self.next_tx);
        self.ever_tx = self.ever_tx.max(self.next_tx);
        Some(bytes)
    }

    /// Opens a connection: over the peer's own connection to this proc when it has one
    /// open (a two-way link), otherwise by dialing.
    fn dial(&mut self, now: Instant, cx: &mut Ctx) {
        self.timers.clear(OutTimer::Backoff);
        self.timers
            .set(OutTimer::Connect, now + cx.config.connect_timeout);
        if let Some(conn) = cx.shareable(&self.peer) {
            return self.share(now, cx, conn);
        }
        let conn = cx.new_conn();
        self.conn = Conn::Dialing(conn);
        cx.dial(self.slot, conn, self.addr.clone());
    }

    fn hello(&self, cx: &mut Ctx, auth: bool) -> Hello {
        Hello {
            from: cx.id.clone(),
            to: self.peer.clone(),
            incarnation: cx.incarnation,
            session: self.session,
            resume: self.resume,
            max_frame_len: cx.config.max_frame_len,
            auth: if auth { cx.nonce() } else { None },
        }
    }

    /// Opens the session over `conn`, which the peer dialed and on which its own session
    /// to this proc is open: the hello goes on it, without a preamble (the connection has
    /// one) and without a cookie handshake (both ends proved the cookie on it already).
    fn share(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId) {
        cx.share(self.slot, conn);
        cx.stats.shared_opens += 1;
        let hello = self.hello(cx, false);
        if cx.write_postcard(conn, FrameKind::Hello, &hello).is_err() {
            return self.conn_lost(now, cx);
        }
        self.auth = None;
        self.conn = Conn::Handshake(conn, Rx::Shared);
    }

    /// Both procs dialed each other at once: the peer's connection `conn` now carries its
    /// open session while this session's own connection is still dialing or in its
    /// handshake. The session gives its own up and opens over the peer's (the proc decides
    /// which side yields), so the link converges on one connection. Only the hello went
    /// out on the abandoned one.
    pub(crate) fn converge(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId) {
        let own = match self.conn {
            Conn::Dialing(c) | Conn::Handshake(c, Rx::Own(_)) => c,
            _ => return,
        };
        cx.close(own);
        self.share(now, cx, conn);
    }

    /// Whether the current connection is the peer's (see [`Outbound::share`]).
    fn is_shared(&self) -> bool {
        matches!(
            self.conn,
            Conn::Handshake(_, Rx::Shared) | Conn::Open(_, Rx::Shared)
        )
    }

    /// Ends this session's use of its connection: closes it, unless it is the peer's. A
    /// hello left unanswered on the peer's connection may still be answered there (a
    /// welcome or refusal cannot tell which hello it answers), so that connection takes no
    /// further hello of this proc: the next one is dialed.
    fn close_conn(&mut self, cx: &mut Ctx, conn: ConnId) {
        match self.conn {
            Conn::Handshake(_, Rx::Shared) => cx.unshare(&self.peer, conn),
            Conn::Open(_, Rx::Shared) => {}
            _ => cx.close(conn),
        }
    }

    /// The driver connected `conn`.
    pub(crate) fn on_connected(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId) {
        if !matches!(self.conn, Conn::Dialing(c) if c == conn) {
            return;
        }
        let hello = self.hello(cx, true);
        cx.out.write(conn, &[&preamble()]);
        let Ok(body) = postcard::to_allocvec(&hello) else {
            cx.fail_conn(conn, ConnError::Encode);
            return self.conn_lost(now, cx);
        };
        cx.write_frame(conn, FrameKind::Hello, &body);
        self.auth = hello.auth.map(|_| {
            Box::new(DialAuth {
                conn,
                hello: body,
                proven: false,
            })
        });
        // Until the session is open, frames are handshake frames: small.
        let dec = FrameDecoder::new(
            MAX_HANDSHAKE_FRAME_LEN,
            RecycledBody::new(cx.config.spare_buffers),
        );
        self.conn = Conn::Handshake(conn, Rx::Own(dec));
    }

    /// The acceptor's challenge: check its proof of the cookie, then prove ours. Nothing is
    /// proven to an acceptor that failed.
    fn on_challenge(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId, body: &[u8]) {
        let pending = self.auth.as_mut().filter(|a| a.conn == conn && !a.proven);
        let (Some(a), Some(cookie)) = (pending, cx.config.cookie.as_ref()) else {
            let v = Violation::UnexpectedFrame {
                kind: FrameKind::Challenge,
                dialed: true,
            };
            return self.fail_conn(now, cx, ConnError::Protocol(v));
        };
        match auth::answer_challenge(cookie, &a.hello, body) {
            Some(tag) => {
                a.proven = true;
                cx.write_frame(conn, FrameKind::Proof, &tag);
            }
            None => {
                // An empty proof says "you did not prove the cookie": the acceptor refuses
                // and counts it, so a wrong cookie is reported on both sides.
                cx.write_frame(conn, FrameKind::Proof, &[]);
                self.auth_failed(now, cx, conn, AuthError::BadProof);
            }
        }
    }

    /// Whether the acceptor may welcome us: without a cookie always, with one only after it
    /// proved it.
    fn welcome_allowed(&self, cx: &Ctx, conn: ConnId) -> bool {
        cx.config.cookie.is_none()
            || self.is_shared()
            || self
                .auth
                .as_ref()
                .is_some_and(|a| a.conn == conn && a.proven)
    }

    /// The acceptor is not one we may talk to: everything queued comes back as refused
    /// (`BadAuth`), as after a refusal.
    fn auth_failed(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId, e: AuthError) {
        cx.fail_conn(conn, ConnError::Auth(e));
        self.abandon(now, cx, RefuseReason::BadAuth);
    }

    /// Bytes arrived on `conn`.
    pub(crate) fn on_bytes(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId, mut bytes: &[u8]) {
        self.heard = now;
        while !bytes.is_empty() {
            let (dec, open) = match &mut self.conn {
                Conn::Handshake(c, Rx::Own(d)) if *c == conn => (d, false),
                Conn::Open(c, Rx::Own(d)) if *c == conn => (d, true),
                _ => return,
            };
            if open {
                // Runs of whole frames in one copy, as the inbound side takes them (the
                // peer's session's data on a two-way connection comes this way).
                if let Some((n, frames)) = dec.whole_frames(bytes) {
                    bytes = &bytes[n..];
                    for (kind, body) in frames {
                        if !kind.for_sender() {
                            cx.hand_over(conn, kind, body);
                            continue;
                        }
                        self.on_frame(now, cx, conn, kind, true, &body);
                        if !matches!(self.conn, Conn::Open(c, _) if c == conn) {
                            return;
                        }
                    }
                    continue;
                }
            }
            let progress = match dec.decode(bytes) {
                Ok(p) => p,
                Err(e) => return self.fail_conn(now, cx, ConnError::Frame(e)),
            };
            bytes = &bytes[progress.consumed..];
            let Some(Item::Frame(header)) = progress.item else {
                continue;
            };
            let body = dec.take_body();
            if open && !header.kind.for_sender() {
                // The peer's own session to this proc, over this connection.
                cx.hand_over(conn, header.kind, body);
                continue;
            }
            self.on_frame(now, cx, conn, header.kind, open, &body);
        }
    }

    /// For `conn` in the middle of a large frame's body (the peer's session's data on a
    /// two-way connection; see `Proc::large_body`): its length and the bytes held.
    pub(crate) fn large_body(&self, conn: ConnId) -> Option<(usize, &[u8])> {
        match &self.conn {
            Conn::Open(c, Rx::Own(d)) if *c == conn => d.large_body(),
            _ => None,
        }
    }

    /// The whole body of the large frame `conn` is in, read by the driver after the `have`
    /// bytes [`Outbound::large_body`] gave: taken without a copy (and handed over when it
    /// is the peer's session's). A `body` that does not fit the frame is taken as bytes
    /// read, those after `have`.
    pub(crate) fn on_body(
        &mut self,
        now: Instant,
        cx: &mut Ctx,
        conn: ConnId,
        body: Bytes,
        have: usize,
    ) {
        let dec = match &mut self.conn {
            Conn::Open(c, Rx::Own(d)) if *c == conn => d,
            _ => return,
        };
        match dec.adopt_body(body) {
            Ok((header, body)) if !header.kind.for_sender() => {
                self.heard = now;
                cx.hand_over(conn, header.kind, body);
            }
            Ok((header, body)) => {
                self.heard = now;
                self.on_frame(now, cx, conn, header.kind, true, &body);
            }
            Err(body) => self.on_bytes(now, cx, conn, body.get(have..).unwrap_or_default()),
        }
    }

    /// A frame of this session on the peer's connection `conn`, handed over by the
    /// inbound session that owns it.
    pub(crate) fn on_shared_frame(
        &mut self,
        now: Instant,
        cx: &mut Ctx,
        conn: ConnId,
        kind: FrameKind,
        body: &[u8],
    ) {
        let open = match self.conn {
            Conn::Handshake(c, Rx::Shared) if c == conn => false,
            Conn::Open(c, Rx::Shared) if c == conn => true,
            _ => return,
        };
        self.heard = now;
        self.on_frame(now, cx, conn, kind, open, body);
    }

    fn on_frame(
        &mut self,
        now: Instant,
        cx: &mut Ctx,
        conn: ConnId,
        kind: FrameKind,
        open: bool,
        body: &[u8],
    ) {
        let violation = |v| ConnError::Protocol(v);
        match (kind, open) {
            (FrameKind::Welcome, false) if !self.welcome_allowed(cx, conn) => {
                self.auth_failed(now, cx, conn, AuthError::Unproven)
            }
            (FrameKind::Challenge, false) => self.on_challenge(now, cx, conn, body),
            (FrameKind::Welcome, false) => match postcard::from_bytes::<Welcome>(body) {
                Ok(w) => self.on_welcome(now, cx, conn, w),
                Err(_) => self.fail_conn(now, cx, violation(Violation::MalformedWelcome)),
            },
            (FrameKind::Refuse, false) => match postcard::from_bytes::<RefuseReason>(body) {
                Ok(r) => self.on_refuse(now, cx, conn, r),
                Err(_) => self.fail_conn(now, cx, violation(Violation::MalformedRefusal)),
            },
            (FrameKind::Ack, true) => match postcard::from_bytes::<u64>(body) {
                Ok(n) => self.on_ack(now, cx, n),
                Err(_) => self.fail_conn(now, cx, violation(Violation::MalformedAck)),
            },
            (FrameKind::Pong, true) => {}
            _ => {
                let v = Violation::UnexpectedFrame { kind, dialed: true };
                self.fail_conn(now, cx, violation(v))
            }
        }
    }

    fn on_welcome(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId, w: Welcome) {
        let previous = self.peer_incarnation.filter(|i| *i != w.incarnation);
        self.peer_incarnation = Some(w.incarnation);
        self.peer_max = w.max_frame_len;
        if let Some(previous) = previous {
            cx.event(Event::PeerRestarted {
                peer: self.peer.clone(),
                previous,
                incarnation: w.incarnation,
            });
            self.return_queued(cx, Undeliverable::PeerRestarted, false);
            return self.restart_session(now, cx, conn);
        }
        let next = match w.next {
            Some(n) if n >= self.store.base() && n <= self.store.end() => n,
            // Forgotten (or a position we cannot have sent): nothing sent is provable.
            _ => {
                self.return_queued(cx, Undeliverable::SessionLost, false);
                return self.restart_session(now, cx, conn);
            }
        };
        self.release(next);
        // The peer is authoritative: what it has not received was not delivered.
        self.high_tx = next;
        self.next_tx = next;
        self.prune_unsent(cx, w.incarnation, w.id_cache);
        self.open(now, cx, conn, w.incarnation);
    }

    fn open(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId, incarnation: u64) {
        self.last_dial_error = None;
        self.resume = true;
        self.auth = None;
        self.attempt = 0;
        self.timers.clear(OutTimer::Connect);
        self.timers.clear(OutTimer::GiveUp);
        self.timers
            .set(OutTimer::Heartbeat, now + cx.config.heartbeat_interval);
        self.timers
            .set(OutTimer::Idle, now + cx.config.idle_timeout);
        let rx = match core::mem::replace(&mut self.conn, Conn::Idle) {
            Conn::Handshake(_, Rx::Shared) => Rx::Shared,
            Conn::Handshake(_, Rx::Own(mut dec)) => {
                // The handshake is over: frames may now be as large as messages.
                dec.set_max_len(cx.config.max_frame_len);
                Rx::Own(dec)
            }
            _ => Rx::Own(FrameDecoder::frames_only(
                cx.config.max_frame_len,
                RecycledBody::new(cx.config.spare_buffers),
            )),
        };
        self.conn = Conn::Open(conn, rx);
        cx.event(Event::PeerConnected {
            peer: self.peer.clone(),
            incarnation,
            conn,
        });
        if self.next_tx < self.store.end() {
            cx.out.pull(conn);
        }
        self.after_release(cx);
    }

    /// Drops what the peer, as it is now, must not get: frames larger than it accepts,
    /// and returns meant for an earlier incarnation; and fits the id cache to the
    /// capacity the peer announced. None of the frames concerned has been received (they
    /// are all past the peer's position), so they leave the sequence, or are encoded
    /// again, without renumbering anything the peer has seen.
    fn prune_unsent(&mut self, cx: &mut Ctx, incarnation: u64, id_cache: u16) {
        let max = self.peer_max as usize + HEADER_LEN;
        let first = self.next_tx;
        let too_large = (first..self.store.end()).any(|s| self.store.frame_len(s) > Some(max));
        let stale = self.bound.iter().any(|(_, i)| *i != incarnation);
        let smaller_cache = id_cache < self.ids.capacity();
        if !too_large && !stale && !smaller_cache {
            return;
        }
        let held = self.take_held(cx, first);
        self.ids.rewind(first);
        self.ids.limit(id_cache);
        self.encode_again(cx, held, Some(incarnation));
    }

    /// Removes the frames from `first` on and decodes them (with the incarnation each
    /// return is bound to), before the id cache forgets what they defined.
    fn take_held(&mut self, cx: &mut Ctx, first: u64) -> VecDeque<(Envelope, Option<u64>)> {
        let frames = self.store.split_off(first);
        let bound = core::mem::take(&mut self.bound);
        let mut held = VecDeque::with_capacity(frames.len());
        for (k, frame) in frames.into_iter().enumerate() {
            let seq = first + k as u64;
            let inc = bound.iter().find(|(s, _)| *s == seq).map(|(_, i)| *i);
            match self.decode_own(cx, frame) {
                Some(env) => held.push_back((env, inc)),
                None => cx.stats.returns_dropped += 1,
            }
        }
        held
    }

    /// Encodes held messages again, in order, at the end of the store. With the peer's
    /// `incarnation`, returns bound to another one go back as `PeerRestarted`; a message
    /// now over the peer's limit goes back as `TooLarge`.
    fn encode_again(
        &mut self,
        cx: &mut Ctx,
        held: VecDeque<(Envelope, Option<u64>)>,
        incarnation: Option<u64>,
    ) {
        for (env, inc) in held {
            if inc.is_some_and(|i| incarnation.is_some_and(|now| now != i)) {
                cx.fail(env, Undeliverable::PeerRestarted);
                continue;
            }
            match self.encode(cx, &env, None) {
                Ok(seq) => {
                    if let Some(i) = inc {
                        self.bound.push_back((seq, i));
                    }
                }
                Err(SendError::TooLarge { len, max }) => {
                    cx.fail(env, Undeliverable::TooLarge { len, max })
                }
                Err(_) => cx.fail(env, Undeliverable::ShuttingDown),
            }
        }
    }

    fn on_refuse(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId, r: RefuseReason) {
        if !self.is_shared() {
            // (On the peer's connection, the refusal ends this session only.)
            cx.fail_conn(conn, ConnError::Refused(r));
        }
        self.abandon(now, cx, r);
    }

    /// Gives the session up after a refusal: everything queued comes back with it.
    fn abandon(&mut self, now: Instant, cx: &mut Ctx, r: RefuseReason) {
        self.return_queued(cx, Undeliverable::Refused(r), true);
        self.new_session(cx);
        self.go_idle();
        self.check_closed(now, cx);
    }

    fn on_ack(&mut self, now: Instant, cx: &mut Ctx, n: u64) {
        if n < self.store.base() || n > self.next_tx {
            let v = Violation::AckOutOfRange {
                ack: n,
                base: self.store.base(),
                sent: self.next_tx,
            };
            return self.fail_conn(now, cx, ConnError::Protocol(v));
        }
        self.release(n);
        self.after_release(cx);
        self.check_closed(now, cx);
    }

    fn release(&mut self, upto: u64) {
        self.store.release(upto);
        while self.bound.front().is_some_and(|(s, _)| *s < upto) {
            self.bound.pop_front();
        }
    }

    fn after_release(&mut self, cx: &mut Ctx) {
        if self.blocked && self.can_send(cx) {
            self.blocked = false;
            cx.event(Event::Writable {
                peer: self.peer.clone(),
            });
        }
    }

    /// Returns held messages: all of them, or only those ever handed out.
    fn return_queued(&mut self, cx: &mut Ctx, reason: Undeliverable, all: bool) {
        let upto = if all {
            self.store.end()
        } else {
            self.high_tx.clamp(self.store.base(), self.store.end())
        };
        while self.store.base() < upto {
            let Some(frame) = self.store.pop_front() else {
                break;
            };
            self.return_frame(cx, frame, reason);
        }
        self.release(upto);
        self.after_release(cx);
    }

    fn return_frame(&mut self, cx: &mut Ctx, frame: Bytes, reason: Undeliverable) {
        match self.decode_own(cx, frame) {
            Some(env) => cx.fail(env, reason),
            // Our own encoding always decodes; count rather than panic if it ever did not.
            None => cx.stats.returns_dropped += 1,
        }
    }

    /// Decodes a frame this session encoded (its cached ids are in `self.ids`).
    fn decode_own(&mut self, cx: &Ctx, frame: Bytes) -> Option<Envelope> {
        let link = Link {
            sender: &cx.id,
            receiver: &self.peer,
        };
        decode(frame.slice(HEADER_LEN..), Some(link), Some(&mut self.ids)).ok()
    }

    /// Starts a fresh session (new id, sequence from 0, empty id cache) with what is
    /// still held: none of it was received in the old session, and it is encoded again for
    /// the new one, whose receiver knows no cached id.
    fn new_session(&mut self, cx: &mut Ctx) {
        self.session = cx.rng.next_u64();
        self.resume = false;
        let held = self.take_held(cx, self.store.base());
        self.ids = IdCache::new(cx.config.id_cache_entries);
        self.store.renumber();
        self.next_tx = 0;
        self.high_tx = 0;
        self.ever_tx = 0;
        self.encode_again(cx, held, None);
    }

    fn restart_session(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId) {
        self.close_conn(cx, conn);
        self.new_session(cx);
        self.go_idle();
        if !self.store.is_empty() {
            self.dial(now, cx);
        }
        self.check_closed(now, cx);
    }

    fn go_idle(&mut self) {
        self.conn = Conn::Idle;
        self.timers.clear(OutTimer::Connect);
        self.timers.clear(OutTimer::Backoff);
        self.timers.clear(OutTimer::Heartbeat);
        self.timers.clear(OutTimer::Idle);
        if self.store.is_empty() {
            self.timers.clear(OutTimer::GiveUp);
        }
    }

    /// The driver reports that dialing `conn` failed with `error`.
    pub(crate) fn on_dial_failed(&mut self, cx: &mut Ctx, conn: ConnId, error: DialError) {
        if !matches!(self.conn, Conn::Dialing(c) if c == conn) {
            return;
        }
        cx.event(Event::DialFailed {
            peer: self.peer.clone(),
            addr: alloc::boxed::Box::new(self.addr.clone()),
            error: alloc::boxed::Box::new(error.clone()),
            attempts: self.attempt.saturating_add(1),
        });
        self.last_dial_error = Some(error);
    }

    /// The driver reports `conn` closed (or the dial failed).
    pub(crate) fn on_closed(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId) {
        if self.conn() == Some(conn) {
            self.conn_lost(now, cx);
        }
    }

    fn fail_conn(&mut self, now: Instant, cx: &mut Ctx, error: ConnError) {
        if let Some(conn) = self.conn() {
            cx.fail_conn(conn, error);
        }
        self.conn_lost(now, cx);
    }

    fn conn_lost(&mut self, now: Instant, cx: &mut Ctx) {
        self.go_idle();
        self.next_tx = self.store.base();
        if self.store.is_empty() {
            return self.check_closed(now, cx);
        }
        if !self.timers.is_set(OutTimer::GiveUp) {
            self.timers
                .set(OutTimer::GiveUp, now + cx.config.unreachable_timeout);
        }
        let delay = crate::config::backoff_delay(&cx.config, self.attempt, cx.rng.next_u64());
        self.attempt = self.attempt.saturating_add(1);
        self.conn = Conn::Backoff;
        self.timers.set(OutTimer::Backoff, now + delay);
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, cx: &mut Ctx) {
        while let Some(t) = self.timers.expired(now) {
            match t {
                OutTimer::Connect => self.fail_conn(now, cx, ConnError::HandshakeTimeout),
                OutTimer::Backoff => {
                    if matches!(self.conn, Conn::Backoff) {
                        self.dial(now, cx);
                    }
                }
                OutTimer::Heartbeat => {
                    if let Conn::Open(conn, _) = self.conn {
                        cx.write_frame(conn, FrameKind::Ping, &[]);
                        self.timers
                            .set(OutTimer::Heartbeat, now + cx.config.heartbeat_interval);
                    }
                }
                OutTimer::Idle => self.check_idle(now, cx),
                OutTimer::GiveUp => self.give_up(now, cx, Undeliverable::Unreachable),
                OutTimer::Shutdown => self.give_up(now, cx, Undeliverable::ShuttingDown),
            }
        }
    }

    /// The idle deadline is not moved on every byte: when it fires, it is armed again from
    /// the last time anything arrived, or the connection is failed.
    fn check_idle(&mut self, now: Instant, cx: &mut Ctx) {
        let due = self.heard + cx.config.idle_timeout;
        if due > now {
            self.timers.set(OutTimer::Idle, due);
        } else {
            self.fail_conn(now, cx, ConnError::IdleTimeout);
        }
    }

    /// Returns everything held and drops the connection attempt or connection: what was
    /// handed out comes back as `Unconfirmed` (the peer may have it), the rest with
    /// `reason`, which then is definite.
    fn give_up(&mut self, now: Instant, cx: &mut Ctx, reason: Undeliverable) {
        if matches!(self.conn, Conn::Open(..)) && reason == Undeliverable::Unreachable {
            // Connected again by now; the timer is stale.
            return;
        }
        if reason == Undeliverable::Unreachable {
            // Before the returns, so a driver can attach the cause to them.
            cx.event(Event::Unreachable {
                peer: self.peer.clone(),
                last_error: self.last_dial_error.take().map(alloc::boxed::Box::new),
            });
        }
        self.return_queued(cx, Undeliverable::Unconfirmed, false);
        self.return_queued(cx, reason, true);
        if let Some(conn) = self.conn() {
            if !matches!(self.conn, Conn::Open(..)) {
                self.close_conn(cx, conn);
                self.go_idle();
            }
        } else {
            self.go_idle();
        }
        self.new_session(cx);
        self.check_closed(now, cx);
    }

    /// Graceful close: flush, wait for acknowledgements (up to the shutdown timeout), then
    /// say goodbye and close.
    pub(crate) fn shutdown(&mut self, now: Instant, cx: &mut Ctx) {
        if self.phase != Phase::Running {
            return;
        }
        self.phase = Phase::Closing;
        self.timers
            .set(OutTimer::Shutdown, now + cx.config.shutdown_timeout);
        self.check_closed(now, cx);
    }

    fn check_closed(&mut self, _now: Instant, cx: &mut Ctx) {
        if self.phase != Phase::Closing || !self.store.is_empty() {
            return;
        }
        if let Some(conn) = self.conn() {
            if let Conn::Open(..) = self.conn {
                cx.write_frame(conn, FrameKind::Close, &[]);
            }
            self.close_conn(cx, conn);
        }
        self.conn = Conn::Idle;
        self.timers.clear_all();
        self.phase = Phase::Closed;
    }
}
