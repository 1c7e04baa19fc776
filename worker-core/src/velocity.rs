//! Velocity features at the edge: per-entity state in the key-value store, updated atomically
//! before a transaction is scored.
//!
//! The definition and the state machine are model-format's ([`VelocitySpec::observe`]), the
//! same code the trainer runs over history. What this module adds is where the state lives and
//! how concurrent updates of one entity stay whole: one value per entity
//! (`vel/<field>/<hash of the id>`), read and replaced with a compare-and-swap
//! (`wasi:keyvalue/atomics`), retried on conflict. The features of a transaction are computed
//! from exactly the state its swap replaced, so every transaction of a card counts in the later
//! ones' windows, whichever instance or edge answered it. The write is done before the answer:
//! a client that sends its next transaction after this answer always sees this one counted.
//!
//! **Checking that a write landed.** Spin's stores do not all report a lost swap: its SQLite
//! store writes unconditionally when the key was absent at the read (two first writers both
//! "succeed"), and its Redis store reports success when Redis aborted the transaction (redis-rs
//! turns EXEC's nil into `Ok(())`). So every stored state carries a write sequence number and
//! the nonces of its last [`RING`] writes ([`Stored`]); after a swap the value is read back and
//! a write whose nonce is missing while the ring still covers its sequence number is redone.
//!
//! **Creating a key.** A swap on a key that was absent when read is, in Spin's SQLite store, an
//! unconditional write: a writer that found the key absent may overwrite a state created (and
//! checked) a moment before. So only one writer creates an entity's state: the one whose
//! atomic increment of the entity's birth counter (`<key>/born`) returns 1. Any other that
//! finds the key absent waits for the state to appear (within the same bound as conflicts).
//!
//! **Bounded effort.** Tries go on, with a randomised, growing pause between them, for at most
//! [`UPDATE_BUDGET_NS`] (and [`MAX_ATTEMPTS`] tries); then the transaction is scored from the last state read, its update is not recorded,
//! and the answer and the event say `velocity_stale: true`.
//!
//! Within one instance (Spin runs up to 16 requests at once in one), the requests of one entity
//! take turns ([`Locks`], waited for at most [`LOCK_WAIT_NS`]): they would otherwise only
//! conflict with each other.

use std::cell::RefCell;
use std::collections::HashSet;

use model_format::velocity::{EntityState, VelocitySpec};
use serde_json::{Map, Value};

use crate::Host;
use crate::host::Swap;
use crate::response::ApiError;

/// Longest wait for another request of this instance to finish with an entity (then it goes
/// ahead and may conflict: slower, never wrong).
pub const LOCK_WAIT_NS: u64 = 1_000_000_000;
const LOCK_POLL_NS: u64 = 50_000;
/// Longest time one entity's update of one transaction keeps trying. Generous: a durable
/// store under a burst of 64 connections on one card writes one update per commit (~1–3 ms
/// here), so the last writer in line waits for all the others.
pub const UPDATE_BUDGET_NS: u64 = 2_000_000_000;
/// Most compare-and-swap attempts for one entity of one transaction.
pub const MAX_ATTEMPTS: u32 = 1_000;
/// First pause between attempts; it doubles (randomised) up to [`MAX_BACKOFF_NS`].
const BACKOFF_NS: u64 = 20_000;
const MAX_BACKOFF_NS: u64 = 4_000_000;
/// Writes whose nonces a stored state remembers (see [`Stored`]).
pub const RING: usize = 16;
/// First byte of an enveloped state; model-format's bare state starts with its version (1).
const ENVELOPE: u8 = 0xE7;

/// The entity keys this instance's requests are updating.
#[derive(Default)]
pub(crate) struct Locks(RefCell<HashSet<String>>);

/// Releases a key of [`Locks`] when dropped.
struct Held<'l> {
    locks: &'l Locks,
    key: Option<String>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(k) = &self.key {
            self.locks.0.borrow_mut().remove(k);
        }
    }
}

/// One entity's stored value: model-format's state plus what shows whether a write landed.
///
/// Bytes: `0xE7`, `seq` (u64 LE, the number of writes so far), `n` (u8 ≤ [`RING`]), `n` nonces
/// (u64 LE, oldest first; the last is write `seq`'s), then [`EntityState::encode`]. A value
/// starting with anything else is a bare state from an older edge (`seq` 0, no nonces).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Stored {
    pub(crate) seq: u64,
    pub(crate) nonces: Vec<u64>,
    pub(crate) state: EntityState,
}

impl Stored {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Stored, String> {
        if bytes.first() != Some(&ENVELOPE) {
            let state = EntityState::decode(bytes).map_err(|e| e.to_string())?;
            return Ok(Stored {
                state,
                ..Stored::default()
            });
        }
        let head = bytes
            .get(1..10)
            .ok_or("velocity state: truncated envelope")?;
        let seq = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let n = usize::from(head[8]);
        if n > RING {
            return Err("velocity state: too many nonces".into());
        }
        let ring = bytes
            .get(10..10 + 8 * n)
            .ok_or("velocity state: truncated envelope")?;
        let nonces = ring
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let state = EntityState::decode(&bytes[10 + 8 * n..]).map_err(|e| e.to_string())?;
        Ok(Stored { seq, nonces, state })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let state = self.state.encode();
        let mut out = Vec::with_capacity(10 + 8 * self.nonces.len() + state.len());
        out.push(ENVELOPE);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.push(self.nonces.len() as u8);
        for n in &self.nonces {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&state);
        out
    }

    /// This state with one more write, `nonce`'s.
    pub(crate) fn record(&mut self, nonce: u64) {
        self.seq += 1;
        if self.nonces.len() == RING {
            self.nonces.remove(0);
        }
        self.nonces.push(nonce);
    }

    /// Whether write number `seq` with `nonce` is in this state's history: `Some(true)` yes,
    /// `Some(false)` surely not, `None` when so many writes followed that its nonce was dropped.
    fn includes(&self, seq: u64, nonce: u64) -> Option<bool> {
        if self.seq < seq {
            return Some(false);
        }
        let back = self.seq - seq; // 0 = the latest write
        if back >= self.nonces.len() as u64 {
            return None;
        }
        Some(self.nonces[self.nonces.len() - 1 - back as usize] == nonce)
    }
}

/// The velocity values of one transaction (one per feature of `spec`) and whether any of its
/// entities' updates was given up ([`UPDATE_BUDGET_NS`]). Err: the payload's entity or time fields
/// are unusable (400) or the store failed (503).
pub(crate) async fn observe<H: Host>(
    host: &H,
    spec: &VelocitySpec,
    fields: &Map<String, Value>,
    locks: &Locks,
    atomic: bool,
) -> Result<(Vec<f64>, bool), ApiError> {
    let payload = contract::JsonPayload(fields);
    let bad = |e: model_format::velocity::VelocityError| ApiError::bad_request(e.to_string());
    spec.check(&payload).map_err(bad)?;
    let t = spec
        .event_time(&payload, host.now().timestamp_millis())
        .map_err(bad)?;
    let mut values = vec![0.0; spec.features().len()];
    spec.no_history(&mut values);
    let mut stale = false;
    for e in 0..spec.entities().len() {
        let Some(id) = spec.entity_id(&payload, e).map_err(bad)? else {
            continue;
        };
        let key = spec.state_key(e, &id);
        let _held = hold(host, locks, &key).await;
        let apply = |state: &mut EntityState| spec.observe(e, state, t, &payload, &mut values);
        let written = if atomic {
            update(host, &key, apply).await
        } else {
            update_plainly(host, &key, apply).await
        };
        let written = written.map_err(|err| {
            // Scoring without history would answer with numbers the model never saw for
            // this entity: refuse instead (503: worth retrying).
            ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                format!("velocity state unavailable: {err}"),
            )
        })?;
        stale |= !written;
    }
    Ok((values, stale))
}

/// Takes `key` in this instance's locks (or goes ahead unlocked after [`LOCK_WAIT_NS`]).
async fn hold<'l, H: Host>(host: &H, locks: &'l Locks, key: &str) -> Held<'l> {
    let mut waited = 0;
    loop {
        if locks.0.borrow_mut().insert(key.to_owned()) {
            return Held {
                locks,
                key: Some(key.to_owned()),
            };
        }
        if waited >= LOCK_WAIT_NS {
            return Held { locks, key: None };
        }
        host.sleep(LOCK_POLL_NS).await;
        waited += LOCK_POLL_NS;
    }
}

/// The stored state in `bytes`, or a fresh one (absent, or corrupt: logged).
fn decode_or_fresh(key: &str, bytes: Option<Vec<u8>>) -> Stored {
    bytes.map_or_else(Stored::default, |b| {
        Stored::decode(&b).unwrap_or_else(|err| {
            eprintln!("worker: {key}: {err}; starting it afresh");
            Stored::default()
        })
    })
}

/// `velocity_writes = plain`: read, apply, write. Two instances updating one entity at once
/// both write and the last one wins (the other transaction is missing from later windows).
async fn update_plainly<H: Host>(
    host: &H,
    key: &str,
    apply: impl FnOnce(&mut EntityState),
) -> Result<bool, String> {
    let mut stored = decode_or_fresh(key, host.state_get(key).await?);
    apply(&mut stored.state);
    let nonce = u64::from_le_bytes(host.random_bytes::<8>());
    stored.record(nonce);
    if let Err(e) = host.state_set(key, &stored.encode()).await {
        // The answer still holds the values; only later windows miss this transaction.
        eprintln!("worker: writing velocity state {key} failed: {e}");
    }
    Ok(true)
}

/// The counter whose first increment makes a writer the creator of `key`'s state.
pub(crate) fn birth_key(key: &str) -> String {
    format!("{key}/born")
}

/// Applies `apply` to the state under `key` and swaps the result in, until a write is seen to
/// land. `apply` runs once per attempt on the state as read (its side effects — the feature
/// values — are those of the last attempt). Ok(false): out of time or attempts, nothing
/// recorded.
async fn update<H: Host>(
    host: &H,
    key: &str,
    mut apply: impl FnMut(&mut EntityState),
) -> Result<bool, String> {
    let nonce = u64::from_le_bytes(host.random_bytes::<8>());
    let mut cas = host.state_cas(key).await?;
    let mut backoff = BACKOFF_NS;
    // Whether this writer may create the key (see the module docs).
    let mut creator = false;
    let start = host.monotonic_ns();
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            if host.monotonic_ns().saturating_sub(start) >= UPDATE_BUDGET_NS {
                break;
            }
            let jitter = u64::from(u16::from_le_bytes(host.random_bytes::<2>()));
            host.sleep(backoff / 2 + backoff * jitter / 131_072).await;
            backoff = (backoff * 2).min(MAX_BACKOFF_NS);
        }
        let current = host.state_current(&cas).await?;
        if current.is_none() {
            if !creator {
                creator = host.state_increment(&birth_key(key), 1).await? == 1;
            }
            if !creator {
                // Another writer is creating it: read again after a pause.
                cas = host.state_cas(key).await?;
                continue;
            }
        }
        let mut stored = decode_or_fresh(key, current);
        apply(&mut stored.state);
        stored.record(nonce);
        let seq = stored.seq;
        match host.state_swap(cas, stored.encode()).await? {
            Swap::Conflict(next) => cas = next,
            Swap::Written => {
                let now = match host.state_get(key).await? {
                    Some(bytes) => Stored::decode(&bytes).ok(),
                    None => None,
                };
                // A state that cannot tell (the ring moved on) is taken as landed: redoing a
                // write that did land would count the transaction twice.
                if now.is_some_and(|s| s.includes(seq, nonce) != Some(false)) {
                    return Ok(true);
                }
                cas = host.state_cas(key).await?;
            }
        }
    }
    let ms = host.monotonic_ns().saturating_sub(start) / 1_000_000;
    eprintln!("worker: {key}: velocity update given up after {ms} ms of conflicting attempts");
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_state_round_trips_and_reads_an_older_edges_bare_state() {
        let mut s = Stored::default();
        for n in 1..=20 {
            s.record(n);
        }
        assert_eq!(s.seq, 20);
        assert_eq!(s.nonces, (5..=20).collect::<Vec<_>>());
        assert_eq!(Stored::decode(&s.encode()).unwrap(), s);
        let bare = EntityState::default().encode();
        assert_eq!(Stored::decode(&bare).unwrap(), Stored::default());
        assert!(Stored::decode(&s.encode()[..12]).is_err());
        assert!(Stored::decode(&[ENVELOPE, 0, 0, 0, 0, 0, 0, 0, 0, 99]).is_err());
    }

    #[test]
    fn a_write_is_found_in_the_history_until_the_ring_moves_past_it() {
        let mut s = Stored::default();
        s.record(7);
        s.record(8);
        assert_eq!(s.includes(1, 7), Some(true));
        assert_eq!(s.includes(2, 8), Some(true));
        // Another writer's write number 2 replaced ours: surely lost.
        assert_eq!(s.includes(2, 99), Some(false));
        // Write 3 has not happened.
        assert_eq!(s.includes(3, 9), Some(false));
        for n in 0..RING as u64 {
            s.record(100 + n);
        }
        assert_eq!(s.includes(1, 7), None);
        assert_eq!(s.includes(2, 8), None);
    }
}
