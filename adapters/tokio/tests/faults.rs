//! Connections killed mid-stream: traffic between two procs is routed (with the core's
//! address book) through a proxy that cuts connections after a random number of bytes.
//! Every message must still arrive exactly once and in order.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::proxy::{FaultProxy, Faults};
use common::*;
use procwire_tokio::{ChannelTransport, Proc};

async fn survives_cuts(t: ChannelTransport, seed: u64) {
    init_logging();
    let a = Proc::direct_with(t.any(), "a".to_string(), options())
        .await
        .expect("a");
    let b = Proc::direct_with(t.any(), "b".to_string(), options())
        .await
        .expect("b");
    let proxy = FaultProxy::start(
        b.addr().clone(),
        Faults {
            min_bytes: 1,
            max_bytes: 96 * 1024,
            max_cuts: 40,
            seed,
        },
    )
    .await;
    a.set_address(b.proc_id().clone(), proxy.addr().clone());

    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<()>();
    let dest = port.port_id().clone();
    const N: u64 = 20_000;
    let len_of = |i: u64| -> usize {
        match i % 1000 {
            0 => 200_000,
            1..=9 => 4_000,
            _ => 8 + (i as usize * 7) % 120,
        }
    };

    let send = async {
        for i in 0..N {
            sender
                .send_bytes(&dest, numbered_payload(i, len_of(i)))
                .await
                .expect("send");
        }
    };
    let recv = async {
        for i in 0..N {
            let env = rx.recv_envelope().await.expect("message");
            assert_eq!(
                check_payload(&env.payload, len_of(i)),
                i,
                "exactly once, in order"
            );
        }
    };
    within(240, "all messages through the faulty proxy", async {
        tokio::join!(send, recv)
    })
    .await;
    // Nothing extra (no duplicate) shows up after a quiet moment, and nothing came back.
    tokio::time::sleep(Duration::from_millis(100)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_cut_mid_stream() {
    survives_cuts(ChannelTransport::Tcp, 0x5eed_0001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_connections_cut_mid_stream() {
    survives_cuts(ChannelTransport::Unix, 0x5eed_0002).await;
}
