//! Typed actors and supervision: an actor taking several message types, reached from
//! another proc through an id parsed from text; a tree of actors stopped children first; a
//! child's failure failing its parent by default, and handled when the parent overrides
//! `child_failed`.

use procwire_smol::{
    messages, Actor, ActorError, ActorId, ActorRef, ActorStatus, ChannelTransport, Context,
    DownReason, Instance, Monitor, Name, PortReceiver, PortRef, ProcId, TypeFingerprint,
    Undeliverable, ACTOR_PORT,
};
use serde::{Deserialize, Serialize};

use crate::scenarios::{pair, shutdown_clean};
use crate::{within, Adapter, TestProc};

/// Adds to the counter's total; the reply is the new total.
#[derive(Serialize, Deserialize, Debug)]
pub struct Add {
    /// How much.
    pub n: u64,
    /// Gets the new total.
    pub reply: PortRef<u64>,
}

/// Asks for the text upper-cased.
#[derive(Serialize, Deserialize, Debug)]
pub struct Shout(pub String, pub PortRef<String>);

/// Asks who handles it: the reply names the actor and the handler.
#[derive(Serialize, Deserialize, Debug)]
pub struct Describe(pub PortRef<(ActorId, String)>);

messages! {
    /// What a [`Counter`] takes: three types, on ports `ACTOR_PORT`, `+1` and `+2`.
    #[derive(Debug)]
    pub enum CounterMsg {
        Add(Add),
        Shout(Shout),
        Describe(Describe),
    }
}

/// An actor with a handler per message type.
#[derive(Default)]
pub struct Counter {
    total: u64,
}

impl Actor for Counter {
    type Message = CounterMsg;

    async fn handle(&mut self, cx: &mut Context, msg: CounterMsg) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(Add { n, reply }) => {
                self.total += n;
                reply.send(cx, self.total).await?;
            }
            CounterMsg::Shout(Shout(text, reply)) => reply.send(cx, text.to_uppercase()).await?,
            CounterMsg::Describe(Describe(reply)) => {
                let who = (cx.actor_id().clone(), "describe".to_string());
                reply.send(cx, who).await?;
            }
        }
        Ok(())
    }
}

async fn recv<M: serde::de::DeserializeOwned + 'static>(rx: &mut PortReceiver<M>, what: &str) -> M {
    within(10, what, rx.recv()).await.expect(what)
}

/// An actor taking three types, spawned on `b`, reached from `a` through its id printed and
/// parsed back: each type reaches its own handler (replies per type, in send order within a
/// type); a message of another type to one of its ports, and a port past its types, come
/// back to the sender (`WrongType`, `NoSuchPort`) and the actor carries on.
pub async fn several_message_types_reach_their_handlers<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (spawned, handle) = b.spawn("counter", Counter::default()).expect("counter");
    let text = handle.actor_id().to_string();
    let id: ActorId = text.parse().expect("the printed id parses");
    let counter = ActorRef::<Counter>::attest(id.clone());
    assert_eq!(counter, spawned);
    let ports = [
        counter.port::<Add>().port_id().index(),
        counter.port::<Shout>().port_id().index(),
        counter.port::<Describe>().port_id().index(),
    ];
    assert_eq!(ports, [ACTOR_PORT, ACTOR_PORT + 1, ACTOR_PORT + 2]);
    assert_eq!(
        counter.port::<Shout>().fingerprint(),
        TypeFingerprint::of::<Shout>()
    );

    let (client, _) = a.instance("client").expect("client");
    let (totals, mut totals_rx) = client.open_port::<u64>();
    let (shouts, mut shouts_rx) = client.open_port::<String>();
    let (whos, mut whos_rx) = client.open_port::<(ActorId, String)>();
    for n in [2, 5] {
        let add = Add {
            n,
            reply: totals.port_ref(),
        };
        counter.send(&client, add).await.expect("add");
    }
    let shout = Shout("hi".to_string(), shouts.port_ref());
    counter.send(&client, shout).await.expect("shout");
    counter
        .send(&client, Describe(whos.port_ref()))
        .await
        .expect("describe");
    assert_eq!(recv(&mut totals_rx, "first total").await, 2);
    assert_eq!(recv(&mut totals_rx, "second total").await, 7);
    assert_eq!(recv(&mut shouts_rx, "shout").await, "HI");
    assert_eq!(
        recv(&mut whos_rx, "describe").await,
        (id.clone(), "describe".to_string())
    );

    wrong_types_come_back(&client, &id).await;
    // A reference travels in a message too (as the id and the mailbox's fingerprint).
    let (refs, mut refs_rx) = client.open_port::<ActorRef<Counter>>();
    let (teller, _) = b.instance("teller").expect("teller");
    refs.port_ref()
        .send(&teller, spawned.clone())
        .await
        .expect("send the reference");
    let travelled = recv(&mut refs_rx, "the reference").await;
    assert_eq!(travelled, counter);
    // Still running, and its state intact.
    let add = Add {
        n: 1,
        reply: totals.port_ref(),
    };
    travelled.send(&client, add).await.expect("add");
    assert_eq!(recv(&mut totals_rx, "total after refusals").await, 8);
    assert_eq!(handle.status(), ActorStatus::Running);
    drop((client, teller));
    shutdown_clean(&a).await;
    shutdown_clean(&b).await;
}

/// A `String` sent to the `Shout` port, and anything to a port past the counter's types.
async fn wrong_types_come_back(client: &Instance, id: &ActorId) {
    let shout_port = id.port(ACTOR_PORT + 1);
    PortRef::<String>::attest(shout_port)
        .send(client, "not a Shout".to_string())
        .await
        .expect("send");
    let back = within(10, "wrong type", client.next_undeliverable())
        .await
        .expect("a return");
    assert_eq!(
        back.reason,
        Undeliverable::WrongType {
            expected: TypeFingerprint::of::<Shout>(),
        }
    );
    assert_eq!(
        back.envelope.fingerprint,
        Some(TypeFingerprint::of::<String>())
    );
    PortRef::<u64>::attest(id.port(ACTOR_PORT + 3))
        .send(client, 1)
        .await
        .expect("send");
    let back = within(10, "no such port", client.next_undeliverable())
        .await
        .expect("a return");
    assert_eq!(back.reason, Undeliverable::NoSuchPort);
}

/// What the nodes of a supervision tree report to the test.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node started and spawned these children.
    Up {
        /// The node.
        node: ActorId,
        /// Its children, in spawn order.
        children: Vec<ActorId>,
    },
    /// A node's `stopped` hook ran.
    Stopped(ActorId),
    /// A supervising node's `child_failed` ran.
    ChildFailed {
        /// The supervisor.
        parent: ActorId,
        /// Its child.
        child: ActorId,
        /// The child's reason.
        reason: String,
    },
}

/// The shape of a tree of [`Node`]s.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Handles its children's failures (reports them and carries on) instead of failing.
    pub supervise: bool,
    /// Its children.
    pub children: Vec<Plan>,
}

impl Plan {
    fn leaf() -> Plan {
        Plan {
            supervise: false,
            children: vec![],
        }
    }

    fn size(&self) -> usize {
        1 + self.children.iter().map(Plan::size).sum::<usize>()
    }
}

/// Fails the node with this reason.
#[derive(Serialize, Deserialize, Debug)]
pub struct Fail(pub String);

/// Asks the node to stop itself.
#[derive(Serialize, Deserialize, Debug)]
pub struct Stop;

messages! {
    /// What a [`Node`] takes.
    pub enum NodeMsg {
        Fail(Fail),
        Stop(Stop),
    }
}

/// A node of a supervision tree: spawns its children as planned, reports to `events`.
pub struct Node {
    plan: Plan,
    events: PortRef<Event>,
}

impl Actor for Node {
    type Message = NodeMsg;

    async fn started(&mut self, cx: &mut Context) -> Result<(), ActorError> {
        let mut children = Vec::new();
        for plan in self.plan.children.clone() {
            let events = self.events.clone();
            let (child, _) = cx.spawn_child(Node { plan, events })?;
            children.push(child.actor_id().clone());
        }
        let node = cx.actor_id().clone();
        self.events.send(cx, Event::Up { node, children }).await?;
        Ok(())
    }

    async fn handle(&mut self, cx: &mut Context, msg: NodeMsg) -> Result<(), ActorError> {
        match msg {
            NodeMsg::Fail(Fail(why)) => return Err(ActorError::msg(why)),
            NodeMsg::Stop(Stop) => cx.stop(),
        }
        Ok(())
    }

    async fn child_failed(
        &mut self,
        cx: &mut Context,
        child: ActorId,
        reason: String,
    ) -> Result<(), ActorError> {
        if !self.plan.supervise {
            return Err(procwire_smol::SupervisionError::ChildFailed { child, reason }.into());
        }
        let parent = cx.actor_id().clone();
        let event = Event::ChildFailed {
            parent,
            child,
            reason,
        };
        self.events.send(cx, event).await?;
        Ok(())
    }

    async fn stopped(&mut self, cx: &mut Context) {
        let me = cx.actor_id().clone();
        if let Err(e) = self.events.send(cx, Event::Stopped(me)).await {
            tracing::warn!(error = %e, "could not report a stop");
        }
    }
}

/// A tree spawned on `b` as root `name`, watched from `watcher` (on `a`): the ids by
/// depth-first order (root first) and a monitor per node, all in place.
struct Tree {
    ids: Vec<ActorId>,
    monitors: Vec<Monitor>,
    root: procwire_smol::ActorHandle,
    root_ref: ActorRef<Node>,
}

async fn grow<P: TestProc>(
    b: &P,
    name: &str,
    plan: Plan,
    watcher: &Instance,
    events: &mut PortReceiver<Event>,
    events_ref: PortRef<Event>,
) -> Tree {
    let n = plan.size();
    let node = Node {
        plan,
        events: events_ref,
    };
    let (root_ref, root) = b.spawn(name, node).expect("spawn the root");
    let mut ups = std::collections::HashMap::new();
    for _ in 0..n {
        match recv(events, "a node comes up").await {
            Event::Up { node, children } => ups.insert(node, children),
            other => panic!("expected a node up, got {other:?}"),
        };
    }
    // Depth-first from the root.
    let mut ids = Vec::new();
    let mut todo = vec![root.actor_id().clone()];
    while let Some(id) = todo.pop() {
        let children = ups.get(&id).expect("every node reported");
        todo.extend(children.iter().rev().cloned());
        ids.push(id);
    }
    assert_eq!(ids.len(), n, "the tree is whole: {ups:?}");
    let monitors = ids.iter().map(|id| watcher.monitor(id)).collect();
    barrier(watcher, b.proc_id()).await;
    Tree {
        ids,
        monitors,
        root,
        root_ref,
    }
}

/// A watch on an actor that does not exist: answered after every watch sent before it.
async fn barrier(watcher: &Instance, proc: &ProcId) {
    let ghost = proc.actor(Name::new("nobody").expect("name"), 0);
    let mut m = watcher.monitor(&ghost);
    let down = within(10, "barrier", m.down()).await;
    assert_eq!(down, Some(DownReason::NoSuchActor));
}

async fn down(m: &mut Monitor) -> DownReason {
    let what = format!("{} goes down", m.target());
    within(10, &what, m.down()).await.expect("watcher runs")
}

/// root → (mid → leaf), sibling. Stopping the root stops every child before its parent:
/// each `stopped` hook reports after those of its children, every child's monitor has
/// fired when the root's does, and all end `Stopped`.
pub async fn stopping_a_parent_stops_its_children_first<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (watcher, _) = a.instance("watcher").expect("watcher");
    let (events_port, mut events) = watcher.open_port::<Event>();
    let mid = Plan {
        supervise: false,
        children: vec![Plan::leaf()],
    };
    let plan = Plan {
        supervise: false,
        children: vec![mid, Plan::leaf()],
    };
    let mut tree = grow(
        &b,
        "root",
        plan,
        &watcher,
        &mut events,
        events_port.port_ref(),
    )
    .await;
    let [root, mid, leaf, sibling] = <[ActorId; 4]>::try_from(tree.ids.clone()).expect("4 ids");

    tree.root_ref.send(&watcher, Stop).await.expect("stop");
    let mut stopped = Vec::new();
    for _ in 0..4 {
        match recv(&mut events, "a node stops").await {
            Event::Stopped(id) => stopped.push(id),
            other => panic!("expected a stop, got {other:?}"),
        }
    }
    let at = |id: &ActorId| stopped.iter().position(|s| s == id).expect("stopped");
    assert!(at(&leaf) < at(&mid), "leaf before mid: {stopped:?}");
    assert!(at(&mid) < at(&root), "mid before root: {stopped:?}");
    assert!(at(&sibling) < at(&root), "sibling before root: {stopped:?}");
    assert_eq!(
        within(10, "root ends", tree.root.wait()).await,
        ActorStatus::Stopped
    );

    // The root's monitor fires last: the others have fired by then.
    let (root_m, others) = tree.monitors.split_first_mut().expect("monitors");
    assert_eq!(down(root_m).await, DownReason::Stopped);
    for m in others {
        assert_eq!(m.try_down(), Some(DownReason::Stopped), "{}", m.target());
    }
    drop(watcher);
    shutdown_clean(&a).await;
    shutdown_clean(&b).await;
}

/// root → (mid → leaf), sibling, none supervising: the leaf's failure fails mid, then the
/// root (each reason naming the child and its reason), the sibling is stopped (not failed)
/// before the root goes, and no `stopped` hook of a failed node runs.
pub async fn a_child_failure_fails_its_parent_by_default<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (watcher, _) = a.instance("watcher").expect("watcher");
    let (events_port, mut events) = watcher.open_port::<Event>();
    let mid = Plan {
        supervise: false,
        children: vec![Plan::leaf()],
    };
    let plan = Plan {
        supervise: false,
        children: vec![mid, Plan::leaf()],
    };
    let mut tree = grow(
        &b,
        "root",
        plan,
        &watcher,
        &mut events,
        events_port.port_ref(),
    )
    .await;
    let [_, mid, leaf, sibling] = <[ActorId; 4]>::try_from(tree.ids.clone()).expect("4 ids");

    let leaf_ref = ActorRef::<Node>::attest(leaf.clone());
    leaf_ref
        .send(&watcher, Fail("boom".to_string()))
        .await
        .expect("fail");
    let mid_why = format!("child {leaf} failed: boom");
    let root_why = format!("child {mid} failed: {mid_why}");
    assert_eq!(
        within(10, "root fails", tree.root.wait()).await,
        ActorStatus::Failed(root_why.clone())
    );
    let (root_m, others) = tree.monitors.split_first_mut().expect("monitors");
    assert_eq!(down(root_m).await, DownReason::Failed(root_why));
    let [mid_m, leaf_m, sibling_m] = others else {
        panic!("three children");
    };
    assert_eq!(mid_m.try_down(), Some(DownReason::Failed(mid_why)));
    assert_eq!(leaf_m.try_down(), Some(DownReason::Failed("boom".into())));
    assert_eq!(sibling_m.try_down(), Some(DownReason::Stopped));
    // Only the sibling stopped normally.
    assert_eq!(
        recv(&mut events, "the sibling's stop").await,
        Event::Stopped(sibling)
    );
    assert!(events.try_recv().is_err(), "no other event");
    drop(watcher);
    shutdown_clean(&a).await;
    shutdown_clean(&b).await;
}

/// A supervising root with two leaves: one leaf's failure reaches the root's `child_failed`
/// once, with the child's id and reason, after the leaf has ended; the root and the other
/// leaf carry on, and stop normally later.
pub async fn a_supervisor_handles_its_child_failure<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (watcher, _) = a.instance("watcher").expect("watcher");
    let (events_port, mut events) = watcher.open_port::<Event>();
    let plan = Plan {
        supervise: true,
        children: vec![Plan::leaf(), Plan::leaf()],
    };
    let mut tree = grow(
        &b,
        "sup",
        plan,
        &watcher,
        &mut events,
        events_port.port_ref(),
    )
    .await;
    let [root, failing, other] = <[ActorId; 3]>::try_from(tree.ids.clone()).expect("3 ids");

    ActorRef::<Node>::attest(failing.clone())
        .send(&watcher, Fail("boom".to_string()))
        .await
        .expect("fail");
    assert_eq!(
        recv(&mut events, "the supervisor hears").await,
        Event::ChildFailed {
            parent: root.clone(),
            child: failing.clone(),
            reason: "boom".to_string(),
        }
    );
    assert_eq!(
        down(&mut tree.monitors[1]).await,
        DownReason::Failed("boom".into())
    );
    assert_eq!(tree.root.status(), ActorStatus::Running);
    assert_eq!(tree.monitors[0].try_down(), None, "the supervisor runs");
    assert_eq!(tree.monitors[2].try_down(), None, "the other child runs");

    tree.root.stop();
    assert_eq!(
        within(10, "root ends", tree.root.wait()).await,
        ActorStatus::Stopped
    );
    let stops = [
        recv(&mut events, "a stop").await,
        recv(&mut events, "a stop").await,
    ];
    assert_eq!(stops, [Event::Stopped(other), Event::Stopped(root)]);
    assert_eq!(down(&mut tree.monitors[0]).await, DownReason::Stopped);
    assert_eq!(tree.monitors[2].try_down(), Some(DownReason::Stopped));
    drop(watcher);
    shutdown_clean(&a).await;
    shutdown_clean(&b).await;
}

/// Rule 4: an instance (no loop) asks its children to stop when it is dropped, and the
/// failure of its child is not its own (it keeps running). Then a proc shutting down with
/// a live tree ends every node (no task aborted, watchers told).
pub async fn instances_stop_their_children_and_shutdown_ends_trees<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (watcher, _) = a.instance("watcher").expect("watcher");
    let (events_port, mut events) = watcher.open_port::<Event>();
    let (boss, boss_handle) = b.instance("boss").expect("boss");
    let leaf = || Node {
        plan: Plan::leaf(),
        events: events_port.port_ref(),
    };
    let (failing, failing_handle) = boss.spawn_child(leaf()).expect("child");
    let (_, kept) = boss.spawn_child(leaf()).expect("child");
    for _ in 0..2 {
        assert!(matches!(
            recv(&mut events, "a child comes up").await,
            Event::Up { .. }
        ));
    }
    failing
        .send(&watcher, Fail("boom".to_string()))
        .await
        .expect("fail");
    assert_eq!(
        within(10, "the child fails", failing_handle.wait()).await,
        ActorStatus::Failed("boom".into())
    );
    assert_eq!(boss_handle.status(), ActorStatus::Running);
    assert_eq!(kept.status(), ActorStatus::Running);
    drop(boss);
    assert_eq!(
        within(10, "the other child stops", kept.wait()).await,
        ActorStatus::Stopped
    );
    assert_eq!(
        recv(&mut events, "its stop").await,
        Event::Stopped(kept.actor_id().clone())
    );

    let plan = Plan {
        supervise: false,
        children: vec![Plan::leaf()],
    };
    let mut tree = grow(
        &b,
        "live",
        plan,
        &watcher,
        &mut events,
        events_port.port_ref(),
    )
    .await;
    shutdown_clean(&b).await;
    // Sends are refused once the proc drains, so the nodes' hooks cannot report; their
    // watchers hear of the shutdown.
    assert_eq!(tree.root.status(), ActorStatus::Stopped);
    for m in &mut tree.monitors {
        assert_eq!(down(m).await, DownReason::ProcShutDown);
    }
    drop(watcher);
    shutdown_clean(&a).await;
}
