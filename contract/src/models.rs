//! The model registry's wire types (the store serves them under `/v1/models`, the trainer's
//! `models` commands and the edge read them) and the one rule for whether a model file may be
//! served: [`verify`], run by the store before it accepts an upload and by the edge before it
//! serves a downloaded or key-value-stored model.
//!
//! # Endpoints (bearer token, as the rest of `/v1`; the role each needs is in the store's
//! `auth` module: edges read channels and files, operators change, readers list and compare)
//! - `POST /v1/models` (body: the model file, `application/octet-stream`; `X-Actor` header
//!   optional; `X-Signature`: the publisher's [`crate::signing`] signature, kept and handed to
//!   the edges in [`Target::signature`]; sending the same bytes with another signature replaces
//!   it): [`verify`]ed, stored under its content-derived version. `201` ([`Uploaded`],
//!   `created: true`), `200` when those exact bytes are there already, `400` naming why a file
//!   is refused ([`Refused`]), `409` when the version exists with other bytes.
//! - `GET /v1/models`: [`ModelList`], newest upload first, with the [`Channels`].
//! - `GET /v1/models/{version}`: one [`ModelVersion`]; `.../file`: the bytes, `ETag` = the
//!   checksum (`"crc32:…"`), `If-None-Match` → `304`.
//! - `GET /v1/models/channels`: [`Channels`], `ETag` = its revision; `If-None-Match` → `304`
//!   (what every edge polls).
//! - `PUT /v1/models/channels/{live|shadow}` ([`SetChannel`]): one atomic change, recorded.
//! - `POST /v1/models/channels/{channel}/rollback`: undoes the channel's last change (itself
//!   recorded as a change), `409` when there is nothing to undo.
//! - `GET /v1/models/channels/history`: [`ChannelHistory`], newest first.

use chrono::{DateTime, Utc};
use model_format::{Model, ModelId, TablesTrust};
use serde::{Deserialize, Serialize};

/// Names of the two channels.
pub const CHANNELS: [&str; 2] = ["live", "shadow"];

/// One registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// Content-derived version (`if1-…`).
    pub version: String,
    /// `crc32:xxxxxxxx`, also the download's ETag.
    pub checksum: String,
    /// File size.
    pub size_bytes: i64,
    /// Feature names, in the model's order.
    pub features: Vec<String>,
    /// The model's metadata (trainer, seed, training metrics...), as stored in the file.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// When and by whom it was uploaded; None for a version only seen in forwarded events.
    #[serde(default, with = "crate::time::micros_option")]
    pub uploaded_at: Option<DateTime<Utc>>,
    /// The name of the store token that uploaded it (or, for uploads before the store had
    /// named tokens, what the uploader called itself).
    pub uploaded_by: Option<String>,
    /// What the uploader said about itself (`X-Actor`), when that differs from the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_note: Option<String>,
    /// First and last time an edge scored with it (from forwarded events).
    #[serde(default, with = "crate::time::micros_option")]
    pub first_seen: Option<DateTime<Utc>>,
    /// See `first_seen`.
    #[serde(default, with = "crate::time::micros_option")]
    pub last_seen: Option<DateTime<Utc>>,
    /// The channels that point at it now.
    pub channels: Vec<String>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Uploaded versions, newest first.
    pub models: Vec<ModelVersion>,
    /// What the channels point at.
    pub channels: Channels,
}

/// A channel's target: a version and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The version.
    pub version: String,
    /// Its checksum (`crc32:…`).
    pub checksum: String,
    /// The publisher's signature of the file ([`crate::signing`]), as uploaded; None = unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// `GET /v1/models/channels`: what the edges serve. `live: None` means the edges' embedded
/// model; `shadow: None`, no shadow scoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channels {
    /// The model answers come from.
    pub live: Option<Target>,
    /// The model also scored, never answered with.
    pub shadow: Option<Target>,
    /// Increases with every change; the ETag.
    pub revision: i64,
    /// When the last change happened.
    #[serde(default, with = "crate::time::micros_option")]
    pub changed_at: Option<DateTime<Utc>>,
}

/// `PUT /v1/models/channels/{channel}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetChannel {
    /// The version to point at; None clears the channel.
    pub version: Option<String>,
    /// Who asks, in the caller's words: recorded as a note beside the token's name, which is
    /// the actor. The store falls back to the `X-Actor` header.
    #[serde(default)]
    pub actor: Option<String>,
}

/// One recorded channel change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelChange {
    /// Increasing id.
    pub id: i64,
    /// `live` or `shadow`.
    pub channel: String,
    /// Previous version (None: the embedded model / no shadow).
    pub from: Option<String>,
    /// New version.
    pub to: Option<String>,
    /// When.
    #[serde(with = "crate::time::micros")]
    pub changed_at: DateTime<Utc>,
    /// Who: the name of the store token that made the change.
    pub changed_by: String,
    /// `set` or `rollback`.
    pub action: String,
    /// What the caller said about itself (`actor` / `X-Actor`), beside the token's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET /v1/models/channels/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelHistory {
    /// Newest first.
    pub changes: Vec<ChannelChange>,
}

/// `POST /v1/models` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    /// The version it is stored under.
    pub version: String,
    /// Its checksum.
    pub checksum: String,
    /// False when these exact bytes were registered before.
    pub created: bool,
}

/// A model file that passed [`verify`].
#[derive(Debug)]
pub struct Verified {
    /// The decoded model.
    pub model: Model,
    /// Its identity.
    pub id: ModelId,
}

impl Verified {
    /// `crc32:xxxxxxxx`.
    pub fn checksum(&self) -> String {
        checksum_text(self.id.checksum)
    }
}

/// The checksum as the registry and the edge write it.
pub fn checksum_text(crc: u32) -> String {
    format!("crc32:{crc:08x}")
}

/// The CRC-32 a [`checksum_text`] names; `None` for anything else.
pub fn parse_checksum_text(text: &str) -> Option<u32> {
    let hex = text.strip_prefix("crc32:")?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// Why a model file may not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It does not decode (corrupt, truncated, another format version...).
    #[error("not a valid model file: {0}")]
    Decode(String),
    /// It decodes but the version it claims is not the one expected.
    #[error("model is {found}, expected {expected}")]
    WrongVersion {
        /// Expected version.
        expected: String,
        /// What the bytes are.
        found: String,
    },
    /// Its payload rules or features do not fit what callers send.
    #[error("model does not fit the edge's payloads: {0}")]
    Schema(String),
    /// Explanations cannot be computed for it.
    #[error("model cannot be explained: {0}")]
    Explanations(String),
}

/// The one rule for serving a model file: it decodes with every check of model-format
/// (checksum, structure, the trees), its payload-normalization rules accept a transaction with
/// every feature present, that row scores and explains to finite numbers, and its explanation
/// tables build and read back. `expected`: the version the bytes must be, when known.
pub fn verify(bytes: &[u8], expected: Option<&str>) -> Result<Verified, Refused> {
    let model = Model::from_bytes(bytes).map_err(|e| Refused::Decode(e.to_string()))?;
    let id = ModelId::of(bytes).map_err(|e| Refused::Decode(e.to_string()))?;
    if let Some(expected) = expected
        && expected != id.version()
    {
        return Err(Refused::WrongVersion {
            expected: expected.to_string(),
            found: id.version(),
        });
    }
    check_fits(&model)?;
    Ok(Verified { model, id })
}

/// Checks a decoded model against what the edge sends it: a sample payload (every feature 1)
/// normalizes, scores and explains to finite values, and its explanation tables are usable.
pub fn check_fits(model: &Model) -> Result<(), Refused> {
    let n = model.features().len();
    let sample: serde_json::Map<String, serde_json::Value> = model
        .features()
        .iter()
        .map(|f| (f.clone(), serde_json::Value::from(1.0)))
        .collect();
    let mut row = vec![0.0; n];
    model
        .normalize(&crate::JsonPayload(&sample), &mut row)
        .map_err(|e| Refused::Schema(format!("a payload with every feature set to 1: {e}")))?;
    let score = model
        .score(&row)
        .map_err(|e| Refused::Schema(format!("scoring a sample row: {e}")))?;
    if !score.score_samples.is_finite() {
        return Err(Refused::Schema(
            "a sample row scores to a non-finite value".into(),
        ));
    }
    if !model.prepare_explanations() {
        return Err(Refused::Explanations(
            "a tree path uses more distinct features than TreeSHAP supports".into(),
        ));
    }
    let mut phi = vec![0.0; n];
    let e = model
        .explain(&row, &mut phi)
        .map_err(|e| Refused::Explanations(e.to_string()))?;
    if !e.expected_value.is_finite() || phi.iter().any(|p| !p.is_finite()) {
        return Err(Refused::Explanations(
            "a sample row explains to non-finite values".into(),
        ));
    }
    Ok(())
}

/// Tables from [`Model::explanation_tables`] read back against `model` with every check.
pub fn check_tables(model: &mut Model, tables: &'static [u8]) -> Result<(), Refused> {
    model
        .install_explanation_tables(tables, TablesTrust::Untrusted)
        .map_err(|e| Refused::Explanations(format!("explanation tables: {e}")))
}

/// `GET /v1/models/compare?live=…&shadow=…[&since=…]`: the live and shadow models on the same
/// transactions (those the edge scored with both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The live model.
    pub live: String,
    /// The shadow model.
    pub shadow: String,
    /// Transactions scored by both.
    pub transactions: i64,
    /// Share flagged anomalous by the live model (0..=1).
    pub live_alert_rate: f64,
    /// Share flagged anomalous by the shadow model.
    pub shadow_alert_rate: f64,
    /// Share on which both decided the same.
    pub agreement: f64,
    /// Spearman's rank correlation of the two scores (ties ranked by their mean rank); None
    /// with fewer than two transactions or a constant score.
    pub rank_correlation: Option<f64>,
    /// The transactions whose two ranks differ most, largest gap first (at most 20).
    pub disagreements: Vec<Disagreement>,
    /// What the two would send to people: the live model's decisions (after its rules) against
    /// the shadow's by itself, on the transactions the edge recorded both for (None: none,
    /// e.g. edges that predate shadow decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<DecisionComparison>,
    /// Their supervised models' probabilities of fraud, when both have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraud_probability: Option<FraudComparison>,
    /// The two models' anomaly scores counted on the same bins, to draw them side by side
    /// (None: no transactions, or every score equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_histogram: Option<ScoreHistogram>,
}

/// [`Comparison::score_histogram`]: `edges` has one more entry than each count vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreHistogram {
    /// Bin edges, ascending (anomaly score: below 0 = anomalous).
    pub edges: Vec<f64>,
    /// The live model's count per bin.
    pub live: Vec<i64>,
    /// The shadow model's count per bin.
    pub shadow: Vec<i64>,
}

/// Bins of [`ScoreHistogram`].
pub const HISTOGRAM_BINS: usize = 20;

/// [`Comparison::decisions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionComparison {
    /// Transactions with both decisions.
    pub transactions: i64,
    /// The live model's shares.
    pub live: DecisionRates,
    /// The shadow model's shares.
    pub shadow: DecisionRates,
    /// Share decided the same.
    pub agreement: f64,
}

/// Shares (0..=1) of `block`, `review` and `allow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRates {
    /// `block`.
    pub block: f64,
    /// `review`.
    pub review: f64,
    /// `allow`.
    pub allow: f64,
}

/// [`Comparison::fraud_probability`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudComparison {
    /// Transactions with both probabilities.
    pub transactions: i64,
    /// The live model's mean probability.
    pub live_mean: f64,
    /// The shadow model's mean probability.
    pub shadow_mean: f64,
    /// Spearman's rank correlation of the two (None with fewer than two or a constant one).
    pub rank_correlation: Option<f64>,
}

/// One transaction the two models rank differently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disagreement {
    /// The transaction.
    pub transaction_id: uuid::Uuid,
    /// When it was scored.
    #[serde(with = "crate::time::micros")]
    pub scored_at: DateTime<Utc>,
    /// Live `anomaly_score` and decision.
    pub live_score: f64,
    /// See `live_score`.
    pub live_is_anomaly: bool,
    /// Shadow `anomaly_score` and decision.
    pub shadow_score: f64,
    /// See `shadow_score`.
    pub shadow_is_anomaly: bool,
    /// |live percentile − shadow percentile| of the scores, 0..=1.
    pub rank_gap: f64,
    /// The live model's probability of fraud, when it has a supervised model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_fraud_probability: Option<f64>,
    /// The shadow model's, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_fraud_probability: Option<f64>,
    /// The live decision (after its rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_decision: Option<String>,
    /// The shadow's decision by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_decision: Option<String>,
}

/// `GET /v1/models/{version}/drift?hours=N`: live scores of `version` against its training
/// score distribution, per hour (newest first) and over the whole window.
///
/// The training distribution's quantiles split scores into equally likely bins; the population
/// stability index is `Σ (a − e)·ln(a / e)` over the bins, `e` the training share (1/bins), `a`
/// the live share (floored at 1e-4 so an empty bin stays finite). Common reading: below 0.1
/// stable, 0.1–0.25 a moderate shift, above 0.25 a significant one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// The model.
    pub version: String,
    /// Its training quantiles (None: the file carries no distribution, so no PSI).
    pub training_quantiles: Option<Vec<f64>>,
    /// The whole window.
    pub overall: DriftWindow,
    /// Hours with transactions, newest first.
    pub hours: Vec<DriftWindow>,
}

/// One window of [`Drift`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftWindow {
    /// Start of the hour (None for the whole window).
    #[serde(default, with = "crate::time::micros_option")]
    pub hour: Option<DateTime<Utc>>,
    /// Transactions scored by the model in it.
    pub transactions: i64,
    /// Share flagged anomalous.
    pub alert_rate: f64,
    /// Population stability index against the training distribution.
    pub psi: Option<f64>,
}

/// Floor of a live bin share in [`population_stability_index`].
pub const PSI_FLOOR: f64 = 1e-4;

/// PSI of live bin `counts` against equally likely training bins (see [`Drift`]); None
/// without transactions.
pub fn population_stability_index(counts: &[i64]) -> Option<f64> {
    let total: i64 = counts.iter().sum();
    if total <= 0 || counts.is_empty() {
        return None;
    }
    let expected = 1.0 / counts.len() as f64;
    Some(
        counts
            .iter()
            .map(|&c| {
                let actual = (c as f64 / total as f64).max(PSI_FLOOR);
                (actual - expected) * (actual / expected).ln()
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_text_round_trips_and_nothing_else_parses() {
        for crc in [0, 1, 0x3a9f_00c2, u32::MAX] {
            assert_eq!(parse_checksum_text(&checksum_text(crc)), Some(crc));
        }
        for bad in [
            "",
            "crc32:",
            "crc32:3a9f00c",
            "crc32:3a9f00c2a",
            "crc32:3a9f00cg",
            "3a9f00c2",
            "crc32:+a9f00c2",
        ] {
            assert_eq!(parse_checksum_text(bad), None, "{bad}");
        }
    }
}
