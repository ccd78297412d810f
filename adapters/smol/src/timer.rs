//! Deadlines kept off async-io's reactor: one process-wide thread sleeps until the earliest
//! armed deadline and wakes whoever waits on it.
//!
//! Why not async-io's `Timer`: every time async-io's reactor blocks (`async_io::block_on`
//! with nothing to do, or its own thread), it programs its timer file descriptor with the
//! time left to the reactor's earliest timer, and clears it again on the next non-blocking
//! poll. A proc almost always has a deadline a few milliseconds away (core's ack delay), so
//! with async-io timers every idle moment of the executor re-programmed a kernel timer
//! twice. Inside a VM that is two exits to the hypervisor, and it measured 2.2x the CPU time
//! of a one-thread 64 B round trip between two procs (14 µs against 31 µs). With the
//! deadlines here the reactor has no timers and blocks without any.
//!
//! Each [`Deadline`] is a slot; arming it pushes an entry (the instant and the slot's arm
//! count) on a min-heap shared with the thread, and wakes the thread only when the new
//! entry is the earliest. Entries of re-armed or dropped slots are skipped when they come
//! up, and dropped in bulk once they outnumber the live ones. Whether a deadline passed is
//! read from the clock, never from the thread, so a deadline that passed is ready at once
//! and stays ready until it is armed again.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Heap sizes below this are never compacted.
const COMPACT_FLOOR: usize = 64;

/// One waiter's side of a deadline.
struct Slot {
    /// How many times the deadline was armed: entries of older arms are stale.
    arms: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

/// A heap entry: `slot`'s arm number `arm` is due at `at`.
struct Entry {
    at: Instant,
    arm: u64,
    slot: Weak<Slot>,
}

impl Entry {
    /// The slot, if it is alive and still armed for this entry.
    fn live(&self) -> Option<Arc<Slot>> {
        self.slot
            .upgrade()
            .filter(|s| s.arms.load(Ordering::Acquire) == self.arm)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.at.cmp(&other.at)
    }
}

struct Heap {
    entries: BinaryHeap<Reverse<Entry>>,
    /// Compact when the heap grows past this.
    compact_at: usize,
}

/// The heap and the thread that serves it.
struct Sleeper {
    heap: Mutex<Heap>,
    changed: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sleeper {
    /// The process's sleeper; `None` if its thread could not be started.
    fn get() -> Option<&'static Sleeper> {
        static SLEEPER: OnceLock<Option<&'static Sleeper>> = OnceLock::new();
        *SLEEPER.get_or_init(|| {
            let sleeper: &'static Sleeper = Box::leak(Box::new(Sleeper {
                heap: Mutex::new(Heap {
                    entries: BinaryHeap::new(),
                    compact_at: COMPACT_FLOOR,
                }),
                changed: Condvar::new(),
            }));
            match std::thread::Builder::new()
                .name("procwire-smol-timer".into())
                .spawn(move || sleeper.serve())
            {
                Ok(_) => Some(sleeper),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the timer thread; using async-io timers");
                    None
                }
            }
        })
    }

    fn push(&self, entry: Entry) {
        let mut heap = lock(&self.heap);
        let earliest = heap
            .entries
            .peek()
            .is_none_or(|Reverse(top)| entry.at < top.at);
        heap.entries.push(Reverse(entry));
        if heap.entries.len() > heap.compact_at {
            heap.entries.retain(|Reverse(e)| e.live().is_some());
            heap.compact_at = (heap.entries.len() * 2).max(COMPACT_FLOOR);
        }
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// The thread: wakes the waiters of due deadlines, then sleeps until the next one.
    fn serve(&self) {
        let mut due = Vec::new();
        let mut heap = lock(&self.heap);
        loop {
            let now = Instant::now();
            while let Some(Reverse(top)) = heap.entries.peek() {
                if top.at > now {
                    break;
                }
                if let Some(Reverse(e)) = heap.entries.pop() {
                    if let Some(w) = e.live().and_then(|s| lock(&s.waker).take()) {
                        due.push(w);
                    }
                }
            }
            if !due.is_empty() {
                drop(heap);
                due.drain(..).for_each(Waker::wake);
                heap = lock(&self.heap);
                continue;
            }
            heap = match heap.entries.peek() {
                None => self
                    .changed
                    .wait(heap)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(Reverse(top)) => {
                    let left = top.at.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(heap, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// A re-armable deadline on the process's timer thread.
pub(crate) struct Deadline {
    slot: Arc<Slot>,
    at: Option<Instant>,
    sleeper: &'static Sleeper,
}

impl Deadline {
    /// A deadline that is not armed; `None` if the timer thread cannot run.
    pub(crate) fn new() -> Option<Self> {
        Some(Deadline {
            slot: Arc::new(Slot {
                arms: AtomicU64::new(0),
                waker: Mutex::new(None),
            }),
            at: None,
            sleeper: Sleeper::get()?,
        })
    }

    /// Arms the deadline for `at`, replacing whatever it was armed for.
    pub(crate) fn reset(&mut self, at: Instant) {
        let arm = self.slot.arms.fetch_add(1, Ordering::AcqRel) + 1;
        self.at = Some(at);
        if at <= Instant::now() {
            return; // due already: `poll_elapsed` says so without the thread
        }
        self.sleeper.push(Entry {
            at,
            arm,
            slot: Arc::downgrade(&self.slot),
        });
    }

    /// `Ready` once the armed instant has passed (and until the next reset); never before
    /// the deadline is armed.
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else {
            return Poll::Pending;
        };
        if Instant::now() >= at {
            return Poll::Ready(());
        }
        {
            let mut w = lock(&self.slot.waker);
            match &*w {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        // The thread may have come by between the first look and the registration.
        if Instant::now() >= at {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    #[test]
    fn deadlines_fire_in_order_and_rearming_moves_them() {
        futures_lite::future::block_on(async {
            let start = Instant::now();
            let mut late = Deadline::new().expect("timer thread");
            let mut early = Deadline::new().expect("timer thread");
            late.reset(start + Duration::from_millis(60));
            early.reset(start + Duration::from_millis(20));
            poll_fn(|cx| early.poll_elapsed(cx)).await;
            let e = start.elapsed();
            assert!(e >= Duration::from_millis(20), "fired early: {e:?}");
            let mut cx = Context::from_waker(Waker::noop());
            assert!(
                late.poll_elapsed(&mut cx).is_pending(),
                "the later one waits"
            );
            // Moved later: the entry of the first arm no longer fires it.
            late.reset(start + Duration::from_millis(120));
            poll_fn(|cx| late.poll_elapsed(cx)).await;
            assert!(start.elapsed() >= Duration::from_millis(120));
            // Stays ready until armed again.
            assert!(late.poll_elapsed(&mut cx).is_ready());
            late.reset(Instant::now() + Duration::from_secs(3600));
            assert!(late.poll_elapsed(&mut cx).is_pending());
        });
    }

    #[test]
    fn many_rearms_keep_the_heap_bounded() {
        let mut d: Vec<Deadline> = (0..4)
            .map(|_| Deadline::new().expect("timer thread"))
            .collect();
        let far = Instant::now() + Duration::from_secs(3600);
        for i in 0..10_000u32 {
            d[(i % 4) as usize].reset(far + Duration::from_micros(u64::from(i)));
        }
        let sleeper = Sleeper::get().expect("timer thread");
        let len = lock(&sleeper.heap).entries.len();
        // Other tests' deadlines may share the heap; stale entries of these four are gone.
        assert!(len < 1_000, "{len} entries for 4 live deadlines");
    }
}
