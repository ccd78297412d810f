//! What the proc machine asks its driver to do, and the queue that coalesces writes.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use bytes::{Bytes, BytesMut};

use crate::envelope::{EnvelopeError, RefuseReason, Undeliverable};
use crate::frame::FrameError;
use crate::id::{ActorId, ChannelAddr, PortId, ProcId};

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
pub enum Output {
    /// Place the envelope into the queue of the local port `env.dest`. The registry has
    /// accepted it (a once-port is already retired); if the driver finds the receiver gone
    /// it hands the envelope back with `handle_undeliverable`.
    Deliver(crate::envelope::Envelope),
    /// A message coming back to its local sender `env.sender`; `env.returned` holds why.
    Returned(crate::envelope::Envelope),
    /// Open a connection to `addr`, then report `handle_connected(conn)` or
    /// `handle_closed(conn)`.
    Dial {
        /// The handle the proc will use for it.
        conn: ConnId,
        /// Where to connect.
        addr: ChannelAddr,
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
    },
    /// `peer` restarted; what was in flight to its old incarnation has been returned.
    PeerRestarted {
        /// The peer proc.
        peer: ProcId,
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
    /// `handle_shutdown` has finished: everything was delivered or returned.
    ShutdownComplete,
}

/// Why a connection was closed by the proc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnError {
    /// The peer's bytes do not frame.
    Frame(FrameError),
    /// A data frame does not hold an envelope.
    Envelope(EnvelopeError),
    /// A frame that makes no sense at this point of the protocol.
    Protocol(&'static str),
    /// The peer refused the session.
    Refused(RefuseReason),
    /// The connection or its handshake did not complete in time.
    HandshakeTimeout,
    /// Nothing was heard from the peer for the idle timeout.
    IdleTimeout,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Frame(e) => write!(f, "framing error: {e}"),
            ConnError::Envelope(e) => write!(f, "bad envelope: {e}"),
            ConnError::Protocol(what) => write!(f, "protocol violation: {what}"),
            ConnError::Refused(r) => write!(f, "session refused: {r}"),
            ConnError::HandshakeTimeout => f.write_str("handshake timed out"),
            ConnError::IdleTimeout => f.write_str("peer silent for the idle timeout"),
        }
    }
}

impl core::error::Error for ConnError {}

/// Frames at least this large are handed out as their own transmit instead of being copied
/// into a coalescing buffer.
const LARGE_FRAME: usize = 16 * 1024;

/// The output queue. Writes to a connection are appended to that connection's newest
/// queued transmit while it is below `coalesce` bytes, so many small frames leave in one
/// write.
#[derive(Debug)]
pub(crate) struct Outputs {
    queue: VecDeque<Slot>,
    /// Number of entries ever popped, to turn absolute positions into queue indices.
    popped: u64,
    /// Absolute position of the open (appendable) transmit of each connection; a proc
    /// writes to a handful of connections at a time, so a short list beats a map.
    open: Vec<(ConnId, u64)>,
    coalesce: usize,
    /// Connections closed since the last `take_closed`.
    closed: alloc::vec::Vec<ConnId>,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // see `Output`
enum Slot {
    Ready(Output),
    Building { conn: ConnId, buf: BytesMut },
}

impl Outputs {
    pub(crate) fn new(coalesce: usize) -> Self {
        Outputs {
            queue: VecDeque::new(),
            popped: 0,
            open: Vec::new(),
            coalesce,
            closed: alloc::vec::Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn push(&mut self, o: Output) {
        if let Output::Close { conn } = o {
            self.close_open(conn);
            self.closed.push(conn);
        }
        self.queue.push_back(Slot::Ready(o));
    }

    /// Connections closed since the last call.
    pub(crate) fn take_closed(&mut self) -> alloc::vec::Vec<ConnId> {
        core::mem::take(&mut self.closed)
    }

    pub(crate) fn event(&mut self, e: Event) {
        self.push(Output::Event(e));
    }

    /// Queues bytes for `conn`, coalescing with earlier small writes.
    pub(crate) fn write(&mut self, conn: ConnId, data: &[u8]) {
        let limit = self.coalesce.max(LARGE_FRAME);
        if let Some(buf) = self.open_buf(conn) {
            if buf.len() + data.len() <= limit {
                buf.extend_from_slice(data);
                return;
            }
        }
        // Start small: a turn often writes a single frame; `extend` doubles as more come.
        let mut buf = BytesMut::with_capacity(data.len().max(256));
        buf.extend_from_slice(data);
        let abs = self.popped + self.queue.len() as u64;
        self.close_open(conn);
        self.open.push((conn, abs));
        self.queue.push_back(Slot::Building { conn, buf });
    }

    /// Queues a frame that is already in a `Bytes`; large ones are not copied.
    pub(crate) fn write_bytes(&mut self, conn: ConnId, data: &Bytes) {
        if data.len() < LARGE_FRAME {
            return self.write(conn, data);
        }
        self.close_open(conn);
        self.queue.push_back(Slot::Ready(Output::Transmit {
            conn,
            data: data.clone(),
        }));
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

    pub(crate) fn pop(&mut self) -> Option<Output> {
        let slot = self.queue.pop_front()?;
        let abs = self.popped;
        self.popped += 1;
        Some(match slot {
            Slot::Ready(o) => o,
            Slot::Building { conn, buf } => {
                self.open.retain(|o| *o != (conn, abs));
                Output::Transmit {
                    conn,
                    data: buf.freeze(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmit(o: Option<Output>) -> (ConnId, Bytes) {
        match o {
            Some(Output::Transmit { conn, data }) => (conn, data),
            other => panic!("expected a transmit, got {other:?}"),
        }
    }

    #[test]
    fn small_writes_coalesce_per_connection_in_order() {
        let mut q = Outputs::new(64 * 1024);
        let (a, b) = (ConnId(1), ConnId(2));
        q.write(a, b"one");
        q.write(b, b"x");
        q.write(a, b"two");
        q.push(Output::Close { conn: b });
        q.write(a, b"three");
        assert_eq!(transmit(q.pop()), (a, Bytes::from_static(b"onetwothree")));
        assert_eq!(transmit(q.pop()), (b, Bytes::from_static(b"x")));
        assert!(matches!(q.pop(), Some(Output::Close { conn }) if conn == b));
        assert!(q.pop().is_none());
        // After a drain a new write starts a new transmit.
        q.write(a, b"four");
        assert_eq!(transmit(q.pop()), (a, Bytes::from_static(b"four")));
    }

    #[test]
    fn large_frames_keep_their_place_and_are_not_merged() {
        let mut q = Outputs::new(64 * 1024);
        let a = ConnId(1);
        let big = Bytes::from(alloc::vec![7u8; LARGE_FRAME]);
        q.write(a, b"head");
        q.write_bytes(a, &big);
        q.write(a, b"tail");
        assert_eq!(transmit(q.pop()).1, Bytes::from_static(b"head"));
        let (_, d) = transmit(q.pop());
        assert_eq!(d.as_ptr(), big.as_ptr(), "not copied");
        assert_eq!(transmit(q.pop()).1, Bytes::from_static(b"tail"));
    }
}
