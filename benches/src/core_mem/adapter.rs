//! The only code of the core-only benches that touches procwire-core's API.
//!
//! Everything else in [`crate::core_mem`] and [`crate::core_idle`] speaks in the small
//! vocabulary below (node indexes, connection numbers, microseconds, payload `Bytes`), so
//! when core's API changes only this file needs updating.
//!
//! Node `i` is a core `Proc` named `n{i}` at `local:{i+1}`, with one root actor `a` that
//! has port 1 bound: every node can send from `a` and receive on `a`'s port 1.

use bytes::Bytes;
use procwire_core::envelope::Envelope;
use procwire_core::id::{ActorId, ChannelAddr, Name, PortId, ProcId};
use procwire_core::proc::{Config, Event, LocalPort, Output, Proc, SendError};
use procwire_core::registry::PortKind;
use procwire_core::time::Instant;

/// A connection, as a node names it.
pub type Conn = u64;

/// What a node asks its driver to do, reduced to what the benches act on.
#[derive(Debug)]
pub enum Act {
    /// A message for a local port; its payload.
    Deliver(Bytes),
    /// Connect `conn` to node `to`.
    Dial {
        /// The dialing node's handle.
        conn: Conn,
        /// Index of the node dialed.
        to: usize,
    },
    /// Write `data` on `conn`.
    Transmit {
        /// The connection.
        conn: Conn,
        /// The bytes.
        data: Bytes,
    },
    /// Close `conn` (the node has forgotten it).
    Close {
        /// The connection.
        conn: Conn,
    },
    /// A refused send may be retried.
    Writable,
    /// A message came back undeliverable, or a connection failed: the benches treat both as
    /// a failure of the scenario.
    Failed(String),
    /// Anything else (connected, ...).
    Other,
}

/// A send was refused because the link's window is full; retry after [`Act::Writable`].
#[derive(Debug, PartialEq, Eq)]
pub struct Blocked;

/// Where a node sends to: port 1 of actor `a` of another node (built once, cloned per send).
#[derive(Clone, Debug)]
pub struct Dest(PortId);

fn proc_id(i: usize) -> ProcId {
    let name = Name::new(&format!("n{i}")).expect("valid node name");
    ProcId::new(ChannelAddr::Local(i as u64 + 1), name)
}

fn actor_port(me: &ActorId) -> PortId {
    me.port(1)
}

fn actor(i: usize) -> ActorId {
    proc_id(i).actor(Name::new("a").expect("valid actor name"), 0)
}

/// One core proc.
pub struct Node {
    proc: Proc,
    me: ActorId,
    /// The envelope of the last send, reused while the destination stays the same: a
    /// send then replaces only the payload and touches no id's reference count.
    outgoing: Option<Envelope>,
    /// Time of the last input, for reporting consumption while draining.
    now: Instant,
    /// Delivered messages the consumer took and core has not heard of: (messages, bytes),
    /// and the handle of the port they were delivered to.
    taken: (usize, usize),
    port: Option<LocalPort>,
}

impl Node {
    /// Node `i` with core's default configuration.
    pub fn new(i: usize) -> Node {
        let mut proc = Proc::new(proc_id(i), Config::default(), 1000 + i as u64, i as u64);
        let me = proc.reserve_root("a").expect("fresh proc takes root a");
        proc.bind_port(&me.port(1), PortKind::Stream, None)
            .expect("fresh actor binds port 1");
        Node {
            proc,
            me,
            outgoing: None,
            now: Instant::ZERO,
            taken: (0, 0),
            port: None,
        }
    }

    /// The receiving port of node `i`.
    pub fn dest(i: usize) -> Dest {
        Dest(actor(i).port(1))
    }

    /// Sends `payload` from this node's actor to `to`.
    pub fn send(&mut self, now: u64, to: &Dest, payload: Bytes) -> Result<(), Blocked> {
        self.now = Instant::from_micros(now);
        let env = match &mut self.outgoing {
            Some(env) if env.dest == to.0 => {
                env.payload = payload;
                env
            }
            slot => slot.insert(Envelope::new(self.me.clone(), to.0.clone(), payload)),
        };
        match self.proc.handle_send_ref(Instant::from_micros(now), env) {
            Ok(()) => Ok(()),
            Err(SendError::WouldBlock) => Err(Blocked),
            Err(e) => panic!("bench send refused: {e}"),
        }
    }

    /// An inbound connection was accepted; the node names it.
    pub fn accepted(&mut self, now: u64) -> Conn {
        self.now = Instant::from_micros(now);
        self.proc.handle_accepted(Instant::from_micros(now)).0
    }

    /// A dial this node asked for has connected.
    pub fn connected(&mut self, now: u64, conn: Conn) {
        self.now = Instant::from_micros(now);
        self.proc
            .handle_connected(Instant::from_micros(now), procwire_core::proc::ConnId(conn));
    }

    /// Bytes arrived on `conn`.
    pub fn bytes(&mut self, now: u64, conn: Conn, data: &[u8]) {
        self.now = Instant::from_micros(now);
        let conn = procwire_core::proc::ConnId(conn);
        self.proc
            .handle_bytes(Instant::from_micros(now), conn, data);
    }

    /// `conn` was closed by its peer.
    pub fn closed(&mut self, now: u64, conn: Conn) {
        self.now = Instant::from_micros(now);
        self.proc
            .handle_closed(Instant::from_micros(now), procwire_core::proc::ConnId(conn));
    }

    /// Time reached a deadline.
    pub fn timeout(&mut self, now: u64) {
        self.now = Instant::from_micros(now);
        self.proc.handle_timeout(Instant::from_micros(now));
    }

    /// The next deadline, in microseconds.
    pub fn deadline(&self) -> Option<u64> {
        self.proc.poll_timeout().map(Instant::as_micros)
    }

    /// The next action, until `None`.
    pub fn poll(&mut self) -> Option<Act> {
        let out = match self.proc.poll_output() {
            Some(out) => out,
            None if self.taken.0 > 0 => {
                // The bench's consumer takes every delivery at once: report them in one
                // batch at the end of the drain, which may let held messages through.
                let (msgs, bytes) = std::mem::take(&mut self.taken);
                let port = self.port.expect("deliveries name their port");
                self.proc.handle_consumed(self.now, port, msgs, bytes);
                self.proc.poll_output()?
            }
            None => return None,
        };
        Some(match out {
            Output::Deliver { port, mut env } => {
                debug_assert_eq!(env.dest, actor_port(&self.me));
                self.port = Some(port);
                self.taken.0 += 1;
                self.taken.1 += env.payload.len();
                // The consumer keeps the payload; the ids go back for the next message.
                let payload = std::mem::take(&mut env.payload);
                self.proc.recycle(env);
                Act::Deliver(payload)
            }
            Output::Dial { conn, addr } => match *addr {
                ChannelAddr::Local(k) => Act::Dial {
                    conn: conn.0,
                    to: k as usize - 1,
                },
                other => panic!("bench node dials a non-local address {other}"),
            },
            Output::Transmit { conn, data } => Act::Transmit { conn: conn.0, data },
            Output::Close { conn } => Act::Close { conn: conn.0 },
            Output::Returned(env) => Act::Failed(format!("returned: {:?}", env.returned)),
            Output::Event(Event::Writable { .. }) => Act::Writable,
            Output::Event(Event::ConnectionFailed { error, .. }) => {
                Act::Failed(format!("connection failed: {error:?}"))
            }
            Output::Event(_) => Act::Other,
            // Outputs a newer core adds: none of them concern this bench yet.
            _ => Act::Other,
        })
    }

    /// Data frames this node has written, and acknowledgements.
    pub fn frames_sent(&self) -> (u64, u64) {
        let s = self.proc.stats();
        (s.data_frames_sent, s.acks_sent)
    }
}
