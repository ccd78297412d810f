//! An in-memory byte pipe with a bounded buffer, as [`futures_io`] halves. Two of them make a
//! `local` connection. Runtime-neutral: wake-ups go through plain wakers.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};

use crate::sync::lock;

struct State {
    buf: BytesMut,
    /// The writer closed (or dropped) its half: the reader sees end-of-stream once drained.
    write_closed: bool,
    /// The reader dropped its half: writes fail.
    read_closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

struct Shared {
    state: Mutex<State>,
    cap: usize,
}

fn store(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// A one-way pipe buffering at most `cap` bytes.
pub(crate) fn pipe(cap: usize) -> (PipeReader, PipeWriter) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: BytesMut::new(),
            write_closed: false,
            read_closed: false,
            reader: None,
            writer: None,
        }),
        cap: cap.max(1),
    });
    (PipeReader(shared.clone()), PipeWriter(shared))
}

/// The reading end of a [`pipe`].
pub(crate) struct PipeReader(Arc<Shared>);

/// The writing end of a [`pipe`].
pub(crate) struct PipeWriter(Arc<Shared>);

impl futures_io::AsyncRead for PipeReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let waker = {
            let mut st = lock(&self.0.state);
            if st.buf.is_empty() {
                if st.write_closed {
                    return Poll::Ready(Ok(0));
                }
                store(&mut st.reader, cx);
                return Poll::Pending;
            }
            let n = st.buf.len().min(out.len());
            out[..n].copy_from_slice(&st.buf[..n]);
            st.buf.advance(n);
            let w = st.writer.take();
            drop(st);
            (n, w)
        };
        if let Some(w) = waker.1 {
            w.wake();
        }
        Poll::Ready(Ok(waker.0))
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let waker = {
            let mut st = lock(&self.0.state);
            st.read_closed = true;
            st.buf.clear();
            st.writer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl PipeWriter {
    fn close(&self) {
        let waker = {
            let mut st = lock(&self.0.state);
            st.write_closed = true;
            st.reader.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl futures_io::AsyncWrite for PipeWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let (n, waker) = {
            let mut st = lock(&self.0.state);
            if st.read_closed {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if st.write_closed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "write after close",
                )));
            }
            let room = self.0.cap.saturating_sub(st.buf.len());
            if room == 0 {
                store(&mut st.writer, cx);
                return Poll::Pending;
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(room - n);
                st.buf.extend_from_slice(&b[..take]);
                n += take;
                if n == room {
                    break;
                }
            }
            (n, st.reader.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close();
        Poll::Ready(Ok(()))
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::block_on;
    use futures_io::{AsyncRead, AsyncWrite};
    use std::future::poll_fn;

    #[test]
    fn carries_bytes_in_order_applies_backpressure_and_ends() {
        let (mut r, mut w) = pipe(8);
        let writer = std::thread::spawn(move || {
            let data: Vec<u8> = (0..100u8).collect();
            let mut off = 0;
            while off < data.len() {
                let chunks = [
                    IoSlice::new(&data[off..(off + 3).min(data.len())]),
                    IoSlice::new(&data[(off + 3).min(data.len())..]),
                ];
                let n = block_on(poll_fn(|cx| {
                    Pin::new(&mut w).poll_write_vectored(cx, &chunks)
                }))
                .expect("write");
                assert!(n <= 8, "the buffer is bounded");
                off += n;
            }
            block_on(poll_fn(|cx| Pin::new(&mut w).poll_close(cx))).expect("close");
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 5];
        loop {
            let n = block_on(poll_fn(|cx| Pin::new(&mut r).poll_read(cx, &mut buf))).expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        writer.join().expect("writer");
        assert_eq!(got, (0..100u8).collect::<Vec<_>>());
    }

    #[test]
    fn write_fails_once_the_reader_is_gone() {
        let (r, mut w) = pipe(8);
        drop(r);
        let res = block_on(poll_fn(|cx| Pin::new(&mut w).poll_write(cx, b"x")));
        assert_eq!(res.map_err(|e| e.kind()), Err(io::ErrorKind::BrokenPipe));
    }
}
