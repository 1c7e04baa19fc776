//! `GET /api/dashboard` and `GET /api/transactions`: read from the central store.

use http::{Response, StatusCode};
use serde_json::Value;

use crate::host::Host;
use crate::response::{ApiError, json};
use crate::settings::StoreConfig;

/// How long a dashboard fetched from the store is served from the instance's cache.
pub(crate) const DASHBOARD_TTL_NS: u64 = 30_000_000_000;

/// The instance's last good dashboard and when it was fetched.
pub(crate) type DashboardCache = std::cell::RefCell<Option<(u64, Value)>>;

/// The store's 7-day dashboard, cached for 30 s; when the store fails, the last good one is
/// served with `stale: true`.
pub(crate) async fn dashboard<H: Host>(
    host: &H,
    store: &StoreConfig,
    cache: &DashboardCache,
) -> Response<String> {
    let now = host.monotonic_ns();
    let cached = cache.borrow().clone();
    if let Some((at, body)) = &cached
        && now.saturating_sub(*at) < DASHBOARD_TTL_NS
    {
        return json(StatusCode::OK, &with_flags(body.clone(), true, false));
    }
    match host
        .get_json(&format!("{}/v1/dashboard", store.url), &store.token)
        .await
    {
        Ok((200, body)) => {
            *cache.borrow_mut() = Some((now, body.clone()));
            json(StatusCode::OK, &with_flags(body, false, false))
        }
        failed => match cached {
            Some((_, body)) => json(StatusCode::OK, &with_flags(body, true, true)),
            None => store_failed(failed).response(),
        },
    }
}

fn with_flags(mut body: Value, cached: bool, stale: bool) -> Value {
    if let Value::Object(map) = &mut body {
        map.insert("cached".into(), Value::Bool(cached));
        if stale {
            map.insert("stale".into(), Value::Bool(true));
        }
    }
    body
}

/// The store's listing, newest first; the store validates `page`/`per_page`.
pub(crate) async fn transactions<H: Host>(
    host: &H,
    store: &StoreConfig,
    query: Option<&str>,
) -> Response<String> {
    let mut url = format!("{}/v1/transactions", store.url);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    match host.get_json(&url, &store.token).await {
        // The store's own validation errors (bad page/per_page) are the client's to see.
        Ok((status @ (200 | 400), body)) => json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            &body,
        ),
        failed => store_failed(failed).response(),
    }
}

pub(crate) fn store_not_configured() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the central store is not configured (set the store_url and store_token variables)",
    )
}

fn store_failed(outcome: Result<(u16, Value), String>) -> ApiError {
    let why = match outcome {
        Ok((status, _)) => format!("the central store answered {status}"),
        Err(e) => e,
    };
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("central store unavailable: {why}"),
    )
}
