//! Envelopes: who sent a message, where it goes, and its opaque payload.
//!
//! An envelope travels as the body of one [`FrameKind::Data`] frame. The body is the
//! postcard encoding of the metadata followed directly by the payload bytes; the payload is
//! not length-prefixed (it runs to the end of the frame) and decodes as a `Bytes` slice of
//! the received frame, so it is never copied.
//!
//! # Short ids on a link
//!
//! A proc id holds an address and a name, often 30–100 bytes. Envelopes on a link almost
//! always name the two procs at its ends, so the metadata refers to a proc as `0` (the
//! proc that wrote the frame), `1` (the proc that reads it) or, for anyone else, `2` and
//! the full id. On top of that, sessions cache
//! whole actor ids ([`crate::idcache`]): an actor starts with a varint tag, `0` for an id
//! sent whole and not cached, `(n + 1) << 1 | 1` for an id sent whole and cached as index
//! `n` from now on, and `(n + 1) << 1` for index `n` alone. Between actors that have talked
//! before, a 64-byte payload costs 76 bytes on the wire (6 of frame header, 6 of metadata).
//!
//! # Byte-level example
//!
//! Actor `client[0]` in the sending proc sends the payload `hi` to port 7 of `echo[0]` in
//! the receiving proc, TTL 16, no headers, as the first message of a session:
//!
//! ```text
//! 04 00 18 00 00 00                   frame header: Data, flags 0, body 24 bytes
//! 03 00 06 'c' 'l' 'i' 'e' 'n' 't' 00 sender: define 0 = LinkSender, "client", pid 0
//! 05 01 04 'e' 'c' 'h' 'o' 00 07      dest: define 1 = LinkReceiver, "echo", pid 0; port 7
//! 10                                  ttl 16
//! 00                                  returned: none
//! 00                                  extras: no headers, untyped
//! 'h' 'i'                             payload
//! ```
//!
//! The second message between the same actors names them by index:
//!
//! ```text
//! 04 00 08 00 00 00                   frame header: Data, flags 0, body 8 bytes
//! 02 04 07 10 00 00 'h' 'i'           sender index 0, dest index 1, port 7, ttl, none, none
//! ```
//!
//! A typed payload (see [`crate::fingerprint`]) sets the low bit of the extras varint and
//! carries its type's fingerprint right after it, 8 bytes little-endian (header count in
//! the bits above; headers follow the fingerprint):
//!
//! ```text
//! 04 00 10 00 00 00                   frame header: Data, flags 0, body 16 bytes
//! 02 04 07 10 00 01                   as above, extras 1: no headers, typed
//! 08 07 06 05 04 03 02 01             fingerprint 0x0102030405060708
//! 'h' 'i'                             payload
//! ```
//!
//! Outside a session (no cache) both actors carry tag `00` and their whole id. The test
//! `byte_level_example` checks these exact bytes.

use alloc::vec::Vec;
use core::fmt;

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::fingerprint::TypeFingerprint;
pub use crate::frame::RefuseReason;
use crate::frame::{FrameHeader, FrameKind, HEADER_LEN};
use crate::id::{ActorId, Name, PortId, ProcId};
use crate::idcache::{IdCache, IdSpares, IdTable, Slot};
use crate::meta::{
    put_actor, put_bytes, put_returned, put_varint, read_short_meta, short_meta, ReadActor, Reader,
    SHORT_META_MAX,
};

/// Default hop budget of a new envelope.
pub const DEFAULT_TTL: u8 = 16;

/// A message in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The actor that sent it; failures go back here.
    pub sender: ActorId,
    /// The port it is addressed to.
    pub dest: PortId,
    /// Hops left; a proc that would forward an envelope with TTL 0 returns it instead.
    pub ttl: u8,
    /// Set when this is a message coming back to its sender, with the reason.
    pub returned: Option<Undeliverable>,
    /// The type of the payload, for typed ports (see [`crate::fingerprint`]): a port bound
    /// for another type refuses the message. `None` for untyped payloads.
    pub fingerprint: Option<TypeFingerprint>,
    /// Optional key/value metadata, opaque to procwire.
    pub headers: Headers,
    /// The message itself, opaque to procwire.
    pub payload: Bytes,
}

impl Envelope {
    /// A fresh envelope with the default TTL and no headers.
    pub fn new(sender: ActorId, dest: PortId, payload: Bytes) -> Self {
        Envelope {
            sender,
            dest,
            ttl: DEFAULT_TTL,
            returned: None,
            fingerprint: None,
            headers: Headers::new(),
            payload,
        }
    }

    /// A fresh envelope carrying a payload of the type `fingerprint` names.
    pub fn typed(
        sender: ActorId,
        dest: PortId,
        fingerprint: TypeFingerprint,
        payload: Bytes,
    ) -> Self {
        Envelope {
            fingerprint: Some(fingerprint),
            ..Envelope::new(sender, dest, payload)
        }
    }

    /// The proc this envelope is travelling to: the destination's proc, or the sender's when
    /// it is being returned.
    pub fn next_proc(&self) -> &ProcId {
        match self.returned {
            None => self.dest.actor().proc(),
            Some(_) => self.sender.proc(),
        }
    }
}

/// An envelope's key/value metadata: a list of `(name, value)` pairs, empty in most
/// messages, so it takes one word until the first header is added (an [`Envelope`] is 96
/// bytes, 64 besides its payload's `Bytes`). The first header lives in the same allocation
/// as the list, so one header (a typed port's fingerprint) costs one allocation, as a
/// `Vec` would. Read it with [`Headers::iter`] (or `for h in &headers`), `len`, `get`;
/// grow it with [`Headers::push`] or `extend`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Option<alloc::boxed::Box<HeaderList>>);

#[derive(Clone, PartialEq, Eq)]
struct HeaderList {
    first: (Name, Bytes),
    rest: Vec<(Name, Bytes)>,
}

impl Headers {
    /// No headers.
    pub const fn new() -> Self {
        Headers(None)
    }

    /// Appends one header.
    pub fn push(&mut self, header: (Name, Bytes)) {
        match &mut self.0 {
            Some(list) => list.rest.push(header),
            None => {
                self.0 = Some(alloc::boxed::Box::new(HeaderList {
                    first: header,
                    rest: Vec::new(),
                }))
            }
        }
    }

    /// The headers, in order.
    pub fn iter(&self) -> HeadersIter<'_> {
        match &self.0 {
            Some(list) => HeadersIter {
                first: Some(&list.first),
                rest: list.rest.iter(),
            },
            None => HeadersIter {
                first: None,
                rest: [].iter(),
            },
        }
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |l| 1 + l.rest.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Header `i`, in order.
    pub fn get(&self, i: usize) -> Option<&(Name, Bytes)> {
        let list = self.0.as_ref()?;
        match i {
            0 => Some(&list.first),
            _ => list.rest.get(i - 1),
        }
    }
}

/// Iterator over [`Headers`].
#[derive(Clone, Debug)]
pub struct HeadersIter<'a> {
    first: Option<&'a (Name, Bytes)>,
    rest: core::slice::Iter<'a, (Name, Bytes)>,
}

impl<'a> Iterator for HeadersIter<'a> {
    type Item = &'a (Name, Bytes);
    fn next(&mut self) -> Option<Self::Item> {
        self.first.take().or_else(|| self.rest.next())
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.first.is_some()) + self.rest.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for HeadersIter<'_> {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Extend<(Name, Bytes)> for Headers {
    fn extend<I: IntoIterator<Item = (Name, Bytes)>>(&mut self, iter: I) {
        iter.into_iter().for_each(|h| self.push(h));
    }
}

impl FromIterator<(Name, Bytes)> for Headers {
    fn from_iter<I: IntoIterator<Item = (Name, Bytes)>>(iter: I) -> Self {
        let mut h = Headers::new();
        h.extend(iter);
        h
    }
}

impl From<Vec<(Name, Bytes)>> for Headers {
    fn from(v: Vec<(Name, Bytes)>) -> Self {
        v.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a (Name, Bytes);
    type IntoIter = HeadersIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Why a message came back to its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Undeliverable {
    /// The destination proc has no actor with that id.
    NoSuchActor,
    /// The actor exists but has no such port bound (or a once-port was already used).
    NoSuchPort,
    /// The hop budget ran out.
    TtlExhausted,
    /// The destination proc could not be reached within the configured limits.
    Unreachable,
    /// The destination proc restarted (new incarnation) before confirming delivery.
    PeerRestarted,
    /// The destination proc refused the session.
    Refused(RefuseReason),
    /// The message exceeds the frame limit in force on the link.
    TooLarge {
        /// Encoded size.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The sending or receiving proc is shutting down.
    ShuttingDown,
    /// The receiving proc no longer knew the session, so delivery cannot be proven either way.
    SessionLost,
    /// The message was transmitted, then the link failed (or was given up, or the proc shut
    /// down) before the peer acknowledged it: it may or may not have been delivered.
    Unconfirmed,
    /// The message carried a type fingerprint other than its port's: refused before it was
    /// placed, so the receiver never saw it. The message's own type is the returned
    /// envelope's `fingerprint`.
    WrongType {
        /// The port's type.
        expected: TypeFingerprint,
    },
    /// The receiving port took the message, and its payload did not decode exactly as the
    /// port's message type (malformed, or bytes left over): the receiver was handed no
    /// value. Reported by the receiving driver through
    /// [`Proc::handle_undeliverable`](crate::proc::Proc::handle_undeliverable).
    Undecodable,
}

impl Undeliverable {
    /// True for reasons that mean "delivery unknown" (the message may also have been
    /// delivered): `PeerRestarted`, `SessionLost`, `Unconfirmed`. Every other reason means
    /// it was not delivered.
    pub fn delivery_unknown(self) -> bool {
        matches!(
            self,
            Undeliverable::PeerRestarted | Undeliverable::SessionLost | Undeliverable::Unconfirmed
        )
    }
}

impl fmt::Display for Undeliverable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undeliverable::NoSuchActor => f.write_str("no such actor"),
            Undeliverable::NoSuchPort => f.write_str("no such port"),
            Undeliverable::TtlExhausted => f.write_str("hop budget exhausted"),
            Undeliverable::Unreachable => f.write_str("peer unreachable"),
            Undeliverable::PeerRestarted => f.write_str("peer restarted"),
            Undeliverable::Refused(r) => write!(f, "refused: {r}"),
            Undeliverable::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max}")
            }
            Undeliverable::ShuttingDown => f.write_str("shutting down"),
            Undeliverable::SessionLost => {
                f.write_str("peer lost the session; delivery unknown, not retried")
            }
            Undeliverable::Unconfirmed => {
                f.write_str("link failed before the peer confirmed it; delivery unknown")
            }
            Undeliverable::WrongType { expected } => {
                write!(f, "not of the port's message type {expected}")
            }
            Undeliverable::Undecodable => {
                f.write_str("the payload does not decode as the port's message type")
            }
        }
    }
}

/// The two procs at the ends of a link, for short ids.
#[derive(Clone, Copy, Debug)]
pub struct Link<'a> {
    /// The proc writing the frames.
    pub sender: &'a ProcId,
    /// The proc reading them.
    pub receiver: &'a ProcId,
}

/// Where a decoder looks up cached ids, and records definitions.
pub(crate) trait IdLookup {
    /// The id at index `n`.
    fn get(&self, n: u16) -> Option<&ActorId>;
    /// Records that index `n` is `id`; `false` if that cannot be.
    fn define(&mut self, n: u16, id: &ActorId) -> bool;
}

impl IdLookup for IdTable {
    fn get(&self, n: u16) -> Option<&ActorId> {
        IdTable::get(self, n)
    }
    fn define(&mut self, n: u16, id: &ActorId) -> bool {
        IdTable::define(self, n, id.clone())
    }
}

/// Decoding frames the cache itself encoded: definitions are already in it.
impl IdLookup for IdCache {
    fn get(&self, n: u16) -> Option<&ActorId> {
        IdCache::get(self, n)
    }
    fn define(&mut self, n: u16, id: &ActorId) -> bool {
        IdCache::get(self, n) == Some(id)
    }
}

fn resolve_actor(
    r: ReadActor,
    ids: &mut Option<&mut dyn IdLookup>,
) -> Result<ActorId, EnvelopeError> {
    match r {
        ReadActor::Whole(Slot::Define(n), id) => {
            let known = ids.as_mut().is_none_or(|t| t.define(n, &id));
            if known {
                Ok(id)
            } else {
                Err(EnvelopeError::IdOutOfRange(n))
            }
        }
        ReadActor::Whole(_, id) => Ok(id),
        ReadActor::Ref(n) => ids
            .as_ref()
            .and_then(|t| t.get(n))
            .cloned()
            .ok_or(EnvelopeError::UnknownId(n)),
    }
}

/// Why a frame body is not a valid envelope. The peer's fault; fatal for the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The metadata does not decode.
    Malformed(postcard::Error),
    /// The metadata uses a link-relative id outside a link.
    NoLink,
    /// A cached id index that was never defined on this link.
    UnknownId(u16),
    /// A cached id index beyond the capacity this side announced.
    IdOutOfRange(u16),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Malformed(e) => write!(f, "malformed envelope metadata: {e}"),
            EnvelopeError::NoLink => f.write_str("link-relative id outside a link"),
            EnvelopeError::UnknownId(n) => write!(f, "id index {n} was never defined on this link"),
            EnvelopeError::IdOutOfRange(n) => {
                write!(f, "id index {n} is beyond the announced cache capacity")
            }
        }
    }
}

impl core::error::Error for EnvelopeError {}

/// Appends `env` to `out` as one whole Data frame (header included), with every id whole.
/// If the body would exceed `max` bytes, nothing is appended and the error carries the
/// size and the limit.
pub fn append_envelope(
    env: &Envelope,
    link: Option<Link<'_>>,
    max: u32,
    out: &mut BytesMut,
) -> Result<(), Undeliverable> {
    encode(env, &env.payload, link, max, out, None, true)
}

/// [`append_envelope`] on a link with an id cache: `seq` is the frame's sequence number in
/// the session (definitions remember it, see [`IdCache::rewind`]).
#[inline]
pub fn append_envelope_cached(
    env: &Envelope,
    link: Link<'_>,
    max: u32,
    out: &mut BytesMut,
    cache: &mut IdCache,
    seq: u64,
) -> Result<(), Undeliverable> {
    append_parts_cached(env, &env.payload, link, max, out, cache, seq)
}

/// [`append_envelope_cached`] with `payload` in place of `env.payload` (which is not
/// looked at): a caller that has the payload as a borrowed slice sends without making it
/// `Bytes` first.
#[inline]
pub(crate) fn append_parts_cached(
    env: &Envelope,
    payload: &[u8],
    link: Link<'_>,
    max: u32,
    out: &mut BytesMut,
    cache: &mut IdCache,
    seq: u64,
) -> Result<(), Undeliverable> {
    encode(env, payload, Some(link), max, out, Some((cache, seq)), true)
}

/// [`append_envelope_cached`] without the payload: appends the frame's header (its length
/// counts the payload) and the metadata, and the payload is written after them by other
/// means (the chunk store keeps a large one apart, see `crate::chunks`).
#[inline]
pub(crate) fn append_envelope_head_cached(
    env: &Envelope,
    link: Link<'_>,
    max: u32,
    out: &mut BytesMut,
    cache: &mut IdCache,
    seq: u64,
) -> Result<(), Undeliverable> {
    encode(
        env,
        &env.payload,
        Some(link),
        max,
        out,
        Some((cache, seq)),
        false,
    )
}

/// Encodes `env` with `payload` as its payload (appended only `with_payload`; its length
/// counts in the frame's either way).
fn encode(
    env: &Envelope,
    payload: &[u8],
    link: Option<Link<'_>>,
    max: u32,
    out: &mut BytesMut,
    mut cache: Option<(&mut IdCache, u64)>,
    with_payload: bool,
) -> Result<(), Undeliverable> {
    let too_large = |len: usize| Undeliverable::TooLarge {
        len: u32::try_from(len).unwrap_or(u32::MAX),
        max,
    };
    let mut slot = |a: &ActorId| match cache.as_mut() {
        Some((c, seq)) => c.slot(a, *seq),
        None => Slot::Inline,
    };
    let (s, d) = (slot(&env.sender), slot(env.dest.actor()));
    let plain = env.returned.is_none() && env.headers.is_empty();
    if let Some(meta) = short_meta(s, d, env.dest.index(), env.ttl, plain, env.fingerprint) {
        let meta = meta.as_bytes();
        let body = meta.len() + payload.len();
        let len = u32::try_from(body).ok().filter(|l| *l <= max);
        let len = len.ok_or_else(|| too_large(body))?;
        let mut head = [0u8; HEADER_LEN + SHORT_META_MAX];
        let mut h = [0u8; HEADER_LEN];
        let kind = FrameKind::Data;
        FrameHeader {
            kind,
            flags: 0,
            len,
        }
        .write(&mut h);
        head[..HEADER_LEN].copy_from_slice(&h);
        head[HEADER_LEN..HEADER_LEN + meta.len()].copy_from_slice(meta);
        out.extend_from_slice(&head[..HEADER_LEN + meta.len()]);
        if with_payload {
            out.extend_from_slice(payload);
        }
        return Ok(());
    }
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    if put_meta(env, link, out, s, d).is_err() {
        // Serializing into memory has no failure path; should it fail, the message is
        // refused (the caller keeps it), and nothing else in `out` is touched.
        out.truncate(start);
        return Err(too_large(usize::MAX));
    }
    let body = out.len() - start - HEADER_LEN + payload.len();
    match u32::try_from(body) {
        Ok(len) if len <= max => {
            if with_payload {
                out.extend_from_slice(payload);
            }
            let mut h = [0u8; HEADER_LEN];
            FrameHeader {
                kind: FrameKind::Data,
                flags: 0,
                len,
            }
            .write(&mut h);
            out[start..start + HEADER_LEN].copy_from_slice(&h);
            Ok(())
        }
        _ => {
            out.truncate(start);
            Err(too_large(body))
        }
    }
}

/// Writes the metadata of `env` (see `meta` for the layout), its actors in slots `s` and
/// `d`.
fn put_meta(
    env: &Envelope,
    link: Option<Link<'_>>,
    out: &mut BytesMut,
    s: Slot,
    d: Slot,
) -> Result<(), postcard::Error> {
    put_actor(out, &env.sender, link, s)?;
    put_actor(out, env.dest.actor(), link, d)?;
    put_varint(out, env.dest.index());
    out.extend_from_slice(&[env.ttl]);
    put_returned(out, env.returned)?;
    put_varint(
        out,
        (env.headers.len() as u64) << 1 | u64::from(env.fingerprint.is_some()),
    );
    if let Some(f) = env.fingerprint {
        out.extend_from_slice(&f.to_le_bytes());
    }
    for (k, v) in &env.headers {
        put_bytes(out, k.as_str().as_bytes());
        put_bytes(out, v);
    }
    Ok(())
}

/// The common shape in one step: the metadata `short_meta` writes (typed or not; both
/// actors by cached index, a port below 2^14, no return reason, no headers). The body becomes the payload
/// (advanced past the metadata: no new reference to its buffer). `Err` gives the body
/// back to go the long way: anything else, and an index this link never defined (to be
/// reported).
#[inline]
fn decode_short<L: IdLookup + ?Sized>(
    mut body: Bytes,
    ids: Option<&L>,
    spares: Option<&mut IdSpares>,
) -> Result<Envelope, Bytes> {
    let Some((s, d, port, ttl, fingerprint, meta)) = read_short_meta(&body) else {
        return Err(body);
    };
    let Some(ids) = ids else {
        return Err(body);
    };
    let actor = |tag: u8| match Slot::from_tag(u32::from(tag)) {
        Some(Slot::Ref(n)) if tag < 0x80 => ids.get(n),
        _ => None,
    };
    let (Some(sender), Some(dest)) = (actor(s), actor(d)) else {
        return Err(body);
    };
    let (sender, dest) = match spares {
        Some(spares) => spares.take(sender, dest),
        None => (sender.clone(), dest.clone()),
    };
    body.advance(meta);
    Ok(Envelope {
        sender,
        dest: PortId::new(dest, port),
        ttl,
        returned: None,
        fingerprint,
        headers: Headers::new(),
        payload: body,
    })
}

/// Decodes a Data frame body whose ids are all whole. The payload (and header values) are
/// slices of `body`.
pub fn decode_envelope(body: Bytes, link: Option<Link<'_>>) -> Result<Envelope, EnvelopeError> {
    decode(body, link, None)
}

/// Decodes a Data frame body on a link with an id cache: definitions are recorded in
/// `table`, references looked up there.
#[inline]
pub fn decode_envelope_cached(
    body: Bytes,
    link: Link<'_>,
    table: &mut IdTable,
) -> Result<Envelope, EnvelopeError> {
    decode_reusing(body, link, table, None)
}

/// [`decode_envelope_cached`] that takes the ids of the common shape from `spares` when
/// they are the very ids (see `IdSpares`).
#[inline]
pub(crate) fn decode_reusing(
    body: Bytes,
    link: Link<'_>,
    table: &mut IdTable,
    spares: Option<&mut IdSpares>,
) -> Result<Envelope, EnvelopeError> {
    // The fast path with the table's own type, so its lookups inline.
    match decode_short(body, Some(&*table), spares) {
        Ok(env) => Ok(env),
        Err(body) => decode(body, Some(link), Some(table)),
    }
}

pub(crate) fn decode(
    body: Bytes,
    link: Option<Link<'_>>,
    mut ids: Option<&mut dyn IdLookup>,
) -> Result<Envelope, EnvelopeError> {
    let body = match decode_short(body, ids.as_deref(), None) {
        Ok(env) => return Ok(env),
        Err(body) => body,
    };
    let m = EnvelopeError::Malformed;
    let mut r = Reader::new(&body);
    let sender = r.actor(link)?;
    let dest = r.actor(link)?;
    let port = r.varint(10).map_err(m)?;
    let ttl = r.byte().map_err(m)?;
    let returned = r.returned().map_err(m)?;
    let extras = r.varint(10).map_err(m)?;
    let fingerprint = match extras & 1 {
        0 => None,
        _ => Some(r.fingerprint().map_err(m)?),
    };
    let mut headers = Headers::new();
    for _ in 0..extras >> 1 {
        let k = r.name().map_err(m)?;
        let v = r.bytes().map_err(m)?;
        headers.push((k, body.slice_ref(v)));
    }
    let payload = body.slice_ref(r.rest());
    // Resolved after the whole metadata parsed: a malformed frame defines nothing.
    let sender = resolve_actor(sender, &mut ids)?;
    let dest_actor = resolve_actor(dest, &mut ids)?;
    Ok(Envelope {
        sender,
        dest: PortId::new(dest_actor, port),
        ttl,
        returned,
        fingerprint,
        headers,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameDecoder, Item};
    use crate::id::strategy;
    use proptest::prelude::*;

    fn reason() -> impl Strategy<Value = Option<Undeliverable>> {
        prop_oneof![
            Just(None),
            Just(Some(Undeliverable::NoSuchPort)),
            Just(Some(Undeliverable::Refused(RefuseReason::WrongProc))),
            (any::<u32>(), any::<u32>())
                .prop_map(|(len, max)| Some(Undeliverable::TooLarge { len, max })),
        ]
    }

    fn envelope() -> impl Strategy<Value = Envelope> {
        (
            strategy::actor_id(),
            strategy::port_id(),
            any::<u8>(),
            reason(),
            prop::collection::vec(
                (strategy::name(), prop::collection::vec(any::<u8>(), 0..20)),
                0..3,
            ),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(sender, dest, ttl, returned, headers, payload)| Envelope {
                fingerprint: TypeFingerprint::from_u64(u64::from(ttl) * 0x9e37_79b9),
                sender,
                dest,
                ttl,
                returned,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, Bytes::from(v)))
                    .collect(),
                payload: Bytes::from(payload),
            })
    }

    fn roundtrip(env: &Envelope, link: Option<Link<'_>>) -> Envelope {
        let mut out = BytesMut::new();
        append_envelope(env, link, u32::MAX, &mut out).unwrap();
        let mut d = FrameDecoder::frames_only(u32::MAX, BytesMut::new());
        let p = d.decode(&out).unwrap();
        assert_eq!(p.consumed, out.len());
        assert!(matches!(p.item, Some(Item::Frame(h)) if h.kind == FrameKind::Data));
        decode_envelope(d.take_body(), link).unwrap()
    }

    proptest! {
        #[test]
        fn envelopes_roundtrip_with_and_without_link(env in envelope(), use_sender in any::<bool>()) {
            prop_assert_eq!(&roundtrip(&env, None), &env);
            // A link whose ends are the envelope's procs: ids are sent short.
            let a = env.sender.proc().clone();
            let b = env.dest.actor().proc().clone();
            let link = if use_sender { Link { sender: &a, receiver: &b } } else { Link { sender: &b, receiver: &a } };
            prop_assert_eq!(&roundtrip(&env, Some(link)), &env);
        }

        #[test]
        fn arbitrary_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let p = ProcId::new(crate::id::ChannelAddr::Local(1), Name::new("p").unwrap());
            let _ = decode_envelope(Bytes::from(bytes.clone()), None);
            let _ = decode_envelope(Bytes::from(bytes), Some(Link { sender: &p, receiver: &p }));
        }
    }

    fn example() -> (ProcId, ProcId, Envelope) {
        let a = ProcId::new(crate::id::ChannelAddr::Local(1), Name::new("a").unwrap());
        let b = ProcId::new(crate::id::ChannelAddr::Local(2), Name::new("b").unwrap());
        let env = Envelope::new(
            a.actor(Name::new("client").unwrap(), 0),
            b.actor(Name::new("echo").unwrap(), 0).port(7),
            Bytes::from_static(b"hi"),
        );
        (a, b, env)
    }

    #[test]
    fn byte_level_example() {
        let (a, b, env) = example();
        let link = Link {
            sender: &a,
            receiver: &b,
        };
        let mut cache = IdCache::new(8);
        let mut out = BytesMut::new();
        append_envelope_cached(&env, link, u32::MAX, &mut out, &mut cache, 0).unwrap();
        let mut want = std::vec![4u8, 0, 24, 0, 0, 0];
        want.extend_from_slice(&[3, 0, 6]);
        want.extend_from_slice(b"client");
        want.extend_from_slice(&[0, 5, 1, 4]);
        want.extend_from_slice(b"echo");
        want.extend_from_slice(&[0, 7, 16, 0, 0]);
        want.extend_from_slice(b"hi");
        assert_eq!(&out[..], &want[..]);
        let first = out.split().freeze();
        append_envelope_cached(&env, link, u32::MAX, &mut out, &mut cache, 1).unwrap();
        assert_eq!(
            &out[..],
            &[4, 0, 8, 0, 0, 0, 2, 4, 7, 16, 0, 0, b'h', b'i'][..]
        );
        // The receiver learns the ids from the first frame and resolves the second.
        let mut table = IdTable::new(8);
        for frame in [first, out.freeze()] {
            let got = decode_envelope_cached(frame.slice(HEADER_LEN..), link, &mut table).unwrap();
            assert_eq!(got, env);
        }
        // Without a cache, every id is whole behind tag 0.
        let mut plain = BytesMut::new();
        append_envelope(&env, Some(link), u32::MAX, &mut plain).unwrap();
        assert_eq!(&plain[6..9], &[0, 0, 6]);
        // Typed: extras 1, then the fingerprint.
        let typed = Envelope {
            fingerprint: TypeFingerprint::from_u64(0x0102_0304_0506_0708),
            ..env
        };
        let mut out = BytesMut::new();
        append_envelope_cached(&typed, link, u32::MAX, &mut out, &mut cache, 2).unwrap();
        assert_eq!(
            &out[..],
            &[4, 0, 16, 0, 0, 0, 2, 4, 7, 16, 0, 1, 8, 7, 6, 5, 4, 3, 2, 1, b'h', b'i'][..]
        );
        let got = decode_envelope_cached(out.freeze().slice(HEADER_LEN..), link, &mut table);
        assert_eq!(got.unwrap(), typed);
    }

    #[test]
    fn ports_of_one_and_two_varint_bytes_take_the_short_form_with_the_same_bytes() {
        let (a, b, env) = example();
        let link = Link {
            sender: &a,
            receiver: &b,
        };
        for port in [0u64, 127, 128, 1024, (1 << 14) - 1, 1 << 14, 1 << 20] {
            let env = Envelope {
                dest: env.dest.actor().port(port),
                ..env.clone()
            };
            let mut cache = IdCache::new(8);
            let mut table = IdTable::new(8);
            let mut out = BytesMut::new();
            append_envelope_cached(&env, link, u32::MAX, &mut out, &mut cache, 0).unwrap();
            let first = out.split().freeze();
            append_envelope_cached(&env, link, u32::MAX, &mut out, &mut cache, 1).unwrap();
            let mut want = BytesMut::from(&[2u8, 4][..]);
            put_varint(&mut want, port);
            want.extend_from_slice(&[16, 0, 0, b'h', b'i']);
            assert_eq!(&out[HEADER_LEN..], &want[..], "port {port}");
            for frame in [first, out.freeze()] {
                let got = decode_envelope_cached(frame.slice(HEADER_LEN..), link, &mut table);
                assert_eq!(got.unwrap(), env, "port {port}");
            }
        }
        // A two-byte varint with a zero high byte is not canonical: the short form leaves it
        // to the general decoder, which reads the same port.
        let mut table = IdTable::new(8);
        let mut cache = IdCache::new(8);
        let mut out = BytesMut::new();
        append_envelope_cached(&env, link, u32::MAX, &mut out, &mut cache, 0).unwrap();
        decode_envelope_cached(out.freeze().slice(HEADER_LEN..), link, &mut table).unwrap();
        let long = Bytes::from_static(&[2, 4, 0x87, 0x00, 16, 0, 0, b'h', b'i']);
        assert!(read_short_meta(&long).is_none());
        assert_eq!(decode_envelope_cached(long, link, &mut table).unwrap(), env);
    }

    #[test]
    fn a_zero_fingerprint_is_malformed() {
        let (a, b, env) = example();
        let link = Link {
            sender: &a,
            receiver: &b,
        };
        let mut out = BytesMut::new();
        append_envelope(&env, Some(link), u32::MAX, &mut out).unwrap();
        // Turn "extras 0" into "typed" with eight zero bytes.
        let body_end = out.len() - 2;
        let mut body = out[HEADER_LEN..body_end - 1].to_vec();
        body.push(1);
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(b"hi");
        let got = decode_envelope(Bytes::from(body), Some(link));
        assert!(matches!(got, Err(EnvelopeError::Malformed(_))), "{got:?}");
    }

    #[test]
    fn a_64_byte_payload_costs_77_bytes_once_ids_are_cached() {
        let (a, b, mut env) = example();
        env.dest = env.dest.actor().port(1024);
        env.payload = Bytes::from(std::vec![7u8; 64]);
        let link = Link {
            sender: &a,
            receiver: &b,
        };
        let mut cache = IdCache::new(8);
        let mut out = BytesMut::new();
        append_envelope_cached(&env, link, u32::MAX, &mut out, &mut cache, 0).unwrap();
        out.clear();
        append_envelope_cached(&env, link, u32::MAX, &mut out, &mut cache, 1).unwrap();
        assert_eq!(out.len(), 77);
    }

    #[test]
    fn unknown_and_out_of_range_indices_are_errors() {
        let (a, b, env) = example();
        let link = Link {
            sender: &a,
            receiver: &b,
        };
        let mut cache = IdCache::new(8);
        let mut out = BytesMut::new();
        append_envelope_cached(&env, link, u32::MAX, &mut out, &mut cache, 0).unwrap();
        let first = out.split().freeze();
        append_envelope_cached(&env, link, u32::MAX, &mut out, &mut cache, 1).unwrap();
        let mut fresh = IdTable::new(8);
        let second = out.freeze().slice(HEADER_LEN..);
        assert_eq!(
            decode_envelope_cached(second, link, &mut fresh),
            Err(EnvelopeError::UnknownId(0))
        );
        let mut small = IdTable::new(1);
        assert_eq!(
            decode_envelope_cached(first.slice(HEADER_LEN..), link, &mut small),
            Err(EnvelopeError::IdOutOfRange(1))
        );
    }

    #[test]
    fn payload_is_a_slice_of_the_frame() {
        let (a, b, env) = example();
        let mut out = BytesMut::new();
        append_envelope(
            &env,
            Some(Link {
                sender: &a,
                receiver: &b,
            }),
            u32::MAX,
            &mut out,
        )
        .unwrap();
        let body = Bytes::copy_from_slice(&out[HEADER_LEN..]);
        let range = body.as_ptr_range();
        let got = decode_envelope(
            body.clone(),
            Some(Link {
                sender: &a,
                receiver: &b,
            }),
        )
        .unwrap();
        assert!(range.contains(&got.payload.as_ptr()));
        assert_eq!(got.payload, Bytes::from_static(b"hi"));
    }

    #[test]
    fn too_large_leaves_buffer_untouched_and_names_the_limit() {
        let (a, b, mut env) = example();
        env.payload = Bytes::from(std::vec![0u8; 100]);
        let mut out = BytesMut::from(&b"xyz"[..]);
        let err = append_envelope(
            &env,
            Some(Link {
                sender: &a,
                receiver: &b,
            }),
            64,
            &mut out,
        )
        .unwrap_err();
        assert_eq!(err, Undeliverable::TooLarge { len: 122, max: 64 });
        assert_eq!(&out[..], b"xyz");
    }

    #[test]
    fn an_envelope_is_at_most_64_bytes_besides_its_payload() {
        let besides = core::mem::size_of::<Envelope>() - core::mem::size_of::<Bytes>();
        assert!(besides <= 64, "{besides} bytes besides the payload");
        assert_eq!(core::mem::size_of::<Headers>(), 8);
    }

    #[test]
    fn headers_read_like_a_slice_and_grow() {
        let mut h = Headers::new();
        assert!(h.is_empty());
        h.push((Name::new("a").unwrap(), Bytes::from_static(b"1")));
        h.extend([(Name::new("b").unwrap(), Bytes::from_static(b"2"))]);
        assert_eq!(h.len(), 2);
        assert_eq!(h.get(1).map(|(_, v)| v), Some(&Bytes::from_static(b"2")));
        assert_eq!(h.iter().len(), 2);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(Headers::from(Vec::new()), Headers::new());
    }

    #[test]
    fn link_relative_ids_need_a_link() {
        let (a, b, env) = example();
        let mut out = BytesMut::new();
        append_envelope(
            &env,
            Some(Link {
                sender: &a,
                receiver: &b,
            }),
            u32::MAX,
            &mut out,
        )
        .unwrap();
        let body = Bytes::copy_from_slice(&out[HEADER_LEN..]);
        assert_eq!(decode_envelope(body, None), Err(EnvelopeError::NoLink));
    }
}
