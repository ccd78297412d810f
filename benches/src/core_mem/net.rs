//! An in-memory network of core nodes, driven on one thread with a fake clock.
//!
//! Bytes a node transmits are queued and handed to the connected node's `bytes` in order;
//! dials connect at once; time only moves when the harness says so. Only nodes that had an
//! input since they were last drained are drained, and the deadlines of the `hot` nodes
//! (the busy link) are checked every step, while the earliest deadline of all other nodes
//! is cached and recomputed only after one of them was touched: with thousands of idle
//! nodes the harness itself stays O(1) per step, so what grows is core's own work.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::adapter::{Act, Blocked, Conn, Dest, Node};

/// Called with (receiving node, payload) for every delivered message.
pub type OnDeliver<'a> = &'a mut dyn FnMut(usize, Bytes);

/// Nodes, wires between their connections, and bytes in flight.
pub struct MemNet {
    now: u64,
    nodes: Vec<Node>,
    /// (node, conn) -> (peer node, peer conn).
    wires: HashMap<(usize, Conn), (usize, Conn)>,
    /// Bytes (or a close, `None`) on their way to (node, conn).
    pending: VecDeque<(usize, Conn, Option<Bytes>)>,
    /// Nodes with an input since they were last drained.
    touched: Vec<usize>,
    is_touched: Vec<bool>,
    /// Each node's deadline as of its last drain.
    deadlines: Vec<Option<u64>>,
    /// Nodes `0..hot` are checked every step; the rest through `cold_min`.
    hot: usize,
    cold_min: Option<u64>,
    cold_dirty: bool,
    /// Bytes each node has transmitted.
    tx_bytes: Vec<u64>,
    /// Each node was told it may send again.
    writable: Vec<bool>,
}

impl MemNet {
    /// `n` fresh nodes, the first `hot` of them checked for deadlines every step, at time
    /// 1 s (any start would do).
    pub fn new(n: usize, hot: usize) -> MemNet {
        MemNet {
            now: 1_000_000,
            nodes: (0..n).map(Node::new).collect(),
            wires: HashMap::new(),
            pending: VecDeque::new(),
            touched: Vec::with_capacity(n),
            is_touched: vec![false; n],
            deadlines: vec![None; n],
            hot,
            cold_min: None,
            cold_dirty: false,
            tx_bytes: vec![0; n],
            writable: vec![false; n],
        }
    }

    /// The fake clock, in microseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Bytes node `i` has transmitted so far.
    pub fn tx_bytes(&self, i: usize) -> u64 {
        self.tx_bytes[i]
    }

    /// The node itself (for counters).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Takes the "may send again" flag of node `i`.
    pub fn take_writable(&mut self, i: usize) -> bool {
        std::mem::take(&mut self.writable[i])
    }

    fn touch(&mut self, i: usize) {
        if !self.is_touched[i] {
            self.is_touched[i] = true;
            self.touched.push(i);
        }
    }

    /// Sends from node `from` to `to` now (not yet drained: call [`MemNet::drive`]).
    pub fn send(&mut self, from: usize, to: &Dest, payload: Bytes) -> Result<(), Blocked> {
        self.touch(from);
        self.nodes[from].send(self.now, to, payload)
    }

    /// Drains every touched node and moves bytes until nothing is left to do. Returns
    /// whether anything happened.
    pub fn drive(&mut self, on_deliver: OnDeliver<'_>) -> bool {
        let mut any = false;
        loop {
            while let Some(i) = self.touched.pop() {
                any = true;
                self.drain(i, on_deliver);
            }
            let Some((to, conn, data)) = self.pending.pop_front() else {
                return any;
            };
            any = true;
            self.touch(to);
            match data {
                Some(b) => self.nodes[to].bytes(self.now, conn, &b),
                None => self.nodes[to].closed(self.now, conn),
            }
        }
    }

    /// Drains node `i`'s outputs and records its next deadline.
    pub fn drain(&mut self, i: usize, on_deliver: OnDeliver<'_>) {
        self.is_touched[i] = false;
        while let Some(act) = self.nodes[i].poll() {
            self.carry_out(i, act, on_deliver);
        }
        self.deadlines[i] = self.nodes[i].deadline();
        if i >= self.hot {
            self.cold_dirty = true;
        }
    }

    fn carry_out(&mut self, i: usize, act: Act, on_deliver: OnDeliver<'_>) {
        match act {
            Act::Deliver(payload) => on_deliver(i, payload),
            Act::Dial { conn, to } => {
                assert!(to < self.nodes.len(), "node {i} dials unknown node {to}");
                let peer = self.nodes[to].accepted(self.now);
                self.wires.insert((i, conn), (to, peer));
                self.wires.insert((to, peer), (i, conn));
                self.nodes[i].connected(self.now, conn);
                self.touch(to);
                self.touch(i);
            }
            Act::Transmit { conn, data } => {
                self.tx_bytes[i] += data.len() as u64;
                if let Some(&(to, peer)) = self.wires.get(&(i, conn)) {
                    self.pending.push_back((to, peer, Some(data)));
                }
            }
            Act::Close { conn } => {
                if let Some(other) = self.wires.remove(&(i, conn)) {
                    self.wires.remove(&other);
                    self.pending.push_back((other.0, other.1, None));
                }
            }
            Act::Writable => self.writable[i] = true,
            Act::Failed(why) => panic!("node {i}: {why}"),
            Act::Other => {}
        }
    }

    fn cold_min(&mut self) -> Option<u64> {
        if self.cold_dirty {
            self.cold_min = self.deadlines[self.hot..].iter().flatten().min().copied();
            self.cold_dirty = false;
        }
        self.cold_min
    }

    /// The earliest deadline of any node.
    pub fn next_deadline(&mut self) -> Option<u64> {
        let hot = self.deadlines[..self.hot].iter().flatten().min().copied();
        match (hot, self.cold_min()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the clock forward by `micros` and handles every deadline reached.
    pub fn advance(&mut self, micros: u64, on_deliver: OnDeliver<'_>) {
        self.now += micros;
        self.fire_due(on_deliver);
    }

    /// Moves the clock to the next deadline (if any is later than now) and handles it.
    /// Returns false if no node has a deadline.
    pub fn advance_to_next(&mut self, on_deliver: OnDeliver<'_>) -> bool {
        let Some(t) = self.next_deadline() else {
            return false;
        };
        self.now = self.now.max(t);
        self.fire_due(on_deliver);
        true
    }

    /// Handles the timeouts of every node whose deadline has been reached, then drives.
    pub fn fire_due(&mut self, on_deliver: OnDeliver<'_>) {
        let now = self.now;
        for i in 0..self.hot.min(self.nodes.len()) {
            self.fire_if_due(i, on_deliver);
        }
        if self.cold_min().is_some_and(|t| t <= now) {
            for i in self.hot..self.nodes.len() {
                self.fire_if_due(i, on_deliver);
            }
        }
        self.drive(on_deliver);
    }

    fn fire_if_due(&mut self, i: usize, on_deliver: OnDeliver<'_>) {
        if self.deadlines[i].is_some_and(|t| t <= self.now) {
            self.nodes[i].timeout(self.now);
            self.drain(i, on_deliver);
        }
    }

    /// Node `i`'s timeout round on its own: handles its deadline (the clock must have
    /// reached it) and drains its output, leaving the bytes it wrote in flight. Returns
    /// how many transmits it produced.
    pub fn timeout_one(&mut self, i: usize, on_deliver: OnDeliver<'_>) -> usize {
        let before = self.pending.len();
        self.nodes[i].timeout(self.now);
        self.drain(i, on_deliver);
        self.pending.len() - before
    }

    /// Node `i`'s deadline as of its last drain.
    pub fn deadline_of(&self, i: usize) -> Option<u64> {
        self.deadlines[i]
    }

    /// Sets the clock (never backwards).
    pub fn set_now(&mut self, t: u64) {
        self.now = self.now.max(t);
    }
}

impl MemNet {
    /// Runs the network until the clock reads `t`, handling every deadline on the way.
    pub fn run_until(&mut self, t: u64, on_deliver: OnDeliver<'_>) {
        self.drive(on_deliver);
        while let Some(d) = self.next_deadline().filter(|d| *d <= t) {
            self.set_now(d);
            self.fire_due(on_deliver);
        }
        self.set_now(t);
        self.fire_due(on_deliver);
    }
}
