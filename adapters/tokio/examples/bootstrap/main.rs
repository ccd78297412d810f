//! The bootstrap demo: a root proc, a second proc in a second OS process running an echo
//! actor, and a `client` instance exchanging messages with it over a real socket.
//!
//! ```text
//! cargo run --release --example bootstrap                      # Unix socket (default)
//! cargo run --release --example bootstrap -- --transport tcp   # TCP on 127.0.0.1
//! cargo run --release --example bootstrap -- --transport local # in-process, one OS process
//! cargo run --release --example bootstrap -- --count 20000 --size 1024
//! ```
//!
//! Both processes run tokio's current-thread runtime: a multi-thread runtime would add a
//! cross-thread wake-up to every message (tens of microseconds on small machines). Over Unix
//! and TCP the root then measures the same round trips between two OS processes with no
//! procwire at all (`raw.rs`) and prints its figures beside procwire's.
//!
//! The root starts the second process by re-running this binary with `--peer`, and passes it
//! a reference to one of its ports (as text); the peer stands up its own proc, spawns the
//! echo actor and sends the actor's reference back through that port. Everything after
//! that is procwire messages.

use std::error::Error;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use procwire_tokio::{
    Actor, ActorError, ActorRef, ChannelTransport, Context, OncePortRef, PortId, PortRef, Proc,
    ProcId,
};
use serde::{Deserialize, Serialize};

mod raw;

type BoxError = Box<dyn Error + Send + Sync>;

/// What the echo actor takes.
#[derive(Serialize, Deserialize, Debug)]
enum EchoMsg {
    /// Answer with the same sequence number.
    Ping {
        seq: u64,
        payload: Vec<u8>,
        reply_to: PortRef<u64>,
    },
    /// Report how many messages were handled, once.
    Count(OncePortRef<u64>),
    /// Stop.
    Stop,
}

/// Sent by the peer to the root once its echo actor runs.
#[derive(Serialize, Deserialize, Debug)]
struct PeerReady {
    proc: ProcId,
    echo: ActorRef<Echo>,
    os_pid: u32,
}

#[derive(Default)]
struct Echo {
    handled: u64,
}

impl Actor for Echo {
    type Message = EchoMsg;

    async fn handle(&mut self, cx: &mut Context, msg: EchoMsg) -> Result<(), ActorError> {
        self.handled += 1;
        match msg {
            EchoMsg::Ping { seq, reply_to, .. } => reply_to.send(cx, seq).await?,
            EchoMsg::Count(reply_to) => reply_to.send(cx, self.handled).await?,
            EchoMsg::Stop => cx.stop(),
        }
        Ok(())
    }
}

struct Args {
    transport: ChannelTransport,
    count: u64,
    size: usize,
    peer: Option<String>,
    raw_peer: Option<String>,
}

const USAGE: &str = "usage: bootstrap [--transport unix|tcp|local] [--count N] [--size BYTES]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        transport: ChannelTransport::Unix,
        count: 10_000,
        size: 64,
        peer: None,
        raw_peer: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--transport" | "-t" => {
                let v = value()?;
                args.transport = ChannelTransport::from_str(&v)
                    .map_err(|_| format!("unknown transport {v:?}\n{USAGE}"))?;
            }
            "--count" | "-n" => {
                args.count = value()?.parse().map_err(|e| format!("--count: {e}"))?;
            }
            "--size" | "-s" => {
                args.size = value()?.parse().map_err(|e| format!("--size: {e}"))?;
            }
            // Internal: run as the second process, reporting to this port.
            "--peer" => args.peer = Some(value()?),
            // Internal: run as the raw baseline's echo process, connecting to this address.
            "--raw-peer" => args.raw_peer = Some(value()?),
            "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.count == 0 {
        return Err("--count must be at least 1".to_string());
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let result = match (&args.peer, &args.raw_peer) {
        (_, Some(addr)) => raw::peer(addr).await,
        (Some(report_to), None) => match PortId::from_str(report_to) {
            Ok(port) => peer(args.transport, PortRef::attest(port), "a second OS process").await,
            Err(e) => Err(format!("--peer: {e}").into()),
        },
        (None, None) => root(&args).await,
    };
    if let Err(e) = result {
        eprintln!("bootstrap: {e}");
        std::process::exit(1);
    }
}

/// The second proc: serve, spawn the echo actor, report it, run until it stops.
async fn peer(
    transport: ChannelTransport,
    report_to: PortRef<PeerReady>,
    where_: &str,
) -> Result<(), BoxError> {
    let proc = Proc::direct(transport.any(), "peer".to_string()).await?;
    let (echo, echo_handle) = proc.spawn("echo", Echo::default())?;
    let (boot, _) = proc.instance("boot")?;
    let ready = PeerReady {
        proc: proc.proc_id().clone(),
        echo,
        os_pid: std::process::id(),
    };
    report_to.send(&boot, ready).await?;
    let status = echo_handle.wait().await;
    let report = proc.shutdown().await;
    println!(
        "  [peer, {where_}] echo actor {status}; proc shut down (in flight settled: {})",
        report.drained
    );
    Ok(())
}

/// One request at a time: `count` round trips, each timed.
async fn round_trips(
    client: &procwire_tokio::Instance,
    echo: &ActorRef<Echo>,
    pongs: &mut procwire_tokio::PortReceiver<u64>,
    ping: &impl Fn(u64) -> EchoMsg,
    count: u64,
) -> Result<Vec<Duration>, BoxError> {
    let mut rtts = Vec::with_capacity(count as usize);
    for seq in 0..count {
        let start = Instant::now();
        echo.send(client, ping(seq)).await?;
        let got = pongs.recv().await?;
        rtts.push(start.elapsed());
        if got != seq {
            return Err(format!("reply {got} to ping {seq}").into());
        }
    }
    Ok(rtts)
}

/// Percentiles of round-trip times.
#[derive(Clone, Copy)]
struct Summary {
    min: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Summary {
    fn of(mut rtts: Vec<Duration>) -> Self {
        rtts.sort_unstable();
        let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize];
        Summary {
            min: rtts[0],
            p50: pct(0.5),
            p99: pct(0.99),
            max: rtts[rtts.len() - 1],
            mean: rtts.iter().sum::<Duration>() / rtts.len() as u32,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "min {}, p50 {}, p99 {}, max {}, mean {}",
            micros(self.min),
            micros(self.p50),
            micros(self.p99),
            micros(self.max),
            micros(self.mean)
        )
    }
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} us")
    }
}

async fn root(args: &Args) -> Result<(), BoxError> {
    let t = args.transport;
    let proc = Proc::direct(t.any(), "root".to_string()).await?;
    let (client, _client_handle) = proc.instance("client")?;
    println!("procwire bootstrap over {t}");
    println!("  root proc     {}", proc.proc_id());
    println!("  address       {}", proc.addr());
    println!("  client        {}", client.actor_id());

    let (ready_port, mut ready_rx) = client.open_port::<PeerReady>();
    let mut child = None;
    let mut in_process = None;
    if t == ChannelTransport::Local {
        println!(
            "  peer          in this OS process (the local transport does not cross processes)"
        );
        let report_to = ready_port.port_ref();
        in_process = Some(tokio::spawn(async move {
            peer(ChannelTransport::Local, report_to, "in-process").await
        }));
    } else {
        let exe = std::env::current_exe()?;
        let c = tokio::process::Command::new(exe)
            .arg("--transport")
            .arg(t.to_string())
            .arg("--peer")
            .arg(ready_port.port_ref().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        child = Some(c);
    }

    let ready = tokio::time::timeout(Duration::from_secs(30), ready_rx.recv())
        .await
        .map_err(|_| "the peer did not report within 30 s")??;
    if child.is_some() {
        println!("  peer process  pid {} (a second OS process)", ready.os_pid);
    }
    println!("  peer proc     {}", ready.proc);
    println!("  peer address  {}", ready.proc.addr());
    println!("  echo actor    {}", ready.echo.actor_id());
    let echo = ready.echo;

    let (pong_port, mut pongs) = client.open_port::<u64>();
    let payload = vec![0xA5u8; args.size];
    let ping = |seq| EchoMsg::Ping {
        seq,
        payload: payload.clone(),
        reply_to: pong_port.port_ref(),
    };

    let rtts = round_trips(&client, &echo, &mut pongs, &ping, args.count).await?;
    let ours = Summary::of(rtts);
    println!("  round trips   {} x {} B: {}", args.count, args.size, ours);
    if t != ChannelTransport::Local {
        let theirs = Summary::of(raw::round_trips(t, args.count, args.size).await?);
        println!("  raw baseline  the same between the same two processes, no procwire: {theirs}");
        println!(
            "  procwire/raw  p50 {:.2}x, mean {:.2}x",
            ours.p50.as_secs_f64() / theirs.p50.as_secs_f64(),
            ours.mean.as_secs_f64() / theirs.mean.as_secs_f64()
        );
    }

    // Pipelined: all pings in flight at once (send waits only when the window is full).
    let start = Instant::now();
    let sends = async {
        for seq in 0..args.count {
            echo.send(&client, ping(seq)).await?;
        }
        Ok::<_, BoxError>(())
    };
    let recvs = async {
        for seq in 0..args.count {
            let got = pongs.recv().await?;
            if got != seq {
                return Err(format!("pipelined reply {got} out of order (expected {seq})").into());
            }
        }
        Ok::<_, BoxError>(())
    };
    let (s, r) = tokio::join!(sends, recvs);
    s?;
    r?;
    let took = start.elapsed();
    println!(
        "  pipelined     {} x {} B in {}: {:.0} round trips/s",
        args.count,
        args.size,
        micros(took),
        args.count as f64 / took.as_secs_f64()
    );

    // A once-port: ask the actor how many messages it handled.
    let (count_port, count_rx) = client.open_once_port::<u64>();
    echo.send(&client, EchoMsg::Count(count_port.port_ref()))
        .await?;
    let handled = tokio::time::timeout(Duration::from_secs(10), count_rx.recv())
        .await
        .map_err(|_| "no answer to the count query")??;
    println!(
        "  messages      {handled} handled by the echo actor, {} replies received",
        2 * args.count
    );

    echo.send(&client, EchoMsg::Stop).await?;
    if let Some(mut c) = child {
        let status = tokio::time::timeout(Duration::from_secs(30), c.wait())
            .await
            .map_err(|_| "the peer process did not exit within 30 s")??;
        println!("  peer exited   {status}");
        if !status.success() {
            return Err(format!("peer process failed: {status}").into());
        }
    }
    if let Some(task) = in_process {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .map_err(|_| "the in-process peer did not finish within 30 s")???;
    }
    drop((pongs, ready_rx, client));
    let report = proc.shutdown().await;
    println!(
        "  root proc shut down (in flight settled: {})",
        report.drained
    );
    Ok(())
}
