//! The legacy web front end's two daily flows, through the real component: its own 1,100-row
//! sample file as one batch, and feedback by the integer id it displays and types back.

mod common;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::{STORE_TOKEN as TOKEN, StoreService};

/// The same model as forwarding.rs, so the component build is shared.
static BUILT: LazyLock<common::Built> = LazyLock::new(|| common::fit_and_build(2_000, 11, 50));

fn harness(vars: &[(&str, &str)], kv: Option<&std::path::Path>) -> harness::Edge {
    let mut config = harness::HarnessConfig::new(&BUILT.component);
    config.variables = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if let Some(dir) = kv {
        config.key_value_stores = vec!["default".into()];
        config.key_value_dir = Some(dir.to_path_buf());
    }
    harness::start_edge(config).unwrap()
}

fn post(h: &harness::Edge, path: &str, body: &str) -> (u16, Value) {
    let mut resp = common::agent()
        .post(format!("{}{path}", h.url()))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The sample file as the front end's Batch Upload page sends it: split on commas, `amount`
/// through parseFloat and the rest through parseInt, extra columns dropped.
fn legacy_sample() -> Vec<Value> {
    let path = common::root().join("../shared/reference/legacy_sample_transactions.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(',').map(str::trim).collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let mut row = serde_json::Map::new();
            for name in [
                "amount",
                "hour",
                "day_of_week",
                "merchant_category",
                "transaction_type",
            ] {
                let cell = cells[header.iter().position(|h| *h == name).unwrap()];
                let value = if name == "amount" {
                    json!(cell.parse::<f64>().unwrap())
                } else {
                    json!(cell.parse::<i64>().unwrap())
                };
                row.insert(name.into(), value);
            }
            Value::Object(row)
        })
        .collect()
}

#[test]
fn the_front_ends_sample_file_is_scored_as_one_batch() {
    let h = harness(&[], None);
    let sample = legacy_sample();
    assert_eq!(sample.len(), 1100);
    let body = json!({ "transactions": sample }).to_string();
    let t = Instant::now();
    let (status, v) = post(&h, "/api/predict-batch", &body);
    let took = t.elapsed();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["total_processed"], 1100);
    assert_eq!(v["failed"], 0);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1100);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert!(
            r["shap_explanation"].is_object() && r["legacy_id"].is_u64(),
            "{r}"
        );
    }
    let flagged = results.iter().filter(|r| r["is_anomaly"] == true).count();
    common::report(format!(
        "legacy sample: 1100 rows through /api/predict-batch (explained) -> 1100 results, 0 failed, \
         {flagged} flagged, in {took:?} ({} bytes in, answer {} results)",
        body.len(),
        results.len()
    ));

    // A body just over the limit is a 413, whatever it holds.
    let mut over = json!({"transactions": legacy_sample()}).to_string();
    over.insert_str(
        over.len() - 1,
        &format!(",\"pad\":\"{}\"", "x".repeat((1 << 20) - over.len())),
    );
    assert!(over.len() > 1 << 20 && over.len() < (1 << 20) + 64);
    let (status, v) = post(&h, "/api/predict-batch", &over);
    assert_eq!(status, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("1 MiB"));
}

/// Predict → the id the answer shows → `/api/feedback` with it → the store's dashboard counts
/// it; with the integer (as the front end sends it, a JSON number) and with the UUID.
#[test]
fn feedback_by_the_displayed_id_reaches_the_dashboard() {
    let pg = harness::postgres::TempPostgres::start().unwrap();
    let store = StoreService::start(&pg.url());
    let kv = tempfile::tempdir().unwrap();
    let url = store.url();
    // The front end's deployment: transaction_id is the legacy integer.
    let h = harness(
        &[
            ("store_url", &url),
            ("store_token", TOKEN),
            ("transaction_id_format", "legacy"),
        ],
        Some(kv.path()),
    );
    let tx = json!({"amount": 4800, "hour": 3, "day_of_week": 6, "merchant_category": 9, "transaction_type": 2});
    let (_, first) = post(&h, "/api/predict", &tx.to_string());
    let (_, second) = post(&h, "/api/predict", &tx.to_string());
    let legacy = first["transaction_id"].as_u64().expect("an integer id");
    assert_eq!(first["legacy_id"], legacy);
    assert!(legacy < (1 << 53));
    let uuid = second["transaction_uuid"].as_str().unwrap().to_owned();
    // What parseInt of the typed id gives: a number.
    let (status, a) = post(
        &h,
        "/api/feedback",
        &format!(r#"{{"transaction_id": {legacy}, "feedback": true}}"#),
    );
    assert_eq!((status, &a["transaction_id"]), (202, &json!(legacy)), "{a}");
    let (status, _) = post(
        &h,
        "/api/feedback",
        &json!({"transaction_id": uuid, "feedback": false, "comments": "not fraud"}).to_string(),
    );
    assert_eq!(status, 202);

    let joined = common::wait_for_count(2, Duration::from_secs(30), || {
        common::count(
            &pg,
            "select count(*) from feedback f join transactions t on t.id = f.transaction_id",
        )
    });
    assert_eq!(joined, 2);
    let by_legacy = pg
        .psql(&format!(
            "select t.legacy_id || ' ' || f.label from feedback f join transactions t on t.id = f.transaction_id where t.legacy_id = {legacy}"
        ))
        .unwrap();
    assert_eq!(by_legacy, format!("{legacy} true"));
    let mut resp = common::agent()
        .get(format!("{}/api/dashboard", h.url()))
        .call()
        .unwrap();
    let dashboard: Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(dashboard["feedback"]["total_feedback"], 2, "{dashboard}");
    assert_eq!(dashboard["feedback"]["positive_feedback"], 1, "{dashboard}");
    common::report(format!(
        "legacy feedback: by integer id {legacy} and by UUID -> 2 feedback rows joined, dashboard total_feedback = 2"
    ));
}

/// Legacy ids from two edge processes (two harnesses, forwarding off): 1,000,000 ids, no two
/// equal. The bound on paper is in `contract::legacy_id`.
#[test]
fn legacy_ids_from_two_edges_never_collide() {
    let edges = [harness(&[], None), harness(&[], None)];
    let item = json!({"amount": 12.5, "hour": 3, "day_of_week": 2, "merchant_category": 4, "transaction_type": 1});
    let body = json!({ "transactions": vec![item; 10_000] }).to_string();
    let mut seen = HashSet::with_capacity(1_000_000);
    let t = Instant::now();
    for _ in 0..50 {
        for h in &edges {
            let (status, v) = post(h, "/api/predict-batch?explain=false", &body);
            assert_eq!(status, 200);
            for r in v["results"].as_array().unwrap() {
                let id = r["legacy_id"].as_u64().unwrap();
                assert!(seen.insert(id), "legacy id {id} issued twice");
            }
        }
    }
    assert_eq!(seen.len(), 1_000_000);
    common::report(format!(
        "legacy ids: 1000000 from two edge processes, 0 collisions ({:?})",
        t.elapsed()
    ));
}
