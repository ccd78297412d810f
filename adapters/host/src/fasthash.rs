//! A fast hasher for the engine's maps, whose keys are ids (`PortId`, `ActorId`, `ProcId`)
//! and connection numbers looked up once or more per message.
//!
//! std's default (SipHash-1-3) resists collision flooding by keys an attacker chooses, at
//! about 700 instructions per port id (its address and names are hashed byte by byte in
//! 8-byte rounds). The engine's maps hold only keys this proc made (its own ports, actors
//! and connections, and peers its users send to); a peer can make it *look up* a key
//! (the destination of a message it sends) but never *insert* one, so it cannot build a
//! chain of colliding entries. These maps use a multiply-rotate hash instead: each 8-byte
//! word is mixed in with one rotate, one xor and one multiply.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`WordHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

/// Odd multiplier with well-spread bits (the 64-bit golden ratio).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// Mixes 8 bytes at a time: `h = (h.rotate_left(5) ^ word) * K`.
#[derive(Default, Clone, Copy)]
pub(crate) struct WordHasher {
    hash: u64,
}

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ (rest.len() as u64) << 59);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top 7 bits: fold the high half in so
        // they depend on every word.
        self.hash ^ (self.hash >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash + ?Sized>(t: &T) -> u64 {
        BuildHasherDefault::<WordHasher>::default().hash_one(t)
    }

    #[test]
    fn distinct_ids_spread_over_buckets() {
        let actor: procwire_core::id::ActorId = "unix:@node,p,a[0]".parse().expect("id");
        let mut low = std::collections::HashSet::new();
        let mut top = std::collections::HashSet::new();
        for i in 0..4096u64 {
            let h = hash(&actor.port(i));
            low.insert(h & 0xfff);
            top.insert(h >> 57);
        }
        // Random hashes would fill about 63% of 4096 buckets and all 128 top values.
        assert!(low.len() > 2000, "{} distinct low bit patterns", low.len());
        assert_eq!(top.len(), 128);
        let raw = |b: &[u8]| {
            let mut h = WordHasher::default();
            h.write(b);
            h.finish()
        };
        assert_ne!(raw(b"ab"), raw(b"ab\0"));
    }
}
