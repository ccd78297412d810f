//! The hostile-peer suite's figures as a Markdown table: every case of
//! `procwire_conformance::hostile` run alone, on each adapter over Unix socket files and TCP,
//! with the same assertions as `tests/hostile.rs`, and per case:
//!
//! * the victim's peak `held()` handshake bytes, inbound connections and connections in
//!   their handshake (each with its configured bound in the header);
//! * the growth of this process's peak RSS over the case (`VmHWM` at its end, reset at its
//!   start through `/proc/self/clear_refs`, minus `VmRSS` at its start): both procs, their
//!   runtime and the attacker live in this process;
//! * the median and the longest time from a bad connection's first byte sent (or its
//!   connect, for one that sends nothing) to the victim closing it, over the case's bad
//!   connections (for the wrong cookie: from the send to the refused message's return);
//! * the legitimate session's largest gap between consecutive deliveries during the attack.
//!
//! ```text
//! cargo run --release -p procwire-conformance --example hostile_report -j 1 [-- FILTER]
//! ```
//!
//! `FILTER` keeps the rows whose case, adapter or transport contains it (say `tokio`).

use std::time::Duration;

use procwire_conformance::adapters::{run_smol, run_tokio};
use procwire_conformance::hostile::{hostile_options, Case, Figures, HeldBounds};
use procwire_conformance::ChannelTransport;

/// A `kB` figure of `/proc/self/status` (`None` where there is none).
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets this process's peak RSS to its current RSS; whether that worked.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs `case` over `t` on `adapter`; its figures and the growth of peak RSS in kB.
fn measure(case: Case, adapter: &str, t: ChannelTransport) -> (Figures, Option<u64>) {
    let reset = reset_peak_rss();
    let rss = status_kb("VmRSS:");
    let figures = match adapter {
        "tokio" => run_tokio(|x| async move { case.run(&x, t).await }),
        _ => run_smol(|x| async move { case.run(&x, t).await }),
    };
    let peak = status_kb("VmHWM:");
    let grew = match (reset, rss, peak) {
        (true, Some(before), Some(peak)) => Some(peak.saturating_sub(before)),
        _ => None,
    };
    (figures, grew)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("–".to_string(), |d| {
        format!("{:.2}", d.as_secs_f64() * 1e3)
    })
}

fn header(b: &HeldBounds) {
    println!(
        "| case | adapter | transport | bad conns | peak handshake bytes (≤ {}) | peak inbound conns (≤ {}) / handshaking (≤ {}) | peak RSS growth (KiB) | time to refusal, median / max (ms) | legit session's largest gap (ms) |",
        b.handshake_bytes, b.inbound_conns, b.handshaking
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
}

fn row(case: Case, adapter: &str, t: ChannelTransport, f: &Figures, grew: Option<u64>) {
    println!(
        "| {} | {adapter} | {t} | {} | {} | {} / {} | {} | {} / {} | {} |",
        case.name(),
        f.bad_conns,
        f.peak.handshake_bytes,
        f.peak.inbound_conns,
        f.peak.handshaking,
        grew.map_or("–".to_string(), |k| k.to_string()),
        ms(f.median_refusal()),
        ms(f.max_refusal()),
        ms(f.legit_gap),
    );
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    header(&HeldBounds::of(&hostile_options().core));
    for case in Case::ALL {
        for adapter in ["tokio", "smol"] {
            for t in [ChannelTransport::Unix, ChannelTransport::Tcp] {
                let label = format!("{} {adapter} {t}", case.name());
                if !label.contains(&filter) {
                    continue;
                }
                let (figures, grew) = measure(case, adapter, t);
                row(case, adapter, t, &figures, grew);
            }
        }
    }
}
