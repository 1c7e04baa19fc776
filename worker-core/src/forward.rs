//! Write forwarding: scored transactions and feedback leave the request path and reach the
//! central store, surviving store outages without loss or duplication, and no single bad event
//! can hold up the events behind it.
//!
//! The response is never held for the store. A handler hands its events to
//! [`Forwarder::submit`], which queues them in the instance and, if no flush is under way,
//! spawns one (the task runs on after the response has been sent). The flush waits 10 ms, then
//! sends what has queued up as one batch (at most [`FORWARD_MAX_EVENTS`] events and
//! [`FORWARD_MAX_BYTES`] bytes), retrying with exponential backoff. Events the store would still
//! not take are written to the key-value store (the outbox, key `outbox/<UUIDv7>`, so keys sort
//! oldest first) and sent again, oldest first, by later flushes once the store answers.
//!
//! A batch the store refuses as a client error (400, 413) is not retried as a whole: the store
//! names the first bad event (`index`), which alone goes to `deadletter/<UUIDv7>` for an
//! operator, and the rest is sent again; without an index the batch is halved until the bad
//! events stand alone. So a refused event costs at most a few extra requests and never blocks
//! the outbox. Nothing is ever dropped.
//!
//! Delivery is at least once: two instances may drain the same outbox entry, or a batch may be
//! stored just before its answer is lost. The store is idempotent by event id, so redelivery
//! never duplicates a row.

use std::cell::{Cell, RefCell};

use contract::IngestRejection;
use contract::limits::{FORWARD_MAX_BYTES, FORWARD_MAX_EVENTS};
use serde_json::Value;

use crate::host::{Host, PostAnswer};
use crate::settings::StoreConfig;

/// How long a flush waits for more events before sending a batch.
const FLUSH_INTERVAL_NS: u64 = 10_000_000;

/// Delays before the second and third attempt (nanoseconds): 25 and 100 ms.
const BACKOFF_NS: [u64; 2] = [25_000_000, 100_000_000];

/// Longest wait for the store's answer to one POST. A P3 host keeps an instance alive until
/// its background tasks end, also after the instance has served its last request; a slow store
/// must not pile such instances up, so delivery gives up early and the outbox takes over.
pub(crate) const POST_TIMEOUT_NS: u64 = 500_000_000;

/// After a failed delivery, new batches go straight to the outbox (no retries) for this long,
/// so an outage does not keep every flush busy retrying.
const COOL_DOWN_NS: u64 = 1_000_000_000;

/// Key prefix of batches waiting for the store.
pub const OUTBOX: &str = "outbox/";
/// Key prefix of events the store refused, kept for an operator.
pub const DEAD_LETTER: &str = "deadletter/";

/// The per-instance forwarding state.
#[derive(Debug)]
pub struct Forwarder {
    /// Serialized events waiting for the next flush.
    pending: RefCell<Vec<String>>,
    /// A flush task is running in this instance.
    flushing: Cell<bool>,
    /// The outbox may hold entries (true at instance start: an earlier instance may have
    /// left some).
    outbox_maybe_full: Cell<bool>,
    /// Monotonic time before which the store is taken as down.
    down_until: Cell<u64>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder {
            pending: RefCell::new(Vec::new()),
            flushing: Cell::new(false),
            outbox_maybe_full: Cell::new(true),
            down_until: Cell::new(0),
        }
    }
}

/// What the store did with one POST.
enum Outcome {
    Delivered,
    /// The store refused the batch as the sender's fault; `index` names the first bad event.
    Refused {
        index: Option<usize>,
        why: String,
    },
    /// Unreachable, failing or refusing our token: worth retrying later.
    Unavailable(String),
}

/// Where a flush got to.
enum Sent {
    All,
    /// The store became unavailable; these events are not delivered yet.
    Stopped {
        left: Vec<String>,
        why: String,
    },
    /// The key-value store failed too; the events are back in memory.
    Stuck,
}

impl Forwarder {
    /// Events waiting in memory.
    pub fn pending(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Queues `events` (JSON objects as text) for the store and makes sure a flush is under way.
    pub fn submit<H: Host>(
        &'static self,
        host: &'static H,
        config: &'static StoreConfig,
        events: impl IntoIterator<Item = String>,
    ) {
        self.pending.borrow_mut().extend(events);
        if !self.flushing.replace(true) {
            host.spawn(Box::pin(self.flush(host, config)));
        }
    }

    /// Sends queued events until none are left, then drains the outbox if the store is up.
    async fn flush<H: Host>(&'static self, host: &'static H, config: &'static StoreConfig) {
        let mut stuck = false;
        loop {
            // Let events gather first: one POST per flush interval, not one per request, keeps
            // the store's and the database's share of the CPU (which the edge may share) small.
            if self.pending.borrow().len() < FORWARD_MAX_EVENTS {
                host.sleep(FLUSH_INTERVAL_NS).await;
            }
            let batch = self.take_batch();
            if batch.is_empty() {
                break;
            }
            let sent = if host.monotonic_ns() < self.down_until.get() {
                Sent::Stopped {
                    left: batch,
                    why: "store marked down after a recent failure".into(),
                }
            } else {
                self.send(host, config, batch, true).await
            };
            match sent {
                Sent::All => {}
                Sent::Stopped { left, why } => {
                    self.down_until.set(host.monotonic_ns() + COOL_DOWN_NS);
                    if !self.park(host, OUTBOX, &left, &why).await {
                        stuck = true;
                        break;
                    }
                }
                Sent::Stuck => {
                    stuck = true;
                    break;
                }
            }
        }
        if !stuck && self.outbox_maybe_full.get() && host.monotonic_ns() >= self.down_until.get() {
            self.drain_outbox(host, config).await;
        }
        self.flushing.set(false);
        // Events queued while the outbox was draining would otherwise wait for the next
        // request. Not after a key-value failure: they wait in memory for the next request
        // rather than keep a task spinning (and the instance alive).
        if !stuck && !self.pending.borrow().is_empty() && !self.flushing.replace(true) {
            host.spawn(Box::pin(self.flush(host, config)));
        }
    }

    /// The oldest pending events that fit one request.
    fn take_batch(&self) -> Vec<String> {
        let mut pending = self.pending.borrow_mut();
        let mut bytes = 2;
        let mut n = 0;
        for e in pending.iter().take(FORWARD_MAX_EVENTS) {
            if n > 0 && bytes + e.len() + 1 > FORWARD_MAX_BYTES {
                break;
            }
            bytes += e.len() + 1;
            n += 1;
        }
        pending.drain(..n).collect()
    }

    /// Delivers `events`; events the store refuses are dead-lettered one by one and the rest
    /// still delivered. Stops at the first sign that the store is unavailable.
    async fn send<H: Host>(
        &self,
        host: &H,
        config: &StoreConfig,
        events: Vec<String>,
        retry: bool,
    ) -> Sent {
        let mut work = vec![events];
        while let Some(mut batch) = work.pop() {
            match deliver(host, config, &json_array(&batch), retry).await {
                Outcome::Delivered => {}
                Outcome::Refused { index, why } => match index {
                    Some(i) if i < batch.len() => {
                        let bad = batch.remove(i);
                        if !self.park(host, DEAD_LETTER, &[bad], &why).await {
                            return Sent::Stuck;
                        }
                        if !batch.is_empty() {
                            work.push(batch);
                        }
                    }
                    _ if batch.len() > 1 => {
                        let second = batch.split_off(batch.len() / 2);
                        work.push(second);
                        work.push(batch);
                    }
                    _ => {
                        if !self.park(host, DEAD_LETTER, &batch, &why).await {
                            return Sent::Stuck;
                        }
                    }
                },
                Outcome::Unavailable(why) => {
                    let mut left = batch;
                    for rest in work.into_iter().rev() {
                        left.extend(rest);
                    }
                    return Sent::Stopped { left, why };
                }
            }
        }
        Sent::All
    }

    /// Persists events under `prefix` in the key-value store. If even that fails the events are
    /// kept in memory for the next flush of this instance rather than dropped, and false
    /// returned.
    async fn park<H: Host>(&self, host: &H, prefix: &str, events: &[String], why: &str) -> bool {
        let key = format!("{prefix}{}", crate::ids::new_uuid(host));
        match host.kv_set(&key, json_array(events).as_bytes()).await {
            Ok(()) => {
                if prefix == OUTBOX {
                    self.outbox_maybe_full.set(true);
                }
                eprintln!(
                    "worker: store delivery failed ({why}); {} event(s) kept as {key}",
                    events.len()
                );
                true
            }
            Err(e) => {
                eprintln!(
                    "worker: store delivery failed ({why}) and the key-value store is unavailable \
                     ({e}); keeping {} event(s) in memory",
                    events.len()
                );
                self.pending.borrow_mut().extend(events.iter().cloned());
                false
            }
        }
    }

    /// Sends outbox entries oldest first, deleting each once the store has it (a partly sent
    /// entry is rewritten with what is left); stops when the store is down again.
    async fn drain_outbox<H: Host>(&self, host: &H, config: &StoreConfig) {
        let Ok(keys) = host.kv_keys().await else {
            return;
        };
        let mut keys: Vec<String> = keys.into_iter().filter(|k| k.starts_with(OUTBOX)).collect();
        keys.sort();
        for key in keys {
            let body = match host.kv_get(&key).await {
                Ok(Some(body)) => body,
                // Another instance drained it meanwhile.
                Ok(None) => continue,
                Err(_) => return,
            };
            let events: Vec<String> = match serde_json::from_slice::<Vec<Value>>(&body) {
                Ok(events) => events.iter().map(Value::to_string).collect(),
                Err(e) => {
                    // Not ours to parse: keep it for an operator, out of the way.
                    let text = String::from_utf8_lossy(&body).into_owned();
                    let why = format!("outbox entry {key} is not a JSON array: {e}");
                    if host
                        .kv_set(
                            &format!("{DEAD_LETTER}{}", &key[OUTBOX.len()..]),
                            text.as_bytes(),
                        )
                        .await
                        .is_err()
                    {
                        return;
                    }
                    eprintln!("worker: {why}; moved to the dead letters");
                    if host.kv_delete(&key).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let total = events.len();
            match self.send(host, config, events, false).await {
                Sent::All => {
                    if host.kv_delete(&key).await.is_err() {
                        return;
                    }
                }
                Sent::Stopped { left, .. } => {
                    if left.len() < total {
                        let _ = host.kv_set(&key, json_array(&left).as_bytes()).await;
                    }
                    self.down_until.set(host.monotonic_ns() + COOL_DOWN_NS);
                    return;
                }
                Sent::Stuck => return,
            }
        }
        self.outbox_maybe_full.set(false);
    }
}

/// POSTs `body` (a JSON array of events) to the store's ingest endpoint, retrying with backoff
/// when `retry`.
async fn deliver<H: Host>(host: &H, config: &StoreConfig, body: &str, retry: bool) -> Outcome {
    let url = format!("{}/v1/events", config.url);
    let mut attempt = 0;
    loop {
        let outcome = match host
            .post_json(&url, &config.token, body.to_owned(), POST_TIMEOUT_NS)
            .await
        {
            PostAnswer::Status(s, _) if (200..300).contains(&s) => Outcome::Delivered,
            PostAnswer::Status(s @ (400 | 413 | 422), detail) => {
                let rejection = serde_json::from_str::<IngestRejection>(&detail).ok();
                Outcome::Refused {
                    index: rejection.as_ref().and_then(|r| r.index),
                    why: format!(
                        "store answered {s}: {}",
                        rejection.map_or(detail, |r| r.error)
                    ),
                }
            }
            PostAnswer::Status(s, _) => Outcome::Unavailable(format!("store answered {s}")),
            PostAnswer::TimedOut => Outcome::Unavailable(format!(
                "store did not answer within {} ms",
                POST_TIMEOUT_NS / 1_000_000
            )),
            PostAnswer::Failed(e) => Outcome::Unavailable(format!("store unreachable: {e}")),
        };
        if !matches!(outcome, Outcome::Unavailable(_)) || !retry || attempt == BACKOFF_NS.len() {
            return outcome;
        }
        host.sleep(BACKOFF_NS[attempt]).await;
        attempt += 1;
    }
}

/// `[e1,e2,…]` from serialized events.
pub(crate) fn json_array(events: &[String]) -> String {
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
