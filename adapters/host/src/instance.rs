//! Instances: caller-driven participants with an actor identity. Runtime-neutral.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use procwire_core::envelope::Envelope;
use procwire_core::id::{ActorId, PortId, ProcId};
use procwire_core::registry::PortKind;

use crate::actor::{self, Actor};
use crate::engine::{Bound, Engine};
use crate::error::{ProcError, SendError};
use crate::links::LinkEvents;
use crate::mailbox::ActorRef;
use crate::monitor::{DownReason, Monitor, ProcServices};
use crate::sync::{lock, Queue, Watch};
use crate::typed::{
    OncePortHandle, OncePortReceiver, PortHandle, PortReceiver, Returned, TypeFingerprint,
};

/// Where an actor or instance is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActorStatus {
    /// Alive: an instance that has not been dropped, or an actor whose loop is running.
    Running,
    /// It is ending: a stop was asked (it finishes its current message) or it failed; its
    /// children are stopped, then (unless it failed) its `stopped` hook runs.
    Stopping,
    /// Gone, normally. Its ports are unbound.
    Stopped,
    /// Gone because a handler failed or panicked; the text says why. Its ports are unbound.
    Failed(String),
}

impl ActorStatus {
    /// Whether the actor is gone for good.
    pub fn is_terminal(&self) -> bool {
        matches!(self, ActorStatus::Stopped | ActorStatus::Failed(_))
    }
}

impl fmt::Display for ActorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActorStatus::Running => f.write_str("running"),
            ActorStatus::Stopping => f.write_str("stopping"),
            ActorStatus::Stopped => f.write_str("stopped"),
            ActorStatus::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// State shared between an identity's owner and its [`ActorHandle`]s.
pub(crate) struct ActorCell {
    pub(crate) status: Watch<ActorStatus>,
    pub(crate) stop_requested: Watch<bool>,
    /// An instance (no loop): stopping it unbinds it at once.
    detached: bool,
    /// Identities created through this one, stopped before it ends (supervision rule 2).
    children: Mutex<Vec<ActorHandle>>,
    /// Failures of child actors for this actor's loop: (child, why) (supervision rule 3).
    pub(crate) child_failures: Queue<(ActorId, String)>,
    /// The identity this one was created through, told when this actor fails.
    parent: Option<Weak<ActorCell>>,
}

impl ActorCell {
    /// Records a child, forgetting those that have ended. A child created while this
    /// identity is already ending (from a `stopped` hook, say) is asked to stop at once.
    fn adopt(&self, child: ActorHandle) {
        if self.status.get() != ActorStatus::Running {
            child.stop();
            return;
        }
        let mut children = lock(&self.children);
        children.retain(|c| !c.status().is_terminal());
        children.push(child);
    }

    /// Asks every child to stop, without waiting.
    fn ask_children_to_stop(&self) {
        let children = std::mem::take(&mut *lock(&self.children));
        for child in &children {
            child.stop();
        }
    }

    /// Stops every child and waits until each has ended.
    pub(crate) async fn stop_children(&self) {
        let children = std::mem::take(&mut *lock(&self.children));
        for child in &children {
            child.stop();
        }
        for child in &children {
            child.wait().await;
        }
    }

    /// A running actor is ending.
    pub(crate) fn mark_stopping(&self) {
        self.status.update(|s| {
            if *s == ActorStatus::Running {
                ActorStatus::Stopping
            } else {
                s.clone()
            }
        });
    }

    /// This actor failed with `why` and has ended: its parent's loop hears of it.
    pub(crate) fn report_failure(&self, id: ActorId, why: String) {
        let Some(parent) = self.parent.as_ref().and_then(Weak::upgrade) else {
            return;
        };
        if parent.detached || parent.status.get() != ActorStatus::Running {
            tracing::debug!(child = %id, reason = %why, "a child failed; its parent does not supervise");
            return;
        }
        let _ = parent.child_failures.push((id, why));
    }
}

/// Observes and stops an actor or instance.
#[derive(Clone)]
pub struct ActorHandle {
    id: ActorId,
    cell: Arc<ActorCell>,
    engine: Arc<Engine>,
}

impl ActorHandle {
    /// The identity this handle observes.
    pub fn actor_id(&self) -> &ActorId {
        &self.id
    }

    /// The current status.
    pub fn status(&self) -> ActorStatus {
        self.cell.status.get()
    }

    /// Asks it to stop. An actor finishes the message in hand, stops its children, runs its
    /// `stopped` hook and ends; an instance asks its children to stop and is unbound at once
    /// (its receivers drain, then report `Closed`). See the
    /// [supervision rules](crate::actor#supervision).
    pub fn stop(&self) {
        self.cell.stop_requested.set(true);
        if self.cell.detached {
            self.cell.ask_children_to_stop();
            self.engine.remove_actor(&self.id);
            self.cell.status.update(|s| {
                if s.is_terminal() {
                    s.clone()
                } else {
                    ActorStatus::Stopped
                }
            });
        } else {
            self.cell.mark_stopping();
        }
    }

    /// Waits until it is gone and returns how it ended.
    pub async fn wait(&self) -> ActorStatus {
        self.cell.status.wait_until(ActorStatus::is_terminal).await
    }
}

impl fmt::Debug for ActorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorHandle")
            .field("id", &self.id.to_string())
            .field("status", &self.status())
            .finish()
    }
}

/// A participant with an actor identity and no message loop of its own: the caller opens
/// ports and drains them. Dropping it unbinds all its ports and releases the identity.
pub struct Instance {
    engine: Arc<Engine>,
    svc: Arc<ProcServices>,
    /// How the identity ends, for its monitors (an actor that failed says why).
    exit: Option<DownReason>,
    id: ActorId,
    returns: Arc<Queue<Returned>>,
    cell: Arc<ActorCell>,
}

impl Instance {
    pub(crate) fn new(
        engine: Arc<Engine>,
        svc: Arc<ProcServices>,
        id: ActorId,
        returns: Arc<Queue<Returned>>,
        detached: bool,
    ) -> Self {
        Self::with_parent(engine, svc, id, returns, detached, None)
    }

    /// A new identity created through `parent` (its child).
    fn with_parent(
        engine: Arc<Engine>,
        svc: Arc<ProcServices>,
        id: ActorId,
        returns: Arc<Queue<Returned>>,
        detached: bool,
        parent: Option<&Arc<ActorCell>>,
    ) -> Self {
        svc.monitors.born(&id);
        Instance {
            engine,
            svc,
            exit: None,
            id,
            returns,
            cell: Arc::new(ActorCell {
                status: Watch::new(ActorStatus::Running),
                stop_requested: Watch::new(false),
                detached,
                children: Mutex::new(Vec::new()),
                child_failures: Queue::new(),
                parent: parent.map(Arc::downgrade),
            }),
        }
    }

    pub(crate) fn cell(&self) -> &Arc<ActorCell> {
        &self.cell
    }

    /// A handle that observes (and can stop) this identity.
    pub fn handle(&self) -> ActorHandle {
        ActorHandle {
            id: self.id.clone(),
            cell: self.cell.clone(),
            engine: self.engine.clone(),
        }
    }

    /// This identity.
    pub fn actor_id(&self) -> &ActorId {
        &self.id
    }

    /// A subscription to the link events of this identity's proc, from now on (the same
    /// as the proc's `link_events`; usable from an actor through its [`Context`]).
    ///
    /// [`Context`]: crate::Context
    pub fn link_events(&self) -> LinkEvents {
        self.svc.links.subscribe()
    }

    /// Watches `actor` (in this proc or another): the returned [`Monitor`] gets exactly one
    /// [`DownReason`] when it stops, fails, its proc shuts down, becomes unreachable or
    /// restarts, or at once if it is not alive. Dropping the monitor cancels the watch. The
    /// rules are in the [crate docs](crate#monitoring).
    pub fn monitor(&self, actor: &ActorId) -> Monitor {
        self.svc.monitors.watch(actor)
    }

    /// Records how the identity ends, for its monitors.
    pub(crate) fn set_exit(&mut self, reason: DownReason) {
        self.exit = Some(reason);
    }

    /// Sleeps for `d` on its proc's runtime (tokio or smol alike): the runtime-neutral
    /// sleep for code written against this API, actors included (`cx.sleep(d)`).
    pub async fn sleep(&self, d: std::time::Duration) {
        self.timeout(d, std::future::pending::<()>()).await;
    }

    /// `fut`, or `None` if `limit` passes first, on its proc's runtime (tokio or smol
    /// alike).
    pub async fn timeout<F: std::future::Future>(
        &self,
        limit: std::time::Duration,
        fut: F,
    ) -> Option<F::Output> {
        let rt = self.engine.runtime();
        let deadline = rt.now().saturating_add(limit.into());
        crate::proc::race_timer(&mut *rt.timer(), deadline, fut).await
    }

    /// The engine of its proc.
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The proc it lives in.
    pub fn proc_id(&self) -> &ProcId {
        self.engine.id()
    }

    /// Opens a port taking `M`s. Fails if the identity was stopped.
    pub fn try_open_port<M>(&self) -> Result<(PortHandle<M>, PortReceiver<M>), ProcError> {
        let accepts = TypeFingerprint::of::<M>();
        let bound = self.engine.open_port(&self.id, PortKind::Stream, accepts)?;
        let port = bound.port.clone();
        let rx = PortReceiver::new(self.engine.clone(), bound);
        Ok((PortHandle::new(port), rx))
    }

    /// Opens a port taking `M`s. If the identity was stopped, the receiver is already closed
    /// (it reports [`RecvError::Closed`](crate::RecvError::Closed)) and messages sent to the
    /// port come back as `NoSuchPort`; use [`Instance::try_open_port`] to get the error.
    pub fn open_port<M>(&self) -> (PortHandle<M>, PortReceiver<M>) {
        self.try_open_port().unwrap_or_else(|e| {
            tracing::debug!(actor = %self.id, error = %e, "open_port on a stopped identity");
            self.dead_port()
        })
    }

    /// Opens a once-port: it takes one message, then is gone.
    pub fn try_open_once_port<M>(
        &self,
    ) -> Result<(OncePortHandle<M>, OncePortReceiver<M>), ProcError> {
        let accepts = TypeFingerprint::of::<M>();
        let bound = self.engine.open_port(&self.id, PortKind::Once, accepts)?;
        let port = bound.port.clone();
        let rx = PortReceiver::new(self.engine.clone(), bound);
        Ok((OncePortHandle::new(port), OncePortReceiver::new(rx)))
    }

    /// Opens a once-port; see [`Instance::open_port`] for a stopped identity.
    pub fn open_once_port<M>(&self) -> (OncePortHandle<M>, OncePortReceiver<M>) {
        self.try_open_once_port().unwrap_or_else(|e| {
            tracing::debug!(actor = %self.id, error = %e, "open_once_port on a stopped identity");
            let (h, rx) = self.dead_port::<M>();
            (
                OncePortHandle::new(h.port_id().clone()),
                OncePortReceiver::new(rx),
            )
        })
    }

    fn dead_port<M>(&self) -> (PortHandle<M>, PortReceiver<M>) {
        let port = self.id.port(u64::MAX);
        let queue = Arc::new(Queue::new());
        queue.close();
        let bound = Bound {
            port: port.clone(),
            local: None,
            queue,
        };
        (
            PortHandle::new(port),
            PortReceiver::new(self.engine.clone(), bound),
        )
    }

    /// Binds well-known port `index` (below [`FIRST_EPHEMERAL_PORT`](crate::FIRST_EPHEMERAL_PORT)),
    /// so that others can address it without being told. Well-known ports belong to the
    /// root name: after this identity is gone, the next holder of the name can bind the same
    /// index and receives what is sent to it from then on.
    pub fn bind_port<M>(&self, index: u64) -> Result<(PortHandle<M>, PortReceiver<M>), ProcError> {
        let port = self.id.port(index);
        let accepts = TypeFingerprint::of::<M>();
        let bound = self.engine.bind_port(&port, PortKind::Stream, accepts)?;
        let rx = PortReceiver::new(self.engine.clone(), bound);
        Ok((PortHandle::new(port), rx))
    }

    /// Sends a raw envelope, waiting while its link's send window is full.
    pub async fn send_envelope(&self, env: Envelope) -> Result<(), SendError> {
        let mut env = Some(env);
        std::future::poll_fn(|cx| self.engine.poll_send(&mut env, cx)).await
    }

    /// Sends a raw envelope without waiting.
    pub fn try_send_envelope(&self, env: Envelope) -> Result<(), SendError> {
        self.engine.try_send(env)
    }

    /// Sends `payload` as is (no serialization) to `dest`, waiting for window room.
    pub async fn send_bytes(&self, dest: &PortId, payload: Bytes) -> Result<(), SendError> {
        self.send_envelope(Envelope::new(self.id.clone(), dest.clone(), payload))
            .await
    }

    /// Sends `payload` as is to `dest` without waiting.
    pub fn try_send_bytes(&self, dest: &PortId, payload: Bytes) -> Result<(), SendError> {
        self.try_send_envelope(Envelope::new(self.id.clone(), dest.clone(), payload))
    }

    /// Whether a message to `proc` would be accepted now (its link window has room).
    pub fn can_send(&self, proc: &ProcId) -> bool {
        self.engine.can_send(proc)
    }

    /// Creates a child identity `ActorId(proc, root name, n)`, as an instance. It is stopped
    /// when this identity ends ([supervision](crate::actor#supervision)).
    pub fn child(&self) -> Result<(Instance, ActorHandle), ProcError> {
        let inst = self.new_child(true)?;
        let handle = inst.handle();
        self.cell.adopt(handle.clone());
        Ok((inst, handle))
    }

    /// Creates a child identity and runs `actor` on it. The child ends before this identity
    /// does, and its failure is reported to this actor's [`Actor::child_failed`]; see the
    /// [supervision rules](crate::actor#supervision).
    pub fn spawn_child<A: Actor>(&self, actor: A) -> Result<(ActorRef<A>, ActorHandle), ProcError> {
        let inst = self.new_child(false)?;
        let (actor_ref, handle) = actor::start(&self.engine, inst, actor)?;
        self.cell.adopt(handle.clone());
        Ok((actor_ref, handle))
    }

    fn new_child(&self, detached: bool) -> Result<Instance, ProcError> {
        let (id, returns) = self.engine.child(&self.id)?;
        let (engine, svc) = (self.engine.clone(), self.svc.clone());
        let parent = Some(&self.cell);
        Ok(Instance::with_parent(
            engine, svc, id, returns, detached, parent,
        ))
    }

    /// Waits for the next message that came back undeliverable; `None` once the identity is
    /// gone and nothing is left.
    ///
    /// Returns wait in a queue of bounded length (see
    /// [`ProcOptions::returned_queue_len`](crate::ProcOptions::returned_queue_len)); beyond
    /// it they are counted and logged, not kept.
    pub async fn next_undeliverable(&self) -> Option<Returned> {
        std::future::poll_fn(|cx| self.poll_undeliverable(cx)).await
    }

    /// The next undeliverable return if one is queued.
    pub fn try_next_undeliverable(&self) -> Option<Returned> {
        if let Ok(r) = self.returns.try_pop() {
            return Some(r);
        }
        // Sends in a row may have left their returns for a later turn: run it now.
        if !self.engine.drain_deferred() {
            return None;
        }
        self.returns.try_pop().ok()
    }

    /// Polls for the next undeliverable return.
    pub fn poll_undeliverable(&self, cx: &mut Context<'_>) -> Poll<Option<Returned>> {
        match self.returns.poll_pop(cx) {
            Poll::Pending if self.engine.drain_deferred() => self.returns.poll_pop(cx),
            ready => ready,
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.cell.detached {
            self.cell.ask_children_to_stop();
        }
        self.engine.remove_actor(&self.id);
        let exit = self.exit.take().unwrap_or(DownReason::Stopped);
        self.svc.monitors.gone(&self.id, exit);
        if self.cell.detached {
            self.cell.status.update(|s| {
                if s.is_terminal() {
                    s.clone()
                } else {
                    ActorStatus::Stopped
                }
            });
        }
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instance({})", self.id)
    }
}
