//! Slow consumer across two OS processes (issue 8): a sender proc pushes `--count` 64 B
//! messages as fast as `send().await` lets it to a port in a second OS process that drains
//! it at `--rate` messages per second. Delivery into a port is bounded in core
//! (`Config::port_queue_msgs` / `port_queue_bytes`); behind a full port the inbound link
//! holds messages unacknowledged (`link_held_msgs` / `link_held_bytes`), so the sender's
//! window (`window_msgs` / `window_bytes`) fills and its sends wait. This binary checks
//! that: the receiver's RSS stays near where it started, every message arrives in order,
//! and the sender is held back to the receiver's pace.
//!
//! ```text
//! cargo run --release -p procwire-benches --bin slow_consumer
//! cargo run --release -p procwire-benches --bin slow_consumer -- --count 60000 --rate 30000
//! cargo run --release -p procwire-benches --bin slow_consumer -- --transport tcp
//! ```
//!
//! The parent starts itself again as the receiver (`--receiver <port>`, the port to report
//! to, as text, as the tokio bootstrap example does). The receiver reports its data port
//! back, drains it, samples its own RSS (`VmRSS`) and core's queue figures while it does,
//! and at the end sends its report (peak RSS from `VmHWM`) back through procwire. The
//! parent prints a table and one `summary:` line of `key=value` pairs for scripts
//! (`tests/slow_consumer.rs` reads it). Exit status 1 if not every message arrived in order.
//! Both processes run `procwire_benches::runtime()` (tokio, current thread).

use std::error::Error;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use procwire_tokio::{
    ChannelTransport, Envelope, PortId, PortReceiver, PortRef, Proc, ProcOptions,
};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn Error + Send + Sync>;

/// Payload bytes of every message.
const PAYLOAD: usize = 64;
/// The receiver takes what the rate allows, then sleeps this long.
const TICK: Duration = Duration::from_millis(10);
/// The receiver samples its RSS this often.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// Longest wait for one message or for the other process before giving up.
const PATIENCE: Duration = Duration::from_secs(30);

/// One message: a sequence number and a 64 B payload.
#[derive(Serialize, Deserialize)]
struct Item {
    seq: u64,
    payload: Bytes,
}

/// What the receiver tells the sender.
#[derive(Serialize, Deserialize, Debug)]
enum FromReceiver {
    /// The port to send to, before any message (RSS in bytes).
    Ready {
        port: PortRef<Item>,
        pid: u32,
        rss_before: u64,
    },
    /// All messages taken (or the first one out of order).
    Done(Report),
}

/// The receiver's figures.
#[derive(Serialize, Deserialize, Debug, Default)]
struct Report {
    received: u64,
    in_order: bool,
    payloads_intact: bool,
    /// The first sequence number out of place: (expected, got).
    first_gap: Option<(u64, u64)>,
    /// From the first message taken to the last.
    drain_secs: f64,
    rss_before: u64,
    /// Largest `VmRSS` sampled while draining.
    rss_sampled_max: u64,
    /// `VmHWM` at the end (the peak RSS of the whole process life), or the largest sample
    /// if that is larger.
    rss_peak: u64,
    /// Largest port queue length seen (the receiver's own queue).
    max_queue: usize,
    /// Largest count of messages core held behind the full port.
    max_held_msgs: usize,
    max_held_bytes: usize,
}

struct Args {
    transport: ChannelTransport,
    count: u64,
    rate: u64,
    receiver: Option<String>,
}

const USAGE: &str = "usage: slow_consumer [--count N] [--rate MSGS_PER_SEC] [--transport unix|tcp]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        transport: ChannelTransport::Unix,
        count: 1_000_000,
        rate: 50_000,
        receiver: None,
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
                args.transport = match ChannelTransport::from_str(&v) {
                    Ok(t @ (ChannelTransport::Unix | ChannelTransport::Tcp)) => t,
                    _ => return Err(format!("transport {v:?}: unix or tcp\n{USAGE}")),
                };
            }
            "--count" | "-n" => {
                args.count = value()?.parse().map_err(|e| format!("--count: {e}"))?
            }
            "--rate" | "-r" => args.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            // Internal: run as the receiver, reporting to this port.
            "--receiver" => args.receiver = Some(value()?),
            "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if args.count == 0 || args.rate == 0 {
        return Err(format!("--count and --rate must be at least 1\n{USAGE}"));
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let rt = procwire_benches::runtime();
    let result = match &args.receiver {
        Some(to) => match PortId::from_str(to) {
            Ok(port) => rt.block_on(receiver(&args, PortRef::attest(port))),
            Err(e) => Err(format!("--receiver: {e}").into()),
        },
        None => rt.block_on(sender(&args)),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            let who = if args.receiver.is_some() {
                "receiver"
            } else {
                "sender"
            };
            eprintln!("slow_consumer ({who}): {e}");
            std::process::exit(1);
        }
    }
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn rss() -> Result<(u64, u64), BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64, BoxError> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| format!("no {name} in /proc/self/status"))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The receiving process: stand up a proc, open the port, report it, drain it, report.
async fn receiver(args: &Args, report_to: PortRef<FromReceiver>) -> Result<bool, BoxError> {
    let proc = Proc::direct(args.transport.any(), "receiver".to_string()).await?;
    let (me, _handle) = proc.instance("drain")?;
    let (port, mut rx) = me.open_port::<Item>();
    let rss_before = rss()?.0;
    let ready = FromReceiver::Ready {
        port: port.port_ref(),
        pid: std::process::id(),
        rss_before,
    };
    report_to.send(&me, ready).await?;
    let mut report = drain(&proc, &mut rx, args).await?;
    report.rss_before = rss_before;
    // VmHWM can lag VmRSS a little (the kernel folds per-thread counters in lazily).
    report.rss_peak = rss()?.1.max(report.rss_sampled_max);
    let ok = report.in_order && report.payloads_intact;
    report_to.send(&me, FromReceiver::Done(report)).await?;
    drop((rx, port, me));
    proc.shutdown().await;
    Ok(ok)
}

/// What the receiver tracks while it drains.
struct Drain {
    report: Report,
    expected: Bytes,
}

impl Drain {
    fn take(&mut self, item: Item) {
        let r = &mut self.report;
        if item.seq != r.received && r.first_gap.is_none() {
            r.first_gap = Some((r.received, item.seq));
            r.in_order = false;
        }
        if item.payload != self.expected {
            r.payloads_intact = false;
        }
        r.received += 1;
    }

    fn sample(&mut self, proc: &Proc, rx: &PortReceiver<Item>, rss: bool) -> Result<(), BoxError> {
        let r = &mut self.report;
        let held = proc.held();
        r.max_queue = r.max_queue.max(rx.len());
        r.max_held_msgs = r.max_held_msgs.max(held.link_held_msgs);
        r.max_held_bytes = r.max_held_bytes.max(held.link_held_bytes);
        if rss {
            r.rss_sampled_max = r.rss_sampled_max.max(self::rss()?.0);
        }
        Ok(())
    }
}

/// The next message, waiting at most [`PATIENCE`].
async fn next(rx: &mut PortReceiver<Item>) -> Result<Item, BoxError> {
    let item = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .map_err(|_| "no message for 30 s")??;
    Ok(item)
}

/// Takes `args.count` messages, no faster than `args.rate` per second from the first.
async fn drain(proc: &Proc, rx: &mut PortReceiver<Item>, args: &Args) -> Result<Report, BoxError> {
    let mut d = Drain {
        report: Report {
            in_order: true,
            payloads_intact: true,
            ..Report::default()
        },
        expected: procwire_benches::payload(PAYLOAD),
    };
    d.take(next(rx).await?);
    let start = Instant::now();
    let mut next_rss = start;
    while d.report.received < args.count {
        let allowed = (start.elapsed().as_secs_f64() * args.rate as f64) as u64 + 1;
        while d.report.received < allowed.min(args.count) {
            d.take(next(rx).await?);
        }
        let due = next_rss.elapsed() > Duration::ZERO;
        if due {
            next_rss += RSS_EVERY;
        }
        d.sample(proc, rx, due)?;
        tokio::time::sleep(TICK).await;
    }
    d.report.drain_secs = start.elapsed().as_secs_f64();
    Ok(d.report)
}

/// Kills the receiver process if the sender gives up early.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl ChildGuard {
    /// Waits for the child to exit (polling, so the runtime keeps running meanwhile).
    async fn wait(&mut self) -> Result<std::process::ExitStatus, BoxError> {
        let c = self.0.as_mut().ok_or("no child")?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = c.try_wait()? {
                self.0 = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err("the receiver did not exit within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts this binary again as the receiver, reporting to `report_to`.
fn spawn_receiver(args: &Args, report_to: &PortRef<FromReceiver>) -> Result<ChildGuard, BoxError> {
    let child = Command::new(std::env::current_exe()?)
        .arg("--transport")
        .arg(args.transport.to_string())
        .arg("--count")
        .arg(args.count.to_string())
        .arg("--rate")
        .arg(args.rate.to_string())
        .arg("--receiver")
        .arg(report_to.to_string())
        .stdin(Stdio::null())
        .spawn()?;
    Ok(ChildGuard(Some(child)))
}

/// The next control message from the receiver.
async fn control(rx: &mut PortReceiver<FromReceiver>) -> Result<FromReceiver, BoxError> {
    let msg = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .map_err(|_| "the receiver did not report within 30 s")??;
    Ok(msg)
}

/// What the sender measured.
struct Sent {
    pid: u32,
    send_secs: f64,
    rss_before: u64,
    rss_peak: u64,
    item_bytes: usize,
}

/// The sending process: start the receiver, send everything, collect its report.
async fn sender(args: &Args) -> Result<bool, BoxError> {
    let proc = Proc::direct(args.transport.any(), "sender".to_string()).await?;
    let (me, _handle) = proc.instance("sender")?;
    let (ctl, mut ctl_rx) = me.open_port::<FromReceiver>();
    let mut child = spawn_receiver(args, &ctl.port_ref())?;
    let FromReceiver::Ready { port, pid, .. } = control(&mut ctl_rx).await? else {
        return Err("the receiver reported before it was ready".into());
    };
    let payload = procwire_benches::payload(PAYLOAD);
    let item_bytes = procwire_tokio::encode(&Item {
        seq: args.count,
        payload: payload.clone(),
    })?
    .len();
    let rss_before = rss()?.0;
    let start = Instant::now();
    for seq in 0..args.count {
        let item = Item {
            seq,
            payload: payload.clone(),
        };
        port.send(&me, item).await?;
    }
    let send_secs = start.elapsed().as_secs_f64();
    let FromReceiver::Done(report) = control(&mut ctl_rx).await? else {
        return Err("the receiver reported ready twice".into());
    };
    let sent = Sent {
        pid,
        send_secs,
        rss_before,
        rss_peak: rss()?.1,
        item_bytes,
    };
    print_results(args, &sent, &report);
    let status = child.wait().await?;
    drop((ctl_rx, ctl, me));
    proc.shutdown().await;
    if !status.success() {
        return Err(format!("receiver process failed: {status}").into());
    }
    Ok(report.in_order && report.payloads_intact && report.received == args.count)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

/// Bytes a (msgs, bytes) limit admits of messages of `item` payload bytes each.
fn bound(msgs: usize, bytes: usize, item: usize) -> u64 {
    (msgs * item).min(bytes.max(item)) as u64
}

/// The table, and the `summary:` line for scripts.
fn print_results(args: &Args, s: &Sent, r: &Report) {
    let c = ProcOptions::default().core;
    let queue = bound(c.port_queue_msgs, c.port_queue_bytes, s.item_bytes);
    let held = bound(c.link_held_msgs, c.link_held_bytes, s.item_bytes);
    let window = bound(c.window_msgs, c.window_bytes, s.item_bytes);
    let growth = r.rss_peak.saturating_sub(r.rss_before);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "slow consumer: {} x {PAYLOAD} B over {}, receiver (pid {}) drains at {} msg/s; load {}",
        args.count,
        args.transport,
        s.pid,
        args.rate,
        load.join(" ")
    );
    println!("  |                         | receiver      | sender        |");
    println!("  |-------------------------|---------------|---------------|");
    let row = |what: &str, a: String, b: String| println!("  | {what:<23} | {a:>13} | {b:>13} |");
    row("RSS before the burst", mib(r.rss_before), mib(s.rss_before));
    row("peak RSS", mib(r.rss_peak), mib(s.rss_peak));
    row(
        "growth (peak - before)",
        mib(growth),
        mib(s.rss_peak.saturating_sub(s.rss_before)),
    );
    row("max VmRSS sampled", mib(r.rss_sampled_max), "-".into());
    row(
        "time",
        format!("{:.2} s", r.drain_secs),
        format!("{:.2} s", s.send_secs),
    );
    let rate = |n: u64, secs: f64| format!("{:.0}/s", n as f64 / secs);
    row(
        "messages",
        rate(r.received, r.drain_secs),
        rate(args.count, s.send_secs),
    );
    println!(
        "  received {} of {}, in order: {}, payloads intact: {}{}",
        r.received,
        args.count,
        yes(r.in_order),
        yes(r.payloads_intact),
        r.first_gap
            .map_or(String::new(), |(e, g)| format!(" (expected {e}, got {g})"))
    );
    println!(
        "  sender held back: sends took {:.2} of the drain time",
        s.send_secs / r.drain_secs
    );
    println!(
        "  bounds ({} B per message as core counts it): port queue {} msgs = {}, link held {} msgs = {}, \
         window {} msgs = {}",
        s.item_bytes,
        c.port_queue_msgs,
        kib(queue),
        c.link_held_msgs,
        kib(held),
        c.window_msgs,
        kib(window)
    );
    println!(
        "  each held message also costs its `Envelope` ({} B) and the ids it points to",
        std::mem::size_of::<Envelope>()
    );
    println!(
        "  seen at the receiver: port queue max {} msgs, link held max {} msgs / {}",
        r.max_queue,
        r.max_held_msgs,
        kib(r.max_held_bytes as u64)
    );
    print_summary(args, s, r, queue + held);
}

/// One line of `key=value` pairs (bytes, seconds, 0/1) for scripts and the test.
fn print_summary(args: &Args, s: &Sent, r: &Report, receiver_bound: u64) {
    let c = ProcOptions::default().core;
    println!(
        "summary: count={} received={} in_order={} payloads_intact={} item_bytes={} \
         receiver_rss_before={} receiver_rss_peak={} receiver_growth={} receiver_bound={} \
         bound_msgs={} envelope_struct={} max_queue={} max_held_msgs={} sender_rss_before={} \
         sender_rss_peak={} send_secs={:.3} drain_secs={:.3}",
        args.count,
        r.received,
        u8::from(r.in_order),
        u8::from(r.payloads_intact),
        s.item_bytes,
        r.rss_before,
        r.rss_peak,
        r.rss_peak.saturating_sub(r.rss_before),
        receiver_bound,
        c.port_queue_msgs + c.link_held_msgs,
        std::mem::size_of::<Envelope>(),
        r.max_queue,
        r.max_held_msgs,
        s.rss_before,
        s.rss_peak,
        s.send_secs,
        r.drain_secs
    );
}
