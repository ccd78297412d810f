//! Envelope metadata, written and read by hand: the same bytes postcard would give for the
//! layout documented in [`crate::envelope`], without serde's machinery on the data path.
//!
//! ```text
//! sender  actor            varint tag (see idcache::Slot), then unless a reference:
//!                          proc ref (varint 0 LinkSender | 1 LinkReceiver | 2 Full + ProcId),
//!                          name (varint length + UTF-8), pid (varint)
//! dest    actor            the same
//! port    varint
//! ttl     u8
//! returned                 0 | 1 + Undeliverable (postcard)
//! extras  varint           header count << 1 | typed
//! type    8 bytes          only when typed: the TypeFingerprint, little-endian (never 0)
//! headers                  each: name (varint length + UTF-8), value (varint length + bytes)
//! ```
//!
//! Varints are LEB128 (postcard's), at most 5 bytes for a u32 and 10 for a u64. The rare
//! parts (a full proc id, a return reason) go through postcard itself.

use bytes::BytesMut;

use crate::envelope::{EnvelopeError, Link, Undeliverable};
use crate::fingerprint::TypeFingerprint;
use crate::id::{ActorId, Name, ProcId};
use crate::idcache::Slot;

type PErr = postcard::Error;

/// Writes an unsigned LEB128 varint at `buf[at..]`; returns the position after it. `buf`
/// must have room for 10 bytes from `at`.
fn varint_at(buf: &mut [u8], mut at: usize, mut v: u64) -> usize {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[at] = byte;
            return at + 1;
        }
        buf[at] = byte | 0x80;
        at += 1;
    }
}

/// Appends an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut BytesMut, v: u64) {
    let mut buf = [0u8; 10];
    let n = varint_at(&mut buf, 0, v);
    out.extend_from_slice(&buf[..n]);
}

/// Most bytes of the common metadata shape (see [`short_meta`]): two actor indices, a port
/// of up to two varint bytes, the ttl, "no return reason", the extras byte and, typed, the
/// 8 bytes of the fingerprint.
pub(crate) const SHORT_META_MAX: usize = 7 + 8;

/// Ports the common shape carries: those whose varint takes at most two bytes (well-known
/// ports and the first sixteen thousand ephemeral ones of a root name).
const SHORT_PORT_LIMIT: u64 = 1 << 14;

/// The common metadata shape, ready to write.
pub(crate) struct ShortMeta {
    buf: [u8; SHORT_META_MAX],
    len: usize,
}

impl ShortMeta {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The common case in one write: both actors by index (one byte each), a port below
/// 2^14, no return reason, no headers, typed or not: the same bytes the general encoder
/// gives. `None` when the envelope is not of that shape.
pub(crate) fn short_meta(
    sender: Slot,
    dest: Slot,
    port: u64,
    ttl: u8,
    plain: bool,
    fingerprint: Option<TypeFingerprint>,
) -> Option<ShortMeta> {
    let (Slot::Ref(_), Slot::Ref(_), true) = (sender, dest, plain) else {
        return None;
    };
    let (s, d) = (sender.tag(), dest.tag());
    if s >= 0x80 || d >= 0x80 || port >= SHORT_PORT_LIMIT {
        return None;
    }
    let mut buf = [0u8; SHORT_META_MAX];
    buf[..2].copy_from_slice(&[s as u8, d as u8]);
    let mut len = varint_at(&mut buf, 2, port);
    // ttl, "no return reason", then "no headers" and whether typed (its fingerprint
    // follows).
    buf[len..len + 3].copy_from_slice(&[ttl, 0, u8::from(fingerprint.is_some())]);
    len += 3;
    if let Some(f) = fingerprint {
        buf[len..len + 8].copy_from_slice(&f.to_le_bytes());
        len += 8;
    }
    Some(ShortMeta { buf, len })
}

/// The fields of the common metadata shape at the start of `body`, and its length: the
/// actor tags, port, ttl and fingerprint. `None` for anything else (the general decoder
/// then reads it, and reports what is malformed).
pub(crate) fn read_short_meta(
    body: &[u8],
) -> Option<(u8, u8, u64, u8, Option<TypeFingerprint>, usize)> {
    let (&[s, d, p0], rest) = body.split_first_chunk::<3>()?;
    let (port, rest) = match p0 {
        0..0x80 => (u64::from(p0), rest),
        _ => {
            let (&[p1], rest) = rest.split_first_chunk::<1>()?;
            // Canonical two-byte varints only; anything longer goes the long way.
            if !(1..0x80).contains(&p1) {
                return None;
            }
            (u64::from(p0 & 0x7f) | u64::from(p1) << 7, rest)
        }
    };
    let (&[ttl, 0, extras], rest) = rest.split_first_chunk::<3>()? else {
        return None;
    };
    let fingerprint = match extras {
        0 => None,
        // A zero fingerprint is malformed: the long way reports it.
        1 => Some(TypeFingerprint::from_le_bytes(*rest.first_chunk::<8>()?)?),
        _ => return None,
    };
    let len = body.len() - rest.len() + fingerprint.map_or(0, |_| 8);
    Some((s, d, port, ttl, fingerprint, len))
}

pub(crate) fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends an actor named by `slot`: the tag, and the whole id unless a reference.
pub(crate) fn put_actor(
    out: &mut BytesMut,
    a: &ActorId,
    link: Option<Link<'_>>,
    slot: Slot,
) -> Result<(), PErr> {
    put_varint(out, u64::from(slot.tag()));
    if let Slot::Ref(_) = slot {
        return Ok(());
    }
    let p = a.proc();
    match link {
        Some(l) if l.sender == p => out.extend_from_slice(&[0]),
        Some(l) if l.receiver == p => out.extend_from_slice(&[1]),
        _ => {
            out.extend_from_slice(&[2]);
            put_postcard(out, p)?;
        }
    }
    put_bytes(out, a.name().as_str().as_bytes());
    put_varint(out, a.pid());
    Ok(())
}

/// Appends `value` in postcard (the rare, large parts).
pub(crate) fn put_postcard<T: serde::Serialize>(out: &mut BytesMut, value: &T) -> Result<(), PErr> {
    let mut stack = [0u8; 256];
    match postcard::to_slice(value, &mut stack) {
        Ok(used) => {
            out.extend_from_slice(used);
            Ok(())
        }
        Err(_) => {
            let v = postcard::to_allocvec(value)?;
            out.extend_from_slice(&v);
            Ok(())
        }
    }
}

/// Appends a return reason (`None` is one zero byte).
pub(crate) fn put_returned(out: &mut BytesMut, r: Option<Undeliverable>) -> Result<(), PErr> {
    match r {
        None => out.extend_from_slice(&[0]),
        Some(r) => {
            out.extend_from_slice(&[1]);
            put_postcard(out, &r)?;
        }
    }
    Ok(())
}

/// A cursor over metadata bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

/// An actor as read: the whole id, or an index to look up.
pub(crate) enum ReadActor {
    Whole(Slot, ActorId),
    Ref(u16),
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// What is left (the payload, once the metadata is read).
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn byte(&mut self) -> Result<u8, PErr> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(PErr::DeserializeUnexpectedEnd)?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn varint(&mut self, max_bytes: usize) -> Result<u64, PErr> {
        let mut v = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PErr::DeserializeBadVarint)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], PErr> {
        let len = usize::try_from(self.varint(10)?).map_err(|_| PErr::DeserializeBadVarint)?;
        if len > self.buf.len() {
            return Err(PErr::DeserializeUnexpectedEnd);
        }
        let (b, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(b)
    }

    /// A [`TypeFingerprint`]: 8 bytes, little-endian, never 0.
    pub(crate) fn fingerprint(&mut self) -> Result<TypeFingerprint, PErr> {
        let Some((b, rest)) = self.buf.split_first_chunk::<8>() else {
            return Err(PErr::DeserializeUnexpectedEnd);
        };
        self.buf = rest;
        TypeFingerprint::from_le_bytes(*b).ok_or(PErr::DeserializeBadEncoding)
    }

    pub(crate) fn name(&mut self) -> Result<Name, PErr> {
        let b = self.bytes()?;
        let s = core::str::from_utf8(b).map_err(|_| PErr::DeserializeBadUtf8)?;
        Name::new(s).map_err(|_| PErr::DeserializeBadEncoding)
    }

    /// Reads a postcard value (the rare, large parts).
    pub(crate) fn postcard<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, PErr> {
        let (v, rest) = postcard::take_from_bytes::<T>(self.buf)?;
        self.buf = rest;
        Ok(v)
    }

    pub(crate) fn actor(&mut self, link: Option<Link<'_>>) -> Result<ReadActor, EnvelopeError> {
        let tag = self.varint(5).map_err(EnvelopeError::Malformed)?;
        let slot = u32::try_from(tag)
            .ok()
            .and_then(Slot::from_tag)
            .ok_or(EnvelopeError::Malformed(PErr::DeserializeBadEncoding))?;
        if let Slot::Ref(n) = slot {
            return Ok(ReadActor::Ref(n));
        }
        let m = EnvelopeError::Malformed;
        let proc = match self.varint(5).map_err(m)? {
            0 => link
                .map(|l| l.sender.clone())
                .ok_or(EnvelopeError::NoLink)?,
            1 => link
                .map(|l| l.receiver.clone())
                .ok_or(EnvelopeError::NoLink)?,
            2 => self.postcard::<ProcId>().map_err(m)?,
            _ => return Err(m(PErr::DeserializeBadEnum)),
        };
        let name = self.name().map_err(m)?;
        let pid = self.varint(10).map_err(m)?;
        Ok(ReadActor::Whole(slot, ActorId::new(proc, name, pid)))
    }

    pub(crate) fn returned(&mut self) -> Result<Option<Undeliverable>, PErr> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.postcard().map(Some),
            _ => Err(PErr::DeserializeBadOption),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_postcard_and_refuse_overlong_input() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = BytesMut::new();
            put_varint(&mut out, v);
            assert_eq!(&out[..], &postcard::to_allocvec(&v).unwrap()[..], "{v}");
            assert_eq!(Reader::new(&out).varint(10), Ok(v));
        }
        assert_eq!(
            Reader::new(&[0x80; 6]).varint(5),
            Err(PErr::DeserializeBadVarint)
        );
        assert_eq!(
            Reader::new(&[0x80]).varint(5),
            Err(PErr::DeserializeUnexpectedEnd)
        );
    }

    #[test]
    fn names_are_checked_by_the_one_predicate() {
        let mut out = BytesMut::new();
        put_bytes(&mut out, b"1bad");
        assert!(Reader::new(&out).name().is_err());
        out.clear();
        put_bytes(&mut out, b"good_name");
        assert_eq!(Reader::new(&out).name().unwrap().as_str(), "good_name");
        assert!(Reader::new(&[5, b'a']).name().is_err(), "short");
    }
}
