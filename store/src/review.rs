//! What the analyst console reads and writes: the review queue, one transaction in full, labels
//! and who is asking.
//!
//! Labels made here are stored as the edge's feedback is (one row per transaction in
//! `feedback`, the newest wins), so they join the labelled export the trainer learns from; the
//! analyst's token name is kept beside each (`labelled_by`). The queue reads only what the edge
//! sent to people (`review`, `block`) through partial indexes, so its cost does not grow with
//! the traffic that was allowed.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use contract::limits::{MAX_COMMENT_LEN, MAX_NAME_LEN};
use contract::reads::{
    LabelRequest, LabelState, RECENT_OF_CARD, ReviewPage, ReviewRow, TransactionDetail, WhoAmI,
};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::Store;
use crate::auth::Caller;
use crate::db::DbError;
use crate::http::{ApiError, MAX_PER_PAGE, time_param};
use crate::query::{object, rfc3339};

pub fn routes() -> Router<Store> {
    Router::new()
        .route("/v1/review", get(queue))
        .route("/v1/transactions/{id}", get(detail))
        .route("/v1/labels", post(label))
        .route("/v1/whoami", get(whoami))
}

/// The queue's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first.
    Newest,
    /// Highest probability of fraud (else risk score) first, then newest.
    Riskiest,
}

/// Where a queue page starts: after this row. Written `n.<micros>.<uuid>` for the newest
/// order and `r.<risk bits hex>.<micros>.<uuid>` for the riskiest, so a cursor of one order is
/// refused by the other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueCursor {
    /// The risk of the last row (riskiest order only).
    pub risk: Option<f64>,
    /// Its `scored_at` in microseconds.
    pub scored_at_micros: i64,
    /// Its id.
    pub id: Uuid,
}

impl QueueCursor {
    fn encode(&self) -> String {
        match self.risk {
            Some(r) => format!(
                "r.{:016x}.{}.{}",
                r.to_bits(),
                self.scored_at_micros,
                self.id
            ),
            None => format!("n.{}.{}", self.scored_at_micros, self.id),
        }
    }

    fn decode(raw: &str, order: Order) -> Result<QueueCursor, ApiError> {
        let bad = || ApiError::bad_request("`cursor` is not a cursor of this order of the queue");
        let parts: Vec<&str> = raw.split('.').collect();
        let (risk, rest) = match (order, parts.as_slice()) {
            (Order::Newest, ["n", rest @ ..]) => (None, rest),
            (Order::Riskiest, ["r", bits, rest @ ..]) => (
                Some(
                    u64::from_str_radix(bits, 16)
                        .map(f64::from_bits)
                        .ok()
                        .filter(|r| r.is_finite())
                        .ok_or_else(bad)?,
                ),
                rest,
            ),
            _ => return Err(bad()),
        };
        let [micros, id] = rest else {
            return Err(bad());
        };
        Ok(QueueCursor {
            risk,
            scored_at_micros: micros.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// What the queue is asked for (`GET /v1/review`'s parameters, checked).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueQuery {
    /// Decisions to list: some of `review`, `block`.
    pub decisions: Vec<String>,
    /// Scored at or after.
    pub since: Option<DateTime<Utc>>,
    /// Scored before.
    pub until: Option<DateTime<Utc>>,
    /// Only this model's.
    pub model_version: Option<String>,
    /// Only those where this rule matched.
    pub rule: Option<String>,
    /// Only labelled (true) or unlabelled (false) ones.
    pub labelled: Option<bool>,
    /// The order.
    pub order: Order,
    /// Rows per page.
    pub per_page: i64,
    /// After this row.
    pub cursor: Option<QueueCursor>,
}

impl QueueQuery {
    fn parse(params: &HashMap<String, String>) -> Result<QueueQuery, ApiError> {
        let decisions: Vec<String> = match params.get("decision").map(String::as_str) {
            None | Some("") => vec!["review".into()],
            Some(list) => list.split(',').map(|d| d.trim().to_string()).collect(),
        };
        if decisions.iter().any(|d| d != "review" && d != "block") {
            return Err(ApiError::bad_request(
                "`decision` must be review, block or review,block",
            ));
        }
        let order = match params.get("order").map(String::as_str) {
            None | Some("newest") => Order::Newest,
            Some("riskiest") => Order::Riskiest,
            Some(_) => return Err(ApiError::bad_request("`order` must be newest or riskiest")),
        };
        let labelled = match params.get("labelled").map(String::as_str) {
            None | Some("any") => None,
            Some("yes") => Some(true),
            Some("no") => Some(false),
            Some(_) => return Err(ApiError::bad_request("`labelled` must be yes, no or any")),
        };
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            match params.get(name).map(|v| v.trim()) {
                None | Some("") => Ok(None),
                Some(v) if v.len() <= MAX_NAME_LEN => Ok(Some(v.to_string())),
                Some(_) => Err(ApiError::bad_request(format!(
                    "`{name}` is longer than {MAX_NAME_LEN} bytes"
                ))),
            }
        };
        let per_page = match params.get("per_page") {
            None => 50,
            Some(raw) => raw
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|v| (1..=MAX_PER_PAGE).contains(v))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`per_page` must be an integer from 1 to {MAX_PER_PAGE}"
                    ))
                })?,
        };
        Ok(QueueQuery {
            decisions,
            since: time_param(params, "since")?,
            until: time_param(params, "until")?,
            model_version: text("model_version")?,
            rule: text("rule")?,
            labelled,
            order,
            per_page,
            cursor: params
                .get("cursor")
                .map(|c| QueueCursor::decode(c, order))
                .transpose()?,
        })
    }
}

/// The columns [`review_row`] reads, in its order. `feedback.label` keeps the legacy meaning
/// ("the model was right"), so fraud is `label = is_anomaly` ([`contract::legacy::label`]).
const ROW_COLUMNS: &str = "t.id, t.legacy_id, t.scored_at, t.amount, t.features, \
    t.anomaly_score, t.risk_score, t.is_anomaly, t.fraud_probability, t.decision, \
    t.decision_reason, t.rules_matched, t.model_version, (f.label = t.is_anomaly), f.labelled_by, \
    t.entities";

fn review_row(r: &tokio_postgres::Row) -> ReviewRow {
    let id: Uuid = r.get(0);
    let scored_at: DateTime<Utc> = r.get(2);
    let rules: Option<Value> = r.get(11);
    ReviewRow {
        id: id.to_string(),
        legacy_id: r.get(1),
        scored_at: rfc3339(scored_at),
        amount: r.get(3),
        entities: object(r.get(15)),
        features: object(r.get(4)),
        anomaly_score: r.get(5),
        risk_score: r.get(6),
        is_anomaly: r.get(7),
        fraud_probability: r.get(8),
        decision: r.get(9),
        decision_reason: r.get(10),
        rules_matched: match rules {
            Some(Value::Array(a)) => a
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        },
        model_version: r.get(12),
        label: r.get(13),
        labelled_by: r.get(14),
    }
}

/// The queue's statement and parameters. The literal `decision IN ('review', 'block')` lets
/// the planner use the partial indexes of migration 9; only the conditions asked for are
/// written, so each shape of query gets a plan of its own.
fn queue_statement(q: &QueueQuery) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut arg = |v: Box<dyn ToSql + Sync + Send>| {
        params.push(v);
        format!("${}", params.len())
    };
    let risk = "COALESCE(t.fraud_probability, t.risk_score)";
    let mut conditions = vec![
        "t.decision IN ('review', 'block')".to_string(),
        format!(
            "t.decision = ANY({}::text[])",
            arg(Box::new(q.decisions.clone()))
        ),
    ];
    if let Some(since) = q.since {
        conditions.push(format!("t.scored_at >= {}", arg(Box::new(since))));
    }
    if let Some(until) = q.until {
        conditions.push(format!("t.scored_at < {}", arg(Box::new(until))));
    }
    if let Some(m) = &q.model_version {
        conditions.push(format!("t.model_version = {}", arg(Box::new(m.clone()))));
    }
    if let Some(rule) = &q.rule {
        conditions.push(format!("t.rules_matched ? {}", arg(Box::new(rule.clone()))));
    }
    match q.labelled {
        Some(true) => conditions.push("f.transaction_id IS NOT NULL".into()),
        Some(false) => conditions.push("f.transaction_id IS NULL".into()),
        None => {}
    }
    if let Some(c) = q.cursor {
        let at = DateTime::<Utc>::from_timestamp_micros(c.scored_at_micros).unwrap_or_default();
        if let (Order::Riskiest, Some(r)) = (q.order, c.risk) {
            let (r, t, id) = (arg(Box::new(r)), arg(Box::new(at)), arg(Box::new(c.id)));
            conditions.push(format!("({risk}, t.scored_at, t.id) < ({r}, {t}, {id})"));
        } else {
            let (t, id) = (arg(Box::new(at)), arg(Box::new(c.id)));
            // Spelled out beside the row comparison so the planner prunes newer partitions.
            conditions.push(format!("t.scored_at <= {t}"));
            conditions.push(format!("(t.scored_at, t.id) < ({t}, {id})"));
        }
    }
    let order = match q.order {
        Order::Newest => "t.scored_at DESC, t.id DESC".to_string(),
        Order::Riskiest => format!("{risk} DESC, t.scored_at DESC, t.id DESC"),
    };
    let limit = arg(Box::new(q.per_page + 1));
    let sql = format!(
        "SELECT {ROW_COLUMNS}, {risk} FROM transactions t \
         LEFT JOIN feedback f ON f.transaction_id = t.id \
         WHERE {} ORDER BY {order} LIMIT {limit}",
        conditions.join(" AND ")
    );
    (sql, params)
}

/// `GET /v1/review`: a page of the queue.
///
/// Every shape of the queue's statement has a partial index in its order, and a page is its
/// first `per_page` rows, so walking that index and stopping is always the right plan. The
/// planner does not always see it: a rule or model filter it thinks rare makes it estimate a
/// few dozen matches, and it then prefers scanning every partition and sorting (measured at 10M
/// rows: 0.8 s instead of 1 ms, most of it JIT compilation). So the statement runs with sorting
/// and JIT off for its transaction only.
pub async fn review_page(pool: &Pool, q: &QueueQuery) -> Result<ReviewPage, DbError> {
    let mut client = pool.get().await?;
    let (sql, params) = queue_statement(q);
    let tx = client.build_transaction().read_only(true).start().await?;
    tx.batch_execute("SET LOCAL enable_sort = off; SET LOCAL jit = off")
        .await?;
    let stmt = tx.prepare_cached(&sql).await?;
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = tx.query(&stmt, &refs).await?;
    tx.commit().await?;
    let more = rows.len() as i64 > q.per_page;
    let page: Vec<_> = rows.iter().take(q.per_page as usize).collect();
    let next_cursor = page.last().filter(|_| more).map(|r| {
        let scored_at: DateTime<Utc> = r.get(2);
        QueueCursor {
            risk: (q.order == Order::Riskiest).then(|| r.get::<_, f64>(16)),
            scored_at_micros: scored_at.timestamp_micros(),
            id: r.get(0),
        }
        .encode()
    });
    Ok(ReviewPage {
        transactions: page.into_iter().map(review_row).collect(),
        next_cursor,
    })
}

async fn queue(
    State(store): State<Store>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = QueueQuery::parse(&params)?;
    Ok(axum::Json(review_page(store.pool(), &q).await?).into_response())
}

fn transaction_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.trim()
        .parse()
        .map_err(|_| ApiError::bad_request("the transaction id must be a UUID"))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no transaction {id} in the store"),
    )
}

/// `GET /v1/transactions/{id}`: everything the store keeps of one transaction.
pub async fn transaction(pool: &Pool, id: Uuid) -> Result<Option<TransactionDetail>, DbError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS}, t.explanation, t.risk_factors, f.comments, f.updated_at, \
               t.shadow_model_version, t.shadow_anomaly_score, t.shadow_is_anomaly, \
               t.shadow_fraud_probability, t.shadow_decision, t.edge_instance, t.region \
             FROM transactions t LEFT JOIN feedback f ON f.transaction_id = t.id \
             WHERE t.id = $1 ORDER BY t.scored_at DESC LIMIT 1"
        ))
        .await?;
    let Some(r) = client.query_opt(&stmt, &[&id]).await? else {
        return Ok(None);
    };
    let row = review_row(&r);
    let card_recent = match row.entities.get("card_id").and_then(Value::as_str) {
        Some(card) => {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {ROW_COLUMNS} FROM transactions t \
                     LEFT JOIN feedback f ON f.transaction_id = t.id \
                     WHERE t.entities ? 'card_id' AND t.entities ->> 'card_id' = $1 \
                     ORDER BY t.scored_at DESC LIMIT $2"
                ))
                .await?;
            client
                .query(&stmt, &[&card, &RECENT_OF_CARD])
                .await?
                .iter()
                .map(review_row)
                .collect()
        }
        None => Vec::new(),
    };
    let factors: Option<Value> = r.get(17);
    let updated: Option<DateTime<Utc>> = r.get(19);
    let shadow_version: Option<String> = r.get(20);
    let shadow_score: Option<f64> = r.get(21);
    Ok(Some(TransactionDetail {
        explanation: object(r.get(16)),
        risk_factors: factors
            .and_then(|f| serde_json::from_value(f).ok())
            .unwrap_or_default(),
        label_state: row.label.zip(updated).map(|(label, at)| LabelState {
            label,
            comment: r.get(18),
            labelled_by: row.labelled_by.clone(),
            labelled_at: rfc3339(at),
        }),
        shadow: shadow_version
            .zip(shadow_score)
            .map(|(model_version, anomaly_score)| contract::ShadowScore {
                model_version,
                anomaly_score,
                is_anomaly: r.get::<_, Option<bool>>(22).unwrap_or(false),
                fraud_probability: r.get(23),
                decision: r.get(24),
            }),
        edge_instance: r.get(25),
        region: r.get(26),
        card_recent,
        row,
    }))
}

async fn detail(State(store): State<Store>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = transaction_id(&raw)?;
    match transaction(store.pool(), id).await? {
        Some(t) => Ok(axum::Json(t).into_response()),
        None => Err(not_found(id)),
    }
}

/// Stores `fraud` by `analyst` on transaction `id`, replacing any earlier label; None when the
/// store has no such transaction (a label on nothing would be lost from every export). Written
/// in the feedback table's legacy meaning (was the model's flag right), so the export's label is
/// exactly the analyst's verdict.
pub async fn set_label(
    pool: &Pool,
    id: Uuid,
    fraud: bool,
    comment: Option<&str>,
    analyst: &str,
) -> Result<Option<LabelState>, DbError> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "INSERT INTO feedback (transaction_id, label, comments, created_at, last_event_id, \
               labelled_by) \
             SELECT $1, ($2 = t.is_anomaly), $3, now(), $4, $5 FROM transactions t WHERE t.id = $1 \
             ORDER BY t.scored_at DESC LIMIT 1 \
             ON CONFLICT (transaction_id) DO UPDATE \
             SET label = EXCLUDED.label, comments = EXCLUDED.comments, \
                 created_at = EXCLUDED.created_at, updated_at = now(), \
                 last_event_id = EXCLUDED.last_event_id, labelled_by = EXCLUDED.labelled_by \
             RETURNING updated_at",
        )
        .await?;
    let event = Uuid::now_v7();
    let row = client
        .query_opt(&stmt, &[&id, &fraud, &comment, &event, &analyst])
        .await?;
    Ok(row.map(|r| LabelState {
        label: fraud,
        comment: comment.map(str::to_string),
        labelled_by: Some(analyst.to_string()),
        labelled_at: rfc3339(r.get(0)),
    }))
}

async fn label(
    State(store): State<Store>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: LabelRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "a label is {{\"transaction_id\": UUID, \"label\": true|false, \"comment\": text}}: {e}"
        ))
    })?;
    let id = transaction_id(&request.transaction_id)?;
    let comment = request
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if let Some(c) = comment
        && (c.len() > MAX_COMMENT_LEN || c.contains('\0'))
    {
        return Err(ApiError::bad_request(format!(
            "`comment` must be at most {MAX_COMMENT_LEN} bytes of text"
        )));
    }
    match set_label(store.pool(), id, request.label, comment, &caller.name).await? {
        Some(state) => {
            tracing::info!(transaction = %id, label = request.label, analyst = %caller.name, "labelled");
            Ok(axum::Json(state).into_response())
        }
        None => Err(not_found(id)),
    }
}

async fn whoami(Extension(caller): Extension<Caller>) -> Response {
    axum::Json(WhoAmI {
        name: caller.name.clone(),
        role: caller.role.to_string(),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_stay_in_their_order() {
        let id = Uuid::from_u128(7);
        let newest = QueueCursor {
            risk: None,
            scored_at_micros: 1_700_000_000_000_000,
            id,
        };
        let riskiest = QueueCursor {
            risk: Some(0.875),
            ..newest
        };
        assert_eq!(
            QueueCursor::decode(&newest.encode(), Order::Newest).unwrap(),
            newest
        );
        assert_eq!(
            QueueCursor::decode(&riskiest.encode(), Order::Riskiest).unwrap(),
            riskiest
        );
        assert!(QueueCursor::decode(&newest.encode(), Order::Riskiest).is_err());
        assert!(QueueCursor::decode(&riskiest.encode(), Order::Newest).is_err());
        for bad in [
            "",
            "n.1",
            "n.x.y",
            "r.zz.1.00000000-0000-0000-0000-000000000007",
        ] {
            assert!(QueueCursor::decode(bad, Order::Newest).is_err(), "{bad}");
            assert!(QueueCursor::decode(bad, Order::Riskiest).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_queue_statement_names_the_partial_index_predicate_and_only_what_is_asked() {
        let params = HashMap::from([
            ("decision".to_string(), "review,block".to_string()),
            ("labelled".to_string(), "no".to_string()),
            ("order".to_string(), "riskiest".to_string()),
        ]);
        let q = QueueQuery::parse(&params).unwrap();
        let (sql, args) = queue_statement(&q);
        assert!(sql.contains("t.decision IN ('review', 'block')"), "{sql}");
        assert!(sql.contains("f.transaction_id IS NULL"), "{sql}");
        assert!(!sql.contains("rules_matched ?"), "{sql}");
        assert_eq!(args.len(), 2, "decisions and limit");
        for (k, v) in [
            ("decision", "allow"),
            ("order", "oldest"),
            ("labelled", "maybe"),
            ("per_page", "0"),
            ("since", "yesterday"),
        ] {
            let params = HashMap::from([(k.to_string(), v.to_string())]);
            assert!(QueueQuery::parse(&params).is_err(), "{k}={v}");
        }
    }
}
