//! Routes, authentication, request limits, error responses and request metrics.

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::Store;
use crate::auth;
use crate::db::DbError;
use crate::ingest;
use crate::query::{self, ExportFormat};
use contract::BatchError;

/// An error response: `{"error": message}` with `status`; `kind` labels `store_errors_total`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation", message)
    }
}

/// Marks a response as an error of some kind, for the metrics middleware.
#[derive(Clone, Copy)]
struct ErrorKind(&'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Clients (the edge's forwarder) should come back soon, not give up.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(ErrorKind(self.kind));
        response
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match &e {
            DbError::Unavailable(_) | DbError::Conflict(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.kind(),
                    "database unavailable, retry later",
                )
            }
            DbError::Invalid(_) => {
                tracing::warn!(error = %e, "database refused a value");
                ApiError::new(StatusCode::BAD_REQUEST, e.kind(), e.to_string())
            }
            DbError::Other(_) | DbError::MissingPartition(_) => {
                tracing::error!(error = %e, "database error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.kind(),
                    "internal database error",
                )
            }
        }
    }
}

/// A refused batch: 400 with the wire's [`contract::IngestRejection`] (the first bad event's
/// index and field, so the sender can drop just that event).
struct Rejected(BatchError);

impl From<BatchError> for Rejected {
    fn from(e: BatchError) -> Self {
        Rejected(e)
    }
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        let mut response =
            (StatusCode::BAD_REQUEST, axum::Json(self.0.rejection())).into_response();
        response.extensions_mut().insert(ErrorKind("validation"));
        response
    }
}

/// Either kind of failure of `POST /v1/events`.
enum IngestFailure {
    Api(ApiError),
    Rejected(Rejected),
}

impl From<ApiError> for IngestFailure {
    fn from(e: ApiError) -> Self {
        IngestFailure::Api(e)
    }
}

impl From<DbError> for IngestFailure {
    fn from(e: DbError) -> Self {
        IngestFailure::Api(e.into())
    }
}

impl From<BatchError> for IngestFailure {
    fn from(e: BatchError) -> Self {
        IngestFailure::Rejected(Rejected(e))
    }
}

impl IntoResponse for IngestFailure {
    fn into_response(self) -> Response {
        match self {
            IngestFailure::Api(e) => e.into_response(),
            IngestFailure::Rejected(r) => r.into_response(),
        }
    }
}

pub fn router(store: Store) -> Router {
    let api = Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/dashboard", get(get_dashboard))
        .route("/v1/transactions", get(get_transactions))
        .route("/v1/feedback/export", get(get_export))
        .merge(crate::registry::routes())
        .merge(crate::policy::routes())
        .merge(crate::review::routes())
        .route_layer(middleware::from_fn_with_state(store.clone(), require_token));
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::console::routes())
        .merge(api)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(middleware::from_fn_with_state(store.clone(), track))
        .with_state(store)
}

/// Request latency and error counts for every route.
async fn track(State(store): State<Store>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status();
    let metrics = &store.inner.metrics;
    metrics
        .request_duration
        .with_label_values(&[method.as_str(), &route, status.as_str()])
        .observe(start.elapsed().as_secs_f64());
    if let Some(ErrorKind(kind)) = response.extensions().get::<ErrorKind>() {
        metrics.error(kind);
    }
    tracing::debug!(%method, route, status = status.as_u16(), elapsed_ms = start.elapsed().as_secs_f64() * 1e3, "request");
    response
}

/// Authentication and authorisation (see [`crate::auth`]), then the schema-ready gate: 401 for
/// a missing or unknown token, 403 naming the role the route needs. The caller goes into the
/// request's extensions, for the handlers that record who changed what.
async fn require_token(State(store): State<Store>, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme name is case-insensitive (RFC 9110).
        .and_then(|v| {
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| &v[7..])
        })
        .map(str::trim);
    let Some(caller) = presented.and_then(|t| store.tokens().caller(t)) else {
        return refuse(
            request,
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "auth",
                "missing or invalid bearer token",
            ),
            ANONYMOUS_DRAIN_BYTES,
        )
        .await;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str());
    let needed = auth::allowed(request.method(), route);
    if !caller.may(needed) {
        let message = format!(
            "the token {} (role {}) may not {} {route}: that needs the role {}",
            caller.name,
            caller.role,
            request.method(),
            needed.roles()
        );
        tracing::warn!(token = %caller.name, role = %caller.role, method = %request.method(), route, "forbidden");
        return refuse(
            request,
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            contract::limits::MODEL_MAX_BYTES.max(contract::limits::INGEST_MAX_BODY_BYTES),
        )
        .await;
    }
    if !store.is_migrated() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "database not ready (schema migrations pending), retry later",
        )
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// What an unknown caller's refused request may make the store read: enough for a policy or
/// an event batch with a mistyped token to get its 401, not a free 16 MiB read per request.
const ANONYMOUS_DRAIN_BYTES: usize = 1 << 20;

/// Answers `error` after reading (and dropping) what the client is still sending, up to `most`
/// bytes: a server that answers mid-upload and closes makes the client see a broken pipe
/// instead of the 401/403 that says what to fix. A known token's 403 reads up to the largest
/// body any route takes; an unknown caller's 401 up to [`ANONYMOUS_DRAIN_BYTES`].
async fn refuse(request: Request, error: ApiError, most: usize) -> Response {
    let _ = axum::body::to_bytes(request.into_body(), most).await;
    error.into_response()
}

async fn readyz(State(store): State<Store>) -> Response {
    if !store.is_migrated() {
        let body = json!({ "status": "not ready", "reason": "schema migrations not applied yet (database unreachable?)" });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let check = async {
        let client = store.inner.pool.get().await.map_err(DbError::from)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(DbError::from)?;
        Ok::<_, DbError>(())
    };
    match check.await {
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            let body = json!({ "status": "not ready", "reason": e.to_string() });
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

async fn metrics(State(store): State<Store>) -> Response {
    // Drift gauges come from the database; without it the other metrics are still served.
    if store.is_migrated()
        && let Err(e) = crate::registry::refresh_drift_gauges(&store).await
    {
        tracing::warn!(error = %e, "drift gauges not refreshed");
    }
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    (
        [(header::CONTENT_TYPE, content_type)],
        store.inner.metrics.render(),
    )
        .into_response()
}

/// Bodies larger than this are parsed on the blocking thread pool.
const PARSE_INLINE_MAX_BYTES: usize = 256 * 1024;

async fn post_events(
    State(store): State<Store>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestFailure> {
    let limit = store.inner.config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body larger than {limit} bytes; send smaller batches"),
        )
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let ndjson = match content_type.as_deref() {
        Some("application/json") => false,
        Some("application/x-ndjson") => true,
        _ => {
            return Err(IngestFailure::Api(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "content-type must be application/json (an array of events) or application/x-ndjson",
            )));
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large().into());
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let over = std::error::Error::source(&e).is_some_and(
                <dyn std::error::Error + 'static>::is::<http_body_util::LengthLimitError>,
            );
            return Err(if over {
                too_large()
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            }
            .into());
        }
    };
    let max_events = store.inner.config.max_batch_events;
    let size = bytes.len();
    let parse = move || {
        if ndjson {
            contract::parse_ndjson(&bytes, max_events)
        } else {
            contract::parse_json_array(&bytes, max_events)
        }
    };
    // Parsing a multi-megabyte body takes milliseconds: keep it off the async workers.
    let events = if size > PARSE_INLINE_MAX_BYTES {
        tokio::task::spawn_blocking(parse).await.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??
    } else {
        parse()?
    };
    let outcome = ingest::write_batch(&store.inner.pool, &store.inner.partitions, &events).await?;
    let m = &store.inner.metrics;
    m.batch_size.observe(events.len() as f64);
    m.events_ingested
        .with_label_values(&["scored_transaction"])
        .inc_by(outcome.scored as u64);
    m.events_ingested
        .with_label_values(&["feedback"])
        .inc_by(outcome.feedback as u64);
    m.events_duplicate
        .with_label_values(&["scored_transaction"])
        .inc_by(outcome.duplicate_scored as u64);
    m.events_duplicate
        .with_label_values(&["feedback"])
        .inc_by(outcome.duplicate_feedback as u64);
    tracing::debug!(
        events = events.len(),
        accepted = outcome.accepted(),
        duplicates = outcome.duplicates,
        "batch ingested"
    );
    Ok(axum::Json(contract::IngestAnswer {
        accepted: outcome.accepted(),
        duplicates: outcome.duplicates,
    })
    .into_response())
}

async fn get_dashboard(State(store): State<Store>) -> Result<Response, ApiError> {
    Ok(axum::Json(query::dashboard(&store.inner.pool).await?).into_response())
}

/// Largest accepted `page` (keeps OFFSET arithmetic far from overflow).
const MAX_PAGE: i64 = 1_000_000;
pub const MAX_PER_PAGE: i64 = 100;

fn int_param(
    params: &HashMap<String, String>,
    name: &str,
    default: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(v) if (1..=max).contains(&v) => Ok(v),
            _ => Err(ApiError::bad_request(format!(
                "`{name}` must be an integer from 1 to {max}"
            ))),
        },
    }
}

async fn get_transactions(
    State(store): State<Store>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let per_page = int_param(&params, "per_page", 20, MAX_PER_PAGE)?;
    let at = match params.get("cursor") {
        Some(_) if params.contains_key("page") => {
            return Err(ApiError::bad_request(
                "`page` and `cursor` are exclusive: a cursor already says where the page starts",
            ));
        }
        Some(raw) => query::PageAt::After(
            raw.parse()
                .map_err(|e: &str| ApiError::bad_request(format!("`cursor` is {e}")))?,
        ),
        None => query::PageAt::Number(int_param(&params, "page", 1, MAX_PAGE)?),
    };
    Ok(axum::Json(query::transactions(&store.inner.pool, at, per_page).await?).into_response())
}

pub(crate) fn time_param(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    params
        .get(name)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(format!("`{name}` must be an RFC 3339 timestamp"))
                })
        })
        .transpose()
}

async fn get_export(
    State(store): State<Store>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let since = time_param(&params, "since")?;
    let until = time_param(&params, "until")?;
    let format = match params.get("format").map(String::as_str) {
        None | Some("csv") => ExportFormat::Csv,
        Some("ndjson") => ExportFormat::Ndjson,
        Some(_) => return Err(ApiError::bad_request("`format` must be csv or ndjson")),
    };
    let history = match params.get("history").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("`history` must be true or false")),
    };
    let mut chunks = query::export(&store.inner.pool, since, until, format, history).await?;
    let stream = futures::stream::poll_fn(move |cx| chunks.poll_recv(cx));
    let (content_type, file) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "feedback.csv"),
        ExportFormat::Ndjson => ("application/x-ndjson", "feedback.ndjson"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
