//! Monitoring actors: [`Instance::monitor`](crate::Instance::monitor) and the per-proc
//! monitor service it talks to.
//!
//! The rules are in the crate docs ("Monitoring").

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;

use procwire_core::envelope::{Envelope, Undeliverable};
use procwire_core::id::{ActorId, Name, ProcId};
use serde::{Deserialize, Serialize};

use crate::actor::ACTOR_PORT;
use crate::engine::Engine;
use crate::error::{RecvError, SendError};
use crate::instance::Instance;
use crate::links::{LinkEvent, LinkEvents, Links};
use crate::sync::{lock, Queue, Watch};
use crate::typed::{encode, PortReceiver, PortRef, Returned, TypeFingerprint};

/// The root name every proc reserves for its monitor service.
pub const MONITOR_SERVICE: &str = "_procwire_monitor";

/// Why a monitored actor is reported down. Each [`Monitor`] gets exactly one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DownReason {
    /// It stopped normally (or its instance was dropped).
    Stopped,
    /// Its handler failed or panicked; the text says why.
    Failed(String),
    /// Its proc shut down gracefully.
    ProcShutDown,
    /// Its proc could not be reached (see the module rules).
    ProcUnreachable,
    /// Its proc restarted: the actor of the old incarnation is gone.
    ProcRestarted,
    /// It was not alive when the watch reached its proc.
    NoSuchActor,
    /// Its proc runs no monitor service (not a procwire-host proc).
    NoMonitor,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::Stopped => f.write_str("stopped"),
            DownReason::Failed(why) => write!(f, "failed: {why}"),
            DownReason::ProcShutDown => f.write_str("its proc shut down"),
            DownReason::ProcUnreachable => f.write_str("its proc is unreachable"),
            DownReason::ProcRestarted => f.write_str("its proc restarted"),
            DownReason::NoSuchActor => f.write_str("no such actor"),
            DownReason::NoMonitor => f.write_str("its proc runs no monitor service"),
        }
    }
}

/// What monitor services say to each other.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MonitorMsg {
    /// Watch `target` (an actor of the receiving proc) for the sender's watch `watch`.
    Watch {
        /// The watcher's number for it.
        watch: u64,
        /// The actor to watch.
        target: ActorId,
        /// The watcher proc's service.
        reply_to: PortRef<MonitorMsg>,
    },
    /// Forget watch `watch` of `reply_to` on `target`.
    Unwatch {
        /// The watcher's number.
        watch: u64,
        /// The actor watched.
        target: ActorId,
        /// The watcher proc's service.
        reply_to: PortRef<MonitorMsg>,
    },
    /// The actor of watch `watch` is down.
    Down {
        /// The watcher's number.
        watch: u64,
        /// Why.
        reason: DownReason,
    },
}

/// A watch on one actor: gets one [`DownReason`]. Dropping it cancels the watch.
pub struct Monitor {
    target: ActorId,
    watch: u64,
    queue: Arc<Queue<DownReason>>,
    monitors: Arc<Monitors>,
}

impl Monitor {
    /// The actor watched.
    pub fn target(&self) -> &ActorId {
        &self.target
    }

    /// Waits for the notification; `None` if this proc stopped first.
    pub async fn down(&mut self) -> Option<DownReason> {
        self.queue.pop().await
    }

    /// The notification, if it came.
    pub fn try_down(&mut self) -> Option<DownReason> {
        self.queue.try_pop().ok()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.monitors.unwatch(self.watch);
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Monitor({})", self.target)
    }
}

/// A watch this proc holds (its watcher is here).
struct Outgoing {
    target: ActorId,
    queue: Arc<Queue<DownReason>>,
}

/// A message for the service task to send.
struct Cmd {
    to: PortRef<MonitorMsg>,
    msg: MonitorMsg,
}

#[derive(Default)]
struct State {
    /// Identities alive in this proc.
    live: HashSet<ActorId>,
    next_watch: u64,
    outgoing: HashMap<u64, Outgoing>,
    /// Watches held here on this proc's actors: (watcher's service, its watch number).
    incoming: HashMap<ActorId, Vec<(PortRef<MonitorMsg>, u64)>>,
    todo: VecDeque<Cmd>,
    /// How identities that went away recently went (a watch may arrive just after).
    recent: HashMap<ActorId, DownReason>,
    recent_order: VecDeque<ActorId>,
    /// The proc is shutting down: new watches of its actors get `ProcShutDown`.
    shutting: bool,
    closed: bool,
}

impl State {
    fn remember_exit(&mut self, id: &ActorId, reason: &DownReason) {
        if self.recent.insert(id.clone(), reason.clone()).is_none() {
            self.recent_order.push_back(id.clone());
        }
        while self.recent_order.len() > RECENT_EXITS {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    /// Why `target`, not alive here, is down for a watch arriving now.
    fn down_reason(&self, target: &ActorId) -> DownReason {
        if self.shutting {
            return DownReason::ProcShutDown;
        }
        self.recent
            .get(target)
            .cloned()
            .unwrap_or(DownReason::NoSuchActor)
    }
}

/// How many recent exits a proc remembers, so that a watch arriving just after its target
/// went away still gets the real reason rather than `NoSuchActor`.
pub const RECENT_EXITS: usize = 1024;

/// The monitor state of one proc, shared by its instances and its service task.
pub(crate) struct Monitors {
    proc: ProcId,
    state: Mutex<State>,
    /// Wakes the service task when `todo` grows.
    wake: crate::sync::Signal,
    /// Messages queued or being sent.
    pending: Watch<usize>,
    /// The service's identity, to hand messages to the machine at once from any thread.
    sender: Mutex<Option<(Weak<Engine>, ActorId)>>,
}

/// The service port of `proc`.
fn service_of(proc: &ProcId) -> PortRef<MonitorMsg> {
    let name = Name::new(MONITOR_SERVICE).expect("the service name is valid");
    PortRef::attest(proc.actor(name, 0).port(ACTOR_PORT))
}

impl Monitors {
    pub(crate) fn new(proc: ProcId) -> Arc<Self> {
        Arc::new(Monitors {
            proc,
            state: Mutex::new(State::default()),
            wake: crate::sync::Signal::new(),
            pending: Watch::new(0),
            sender: Mutex::new(None),
        })
    }

    /// The service runs as `id`: messages can be handed to the machine directly.
    pub(crate) fn set_sender(&self, engine: &Arc<Engine>, id: ActorId) {
        *lock(&self.sender) = Some((Arc::downgrade(engine), id));
    }

    /// An identity of this proc came to life.
    pub(crate) fn born(&self, id: &ActorId) {
        let mut st = lock(&self.state);
        st.live.insert(id.clone());
        st.recent.remove(id);
    }

    /// An identity of this proc went away with `reason`.
    pub(crate) fn gone(&self, id: &ActorId, reason: DownReason) {
        let mut st = lock(&self.state);
        st.live.remove(id);
        st.remember_exit(id, &reason);
        let local: Vec<u64> = st
            .outgoing
            .iter()
            .filter(|(_, o)| &o.target == id)
            .map(|(w, _)| *w)
            .collect();
        for w in local {
            fire(&mut st, w, reason.clone());
        }
        for (to, watch) in st.incoming.remove(id).unwrap_or_default() {
            let msg = MonitorMsg::Down {
                watch,
                reason: reason.clone(),
            };
            self.push(&mut st, Cmd { to, msg });
        }
    }

    /// Watches `target` for an instance of this proc.
    pub(crate) fn watch(self: &Arc<Self>, target: &ActorId) -> Monitor {
        let queue = Arc::new(Queue::with_capacity_limit(1));
        let mut st = lock(&self.state);
        let watch = st.next_watch;
        st.next_watch += 1;
        let outgoing = Outgoing {
            target: target.clone(),
            queue: queue.clone(),
        };
        st.outgoing.insert(watch, outgoing);
        if st.closed {
            queue.close();
        } else if target.proc() == &self.proc {
            if !st.live.contains(target) {
                let reason = st.down_reason(target);
                fire(&mut st, watch, reason);
            }
        } else {
            let msg = MonitorMsg::Watch {
                watch,
                target: target.clone(),
                reply_to: service_of(&self.proc),
            };
            let to = service_of(target.proc());
            self.push(&mut st, Cmd { to, msg });
        }
        drop(st);
        Monitor {
            target: target.clone(),
            watch,
            queue,
            monitors: self.clone(),
        }
    }

    /// A [`Monitor`] was dropped.
    fn unwatch(&self, watch: u64) {
        let mut st = lock(&self.state);
        let Some(o) = st.outgoing.remove(&watch) else {
            return;
        };
        if o.target.proc() != &self.proc && !st.closed {
            let msg = MonitorMsg::Unwatch {
                watch,
                target: o.target.clone(),
                reply_to: service_of(&self.proc),
            };
            let to = service_of(o.target.proc());
            self.push(&mut st, Cmd { to, msg });
        }
    }

    /// Sends `cmd` now if nothing is queued before it and the link has room (so it is
    /// ordered before anything this proc sends after the call); otherwise queues it for the
    /// service task.
    fn push(&self, st: &mut State, cmd: Cmd) {
        if st.closed {
            return; // stopped (or killed: a crash tells nobody)
        }
        if st.todo.is_empty() {
            match self.try_send_now(&cmd) {
                Ok(()) => return,
                Err(SendError::WouldBlock) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "monitor service: could not send");
                    return;
                }
            }
        }
        st.todo.push_back(cmd);
        self.pending.update(|n| n + 1);
        self.wake.notify();
    }

    /// The proc is shutting down gracefully: every watcher of its actors hears so.
    pub(crate) fn shutting_down(&self) {
        let mut st = lock(&self.state);
        st.shutting = true;
        let targets: Vec<ActorId> = st.incoming.keys().cloned().collect();
        for target in targets {
            for (to, watch) in st.incoming.remove(&target).unwrap_or_default() {
                let msg = MonitorMsg::Down {
                    watch,
                    reason: DownReason::ProcShutDown,
                };
                self.push(&mut st, Cmd { to, msg });
            }
        }
        let local: Vec<u64> = st
            .outgoing
            .iter()
            .filter(|(_, o)| o.target.proc() == &self.proc)
            .map(|(w, _)| *w)
            .collect();
        for w in local {
            fire(&mut st, w, DownReason::ProcShutDown);
        }
    }

    /// Resolves once everything queued has been handed to the machine.
    pub(crate) async fn flushed(&self) {
        self.pending.wait_until(|n| *n == 0).await;
    }

    /// The proc stopped: monitors still waiting get `None`.
    pub(crate) fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        for (_, o) in st.outgoing.drain() {
            o.queue.close();
        }
        st.todo.clear();
        drop(st);
        self.pending.set(0);
        self.wake.notify();
    }

    /// A message for the service arrived.
    fn on_msg(&self, msg: MonitorMsg) {
        let mut st = lock(&self.state);
        match msg {
            MonitorMsg::Watch {
                watch,
                target,
                reply_to,
            } => {
                if st.live.contains(&target) && !st.shutting {
                    let list = st.incoming.entry(target).or_default();
                    // A watcher asks again after losing the link: once is enough.
                    if !list.iter().any(|(to, w)| *w == watch && to == &reply_to) {
                        list.push((reply_to, watch));
                    }
                } else {
                    let reason = st.down_reason(&target);
                    let msg = MonitorMsg::Down { watch, reason };
                    self.push(&mut st, Cmd { to: reply_to, msg });
                }
            }
            MonitorMsg::Unwatch {
                watch,
                target,
                reply_to,
            } => {
                if let Some(list) = st.incoming.get_mut(&target) {
                    list.retain(|(to, w)| !(*w == watch && to == &reply_to));
                }
            }
            MonitorMsg::Down { watch, reason } => fire(&mut st, watch, reason),
        }
    }

    /// One of the service's messages came back.
    fn on_returned(&self, r: &Returned) {
        let Ok(MonitorMsg::Watch { watch, .. }) = r.decode::<MonitorMsg>() else {
            return; // a `Down` or `Unwatch` whose watcher is gone: nothing to do
        };
        let reason = match r.reason {
            Undeliverable::NoSuchActor | Undeliverable::NoSuchPort => DownReason::NoMonitor,
            Undeliverable::PeerRestarted | Undeliverable::SessionLost => DownReason::ProcRestarted,
            Undeliverable::ShuttingDown => DownReason::ProcShutDown,
            _ => DownReason::ProcUnreachable,
        };
        fire(&mut lock(&self.state), watch, reason);
    }

    /// A link event of this proc: ends the watches on actors of a peer that restarted or
    /// cannot be reached; after a loss, asks the peer again (which makes this proc dial it,
    /// so a peer that is gone is found out).
    fn on_link(&self, ev: &LinkEvent) {
        if let LinkEvent::Lost { peer, .. } = ev {
            return self.watch_again(peer);
        }
        let reason = match ev {
            LinkEvent::PeerRestarted { .. } => DownReason::ProcRestarted,
            LinkEvent::Unreachable { .. } | LinkEvent::SessionRefused { .. } => {
                DownReason::ProcUnreachable
            }
            _ => return,
        };
        let down = |p: &ProcId| match ev {
            LinkEvent::PeerRestarted { peer, .. } => p == peer,
            LinkEvent::Unreachable { addr, peer, .. } => {
                peer.as_ref() == Some(p) || p.addr() == addr
            }
            LinkEvent::SessionRefused { addr, .. } => p.addr() == addr,
            _ => false,
        };
        let mut st = lock(&self.state);
        let hit: Vec<u64> = st
            .outgoing
            .iter()
            .filter(|(_, o)| down(o.target.proc()))
            .map(|(w, _)| *w)
            .collect();
        for w in hit {
            fire(&mut st, w, reason.clone());
        }
    }

    /// Sends the watches on actors of `peer` again (the target side ignores repeats).
    fn watch_again(&self, peer: &ProcId) {
        let mut st = lock(&self.state);
        if st.closed {
            return;
        }
        let again: Vec<(u64, ActorId)> = st
            .outgoing
            .iter()
            .filter(|(_, o)| o.target.proc() == peer)
            .map(|(w, o)| (*w, o.target.clone()))
            .collect();
        for (watch, target) in again {
            let msg = MonitorMsg::Watch {
                watch,
                target,
                reply_to: service_of(&self.proc),
            };
            self.push(
                &mut st,
                Cmd {
                    to: service_of(peer),
                    msg,
                },
            );
        }
    }

    fn try_send_now(&self, cmd: &Cmd) -> Result<(), SendError> {
        let Some((engine, id)) = lock(&self.sender).clone() else {
            return Err(SendError::WouldBlock); // not started yet: the task sends it
        };
        let Some(engine) = engine.upgrade() else {
            return Err(SendError::ShuttingDown);
        };
        let env = Envelope::typed(
            id,
            cmd.to.port_id().clone(),
            TypeFingerprint::of::<MonitorMsg>(),
            encode(&cmd.msg)?,
        );
        engine.try_send(env)
    }

    fn next_cmd(&self) -> Option<Cmd> {
        lock(&self.state).todo.pop_front()
    }
}

/// Hands `reason` to watch `watch`'s monitor, once.
fn fire(st: &mut State, watch: u64, reason: DownReason) {
    if let Some(o) = st.outgoing.remove(&watch) {
        let _ = o.queue.push(reason);
    }
}

/// What woke the service.
enum Next {
    Send,
    Msg(Envelope),
    Returned(Returned),
    Link(LinkEvent),
    End,
}

/// The monitor service of a proc: runs until its mailbox closes with the proc.
pub(crate) async fn serve(
    inst: Instance,
    mut mailbox: PortReceiver<MonitorMsg>,
    mut links: LinkEvents,
    monitors: Arc<Monitors>,
) {
    loop {
        let next = poll_fn(|cx| {
            if monitors.wake.poll_wait(cx).is_ready() {
                return Poll::Ready(Next::Send);
            }
            if let Poll::Ready(Some(r)) = inst.poll_undeliverable(cx) {
                return Poll::Ready(Next::Returned(r));
            }
            if let Poll::Ready(Some(ev)) = links.poll_recv(cx) {
                return Poll::Ready(Next::Link(ev));
            }
            match mailbox.poll_recv_envelope(cx) {
                Poll::Ready(Ok(env)) => Poll::Ready(Next::Msg(env)),
                Poll::Ready(Err(RecvError::Closed)) => Poll::Ready(Next::End),
                Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match next {
            Next::Send => send_all(&inst, &monitors).await,
            Next::Msg(env) => match mailbox.decode(&env) {
                Ok(msg) => monitors.on_msg(msg),
                Err(e) => tracing::debug!(error = %e, "monitor service: refused a message"),
            },
            Next::Returned(r) => monitors.on_returned(&r),
            Next::Link(ev) => monitors.on_link(&ev),
            Next::End => return,
        }
    }
}

/// Sends everything queued, in order.
async fn send_all(inst: &Instance, monitors: &Monitors) {
    while let Some(cmd) = monitors.next_cmd() {
        if let Err(e) = cmd.to.send(inst, cmd.msg).await {
            tracing::debug!(error = %e, "monitor service: could not send");
        }
        monitors.pending.update(|n| n.saturating_sub(1));
    }
}

/// What a proc's instances share besides the engine: link events and monitors.
pub(crate) struct ProcServices {
    pub(crate) links: Arc<Links>,
    pub(crate) monitors: Arc<Monitors>,
}

impl ProcServices {
    /// The proc stopped: subscriptions and monitors end.
    pub(crate) fn close(&self) {
        self.links.close();
        self.monitors.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(s: &str) -> ActorId {
        s.parse().expect("actor id")
    }

    fn here() -> Arc<Monitors> {
        Monitors::new("local:1,a".parse().expect("proc id"))
    }

    /// The messages queued for the service task, as (destination proc, message).
    fn queued(m: &Monitors) -> Vec<(ProcId, MonitorMsg)> {
        std::iter::from_fn(|| m.next_cmd())
            .map(|c| (c.to.port_id().actor().proc().clone(), c.msg))
            .collect()
    }

    #[test]
    fn local_watches_fire_once_with_the_exit_reason() {
        let m = here();
        let x = actor("local:1,a,x[0]");
        m.born(&x);
        let mut w = m.watch(&x);
        assert_eq!(w.try_down(), None);
        m.gone(&x, DownReason::Failed("boom".into()));
        assert_eq!(w.try_down(), Some(DownReason::Failed("boom".into())));
        assert_eq!(w.try_down(), None, "exactly one");
        // Watched just after it went: the real reason, not NoSuchActor.
        assert_eq!(
            m.watch(&x).try_down(),
            Some(DownReason::Failed("boom".into()))
        );
        assert_eq!(
            m.watch(&actor("local:1,a,never[0]")).try_down(),
            Some(DownReason::NoSuchActor)
        );
        assert!(queued(&m).is_empty(), "nothing to send for local targets");
    }

    #[test]
    fn remote_watches_end_on_down_restart_unreachable_or_return() {
        let m = here();
        let b: ProcId = "local:2,b".parse().expect("proc id");
        let mut w1 = m.watch(&actor("local:2,b,x[0]"));
        let mut w2 = m.watch(&actor("local:2,b,y[0]"));
        let sent = queued(&m);
        assert_eq!(sent.len(), 2);
        assert!(matches!(&sent[0], (p, MonitorMsg::Watch { watch: 0, .. }) if p == &b));
        m.on_msg(MonitorMsg::Down {
            watch: 0,
            reason: DownReason::Stopped,
        });
        assert_eq!(w1.try_down(), Some(DownReason::Stopped));
        // A loss asks again, a restart ends what is left.
        m.on_link(&LinkEvent::Lost {
            peer: b.clone(),
            error: crate::links::LinkError::ClosedByPeer,
        });
        assert!(matches!(
            &queued(&m)[..],
            [(_, MonitorMsg::Watch { watch: 1, .. })]
        ));
        m.on_link(&LinkEvent::PeerRestarted {
            peer: b.clone(),
            old_incarnation: Some(1),
            new_incarnation: None,
        });
        assert_eq!(w2.try_down(), Some(DownReason::ProcRestarted));

        let mut w3 = m.watch(&actor("local:2,b,z[0]"));
        m.on_link(&LinkEvent::Unreachable {
            addr: b.addr().clone(),
            peer: None,
            error: crate::links::LinkError::DialTimedOut,
        });
        assert_eq!(w3.try_down(), Some(DownReason::ProcUnreachable));

        let mut w4 = m.watch(&actor("local:2,b,q[0]"));
        let Some((_, watch)) = queued(&m).into_iter().last() else {
            panic!("a watch was queued");
        };
        let mut env = Envelope::new(
            actor("local:1,a,_procwire_monitor[0]"),
            service_of(&b).port_id().clone(),
            encode(&watch).expect("encodes"),
        );
        env.returned = Some(Undeliverable::NoSuchActor);
        m.on_returned(&Returned {
            reason: Undeliverable::NoSuchActor,
            dial_error: None,
            envelope: env,
        });
        assert_eq!(w4.try_down(), Some(DownReason::NoMonitor));
    }

    #[test]
    fn the_target_side_records_once_answers_and_reports_shutdown() {
        let m = here();
        let t = actor("local:1,a,t[0]");
        let u = actor("local:1,a,u[0]");
        m.born(&t);
        m.born(&u);
        let reply_to = service_of(&"local:2,b".parse().expect("proc id"));
        let watch = |watch, target: &ActorId| MonitorMsg::Watch {
            watch,
            target: target.clone(),
            reply_to: reply_to.clone(),
        };
        m.on_msg(watch(7, &t));
        m.on_msg(watch(7, &t)); // asked again after a loss
        m.on_msg(watch(8, &u));
        m.on_msg(watch(9, &actor("local:1,a,nobody[0]")));
        m.gone(&t, DownReason::Stopped);
        m.shutting_down();
        m.on_msg(watch(10, &u));
        let downs: Vec<(u64, DownReason)> = queued(&m)
            .into_iter()
            .map(|(_, msg)| match msg {
                MonitorMsg::Down { watch, reason } => (watch, reason),
                other => panic!("expected a Down, got {other:?}"),
            })
            .collect();
        assert_eq!(
            downs,
            vec![
                (9, DownReason::NoSuchActor),
                (7, DownReason::Stopped),
                (8, DownReason::ProcShutDown),
                (10, DownReason::ProcShutDown),
            ]
        );
    }

    #[test]
    fn monitors_end_with_the_proc_and_dropping_one_unwatches() {
        let m = here();
        let w = m.watch(&actor("local:2,b,x[0]"));
        drop(w);
        assert!(matches!(
            &queued(&m)[..],
            [
                (_, MonitorMsg::Watch { .. }),
                (_, MonitorMsg::Unwatch { watch: 0, .. })
            ]
        ));
        let mut w = m.watch(&actor("local:2,b,y[0]"));
        m.close();
        assert_eq!(crate::sync::block_on(w.down()), None);
    }
}
