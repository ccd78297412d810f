//! Errors of the adapter API (shared by every adapter).

use std::fmt;
use std::io;

use procwire_core::id::{ChannelAddr, NameError};
use procwire_core::proc::SendError as CoreSendError;
use procwire_core::registry::RegistryError;

use crate::typed::TypeFingerprint;

/// Why a proc could not be stood up or an identity could not be created in it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcError {
    /// The proc name is not a valid name.
    BadName(NameError),
    /// Binding or listening on the address failed.
    Bind {
        /// The address asked for.
        addr: ChannelAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// The registry refused (duplicate root name, bad actor name, port in use, ...).
    Registry(RegistryError),
    /// The proc is shutting down or has shut down.
    ShuttingDown,
    /// [`ProcOptions::advertise`](crate::ProcOptions::advertise) cannot name this proc.
    Advertise {
        /// The address asked to be advertised.
        addr: ChannelAddr,
        /// What is wrong with it.
        error: AdvertiseError,
    },
    /// The kernel refused
    /// [`ProcOptions::same_host_tcp_congestion`](crate::ProcOptions::same_host_tcp_congestion).
    TcpCongestion {
        /// The congestion control asked for.
        name: String,
        /// What the operating system said (not found: the kernel has no such algorithm;
        /// permission denied: it is not in `net.ipv4.tcp_allowed_congestion_control`).
        source: io::Error,
    },
}

/// Why an address cannot be advertised (see
/// [`ProcOptions::advertise`](crate::ProcOptions::advertise)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdvertiseError {
    /// It has TCP port 0, to be filled in with the bound port, but the proc bound no TCP
    /// address.
    NoBoundPort,
    /// It names no particular endpoint: an `any()` form (`unix:@`, `local:0`) or an
    /// unspecified IP (`0.0.0.0`, `::`), which no peer can dial.
    NotConcrete,
}

impl fmt::Display for AdvertiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdvertiseError::NoBoundPort => {
                "its TCP port is 0, but the proc bound no TCP port to fill in"
            }
            AdvertiseError::NotConcrete => "it names no particular endpoint a peer could dial",
        })
    }
}

impl std::error::Error for AdvertiseError {}

impl fmt::Display for ProcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcError::BadName(e) => write!(f, "bad proc name: {e}"),
            ProcError::Bind { addr, source } => write!(f, "cannot serve on {addr}: {source}"),
            ProcError::Registry(e) => write!(f, "{e}"),
            ProcError::ShuttingDown => f.write_str("the proc is shutting down"),
            ProcError::Advertise { addr, error } => write!(f, "cannot advertise {addr}: {error}"),
            ProcError::TcpCongestion { name, source } => {
                write!(f, "cannot use TCP congestion control {name:?}: {source}")
            }
        }
    }
}

impl std::error::Error for ProcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcError::Bind { source, .. } | ProcError::TcpCongestion { source, .. } => {
                Some(source)
            }
            ProcError::Registry(e) => Some(e),
            ProcError::Advertise { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<RegistryError> for ProcError {
    fn from(e: RegistryError) -> Self {
        ProcError::Registry(e)
    }
}

/// Why a message was not accepted for sending. When a send fails, nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The encoded message exceeds the frame limit.
    TooLarge {
        /// Encoded size in bytes.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// The link's window of unacknowledged data is full (`try_send` only; `send` waits).
    WouldBlock,
    /// The proc is shutting down.
    ShuttingDown,
    /// The sending identity is not a live actor of this proc: it belongs to another proc,
    /// or it was stopped (its failures could not come back to it). Formerly
    /// `ForeignSender`, which named only the first case.
    SenderNotLive,
    /// The message could not be serialized.
    Encode(postcard::Error),
    /// A refusal from a newer core that this host does not name yet (core's enum is
    /// non-exhaustive).
    Core(CoreSendError),
}

impl SendError {
    /// The core error this mirrors, for every variant but `Encode`.
    fn core(&self) -> Option<CoreSendError> {
        Some(match *self {
            SendError::TooLarge { len, max } => CoreSendError::TooLarge { len, max },
            SendError::WouldBlock => CoreSendError::WouldBlock,
            SendError::ShuttingDown => CoreSendError::ShuttingDown,
            SendError::SenderNotLive => CoreSendError::SenderNotLive,
            SendError::Encode(_) => return None,
            SendError::Core(e) => e,
        })
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let SendError::Encode(e) = self {
            return write!(f, "cannot encode the message: {e}");
        }
        // Every other variant is core's, worded once there.
        self.core().map_or(Ok(()), |core| core.fmt(f))
    }
}

impl std::error::Error for SendError {}

impl From<CoreSendError> for SendError {
    fn from(e: CoreSendError) -> Self {
        match e {
            CoreSendError::TooLarge { len, max } => SendError::TooLarge { len, max },
            CoreSendError::WouldBlock => SendError::WouldBlock,
            CoreSendError::ShuttingDown => SendError::ShuttingDown,
            CoreSendError::SenderNotLive => SendError::SenderNotLive,
            other => SendError::Core(other),
        }
    }
}

/// Why a typed port refused a message (it is never handed out as a value).
///
/// The type check comes first: a message whose fingerprint names another type is refused
/// before its payload is looked at. Decoding is strict: the payload must be exactly one
/// encoded message, with no bytes left over.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The sender sent another message type than the port takes.
    WrongType {
        /// The fingerprint of the port's type.
        expected: TypeFingerprint,
        /// The fingerprint the message carried.
        found: TypeFingerprint,
    },
    /// The payload is not a valid encoding of the port's type.
    Malformed(postcard::Error),
    /// The payload holds a valid message followed by bytes that belong to none: it was made
    /// from another type.
    TrailingBytes {
        /// Bytes the message used.
        used: usize,
        /// Bytes in the payload.
        len: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::WrongType { expected, found } => write!(
                f,
                "the message is of type {found}, the port takes type {expected}"
            ),
            DecodeError::Malformed(e) => write!(f, "the payload does not decode: {e}"),
            DecodeError::TrailingBytes { used, len } => write!(
                f,
                "the message uses {used} of the payload's {len} bytes; the rest belongs to no message"
            ),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a receive produced no message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// The port is closed (its owner stopped, or the proc shut down) and its queue is empty.
    Closed,
    /// A message arrived but the port refused it: another type, or a payload that does not
    /// decode strictly as the port's type. It is consumed; the port stays open.
    Decode(DecodeError),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Closed => f.write_str("the port is closed"),
            RecvError::Decode(e) => write!(f, "refused a message: {e}"),
        }
    }
}

impl std::error::Error for RecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecvError::Decode(e) => Some(e),
            RecvError::Closed => None,
        }
    }
}

/// Why a non-waiting receive produced no message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing is queued right now.
    Empty,
    /// See [`RecvError::Closed`].
    Closed,
    /// See [`RecvError::Decode`].
    Decode(DecodeError),
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("no message is queued"),
            TryRecvError::Closed => RecvError::Closed.fmt(f),
            TryRecvError::Decode(e) => write!(f, "refused a message: {e}"),
        }
    }
}

impl std::error::Error for TryRecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TryRecvError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

/// An error returned by an actor's handler; it stops the actor with
/// [`ActorStatus::Failed`](crate::ActorStatus::Failed).
///
/// Any `std::error::Error` converts into it with `?`; [`ActorError::msg`] makes one from text.
pub struct ActorError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl ActorError {
    /// An error carrying just a message.
    pub fn msg(text: impl Into<String>) -> Self {
        ActorError(text.into().into())
    }

    /// The underlying error.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ActorError {
    fn from(e: E) -> Self {
        ActorError(Box::new(e))
    }
}

impl fmt::Display for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
