//! Connections killed mid-stream, over TCP and Unix sockets, between tokio procs, between
//! smol procs, and from each adapter to the other: traffic from `a` to `b` goes (through
//! core's address book) via the fault-injecting [`proxy`](procwire_conformance::proxy), which
//! cuts connections after a random number of bytes. Every message must still arrive exactly
//! once and in order.

use std::time::Duration;

use bytes::Bytes;
use procwire_conformance::adapters::SmolThread;
use procwire_conformance::proxy::{FaultProxy, Faults};
use procwire_conformance::{
    check_payload, init_logging, numbered_payload, options, sleep, within, Adapter, TestProc,
    TokioAdapter,
};
use procwire_tokio::{ChannelTransport, LinkEvent, LinkEvents, ProcId};

/// `n` messages from `a` to `b` through a proxy that cuts up to `max_cuts` connections.
async fn survives_cuts<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
    seed: u64,
    n: u64,
    max_cuts: u64,
) {
    init_logging();
    let a = aa.start(t.any(), "a", options()).await.expect("a");
    let b = ba.start(t.any(), "b", options()).await.expect("b");
    let proxy = FaultProxy::start(
        b.addr().clone(),
        Faults {
            min_bytes: 1,
            max_bytes: 96 * 1024,
            max_cuts,
            seed,
        },
    )
    .await;
    a.set_address(b.proc_id().clone(), proxy.addr().clone());
    let mut events = a.link_events();

    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<()>();
    let dest = port.port_id().clone();
    let len_of = |i: u64| -> usize {
        match i % 1000 {
            0 => 200_000,
            1..=9 => 4_000,
            _ => 8 + (i as usize * 7) % 120,
        }
    };
    let send = async {
        for i in 0..n {
            sender
                .send_bytes(&dest, numbered_payload(i, len_of(i)))
                .await
                .expect("send");
        }
    };
    let recv = async {
        for i in 0..n {
            let env = rx.recv_envelope().await.expect("message");
            assert_eq!(
                check_payload(&env.payload, len_of(i)),
                i,
                "exactly once, in order"
            );
        }
    };
    within(
        240,
        "all messages through the faulty proxy",
        futures_lite::future::zip(send, recv),
    )
    .await;
    // Nothing extra (no duplicate) shows up after a quiet moment, and nothing came back.
    sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv_envelope().is_err(), "a duplicate arrived");
    assert!(
        sender.try_next_undeliverable().is_none(),
        "a message came back"
    );
    let cuts = proxy.cuts();
    assert!(cuts >= 5, "the proxy cut only {cuts} connections");
    let stats = a.stats();
    assert!(stats.retransmitted > 0 || cuts > 0, "{stats:?}");
    tracing::info!(cuts, connections = proxy.connections(), ?stats, "done");
    check_link_events(&mut events, b.proc_id(), cuts);

    // Replies flow back the other way through their own link.
    let (back_port, mut back_rx) = sender.open_port::<()>();
    receiver
        .send_bytes(back_port.port_id(), Bytes::from_static(b"done"))
        .await
        .expect("reply");
    assert_eq!(
        &within(10, "reply", back_rx.recv_envelope())
            .await
            .expect("reply")
            .payload[..],
        b"done"
    );
    drop((rx, back_rx, sender, receiver));
    assert!(within(20, "shutdown a", a.shutdown()).await.drained);
    assert!(within(20, "shutdown b", b.shutdown()).await.drained);
}

/// What `a` saw of its link to `b` while the proxy cut `cuts` connections: connected once,
/// then each loss followed by a reconnection to the same incarnation (a cut during a
/// handshake shows as a failed dial instead), never a restart.
fn check_link_events(events: &mut LinkEvents, b: &ProcId, cuts: u64) {
    let seen: Vec<LinkEvent> = std::iter::from_fn(|| events.try_recv()).collect();
    let Some(LinkEvent::Connected { peer, incarnation }) = seen.first() else {
        panic!("the first link event is the connection: {seen:?}");
    };
    assert_eq!(peer, b);
    let mut lost = 0;
    for ev in &seen[1..] {
        match ev {
            LinkEvent::Lost { peer, .. } => {
                assert_eq!(peer, b);
                lost += 1;
            }
            LinkEvent::Reconnected {
                peer,
                incarnation: i,
            } => assert_eq!((peer, i), (b, incarnation)),
            LinkEvent::Unreachable { peer, .. } => assert_eq!(peer.as_ref(), Some(b)),
            other => panic!("unexpected link event {other}"),
        }
    }
    assert!(lost >= 1 && lost <= cuts, "{lost} losses for {cuts} cuts");
    assert_eq!(events.missed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_tcp_connections_cut_mid_stream() {
    let t = TokioAdapter::current();
    survives_cuts(&t, &t, ChannelTransport::Tcp, 0x5eed_0001, 20_000, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_unix_connections_cut_mid_stream() {
    let t = TokioAdapter::current();
    survives_cuts(&t, &t, ChannelTransport::Unix, 0x5eed_0002, 20_000, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smol_tcp_connections_cut_mid_stream() {
    let smol = SmolThread::start();
    let s = smol.adapter();
    survives_cuts(&s, &s, ChannelTransport::Tcp, 0x5eed_0101, 10_000, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smol_unix_connections_cut_mid_stream() {
    let smol = SmolThread::start();
    let s = smol.adapter();
    survives_cuts(&s, &s, ChannelTransport::Unix, 0x5eed_0102, 10_000, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_to_smol_tcp_connections_cut_mid_stream() {
    let smol = SmolThread::start();
    let (t, s) = (TokioAdapter::current(), smol.adapter());
    survives_cuts(&t, &s, ChannelTransport::Tcp, 0x5eed_0103, 10_000, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smol_to_tokio_unix_connections_cut_mid_stream() {
    let smol = SmolThread::start();
    let (t, s) = (TokioAdapter::current(), smol.adapter());
    survives_cuts(&s, &t, ChannelTransport::Unix, 0x5eed_0104, 10_000, 30).await;
}
