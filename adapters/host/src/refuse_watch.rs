//! Sees the session refusals an accepting proc writes, to count them.
//!
//! Core reports a connection it closes for an error as `Event::ConnectionFailed`, but a
//! session it *refuses* (a hello for another proc name, an undecodable hello, too many
//! sessions, shutting down) only shows as a `Refuse` frame followed by a close. Until core
//! reports those as events too, the writer of every accepted connection is wrapped in a
//! [`RefuseWatch`]: it reads the first frame the proc writes after its preamble (the
//! handshake answer: `Welcome` or `Refuse`), reports a refusal, and from then on passes
//! bytes through untouched. It looks at no more than the first frame header and a refusal's
//! few body bytes of each accepted connection.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::AsyncWrite;
use procwire_core::envelope::RefuseReason;
use procwire_core::frame::{FrameKind, HEADER_LEN, PREAMBLE_LEN};

use crate::refusals::RefusalReason;
use crate::runtime::Writer;

/// The longest refusal body looked at; a `RefuseReason` takes a few bytes.
const MAX_REFUSE_BODY: usize = 16;
/// Bytes kept at most: preamble, header, refusal body.
const KEEP: usize = PREAMBLE_LEN + HEADER_LEN + MAX_REFUSE_BODY;

/// What the bytes written so far say about the handshake answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Not enough bytes yet.
    Undecided,
    /// The answer is not a refusal (or cannot be read as one): stop looking.
    NotRefused,
    /// The proc refused the session.
    Refused(RefuseReason),
}

/// Reads the accepting side's first frame from the bytes it writes.
#[derive(Debug, Default)]
pub(crate) struct AnswerSniffer {
    head: Vec<u8>,
}

impl AnswerSniffer {
    /// Takes the next written bytes; returns what is known once enough have been seen.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Answer {
        let want = KEEP.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..want]);
        self.answer()
    }

    fn answer(&self) -> Answer {
        let Some(header) = self.head.get(PREAMBLE_LEN..PREAMBLE_LEN + HEADER_LEN) else {
            return Answer::Undecided;
        };
        if FrameKind::from_u8(header[0]) != Some(FrameKind::Refuse) {
            return Answer::NotRefused;
        }
        let len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize;
        if len > MAX_REFUSE_BODY {
            return Answer::NotRefused;
        }
        let body_at = PREAMBLE_LEN + HEADER_LEN;
        match self.head.get(body_at..body_at + len) {
            None => Answer::Undecided,
            Some(body) => match postcard::from_bytes::<RefuseReason>(body) {
                Ok(reason) => Answer::Refused(reason),
                Err(_) => Answer::NotRefused,
            },
        }
    }
}

/// Called once with the refusal an accepted connection's writer carried.
pub(crate) type OnRefused = Box<dyn FnOnce(RefuseReason) + Send>;

/// A connection's writer that reports the refusal it carries, if any.
pub(crate) struct RefuseWatch {
    inner: Writer,
    /// Until the answer is known.
    watching: Option<(AnswerSniffer, OnRefused)>,
}

impl RefuseWatch {
    /// Wraps the writer of an accepted connection.
    pub(crate) fn wrap(inner: Writer, on_refused: OnRefused) -> Writer {
        Box::new(RefuseWatch {
            inner,
            watching: Some((AnswerSniffer::default(), on_refused)),
        })
    }

    /// Looks at the first `n` bytes of `bufs`, which were just written.
    fn saw(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        let Some((sniffer, _)) = self.watching.as_mut() else {
            return;
        };
        let mut answer = Answer::Undecided;
        for b in bufs {
            if n == 0 || answer != Answer::Undecided {
                break;
            }
            let take = n.min(b.len());
            answer = sniffer.feed(&b[..take]);
            n -= take;
        }
        match answer {
            Answer::Undecided => {}
            Answer::NotRefused => self.watching = None,
            Answer::Refused(reason) => {
                if let Some((_, report)) = self.watching.take() {
                    report(reason);
                }
            }
        }
    }
}

impl AsyncWrite for RefuseWatch {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.saw(&[IoSlice::new(buf)], n);
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            self.saw(bufs, n);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The refusal reasons the watch reports. `UnsupportedVersion` is left out: core sends that
/// refusal *and* reports the connection failed, which is counted already.
pub(crate) fn counted_refusal(reason: RefuseReason) -> Option<RefusalReason> {
    match reason {
        RefuseReason::UnsupportedVersion { .. } => None,
        r => Some(RefusalReason::from_refuse(&r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwire_core::frame::{preamble, FrameHeader};
    use std::sync::{Arc, Mutex};

    fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
        let mut h = [0u8; HEADER_LEN];
        FrameHeader {
            kind,
            flags: 0,
            len: body.len() as u32,
        }
        .write(&mut h);
        let mut v = preamble().to_vec();
        v.extend_from_slice(&h);
        v.extend_from_slice(body);
        v
    }

    fn refusal(reason: RefuseReason) -> Vec<u8> {
        frame(
            FrameKind::Refuse,
            &postcard::to_allocvec(&reason).expect("encode"),
        )
    }

    #[test]
    fn a_refusal_is_recognised_in_any_split() {
        for reason in [
            RefuseReason::WrongProc,
            RefuseReason::TooManySessions,
            RefuseReason::UnsupportedVersion { supported: 1 },
        ] {
            let bytes = refusal(reason);
            for cut in 0..bytes.len() {
                let mut s = AnswerSniffer::default();
                let first = s.feed(&bytes[..cut]);
                assert_eq!(first, Answer::Undecided, "cut {cut}");
                assert_eq!(s.feed(&bytes[cut..]), Answer::Refused(reason), "cut {cut}");
            }
        }
    }

    #[test]
    fn a_welcome_or_a_long_body_is_not_a_refusal() {
        let mut s = AnswerSniffer::default();
        assert_eq!(
            s.feed(&frame(FrameKind::Welcome, &[1, 2, 3])),
            Answer::NotRefused
        );
        let mut s = AnswerSniffer::default();
        assert_eq!(
            s.feed(&frame(FrameKind::Refuse, &[0; MAX_REFUSE_BODY + 1])),
            Answer::NotRefused
        );
        let mut s = AnswerSniffer::default();
        assert_eq!(s.feed(&frame(FrameKind::Refuse, &[99])), Answer::NotRefused);
        let mut s = AnswerSniffer::default();
        assert_eq!(s.feed(&preamble()), Answer::Undecided);
    }

    /// A writer that takes at most `chunk` bytes per call.
    struct Trickle {
        out: Arc<Mutex<Vec<u8>>>,
        chunk: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk);
            self.out.lock().expect("lock").extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn the_wrapper_reports_what_was_actually_written_once_and_passes_bytes_through() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let inner: Writer = Box::new(Trickle {
            out: out.clone(),
            chunk: 5,
        });
        let mut w = RefuseWatch::wrap(inner, Box::new(move |r| seen2.lock().unwrap().push(r)));
        let bytes = refusal(RefuseReason::WrongProc);
        let (a, b) = bytes.split_at(3);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut left = 0;
        while left < bytes.len() {
            let bufs = [
                IoSlice::new(&a[a.len().min(left)..]),
                IoSlice::new(&b[left.saturating_sub(a.len())..]),
            ];
            match Pin::new(&mut w).poll_write_vectored(&mut cx, &bufs) {
                Poll::Ready(Ok(n)) => left += n,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(*seen.lock().unwrap(), vec![RefuseReason::WrongProc]);
        assert_eq!(*out.lock().unwrap(), bytes);
    }
}
