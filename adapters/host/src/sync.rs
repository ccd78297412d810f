//! Small waker-based primitives used between the driver and its users.
//!
//! Runtime-neutral (std only): they work under tokio, smol or any executor, which is what lets
//! the typed port handles, instances and the actor loop be shared between adapters.
//! Locks here are held only for a few instructions and never across an `.await`.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Locks `m`, ignoring poisoning: every critical section here leaves the data consistent
/// (no user code runs under these locks), so a panic elsewhere does not invalidate it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a [`Queue::push`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The consumer is gone or the queue was closed.
    Closed,
    /// The queue is at its capacity.
    Full,
}

/// Why [`Queue::try_pop`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PopError {
    /// Nothing queued now.
    Empty,
    /// Nothing queued and nothing will be.
    Closed,
}

struct QueueState<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
    /// No more pushes will be accepted (producer side finished).
    closed: bool,
    /// The consumer is gone; pushes are refused.
    consumer_gone: bool,
}

impl<T> QueueState<T> {
    /// Registers the consumer's waker, unless it is the one registered already.
    fn wait(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }
}

/// An unbounded (or capped) multi-producer, single-consumer queue.
pub(crate) struct Queue<T> {
    state: Mutex<QueueState<T>>,
    cap: usize,
}

impl<T> Queue<T> {
    /// An unbounded queue.
    pub(crate) fn new() -> Self {
        Self::with_capacity_limit(usize::MAX)
    }

    /// A queue that refuses pushes beyond `cap` queued items.
    pub(crate) fn with_capacity_limit(cap: usize) -> Self {
        Queue {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                waker: None,
                closed: false,
                consumer_gone: false,
            }),
            cap,
        }
    }

    /// Appends `item`, waking the consumer. Gives it back if refused.
    pub(crate) fn push(&self, item: T) -> Result<(), (T, PushError)> {
        let waker = {
            let mut st = lock(&self.state);
            if st.closed || st.consumer_gone {
                return Err((item, PushError::Closed));
            }
            if st.items.len() >= self.cap {
                return Err((item, PushError::Full));
            }
            st.items.push_back(item);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Appends all of `items` (leaving it empty) under one lock, and hands back the
    /// consumer's waker, if it waits, for the caller to wake once it holds no lock of its
    /// own. If refused, nothing is taken.
    pub(crate) fn push_all(&self, items: &mut VecDeque<T>) -> Result<Option<Waker>, PushError> {
        let mut st = lock(&self.state);
        if st.closed || st.consumer_gone {
            return Err(PushError::Closed);
        }
        if st.items.len().saturating_add(items.len()) > self.cap {
            return Err(PushError::Full);
        }
        if st.items.is_empty() {
            std::mem::swap(&mut st.items, items);
        } else {
            st.items.append(items);
        }
        Ok(st.waker.take())
    }

    /// No more items will come; the consumer drains what is queued, then sees the end.
    pub(crate) fn close(&self) {
        let waker = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The consumer is going away: refuse further pushes and hand back what is queued.
    pub(crate) fn consumer_gone(&self) -> VecDeque<T> {
        let mut st = lock(&self.state);
        st.consumer_gone = true;
        st.waker = None;
        std::mem::take(&mut st.items)
    }

    /// Takes the next item without waiting.
    pub(crate) fn try_pop(&self) -> Result<T, PopError> {
        let mut st = lock(&self.state);
        match st.items.pop_front() {
            Some(item) => Ok(item),
            None if st.closed => Err(PopError::Closed),
            None => Err(PopError::Empty),
        }
    }

    /// Takes the next item, or registers the consumer's waker. `Ready(None)` once closed and
    /// drained.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = lock(&self.state);
        if let Some(item) = st.items.pop_front() {
            return Poll::Ready(Some(item));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        st.wait(cx);
        Poll::Pending
    }

    /// Moves every queued item into `out` (which should be empty: its buffer is swapped in,
    /// so nothing allocates), or registers the consumer's waker. One lock for a whole batch.
    /// `Ready(false)` once closed and drained.
    pub(crate) fn poll_take_all(&self, cx: &mut Context<'_>, out: &mut VecDeque<T>) -> Poll<bool> {
        let mut st = lock(&self.state);
        if !st.items.is_empty() {
            std::mem::swap(&mut st.items, out);
            return Poll::Ready(true);
        }
        if st.closed {
            return Poll::Ready(false);
        }
        st.wait(cx);
        Poll::Pending
    }

    /// [`Queue::poll_take_all`] without waiting.
    pub(crate) fn try_take_all(&self, out: &mut VecDeque<T>) -> Result<(), PopError> {
        let mut st = lock(&self.state);
        if !st.items.is_empty() {
            std::mem::swap(&mut st.items, out);
            return Ok(());
        }
        match st.closed {
            true => Err(PopError::Closed),
            false => Err(PopError::Empty),
        }
    }

    /// Waits for the next item; `None` once closed and drained.
    pub(crate) async fn pop(&self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// Whether there is something to take now, or the queue is closed.
    pub(crate) fn has_work(&self) -> bool {
        let st = lock(&self.state);
        !st.items.is_empty() || st.closed
    }

    /// Items queued now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).items.len()
    }
}

struct WatchState<T> {
    value: T,
    wakers: Vec<Waker>,
}

/// A value that many can read and wait on.
pub(crate) struct Watch<T> {
    state: Mutex<WatchState<T>>,
}

impl<T: Clone> Watch<T> {
    /// A cell holding `value`.
    pub(crate) fn new(value: T) -> Self {
        Watch {
            state: Mutex::new(WatchState {
                value,
                wakers: Vec::new(),
            }),
        }
    }

    /// The current value.
    pub(crate) fn get(&self) -> T {
        lock(&self.state).value.clone()
    }

    /// Replaces the value with `f(old)`, waking every waiter. Returns the new value.
    pub(crate) fn update(&self, f: impl FnOnce(&T) -> T) -> T {
        let (wakers, v) = {
            let mut st = lock(&self.state);
            st.value = f(&st.value);
            (std::mem::take(&mut st.wakers), st.value.clone())
        };
        for w in wakers {
            w.wake();
        }
        v
    }

    /// Sets the value, waking every waiter.
    pub(crate) fn set(&self, value: T) {
        self.update(|_| value);
    }

    /// `Ready(value)` once `pred(value)` holds, otherwise registers the waker.
    pub(crate) fn poll_until(&self, cx: &mut Context<'_>, pred: impl Fn(&T) -> bool) -> Poll<T> {
        let mut st = lock(&self.state);
        if pred(&st.value) {
            return Poll::Ready(st.value.clone());
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits until `pred(value)` holds and returns that value.
    pub(crate) async fn wait_until(&self, pred: impl Fn(&T) -> bool) -> T {
        std::future::poll_fn(|cx| self.poll_until(cx, &pred)).await
    }
}

/// A wake-up signal with one stored permit (like a one-slot semaphore): [`Signal::notify`]
/// sets it and wakes the waiter, [`Signal::wait`] consumes it. A notify with nobody waiting
/// is kept for the next wait; repeated notifies collapse into one.
pub(crate) struct Signal {
    state: Mutex<(bool, Option<Waker>)>,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Signal {
            state: Mutex::new((false, None)),
        }
    }

    /// Sets the permit and wakes the waiter.
    pub(crate) fn notify(&self) {
        let waker = {
            let mut st = lock(&self.state);
            st.0 = true;
            st.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Consumes the permit, or registers the waker.
    pub(crate) fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = lock(&self.state);
        if std::mem::take(&mut st.0) {
            return Poll::Ready(());
        }
        match &st.1 {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.1 = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for (and consumes) the permit.
    pub(crate) async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll_wait(cx)).await
    }
}

/// A future that turns a panic in `inner` into `Err(message)`. It borrows `inner` pinned
/// where the caller keeps it (`std::pin::pin!` in an async fn: inside the caller's own
/// future), so wrapping an actor's handler for one message allocates nothing.
pub(crate) struct CatchUnwind<'a, F> {
    inner: Pin<&'a mut F>,
}

impl<'a, F: Future> CatchUnwind<'a, F> {
    pub(crate) fn new(inner: Pin<&'a mut F>) -> Self {
        CatchUnwind { inner }
    }
}

impl<F: Future> Future for CatchUnwind<'_, F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => {
                let text = if let Some(s) = payload.downcast_ref::<&str>() {
                    (*s).to_string()
                } else if let Some(s) = payload.downcast_ref::<String>() {
                    s.clone()
                } else {
                    "panic with a non-text payload".to_string()
                };
                Poll::Ready(Err(text))
            }
        }
    }
}

/// A minimal executor for unit tests: polls `fut` on this thread, parking between wake-ups.
#[cfg(test)]
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::Wake;

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn queue_orders_closes_and_refuses_after_consumer_leaves() {
        let q = Queue::new();
        assert!(q.push(1).is_ok());
        assert!(q.push(2).is_ok());
        assert_eq!(q.try_pop(), Ok(1));
        q.close();
        assert_eq!(q.push(3), Err((3, PushError::Closed)));
        assert_eq!(q.try_pop(), Ok(2));
        assert_eq!(q.try_pop(), Err(PopError::Closed));

        let q = Queue::new();
        assert!(q.push(7).is_ok());
        assert_eq!(q.consumer_gone().into_iter().collect::<Vec<_>>(), vec![7]);
        assert!(matches!(q.push(8), Err((8, PushError::Closed))));
    }

    #[test]
    fn capped_queue_reports_full() {
        let q = Queue::with_capacity_limit(1);
        assert!(q.push('a').is_ok());
        assert!(matches!(q.push('b'), Err(('b', PushError::Full))));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn pop_wakes_on_push_from_another_thread() {
        let q = Arc::new(Queue::new());
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(q2.push(42u32).is_ok());
        });
        assert_eq!(block_on(q.pop()), Some(42));
        t.join().expect("pusher");
    }

    #[test]
    fn watch_wakes_waiters() {
        let w = Arc::new(Watch::new(0u32));
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            w2.set(1);
            std::thread::sleep(std::time::Duration::from_millis(20));
            w2.update(|v| v + 1);
        });
        assert_eq!(block_on(w.wait_until(|v| *v >= 2)), 2);
        t.join().expect("setter");
    }

    #[test]
    fn signal_keeps_one_permit() {
        let s = Arc::new(Signal::new());
        s.notify();
        s.notify();
        block_on(s.wait());
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            s2.notify();
        });
        block_on(s.wait());
        t.join().expect("notifier");
    }

    #[test]
    fn catch_unwind_reports_panics() {
        let r: Result<(), String> =
            block_on(CatchUnwind::new(std::pin::pin!(async { panic!("boom") })));
        assert_eq!(r, Err("boom".to_string()));
        let ok: Result<u8, String> = block_on(CatchUnwind::new(std::pin::pin!(async { 5 })));
        assert_eq!(ok, Ok(5));
    }
}
