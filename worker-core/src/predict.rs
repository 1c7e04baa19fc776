//! `/api/predict` and `/api/predict-batch`: normalize, score, explain, answer, and build the
//! store's event for each prediction.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use contract::limits::PREDICT_MAX_BATCH_ITEMS;
use contract::{Event, FeatureMap, ScoredTransaction};
use http::StatusCode;
use model_format::MAX_FEATURES;
use model_format::NormalizeError;
use serde::Serialize;
use serde_json::Value;

use crate::model::Loaded;
use crate::response::ApiError;
use crate::settings::{IdFormat, Settings};

/// How many risk factors a prediction lists.
const TOP_FACTORS: usize = 3;

/// One scored transaction: the answer's fields, plus what the store's event needs.
#[derive(Serialize)]
pub(crate) struct Prediction<'a> {
    /// Position in the batch (batch responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) index: Option<usize>,
    /// The UUID or the legacy integer, per the `transaction_id_format` variable.
    transaction_id: TransactionId,
    /// Always the UUIDv7.
    transaction_uuid: String,
    /// Always the legacy integer id.
    legacy_id: u64,
    is_anomaly: bool,
    /// scikit-learn's decision_function: negative means anomalous.
    anomaly_score: f64,
    confidence: f64,
    /// 2^(-E[h]/c(ψ)) in (0, 1]; higher = more anomalous.
    risk_score: f64,
    /// The supervised model's calibrated probability of fraud (models that have one).
    #[serde(skip_serializing_if = "Option::is_none")]
    fraud_probability: Option<f64>,
    model_version: &'a str,
    /// Legacy key: feature -> TreeSHAP value of the mean path length (negative = pushes
    /// towards anomalous), the quantity the old service's shap.TreeExplainer returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    shap_explanation: Option<FeatureValues<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<ExplanationBody<'a>>,
    /// The features that moved the deciding model most, largest |φ| first: the supervised
    /// model's log-odds when there is one, else the forest's path length.
    #[serde(skip_serializing_if = "Option::is_none")]
    risk_factors: Option<Vec<Factor<'a>>>,
    /// After the rules: `block`, `review` or `allow`.
    decision: &'static str,
    /// Why: the deciding rule's reason, or the model's verdict.
    decision_reason: String,
    /// Every rule that matched, in the policy's order.
    rules_matched: Vec<String>,
    /// The velocity features are those of the state as last read, and this transaction is
    /// missing from its entities' windows: its update was given up after too many conflicts.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) velocity_stale: bool,
    timestamp: String,
    #[serde(skip)]
    scored_at: DateTime<Utc>,
    #[serde(skip)]
    uuid: uuid::Uuid,
    /// The normalized feature row (forwarded to the store, not part of the answer).
    #[serde(skip)]
    row: Vec<f64>,
    /// The entity ids the payload named (forwarded to the store, for the analyst console).
    #[serde(skip)]
    entities: BTreeMap<String, String>,
    /// The payload's own time, when it had one (forwarded: the trainer recomputes velocity
    /// features from the store at it).
    #[serde(skip)]
    transaction_time: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum TransactionId {
    Uuid(String),
    Legacy(u64),
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

/// The ids and time of one prediction, made by the caller (they need the host).
#[derive(Clone, Copy)]
pub(crate) struct Stamp {
    pub(crate) uuid: uuid::Uuid,
    pub(crate) legacy_id: u64,
    pub(crate) at: DateTime<Utc>,
}

/// `explain` query parameter: `true`/`false`, `1`/`0`, `yes`/`no` (any case), or bare
/// `explain` (= true); anything else is a 400. Absent = explain.
pub(crate) fn wants_explanation(query: Option<&str>) -> Result<bool, ApiError> {
    let mut explain = true;
    for kv in query.unwrap_or("").split('&') {
        let (key, value) = kv.split_once('=').unwrap_or((kv, "true"));
        if key != "explain" {
            continue;
        }
        explain = match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid query parameter 'explain': {value:?}; use true or false"
                )));
            }
        };
    }
    Ok(explain)
}

/// Why one transaction could not be scored: the caller's input, or our failure.
pub(crate) enum ItemError {
    Input(String),
    Server(String),
}

impl ItemError {
    fn message(&self) -> &str {
        match self {
            ItemError::Input(m) | ItemError::Server(m) => m,
        }
    }
}

impl From<ItemError> for ApiError {
    fn from(e: ItemError) -> Self {
        match e {
            ItemError::Input(m) => ApiError::bad_request(m),
            ItemError::Server(m) => ApiError::internal(m),
        }
    }
}

/// Normalizes, scores and (optionally) explains one transaction object, with its `velocity`
/// values when the model has velocity features, then applies the rules.
pub(crate) fn score_transaction<'a>(
    l: &'a Loaded,
    settings: &Settings,
    payload: &Value,
    explain: bool,
    stamp: Stamp,
    velocity: Option<&[f64]>,
    deciders: crate::decide::Deciders<'_>,
) -> Result<Prediction<'a>, ItemError> {
    let mut row = [0f64; MAX_FEATURES];
    let fields = normalize(l, payload, velocity, &mut row)?;
    let n = l.model.features().len();
    let row = &row[..n];
    let mut phi = [0f64; MAX_FEATURES];
    // The supervised model's attributions: one per feature, then the forest's risk.
    let mut fraud_phi = [0f64; MAX_FEATURES + 1];
    let supervised = l.model.supervised().is_some();
    let (score, explanation, fraud) = if explain {
        // Both models' explanations from one scaling and one forest walk.
        let (e, fraud) = l
            .model
            .explain_with_fraud(row, &mut phi[..n], &mut fraud_phi[..=n])
            .map_err(|e| ItemError::Server(format!("explaining the score failed: {e}")))?;
        (e.score, Some(e), fraud.map(|(f, _)| f))
    } else {
        let (score, fraud) = l
            .model
            .score_fraud(row)
            .map_err(|e| ItemError::Server(format!("scoring failed: {e}")))?;
        (score, None, fraud)
    };
    let fraud_probability = fraud.map(|f| f.probability);
    let values = FeatureValues {
        names: l.model.features(),
        values: phi[..n].to_vec(),
    };
    let uuid_text = stamp.uuid.to_string();
    let scored = crate::decide::Scored {
        anomaly_score: score.decision,
        risk_score: score.risk(),
        is_anomaly: score.is_anomaly(),
        fraud_probability,
        supervised_default: fraud_probability
            .and_then(|p| crate::decide::supervised_default(l, p, Some(deciders.budgets))),
    };
    let decided = match deciders.rules {
        Some(b) => b.decide(fields, row, &scored),
        None => crate::decide::Decision::by_models(&scored),
    };
    Ok(Prediction {
        index: None,
        transaction_id: match settings.id_format {
            IdFormat::Uuid => TransactionId::Uuid(uuid_text.clone()),
            IdFormat::Legacy => TransactionId::Legacy(stamp.legacy_id),
        },
        transaction_uuid: uuid_text,
        legacy_id: stamp.legacy_id,
        is_anomaly: score.is_anomaly(),
        anomaly_score: score.decision,
        confidence: score.decision.abs(),
        risk_score: score.risk(),
        fraud_probability,
        model_version: &l.version,
        risk_factors: explanation.map(|_| {
            let factors = if supervised {
                l.model
                    .fraud_risk_factors(row, score.risk(), &fraud_phi[..=n], TOP_FACTORS)
            } else {
                l.model.risk_factors(row, &phi[..n], TOP_FACTORS)
            };
            factors
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
        decision: decided.decision.as_str(),
        decision_reason: decided.reason,
        rules_matched: decided.rules_matched,
        velocity_stale: false,
        timestamp: iso_millis(stamp.at),
        scored_at: stamp.at,
        uuid: stamp.uuid,
        row: row.to_vec(),
        entities: entities_of(payload),
        transaction_time: transaction_time(l, payload),
    })
}

/// The payload's time as velocity reads it (the model's velocity time field, else the
/// legacy `timestamp`): absent when the field is missing or not a timestamp.
fn transaction_time(l: &Loaded, payload: &Value) -> Option<DateTime<Utc>> {
    let field = l.model.velocity().map_or("timestamp", |v| v.time_field());
    let text = payload.get(field)?.as_str()?;
    DateTime::from_timestamp_millis(model_format::normalize::timestamp_millis(text)?)
}

/// The payload's entity ids ([`contract::ENTITY_FIELDS`] given as strings; the normalizer has
/// refused any other type already).
fn entities_of(payload: &Value) -> BTreeMap<String, String> {
    contract::ENTITY_FIELDS
        .iter()
        .filter_map(|f| {
            let id = payload.get(*f)?.as_str()?;
            (!id.is_empty() && id.len() <= contract::MAX_ENTITY_ID_LEN)
                .then(|| ((*f).to_string(), id.to_string()))
        })
        .collect()
}

/// Whether `payload` would be scored (a 400 otherwise), checked before its velocity state is
/// read or written: a transaction the edge refuses is not counted, as it is not in the
/// history the trainer computes its features from. Velocity values never make a payload
/// invalid, so their no-history values stand in for them.
pub(crate) fn check_transaction(l: &Loaded, payload: &Value) -> Result<(), ItemError> {
    let mut values = [0f64; MAX_FEATURES];
    let velocity = l.model.velocity().map(|spec| {
        let v = &mut values[..spec.features().len()];
        spec.no_history(v);
        &*v
    });
    normalize(l, payload, velocity, &mut [0f64; MAX_FEATURES]).map(|_| ())
}

/// The model's feature row of `payload` (its velocity values laid over it) into `row`;
/// returns the payload's fields.
fn normalize<'p>(
    l: &Loaded,
    payload: &'p Value,
    velocity: Option<&[f64]>,
    row: &mut [f64; MAX_FEATURES],
) -> Result<&'p serde_json::Map<String, Value>, ItemError> {
    let Value::Object(fields) = payload else {
        return Err(ItemError::Input("transaction must be a JSON object".into()));
    };
    crate::decide::check_entity_fields(fields).map_err(ItemError::Input)?;
    let json = contract::JsonPayload(fields);
    match (l.model.velocity(), velocity) {
        (Some(spec), Some(values)) => l.model.normalize(
            &model_format::velocity::Overlay {
                base: &json,
                spec,
                values,
            },
            row,
        ),
        (Some(_), None) => {
            return Err(ItemError::Server(
                "the model has velocity features but none were computed".into(),
            ));
        }
        _ => l.model.normalize(&json, row),
    }
    .map_err(|e: NormalizeError| ItemError::Input(e.to_string()))?;
    Ok(fields)
}

impl Prediction<'_> {
    /// The store's event for this prediction. The transaction id doubles as the event id, so a
    /// redelivered event is recognised as the same transaction.
    pub(crate) fn event(
        &self,
        l: &Loaded,
        settings: &Settings,
        shadow: Option<contract::ShadowScore>,
    ) -> Event {
        let names = l.model.features();
        Event::ScoredTransaction(ScoredTransaction {
            event_id: self.uuid,
            transaction_id: self.uuid,
            legacy_id: Some(self.legacy_id),
            scored_at: self.scored_at,
            model_version: l.version.clone(),
            edge_instance: Some(settings.edge_instance.clone()),
            region: settings.region.clone(),
            features: FeatureMap::from_parts(names, &self.row),
            anomaly_score: self.anomaly_score,
            risk_score: self.risk_score,
            is_anomaly: self.is_anomaly,
            confidence: self.confidence,
            explanation: self
                .shap_explanation
                .as_ref()
                .map(|v| FeatureMap::from_parts(names, &v.values)),
            shadow,
            decision: Some(self.decision.to_string()),
            rules_matched: self.rules_matched.clone(),
            fraud_probability: self.fraud_probability,
            decision_reason: Some(self.decision_reason.clone()),
            risk_factors: self
                .risk_factors
                .iter()
                .flatten()
                .map(|f| contract::RiskFactor {
                    feature: f.feature.to_string(),
                    value: f.value,
                    contribution: f.contribution,
                    description: f.description.clone(),
                })
                .collect(),
            entities: self.entities.clone(),
            velocity_stale: self.velocity_stale,
            transaction_time: self.transaction_time,
        })
    }
}

/// The shadow model's score of `payload` (normalized by its own rules: its features may differ
/// from the live model's). None when it cannot score it; the caller's answer never depends on it.
pub(crate) fn shadow_score(shadow: &Loaded, payload: &Value) -> Option<contract::ShadowScore> {
    let Value::Object(fields) = payload else {
        return None;
    };
    let n = shadow.model.features().len();
    let mut row = [0f64; MAX_FEATURES];
    shadow
        .model
        .normalize(&contract::JsonPayload(fields), &mut row)
        .ok()?;
    let (score, fraud) = shadow.model.score_fraud(&row[..n]).ok()?;
    let p = fraud.map(|f| f.probability);
    // What the shadow would decide by itself: its own stored thresholds (no review budget: it
    // reviews nothing), not the live policy.
    let decision = match p.and_then(|p| crate::decide::supervised_default(shadow, p, None)) {
        Some((outcome, _)) => outcome,
        None if score.is_anomaly() => rules::Outcome::Review,
        None => rules::Outcome::Allow,
    };
    Some(contract::ShadowScore {
        model_version: shadow.version.clone(),
        anomaly_score: score.decision,
        is_anomaly: score.is_anomaly(),
        fraud_probability: p,
        decision: Some(decision.to_string()),
    })
}

/// The items of a batch request, or why there are none.
pub(crate) fn batch_items(payload: &Value) -> Result<&[Value], ApiError> {
    let items = match payload.get("transactions") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid field 'transactions': expected an array",
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "Missing required field(s): transactions",
            ));
        }
    };
    if items.len() > PREDICT_MAX_BATCH_ITEMS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "batch has {} transactions; at most {PREDICT_MAX_BATCH_ITEMS} are accepted",
                items.len()
            ),
        ));
    }
    Ok(items)
}

/// One batch result: the prediction, or `{index, error}`.
pub(crate) fn batch_result(index: usize, outcome: Result<Prediction<'_>, ItemError>) -> Value {
    match outcome {
        Ok(mut p) => {
            p.index = Some(index);
            serde_json::to_value(p)
                .unwrap_or_else(|e| serde_json::json!({"index": index, "error": e.to_string()}))
        }
        Err(e) => serde_json::json!({"index": index, "error": e.message()}),
    }
}

/// RFC 3339 in UTC with milliseconds, as every answer's `timestamp`.
pub(crate) fn iso_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_parameter_is_strict() {
        for (q, want) in [
            (None, true),
            (Some(""), true),
            (Some("explain=false"), false),
            (Some("explain=FALSE"), false),
            (Some("explain=0"), false),
            (Some("a=1&explain=no"), false),
            (Some("explain=true"), true),
            (Some("explain"), true),
            (Some("other=maybe"), true),
        ] {
            assert_eq!(wants_explanation(q).ok(), Some(want), "{q:?}");
        }
        for q in ["explain=maybe", "explain=", "explain=f"] {
            let err = wants_explanation(Some(q)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(err.message.contains("'explain'"), "{}", err.message);
        }
    }
}
