//! Model rollout through real parts: a throwaway PostgreSQL, the store's registry, the worker
//! component in the harness (its key-value store on disk), a load generator sending predictions
//! the whole time. Promote, roll back, shadow, refuse corrupt models, survive the store going
//! down and a restart without it.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use common::{STORE_TOKEN as TOKEN, StoreService};
use serde_json::{Value, json};

/// Model A, embedded (the same build as forwarding.rs).
static BUILT: LazyLock<common::Built> = LazyLock::new(|| common::fit_and_build(2_000, 11, 50));

/// The edge's default `model_refresh_secs` (spin.toml's default too).
const INTERVAL: Duration = Duration::from_secs(worker_core::DEFAULT_MODEL_REFRESH_SECS);

const PAYLOAD: &str = r#"{"amount": 912.5, "hour": 3, "day_of_week": 6, "merchant_category": 4, "transaction_type": 1}"#;

/// The `i`-th transaction of the load: amounts and hours vary, so the two models of a shadow
/// comparison rank them differently.
fn payload(i: u64) -> String {
    json!({"amount": 5.0 + (i % 400) as f64 * 2.5, "hour": i % 24, "day_of_week": i % 7,
           "merchant_category": i % 10, "transaction_type": i % 3})
    .to_string()
}

/// One answer the load generator got.
struct Answer {
    at: Instant,
    status: u16,
    version: String,
    micros: u64,
}

/// Predictions on one keep-alive connection until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), answers.clone());
        let thread = std::thread::spawn(move || {
            let agent = common::agent();
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                let start = Instant::now();
                let r = agent
                    .post(&format!("{url}/api/predict"))
                    .header("content-type", "application/json")
                    .send(payload(i));
                let micros = start.elapsed().as_micros() as u64;
                let (status, version) = match r {
                    Ok(mut r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
                        (
                            status,
                            body["model_version"].as_str().unwrap_or("").to_string(),
                        )
                    }
                    Err(e) => (0, format!("{e}")),
                };
                a.lock().unwrap().push(Answer {
                    at: Instant::now(),
                    status,
                    version,
                    micros,
                });
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Load {
            stop,
            answers,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.answers.lock().unwrap())
    }

    /// Waits until answers have carried `version` for `steady` without exception.
    fn wait_for(&self, version: &str, steady: Duration, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            let answers = self.answers.lock().unwrap();
            let Some(last_other) = answers.iter().rposition(|a| a.version != version) else {
                continue;
            };
            let since = answers[last_other].at;
            if answers.len() > last_other + 10 && since.elapsed() >= steady {
                return true;
            }
        }
        let answers = self.answers.lock().unwrap();
        let tail: Vec<(u16, &str)> = answers
            .iter()
            .rev()
            .take(20)
            .map(|a| (a.status, a.version.as_str()))
            .collect();
        eprintln!("not settled on {version}; last answers, newest first: {tail:?}");
        false
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn latency(answers: &[&Answer]) -> String {
    let mut us: Vec<u64> = answers.iter().map(|a| a.micros).collect();
    us.sort_unstable();
    format!(
        "p50 {} µs, p99 {} µs over {}",
        pct(&us, 0.5),
        pct(&us, 0.99),
        us.len()
    )
}

fn upload(store: &str, bytes: &[u8]) -> (u16, Value) {
    let mut r = common::agent()
        .post(&format!("{store}/v1/models"))
        .header("authorization", &format!("Bearer {TOKEN}"))
        .header("x-actor", "rollout-test")
        .send(bytes)
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_json().unwrap())
}

fn store_call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let agent = common::agent();
    let auth = format!("Bearer {TOKEN}");
    let r = match (method, body) {
        ("PUT", Some(b)) => agent.put(url).header("authorization", &auth).send_json(b),
        ("POST", _) => agent.post(url).header("authorization", &auth).send_empty(),
        _ => agent.get(url).header("authorization", &auth).call(),
    };
    let mut r = r.unwrap();
    (
        r.status().as_u16(),
        r.body_mut().read_json().unwrap_or(Value::Null),
    )
}

fn health(edge: &str) -> Value {
    common::agent()
        .get(&format!("{edge}/api/health"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

fn edge_for(store_url: &str, kv_dir: &Path) -> harness::Edge {
    let mut config = harness::HarnessConfig::new(&BUILT.component);
    config.variables = vec![
        ("store_url".into(), store_url.into()),
        ("store_token".into(), TOKEN.into()),
    ];
    config.key_value_stores = vec!["default".into()];
    config.key_value_dir = Some(kv_dir.to_path_buf());
    harness::start_edge(config).unwrap()
}

fn version_of(bytes: &[u8]) -> String {
    model_format::ModelId::of(bytes).unwrap().version()
}

/// The switch from one version to another as the load generator saw it: seconds from `from`
/// to the last answer of another version.
fn switch_secs(answers: &[&Answer], from: Instant, to_version: &str) -> f64 {
    let last_other = answers
        .iter()
        .filter(|a| a.version != to_version)
        .map(|a| a.at)
        .max()
        .unwrap();
    last_other.saturating_duration_since(from).as_secs_f64()
}

#[test]
fn promote_roll_back_shadow_and_refuse_while_serving() {
    let pg = harness::postgres::TempPostgres::start().unwrap();
    let mut store = Some(StoreService::start(&pg.url()));
    let store_addr = store.as_ref().unwrap().addr;
    let store_url = store.as_ref().unwrap().url();
    let kv_dir = tempfile::tempdir().unwrap();
    let edge = edge_for(&store_url, kv_dir.path());
    let edge_url = edge.url();

    let a = BUILT.model.to_bytes().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = common::fit_model(dir.path(), 2_000, 12, 50)
        .to_bytes()
        .unwrap();
    let c = common::fit_model(dir.path(), 2_000, 13, 50)
        .to_bytes()
        .unwrap();
    let (va, vb, vc) = (version_of(&a), version_of(&b), version_of(&c));
    let h = health(&edge_url);
    assert_eq!(
        (h["model_version"].as_str(), h["model_source"].as_str()),
        (Some(va.as_str()), Some("embedded")),
        "{h}"
    );

    let load = Load::start(edge_url.clone());
    std::thread::sleep(Duration::from_secs(2));

    // Upload B and promote it.
    let (status, up) = upload(&store_url, &b);
    assert_eq!(status, 201, "{up}");
    let promoted = Instant::now();
    let (status, ch) = store_call(
        "PUT",
        &format!("{store_url}/v1/models/channels/live"),
        Some(json!({"version": vb, "actor": "rollout-test"})),
    );
    assert_eq!(
        (status, ch["live"]["version"].as_str()),
        (200, Some(vb.as_str()))
    );
    assert!(
        load.wait_for(
            &vb,
            Duration::from_secs(3),
            2 * INTERVAL + Duration::from_secs(5)
        ),
        "answers did not settle on {vb}"
    );

    // Roll back: live goes back to none, the edges to their embedded A.
    let rolled = Instant::now();
    let (status, ch) = store_call(
        "POST",
        &format!("{store_url}/v1/models/channels/live/rollback"),
        None,
    );
    assert_eq!((status, &ch["live"]), (200, &Value::Null), "{ch}");
    assert!(
        load.wait_for(
            &va,
            Duration::from_secs(3),
            2 * INTERVAL + Duration::from_secs(5)
        ),
        "answers did not settle back on {va}"
    );

    // C as shadow: its scores reach the store beside A's.
    assert_eq!(upload(&store_url, &c).0, 201);
    let (status, _) = store_call(
        "PUT",
        &format!("{store_url}/v1/models/channels/shadow"),
        Some(json!({"version": vc})),
    );
    assert_eq!(status, 200);
    let shadowed = common::wait_for_count(200, 2 * INTERVAL + Duration::from_secs(10), || {
        common::count(
            &pg,
            &format!("select count(*) from transactions where shadow_model_version = '{vc}'"),
        )
    });
    assert!(
        shadowed >= 200,
        "only {shadowed} transactions carry the shadow's score"
    );
    let answers = load.finish();

    // Every answer 200; the switches within 2 × the interval.
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} answers failed, first: {} {}",
        failed.len(),
        failed[0].status,
        failed[0].version
    );
    let in_b: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.at > promoted && a.at < rolled)
        .collect();
    let first_b = in_b.iter().position(|a| a.version == vb).unwrap();
    assert!(
        in_b[first_b..].iter().all(|a| a.version == vb),
        "an A answer after the first B answer"
    );
    let to_b = switch_secs(&in_b, promoted, &vb);
    let back: Vec<&Answer> = answers.iter().filter(|a| a.at > rolled).collect();
    let to_a = switch_secs(&back, rolled, &va);
    let limit = 2.0 * INTERVAL.as_secs_f64();
    assert!(
        to_b <= limit && to_a <= limit,
        "switches took {to_b:.1} s and {to_a:.1} s"
    );
    let before: Vec<&Answer> = answers.iter().filter(|a| a.at < promoted).collect();
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| {
            a.at >= promoted && a.at.saturating_duration_since(promoted).as_secs_f64() <= to_b + 1.0
        })
        .collect();
    // Steady state on the registry model: from 1 s after the switch to the rollback.
    let settled = promoted + Duration::from_secs_f64(to_b + 1.0);
    let steady: Vec<&Answer> = in_b.iter().copied().filter(|a| a.at > settled).collect();
    common::report(format!(
        "rollout: promote → last A answer {to_b:.1} s, rollback → last B answer {to_a:.1} s (interval {} s); \
         embedded A before: {}; during the switch: {}; registry B after it: {}; {} answers, all 200",
        INTERVAL.as_secs(),
        latency(&before),
        latency(&during),
        latency(&steady),
        answers.len()
    ));

    // The comparison: C against A on the same transactions.
    let (status, cmp) = store_call(
        "GET",
        &format!("{store_url}/v1/models/compare?live={va}&shadow={vc}"),
        None,
    );
    assert_eq!(status, 200, "{cmp}");
    let n = cmp["transactions"].as_i64().unwrap();
    assert!(n >= 200, "{cmp}");
    for rate in ["live_alert_rate", "shadow_alert_rate", "agreement"] {
        let r = cmp[rate].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r), "{rate} {r}");
    }
    // Two forests fitted on data of one distribution rank the same transactions alike.
    let rho = cmp["rank_correlation"].as_f64().unwrap();
    assert!(rho > 0.5, "{cmp}");
    assert!(!cmp["disagreements"].as_array().unwrap().is_empty());
    // The edge sends the shadow's own decision beside the live one: both are compared on every
    // shadowed transaction. Forests alone have no probability of fraud to compare.
    let decisions = &cmp["decisions"];
    assert_eq!(decisions["transactions"].as_i64(), Some(n), "{cmp}");
    for side in ["live", "shadow"] {
        let total: f64 = ["block", "review", "allow"]
            .iter()
            .map(|k| decisions[side][k].as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "{side}: {decisions}");
    }
    assert!(cmp.get("fraud_probability").is_none(), "{cmp}");
    common::report(format!(
        "rollout: shadow {vc} vs live {va} on {n} transactions: alert rates {} / {}, agreement {}, \
         rank correlation {rho:.3}; review rates {} / {}, decision agreement {}",
        cmp["live_alert_rate"],
        cmp["shadow_alert_rate"],
        cmp["agreement"],
        decisions["live"]["review"],
        decisions["shadow"]["review"],
        decisions["agreement"]
    ));

    // A corrupt upload: 400 with the reason, the channels unchanged.
    let (_, before_ch) = store_call("GET", &format!("{store_url}/v1/models/channels"), None);
    let mut corrupt = b.clone();
    corrupt[b.len() / 3] ^= 0x01;
    let (status, refused) = upload(&store_url, &corrupt);
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("checksum"),
        "{refused}"
    );
    let (_, after_ch) = store_call("GET", &format!("{store_url}/v1/models/channels"), None);
    assert_eq!(before_ch, after_ch);

    // B live again; then corrupt its stored tables on disk: instances that load them refuse
    // them and keep serving; health shows why; the next refresh stores B again.
    store_call(
        "PUT",
        &format!("{store_url}/v1/models/channels/live"),
        Some(json!({"version": vb})),
    );
    let load = Load::start(edge_url.clone());
    assert!(load.wait_for(
        &vb,
        Duration::from_secs(2),
        2 * INTERVAL + Duration::from_secs(5)
    ));
    // What an instance start reads: B's file and then its tables (the middle is in the tables).
    let key = format!("model/bundle/{vb}/0");
    let original = edge.read_key(&key).unwrap().expect("B is stored");
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    edge.write_key(&key, &bytes).unwrap();
    // New instances start as old ones retire (128 requests each) and check what they load.
    let refused_seen = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let h = health(&edge_url);
        h["verification_failures"].as_u64().unwrap_or(0) > 0
            && h["last_verification_error"]
                .as_str()
                .is_some_and(|e| e.contains("tables"))
    });
    assert!(
        refused_seen,
        "no instance reported the corrupt tables: {}",
        health(&edge_url)
    );
    // Repaired by the next refresh: B again everywhere, from intact parts.
    assert!(load.wait_for(
        &vb,
        Duration::from_secs(3),
        2 * INTERVAL + Duration::from_secs(10)
    ));
    assert_eq!(
        edge.read_key(&key).unwrap().as_deref(),
        Some(&original[..]),
        "the refresh did not store B again"
    );
    let answers = load.finish();
    assert!(answers.iter().all(|a| a.status == 200));

    // The store goes down: B is still served, health says the refresh failed.
    drop(store.take());
    let load = Load::start(edge_url.clone());
    std::thread::sleep(INTERVAL + Duration::from_secs(3));
    let h = health(&edge_url);
    assert_eq!(h["model_version"], vb.as_str(), "{h}");
    assert!(
        h["last_refresh_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{h}"
    );
    let answers = load.finish();
    assert!(answers.iter().all(|a| a.status == 200 && a.version == vb));

    // A restart with the store still down starts on the model the key-value store holds.
    edge.shutdown().unwrap();
    let edge = edge_for(&store_url, kv_dir.path());
    let h = health(&edge.url());
    assert_eq!(
        (h["model_version"].as_str(), h["model_source"].as_str()),
        (Some(vb.as_str()), Some("registry")),
        "{h}"
    );
    let r: Value = common::agent()
        .post(&format!("{}/api/predict", edge.url()))
        .send(PAYLOAD)
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(r["model_version"], vb.as_str());
    common::report(format!(
        "rollout: store down → still {vb}; restarted without the store → {} from the {}",
        h["model_version"], h["model_source"]
    ));
    edge.shutdown().unwrap();

    // What a fresh instance pays to start on the registry model (its parts read from the
    // key-value store and checked in full) against the embedded one: every request on a new
    // instance (reuse 1), nothing forwarded (no store configured, so no background work keeps
    // retired instances alive).
    let fresh = |kv: &Path| {
        let mut config = harness::HarnessConfig::new(&BUILT.component);
        config.key_value_stores = vec!["default".into()];
        config.key_value_dir = Some(kv.to_path_buf());
        config.max_reuse = 1;
        harness::start_edge(config).unwrap()
    };
    // Both edges at once, requests alternating between them, so that a change in the
    // machine's speed hits both alike; the figure is the median of the paired differences.
    let empty = tempfile::tempdir().unwrap();
    let edges = [fresh(empty.path()), fresh(kv_dir.path())];
    let agent = common::agent();
    let mut us: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut paired = Vec::new();
    for i in 0..600 {
        let mut pair = [0i64; 2];
        for (k, (edge, want)) in edges.iter().zip([&va, &vb]).enumerate() {
            let start = Instant::now();
            let mut r = agent
                .post(&format!("{}/api/predict", edge.url()))
                .send(payload(i))
                .unwrap();
            let took = start.elapsed().as_micros() as u64;
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap();
            assert_eq!(status, 200, "{text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["model_version"], want.as_str());
            us[k].push(took);
            pair[k] = took as i64;
        }
        paired.push(pair[1] - pair[0]);
    }
    for edge in edges {
        edge.shutdown().unwrap();
    }
    us.iter_mut().for_each(|u| u.sort_unstable());
    paired.sort_unstable();
    common::report(format!(
        "rollout: a fresh instance per request (reuse 1), 600 requests alternating: embedded \
         model p50 {} µs p99 {} µs; registry model from the key-value store p50 {} µs p99 {} \
         µs; registry − embedded, median of the pairs: {:+} µs",
        pct(&us[0], 0.5),
        pct(&us[0], 0.99),
        pct(&us[1], 0.5),
        pct(&us[1], 0.99),
        paired[paired.len() / 2]
    ));
    // The store back on its address: the outbox drains.
    let _store = StoreService::start_at(&pg.url(), store_addr);
}

/// The signature of `bytes` as `what` by the key of `seed`, in the wire's text form.
fn signed(seed: u8, what: contract::signing::Signed, bytes: &[u8]) -> String {
    contract::signing::SecretKey::from_seed([seed; 32]).sign(what, bytes)
}

/// Uploads `bytes` with `signature` (None: unsigned); the same bytes again replace it.
fn upload_signed(store: &str, bytes: &[u8], signature: Option<&str>) -> u16 {
    let mut request = common::agent()
        .post(&format!("{store}/v1/models"))
        .header("authorization", &format!("Bearer {TOKEN}"));
    if let Some(s) = signature {
        request = request.header("x-signature", s);
    }
    request.send(bytes).unwrap().status().as_u16()
}

fn put_policy(store: &str, text: &str, signature: Option<&str>) -> u16 {
    let mut request = common::agent()
        .put(&format!("{store}/v1/policy"))
        .header("authorization", &format!("Bearer {TOKEN}"));
    if let Some(s) = signature {
        request = request.header("x-signature", s);
    }
    request.send(text).unwrap().status().as_u16()
}

/// Waits until the edge's health says `needle` in `last_refresh_error`; returns the health.
fn refused_with(edge: &str, needle: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = health(edge);
        let error = h["last_refresh_error"].as_str().unwrap_or("");
        if error.contains(needle) || Instant::now() > deadline {
            return h;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn only_models_and_policies_signed_by_a_trusted_key_are_served() {
    use contract::signing::Signed;
    const TRUSTED: u8 = 1;
    const STRANGER: u8 = 2;
    let pg = harness::postgres::TempPostgres::start().unwrap();
    let store = StoreService::start(&pg.url());
    let store_url = store.url();
    let kv_dir = tempfile::tempdir().unwrap();
    let trusted = contract::signing::SecretKey::from_seed([TRUSTED; 32]).public();
    let mut config = harness::HarnessConfig::new(&BUILT.component);
    config.variables = vec![
        ("store_url".into(), store_url.clone()),
        ("store_token".into(), TOKEN.into()),
        ("model_refresh_secs".into(), "1".into()),
        ("trusted_keys".into(), trusted.to_string()),
    ];
    config.key_value_stores = vec!["default".into()];
    config.key_value_dir = Some(kv_dir.path().to_path_buf());
    let edge = harness::start_edge(config).unwrap();
    let edge_url = edge.url();
    let va = version_of(&BUILT.model.to_bytes().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let b = common::fit_model(dir.path(), 2_000, 12, 50)
        .to_bytes()
        .unwrap();
    let vb = version_of(&b);
    let load = Load::start(edge_url.clone());

    // B promoted unsigned, then signed by a stranger, then with a trusted key's signature of
    // other bytes: each refused by the running edge, which keeps answering with A and says why.
    let promote = || {
        let url = format!("{store_url}/v1/models/channels/live");
        store_call("PUT", &url, Some(json!({"version": vb}))).0
    };
    assert_eq!(upload_signed(&store_url, &b, None), 201);
    assert_eq!(promote(), 200);
    let tampered = signed(TRUSTED, Signed::Model, b"some other file");
    for (signature, why) in [
        (None, format!("model {vb} refused: unsigned")),
        (
            Some(signed(STRANGER, Signed::Model, &b)),
            "which this edge does not trust".into(),
        ),
        (Some(tampered), "does not match the bytes".into()),
    ] {
        if let Some(s) = &signature {
            assert_eq!(upload_signed(&store_url, &b, Some(s)), 200);
        }
        let h = refused_with(&edge_url, &why);
        let error = h["last_refresh_error"].as_str().unwrap_or("");
        assert!(error.contains(&why), "{why:?} not in {h}");
        assert_eq!(h["model_version"].as_str(), Some(va.as_str()), "{h}");
    }
    // Signed by the trusted key: served within the refresh interval.
    let good = signed(TRUSTED, Signed::Model, &b);
    assert_eq!(upload_signed(&store_url, &b, Some(&good)), 200);
    assert!(
        load.wait_for(&vb, Duration::from_secs(2), Duration::from_secs(30)),
        "the signed model was not served"
    );
    let answers = load.finish();
    let failed: Vec<_> = answers
        .iter()
        .filter(|a| a.status != 200)
        .map(|a| a.status)
        .collect();
    assert!(
        failed.is_empty(),
        "{} answers not 200: {failed:?}",
        failed.len()
    );
    let before_b = answers.iter().take_while(|a| a.version != vb).count();
    assert!(before_b > 20, "answers came from A throughout the refusals");
    assert!(answers[..before_b].iter().all(|a| a.version == va));
    let h = health(&edge_url);
    assert_eq!(h["last_refresh_error"], Value::Null, "{h}");

    // Policies: a block-everything policy is refused unsigned, by a stranger and tampered;
    // signed by the trusted key, it is in force.
    let policy = "[[rule]]\nname = \"all\"\nwhen = \"amount > 0\"\noutcome = \"block\"\n";
    let decision = || {
        let mut r = common::agent()
            .post(&format!("{edge_url}/api/predict"))
            .header("content-type", "application/json")
            .send(PAYLOAD)
            .unwrap();
        let body: Value = r.body_mut().read_json().unwrap();
        (
            r.status().as_u16(),
            body["decision"].as_str().unwrap_or("").to_string(),
        )
    };
    for (signature, why) in [
        (None, "policy revision 1 refused: unsigned".to_string()),
        (
            Some(signed(STRANGER, Signed::Policy, policy.as_bytes())),
            "which this edge does not trust".into(),
        ),
        (
            Some(signed(TRUSTED, Signed::Model, policy.as_bytes())),
            "does not match the bytes".into(),
        ),
    ] {
        assert_eq!(put_policy(&store_url, policy, signature.as_deref()), 201);
        let h = refused_with(&edge_url, &why);
        assert!(
            h["last_refresh_error"]
                .as_str()
                .unwrap_or("")
                .contains(&why),
            "{why:?} not in {h}"
        );
        assert_eq!(h["policy_rules"], 0, "{h}");
        let (status, decision) = decision();
        assert_eq!(status, 200);
        assert_ne!(decision, "block");
    }
    let good = signed(TRUSTED, Signed::Policy, policy.as_bytes());
    assert_eq!(put_policy(&store_url, policy, Some(&good)), 201);
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(&edge_url)["policy_rules"] != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(decision(), (200, "block".to_string()));
    drop(store);
}
