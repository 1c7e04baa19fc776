//! The one definition of everything that crosses a process boundary between the edge (the Spin
//! worker), the central store and the trainer.
//!
//! The worker serialises these types and the store deserialises the same types, so the two
//! cannot drift: a field, a limit or a validation rule exists once, here. No I/O; builds for
//! wasm32 and the host.
//!
//! # Wire format, version 1
//!
//! The version is in the path: `POST /v1/events`. Within v1, fields may be added (readers
//! ignore fields they do not know, writers omit optional fields they do not have); removing or
//! retyping a field, or tightening a limit, needs `/v2`.
//!
//! - **Body**: a JSON array of events (`application/json`) or one event per line
//!   (`application/x-ndjson`), at most [`limits::INGEST_MAX_EVENTS`] events and
//!   [`limits::INGEST_MAX_BODY_BYTES`] bytes (the store's defaults; the edge sends at most
//!   [`limits::FORWARD_MAX_EVENTS`] events and [`limits::FORWARD_MAX_BYTES`] bytes per request).
//! - **Events** ([`Event`]), told apart by `kind`:
//!   - `scored_transaction` ([`ScoredTransaction`]): `event_id` (UUID; equals
//!     `transaction_id`, so a redelivery is the same event), `transaction_id` (UUIDv7),
//!     `legacy_id` (optional integer, see [`legacy_id`]), `scored_at` (RFC 3339 with a zone),
//!     `model_version`, `edge_instance`?, `region`?, `features` (object name → finite number,
//!     1..=[`limits::MAX_FEATURES`] entries), `anomaly_score`, `risk_score`, `confidence`
//!     (finite numbers), `is_anomaly` (bool), `explanation`? (object name → number, or null),
//!     `shadow`? ([`ShadowScore`]: the shadow model's `model_version`, `anomaly_score`, `is_anomaly`).
//!   - `feedback` ([`Feedback`]): `event_id`, exactly one of `transaction_id` (UUID) and
//!     `legacy_id` (integer), `feedback` (bool: was the model right), `comments`? (string),
//!     `created_at` (RFC 3339).
//! - **Text** (names, versions, comments): non-empty where required, at most
//!   [`limits::MAX_NAME_LEN`] bytes ([`limits::MAX_COMMENT_LEN`] for comments), and no NUL
//!   character (PostgreSQL text and JSONB cannot hold it). Lone surrogates cannot be written
//!   in JSON that parses as UTF-8 text, so they fail as a syntax error.
//! - **Answers**: `200 {accepted, duplicates}` ([`IngestAnswer`]); `400 {error, index?, field?}`
//!   ([`IngestRejection`]) when an event is invalid — nothing of the batch is written, and
//!   `index` names the first bad event so a sender can drop it and resend the rest; `413` for
//!   a body over the limit; `401`; `503` with `Retry-After` while the database is down.
//!
//! The read side — the dashboard and the transaction listing the store serves and the edge
//! passes on — is typed in [`reads`].
//!
//! Validation is the same function on both sides ([`Event::validate`]): the edge refuses a
//! bad feedback with a 400 before queueing it, and checks its own scored events before they
//! leave, so a batch the store refuses can only come from a version skew.

#![deny(missing_docs)]

mod event;
pub mod legacy;
pub mod legacy_id;
pub mod limits;
pub mod models;
pub mod reads;
pub mod signing;
pub mod time;

pub use event::{
    BatchError, Event, FeatureMap, Feedback, FieldError, IngestAnswer, IngestRejection,
    MAX_ENTITY_ID_LEN, RiskFactor, ScoredTransaction, ShadowScore, parse_json_array, parse_ndjson,
};

use model_format::normalize::Value as PayloadValue;

/// Payload fields that name an entity (a card, a customer...): optional, strings when present.
/// Velocity features and rules may use them; a non-string value is refused naming the field.
pub const ENTITY_FIELDS: [&str; 5] = ["card_id", "customer_id", "device_id", "ip", "merchant_id"];

/// A JSON object as model-format's normalizer reads a payload; JSON null counts as absent.
/// The edge normalizes requests through it, the registry's [`models::verify`] a sample.
pub struct JsonPayload<'a>(pub &'a serde_json::Map<String, serde_json::Value>);

impl model_format::Payload for JsonPayload<'_> {
    fn get(&self, field: &str) -> Option<PayloadValue<'_>> {
        use serde_json::Value;
        Some(match self.0.get(field)? {
            Value::Null => return None,
            Value::Number(n) => PayloadValue::Number(n.as_f64()?),
            Value::String(s) => PayloadValue::Text(s),
            Value::Bool(b) => PayloadValue::Bool(*b),
            Value::Array(_) | Value::Object(_) => PayloadValue::Other,
        })
    }
}
