//! Envelope codec: arbitrary frame bodies never panic the decoder, whatever decodes
//! re-encodes to an equal envelope, and every envelope built from valid parts survives
//! encode → frame decode → envelope decode, with or without a link.
//!
//! Byte 0, bit 0 picks the mode: 0 = the rest is a raw Data frame body, 1 = the rest is
//! `arbitrary` input describing an envelope.
#![no_main]

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use procwire_core::envelope::{
    append_envelope, append_envelope_cached, decode_envelope, decode_envelope_cached, Envelope,
    Link, RefuseReason, Undeliverable,
};
use procwire_core::fingerprint::TypeFingerprint;
use procwire_core::frame::{FrameDecoder, FrameKind, Item, HEADER_LEN};
use procwire_core::id::{ActorId, ChannelAddr, Name, PortId, ProcId, UnixAddr};
use procwire_core::idcache::{IdCache, IdTable};

fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

fn proc_a() -> ProcId {
    ProcId::new(ChannelAddr::Local(1), name("a"))
}

fn proc_b() -> ProcId {
    ProcId::new(ChannelAddr::Local(2), name("b"))
}

/// Encodes `env` as a whole Data frame and returns the frame's body, checking the header.
fn encode(env: &Envelope, link: Option<Link<'_>>) -> Bytes {
    let mut out = BytesMut::new();
    append_envelope(env, link, u32::MAX, &mut out).expect("no limit to exceed");
    assert!(out.len() >= HEADER_LEN);
    assert_eq!(out[0], FrameKind::Data as u8);
    assert_eq!(out[1], 0, "flags");
    let len = u32::from_le_bytes([out[2], out[3], out[4], out[5]]);
    assert_eq!(len as usize, out.len() - HEADER_LEN);
    out.freeze().slice(HEADER_LEN..)
}

/// The payload (when not empty) must be a slice of the received body, not a copy.
fn check_zero_copy(body: &Bytes, env: &Envelope) {
    if !env.payload.is_empty() {
        let range = body.as_ptr_range();
        assert!(range.contains(&env.payload.as_ptr()), "payload was copied");
        assert_eq!(&body[body.len() - env.payload.len()..], &env.payload[..]);
    }
    for (_, v) in &env.headers {
        if !v.is_empty() {
            assert!(
                body.as_ptr_range().contains(&v.as_ptr()),
                "header value was copied"
            );
        }
    }
}

/// Full round trip of a valid envelope on `link`, plus the limit check of `append_envelope`.
fn roundtrip(env: &Envelope, link: Option<Link<'_>>, max: Option<u32>) {
    let body = encode(env, link);
    let back = decode_envelope(body.clone(), link).expect("own encoding must decode");
    assert_eq!(&back, env);
    check_zero_copy(&body, &back);
    // Encoding is a function of the envelope and the link.
    assert_eq!(encode(&back, link), body);

    // Through the real frame decoder, as a session would receive it.
    let mut frame = BytesMut::new();
    append_envelope(env, link, u32::MAX, &mut frame).expect("no limit");
    let mut dec = FrameDecoder::frames_only(u32::MAX, BytesMut::new());
    let p = dec.decode(&frame).expect("own frame must decode");
    assert_eq!(p.consumed, frame.len());
    assert!(matches!(p.item, Some(Item::Frame(h)) if h.kind == FrameKind::Data));
    let taken = dec.take_body();
    assert_eq!(decode_envelope(taken, link).as_ref(), Ok(env));

    // Limits: the body length is what is compared, and a refusal appends nothing.
    let len = body.len() as u32;
    let mut out = BytesMut::from(&b"prefix"[..]);
    match max {
        Some(max) if len > max => {
            assert_eq!(
                append_envelope(env, link, max, &mut out),
                Err(Undeliverable::TooLarge { len, max })
            );
            assert_eq!(
                &out[..],
                b"prefix",
                "a refused envelope must leave the buffer alone"
            );
        }
        Some(max) => {
            append_envelope(env, link, max, &mut out).expect("within the limit");
            assert_eq!(&out[6 + HEADER_LEN..], &body[..]);
        }
        None => {
            if len > 0 {
                let r = append_envelope(env, link, len - 1, &mut out);
                assert_eq!(r, Err(Undeliverable::TooLarge { len, max: len - 1 }));
                assert_eq!(&out[..], b"prefix");
            }
        }
    }
}

fn raw_mode(bytes: &[u8]) {
    let (a, b) = (proc_a(), proc_b());
    let body = Bytes::copy_from_slice(bytes);
    let ab = Link {
        sender: &a,
        receiver: &b,
    };
    let ba = Link {
        sender: &b,
        receiver: &a,
    };
    // A session's decoder with an id table: never panics, and what it accepts is a valid
    // envelope that also survives the plain codec.
    let mut table = IdTable::new(4);
    if let Ok(env) = decode_envelope_cached(body.clone(), ab, &mut table) {
        roundtrip(&env, Some(ab), None);
    }
    let without = decode_envelope(body.clone(), None);
    let with = decode_envelope(body.clone(), Some(ab));
    if let Ok(env) = &without {
        // What decodes without a link uses no link-relative id, so a link changes nothing.
        assert_eq!(with.as_ref(), Ok(env));
    }
    for (env, link) in [(without, None), (with, Some(ab))] {
        let Ok(env) = env else { continue };
        check_zero_copy(&body, &env);
        roundtrip(&env, link, None);
        roundtrip(&env, None, None);
        roundtrip(&env, Some(ba), None);
    }
}

#[derive(Arbitrary, Debug)]
enum ArbAddr {
    Local(u64),
    V4([u8; 4], u16),
    V6([u8; 16], u16, u32, u32),
    UnixPath(String),
    UnixAbstract(String),
}

impl ArbAddr {
    fn build(&self) -> ChannelAddr {
        match self {
            ArbAddr::Local(n) => ChannelAddr::Local(*n),
            ArbAddr::V4(ip, port) => SocketAddr::V4(SocketAddrV4::new((*ip).into(), *port)).into(),
            ArbAddr::V6(ip, port, flow, scope) => {
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(*ip), *port, *flow, *scope)).into()
            }
            ArbAddr::UnixPath(p) => UnixAddr::path(p)
                .map(ChannelAddr::Unix)
                .unwrap_or(ChannelAddr::Local(0)),
            ArbAddr::UnixAbstract(n) => UnixAddr::abstract_name(n)
                .map(ChannelAddr::Unix)
                .unwrap_or(ChannelAddr::Local(0)),
        }
    }
}

/// A name from arbitrary text: used as is when valid, otherwise a fixed valid one.
fn arb_name(s: &str) -> Name {
    Name::new(s).unwrap_or_else(|_| name("n"))
}

#[derive(Arbitrary, Debug)]
enum ProcSel {
    A,
    B,
    Other(ArbAddr, String),
}

impl ProcSel {
    fn build(&self) -> ProcId {
        match self {
            ProcSel::A => proc_a(),
            ProcSel::B => proc_b(),
            ProcSel::Other(addr, n) => ProcId::new(addr.build(), arb_name(n)),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum LinkSel {
    None,
    AB,
    BA,
    AA,
    Other(ProcSel, ProcSel),
}

#[derive(Arbitrary, Debug)]
enum ArbReason {
    NoSuchActor,
    NoSuchPort,
    TtlExhausted,
    Unreachable,
    PeerRestarted,
    RefusedWrongProc,
    RefusedVersion(u16),
    RefusedShuttingDown,
    RefusedBadHello,
    TooLarge(u32, u32),
    ShuttingDown,
    SessionLost,
}

impl ArbReason {
    fn build(&self) -> Undeliverable {
        match *self {
            ArbReason::NoSuchActor => Undeliverable::NoSuchActor,
            ArbReason::NoSuchPort => Undeliverable::NoSuchPort,
            ArbReason::TtlExhausted => Undeliverable::TtlExhausted,
            ArbReason::Unreachable => Undeliverable::Unreachable,
            ArbReason::PeerRestarted => Undeliverable::PeerRestarted,
            ArbReason::RefusedWrongProc => Undeliverable::Refused(RefuseReason::WrongProc),
            ArbReason::RefusedVersion(supported) => {
                Undeliverable::Refused(RefuseReason::UnsupportedVersion { supported })
            }
            ArbReason::RefusedShuttingDown => Undeliverable::Refused(RefuseReason::ShuttingDown),
            ArbReason::RefusedBadHello => Undeliverable::Refused(RefuseReason::BadHello),
            ArbReason::TooLarge(len, max) => Undeliverable::TooLarge { len, max },
            ArbReason::ShuttingDown => Undeliverable::ShuttingDown,
            ArbReason::SessionLost => Undeliverable::SessionLost,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct ArbEnvelope {
    sender_proc: ProcSel,
    sender_name: String,
    sender_pid: u64,
    dest_proc: ProcSel,
    dest_name: String,
    dest_pid: u64,
    port: u64,
    ttl: u8,
    returned: Option<ArbReason>,
    fingerprint: u64,
    headers: Vec<(String, Vec<u8>)>,
    payload: Vec<u8>,
    link: LinkSel,
    max: Option<u32>,
    /// Id cache capacity (mod 4) for the cached sequence.
    cache: u8,
}

fn structured_mode(bytes: &[u8]) {
    let Ok(a) = ArbEnvelope::arbitrary_take_rest(Unstructured::new(bytes)) else {
        return;
    };
    let sender = ActorId::new(
        a.sender_proc.build(),
        arb_name(&a.sender_name),
        a.sender_pid,
    );
    let dest = PortId::new(
        ActorId::new(a.dest_proc.build(), arb_name(&a.dest_name), a.dest_pid),
        a.port,
    );
    let env = Envelope {
        sender,
        dest,
        ttl: a.ttl,
        returned: a.returned.as_ref().map(ArbReason::build),
        fingerprint: TypeFingerprint::from_u64(a.fingerprint),
        headers: a
            .headers
            .iter()
            .map(|(k, v)| (arb_name(k), Bytes::copy_from_slice(v)))
            .collect(),
        payload: Bytes::copy_from_slice(&a.payload),
    };
    let (pa, pb) = (proc_a(), proc_b());
    let (x, y);
    let link = match &a.link {
        LinkSel::None => None,
        LinkSel::AB => Some(Link {
            sender: &pa,
            receiver: &pb,
        }),
        LinkSel::BA => Some(Link {
            sender: &pb,
            receiver: &pa,
        }),
        LinkSel::AA => Some(Link {
            sender: &pa,
            receiver: &pa,
        }),
        LinkSel::Other(s, r) => {
            x = s.build();
            y = r.build();
            Some(Link {
                sender: &x,
                receiver: &y,
            })
        }
    };
    roundtrip(&env, link, a.max);
    if let Some(link) = link {
        roundtrip(&env, None, None);
        cached_sequence(&env, link, a.cache);
    }
}

/// The same envelope sent three times on a link with an id cache of `cap` entries: the
/// receiver's table decodes each frame, in order, to the envelope; from the second on, ids
/// already defined travel as indices, so no frame is larger than the first.
fn cached_sequence(env: &Envelope, link: Link<'_>, cap: u8) {
    let cap = u16::from(cap % 4);
    let mut cache = IdCache::new(cap);
    let mut table = IdTable::new(cap);
    let mut first = None;
    for seq in 0..3u64 {
        let mut out = BytesMut::new();
        append_envelope_cached(env, link, u32::MAX, &mut out, &mut cache, seq)
            .expect("no limit to exceed");
        let len = out.len();
        let body = out.freeze().slice(HEADER_LEN..);
        let back = decode_envelope_cached(body.clone(), link, &mut table)
            .expect("own cached encoding must decode");
        assert_eq!(&back, env);
        check_zero_copy(&body, &back);
        let first = *first.get_or_insert(len);
        assert!(len <= first, "a later frame grew: {len} > {first}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(first) = data.first() else {
        return;
    };
    if first & 1 == 0 {
        raw_mode(&data[1..]);
    } else {
        structured_mode(&data[1..]);
    }
});
