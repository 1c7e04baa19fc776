//! Test harness that hosts the worker component in wasmtime **the way Spin
//! (and `wasmtime serve`) host WASI P3 HTTP components**.
//!
//! The end-to-end tests should exercise the worker under the same execution
//! model it gets in production, not under a simplified one-store-per-request
//! host. Concretely that means:
//!
//! * **Component-model async + `wasi:http/handler@0.3.0`.** The worker is a
//!   spin-sdk 7 `#[http_service]`, i.e. a P3 handler. Rust std on
//!   `wasm32-wasip2` still imports WASI 0.2 interfaces, so both the P2 and P3
//!   WASI interfaces are linked.
//! * **Pooling allocator + pre-instantiation.** The component is compiled and
//!   linked once (`InstancePre`/`ProxyPre`); instances come from a pre-reserved
//!   pool, as in `spin up`.
//! * **Instance reuse.** Requests are dispatched through
//!   [`wasmtime_wasi_http::handler::ProxyHandler`], the dispatcher Spin and
//!   `wasmtime serve` use: one instance serves up to `max_reuse` (default 128)
//!   requests, up to 16 at a time, and is dropped after 1 s idle (Spin's
//!   defaults, and its three `spin up` flags). Global state in the guest
//!   therefore survives across requests, exactly as in Spin.
//! * **TCP as Spin leaves it.** Accepted connections keep Nagle's algorithm
//!   (Spin sets no `TCP_NODELAY`), so a response whose head leaves before its
//!   body stalls here as it does under `spin up`; see
//!   [`HarnessConfig::tcp_nodelay`].
//! * **The store outlives the response.** The store keeps running after the
//!   response head goes to hyper, so the guest can stream the body and tasks
//!   it spawns (`spin_sdk::wasip3::spawn`, e.g. an outbound POST) complete.
//! * **Outbound HTTP** uses wasmtime-wasi-http's default send-request hooks
//!   (no allow-list).
//! * **Spin host interfaces.** `spin:variables/variables@3.0.0` is linked
//!   with Spin's semantics (see [`variables`]), fed from
//!   [`HarnessConfig::variables`] in place of spin.toml's resolved
//!   `[component.<id>.variables]`.
//! * **Key-value stores.** `spin:key-value/key-value@3.0.0` is linked with
//!   Spin's access rules over durable files (see [`key_value`]): the stores
//!   granted by [`HarnessConfig::key_value_stores`] live under
//!   [`HarnessConfig::key_value_dir`] and are shared by all instances. The
//!   same stores answer `wasi:keyvalue/store` and `wasi:keyvalue/atomics`
//!   (`@0.2.0-draft2`, compare-and-swap and increment with the semantics of
//!   Spin's SQLite store; see [`wasi_key_value`]).
//!
//! Use [`start`] from tests (own runtime on a background thread) or
//! [`Harness::bind`] + [`Harness::serve`] from async code (the binary).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wasmtime::component::{Component, GuestTaskId, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The repository root: the parent of the running package's directory (every package is one
/// level down), read at run time from cargo's `CARGO_MANIFEST_DIR`. Not `env!`: cargo's
/// fingerprints do not see a checkout move, so a build reused from another checkout through a
/// shared target directory would carry that checkout's path, and read its files.
pub fn repo_root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    package
        .parent()
        .map_or(package.clone(), std::path::Path::to_path_buf)
}

pub mod edge;
pub mod key_value;
pub mod manifest;
pub mod postgres;
pub mod redis;
pub mod spin_up;
pub mod variables;
pub mod wasi_key_value;
pub use edge::{Edge, EdgeHost, start_edge};
use key_value::{KeyValue, KeyValueView};
use variables::Variables;

/// Spin's / `wasmtime serve`'s default for P3 components.
pub const DEFAULT_MAX_REUSE: usize = 128;
/// Max requests in flight in one instance (Spin's P3 default).
pub const DEFAULT_MAX_CONCURRENT_REUSE: usize = 16;
/// An idle instance is dropped after this long (Spin's default).
pub const DEFAULT_IDLE_INSTANCE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default pool size for tests. Far below Spin's 1000: tests never need more,
/// and every harness in a test process reserves its own pool of virtual
/// address space. The binary uses Spin's 1000 (see `HarnessConfig::pool_instances`).
pub const TEST_POOL_INSTANCES: u32 = 100;
/// Spin's pool size.
pub const SPIN_POOL_INSTANCES: u32 = 1_000;

/// What to serve and how.
#[derive(Clone, Debug)]
pub struct HarnessConfig {
    /// Path to the component (`.wasm`).
    pub component: PathBuf,
    /// Address to listen on; port 0 picks a free port (see [`RunningHarness::addr`]).
    pub listen: SocketAddr,
    /// Requests served by one instance before it is retired (must be >= 1);
    /// `spin up --max-instance-reuse-count`.
    pub max_reuse: usize,
    /// Requests one instance serves at once (must be >= 1);
    /// `spin up --max-instance-concurrent-reuse-count`.
    pub max_concurrent_reuse: usize,
    /// An instance idle this long is dropped; `spin up --idle-instance-timeout`.
    pub idle_instance_timeout: Duration,
    /// Set `TCP_NODELAY` on accepted connections. Spin 4.1 does not (its
    /// accept loop leaves Nagle's algorithm on), so the default is off: when
    /// hyper flushes a response head before the guest's body has crossed
    /// over, the body waits for the client's (delayed, up to 40 ms) ACK of
    /// the head, exactly as under `spin up`. On only to measure that effect.
    pub tcp_nodelay: bool,
    /// Most component instances alive at once (the pooling allocator's size).
    /// An instance that has served its last request stays alive while its
    /// background tasks run, so a slow outbound call keeps instances around.
    pub pool_instances: u32,
    /// Environment variables visible to the guest.
    pub env: Vec<(String, String)>,
    /// The component's Spin variables (name, value), served through
    /// `spin:variables`; names must be valid Spin variable names. Like
    /// spin.toml's `[component.<id>.variables]`: a name not listed is
    /// `undefined` to the guest.
    pub variables: Vec<(String, String)>,
    /// Key-value store labels the component may open (spin.toml's
    /// `key_value_stores`); the harness defines a store for each. Any other
    /// label is `access-denied` to the guest.
    pub key_value_stores: Vec<String>,
    /// Directory holding the stores' data (`<dir>/<label>/`), kept across
    /// harness restarts. `None`: a temporary directory removed with the harness.
    pub key_value_dir: Option<PathBuf>,
    /// Labels of `key_value_stores` held in memory instead (Spin: `type = "spin"` without a
    /// `path` in the runtime config; the repository's `runtime-config.toml` does this for the
    /// `velocity` store). Under `spin up` they get that runtime config.
    pub memory_key_value_stores: Vec<String>,
    /// A connection that has not sent a whole request head within this time
    /// (from its first byte, or from the end of the previous answer on a
    /// kept-alive connection) is closed. hyper's own default, 30 s. Spin 4.1
    /// sets no timer on its hyper server, so it enforces none; production
    /// proxies in front of it do (nginx `client_header_timeout`: 60 s), and
    /// this lets tests see what those see. `None`: no timeout, as `spin up`.
    pub header_read_timeout: Option<Duration>,
}

/// hyper's default header-read timeout (see [`HarnessConfig::header_read_timeout`]).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl HarnessConfig {
    /// Defaults: `127.0.0.1:0`, reuse 128, empty environment, no variables, no
    /// key-value stores.
    pub fn new(component: impl Into<PathBuf>) -> Self {
        Self {
            component: component.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_reuse: DEFAULT_MAX_REUSE,
            max_concurrent_reuse: DEFAULT_MAX_CONCURRENT_REUSE,
            idle_instance_timeout: DEFAULT_IDLE_INSTANCE_TIMEOUT,
            tcp_nodelay: false,
            pool_instances: TEST_POOL_INSTANCES,
            env: Vec::new(),
            variables: Vec::new(),
            key_value_stores: Vec::new(),
            key_value_dir: None,
            memory_key_value_stores: Vec::new(),
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
        }
    }
}

/// A harness serving on its own runtime thread. Dropping it (or calling
/// [`RunningHarness::shutdown`]) stops the server.
pub struct RunningHarness {
    /// The address actually bound.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl RunningHarness {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, tears down the runtime and reports any
    /// error the server loop ended with.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("harness thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningHarness {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            eprintln!("harness: {e:#}");
        }
    }
}

/// Compiles and pre-instantiates the component, binds the listener and serves
/// on a background thread with its own tokio runtime. Returns once listening.
pub fn start(config: HarnessConfig) -> anyhow::Result<RunningHarness> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("harness".into())
        .spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("building tokio runtime")?;
            let result = runtime.block_on(async {
                let harness = match Harness::bind(&config).await {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = ready_tx.send(Ok(harness.local_addr()));
                // A dropped sender also means "stop".
                harness
                    .serve(async {
                        let _ = stop_rx.await;
                    })
                    .await
            });
            // Connection tasks and workers still running are cancelled here;
            // don't let a stuck one hang the caller's drop.
            runtime.shutdown_timeout(Duration::from_secs(5));
            result
        })
        .context("spawning harness thread")?;

    match ready_rx.recv() {
        Ok(Ok(addr)) => Ok(RunningHarness {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        // The thread died before reporting (runtime build failed or panic).
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e),
            _ => bail!("harness thread exited before it was ready"),
        },
    }
}

/// A compiled, pre-instantiated component bound to a listening socket.
pub struct Harness {
    listener: TcpListener,
    handler: ProxyHandler<App>,
    header_read_timeout: Option<Duration>,
    tcp_nodelay: bool,
}

impl Harness {
    /// Builds the engine (pooling allocator, component-model async), compiles
    /// and pre-instantiates the component, and binds `config.listen`.
    pub async fn bind(config: &HarnessConfig) -> anyhow::Result<Self> {
        if config.max_reuse == 0 || config.max_concurrent_reuse == 0 {
            bail!("max_reuse and max_concurrent_reuse must be at least 1");
        }
        // Compilation is CPU-bound; keep it off the async workers.
        let app = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || App::load(&config))
                .await
                .context("component loading task failed")??
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Ok(Self {
            listener,
            handler: ProxyHandler::new(app),
            header_read_timeout: config.header_read_timeout,
            tcp_nodelay: config.tcp_nodelay,
        })
    }

    /// The address actually bound (resolves port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves HTTP/1.1 (keep-alive) until `shutdown` resolves. Connections
    /// still open then are left to the runtime (dropped with it).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let local = self.local_addr();
        tokio::pin!(shutdown);
        loop {
            let (stream, _peer) = tokio::select! {
                () = &mut shutdown => {
                    // Workers dropped with the runtime now are not failures.
                    self.handler.state().shutting_down.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    // Transient (e.g. EMFILE, aborted handshake): keep serving.
                    Err(e) => {
                        eprintln!("harness: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            // Off by default, as in Spin (see `HarnessConfig::tcp_nodelay`).
            if self.tcp_nodelay
                && let Err(e) = stream.set_nodelay(true)
            {
                eprintln!("harness: set_nodelay failed: {e}");
            }
            let handler = self.handler.clone();
            let header_read_timeout = self.header_read_timeout;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handle(&handler, req, local).await) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder.keep_alive(true);
                // hyper applies the header-read timeout only when it has a timer.
                if let Some(timeout) = header_read_timeout {
                    builder
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(timeout);
                } else {
                    builder.header_read_timeout(None);
                }
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    // Typically the client went away mid-response.
                    eprintln!("harness: connection error: {e}");
                }
            });
        }
    }
}

/// Dispatches one request to a (possibly reused) instance. Never fails: any
/// host or guest error (including a trap) becomes a 500 for this request only.
async fn handle(
    handler: &ProxyHandler<App>,
    req: Request<Incoming>,
    local: SocketAddr,
) -> Response<WasiBody> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let req = match with_absolute_uri(req, local) {
        Ok(req) => req,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("{e:#}")),
    };
    let req = req.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
    match handler.handle((), req).await {
        Ok(resp) => resp,
        Err(e) => {
            eprintln!("harness: {method} {path} failed: {e:#}");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}"))
        }
    }
}

/// hyper gives origin-form URIs (`/path`); hand the guest a full
/// `http://host/path` so `req.uri()` carries scheme and authority.
fn with_absolute_uri(
    mut req: Request<Incoming>,
    local: SocketAddr,
) -> anyhow::Result<Request<Incoming>> {
    if req.uri().authority().is_some() {
        return Ok(req);
    }
    let authority = match req.headers().get(hyper::header::HOST) {
        Some(host) => host.to_str().context("non-ASCII Host header")?.to_owned(),
        None => local.to_string(),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = format!("http://{authority}{path}")
        .parse()
        .with_context(|| format!("invalid Host header {authority:?}"))?;
    Ok(req)
}

fn error_response(status: StatusCode, message: &str) -> Response<WasiBody> {
    let body = Full::new(Bytes::from(format!("{status}: {message}\n")))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}

/// Per-store host state: WASI (P2 + P3) and wasi:http contexts, Spin variables
/// and key-value stores.
struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    variables: Variables,
    key_value: KeyValue,
}

impl Host {
    fn new(env: &[(String, String)], variables: Variables, key_value: KeyValue) -> Self {
        let mut wasi = WasiCtxBuilder::new();
        wasi.envs(env)
            // Guest stdout goes to our stderr: the binary's stdout carries
            // only the "listening on" line tests parse.
            .stdout(std::io::stderr())
            .inherit_stderr();
        Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            variables,
            key_value,
        }
    }

    fn key_value_view(&mut self) -> KeyValueView<'_> {
        KeyValueView {
            table: &mut self.table,
            key_value: &self.key_value,
        }
    }

    /// Default hooks = default send-request: outbound HTTP is allowed.
    fn http_view(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: wasmtime_wasi_http::default_hooks(),
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.http_view()
    }
}

/// Application state shared by all workers: the pre-instantiated component.
struct App {
    engine: Engine,
    pre: ProxyPre<Host>,
    env: Vec<(String, String)>,
    variables: Variables,
    key_value: KeyValue,
    max_reuse: usize,
    max_concurrent_reuse: usize,
    idle_instance_timeout: Duration,
    shutting_down: Arc<AtomicBool>,
}

impl App {
    fn load(config: &HarnessConfig) -> anyhow::Result<Self> {
        let variables = Variables::new(&config.variables)?;
        let key_value = KeyValue::with_memory(
            config.key_value_dir.as_deref(),
            &config.key_value_stores,
            &config.memory_key_value_stores,
        )?;
        let engine = Engine::new(&engine_config(config.pool_instances))
            .map_err(anyhow::Error::from)
            .context(
                "creating wasmtime engine (the pooling allocator reserves a lot of virtual memory)",
            )?;

        // wasmtime 48 has its own error type: `map_err` into anyhow to add context.
        let mut linker = Linker::<Host>::new(&engine);
        // std's own imports (WASI 0.2) ...
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI 0.2")?;
        // ... and what spin-sdk 7 uses (WASI 0.3 + wasi:http 0.3).
        wasmtime_wasi::p3::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI 0.3")?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http 0.3")?;
        // ... and the Spin host interfaces it imports.
        variables::add_to_linker(&mut linker, |host| &host.variables)
            .map_err(anyhow::Error::from)
            .context("linking spin:variables")?;
        key_value::add_to_linker(&mut linker, Host::key_value_view)
            .map_err(anyhow::Error::from)
            .context("linking spin:key-value")?;
        wasi_key_value::add_to_linker(&mut linker, Host::key_value_view)
            .map_err(anyhow::Error::from)
            .context("linking wasi:keyvalue")?;

        let component = Component::from_file(&engine, &config.component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling component {}", config.component.display()))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "pre-instantiating {} (does it import something not provided?)",
                    config.component.display()
                )
            })?;
        let pre = ServicePre::new(pre).map_err(anyhow::Error::from).with_context(|| {
            format!(
                "{} does not export wasi:http/handler@0.3.0 (build it with spin-sdk 7 #[http_service])",
                config.component.display()
            )
        })?;

        Ok(Self {
            engine,
            pre: ProxyPre::P3(pre),
            env: config.env.clone(),
            variables,
            key_value,
            max_reuse: config.max_reuse,
            max_concurrent_reuse: config.max_concurrent_reuse,
            idle_instance_timeout: config.idle_instance_timeout,
            shutting_down: Arc::default(),
        })
    }
}

/// A byte count from one of Spin's `SPIN_WASMTIME_*` environment variables, else `default`.
fn spin_env(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|e| {
            eprintln!("harness: ignoring {name}={v:?} ({e}); using {default}");
            default
        }),
        Err(_) => default,
    }
}

/// Mirrors Spin's engine config (component-model async, pooling allocator),
/// with a smaller pool.
fn engine_config(instances: u32) -> Config {
    const MB: usize = 1 << 20;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_memories(instances)
        .total_tables(2 * instances)
        .total_stacks(instances)
        .total_core_instances(4 * instances)
        .table_elements(100_000)
        .max_component_instance_size(10 * MB)
        .max_core_instance_size(10 * MB)
        .max_core_instances_per_component(200)
        .max_tables_per_component(64)
        .max_memories_per_component(32)
        .max_tables_per_module(2)
        .max_memories_per_module(2)
        .max_memory_size(4 << 30)
        // Spin's defaults and its environment variables: what a retired instance's pool slot
        // keeps resident (zeroed) for the next one, which is why RSS stays up after a burst.
        .linear_memory_keep_resident(spin_env(
            "SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT",
            2 * MB,
        ))
        .table_keep_resident(spin_env("SPIN_WASMTIME_TABLE_KEEP_RESIDENT", MB / 2));

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .wasm_component_model_async(true)
        // As Spin (crates/core): guest code is compiled with epoch checks, so compute costs
        // here are Spin's. Spin's deadline is "practically forever" unless a timeout is set,
        // as here; its ticker thread (which only advances the epoch) is not needed for that.
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // For profiling guest code with `perf`: names JIT frames in /tmp/perf-<pid>.map.
    if std::env::var_os("HARNESS_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

impl HandlerState for App {
    type StoreData = Host;
    type WorkerExpiration = IdleTimeout;
    type WorkerState = Reuse;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Host, IdleTimeout, Reuse>> {
        let mut store = Store::new(
            &self.engine,
            Host::new(&self.env, self.variables.clone(), self.key_value.clone()),
        );
        // Spin's default: with epoch interruption on, some deadline must be set (a delta;
        // 2^63 ticks is never reached).
        store.set_epoch_deadline(u64::MAX / 2);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: Host::http_view,
            expiration: IdleTimeout {
                after: self.idle_instance_timeout,
                sleep: Box::pin(tokio::time::sleep(self.idle_instance_timeout)),
            },
            state: Reuse {
                max_reuse: self.max_reuse,
                max_concurrent: self.max_concurrent_reuse,
                shutting_down: self.shutting_down.clone(),
            },
        })
    }
}

/// Per-instance reuse policy.
struct Reuse {
    max_reuse: usize,
    max_concurrent: usize,
    shutting_down: Arc<AtomicBool>,
}

impl WorkerState for Reuse {
    type StoreData = Host;
    type RequestData = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.max_reuse {
            ShouldAccept::Never
        } else if concurrent >= self.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, Host>,
        _data: (),
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        // No request timeout (Spin's default): never expire.
        Box::pin(std::future::pending())
    }

    fn drop(&self, store: Store<Host>, result: wasmtime::Result<()>) {
        // A trap shows up here (with the wasm backtrace) as well as a 500.
        if let Err(e) = result
            && !self.shutting_down.load(Ordering::Relaxed)
        {
            eprintln!("harness: instance dropped after error: {e:#}");
        }
        drop(store);
    }
}

/// Retires an instance once it has been idle (no requests, no background
/// guest tasks) for `after`; busy instances never expire.
struct IdleTimeout {
    after: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for IdleTimeout {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        status: WorkerStatus,
        since: Instant,
    ) -> Poll<()> {
        if status != WorkerStatus::Idle {
            return Poll::Pending;
        }
        let me = self.get_mut();
        let deadline = tokio::time::Instant::from_std(since + me.after);
        let sleep = &mut me.sleep;
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx)
    }
}
