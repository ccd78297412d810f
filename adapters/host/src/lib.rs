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
//! * [`HostedProc`]: binding (std sockets, then [`Runtime::listen`]; random Linux abstract
//!   names for `unix:@`; socket files owner-only by default, see
//!   [`ProcOptions::unix_mode`], stale ones replaced and removed at the end), the listener
//!   loop, dial-on-demand bounded by core's `connect_timeout`, per-connection reader and
//!   writer tasks (the writer gathers up to 64 queued buffers into one vectored write), the
//!   proc's one timer, task bookkeeping (tasks are counted, and aborted by waking them and
//!   dropping their bodies, which works on any executor), graceful shutdown and kill.
//! * The in-process `local` transport: a process-wide table of listeners, connections made of
//!   two bounded in-memory pipes built on plain wakers. It is runtime-neutral, so procs of
//!   different adapters in one process reach each other over it too.
//! * [`Instance`], typed ports ([`PortRef`], [`PortReceiver`], once-ports), [`Actor`]s and
//!   their loop, and the errors.
//!
//! ## Who can connect
//!
//! Socket files of `unix:/path` addresses are created owner-only (`0o600`) whatever the
//! umask; [`ProcOptions::unix_mode`] widens them. Abstract names (`unix:@name`, the default
//! of `ChannelTransport::Unix.any()`) have no permissions at all: any local user in the
//! same network namespace can connect, as anyone who can route to a TCP address can. Where
//! that matters, use a socket file in a directory only the intended users can reach (a
//! shared-secret cookie is planned). Inbound connections that fail or are refused before or
//! during the handshake are counted per reason ([`HostedProc::refusals`]) and logged at
//! most once per [`ProcOptions::refusal_log_interval`] per reason.
//!
//! Logs go through `tracing`, with a `proc` span around every task of a proc, `conn` spans
//! per connection, and `actor` spans per actor.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
// Ids are fixed-capacity values (no allocation, cheap to clone), so errors that carry an id
// or an address are a few hundred bytes. They are returned only by setup calls (binding,
// creating identities, opening ports), never on the per-message path.
#![allow(clippy::result_large_err)]

mod actor;
mod adapter;
mod engine;
mod error;
mod instance;
mod local;
mod net;
mod pipe;
mod proc;
mod refusals;
mod refuse_watch;
mod runtime;
mod sync;
mod tasks;
mod typed;

pub use actor::{Actor, Context, ACTOR_PORT};
pub use error::{ActorError, ProcError, RecvError, SendError, TryRecvError};
pub use instance::{ActorHandle, ActorStatus, Instance};
pub use net::unix_socket_path;
pub use proc::{random_u64, sleep, timeout, HostedProc, ProcOptions, ShutdownReport};
pub use refusals::{RefusalReason, Refusals};
pub use runtime::{BoxFuture, Connection, Reader, Runtime, StdListener, Timer, Writer};
pub use typed::{
    decode, encode, OncePortHandle, OncePortReceiver, OncePortRef, PortHandle, PortReceiver,
    PortRef, Returned,
};

pub use procwire_core;
pub use procwire_core::envelope::{Envelope, RefuseReason, Undeliverable};
pub use procwire_core::id::{
    ActorId, ChannelAddr, ChannelTransport, Name, PortId, ProcId, UnixAddr,
};
pub use procwire_core::proc::{Config, Stats};

/// What every adapter crate re-exports at its root, beside its own `Proc` (see
/// [`adapter_proc!`]): `pub use procwire_host::api::*;`.
pub mod api {
    pub use crate::{
        decode, encode, Actor, ActorError, ActorHandle, ActorStatus, Context, Instance,
        OncePortHandle, OncePortReceiver, OncePortRef, PortHandle, PortReceiver, PortRef,
        ProcError, ProcOptions, RecvError, RefusalReason, Refusals, Returned, SendError,
        ShutdownReport, TryRecvError, ACTOR_PORT,
    };

    pub use procwire_core;
    pub use procwire_core::envelope::{Envelope, RefuseReason, Undeliverable};
    pub use procwire_core::id::{
        ActorId, ChannelAddr, ChannelTransport, Name, PortId, ProcId, UnixAddr,
    };
    pub use procwire_core::proc::{Config, Stats};
}
