//! Actors: an identity plus a message loop that calls a handler per message.
//! Runtime-neutral (tasks are spawned through the engine's runtime hooks).
//!
//! An actor spawned with `Proc::spawn` ([`HostedProc::spawn`](crate::HostedProc::spawn)) (or
//! [`Instance::spawn_child`]) gets the identity `ActorId(proc, name, pid)` and its mailbox is
//! the well-known port [`ACTOR_PORT`] of that identity, so any proc that knows the actor's id
//! can address it: `PortRef::<M>::attest(actor_id.port(ACTOR_PORT))`.
//!
//! The loop, in order of priority: a requested stop, then messages that came back
//! undeliverable ([`Actor::handle_undeliverable`]), then the mailbox ([`Actor::handle`]).
//! A message that the mailbox refuses (another type than [`Actor::Message`], or a payload
//! that does not decode strictly as one; see [`crate::typed`]'s type checks) is logged and
//! skipped. A handler
//! that returns an error or panics ends the actor with [`ActorStatus::Failed`]; its
//! `stopped` hook is not run then (its state may be inconsistent).

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::task::Poll;

use procwire_core::envelope::Envelope;
use procwire_core::id::ActorId;
use procwire_core::registry::PortKind;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::engine::Engine;
use crate::error::{ActorError, ProcError, RecvError};
use crate::instance::{ActorCell, ActorHandle, ActorStatus, Instance};
use crate::monitor::{DownReason, ProcServices};
use crate::sync::{CatchUnwind, Queue};
use crate::typed::{PortReceiver, PortRef, Returned};

/// The well-known port index of an actor's mailbox.
pub const ACTOR_PORT: u64 = 0;

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
pub trait Actor: Send + Sized + 'static {
    /// What its mailbox takes.
    type Message: DeserializeOwned + Send + 'static;

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

    /// Runs once after the loop ends normally (stop requested, or the proc shut down).
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

/// Binds the mailbox of `id` and starts its loop.
pub(crate) fn spawn_actor<A: Actor>(
    engine: &Arc<Engine>,
    svc: &Arc<ProcServices>,
    id: ActorId,
    returns: Arc<Queue<Returned>>,
    actor: A,
) -> Result<(PortRef<A::Message>, ActorHandle), ProcError> {
    let instance = Instance::new(engine.clone(), svc.clone(), id.clone(), returns, false);
    let port = id.port(ACTOR_PORT);
    // On failure `instance` drops here and releases the identity.
    let accepts = crate::TypeFingerprint::of::<A::Message>();
    let queue = engine.bind_port(&port, PortKind::Stream, accepts)?;
    let mailbox = PortReceiver::<A::Message>::new(engine.clone(), port.clone(), queue);
    let handle = instance.handle();
    let span = tracing::info_span!("actor", actor = %id);
    engine
        .runtime()
        .spawn(Box::pin(run(actor, instance, mailbox).instrument(span)));
    Ok((PortRef::attest(port), handle))
}

enum Next {
    Stop,
    Message(Envelope),
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

async fn run<A: Actor>(mut actor: A, instance: Instance, mut mailbox: PortReceiver<A::Message>) {
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
    match failure {
        Some(why) => {
            tracing::warn!(reason = %why, "actor failed");
            finish.status = ActorStatus::Failed(why);
        }
        None => {
            cell.status.update(|s| {
                if *s == ActorStatus::Running {
                    ActorStatus::Stopping
                } else {
                    s.clone()
                }
            });
            if let Err(why) = CatchUnwind::new(actor.stopped(&mut cx)).await {
                finish.status = ActorStatus::Failed(format!("stopped hook panicked: {why}"));
            }
            tracing::debug!("actor stopped");
        }
    }
    // Unbind the mailbox and the identity before reporting the end; monitors hear why.
    if let ActorStatus::Failed(why) = &finish.status {
        cx.instance.set_exit(DownReason::Failed(why.clone()));
    }
    drop(mailbox);
    drop(cx);
    drop(finish);
}

/// The loop; `Some(reason)` if the actor failed.
async fn drive<A: Actor>(
    actor: &mut A,
    cx: &mut Context,
    mailbox: &mut PortReceiver<A::Message>,
    cell: &ActorCell,
) -> Option<String> {
    match CatchUnwind::new(actor.started(cx)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Some(format!("started: {e}")),
        Err(p) => return Some(format!("started panicked: {p}")),
    }
    loop {
        if cx.stop {
            return None;
        }
        let next = std::future::poll_fn(|tcx| {
            if cell.stop_requested.poll_until(tcx, |s| *s).is_ready() {
                return Poll::Ready(Next::Stop);
            }
            if let Poll::Ready(Some(r)) = cx.instance.poll_undeliverable(tcx) {
                return Poll::Ready(Next::Returned(r));
            }
            match mailbox.poll_recv_envelope(tcx) {
                Poll::Ready(Ok(env)) => Poll::Ready(Next::Message(env)),
                Poll::Ready(Err(RecvError::Closed)) => Poll::Ready(Next::MailboxClosed),
                Poll::Ready(Err(RecvError::Decode(_))) | Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let outcome = match next {
            Next::Stop | Next::MailboxClosed => return None,
            Next::Returned(r) => CatchUnwind::new(actor.handle_undeliverable(cx, r)).await,
            Next::Message(env) => match mailbox.decode(&env) {
                Ok(msg) => CatchUnwind::new(actor.handle(cx, msg)).await,
                Err(e) => {
                    tracing::warn!(sender = %env.sender, error = %e, "skipping a refused message");
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
