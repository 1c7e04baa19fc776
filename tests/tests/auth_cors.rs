//! API keys and CORS, configured through Spin variables: the worker built with a freshly fitted
//! model, hosted twice — once with no variables (spin.toml's defaults: no auth, no CORS) and
//! once with `api_keys` and `cors_origins` set, as `spin up` would provide them.

mod common;

use serde_json::Value;
use std::sync::LazyLock;

const ORIGIN: &str = "https://app.example";
const TRANSACTION: &str = r#"{"amount": 42.5, "hour": 13, "day_of_week": 2, "merchant_category": 4, "transaction_type": 1}"#;

struct Fixture {
    /// No variables set.
    open: harness::Edge,
    /// `api_keys = "k1,k2"`, `cors_origins = "https://app.example"`.
    secured: harness::Edge,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let built = common::fit_and_build(2_000, 11, 50);
    let open = harness::start_edge(harness::HarnessConfig::new(&built.component)).unwrap();
    let mut config = harness::HarnessConfig::new(&built.component);
    config.variables = vec![
        ("api_keys".into(), "k1,k2".into()),
        ("cors_origins".into(), ORIGIN.into()),
    ];
    let secured = harness::start_edge(config).unwrap();
    Fixture {
        open,
        secured,
        _dir: built.dir,
    }
});

struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("non-JSON answer {:?}: {e}", self.body))
    }
}

/// Sends `method path` to `h` with `headers` (and the test transaction as body for POST).
fn send(h: &harness::Edge, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", h.url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let agent = common::agent();
    let mut resp = if method == "POST" {
        let req = req
            .header("content-type", "application/json")
            .body(TRANSACTION.to_owned())
            .unwrap();
        agent.run(req).unwrap()
    } else {
        agent.run(req.body(()).unwrap()).unwrap()
    };
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.body_mut().read_to_string().unwrap(),
    }
}

fn assert_unauthorized(a: &Answer) {
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.json()["error"].is_string(), "{}", a.body);
    assert!(
        a.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
}

#[test]
fn requests_without_a_key_are_refused() {
    let h = &FIXTURE.secured;
    assert_unauthorized(&send(h, "POST", "/api/predict", &[]));
    assert_unauthorized(&send(h, "GET", "/api/model", &[]));
    assert_unauthorized(&send(h, "POST", "/api/warmup", &[]));
    assert_unauthorized(&send(h, "POST", "/api/predict-batch", &[]));
}

#[test]
fn wrong_keys_are_refused() {
    let h = &FIXTURE.secured;
    for headers in [
        [("x-api-key", "k3")],
        [("x-api-key", "k")],
        [("x-api-key", "k1k2")],
        [("x-api-key", "k1,k2")],
        [("x-api-key", "")],
        [("authorization", "Bearer k3")],
        [("authorization", "Basic k1")],
        [("authorization", "k1")],
    ] {
        let a = send(h, "POST", "/api/predict", &headers);
        assert_unauthorized(&a);
    }
}

#[test]
fn valid_keys_are_accepted_in_either_header() {
    let h = &FIXTURE.secured;
    for headers in [
        [("x-api-key", "k1")],
        [("x-api-key", "k2")],
        [("authorization", "Bearer k1")],
        [("authorization", "bearer k2")],
    ] {
        let a = send(h, "POST", "/api/predict", &headers);
        assert_eq!(a.status, 200, "{headers:?}: {}", a.body);
        assert!(a.json()["anomaly_score"].is_f64());
        let a = send(h, "GET", "/api/model", &headers);
        assert_eq!(a.status, 200, "{headers:?}: {}", a.body);
    }
}

#[test]
fn health_needs_no_key() {
    let a = send(&FIXTURE.secured, "GET", "/api/health", &[]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["status"], "healthy");
}

#[test]
fn without_variables_everything_is_open_and_no_cors_headers_are_sent() {
    let h = &FIXTURE.open;
    let a = send(h, "POST", "/api/predict", &[("origin", ORIGIN)]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.json()["anomaly_score"].is_f64());
    assert_eq!(a.header("access-control-allow-origin"), None);
    assert_eq!(a.header("vary"), None);
    // A key sent anyway is ignored.
    let a = send(h, "GET", "/api/model", &[("x-api-key", "whatever")]);
    assert_eq!(a.status, 200, "{}", a.body);
    for (method, path) in [("GET", "/api/health"), ("POST", "/api/warmup")] {
        assert_eq!(send(h, method, path, &[]).status, 200, "{method} {path}");
    }
    // Errors are still JSON.
    let a = send(h, "GET", "/api/nope", &[]);
    assert_eq!(a.status, 404);
    assert!(a.json()["error"].is_string());
}

#[test]
fn preflight_from_an_allowed_origin() {
    let a = send(
        &FIXTURE.secured,
        "OPTIONS",
        "/api/predict",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, x-api-key"),
        ],
    );
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(
        a.header("access-control-allow-methods"),
        Some("GET, POST, OPTIONS")
    );
    assert_eq!(
        a.header("access-control-allow-headers"),
        Some("content-type, x-api-key, authorization")
    );
    assert_eq!(a.header("access-control-max-age"), Some("600"));
    assert_eq!(a.header("vary"), Some("Origin"));
}

#[test]
fn allowed_origin_is_echoed_on_actual_requests() {
    let h = &FIXTURE.secured;
    let a = send(
        h,
        "POST",
        "/api/predict",
        &[("origin", ORIGIN), ("x-api-key", "k1")],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(a.header("vary"), Some("Origin"));
    // Even on a 401, so the browser can show the error.
    let a = send(h, "POST", "/api/predict", &[("origin", ORIGIN)]);
    assert_unauthorized(&a);
    assert_eq!(a.header("access-control-allow-origin"), Some(ORIGIN));
}

#[test]
fn disallowed_origin_gets_no_allow_origin_header() {
    let h = &FIXTURE.secured;
    let evil = "https://evil.example";
    let a = send(
        h,
        "POST",
        "/api/predict",
        &[("origin", evil), ("x-api-key", "k1")],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), None);
    let a = send(
        h,
        "OPTIONS",
        "/api/predict",
        &[("origin", evil), ("access-control-request-method", "POST")],
    );
    assert_eq!(a.status, 204);
    assert_eq!(a.header("access-control-allow-origin"), None);
    assert_eq!(a.header("access-control-allow-methods"), None);
}

#[test]
fn harness_variables_follow_spin_semantics() {
    use harness::variables::{Error, Variables};
    let vars = Variables::new(&[("api_keys".into(), "k1".into())]).unwrap();
    assert_eq!(vars.get("api_keys").unwrap(), "k1");
    assert!(matches!(vars.get("cors_origins"), Err(Error::Undefined(_))));
    assert!(matches!(vars.get("API_KEYS"), Err(Error::InvalidName(_))));
    assert!(matches!(vars.get("api-keys"), Err(Error::InvalidName(_))));
    assert!(matches!(vars.get("9lives"), Err(Error::InvalidName(_))));
    // The open harness has no variables: the worker reads them as undefined and runs open.
    assert_eq!(send(&FIXTURE.open, "GET", "/api/model", &[]).status, 200);
    // A harness refuses an invalid name up front, as Spin refuses such a manifest.
    let mut config = harness::HarnessConfig::new("/nonexistent.wasm");
    config.variables = vec![("Bad".into(), "x".into())];
    assert!(harness::start(config).is_err());
}

/// A prediction with API key `key`: status, `Retry-After`, body; Err when no answer came (the
/// connection dropped).
fn try_post_with_key(
    agent: &ureq::Agent,
    url: &str,
    key: &str,
) -> Result<(u16, Option<String>, String), ureq::Error> {
    let mut r = agent
        .post(url)
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .send(TRANSACTION)?;
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.body_mut().read_to_string()?;
    Ok((r.status().as_u16(), retry, body))
}

/// [`try_post_with_key`], which must be answered.
fn post_with_key(agent: &ureq::Agent, url: &str, key: &str) -> (u16, Option<String>, String) {
    try_post_with_key(agent, url, key).unwrap()
}

/// The limit of [`a_keys_rate_holds_across_instances_under_load`]'s `bot` key (burst the same).
const BOT_RATE: f64 = 20.0;

/// Eight connections (spread over `urls`) send as `bot-key` for 4 s while one sends as
/// `shop-key` every 20 ms; asserts the bot got about its rate, each refusal a 429 with
/// `Retry-After`, and the shop every answer; reports the figures under `what`.
fn hammer(urls: &[String], what: &str) {
    let run = std::time::Duration::from_secs(4);
    let started = std::time::Instant::now();
    let (bot, shop) = std::thread::scope(|s| {
        let bots: Vec<_> = (0..8)
            .map(|c| {
                let url = &urls[c % urls.len()];
                s.spawn(move || {
                    let agent = common::agent();
                    let (mut admitted, mut refused, mut dropped) = (0u64, 0u64, 0u64);
                    while started.elapsed() < run {
                        // `spin up` under this churn of instances now and then drops a
                        // connection (its host-side "worker panicked"); the client reconnects.
                        let Ok((status, retry, body)) = try_post_with_key(&agent, url, "bot-key")
                        else {
                            dropped += 1;
                            continue;
                        };
                        match status {
                            200 => admitted += 1,
                            429 => {
                                let secs: u64 = retry.expect("Retry-After").parse().unwrap();
                                assert!((1..=3).contains(&secs), "Retry-After: {secs}");
                                assert!(body.contains("bot"), "{body}");
                                refused += 1;
                            }
                            other => panic!("{other}: {body}"),
                        }
                    }
                    (admitted, refused, dropped)
                })
            })
            .collect();
        let shop = s.spawn(|| {
            let agent = common::agent();
            let mut statuses = Vec::new();
            while started.elapsed() < run {
                if let Ok((status, _, _)) = try_post_with_key(&agent, &urls[0], "shop-key") {
                    statuses.push(status);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            statuses
        });
        let bot = bots.into_iter().fold((0, 0, 0), |(a, r, d), h| {
            let (a2, r2, d2) = h.join().unwrap();
            (a + a2, r + r2, d + d2)
        });
        (bot, shop.join().unwrap())
    });
    let secs = started.elapsed().as_secs_f64();
    let (admitted, refused, dropped) = bot;
    common::report(format!(
        "rate limits, {what}: key at {BOT_RATE}/s (burst 20) sent {} requests in {secs:.1} s \
         from 8 connections: {admitted} admitted ({:.1}/s), {refused} answered 429, {dropped} \
         connections dropped unanswered; an unlimited key beside it: {} of {} answered 200",
        admitted + refused + dropped,
        admitted as f64 / secs,
        shop.iter().filter(|s| **s == 200).count(),
        shop.len()
    ));
    assert!(
        refused > 5 * admitted,
        "the load was not far above the limit"
    );
    assert!(
        dropped * 100 <= admitted + refused,
        "{dropped} requests unanswered"
    );
    // A burst, then the rate; a window boundary may add up to one more window's worth.
    let most = 20.0 + BOT_RATE * (secs + 1.0);
    assert!(
        (admitted as f64) <= most && (admitted as f64) >= BOT_RATE * secs * 0.5,
        "{admitted} admitted in {secs:.1} s at {BOT_RATE}/s"
    );
    assert!(shop.iter().all(|s| *s == 200), "{shop:?}");
}

/// The limit's cost: one connection alternating a limited key (far from its limit) and a free
/// one, 1,000 requests each after 200 of warm-up; reports p50 and p99 of both.
fn limit_cost(url: &str, what: &str) {
    let agent = common::agent();
    let (mut limited, mut free) = (Vec::new(), Vec::new());
    for i in 0..1_200 {
        for (key, times) in [("shop-key", &mut limited), ("free-key", &mut free)] {
            let t = std::time::Instant::now();
            let (status, _, body) = post_with_key(&agent, url, key);
            assert_eq!(status, 200, "{body}");
            if i >= 200 {
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    let p = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q) as usize]
    };
    common::report(format!(
        "rate limits: cost, {what}, 1000 requests each alternating on one connection: \
         limited key p50 {:.0} µs p99 {:.0} µs, unlimited key p50 {:.0} µs p99 {:.0} µs",
        p(&mut limited, 0.5),
        p(&mut limited, 0.99),
        p(&mut free, 0.5),
        p(&mut free, 0.99)
    ));
}

/// Per-key request limits under a load far above them, on an edge whose every instance serves
/// one request at a time and retires after 8 (so thousands of requests pass through hundreds of
/// instances): the limited key gets about its rate across all of them, each refusal is a 429
/// with `Retry-After`, and a key without a limit is untouched. Then the limit's cost. Under
/// `spin up` (`SFE_EDGE=spin`) the same again with two `spin up` processes sharing one Redis,
/// as deploy/ runs replicas: the count holds across processes too.
#[test]
fn a_keys_rate_holds_across_instances_under_load() {
    let built = common::fit_and_build(2_000, 11, 50);
    let mut config = harness::HarnessConfig::new(&built.component);
    config.variables = vec![
        (
            "api_keys".into(),
            "bot:bot-key, shop:shop-key, free:free-key".into(),
        ),
        ("rate_limits".into(), "bot=20/20, shop=100000".into()),
    ];
    config.key_value_stores = vec!["default".into(), "velocity".into()];
    config.memory_key_value_stores = vec!["velocity".into()];
    // The cost is measured on an edge with the default instance reuse.
    let reused = harness::start_edge(config.clone()).unwrap();
    let mut churning = config.clone();
    churning.max_concurrent_reuse = 1;
    churning.max_reuse = 8;
    let edge = harness::start_edge(churning).unwrap();
    let predict = |e: &harness::Edge| format!("{}/api/predict?explain=false", e.url());
    hammer(
        &[predict(&edge)],
        "one edge, one request per instance at a time, 8 per instance",
    );
    limit_cost(&predict(&reused), "instances reused as by default");
    edge.shutdown().unwrap();
    reused.shutdown().unwrap();

    if matches!(harness::EdgeHost::from_env(), harness::EdgeHost::Spin) {
        let redis = harness::redis::TempRedis::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runtime-config.redis.toml");
        let text = format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{0}\"\n\
             [key_value_store.velocity]\ntype = \"redis\"\nurl = \"{0}\"\n",
            redis.url()
        );
        std::fs::write(&file, text).unwrap();
        config.memory_key_value_stores.clear();
        let spin = || {
            let s = harness::spin_up::SpinUp::start_with_runtime_config(&config, Some(&file));
            harness::edge::Edge::from_spin(s.unwrap())
        };
        let (a, b) = (spin(), spin());
        hammer(
            &[predict(&a), predict(&b)],
            "two spin up edges on one Redis",
        );
        limit_cost(&predict(&a), "Redis");
        a.shutdown().unwrap();
        b.shutdown().unwrap();
    }
}
