//! The slow-consumer scenario (issue 8), small: 60,000 × 64 B from one OS process to a port
//! in another drained at 30,000 msg/s (about 2 s), through the `slow_consumer` binary. It
//! checks what is structural, never speed: every message arrives in order, the receiver's
//! queues and RSS stay bounded, and the sender is held back to the receiver's pace.

use std::collections::HashMap;
use std::process::Command;

/// Allowance per message the receiver may hold, on top of its payload: its `Envelope`
/// struct twice over (once in the queue that holds it, once more for a queue that doubled
/// its capacity to take it).
const ENVELOPES_PER_HELD_MSG: u64 = 2;
/// Fixed allowance for what is not per message: the connections' read buffers, the
/// runtime's and the proc's tables, and the allocator keeping freed memory. With nothing
/// held (`--count 1000`) the receiver grew 0.6 MiB; with 9,216 messages held, 2.1 MiB.
const FIXED_ALLOWANCE: u64 = 4 << 20;

fn summary(stdout: &str) -> HashMap<String, f64> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn slow_consumer_is_bounded_in_order_and_holds_the_sender_back() {
    let out = Command::new(env!("CARGO_BIN_EXE_slow_consumer"))
        .args(["--count", "60000", "--rate", "30000", "--transport", "unix"])
        .output()
        .expect("run slow_consumer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let s = summary(&stdout);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in:\n{stdout}"));

    // Every message, in order, intact.
    assert_eq!(get("received"), 60000.0, "{stdout}");
    assert_eq!(get("in_order"), 1.0, "{stdout}");
    assert_eq!(get("payloads_intact"), 1.0, "{stdout}");

    // Core's own bounds held: the port queue (1024) and what the link held behind it (8192).
    assert!(get("max_queue") <= 1024.0, "{stdout}");
    assert!(get("max_held_msgs") <= 8192.0, "{stdout}");

    // The receiver's RSS grew by no more than what it may hold, plus the fixed allowance.
    // Unbounded, it would have taken all 60,000 (>= 11 MB of payloads and envelopes).
    let per_msg = get("item_bytes") + ENVELOPES_PER_HELD_MSG as f64 * get("envelope_struct");
    let bound = get("bound_msgs") * per_msg + FIXED_ALLOWANCE as f64;
    assert!(
        get("receiver_growth") <= bound,
        "receiver grew {} B, bound {bound} B\n{stdout}",
        get("receiver_growth")
    );

    // Held back: the last send can only complete once the receiver has taken all but what
    // the queues and window hold (~9,200 of 60,000, ~0.3 s of the ~2 s drain), so sends
    // take most of the drain time; a sender not held back would finish in a few ms.
    assert!(
        get("send_secs") >= 0.5 * get("drain_secs"),
        "sends took {} s, drain {} s\n{stdout}",
        get("send_secs"),
        get("drain_secs")
    );
}
