//! The chunk store of an outbound link: data frames encoded once, back to back, into
//! chunks that are both what the driver writes and what is kept for retransmission.
//!
//! Frames are appended to an open chunk (a `BytesMut` of `chunk_bytes` capacity). Handing
//! frames out *seals* what is in the open chunk into a run (a frozen `Bytes` over the same
//! memory, no copy) and gives the driver a slice of it; the open chunk keeps the rest of its
//! capacity. Acknowledgements release frames from the front; a run's memory is returned
//! when its last frame is released. After a reconnect, transmission resumes at any sequence
//! number by slicing the runs from that frame on: nothing is encoded again.
//!
//! A full chunk is replaced through a [`Recycler`]: the chunk retired `spare_buffers`
//! renewals ago is taken back when every frame of it has been acknowledged and every slice
//! the driver was given has been dropped, so a busy link reuses a few chunks instead of
//! allocating one per `chunk_bytes` of traffic. A link holds at most `1 + spare_buffers`
//! chunks of its own beyond those its unacknowledged frames keep alive.
//!
//! Sequence numbers are implicit: the store holds frames `base..end`, and knows each one's
//! length, so it can find any frame's offset in its run.
//!
//! # Large payloads are kept apart
//!
//! A payload of at least [`APART_MIN`] bytes (or a quarter of a chunk, if less) is not copied into the chunk: the frame's
//! header and metadata go into the chunk as usual ([`ChunkStore::commit_apart`]), the run is
//! sealed right after them, and the payload is kept as the caller's own `Bytes`. A frame
//! kept apart is thus always the last of its run, and the driver gets it as two slices in
//! order: the run up to and including the frame's head, then the payload. The store
//! remembers, per connection, that the head went out and the payload is next; on any other
//! connection (after a reconnect) the frame is handed out from its head again. The payload
//! is held, and released, like the frame's bytes in a chunk: retransmission resends the
//! same `Bytes`.

use alloc::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use crate::output::ConnId;
use crate::recycle::Recycler;

/// Payloads of at least this many bytes are kept apart from the chunk (see the module
/// docs): copying them would cost more than the extra slice a write gathers.
pub(crate) const APART_MIN: usize = 16 * 1024;

/// A frozen, contiguous run of whole frames (the last one's payload possibly apart).
#[derive(Debug)]
struct Run {
    /// Sequence number of the first frame in `bytes`.
    first: u64,
    bytes: Bytes,
}

/// The payload of frame `seq`, kept apart from the chunk.
#[derive(Debug)]
struct Apart {
    seq: u64,
    payload: Bytes,
}

/// Encoded, unacknowledged data frames of one link.
#[derive(Debug)]
pub(crate) struct ChunkStore {
    /// Sequence number of the first frame held.
    base: u64,
    /// Length of each frame held, from `base`, in the chunk (without a payload kept apart).
    lens: VecDeque<u32>,
    /// Sealed runs, in order, covering `base..open_first`.
    runs: VecDeque<Run>,
    /// Frames `open_first..end`, not yet sealed.
    open: BytesMut,
    open_first: u64,
    /// Payloads kept apart, in order of their frames.
    apart: VecDeque<Apart>,
    /// The frame whose head was handed out last on a connection, its payload not yet.
    head_out: Option<(u64, ConnId)>,
    /// Bytes of the frames held, payloads kept apart included.
    bytes: usize,
    chunk_bytes: usize,
    /// Payloads of at least this many bytes are kept apart.
    apart_min: usize,
    recycler: Recycler,
}

impl ChunkStore {
    pub(crate) fn new(chunk_bytes: usize, spares: usize) -> Self {
        ChunkStore {
            base: 0,
            lens: VecDeque::new(),
            runs: VecDeque::new(),
            open: BytesMut::new(),
            open_first: 0,
            apart: VecDeque::new(),
            head_out: None,
            bytes: 0,
            chunk_bytes,
            apart_min: APART_MIN.min(chunk_bytes / 4).max(1),
            recycler: Recycler::new(spares),
        }
    }

    /// Whether a payload of `len` bytes is kept apart rather than copied into the chunk.
    #[inline]
    pub(crate) fn keeps_apart(&self, len: usize) -> bool {
        len >= self.apart_min
    }

    /// Sequence number of the first frame held.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// One past the last frame held.
    #[inline]
    pub(crate) fn end(&self) -> u64 {
        self.base + self.lens.len() as u64
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.lens.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Bytes held.
    #[inline]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Length of frame `seq`, if held.
    pub(crate) fn frame_len(&self, seq: u64) -> Option<usize> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let apart = self.apart_of(seq).map_or(0, Bytes::len);
        self.lens.get(i).map(|l| *l as usize + apart)
    }

    /// The payload of frame `seq` kept apart, if it has one.
    fn apart_of(&self, seq: u64) -> Option<&Bytes> {
        let i = self.apart.partition_point(|a| a.seq < seq);
        self.apart
            .get(i)
            .filter(|a| a.seq == seq)
            .map(|a| &a.payload)
    }

    /// Room for a frame of about `hint` bytes at the end of the open chunk: the buffer to
    /// encode the next frame into. Call [`ChunkStore::commit`] (or
    /// [`ChunkStore::commit_apart`]) after appending one frame, or truncate what was
    /// appended.
    #[inline]
    pub(crate) fn reserve(&mut self, hint: usize) -> &mut BytesMut {
        if self.open.capacity() - self.open.len() < hint {
            self.seal();
            // A new chunk; what is still referenced of the old one lives in its runs.
            self.recycler
                .renew(&mut self.open, hint, self.chunk_bytes.max(hint));
        }
        &mut self.open
    }

    /// The frame just appended to the open chunk, starting at byte `start` of it, is
    /// complete: it gets the next sequence number.
    #[inline]
    pub(crate) fn commit(&mut self, start: usize) -> u64 {
        let len = self.open.len() - start;
        let seq = self.end();
        // Frames are bounded by the u32 frame length plus a header; a larger one cannot
        // have been framed.
        self.lens.push_back(u32::try_from(len).unwrap_or(u32::MAX));
        self.bytes += len;
        seq
    }

    /// The head of a frame (header and metadata, its length counting `payload`) was just
    /// appended at byte `start` of the open chunk; `payload` ends the frame and is kept
    /// apart, not copied. The frame gets the next sequence number and ends its run.
    pub(crate) fn commit_apart(&mut self, start: usize, payload: Bytes) -> u64 {
        let seq = self.commit(start);
        self.bytes += payload.len();
        self.apart.push_back(Apart { seq, payload });
        self.seal();
        seq
    }

    /// Moves every frame of the open chunk into a run.
    fn seal(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let bytes = self.open.split().freeze();
        let first = self.open_first;
        self.open_first = self.end();
        self.runs.push_back(Run { first, bytes });
    }

    /// What to write next on `conn` from frame `seq` on, and how many frames it completes:
    /// the frames from `seq` to the end of the run that holds it, as one slice, or, right
    /// after a run ending with the head of a frame kept apart was handed out on `conn`,
    /// that frame's payload. `None` when `seq` is not held.
    pub(crate) fn slice_from(&mut self, seq: u64, conn: ConnId) -> Option<(Bytes, u64)> {
        if seq < self.base || seq >= self.end() {
            return None;
        }
        if self.head_out.take() == Some((seq, conn)) {
            return self.apart_of(seq).map(|p| (p.clone(), 1));
        }
        if seq >= self.open_first {
            self.seal();
        }
        // Fresh frames are in the last run (just sealed): no search.
        let i = match self.runs.back() {
            Some(last) if last.first <= seq => self.runs.len() - 1,
            _ => self
                .runs
                .partition_point(|r| r.first <= seq)
                .checked_sub(1)?,
        };
        let run_end = self.runs.get(i + 1).map_or(self.open_first, |r| r.first);
        let skip: usize = self.lens_between(self.runs[i].first, seq);
        let slice = self.runs[i].bytes.slice(skip..);
        let last = run_end - 1;
        if self.apart_of(last).is_some() {
            // Its payload goes next, on this connection.
            self.head_out = Some((last, conn));
            return Some((slice, last - seq));
        }
        Some((slice, run_end - seq))
    }

    fn lens_between(&self, from: u64, to: u64) -> usize {
        let a = (from - self.base) as usize;
        let b = (to - self.base) as usize;
        self.lens.range(a..b).map(|l| *l as usize).sum()
    }

    /// Releases frames below `upto` (acknowledged): their lengths are summed, then whole
    /// runs are dropped and the first remaining one advanced, without a slice per frame.
    pub(crate) fn release(&mut self, upto: u64) {
        let n = usize::try_from(upto.saturating_sub(self.base))
            .unwrap_or(usize::MAX)
            .min(self.lens.len());
        if n == 0 {
            return;
        }
        let len: usize = self.lens.drain(..n).map(|l| l as usize).sum();
        self.bytes -= len;
        self.base += n as u64;
        while let Some(a) = self.apart.front().filter(|a| a.seq < self.base) {
            self.bytes -= a.payload.len();
            self.apart.pop_front();
        }
        if self.head_out.is_some_and(|(s, _)| s < self.base) {
            self.head_out = None;
        }
        self.release_chunk_bytes(len);
    }

    /// Drops the first `skip` bytes of the runs and then of the open chunk.
    fn release_chunk_bytes(&mut self, mut skip: usize) {
        while skip > 0 {
            let Some(run) = self.runs.front_mut() else {
                break;
            };
            if run.bytes.len() > skip {
                run.bytes.advance(skip);
                skip = 0;
                break;
            }
            skip -= run.bytes.len();
            self.runs.pop_front();
        }
        if skip > 0 {
            // The rest was never sealed: it leaves the open chunk.
            self.open.advance(skip);
        }
        if let Some(run) = self.runs.front_mut() {
            run.first = run.first.max(self.base);
        }
        self.open_first = self.open_first.max(self.base);
    }

    /// Removes the first frame and returns its bytes. A frame whose payload was kept apart
    /// is joined into one buffer (a copy: this serves returns, not the data path).
    pub(crate) fn pop_front(&mut self) -> Option<Bytes> {
        let len = self.lens.pop_front()? as usize;
        self.bytes -= len;
        self.base += 1;
        self.head_out = None;
        let seq = self.base - 1;
        let payload = self.take_apart(|a| a.front(), VecDeque::pop_front, seq);
        if seq >= self.open_first {
            // Never sealed: take it from the open chunk.
            self.open_first = self.base;
            return Some(join(self.open.split_to(len).freeze(), payload));
        }
        let run = self.runs.front_mut()?;
        let frame = run.bytes.slice(..len);
        run.bytes.advance(len);
        run.first += 1;
        if run.bytes.is_empty() {
            self.runs.pop_front();
        }
        Some(join(frame, payload))
    }

    /// The payload kept apart of frame `seq`, removed, if `peek` shows it at that end of
    /// the list.
    fn take_apart(
        &mut self,
        peek: fn(&VecDeque<Apart>) -> Option<&Apart>,
        pop: fn(&mut VecDeque<Apart>) -> Option<Apart>,
        seq: u64,
    ) -> Option<Bytes> {
        if peek(&self.apart).is_some_and(|a| a.seq == seq) {
            let a = pop(&mut self.apart)?;
            self.bytes -= a.payload.len();
            return Some(a.payload);
        }
        None
    }

    /// Removes every frame from `seq` on and returns them, oldest first.
    pub(crate) fn split_off(&mut self, seq: u64) -> VecDeque<Bytes> {
        let mut tail = VecDeque::new();
        while self.end() > seq.max(self.base) {
            match self.pop_back() {
                Some(f) => tail.push_front(f),
                None => break,
            }
        }
        tail
    }

    fn pop_back(&mut self) -> Option<Bytes> {
        let len = self.lens.pop_back()? as usize;
        self.bytes -= len;
        self.head_out = None;
        let seq = self.end();
        let payload = self.take_apart(|a| a.back(), VecDeque::pop_back, seq);
        if !self.open.is_empty() {
            let at = self.open.len() - len;
            return Some(join(self.open.split_off(at).freeze(), payload));
        }
        let run = self.runs.back_mut()?;
        let at = run.bytes.len() - len;
        let frame = run.bytes.slice(at..);
        run.bytes.truncate(at);
        if run.bytes.is_empty() {
            self.runs.pop_back();
        }
        self.open_first = self.end();
        Some(join(frame, payload))
    }

    /// Numbers the frames held from 0 again (a new session), keeping their order.
    pub(crate) fn renumber(&mut self) {
        let delta = self.base;
        self.base = 0;
        self.open_first -= delta;
        self.head_out = None;
        for r in self.runs.iter_mut() {
            r.first -= delta;
        }
        for a in self.apart.iter_mut() {
            a.seq -= delta;
        }
    }
}

/// A frame's head and its payload kept apart, as one buffer.
fn join(head: Bytes, payload: Option<Bytes>) -> Bytes {
    match payload {
        None => head,
        Some(p) => {
            let mut b = BytesMut::with_capacity(head.len() + p.len());
            b.extend_from_slice(&head);
            b.extend_from_slice(&p);
            b.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const C: ConnId = ConnId(1);

    fn push(s: &mut ChunkStore, frame: &[u8]) -> u64 {
        let buf = s.reserve(frame.len());
        let start = buf.len();
        buf.extend_from_slice(frame);
        s.commit(start)
    }

    fn all(s: &mut ChunkStore, from: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut seq = from;
        while let Some((b, n)) = s.slice_from(seq, C) {
            out.extend_from_slice(&b);
            seq += n;
        }
        out
    }

    #[test]
    fn frames_are_handed_out_in_runs_and_resume_anywhere() {
        let mut s = ChunkStore::new(8, 2);
        assert_eq!(push(&mut s, b"aaa"), 0);
        assert_eq!(push(&mut s, b"bb"), 1);
        assert_eq!(push(&mut s, b"cccc"), 2); // does not fit: new chunk
        assert_eq!(push(&mut s, b"d"), 3);
        assert_eq!(all(&mut s, 0), b"aaabbccccd");
        assert_eq!(all(&mut s, 1), b"bbccccd");
        assert_eq!(all(&mut s, 3), b"d");
        assert_eq!(s.bytes(), 10);
        s.release(2);
        assert_eq!((s.base(), s.bytes()), (2, 5));
        assert_eq!(all(&mut s, 2), b"ccccd");
        assert!(s.slice_from(1, C).is_none());
        push(&mut s, b"ee");
        assert_eq!(all(&mut s, 3), b"dee");
    }

    #[test]
    fn release_spans_runs_and_the_open_chunk() {
        let mut s = ChunkStore::new(64, 2);
        for f in [&b"aa"[..], b"bbb", b"c"] {
            push(&mut s, f);
        }
        let _ = s.slice_from(1, C); // seal a run of three
        push(&mut s, b"dddd");
        push(&mut s, b"ee");
        s.release(1);
        assert_eq!(all(&mut s, 1), b"bbbcddddee");
        s.release(4);
        assert_eq!((s.base(), s.end(), s.bytes()), (4, 5, 2));
        assert_eq!(all(&mut s, 4), b"ee");
        push(&mut s, b"f");
        assert_eq!(all(&mut s, 4), b"eef");
        s.release(6);
        assert!(s.is_empty());
        push(&mut s, b"g");
        assert_eq!(all(&mut s, 6), b"g");
    }

    #[test]
    fn slices_share_the_chunk_memory() {
        let mut s = ChunkStore::new(64, 2);
        push(&mut s, b"one");
        push(&mut s, b"two");
        let (a, n) = s.slice_from(0, C).unwrap();
        assert_eq!(n, 2);
        let (b, _) = s.slice_from(1, C).unwrap();
        assert_eq!(b.as_ptr(), a[3..].as_ptr(), "resumed slice is not a copy");
    }

    #[test]
    fn pop_and_split_off_return_whole_frames() {
        let mut s = ChunkStore::new(16, 2);
        for f in [&b"a"[..], b"bb", b"ccc", b"dddd"] {
            push(&mut s, f);
        }
        let _ = s.slice_from(0, C); // seal the first run
        push(&mut s, b"eeeee");
        assert_eq!(s.pop_front().unwrap(), &b"a"[..]);
        let tail: Vec<Bytes> = s.split_off(3).into_iter().collect();
        assert_eq!(tail, [&b"dddd"[..], &b"eeeee"[..]]);
        assert_eq!((s.base(), s.end(), s.bytes()), (1, 3, 5));
        assert_eq!(all(&mut s, 1), b"bbccc");
        push(&mut s, b"ff");
        assert_eq!(all(&mut s, 1), b"bbcccff");
        s.release(10);
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    fn push_apart(s: &mut ChunkStore, head: &[u8], payload: &Bytes) -> u64 {
        let buf = s.reserve(head.len());
        let start = buf.len();
        buf.extend_from_slice(head);
        s.commit_apart(start, payload.clone())
    }

    fn big(fill: u8) -> Bytes {
        Bytes::from(std::vec![fill; APART_MIN])
    }

    #[test]
    fn a_payload_kept_apart_goes_out_after_its_head_without_a_copy() {
        let mut s = ChunkStore::new(64, 2);
        let p = big(b'P');
        push(&mut s, b"aa");
        assert_eq!(push_apart(&mut s, b"HH", &p), 1);
        push(&mut s, b"b");
        assert_eq!(s.bytes(), 5 + p.len());
        assert_eq!(s.frame_len(1), Some(2 + p.len()));
        // The run ends with the head; only "aa" is complete.
        assert_eq!(s.slice_from(0, C), Some((Bytes::from_static(b"aaHH"), 1)));
        let (payload, n) = s.slice_from(1, C).unwrap();
        assert_eq!(
            (payload.as_ptr(), payload.len(), n),
            (p.as_ptr(), p.len(), 1)
        );
        assert_eq!(s.slice_from(2, C), Some((Bytes::from_static(b"b"), 1)));
    }

    #[test]
    fn another_connection_gets_the_frame_from_its_head_again() {
        let mut s = ChunkStore::new(64, 2);
        let p = big(b'P');
        push_apart(&mut s, b"HH", &p);
        assert_eq!(s.slice_from(0, C), Some((Bytes::from_static(b"HH"), 0)));
        // Cut before the payload: the next connection resumes at the same frame.
        assert_eq!(
            s.slice_from(0, ConnId(2)),
            Some((Bytes::from_static(b"HH"), 0))
        );
        assert_eq!(s.slice_from(0, ConnId(2)).unwrap().0, p);
        // And resuming on a connection that already took the payload starts over too.
        assert_eq!(s.slice_from(0, ConnId(2)).unwrap().0, &b"HH"[..]);
    }

    #[test]
    fn payloads_kept_apart_are_released_popped_and_renumbered_with_their_frames() {
        let mut s = ChunkStore::new(64, 2);
        let (p, q) = (big(b'P'), big(b'Q'));
        push(&mut s, b"a");
        push_apart(&mut s, b"HP", &p);
        push_apart(&mut s, b"HQ", &q);
        push(&mut s, b"b");
        s.release(2);
        assert_eq!((s.base(), s.bytes()), (2, 3 + q.len()));
        assert_eq!(s.slice_from(2, C), Some((Bytes::from_static(b"HQ"), 0)));
        let mut joined = BytesMut::from(&b"HQ"[..]);
        joined.extend_from_slice(&q);
        let tail: Vec<Bytes> = s.split_off(2).into_iter().collect();
        assert_eq!(tail, [joined.clone().freeze(), Bytes::from_static(b"b")]);
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
        push_apart(&mut s, b"HQ", &q);
        push(&mut s, b"c");
        s.renumber();
        assert_eq!(s.frame_len(0), Some(2 + q.len()));
        assert_eq!(s.slice_from(0, C), Some((Bytes::from_static(b"HQ"), 0)));
        assert_eq!(s.slice_from(0, C).unwrap().0, q);
        assert_eq!(s.pop_front(), Some(joined.freeze()));
        assert_eq!(s.pop_front(), Some(Bytes::from_static(b"c")));
        assert_eq!(s.bytes(), 0);
    }
}
