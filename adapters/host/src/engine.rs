//! The drive loop around core's [`Proc`](CoreProc) machine. Runtime-neutral.
//!
//! # Shape
//!
//! The core machine lives in one [`Engine`], behind a mutex that is never held across an
//! `.await`. Every source of input (a reader task with bytes, a dial task, the timer task,
//! an [`Instance`](crate::Instance) sending) runs one *turn* of the loop agreed in the design:
//!
//! 1. lock, read the clock, mutate the machine with one `handle_*(now, ...)` call;
//! 2. drain `poll_output()` until `None`, carrying out each output without blocking
//!    (bytes are queued, in order, on the connection's write queue without waking anyone,
//!    messages to port queues, each run of deliveries to one port in one push whose
//!    receiver is noted for step 4, dials are spawned);
//! 3. read `poll_timeout()`; note whether the deadline moved earlier than the one the
//!    timer task is sleeping on;
//! 4. release the lock; then wake the receivers step 2 pushed to and, if step 3 says so,
//!    the timer task (so it re-arms its single timer), so that no task is woken into a
//!    lock that its waker still holds; then write the bytes step 2 queued, on this same
//!    task, for each connection nobody else is writing on ([`crate::net::flush`]). Only
//!    when the socket would block (or a write is partial or fails, or a close is queued)
//!    does the connection's writer task take over, so an idle connection's bytes cost no
//!    task hop.
//!
//! Sends are batch-first. A send's turn is the whole loop only when the turn before it was
//! not a send's; from the second send in a row on, step 1 is all a send does (core encodes
//! the message into its link's chunk, under the lock, with the `now` of the last turn) and
//! steps 2–4 wait for one later turn, which drains and writes the whole run: frames
//! coalesced into one transmit, one write, one push and one wake per receiving port. That
//! turn comes from the timer task (woken once per run), from the send after 256 deferred
//! ones, from any other turn, or from a receiver of this proc that found its queue empty (so
//! a task never waits on its own unsent messages). Sends from different threads are never
//! in a row: independent senders on a multi-threaded runtime each write at once. Core
//! decides each send at once, so `try_send` still answers `TooLarge`, `WouldBlock` and the
//! rest synchronously; only the effects wait. A small typed message is serialized into the
//! engine's scratch buffer and sent from its scratch envelope by reference
//! ([`Engine::try_send_with`]): no allocation and no reference count per message.
//!
//! Turning the loop on the caller's task instead of hopping to a dedicated driver task lets
//! `try_send` report `TooLarge`/`WouldBlock` synchronously and saves a cross-thread wake-up
//! per message, which on small machines costs more than the work itself. The only pieces the
//! engine needs from outside are in [`Hooks`]: a clock, task spawning, dialing, and re-arming
//! the timer; the proc driver in [`crate::proc`] provides them on top of a
//! [`Runtime`](crate::Runtime).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use procwire_core::envelope::{Envelope, Undeliverable};
use procwire_core::id::{ActorId, ChannelAddr, PortId, ProcId};
use procwire_core::proc::{
    ConnId, DialError, Event, LocalPort, Output, Proc as CoreProc, SendError as CoreSendError,
    Stats,
};
use procwire_core::registry::{PortKind, RegistryError};
use procwire_core::time::Instant;

use crate::error::SendError;
use crate::fasthash::FastMap;
use crate::links::{LinkError, Links};
use crate::ports::{PortEntry, PortTable};
use crate::runtime::BoxFuture;
use crate::sync::{lock, PushError, Queue, Watch};
use crate::typed::{Returned, TypeFingerprint};

/// What the proc driver provides to the engine.
pub(crate) trait Hooks: Send + Sync + 'static {
    /// Now, on the proc's clock (microseconds since the proc started).
    fn now(&self) -> Instant;
    /// Runs `fut` as a task of this proc (aborted at the latest when the proc goes away).
    fn spawn(&self, fut: BoxFuture);
    /// A fresh timer of the runtime, boxed (for users' sleeps and timeouts).
    fn timer(&self) -> Box<dyn crate::runtime::Timer>;
    /// Connects `conn` to `addr`; on success starts its reader and writer (the writer takes
    /// from `ctl.writes`) and calls [`Engine::connected`], on failure [`Engine::closed`].
    fn dial(&self, engine: &Arc<Engine>, conn: ConnId, addr: ChannelAddr, ctl: Arc<ConnCtl>);
    /// The machine's next deadline moved earlier, or sends in a row left their output for a
    /// later turn: the timer task must run that turn ([`Engine::drain_deferred`]) and
    /// re-read the deadline.
    fn rearm_timer(&self);
    /// Core closed `conn` because of `error` (the driver counts and logs it).
    fn connection_failed(&self, conn: ConnId, error: &procwire_core::proc::ConnError);
    /// Core refused inbound `conn` for `reason` (the driver counts and logs it).
    fn refused(&self, conn: ConnId, reason: procwire_core::envelope::RefuseReason);
    /// Every event core reports, before the engine acts on it (link events for users).
    fn core_event(&self, _ev: &Event) {}
}

/// A command for a connection's writer task.
pub(crate) enum WriteCmd {
    /// Write these bytes after everything queued before them.
    Data(Bytes),
    /// Flush what is queued, then close the connection.
    Close,
}

/// The adapter's handle on one connection's tasks.
pub(crate) struct ConnCtl {
    /// Bytes to write, in order: queued under the engine lock, taken by whoever holds
    /// [`ConnCtl::write`]. Pushing wakes nobody: the turn that pushed writes the bytes
    /// itself after the lock is released ([`crate::net::flush`]), or, on a busy connection,
    /// nudges the writer task once ([`crate::net::WriteHalf::nudge`]).
    pub(crate) writes: Queue<WriteCmd>,
    /// The connection's write half, shared by the writer task and the turns' tasks.
    pub(crate) write: crate::net::WriteHalf,
    /// Set when the reader must stop (the connection is closing or gone).
    stop_reading: Watch<bool>,
}

impl ConnCtl {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ConnCtl {
            writes: Queue::new(),
            write: crate::net::WriteHalf::new(),
            stop_reading: Watch::new(false),
        })
    }

    /// `Ready` once the reader must stop.
    pub(crate) fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.stop_reading.poll_until(cx, |s| *s).map(|_| ())
    }

    /// Graceful close: flush queued writes, then close; stop reading now.
    pub(crate) fn close_after_flush(&self) {
        let _ = self.writes.push(WriteCmd::Close);
        self.writes.close();
        self.write.wake_task();
        self.stop_reading.set(true);
    }

    /// The connection is gone: stop both tasks.
    pub(crate) fn abandon(&self) {
        self.writes.close();
        self.write.wake_task();
        self.stop_reading.set(true);
    }
}

/// A port just bound: its id, the handle core names it by (`None` if the proc had
/// stopped: the queue is then closed), and the queue its receiver drains.
pub(crate) struct Bound {
    pub(crate) port: PortId,
    pub(crate) local: Option<LocalPort>,
    pub(crate) queue: Arc<Queue<Envelope>>,
}

/// Where a proc is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serving.
    Running,
    /// `shutdown` was asked: core flushes or returns what is in flight.
    Draining,
    /// Core reported `ShutdownComplete`.
    Drained,
    /// Ports are closed and connections are being torn down.
    Stopped,
}

struct ActorEntry {
    returns: Arc<Queue<Returned>>,
}

/// Everything behind the engine's lock.
struct State {
    core: CoreProc,
    ports: PortTable,
    /// Deliveries to `staged_port` collected during a drain, pushed to its receiver's
    /// queue in one batch (one lock, one wake) when the port changes or the drain ends.
    staged: VecDeque<Envelope>,
    staged_port: Option<LocalPort>,
    actors: FastMap<ActorId, ActorEntry>,
    conns: FastMap<ConnId, Arc<ConnCtl>>,
    /// Senders waiting for a link's window to open.
    writable: FastMap<ProcId, Vec<Waker>>,
    /// The deadline the timer task sleeps on.
    armed: Option<Instant>,
    /// Undeliverable returns dropped because their sender was gone or its queue full.
    returns_dropped: u64,
    /// Why each peer that core gave up on was unreachable (its last dial error), for the
    /// returns that follow; forgotten when it connects again.
    unreachable_cause: FastMap<ProcId, DialError>,
    /// The connections this turn queued bytes for.
    flushes: crate::net::Flushes,
    /// Turns run so far (the current one included).
    turns: u64,
    /// The `now` of the last turn: what a deferred send hands core.
    now: Instant,
    /// What the turns since the last drain were (see [`Engine::send_turn`]).
    sends: Sends,
    /// The thread the last send's turn ran on ([`thread_mark`]).
    send_thread: usize,
    /// Receivers to wake once the turn has released the lock.
    wakes: Wakes,
    /// The envelope small typed messages are sent from, by reference
    /// ([`Engine::try_send_with`]): its ids are replaced only when the sender or the
    /// destination changes; its payload stays empty, the message's is in `scratch_buf`.
    scratch: Option<Envelope>,
    scratch_buf: Vec<u8>,
}

/// Tasks a turn wakes after releasing the engine lock: the receivers it pushed messages
/// to (one in most turns; the second and later ones are kept in a list).
#[derive(Default)]
struct Wakes {
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl Wakes {
    fn add(&mut self, waker: Option<Waker>) {
        match (waker, &self.first) {
            (None, _) => {}
            (Some(w), None) => self.first = Some(w),
            (Some(w), Some(_)) => self.more.push(w),
        }
    }

    fn take(&mut self) -> Wakes {
        Wakes {
            first: self.first.take(),
            more: match self.more.is_empty() {
                true => Vec::new(),
                false => std::mem::take(&mut self.more),
            },
        }
    }

    fn run(self) {
        self.first
            .into_iter()
            .chain(self.more)
            .for_each(Waker::wake);
    }
}

/// Whether the sends since the last drain came in a row, and how many of them skipped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sends {
    /// The last turn was not a send's, or drained everything itself.
    Mixed,
    /// The last turn was a send's, and it drained.
    InRow,
    /// This many sends in a row since the last drain handed core their message and left
    /// the output for the next turn; the timer task was woken to run it.
    Deferred(u32),
}

/// The adapter's state around one core proc machine.
pub(crate) struct Engine {
    id: ProcId,
    rt: Arc<dyn Hooks>,
    state: Mutex<State>,
    phase: Watch<Phase>,
    returns_cap: usize,
    consume_batch: (usize, usize),
    /// The read buffers of this proc's connections.
    read_bufs: Arc<crate::net::ReadBufs>,
    /// Set while sends left output for a later turn (`State::sends` is `Deferred`): read
    /// without the lock by receivers that found their queue empty.
    deferred: AtomicBool,
    /// Whether the phase is `Stopped`, for the send paths to check without a lock.
    stopped: AtomicBool,
}

/// Most sends in a row that leave their output to a later turn: the next one drains.
const DEFER_MAX: u32 = 256;

/// Smallest payload whose send is never left to a later turn ([`Engine::send_turn`]).
const DEFER_MAX_BYTES: usize = 16 * 1024;

/// Largest payload sent from the engine's scratch envelope ([`Engine::try_send_with`]);
/// a larger one gets an allocation of its own, which core can keep apart instead of
/// copying it.
pub(crate) const SCRATCH_MAX: usize = 4096;

/// Most messages a receiver takes before it reports them consumed.
const CONSUME_BATCH_MSGS: usize = 128;

impl Engine {
    /// Wraps `core`, which must be freshly made.
    pub(crate) fn new(core: CoreProc, rt: Arc<dyn Hooks>, returns_cap: usize) -> Arc<Self> {
        let limits = core.config().port_limits();
        let consume_batch = (
            CONSUME_BATCH_MSGS.min(limits.msgs / 4).max(1),
            (limits.bytes / 4).max(1),
        );
        Arc::new(Engine {
            consume_batch,
            read_bufs: Arc::new(crate::net::ReadBufs::new()),
            id: core.id().clone(),
            rt,
            state: Mutex::new(State {
                core,
                ports: PortTable::default(),
                staged: VecDeque::new(),
                staged_port: None,
                actors: FastMap::default(),
                conns: FastMap::default(),
                writable: FastMap::default(),
                armed: None,
                returns_dropped: 0,
                unreachable_cause: FastMap::default(),
                flushes: crate::net::Flushes::None,
                turns: 0,
                now: Instant::ZERO,
                sends: Sends::Mixed,
                send_thread: 0,
                wakes: Wakes::default(),
                scratch: None,
                scratch_buf: Vec::new(),
            }),
            phase: Watch::new(Phase::Running),
            returns_cap,
            deferred: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        })
    }

    /// The proc's id.
    pub(crate) fn id(&self) -> &ProcId {
        &self.id
    }

    /// The read buffers of this proc's connections.
    pub(crate) fn read_bufs(&self) -> &Arc<crate::net::ReadBufs> {
        &self.read_bufs
    }

    /// The driver's hooks.
    pub(crate) fn runtime(&self) -> &Arc<dyn Hooks> {
        &self.rt
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// One turn of the loop: mutate with `f`, carry out every output, re-arm the timer, then
    /// (unlocked) write the bytes queued.
    fn turn<R>(self: &Arc<Self>, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let st = self.lock();
        self.full_turn(st, Sends::Mixed, f)
    }

    /// The turn of a send. Sends in a row (on one thread, no other turn between them) are
    /// batched: from the second on, a send only hands core its message (which encodes it
    /// into its link's chunk) and leaves the output for one later turn, which writes the
    /// whole run at once. That turn is the timer task's, woken once per run; or the turn of
    /// the send after [`DEFER_MAX`] deferred ones; or any other turn; or a receiver's that
    /// found its queue empty ([`Engine::drain_deferred`]). A deferred send hands core the
    /// `now` of the last turn. Sends from another thread than the last one are not in a
    /// row: independent senders on a multi-threaded runtime each write at once.
    ///
    /// Core decides the send at once either way, so what `f` returns (accepted, or why
    /// not) is final; only the bytes, deliveries and returns it caused wait.
    ///
    /// A message of [`DEFER_MAX_BYTES`] or more (`len`, its payload's size) takes a whole
    /// turn: it is written while it is fresh in the cache, and a turn is little beside it.
    fn send_turn<R>(self: &Arc<Self>, len: usize, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let mut st = self.lock();
        let thread = thread_mark();
        let other_thread = std::mem::replace(&mut st.send_thread, thread) != thread;
        let deferred = match st.sends {
            _ if len >= DEFER_MAX_BYTES || other_thread => None,
            Sends::Mixed => None,
            Sends::InRow => Some(1),
            Sends::Deferred(n) => (n < DEFER_MAX).then_some(n + 1),
        };
        let Some(n) = deferred else {
            return self.full_turn(st, Sends::InRow, f);
        };
        let now = st.now;
        let r = f(&mut st, now);
        st.sends = Sends::Deferred(n);
        if n == 1 {
            self.deferred.store(true, Ordering::Release);
            drop(st);
            self.rt.rearm_timer();
        }
        r
    }

    /// Runs the turn that sends in a row left owed, if any ([`Engine::send_turn`]); whether
    /// there was one (only then can a queue that was empty have something now).
    pub(crate) fn drain_deferred(self: &Arc<Self>) -> bool {
        if !self.deferred.load(Ordering::Acquire) {
            return false;
        }
        self.turn(|_, _| ());
        true
    }

    fn full_turn<R>(
        self: &Arc<Self>,
        mut st: MutexGuard<'_, State>,
        sends: Sends,
        f: impl FnOnce(&mut State, Instant) -> R,
    ) -> R {
        st.turns += 1;
        st.sends = sends;
        let now = self.rt.now();
        st.now = now;
        let r = f(&mut st, now);
        self.drain(&mut st, now);
        // Cleared only now: a receiver that finds it clear finds what the drain delivered.
        if self.deferred.load(Ordering::Relaxed) {
            self.deferred.store(false, Ordering::Release);
        }
        let next = st.core.poll_timeout();
        let earlier = match (next, st.armed) {
            (Some(n), Some(a)) => n < a,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            st.armed = next;
        }
        let wakes = st.wakes.take();
        let flushes = std::mem::take(&mut st.flushes);
        drop(st);
        // Unlocked: a woken task can take the lock at once.
        wakes.run();
        if earlier {
            self.rt.rearm_timer();
        }
        flushes.run();
        r
    }

    fn drain(self: &Arc<Self>, st: &mut State, now: Instant) {
        self.drain_outputs(st, now);
        // Handing back what a gone receiver cannot take gives the machine more to drain.
        while self.flush_deliveries(st, now) {
            self.drain_outputs(st, now);
        }
    }

    fn drain_outputs(self: &Arc<Self>, st: &mut State, now: Instant) {
        while let Some(out) = st.core.poll_output() {
            match out {
                Output::Deliver { port, env } => {
                    if st.staged_port != Some(port) {
                        // Returns this may queue come out of this same loop.
                        self.flush_deliveries(st, now);
                    }
                    st.staged_port = Some(port);
                    st.staged.push_back(env);
                    // The deliveries to the same port right behind it, each moved once.
                    st.core.poll_deliveries(port, &mut st.staged);
                }
                Output::Returned(env) => self.return_to_sender(st, env),
                Output::Dial { conn, addr } => {
                    tracing::debug!(proc = %self.id, %conn, %addr, "dialing");
                    let ctl = ConnCtl::new();
                    st.conns.insert(conn, ctl.clone());
                    self.rt.dial(self, conn, *addr, ctl);
                }
                Output::Transmit { conn, data } => match st.conns.get(&conn) {
                    Some(ctl) => {
                        if ctl.writes.push(WriteCmd::Data(data)).is_err() {
                            tracing::trace!(proc = %self.id, %conn, "transmit after close");
                        } else if ctl.write.queued(st.turns) || st.flushes.is_last(ctl) {
                            st.flushes.add(ctl);
                        } else {
                            ctl.write.nudge();
                        }
                    }
                    None => {
                        tracing::trace!(proc = %self.id, %conn, "transmit for a gone connection")
                    }
                },
                Output::Close { conn } => {
                    if let Some(ctl) = st.conns.remove(&conn) {
                        tracing::debug!(proc = %self.id, %conn, "closing connection");
                        ctl.close_after_flush();
                    }
                }
                Output::Event(ev) => self.event(st, ev),
                other => tracing::debug!(proc = %self.id, ?other, "unknown output"),
            }
        }
    }

    /// Pushes the staged deliveries to their port's receiver. True if some could not be
    /// placed (no receiver: they went back to core as `NoSuchPort`, which queued output).
    fn flush_deliveries(&self, st: &mut State, now: Instant) -> bool {
        let Some(port) = st.staged_port.take() else {
            return false;
        };
        if let Some(entry) = st.ports.get(port) {
            let once = entry.kind == PortKind::Once;
            if let Ok(waker) = entry.queue.push_all(&mut st.staged) {
                st.wakes.add(waker);
                if once {
                    // Core retired the once-port with this delivery.
                    st.ports.remove(port);
                }
                return false;
            }
            // The receiver was dropped between core's check and now.
            if let Some(entry) = st.ports.remove(port) {
                st.core.close_port(&entry.id);
            }
        }
        for env in st.staged.drain(..) {
            st.core
                .handle_undeliverable(now, env, Undeliverable::NoSuchPort);
        }
        true
    }

    fn return_to_sender(&self, st: &mut State, env: Envelope) {
        let Some(reason) = env.returned else {
            tracing::warn!(proc = %self.id, dest = %env.dest, "core returned an envelope without a reason");
            st.returns_dropped += 1;
            return;
        };
        let sender = env.sender.clone();
        let dial_error = match reason {
            Undeliverable::Unreachable | Undeliverable::Unconfirmed => {
                st.unreachable_cause.get(env.dest.actor().proc()).cloned()
            }
            _ => None,
        };
        let result = match st.actors.get(&sender) {
            Some(a) => a
                .returns
                .push(Returned {
                    reason,
                    dial_error,
                    envelope: env,
                })
                .map_err(|(_, e)| e),
            None => Err(PushError::Closed),
        };
        if let Err(e) = result {
            st.returns_dropped += 1;
            tracing::warn!(
                proc = %self.id,
                %sender,
                %reason,
                why = if e == PushError::Full { "its undeliverable queue is full" } else { "it is gone" },
                "dropped an undeliverable return"
            );
        }
    }

    fn event(&self, st: &mut State, ev: Event) {
        self.rt.core_event(&ev);
        match ev {
            Event::Writable { peer } => {
                if let Some(ws) = st.writable.remove(&peer) {
                    ws.into_iter().for_each(Waker::wake);
                }
            }
            Event::PeerConnected {
                peer, incarnation, ..
            } => {
                st.unreachable_cause.remove(&peer);
                tracing::info!(proc = %self.id, %peer, incarnation, "peer connected");
            }
            Event::DialFailed {
                peer,
                addr,
                error,
                attempts,
            } => {
                // The first failure in a row is news; the retries that follow are not.
                if attempts == 1 {
                    tracing::info!(proc = %self.id, %peer, %addr, %error, "dial failed; retrying");
                } else {
                    tracing::debug!(proc = %self.id, %peer, %addr, %error, attempts, "dial failed");
                }
            }
            Event::Unreachable { peer, last_error } => {
                match &last_error {
                    Some(e) => {
                        tracing::warn!(proc = %self.id, %peer, error = %e, "peer unreachable; its messages come back")
                    }
                    None => {
                        tracing::warn!(proc = %self.id, %peer, "peer unreachable; its messages come back")
                    }
                }
                match last_error {
                    Some(e) => st.unreachable_cause.insert(peer, *e),
                    None => st.unreachable_cause.remove(&peer),
                };
            }
            Event::PeerRestarted { peer, .. } => {
                tracing::warn!(proc = %self.id, %peer, "peer restarted; its in-flight messages come back");
            }
            Event::ConnectionFailed { conn, error } => self.rt.connection_failed(conn, &error),
            Event::Refused { conn, reason } => self.rt.refused(conn, reason),
            Event::ReturnDropped {
                sender,
                dest,
                reason,
                ..
            } => {
                st.returns_dropped += 1;
                tracing::warn!(proc = %self.id, %sender, %dest, %reason, "an undeliverable return could not be delivered");
            }
            Event::ShutdownComplete => {
                tracing::debug!(proc = %self.id, "core shutdown complete");
                self.phase.update(|p| {
                    if *p == Phase::Stopped {
                        Phase::Stopped
                    } else {
                        Phase::Drained
                    }
                });
                wake_all(st);
            }
            _ => {}
        }
    }

    // ---- registry ----

    /// Reserves a root name and registers its undeliverable queue.
    pub(crate) fn reserve_root(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<(ActorId, Arc<Queue<Returned>>), RegistryError> {
        self.turn(|st, _| {
            let id = st.core.reserve_root(name)?;
            Ok((id.clone(), self.register_actor(st, id)))
        })
    }

    /// Creates a child identity of `parent`.
    pub(crate) fn child(
        self: &Arc<Self>,
        parent: &ActorId,
    ) -> Result<(ActorId, Arc<Queue<Returned>>), RegistryError> {
        self.turn(|st, _| {
            let id = st.core.child(parent)?;
            Ok((id.clone(), self.register_actor(st, id)))
        })
    }

    fn register_actor(&self, st: &mut State, id: ActorId) -> Arc<Queue<Returned>> {
        let returns = Arc::new(Queue::with_capacity_limit(self.returns_cap));
        if self.phase.get() != Phase::Running {
            returns.close();
        }
        st.actors.insert(
            id,
            ActorEntry {
                returns: returns.clone(),
            },
        );
        returns
    }

    /// Opens an ephemeral port. A closed queue if the proc is stopping.
    pub(crate) fn open_port(
        self: &Arc<Self>,
        actor: &ActorId,
        kind: PortKind,
        accepts: TypeFingerprint,
    ) -> Result<Bound, RegistryError> {
        self.turn(|st, _| {
            let port = st.core.open_port(actor, kind, Some(accepts))?;
            Ok(self.register_port(st, port, kind))
        })
    }

    /// Binds a well-known port.
    pub(crate) fn bind_port(
        self: &Arc<Self>,
        port: &PortId,
        kind: PortKind,
        accepts: TypeFingerprint,
    ) -> Result<Bound, RegistryError> {
        self.turn(|st, _| {
            st.core.bind_port(port, kind, Some(accepts))?;
            Ok(self.register_port(st, port.clone(), kind))
        })
    }

    fn register_port(&self, st: &mut State, port: PortId, kind: PortKind) -> Bound {
        let queue = Arc::new(Queue::new());
        let local = st.core.local_port(&port);
        match local {
            Some(local) if self.phase.get() != Phase::Stopped => st.ports.insert(PortEntry {
                local,
                id: port.clone(),
                queue: queue.clone(),
                kind,
            }),
            _ => queue.close(),
        }
        Bound { port, local, queue }
    }

    /// The receiver of the port bound as `local` went away: unbind it.
    pub(crate) fn close_port(
        self: &Arc<Self>,
        local: Option<LocalPort>,
        queue: &Arc<Queue<Envelope>>,
    ) {
        queue.consumer_gone();
        let Some(local) = local else { return };
        self.turn(|st, _| {
            // Only if the entry is still this receiver's (a once-port may be gone already).
            if st
                .ports
                .get(local)
                .is_some_and(|e| Arc::ptr_eq(&e.queue, queue))
            {
                if let Some(e) = st.ports.remove(local) {
                    st.core.close_port(&e.id);
                }
            }
        });
    }

    /// When a port's receiver reports what it took: once it took this many messages, or
    /// this many payload bytes, since its last report: at most 128 messages and a quarter
    /// of the port's queue limits (`Config::port_queue_msgs` / `port_queue_bytes`).
    ///
    /// So core's count of a port's queue exceeds the real one by less than a quarter of
    /// each limit, and a full port is never left waiting on an unreported message: when
    /// core sees the queue full, more than three quarters of a limit are really queued, and
    /// taking them reaches a report. (Reporting whenever the queue runs empty would be
    /// exact too, but costs an engine turn per read batch when the receiver keeps up.)
    pub(crate) fn consume_batch(&self) -> (usize, usize) {
        self.consume_batch
    }

    /// A receiver took `env` and it did not decode as its port's type: it goes back to its
    /// sender as `Undecodable` (the receiver is handed no value).
    pub(crate) fn undecodable(self: &Arc<Self>, env: Envelope) {
        self.turn(|st, now| {
            st.core
                .handle_undeliverable(now, env, Undeliverable::Undecodable)
        });
    }

    /// A port's receiver took `msgs` messages of `bytes` payload bytes from its queue.
    /// `spent` yields envelopes it is done with, for core to reuse their ids
    /// (`Proc::recycle`).
    pub(crate) fn consumed(
        self: &Arc<Self>,
        port: LocalPort,
        msgs: usize,
        bytes: usize,
        spent: impl Iterator<Item = Envelope>,
    ) {
        self.turn(|st, now| {
            for env in spent {
                st.core.recycle(env);
            }
            st.core.handle_consumed(now, port, msgs, bytes)
        });
    }

    /// The identity went away: unbind its ports and forget it.
    pub(crate) fn remove_actor(self: &Arc<Self>, actor: &ActorId) {
        self.turn(|st, _| {
            st.ports.close_actor(actor);
            if let Some(a) = st.actors.remove(actor) {
                a.returns.close();
            }
            st.core.remove_actor(actor);
        });
    }

    /// Dial `proc` at `addr` from now on.
    pub(crate) fn set_address(self: &Arc<Self>, proc: ProcId, addr: ChannelAddr) {
        self.turn(|st, _| st.core.set_address(proc, addr));
    }

    // ---- sending ----

    /// Hands `env` to the machine without waiting.
    pub(crate) fn try_send(self: &Arc<Self>, env: Envelope) -> Result<(), SendError> {
        self.try_send_keep(env).map_err(|(e, _)| e)
    }

    /// Sends a message of `len` payload bytes (at most [`SCRATCH_MAX`]) from `sender` to
    /// `dest` without waiting: `write` appends the payload to the engine's scratch buffer,
    /// and core encodes the message from the scratch envelope and that buffer, both
    /// borrowed (`Proc::handle_send_parts`), so neither an allocation nor a reference count
    /// is spent per message while the sender and the destination stay the same.
    /// `Err((WouldBlock, Some(env)))` hands back the message as an envelope of its own, to
    /// wait with ([`Engine::poll_send`]).
    pub(crate) fn try_send_with(
        self: &Arc<Self>,
        sender: &ActorId,
        dest: &PortId,
        fingerprint: TypeFingerprint,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), SendError>,
    ) -> Result<(), (SendError, Option<Envelope>)> {
        if self.stopped.load(Ordering::Acquire) {
            return Err((SendError::ShuttingDown, None));
        }
        self.send_turn(len, |st, now| {
            let State {
                core,
                scratch,
                scratch_buf,
                ..
            } = st;
            let env = scratch
                .get_or_insert_with(|| Envelope::new(sender.clone(), dest.clone(), Bytes::new()));
            if !env.sender.is_same(sender) {
                env.sender = sender.clone();
            }
            if !(env.dest.actor().is_same(dest.actor()) && env.dest.index() == dest.index()) {
                env.dest = dest.clone();
            }
            env.fingerprint = Some(fingerprint);
            scratch_buf.clear();
            scratch_buf.reserve(len);
            write(scratch_buf).map_err(|e| (e, None))?;
            match core.handle_send_parts(now, env, scratch_buf) {
                Err(CoreSendError::WouldBlock) => {
                    let mut owned = env.clone();
                    owned.payload = Bytes::copy_from_slice(scratch_buf);
                    Err((SendError::WouldBlock, Some(owned)))
                }
                r => r.map_err(|e| (SendError::from(e), None)),
            }
        })
    }

    /// [`Engine::try_send`] that hands `env` back when the link's window is full.
    #[allow(clippy::result_large_err)] // moved once, on the rare refusal
    pub(crate) fn try_send_keep(
        self: &Arc<Self>,
        env: Envelope,
    ) -> Result<(), (SendError, Option<Envelope>)> {
        if self.stopped.load(Ordering::Acquire) {
            return Err((SendError::ShuttingDown, None));
        }
        self.send_turn(env.payload.len(), |st, now| {
            match st.core.handle_send_keep(now, env) {
                Err((CoreSendError::WouldBlock, env)) => Err((SendError::WouldBlock, Some(env))),
                r => r.map_err(|(e, _)| (SendError::from(e), None)),
            }
        })
    }

    /// Hands `env` to the machine once its link has room. While the link is full the
    /// machine hands the envelope back and it waits in `env` (nothing is copied); `env` is
    /// `None` once the send completed.
    pub(crate) fn poll_send(
        self: &Arc<Self>,
        env: &mut Option<Envelope>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        if self.stopped.load(Ordering::Acquire) {
            return Poll::Ready(Err(SendError::ShuttingDown));
        }
        let Some(e) = env.take() else {
            return Poll::Ready(Ok(()));
        };
        self.send_turn(e.payload.len(), |st, now| {
            // Always ask the machine (rather than checking `can_send` first): a refusal with
            // `WouldBlock` is what makes it report `Writable` once the window opens.
            let back = match st.core.handle_send_keep(now, e) {
                Err((CoreSendError::WouldBlock, back)) => back,
                r => return Poll::Ready(r.map_err(|(e, _)| SendError::from(e))),
            };
            let ws = st.writable.entry(back.next_proc().clone()).or_default();
            if !ws.iter().any(|w| w.will_wake(cx.waker())) {
                ws.push(cx.waker().clone());
            }
            *env = Some(back);
            Poll::Pending
        })
    }

    /// Whether a message to `dest` would be accepted now.
    pub(crate) fn can_send(&self, dest: &ProcId) -> bool {
        self.lock().core.can_send(dest)
    }

    // ---- connections ----

    /// A new inbound connection; returns its id.
    pub(crate) fn accepted(self: &Arc<Self>, ctl: Arc<ConnCtl>) -> ConnId {
        self.turn(|st, now| {
            let conn = st.core.handle_accepted(now);
            st.conns.insert(conn, ctl);
            conn
        })
    }

    /// A dial succeeded. False if the machine gave the connection up meanwhile (drop it).
    pub(crate) fn connected(self: &Arc<Self>, conn: ConnId) -> bool {
        self.turn(|st, now| {
            if st.conns.contains_key(&conn) {
                st.core.handle_connected(now, conn);
                true
            } else {
                false
            }
        })
    }

    /// Bytes read from `conn`. False if the connection is no longer wanted (stop reading).
    pub(crate) fn bytes(self: &Arc<Self>, conn: ConnId, data: &[u8]) -> bool {
        self.turn(|st, now| {
            if st.conns.contains_key(&conn) {
                st.core.handle_bytes(now, conn, data);
                true
            } else {
                false
            }
        })
    }

    /// Bytes read from `conn`, like [`Engine::bytes`] (`None`: stop reading); then, if they
    /// leave `conn` in the middle of a large frame's body, a buffer of the body's length
    /// from `bufs`, starting with the body bytes received so far, and how many those are:
    /// the rest is to be read into it and handed over with [`Engine::body`] (see
    /// `Proc::large_body`). One turn, one lock.
    pub(crate) fn bytes_then_body(
        self: &Arc<Self>,
        conn: ConnId,
        data: &[u8],
        bufs: &crate::net::ReadBufs,
    ) -> Option<Option<(bytes::BytesMut, usize)>> {
        self.turn(|st, now| {
            if !st.conns.contains_key(&conn) {
                return None;
            }
            st.core.handle_bytes(now, conn, data);
            let Some((len, held)) = st.core.large_body(conn) else {
                return Some(None);
            };
            let mut body = bufs.take_body(len);
            body[..held.len()].copy_from_slice(held);
            Some(Some((body, held.len())))
        })
    }

    /// The whole body of the large frame `conn` is in, read into a buffer from
    /// [`Engine::large_body`] after its first `have` bytes. False if the connection is no
    /// longer wanted (stop reading).
    pub(crate) fn body(self: &Arc<Self>, conn: ConnId, body: bytes::Bytes, have: usize) -> bool {
        self.turn(|st, now| {
            if st.conns.contains_key(&conn) {
                st.core.handle_body(now, conn, body, have);
                true
            } else {
                false
            }
        })
    }

    /// Dialing `conn` failed with `error`.
    pub(crate) fn dial_failed(self: &Arc<Self>, conn: ConnId, error: DialError) {
        self.turn(|st, now| {
            if let Some(ctl) = st.conns.remove(&conn) {
                ctl.abandon();
                st.core.handle_dial_failed(now, conn, error);
            }
        });
    }

    /// `conn` failed or hit EOF: `links` hears how (`error`) before core does, in one turn.
    pub(crate) fn closed(self: &Arc<Self>, conn: ConnId, links: &Links, error: LinkError) {
        self.turn(|st, now| {
            // In the same turn as core hears of it: no turn in between can report a session
            // opening on `conn` (a welcome its reader took) after the tracker forgot it.
            links.ended(conn, error);
            if let Some(ctl) = st.conns.remove(&conn) {
                ctl.abandon();
                st.core.handle_closed(now, conn);
            }
        });
    }

    // ---- time ----

    /// The deadline the timer must sleep until (recorded as armed).
    pub(crate) fn arm_timer(&self) -> Option<Instant> {
        let mut st = self.lock();
        let next = st.core.poll_timeout();
        st.armed = next;
        next
    }

    /// The timer fired: let the machine act on what is due.
    pub(crate) fn fire_timer(self: &Arc<Self>) {
        self.turn(|st, now| {
            if st.core.poll_timeout().is_some_and(|d| d <= now) {
                st.core.handle_timeout(now);
            }
        });
    }

    // ---- shutdown ----

    /// The current phase.
    pub(crate) fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// Starts a graceful shutdown (idempotent).
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
        self.turn(|st, now| {
            let mut first = false;
            self.phase.update(|p| {
                if *p == Phase::Running {
                    first = true;
                    Phase::Draining
                } else {
                    *p
                }
            });
            if first {
                st.core.handle_shutdown(now);
            }
        });
    }

    /// Resolves once core reported its shutdown complete (or the proc was stopped).
    pub(crate) async fn drained(&self) {
        self.phase
            .wait_until(|p| matches!(p, Phase::Drained | Phase::Stopped))
            .await;
    }

    /// Ends service: closes every port queue (receivers see the end), every undeliverable
    /// queue, and every connection after flushing it. Idempotent.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.phase.set(Phase::Stopped);
        let mut st = self.lock();
        st.ports.close_all();
        for (_, a) in st.actors.drain() {
            a.returns.close();
        }
        for (_, c) in st.conns.drain() {
            c.close_after_flush();
        }
        wake_all(&mut st);
    }

    /// Core's counters.
    pub(crate) fn stats(&self) -> Stats {
        self.lock().core.stats()
    }

    /// What peers make core hold now.
    pub(crate) fn held(&self) -> procwire_core::proc::Held {
        self.lock().core.held()
    }

    /// Undeliverable returns dropped by the adapter or reported dropped by core.
    pub(crate) fn returns_dropped(&self) -> u64 {
        self.lock().returns_dropped
    }

    /// Connections currently known.
    pub(crate) fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }
}

/// A number that tells this thread from the others that are running (the address of a
/// thread-local), to tell sends in a row from independent ones; never 0.
fn thread_mark() -> usize {
    thread_local! {
        static MARK: u8 = const { 0 };
    }
    MARK.with(|m| m as *const u8 as usize)
}

fn wake_all(st: &mut State) {
    for (_, ws) in st.writable.drain() {
        ws.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use procwire_core::id::Name;
    use procwire_core::proc::Config;

    use super::*;

    /// Hooks for an engine with no network: a fixed clock, tasks dropped, no dials.
    struct Quiet;

    impl Hooks for Quiet {
        fn now(&self) -> Instant {
            Instant::from_micros(1_000)
        }
        fn spawn(&self, _fut: BoxFuture) {}
        fn timer(&self) -> Box<dyn crate::runtime::Timer> {
            unreachable!("no timer in these tests")
        }
        fn dial(&self, _: &Arc<Engine>, _: ConnId, _: ChannelAddr, _: Arc<ConnCtl>) {}
        fn rearm_timer(&self) {}
        fn connection_failed(&self, _: ConnId, _: &procwire_core::proc::ConnError) {}
        fn refused(&self, _: ConnId, _: procwire_core::envelope::RefuseReason) {}
    }

    /// A waker that records, when woken, whether the engine's lock was free.
    struct Probe {
        engine: std::sync::Weak<Engine>,
        free: AtomicUsize,
        held: AtomicUsize,
    }

    impl Wake for Probe {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let engine = self.engine.upgrade().expect("the engine lives");
            let count = match engine.state.try_lock() {
                Ok(_) => &self.free,
                Err(_) => &self.held,
            };
            count.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn receivers_are_woken_after_the_turn_releases_the_lock() {
        let id = ProcId::new(ChannelAddr::Local(7), Name::new("p").expect("a name"));
        let core = CoreProc::new(id, Config::default(), 1, 1);
        let engine = Engine::new(core, Arc::new(Quiet), 16);
        let (actor, _returns) = engine.reserve_root("a").expect("a root");
        let fp = TypeFingerprint::of::<u8>();
        let bound = engine
            .open_port(&actor, PortKind::Stream, fp)
            .expect("a port");
        let probe = Arc::new(Probe {
            engine: Arc::downgrade(&engine),
            free: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
        });
        let waker = Waker::from(probe.clone());
        let mut out = VecDeque::new();
        let polled = bound
            .queue
            .poll_take_all(&mut Context::from_waker(&waker), &mut out);
        assert!(polled.is_pending(), "nothing queued yet");
        let env = Envelope::typed(
            actor.clone(),
            bound.port.clone(),
            fp,
            Bytes::from_static(&[7]),
        );
        engine.try_send(env).expect("a local send");
        assert_eq!(
            probe.free.load(Ordering::SeqCst),
            1,
            "woken once, lock free"
        );
        assert_eq!(
            probe.held.load(Ordering::SeqCst),
            0,
            "never woken under the lock"
        );
        assert!(bound.queue.try_take_all(&mut out).is_ok());
        assert_eq!(out.len(), 1);
    }
}
