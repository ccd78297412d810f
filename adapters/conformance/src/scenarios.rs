//! The scenarios. Each takes the adapter of proc `a` and of proc `b` (the same one, or two
//! different ones for interop) and, where it matters, the transport.

use std::future::{poll_fn, Future};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use procwire_smol::{
    encode, ActorStatus, ChannelAddr, ChannelTransport, DecodeError, DialErrorKind, Name, PortRef,
    ProcError, ProcId, RecvError, RegistryError, SendError, TryRecvError, TypeFingerprint,
    Undeliverable, UnixAddr, ACTOR_PORT,
};

use crate::{
    check_payload, fixed_addr, init_logging, numbered_payload, options, sleep, still_pending_after,
    within, Adapter, Echo, EchoMsg, Pong, TestProc,
};

fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

/// Procs `a` (on adapter `aa`) and `b` (on `ba`), both serving on `t`.
pub async fn pair<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) -> (A::Proc, B::Proc) {
    init_logging();
    let a = aa
        .start(t.any(), "a", options())
        .await
        .expect("proc a starts");
    let b = ba
        .start(t.any(), "b", options())
        .await
        .expect("proc b starts");
    assert_eq!(a.proc_id().addr().transport(), t);
    assert!(
        !a.addr().is_any(),
        "bound address is concrete: {}",
        a.addr()
    );
    assert_ne!(a.addr(), b.addr());
    (a, b)
}

/// Shuts `p` down and checks it drained and aborted nothing.
pub async fn shutdown_clean<P: TestProc>(p: &P) {
    let report = within(20, "shutdown", p.shutdown()).await;
    assert!(report.drained, "{} did not drain: {report:?}", p.proc_id());
    assert_eq!(
        report.aborted_tasks,
        0,
        "{}: tasks had to be aborted",
        p.proc_id()
    );
}

/// Shuts `a`, then `b`, down; see [`shutdown_clean`].
pub async fn shutdown_both<A: TestProc, B: TestProc>(a: &A, b: &B) {
    shutdown_clean(a).await;
    shutdown_clean(b).await;
}

/// Request/reply with an actor on `b`, pipelined requests, and once-ports: the reply is
/// taken once, a second message to the spent once-port comes back `NoSuchPort`.
pub async fn echo_round_trips_and_once_ports<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (echo, echo_handle) = b.spawn("echo", Echo).expect("spawn echo");
    assert_eq!(echo.actor_id(), &b.proc_id().actor(name("echo"), 0));
    // The same reference, built from the id alone as a remote proc would.
    let by_id = PortRef::<EchoMsg>::attest(b.proc_id().actor(name("echo"), 0).port(ACTOR_PORT));
    assert_eq!(by_id, echo.port());

    let (client, _client_handle) = a.instance("client").expect("instance");
    assert_eq!(client.actor_id(), &a.proc_id().actor(name("client"), 0));
    let (pong_port, mut pongs) = client.open_port::<Pong>();
    within(30, "round trips", async {
        for seq in 0..200u64 {
            let msg = EchoMsg::Ping {
                seq,
                payload: vec![7; (seq as usize) * 13],
                reply_to: pong_port.port_ref(),
            };
            by_id.send(&client, msg).await.expect("send ping");
            let pong = pongs.recv().await.expect("pong");
            assert_eq!(
                pong,
                Pong {
                    seq,
                    len: seq as usize * 13,
                    from: echo.actor_id().clone()
                }
            );
        }
    })
    .await;

    // Pipelined: send many, then collect; order is kept.
    within(30, "pipelined", async {
        for seq in 0..2000u64 {
            let msg = EchoMsg::Ping {
                seq,
                payload: Vec::new(),
                reply_to: pong_port.port_ref(),
            };
            echo.send(&client, msg).await.expect("send");
        }
        for seq in 0..2000u64 {
            assert_eq!(pongs.recv().await.expect("pong").seq, seq);
        }
    })
    .await;

    // A once-port takes one message.
    let (once, once_rx) = client.open_once_port::<u64>();
    let once_ref = once.port_ref();
    let once_id = once_ref.port_id().clone();
    echo.send(
        &client,
        EchoMsg::Once {
            value: 77,
            reply_to: once_ref,
        },
    )
    .await
    .expect("send once");
    assert_eq!(within(10, "once reply", once_rx.recv()).await, Ok(77));
    // A second message to it, from the other proc, comes back as NoSuchPort.
    let (poker, _) = b.instance("poker").expect("poker");
    poker
        .send_bytes(&once_id, Bytes::from_static(b"late"))
        .await
        .expect("send to spent once-port");
    let back = within(
        10,
        "return from spent once-port",
        poker.next_undeliverable(),
    )
    .await
    .expect("a return");
    assert_eq!(back.reason, Undeliverable::NoSuchPort);
    assert_eq!(back.dest(), &once_id);
    assert_eq!(&back.payload()[..], b"late");

    echo.send(&client, EchoMsg::Stop).await.expect("stop");
    assert_eq!(
        within(10, "echo stops", echo_handle.wait()).await,
        ActorStatus::Stopped
    );
    drop((pongs, poker, client));
    shutdown_both(&a, &b).await;
}

/// Thousands of messages from `a` to `b`, 0 B to 4 MiB, arrive exactly once and in order.
pub async fn ordered_delivery_of_all_sizes<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<()>();
    let dest = port.port_id().clone();

    // Mostly small messages, with zero-length and multi-MiB ones mixed in.
    let sizes: Vec<usize> = (0..3000usize)
        .map(|i| match i % 500 {
            0 => 0,
            1 => 4 * 1024 * 1024 + 3,
            2 => 1024 * 1024,
            3 => 65_536,
            _ => (i * 37) % 700,
        })
        .collect();
    let send = async {
        for (seq, len) in sizes.iter().enumerate() {
            let payload = if *len == 0 {
                Bytes::new()
            } else {
                numbered_payload(seq as u64, *len)
            };
            sender.send_bytes(&dest, payload).await.expect("send");
        }
    };
    let recv = async {
        for (seq, len) in sizes.iter().enumerate() {
            let env = rx.recv_envelope().await.expect("message");
            assert_eq!(&env.sender, sender.actor_id());
            if *len == 0 {
                assert!(env.payload.is_empty(), "message {seq} should be empty");
            } else {
                assert_eq!(check_payload(&env.payload, *len), seq as u64, "order");
            }
        }
    };
    within(
        120,
        "ordered delivery",
        futures_lite::future::zip(send, recv),
    )
    .await;
    assert!(rx.try_recv_envelope().is_err(), "nothing extra arrives");
    drop((rx, sender, receiver));
    shutdown_both(&a, &b).await;
}

/// Messages to a missing actor, a missing port, and a port whose receiver was dropped come
/// back to the sender with the reason and the payload.
pub async fn missing_destinations_come_back<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (live, _live_rx) = receiver.open_port::<u32>();
    let (gone, gone_rx) = receiver.open_port::<u32>();
    drop(gone_rx);

    let no_actor = b.proc_id().actor(name("nobody"), 0).port(1024);
    let no_port = receiver.actor_id().port(live.port_id().index() + 100);
    let cases = [
        (no_actor, Undeliverable::NoSuchActor),
        (no_port, Undeliverable::NoSuchPort),
        (gone.port_id().clone(), Undeliverable::NoSuchPort),
    ];
    for (i, (dest, reason)) in cases.iter().enumerate() {
        let payload = Bytes::from(vec![i as u8; 10]);
        sender
            .send_bytes(dest, payload.clone())
            .await
            .expect("send");
        let back = within(10, "undeliverable return", sender.next_undeliverable())
            .await
            .expect("return");
        assert_eq!(back.reason, *reason, "case {i}");
        assert_eq!(back.dest(), dest);
        assert_eq!(back.payload(), &payload);
        assert_eq!(&back.envelope.sender, sender.actor_id());
    }
    drop((sender, receiver, _live_rx));
    shutdown_both(&a, &b).await;
}

/// The host batches sends in a row: from the second on, a send leaves its bytes,
/// deliveries and returns to one later turn. Nothing waits on that turn for long: a
/// receiver in the sending proc sees the messages, and the sender its return, as soon as
/// they look (nothing awaited in between); the messages for the other proc go out though
/// the sending task only waits on that proc afterwards (proc `a`'s timer task writes
/// them). Two senders and two destinations alternate, so each message must carry its
/// own sender and reach its own port.
pub async fn sends_in_a_row_are_batched_without_delay<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    const N: u32 = 40;
    let (a, b) = pair(aa, ba, t).await;
    let (s1, _) = a.instance("s1").expect("s1");
    let (s2, _) = a.instance("s2").expect("s2");
    let (local, _) = a.instance("local").expect("local");
    let (remote, _) = b.instance("remote").expect("remote");
    let (lport, mut lrx) = local.open_port::<(u8, u32)>();
    let (rport, mut rrx) = remote.open_port::<(u8, u32)>();
    let (lref, rref) = (lport.port_ref(), rport.port_ref());
    let nobody = a.proc_id().actor(name("nobody"), 0).port(1024);
    let senders = [&s1, &s2];
    for i in 0..N {
        let who = (i % 2) as u8;
        rref.try_send(senders[who as usize], (who, i))
            .expect("remote send");
        lref.try_send(senders[who as usize], (who, i))
            .expect("local send");
    }
    s1.try_send_bytes(&nobody, Bytes::from_static(b"lost"))
        .expect("accepted, to come back");
    for i in 0..N {
        let env = lrx.try_recv_envelope().expect("queued at once");
        let (who, n) = lrx.decode(&env).expect("decodes");
        assert_eq!((who, n), ((i % 2) as u8, i), "local message {i}");
        assert_eq!(&env.sender, senders[who as usize].actor_id(), "local {i}");
    }
    let back = s1.try_next_undeliverable().expect("returned at once");
    assert_eq!(back.reason, Undeliverable::NoSuchActor);
    assert_eq!(back.dest(), &nobody);
    // Looking at the local port ran the batch's turn, bytes for b included. A second
    // batch is for b alone, and nothing of proc `a` is looked at until it has arrived.
    for i in N..2 * N {
        let who = (i % 2) as u8;
        rref.try_send(senders[who as usize], (who, i))
            .expect("remote send");
    }
    within(10, "both batches reach b", async {
        for i in 0..2 * N {
            let env = rrx.recv_envelope().await.expect("delivered");
            let (who, n) = rrx.decode(&env).expect("decodes");
            assert_eq!((who, n), ((i % 2) as u8, i), "remote message {i}");
            assert_eq!(&env.sender, senders[who as usize].actor_id(), "remote {i}");
        }
    })
    .await;
    drop((s1, s2, local, remote, lrx, rrx));
    shutdown_both(&a, &b).await;
}

/// A receiver's typed receives decode in place and its raw receives hand envelopes out
/// whole; mixed on one port over several consumption reports (128 messages each), with an
/// undecodable message among them, every message comes out once and in order, each with
/// its sender, and the undecodable one goes back to its sender.
pub async fn receives_of_every_kind_interleave_in_order<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    const N: u32 = 600;
    const BAD: u32 = 301;
    let (a, b) = pair(aa, ba, t).await;
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<u32>();
    let to = port.port_ref();
    for i in 0..N {
        if i == BAD {
            // An overlong varint: not a `u32`.
            let bad = Bytes::from_static(&[0xff; 6]);
            sender
                .send_bytes(port.port_id(), bad)
                .await
                .expect("send raw");
        } else {
            to.send(&sender, i).await.expect("send");
        }
    }
    within(20, "every message, in order", async {
        for i in 0..N {
            if i == BAD {
                let got = rx.recv().await;
                assert!(matches!(got, Err(RecvError::Decode(_))), "{got:?}");
                continue;
            }
            match i % 4 {
                0 => assert_eq!(rx.recv().await, Ok(i)),
                1 => {
                    let env = rx.recv_envelope().await.expect("an envelope");
                    assert_eq!(rx.decode(&env), Ok(i));
                    assert_eq!(&env.sender, sender.actor_id());
                }
                2 => {
                    let (from, n) = rx.recv_from().await.expect("a message");
                    assert_eq!((&from, n), (sender.actor_id(), i));
                }
                _ => loop {
                    match rx.try_recv() {
                        Ok(n) => break assert_eq!(n, i),
                        Err(TryRecvError::Empty) => sleep(Duration::from_millis(1)).await,
                        Err(e) => panic!("message {i}: {e}"),
                    }
                },
            }
        }
    })
    .await;
    let back = within(
        10,
        "the undecodable one comes back",
        sender.next_undeliverable(),
    )
    .await
    .expect("a return");
    assert_eq!(back.reason, Undeliverable::Undecodable);
    assert_eq!(back.payload(), &Bytes::from_static(&[0xff; 6]));
    assert!(rx.try_recv().is_err(), "nothing more");
    drop((sender, receiver, rx));
    shutdown_both(&a, &b).await;
}

/// A message over the frame limit fails at the sender with `TooLarge`, whether the limit is
/// the sender's own or the receiver's (learned at the handshake).
pub async fn oversized_fails_at_sender<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    init_logging();
    let mut small = options();
    small.core.max_frame_len = 64 * 1024;
    let a = aa.start(t.any(), "a", small).await.expect("a");
    let b = ba.start(t.any(), "b", options()).await.expect("b");
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<Vec<u8>>();
    let big = vec![1u8; 100 * 1024];

    // Over the sender's own limit: refused at once, by both forms of send.
    match port.port_ref().try_send(&sender, &big) {
        Err(SendError::TooLarge { len, max }) => {
            assert!(len as usize > big.len());
            assert_eq!(max, 64 * 1024);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(
        port.port_ref().send(&sender, &big).await,
        Err(SendError::TooLarge { .. })
    ));
    // Under it: delivered.
    port.port_ref()
        .send(&sender, vec![2u8; 1000])
        .await
        .expect("small send");
    assert_eq!(
        within(10, "small message", rx.recv())
            .await
            .expect("msg")
            .len(),
        1000
    );

    // The receiver's smaller limit is learned at the handshake and enforced at the sender.
    let (back_port, mut back_rx) = sender.open_port::<Vec<u8>>();
    match back_port.port_ref().try_send(&receiver, &big) {
        Err(SendError::TooLarge { max, .. }) => assert_eq!(max, 64 * 1024),
        Ok(()) => {
            // The link to `a` was not yet established; the message must come back, not vanish.
            let back = within(10, "too-large return", receiver.next_undeliverable())
                .await
                .expect("return");
            assert!(
                matches!(back.reason, Undeliverable::TooLarge { .. }),
                "{}",
                back.reason
            );
        }
        Err(other) => panic!("expected TooLarge, got {other}"),
    }
    back_port
        .port_ref()
        .send(&receiver, vec![3u8; 10])
        .await
        .expect("small back");
    assert_eq!(
        within(10, "small back", back_rx.recv()).await.expect("msg"),
        vec![3u8; 10]
    );
    // Now the link is up: refused at the sender synchronously.
    assert!(matches!(
        back_port.port_ref().try_send(&receiver, &big),
        Err(SendError::TooLarge { max: 65536, .. })
    ));
    drop((rx, back_rx, sender, receiver));
    shutdown_both(&a, &b).await;
}

/// `b` crashes (`kill`) holding unacknowledged messages and restarts on the same address:
/// what its first incarnation had comes back `PeerRestarted`, in order; what was sent while it
/// was down arrives exactly once on one side or the other.
pub async fn peer_restart_returns_in_flight<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    init_logging();
    let addr = fixed_addr(t);
    let nowhere = fixed_addr(t);
    let a = aa.start(t.any(), "a", options()).await.expect("a");
    // b's first incarnation receives but never acknowledges, so everything `a` transmits to
    // it stays unproven.
    let mut lazy = options();
    lazy.core.ack_every_msgs = u64::MAX;
    lazy.core.ack_every_bytes = usize::MAX;
    lazy.core.ack_delay = Duration::from_secs(3600).into();
    let b = ba.start(addr.clone(), "b", lazy).await.expect("b");
    assert_eq!(b.addr(), &addr);
    let b_id = b.proc_id().clone();
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<u64>();
    let dest = port.port_ref();

    // Transmitted to (and even placed in a port of) the first incarnation, unacknowledged.
    for i in 0..=20u64 {
        dest.send(&sender, i).await.expect("send");
    }
    for i in 0..=20u64 {
        assert_eq!(within(10, "delivery to b", rx.recv()).await, Ok(i));
    }

    // b crashes. Until b is back, `a` dials nowhere (so its new ports exist before `a`
    // reconnects).
    a.set_address(b_id.clone(), nowhere);
    drop((rx, receiver));
    within(10, "kill b", b.kill()).await;
    drop(b);
    // Sent while b is down: each either was transmitted on the dying connection (and comes
    // back) or was not (and goes to the new incarnation). Never both, never neither.
    for i in 21..=25u64 {
        dest.send(&sender, i).await.expect("send while b is down");
    }

    // b comes back on the same address: a new incarnation with the same ids.
    let b2 = within(10, "restart b", async {
        loop {
            match ba.start(addr.clone(), "b", options()).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::debug!(error = %e, "rebind failed, retrying");
                    sleep(Duration::from_millis(20)).await
                }
            }
        }
    })
    .await;
    assert_eq!(b2.proc_id(), &b_id);
    let (receiver2, _) = b2.instance("receiver").expect("receiver again");
    let (port2, mut rx2) = receiver2.open_port::<u64>();
    assert_eq!(
        port2.port_id(),
        dest.port_id(),
        "same registry state, same port id"
    );
    a.set_address(b_id, addr);

    let mut returned = Vec::new();
    let mut delivered = Vec::new();
    let waited = futures_lite::future::or(
        async {
            sleep(Duration::from_secs(30)).await;
            false
        },
        async {
            while returned.len() + delivered.len() < 26 {
                let next = {
                    let mut back = std::pin::pin!(sender.next_undeliverable());
                    let mut msg = std::pin::pin!(rx2.recv());
                    poll_fn(|cx| {
                        if let Poll::Ready(r) = back.as_mut().poll(cx) {
                            return Poll::Ready(Err(r));
                        }
                        msg.as_mut().poll(cx).map(Ok)
                    })
                    .await
                };
                match next {
                    Err(r) => {
                        let r = r.expect("sender alive");
                        assert_eq!(r.reason, Undeliverable::PeerRestarted, "reason");
                        returned.push(r.decode::<u64>().expect("decodes"));
                    }
                    Ok(m) => delivered.push(m.expect("delivery to the new incarnation")),
                }
            }
            true
        },
    )
    .await;
    assert!(
        waited,
        "timed out; returned {returned:?}, delivered {delivered:?}, stats {:?}",
        a.stats()
    );
    // Everything transmitted to the old incarnation came back, in order.
    assert_eq!(&returned[..21], &(0..=20).collect::<Vec<_>>()[..]);
    // 21..=25: each exactly once, on one side or the other, in order on each side.
    let mut all: Vec<u64> = returned[21..]
        .iter()
        .chain(delivered.iter())
        .copied()
        .collect();
    assert!(
        returned[21..].windows(2).all(|w| w[0] < w[1]),
        "{returned:?}"
    );
    assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{delivered:?}");
    all.sort_unstable();
    assert_eq!(all, (21..=25).collect::<Vec<_>>());

    // New traffic reaches the new incarnation.
    dest.send(&sender, 99u64).await.expect("send to new b");
    assert_eq!(within(10, "after restart", rx2.recv()).await, Ok(99));
    drop((rx2, receiver2, sender));
    shutdown_clean(&a).await;
    shutdown_clean(&b2).await;
}

/// With a tiny window and no peer yet, `try_send` reports `WouldBlock` and `send` waits;
/// once the peer appears everything goes through in order.
pub async fn window_full_blocks_then_resumes<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    init_logging();
    let addr = fixed_addr(t);
    let mut tight = options();
    tight.core.window_msgs = 4;
    let a = aa.start(t.any(), "a", tight).await.expect("a");
    let (sender, _) = a.instance("sender").expect("sender");
    // b does not exist yet; its first port will be `sink[0][1024]`.
    let b_id = ProcId::new(addr.clone(), name("b"));
    let dest = PortRef::<u64>::attest(b_id.actor(name("sink"), 0).port(1024));
    let mut accepted = 0u64;
    let err = loop {
        match dest.try_send(&sender, accepted) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= 100, "the window never filled");
    };
    assert_eq!(err, SendError::WouldBlock);
    assert!(accepted >= 1);
    assert!(!sender.can_send(&b_id));
    assert!(
        still_pending_after(Duration::from_millis(200), dest.send(&sender, accepted)).await,
        "send must wait while the window is full"
    );

    // b appears; the window drains and the waiting send goes through.
    let b = ba.start(addr, "b", options()).await.expect("b");
    let (sink, _) = b.instance("sink").expect("sink");
    let (port, mut rx) = sink.open_port::<u64>();
    assert_eq!(port.port_id(), dest.port_id());
    within(20, "blocked send completes", dest.send(&sender, accepted))
        .await
        .expect("send");
    for i in 0..=accepted {
        assert_eq!(within(10, "delivery", rx.recv()).await, Ok(i));
    }
    drop((rx, sink, sender));
    shutdown_both(&a, &b).await;
}

/// Many sends through a small window: each waits for room, all arrive in order.
pub async fn pipelined_sends_wait_for_window<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    init_logging();
    let mut tight = options();
    tight.core.window_msgs = 16;
    tight.core.window_bytes = 4096;
    let a = aa.start(t.any(), "a", tight).await.expect("a");
    let b = ba.start(t.any(), "b", options()).await.expect("b");
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<u64>();
    let dest = port.port_ref();
    const N: u64 = 5000;
    let send = async {
        for i in 0..N {
            dest.send(&sender, i).await.expect("send");
        }
    };
    let recv = async {
        for i in 0..N {
            assert_eq!(rx.recv().await, Ok(i));
        }
    };
    within(
        60,
        "pipelined sends through a small window",
        futures_lite::future::zip(send, recv),
    )
    .await;
    drop((rx, sender, receiver));
    shutdown_both(&a, &b).await;
}

/// A consumer that stops taking: its port's queue and the link's held messages stay within
/// their limits, the sender's window fills so its sends wait, and once the consumer takes
/// again everything arrives, once and in order.
pub async fn a_slow_consumer_holds_its_sender_back<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    init_logging();
    let mut sender_opts = options();
    sender_opts.core.window_msgs = 32;
    let mut receiver_opts = options();
    receiver_opts.core.port_queue_msgs = 8;
    receiver_opts.core.link_held_msgs = 64;
    let a = aa.start(t.any(), "a", sender_opts).await.expect("a");
    let b = ba.start(t.any(), "b", receiver_opts).await.expect("b");
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (port, mut rx) = receiver.open_port::<u64>();
    let dest = port.port_ref();
    const N: u64 = 600;
    let sent = std::sync::atomic::AtomicU64::new(0);
    let send = async {
        for i in 0..N {
            dest.send(&sender, i).await.expect("send");
            sent.store(i + 1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let recv = async {
        // Take nothing for a while: the sender must be held back.
        sleep(Duration::from_millis(300)).await;
        let accepted = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            accepted <= 8 + 32,
            "{accepted} sends went through with 8 queued and a window of 32"
        );
        assert!(rx.len() <= 8, "{} queued at a port of 8", rx.len());
        assert!(b.held().link_held_msgs <= 64);
        for i in 0..N {
            assert_eq!(rx.recv().await, Ok(i));
        }
    };
    within(
        60,
        "a slow consumer's sender",
        futures_lite::future::zip(send, recv),
    )
    .await;
    assert_eq!(b.held().link_held_msgs, 0);
    drop((rx, sender, receiver));
    shutdown_both(&a, &b).await;
}

/// `Instance::sleep` and `Instance::timeout` run on the proc's runtime, whichever it is.
pub async fn instance_sleep_and_timeout<A: Adapter>(aa: &A, t: ChannelTransport) {
    init_logging();
    let a = aa.start(t.any(), "a", options()).await.expect("a");
    let (inst, _) = a.instance("timer").expect("instance");
    let (port, mut rx) = inst.open_port::<u64>();
    let start = std::time::Instant::now();
    inst.sleep(Duration::from_millis(30)).await;
    assert!(
        start.elapsed() >= Duration::from_millis(30),
        "slept the whole time"
    );
    let nothing = inst.timeout(Duration::from_millis(30), rx.recv()).await;
    assert!(nothing.is_none(), "nothing arrived: {nothing:?}");
    port.port_ref().send(&inst, 7).await.expect("send");
    let got = inst.timeout(Duration::from_secs(10), rx.recv()).await;
    assert_eq!(got, Some(Ok(7)));
    drop((rx, inst));
    let _ = a.shutdown().await;
}

/// A root name can be held once per proc; bad names and taken addresses are refused.
pub async fn duplicate_root_names_and_bad_names_are_refused<A: Adapter>(
    aa: &A,
    t: ChannelTransport,
) {
    init_logging();
    let a = aa.start(t.any(), "a", options()).await.expect("a");
    let (first, first_handle) = a.instance("x").expect("first x");
    match a.instance("x") {
        Err(ProcError::Registry(RegistryError::Duplicate(n))) => assert_eq!(n.as_str(), "x"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert!(matches!(
        a.spawn("x", Echo),
        Err(ProcError::Registry(RegistryError::Duplicate(_)))
    ));
    assert!(matches!(
        a.instance("not a name"),
        Err(ProcError::Registry(RegistryError::BadName(_)))
    ));
    // Released on drop, then free again.
    drop(first);
    assert_eq!(first_handle.status(), ActorStatus::Stopped);
    let (_again, _) = a.instance("x").expect("x is free again");

    assert!(matches!(
        aa.start(t.any(), "bad name", options()).await,
        Err(ProcError::BadName(_))
    ));
    // The address is taken.
    match aa.start(a.addr().clone(), "other", options()).await {
        Err(ProcError::Bind { addr, source }) => {
            assert_eq!(&addr, a.addr());
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!(
            "expected a bind error, got {:?}",
            other.map(|p| p.proc_id().clone())
        ),
    }
    shutdown_clean(&a).await;
}

/// A root name held again is `svc[0]` again, but a reference to a port of its earlier holder
/// comes back `NoSuchPort` instead of reaching the new holder; a well-known port of the name
/// does reach the new holder once it binds it.
pub async fn stale_refs_never_reach_a_new_holder<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (sender, _) = a.instance("sender").expect("sender");
    let (old, old_handle) = b.instance("svc").expect("first svc");
    let (old_port, _old_rx) = old.open_port::<u64>();
    let stale = old_port.port_ref();
    let (_, _old_mailbox) = old.bind_port::<u64>(5).expect("well-known port 5");
    old_handle.stop();
    assert_eq!(old_handle.status(), ActorStatus::Stopped);
    drop(old);

    let (new, _) = b.instance("svc").expect("svc is free again");
    assert_eq!(new.actor_id(), stale.actor_id(), "the same id, svc[0]");
    let (new_port, mut new_rx) = new.open_port::<u64>();
    assert_ne!(new_port.port_id(), stale.port_id());

    within(10, "stale send", stale.send(&sender, 1u64))
        .await
        .expect("the stale send is accepted");
    let back = within(10, "return of the stale send", sender.next_undeliverable())
        .await
        .expect("a return");
    assert_eq!(back.reason, Undeliverable::NoSuchPort);
    assert_eq!(back.dest(), stale.port_id());
    assert_eq!(back.decode::<u64>(), Ok(1));
    // Nothing reached the new holder: the first message it gets is one sent to it after.
    assert!(new_rx.try_recv().is_err(), "the new holder got nothing");
    new_port.port_ref().send(&sender, 2u64).await.expect("send");
    assert_eq!(within(10, "fresh ref", new_rx.recv()).await, Ok(2));

    // A well-known port belongs to the name: it reaches the new holder once bound.
    let (_, mut mailbox) = new.bind_port::<u64>(5).expect("bind 5 again");
    PortRef::<u64>::attest(new.actor_id().port(5))
        .send(&sender, 3u64)
        .await
        .expect("send to well-known port");
    assert_eq!(within(10, "well-known port", mailbox.recv()).await, Ok(3));
    drop((new_rx, mailbox, new, sender));
    shutdown_both(&a, &b).await;
}

/// Messages of the wrong type are refused by typed ports, never handed out as values: a
/// `String` sent to a `Vec<u8>` port and a `(u64, u64, u64)` sent to a `Vec<u64>` port (which
/// postcard encodes compatibly) by their type fingerprint, raw bytes by strict decoding, and
/// a message an actor would misread as a command is skipped. The ports stay open.
pub async fn wrong_types_are_refused<A: Adapter, B: Adapter>(aa: &A, ba: &B, t: ChannelTransport) {
    let (a, b) = pair(aa, ba, t).await;
    let (sender, _) = a.instance("sender").expect("sender");
    let (receiver, _) = b.instance("receiver").expect("receiver");
    let (bytes_port, mut bytes_rx) = receiver.open_port::<Vec<u8>>();
    let (u64s_port, mut u64s_rx) = receiver.open_port::<Vec<u64>>();

    let as_string = PortRef::<String>::attest(bytes_port.port_id().clone());
    as_string
        .send(&sender, "hello".to_string())
        .await
        .expect("send");
    let as_triple = PortRef::<(u64, u64, u64)>::attest(u64s_port.port_id().clone());
    as_triple.send(&sender, (1, 2, 3)).await.expect("send");
    // Refused where they arrive, before any receiver sees them, and returned with the
    // reason naming both types.
    for (what, expected, found) in [
        (
            "String to Vec<u8>",
            TypeFingerprint::of::<Vec<u8>>(),
            TypeFingerprint::of::<String>(),
        ),
        (
            "tuple to Vec<u64>",
            TypeFingerprint::of::<Vec<u64>>(),
            TypeFingerprint::of::<(u64, u64, u64)>(),
        ),
    ] {
        let back = within(10, what, sender.next_undeliverable())
            .await
            .expect("a return");
        assert_eq!(back.reason, Undeliverable::WrongType { expected }, "{what}");
        assert_eq!(back.envelope.fingerprint, Some(found), "{what}");
    }
    assert!(
        bytes_rx.try_recv().is_err(),
        "no value reached the receiver"
    );
    assert!(u64s_rx.try_recv().is_err(), "no value reached the receiver");

    // Untyped (raw) sends carry no fingerprint: strict decoding still refuses what is not
    // exactly one message of the port's type.
    let triple = encode(&(1u64, 2u64, 3u64)).expect("encode");
    sender
        .send_bytes(u64s_port.port_id(), triple)
        .await
        .expect("send raw");
    assert_eq!(
        within(10, "raw tuple", u64s_rx.recv()).await,
        Err(RecvError::Decode(DecodeError::TrailingBytes {
            used: 2,
            len: 3
        }))
    );
    // ... and it goes back to its sender, which learns why.
    let back = within(10, "undecodable return", sender.next_undeliverable())
        .await
        .expect("a return");
    assert_eq!(back.reason, Undeliverable::Undecodable);
    assert_eq!(back.envelope.dest, *u64s_port.port_id());
    // A reference to a `Vec<u8>` port cannot be read as a `PortRef<String>`.
    let (refs_port, mut refs_rx) = receiver.open_port::<PortRef<String>>();
    let foreign_ref = encode(&bytes_port.port_ref()).expect("encode");
    sender
        .send_bytes(refs_port.port_id(), foreign_ref)
        .await
        .expect("send raw");
    assert!(matches!(
        within(10, "foreign ref", refs_rx.recv()).await,
        Err(RecvError::Decode(DecodeError::Malformed(_)))
    ));

    // The ports stay open and take their own types.
    bytes_port
        .port_ref()
        .send(&sender, b"ok".to_vec())
        .await
        .expect("send");
    assert_eq!(
        within(10, "Vec<u8>", bytes_rx.recv()).await,
        Ok(b"ok".to_vec())
    );
    u64s_port
        .port_ref()
        .send(&sender, vec![4, 5])
        .await
        .expect("send");
    assert_eq!(within(10, "Vec<u64>", u64s_rx.recv()).await, Ok(vec![4, 5]));

    // `4u8` encodes like `EchoMsg::Stop`; the mailbox refuses it by type and the actor runs on.
    let (echo, echo_handle) = b.spawn("echo", Echo).expect("echo");
    PortRef::<u8>::attest(echo.port::<EchoMsg>().port_id().clone())
        .send(&sender, 4u8)
        .await
        .expect("send");
    let (pong_port, mut pongs) = sender.open_port::<Pong>();
    let ping = EchoMsg::Ping {
        seq: 9,
        payload: Vec::new(),
        reply_to: pong_port.port_ref(),
    };
    echo.send(&sender, ping).await.expect("ping");
    assert_eq!(within(10, "pong", pongs.recv()).await.map(|p| p.seq), Ok(9));
    assert_eq!(echo_handle.status(), ActorStatus::Running);
    drop((bytes_rx, u64s_rx, refs_rx, pongs, receiver, sender));
    shutdown_both(&a, &b).await;
}

/// After a shutdown every port and actor is closed, sends are refused, no connection is
/// left, and every task of both procs has ended.
pub async fn shutdown_leaks_no_tasks_and_closes_everything<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let baseline = (aa.live_tasks(), ba.live_tasks());
    let (a, b) = pair(aa, ba, t).await;
    let (echo, echo_handle) = b.spawn("echo", Echo).expect("echo");
    let (client, client_handle) = a.instance("client").expect("client");
    let (pong, mut pongs) = client.open_port::<Pong>();
    for seq in 0..50 {
        echo.send(
            &client,
            EchoMsg::Ping {
                seq,
                payload: vec![0; 100],
                reply_to: pong.port_ref(),
            },
        )
        .await
        .expect("ping");
    }
    for _ in 0..50 {
        within(10, "pong", pongs.recv()).await.expect("pong");
    }
    assert!(a.connection_count() >= 1);
    shutdown_clean(&a).await;
    shutdown_clean(&b).await;
    // Everything is closed and refused afterwards.
    assert_eq!(
        within(5, "port closed", pongs.recv()).await,
        Err(RecvError::Closed)
    );
    assert_eq!(
        within(5, "actor ended", echo_handle.wait()).await,
        ActorStatus::Stopped
    );
    assert_eq!(
        pong.port_ref().try_send(
            &client,
            Pong {
                seq: 0,
                len: 0,
                from: client.actor_id().clone()
            }
        ),
        Err(SendError::ShuttingDown)
    );
    assert!(matches!(a.instance("late"), Err(ProcError::ShuttingDown)));
    assert_eq!(a.connection_count(), 0);
    assert_eq!(b.connection_count(), 0);
    // A second shutdown is harmless.
    within(10, "second shutdown", a.shutdown()).await;
    drop((pongs, client));
    assert_eq!(client_handle.status(), ActorStatus::Stopped);
    within(10, "tasks end", async {
        while aa.live_tasks() > baseline.0 || ba.live_tasks() > baseline.1 {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The addresses are free again.
    if let ChannelAddr::Unix(_) | ChannelAddr::Local(_) = a.addr() {
        let again = aa
            .start(a.addr().clone(), "a", options())
            .await
            .expect("rebind a's address");
        shutdown_clean(&again).await;
    }
}

/// Child ids count up per root (children, grandchildren and child actors share one counter);
/// a child actor is addressable from `b`; pids never go back after the root is released and
/// reserved again.
pub async fn child_ids_count_up_per_root<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (parent, _) = a.instance("parent").expect("parent");
    let (c1, h1) = parent.child().expect("child 1");
    let (c2, _) = parent.child().expect("child 2");
    assert_eq!(c1.actor_id(), &a.proc_id().actor(name("parent"), 1));
    assert_eq!(c2.actor_id(), &a.proc_id().actor(name("parent"), 2));
    assert_eq!(h1.actor_id(), c1.actor_id());
    assert!(
        c1.actor_id().to_string().ends_with(",parent[1]"),
        "{}",
        c1.actor_id()
    );
    let (grandchild, _) = c1.child().expect("grandchild");
    assert_eq!(grandchild.actor_id().pid(), 3);

    // A child actor is addressable from another proc.
    let (echo, echo_handle) = parent.spawn_child(Echo).expect("spawn child");
    assert_eq!(echo.actor_id(), &a.proc_id().actor(name("parent"), 4));
    let (client, _) = b.instance("client").expect("client");
    let (pong, mut pongs) = client.open_port::<Pong>();
    echo.send(
        &client,
        EchoMsg::Ping {
            seq: 5,
            payload: vec![1, 2, 3],
            reply_to: pong.port_ref(),
        },
    )
    .await
    .expect("ping child");
    let p = within(10, "child replies", pongs.recv())
        .await
        .expect("pong");
    assert_eq!((p.seq, p.len, &p.from), (5, 3, echo.actor_id()));

    // Pids never go back, even after the root is released and reserved again.
    drop((c1, c2, grandchild, parent));
    echo_handle.stop();
    within(10, "child stops", echo_handle.wait()).await;
    let (again, _) = a.instance("parent").expect("root name free again");
    let (c5, _) = again.child().expect("child after re-reserve");
    assert_eq!(c5.actor_id().pid(), 5);
    drop((pongs, client, again, c5));
    shutdown_both(&a, &b).await;
}

/// An actor on `a` that fails, one that panics, and one that is stopped end with the right
/// status (messages to the stopped one come back to `b`); stopping an instance closes its
/// ports, and ports opened afterwards are closed at once.
pub async fn actor_lifecycle_and_failures<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    t: ChannelTransport,
) {
    let (a, b) = pair(aa, ba, t).await;
    let (client, _) = b.instance("client").expect("client");

    let (echo, h) = a.spawn("failing", Echo).expect("spawn");
    assert_eq!(h.status(), ActorStatus::Running);
    echo.send(&client, EchoMsg::Fail("bad input".into()))
        .await
        .expect("send");
    assert_eq!(
        within(10, "fails", h.wait()).await,
        ActorStatus::Failed("bad input".into())
    );

    let (echo, h) = a.spawn("panicking", Echo).expect("spawn");
    echo.send(&client, EchoMsg::Panic).await.expect("send");
    match within(10, "panics", h.wait()).await {
        ActorStatus::Failed(why) => assert!(why.contains("asked to panic"), "{why}"),
        other => panic!("expected Failed, got {other}"),
    }

    let (echo, h) = a.spawn("stopped", Echo).expect("spawn");
    h.stop();
    assert_eq!(within(10, "stops", h.wait()).await, ActorStatus::Stopped);
    // Its mailbox is gone: messages come back.
    echo.send(&client, EchoMsg::Stop).await.expect("send");
    let back = within(10, "return", client.next_undeliverable())
        .await
        .expect("return");
    assert!(
        matches!(
            back.reason,
            Undeliverable::NoSuchActor | Undeliverable::NoSuchPort
        ),
        "{}",
        back.reason
    );

    // Stopping an instance closes its ports.
    let (inst, ih) = a.instance("inst").expect("instance");
    let (_p, mut rx) = inst.open_port::<u8>();
    ih.stop();
    assert_eq!(ih.status(), ActorStatus::Stopped);
    assert_eq!(within(5, "closed", rx.recv()).await, Err(RecvError::Closed));
    let (_p2, mut rx2) = inst.open_port::<u8>();
    assert_eq!(
        within(5, "closed at once", rx2.recv()).await,
        Err(RecvError::Closed)
    );
    drop((rx, rx2, inst, client));
    shutdown_both(&a, &b).await;
}

/// Messages to a proc nobody serves are returned by `shutdown` (`ShuttingDown` or
/// `Unreachable`), every one once and in order.
pub async fn shutdown_returns_what_cannot_be_delivered<A: Adapter>(aa: &A, t: ChannelTransport) {
    init_logging();
    let mut quick = options();
    quick.core.shutdown_timeout = Duration::from_millis(300).into();
    let a = aa.start(t.any(), "a", quick).await.expect("a");
    // Nobody listens at b's address.
    let b_id = ProcId::new(fixed_addr(t), name("b"));
    let dest = b_id.actor(name("sink"), 0).port(1024);
    let (sender, _) = a.instance("sender").expect("sender");
    for i in 0..30u8 {
        sender
            .send_bytes(&dest, Bytes::from(vec![i; 3]))
            .await
            .expect("send");
    }
    let report = within(20, "shutdown", a.shutdown()).await;
    assert!(report.drained);
    let mut back = Vec::new();
    while let Some(r) = sender.try_next_undeliverable() {
        assert!(
            matches!(
                r.reason,
                Undeliverable::ShuttingDown | Undeliverable::Unreachable
            ),
            "{}",
            r.reason
        );
        back.push(r.payload()[0]);
    }
    assert_eq!(
        back,
        (0..30).collect::<Vec<_>>(),
        "every message comes back once, in order"
    );
}

/// Without any shutdown, dropping every handle on `a` (on `ta`) and `b` (on `tb`, at a fixed
/// address) stops both: the actor's handle ends, every task ends, `b`'s socket file is gone
/// and its address can be bound again.
pub async fn dropping_every_handle_stops_the_proc<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    ta: ChannelTransport,
    tb: ChannelTransport,
) {
    init_logging();
    let baseline = (aa.live_tasks(), ba.live_tasks());
    let addr = fixed_addr(tb);
    {
        let a = aa.start(ta.any(), "a", options()).await.expect("a");
        let b = ba.start(addr.clone(), "b", options()).await.expect("b");
        let (_echo_ref, echo) = b.spawn("echo", Echo).expect("echo");
        let (client, _) = a.instance("client").expect("client");
        let (pong, mut pongs) = client.open_port::<Pong>();
        let echo_ref = PortRef::<EchoMsg>::attest(echo.actor_id().port(ACTOR_PORT));
        echo_ref
            .send(
                &client,
                EchoMsg::Ping {
                    seq: 1,
                    payload: vec![],
                    reply_to: pong.port_ref(),
                },
            )
            .await
            .expect("ping");
        within(10, "pong", pongs.recv()).await.expect("pong");
        // No shutdown: the last handles just go away (the receiver and instance too).
        drop((a, b, pongs, client));
        // The actor's loop is aborted with the proc; its handle still ends.
        assert_eq!(
            within(10, "actor ends", echo.wait()).await,
            ActorStatus::Stopped
        );
    }
    within(10, "tasks end", async {
        while aa.live_tasks() > baseline.0 || ba.live_tasks() > baseline.1 {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The address is free again (and its socket file gone).
    if let ChannelAddr::Unix(UnixAddr::Path(p)) = &addr {
        assert!(
            !std::path::Path::new(p.as_str()).exists(),
            "socket file left behind"
        );
    }
    let again = ba.start(addr, "b", options()).await.expect("rebind");
    shutdown_clean(&again).await;
}

/// A peer nobody listens for is reported fast and clearly: messages to it come back
/// `Unreachable` once `unreachable_timeout` has passed, carrying the OS's dial error
/// (refused for TCP, no such socket for a Unix path). On the in-process transport there is
/// no OS error; the return still comes.
pub async fn dead_peer_returns_with_the_dial_error<A: Adapter>(aa: &A, t: ChannelTransport) {
    init_logging();
    let mut quick = options();
    quick.core.unreachable_timeout = Duration::from_millis(500).into();
    quick.core.backoff_max = Duration::from_millis(50).into();
    let a = aa.start(t.any(), "a", quick).await.expect("a");
    let dest = ProcId::new(fixed_addr(t), name("ghost"))
        .actor(name("sink"), 0)
        .port(1024);
    let (sender, _) = a.instance("sender").expect("sender");
    let started = std::time::Instant::now();
    sender
        .send_bytes(&dest, Bytes::from_static(b"anyone?"))
        .await
        .expect("accepted");
    let back = within(5, "return from a dead peer", sender.next_undeliverable())
        .await
        .expect("return");
    let took = started.elapsed();
    assert_eq!(back.reason, Undeliverable::Unreachable);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    match t {
        ChannelTransport::Tcp => {
            let e = back
                .dial_error
                .expect("the dial error travels with the return");
            assert_eq!(e.kind, DialErrorKind::Refused, "{e}");
            assert!(!e.message.is_empty());
        }
        ChannelTransport::Unix => {
            let e = back
                .dial_error
                .expect("the dial error travels with the return");
            assert!(
                matches!(e.kind, DialErrorKind::NotFound | DialErrorKind::Refused),
                "{e}"
            );
        }
        _ => {}
    }
    drop(sender);
    shutdown_clean(&a).await;
}
