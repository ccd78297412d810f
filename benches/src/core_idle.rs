//! Many idle sessions beside one busy link, core only (in memory, fake clock).
//!
//! Node B (the receiver of the busy link A→B, see [`crate::core_mem`]) also holds `k`
//! inbound sessions from `k` idle nodes, each established by one message and then quiet
//! except for heartbeats. The sessions are opened at even intervals over one heartbeat
//! interval (core's default, `Config::heartbeat_interval`), so their heartbeat deadlines are spread out as they
//! would be in a real proc rather than all falling on the same instant.
//!
//! Two figures:
//! * the per-message cost of the busy link with `k` idle sessions, to compare with the
//!   link alone ([`IdleNet::run`] against [`CorePipe::run`] of a fresh pair); the idle
//!   peers keep heartbeating while it runs, as the clock moves [`STEP_MICROS`] per round;
//! * the cost of one timeout round of B ([`IdleNet::timeout_rounds`]): the clock jumps to
//!   B's next deadline and B's `handle_timeout`, the draining of its output and the read
//!   of its next deadline are timed (the bytes it wrote are then delivered, untimed).
//!   With spread-out deadlines a round has about one session due whatever `k`, so a cost
//!   that grows with `k` is work proportional to the number of sessions.
//!
//! [`STEP_MICROS`]: crate::core_mem::STEP_MICROS

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core_mem::adapter::Node;
use crate::core_mem::{push_payload, CorePipe, A, B};

/// Core's default heartbeat interval, over which idle sessions are spread (µs).
fn spread_micros() -> u64 {
    procwire_core::proc::Config::default()
        .heartbeat_interval
        .as_micros()
}

/// A busy link plus `k` idle sessions at its receiver.
pub struct IdleNet {
    pipe: CorePipe,
    k: usize,
}

/// Timed timeout rounds of the receiver.
#[derive(Clone, Debug)]
pub struct TimeoutRounds {
    /// Wall time of each round (handle_timeout + drain + next deadline).
    pub samples: Vec<Duration>,
    /// Transmits (keepalives, acks) B wrote in all these rounds.
    pub transmits: usize,
}

impl TimeoutRounds {
    /// Median round time.
    pub fn median(&self) -> Duration {
        let mut v = self.samples.clone();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }

    /// Transmits per round, on average.
    pub fn transmits_per_round(&self) -> f64 {
        self.transmits as f64 / self.samples.len().max(1) as f64
    }
}

impl IdleNet {
    /// The busy link A→B plus `k` idle nodes with an established session to B each, all
    /// warmed up.
    pub fn new(k: usize, payload: usize) -> IdleNet {
        let mut pipe = CorePipe::bare(2 + k, payload);
        let dest = Node::dest(B);
        let start = pipe.net.now();
        let CorePipe { net, check, .. } = &mut pipe;
        let mut deliver = |at: usize, p: Bytes| check.check(at, &p);
        for j in 0..k {
            let node = 2 + j;
            net.run_until(start + spread_micros() * j as u64 / k as u64, &mut deliver);
            let mut buf = Vec::with_capacity(payload);
            push_payload(&mut buf, node, 0, payload);
            net.send(node, &dest, buf.into())
                .expect("a fresh link takes one message");
            net.drive(&mut deliver);
        }
        // Past the acknowledgement delay of the last one.
        let settle = net.now() + 50_000;
        net.run_until(settle, &mut deliver);
        for j in 0..k {
            assert_eq!(check.received(2 + j), 1, "idle node {} connected", 2 + j);
        }
        pipe.warm_up();
        IdleNet { pipe, k }
    }

    /// Idle sessions.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The busy link: `n` messages A→B, pipelined, all checked.
    pub fn run(&mut self, n: u64) -> Duration {
        self.pipe.run(n)
    }

    /// Times `rounds` timeout rounds of B (see the module docs).
    pub fn timeout_rounds(&mut self, rounds: usize) -> TimeoutRounds {
        let sent = self.pipe.sent();
        let CorePipe { net, check, .. } = &mut self.pipe;
        let mut deliver = |at: usize, p: Bytes| check.check(at, &p);
        let mut out = TimeoutRounds {
            samples: Vec::with_capacity(rounds),
            transmits: 0,
        };
        let mut steps = 0;
        while out.samples.len() < rounds {
            steps += 1;
            assert!(steps < 100 * rounds + 1000, "B has no deadlines");
            let t = net.next_deadline().expect("heartbeats keep deadlines");
            net.set_now(t);
            if net.deadline_of(B).is_some_and(|d| d <= net.now()) {
                let start = Instant::now();
                out.transmits += net.timeout_one(B, &mut deliver);
                out.samples.push(start.elapsed());
            }
            net.fire_due(&mut deliver);
        }
        assert_eq!(check.received(A), sent, "the busy link lost nothing");
        out
    }
}
