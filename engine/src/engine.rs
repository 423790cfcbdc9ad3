//! `Engine`: N cores on threads of their own, each pinned to a CPU.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::Client;
use crate::config::{ConfigError, CoreConfig, ProtocolConfig, RuntimeConfig};
use crate::core::{Core, CoreError};
use crate::inbox::{Command, Inbox};
use crate::service::{Registry, ServiceError};
use crate::stats::CoreStats;
use crate::transport::sock::{self, SocketFile};
use crate::{Endpoint, EndpointError, Service};

/// The engine could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A core could not be set up (e.g. io_uring unavailable; the message says why).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A service definition is invalid.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// An endpoint string is invalid.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Binding a listener failed.
    #[error("cannot listen on {endpoint}: {source}")]
    Listen {
        /// The endpoint.
        endpoint: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Builds an [`Engine`].
#[derive(Debug, Default)]
pub struct EngineBuilder {
    cores: Option<usize>,
    cpus: Option<Vec<usize>>,
    config: CoreConfig,
    services: Vec<Service>,
    interceptors: crate::dispatch::Interceptors,
    asyncs: crate::dispatch::AsyncInterceptors,
    listen: Vec<String>,
    quic_server: Option<netron_quic::ServerConfig>,
    quic_client: Option<netron_quic::ClientConfig>,
}

impl EngineBuilder {
    /// The TLS and QUIC settings of this engine's `quic://` listeners; takes precedence over
    /// [`ProtocolConfig::with_quic_server`] whatever [`EngineBuilder::config`] sets later.
    pub fn quic_server(mut self, config: netron_quic::ServerConfig) -> Self {
        self.quic_server = Some(config);
        self
    }
    /// The TLS and QUIC settings of this engine's `quic://` connects; takes precedence over
    /// [`ProtocolConfig::with_quic_client`] whatever [`EngineBuilder::config`] sets later.
    pub fn quic_client(mut self, config: netron_quic::ClientConfig) -> Self {
        self.quic_client = Some(config);
        self
    }
    /// Number of cores (default: the available parallelism; 1 to 1024, checked by
    /// [`EngineBuilder::build`]).
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = Some(n);
        self
    }
    /// Pins core `i` to `cpus[i % cpus.len()]` (default: core `i` on CPU `i` modulo the online
    /// CPUs). [`EngineBuilder::build`] refuses an empty list and CPUs that are not online.
    pub fn cpus(mut self, cpus: &[usize]) -> Self {
        self.cpus = Some(cpus.to_vec());
        self
    }
    /// Per-core settings, both parts (a [`RuntimeConfig`] or a [`ProtocolConfig`] alone
    /// leaves the other at its defaults). Checked by [`EngineBuilder::build`].
    pub fn config(mut self, cfg: impl Into<CoreConfig>) -> Self {
        self.config = cfg.into();
        self
    }
    /// Per-core runtime settings (ring, buffers, idle policy), keeping the protocol settings.
    pub fn runtime(mut self, runtime: RuntimeConfig) -> Self {
        self.config.runtime = runtime;
        self
    }
    /// The cores' idle policy (default: [`crate::IdlePolicy::Adaptive`] with a 50 µs spin), keeping
    /// every other setting.
    pub fn idle(mut self, idle: crate::IdlePolicy) -> Self {
        let runtime = std::mem::take(&mut self.config.runtime);
        self.config.runtime = runtime.with_idle(idle);
        self
    }
    /// Per-core protocol settings (handshake offers, limits, timeouts, keepalive), keeping the
    /// runtime settings.
    pub fn protocol(mut self, protocol: ProtocolConfig) -> Self {
        self.config.protocol = protocol;
        self
    }
    /// Serves `service` on every core.
    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }
    /// Runs `interceptor` around every call the engine's cores serve (all cores share it).
    /// `before` hooks run in installation order, `after` hooks in reverse order (see
    /// [`crate::Interceptor`]; docs/architecture.md, "Dispatch").
    pub fn interceptor(mut self, interceptor: impl crate::Interceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }
    /// Runs `interceptor`, which may await, before every call the engine's cores serve
    /// (`$sys` included), before the services' own async interceptors. See
    /// [`crate::AsyncInterceptor`] for the order and the cost (every method is then served
    /// as an async one).
    pub fn async_interceptor(mut self, interceptor: impl crate::AsyncInterceptor) -> Self {
        self.asyncs.0.push(Arc::new(interceptor));
        self
    }
    /// Listens on `endpoint` (`tcp://host:port`, `unix:///path`, `inproc://name`,
    /// `shm://name`) on every core: sockets are bound once and shared by the cores; an
    /// `inproc://` or `shm://` name hands its connections to the cores in turn (an `shm://`
    /// name's rendezvous runs on an accept thread of its own, never on a core:
    /// docs/shm.md, "In the engine").
    pub fn listen(mut self, endpoint: &str) -> Self {
        self.listen.push(endpoint.to_owned());
        self
    }

    /// Starts the cores. Fails with a clear error if io_uring cannot be set up (or set up but
    /// not used: every core submits one operation before `build` returns), a setting is
    /// unusable, a service is invalid, or an endpoint cannot be bound.
    ///
    /// # Errors
    /// [`EngineError`], naming the setting, service or endpoint involved.
    pub fn build(mut self) -> Result<Engine, EngineError> {
        let n = self
            .cores
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if !(1..=1024).contains(&n) {
            return Err(ConfigError::new("EngineBuilder::cores", n, "must be 1 to 1024").into());
        }
        if let Some(cpus) = &self.cpus {
            // SAFETY: sysconf has no preconditions.
            let online = (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as usize;
            if cpus.is_empty() {
                return Err(
                    ConfigError::new("EngineBuilder::cpus", cpus, "the list is empty").into(),
                );
            }
            if let Some(bad) = cpus.iter().find(|&&c| c >= online) {
                return Err(ConfigError::new(
                    "EngineBuilder::cpus",
                    cpus,
                    format!("CPU {bad} is not online (CPUs 0 to {} are)", online - 1),
                )
                .into());
            }
        }
        if let Some(c) = self.quic_server.take() {
            self.config.protocol.quic_server = Some(c);
        }
        if let Some(c) = self.quic_client.take() {
            self.config.protocol.quic_client = Some(c);
        }
        self.config.validate()?;
        let connect_timeout = self.config.protocol.connect_timeout;
        let quic_client = self.config.protocol.quic_client_in_use();
        let mut registry = Registry::default();
        // Set first: services are wrapped by the engine's async interceptors as they are added.
        registry.interceptors = self.interceptors;
        registry.set_asyncs(self.asyncs);
        registry.set_features(self.config.protocol.server().features);
        for s in self.services {
            registry.add(s)?;
        }
        let master = registry.clone();
        let registry = Arc::new(registry);
        // Bind every listener here (on the caller's thread, which also resolved host names),
        // so errors surface from build() and port 0 resolves once. One listening socket per
        // address; every core gets a duplicate of its descriptor and arms its own accept on it
        // (one-shot, so the cores take turns: core/listener.rs). Nothing else can join the
        // socket (no SO_REUSEPORT), so a second engine on a live endpoint fails here with
        // "address in use".
        let mut per_core: Vec<Vec<(OwnedFd, Endpoint)>> = (0..n).map(|_| Vec::new()).collect();
        let mut bound = Vec::new();
        let mut files = Vec::new();
        let mut inproc_names = Vec::new();
        for s in &self.listen {
            let ep: Endpoint = s.parse()?;
            let listen_err = |e| EngineError::Listen {
                endpoint: s.clone(),
                source: e,
            };
            if let Endpoint::Inproc(_) | Endpoint::Shm { .. } | Endpoint::Quic { .. } = &ep {
                // Bound once the cores run (their inboxes take the connections).
                inproc_names.push((ep.clone(), s.clone()));
                bound.push(ep.clone());
                continue;
            }
            for b in sock::listen(&ep, 1024).map_err(listen_err)? {
                for slots in &mut per_core {
                    slots.push((b.fd.try_clone().map_err(listen_err)?, b.endpoint.clone()));
                }
                bound.push(b.endpoint);
                files.extend(b.file);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut inboxes = Vec::with_capacity(n);
        for _ in 0..n {
            inboxes.push(Inbox::new().map_err(CoreError::Io)?);
        }
        let mut threads = Vec::with_capacity(n);
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<Result<(usize, crate::DriverInfo), CoreError>>();
        for (i, listeners) in per_core.into_iter().enumerate() {
            let inbox = inboxes[i].clone();
            // Published events are forwarded to the other cores (docs/architecture.md,
            // "Events"): each core knows their inboxes before it serves anything.
            // In chain order: the next core first.
            let siblings: Vec<Arc<Inbox>> = (1..n).map(|d| inboxes[(i + d) % n].clone()).collect();
            let cpu = self.cpus.as_ref().map_or(i, |c| c[i % c.len()]);
            let (cfg, registry, stop, ready) = (
                self.config.clone(),
                registry.clone(),
                stop.clone(),
                ready_tx.clone(),
            );
            let t = std::thread::Builder::new()
                .name(format!("netron-core-{i}"))
                .spawn(move || {
                    pin_to_cpu(cpu);
                    let mut core = match Core::with_registry(cfg, registry, inbox) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    core.set_siblings(siblings);
                    for (fd, ep) in listeners {
                        core.add_listener(fd, ep, None);
                    }
                    let _ = ready.send(Ok((i, core.driver())));
                    drop(ready);
                    run_core(i, core, &stop);
                })
                .map_err(CoreError::Io)?;
            threads.push(t);
        }
        drop(ready_tx);
        let mut engine = Engine {
            inboxes,
            threads,
            stop,
            endpoints: bound,
            files,
            inproc: Vec::new(),
            shm: Vec::new(),
            quic: Vec::new(),
            drivers: Vec::with_capacity(n),
            connect_timeout,
            quic_client,
            registry: std::sync::Mutex::new(master),
            next_core: AtomicUsize::new(0),
        };
        let mut drivers = vec![None; n];
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok((i, info))) => drivers[i] = Some(info),
                Ok(Err(e)) => {
                    engine.stop_now();
                    return Err(e.into());
                }
                Err(_) => {
                    engine.stop_now();
                    return Err(CoreError::Io(std::io::Error::other(
                        "a core thread exited during setup",
                    ))
                    .into());
                }
            }
        }
        engine.drivers = drivers.into_iter().flatten().collect();
        // In-process names: a connect from any thread of this process goes to the cores in
        // turn, as the kernel spreads a socket's connections over their accepts.
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for (ep, s) in inproc_names {
            let (inboxes, next) = (engine.inboxes.clone(), next.clone());
            let acceptor = Arc::new(move |pipe| {
                let i = next.fetch_add(1, Ordering::Relaxed) % inboxes.len();
                inboxes[i].push(Command::AcceptRecord(Box::new(pipe)));
                Ok(())
            });
            let bound = match &ep {
                Endpoint::Shm { name, options } => {
                    // Counted by the first core (the engine's stats sum the cores').
                    let first = engine.inboxes[0].clone();
                    let refused =
                        Arc::new(move |label, n| first.push(Command::CountError(label, n)));
                    crate::transport::shm::bind(name, options, acceptor, refused)
                        .map(|b| engine.shm.push(b))
                }
                Endpoint::Inproc(name) => {
                    crate::transport::inproc::bind(name, acceptor).map(|b| engine.inproc.push(b))
                }
                Endpoint::Quic { host, addrs } => bind_quic(&mut engine, &self.config, host, addrs),
                _ => Ok(()),
            };
            match bound {
                Ok(()) => {}
                Err(e) => {
                    engine.stop_now();
                    return Err(EngineError::Listen {
                        endpoint: s,
                        source: e,
                    });
                }
            }
        }
        Ok(engine)
    }
}

/// Runs a core until it stops, and makes sure that however it ends (a ring that fails at run
/// time, a panic that escaped every guard), its inbox is closed with the reason first, so
/// every pending and later command is answered at once instead of hanging.
fn run_core(index: usize, mut core: Core, stop: &AtomicBool) {
    let inbox = core.inbox();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while !core.is_stopped() && !stop.load(Ordering::Relaxed) {
            core.run_looped()?;
        }
        Ok::<(), std::io::Error>(())
    }));
    match r {
        Ok(Ok(())) => inbox.close("the engine shut down".to_owned(), false),
        Ok(Err(e)) => inbox.close(
            format!("core {index} failed: its io_uring returned {e}"),
            true,
        ),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            inbox.close(format!("core {index} panicked: {msg}"), true);
        }
    }
    // Dropping the core fails its connections' calls with the reason above and waits for the
    // kernel to release its buffers. If that panics too, the core is leaked rather than
    // freeing memory the kernel may still use.
    let mut core = std::mem::ManuallyDrop::new(core);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `core` is not used again after this drop, whether it completes or unwinds.
        unsafe { std::mem::ManuallyDrop::drop(&mut core) }
    }));
}

/// A core that stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("core {core} is down: {reason}")]
pub struct CoreFailure {
    /// The core's index.
    pub core: usize,
    /// Why it stopped (its ring failed, or a panic escaped every guard).
    pub reason: String,
}

/// A running engine. Dropping it stops the cores at once; [`Engine::shutdown`] drains first.
/// Either returns only when the cores exited and released their listeners, connections and
/// kernel buffers.
#[derive(Debug)]
pub struct Engine {
    inboxes: Vec<Arc<Inbox>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    endpoints: Vec<Endpoint>,
    /// The Unix socket files this engine created, removed at shutdown (if still ours).
    files: Vec<SocketFile>,
    /// The `inproc://` names this engine listens on, unbound at shutdown.
    inproc: Vec<crate::transport::inproc::Binding>,
    /// The `shm://` names this engine listens on (and their accept threads), unbound at
    /// shutdown.
    shm: Vec<crate::transport::shm::Binding>,
    /// The `quic://` addresses this engine listens on (their rendezvous threads), unbound at
    /// shutdown.
    quic: Vec<crate::transport::quic_listen::Binding>,
    /// The I/O backend of each core, by core index.
    drivers: Vec<crate::DriverInfo>,
    /// `ProtocolConfig::connect_timeout`, for [`Engine::client`].
    connect_timeout: Duration,
    /// `ProtocolConfig::with_quic_client`, for [`Engine::client`].
    quic_client: Option<netron_quic::ClientConfig>,
    /// The services the cores serve (each holds a copy), for changes at run time.
    registry: std::sync::Mutex<Registry>,
    /// The core that takes the next in-process publish or subscription.
    next_core: AtomicUsize,
}

impl Engine {
    /// A builder with defaults.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The endpoints listened on, as bound: port 0 resolved, and a host name replaced by each
    /// address it resolved to and was bound (`tcp://localhost:7000` may give both
    /// `tcp://127.0.0.1:7000` and `tcp://[::1]:7000`).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.inboxes.len()
    }

    /// The I/O backend each core runs (by core index) and, where a core fell back from
    /// io_uring to epoll, why (`RuntimeConfig::with_driver`, docs/architecture.md, "The epoll
    /// driver").
    pub fn drivers(&self) -> &[crate::DriverInfo] {
        &self.drivers
    }

    /// Health check: `Err` lists the cores that stopped on their own (a ring that failed at
    /// run time, a panic that escaped the handler guards). Connections and calls on such a
    /// core failed with `Unavailable` naming the same reason; new calls to it fail at once.
    ///
    /// # Errors
    /// The failed cores, each with its reason.
    pub fn health(&self) -> Result<(), Vec<CoreFailure>> {
        let failed: Vec<CoreFailure> = self
            .inboxes
            .iter()
            .enumerate()
            .filter_map(|(core, inbox)| match inbox.stopped() {
                Some((reason, true)) => Some(CoreFailure {
                    core,
                    reason: reason.to_owned(),
                }),
                _ => None,
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }

    /// A client whose connections live on this engine's cores.
    pub fn client(&self) -> Client {
        Client::new(
            self.inboxes.clone(),
            self.connect_timeout,
            self.quic_client.clone(),
        )
    }

    /// A copy of every core's statistics.
    pub fn stats(&self) -> Vec<CoreStats> {
        self.inboxes
            .iter()
            .filter_map(|inbox| {
                let (tx, rx) = std::sync::mpsc::channel();
                inbox.push(Command::Stats(tx));
                rx.recv_timeout(Duration::from_secs(5)).ok()
            })
            .collect()
    }

    /// Engine-wide totals.
    pub fn total_stats(&self) -> CoreStats {
        let mut t = CoreStats::default();
        for s in self.stats() {
            t.merge(&s);
        }
        t
    }

    /// Graceful shutdown: every core stops accepting, sends GoAway, lets in-flight calls
    /// finish for up to `drain` (new calls get Unavailable), closes, and exits.
    ///
    /// Returns when every core has exited and released its resources: its listening
    /// descriptors are closed after their accepts were cancelled in the kernel (so the port
    /// refuses connections and can be bound again at once), its Unix socket files removed,
    /// its connections closed and its kernel-owned buffers unregistered.
    pub fn shutdown(mut self, drain: Duration) {
        // Removed while the sockets still listen, so the files are certainly ours.
        self.files.clear();
        self.inproc.clear();
        self.shm.clear();
        // QUIC listeners take no new client but keep routing the datagrams of clients whose
        // address changes to their draining connections (docs/quic.md "Connection
        // migration"), until the cores are done.
        for b in &self.quic {
            b.stop_accepting();
        }
        for inbox in &self.inboxes {
            inbox.push(Command::Shutdown { drain });
        }
        self.join_cores();
        self.quic.clear();
    }

    /// Joins every core thread but the calling one: a handler may shut the engine down or
    /// drop it from a core thread, which then exits by itself once the handler returns.
    fn join_cores(&mut self) {
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }

    fn stop_now(&mut self) {
        self.quic.clear();
        self.files.clear();
        self.inproc.clear();
        self.shm.clear();
        self.stop.store(true, Ordering::Relaxed);
        for inbox in &self.inboxes {
            inbox.push(Command::Shutdown {
                drain: Duration::ZERO,
            });
        }
        self.join_cores();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Pins the calling thread to `cpu` (modulo the online CPUs); best effort.
pub(crate) fn pin_to_cpu(cpu: usize) {
    // Online CPUs, not `available_parallelism()`: the latter honours the caller's affinity
    // mask, so a thread already pinned to one CPU would see 1 and pin everything there.
    // SAFETY: sysconf has no preconditions.
    let n = (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as usize;
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu % n` is below CPU_SETSIZE on any machine this runs on; CPU_SET writes
    // only inside `set`.
    unsafe { libc::CPU_SET(cpu % n, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is initialised and its size is passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// Events published and subscribed in-process (docs/guide.md "Events").
impl Engine {
    fn any_core(&self) -> &Arc<Inbox> {
        let i = self.next_core.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        &self.inboxes[i]
    }

    /// Publishes an event on the engine: every matching subscription gets it, those the
    /// engine's peers hold on any core and the in-process ones ([`Engine::subscribe`]).
    /// Returns once it is handed to a core (fire-and-forget, docs/protocol.md §24.5).
    ///
    /// # Errors
    /// `InvalidArgument` for an invalid topic (docs/protocol.md §24.2); `ResourceExhausted`
    /// for an event no frame can carry (above the configured `max_frame_size`), or when the
    /// core has 64 MiB of published events still to take (the publisher is faster than the
    /// engine: retry later).
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<bytes::Bytes>,
    ) -> Result<(), crate::Status> {
        crate::core::check_topic(topic)?;
        let payload = payload.into();
        let inbox = self.any_core();
        inbox.check_event_size(topic, payload.len())?;
        if !inbox.reserve_event(topic.len() + payload.len()) {
            return Err(crate::inbox::events_backlog());
        }
        inbox.send(Command::Publish {
            topic: bytes::Bytes::copy_from_slice(topic.as_bytes()),
            payload,
            hops: self.inboxes.len() as u32 - 1,
            served: Vec::new(),
        });
        Ok(())
    }

    /// Subscribes in-process to the events published on this engine (by its peers, on any
    /// core, and with [`Engine::publish`]). The subscription lives on one core, which every
    /// event reaches.
    ///
    /// # Errors
    /// `InvalidArgument` for an invalid pattern.
    pub fn subscribe(
        &self,
        pattern: &str,
        opts: crate::SubscribeOptions,
    ) -> Result<crate::Subscription, crate::Status> {
        crate::core::check_pattern(pattern)?;
        let app = crate::events::SubShared::new(opts.queue_depth);
        self.any_core().send(Command::SubscribeLocal {
            pattern: pattern.into(),
            opts,
            app: app.clone(),
            key: crate::core::local_key(),
        });
        Ok(crate::Subscription::new(app))
    }
}

/// How long [`Engine::add_service`] and [`Engine::remove_service`] wait for a core that is
/// busy (in a long handler) to take the new set of services.
const SERVICES_WAIT: Duration = Duration::from_secs(5);

/// Services added and removed at run time (docs/architecture.md, "Services at run time").
impl Engine {
    /// Serves `service` on every core from now on; `$sys` lists it. Returns once every core
    /// serves it (a core busy in a handler for longer than 5 s takes it at its next turn;
    /// called from a handler, its own core takes it at the end of the current turn).
    ///
    /// # Errors
    /// [`crate::ServiceError::Duplicate`] if a service of the same `name@version` is served.
    pub fn add_service(&self, service: Service) -> Result<(), ServiceError> {
        self.change_services(|r| r.add(service))
    }

    /// Stops serving the service `key` (`name@version`) on every core: later calls to it
    /// get `NotFound` (naming the versions left) and `$sys` no longer lists it. Calls
    /// already dispatched to it finish normally: a sync handler's call is answered within
    /// the turn that started it, and async and deferred calls answer when their handlers
    /// do (or by their deadline). Returns as [`Engine::add_service`] does.
    ///
    /// # Errors
    /// [`crate::ServiceError::NotRegistered`], or [`crate::ServiceError::Reserved`] for `$sys`.
    pub fn remove_service(&self, key: &str) -> Result<(), ServiceError> {
        self.change_services(|r| r.remove(key).map(drop))
    }

    fn change_services(
        &self,
        change: impl FnOnce(&mut Registry) -> Result<(), ServiceError>,
    ) -> Result<(), ServiceError> {
        let mut master = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut master)?;
        let snapshot = Arc::new(master.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut waiting = 0;
        for inbox in &self.inboxes {
            if !inbox.is_current() {
                waiting += 1;
            }
            inbox.send(Command::Services {
                registry: snapshot.clone(),
                done: tx.clone(),
            });
        }
        drop(tx);
        let until = std::time::Instant::now() + SERVICES_WAIT;
        for _ in 0..waiting {
            let left = until.saturating_duration_since(std::time::Instant::now());
            // A stopped core drops the command (and its sender): nothing to wait for.
            if rx.recv_timeout(left).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Binds every address of a `quic://` listen; new connections go to the cores in turn (each
/// QUIC connection has its own connected socket, so any core can run it). The bound
/// addresses (port 0 resolved) replace the endpoint in [`Engine::endpoints`].
fn bind_quic(
    engine: &mut Engine,
    config: &CoreConfig,
    host: &str,
    addrs: &[std::net::SocketAddr],
) -> std::io::Result<()> {
    let (inboxes, next) = (engine.inboxes.clone(), AtomicUsize::new(0));
    use crate::transport::quic_listen::Handed;
    let acceptor: crate::transport::quic_listen::Acceptor = Arc::new(move |handed| match handed {
        Handed::Pipe(pipe) => {
            let i = next.fetch_add(1, Ordering::Relaxed) % inboxes.len();
            inboxes[i].push(Command::AcceptQuic(pipe));
        }
        Handed::Count(label, n) => inboxes[0].push(Command::CountError(label, n)),
    });
    let (bindings, bound) = crate::transport::quic_listen::bind_all(
        host,
        addrs,
        config.protocol.quic_server_in_use().as_ref(),
        &acceptor,
    )?;
    engine.quic.extend(bindings);
    let asked = Endpoint::Quic {
        host: host.to_owned(),
        addrs: addrs.to_vec(),
    };
    if let Some(e) = engine.endpoints.iter_mut().find(|e| **e == asked) {
        *e = Endpoint::Quic {
            host: host.to_owned(),
            addrs: bound,
        };
    }
    Ok(())
}
