//! Allocations per message of the core-only pipelined bench in steady state.
//!
//! Its own test binary, so its `#[global_allocator]` is the counting one; counts are per
//! thread, so other tests cannot disturb them.

use procwire_benches::alloc_count::{count, is_counting, CountingAlloc};
use procwire_benches::core_mem::CorePipe;
use procwire_benches::SMALL;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Upper bound on allocations per 64-byte message, A→B through both core procs (send,
/// encode, transmit, decode, deliver, acknowledgements), in steady state.
///
/// The target (design note §8) is **0 beyond the payload's own buffer**; the bench's
/// payloads are slices of one pre-built buffer, so the target here is 0. Core's redesign
/// toward it is under way: this bound is today's measured figure (0.0185 per message, down
/// from 0.0706 before chunked transmission) with a little headroom, so that a regression
/// fails now. Tighten it as core improves.
const MAX_ALLOCS_PER_MSG: f64 = 0.03;

const MESSAGES: u64 = 10_000;

#[test]
fn steady_state_allocations_per_message_stay_within_the_bound() {
    assert!(is_counting(), "the counting allocator is installed");
    let mut pipe = CorePipe::new(SMALL);
    // More warm-up: buffers and queues reach their steady sizes.
    pipe.run(MESSAGES);
    let (_, allocs) = count(|| pipe.run(MESSAGES));
    let per_msg = allocs as f64 / MESSAGES as f64;
    println!("{allocs} allocations for {MESSAGES} messages: {per_msg:.4} per message");
    assert!(
        per_msg <= MAX_ALLOCS_PER_MSG,
        "{per_msg:.4} allocations per message (bound {MAX_ALLOCS_PER_MSG})"
    );
}
