//! Deployable addresses: a proc that binds one address and advertises another, and TCP
//! addresses by host name, resolved when dialing.

use procwire_smol::{AdvertiseError, ChannelAddr, PortRef, ProcError, ProcId, ACTOR_PORT};

use crate::scenarios::shutdown_both;
use crate::{init_logging, options, within, Adapter, Echo, EchoMsg, Pong, TestProc};

mod congestion;
pub use congestion::same_host_tcp_gets_the_congestion_control_asked_for;

fn addr(s: &str) -> ChannelAddr {
    s.parse().expect("valid address")
}

/// Starts `b` on `bind` advertising `advertise`, and checks that `a` (on 127.0.0.1) reaches
/// an echo actor on it through the id alone, in a few round trips. Returns `b`'s id.
async fn echo_through_id<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
    bind: &str,
    advertise: Option<&str>,
) -> ProcId {
    let a = aa
        .start(addr("tcp:127.0.0.1:0"), "a", options())
        .await
        .expect("a");
    let mut o = options();
    o.advertise = advertise.map(addr);
    let b = ba.start(addr(bind), "b", o).await.expect("b");
    echo_rounds(&a, &b).await;
    let id = b.proc_id().clone();
    assert_eq!(b.addr().tcp_port(), id.addr().tcp_port(), "same port");
    shutdown_both(&a, &b).await;
    id
}

/// A few round trips from `a` to an echo actor spawned on `b`, through `b`'s id.
async fn echo_rounds<P: TestProc, Q: TestProc>(a: &P, b: &Q) {
    let (_, echo) = b.spawn("echo", Echo).expect("echo");
    let echo_ref = PortRef::<EchoMsg>::attest(echo.actor_id().port(ACTOR_PORT));
    let (client, _) = a.instance("client").expect("client");
    let (pong, mut pongs) = client.open_port::<Pong>();
    within(10, "round trips through the advertised address", async {
        for seq in 0..5 {
            let ping = EchoMsg::Ping {
                seq,
                payload: vec![1; 100],
                reply_to: pong.port_ref(),
            };
            echo_ref.send(&client, ping).await.expect("ping");
            assert_eq!(pongs.recv().await.expect("pong").seq, seq);
        }
    })
    .await;
}

/// `b` binds every interface on a free port (`tcp:0.0.0.0:0`) and advertises
/// `tcp:127.0.0.1:0`: its id carries 127.0.0.1 with the bound port filled in, and `a`
/// reaches it through that id. The same over IPv6 (`tcp:[::]:0` advertising `[::1]`).
pub async fn bind_any_advertise_loopback<A: Adapter, B: Adapter>(aa: &A, ba: &B) {
    init_logging();
    let id = echo_through_id(aa, ba, "tcp:0.0.0.0:0", Some("tcp:127.0.0.1:0")).await;
    let ChannelAddr::Tcp(sa) = id.addr() else {
        panic!("an IP address: {id}");
    };
    assert_eq!(sa.ip().to_string(), "127.0.0.1");
    assert_ne!(sa.port(), 0, "the bound port is filled in");

    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: the IPv6 half of this scenario did not run");
        return;
    }
    let id = echo_through_id(aa, ba, "tcp:[::]:0", Some("tcp:[::1]:0")).await;
    assert!(id.to_string().starts_with("tcp:[::1]:"), "{id}");
}

/// A proc whose id names its host (`tcp:localhost:<port>`) is reached by resolving the
/// name when dialing: once bound to the name itself, once bound to every interface and
/// advertising the name.
pub async fn host_names_are_resolved_when_dialing<A: Adapter, B: Adapter>(aa: &A, ba: &B) {
    init_logging();
    let id = echo_through_id(aa, ba, "tcp:localhost:0", None).await;
    let ChannelAddr::TcpHost { host, port } = id.addr() else {
        panic!("a host-name address: {id}");
    };
    assert_eq!((host.as_str(), *port != 0), ("localhost", true));
    let id = echo_through_id(aa, ba, "tcp:0.0.0.0:0", Some("tcp:LocalHost:0")).await;
    assert!(id.to_string().starts_with("tcp:localhost:"), "{id}");
    assert_ne!(id.addr().tcp_port(), Some(0));
}

/// Advertised addresses that could not be dialed are refused when the proc starts.
pub async fn unusable_advertised_addresses_are_refused<A: Adapter>(aa: &A) {
    init_logging();
    let cases = [
        ("tcp:127.0.0.1:0", "unix:@", AdvertiseError::NotConcrete),
        (
            "tcp:0.0.0.0:0",
            "tcp:0.0.0.0:0",
            AdvertiseError::NotConcrete,
        ),
        (
            "tcp:127.0.0.1:0",
            "tcp:[::]:7000",
            AdvertiseError::NotConcrete,
        ),
        ("unix:@", "tcp:10.0.0.1:0", AdvertiseError::NoBoundPort),
        ("local:0", "local:0", AdvertiseError::NotConcrete),
    ];
    for (bind, advertise, want) in cases {
        let mut o = options();
        o.advertise = Some(addr(advertise));
        match aa.start(addr(bind), "p", o).await {
            Err(ProcError::Advertise { addr: a, error }) => {
                assert_eq!((a.to_string(), error), (advertise.to_string(), want));
            }
            Err(other) => panic!("bind {bind} advertise {advertise}: {other}"),
            Ok(p) => panic!("bind {bind} advertise {advertise}: started {}", p.proc_id()),
        }
    }
    // A fixed advertised port is kept as given (a port forward may use another one).
    let mut o = options();
    o.advertise = Some(addr("tcp:gateway.example:7000"));
    let p = aa.start(addr("tcp:127.0.0.1:0"), "p", o).await.expect("p");
    assert_eq!(p.proc_id().to_string(), "tcp:gateway.example:7000,p");
    assert_ne!(p.addr().tcp_port(), Some(7000));
    crate::scenarios::shutdown_clean(&p).await;
}
