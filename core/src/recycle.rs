//! Reusing data-path buffers once nothing refers to their memory any more.
//!
//! The buffers on the data path hand out `Bytes` slices of their memory without copying:
//! the chunk store's chunks (frames, also kept for retransmission), the frame decoder's
//! body buffer (payloads are slices of it) and the output queue's buffer of control frames.
//! When such a buffer is full, the slices taken from it may still be alive (queued,
//! unacknowledged, in the driver's hands), so it cannot simply be rewound.
//!
//! A [`Recycler`] keeps the handles of the last few full buffers (at most `spares`, a
//! named config value: [`crate::config::Config::spare_buffers`]). When the current buffer
//! is full, the oldest spare is taken back if every slice of it has been dropped
//! (`BytesMut::try_reclaim`: its reference count is one, the handle itself), and only
//! otherwise is a new block allocated. In steady state the slices of a block are dropped
//! long before the block comes round again, so a busy link allocates nothing.
//!
//! Bound: one user holds at most `1 + spares` blocks of its own beyond what outstanding
//! slices keep alive; a spare whose memory is still referenced is not counted twice (the
//! slices own it, the handle only shares it). The default of 2 spares covers a window of
//! traffic in flight plus one block being filled; 0 turns recycling off.

use alloc::collections::VecDeque;

use bytes::BytesMut;

/// Handles of retired buffers, oldest first, to take back once unreferenced.
#[derive(Debug, Default)]
pub(crate) struct Recycler {
    spares: VecDeque<BytesMut>,
    limit: usize,
}

impl Recycler {
    /// Keeps at most `limit` spare handles.
    pub(crate) fn new(limit: usize) -> Self {
        Recycler {
            spares: VecDeque::with_capacity(limit),
            limit,
        }
    }

    /// Replaces `buf` (empty: the caller has taken what it held) by a buffer with room for
    /// `want` bytes: the oldest spare if nothing refers to its memory any more, otherwise a
    /// new block of at least `block` bytes. The old buffer's handle becomes a spare.
    pub(crate) fn renew(&mut self, buf: &mut BytesMut, want: usize, block: usize) {
        let old = core::mem::take(buf);
        if let Some(front) = self.spares.front_mut() {
            // Ask for a whole block, so a reclaimed spare starts again at its beginning.
            if front.try_reclaim(want.max(block)) {
                *buf = self.spares.pop_front().unwrap_or_default();
            } else if self.spares.len() >= self.limit {
                // Still referenced: its slices own the memory; stop tracking it.
                self.spares.pop_front();
            }
        }
        if buf.capacity() < want {
            *buf = BytesMut::with_capacity(want.max(block));
        }
        if self.limit > 0 {
            if self.spares.len() >= self.limit {
                self.spares.pop_front();
            }
            self.spares.push_back(old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_comes_back_once_its_slices_are_dropped() {
        let mut r = Recycler::new(1);
        let mut buf = BytesMut::new();
        r.renew(&mut buf, 16, 64);
        buf.extend_from_slice(b"first");
        let first = buf.split().freeze();
        let block = first.as_ptr();
        r.renew(&mut buf, 16, 64);
        assert_ne!(buf.as_ptr(), block, "the first block is still referenced");
        buf.extend_from_slice(b"second");
        let _second = buf.split().freeze();
        drop(first);
        r.renew(&mut buf, 16, 64);
        assert_eq!(buf.as_ptr(), block, "the first block is reused");
        assert_eq!(buf.capacity(), 64);
    }

    #[test]
    fn no_spares_keeps_no_handles() {
        let mut r = Recycler::new(0);
        let mut buf = BytesMut::new();
        r.renew(&mut buf, 8, 8);
        r.renew(&mut buf, 8, 8);
        assert!(buf.capacity() >= 8);
        assert!(r.spares.is_empty());
    }
}
