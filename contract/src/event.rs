//! Events, their validation, batch parsing and the store's answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

use crate::legacy_id;
use crate::limits::{MAX_COMMENT_LEN, MAX_FEATURES, MAX_NAME_LEN};

/// Feature name → number, in the model's order; a JSON object on the wire.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeatureMap(pub Vec<(String, f64)>);

impl FeatureMap {
    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Pairs `names` with `values` (the shorter decides the length).
    pub fn from_parts(names: &[String], values: &[f64]) -> Self {
        FeatureMap(names.iter().cloned().zip(values.iter().copied()).collect())
    }
}

impl Serialize for FeatureMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for FeatureMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FeatureMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FeatureMap, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some((name, value)) = map.next_entry::<String, f64>()? {
                    // Counted here so that a huge object fails before it is all in memory twice.
                    if entries.len() == MAX_FEATURES {
                        return Err(serde::de::Error::custom(format_args!(
                            "has more than {MAX_FEATURES} entries"
                        )));
                    }
                    entries.push((name, value));
                }
                Ok(FeatureMap(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// A transaction scored at the edge (`kind: "scored_transaction"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredTransaction {
    /// Equals `transaction_id`: a redelivered event is recognised as the same transaction.
    pub event_id: Uuid,
    /// The edge-generated UUIDv7.
    pub transaction_id: Uuid,
    /// The integer id legacy clients display and type back (absent from older edges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_id: Option<u64>,
    /// When the edge scored it.
    pub scored_at: DateTime<Utc>,
    /// The model that scored it.
    pub model_version: String,
    /// The edge instance that scored it.
    #[serde(default)]
    pub edge_instance: Option<String>,
    /// The edge's region; absent and null both mean none.
    #[serde(default)]
    pub region: Option<String>,
    /// The normalized feature row the model saw.
    pub features: FeatureMap,
    /// scikit-learn's `decision_function` (negative = anomalous).
    pub anomaly_score: f64,
    /// 2^(−E[h]/c(ψ)) in (0, 1].
    pub risk_score: f64,
    /// The decision.
    pub is_anomaly: bool,
    /// |anomaly_score|.
    pub confidence: f64,
    /// TreeSHAP values, when the caller asked for an explanation.
    #[serde(default)]
    pub explanation: Option<FeatureMap>,
    /// The shadow model's score of the same transaction, when the edge had one set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowScore>,
    /// The edge's decision after its rules: `block`, `review` or `allow` (absent from edges
    /// that predate rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Every rule that matched, in the policy's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules_matched: Vec<String>,
    /// The supervised model's probability of fraud, in [0, 1] (models that have one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud_probability: Option<f64>,
    /// Why the edge decided so: the deciding rule's reason, or the model's verdict (absent from
    /// older edges). The review queue shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
    /// The answer's risk factors, when the prediction was explained: what an analyst reads on
    /// the transaction's page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk_factors: Vec<RiskFactor>,
    /// The entity ids the payload named ([`crate::ENTITY_FIELDS`] → id): how an analyst finds
    /// a card's other transactions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entities: BTreeMap<String, String>,
    /// The edge gave up recording this transaction in its velocity state (too many concurrent
    /// updates of one entity): its velocity features are from the state before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub velocity_stale: bool,
    /// The transaction's own time, when its payload carried one the edge could read (the
    /// model's velocity time field, else `timestamp`; offset applied). The edge computes
    /// velocity features at this instant (else at its clock, ≈ `scored_at`), so the trainer
    /// recomputes them from the store at the same instants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_time: Option<DateTime<Utc>>,
}

/// One of [`ScoredTransaction::risk_factors`]: a feature, its value, its contribution to the
/// deciding model (TreeSHAP) and the words the answer used for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskFactor {
    /// The feature.
    pub feature: String,
    /// Its value in the scored row.
    pub value: f64,
    /// Its TreeSHAP contribution.
    pub contribution: f64,
    /// In words, e.g. "at 03:00, outside the usual hours".
    pub description: String,
}

/// Most risk factors one event may carry (the edge sends its answer's top three).
pub const MAX_RISK_FACTORS: usize = 16;
/// Longest entity id an event may carry, in bytes.
pub const MAX_ENTITY_ID_LEN: usize = 256;
/// Longest risk-factor description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 512;

/// Decisions an event may carry.
pub const DECISIONS: [&str; 3] = ["block", "review", "allow"];
/// Most rule names one event may carry (the rules crate allows 256 rules).
pub const MAX_RULES_MATCHED: usize = 256;

/// A shadow model's verdict on a transaction (never shown to the caller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowScore {
    /// The shadow model.
    pub model_version: String,
    /// Its `decision_function`.
    pub anomaly_score: f64,
    /// Its decision.
    pub is_anomaly: bool,
    /// Its supervised model's probability of fraud (shadow models that have one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud_probability: Option<f64>,
    /// What it would have decided by itself (its supervised thresholds, else review what its
    /// forest flags): `block`, `review` or `allow`. The live policy's rules are not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

/// An analyst's verdict on a transaction (`kind: "feedback"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// A fresh id per feedback submission.
    pub event_id: Uuid,
    /// The transaction's UUID; exactly one of this and `legacy_id` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<Uuid>,
    /// The transaction's legacy integer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_id: Option<u64>,
    /// Whether the model's decision was right.
    #[serde(rename = "feedback")]
    pub label: bool,
    /// Free text.
    #[serde(default)]
    pub comments: Option<String>,
    /// When the analyst submitted it (a later feedback replaces an earlier one).
    pub created_at: DateTime<Utc>,
}

/// Everything the edge sends the store.
// Scored transactions are nearly every event; boxing them would add an allocation to each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// See [`ScoredTransaction`].
    ScoredTransaction(ScoredTransaction),
    /// See [`Feedback`].
    Feedback(Feedback),
}

/// What is wrong with one field of an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct FieldError {
    /// The field's path, e.g. `features.amount`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FieldError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl Event {
    /// The event id (the idempotency key).
    pub fn event_id(&self) -> Uuid {
        match self {
            Event::ScoredTransaction(s) => s.event_id,
            Event::Feedback(f) => f.event_id,
        }
    }

    /// The `kind` string of the wire format (also a metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ScoredTransaction(_) => "scored_transaction",
            Event::Feedback(_) => "feedback",
        }
    }

    /// Parses and validates one event from its JSON value; errors name the field.
    pub fn from_value(value: Value) -> Result<Event, FieldError> {
        let Value::Object(obj) = &value else {
            return Err(FieldError::new("", "event must be a JSON object"));
        };
        let event = match obj.get("kind") {
            Some(Value::String(k)) if k == "scored_transaction" => {
                Event::ScoredTransaction(typed(value)?)
            }
            Some(Value::String(k)) if k == "feedback" => Event::Feedback(typed(value)?),
            None | Some(Value::Null) => return Err(FieldError::new("kind", "is required")),
            Some(_) => {
                return Err(FieldError::new(
                    "kind",
                    "must be \"scored_transaction\" or \"feedback\"",
                ));
            }
        };
        event.validate()?;
        Ok(event)
    }

    /// The rules serde cannot express: sizes, text the database can store, finite numbers,
    /// id ranges. The edge runs this before sending, the store after parsing.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            Event::ScoredTransaction(s) => {
                name("model_version", &s.model_version)?;
                if let Some(v) = &s.edge_instance {
                    name("edge_instance", v)?;
                }
                if let Some(v) = &s.region {
                    name("region", v)?;
                }
                if let Some(id) = s.legacy_id {
                    legacy("legacy_id", id)?;
                }
                if s.features.is_empty() {
                    return Err(FieldError::new("features", "must not be empty"));
                }
                numbers("features", &s.features)?;
                if let Some(e) = &s.explanation {
                    numbers("explanation", e)?;
                }
                if let Some(shadow) = &s.shadow {
                    name("shadow.model_version", &shadow.model_version)?;
                    finite("shadow.anomaly_score", shadow.anomaly_score)?;
                    probability("shadow.fraud_probability", shadow.fraud_probability)?;
                    decision("shadow.decision", &shadow.decision)?;
                }
                decision("decision", &s.decision)?;
                if s.rules_matched.len() > MAX_RULES_MATCHED {
                    return Err(FieldError::new("rules_matched", "too many rules"));
                }
                for r in &s.rules_matched {
                    name("rules_matched", r)?;
                }
                if let Some(r) = &s.decision_reason {
                    comment("decision_reason", r)?;
                }
                if s.risk_factors.len() > MAX_RISK_FACTORS {
                    return Err(FieldError::new("risk_factors", "too many factors"));
                }
                for (field, id) in &s.entities {
                    if !crate::ENTITY_FIELDS.contains(&field.as_str()) {
                        return Err(FieldError::new(
                            format!("entities.{field}"),
                            "is not an entity field",
                        ));
                    }
                    if id.is_empty() || id.len() > MAX_ENTITY_ID_LEN {
                        return Err(FieldError::new(
                            format!("entities.{field}"),
                            format!("must be 1 to {MAX_ENTITY_ID_LEN} bytes"),
                        ));
                    }
                    storable("entities", id)?;
                }
                for f in &s.risk_factors {
                    name("risk_factors.feature", &f.feature)?;
                    if f.description.len() > MAX_DESCRIPTION_LEN {
                        return Err(FieldError::new(
                            "risk_factors.description",
                            format!("longer than {MAX_DESCRIPTION_LEN} bytes"),
                        ));
                    }
                    storable("risk_factors.description", &f.description)?;
                    finite("risk_factors.value", f.value)?;
                    finite("risk_factors.contribution", f.contribution)?;
                }
                for (field, x) in [
                    ("anomaly_score", s.anomaly_score),
                    ("risk_score", s.risk_score),
                    ("confidence", s.confidence),
                ] {
                    finite(field, x)?;
                }
                probability("fraud_probability", s.fraud_probability)
            }
            Event::Feedback(f) => {
                match (f.transaction_id, f.legacy_id) {
                    (Some(_), Some(_)) => {
                        return Err(FieldError::new(
                            "legacy_id",
                            "give either transaction_id or legacy_id, not both",
                        ));
                    }
                    (None, None) => {
                        return Err(FieldError::new(
                            "transaction_id",
                            "is required (or legacy_id)",
                        ));
                    }
                    (None, Some(id)) => legacy("legacy_id", id)?,
                    (Some(_), None) => {}
                }
                if let Some(c) = &f.comments {
                    comment("comments", c)?;
                }
                Ok(())
            }
        }
    }
}

/// A serde error from a typed parse, with the path of the field it is about.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // "missing field `x`" is reported at the parent: name the field itself.
        if let Some(rest) = message.strip_prefix("missing field `") {
            let field = rest.trim_end_matches('`');
            let field = if path == "." {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
            return FieldError::new(field, "is required");
        }
        let problem = if message.starts_with("invalid type: null") {
            "is required".to_owned()
        } else {
            message
        };
        FieldError::new(path, problem)
    })
}

/// Text the database can store: no NUL character (PostgreSQL text and JSONB refuse it).
fn storable(field: &str, s: &str) -> Result<(), FieldError> {
    if s.contains('\0') {
        return Err(FieldError::new(
            field,
            "contains a NUL character, which cannot be stored",
        ));
    }
    Ok(())
}

/// A required name: non-empty, at most [`MAX_NAME_LEN`] bytes, storable.
fn name(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!("longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    storable(field, s)
}

/// An analyst comment: at most [`MAX_COMMENT_LEN`] bytes, storable.
fn comment(field: &str, s: &str) -> Result<(), FieldError> {
    if s.len() > MAX_COMMENT_LEN {
        return Err(FieldError::new(
            field,
            format!("longer than {MAX_COMMENT_LEN} bytes"),
        ));
    }
    storable(field, s)
}

fn finite(field: &str, x: f64) -> Result<(), FieldError> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(FieldError::new(field, "must be a finite number"))
    }
}

fn probability(field: &str, p: Option<f64>) -> Result<(), FieldError> {
    match p {
        Some(p) if !(0.0..=1.0).contains(&p) => {
            Err(FieldError::new(field, "must be a probability (0 to 1)"))
        }
        _ => Ok(()),
    }
}

fn decision(field: &str, d: &Option<String>) -> Result<(), FieldError> {
    match d {
        Some(d) if !DECISIONS.contains(&d.as_str()) => {
            Err(FieldError::new(field, "must be block, review or allow"))
        }
        _ => Ok(()),
    }
}

fn legacy(field: &str, id: u64) -> Result<(), FieldError> {
    if legacy_id::is_valid(id) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be an integer from 1 to {}", legacy_id::MAX),
        ))
    }
}

fn numbers(field: &str, map: &FeatureMap) -> Result<(), FieldError> {
    if map.len() > MAX_FEATURES {
        return Err(FieldError::new(
            field,
            format!("has more than {MAX_FEATURES} entries"),
        ));
    }
    for (key, value) in &map.0 {
        name(field, key)?;
        finite(&format!("{field}.{key}"), *value)?;
    }
    Ok(())
}

/// Why a batch was refused. Nothing of it is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body is not JSON (also: a lone surrogate in a string).
    #[error("body is not valid JSON: {0}")]
    Syntax(String),
    /// The JSON body is not an array.
    #[error("body must be a JSON array of events")]
    NotArray,
    /// One NDJSON line is not JSON.
    #[error("line {line}: not valid JSON: {message}")]
    NdjsonSyntax {
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// More events than the receiver takes.
    #[error("batch has {count} events, more than the limit of {limit}")]
    TooManyEvents {
        /// Events seen (in NDJSON: up to the first one over the limit).
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// One event is invalid.
    #[error("event {index}: {error}")]
    Event {
        /// 0-based position of the event in the batch.
        index: usize,
        /// What is wrong with it.
        error: FieldError,
    },
}

impl BatchError {
    /// The wire answer for this error.
    pub fn rejection(&self) -> IngestRejection {
        let (index, field) = match self {
            BatchError::Event { index, error } => (Some(*index), Some(error.field.clone())),
            _ => (None, None),
        };
        IngestRejection {
            error: self.to_string(),
            index,
            field,
        }
    }
}

/// Parses a JSON array body (`application/json`).
pub fn parse_json_array(body: &[u8], max_events: usize) -> Result<Vec<Event>, BatchError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BatchError::Syntax(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(BatchError::NotArray);
    };
    if items.len() > max_events {
        return Err(BatchError::TooManyEvents {
            count: items.len(),
            limit: max_events,
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, v)| Event::from_value(v).map_err(|error| BatchError::Event { index, error }))
        .collect()
}

/// Parses an NDJSON body (`application/x-ndjson`): one event per line, blank lines ignored.
/// Event indexes count events (not lines), as in the array form.
pub fn parse_ndjson(body: &[u8], max_events: usize) -> Result<Vec<Event>, BatchError> {
    let mut events = Vec::new();
    for (line_no, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if events.len() == max_events {
            return Err(BatchError::TooManyEvents {
                count: events.len() + 1,
                limit: max_events,
            });
        }
        let value: Value = serde_json::from_slice(line).map_err(|e| BatchError::NdjsonSyntax {
            line: line_no + 1,
            message: e.to_string(),
        })?;
        let index = events.len();
        events.push(Event::from_value(value).map_err(|error| BatchError::Event { index, error })?);
    }
    Ok(events)
}

/// The store's answer to an accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestAnswer {
    /// Events written for the first time.
    pub accepted: usize,
    /// Events already ingested before (or repeated within the batch).
    pub duplicates: usize,
}

/// The store's 400 answer: the first invalid event, so the sender can drop it and resend the
/// rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRejection {
    /// Human-readable reason.
    pub error: String,
    /// 0-based position of the offending event, when one event is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The offending field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{FORWARD_MAX_BYTES, MAX_FEATURES};
    use serde_json::json;

    fn scored() -> Value {
        json!({"event_id":"0190f5c2-0000-7000-8000-000000000001","kind":"scored_transaction",
            "transaction_id":"0190f5c2-0000-7000-8000-0000000000aa","scored_at":"2026-11-23T18:00:00.123Z",
            "model_version":"if1-a1423274","edge_instance":"e1","region":"eu",
            "features":{"amount":42.5,"hour":13,"day_of_week":2,"merchant_category":4,"transaction_type":1},
            "anomaly_score":-0.01,"risk_score":0.52,"is_anomaly":true,"confidence":0.01,
            "explanation":{"amount":0.3,"hour":-0.1}})
    }

    fn feedback() -> Value {
        json!({"event_id":"0190f5c2-0000-7000-8000-000000000002","kind":"feedback",
            "transaction_id":"0190f5c2-0000-7000-8000-0000000000aa","feedback":true,
            "created_at":"2026-11-23T18:01:00Z"})
    }

    fn contract_entities() -> BTreeMap<String, String> {
        crate::ENTITY_FIELDS
            .iter()
            .map(|f| ((*f).to_string(), "i".repeat(MAX_ENTITY_ID_LEN)))
            .collect()
    }

    fn wide_event(features: usize, name_len: usize) -> Event {
        let names: Vec<String> = (0..features).map(|i| format!("{i:0>name_len$}")).collect();
        let values: Vec<f64> = (0..features).map(|i| -1.0 / (i as f64 + 3.0)).collect();
        Event::ScoredTransaction(ScoredTransaction {
            event_id: Uuid::from_u128(1),
            transaction_id: Uuid::from_u128(1),
            legacy_id: Some(legacy_id::MAX),
            scored_at: "2026-11-23T18:00:00.123456Z".parse().unwrap(),
            model_version: "v".repeat(MAX_NAME_LEN),
            edge_instance: Some("e".repeat(MAX_NAME_LEN)),
            region: Some("r".repeat(MAX_NAME_LEN)),
            features: FeatureMap::from_parts(&names, &values),
            anomaly_score: -0.123_456_789_012_345_67,
            risk_score: 0.5,
            is_anomaly: true,
            confidence: 0.123_456_789_012_345_67,
            explanation: Some(FeatureMap::from_parts(&names, &values)),
            shadow: Some(ShadowScore {
                model_version: "s".repeat(MAX_NAME_LEN),
                anomaly_score: -0.123_456_789_012_345_67,
                is_anomaly: true,
                fraud_probability: Some(0.987_654_321_098_765_4),
                decision: Some("review".into()),
            }),
            decision: Some("block".into()),
            rules_matched: vec!["card_testing".into(), "blocked_card".into()],
            fraud_probability: Some(0.123_456_789_012_345_67),
            decision_reason: Some("model: anomalous".into()),
            risk_factors: (0..MAX_RISK_FACTORS)
                .map(|i| RiskFactor {
                    feature: names[i % names.len()].clone(),
                    value: 4800.0,
                    contribution: -3.4,
                    description: "d".repeat(MAX_DESCRIPTION_LEN),
                })
                .collect(),
            entities: contract_entities(),
            velocity_stale: false,
            transaction_time: Some("2026-11-30T23:59:58.250Z".parse().unwrap()),
        })
    }

    /// What the edge serialises, the store parses back to the same value, bit for bit.
    #[test]
    fn round_trip() {
        for event in [
            Event::from_value(scored()).unwrap(),
            Event::from_value(feedback()).unwrap(),
            wide_event(MAX_FEATURES, 12),
            Event::Feedback(Feedback {
                event_id: Uuid::from_u128(7),
                transaction_id: None,
                legacy_id: Some(12_345),
                label: false,
                comments: Some("ünïcode ✓ \u{1F600}".into()),
                created_at: "2026-11-23T18:01:00Z".parse().unwrap(),
            }),
        ] {
            let text = serde_json::to_string(&event).unwrap();
            let back = Event::from_value(serde_json::from_str(&text).unwrap()).unwrap();
            assert_eq!(back, event);
            let batch = format!("[{text},{text}]");
            assert_eq!(
                parse_json_array(batch.as_bytes(), 2).unwrap(),
                [event.clone(), event.clone()]
            );
            assert_eq!(
                parse_ndjson(format!("{text}\n{text}\n").as_bytes(), 2).unwrap(),
                [event.clone(), event]
            );
        }
    }

    /// A model may have MAX_FEATURES features: its events are accepted, one more is not.
    #[test]
    fn limits() {
        let widest = wide_event(MAX_FEATURES, MAX_NAME_LEN);
        assert_eq!(widest.validate(), Ok(()));
        let text = serde_json::to_value(&widest).unwrap();
        assert!(Event::from_value(text.clone()).is_ok());
        let mut over = text.clone();
        over["features"]["one-more"] = json!(1.0);
        let err = Event::from_value(over).unwrap_err();
        assert_eq!(err.field, "features");
        assert!(err.problem.contains("more than 1024"), "{err}");
        let mut long = text;
        long["model_version"] = json!("v".repeat(MAX_NAME_LEN + 1));
        assert_eq!(Event::from_value(long).unwrap_err().field, "model_version");
        let mut fb = feedback();
        fb["comments"] = json!("c".repeat(MAX_COMMENT_LEN));
        assert!(Event::from_value(fb.clone()).is_ok());
        fb["comments"] = json!("c".repeat(MAX_COMMENT_LEN + 1));
        assert_eq!(Event::from_value(fb).unwrap_err().field, "comments");
    }

    /// The widest event (names escaped at the worst, 6 bytes per byte) fits one forwarded
    /// batch, so the edge can always send every event on its own.
    #[test]
    fn widest_event_fits_one_batch() {
        let Event::ScoredTransaction(mut s) = wide_event(MAX_FEATURES, MAX_NAME_LEN) else {
            unreachable!()
        };
        for (i, (n, _)) in s.features.0.iter_mut().enumerate() {
            *n = format!("{i:\u{1}>MAX_NAME_LEN$}");
        }
        s.explanation = Some(s.features.clone());
        for f in &mut s.risk_factors {
            f.description = "\u{1}".repeat(MAX_DESCRIPTION_LEN);
        }
        let text = serde_json::to_string(&Event::ScoredTransaction(s)).unwrap();
        assert!(text.len() < FORWARD_MAX_BYTES, "{}", text.len());
    }

    #[test]
    fn text_the_database_cannot_store_is_refused() {
        let nul = "a\u{0}b";
        type Case = (fn() -> Value, &'static str, Value);
        let cases: [Case; 5] = [
            (scored, "model_version", json!(nul)),
            (scored, "edge_instance", json!(nul)),
            (scored, "region", json!(nul)),
            (scored, "features", json!({ nul: 1.0 })),
            (feedback, "comments", json!(nul)),
        ];
        for (make, field, value) in cases {
            let mut v = make();
            v[field] = value;
            let err = Event::from_value(v).unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.problem.contains("NUL"), "{err}");
        }
        let mut v = scored();
        v["explanation"] = json!({ nul: 1.0 });
        assert_eq!(Event::from_value(v).unwrap_err().field, "explanation");
        // A lone surrogate cannot even be parsed as text.
        let body = br#"[{"kind":"feedback","comments":"\ud800"}]"#;
        assert!(matches!(
            parse_json_array(body, 10),
            Err(BatchError::Syntax(_))
        ));
    }

    #[test]
    fn errors_name_the_index_and_field() {
        let cases = [
            ("scored_at", json!("yesterday"), "field `scored_at`"),
            ("event_id", json!("nope"), "field `event_id`"),
            ("is_anomaly", json!(1), "field `is_anomaly`"),
            (
                "anomaly_score",
                Value::Null,
                "field `anomaly_score`: is required",
            ),
            (
                "features",
                json!({"amount":"12"}),
                "field `features.amount`",
            ),
            ("features", json!({}), "field `features`: must not be empty"),
            ("kind", json!("other"), "field `kind`"),
            ("legacy_id", json!(0), "field `legacy_id`"),
            ("legacy_id", json!(1u64 << 53), "field `legacy_id`"),
        ];
        for (field, value, expected) in cases {
            let mut v = scored();
            v[field] = value;
            let body = serde_json::to_vec(&json!([scored(), v])).unwrap();
            let err = parse_json_array(&body, 10).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("event 1: "), "{text}");
            assert!(text.contains(expected), "{text}");
            assert_eq!(err.rejection().index, Some(1));
        }
        let mut v = scored();
        v.as_object_mut().unwrap().remove("risk_score");
        assert_eq!(
            Event::from_value(v).unwrap_err(),
            FieldError::new("risk_score", "is required")
        );
    }

    #[test]
    fn feedback_names_exactly_one_transaction() {
        let mut both = feedback();
        both["legacy_id"] = json!(5);
        assert_eq!(Event::from_value(both).unwrap_err().field, "legacy_id");
        let mut neither = feedback();
        neither.as_object_mut().unwrap().remove("transaction_id");
        assert_eq!(
            Event::from_value(neither.clone()).unwrap_err().field,
            "transaction_id"
        );
        neither["legacy_id"] = json!(5);
        let Event::Feedback(f) = Event::from_value(neither).unwrap() else {
            panic!()
        };
        assert_eq!((f.transaction_id, f.legacy_id), (None, Some(5)));
    }

    #[test]
    fn ndjson_and_limits() {
        let line = serde_json::to_string(&scored()).unwrap();
        let body = format!("{line}\n\n{line}\n");
        assert_eq!(parse_ndjson(body.as_bytes(), 10).unwrap().len(), 2);
        assert!(matches!(
            parse_ndjson(body.as_bytes(), 1),
            Err(BatchError::TooManyEvents { .. })
        ));
        assert!(matches!(
            parse_ndjson(format!("{line}\n{{oops").as_bytes(), 10),
            Err(BatchError::NdjsonSyntax { line: 2, .. })
        ));
        assert_eq!(parse_json_array(b"{}", 10), Err(BatchError::NotArray));
        assert!(matches!(
            parse_json_array(b"[1]", 10),
            Err(BatchError::Event { index: 0, .. })
        ));
    }

    #[test]
    fn rejection_wire_shape() {
        let r = IngestRejection {
            error: "event 3: field `comments`: x".into(),
            index: Some(3),
            field: Some("comments".into()),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<IngestRejection>(&text).unwrap(), r);
        let bare: IngestRejection = serde_json::from_str(r#"{"error":"x"}"#).unwrap();
        assert_eq!(bare.index, None);
    }
}
