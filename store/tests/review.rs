//! The analyst console's API against a real store on a real PostgreSQL: the review queue (its
//! filters, both orders and their cursors), one transaction in full, labels (who made them, that
//! they join the export with the analyst's verdict, that they can be changed, and that only an
//! analyst may make them), and the console's page.

mod common;

use chrono::Utc;
use common::{TestStore, event_id, scored, ts, tx_id};
use reqwest::Method;
use serde_json::{Value, json};
use store::auth::Role;

const ANALYST: &str = "analyst-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";
const EDGE: &str = "edge-token-0123456789abcdefgh";

/// A tokens-file line.
fn line(name: &str, role: Role, token: &str) -> String {
    store::auth::file_line(name, role, token) + "\n"
}

async fn start() -> (TestStore, tempfile::TempDir) {
    let text = [
        line("carol", Role::Analyst, ANALYST),
        line("bob", Role::Reader, READER),
        line("edge-eu1", Role::Edge, EDGE),
    ]
    .concat();
    TestStore::with_tokens(&text).await
}

async fn call(
    t: &TestStore,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = t.http.request(method, t.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(t: &TestStore, path: &str, token: &str) -> (u16, Value) {
    call(t, Method::GET, path, token, None).await
}

async fn post(t: &TestStore, path: &str, token: &str, body: Value) -> (u16, Value) {
    call(t, Method::POST, path, token, Some(body)).await
}

/// The ids of every page of `path`, following `next_cursor` to the end.
async fn every_page(t: &TestStore, path: &str) -> Vec<String> {
    let mut got = Vec::new();
    let mut next = path.to_string();
    loop {
        let (status, page) = get(t, &next, READER).await;
        assert_eq!(status, 200, "{page}");
        got.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => next = format!("{path}&cursor={c}"),
            None => return got,
        }
    }
}

/// 30 transactions: every third sent to review, every fifth of the rest blocked, the others
/// allowed; rules on the blocked ones; supervised probabilities rising with n.
fn events() -> Vec<Value> {
    let base = Utc::now();
    (0..30u128)
        .map(|n| {
            let mut e = scored(n, base);
            let decision = if n % 3 == 0 {
                "review"
            } else if n % 5 == 0 {
                "block"
            } else {
                "allow"
            };
            e["decision"] = json!(decision);
            e["decision_reason"] = json!(format!("model: reason {n}"));
            e["fraud_probability"] = json!(n as f64 / 100.0);
            e["entities"] = json!({"card_id": format!("card-{}", n % 4), "merchant_id": "m-1"});
            if decision == "block" {
                e["rules_matched"] = json!(["blocked_card"]);
            }
            e["risk_factors"] = json!([{"feature": "amount", "value": 10.5 + n as f64,
                "contribution": 1.25, "description": "amount far above usual"}]);
            e
        })
        .collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_works_the_queue_and_the_labels_join_the_export() {
    let (t, _dir) = start().await;
    let (status, _) = post(&t, "/v1/events", EDGE, json!(events())).await;
    assert_eq!(status, 200);
    // Only the entity fields the edge knows, as text.
    let mut odd = events().remove(0);
    odd["event_id"] = json!(event_id(900));
    odd["entities"] = json!({"pan": "4111"});
    let (status, body) = post(&t, "/v1/events", EDGE, json!([odd])).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("entities.pan")),
        "{body}"
    );

    // Who am I, for each role.
    let (_, me) = get(&t, "/v1/whoami", ANALYST).await;
    assert_eq!(me, json!({"name": "carol", "role": "analyst"}));
    let (_, me) = get(&t, "/v1/whoami", EDGE).await;
    assert_eq!(me["role"], "edge");

    // The queue: review only by default, newest first (n = 0, 3, 6 ... are reviews; smaller n
    // is newer), paged by cursor without gaps or repeats.
    let want: Vec<String> = (0..30u128)
        .filter(|n| n % 3 == 0)
        .map(|n| tx_id(n).to_string())
        .collect();
    let got = every_page(&t, "/v1/review?per_page=4").await;
    assert_eq!(got, want);
    let (_, page) = get(&t, "/v1/review?per_page=1", READER).await;
    let row = &page["transactions"][0];
    assert_eq!(row["decision"], "review");
    assert_eq!(row["decision_reason"], "model: reason 0");
    assert_eq!(row["label"], Value::Null);

    // Riskiest first across review and block: probability n/100, so the largest n first.
    let got = every_page(
        &t,
        "/v1/review?decision=review,block&order=riskiest&per_page=3",
    )
    .await;
    let mut want: Vec<u128> = (0..30u128).filter(|n| n % 3 == 0 || n % 5 == 0).collect();
    want.sort_by(|a, b| b.cmp(a));
    let want: Vec<String> = want.iter().map(|n| tx_id(*n).to_string()).collect();
    assert_eq!(got, want);

    // A rule filter; a cursor of the other order is refused.
    let (_, page) = get(&t, "/v1/review?decision=block&rule=blocked_card", READER).await;
    assert_eq!(ids(&page).len(), 4, "n = 5, 10, 20, 25");
    let (_, page) = get(&t, "/v1/review?decision=block&rule=other", READER).await;
    assert!(ids(&page).is_empty());
    let (status, _) = get(
        &t,
        "/v1/review?order=riskiest&cursor=n.1.00000000-0000-0000-0000-000000000001",
        READER,
    )
    .await;
    assert_eq!(status, 400);

    // Labels: only an analyst; a transaction the store does not have is a 404, not a silent
    // "received".
    let label = |n: u128, fraud: bool| json!({"transaction_id": tx_id(n), "label": fraud});
    let (status, _) = post(&t, "/v1/labels", READER, label(0, true)).await;
    assert_eq!(status, 403);
    let (status, body) = post(&t, "/v1/labels", ANALYST, label(999, true)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(
        &t,
        "/v1/labels",
        ANALYST,
        json!({"transaction_id": "x", "label": true}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &t,
        "/v1/labels",
        ANALYST,
        json!({"transaction_id": tx_id(0)}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // n = 0 is flagged anomalous (n % 5 == 0), n = 3 and 6 are not: fraud and not fraud on each
    // kind, then one changed.
    for (n, fraud) in [(0, false), (3, true), (6, false)] {
        let (status, body) = post(&t, "/v1/labels", ANALYST, label(n, fraud)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["labelled_by"], "carol");
        assert_eq!(body["label"], fraud);
    }
    let (status, _) = post(
        &t,
        "/v1/labels",
        ANALYST,
        json!({"transaction_id": tx_id(6), "label": true, "comment": "card reported stolen"}),
    )
    .await;
    assert_eq!(status, 200);

    // The unlabelled filter drops them; the detail shows the label, comment and analyst.
    let (_, page) = get(&t, "/v1/review?labelled=no&per_page=100", READER).await;
    assert_eq!(ids(&page).len(), 7);
    let (status, d) = get(&t, &format!("/v1/transactions/{}", tx_id(6)), READER).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["label"], true);
    assert_eq!(d["label_state"]["comment"], "card reported stolen");
    assert_eq!(d["label_state"]["labelled_by"], "carol");
    assert_eq!(
        d["risk_factors"][0]["description"],
        "amount far above usual"
    );
    assert_eq!(d["explanation"]["amount"], 0.3);
    assert_eq!(d["fraud_probability"], 0.06);
    assert_eq!(
        d["entities"],
        json!({"card_id": "card-2", "merchant_id": "m-1"})
    );
    // The card's transactions, newest first (smaller n is newer), this one among them.
    let recent: Vec<String> = d["card_recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..30u128)
        .filter(|n| n % 4 == 2)
        .map(|n| tx_id(n).to_string())
        .collect();
    assert_eq!(recent, want);
    let (status, _) = get(&t, &format!("/v1/transactions/{}", tx_id(999)), READER).await;
    assert_eq!(status, 404);

    // The export carries the analyst's verdict as the label, with the analyst's name.
    let (status, csv) = get(&t, "/v1/feedback/export?format=ndjson", READER).await;
    assert_eq!(status, 200);
    let rows: Vec<Value> = csv
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let label_of = |n: u128| {
        rows.iter()
            .find(|r| r["transaction_id"] == tx_id(n).to_string())
            .map(|r| (r["label"].as_i64().unwrap(), r["labelled_by"].clone()))
            .unwrap()
    };
    assert_eq!(label_of(0), (0, json!("carol")));
    assert_eq!(label_of(3), (1, json!("carol")));
    assert_eq!(label_of(6), (1, json!("carol")));

    // Feedback through an edge afterwards replaces the label, and is nobody's.
    let fb = json!([{"event_id": event_id(500), "kind": "feedback", "transaction_id": tx_id(3),
        "feedback": true, "created_at": ts(Utc::now() + chrono::Duration::seconds(5))}]);
    let (status, _) = post(&t, "/v1/events", EDGE, fb).await;
    assert_eq!(status, 200);
    let (_, d) = get(&t, &format!("/v1/transactions/{}", tx_id(3)), READER).await;
    assert_eq!(
        d["label"], false,
        "the model (no flag) was right: not fraud"
    );
    assert_eq!(d["label_state"]["labelled_by"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_token_and_keeps_to_its_origin() {
    let (t, _dir) = start().await;
    let r = t.http.get(t.url("/console/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let policy = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    let page = r.text().await.unwrap();
    assert!(page.contains("/console/console.js"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external resources"
    );
    for asset in ["/console/console.js", "/console/console.css"] {
        let r = t.http.get(t.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        let text = r.text().await.unwrap();
        assert!(
            !text.contains("https://"),
            "{asset} loads nothing from elsewhere"
        );
    }
    // The data behind it is not open.
    let r = t.http.get(t.url("/v1/review")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}
