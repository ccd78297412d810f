//! # procwire-core
//!
//! The sans-IO heart of procwire: identities, the wire codecs, routing and reliable sessions,
//! written as pure state machines. Bytes, events and time go in; actions come out. Nothing
//! here reads a clock, draws randomness from the OS, spawns a thread, takes a lock or blocks:
//! time is an argument ([`time::Instant`]), and randomness (incarnation numbers, session
//! ids, backoff jitter) comes from the seed the driver passes to [`proc::Proc::new`].
//!
//! ## Map
//!
//! | module | what |
//! |---|---|
//! | [`time`] | core's own `Instant` / `Duration` (microseconds, saturating) |
//! | [`id`] | addresses, names, proc / actor / port ids, their text grammar |
//! | [`frame`] | preamble, frame header, incremental decoder, encoders, handshake bodies |
//! | `envelope` | message metadata + zero-copy payload, short ids on a link |
//! | `idcache` | the per-link id cache (ids sent whole once per session, then as indices) |
//! | `registry` | root names, child pids, ports and their queue accounting |
//! | `proc` | the proc machine: routing, sessions, connections; **the drive loop** |
//! | `session` / `inbound` (private) | the two halves of a reliable link |
//! | `chunks` (private) | an outbound link's encoded frames: written as they are, kept for retransmission |
//! | `ctx`, `schedule`, `output` | what a proc's machines share, their deadlines in one heap, the output queue |
//! | `config` | every limit and interval, with defaults |
//! | [`auth`] | the cookie and the challenge-response that authenticates links |
//!
//! ## Features
//!
//! With no features, ids, time and the frame codec build without an allocator, on
//! fixed-capacity `heapless` storage. `alloc` adds envelopes, the registry, routing, sessions
//! and the proc machine. `std` (default) adds `std::error::Error` for the id errors.
//!
//! ## Protocol, version 5
//!
//! A link carries one proc's messages to another over successive connections. A proc
//! dials a peer when it has something to send and no connection to it; a peer that dialed
//! it already is answered over that peer's connection instead (a *two-way link*,
//! `Config::two_way`, on by default): once the dialer's session is open, the acceptor
//! sends a hello of its own on the same connection and the dialer welcomes it, so both
//! sessions share one connection and, over TCP, each direction's acknowledgements ride the
//! other's data. The exchange below is one session; on a two-way connection the second
//! session runs the same exchange from the hello on, in the other direction (see
//! `frame`, "Two-way connections").
//!
//! ```text
//! dialer                                        acceptor
//!   preamble ("PWIR", version)  ───────────────▶
//!                               ◀─────────────── preamble
//!   Hello {from, to, incarnation,
//!          session, resume, max,
//!          auth: Nd if cookie}  ───────────────▶  refuse if the version is unknown, or
//!                                                 a cookie is on one side only
//!   with a cookie only:         ◀─────────────── Challenge {Na, acceptor tag}
//!     dialer checks the acceptor tag,
//!     then proves its own:
//!   Proof {dialer tag}          ───────────────▶  refuse (BadAuth) if it does not match
//!                                                 refuse if `to` is not its name, or
//!                                                 shutting down, or no session room
//!                               ◀─────────────── Welcome {incarnation, next, max, ids}
//!                                                 or Refuse {reason}
//!   Data (envelope #next) ─────────────────────▶
//!   Data (envelope #next+1) …  ────────────────▶
//!                               ◀─────────────── Ack {next expected}   (coalesced)
//!   Ping ──────────────────────────────────────▶
//!                               ◀─────────────── Pong
//!   Close (session over) ──────────────────────▶
//! ```
//!
//! Tags are HMAC-SHA256 under the cookie over the hello's bytes and the acceptor's fresh
//! nonce `Na`, with a label per side; see [`auth`] for the byte-level definition and for
//! what a cookie protects (who may open sessions and send) and what not (the traffic is not
//! encrypted). Until the welcome, each side accepts frames of at most
//! [`frame::MAX_HANDSHAKE_FRAME_LEN`] bytes.
//!
//! ## Limits on what a peer can make a proc spend
//!
//! Bytes before the handshake: the largest hello. Connections: `max_handshaking` in their
//! handshake (the oldest is closed for a new one) and `max_inbound_conns` in all (further
//! ones are closed at accept). Sessions: one per dialing proc (a new session from it
//! replaces the old), `max_inbound_sessions` in all, disconnected ones evicted oldest first
//! before a new dialer is refused. Without a cookie, anyone who can reach the address can
//! still take up to `max_inbound_sessions` sessions by naming made-up procs, and replace
//! another proc's session by naming it; with a cookie, only cookie holders can. Every
//! refusal is an `Event::Refused`, counted per reason in `Stats::refused`.
//!
//! Sequence numbers are implicit (frames on a connection are consecutive from the
//! welcome's `next`), so a data frame is only its envelope. Actor ids travel whole the
//! first time a session uses them and as a short index afterwards (`idcache`; the welcome
//! says how many entries the acceptor keeps). The frame layout is in [`frame`], the
//! envelope layout in `envelope`, the delivery rules in `proc`.
//!
//! Version 2 added the id cache (an actor starts with a varint tag) and the welcome's
//! `id_cache` field; version 3 the cookie handshake (the hello's `auth`, `Challenge`,
//! `Proof`); version 4 the type fingerprint of typed envelopes (the envelope's `extras`
//! varint, see [`fingerprint`]). Versions do not interoperate; the preamble says which one a peer speaks, and
//! an acceptor refuses another with `UnsupportedVersion`.
//!
//! ## Delivery
//!
//! Per (sending proc, receiving proc) link, every accepted message is delivered once and in
//! send order across reconnects while both procs live; "delivered" means placed in the
//! destination port's queue, which is what an acknowledgement confirms. Port queues are
//! bounded (`Config::port_queue_msgs` / `port_queue_bytes`; the driver reports what its
//! consumers took with `Proc::handle_consumed`): a full port holds the links feeding it,
//! unacknowledged, so their senders' windows fill and `send` waits, and memory at both ends
//! stays within configuration whatever the consumer's speed. Everything else
//! comes back to its sender with a reason: definite ones (`NoSuchActor`, `NoSuchPort`,
//! `TooLarge`, `TtlExhausted`, `Refused`, `Unreachable`, `ShuttingDown`) mean it was not
//! delivered; "delivery unknown" ones (`PeerRestarted`, `SessionLost`, `Unconfirmed`; see
//! `Undeliverable::delivery_unknown`) mean the message was transmitted and the link failed
//! before the acknowledgement, so it may also have been delivered, or returned definitely
//! by the destination. A message is never delivered twice, has at most one definite
//! outcome, and at most one "delivery unknown" return.
#![no_std]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod auth;
#[cfg(feature = "alloc")]
mod chunks;
#[cfg(feature = "alloc")]
pub mod config;
#[cfg(feature = "alloc")]
mod ctx;
#[cfg(feature = "alloc")]
pub mod envelope;
pub mod fingerprint;
pub mod frame;
pub mod id;
#[cfg(feature = "alloc")]
pub mod idcache;
#[cfg(feature = "alloc")]
mod inbound;
#[cfg(feature = "alloc")]
mod meta;
#[cfg(feature = "alloc")]
pub mod output;
#[cfg(feature = "alloc")]
pub mod proc;
#[cfg(feature = "alloc")]
mod recycle;
#[cfg(feature = "alloc")]
pub mod registry;
#[cfg(feature = "alloc")]
mod schedule;
#[cfg(feature = "alloc")]
mod session;
pub mod time;
pub mod timer;
