//! What the proc machine asks its driver to do, and the queue that coalesces writes.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use bytes::{Bytes, BytesMut};

use crate::envelope::{EnvelopeError, RefuseReason, Undeliverable};
use crate::frame::{FrameError, FrameKind};
use crate::id::{ActorId, ChannelAddr, PortId, ProcId};
use crate::registry::LocalPort;

/// A connection, as named between the proc machine and its driver. Small and `Copy`; the
/// driver owns the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// One action for the driver. Drain with `poll_output` until `None`.
///
/// Envelopes travel by value: each output is moved once, and boxing would cost an
/// allocation per message.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum Output {
    /// Place `env` into the queue of the local port `env.dest`, which `port` names (see
    /// [`LocalPort`]: compare the whole handle, so a delivery for a port closed since
    /// never reaches a later one). The registry has accepted it (a once-port is already
    /// retired); if the driver finds the receiver gone it hands the envelope back with
    /// `handle_undeliverable`. It counts against the port's queue limits until the driver
    /// reports it taken with `handle_consumed(port, ..)`.
    Deliver {
        /// The destination port's handle.
        port: LocalPort,
        /// The message.
        env: crate::envelope::Envelope,
    },
    /// A message coming back to its local sender `env.sender`; `env.returned` holds why.
    Returned(crate::envelope::Envelope),
    /// Open a connection to `addr`, then report `handle_connected(conn)` or
    /// `handle_closed(conn)`.
    Dial {
        /// The handle the proc will use for it.
        conn: ConnId,
        /// Where to connect (boxed, like the large parts of [`Event`]s, so that an
        /// `Output` stays small: one is moved for every delivered message).
        addr: alloc::boxed::Box<ChannelAddr>,
    },
    /// Write all of `data` to `conn`, after earlier transmits on it.
    Transmit {
        /// The connection.
        conn: ConnId,
        /// The bytes, often many frames coalesced.
        data: Bytes,
    },
    /// Flush what was transmitted on `conn`, then close it. The proc has forgotten it:
    /// no `handle_closed` is needed.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Something the driver may want to act on or log.
    Event(Event),
}

/// Notable things that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // rare, moved once
#[non_exhaustive]
pub enum Event {
    /// The link to `peer` has window room again after a send was refused with `WouldBlock`.
    Writable {
        /// The peer proc.
        peer: ProcId,
    },
    /// A session with `peer` is (re)established.
    PeerConnected {
        /// The peer proc.
        peer: ProcId,
        /// Its incarnation.
        incarnation: u64,
        /// The connection it runs over: one this proc dialed, or, on a two-way link
        /// (`Config::two_way`), one the peer dialed.
        conn: ConnId,
    },
    /// `peer` restarted; what was in flight to its old incarnation has been returned.
    PeerRestarted {
        /// The peer proc.
        peer: ProcId,
        /// The incarnation this proc knew.
        previous: u64,
        /// The incarnation that answered now.
        incarnation: u64,
    },
    /// This proc refused inbound `conn` (and closed it): a refusal frame was sent with
    /// `reason`, or, for the local-only reasons (too many connections, an evicted
    /// handshake), the connection was closed without a word. Counted in
    /// `Stats::refused`. Not also reported as `ConnectionFailed`.
    Refused {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: RefuseReason,
    },
    /// A connection was closed because of an error.
    ConnectionFailed {
        /// The connection.
        conn: ConnId,
        /// Why.
        error: ConnError,
    },
    /// A returned message could not reach its sender either. It is counted and dropped,
    /// never bounced again.
    ReturnDropped {
        /// The original sender, which is gone.
        sender: ActorId,
        /// Where the message was going.
        dest: PortId,
        /// Why it was returned in the first place.
        reason: Undeliverable,
        /// The message itself.
        payload: Bytes,
    },
    /// A dial to `peer` failed (reported at once by the driver with
    /// `Proc::handle_dial_failed`); the session retries under its backoff and gives up
    /// after `unreachable_timeout`.
    DialFailed {
        /// The peer proc.
        peer: ProcId,
        /// Where it was dialed.
        addr: alloc::boxed::Box<ChannelAddr>,
        /// What the driver's OS said.
        error: alloc::boxed::Box<DialError>,
        /// Failed attempts in a row, this one included.
        attempts: u32,
    },
    /// The session to `peer` gave up: what it held comes back (`Unreachable` if never
    /// sent, `Unconfirmed` if sent), and `last_error` says why the last dial failed, if one
    /// did.
    Unreachable {
        /// The peer proc.
        peer: ProcId,
        /// The last dial error since the session last connected.
        last_error: Option<alloc::boxed::Box<DialError>>,
    },
    /// `handle_shutdown` has finished: everything was delivered or returned.
    ShutdownComplete,
    /// A session that `peer` dialed to this proc got a connection (`connected`: its hello
    /// was accepted) or lost it (the connection failed or was closed, by either side, or
    /// the session ended). Sessions this proc dials are reported by `PeerConnected`.
    #[non_exhaustive]
    InboundSession {
        /// The dialing proc.
        peer: ProcId,
        /// Its incarnation.
        incarnation: u64,
        /// Whether the session has a connection now.
        connected: bool,
    },
}

/// What kind of failure a dial met, as the driver's OS reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialErrorKind {
    /// Nothing listens there (`ECONNREFUSED`, or a Unix socket path with no listener).
    Refused,
    /// The address does not exist (a Unix path or abstract name with no socket, an unknown
    /// host name).
    NotFound,
    /// No route to the host or network, or the network is down.
    Unreachable,
    /// The dial did not complete within `connect_timeout`.
    TimedOut,
    /// Permission denied.
    Denied,
    /// Anything else.
    Other,
}

/// Why a dial failed: a kind to act on and the OS's own words, bounded in length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialError {
    /// The kind.
    pub kind: DialErrorKind,
    /// The OS error text, cut to 96 bytes.
    pub message: heapless::String<96>,
}

impl DialError {
    /// A dial error of `kind` with `message` (cut at a character boundary to fit).
    pub fn new(kind: DialErrorKind, message: &str) -> Self {
        let mut m = heapless::String::new();
        for c in message.chars() {
            if m.push(c).is_err() {
                break;
            }
        }
        DialError { kind, message: m }
    }
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DialErrorKind::Refused => "refused",
            DialErrorKind::NotFound => "not found",
            DialErrorKind::Unreachable => "unreachable",
            DialErrorKind::TimedOut => "timed out",
            DialErrorKind::Denied => "permission denied",
            DialErrorKind::Other => "failed",
        };
        write!(f, "dial {kind}: {}", self.message)
    }
}

/// Why a connection was closed by the proc.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnError {
    /// The peer's bytes do not frame.
    Frame(FrameError),
    /// A data frame does not hold an envelope.
    Envelope(EnvelopeError),
    /// A frame that makes no sense at this point of the protocol.
    Protocol(Violation),
    /// A control frame of ours could not be encoded (not the peer's fault).
    Encode,
    /// The peer refused the session.
    Refused(RefuseReason),
    /// The peer did not prove it holds our cookie.
    Auth(crate::auth::AuthError),
    /// The connection or its handshake did not complete in time.
    HandshakeTimeout,
    /// Nothing was heard from the peer for the idle timeout.
    IdleTimeout,
    /// The peer sent more than this side holds for a link while a destination port is
    /// full (`Config::link_held_msgs` / `link_held_bytes`). Nothing is lost: the session
    /// stays, and the peer resumes from the first message not delivered.
    Overrun,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Frame(e) => write!(f, "framing error: {e}"),
            ConnError::Envelope(e) => write!(f, "bad envelope: {e}"),
            ConnError::Protocol(what) => write!(f, "protocol violation: {what}"),
            ConnError::Encode => f.write_str("could not encode a control frame"),
            ConnError::Refused(r) => write!(f, "session refused: {r}"),
            ConnError::Auth(e) => write!(f, "authentication failed: {e}"),
            ConnError::HandshakeTimeout => f.write_str("handshake timed out"),
            ConnError::IdleTimeout => f.write_str("peer silent for the idle timeout"),
            ConnError::Overrun => {
                f.write_str("peer sent more than the link holds while a destination is full")
            }
        }
    }
}

impl core::error::Error for ConnError {}

impl ConnError {
    /// Whether the peer's bytes caused it (counted in `Stats::conn_errors`).
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            ConnError::Frame(_)
                | ConnError::Envelope(_)
                | ConnError::Protocol(_)
                | ConnError::Auth(_)
        )
    }
}

/// A protocol rule the peer broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The first frame on an accepted connection was not a hello.
    ExpectedHello(FrameKind),
    /// A welcome that does not decode.
    MalformedWelcome,
    /// A refusal that does not decode.
    MalformedRefusal,
    /// An acknowledgement that does not decode.
    MalformedAck,
    /// A frame kind that has no meaning on this side of a link, or at this point.
    UnexpectedFrame {
        /// What arrived.
        kind: FrameKind,
        /// True on a connection this proc dialed.
        dialed: bool,
    },
    /// An acknowledgement of messages never sent, or of ones acknowledged already.
    AckOutOfRange {
        /// What the peer acknowledged (one past its last received message).
        ack: u64,
        /// First unacknowledged sequence number.
        base: u64,
        /// One past the last sequence number sent.
        sent: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::ExpectedHello(k) => write!(f, "expected a hello, got {k:?}"),
            Violation::MalformedWelcome => f.write_str("malformed welcome"),
            Violation::MalformedRefusal => f.write_str("malformed refusal"),
            Violation::MalformedAck => f.write_str("malformed acknowledgement"),
            Violation::UnexpectedFrame { kind, dialed } => {
                let side = if *dialed { "dialed" } else { "accepted" };
                write!(f, "unexpected {kind:?} frame on a {side} link")
            }
            Violation::AckOutOfRange { ack, base, sent } => write!(
                f,
                "acknowledgement {ack} outside the unacknowledged range {base}..={sent}"
            ),
        }
    }
}

/// What [`Outputs::pop`] yields: an output, or a connection whose data the proc must pull
/// from its session now (so that bytes are handed out where they sit in the order).
#[derive(Debug)]
pub(crate) enum Popped {
    Output(Queued),
    Pull(ConnId),
}

/// An output as it waits in the queue: the frequent ones held directly, the rare ones
/// boxed, so that moving one through the queue costs a fraction of an [`Output`] (whose
/// largest variants, with addresses and error texts, are 256 bytes).
#[derive(Debug)]
pub(crate) enum Queued {
    Deliver(LocalPort, crate::envelope::Envelope),
    Returned(crate::envelope::Envelope),
    Transmit { conn: ConnId, data: Bytes },
    Close(ConnId),
    Writable(ProcId),
    Other(alloc::boxed::Box<Output>),
}

impl Queued {
    fn new(o: Output) -> Self {
        match o {
            Output::Deliver { port, env } => Queued::Deliver(port, env),
            Output::Returned(env) => Queued::Returned(env),
            Output::Transmit { conn, data } => Queued::Transmit { conn, data },
            Output::Close { conn } => Queued::Close(conn),
            Output::Event(Event::Writable { peer }) => Queued::Writable(peer),
            other => Queued::Other(alloc::boxed::Box::new(other)),
        }
    }

    /// The output for the driver.
    #[inline]
    pub(crate) fn into_output(self) -> Output {
        match self {
            Queued::Deliver(port, env) => Output::Deliver { port, env },
            Queued::Returned(env) => Output::Returned(env),
            Queued::Transmit { conn, data } => Output::Transmit { conn, data },
            Queued::Close(conn) => Output::Close { conn },
            Queued::Writable(peer) => Output::Event(Event::Writable { peer }),
            Queued::Other(o) => *o,
        }
    }
}

/// The output queue. Control frames for a connection are appended to that connection's
/// newest queued transmit while it is below `coalesce` bytes, so they leave in one write;
/// data frames stay in their session's chunk store and are pulled when their marker is
/// popped.
///
/// A transmit of control frames is built in a buffer of [`CTL_BLOCK`] bytes and handed
/// out as a slice of it; the buffer's handle then goes back to a free list (at most
/// `spare_buffers` handles) and the next transmit is built in the rest of the block, or in
/// the whole block again once every transmit cut from it has been dropped. So
/// acknowledgements and pings allocate nothing while the driver drops what it wrote.
#[derive(Debug)]
pub(crate) struct Outputs {
    queue: VecDeque<Slot>,
    /// Number of entries ever popped, to turn absolute positions into queue indices.
    popped: u64,
    /// Absolute position of the open (appendable) transmit of each connection; a proc
    /// writes to a handful of connections at a time, so a short list beats a map.
    open: Vec<(ConnId, u64)>,
    /// Handles of blocks whose transmits were handed out, most recent last.
    free: Vec<BytesMut>,
    spares: usize,
    /// Connections with a pull marker queued and not yet popped.
    pulls: Vec<ConnId>,
    coalesce: usize,
    /// Connections closed since the last `take_closed`.
    closed: Vec<ConnId>,
}

/// Blocks of control-frame buffers: many acknowledgements and pings share one.
const CTL_BLOCK: usize = 4 * 1024;

#[derive(Debug)]
enum Slot {
    Ready(Queued),
    Building {
        conn: ConnId,
        buf: BytesMut,
    },
    Pull(ConnId),
    /// Writes for a connection the driver reported closed: skipped.
    Dropped,
}

impl Outputs {
    pub(crate) fn new(coalesce: usize, spares: usize) -> Self {
        Outputs {
            queue: VecDeque::new(),
            popped: 0,
            open: Vec::new(),
            free: Vec::with_capacity(spares),
            spares,
            pulls: Vec::new(),
            coalesce,
            closed: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn push(&mut self, o: Output) {
        if let Output::Close { conn } = o {
            if self.is_closing(conn) {
                return;
            }
            self.close_open(conn);
            self.closed.push(conn);
        }
        self.queue.push_back(Slot::Ready(Queued::new(o)));
    }

    /// Queues [`Output::Deliver`].
    #[inline]
    pub(crate) fn deliver(&mut self, port: LocalPort, env: crate::envelope::Envelope) {
        self.queue
            .push_back(Slot::Ready(Queued::Deliver(port, env)));
    }

    /// Moves the deliveries to `port` at the front of the queue into `out`, in order,
    /// up to the first other output; how many.
    pub(crate) fn pop_deliveries(
        &mut self,
        port: LocalPort,
        out: &mut VecDeque<crate::envelope::Envelope>,
    ) -> usize {
        let mut n = 0;
        loop {
            match self.queue.front() {
                Some(Slot::Ready(Queued::Deliver(p, _))) if *p == port => {}
                Some(Slot::Dropped) => {}
                _ => return n,
            }
            self.popped += 1;
            if let Some(Slot::Ready(Queued::Deliver(_, env))) = self.queue.pop_front() {
                out.push_back(env);
                n += 1;
            }
        }
    }

    /// Queues [`Output::Returned`].
    pub(crate) fn returned(&mut self, env: crate::envelope::Envelope) {
        self.queue.push_back(Slot::Ready(Queued::Returned(env)));
    }

    /// Whether a connection was closed since the last `take_closed`.
    pub(crate) fn has_closed(&self) -> bool {
        !self.closed.is_empty()
    }

    /// Whether `conn` was closed since the last `take_closed`. Until the proc takes the
    /// close, a second close of it, and writes and pulls for it, are dropped: the two
    /// sessions of a two-way connection may both end it in one input, and nothing is
    /// written after a close.
    #[inline]
    pub(crate) fn is_closing(&self, conn: ConnId) -> bool {
        !self.closed.is_empty() && self.closed.contains(&conn)
    }

    /// The next closed connection since the last call.
    pub(crate) fn take_closed(&mut self) -> Option<ConnId> {
        self.closed.pop()
    }

    pub(crate) fn event(&mut self, e: Event) {
        self.push(Output::Event(e));
    }

    /// Queues the concatenation of `parts` for `conn`, coalescing with earlier writes.
    pub(crate) fn write(&mut self, conn: ConnId, parts: &[&[u8]]) {
        if self.is_closing(conn) {
            return;
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let coalesce = self.coalesce;
        if let Some(buf) = self.open_buf(conn) {
            if buf.len() + len <= coalesce {
                parts.iter().for_each(|p| buf.extend_from_slice(p));
                return;
            }
        }
        let mut buf = self.block(len);
        parts.iter().for_each(|p| buf.extend_from_slice(p));
        let abs = self.popped + self.queue.len() as u64;
        self.close_open(conn);
        self.open.push((conn, abs));
        self.queue.push_back(Slot::Building { conn, buf });
    }

    /// An empty buffer with room for `len` bytes: the rest of a recent block, a block all
    /// of whose transmits were dropped, or a new one.
    fn block(&mut self, len: usize) -> BytesMut {
        if let Some(mut buf) = self.free.pop() {
            if buf.capacity() >= len || buf.try_reclaim(len.max(CTL_BLOCK)) {
                return buf;
            }
        }
        BytesMut::with_capacity(len.max(CTL_BLOCK))
    }

    /// The driver reported `conn` closed: control frames queued for it can go nowhere and
    /// are dropped (a driver may report the close while outputs are still queued).
    pub(crate) fn forget(&mut self, conn: ConnId) {
        self.close_open(conn);
        for slot in self.queue.iter_mut() {
            if matches!(slot, Slot::Building { conn: c, .. } if *c == conn) {
                *slot = Slot::Dropped;
            }
        }
    }

    /// Data for `conn` is waiting in its session: queue a pull marker unless one is queued.
    #[inline]
    pub(crate) fn pull(&mut self, conn: ConnId) {
        if self.pulls.contains(&conn) || self.is_closing(conn) {
            return;
        }
        self.pulls.push(conn);
        self.close_open(conn);
        self.queue.push_back(Slot::Pull(conn));
    }

    fn close_open(&mut self, conn: ConnId) {
        self.open.retain(|(c, _)| *c != conn);
    }

    fn open_buf(&mut self, conn: ConnId) -> Option<&mut BytesMut> {
        let abs = self.open.iter().find(|(c, _)| *c == conn)?.1;
        let idx = usize::try_from(abs.checked_sub(self.popped)?).ok()?;
        match self.queue.get_mut(idx) {
            Some(Slot::Building { conn: c, buf }) if *c == conn => Some(buf),
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Popped> {
        let mut slot = self.queue.pop_front()?;
        let mut abs = self.popped;
        self.popped += 1;
        while let Slot::Dropped = slot {
            slot = self.queue.pop_front()?;
            abs = self.popped;
            self.popped += 1;
        }
        Some(match slot {
            Slot::Ready(o) => Popped::Output(o),
            Slot::Pull(conn) => {
                self.pulls.retain(|c| *c != conn);
                Popped::Pull(conn)
            }
            Slot::Building { conn, mut buf } => {
                self.open.retain(|o| *o != (conn, abs));
                let data = buf.split().freeze();
                if self.free.len() < self.spares {
                    self.free.push(buf);
                }
                Popped::Output(Queued::Transmit { conn, data })
            }
            Slot::Dropped => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmit(o: Option<Popped>) -> (ConnId, Bytes) {
        match o {
            Some(Popped::Output(Queued::Transmit { conn, data })) => (conn, data),
            other => panic!("expected a transmit, got {other:?}"),
        }
    }

    #[test]
    fn small_writes_coalesce_per_connection_in_order() {
        let mut q = Outputs::new(64 * 1024, 2);
        let (a, b) = (ConnId(1), ConnId(2));
        q.write(a, &[b"one"]);
        q.write(b, &[b"x"]);
        q.write(a, &[b"tw", b"o"]);
        q.push(Output::Close { conn: b });
        q.write(a, &[b"three"]);
        assert_eq!(transmit(q.pop()), (a, Bytes::from_static(b"onetwothree")));
        assert_eq!(transmit(q.pop()), (b, Bytes::from_static(b"x")));
        assert!(matches!(q.pop(), Some(Popped::Output(Queued::Close(conn))) if conn == b));
        assert!(q.pop().is_none());
        // After a drain a new write starts a new transmit.
        q.write(a, &[b"four"]);
        assert_eq!(transmit(q.pop()), (a, Bytes::from_static(b"four")));
    }

    #[test]
    fn writes_for_a_connection_reported_closed_are_dropped() {
        let mut q = Outputs::new(64 * 1024, 2);
        let (a, b) = (ConnId(1), ConnId(2));
        q.write(a, &[b"ack"]);
        q.write(b, &[b"keep"]);
        q.forget(a);
        q.write(a, &[b"late"]);
        assert_eq!(transmit(q.pop()), (b, Bytes::from_static(b"keep")));
        assert_eq!(transmit(q.pop()), (a, Bytes::from_static(b"late")));
        assert!(q.pop().is_none());
    }

    #[test]
    fn deliveries_to_one_port_are_taken_in_a_run_up_to_another_output() {
        use crate::envelope::Envelope;
        use crate::id::{ChannelAddr, Name, ProcId};
        use crate::registry::Registry;
        let p = ProcId::new(ChannelAddr::Local(1), Name::new("p").unwrap());
        let a = p.actor(Name::new("a").unwrap(), 0);
        let mut reg = Registry::new(p.clone());
        let dest = a.port(5);
        reg.reserve_root("a").unwrap();
        reg.bind_port(&dest, crate::registry::PortKind::Stream, None)
            .unwrap();
        let port = reg.local_port(&dest).unwrap();
        let env = |n: u8| Envelope::new(a.clone(), dest.clone(), Bytes::from(alloc::vec![n]));
        let mut q = Outputs::new(64 * 1024, 2);
        let c = ConnId(1);
        q.deliver(port, env(1));
        q.deliver(port, env(2));
        q.write(c, &[b"between"]);
        q.deliver(port, env(3));
        let mut out = VecDeque::new();
        assert_eq!(q.pop_deliveries(port, &mut out), 2);
        assert_eq!(q.pop_deliveries(port, &mut out), 0, "stops at the transmit");
        assert_eq!(transmit(q.pop()), (c, Bytes::from_static(b"between")));
        assert_eq!(q.pop_deliveries(port, &mut out), 1);
        let got: alloc::vec::Vec<u8> = out.iter().map(|e| e.payload[0]).collect();
        assert_eq!(got, [1, 2, 3]);
        assert!(q.pop().is_none());
        // Positions stay right: a transmit opened before still takes appends.
        q.write(c, &[b"x"]);
        q.deliver(port, env(4));
        q.write(c, &[b"y"]);
        assert_eq!(transmit(q.pop()), (c, Bytes::from_static(b"xy")));
    }

    #[test]
    fn a_connection_is_closed_once_and_nothing_is_written_after() {
        let mut q = Outputs::new(64 * 1024, 2);
        let (a, b) = (ConnId(1), ConnId(2));
        q.write(a, &[b"before"]);
        q.push(Output::Close { conn: a });
        q.push(Output::Close { conn: a });
        q.write(a, &[b"after"]);
        q.pull(a);
        q.write(b, &[b"other"]);
        assert_eq!(transmit(q.pop()).1, Bytes::from_static(b"before"));
        let Some(Popped::Output(close)) = q.pop() else {
            panic!("expected the close");
        };
        assert!(matches!(close.into_output(), Output::Close { conn } if conn == a));
        assert_eq!(transmit(q.pop()), (b, Bytes::from_static(b"other")));
        assert!(q.pop().is_none());
        // Once the proc took the close, the connection id is forgotten here.
        assert_eq!(q.take_closed(), Some(a));
        assert!(!q.is_closing(a));
    }

    #[test]
    fn pull_markers_keep_their_place_once_per_connection() {
        let mut q = Outputs::new(64 * 1024, 2);
        let a = ConnId(1);
        q.write(a, &[b"head"]);
        q.pull(a);
        q.pull(a);
        q.write(a, &[b"tail"]);
        assert_eq!(transmit(q.pop()).1, Bytes::from_static(b"head"));
        assert!(matches!(q.pop(), Some(Popped::Pull(c)) if c == a));
        assert_eq!(transmit(q.pop()).1, Bytes::from_static(b"tail"));
        assert!(q.pop().is_none());
        q.pull(a);
        assert!(matches!(q.pop(), Some(Popped::Pull(c)) if c == a));
    }
}
#[cfg(test)]
mod size {
    /// An output is moved for every delivered message: it stays a delivery's size (the
    /// envelope and its port handle), whatever the rare variants carry.
    #[test]
    fn an_output_is_no_larger_than_a_delivery() {
        let delivery = core::mem::size_of::<crate::envelope::Envelope>()
            + core::mem::size_of::<super::LocalPort>();
        assert!(core::mem::size_of::<super::Output>() <= delivery + 8);
    }
}
