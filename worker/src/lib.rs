//! SecureFlow Edge worker: a Spin HTTP component (WASI P3) that scores transactions with the
//! model embedded at build time.
//!
//! The model bytes are compiled in (`build.rs` picks the file) and decoded once per instance:
//! P3 hosts reuse an instance for many requests, so the decode cost is paid once, not per call.
//! The TreeSHAP tables explanations need are built by `build.rs` too and embedded next to the
//! model, so a fresh instance installs them (checksum and structural check, used in place)
//! rather than spending its first explained request building them.
//! Scoring itself is model-format's code, the same the trainer runs, so an edge score equals the
//! trainer's to the bit.

use http_body_util::{BodyExt, Limited};
use model_format::normalize::Value as PayloadValue;
use model_format::{FORMAT_VERSION, MAX_FEATURES, Model, ModelId, Payload};
use serde::Serialize;
use serde_json::{Map, Value};
use spin_sdk::http::{HeaderValue, Method, Request, Response, StatusCode};
use std::cell::RefCell;
use std::sync::OnceLock;

mod forward;

/// 8-byte alignment for embedded bytes, so arrays of `f64` in them can be used in place.
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

/// The embedded model file, aligned so that its node records are used in place.
static MODEL_BYTES: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("SFE_MODEL_FILE")));

/// The model file's CRC-32, verified by `build.rs` when it embedded the file.
const MODEL_CRC: &str = env!("SFE_MODEL_CRC");

/// The model's explanation tables, built and checked against the model by `build.rs`:
/// installed at instance start (header and sizes checked, nothing copied or walked) instead
/// of built on the first explanation. `/api/warmup` checks them in full.
static TABLES: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("SFE_TABLES_FILE")));

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// Largest batch accepted by `/api/predict-batch`.
const MAX_BATCH: usize = 1000;

/// How many risk factors a prediction lists.
const TOP_FACTORS: usize = 3;

/// The decoded model and its identity, built on first use in each instance.
struct Loaded {
    model: Model,
    /// Whether `TABLES` were installed (else the model builds its own on first use).
    tables_installed: bool,
    version: String,
    checksum: String,
}

fn loaded() -> Result<&'static Loaded, &'static str> {
    static LOADED: OnceLock<Result<Loaded, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let checksum: u32 = MODEL_CRC
                .parse()
                .map_err(|e| format!("SFE_MODEL_CRC is not a number: {e}"))?;
            // Both files were decoded, validated and matched by `build.rs`, and are part of
            // this program: a fresh instance (whose start is on some request's path) neither
            // hashes nor copies nor walks them again. `/api/warmup` re-runs every check.
            let mut model = Model::from_prechecked_static_bytes(&MODEL_BYTES.0, checksum)
                .map_err(|e| format!("embedded model is invalid: {e}"))?;
            let tables_installed = match model.install_prechecked_explanation_tables(&TABLES.0) {
                Ok(()) => true,
                Err(e) => {
                    // Still correct, only slower: the tables are built on first use instead.
                    eprintln!(
                        "worker: embedded explanation tables not installed ({e}); building them lazily"
                    );
                    false
                }
            };
            let id = ModelId { checksum };
            Ok(Loaded {
                model,
                tables_installed,
                version: id.version(),
                checksum: format!("crc32:{:08x}", id.checksum),
            })
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Configuration read from Spin variables (`[component.worker.variables]` in spin.toml).
struct Settings {
    /// Accepted API keys; empty = no authentication.
    api_keys: Vec<String>,
    /// Origins allowed to call from a browser.
    cors: Cors,
    /// The central store, when `store_token` is set: scored transactions and feedback are
    /// forwarded there, dashboard and listing read from it.
    store: Option<forward::StoreConfig>,
    /// Recorded with every forwarded transaction.
    edge_instance: String,
    region: String,
}

enum Cors {
    /// No CORS headers at all (the default).
    Off,
    /// `*`: any origin, answered with `Access-Control-Allow-Origin: *`.
    Any,
    /// These origins (compared ASCII case-insensitively), echoed back.
    List(Vec<String>),
}

impl Settings {
    fn parse(
        api_keys: &str,
        cors_origins: &str,
        store_url: &str,
        store_token: &str,
        edge_instance: &str,
        region: &str,
    ) -> Self {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let origins: Vec<String> = list(cors_origins)
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect();
        let cors = if origins.iter().any(|o| o == "*") {
            Cors::Any
        } else if origins.is_empty() {
            Cors::Off
        } else {
            Cors::List(origins)
        };
        let store = (!store_token.trim().is_empty() && !store_url.trim().is_empty()).then(|| {
            forward::StoreConfig {
                url: store_url.trim().to_owned(),
                token: store_token.trim().to_owned(),
            }
        });
        let edge_instance = match edge_instance.trim() {
            "" => format!("worker-{}", &new_transaction_id()[24..]),
            name => name.to_owned(),
        };
        Self {
            api_keys: list(api_keys),
            cors,
            store,
            edge_instance,
            region: region.trim().to_owned(),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        match &self.cors {
            Cors::Off => None,
            Cors::Any => Some(HeaderValue::from_static("*")),
            Cors::List(list) => {
                let text = origin.to_str().ok()?;
                list.iter()
                    .any(|o| o.eq_ignore_ascii_case(text))
                    .then(|| origin.clone())
            }
        }
    }

    /// True if no keys are configured or the request carries one of them, in `X-API-Key` or
    /// `Authorization: Bearer`. Every configured key is compared, in constant time.
    fn authorized(&self, req: &Request) -> bool {
        use subtle::ConstantTimeEq;
        if self.api_keys.is_empty() {
            return true;
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let bearer = header("authorization").and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let presented = [header("x-api-key").map(str::trim), bearer];
        let mut ok = subtle::Choice::from(0);
        for candidate in presented.into_iter().flatten() {
            for key in &self.api_keys {
                ok |= key.as_bytes().ct_eq(candidate.as_bytes());
            }
        }
        ok.into()
    }
}

/// Reads the variables once per instance. A variable that cannot be read counts as unset; an
/// undefined one (no mapping in the manifest) silently, any other failure is logged by kind
/// only, never with a value.
async fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    if let Some(s) = SETTINGS.get() {
        return s;
    }
    async fn var(name: &str) -> String {
        match spin_sdk::variables::get(name).await {
            Ok(value) => value,
            Err(spin_sdk::variables::Error::Undefined(_)) => String::new(),
            Err(e) => {
                let kind = match e {
                    spin_sdk::variables::Error::InvalidName(_) => "invalid name",
                    spin_sdk::variables::Error::Undefined(_) => "undefined",
                    spin_sdk::variables::Error::Provider(_) => "provider error",
                    spin_sdk::variables::Error::Other(_) => "error",
                };
                eprintln!("worker: variable {name} not read ({kind}); treating it as unset");
                String::new()
            }
        }
    }
    let api_keys = var("api_keys").await;
    let cors_origins = var("cors_origins").await;
    let store_url = var("store_url").await;
    let store_token = var("store_token").await;
    let edge_instance = var("edge_instance").await;
    let region = var("edge_region").await;
    SETTINGS.get_or_init(|| {
        Settings::parse(
            &api_keys,
            &cors_origins,
            &store_url,
            &store_token,
            &edge_instance,
            &region,
        )
    })
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> Response<String> {
    let settings = settings().await;
    let allow_origin = settings.allow_origin(req.headers().get("origin"));
    let mut resp = route(req, settings, allow_origin.is_some()).await;
    let headers = resp.headers_mut();
    if let Some(origin) = allow_origin {
        headers.insert("access-control-allow-origin", origin);
    }
    if matches!(settings.cors, Cors::List(_)) {
        headers.append("vary", HeaderValue::from_static("Origin"));
    }
    resp
}

async fn route(req: Request, settings: &'static Settings, cors_allowed: bool) -> Response<String> {
    let path = req.uri().path().to_owned();
    let (allowed, route) = match path.as_str() {
        "/api/health" => (Method::GET, Route::Health),
        "/api/model" => (Method::GET, Route::Model),
        "/api/warmup" => (Method::POST, Route::Warmup),
        "/api/predict" => (Method::POST, Route::Predict),
        "/api/predict-batch" => (Method::POST, Route::Batch),
        "/api/feedback" => (Method::POST, Route::Feedback),
        "/api/dashboard" => (Method::GET, Route::Dashboard),
        "/api/transactions" => (Method::GET, Route::Transactions),
        _ => return error(StatusCode::NOT_FOUND, &format!("no route for {path}")),
    };
    if req.method() == Method::OPTIONS {
        return preflight(allowed, cors_allowed);
    }
    let public = matches!(route, Route::Health) && req.method() == Method::GET;
    if !public && !settings.authorized(&req) {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid API key; send X-API-Key: <key> or Authorization: Bearer <key>",
        );
        resp.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return resp;
    }
    if req.method() != allowed {
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method not allowed; use {allowed}"),
        );
        resp.headers_mut().insert(
            "allow",
            HeaderValue::from_static(if allowed == Method::GET {
                "GET"
            } else {
                "POST"
            }),
        );
        return resp;
    }
    match route {
        Route::Health => health(settings),
        Route::Model => model_info(),
        Route::Warmup => warmup(),
        Route::Dashboard => dashboard(settings).await,
        Route::Transactions => transactions(settings, req.uri().query()).await,
        Route::Predict | Route::Batch | Route::Feedback => {
            if let Some(resp) = unsupported_content_type(&req) {
                return resp;
            }
            let explain = wants_explanation(req.uri().query());
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(resp) => return resp,
            };
            let l = match loaded() {
                Ok(l) => l,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
            };
            let payload = match serde_json::from_slice::<Value>(&body) {
                Ok(v) => v,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
            };
            match route {
                Route::Predict => predict(l, &payload, explain, settings),
                Route::Batch => predict_batch(l, &payload, explain, settings),
                _ => feedback(&payload, settings),
            }
        }
    }
}

/// `OPTIONS` on a known route: 204, with the CORS preflight headers when the origin is
/// allowed. Never needs an API key (browsers do not send one on a preflight).
fn preflight(allowed: Method, cors_allowed: bool) -> Response<String> {
    let mut resp = Response::new(String::new());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        "allow",
        HeaderValue::from_static(if allowed == Method::GET {
            "GET, OPTIONS"
        } else {
            "POST, OPTIONS"
        }),
    );
    if cors_allowed {
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("content-type, x-api-key, authorization"),
        );
        h.insert("access-control-max-age", HeaderValue::from_static("600"));
    }
    resp
}

enum Route {
    Health,
    Model,
    Warmup,
    Predict,
    Batch,
    Feedback,
    Dashboard,
    Transactions,
}

/// 415 unless the body is declared JSON; a missing content type is taken as JSON, as the
/// legacy service's clients did not always send one.
fn unsupported_content_type(req: &Request) -> Option<Response<String>> {
    let value = req.headers().get("content-type")?;
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return None;
    }
    Some(error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &format!("content type {essence:?} is not supported; send application/json"),
    ))
}

/// Collects the body, refusing more than [`MAX_BODY`] bytes.
async fn read_body(req: Request) -> Result<Vec<u8>, Response<String>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is larger than 1 MiB",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("could not read request body: {e}"),
        )),
    }
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    model_initialized: bool,
    /// Legacy field. The worker never waits on the central store, so it reports whether writes
    /// are forwarded to one (`forwarding`) or not (`not_configured`), not its reachability.
    database: &'a str,
    model_version: &'a str,
    model_checksum: &'a str,
    features: &'a [String],
    timestamp: String,
}

fn health(settings: &Settings) -> Response<String> {
    match loaded() {
        Ok(l) => json(
            StatusCode::OK,
            &Health {
                status: "healthy",
                model_initialized: true,
                database: if settings.store.is_some() {
                    "forwarding"
                } else {
                    "not_configured"
                },
                model_version: &l.version,
                model_checksum: &l.checksum,
                features: l.model.features(),
                timestamp: now_iso(),
            },
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"status": "unhealthy", "model_initialized": false, "error": e}),
        ),
    }
}

#[derive(Serialize)]
struct ModelInfo<'a> {
    model_version: &'a str,
    model_checksum: &'a str,
    format_version: u16,
    features: &'a [String],
    n_trees: usize,
    n_nodes: usize,
    max_samples: u32,
    offset: f64,
    expected_value: f64,
    size_bytes: usize,
    metadata: Map<String, Value>,
}

fn model_info() -> Response<String> {
    let l = match loaded() {
        Ok(l) => l,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let forest = l.model.forest();
    json(
        StatusCode::OK,
        &ModelInfo {
            model_version: &l.version,
            model_checksum: &l.checksum,
            format_version: FORMAT_VERSION,
            features: l.model.features(),
            n_trees: forest.trees().len(),
            n_nodes: forest.node_count(),
            max_samples: forest.max_samples(),
            offset: forest.offset(),
            expected_value: l.model.expected_value(),
            size_bytes: MODEL_BYTES.0.len(),
            metadata: l
                .model
                .metadata()
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        },
    )
}

/// Decodes the model and installs (or, if that failed, builds) the explanation tables now
/// rather than on the first prediction, and confirms installed tables against their checksum;
/// clients call it opportunistically.
fn warmup() -> Response<String> {
    match loaded() {
        Ok(l) => {
            // What the instance start skipped: the model file decoded with every check, and
            // the installed tables checked against it in full.
            let model_ok = Model::from_bytes(&MODEL_BYTES.0)
                .inspect_err(|e| eprintln!("worker: embedded model: {e}"))
                .is_ok_and(|full| full == l.model);
            let verified = model_ok
                && (!l.tables_installed
                    || l.model
                        .verify_explanation_tables(&TABLES.0)
                        .inspect_err(|e| eprintln!("worker: embedded explanation tables: {e}"))
                        .is_ok());
            let ready =
                verified && l.model.prepare_explanations() && l.model.expected_value().is_finite();
            json(
                StatusCode::OK,
                &serde_json::json!({"status": "warm", "model_version": l.version, "explanations_ready": ready}),
            )
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Serialize)]
struct Prediction<'a> {
    /// Position in the batch (batch responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    transaction_id: String,
    is_anomaly: bool,
    /// scikit-learn's decision_function: negative means anomalous.
    anomaly_score: f64,
    confidence: f64,
    /// 2^(-E[h]/c(ψ)) in (0, 1]; higher = more anomalous.
    risk_score: f64,
    model_version: &'a str,
    /// Legacy key: feature -> TreeSHAP value of the mean path length (negative = pushes
    /// towards anomalous), the quantity the old service's shap.TreeExplainer returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    shap_explanation: Option<FeatureValues<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<ExplanationBody<'a>>,
    /// The features that moved the score most, largest |φ| first.
    #[serde(skip_serializing_if = "Option::is_none")]
    risk_factors: Option<Vec<Factor<'a>>>,
    timestamp: String,
    /// The normalized feature row (forwarded to the store, not part of the answer).
    #[serde(skip)]
    row: Vec<f64>,
}

#[derive(Serialize)]
struct Factor<'a> {
    feature: &'a str,
    value: f64,
    contribution: f64,
    direction: &'static str,
    description: String,
}

#[derive(Serialize)]
struct ExplanationBody<'a> {
    method: &'static str,
    /// E[h] over the training data; expected_value + Σ values = mean_path_length.
    expected_value: f64,
    mean_path_length: f64,
    values: FeatureValues<'a>,
}

/// Serialises as a JSON object `{feature: value}` in schema order, without building a map.
#[derive(Clone)]
struct FeatureValues<'a> {
    names: &'a [String],
    values: Vec<f64>,
}

impl Serialize for FeatureValues<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.names.len()))?;
        for (name, value) in self.names.iter().zip(&self.values) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// `?explain=false` (or `0`/`no`) skips the explanation; it is on by default.
fn wants_explanation(query: Option<&str>) -> bool {
    !query
        .unwrap_or("")
        .split('&')
        .any(|kv| matches!(kv, "explain=false" | "explain=0" | "explain=no"))
}

fn predict(
    l: &'static Loaded,
    payload: &Value,
    explain: bool,
    settings: &'static Settings,
) -> Response<String> {
    match score_transaction(l, payload, explain) {
        Ok(p) => {
            let resp = json(StatusCode::OK, &p);
            if let Some(store) = &settings.store {
                forward::submit(store, [scored_event(l, &p, settings)]);
            }
            resp
        }
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

/// The store's `scored_transaction` event for a prediction, serialized straight to JSON text
/// (no intermediate map: this runs on every forwarded prediction). The transaction id doubles
/// as the event id, so a redelivered event is recognised as the same transaction.
fn scored_event(l: &'static Loaded, p: &Prediction<'_>, settings: &Settings) -> String {
    #[derive(Serialize)]
    struct ScoredEvent<'a> {
        event_id: &'a str,
        kind: &'static str,
        transaction_id: &'a str,
        scored_at: &'a str,
        model_version: &'a str,
        edge_instance: &'a str,
        /// The store takes an absent region as null, not as an empty name.
        region: Option<&'a str>,
        features: FeatureValues<'a>,
        anomaly_score: f64,
        risk_score: f64,
        is_anomaly: bool,
        confidence: f64,
        explanation: Option<&'a FeatureValues<'a>>,
    }
    let event = ScoredEvent {
        event_id: &p.transaction_id,
        kind: "scored_transaction",
        transaction_id: &p.transaction_id,
        scored_at: &p.timestamp,
        model_version: p.model_version,
        edge_instance: &settings.edge_instance,
        region: (!settings.region.is_empty()).then_some(settings.region.as_str()),
        features: FeatureValues {
            names: l.model.features(),
            values: p.row.clone(),
        },
        anomaly_score: p.anomaly_score,
        risk_score: p.risk_score,
        is_anomaly: p.is_anomaly,
        confidence: p.confidence,
        explanation: p.shap_explanation.as_ref(),
    };
    // Serializing plain numbers and strings cannot fail.
    serde_json::to_string(&event).unwrap_or_default()
}

/// `{transactions: [...]}` → one result per item; a bad item gets `{index, error}` and the
/// rest are still scored.
fn predict_batch(
    l: &'static Loaded,
    payload: &Value,
    explain: bool,
    settings: &'static Settings,
) -> Response<String> {
    let items = match payload.get("transactions") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid field 'transactions': expected an array",
            );
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "Missing required field(s): transactions",
            );
        }
    };
    if items.len() > MAX_BATCH {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "batch has {} transactions; at most {MAX_BATCH} are accepted",
                items.len()
            ),
        );
    }
    let mut failed = 0;
    let mut events = Vec::new();
    let results: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(index, item)| match score_transaction(l, item, explain) {
            Ok(mut p) => {
                p.index = Some(index);
                if settings.store.is_some() {
                    events.push(scored_event(l, &p, settings));
                }
                serde_json::to_value(p)
                    .unwrap_or_else(|e| serde_json::json!({"index": index, "error": e.to_string()}))
            }
            Err(msg) => {
                failed += 1;
                serde_json::json!({"index": index, "error": msg})
            }
        })
        .collect();
    let resp = json(
        StatusCode::OK,
        &serde_json::json!({
            "results": results,
            "total_processed": items.len(),
            "succeeded": items.len() - failed,
            "failed": failed,
            "timestamp": now_iso(),
        }),
    );
    if let Some(store) = &settings.store {
        forward::submit(store, events);
    }
    resp
}

/// `POST /api/feedback` `{transaction_id, feedback: bool, comments?}`: validated here, queued
/// for the store (202). Whether the id exists is for the store to know; the edge does not wait.
fn feedback(payload: &Value, settings: &'static Settings) -> Response<String> {
    let Value::Object(fields) = payload else {
        return error(StatusCode::BAD_REQUEST, "feedback must be a JSON object");
    };
    let missing: Vec<&str> = ["transaction_id", "feedback"]
        .into_iter()
        .filter(|f| fields.get(*f).is_none_or(Value::is_null))
        .collect();
    if !missing.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Missing required field(s): {}", missing.join(", ")),
        );
    }
    let id = match &fields["transaction_id"] {
        Value::String(s) => match uuid::Uuid::try_parse(s.trim()) {
            Ok(id) => id.to_string(),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Invalid field 'transaction_id': expected the transaction's UUID",
                );
            }
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid field 'transaction_id': expected the transaction's UUID as a string",
            );
        }
    };
    let Value::Bool(label) = fields["feedback"] else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid field 'feedback': expected true or false",
        );
    };
    let comments = match fields.get("comments") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid field 'comments': expected a string",
            );
        }
    };
    let Some(store) = &settings.store else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "feedback needs the central store, which is not configured (store_url, store_token)",
        );
    };
    forward::submit(
        store,
        [serde_json::json!({
            "event_id": new_transaction_id(),
            "kind": "feedback",
            "transaction_id": id,
            "feedback": label,
            "comments": comments,
            "created_at": now_iso(),
        })
        .to_string()],
    );
    json(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "message": "Feedback queued",
            "status": "queued",
            "transaction_id": id,
            "feedback": label,
        }),
    )
}

/// How long a dashboard fetched from the store is served from the instance's cache.
const DASHBOARD_TTL_NS: u64 = 30_000_000_000;

/// `GET /api/dashboard`: the store's 7-day dashboard, cached for 30 s; when the store fails,
/// the last good one is served with `stale: true`.
async fn dashboard(settings: &Settings) -> Response<String> {
    thread_local! {
        static CACHE: RefCell<Option<(u64, Value)>> = const { RefCell::new(None) };
    }
    let Some(store) = &settings.store else {
        return store_not_configured();
    };
    let now = spin_sdk::wasip3::clocks::monotonic_clock::now();
    let cached = CACHE.with_borrow(|c| c.clone());
    if let Some((at, body)) = &cached
        && now.saturating_sub(*at) < DASHBOARD_TTL_NS
    {
        return json(StatusCode::OK, &with_flags(body.clone(), true, false));
    }
    match forward::get_json(store, "/v1/dashboard").await {
        Ok((200, body)) => {
            CACHE.with_borrow_mut(|c| *c = Some((now, body.clone())));
            json(StatusCode::OK, &with_flags(body, false, false))
        }
        failed => match cached {
            Some((_, body)) => json(StatusCode::OK, &with_flags(body, true, true)),
            None => store_failed(failed),
        },
    }
}

fn with_flags(mut body: Value, cached: bool, stale: bool) -> Value {
    if let Value::Object(map) = &mut body {
        map.insert("cached".into(), Value::Bool(cached));
        if stale {
            map.insert("stale".into(), Value::Bool(true));
        }
    }
    body
}

/// `GET /api/transactions?page=&per_page=`: the store's listing, newest first.
async fn transactions(settings: &Settings, query: Option<&str>) -> Response<String> {
    let Some(store) = &settings.store else {
        return store_not_configured();
    };
    let mut path = "/v1/transactions".to_owned();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        path.push('?');
        path.push_str(q);
    }
    match forward::get_json(store, &path).await {
        // The store's own validation errors (bad page/per_page) are the client's to see.
        Ok((status @ (200 | 400), body)) => json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            &body,
        ),
        failed => store_failed(failed),
    }
}

fn store_not_configured() -> Response<String> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the central store is not configured (set the store_url and store_token variables)",
    )
}

fn store_failed(outcome: Result<(u16, Value), String>) -> Response<String> {
    let why = match outcome {
        Ok((status, _)) => format!("the central store answered {status}"),
        Err(e) => e,
    };
    error(
        StatusCode::BAD_GATEWAY,
        &format!("central store unavailable: {why}"),
    )
}

/// Normalizes, scores and (optionally) explains one transaction object.
fn score_transaction(
    l: &'static Loaded,
    payload: &Value,
    explain: bool,
) -> Result<Prediction<'static>, String> {
    let Value::Object(fields) = payload else {
        return Err("transaction must be a JSON object".to_string());
    };
    let n = l.model.features().len();
    let mut row = [0f64; MAX_FEATURES];
    l.model
        .normalize(&JsonPayload(fields), &mut row)
        .map_err(|e| e.to_string())?;
    let row = &row[..n];
    let mut phi = [0f64; MAX_FEATURES];
    let (score, explanation) = if explain {
        let e = l
            .model
            .explain(row, &mut phi[..n])
            .map_err(|e| e.to_string())?;
        (e.score, Some(e))
    } else {
        (l.model.score(row).map_err(|e| e.to_string())?, None)
    };
    let values = FeatureValues {
        names: l.model.features(),
        values: phi[..n].to_vec(),
    };
    Ok(Prediction {
        index: None,
        transaction_id: new_transaction_id(),
        is_anomaly: score.is_anomaly(),
        anomaly_score: score.decision,
        confidence: score.decision.abs(),
        risk_score: score.risk(),
        model_version: &l.version,
        risk_factors: explanation.map(|_| {
            l.model
                .risk_factors(row, &phi[..n], TOP_FACTORS)
                .into_iter()
                .map(|f| Factor {
                    feature: f.feature,
                    value: f.value,
                    contribution: f.contribution,
                    direction: f.direction.as_str(),
                    description: f.phrase,
                })
                .collect()
        }),
        explanation: explanation.map(|e| ExplanationBody {
            method: "tree_shap_path_dependent",
            expected_value: e.expected_value,
            mean_path_length: e.score.mean_path_length,
            values: values.clone(),
        }),
        shap_explanation: explanation.map(|_| values),
        timestamp: now_iso(),
        row: row.to_vec(),
    })
}

/// The request JSON as model-format's normalizer reads it; JSON null counts as absent.
struct JsonPayload<'a>(&'a Map<String, Value>);

impl Payload for JsonPayload<'_> {
    fn get(&self, field: &str) -> Option<PayloadValue<'_>> {
        Some(match self.0.get(field)? {
            Value::Null => return None,
            Value::Number(n) => PayloadValue::Number(n.as_f64()?),
            Value::String(s) => PayloadValue::Text(s),
            Value::Bool(b) => PayloadValue::Bool(*b),
            Value::Array(_) | Value::Object(_) => PayloadValue::Other,
        })
    }
}

/// A UUIDv7: time-ordered, generated at the edge without a round trip to a central sequence.
fn new_transaction_id() -> String {
    let now = spin_sdk::wasip3::clocks::system_clock::now();
    let millis = (now.seconds.max(0) as u64) * 1000 + u64::from(now.nanoseconds / 1_000_000);
    let random: [u8; 10] = std::array::from_fn({
        let bytes = spin_sdk::wasip3::random::random::get_random_bytes(10);
        move |i| bytes.get(i).copied().unwrap_or(0)
    });
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

fn now_iso() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<String> {
    let text = serde_json::to_string(body)
        .unwrap_or_else(|e| format!("{{\"error\":\"serialising response: {e}\"}}"));
    // With its length, the host sends the answer in one go; without, hyper streams it
    // chunked and waits for the body's end: 64 vs 108 µs per prediction at p50.
    let length = spin_sdk::http::HeaderValue::from(text.len());
    let mut resp = Response::new(text);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        "content-type",
        spin_sdk::http::HeaderValue::from_static("application/json"),
    );
    headers.insert("content-length", length);
    resp
}

fn error(status: StatusCode, message: &str) -> Response<String> {
    json(status, &serde_json::json!({ "error": message }))
}
