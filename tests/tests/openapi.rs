//! `worker/openapi.json` kept honest against the running component: every route is called
//! (successes and the 400/404/405/413/415 errors), each answer's status must be documented for
//! its route, and its JSON body must match the documented schema — no undocumented field, every
//! required field present, types/enums/consts respected. Every documented route must be
//! exercised, and every route the worker's router serves must be documented.
//!
//! The schema check is a small JSON Schema subset (`$ref`, `type`, `const`, `enum`, `properties`,
//! `required`, `items`, `additionalProperties`, `allOf`, `anyOf`, `oneOf`). For completeness it is
//! stricter than JSON Schema on one point: an object schema that lists `properties` and says
//! nothing about `additionalProperties` is taken as closed, so a field the worker sends but the
//! document does not list fails the test. Schemas open on purpose say `additionalProperties: true`.

mod common;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::LazyLock;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

fn load_doc() -> Value {
    let path = common::root().join("worker/openapi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

struct Fixture {
    harness: harness::Edge,
    /// The same component with API keys and CORS configured.
    keyed: harness::Edge,
    /// Both forward to this store (feedback, dashboard and listing need it).
    _store: common::StoreService,
    _pg: harness::postgres::TempPostgres,
    _dir: tempfile::TempDir,
}

const KEY: &str = "openapi-test-key";
/// A key of the keyed edge allowed one request per 100 s: its second request on any route is
/// over the limit.
const TIGHT_KEY: &str = "openapi-tight-key";
const ORIGIN: &str = "https://app.example";

/// The same model as `e2e.rs` (same rows, trees and seed, hence the same bytes), so the two test
/// binaries share one cached component build.
static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let built = common::fit_and_build(5_000, 7, 100);
    let pg = harness::postgres::TempPostgres::start().unwrap();
    let store = common::StoreService::start(&pg.url());
    let config = |extra: Vec<(String, String)>| {
        let mut c = harness::HarnessConfig::new(&built.component);
        c.variables = vec![
            ("store_url".into(), store.url()),
            ("store_token".into(), common::STORE_TOKEN.into()),
        ];
        c.variables.extend(extra);
        c.key_value_stores = vec!["default".into()];
        c
    };
    let harness = harness::start_edge(config(vec![])).unwrap();
    let keyed = harness::start_edge(config(vec![
        (
            "api_keys".into(),
            format!("other-key, {KEY}, tight:{TIGHT_KEY}"),
        ),
        ("rate_limits".into(), "tight=0.01/1".into()),
        ("cors_origins".into(), ORIGIN.into()),
    ]))
    .unwrap();
    Fixture {
        harness,
        keyed,
        _store: store,
        _pg: pg,
        _dir: built.dir,
    }
});

// ---------------------------------------------------------------------------------------------
// The schema checker.

/// Follows `$ref`s (local JSON pointers only) to the schema they name.
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $refs are supported: {r}"));
        schema = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    schema
}

/// Property names an object schema declares, itself and through `allOf`.
fn declared(doc: &Value, schema: &Value, names: &mut BTreeSet<String>, any_props: &mut bool) {
    let s = resolve(doc, schema);
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        *any_props = true;
        names.extend(props.keys().cloned());
    }
    for member in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        declared(doc, member, names, any_props);
    }
}

/// `additionalProperties` of the schema or its `allOf` members, if any says it.
fn additional<'a>(doc: &'a Value, schema: &'a Value) -> Option<&'a Value> {
    let s = resolve(doc, schema);
    s.get("additionalProperties").or_else(|| {
        s.get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|m| additional(doc, m))
    })
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => panic!("unknown JSON Schema type {other:?}"),
    }
}

/// Appends to `errs` every way `v` (at `at`) departs from `schema`.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    check_inner(doc, schema, v, at, errs, false);
}

/// `members_of_all_of` skips the undocumented-field check, which the enclosing schema does over
/// the union of its `allOf` members' properties.
fn check_inner(
    doc: &Value,
    schema: &Value,
    v: &Value,
    at: &str,
    errs: &mut Vec<String>,
    members_of_all_of: bool,
) {
    let s = resolve(doc, schema);
    if s == &Value::Bool(true) {
        return;
    }
    if s == &Value::Bool(false) {
        errs.push(format!("{at}: no value is allowed here"));
        return;
    }
    match s.get("type") {
        Some(Value::String(t)) if !type_matches(t, v) => {
            errs.push(format!("{at}: expected {t}, got {v}"));
            return;
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)) => {
            errs.push(format!("{at}: expected one of {ts:?}, got {v}"));
            return;
        }
        _ => {}
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        errs.push(format!("{at}: expected the constant {c}, got {v}"));
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        errs.push(format!("{at}: {v} is not one of {options:?}"));
    }
    for member in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check_inner(doc, member, v, at, errs, true);
    }
    for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
        let Some(branches) = s.get(keyword).and_then(Value::as_array) else {
            continue;
        };
        let mut why = Vec::new();
        let passing = branches
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                let mut e = Vec::new();
                check_inner(doc, b, v, at, &mut e, false);
                why.extend(e.iter().map(|e| format!("[{keyword} #{i}] {e}")));
                e.is_empty()
            })
            .count();
        if passing == 0 || (exactly_one && passing > 1) {
            errs.push(format!(
                "{at}: {passing} of the {keyword} branches match: {}",
                why.join("; ")
            ));
        }
    }
    if let Value::Object(fields) = v {
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap();
            if !fields.contains_key(name) {
                errs.push(format!(
                    "{at}: documented required field {name:?} is missing"
                ));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (name, value) in fields {
            if let Some(sub) = props.and_then(|p| p.get(name)) {
                check_inner(doc, sub, value, &format!("{at}.{name}"), errs, false);
            }
        }
        if !members_of_all_of {
            let mut names = BTreeSet::new();
            let mut any_props = false;
            declared(doc, s, &mut names, &mut any_props);
            let extra = additional(doc, s);
            for (name, value) in fields {
                if names.contains(name) {
                    continue;
                }
                match extra {
                    Some(Value::Bool(true)) => {}
                    Some(sub @ Value::Object(_)) => {
                        check_inner(doc, sub, value, &format!("{at}.{name}"), errs, false);
                    }
                    Some(Value::Bool(false)) => {
                        errs.push(format!("{at}: field {name:?} is not documented"));
                    }
                    // Closed for this test when the schema lists its properties (see above).
                    None if any_props => {
                        errs.push(format!("{at}: field {name:?} is not documented"));
                    }
                    _ => {}
                }
            }
        }
    }
    if let (Value::Array(items), Some(sub)) = (v, s.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check_inner(doc, sub, item, &format!("{at}[{i}]"), errs, false);
        }
    }
}

fn assert_matches(doc: &Value, schema: &Value, v: &Value, what: &str) {
    let mut errs = Vec::new();
    check(doc, schema, v, "$", &mut errs);
    assert!(
        errs.is_empty(),
        "{what} does not match the document:\n  {}\nbody: {v}",
        errs.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Calling the worker.

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    /// `None` for an empty body.
    body: Option<Value>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &str,
) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let ct = content_type.unwrap_or("application/json");
    macro_rules! with_headers {
        ($builder:expr) => {{
            let mut b = $builder;
            for (name, value) in headers {
                b = b.header(*name, *value);
            }
            b
        }};
    }
    let result = match method {
        "GET" => with_headers!(agent.get(&url)).call(),
        "DELETE" => with_headers!(agent.delete(&url)).call(),
        "OPTIONS" => with_headers!(agent.options(&url)).call(),
        "POST" => with_headers!(agent.post(&url).header("content-type", ct)).send(body),
        "PUT" => with_headers!(agent.put(&url).header("content-type", ct)).send(body),
        "PATCH" => with_headers!(agent.patch(&url).header("content-type", ct)).send(body),
        other => panic!("unsupported method {other}"),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    let body = (!text.is_empty()).then(|| {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} answered non-JSON {text:?}: {e}"))
    });
    Answer {
        status,
        headers,
        body,
    }
}

/// The documented response for `status`, or the unmatched-path response for a path the
/// document does not list.
fn documented_response<'a>(doc: &'a Value, method: &str, route: &str, status: u16) -> &'a Value {
    let Some(path_item) = doc["paths"].get(route) else {
        assert_eq!(
            status, 404,
            "{method} {route}: an unlisted path must answer 404"
        );
        return resolve(doc, &doc["components"]["responses"]["NotFound"]);
    };
    if let Some(op) = path_item.get(method.to_ascii_lowercase()) {
        let r = op["responses"].get(status.to_string()).unwrap_or_else(|| {
            panic!("{method} {route} answered {status}, which the document does not list")
        });
        resolve(doc, r)
    } else {
        // A documented path with another method: the worker's 405, documented on its operation.
        assert_eq!(
            status, 405,
            "{method} {route}: an undocumented method must answer 405"
        );
        let documented_405 = path_item
            .as_object()
            .unwrap()
            .values()
            .find_map(|op| op["responses"].get("405"))
            .unwrap_or_else(|| panic!("{method} {route}: no 405 documented for the path"));
        resolve(doc, documented_405)
    }
}

struct Session {
    doc: Value,
    addr: std::net::SocketAddr,
    /// Sent with every request.
    headers: Vec<(&'static str, String)>,
    /// (method, path, status) of every answer checked.
    seen: BTreeSet<(String, String, u16)>,
}

impl Session {
    /// Calls the worker and checks the answer against the document; returns it for more checks.
    fn expect(
        &mut self,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
        body: &str,
        status: u16,
    ) -> Value {
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let a = call(
            self.addr,
            method,
            path_and_query,
            &headers,
            content_type,
            body,
        );
        let route = path_and_query.split('?').next().unwrap();
        let what = format!("{method} {path_and_query} → {}", a.status);
        assert_eq!(
            a.status, status,
            "{what}: unexpected status; body {:?}",
            a.body
        );
        let response = documented_response(&self.doc, method, route, a.status);
        match (response.get("content"), &a.body) {
            (None, None) => {}
            (None, Some(b)) => panic!("{what}: documented without a body, answered {b}"),
            (Some(_), None) => panic!("{what}: documented with a body, answered none"),
            (Some(content), Some(b)) => {
                let ct = a.header("content-type").unwrap_or_default();
                let essence = ct.split(';').next().unwrap().trim();
                let schema = content
                    .get(essence)
                    .unwrap_or_else(|| panic!("{what}: content type {essence:?} is not documented"))
                    .get("schema")
                    .unwrap_or_else(|| panic!("{what}: no schema documented"));
                assert_matches(&self.doc, schema, b, &what);
            }
        }
        for (name, h) in response
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let Some(value) = a.header(name) else {
                assert!(
                    h["required"] != true,
                    "{what}: documented required header {name} is missing"
                );
                continue;
            };
            assert_matches(
                &self.doc,
                &h["schema"],
                &json!(value),
                &format!("{what}: header {name}"),
            );
            if name == "Allow" {
                for m in value.split(',') {
                    assert!(
                        self.doc["paths"][route]
                            .get(m.trim().to_ascii_lowercase())
                            .is_some(),
                        "{what}: Allow: {value} names a method not documented for {route}"
                    );
                }
            }
        }
        self.seen
            .insert((method.to_string(), route.to_string(), a.status));
        a.body.unwrap_or(Value::Null)
    }

    /// Checks a request body we send against the documented request schema.
    fn request_is_documented(&self, method: &str, route: &str, body: &Value) {
        let op = &self.doc["paths"][route][method.to_ascii_lowercase()];
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        assert!(!schema.is_null(), "{method} {route}: no request schema");
        assert_matches(
            &self.doc,
            schema,
            body,
            &format!("request to {method} {route}"),
        );
    }
}

/// Paths of the routes in the worker's router (`"/api/..." =>` arms in worker/src/lib.rs).
fn routes_in_worker_source() -> BTreeSet<String> {
    let src = std::fs::read_to_string(common::root().join("worker-core/src/lib.rs")).unwrap();
    src.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let rest = line.strip_prefix('"')?;
            let (path, tail) = rest.split_once('"')?;
            (path.starts_with('/') && tail.trim_start().starts_with("=>")).then(|| path.to_string())
        })
        .collect()
}

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let upper = method.to_ascii_uppercase();
            if METHODS.contains(&upper.as_str())
                || ["HEAD", "OPTIONS", "TRACE"].contains(&upper.as_str())
            {
                ops.insert((upper, path.clone()));
            }
        }
    }
    ops
}

#[test]
fn document_is_openapi_3_1_and_lists_every_route_of_the_router() {
    let doc = load_doc();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "openapi version"
    );
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let served = routes_in_worker_source();
    assert!(served.contains("/api/predict"), "router parse: {served:?}");
    assert_eq!(
        served, documented,
        "routes in worker-core/src/lib.rs vs paths in worker/openapi.json"
    );
    // Every $ref resolves, and every operation documents its answers as JSON.
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(m) => {
                if m.contains_key("$ref") {
                    resolve(doc, v);
                }
                m.values().for_each(|x| walk(doc, x));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(doc, x)),
            _ => {}
        }
    }
    walk(&doc, &doc);
    for (method, path) in documented_operations(&doc) {
        let op = &doc["paths"][&path][method.to_ascii_lowercase()];
        for (status, r) in op["responses"].as_object().unwrap() {
            let r = resolve(&doc, r);
            assert!(
                r["description"].is_string(),
                "{method} {path} {status}: no description"
            );
            assert!(
                r["content"]["application/json"]["schema"].is_object() || status == "204",
                "{method} {path} {status}: needs a JSON schema"
            );
        }
        // With API keys configured, every route but the health check and preflights needs one.
        let public = path == "/api/health" || method == "OPTIONS";
        assert_eq!(
            op["responses"].get("401").is_some(),
            !public,
            "{method} {path}: 401 (API keys) documented wrongly"
        );
        assert_eq!(
            op["responses"].get("429").is_some(),
            !public,
            "{method} {path}: 429 (rate limits) documented wrongly"
        );
    }
}

#[test]
fn every_route_answers_as_documented() {
    let mut s = Session {
        doc: load_doc(),
        addr: FIXTURE.harness.addr,
        headers: Vec::new(),
        seen: BTreeSet::new(),
    };
    let full = json!({"amount": 12.5, "hour": 14, "day_of_week": 2, "merchant_category": 1, "transaction_type": 0});
    let alternative = json!({"amount": "99.5", "merchant": " ACME Store", "timestamp": "2024-01-15T14:30:00Z", "type": "Transfer"});
    let by_category = json!({"amount": 20, "category": "grocery", "timestamp": "2024-01-21 08:05"});
    let numeric_strings =
        json!({"amount": "12.5", "hour": "3", "day_of_week": 1, "merchant_category": 2});

    // Metadata routes.
    let health = s.expect("GET", "/api/health", None, "", 200);
    assert_eq!(health["status"], "healthy");
    s.expect("GET", "/api/model", None, "", 200);
    s.expect("POST", "/api/warmup", None, "", 200);

    // One transaction, both shapes, with and without explanations.
    for body in [&full, &alternative, &by_category, &numeric_strings] {
        s.request_is_documented("POST", "/api/predict", body);
        let v = s.expect("POST", "/api/predict", None, &body.to_string(), 200);
        assert!(
            v["shap_explanation"].is_object() && v["risk_factors"].is_array(),
            "{v}"
        );
    }
    let v = s.expect(
        "POST",
        "/api/predict?explain=false",
        None,
        &full.to_string(),
        200,
    );
    assert!(v.get("explanation").is_none(), "{v}");
    // Values of `explain` outside the documented enum are refused, in either route.
    for route in [
        "/api/predict?explain=maybe",
        "/api/predict-batch?explain=FALSEY",
    ] {
        s.expect(
            "POST",
            route,
            None,
            &json!({"transactions": [full]}).to_string(),
            400,
        );
    }
    s.expect(
        "POST",
        "/api/predict",
        Some("application/merge-patch+json"),
        &full.to_string(),
        200,
    );

    // A batch mixing good and bad items.
    let good_batch = json!({"transactions": [full, alternative]});
    s.request_is_documented("POST", "/api/predict-batch", &good_batch);
    s.expect(
        "POST",
        "/api/predict-batch",
        None,
        &good_batch.to_string(),
        200,
    );
    s.expect(
        "POST",
        "/api/predict-batch?explain=false",
        None,
        &good_batch.to_string(),
        200,
    );
    let mixed = json!({"transactions": [full, {"amount": 1, "merchant_category": 1}, "not an object", alternative]});
    let v = s.expect("POST", "/api/predict-batch", None, &mixed.to_string(), 200);
    assert_eq!(
        (v["succeeded"].as_u64(), v["failed"].as_u64()),
        (Some(2), Some(2))
    );

    // 400s.
    for bad in [
        "{not json",
        "[1, 2, 3]",
        r#"{"amount": 10, "merchant_category": 2}"#,
        r#"{"amount": 10, "hour": 24, "day_of_week": 1, "merchant_category": 2}"#,
        r#"{"amount": "NaN", "hour": 1, "day_of_week": 1, "merchant_category": 2}"#,
        r#"{"amount": 20, "merchant": "m", "timestamp": "soon"}"#,
    ] {
        s.expect("POST", "/api/predict", None, bad, 400);
    }
    for bad in ["{not json", r#"{"items": []}"#, r#"{"transactions": 3}"#] {
        s.expect("POST", "/api/predict-batch", None, bad, 400);
    }

    // 413: body over 1 MiB, and a batch over 10,000 items.
    let big = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(1 << 20));
    s.expect("POST", "/api/predict", None, &big, 413);
    s.expect("POST", "/api/predict-batch", None, &big, 413);
    let too_many = json!({"transactions": vec![json!({"amount": 1}); 10_001]});
    s.expect(
        "POST",
        "/api/predict-batch",
        None,
        &too_many.to_string(),
        413,
    );

    // 415.
    for route in ["/api/predict", "/api/predict-batch"] {
        s.expect("POST", route, Some("text/plain"), &full.to_string(), 415);
    }

    // Feedback (queued for the store), dashboard and listing (read from it).
    let feedback = json!({"transaction_id": "0190a000-0000-7000-8000-000000000001", "feedback": true, "comments": "ok"});
    s.request_is_documented("POST", "/api/feedback", &feedback);
    s.expect("POST", "/api/feedback", None, &feedback.to_string(), 202);
    // The legacy integer id, as a number or as digits.
    for legacy in [
        r#"{"transaction_id": 12, "feedback": true}"#,
        r#"{"transaction_id": "12", "feedback": false}"#,
    ] {
        s.request_is_documented(
            "POST",
            "/api/feedback",
            &serde_json::from_str(legacy).unwrap(),
        );
        s.expect("POST", "/api/feedback", None, legacy, 202);
    }
    for bad in [
        r#"{"feedback": true}"#,
        r#"{"transaction_id": "12a", "feedback": true}"#,
        r#"{"transaction_id": 0, "feedback": true}"#,
        r#"{"transaction_id": 12, "feedback": true, "comments": "nul \u0000"}"#,
        r#"{"transaction_id": "0190a000-0000-7000-8000-000000000001", "feedback": "yes"}"#,
        "{not json",
    ] {
        s.expect("POST", "/api/feedback", None, bad, 400);
    }
    s.expect(
        "POST",
        "/api/feedback",
        Some("text/plain"),
        &feedback.to_string(),
        415,
    );
    s.expect("GET", "/api/dashboard", None, "", 200);
    s.expect("GET", "/api/transactions", None, "", 200);
    s.expect("GET", "/api/transactions?page=2&per_page=5", None, "", 200);
    s.expect("GET", "/api/transactions?per_page=100000", None, "", 400);

    // 404 for paths not in the document.
    for path in ["/", "/api", "/api/nope", "/api/predict/", "/api/feedbacks"] {
        s.expect("GET", path, None, "", 404);
    }

    // 405 for every other method on every documented path.
    let ops = documented_operations(&s.doc);
    for (_, path) in &ops {
        for method in METHODS {
            if !ops.contains(&(method.to_string(), path.clone())) {
                s.expect(method, path, None, "{}", 405);
            }
        }
    }

    // CORS preflight (no CORS configured here: no Access-Control-* headers, still 204).
    for (_, path) in &ops {
        s.expect("OPTIONS", path, None, "", 204);
    }

    // Every documented operation answered successfully at least once; the statuses the brief
    // singles out were all produced and checked.
    for (method, path) in &ops {
        assert!(
            s.seen
                .iter()
                .any(|(m, p, st)| m == method && p == path && (200..300).contains(st)),
            "{method} {path} is documented but was never exercised successfully"
        );
    }
    for status in [400, 404, 405, 413, 415] {
        assert!(
            s.seen.iter().any(|(_, _, st)| *st == status),
            "{status} never checked"
        );
    }
    let mut out = std::io::stdout();
    let _ = std::io::Write::write_fmt(
        &mut out,
        format_args!(
            "openapi: {} operations, {} distinct (method, path, status) answers checked against worker/openapi.json\n",
            ops.len(),
            s.seen.len()
        ),
    );
}

/// The same checks with API keys and CORS configured: 401 without a key, the routes with one,
/// the public health check, and CORS headers.
#[test]
fn keyed_and_cors_answers_are_documented() {
    let doc = load_doc();
    let ops = documented_operations(&doc);
    let full = json!({"amount": 12.5, "hour": 14, "day_of_week": 2, "merchant_category": 1});
    let body_for = |path: &str| match path {
        "/api/predict" => full.to_string(),
        "/api/predict-batch" => json!({"transactions": [full]}).to_string(),
        "/api/feedback" => {
            json!({"transaction_id": "0190a000-0000-7000-8000-000000000002", "feedback": false})
                .to_string()
        }
        _ => String::new(),
    };
    let mut s = Session {
        doc,
        addr: FIXTURE.keyed.addr,
        headers: vec![("origin", ORIGIN.to_string())],
        seen: BTreeSet::new(),
    };
    // Every route but the public health check answers `refused` with the session's headers.
    let all_refused = |s: &mut Session, refused: u16| {
        for (method, path) in ops.iter().filter(|(m, _)| m != "OPTIONS") {
            let public = path == "/api/health";
            let status = if public { 200 } else { refused };
            s.expect(method, path, None, &body_for(path), status);
        }
    };
    all_refused(&mut s, 401);
    for (header, value) in [
        ("x-api-key", KEY.to_string()),
        ("authorization", format!("Bearer {KEY}")),
    ] {
        s.headers = vec![("origin", ORIGIN.to_string()), (header, value)];
        for (method, path) in ops.iter().filter(|(m, _)| m != "OPTIONS") {
            let ok = if path == "/api/feedback" { 202 } else { 200 };
            s.expect(method, path, None, &body_for(path), ok);
        }
    }
    // A key over its limit: 429 with Retry-After on every route but the health check.
    s.headers = vec![
        ("origin", ORIGIN.to_string()),
        ("x-api-key", TIGHT_KEY.into()),
    ];
    s.expect("GET", "/api/model", None, "", 200);
    all_refused(&mut s, 429);
    // Preflights need no key and carry the CORS headers for an allowed origin.
    s.headers = vec![("origin", ORIGIN.to_string())];
    for (_, path) in ops.iter().filter(|(m, _)| m == "OPTIONS") {
        s.expect("OPTIONS", path, None, "", 204);
        let headers = [("origin", ORIGIN)];
        let a = call(s.addr, "OPTIONS", path, &headers, None, "");
        assert_eq!(
            a.header("access-control-allow-origin"),
            Some(ORIGIN),
            "{path}"
        );
        assert!(a.header("access-control-allow-methods").is_some(), "{path}");
    }
    for status in [401, 429] {
        assert!(
            s.seen.iter().any(|(_, _, st)| *st == status),
            "{status} never checked"
        );
    }
}
