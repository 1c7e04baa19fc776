//! Hostile clients against real parts: input the store cannot keep must not wedge forwarding,
//! and half-sent requests must not hold connections forever.

mod common;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::{STORE_TOKEN as TOKEN, StoreService};

/// The same model as forwarding.rs, so the component build is shared.
static BUILT: LazyLock<common::Built> = LazyLock::new(|| common::fit_and_build(2_000, 11, 50));

fn tx(i: usize) -> Value {
    json!({"amount": 10.0 + (i % 97) as f64 * 3.5, "hour": i % 24, "day_of_week": i % 7,
           "merchant_category": i % 10, "transaction_type": i % 3})
}

/// A NUL in a feedback comment is refused at the edge (400 naming the field); an event with a
/// NUL feature name is refused by the store (400 naming the event); neither holds up the 100
/// predictions that follow, and the outbox ends empty.
#[test]
fn nul_input_is_refused_and_forwarding_flows_on() {
    let pg = harness::postgres::TempPostgres::start().unwrap();
    let store = StoreService::start(&pg.url());
    let kv = tempfile::tempdir().unwrap();
    let mut config = harness::HarnessConfig::new(&BUILT.component);
    config.variables = vec![
        ("store_url".into(), store.url()),
        ("store_token".into(), TOKEN.into()),
    ];
    config.key_value_stores = vec!["default".into()];
    config.key_value_dir = Some(kv.path().to_path_buf());
    let h = harness::start(config).unwrap();
    let agent = common::agent();
    let post = |path: &str, body: String| {
        let mut r = agent
            .post(format!("{}{path}", h.url()))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap(),
        )
    };
    let (_, first) = post("/api/predict", tx(0).to_string());
    let id = first["transaction_id"].as_str().unwrap().to_owned();
    let (status, answer) = post(
        "/api/feedback",
        json!({"transaction_id": id, "feedback": true, "comments": "bad \u{0} comment"})
            .to_string(),
    );
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("'comments'") && error.contains("NUL"),
        "{error}"
    );

    // An event with a NUL feature name, straight to the store (as a skewed edge would send it).
    let bad = json!([{"event_id": "0190a000-0000-7000-8000-00000000beef", "kind": "scored_transaction",
        "transaction_id": "0190a000-0000-7000-8000-00000000beef", "scored_at": "2026-11-23T18:00:00Z",
        "model_version": "if1-test", "features": {"am\u{0}ount": 1.0}, "anomaly_score": 0.1,
        "risk_score": 0.4, "is_anomaly": false, "confidence": 0.1}]);
    let mut r = agent
        .post(format!("{}/v1/events", store.url()))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .send(bad.to_string())
        .unwrap();
    assert_eq!(r.status(), 400);
    let refused: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(
        (refused["index"].as_u64(), refused["field"].as_str()),
        (Some(0), Some("features"))
    );

    for i in 1..=100 {
        let (status, _) = post("/api/predict?explain=false", tx(i).to_string());
        assert_eq!(status, 200);
    }
    let rows = common::wait_for_count(101, Duration::from_secs(30), || {
        common::count(&pg, "select count(*) from transactions")
    });
    assert_eq!(rows, 101);
    assert_eq!(pg.psql("select count(*) from feedback").unwrap(), "0");
    std::thread::sleep(Duration::from_millis(300));
    let left = harness::edge::keys_under(kv.path(), worker_core::OUTBOX)
        + harness::edge::keys_under(kv.path(), worker_core::DEAD_LETTER);
    assert_eq!(left, 0, "outbox or dead letters left behind");
    common::report(format!(
        "hostile forwarding: NUL comment -> 400 at the edge; NUL feature name -> 400 from the store \
         (index 0, field features); then 100 predictions -> {rows} rows in all, {left} key-value entries left"
    ));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Latencies of up to `n` predictions, one connection each, stopping early at `until`.
fn latencies(h: &harness::RunningHarness, n: usize, until: Option<Instant>) -> Vec<Duration> {
    let agent = common::agent();
    let body = tx(5).to_string();
    let mut out = Vec::with_capacity(n);
    while out.len() < n && until.is_none_or(|u| Instant::now() < u) {
        let t = Instant::now();
        let resp = agent
            .post(format!("{}/api/predict?explain=false", h.url()))
            .header("content-type", "application/json")
            .send(&body)
            .unwrap();
        assert_eq!(resp.status(), 200);
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// 300 connections that send half a request and stop are closed once the header-read timeout
/// passes; normal traffic is served meanwhile.
#[test]
fn half_sent_requests_are_timed_out() {
    let mut config = harness::HarnessConfig::new(&BUILT.component);
    // Long enough that opening 300 connections and probing stay well inside it even when the
    // other test of this binary loads the machine.
    let timeout = Duration::from_secs(8);
    config.header_read_timeout = Some(timeout);
    let h = harness::start(config).unwrap();
    let before = latencies(&h, 200, None);
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(h.addr).unwrap();
            s.write_all(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    // Normal traffic while they are open, stopping well before the timeout.
    let during = latencies(&h, 200, Some(opened + timeout / 2));
    assert!(
        during.len() >= 20 && opened.elapsed() < timeout,
        "only {} requests before the timeout; the test says nothing",
        during.len()
    );
    let mut closed_after = Vec::new();
    for s in &mut slow {
        let mut buf = [0u8; 256];
        // The server closes (EOF, possibly after an error answer) or resets the connection.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        closed_after.push(opened.elapsed());
    }
    let last = closed_after.iter().max().unwrap();
    assert!(
        *last >= timeout - Duration::from_millis(100),
        "closed before the timeout: {last:?}"
    );
    assert!(
        *last < timeout + Duration::from_secs(5),
        "not closed: {last:?}"
    );
    let after = latencies(&h, 200, None);
    common::report(format!(
        "slow clients: 300 half-sent requests closed {:?}..{last:?} after opening (timeout {timeout:?}); \
         /api/predict p50/p99 before {:?}/{:?}, with them open ({} requests) {:?}/{:?}, after {:?}/{:?}",
        closed_after.iter().min().unwrap(),
        percentile(&before, 0.5),
        percentile(&before, 0.99),
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        percentile(&after, 0.5),
        percentile(&after, 0.99),
    ));
}
