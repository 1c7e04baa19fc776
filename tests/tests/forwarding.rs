//! Write forwarding through real parts: a throwaway PostgreSQL cluster, the store service, the
//! worker component in the harness with its key-value outbox on disk. Every prediction must end
//! up as exactly one row, whatever fails in between, and the caller never waits for the store.

mod common;

use serde_json::{Value, json};
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::{STORE_TOKEN as TOKEN, StoreService};

/// One component build (the same model as auth_cors.rs, so the build is shared).
static BUILT: LazyLock<common::Built> = LazyLock::new(|| common::fit_and_build(2_000, 11, 50));

/// Postgres + store + a harness whose worker forwards to the store, outbox under `kv_dir`.
struct Setup {
    pg: harness::postgres::TempPostgres,
    store: StoreService,
    kv_dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let pg = harness::postgres::TempPostgres::start().unwrap();
        let store = StoreService::start(&pg.url());
        Setup {
            pg,
            store,
            kv_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn harness(&self) -> harness::Edge {
        harness_for(&self.store.url(), self.kv_dir.path())
    }

    /// `(rows, distinct ids)` in the transactions table.
    fn counts(&self) -> (u64, u64) {
        let out = self
            .pg
            .psql("select count(*) || ' ' || count(distinct id) from transactions")
            .unwrap();
        let mut it = out.split_whitespace().map(|n| n.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }

    /// Waits until the table holds `n` rows (or the deadline passes) and returns the counts.
    fn wait_for_rows(&self, n: u64, timeout: Duration) -> (u64, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.counts();
            if counts.0 >= n || Instant::now() > deadline {
                return counts;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ids_in_store(&self) -> std::collections::BTreeSet<String> {
        self.pg
            .psql("select id from transactions")
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn harness_for(store_url: &str, kv_dir: &Path) -> harness::Edge {
    let mut config = harness::HarnessConfig::new(&BUILT.component);
    config.variables = vec![
        ("store_url".into(), store_url.into()),
        ("store_token".into(), TOKEN.into()),
        ("edge_region".into(), "test-region".into()),
    ];
    config.key_value_stores = vec!["default".into()];
    config.key_value_dir = Some(kv_dir.to_path_buf());
    harness::start_edge(config).unwrap()
}

fn transaction(i: usize) -> Value {
    json!({
        "amount": 10.0 + (i % 97) as f64 * 3.5,
        "hour": i % 24,
        "day_of_week": i % 7,
        "merchant_category": i % 10,
        "transaction_type": i % 3,
    })
}

/// POSTs `n` predictions; returns their transaction ids. Every answer must be a 200.
fn predict(h: &harness::Edge, n: usize, start: usize) -> Vec<String> {
    let agent = common::agent();
    (start..start + n)
        .map(|i| {
            let mut resp = agent
                .post(format!("{}/api/predict?explain=false", h.url()))
                .header("content-type", "application/json")
                .send(transaction(i).to_string())
                .unwrap();
            assert_eq!(resp.status(), 200);
            let v: Value =
                serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
            v["transaction_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn outbox_entries(h: &harness::Edge) -> usize {
    h.stored_keys(worker_core::OUTBOX).unwrap()
}

#[test]
fn every_prediction_becomes_exactly_one_row() {
    let s = Setup::new();
    let h = s.harness();
    let mut ids = predict(&h, 150, 0);
    // A batch forwards each scored item too.
    let batch = json!({"transactions": (150..200).map(transaction).collect::<Vec<_>>()});
    let mut resp = common::agent()
        .post(format!("{}/api/predict-batch?explain=false", h.url()))
        .header("content-type", "application/json")
        .send(batch.to_string())
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    ids.extend(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["transaction_id"].as_str().unwrap().to_owned()),
    );
    let (rows, distinct) = s.wait_for_rows(200, Duration::from_secs(30));
    common::report(format!(
        "forwarding (a): 200 predictions -> {rows} rows, {distinct} distinct ids"
    ));
    assert_eq!((rows, distinct), (200, 200));
    let stored = s.ids_in_store();
    assert!(ids.iter().all(|id| stored.contains(id)), "ids differ");
    // The row carries what the edge computed.
    let region =
        s.pg.psql(&format!(
            "select region || ' ' || model_version from transactions where id = '{}'",
            ids[0]
        ))
        .unwrap();
    assert!(region.starts_with("test-region if1-"), "{region}");
}

#[test]
fn postgres_outage_loses_and_duplicates_nothing() {
    let mut s = Setup::new();
    let h = s.harness();
    let mut ids = Vec::new();
    // Two outages, each followed by a short burst and then silence. After the shorter pause the
    // instance that saw the outage is still alive and takes the store as down for the rest of
    // its 1 s cool-down; after the longer one it has gone idle and a new instance finds the
    // outage's entries just short of the 2 s after which another instance's entries are its
    // to send. Either way no request comes to start another drain.
    for (round, pause_ms) in [500u64, 1500].into_iter().enumerate() {
        let first = round * 160;
        ids.extend(predict(&h, 60, first));
        s.pg.stop().unwrap();
        // The caller keeps getting answers while the database is down.
        let t = Instant::now();
        ids.extend(predict(&h, 80, first + 60));
        let during = t.elapsed();
        std::thread::sleep(Duration::from_millis(pause_ms));
        let parked = outbox_entries(&h);
        s.pg.restart().unwrap();
        ids.extend(predict(&h, 20, first + 140));
        let idle = Instant::now();
        let expected = first as u64 + 160;
        let (rows, distinct) = s.wait_for_rows(expected, Duration::from_secs(60));
        common::report(format!(
            "forwarding (b): 160 predictions across a Postgres outage (80 during it, answered \
             in {during:?}; {parked} outbox entries {pause_ms} ms after it) -> {rows} rows in all, \
             {distinct} distinct ids, {:.1} s after the last answer",
            idle.elapsed().as_secs_f64()
        ));
        assert_eq!(
            (rows, distinct),
            (expected, expected),
            "pause {pause_ms} ms"
        );
        assert!(
            parked > 0,
            "the outage should have parked batches in the outbox"
        );
    }
    let stored = s.ids_in_store();
    assert!(ids.iter().all(|id| stored.contains(id)));
    // Drained: the outbox is empty again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox_entries(&h) > 0 && Instant::now() < deadline {
        predict(&h, 1, 10_000);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(outbox_entries(&h), 0, "outbox not drained");
}

#[test]
fn store_outage_and_harness_restart_lose_nothing() {
    let mut s = Setup::new();
    let store_url = s.store.url();
    let h = s.harness();
    let mut ids = predict(&h, 30, 0);
    s.wait_for_rows(30, Duration::from_secs(30));
    // The store itself goes away (not just its database).
    drop(std::mem::replace(
        &mut s.store,
        StoreService::start(&s.pg.url()),
    ));
    // (A new store now runs on another port; the worker still points at the old, dead one.)
    ids.extend(predict(&h, 40, 30));
    std::thread::sleep(Duration::from_millis(500));
    let parked = outbox_entries(&h);
    assert!(
        parked > 0,
        "batches for a dead store must be parked in the outbox"
    );
    // The edge restarts with the outbox on disk, now pointed at the live store.
    h.shutdown().unwrap();
    let _ = store_url;
    let h = s.harness();
    ids.extend(predict(&h, 10, 70));
    let (rows, distinct) = s.wait_for_rows(80, Duration::from_secs(60));
    common::report(format!(
        "forwarding (f): 80 predictions, store killed and edge restarted with {parked} outbox \
         entries -> {rows} rows, {distinct} distinct ids"
    ));
    assert_eq!((rows, distinct), (80, 80));
    let stored = s.ids_in_store();
    assert!(ids.iter().all(|id| stored.contains(id)));
}

#[test]
fn redelivery_and_bad_tokens_write_nothing_twice_or_at_all() {
    let s = Setup::new();
    let agent = common::agent();
    let events: Vec<Value> = (0..20)
        .map(|i| {
            let id = format!("0190a000-0000-7000-8000-{i:012x}");
            json!({"event_id": id, "kind": "scored_transaction", "transaction_id": id,
                   "scored_at": "2026-11-23T18:00:00Z", "model_version": "if1-test",
                   "edge_instance": "t", "region": "r", "features": transaction(i),
                   "anomaly_score": 0.1, "risk_score": 0.4, "is_anomaly": false,
                   "confidence": 0.1, "explanation": null})
        })
        .collect();
    let body = Value::Array(events).to_string();
    let post = |auth: Option<&str>| {
        let mut req = agent
            .post(format!("{}/v1/events", s.store.url()))
            .header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send(body.as_str()).unwrap().status().as_u16()
    };
    // (d) no token, wrong token: 401 and nothing written.
    assert_eq!(post(None), 401);
    assert_eq!(post(Some("Bearer wrong-token-wrong-token-wrong")), 401);
    assert_eq!(s.counts(), (0, 0));
    // (c) the same batch twice: one set of rows.
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(post(Some(&bearer)), 200);
    assert_eq!(post(Some(&bearer)), 200);
    common::report(format!(
        "forwarding (c,d): unauthenticated batches wrote 0 rows; one batch of 20 delivered twice -> {:?} (rows, distinct)",
        s.counts()
    ));
    assert_eq!(s.counts(), (20, 20));
}

#[test]
fn feedback_reaches_the_dashboard_and_listing() {
    let s = Setup::new();
    let h = s.harness();
    let ids = predict(&h, 12, 0);
    s.wait_for_rows(12, Duration::from_secs(30));
    let agent = common::agent();
    let send_feedback = |id: &str, label: bool| {
        let mut resp = agent
            .post(format!("{}/api/feedback", h.url()))
            .header("content-type", "application/json")
            .send(
                json!({"transaction_id": id, "feedback": label, "comments": "checked"}).to_string(),
            )
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        (status, body)
    };
    // Three correct, one wrong, and one changed mind (wrong, then correct): 4 of 5 correct.
    for id in &ids[..3] {
        assert_eq!(send_feedback(id, true).0, 202);
    }
    assert_eq!(send_feedback(&ids[3], false).0, 202);
    assert_eq!(send_feedback(&ids[4], false).0, 202);
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = send_feedback(&ids[4], true);
    assert_eq!((status, body["feedback"].clone()), (202, json!(true)));
    // Bad feedback is refused at the edge, naming the field.
    let (status, body) = send_feedback("not-a-uuid", true);
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("transaction_id"));

    let deadline = Instant::now() + Duration::from_secs(30);
    let feedback_rows = loop {
        let n: u64 =
            s.pg.psql("select count(*) from feedback")
                .unwrap()
                .parse()
                .unwrap();
        let updated =
            s.pg.psql(&format!(
                "select count(*) from feedback where transaction_id = '{}' and label",
                ids[4]
            ))
            .unwrap();
        if (n == 5 && updated == "1") || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(feedback_rows, 5, "one current feedback per transaction");
    let mut resp = agent
        .get(format!("{}/api/dashboard", h.url()))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let dash: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    common::report(format!(
        "forwarding (e): dashboard feedback {}",
        dash["feedback"]
    ));
    assert_eq!(dash["feedback"]["total_feedback"], 5);
    assert_eq!(dash["feedback"]["positive_feedback"], 4);
    assert_eq!(dash["feedback"]["accuracy"].as_f64(), Some(80.0));
    assert_eq!(dash["stats"]["total_transactions"], 12);
    assert_eq!(dash["cached"], false);
    // Served from the cache the second time.
    let mut resp = agent
        .get(format!("{}/api/dashboard", h.url()))
        .call()
        .unwrap();
    let again: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(again["cached"], true);

    let mut resp = agent
        .get(format!("{}/api/transactions?page=1&per_page=5", h.url()))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let list: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(list["pagination"]["total"], 12);
    assert_eq!(list["transactions"].as_array().unwrap().len(), 5);
    // Newest first, as times: RFC 3339 text does not sort (`…15.225Z` is a whole millisecond,
    // after `…15.225727Z` as text).
    let stamps: Vec<std::time::SystemTime> = list["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| humantime::parse_rfc3339(t["timestamp"].as_str().unwrap()).unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "{stamps:?}");
}
