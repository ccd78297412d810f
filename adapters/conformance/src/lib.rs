//! # procwire-conformance
//!
//! One suite of adapter-independent scenarios, written once against the small [`Adapter`] /
//! [`TestProc`] traits and run against every adapter:
//!
//! * `tests/smol.rs`: both procs on procwire-smol, everything on one thread (a fresh
//!   `async_executor::Executor` per test, run by `async_io::block_on`).
//! * `tests/tokio.rs`: both procs on procwire-tokio (a two-worker multi-threaded runtime per
//!   test).
//!
//! Those two are the same list of tests, defined once by [`suite!`].
//! * `tests/interop.rs`: one proc on each adapter, in both directions, with the smol
//!   executor on its own thread: they speak the same wire protocol from core.
//! * `tests/faults.rs`: connections cut mid-stream by the fault-injecting [`proxy`] (a tokio
//!   one; tokio is a dependency of this test crate only, never of procwire-smol), between
//!   procs of each adapter and across them, over TCP and Unix sockets.
//! * `tests/hostile.rs`: raw connections that misbehave ([`hostile`]: garbage, HTTP, bad
//!   preambles, over-limit frames, hellos for another proc, silent connections by the
//!   hundred, connect/close storms) against procs of each adapter over Unix socket files and
//!   TCP, each while a legitimate session keeps delivering in order.
//! * `tests/unix_mode.rs`: socket files are owner-only whatever the umask, or the mode asked
//!   for (the test process runs with umask 000).
//!
//! Every scenario takes the two procs' adapters separately, so the same code checks one
//! adapter against itself and the two against each other. Timeouts and sleeps use async-io
//! timers, which work under any executor. Logs go to stderr when `PROCWIRE_LOG` is set.
#![allow(clippy::result_large_err)]

pub mod actors;
pub mod adapters;
pub mod addresses;
pub mod hostile;
pub mod link_events;
pub mod monitors;
pub mod netns;
pub mod proxy;
pub mod scenarios;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use procwire_smol::{
    Actor, ActorError, ActorHandle, ActorId, ActorRef, ChannelAddr, Context, Held, Instance,
    LinkEvents, OncePortRef, PortRef, ProcError, ProcId, ProcOptions, Refusals, ShutdownReport,
    Stats, UnixAddr,
};
use serde::{Deserialize, Serialize};

pub use adapters::{SmolAdapter, TokioAdapter};
/// The transports, for [`suite!`].
pub use procwire_smol::ChannelTransport;

/// A proc of some adapter, seen through the API every adapter's `Proc` has.
pub trait TestProc: Clone + Send + Sync + 'static {
    /// `Proc::instance`.
    fn instance(&self, name: &str) -> Result<(Instance, ActorHandle), ProcError>;
    /// `Proc::spawn`.
    fn spawn<A: Actor>(
        &self,
        name: &str,
        actor: A,
    ) -> Result<(ActorRef<A>, ActorHandle), ProcError>;
    /// `Proc::proc_id`.
    fn proc_id(&self) -> &ProcId;
    /// `Proc::addr`.
    fn addr(&self) -> &ChannelAddr;
    /// `Proc::set_address`.
    fn set_address(&self, proc: ProcId, addr: ChannelAddr);
    /// `Proc::link_events`.
    fn link_events(&self) -> LinkEvents;
    /// `Proc::stats`.
    fn stats(&self) -> Stats;
    /// `Proc::connection_count`.
    fn connection_count(&self) -> usize;
    /// `Proc::refusals`.
    fn refusals(&self) -> Refusals;
    /// `Proc::held`.
    fn held(&self) -> Held;
    /// `Proc::shutdown`.
    fn shutdown(&self) -> impl Future<Output = ShutdownReport> + Send;
    /// `Proc::kill`.
    fn kill(&self) -> impl Future<Output = ()> + Send;
}

/// How to stand procs up on one adapter, and how to see its tasks.
pub trait Adapter: Clone + Send + Sync + 'static {
    /// The adapter's `Proc`.
    type Proc: TestProc;
    /// For messages.
    fn name(&self) -> &'static str;
    /// `Proc::direct_with`.
    fn start(
        &self,
        addr: ChannelAddr,
        name: &str,
        options: ProcOptions,
    ) -> impl Future<Output = Result<Self::Proc, ProcError>> + Send;
    /// Tasks alive on the executor the procs use (an upper bound; 0 or 1 where only
    /// emptiness can be observed).
    fn live_tasks(&self) -> usize;
}

/// Every transport, for scenarios that run on each.
pub const TRANSPORTS: [ChannelTransport; 3] = [
    ChannelTransport::Unix,
    ChannelTransport::Tcp,
    ChannelTransport::Local,
];

/// Logs to stderr when `PROCWIRE_LOG` is set (`trace`, `debug`, `info`, `warn`).
pub fn init_logging() {
    let Ok(level) = std::env::var("PROCWIRE_LOG") else {
        return;
    };
    let level = level.parse().unwrap_or(tracing::Level::DEBUG);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_test_writer()
        .try_init();
}

/// Options for tests: frames up to 16 MiB, short shutdown bounds.
pub fn options() -> ProcOptions {
    let mut o = ProcOptions::default();
    o.core.max_frame_len = 16 * 1024 * 1024;
    o.core.shutdown_timeout = Duration::from_secs(3).into();
    o
}

/// Sleeps for `d` (an async-io timer: works under any executor).
pub async fn sleep(d: Duration) {
    async_io::Timer::after(d).await;
}

/// Fails the test if `fut` takes longer than `secs` seconds.
pub async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    let limit = async {
        sleep(Duration::from_secs(secs)).await;
        None
    };
    match futures_lite::future::or(async { Some(fut.await) }, limit).await {
        Some(v) => v,
        None => panic!("timed out after {secs}s: {what}"),
    }
}

/// Whether `fut` is still pending after `d`.
pub async fn still_pending_after<F: Future>(d: Duration, fut: F) -> bool {
    futures_lite::future::or(
        async {
            fut.await;
            false
        },
        async {
            sleep(d).await;
            true
        },
    )
    .await
}

/// A concrete address of `transport` that nobody uses yet and that can be bound again after
/// its proc is gone (for restart tests).
pub fn fixed_addr(transport: ChannelTransport) -> ChannelAddr {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    match transport {
        ChannelTransport::Tcp => {
            // Let the OS pick a free port, then release it for the proc to bind.
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
            ChannelAddr::Tcp(l.local_addr().expect("probe addr"))
        }
        ChannelTransport::Unix => {
            let path = std::env::temp_dir().join(format!(
                "procwire-conf-{}-{n}-{:x}.sock",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
            ));
            let _ = std::fs::remove_file(&path);
            ChannelAddr::Unix(
                UnixAddr::path(path.to_str().expect("utf-8 temp dir")).expect("path fits"),
            )
        }
        ChannelTransport::Local => {
            ChannelAddr::Local(2_000_000 + u64::from(std::process::id()) * 1000 + n)
        }
    }
}

/// A payload whose first 8 bytes are `seq` and the rest a pattern derived from it.
pub fn numbered_payload(seq: u64, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((8..len).map(|i| (i as u64).wrapping_mul(31).wrapping_add(seq) as u8));
    v.truncate(len.max(8));
    Bytes::from(v)
}

/// Checks a payload made by [`numbered_payload`]; returns its sequence number.
pub fn check_payload(p: &[u8], len: usize) -> u64 {
    assert_eq!(p.len(), len.max(8), "payload length");
    let seq = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
    for (i, b) in p.iter().enumerate().skip(8) {
        assert_eq!(
            *b,
            (i as u64).wrapping_mul(31).wrapping_add(seq) as u8,
            "byte {i} of message {seq}"
        );
    }
    seq
}

/// What the echo actor takes.
#[derive(Serialize, Deserialize, Debug)]
pub enum EchoMsg {
    /// Reply with the same sequence number and payload length.
    Ping {
        /// Echoed back.
        seq: u64,
        /// Its length is echoed back.
        payload: Vec<u8>,
        /// Where the reply goes.
        reply_to: PortRef<Pong>,
    },
    /// Reply once.
    Once {
        /// Echoed back.
        value: u64,
        /// Where the reply goes.
        reply_to: OncePortRef<u64>,
    },
    /// Fail the actor with this text.
    Fail(String),
    /// Panic in the handler.
    Panic,
    /// Stop the actor.
    Stop,
}

/// The echo actor's reply.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Pong {
    /// The ping's sequence number.
    pub seq: u64,
    /// The ping's payload length.
    pub len: usize,
    /// The echo actor.
    pub from: ActorId,
}

/// Replies to pings.
#[derive(Default)]
pub struct Echo;

impl Actor for Echo {
    type Message = EchoMsg;

    async fn handle(&mut self, cx: &mut Context, msg: EchoMsg) -> Result<(), ActorError> {
        match msg {
            EchoMsg::Ping {
                seq,
                payload,
                reply_to,
            } => {
                let pong = Pong {
                    seq,
                    len: payload.len(),
                    from: cx.actor_id().clone(),
                };
                reply_to.send(cx, pong).await?;
            }
            EchoMsg::Once { value, reply_to } => reply_to.send(cx, value).await?,
            EchoMsg::Fail(why) => return Err(ActorError::msg(why)),
            EchoMsg::Panic => panic!("asked to panic"),
            EchoMsg::Stop => cx.stop(),
        }
        Ok(())
    }
}

/// Defines the whole suite as `#[test]`s run by `$run` (such as
/// [`adapters::run_smol`] or [`adapters::run_tokio`]: a function that takes a closure from an
/// adapter to the test's future, and runs it): every two-proc scenario with both procs on that
/// adapter, in a module per transport (`unix`, `tcp`, `local`), plus the scenarios that mix
/// transports.
#[macro_export]
macro_rules! suite {
    ($run:path) => {
        $crate::suite!(@per_transport $run,
            unix => $crate::ChannelTransport::Unix,
            tcp => $crate::ChannelTransport::Tcp,
            local => $crate::ChannelTransport::Local,
        );

        /// Deployable addresses (TCP only).
        mod addresses {
            #[test]
            fn bind_any_advertise_loopback() {
                $run(|x| async move {
                    $crate::addresses::bind_any_advertise_loopback(&x, &x).await
                });
            }

            #[test]
            fn host_names_are_resolved_when_dialing() {
                $run(|x| async move {
                    $crate::addresses::host_names_are_resolved_when_dialing(&x, &x).await
                });
            }

            #[test]
            fn same_host_tcp_gets_the_congestion_control_asked_for() {
                $run(|x| async move {
                    $crate::addresses::same_host_tcp_gets_the_congestion_control_asked_for(&x, &x)
                        .await
                });
            }

            #[test]
            fn unusable_advertised_addresses_are_refused() {
                $run(|x| async move {
                    $crate::addresses::unusable_advertised_addresses_are_refused(&x).await
                });
            }
        }

        /// `a` on TCP, `b` on a Unix socket file.
        #[test]
        fn dropping_every_handle_stops_the_proc() {
            $run(|x| async move {
                $crate::scenarios::dropping_every_handle_stops_the_proc(
                    &x,
                    &x,
                    $crate::ChannelTransport::Tcp,
                    $crate::ChannelTransport::Unix,
                )
                .await
            });
        }
    };
    (@per_transport $run:path, $($module:ident => $transport:expr),* $(,)?) => {$(
        mod $module {
            $crate::suite!(@pair $run, $transport,
                echo_round_trips_and_once_ports,
                ordered_delivery_of_all_sizes,
                missing_destinations_come_back,
                oversized_fails_at_sender,
                peer_restart_returns_in_flight,
                window_full_blocks_then_resumes,
                pipelined_sends_wait_for_window,
                a_slow_consumer_holds_its_sender_back,
                shutdown_leaks_no_tasks_and_closes_everything,
                child_ids_count_up_per_root,
                actor_lifecycle_and_failures,
                stale_refs_never_reach_a_new_holder,
                wrong_types_are_refused,
                sends_in_a_row_are_batched_without_delay,
                receives_of_every_kind_interleave_in_order,
            );
            $crate::suite!(@links $run, $transport,
                peer_going_away_and_coming_back,
                dead_addresses_and_refusals_are_reported,
                peers_that_dial_in_are_reported,
                a_link_over_the_peers_connection_is_reported,
            );
            $crate::suite!(@monitors $run, $transport,
                monitors_report_each_way_an_actor_goes,
            );
            $crate::suite!(@actors $run, $transport,
                several_message_types_reach_their_handlers,
                stopping_a_parent_stops_its_children_first,
                a_child_failure_fails_its_parent_by_default,
                a_supervisor_handles_its_child_failure,
                instances_stop_their_children_and_shutdown_ends_trees,
            );
            $crate::suite!(@single $run, $transport,
                instance_sleep_and_timeout,
                duplicate_root_names_and_bad_names_are_refused,
                shutdown_returns_what_cannot_be_delivered,
                dead_peer_returns_with_the_dial_error,
            );
        }
    )*};
    (@pair $run:path, $transport:expr, $($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            $run(|x| async move { $crate::scenarios::$scenario(&x, &x, $transport).await });
        }
    )*};
    (@links $run:path, $transport:expr, $($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            $run(|x| async move { $crate::link_events::$scenario(&x, &x, $transport).await });
        }
    )*};
    (@monitors $run:path, $transport:expr, $($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            $run(|x| async move { $crate::monitors::$scenario(&x, &x, $transport).await });
        }
    )*};
    (@actors $run:path, $transport:expr, $($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            $run(|x| async move { $crate::actors::$scenario(&x, &x, $transport).await });
        }
    )*};
    (@single $run:path, $transport:expr, $($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            $run(|x| async move { $crate::scenarios::$scenario(&x, $transport).await });
        }
    )*};
}
