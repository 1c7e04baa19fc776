//! Shared test helpers: a real throwaway PostgreSQL, the store served in-process, event builders.
#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use harness::postgres::TempPostgres;
use serde_json::{Value, json};
use store::{Config, Store};
use tokio::sync::oneshot;
use uuid::Uuid;

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub struct TestStore {
    pub pg: TempPostgres,
    pub base: String,
    pub http: reqwest::Client,
    pub store: Store,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), store::StoreError>>>,
}

impl TestStore {
    /// A fresh cluster, migrated, served on a free port.
    pub async fn start() -> TestStore {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestStore {
        let pg = TempPostgres::start().expect("starting PostgreSQL");
        let mut config = Config::new(pg.url(), TOKEN);
        config.db_timeout = Duration::from_secs(2);
        tune(&mut config);
        let store = Store::new(config).expect("store config");
        store.migrate().await.expect("migrations");
        Self::serve(pg, store).await
    }

    /// A store that knows only the tokens in `text` (a tokens file; no development token).
    pub async fn with_tokens(text: &str) -> (TestStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        let t = Self::start_with(|c| {
            c.token = None;
            c.tokens_file = Some(path);
        })
        .await;
        (t, dir)
    }

    /// Serves an already built store (migrated or not).
    pub async fn serve(pg: TempPostgres, store: Store) -> TestStore {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(store::serve(listener, store.clone(), async {
            let _ = rx.await;
        }));
        TestStore {
            pg,
            base,
            http: reqwest::Client::new(),
            store,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts a JSON array batch with the right token; returns (status, body).
    pub async fn post_events(&self, events: &[Value]) -> (u16, Value) {
        let body = serde_json::to_vec(events).unwrap();
        json_answer(self.post_batch("application/json", body).await).await
    }

    pub async fn post_ndjson(&self, events: &[Value]) -> (u16, Value) {
        let body: String = events.iter().map(|e| format!("{e}\n")).collect();
        json_answer(
            self.post_batch("application/x-ndjson", body.into_bytes())
                .await,
        )
        .await
    }

    /// Posts a raw JSON body (for text `serde_json` would not write, e.g. lone surrogates).
    pub async fn post_raw(&self, body: String) -> (u16, Value) {
        json_answer(self.post_batch("application/json", body.into_bytes()).await).await
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        json_answer(self.get(path).await).await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.get(path).await;
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post_batch(&self, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        let req = self.http.post(self.url("/v1/events"));
        let req = req.header("content-type", content_type).body(body);
        req.bearer_auth(TOKEN).send().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub fn count(&self, table: &str) -> i64 {
        self.pg
            .psql(&format!("SELECT count(*) FROM {table}"))
            .unwrap()
            .parse()
            .unwrap()
    }

    pub async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

/// The ids of a listing page, in order.
pub fn listed_ids(page: &Value) -> Vec<String> {
    page["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

pub fn event_id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n)
}

pub fn tx_id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_9000_0000_0000_0000 | n)
}

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Scored transaction `n` (event id `event_id(n)`, transaction `tx_id(n)`), scored `n` seconds
/// before `base`; anomalous when `n % 5 == 0`.
pub fn scored(n: u128, base: DateTime<Utc>) -> Value {
    let anomalous = n.is_multiple_of(5);
    json!({
        "event_id": event_id(n), "kind": "scored_transaction", "transaction_id": tx_id(n),
        "scored_at": ts(base - chrono::Duration::seconds(n as i64)),
        "model_version": "if1-a1423274", "edge_instance": "edge-1", "region": "eu-west",
        "features": {"amount": 10.5 + n as f64, "hour": (n % 24) as f64, "day_of_week": 2,
                     "merchant_category": 4, "transaction_type": 1},
        "anomaly_score": if anomalous { -0.05 } else { 0.1 },
        "risk_score": if anomalous { 0.7 } else { 0.3 },
        "is_anomaly": anomalous, "confidence": if anomalous { 0.05 } else { 0.1 },
        "explanation": {"amount": 0.3, "hour": -0.1},
    })
}

pub fn feedback(event: u128, tx: Uuid, label: bool, created_at: DateTime<Utc>) -> Value {
    json!({"event_id": event_id(event), "kind": "feedback", "transaction_id": tx,
           "feedback": label, "comments": "checked", "created_at": ts(created_at)})
}

/// (status, JSON body or null) of an answer.
async fn json_answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
