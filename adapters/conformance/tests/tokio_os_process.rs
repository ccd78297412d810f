//! Two OS processes: this test binary re-runs itself as the peer (see `peer_process_entry`),
//! which stands up its own proc and echo actor and reports back over procwire.

use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use procwire_conformance::{fixed_addr, init_logging, options, within, Echo, EchoMsg, Pong};
use procwire_tokio::{
    ActorStatus, ChannelAddr, ChannelTransport, DownReason, PortId, PortRef, Proc, ProcId,
    Undeliverable,
};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

/// Set in the peer process: `<addr> <lazy|eager> <port id to report to>`.
const PEER_ENV: &str = "PROCWIRE_TOKIO_TEST_PEER";

#[derive(Serialize, Deserialize, Debug)]
struct Ready {
    proc: ProcId,
    echo: PortRef<EchoMsg>,
    os_pid: u32,
}

/// The peer process's entry point. Does nothing unless started by one of the tests below.
#[test]
fn peer_process_entry() {
    let Ok(spec) = std::env::var(PEER_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ' ');
    let (Some(addr), Some(acks), Some(report_to)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("bad {PEER_ENV}: {spec:?}");
    };
    let addr = ChannelAddr::from_str(addr).expect("address");
    let report_to = PortRef::<Ready>::attest(PortId::from_str(report_to).expect("port id"));
    let mut opts = options();
    if acks == "lazy" {
        opts.core.ack_every_msgs = u64::MAX;
        opts.core.ack_every_bytes = usize::MAX;
        opts.core.ack_delay = Duration::from_secs(3600).into();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        init_logging();
        let proc = Proc::direct_with(addr, "peer".to_string(), opts)
            .await
            .expect("peer proc");
        let (echo, handle) = proc.spawn("echo", Echo).expect("echo");
        let (boot, _) = proc.instance("boot").expect("boot");
        let ready = Ready {
            proc: proc.proc_id().clone(),
            echo: echo.port(),
            os_pid: std::process::id(),
        };
        report_to.send(&boot, ready).await.expect("report");
        assert_eq!(
            within(120, "echo stops", handle.wait()).await,
            ActorStatus::Stopped
        );
        assert!(within(30, "peer shutdown", proc.shutdown()).await.drained);
    });
}

fn start_peer(addr: &ChannelAddr, acks: &str, report_to: &PortRef<Ready>) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args([
            "peer_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PEER_ENV, format!("{addr} {acks} {report_to}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the peer process")
}

async fn two_os_processes(t: ChannelTransport) {
    init_logging();
    let root = Proc::direct_with(t.any(), "root".to_string(), options())
        .await
        .expect("root");
    let (client, _) = root.instance("client").expect("client");
    let (ready_port, mut ready_rx) = client.open_port::<Ready>();
    let mut child = start_peer(&t.any(), "eager", &ready_port.port_ref());
    let ready = within(30, "peer ready", ready_rx.recv())
        .await
        .expect("ready");
    assert_ne!(ready.os_pid, std::process::id(), "a second OS process");
    assert_eq!(ready.proc.addr().transport(), t);
    assert_eq!(ready.echo.actor_id().proc(), &ready.proc);

    let (pong_port, mut pongs) = client.open_port::<Pong>();
    let sizes = [0usize, 1, 100, 4096, 65_536, 1 << 20];
    within(60, "round trips", async {
        for seq in 0..300u64 {
            let len = sizes[seq as usize % sizes.len()];
            let msg = EchoMsg::Ping {
                seq,
                payload: vec![seq as u8; len],
                reply_to: pong_port.port_ref(),
            };
            ready.echo.send(&client, msg).await.expect("ping");
            let pong = pongs.recv().await.expect("pong");
            assert_eq!((pong.seq, pong.len), (seq, len));
            assert_eq!(&pong.from, ready.echo.actor_id());
        }
    })
    .await;
    within(60, "pipelined", async {
        for seq in 0..3000u64 {
            let msg = EchoMsg::Ping {
                seq,
                payload: vec![1; 32],
                reply_to: pong_port.port_ref(),
            };
            ready.echo.send(&client, msg).await.expect("ping");
        }
        for seq in 0..3000u64 {
            assert_eq!(pongs.recv().await.expect("pong").seq, seq);
        }
    })
    .await;

    ready.echo.send(&client, EchoMsg::Stop).await.expect("stop");
    let status = within(30, "peer exits", child.wait()).await.expect("wait");
    assert!(status.success(), "peer process: {status}");
    drop((pongs, ready_rx, client));
    assert!(within(20, "root shutdown", root.shutdown()).await.drained);
}

async fn killed_peer_process_restarts_on_same_address(t: ChannelTransport) {
    init_logging();
    let root = Proc::direct_with(t.any(), "root".to_string(), options())
        .await
        .expect("root");
    let (client, _) = root.instance("client").expect("client");
    let (ready_port, mut ready_rx) = client.open_port::<Ready>();
    let (pong_port, mut pongs) = client.open_port::<Pong>();
    let addr = fixed_addr(t);

    // The first peer takes the pings but never acknowledges them.
    let mut first = start_peer(&addr, "lazy", &ready_port.port_ref());
    let ready = within(30, "first peer ready", ready_rx.recv())
        .await
        .expect("ready");
    assert_eq!(ready.proc.addr(), &addr);
    for seq in 0..10u64 {
        let msg = EchoMsg::Ping {
            seq,
            payload: vec![],
            reply_to: pong_port.port_ref(),
        };
        ready.echo.send(&client, msg).await.expect("ping");
        assert_eq!(
            within(10, "pong", pongs.recv()).await.expect("pong").seq,
            seq
        );
    }

    // Watch the echo actor in that process; the watch is an ordinary message, so a ping
    // answered after it shows the peer's monitor service has it.
    let mut monitor = client.monitor(ready.echo.actor_id());
    let msg = EchoMsg::Ping {
        seq: 10,
        payload: vec![],
        reply_to: pong_port.port_ref(),
    };
    ready.echo.send(&client, msg).await.expect("ping");
    assert_eq!(
        within(10, "pong", pongs.recv()).await.expect("pong").seq,
        10
    );
    assert_eq!(monitor.try_down(), None, "alive while its process runs");

    // Crash it, and start another on the same address.
    first.start_kill().expect("kill");
    let status = within(10, "killed peer exits", first.wait())
        .await
        .expect("wait");
    assert!(!status.success());
    let mut second = start_peer(&addr, "eager", &ready_port.port_ref());
    let ready2 = within(30, "second peer ready", ready_rx.recv())
        .await
        .expect("ready");
    assert_eq!(ready2.proc, ready.proc, "same address and name");
    assert_ne!(ready2.os_pid, ready.os_pid);

    // The monitor hears once that the actor went with its process.
    let down = within(30, "monitor", monitor.down()).await;
    assert!(
        matches!(
            down,
            Some(DownReason::ProcRestarted | DownReason::ProcUnreachable)
        ),
        "{down:?}"
    );

    // The root learns of the restart: its unacknowledged pings come back, with the reason.
    let mut back = Vec::new();
    within(30, "returns", async {
        while back.len() < 11 {
            let r = client.next_undeliverable().await.expect("return");
            assert_eq!(r.reason, Undeliverable::PeerRestarted);
            assert_eq!(r.dest(), ready.echo.port_id());
            match r.decode::<EchoMsg>().expect("decodes") {
                EchoMsg::Ping { seq, .. } => back.push(seq),
                other => panic!("unexpected return {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(back, (0..11).collect::<Vec<_>>());
    assert_eq!(monitor.try_down(), None, "one notification only");

    // The same reference reaches the new incarnation.
    let msg = EchoMsg::Ping {
        seq: 42,
        payload: vec![],
        reply_to: pong_port.port_ref(),
    };
    ready.echo.send(&client, msg).await.expect("ping new peer");
    assert_eq!(
        within(10, "pong from new peer", pongs.recv())
            .await
            .expect("pong")
            .seq,
        42
    );
    ready.echo.send(&client, EchoMsg::Stop).await.expect("stop");
    let status = within(30, "second peer exits", second.wait())
        .await
        .expect("wait");
    assert!(status.success(), "second peer: {status}");
    drop((pongs, ready_rx, client));
    assert!(within(20, "root shutdown", root.shutdown()).await.drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_os_processes_over_unix() {
    two_os_processes(ChannelTransport::Unix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_os_processes_over_tcp() {
    two_os_processes(ChannelTransport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peer_process_restarts_over_unix() {
    killed_peer_process_restarts_on_same_address(ChannelTransport::Unix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peer_process_restarts_over_tcp() {
    killed_peer_process_restarts_on_same_address(ChannelTransport::Tcp).await;
}
