//! [`Proc`] on smol: procwire-host's [`HostedProc`] on the [`SmolRuntime`], defined (with its
//! docs and delegations) by [`procwire_host::adapter_proc!`], plus [`Proc::direct_on`].

use std::sync::Arc;

use async_executor::Executor;
use procwire_core::id::ChannelAddr;
use procwire_host::{HostedProc, ProcError, ProcOptions};

use crate::net::SmolRuntime;

procwire_host::adapter_proc! {
    runtime: SmolRuntime = SmolRuntime::global(),
    /// The proc's tasks run on smol's global executor (`smol::spawn`); sockets on
    /// async-io's reactor, timers on the process's timer thread. Call it from any executor
    /// (typically inside `smol::block_on`); use [`Proc::direct_on`] to run the tasks on an
    /// executor of your own.
}

impl Proc {
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
}
