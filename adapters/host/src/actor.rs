//! Actors: an identity plus a message loop that calls a handler per message, and the rules
//! of supervision. Runtime-neutral (tasks are spawned through the engine's runtime hooks).
//!
//! An actor spawned with `Proc::spawn` ([`HostedProc::spawn`](crate::HostedProc::spawn)) (or
//! [`Instance::spawn_child`]) gets the identity `ActorId(proc, name, pid)` and a typed
//! [`ActorRef`] to it.
//!
//! # Mailboxes and ports
//!
//! An actor's mailbox takes the types of its [`Actor::Message`], a [`Mailbox`]: either one
//! serde type, or an enum of several declared with [`messages!`](crate::messages). Each type
//! has its own well-known port of the actor's identity: the `i`-th type (from 0, in
//! declaration order) is taken on port `ACTOR_PORT + i`, so a mailbox of one type is port
//! [`ACTOR_PORT`] alone. Each port carries its type's [`TypeFingerprint`] and refuses
//! messages of another type as they arrive (they come back as
//! [`Undeliverable::WrongType`](crate::Undeliverable::WrongType)).
//!
//! The ports follow from the actor's id and its mailbox type alone, so any proc that knows
//! the id (parsed from text, say) can address it: [`ActorRef::attest`], or for one type
//! `PortRef::<M>::attest(actor_id.port(ACTOR_PORT + i))`. Reordering a mailbox's types moves
//! their ports: peers built from the old order get their messages refused, never misread.
//!
//! Well-known ports past the mailbox's types are free for [`Instance::bind_port`].
//!
//! Order is kept per port: messages of one type from one proc are handled in the order they
//! were sent, but messages of different types are not ordered with each other (the loop
//! serves the ports in turn). Make two kinds of request one type (an enum) where their
//! relative order matters.
//!
//! # The loop
//!
//! In order of priority: a requested stop, then failures of its children
//! ([`Actor::child_failed`]), then messages that came back undeliverable
//! ([`Actor::handle_undeliverable`]), then the mailbox ([`Actor::handle`]; its ports are
//! served in turn, so a busy type does not starve the others). A message that a port refuses
//! (a payload that does not decode strictly as the port's type; see the crate's
//! [type checks](crate#type-checks)) is logged, skipped and returned to its sender as
//! [`Undeliverable::Undecodable`](crate::Undeliverable::Undecodable). A handler that returns an error
//! or panics fails the actor ([`ActorStatus::Failed`]); its `stopped` hook is not run then
//! (its state may be inconsistent).
//!
//! # Supervision
//!
//! The rules, in one place:
//!
//! 1. **Children.** An identity's children are those created through it:
//!    [`Instance::spawn_child`] (actors) and [`Instance::child`] (instances). They are named
//!    `ActorId(proc, root name, n)` and live in the same proc.
//! 2. **Children end first.** However an actor ends (a stop asked through its
//!    [`ActorHandle`] or [`Context::stop`], a failure, or its proc shutting down), it
//!    first asks all its children to stop and waits until each has ended (each one ending
//!    its own children first, recursively), and only then runs its `stopped` hook (when it did
//!    not fail), releases its identity and reports its own end (status and monitors). So
//!    every child is `Stopped` (or `Failed`) before its parent is, and monitors of the
//!    children hear of it before monitors of the parent. Siblings stop concurrently. A child
//!    stuck in a handler holds up its parent's end. A child created while its parent is
//!    already ending (from its `stopped` hook, say) is asked to stop at once.
//! 3. **A child's failure goes to its parent.** When a child actor fails, its parent's loop
//!    calls [`Actor::child_failed`] with the child's id and the reason, after the child has
//!    ended (its status is `Failed`). The default fails the parent too, with
//!    [`SupervisionError::ChildFailed`] as the reason (Erlang-link style), so a failure
//!    climbs the tree until an actor handles it; by rule 2 a failing parent stops its other
//!    children first. Override the hook to decide otherwise (log it, spawn a replacement,
//!    stop), returning `Ok(())` to carry on.
//! 4. **Instances are not supervisors.** An [`Instance`] without a loop (from
//!    `Proc::instance`) asks its children to stop when it is stopped or dropped, without
//!    waiting for them; failures of its children are logged. Watch them with
//!    [`Instance::monitor`] instead.
//! 5. A child that stops normally is not reported to its parent, and a root actor (from
//!    `Proc::spawn`) has no parent. Failures of children that arrive while the parent is
//!    already ending are not reported.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use procwire_core::envelope::Envelope;
use procwire_core::id::ActorId;
use procwire_core::registry::PortKind;
use tracing::Instrument;

use crate::engine::Engine;
use crate::error::{ActorError, ProcError, RecvError};
use crate::instance::{ActorCell, ActorHandle, ActorStatus, Instance};
use crate::mailbox::{ActorRef, Decoder, Mailbox};
use crate::monitor::{DownReason, ProcServices};
use crate::sync::{CatchUnwind, Queue};
#[cfg(doc)]
use crate::typed::TypeFingerprint;
use crate::typed::{PortReceiver, Returned};

/// The well-known port index of an actor's mailbox (defined in core, beside the other
/// well-known ports): its first (or only) message type. A mailbox of several types uses
/// the ports that follow (see [mailboxes and ports](crate::actor#mailboxes-and-ports)).
pub use procwire_core::registry::ACTOR_PORT;

/// Why supervision failed an actor.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisionError {
    /// A child failed and the default [`Actor::child_failed`] failed the parent too.
    ChildFailed {
        /// The child.
        child: ActorId,
        /// Why it failed.
        reason: String,
    },
}

impl fmt::Display for SupervisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisionError::ChildFailed { child, reason } => {
                write!(f, "child {child} failed: {reason}")
            }
        }
    }
}

impl std::error::Error for SupervisionError {}

/// A message-driven participant.
///
/// ```
/// use procwire_host::{Actor, ActorError, Context, PortRef};
///
/// /// Sends each text back to the port that came with it.
/// struct Echo;
///
/// impl Actor for Echo {
///     type Message = (String, PortRef<String>);
///
///     async fn handle(
///         &mut self,
///         cx: &mut Context,
///         (text, reply_to): Self::Message,
///     ) -> Result<(), ActorError> {
///         reply_to.send(cx, text).await?;
///         Ok(())
///     }
/// }
/// ```
///
/// An actor taking several types names an enum declared with
/// [`messages!`](crate::messages) as its `Message`, and handles each type in a match arm.
pub trait Actor: Send + Sized + 'static {
    /// What its mailbox takes: one serde type, or several declared with
    /// [`messages!`](crate::messages).
    type Message: Mailbox;

    /// Runs once before the first message. An error fails the actor.
    fn started(&mut self, cx: &mut Context) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = cx;
        async { Ok(()) }
    }

    /// Handles one message. An error fails the actor.
    fn handle(
        &mut self,
        cx: &mut Context,
        msg: Self::Message,
    ) -> impl Future<Output = Result<(), ActorError>> + Send;

    /// A message this actor sent came back undeliverable. The default logs it at `warn` and
    /// carries on: the sender learns of the failure, and the actor is not taken down by
    /// a peer that went away. Override it to retry, re-route or fail.
    fn handle_undeliverable(
        &mut self,
        cx: &mut Context,
        returned: Returned,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        tracing::warn!(
            actor = %cx.actor_id(),
            dest = %returned.dest(),
            reason = %returned.reason,
            "a message came back undeliverable"
        );
        async { Ok(()) }
    }

    /// A child actor (from [`Instance::spawn_child`]) failed with `reason`; it has ended.
    /// The default fails this actor too ([`SupervisionError::ChildFailed`]); return `Ok(())`
    /// to carry on. See the [supervision rules](crate::actor#supervision).
    fn child_failed(
        &mut self,
        cx: &mut Context,
        child: ActorId,
        reason: String,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = cx;
        async move { Err(SupervisionError::ChildFailed { child, reason }.into()) }
    }

    /// Runs once after the loop ends normally (stop requested, or the proc shut down), when
    /// its children have ended.
    fn stopped(&mut self, cx: &mut Context) -> impl Future<Output = ()> + Send {
        let _ = cx;
        async {}
    }
}

/// What a handler gets besides the message: the actor's [`Instance`] (through `Deref`: open
/// ports, send, spawn children) and a way to stop itself.
pub struct Context {
    instance: Instance,
    stop: bool,
}

impl Context {
    /// Ends the loop after the current handler returns.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// The actor's instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }
}

impl Deref for Context {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        &self.instance
    }
}

/// Binds the mailbox of `id` and starts its loop (a root actor: no parent).
pub(crate) fn spawn_actor<A: Actor>(
    engine: &Arc<Engine>,
    svc: &Arc<ProcServices>,
    id: ActorId,
    returns: Arc<Queue<Returned>>,
    actor: A,
) -> Result<(ActorRef<A>, ActorHandle), ProcError> {
    let instance = Instance::new(engine.clone(), svc.clone(), id, returns, false);
    start(engine, instance, actor)
}

/// Binds the mailbox of `instance` (one port per message type) and starts its loop.
pub(crate) fn start<A: Actor>(
    engine: &Arc<Engine>,
    instance: Instance,
    actor: A,
) -> Result<(ActorRef<A>, ActorHandle), ProcError> {
    let id = instance.actor_id().clone();
    let mut ports = Vec::new();
    for (i, (accepts, decoder)) in (0u64..).zip(A::Message::ports()) {
        let port = id.port(ACTOR_PORT + i);
        // On failure `instance` and the ports bound so far drop here and are released.
        let bound = engine.bind_port(&port, PortKind::Stream, accepts)?;
        ports.push((PortReceiver::new(engine.clone(), bound), decoder));
    }
    let mailbox = Ports { ports, next: 0 };
    let handle = instance.handle();
    let span = tracing::info_span!("actor", actor = %id);
    engine
        .runtime()
        .spawn(Box::pin(run(actor, instance, mailbox).instrument(span)));
    Ok((ActorRef::attest(id), handle))
}

/// An actor's mailbox: a receiver and a decoder per message type.
struct Ports<T> {
    ports: Vec<(PortReceiver<T>, Decoder<T>)>,
    /// Where the next poll starts, so that the ports are served in turn.
    next: usize,
}

impl<T> Ports<T> {
    /// The next envelope of any port, with its decoder; `Closed` once a port is closed
    /// (they are closed together, with the identity or the proc).
    fn poll_next(
        &mut self,
        tcx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(Envelope, Decoder<T>), RecvError>> {
        let n = self.ports.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let (rx, decoder) = &mut self.ports[i];
            match rx.poll_recv_envelope(tcx) {
                Poll::Ready(Ok(env)) => {
                    self.next = (i + 1) % n;
                    return Poll::Ready(Ok((env, *decoder)));
                }
                Poll::Ready(Err(RecvError::Closed)) => return Poll::Ready(Err(RecvError::Closed)),
                Poll::Ready(Err(RecvError::Decode(_))) | Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

enum Next<T> {
    Stop,
    ChildFailed(ActorId, String),
    Message(Envelope, Decoder<T>),
    Returned(Returned),
    MailboxClosed,
}

/// Makes sure the status ends terminal even if the task is dropped mid-way.
struct Finish {
    cell: Arc<ActorCell>,
    status: ActorStatus,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let status = std::mem::replace(&mut self.status, ActorStatus::Stopped);
        self.cell.status.update(|s| {
            if s.is_terminal() {
                s.clone()
            } else {
                status.clone()
            }
        });
    }
}

async fn run<A: Actor>(mut actor: A, instance: Instance, mut mailbox: Ports<A::Message>) {
    let cell = instance.cell().clone();
    let mut finish = Finish {
        cell: cell.clone(),
        status: ActorStatus::Stopped,
    };
    let mut cx = Context {
        instance,
        stop: false,
    };
    tracing::debug!("actor started");
    let failure = drive(&mut actor, &mut cx, &mut mailbox, &cell).await;
    cell.mark_stopping();
    // Supervision rule 2: the children end first.
    cell.stop_children().await;
    match failure {
        Some(why) => {
            tracing::warn!(reason = %why, "actor failed");
            finish.status = ActorStatus::Failed(why);
        }
        None => {
            if let Err(why) = CatchUnwind::new(pin!(actor.stopped(&mut cx))).await {
                finish.status = ActorStatus::Failed(format!("stopped hook panicked: {why}"));
            }
            tracing::debug!("actor stopped");
        }
    }
    // Unbind the mailbox and the identity before reporting the end; monitors hear why.
    let failed = match &finish.status {
        ActorStatus::Failed(why) => Some(why.clone()),
        _ => None,
    };
    if let Some(why) = &failed {
        cx.instance.set_exit(DownReason::Failed(why.clone()));
    }
    let id = cx.actor_id().clone();
    drop(mailbox);
    drop(cx);
    drop(finish);
    // Supervision rule 3: the parent hears of a failure once this actor has ended.
    if let Some(why) = failed {
        cell.report_failure(id, why);
    }
}

/// The loop; `Some(reason)` if the actor failed.
async fn drive<A: Actor>(
    actor: &mut A,
    cx: &mut Context,
    mailbox: &mut Ports<A::Message>,
    cell: &ActorCell,
) -> Option<String> {
    match CatchUnwind::new(pin!(actor.started(cx))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Some(format!("started: {e}")),
        Err(p) => return Some(format!("started panicked: {p}")),
    }
    loop {
        if cx.stop {
            return None;
        }
        let next = std::future::poll_fn(|tcx| poll_next(cx, mailbox, cell, tcx)).await;
        let outcome = match next {
            Next::Stop | Next::MailboxClosed => return None,
            Next::ChildFailed(child, why) => {
                tracing::debug!(%child, reason = %why, "a child failed");
                CatchUnwind::new(pin!(actor.child_failed(cx, child, why))).await
            }
            Next::Returned(r) => CatchUnwind::new(pin!(actor.handle_undeliverable(cx, r))).await,
            Next::Message(env, decoder) => match decoder(&env) {
                Ok(msg) => CatchUnwind::new(pin!(actor.handle(cx, msg))).await,
                Err(e) => {
                    tracing::warn!(sender = %env.sender, error = %e, "skipping a refused message");
                    cx.instance.engine().undecodable(env);
                    continue;
                }
            },
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Some(e.to_string()),
            Err(p) => return Some(format!("panicked: {p}")),
        }
    }
}

/// What the loop does next, in order of priority.
fn poll_next<T>(
    cx: &Context,
    mailbox: &mut Ports<T>,
    cell: &ActorCell,
    tcx: &mut std::task::Context<'_>,
) -> Poll<Next<T>> {
    if cell.stop_requested.poll_until(tcx, |s| *s).is_ready() {
        return Poll::Ready(Next::Stop);
    }
    if let Poll::Ready(Some((child, why))) = cell.child_failures.poll_pop(tcx) {
        return Poll::Ready(Next::ChildFailed(child, why));
    }
    if let Poll::Ready(Some(r)) = cx.instance.poll_undeliverable(tcx) {
        return Poll::Ready(Next::Returned(r));
    }
    match mailbox.poll_next(tcx) {
        Poll::Ready(Ok((env, decoder))) => Poll::Ready(Next::Message(env, decoder)),
        Poll::Ready(Err(_)) => Poll::Ready(Next::MailboxClosed),
        Poll::Pending => Poll::Pending,
    }
}
