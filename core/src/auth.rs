//! Cookie authentication of links: a shared secret that both ends of a link prove they
//! hold, by a challenge-response over fresh nonces from both sides, before a session exists.
//!
//! # What it protects, and what not
//!
//! With a [`Cookie`] in `Config::cookie`, a proc opens sessions only with dialers that hold
//! the same cookie, and a dialer sends messages only to an acceptor that holds it. So only
//! cookie holders can open sessions, send messages into the proc, take up its session
//! table, or replace a session of another proc. A recorded handshake cannot be replayed:
//! the acceptor's nonce is new on every connection, and the dialer's proof covers it.
//!
//! It does **not** make links confidential or tamper-proof: traffic after the handshake is
//! neither encrypted nor integrity-protected, so whoever can read the bytes on the way can
//! read the messages, and whoever can rewrite them in flight (a man in the middle who
//! relays a genuine handshake) can alter or inject frames on that connection. Use a
//! private network, a Unix socket in a protected directory, or a tunnel (TLS, WireGuard,
//! SSH) for that. Unauthenticated bytes before the handshake (garbage, oversized headers,
//! idle connections) are bounded by the handshake limits of `Config`, cookie or not.
//!
//! # Computation (since protocol version 3)
//!
//! All MACs are HMAC-SHA256 keyed with the cookie's bytes; nonces are [`NONCE_LEN`] bytes,
//! tags [`TAG_LEN`] bytes.
//!
//! ```text
//! acceptor tag = HMAC(cookie, "procwire/3 acceptor\0" | u32 LE len(hello) | hello | Na)
//! dialer tag   = HMAC(cookie, "procwire/3 dialer\0"   | u32 LE len(hello) | hello | Na)
//! ```
//!
//! `hello` is the exact body of the dialer's hello frame (its postcard encoding, which
//! includes the dialer's nonce `Nd`, both proc ids, the incarnation and the session id), and
//! `Na` the acceptor's nonce from the challenge. The labels keep one side's tag from being
//! reflected as the other's. Tags are compared in constant time (`subtle`).
//!
//! Nonces come from the proc's seeded generator, which core never seeds itself: a nonce is
//! `HMAC(cookie, "procwire/3 nonce\0" | u64 LE incarnation | u64 LE counter | u64 LE
//! random)[..16]`, with a counter that never repeats within a proc's life. It is unique as
//! long as incarnations differ between starts, and unpredictable to anyone without the
//! cookie. **When a cookie is configured, the driver must pass an unpredictable seed and
//! incarnation** (from the OS's randomness) to `Proc::new`.

use core::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Longest cookie, in bytes.
pub const MAX_COOKIE_LEN: usize = 64;
/// Bytes in a nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes in a tag (an HMAC-SHA256 output).
pub const TAG_LEN: usize = 32;

/// A handshake nonce.
pub type Nonce = [u8; NONCE_LEN];
/// A handshake MAC.
pub type Tag = [u8; TAG_LEN];

/// A shared secret of 1 to [`MAX_COOKIE_LEN`] bytes. It never appears in `Debug` output,
/// and compares in constant time. Use at least 16 random bytes.
#[derive(Clone)]
pub struct Cookie {
    bytes: [u8; MAX_COOKIE_LEN],
    len: u8,
}

impl Cookie {
    /// A cookie holding `secret`.
    pub fn new(secret: &[u8]) -> Result<Cookie, CookieError> {
        if secret.is_empty() {
            return Err(CookieError::Empty);
        }
        if secret.len() > MAX_COOKIE_LEN {
            return Err(CookieError::TooLong {
                len: secret.len(),
                max: MAX_COOKIE_LEN,
            });
        }
        let mut bytes = [0u8; MAX_COOKIE_LEN];
        bytes[..secret.len()].copy_from_slice(secret);
        Ok(Cookie {
            bytes,
            // At most 64: fits.
            len: secret.len() as u8,
        })
    }

    /// The secret's length in bytes (the bytes themselves are not handed out).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a cookie has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn secret(&self) -> &[u8] {
        &self.bytes[..self.len()]
    }

    fn mac(&self, label: &[u8]) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret()).ok()?;
        mac.update(label);
        Some(mac)
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<redacted>)")
    }
}

impl PartialEq for Cookie {
    fn eq(&self, other: &Cookie) -> bool {
        self.len == other.len && bool::from(self.secret().ct_eq(other.secret()))
    }
}

impl Eq for Cookie {}

/// Why a cookie could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieError {
    /// The secret is empty.
    Empty,
    /// The secret is longer than [`MAX_COOKIE_LEN`].
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for CookieError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CookieError::Empty => f.write_str("a cookie needs at least one byte"),
            CookieError::TooLong { len, max } => {
                write!(f, "a cookie of {len} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl core::error::Error for CookieError {}

/// Which side a tag proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The accepting proc (sent in the challenge).
    Acceptor,
    /// The dialing proc (sent in the proof).
    Dialer,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Acceptor => b"procwire/3 acceptor\0",
            Side::Dialer => b"procwire/3 dialer\0",
        }
    }
}

/// The tag `side` sends for the hello body `hello` and the acceptor's nonce. `None` only if
/// the MAC could not be keyed (it always can: HMAC takes keys of any length); callers treat
/// that as a failed proof.
pub fn tag(cookie: &Cookie, side: Side, hello: &[u8], acceptor_nonce: &Nonce) -> Option<Tag> {
    let len = u32::try_from(hello.len()).ok()?;
    let mut mac = cookie.mac(side.label())?;
    mac.update(&len.to_le_bytes());
    mac.update(hello);
    mac.update(acceptor_nonce);
    Some(mac.finalize().into_bytes().into())
}

/// The dialer's answer to a challenge body (`Na | acceptor tag`) for its hello body: its
/// own tag, if the acceptor's tag proves `cookie`; `None` if it does not (or the body is
/// not a challenge).
pub fn answer_challenge(cookie: &Cookie, hello: &[u8], challenge: &[u8]) -> Option<Tag> {
    if challenge.len() != NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, theirs) = challenge.split_at(NONCE_LEN);
    let nonce: Nonce = nonce.try_into().ok()?;
    let expected = tag(cookie, Side::Acceptor, hello, &nonce)?;
    if !tags_match(&expected, theirs) {
        return None;
    }
    tag(cookie, Side::Dialer, hello, &nonce)
}

/// Whether `got` is exactly `expected`, in time that does not depend on where they differ.
pub fn tags_match(expected: &Tag, got: &[u8]) -> bool {
    got.len() == TAG_LEN && bool::from(expected.as_slice().ct_eq(got))
}

/// A nonce from the proc's incarnation, a counter that never repeats in its life, and a
/// draw of its seeded generator (see the module docs).
pub fn nonce(cookie: &Cookie, incarnation: u64, counter: u64, random: u64) -> Option<Nonce> {
    let mut mac = cookie.mac(b"procwire/3 nonce\0")?;
    mac.update(&incarnation.to_le_bytes());
    mac.update(&counter.to_le_bytes());
    mac.update(&random.to_le_bytes());
    let out = mac.finalize().into_bytes();
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&out[..NONCE_LEN]);
    Some(n)
}

/// Why a dialer would not go on with an acceptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The acceptor's challenge does not prove our cookie: it holds another one (or none),
    /// or is not the proc we meant to reach.
    BadProof,
    /// The acceptor welcomed us without proving it holds the cookie.
    Unproven,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::BadProof => f.write_str("the peer's proof does not match our cookie"),
            AuthError::Unproven => f.write_str("the peer did not prove it holds the cookie"),
        }
    }
}

impl core::error::Error for AuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(s: &[u8]) -> Cookie {
        Cookie::new(s).unwrap()
    }

    #[test]
    fn cookie_bounds_and_debug_hides_the_secret() {
        assert_eq!(Cookie::new(b""), Err(CookieError::Empty));
        assert_eq!(
            Cookie::new(&[1; 65]),
            Err(CookieError::TooLong { len: 65, max: 64 })
        );
        let c = cookie(b"hunter2-hunter2!");
        assert_eq!(c.len(), 16);
        let shown = std::format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(c, cookie(b"hunter2-hunter2!"));
        assert_ne!(c, cookie(b"hunter2-hunter2?"));
        assert_ne!(c, cookie(b"hunter2"));
    }

    #[test]
    fn tags_depend_on_side_cookie_hello_and_nonce() {
        let (a, b) = (cookie(b"alpha"), cookie(b"beta"));
        let n = [7u8; NONCE_LEN];
        let t = tag(&a, Side::Acceptor, b"hello", &n).unwrap();
        assert!(tags_match(
            &t,
            &tag(&a, Side::Acceptor, b"hello", &n).unwrap()
        ));
        for other in [
            tag(&a, Side::Dialer, b"hello", &n),
            tag(&b, Side::Acceptor, b"hello", &n),
            tag(&a, Side::Acceptor, b"hellO", &n),
            tag(&a, Side::Acceptor, b"hello", &[8u8; NONCE_LEN]),
        ] {
            assert!(!tags_match(&t, &other.unwrap()));
        }
        assert!(!tags_match(&t, &t[..31]), "a short tag never matches");
    }

    #[test]
    fn tag_matches_a_plain_hmac_of_the_documented_input() {
        let c = cookie(b"key");
        let n = [1u8; NONCE_LEN];
        let mut input = std::vec::Vec::new();
        input.extend_from_slice(b"procwire/3 dialer\0");
        input.extend_from_slice(&3u32.to_le_bytes());
        input.extend_from_slice(b"abc");
        input.extend_from_slice(&n);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"key").unwrap();
        mac.update(&input);
        let want: Tag = mac.finalize().into_bytes().into();
        assert_eq!(tag(&c, Side::Dialer, b"abc", &n), Some(want));
    }

    #[test]
    fn a_challenge_is_answered_only_when_it_proves_the_cookie() {
        let (c, other) = (cookie(b"right"), cookie(b"wrong"));
        let na = [3u8; NONCE_LEN];
        let mut body = std::vec::Vec::from(na);
        body.extend_from_slice(&tag(&c, Side::Acceptor, b"hi", &na).unwrap());
        assert_eq!(
            answer_challenge(&c, b"hi", &body),
            tag(&c, Side::Dialer, b"hi", &na)
        );
        assert_eq!(answer_challenge(&other, b"hi", &body), None);
        assert_eq!(answer_challenge(&c, b"ho", &body), None);
        assert_eq!(answer_challenge(&c, b"hi", &body[..40]), None);
    }

    #[test]
    fn nonces_differ_per_counter_and_incarnation() {
        let c = cookie(b"k");
        let a = nonce(&c, 1, 0, 5).unwrap();
        assert_ne!(a, nonce(&c, 1, 1, 5).unwrap());
        assert_ne!(a, nonce(&c, 2, 0, 5).unwrap());
        assert_ne!(a, nonce(&cookie(b"j"), 1, 0, 5).unwrap());
        assert_eq!(a, nonce(&c, 1, 0, 5).unwrap());
    }
}
