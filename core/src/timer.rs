//! A fixed table of deadlines keyed by a small enum, one table per machine.
//!
//! Timers are armed and cleared only by state transitions (`handle_*`), never while output
//! is drained; [`Timers::expired`] clears what it returns, so a deadline that has been
//! handled is never reported again.

use crate::time::Instant;

/// An enum usable as a timer key.
pub trait TimerKey: Copy {
    /// Number of keys.
    const COUNT: usize;
    /// Dense index of this key, below `COUNT`.
    fn index(self) -> usize;
    /// The key with this index.
    fn from_index(i: usize) -> Self;
}

/// Deadlines indexed by `K`; `N` must equal `K::COUNT`.
#[derive(Clone, Debug)]
pub struct Timers<K, const N: usize> {
    at: [Option<Instant>; N],
    /// Some deadline changed since the last [`Timers::take_changed`].
    changed: bool,
    _key: core::marker::PhantomData<K>,
}

impl<K: TimerKey, const N: usize> Default for Timers<K, N> {
    fn default() -> Self {
        Timers {
            at: [None; N],
            changed: true,
            _key: core::marker::PhantomData,
        }
    }
}

impl<K: TimerKey, const N: usize> Timers<K, N> {
    /// Arms (or moves) a timer.
    pub fn set(&mut self, key: K, at: Instant) {
        self.put(key.index(), Some(at));
    }

    fn put(&mut self, i: usize, at: Option<Instant>) {
        if self.at[i] != at {
            self.at[i] = at;
            self.changed = true;
        }
    }

    /// Makes the next [`Timers::take_changed`] true.
    pub fn mark_changed(&mut self) {
        self.changed = true;
    }

    /// Whether any deadline changed since the last call: the owner's earliest deadline
    /// needs recording again only then.
    #[inline]
    pub fn take_changed(&mut self) -> bool {
        core::mem::take(&mut self.changed)
    }
    /// Arms a timer unless it is armed already.
    pub fn set_if_unset(&mut self, key: K, at: Instant) {
        if self.at[key.index()].is_none() {
            self.put(key.index(), Some(at));
        }
    }
    /// Disarms a timer.
    pub fn clear(&mut self, key: K) {
        self.put(key.index(), None);
    }
    /// The deadline of a timer.
    pub fn get(&self, key: K) -> Option<Instant> {
        self.at[key.index()]
    }
    /// Whether a timer is armed.
    pub fn is_set(&self, key: K) -> bool {
        self.at[key.index()].is_some()
    }
    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
    /// Disarms and returns one timer whose deadline is at or before `now`.
    pub fn expired(&mut self, now: Instant) -> Option<K> {
        let i = self
            .at
            .iter()
            .position(|t| matches!(t, Some(t) if *t <= now))?;
        self.put(i, None);
        Some(K::from_index(i))
    }
    /// Disarms everything.
    pub fn clear_all(&mut self) {
        for i in 0..N {
            self.put(i, None);
        }
    }
}

/// Declares a timer-key enum with its [`TimerKey`] impl.
#[allow(unused_macros)] // used by the alloc machines
macro_rules! timer_keys {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $v:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name { $($(#[$vm])* $v),+ }
        impl $crate::timer::TimerKey for $name {
            const COUNT: usize = [$($name::$v),+].len();
            fn index(self) -> usize { self as usize }
            fn from_index(i: usize) -> Self {
                const ALL: &[$name] = &[$($name::$v),+];
                ALL[i]
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use timer_keys;

#[cfg(test)]
mod tests {
    use super::*;

    timer_keys! {
        enum K { A, B, C }
    }

    #[test]
    fn expired_clears_and_next_moves_on() {
        let mut t: Timers<K, 3> = Timers::default();
        t.set(K::B, Instant::from_micros(20));
        t.set(K::A, Instant::from_micros(10));
        assert_eq!(t.next(), Some(Instant::from_micros(10)));
        assert_eq!(t.expired(Instant::from_micros(9)), None);
        assert_eq!(t.expired(Instant::from_micros(15)), Some(K::A));
        assert_eq!(t.expired(Instant::from_micros(15)), None);
        assert_eq!(t.next(), Some(Instant::from_micros(20)));
        t.clear(K::B);
        assert_eq!(t.next(), None);
        assert!(!t.is_set(K::C));
    }
}
