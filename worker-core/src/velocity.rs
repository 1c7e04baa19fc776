//! Velocity features at the edge: per-entity state in the key-value store, read before a
//! transaction is scored and written back before it is answered.
//!
//! The definition and the state machine are model-format's ([`VelocitySpec::observe`]), the
//! same code the trainer runs over history. What this module adds is where the state lives:
//! one value per entity (`vel/<field>/<hash of the id>`), read, updated, written. The write is
//! awaited before the answer, so a client that sends its next transaction after this answer
//! always sees this one counted, on any instance.
//!
//! Within one instance (Spin runs up to 16 requests at once in one), the requests of one entity
//! take turns: an entity's key is held from its read to its write ([`Locks`]), waited for at
//! most [`LOCK_WAIT_NS`] (then the request goes ahead unlocked rather than stall). Two
//! *instances* updating one entity at the same moment each read, update and write: the last
//! write wins and the other transaction is missing from later windows (Spin's key-value
//! interface has no compare-and-swap in spin-sdk 7's API). Within one batch request the
//! transactions of one entity see each other (a cache per request).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use model_format::velocity::{EntityState, VelocitySpec};
use serde_json::{Map, Value};

use crate::Host;
use crate::response::ApiError;

/// Longest wait for another request of this instance to finish with an entity.
pub const LOCK_WAIT_NS: u64 = 50_000_000;
const LOCK_POLL_NS: u64 = 50_000;

/// The entity keys this instance's requests are between reading and writing.
#[derive(Default)]
pub(crate) struct Locks(RefCell<HashSet<String>>);

/// States read or updated by one request, by key; releases its keys when dropped.
pub(crate) struct Touched<'l> {
    locks: &'l Locks,
    states: HashMap<String, EntityState>,
    /// Keys in first-touch order (writes happen in that order).
    order: Vec<String>,
    /// Keys this request holds in `locks`.
    held: Vec<String>,
}

impl<'l> Touched<'l> {
    pub(crate) fn new(locks: &'l Locks) -> Self {
        Touched {
            locks,
            states: HashMap::new(),
            order: Vec::new(),
            held: Vec::new(),
        }
    }
}

impl Drop for Touched<'_> {
    fn drop(&mut self) {
        let mut locks = self.locks.0.borrow_mut();
        for k in &self.held {
            locks.remove(k);
        }
    }
}

/// The velocity values of one transaction (one per feature of `spec`), its entities' states
/// updated in `touched`. Err: the payload's entity or time fields are unusable (400).
pub(crate) async fn observe<H: Host>(
    host: &H,
    spec: &VelocitySpec,
    fields: &Map<String, Value>,
    touched: &mut Touched<'_>,
) -> Result<Vec<f64>, ApiError> {
    let payload = contract::JsonPayload(fields);
    let bad = |e: model_format::velocity::VelocityError| ApiError::bad_request(e.to_string());
    spec.check(&payload).map_err(bad)?;
    let t = spec
        .event_time(&payload, host.now().timestamp_millis())
        .map_err(bad)?;
    let mut values = vec![0.0; spec.features().len()];
    spec.no_history(&mut values);
    for e in 0..spec.entities().len() {
        let Some(id) = spec.entity_id(&payload, e).map_err(bad)? else {
            continue;
        };
        let key = spec.state_key(e, &id);
        if !touched.states.contains_key(&key) {
            let mut waited = 0;
            loop {
                if touched.locks.0.borrow_mut().insert(key.clone()) {
                    touched.held.push(key.clone());
                    break;
                }
                if waited >= LOCK_WAIT_NS {
                    break;
                }
                host.sleep(LOCK_POLL_NS).await;
                waited += LOCK_POLL_NS;
            }
            let state = match host.state_get(&key).await {
                Ok(Some(bytes)) => EntityState::decode(&bytes).unwrap_or_else(|err| {
                    eprintln!("worker: {key}: {err}; starting it afresh");
                    EntityState::default()
                }),
                Ok(None) => EntityState::default(),
                // Scoring without history would answer with numbers the model never saw
                // for this entity: refuse instead (503: worth retrying).
                Err(err) => {
                    return Err(ApiError::new(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("velocity state unavailable: {err}"),
                    ));
                }
            };
            touched.order.push(key.clone());
            touched.states.insert(key.clone(), state);
        }
        let state = touched.states.get_mut(&key).expect("inserted above");
        spec.observe(e, state, t, &payload, &mut values);
    }
    Ok(values)
}

/// Writes every touched state back. A failed write is logged: the answer already holds the
/// values, only later windows miss this transaction.
pub(crate) async fn write_back<H: Host>(host: &H, mut touched: Touched<'_>) {
    let order = std::mem::take(&mut touched.order);
    for key in order {
        if let Some(state) = touched.states.remove(&key)
            && let Err(e) = host.state_set(&key, &state.encode()).await
        {
            eprintln!("worker: writing velocity state {key} failed: {e}");
        }
    }
    // Dropping `touched` releases its keys.
}
