//! `GET /api/dashboard` and `GET /api/transactions`: read from the central store. Its answers
//! are read as the contract's types, so one of another shape is a 502 here rather than a page
//! the front end cannot draw.

use contract::reads::{Dashboard, TransactionPage};
use http::{Response, StatusCode};
use serde_json::Value;

use crate::host::Host;
use crate::response::{ApiError, json};
use crate::settings::StoreConfig;

/// How long a dashboard fetched from the store is served from the instance's cache.
pub(crate) const DASHBOARD_TTL_NS: u64 = 30_000_000_000;

/// The instance's last good dashboard and when it was fetched.
pub(crate) type DashboardCache = std::cell::RefCell<Option<(u64, Dashboard)>>;

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
    let fetched = host
        .get_json(&format!("{}/v1/dashboard", store.url), &store.token)
        .await;
    match read_as::<Dashboard>(fetched, "dashboard") {
        Ok(body) => {
            *cache.borrow_mut() = Some((now, body.clone()));
            json(StatusCode::OK, &with_flags(body, false, false))
        }
        Err(failed) => match cached {
            Some((_, body)) => json(StatusCode::OK, &with_flags(body, true, true)),
            None => failed.response(),
        },
    }
}

fn with_flags(mut body: Dashboard, cached: bool, stale: bool) -> Dashboard {
    body.cached = Some(cached);
    body.stale = stale.then_some(true);
    body
}

/// A 200 answer of the store read as `T`, or the 502 to send instead.
fn read_as<T: serde::de::DeserializeOwned>(
    outcome: Result<(u16, Value), String>,
    what: &str,
) -> Result<T, ApiError> {
    match outcome {
        Ok((200, body)) => serde_json::from_value(body).map_err(|e| {
            store_failed(Err(format!(
                "the central store answered 200 with a {what} of another shape ({e})"
            )))
        }),
        failed => Err(store_failed(failed)),
    }
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
        Ok((400, body)) => json(StatusCode::BAD_REQUEST, &body),
        outcome => match read_as::<TransactionPage>(outcome, "listing") {
            Ok(page) => json(StatusCode::OK, &page),
            Err(failed) => failed.response(),
        },
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
