//! The engine's table of port receivers, indexed by core's port handles.
//!
//! Core names every bound port by a [`LocalPort`] (a slot and its generation) in
//! `Output::Deliver` and `Proc::handle_consumed`, so a delivery finds its receiver by
//! index, with no hashing of port ids. An entry is found only under the very handle it was
//! bound with: a delivery still queued for a port closed since, whose slot core gave to a
//! later port, misses instead of reaching the later port's receiver, and goes back to its
//! sender as `NoSuchPort`.

use std::sync::Arc;

use procwire_core::envelope::Envelope;
use procwire_core::id::{ActorId, PortId};
use procwire_core::proc::LocalPort;
use procwire_core::registry::PortKind;

use crate::sync::Queue;

/// A bound port's receiver side, as the engine holds it.
pub(crate) struct PortEntry {
    pub(crate) local: LocalPort,
    pub(crate) id: PortId,
    pub(crate) queue: Arc<Queue<Envelope>>,
    pub(crate) kind: PortKind,
}

/// Receivers by [`LocalPort::index`].
#[derive(Default)]
pub(crate) struct PortTable {
    slots: Vec<Option<PortEntry>>,
}

impl PortTable {
    /// Adds `entry` at its handle's index (core hands out each index to one bound port at a
    /// time, so the slot is free unless the engine missed a retirement: then the newer
    /// port wins, and the older receiver is closed).
    pub(crate) fn insert(&mut self, entry: PortEntry) {
        let i = entry.local.index();
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        if let Some(old) = self.slots[i].replace(entry) {
            old.queue.close();
        }
    }

    /// The entry bound under exactly `local`.
    pub(crate) fn get(&self, local: LocalPort) -> Option<&PortEntry> {
        self.slots
            .get(local.index())?
            .as_ref()
            .filter(|e| e.local == local)
    }

    /// Removes the entry bound under exactly `local`.
    pub(crate) fn remove(&mut self, local: LocalPort) -> Option<PortEntry> {
        let slot = self.slots.get_mut(local.index())?;
        match slot {
            Some(e) if e.local == local => slot.take(),
            _ => None,
        }
    }

    /// Removes and closes every port of `actor`.
    pub(crate) fn close_actor(&mut self, actor: &ActorId) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|e| e.id.actor() == actor) {
                if let Some(e) = slot.take() {
                    e.queue.close();
                }
            }
        }
    }

    /// Removes and closes every port.
    pub(crate) fn close_all(&mut self) {
        for e in self.slots.drain(..).flatten() {
            e.queue.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwire_core::id::{ChannelAddr, Name, ProcId};
    use procwire_core::registry::Registry;

    use crate::sync::PopError;

    fn entry(reg: &Registry, port: &PortId) -> PortEntry {
        PortEntry {
            local: reg.local_port(port).expect("bound"),
            id: port.clone(),
            queue: Arc::new(Queue::new()),
            kind: PortKind::Stream,
        }
    }

    #[test]
    fn a_handle_finds_only_the_port_it_was_bound_with() {
        let proc = ProcId::new(ChannelAddr::Local(1), Name::new("p").unwrap());
        let mut reg = Registry::new(proc);
        let a = reg.reserve_root("a").unwrap();
        let mut table = PortTable::default();
        let old = reg.open_port(&a, PortKind::Stream, None).unwrap();
        let old_entry = entry(&reg, &old);
        let old_h = old_entry.local;
        let old_queue = old_entry.queue.clone();
        table.insert(old_entry);
        assert_eq!(table.get(old_h).map(|e| &e.id), Some(&old));
        // The port closes and core gives its slot to a new one: the old handle misses.
        assert!(table.remove(old_h).is_some());
        reg.close_port(&old);
        let new = reg.open_port(&a, PortKind::Stream, None).unwrap();
        let new_entry = entry(&reg, &new);
        let new_h = new_entry.local;
        assert_eq!(new_h.index(), old_h.index());
        table.insert(new_entry);
        assert!(table.get(old_h).is_none(), "a stale handle reaches nothing");
        assert!(table.remove(old_h).is_none(), "nor removes the newer port");
        assert_eq!(table.get(new_h).map(|e| &e.id), Some(&new));
        assert!(
            matches!(old_queue.try_pop(), Err(PopError::Empty)),
            "not closed"
        );
        // Closing an actor's ports closes their queues.
        let queue = table.get(new_h).map(|e| e.queue.clone()).unwrap();
        table.close_actor(&a);
        assert!(table.get(new_h).is_none());
        assert!(matches!(queue.try_pop(), Err(PopError::Closed)));
    }
}
