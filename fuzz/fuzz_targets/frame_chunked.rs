//! Byte-split invariance of the frame decoder (design §7): feeding a stream in any chunking
//! yields the same items, the same bodies and the same final error as feeding it whole.
//!
//! Input layout (the seeds in `corpus/frame_chunked` follow it):
//!
//! ```text
//! byte 0: bit 0    0 = raw stream mode, 1 = structured mode (the rest is `arbitrary` input)
//!         bit 1    raw mode: decoder expects the preamble (`new`) instead of `frames_only`
//!         bits 2-3 raw mode: decoder kind and limit (see `Setup`)
//! byte 1: k = byte % 16, the number of chunk-size bytes that follow (raw mode)
//! k bytes: chunk sizes, used in turn (0 = an empty call); all zero means one chunk
//! rest:   the stream
//! ```
//!
//! Structured mode builds frames with `arbitrary`, encodes them with `encode_frame` (and
//! checks `append_frame` gives the same bytes), decodes them chunked, and requires exactly
//! the frames that were encoded.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use procwire_core::frame::{
    append_frame, encode_frame, preamble, BodyBuf, FrameDecoder, FrameError, FrameHeader,
    FrameKind, Item, HEADER_LEN, VERSION,
};

type Items = Vec<(Item, Vec<u8>)>;

/// Splits `stream` into chunks whose lengths cycle through `sizes`.
fn chunks<'a>(stream: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    if sizes.iter().all(|s| *s == 0) {
        return vec![stream];
    }
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (sizes[i % sizes.len()] as usize).min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    out
}

/// Decodes `parts` in order, draining each chunk before the next; stops at the first error.
fn decode_parts<B: BodyBuf>(
    mut dec: FrameDecoder<B>,
    parts: &[&[u8]],
) -> (Items, Option<FrameError>, bool) {
    let mut items = Vec::new();
    for part in parts {
        let mut rest: &[u8] = part;
        loop {
            match dec.decode(rest) {
                Ok(p) => {
                    assert!(p.consumed <= rest.len());
                    rest = &rest[p.consumed..];
                    match p.item {
                        Some(item) => {
                            if let Item::Frame(h) = item {
                                assert_eq!(dec.body().len(), h.len as usize);
                            }
                            let body = match item {
                                Item::Frame(_) => dec.body().to_vec(),
                                Item::Preamble { .. } => Vec::new(),
                            };
                            items.push((item, body));
                        }
                        None => {
                            assert!(rest.is_empty(), "stalled with {} bytes left", rest.len());
                            break;
                        }
                    }
                    if rest.is_empty() {
                        break;
                    }
                }
                Err(e) => {
                    assert_eq!(dec.decode(rest), Err(e), "errors are sticky");
                    return (items, Some(e), false);
                }
            }
        }
    }
    let idle = dec.is_idle();
    (items, None, idle)
}

/// Decoder kinds and limits for raw mode.
#[derive(Clone, Copy)]
enum Setup {
    Heapless256,
    Heapless4096Max16,
    Growable64,
    Growable4096,
}

impl Setup {
    fn from_bits(b: u8) -> Setup {
        match b & 3 {
            0 => Setup::Heapless256,
            1 => Setup::Heapless4096Max16,
            2 => Setup::Growable64,
            _ => Setup::Growable4096,
        }
    }
}

fn compare<B: BodyBuf>(make: impl Fn() -> FrameDecoder<B>, stream: &[u8], parts: &[&[u8]]) {
    let whole = decode_parts(make(), &[stream]);
    let split = decode_parts(make(), parts);
    assert_eq!(whole, split, "chunking changed the result");
}

fn raw_mode(data: &[u8]) {
    let flags = data[0];
    let with_preamble = flags & 2 != 0;
    let k = (data.get(1).copied().unwrap_or(0) % 16) as usize;
    let sizes_end = (2 + k).min(data.len());
    let sizes = data.get(2..sizes_end).unwrap_or(&[]);
    let stream = data.get(sizes_end..).unwrap_or(&[]);
    let parts = chunks(stream, sizes);

    fn make<B: BodyBuf>(with_preamble: bool, max: u32, body: B) -> FrameDecoder<B> {
        if with_preamble {
            FrameDecoder::new(max, body)
        } else {
            FrameDecoder::frames_only(max, body)
        }
    }
    match Setup::from_bits(flags >> 2) {
        Setup::Heapless256 => compare(
            || make(with_preamble, u32::MAX, heapless::Vec::<u8, 256>::new()),
            stream,
            &parts,
        ),
        Setup::Heapless4096Max16 => compare(
            || make(with_preamble, 16, heapless::Vec::<u8, 4096>::new()),
            stream,
            &parts,
        ),
        Setup::Growable64 => compare(|| make(with_preamble, 64, BytesMut::new()), stream, &parts),
        Setup::Growable4096 => compare(
            || make(with_preamble, 4096, BytesMut::new()),
            stream,
            &parts,
        ),
    }
}

#[derive(Arbitrary, Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    body: Vec<u8>,
    /// Where `append_frame` splits the body into parts.
    split: u8,
}

#[derive(Arbitrary, Debug)]
struct Frames {
    frames: Vec<Frame>,
    sizes: Vec<u8>,
    growable: bool,
}

fn structured_mode(data: &[u8]) {
    let Ok(input) = Frames::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut stream = preamble().to_vec();
    let mut want: Items = vec![(Item::Preamble { version: VERSION }, Vec::new())];
    for f in &input.frames {
        let kind = FrameKind::from_u8(f.kind % 8 + 1).expect("1..=8 are the frame kinds");
        let mut buf = vec![0u8; HEADER_LEN + f.body.len()];
        let n = encode_frame(kind, f.flags, &f.body, &mut buf).expect("buffer is large enough");
        assert_eq!(n, buf.len());
        // The same frame through the multi-part encoder.
        let cut = (f.split as usize) % (f.body.len() + 1);
        let mut appended = BytesMut::new();
        append_frame(
            kind,
            f.flags,
            &[&f.body[..cut], &[], &f.body[cut..]],
            &mut appended,
        )
        .expect("small body");
        assert_eq!(&appended[..], &buf[..]);
        // A buffer one byte short is refused and left untouched.
        let mut short = vec![0xEEu8; buf.len() - 1];
        assert!(encode_frame(kind, f.flags, &f.body, &mut short).is_err());
        assert!(short.iter().all(|b| *b == 0xEE));

        stream.extend_from_slice(&buf);
        let header = FrameHeader {
            kind,
            flags: f.flags,
            len: f.body.len() as u32,
        };
        want.push((Item::Frame(header), f.body.clone()));
    }
    let parts = chunks(&stream, &input.sizes);
    const CAP: usize = 16 * 1024;
    let fits = input.frames.iter().all(|f| f.body.len() <= CAP);
    let got = if input.growable || !fits {
        decode_parts(FrameDecoder::new(u32::MAX, BytesMut::new()), &parts)
    } else {
        decode_parts(
            FrameDecoder::new(u32::MAX, heapless::Vec::<u8, CAP>::new()),
            &parts,
        )
    };
    assert_eq!(got, (want, None, true));
}

fuzz_target!(|data: &[u8]| {
    let Some(first) = data.first() else {
        return;
    };
    if first & 1 == 0 {
        raw_mode(data);
    } else {
        structured_mode(&data[1..]);
    }
});
