//! The registry: which actors and ports exist in one proc.
//!
//! Root names are unique per proc; reserving a name that is held is
//! [`RegistryError::Duplicate`]. A root actor is `ActorId(proc, name, 0)`; its children are
//! `ActorId(proc, name, n)` with `n` from a per-root counter that never goes back, even after
//! the root is released and the name reserved again, so a stale id never reaches a newer
//! actor.
//!
//! # Ports
//!
//! Ports below [`FIRST_EPHEMERAL_PORT`] are *well-known* and bound explicitly
//! ([`Registry::bind_port`]). A well-known port belongs to the name, not to one holder: when
//! a root name is released and reserved again, `name[0]`'s well-known ports (for example an
//! actor's mailbox) reach the new holder once it binds them. That is what they are for: a
//! peer that knows only the name can keep talking to whoever holds it.
//!
//! [`Registry::open_port`] hands out *ephemeral* ports, counting up from
//! [`FIRST_EPHEMERAL_PORT`] on one counter per root name, shared by the root and all its
//! children and kept, like the pid counter, when the root is released. So an ephemeral index
//! is never handed out twice in the life of the proc, whichever actor of the name asks and
//! however often the name changes hands: a reference to a port of an earlier holder finds no
//! port (`NoSuchPort`) instead of reaching the newer holder. One counter per root name
//! rather than per proc keeps the indices, which travel as varints, small.
//!
//! The bookkeeping of a root name (its pid and port counters, a few words) is kept for the
//! life of the proc, so memory grows with the number of distinct root names ever reserved,
//! not with how often they are reused.
//!
//! A once-port is retired by its first delivery.
//!
//! # Lookups on the data path
//!
//! Actors live in a slab; names and pids map to slab slots. Every message costs one
//! registry lookup at each end (the sender is live; the destination port takes it), and
//! those go through a two-entry memo keyed by the identity of the id's shared storage
//! (`ActorId::is_same`): ids on the data path are the very ids the API handed out or the
//! link's id cache decoded once, so a hit costs a pointer comparison instead of a name
//! comparison and two map searches. Removing an actor clears the memo.
//!
//! # Port handles
//!
//! Bound ports live in a slab of their own, and the driver names them by [`LocalPort`]: a
//! slot and the generation the slot had when the port was bound. `Output::Deliver` carries
//! it and `Proc::handle_consumed` takes it, so the driver keeps its receivers in a vector
//! indexed by [`LocalPort::index`] instead of a map keyed by port ids. A slot is reused
//! only with a new generation, so a handle of a closed port (a delivery still queued for
//! it, a late consumption report) never reaches the port bound there after it: the driver
//! compares the whole handle, and the registry ignores a stale one.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use crate::fingerprint::TypeFingerprint;
use crate::id::{ActorId, Name, NameError, PortId, ProcId};

/// Ports `0..FIRST_EPHEMERAL_PORT` are reserved for well-known uses.
pub const FIRST_EPHEMERAL_PORT: u64 = 1024;

/// The well-known port of an actor's mailbox: any proc that knows an actor's id can address
/// it at this port. Actor runtimes that give a mailbox one port per message type number
/// them up from here (so the mailbox of a single type is this port alone).
pub const ACTOR_PORT: u64 = 0;

/// How a port behaves on delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// Takes any number of messages.
    Stream,
    /// Takes one message, then is gone.
    Once,
}

/// Why a registry operation failed. The caller's fault.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// The root name is already held in this proc.
    Duplicate(Name),
    /// The name is not valid.
    BadName(NameError),
    /// The actor is not (or no longer) in this proc.
    NoSuchActor {
        /// Its name.
        name: Name,
        /// Its pid.
        pid: u64,
    },
    /// The port is bound already.
    PortInUse(u64),
    /// Well-known ports are below [`FIRST_EPHEMERAL_PORT`].
    NotWellKnown(u64),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Duplicate(n) => write!(f, "root name {n} is already in use"),
            RegistryError::BadName(e) => write!(f, "bad name: {e}"),
            RegistryError::NoSuchActor { name, pid } => {
                write!(f, "no actor {name}[{pid}] in this proc")
            }
            RegistryError::PortInUse(p) => write!(f, "port {p} is already bound"),
            RegistryError::NotWellKnown(i) => write!(
                f,
                "port {i} is not well-known (well-known ports are below {FIRST_EPHEMERAL_PORT})"
            ),
        }
    }
}

impl core::error::Error for RegistryError {}

#[derive(Debug)]
struct Root {
    /// Whether an actor holds the root name now.
    held: bool,
    /// Next child pid; 0 is the root itself.
    next_pid: u64,
    /// Next ephemeral port index of any actor of this name; never goes back.
    next_port: u64,
    /// The live actors of this name, by pid: their slots in `Registry::slab`.
    actors: BTreeMap<u64, usize>,
}

impl Default for Root {
    fn default() -> Self {
        Root {
            held: false,
            next_pid: 0,
            next_port: FIRST_EPHEMERAL_PORT,
            actors: BTreeMap::new(),
        }
    }
}

/// How much a port's queue may hold before deliveries to it wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages.
    pub msgs: usize,
    /// Payload bytes.
    pub bytes: usize,
}

/// A bound port and what its queue holds.
#[derive(Debug)]
struct Port {
    kind: PortKind,
    /// The message type it takes: an envelope carrying another is refused.
    accepts: Option<TypeFingerprint>,
    /// Delivered and not yet reported consumed.
    msgs: usize,
    bytes: usize,
}

impl Port {
    fn new(kind: PortKind, accepts: Option<TypeFingerprint>) -> Self {
        Port {
            kind,
            accepts,
            msgs: 0,
            bytes: 0,
        }
    }

    /// Why a message of type `typed` is refused, if it is of another type than the port
    /// takes.
    fn refuses(&self, typed: Option<TypeFingerprint>) -> Option<crate::envelope::Undeliverable> {
        match (self.accepts, typed) {
            (Some(expected), Some(t)) if expected != t => {
                Some(crate::envelope::Undeliverable::WrongType { expected })
            }
            _ => None,
        }
    }

    /// A port holding nothing always takes one message, however large.
    fn is_full(&self, limits: QueueLimits) -> bool {
        self.msgs > 0 && (self.msgs >= limits.msgs || self.bytes >= limits.bytes)
    }
}

#[derive(Debug, Default)]
struct Actor {
    /// Port index to slot in `Registry::ports`.
    ports: BTreeMap<u64, u32>,
}

/// A port bound in this proc, as the driver names it: small, `Copy`, and checked by
/// generation (see the module docs). Handed out by `Proc::local_port` and carried by
/// `Output::Deliver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalPort {
    slot: u32,
    generation: u32,
}

impl LocalPort {
    /// A dense index, for the driver's table of receivers: no two ports bound at the same
    /// time share one. Compare the whole handle to tell a port from a later one there.
    pub fn index(self) -> usize {
        self.slot as usize
    }
}

/// A slot of `Registry::ports`.
#[derive(Debug)]
struct PortSlot {
    generation: u32,
    port: Option<Port>,
}

/// What becomes of a message offered to a local port ([`Registry::admit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Placed in this port: it counts against the port's queue until consumed.
    Placed(LocalPort),
    /// This port's queue is at its limits: the message must wait.
    Full(LocalPort),
    /// It cannot be delivered, for this reason.
    Refused(crate::envelope::Undeliverable),
}

/// Actors and ports of one proc.
#[derive(Debug)]
pub struct Registry {
    proc: ProcId,
    /// By root name (looked up by `&str`, so no name is copied to find an actor).
    roots: BTreeMap<Name, Root>,
    /// The live actors; `None` in free slots.
    slab: Vec<Option<Actor>>,
    free: Vec<usize>,
    /// Bound ports, named by [`LocalPort`]; free slots are `None` and listed in
    /// `free_ports`.
    ports: Vec<PortSlot>,
    free_ports: Vec<u32>,
    /// The slots of the last ids looked up on the data path, most recent first.
    memo: [Option<(ActorId, usize)>; 2],
}

impl Registry {
    /// An empty registry for `proc`.
    pub fn new(proc: ProcId) -> Self {
        Registry {
            proc,
            roots: BTreeMap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            ports: Vec::new(),
            free_ports: Vec::new(),
            memo: [None, None],
        }
    }

    fn insert_actor(&mut self) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(Actor::default());
                i
            }
            None => {
                self.slab.push(Some(Actor::default()));
                self.slab.len() - 1
            }
        }
    }

    /// Binds `port` in a free slot, with a new generation if the slot was used before.
    fn insert_port(&mut self, port: Port) -> u32 {
        if let Some(slot) = self.free_ports.pop() {
            let s = &mut self.ports[slot as usize];
            s.generation = s.generation.wrapping_add(1);
            s.port = Some(port);
            return slot;
        }
        let slot = u32::try_from(self.ports.len()).expect("fewer than 2^32 ports");
        self.ports.push(PortSlot {
            generation: 0,
            port: Some(port),
        });
        slot
    }

    fn free_port(&mut self, slot: u32) {
        if let Some(s) = self.ports.get_mut(slot as usize) {
            if s.port.take().is_some() {
                self.free_ports.push(slot);
            }
        }
    }

    fn handle(&self, slot: u32) -> LocalPort {
        LocalPort {
            slot,
            generation: self.ports[slot as usize].generation,
        }
    }

    /// The port `handle` names, unless it was closed since.
    fn by_handle(&mut self, handle: LocalPort) -> Option<&mut Port> {
        let s = self.ports.get_mut(handle.index())?;
        (s.generation == handle.generation)
            .then_some(s.port.as_mut())
            .flatten()
    }

    /// The slot of `port`, if it is bound.
    fn port_slot(&self, port: &PortId) -> Option<u32> {
        self.actor(port.actor())?.ports.get(&port.index()).copied()
    }

    /// The handle of a bound local port, for the driver's table of receivers (see the
    /// module docs).
    pub fn local_port(&self, port: &PortId) -> Option<LocalPort> {
        self.port_slot(port).map(|slot| self.handle(slot))
    }

    /// The proc this registry belongs to.
    pub fn proc(&self) -> &ProcId {
        &self.proc
    }

    /// Reserves a root name: the new actor is `ActorId(proc, name, 0)`.
    pub fn reserve_root(&mut self, name: &str) -> Result<ActorId, RegistryError> {
        // `Name::new` applies the one name predicate, the same the parsers use.
        let name = Name::new(name).map_err(RegistryError::BadName)?;
        if self.roots.get(name.as_str()).is_some_and(|r| r.held) {
            return Err(RegistryError::Duplicate(name));
        }
        let slot = self.insert_actor();
        let root = self.roots.entry(name.clone()).or_default();
        root.held = true;
        root.next_pid = root.next_pid.max(1);
        root.actors.insert(0, slot);
        Ok(self.proc.actor(name, 0))
    }

    /// Creates a child of `parent`: same root name, the next pid of that root.
    pub fn child(&mut self, parent: &ActorId) -> Result<ActorId, RegistryError> {
        self.check_local(parent)?;
        if !self.roots.contains_key(parent.name().as_str()) {
            return Err(no_such(parent));
        }
        let slot = self.insert_actor();
        let root = self
            .roots
            .get_mut(parent.name().as_str())
            .ok_or_else(|| no_such(parent))?;
        let pid = root.next_pid;
        root.next_pid += 1;
        root.actors.insert(pid, slot);
        Ok(self.proc.actor(parent.name().clone(), pid))
    }

    /// Opens an ephemeral port on `actor`, with an index never handed out before to any
    /// actor of its root name. With `accepts`, envelopes typed otherwise are refused
    /// ([`Undeliverable::WrongType`](crate::envelope::Undeliverable::WrongType)).
    pub fn open_port(
        &mut self,
        actor: &ActorId,
        kind: PortKind,
        accepts: Option<TypeFingerprint>,
    ) -> Result<PortId, RegistryError> {
        let slot = self.find(actor).ok_or_else(|| no_such(actor))?;
        if !self.slab.get(slot).is_some_and(Option::is_some) {
            return Err(no_such(actor));
        }
        let root = self
            .roots
            .get_mut(actor.name().as_str())
            .ok_or_else(|| no_such(actor))?;
        let index = root.next_port;
        root.next_port += 1;
        let port = self.insert_port(Port::new(kind, accepts));
        if let Some(a) = self.slab.get_mut(slot).and_then(Option::as_mut) {
            a.ports.insert(index, port);
        }
        Ok(actor.port(index))
    }

    /// Binds a well-known port (below [`FIRST_EPHEMERAL_PORT`]); `accepts` as for
    /// [`Registry::open_port`].
    pub fn bind_port(
        &mut self,
        port: &PortId,
        kind: PortKind,
        accepts: Option<TypeFingerprint>,
    ) -> Result<(), RegistryError> {
        if port.index() >= FIRST_EPHEMERAL_PORT {
            return Err(RegistryError::NotWellKnown(port.index()));
        }
        if self
            .actor_mut(port.actor())?
            .ports
            .contains_key(&port.index())
        {
            return Err(RegistryError::PortInUse(port.index()));
        }
        let slot = self.insert_port(Port::new(kind, accepts));
        self.actor_mut(port.actor())?
            .ports
            .insert(port.index(), slot);
        Ok(())
    }

    /// Unbinds a port; later messages to it come back as `NoSuchPort`.
    pub fn close_port(&mut self, port: &PortId) {
        let slot = match self.actor_mut(port.actor()) {
            Ok(a) => a.ports.remove(&port.index()),
            Err(_) => None,
        };
        if let Some(slot) = slot {
            self.free_port(slot);
        }
    }

    /// Removes an actor and all its ports. Removing a root (pid 0) frees its name; its pid
    /// counter is kept.
    pub fn remove_actor(&mut self, actor: &ActorId) {
        if self.check_local(actor).is_err() {
            return;
        }
        if let Some(root) = self.roots.get_mut(actor.name().as_str()) {
            let gone = root.actors.remove(&actor.pid());
            if actor.pid() == 0 {
                root.held = false;
            }
            if let Some(slot) = gone {
                let gone = self.slab[slot].take();
                self.free.push(slot);
                self.memo = [None, None];
                for port in gone.into_iter().flat_map(|a| a.ports.into_values()) {
                    self.free_port(port);
                }
            }
        }
    }

    /// Whether the actor is registered here.
    pub fn contains_actor(&self, actor: &ActorId) -> bool {
        self.actor(actor).is_some()
    }

    /// [`Registry::contains_actor`] on the data path (memoized, see the module docs).
    #[inline]
    pub(crate) fn is_live(&mut self, actor: &ActorId) -> bool {
        self.slot(actor).is_some()
    }

    /// Offers one message of `bytes` of type `typed` to the local `port` (one lookup):
    /// placed and counted (a once-port is retired), held back because the port is full, or
    /// refused (no such actor or port, or a port typed otherwise, which is checked first).
    #[inline]
    pub(crate) fn admit(
        &mut self,
        port: &PortId,
        bytes: usize,
        typed: Option<TypeFingerprint>,
        limits: QueueLimits,
    ) -> Admit {
        use crate::envelope::Undeliverable;
        let Some(actor) = self.slot(port.actor()) else {
            return Admit::Refused(Undeliverable::NoSuchActor);
        };
        let Some(slot) = self.slab[actor]
            .as_ref()
            .and_then(|a| a.ports.get(&port.index()).copied())
        else {
            return Admit::Refused(Undeliverable::NoSuchPort);
        };
        let handle = self.handle(slot);
        let Some(p) = self.ports[slot as usize].port.as_mut() else {
            return Admit::Refused(Undeliverable::NoSuchPort);
        };
        if let Some(why) = p.refuses(typed) {
            return Admit::Refused(why);
        }
        if p.is_full(limits) {
            return Admit::Full(handle);
        }
        if p.kind == PortKind::Once {
            self.retire_once(actor, port.index(), slot);
        } else {
            p.msgs += 1;
            p.bytes += bytes;
        }
        Admit::Placed(handle)
    }

    /// A once-port took its one message: unbound, its slot free for a later port.
    fn retire_once(&mut self, actor: usize, index: u64, slot: u32) {
        if let Some(a) = self.slab[actor].as_mut() {
            a.ports.remove(&index);
        }
        self.free_port(slot);
    }

    /// The slab slot of a live local actor, through the memo.
    #[inline]
    fn slot(&mut self, actor: &ActorId) -> Option<usize> {
        match &self.memo {
            [Some((id, slot)), _] if id.is_same(actor) => return Some(*slot),
            [_, Some((id, slot))] if id.is_same(actor) => {
                let slot = *slot;
                self.memo.swap(0, 1);
                return Some(slot);
            }
            _ => {}
        }
        let slot = self.find(actor)?;
        self.memo[1] = Some((actor.clone(), slot));
        self.memo.swap(0, 1);
        Some(slot)
    }

    fn find(&self, actor: &ActorId) -> Option<usize> {
        self.check_local(actor).ok()?;
        self.roots
            .get(actor.name().as_str())?
            .actors
            .get(&actor.pid())
            .copied()
    }

    /// Accounts for one delivery of `bytes` of type `typed` to `port`: `Err` says why it
    /// cannot be delivered (no such actor or port, or a port typed otherwise); a once-port
    /// is retired by a successful delivery. The message then counts against the port's
    /// queue until [`Registry::consumed`] reports it taken.
    pub fn deliver(
        &mut self,
        port: &PortId,
        bytes: usize,
        typed: Option<TypeFingerprint>,
    ) -> Result<LocalPort, crate::envelope::Undeliverable> {
        let unlimited = QueueLimits {
            msgs: usize::MAX,
            bytes: usize::MAX,
        };
        match self.admit(port, bytes, typed, unlimited) {
            Admit::Placed(handle) | Admit::Full(handle) => Ok(handle),
            Admit::Refused(why) => Err(why),
        }
    }

    /// Whether `port` exists and its queue is at `limits`: a delivery must wait for
    /// [`Registry::consumed`]. A port holding nothing always takes one message, however
    /// large.
    pub fn is_full(&self, port: &PortId, limits: QueueLimits) -> bool {
        self.port_slot(port)
            .and_then(|slot| self.ports[slot as usize].port.as_ref())
            .is_some_and(|p| p.is_full(limits))
    }

    /// [`Registry::is_full`] by handle: false for a port closed since.
    pub(crate) fn is_full_at(&mut self, port: LocalPort, limits: QueueLimits) -> bool {
        self.by_handle(port).is_some_and(|p| p.is_full(limits))
    }

    /// The driver took `msgs` messages of `bytes` payload bytes in all from `port`'s queue.
    /// A handle of a port closed since is ignored.
    pub fn consumed(&mut self, port: LocalPort, msgs: usize, bytes: usize) {
        if let Some(p) = self.by_handle(port) {
            p.msgs = p.msgs.saturating_sub(msgs);
            p.bytes = p.bytes.saturating_sub(bytes);
        }
    }

    /// Messages (and bytes) delivered to `port` and not yet reported consumed.
    pub fn queued(&self, port: &PortId) -> (usize, usize) {
        self.port_slot(port)
            .and_then(|slot| self.ports[slot as usize].port.as_ref())
            .map_or((0, 0), |p| (p.msgs, p.bytes))
    }

    /// Number of live actors.
    pub fn actor_count(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    fn check_local(&self, actor: &ActorId) -> Result<(), RegistryError> {
        // Compare by name only: the address a peer used may be an alias of ours.
        if actor.proc().name() == self.proc.name() {
            Ok(())
        } else {
            Err(no_such(actor))
        }
    }

    fn actor(&self, actor: &ActorId) -> Option<&Actor> {
        self.slab.get(self.find(actor)?)?.as_ref()
    }

    fn actor_mut(&mut self, actor: &ActorId) -> Result<&mut Actor, RegistryError> {
        let slot = self.find(actor).ok_or_else(|| no_such(actor))?;
        self.slab
            .get_mut(slot)
            .and_then(Option::as_mut)
            .ok_or_else(|| no_such(actor))
    }
}

fn no_such(actor: &ActorId) -> RegistryError {
    RegistryError::NoSuchActor {
        name: actor.name().clone(),
        pid: actor.pid(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Undeliverable;
    use crate::id::ChannelAddr;

    fn reg() -> Registry {
        Registry::new(ProcId::new(ChannelAddr::Local(1), Name::new("p").unwrap()))
    }

    #[test]
    fn duplicate_root_is_refused_until_released() {
        let mut r = reg();
        let a = r.reserve_root("client").unwrap();
        assert_eq!(a.pid(), 0);
        assert_eq!(
            r.reserve_root("client"),
            Err(RegistryError::Duplicate(Name::new("client").unwrap()))
        );
        r.remove_actor(&a);
        assert_eq!(r.reserve_root("client").unwrap(), a);
    }

    #[test]
    fn bad_names_are_refused_with_the_parser_error() {
        let mut r = reg();
        for bad in ["", "1abc", "a b", "a,b"] {
            let want = crate::id::validate_name(bad).unwrap_err();
            assert_eq!(r.reserve_root(bad), Err(RegistryError::BadName(want)));
        }
    }

    #[test]
    fn child_pids_count_up_per_root_and_survive_release() {
        let mut r = reg();
        let a = r.reserve_root("a").unwrap();
        let b = r.reserve_root("b").unwrap();
        let a1 = r.child(&a).unwrap();
        let a2 = r.child(&a1).unwrap();
        let b1 = r.child(&b).unwrap();
        assert_eq!((a1.pid(), a2.pid(), b1.pid()), (1, 2, 1));
        assert_eq!(a2.name().as_str(), "a");
        r.remove_actor(&a);
        let again = r.reserve_root("a").unwrap();
        assert_eq!(r.child(&again).unwrap().pid(), 3);
    }

    #[test]
    fn ephemeral_ports_are_never_reused() {
        let mut r = reg();
        let a = r.reserve_root("a").unwrap();
        let p1 = r.open_port(&a, PortKind::Stream, None).unwrap();
        assert_eq!(p1.index(), FIRST_EPHEMERAL_PORT);
        r.close_port(&p1);
        let p2 = r.open_port(&a, PortKind::Stream, None).unwrap();
        assert_eq!(p2.index(), FIRST_EPHEMERAL_PORT + 1);
        assert_eq!(r.deliver(&p1, 0, None), Err(Undeliverable::NoSuchPort));
        assert!(r.deliver(&p2, 0, None).is_ok());
    }

    #[test]
    fn a_reserved_again_name_never_gets_its_predecessors_ephemeral_ports() {
        let mut r = reg();
        let old = r.reserve_root("svc").unwrap();
        let p_old = r.open_port(&old, PortKind::Stream, None).unwrap();
        let once_old = r.open_port(&old, PortKind::Once, None).unwrap();
        r.remove_actor(&old);
        let new = r.reserve_root("svc").unwrap();
        assert_eq!(new, old, "the name is held again as svc[0]");
        let p_new = r.open_port(&new, PortKind::Stream, None).unwrap();
        let once_new = r.open_port(&new, PortKind::Once, None).unwrap();
        assert!(p_new.index() > once_old.index(), "{p_new} after {once_old}");
        assert_ne!(once_new, once_old);
        assert_eq!(r.deliver(&p_old, 0, None), Err(Undeliverable::NoSuchPort));
        assert_eq!(
            r.deliver(&once_old, 0, None),
            Err(Undeliverable::NoSuchPort)
        );
        assert!(r.deliver(&p_new, 0, None).is_ok());
    }

    #[test]
    fn children_of_a_root_never_share_an_ephemeral_index() {
        let mut r = reg();
        let a = r.reserve_root("a").unwrap();
        let c = r.child(&a).unwrap();
        let pa = r.open_port(&a, PortKind::Stream, None).unwrap();
        let pc = r.open_port(&c, PortKind::Stream, None).unwrap();
        assert_ne!(pa.index(), pc.index());
        // A port index of a removed child is not handed out again, to a new child either.
        r.remove_actor(&c);
        let c2 = r.child(&a).unwrap();
        let pc2 = r.open_port(&c2, PortKind::Stream, None).unwrap();
        assert!(pc2.index() > pc.index());
        // Another root name counts on its own.
        let b = r.reserve_root("b").unwrap();
        assert_eq!(
            r.open_port(&b, PortKind::Stream, None).unwrap().index(),
            FIRST_EPHEMERAL_PORT
        );
    }

    #[test]
    fn well_known_ports_of_a_name_reach_its_new_holder() {
        let mut r = reg();
        let old = r.reserve_root("svc").unwrap();
        let mailbox = old.port(0);
        r.bind_port(&mailbox, PortKind::Stream, None).unwrap();
        r.remove_actor(&old);
        assert_eq!(
            r.deliver(&mailbox, 0, None),
            Err(Undeliverable::NoSuchActor)
        );
        let new = r.reserve_root("svc").unwrap();
        assert_eq!(r.deliver(&mailbox, 0, None), Err(Undeliverable::NoSuchPort));
        r.bind_port(&new.port(0), PortKind::Stream, None).unwrap();
        assert!(r.deliver(&mailbox, 0, None).is_ok());
    }

    #[test]
    fn a_port_is_full_at_its_limits_until_consumed() {
        let mut r = reg();
        let a = r.reserve_root("a").unwrap();
        let p = r.open_port(&a, PortKind::Stream, None).unwrap();
        let limits = QueueLimits {
            msgs: 2,
            bytes: 100,
        };
        assert!(!r.is_full(&p, limits));
        r.deliver(&p, 10, None).unwrap();
        assert!(!r.is_full(&p, limits));
        r.deliver(&p, 10, None).unwrap();
        assert!(r.is_full(&p, limits), "two messages");
        r.consumed(r.local_port(&p).unwrap(), 1, 10);
        assert!(!r.is_full(&p, limits));
        r.deliver(&p, 500, None).unwrap();
        assert!(r.is_full(&p, limits), "over the byte limit");
        assert_eq!(r.queued(&p), (2, 510));
        r.consumed(r.local_port(&p).unwrap(), 1, 10);
        r.consumed(r.local_port(&p).unwrap(), 1, 500);
        // An empty port takes one message whatever its size.
        assert!(!r.is_full(&p, QueueLimits { msgs: 1, bytes: 0 }));
    }

    #[test]
    fn once_ports_retire_after_one_delivery() {
        let mut r = reg();
        let a = r.reserve_root("a").unwrap();
        let p = r.open_port(&a, PortKind::Once, None).unwrap();
        assert!(r.deliver(&p, 0, None).is_ok());
        assert_eq!(r.deliver(&p, 0, None), Err(Undeliverable::NoSuchPort));
    }

    #[test]
    fn typed_ports_refuse_other_types_without_spending_a_once_port() {
        let mut r = reg();
        let a = r.reserve_root("a").unwrap();
        let (want, other) = (TypeFingerprint::of::<u32>(), TypeFingerprint::of::<u64>());
        let wrong = Err(Undeliverable::WrongType { expected: want });
        let p = r.open_port(&a, PortKind::Stream, Some(want)).unwrap();
        assert_eq!(r.deliver(&p, 4, Some(other)), wrong);
        assert_eq!(r.queued(&p), (0, 0));
        assert!(r.deliver(&p, 4, Some(want)).is_ok());
        // Untyped envelopes are not checked.
        assert!(r.deliver(&p, 4, None).is_ok());
        assert_eq!(r.queued(&p), (2, 8));
        let once = r.open_port(&a, PortKind::Once, Some(want)).unwrap();
        assert_eq!(r.deliver(&once, 0, Some(other)), wrong);
        assert!(r.deliver(&once, 0, Some(want)).is_ok());
        assert_eq!(
            r.deliver(&once, 0, Some(want)),
            Err(Undeliverable::NoSuchPort)
        );
        // An untyped port takes anything.
        let any = r.open_port(&a, PortKind::Stream, None).unwrap();
        assert!(r.deliver(&any, 0, Some(other)).is_ok());
    }

    #[test]
    fn well_known_ports_bind_once_and_only_below_the_range() {
        let mut r = reg();
        let a = r.reserve_root("a").unwrap();
        r.bind_port(&a.port(0), PortKind::Stream, None).unwrap();
        assert_eq!(
            r.bind_port(&a.port(0), PortKind::Stream, None),
            Err(RegistryError::PortInUse(0))
        );
        assert_eq!(
            r.bind_port(&a.port(FIRST_EPHEMERAL_PORT), PortKind::Stream, None),
            Err(RegistryError::NotWellKnown(FIRST_EPHEMERAL_PORT))
        );
    }

    #[test]
    fn removing_an_actor_unbinds_its_ports() {
        let mut r = reg();
        let a = r.reserve_root("a").unwrap();
        let c = r.child(&a).unwrap();
        let p = r.open_port(&c, PortKind::Stream, None).unwrap();
        r.remove_actor(&c);
        assert_eq!(r.deliver(&p, 0, None), Err(Undeliverable::NoSuchActor));
        assert!(r.contains_actor(&a));
        assert_eq!(r.actor_count(), 1);
    }

    #[test]
    fn a_port_handle_never_reaches_a_later_port_in_its_slot() {
        let mut r = reg();
        let a = r.reserve_root("a").unwrap();
        let limits = QueueLimits {
            msgs: 1,
            bytes: 1 << 20,
        };
        let old = r.open_port(&a, PortKind::Stream, None).unwrap();
        let old_h = r.local_port(&old).unwrap();
        assert_eq!(r.deliver(&old, 3, None), Ok(old_h));
        r.close_port(&old);
        assert_eq!(r.local_port(&old), None);
        let new = r.open_port(&a, PortKind::Stream, None).unwrap();
        let new_h = r.local_port(&new).unwrap();
        assert_eq!(new_h.index(), old_h.index(), "the slot is reused");
        assert_ne!(new_h, old_h, "with a new generation");
        assert_eq!(r.admit(&new, 5, None, limits), Admit::Placed(new_h));
        assert_eq!(r.admit(&new, 5, None, limits), Admit::Full(new_h));
        r.consumed(old_h, 1, 5);
        assert_eq!(r.queued(&new), (1, 5), "a stale handle is ignored");
        assert!(!r.is_full_at(old_h, limits));
        assert!(r.is_full_at(new_h, limits));
        r.consumed(new_h, 1, 5);
        assert_eq!(r.queued(&new), (0, 0));
        // A once-port's slot is free after its delivery; removing an actor frees the rest.
        let once = r.open_port(&a, PortKind::Once, None).unwrap();
        let once_h = r.local_port(&once).unwrap();
        assert_eq!(r.deliver(&once, 1, None), Ok(once_h));
        assert_eq!(r.local_port(&once), None);
        r.remove_actor(&a);
        assert_eq!(r.local_port(&new), None);
        assert!(!r.is_full_at(new_h, limits));
    }
}
