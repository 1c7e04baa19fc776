//! Velocity features at the edge: per-entity state in the key-value store, read before a
//! transaction is scored and written back before it is answered.
//!
//! The definition and the state machine are model-format's ([`VelocitySpec::observe`]), the
//! same code the trainer runs over history. What this module adds is where the state lives:
//! one value per entity (`vel/<field>/<hash of the id>`), read, updated, written. The write is
//! awaited before the answer, so a client that sends its next transaction after this answer
//! always sees this one counted, on any instance.
//!
//! Two instances updating one entity at the same moment each read, update and write: the
//! last write wins and the other transaction is missing from later windows (Spin's key-value
//! interface has no compare-and-swap in spin-sdk 7's API). Within one batch request the
//! transactions of one entity see each other (a cache per request).

use std::collections::HashMap;

use model_format::velocity::{EntityState, VelocitySpec};
use serde_json::{Map, Value};

use crate::Host;
use crate::response::ApiError;

/// States read or updated by one request, by key.
#[derive(Default)]
pub(crate) struct Touched {
    states: HashMap<String, EntityState>,
    /// Keys in first-touch order (writes happen in that order).
    order: Vec<String>,
}

/// The velocity values of one transaction (one per feature of `spec`), its entities' states
/// updated in `touched`. Err: the payload's entity or time fields are unusable (400).
pub(crate) async fn observe<H: Host>(
    host: &H,
    spec: &VelocitySpec,
    fields: &Map<String, Value>,
    touched: &mut Touched,
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
pub(crate) async fn write_back<H: Host>(host: &H, touched: Touched) {
    let Touched { mut states, order } = touched;
    for key in order {
        if let Some(state) = states.remove(&key)
            && let Err(e) = host.state_set(&key, &state.encode()).await
        {
            eprintln!("worker: writing velocity state {key} failed: {e}");
        }
    }
}
