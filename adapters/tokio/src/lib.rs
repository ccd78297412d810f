//! # procwire-tokio
//!
//! procwire on tokio: stands up a [`Proc`] on a real address (Unix socket, TCP, or the
//! in-process `local` transport), and drives procwire-core's sans-IO proc machine with tokio
//! sockets, timers and tasks. The protocol (framing, sessions, acknowledgements, resends,
//! undeliverable returns) lives entirely in core; this crate moves bytes, time and
//! connection events in and carries the machine's outputs out.
//!
//! ```no_run
//! use procwire_tokio::{ChannelTransport, Proc};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let proc = Proc::direct(ChannelTransport::Unix.any(), "root".to_string()).await?;
//! let (instance, _handle) = proc.instance("client")?;
//! let (port, mut rx) = instance.open_port::<String>();
//! port.port_ref().send(&instance, "hello".to_string()).await?;
//! assert_eq!(rx.recv().await?, "hello");
//! proc.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Pieces
//!
//! * [`Proc::direct`] binds, names the proc `ProcId(bound address, name)`, accepts
//!   connections and dials peers on demand. [`Proc::set_address`] routes a peer through
//!   another address (a proxy).
//! * [`Proc::instance`] gives a caller-driven [`Instance`]: typed ports
//!   ([`Instance::open_port`], [`Instance::open_once_port`]) whose [`PortRef`]s can be sent
//!   to any proc, sends, children, and the messages that came back undeliverable
//!   ([`Instance::next_undeliverable`]).
//! * [`Proc::spawn`] runs an [`Actor`] (a handler per message) and returns a typed
//!   [`ActorRef`] and an [`ActorHandle`] to watch, stop and wait for it.
//! * Sends: `send` waits while the link's window is full, `try_send` reports
//!   [`SendError::WouldBlock`]; both fail with typed errors such as
//!   [`SendError::TooLarge`]. Anything accepted is delivered exactly once and in order, or
//!   comes back to its sender with an [`Undeliverable`] reason.
//! * [`Proc::shutdown`] flushes or returns everything in flight, then stops every task.
//!
//! ## Errors
//!
//! Everything the API returns can be matched with names from this crate, including the
//! registry's refusals inside [`ProcError::Registry`] and the reasons of returned messages.
//! The error enums are `#[non_exhaustive]`: keep a wildcard arm.
//!
//! ```no_run
//! use procwire_tokio::{ChannelTransport, DecodeError, Proc, ProcError, RecvError, RegistryError};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let proc = Proc::direct(ChannelTransport::Local.any(), "root".to_string()).await?;
//! let (svc, _handle) = proc.instance("svc")?;
//! match proc.instance("svc") {
//!     Err(ProcError::Registry(RegistryError::Duplicate(name))) => assert_eq!(name.as_str(), "svc"),
//!     other => panic!("expected a duplicate root name, got {other:?}"),
//! }
//! let (_port, mut rx) = svc.open_port::<Vec<u8>>();
//! match rx.recv().await {
//!     Ok(bytes) => println!("{} bytes", bytes.len()),
//!     Err(RecvError::Decode(DecodeError::WrongType { found, .. })) => {
//!         println!("refused a message of type {found}")
//!     }
//!     Err(e) => println!("{e}"),
//! }
//! # Ok(()) }
//! ```
//!
//! ## Actors
//!
//! An actor is a handler per message on an identity of its own. Its mailbox takes one
//! message type, on the well-known port [`ACTOR_PORT`], or several declared with
//! [`messages!`] (one port per type), so any proc that knows its id can address it
//! ([`ActorRef::attest`]). Children it spawns end before it does, and their failures go to
//! its [`Actor::child_failed`]: the rules are in [`procwire_host::actor`].
//!
//! ```
//! use procwire_tokio::{Actor, ActorError, Context, PortRef};
//!
//! /// Sends each text back to the port that came with it.
//! struct Echo;
//!
//! impl Actor for Echo {
//!     type Message = (String, PortRef<String>);
//!
//!     async fn handle(
//!         &mut self,
//!         cx: &mut Context,
//!         (text, reply_to): Self::Message,
//!     ) -> Result<(), ActorError> {
//!         reply_to.send(cx, text).await?;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! ## How it drives core
//!
//! Everything but the runtime lives in `procwire-host`, shared with the smol adapter: the
//! core machine sits in an engine behind a mutex. Every input (bytes from a connection's
//! reader task, a finished dial, the timer, an API call such as a send) runs one turn of
//! core's loop on the task that has the input: `handle_*` with the current time, drain
//! `poll_output` (bytes are queued for the connection; messages go to port queues), then
//! re-arm the single timer task from `poll_timeout` if the deadline moved earlier, release
//! the lock and write the queued bytes on the same task if the connection is idle. The
//! connection's writer task only takes over when the socket would block, a write is partial
//! or fails, or a producer queues in a row (it then gathers up to 64 buffers into one
//! vectored write). Sends therefore report `TooLarge`/`WouldBlock` at once, and neither a
//! request nor its reply pays for an extra task hop: in one thread a 64 B round trip
//! between two procs takes 3 task polls (reader, echo actor, reader) where it took 5.
//! TCP connections use `TCP_NODELAY`, and those to this host the congestion control of
//! `ProcOptions::same_host_tcp_congestion` (`reno` unless told otherwise; see
//! [`TcpSetup`]). Logs go through `tracing`, with a `proc` span around every task of a proc, `conn` spans per connection, and `actor` spans per actor.
//!
//! Tasks (listener, timer, connection readers and writers, actor loops) are spawned on the
//! tokio runtime that called [`Proc::direct`]; the clock and timers are tokio's, so a paused
//! test clock applies to them.
//!
//! ## Layout
//!
//! This crate is only the tokio [`Runtime`](procwire_host::Runtime) (`net`: tokio's clock,
//! timers and tasks; tokio TCP and Unix sockets behind `futures-io` halves) and the [`Proc`]
//! wrapper (`proc`). Everything else is re-exported from `procwire-host`: the engine, the
//! proc driver (binding, listener loop, dialing, reader and writer tasks, shutdown), the
//! in-process `local` transport, instances, typed ports, actors and errors. So the smol
//! adapter has the same API and behaviour, and procs of both adapters interoperate, also
//! over `local` within one process.
//!
//! ## Addresses
//!
//! * `unix:@` (`ChannelTransport::Unix.any()`) binds a random abstract name
//!   `procwire-<pid>-<hex>`; `unix:/path` binds a socket file, replacing a stale one that
//!   nobody listens on, and removes it when the proc ends (unless another proc replaced it).
//! * `tcp:127.0.0.1:0` binds a free port.
//! * `local:0` takes a fresh in-process id; `local:N` binds that id if it is free. Local
//!   connections are in-memory pipes carrying exactly the same bytes as sockets.
//!
//! ## Who can connect
//!
//! * A `unix:/path` socket file is created with mode `0o600` (owner only) whatever the
//!   process umask; [`ProcOptions::unix_mode`] widens it (say `0o660` for a group). The mode
//!   is set before the socket listens, so no connection slips in first.
//! * An abstract name (`unix:@name`, and what `ChannelTransport::Unix.any()` binds) has no
//!   file and no permissions: **any local user** in the same network namespace can connect.
//!   A TCP address is reachable by whoever can route to it. Where that matters, give every
//!   proc of the deployment the same shared secret ([`ProcOptions::with_cookie`]: peers
//!   without it cannot open a session; traffic is still not encrypted), or serve on a socket
//!   file in a directory only the intended users can reach.
//! * Whoever connects gets only as far as core's handshake allows: bad bytes, a wrong
//!   version, an over-limit frame or a hello for another proc close that connection, and a
//!   silent one is closed at `connect_timeout`. Such connections are counted per reason in
//!   [`Proc::refusals`] and logged at most once per
//!   [`ProcOptions::refusal_log_interval`] per reason, with the count since the last line.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
// Ids are fixed-capacity values (no allocation, cheap to clone), so errors that carry an id
// or an address are a few hundred bytes. They are returned only by setup calls (binding,
// creating identities, opening ports), never on the per-message path.
#![allow(clippy::result_large_err)]

mod net;
mod proc;

pub use proc::Proc;
pub use procwire_host::api::*;
