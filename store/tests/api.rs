//! End-to-end tests of the store's HTTP API against a real PostgreSQL.

mod common;

use chrono::{Duration, Utc};
use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_idempotent_across_redelivery_and_overlap() {
    let t = TestStore::start().await;
    let now = Utc::now();
    let first: Vec<Value> = (0..250).map(|n| scored(n, now)).collect();

    assert_eq!(
        t.post_events(&first).await,
        (200, json!({"accepted": 250, "duplicates": 0}))
    );
    assert_eq!(t.count("transactions"), 250);

    // The same batch again: nothing new.
    assert_eq!(
        t.post_events(&first).await,
        (200, json!({"accepted": 0, "duplicates": 250}))
    );
    assert_eq!(t.count("transactions"), 250);

    // Overlapping batch, as NDJSON: 100 already seen, 150 new.
    let overlap: Vec<Value> = (150..400).map(|n| scored(n, now)).collect();
    assert_eq!(
        t.post_ndjson(&overlap).await,
        (200, json!({"accepted": 150, "duplicates": 100}))
    );
    assert_eq!(t.count("transactions"), 400);
    assert_eq!(t.count("ingested_events"), 400);

    // A repeat inside one batch counts as a duplicate too.
    let repeated = vec![scored(400, now), scored(400, now)];
    assert_eq!(
        t.post_events(&repeated).await,
        (200, json!({"accepted": 1, "duplicates": 1}))
    );
    assert_eq!(t.count("transactions"), 401);

    // The legacy columns are filled from the features; the model version is tracked.
    let row = t.pg.psql(&format!(
        "SELECT amount, hour, day_of_week, merchant_category, transaction_type, model_version, \
         features->>'amount', explanation->>'hour' FROM transactions WHERE id = '{}'",
        tx_id(7)
    ));
    assert_eq!(row.unwrap(), "17.5|7|2|4|1|if1-a1423274|17.5|-0.1");
    assert_eq!(
        t.pg.psql("SELECT model_version FROM model_versions")
            .unwrap(),
        "if1-a1423274"
    );
    let seen =
        t.pg.psql("SELECT last_seen - first_seen = interval '400 seconds' FROM model_versions")
            .unwrap();
    assert_eq!(seen, "t");

    let (status, metrics) = t.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("store_events_ingested_total{kind=\"scored_transaction\"} 401"),
        "{metrics}"
    );
    assert!(
        metrics.contains("store_events_duplicate_total{kind=\"scored_transaction\"} 351"),
        "{metrics}"
    );
    assert!(
        metrics.contains("store_ingest_batch_events_count 4"),
        "{metrics}"
    );
    assert!(metrics.contains("store_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/events\",status=\"200\"} 4"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_a_valid_token_are_refused_and_not_written() {
    let t = TestStore::start().await;
    let body = serde_json::to_vec(&[scored(1, Utc::now())]).unwrap();
    let wrong = format!("{TOKEN}x");
    let prefix = &TOKEN[..TOKEN.len() - 1];
    for auth in [
        None,
        Some("Bearer nope"),
        Some(wrong.as_str()),
        Some(prefix),
        Some(TOKEN),
    ] {
        let mut req = t
            .http
            .post(t.url("/v1/events"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(a) = auth {
            // `Some(TOKEN)` is sent without the Bearer scheme: also refused.
            let value = if a.starts_with("Bearer") || a == TOKEN {
                a.to_string()
            } else {
                format!("Bearer {a}")
            };
            req = req.header("authorization", value);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "auth {auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let err: Value = r.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains("token"), "{err}");
    }
    for path in ["/v1/dashboard", "/v1/transactions", "/v1/feedback/export"] {
        let r = t.http.get(t.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    assert_eq!(t.count("transactions"), 0);
    assert_eq!(t.count("ingested_events"), 0);
    let (_, metrics) = t.get_text("/metrics").await;
    assert!(
        metrics.contains("store_errors_total{kind=\"auth\"} 8"),
        "{metrics}"
    );
    // The scheme name is case-insensitive.
    let r = t
        .http
        .post(t.url("/v1/events"))
        .header("content-type", "application/json")
        .header("authorization", format!("bearer {TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(t.count("transactions"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_are_rejected_whole() {
    let t = TestStore::start_with(|c| c.max_body_bytes = 64 * 1024).await;
    let now = Utc::now();

    let mut bad = scored(2, now);
    bad.as_object_mut().unwrap().remove("scored_at");
    let (status, body) = t.post_events(&[scored(0, now), scored(1, now), bad]).await;
    assert_eq!(status, 400);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("event 2") && msg.contains("`scored_at`"),
        "{msg}"
    );

    let mut bad = scored(1, now);
    bad["features"]["amount"] = json!("12.5");
    let (status, body) = t.post_ndjson(&[scored(0, now), bad]).await;
    assert_eq!(status, 400);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("event 1") && msg.contains("`features.amount`"),
        "{msg}"
    );

    let mut bad = feedback(9, tx_id(0), true, now);
    bad["feedback"] = json!("yes");
    let (status, body) = t.post_events(&[scored(0, now), bad]).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("event 1: field `feedback`"),
        "{body}"
    );

    // Not JSON, not an array, wrong media type, too large.
    let send = |ct: &'static str, body: Vec<u8>| {
        t.http
            .post(t.url("/v1/events"))
            .bearer_auth(TOKEN)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    assert_eq!(
        send("application/json", b"[{".to_vec())
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
    assert_eq!(
        send("application/json", b"{}".to_vec())
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
    assert_eq!(
        send("text/plain", b"[]".to_vec())
            .await
            .unwrap()
            .status()
            .as_u16(),
        415
    );
    let big: Vec<Value> = (0..400).map(|n| scored(n, now)).collect();
    let r = send("application/json", serde_json::to_vec(&big).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(
        r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("larger than")
    );

    assert_eq!(t.count("transactions"), 0);
    assert_eq!(t.count("ingested_events"), 0);
    assert_eq!(t.count("feedback"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_is_upserted_and_counted_in_the_dashboard() {
    let t = TestStore::start().await;
    let now = Utc::now();
    // 10 transactions in the window (n = 0 and 5 anomalous), one from 8 days ago (outside).
    let mut batch: Vec<Value> = (0..10).map(|n| scored(n, now)).collect();
    batch.push(scored(8 * 24 * 3600, now));
    assert_eq!(t.post_events(&batch).await.0, 200);

    let (status, d) = t.get_json("/v1/dashboard").await;
    assert_eq!(status, 200);
    assert_eq!(d["stats"]["total_transactions"], 10);
    assert_eq!(d["stats"]["anomalies_detected"], 2);
    assert_eq!(d["stats"]["anomaly_rate"], 20.0);
    let avg = d["stats"]["avg_anomaly_score"].as_f64().unwrap();
    assert!(
        (avg - (2.0 * -0.05 + 8.0 * 0.1) / 10.0).abs() < 1e-12,
        "{avg}"
    );
    let hours = d["hourly_distribution"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(
        hours[5],
        json!({"hour": 5, "total_transactions": 1, "anomalies": 1})
    );
    assert_eq!(
        hours[11],
        json!({"hour": 11, "total_transactions": 0, "anomalies": 0})
    );
    assert_eq!(
        d["feedback"],
        json!({"total_feedback": 0, "positive_feedback": 0, "accuracy": 0.0})
    );
    assert!(d["generated_at"].as_str().unwrap().ends_with('Z'));

    let fb = vec![
        feedback(100, tx_id(0), true, now),
        feedback(101, tx_id(1), true, now),
        feedback(102, tx_id(2), false, now),
        feedback(103, tx_id(999), true, now), // transaction not (yet) stored
    ];
    assert_eq!(
        t.post_events(&fb).await,
        (200, json!({"accepted": 4, "duplicates": 0}))
    );
    let (_, d) = t.get_json("/v1/dashboard").await;
    let accuracy = d["feedback"]["accuracy"].as_f64().unwrap();
    assert_eq!(d["feedback"]["total_feedback"], 3);
    assert_eq!(d["feedback"]["positive_feedback"], 2);
    assert!((accuracy - 200.0 / 3.0).abs() < 1e-9, "{accuracy}");

    // A newer verdict replaces the old one; an older one (arriving late) does not.
    let later = now + Duration::seconds(60);
    let fb = vec![
        feedback(104, tx_id(1), false, later),
        feedback(105, tx_id(2), true, now - Duration::seconds(60)),
    ];
    assert_eq!(
        t.post_events(&fb).await,
        (200, json!({"accepted": 2, "duplicates": 0}))
    );
    assert_eq!(t.count("feedback"), 4);
    let (_, d) = t.get_json("/v1/dashboard").await;
    assert_eq!(d["feedback"]["total_feedback"], 3);
    assert_eq!(d["feedback"]["positive_feedback"], 1);
    let row = t.pg.psql(&format!(
        "SELECT label, last_event_id FROM feedback WHERE transaction_id = '{}'",
        tx_id(1)
    ));
    assert_eq!(row.unwrap(), format!("f|{}", event_id(104)));
    let row = t.pg.psql(&format!(
        "SELECT label FROM feedback WHERE transaction_id = '{}'",
        tx_id(2)
    ));
    assert_eq!(row.unwrap(), "f");

    // Feedback that arrived before its transaction is counted once the transaction arrives.
    let mut late = scored(999, now);
    late["scored_at"] = json!(ts(now));
    assert_eq!(t.post_events(&[late]).await.0, 200);
    let (_, d) = t.get_json("/v1/dashboard").await;
    assert_eq!(d["stats"]["total_transactions"], 11);
    assert_eq!(d["feedback"]["total_feedback"], 4);
    assert_eq!(d["feedback"]["positive_feedback"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_listed_newest_first_with_pagination() {
    let t = TestStore::start().await;
    let now = Utc::now();
    // n = 0 is the newest. Two with the same scored_at are ordered by id, descending.
    let mut batch: Vec<Value> = (0..45).map(|n| scored(n, now)).collect();
    batch[44]["scored_at"] = batch[43]["scored_at"].clone();
    batch.reverse();
    assert_eq!(t.post_events(&batch).await.0, 200);
    assert_eq!(
        t.post_events(&[feedback(200, tx_id(3), true, now)]).await.0,
        200
    );

    let (status, p1) = t.get_json("/v1/transactions?page=1&per_page=20").await;
    assert_eq!(status, 200);
    assert_eq!(p1["pagination"]["page"], 1);
    assert_eq!(p1["pagination"]["total"], 45);
    assert_eq!(p1["pagination"]["pages"], 3);
    assert_eq!(p1["pagination"]["total_exact"], true);
    let ids: Vec<String> = p1["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..20).map(|n| tx_id(n).to_string()).collect();
    assert_eq!(ids, expected);
    let item = &p1["transactions"][3];
    assert_eq!(item["amount"], 13.5);
    assert_eq!(item["hour"], 3);
    assert_eq!(item["day_of_week"], 2);
    assert_eq!(item["merchant_category"], 4);
    assert_eq!(item["transaction_type"], 1);
    assert_eq!(item["is_anomaly"], false);
    assert_eq!(item["anomaly_score"], 0.1);
    assert_eq!(
        item["shap_explanation"],
        json!({"amount": 0.3, "hour": -0.1})
    );
    assert_eq!(item["feedback"], true);
    assert!(item["timestamp"].as_str().unwrap().ends_with('Z'));

    let (_, p3) = t.get_json("/v1/transactions?page=3&per_page=20").await;
    let ids: Vec<String> = p3["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    // 43 and 44 share scored_at: the larger id (44) comes first.
    let expected: Vec<String> = [40, 41, 42, 44, 43]
        .iter()
        .map(|&n| tx_id(n).to_string())
        .collect();
    assert_eq!(ids, expected);

    assert_eq!(p3["pagination"]["next_cursor"], Value::Null, "last page");
    let (_, defaults) = t.get_json("/v1/transactions").await;
    assert_eq!(defaults["pagination"], p1["pagination"]);
    let (_, beyond) = t.get_json("/v1/transactions?page=9").await;
    assert_eq!(beyond["transactions"], json!([]));
    assert_eq!(beyond["pagination"]["next_cursor"], Value::Null);

    // Keyset: following next_cursor from page 1 lists the same rows as the numbered pages.
    let listed = listed_ids;
    let (_, p2) = t.get_json("/v1/transactions?page=2&per_page=20").await;
    let mut cursor = p1["pagination"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, c2) = t
        .get_json(&format!("/v1/transactions?cursor={cursor}&per_page=20"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed(&c2), listed(&p2));
    assert_eq!(c2["pagination"]["page"], Value::Null);
    assert_eq!(c2["pagination"]["total"], 45);
    cursor = c2["pagination"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    // New transactions arriving meanwhile do not shift a keyset walk (they would shift pages).
    assert_eq!(
        t.post_events(&[scored(300, now + Duration::seconds(305))])
            .await
            .0,
        200
    );
    let (_, c3) = t
        .get_json(&format!("/v1/transactions?cursor={cursor}&per_page=20"))
        .await;
    assert_eq!(
        listed(&c3),
        listed(&p3),
        "43 and 44 share scored_at: the id breaks the tie"
    );
    assert_eq!(c3["pagination"]["next_cursor"], Value::Null);

    for bad in [
        "per_page=101",
        "per_page=0",
        "page=0",
        "page=abc",
        "page=-1",
        "per_page=1.5",
        "cursor=abc",
        "cursor=12_34",
        "cursor=&page=1",
    ] {
        let (status, body) = t.get_json(&format!("/v1/transactions?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        let field = bad.split('=').next().unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_returns_labelled_rows() {
    let t = TestStore::start().await;
    let base = Utc::now() - Duration::hours(1);
    let mut batch: Vec<Value> = (0..6).map(|n| scored(n, base)).collect();
    // A transaction with a non-legacy feature set.
    batch[4]["features"] = json!({"velocity": 3.25, "amount": 99.0});
    // One that named a card and carried its own time (no feedback: history only).
    batch[5]["entities"] = json!({"card_id": "c-7"});
    batch[5]["transaction_time"] = json!("2026-11-30T12:00:00.5Z");
    batch.push(feedback(10, tx_id(0), true, base)); // anomalous, confirmed -> 1
    batch.push(feedback(11, tx_id(1), true, base)); // normal, confirmed -> 0
    batch.push(feedback(12, tx_id(2), false, base)); // normal, model wrong -> 1
    batch.push(feedback(13, tx_id(4), true, base)); // normal, confirmed -> 0
    batch.push(feedback(14, tx_id(77), true, base)); // no transaction: not exported
    assert_eq!(t.post_events(&batch).await.0, 200);

    let (status, csv) = t.get_text("/v1/feedback/export").await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "transaction_id,scored_at,amount,hour,day_of_week,merchant_category,transaction_type,velocity,label,model_version,labelled_by"
    );
    assert_eq!(lines.len(), 5, "{csv}");
    // Oldest first: tx 4 (scored 4 s before base), 2, 1, 0.
    let row = |n: u128| {
        lines
            .iter()
            .find(|l| l.starts_with(&tx_id(n).to_string()))
            .copied()
            .unwrap()
    };
    assert!(lines[1].starts_with(&tx_id(4).to_string()));
    assert!(
        row(0).ends_with(",10.5,0,2,4,1,,1,if1-a1423274,"),
        "{}",
        row(0)
    );
    assert!(
        row(1).ends_with(",11.5,1,2,4,1,,0,if1-a1423274,"),
        "{}",
        row(1)
    );
    assert!(
        row(2).ends_with(",12.5,2,2,4,1,,1,if1-a1423274,"),
        "{}",
        row(2)
    );
    assert!(
        row(4).ends_with(",99,,,,,3.25,0,if1-a1423274,"),
        "{}",
        row(4)
    );

    // Time window [since, until) on scored_at, NDJSON.
    let since = ts(base - Duration::seconds(2));
    let until = ts(base);
    let path = format!("/v1/feedback/export?format=ndjson&since={since}&until={until}");
    let path = path.replace('+', "%2B");
    let (status, nd) = t.get_text(&path).await;
    assert_eq!(status, 200);
    let rows: Vec<Value> = nd
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{nd}");
    assert_eq!(rows[0]["transaction_id"], tx_id(2).to_string());
    assert_eq!(rows[0]["label"], 1);
    assert_eq!(rows[0]["amount"], 12.5);
    assert_eq!(rows[1]["transaction_id"], tx_id(1).to_string());
    assert_eq!(rows[1]["label"], 0);
    assert_eq!(rows[1]["model_version"], "if1-a1423274");
    assert_eq!(
        rows[1]["labelled_by"],
        Value::Null,
        "feedback through an edge is nobody's"
    );

    // With the history: every transaction of the window (unlabelled ones with an empty
    // label), their entity ids and the time the edge computed velocity at.
    let (status, csv) = t.get_text("/v1/feedback/export?history=true").await;
    assert_eq!(status, 200);
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        lines[0].join(","),
        "transaction_id,scored_at,amount,hour,day_of_week,merchant_category,transaction_type,\
         velocity,card_id,customer_id,device_id,ip,merchant_id,timestamp,label,model_version,\
         labelled_by"
    );
    assert_eq!(lines.len(), 7, "{csv}");
    let ids: Vec<String> = (0..6).rev().map(|n| tx_id(n).to_string()).collect();
    assert_eq!(lines[1..].iter().map(|l| l[0]).collect::<Vec<_>>(), ids);
    let labels: Vec<&str> = lines[1..].iter().map(|l| l[14]).collect();
    assert_eq!(labels, ["", "0", "", "1", "0", "1"], "{csv}");
    assert_eq!(lines[1][8], "c-7");
    assert_eq!(
        lines[1][13], "2026-11-30T12:00:00.500000Z",
        "the payload's own time"
    );
    for l in &lines[2..] {
        assert_eq!(l[8], "", "no card");
        assert_eq!(l[13], l[1], "no payload time: the edge's clock");
    }
    let (status, nd) = t
        .get_text("/v1/feedback/export?history=true&format=ndjson")
        .await;
    assert_eq!(status, 200);
    let first: Value = serde_json::from_str(nd.lines().next().unwrap()).unwrap();
    assert_eq!(first["card_id"], "c-7");
    assert_eq!(first["label"], Value::Null);

    let (status, _) = t.get_text("/v1/feedback/export?since=yesterday").await;
    assert_eq!(status, 400);
    let (status, _) = t.get_text("/v1/feedback/export?format=xml").await;
    assert_eq!(status, 400);
    let (status, _) = t.get_text("/v1/feedback/export?history=yes").await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_gives_503_and_loses_nothing() {
    let mut t = TestStore::start().await;
    let now = Utc::now();
    assert_eq!(
        t.post_events(&(0..50).map(|n| scored(n, now)).collect::<Vec<_>>())
            .await
            .0,
        200
    );
    let ready = t.http.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    t.pg.stop().unwrap();
    let ready = t.http.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let batch: Vec<Value> = (50..150).map(|n| scored(n, now)).collect();
    let (status, body) = t.post_events(&batch).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
    assert_eq!(t.get_json("/v1/dashboard").await.0, 503);
    let health = t.http.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    t.pg.restart().unwrap();
    // The client retries the same batch until it is accepted.
    let mut attempts = 0;
    let accepted = loop {
        attempts += 1;
        let (status, body) = t.post_events(&batch).await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(attempts < 50, "store did not recover");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(accepted, json!({"accepted": 100, "duplicates": 0}));
    let ready = t.http.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(t.count("transactions"), 150);
    let (_, metrics) = t.get_text("/metrics").await;
    assert!(
        metrics.contains("store_errors_total{kind=\"database_unavailable\"}"),
        "{metrics}"
    );
    t.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_not_ready_while_the_database_is_down_then_migrates() {
    let mut pg = harness::postgres::TempPostgres::start().unwrap();
    pg.stop().unwrap();
    let mut config = store::Config::new(pg.url(), TOKEN);
    config.db_timeout = std::time::Duration::from_secs(1);
    let store = store::Store::new(config).unwrap();
    let mut t = TestStore::serve(pg, store).await;

    let ready = t.http.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let (status, _) = t.post_events(&[scored(1, Utc::now())]).await;
    assert_eq!(status, 503);

    t.pg.restart().unwrap();
    let mut waited = 0;
    while t
        .http
        .get(t.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
        != 200
    {
        waited += 1;
        assert!(waited < 100, "store never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(t.store.is_migrated());
    assert_eq!(t.post_events(&[scored(1, Utc::now())]).await.0, 200);
    assert_eq!(
        t.pg.psql("SELECT count(*) FROM schema_migrations").unwrap(),
        store::db::MIGRATIONS.len().to_string()
    );
    t.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent() {
    let t = TestStore::start().await;
    let again = store::Store::new(store::Config::new(t.pg.url(), TOKEN)).unwrap();
    assert_eq!(again.migrate().await.unwrap(), 0);
    let versions: Vec<String> = store::db::MIGRATIONS
        .iter()
        .map(|(v, _, _)| v.to_string())
        .collect();
    assert_eq!(
        t.pg.psql("SELECT version FROM schema_migrations ORDER BY version")
            .unwrap(),
        versions.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overlapping_batches_store_everything_once() {
    let t = TestStore::start().await;
    let now = Utc::now();
    // 4 clients, each sending 10 batches of 50 that overlap the other clients' batches by half,
    // plus feedback on shared transactions (same rows upserted concurrently).
    let mut tasks = Vec::new();
    for client in 0..4u128 {
        let http = t.http.clone();
        let url = t.url("/v1/events");
        tasks.push(tokio::spawn(async move {
            let (mut accepted, mut duplicates) = (0, 0);
            for b in 0..10u128 {
                let start = (client * 25 + b * 100) % 1000;
                let mut batch: Vec<Value> = (start..start + 50).map(|n| scored(n, now)).collect();
                batch.extend((0..5).map(|k| {
                    let label = (client + k) % 2 == 0;
                    feedback(
                        10_000 + client * 1000 + b * 10 + k,
                        tx_id(k),
                        label,
                        now + Duration::seconds(b as i64),
                    )
                }));
                let r = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&batch)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let body: Value = r.json().await.unwrap();
                accepted += body["accepted"].as_i64().unwrap();
                duplicates += body["duplicates"].as_i64().unwrap();
            }
            (accepted, duplicates)
        }));
    }
    let (mut accepted, mut duplicates) = (0, 0);
    for task in tasks {
        let (a, d) = task.await.unwrap();
        accepted += a;
        duplicates += d;
    }
    let distinct_scored = t.count("transactions");
    assert_eq!(t.count("ingested_events"), distinct_scored + 200);
    assert_eq!(accepted, distinct_scored + 200);
    assert_eq!(accepted + duplicates, 4 * 10 * 55);
    assert_eq!(t.count("feedback"), 5);
    let expected: std::collections::HashSet<u128> = (0..4u128)
        .flat_map(|c| {
            (0..10u128).flat_map(move |b| {
                let s = (c * 25 + b * 100) % 1000;
                s..s + 50
            })
        })
        .collect();
    assert_eq!(distinct_scored as usize, expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_more_rows_than_one_cursor_fetch() {
    let t = TestStore::start().await;
    let base = Utc::now();
    for chunk in (0..2500u128).collect::<Vec<_>>().chunks(500) {
        let mut batch: Vec<Value> = chunk.iter().map(|&n| scored(n, base)).collect();
        batch.extend(
            chunk
                .iter()
                .map(|&n| feedback(100_000 + n, tx_id(n), n % 3 == 0, base)),
        );
        assert_eq!(t.post_events(&batch).await.0, 200);
    }
    let (status, csv) = t.get_text("/v1/feedback/export?format=csv").await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2501);
    // Oldest first: n = 2499 was scored first.
    assert!(lines[1].starts_with(&tx_id(2499).to_string()));
    assert!(lines[2500].starts_with(&tx_id(0).to_string()));
    let ones = lines[1..]
        .iter()
        .filter(|l| l.ends_with(",1,if1-a1423274,"))
        .count();
    let expected = (0..2500u128)
        .filter(|n| (n % 5 == 0) == (n % 3 == 0))
        .count();
    assert_eq!(ones, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_batch_in_flight() {
    let mut t = TestStore::start().await;
    // Today's partition exists (as it does after the store's first maintenance pass), so the
    // only lock the batch waits for is the one below.
    t.store.maintain_partitions().await.unwrap();
    // Hold a lock that makes the ingest wait inside its transaction.
    let (mut blocker, conn) = tokio_postgres::connect(&t.pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE transactions IN EXCLUSIVE MODE")
        .await
        .unwrap();

    let http = t.http.clone();
    let url = t.url("/v1/events");
    let batch: Vec<Value> = (0..100).map(|n| scored(n, Utc::now())).collect();
    let request = tokio::spawn(async move {
        let r = http
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&batch)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    // Wait until the store's insert is blocked on the lock, i.e. the batch is in flight.
    let mut polls = 0;
    while t
        .pg
        .psql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND query LIKE 'INSERT INTO transactions%'",
        )
        .unwrap()
        != "1"
    {
        polls += 1;
        assert!(polls < 200, "the batch never reached the database");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let stopping = tokio::spawn(async move {
        t.stop_server().await;
        t
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown must wait for the batch in flight"
    );
    lock.rollback().await.unwrap();
    let t = stopping.await.unwrap();
    assert_eq!(
        request.await.unwrap(),
        (200, json!({"accepted": 100, "duplicates": 0}))
    );
    assert_eq!(t.count("transactions"), 100);
}
