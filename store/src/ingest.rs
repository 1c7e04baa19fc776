//! Writing a validated batch: one database transaction, a handful of bulk statements.
//!
//! 1. The event ids go into `ingested_events` with `ON CONFLICT DO NOTHING RETURNING`: the ids
//!    returned are the events never seen before; every other event is a duplicate and skipped.
//! 2. New scored transactions: one multi-row `INSERT ... SELECT FROM UNNEST(arrays)` into the
//!    day partitions of `transactions` (created first when missing, see [`crate::partitions`]).
//!    A transaction already stored with the same id and `scored_at` (sent again under another
//!    event id) keeps its first row.
//! 3. New feedback: one upsert keeping, per transaction, the feedback with the newest
//!    `created_at` (ties go to the later event in arrival order). Feedback by legacy id is
//!    resolved to the newest transaction carrying that id; if none has arrived yet it waits in
//!    `pending_legacy_feedback` and moves over when the transaction is ingested (step 2).
//! 4. `model_versions`: insert unseen versions, then widen the first/last seen range only where
//!    the batch falls outside it (so hot rows are not locked by every batch).
//!
//! Rows are sorted by key before each statement so that concurrent batches lock rows in the
//! same order; a deadlock or serialization failure is still possible in theory and the whole
//! transaction is then rerun (see [`write_batch`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use contract::legacy::LEGACY_FEATURES as LEGACY;
use contract::{Event, FeatureMap, Feedback, ScoredTransaction};
use deadpool_postgres::Pool;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::db::DbError;
use crate::partitions::{Partitions, day_of};

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

const ATTEMPTS: usize = 3;

/// Writes a batch atomically and idempotently (by event id). Reruns the transaction on a
/// deadlock/serialization conflict; any other error leaves nothing written.
pub async fn write_batch(
    pool: &Pool,
    partitions: &Partitions,
    events: &[Event],
) -> Result<IngestOutcome, DbError> {
    // The day partitions the batch's transactions go to (created here when missing: late events
    // from an outbox, a skewed clock), each in its own short transaction before the write.
    let days: BTreeSet<NaiveDate> = events
        .iter()
        .filter_map(|e| match e {
            Event::ScoredTransaction(s) => Some(day_of(s.scored_at)),
            Event::Feedback(_) => None,
        })
        .collect();
    let mut attempt = 1;
    loop {
        partitions.ensure(pool, &days).await?;
        match try_write(pool, events).await {
            Err(DbError::Conflict(msg)) if attempt < ATTEMPTS => {
                tracing::warn!(attempt, error = %msg, "ingest transaction conflicted; retrying");
                attempt += 1;
            }
            Err(DbError::MissingPartition(msg)) if attempt < ATTEMPTS => {
                tracing::warn!(attempt, error = %msg, "a partition was dropped elsewhere; recreating and retrying");
                partitions.forget();
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
            (Event::ScoredTransaction(s), true) => scored.push(s),
            (Event::Feedback(f), true) => feedback.push(f),
            (Event::ScoredTransaction(_), false) => outcome.duplicate_scored += 1,
            (Event::Feedback(_), false) => outcome.duplicate_feedback += 1,
        }
    }
    outcome.scored = scored.len();
    outcome.feedback = feedback.len();
    outcome.duplicates = outcome.duplicate_scored + outcome.duplicate_feedback;

    if !scored.is_empty() {
        insert_transactions(&tx, &mut scored).await?;
        upsert_model_versions(&tx, &scored).await?;
        adopt_pending_feedback(&tx, &scored).await?;
    }
    if !feedback.is_empty() {
        let (by_uuid, by_legacy) = resolve_legacy_feedback(&tx, feedback).await?;
        if !by_uuid.is_empty() {
            upsert_feedback(&tx, by_uuid).await?;
        }
        if !by_legacy.is_empty() {
            park_legacy_feedback(&tx, by_legacy).await?;
        }
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
    let mut legacy_id = Vec::with_capacity(n);
    let mut shadow_model = Vec::with_capacity(n);
    let mut shadow_score = Vec::with_capacity(n);
    let mut shadow_anomaly = Vec::with_capacity(n);
    let mut shadow_fraud = Vec::with_capacity(n);
    let mut shadow_decision = Vec::with_capacity(n);
    let mut decision = Vec::with_capacity(n);
    let mut fraud = Vec::with_capacity(n);
    let mut reason = Vec::with_capacity(n);
    let mut rules = Vec::with_capacity(n);
    let mut factors = Vec::with_capacity(n);
    let mut entities = Vec::with_capacity(n);
    let mut transaction_time = Vec::with_capacity(n);
    for s in scored.iter() {
        transaction_time.push(s.transaction_time);
        entities.push((!s.entities.is_empty()).then(|| {
            Value::Object(
                s.entities
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect(),
            )
        }));
        reason.push(s.decision_reason.as_deref());
        rules.push((!s.rules_matched.is_empty()).then(|| {
            Value::from(
                s.rules_matched
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            )
        }));
        factors.push(
            (!s.risk_factors.is_empty())
                .then(|| serde_json::to_value(&s.risk_factors).unwrap_or(Value::Null)),
        );
        decision.push(s.decision.as_deref());
        fraud.push(s.fraud_probability);
        shadow_model.push(s.shadow.as_ref().map(|v| v.model_version.as_str()));
        shadow_score.push(s.shadow.as_ref().map(|v| v.anomaly_score));
        shadow_anomaly.push(s.shadow.as_ref().map(|v| v.is_anomaly));
        shadow_fraud.push(s.shadow.as_ref().and_then(|v| v.fraud_probability));
        shadow_decision.push(s.shadow.as_ref().and_then(|v| v.decision.as_deref()));
        id.push(s.transaction_id);
        features.push(json_object(&s.features));
        for (column, name) in legacy.iter_mut().zip(LEGACY) {
            column.push(s.features.get(name));
        }
        legacy_id.push(s.legacy_id.map(legacy_db));
        anomaly.push(s.anomaly_score);
        risk.push(s.risk_score);
        is_anomaly.push(s.is_anomaly);
        confidence.push(s.confidence);
        explanation.push(s.explanation.as_ref().map(json_object));
        model.push(s.model_version.as_str());
        edge.push(s.edge_instance.as_deref());
        region.push(s.region.as_deref());
        scored_at.push(s.scored_at);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO transactions (id, features, amount, hour, day_of_week, merchant_category, \
               transaction_type, anomaly_score, risk_score, is_anomaly, confidence, explanation, \
               model_version, edge_instance, region, scored_at, legacy_id, \
               shadow_model_version, shadow_anomaly_score, shadow_is_anomaly, decision, \
               fraud_probability, shadow_fraud_probability, shadow_decision, decision_reason, \
               rules_matched, risk_factors, entities, transaction_time) \
             SELECT * FROM UNNEST($1::uuid[], $2::jsonb[], $3::float8[], $4::float8[], $5::float8[], \
               $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::bool[], $11::float8[], \
               $12::jsonb[], $13::text[], $14::text[], $15::text[], $16::timestamptz[], $17::int8[], \
               $18::text[], $19::float8[], $20::bool[], $21::text[], $22::float8[], $23::float8[], \
               $24::text[], $25::text[], $26::jsonb[], $27::jsonb[], $28::jsonb[], \
               $29::timestamptz[]) \
             ON CONFLICT (id, scored_at) DO NOTHING",
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
            &legacy_id,
            &shadow_model,
            &shadow_score,
            &shadow_anomaly,
            &decision,
            &fraud,
            &shadow_fraud,
            &shadow_decision,
            &reason,
            &rules,
            &factors,
            &entities,
            &transaction_time,
        ],
    )
    .await?;
    Ok(())
}

/// A feature map as the JSONB object the table holds.
fn json_object(map: &FeatureMap) -> Value {
    let mut obj = Map::with_capacity(map.len());
    for (name, value) in &map.0 {
        obj.insert(name.clone(), Value::from(*value));
    }
    Value::Object(obj)
}

/// A legacy id as PostgreSQL's bigint (validation keeps it below 2^53).
fn legacy_db(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// Feedback by legacy id that arrived before its transaction: moved into `feedback` now that
/// transactions carrying those ids are stored (newest transaction per id).
async fn adopt_pending_feedback(
    tx: &deadpool_postgres::Transaction<'_>,
    scored: &[&ScoredTransaction],
) -> Result<(), DbError> {
    let mut ids: Vec<i64> = scored
        .iter()
        .filter_map(|s| s.legacy_id.map(legacy_db))
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    ids.dedup();
    let stmt = tx
        .prepare_cached(
            "WITH moved AS ( \
               DELETE FROM pending_legacy_feedback p WHERE p.legacy_id = ANY($1::int8[]) \
               RETURNING p.* ), \
             target AS ( \
               SELECT DISTINCT ON (m.legacy_id) t.id, m.label, m.comments, m.created_at, m.last_event_id \
               FROM moved m JOIN transactions t ON t.legacy_id = m.legacy_id \
               ORDER BY m.legacy_id, t.scored_at DESC, t.id DESC ) \
             INSERT INTO feedback (transaction_id, label, comments, created_at, last_event_id) \
             SELECT * FROM target ORDER BY id \
             ON CONFLICT (transaction_id) DO UPDATE \
             SET label = EXCLUDED.label, comments = EXCLUDED.comments, \
                 created_at = EXCLUDED.created_at, updated_at = now(), \
                 last_event_id = EXCLUDED.last_event_id, labelled_by = NULL \
             WHERE feedback.created_at <= EXCLUDED.created_at",
        )
        .await?;
    tx.execute(&stmt, &[&ids]).await?;
    Ok(())
}

/// Splits feedback into what names a transaction by UUID (legacy ids resolved to the newest
/// stored transaction carrying them) and legacy-id feedback whose transaction is not stored yet.
async fn resolve_legacy_feedback<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    feedback: Vec<&'a Feedback>,
) -> Result<(Vec<(Uuid, &'a Feedback)>, Vec<(i64, &'a Feedback)>), DbError> {
    let mut by_uuid = Vec::with_capacity(feedback.len());
    let mut unresolved = Vec::new();
    for f in feedback {
        match (f.transaction_id, f.legacy_id) {
            (Some(id), _) => by_uuid.push((id, f)),
            (None, Some(legacy)) => unresolved.push((legacy_db(legacy), f)),
            // Validation requires one of the two.
            (None, None) => {}
        }
    }
    if unresolved.is_empty() {
        return Ok((by_uuid, unresolved));
    }
    let mut ids: Vec<i64> = unresolved.iter().map(|(l, _)| *l).collect();
    ids.sort_unstable();
    ids.dedup();
    let stmt = tx
        .prepare_cached(
            "SELECT DISTINCT ON (legacy_id) legacy_id, id FROM transactions \
             WHERE legacy_id = ANY($1::int8[]) ORDER BY legacy_id, scored_at DESC, id DESC",
        )
        .await?;
    let found: BTreeMap<i64, Uuid> = tx
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut pending = Vec::new();
    for (legacy, f) in unresolved {
        match found.get(&legacy) {
            Some(id) => by_uuid.push((*id, f)),
            None => pending.push((legacy, f)),
        }
    }
    Ok((by_uuid, pending))
}

/// Keeps legacy-id feedback until its transaction arrives (newest `created_at` per id wins).
async fn park_legacy_feedback(
    tx: &deadpool_postgres::Transaction<'_>,
    feedback: Vec<(i64, &Feedback)>,
) -> Result<(), DbError> {
    upsert_newest(
        tx,
        feedback,
        "INSERT INTO pending_legacy_feedback (legacy_id, label, comments, created_at, last_event_id) \
         SELECT * FROM UNNEST($1::int8[], $2::bool[], $3::text[], $4::timestamptz[], $5::uuid[]) \
         ON CONFLICT (legacy_id) DO UPDATE \
         SET label = EXCLUDED.label, comments = EXCLUDED.comments, \
             created_at = EXCLUDED.created_at, last_event_id = EXCLUDED.last_event_id \
         WHERE pending_legacy_feedback.created_at <= EXCLUDED.created_at",
    )
    .await
}

/// Runs the upsert `sql` over the newest feedback per key: `$1` keys, `$2` labels, `$3`
/// comments, `$4` creation times, `$5` event ids.
async fn upsert_newest<K>(
    tx: &deadpool_postgres::Transaction<'_>,
    feedback: Vec<(K, &Feedback)>,
    sql: &str,
) -> Result<(), DbError>
where
    K: Ord + Copy + tokio_postgres::types::ToSql + Sync,
{
    let newest = newest_per_key(feedback);
    let n = newest.len();
    let mut key = Vec::with_capacity(n);
    let mut label = Vec::with_capacity(n);
    let mut comments = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut event = Vec::with_capacity(n);
    for (k, f) in &newest {
        key.push(*k);
        label.push(f.label);
        comments.push(f.comments.as_deref());
        created.push(f.created_at);
        event.push(f.event_id);
    }
    let stmt = tx.prepare_cached(sql).await?;
    tx.execute(&stmt, &[&key, &label, &comments, &created, &event])
        .await?;
    Ok(())
}

/// The newest feedback per key (the upsert cannot touch one row twice); sorted by key so that
/// concurrent batches lock rows in the same order. Ties go to the later one in arrival order.
fn newest_per_key<K: Ord + Copy>(feedback: Vec<(K, &Feedback)>) -> BTreeMap<K, &Feedback> {
    let mut newest: BTreeMap<K, &Feedback> = BTreeMap::new();
    for (key, f) in feedback {
        match newest.get(&key) {
            Some(kept) if kept.created_at > f.created_at => {}
            _ => {
                newest.insert(key, f);
            }
        }
    }
    newest
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
               AND (m.first_seen IS NULL OR v.first_seen < m.first_seen OR v.last_seen > m.last_seen)",
        )
        .await?;
    tx.execute(&widen, &[&names, &first, &last]).await?;
    Ok(())
}

async fn upsert_feedback(
    tx: &deadpool_postgres::Transaction<'_>,
    feedback: Vec<(Uuid, &Feedback)>,
) -> Result<(), DbError> {
    upsert_newest(
        tx,
        feedback,
        "INSERT INTO feedback (transaction_id, label, comments, created_at, last_event_id) \
         SELECT * FROM UNNEST($1::uuid[], $2::bool[], $3::text[], $4::timestamptz[], $5::uuid[]) \
         ON CONFLICT (transaction_id) DO UPDATE \
         SET label = EXCLUDED.label, comments = EXCLUDED.comments, \
             created_at = EXCLUDED.created_at, updated_at = now(), \
             last_event_id = EXCLUDED.last_event_id, labelled_by = NULL \
         WHERE feedback.created_at <= EXCLUDED.created_at",
    )
    .await
}
