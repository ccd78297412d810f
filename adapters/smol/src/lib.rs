//! # procwire-smol
//!
//! procwire on smol: stands up a [`Proc`] on a real address (Unix socket, TCP, or the
//! in-process `local` transport), and drives procwire-core's sans-IO proc machine with
//! async-io sockets, smol tasks and a timer thread. The protocol (framing, sessions,
//! acknowledgements, resends, undeliverable returns) lives entirely in core; this crate moves
//! bytes, time and connection events in and carries the machine's outputs out. There is no
//! tokio anywhere in its dependency tree.
//!
//! ```
//! use procwire_smol::{ChannelTransport, Proc};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let proc = Proc::direct(ChannelTransport::Unix.any(), "root".to_string()).await?;
//!     let (instance, _handle) = proc.instance("client")?;
//!     let (port, mut rx) = instance.open_port::<String>();
//!     port.port_ref().send(&instance, "hello".to_string()).await?;
//!     assert_eq!(rx.recv().await?, "hello");
//!     proc.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! The API is the same as procwire-tokio's, item for item (both re-export it from
//! `procwire-host`), plus [`Proc::direct_on`] to choose the executor.
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
//! * [`Proc::shutdown`] flushes or returns everything in flight, then stops every task;
//!   [`Proc::kill`] stops at once, as a crash would.
//!
//! ## Errors
//!
//! Everything the API returns can be matched with names from this crate, including the
//! registry's refusals inside [`ProcError::Registry`] and the reasons of returned messages.
//! The error enums are `#[non_exhaustive]`: keep a wildcard arm.
//!
//! ```
//! use procwire_smol::{ChannelTransport, Proc, ProcError, RegistryError};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let proc = Proc::direct(ChannelTransport::Local.any(), "root".to_string()).await?;
//!     let (_svc, _handle) = proc.instance("svc")?;
//!     match proc.instance("svc") {
//!         Err(ProcError::Registry(RegistryError::Duplicate(name))) => {
//!             assert_eq!(name.as_str(), "svc")
//!         }
//!         other => panic!("expected a duplicate root name, got {other:?}"),
//!     }
//!     proc.shutdown().await;
//!     Ok(())
//! })
//! # }
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
//! use procwire_smol::{Actor, ActorError, Context, PortRef};
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
//! ## Where tasks run
//!
//! A proc has a listener task, one timer task, a reader and a writer task per connection, a
//! dial task per outgoing connection, and a task per actor.
//!
//! * [`Proc::direct`] / [`Proc::direct_with`] spawn them on smol's global executor
//!   (`smol::spawn`: lazily started, one background thread by default, `SMOL_THREADS` for
//!   more). Nothing has to be run by the caller, and the `Proc` can be used from any
//!   executor or thread, e.g. inside `smol::block_on`.
//! * [`Proc::direct_on`] spawns them on an [`async_executor::Executor`] you pass and run
//!   yourself, on as many threads as you like. This is what a server that owns its
//!   executors wants, and it lets one thread drive everything: run your code inside
//!   `smol::block_on(executor.run(...))` and a message between two procs needs no
//!   cross-thread wake-up. The executor must keep running while the proc lives, including
//!   during [`Proc::shutdown`] and [`Proc::kill`], which wait for the tasks to end.
//!
//! Sockets are registered with async-io's reactor (its `async-io` thread, or whichever
//! thread is inside `async_io::block_on`), so no runtime context is needed at all.
//!
//! Timers (each proc's one timer, and [`Instance`] sleeps and timeouts) are *not* async-io
//! timers: one process-wide thread, `procwire-smol-timer`, sleeps until the earliest armed
//! deadline and wakes its task. A proc nearly always has a deadline a few milliseconds away
//! (core's ack delay); as an async-io timer it made the reactor program and clear a kernel
//! timer every time the executor went idle, which inside a VM cost more than the round trip
//! itself (a one-thread 64 B round trip between two procs took 2.2x the CPU time). With the
//! timer thread the reactor holds no timers, and arming a deadline costs a heap push (and a
//! wake of that thread when it is the new earliest). If the thread cannot be started, the
//! timers fall back to async-io's.
//!
//! ## How it drives core
//!
//! As in every procwire adapter (the driver lives in `procwire-host`): the core machine sits
//! in an engine behind a mutex. Every input (bytes from a connection's reader task, a
//! finished dial, the timer, an API call such as a send) runs one turn of core's loop on the
//! task that has the input: `handle_*` with the current time, drain `poll_output` (bytes are
//! queued for the connection; messages go to port queues), re-arm the proc's single timer
//! from `poll_timeout` if the deadline moved earlier, then release the lock and write the
//! queued bytes on the same task if the connection is idle. The connection's writer task
//! only takes over when the socket would block, a write is partial or fails, or a producer
//! queues in a row (it then gathers up to 64 buffers into one vectored write). Sends
//! therefore report `TooLarge`/`WouldBlock` at once, and no message pays for an extra task
//! hop. TCP connections use `TCP_NODELAY`, and those to this host the congestion control of
//! `ProcOptions::same_host_tcp_congestion` (`reno` unless told otherwise; see
//! [`TcpSetup`]). Logs go through `tracing`, with a `proc` span around every task of a proc, `conn` spans per connection, and `actor` spans per actor.
//!
//! ## Addresses
//!
//! * `unix:@` (`ChannelTransport::Unix.any()`) binds a random Linux abstract name
//!   `procwire-<pid>-<hex>` (std's `SocketAddrExt::from_abstract_name`, then
//!   `Async::new`); `unix:/path` binds a socket file, replacing a stale one that nobody
//!   listens on, and removes it when the proc ends (unless another proc replaced it).
//! * `tcp:127.0.0.1:0` binds a free port.
//! * `local:0` takes a fresh in-process id; `local:N` binds that id if it is free. Local
//!   connections are in-memory pipes carrying exactly the same bytes as sockets; the table
//!   of local listeners is shared with procwire-tokio, so a smol proc and a tokio proc in
//!   one process reach each other over `local` as well as over sockets.
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
mod timer;

pub use proc::Proc;
pub use procwire_host::api::*;
