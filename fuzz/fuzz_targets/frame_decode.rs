//! The frame decoder on arbitrary bytes, fed as one stream.
//!
//! Four decoders read the same input: with and without the preamble, with fixed-capacity
//! (`heapless`) and growable (`BytesMut`) body storage, under different limits. Each is
//! checked call by call (progress, no stall, body length, sticky errors) and, as a whole,
//! against a tiny non-incremental reference parser written from the wire layout in
//! `frame.rs`'s docs.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use procwire_core::frame::{
    BodyBuf, FrameDecoder, FrameError, FrameHeader, FrameKind, Item, HEADER_LEN, MAGIC,
    PREAMBLE_LEN, VERSION,
};

type Items = Vec<(Item, Vec<u8>)>;

/// What a correct decoder must yield for `input` read in one go: the items with their
/// bodies, the error (if any), and how many bytes are left over in an incomplete item.
fn reference(input: &[u8], with_preamble: bool, max: u32) -> (Items, Option<FrameError>, usize) {
    let mut items = Vec::new();
    let mut pos = 0;
    if with_preamble {
        if input.len() < PREAMBLE_LEN {
            return (items, None, input.len());
        }
        let magic = [input[0], input[1], input[2], input[3]];
        if magic != MAGIC {
            return (items, Some(FrameError::BadMagic(magic)), 0);
        }
        let version = u16::from_le_bytes([input[4], input[5]]);
        if version != VERSION {
            let e = FrameError::UnsupportedVersion {
                got: version,
                supported: VERSION,
            };
            return (items, Some(e), 0);
        }
        items.push((Item::Preamble { version }, Vec::new()));
        pos = PREAMBLE_LEN;
    }
    loop {
        let rest = &input[pos..];
        if rest.len() < HEADER_LEN {
            return (items, None, rest.len());
        }
        let Some(kind) = FrameKind::from_u8(rest[0]) else {
            return (items, Some(FrameError::UnknownKind(rest[0])), 0);
        };
        let len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]);
        if len > max {
            return (items, Some(FrameError::TooLarge { len, max }), 0);
        }
        let body = &rest[HEADER_LEN..];
        if (body.len() as u64) < u64::from(len) {
            return (items, None, rest.len());
        }
        let header = FrameHeader {
            kind,
            flags: rest[1],
            len,
        };
        items.push((Item::Frame(header), body[..len as usize].to_vec()));
        pos += HEADER_LEN + len as usize;
    }
}

/// Runs `dec` over `input` until the input is used up or an error, checking every call.
/// `body` reads the body of a yielded frame (it may take it out of the decoder).
fn drive<B: BodyBuf>(
    dec: &mut FrameDecoder<B>,
    input: &[u8],
    mut body: impl FnMut(&mut FrameDecoder<B>, usize) -> Vec<u8>,
) -> (Items, Option<FrameError>) {
    let max = dec.max_len();
    let mut items = Vec::new();
    let mut rest = input;
    loop {
        match dec.decode(rest) {
            Ok(p) => {
                assert!(
                    p.consumed <= rest.len(),
                    "consumed {} of {} bytes",
                    p.consumed,
                    rest.len()
                );
                rest = &rest[p.consumed..];
                match p.item {
                    None => {
                        // "Consumes bytes until one item is complete or the input runs out":
                        // no item means everything was taken (and nothing is left to stall on).
                        assert!(rest.is_empty(), "no item, yet {} bytes left", rest.len());
                        assert_eq!(dec.error(), None);
                        return (items, None);
                    }
                    Some(Item::Preamble { version }) => {
                        assert_eq!(version, VERSION);
                        items.push((Item::Preamble { version }, Vec::new()));
                    }
                    Some(Item::Frame(h)) => {
                        assert!(
                            h.len <= max,
                            "frame of {} bytes over the limit {max}",
                            h.len
                        );
                        assert_eq!(dec.body().len(), h.len as usize);
                        let b = body(dec, items.len());
                        assert_eq!(b.len(), h.len as usize);
                        items.push((Item::Frame(h), b));
                    }
                }
                if rest.is_empty() {
                    // One more call with nothing must be harmless and yield nothing.
                    let p = dec
                        .decode(&[])
                        .expect("empty input after success cannot fail");
                    assert_eq!(p.consumed, 0);
                    assert_eq!(p.item, None);
                    return (items, None);
                }
            }
            Err(e) => {
                assert_eq!(dec.error(), Some(e));
                // Sticky, whatever comes next.
                assert_eq!(dec.decode(rest), Err(e));
                assert_eq!(dec.decode(&[]), Err(e));
                assert_eq!(dec.decode(&crate_preamble()), Err(e));
                assert_eq!(dec.error(), Some(e));
                assert!(!dec.is_idle());
                return (items, Some(e));
            }
        }
    }
}

fn crate_preamble() -> [u8; PREAMBLE_LEN] {
    procwire_core::frame::preamble()
}

fn check_against_reference<B: BodyBuf>(
    dec: &mut FrameDecoder<B>,
    input: &[u8],
    with_preamble: bool,
    body: impl FnMut(&mut FrameDecoder<B>, usize) -> Vec<u8>,
) {
    let max = dec.max_len();
    let (want, want_err, leftover) = reference(input, with_preamble, max);
    let (got, got_err) = drive(dec, input, body);
    assert_eq!(got_err, want_err);
    assert_eq!(got, want);
    if got_err.is_none() {
        assert_eq!(
            dec.is_idle(),
            leftover == 0,
            "idle must mean no partial item ({leftover} bytes pending)"
        );
    }
}

fn copy_body<B: BodyBuf>(dec: &mut FrameDecoder<B>, _: usize) -> Vec<u8> {
    dec.body().to_vec()
}

/// Takes every other body out of a growable decoder without copying; the others are read
/// in place, so both paths are exercised on the same stream.
fn take_some(dec: &mut FrameDecoder<BytesMut>, index: usize) -> Vec<u8> {
    if index.is_multiple_of(2) {
        let seen = dec.body().to_vec();
        let taken = dec.take_body();
        assert_eq!(&taken[..], &seen[..]);
        assert!(
            dec.body().is_empty(),
            "take_body must leave the decoder empty"
        );
        taken.to_vec()
    } else {
        dec.body().to_vec()
    }
}

fuzz_target!(|data: &[u8]| {
    // Fixed-capacity storage; a huge configured limit is capped by the storage.
    let mut d = FrameDecoder::new(u32::MAX, heapless::Vec::<u8, 4096>::new());
    assert_eq!(d.max_len(), 4096);
    check_against_reference(&mut d, data, true, copy_body);

    let mut d = FrameDecoder::frames_only(4096, heapless::Vec::<u8, 4096>::new());
    check_against_reference(&mut d, data, false, copy_body);

    // Growable storage with small limits: large announced lengths must fail at the header.
    let mut d = FrameDecoder::new(64, BytesMut::new());
    assert_eq!(d.max_len(), 64);
    check_against_reference(&mut d, data, true, take_some);

    let mut d = FrameDecoder::frames_only(300, BytesMut::new());
    check_against_reference(&mut d, data, false, take_some);

    // A zero limit admits only empty frames.
    let mut d = FrameDecoder::frames_only(0, heapless::Vec::<u8, 16>::new());
    check_against_reference(&mut d, data, false, copy_body);
});
