//! Task bookkeeping that works on any executor: a [`TaskSet`] counts the tasks it started,
//! can refuse new ones, and aborts the live ones by waking them and dropping their bodies on
//! their next poll (so an abort needs nothing from the runtime but that it keeps polling).

use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::runtime::BoxFuture;
use crate::sync::{lock, Watch};

/// One tracked task's abort switch.
struct Slot {
    aborted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        let waker = lock(&self.waker).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A group of tasks that can be counted, closed, and aborted.
pub(crate) struct TaskSet {
    /// Tasks not yet finished or dropped.
    live: Watch<usize>,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next: AtomicU64,
    /// No new tasks are accepted.
    closed: AtomicBool,
    /// What the set is, for logs.
    what: &'static str,
}

impl TaskSet {
    pub(crate) fn new(what: &'static str) -> Arc<Self> {
        Arc::new(TaskSet {
            live: Watch::new(0),
            slots: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            what,
        })
    }

    /// Wraps `fut` as a task of this set, for the runtime to spawn. `None` once the set is
    /// closed (the future is dropped).
    pub(crate) fn track(self: &Arc<Self>, fut: BoxFuture) -> Option<BoxFuture> {
        let slot = Arc::new(Slot {
            aborted: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        {
            // Checked under the lock so `abort_all` cannot miss a task.
            let mut slots = lock(&self.slots);
            if self.closed.load(Ordering::SeqCst) {
                return None;
            }
            slots.insert(key, slot.clone());
            self.live.update(|n| n + 1);
        }
        Some(Box::pin(Tracked {
            fut: Some(fut),
            seen: None,
            slot,
            key,
            set: self.clone(),
        }))
    }

    /// Refuses new tasks from now on.
    pub(crate) fn close(&self) {
        let _slots = lock(&self.slots);
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Closes the set and aborts every live task. Returns how many were live.
    pub(crate) fn abort_all(&self) -> usize {
        let slots: Vec<Arc<Slot>> = {
            let slots = lock(&self.slots);
            self.closed.store(true, Ordering::SeqCst);
            slots.values().cloned().collect()
        };
        for s in &slots {
            s.abort();
        }
        slots.len()
    }

    /// Tasks started and not yet ended.
    pub(crate) fn live(&self) -> usize {
        self.live.get()
    }

    /// Resolves once no task of the set is left.
    pub(crate) async fn idle(&self) {
        self.live.wait_until(|n| *n == 0).await;
    }
}

/// A task body with an abort switch; reports a panic instead of unwinding into the executor.
struct Tracked {
    fut: Option<BoxFuture>,
    /// The waker last given to `slot`.
    seen: Option<Waker>,
    slot: Arc<Slot>,
    key: u64,
    set: Arc<TaskSet>,
}

impl Future for Tracked {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // The abort switch needs the task's waker; it rarely changes, so the copy kept here
        // spares the lock on nearly every poll.
        if !self.seen.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *lock(&self.slot.waker) = Some(cx.waker().clone());
            self.seen = Some(cx.waker().clone());
        }
        if self.slot.aborted.load(Ordering::SeqCst) {
            self.fut = None;
            return Poll::Ready(());
        }
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Ready(());
        };
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                self.fut = None;
                Poll::Ready(())
            }
            Err(payload) => {
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text payload".to_string());
                tracing::error!(set = self.set.what, panic = %text, "a proc task panicked");
                self.fut = None;
                Poll::Ready(())
            }
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Drop the body first, so that whatever it holds (a socket, a listener) is released
        // before the set reports the task gone.
        self.fut = None;
        lock(&self.set.slots).remove(&self.key);
        self.set.live.update(|n| n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{block_on, Queue};

    #[test]
    fn counts_aborts_and_refuses_after_close() {
        let set = TaskSet::new("test");
        let q: Arc<Queue<()>> = Arc::new(Queue::new());
        let q2 = q.clone();
        let task = set
            .track(Box::pin(async move {
                q2.pop().await;
            }))
            .expect("open set");
        assert_eq!(set.live(), 1);
        let runner = std::thread::spawn(move || block_on(task));
        assert_eq!(set.abort_all(), 1);
        runner.join().expect("runner");
        assert_eq!(set.live(), 0);
        block_on(set.idle());
        assert!(set.track(Box::pin(async {})).is_none());
    }

    #[test]
    fn a_panicking_task_ends_and_is_counted_out() {
        let set = TaskSet::new("test");
        let task = set
            .track(Box::pin(async { panic!("task boom") }))
            .expect("open set");
        block_on(task);
        assert_eq!(set.live(), 0);
    }
}
