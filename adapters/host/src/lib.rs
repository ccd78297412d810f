//! # procwire-host
//!
//! Hosts procwire-core's proc machine on any async runtime. This is the runtime-neutral part
//! of the procwire adapters (`procwire-tokio`, `procwire-smol`): they add a [`Runtime`] (a
//! clock, a timer, task spawning, and sockets turned into async byte streams) and a thin
//! `Proc` type around [`HostedProc`], and re-export everything else from here, so a program
//! sees the same [`Instance`], typed ports, [`Actor`]s and errors whichever runtime it uses.
//!
//! Users of procwire normally depend on an adapter, not on this crate. Write against it
//! directly to host procs on another executor: implement [`Runtime`] and call
//! [`HostedProc::start`]. An adapter crate gets its public API from here in two lines:
//! `pub use procwire_host::api::*;` (everything but `Proc`) and [`adapter_proc!`] (the
//! documented `Proc` wrapper on its runtime).
//!
//! ## What lives here
//!
//! * The engine: core's machine behind a mutex, turned on whichever task has an input
//!   (mutate → drain outputs → re-arm the single timer from `poll_timeout`), so sends report
//!   `TooLarge`/`WouldBlock` synchronously and no message pays for an extra task hop.
//!   Sends are batch-first: a task that sends several messages in a row has each accepted
//!   (or refused) by core at once, and their bytes written together, once the task next
//!   waits (on a receive of this proc, or on anything: the proc's timer task writes them),
//!   or after 256 of them. So `send(..).await` returning `Ok` means the proc took the
//!   message (it will arrive, or come back as an undeliverable return), not that it is on
//!   the wire yet. A small typed message is encoded into the link's buffer without an
//!   allocation; a typed [`bytes::Bytes`] message is sent as it is (see
//!   [type checks](#type-checks)).
//! * [`HostedProc`]: binding (std sockets, then [`Runtime::listen`]; random Linux abstract
//!   names for `unix:@`; socket files owner-only by default, see
//!   [`ProcOptions::unix_mode`], stale ones replaced and removed at the end), the listener
//!   loop, dial-on-demand bounded by core's `connect_timeout`, TCP streams set up by
//!   [`TcpSetup`] (`TCP_NODELAY`; between procs on one host the congestion control of
//!   [`ProcOptions::same_host_tcp_congestion`], `reno` unless told otherwise: BBR, a common
//!   system default, paces each connection, which over loopback halved bulk throughput in
//!   the benches), per-connection reader and
//!   writer tasks (a turn writes the bytes it queued itself, after releasing the engine lock,
//!   when the connection is idle and nobody else is writing on it; the writer task takes
//!   over when the socket would block, a write fails or the connection closes, and gathers
//!   what a producer queued in a row, up to 64 buffers, into one vectored write), the
//!   proc's one timer, task bookkeeping (tasks are counted, and aborted by waking them and
//!   dropping their bodies, which works on any executor), graceful shutdown and kill.
//! * The in-process `local` transport: a process-wide table of listeners, connections made of
//!   two bounded in-memory pipes built on plain wakers. It is runtime-neutral, so procs of
//!   different adapters in one process reach each other over it too.
//! * [`Instance`], typed ports ([`PortRef`], [`PortReceiver`], once-ports), [`Actor`]s and
//!   their loop, and the errors.
//!
//! ## Typed ports
//!
//! [`Instance::open_port`] binds a port of the instance and returns a [`PortHandle`] and a
//! [`PortReceiver`]. [`PortHandle::port_ref`] hands out a [`PortRef`]: plain data (the port
//! id and the message type's [`TypeFingerprint`]) that any proc can send to. Handing out a
//! reference binds nothing and may be done any number of times; the port is bound from
//! `open_port` until its receiver is dropped (`PortHandle::bind`, the old name of
//! `port_ref`, is deprecated because it suggested otherwise).
//!
//! Ephemeral port indices are never reused in the life of a proc, even when a root name is
//! released and reserved again, so a stale reference comes back `NoSuchPort` instead of
//! reaching a newer holder of the name. Well-known ports (below [`FIRST_EPHEMERAL_PORT`],
//! such as an actor's mailbox [`ACTOR_PORT`]) belong to the name: they reach whoever holds it
//! and binds them.
//!
//! ### Type checks
//!
//! A typed port never hands out a value of another type:
//!
//! 1. **Fingerprint.** A typed send marks the envelope with the [`TypeFingerprint`] of the
//!    message type (`Envelope::fingerprint`; 8 bytes on the wire). Every port opened here
//!    is bound in core with its type's fingerprint, and core compares the two *as the
//!    message arrives*, before placing it in the port's queue: a mismatch never reaches the
//!    receiver and comes back to its sender as [`Undeliverable::WrongType`] naming the
//!    port's type (the returned envelope's `fingerprint` is the message's). A once-port is not spent by it. Envelopes without a fingerprint (raw
//!    sends such as [`Instance::send_bytes`], or a peer that does not use typed ports)
//!    skip this step. Decoding an envelope by hand ([`decode_envelope`]) makes the same
//!    check ([`DecodeError::WrongType`]).
//! 2. **Strict decoding.** The payload must be exactly one encoding of the port's type: a
//!    payload that does not decode is [`DecodeError::Malformed`], one with bytes left over
//!    is [`DecodeError::TrailingBytes`]. Such a message is consumed, reported to the
//!    receiver as [`RecvError::Decode`] (an actor's loop logs and skips it), and goes back
//!    to its sender as [`Undeliverable::Undecodable`]; the port stays open. (Only a
//!    typed receive decodes: envelopes taken with the `*_envelope` receives are the
//!    caller's to check.)
//!
//! The fingerprint travels beside the payload rather than in it, so the payload stays
//! exactly the postcard encoding of the message (raw receivers and [`Returned::payload`]
//! see what was encoded). One type is sent as it is: a [`bytes::Bytes`] message's payload
//! is its bytes, without postcard's length prefix (the frame already gives the length).
//! So sending one copies nothing (a large one is written to the socket from the sender's
//! buffer), receiving one hands out the payload itself, and a raw receiver sees exactly
//! the bytes sent. `Vec<u8>`, `[u8; N]` and every other type are postcard's; [`encode`]
//! and [`decode`] follow the same rule.
//!
//! A [`PortRef`] carries its type's fingerprint in its serialized form too (the port id, then
//! the 8 fingerprint bytes), and deserializing it as a `PortRef` of another type fails. So a
//! reference to a `Vec<u8>` port that travels inside a message cannot be read as a
//! `PortRef<String>`: the message holding it is refused instead.
//!
//! ### Fingerprints
//!
//! [`TypeFingerprint::of::<M>()`](TypeFingerprint::of) is the 64-bit FNV-1a hash of the
//! UTF-8 text of [`core::any::type_name::<M>()`](core::any::type_name), e.g.
//! `alloc::vec::Vec<u8>` or `my_app::proto::Ping`. Anyone can compute it from that text
//! ([`TypeFingerprint::of_type_name`]), in any language. What it covers, and what not:
//!
//! * It names the type by its full path and generic arguments: `String` and `Vec<u8>`, or
//!   `(u64, u64, u64)` and `Vec<u64>`, differ although postcard encodes them alike.
//! * Two builds agree when they name the type the same way: the same crate and module
//!   path, built by the same compiler. Moving or renaming the type or its crate changes the
//!   fingerprint, and Rust does not promise that `type_name`'s text stays the same across
//!   compiler versions. All of these make peers *refuse* each other's messages, never
//!   misread them: upgrade the procs that talk together with the same toolchain.
//! * It does not cover the type's shape: the crate version is not part of the path, so a
//!   struct that gained a field under the same path keeps its fingerprint. Strict decoding
//!   catches most such changes; version a protocol by naming its types (`v2::Ping`).
//!
//! The alternative, a trait every message type implements with a chosen identifier, would
//! be stable across refactorings but needs an impl (or a derive) for every message type,
//! including `String`, tuples and other std types; the hash needs nothing from the user.
//! ## Who can connect
//!
//! Socket files of `unix:/path` addresses are created owner-only (`0o600`) whatever the
//! umask; [`ProcOptions::unix_mode`] widens them. Abstract names (`unix:@name`, the default
//! of `ChannelTransport::Unix.any()`) have no permissions at all: any local user in the
//! same network namespace can connect, as anyone who can route to a TCP address can. Where
//! that matters, use a socket file in a directory only the intended users can reach, and/or
//! a shared-secret cookie ([`ProcOptions::with_cookie`]; it authenticates links, it does
//! not encrypt them: see `procwire_core::auth`). Inbound connections that fail or are refused before or
//! during the handshake are counted per reason ([`HostedProc::refusals`]) and logged at
//! most once per [`ProcOptions::refusal_log_interval`] per reason.
//!
//! A proc answers a peer that dialed it over that peer's connection (two-way links,
//! `core.two_way` in [`ProcOptions`], on by default). Without a cookie nothing proves that
//! a dialer is the proc its hello names, so a dialer that lies about its name would receive
//! what this proc sends to that name: on a network you do not trust, set a cookie, or turn
//! two-way links off so that every link is dialed to the address in the peer's id. Link
//! events ([`LinkEvent`]) report a link over the peer's connection like a dialed one.
//!
//! ## Actors
//!
//! [`HostedProc::spawn`] and [`Instance::spawn_child`] run an [`Actor`] and return a typed
//! [`ActorRef`]. An actor's mailbox takes one serde type or several, declared with
//! [`messages!`] (an enum with a variant per type, matched in [`Actor::handle`]); each type
//! has its own well-known port (`ACTOR_PORT + i`, in declaration order) carrying its
//! fingerprint, so [`ActorRef::attest`] reaches an actor from its id alone. The port scheme,
//! the loop's priorities and the **supervision rules** (children end before their parent; a
//! child's failure goes to [`Actor::child_failed`], which fails the parent by default) are
//! in one place: the [`actor`] module.
//!
//! ## Monitoring
//!
//! [`Instance::monitor`] watches an actor (or instance) in this proc or another one; the
//! returned [`Monitor`] gets **exactly one** [`DownReason`], unless the watching proc stops
//! first ([`Monitor::down`] then gives `None`). Dropping the monitor cancels the watch.
//!
//! It is built on ordinary messages: every proc runs a monitor service on the reserved root
//! name [`MONITOR_SERVICE`] (`_procwire_monitor`; its mailbox is port [`ACTOR_PORT`]), which
//! takes typed [`MonitorMsg`]s.
//!
//! 1. `watcher.monitor(&target)` registers the watch with the watcher's own service. A target
//!    in the same proc is watched in place. Otherwise a `Watch` goes to the target proc's
//!    service, handed to the machine before `monitor` returns when the link has room, so it
//!    is ordered before anything this proc sends afterwards.
//! 2. The target's service records it. When the target's identity goes away it sends
//!    `Down(Stopped)` (an instance dropped, an actor stopped) or `Down(Failed(why))`; when its
//!    proc shuts down gracefully, `Down(ProcShutDown)` to every watcher before it drains. A
//!    watch for an identity that went away recently (the last [`RECENT_EXITS`]) gets how it
//!    went, so sending "stop" right after `monitor` is not a race; otherwise `NoSuchActor`.
//! 3. The watcher's service hands the first `Down` for a watch to the [`Monitor`] and forgets
//!    the watch. It ends watches itself too: `ProcRestarted` when the target's proc answers as
//!    a new incarnation, `ProcUnreachable` when dialing it fails or it refuses the session
//!    (link events), and according to the reason when a `Watch` comes back undeliverable
//!    (`NoMonitor` when the target proc runs no monitor service).
//! 4. When the link to the target's proc is lost, the watcher's service sends its watches on
//!    that proc again (the target side ignores repeats). That makes this proc dial it: a proc
//!    that was killed is then reported unreachable (or restarted, if a new incarnation
//!    answers) within the dial, and a proc that is back keeps its watches.
//!
//! A proc that is killed (or crashes) tells nobody: its watchers find out through step 4.
//! "Unreachable" is a failed dial after the link was lost, so a network partition looks
//! like a dead proc. Watches held by a target proc are forgotten with their target, not when
//! the watching proc goes away; a `Down` for a watcher that is gone comes back and is dropped.
//!
//! ## Logs
//!
//! Logs go through `tracing`, with a `proc` span around every task of a proc, `conn` spans
//! per connection, and `actor` spans per actor.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
// Ids are fixed-capacity values (no allocation, cheap to clone), so errors that carry an id
// or an address are a few hundred bytes. They are returned only by setup calls (binding,
// creating identities, opening ports), never on the per-message path.
#![allow(clippy::result_large_err)]

pub mod actor;
mod adapter;
mod engine;
mod error;
mod fasthash;
mod instance;
mod links;
mod local;
mod mailbox;
mod monitor;
mod net;
mod pipe;
mod ports;
mod proc;
mod refusals;
mod runtime;
mod sync;
mod tasks;
mod typed;

pub use actor::{Actor, Context, SupervisionError, ACTOR_PORT};
pub use error::{
    ActorError, AdvertiseError, DecodeError, ProcError, RecvError, SendError, TryRecvError,
};
pub use instance::{ActorHandle, ActorStatus, Instance};
pub use links::{LinkError, LinkEvent, LinkEvents, LINK_EVENT_QUEUE};
pub use mailbox::{ActorRef, Decoder, Mailbox, Takes};
pub use monitor::{DownReason, Monitor, MonitorMsg, MONITOR_SERVICE, RECENT_EXITS};
pub use net::unix_socket_path;
pub use proc::{random_u64, sleep, timeout, HostedProc, ProcOptions, ShutdownReport};
pub use refusals::{RefusalReason, Refusals};
pub use runtime::{BoxFuture, Connection, Reader, Runtime, StdListener, TcpSetup, Timer, Writer};
pub use typed::{
    decode, decode_envelope, encode, OncePortHandle, OncePortReceiver, OncePortRef, PortHandle,
    PortReceiver, PortRef, Returned, TypeFingerprint,
};

pub use procwire_core;
pub use procwire_core::auth::{Cookie, CookieError};
pub use procwire_core::envelope::{Envelope, RefuseReason, Undeliverable};
pub use procwire_core::id::{
    ActorId, AddrError, ChannelAddr, ChannelTransport, HostError, HostName, IdKind, Name,
    NameError, ParseError, ParseErrorReason, PortId, ProcId, UnixAddr,
};
pub use procwire_core::proc::{Config, DialError, DialErrorKind, Held, Stats};
pub use procwire_core::registry::{RegistryError, FIRST_EPHEMERAL_PORT};

/// What every adapter crate re-exports at its root, beside its own `Proc` (see
/// [`adapter_proc!`]): `pub use procwire_host::api::*;`.
///
/// It holds everything a user of an adapter names or matches on: the identity, port, actor
/// and error types of this crate, and the core types that appear in them (ids and their
/// parse errors, [`RegistryError`] inside [`ProcError::Registry`], [`Undeliverable`] and
/// [`RefuseReason`] in returns, [`Config`] and [`Stats`]). Enums that will grow are
/// `#[non_exhaustive]`: match them with a wildcard arm.
pub mod api {
    pub use crate::{
        decode, decode_envelope, encode, messages, Actor, ActorError, ActorHandle, ActorRef,
        ActorStatus, AdvertiseError, Context, DecodeError, Decoder, DownReason, Instance,
        LinkError, LinkEvent, LinkEvents, Mailbox, Monitor, OncePortHandle, OncePortReceiver,
        OncePortRef, PortHandle, PortReceiver, PortRef, ProcError, ProcOptions, RecvError,
        RefusalReason, Refusals, Returned, SendError, ShutdownReport, SupervisionError, Takes,
        TcpSetup, TryRecvError, TypeFingerprint, ACTOR_PORT, MONITOR_SERVICE,
    };

    pub use procwire_core;
    pub use procwire_core::auth::{Cookie, CookieError};
    pub use procwire_core::envelope::{Envelope, RefuseReason, Undeliverable};
    pub use procwire_core::id::{
        ActorId, AddrError, ChannelAddr, ChannelTransport, HostError, HostName, IdKind, Name,
        NameError, ParseError, ParseErrorReason, PortId, ProcId, UnixAddr,
    };
    pub use procwire_core::proc::{Config, DialError, DialErrorKind, Held, Stats};
    pub use procwire_core::registry::{RegistryError, FIRST_EPHEMERAL_PORT};
}
