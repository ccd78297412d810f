//! The per-link id cache: the first use of an actor id on a link sends it whole with a
//! short index, later uses send only the index (Erlang's atom cache is the model).
//!
//! The sending half ([`IdCache`]) lives in an outbound session, the receiving half
//! ([`IdTable`]) in the matching inbound session; both live as long as the session, across
//! reconnects. This stays correct under retransmission because frames are only ever
//! resent verbatim and in order from the receiver's position: every definition in a frame
//! the receiver has is known to it, and every frame it lacks is resent with its own
//! definitions. When the sender must change frames it has not sent (dropping some, or
//! starting a new session), it first forgets every definition made at or after the first
//! frame it changes ([`IdCache::rewind`]) and encodes those frames again.
//!
//! Capacity is the smaller of the two procs' `Config::id_cache_entries` (the receiver
//! announces its own in the welcome). Entries are never evicted within a session: once the
//! cache is full, further ids travel whole. A receiving session holds at most that many
//! ids, so its memory is bounded by configuration.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::id::ActorId;

/// How an actor is named in an envelope on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Whole, not cached.
    Inline,
    /// Whole, and from now on index `n` on this link.
    Define(u16),
    /// Index `n`, defined earlier on this link.
    Ref(u16),
}

impl Slot {
    /// The varint tag that starts an actor in the metadata: 0 inline, `(n + 1) << 1` a
    /// reference, `(n + 1) << 1 | 1` a definition. Indices below 63 take one byte.
    pub(crate) fn tag(self) -> u32 {
        match self {
            Slot::Inline => 0,
            Slot::Ref(n) => (u32::from(n) + 1) << 1,
            Slot::Define(n) => ((u32::from(n) + 1) << 1) | 1,
        }
    }

    /// The slot a tag names; `None` for a tag no encoder writes.
    pub(crate) fn from_tag(tag: u32) -> Option<Slot> {
        if tag == 0 {
            return Some(Slot::Inline);
        }
        if tag == 1 {
            return None;
        }
        let n = u16::try_from((tag >> 1) - 1).ok()?;
        Some(if tag & 1 == 1 {
            Slot::Define(n)
        } else {
            Slot::Ref(n)
        })
    }
}

#[derive(Clone, Debug)]
struct Entry {
    id: ActorId,
    /// Sequence number of the frame that defined it.
    defined_at: u64,
}

/// The sending half: which ids this link has defined, and in which frame.
#[derive(Clone, Debug, Default)]
pub struct IdCache {
    entries: Vec<Option<Entry>>,
    index: BTreeMap<ActorId, u16>,
    free: Vec<u16>,
    cap: u16,
    /// The last ids looked up, by identity: a sender and a destination that keep talking
    /// are found without comparing ids.
    recent: [Option<(ActorId, u16)>; 2],
}

impl IdCache {
    /// An empty cache of `cap` entries (0 disables it).
    pub fn new(cap: u16) -> Self {
        IdCache {
            cap,
            ..IdCache::default()
        }
    }

    /// Capacity in force.
    pub fn capacity(&self) -> u16 {
        self.cap
    }

    /// Lowers the capacity to what the receiver announced; entries above it are forgotten
    /// (the caller rewinds and re-encodes anything not yet received that used them).
    pub fn limit(&mut self, cap: u16) {
        self.recent = [None, None];
        self.cap = self.cap.min(cap);
        while self.entries.len() > usize::from(self.cap) {
            if let Some(Some(e)) = self.entries.pop() {
                self.index.remove(&e.id);
            }
        }
        self.free.retain(|n| *n < cap);
    }

    /// How `id` is named in frame `seq`: a reference when defined already, else a
    /// definition while there is room, else inline.
    #[inline]
    pub(crate) fn slot(&mut self, id: &ActorId, seq: u64) -> Slot {
        for (known, n) in self.recent.iter().flatten() {
            if known.is_same(id) {
                return Slot::Ref(*n);
            }
        }
        self.slot_by_value(id, seq)
    }

    /// [`IdCache::slot`] past the identity memo.
    #[inline(never)]
    fn slot_by_value(&mut self, id: &ActorId, seq: u64) -> Slot {
        if let Some(&n) = self.index.get(id) {
            self.recent.rotate_right(1);
            self.recent[0] = Some((id.clone(), n));
            return Slot::Ref(n);
        }
        let n = match self.free.pop() {
            Some(n) => n,
            None if self.entries.len() < usize::from(self.cap) => {
                self.entries.push(None);
                (self.entries.len() - 1) as u16
            }
            None => return Slot::Inline,
        };
        self.entries[usize::from(n)] = Some(Entry {
            id: id.clone(),
            defined_at: seq,
        });
        self.index.insert(id.clone(), n);
        Slot::Define(n)
    }

    /// The id at index `n`, to decode frames this cache encoded.
    #[inline]
    pub fn get(&self, n: u16) -> Option<&ActorId> {
        self.entries.get(usize::from(n))?.as_ref().map(|e| &e.id)
    }

    /// Forgets every definition made in frame `seq` or later (those frames are about to
    /// be encoded again or dropped, and the receiver has none of them).
    pub fn rewind(&mut self, seq: u64) {
        self.recent = [None, None];
        for (n, slot) in self.entries.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|e| e.defined_at >= seq) {
                if let Some(e) = slot.take() {
                    self.index.remove(&e.id);
                }
                self.free.push(n as u16);
            }
        }
        // Hand out low indices first: they encode shorter.
        self.free.sort_unstable_by(|a, b| b.cmp(a));
    }
}

/// The receiving half: ids the peer defined on this link.
#[derive(Clone, Debug, Default)]
pub struct IdTable {
    ids: Vec<Option<ActorId>>,
    cap: u16,
}

impl IdTable {
    /// An empty table accepting indices below `cap`.
    pub fn new(cap: u16) -> Self {
        IdTable {
            ids: Vec::new(),
            cap,
        }
    }

    /// The capacity announced to the peer.
    pub fn capacity(&self) -> u16 {
        self.cap
    }

    /// The id at index `n`, if the peer defined it.
    #[inline]
    pub fn get(&self, n: u16) -> Option<&ActorId> {
        self.ids.get(usize::from(n))?.as_ref()
    }

    /// Records a definition; `false` if `n` is beyond the capacity announced.
    pub fn define(&mut self, n: u16, id: ActorId) -> bool {
        let i = usize::from(n);
        if n >= self.cap {
            return false;
        }
        if self.ids.len() <= i {
            self.ids.resize(i + 1, None);
        }
        self.ids[i] = Some(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{ChannelAddr, Name, ProcId};

    fn actor(name: &str) -> ActorId {
        ProcId::new(ChannelAddr::Local(1), Name::new("p").unwrap())
            .actor(Name::new(name).unwrap(), 0)
    }

    #[test]
    fn tags_roundtrip_and_small_indices_take_one_byte() {
        for s in [
            Slot::Inline,
            Slot::Ref(0),
            Slot::Define(0),
            Slot::Ref(62),
            Slot::Define(u16::MAX),
        ] {
            assert_eq!(Slot::from_tag(s.tag()), Some(s));
        }
        assert!(Slot::Define(62).tag() < 128);
        assert_eq!(Slot::from_tag(1), None);
    }

    #[test]
    fn define_once_then_refer_until_full_then_inline() {
        let mut c = IdCache::new(2);
        assert_eq!(c.slot(&actor("a"), 0), Slot::Define(0));
        assert_eq!(c.slot(&actor("a"), 1), Slot::Ref(0));
        assert_eq!(c.slot(&actor("b"), 2), Slot::Define(1));
        assert_eq!(c.slot(&actor("c"), 3), Slot::Inline);
        assert_eq!(c.get(1), Some(&actor("b")));
    }

    #[test]
    fn rewind_forgets_later_definitions_only() {
        let mut c = IdCache::new(4);
        c.slot(&actor("a"), 0);
        c.slot(&actor("b"), 5);
        c.slot(&actor("c"), 7);
        c.rewind(5);
        assert_eq!(c.slot(&actor("a"), 8), Slot::Ref(0));
        assert_eq!(c.slot(&actor("c"), 8), Slot::Define(1));
        assert_eq!(c.slot(&actor("b"), 9), Slot::Define(2));
        c.limit(2);
        assert_eq!(c.get(2), None);
    }

    #[test]
    fn table_refuses_indices_beyond_its_capacity() {
        let mut t = IdTable::new(3);
        assert!(t.define(2, actor("a")));
        assert!(!t.define(3, actor("b")));
        assert_eq!(t.get(2), Some(&actor("a")));
        assert_eq!(t.get(0), None);
    }
}

/// Ids of delivered envelopes the driver handed back (`Proc::recycle`), to give to the
/// next messages of the same sender to the same actor: taking a pair from here moves two
/// ids, where cloning them from the link's [`IdTable`] would update two shared reference
/// counts (and the driver would update them again when dropping them). In steady traffic
/// between two actors every received message reuses the pair its predecessor left, so
/// delivering costs no reference-count update for its ids at all.
///
/// Bounded by `Config::recycled_ids`; a pair that does not match the next message is
/// simply dropped when the stack is full, so the stack never holds stale ids for long.
#[derive(Debug, Default)]
pub(crate) struct IdSpares {
    pairs: Vec<(ActorId, ActorId)>,
    max: usize,
}

impl IdSpares {
    pub(crate) fn new(max: usize) -> Self {
        IdSpares {
            pairs: Vec::new(),
            max,
        }
    }

    /// Keeps `sender` and `dest` for reuse, if there is room.
    pub(crate) fn put(&mut self, sender: ActorId, dest: ActorId) {
        if self.pairs.len() < self.max {
            self.pairs.push((sender, dest));
        }
    }

    /// Owned copies of `sender` and `dest`: the last recycled pair if it is this very
    /// pair, clones otherwise.
    #[inline]
    pub(crate) fn take(&mut self, sender: &ActorId, dest: &ActorId) -> (ActorId, ActorId) {
        match self.pairs.last() {
            Some((s, d)) if s.is_same(sender) && d.is_same(dest) => self
                .pairs
                .pop()
                .unwrap_or_else(|| (sender.clone(), dest.clone())),
            _ => (sender.clone(), dest.clone()),
        }
    }
}

#[cfg(test)]
mod spares_tests {
    use super::*;
    use crate::id::{ChannelAddr, Name, ProcId};

    fn actor(name: &str) -> ActorId {
        let p = ProcId::new(ChannelAddr::Local(1), Name::new("p").unwrap());
        p.actor(Name::new(name).unwrap(), 0)
    }

    #[test]
    fn a_recycled_pair_serves_only_the_same_two_ids() {
        let (a, b, c) = (actor("a"), actor("b"), actor("c"));
        let mut spares = IdSpares::new(2);
        spares.put(a.clone(), b.clone());
        // Another pair, even of equal value but other storage, is cloned, not taken.
        let (s, d) = spares.take(&actor("a"), &b);
        assert!(!s.is_same(&a) && d.is_same(&b));
        assert_eq!(spares.pairs.len(), 1);
        let (s, d) = spares.take(&b, &a);
        assert!(s.is_same(&b) && d.is_same(&a));
        assert_eq!(spares.pairs.len(), 1, "a swapped pair is not this pair");
        let (s, d) = spares.take(&a, &b);
        assert!(s.is_same(&a) && d.is_same(&b));
        assert!(spares.pairs.is_empty(), "the very pair is taken");
        // Bounded: a third pair is dropped.
        spares.put(a.clone(), b.clone());
        spares.put(a.clone(), c.clone());
        spares.put(c.clone(), a.clone());
        assert_eq!(spares.pairs.len(), 2);
        let none = IdSpares::new(0);
        assert!(none.pairs.is_empty());
    }
}
