//! What an actor's mailbox takes ([`Mailbox`]), the typed reference to an actor
//! ([`ActorRef`]) and the [`messages!`](crate::messages) macro that declares a mailbox of
//! several message types.
//!
//! The port scheme is in the [actor module docs](crate::actor#mailboxes-and-ports).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use procwire_core::envelope::Envelope;
use procwire_core::id::ActorId;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::actor::{Actor, ACTOR_PORT};
use crate::error::{DecodeError, SendError};
use crate::instance::Instance;
use crate::typed::{decode_envelope, PortRef, TypeFingerprint};

/// Checks and decodes an envelope that arrived on one port of a mailbox.
pub type Decoder<T> = fn(&Envelope) -> Result<T, DecodeError>;

/// The set of message types an actor's mailbox takes ([`Actor::Message`]).
///
/// Every serde type is a mailbox of one type (a blanket impl): its port is [`ACTOR_PORT`].
/// A mailbox of several types is an enum declared with [`messages!`](crate::messages), with
/// one variant per type; its `i`-th type (from 0, in declaration order) is taken on the
/// well-known port `ACTOR_PORT + i`. Implement it by hand only to build another kind of set.
pub trait Mailbox: Send + Sized + 'static {
    /// One entry per port, in port order from [`ACTOR_PORT`]: the fingerprint of the type
    /// the port takes (messages carrying another one are refused as they arrive), and how to
    /// decode a message that arrived on it.
    fn ports() -> Vec<(TypeFingerprint, Decoder<Self>)>;
}

impl<M: DeserializeOwned + Send + 'static> Mailbox for M {
    fn ports() -> Vec<(TypeFingerprint, Decoder<M>)> {
        vec![(TypeFingerprint::of::<M>(), decode_envelope::<M>)]
    }
}

/// A mailbox that takes messages of type `M`, on port `ACTOR_PORT + INDEX`. What makes
/// [`ActorRef::send`] compile for exactly the types an actor handles.
pub trait Takes<M>: Mailbox {
    /// The offset of `M`'s port from [`ACTOR_PORT`].
    const INDEX: u64;
}

impl<M: DeserializeOwned + Send + 'static> Takes<M> for M {
    const INDEX: u64 = 0;
}

/// Declares a mailbox of several message types: an enum with one variant per type, which
/// an actor names as its [`Actor::Message`](crate::Actor::Message) and matches on in
/// [`Actor::handle`](crate::Actor::handle) (one arm per type).
///
/// Each type gets its own port, `ACTOR_PORT + i` for the `i`-th variant (from 0), carrying
/// its [`TypeFingerprint`]; an [`ActorRef`] sends any of the types to the right port. The
/// macro also implements `From<T>` for each type. A type may appear only once (a second
/// variant of the same type does not compile). Attributes (docs, derives) go through.
///
/// ```
/// use procwire_host::{messages, Actor, ActorError, ActorRef, Context, PortRef};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// pub struct Add(pub u64);
/// #[derive(Debug, Serialize, Deserialize)]
/// pub struct Get(pub PortRef<u64>);
///
/// messages! {
///     /// What a counter takes.
///     #[derive(Debug)]
///     pub enum CounterMsg {
///         Add(Add),
///         Get(Get),
///     }
/// }
///
/// #[derive(Default)]
/// struct Counter(u64);
///
/// impl Actor for Counter {
///     type Message = CounterMsg;
///
///     async fn handle(&mut self, cx: &mut Context, msg: CounterMsg) -> Result<(), ActorError> {
///         match msg {
///             CounterMsg::Add(Add(n)) => self.0 += n,
///             CounterMsg::Get(Get(reply)) => reply.send(cx, self.0).await?,
///         }
///         Ok(())
///     }
/// }
///
/// // `Add` on port ACTOR_PORT, `Get` on ACTOR_PORT + 1; any proc can derive both from the
/// // actor's id.
/// let counter = ActorRef::<Counter>::attest("local:7,p,counter[0]".parse().unwrap());
/// assert_eq!(counter.port::<Add>().port_id().index(), 0);
/// assert_eq!(counter.port::<Get>().port_id().index(), 1);
/// ```
///
/// Sending a type the actor does not take does not compile:
///
/// ```compile_fail
/// # use procwire_host::{messages, Actor, ActorError, ActorRef, Context, Instance};
/// # messages! { pub enum M { A(u8), B(String) } }
/// # struct X;
/// # impl Actor for X {
/// #     type Message = M;
/// #     async fn handle(&mut self, _: &mut Context, _: M) -> Result<(), ActorError> { Ok(()) }
/// # }
/// async fn wrong(x: ActorRef<X>, cx: &Instance) {
///     x.send(cx, 1.5f64).await.unwrap(); // `M` does not take `f64`
/// }
/// ```
#[macro_export]
macro_rules! messages {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $var:ident($ty:ty)),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* #[allow(missing_docs)] $var($ty),)+
        }

        impl $crate::Mailbox for $name {
            fn ports() -> ::std::vec::Vec<($crate::TypeFingerprint, $crate::Decoder<Self>)> {
                ::std::vec![$((
                    $crate::TypeFingerprint::of::<$ty>(),
                    (|env| $crate::decode_envelope::<$ty>(env).map($name::$var))
                        as $crate::Decoder<Self>,
                )),+]
            }
        }

        $(impl ::std::convert::From<$ty> for $name {
            fn from(msg: $ty) -> Self {
                $name::$var(msg)
            }
        })+

        $crate::messages!(@takes $name; 0u64; $($ty,)+);
    };
    (@takes $name:ident; $index:expr; ) => {};
    (@takes $name:ident; $index:expr; $ty:ty, $($rest:ty,)*) => {
        impl $crate::Takes<$ty> for $name {
            const INDEX: u64 = $index;
        }
        $crate::messages!(@takes $name; $index + 1; $($rest,)*);
    };
}

/// A typed reference to an actor whose mailbox takes `A::Message`: it sends any of the
/// mailbox's types, each to its own port (see the [port scheme](crate::actor#mailboxes-and-ports)).
///
/// It is plain data: the actor's id. [`Proc::spawn`](crate::HostedProc::spawn) and
/// [`Instance::spawn_child`] return one, and [`ActorRef::attest`] makes one from an
/// [`ActorId`] (parsed from text, say), so a well-known actor in another process is
/// reachable by its id alone. It serializes as the id and the fingerprint of the mailbox
/// type; reading it as the reference of an actor with another mailbox type fails.
pub struct ActorRef<A> {
    id: ActorId,
    _a: PhantomData<fn() -> A>,
}

impl<A: Actor> ActorRef<A> {
    /// Vouches that `id` runs an actor whose mailbox is `A::Message`. Nothing checks it
    /// here; each port refuses messages of another type as they arrive
    /// ([`Undeliverable::WrongType`](crate::Undeliverable::WrongType)), and a port the
    /// actor does not have answers `NoSuchPort`.
    pub fn attest(id: ActorId) -> Self {
        ActorRef {
            id,
            _a: PhantomData,
        }
    }

    /// The actor's id.
    pub fn actor_id(&self) -> &ActorId {
        &self.id
    }

    /// The port taking `M`s, to hand out as a plain [`PortRef`].
    pub fn port<M>(&self) -> PortRef<M>
    where
        A::Message: Takes<M>,
    {
        let index = ACTOR_PORT + <A::Message as Takes<M>>::INDEX;
        PortRef::attest(self.id.port(index))
    }

    /// Sends `msg` from `cx` to the port taking `M`s, waiting while the link's send window
    /// is full.
    pub async fn send<M: Serialize + 'static>(&self, cx: &Instance, msg: M) -> Result<(), SendError>
    where
        A::Message: Takes<M>,
    {
        self.port::<M>().send(cx, msg).await
    }

    /// Sends `msg` from `cx` without waiting: [`SendError::WouldBlock`] if the link's window
    /// is full.
    pub fn try_send<M: Serialize + 'static>(&self, cx: &Instance, msg: M) -> Result<(), SendError>
    where
        A::Message: Takes<M>,
    {
        self.port::<M>().try_send(cx, msg)
    }
}

impl<A> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef {
            id: self.id.clone(),
            _a: PhantomData,
        }
    }
}

impl<A> PartialEq for ActorRef<A> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<A> Eq for ActorRef<A> {}

impl<A> Hash for ActorRef<A> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl<A> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({})", self.id)
    }
}

impl<A> fmt::Display for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id, f)
    }
}

/// The serialized form of an actor reference.
#[derive(Serialize, Deserialize)]
struct RefForm {
    actor: ActorId,
    mailbox: TypeFingerprint,
}

impl<A: Actor> Serialize for ActorRef<A> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let form = RefForm {
            actor: self.id.clone(),
            mailbox: TypeFingerprint::of::<A::Message>(),
        };
        form.serialize(s)
    }
}

impl<'de, A: Actor> Deserialize<'de> for ActorRef<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let form = RefForm::deserialize(d)?;
        let want = TypeFingerprint::of::<A::Message>();
        if form.mailbox != want {
            return Err(D::Error::custom(format_args!(
                "actor {} has mailbox type {}, not {} ({})",
                form.actor,
                form.mailbox,
                want,
                core::any::type_name::<A::Message>()
            )));
        }
        Ok(ActorRef::attest(form.actor))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::{ActorError, Context};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Add(u64);

    crate::messages! {
        #[derive(Debug, PartialEq)]
        enum Two {
            Add(Add),
            Text(String),
        }
    }

    struct Multi;

    impl Actor for Multi {
        type Message = Two;
        async fn handle(&mut self, _: &mut Context, _: Two) -> Result<(), ActorError> {
            Ok(())
        }
    }

    struct Single;

    impl Actor for Single {
        type Message = Add;
        async fn handle(&mut self, _: &mut Context, _: Add) -> Result<(), ActorError> {
            Ok(())
        }
    }

    fn id() -> ActorId {
        "local:3,p,svc[2]".parse().expect("actor id")
    }

    fn envelope<M: Serialize>(msg: &M, to: u64) -> Envelope {
        Envelope::typed(
            id(),
            id().port(to),
            TypeFingerprint::of::<M>(),
            crate::encode(msg).expect("encodes"),
        )
    }

    #[test]
    fn ports_follow_declaration_order_and_decode_their_own_type() {
        let ports = Two::ports();
        let prints: Vec<TypeFingerprint> = ports.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            prints,
            [
                TypeFingerprint::of::<Add>(),
                TypeFingerprint::of::<String>()
            ]
        );
        assert_eq!(<Two as Takes<Add>>::INDEX, 0);
        assert_eq!(<Two as Takes<String>>::INDEX, 1);
        assert_eq!((ports[0].1)(&envelope(&Add(4), 0)), Ok(Two::Add(Add(4))));
        assert_eq!(
            (ports[1].1)(&envelope(&"hi".to_string(), 1)),
            Ok(Two::Text("hi".into()))
        );
        // A `String` to the `Add` port is refused by its fingerprint.
        assert!(matches!(
            (ports[0].1)(&envelope(&"hi".to_string(), 0)),
            Err(DecodeError::WrongType { .. })
        ));
        assert_eq!(Two::from(Add(1)), Two::Add(Add(1)));
        // A single type is the one-port case.
        assert_eq!(Add::ports().len(), 1);
        assert_eq!(<Add as Takes<Add>>::INDEX, 0);
    }

    #[test]
    fn actor_refs_address_a_port_per_type_and_keep_their_mailbox_type_through_serde() {
        let multi = ActorRef::<Multi>::attest(id());
        assert_eq!(multi.port::<Add>().port_id(), &id().port(ACTOR_PORT));
        assert_eq!(multi.port::<String>().port_id(), &id().port(ACTOR_PORT + 1));
        assert_eq!(
            multi.port::<String>().fingerprint(),
            TypeFingerprint::of::<String>()
        );
        let bytes = postcard::to_allocvec(&multi).expect("encodes");
        let back: ActorRef<Multi> = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, multi);
        assert_eq!(
            postcard::from_bytes::<ActorRef<Single>>(&bytes),
            Err(postcard::Error::SerdeDeCustom)
        );
        let single = ActorRef::<Single>::attest(id());
        assert_eq!(single.port::<Add>().port_id(), &id().port(ACTOR_PORT));
        assert_eq!(single.to_string(), id().to_string());
    }
}
