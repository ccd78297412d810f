//! [`HostedProc`]: a proc served on a [`Runtime`]: binding, the listener loop, the single
//! timer, dialing, task bookkeeping and shutdown. The adapters' `Proc` types are thin
//! wrappers around it.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::future::{poll_fn, Future};
use std::hash::{BuildHasher, Hasher};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use procwire_core::auth::Cookie;
use procwire_core::envelope::RefuseReason;
use procwire_core::id::{ChannelAddr, Name, ProcId};
use procwire_core::proc::{
    Config, ConnError, ConnId, DialError, DialErrorKind, Event, Proc as CoreProc, Stats,
};
use procwire_core::registry::PortKind;
use procwire_core::time::{Duration as CoreDuration, Instant};
use tracing::{Instrument, Span};

use crate::actor::ACTOR_PORT;
use crate::actor::{spawn_actor, Actor};
use crate::engine::{ConnCtl, Engine, Hooks, Phase};
use crate::error::{AdvertiseError, ProcError};
use crate::instance::{ActorHandle, Instance};
use crate::links::{LinkError, LinkEvents, Links};
use crate::local;
use crate::monitor::{self, MonitorMsg, Monitors, ProcServices, MONITOR_SERVICE};
use crate::net::{self, BoundListener, SocketFile};
use crate::refusals::{LogLine, RefusalLog, RefusalReason, Refusals};
use crate::runtime::{BoxFuture, Connection, Runtime, TcpSetup, Timer};
use crate::sync::{lock, Signal};
use crate::tasks::TaskSet;
use crate::typed::PortReceiver;

/// A random 64-bit number (incarnations, seeds, generated names): std's randomly keyed
/// SipHash over the time, the process id and a counter. Not for cryptography.
pub fn random_u64() -> u64 {
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

/// How much longer than core's `shutdown_timeout` shutdown waits for core to report it
/// done.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// How a proc is set up.
#[derive(Clone, Debug)]
pub struct ProcOptions {
    /// The core machine's settings (frame limit, windows, timeouts, ...), the one place
    /// for every timeout: `connect_timeout` also bounds each dial, and `shutdown_timeout`
    /// bounds each step of `Proc::shutdown` (monitors told, core flushing or returning
    /// what is in flight, then connection and actor tasks ending before they are stopped).
    pub core: Config,
    /// How many undeliverable returns an identity keeps before further ones are dropped
    /// (counted in `Proc::returns_dropped` and logged).
    pub returned_queue_len: usize,
    /// Permission bits of the socket file of a `unix:/path` address, set whatever the
    /// process umask is. The default, `0o600`, lets only the owner (and root) connect;
    /// widen it (say `0o660` with a shared group) for other local users. Bits beyond
    /// `0o777` are refused at bind.
    ///
    /// Abstract names (`unix:@name`, and what `ChannelTransport::Unix.any()` binds) have
    /// no file and no permissions: any local user in the same network namespace can
    /// connect to them. Where that matters, bind a path in a directory only the intended
    /// users can reach, and/or configure a shared-secret cookie ([`ProcOptions::with_cookie`]).
    pub unix_mode: u32,
    /// Inbound connections refused or closed for misbehaving are counted per reason
    /// (`Proc::refusals`) and logged at most once per this interval per reason, with the
    /// count since the previous line (the first of a reason is logged at once; what is
    /// pending when the proc stops is logged then). Each connection's details are at
    /// `debug` level.
    pub refusal_log_interval: CoreDuration,
    /// The address this proc's id carries, and so the one peers dial, when it is not the
    /// bound address: bind `tcp:0.0.0.0:7000` (or `tcp:[::]:0`) and advertise
    /// `tcp:node7.example:7000` or `tcp:10.1.2.3:7000`, or advertise the address of a
    /// proxy or port forward in front of the proc. `None` (the default) advertises the
    /// bound address.
    ///
    /// **Port 0** in a TCP advertised address (either form) is filled in with the port the
    /// proc bound: bind `tcp:0.0.0.0:0`, advertise `tcp:10.1.2.3:0`, and the id says
    /// `tcp:10.1.2.3:<bound port>`. Any other port is advertised as given (a port forward
    /// may use another port). The advertised address must name one endpoint: `unix:@`,
    /// `local:0` and unspecified IPs (`0.0.0.0`, `::`) are refused
    /// ([`ProcError::Advertise`]), and so is port 0 when the proc bound no TCP port.
    ///
    /// Peers check a hello by proc *name* only, so a proc answers whatever address it was
    /// reached by. [`HostedProc::addr`] stays the bound address.
    pub advertise: Option<ChannelAddr>,
    /// The TCP congestion control of connections whose two ends are on this host (the
    /// peer's address is a loopback address or this end's own), dialed or accepted; other
    /// TCP connections, and every connection when this is `None`, keep the system's
    /// (`net.ipv4.tcp_congestion_control` on Linux). Linux only; ignored elsewhere.
    ///
    /// The default is `reno`, which every Linux kernel has and lets any user set. Between
    /// two procs on one host there is no network to share, and the system's algorithm can
    /// cost throughput there: BBR, the default on many hosts, paces every packet by its
    /// estimate of the path's bandwidth, which on loopback is the CPU's own speed, and
    /// measured on one 2-core VM it held a 1 MiB bulk transfer over loopback at
    /// 3.4–4.1 GB/s where `reno` gave 7.7–8.8 GB/s (see the benches README).
    ///
    /// A name the kernel refuses fails [`HostedProc::start`] with
    /// [`ProcError::TcpCongestion`].
    pub same_host_tcp_congestion: Option<String>,
}

impl Default for ProcOptions {
    fn default() -> Self {
        ProcOptions {
            core: Config::default(),
            returned_queue_len: 65_536,
            unix_mode: net::DEFAULT_UNIX_MODE,
            refusal_log_interval: CoreDuration::from_secs(10),
            advertise: None,
            same_host_tcp_congestion: Some("reno".to_string()),
        }
    }
}

impl ProcOptions {
    /// How this proc sets up its TCP streams (see
    /// [`ProcOptions::same_host_tcp_congestion`]); a program that opens its own sockets
    /// beside a proc's can set them up alike.
    pub fn tcp_setup(&self) -> TcpSetup {
        TcpSetup::new(self.same_host_tcp_congestion.as_deref())
    }

    /// These options with `cookie` as the shared secret of every link (`core.cookie`): only
    /// procs holding the same cookie can open sessions with this one, or be sent to by it.
    /// It authenticates links; it does not encrypt them (see `procwire_core::auth`). The
    /// proc's seed and incarnation come from [`random_u64`], which is keyed from the OS's
    /// randomness, as the cookie handshake requires.
    pub fn with_cookie(mut self, cookie: Cookie) -> Self {
        self.core.cookie = Some(cookie);
        self
    }
}

/// What `Proc::shutdown` achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Core flushed or returned everything in flight within the timeout.
    pub drained: bool,
    /// Tasks that had to be aborted because they did not end within the timeout.
    pub aborted_tasks: usize,
}

/// `fut`, or `None` if `limit` passes first (measured with a fresh timer of `rt`).
pub async fn timeout<R: Runtime, F: Future>(rt: &R, limit: Duration, fut: F) -> Option<F::Output> {
    let mut timer = rt.timer();
    race_timer(&mut timer, rt.now().saturating_add(limit.into()), fut).await
}

/// Sleeps for `d` on `rt`'s clock.
pub async fn sleep<R: Runtime>(rt: &R, d: Duration) {
    let mut timer = rt.timer();
    race_timer(
        &mut timer,
        rt.now().saturating_add(d.into()),
        std::future::pending::<()>(),
    )
    .await;
}

/// `fut`, or `None` once `timer` reaches `deadline`.
pub(crate) async fn race_timer<F: Future>(
    timer: &mut dyn Timer,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    timer.reset(deadline);
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        timer.poll_elapsed(cx).map(|()| None)
    })
    .await
}

/// The engine's hooks on a runtime: clock, tasks, dialing, timer wake-ups.
struct Driver<R: Runtime> {
    rt: R,
    /// Connection and actor tasks.
    tasks: Arc<TaskSet>,
    /// Listener and timer.
    services: Arc<TaskSet>,
    timer: Signal,
    span: Span,
    connect_timeout: Duration,
    /// How TCP streams are set up (see [`ProcOptions::same_host_tcp_congestion`]).
    tcp: TcpSetup,
    /// Counts and rate-limits the log of refused inbound connections.
    refusals: Mutex<RefusalLog>,
    /// Connections this proc dialed (their failures are not inbound refusals).
    dialed: Arc<Mutex<HashSet<ConnId>>>,
    /// Link events and monitors, shared with every instance.
    svc: Arc<ProcServices>,
}

impl<R: Runtime> Driver<R> {
    fn spawn_in(&self, set: &Arc<TaskSet>, fut: BoxFuture) {
        if let Some(task) = set.track(fut) {
            self.rt.spawn(task);
        }
    }

    fn spawn_service(&self, fut: BoxFuture) {
        self.spawn_in(&self.services, Box::pin(fut.instrument(self.span.clone())));
    }

    /// Aborts the listener and timer and waits until they are gone.
    async fn stop_services(&self) {
        self.services.abort_all();
        self.services.idle().await;
    }

    /// Waits up to `limit` for the remaining tasks, then aborts the rest. Returns how many
    /// were aborted.
    async fn join_tasks(&self, limit: Duration) -> usize {
        self.tasks.close();
        if timeout(&self.rt, limit, self.tasks.idle()).await.is_some() {
            return 0;
        }
        let left = self.tasks.abort_all();
        self.tasks.idle().await;
        left
    }

    fn abort_all(&self) {
        self.tasks.abort_all();
        self.services.abort_all();
    }

    /// Counts an inbound connection refused or closed for `reason`; logs what is due.
    fn count_refusal(&self, reason: RefusalReason) {
        let lines = lock(&self.refusals).record(self.rt.now(), reason);
        self.log_refusals(&lines);
    }

    /// Logs the refusals still pending (when the proc stops).
    fn flush_refusals(&self) {
        let lines = lock(&self.refusals).flush(self.rt.now());
        self.log_refusals(&lines);
    }

    fn log_refusals(&self, lines: &[LogLine]) {
        if lines.is_empty() {
            return;
        }
        self.span.in_scope(|| {
            for l in lines {
                tracing::info!(
                    reason = %l.reason,
                    count = l.count,
                    total = l.total,
                    "refused inbound connections (count since the last line for this reason)"
                );
            }
        });
    }
}

impl<R: Runtime> Hooks for Driver<R> {
    fn now(&self) -> Instant {
        self.rt.now()
    }

    fn timer(&self) -> Box<dyn crate::runtime::Timer> {
        Box::new(self.rt.timer())
    }

    fn spawn(&self, fut: BoxFuture) {
        self.spawn_in(&self.tasks, Box::pin(fut.instrument(self.span.clone())));
    }

    fn dial(&self, engine: &Arc<Engine>, conn: ConnId, addr: ChannelAddr, ctl: Arc<ConnCtl>) {
        let span =
            tracing::info_span!(parent: &self.span, "conn", %conn, dir = "out", peer = %addr);
        let engine = engine.clone();
        let dialing = Dialing {
            limit: self.connect_timeout,
            tcp: self.tcp.clone(),
        };
        let rt = self.rt.clone();
        lock(&self.dialed).insert(conn);
        self.svc.links.dialing(conn, addr.clone());
        let dialed = self.dialed.clone();
        let links = self.svc.links.clone();
        let fut = async move {
            dial_conn(rt, engine, conn, addr, ctl, dialing, links).await;
            lock(&dialed).remove(&conn);
        };
        self.spawn_in(&self.tasks, Box::pin(fut.instrument(span)));
    }

    fn rearm_timer(&self) {
        self.timer.notify();
    }

    fn core_event(&self, ev: &Event) {
        self.svc.links.core_event(ev);
    }

    fn connection_failed(&self, conn: ConnId, error: &ConnError) {
        if lock(&self.dialed).contains(&conn) {
            tracing::info!(%conn, %error, "connection failed");
            return;
        }
        tracing::debug!(%conn, %error, "inbound connection failed");
        self.count_refusal(RefusalReason::from_conn_error(error));
    }

    fn refused(&self, conn: ConnId, reason: RefuseReason) {
        tracing::debug!(%conn, %reason, "session refused");
        self.count_refusal(RefusalReason::from_refuse(&reason));
    }
}

/// Core's account of an OS dial error: its kind, and the OS's words.
fn dial_error(e: &std::io::Error) -> DialError {
    use std::io::ErrorKind as K;
    let kind = match e.kind() {
        K::ConnectionRefused => DialErrorKind::Refused,
        K::NotFound | K::AddrNotAvailable => DialErrorKind::NotFound,
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => DialErrorKind::Unreachable,
        K::TimedOut => DialErrorKind::TimedOut,
        K::PermissionDenied => DialErrorKind::Denied,
        _ => DialErrorKind::Other,
    };
    DialError::new(kind, &e.to_string())
}

/// How a dial goes: its time limit, and how a TCP stream is set up.
struct Dialing {
    limit: Duration,
    tcp: TcpSetup,
}

/// Connects `conn` to `addr` within `dialing.limit`, then runs its reader and writer. Tells
/// `links` how the dial went before the engine hears of it.
async fn dial_conn<R: Runtime>(
    rt: R,
    engine: Arc<Engine>,
    conn: ConnId,
    addr: ChannelAddr,
    ctl: Arc<ConnCtl>,
    Dialing { limit, tcp }: Dialing,
    links: Arc<Links>,
) {
    let failed = match timeout(&rt, limit, connect(&rt, &addr, &tcp)).await {
        Some(Ok(stream)) => {
            links.dial_connected(conn);
            if !engine.connected(conn) {
                links.ended(conn, LinkError::ClosedHere);
                return;
            }
            tracing::debug!("connected");
            let (reader, writer) = net::conn_tasks(&engine, conn, stream, ctl, links);
            engine
                .runtime()
                .spawn(Box::pin(reader.instrument(Span::current())));
            writer.await;
            return;
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "dial failed");
            (LinkError::io(&e), dial_error(&e))
        }
        None => {
            tracing::debug!(limit = ?limit, "dial timed out");
            let msg = format!("no connection within {limit:?}");
            let error = DialError::new(DialErrorKind::TimedOut, &msg);
            (LinkError::DialTimedOut, error)
        }
    };
    links.ended(conn, failed.0);
    engine.dial_failed(conn, failed.1);
}

/// Connects to `addr` on any transport, resolving a host name first and trying each of its
/// addresses in the resolver's order.
async fn connect<R: Runtime>(
    rt: &R,
    addr: &ChannelAddr,
    tcp: &TcpSetup,
) -> std::io::Result<Connection> {
    if addr.is_any() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} names no particular endpoint"),
        ));
    }
    match addr {
        ChannelAddr::Local(id) => local::connect(*id),
        ChannelAddr::TcpHost { host, port } => {
            let ips = rt.resolve(host.as_str(), *port).await?;
            let mut last = None;
            for ip in ips {
                match rt.connect(&ChannelAddr::Tcp(ip), tcp).await {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        tracing::debug!(%ip, error = %e, "resolved address refused");
                        last = Some(e);
                    }
                }
            }
            Err(last.unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{addr} resolved to no address"),
                )
            }))
        }
        _ => rt.connect(addr, tcp).await,
    }
}

/// Binds `addr`, resolving a host name on the runtime first.
async fn bind<R: Runtime>(
    rt: &R,
    addr: &ChannelAddr,
    options: &ProcOptions,
) -> std::io::Result<net::Bound> {
    match addr {
        ChannelAddr::TcpHost { host, port } => {
            let ips = rt.resolve(host.as_str(), *port).await?;
            net::bind_resolved(addr, &ips)
        }
        _ => net::bind(addr, options.unix_mode),
    }
}

/// The address a proc bound at `bound` puts in its id (see [`ProcOptions::advertise`]).
pub(crate) fn advertised_addr(
    bound: &ChannelAddr,
    advertise: Option<&ChannelAddr>,
) -> Result<ChannelAddr, ProcError> {
    let Some(asked) = advertise else {
        return Ok(bound.clone());
    };
    let refuse = |error| ProcError::Advertise {
        addr: asked.clone(),
        error,
    };
    let addr = match (asked.tcp_port(), bound.tcp_port()) {
        (Some(0), Some(port)) => asked.with_tcp_port(port),
        (Some(0), None) => return Err(refuse(AdvertiseError::NoBoundPort)),
        _ => asked.clone(),
    };
    let unspecified = matches!(&addr, ChannelAddr::Tcp(sa) if sa.ip().is_unspecified());
    if addr.is_any() || unspecified {
        return Err(refuse(AdvertiseError::NotConcrete));
    }
    Ok(addr)
}

struct ProcInner<R: Runtime> {
    engine: Arc<Engine>,
    driver: Arc<Driver<R>>,
    addr: ChannelAddr,
    file: Mutex<Option<SocketFile>>,
    shutdown_timeout: Duration,
}

impl<R: Runtime> ProcInner<R> {
    fn remove_file(&self) {
        if let Some(f) = lock(&self.file).take() {
            f.remove();
        }
    }
}

impl<R: Runtime> Drop for ProcInner<R> {
    fn drop(&mut self) {
        self.engine.stop();
        self.driver.abort_all();
        self.driver.svc.close();
        self.remove_file();
    }
}

/// A proc served on runtime `R`: an addressable endpoint serving on one address, holding
/// actor identities. The adapters' `Proc` types wrap one; their docs describe the behaviour.
///
/// Cloning gives another handle on the same proc. The proc serves until
/// [`HostedProc::shutdown`] (graceful) or [`HostedProc::kill`] (abrupt), or until the last
/// handle is dropped, which stops it abruptly like `kill`. Instances and actors do not keep it
/// alive.
pub struct HostedProc<R: Runtime> {
    inner: Arc<ProcInner<R>>,
}

impl<R: Runtime> Clone for HostedProc<R> {
    fn clone(&self) -> Self {
        HostedProc {
            inner: self.inner.clone(),
        }
    }
}

impl<R: Runtime> HostedProc<R> {
    /// Serves on `addr` (binding an `any()` address picks a free one) under the proc name
    /// `name` with runtime `rt`, dials peers on demand, and starts the machine.
    pub async fn start(
        rt: R,
        addr: ChannelAddr,
        name: String,
        options: ProcOptions,
    ) -> Result<Self, ProcError> {
        let name = Name::new(&name).map_err(ProcError::BadName)?;
        let tcp = options.tcp_setup();
        tcp.check().map_err(|source| ProcError::TcpCongestion {
            name: options.same_host_tcp_congestion.clone().unwrap_or_default(),
            source,
        })?;
        let bound = bind(&rt, &addr, &options)
            .await
            .map_err(|source| ProcError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let advertised = advertised_addr(&bound.addr, options.advertise.as_ref())?;
        let listener = match bound.listener {
            BoundListener::Socket(l) => Listener::Socket(
                rt.listen(l)
                    .map_err(|source| ProcError::Bind { addr, source })?,
            ),
            BoundListener::Local(l) => Listener::Local(l),
        };
        let id = ProcId::new(advertised, name);
        let incarnation = random_u64();
        let core = CoreProc::new(id.clone(), options.core.clone(), incarnation, random_u64());
        let span = tracing::info_span!(parent: None, "proc", id = %id);
        let driver = Arc::new(Driver {
            rt,
            tasks: TaskSet::new("proc tasks"),
            services: TaskSet::new("proc services"),
            timer: Signal::new(),
            span,
            connect_timeout: options.core.connect_timeout.into(),
            tcp,
            refusals: Mutex::new(RefusalLog::new(options.refusal_log_interval)),
            dialed: Arc::new(Mutex::new(HashSet::new())),
            svc: Arc::new(ProcServices {
                links: Links::new(),
                monitors: Monitors::new(id.clone()),
            }),
        });
        let engine = Engine::new(core, driver.clone(), options.returned_queue_len);
        start_monitor_service(&engine, &driver)?;
        driver.spawn_service(Box::pin(listen(engine.clone(), driver.clone(), listener)));
        driver.spawn_service(Box::pin(timer(engine.clone(), driver.clone())));
        driver
            .span
            .in_scope(|| tracing::info!(incarnation, "proc serving"));
        Ok(HostedProc {
            inner: Arc::new(ProcInner {
                engine,
                driver,
                addr: bound.addr,
                file: Mutex::new(bound.file),
                shutdown_timeout: options.core.shutdown_timeout.into(),
            }),
        })
    }

    /// The runtime handle the proc runs on.
    pub fn runtime(&self) -> &R {
        &self.inner.driver.rt
    }

    /// This proc's id: its advertised address (the bound one unless
    /// [`ProcOptions::advertise`] says otherwise) and name.
    pub fn proc_id(&self) -> &ProcId {
        self.inner.engine.id()
    }

    /// The address it serves on (bound; see [`ProcOptions::advertise`] for the one in its
    /// id).
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
    /// identity `ActorId(proc, name, 0)`, and a handle on it.
    pub fn instance(&self, name: &str) -> Result<(Instance, ActorHandle), ProcError> {
        self.check_running()?;
        let engine = &self.inner.engine;
        let (id, returns) = engine.reserve_root(name)?;
        let inst = Instance::new(
            engine.clone(),
            self.inner.driver.svc.clone(),
            id,
            returns,
            true,
        );
        let handle = inst.handle();
        Ok((inst, handle))
    }

    /// Reserves the root name `name` and runs `actor` on `ActorId(proc, name, 0)`.
    pub fn spawn<A: Actor>(
        &self,
        name: &str,
        actor: A,
    ) -> Result<(crate::ActorRef<A>, ActorHandle), ProcError> {
        self.check_running()?;
        let engine = &self.inner.engine;
        let (id, returns) = engine.reserve_root(name)?;
        spawn_actor(engine, &self.inner.driver.svc, id, returns, actor)
    }

    fn links(&self) -> &Arc<Links> {
        &self.inner.driver.svc.links
    }

    /// A subscription to this proc's [`LinkEvent`](crate::LinkEvent)s from now on: peers
    /// connected, lost, reconnected, restarted, unreachable, or refusing the session. See
    /// [`LinkEvent`](crate::LinkEvent) for what is reported and what is not.
    pub fn link_events(&self) -> LinkEvents {
        self.links().subscribe()
    }

    /// Dials `proc` at `addr` from now on instead of at the address in its id.
    pub fn set_address(&self, proc: ProcId, addr: ChannelAddr) {
        self.links().set_address(proc.clone(), addr.clone());
        self.inner.engine.set_address(proc, addr);
    }

    /// Core's counters.
    pub fn stats(&self) -> Stats {
        self.inner.engine.stats()
    }

    /// What peers make this proc hold right now (connections, handshake bytes, sessions,
    /// messages held behind full ports), each bounded by a `Config` limit.
    pub fn held(&self) -> procwire_core::proc::Held {
        self.inner.engine.held()
    }

    /// Undeliverable returns that could not be handed to their sender.
    pub fn returns_dropped(&self) -> u64 {
        self.inner.engine.returns_dropped()
    }

    /// Connections open or being dialed now.
    pub fn connection_count(&self) -> usize {
        self.inner.engine.connection_count()
    }

    /// Inbound connections refused or closed for misbehaving since the proc started, per
    /// reason (bad bytes, wrong version, over-limit frame, a hello for another proc, no
    /// handshake within `connect_timeout`, ...).
    pub fn refusals(&self) -> Refusals {
        lock(&self.inner.driver.refusals).counts()
    }

    /// Tasks of this proc (listener, timer, connections, actors) that have not ended yet.
    pub fn task_count(&self) -> usize {
        self.inner.driver.tasks.live() + self.inner.driver.services.live()
    }

    /// Shuts down gracefully; see the adapters' `Proc::shutdown`.
    pub async fn shutdown(&self) -> ShutdownReport {
        let inner = &self.inner;
        let span = inner.driver.span.clone();
        async {
            tracing::info!("shutting down");
            // Watchers of this proc's actors hear of the shutdown before anything drains.
            let monitors = &inner.driver.svc.monitors;
            monitors.shutting_down();
            let limit = inner.shutdown_timeout;
            if timeout(&inner.driver.rt, limit, monitors.flushed())
                .await
                .is_none()
            {
                tracing::warn!("monitor notifications were not sent in time");
            }
            inner.engine.begin_shutdown();
            // Core completes on its own once `shutdown_timeout` has passed (returning what
            // it could not flush); the second more only covers a timer that fires late.
            let drained = timeout(
                &inner.driver.rt,
                inner.shutdown_timeout + DRAIN_GRACE,
                inner.engine.drained(),
            )
            .await
            .is_some();
            if !drained {
                tracing::warn!("in-flight messages were not settled in time");
            }
            // No new connections from here on; then close ports and flush connections.
            inner.driver.stop_services().await;
            inner.engine.stop();
            let aborted_tasks = inner.driver.join_tasks(inner.shutdown_timeout).await;
            inner.driver.svc.close();
            inner.remove_file();
            inner.driver.flush_refusals();
            tracing::info!(drained, aborted_tasks, "shut down");
            ShutdownReport {
                drained,
                aborted_tasks,
            }
        }
        .instrument(span)
        .await
    }

    /// Stops at once, as a crash would; see the adapters' `Proc::kill`.
    pub async fn kill(&self) {
        let inner = &self.inner;
        // As a crash: the actors that go with it notify no monitor.
        inner.driver.svc.monitors.close();
        inner.driver.tasks.close();
        inner.driver.stop_services().await;
        inner.driver.tasks.abort_all();
        inner.driver.tasks.idle().await;
        inner.engine.stop();
        inner.driver.svc.close();
        inner.remove_file();
        inner.driver.flush_refusals();
        inner.driver.span.in_scope(|| tracing::info!("killed"));
    }
}

impl<R: Runtime> std::fmt::Debug for HostedProc<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proc({})", self.proc_id())
    }
}

/// Reserves the monitor service's identity, binds its mailbox and runs it.
fn start_monitor_service<R: Runtime>(
    engine: &Arc<Engine>,
    driver: &Arc<Driver<R>>,
) -> Result<(), ProcError> {
    let (id, returns) = engine.reserve_root(MONITOR_SERVICE)?;
    let port = id.port(ACTOR_PORT);
    driver.svc.monitors.set_sender(engine, id.clone());
    let inst = Instance::new(engine.clone(), driver.svc.clone(), id, returns, false);
    let accepts = crate::TypeFingerprint::of::<MonitorMsg>();
    let bound = engine.bind_port(&port, PortKind::Stream, accepts)?;
    let mailbox = PortReceiver::<MonitorMsg>::new(engine.clone(), bound);
    let links = driver.svc.links.subscribe();
    let serve = monitor::serve(inst, mailbox, links, driver.svc.monitors.clone());
    driver.spawn_in(
        &driver.tasks,
        Box::pin(serve.instrument(driver.span.clone())),
    );
    Ok(())
}

/// A listener registered with the runtime, or a local one.
enum Listener<L> {
    Socket(L),
    Local(local::LocalListener),
}

/// Accepts inbound connections and starts their tasks.
async fn listen<R: Runtime>(
    engine: Arc<Engine>,
    driver: Arc<Driver<R>>,
    mut listener: Listener<R::Listener>,
) {
    loop {
        let accepted = match &mut listener {
            Listener::Socket(l) => driver.rt.accept(l, &driver.tcp).await,
            Listener::Local(l) => l.accept().await,
        };
        match accepted {
            Ok(stream) => {
                let ctl = ConnCtl::new();
                let conn = engine.accepted(ctl.clone());
                let span = tracing::info_span!(
                    parent: &driver.span, "conn", %conn, dir = "in", peer = %stream.peer
                );
                span.in_scope(|| tracing::debug!("accepted"));
                // An accepted connection can carry this proc's own session to its dialer
                // (a two-way link): how it ends is told to the link tracker as well.
                let links = driver.svc.links.clone();
                let (reader, writer) = net::conn_tasks(&engine, conn, stream, ctl, links);
                driver.spawn_in(&driver.tasks, Box::pin(reader.instrument(span.clone())));
                driver.spawn_in(&driver.tasks, Box::pin(writer.instrument(span)));
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                sleep(&driver.rt, Duration::from_millis(50)).await;
            }
        }
    }
}

/// The machine's one timer: sleeps until `poll_timeout()`, re-armed whenever a turn moves the
/// deadline earlier.
async fn timer<R: Runtime>(engine: Arc<Engine>, driver: Arc<Driver<R>>) {
    let mut timer = driver.rt.timer();
    loop {
        // Woken also when sends in a row left their output for a later turn.
        engine.drain_deferred();
        match engine.arm_timer() {
            Some(at) => {
                timer.reset(at);
                let fired = poll_fn(|cx| {
                    if timer.poll_elapsed(cx).is_ready() {
                        return Poll::Ready(true);
                    }
                    driver.timer.poll_wait(cx).map(|()| false)
                })
                .await;
                if fired {
                    engine.fire_timer();
                }
            }
            None => driver.timer.wait().await,
        }
    }
}
