//! What every end-to-end test binary needs: a model fitted by the trainer on synthetic data and
//! the worker component built with that model embedded.

#![allow(dead_code)] // each test binary uses a different subset

use model_format::Model;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use trainer::forest::{Contamination, IsolationForestParams, MaxSamples};

/// The repository root.
pub fn root() -> PathBuf {
    harness::repo_root()
}

/// A fitted model and a component embedding it, both inside `dir`.
pub struct Built {
    pub model: Model,
    pub model_path: PathBuf,
    /// A private copy of the component: another test binary may rebuild the shared build
    /// directory with its own model while this one runs.
    pub component: PathBuf,
    pub dir: tempfile::TempDir,
}

/// Synthesizes `rows` legacy transactions, fits `n_estimators` trees with `seed` (contamination
/// 0.1) and builds the worker around the model. The same arguments give the same model bytes, so
/// test binaries that agree on them share one cached component build.
pub fn fit_and_build(rows: usize, seed: u64, n_estimators: usize) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let model = fit_model(dir.path(), rows, seed, n_estimators);
    let model_path = dir.path().join("model.sfm");
    std::fs::write(&model_path, model.to_bytes().unwrap()).unwrap();

    let built = build_component(&model_path);
    let component = dir.path().join("worker.wasm");
    std::fs::copy(&built, &component).unwrap();
    Built {
        model,
        model_path,
        component,
        dir,
    }
}

/// The model [`fit_and_build`] embeds, fitted in `dir` (for a registry upload).
pub fn fit_model(dir: &Path, rows: usize, seed: u64, n_estimators: usize) -> Model {
    let data = dir.join(format!("transactions-{seed}.parquet"));
    let mut df = trainer::synth::transactions(rows, 0.05, seed).unwrap();
    trainer::data::write_frame(&data, &mut df).unwrap();
    let features: Vec<String> = trainer::synth::LEGACY_FEATURES.map(String::from).to_vec();
    let table = trainer::data::read_features(&data, &features).unwrap();
    let params = IsolationForestParams {
        n_estimators,
        max_samples: MaxSamples::Auto,
        contamination: Contamination::Fraction(0.1),
        seed,
        ..IsolationForestParams::default()
    };
    trainer::fit(&table, &params).unwrap()
}

/// Builds the worker for wasm32-wasip2 with `model` embedded, in a target directory of its own
/// (the outer `cargo test` may still hold the lock on the main one) shared by all test binaries.
/// `SFE_WORKER_ROOT=<another checkout>` builds that checkout's worker instead: how a figure is
/// measured before and after a change to the worker, with the same tests.
pub fn build_component(model: &Path) -> PathBuf {
    let other = std::env::var_os("SFE_WORKER_ROOT").map(PathBuf::from);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join(match other {
        Some(_) => "e2e-wasm-other",
        None => "e2e-wasm",
    });
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(other.clone().unwrap_or_else(root))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "worker",
            "--target-dir",
        ])
        .arg(&target)
        .env("SFE_MODEL_PATH", model)
        .status()
        .expect("running cargo to build the worker");
    assert!(status.success(), "building the worker component failed");
    target.join("wasm32-wasip2/release/worker.wasm")
}

/// The workspace's `trainer` binary beside this test binary, for tests that run the operator's
/// commands as an operator would. `cargo test --release` (the workspace) builds it; a run of
/// this package alone does not, and cannot from inside the test (cargo holds the build lock),
/// so a missing or older-than-its-sources binary is a clear failure instead of a wrong result.
pub fn trainer_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(Path::parent).unwrap().join("trainer");
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    let newest_source = walk(&root().join("trainer/src"))
        .into_iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max();
    assert!(
        built.is_some_and(|b| newest_source.is_none_or(|s| s <= b)),
        "{} is missing or older than trainer/src: run `cargo build --release -p trainer` \
         (or the whole `cargo test --release`) first",
        binary.display()
    );
    binary
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// An HTTP client that hands back 4xx/5xx answers instead of failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// The bearer token of every [`StoreService`].
pub const STORE_TOKEN: &str = "e2e-store-token-0123456789abcdef";

/// The store service (`store/`), in process on its own runtime thread, migrated and serving on
/// a free loopback port; stopped gracefully on drop.
pub struct StoreService {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoreService {
    pub fn start(database_url: &str) -> Self {
        Self::start_at(database_url, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// On `addr` (e.g. the address of a store stopped before, to bring it back).
    pub fn start_at(database_url: &str, addr: SocketAddr) -> Self {
        Self::start_configured(database_url, addr, None)
    }

    /// Knowing the named tokens of `tokens_file` besides [`STORE_TOKEN`].
    pub fn start_with_tokens(database_url: &str, tokens_file: &Path) -> Self {
        Self::start_configured(
            database_url,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(tokens_file.to_path_buf()),
        )
    }

    fn start_configured(database_url: &str, addr: SocketAddr, tokens: Option<PathBuf>) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let url = database_url.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut config = store::Config::new(url, STORE_TOKEN);
                config.tokens_file = tokens;
                let store = store::Store::new(config).unwrap();
                store.migrate().await.unwrap();
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                store::serve(listener, store, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("store did not start");
        StoreService {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StoreService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `count()` once it reaches `n`, or its last value when `timeout` passes first.
pub fn wait_for_count(n: u64, timeout: Duration, count: impl Fn() -> u64) -> u64 {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let c = count();
        if c >= n || std::time::Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `select count(*) …` of `sql` in `pg`.
pub fn count(pg: &harness::postgres::TempPostgres, sql: &str) -> u64 {
    pg.psql(sql).unwrap().trim().parse().unwrap()
}

/// A line on the real stdout, so CI logs show figures even when the test passes, with the
/// machine's load average beside it (the figures of a shared machine mean little without it).
pub fn report(line: impl std::fmt::Display) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    // The same suites run under the harness and under `spin up` (SFE_EDGE=spin).
    let host = match harness::EdgeHost::from_env() {
        harness::EdgeHost::Spin => "spin up: ",
        harness::EdgeHost::Harness => "",
    };
    let _ = std::io::Write::write_fmt(
        &mut std::io::stdout(),
        format_args!("{host}{line} [load {load}]\n"),
    );
}
