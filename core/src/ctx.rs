//! What every machine of a proc shares: identity, config, the output queue, randomness,
//! counters, and what sessions hand back to the proc. A named type with methods, so the
//! session machines depend on it and not on the proc machine that owns them.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;

use crate::auth::Nonce;
use crate::config::Config;
use crate::envelope::{Envelope, Undeliverable};
use crate::frame::{FrameDecoder, FrameHeader, FrameKind, RecycledBody, RefuseReason, HEADER_LEN};
use crate::id::ProcId;
use crate::idcache::IdSpares;
use crate::output::{ConnError, ConnId, Event, Output, Outputs};
use crate::registry::{Admit, LocalPort, Registry};

/// Why a send was not accepted. Nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    SenderNotLive,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max}")
            }
            SendError::WouldBlock => f.write_str("link window full; try again when writable"),
            SendError::ShuttingDown => f.write_str("proc is shutting down"),
            SendError::SenderNotLive => f.write_str("sender is not a live actor of this proc"),
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
    /// Data frames encoded. Each accepted remote message is encoded once; a retransmission
    /// slices what is stored and adds nothing here.
    pub frames_encoded: u64,
    /// Data frames handed to the driver (including retransmissions).
    pub data_frames_sent: u64,
    /// Data frames handed out again after a reconnect.
    pub retransmitted: u64,
    /// Acknowledgement frames written.
    pub acks_sent: u64,
    /// Connections closed for a protocol or framing error.
    pub conn_errors: u64,
    /// Inbound connections this proc refused, per reason (every `Event::Refused`).
    pub refused: RefusedCounts,
    /// Retained disconnected inbound sessions evicted to make room for a new dialer.
    pub sessions_evicted: u64,
    /// Outbound sessions opened over a connection the peer dialed instead of dialing one
    /// (two-way links, `Config::two_way`), counting reopenings after a loss.
    pub shared_opens: u64,
}

/// Refusals per [`RefuseReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusedCounts {
    counts: [u64; RefuseReason::ALL.len()],
}

impl RefusedCounts {
    /// Refusals for `reason` (any `UnsupportedVersion` counts as one reason).
    pub fn get(&self, reason: RefuseReason) -> u64 {
        self.counts[reason.index()]
    }

    /// Refusals of every reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn bump(&mut self, reason: RefuseReason) {
        let c = &mut self.counts[reason.index()];
        *c = c.saturating_add(1);
    }
}

/// Where a session half gets its frames from. A connection carries one session each way at
/// most (a two-way link, see `proc`): the half that owns the connection (the outbound
/// session that dialed it, or the inbound session of the dialer on the accepting side)
/// decodes every frame and hands the other half's frames over ([`Ctx::hand_over`]).
#[derive(Debug)]
pub(crate) enum Rx {
    /// This half owns the connection and decodes its bytes.
    Own(FrameDecoder<RecycledBody>),
    /// The other half owns the connection; this one is handed its frames. Ending this half
    /// does not close the connection.
    Shared,
}

/// A small deterministic generator (SplitMix64) over the seed the driver passes in: core
/// draws no randomness of its own.
#[derive(Clone, Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The shared context of one proc's machines.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) id: ProcId,
    pub(crate) incarnation: u64,
    pub(crate) config: Config,
    pub(crate) out: Outputs,
    pub(crate) rng: Rng,
    pub(crate) stats: Stats,
    /// Ids of delivered envelopes the driver handed back, for the next deliveries.
    pub(crate) spare_ids: IdSpares,
    /// Messages a session gave up on, with why; the proc routes them back.
    failed: Vec<(Envelope, Undeliverable)>,
    /// Connections sessions dialed (or took over, see [`Ctx::shareable`]) since the proc
    /// last took them, with the session's slot.
    dialed: Vec<(ConnId, usize, bool)>,
    /// Frames the half that owns a connection decoded for the other half, in order.
    handed: Vec<(ConnId, FrameKind, Bytes)>,
    /// Accepted connections whose dialer's session is open, by dialer: an outbound
    /// session to that proc opens over one of them instead of dialing (`Config::two_way`).
    shareable: BTreeMap<ProcId, ConnId>,
    next_conn: u64,
    /// Nonces drawn so far (part of each nonce's input, so none repeats).
    nonces: u64,
}

impl Ctx {
    /// How this proc's registry takes a received or sent `env`: `None` when it is not for a
    /// port of this proc (a return or a forward, which routing decides); otherwise
    /// whether the port takes it now, is full, or refuses it (see `Registry::admit`: only
    /// placing it changes anything).
    #[inline]
    pub(crate) fn admit(&self, reg: &mut Registry, env: &Envelope) -> Option<Admit> {
        if env.returned.is_some() || env.dest.actor().proc() != &self.id {
            return None;
        }
        let limits = self.config.port_limits();
        Some(reg.admit(&env.dest, env.payload.len(), env.fingerprint, limits))
    }

    /// Queues `env`, which the registry placed in `port`, for the driver.
    #[inline]
    pub(crate) fn deliver(&mut self, port: LocalPort, env: Envelope) {
        self.stats.delivered += 1;
        self.out.deliver(port, env);
    }

    pub(crate) fn new(id: ProcId, config: Config, incarnation: u64, seed: u64) -> Self {
        Ctx {
            out: Outputs::new(config.coalesce_bytes, config.spare_buffers),
            spare_ids: IdSpares::new(config.recycled_ids),
            id,
            incarnation,
            config,
            rng: Rng(seed),
            stats: Stats::default(),
            failed: Vec::new(),
            dialed: Vec::new(),
            handed: Vec::new(),
            shareable: BTreeMap::new(),
            next_conn: 0,
            nonces: 0,
        }
    }

    pub(crate) fn new_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// A session in slot `slot` asks the driver to dial `conn`.
    pub(crate) fn dial(&mut self, slot: usize, conn: ConnId, addr: crate::id::ChannelAddr) {
        self.dialed.push((conn, slot, false));
        self.out.push(Output::Dial {
            conn,
            addr: alloc::boxed::Box::new(addr),
        });
    }

    /// The accepted connection an outbound session to `peer` may open over instead of
    /// dialing, if any.
    pub(crate) fn shareable(&self, peer: &ProcId) -> Option<ConnId> {
        if !self.config.two_way {
            return None;
        }
        self.shared_with(peer)
    }

    /// `conn`, accepted from `peer`, carries `peer`'s open session: answer over it.
    pub(crate) fn make_shareable(&mut self, peer: ProcId, conn: ConnId) {
        self.shareable.insert(peer, conn);
    }

    /// `conn` is no longer one to answer `peer` over (if it was).
    pub(crate) fn unshare(&mut self, peer: &ProcId, conn: ConnId) {
        if self.shareable.get(peer) == Some(&conn) {
            self.shareable.remove(peer);
        }
    }

    /// The accepted connection listed for `peer`, whatever `Config::two_way` says.
    pub(crate) fn shared_with(&self, peer: &ProcId) -> Option<ConnId> {
        self.shareable.get(peer).copied()
    }

    /// The outbound session in slot `slot` opens over the accepted connection `conn`.
    pub(crate) fn share(&mut self, slot: usize, conn: ConnId) {
        self.dialed.push((conn, slot, true));
    }

    /// The half that owns `conn` decoded a frame for the other half.
    pub(crate) fn hand_over(&mut self, conn: ConnId, kind: FrameKind, body: Bytes) {
        self.handed.push((conn, kind, body));
    }

    /// The frames handed over since the last call, oldest first.
    pub(crate) fn take_handed(&mut self) -> Option<Vec<(ConnId, FrameKind, Bytes)>> {
        if self.handed.is_empty() {
            return None;
        }
        Some(core::mem::take(&mut self.handed))
    }

    /// Gives the list back for its capacity.
    pub(crate) fn reuse_handed(&mut self, mut list: Vec<(ConnId, FrameKind, Bytes)>) {
        if self.handed.is_empty() {
            list.clear();
            self.handed = list;
        }
    }

    /// Dials since the last call, for the proc to bind the connections to their sessions
    /// (`true`: an accepted connection taken over, see [`Ctx::share`]).
    pub(crate) fn take_dialed(&mut self) -> Option<(ConnId, usize, bool)> {
        self.dialed.pop()
    }

    /// A message goes back to its sender with `reason`.
    pub(crate) fn fail(&mut self, env: Envelope, reason: Undeliverable) {
        self.failed.push((env, reason));
    }

    /// Everything handed back since the last call.
    pub(crate) fn take_failed(&mut self) -> Vec<(Envelope, Undeliverable)> {
        core::mem::take(&mut self.failed)
    }

    pub(crate) fn has_dialed(&self) -> bool {
        !self.dialed.is_empty()
    }

    pub(crate) fn has_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// A fresh handshake nonce; `None` without a cookie.
    pub(crate) fn nonce(&mut self) -> Option<Nonce> {
        let cookie = self.config.cookie.as_ref()?;
        let counter = self.nonces;
        self.nonces += 1;
        crate::auth::nonce(cookie, self.incarnation, counter, self.rng.next_u64())
    }

    /// Counts and reports a refusal of inbound `conn` (the caller writes the refusal, if
    /// any, and closes).
    pub(crate) fn refused(&mut self, conn: ConnId, reason: RefuseReason) {
        self.stats.refused.bump(reason);
        self.out.event(Event::Refused { conn, reason });
    }

    pub(crate) fn event(&mut self, e: Event) {
        self.out.event(e);
    }

    /// Closes `conn` after what was queued for it; the proc forgets it.
    pub(crate) fn close(&mut self, conn: ConnId) {
        self.out.push(Output::Close { conn });
    }

    /// Reports `error` on `conn` and closes it.
    pub(crate) fn fail_conn(&mut self, conn: ConnId, error: ConnError) {
        if self.out.is_closing(conn) {
            // Failed and closed already in this input (by the other session of a two-way
            // connection): reported once.
            return;
        }
        if error.is_peer_fault() {
            self.stats.conn_errors += 1;
        }
        self.out.event(Event::ConnectionFailed { conn, error });
        self.close(conn);
    }

    /// Queues one control frame with a raw body for `conn`.
    pub(crate) fn write_frame(&mut self, conn: ConnId, kind: FrameKind, body: &[u8]) {
        let Ok(len) = u32::try_from(body.len()) else {
            return self.fail_conn(conn, ConnError::Encode);
        };
        let mut h = [0u8; HEADER_LEN];
        FrameHeader {
            kind,
            flags: 0,
            len,
        }
        .write(&mut h);
        self.out.write(conn, &[&h, body]);
    }

    /// Queues one control frame whose body is `value` in postcard. A value that does not
    /// serialize fails the connection with [`ConnError::Encode`]: never a skipped write.
    pub(crate) fn write_postcard<T: serde::Serialize>(
        &mut self,
        conn: ConnId,
        kind: FrameKind,
        value: &T,
    ) -> Result<(), ConnError> {
        let mut stack = [0u8; 1024];
        match postcard::to_slice(value, &mut stack) {
            Ok(body) => {
                let body: &[u8] = body;
                self.write_frame(conn, kind, body);
                Ok(())
            }
            Err(_) => {
                self.fail_conn(conn, ConnError::Encode);
                Err(ConnError::Encode)
            }
        }
    }
}
