//! SecureFlow Edge worker: a Spin HTTP component (WASI P3) that scores transactions with the
//! model embedded at build time.
//!
//! The model bytes are compiled in (`build.rs` picks the file) and decoded once per instance:
//! P3 hosts reuse an instance for many requests, so the decode cost is paid once, not per call.
//! Scoring itself is model-format's code, the same the trainer runs, so an edge score equals the
//! trainer's to the bit.

use http_body_util::{BodyExt, Limited};
use model_format::normalize::Value as PayloadValue;
use model_format::{MAX_FEATURES, Model, ModelId, Payload};
use serde::Serialize;
use serde_json::{Map, Value};
use spin_sdk::http::{Method, Request, Response, StatusCode};
use std::sync::OnceLock;

/// The embedded model file.
static MODEL_BYTES: &[u8] = include_bytes!(env!("SFE_MODEL_FILE"));

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// The decoded model and its identity, built on first use in each instance.
struct Loaded {
    model: Model,
    version: String,
    checksum: String,
}

fn loaded() -> Result<&'static Loaded, &'static str> {
    static LOADED: OnceLock<Result<Loaded, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let model = Model::from_bytes(MODEL_BYTES)
                .map_err(|e| format!("embedded model is invalid: {e}"))?;
            let id = ModelId::of(MODEL_BYTES).map_err(|e| e.to_string())?;
            Ok(Loaded {
                model,
                version: id.version(),
                checksum: format!("crc32:{:08x}", id.checksum),
            })
        })
        .as_ref()
        .map_err(String::as_str)
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> Response<String> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (path.as_str(), method) {
        ("/api/health", Method::GET) => health(),
        ("/api/predict", Method::POST) => {
            let explain = wants_explanation(req.uri().query());
            match read_body(req).await {
                Ok(body) => predict(&body, explain),
                Err(resp) => resp,
            }
        }
        ("/api/health", _) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed; use GET",
        ),
        ("/api/predict", _) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed; use POST",
        ),
        _ => error(StatusCode::NOT_FOUND, &format!("no route for {path}")),
    }
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
    model_version: &'a str,
    model_checksum: &'a str,
    features: &'a [String],
    timestamp: String,
}

fn health() -> Response<String> {
    match loaded() {
        Ok(l) => json(
            StatusCode::OK,
            &Health {
                status: "healthy",
                model_initialized: true,
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
struct Prediction<'a> {
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
}

#[derive(Serialize)]
struct Factor<'a> {
    feature: &'a str,
    value: f64,
    contribution: f64,
    direction: &'static str,
    description: String,
}

/// How many risk factors a prediction lists.
const TOP_FACTORS: usize = 3;

#[derive(Serialize)]
struct ExplanationBody<'a> {
    method: &'static str,
    /// E[h] over the training data; expected_value + Σ values = mean_path_length.
    expected_value: f64,
    mean_path_length: f64,
    values: FeatureValues<'a>,
}

/// Serialises as a JSON object `{feature: value}` in schema order, without building a map.
#[derive(Clone, Copy)]
struct FeatureValues<'a> {
    names: &'a [String],
    values: &'a [f64],
}

impl Serialize for FeatureValues<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.names.len()))?;
        for (name, value) in self.names.iter().zip(self.values) {
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

fn predict(body: &[u8], explain: bool) -> Response<String> {
    let l = match loaded() {
        Ok(l) => l,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let payload: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "request body must be a JSON object",
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
    };
    let n = l.model.features().len();
    let mut row = [0f64; MAX_FEATURES];
    if let Err(e) = l.model.normalize(&JsonPayload(&payload), &mut row) {
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let row = &row[..n];
    let mut phi = [0f64; MAX_FEATURES];
    let (score, explanation) = if explain {
        match l.model.explain(row, &mut phi[..n]) {
            Ok(e) => (e.score, Some(e)),
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    } else {
        match l.model.score(row) {
            Ok(s) => (s, None),
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    };
    let values = FeatureValues {
        names: l.model.features(),
        values: &phi[..n],
    };
    json(
        StatusCode::OK,
        &Prediction {
            transaction_id: new_transaction_id(),
            is_anomaly: score.is_anomaly(),
            anomaly_score: score.decision,
            confidence: score.decision.abs(),
            risk_score: score.risk(),
            model_version: &l.version,
            shap_explanation: explanation.map(|_| values),
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
                values,
            }),
            timestamp: now_iso(),
        },
    )
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
    let mut resp = Response::new(text);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        spin_sdk::http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: &str) -> Response<String> {
    json(status, &serde_json::json!({ "error": message }))
}
