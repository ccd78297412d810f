//! Framing: the connection preamble, the fixed frame header, an incremental decoder and
//! encoders into caller-owned buffers.
//!
//! # Wire layout (protocol version 5)
//!
//! Each side of a connection first writes an 8-byte preamble, then frames:
//!
//! ```text
//! preamble: 'P' 'W' 'I' 'R' | version: u16 LE | reserved: u16 (zero)
//! frame:    kind: u8 | flags: u8 | len: u32 LE | body: len bytes
//! ```
//!
//! For example, an [`FrameKind::Ack`] frame whose body is the single byte `0x2a`:
//!
//! ```text
//! 05 00 01 00 00 00 2a
//! ^kind ^flags ^len=1  ^body
//! ```
//!
//! # Handshake
//!
//! The dialer writes its preamble and a [`FrameKind::Hello`] (postcard [`Hello`]); the
//! acceptor has written its preamble on accepting. Without a cookie the acceptor answers
//! with a [`FrameKind::Welcome`] (postcard [`Welcome`]) or a [`FrameKind::Refuse`]
//! (postcard [`RefuseReason`]). With a cookie (see [`crate::auth`]) the hello carries the
//! dialer's nonce `Nd` (`auth: Some(Nd)`), and two frames with raw bodies come first:
//!
//! ```text
//! Challenge (kind 9), acceptor → dialer: Na: 16 bytes | acceptor tag: 32 bytes
//! Proof     (kind 10), dialer → acceptor: dialer tag: 32 bytes
//! ```
//!
//! The dialer checks the acceptor's tag before it answers (and never proves itself to an
//! acceptor that failed); the acceptor checks the dialer's tag before it looks up, creates
//! or resumes a session, then answers with the welcome. A hello with a nonce to an acceptor
//! without a cookie is refused with [`RefuseReason::AuthUnexpected`], one without a nonce to
//! an acceptor with a cookie with [`RefuseReason::AuthRequired`], a wrong proof with
//! [`RefuseReason::BadAuth`].
//!
//! # Two-way connections (since version 5)
//!
//! A connection carries at most one session each way. Once the dialer's session is open,
//! the acceptor may open its own session to the dialer over the same connection: it writes
//! a [`FrameKind::Hello`] naming itself (`from`) and the dialer (`to`), with `auth: None`
//! (both ends proved the cookie on this connection already), and the dialer answers with a
//! welcome or a refusal exactly as an acceptor would; a refusal ends only that session,
//! not the connection. From then on each side sends both its own session's frames and
//! the other session's answers, and the receiving side tells them apart by kind: welcome,
//! refusal, challenge, acknowledgement and pong are for the sending half of a session
//! ([`FrameKind::for_sender`]), hello, proof, data, ping and close for the receiving half.
//! A hello from the acceptor that names another proc than the one dialed, or carries a
//! nonce, is a protocol violation. Only the acceptor sends such a hello; the dialer's
//! side of a link never needs one. When two procs dial each other at once, the one with
//! the larger id gives up its own connection while that is still in its handshake and
//! sends its hello on the other's instead; a hello left unanswered on a connection is never
//! followed by another on it (a welcome does not say which hello it answers).
//!
//! Until the handshake is over, each side accepts frame bodies of at most
//! [`MAX_HANDSHAKE_FRAME_LEN`] bytes (the largest valid hello), whatever its message limit.
//!
//! The length is checked against the decoder's maximum (and its storage's capacity) as soon
//! as the six header bytes are in, before a single body byte is buffered, so a peer cannot
//! make us allocate by announcing a large frame. Unknown kinds are refused: they mean the
//! peer speaks a protocol we do not.
//!
//! The decoder takes arbitrary chunks: it reports exactly how many bytes of each chunk it
//! consumed, keeps partial input between calls, and yields at most one item per call. Its
//! errors are sticky: once the stream is known bad, every later call returns the same error,
//! and the connection should be closed.
//!
//! The decoder is generic over its body storage ([`BodyBuf`]): a fixed-capacity
//! `heapless::Vec` needs no allocator; with the `alloc` feature, `bytes::BytesMut` lets
//! [`FrameDecoder::take_body`] hand the body out as a `Bytes` without copying it again.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::id::ProcId;

/// First four bytes of every connection.
pub const MAGIC: [u8; 4] = *b"PWIR";
/// The protocol version this crate speaks.
pub const VERSION: u16 = 5;
/// Bytes in the preamble.
pub const PREAMBLE_LEN: usize = 8;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 6;
/// Default largest frame body accepted or sent: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;
/// Largest encoded [`Hello`]: two proc ids of the longest names and addresses, the
/// numbers at their longest varints, and a nonce (checked by a test against the id bounds).
pub const MAX_HELLO_LEN: u32 = 512;
/// Largest frame body either side accepts before the handshake is over: the largest hello
/// (every other handshake frame is smaller).
pub const MAX_HANDSHAKE_FRAME_LEN: u32 = MAX_HELLO_LEN;
/// Bytes in a [`FrameKind::Challenge`] body: the acceptor's nonce and tag.
pub const CHALLENGE_LEN: usize = crate::auth::NONCE_LEN + crate::auth::TAG_LEN;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Sender → receiver of a session (the dialer, or on a two-way connection the
    /// acceptor): who I am, whom I want, which session I resume.
    Hello = 1,
    /// Receiver → sender: the session is open; how far the receiver has received.
    Welcome = 2,
    /// Receiver → sender: the session is refused, with a reason. An acceptor then closes
    /// the connection.
    Refuse = 3,
    /// Sender → receiver: one envelope; sequence numbers are implicit and consecutive.
    Data = 4,
    /// Receiver → sender: cumulative acknowledgement (next sequence number expected).
    Ack = 5,
    /// Sender → receiver: liveness probe.
    Ping = 6,
    /// Receiver → sender: answer to a ping, or a keepalive.
    Pong = 7,
    /// Sender → receiver: the session ends here; forget it.
    Close = 8,
    /// Acceptor → dialer, with a cookie: the acceptor's nonce and its proof of the cookie.
    Challenge = 9,
    /// Dialer → acceptor, with a cookie: the dialer's proof of the cookie.
    Proof = 10,
}

impl FrameKind {
    /// Whether the sending half of a session takes this frame (welcome, refusal,
    /// challenge, acknowledgement, pong); the others are for the receiving half. On a
    /// two-way connection this says which of the two sessions a frame belongs to.
    pub const fn for_sender(self) -> bool {
        matches!(
            self,
            FrameKind::Welcome
                | FrameKind::Refuse
                | FrameKind::Challenge
                | FrameKind::Ack
                | FrameKind::Pong
        )
    }

    /// Decodes a kind byte.
    pub const fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Hello,
            2 => FrameKind::Welcome,
            3 => FrameKind::Refuse,
            4 => FrameKind::Data,
            5 => FrameKind::Ack,
            6 => FrameKind::Ping,
            7 => FrameKind::Pong,
            8 => FrameKind::Close,
            9 => FrameKind::Challenge,
            10 => FrameKind::Proof,
            _ => return None,
        })
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// What the body is.
    pub kind: FrameKind,
    /// Reserved for extensions; carried as-is.
    pub flags: u8,
    /// Body length in bytes.
    pub len: u32,
}

impl FrameHeader {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = self.kind as u8;
        out[1] = self.flags;
        out[2..6].copy_from_slice(&self.len.to_le_bytes());
    }

    /// Parses and checks a header against `max` body bytes.
    pub fn parse(b: &[u8; HEADER_LEN], max: u32) -> Result<FrameHeader, FrameError> {
        let kind = FrameKind::from_u8(b[0]).ok_or(FrameError::UnknownKind(b[0]))?;
        let len = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        if len > max {
            return Err(FrameError::TooLarge { len, max });
        }
        Ok(FrameHeader {
            kind,
            flags: b[1],
            len,
        })
    }
}

/// Why a byte stream cannot be decoded. Every variant is the peer's fault and fatal for
/// that connection only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The stream does not start with [`MAGIC`].
    BadMagic([u8; 4]),
    /// The peer speaks a protocol version we do not.
    UnsupportedVersion {
        /// What the peer announced.
        got: u16,
        /// What we speak.
        supported: u16,
    },
    /// A frame kind byte we do not know.
    UnknownKind(u8),
    /// A frame announced a body larger than allowed.
    TooLarge {
        /// Announced body length.
        len: u32,
        /// The limit in force.
        max: u32,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) => write!(f, "bad preamble magic {m:02x?}"),
            FrameError::UnsupportedVersion { got, supported } => {
                write!(
                    f,
                    "unsupported protocol version {got} (we speak {supported})"
                )
            }
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl core::error::Error for FrameError {}

/// An output buffer was too small; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// Bytes the encoding needs.
    pub needed: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "output buffer too small: {} bytes needed", self.needed)
    }
}

impl core::error::Error for BufferTooSmall {}

/// Storage for the body of the frame being decoded.
pub trait BodyBuf {
    /// Largest body this storage can hold.
    fn capacity_limit(&self) -> usize;
    /// Empties the storage and prepares room for `len` bytes (`len` is within the limit).
    fn begin(&mut self, len: usize);
    /// Appends bytes; never beyond the length given to `begin`.
    fn append(&mut self, bytes: &[u8]);
    /// The bytes held.
    fn as_slice(&self) -> &[u8];
}

impl<const N: usize> BodyBuf for heapless::Vec<u8, N> {
    fn capacity_limit(&self) -> usize {
        N
    }
    fn begin(&mut self, _len: usize) {
        self.clear();
    }
    fn append(&mut self, bytes: &[u8]) {
        // The decoder never appends past the checked length, which is within N.
        let room = N - self.len();
        let _ = self.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
    fn as_slice(&self) -> &[u8] {
        self
    }
}

#[cfg(feature = "alloc")]
impl BodyBuf for bytes::BytesMut {
    fn capacity_limit(&self) -> usize {
        usize::MAX
    }
    fn begin(&mut self, len: usize) {
        self.clear();
        // Amortise allocations over many small frames: bodies handed out earlier keep their
        // part of the allocation alive, so ask for a block rather than an exact fit.
        if self.capacity() < len {
            self.reserve(len.max(16 * 1024));
        }
    }
    fn append(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn as_slice(&self) -> &[u8] {
        self
    }
}

/// Size of the blocks a [`RecycledBody`] allocates: many small bodies share one.
#[cfg(feature = "alloc")]
const BODY_BLOCK: usize = 16 * 1024;

/// The body buffer of a session's connection: bodies are handed out as `Bytes` slices of
/// its blocks ([`FrameDecoder::take_body`]), and a full block is reused once every body
/// taken from it has been dropped (see `crate::recycle`), so steady traffic allocates
/// nothing.
#[cfg(feature = "alloc")]
#[derive(Debug, Default)]
pub(crate) struct RecycledBody {
    buf: bytes::BytesMut,
    recycler: crate::recycle::Recycler,
}

#[cfg(feature = "alloc")]
impl RecycledBody {
    /// Keeping up to `spares` full blocks for reuse.
    pub(crate) fn new(spares: usize) -> Self {
        RecycledBody {
            buf: bytes::BytesMut::new(),
            recycler: crate::recycle::Recycler::new(spares),
        }
    }
}

#[cfg(feature = "alloc")]
impl BodyBuf for RecycledBody {
    fn capacity_limit(&self) -> usize {
        usize::MAX
    }
    fn begin(&mut self, len: usize) {
        self.buf.clear();
        if self.buf.capacity() < len {
            self.recycler.renew(&mut self.buf, len, BODY_BLOCK);
        }
    }
    fn append(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    fn as_slice(&self) -> &[u8] {
        &self.buf
    }
}

/// One unit yielded by [`FrameDecoder::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// The peer's preamble was read; it speaks `version`.
    Preamble {
        /// The peer's protocol version (always [`VERSION`] today).
        version: u16,
    },
    /// A whole frame was read; its body is in [`FrameDecoder::body`].
    Frame(FrameHeader),
}

/// Result of one [`FrameDecoder::decode`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input consumed; the caller passes the rest on the next call.
    pub consumed: usize,
    /// The item completed by this call, if any.
    pub item: Option<Item>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Preamble,
    Header,
    Body(FrameHeader),
    Failed(FrameError),
}

/// Incremental decoder for one direction of one connection.
#[derive(Debug)]
pub struct FrameDecoder<B> {
    max: u32,
    state: State,
    /// Preamble or header bytes collected so far.
    head: [u8; PREAMBLE_LEN],
    have: usize,
    body: B,
}

impl<B: BodyBuf> FrameDecoder<B> {
    /// A decoder that expects the preamble first, then frames of at most `max` body bytes
    /// (further capped by the storage's capacity).
    pub fn new(max: u32, body: B) -> Self {
        let cap = u32::try_from(body.capacity_limit()).unwrap_or(u32::MAX);
        FrameDecoder {
            max: max.min(cap),
            state: State::Preamble,
            head: [0; PREAMBLE_LEN],
            have: 0,
            body,
        }
    }

    /// A decoder for a stream whose preamble was already handled.
    pub fn frames_only(max: u32, body: B) -> Self {
        let mut d = Self::new(max, body);
        d.state = State::Header;
        d
    }

    /// The effective body limit.
    pub fn max_len(&self) -> u32 {
        self.max
    }

    /// Changes the body limit for the frames that follow (further capped by the storage's
    /// capacity), e.g. from the handshake limit to the message limit once a session is up.
    pub fn set_max_len(&mut self, max: u32) {
        let cap = u32::try_from(self.body.capacity_limit()).unwrap_or(u32::MAX);
        self.max = max.min(cap);
    }

    /// The sticky error, if the stream has failed.
    pub fn error(&self) -> Option<FrameError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// True when no partial preamble, header or body is held.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Header | State::Preamble) && self.have == 0
    }

    /// Bytes held now: a partial preamble or header, and the body collected so far.
    pub fn buffered(&self) -> usize {
        self.have + self.body.as_slice().len()
    }

    /// The body of the frame last yielded (valid until the next call to `decode`).
    pub fn body(&self) -> &[u8] {
        self.body.as_slice()
    }

    /// Consumes bytes from `input` until one item is complete or the input runs out.
    pub fn decode(&mut self, input: &[u8]) -> Result<Progress, FrameError> {
        let mut consumed = 0;
        loop {
            match self.state {
                State::Failed(e) => return Err(e),
                State::Preamble => {
                    consumed += self.fill_head(&input[consumed..], PREAMBLE_LEN);
                    if self.have < PREAMBLE_LEN {
                        return Ok(Progress {
                            consumed,
                            item: None,
                        });
                    }
                    self.have = 0;
                    let magic = [self.head[0], self.head[1], self.head[2], self.head[3]];
                    if magic != MAGIC {
                        return Err(self.fail(FrameError::BadMagic(magic)));
                    }
                    let version = u16::from_le_bytes([self.head[4], self.head[5]]);
                    if version != VERSION {
                        return Err(self.fail(FrameError::UnsupportedVersion {
                            got: version,
                            supported: VERSION,
                        }));
                    }
                    self.state = State::Header;
                    let item = Some(Item::Preamble { version });
                    return Ok(Progress { consumed, item });
                }
                State::Header => {
                    if consumed == input.len() {
                        return Ok(Progress {
                            consumed,
                            item: None,
                        });
                    }
                    consumed += self.fill_head(&input[consumed..], HEADER_LEN);
                    if self.have < HEADER_LEN {
                        return Ok(Progress {
                            consumed,
                            item: None,
                        });
                    }
                    self.have = 0;
                    let mut h = [0u8; HEADER_LEN];
                    h.copy_from_slice(&self.head[..HEADER_LEN]);
                    let header = match FrameHeader::parse(&h, self.max) {
                        Ok(header) => header,
                        Err(e) => return Err(self.fail(e)),
                    };
                    self.body.begin(header.len as usize);
                    self.state = State::Body(header);
                }
                State::Body(header) => {
                    let want = header.len as usize - self.body.as_slice().len();
                    let take = want.min(input.len() - consumed);
                    self.body.append(&input[consumed..consumed + take]);
                    consumed += take;
                    if take < want {
                        return Ok(Progress {
                            consumed,
                            item: None,
                        });
                    }
                    self.state = State::Header;
                    let item = Some(Item::Frame(header));
                    return Ok(Progress { consumed, item });
                }
            }
        }
    }

    fn fill_head(&mut self, input: &[u8], upto: usize) -> usize {
        let take = (upto - self.have).min(input.len());
        self.head[self.have..self.have + take].copy_from_slice(&input[..take]);
        self.have += take;
        take
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.state = State::Failed(e);
        e
    }
}

#[cfg(feature = "alloc")]
impl FrameDecoder<bytes::BytesMut> {
    /// Takes the body of the frame last yielded, without copying.
    pub fn take_body(&mut self) -> bytes::Bytes {
        self.body.split().freeze()
    }
}

#[cfg(feature = "alloc")]
impl FrameDecoder<RecycledBody> {
    /// Takes the body of the frame last yielded, without copying.
    pub(crate) fn take_body(&mut self) -> bytes::Bytes {
        self.body.buf.split().freeze()
    }

    /// The batch path: when the decoder is between frames and `input` starts with whole,
    /// valid frames, copies all of them into the body buffer at once and hands them out as
    /// one `Bytes` (each body then costs a slice, not a copy and a split of its own), with
    /// how many input bytes they took. `None` when there is no whole frame to take: the
    /// caller goes on with [`FrameDecoder::decode`], which also reports any error at the
    /// first frame this stopped at.
    ///
    /// Memory: the bodies of one input share one block (as large as the input's whole
    /// frames, at least 16 KiB), which lives while any of them does; a connection holds at
    /// most `1 + spare_buffers` such blocks of its own (see `crate::recycle`).
    pub(crate) fn whole_frames(&mut self, input: &[u8]) -> Option<(usize, WholeFrames)> {
        if !matches!(self.state, State::Header) || self.have != 0 {
            return None;
        }
        let mut end = 0;
        while let Some(h) = input.get(end..end + HEADER_LEN) {
            let mut head = [0u8; HEADER_LEN];
            head.copy_from_slice(h);
            let Ok(header) = FrameHeader::parse(&head, self.max) else {
                break;
            };
            let next = end + HEADER_LEN + header.len as usize;
            if next > input.len() {
                break;
            }
            end = next;
        }
        if end == 0 {
            return None;
        }
        self.body.begin(end);
        self.body.append(&input[..end]);
        let bytes = self.body.buf.split().freeze();
        Some((end, WholeFrames { bytes, at: 0 }))
    }
}

/// Frames with bodies of at least this many bytes can be read by the driver straight into
/// a buffer of its own ([`FrameDecoder::large_body`]).
#[cfg(feature = "alloc")]
pub(crate) const DIRECT_BODY_MIN: usize = 64 * 1024;

#[cfg(feature = "alloc")]
impl FrameDecoder<RecycledBody> {
    /// While the body of a large frame (at least [`DIRECT_BODY_MIN`] bytes) is being
    /// collected: the body's length and the bytes of it held so far. The driver may then
    /// read the rest straight into a buffer of that length that starts with those bytes,
    /// and hand it over with [`FrameDecoder::adopt_body`], so nothing copies the body again.
    pub(crate) fn large_body(&self) -> Option<(usize, &[u8])> {
        let State::Body(header) = self.state else {
            return None;
        };
        let len = header.len as usize;
        let have = self.body.as_slice();
        (len >= DIRECT_BODY_MIN && have.len() < len).then_some((len, have))
    }

    /// The whole body of the frame being collected, in the driver's buffer (see
    /// [`FrameDecoder::large_body`]): the frame is complete, its body is `body` itself.
    /// `Err` gives `body` back when it is not that (another length, or not starting with
    /// the bytes held); the decoder is then unchanged.
    pub(crate) fn adopt_body(
        &mut self,
        body: bytes::Bytes,
    ) -> Result<(FrameHeader, bytes::Bytes), bytes::Bytes> {
        let State::Body(header) = self.state else {
            return Err(body);
        };
        let held = self.body.as_slice();
        if body.len() != header.len as usize || body.get(..held.len()) != Some(held) {
            return Err(body);
        }
        self.body.begin(0);
        self.state = State::Header;
        Ok((header, body))
    }
}

/// Whole frames taken at once by [`FrameDecoder::whole_frames`], already checked: each
/// item is a frame's kind and body.
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub(crate) struct WholeFrames {
    bytes: bytes::Bytes,
    at: usize,
}

#[cfg(feature = "alloc")]
impl Iterator for WholeFrames {
    type Item = (FrameKind, bytes::Bytes);

    fn next(&mut self) -> Option<Self::Item> {
        let h = self.bytes.get(self.at..self.at + HEADER_LEN)?;
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(h);
        // Checked when taken; `u32::MAX` only re-reads the fields.
        let header = FrameHeader::parse(&head, u32::MAX).ok()?;
        let start = self.at + HEADER_LEN;
        let end = start + header.len as usize;
        let body = self.bytes.slice(start..end.min(self.bytes.len()));
        self.at = end;
        Some((header.kind, body))
    }
}

/// Writes the preamble into `out`.
pub fn encode_preamble(out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let out = out.get_mut(..PREAMBLE_LEN).ok_or(BufferTooSmall {
        needed: PREAMBLE_LEN,
    })?;
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&VERSION.to_le_bytes());
    out[6..8].copy_from_slice(&[0, 0]);
    Ok(PREAMBLE_LEN)
}

/// The preamble as bytes.
pub const fn preamble() -> [u8; PREAMBLE_LEN] {
    let v = VERSION.to_le_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], 0, 0]
}

/// Encodes one frame into `out`. A too-small buffer is left untouched and the error says
/// how many bytes are needed. Bodies over `u32::MAX` bytes cannot be framed at all and are
/// refused the same way the decoder would refuse them.
pub fn encode_frame(
    kind: FrameKind,
    flags: u8,
    body: &[u8],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let len = frame_len(body.len())?;
    let needed = HEADER_LEN + body.len();
    let out = out
        .get_mut(..needed)
        .ok_or(EncodeError::BufferTooSmall(BufferTooSmall { needed }))?;
    let mut h = [0u8; HEADER_LEN];
    FrameHeader { kind, flags, len }.write(&mut h);
    out[..HEADER_LEN].copy_from_slice(&h);
    out[HEADER_LEN..].copy_from_slice(body);
    Ok(needed)
}

/// Appends one frame whose body is the concatenation of `parts` to `out`.
#[cfg(feature = "alloc")]
pub fn append_frame(
    kind: FrameKind,
    flags: u8,
    parts: &[&[u8]],
    out: &mut bytes::BytesMut,
) -> Result<(), EncodeError> {
    let body_len: usize = parts.iter().map(|p| p.len()).sum();
    let len = frame_len(body_len)?;
    let mut h = [0u8; HEADER_LEN];
    FrameHeader { kind, flags, len }.write(&mut h);
    out.reserve(HEADER_LEN + body_len);
    out.extend_from_slice(&h);
    for p in parts {
        out.extend_from_slice(p);
    }
    Ok(())
}

fn frame_len(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::TooLarge {
        len,
        max: u32::MAX as usize,
    })
}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The caller's buffer is too small; nothing was written.
    BufferTooSmall(BufferTooSmall),
    /// The body is larger than the limit.
    TooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall(b) => b.fmt(f),
            EncodeError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl core::error::Error for EncodeError {}

// ---- Handshake bodies (postcard) ----

/// Body of [`FrameKind::Hello`]: the dialer introduces itself and names whom it expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The dialing proc.
    pub from: ProcId,
    /// The proc the dialer expects to reach; the acceptor refuses another name.
    pub to: ProcId,
    /// Random per start of the dialing proc.
    pub incarnation: u64,
    /// The dialer's session with this acceptor.
    pub session: u64,
    /// False on a session's first handshake; true when resuming it.
    pub resume: bool,
    /// Largest frame body the dialer accepts.
    pub max_frame_len: u32,
    /// The dialer's nonce when it authenticates with a cookie (see [`crate::auth`]).
    pub auth: Option<crate::auth::Nonce>,
}

/// Body of [`FrameKind::Welcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Random per start of the accepting proc.
    pub incarnation: u64,
    /// Next sequence number the acceptor expects; `None` when it does not know the session
    /// the dialer asked to resume.
    pub next: Option<u64>,
    /// Largest frame body the acceptor accepts.
    pub max_frame_len: u32,
    /// Entries of the acceptor's id cache for this session: the dialer defines indices
    /// below this only (see `idcache`).
    pub id_cache: u16,
}

/// Why an acceptor refused a session (body of [`FrameKind::Refuse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The dialer expected a proc of another name at this address.
    WrongProc,
    /// The dialer speaks a protocol version the acceptor does not.
    UnsupportedVersion {
        /// What the acceptor speaks.
        supported: u16,
    },
    /// The acceptor is shutting down.
    ShuttingDown,
    /// The hello could not be decoded.
    BadHello,
    /// The acceptor holds `max_inbound_sessions` sessions already, all of them connected.
    TooManySessions,
    /// The acceptor requires a cookie; the hello carried no nonce.
    AuthRequired,
    /// The dialer authenticates with a cookie; the acceptor has none configured.
    AuthUnexpected,
    /// The dialer's proof does not match the acceptor's cookie (a wrong cookie, or a
    /// replayed handshake).
    BadAuth,
    /// Local only, never sent: the acceptor held `max_inbound_conns` connections, and closed
    /// this one at once without a word (a dialer retries after its backoff).
    TooManyConnections,
    /// Local only, never sent: `max_handshaking` connections were in their handshake, and
    /// this one, the oldest, was closed to make room.
    HandshakeEvicted,
}

impl RefuseReason {
    /// Every reason without data, and `UnsupportedVersion` with this crate's version, in
    /// counter order.
    pub const ALL: [RefuseReason; 10] = [
        RefuseReason::WrongProc,
        RefuseReason::UnsupportedVersion { supported: VERSION },
        RefuseReason::ShuttingDown,
        RefuseReason::BadHello,
        RefuseReason::TooManySessions,
        RefuseReason::AuthRequired,
        RefuseReason::AuthUnexpected,
        RefuseReason::BadAuth,
        RefuseReason::TooManyConnections,
        RefuseReason::HandshakeEvicted,
    ];

    /// This reason's position in [`RefuseReason::ALL`] (whatever `UnsupportedVersion` holds).
    pub const fn index(&self) -> usize {
        match self {
            RefuseReason::WrongProc => 0,
            RefuseReason::UnsupportedVersion { .. } => 1,
            RefuseReason::ShuttingDown => 2,
            RefuseReason::BadHello => 3,
            RefuseReason::TooManySessions => 4,
            RefuseReason::AuthRequired => 5,
            RefuseReason::AuthUnexpected => 6,
            RefuseReason::BadAuth => 7,
            RefuseReason::TooManyConnections => 8,
            RefuseReason::HandshakeEvicted => 9,
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::WrongProc => f.write_str("no proc of that name at this address"),
            RefuseReason::UnsupportedVersion { supported } => {
                write!(f, "unsupported protocol version (peer speaks {supported})")
            }
            RefuseReason::ShuttingDown => f.write_str("peer is shutting down"),
            RefuseReason::BadHello => f.write_str("malformed hello"),
            RefuseReason::TooManySessions => f.write_str("peer has too many sessions"),
            RefuseReason::AuthRequired => f.write_str("peer requires a cookie; we have none"),
            RefuseReason::AuthUnexpected => {
                f.write_str("we authenticate with a cookie; the peer has none")
            }
            RefuseReason::BadAuth => f.write_str("cookie proof does not match"),
            RefuseReason::TooManyConnections => f.write_str("too many inbound connections"),
            RefuseReason::HandshakeEvicted => {
                f.write_str("evicted: too many connections in their handshake")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "alloc")]
    #[test]
    fn whole_frames_are_taken_in_one_copy_and_a_cut_frame_goes_on_incrementally() {
        let mut wire = bytes::BytesMut::new();
        append_frame(FrameKind::Data, 0, &[b"one"], &mut wire).unwrap();
        append_frame(FrameKind::Ping, 0, &[], &mut wire).unwrap();
        append_frame(FrameKind::Data, 0, &[b"three"], &mut wire).unwrap();
        let cut = wire.len() - 2;
        let mut d = FrameDecoder::frames_only(100, RecycledBody::new(2));
        let (n, frames) = d.whole_frames(&wire[..cut]).unwrap();
        assert_eq!(n, 9 + 6, "the first two frames");
        let got: alloc::vec::Vec<_> = frames.collect();
        assert_eq!(got[0], (FrameKind::Data, bytes::Bytes::from_static(b"one")));
        assert_eq!(got[1], (FrameKind::Ping, bytes::Bytes::new()));
        assert!(d.whole_frames(&wire[n..cut]).is_none(), "the third is cut");
        let p = d.decode(&wire[n..cut]).unwrap();
        assert_eq!((p.consumed, p.item), (cut - n, None));
        assert!(d.whole_frames(&wire[cut..]).is_none(), "mid-frame");
        let p = d.decode(&wire[cut..]).unwrap();
        assert!(matches!(p.item, Some(Item::Frame(h)) if h.kind == FrameKind::Data));
        assert_eq!(d.take_body(), &b"three"[..]);
        // A frame over the limit is left for `decode` to report.
        let mut big = bytes::BytesMut::new();
        append_frame(FrameKind::Data, 0, &[&[0u8; 101]], &mut big).unwrap();
        assert!(d.whole_frames(&big).is_none());
        assert!(matches!(d.decode(&big), Err(FrameError::TooLarge { .. })));
    }
    use proptest::prelude::*;

    type Small = heapless::Vec<u8, 256>;

    fn kind() -> impl Strategy<Value = FrameKind> {
        (1u8..=10).prop_map(|b| FrameKind::from_u8(b).unwrap())
    }

    fn stream(frames: &[(FrameKind, u8, std::vec::Vec<u8>)]) -> std::vec::Vec<u8> {
        let mut out = std::vec::Vec::from(preamble());
        for (k, f, body) in frames {
            let mut buf = std::vec![0u8; HEADER_LEN + body.len()];
            let n = encode_frame(*k, *f, body, &mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// Decodes `input` cut at `cuts`; returns the items (frames with their bodies) and the
    /// error, if any.
    #[allow(clippy::type_complexity)]
    fn decode_chunked(
        input: &[u8],
        cuts: &[usize],
        max: u32,
    ) -> (std::vec::Vec<(Item, std::vec::Vec<u8>)>, Option<FrameError>) {
        let mut d = FrameDecoder::new(max, Small::new());
        let mut out = std::vec::Vec::new();
        let mut bounds: std::vec::Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(0);
        bounds.push(input.len());
        bounds.sort();
        for w in bounds.windows(2) {
            let mut chunk = &input[w[0]..w[1]];
            loop {
                match d.decode(chunk) {
                    Ok(p) => {
                        assert!(p.consumed <= chunk.len());
                        chunk = &chunk[p.consumed..];
                        match p.item {
                            Some(item) => out.push((item, d.body().to_vec())),
                            None => {
                                assert!(chunk.is_empty(), "stalled with input left");
                                break;
                            }
                        }
                    }
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_frames(
            frames in prop::collection::vec((kind(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..200)), 0..12),
            cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let bytes = stream(&frames);
            let (whole, err) = decode_chunked(&bytes, &[], 256);
            prop_assert_eq!(err, None);
            let (split, err2) = decode_chunked(&bytes, &cuts, 256);
            prop_assert_eq!(err2, None);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), frames.len() + 1);
            for ((item, body), (k, f, b)) in whole[1..].iter().zip(&frames) {
                prop_assert_eq!(*item, Item::Frame(FrameHeader { kind: *k, flags: *f, len: b.len() as u32 }));
                prop_assert_eq!(body, b);
            }
        }

        #[test]
        fn garbage_errors_identically_under_any_chunking(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            valid_prefix in any::<bool>(),
            cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let mut input = if valid_prefix { std::vec::Vec::from(preamble()) } else { std::vec::Vec::new() };
            input.extend_from_slice(&bytes);
            let whole = decode_chunked(&input, &[], 100);
            let split = decode_chunked(&input, &cuts, 100);
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn truncated_input_never_yields_the_cut_frame(
            body in prop::collection::vec(any::<u8>(), 0..200),
            cut in any::<usize>(),
        ) {
            let bytes = stream(&[(FrameKind::Data, 0, body.clone())]);
            let cut = PREAMBLE_LEN + cut % (HEADER_LEN + body.len());
            let (items, err) = decode_chunked(&bytes[..cut], &[], 256);
            prop_assert_eq!(err, None);
            prop_assert_eq!(items.len(), 1, "only the preamble");
        }

        #[test]
        fn encode_into_small_buffer_reports_need_and_writes_nothing(
            body in prop::collection::vec(any::<u8>(), 0..64),
            size in 0usize..80,
        ) {
            let mut buf = [0xAAu8; 80];
            let needed = HEADER_LEN + body.len();
            match encode_frame(FrameKind::Data, 0, &body, &mut buf[..size]) {
                Ok(n) => { prop_assert!(size >= needed); prop_assert_eq!(n, needed); }
                Err(e) => {
                    prop_assert!(size < needed);
                    prop_assert_eq!(e, EncodeError::BufferTooSmall(BufferTooSmall { needed }));
                    prop_assert!(buf.iter().all(|b| *b == 0xAA));
                }
            }
        }
    }

    #[test]
    fn the_largest_hello_fits_the_handshake_limit() {
        use crate::id::{ChannelAddr, Name, UnixAddr};
        let name = Name::new(&"n".repeat(crate::id::MAX_NAME_LEN)).unwrap();
        let path = std::format!("/{}", "p".repeat(crate::id::MAX_UNIX_PATH_LEN - 1));
        let unix = ChannelAddr::Unix(UnixAddr::path(&path).unwrap());
        let v6 = ChannelAddr::Tcp(std::net::SocketAddr::V6(std::net::SocketAddrV6::new(
            std::net::Ipv6Addr::LOCALHOST,
            u16::MAX,
            u32::MAX,
            u32::MAX,
        )));
        for addr in [unix, v6] {
            let id = ProcId::new(addr, name.clone());
            let hello = Hello {
                from: id.clone(),
                to: id,
                incarnation: u64::MAX,
                session: u64::MAX,
                resume: true,
                max_frame_len: u32::MAX,
                auth: Some([0xff; crate::auth::NONCE_LEN]),
            };
            let mut buf = [0u8; 2048];
            let len = postcard::to_slice(&hello, &mut buf).unwrap().len();
            assert!(len as u32 <= MAX_HELLO_LEN, "{len}");
            assert!(CHALLENGE_LEN as u32 <= MAX_HANDSHAKE_FRAME_LEN);
        }
    }

    #[test]
    fn the_limit_can_be_raised_after_the_handshake() {
        let mut d = FrameDecoder::frames_only(8, Small::new());
        d.set_max_len(100);
        assert_eq!(d.max_len(), 100);
        d.set_max_len(100_000);
        assert_eq!(d.max_len(), 256, "capped by storage");
    }

    #[test]
    fn oversized_length_is_refused_before_any_body_byte() {
        let mut d = FrameDecoder::new(1000, Small::new());
        assert_eq!(d.max_len(), 256, "capped by storage");
        let mut input = std::vec::Vec::from(preamble());
        input.extend_from_slice(&[FrameKind::Data as u8, 0]);
        input.extend_from_slice(&257u32.to_le_bytes());
        input.extend_from_slice(&[7; 10]);
        let p = d.decode(&input).unwrap();
        assert_eq!(p.item, Some(Item::Preamble { version: VERSION }));
        let err = d.decode(&input[p.consumed..]).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { len: 257, max: 256 });
        assert!(d.body().is_empty());
        // Sticky.
        assert_eq!(d.decode(&[1, 2, 3]), Err(err));
        assert_eq!(d.error(), Some(err));
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn growable_decoder_refuses_huge_length_without_allocating() {
        let mut d = FrameDecoder::frames_only(DEFAULT_MAX_FRAME_LEN, bytes::BytesMut::new());
        let mut h = [0u8; HEADER_LEN];
        FrameHeader {
            kind: FrameKind::Data,
            flags: 0,
            len: u32::MAX,
        }
        .write(&mut h);
        assert_eq!(
            d.decode(&h),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: DEFAULT_MAX_FRAME_LEN
            })
        );
        assert_eq!(d.body.capacity(), 0);
    }

    #[test]
    fn preamble_errors() {
        let mut d = FrameDecoder::new(10, Small::new());
        assert_eq!(d.decode(b"HTTP/1.1"), Err(FrameError::BadMagic(*b"HTTP")));
        let mut d = FrameDecoder::new(10, Small::new());
        let mut p = preamble();
        p[4] = 9;
        assert_eq!(
            d.decode(&p),
            Err(FrameError::UnsupportedVersion {
                got: 9,
                supported: VERSION
            })
        );
        let mut d = FrameDecoder::frames_only(10, Small::new());
        assert_eq!(
            d.decode(&[0, 0, 0, 0, 0, 0]),
            Err(FrameError::UnknownKind(0))
        );
    }

    #[test]
    fn byte_level_example_from_the_docs() {
        let mut buf = [0u8; 7];
        assert_eq!(encode_frame(FrameKind::Ack, 0, &[0x2a], &mut buf), Ok(7));
        assert_eq!(buf, [5, 0, 1, 0, 0, 0, 0x2a]);
        let mut d = FrameDecoder::frames_only(16, Small::new());
        let p = d.decode(&buf).unwrap();
        assert_eq!(p.consumed, 7);
        assert_eq!(
            p.item,
            Some(Item::Frame(FrameHeader {
                kind: FrameKind::Ack,
                flags: 0,
                len: 1
            }))
        );
        assert_eq!(d.body(), &[0x2a]);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn a_large_body_read_by_the_driver_is_adopted_without_a_copy() {
        let len = DIRECT_BODY_MIN + 10;
        let body: std::vec::Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut wire = bytes::BytesMut::new();
        append_frame(FrameKind::Data, 0, &[&body], &mut wire).unwrap();
        let mut d = FrameDecoder::frames_only(1 << 20, RecycledBody::new(2));
        assert_eq!(d.large_body(), None, "no frame yet");
        let p = d.decode(&wire[..HEADER_LEN + 100]).unwrap();
        assert_eq!((p.consumed, p.item), (HEADER_LEN + 100, None));
        let (want, held) = d.large_body().expect("in a large body");
        assert_eq!((want, held), (len, &body[..100]));
        // Not the body: another length, or other leading bytes. The decoder is unchanged.
        let short = bytes::Bytes::copy_from_slice(&body[..len - 1]);
        assert_eq!(d.adopt_body(short.clone()), Err(short));
        let mut other = body.clone();
        other[0] ^= 1;
        let other = bytes::Bytes::from(other);
        assert_eq!(d.adopt_body(other.clone()), Err(other));
        assert_eq!(d.large_body().map(|(l, h)| (l, h.len())), Some((len, 100)));
        let mine = bytes::Bytes::from(body.clone());
        let (header, got) = d.adopt_body(mine.clone()).expect("the body");
        assert_eq!((header.kind, header.len as usize), (FrameKind::Data, len));
        assert_eq!(got.as_ptr(), mine.as_ptr(), "the driver's buffer itself");
        assert!(d.is_idle());
        // The next frame decodes as usual.
        let p = d.decode(&wire).unwrap();
        assert!(matches!(p.item, Some(Item::Frame(_))));
        assert_eq!(&d.take_body()[..], &body[..]);
    }

    #[test]
    fn small_bodies_are_not_offered_to_the_driver() {
        let mut wire = bytes::BytesMut::new();
        append_frame(FrameKind::Data, 0, &[&[7u8; 1000]], &mut wire).unwrap();
        let mut d = FrameDecoder::frames_only(1 << 20, RecycledBody::new(2));
        d.decode(&wire[..HEADER_LEN + 10]).unwrap();
        assert_eq!(d.large_body(), None);
    }

    #[test]
    fn append_matches_encode_and_take_body_is_the_body() {
        let mut out = bytes::BytesMut::new();
        append_frame(FrameKind::Data, 3, &[b"ab", b"", b"cde"], &mut out).unwrap();
        let mut buf = [0u8; 11];
        encode_frame(FrameKind::Data, 3, b"abcde", &mut buf).unwrap();
        assert_eq!(&out[..], &buf[..]);
        let mut d = FrameDecoder::frames_only(100, bytes::BytesMut::new());
        let p = d.decode(&out).unwrap();
        assert!(matches!(p.item, Some(Item::Frame(_))));
        assert_eq!(&d.take_body()[..], b"abcde");
    }
}
