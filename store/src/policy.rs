//! The rule policy the edges apply after scoring: `PUT /v1/policy` stores a new revision
//! (checked with the edge's own parser, the `rules` crate, so the store refuses what an edge
//! would), `GET /v1/policy` serves the newest one as TOML with ETag `policy-<revision>` so an
//! edge's refresh is a conditional GET. Edges copy it into their key-value store
//! (`policy/current`); lists change the same way, without a rebuild.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::Store;
use crate::db::DbError;
use crate::http::ApiError;
use crate::registry::{actor, etag, not_modified};

/// The policy routes (mounted behind the bearer-token check).
pub fn routes() -> Router<Store> {
    Router::new().route("/v1/policy", get(current).put(upload))
}

fn tag(revision: i64) -> String {
    format!("policy-{revision}")
}

async fn current(State(store): State<Store>, headers: HeaderMap) -> Result<Response, ApiError> {
    let client = store.pool().get().await.map_err(DbError::from)?;
    let row = client
        .query_opt(
            "SELECT revision, text, signature FROM policies ORDER BY revision DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(DbError::from)?;
    let Some(row) = row else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no policy has been stored (PUT /v1/policy)",
        ));
    };
    let t = tag(row.get("revision"));
    if not_modified(&headers, &t) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(&t))]).into_response());
    }
    let text: String = row.get("text");
    let mut response = (
        [
            (header::ETAG, etag(&t)),
            (
                header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/toml"),
            ),
        ],
        text,
    )
        .into_response();
    // The publisher's signature (checked by the edges), as stored.
    let signature: Option<String> = row.get("signature");
    if let Some(value) = signature.and_then(|s| axum::http::HeaderValue::from_str(&s).ok()) {
        response.headers_mut().insert("x-signature", value);
    }
    Ok(response)
}

async fn upload(
    State(store): State<Store>,
    Extension(caller): Extension<crate::auth::Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let by = actor(&caller, &headers, None)?;
    let signature = crate::registry::signature(&headers)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the policy must be UTF-8 TOML"))?;
    let policy = rules::Policy::from_toml(text)
        .map_err(|e| ApiError::bad_request(format!("not a valid policy: {e}")))?;
    let members: usize = policy.lists().map(|(_, n)| n).sum();
    let client = store.pool().get().await.map_err(DbError::from)?;
    let newest = client
        .query_opt(
            "SELECT revision, text, signature FROM policies ORDER BY revision DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(DbError::from)?;
    // The same text and signature as the newest revision is that revision (a re-run changes
    // nothing); the same text newly signed is a new revision, so edges fetch the signature.
    let (status, revision) = match newest {
        Some(row)
            if row.get::<_, String>("text") == text
                && row.get::<_, Option<String>>("signature") == signature =>
        {
            (StatusCode::OK, row.get("revision"))
        }
        _ => {
            let row = client
                .query_one(
                    "INSERT INTO policies (text, rules, list_members, uploaded_by, note, signature) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING revision",
                    &[
                        &text,
                        &(policy.len() as i32),
                        &(members as i32),
                        &by.name,
                        &by.note,
                        &signature,
                    ],
                )
                .await
                .map_err(DbError::from)?;
            (StatusCode::CREATED, row.get::<_, i64>("revision"))
        }
    };
    let lists: Vec<_> = policy
        .lists()
        .map(|(name, n)| json!({"name": name, "members": n}))
        .collect();
    Ok((
        status,
        [(header::ETAG, etag(&tag(revision)))],
        axum::Json(json!({"revision": revision, "rules": policy.len(), "lists": lists})),
    )
        .into_response())
}
