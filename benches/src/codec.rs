//! procwire-core's codecs without sockets, and the socket copy they are compared with.
//!
//! [`CodecBench`] encodes a batch of identical envelopes (link-relative ids, as a session
//! writes them) into one buffer, and decodes such a buffer back into envelopes (frame
//! decoder, zero-copy body, envelope metadata). [`UnixCopy`] moves the same bytes through a
//! std `UnixStream::pair()` in the same thread, in chunks of up to [`UnixCopy::CHUNK`]
//! bytes (written, then read back), which is what the kernel charges for carrying them.

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use procwire_core::envelope::{append_envelope, decode_envelope, Envelope, Link};
use procwire_core::frame::{FrameDecoder, Item, DEFAULT_MAX_FRAME_LEN};
use procwire_core::id::{ActorId, ChannelAddr, Name, ProcId};

/// A batch of envelopes to encode and decode.
pub struct CodecBench {
    sender_proc: ProcId,
    receiver_proc: ProcId,
    env: Envelope,
    batch: usize,
    max: u32,
    /// Encode target, reused (cleared) per batch.
    out: BytesMut,
    /// One encoded batch, for decoding.
    encoded: Bytes,
    decoder: FrameDecoder<BytesMut>,
}

fn proc_id(addr: &str, name: &str) -> ProcId {
    let addr: ChannelAddr = addr.parse().expect("valid bench address");
    ProcId::new(addr, Name::new(name).expect("valid bench name"))
}

impl CodecBench {
    /// `batch` envelopes of `payload` bytes each, from `client[0]` in one proc to port 1024
    /// of `echo[0]` in the other, with abstract Unix addresses like those `Proc::direct`
    /// picks (the link-relative encoding makes the addresses cost nothing on the wire).
    pub fn new(payload: usize, batch: usize) -> Self {
        let sender_proc = proc_id("unix:@procwire-4242-00112233445566aa", "bench_a");
        let receiver_proc = proc_id("unix:@procwire-4242-00112233445566bb", "bench_b");
        let sender = ActorId::new(sender_proc.clone(), Name::new("client").unwrap(), 0);
        let dest = ActorId::new(receiver_proc.clone(), Name::new("echo").unwrap(), 0).port(1024);
        let env = Envelope::new(sender, dest, crate::payload(payload));
        let mut b = CodecBench {
            sender_proc,
            receiver_proc,
            env,
            batch,
            max: DEFAULT_MAX_FRAME_LEN,
            out: BytesMut::new(),
            encoded: Bytes::new(),
            decoder: FrameDecoder::frames_only(DEFAULT_MAX_FRAME_LEN, BytesMut::new()),
        };
        b.encode_batch();
        b.encoded = b.out.split().freeze();
        // Check once that what we time is a faithful round trip.
        let expected = b.env.clone();
        let mut seen = 0;
        b.decode_each(|e| {
            assert_eq!(e, expected);
            seen += 1;
        });
        assert_eq!(seen, batch);
        b
    }

    /// Envelopes per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Wire bytes of one batch (frame headers included).
    pub fn batch_bytes(&self) -> usize {
        self.encoded.len()
    }

    /// Wire bytes of one envelope (frame header included).
    pub fn frame_bytes(&self) -> usize {
        self.encoded.len() / self.batch
    }

    /// The encoded batch.
    pub fn encoded(&self) -> &Bytes {
        &self.encoded
    }

    /// Encodes one batch into the reused buffer; returns its length.
    pub fn encode_batch(&mut self) -> usize {
        self.out.clear();
        let link = Link {
            sender: &self.sender_proc,
            receiver: &self.receiver_proc,
        };
        for _ in 0..self.batch {
            append_envelope(black_box(&self.env), Some(link), self.max, &mut self.out)
                .expect("bench envelope fits the frame limit");
        }
        black_box(self.out.len())
    }

    fn decode_each(&mut self, mut f: impl FnMut(Envelope)) {
        let input = self.encoded.clone();
        let link = Link {
            sender: &self.sender_proc,
            receiver: &self.receiver_proc,
        };
        let mut at = 0;
        while at < input.len() {
            let p = self
                .decoder
                .decode(&input[at..])
                .expect("bench frames decode");
            at += p.consumed;
            if let Some(Item::Frame(_)) = p.item {
                let body = self.decoder.take_body();
                f(decode_envelope(body, Some(link)).expect("bench envelope decodes"));
            }
        }
    }

    /// Decodes one encoded batch (frames, then envelopes); returns the payload bytes seen.
    pub fn decode_batch(&mut self) -> usize {
        let mut total = 0;
        self.decode_each(|e| total += black_box(e).payload.len());
        total
    }

    /// Encodes a batch and decodes it; returns the payload bytes seen.
    pub fn encode_decode_batch(&mut self) -> usize {
        self.encode_batch();
        // Decode what was just encoded (not the reference batch), so both halves are real.
        let fresh = self.out.split().freeze();
        let kept = std::mem::replace(&mut self.encoded, fresh);
        let n = self.decode_batch();
        let fresh = std::mem::replace(&mut self.encoded, kept);
        // Give the allocation back to the encoder when nothing else holds it.
        if let Ok(buf) = fresh.try_into_mut() {
            self.out = buf;
        }
        n
    }

    /// Times `iters` encodes.
    pub fn time_encode(&mut self, iters: u64) -> Duration {
        let t = Instant::now();
        for _ in 0..iters {
            self.encode_batch();
        }
        t.elapsed()
    }

    /// Times `iters` decodes.
    pub fn time_decode(&mut self, iters: u64) -> Duration {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(self.decode_batch());
        }
        t.elapsed()
    }

    /// Times `iters` encode + decode rounds.
    pub fn time_encode_decode(&mut self, iters: u64) -> Duration {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(self.encode_decode_batch());
        }
        t.elapsed()
    }
}

/// The raw baseline for the codec: bytes through a std `UnixStream::pair()`, one thread
/// writing a chunk and then reading it back.
pub struct UnixCopy {
    a: UnixStream,
    b: UnixStream,
    buf: Vec<u8>,
}

impl UnixCopy {
    /// Largest single write: the size of procwire's coalesced writes and of its read buffer.
    pub const CHUNK: usize = 64 * 1024;

    /// A connected pair.
    pub fn new() -> std::io::Result<Self> {
        let (a, b) = UnixStream::pair()?;
        Ok(UnixCopy {
            a,
            b,
            buf: vec![0; Self::CHUNK],
        })
    }

    /// Writes `data` into one end and reads it all back from the other.
    pub fn copy(&mut self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(Self::CHUNK) {
            self.a.write_all(chunk)?;
            self.b.read_exact(&mut self.buf[..chunk.len()])?;
        }
        black_box(&self.buf);
        Ok(())
    }

    /// Times `iters` copies of `data`.
    pub fn time_copy(&mut self, data: &[u8], iters: u64) -> Duration {
        let t = Instant::now();
        for _ in 0..iters {
            self.copy(data).expect("unix pair copy");
        }
        t.elapsed()
    }
}
