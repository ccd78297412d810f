//! [`adapter_proc!`]: the `Proc` type every adapter exposes, defined once.

/// Defines an adapter's public `Proc` type: a documented wrapper around
/// [`HostedProc`](crate::HostedProc) on the adapter's runtime, with `direct`, `direct_with`
/// and the delegating methods every adapter's `Proc` has. The adapter supplies only its
/// runtime type, the expression that makes a handle on it for `direct`/`direct_with`, and
/// the docs saying where `direct`'s tasks run. It can add constructors of its own in a
/// further `impl Proc` block, building `Proc { inner }` from a
/// [`HostedProc::start`](crate::HostedProc::start) on its runtime.
///
/// ```text
/// procwire_host::adapter_proc! {
///     runtime: TokioRuntime = TokioRuntime::current(),
///     /// Must be called within a tokio runtime (with IO and time enabled).
/// }
/// ```
#[macro_export]
macro_rules! adapter_proc {
    (
        runtime: $rt:ty = $make_rt:expr,
        $(#[doc = $direct_doc:expr])*
    ) => {
        /// A proc: an addressable endpoint serving on one address, holding actor identities.
        ///
        /// Cloning gives another handle on the same proc. The proc serves until
        /// [`Proc::shutdown`] (graceful) or [`Proc::kill`] (abrupt), or until the last handle is
        /// dropped, which stops it abruptly like `kill`. Instances and actors do not keep it alive.
        #[derive(Clone)]
        pub struct Proc {
            inner: $crate::HostedProc<$rt>,
        }

        impl Proc {
            /// Serves on `addr` (binding an `any()` address picks a free one) under the proc name
            /// `name`, dials peers on demand, and starts the machine.
            ///
            $(#[doc = $direct_doc])*
            pub async fn direct(
                addr: $crate::ChannelAddr,
                name: ::std::string::String,
            ) -> ::std::result::Result<Proc, $crate::ProcError> {
                Self::direct_with(addr, name, $crate::ProcOptions::default()).await
            }

            /// [`Proc::direct`] with options.
            pub async fn direct_with(
                addr: $crate::ChannelAddr,
                name: ::std::string::String,
                options: $crate::ProcOptions,
            ) -> ::std::result::Result<Proc, $crate::ProcError> {
                let inner = $crate::HostedProc::start($make_rt, addr, name, options).await?;
                Ok(Proc { inner })
            }

            /// This proc's id: its bound address and name.
            pub fn proc_id(&self) -> &$crate::ProcId {
                self.inner.proc_id()
            }

            /// The address it serves on.
            pub fn addr(&self) -> &$crate::ChannelAddr {
                self.inner.addr()
            }

            /// Reserves the root name `name` and returns a caller-driven
            /// [`Instance`](crate::Instance) with the identity `ActorId(proc, name, 0)`, and a
            /// handle on it. A name already held in this proc is refused
            /// ([`RegistryError::Duplicate`](crate::procwire_core::registry::RegistryError)).
            pub fn instance(
                &self,
                name: &str,
            ) -> ::std::result::Result<($crate::Instance, $crate::ActorHandle), $crate::ProcError>
            {
                self.inner.instance(name)
            }

            /// Reserves the root name `name` and runs `actor` on `ActorId(proc, name, 0)`.
            /// Returns a typed [`ActorRef`](crate::ActorRef) (it sends any type the actor's
            /// mailbox takes) and a handle.
            pub fn spawn<A: $crate::Actor>(
                &self,
                name: &str,
                actor: A,
            ) -> ::std::result::Result<
                ($crate::ActorRef<A>, $crate::ActorHandle),
                $crate::ProcError,
            > {
                self.inner.spawn(name, actor)
            }

            /// A subscription to this proc's link events from now on: peers connected, lost,
            /// reconnected, restarted, unreachable, or refusing the session (see
            /// [`LinkEvent`](crate::LinkEvent) for what is reported and the known gaps).
            /// Instances and actors have the same through `Instance::link_events`.
            pub fn link_events(&self) -> $crate::LinkEvents {
                self.inner.link_events()
            }

            /// Dials `proc` at `addr` from now on instead of at the address in its id (a proxy,
            /// a tunnel, a NAT'd address).
            pub fn set_address(&self, proc: $crate::ProcId, addr: $crate::ChannelAddr) {
                self.inner.set_address(proc, addr);
            }

            /// Core's counters.
            pub fn stats(&self) -> $crate::Stats {
                self.inner.stats()
            }

            /// What peers make this proc hold right now, each figure bounded by a
            /// `Config` limit (see [`Held`](crate::Held)).
            pub fn held(&self) -> $crate::Held {
                self.inner.held()
            }

            /// Undeliverable returns that could not be handed to their sender (gone, or its
            /// queue full), including those core reported dropped.
            pub fn returns_dropped(&self) -> u64 {
                self.inner.returns_dropped()
            }

            /// Inbound connections refused or closed for misbehaving since the proc started,
            /// per reason (see [`Refusals`](crate::Refusals)). They are logged at most once per
            /// [`ProcOptions::refusal_log_interval`](crate::ProcOptions::refusal_log_interval)
            /// per reason.
            pub fn refusals(&self) -> $crate::Refusals {
                self.inner.refusals()
            }

            /// Connections open or being dialed now.
            pub fn connection_count(&self) -> usize {
                self.inner.connection_count()
            }

            /// Shuts down gracefully: core flushes what is in flight (or returns it to its
            /// senders), then every port closes (receivers drain and see `Closed`, actor loops
            /// end), every connection is flushed and closed, and every task of the proc ends.
            /// Each step is bounded by the core config's `shutdown_timeout`
            /// ([`ProcOptions::core`](crate::ProcOptions::core)); core returns what it could not
            /// flush when that much time has passed. Idempotent.
            pub async fn shutdown(&self) -> $crate::ShutdownReport {
                self.inner.shutdown().await
            }

            /// Stops at once, as a crash would: nothing in flight is flushed or returned, and
            /// every connection is dropped. Waits until all its tasks are gone and its address
            /// is free.
            pub async fn kill(&self) {
                self.inner.kill().await
            }
        }

        impl ::std::fmt::Debug for Proc {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "Proc({})", self.proc_id())
            }
        }
    };
}
