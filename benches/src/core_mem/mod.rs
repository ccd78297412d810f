//! procwire-core alone: two core procs wired together in memory, no sockets, one thread,
//! time a fake clock the harness advances (design note §8: "core alone against a memcpy of
//! the same wire bytes").
//!
//! [`CorePipe`] sends 64-byte messages from the actor of node A to the bound port of node
//! B, pipelined: each round A sends until its window refuses (`WouldBlock`) or a batch is
//! sent, then the harness moves bytes both ways (data A→B, acknowledgements B→A) until
//! quiet, and the clock moves on by [`STEP_MICROS`]. Every delivered message is checked:
//! from the right sender, in order, none missing (a bench that loses messages panics).
//!
//! [`MemcpyTwin`] is the raw twin: per message it copies the same number of bytes as core
//! put on the wire per message into an outgoing buffer, copies each batch into a receive
//! buffer (the "transfer") and walks it frame by frame checking the sequence numbers.
//!
//! Payloads are slices of one pre-built buffer, so sending costs the harness no allocation
//! and an allocation count over a run is core's own.

pub mod adapter;
pub mod net;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;

use adapter::{Blocked, Dest, Node};
use net::MemNet;

/// Node index of the sender A.
pub const A: usize = 0;
/// Node index of the receiver B.
pub const B: usize = 1;
/// Messages A sends per round at most, before bytes are moved.
pub const BATCH: usize = 256;
/// Fake microseconds per round.
pub const STEP_MICROS: u64 = 10;
/// Distinct payloads in a sender's pool (64 KiB of 64 B payloads: cache-resident, as a
/// freshly built message would be).
const RING: u64 = 1024;

/// Payloads of one sender: `[sender u32 LE][seq mod RING u64 LE][pattern]`, all slices of
/// one buffer.
pub struct Pool {
    buf: Bytes,
    len: usize,
}

impl Pool {
    /// Payloads of `len` bytes (at least 12) from node `sender`.
    pub fn new(sender: usize, len: usize) -> Pool {
        let mut buf = Vec::with_capacity(len * RING as usize);
        for seq in 0..RING {
            push_payload(&mut buf, sender, seq, len);
        }
        Pool {
            buf: buf.into(),
            len,
        }
    }

    /// The payload of message `seq`.
    pub fn get(&self, seq: u64) -> Bytes {
        let at = (seq % RING) as usize * self.len;
        self.buf.slice(at..at + self.len)
    }
}

/// Appends payload `seq` of `sender`, `len` bytes (at least 12), to `buf`.
pub fn push_payload(buf: &mut Vec<u8>, sender: usize, seq: u64, len: usize) {
    assert!(len >= 12, "payload carries a 12-byte header");
    buf.extend_from_slice(&(sender as u32).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend((12..len).map(|i| (i % 251) as u8));
}

/// Checks that messages arrive from each sender in order, none missing.
pub struct InOrder {
    receiver: usize,
    len: usize,
    /// Messages received so far, per sender node.
    received: Vec<u64>,
}

impl InOrder {
    /// For payloads of `len` bytes at node `receiver`, from up to `senders` nodes.
    pub fn new(receiver: usize, len: usize, senders: usize) -> InOrder {
        InOrder {
            receiver,
            len,
            received: vec![0; senders],
        }
    }

    /// Messages received from `sender`.
    pub fn received(&self, sender: usize) -> u64 {
        self.received[sender]
    }

    /// One delivered message, at node `at`.
    pub fn check(&mut self, at: usize, payload: &[u8]) {
        assert_eq!(at, self.receiver, "delivered at the wrong node");
        assert_eq!(payload.len(), self.len, "payload length changed");
        let sender = u32::from_le_bytes(payload[..4].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(payload[4..12].try_into().unwrap());
        let expected = self.received[sender];
        assert_eq!(
            seq,
            expected % RING,
            "message {expected} from node {sender} out of order or lost"
        );
        assert_eq!(payload[self.len - 1], ((self.len - 1) % 251) as u8);
        self.received[sender] = expected + 1;
    }
}

/// The core-only pipelined bench: a busy link A→B on a [`MemNet`] (optionally with idle
/// nodes beside it, see [`crate::core_idle`]).
pub struct CorePipe {
    pub(crate) net: MemNet,
    pub(crate) check: InOrder,
    dest: Dest,
    pool: Pool,
    sent: u64,
    batch: usize,
}

impl CorePipe {
    /// Nodes A and B alone, warmed up (session established, buffers grown).
    pub fn new(payload: usize) -> CorePipe {
        let mut pipe = CorePipe::bare(2, payload);
        pipe.warm_up();
        pipe
    }

    /// Nodes A and B, where B dialed A first (one message B→A), so A's messages to B ride
    /// B's connection (a two-way link: A's session is the answering one, its frames decoded
    /// by B's outbound session and handed over); warmed up.
    pub fn answering(payload: usize) -> CorePipe {
        let mut pipe = CorePipe::bare(2, payload);
        let first = Pool::new(B, payload).get(0);
        assert!(pipe.net.send(B, &Node::dest(A), first).is_ok());
        let mut to_a = 0;
        while to_a == 0 {
            let mut deliver = |at: usize, _: Bytes| to_a += usize::from(at == A);
            pipe.net.drive(&mut deliver);
            pipe.net.advance(STEP_MICROS, &mut deliver);
        }
        pipe.warm_up();
        pipe
    }

    /// `nodes` nodes (A, B, then others), nothing sent yet.
    pub(crate) fn bare(nodes: usize, payload: usize) -> CorePipe {
        CorePipe {
            net: MemNet::new(nodes, 2),
            check: InOrder::new(B, payload, nodes),
            dest: Node::dest(B),
            pool: Pool::new(A, payload),
            sent: 0,
            batch: BATCH,
        }
    }

    pub(crate) fn warm_up(&mut self) {
        self.run(4 * self.batch as u64 + 7);
        self.run(20 * self.batch as u64);
    }

    /// Messages A has sent (all of them delivered when `run` returns).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes A has transmitted so far (to B: data frames and pings).
    pub fn wire_bytes(&self) -> u64 {
        self.net.tx_bytes(A)
    }

    /// Data frames and acknowledgements (sent by A, sent by B).
    pub fn frames(&self) -> ((u64, u64), (u64, u64)) {
        (
            self.net.node(A).frames_sent(),
            self.net.node(B).frames_sent(),
        )
    }

    /// Sends `n` messages pipelined and returns when B has received all of them, checked.
    pub fn run(&mut self, n: u64) -> Duration {
        let t = Instant::now();
        let target = self.sent + n;
        let CorePipe {
            net,
            check,
            dest,
            pool,
            sent,
            batch,
        } = self;
        while check.received(A) < target {
            let mut deliver = |at: usize, p: Bytes| check.check(at, &p);
            let mut k = 0;
            while *sent < target && k < *batch {
                match net.send(A, dest, pool.get(*sent)) {
                    Ok(()) => {
                        *sent += 1;
                        k += 1;
                    }
                    Err(Blocked) => break,
                }
            }
            let moved = net.drive(&mut deliver);
            net.advance(STEP_MICROS, &mut deliver);
            if k == 0 && !moved {
                // Window full and nothing in flight: wait for the next timer (an ack).
                net.take_writable(A);
                assert!(net.advance_to_next(&mut deliver), "stuck with no deadline");
            }
        }
        t.elapsed()
    }

    /// Wire bytes A→B per message over a run of `n` messages (checks: the run delivers).
    pub fn measure_wire_bytes(&mut self, n: u64) -> f64 {
        let b0 = self.wire_bytes();
        self.run(n);
        (self.wire_bytes() - b0) as f64 / n as f64
    }
}

/// The raw twin of [`CorePipe`]: the same bytes per message, copied in and out of buffers.
pub struct MemcpyTwin {
    frame: Vec<u8>,
    out: Vec<u8>,
    inbox: Vec<u8>,
    batch: usize,
    sent: u64,
    received: u64,
}

impl MemcpyTwin {
    /// Messages of `frame_len` bytes on the "wire" (at least 8), `batch` per transfer.
    pub fn new(frame_len: usize, batch: usize) -> MemcpyTwin {
        let frame_len = frame_len.max(8);
        MemcpyTwin {
            frame: (0..frame_len).map(|i| (i % 251) as u8).collect(),
            out: Vec::with_capacity(frame_len * batch),
            inbox: Vec::with_capacity(frame_len * batch),
            batch,
            sent: 0,
            received: 0,
        }
    }

    /// Bytes per message.
    pub fn frame_len(&self) -> usize {
        self.frame.len()
    }

    /// "Sends" `n` messages: per message a copy of its frame (sequence number stamped in)
    /// into the outgoing buffer; per batch a copy into the receive buffer, then every frame
    /// read back and its sequence number checked.
    pub fn run(&mut self, n: u64) -> Duration {
        let t = Instant::now();
        let target = self.sent + n;
        let len = self.frame.len();
        while self.sent < target {
            let k = (target - self.sent).min(self.batch as u64);
            self.out.clear();
            for _ in 0..k {
                self.frame[..8].copy_from_slice(&self.sent.to_le_bytes());
                self.out.extend_from_slice(black_box(&self.frame));
                self.sent += 1;
            }
            self.inbox.clear();
            self.inbox.extend_from_slice(black_box(&self.out));
            for f in black_box(&self.inbox).chunks_exact(len) {
                let seq = u64::from_le_bytes(f[..8].try_into().unwrap());
                assert_eq!(seq, self.received, "memcpy twin out of order");
                self.received += 1;
            }
        }
        t.elapsed()
    }
}
