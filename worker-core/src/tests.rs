//! The core against an in-memory host: a manual clock, a key-value map, a scripted store.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use super::*;

/// What the fake store does with one POST body (a JSON array of events).
type StoreScript = Box<dyn FnMut(&[Value]) -> PostAnswer>;

struct FakeHost {
    clock: Cell<u64>,
    counter: Cell<u64>,
    tasks: RefCell<Vec<Task>>,
    kv: RefCell<BTreeMap<String, Vec<u8>>>,
    kv_down: Cell<bool>,
    /// Only the atomic increment fails (rate limits fall back to per-instance buckets).
    increment_down: Cell<bool>,
    /// Runs on the key-value map just before each velocity swap compares (another writer).
    interfere: RefCell<Option<Interference>>,
    /// Swaps report `Written` even when the value changed and nothing was written, as Spin's
    /// Redis store does.
    swap_lies: Cell<bool>,
    /// Swaps and sleeps yield to the executor once before they complete, as a real store's and
    /// clock's do (concurrent requests of one instance interleave).
    yields: Cell<bool>,
    /// Velocity swaps attempted.
    swaps: Cell<u32>,
    /// Velocity state read with `state_get` (outside a compare-and-swap).
    state_reads: Cell<u32>,
    store: RefCell<StoreScript>,
    /// Every body POSTed to the store, parsed.
    posts: RefCell<Vec<Vec<Value>>>,
    gets: RefCell<Vec<String>>,
    /// Every key read with `kv_get`, in order.
    kv_reads: RefCell<Vec<String>>,
    /// The embedded tables' memory, as the worker keeps it (`Host::embedded_tables`): None
    /// = no such memory; else who has it (0 nobody, 1 the tables, 2 a value received).
    resident: Cell<Option<u8>>,
    /// Keys read with `kv_get_resident` into that memory.
    resident_reads: RefCell<Vec<String>>,
    /// What the store answers to `GET /v1/dashboard`.
    dashboard: RefCell<Box<dyn Fn() -> Value>>,
    /// What the registry answers to a GET of bytes (url, If-None-Match).
    registry: RefCell<RegistryScript>,
}

type Interference = Box<dyn FnMut(&mut BTreeMap<String, Vec<u8>>)>;

/// Pending once (waking itself), then ready: the executor runs its other futures in between.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// A compare-and-swap on the fake key-value map: the key and the value `state_current` read.
struct FakeCas {
    key: String,
    read: RefCell<Option<Option<Vec<u8>>>>,
}

type RegistryScript = Box<dyn FnMut(&str, Option<&str>) -> Result<Fetched, String>>;

/// A dashboard as the store serves it.
fn store_dashboard() -> Value {
    json!({
        "stats": {"total_transactions": 1, "anomalies_detected": 0, "avg_anomaly_score": 0.1, "anomaly_rate": 0.0},
        "hourly_distribution": (0..24).map(|h| json!({"hour": h, "total_transactions": 0, "anomalies": 0})).collect::<Vec<_>>(),
        "feedback": {"total_feedback": 0, "positive_feedback": 0, "accuracy": 0.0},
        "window_days": 7,
        "generated_at": "2026-12-01T00:00:00Z",
    })
}

impl FakeHost {
    fn new(store: StoreScript) -> &'static FakeHost {
        Box::leak(Box::new(FakeHost {
            clock: Cell::new(1_000_000_000),
            counter: Cell::new(0),
            tasks: RefCell::new(Vec::new()),
            kv: RefCell::new(BTreeMap::new()),
            kv_down: Cell::new(false),
            increment_down: Cell::new(false),
            interfere: RefCell::new(None),
            swap_lies: Cell::new(false),
            yields: Cell::new(false),
            swaps: Cell::new(0),
            state_reads: Cell::new(0),
            store: RefCell::new(store),
            posts: RefCell::new(Vec::new()),
            gets: RefCell::new(Vec::new()),
            kv_reads: RefCell::new(Vec::new()),
            resident: Cell::new(None),
            resident_reads: RefCell::new(Vec::new()),
            dashboard: RefCell::new(Box::new(store_dashboard)),
            registry: RefCell::new(Box::new(|_, _| Err("no registry".into()))),
        }))
    }

    /// Runs background tasks (flushes) until none are left.
    fn run_tasks(&self) {
        loop {
            let next = self.tasks.borrow_mut().pop();
            match next {
                Some(task) => futures::executor::block_on(task),
                None => break,
            }
        }
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.kv
            .borrow()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn events_under(&self, prefix: &str) -> Vec<Value> {
        self.kv
            .borrow()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .flat_map(|(_, v)| serde_json::from_slice::<Vec<Value>>(v).unwrap())
            .collect()
    }

    fn delivered(&self) -> Vec<Value> {
        self.posts.borrow().iter().flatten().cloned().collect()
    }
}

impl Host for FakeHost {
    type Cas = FakeCas;
    fn monotonic_ns(&self) -> u64 {
        self.clock.get()
    }
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_nanos(1_796_000_000_000_000_000 + self.clock.get() as i64)
    }
    fn random_bytes<const N: usize>(&self) -> [u8; N] {
        // Distinct per call, like a CSPRNG's output would be.
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let seed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
        std::array::from_fn(|i| seed[i % 8] ^ (i as u8))
    }
    fn spawn(&self, task: Task) {
        self.tasks.borrow_mut().push(task);
    }
    async fn sleep(&self, ns: u64) {
        self.clock.set(self.clock.get() + ns);
        if self.yields.get() {
            yield_now().await;
        }
    }
    async fn post_json(&self, url: &str, token: &str, body: String, _: u64) -> PostAnswer {
        if self.yields.get() {
            yield_now().await;
        }
        assert!(url.ends_with("/v1/events"), "{url}");
        assert_eq!(token, "tok");
        let events: Vec<Value> = serde_json::from_str(&body).unwrap();
        let answer = (self.store.borrow_mut())(&events);
        if matches!(answer, PostAnswer::Status(200, _)) {
            self.posts.borrow_mut().push(events);
        }
        answer
    }
    async fn get_json(&self, url: &str, _: &str) -> Result<(u16, Value), String> {
        self.gets.borrow_mut().push(url.to_owned());
        if url.contains("/v1/dashboard") {
            Ok((200, (self.dashboard.borrow())()))
        } else if url.contains("/v1/transactions?page=1") {
            Ok((
                200,
                json!({"transactions": [], "pagination": {"page": 1, "per_page": 20, "total": 0, "pages": 0}}),
            ))
        } else {
            Ok((
                400,
                json!({"error": "`page` must be an integer from 1 to 1000000"}),
            ))
        }
    }
    async fn get_bytes(
        &self,
        url: &str,
        _: &str,
        if_none_match: Option<&str>,
        _: u64,
    ) -> Result<Fetched, String> {
        self.gets.borrow_mut().push(url.to_owned());
        (self.registry.borrow_mut())(url, if_none_match)
    }
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        if self.kv_down.get() {
            return Err("kv down".into());
        }
        self.kv_reads.borrow_mut().push(key.to_string());
        Ok(self.kv.borrow().get(key).cloned())
    }
    async fn kv_get_resident(&self, key: &str, len: usize) -> Result<Option<Vec<u8>>, String> {
        if self.resident.get() == Some(0) && len <= embedded_tables().len() {
            self.resident.set(Some(2));
            self.resident_reads.borrow_mut().push(key.to_string());
        }
        self.kv_get(key).await
    }
    fn embedded_tables(&self) -> Option<&'static [u8]> {
        match self.resident.get() {
            Some(0 | 1) => {
                self.resident.set(Some(1));
                Some(embedded_tables())
            }
            _ => None,
        }
    }
    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        if self.kv_down.get() {
            return Err("kv down".into());
        }
        self.kv.borrow_mut().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.state_reads.set(self.state_reads.get() + 1);
        if self.yields.get() {
            yield_now().await;
        }
        self.kv_get(key).await
    }
    async fn state_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        if self.yields.get() {
            yield_now().await;
        }
        self.kv_set(key, value).await
    }
    async fn state_cas(&self, key: &str) -> Result<FakeCas, String> {
        Ok(FakeCas {
            key: key.to_owned(),
            read: RefCell::new(None),
        })
    }
    async fn state_current(&self, cas: &FakeCas) -> Result<Option<Vec<u8>>, String> {
        let value = self.kv_get(&cas.key).await?;
        *cas.read.borrow_mut() = Some(value.clone());
        Ok(value)
    }
    async fn state_swap(&self, cas: FakeCas, value: Vec<u8>) -> Result<Swap<FakeCas>, String> {
        self.swaps.set(self.swaps.get() + 1);
        if self.yields.get() {
            yield_now().await;
        }
        if self.kv_down.get() {
            return Err("kv down".into());
        }
        if let Some(f) = self.interfere.borrow_mut().as_mut() {
            f(&mut self.kv.borrow_mut());
        }
        let read = cas.read.borrow_mut().take().ok_or("swap before current")?;
        let mut kv = self.kv.borrow_mut();
        if kv.get(&cas.key) == read.as_ref() {
            kv.insert(cas.key, value);
            Ok(Swap::Written)
        } else if self.swap_lies.get() {
            Ok(Swap::Written)
        } else {
            let key = cas.key;
            let now = kv.get(&key).cloned();
            Ok(Swap::Conflict(FakeCas {
                key,
                read: RefCell::new(Some(now)),
            }))
        }
    }
    async fn state_increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        if self.yields.get() {
            yield_now().await;
        }
        if self.kv_down.get() || self.increment_down.get() {
            return Err("increment down".into());
        }
        let mut kv = self.kv.borrow_mut();
        let n = kv
            .get(key)
            .map_or(0, |v| i64::from_le_bytes(v.as_slice().try_into().unwrap()));
        kv.insert(key.to_owned(), (n + delta).to_le_bytes().to_vec());
        Ok(n + delta)
    }
    async fn state_delete(&self, key: &str) -> Result<(), String> {
        self.kv_delete(key).await
    }
    async fn kv_delete(&self, key: &str) -> Result<(), String> {
        self.kv.borrow_mut().remove(key);
        Ok(())
    }
    async fn kv_keys(&self) -> Result<Vec<String>, String> {
        Ok(self.kv.borrow().keys().cloned().collect())
    }
}

fn accept_all() -> StoreScript {
    Box::new(|events| PostAnswer::Status(200, format!("{{\"accepted\":{}}}", events.len())))
}

/// `data/model.sfm`'s explanation tables, as the worker embeds them.
fn embedded_tables() -> &'static [u8] {
    static TABLES: std::sync::OnceLock<&'static [u8]> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let model = Model::from_bytes(include_bytes!("../../data/model.sfm")).unwrap();
        model.explanation_tables().leak()
    })
}

fn loaded() -> Result<Loaded, String> {
    static FILE: &[u8] = include_bytes!("../../data/model.sfm");
    let model = Model::from_bytes(FILE).map_err(|e| e.to_string())?;
    let id = model_format::ModelId::of(FILE).map_err(|e| e.to_string())?;
    Ok(Loaded::new(model, id, FILE, Vec::new(), false))
}

fn app_with(host: &'static FakeHost, f: impl FnOnce(&mut Variables)) -> &'static App<FakeHost> {
    let mut v = Variables {
        store_url: "http://store.test".into(),
        store_token: "tok".into(),
        ..Variables::default()
    };
    f(&mut v);
    Box::leak(Box::new(App::new(host, &v, loaded())))
}

fn request(method: &str, uri: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// (status, JSON body) of one request.
fn call(app: &'static App<FakeHost>, req: Request<Full<Bytes>>) -> (u16, Value) {
    let resp = futures::executor::block_on(app.handle(req));
    let status = resp.status().as_u16();
    let length = resp.headers().get("content-length").cloned();
    let body = resp.into_body();
    if status != 204 {
        assert_eq!(
            length.unwrap(),
            body.len().to_string().as_str(),
            "content-length"
        );
    }
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn tx(i: usize) -> Value {
    json!({"amount": 10.0 + i as f64, "hour": i % 24, "day_of_week": i % 7,
           "merchant_category": i % 10, "transaction_type": i % 3})
}

fn predict(app: &'static App<FakeHost>, i: usize) -> Value {
    let (status, body) = call(
        app,
        request("POST", "/api/predict?explain=false", &tx(i).to_string()),
    );
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn routes_methods_and_preflight() {
    let host = FakeHost::new(accept_all());
    let app = app_with(host, |v| v.cors_origins = "https://ui.example".into());
    let (status, health) = call(app, request("GET", "/api/health", ""));
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    assert_eq!(health["database"], "forwarding");
    assert_eq!(
        call(app, request("GET", "/api/model", "")).1["n_trees"],
        100
    );
    assert_eq!(call(app, request("GET", "/nope", "")).0, 404);
    let resp = futures::executor::block_on(app.handle(request("GET", "/api/predict", "")));
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let mut pre = request("OPTIONS", "/api/predict", "");
    pre.headers_mut()
        .insert("origin", HeaderValue::from_static("https://ui.example"));
    let resp = futures::executor::block_on(app.handle(pre));
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://ui.example"
    );
    assert_eq!(resp.headers()["vary"], "Origin");
    assert_eq!(resp.headers()["allow"], "POST, OPTIONS");
    let (status, warm) = call(app, request("POST", "/api/warmup", ""));
    assert_eq!(
        (status, warm["explanations_ready"].as_bool()),
        (200, Some(true))
    );
}

#[test]
fn api_keys_guard_everything_but_health() {
    let host = FakeHost::new(accept_all());
    let app = app_with(host, |v| v.api_keys = "k1".into());
    assert_eq!(call(app, request("GET", "/api/health", "")).0, 200);
    let resp = futures::executor::block_on(app.handle(request("POST", "/api/predict", "{}")));
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let mut ok = request("POST", "/api/predict", &tx(1).to_string());
    ok.headers_mut()
        .insert("x-api-key", HeaderValue::from_static("k1"));
    assert_eq!(call(app, ok).0, 200);
}

/// A prediction with key `key`: its status and `Retry-After`.
fn predict_as(app: &'static App<FakeHost>, key: &'static str) -> (u16, Option<u64>) {
    let mut req = request("POST", "/api/predict?explain=false", &tx(1).to_string());
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static(key));
    let resp = futures::executor::block_on(app.handle(req));
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (resp.status().as_u16(), retry)
}

#[test]
fn a_keys_rate_is_counted_across_instances_and_answered_429_with_retry_after() {
    let host = FakeHost::new(accept_all());
    let limited = |v: &mut Variables| {
        v.api_keys = "mobile:k1, web:k2".into();
        v.rate_limits = "mobile=5/5".into();
    };
    // Two instances of one edge: they share the host's key-value store, nothing else.
    let (a, b) = (app_with(host, limited), app_with(host, limited));
    let statuses: Vec<u16> = (0..5)
        .map(|i| predict_as(if i % 2 == 0 { a } else { b }, "k1").0)
        .collect();
    assert_eq!(statuses, [200; 5]);
    host.run_tasks();
    let (status, retry) = predict_as(b, "k1");
    assert_eq!(status, 429);
    let retry = retry.expect("a 429 says when to retry");
    let mut req = request("POST", "/api/predict", &tx(1).to_string());
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static("k1"));
    let (_, body) = call(a, req);
    assert!(
        body["error"].as_str().unwrap().contains("mobile"),
        "the answer names the key: {body}"
    );
    // Refused requests are not counted, and other keys are not limited.
    for _ in 0..20 {
        assert_eq!(predict_as(a, "k1").0, 429);
    }
    assert_eq!(predict_as(a, "k2"), (200, None));
    assert_eq!(call(a, request("GET", "/api/health", "")).0, 200);
    // Retry-After is honest: after it, the key is admitted again.
    host.clock.set(host.clock.get() + retry * 1_000_000_000);
    assert_eq!(predict_as(a, "k1").0, 200);
    host.run_tasks();
    // Refused requests forwarded nothing: 5 + 1 limited and 1 unlimited (each once: the two
    // instances may both deliver an entry of the shared outbox, which the store deduplicates).
    let distinct: std::collections::BTreeSet<String> =
        host.delivered().iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), 7);
    // Old windows are cleared: a key's counts stay at a few entries.
    for _ in 0..10 {
        host.clock.set(host.clock.get() + 3_000_000_000);
        predict_as(a, "k1");
        host.run_tasks();
    }
    assert!(
        host.keys(RATE_PREFIX).len() <= 4,
        "{:?}",
        host.keys(RATE_PREFIX)
    );
}

#[test]
fn without_the_stores_increment_each_instance_limits_on_its_own() {
    let host = FakeHost::new(accept_all());
    host.increment_down.set(true);
    let limited = |v: &mut Variables| {
        v.api_keys = "k1".into();
        v.rate_limits = "*=2/3".into();
    };
    let (a, b) = (app_with(host, limited), app_with(host, limited));
    for app in [a, b] {
        let statuses: Vec<u16> = (0..4).map(|_| predict_as(app, "k1").0).collect();
        assert_eq!(statuses, [200, 200, 200, 429], "a bucket of 3 per instance");
    }
    // Refilled at 2 per second.
    host.clock.set(host.clock.get() + 1_000_000_000);
    let statuses: Vec<u16> = (0..3).map(|_| predict_as(a, "k1").0).collect();
    assert_eq!(statuses, [200, 200, 429]);
}

#[test]
fn bad_requests_are_the_callers_and_named() {
    let host = FakeHost::new(accept_all());
    let app = app_with(host, |_| {});
    let (status, body) = call(app, request("POST", "/api/predict", "{not json"));
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("invalid JSON"));
    let (status, body) = call(app, request("POST", "/api/predict", r#"{"hour": 3}"#));
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("amount"), "{body}");
    let mut xml = request("POST", "/api/predict", "<a/>");
    xml.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/xml"));
    assert_eq!(call(app, xml).0, 415);
    let big = format!("[{}]", "1,".repeat(600_000));
    assert_eq!(call(app, request("POST", "/api/predict", &big)).0, 413);
    let (status, body) = call(
        app,
        request("POST", "/api/predict?explain=maybe", &tx(0).to_string()),
    );
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("'explain'"));
    let (status, body) = call(
        app,
        request("POST", "/api/predict?explain=FALSE", &tx(0).to_string()),
    );
    assert_eq!(status, 200);
    assert!(body.get("shap_explanation").is_none());
    // Nothing bad was forwarded.
    host.run_tasks();
    assert_eq!(host.delivered().len(), 1);
}

#[test]
fn predictions_carry_both_ids_and_forward_one_event_each() {
    let host = FakeHost::new(accept_all());
    let app = app_with(host, |v| v.edge_region = "eu".into());
    let (status, p) = call(app, request("POST", "/api/predict", &tx(7).to_string()));
    assert_eq!(status, 200);
    let uuid = p["transaction_id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::try_parse(uuid).unwrap().get_version_num(), 7);
    assert_eq!(p["transaction_uuid"], uuid);
    let legacy = p["legacy_id"].as_u64().unwrap();
    assert!(contract::legacy_id::is_valid(legacy));
    assert_eq!(p["shap_explanation"].as_object().unwrap().len(), 5);
    let second = predict(app, 8);
    assert_eq!(
        second["legacy_id"].as_u64().unwrap(),
        legacy % contract::legacy_id::MAX + 1
    );
    host.run_tasks();
    let events = host.delivered();
    assert_eq!(events.len(), 2);
    let e = contract::Event::from_value(events[0].clone()).unwrap();
    let contract::Event::ScoredTransaction(s) = e else {
        panic!()
    };
    assert_eq!(s.transaction_id.to_string(), uuid);
    assert_eq!(s.legacy_id, Some(legacy));
    assert_eq!(s.region.as_deref(), Some("eu"));
    assert_eq!(s.features.get("amount"), Some(17.0));
    assert_eq!(s.explanation.unwrap().len(), 5);

    // With transaction_id_format=legacy, transaction_id is the integer.
    let app = app_with(FakeHost::new(accept_all()), |v| {
        v.transaction_id_format = "legacy".into();
    });
    let p = predict(app, 1);
    assert_eq!(p["transaction_id"], p["legacy_id"]);
    assert!(p["transaction_uuid"].is_string());
}

#[test]
fn legacy_sized_batches_are_scored_and_oversized_ones_refused() {
    let host = FakeHost::new(accept_all());
    let app = app_with(host, |_| {});
    let mut items: Vec<Value> = (0..1100).map(tx).collect();
    items[5] = json!({"amount": "lots"});
    let body = json!({"transactions": items}).to_string();
    let (status, b) = call(app, request("POST", "/api/predict-batch", &body));
    assert_eq!(status, 200);
    assert_eq!(
        (b["total_processed"].as_u64(), b["failed"].as_u64()),
        (Some(1100), Some(1))
    );
    assert_eq!(b["results"][5]["index"], 5);
    assert!(b["results"][5]["error"].is_string());
    assert_eq!(b["results"][6]["index"], 6);
    host.run_tasks();
    // 1,099 events in batches of at most 500.
    let posts = host.posts.borrow();
    assert_eq!(
        posts.iter().map(Vec::len).collect::<Vec<_>>(),
        [500, 500, 99]
    );
    drop(posts);
    let over = json!({"transactions": vec![json!({"amount": 1}); 10_001]}).to_string();
    let (status, b) = call(app, request("POST", "/api/predict-batch", &over));
    assert_eq!(status, 413, "{b}");
    assert!(b["error"].as_str().unwrap().contains("at most 10000"));
}

#[test]
fn feedback_by_uuid_or_legacy_id_and_nul_refused_at_the_edge() {
    let host = FakeHost::new(accept_all());
    let app = app_with(host, |_| {});
    let p = predict(app, 1);
    let legacy = p["legacy_id"].as_u64().unwrap();
    let (status, a) = call(
        app,
        request(
            "POST",
            "/api/feedback",
            &json!({"transaction_id": legacy, "feedback": true}).to_string(),
        ),
    );
    assert_eq!(status, 202, "{a}");
    assert_eq!(a["transaction_id"], legacy);
    let (status, _) = call(
        app,
        request(
            "POST",
            "/api/feedback",
            &json!({"transaction_id": p["transaction_id"], "feedback": false}).to_string(),
        ),
    );
    assert_eq!(status, 202);
    let (status, a) = call(
        app,
        request(
            "POST",
            "/api/feedback",
            &json!({"transaction_id": legacy, "feedback": true, "comments": "x\u{0}y"}).to_string(),
        ),
    );
    assert_eq!(status, 400);
    assert!(a["error"].as_str().unwrap().contains("'comments'"), "{a}");
    host.run_tasks();
    let kinds: Vec<(String, Value)> = host
        .delivered()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["legacy_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("scored_transaction".to_owned(), json!(legacy)),
            ("feedback".to_owned(), json!(legacy)),
            ("feedback".to_owned(), Value::Null),
        ]
    );
    // Without a store: 503.
    let app = app_with(FakeHost::new(accept_all()), |v| v.store_token.clear());
    let body = json!({"transaction_id": 5, "feedback": true}).to_string();
    assert_eq!(call(app, request("POST", "/api/feedback", &body)).0, 503);
}

/// A store that refuses any batch holding an event with `"comments": "poison"`, naming it by
/// index when `with_index`.
fn poison_store(with_index: bool) -> StoreScript {
    Box::new(
        move |events| match events.iter().position(|e| e["comments"] == "poison") {
            Some(i) => {
                let index = if with_index {
                    format!(",\"index\":{i}")
                } else {
                    String::new()
                };
                PostAnswer::Status(400, format!("{{\"error\":\"event {i}: bad\"{index}}}"))
            }
            None => PostAnswer::Status(200, "{}".into()),
        },
    )
}

fn refused_event_is_dead_lettered_alone(with_index: bool) {
    let host = FakeHost::new(poison_store(with_index));
    let app = app_with(host, |_| {});
    for i in 0..40 {
        predict(app, i);
    }
    // A feedback the edge's rules accept but this store refuses (a version skew).
    let poison = contract::Event::Feedback(contract::Feedback {
        event_id: ids::new_uuid(host),
        transaction_id: Some(ids::new_uuid(host)),
        legacy_id: None,
        label: true,
        comments: Some("poison".into()),
        created_at: host.now(),
    });
    futures::executor::block_on(app.forward(vec![poison])).unwrap();
    for i in 40..100 {
        predict(app, i);
    }
    host.run_tasks();
    assert_eq!(host.delivered().len(), 100);
    let dead = host.events_under(DEAD_LETTER);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["comments"], "poison");
    assert!(host.keys(OUTBOX).is_empty());
    assert_eq!(app.forwarder().pending(), 0);
}

#[test]
fn a_refused_event_named_by_index_is_dead_lettered_alone() {
    refused_event_is_dead_lettered_alone(true);
}

#[test]
fn a_refused_batch_without_an_index_is_halved_down_to_the_bad_event() {
    refused_event_is_dead_lettered_alone(false);
}

/// A host whose store refuses connections until the returned flag is set.
fn host_with_a_store_that_is_down() -> (&'static FakeHost, std::rc::Rc<Cell<bool>>) {
    let up = std::rc::Rc::new(Cell::new(false));
    let flag = up.clone();
    let host = FakeHost::new(Box::new(move |events| {
        if flag.get() {
            PostAnswer::Status(200, format!("{{\"accepted\":{}}}", events.len()))
        } else {
            PostAnswer::Failed("connection refused".into())
        }
    }));
    (host, up)
}

#[test]
fn outage_goes_to_the_outbox_and_drains_once_the_store_is_back() {
    let (host, up) = host_with_a_store_that_is_down();
    let app = app_with(host, |_| {});
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            predict(app, i)["transaction_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        host.run_tasks();
    }
    assert_eq!(host.delivered().len(), 0);
    let parked = host.events_under(OUTBOX);
    assert_eq!(parked.len(), 30);
    up.set(true);
    // Past the cool-down, and the parked entries old enough for a drain to take them.
    host.clock.set(host.clock.get() + 3_000_000_000);
    ids.push(
        predict(app, 30)["transaction_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    host.run_tasks();
    let delivered: Vec<String> = host
        .delivered()
        .iter()
        .map(|e| e["transaction_id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = delivered.clone();
    sorted.sort();
    ids.sort();
    assert_eq!(sorted, ids, "every prediction delivered exactly once");
    assert!(host.keys(OUTBOX).is_empty());
}

/// An edge whose delivery of one prediction failed, and a store that is back since: the edge
/// takes it as down for the rest of its cool-down.
fn an_edge_in_its_cool_down() -> (&'static FakeHost, &'static App<FakeHost>) {
    let (host, up) = host_with_a_store_that_is_down();
    let app = app_with(host, |_| {});
    predict(app, 0);
    host.run_tasks();
    assert_eq!(host.delivered().len(), 0);
    up.set(true);
    (host, app)
}

#[test]
fn a_busy_edge_tries_the_store_again_after_the_cool_down() {
    let (host, app) = an_edge_in_its_cool_down();
    // A request every 100 ms: the flushes in the cool-down leave their events in the outbox
    // but must not renew it, or an edge that never pauses would never try the store again.
    for i in 1..=30 {
        host.clock.set(host.clock.get() + 100_000_000);
        predict(app, i);
        host.run_tasks();
    }
    assert_eq!(host.delivered().len(), 31);
    assert!(host.keys(OUTBOX).is_empty());
}

#[test]
fn requests_answered_in_the_cool_down_are_delivered_when_the_edge_then_goes_idle() {
    let (host, app) = an_edge_in_its_cool_down();
    // These are only journaled; then no request comes again.
    for i in 1..=3 {
        predict(app, i);
    }
    host.run_tasks();
    assert_eq!(host.delivered().len(), 4, "{:?}", host.keys(OUTBOX));
    assert!(host.keys(OUTBOX).is_empty());
}

#[test]
fn with_the_key_value_store_down_nothing_is_answered_that_could_be_lost() {
    // Journal on (the default): the outbox cannot be written, so the transaction is not
    // answered (503, retry) rather than answered and held where a crash would lose it.
    let host = FakeHost::new(Box::new(|_| PostAnswer::TimedOut));
    let app = app_with(host, |_| {});
    host.kv_down.set(true);
    let (status, body) = call(
        app,
        request("POST", "/api/predict?explain=false", &tx(1).to_string()),
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("could not be recorded")
    );
    host.run_tasks();
    assert_eq!(app.forwarder().pending(), 0);
    // Journal off: answered, and the event waits in memory (lost if the process dies now).
    let host = FakeHost::new(Box::new(|_| PostAnswer::TimedOut));
    let app = app_with(host, |v| v.forward_journal = "off".into());
    host.kv_down.set(true);
    predict(app, 1);
    host.run_tasks();
    assert_eq!(app.forwarder().pending(), 1);
}

#[test]
fn an_answered_transaction_is_in_the_outbox_before_the_answer_and_survives_its_instance() {
    let host = FakeHost::new(accept_all());
    let app = app_with(host, |_| {});
    let ids: Vec<String> = (0..5)
        .map(|i| {
            predict(app, i)["transaction_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // Answered, not yet sent: every one is in the outbox already.
    let mut journaled: Vec<String> = host
        .events_under(OUTBOX)
        .iter()
        .map(|e| e["transaction_id"].as_str().unwrap().to_owned())
        .collect();
    journaled.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(journaled, expected);
    // The instance dies with its flush never run (kill -9): its tasks are gone.
    host.tasks.borrow_mut().clear();
    // A new instance on the same key-value store, only health probes: once the entries are
    // old enough to be orphans, a probe drains them.
    let next = app_with(host, |_| {});
    assert_eq!(call(next, request("GET", "/api/health", "")).0, 200);
    host.run_tasks();
    assert!(
        host.delivered().is_empty(),
        "young entries belong to a live flush"
    );
    host.clock.set(host.clock.get() + 3_000_000_000);
    assert_eq!(call(next, request("GET", "/api/health", "")).0, 200);
    host.run_tasks();
    let mut delivered: Vec<String> = host
        .delivered()
        .iter()
        .map(|e| e["transaction_id"].as_str().unwrap().to_owned())
        .collect();
    delivered.sort();
    assert_eq!(delivered, expected);
    assert!(host.keys(OUTBOX).is_empty());
    // Delivered by the live flush: deleted from the outbox, sent once.
    predict(next, 9);
    host.run_tasks();
    assert_eq!(host.delivered().len(), 6);
    assert!(host.keys(OUTBOX).is_empty());
}

/// Polls a task once (its wakes are ignored: the caller polls again); true once it is done.
fn poll_once(task: &mut crate::host::Task) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    task.as_mut().poll(&mut cx).is_ready()
}

#[test]
fn entries_an_outage_left_drain_even_when_the_first_drain_meets_a_burst() {
    // Entries of an instance that stopped delivering (here: killed), 1.7 s old when the
    // database is back: stale, not yet orphans, so the first drain leaves them.
    let host = FakeHost::new(accept_all());
    let dead = app_with(host, |_| {});
    for i in 0..5 {
        predict(dead, i);
    }
    host.tasks.borrow_mut().clear();
    host.clock.set(host.clock.get() + 1_700_000_000);
    host.yields.set(true);
    // A new instance gets a burst: a request comes whenever its flush waits (for events to
    // gather, for the store's answer), so the queue is seldom empty when the first drain ends.
    let next = app_with(host, |_| {});
    predict(next, 10);
    // The first task a prediction spawns is its flush (the model check comes after it).
    let mut flush = host.tasks.borrow_mut().remove(0);
    let mut burst = 1;
    while !poll_once(&mut flush) {
        if burst < 8 {
            predict(next, 10 + burst);
            burst += 1;
        }
    }
    host.run_tasks();
    // Then the edge goes idle: no request comes to start another drain, yet all arrived.
    assert_eq!(host.delivered().len(), 5 + 8, "{:?}", host.keys(OUTBOX));
    assert!(host.keys(OUTBOX).is_empty());
}

#[test]
fn dashboard_is_cached_and_listing_errors_pass_through() {
    let host = FakeHost::new(accept_all());
    let app = app_with(host, |_| {});
    let (status, d) = call(app, request("GET", "/api/dashboard", ""));
    assert_eq!((status, d["cached"].as_bool()), (200, Some(false)));
    let (_, d) = call(app, request("GET", "/api/dashboard", ""));
    assert_eq!(d["cached"], true);
    assert_eq!(host.gets.borrow().len(), 1);
    assert!(d.get("stale").is_none());
    assert_eq!(d["stats"]["total_transactions"], 1);
    let (status, l) = call(app, request("GET", "/api/transactions?page=0", ""));
    assert_eq!(status, 400);
    assert!(l["error"].as_str().unwrap().contains("page"));
    assert_eq!(
        host.gets.borrow()[1],
        "http://store.test/v1/transactions?page=0"
    );
    let (status, l) = call(app, request("GET", "/api/transactions?page=1", ""));
    assert_eq!((status, l["pagination"]["pages"].as_i64()), (200, Some(0)));
}

#[test]
fn a_store_answer_of_another_shape_is_a_bad_gateway() {
    let host = FakeHost::new(accept_all());
    *host.dashboard.borrow_mut() = Box::new(|| json!({"stats": {"total_transactions": 1}}));
    let app = app_with(host, |_| {});
    let (status, d) = call(app, request("GET", "/api/dashboard", ""));
    assert_eq!(status, 502);
    assert!(
        d["error"].as_str().unwrap().contains("another shape"),
        "{d}"
    );
}

#[test]
fn a_missing_model_is_a_server_error() {
    let host = FakeHost::new(accept_all());
    let v = Variables::default();
    let app: &'static App<FakeHost> = Box::leak(Box::new(App::new(
        host,
        &v,
        Err("embedded model is invalid".into()),
    )));
    let (status, h) = call(app, request("GET", "/api/health", ""));
    assert_eq!((status, h["status"].as_str()), (500, Some("unhealthy")));
    assert_eq!(
        call(app, request("POST", "/api/predict", &tx(1).to_string())).0,
        500
    );
}

/// The repository's model under other metadata: another version with the same forest.
fn model_b() -> Vec<u8> {
    static FILE: &[u8] = include_bytes!("../../data/model.sfm");
    let m = Model::from_bytes(FILE).unwrap();
    Model::new(
        m.features().to_vec(),
        m.scaler().clone(),
        m.forest().clone(),
        vec![("variant".into(), "b".into())],
    )
    .unwrap()
    .with_normalization(m.normalization().clone())
    .unwrap()
    .to_bytes()
    .unwrap()
}

/// A host whose registry's `live` channel names model B, and an instance that pulled, stored
/// and serves it: (host, B's version, the instance).
fn an_instance_serving_model_b() -> (&'static FakeHost, String, &'static App<FakeHost>) {
    let host = FakeHost::new(accept_all());
    let vb = registry_serving(host, model_b());
    let app = started(host, |_| {});
    predict_and_settle(host, app, 0);
    assert_eq!(predict_and_settle(host, app, 1), vb);
    (host, vb, app)
}

/// Rewrites the channels document the edges keep in the key-value store (as another worker
/// version, or a rollback, would have left it).
fn edit_channels(host: &FakeHost, f: impl FnOnce(&mut Value)) {
    let mut kv = host.kv.borrow_mut();
    let raw = kv.get_mut(CHANNELS_KEY).unwrap();
    let mut channels: Value = serde_json::from_slice(raw).unwrap();
    f(&mut channels);
    *raw = serde_json::to_vec(&channels).unwrap();
}

/// A registry whose `live` channel names `bytes` (revision 1).
fn registry_serving(host: &FakeHost, bytes: Vec<u8>) -> String {
    let id = model_format::ModelId::of(&bytes).unwrap();
    let version = id.version();
    let checksum = format!("crc32:{:08x}", id.checksum);
    let v = version.clone();
    *host.registry.borrow_mut() = Box::new(move |url, if_none_match| {
        if url.ends_with("/v1/models/channels") {
            if if_none_match == Some("\"rev-1\"") {
                return Ok(Fetched {
                    signature: None,
                    status: 304,
                    etag: Some("\"rev-1\"".into()),
                    body: vec![],
                });
            }
            let body = json!({"live": {"version": v, "checksum": checksum}, "shadow": null,
                              "revision": 1, "changed_at": null});
            return Ok(Fetched {
                signature: None,
                status: 200,
                etag: Some("\"rev-1\"".into()),
                body: body.to_string().into_bytes(),
            });
        }
        if url.ends_with(&format!("/v1/models/{v}/file")) {
            return Ok(Fetched {
                signature: None,
                status: 200,
                etag: Some(format!("\"{checksum}\"")),
                body: bytes.clone(),
            });
        }
        Ok(Fetched {
            signature: None,
            status: 404,
            etag: None,
            body: b"{\"error\":\"no such model\"}".to_vec(),
        })
    });
    version
}

fn started(host: &'static FakeHost, f: impl FnOnce(&mut Variables)) -> &'static App<FakeHost> {
    let mut v = Variables {
        store_url: "http://store.test".into(),
        store_token: "tok".into(),
        ..Variables::default()
    };
    f(&mut v);
    Box::leak(Box::new(futures::executor::block_on(App::start(
        host,
        &v,
        loaded(),
    ))))
}

/// One prediction, then the background work it triggers; the answer's model version.
fn predict_and_settle(host: &FakeHost, app: &'static App<FakeHost>, i: usize) -> String {
    let version = predict(app, i)["model_version"]
        .as_str()
        .unwrap()
        .to_string();
    host.run_tasks();
    version
}

#[test]
fn a_promoted_model_is_pulled_verified_stored_and_served() {
    let host = FakeHost::new(accept_all());
    let embedded = loaded().unwrap().version().to_string();
    let vb = registry_serving(host, model_b());
    let app = started(host, |_| {});
    assert_eq!(predict_and_settle(host, app, 0), embedded);
    // The refresh ran in the background after that request: B is stored and served.
    assert_eq!(predict_and_settle(host, app, 1), vb);
    let (_, health) = call(app, request("GET", "/api/health", ""));
    assert_eq!(health["model_source"], "registry");
    // RFC 3339 in UTC with milliseconds, as every time the edge prints.
    let refreshed = health["last_refresh"].as_str().unwrap_or_default();
    assert!(
        refreshed.len() == 24 && chrono::DateTime::parse_from_rfc3339(refreshed).is_ok(),
        "{health}"
    );
    // File and tables (1.2 MB) in a bundle of two parts; apart (for earlier workers) in five.
    let bundle = host.keys("model/bundle/");
    assert_eq!(bundle.len(), 2, "{bundle:?}");
    assert_eq!(host.keys("model/file/").len(), 1);
    assert_eq!(host.keys("model/tables/").len(), 3);
    assert!(
        host.kv
            .borrow()
            .values()
            .all(|v| v.len() <= BUNDLE_PART_BYTES)
    );

    // A new instance starts on B from the key-value store, without asking the registry, and
    // reads only the bundle besides the channels and the refresh state.
    let gets = host.gets.borrow().len();
    host.kv_reads.borrow_mut().clear();
    let second = started(host, |_| {});
    let model_reads: Vec<String> = host
        .kv_reads
        .borrow()
        .iter()
        .filter(|k| k.starts_with("model/") && *k != CHANNELS_KEY && *k != REFRESH_KEY)
        .cloned()
        .collect();
    assert_eq!(model_reads, bundle);
    assert_eq!(predict(second, 2)["model_version"], vb.as_str());
    assert_eq!(host.gets.borrow().len(), gets);

    // Within the interval nobody asks again; after it, one refresh: a conditional GET of the
    // channels (answered 304) and one of the policy.
    host.clock.set(host.clock.get() + 2_000_000_000);
    predict_and_settle(host, second, 3);
    assert_eq!(host.gets.borrow().len(), gets);
    host.clock.set(host.clock.get() + 16_000_000_000);
    predict_and_settle(host, second, 4);
    predict_and_settle(host, app, 5);
    let asked = host.gets.borrow()[gets..].to_vec();
    assert_eq!(
        asked,
        [
            "http://store.test/v1/models/channels",
            "http://store.test/v1/policy"
        ],
    );
}

#[test]
fn corrupt_stored_parts_are_refused_reported_and_replaced() {
    let (host, vb, app) = an_instance_serving_model_b();
    let embedded = loaded().unwrap().version().to_string();

    // The second part of the bundle is all tables (the file fits in the first).
    let key = format!("model/bundle/{vb}/1");
    host.kv.borrow_mut().get_mut(&key).unwrap()[100] ^= 0x08;
    // A new instance refuses B's tables and serves the embedded model; health says why.
    let fresh = started(host, |_| {});
    assert_eq!(predict(fresh, 2)["model_version"], embedded.as_str());
    let (_, health) = call(fresh, request("GET", "/api/health", ""));
    assert_eq!(health["model_source"], "embedded");
    assert_eq!(health["verification_failures"], 1);
    let why = health["last_verification_error"].as_str().unwrap();
    assert!(why.contains("tables"), "{why}");
    // The instance that had B keeps it.
    assert_eq!(predict(app, 3)["model_version"], vb.as_str());

    // The next refresh downloads B again; the refusing instance then loads it.
    host.clock.set(host.clock.get() + 16_000_000_000);
    predict_and_settle(host, fresh, 4);
    host.clock.set(host.clock.get() + 2_000_000_000);
    predict_and_settle(host, fresh, 5);
    assert_eq!(predict(fresh, 6)["model_version"], vb.as_str());
}

#[test]
fn tables_another_worker_version_stored_are_rebuilt_not_refused() {
    let (host, vb, _) = an_instance_serving_model_b();

    // As an older worker stored them: format 1, which this one cannot read.
    edit_channels(host, |c| c["live"]["tables_format"] = json!(1));
    for key in host.keys("model/tables/") {
        host.kv.borrow_mut().get_mut(&key).unwrap()[0] ^= 0xff;
    }
    host.kv
        .borrow_mut()
        .get_mut(&format!("model/bundle/{vb}/1"))
        .unwrap()[0] ^= 0xff;
    // A new instance serves B and explains with tables it builds itself; nothing is refused.
    let fresh = started(host, |_| {});
    let (status, answer) = call(fresh, request("POST", "/api/predict", &tx(2).to_string()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], vb.as_str());
    assert!(answer["risk_factors"][0].is_object(), "{answer}");
    let (_, health) = call(fresh, request("GET", "/api/health", ""));
    assert_eq!(health["verification_failures"], 0, "{health}");

    // The next refresh asks for the channels in full (not a 304) and stores B's tables again.
    host.clock.set(host.clock.get() + 16_000_000_000);
    predict_and_settle(host, fresh, 3);
    let raw = host.kv.borrow()[CHANNELS_KEY].clone();
    let channels: EdgeChannels = serde_json::from_slice(&raw).unwrap();
    let live = channels.live.unwrap();
    assert_eq!(live.version, vb);
    assert_eq!(live.tables_format, model_format::TABLES_VERSION);
}

#[test]
fn an_instance_on_the_embedded_model_keeps_the_embedded_tables() {
    let host = FakeHost::new(accept_all());
    host.resident.set(Some(0));
    let app = started(host, |_| {});
    assert!(app.models.live().unwrap().tables_installed.get());
    assert_eq!(host.resident.get(), Some(1));
    let (status, answer) = call(app, request("POST", "/api/predict", &tx(1).to_string()));
    assert_eq!(status, 200, "{answer}");
    assert!(answer["risk_factors"][0].is_object(), "{answer}");
    assert!(host.resident_reads.borrow().is_empty());
}

#[test]
fn an_instance_on_a_registry_model_receives_it_into_the_embedded_tables_memory() {
    let (host, vb, first) = an_instance_serving_model_b();
    let embedded = loaded().unwrap().version().to_string();

    // A new instance: B's first bundle part goes into the tables' memory.
    host.resident.set(Some(0));
    let fresh = started(host, |_| {});
    assert_eq!(
        *host.resident_reads.borrow(),
        [format!("model/bundle/{vb}/0")]
    );
    assert_eq!(host.resident.get(), Some(2));
    let (_, answer) = call(fresh, request("POST", "/api/predict", &tx(2).to_string()));
    let (_, before) = call(first, request("POST", "/api/predict", &tx(2).to_string()));
    assert_eq!(answer["model_version"], vb.as_str());
    assert_eq!(answer["risk_factors"], before["risk_factors"]);

    // Rolled back to the embedded model: that instance no longer has its tables, so the
    // embedded model builds them, and explains as an instance that kept them does.
    edit_channels(host, |c| c["live"] = Value::Null);
    host.clock.set(host.clock.get() + 2_000_000_000);
    predict_and_settle(host, fresh, 3);
    let live = fresh.models.live().unwrap();
    assert_eq!(live.version, embedded);
    assert!(!live.tables_installed.get());
    host.resident.set(Some(0));
    let kept = started(host, |_| {});
    assert!(kept.models.live().unwrap().tables_installed.get());
    let (_, rolled_back) = call(fresh, request("POST", "/api/predict", &tx(4).to_string()));
    let (_, with_tables) = call(kept, request("POST", "/api/predict", &tx(4).to_string()));
    assert_eq!(rolled_back["model_version"], embedded.as_str());
    assert!(rolled_back["risk_factors"][0].is_object(), "{rolled_back}");
    assert_eq!(rolled_back["risk_factors"], with_tables["risk_factors"]);
}

#[test]
fn a_copy_stored_by_a_worker_before_bundles_is_read_from_its_separate_parts() {
    let (host, vb, app) = an_instance_serving_model_b();
    // As such a worker stored it: no bundle, and no field naming one.
    for key in host.keys("model/bundle/") {
        host.kv.borrow_mut().remove(&key);
    }
    edit_channels(host, |c| {
        c["live"].as_object_mut().unwrap().remove("bundle_parts");
    });

    host.kv_reads.borrow_mut().clear();
    let fresh = started(host, |_| {});
    let (status, answer) = call(fresh, request("POST", "/api/predict", &tx(2).to_string()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], vb.as_str());
    let (_, health) = call(fresh, request("GET", "/api/health", ""));
    assert_eq!(health["verification_failures"], 0, "{health}");
    assert_eq!(health["model_source"], "registry", "{health}");
    let reads = host.kv_reads.borrow().clone();
    assert!(reads.contains(&format!("model/tables/{vb}/2")), "{reads:?}");
    // And explains as the instance that stored it does.
    let (_, again) = call(app, request("POST", "/api/predict", &tx(2).to_string()));
    assert_eq!(answer["risk_factors"], again["risk_factors"]);
}

#[test]
fn a_model_the_registry_serves_corrupt_is_never_served() {
    let host = FakeHost::new(accept_all());
    let embedded = loaded().unwrap().version().to_string();
    let mut bad = model_b();
    let n = bad.len();
    bad[n / 2] ^= 0x01;
    // The registry's ETag and version claim B, the bytes are not B.
    let good = model_b();
    let id = model_format::ModelId::of(&good).unwrap();
    let (v, sum) = (id.version(), format!("crc32:{:08x}", id.checksum));
    let vv = v.clone();
    *host.registry.borrow_mut() = Box::new(move |url, _| {
        if url.ends_with("/v1/models/channels") {
            let body = json!({"live": {"version": vv, "checksum": sum}, "shadow": null, "revision": 3, "changed_at": null});
            return Ok(Fetched {
                signature: None,
                status: 200,
                etag: Some("\"rev-3\"".into()),
                body: body.to_string().into_bytes(),
            });
        }
        Ok(Fetched {
            signature: None,
            status: 200,
            etag: None,
            body: bad.clone(),
        })
    });
    let app = started(host, |_| {});
    predict_and_settle(host, app, 0);
    assert_eq!(predict_and_settle(host, app, 1), embedded);
    let (_, health) = call(app, request("GET", "/api/health", ""));
    let error = health["last_refresh_error"].as_str().unwrap();
    assert!(
        error.contains("refused") && error.contains("checksum"),
        "{error}"
    );
    assert_eq!(health["refresh_failures"], 1);
    assert!(
        host.keys("model/")
            .iter()
            .all(|k| !k.starts_with("model/file/"))
    );

    // Pulling off: the registry is never asked.
    let quiet = FakeHost::new(accept_all());
    registry_serving(quiet, model_b());
    let app = started(quiet, |v| v.model_pull = "off".into());
    predict_and_settle(quiet, app, 0);
    assert_eq!(predict_and_settle(quiet, app, 1), embedded);
    assert!(quiet.gets.borrow().is_empty());
    let (_, health) = call(app, request("GET", "/api/health", ""));
    assert_eq!(health["model_pull"], false);
    let _ = v;
}

/// The embedded model's forest with one velocity feature appended (the trees never split on
/// it, so scores equal the embedded model's; what is tested is the plumbing).
fn velocity_loaded() -> Result<Loaded, String> {
    use model_format::normalize::FeatureRule;
    use model_format::velocity::VelocitySpec;
    static FILE: &[u8] = include_bytes!("../../data/model.sfm");
    let m = Model::from_bytes(FILE).unwrap();
    let mut features = m.features().to_vec();
    features.push("card_count_10m".into());
    let mut mean = m.scaler().mean().to_vec();
    mean.push(0.0);
    let mut scale = m.scaler().scale().to_vec();
    scale.push(1.0);
    let mut rules = m.normalization().clone();
    rules.rules.push(FeatureRule::numeric("card_count_10m"));
    let spec = VelocitySpec::new(
        "timestamp",
        &[("card_count_10m", "count by card_id over 10m")],
    )
    .unwrap();
    let model = Model::new(
        features,
        model_format::Scaler::new(mean, scale).unwrap(),
        m.forest().clone(),
        vec![],
    )
    .unwrap()
    .with_normalization(rules)
    .unwrap()
    .with_velocity(spec)
    .unwrap();
    let bytes: &'static [u8] = Vec::leak(model.to_bytes().unwrap());
    let model = Model::from_bytes(bytes).map_err(|e| e.to_string())?;
    let id = model_format::ModelId::of(bytes).map_err(|e| e.to_string())?;
    Ok(Loaded::new(model, id, bytes, Vec::new(), false))
}

fn velocity_app(host: &'static FakeHost) -> &'static App<FakeHost> {
    velocity_app_writing(host, "")
}

fn velocity_app_writing(host: &'static FakeHost, writes: &str) -> &'static App<FakeHost> {
    let v = Variables {
        store_url: "http://store.test".into(),
        store_token: "tok".into(),
        velocity_writes: writes.into(),
        ..Variables::default()
    };
    Box::leak(Box::new(futures::executor::block_on(App::start(
        host,
        &v,
        velocity_loaded(),
    ))))
}

fn card_tx(card: &Value, minute: u32) -> String {
    json!({"amount": 12.5, "merchant": "acme", "timestamp": format!("2024-01-01T10:{minute:02}:00Z"),
           "type": "purchase", "card_id": card})
    .to_string()
}

/// Another writer's update of `card`'s state (one more transaction at `minute`), applied to
/// the map directly: what a concurrent instance or edge does between a read and a swap.
fn phantom_writer(card: &'static str, minute: u32) -> impl FnMut(&mut BTreeMap<String, Vec<u8>>) {
    let l = velocity_loaded().unwrap();
    let spec = l.model.velocity().unwrap().clone();
    let mut n = 0u64;
    move |kv| {
        let tx: Value = serde_json::from_str(&card_tx(&json!(card), minute)).unwrap();
        let fields = tx.as_object().unwrap();
        let payload = contract::JsonPayload(fields);
        let (key, fingerprint) = spec.state_slot(0, card, crate::settings::DEFAULT_VELOCITY_SLOTS);
        let mut stored = kv
            .get(&key)
            .map(|b| velocity::Stored::decode(b).unwrap())
            .unwrap_or_default();
        let t = spec.event_time(&payload, 0).unwrap();
        let (state, _) = stored.entity(fingerprint, |s| spec.outlived(0, s, t));
        spec.observe(0, state, t, &payload, &mut [0.0]);
        n += 1;
        stored.record(0xdead_0000 + n);
        kv.insert(key, stored.encode());
    }
}

#[test]
fn concurrent_velocity_updates_are_all_counted_even_when_a_swap_misreports() {
    for lies in [false, true] {
        let host = FakeHost::new(accept_all());
        host.swap_lies.set(lies);
        // A store that misreports swaps needs every write read back.
        let app = velocity_app_writing(host, if lies { "verified" } else { "atomic" });
        // Three other writers land between this transaction's reads and its swaps.
        let mut writer = phantom_writer("c9", 0);
        let mut left = 3;
        *host.interfere.borrow_mut() = Some(Box::new(move |kv| {
            if left > 0 {
                left -= 1;
                writer(kv);
            }
        }));
        let (status, first) = call(
            app,
            request("POST", "/api/predict", &card_tx(&json!("c9"), 1)),
        );
        assert_eq!(status, 200, "{first}");
        // It saw the others that landed before its successful swap.
        assert_eq!(first["velocity_stale"], Value::Null, "{first}");
        *host.interfere.borrow_mut() = None;
        host.run_tasks();
        let (_, _) = call(
            app,
            request("POST", "/api/predict", &card_tx(&json!("c9"), 2)),
        );
        host.run_tasks();
        let event = host.posts.borrow().last().unwrap()[0].clone();
        // 3 others + the first: nothing lost, whether or not the host admits a failed swap.
        assert_eq!(event["features"]["card_count_10m"], 4.0, "lies: {lies}");
    }
}

#[test]
fn plain_velocity_writes_count_in_turn_without_compare_and_swap() {
    let host = FakeHost::new(accept_all());
    let app = velocity_app_writing(host, "plain");
    // A swap would meet another writer every time; plain writes never swap.
    let mut writer = phantom_writer("c5", 0);
    *host.interfere.borrow_mut() = Some(Box::new(move |kv| writer(kv)));
    for minute in 1..=3 {
        let (status, body) = call(
            app,
            request("POST", "/api/predict", &card_tx(&json!("c5"), minute)),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["velocity_stale"], Value::Null, "{body}");
    }
    host.run_tasks();
    let counts: Vec<Value> = host
        .delivered()
        .iter()
        .map(|e| e["features"]["card_count_10m"].clone())
        .collect();
    assert_eq!(counts, [json!(0.0), json!(1.0), json!(2.0)]);
    assert!(host.keys("vel/").iter().all(|k| !k.ends_with("/born")));
    // An unknown mode is reported and the safe one used.
    let v = Variables {
        velocity_writes: "fast".into(),
        ..Variables::default()
    };
    let (settings, bad) = Settings::parse(&v, "x".into());
    assert_eq!(settings.velocity_writes, velocity::Writes::Atomic);
    assert_eq!(bad[0].name, "velocity_writes");
    for (raw, want) in [
        ("atomic", velocity::Writes::Atomic),
        ("verified", velocity::Writes::Verified),
        ("ticketed", velocity::Writes::Ticketed),
        (" plain ", velocity::Writes::Plain),
    ] {
        let v = Variables {
            velocity_writes: raw.into(),
            ..Variables::default()
        };
        let (settings, bad) = Settings::parse(&v, "x".into());
        assert_eq!((settings.velocity_writes, bad.len()), (want, 0), "{raw}");
    }
}

#[test]
fn an_update_that_keeps_conflicting_is_given_up_and_said_so() {
    let host = FakeHost::new(accept_all());
    let app = velocity_app(host);
    let mut writer = phantom_writer("c7", 0);
    let others = std::rc::Rc::new(Cell::new(0u32));
    let counted = others.clone();
    *host.interfere.borrow_mut() = Some(Box::new(move |kv| {
        counted.set(counted.get() + 1);
        writer(kv);
    }));
    let start = host.monotonic_ns();
    let (status, body) = call(
        app,
        request("POST", "/api/predict", &card_tx(&json!("c7"), 1)),
    );
    // It kept trying for the whole budget (the fake clock moves only with its pauses).
    assert!(host.monotonic_ns() - start >= velocity::UPDATE_BUDGET_NS);
    let others = others.get();
    assert!(others > 10, "{others}");
    // Still answered, from the last state read, and marked.
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["velocity_stale"], true, "{body}");
    host.run_tasks();
    let event = host.posts.borrow().last().unwrap()[0].clone();
    assert_eq!(event["velocity_stale"], true, "{event}");
    // Computed from the last state read: every other writer but the last attempt's.
    assert_eq!(
        event["features"]["card_count_10m"],
        f64::from(others - 1),
        "{event}"
    );
    // Its own transaction is not in the state: only the other writer's.
    *host.interfere.borrow_mut() = None;
    let (_, next) = call(
        app,
        request("POST", "/api/predict", &card_tx(&json!("c7"), 2)),
    );
    assert_eq!(next["velocity_stale"], Value::Null);
    host.run_tasks();
    let event = host.posts.borrow().last().unwrap()[0].clone();
    assert_eq!(
        event["features"]["card_count_10m"],
        f64::from(others),
        "{event}"
    );
}

#[test]
fn velocity_state_counts_per_card_across_instances_and_reaches_the_event() {
    let host = FakeHost::new(accept_all());
    let mut counts = Vec::new();
    for (card, minute) in [("c1", 0), ("c1", 1), ("c2", 2), ("C1 ", 3), ("c1", 20)] {
        // A fresh instance per request: the state lives in the key-value store, not in memory.
        let app = velocity_app(host);
        let (status, body) = call(
            app,
            request("POST", "/api/predict", &card_tx(&json!(card), minute)),
        );
        assert_eq!(status, 200, "{body}");
        assert!(
            body["decision"].is_string() && body["rules_matched"] == json!([]),
            "{body}"
        );
        host.run_tasks();
        let event = host.posts.borrow().last().unwrap()[0].clone();
        counts.push(event["features"]["card_count_10m"].as_f64().unwrap());
        assert!(event["decision"].is_string(), "{event}");
    }
    // c1 at :00, :01, (c2), " C1 " at :03 is the same card, :20 is outside the 10 minutes.
    assert_eq!(counts, [0.0, 1.0, 0.0, 2.0, 0.0]);
    // One state per card, and each card's birth counter (its creator's claim).
    let keys = host.keys("vel/card_id/");
    assert_eq!(
        keys.iter().filter(|k| !k.ends_with("/born")).count(),
        2,
        "{keys:?}"
    );
    assert_eq!(keys.len(), 4, "{keys:?}");

    // Bad entity ids and times are the caller's, named, and touch no state.
    let app = velocity_app(host);
    let before = host.kv.borrow().clone();
    for (body, field) in [
        (card_tx(&json!(42), 0), "card_id"),
        (card_tx(&json!({"x": 1}), 0), "card_id"),
        (
            json!({"amount": 1, "card_id": "c1", "timestamp": "noon"}).to_string(),
            "timestamp",
        ),
        (
            json!({"amount": 1, "device_id": 7}).to_string(),
            "device_id",
        ),
    ] {
        let (status, answer) = call(app, request("POST", "/api/predict", &body));
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    assert_eq!(*host.kv.borrow(), before);

    // A batch sees its own earlier items; a bad item fails alone and is not counted (neither
    // a bad entity id nor a payload the model refuses).
    let mut refused = serde_json::from_str::<Value>(&card_tx(&json!("c9"), 0)).unwrap();
    refused["amount"] = json!("lots");
    let batch = json!({"transactions": [
        serde_json::from_str::<Value>(&card_tx(&json!("c9"), 0)).unwrap(),
        serde_json::from_str::<Value>(&card_tx(&json!(9), 0)).unwrap(),
        refused,
        serde_json::from_str::<Value>(&card_tx(&json!("c9"), 1)).unwrap(),
    ]});
    let (status, answer) = call(
        app,
        request("POST", "/api/predict-batch", &batch.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["failed"], 2, "{answer}");
    host.run_tasks();
    let events = host.posts.borrow().last().unwrap().clone();
    let c9: Vec<f64> = events
        .iter()
        .map(|e| e["features"]["card_count_10m"].as_f64().unwrap())
        .collect();
    assert_eq!(c9, [0.0, 1.0]);
}

const POLICY: &str = r#"
[lists]
blocked_cards = ["card-bad"]

[[rule]]
name = "vip"
when = "card_id == 'card-vip'"
outcome = "allow"
reason = "known good card"

[[rule]]
name = "blocked_card"
when = "card_id in blocked_cards or card_id == 'card-vip'"
outcome = "block"
reason = "card is on the block list"

[[rule]]
name = "large"
when = "amount > 1000"
outcome = "review"
"#;

fn decide(app: &'static App<FakeHost>, card: &str, amount: f64) -> Value {
    let body = json!({"amount": amount, "hour": 12, "day_of_week": 2, "merchant_category": 1,
                      "transaction_type": 0, "card_id": card});
    let (status, answer) = call(
        app,
        request("POST", "/api/predict?explain=false", &body.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    answer
}

#[test]
fn rules_decide_in_order_and_a_policy_change_needs_no_rebuild() {
    let host = FakeHost::new(accept_all());
    // No policy: the model decides.
    let app = started(host, |_| {});
    let a = decide(app, "card-bad", 12.0);
    assert_eq!(a["rules_matched"], json!([]));
    assert_eq!(
        a["decision"],
        if a["is_anomaly"] == true {
            "review"
        } else {
            "allow"
        }
    );

    host.kv
        .borrow_mut()
        .insert(POLICY_KEY.into(), POLICY.as_bytes().to_vec());
    let app = started(host, |_| {});
    let (_, health) = call(app, request("GET", "/api/health", ""));
    assert_eq!(health["policy_rules"], 3, "{health}");
    let a = decide(app, " CARD-BAD", 12.0);
    assert_eq!(
        (a["decision"].as_str(), a["rules_matched"].clone()),
        (Some("block"), json!(["blocked_card"]))
    );
    assert_eq!(a["decision_reason"], "card is on the block list");
    // Both vip and blocked_card match; the first in order decides.
    let a = decide(app, "card-vip", 5000.0);
    assert_eq!(a["rules_matched"], json!(["vip", "blocked_card", "large"]));
    assert_eq!(
        (a["decision"].as_str(), a["decision_reason"].as_str()),
        (Some("allow"), Some("known good card"))
    );
    let a = decide(app, "card-ok", 5000.0);
    assert_eq!(
        (a["decision"].as_str(), a["rules_matched"].clone()),
        (Some("review"), json!(["large"]))
    );
    host.run_tasks();
    let event = host
        .posts
        .borrow()
        .iter()
        .flatten()
        .find(|e| e["transaction_id"] == a["transaction_uuid"])
        .cloned()
        .expect("the prediction was forwarded");
    assert_eq!(
        (event["decision"].as_str(), event["rules_matched"].clone()),
        (Some("review"), json!(["large"]))
    );

    // The list changes in the key-value store: the next instance blocks the new card only.
    let updated = POLICY.replace("[\"card-bad\"]", "[\"card-new\"]");
    host.kv
        .borrow_mut()
        .insert(POLICY_KEY.into(), updated.into_bytes());
    let app = started(host, |_| {});
    assert_eq!(decide(app, "card-new", 12.0)["decision"], "block");
    assert_ne!(decide(app, "card-bad", 12.0)["decision"], "block");

    // A policy naming something unknown is refused at start, reported, never applied.
    let broken = POLICY.replace("amount > 1000", "ammount > 1000");
    host.kv
        .borrow_mut()
        .insert(POLICY_KEY.into(), broken.into_bytes());
    let app = started(host, |_| {});
    let a = decide(app, "card-bad", 12.0);
    assert_eq!(a["rules_matched"], json!([]));
    let (_, health) = call(app, request("GET", "/api/health", ""));
    assert!(
        health["policy_error"].as_str().unwrap().contains("ammount"),
        "{health}"
    );
    host.kv
        .borrow_mut()
        .insert(POLICY_KEY.into(), b"[[rule]]\nname = 'x'".to_vec());
    let app = started(host, |_| {});
    let (_, health) = call(app, request("GET", "/api/health", ""));
    assert!(health["policy_error"].is_string(), "{health}");
    assert_eq!(health["policy_rules"], 0);
}

/// The registry's channels with nothing set (revision 0).
fn no_channels() -> Fetched {
    let body = json!({"live": null, "shadow": null, "revision": 0, "changed_at": null});
    Fetched {
        signature: None,
        status: 200,
        etag: Some("\"rev-0\"".into()),
        body: body.to_string().into_bytes(),
    }
}

/// A policy stored before this edge trusted any key (or put there by hand) is not in force on
/// an edge that now accepts only signed ones; the refresh fetches the store's copy again
/// (its ETag no longer vouches for it) and a signed one takes effect.
#[test]
fn a_stored_policy_is_checked_against_the_trusted_keys_at_instance_start() {
    let secret = contract::signing::SecretKey::from_seed([9; 32]);
    let key = secret.public().to_string();
    let host = FakeHost::new(accept_all());
    for (k, v) in [
        (POLICY_KEY, POLICY.as_bytes()),
        ("policy/etag", b"\"policy-1\"".as_slice()),
    ] {
        host.kv.borrow_mut().insert(k.into(), v.to_vec());
    }
    let signature = secret.sign(contract::signing::Signed::Policy, POLICY.as_bytes());
    let served = signature.clone();
    *host.registry.borrow_mut() = Box::new(move |url, if_none_match| {
        if url.ends_with("/v1/models/channels") {
            return Ok(no_channels());
        }
        // Were the stale ETag sent, the unsigned copy would stay in force.
        assert_eq!(if_none_match, None, "the untrusted copy's ETag was sent");
        Ok(Fetched {
            signature: Some(served.clone()),
            status: 200,
            etag: Some("\"policy-1\"".into()),
            body: POLICY.as_bytes().to_vec(),
        })
    });
    let app = started(host, |v| v.trusted_keys = key.clone());
    let (_, health) = call(app, request("GET", "/api/health", ""));
    assert_eq!(health["policy_rules"], 0, "{health}");
    assert!(
        health["policy_error"]
            .as_str()
            .unwrap()
            .contains("unsigned"),
        "{health}"
    );
    assert_eq!(decide(app, "card-bad", 12.0)["rules_matched"], json!([]));
    host.run_tasks();
    assert_eq!(
        host.kv.borrow()[POLICY_SIGNATURE_KEY],
        signature.as_bytes(),
        "the signature is kept beside the policy"
    );
    host.clock.set(host.clock.get() + 1_100_000_000);
    decide(app, "card-ok", 12.0);
    host.run_tasks();
    assert_eq!(decide(app, "card-bad", 12.0)["decision"], "block");
    // A fresh instance starts with it in force.
    let fresh = started(host, |v| v.trusted_keys = key.clone());
    let (_, health) = call(fresh, request("GET", "/api/health", ""));
    assert_eq!(health["policy_rules"], 3, "{health}");
}

#[test]
fn the_stores_policy_reaches_running_instances_without_a_restart() {
    let host = FakeHost::new(accept_all());
    let policy = std::rc::Rc::new(RefCell::new((1, POLICY.to_string())));
    let served = policy.clone();
    *host.registry.borrow_mut() = Box::new(move |url, if_none_match| {
        if url.ends_with("/v1/models/channels") {
            return Ok(no_channels());
        }
        assert!(url.ends_with("/v1/policy"), "{url}");
        let (revision, text) = served.borrow().clone();
        let tag = format!("\"policy-{revision}\"");
        if if_none_match == Some(tag.as_str()) {
            return Ok(Fetched {
                signature: None,
                status: 304,
                etag: Some(tag),
                body: vec![],
            });
        }
        Ok(Fetched {
            signature: None,
            status: 200,
            etag: Some(tag),
            body: text.into_bytes(),
        })
    });
    let app = started(host, |_| {});
    // No policy yet: the first request's refresh copies the store's; the instance's next
    // check (a second later) takes it.
    assert_eq!(decide(app, "card-bad", 12.0)["rules_matched"], json!([]));
    host.run_tasks();
    assert_eq!(host.kv.borrow()[POLICY_KEY], POLICY.as_bytes());
    host.clock.set(host.clock.get() + 1_100_000_000);
    decide(app, "card-ok", 12.0);
    host.run_tasks();
    assert_eq!(decide(app, "card-bad", 12.0)["decision"], "block");

    // The list changes in the store: after the refresh interval the same instance follows.
    *policy.borrow_mut() = (2, POLICY.replace("[\"card-bad\"]", "[\"card-new\"]"));
    host.clock.set(host.clock.get() + 16_000_000_000);
    decide(app, "card-ok", 12.0);
    host.run_tasks();
    host.clock.set(host.clock.get() + 1_100_000_000);
    decide(app, "card-ok", 12.0);
    host.run_tasks();
    assert_eq!(decide(app, "card-new", 12.0)["decision"], "block");
    assert_ne!(decide(app, "card-bad", 12.0)["decision"], "block");
    // An unchanged policy is a 304: nothing rewritten.
    let gets = host.gets.borrow().len();
    host.clock.set(host.clock.get() + 16_000_000_000);
    decide(app, "card-ok", 12.0);
    host.run_tasks();
    assert_eq!(host.gets.borrow().len(), gets + 2);
}

/// The embedded model with a supervised classifier on the amount: ≤ 1,000 allow, ≤ 3,000
/// review, above block (thresholds 0.5 and 0.999 on the identity-calibrated margin).
fn supervised_loaded() -> Result<Loaded, String> {
    supervised_loaded_with(&[])
}

/// [`supervised_loaded`] with `meta` in the model's metadata (e.g. its review budget).
fn supervised_loaded_with(meta: &[(&str, &str)]) -> Result<Loaded, String> {
    use model_format::Node;
    use model_format::booster::{BoostTree, Booster, Calibration, Thresholds};
    static FILE: &[u8] = include_bytes!("../../data/model.sfm");
    let m = Model::from_bytes(FILE).unwrap();
    let z = |amount: f64| m.scaler().scale_one(0, amount) as f32;
    let tree = BoostTree::new(
        vec![
            Node::Split {
                feature: 0,
                threshold: z(1000.0),
                right: 2,
            },
            Node::Leaf { samples: 90 },
            Node::Split {
                feature: 0,
                threshold: z(3000.0),
                right: 4,
            },
            Node::Leaf { samples: 8 },
            Node::Leaf { samples: 2 },
        ],
        &[-4.0, 3.5, 8.0],
    )
    .unwrap();
    let booster = Booster::new(
        vec![tree],
        0.0,
        Calibration::IDENTITY,
        Thresholds {
            review: Some(0.5),
            block: Some(0.999),
        },
        m.features().len() + 1,
    )
    .unwrap();
    let model = meta
        .iter()
        .fold(m, |m, (k, v)| m.with_meta(k, v))
        .with_supervised(booster)
        .unwrap();
    let bytes: &'static [u8] = Vec::leak(model.to_bytes().unwrap());
    let model = Model::from_bytes(bytes).map_err(|e| e.to_string())?;
    let id = model_format::ModelId::of(bytes).map_err(|e| e.to_string())?;
    Ok(Loaded::new(model, id, bytes, Vec::new(), false))
}

/// A 3 a.m. transfer of `amount` on one card.
fn ask_amount(app: &'static App<FakeHost>, amount: f64, explain: bool) -> Value {
    let body = json!({"amount": amount, "hour": 3, "day_of_week": 2, "merchant_category": 1,
                      "transaction_type": 2, "card_id": "card-1"});
    let uri = format!("/api/predict?explain={explain}");
    let (status, answer) = call(app, request("POST", &uri, &body.to_string()));
    assert_eq!(status, 200, "{answer}");
    answer
}

#[test]
fn a_supervised_model_answers_its_probability_decides_by_its_thresholds_and_explains_itself() {
    let host = FakeHost::new(accept_all());
    let v = Variables {
        store_url: "http://store.test".into(),
        store_token: "tok".into(),
        ..Variables::default()
    };
    let app: &'static App<FakeHost> = Box::leak(Box::new(futures::executor::block_on(App::start(
        host,
        &v,
        supervised_loaded(),
    ))));
    let ask = |amount: f64, explain: bool| ask_amount(app, amount, explain);
    let sigmoid = model_format::booster::sigmoid;
    for (amount, p, decision, reason) in [
        (50.0, sigmoid(-4.0), "allow", rules::REASON_FRAUD_LOW),
        (2000.0, sigmoid(3.5), "review", rules::REASON_FRAUD_REVIEW),
        (9000.0, sigmoid(8.0), "block", rules::REASON_FRAUD_BLOCK),
    ] {
        for explain in [false, true] {
            let a = ask(amount, explain);
            assert_eq!(a["fraud_probability"].as_f64().unwrap(), p, "{a}");
            assert_eq!(a["decision"], decision, "{a}");
            assert_eq!(a["decision_reason"], reason, "{a}");
        }
        // The explained answer's risk factors are the supervised model's: the amount decides.
        let a = ask(amount, true);
        let top = &a["risk_factors"][0];
        assert_eq!(top["feature"], "amount", "{a}");
        let raises = if decision == "allow" {
            "decreases_risk"
        } else {
            "increases_risk"
        };
        assert_eq!(top["direction"], raises, "{a}");
        // The forest's legacy explanation is still there, unchanged in meaning.
        assert!(a["explanation"]["mean_path_length"].is_number(), "{a}");
    }
    host.run_tasks();
    let events: Vec<Value> = host.posts.borrow().iter().flatten().cloned().collect();
    assert_eq!(events.len(), 9);
    assert!(
        events
            .iter()
            .all(|e| e["fraud_probability"].as_f64().is_some()),
        "{events:?}"
    );

    // A rule on the probability comes first; unmatched transactions keep the model's band.
    host.kv.borrow_mut().insert(
        POLICY_KEY.into(),
        br#"
[[rule]]
name = "likely_fraud"
when = "fraud_probability > 0.9 and amount < 2500"
outcome = "block"
reason = "likely fraud"
"#
        .to_vec(),
    );
    let app: &'static App<FakeHost> = Box::leak(Box::new(futures::executor::block_on(App::start(
        host,
        &v,
        supervised_loaded(),
    ))));
    let ask = |amount: f64, explain: bool| ask_amount(app, amount, explain);
    let a = ask(2000.0, false);
    assert_eq!(
        (a["decision"].as_str(), a["rules_matched"].clone()),
        (Some("block"), json!(["likely_fraud"])),
        "{a}"
    );
    let a = ask(50.0, false);
    assert_eq!(a["decision_reason"], rules::REASON_FRAUD_LOW, "{a}");
}

/// Velocity state stays within `velocity_slots` values per entity field however many cards
/// pass, while every card's features stay those of its full history (the trainer's: one state
/// per card, never dropped). Each card transacts once, one every 1.8 s of event time (2,000
/// per hour: the one-hour sum is the longest window), and 50 regular cards every 7 minutes
/// throughout. `SFE_STATE_CARDS` / `SFE_STATE_SLOTS` change the numbers (docs/edge.md measures
/// a million cards), `--nocapture` prints the store's size beside one key per card.
#[test]
fn velocity_state_is_bounded_by_the_slots_whatever_the_number_of_cards() {
    use model_format::velocity::{EntityState, VelocitySpec};
    use std::collections::HashMap;
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map_or(default, |v| v.parse().expect(name))
    };
    let cards = env("SFE_STATE_CARDS", 20_000);
    let slots = u32::try_from(env("SFE_STATE_SLOTS", 2_048)).unwrap();
    let spec = VelocitySpec::new(
        "timestamp",
        &[
            ("n", "count by card_id over 10m"),
            ("total", "sum(amount) by card_id over 1h every 6m"),
        ],
    )
    .unwrap();
    let spec: &'static VelocitySpec = Box::leak(Box::new(spec));
    let size = |host: &FakeHost| {
        let kv = host.kv.borrow();
        let bytes: usize = kv.iter().map(|(k, v)| k.len() + v.len()).sum();
        (kv.len(), bytes)
    };
    let run = |slots: u32, check: bool| {
        let host = FakeHost::new(accept_all());
        let locks = velocity::Locks::default();
        let mut reference: HashMap<String, EntityState> = HashMap::new();
        let step_ms = 1_800;
        let mut tx = |card: String, t: i64| {
            let mut fields = serde_json::Map::new();
            fields.insert("card_id".into(), json!(card));
            fields.insert("amount".into(), json!(10.0));
            let at = chrono::DateTime::from_timestamp_millis(t).unwrap();
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            fields.insert("timestamp".into(), json!(at));
            let (values, stale) = futures::executor::block_on(velocity::observe(
                host,
                spec,
                &fields,
                &locks,
                velocity::Writes::Atomic,
                slots,
            ))
            .unwrap();
            assert!(!stale);
            if check {
                let mut want = vec![0.0; 2];
                let payload = contract::JsonPayload(&fields);
                spec.observe(
                    0,
                    reference.entry(card).or_default(),
                    t,
                    &payload,
                    &mut want,
                );
                assert_eq!(values, want, "at {t}");
            }
        };
        let t0 = 1_700_000_000_000_i64;
        for i in 0..cards {
            let t = t0 + i as i64 * step_ms;
            tx(format!("card-{i}"), t);
            // Every 7 minutes of event time, each regular card once.
            if i % (7 * 60_000 / step_ms as u64) == 0 {
                for r in 0..50 {
                    tx(format!("regular-{r}"), t);
                }
            }
        }
        size(host)
    };
    let (keys, bytes) = run(slots, true);
    // At most one value and one birth counter per slot.
    assert!(keys <= 2 * slots as usize, "{keys} keys for {slots} slots");
    // The same stream with a slot per card, as every card had its own key before slots.
    let (one_per_card, one_per_card_bytes) = run(u32::MAX, false);
    println!(
        "velocity state after {cards} cards: {keys} keys, {bytes} bytes with {slots} slots; \
         one key per card: {one_per_card} keys, {one_per_card_bytes} bytes"
    );
    // (A slot per card: two keys a card, but for the odd card sharing a hash modulo 2^32 - 1.)
    assert!(one_per_card as u64 > cards * 19 / 10, "{one_per_card}");
    assert!(bytes * 5 < one_per_card_bytes);
}

/// One velocity feature: transactions per card over 10 minutes.
fn count_by_card() -> &'static model_format::velocity::VelocitySpec {
    let spec = model_format::velocity::VelocitySpec::new(
        "timestamp",
        &[("n", "count by card_id over 10m")],
    )
    .unwrap();
    Box::leak(Box::new(spec))
}

/// A payload of `card` at `at` (RFC 3339).
fn card_at(card: &str, at: &str) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("card_id".into(), json!(card));
    fields.insert("timestamp".into(), json!(at));
    fields
}

/// A transaction dated far ahead of the edge's clock does not wipe the history of the other
/// cards sharing its slot: their expiry is judged at the clock, not at the caller's date.
#[test]
fn a_transaction_dated_in_the_future_keeps_its_slot_mates_history() {
    let spec = count_by_card();
    let host = FakeHost::new(accept_all());
    let locks = velocity::Locks::default();
    let now = host.now().timestamp_millis();
    let count = |card: &str, t: i64| {
        let at = chrono::DateTime::from_timestamp_millis(t).unwrap();
        let fields = card_at(
            card,
            &at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        // One slot: every card shares it.
        let (values, _) = futures::executor::block_on(velocity::observe(
            host,
            spec,
            &fields,
            &locks,
            velocity::Writes::Atomic,
            1,
        ))
        .unwrap();
        values[0]
    };
    assert_eq!(count("a", now - 60_000), 0.0);
    assert_eq!(count("a", now - 30_000), 1.0);
    // A year ahead: its own state starts there, card a's stays.
    assert_eq!(count("b", now + 365 * 86_400_000), 0.0);
    assert_eq!(count("a", now), 2.0);
    // A real gap past the window still ends a card's history.
    host.clock.set(host.clock.get() + 11 * 60 * 1_000_000_000);
    assert_eq!(count("a", now + 11 * 60_000 + 1), 0.0);
}

/// Requests of one instance updating one card at the same moment are written together: each
/// counts every one that went before it, none is lost, and the burst takes two swaps rather
/// than sixteen (the first request's, and one for all that queued behind it).
#[test]
fn a_burst_on_one_card_in_one_instance_is_written_in_a_few_swaps() {
    let spec = count_by_card();
    let host = FakeHost::new(accept_all());
    host.yields.set(true);
    let locks = velocity::Locks::default();
    let at = host
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let tx = |card: &str| card_at(card, &at);
    let burst: Vec<_> = (0..16).map(|_| tx("bot")).collect();
    let answers =
        futures::executor::block_on(futures::future::join_all(burst.iter().map(|fields| {
            velocity::observe(host, spec, fields, &locks, velocity::Writes::Atomic, 64)
        })));
    let mut counts: Vec<f64> = answers
        .into_iter()
        .map(|a| {
            let (values, stale) = a.unwrap();
            assert!(!stale);
            values[0]
        })
        .collect();
    counts.sort_by(f64::total_cmp);
    assert_eq!(counts, (0..16).map(f64::from).collect::<Vec<_>>());
    assert_eq!(host.swaps.get(), 2);
    let next = futures::executor::block_on(velocity::observe(
        host,
        spec,
        &tx("bot"),
        &locks,
        velocity::Writes::Atomic,
        64,
    ));
    assert_eq!(next.unwrap().0, vec![16.0]);
    // Plain writes are queued the same way (one write per turn, none lost within an instance).
    let plain: Vec<_> = (0..16).map(|_| tx("other")).collect();
    let answers =
        futures::executor::block_on(futures::future::join_all(plain.iter().map(|fields| {
            velocity::observe(host, spec, fields, &locks, velocity::Writes::Plain, 64)
        })));
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(|(_, stale)| !stale))
    );
    let next = futures::executor::block_on(velocity::observe(
        host,
        spec,
        &tx("other"),
        &locks,
        velocity::Writes::Atomic,
        64,
    ));
    assert_eq!(next.unwrap().0, vec![16.0]);
}

/// `atomic` trusts the store's refusal of a stale swap and reads a slot back only after creating
/// it; `verified` reads back every write (for a store that may report a swap it did not make).
#[test]
fn only_verified_writes_read_every_swap_back() {
    let spec = count_by_card();
    let host = FakeHost::new(accept_all());
    let locks = velocity::Locks::default();
    let at = host
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let reads = |writes, card: &str| {
        let fields = card_at(card, &at);
        let before = host.state_reads.get();
        let (_, stale) =
            futures::executor::block_on(velocity::observe(host, spec, &fields, &locks, writes, 64))
                .unwrap();
        assert!(!stale);
        host.state_reads.get() - before
    };
    use velocity::Writes::{Atomic, Verified};
    assert_eq!(
        reads(Atomic, "a"),
        1,
        "the write that creates the slot is read back"
    );
    assert_eq!(reads(Atomic, "a"), 0);
    assert_eq!(reads(Verified, "a"), 1);
    assert_eq!(reads(Verified, "b"), 1);
}

/// The review budget at the edge: when far more traffic lands in the stored review band than
/// the model's `review_rate`, the band is held to the budget (the rest allowed with their own
/// reason), and the window is shared: a fresh instance decides by what the others counted.
#[test]
fn the_review_band_is_held_to_the_budget_across_instances() {
    let host = FakeHost::new(accept_all());
    let v = Variables::default();
    let meta = [("review_rate", "0.02"), ("review_window", "400")];
    let start = || -> &'static App<FakeHost> {
        Box::leak(Box::new(futures::executor::block_on(App::start(
            host,
            &v,
            supervised_loaded_with(&meta),
        ))))
    };
    let (a, b) = (start(), start());
    // One in ten in the review band (2,000: p = σ(3.5)), the rest low.
    let mut reviews = 0;
    let mut over_budget = 0;
    let n = 1_000;
    for i in 0..n {
        let app = if i % 3 == 0 { a } else { b };
        let answer = ask_amount(app, if i % 10 == 0 { 2000.0 } else { 50.0 }, false);
        match answer["decision_reason"].as_str().unwrap() {
            rules::REASON_FRAUD_REVIEW => reviews += 1,
            rules::REASON_FRAUD_OVER_BUDGET => {
                assert_eq!(answer["decision"], "allow");
                over_budget += 1;
            }
            _ => {}
        }
    }
    // 2 % of 1,000 = 20 at most (each instance may add what it has not written yet: 2 × 64 ×
    // 2 % ≈ 3); the stored threshold alone reviews 100.
    assert!((4..=23).contains(&reviews), "{reviews} reviews");
    assert_eq!(reviews + over_budget, n / 10);
    // The window in the store counted what the instances wrote, 64 at a time (so a half
    // closes up to 63 past its 200).
    let id = supervised_loaded_with(&meta).unwrap().version;
    let stored = host.kv.borrow()[&format!("{BUDGET_PREFIX}{id}")].clone();
    let w = model_format::budget::BudgetWindow::decode(&stored).unwrap();
    assert!((200..=400 + 2 * 63).contains(&w.seen()), "{}", w.seen());
    // A fresh instance reads it: its first transaction in the band is over budget already.
    let fresh = start();
    let answer = ask_amount(fresh, 2000.0, false);
    assert_eq!(
        answer["decision_reason"],
        rules::REASON_FRAUD_OVER_BUDGET,
        "{answer}"
    );
}

/// A burst on one card from four instances at once (each with eight requests in flight, every
/// store call yielding to the others): with ticketed writes every transaction counts exactly the
/// ones written before it and the next one counts all 32, without a single compare-and-swap;
/// plain writes, in the same interleaving, lose some.
#[test]
fn ticketed_writes_from_many_instances_lose_nothing_where_plain_ones_do() {
    let spec = count_by_card();
    for writes in [velocity::Writes::Ticketed, velocity::Writes::Plain] {
        let host = FakeHost::new(accept_all());
        host.yields.set(true);
        let instances: Vec<velocity::Locks> = (0..4).map(|_| velocity::Locks::default()).collect();
        let at = host
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let burst: Vec<_> = (0..32).map(|_| card_at("bot", &at)).collect();
        let answers =
            futures::executor::block_on(futures::future::join_all(burst.iter().enumerate().map(
                |(i, fields)| velocity::observe(host, spec, fields, &instances[i % 4], writes, 64),
            )));
        let mut counts: Vec<f64> = answers
            .into_iter()
            .map(|a| {
                let (values, stale) = a.unwrap();
                assert!(!stale, "{writes:?}");
                values[0]
            })
            .collect();
        counts.sort_by(f64::total_cmp);
        let (next, _) = futures::executor::block_on(velocity::observe(
            host,
            spec,
            &card_at("bot", &at),
            &instances[0],
            writes,
            64,
        ))
        .unwrap();
        if writes == velocity::Writes::Ticketed {
            assert_eq!(counts, (0..32).map(f64::from).collect::<Vec<_>>());
            assert_eq!(next, vec![32.0]);
            assert_eq!(host.swaps.get(), 0);
            // Fast: nobody waited for a stalled turn.
            assert!(host.monotonic_ns() - 1_000_000_000 < velocity::TURN_STALL_NS);
        } else {
            assert!(next[0] < 32.0, "plain writes lost nothing: {next:?}");
        }
    }
}

/// A ticket drawn and never written (its writer died between the two) holds the slot's next
/// writer for the stall, not for ever: it then writes past the dead ticket, counting what was
/// written before. A counter behind the state (the slot written plainly before) costs no wait.
#[test]
fn a_dead_ticket_is_skipped_after_the_stall_and_a_counter_behind_is_moved_past() {
    let spec = count_by_card();
    let host = FakeHost::new(accept_all());
    let locks = velocity::Locks::default();
    let at = host
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let count = |writes| {
        let (values, stale) = futures::executor::block_on(velocity::observe(
            host,
            spec,
            &card_at("c", &at),
            &locks,
            writes,
            64,
        ))
        .unwrap();
        assert!(!stale);
        values[0]
    };
    // Three plain writes: the state is at write 3, no turn counter yet.
    for n in 0..3 {
        assert_eq!(count(velocity::Writes::Plain), f64::from(n));
    }
    let turn = host.keys("vel/");
    assert!(turn.iter().all(|k| !k.ends_with("/turn")), "{turn:?}");
    let t0 = host.monotonic_ns();
    assert_eq!(count(velocity::Writes::Ticketed), 3.0);
    assert_eq!(
        host.monotonic_ns(),
        t0,
        "a counter behind the state made it wait"
    );
    assert_eq!(count(velocity::Writes::Ticketed), 4.0);
    // A writer draws the next ticket and dies.
    let turn = host
        .keys("vel/")
        .into_iter()
        .find(|k| k.ends_with("/turn"))
        .unwrap();
    futures::executor::block_on(host.state_increment(&turn, 1)).unwrap();
    let t0 = host.monotonic_ns();
    assert_eq!(count(velocity::Writes::Ticketed), 5.0);
    let waited = host.monotonic_ns() - t0;
    assert!(
        (velocity::TURN_STALL_NS..velocity::UPDATE_BUDGET_NS).contains(&waited),
        "{waited} ns"
    );
    // And the slot flows again.
    let t0 = host.monotonic_ns();
    assert_eq!(count(velocity::Writes::Ticketed), 6.0);
    assert_eq!(host.monotonic_ns(), t0);
}
