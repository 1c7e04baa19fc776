//! Parsing and validation of the edge's event batches.
//!
//! A batch is validated completely before anything is written: the first problem is reported as
//! a [`BatchError`] naming the event's index and the field, so a sender can fix and resend the
//! whole batch. Fields are checked by hand (rather than with a derived `Deserialize`) so that
//! every message names the field, whatever is wrong with it.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Longest accepted text field (model version, edge instance, region, feature names).
pub const MAX_NAME_LEN: usize = 256;
/// Longest accepted analyst comment, in bytes.
pub const MAX_COMMENT_LEN: usize = 8192;
/// Most features (and explanation entries) one transaction may carry.
pub const MAX_FEATURES: usize = 512;

/// A scored transaction as reported by an edge instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredTransaction {
    pub event_id: Uuid,
    pub transaction_id: Uuid,
    pub scored_at: DateTime<Utc>,
    pub model_version: String,
    pub edge_instance: Option<String>,
    pub region: Option<String>,
    /// Feature name → value, every value a finite number.
    pub features: Map<String, Value>,
    pub anomaly_score: f64,
    pub risk_score: f64,
    pub is_anomaly: bool,
    pub confidence: f64,
    /// Feature name → contribution, or `None` when the edge sent none.
    pub explanation: Option<Map<String, Value>>,
}

/// An analyst's verdict on a transaction (`feedback` in the legacy API).
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub event_id: Uuid,
    pub transaction_id: Uuid,
    pub label: bool,
    pub comments: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Scored(ScoredTransaction),
    Feedback(Feedback),
}

impl Event {
    pub fn event_id(&self) -> Uuid {
        match self {
            Event::Scored(s) => s.event_id,
            Event::Feedback(f) => f.event_id,
        }
    }

    /// The `kind` string of the wire format (also the metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Scored(_) => "scored_transaction",
            Event::Feedback(_) => "feedback",
        }
    }
}

/// Why a batch was rejected. `index` is the 0-based position of the offending event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("body is not valid JSON: {0}")]
    Syntax(String),
    #[error("body must be a JSON array of events")]
    NotArray,
    #[error("line {line}: not valid JSON: {message}")]
    NdjsonSyntax { line: usize, message: String },
    #[error("batch has {count} events, more than the limit of {limit}")]
    TooManyEvents { count: usize, limit: usize },
    #[error("event {index}: field `{field}`: {problem}")]
    Field {
        index: usize,
        field: String,
        problem: String,
    },
    #[error("event {index}: must be a JSON object")]
    NotObject { index: usize },
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
        .map(|(i, v)| parse_event(i, v))
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
            let count = events.len() + 1;
            return Err(BatchError::TooManyEvents {
                count,
                limit: max_events,
            });
        }
        let value: Value = serde_json::from_slice(line).map_err(|e| BatchError::NdjsonSyntax {
            line: line_no + 1,
            message: e.to_string(),
        })?;
        events.push(parse_event(events.len(), value)?);
    }
    Ok(events)
}

/// Validates one event.
pub fn parse_event(index: usize, value: Value) -> Result<Event, BatchError> {
    let Value::Object(mut obj) = value else {
        return Err(BatchError::NotObject { index });
    };
    let f = Fields { index };
    let kind = f.string(&obj, "kind")?;
    let event_id = f.uuid(&obj, "event_id")?;
    let transaction_id = f.uuid(&obj, "transaction_id")?;
    match kind.as_str() {
        "scored_transaction" => {
            let features = match obj.remove("features") {
                Some(Value::Object(m)) => f.number_map(m, "features")?,
                None | Some(Value::Null) => return Err(f.err("features", "is required")),
                Some(_) => return Err(f.err("features", "must be an object of numbers")),
            };
            if features.is_empty() {
                return Err(f.err("features", "must not be empty"));
            }
            let explanation = match obj.remove("explanation") {
                None | Some(Value::Null) => None,
                Some(Value::Object(m)) => Some(f.number_map(m, "explanation")?),
                Some(_) => {
                    return Err(f.err("explanation", "must be an object of numbers or null"));
                }
            };
            Ok(Event::Scored(ScoredTransaction {
                event_id,
                transaction_id,
                scored_at: f.timestamp(&obj, "scored_at")?,
                model_version: f.name(&obj, "model_version")?,
                edge_instance: f.optional_name(&obj, "edge_instance")?,
                region: f.optional_name(&obj, "region")?,
                features,
                anomaly_score: f.number(&obj, "anomaly_score")?,
                risk_score: f.number(&obj, "risk_score")?,
                is_anomaly: f.boolean(&obj, "is_anomaly")?,
                confidence: f.number(&obj, "confidence")?,
                explanation,
            }))
        }
        "feedback" => {
            let comments = match obj.get("comments") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.len() <= MAX_COMMENT_LEN => Some(s.clone()),
                Some(Value::String(_)) => {
                    let problem = format!("longer than {MAX_COMMENT_LEN} bytes");
                    return Err(f.err("comments", &problem));
                }
                Some(_) => return Err(f.err("comments", "must be a string or null")),
            };
            Ok(Event::Feedback(Feedback {
                event_id,
                transaction_id,
                label: f.boolean(&obj, "feedback")?,
                comments,
                created_at: f.timestamp(&obj, "created_at")?,
            }))
        }
        _ => Err(f.err("kind", "must be \"scored_transaction\" or \"feedback\"")),
    }
}

/// Field accessors that report errors against one event index.
struct Fields {
    index: usize,
}

impl Fields {
    fn err(&self, field: &str, problem: &str) -> BatchError {
        BatchError::Field {
            index: self.index,
            field: field.to_string(),
            problem: problem.to_string(),
        }
    }

    fn required<'a>(
        &self,
        obj: &'a Map<String, Value>,
        field: &str,
    ) -> Result<&'a Value, BatchError> {
        match obj.get(field) {
            None | Some(Value::Null) => Err(self.err(field, "is required")),
            Some(v) => Ok(v),
        }
    }

    fn string(&self, obj: &Map<String, Value>, field: &str) -> Result<String, BatchError> {
        match self.required(obj, field)? {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.err(field, "must be a string")),
        }
    }

    fn name(&self, obj: &Map<String, Value>, field: &str) -> Result<String, BatchError> {
        let s = self.string(obj, field)?;
        self.check_name(field, &s)?;
        Ok(s)
    }

    fn optional_name(
        &self,
        obj: &Map<String, Value>,
        field: &str,
    ) -> Result<Option<String>, BatchError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.name(obj, field).map(Some),
        }
    }

    fn check_name(&self, field: &str, s: &str) -> Result<(), BatchError> {
        if s.is_empty() {
            Err(self.err(field, "must not be empty"))
        } else if s.len() > MAX_NAME_LEN {
            Err(self.err(field, &format!("longer than {MAX_NAME_LEN} bytes")))
        } else {
            Ok(())
        }
    }

    fn uuid(&self, obj: &Map<String, Value>, field: &str) -> Result<Uuid, BatchError> {
        let s = self.string(obj, field)?;
        Uuid::try_parse(&s).map_err(|_| self.err(field, "must be a UUID"))
    }

    fn timestamp(
        &self,
        obj: &Map<String, Value>,
        field: &str,
    ) -> Result<DateTime<Utc>, BatchError> {
        let s = self.string(obj, field)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| self.err(field, "must be an RFC 3339 timestamp with a time zone"))
    }

    fn number(&self, obj: &Map<String, Value>, field: &str) -> Result<f64, BatchError> {
        match self.required(obj, field)?.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(self.err(field, "must be a finite number")),
        }
    }

    fn boolean(&self, obj: &Map<String, Value>, field: &str) -> Result<bool, BatchError> {
        match self.required(obj, field)? {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.err(field, "must be true or false")),
        }
    }

    /// An object whose values are all finite numbers; errors name `field.key`.
    fn number_map(
        &self,
        map: Map<String, Value>,
        field: &str,
    ) -> Result<Map<String, Value>, BatchError> {
        if map.len() > MAX_FEATURES {
            return Err(self.err(field, &format!("has more than {MAX_FEATURES} entries")));
        }
        for (key, value) in &map {
            self.check_name(field, key)?;
            if !value.as_f64().is_some_and(f64::is_finite) {
                return Err(self.err(&format!("{field}.{key}"), "must be a finite number"));
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scored() -> Value {
        json!({"event_id":"0190f5c2-0000-7000-8000-000000000001","kind":"scored_transaction",
            "transaction_id":"0190f5c2-0000-7000-8000-0000000000aa","scored_at":"2026-11-23T18:00:00.123Z",
            "model_version":"if1-a1423274","edge_instance":"e1","region":"eu",
            "features":{"amount":42.5,"hour":13,"day_of_week":2,"merchant_category":4,"transaction_type":1},
            "anomaly_score":-0.01,"risk_score":0.52,"is_anomaly":true,"confidence":0.01,
            "explanation":{"amount":0.3,"hour":-0.1}})
    }

    #[test]
    fn parses_the_documented_shapes() {
        let Event::Scored(s) = parse_event(0, scored()).unwrap() else {
            panic!("not scored")
        };
        assert_eq!(s.features.len(), 5);
        assert_eq!(s.scored_at.timestamp_subsec_millis(), 123);
        assert!(s.is_anomaly);
        let fb = json!({"event_id":"0190f5c2-0000-7000-8000-000000000002","kind":"feedback",
            "transaction_id":"0190f5c2-0000-7000-8000-0000000000aa","feedback":true,
            "created_at":"2026-11-23T18:01:00Z"});
        let Event::Feedback(f) = parse_event(0, fb).unwrap() else {
            panic!("not feedback")
        };
        assert!(f.label);
        assert_eq!(f.comments, None);
    }

    #[test]
    fn explanation_may_be_null_or_absent() {
        let mut v = scored();
        v["explanation"] = Value::Null;
        assert!(
            matches!(parse_event(0, v.clone()), Ok(Event::Scored(s)) if s.explanation.is_none())
        );
        v.as_object_mut().unwrap().remove("explanation");
        assert!(matches!(parse_event(0, v), Ok(Event::Scored(s)) if s.explanation.is_none()));
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
            ("kind", json!("other"), "field `kind`"),
        ];
        for (field, value, expected) in cases {
            let mut v = scored();
            v[field] = value;
            let err = parse_json_array(&serde_json::to_vec(&json!([scored(), v])).unwrap(), 10)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("event 1: "), "{err}");
            assert!(err.contains(expected), "{err}");
        }
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
        assert_eq!(
            parse_json_array(b"[1]", 10),
            Err(BatchError::NotObject { index: 0 })
        );
    }
}
