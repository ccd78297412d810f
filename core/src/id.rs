//! Identities: channel addresses, names, and proc / actor / port ids.
//!
//! Every id here lives in fixed-capacity storage ([`heapless::String`]), so ids are cheap to
//! clone, need no allocator, and can be built, parsed, printed and (de)serialized on a target
//! with no heap at all.
//!
//! # Names
//!
//! Proc and actor names match `[A-Za-z_][A-Za-z0-9_-]*` and are 1 to [`MAX_NAME_LEN`] bytes
//! long. [`validate_name`] is the only definition of that rule: the text parsers, the serde
//! decoder and anything that hands out names (the registry) all call it, so they all refuse
//! the same strings with the same [`NameError`].
//!
//! # Text forms
//!
//! ```text
//! addr     = "tcp:" socket-addr            tcp:127.0.0.1:7000   tcp:[::1]:7000
//!          | "tcp:" host-name ":" port     tcp:node7.example:7000   tcp:localhost:7000
//!          | "unix:" path                  unix:/run/app.sock   unix:relative/dir/s.sock
//!          | "unix:@" abstract-name        unix:@procwire-1     unix:@   (empty = any)
//!          | "local:" number               local:3
//! proc-id  = addr "," name                 unix:/run/app.sock,root
//! actor-id = proc-id "," name "[" number "]"           tcp:[::1]:7000,root,worker[2]
//! port-id  = actor-id "[" number "]"                   local:3,root,worker[2][17]
//! number   = "0" | [1-9][0-9]*    (decimal u64: no sign, no leading zeros)
//! port     = number                (at most 65535)
//! host-name = label *("." label)   (RFC 1123; see below)
//! label    = [a-z0-9] [a-z0-9-]* [a-z0-9] | [a-z0-9]     (1 to 63 bytes)
//! ```
//!
//! - `socket-addr` is exactly what [`SocketAddr`]'s own `Display` and `FromStr` use, so IPv6
//!   is bracketed and a scope id prints as `%N`. The IPv6 flow label is not part of the text
//!   form (std does not print it); text round-trips hold for addresses whose flowinfo is 0,
//!   which is what every parsed address has. The binary (serde) form carries it.
//! - A `host-name` follows RFC 1123: dot-separated labels of ASCII letters, digits and `-`,
//!   each 1 to 63 bytes, neither starting nor ending with `-`, at most [`MAX_HOST_LEN`]
//!   (116) bytes in all (shorter than DNS's 253, see there), no trailing dot. Upper case is
//!   read, and stored (and printed) as lower case, since DNS names are case-insensitive:
//!   `tcp:Node7:1` reads as `tcp:node7:1`. Its last label must not be all digits (RFC 3696
//!   §2), so text that looks like an IPv4 address is never a host name: the body after
//!   `tcp:` is first read as a `socket-addr`, and only if that fails as `host-name:port`;
//!   whatever is all digits and dots, or has `[` or another `:` before the port, is a bad
//!   socket address. Core never resolves a name (it does no IO): the adapters resolve it
//!   each time they dial or bind, and connect to the first address that answers.
//! - A Unix `path` is any non-empty UTF-8 text without NUL that does not start with `@`
//!   (that marks the abstract namespace), at most [`MAX_UNIX_PATH_LEN`] bytes; relative
//!   paths are allowed. An abstract name has no NUL and at most [`MAX_UNIX_ABSTRACT_LEN`]
//!   bytes; it is stored without the kernel's leading NUL. Both bounds come from the 108-byte
//!   `sun_path`.
//! - Schemes are lower case. Numbers are canonical, so every value has exactly one spelling
//!   (apart from what `SocketAddr` itself accepts, which it prints back canonically).
//!
//! The grammar is unambiguous whatever a Unix path contains (`,`, `[`, `]`, `@`, spaces, any
//! non-NUL UTF-8) because ids are parsed **from the right**: names and numbers never contain
//! `,`, `[` or `]`, so the last `[..]` groups and the last commas always belong to the id, and
//! everything left of the proc name's comma is the address.
//!
//! ```
//! use procwire_core::id::{ActorId, ChannelAddr, PortId, ProcId};
//!
//! let port: PortId = "unix:/tmp/a,b[1],c,root,worker[3][7]".parse()?;
//! assert_eq!(port.index(), 7);
//! assert_eq!(port.actor().pid(), 3);
//! assert_eq!(port.actor().name().as_str(), "worker");
//! assert_eq!(port.actor().proc().name().as_str(), "root");
//! assert_eq!(port.actor().proc().addr().to_string(), "unix:/tmp/a,b[1],c");
//! assert_eq!(port.to_string(), "unix:/tmp/a,b[1],c,root,worker[3][7]");
//!
//! let proc: ProcId = "tcp:[::1]:7000,root".parse()?;
//! let actor: ActorId = proc.actor("client".parse()?, 0);
//! assert_eq!(actor.to_string(), "tcp:[::1]:7000,root,client[0]");
//! assert!("unix:@".parse::<ChannelAddr>()?.is_any());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//!
//! A [`ParseError`] says what was being parsed ([`IdKind`]), why ([`ParseErrorReason`]) and
//! where: `at` is a byte offset into the whole input. For a bad part (address body, name,
//! number, Unix path) it is where that part starts; for a NUL byte it is the NUL itself; for a
//! missing `,`, `[` or `]` it is where the parser, reading from the right, needed it.
//!
//! ```
//! use procwire_core::id::ActorId;
//!
//! let err = "local:1,proc,a[12".parse::<ActorId>().unwrap_err();
//! assert_eq!(err.to_string(), "invalid actor id at byte 17: expected ']'");
//! ```
//!
//! # Binary form
//!
//! All ids implement serde. Names and Unix addresses are validated while decoding, so
//! untrusted bytes (postcard is what the wire uses) give an error, never an invalid id and
//! never a panic. In non-human-readable formats a TCP address is encoded with its IPv6 flow
//! label and scope id so that decoding gives back an equal value. A host-name address is the
//! fourth `ChannelAddr` variant (after `Tcp`, `Unix`, `Local`, whose encodings are
//! unchanged): the host name as a string, validated when decoding, then the port.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Longest proc or actor name, in bytes. Bounded so that names fit in fixed storage.
pub const MAX_NAME_LEN: usize = 64;
/// Longest host name of a TCP address, in bytes.
///
/// DNS allows 253; ids are fixed-size values copied by value, and this bound keeps a
/// host-name address no larger than a Unix one (128 bytes), so adding host names made no id
/// bigger. Reach a longer name through a shorter alias (a CNAME, `/etc/hosts`) or an IP
/// address, or with `set_address` in the adapters.
pub const MAX_HOST_LEN: usize = 116;
/// Longest label (dot-separated part) of a host name, in bytes.
pub const MAX_HOST_LABEL_LEN: usize = 63;
/// Longest Unix socket path, in bytes.
///
/// `sun_path` is 108 bytes: a path needs a trailing NUL, an abstract name a leading NUL.
pub const MAX_UNIX_PATH_LEN: usize = 107;
/// Longest Linux abstract socket name, in bytes (without the kernel's leading NUL).
pub const MAX_UNIX_ABSTRACT_LEN: usize = 107;

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

/// Checks that `s` is a valid proc or actor name: ASCII `[A-Za-z_][A-Za-z0-9_-]*`, 1 to
/// [`MAX_NAME_LEN`] bytes.
///
/// This is the one predicate for names: parsers, the serde decoder and the registry all use
/// it, so a name is accepted or refused identically everywhere. Checks run in the order of the
/// [`NameError`] variants (empty, too long, first character, other characters).
pub fn validate_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            len: s.len(),
            max: MAX_NAME_LEN,
        });
    }
    let mut chars = s.char_indices();
    if let Some((_, ch)) = chars.next() {
        if !(ch.is_ascii_alphabetic() || ch == '_') {
            return Err(NameError::BadStart { ch });
        }
    }
    for (at, ch) in chars {
        if !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
            return Err(NameError::BadChar { at, ch });
        }
    }
    Ok(())
}

/// Why a string is not a valid name (see [`validate_name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty; every proc and actor needs one.
    Empty,
    /// The name is longer than fixed storage allows.
    TooLong {
        /// Length of the refused name, in bytes.
        len: usize,
        /// The limit, [`MAX_NAME_LEN`].
        max: usize,
    },
    /// The first character is not an ASCII letter or `_`.
    BadStart {
        /// The refused character.
        ch: char,
    },
    /// A later character is not an ASCII letter, digit, `_` or `-`.
    BadChar {
        /// Byte offset of the character within the name.
        at: usize,
        /// The refused character.
        ch: char,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty => f.write_str("name is empty"),
            NameError::TooLong { len, max } => {
                write!(f, "name is {len} bytes long, at most {max} are allowed")
            }
            NameError::BadStart { ch } => {
                write!(f, "name must start with an ASCII letter or '_', not {ch:?}")
            }
            NameError::BadChar { at, ch } => {
                write!(f, "character {ch:?} at {at} is not allowed")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for NameError {}

/// A validated proc or actor name, stored inline (no allocation).
///
/// Can only hold strings accepted by [`validate_name`], whether built with [`Name::new`],
/// parsed or deserialized. `Debug` prints the bare name, like `Display`, to keep logs short.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(heapless::String<MAX_NAME_LEN>);

impl Name {
    /// Validates `s` with [`validate_name`] and stores it.
    pub fn new(s: &str) -> Result<Name, NameError> {
        validate_name(s)?;
        heapless::String::try_from(s)
            .map(Name)
            .map_err(|_| NameError::TooLong {
                len: s.len(),
                max: MAX_NAME_LEN,
            })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::new(s)
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Name::new(s)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Lets maps keyed by [`Name`] be queried with a `&str` (hash and order agree with `str`).
impl core::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl Visitor<'_> for NameVisitor {
            type Value = Name;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a name matching [A-Za-z_][A-Za-z0-9_-]* of at most {MAX_NAME_LEN} bytes"
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
                Name::new(v).map_err(E::custom)
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Name, E> {
                let s = core::str::from_utf8(v)
                    .map_err(|_| E::invalid_value(de::Unexpected::Bytes(v), &self))?;
                self.visit_str(s)
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Unix addresses
// ---------------------------------------------------------------------------------------------

/// Why a Unix socket path or abstract name was refused by [`UnixAddr::path`] or
/// [`UnixAddr::abstract_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddrError {
    /// A filesystem path must not be empty (only abstract names may be, meaning "any").
    EmptyPath,
    /// The path or name does not fit in `sun_path`.
    TooLong {
        /// Length of the refused path or name, in bytes.
        len: usize,
        /// The limit: [`MAX_UNIX_PATH_LEN`] or [`MAX_UNIX_ABSTRACT_LEN`].
        max: usize,
    },
    /// The kernel would cut the address at a NUL byte, so none is allowed.
    NulByte,
    /// A path starting with `@` would read back as an abstract name in the text form.
    AtPrefix,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddrError::EmptyPath => f.write_str("unix socket path is empty"),
            AddrError::TooLong { len, max } => write!(
                f,
                "unix socket address is {len} bytes long, at most {max} fit in sun_path"
            ),
            AddrError::NulByte => f.write_str("unix socket address contains a NUL byte"),
            AddrError::AtPrefix => f.write_str(
                "unix socket path must not start with '@' (that marks an abstract name)",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AddrError {}

/// A Unix-domain socket address: a filesystem path or a Linux abstract name.
///
/// The constructors (and the text and serde decoders) enforce the bounds documented on each
/// variant, so a value always fits in `sun_path`. `Display` prints the text after `unix:`:
/// the path itself, or `@` and the abstract name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "UnixAddrWire")]
pub enum UnixAddr {
    /// Filesystem path; non-empty, no NUL, at most [`MAX_UNIX_PATH_LEN`] bytes, must not
    /// start with `@`.
    Path(heapless::String<MAX_UNIX_PATH_LEN>),
    /// Linux abstract name (no leading NUL stored); no NUL, at most
    /// [`MAX_UNIX_ABSTRACT_LEN`] bytes. Empty means "any": binding it lets the kernel pick a
    /// fresh name (autobind).
    Abstract(heapless::String<MAX_UNIX_ABSTRACT_LEN>),
}

/// What is wrong with the text of a Unix path or abstract name, with the byte offset of the
/// offending part relative to the start of that text. Shared by the constructors and the
/// parser so they refuse the same inputs.
enum UnixTextError {
    Empty,
    Nul(usize),
    TooLong { len: usize, max: usize },
}

impl UnixTextError {
    fn addr_error(self) -> AddrError {
        match self {
            UnixTextError::Empty => AddrError::EmptyPath,
            UnixTextError::Nul(_) => AddrError::NulByte,
            UnixTextError::TooLong { len, max } => AddrError::TooLong { len, max },
        }
    }

    /// Offset (within the checked text) and parse reason.
    fn parse_reason(self) -> (usize, ParseErrorReason) {
        match self {
            UnixTextError::Empty => (0, ParseErrorReason::EmptyPath),
            UnixTextError::Nul(at) => (at, ParseErrorReason::NulByte),
            UnixTextError::TooLong { len, max } => (0, ParseErrorReason::PathTooLong { len, max }),
        }
    }
}

fn check_unix_text(s: &str, max: usize) -> Result<(), UnixTextError> {
    if let Some(at) = s.find('\0') {
        return Err(UnixTextError::Nul(at));
    }
    if s.len() > max {
        return Err(UnixTextError::TooLong { len: s.len(), max });
    }
    Ok(())
}

/// Copies already length-checked text into fixed storage without a panic path.
fn bounded<const N: usize>(s: &str) -> Result<heapless::String<N>, UnixTextError> {
    heapless::String::try_from(s).map_err(|_| UnixTextError::TooLong {
        len: s.len(),
        max: N,
    })
}

impl UnixAddr {
    /// A filesystem socket path (absolute or relative).
    pub fn path(p: &str) -> Result<Self, AddrError> {
        if p.starts_with('@') {
            return Err(AddrError::AtPrefix);
        }
        Self::path_unchecked_prefix(p).map_err(UnixTextError::addr_error)
    }

    /// A Linux abstract socket name, given without the leading NUL. `""` means "any".
    pub fn abstract_name(n: &str) -> Result<Self, AddrError> {
        Self::abstract_text(n).map_err(UnixTextError::addr_error)
    }

    /// Path checks except the `@` prefix, which the text parser has already dispatched on.
    fn path_unchecked_prefix(p: &str) -> Result<Self, UnixTextError> {
        if p.is_empty() {
            return Err(UnixTextError::Empty);
        }
        check_unix_text(p, MAX_UNIX_PATH_LEN)?;
        bounded(p).map(UnixAddr::Path)
    }

    fn abstract_text(n: &str) -> Result<Self, UnixTextError> {
        check_unix_text(n, MAX_UNIX_ABSTRACT_LEN)?;
        bounded(n).map(UnixAddr::Abstract)
    }

    /// Parses the text after `unix:`; offsets in the error are relative to `body`.
    fn parse_body(body: &str) -> Result<Self, (usize, ParseErrorReason)> {
        match body.strip_prefix('@') {
            Some(name) => Self::abstract_text(name).map_err(|e| {
                let (at, reason) = e.parse_reason();
                (1 + at, reason)
            }),
            None => Self::path_unchecked_prefix(body).map_err(UnixTextError::parse_reason),
        }
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(p) => f.write_str(p),
            UnixAddr::Abstract(n) => write!(f, "@{n}"),
        }
    }
}

/// The serde shape of [`UnixAddr`], decoded first and then validated, so that untrusted
/// input cannot produce a path starting with `@` or containing NUL.
#[derive(Deserialize)]
#[serde(rename = "UnixAddr")]
enum UnixAddrWire {
    Path(heapless::String<MAX_UNIX_PATH_LEN>),
    Abstract(heapless::String<MAX_UNIX_ABSTRACT_LEN>),
}

impl TryFrom<UnixAddrWire> for UnixAddr {
    type Error = AddrError;
    fn try_from(wire: UnixAddrWire) -> Result<Self, AddrError> {
        match wire {
            UnixAddrWire::Path(p) => {
                UnixAddr::path(&p)?;
                Ok(UnixAddr::Path(p))
            }
            UnixAddrWire::Abstract(n) => {
                UnixAddr::abstract_name(&n)?;
                Ok(UnixAddr::Abstract(n))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host names
// ---------------------------------------------------------------------------------------------

/// Checks that `s` is a host name as a TCP address may carry it (RFC 1123): dot-separated
/// labels of ASCII letters, digits and `-`, each 1 to [`MAX_HOST_LABEL_LEN`] bytes and
/// neither starting nor ending with `-`, at most [`MAX_HOST_LEN`] bytes in all, no trailing
/// dot, and a last label that is not all digits (so that no IPv4 address is a host name).
///
/// The one predicate for host names: the text parser, the serde decoder and
/// [`HostName::new`] all use it. Checks run in the order of the [`HostError`] variants.
pub fn validate_host_name(s: &str) -> Result<(), HostError> {
    if s.is_empty() {
        return Err(HostError::Empty);
    }
    if s.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong {
            len: s.len(),
            max: MAX_HOST_LEN,
        });
    }
    let mut start = 0;
    let mut last_numeric = false;
    for label in s.split('.') {
        check_label(label, start)?;
        last_numeric = label.bytes().all(|b| b.is_ascii_digit());
        start += label.len() + 1;
    }
    if last_numeric {
        return Err(HostError::NumericLast);
    }
    Ok(())
}

/// Checks one label that starts at byte `at` of the host name.
fn check_label(label: &str, at: usize) -> Result<(), HostError> {
    if label.is_empty() {
        return Err(HostError::EmptyLabel { at });
    }
    if label.len() > MAX_HOST_LABEL_LEN {
        return Err(HostError::LabelTooLong {
            at,
            len: label.len(),
            max: MAX_HOST_LABEL_LEN,
        });
    }
    if let Some((i, ch)) = label
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-'))
    {
        return Err(HostError::BadChar { at: at + i, ch });
    }
    if label.starts_with('-') {
        return Err(HostError::HyphenAtEdge { at });
    }
    if label.ends_with('-') {
        return Err(HostError::HyphenAtEdge {
            at: at + label.len() - 1,
        });
    }
    Ok(())
}

/// Why a string is not a valid host name (see [`validate_host_name`]). Offsets are bytes
/// into the host name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostError {
    /// The host name is empty.
    Empty,
    /// The host name is longer than [`MAX_HOST_LEN`].
    TooLong {
        /// Length of the refused name, in bytes.
        len: usize,
        /// The limit, [`MAX_HOST_LEN`].
        max: usize,
    },
    /// Two dots in a row, or a leading or trailing dot.
    EmptyLabel {
        /// Where the empty label is.
        at: usize,
    },
    /// A label is longer than [`MAX_HOST_LABEL_LEN`].
    LabelTooLong {
        /// Where the label starts.
        at: usize,
        /// Its length, in bytes.
        len: usize,
        /// The limit, [`MAX_HOST_LABEL_LEN`].
        max: usize,
    },
    /// A character other than an ASCII letter, digit, `-` or the dots between labels.
    BadChar {
        /// Where it is.
        at: usize,
        /// The refused character.
        ch: char,
    },
    /// A label starts or ends with `-`.
    HyphenAtEdge {
        /// Where the hyphen is.
        at: usize,
    },
    /// The last label is all digits: that reads as (part of) an IPv4 address.
    NumericLast,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HostError::Empty => f.write_str("host name is empty"),
            HostError::TooLong { len, max } => {
                write!(
                    f,
                    "host name is {len} bytes long, at most {max} are allowed"
                )
            }
            HostError::EmptyLabel { at } => write!(f, "empty label at {at} in host name"),
            HostError::LabelTooLong { at, len, max } => write!(
                f,
                "label at {at} of host name is {len} bytes long, at most {max} are allowed"
            ),
            HostError::BadChar { at, ch } => {
                write!(f, "character {ch:?} at {at} is not allowed in a host name")
            }
            HostError::HyphenAtEdge { at } => {
                write!(
                    f,
                    "a host name label must not start or end with '-' (at {at})"
                )
            }
            HostError::NumericLast => {
                f.write_str("the last label of a host name must not be all digits")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for HostError {}

/// A validated host name (see [`validate_host_name`]), stored inline in lower case.
///
/// `Debug` prints the bare name, like `Display`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostName(heapless::String<MAX_HOST_LEN, u8>);

impl HostName {
    /// Validates `s` with [`validate_host_name`] and stores it in lower case.
    pub fn new(s: &str) -> Result<HostName, HostError> {
        validate_host_name(s)?;
        let mut out = heapless::String::new();
        for ch in s.chars() {
            out.push(ch.to_ascii_lowercase())
                .map_err(|_| HostError::TooLong {
                    len: s.len(),
                    max: MAX_HOST_LEN,
                })?;
        }
        Ok(HostName(out))
    }

    /// The name as text (lower case).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HostName {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostName::new(s)
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for HostName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HostVisitor;

        impl Visitor<'_> for HostVisitor {
            type Value = HostName;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an RFC 1123 host name of at most {MAX_HOST_LEN} bytes")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<HostName, E> {
                HostName::new(v).map_err(E::custom)
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<HostName, E> {
                let s = core::str::from_utf8(v)
                    .map_err(|_| E::invalid_value(de::Unexpected::Bytes(v), &self))?;
                self.visit_str(s)
            }
        }

        deserializer.deserialize_str(HostVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Channel addresses
// ---------------------------------------------------------------------------------------------

/// The transport kind of a [`ChannelAddr`], used to ask for "any address of this kind".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ChannelTransport {
    /// TCP over IPv4 or IPv6.
    Tcp,
    /// Unix-domain stream sockets (paths or Linux abstract names).
    Unix,
    /// In-process channels, for procs that share one address space.
    Local,
}

impl ChannelTransport {
    /// The "pick one for me" address of this transport: `tcp:127.0.0.1:0`, `unix:@` (empty
    /// abstract name, autobind) or `local:0`. Binding it yields a concrete address.
    pub fn any(self) -> ChannelAddr {
        match self {
            ChannelTransport::Tcp => {
                ChannelAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            }
            ChannelTransport::Unix => {
                ChannelAddr::Unix(UnixAddr::Abstract(heapless::String::new()))
            }
            ChannelTransport::Local => ChannelAddr::Local(0),
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            ChannelTransport::Tcp => "tcp",
            ChannelTransport::Unix => "unix",
            ChannelTransport::Local => "local",
        }
    }
}

impl fmt::Display for ChannelTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// Parses `tcp`, `unix` or `local` (the scheme without its colon). Anything else is an
/// [`ParseErrorReason::UnknownScheme`] error at byte 0.
impl FromStr for ChannelTransport {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "tcp" => Ok(ChannelTransport::Tcp),
            "unix" => Ok(ChannelTransport::Unix),
            "local" => Ok(ChannelTransport::Local),
            _ => Err(ParseError {
                kind: IdKind::Addr,
                at: 0,
                reason: ParseErrorReason::UnknownScheme,
            }),
        }
    }
}

/// Where a proc can be reached: a TCP socket (by IP address or by host name), a Unix socket
/// or an in-process channel.
///
/// Text form: `tcp:<socket-addr>`, `tcp:<host-name>:<port>`, `unix:<path>`,
/// `unix:@<abstract-name>`, `local:<u64>` (see the [module docs](self)). `Debug` prints the
/// text form.
///
/// Non-exhaustive: more transports may come; match with a wildcard arm.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChannelAddr {
    /// A TCP socket address.
    Tcp(#[serde(with = "socket_addr_wire")] SocketAddr),
    /// A Unix-domain socket address.
    Unix(UnixAddr),
    /// An in-process channel, numbered within one process.
    Local(u64),
    /// A TCP address by host name, resolved (by the adapter, never by core) each time it is
    /// dialed or bound.
    TcpHost {
        /// The host, in lower case.
        host: HostName,
        /// The TCP port; 0 means "any" when binding.
        port: u16,
    },
}

impl ChannelAddr {
    /// Which transport this address uses.
    pub fn transport(&self) -> ChannelTransport {
        match self {
            ChannelAddr::Tcp(_) | ChannelAddr::TcpHost { .. } => ChannelTransport::Tcp,
            ChannelAddr::Unix(_) => ChannelTransport::Unix,
            ChannelAddr::Local(_) => ChannelTransport::Local,
        }
    }

    /// A TCP address by host name (validated with [`validate_host_name`], stored in lower
    /// case).
    pub fn tcp_host(host: &str, port: u16) -> Result<ChannelAddr, HostError> {
        Ok(ChannelAddr::TcpHost {
            host: HostName::new(host)?,
            port,
        })
    }

    /// The TCP port, for either TCP form.
    pub fn tcp_port(&self) -> Option<u16> {
        match self {
            ChannelAddr::Tcp(a) => Some(a.port()),
            ChannelAddr::TcpHost { port, .. } => Some(*port),
            _ => None,
        }
    }

    /// The same address with its TCP port replaced (either TCP form); other transports are
    /// returned unchanged.
    pub fn with_tcp_port(&self, port: u16) -> ChannelAddr {
        match self {
            ChannelAddr::Tcp(a) => {
                let mut a = *a;
                a.set_port(port);
                ChannelAddr::Tcp(a)
            }
            ChannelAddr::TcpHost { host, .. } => ChannelAddr::TcpHost {
                host: host.clone(),
                port,
            },
            other => other.clone(),
        }
    }

    /// True for the "pick one for me" forms: TCP port 0 (any IP or host), `unix:@` (empty
    /// abstract name) and `local:0`. Such an address must be bound before it names a proc.
    pub fn is_any(&self) -> bool {
        match self {
            ChannelAddr::Tcp(a) => a.port() == 0,
            ChannelAddr::TcpHost { port, .. } => *port == 0,
            ChannelAddr::Unix(UnixAddr::Abstract(n)) => n.is_empty(),
            ChannelAddr::Unix(UnixAddr::Path(_)) => false,
            ChannelAddr::Local(n) => *n == 0,
        }
    }
}

impl From<SocketAddr> for ChannelAddr {
    fn from(a: SocketAddr) -> Self {
        ChannelAddr::Tcp(a)
    }
}

impl From<UnixAddr> for ChannelAddr {
    fn from(a: UnixAddr) -> Self {
        ChannelAddr::Unix(a)
    }
}

impl fmt::Display for ChannelAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelAddr::Tcp(a) => write!(f, "tcp:{a}"),
            ChannelAddr::TcpHost { host, port } => write!(f, "tcp:{host}:{port}"),
            ChannelAddr::Unix(u) => write!(f, "unix:{u}"),
            ChannelAddr::Local(n) => write!(f, "local:{n}"),
        }
    }
}

impl fmt::Debug for ChannelAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ChannelAddr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        parse_addr(s, IdKind::Addr)
    }
}

/// Binary form of a TCP address that keeps the IPv6 flow label and scope id (serde's own
/// `SocketAddr` encoding drops both, so a link-local address would not survive the wire).
/// Human-readable formats use `SocketAddr`'s own string form instead.
mod socket_addr_wire {
    use core::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename = "SocketAddr")]
    enum Wire {
        V4([u8; 4], u16),
        V6([u8; 16], u16, u32, u32),
    }

    pub(super) fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return a.serialize(s);
        }
        let wire = match a {
            SocketAddr::V4(a) => Wire::V4(a.ip().octets(), a.port()),
            SocketAddr::V6(a) => Wire::V6(a.ip().octets(), a.port(), a.flowinfo(), a.scope_id()),
        };
        wire.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        if d.is_human_readable() {
            return SocketAddr::deserialize(d);
        }
        Ok(match Wire::deserialize(d)? {
            Wire::V4(ip, port) => SocketAddr::V4(SocketAddrV4::new(ip.into(), port)),
            Wire::V6(ip, port, flowinfo, scope_id) => {
                SocketAddr::V6(SocketAddrV6::new(ip.into(), port, flowinfo, scope_id))
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------------------------

/// With an allocator, proc and actor ids are shared (reference counted): cloning or moving
/// one, or an envelope holding them, never copies addresses or names. Without one they are
/// held inline. Comparison, ordering and hashing are by value either way.
#[cfg(feature = "alloc")]
type Shared<T> = alloc::sync::Arc<T>;
#[cfg(not(feature = "alloc"))]
type Shared<T> = Inline<T>;

/// Inline storage for ids where there is no allocator.
#[cfg(not(feature = "alloc"))]
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Inline<T>(T);

#[cfg(not(feature = "alloc"))]
impl<T> Inline<T> {
    fn new(t: T) -> Self {
        Inline(t)
    }
}

#[cfg(not(feature = "alloc"))]
impl<T> core::ops::Deref for Inline<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct ProcData {
    addr: ChannelAddr,
    name: Name,
}

/// A proc: an addressable endpoint (its bound address) and its name.
///
/// Text form `<addr>,<name>`, e.g. `unix:@procwire-1,root`. `Debug` prints the text form.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcId(Shared<ProcData>);

impl Serialize for ProcId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProcId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ProcData::deserialize(d).map(|p| ProcId(Shared::new(p)))
    }
}

impl ProcId {
    /// The proc named `name` serving on `addr`.
    pub fn new(addr: ChannelAddr, name: Name) -> Self {
        ProcId(Shared::new(ProcData { addr, name }))
    }

    /// Where the proc can be reached.
    pub fn addr(&self) -> &ChannelAddr {
        &self.0.addr
    }

    /// The proc's name.
    pub fn name(&self) -> &Name {
        &self.0.name
    }

    /// The actor `name[pid]` inside this proc.
    pub fn actor(&self, name: Name, pid: u64) -> ActorId {
        ActorId::new(self.clone(), name, pid)
    }

    /// Whether `other` is this very id (the same shared storage): a cheap test that implies
    /// equality, for memos on the data path. Always false without an allocator.
    pub fn is_same(&self, other: &ProcId) -> bool {
        #[cfg(feature = "alloc")]
        return alloc::sync::Arc::ptr_eq(&self.0, &other.0);
        #[cfg(not(feature = "alloc"))]
        {
            let _ = other;
            false
        }
    }
}

impl fmt::Display for ProcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.addr(), self.name())
    }
}

impl fmt::Debug for ProcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ProcId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        parse_proc(s, s.len(), IdKind::Proc)
    }
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct ActorData {
    proc: ProcId,
    name: Name,
    pid: u64,
}

/// An actor: a proc, the actor's root name and its pid under that name (0 for the root
/// itself, counting up for its children).
///
/// Text form `<proc-id>,<name>[<pid>]`, e.g. `local:3,root,worker[2]`. `Debug` prints the
/// text form.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActorId(Shared<ActorData>);

impl Serialize for ActorId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ActorId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ActorData::deserialize(d).map(|a| ActorId(Shared::new(a)))
    }
}

impl ActorId {
    /// The actor `name[pid]` in `proc`.
    pub fn new(proc: ProcId, name: Name, pid: u64) -> Self {
        ActorId(Shared::new(ActorData { proc, name, pid }))
    }

    /// The proc the actor lives in.
    pub fn proc(&self) -> &ProcId {
        &self.0.proc
    }

    /// The actor's (root) name.
    pub fn name(&self) -> &Name {
        &self.0.name
    }

    /// The actor's number under its name.
    pub fn pid(&self) -> u64 {
        self.0.pid
    }

    /// Port number `index` of this actor.
    pub fn port(&self, index: u64) -> PortId {
        PortId::new(self.clone(), index)
    }

    /// Whether `other` is this very id (the same shared storage): a cheap test that implies
    /// equality, for memos on the data path. Always false without an allocator.
    pub fn is_same(&self, other: &ActorId) -> bool {
        #[cfg(feature = "alloc")]
        return alloc::sync::Arc::ptr_eq(&self.0, &other.0);
        #[cfg(not(feature = "alloc"))]
        {
            let _ = other;
            false
        }
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}[{}]", self.proc(), self.name(), self.pid())
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ActorId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (proc, name, pid, _) = parse_actor(s, false, IdKind::Actor)?;
        Ok(ActorId::new(proc, name, pid))
    }
}

/// A port: one of an actor's mailboxes, where messages are delivered.
///
/// Text form `<actor-id>[<index>]`, e.g. `local:3,root,worker[2][17]`. `Debug` prints the
/// text form.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortId {
    actor: ActorId,
    index: u64,
}

impl PortId {
    /// Port `index` of `actor`.
    pub fn new(actor: ActorId, index: u64) -> Self {
        PortId { actor, index }
    }

    /// The actor owning the port.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The port's number within its actor.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The actor owning the port, taken out of the id (no reference count is touched).
    pub fn into_actor(self) -> ActorId {
        self.actor
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.actor, self.index)
    }
}

impl fmt::Debug for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PortId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (proc, name, pid, index) = parse_actor(s, true, IdKind::Port)?;
        Ok(PortId::new(ActorId::new(proc, name, pid), index))
    }
}

// ---------------------------------------------------------------------------------------------
// Parse errors
// ---------------------------------------------------------------------------------------------

/// Which kind of value a [`ParseError`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    /// A [`ChannelAddr`].
    Addr,
    /// A [`ProcId`].
    Proc,
    /// An [`ActorId`].
    Actor,
    /// A [`PortId`].
    Port,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Addr => "channel address",
            IdKind::Proc => "proc id",
            IdKind::Actor => "actor id",
            IdKind::Port => "port id",
        })
    }
}

/// Why text could not be parsed as an address or id. See [`ParseError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorReason {
    /// The address does not start with a scheme and `:`.
    MissingScheme,
    /// The scheme is not `tcp`, `unix` or `local`.
    UnknownScheme,
    /// The text after `tcp:` is neither a socket address such as `127.0.0.1:7000` or
    /// `[::1]:7000` nor a `host-name:port`.
    BadSocketAddr,
    /// The host name of a `tcp:host-name:port` address is invalid (offsets in the
    /// [`HostError`] are relative to the host name, which starts at the error's `at`).
    BadHost(HostError),
    /// The port of a `tcp:host-name:port` address is not a canonical decimal number up to
    /// 65535.
    BadPort,
    /// `unix:` is followed by nothing (use `unix:@` for "any").
    EmptyPath,
    /// The Unix path or abstract name does not fit in `sun_path`.
    PathTooLong {
        /// Length of the refused path or name, in bytes.
        len: usize,
        /// The limit: [`MAX_UNIX_PATH_LEN`] or [`MAX_UNIX_ABSTRACT_LEN`].
        max: usize,
    },
    /// The Unix path or abstract name contains a NUL byte.
    NulByte,
    /// A pid, port index or local channel number is not a canonical decimal `u64`.
    BadNumber,
    /// A separator (`,`, `[` or `]`) is missing.
    Expected(char),
    /// A proc or actor name is invalid.
    BadName(NameError),
}

impl fmt::Display for ParseErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParseErrorReason::MissingScheme => {
                f.write_str("missing scheme (expected tcp:, unix: or local:)")
            }
            ParseErrorReason::UnknownScheme => {
                f.write_str("unknown scheme (expected tcp:, unix: or local:)")
            }
            ParseErrorReason::BadSocketAddr => f.write_str(
                "bad socket address (expected e.g. 127.0.0.1:7000, [::1]:7000 or host.example:7000)",
            ),
            ParseErrorReason::BadHost(e) => write!(f, "bad host name: {e}"),
            ParseErrorReason::BadPort => {
                f.write_str("bad port (expected a decimal number up to 65535, no leading zeros)")
            }
            ParseErrorReason::EmptyPath => f.write_str("empty unix socket path"),
            ParseErrorReason::PathTooLong { len, max } => write!(
                f,
                "unix socket address is {len} bytes long, at most {max} fit in sun_path"
            ),
            ParseErrorReason::NulByte => f.write_str("NUL byte in unix socket address"),
            ParseErrorReason::BadNumber => {
                f.write_str("bad number (expected a decimal u64 without sign or leading zeros)")
            }
            ParseErrorReason::Expected(ch) => write!(f, "expected {ch:?}"),
            ParseErrorReason::BadName(e) => write!(f, "bad name: {e}"),
        }
    }
}

/// Text could not be parsed as a [`ChannelAddr`], [`ProcId`], [`ActorId`] or [`PortId`].
///
/// Displays as e.g. `invalid actor id at byte 17: expected ']'`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// What was being parsed.
    pub kind: IdKind,
    /// Byte offset into the whole input of the offending part (see the module docs).
    pub at: usize,
    /// What is wrong there.
    pub reason: ParseErrorReason,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} at byte {}: {}",
            self.kind, self.at, self.reason
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseError {}

// ---------------------------------------------------------------------------------------------
// Parsers
// ---------------------------------------------------------------------------------------------

/// A canonical decimal `u64`: digits only, no sign, no leading zero unless it is `0`.
fn parse_number(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        if c.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

/// Shaped like a URI scheme (`ALPHA *(ALPHA / DIGIT / "+" / "-" / ".")`), so that
/// `127.0.0.1:80` reads as a missing scheme and `udp:...` as an unknown one.
fn looks_like_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(c) if c.is_ascii_alphabetic())
        && bytes.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// Parses an address occupying `s` entirely; `s` starts at byte 0 of the input.
fn parse_addr(s: &str, kind: IdKind) -> Result<ChannelAddr, ParseError> {
    let fail = |at, reason| ParseError { kind, at, reason };
    let Some(colon) = s.find(':') else {
        return Err(fail(0, ParseErrorReason::MissingScheme));
    };
    let body_at = colon + 1;
    let body = &s[body_at..];
    match &s[..colon] {
        "tcp" => parse_tcp(body).map_err(|(at, reason)| fail(body_at + at, reason)),
        "unix" => UnixAddr::parse_body(body)
            .map(ChannelAddr::Unix)
            .map_err(|(at, reason)| fail(body_at + at, reason)),
        "local" => parse_number(body)
            .map(ChannelAddr::Local)
            .ok_or_else(|| fail(body_at, ParseErrorReason::BadNumber)),
        scheme if looks_like_scheme(scheme) => Err(fail(0, ParseErrorReason::UnknownScheme)),
        _ => Err(fail(0, ParseErrorReason::MissingScheme)),
    }
}

/// Parses the text after `tcp:`: a socket address, or else `host-name:port`. Offsets in the
/// error are relative to `body`.
fn parse_tcp(body: &str) -> Result<ChannelAddr, (usize, ParseErrorReason)> {
    if let Ok(sa) = body.parse::<SocketAddr>() {
        return Ok(ChannelAddr::Tcp(sa));
    }
    let bad = (0, ParseErrorReason::BadSocketAddr);
    let Some((host, port)) = body.rsplit_once(':') else {
        return Err(bad);
    };
    // IP-shaped text that did not parse is a bad socket address, not a host name.
    let ip_shaped =
        host.contains([':', '[', ']']) || host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if ip_shaped {
        return Err(bad);
    }
    let host = HostName::new(host).map_err(|e| (0, ParseErrorReason::BadHost(e)))?;
    let port = parse_number(port)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or((body.len() - port.len(), ParseErrorReason::BadPort))?;
    Ok(ChannelAddr::TcpHost { host, port })
}

fn parse_name(s: &str, start: usize, end: usize, kind: IdKind) -> Result<Name, ParseError> {
    Name::new(&s[start..end]).map_err(|e| ParseError {
        kind,
        at: start,
        reason: ParseErrorReason::BadName(e),
    })
}

/// Offset of the comma separating a proc's address from its name, searching `s[..end]`
/// from the right (names hold no comma; addresses may).
fn proc_comma(s: &str, end: usize, kind: IdKind) -> Result<usize, ParseError> {
    s[..end].rfind(',').ok_or(ParseError {
        kind,
        at: end,
        reason: ParseErrorReason::Expected(','),
    })
}

/// Parses the proc id occupying `s[..end]`.
fn parse_proc(s: &str, end: usize, kind: IdKind) -> Result<ProcId, ParseError> {
    let comma = proc_comma(s, end, kind)?;
    let addr = parse_addr(&s[..comma], kind)?;
    let name = parse_name(s, comma + 1, end, kind)?;
    Ok(ProcId::new(addr, name))
}

/// Byte offsets of one `[number]` group: the `[` and the `]`.
#[derive(Clone, Copy)]
struct Group {
    open: usize,
    close: usize,
}

/// Finds the `[number]` group that ends `s[start..end]`, reading from the right. `start` is
/// just after the last comma, so brackets in the address are never looked at.
///
/// `missing_is_last` is set when a later group was already found: if this region has no
/// brackets at all, the input most likely lacks that later group (an actor id given where a
/// port id is wanted), so the error points at the end of the input.
fn last_group(
    s: &str,
    start: usize,
    end: usize,
    kind: IdKind,
    missing_is_last: bool,
) -> Result<Group, ParseError> {
    let fail = |at, ch| ParseError {
        kind,
        at,
        reason: ParseErrorReason::Expected(ch),
    };
    let region = &s[start..end];
    let Some(body) = region.strip_suffix(']') else {
        return Err(match (region.rfind('['), region.rfind(']')) {
            // `name[12`: an unclosed group.
            (Some(o), c) if c.is_none_or(|c| c < o) => fail(end, ']'),
            // `name`: no group at all.
            (None, None) if missing_is_last => fail(s.len(), '['),
            (None, None) => fail(end, '['),
            // `name[1]x`: the id must end with `]`.
            _ => fail(end, ']'),
        });
    };
    let close = end - 1;
    match body.rfind('[') {
        Some(o) => Ok(Group {
            open: start + o,
            close,
        }),
        None => Err(fail(close, '[')),
    }
}

fn parse_group(s: &str, g: Group, kind: IdKind) -> Result<u64, ParseError> {
    parse_number(&s[g.open + 1..g.close]).ok_or(ParseError {
        kind,
        at: g.open + 1,
        reason: ParseErrorReason::BadNumber,
    })
}

/// Parses `<proc-id>,<name>[<pid>]` and, with `with_port`, a trailing `[<index>]`.
///
/// The separators are located first, from the right; then the parts are checked from left
/// to right, so the reported error is the leftmost bad part.
fn parse_actor(
    s: &str,
    with_port: bool,
    kind: IdKind,
) -> Result<(ProcId, Name, u64, u64), ParseError> {
    // Structure, right to left. Names and numbers hold no comma, so the actor name starts
    // after the last one (or at 0 if there is none, which is reported below).
    let last_comma = s.rfind(',');
    let tail = last_comma.map_or(0, |c| c + 1);
    let port = if with_port {
        Some(last_group(s, tail, s.len(), kind, false)?)
    } else {
        None
    };
    let pid = last_group(s, tail, port.map_or(s.len(), |g| g.open), kind, with_port)?;
    let Some(actor_comma) = last_comma else {
        return Err(ParseError {
            kind,
            at: pid.open,
            reason: ParseErrorReason::Expected(','),
        });
    };
    // Content, left to right.
    let proc = parse_proc(s, actor_comma, kind)?;
    let name = parse_name(s, tail, pid.open, kind)?;
    let pid = parse_group(s, pid, kind)?;
    let index = match port {
        Some(g) => parse_group(s, g, kind)?,
        None => 0,
    };
    Ok((proc, name, pid, index))
}

// ---------------------------------------------------------------------------------------------
// Test strategies
// ---------------------------------------------------------------------------------------------

/// Proptest strategies for valid ids, shared with other modules' tests
/// (e.g. `crate::id::strategy::actor_id()`).
#[cfg(test)]
pub(crate) mod strategy {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::string::String;
    use std::vec;

    /// Valid names of every length from 1 to [`MAX_NAME_LEN`].
    pub(crate) fn name() -> impl Strategy<Value = Name> {
        "[A-Za-z_][A-Za-z0-9_-]{0,63}"
            .prop_map(|s| Name::new(&s).expect("the regex only yields valid names"))
    }

    /// Characters for Unix paths and abstract names, biased towards the ones that could
    /// confuse the id grammar, plus any other non-NUL character.
    fn unix_char() -> impl Strategy<Value = char> {
        prop_oneof![
            6 => proptest::char::range('a', 'z'),
            2 => Just('/'),
            3 => proptest::sample::select(vec![
                ',', '[', ']', '@', ' ', '.', ':', '%', '\\', '\n', '-', '_', '0', '9', 'é',
                '字', '🦀',
            ]),
            1 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
        ]
    }

    fn unix_text(max_chars: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(unix_char(), 0..max_chars).prop_map(String::from_iter)
    }

    fn tcp() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            // flowinfo stays 0: std's text form does not carry it (see the module docs).
            (
                any::<[u8; 16]>(),
                any::<u16>(),
                prop_oneof![Just(0u32), any::<u32>()]
            )
                .prop_map(|(ip, port, scope)| {
                    SocketAddr::V6(core::net::SocketAddrV6::new(ip.into(), port, 0, scope))
                }),
            Just(SocketAddr::from(([127, 0, 0, 1], 0))),
            Just(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 7000))),
        ]
    }

    /// Valid Unix socket paths, including ones with `,`, `[`, `]`, `@` (not first), spaces
    /// and non-ASCII characters, and ones exactly at the length limit.
    pub(crate) fn unix_path() -> impl Strategy<Value = UnixAddr> {
        prop_oneof![
            "/[a-z]{1,8}(/[a-z0-9._-]{1,12}){0,3}",
            "[a-z0-9._-]{1,20}(/[a-z0-9._-]{1,12}){0,2}",
            unix_text(40),
            "/[a-z,\\[\\]@ ]{106}",
        ]
        .prop_filter_map("valid unix path", |p| UnixAddr::path(&p).ok())
    }

    /// Valid abstract names, including the empty ("any") one.
    pub(crate) fn unix_abstract() -> impl Strategy<Value = UnixAddr> {
        prop_oneof![
            1 => Just(String::new()),
            4 => unix_text(40),
            1 => "[a-z@,\\[\\]]{107}",
        ]
        .prop_filter_map("valid abstract name", |n| UnixAddr::abstract_name(&n).ok())
    }

    /// Valid host names: mixed case (stored in lower case), digits and hyphens inside
    /// labels, numeric labels before the last, and names at the label and total limits.
    pub(crate) fn host_name() -> impl Strategy<Value = HostName> {
        prop_oneof![
            4 => "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,3}",
            1 => Just(String::from("localhost")),
            1 => "[0-9]{1,3}\\.[0-9]{1,3}\\.[a-z][a-z0-9-]{0,5}[a-z]",
            1 => "[a-z]{63}\\.[a-z0-9-]{50}[a-z]",
        ]
        .prop_filter_map("valid host name", |h| HostName::new(&h).ok())
    }

    /// Every kind of channel address.
    pub(crate) fn addr() -> impl Strategy<Value = ChannelAddr> {
        prop_oneof![
            tcp().prop_map(ChannelAddr::Tcp),
            (host_name(), prop_oneof![Just(0u16), any::<u16>()])
                .prop_map(|(host, port)| ChannelAddr::TcpHost { host, port }),
            unix_path().prop_map(ChannelAddr::Unix),
            unix_abstract().prop_map(ChannelAddr::Unix),
            prop_oneof![Just(0u64), 0..16u64, any::<u64>()].prop_map(ChannelAddr::Local),
        ]
    }

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), 0..100u64, any::<u64>(), Just(u64::MAX)]
    }

    /// Valid proc ids.
    pub(crate) fn proc_id() -> impl Strategy<Value = ProcId> {
        (addr(), name()).prop_map(|(a, n)| ProcId::new(a, n))
    }

    /// Valid actor ids.
    pub(crate) fn actor_id() -> impl Strategy<Value = ActorId> {
        (proc_id(), name(), number()).prop_map(|(p, n, pid)| ActorId::new(p, n, pid))
    }

    /// Valid port ids.
    pub(crate) fn port_id() -> impl Strategy<Value = PortId> {
        (actor_id(), number()).prop_map(|(a, i)| PortId::new(a, i))
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    extern crate std;

    use super::strategy;
    use super::*;
    use proptest::prelude::*;
    use std::string::{String, ToString};
    use std::vec::Vec;
    use std::{format, vec};

    fn err(kind: IdKind, at: usize, reason: ParseErrorReason) -> ParseError {
        ParseError { kind, at, reason }
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("test name is valid")
    }

    fn assert_text_roundtrip<T>(v: &T)
    where
        T: FromStr<Err = ParseError> + fmt::Display + fmt::Debug + PartialEq,
    {
        let text = v.to_string();
        assert_eq!(text.parse::<T>().as_ref(), Ok(v), "text {text:?}");
    }

    fn assert_postcard_roundtrip<T>(v: &T)
    where
        T: Serialize + for<'de> Deserialize<'de> + fmt::Debug + PartialEq,
    {
        let bytes = postcard::to_allocvec(v).expect("encoding to a Vec cannot fail");
        assert_eq!(postcard::from_bytes::<T>(&bytes).as_ref(), Ok(v));
    }

    /// Strings built from the grammar's own pieces, so random inputs get deep into the
    /// parsers, plus fully arbitrary strings.
    fn soup() -> impl Strategy<Value = String> {
        let token = proptest::sample::select(vec![
            "tcp:",
            "unix:",
            "local:",
            "udp:",
            "@",
            ",",
            "[",
            "]",
            ":",
            "0",
            "1",
            "42",
            "007",
            "18446744073709551615",
            "18446744073709551616",
            "+1",
            "a",
            "_x",
            "root",
            "a-b",
            "9z",
            "127.0.0.1:80",
            "[::1]:9",
            "[fe80::1%3]:0",
            "localhost:80",
            "Node7.Example:7000",
            "a-b.c",
            "-x",
            ".",
            "1.2.3",
            "65536",
            "/p",
            "\0",
            "é",
            " ",
            "!",
        ]);
        prop_oneof![
            3 => proptest::collection::vec(token, 0..14).prop_map(|v| v.concat()),
            1 => any::<String>(),
        ]
    }

    fn check_stable<T>(s: &str)
    where
        T: FromStr<Err = ParseError> + fmt::Display + fmt::Debug + PartialEq,
    {
        if let Ok(v) = s.parse::<T>() {
            let text = v.to_string();
            let again = text.parse::<T>();
            assert_eq!(again.as_ref(), Ok(&v), "input {s:?}, displayed {text:?}");
            if let Ok(again) = again {
                assert_eq!(again.to_string(), text);
            }
        }
    }

    proptest! {
        #[test]
        fn addr_roundtrips(a in strategy::addr()) {
            assert_text_roundtrip(&a);
            assert_postcard_roundtrip(&a);
        }

        #[test]
        fn proc_id_roundtrips(p in strategy::proc_id()) {
            assert_text_roundtrip(&p);
            assert_postcard_roundtrip(&p);
        }

        #[test]
        fn actor_id_roundtrips(a in strategy::actor_id()) {
            assert_text_roundtrip(&a);
            assert_postcard_roundtrip(&a);
        }

        #[test]
        fn port_id_roundtrips(p in strategy::port_id()) {
            assert_text_roundtrip(&p);
            assert_postcard_roundtrip(&p);
            // A port id is never mistaken for an actor id and vice versa.
            prop_assert!(p.to_string().parse::<ActorId>().is_err());
            prop_assert!(p.actor().to_string().parse::<PortId>().is_err());
        }

        #[test]
        fn tcp_postcard_keeps_flowinfo_and_scope(
            ip in any::<[u8; 16]>(), port in any::<u16>(), flow in any::<u32>(), scope in any::<u32>()
        ) {
            let a = ChannelAddr::Tcp(SocketAddr::V6(
                core::net::SocketAddrV6::new(ip.into(), port, flow, scope),
            ));
            assert_postcard_roundtrip(&a);
        }

        #[test]
        fn name_parser_and_validator_agree(
            s in prop_oneof![any::<String>(), "[A-Za-z0-9_\\-!,\\[\\] é]{0,70}"]
        ) {
            let valid = validate_name(&s);
            prop_assert_eq!(valid.is_ok(), s.parse::<Name>().is_ok());
            prop_assert_eq!(s.parse::<Name>().err(), valid.err());
        }

        #[test]
        fn proc_name_refused_like_validate_name(
            a in strategy::addr(),
            s in prop_oneof![any::<String>(), "[A-Za-z0-9_\\-!,\\[\\] é]{0,70}"],
        ) {
            let valid = validate_name(&s);
            // With a TCP address nothing in `s` can make the text parse except a valid name.
            let tcp = format!("tcp:127.0.0.1:7000,{s}");
            prop_assert_eq!(tcp.parse::<ProcId>().is_ok(), valid.is_ok());
            // Whatever the address, a name without a comma is judged by validate_name alone,
            // with the same NameError, reported where the name starts.
            if !s.contains(',') {
                let prefix = a.to_string();
                let text = format!("{prefix},{s}");
                match (text.parse::<ProcId>(), valid) {
                    (Ok(p), Ok(())) => prop_assert_eq!(p, ProcId::new(a, name(&s))),
                    (Err(e), Err(ne)) => prop_assert_eq!(
                        e,
                        err(IdKind::Proc, prefix.len() + 1, ParseErrorReason::BadName(ne))
                    ),
                    (got, want) => prop_assert!(false, "{text:?}: {got:?} vs {want:?}"),
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics_and_is_stable(s in soup()) {
            check_stable::<ChannelAddr>(&s);
            check_stable::<ProcId>(&s);
            check_stable::<ActorId>(&s);
            check_stable::<PortId>(&s);
            let _ = s.parse::<Name>();
            let _ = s.parse::<ChannelTransport>();
        }

        #[test]
        fn arbitrary_bytes_never_panic_postcard(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(p) = postcard::from_bytes::<PortId>(&bytes) {
                assert_postcard_roundtrip(&p);
                assert!(validate_name(p.actor().name().as_str()).is_ok());
            }
            if let Ok(a) = postcard::from_bytes::<ActorId>(&bytes) {
                assert_postcard_roundtrip(&a);
            }
        }
    }

    #[test]
    fn grammar_examples() {
        let p: PortId = "unix:/tmp/a,b[1],c,root,worker[3][7]".parse().unwrap();
        assert_eq!(
            p.actor().proc().addr(),
            &ChannelAddr::Unix(UnixAddr::path("/tmp/a,b[1],c").unwrap())
        );
        assert_eq!(p.actor().proc().name().as_str(), "root");
        assert_eq!(p.actor().name().as_str(), "worker");
        assert_eq!((p.actor().pid(), p.index()), (3, 7));

        let a: ChannelAddr = "tcp:[::1]:7000".parse().unwrap();
        assert_eq!(a, ChannelAddr::Tcp("[::1]:7000".parse().unwrap()));
        let a: ChannelAddr = "unix:@@x".parse().unwrap();
        assert_eq!(a, ChannelAddr::Unix(UnixAddr::abstract_name("@x").unwrap()));
        assert_eq!(a.to_string(), "unix:@@x");
        let a: ChannelAddr = "unix:rel/app.sock".parse().unwrap();
        assert_eq!(
            a,
            ChannelAddr::Unix(UnixAddr::path("rel/app.sock").unwrap())
        );
        assert_eq!("local:3".parse::<ChannelAddr>(), Ok(ChannelAddr::Local(3)));
        assert_eq!(
            "local:18446744073709551615".parse::<ChannelAddr>(),
            Ok(ChannelAddr::Local(u64::MAX))
        );

        let proc = ProcId::new(ChannelAddr::Local(3), name("root"));
        let actor = proc.actor(name("worker"), 2);
        assert_eq!(actor.to_string(), "local:3,root,worker[2]");
        assert_eq!(actor.port(17).to_string(), "local:3,root,worker[2][17]");
        assert_eq!(
            format!("{:?}", actor.port(17)),
            "local:3,root,worker[2][17]"
        );
        assert_eq!(format!("{proc:?}"), "local:3,root");
        assert_eq!(format!("{:?}", name("root")), "root");
        assert_eq!(format!("{:?}", ChannelAddr::Local(3)), "local:3");
    }

    #[test]
    fn scope_id_survives_text_flowinfo_does_not() {
        let v6 = core::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 80, 0, 3);
        let a = ChannelAddr::Tcp(SocketAddr::V6(v6));
        assert_eq!(a.to_string(), "tcp:[fe80::1%3]:80");
        assert_text_roundtrip(&a);
        let flow = ChannelAddr::Tcp(SocketAddr::V6(core::net::SocketAddrV6::new(
            *v6.ip(),
            80,
            9,
            3,
        )));
        assert_eq!(flow.to_string(), a.to_string());
        assert_postcard_roundtrip(&flow);
    }

    #[test]
    fn scheme_errors() {
        use ParseErrorReason::*;
        assert_eq!(
            "127.0.0.1:80".parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 0, MissingScheme))
        );
        assert_eq!(
            "/run/app.sock".parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 0, MissingScheme))
        );
        assert_eq!(
            "".parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 0, MissingScheme))
        );
        assert_eq!(
            "nothing,p".parse::<ProcId>(),
            Err(err(IdKind::Proc, 0, MissingScheme))
        );
        assert_eq!(
            "udp:1.2.3.4:5".parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 0, UnknownScheme))
        );
        assert_eq!(
            "TCP:1.2.3.4:5".parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 0, UnknownScheme))
        );
        let e = "udp:1.2.3.4:5,p".parse::<ProcId>().unwrap_err();
        assert_eq!(e, err(IdKind::Proc, 0, UnknownScheme));
        assert_eq!(
            e.to_string(),
            "invalid proc id at byte 0: unknown scheme (expected tcp:, unix: or local:)"
        );
    }

    #[test]
    fn socket_addr_errors() {
        use ParseErrorReason::*;
        for bad in [
            "tcp:",
            "tcp:1.2.3.4",
            "tcp:[::1]:99999",
            "tcp:::1:80",
            "tcp:1.2.3:80",
            "tcp:1.2.3.4.5:80",
            "tcp:[::1:80",
            "tcp:::80",
            "tcp:host",
        ] {
            assert_eq!(
                bad.parse::<ChannelAddr>(),
                Err(err(IdKind::Addr, 4, BadSocketAddr)),
                "{bad}"
            );
        }
        assert_eq!(
            "tcp:1.2.3.4,p".parse::<ProcId>(),
            Err(err(IdKind::Proc, 4, BadSocketAddr))
        );
    }

    #[test]
    fn host_addresses_parse_print_and_normalise() {
        let a: ChannelAddr = "tcp:node7.example:7000".parse().unwrap();
        assert_eq!(a, ChannelAddr::tcp_host("node7.example", 7000).unwrap());
        assert_eq!(a.to_string(), "tcp:node7.example:7000");
        assert_eq!(a.transport(), ChannelTransport::Tcp);
        assert_eq!(a.tcp_port(), Some(7000));
        assert!(!a.is_any());
        assert!("tcp:localhost:0".parse::<ChannelAddr>().unwrap().is_any());
        // Host names are case-insensitive: stored and printed in lower case.
        let upper: ChannelAddr = "tcp:Node7.EXAMPLE:7000".parse().unwrap();
        assert_eq!(upper, a);
        assert_eq!(upper.to_string(), "tcp:node7.example:7000");
        // Numeric labels are fine before the last one.
        assert_text_roundtrip(&ChannelAddr::tcp_host("10.0.0.node", 1).unwrap());
        // An IPv4-shaped text is always an IP address.
        assert_eq!(
            "tcp:127.0.0.1:7".parse::<ChannelAddr>(),
            Ok(ChannelAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 7))))
        );
        assert_eq!(
            a.with_tcp_port(9).to_string(),
            "tcp:node7.example:9",
            "port replaced"
        );
        assert_eq!(
            "tcp:0.0.0.0:0"
                .parse::<ChannelAddr>()
                .unwrap()
                .with_tcp_port(5)
                .to_string(),
            "tcp:0.0.0.0:5"
        );
        assert_eq!(
            ChannelAddr::Local(3).with_tcp_port(5),
            ChannelAddr::Local(3)
        );
        assert_eq!(ChannelAddr::Local(3).tcp_port(), None);

        let port: PortId = "tcp:node7.example:7000,root,w[1][2]".parse().unwrap();
        assert_eq!(port.actor().proc().addr(), &a);
        assert_text_roundtrip(&port);
        assert_postcard_roundtrip(&port);
    }

    #[test]
    fn host_name_rules() {
        use HostError::*;
        let max_label = "a".repeat(63);
        assert_eq!(validate_host_name(&max_label), Ok(()));
        assert_eq!(
            validate_host_name(&"a".repeat(64)),
            Err(LabelTooLong {
                at: 0,
                len: 64,
                max: 63
            })
        );
        let max = format!("{max_label}.{}", "b".repeat(52));
        assert_eq!(max.len(), MAX_HOST_LEN);
        assert_eq!(validate_host_name(&max), Ok(()));
        assert_eq!(HostName::new(&max).map(|h| h.as_str().len()), Ok(116));
        assert_eq!(
            validate_host_name(&format!("{max}b")),
            Err(TooLong { len: 117, max: 116 })
        );
        assert_eq!(validate_host_name(""), Err(Empty));
        assert_eq!(validate_host_name("a..b"), Err(EmptyLabel { at: 2 }));
        assert_eq!(validate_host_name(".a"), Err(EmptyLabel { at: 0 }));
        assert_eq!(validate_host_name("a."), Err(EmptyLabel { at: 2 }));
        assert_eq!(validate_host_name("a.-b"), Err(HyphenAtEdge { at: 2 }));
        assert_eq!(validate_host_name("ab-.c"), Err(HyphenAtEdge { at: 2 }));
        assert_eq!(validate_host_name("a.b_c"), Err(BadChar { at: 3, ch: '_' }));
        assert_eq!(validate_host_name("é"), Err(BadChar { at: 0, ch: 'é' }));
        assert_eq!(validate_host_name("a.1"), Err(NumericLast));
        assert_eq!(validate_host_name("1.2.3.4"), Err(NumericLast));
        for ok in [
            "localhost",
            "a",
            "1a",
            "a-1.b2",
            "xn--bcher-kva.example",
            "7.node",
        ] {
            assert_eq!(validate_host_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            HostError::NumericLast.to_string(),
            "the last label of a host name must not be all digits"
        );
    }

    /// Ids are copied by value; a host-name address must not make them bigger than a Unix
    /// one already does.
    #[test]
    fn host_names_make_no_id_bigger() {
        assert_eq!(
            core::mem::size_of::<ChannelAddr>(),
            core::mem::size_of::<UnixAddr>()
        );
        assert!(core::mem::size_of::<ProcId>() <= 200);
    }

    #[test]
    fn host_address_errors() {
        use ParseErrorReason::*;
        assert_eq!(
            "tcp:a..b:80".parse::<ChannelAddr>(),
            Err(err(
                IdKind::Addr,
                4,
                BadHost(HostError::EmptyLabel { at: 2 })
            ))
        );
        assert_eq!(
            "tcp:a_b:80,p".parse::<ProcId>(),
            Err(err(
                IdKind::Proc,
                4,
                BadHost(HostError::BadChar { at: 1, ch: '_' })
            ))
        );
        assert_eq!(
            "tcp:a.1:80".parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 4, BadHost(HostError::NumericLast)))
        );
        for bad in ["tcp:host:65536", "tcp:host:080", "tcp:host:", "tcp:host:-1"] {
            assert_eq!(
                bad.parse::<ChannelAddr>(),
                Err(err(IdKind::Addr, 9, BadPort)),
                "{bad}"
            );
        }
        let e = "tcp:node:99999,p".parse::<ProcId>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid proc id at byte 9: bad port (expected a decimal number up to 65535, no leading zeros)"
        );
        assert_eq!(
            ChannelAddr::tcp_host("bad_host", 1),
            Err(HostError::BadChar { at: 3, ch: '_' })
        );
    }

    #[test]
    fn unix_errors() {
        use ParseErrorReason::*;
        assert_eq!(
            "unix:".parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 5, EmptyPath))
        );
        assert_eq!(
            "unix:,p".parse::<ProcId>(),
            Err(err(IdKind::Proc, 5, EmptyPath))
        );
        assert_eq!(
            "unix:/a\0b".parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 7, NulByte))
        );
        assert_eq!(
            "unix:@ab\0".parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 8, NulByte))
        );
        assert_eq!(
            "unix:/x\0,p,a[0]".parse::<ActorId>(),
            Err(err(IdKind::Actor, 7, NulByte))
        );
        let e = "unix:/run/app.sock\0,p".parse::<ProcId>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid proc id at byte 18: NUL byte in unix socket address"
        );
    }

    #[test]
    fn unix_length_limits() {
        use ParseErrorReason::*;
        let ok_path = format!("/{}", "a".repeat(MAX_UNIX_PATH_LEN - 1));
        let long_path = format!("/{}", "a".repeat(MAX_UNIX_PATH_LEN));
        assert_eq!((ok_path.len(), long_path.len()), (107, 108));
        assert!(UnixAddr::path(&ok_path).is_ok());
        assert_eq!(
            UnixAddr::path(&long_path),
            Err(AddrError::TooLong { len: 108, max: 107 })
        );
        assert_text_roundtrip(&ChannelAddr::Unix(UnixAddr::path(&ok_path).unwrap()));
        assert_eq!(
            format!("unix:{long_path}").parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 5, PathTooLong { len: 108, max: 107 }))
        );

        let ok_name = "b".repeat(MAX_UNIX_ABSTRACT_LEN);
        let long_name = "b".repeat(MAX_UNIX_ABSTRACT_LEN + 1);
        assert!(UnixAddr::abstract_name(&ok_name).is_ok());
        assert_eq!(
            UnixAddr::abstract_name(&long_name),
            Err(AddrError::TooLong { len: 108, max: 107 })
        );
        assert_text_roundtrip(&ChannelAddr::Unix(
            UnixAddr::abstract_name(&ok_name).unwrap(),
        ));
        assert_eq!(
            format!("unix:@{long_name},p").parse::<ProcId>(),
            Err(err(IdKind::Proc, 6, PathTooLong { len: 108, max: 107 }))
        );

        // Multi-byte characters count in bytes, as the kernel does.
        let wide = "é".repeat(54);
        assert_eq!(
            UnixAddr::path(&format!("/{wide}")),
            Err(AddrError::TooLong { len: 109, max: 107 })
        );
    }

    #[test]
    fn unix_constructor_errors() {
        assert_eq!(UnixAddr::path(""), Err(AddrError::EmptyPath));
        assert_eq!(UnixAddr::path("@x"), Err(AddrError::AtPrefix));
        assert_eq!(UnixAddr::path("/a\0"), Err(AddrError::NulByte));
        assert_eq!(UnixAddr::abstract_name("a\0"), Err(AddrError::NulByte));
        assert!(UnixAddr::abstract_name("").is_ok());
        assert!(UnixAddr::path("x@y").is_ok());
        assert_eq!(
            UnixAddr::path("@x").unwrap_err().to_string(),
            "unix socket path must not start with '@' (that marks an abstract name)"
        );
    }

    #[test]
    fn number_errors() {
        use ParseErrorReason::*;
        for bad in [
            "local:", "local:01", "local:+1", "local:-1", "local: 1", "local:1x",
        ] {
            assert_eq!(
                bad.parse::<ChannelAddr>(),
                Err(err(IdKind::Addr, 6, BadNumber)),
                "{bad}"
            );
        }
        assert_eq!(
            "local:18446744073709551616".parse::<ChannelAddr>(),
            Err(err(IdKind::Addr, 6, BadNumber))
        );
        assert_eq!("local:0".parse::<ChannelAddr>(), Ok(ChannelAddr::Local(0)));
        // pid and port
        assert_eq!(
            "local:1,p,a[01]".parse::<ActorId>(),
            Err(err(IdKind::Actor, 12, BadNumber))
        );
        assert_eq!(
            "local:1,p,a[]".parse::<ActorId>(),
            Err(err(IdKind::Actor, 12, BadNumber))
        );
        assert_eq!(
            "local:1,p,a[+1]".parse::<ActorId>(),
            Err(err(IdKind::Actor, 12, BadNumber))
        );
        assert_eq!(
            "local:1,p,a[1][18446744073709551616]".parse::<PortId>(),
            Err(err(IdKind::Port, 15, BadNumber))
        );
        assert_eq!(
            "local:1,p,a[x][0]".parse::<PortId>(),
            Err(err(IdKind::Port, 12, BadNumber))
        );
    }

    #[test]
    fn separator_errors() {
        use ParseErrorReason::*;
        let e = "local:1,proc,a[12".parse::<ActorId>().unwrap_err();
        assert_eq!(e, err(IdKind::Actor, 17, Expected(']')));
        assert_eq!(e.to_string(), "invalid actor id at byte 17: expected ']'");

        // Missing pid group.
        assert_eq!(
            "local:1,p,a".parse::<ActorId>(),
            Err(err(IdKind::Actor, 11, Expected('[')))
        );
        // Junk after the group: an actor id ends with ']'.
        assert_eq!(
            "local:1,p,a[1]x".parse::<ActorId>(),
            Err(err(IdKind::Actor, 15, Expected(']')))
        );
        // A closing bracket without an opening one.
        assert_eq!(
            "local:1,p,a1]".parse::<ActorId>(),
            Err(err(IdKind::Actor, 12, Expected('[')))
        );
        // An actor id where a port id is wanted: the port group is missing at the end.
        assert_eq!(
            "local:1,p,a[1]".parse::<PortId>(),
            Err(err(IdKind::Port, 14, Expected('[')))
        );
        // A port id where an actor id is wanted: `a[1]` is not a name.
        assert_eq!(
            "local:1,p,a[1][2]".parse::<ActorId>(),
            Err(err(
                IdKind::Actor,
                10,
                BadName(NameError::BadChar { at: 1, ch: '[' })
            ))
        );
        // Missing commas.
        assert_eq!(
            "local:1".parse::<ProcId>(),
            Err(err(IdKind::Proc, 7, Expected(',')))
        );
        assert_eq!(
            "local:1[0]".parse::<ActorId>(),
            Err(err(IdKind::Actor, 7, Expected(',')))
        );
        assert_eq!(
            "p,a[1]".parse::<ActorId>(),
            Err(err(IdKind::Actor, 1, Expected(',')))
        );
        // Brackets in the address are never mistaken for ours.
        assert_eq!(
            "unix:/a[1],p,a".parse::<ActorId>(),
            Err(err(IdKind::Actor, 14, Expected('[')))
        );
    }

    #[test]
    fn name_errors_in_ids() {
        use ParseErrorReason::*;
        let e = "tcp:127.0.0.1:7000,procname01,ab!c[1][2]"
            .parse::<PortId>()
            .unwrap_err();
        assert_eq!(
            e,
            err(
                IdKind::Port,
                30,
                BadName(NameError::BadChar { at: 2, ch: '!' })
            )
        );
        assert_eq!(
            e.to_string(),
            "invalid port id at byte 30: bad name: character '!' at 2 is not allowed"
        );
        assert_eq!(
            "local:1,,a[0]".parse::<ActorId>(),
            Err(err(IdKind::Actor, 8, BadName(NameError::Empty)))
        );
        assert_eq!(
            "local:1,p,9a[0]".parse::<ActorId>(),
            Err(err(
                IdKind::Actor,
                10,
                BadName(NameError::BadStart { ch: '9' })
            ))
        );
        assert_eq!(
            "local:1,p,[0]".parse::<ActorId>(),
            Err(err(IdKind::Actor, 10, BadName(NameError::Empty)))
        );
        // Leftmost bad part wins.
        assert_eq!(
            "local:x,p!,a[z]".parse::<ActorId>(),
            Err(err(IdKind::Actor, 6, BadNumber))
        );
        assert_eq!(
            "local:1,p!,a[z]".parse::<ActorId>(),
            Err(err(
                IdKind::Actor,
                8,
                BadName(NameError::BadChar { at: 1, ch: '!' })
            ))
        );
    }

    #[test]
    fn name_rules_and_limits() {
        assert!(validate_name(&"a".repeat(64)).is_ok());
        assert_eq!(
            validate_name(&"a".repeat(65)),
            Err(NameError::TooLong { len: 65, max: 64 })
        );
        assert_eq!(
            Name::new(&"a".repeat(65)),
            Err(NameError::TooLong { len: 65, max: 64 })
        );
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name("-a"), Err(NameError::BadStart { ch: '-' }));
        assert_eq!(validate_name("é"), Err(NameError::BadStart { ch: 'é' }));
        assert_eq!(
            validate_name("ab,"),
            Err(NameError::BadChar { at: 2, ch: ',' })
        );
        assert_eq!(
            validate_name("aé!"),
            Err(NameError::BadChar { at: 1, ch: 'é' })
        );
        for ok in ["_", "a", "Z9", "a-b_c", "__init__"] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
            assert_eq!(
                ok.parse::<Name>().map(|n| n.to_string()),
                Ok(ok.to_string())
            );
            assert_eq!(Name::try_from(ok).as_ref().map(AsRef::as_ref), Ok(ok));
        }
        let long = name(&"x".repeat(64));
        let p = ProcId::new(ChannelAddr::Local(1), long.clone());
        assert_text_roundtrip(&p);
        assert_eq!(
            format!("local:1,{}", "x".repeat(65)).parse::<ProcId>(),
            Err(err(
                IdKind::Proc,
                8,
                ParseErrorReason::BadName(NameError::TooLong { len: 65, max: 64 })
            ))
        );
        assert_eq!(
            NameError::BadStart { ch: '1' }.to_string(),
            "name must start with an ASCII letter or '_', not '1'"
        );
    }

    #[test]
    fn any_forms() {
        assert_eq!(ChannelTransport::Tcp.any().to_string(), "tcp:127.0.0.1:0");
        assert_eq!(ChannelTransport::Unix.any().to_string(), "unix:@");
        assert_eq!(ChannelTransport::Local.any().to_string(), "local:0");
        for t in [
            ChannelTransport::Tcp,
            ChannelTransport::Unix,
            ChannelTransport::Local,
        ] {
            let a = t.any();
            assert!(a.is_any(), "{a}");
            assert_eq!(a.transport(), t);
            assert_text_roundtrip(&a);
            assert_eq!(t.to_string().parse::<ChannelTransport>(), Ok(t));
        }
        assert!("tcp:[::]:0".parse::<ChannelAddr>().unwrap().is_any());
        assert!(!"tcp:127.0.0.1:1".parse::<ChannelAddr>().unwrap().is_any());
        assert!(!"unix:@x".parse::<ChannelAddr>().unwrap().is_any());
        assert!(!"unix:/x".parse::<ChannelAddr>().unwrap().is_any());
        assert!(!"local:1".parse::<ChannelAddr>().unwrap().is_any());
        assert_eq!(
            "udp".parse::<ChannelTransport>(),
            Err(err(IdKind::Addr, 0, ParseErrorReason::UnknownScheme))
        );
    }

    #[test]
    fn postcard_rejects_invalid_names_and_addrs() {
        // Name: varint length then bytes.
        assert_eq!(
            postcard::from_bytes::<Name>(&[2, b'o', b'k']),
            Ok(name("ok"))
        );
        assert!(postcard::from_bytes::<Name>(&[2, b'1', b'a']).is_err());
        assert!(postcard::from_bytes::<Name>(&[0]).is_err());
        assert!(postcard::from_bytes::<Name>(&[2, 0xff, 0xfe]).is_err());
        assert!(postcard::from_bytes::<Name>(&[200]).is_err()); // truncated
        let mut long = vec![65u8];
        long.extend(core::iter::repeat_n(b'a', 65));
        assert!(postcard::from_bytes::<Name>(&long).is_err());

        // ProcId: ChannelAddr variant (Local = 2), u64 varint, then the name.
        let good = [2u8, 5, 1, b'p'];
        assert_eq!(
            postcard::from_bytes::<ProcId>(&good),
            Ok(ProcId::new(ChannelAddr::Local(5), name("p")))
        );
        assert!(postcard::from_bytes::<ProcId>(&[2, 5, 3, b'a', b'!', b'b']).is_err());
        assert!(postcard::from_bytes::<ProcId>(&[9, 5, 1, b'p']).is_err());

        // Unix (1), Path (0): "@x" and a NUL are refused; Abstract (1) "" is fine.
        assert!(postcard::from_bytes::<ChannelAddr>(&[1, 0, 2, b'@', b'x']).is_err());
        assert!(postcard::from_bytes::<ChannelAddr>(&[1, 0, 0]).is_err());
        assert!(postcard::from_bytes::<ChannelAddr>(&[1, 1, 2, b'a', 0]).is_err());
        assert_eq!(
            postcard::from_bytes::<ChannelAddr>(&[1, 1, 0]),
            Ok(ChannelTransport::Unix.any())
        );
        // TcpHost (3): a host name, then the port as a varint. Bad names are refused;
        // upper case is stored in lower case.
        assert_eq!(
            postcard::from_bytes::<ChannelAddr>(&[3, 2, b'a', b'b', 5]),
            Ok(ChannelAddr::tcp_host("ab", 5).unwrap())
        );
        assert_eq!(
            postcard::from_bytes::<ChannelAddr>(&[3, 2, b'A', b'b', 5]),
            Ok(ChannelAddr::tcp_host("ab", 5).unwrap())
        );
        assert!(postcard::from_bytes::<ChannelAddr>(&[3, 2, b'a', b'_', 5]).is_err());
        assert!(postcard::from_bytes::<ChannelAddr>(&[3, 1, b'1', 5]).is_err());
        assert!(postcard::from_bytes::<ChannelAddr>(&[3, 0, 5]).is_err());

        let mut too_long = vec![1u8, 0, 108, 1];
        too_long.extend(core::iter::repeat_n(b'a', 108));
        assert!(postcard::from_bytes::<ChannelAddr>(&too_long).is_err());
    }

    #[test]
    fn ids_accessors() {
        let proc = ProcId::new(ChannelTransport::Local.any(), name("root"));
        let actor = ActorId::new(proc.clone(), name("w"), 4);
        let port = PortId::new(actor.clone(), 9);
        assert_eq!(proc.addr(), &ChannelAddr::Local(0));
        assert_eq!(proc.name().as_str(), "root");
        assert_eq!(actor.proc(), &proc);
        assert_eq!(actor.name().as_str(), "w");
        assert_eq!(actor.pid(), 4);
        assert_eq!(port.actor(), &actor);
        assert_eq!(port.index(), 9);
        assert_eq!(proc.actor(name("w"), 4), actor);
        assert_eq!(actor.port(9), port);
        let names: Vec<Name> = vec![name("b"), name("a")];
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, vec![name("a"), name("b")]);
        let map: std::collections::BTreeMap<Name, u8> = [(name("k"), 1)].into_iter().collect();
        assert_eq!(map.get("k"), Some(&1));
    }
}
