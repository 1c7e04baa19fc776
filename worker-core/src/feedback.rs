//! `POST /api/feedback`: validated here with the contract's rules (so the store never refuses
//! it), queued for the store. Whether the transaction exists is for the store to know.

use contract::{Event, Feedback};
use serde_json::Value;

use crate::response::ApiError;

/// The transaction a feedback names, as the caller gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransactionRef {
    /// The UUID from `/api/predict`.
    Uuid(uuid::Uuid),
    /// The legacy integer id (the old service's id type; its front end sends a number).
    Legacy(u64),
}

impl TransactionRef {
    /// As the answer echoes it back: a string for a UUID, a number for a legacy id.
    pub(crate) fn to_json(self) -> Value {
        match self {
            TransactionRef::Uuid(id) => Value::String(id.to_string()),
            TransactionRef::Legacy(id) => Value::from(id),
        }
    }
}

const BAD_ID: &str = "Invalid field 'transaction_id': expected the transaction's UUID \
                      or its integer id (legacy_id) from /api/predict";

/// Parses `{transaction_id, feedback: bool, comments?}` into the store's event.
pub(crate) fn parse(
    payload: &Value,
    event_id: uuid::Uuid,
    created_at: chrono::DateTime<chrono::Utc>,
) -> Result<(TransactionRef, Event), ApiError> {
    let Value::Object(fields) = payload else {
        return Err(ApiError::bad_request("feedback must be a JSON object"));
    };
    let missing: Vec<&str> = ["transaction_id", "feedback"]
        .into_iter()
        .filter(|f| fields.get(*f).is_none_or(Value::is_null))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Missing required field(s): {}",
            missing.join(", ")
        )));
    }
    let legacy = |id: u64| {
        contract::legacy_id::is_valid(id)
            .then_some(TransactionRef::Legacy(id))
            .ok_or_else(|| ApiError::bad_request(BAD_ID))
    };
    let transaction = match &fields["transaction_id"] {
        Value::String(s) => {
            let s = s.trim();
            match uuid::Uuid::try_parse(s) {
                Ok(id) => TransactionRef::Uuid(id),
                Err(_) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                    legacy(s.parse().map_err(|_| ApiError::bad_request(BAD_ID))?)?
                }
                Err(_) => return Err(ApiError::bad_request(BAD_ID)),
            }
        }
        Value::Number(n) => legacy(n.as_u64().ok_or_else(|| ApiError::bad_request(BAD_ID))?)?,
        _ => return Err(ApiError::bad_request(BAD_ID)),
    };
    let Value::Bool(label) = fields["feedback"] else {
        return Err(ApiError::bad_request(
            "Invalid field 'feedback': expected true or false",
        ));
    };
    let comments = match fields.get("comments") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid field 'comments': expected a string",
            ));
        }
    };
    let (transaction_id, legacy_id) = match transaction {
        TransactionRef::Uuid(id) => (Some(id), None),
        TransactionRef::Legacy(id) => (None, Some(id)),
    };
    let event = Event::Feedback(Feedback {
        event_id,
        transaction_id,
        legacy_id,
        label,
        comments,
        created_at,
    });
    // The store's own rules (NUL, lengths): refused here, with the field's name.
    event.validate().map_err(|e| {
        ApiError::bad_request(format!("Invalid field '{}': {}", e.field, e.problem))
    })?;
    Ok((transaction, event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: &Value) -> Result<(TransactionRef, Event), ApiError> {
        parse(
            v,
            uuid::Uuid::from_u128(1),
            chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap(),
        )
    }

    #[test]
    fn uuid_and_legacy_ids() {
        let uuid = "0190f5c2-0000-7000-8000-0000000000aa";
        let (r, _) = parse_json(&json!({"transaction_id": uuid, "feedback": true})).unwrap();
        assert_eq!(r.to_json(), json!(uuid));
        let (r, e) = parse_json(&json!({"transaction_id": 123456789, "feedback": false})).unwrap();
        assert_eq!(r, TransactionRef::Legacy(123_456_789));
        let Event::Feedback(f) = e else { panic!() };
        assert_eq!(
            (f.transaction_id, f.legacy_id, f.label),
            (None, Some(123_456_789), false)
        );
        let (r, _) = parse_json(&json!({"transaction_id": " 42 ", "feedback": true})).unwrap();
        assert_eq!(r, TransactionRef::Legacy(42));
        let max = contract::legacy_id::MAX;
        assert!(parse_json(&json!({"transaction_id": max, "feedback": true})).is_ok());
        for bad in [
            json!(0),
            json!(max + 1),
            json!(-3),
            json!(1.5),
            json!("abc"),
            json!(""),
            json!([1]),
        ] {
            let err = parse_json(&json!({"transaction_id": bad, "feedback": true})).unwrap_err();
            assert!(
                err.message.contains("'transaction_id'"),
                "{bad}: {}",
                err.message
            );
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let err = parse_json(&json!({"feedback": true})).unwrap_err();
        assert_eq!(err.message, "Missing required field(s): transaction_id");
        let err = parse_json(&json!({"transaction_id": null, "feedback": null})).unwrap_err();
        assert_eq!(
            err.message,
            "Missing required field(s): transaction_id, feedback"
        );
        let err = parse_json(&json!({"transaction_id": 1, "feedback": "yes"})).unwrap_err();
        assert!(err.message.contains("'feedback'"));
        let err =
            parse_json(&json!({"transaction_id": 1, "feedback": true, "comments": 5})).unwrap_err();
        assert!(err.message.contains("'comments'"));
        // What the database cannot store is refused at the edge, naming the field.
        let err =
            parse_json(&json!({"transaction_id": 1, "feedback": true, "comments": "a\u{0}b"}))
                .unwrap_err();
        assert_eq!(err.status, http::StatusCode::BAD_REQUEST);
        assert!(err.message.starts_with("Invalid field 'comments'") && err.message.contains("NUL"));
        let long = "x".repeat(contract::limits::MAX_COMMENT_LEN + 1);
        let err = parse_json(&json!({"transaction_id": 1, "feedback": true, "comments": long}))
            .unwrap_err();
        assert!(err.message.starts_with("Invalid field 'comments'"));
        assert!(parse_json(&json!([1])).is_err());
    }
}
