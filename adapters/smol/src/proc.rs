//! [`Proc`] on smol: procwire-host's [`HostedProc`] on the [`SmolRuntime`].

use std::sync::Arc;

use async_executor::Executor;
use procwire_core::id::{ChannelAddr, ProcId};
use procwire_core::proc::Stats;
use procwire_host::{
    Actor, ActorHandle, HostedProc, Instance, PortRef, ProcError, ProcOptions, ShutdownReport,
};

use crate::net::SmolRuntime;

/// A proc: an addressable endpoint serving on one address, holding actor identities.
///
/// Cloning gives another handle on the same proc. The proc serves until
/// [`Proc::shutdown`] (graceful) or [`Proc::kill`] (abrupt), or until the last handle is
/// dropped, which stops it abruptly like `kill`. Instances and actors do not keep it alive.
#[derive(Clone)]
pub struct Proc {
    inner: HostedProc<SmolRuntime>,
}

impl Proc {
    /// Serves on `addr` (binding an `any()` address picks a free one) under the proc name
    /// `name`, dials peers on demand, and starts the machine.
    ///
    /// The proc's tasks run on smol's global executor (`smol::spawn`); sockets and timers
    /// on async-io's reactor. Call it from any executor (typically inside `smol::block_on`);
    /// use [`Proc::direct_on`] to run the tasks on an executor of your own.
    pub async fn direct(addr: ChannelAddr, name: String) -> Result<Proc, ProcError> {
        Self::direct_with(addr, name, ProcOptions::default()).await
    }

    /// [`Proc::direct`] with options.
    pub async fn direct_with(
        addr: ChannelAddr,
        name: String,
        options: ProcOptions,
    ) -> Result<Proc, ProcError> {
        let inner = HostedProc::start(SmolRuntime::global(), addr, name, options).await?;
        Ok(Proc { inner })
    }

    /// [`Proc::direct_with`], with the proc's tasks (listener, timer, connection readers and
    /// writers, actor loops) spawned on `executor` instead of smol's global executor. The
    /// caller must keep the executor running (`executor.run(...)` on one or more threads)
    /// for as long as the proc lives, including through [`Proc::shutdown`] and
    /// [`Proc::kill`], which wait for the tasks to end.
    ///
    /// With one thread running both the executor and the caller's code
    /// (`smol::block_on(executor.run(main))`), a message between two procs needs no
    /// cross-thread wake-up at all.
    pub async fn direct_on(
        executor: &Arc<Executor<'static>>,
        addr: ChannelAddr,
        name: String,
        options: ProcOptions,
    ) -> Result<Proc, ProcError> {
        let rt = SmolRuntime::on(executor.clone());
        let inner = HostedProc::start(rt, addr, name, options).await?;
        Ok(Proc { inner })
    }

    /// This proc's id: its bound address and name.
    pub fn proc_id(&self) -> &ProcId {
        self.inner.proc_id()
    }

    /// The address it serves on.
    pub fn addr(&self) -> &ChannelAddr {
        self.inner.addr()
    }

    /// Reserves the root name `name` and returns a caller-driven [`Instance`] with the
    /// identity `ActorId(proc, name, 0)`, and a handle on it. A name already held in this
    /// proc is refused ([`RegistryError::Duplicate`](procwire_core::registry::RegistryError)).
    pub fn instance(&self, name: &str) -> Result<(Instance, ActorHandle), ProcError> {
        self.inner.instance(name)
    }

    /// Reserves the root name `name` and runs `actor` on `ActorId(proc, name, 0)`. Returns
    /// a reference to its mailbox (port [`ACTOR_PORT`](crate::ACTOR_PORT)) and a handle.
    pub fn spawn<A: Actor>(
        &self,
        name: &str,
        actor: A,
    ) -> Result<(PortRef<A::Message>, ActorHandle), ProcError> {
        self.inner.spawn(name, actor)
    }

    /// Dials `proc` at `addr` from now on instead of at the address in its id (a proxy, a
    /// tunnel, a NAT'd address).
    pub fn set_address(&self, proc: ProcId, addr: ChannelAddr) {
        self.inner.set_address(proc, addr);
    }

    /// Core's counters.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Undeliverable returns that could not be handed to their sender (gone, or its queue
    /// full), including those core reported dropped.
    pub fn returns_dropped(&self) -> u64 {
        self.inner.returns_dropped()
    }

    /// Connections open or being dialed now.
    pub fn connection_count(&self) -> usize {
        self.inner.connection_count()
    }

    /// Shuts down gracefully: core flushes what is in flight (or returns it to its senders),
    /// then every port closes (receivers drain and see `Closed`, actor loops end), every
    /// connection is flushed and closed, and every task of the proc ends. Bounded by
    /// [`ProcOptions::shutdown_timeout`] for each of the two waits. Idempotent.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.inner.shutdown().await
    }

    /// Stops at once, as a crash would: nothing in flight is flushed or returned, and every
    /// connection is dropped. Waits until all its tasks are gone and its address is free.
    pub async fn kill(&self) {
        self.inner.kill().await
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proc({})", self.proc_id())
    }
}
