//! [`Proc`] on tokio: procwire-host's [`HostedProc`](procwire_host::HostedProc) on the
//! [`TokioRuntime`], defined (with its docs and delegations) by
//! [`procwire_host::adapter_proc!`].

use crate::net::TokioRuntime;

procwire_host::adapter_proc! {
    runtime: TokioRuntime = TokioRuntime::current(),
    /// Must be called within a tokio runtime (with IO and time enabled).
}
