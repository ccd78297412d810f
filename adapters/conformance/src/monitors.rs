//! Monitoring: an instance watches actors in another proc (and its own) and gets exactly one
//! notification for each, whichever way the actor goes.

use procwire_smol::{ChannelTransport, DownReason, Instance, Monitor, Name, ProcId};

use crate::scenarios::{pair, shutdown_clean};
use crate::{options, sleep, within, Adapter, Echo, EchoMsg, TestProc};

async fn down(m: &mut Monitor, what: &str) -> DownReason {
    within(10, what, m.down())
        .await
        .expect("the watching proc runs")
}

/// A watch on an actor of `proc` that does not exist: its answer comes back over the same
/// link after every watch sent before it was handled, so awaiting it shows they are in place.
async fn barrier(watcher: &Instance, proc: &ProcId) {
    let ghost = proc.actor(Name::new("nobody").expect("name"), 0);
    let mut m = watcher.monitor(&ghost);
    assert_eq!(down(&mut m, "barrier").await, DownReason::NoSuchActor);
}

/// Stopped, failed, dropped, never alive, in the watcher's own proc, its proc shut down, its
/// proc killed: each monitor gets one notification with the right reason, and nothing after.
pub async fn monitors_report_each_way_an_actor_goes<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (watcher, _) = a.instance("watcher").expect("watcher");

    let (stopper, h) = b.spawn("stopper", Echo).expect("stopper");
    let mut m = watcher.monitor(h.actor_id());
    assert_eq!(m.target(), h.actor_id());
    stopper.send(&watcher, EchoMsg::Stop).await.expect("stop");
    assert_eq!(down(&mut m, "stopped").await, DownReason::Stopped);

    let (failer, h) = b.spawn("failer", Echo).expect("failer");
    let mut m = watcher.monitor(h.actor_id());
    let boom = EchoMsg::Fail("boom".to_string());
    failer.send(&watcher, boom).await.expect("fail");
    match down(&mut m, "failed").await {
        DownReason::Failed(why) => assert!(why.contains("boom"), "{why}"),
        other => panic!("expected a failure, got {other}"),
    }

    let (short, _) = b.instance("short").expect("short");
    let mut m = watcher.monitor(short.actor_id());
    barrier(&watcher, b.proc_id()).await;
    drop(short);
    assert_eq!(down(&mut m, "dropped").await, DownReason::Stopped);

    let ghost = b.proc_id().actor(Name::new("ghost").expect("name"), 3);
    let mut m = watcher.monitor(&ghost);
    assert_eq!(down(&mut m, "never alive").await, DownReason::NoSuchActor);

    let (local, h) = a.spawn("local", Echo).expect("local");
    let mut m = watcher.monitor(h.actor_id());
    local.send(&watcher, EchoMsg::Stop).await.expect("stop");
    assert_eq!(down(&mut m, "local").await, DownReason::Stopped);
    assert_eq!(m.try_down(), None, "one notification only");

    // b shuts down gracefully: its watchers hear so before it drains.
    let (_, h) = b.spawn("survivor", Echo).expect("survivor");
    let mut m = watcher.monitor(h.actor_id());
    barrier(&watcher, b.proc_id()).await;
    shutdown_clean(&b).await;
    assert_eq!(
        down(&mut m, "proc shut down").await,
        DownReason::ProcShutDown
    );

    // c is killed: the link is lost, the watch is asked again, the dial fails.
    let c = ba.start(t.any(), "c", options()).await.expect("c");
    let (_, h) = c.spawn("doomed", Echo).expect("doomed");
    let mut m = watcher.monitor(h.actor_id());
    barrier(&watcher, c.proc_id()).await;
    within(10, "kill c", c.kill()).await;
    assert_eq!(
        down(&mut m, "proc killed").await,
        DownReason::ProcUnreachable
    );
    sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(m.try_down(), None, "one notification only");

    // A watch outlives nothing: once the watching proc stops, `down` gives `None`.
    let d = ba.start(t.any(), "d", options()).await.expect("d");
    let (_, h) = d.spawn("idle", Echo).expect("idle");
    let mut m = watcher.monitor(h.actor_id());
    drop(watcher);
    shutdown_clean(&a).await;
    assert_eq!(within(10, "ends with the proc", m.down()).await, None);
    within(10, "kill d", d.kill()).await;
}
