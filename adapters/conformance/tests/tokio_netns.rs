//! Two hosts: two Linux network namespaces joined by a veth pair, one proc in each, talking
//! TCP over the veth; the link is cut and restored, and then cut for good.
//!
//! The test itself (`two_hosts_link_cut_and_restored`) runs in the root namespace and only
//! directs: it creates the namespaces ([`NetnsPair`]), starts this test binary again inside
//! them as children (`ip netns exec <ns> <exe> --exact netns_peer_entry`, role in
//! [`ROLE_ENV`]), takes the link down and up, and reads what the children report: lines
//! `NETNS <keyword> <details>` on their stdout. It tells children what happened over their
//! stdin. Each child checks its own side and exits non-zero on failure.
//!
//! * B (namespace B) is an echo host: a proc on `tcp:10.231.77.2:7400` with the echo actor.
//! * Phase 1, driver A1 (namespace A): warm-up round trips, then a stream of numbered pings
//!   every 10 ms. Mid-stream B's veth end goes down for 3 s (longer than both procs' idle
//!   timeout, so both directions lose their connections and reconnect). Every pong must
//!   arrive exactly once and in order, and nothing may come back undeliverable.
//! * Phase 2, driver A2 (namespace A, a short `unreachable_timeout`): after a warm-up, A's
//!   veth end goes down and stays down; pings sent before and after the connection is
//!   noticed lost must all come back to A2, each once, as `Unconfirmed` (transmitted, not
//!   acknowledged) or `Unreachable` (never transmitted), within a bound.
//!
//! Without root, without `ip`, or where namespaces or veth pairs cannot be made, the test
//! prints `skipped: <reason>` and passes.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use procwire_conformance::netns::{NetnsPair, Side};
use procwire_conformance::{init_logging, options, within, Echo, EchoMsg, Pong};
use procwire_tokio::{
    ActorStatus, ChannelAddr, Instance, PortId, PortRef, Proc, ProcOptions, Undeliverable,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

/// Set in a child: `echo <addr>`, `recover <addr> <echo port>` or `give-up <addr> <echo port>`.
const ROLE_ENV: &str = "PROCWIRE_NETNS_ROLE";
const PORT_B: u16 = 7400;
const PORT_A1: u16 = 7401;
const PORT_A2: u16 = 7402;

/// Phase 1: round trips before the stream, pings in the stream, and the stream position at
/// which the driver tells the parent to cut the link.
const WARM: u64 = 50;
const STREAM: u64 = 700;
const CUT_AT: u64 = 100;
const STREAM_EVERY: Duration = Duration::from_millis(10);
const OUTAGE: Duration = Duration::from_secs(3);

/// Phase 2: pings sent right after the cut, and again after the connection is lost.
const BURST: u64 = 25;
const UNREACHABLE_AFTER: Duration = Duration::from_secs(2);

fn payload_len(seq: u64) -> usize {
    [0usize, 1, 100, 1000, 4096, 20_000][seq as usize % 6]
}

/// Short heartbeats and idle timeouts, so that a link that is down is noticed in about a
/// second and the reconnect is procwire's, not TCP's retransmission.
fn link_options(unreachable: Duration) -> ProcOptions {
    let mut o = options();
    o.core.heartbeat_interval = Duration::from_millis(250).into();
    o.core.idle_timeout = Duration::from_secs(1).into();
    o.core.connect_timeout = Duration::from_secs(1).into();
    o.core.backoff_max = Duration::from_millis(250).into();
    o.core.unreachable_timeout = unreachable.into();
    o
}

/// A line for the parent.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "NETNS {}", format_args!($($arg)*));
        let _ = out.flush();
    }};
}

/// The child's stdin, line by line (a thread, as the tokio `io-std` feature is not on).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().to_string()).is_err() {
                break;
            }
        }
    });
    rx
}

fn ping(seq: u64, reply_to: &PortRef<Pong>) -> EchoMsg {
    EchoMsg::Ping {
        seq,
        payload: vec![seq as u8; payload_len(seq)],
        reply_to: reply_to.clone(),
    }
}

/// A child's entry point. Does nothing unless started by the test below.
#[test]
fn netns_peer_entry() {
    let Ok(spec) = std::env::var(ROLE_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let addr = ChannelAddr::from_str(parts.get(1).expect("address")).expect("address");
    let echo = parts
        .get(2)
        .map(|p| PortRef::<EchoMsg>::attest(PortId::from_str(p).expect("echo port id")));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        init_logging();
        match parts[0] {
            "echo" => echo_host(addr).await,
            "recover" => recover(addr, echo.expect("echo port")).await,
            "give-up" => give_up(addr, echo.expect("echo port")).await,
            other => panic!("bad {ROLE_ENV}: {other:?}"),
        }
    });
}

/// B: serves the echo actor until told `stop`.
async fn echo_host(addr: ChannelAddr) {
    let proc = Proc::direct_with(addr, "echo-host".to_string(), link_options(secs(30)))
        .await
        .expect("echo host proc");
    let (echo, handle) = proc.spawn("echo", Echo).expect("echo");
    report!("echo {}", echo.port::<EchoMsg>());
    let mut stdin = stdin_lines();
    while let Some(line) = stdin.recv().await {
        if line == "stop" {
            break;
        }
    }
    handle.stop();
    assert_eq!(
        within(10, "echo stops", handle.wait()).await,
        ActorStatus::Stopped
    );
    let report = within(20, "echo host shutdown", proc.shutdown()).await;
    // `returned`/`returns_dropped` count pongs that came back to the (stopped) echo actor: a shutdown with the link to
    // A2 down returns those whose acknowledgement had not arrived, as `Unconfirmed`.
    let s = proc.stats();
    report!(
        "done drained={} delivered={} returned={} returns_dropped={} retransmitted={} \
         conn_errors={}",
        report.drained,
        s.delivered,
        s.returned,
        s.returns_dropped,
        s.retransmitted,
        s.conn_errors
    );
}

async fn warm_up(
    client: &Instance,
    echo: &PortRef<EchoMsg>,
    reply_to: &PortRef<Pong>,
    pongs: &mut procwire_tokio::PortReceiver<Pong>,
    seqs: std::ops::Range<u64>,
) {
    within(30, "warm-up round trips", async {
        for seq in seqs {
            echo.send(client, ping(seq, reply_to)).await.expect("ping");
            let pong = pongs.recv().await.expect("pong");
            assert_eq!((pong.seq, pong.len), (seq, payload_len(seq)));
        }
    })
    .await;
}

/// A1: a stream of pings through a cut and a restored link; every pong exactly once, in
/// order.
async fn recover(addr: ChannelAddr, echo: PortRef<EchoMsg>) {
    let proc = Proc::direct_with(addr, "driver".to_string(), link_options(secs(30)))
        .await
        .expect("driver proc");
    let (client, _) = proc.instance("client").expect("client");
    let (pong_port, mut pongs) = client.open_port::<Pong>();
    let reply_to = pong_port.port_ref();
    warm_up(&client, &echo, &reply_to, &mut pongs, 0..WARM).await;
    report!("warm");

    let end = WARM + STREAM;
    let receiver = tokio::spawn(async move {
        let mut last = Instant::now();
        let (mut max_gap, mut gap_before) = (Duration::ZERO, 0);
        for expected in WARM..end {
            let pong = pongs.recv().await.expect("pong");
            if pong.seq != expected {
                report!("fail expected pong {expected}, got {}", pong.seq);
                panic!(
                    "expected pong {expected}, got {} (lost, duplicated or reordered)",
                    pong.seq
                );
            }
            assert_eq!(pong.len, payload_len(expected), "pong {expected} length");
            let gap = last.elapsed();
            if gap > max_gap {
                (max_gap, gap_before) = (gap, expected);
            }
            last = Instant::now();
        }
        (pongs, max_gap, gap_before)
    });
    let started = Instant::now();
    for seq in WARM..end {
        echo.send(&client, ping(seq, &reply_to))
            .await
            .expect("ping");
        if seq == WARM + CUT_AT {
            report!("streaming {seq}");
        }
        tokio::time::sleep(STREAM_EVERY).await;
    }
    let sent_for = started.elapsed();
    let (mut pongs, max_gap, gap_before) = within(30, "every pong of the stream", receiver)
        .await
        .expect("receiver");
    let all_in = started.elapsed();
    // Nothing more may arrive: no duplicates late, and nothing returned.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Ok(extra) = pongs.try_recv() {
        panic!("a pong beyond the stream: {extra:?}");
    }
    if let Some(r) = client.try_next_undeliverable() {
        panic!("returned while the link recovered: {:?}", r.reason);
    }
    let s = proc.stats();
    report!(
        "result pongs={STREAM} in_order=true max_gap_ms={} gap_before_seq={gap_before} \
         sent_in_ms={} all_in_ms={} retransmitted={} returned={}",
        max_gap.as_millis(),
        sent_for.as_millis(),
        all_in.as_millis(),
        s.retransmitted,
        s.returned
    );
    drop((pongs, pong_port, client));
    assert!(within(20, "driver shutdown", proc.shutdown()).await.drained);
}

/// A2: the link goes down for good; every ping comes back with a reason.
async fn give_up(addr: ChannelAddr, echo: PortRef<EchoMsg>) {
    let proc = Proc::direct_with(addr, "driver".to_string(), link_options(UNREACHABLE_AFTER))
        .await
        .expect("driver proc");
    let (client, _) = proc.instance("client").expect("client");
    let (pong_port, mut pongs) = client.open_port::<Pong>();
    let reply_to = pong_port.port_ref();
    warm_up(&client, &echo, &reply_to, &mut pongs, 0..20).await;
    report!("warm");
    let mut stdin = stdin_lines();
    let line = within(30, "word of the cut", stdin.recv()).await;
    assert_eq!(line.as_deref(), Some("down"));

    let cut = Instant::now();
    // Into the connection that still looks open (transmitted, never acknowledged)...
    for seq in 1000..1000 + BURST {
        echo.send(&client, ping(seq, &reply_to))
            .await
            .expect("ping");
    }
    // ...and after it is noticed lost (idle timeout), while redials fail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for seq in 1000 + BURST..1000 + 2 * BURST {
        echo.send(&client, ping(seq, &reply_to))
            .await
            .expect("ping");
    }
    let mut returns = Returns::new(echo.port_id().clone());
    let mut first_ms = None;
    within(15, "every ping returned", async {
        while returns.back.len() < 2 * BURST as usize {
            let r = client.next_undeliverable().await.expect("return");
            first_ms.get_or_insert(cut.elapsed().as_millis());
            returns.take(r);
        }
    })
    .await;
    let last_ms = cut.elapsed().as_millis();
    let distinct: BTreeSet<u64> = returns.back.iter().copied().collect();
    assert_eq!(
        distinct,
        (1000..1000 + 2 * BURST).collect::<BTreeSet<_>>(),
        "each ping returned: {:?}",
        returns.back
    );
    let in_order = returns.back.windows(2).all(|w| w[0] < w[1]);
    // Nothing got through, and nothing more comes back (but late warm-up returns).
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Ok(p) = pongs.try_recv() {
        panic!("a pong over a link that is down: {p:?}");
    }
    while let Some(r) = client.try_next_undeliverable() {
        returns.take(r);
    }
    assert_eq!(returns.back.len(), 2 * BURST as usize, "returned twice");
    report!(
        "result returned={} unconfirmed={} unreachable={} in_order={in_order} first_ms={} \
         last_ms={last_ms} warm_returned={}",
        returns.back.len(),
        returns.unconfirmed,
        returns.unreachable,
        first_ms.unwrap_or_default(),
        returns.warm.len()
    );
    drop((pongs, pong_port, client));
    assert!(within(20, "driver shutdown", proc.shutdown()).await.drained);
}

/// What came back to A2.
struct Returns {
    echo: PortId,
    /// The pings sent after the cut, in the order they came back.
    back: Vec<u64>,
    unconfirmed: usize,
    unreachable: usize,
    /// Warm-up pings that came back.
    warm: BTreeSet<u64>,
}

impl Returns {
    fn new(echo: PortId) -> Returns {
        Returns {
            echo,
            back: Vec::new(),
            unconfirmed: 0,
            unreachable: 0,
            warm: BTreeSet::new(),
        }
    }

    fn take(&mut self, r: procwire_tokio::Returned) {
        assert_eq!(r.dest(), &self.echo);
        let EchoMsg::Ping { seq, .. } = r.decode::<EchoMsg>().expect("decodes") else {
            panic!("unexpected return");
        };
        if seq < 1000 {
            // A warm-up ping was answered, so it was delivered; but if its acknowledgement
            // had not arrived when the link went down (a loaded machine can delay it past
            // `ack_delay`), its sender cannot know that, and it comes back as
            // `Unconfirmed` (delivery unknown). Never as anything else, and only once.
            assert_eq!(r.reason, Undeliverable::Unconfirmed, "warm-up ping {seq}");
            assert!(self.warm.insert(seq), "warm-up ping {seq} returned twice");
            return;
        }
        match r.reason {
            Undeliverable::Unconfirmed => self.unconfirmed += 1,
            Undeliverable::Unreachable => self.unreachable += 1,
            other => panic!("ping {seq} returned for another reason: {other:?}"),
        }
        assert!(!self.back.contains(&seq), "ping {seq} returned twice");
        self.back.push(seq);
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A child in a namespace, seen by the parent.
struct Peer {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    fn start(pair: &NetnsPair, side: Side, name: &'static str, role: String) -> Peer {
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = Command::from(pair.command(side, &exe));
        cmd.args([
            "netns_peer_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start a child in a namespace");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Peer {
            name,
            child,
            stdin,
            lines,
        }
    }

    /// The details of the child's next `NETNS <keyword>` line (other output is skipped).
    async fn expect(&mut self, keyword: &str, secs: u64) -> String {
        let name = self.name;
        within(secs, &format!("{name}: {keyword}"), async {
            loop {
                let line = self.lines.next_line().await.expect("read child stdout");
                let Some(line) = line else {
                    panic!("{name} ended before reporting {keyword}");
                };
                let Some(report) = report_in(&line) else {
                    continue;
                };
                println!("[{name} +] {report}");
                let (word, rest) = report.split_once(' ').unwrap_or((report, ""));
                if word == "fail" {
                    panic!("{name}: {rest}");
                }
                if word == keyword {
                    return rest.to_string();
                }
            }
        })
        .await
    }

    async fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to child");
        stdin.flush().await.expect("flush");
    }

    /// Waits for the child to exit, successfully.
    async fn finish(mut self, secs: u64) {
        drop(self.stdin.take());
        // Drain what else it prints so it never blocks on a full pipe.
        let name = self.name;
        let status = within(secs, &format!("{name} exits"), async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                if let Some(report) = report_in(&line) {
                    println!("[{name} +] {report}");
                }
            }
            self.child.wait().await.expect("wait")
        })
        .await;
        assert!(status.success(), "{name} failed: {status}");
    }
}

/// The report in a line of a child's stdout. The harness may have printed
/// `test netns_peer_entry ... ` before it on the same line.
fn report_in(line: &str) -> Option<&str> {
    line.find("NETNS ").map(|i| &line[i + "NETNS ".len()..])
}

fn field<'a>(details: &'a str, key: &str) -> &'a str {
    details
        .split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {details:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_link_cut_and_restored() {
    init_logging();
    let pair = match NetnsPair::create() {
        Ok(pair) => pair,
        Err(why) => {
            // Straight to stderr, past the test harness's capture, so it is always seen.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "skipped: {why}");
            return;
        }
    };
    let t0 = Instant::now();
    let at = || t0.elapsed().as_millis();
    let (addr_a, addr_b) = (pair.addr(Side::A), pair.addr(Side::B));
    let mut b = Peer::start(&pair, Side::B, "B", format!("echo tcp:{addr_b}:{PORT_B}"));
    let echo = b.expect("echo", 30).await;

    // Phase 1: cut mid-stream, restore, and every pong arrives once and in order.
    let mut a1 = Peer::start(
        &pair,
        Side::A,
        "A1",
        format!("recover tcp:{addr_a}:{PORT_A1} {echo}"),
    );
    a1.expect("warm", 30).await;
    a1.expect("streaming", 30).await;
    pair.set_link(Side::B, false).expect("link down");
    println!("[parent] {} ms: B's veth down", at());
    tokio::time::sleep(OUTAGE).await;
    pair.set_link(Side::B, true).expect("link up");
    println!("[parent] {} ms: B's veth up", at());
    let result = a1.expect("result", 40).await;
    assert_eq!(field(&result, "pongs"), STREAM.to_string());
    assert_eq!(field(&result, "returned"), "0");
    let gap: u128 = field(&result, "max_gap_ms").parse().expect("gap");
    assert!(
        gap >= OUTAGE.as_millis() / 2,
        "the cut did not interrupt the stream (largest gap {gap} ms)"
    );
    a1.finish(25).await;
    println!("[parent] {} ms: phase 1 passed", at());

    // Phase 2: cut for good; every ping comes back to its sender with a reason.
    let mut a2 = Peer::start(
        &pair,
        Side::A,
        "A2",
        format!("give-up tcp:{addr_a}:{PORT_A2} {echo}"),
    );
    a2.expect("warm", 30).await;
    pair.set_link(Side::A, false).expect("link down");
    println!("[parent] {} ms: A's veth down, for good", at());
    a2.tell("down").await;
    let result = a2.expect("result", 30).await;
    assert_eq!(field(&result, "returned"), (2 * BURST).to_string());
    let last: u128 = field(&result, "last_ms").parse().expect("last_ms");
    // Idle timeout (1 s) plus the unreachable timeout, with room for a loaded machine.
    assert!(
        last < 1000 + UNREACHABLE_AFTER.as_millis() + 5000,
        "returns took {last} ms"
    );
    a2.finish(25).await;
    println!("[parent] {} ms: phase 2 passed", at());

    b.tell("stop").await;
    b.expect("done", 30).await;
    b.finish(25).await;
    println!("[parent] {} ms: all done", at());
    drop(pair);
}
