//! The deadlines of all machines of a proc in one heap, so that reading the next deadline
//! and finding who is due cost the same with ten sessions or ten thousand.
//!
//! Each machine keeps its own timers (`timer::Timers`); after an input touches a machine,
//! the proc reports the machine's earliest deadline here with [`Schedule::set`]. A moved
//! deadline leaves its old heap entry behind; entries that no longer match the recorded
//! deadline are skipped (and the heap is rebuilt when such entries outnumber live ones).

use alloc::collections::{BTreeMap, BinaryHeap};
use core::cmp::Reverse;

use crate::output::ConnId;
use crate::time::Instant;

/// Which machine a deadline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Owner {
    /// The outbound session in this slot.
    Out(usize),
    /// The inbound session in this slot.
    In(usize),
    /// An accepted connection waiting for its hello.
    Accept(ConnId),
}

/// Earliest deadline per machine, with a heap to find the earliest of all.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    heap: BinaryHeap<Reverse<(Instant, Owner)>>,
    current: BTreeMap<Owner, Instant>,
}

impl Schedule {
    /// Records `owner`'s earliest deadline (`None`: it has none).
    pub(crate) fn set(&mut self, owner: Owner, at: Option<Instant>) {
        match at {
            Some(t) => {
                if self.current.insert(owner, t) != Some(t) {
                    self.heap.push(Reverse((t, owner)));
                }
            }
            None => {
                self.current.remove(&owner);
            }
        }
    }

    /// The earliest deadline of all. Exact after [`Schedule::clean`].
    pub(crate) fn peek(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// A machine whose deadline is at or before `now`, removed from the schedule (the
    /// caller lets it act, then sets its new deadline).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Owner> {
        while let Some(Reverse((t, owner))) = self.heap.peek().copied() {
            if t > now {
                return None;
            }
            self.heap.pop();
            if self.current.get(&owner) == Some(&t) {
                self.current.remove(&owner);
                return Some(owner);
            }
        }
        None
    }

    /// Drops stale entries from the top, so that [`Schedule::peek`] is exact, and rebuilds
    /// the heap when stale entries dominate it.
    pub(crate) fn clean(&mut self) {
        let live = self.current.len();
        // Room for the stale entries allowed below and a turn's worth of moved deadlines,
        // reserved once as the number of machines grows, not grown entry by entry.
        let room = 2 * live + 128;
        if self.heap.capacity() < room {
            self.heap.reserve(room - self.heap.len());
        }
        if self.heap.len() > 2 * live + 64 {
            // In place: the heap keeps its capacity, so a steady stream of moved deadlines
            // allocates nothing.
            self.heap.clear();
            self.heap
                .extend(self.current.iter().map(|(o, t)| Reverse((*t, *o))));
        }
        while let Some(Reverse((t, owner))) = self.heap.peek() {
            if self.current.get(owner) == Some(t) {
                return;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(us: u64) -> Option<Instant> {
        Some(Instant::from_micros(us))
    }

    #[test]
    fn moved_and_cleared_deadlines_are_skipped() {
        let mut s = Schedule::default();
        s.set(Owner::Out(1), at(10));
        s.set(Owner::In(2), at(20));
        s.set(Owner::Out(1), at(30)); // moved later
        s.clean();
        assert_eq!(s.peek(), at(20));
        s.set(Owner::In(2), None);
        s.clean();
        assert_eq!(s.peek(), at(30));
        assert_eq!(s.pop_due(Instant::from_micros(29)), None);
        assert_eq!(s.pop_due(Instant::from_micros(30)), Some(Owner::Out(1)));
        assert_eq!(s.pop_due(Instant::from_micros(99)), None);
        s.clean();
        assert_eq!(s.peek(), None);
    }

    #[test]
    fn heap_stays_proportional_to_live_machines() {
        let mut s = Schedule::default();
        for i in 0..10_000u64 {
            s.set(Owner::Out(0), at(i + 1));
            s.clean();
        }
        let live = 1;
        assert!(s.heap.len() <= 2 * live + 64 + 1, "{}", s.heap.len());
        assert_eq!(s.peek(), at(10_000));
    }
}
