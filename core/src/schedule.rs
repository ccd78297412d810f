//! The deadlines of all machines of a proc in one heap, so that reading the next deadline
//! and finding who is due cost the same with ten sessions or ten thousand.
//!
//! Each machine keeps its own timers (`timer::Timers`); after an input touches a machine,
//! the proc reports the machine's earliest deadline here with [`Schedule::set`]. A moved
//! deadline leaves its old heap entry behind; entries that no longer match the recorded
//! deadline are skipped (and the heap is rebuilt when such entries outnumber live ones).

use alloc::collections::{BTreeMap, BinaryHeap};
use alloc::vec::Vec;
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
///
/// The recorded deadlines of sessions sit in vectors indexed by slot, so recording one
/// (after every input, for each machine it touched) is a comparison and a store, not a
/// map update; accepted connections, few and short-lived, are in a map.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    heap: BinaryHeap<Reverse<(Instant, Owner)>>,
    out: Vec<Option<Instant>>,
    inb: Vec<Option<Instant>>,
    accept: BTreeMap<ConnId, Instant>,
    /// Machines with a deadline.
    live: usize,
    /// Changed since the last [`Schedule::clean`].
    dirty: bool,
}

impl Schedule {
    fn get(&self, owner: Owner) -> Option<Instant> {
        match owner {
            Owner::Out(i) => self.out.get(i).copied().flatten(),
            Owner::In(i) => self.inb.get(i).copied().flatten(),
            Owner::Accept(c) => self.accept.get(&c).copied(),
        }
    }

    /// Records `at` for `owner`, returning what was recorded before.
    fn put(&mut self, owner: Owner, at: Option<Instant>) -> Option<Instant> {
        let old = match owner {
            Owner::Out(i) | Owner::In(i) => {
                let v = if let Owner::Out(_) = owner {
                    &mut self.out
                } else {
                    &mut self.inb
                };
                if v.len() <= i {
                    // Nothing recorded beyond the end: clearing is a no-op.
                    at?;
                    v.resize(i + 1, None);
                }
                core::mem::replace(&mut v[i], at)
            }
            Owner::Accept(c) => match at {
                Some(t) => self.accept.insert(c, t),
                None => self.accept.remove(&c),
            },
        };
        self.live = self.live + usize::from(at.is_some()) - usize::from(old.is_some());
        old
    }

    /// Records `owner`'s earliest deadline (`None`: it has none).
    pub(crate) fn set(&mut self, owner: Owner, at: Option<Instant>) {
        if self.get(owner) == at {
            return;
        }
        self.put(owner, at);
        self.dirty = true;
        if let Some(t) = at {
            self.heap.push(Reverse((t, owner)));
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
            self.dirty = true;
            if self.get(owner) == Some(t) {
                self.put(owner, None);
                return Some(owner);
            }
        }
        None
    }

    /// Drops stale entries from the top, so that [`Schedule::peek`] is exact, and rebuilds
    /// the heap when stale entries dominate it.
    pub(crate) fn clean(&mut self) {
        if !core::mem::take(&mut self.dirty) {
            return;
        }
        let live = self.live;
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
            let out = self.out.iter().enumerate();
            let out = out.filter_map(|(i, t)| Some(Reverse(((*t)?, Owner::Out(i)))));
            let inb = self.inb.iter().enumerate();
            let inb = inb.filter_map(|(i, t)| Some(Reverse(((*t)?, Owner::In(i)))));
            let acc = self
                .accept
                .iter()
                .map(|(c, t)| Reverse((*t, Owner::Accept(*c))));
            self.heap.extend(out.chain(inb).chain(acc));
        }
        while let Some(&Reverse((t, owner))) = self.heap.peek() {
            if self.get(owner) == Some(t) {
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
