//! Two `spin up` edges (the real Spin CLI) on one Redis key-value store, as a platform team
//! runs them (`--runtime-config-file` with `[key_value_store.default] type = "redis"`), one
//! store and a throwaway PostgreSQL: the registry model one edge pulled is what the other
//! starts on, and with the store stopped under load (two clients per edge, as fast as the
//! edges answer) both keep answering, their outboxes in Redis; once the store is back every
//! answered prediction is one row. Edge 1 runs Spin's instance reuse, edge 2 the recommended
//! `--max-instance-reuse-count 100000`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{STORE_TOKEN as TOKEN, StoreService};
use harness::redis::TempRedis;
use harness::spin_up::SpinUp;
use serde_json::{Value, json};

/// Model A, embedded (the same build as forwarding.rs and rollout.rs).
static BUILT: LazyLock<common::Built> = LazyLock::new(|| common::fit_and_build(2_000, 11, 50));

/// The `--max-instance-reuse-count` docs/edge.md recommends (Spin's default is
/// [`harness::DEFAULT_MAX_REUSE`]).
const RECOMMENDED_REUSE: usize = 100_000;

/// The edge's default `model_refresh_secs`.
const INTERVAL: Duration = Duration::from_secs(worker_core::DEFAULT_MODEL_REFRESH_SECS);

/// The shipped runtime config (deploy/runtime-config.redis.toml) pointed at `redis`: the test
/// runs what operators are given, so the two cannot drift apart.
fn runtime_config(dir: &Path, redis: &TempRedis) -> PathBuf {
    let shipped = common::root().join("deploy/runtime-config.redis.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let stores = doc["key_value_store"].as_table_mut().unwrap();
    assert!(stores.contains_key("default"), "{}", shipped.display());
    // Every store (default, velocity) on this test's Redis.
    for (name, store) in stores.iter_mut() {
        let store = store.as_table_mut().unwrap();
        assert_eq!(
            store["type"].as_str(),
            Some("redis"),
            "{}: {name}",
            shipped.display()
        );
        store.insert("url".into(), toml::Value::String(redis.url()));
    }
    let path = dir.join("runtime-config.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

/// An edge; `max_reuse` is `--max-instance-reuse-count`: edge 1 runs Spin's default (an
/// instance per 128 requests), edge 2 the recommended one (instances that live through the
/// whole outage, so a cool-down that renewed itself would keep them from ever delivering).
fn edge(store_url: &str, runtime_config: &Path, max_reuse: usize) -> SpinUp {
    let mut config = harness::HarnessConfig::new(&BUILT.component);
    config.max_reuse = max_reuse;
    config.variables = vec![
        ("store_url".into(), store_url.into()),
        ("store_token".into(), TOKEN.into()),
    ];
    config.key_value_stores = vec!["default".into()];
    SpinUp::start_with_runtime_config(&config, Some(runtime_config)).unwrap()
}

/// One prediction: (status, model_version).
fn predict(agent: &ureq::Agent, url: &str, i: u64) -> (u16, String) {
    let body = json!({"amount": 5.0 + (i % 400) as f64 * 2.5, "hour": i % 24,
                      "day_of_week": i % 7, "merchant_category": i % 10, "transaction_type": i % 3});
    match agent.post(&format!("{url}/api/predict")).send_json(body) {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
            (
                status,
                v["model_version"].as_str().unwrap_or("").to_string(),
            )
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Outbox entries waiting in Redis.
fn outbox(redis: &TempRedis) -> usize {
    redis
        .keys()
        .unwrap()
        .iter()
        .filter(|k| k.starts_with(worker_core::OUTBOX))
        .count()
}

/// The age range (ms) of the outbox entries in Redis, from the time in their UUIDv7 keys: on a
/// failure, whether what is left dates from the outage or from the last moments' traffic.
fn outbox_ages(redis: &TempRedis) -> Option<(i64, i64)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    let ages = redis
        .keys()
        .ok()?
        .into_iter()
        .filter_map(|k| worker_core::outbox_key_millis(&k).map(|created| now - created));
    ages.fold(None, |range, a| {
        Some(range.map_or((a, a), |(lo, hi): (i64, i64)| (lo.min(a), hi.max(a))))
    })
}

/// Clients sending predictions as fast as the edges answer until stopped, counting per edge
/// the answers that were 200 with the expected model and those that were not.
#[derive(Default, Clone)]
struct Load {
    stop: std::sync::Arc<AtomicBool>,
    ok: std::sync::Arc<[AtomicU64; 2]>,
    failed: std::sync::Arc<[AtomicU64; 2]>,
}

impl Load {
    fn client(&self, url: String, edge: usize, version: String) -> std::thread::JoinHandle<()> {
        let load = self.clone();
        std::thread::spawn(move || {
            let agent = common::agent();
            let mut i = 1_000_000 * (edge as u64 + 1);
            while !load.stop.load(Ordering::Relaxed) {
                i += 1;
                let (status, v) = predict(&agent, &url, i);
                let counter = if status == 200 && v == version {
                    &load.ok
                } else {
                    &load.failed
                };
                counter[edge].fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Per edge: (answered 200 with the expected model, anything else).
    fn counts(&self) -> [(u64, u64); 2] {
        [0, 1].map(|e| {
            (
                self.ok[e].load(Ordering::Relaxed),
                self.failed[e].load(Ordering::Relaxed),
            )
        })
    }
}

fn health(url: &str) -> Value {
    common::agent()
        .get(&format!("{url}/api/health"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

#[test]
fn two_spin_edges_on_one_redis_share_the_model_and_lose_nothing_while_the_store_is_down() {
    let redis = TempRedis::start().unwrap();
    let pg = harness::postgres::TempPostgres::start().unwrap();
    let mut store = Some(StoreService::start(&pg.url()));
    let store_addr = store.as_ref().unwrap().addr;
    let store_url = store.as_ref().unwrap().url();
    let dir = tempfile::tempdir().unwrap();
    let rc = runtime_config(dir.path(), &redis);

    // B in the registry, live.
    let b = common::fit_model(dir.path(), 2_000, 12, 50)
        .to_bytes()
        .unwrap();
    let vb = model_format::ModelId::of(&b).unwrap().version();
    let agent = common::agent();
    let auth = format!("Bearer {TOKEN}");
    let r = agent
        .post(&format!("{store_url}/v1/models"))
        .header("authorization", &auth)
        .send(&b[..])
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = agent
        .put(&format!("{store_url}/v1/models/channels/live"))
        .header("authorization", &auth)
        .send_json(json!({"version": vb}))
        .unwrap();
    assert_eq!(r.status(), 200);

    // Edge 1 pulls B into Redis.
    let first = edge(&store_url, &rc, harness::DEFAULT_MAX_REUSE);
    let mut answered = 0u64;
    let mut i = 0;
    let deadline = Instant::now() + 2 * INTERVAL;
    loop {
        i += 1;
        let (status, version) = predict(&agent, &first.url(), i);
        assert_eq!(status, 200, "{version}");
        answered += 1;
        if version == vb {
            break;
        }
        assert!(Instant::now() < deadline, "edge 1 never served {vb}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let keys = redis.keys().unwrap();
    for key in [
        "model/channels".to_string(),
        format!("model/file/{vb}/0"),
        format!("model/tables/{vb}/0"),
        format!("model/bundle/{vb}/0"),
    ] {
        assert!(keys.contains(&key), "{key} not in Redis: {keys:?}");
    }

    // Load on edge 1 (two clients, as fast as it answers) while the store is still up...
    let load = Load::default();
    let mut clients = vec![
        load.client(first.url(), 0, vb.clone()),
        load.client(first.url(), 0, vb.clone()),
    ];
    std::thread::sleep(Duration::from_secs(2));
    // ...then the store goes down under that load; edge 2 starts on the same Redis, serves B at
    // once and takes load too.
    drop(store.take());
    let down = Instant::now();
    let second = edge(&store_url, &rc, RECOMMENDED_REUSE);
    let h = health(&second.url());
    assert_eq!(
        (h["model_version"].as_str(), h["model_source"].as_str()),
        (Some(vb.as_str()), Some("registry")),
        "{h}"
    );
    clients.push(load.client(second.url(), 1, vb.clone()));
    clients.push(load.client(second.url(), 1, vb.clone()));
    std::thread::sleep(Duration::from_secs(5));
    let waiting = outbox(&redis);
    assert!(
        waiting >= 1,
        "no outbox entries in Redis while the store is down"
    );
    // The store back on its address, the load still running, for a few more seconds.
    let _store = StoreService::start_at(&pg.url(), store_addr);
    let outage = down.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    load.stop();
    let stopped = Instant::now();
    for c in clients {
        c.join().unwrap();
    }
    let [(ok1, failed1), (ok2, failed2)] = load.counts();
    answered += ok1 + ok2;

    // Outbox entries are re-sent by later flushes; keep a trickle of traffic on both edges.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        for url in [first.url(), second.url()] {
            i += 1;
            let (status, _) = predict(&agent, &url, i);
            assert_eq!(status, 200);
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
        let rows = common::count(&pg, "select count(*) from transactions");
        let left = outbox(&redis);
        if (rows >= answered && left == 0) || Instant::now() > deadline {
            break rows;
        }
    };
    let drained = stopped.elapsed();
    let distinct = common::count(&pg, "select count(distinct id) from transactions");
    let left = outbox(&redis);
    common::report(format!(
        "spin redis: 2 edges on one Redis under load (2 clients each), store down {:.1} s: \
         edge 1 answered {ok1} (failed {failed1}), edge 2 {ok2} (failed {failed2}) under load, \
         {answered} predictions in all, {waiting} outbox entries 5 s into the outage; {rows} rows, \
         {distinct} distinct ids, {left} outbox entries left {:.1} s after the load stopped; \
         edge 2 (reuse {RECOMMENDED_REUSE}) started on {vb} from Redis",
        outage.as_secs_f64(),
        drained.as_secs_f64()
    ));
    assert_eq!(
        (failed1, failed2),
        (0, 0),
        "answers other than 200 with {vb}"
    );
    assert!(ok1 > 0 && ok2 > 0, "no load reached an edge");
    assert_eq!(
        (rows, distinct, left),
        (answered, answered, 0),
        "outbox entries left aged (youngest, oldest) {:?} ms",
        outbox_ages(&redis)
    );
    first.shutdown().unwrap();
    second.shutdown().unwrap();
}
