//! Typed ports: references anyone can send to, and the receivers that drain them.
//!
//! Runtime-neutral. Messages are serialized with serde + postcard; the payload of each
//! envelope is exactly the postcard encoding of one message.
//!
//! * [`PortRef<M>`] names a port that takes `M`s. It is plain data (a [`PortId`] with a type)
//!   that serializes as the port id, so it can travel inside messages to any proc, which can
//!   then send to it.
//! * [`OncePortRef<M>`] is the same for a port that takes a single message; sending consumes
//!   the reference.
//! * [`PortHandle<M>`] / [`OncePortHandle<M>`] are what the owner gets when it opens a port;
//!   [`PortHandle::bind`] hands out references.
//! * [`PortReceiver<M>`] / [`OncePortReceiver<M>`] drain the port. Dropping a receiver unbinds
//!   the port; later messages to it come back to their senders as `NoSuchPort`.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use procwire_core::envelope::{Envelope, Undeliverable};
use procwire_core::id::{ActorId, PortId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::Engine;
use crate::error::{RecvError, SendError, TryRecvError};
use crate::instance::Instance;
use crate::sync::{PopError, Queue};

/// Serializes `msg` as a payload.
pub fn encode<M: Serialize + ?Sized>(msg: &M) -> Result<Bytes, SendError> {
    postcard::to_allocvec(msg)
        .map(Bytes::from)
        .map_err(SendError::Encode)
}

/// Deserializes a payload made by [`encode`].
pub fn decode<M: DeserializeOwned>(payload: &[u8]) -> Result<M, postcard::Error> {
    postcard::from_bytes(payload)
}

/// A reference to a port that takes messages of type `M`, in any proc.
pub struct PortRef<M> {
    port: PortId,
    _m: PhantomData<fn(M)>,
}

impl<M> PortRef<M> {
    /// Vouches that `port` takes `M`s (nothing checks it; a mismatch shows up as decode
    /// errors at the receiver).
    pub fn attest(port: PortId) -> Self {
        PortRef {
            port,
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
}

impl<M: Serialize> PortRef<M> {
    /// Sends `msg` from `cx`, waiting while the link's send window is full.
    pub async fn send(&self, cx: &Instance, msg: impl Borrow<M>) -> Result<(), SendError> {
        let payload = encode(msg.borrow())?;
        cx.send_envelope(Envelope::new(
            cx.actor_id().clone(),
            self.port.clone(),
            payload,
        ))
        .await
    }

    /// Sends `msg` from `cx` without waiting: [`SendError::WouldBlock`] if the link's window
    /// is full.
    pub fn try_send(&self, cx: &Instance, msg: impl Borrow<M>) -> Result<(), SendError> {
        let payload = encode(msg.borrow())?;
        cx.try_send_envelope(Envelope::new(
            cx.actor_id().clone(),
            self.port.clone(),
            payload,
        ))
    }
}

impl<M> Clone for PortRef<M> {
    fn clone(&self) -> Self {
        PortRef::attest(self.port.clone())
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
        write!(f, "PortRef({})", self.port)
    }
}

impl<M> fmt::Display for PortRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.port, f)
    }
}

impl<M> Serialize for PortRef<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.port.serialize(s)
    }
}

impl<'de, M> Deserialize<'de> for PortRef<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PortId::deserialize(d).map(PortRef::attest)
    }
}

/// A reference to a port that takes a single message of type `M`.
pub struct OncePortRef<M> {
    port: PortId,
    _m: PhantomData<fn(M)>,
}

impl<M> OncePortRef<M> {
    /// Vouches that `port` is a once-port taking an `M`.
    pub fn attest(port: PortId) -> Self {
        OncePortRef {
            port,
            _m: PhantomData,
        }
    }

    /// The port's id.
    pub fn port_id(&self) -> &PortId {
        &self.port
    }
}

impl<M: Serialize> OncePortRef<M> {
    /// Sends the one message, waiting while the link's send window is full.
    pub async fn send(self, cx: &Instance, msg: impl Borrow<M>) -> Result<(), SendError> {
        let payload = encode(msg.borrow())?;
        cx.send_envelope(Envelope::new(cx.actor_id().clone(), self.port, payload))
            .await
    }

    /// Sends the one message without waiting. On error the reference is lost with the
    /// message; use [`OncePortRef::send`] to wait for room instead.
    pub fn try_send(self, cx: &Instance, msg: impl Borrow<M>) -> Result<(), SendError> {
        let payload = encode(msg.borrow())?;
        cx.try_send_envelope(Envelope::new(cx.actor_id().clone(), self.port, payload))
    }
}

impl<M> fmt::Debug for OncePortRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OncePortRef({})", self.port)
    }
}

impl<M> fmt::Display for OncePortRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.port, f)
    }
}

impl<M> Serialize for OncePortRef<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.port.serialize(s)
    }
}

impl<'de, M> Deserialize<'de> for OncePortRef<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PortId::deserialize(d).map(OncePortRef::attest)
    }
}

/// The owner's handle on a port it opened.
pub struct PortHandle<M> {
    port: PortId,
    _m: PhantomData<fn(M)>,
}

impl<M> PortHandle<M> {
    pub(crate) fn new(port: PortId) -> Self {
        PortHandle {
            port,
            _m: PhantomData,
        }
    }

    /// A reference to hand out; any proc can send to it.
    pub fn bind(&self) -> PortRef<M> {
        PortRef::attest(self.port.clone())
    }

    /// The port's id.
    pub fn port_id(&self) -> &PortId {
        &self.port
    }
}

impl<M> fmt::Debug for PortHandle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortHandle({})", self.port)
    }
}

/// The owner's handle on a once-port it opened.
pub struct OncePortHandle<M> {
    port: PortId,
    _m: PhantomData<fn(M)>,
}

impl<M> OncePortHandle<M> {
    pub(crate) fn new(port: PortId) -> Self {
        OncePortHandle {
            port,
            _m: PhantomData,
        }
    }

    /// The reference to hand out (consumes the handle: the port takes one message).
    pub fn bind(self) -> OncePortRef<M> {
        OncePortRef::attest(self.port)
    }

    /// The port's id.
    pub fn port_id(&self) -> &PortId {
        &self.port
    }
}

impl<M> fmt::Debug for OncePortHandle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OncePortHandle({})", self.port)
    }
}

/// The receiving end of a port. Dropping it unbinds the port.
pub struct PortReceiver<M> {
    engine: Arc<Engine>,
    port: PortId,
    queue: Arc<Queue<Envelope>>,
    _m: PhantomData<fn() -> M>,
}

impl<M> PortReceiver<M> {
    pub(crate) fn new(engine: Arc<Engine>, port: PortId, queue: Arc<Queue<Envelope>>) -> Self {
        PortReceiver {
            engine,
            port,
            queue,
            _m: PhantomData,
        }
    }

    /// The port's id.
    pub fn port_id(&self) -> &PortId {
        &self.port
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the next envelope, undecoded (sender, headers and raw payload).
    pub async fn recv_envelope(&mut self) -> Result<Envelope, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv_envelope(cx)).await
    }

    /// Polls for the next envelope, undecoded.
    pub fn poll_recv_envelope(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Envelope, RecvError>> {
        self.queue.poll_pop(cx).map(|e| e.ok_or(RecvError::Closed))
    }

    /// The next envelope if one is queued.
    pub fn try_recv_envelope(&mut self) -> Result<Envelope, TryRecvError> {
        self.queue.try_pop().map_err(|e| match e {
            PopError::Empty => TryRecvError::Empty,
            PopError::Closed => TryRecvError::Closed,
        })
    }
}

impl<M: DeserializeOwned> PortReceiver<M> {
    /// Waits for the next message. A message that does not decode is reported as
    /// [`RecvError::Decode`] and consumed; the port stays open.
    pub async fn recv(&mut self) -> Result<M, RecvError> {
        let env = self.recv_envelope().await?;
        decode(&env.payload).map_err(RecvError::Decode)
    }

    /// Waits for the next message and returns it with its sender.
    pub async fn recv_from(&mut self) -> Result<(ActorId, M), RecvError> {
        let env = self.recv_envelope().await?;
        let msg = decode(&env.payload).map_err(RecvError::Decode)?;
        Ok((env.sender, msg))
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Result<M, TryRecvError> {
        let env = self.try_recv_envelope()?;
        decode(&env.payload).map_err(TryRecvError::Decode)
    }
}

impl<M> Drop for PortReceiver<M> {
    fn drop(&mut self) {
        self.engine.close_port(&self.port, &self.queue);
    }
}

impl<M> fmt::Debug for PortReceiver<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortReceiver({})", self.port)
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

    /// Waits for the one envelope, undecoded.
    pub async fn recv_envelope(mut self) -> Result<Envelope, RecvError> {
        self.inner.recv_envelope().await
    }
}

impl<M: DeserializeOwned> OncePortReceiver<M> {
    /// Waits for the one message.
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

    /// Decodes the payload as the message type it was sent as.
    pub fn decode<M: DeserializeOwned>(&self) -> Result<M, postcard::Error> {
        decode(&self.envelope.payload)
    }
}
