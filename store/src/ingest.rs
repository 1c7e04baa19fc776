//! Writing a validated batch: one database transaction, a handful of bulk statements.
//!
//! 1. The event ids go into `ingested_events` with `ON CONFLICT DO NOTHING RETURNING`: the ids
//!    returned are the events never seen before; every other event is a duplicate and skipped.
//! 2. New scored transactions: one multi-row `INSERT ... SELECT FROM UNNEST(arrays)`. A
//!    transaction id already stored (re-scored under another event id) keeps its first row.
//! 3. New feedback: one upsert keeping, per transaction, the feedback with the newest
//!    `created_at` (ties go to the later event in arrival order).
//! 4. `model_versions`: insert unseen versions, then widen the first/last seen range only where
//!    the batch falls outside it (so hot rows are not locked by every batch).
//!
//! Rows are sorted by key before each statement so that concurrent batches lock rows in the
//! same order; a deadlock or serialization failure is still possible in theory and the whole
//! transaction is then rerun (see [`write_batch`]).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use uuid::Uuid;

use crate::db::DbError;
use crate::event::{Event, Feedback, ScoredTransaction};

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestOutcome {
    /// Events written for the first time, by kind.
    pub scored: usize,
    pub feedback: usize,
    /// Events already ingested before (or repeated within the batch).
    pub duplicates: usize,
    pub duplicate_scored: usize,
    pub duplicate_feedback: usize,
}

impl IngestOutcome {
    pub fn accepted(&self) -> usize {
        self.scored + self.feedback
    }
}

/// The legacy columns copied out of `features`.
const LEGACY: [&str; 5] = [
    "amount",
    "hour",
    "day_of_week",
    "merchant_category",
    "transaction_type",
];

const ATTEMPTS: usize = 3;

/// Writes a batch atomically and idempotently (by event id). Reruns the transaction on a
/// deadlock/serialization conflict; any other error leaves nothing written.
pub async fn write_batch(pool: &Pool, events: &[Event]) -> Result<IngestOutcome, DbError> {
    let mut attempt = 1;
    loop {
        match try_write(pool, events).await {
            Err(DbError::Conflict(msg)) if attempt < ATTEMPTS => {
                tracing::warn!(attempt, error = %msg, "ingest transaction conflicted; retrying");
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn try_write(pool: &Pool, events: &[Event]) -> Result<IngestOutcome, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;

    let mut ids: Vec<Uuid> = events.iter().map(Event::event_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO ingested_events (event_id) SELECT * FROM UNNEST($1::uuid[]) \
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .await?;
    let fresh: HashSet<Uuid> = tx
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();

    // Keep the first occurrence of each fresh event id; everything else is a duplicate.
    let mut outcome = IngestOutcome::default();
    let mut taken = HashSet::with_capacity(fresh.len());
    let mut scored = Vec::new();
    let mut feedback = Vec::new();
    for event in events {
        let new = fresh.contains(&event.event_id()) && taken.insert(event.event_id());
        match (event, new) {
            (Event::Scored(s), true) => scored.push(s),
            (Event::Feedback(f), true) => feedback.push(f),
            (Event::Scored(_), false) => outcome.duplicate_scored += 1,
            (Event::Feedback(_), false) => outcome.duplicate_feedback += 1,
        }
    }
    outcome.scored = scored.len();
    outcome.feedback = feedback.len();
    outcome.duplicates = outcome.duplicate_scored + outcome.duplicate_feedback;

    if !scored.is_empty() {
        insert_transactions(&tx, &mut scored).await?;
        upsert_model_versions(&tx, &scored).await?;
    }
    if !feedback.is_empty() {
        upsert_feedback(&tx, feedback).await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

async fn insert_transactions(
    tx: &deadpool_postgres::Transaction<'_>,
    scored: &mut [&ScoredTransaction],
) -> Result<(), DbError> {
    scored.sort_by_key(|s| s.transaction_id);
    let n = scored.len();
    let mut id = Vec::with_capacity(n);
    let mut features = Vec::with_capacity(n);
    let mut legacy: [Vec<Option<f64>>; 5] = Default::default();
    let mut anomaly = Vec::with_capacity(n);
    let mut risk = Vec::with_capacity(n);
    let mut is_anomaly = Vec::with_capacity(n);
    let mut confidence = Vec::with_capacity(n);
    let mut explanation = Vec::with_capacity(n);
    let mut model = Vec::with_capacity(n);
    let mut edge = Vec::with_capacity(n);
    let mut region = Vec::with_capacity(n);
    let mut scored_at = Vec::with_capacity(n);
    for s in scored.iter() {
        id.push(s.transaction_id);
        features.push(Value::Object(s.features.clone()));
        for (column, name) in legacy.iter_mut().zip(LEGACY) {
            column.push(s.features.get(name).and_then(Value::as_f64));
        }
        anomaly.push(s.anomaly_score);
        risk.push(s.risk_score);
        is_anomaly.push(s.is_anomaly);
        confidence.push(s.confidence);
        explanation.push(s.explanation.clone().map(Value::Object));
        model.push(s.model_version.as_str());
        edge.push(s.edge_instance.as_deref());
        region.push(s.region.as_deref());
        scored_at.push(s.scored_at);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO transactions (id, features, amount, hour, day_of_week, merchant_category, \
               transaction_type, anomaly_score, risk_score, is_anomaly, confidence, explanation, \
               model_version, edge_instance, region, scored_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::jsonb[], $3::float8[], $4::float8[], $5::float8[], \
               $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::bool[], $11::float8[], \
               $12::jsonb[], $13::text[], $14::text[], $15::text[], $16::timestamptz[]) \
             ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let [amount, hour, dow, category, kind] = &legacy;
    tx.execute(
        &stmt,
        &[
            &id,
            &features,
            amount,
            hour,
            dow,
            category,
            kind,
            &anomaly,
            &risk,
            &is_anomaly,
            &confidence,
            &explanation,
            &model,
            &edge,
            &region,
            &scored_at,
        ],
    )
    .await?;
    Ok(())
}

async fn upsert_model_versions(
    tx: &deadpool_postgres::Transaction<'_>,
    scored: &[&ScoredTransaction],
) -> Result<(), DbError> {
    let mut ranges: BTreeMap<&str, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for s in scored {
        let r = ranges
            .entry(&s.model_version)
            .or_insert((s.scored_at, s.scored_at));
        r.0 = r.0.min(s.scored_at);
        r.1 = r.1.max(s.scored_at);
    }
    let names: Vec<&str> = ranges.keys().copied().collect();
    let first: Vec<DateTime<Utc>> = ranges.values().map(|r| r.0).collect();
    let last: Vec<DateTime<Utc>> = ranges.values().map(|r| r.1).collect();
    let insert = tx
        .prepare_cached(
            "INSERT INTO model_versions (model_version, first_seen, last_seen) \
             SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[]) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    tx.execute(&insert, &[&names, &first, &last]).await?;
    let widen = tx
        .prepare_cached(
            "UPDATE model_versions m \
             SET first_seen = LEAST(m.first_seen, v.first_seen), \
                 last_seen = GREATEST(m.last_seen, v.last_seen) \
             FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[]) \
               AS v(model_version, first_seen, last_seen) \
             WHERE m.model_version = v.model_version \
               AND (v.first_seen < m.first_seen OR v.last_seen > m.last_seen)",
        )
        .await?;
    tx.execute(&widen, &[&names, &first, &last]).await?;
    Ok(())
}

async fn upsert_feedback(
    tx: &deadpool_postgres::Transaction<'_>,
    feedback: Vec<&Feedback>,
) -> Result<(), DbError> {
    // Newest per transaction within the batch (the upsert cannot touch one row twice).
    let mut newest: BTreeMap<Uuid, &Feedback> = BTreeMap::new();
    for f in feedback {
        match newest.get(&f.transaction_id) {
            Some(kept) if kept.created_at > f.created_at => {}
            _ => {
                newest.insert(f.transaction_id, f);
            }
        }
    }
    let n = newest.len();
    let mut id = Vec::with_capacity(n);
    let mut label = Vec::with_capacity(n);
    let mut comments = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut event = Vec::with_capacity(n);
    for f in newest.values() {
        id.push(f.transaction_id);
        label.push(f.label);
        comments.push(f.comments.as_deref());
        created.push(f.created_at);
        event.push(f.event_id);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO feedback (transaction_id, label, comments, created_at, last_event_id) \
             SELECT * FROM UNNEST($1::uuid[], $2::bool[], $3::text[], $4::timestamptz[], $5::uuid[]) \
             ON CONFLICT (transaction_id) DO UPDATE \
             SET label = EXCLUDED.label, comments = EXCLUDED.comments, \
                 created_at = EXCLUDED.created_at, updated_at = now(), \
                 last_event_id = EXCLUDED.last_event_id \
             WHERE feedback.created_at <= EXCLUDED.created_at",
        )
        .await?;
    tx.execute(&stmt, &[&id, &label, &comments, &created, &event])
        .await?;
    Ok(())
}
