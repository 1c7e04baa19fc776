//! Write forwarding: scored transactions and feedback leave the request path and reach the
//! central store, surviving store outages without loss or duplication.
//!
//! The response is never held for the store. A handler hands its events to [`submit`], which
//! queues them in the instance and, if no flush is under way, spawns one
//! (`spin_sdk::wasip3::spawn`: the task runs on after the response has been sent). The flush
//! waits 10 ms, then sends what has queued up as one batch (so a busy instance sends few, large
//! batches rather than a request per prediction), retrying
//! with exponential backoff. Events the store would still not take are written to the Spin
//! key-value store (the outbox, key `outbox/<UUIDv7>`, so keys sort oldest first) and sent again,
//! oldest first, by later flushes once the store answers. Nothing is ever dropped: a batch the
//! store rejects as malformed (400) goes to `deadletter/<UUIDv7>` for an operator instead.
//!
//! Delivery is at least once: two instances may drain the same outbox entry, or a batch may be
//! stored just before its answer is lost. The store is idempotent by event id, so redelivery
//! never duplicates a row.

use serde_json::Value;
use spin_sdk::key_value::Store;
use spin_sdk::wasip3::clocks::monotonic_clock;
use std::cell::{Cell, RefCell};

/// Where the store is and how to authenticate (Spin variables `store_url`, `store_token`).
pub struct StoreConfig {
    pub url: String,
    pub token: String,
}

/// Largest batch sent in one request.
const MAX_BATCH: usize = 500;

/// How long a flush waits for more events before sending a batch.
const FLUSH_INTERVAL_NS: u64 = 10_000_000;

/// Delays before the second and third attempt (nanoseconds): 25 and 100 ms.
const BACKOFF_NS: [u64; 2] = [25_000_000, 100_000_000];

/// Longest wait for the store's answer to one POST. A P3 host keeps an instance alive until
/// its background tasks end, also after the instance has served its last request; a slow store
/// must not pile such instances up, so delivery gives up early and the outbox takes over.
const POST_TIMEOUT_NS: u64 = 500_000_000;

/// After a failed delivery, new batches go straight to the outbox (no retries) for this long,
/// so an outage does not keep every flush busy retrying.
const COOL_DOWN_NS: u64 = 1_000_000_000;

const OUTBOX: &str = "outbox/";
const DEAD_LETTER: &str = "deadletter/";

thread_local! {
    /// Serialized events waiting for the next flush.
    static PENDING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// A flush task is running in this instance.
    static FLUSHING: Cell<bool> = const { Cell::new(false) };
    /// The outbox may hold entries (true at instance start: an earlier instance may have
    /// left some).
    static OUTBOX_MAYBE_FULL: Cell<bool> = const { Cell::new(true) };
    /// Monotonic time before which the store is taken as down.
    static DOWN_UNTIL: Cell<u64> = const { Cell::new(0) };
}

/// Queues `events` (JSON objects as text) for the store and makes sure a flush is under way.
pub fn submit(config: &'static StoreConfig, events: impl IntoIterator<Item = String>) {
    PENDING.with_borrow_mut(|p| p.extend(events));
    if !FLUSHING.replace(true) {
        spin_sdk::wasip3::spawn(flush(config));
    }
}

/// Sends queued events until none are left, then drains the outbox if the store is up.
async fn flush(config: &'static StoreConfig) {
    loop {
        // Let events gather first: one POST per flush interval, not one per request, keeps the
        // store's and the database's share of the CPU (which the edge may share) small.
        if PENDING.with_borrow(Vec::len) < MAX_BATCH {
            monotonic_clock::wait_for(FLUSH_INTERVAL_NS).await;
        }
        let batch: Vec<String> = PENDING.with_borrow_mut(|p| {
            let n = p.len().min(MAX_BATCH);
            p.drain(..n).collect()
        });
        if batch.is_empty() {
            break;
        }
        let body = json_array(&batch);
        let delivered = if monotonic_clock::now() < DOWN_UNTIL.get() {
            Outcome::Unavailable("store marked down after a recent failure".into())
        } else {
            deliver(config, &body, true).await
        };
        match delivered {
            Outcome::Delivered => {}
            Outcome::Rejected(why) => {
                if !park(DEAD_LETTER, &body, &why).await {
                    break;
                }
            }
            Outcome::Unavailable(why) => {
                DOWN_UNTIL.set(monotonic_clock::now() + COOL_DOWN_NS);
                if !park(OUTBOX, &body, &why).await {
                    break;
                }
            }
        }
    }
    if OUTBOX_MAYBE_FULL.get() && monotonic_clock::now() >= DOWN_UNTIL.get() {
        drain_outbox(config).await;
    }
    FLUSHING.set(false);
    // Events queued while the outbox was draining would otherwise wait for the next request.
    if PENDING.with_borrow(|p| !p.is_empty()) && !FLUSHING.replace(true) {
        spin_sdk::wasip3::spawn(flush(config));
    }
}

enum Outcome {
    Delivered,
    /// The store refused the batch as malformed: retrying cannot help.
    Rejected(String),
    /// Unreachable, failing or refusing our token: worth retrying later.
    Unavailable(String),
}

/// POSTs `body` (a JSON array of events) to the store's ingest endpoint, retrying with backoff
/// when `retry`.
async fn deliver(config: &StoreConfig, body: &str, retry: bool) -> Outcome {
    let mut attempt = 0;
    loop {
        let outcome = post(config, body).await;
        if !matches!(outcome, Outcome::Unavailable(_)) || !retry || attempt == BACKOFF_NS.len() {
            return outcome;
        }
        monotonic_clock::wait_for(BACKOFF_NS[attempt]).await;
        attempt += 1;
    }
}

async fn post(config: &StoreConfig, body: &str) -> Outcome {
    let request = http::Request::post(format!("{}/v1/events", config.url.trim_end_matches('/')))
        .header("authorization", format!("Bearer {}", config.token))
        .header("content-type", "application/json")
        .body(body.to_owned());
    let request = match request {
        Ok(r) => r,
        Err(e) => return Outcome::Unavailable(format!("bad store URL {:?}: {e}", config.url)),
    };
    let Some(answer) = with_timeout(spin_sdk::http::send(request), POST_TIMEOUT_NS).await else {
        return Outcome::Unavailable("store did not answer within 500 ms".into());
    };
    match answer {
        Ok(resp) if resp.status().is_success() => Outcome::Delivered,
        Ok(resp) if resp.status() == http::StatusCode::BAD_REQUEST => {
            use http_body_util::BodyExt;
            let detail = match resp.into_body().collect().await {
                Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            Outcome::Rejected(format!("store answered 400 Bad Request: {detail}"))
        }
        Ok(resp) => Outcome::Unavailable(format!("store answered {}", resp.status())),
        Err(e) => Outcome::Unavailable(format!("store unreachable: {e:?}")),
    }
}

/// Persists a batch under `prefix` in the key-value store. If even that fails the events are
/// kept in memory for the next flush of this instance rather than dropped, and false returned.
async fn park(prefix: &str, body: &str, why: &str) -> bool {
    let key = format!("{prefix}{}", crate::new_transaction_id());
    let stored = match Store::open_default().await {
        Ok(store) => store.set(&key, body.as_bytes()).await,
        Err(e) => Err(e),
    };
    match stored {
        Ok(()) => {
            if prefix == OUTBOX {
                OUTBOX_MAYBE_FULL.set(true);
            }
            eprintln!("worker: store delivery failed ({why}); batch kept as {key}");
            true
        }
        Err(e) => {
            eprintln!(
                "worker: store delivery failed ({why}) and the outbox is unavailable ({e:?}); \
                 keeping the batch in memory"
            );
            if let Ok(Value::Array(events)) = serde_json::from_str::<Value>(body) {
                PENDING.with_borrow_mut(|p| p.extend(events.iter().map(Value::to_string)));
            }
            false
        }
    }
}

/// Sends outbox entries oldest first, deleting each once the store has it; stops at the first
/// failure (the store is down again: the rest wait for a later flush).
async fn drain_outbox(config: &StoreConfig) {
    let Ok(store) = Store::open_default().await else {
        return;
    };
    let Ok(keys) = store.get_keys().await.collect().await else {
        return;
    };
    let mut keys: Vec<String> = keys.into_iter().filter(|k| k.starts_with(OUTBOX)).collect();
    keys.sort();
    for key in keys {
        let body = match store.get(&key).await {
            Ok(Some(body)) => body,
            // Another instance drained it meanwhile.
            Ok(None) => continue,
            Err(_) => return,
        };
        let body = String::from_utf8_lossy(&body);
        match deliver(config, &body, false).await {
            Outcome::Delivered => {}
            Outcome::Rejected(why) => {
                if !park(DEAD_LETTER, &body, &why).await {
                    return;
                }
            }
            Outcome::Unavailable(_) => {
                DOWN_UNTIL.set(monotonic_clock::now() + COOL_DOWN_NS);
                return;
            }
        }
        if store.delete(&key).await.is_err() {
            return;
        }
    }
    OUTBOX_MAYBE_FULL.set(false);
}

/// `fut`'s output, or None if `ns` nanoseconds pass first (`fut` is then dropped, which
/// cancels an outbound request).
async fn with_timeout<F: Future>(fut: F, ns: u64) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut timer = std::pin::pin!(monotonic_clock::wait_for(ns));
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(v));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

fn json_array(events: &[String]) -> String {
    let mut body = String::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(e);
    }
    body.push(']');
    body
}

/// GETs `path` (with query) from the store and returns its status and JSON body.
pub async fn get_json(config: &StoreConfig, path_and_query: &str) -> Result<(u16, Value), String> {
    use http_body_util::BodyExt;
    let request = http::Request::get(format!(
        "{}{path_and_query}",
        config.url.trim_end_matches('/')
    ))
    .header("authorization", format!("Bearer {}", config.token))
    .body(String::new())
    .map_err(|e| format!("bad store URL {:?}: {e}", config.url))?;
    let resp = spin_sdk::http::send(request)
        .await
        .map_err(|e| format!("store unreachable: {e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the store's answer: {e}"))?
        .to_bytes();
    let value = serde_json::from_slice(&body)
        .map_err(|e| format!("store answered {status} with a body that is not JSON: {e}"))?;
    Ok((status, value))
}
