//! The inbound half of a reliable link: what one proc receives from one peer in one
//! session, over connections the peer dialed or, on a two-way link, over a connection
//! this proc dialed (then [`Rx::Shared`]: the outbound session that dialed it decodes the
//! frames and hands this session its own).
//!
//! It counts received messages (the next sequence number expected), acknowledges them
//! cumulatively and coalesced (after `ack_every_msgs` messages or `ack_every_bytes` bytes,
//! `ack_delay` after the first unacknowledged one, and at once when the dialer pings), and
//! answers pings. It also sends a keepalive every `heartbeat_interval` of its own accord:
//! the dialer's pings can sit behind a large frame of its own, and liveness must not
//! depend on message size. Its position survives connection loss for `session_retention`, so the
//! dialer can resume exactly where delivery stopped. Routing what it receives is the
//! proc's job.
//!
//! # Holding behind a full port
//!
//! A message for a local port that takes it at once is placed as it is decoded, when
//! nothing waits before it (see `place`; the common case costs no queueing). Every other
//! received message waits in the session's pending queue until the proc routes them; the
//! proc stops at the first one whose local port is full, and everything behind it on this
//! link waits too (head-of-line, so per-link order needs no reordering; other links are not
//! affected). Only routed messages are acknowledged, so a slow consumer fills its sender's
//! window and the sender waits. The queue is bounded (`Config::link_held_msgs` /
//! `link_held_bytes`): a peer that sends past it has its connection closed with
//! [`ConnError::Overrun`]. A reconnect drops what is pending, and the welcome names the
//! first message not routed, so the dialer sends the rest again: nothing is lost, and
//! nothing is delivered twice.

use alloc::collections::VecDeque;

use crate::ctx::{Ctx, Rx};
use crate::envelope::{decode_reusing, Envelope, Link};
use crate::frame::{FrameKind, Item, Welcome};
use crate::id::ProcId;
use crate::idcache::IdTable;
use crate::output::{ConnError, ConnId, Event, Violation};
use crate::registry::{Admit, Registry};
use crate::time::Instant;
use crate::timer::{timer_keys, Timers};

timer_keys! {
    /// Deadlines of an inbound session.
    pub(crate) enum InTimer {
        /// Send a coalesced acknowledgement.
        Ack,
        /// Check whether the dialer has been silent for too long.
        Idle,
        /// Send a keepalive, so the dialer hears from us even while a large frame of its
        /// own occupies the link for longer than its idle timeout.
        Heartbeat,
        /// Forget a session whose dialer has not come back.
        Retention,
    }
}

/// What became of the session after some input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It goes on.
    Live,
    /// The dialer closed it or it expired: forget it.
    Ended,
}

/// Inbound session state for one (dialer, session id).
#[derive(Debug)]
pub(crate) struct Inbound {
    peer: ProcId,
    incarnation: u64,
    /// Sequence number of the next frame expected on the connection.
    next: u64,
    /// Received, not yet routed: sequence numbers `next - pending.len()..next`.
    pending: VecDeque<Envelope>,
    pending_bytes: usize,
    /// A ping arrived since the last acknowledgement decision.
    pinged: bool,
    /// The proc stopped routing at a full port: what arrives now is held, and counts
    /// against `link_held_msgs` / `link_held_bytes`. (Messages decoded from one input and
    /// not yet routed do not: they are bounded by what the driver passes at once.)
    blocked: bool,
    acked: u64,
    unacked_bytes: usize,
    /// Last time anything arrived on the connection.
    heard: Instant,
    /// Ids the dialer defined in this session.
    ids: IdTable,
    conn: Option<(ConnId, Rx)>,
    timers: Timers<InTimer, 4>,
    /// `Event::InboundSession { connected: true }` was the last one reported.
    reported_up: bool,
}

impl Inbound {
    pub(crate) fn new(peer: ProcId, incarnation: u64, id_cache: u16) -> Self {
        Inbound {
            peer,
            incarnation,
            next: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            pinged: false,
            blocked: false,
            acked: 0,
            unacked_bytes: 0,
            heard: Instant::ZERO,
            ids: IdTable::new(id_cache),
            conn: None,
            timers: Timers::default(),
            reported_up: false,
        }
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub(crate) fn conn(&self) -> Option<ConnId> {
        self.conn.as_ref().map(|(c, _)| *c)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Makes the next [`Self::deadline_if_changed`] report the deadline.
    pub(crate) fn reschedule(&mut self) {
        self.timers.mark_changed();
    }

    /// The earliest deadline, if any deadline changed since the last call.
    pub(crate) fn deadline_if_changed(&mut self) -> Option<Option<Instant>> {
        self.timers.take_changed().then(|| self.timers.next())
    }

    /// Binds a freshly handshaken connection (closing any older one: its unread bytes must
    /// not be delivered after the resume point) and welcomes the dialer. With
    /// [`Rx::Shared`] the connection is one this proc dialed, which the peer's session
    /// now shares (a two-way link).
    pub(crate) fn attach(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId, rx: Rx) {
        if let Some((old, _)) = self.conn.take() {
            if old != conn {
                cx.close(old);
            }
        }
        self.drop_pending();
        let welcome = Welcome {
            incarnation: cx.incarnation,
            next: Some(self.next),
            max_frame_len: cx.config.max_frame_len,
            id_cache: self.ids.capacity(),
        };
        if cx
            .write_postcard(conn, FrameKind::Welcome, &welcome)
            .is_err()
        {
            return self.detached(now, cx);
        }
        self.acked = self.next;
        self.unacked_bytes = 0;
        self.conn = Some((conn, rx));
        self.heard = now;
        self.timers.clear(InTimer::Retention);
        self.timers.clear(InTimer::Ack);
        self.timers.set(InTimer::Idle, now + cx.config.idle_timeout);
        self.timers
            .set(InTimer::Heartbeat, now + cx.config.heartbeat_interval);
        self.reported_up = true;
        self.report(cx, true);
    }

    /// Reports the session's connection gained or lost (`Event::InboundSession`).
    fn report(&mut self, cx: &mut Ctx, connected: bool) {
        let (peer, incarnation) = (self.peer.clone(), self.incarnation);
        cx.event(Event::InboundSession {
            peer,
            incarnation,
            connected,
        });
    }

    /// Reports the connection lost, once.
    fn report_down(&mut self, cx: &mut Ctx) {
        if core::mem::take(&mut self.reported_up) {
            self.report(cx, false);
        }
    }

    /// Forgets what was received and not routed. It was never acknowledged, so the
    /// dialer still holds it: it sends it again if it resumes, and returns it otherwise.
    /// Messages are held only while a connection is attached, so nothing from a session
    /// whose link was lost can be delivered after messages of a newer session.
    /// Whether the proc's routing stopped at a full port (see `blocked`).
    pub(crate) fn set_blocked(&mut self, blocked: bool) {
        self.blocked = blocked;
    }

    fn drop_pending(&mut self) {
        self.blocked = false;
        self.next = self.routed();
        self.pending.clear();
        self.pending_bytes = 0;
    }

    /// Messages and payload bytes received and not yet routed.
    pub(crate) fn pending(&self) -> (usize, usize) {
        (self.pending.len(), self.pending_bytes)
    }

    /// One past the last message routed (what an acknowledgement confirms).
    fn routed(&self) -> u64 {
        self.next - self.pending.len() as u64
    }

    /// The first received message not yet routed.
    #[inline]
    pub(crate) fn front(&self) -> Option<&Envelope> {
        self.pending.front()
    }

    /// Takes the first received message for routing.
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<Envelope> {
        let env = self.pending.pop_front()?;
        let len = env.payload.len();
        self.pending_bytes -= len;
        self.unacked_bytes += len;
        Some(env)
    }

    /// Bytes arrived on `conn`; decoded envelopes join the pending queue (see
    /// [`Inbound::front`]). Runs of whole frames are taken in one copy
    /// (`FrameDecoder::whole_frames`); a frame cut by the input's end goes through the
    /// incremental decoder.
    pub(crate) fn on_bytes(
        &mut self,
        now: Instant,
        cx: &mut Ctx,
        reg: &mut Registry,
        conn: ConnId,
        mut bytes: &[u8],
    ) -> Fate {
        self.heard = now;
        while !bytes.is_empty() {
            let dec = match &mut self.conn {
                Some((c, Rx::Own(d))) if *c == conn => d,
                _ => return Fate::Live,
            };
            if let Some((n, frames)) = dec.whole_frames(bytes) {
                bytes = &bytes[n..];
                for (kind, body) in frames {
                    if let Some(fate) = self.on_frame(now, cx, reg, kind, body) {
                        return fate;
                    }
                }
                continue;
            }
            let progress = match dec.decode(bytes) {
                Ok(p) => p,
                Err(e) => {
                    self.fail_conn(now, cx, ConnError::Frame(e));
                    return Fate::Live;
                }
            };
            bytes = &bytes[progress.consumed..];
            let header = match progress.item {
                Some(Item::Frame(h)) => h,
                Some(Item::Preamble { .. }) | None => continue,
            };
            let body = dec.take_body();
            if let Some(fate) = self.on_frame(now, cx, reg, header.kind, body) {
                return fate;
            }
        }
        Fate::Live
    }

    /// For `conn` in the middle of a large frame's body: its length and the bytes of it
    /// held (see `FrameDecoder::large_body`).
    pub(crate) fn large_body(&self, conn: ConnId) -> Option<(usize, &[u8])> {
        match &self.conn {
            Some((c, Rx::Own(d))) if *c == conn => d.large_body(),
            _ => None,
        }
    }

    /// The whole body of the large frame `conn` is in, read by the driver into `body`
    /// after the `have` bytes [`Inbound::large_body`] gave: the frame is taken without a
    /// copy. Should it not fit the frame, the bytes after `have` go through
    /// [`Inbound::on_bytes`], in stream order.
    pub(crate) fn on_body(
        &mut self,
        now: Instant,
        cx: &mut Ctx,
        reg: &mut Registry,
        conn: ConnId,
        body: bytes::Bytes,
        have: usize,
    ) -> Fate {
        self.heard = now;
        let dec = match &mut self.conn {
            Some((c, Rx::Own(d))) if *c == conn => d,
            _ => return Fate::Live,
        };
        match dec.adopt_body(body) {
            Ok((header, body)) => self
                .on_frame(now, cx, reg, header.kind, body)
                .unwrap_or(Fate::Live),
            Err(body) => {
                let rest = body.get(have..).unwrap_or_default();
                self.on_bytes(now, cx, reg, conn, rest)
            }
        }
    }

    /// A frame of this session on a connection this proc dialed (see [`Rx::Shared`]),
    /// handed over by the outbound session that owns it.
    pub(crate) fn on_shared_frame(
        &mut self,
        now: Instant,
        cx: &mut Ctx,
        reg: &mut Registry,
        conn: ConnId,
        kind: FrameKind,
        body: bytes::Bytes,
    ) -> Fate {
        if !matches!(self.conn, Some((c, Rx::Shared)) if c == conn) {
            return Fate::Live;
        }
        self.heard = now;
        self.on_frame(now, cx, reg, kind, body)
            .unwrap_or(Fate::Live)
    }

    /// Whether the connection is one this proc dialed (see [`Rx::Shared`]).
    fn is_shared(&self) -> bool {
        matches!(self.conn, Some((_, Rx::Shared)))
    }

    /// One frame; `Some` ends the input (the connection failed or closed).
    #[inline]
    fn on_frame(
        &mut self,
        now: Instant,
        cx: &mut Ctx,
        reg: &mut Registry,
        kind: FrameKind,
        body: bytes::Bytes,
    ) -> Option<Fate> {
        if kind.for_sender() && !self.is_shared() {
            // This proc's own session to the dialer, over the dialer's connection.
            if let Some((c, _)) = &self.conn {
                cx.hand_over(*c, kind, body);
            }
            return None;
        }
        match kind {
            FrameKind::Data => {
                if let Err(e) = self.on_data(cx, reg, body) {
                    self.fail_conn(now, cx, e);
                    return Some(Fate::Live);
                }
            }
            FrameKind::Ping => self.pinged = true,
            FrameKind::Close => {
                self.ack(cx);
                if let Some((c, Rx::Own(_))) = self.conn.take() {
                    cx.close(c);
                }
                self.report_down(cx);
                return Some(Fate::Ended);
            }
            kind => {
                let v = Violation::UnexpectedFrame {
                    kind,
                    dialed: false,
                };
                self.fail_conn(now, cx, ConnError::Protocol(v));
                return Some(Fate::Live);
            }
        }
        None
    }

    #[inline]
    fn on_data(
        &mut self,
        cx: &mut Ctx,
        reg: &mut Registry,
        body: bytes::Bytes,
    ) -> Result<(), ConnError> {
        if self.blocked
            && (self.pending.len() >= cx.config.link_held_msgs
                || self.pending_bytes + body.len() > cx.config.link_held_bytes)
        {
            return Err(ConnError::Overrun);
        }
        let link = Link {
            sender: &self.peer,
            receiver: &cx.id,
        };
        let spares = Some(&mut cx.spare_ids);
        let env = decode_reusing(body, link, &mut self.ids, spares).map_err(ConnError::Envelope)?;
        self.next += 1;
        let len = env.payload.len();
        let env = match self.pending.is_empty() {
            true => match place(cx, reg, env) {
                None => {
                    // Routed, as `pop_front` counts it.
                    self.unacked_bytes += len;
                    return Ok(());
                }
                Some(env) => env,
            },
            false => env,
        };
        self.pending_bytes += env.payload.len();
        self.pending.push_back(env);
        Ok(())
    }

    /// After the proc routed what it could: acknowledge now, or arm the ack timer, and
    /// answer a ping.
    pub(crate) fn after_routing(&mut self, now: Instant, cx: &mut Ctx) {
        if self.conn.is_none() {
            return;
        }
        self.timers
            .set_if_unset(InTimer::Idle, now + cx.config.idle_timeout);
        let ping = core::mem::take(&mut self.pinged);
        let pending = self.routed() - self.acked;
        if ping
            || pending >= cx.config.ack_every_msgs
            || self.unacked_bytes >= cx.config.ack_every_bytes
        {
            self.ack(cx);
        } else if pending > 0 && !self.timers.is_set(InTimer::Ack) {
            self.timers.set(InTimer::Ack, now + cx.config.ack_delay);
        }
        if ping {
            if let Some((c, _)) = &self.conn {
                cx.write_frame(*c, FrameKind::Pong, &[]);
                // The answer is this side's keepalive too: while the dialer pings, the
                // acceptor's own heartbeat never has to fire (one frame each way per
                // interval, not three).
                self.timers
                    .set(InTimer::Heartbeat, now + cx.config.heartbeat_interval);
            }
        }
    }

    fn ack(&mut self, cx: &mut Ctx) {
        self.timers.clear(InTimer::Ack);
        let routed = self.routed();
        if routed == self.acked {
            return;
        }
        if let Some((c, _)) = &self.conn {
            let c = *c;
            // A u64 always serializes; on the impossible failure the connection is failed.
            if cx.write_postcard(c, FrameKind::Ack, &routed).is_ok() {
                cx.stats.acks_sent += 1;
                self.acked = routed;
                self.unacked_bytes = 0;
            }
        }
    }

    fn fail_conn(&mut self, now: Instant, cx: &mut Ctx, error: ConnError) {
        if let Some((conn, _)) = self.conn.take() {
            cx.fail_conn(conn, error);
        }
        self.detached(now, cx);
    }

    /// The driver reports `conn` closed.
    pub(crate) fn on_closed(&mut self, now: Instant, cx: &mut Ctx, conn: ConnId) {
        if self.conn() == Some(conn) {
            self.conn = None;
            self.detached(now, cx);
        }
    }

    fn detached(&mut self, now: Instant, cx: &mut Ctx) {
        self.report_down(cx);
        self.drop_pending();
        self.timers.clear(InTimer::Ack);
        self.timers.clear(InTimer::Idle);
        self.timers.clear(InTimer::Heartbeat);
        self.timers
            .set(InTimer::Retention, now + cx.config.session_retention);
    }

    /// Closes the connection without forgetting the position (shutdown).
    pub(crate) fn close_conn(&mut self, now: Instant, cx: &mut Ctx) {
        self.ack(cx);
        if let Some((conn, Rx::Own(_))) = self.conn.take() {
            cx.close(conn);
        }
        self.detached(now, cx);
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, cx: &mut Ctx) -> Fate {
        while let Some(t) = self.timers.expired(now) {
            match t {
                InTimer::Ack => self.ack(cx),
                InTimer::Idle => {
                    // Armed again from the last byte heard rather than moved on each one.
                    let due = self.heard + cx.config.idle_timeout;
                    if due > now {
                        self.timers.set(InTimer::Idle, due);
                    } else {
                        self.fail_conn(now, cx, ConnError::IdleTimeout);
                    }
                }
                InTimer::Heartbeat => {
                    if let Some((c, _)) = &self.conn {
                        cx.write_frame(*c, FrameKind::Pong, &[]);
                        self.timers
                            .set(InTimer::Heartbeat, now + cx.config.heartbeat_interval);
                    }
                }
                InTimer::Retention => return Fate::Ended,
            }
        }
        Fate::Live
    }
}

/// Delivers `env` at once if it is an ordinary message for a local port that takes it
/// now, the common case: it then never waits in the pending queue. Anything else (a
/// return, a forward, a full or missing port) comes back to go through the pending queue
/// and the proc's routing, which decides it the same way; `admit` changes nothing unless
/// it places the message.
#[inline]
fn place(cx: &mut Ctx, reg: &mut Registry, env: Envelope) -> Option<Envelope> {
    match cx.admit(reg, &env) {
        Some(Admit::Placed(port)) => {
            cx.deliver(port, env);
            None
        }
        _ => Some(env),
    }
}
