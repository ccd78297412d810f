//! Type fingerprints: a stable 64-bit identifier of a message type, carried by typed
//! envelopes and held by typed ports, so that a message of another type is refused as it
//! arrives instead of being misread.
//!
//! [`TypeFingerprint::of::<M>()`](TypeFingerprint::of) is the 64-bit FNV-1a hash of the
//! UTF-8 text of [`core::any::type_name::<M>()`](core::any::type_name), e.g.
//! `alloc::vec::Vec<u8>` or `my_app::proto::Ping`; a hash of 0 is taken as 1, so a
//! fingerprint is never zero (an `Option<TypeFingerprint>` costs no more than a `u64`).
//! Anyone can compute it from that text ([`TypeFingerprint::of_type_name`]), in any
//! language.
//!
//! Where it is checked: a port bound with a fingerprint
//! ([`Registry::open_port`](crate::registry::Registry::open_port)) refuses an envelope that
//! carries another one when it arrives, before it is placed in the port's queue; the
//! envelope goes back to its sender as
//! [`Undeliverable::WrongType`](crate::envelope::Undeliverable::WrongType). An envelope
//! without a fingerprint (an untyped send) and a port without one skip the check.

use core::fmt;
use core::num::NonZeroU64;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A stable 64-bit identifier of a message type (never zero).
///
/// It serializes as 8 bytes, little-endian, the same bytes envelopes carry on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeFingerprint(NonZeroU64);

impl TypeFingerprint {
    /// The fingerprint of `M`: FNV-1a (64-bit) of `core::any::type_name::<M>()`.
    pub fn of<M: ?Sized>() -> Self {
        Self::of_type_name(core::any::type_name::<M>())
    }

    /// The fingerprint of a type named `name` (the text `core::any::type_name` gives).
    pub const fn of_type_name(name: &str) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let bytes = name.as_bytes();
        let mut hash = OFFSET;
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(PRIME);
            i += 1;
        }
        Self::from_hash(hash)
    }

    /// A fingerprint from its numeric value; `None` for 0, which no fingerprint has.
    pub const fn from_u64(value: u64) -> Option<Self> {
        match NonZeroU64::new(value) {
            Some(v) => Some(TypeFingerprint(v)),
            None => None,
        }
    }

    const fn from_hash(hash: u64) -> Self {
        match NonZeroU64::new(hash) {
            Some(v) => TypeFingerprint(v),
            None => TypeFingerprint(NonZeroU64::MIN),
        }
    }

    /// The numeric value (never 0).
    pub const fn get(self) -> u64 {
        self.0.get()
    }

    /// The 8 bytes it travels as (little-endian).
    pub const fn to_le_bytes(self) -> [u8; 8] {
        self.0.get().to_le_bytes()
    }

    /// Reads the 8 bytes it travels as; `None` for eight zero bytes.
    pub const fn from_le_bytes(bytes: [u8; 8]) -> Option<Self> {
        Self::from_u64(u64::from_le_bytes(bytes))
    }
}

impl Serialize for TypeFingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_le_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for TypeFingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = <[u8; 8]>::deserialize(d)?;
        Self::from_le_bytes(bytes)
            .ok_or_else(|| serde::de::Error::custom("a type fingerprint is never zero"))
    }
}

impl fmt::Display for TypeFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.get())
    }
}

impl fmt::Debug for TypeFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypeFingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_of_the_type_name() {
        // FNV-1a 64 of "" is the offset basis; of "a" a known value.
        assert_eq!(
            TypeFingerprint::of_type_name("").get(),
            0xcbf2_9ce4_8422_2325
        );
        assert_eq!(
            TypeFingerprint::of_type_name("a").get(),
            0xaf63_dc4c_8601_ec8c
        );
        assert_eq!(
            TypeFingerprint::of::<u32>(),
            TypeFingerprint::of_type_name("u32")
        );
        assert_ne!(TypeFingerprint::of::<u32>(), TypeFingerprint::of::<u64>());
    }

    #[test]
    fn never_zero_and_eight_bytes_on_the_wire() {
        assert_eq!(TypeFingerprint::from_u64(0), None);
        assert_eq!(TypeFingerprint::from_le_bytes([0; 8]), None);
        let f = TypeFingerprint::from_u64(0x0102_0304_0506_0708).unwrap();
        assert_eq!(f.to_le_bytes(), [8, 7, 6, 5, 4, 3, 2, 1]);
        let mut buf = [0u8; 16];
        let used = postcard::to_slice(&f, &mut buf).unwrap();
        assert_eq!(used, &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(postcard::from_bytes::<TypeFingerprint>(used).unwrap(), f);
        assert!(postcard::from_bytes::<TypeFingerprint>(&[0; 8]).is_err());
        assert_eq!(
            core::mem::size_of::<Option<TypeFingerprint>>(),
            core::mem::size_of::<u64>()
        );
    }
}
