//! Typed ports: references anyone can send to, and the receivers that drain them.
//!
//! Runtime-neutral. Messages are serialized with serde + postcard; the payload of each
//! envelope is exactly the postcard encoding of one message, and the envelope carries the
//! message type's [`TypeFingerprint`] (`Envelope::fingerprint`).
//!
//! * [`PortRef<M>`] names a port that takes `M`s. It is plain data (a [`PortId`] and the
//!   fingerprint of `M`) that can travel inside messages to any proc, which can then send to
//!   it.
//! * [`OncePortRef<M>`] is the same for a port that takes a single message; sending consumes
//!   the reference.
//! * [`PortHandle<M>`] / [`OncePortHandle<M>`] are what the owner gets when it opens a port;
//!   [`PortHandle::port_ref`] hands out references. Handing out a reference binds nothing:
//!   the port was bound when it was opened and stays bound until its receiver is dropped.
//! * [`PortReceiver<M>`] / [`OncePortReceiver<M>`] drain the port. Dropping a receiver unbinds
//!   the port; later messages to it come back to their senders as `NoSuchPort`.
//!
//! The type checks and the fingerprint scheme are described in the crate docs
//! ([type checks](crate#type-checks), [fingerprints](crate#fingerprints)).

use std::any::Any;
use std::borrow::Borrow;
use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use procwire_core::envelope::{Envelope, Undeliverable};
use procwire_core::id::{ActorId, PortId};
use procwire_core::proc::LocalPort;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::{Bound, Engine, SCRATCH_MAX};
use crate::error::{DecodeError, RecvError, SendError, TryRecvError};
use crate::instance::Instance;
use crate::sync::{PopError, Queue};

pub use procwire_core::fingerprint::TypeFingerprint;

/// `Ok` unless `env` carries another fingerprint than `expected`.
pub(crate) fn check_type(expected: TypeFingerprint, env: &Envelope) -> Result<(), DecodeError> {
    match env.fingerprint {
        Some(found) if found != expected => Err(DecodeError::WrongType { expected, found }),
        _ => Ok(()),
    }
}

/// Serializes `msg` as a payload, into one allocation of exactly its size (a first pass
/// measures it; growing a buffer as the encoding goes would reallocate several times for
/// small messages and copy large ones).
///
/// A [`Bytes`] message is its bytes as they are, without postcard's length prefix (the
/// frame already says how long the payload is): see [type checks](crate#type-checks).
pub fn encode<M: Serialize + ?Sized>(msg: &M) -> Result<Bytes, SendError> {
    let len = postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
        .map_err(SendError::Encode)?;
    let mut buf = Vec::with_capacity(len);
    postcard::serialize_with_flavor(msg, Appended(&mut buf)).map_err(SendError::Encode)?;
    let payload = Bytes::from(buf);
    if !is_bytes::<M>() {
        return Ok(payload);
    }
    let range = byte_string(&payload)
        .map_err(|_| SendError::Encode(postcard::Error::SerializeBufferFull))?;
    Ok(payload.slice(range))
}

/// Whether `M` is [`Bytes`], whose payload is the message's bytes as they are: sending one
/// copies nothing (a large one is written from the sender's buffer), receiving one hands
/// out the payload itself, and a raw receiver sees exactly the bytes sent. Every other
/// type's payload is its postcard encoding. (A `Vec<u8>` or `&[u8]` message is postcard's,
/// length prefix included: only `Bytes` is special.)
fn is_bytes<M: ?Sized>() -> bool {
    core::any::type_name::<M>() == core::any::type_name::<Bytes>()
}

/// Deserializes a payload made by [`encode`], strictly: the whole payload must be one
/// message.
pub fn decode<M: DeserializeOwned>(payload: &[u8]) -> Result<M, DecodeError> {
    if is_bytes::<M>() {
        // Any payload is one `Bytes` message: all of it.
        let whole = serde::de::value::BytesDeserializer::<serde::de::value::Error>::new(payload);
        return M::deserialize(whole)
            .map_err(|_| DecodeError::Malformed(postcard::Error::DeserializeBadEncoding));
    }
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(DecodeError::Malformed)?;
    if rest.is_empty() {
        Ok(msg)
    } else {
        Err(DecodeError::TrailingBytes {
            used: payload.len() - rest.len(),
            len: payload.len(),
        })
    }
}

/// Decodes the message in `env` as an `M`, the way a typed port does: its type header (if
/// any) must be `M`'s fingerprint, then the payload must decode strictly.
///
/// A [`Bytes`] message is not copied: it is the received payload (a slice of the frame it
/// arrived in).
pub fn decode_envelope<M: DeserializeOwned + 'static>(env: &Envelope) -> Result<M, DecodeError> {
    decode_checked(env, TypeFingerprint::of::<M>())
}

fn decode_checked<M: DeserializeOwned + 'static>(
    env: &Envelope,
    expected: TypeFingerprint,
) -> Result<M, DecodeError> {
    check_type(expected, env)?;
    decode_shared(&env.payload)
}

/// [`decode`] of a payload held in `Bytes`: a [`Bytes`] message is the payload, shared
/// (serde's `Bytes` would copy it), any other type decodes as by `decode`.
fn decode_shared<M: DeserializeOwned + 'static>(payload: &Bytes) -> Result<M, DecodeError> {
    decode_taken(&mut payload.clone())
}

/// [`decode_shared`] that may take the payload out of `payload` (left empty when it did):
/// a [`Bytes`] message is then the payload itself, which spends no reference count.
/// `payload` is untouched when decoding fails.
fn decode_taken<M: DeserializeOwned + 'static>(payload: &mut Bytes) -> Result<M, DecodeError> {
    let mut slot: Option<M> = None;
    if let Some(bytes) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Bytes>>() {
        *bytes = Some(std::mem::take(payload));
    }
    match slot {
        Some(msg) => Ok(msg),
        None => decode(payload),
    }
}

/// Where the bytes of the postcard byte string that `payload` is exactly (a varint
/// length, then the bytes) lie in it.
fn byte_string(payload: &[u8]) -> Result<std::ops::Range<usize>, DecodeError> {
    let (inner, rest) =
        postcard::take_from_bytes::<&[u8]>(payload).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            used: payload.len() - rest.len(),
            len: payload.len(),
        });
    }
    let end = payload.len() - rest.len();
    Ok(end - inner.len()..end)
}

/// An envelope from `cx` to `port` carrying `msg` and its type's fingerprint.
fn typed_envelope<M: Serialize + ?Sized>(
    cx: &Instance,
    port: PortId,
    fingerprint: TypeFingerprint,
    msg: &M,
) -> Result<Envelope, SendError> {
    Ok(Envelope::typed(
        cx.actor_id().clone(),
        port,
        fingerprint,
        encode(msg)?,
    ))
}

/// The serialized form of a port reference: the port and the fingerprint of its type.
#[derive(Serialize, Deserialize)]
struct RefForm {
    port: PortId,
    fingerprint: TypeFingerprint,
}

impl RefForm {
    /// Reads a reference that must be for a port taking `M`.
    fn read<'de, M, D: Deserializer<'de>>(d: D) -> Result<PortRef<M>, D::Error> {
        let form = RefForm::deserialize(d)?;
        let want = TypeFingerprint::of::<M>();
        if form.fingerprint == want {
            Ok(PortRef {
                port: form.port,
                fingerprint: want,
                _m: PhantomData,
            })
        } else {
            Err(D::Error::custom(format_args!(
                "port {} takes messages of type {}, not {} ({})",
                form.port,
                form.fingerprint,
                want,
                core::any::type_name::<M>()
            )))
        }
    }
}

/// A reference to a port that takes messages of type `M`, in any proc.
///
/// It serializes as the port id and [`TypeFingerprint::of::<M>()`](TypeFingerprint::of);
/// deserializing it as a `PortRef` of another type fails, so a `PortRef<M>` read from a
/// message always names a port that was opened for `M`.
pub struct PortRef<M> {
    port: PortId,
    fingerprint: TypeFingerprint,
    _m: PhantomData<fn(M)>,
}

impl<M> PortRef<M> {
    /// Vouches that `port` takes `M`s. Nothing checks it here; the port refuses messages of
    /// another type when they arrive ([`DecodeError::WrongType`]).
    pub fn attest(port: PortId) -> Self {
        PortRef {
            port,
            fingerprint: TypeFingerprint::of::<M>(),
            _m: PhantomData,
        }
    }

    /// The port's id.
    pub fn port_id(&self) -> &PortId {
        &self.port
    }

    /// The actor owning the port.
    pub fn actor_id(&self) -> &ActorId {
        self.port.actor()
    }

    /// The fingerprint of `M`, which messages sent through this reference carry.
    pub fn fingerprint(&self) -> TypeFingerprint {
        self.fingerprint
    }
}

impl<M: Serialize + 'static> PortRef<M> {
    /// Sends `msg` from `cx`, waiting while the link's send window is full.
    pub async fn send(&self, cx: &Instance, msg: impl Borrow<M>) -> Result<(), SendError> {
        match send_now(cx, &self.port, self.fingerprint, msg.borrow()) {
            Err((SendError::WouldBlock, Some(env))) => cx.send_envelope(env).await,
            r => r.map_err(|(e, _)| e),
        }
    }

    /// Sends `msg` from `cx` without waiting: [`SendError::WouldBlock`] if the link's window
    /// is full.
    pub fn try_send(&self, cx: &Instance, msg: impl Borrow<M>) -> Result<(), SendError> {
        send_now(cx, &self.port, self.fingerprint, msg.borrow()).map_err(|(e, _)| e)
    }
}

/// Sends `msg` from `cx` to `port` without waiting. A refusal with `WouldBlock` hands the
/// message back as an envelope, to wait with.
///
/// A message of up to [`SCRATCH_MAX`] bytes is serialized into the engine's scratch
/// buffer and sent by reference (no allocation, no reference count per message); a larger
/// one into an allocation of its own, which core may keep as it is instead of copying.
fn send_now<M: Serialize + 'static>(
    cx: &Instance,
    port: &PortId,
    fingerprint: TypeFingerprint,
    msg: &M,
) -> Result<(), (SendError, Option<Envelope>)> {
    let engine = cx.engine();
    if let Some(bytes) = (msg as &dyn Any).downcast_ref::<Bytes>() {
        // Its payload is itself (see `is_bytes`).
        if bytes.len() > SCRATCH_MAX {
            let env = Envelope::typed(
                cx.actor_id().clone(),
                port.clone(),
                fingerprint,
                bytes.clone(),
            );
            return engine.try_send_keep(env);
        }
        return engine.try_send_with(cx.actor_id(), port, fingerprint, bytes.len(), |buf| {
            buf.extend_from_slice(bytes);
            Ok(())
        });
    }
    let len = postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
        .map_err(|e| (SendError::Encode(e), None))?;
    if len > SCRATCH_MAX {
        let env = typed_envelope(cx, port.clone(), fingerprint, msg).map_err(|e| (e, None))?;
        return engine.try_send_keep(env);
    }
    engine.try_send_with(cx.actor_id(), port, fingerprint, len, |buf| {
        postcard::serialize_with_flavor(msg, Appended(buf))
            .map(drop)
            .map_err(SendError::Encode)
    })
}

/// postcard's output appended to a buffer. Byte strings are appended as slices (one
/// `memcpy`; postcard's `to_extend` goes byte by byte).
struct Appended<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Appended<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl<M> Clone for PortRef<M> {
    fn clone(&self) -> Self {
        PortRef {
            port: self.port.clone(),
            fingerprint: self.fingerprint,
            _m: PhantomData,
        }
    }
}

impl<M> PartialEq for PortRef<M> {
    fn eq(&self, other: &Self) -> bool {
        self.port == other.port
    }
}

impl<M> Eq for PortRef<M> {}

impl<M> Hash for PortRef<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.port.hash(state);
    }
}

impl<M> fmt::Debug for PortRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortRef({}, type {})", self.port, self.fingerprint)
    }
}

impl<M> fmt::Display for PortRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.port, f)
    }
}

impl<M> Serialize for PortRef<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let form = RefForm {
            port: self.port.clone(),
            fingerprint: self.fingerprint,
        };
        form.serialize(s)
    }
}

impl<'de, M> Deserialize<'de> for PortRef<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RefForm::read::<M, D>(d)
    }
}

/// A reference to a port that takes a single message of type `M`. Its serialized form and
/// type check are those of [`PortRef`].
pub struct OncePortRef<M> {
    inner: PortRef<M>,
}

impl<M> OncePortRef<M> {
    /// Vouches that `port` is a once-port taking an `M`.
    pub fn attest(port: PortId) -> Self {
        OncePortRef {
            inner: PortRef::attest(port),
        }
    }

    /// The port's id.
    pub fn port_id(&self) -> &PortId {
        self.inner.port_id()
    }

    /// The fingerprint of `M`, which the message sent through this reference carries.
    pub fn fingerprint(&self) -> TypeFingerprint {
        self.inner.fingerprint
    }
}

impl<M: Serialize + 'static> OncePortRef<M> {
    /// Sends the one message, waiting while the link's send window is full.
    pub async fn send(self, cx: &Instance, msg: impl Borrow<M>) -> Result<(), SendError> {
        self.inner.send(cx, msg).await
    }

    /// Sends the one message without waiting. On error the reference is lost with the
    /// message; use [`OncePortRef::send`] to wait for room instead.
    pub fn try_send(self, cx: &Instance, msg: impl Borrow<M>) -> Result<(), SendError> {
        self.inner.try_send(cx, msg)
    }
}

impl<M> fmt::Debug for OncePortRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OncePortRef({}, type {})",
            self.inner.port, self.inner.fingerprint
        )
    }
}

impl<M> fmt::Display for OncePortRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner.port, f)
    }
}

impl<M> Serialize for OncePortRef<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de, M> Deserialize<'de> for OncePortRef<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PortRef::deserialize(d).map(|inner| OncePortRef { inner })
    }
}

/// The owner's handle on a port it opened.
pub struct PortHandle<M> {
    port: PortRef<M>,
}

impl<M> PortHandle<M> {
    pub(crate) fn new(port: PortId) -> Self {
        PortHandle {
            port: PortRef::attest(port),
        }
    }

    /// A reference to hand out; any proc can send to it. It binds nothing: the port is
    /// bound from [`Instance::open_port`] until its receiver is dropped, and the reference is
    /// plain data (a copy of the port id and the type's fingerprint).
    pub fn port_ref(&self) -> PortRef<M> {
        self.port.clone()
    }

    /// The old name of [`PortHandle::port_ref`]: it binds nothing.
    #[deprecated(since = "0.1.0", note = "binds nothing; use `port_ref`")]
    pub fn bind(&self) -> PortRef<M> {
        self.port_ref()
    }

    /// The port's id.
    pub fn port_id(&self) -> &PortId {
        self.port.port_id()
    }
}

impl<M> fmt::Debug for PortHandle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortHandle({})", self.port.port)
    }
}

/// The owner's handle on a once-port it opened.
pub struct OncePortHandle<M> {
    port: PortRef<M>,
}

impl<M> OncePortHandle<M> {
    pub(crate) fn new(port: PortId) -> Self {
        OncePortHandle {
            port: PortRef::attest(port),
        }
    }

    /// The reference to hand out (consumes the handle: the port takes one message). Like
    /// [`PortHandle::port_ref`], it binds nothing.
    pub fn port_ref(self) -> OncePortRef<M> {
        OncePortRef { inner: self.port }
    }

    /// The old name of [`OncePortHandle::port_ref`]: it binds nothing.
    #[deprecated(since = "0.1.0", note = "binds nothing; use `port_ref`")]
    pub fn bind(self) -> OncePortRef<M> {
        self.port_ref()
    }

    /// The port's id.
    pub fn port_id(&self) -> &PortId {
        self.port.port_id()
    }
}

impl<M> fmt::Debug for OncePortHandle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OncePortHandle({})", self.port.port)
    }
}

/// The receiving end of a port. Dropping it unbinds the port.
///
/// The typed receives ([`recv`](PortReceiver::recv), [`try_recv`](PortReceiver::try_recv),
/// [`recv_from`](PortReceiver::recv_from)) check each message's type and decode it strictly
/// (see [type checks](crate#type-checks)); the `*_envelope` receives hand out envelopes
/// as they arrived, to be checked with [`PortReceiver::decode`] if wanted.
pub struct PortReceiver<M> {
    engine: Arc<Engine>,
    port: PortId,
    /// Core's handle of the port; `None` for a receiver that was never bound.
    local: Option<LocalPort>,
    fingerprint: TypeFingerprint,
    queue: Arc<Queue<Envelope>>,
    /// Taken and not yet reported to core: (messages, payload bytes).
    taken: (usize, usize),
    /// Envelopes taken from `queue` in one batch (one lock). The first `next` are spent: a
    /// typed receive decodes a message in place (its payload taken out), and its envelope
    /// stays here until the next report hands it back to core, which reuses its ids
    /// (`Proc::recycle`). So an envelope is not moved once it is here.
    ready: VecDeque<Envelope>,
    next: usize,
    /// Spent envelopes moved out of `ready` before a report (when it was refilled, or
    /// before an envelope was handed out whole), for the same purpose.
    spent: Vec<Envelope>,
    /// Report once either reaches this: [`Engine::consume_batch`].
    batch: (usize, usize),
    _m: PhantomData<fn() -> M>,
}

impl<M> PortReceiver<M> {
    pub(crate) fn new(engine: Arc<Engine>, bound: Bound) -> Self {
        let Bound { port, local, queue } = bound;
        PortReceiver {
            port,
            local,
            fingerprint: TypeFingerprint::of::<M>(),
            batch: engine.consume_batch(),
            engine,
            queue,
            taken: (0, 0),
            ready: VecDeque::new(),
            next: 0,
            spent: Vec::new(),
            _m: PhantomData,
        }
    }

    /// The port's id.
    pub fn port_id(&self) -> &PortId {
        &self.port
    }

    /// The fingerprint of `M`: messages carrying another one are refused.
    pub fn fingerprint(&self) -> TypeFingerprint {
        self.fingerprint
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.ready.len() - self.next + self.queue.len()
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the next envelope, unchecked and undecoded (sender, headers and raw
    /// payload).
    pub async fn recv_envelope(&mut self) -> Result<Envelope, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv_envelope(cx)).await
    }

    /// Polls for the next envelope, unchecked and undecoded.
    pub fn poll_recv_envelope(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Envelope, RecvError>> {
        ready!(self.poll_ready(cx))?;
        Poll::Ready(self.take_whole().ok_or(RecvError::Closed))
    }

    /// The next envelope if one is queued, unchecked and undecoded.
    pub fn try_recv_envelope(&mut self) -> Result<Envelope, TryRecvError> {
        self.try_ready()?;
        self.take_whole().ok_or(TryRecvError::Empty)
    }

    /// `Ready(Ok)` once `ready` holds an envelope not handed out yet.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RecvError>> {
        if self.next < self.ready.len() {
            return Poll::Ready(Ok(()));
        }
        self.set_spent_aside();
        let mut took = self.queue.poll_take_all(cx, &mut self.ready);
        if took.is_pending() && self.engine.drain_deferred() {
            // Sends in a row had left deliveries for a later turn, which just ran.
            took = self.queue.poll_take_all(cx, &mut self.ready);
        }
        Poll::Ready(match ready!(took) {
            true => Ok(()),
            false => Err(RecvError::Closed),
        })
    }

    /// [`PortReceiver::poll_ready`] without waiting.
    fn try_ready(&mut self) -> Result<(), TryRecvError> {
        if self.next < self.ready.len() {
            return Ok(());
        }
        self.set_spent_aside();
        let mut took = self.queue.try_take_all(&mut self.ready);
        if matches!(took, Err(PopError::Empty)) && self.engine.drain_deferred() {
            took = self.queue.try_take_all(&mut self.ready);
        }
        took.map_err(|e| match e {
            PopError::Empty => TryRecvError::Empty,
            PopError::Closed => TryRecvError::Closed,
        })
    }

    /// Moves the spent envelopes out of `ready` into `spent` (up to a report's worth; the
    /// rest are dropped), leaving `ready` holding only envelopes to hand out.
    fn set_spent_aside(&mut self) {
        let room = self.batch.0.saturating_sub(self.spent.len());
        let spent = self.ready.drain(..self.next);
        self.spent.extend(spent.take(room));
        self.next = 0;
    }

    /// Hands out the next envelope whole (there must be one: see `poll_ready`).
    fn take_whole(&mut self) -> Option<Envelope> {
        if self.next > 0 {
            self.set_spent_aside();
        }
        let env = self.ready.pop_front()?;
        self.took(env.payload.len());
        Some(env)
    }

    /// Counts a message taken, of `len` payload bytes, and reports what this receiver
    /// took to core, which bounds the port's queue (`Config::port_queue_msgs` /
    /// `port_queue_bytes`), in batches: see [`Engine::consume_batch`] for why a full port
    /// never waits on an unreported message. Spent envelopes go back with the report.
    fn took(&mut self, len: usize) {
        self.taken.0 += 1;
        self.taken.1 += len;
        if self.taken.0 >= self.batch.0 || self.taken.1 >= self.batch.1 {
            let (msgs, bytes) = std::mem::take(&mut self.taken);
            let spent = self.spent.drain(..).chain(self.ready.drain(..self.next));
            match self.local {
                Some(local) => self.engine.consumed(local, msgs, bytes, spent),
                None => drop(spent),
            }
            self.next = 0;
        }
    }
}

impl<M: DeserializeOwned + 'static> PortReceiver<M> {
    /// Checks and decodes an envelope as this port does: its type header, if any, must be
    /// `M`'s fingerprint, and the payload must be exactly one `M`.
    pub fn decode(&self, env: &Envelope) -> Result<M, DecodeError> {
        decode_checked(env, self.fingerprint)
    }

    /// Decodes the next envelope in place (there must be one: see `poll_ready`), and
    /// returns the message with its sender if `with_sender`. One that is refused is taken
    /// out and goes back to its sender as [`Undeliverable::Undecodable`], and the error is
    /// returned. (A wrong fingerprint never gets here: core refused it on arrival, since
    /// every port is bound typed.) A [`Bytes`] message is the envelope's payload itself,
    /// taken out of it.
    fn take_next(&mut self, with_sender: bool) -> Result<(Option<ActorId>, M), DecodeError> {
        let Some(env) = self.ready.get_mut(self.next) else {
            // Unreachable after `poll_ready`; a closed port reads as one without messages.
            return Err(DecodeError::Malformed(
                postcard::Error::DeserializeUnexpectedEnd,
            ));
        };
        let len = env.payload.len();
        let decoded =
            check_type(self.fingerprint, env).and_then(|()| decode_taken(&mut env.payload));
        match decoded {
            Ok(msg) => {
                let sender = with_sender.then(|| env.sender.clone());
                self.next += 1;
                self.took(len);
                Ok((sender, msg))
            }
            Err(e) => {
                if let Some(env) = self.ready.remove(self.next) {
                    self.took(len);
                    self.engine.undecodable(env);
                }
                Err(e)
            }
        }
    }

    /// Waits for the next message. A message that does not decode strictly as `M` is
    /// reported as [`RecvError::Decode`] and consumed, and goes back to its sender as
    /// [`Undeliverable::Undecodable`]; the port stays open.
    pub async fn recv(&mut self) -> Result<M, RecvError> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        let (_, msg) = self.take_next(false).map_err(RecvError::Decode)?;
        Ok(msg)
    }

    /// Waits for the next message and returns it with its sender.
    pub async fn recv_from(&mut self) -> Result<(ActorId, M), RecvError> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        match self.take_next(true).map_err(RecvError::Decode)? {
            (Some(sender), msg) => Ok((sender, msg)),
            (None, _) => Err(RecvError::Closed),
        }
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Result<M, TryRecvError> {
        self.try_ready()?;
        let (_, msg) = self.take_next(false).map_err(TryRecvError::Decode)?;
        Ok(msg)
    }
}

impl<M> Drop for PortReceiver<M> {
    fn drop(&mut self) {
        self.engine.close_port(self.local, &self.queue);
    }
}

impl<M> fmt::Debug for PortReceiver<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortReceiver({}, type {})", self.port, self.fingerprint)
    }
}

/// The receiving end of a once-port.
pub struct OncePortReceiver<M> {
    inner: PortReceiver<M>,
}

impl<M> OncePortReceiver<M> {
    pub(crate) fn new(inner: PortReceiver<M>) -> Self {
        OncePortReceiver { inner }
    }

    /// The port's id.
    pub fn port_id(&self) -> &PortId {
        self.inner.port_id()
    }

    /// Waits for the one envelope, unchecked and undecoded.
    pub async fn recv_envelope(mut self) -> Result<Envelope, RecvError> {
        self.inner.recv_envelope().await
    }
}

impl<M: DeserializeOwned + 'static> OncePortReceiver<M> {
    /// Waits for the one message; checked and decoded as by [`PortReceiver::recv`]. A refused
    /// message spends the port like any other.
    pub async fn recv(mut self) -> Result<M, RecvError> {
        self.inner.recv().await
    }
}

impl<M> fmt::Debug for OncePortReceiver<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OncePortReceiver({})", self.inner.port)
    }
}

/// A message that came back to its sender, with the reason.
#[derive(Clone, Debug)]
pub struct Returned {
    /// Why it could not be delivered.
    pub reason: Undeliverable,
    /// For a message to a peer core gave up on (`Unreachable`, or `Unconfirmed` in the
    /// same give-up): why the last dial to it failed, in the OS's words.
    pub dial_error: Option<procwire_core::proc::DialError>,
    /// The message as it was sent (its `returned` field holds the reason too).
    pub envelope: Envelope,
}

impl Returned {
    /// Where it was going.
    pub fn dest(&self) -> &PortId {
        &self.envelope.dest
    }

    /// The raw payload.
    pub fn payload(&self) -> &Bytes {
        &self.envelope.payload
    }

    /// Decodes the message as the type it was sent as, checked and strict as by
    /// [`decode_envelope`].
    pub fn decode<M: DeserializeOwned + 'static>(&self) -> Result<M, DecodeError> {
        decode_envelope(&self.envelope)
    }
}

#[cfg(test)]
mod tests {
    use procwire_core::id::{ChannelAddr, ProcId};

    use super::*;

    fn port() -> PortId {
        let name = |s| procwire_core::id::Name::new(s).expect("a name");
        ProcId::new(ChannelAddr::Local(1), name("p"))
            .actor(name("svc"), 0)
            .port(1024)
    }

    fn envelope<M: Serialize>(msg: &M, header: Option<TypeFingerprint>) -> Envelope {
        let dest = port();
        let mut env = Envelope::new(dest.actor().clone(), dest, encode(msg).expect("encodes"));
        env.fingerprint = header;
        env
    }

    #[test]
    fn a_bytes_message_is_its_payload_and_every_other_type_postcards() {
        let msg = Bytes::from((0..300u32).map(|i| i as u8).collect::<Vec<u8>>());
        let env = envelope(&msg, Some(TypeFingerprint::of::<Bytes>()));
        assert_eq!(env.payload, msg, "the bytes as they are, no length prefix");
        let got: Bytes = decode_envelope(&env).expect("decodes");
        assert_eq!(got, msg);
        assert_eq!(got.as_ptr(), env.payload.as_ptr(), "not a copy");
        assert_eq!(decode::<Bytes>(&env.payload).expect("decodes"), msg);
        // Any payload is one whole `Bytes` message, the empty one too.
        assert_eq!(decode::<Bytes>(b"").expect("decodes"), Bytes::new());
        let mut taken = env.payload.clone();
        let got: Bytes = decode_taken(&mut taken).expect("decodes");
        assert!(taken.is_empty(), "taken out of the payload");
        assert_eq!(got, msg);
        // A `Vec<u8>` of the same bytes is postcard's, length prefix and strictness.
        let vec = msg.to_vec();
        let env = envelope(&vec, Some(TypeFingerprint::of::<Vec<u8>>()));
        assert_eq!(env.payload, postcard::to_allocvec(&vec).expect("encodes"));
        assert_eq!(env.payload.len(), vec.len() + 2);
        assert_eq!(decode::<Vec<u8>>(&env.payload).expect("decodes"), vec);
        let mut long = env.payload.to_vec();
        long.push(0);
        let err = decode::<Vec<u8>>(&long).unwrap_err();
        assert!(matches!(err, DecodeError::TrailingBytes { used, len } if used + 1 == len));
        let short = env.payload.slice(..env.payload.len() - 1);
        let err = decode_shared::<Vec<u8>>(&short).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn fingerprints_tell_apart_types_postcard_encodes_alike() {
        // The hash itself is tested in core (`procwire_core::fingerprint`).
        assert_eq!(
            TypeFingerprint::of::<Vec<u8>>(),
            TypeFingerprint::of_type_name(core::any::type_name::<Vec<u8>>())
        );
        assert_ne!(
            TypeFingerprint::of::<String>(),
            TypeFingerprint::of::<Vec<u8>>()
        );
        assert_ne!(
            TypeFingerprint::of::<(u64, u64, u64)>(),
            TypeFingerprint::of::<Vec<u64>>()
        );
        assert_eq!(
            TypeFingerprint::from_u64(0xab).unwrap().to_string(),
            "00000000000000ab"
        );
    }

    #[test]
    fn decoding_is_strict() {
        assert_eq!(
            decode::<Vec<u8>>(&encode(&vec![1u8, 2]).unwrap()),
            Ok(vec![1, 2])
        );
        let triple = encode(&(1u64, 2u64, 3u64)).unwrap();
        assert_eq!(
            decode::<Vec<u64>>(&triple),
            Err(DecodeError::TrailingBytes { used: 2, len: 3 })
        );
        assert!(matches!(
            decode::<u64>(&[0xff]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn a_wrong_fingerprint_is_refused_before_decoding() {
        let want = TypeFingerprint::of::<Vec<u8>>();
        let found = TypeFingerprint::of::<String>();
        // Postcard encodes both alike: only the fingerprint tells them apart.
        let env = envelope(&"hello".to_string(), Some(found));
        assert_eq!(
            decode_envelope::<Vec<u8>>(&env),
            Err(DecodeError::WrongType {
                expected: want,
                found
            })
        );
        assert_eq!(decode_envelope::<String>(&env), Ok("hello".to_string()));
        // Without a fingerprint (a raw send) only strict decoding applies.
        let raw = envelope(&"hello".to_string(), None);
        assert_eq!(decode_envelope::<Vec<u8>>(&raw), Ok(b"hello".to_vec()));
    }

    #[test]
    fn port_refs_carry_their_type_through_serde() {
        let r = PortRef::<Vec<u8>>::attest(port());
        let bytes = postcard::to_allocvec(&r).unwrap();
        let back: PortRef<Vec<u8>> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.fingerprint(), TypeFingerprint::of::<Vec<u8>>());
        // The last 8 bytes are the fingerprint.
        assert_eq!(
            bytes[bytes.len() - 8..],
            TypeFingerprint::of::<Vec<u8>>().get().to_le_bytes()
        );
        let err = postcard::from_bytes::<PortRef<String>>(&bytes).unwrap_err();
        assert_eq!(err, postcard::Error::SerdeDeCustom);
        let once: OncePortRef<Vec<u8>> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(once.port_id(), r.port_id());
        assert!(postcard::from_bytes::<OncePortRef<u64>>(&bytes).is_err());
    }
}
