//! Input the database cannot store, or that a spreadsheet would execute, against a real
//! PostgreSQL: always a 4xx naming the event, never a 5xx, nothing written.

mod common;

use chrono::Utc;
use common::*;
use serde_json::{Value, json};

/// Every string-valued place of both event kinds (top-level fields and map keys).
fn places() -> Vec<(&'static str, &'static str)> {
    vec![
        ("scored", "event_id"),
        ("scored", "kind"),
        ("scored", "transaction_id"),
        ("scored", "scored_at"),
        ("scored", "model_version"),
        ("scored", "edge_instance"),
        ("scored", "region"),
        ("scored", "features.<key>"),
        ("scored", "explanation.<key>"),
        ("scored", "anomaly_score"),
        ("feedback", "event_id"),
        ("feedback", "kind"),
        ("feedback", "transaction_id"),
        ("feedback", "comments"),
        ("feedback", "created_at"),
    ]
}

/// The event with `PLACEHOLDER` put at `place`.
fn with_placeholder(kind: &str, place: &str) -> Value {
    let now = Utc::now();
    let mut v = match kind {
        "scored" => scored(1, now),
        _ => feedback(2, tx_id(1), true, now),
    };
    match place.split_once('.') {
        Some((map, _)) => {
            v[map]
                .as_object_mut()
                .unwrap()
                .insert("PLACEHOLDER".into(), json!(1.0));
        }
        None => v[place] = json!("PLACEHOLDER"),
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_surrogates_and_huge_strings_get_4xx_and_write_nothing() {
    let t = TestStore::start().await;
    let huge = "x".repeat(1 << 20);
    // JSON text of each hostile string (a lone surrogate can only be written as an escape).
    let hostile: [(&str, String); 4] = [
        ("NUL", r#""a\u0000b""#.to_owned()),
        ("raw NUL escape at start", r#""\u0000""#.to_owned()),
        ("lone surrogate", r#""a\ud800b""#.to_owned()),
        ("1 MiB string", format!("\"{huge}\"")),
    ];
    let mut tried = 0;
    for (kind, place) in places() {
        for (what, text) in &hostile {
            let event = with_placeholder(kind, place);
            let good = scored(3, Utc::now());
            let body = serde_json::to_string(&json!([good, event]))
                .unwrap()
                .replace("\"PLACEHOLDER\"", text);
            let (status, answer) = t.post_raw(body).await;
            assert!(
                (400..500).contains(&status),
                "{kind} {place} with {what}: {status} {answer}"
            );
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(!error.is_empty(), "{kind} {place} with {what}: {answer}");
            // Parsable text names the event; a lone surrogate is a syntax error of the body.
            if *what != "lone surrogate" {
                assert_eq!(answer["index"], 1, "{kind} {place} with {what}: {answer}");
            }
            tried += 1;
        }
    }
    for table in [
        "transactions",
        "feedback",
        "ingested_events",
        "pending_legacy_feedback",
    ] {
        assert_eq!(t.count(table), 0, "{table}");
    }
    let (_, metrics) = t.get_text("/metrics").await;
    assert!(
        !metrics.contains("status=\"500\""),
        "a 5xx was answered: {metrics}"
    );
    eprintln!("hostile ingest: {tried} batches, every one a 4xx, nothing written");
}

/// The first bad event is named (index and field), so the edge can drop just that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refused_event_is_named() {
    let t = TestStore::start().await;
    let now = Utc::now();
    let mut bad = feedback(9, tx_id(0), true, now);
    bad["comments"] = json!("nul \u{0} here");
    let (status, body) = t.post_events(&[scored(0, now), bad, scored(1, now)]).await;
    assert_eq!(status, 400);
    assert_eq!(body["index"], 1, "{body}");
    assert_eq!(body["field"], "comments", "{body}");
    assert!(body["error"].as_str().unwrap().contains("NUL"), "{body}");
    assert_eq!(t.count("transactions"), 0);
    // The rest, resent without it, is taken.
    let (status, _) = t.post_events(&[scored(0, now), scored(1, now)]).await;
    assert_eq!(status, 200);
    assert_eq!(t.count("transactions"), 2);
}

/// OWASP's CSV-injection rule on the labelled export: text cells that begin with `=`, `+`, `-`,
/// `@`, tab or CR get a leading `'`; numbers (negative ones too) stay numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_neutralises_formulas() {
    let t = TestStore::start().await;
    let now = Utc::now();
    let mut event = scored(0, now);
    event["features"] = json!({
        "=HYPERLINK(\"http://evil\")": 1.0, "+sum": 2.0, "-minus": 3.0, "@at": 4.0,
        "\ttab": 5.0, "\rcr": 6.0, "amount": -7.5, "plain": 8.0,
    });
    event["model_version"] = json!("=cmd|' /C calc'!A0");
    let (status, body) = t
        .post_events(&[event, feedback(1, tx_id(0), true, now)])
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, csv) = t.get_text("/v1/feedback/export?format=csv").await;
    assert_eq!(status, 200);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    let cell = |name: &str| {
        let i = header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{name} in {header:?}"));
        rows[0][i].to_owned()
    };
    for name in [
        "'=HYPERLINK(\"http://evil\")",
        "'+sum",
        "'-minus",
        "'@at",
        "'\ttab",
        "'\rcr",
    ] {
        cell(name);
    }
    for h in &header {
        assert!(!h.starts_with(['=', '+', '-', '@', '\t', '\r']), "{h:?}");
    }
    assert_eq!(cell("amount"), "-7.5");
    assert_eq!(cell("plain"), "8");
    assert_eq!(cell("model_version"), "'=cmd|' /C calc'!A0");
    // NDJSON keeps names and values as they are (no spreadsheet reads it).
    let (_, nd) = t.get_text("/v1/feedback/export?format=ndjson").await;
    let row: Value = serde_json::from_str(nd.lines().next().unwrap()).unwrap();
    assert_eq!(row["model_version"], "=cmd|' /C calc'!A0");
    assert_eq!(row["=HYPERLINK(\"http://evil\")"], 1.0);
}

/// Feedback by a legacy integer id joins the transaction that carries it: at once when the
/// transaction is stored, later when it arrives after the feedback; the newest wins a collision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_by_legacy_id_joins_the_right_transaction() {
    let t = TestStore::start().await;
    let now = Utc::now();
    let with_legacy = |n: u128, legacy: u64, age_s: i64| {
        let mut v = scored(n, now - chrono::Duration::seconds(age_s));
        v["legacy_id"] = json!(legacy);
        v
    };
    let by_legacy = |event: u128, legacy: u64, label: bool| {
        let mut v = feedback(event, tx_id(0), label, now);
        v.as_object_mut().unwrap().remove("transaction_id");
        v["legacy_id"] = json!(legacy);
        v
    };
    let feedback_of = |n: u128| {
        t.pg.psql(&format!(
            "SELECT label FROM feedback WHERE transaction_id = '{}'",
            tx_id(n)
        ))
        .unwrap()
    };
    // Stored first, then feedback by its legacy id.
    let big = contract::legacy_id::MAX;
    assert_eq!(
        t.post_events(&[with_legacy(0, big, 0), with_legacy(1, 4343, 0)])
            .await
            .0,
        200
    );
    assert_eq!(t.post_events(&[by_legacy(10, big, false)]).await.0, 200);
    assert_eq!(feedback_of(0), "f");
    assert_eq!(feedback_of(1), "");
    // Feedback first: it waits, then joins when the transaction arrives.
    assert_eq!(t.post_events(&[by_legacy(11, 5555, true)]).await.0, 200);
    assert_eq!(t.count("pending_legacy_feedback"), 1);
    assert_eq!(t.post_events(&[with_legacy(2, 5555, 0)]).await.0, 200);
    assert_eq!(t.count("pending_legacy_feedback"), 0);
    assert_eq!(feedback_of(2), "t");
    // Two transactions with one legacy id (a collision): the newest gets it.
    assert_eq!(
        t.post_events(&[with_legacy(3, 6666, 60), with_legacy(4, 6666, 5)])
            .await
            .0,
        200
    );
    assert_eq!(t.post_events(&[by_legacy(12, 6666, true)]).await.0, 200);
    assert_eq!(
        (feedback_of(3).as_str(), feedback_of(4).as_str()),
        ("", "t")
    );
    // The listing shows the legacy id; the dashboard counts the feedback.
    let (_, listing) = t.get_json("/v1/transactions?per_page=100").await;
    let row = listing["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == tx_id(0).to_string())
        .unwrap();
    assert_eq!(row["legacy_id"], big);
    let (_, dashboard) = t.get_json("/v1/dashboard").await;
    assert_eq!(dashboard["feedback"]["total_feedback"], 3, "{dashboard}");
}

/// An event from a model as wide as the format allows (1,024 features, with an explanation)
/// is stored, not refused as malformed; one feature more is a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_the_widest_model_are_stored() {
    let t = TestStore::start().await;
    let now = Utc::now();
    let wide: serde_json::Map<String, Value> = (0..contract::limits::MAX_FEATURES)
        .map(|i| (format!("feature_{i:04}"), json!(i as f64 * 0.5)))
        .collect();
    let mut event = scored(0, now);
    event["features"] = Value::Object(wide.clone());
    event["explanation"] = Value::Object(wide.clone());
    let (status, body) = t.post_events(&[event.clone()]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        t.pg.psql("SELECT count(*) FROM transactions t, jsonb_object_keys(t.features) k")
            .unwrap(),
        "1024"
    );
    let mut over = scored(1, now);
    let mut more = wide;
    more.insert("one_more".into(), json!(1.0));
    over["features"] = Value::Object(more);
    let (status, body) = t.post_events(&[over]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "features");
    assert_eq!(t.count("transactions"), 1);
}
