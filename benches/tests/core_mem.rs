//! The core-only scenarios move what they claim to, in order, and fail loudly otherwise.

use procwire_benches::core_idle::IdleNet;
use procwire_benches::core_mem::{CorePipe, InOrder, MemcpyTwin, Pool, B};
use procwire_benches::SMALL;

#[test]
fn pipe_delivers_every_message_in_order() {
    let mut pipe = CorePipe::new(SMALL);
    let before = pipe.sent();
    pipe.run(3_000);
    assert_eq!(pipe.sent(), before + 3_000);
    let ((a_data, _), (_, b_acks)) = pipe.frames();
    assert!(a_data >= pipe.sent(), "one data frame per message at least");
    assert!(b_acks > 0, "the receiver acknowledges");
    // 64 B of payload plus a frame header and link-relative metadata.
    let per_msg = pipe.measure_wire_bytes(2_000);
    assert!(
        per_msg > SMALL as f64 && per_msg < 2.0 * SMALL as f64,
        "{per_msg}"
    );
}

#[test]
#[should_panic(expected = "out of order or lost")]
fn a_missing_message_is_caught() {
    let pool = Pool::new(0, SMALL);
    let mut check = InOrder::new(B, SMALL, 2);
    check.check(B, &pool.get(0));
    check.check(B, &pool.get(2));
}

#[test]
fn memcpy_twin_moves_and_checks_its_frames() {
    let mut twin = MemcpyTwin::new(82, 256);
    assert_eq!(twin.frame_len(), 82);
    twin.run(1_000);
    twin.run(7);
}

#[test]
fn idle_sessions_stay_up_beside_the_busy_link() {
    let mut net = IdleNet::new(20, SMALL);
    assert_eq!(net.k(), 20);
    net.run(2_000);
    let rounds = net.timeout_rounds(30);
    assert_eq!(rounds.samples.len(), 30);
    assert!(
        rounds.transmits_per_round() > 0.0,
        "keepalives or acks written"
    );
    // Still working after a second of heartbeats.
    net.run(500);
}
