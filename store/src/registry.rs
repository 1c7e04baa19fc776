//! The model registry: uploads checked with [`contract::models::verify`], the `live` and
//! `shadow` channels every edge follows, and the record of every channel change. Wire types and
//! endpoints: [`contract::models`].
//!
//! A channel change is one transaction: the channel row is locked, changed and the change
//! recorded together, so concurrent changes serialise and the history never disagrees with the
//! channels. The channels' revision (their ETag) is the id of the last change, so an edge's
//! conditional GET is a single index lookup.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, Utc};
use contract::limits::{MAX_NAME_LEN, MODEL_MAX_BYTES};
use contract::models::{
    CHANNELS, ChannelChange, ChannelHistory, Channels, Comparison, DecisionComparison,
    DecisionRates, Disagreement, Drift, DriftWindow, FraudComparison, HISTOGRAM_BINS, ModelList,
    ModelVersion, ScoreHistogram, SetChannel, Target, Uploaded, population_stability_index,
};
use deadpool_postgres::Pool;
use serde_json::Value;

use crate::Store;
use crate::auth::Caller;
use crate::db::DbError;
use crate::http::ApiError;

/// The registry's routes (mounted behind the bearer-token check).
pub fn routes() -> Router<Store> {
    Router::new()
        .route("/v1/models", post(upload).get(list))
        .route("/v1/models/channels", get(channels))
        .route("/v1/models/channels/history", get(history))
        .route("/v1/models/compare", get(compare))
        .route("/v1/models/channels/{channel}", put(set_channel))
        .route("/v1/models/channels/{channel}/rollback", post(rollback))
        .route("/v1/models/{version}", get(one))
        .route("/v1/models/{version}/file", get(file))
        .route("/v1/models/{version}/drift", get(drift_endpoint))
}

/// The `X-Signature` header: kept as sent (the store trusts no keys; edges judge it), but
/// bounded and printable.
pub(crate) fn signature(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("x-signature") else {
        return Ok(None);
    };
    match raw.to_str() {
        Ok(text) if text.len() <= 512 && !text.trim().is_empty() => {
            Ok(Some(text.trim().to_string()))
        }
        _ => Err(ApiError::bad_request(
            "X-Signature must be 1 to 512 characters of text (ed25519:<key hex>:<signature hex>)",
        )),
    }
}

/// Who did a change: the token's name (authenticated), and what the caller said about itself
/// (`actor` in the body, else the `X-Actor` header), kept only as a note.
pub(crate) struct Actor {
    pub name: String,
    pub note: Option<String>,
}

pub(crate) fn actor(
    caller: &Caller,
    headers: &HeaderMap,
    body: Option<&str>,
) -> Result<Actor, ApiError> {
    let from_header = headers.get("x-actor").and_then(|v| v.to_str().ok());
    let note = body.or(from_header).map(str::trim);
    if let Some(note) = note
        && (note.is_empty() || note.len() > MAX_NAME_LEN || note.contains('\0'))
    {
        return Err(ApiError::bad_request(format!(
            "actor must be 1 to {MAX_NAME_LEN} bytes of text"
        )));
    }
    Ok(Actor {
        name: caller.name.clone(),
        note: note.filter(|n| *n != caller.name).map(str::to_string),
    })
}

fn channel_name(raw: &str) -> Result<&'static str, ApiError> {
    CHANNELS.iter().copied().find(|c| *c == raw).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no channel {raw:?}; channels are live and shadow"),
        )
    })
}

pub(crate) fn etag(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{value}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether `If-None-Match` lists `value` (or `*`).
pub(crate) fn not_modified(headers: &HeaderMap, value: &str) -> bool {
    let Some(raw) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    raw.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == value)
}

/// The channels' ETag: their revision, and the signatures they carry (a model re-signed
/// without a channel change is still news to the edges). Stable across store replicas.
fn channels_tag(channels: &Channels) -> String {
    use sha2::{Digest, Sha256};
    let signatures: Vec<&str> = [&channels.live, &channels.shadow]
        .into_iter()
        .map(|t| {
            t.as_ref()
                .and_then(|t| t.signature.as_deref())
                .unwrap_or("-")
        })
        .collect();
    // Unsigned channels keep the plain revision tag.
    if signatures.iter().all(|s| *s == "-") {
        return revision_tag(channels.revision);
    }
    let digest = Sha256::digest(signatures.join("\n").as_bytes());
    format!(
        "{}-{}",
        revision_tag(channels.revision),
        hex::encode(&digest[..4])
    )
}

fn revision_tag(revision: i64) -> String {
    format!("rev-{revision}")
}

async fn upload(
    State(store): State<Store>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, MODEL_MAX_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a model file may be at most {MODEL_MAX_BYTES} bytes"),
            )
        })?;
    let actor = actor(&caller, &headers, None)?;
    let signature = signature(&headers)?;
    // Decoding and the sample explanation take milliseconds: off the async workers.
    let check = bytes.clone();
    let verified = tokio::task::spawn_blocking(move || contract::models::verify(&check, None))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_model", e.to_string()))?;
    let version = verified.id.version();
    let checksum = verified.checksum();
    let features = serde_json::to_value(verified.model.features()).unwrap_or(Value::Null);
    let metadata: BTreeMap<&str, &str> = verified
        .model
        .metadata()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let metadata = serde_json::to_value(metadata).unwrap_or(Value::Null);
    let quantiles: Option<Vec<f64>> = verified.model.score_distribution().map(<[f64]>::to_vec);
    let mut client = store.pool().get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    tx.execute(
        "INSERT INTO model_versions (model_version) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&version],
    )
    .await
    .map_err(DbError::from)?;
    let inserted = tx
        .execute(
            "INSERT INTO model_files (model_version, checksum, bytes, features, metadata, \
               score_quantiles, uploaded_by, upload_note, signature) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            &[
                &version,
                &checksum,
                &bytes.as_ref(),
                &features,
                &metadata,
                &quantiles,
                &actor.name,
                &actor.note,
                &signature,
            ],
        )
        .await
        .map_err(DbError::from)?;
    if inserted == 0 {
        let row = tx
            .query_one(
                "SELECT bytes FROM model_files WHERE model_version = $1",
                &[&version],
            )
            .await
            .map_err(DbError::from)?;
        let existing: &[u8] = row.get(0);
        if existing != bytes.as_ref() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{version} is registered with other bytes (a checksum collision)"),
            ));
        } // The same bytes signed (again, or by another key): the new signature is the one
        // edges get. Without one, the stored signature stays.
        if signature.is_some() {
            tx.execute(
                "UPDATE model_files SET signature = $2 WHERE model_version = $1",
                &[&version, &signature],
            )
            .await
            .map_err(DbError::from)?;
        }
    }
    tx.commit().await.map_err(DbError::from)?;
    let created = inserted == 1;
    if created {
        tracing::info!(%version, actor = %actor.name, note = ?actor.note, size = bytes.len(), "model registered");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(Uploaded {
            version,
            checksum,
            created,
        }),
    )
        .into_response())
}

/// The channels as they are now.
pub async fn current_channels(pool: &Pool) -> Result<Channels, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT c.channel, c.model_version, f.checksum, c.changed_at, \
               (SELECT COALESCE(max(id), 0) FROM model_channel_changes), f.signature \
             FROM model_channels c LEFT JOIN model_files f USING (model_version)",
            &[],
        )
        .await?;
    let mut channels = Channels {
        live: None,
        shadow: None,
        revision: 0,
        changed_at: None,
    };
    for row in rows {
        let channel: String = row.get(0);
        let target = row.get::<_, Option<String>>(1).map(|version| Target {
            version,
            checksum: row.get::<_, Option<String>>(2).unwrap_or_default(),
            signature: row.get(5),
        });
        let changed_at: Option<DateTime<Utc>> = row.get(3);
        channels.revision = row.get(4);
        channels.changed_at = channels.changed_at.max(changed_at);
        match channel.as_str() {
            "live" => channels.live = target,
            _ => channels.shadow = target,
        }
    }
    Ok(channels)
}

async fn channels(State(store): State<Store>, headers: HeaderMap) -> Result<Response, ApiError> {
    let channels = current_channels(store.pool()).await?;
    let tag = channels_tag(&channels);
    if not_modified(&headers, &tag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(&tag))]).into_response());
    }
    Ok(([(header::ETAG, etag(&tag))], axum::Json(channels)).into_response())
}

fn model_version(row: &tokio_postgres::Row, channels: &Channels) -> ModelVersion {
    let version: String = row.get("model_version");
    let mut on = Vec::new();
    if channels.live.as_ref().is_some_and(|t| t.version == version) {
        on.push("live".to_string());
    }
    if channels
        .shadow
        .as_ref()
        .is_some_and(|t| t.version == version)
    {
        on.push("shadow".to_string());
    }
    let features: Value = row.get("features");
    let metadata: Value = row.get("metadata");
    ModelVersion {
        checksum: row.get("checksum"),
        size_bytes: row.get("size_bytes"),
        features: serde_json::from_value(features).unwrap_or_default(),
        metadata: serde_json::from_value(metadata).unwrap_or_default(),
        uploaded_at: row.get("uploaded_at"),
        uploaded_by: row.get("uploaded_by"),
        upload_note: row.get("upload_note"),
        first_seen: row.get("first_seen"),
        last_seen: row.get("last_seen"),
        channels: on,
        version,
    }
}

const VERSION_COLUMNS: &str = "f.model_version, f.checksum, octet_length(f.bytes)::int8 AS size_bytes, \
     f.features, f.metadata, f.uploaded_at, f.uploaded_by, f.upload_note, v.first_seen, v.last_seen \
     FROM model_files f JOIN model_versions v USING (model_version)";

async fn list(State(store): State<Store>) -> Result<Response, ApiError> {
    let channels = current_channels(store.pool()).await?;
    let client = store.pool().get().await.map_err(DbError::from)?;
    let rows = client
        .query(
            &format!("SELECT {VERSION_COLUMNS} ORDER BY f.uploaded_at DESC, f.model_version"),
            &[],
        )
        .await
        .map_err(DbError::from)?;
    let models = rows.iter().map(|r| model_version(r, &channels)).collect();
    Ok(axum::Json(ModelList { models, channels }).into_response())
}

fn no_such_version(version: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no model {version:?} in the registry"),
    )
}

async fn one(
    State(store): State<Store>,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let channels = current_channels(store.pool()).await?;
    let client = store.pool().get().await.map_err(DbError::from)?;
    let row = client
        .query_opt(
            &format!("SELECT {VERSION_COLUMNS} WHERE f.model_version = $1"),
            &[&version],
        )
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| no_such_version(&version))?;
    Ok(axum::Json(model_version(&row, &channels)).into_response())
}

async fn file(
    State(store): State<Store>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let client = store.pool().get().await.map_err(DbError::from)?;
    let row = client
        .query_opt(
            "SELECT checksum, bytes, signature FROM model_files WHERE model_version = $1",
            &[&version],
        )
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| no_such_version(&version))?;
    let checksum: String = row.get(0);
    if not_modified(&headers, &checksum) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(&checksum))]).into_response());
    }
    let bytes: Vec<u8> = row.get(1);
    let mut response = (
        [
            (header::ETAG, etag(&checksum)),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
        ],
        Bytes::from(bytes),
    )
        .into_response();
    // The publisher's signature, as uploaded: the edges check it.
    let signature: Option<String> = row.get(2);
    if let Some(value) = signature.and_then(|s| HeaderValue::from_str(&s).ok()) {
        response.headers_mut().insert("x-signature", value);
    }
    Ok(response)
}

/// Points `channel` at `to` (None clears it) as one recorded change; returns the channels.
async fn change(
    pool: &Pool,
    channel: &str,
    to: Option<&str>,
    actor: &Actor,
    action: &str,
) -> Result<Result<Channels, ApiError>, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let from: Option<String> = tx
        .query_one(
            "SELECT model_version FROM model_channels WHERE channel = $1 FOR UPDATE",
            &[&channel],
        )
        .await?
        .get(0);
    if let Some(to) = to {
        let known = tx
            .query_opt("SELECT 1 FROM model_files WHERE model_version = $1", &[&to])
            .await?;
        if known.is_none() {
            return Ok(Err(no_such_version(to)));
        }
    }
    if from.as_deref() != to {
        tx.execute(
            "UPDATE model_channels SET model_version = $2, changed_at = now() WHERE channel = $1",
            &[&channel, &to],
        )
        .await?;
        tx.execute(
            "INSERT INTO model_channel_changes \
               (channel, from_version, to_version, changed_by, action, note) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&channel, &from, &to, &actor.name, &action, &actor.note],
        )
        .await?;
        tracing::info!(channel, from = ?from, to = ?to, actor = actor.name, note = ?actor.note,
            action, "model channel changed");
    }
    tx.commit().await?;
    Ok(Ok(current_channels(pool).await?))
}

async fn set_channel(
    State(store): State<Store>,
    Extension(caller): Extension<Caller>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let channel = channel_name(&channel)?;
    let request: SetChannel = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"version\": \"if1-…\" or null, \"actor\"?: \"…\"}}: {e}"
        ))
    })?;
    let actor = actor(&caller, &headers, request.actor.as_deref())?;
    let channels = change(
        store.pool(),
        channel,
        request.version.as_deref(),
        &actor,
        "set",
    )
    .await??;
    Ok(axum::Json(channels).into_response())
}

async fn rollback(
    State(store): State<Store>,
    Extension(caller): Extension<Caller>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let channel = channel_name(&channel)?;
    let actor = actor(&caller, &headers, None)?;
    let client = store.pool().get().await.map_err(DbError::from)?;
    let last = client
        .query_opt(
            "SELECT from_version, to_version FROM model_channel_changes \
             WHERE channel = $1 ORDER BY id DESC LIMIT 1",
            &[&channel],
        )
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("channel {channel} was never changed: nothing to roll back"),
            )
        })?;
    drop(client);
    let back: Option<String> = last.get(0);
    let channels = change(store.pool(), channel, back.as_deref(), &actor, "rollback").await??;
    Ok(axum::Json(channels).into_response())
}

async fn history(State(store): State<Store>) -> Result<Response, ApiError> {
    let client = store.pool().get().await.map_err(DbError::from)?;
    let rows = client
        .query(
            "SELECT id, channel, from_version, to_version, changed_at, changed_by, action, note \
             FROM model_channel_changes ORDER BY id DESC LIMIT 1000",
            &[],
        )
        .await
        .map_err(DbError::from)?;
    let changes = rows
        .iter()
        .map(|r| ChannelChange {
            id: r.get(0),
            channel: r.get(1),
            from: r.get(2),
            to: r.get(3),
            changed_at: r.get(4),
            changed_by: r.get(5),
            action: r.get(6),
            note: r.get(7),
        })
        .collect();
    Ok(axum::Json(ChannelHistory { changes }).into_response())
}

/// Most disagreements a comparison lists.
const MAX_DISAGREEMENTS: i64 = 20;

/// `live` and `shadow` on the transactions both scored since `since`.
pub async fn comparison(
    pool: &Pool,
    live: &str,
    shadow: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Comparison, DbError> {
    let client = pool.get().await?;
    // Ranks with ties at their mean rank (Spearman), as percentiles for the gaps; the fraud
    // probabilities ranked among the rows that have both.
    let ranked = "WITH pairs AS ( \
           SELECT id, scored_at, anomaly_score AS a, shadow_anomaly_score AS b, \
                  is_anomaly AS x, shadow_is_anomaly AS y, decision AS d, shadow_decision AS e, \
                  fraud_probability AS p, shadow_fraud_probability AS q, \
                  (decision IS NOT NULL AND shadow_decision IS NOT NULL) AS de, \
                  (fraud_probability IS NOT NULL AND shadow_fraud_probability IS NOT NULL) AS pq \
           FROM transactions \
           WHERE model_version = $1 AND shadow_model_version = $2 \
             AND shadow_anomaly_score IS NOT NULL \
             AND ($3::timestamptz IS NULL OR scored_at >= $3)), \
         ranked AS ( \
           SELECT *, \
             rank() OVER (ORDER BY a) + (count(*) OVER (PARTITION BY a) - 1) / 2.0 AS ra, \
             rank() OVER (ORDER BY b) + (count(*) OVER (PARTITION BY b) - 1) / 2.0 AS rb, \
             rank() OVER (PARTITION BY pq ORDER BY p) \
               + (count(*) OVER (PARTITION BY pq, p) - 1) / 2.0 AS rp, \
             rank() OVER (PARTITION BY pq ORDER BY q) \
               + (count(*) OVER (PARTITION BY pq, q) - 1) / 2.0 AS rq, \
             count(*) OVER () AS n \
           FROM pairs)";
    let share = |column: &str, value: &str| {
        format!("COALESCE(avg(({column} = '{value}')::int) FILTER (WHERE de), 0)::float8")
    };
    let summary = client
        .query_one(
            &format!(
                "{ranked} SELECT count(*), COALESCE(avg(x::int), 0)::float8, \
                   COALESCE(avg(y::int), 0)::float8, COALESCE(avg((x = y)::int), 0)::float8, \
                   corr(ra::float8, rb::float8), \
                   count(*) FILTER (WHERE de), {}, {}, {}, {}, {}, {}, \
                   COALESCE(avg((d = e)::int) FILTER (WHERE de), 0)::float8, \
                   count(*) FILTER (WHERE pq), COALESCE(avg(p) FILTER (WHERE pq), 0)::float8, \
                   COALESCE(avg(q) FILTER (WHERE pq), 0)::float8, \
                   corr(rp::float8, rq::float8) FILTER (WHERE pq) \
                 FROM ranked",
                share("d", "block"),
                share("d", "review"),
                share("d", "allow"),
                share("e", "block"),
                share("e", "review"),
                share("e", "allow"),
            ),
            &[&live, &shadow, &since],
        )
        .await?;
    let rows = client
        .query(
            &format!(
                "{ranked} SELECT id, scored_at, a, x, b, y, \
                   (abs(ra - rb) / GREATEST(n - 1, 1))::float8 AS gap, p, q, d, e \
                 FROM ranked ORDER BY gap DESC, id LIMIT $4"
            ),
            &[&live, &shadow, &since, &MAX_DISAGREEMENTS],
        )
        .await?;
    let correlation: Option<f64> = summary.get(4);
    let with_decisions: i64 = summary.get(5);
    let with_probabilities: i64 = summary.get(13);
    let fraud_correlation: Option<f64> = summary.get(16);
    let score_histogram = histogram(&client, live, shadow, since).await?;
    Ok(Comparison {
        live: live.to_string(),
        shadow: shadow.to_string(),
        transactions: summary.get(0),
        live_alert_rate: summary.get(1),
        shadow_alert_rate: summary.get(2),
        agreement: summary.get(3),
        rank_correlation: correlation.filter(|c| c.is_finite()),
        disagreements: rows
            .iter()
            .map(|r| Disagreement {
                transaction_id: r.get(0),
                scored_at: r.get(1),
                live_score: r.get(2),
                live_is_anomaly: r.get(3),
                shadow_score: r.get(4),
                shadow_is_anomaly: r.get(5),
                rank_gap: r.get(6),
                live_fraud_probability: r.get(7),
                shadow_fraud_probability: r.get(8),
                live_decision: r.get(9),
                shadow_decision: r.get(10),
            })
            .collect(),
        decisions: (with_decisions > 0).then(|| DecisionComparison {
            transactions: with_decisions,
            live: DecisionRates {
                block: summary.get(6),
                review: summary.get(7),
                allow: summary.get(8),
            },
            shadow: DecisionRates {
                block: summary.get(9),
                review: summary.get(10),
                allow: summary.get(11),
            },
            agreement: summary.get(12),
        }),
        fraud_probability: (with_probabilities > 0).then(|| FraudComparison {
            transactions: with_probabilities,
            live_mean: summary.get(14),
            shadow_mean: summary.get(15),
            rank_correlation: fraud_correlation.filter(|c| c.is_finite()),
        }),
        score_histogram,
    })
}

/// Both models' anomaly scores on [`HISTOGRAM_BINS`] equal bins spanning the two together.
async fn histogram(
    client: &deadpool_postgres::Object,
    live: &str,
    shadow: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Option<ScoreHistogram>, DbError> {
    let stmt = client
        .prepare_cached(
            "WITH p AS ( \
               SELECT anomaly_score AS a, shadow_anomaly_score AS b FROM transactions \
               WHERE model_version = $1 AND shadow_model_version = $2 \
                 AND shadow_anomaly_score IS NOT NULL \
                 AND ($3::timestamptz IS NULL OR scored_at >= $3)), \
             r AS (SELECT least(min(a), min(b)) AS lo, greatest(max(a), max(b)) AS hi FROM p) \
             SELECT r.lo, r.hi, k.side, least(width_bucket(k.v, r.lo, r.hi, $4), $4) AS bin, \
                    count(*) \
             FROM p CROSS JOIN r CROSS JOIN LATERAL (VALUES (0, p.a), (1, p.b)) AS k(side, v) \
             WHERE r.hi > r.lo \
             GROUP BY r.lo, r.hi, k.side, bin",
        )
        .await?;
    let bins = HISTOGRAM_BINS as i32;
    let rows = client
        .query(&stmt, &[&live, &shadow, &since, &bins])
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let (lo, hi): (f64, f64) = (first.get(0), first.get(1));
    let mut out = ScoreHistogram {
        edges: (0..=HISTOGRAM_BINS)
            .map(|i| lo + (hi - lo) * i as f64 / HISTOGRAM_BINS as f64)
            .collect(),
        live: vec![0; HISTOGRAM_BINS],
        shadow: vec![0; HISTOGRAM_BINS],
    };
    for r in &rows {
        let side: i32 = r.get(2);
        let bin: i32 = r.get(3);
        let count: i64 = r.get(4);
        let Some(i) = usize::try_from(bin - 1)
            .ok()
            .filter(|&i| i < HISTOGRAM_BINS)
        else {
            continue;
        };
        if side == 0 {
            out.live[i] += count;
        } else {
            out.shadow[i] += count;
        }
    }
    Ok(Some(out))
}

/// The dashboard's comparison: the current channels' pair since `since`, while a shadow is set.
pub async fn current_comparison(
    pool: &Pool,
    since: DateTime<Utc>,
) -> Result<Option<Comparison>, DbError> {
    let channels = current_channels(pool).await?;
    let (Some(live), Some(shadow)) = (channels.live, channels.shadow) else {
        return Ok(None);
    };
    Ok(Some(
        comparison(pool, &live.version, &shadow.version, Some(since)).await?,
    ))
}

async fn compare(
    State(store): State<Store>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (Some(live), Some(shadow)) = (params.get("live"), params.get("shadow")) else {
        return Err(ApiError::bad_request(
            "give both models: /v1/models/compare?live=VERSION&shadow=VERSION",
        ));
    };
    let since = crate::http::time_param(&params, "since")?;
    Ok(axum::Json(comparison(store.pool(), live, shadow, since).await?).into_response())
}

/// Longest drift window, in hours (30 days).
pub const MAX_DRIFT_HOURS: i64 = 720;

/// `version`'s live scores in the last `hours` hours against its training distribution; None
/// when the registry does not hold `version`.
pub async fn drift(pool: &Pool, version: &str, hours: i64) -> Result<Option<Drift>, DbError> {
    let client = pool.get().await?;
    let Some(row) = client
        .query_opt(
            "SELECT score_quantiles FROM model_files WHERE model_version = $1",
            &[&version],
        )
        .await?
    else {
        return Ok(None);
    };
    let quantiles: Option<Vec<f64>> = row.get(0);
    // Inner edges: bin i holds scores in [q_i, q_i+1); below q_1 is bin 0, from q_(k-1) on the
    // last bin (width_bucket counts the edges at or below the score).
    let edges: Vec<f64> = quantiles
        .as_deref()
        .filter(|q| q.len() >= 2)
        .map(|q| q[1..q.len() - 1].to_vec())
        .unwrap_or_default();
    let bins = edges.len() + 1;
    let rows = client
        .query(
            "SELECT date_trunc('hour', scored_at) AS h, \
               CASE WHEN cardinality($3::float8[]) = 0 THEN 0 \
                    ELSE width_bucket(anomaly_score, $3::float8[]) END AS b, \
               count(*), count(*) FILTER (WHERE is_anomaly) \
             FROM transactions \
             WHERE model_version = $1 AND scored_at >= now() - make_interval(hours => $2::int) \
             GROUP BY 1, 2 ORDER BY 1 DESC",
            &[&version, &(hours as i32), &edges],
        )
        .await?;
    let mut by_hour: Vec<(DateTime<Utc>, Vec<i64>, i64)> = Vec::new();
    let mut all = (vec![0i64; bins], 0i64);
    for r in &rows {
        let hour: DateTime<Utc> = r.get(0);
        let bin = (r.get::<_, i32>(1).max(0) as usize).min(bins - 1);
        let (n, alerts): (i64, i64) = (r.get(2), r.get(3));
        if by_hour.last().is_none_or(|(h, _, _)| *h != hour) {
            by_hour.push((hour, vec![0; bins], 0));
        }
        let (_, counts, a) = by_hour.last_mut().expect("pushed above");
        counts[bin] += n;
        *a += alerts;
        all.0[bin] += n;
        all.1 += alerts;
    }
    let window = |hour, counts: &[i64], alerts: i64| {
        let n: i64 = counts.iter().sum();
        DriftWindow {
            hour,
            transactions: n,
            alert_rate: if n == 0 {
                0.0
            } else {
                alerts as f64 / n as f64
            },
            psi: quantiles
                .as_ref()
                .and_then(|_| population_stability_index(counts)),
        }
    };
    Ok(Some(Drift {
        version: version.to_string(),
        overall: window(None, &all.0, all.1),
        hours: by_hour
            .iter()
            .map(|(h, counts, alerts)| window(Some(*h), counts, *alerts))
            .collect(),
        training_quantiles: quantiles,
    }))
}

async fn drift_endpoint(
    State(store): State<Store>,
    Path(version): Path<String>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let hours = match params.get("hours") {
        None => 24,
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(h) if (1..=MAX_DRIFT_HOURS).contains(&h) => h,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`hours` must be an integer from 1 to {MAX_DRIFT_HOURS}"
                )));
            }
        },
    };
    match drift(store.pool(), &version, hours).await? {
        Some(d) => Ok(axum::Json(d).into_response()),
        None => Err(no_such_version(&version)),
    }
}

/// Sets the drift gauges (last hour) for the models the channels point at, before a scrape.
pub async fn refresh_drift_gauges(store: &Store) -> Result<(), DbError> {
    let channels = current_channels(store.pool()).await?;
    let metrics = &store.inner_metrics();
    metrics.model_psi.reset();
    metrics.model_alert_rate.reset();
    for (channel, target) in [("live", channels.live), ("shadow", channels.shadow)] {
        let Some(target) = target else { continue };
        if let Some(d) = drift(store.pool(), &target.version, 1).await? {
            let labels = [target.version.as_str(), channel];
            if let Some(psi) = d.overall.psi {
                metrics.model_psi.with_label_values(&labels).set(psi);
            }
            metrics
                .model_alert_rate
                .with_label_values(&labels)
                .set(d.overall.alert_rate);
        }
    }
    Ok(())
}
