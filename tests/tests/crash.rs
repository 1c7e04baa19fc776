//! Nothing answered is lost: the edge's process is killed (SIGKILL), stopped (SIGTERM) or
//! interrupted (SIGINT) under load from four clients, with the store up or down; it is started
//! again on the same key-value store and probed until its outbox drained; every transaction
//! that was answered 200 must then be a row in the store.
//!
//! Run under the real `spin up` (with Redis as `default`, as deploy/ runs it, and with Spin's
//! SQLite file) and under the harness binary (its files), each as a process of its own. CI runs
//! SIGKILL with the store up under `spin up` on Redis and SIGKILL with the store down under the
//! harness. `matrix` (ignored; `-- --ignored`) runs every signal × store state × host, with the
//! journal on and off, and prints the table docs/edge.md quotes.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use common::{STORE_TOKEN as TOKEN, StoreService};
use serde_json::{Value, json};

static BUILT: LazyLock<common::Built> = LazyLock::new(|| common::fit_and_build(2_000, 21, 50));

/// How long the four clients send before the signal.
const LOAD: Duration = Duration::from_secs(3);
/// How long the restarted edge gets to drain its outbox.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Host {
    /// `spin up` with Spin's SQLite file as `default`.
    Spin,
    /// `spin up` with Redis as `default`, as deploy/ runs it.
    SpinRedis,
    /// `spin up` with an in-memory `default` (Spin's `type = "spin"` without a path): what the
    /// journal costs there, knowing that the outbox dies with the process.
    SpinMemory,
    /// The harness binary with its files.
    Harness,
}

/// The edge as a process of its own.
enum Edge {
    Spin(harness::spin_up::SpinUp),
    Harness(Child, String),
}

impl Edge {
    fn start(
        host: Host,
        kv_dir: &Path,
        store_url: &str,
        journal: bool,
        redis: Option<&str>,
    ) -> Edge {
        let journal = if journal { "on" } else { "off" };
        let vars = [
            ("store_url", store_url),
            ("store_token", TOKEN),
            ("forward_journal", journal),
        ];
        match host {
            Host::Spin | Host::SpinRedis | Host::SpinMemory => {
                let mut config = harness::HarnessConfig::new(&BUILT.component);
                config.variables = vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                config.key_value_stores = vec!["default".into()];
                config.key_value_dir = Some(kv_dir.to_path_buf());
                let text = match (host, redis) {
                    (_, Some(url)) => Some(format!(
                        "[key_value_store.default]\ntype = \"redis\"\nurl = \"{url}\"\n"
                    )),
                    (Host::SpinMemory, None) => {
                        Some("[key_value_store.default]\ntype = \"spin\"\n".to_owned())
                    }
                    _ => None,
                };
                let runtime_config = text.map(|text| {
                    let path = kv_dir.join("runtime-config.toml");
                    std::fs::write(&path, text).unwrap();
                    path
                });
                let spin = harness::spin_up::SpinUp::start_with_runtime_config(
                    &config,
                    runtime_config.as_deref(),
                );
                Edge::Spin(spin.unwrap())
            }
            Host::Harness => {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
                cmd.args(["--component", BUILT.component.to_str().unwrap()])
                    .args(["--from", "none", "--listen", "127.0.0.1:0"])
                    .arg("--kv-dir")
                    .arg(kv_dir);
                for (k, v) in vars {
                    cmd.arg("--var").arg(format!("{k}={v}"));
                }
                let mut child = cmd
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap();
                let mut line = String::new();
                BufReader::new(child.stdout.take().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                let url = line
                    .trim()
                    .strip_prefix("listening on ")
                    .unwrap()
                    .to_string();
                Edge::Harness(child, url)
            }
        }
    }

    fn url(&self) -> String {
        match self {
            Edge::Spin(s) => s.url(),
            Edge::Harness(_, url) => url.clone(),
        }
    }

    /// Sends `signal` to the process and waits for it to end.
    fn stop_with(self, signal: &str) {
        match self {
            Edge::Spin(s) => s.stop_with(signal).unwrap(),
            Edge::Harness(mut child, _) => {
                let pid = child.id().to_string();
                Command::new("kill")
                    .args([&format!("-{signal}"), &pid])
                    .status()
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(15);
                while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Four clients posting predictions until stopped; the transaction ids answered 200 and the
/// latency of each answer.
fn load(url: &str, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Vec<(String, u64)>>> {
    (0..4)
        .map(|client| {
            let (url, stop) = (url.to_string(), stop.clone());
            std::thread::spawn(move || {
                let agent = common::agent();
                let mut answered = Vec::new();
                let mut i = client * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = json!({"amount": 10.0 + f64::from(i % 97) * 3.5, "hour": i % 24,
                        "day_of_week": i % 7, "merchant_category": i % 10, "transaction_type": i % 3});
                    let start = Instant::now();
                    let r = agent
                        .post(format!("{url}/api/predict?explain=false"))
                        .header("content-type", "application/json")
                        .send(body.to_string());
                    let micros = start.elapsed().as_micros() as u64;
                    match r {
                        Ok(mut r) if r.status() == 200 => {
                            let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
                            if let Some(id) = body["transaction_id"].as_str() {
                                answered.push((id.to_string(), micros));
                            }
                        }
                        Ok(_) => {}
                        // The process is gone: wait for the stop.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                answered
            })
        })
        .collect()
}

/// What one crash did.
struct Outcome {
    answered: usize,
    lost: usize,
    p50_us: u64,
    p99_us: u64,
    drain_secs: f64,
}

fn stored(pg: &harness::postgres::TempPostgres) -> BTreeSet<String> {
    pg.psql("select id from transactions")
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One run: load, signal, restart, drain; counts answered transactions missing in the store.
fn crash(host: Host, signal: &str, store_up: bool, journal: bool) -> Outcome {
    // One crash at a time: two would share the two cores and each other's figures.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut pg = harness::postgres::TempPostgres::start().unwrap();
    let store = StoreService::start(&pg.url());
    let store_url = store.url();
    // "Store down": its database is, for the whole run (the store answers 503).
    if !store_up {
        pg.stop().unwrap();
    }
    let kv_dir = tempfile::tempdir().unwrap();
    let redis = (host == Host::SpinRedis).then(|| harness::redis::TempRedis::start().unwrap());
    let redis_url = redis.as_ref().map(harness::redis::TempRedis::url);
    let edge = Edge::start(
        host,
        kv_dir.path(),
        &store_url,
        journal,
        redis_url.as_deref(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&edge.url(), &stop);
    std::thread::sleep(LOAD);
    edge.stop_with(signal);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut answered: Vec<(String, u64)> = Vec::new();
    for c in clients {
        answered.extend(c.join().unwrap());
    }
    pg.restart().unwrap();
    // Restarted on the same key-value store; health probes alone must drain it.
    let edge = Edge::start(
        host,
        kv_dir.path(),
        &store_url,
        journal,
        redis_url.as_deref(),
    );
    let ids: BTreeSet<String> = answered.iter().map(|(id, _)| id.clone()).collect();
    let agent = common::agent();
    let started = Instant::now();
    let mut missing = ids.len();
    while started.elapsed() < DRAIN_TIMEOUT {
        let _ = agent.get(format!("{}/api/health", edge.url())).call();
        missing = ids.difference(&stored(&pg)).count();
        if missing == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let drain_secs = started.elapsed().as_secs_f64();
    edge.stop_with("TERM");
    drop(store);
    // What the component printed under Spin (its stdio goes to files in the state directory).
    let panics = guest_panics(kv_dir.path());
    assert!(panics.is_empty(), "the worker panicked: {panics:?}");
    let mut micros: Vec<u64> = answered.iter().map(|(_, us)| *us).collect();
    micros.sort_unstable();
    let pct = |p: f64| {
        micros
            .get(((micros.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    Outcome {
        answered: ids.len(),
        lost: missing,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        drain_secs,
    }
}

/// Lines of the worker's stderr logs (Spin's `<state>/logs/`) about a panic.
fn guest_panics(state: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(state.join("logs")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|f| std::fs::read_to_string(f.path()).ok())
        .flat_map(|text| {
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains("panicked"))
                .map(|(i, _)| lines[i..(i + 3).min(lines.len())].join(" | "))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn report(host: Host, signal: &str, store_up: bool, journal: bool, o: &Outcome) {
    common::report(format_args!(
        "crash: {host:?} SIG{signal} store {} journal {}: {} of {} answered lost ({:.2} %), p50 {} µs p99 {} µs, drained in {:.1} s",
        if store_up { "up" } else { "down" },
        if journal { "on" } else { "off" },
        o.lost,
        o.answered,
        100.0 * o.lost as f64 / o.answered.max(1) as f64,
        o.p50_us,
        o.p99_us,
        o.drain_secs
    ));
}

#[test]
fn nothing_answered_is_lost_when_spin_on_redis_is_killed_under_load() {
    let o = crash(Host::SpinRedis, "KILL", true, true);
    report(Host::SpinRedis, "KILL", true, true, &o);
    assert!(o.answered > 100, "the load got only {} answers", o.answered);
    assert_eq!(o.lost, 0, "answered transactions missing in the store");
}

#[test]
fn nothing_answered_is_lost_when_the_harness_is_killed_with_the_store_down() {
    let o = crash(Host::Harness, "KILL", false, true);
    report(Host::Harness, "KILL", false, true, &o);
    assert!(o.answered > 100, "the load got only {} answers", o.answered);
    assert_eq!(o.lost, 0, "answered transactions missing in the store");
}

/// The whole table (minutes): `cargo test --release --test crash -- --ignored --nocapture`
/// (`SFE_CRASH_HOSTS=spin-redis` for some hosts only).
#[test]
#[ignore = "takes minutes: the table of docs/edge.md"]
fn matrix() {
    let outcomes = Mutex::new(Vec::new());
    // SFE_CRASH_HOSTS=spin-redis,spin,harness,spin-memory picks rows (default: all).
    let wanted = std::env::var("SFE_CRASH_HOSTS").unwrap_or_default();
    let hosts = [
        ("spin-redis", Host::SpinRedis),
        ("spin", Host::Spin),
        ("harness", Host::Harness),
        ("spin-memory", Host::SpinMemory),
    ];
    let hosts = hosts
        .into_iter()
        .filter(|(name, _)| wanted.is_empty() || wanted.split(',').any(|w| w == *name))
        .map(|(_, h)| h);
    for host in hosts {
        // In memory the outbox dies with the process whatever the signal: one is enough to
        // show it, the run is for the journal's cost.
        let signals: &[&str] = match host {
            Host::SpinMemory => &["KILL"],
            _ => &["KILL", "TERM", "INT"],
        };
        for &signal in signals {
            for store_up in [true, false] {
                for journal in [true, false] {
                    let o = crash(host, signal, store_up, journal);
                    report(host, signal, store_up, journal, &o);
                    outcomes
                        .lock()
                        .unwrap()
                        .push((host, signal, store_up, journal, o.lost));
                }
            }
        }
    }
    let journaled_losses: Vec<_> = outcomes
        .into_inner()
        .unwrap()
        .into_iter()
        .filter(|o| o.3 && o.4 > 0 && o.0 != Host::SpinMemory)
        .collect();
    assert!(journaled_losses.is_empty(), "{journaled_losses:?}");
}
