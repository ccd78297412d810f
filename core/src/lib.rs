//! # procwire-core
//!
//! The sans-IO heart of procwire: identities, the wire codecs, routing and reliable sessions,
//! written as pure state machines. Bytes, events and time go in; actions come out. Nothing
//! here reads a clock, draws randomness from the OS, spawns a thread, takes a lock or blocks.
//!
//! Features: with none, ids ([`id`]), time ([`time`]) and the frame codec ([`frame`]) build
//! without an allocator, on fixed-capacity storage. `alloc` adds envelopes, the registry,
//! routing, sessions and the proc machine. `std` (default) adds `std::error::Error` impls.
#![no_std]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "alloc")]
pub mod config;
#[cfg(feature = "alloc")]
pub mod envelope;
pub mod frame;
pub mod id;
#[cfg(feature = "alloc")]
mod inbound;
#[cfg(feature = "alloc")]
pub mod output;
#[cfg(feature = "alloc")]
pub mod proc;
#[cfg(feature = "alloc")]
pub mod registry;
#[cfg(feature = "alloc")]
mod session;
pub mod time;
pub mod timer;
