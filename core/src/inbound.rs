//! The inbound half of a reliable link: what one proc receives from one dialing peer in
//! one session.
//!
//! It counts received messages (the next sequence number expected), acknowledges them
//! cumulatively and coalesced (after `ack_every_msgs` messages or `ack_every_bytes` bytes,
//! `ack_delay` after the first unacknowledged one, and at once when the dialer pings), and
//! answers pings. It also sends a keepalive every `heartbeat_interval` of its own accord:
//! the dialer's pings can sit behind a large frame of its own, and liveness must not
//! depend on message size. Its position survives connection loss for `session_retention`, so the
//! dialer can resume exactly where delivery stopped. Routing what it receives is the
//! proc's job.

use alloc::vec::Vec;

use bytes::BytesMut;

use crate::envelope::{decode_envelope, Envelope, Link};
use crate::frame::{FrameDecoder, FrameKind, Item, Welcome};
use crate::id::ProcId;
use crate::output::{ConnError, ConnId, Event, Output};
use crate::proc::Shared;
use crate::session::{append, write_postcard};
use crate::time::Instant;
use crate::timer::{timer_keys, Timers};

timer_keys! {
    /// Deadlines of an inbound session.
    pub(crate) enum InTimer {
        /// Send a coalesced acknowledgement.
        Ack,
        /// Nothing heard from the dialer for too long.
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
    next: u64,
    acked: u64,
    unacked_bytes: usize,
    conn: Option<(ConnId, FrameDecoder<BytesMut>)>,
    timers: Timers<InTimer, 4>,
}

impl Inbound {
    pub(crate) fn new(peer: ProcId, incarnation: u64) -> Self {
        Inbound {
            peer,
            incarnation,
            next: 0,
            acked: 0,
            unacked_bytes: 0,
            conn: None,
            timers: Timers::default(),
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

    /// Binds a freshly handshaken connection (closing any older one: its unread bytes must
    /// not be delivered after the resume point) and welcomes the dialer.
    pub(crate) fn attach(
        &mut self,
        now: Instant,
        sh: &mut Shared,
        conn: ConnId,
        decoder: FrameDecoder<BytesMut>,
    ) {
        if let Some((old, _)) = self.conn.take() {
            sh.out.push(Output::Close { conn: old });
        }
        let welcome = Welcome {
            incarnation: sh.incarnation,
            next: Some(self.next),
            max_frame_len: sh.config.max_frame_len,
        };
        write_postcard(sh, conn, FrameKind::Welcome, &welcome);
        self.acked = self.next;
        self.unacked_bytes = 0;
        self.conn = Some((conn, decoder));
        self.timers.clear(InTimer::Retention);
        self.timers.clear(InTimer::Ack);
        self.timers.set(InTimer::Idle, now + sh.config.idle_timeout);
        self.timers
            .set(InTimer::Heartbeat, now + sh.config.heartbeat_interval);
    }

    /// Bytes arrived on `conn`; decoded envelopes are pushed to `received`.
    pub(crate) fn on_bytes(
        &mut self,
        now: Instant,
        sh: &mut Shared,
        conn: ConnId,
        mut bytes: &[u8],
        received: &mut Vec<Envelope>,
    ) -> Fate {
        let mut ping = false;
        while !bytes.is_empty() {
            let dec = match &mut self.conn {
                Some((c, d)) if *c == conn => d,
                _ => return Fate::Live,
            };
            let progress = match dec.decode(bytes) {
                Ok(p) => p,
                Err(e) => {
                    self.fail_conn(now, sh, ConnError::Frame(e));
                    return Fate::Live;
                }
            };
            bytes = &bytes[progress.consumed..];
            let header = match progress.item {
                Some(Item::Frame(h)) => h,
                Some(Item::Preamble { .. }) | None => continue,
            };
            let body = dec.take_body();
            match header.kind {
                FrameKind::Data => {
                    let link = Link {
                        sender: &self.peer,
                        receiver: &sh.id,
                    };
                    let len = body.len();
                    match decode_envelope(body, Some(link)) {
                        Ok(env) => {
                            self.next += 1;
                            self.unacked_bytes += len;
                            received.push(env);
                        }
                        Err(e) => {
                            self.fail_conn(now, sh, ConnError::Envelope(e));
                            return Fate::Live;
                        }
                    }
                }
                FrameKind::Ping => ping = true,
                FrameKind::Pong => {}
                FrameKind::Close => {
                    self.ack(sh);
                    if let Some((c, _)) = self.conn.take() {
                        sh.out.push(Output::Close { conn: c });
                    }
                    return Fate::Ended;
                }
                _ => {
                    self.fail_conn(
                        now,
                        sh,
                        ConnError::Protocol("unexpected frame on accepted link"),
                    );
                    return Fate::Live;
                }
            }
        }
        self.timers.set(InTimer::Idle, now + sh.config.idle_timeout);
        let pending = self.next - self.acked;
        if ping
            || pending >= sh.config.ack_every_msgs
            || self.unacked_bytes >= sh.config.ack_every_bytes
        {
            self.ack(sh);
        } else if pending > 0 && !self.timers.is_set(InTimer::Ack) {
            self.timers.set(InTimer::Ack, now + sh.config.ack_delay);
        }
        if ping {
            if let Some((c, _)) = &self.conn {
                append(sh, *c, FrameKind::Pong, &[]);
            }
        }
        Fate::Live
    }

    fn ack(&mut self, sh: &mut Shared) {
        self.timers.clear(InTimer::Ack);
        if self.next == self.acked {
            return;
        }
        if let Some((c, _)) = &self.conn {
            let c = *c;
            write_postcard(sh, c, FrameKind::Ack, &self.next);
            sh.stats.acks_sent += 1;
            self.acked = self.next;
            self.unacked_bytes = 0;
        }
    }

    fn fail_conn(&mut self, now: Instant, sh: &mut Shared, error: ConnError) {
        if let Some((conn, _)) = self.conn.take() {
            sh.out.event(Event::ConnectionFailed { conn, error });
            sh.out.push(Output::Close { conn });
        }
        self.detached(now, sh);
    }

    /// The driver reports `conn` closed.
    pub(crate) fn on_closed(&mut self, now: Instant, sh: &mut Shared, conn: ConnId) {
        if self.conn() == Some(conn) {
            self.conn = None;
            self.detached(now, sh);
        }
    }

    fn detached(&mut self, now: Instant, sh: &mut Shared) {
        self.timers.clear(InTimer::Ack);
        self.timers.clear(InTimer::Idle);
        self.timers.clear(InTimer::Heartbeat);
        self.timers
            .set(InTimer::Retention, now + sh.config.session_retention);
    }

    /// Closes the connection without forgetting the position (shutdown).
    pub(crate) fn close_conn(&mut self, now: Instant, sh: &mut Shared) {
        self.ack(sh);
        if let Some((conn, _)) = self.conn.take() {
            sh.out.push(Output::Close { conn });
        }
        self.detached(now, sh);
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, sh: &mut Shared) -> Fate {
        while let Some(t) = self.timers.expired(now) {
            match t {
                InTimer::Ack => self.ack(sh),
                InTimer::Idle => self.fail_conn(now, sh, ConnError::IdleTimeout),
                InTimer::Heartbeat => {
                    if let Some((c, _)) = &self.conn {
                        append(sh, *c, FrameKind::Pong, &[]);
                        self.timers
                            .set(InTimer::Heartbeat, now + sh.config.heartbeat_interval);
                    }
                }
                InTimer::Retention => return Fate::Ended,
            }
        }
        Fate::Live
    }
}
