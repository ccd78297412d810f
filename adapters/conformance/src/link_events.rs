//! Link events: what a proc's subscribers see as peers come, go, restart, cannot be
//! reached, or refuse the session.

use std::time::Duration;

use procwire_smol::{
    ChannelTransport, LinkError, LinkEvent, LinkEvents, Name, ProcId, RefuseReason,
};

use crate::scenarios::{pair, shutdown_clean};
use crate::{fixed_addr, init_logging, options, sleep, within, Adapter, TestProc};

/// The next event about a link this proc dialed, within `secs` seconds.
async fn next(ev: &mut LinkEvents, secs: u64, what: &str) -> LinkEvent {
    within(secs, what, async {
        loop {
            match ev.recv().await {
                Some(e) if e.is_inbound() => continue,
                other => break other,
            }
        }
    })
    .await
    .expect("the proc is running")
}

/// The next event is the loss of the link to `peer`, which was killed.
async fn expect_lost(ev: &mut LinkEvents, peer: &ProcId) {
    match next(ev, 10, "lost").await {
        LinkEvent::Lost { peer: p, error } => {
            assert_eq!(&p, peer);
            assert!(
                matches!(error, LinkError::ClosedByPeer | LinkError::Io { .. }),
                "{error}"
            );
        }
        other => panic!("expected lost, got {other}"),
    }
}

/// Sends one `u64` from a fresh instance of `a` to port 1000 of `receiver` in `to`.
async fn poke<P: TestProc>(a: &P, name: &str, to: &ProcId) {
    let (inst, _) = a.instance(name).expect("instance");
    let dest = to.actor(Name::new("receiver").expect("name"), 0).port(1000);
    inst.send_bytes(&dest, bytes::Bytes::from_static(b"x"))
        .await
        .expect("send");
    // The instance may go: what it sent stays with core.
}

/// `b` at a fixed address is connected, killed, dialed while down, and started again:
/// `a`'s subscriber sees connected, lost, unreachable (with the dial's error), the restart
/// (with the old incarnation) and connected to the new incarnation, in that order.
pub async fn peer_going_away_and_coming_back<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    init_logging();
    let addr = fixed_addr(t);
    let a = aa.start(t.any(), "a", options()).await.expect("a");
    let mut ev = a.link_events();
    let b = ba.start(addr.clone(), "b", options()).await.expect("b");
    let b_id = b.proc_id().clone();
    poke(&a, "first", &b_id).await;
    let first = match next(&mut ev, 10, "connected").await {
        LinkEvent::Connected { peer, incarnation } if peer == b_id => incarnation,
        other => panic!("expected connected to {b_id}, got {other}"),
    };

    within(10, "kill b", b.kill()).await;
    drop(b);
    expect_lost(&mut ev, &b_id).await;

    // Something to send makes core dial the dead address.
    poke(&a, "second", &b_id).await;
    match next(&mut ev, 1, "unreachable within a second").await {
        LinkEvent::Unreachable {
            addr: at,
            peer,
            error,
        } => {
            assert_eq!((at, peer), (addr.clone(), Some(b_id.clone())));
            assert!(matches!(error, LinkError::Io { .. }), "{error}");
        }
        other => panic!("expected unreachable, got {other}"),
    }

    let b2 = within(10, "restart b", async {
        loop {
            match ba.start(addr.clone(), "b", options()).await {
                Ok(p) => break p,
                Err(_) => sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    match next(&mut ev, 10, "restart").await {
        LinkEvent::PeerRestarted {
            peer,
            old_incarnation,
            ..
        } => assert_eq!((peer, old_incarnation), (b_id.clone(), Some(first))),
        other => panic!("expected the restart, got {other}"),
    }
    // Core returned what the old incarnation may have had; it dials the new one when there
    // is something to send.
    poke(&a, "third", &b_id).await;
    match next(&mut ev, 10, "connected again").await {
        LinkEvent::Connected { peer, incarnation } => {
            assert_eq!(peer, b_id);
            assert_ne!(incarnation, first, "a new incarnation");
        }
        other => panic!("expected connected, got {other}"),
    }
    let rest: Vec<LinkEvent> = std::iter::from_fn(|| ev.try_recv()).collect();
    assert!(
        rest.iter().all(LinkEvent::is_inbound),
        "nothing else: {rest:?}"
    );
    assert_eq!(ev.missed(), 0);
    shutdown_clean(&a).await;
    shutdown_clean(&b2).await;
    // Shutting down closes the link here; then the subscription ends with the proc.
    assert_eq!(
        next(&mut ev, 10, "lost at shutdown").await,
        LinkEvent::Lost {
            peer: b_id,
            error: LinkError::ClosedHere
        }
    );
    let rest = within(10, "subscription ends", async {
        let mut rest = Vec::new();
        while let Some(e) = ev.recv().await {
            rest.push(e);
        }
        rest
    })
    .await;
    assert!(rest.iter().all(LinkEvent::is_inbound), "{rest:?}");
}

/// A dial to an address nobody serves is reported within a second, once; a dial to a live
/// proc under the wrong name is reported as a refused session. Instances subscribe too.
pub async fn dead_addresses_and_refusals_are_reported<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (watcher, _) = a.instance("watcher").expect("watcher");
    let mut ev = watcher.link_events();

    let dead = fixed_addr(t);
    let ghost = ProcId::new(dead.clone(), Name::new("ghost").expect("name"));
    poke(&a, "to-ghost", &ghost).await;
    match next(&mut ev, 1, "unreachable within a second").await {
        LinkEvent::Unreachable { addr, peer, error } => {
            assert_eq!(
                (addr, peer),
                (dead.clone(), None),
                "never connected: no id known"
            );
            assert!(matches!(error, LinkError::Io { .. }), "{error}");
        }
        other => panic!("expected unreachable, got {other}"),
    }

    let wrong = ProcId::new(
        b.proc_id().addr().clone(),
        Name::new("nobody").expect("name"),
    );
    poke(&a, "to-nobody", &wrong).await;
    match next(&mut ev, 10, "refused").await {
        LinkEvent::SessionRefused { addr, reason, .. } => {
            assert_eq!(
                (addr, reason),
                (b.proc_id().addr().clone(), RefuseReason::WrongProc)
            );
        }
        other => panic!("expected a refusal, got {other}"),
    }
    // Core keeps retrying the dead address with backoff: reported once per run of failures.
    sleep(Duration::from_millis(300)).await;
    while let Some(e) = ev.try_recv() {
        assert!(
            !matches!(e, LinkEvent::Unreachable { .. }),
            "reported again: {e}"
        );
    }
    drop(watcher);
    shutdown_clean(&a).await;
    shutdown_clean(&b).await;
}

/// The next event, whatever it is about.
async fn next_any(ev: &mut LinkEvents, what: &str) -> LinkEvent {
    within(10, what, ev.recv())
        .await
        .expect("the proc is running")
}

/// `b` sends to `a` (so `b` dials `a`, and `a` never dials `b`), then shuts down; `c` does
/// the same, then is killed: `a`'s subscriber sees each peer's session connected here and
/// ended, with the peer's incarnation, and nothing about links of its own.
pub async fn peers_that_dial_in_are_reported<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    init_logging();
    let a = aa.start(t.any(), "a", options()).await.expect("a");
    let mut ev = a.link_events();
    let (receiver, _) = a.instance("receiver").expect("receiver");
    let (_, mut rx) = receiver.bind_port::<bytes::Bytes>(1000).expect("port");
    for (name, kill) in [("b", false), ("c", true)] {
        let p = ba.start(t.any(), name, options()).await.expect("peer");
        let peer = p.proc_id().clone();
        poke(&p, "sender", a.proc_id()).await;
        within(10, "the poke arrives", rx.recv_envelope())
            .await
            .expect("a message");
        let incarnation = match next_any(&mut ev, "connected here").await {
            LinkEvent::InboundConnected {
                peer: from,
                incarnation,
            } => {
                assert_eq!(from, peer);
                incarnation
            }
            other => panic!("expected {peer} connected here, got {other}"),
        };
        if kill {
            within(10, "kill", p.kill()).await;
        } else {
            shutdown_clean(&p).await;
        }
        assert_eq!(
            next_any(&mut ev, "ended here").await,
            LinkEvent::InboundLost { peer, incarnation }
        );
    }
    assert!(ev.try_recv().is_none(), "nothing else");
    drop((rx, receiver));
    shutdown_clean(&a).await;
}

/// Two-way links: `a` dials `b`, and `b`'s answer rides that connection instead of a dial
/// of its own. `b`'s subscriber sees its link to `a` connected, and lost when `a` is killed,
/// as it would for a connection it dialed; then `b`, with something to send, dials the
/// dead address itself and reports it unreachable.
pub async fn a_link_over_the_peers_connection_is_reported<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let a_id = a.proc_id().clone();
    let mut ev = b.link_events();
    let (receiver, _) = a.instance("receiver").expect("receiver");
    let (_, mut rx) = receiver.bind_port::<bytes::Bytes>(1000).expect("port");
    let (receiver_b, _) = b.instance("receiver").expect("receiver");
    let (_, mut rx_b) = receiver_b.bind_port::<bytes::Bytes>(1000).expect("port");
    poke(&a, "asker", b.proc_id()).await;
    within(10, "the question arrives", rx_b.recv_envelope())
        .await
        .expect("a message");
    poke(&b, "answerer", &a_id).await;
    within(10, "the answer arrives", rx.recv_envelope())
        .await
        .expect("a message");
    match next(&mut ev, 10, "connected").await {
        LinkEvent::Connected { peer, .. } => assert_eq!(peer, a_id),
        other => panic!("expected connected to {a_id}, got {other}"),
    }
    drop((rx, receiver));
    within(10, "kill a", a.kill()).await;
    drop(a);
    expect_lost(&mut ev, &a_id).await;
    poke(&b, "again", &a_id).await;
    match next(&mut ev, 10, "unreachable").await {
        LinkEvent::Unreachable { peer, .. } => assert_eq!(peer, Some(a_id)),
        other => panic!("expected unreachable, got {other}"),
    }
    drop((rx_b, receiver_b));
    shutdown_clean(&b).await;
}
