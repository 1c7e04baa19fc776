//! Read side: the legacy dashboard, the transaction listing and the labelled export.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::DbError;

/// The dashboard covers transactions scored in this many days up to now.
pub const DASHBOARD_DAYS: i32 = 7;
/// Rows fetched from the export cursor per round trip.
const EXPORT_FETCH_ROWS: i32 = 1000;
// The legacy feature columns are also the first export columns (in this order) when present.
use contract::legacy::{LEGACY_FEATURES, label};
use contract::reads::{
    Dashboard, DashboardStats, DecisionCounts, EXACT_TOTAL_MAX, FeedbackStats, HourBucket,
    LegacyNumber, ListingCursor, Pagination, TransactionPage, TransactionRow,
};

pub(crate) use contract::time::format as rfc3339;

/// Percentage with a zero denominator defined as 0.
fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A read-only transaction over one snapshot (repeatable read): queries in it agree.
async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// `GET /v1/dashboard`, see the crate docs for the definitions.
pub async fn dashboard(pool: &Pool) -> Result<Dashboard, DbError> {
    let mut client = pool.get().await?;
    // One snapshot for the three queries, so the numbers agree with each other.
    let tx = snapshot(&mut client).await?;
    let since = tx
        .query_one(
            "SELECT now() - make_interval(days => $1)",
            &[&DASHBOARD_DAYS],
        )
        .await?;
    let since: DateTime<Utc> = since.get(0);
    let stats = tx
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE is_anomaly), COALESCE(avg(anomaly_score), 0), \
               count(*) FILTER (WHERE decision = 'block'), count(*) FILTER (WHERE decision = 'review'), \
               count(*) FILTER (WHERE decision = 'allow'), avg(fraud_probability) \
             FROM transactions WHERE scored_at >= $1",
            &[&since],
        )
        .await?;
    let (total, anomalies, avg): (i64, i64, f64) = (stats.get(0), stats.get(1), stats.get(2));
    let decisions = DecisionCounts {
        block: stats.get(3),
        review: stats.get(4),
        allow: stats.get(5),
    };
    let decided = decisions.block + decisions.review + decisions.allow;
    let avg_fraud_probability: Option<f64> = stats.get(6);
    let hourly = tx
        .query(
            "SELECT h, count(*), count(*) FILTER (WHERE is_anomaly) FROM ( \
               SELECT COALESCE(round(hour)::int, extract(hour FROM scored_at AT TIME ZONE 'UTC')::int) AS h, \
                      is_anomaly \
               FROM transactions WHERE scored_at >= $1) t \
             GROUP BY h",
            &[&since],
        )
        .await?;
    let mut by_hour = [(0i64, 0i64); 24];
    for row in hourly {
        let h: i32 = row.get(0);
        if let Some(slot) = usize::try_from(h).ok().and_then(|h| by_hour.get_mut(h)) {
            *slot = (row.get(1), row.get(2));
        }
    }
    let fb = tx
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE f.label) \
             FROM feedback f JOIN transactions t ON t.id = f.transaction_id \
             WHERE t.scored_at >= $1",
            &[&since],
        )
        .await?;
    let (fb_total, fb_positive): (i64, i64) = (fb.get(0), fb.get(1));
    tx.commit().await?;
    Ok(Dashboard {
        stats: DashboardStats {
            total_transactions: total,
            anomalies_detected: anomalies,
            avg_anomaly_score: avg,
            anomaly_rate: percent(anomalies, total),
            decisions: (decided > 0).then_some(decisions),
            avg_fraud_probability,
        },
        hourly_distribution: (0u8..)
            .zip(by_hour)
            .map(|(hour, (total, anomalies))| HourBucket {
                hour,
                total_transactions: total,
                anomalies,
            })
            .collect(),
        feedback: FeedbackStats {
            total_feedback: fb_total,
            positive_feedback: fb_positive,
            accuracy: percent(fb_positive, fb_total),
        },
        window_days: DASHBOARD_DAYS,
        generated_at: rfc3339(Utc::now()),
        shadow_comparison: crate::registry::current_comparison(pool, since).await?,
        cached: None,
        stale: None,
    })
}

/// A JSON column that should hold an object; anything else reads as an empty one.
pub(crate) fn object(v: Option<Value>) -> Map<String, Value> {
    match v {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Which page of the listing: by number (OFFSET; the legacy front end's way) or after a
/// keyset cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAt {
    /// 1-based page number.
    Number(i64),
    /// The page after this cursor.
    After(ListingCursor),
}

/// The listing's columns, in the order [`listing_row`] reads them.
const LISTING_COLUMNS: &str = "t.id, t.amount, t.hour, t.day_of_week, t.merchant_category, \
    t.transaction_type, t.anomaly_score, t.is_anomaly, t.explanation, t.scored_at, t.risk_score, \
    t.confidence, t.model_version, t.edge_instance, t.region, t.features, f.label, t.legacy_id";

fn listing_row(r: &tokio_postgres::Row) -> (ListingCursor, TransactionRow) {
    let id: Uuid = r.get(0);
    let scored_at: DateTime<Utc> = r.get(9);
    let cursor = ListingCursor {
        scored_at_micros: scored_at.timestamp_micros(),
        id,
    };
    let row = TransactionRow {
        id: id.to_string(),
        amount: r.get(1),
        hour: LegacyNumber(r.get(2)),
        day_of_week: LegacyNumber(r.get(3)),
        merchant_category: LegacyNumber(r.get(4)),
        transaction_type: LegacyNumber(r.get(5)),
        anomaly_score: r.get(6),
        is_anomaly: r.get(7),
        shap_explanation: object(r.get(8)),
        timestamp: rfc3339(scored_at),
        risk_score: r.get(10),
        confidence: r.get(11),
        model_version: r.get(12),
        edge_instance: r.get(13),
        region: r.get(14),
        features: object(r.get(15)),
        feedback: r.get(16),
        legacy_id: r.get(17),
    };
    (cursor, row)
}

/// `total` of the listing: counted when there are at most [`EXACT_TOTAL_MAX`] transactions
/// (the count stops there, so it is cheap at any size), else the sum of the partitions'
/// row estimates from the last ANALYZE (autovacuum keeps it current).
async fn listing_total(client: &deadpool_postgres::Object) -> Result<(i64, bool), DbError> {
    let count = client
        .prepare_cached("SELECT count(*) FROM (SELECT 1 FROM transactions LIMIT $1) s")
        .await?;
    let counted: i64 = client
        .query_one(&count, &[&(EXACT_TOTAL_MAX + 1)])
        .await?
        .get(0);
    if counted <= EXACT_TOTAL_MAX {
        return Ok((counted, true));
    }
    let estimate = client
        .prepare_cached(
            "SELECT COALESCE(sum(c.reltuples) FILTER (WHERE c.reltuples > 0), 0)::int8 \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'transactions'::regclass",
        )
        .await?;
    let estimated: i64 = client.query_one(&estimate, &[]).await?.get(0);
    Ok((estimated.max(counted), false))
}

/// `GET /v1/transactions`: newest first (scored_at, then id, descending). One row more than
/// asked is fetched to know whether there is a next page.
pub async fn transactions(
    pool: &Pool,
    at: PageAt,
    per_page: i64,
) -> Result<TransactionPage, DbError> {
    let client = pool.get().await?;
    let (total, total_exact) = listing_total(&client).await?;
    let limit = per_page + 1;
    let rows = match at {
        PageAt::Number(page) => {
            // Deferred join: the OFFSET walks the (scored_at, id) index only (an index-only scan
            // once vacuumed), then just the page's rows are fetched with their feedback.
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {LISTING_COLUMNS} FROM ( \
                       SELECT scored_at, id FROM transactions \
                       ORDER BY scored_at DESC, id DESC LIMIT $1 OFFSET $2) k \
                     JOIN transactions t ON t.scored_at = k.scored_at AND t.id = k.id \
                     LEFT JOIN feedback f ON f.transaction_id = t.id \
                     ORDER BY t.scored_at DESC, t.id DESC"
                ))
                .await?;
            let offset = (page - 1).saturating_mul(per_page);
            client.query(&stmt, &[&limit, &offset]).await?
        }
        PageAt::After(cursor) => {
            let Some(after) = DateTime::<Utc>::from_timestamp_micros(cursor.scored_at_micros)
            else {
                return Ok(empty_page(per_page, total, total_exact));
            };
            // `scored_at <= $2` is implied by the row comparison; spelled out so the planner
            // prunes the newer partitions.
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {LISTING_COLUMNS} FROM transactions t \
                     LEFT JOIN feedback f ON f.transaction_id = t.id \
                     WHERE t.scored_at <= $2 AND (t.scored_at, t.id) < ($2, $3) \
                     ORDER BY t.scored_at DESC, t.id DESC LIMIT $1"
                ))
                .await?;
            client.query(&stmt, &[&limit, &after, &cursor.id]).await?
        }
    };
    let more = rows.len() as i64 > per_page;
    let mut next_cursor = None;
    let mut transactions = Vec::with_capacity(rows.len());
    for r in rows.iter().take(per_page as usize) {
        let (cursor, row) = listing_row(r);
        next_cursor = Some(cursor);
        transactions.push(row);
    }
    let mut page = empty_page(per_page, total, total_exact);
    page.transactions = transactions;
    page.pagination.next_cursor = next_cursor.filter(|_| more).map(|c| c.to_string());
    page.pagination.page = match at {
        PageAt::Number(n) => Some(n),
        PageAt::After(_) => None,
    };
    Ok(page)
}

fn empty_page(per_page: i64, total: i64, total_exact: bool) -> TransactionPage {
    TransactionPage {
        transactions: Vec::new(),
        pagination: Pagination {
            page: None,
            per_page,
            total,
            pages: if total == 0 {
                0
            } else {
                (total + per_page - 1) / per_page
            },
            total_exact,
            next_cursor: None,
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

/// Meta columns of the export; a feature with one of these names is exported as `feature_<name>`.
const META: [&str; 5] = [
    "transaction_id",
    "scored_at",
    "label",
    "model_version",
    "labelled_by",
];

/// The column a `history` export adds after the entity ids ([`contract::ENTITY_FIELDS`]): the
/// time the edge computed velocity features at (the payload's own time, else `scored_at`),
/// under the name velocity specs read it by default.
const VELOCITY_TIME_COLUMN: &str = "timestamp";

/// Starts the labelled export of transactions scored in `[since, until)` (either bound
/// optional). Returns once the column set is known (so database errors still become a proper
/// status code); the rows then arrive through the returned channel, fetched in chunks from a
/// cursor in a read-only snapshot so memory stays bounded whatever the size.
///
/// `history`: every transaction of the window, an unlabelled one with an empty label, plus
/// the entity ids and [`VELOCITY_TIME_COLUMN`]: what the trainer recomputes velocity features
/// over.
pub async fn export(
    pool: &Pool,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    format: ExportFormat,
    history: bool,
) -> Result<mpsc::Receiver<Result<Bytes, std::io::Error>>, DbError> {
    let client = pool.get().await?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (chunks_tx, chunks_rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut client = client;
        if let Err(e) = run_export(
            &mut client,
            since,
            until,
            format,
            history,
            ready_tx,
            chunks_tx.clone(),
        )
        .await
        {
            tracing::error!(error = %e, "export failed after it started streaming");
            let _ = chunks_tx
                .send(Err(std::io::Error::other(e.to_string())))
                .await;
        }
    });
    match ready_rx.await {
        Ok(Ok(())) => Ok(chunks_rx),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DbError::Other("export task ended before starting".into())),
    }
}

async fn run_export(
    client: &mut deadpool_postgres::Object,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    format: ExportFormat,
    history: bool,
    ready: oneshot::Sender<Result<(), DbError>>,
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), DbError> {
    let filter = |join: &str| {
        let from = if history {
            "transactions t LEFT JOIN feedback f ON f.transaction_id = t.id"
        } else {
            "feedback f JOIN transactions t ON t.id = f.transaction_id"
        };
        format!(
            "FROM {from}{join} WHERE ($1::timestamptz IS NULL OR t.scored_at >= $1) \
               AND ($2::timestamptz IS NULL OR t.scored_at < $2)"
        )
    };
    let history_columns: Vec<&str> = if history {
        contract::ENTITY_FIELDS
            .into_iter()
            .chain([VELOCITY_TIME_COLUMN])
            .collect()
    } else {
        Vec::new()
    };
    let meta = |n: &str| META.contains(&n) || history_columns.contains(&n);
    let start = async {
        let tx = snapshot(client).await?;
        let keys = tx
            .query(
                &format!(
                    "SELECT DISTINCT k {}",
                    filter(", LATERAL jsonb_object_keys(t.features) AS k")
                ),
                &[&since, &until],
            )
            .await?;
        let mut names: Vec<String> = keys.iter().map(|r| r.get(0)).collect();
        // Legacy five first in their usual order, then the rest alphabetically.
        names.sort_by_key(|n| {
            (
                LEGACY_FEATURES.iter().position(|l| l == n).unwrap_or(5),
                n.clone(),
            )
        });
        let portal = tx
            .bind(
                &format!(
                    "SELECT t.id, t.scored_at, t.features, t.is_anomaly, f.label, t.model_version, \
                       f.labelled_by, t.entities, t.transaction_time {} ORDER BY t.scored_at, t.id",
                    filter("")
                ),
                &[&since, &until],
            )
            .await?;
        Ok::<_, DbError>((tx, names, portal))
    };
    let (tx, names, portal) = match start.await {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            v
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let columns: Vec<String> = names
        .iter()
        .map(|n| {
            if meta(n) {
                format!("feature_{n}")
            } else {
                n.clone()
            }
        })
        .collect();
    let mut out = Vec::with_capacity(64 * 1024);
    if format == ExportFormat::Csv {
        let mut w = csv::Writer::from_writer(&mut out);
        let header = ["transaction_id", "scored_at"]
            .into_iter()
            .map(str::to_owned)
            .chain(columns.iter().map(|c| spreadsheet_safe(c)))
            .chain(history_columns.iter().map(|c| (*c).to_owned()))
            .chain(["label", "model_version", "labelled_by"].map(str::to_owned));
        w.write_record(header)
            .map_err(|e| DbError::Other(e.to_string()))?;
        w.flush().map_err(|e| DbError::Other(e.to_string()))?;
    }
    loop {
        let rows = tx.query_portal(&portal, EXPORT_FETCH_ROWS).await?;
        for r in &rows {
            let id: Uuid = r.get(0);
            let scored_at: DateTime<Utc> = r.get(1);
            let features: Value = r.get(2);
            let is_anomaly: bool = r.get(3);
            let feedback: Option<bool> = r.get(4);
            let model_version: String = r.get(5);
            let labelled_by: Option<String> = r.get(6);
            let label = feedback.map(|f| u8::from(label(is_anomaly, f)));
            let entities: Option<Value> = r.get(7);
            let time: Option<DateTime<Utc>> = r.get(8);
            // The entity ids, then the velocity time.
            let extra: Vec<Option<String>> = history_columns
                .iter()
                .map(|&c| match c {
                    VELOCITY_TIME_COLUMN => Some(rfc3339(time.unwrap_or(scored_at))),
                    e => entities
                        .as_ref()
                        .and_then(|v| v.get(e))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                })
                .collect();
            let values: Vec<Option<f64>> = names
                .iter()
                .map(|n| features.get(n).and_then(Value::as_f64))
                .collect();
            match format {
                ExportFormat::Csv => {
                    let mut w = csv::WriterBuilder::new()
                        .has_headers(false)
                        .from_writer(&mut out);
                    let mut record = vec![id.to_string(), rfc3339(scored_at)];
                    record.extend(
                        values
                            .iter()
                            .map(|v| v.map(|x| x.to_string()).unwrap_or_default()),
                    );
                    record.extend(
                        extra
                            .iter()
                            .map(|v| v.as_deref().map(spreadsheet_safe).unwrap_or_default()),
                    );
                    record.push(label.map(|l| l.to_string()).unwrap_or_default());
                    record.push(spreadsheet_safe(&model_version));
                    record.push(
                        labelled_by
                            .as_deref()
                            .map(spreadsheet_safe)
                            .unwrap_or_default(),
                    );
                    w.write_record(&record)
                        .map_err(|e| DbError::Other(e.to_string()))?;
                    w.flush().map_err(|e| DbError::Other(e.to_string()))?;
                }
                ExportFormat::Ndjson => {
                    let mut obj = Map::new();
                    obj.insert("transaction_id".into(), json!(id.to_string()));
                    obj.insert("scored_at".into(), json!(rfc3339(scored_at)));
                    for (c, v) in columns.iter().zip(&values) {
                        obj.insert(c.clone(), json!(v));
                    }
                    for (c, v) in history_columns.iter().zip(&extra) {
                        obj.insert((*c).to_owned(), json!(v));
                    }
                    obj.insert("label".into(), json!(label));
                    obj.insert("model_version".into(), json!(model_version));
                    obj.insert("labelled_by".into(), json!(labelled_by));
                    serde_json::to_writer(&mut out, &Value::Object(obj))
                        .map_err(|e| DbError::Other(e.to_string()))?;
                    out.push(b'\n');
                }
            }
        }
        let done = rows.len() < EXPORT_FETCH_ROWS as usize;
        if !out.is_empty()
            && chunks
                .send(Ok(Bytes::from(std::mem::take(&mut out))))
                .await
                .is_err()
        {
            // The client went away; dropping the transaction rolls it back.
            return Ok(());
        }
        if done {
            break;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// A CSV text cell a spreadsheet will not run as a formula (OWASP's rule for CSV injection):
/// a cell beginning with `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'`.
/// Only text cells need it (feature names, model versions): numbers are written by this
/// store from `f64` and cannot be formulas (a leading `-` is then a sign, which spreadsheets
/// read as a number). The NDJSON export is unchanged.
pub fn spreadsheet_safe(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised() {
        for bad in [
            "=1+1",
            "+1",
            "-x",
            "@SUM(A1)",
            "\tx",
            "\rx",
            "=HYPERLINK(\"http://evil\")",
        ] {
            assert_eq!(spreadsheet_safe(bad), format!("'{bad}"));
        }
        for ok in ["amount", "if1-a1423274", "x=1", ""] {
            assert_eq!(spreadsheet_safe(ok), ok);
        }
    }

    #[test]
    fn legacy_numbers_objects_and_percent() {
        let n = |x| serde_json::to_value(LegacyNumber(x)).unwrap();
        assert_eq!(n(Some(13.0)), json!(13));
        assert_eq!(n(Some(1.5)), json!(1.5));
        assert_eq!(n(None), Value::Null);
        // A JSON null or a non-object explanation lists as `{}` (the contract's shape).
        assert!(object(Some(Value::Null)).is_empty());
        assert!(object(None).is_empty());
        assert_eq!(object(Some(json!({"a": 1})))["a"], json!(1));
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(0, 0), 0.0);
    }
}
