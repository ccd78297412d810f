//! [`Proc`] on tokio: the listener, the timer, and task bookkeeping.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use procwire_core::id::{ChannelAddr, Name, ProcId};
use procwire_core::proc::{Config, ConnId, Proc as CoreProc, Stats};
use procwire_core::time::Instant;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, Span};

use crate::actor::{spawn_actor, Actor};
use crate::engine::{BoxFuture, ConnCtl, Engine, Phase, Runtime};
use crate::error::ProcError;
use crate::instance::{ActorHandle, Instance};
use crate::net::{self, Listener, SocketFile};
use crate::sync::lock;
use crate::typed::PortRef;

/// A random 64-bit number (incarnations, seeds, generated names): std's randomly keyed
/// SipHash over the time, the process id and a counter.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// How a proc is set up.
#[derive(Clone, Debug)]
pub struct ProcOptions {
    /// The core machine's settings (frame limit, windows, timeouts, ...). Its
    /// `connect_timeout` also bounds each dial.
    pub core: Config,
    /// How long [`Proc::shutdown`] waits for core to flush or return what is in flight, and
    /// then for connection and actor tasks to end, before it stops them.
    pub shutdown_timeout: Duration,
    /// How many undeliverable returns an identity keeps before further ones are dropped
    /// (counted in [`Proc::returns_dropped`] and logged).
    pub returned_queue_len: usize,
}

impl Default for ProcOptions {
    fn default() -> Self {
        ProcOptions {
            core: Config::default(),
            shutdown_timeout: Duration::from_secs(10),
            returned_queue_len: 65_536,
        }
    }
}

/// What [`Proc::shutdown`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Core flushed or returned everything in flight within the timeout.
    pub drained: bool,
    /// Tasks that had to be aborted because they did not end within the timeout.
    pub aborted_tasks: usize,
}

/// The tokio side of the engine: clock, tasks, dialing, timer wake-ups.
struct TokioRt {
    handle: tokio::runtime::Handle,
    epoch: tokio::time::Instant,
    timer: Notify,
    /// Connection and actor tasks.
    tasks: Mutex<JoinSet<()>>,
    /// Listener and timer.
    services: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    span: Span,
    connect_timeout: Duration,
}

impl TokioRt {
    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        self.epoch
            .checked_add(Duration::from_micros(at.as_micros()))
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365))
    }

    fn spawn_service(&self, fut: BoxFuture) {
        let h = self.handle.spawn(fut.instrument(self.span.clone()));
        lock(&self.services).push(h);
    }

    /// Aborts the listener and timer and waits until they are gone.
    async fn stop_services(&self) {
        let handles = std::mem::take(&mut *lock(&self.services));
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
    }

    /// Waits up to `limit` for the remaining tasks, then aborts the rest. Returns how many
    /// were aborted.
    async fn join_tasks(&self, limit: Duration) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        let mut set = std::mem::take(&mut *lock(&self.tasks));
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(None) => return 0,
                Ok(Some(res)) => log_join(res),
                Err(_) => break,
            }
        }
        let left = set.len();
        set.shutdown().await;
        left
    }

    fn abort_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.tasks).abort_all();
        for h in lock(&self.services).iter() {
            h.abort();
        }
    }
}

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            tracing::error!(error = %e, "a proc task panicked");
        }
    }
}

impl Runtime for TokioRt {
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn spawn(&self, fut: BoxFuture) {
        let mut set = lock(&self.tasks);
        while let Some(res) = set.try_join_next() {
            log_join(res);
        }
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        set.spawn_on(fut.instrument(self.span.clone()), &self.handle);
    }

    fn dial(&self, engine: &Arc<Engine>, conn: ConnId, addr: ChannelAddr, ctl: Arc<ConnCtl>) {
        let span =
            tracing::info_span!(parent: &self.span, "conn", %conn, dir = "out", peer = %addr);
        let engine = engine.clone();
        let limit = self.connect_timeout;
        self.spawn(Box::pin(
            async move {
                let stream = match tokio::time::timeout(limit, net::connect(&addr)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "dial failed");
                        engine.closed(conn);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(limit = ?limit, "dial timed out");
                        engine.closed(conn);
                        return;
                    }
                };
                let (r, w) = stream.split();
                if !engine.connected(conn) {
                    return;
                }
                tracing::debug!("connected");
                let reader = net::reader_task(engine.clone(), conn, r, ctl.clone())
                    .instrument(Span::current());
                engine.runtime().spawn(Box::pin(reader));
                net::writer_task(engine, conn, w, ctl).await;
            }
            .instrument(span),
        ));
    }

    fn rearm_timer(&self) {
        self.timer.notify_one();
    }
}

struct ProcInner {
    engine: Arc<Engine>,
    rt: Arc<TokioRt>,
    addr: ChannelAddr,
    file: Mutex<Option<SocketFile>>,
    shutdown_timeout: Duration,
}

impl ProcInner {
    fn remove_file(&self) {
        if let Some(f) = lock(&self.file).take() {
            f.remove();
        }
    }
}

impl Drop for ProcInner {
    fn drop(&mut self) {
        self.engine.stop();
        self.rt.abort_all();
        self.remove_file();
    }
}

/// A proc: an addressable endpoint serving on one address, holding actor identities.
///
/// Cloning gives another handle on the same proc. The proc serves until
/// [`Proc::shutdown`] (graceful) or [`Proc::kill`] (abrupt), or until the last handle is
/// dropped, which stops it abruptly like `kill`. Instances and actors do not keep it alive.
#[derive(Clone)]
pub struct Proc {
    inner: Arc<ProcInner>,
}

impl Proc {
    /// Serves on `addr` (binding an `any()` address picks a free one) under the proc name
    /// `name`, dials peers on demand, and starts the machine.
    ///
    /// Must be called within a tokio runtime (with IO and time enabled).
    pub async fn direct(addr: ChannelAddr, name: String) -> Result<Proc, ProcError> {
        Self::direct_with(addr, name, ProcOptions::default()).await
    }

    /// [`Proc::direct`] with options.
    pub async fn direct_with(
        addr: ChannelAddr,
        name: String,
        options: ProcOptions,
    ) -> Result<Proc, ProcError> {
        let name = Name::new(&name).map_err(ProcError::BadName)?;
        let bound = net::bind(&addr)
            .await
            .map_err(|source| ProcError::Bind { addr, source })?;
        let id = ProcId::new(bound.addr.clone(), name);
        let incarnation = random_u64();
        let core = CoreProc::new(id.clone(), options.core.clone(), incarnation, random_u64());
        let span = tracing::info_span!(parent: None, "proc", id = %id);
        let rt = Arc::new(TokioRt {
            handle: tokio::runtime::Handle::current(),
            epoch: tokio::time::Instant::now(),
            timer: Notify::new(),
            tasks: Mutex::new(JoinSet::new()),
            services: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            span,
            connect_timeout: options.core.connect_timeout.into(),
        });
        let engine = Engine::new(core, rt.clone(), options.returned_queue_len);
        rt.spawn_service(Box::pin(listen(engine.clone(), rt.clone(), bound.listener)));
        rt.spawn_service(Box::pin(timer(engine.clone(), rt.clone())));
        rt.span
            .in_scope(|| tracing::info!(incarnation, "proc serving"));
        Ok(Proc {
            inner: Arc::new(ProcInner {
                engine,
                rt,
                addr: bound.addr,
                file: Mutex::new(bound.file),
                shutdown_timeout: options.shutdown_timeout,
            }),
        })
    }

    /// This proc's id: its bound address and name.
    pub fn proc_id(&self) -> &ProcId {
        self.inner.engine.id()
    }

    /// The address it serves on.
    pub fn addr(&self) -> &ChannelAddr {
        &self.inner.addr
    }

    fn check_running(&self) -> Result<(), ProcError> {
        match self.inner.engine.phase() {
            Phase::Running => Ok(()),
            _ => Err(ProcError::ShuttingDown),
        }
    }

    /// Reserves the root name `name` and returns a caller-driven [`Instance`] with the
    /// identity `ActorId(proc, name, 0)`, and a handle on it. A name already held in this
    /// proc is refused ([`RegistryError::Duplicate`](procwire_core::registry::RegistryError)).
    pub fn instance(&self, name: &str) -> Result<(Instance, ActorHandle), ProcError> {
        self.check_running()?;
        let engine = &self.inner.engine;
        let (id, returns) = engine.reserve_root(name)?;
        let inst = Instance::new(engine.clone(), id, returns, true);
        let handle = inst.handle();
        Ok((inst, handle))
    }

    /// Reserves the root name `name` and runs `actor` on `ActorId(proc, name, 0)`. Returns
    /// a reference to its mailbox (port [`ACTOR_PORT`](crate::ACTOR_PORT)) and a handle.
    pub fn spawn<A: Actor>(
        &self,
        name: &str,
        actor: A,
    ) -> Result<(PortRef<A::Message>, ActorHandle), ProcError> {
        self.check_running()?;
        let engine = &self.inner.engine;
        let (id, returns) = engine.reserve_root(name)?;
        spawn_actor(engine, id, returns, actor)
    }

    /// Dials `proc` at `addr` from now on instead of at the address in its id (a proxy, a
    /// tunnel, a NAT'd address).
    pub fn set_address(&self, proc: ProcId, addr: ChannelAddr) {
        self.inner.engine.set_address(proc, addr);
    }

    /// Core's counters.
    pub fn stats(&self) -> Stats {
        self.inner.engine.stats()
    }

    /// Undeliverable returns that could not be handed to their sender (gone, or its queue
    /// full), including those core reported dropped.
    pub fn returns_dropped(&self) -> u64 {
        self.inner.engine.returns_dropped()
    }

    /// Connections open or being dialed now.
    pub fn connection_count(&self) -> usize {
        self.inner.engine.connection_count()
    }

    /// Shuts down gracefully: core flushes what is in flight (or returns it to its senders),
    /// then every port closes (receivers drain and see `Closed`, actor loops end), every
    /// connection is flushed and closed, and every task of the proc ends. Bounded by
    /// [`ProcOptions::shutdown_timeout`] for each of the two waits. Idempotent.
    pub async fn shutdown(&self) -> ShutdownReport {
        let inner = &self.inner;
        let span = inner.rt.span.clone();
        async {
            tracing::info!("shutting down");
            inner.engine.begin_shutdown();
            let drained = tokio::time::timeout(inner.shutdown_timeout, inner.engine.drained())
                .await
                .is_ok();
            if !drained {
                tracing::warn!("in-flight messages were not settled in time");
            }
            // No new connections from here on; then close ports and flush connections.
            inner.rt.stop_services().await;
            inner.engine.stop();
            let aborted_tasks = inner.rt.join_tasks(inner.shutdown_timeout).await;
            inner.remove_file();
            tracing::info!(drained, aborted_tasks, "shut down");
            ShutdownReport {
                drained,
                aborted_tasks,
            }
        }
        .instrument(span)
        .await
    }

    /// Stops at once, as a crash would: nothing in flight is flushed or returned, and every
    /// connection is dropped. Waits until all its tasks are gone and its address is free.
    pub async fn kill(&self) {
        let inner = &self.inner;
        inner.rt.closed.store(true, Ordering::SeqCst);
        inner.rt.stop_services().await;
        let mut set = std::mem::take(&mut *lock(&inner.rt.tasks));
        set.shutdown().await;
        inner.engine.stop();
        inner.remove_file();
        inner.rt.span.in_scope(|| tracing::info!("killed"));
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proc({})", self.proc_id())
    }
}

/// Accepts inbound connections and starts their tasks.
async fn listen(engine: Arc<Engine>, rt: Arc<TokioRt>, mut listener: Listener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let ctl = ConnCtl::new();
                let (r, w) = stream.split();
                let conn = engine.accepted(ctl.clone());
                let span = tracing::info_span!(parent: &rt.span, "conn", %conn, dir = "in", %peer);
                span.in_scope(|| tracing::debug!("accepted"));
                rt.spawn(Box::pin(
                    net::reader_task(engine.clone(), conn, r, ctl.clone()).instrument(span.clone()),
                ));
                rt.spawn(Box::pin(
                    net::writer_task(engine.clone(), conn, w, ctl).instrument(span),
                ));
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The machine's one timer: sleeps until `poll_timeout()`, re-armed whenever a turn moves the
/// deadline earlier.
async fn timer(engine: Arc<Engine>, rt: Arc<TokioRt>) {
    let sleep = tokio::time::sleep_until(rt.epoch);
    tokio::pin!(sleep);
    loop {
        match engine.arm_timer() {
            Some(at) => {
                sleep.as_mut().reset(rt.deadline(at));
                tokio::select! {
                    () = &mut sleep => engine.fire_timer(),
                    () = rt.timer.notified() => {}
                }
            }
            None => rt.timer.notified().await,
        }
    }
}
