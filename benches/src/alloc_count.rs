//! A global allocator that counts allocations per thread, for `allocs_per_msg`.
//!
//! Install it in a binary or test with
//! `#[global_allocator] static ALLOC: CountingAlloc = CountingAlloc;`, then read
//! [`thread_allocs`] before and after the code of interest (on the same thread). Counts are
//! per thread so that other threads (the test harness running tests in parallel, runtime
//! helpers) do not pollute them. Every `alloc`, `alloc_zeroed` and `realloc` counts as one
//! allocation; frees are not counted.
//!
//! It also keeps, per thread, the bytes allocated and not yet freed by that thread and their
//! peak ([`thread_heap`], [`reset_thread_heap_peak`]): what was asked of the allocator,
//! whether or not its pages were ever touched (the resident set only shows touched pages).
//! A block freed by another thread than the one that allocated it moves the figures of the
//! freeing thread; on a current-thread runtime everything stays on one thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// Bytes allocated minus bytes freed by this thread, and the peak of that.
    static HEAP: Cell<(isize, isize)> = const { Cell::new((0, 0)) };
}

fn bump() {
    // `try_with`: during thread teardown the slot may be gone; such allocations are not
    // in any measured window.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn heap_add(bytes: isize) {
    let _ = HEAP.try_with(|h| {
        let (live, peak) = h.get();
        let live = live.wrapping_add(bytes);
        h.set((live, peak.max(live)));
    });
}

/// The system allocator, counting.
pub struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract; the
// counter is a const-initialised thread-local `Cell` that never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        heap_add(layout.size() as isize);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        heap_add(layout.size() as isize);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        heap_add(-(layout.size() as isize));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        heap_add(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations made by this thread so far (0 forever if [`CountingAlloc`] is not the
/// global allocator).
pub fn thread_allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Bytes this thread has allocated and not freed, and the peak of that since the thread
/// began or [`reset_thread_heap_peak`] (both 0 if [`CountingAlloc`] is not installed).
pub fn thread_heap() -> (isize, isize) {
    HEAP.with(Cell::get)
}

/// Restarts this thread's heap peak at its current live bytes.
pub fn reset_thread_heap_peak() {
    HEAP.with(|h| {
        let (live, _) = h.get();
        h.set((live, live));
    });
}

/// Whether [`CountingAlloc`] is installed (an allocation is seen by the counter).
pub fn is_counting() -> bool {
    let before = thread_allocs();
    std::hint::black_box(Box::new(0u64));
    thread_allocs() > before
}

/// Runs `f` and returns its result with the allocations it made on this thread.
pub fn count<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = thread_allocs();
    let r = f();
    (r, thread_allocs() - before)
}
