//! The outbound half of a reliable link: everything one proc sends to one peer proc.
//!
//! A session outlives connections. Each message gets the next sequence number (implicit:
//! frames on a connection are consecutive) and stays in the queue until the peer's
//! cumulative acknowledgement covers it. After a reconnect the peer's welcome says how far
//! it has received, and exactly the rest is sent again, so each message is delivered once
//! and in order while both procs live.
//!
//! States of the current connection: `Idle` (none; a send dials) → `Dialing` (driver is
//! connecting) → `Handshake` (hello sent) → `Open` (data flows) → on loss `Backoff` (a
//! pure function of attempt number and injected jitter) → `Dialing` again. With messages
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

use alloc::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::envelope::{append_envelope, decode_envelope, Envelope, Link, Undeliverable};
use crate::frame::{
    append_frame, preamble, FrameDecoder, FrameKind, Hello, Item, RefuseReason, Welcome, HEADER_LEN,
};
use crate::id::{ChannelAddr, ProcId};
use crate::output::{ConnError, ConnId, Event, Output};
use crate::proc::{SendError, Shared};
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
        /// Nothing heard from the peer for too long.
        Idle,
        /// Give up on an unreachable peer.
        GiveUp,
        /// Graceful close stops waiting for acknowledgements.
        Shutdown,
    }
}

type Decoder = FrameDecoder<BytesMut>;

/// One message waiting for its acknowledgement.
#[derive(Debug)]
struct Queued {
    /// The whole encoded data frame.
    frame: Bytes,
    /// For a return: the incarnation of the peer whose message it returns. A return must
    /// not reach a later incarnation, whose actors merely share the names.
    for_incarnation: Option<u64>,
}

#[derive(Debug)]
enum Conn {
    Idle,
    Backoff,
    Dialing(ConnId),
    Handshake(ConnId, Decoder),
    Open(ConnId, Decoder),
}

/// Outbound session state toward one peer proc.
#[derive(Debug)]
pub(crate) struct Outbound {
    peer: ProcId,
    addr: ChannelAddr,
    session: u64,
    /// A welcome was received in this session: hellos ask to resume it.
    resume: bool,
    peer_incarnation: Option<u64>,
    peer_max: u32,
    /// Encoded data frames; `queue[i]` has sequence number `base + i`.
    queue: VecDeque<Queued>,
    base: u64,
    /// Next sequence number to write on the open connection.
    next_tx: u64,
    /// One past the highest sequence number that may have reached the peer: everything
    /// written, until a welcome says how far the peer really got.
    high_tx: u64,
    /// One past the highest sequence number ever written (for the retransmission count).
    ever_tx: u64,
    queued_bytes: usize,
    /// A send was refused for lack of room; announce room when it comes back.
    blocked: bool,
    conn: Conn,
    attempt: u32,
    closing: bool,
    closed: bool,
    timers: Timers<OutTimer, 6>,
    encode_buf: BytesMut,
}

impl Outbound {
    pub(crate) fn new(peer: ProcId, addr: ChannelAddr, sh: &mut Shared) -> Self {
        Outbound {
            peer,
            addr,
            session: sh.rng.next_u64(),
            resume: false,
            peer_incarnation: None,
            peer_max: sh.config.max_frame_len,
            queue: VecDeque::new(),
            base: 0,
            next_tx: 0,
            high_tx: 0,
            ever_tx: 0,
            queued_bytes: 0,
            blocked: false,
            conn: Conn::Idle,
            attempt: 0,
            closing: false,
            closed: false,
            timers: Timers::default(),
            encode_buf: BytesMut::new(),
        }
    }

    pub(crate) fn peer(&self) -> &ProcId {
        &self.peer
    }

    pub(crate) fn set_addr(&mut self, addr: ChannelAddr) {
        self.addr = addr;
    }

    /// Unacknowledged messages held.
    pub(crate) fn queued(&self) -> (usize, usize) {
        (self.queue.len(), self.queued_bytes)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn conn(&self) -> Option<ConnId> {
        match self.conn {
            Conn::Dialing(c) | Conn::Handshake(c, _) | Conn::Open(c, _) => Some(c),
            Conn::Idle | Conn::Backoff => None,
        }
    }

    fn has_room(&self, sh: &Shared, len: usize) -> bool {
        self.queue.is_empty()
            || (self.queue.len() < sh.config.window_msgs
                && self.queued_bytes + len <= sh.config.window_bytes)
    }

    /// Whether a small send would be taken now.
    pub(crate) fn can_send(&self, sh: &Shared) -> bool {
        self.has_room(sh, 1)
    }

    /// Takes one message. `force` skips the window check (returns and forwards, which the
    /// proc cannot make wait). `for_incarnation` ties a return to the incarnation of the
    /// peer that sent the original.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        sh: &mut Shared,
        env: &Envelope,
        force: bool,
        for_incarnation: Option<u64>,
    ) -> Result<(), SendError> {
        if self.closing {
            return Err(SendError::ShuttingDown);
        }
        let max = sh.config.max_frame_len.min(self.peer_max);
        let link = Link {
            sender: &sh.id,
            receiver: &self.peer,
        };
        append_envelope(env, Some(link), max, &mut self.encode_buf).map_err(|e| match e {
            Undeliverable::TooLarge { len, max } => SendError::TooLarge { len, max },
            _ => SendError::ShuttingDown,
        })?;
        let frame = self.encode_buf.split().freeze();
        if !force && !self.has_room(sh, frame.len()) {
            self.blocked = true;
            return Err(SendError::WouldBlock);
        }
        if self.encode_buf.capacity() < 256 {
            self.encode_buf.reserve(16 * 1024);
        }
        if let (Some(want), Some(now_is)) = (for_incarnation, self.peer_incarnation) {
            if want != now_is {
                sh.failed.push((env.clone(), Undeliverable::PeerRestarted));
                return Ok(());
            }
        }
        self.queued_bytes += frame.len();
        self.queue.push_back(Queued {
            frame,
            for_incarnation,
        });
        match self.conn {
            Conn::Open(conn, _) => self.flush(sh, conn),
            Conn::Idle => self.dial(now, sh),
            Conn::Backoff | Conn::Dialing(_) | Conn::Handshake(..) => {}
        }
        Ok(())
    }

    /// Writes every queued frame not yet written on `conn`.
    fn flush(&mut self, sh: &mut Shared, conn: ConnId) {
        let end = self.base + self.queue.len() as u64;
        while self.next_tx < end {
            let frame = &self.queue[(self.next_tx - self.base) as usize].frame;
            sh.out.write_bytes(conn, frame);
            sh.stats.data_frames_sent += 1;
            if self.next_tx < self.ever_tx {
                sh.stats.retransmitted += 1;
            }
            self.next_tx += 1;
        }
        self.high_tx = self.high_tx.max(self.next_tx);
        self.ever_tx = self.ever_tx.max(self.next_tx);
    }

    fn dial(&mut self, now: Instant, sh: &mut Shared) {
        let conn = sh.new_conn();
        sh.dialed.push((conn, self.peer.clone()));
        self.conn = Conn::Dialing(conn);
        self.timers.clear(OutTimer::Backoff);
        self.timers
            .set(OutTimer::Connect, now + sh.config.connect_timeout);
        sh.out.push(Output::Dial {
            conn,
            addr: self.addr.clone(),
        });
    }

    /// The driver connected `conn`.
    pub(crate) fn on_connected(&mut self, sh: &mut Shared, conn: ConnId) {
        if !matches!(self.conn, Conn::Dialing(c) if c == conn) {
            return;
        }
        let hello = Hello {
            from: sh.id.clone(),
            to: self.peer.clone(),
            incarnation: sh.incarnation,
            session: self.session,
            resume: self.resume,
            max_frame_len: sh.config.max_frame_len,
        };
        sh.out.write(conn, &preamble());
        write_postcard(sh, conn, FrameKind::Hello, &hello);
        let dec = FrameDecoder::new(sh.config.max_frame_len, BytesMut::new());
        self.conn = Conn::Handshake(conn, dec);
    }

    /// Bytes arrived on `conn`.
    pub(crate) fn on_bytes(
        &mut self,
        now: Instant,
        sh: &mut Shared,
        conn: ConnId,
        mut bytes: &[u8],
    ) {
        while !bytes.is_empty() {
            let (dec, open) = match &mut self.conn {
                Conn::Handshake(c, d) if *c == conn => (d, false),
                Conn::Open(c, d) if *c == conn => (d, true),
                _ => return,
            };
            let progress = match dec.decode(bytes) {
                Ok(p) => p,
                Err(e) => return self.fail_conn(now, sh, ConnError::Frame(e)),
            };
            bytes = &bytes[progress.consumed..];
            let Some(Item::Frame(header)) = progress.item else {
                if open {
                    self.timers
                        .set(OutTimer::Idle, now + sh.config.idle_timeout);
                }
                continue;
            };
            let body = dec.take_body();
            if open {
                self.timers
                    .set(OutTimer::Idle, now + sh.config.idle_timeout);
            }
            match (header.kind, open) {
                (FrameKind::Welcome, false) => match postcard::from_bytes::<Welcome>(&body) {
                    Ok(w) => self.on_welcome(now, sh, conn, w),
                    Err(_) => self.fail_conn(now, sh, ConnError::Protocol("malformed welcome")),
                },
                (FrameKind::Refuse, false) => match postcard::from_bytes::<RefuseReason>(&body) {
                    Ok(r) => self.on_refuse(now, sh, conn, r),
                    Err(_) => self.fail_conn(now, sh, ConnError::Protocol("malformed refusal")),
                },
                (FrameKind::Ack, true) => match postcard::from_bytes::<u64>(&body) {
                    Ok(n) => self.on_ack(now, sh, n),
                    Err(_) => self.fail_conn(now, sh, ConnError::Protocol("malformed ack")),
                },
                (FrameKind::Ping, true) => append(sh, conn, FrameKind::Pong, &[]),
                (FrameKind::Pong, true) => {}
                _ => self.fail_conn(
                    now,
                    sh,
                    ConnError::Protocol("unexpected frame on dialed link"),
                ),
            }
        }
    }

    fn on_welcome(&mut self, now: Instant, sh: &mut Shared, conn: ConnId, w: Welcome) {
        let restarted = self.peer_incarnation.is_some_and(|i| i != w.incarnation);
        self.peer_incarnation = Some(w.incarnation);
        self.peer_max = w.max_frame_len;
        if restarted {
            sh.out.event(Event::PeerRestarted {
                peer: self.peer.clone(),
            });
            self.return_queued(sh, Undeliverable::PeerRestarted, false);
            return self.restart_session(now, sh, conn);
        }
        let end = self.base + self.queue.len() as u64;
        let next = match w.next {
            Some(n) if n >= self.base && n <= end => n,
            // Forgotten (or a position we cannot have sent): nothing sent is provable.
            _ => {
                self.return_queued(sh, Undeliverable::SessionLost, false);
                return self.restart_session(now, sh, conn);
            }
        };
        self.release(next);
        // The peer is authoritative: what it has not received was not delivered.
        self.high_tx = next;
        self.next_tx = next;
        self.prune_unsent(sh, w.incarnation);
        self.resume = true;
        self.attempt = 0;
        self.timers.clear(OutTimer::Connect);
        self.timers.clear(OutTimer::GiveUp);
        self.timers
            .set(OutTimer::Heartbeat, now + sh.config.heartbeat_interval);
        self.timers
            .set(OutTimer::Idle, now + sh.config.idle_timeout);
        let dec = match core::mem::replace(&mut self.conn, Conn::Idle) {
            Conn::Handshake(_, d) => d,
            _ => FrameDecoder::frames_only(sh.config.max_frame_len, BytesMut::new()),
        };
        self.conn = Conn::Open(conn, dec);
        sh.out.event(Event::PeerConnected {
            peer: self.peer.clone(),
            incarnation: w.incarnation,
        });
        self.flush(sh, conn);
        self.after_release(sh);
    }

    /// Drops what the peer, as it is now, must not get: frames larger than it accepts,
    /// and returns meant for an earlier incarnation. None of them has been received (they
    /// are all past the peer's position), so they leave the sequence without renumbering
    /// anything the peer has seen.
    fn prune_unsent(&mut self, sh: &mut Shared, incarnation: u64) {
        let max = self.peer_max as usize + HEADER_LEN;
        let keep =
            |q: &Queued| q.frame.len() <= max && q.for_incarnation.is_none_or(|i| i == incarnation);
        if self.queue.iter().all(keep) {
            return;
        }
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for q in core::mem::take(&mut self.queue) {
            if keep(&q) {
                kept.push_back(q);
                continue;
            }
            self.queued_bytes -= q.frame.len();
            let reason = if q.frame.len() > max {
                Undeliverable::TooLarge {
                    len: (q.frame.len() - HEADER_LEN) as u32,
                    max: self.peer_max,
                }
            } else {
                Undeliverable::PeerRestarted
            };
            self.return_frame(sh, q.frame, reason);
        }
        self.queue = kept;
    }

    fn on_refuse(&mut self, now: Instant, sh: &mut Shared, conn: ConnId, r: RefuseReason) {
        sh.out.event(Event::ConnectionFailed {
            conn,
            error: ConnError::Refused(r),
        });
        self.return_queued(sh, Undeliverable::Refused(r), true);
        sh.out.push(Output::Close { conn });
        self.new_session(sh);
        self.go_idle();
        self.check_closed(now, sh);
    }

    fn on_ack(&mut self, now: Instant, sh: &mut Shared, n: u64) {
        if n < self.base || n > self.next_tx {
            return self.fail_conn(now, sh, ConnError::Protocol("acknowledgement out of range"));
        }
        self.release(n);
        self.after_release(sh);
        self.check_closed(now, sh);
    }

    fn release(&mut self, upto: u64) {
        while self.base < upto {
            if let Some(q) = self.queue.pop_front() {
                self.queued_bytes -= q.frame.len();
            }
            self.base += 1;
        }
    }

    fn after_release(&mut self, sh: &mut Shared) {
        if self.blocked && self.can_send(sh) {
            self.blocked = false;
            sh.out.event(Event::Writable {
                peer: self.peer.clone(),
            });
        }
    }

    /// Returns queued messages: all of them, or only those ever transmitted.
    fn return_queued(&mut self, sh: &mut Shared, reason: Undeliverable, all: bool) {
        let sent = if all {
            self.queue.len()
        } else {
            (self.high_tx.saturating_sub(self.base) as usize).min(self.queue.len())
        };
        for q in self.queue.drain(..sent).collect::<VecDeque<_>>() {
            self.queued_bytes -= q.frame.len();
            self.return_frame(sh, q.frame, reason);
        }
        self.base += sent as u64;
        self.after_release(sh);
    }

    fn return_frame(&self, sh: &mut Shared, frame: Bytes, reason: Undeliverable) {
        let link = Link {
            sender: &sh.id,
            receiver: &self.peer,
        };
        match decode_envelope(frame.slice(HEADER_LEN..), Some(link)) {
            Ok(env) => sh.failed.push((env, reason)),
            // Our own encoding always decodes; count rather than panic if it ever did not.
            Err(_) => sh.stats.returns_dropped += 1,
        }
    }

    /// Starts a fresh session (new id, sequence from 0) with what is still queued.
    fn new_session(&mut self, sh: &mut Shared) {
        self.session = sh.rng.next_u64();
        self.resume = false;
        self.base = 0;
        self.next_tx = 0;
        self.high_tx = 0;
        self.ever_tx = 0;
    }

    fn restart_session(&mut self, now: Instant, sh: &mut Shared, conn: ConnId) {
        sh.out.push(Output::Close { conn });
        self.new_session(sh);
        self.go_idle();
        if !self.queue.is_empty() {
            self.dial(now, sh);
        }
        self.check_closed(now, sh);
    }

    fn go_idle(&mut self) {
        self.conn = Conn::Idle;
        self.timers.clear(OutTimer::Connect);
        self.timers.clear(OutTimer::Backoff);
        self.timers.clear(OutTimer::Heartbeat);
        self.timers.clear(OutTimer::Idle);
        if self.queue.is_empty() {
            self.timers.clear(OutTimer::GiveUp);
        }
    }

    /// The driver reports `conn` closed (or the dial failed).
    pub(crate) fn on_closed(&mut self, now: Instant, sh: &mut Shared, conn: ConnId) {
        if self.conn() == Some(conn) {
            self.conn_lost(now, sh);
        }
    }

    fn fail_conn(&mut self, now: Instant, sh: &mut Shared, error: ConnError) {
        if let Some(conn) = self.conn() {
            sh.out.event(Event::ConnectionFailed { conn, error });
            sh.out.push(Output::Close { conn });
        }
        self.conn_lost(now, sh);
    }

    fn conn_lost(&mut self, now: Instant, sh: &mut Shared) {
        self.go_idle();
        self.next_tx = self.base;
        if self.queue.is_empty() && !self.closing {
            return;
        }
        if self.queue.is_empty() {
            return self.check_closed(now, sh);
        }
        if !self.timers.is_set(OutTimer::GiveUp) {
            self.timers
                .set(OutTimer::GiveUp, now + sh.config.unreachable_timeout);
        }
        let delay = crate::config::backoff_delay(&sh.config, self.attempt, sh.rng.next_u64());
        self.attempt = self.attempt.saturating_add(1);
        self.conn = Conn::Backoff;
        self.timers.set(OutTimer::Backoff, now + delay);
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, sh: &mut Shared) {
        while let Some(t) = self.timers.expired(now) {
            match t {
                OutTimer::Connect => self.fail_conn(now, sh, ConnError::HandshakeTimeout),
                OutTimer::Backoff => {
                    if matches!(self.conn, Conn::Backoff) {
                        self.dial(now, sh);
                    }
                }
                OutTimer::Heartbeat => {
                    if let Conn::Open(conn, _) = self.conn {
                        append(sh, conn, FrameKind::Ping, &[]);
                        self.timers
                            .set(OutTimer::Heartbeat, now + sh.config.heartbeat_interval);
                    }
                }
                OutTimer::Idle => self.fail_conn(now, sh, ConnError::IdleTimeout),
                OutTimer::GiveUp => self.give_up(now, sh, Undeliverable::Unreachable),
                OutTimer::Shutdown => self.give_up(now, sh, Undeliverable::ShuttingDown),
            }
        }
    }

    /// Returns everything queued and drops the connection attempt or connection: what was
    /// transmitted comes back as `Unconfirmed` (the peer may have it), the rest with
    /// `reason`, which then is definite.
    fn give_up(&mut self, now: Instant, sh: &mut Shared, reason: Undeliverable) {
        if matches!(self.conn, Conn::Open(..)) && reason == Undeliverable::Unreachable {
            // Connected again by now; the timer is stale.
            return;
        }
        self.return_queued(sh, Undeliverable::Unconfirmed, false);
        self.return_queued(sh, reason, true);
        if let Some(conn) = self.conn() {
            if !matches!(self.conn, Conn::Open(..)) {
                sh.out.push(Output::Close { conn });
                self.go_idle();
            }
        } else {
            self.go_idle();
        }
        self.new_session(sh);
        self.check_closed(now, sh);
    }

    /// Graceful close: flush, wait for acknowledgements (up to the shutdown timeout), then
    /// say goodbye and close.
    pub(crate) fn shutdown(&mut self, now: Instant, sh: &mut Shared) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.timers
            .set(OutTimer::Shutdown, now + sh.config.shutdown_timeout);
        self.check_closed(now, sh);
    }

    fn check_closed(&mut self, _now: Instant, sh: &mut Shared) {
        if !self.closing || self.closed || !self.queue.is_empty() {
            return;
        }
        if let Some(conn) = self.conn() {
            if let Conn::Open(..) = self.conn {
                append(sh, conn, FrameKind::Close, &[]);
            }
            sh.out.push(Output::Close { conn });
        }
        self.conn = Conn::Idle;
        self.timers.clear_all();
        self.closed = true;
    }
}

/// Appends one frame with a raw body.
pub(crate) fn append(sh: &mut Shared, conn: ConnId, kind: FrameKind, body: &[u8]) {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + body.len());
    // Control frames are tiny; they cannot exceed the u32 length.
    if append_frame(kind, 0, &[body], &mut buf).is_ok() {
        sh.out.write(conn, &buf);
    }
}

/// Appends one frame whose body is `value` in postcard.
pub(crate) fn write_postcard<T: serde::Serialize>(
    sh: &mut Shared,
    conn: ConnId,
    kind: FrameKind,
    value: &T,
) {
    if let Ok(body) = postcard::to_allocvec(value) {
        append(sh, conn, kind, &body);
    }
}
