//! The procwire side of the transport scenarios: two procwire procs in one process, on
//! procwire-tokio ([`ProcwireBench::new`]) or procwire-smol ([`ProcwireBench::new_smol`]).
//! Both adapters share procwire-host's API (`Instance`, `PortRef`, `Actor`, ...); only their
//! `Proc` differs, behind [`AdapterProc`].
//!
//! Proc `bench_a` holds the caller-driven instance `client`; proc `bench_b` holds a spawned
//! echo actor and a caller-driven instance `sink`. Messages are `bytes::Bytes` on typed
//! ports (postcard: a length varint and the bytes, so a 64-byte payload is 65 bytes in the
//! envelope).
//!
//! * Round trip: `client` sends 64 bytes to the echo actor's mailbox; the actor sends them
//!   back to a port of `client` that it was given when it was spawned (so the reply port
//!   is not carried in every message, which would triple its size), and `client` waits for
//!   them. Data frames only flow from dialer to acceptor, so this uses two connections, one
//!   each way.
//! * Pipelined: `client` sends [`PIPELINE_N`] 64-byte messages to a port of `sink`; the same
//!   task drains that port concurrently (`tokio::join!`) until all have arrived.
//! * Bulk: the same with [`BULK_BURST`] messages of 1 MiB; also untyped
//!   ([`ProcwireBench::bulk_untyped`]: raw payload bytes, no postcard).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use bytes::Bytes;
use procwire_tokio::{
    Actor, ActorError, ActorHandle, ActorRef, ChannelAddr, ChannelTransport, Context, Instance,
    PortReceiver, PortRef, ProcError, ProcOptions, Stats,
};

use crate::{Error, Net, BULK, BULK_BURST, PIPELINE_N, SMALL};

/// Sends every message it gets back to one port.
struct Echo {
    reply: PortRef<Bytes>,
}

impl Actor for Echo {
    type Message = Bytes;

    async fn handle(&mut self, cx: &mut Context, msg: Bytes) -> Result<(), ActorError> {
        self.reply.send(cx, msg).await?;
        Ok(())
    }
}

/// What the scenarios need of an adapter's `Proc` (tokio's and smol's have the same
/// methods; this names them once).
// `ProcError` carries ids (fixed-capacity, a few hundred bytes); these are setup calls only,
// as in the adapters, which allow the same lint.
#[allow(clippy::result_large_err)]
pub trait AdapterProc: Sized {
    /// See `Proc::instance`.
    fn instance(&self, name: &str) -> Result<(Instance, ActorHandle), ProcError>;
    /// See `Proc::spawn`.
    fn spawn<A: Actor>(
        &self,
        name: &str,
        actor: A,
    ) -> Result<(ActorRef<A>, ActorHandle), ProcError>;
    /// See `Proc::stats`.
    fn stats(&self) -> Stats;
    /// See `Proc::shutdown`.
    fn shutdown(&self) -> impl Future<Output = ()>;
}

macro_rules! adapter_proc {
    ($proc:ty) => {
        impl AdapterProc for $proc {
            fn instance(&self, name: &str) -> Result<(Instance, ActorHandle), ProcError> {
                <$proc>::instance(self, name)
            }
            fn spawn<A: Actor>(
                &self,
                name: &str,
                actor: A,
            ) -> Result<(ActorRef<A>, ActorHandle), ProcError> {
                <$proc>::spawn(self, name, actor)
            }
            fn stats(&self) -> Stats {
                <$proc>::stats(self)
            }
            async fn shutdown(&self) {
                <$proc>::shutdown(self).await;
            }
        }
    };
}

adapter_proc!(procwire_tokio::Proc);
adapter_proc!(procwire_smol::Proc);

fn any_addr(net: Net) -> ChannelAddr {
    match net {
        Net::Unix => ChannelTransport::Unix.any(),
        Net::Tcp => ChannelTransport::Tcp.any(),
    }
}

/// Two procs and the participants of the three patterns.
pub struct ProcwireBench<P = procwire_tokio::Proc> {
    net: Net,
    a: P,
    b: P,
    client: Instance,
    reply_rx: PortReceiver<Bytes>,
    echo: PortRef<Bytes>,
    echo_handle: ActorHandle,
    // Kept alive: dropping it unbinds its ports.
    _sink: Instance,
    sink_ref: PortRef<Bytes>,
    sink_rx: PortReceiver<Bytes>,
    small: Bytes,
    bulk: Bytes,
}

impl ProcwireBench<procwire_tokio::Proc> {
    /// Stands up two procwire-tokio procs on `net` with default options (on the current
    /// runtime), and warms both links up.
    ///
    /// The default window (8192 messages, 32 MiB) is kept for the pipelined burst of
    /// 10 000: raising `window_msgs` above the burst made no measurable difference.
    pub async fn new(net: Net) -> Result<Self, Error> {
        Self::with_options(net, ProcOptions::default()).await
    }

    /// [`ProcwireBench::new`] with other proc options.
    pub async fn with_options(net: Net, options: ProcOptions) -> Result<Self, Error> {
        let a = procwire_tokio::Proc::direct_with(any_addr(net), "bench_a".into(), options.clone())
            .await?;
        let b = procwire_tokio::Proc::direct_with(any_addr(net), "bench_b".into(), options).await?;
        Self::from_procs(net, a, b).await
    }
}

impl ProcwireBench<procwire_smol::Proc> {
    /// Stands up two procwire-smol procs on `net` with default options, their tasks on
    /// `executor` (which the caller runs, on the thread that drives the scenarios), and
    /// warms both links up.
    pub async fn new_smol(net: Net, executor: &Arc<Executor<'static>>) -> Result<Self, Error> {
        let options = ProcOptions::default();
        let a = procwire_smol::Proc::direct_on(
            executor,
            any_addr(net),
            "bench_a".into(),
            options.clone(),
        )
        .await?;
        let b = procwire_smol::Proc::direct_on(executor, any_addr(net), "bench_b".into(), options)
            .await?;
        Self::from_procs(net, a, b).await
    }
}

impl<P: AdapterProc> ProcwireBench<P> {
    /// The scenario's participants on two running procs; warms both links up.
    pub async fn from_procs(net: Net, a: P, b: P) -> Result<Self, Error> {
        let (client, _) = a.instance("client")?;
        let (reply, reply_rx) = client.open_port::<Bytes>();
        let (echo, echo_handle) = b.spawn(
            "echo",
            Echo {
                reply: reply.port_ref(),
            },
        )?;
        let (sink, _) = b.instance("sink")?;
        let (sink_port, sink_rx) = sink.open_port::<Bytes>();
        let mut bench = ProcwireBench {
            net,
            a,
            b,
            client,
            reply_rx,
            echo: echo.port(),
            echo_handle,
            _sink: sink,
            sink_ref: sink_port.port_ref(),
            sink_rx,
            small: crate::payload(SMALL),
            bulk: crate::payload(BULK),
        };
        // Dial both links and settle them before anything is timed.
        bench.round_trips(16).await?;
        bench.pipelined_n(64).await?;
        Ok(bench)
    }

    /// The socket family.
    pub fn net(&self) -> Net {
        self.net
    }

    /// Core's counters of the client's proc (`bench_a`) and of the other (`bench_b`).
    pub fn stats(&self) -> (Stats, Stats) {
        (self.a.stats(), self.b.stats())
    }

    /// `n` round trips of a 64-byte message through the echo actor.
    pub async fn round_trips(&mut self, n: u64) -> Result<Duration, Error> {
        let t = Instant::now();
        for _ in 0..n {
            self.echo.send(&self.client, &self.small).await?;
            let back = self.reply_rx.recv().await?;
            debug_assert_eq!(back.len(), SMALL);
        }
        Ok(t.elapsed())
    }

    /// `n` round trips like [`ProcwireBench::round_trips`], each one timed into `out` (for
    /// percentiles).
    pub async fn round_trip_times(
        &mut self,
        n: usize,
        out: &mut Vec<Duration>,
    ) -> Result<(), Error> {
        for _ in 0..n {
            let t = Instant::now();
            self.echo.send(&self.client, &self.small).await?;
            let back = self.reply_rx.recv().await?;
            out.push(t.elapsed());
            debug_assert_eq!(back.len(), SMALL);
        }
        Ok(())
    }

    async fn pipelined_n(&mut self, n: usize) -> Result<(), Error> {
        let ProcwireBench {
            client,
            sink_ref,
            sink_rx,
            small,
            ..
        } = self;
        let send = async {
            for _ in 0..n {
                sink_ref.send(client, &*small).await?;
            }
            Ok::<_, Error>(())
        };
        let recv = async {
            for _ in 0..n {
                sink_rx.recv().await?;
            }
            Ok::<_, Error>(())
        };
        let (s, r) = tokio::join!(send, recv);
        s?;
        r
    }

    /// `bursts` bursts of [`PIPELINE_N`] 64-byte messages one way, each until all arrived.
    pub async fn pipelined(&mut self, bursts: u64) -> Result<Duration, Error> {
        let t = Instant::now();
        for _ in 0..bursts {
            self.pipelined_n(PIPELINE_N).await?;
        }
        Ok(t.elapsed())
    }

    /// `bursts` bursts of [`BULK_BURST`] 1 MiB messages one way, each until all arrived.
    pub async fn bulk(&mut self, bursts: u64) -> Result<Duration, Error> {
        let ProcwireBench {
            client,
            sink_ref,
            sink_rx,
            bulk,
            ..
        } = self;
        let t = Instant::now();
        for _ in 0..bursts {
            let send = async {
                for _ in 0..BULK_BURST {
                    sink_ref.send(client, &*bulk).await?;
                }
                Ok::<_, Error>(())
            };
            let recv = async {
                for _ in 0..BULK_BURST {
                    let m = sink_rx.recv().await?;
                    debug_assert_eq!(m.len(), BULK);
                }
                Ok::<_, Error>(())
            };
            let (s, r) = tokio::join!(send, recv);
            s?;
            r?;
        }
        Ok(t.elapsed())
    }

    /// [`ProcwireBench::bulk`] without serialization: raw payloads through
    /// `Instance::send_bytes` and `PortReceiver::recv_envelope` (the payload arrives as a
    /// slice of the received frame). Separates the transport's cost from postcard's.
    pub async fn bulk_untyped(&mut self, bursts: u64) -> Result<Duration, Error> {
        let ProcwireBench {
            client,
            sink_ref,
            sink_rx,
            bulk,
            ..
        } = self;
        let dest = sink_ref.port_id().clone();
        let t = Instant::now();
        for _ in 0..bursts {
            let send = async {
                for _ in 0..BULK_BURST {
                    client.send_bytes(&dest, bulk.clone()).await?;
                }
                Ok::<_, Error>(())
            };
            let recv = async {
                for _ in 0..BULK_BURST {
                    let m = sink_rx.recv_envelope().await?;
                    debug_assert_eq!(m.payload.len(), BULK);
                }
                Ok::<_, Error>(())
            };
            let (s, r) = tokio::join!(send, recv);
            s?;
            r?;
        }
        Ok(t.elapsed())
    }

    /// Stops the echo actor and shuts both procs down gracefully.
    pub async fn shutdown(self) {
        self.echo_handle.stop();
        let _ = self.echo_handle.wait().await;
        drop(self.client);
        drop(self._sink);
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}
