//! What the store serves for reading and the edge passes on: the dashboard (`GET /v1/dashboard`,
//! the edge's `GET /api/dashboard`) and the transaction listing (`GET /v1/transactions`, the
//! edge's `GET /api/transactions`). The store serialises these types; the edge deserialises
//! them (so a store answer of another shape is a 502, not a page the front end cannot read) and
//! serialises them again with its cache flags.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// `GET /v1/dashboard`: the last [`Dashboard::window_days`] days of scored transactions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    /// Counts and averages over the window.
    pub stats: DashboardStats,
    /// 24 buckets, hour 0 to 23 (the transaction's `hour` feature, else its UTC scoring hour).
    pub hourly_distribution: Vec<HourBucket>,
    /// Analyst feedback on transactions of the window.
    pub feedback: FeedbackStats,
    /// Length of the window in days.
    pub window_days: i32,
    /// When the store computed it (RFC 3339).
    pub generated_at: String,
    /// The current live and shadow models compared over the window, while a shadow is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_comparison: Option<crate::models::Comparison>,
    /// Set by the edge: served from its cache rather than fetched for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
    /// Set by the edge: the store failed and this is the last good dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<bool>,
}

/// [`Dashboard::stats`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardStats {
    /// Transactions scored in the window.
    pub total_transactions: i64,
    /// Of those, flagged anomalous.
    pub anomalies_detected: i64,
    /// Mean anomaly score (0 when there are none).
    pub avg_anomaly_score: f64,
    /// `anomalies_detected` as a percentage of `total_transactions` (0 when there are none).
    pub anomaly_rate: f64,
    /// What the edges decided in the window (transactions recorded with a decision), absent
    /// when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<DecisionCounts>,
    /// Mean probability of fraud over the transactions a supervised model scored, absent when
    /// none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_fraud_probability: Option<f64>,
}

/// [`DashboardStats::decisions`]: transactions per decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionCounts {
    /// `block`.
    pub block: i64,
    /// `review`.
    pub review: i64,
    /// `allow`.
    pub allow: i64,
}

/// One hour of [`Dashboard::hourly_distribution`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourBucket {
    /// 0..=23.
    pub hour: u8,
    /// Transactions in this hour.
    pub total_transactions: i64,
    /// Of those, flagged anomalous.
    pub anomalies: i64,
}

/// [`Dashboard::feedback`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackStats {
    /// Feedback given.
    pub total_feedback: i64,
    /// Feedback saying the model was right.
    pub positive_feedback: i64,
    /// `positive_feedback` as a percentage of `total_feedback` (0 when there is none).
    pub accuracy: f64,
}

/// `GET /v1/transactions`: one page, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionPage {
    /// The page's transactions.
    pub transactions: Vec<TransactionRow>,
    /// Where the page is.
    pub pagination: Pagination,
}

/// [`TransactionPage::pagination`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagination {
    /// 1-based page number; `null` when the page was asked for by `cursor`.
    pub page: Option<i64>,
    /// Rows per page.
    pub per_page: i64,
    /// Transactions in all: counted up to [`EXACT_TOTAL_MAX`], PostgreSQL's table statistics
    /// beyond (see `total_exact`): counting millions of rows per listing request is what made
    /// deep listings slow.
    pub total: i64,
    /// Pages in all (0 when there are no transactions), from `total`.
    pub pages: i64,
    /// Whether `total` was counted (`false`: estimated from table statistics).
    #[serde(default = "counted")]
    pub total_exact: bool,
    /// The [`ListingCursor`] of the page after this one (pass it as `cursor`); `null` on the
    /// last page. Keyset pagination: costs the same at any depth and does not shift when new
    /// transactions arrive, unlike `page`.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

fn counted() -> bool {
    true
}

/// Listings count `total` exactly up to this many transactions.
pub const EXACT_TOTAL_MAX: i64 = 10_000;

/// Where a keyset page starts: strictly after (older than) this `(scored_at, id)`, in the
/// listing's order (`scored_at` descending, then `id` descending). Written as
/// `<scored_at in µs since the Unix epoch>_<id>`; clients treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingCursor {
    /// The last listed transaction's `scored_at`, microseconds since the Unix epoch (the
    /// store's precision).
    pub scored_at_micros: i64,
    /// The last listed transaction's id.
    pub id: uuid::Uuid,
}

impl std::fmt::Display for ListingCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.scored_at_micros, self.id.as_simple())
    }
}

impl std::str::FromStr for ListingCursor {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "not a listing cursor (take `next_cursor` from a previous page)";
        let (micros, id) = s.split_once('_').ok_or(WHAT)?;
        Ok(ListingCursor {
            scored_at_micros: micros.parse().map_err(|_| WHAT)?,
            id: id.parse().map_err(|_| WHAT)?,
        })
    }
}

/// One transaction of a [`TransactionPage`], with the legacy listing's fields first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionRow {
    /// The transaction's UUID.
    pub id: String,
    /// The legacy `amount` feature, when the model had it.
    pub amount: Option<f64>,
    /// The legacy `hour` feature.
    pub hour: LegacyNumber,
    /// The legacy `day_of_week` feature.
    pub day_of_week: LegacyNumber,
    /// The legacy `merchant_category` feature.
    pub merchant_category: LegacyNumber,
    /// The legacy `transaction_type` feature.
    pub transaction_type: LegacyNumber,
    /// The model's anomaly score.
    pub anomaly_score: f64,
    /// The model's decision.
    pub is_anomaly: bool,
    /// Feature name → TreeSHAP value (`{}` when the prediction was not explained).
    pub shap_explanation: Map<String, Value>,
    /// When it was scored (RFC 3339).
    pub timestamp: String,
    /// The legacy risk score.
    pub risk_score: f64,
    /// The legacy confidence.
    pub confidence: f64,
    /// Version of the model that scored it.
    pub model_version: String,
    /// The edge instance that scored it.
    pub edge_instance: Option<String>,
    /// The edge's region.
    pub region: Option<String>,
    /// Every feature the model read (name → value).
    pub features: Map<String, Value>,
    /// Analyst feedback (was the model right), if any.
    pub feedback: Option<bool>,
    /// The integer id legacy clients display, if the edge assigned one.
    pub legacy_id: Option<i64>,
}

/// A legacy feature that is integer-valued in practice but stored as a float: whole values are
/// written as JSON integers (`14`, not `14.0`), as the old service did; absent is `null`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LegacyNumber(pub Option<f64>);

impl Serialize for LegacyNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            // Below 2^53 every whole f64 is an exact i64.
            #[allow(clippy::cast_possible_truncation)]
            Some(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => s.serialize_i64(v as i64),
            Some(v) => s.serialize_f64(v),
            None => s.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for LegacyNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<f64>::deserialize(d).map(LegacyNumber)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> TransactionRow {
        TransactionRow {
            id: "01a23216-76f9-7000-8000-000000000001".into(),
            amount: Some(42.5),
            hour: LegacyNumber(Some(14.0)),
            day_of_week: LegacyNumber(Some(2.5)),
            merchant_category: LegacyNumber(None),
            transaction_type: LegacyNumber(Some(0.0)),
            anomaly_score: 0.116_782_355_963_556_9,
            is_anomaly: false,
            shap_explanation: json!({"amount": 0.2}).as_object().unwrap().clone(),
            timestamp: "2026-12-01T14:18:57.215Z".into(),
            risk_score: 0.42,
            confidence: 0.11,
            model_version: "if1-a1423274".into(),
            edge_instance: None,
            region: Some("eu".into()),
            features: json!({"amount": 42.5, "hour": 14})
                .as_object()
                .unwrap()
                .clone(),
            feedback: Some(true),
            legacy_id: Some(9_007_199_254_740_991),
        }
    }

    #[test]
    fn listing_round_trips_and_writes_whole_legacy_numbers_as_integers() {
        let page = TransactionPage {
            transactions: vec![row()],
            pagination: Pagination {
                page: Some(1),
                per_page: 20,
                total: 1,
                pages: 1,
                total_exact: true,
                next_cursor: None,
            },
        };
        let text = serde_json::to_string(&page).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let r = &v["transactions"][0];
        assert_eq!(r["hour"], json!(14));
        assert!(r["hour"].is_i64());
        assert_eq!(r["day_of_week"], json!(2.5));
        assert_eq!(r["merchant_category"], Value::Null);
        assert_eq!(r["legacy_id"], json!(9_007_199_254_740_991_i64));
        let back: TransactionPage = serde_json::from_str(&text).unwrap();
        assert_eq!(back, page);
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let c = ListingCursor {
            scored_at_micros: 1_764_600_000_123_456,
            id: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_002a),
        };
        let text = c.to_string();
        assert_eq!(text, "1764600000123456_0190000000007000800000000000002a");
        assert_eq!(text.parse::<ListingCursor>(), Ok(c));
        let negative = ListingCursor {
            scored_at_micros: -5,
            ..c
        };
        assert_eq!(negative.to_string().parse::<ListingCursor>(), Ok(negative));
        for bad in [
            "",
            "_",
            "12",
            "x_0190000000007000800000000000002a",
            "12_nope",
            "12_",
        ] {
            assert!(bad.parse::<ListingCursor>().is_err(), "{bad}");
        }
        // An older listing (no cursor fields) still reads.
        let old: Pagination =
            serde_json::from_value(json!({"page": 1, "per_page": 20, "total": 0, "pages": 0}))
                .unwrap();
        assert!(old.total_exact);
        assert_eq!(old.next_cursor, None);
    }

    #[test]
    fn dashboard_flags_are_written_only_when_set() {
        let mut d = Dashboard {
            stats: DashboardStats {
                total_transactions: 5,
                anomalies_detected: 1,
                avg_anomaly_score: 0.1,
                anomaly_rate: 20.0,
                decisions: None,
                avg_fraud_probability: None,
            },
            hourly_distribution: (0..24)
                .map(|hour| HourBucket {
                    hour,
                    total_transactions: 0,
                    anomalies: 0,
                })
                .collect(),
            feedback: FeedbackStats {
                total_feedback: 0,
                positive_feedback: 0,
                accuracy: 0.0,
            },
            window_days: 7,
            generated_at: "2026-12-01T00:00:00Z".into(),
            shadow_comparison: None,
            cached: None,
            stale: None,
        };
        let v = serde_json::to_value(&d).unwrap();
        assert!(v.get("cached").is_none() && v.get("stale").is_none());
        d.cached = Some(true);
        d.stale = Some(true);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            (v["cached"].clone(), v["stale"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!(serde_json::from_value::<Dashboard>(v).unwrap(), d);
        // A store answer of another shape does not pass for a dashboard.
        assert!(serde_json::from_value::<Dashboard>(json!({"stats": {}})).is_err());
    }
}

/// One transaction of the review queue (`GET /v1/review`): what an analyst needs to decide
/// whether to open it. Also the head of [`TransactionDetail`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewRow {
    /// The transaction's UUID.
    pub id: String,
    /// The integer id legacy clients display, if the edge assigned one.
    pub legacy_id: Option<i64>,
    /// When it was scored (RFC 3339).
    pub scored_at: String,
    /// The `amount` feature, when the model had it.
    pub amount: Option<f64>,
    /// The entity ids the payload named (`card_id` → id, …; empty from older edges).
    pub entities: Map<String, Value>,
    /// Every feature the model read (name → value).
    pub features: Map<String, Value>,
    /// The forest's anomaly score (below 0 = anomalous).
    pub anomaly_score: f64,
    /// The forest's risk score in (0, 1].
    pub risk_score: f64,
    /// The forest's flag.
    pub is_anomaly: bool,
    /// The supervised model's probability of fraud, when the model has one.
    pub fraud_probability: Option<f64>,
    /// The edge's decision (`review` or `block` in the queue; a detail page may show an
    /// `allow`, or None from an edge that predates decisions).
    pub decision: Option<String>,
    /// Why (absent from older edges).
    pub decision_reason: Option<String>,
    /// The rules that matched, in the policy's order.
    pub rules_matched: Vec<String>,
    /// The model that scored it.
    pub model_version: String,
    /// The current label, if any: true = fraud (the legacy feedback "the model was right"
    /// read against the model's flag).
    pub label: Option<bool>,
    /// Who made it (an analyst's token name; None for feedback through an edge).
    pub labelled_by: Option<String>,
}

/// A page of the review queue, with the keyset cursor of the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewPage {
    /// The page's transactions, in the order asked for.
    pub transactions: Vec<ReviewRow>,
    /// Pass as `cursor` for the next page; None on the last page.
    pub next_cursor: Option<String>,
}

/// The current label of a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelState {
    /// True = fraud.
    pub label: bool,
    /// The analyst's comment.
    pub comment: Option<String>,
    /// Who made it (None: feedback through an edge).
    pub labelled_by: Option<String>,
    /// When it was last changed (RFC 3339).
    pub labelled_at: String,
}

/// One transaction with everything the store keeps of it (`GET /v1/transactions/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionDetail {
    /// Queue fields (decision, scores, rules, label).
    #[serde(flatten)]
    pub row: ReviewRow,
    /// TreeSHAP of the forest, feature → value (`{}` when not explained).
    pub explanation: Map<String, Value>,
    /// The answer's risk factors, in words (empty when not explained or from older edges).
    pub risk_factors: Vec<crate::RiskFactor>,
    /// The current label, if any.
    pub label_state: Option<LabelState>,
    /// The shadow model's version and scores, when one was set.
    pub shadow: Option<crate::ShadowScore>,
    /// The edge instance and region that scored it.
    pub edge_instance: Option<String>,
    /// The edge's region.
    pub region: Option<String>,
    /// The same card's most recent transactions (at most [`RECENT_OF_CARD`], newest first,
    /// this one included); empty when the payload named no card.
    pub card_recent: Vec<ReviewRow>,
}

/// Most transactions of a card a [`TransactionDetail`] lists.
pub const RECENT_OF_CARD: i64 = 20;

/// `POST /v1/labels`: an analyst's verdict on one transaction. Stored as feedback is (it joins
/// the labelled export), replacing any earlier label, with the analyst's token name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    /// The transaction's UUID.
    pub transaction_id: String,
    /// True = fraud, false = not fraud.
    pub label: bool,
    /// Why (at most [`crate::limits::MAX_COMMENT_LEN`] bytes).
    #[serde(default)]
    pub comment: Option<String>,
}

/// `GET /v1/whoami`: the caller's token name and role, so a console shows what it may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The token's name.
    pub name: String,
    /// Its role: edge, operator, reader, analyst or admin.
    pub role: String,
}
