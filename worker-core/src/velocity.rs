//! Velocity features at the edge: per-entity state in the key-value store, updated atomically
//! before a transaction is scored.
//!
//! The definition and the state machine are model-format's ([`VelocitySpec::observe`]), the
//! same code the trainer runs over history. What this module adds is where the state lives and
//! how concurrent updates of one entity stay whole: one value per slot
//! (`vel/<field>/s<slot>`, [`VelocitySpec::state_slot`]), read and replaced with a compare-and-swap
//! (`wasi:keyvalue/atomics`), retried on conflict. The features of a transaction are computed
//! from exactly the state its swap replaced, so every transaction of a card counts in the later
//! ones' windows, whichever instance or edge answered it. The write is done before the answer:
//! a client that sends its next transaction after this answer always sees this one counted.
//!
//! **Checking that a write landed.** Spin's stores do not all report a lost swap: its SQLite
//! store writes unconditionally when the key was absent at the read (two first writers both
//! "succeed"), and its Redis store reports success when Redis aborted the transaction (redis-rs
//! turns EXEC's nil into `Ok(())`). So every stored state carries a write sequence number and
//! the nonces of its last [`RING`] writes ([`Stored`]); after a swap that created the key (and
//! after every swap with [`Writes::Verified`], for a store like Redis's) the value is read back
//! and a write whose nonce is missing while the ring still covers its sequence number is redone.
//! A swap of a present key in Spin's SQLite stores is `UPDATE … WHERE value = old`, which
//! reports a conflict truthfully, so [`Writes::Atomic`] spares that read.
//!
//! **Without compare-and-swap** ([`Writes::Ticketed`], for Spin's Redis store): writers of a
//! slot draw tickets from the store's atomic increment and write in ticket order, each on the
//! state the ticket before it wrote ([`update_ticketed`]).
//!
//! **Creating a key.** A swap on a key that was absent when read is, in Spin's SQLite store, an
//! unconditional write: a writer that found the key absent may overwrite a state created (and
//! checked) a moment before. So only one writer creates an entity's state: the one whose
//! atomic increment of the entity's birth counter (`<key>/born`) returns 1. Any other that
//! finds the key absent waits for the state to appear (within the same bound as conflicts).
//!
//! **Bounded effort.** Tries go on, with a randomised, growing pause between them, for at most
//! [`UPDATE_BUDGET_NS`] (and [`MAX_ATTEMPTS`] tries) per turn; then the turn's transactions are
//! scored from the last state read, their updates are not recorded, and their answers and events
//! say `velocity_stale: true`.
//!
//! **Bounded state.** An entity's state lives in one of `velocity_slots` values per entity field
//! (by a hash of its id), beside the states of the other entities hashed there, each under its
//! fingerprint. A write to a slot first drops every state that can no longer change a feature
//! ([`VelocitySpec::outlived`]: past the entity's longest window, 30 days with
//! `seconds_since_last`), so an inactive card costs nothing once its horizon has passed and
//! the next write to its slot comes, and the store never holds more than `velocity_slots`
//! values (and birth counters) per entity field, however many cards it has seen. A slot keeps
//! at most [`SLOT_ENTITIES`] live states; a further entity pushes out the least recently seen
//! (logged: that entity starts afresh, as the trainer's history would not), which a slot count
//! above the number of entities active within a horizon makes rare.
//!
//! **Group commit.** Within one instance (Spin runs up to 16 requests at once in one), the
//! requests of one slot do not race each other: while one writes the slot, the others queue
//! their observations, and the next to find it free writes them all with one swap
//! ([`Locks::write`]). A bot firing at one card costs a store write per turn, not per
//! transaction, and only other instances and edges can conflict with a turn.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use model_format::velocity::{EntityState, VelocitySpec};
use serde_json::{Map, Value};

use crate::Host;
use crate::host::Swap;
use crate::response::ApiError;

/// Longest wait in an instance's queue for a slot (see [`Locks::write`]) before a request
/// writes its observation alone (and perhaps conflicts: slower, never wrong). A queued request
/// waits for at most the turn in progress, which [`UPDATE_BUDGET_NS`] bounds; this is for a
/// turn whose store calls hang.
pub const LOCK_WAIT_NS: u64 = UPDATE_BUDGET_NS + 1_000_000_000;
/// First pause between looks at a held lock; it doubles up to [`LOCK_POLL_MAX_NS`] (16 waiters
/// looking every 50 µs would cost the instance more than the holder's work).
const LOCK_POLL_NS: u64 = 50_000;
const LOCK_POLL_MAX_NS: u64 = 1_000_000;
/// Longest time one write of a slot keeps trying. Generous: under a burst of 64 connections on
/// one card, the edge's instances take turns at a durable store that commits one swap at a
/// time (a few ms each, tens at load 10), and a turn can lose to the others many times over.
pub const UPDATE_BUDGET_NS: u64 = 3_000_000_000;
/// Most compare-and-swap attempts for one entity of one transaction.
pub const MAX_ATTEMPTS: u32 = 2_000;
/// First pause between attempts; it doubles (randomised) up to [`MAX_BACKOFF_NS`].
const BACKOFF_NS: u64 = 20_000;
const MAX_BACKOFF_NS: u64 = 4_000_000;
/// How long a ticketed writer waits for the stored state to move on before it takes the tickets
/// ahead of it for dead (their writer failed between drawing and writing), per ticket ahead, up
/// to [`TURN_STALL_TICKETS`] of them. Far above a live turn (a read and a write, well under a
/// millisecond) so that only a dead ticket is ever skipped; below [`UPDATE_BUDGET_NS`] so that
/// a waiter skips before it gives up (which would leave a dead ticket of its own).
pub const TURN_STALL_NS: u64 = 400_000_000;
/// Most tickets ahead that lengthen the wait before a skip (see [`TURN_STALL_NS`]).
const TURN_STALL_TICKETS: u64 = 4;
/// First and longest pause between looks at whether a ticket's turn has come.
const TURN_POLL_NS: u64 = 20_000;
const TURN_POLL_MAX_NS: u64 = 500_000;
/// Writes whose nonces a stored state remembers (see [`Stored`]).
pub const RING: usize = 16;
/// First byte of a slot's value.
const ENVELOPE: u8 = 0xE8;
/// Most live entity states one slot keeps.
pub const SLOT_ENTITIES: usize = 8;

/// How velocity state is written (`velocity_writes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    /// `atomic` (default): compare-and-swap, trusting the store to refuse a swap whose value
    /// changed (Spin's SQLite stores, in memory or on file, do: `UPDATE … WHERE value = old`).
    /// Only the write that creates a slot is read back (that one is unconditional there).
    Atomic,
    /// `verified`: compare-and-swap with every write read back, for a store that may report a
    /// swap it did not make. One more read per entity and request.
    Verified,
    /// `ticketed`: no compare-and-swap at all. A writer draws a ticket from the store's atomic
    /// increment (`<key>/turn`), waits until the stored state is the one written by the ticket
    /// before its own, then reads it and writes (a plain set). For a store whose increment is
    /// atomic but whose compare-and-swap cannot be trusted: Spin 4.1's Redis store (`INCRBY` on
    /// its shared connection; its swap opens a connection per handle and reports aborted
    /// transactions as written). See [`update_ticketed`].
    Ticketed,
    /// `plain`: read, then write; concurrent writes from other instances may be lost.
    Plain,
}

/// The slots this instance's requests are writing, and the observations waiting for the next
/// write of each (see [`Locks::write`]).
#[derive(Default)]
pub(crate) struct Locks(RefCell<HashMap<String, Lane>>);

/// One slot's traffic in this instance.
#[derive(Default)]
struct Lane {
    /// A request is writing the slot.
    busy: bool,
    /// Observations queued for the next write, in arrival order.
    waiting: Vec<Rc<Job>>,
}

/// One entity's observation of one transaction, as any request of the instance can apply it.
struct Job {
    spec: &'static VelocitySpec,
    entity: usize,
    fingerprint: u64,
    t: i64,
    judged_at: i64,
    payload: Rc<Map<String, Value>>,
    /// The transaction's velocity values: this entity's are filled in by [`Job::apply`].
    values: RefCell<Vec<f64>>,
    /// The entity pushed out of the slot to make room for this one, if any.
    evicted: Cell<Option<u64>>,
    /// Set once the write that carried it is over: whether it landed, or the store's error.
    outcome: RefCell<Option<Result<bool, String>>>,
}

impl Job {
    fn apply(&self, stored: &mut Stored) {
        let (spec, e) = (self.spec, self.entity);
        let (state, out) = stored.entity(self.fingerprint, |s| spec.outlived(e, s, self.judged_at));
        let payload = contract::JsonPayload(&self.payload);
        spec.observe(e, state, self.t, &payload, &mut self.values.borrow_mut());
        self.evicted.set(out);
    }
}

/// A request's turn at writing a slot; ends the turn when dropped, also when the request is
/// dropped mid-write (its batch then answers as given up: whether that write landed is unknown,
/// and a stale answer is the honest one).
struct Turn<'l> {
    locks: &'l Locks,
    key: &'l str,
    batch: Vec<Rc<Job>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        for job in &self.batch {
            job.outcome.borrow_mut().get_or_insert(Ok(false));
        }
        let mut lanes = self.locks.0.borrow_mut();
        if let Some(lane) = lanes.get_mut(self.key) {
            lane.busy = false;
            if lane.waiting.is_empty() {
                lanes.remove(self.key);
            }
        }
    }
}

impl Locks {
    /// Applies `job` to the slot under `key` and writes it, together with whatever else this
    /// instance has queued for that slot (group commit): while one request writes a slot, the
    /// observations of the others queue, and the next of them to find the slot free writes them
    /// all, in arrival order, with one swap. A burst on one card then costs one durable write
    /// per turn rather than one per transaction, and the instance's requests never conflict
    /// with each other. After [`LOCK_WAIT_NS`] in the queue a job is written alone.
    async fn write<H: Host>(
        &self,
        host: &H,
        key: &str,
        job: Rc<Job>,
        writes: Writes,
    ) -> Result<bool, String> {
        self.0
            .borrow_mut()
            .entry(key.to_owned())
            .or_default()
            .waiting
            .push(job.clone());
        let start = host.monotonic_ns();
        let mut pause = LOCK_POLL_NS;
        loop {
            if let Some(outcome) = job.outcome.borrow_mut().take() {
                return outcome;
            }
            let next = {
                let late = host.monotonic_ns().saturating_sub(start) >= LOCK_WAIT_NS;
                let mut lanes = self.0.borrow_mut();
                match lanes.get_mut(key) {
                    Some(lane) => match lane.waiting.iter().position(|j| Rc::ptr_eq(j, &job)) {
                        // Not queued and not answered: a turn carries it; wait for that turn.
                        None => Next::Wait,
                        Some(_) if !lane.busy => {
                            lane.busy = true;
                            Next::Turn(std::mem::take(&mut lane.waiting))
                        }
                        // Queued behind a turn that does not end: go ahead alone (and perhaps
                        // conflict with that turn: slower, never wrong).
                        Some(i) if late => Next::Alone(lane.waiting.remove(i)),
                        Some(_) => Next::Wait,
                    },
                    // (Cannot happen: a lane lives while a job is queued or carried.)
                    None => Next::Alone(job.clone()),
                }
            };
            match next {
                Next::Wait => {
                    host.sleep(pause).await;
                    pause = (pause * 2).min(LOCK_POLL_MAX_NS);
                }
                Next::Alone(job) => return write_batch(host, key, &[job], writes).await,
                Next::Turn(batch) => {
                    let turn = Turn {
                        locks: self,
                        key,
                        batch,
                    };
                    let outcome = write_batch(host, key, &turn.batch, writes).await;
                    for j in &turn.batch {
                        *j.outcome.borrow_mut() = Some(outcome.clone());
                    }
                }
            }
        }
    }
}

/// What a queued request does next.
enum Next {
    Wait,
    Turn(Vec<Rc<Job>>),
    Alone(Rc<Job>),
}

/// Writes `batch`'s observations of the slot under `key` with one update.
async fn write_batch<H: Host>(
    host: &H,
    key: &str,
    batch: &[Rc<Job>],
    writes: Writes,
) -> Result<bool, String> {
    let apply = |stored: &mut Stored| batch.iter().for_each(|j| j.apply(stored));
    match writes {
        Writes::Atomic => update(host, key, apply, false).await,
        Writes::Verified => update(host, key, apply, true).await,
        Writes::Ticketed => update_ticketed(host, key, apply).await,
        Writes::Plain => update_plainly(host, key, apply).await,
    }
}

/// One slot's stored value: the states of the entities hashed to it, plus what shows whether a
/// write landed.
///
/// Bytes: `0xE8`, `seq` (u64 LE, the number of writes so far; with ticketed writes the ticket
/// of the last), `n` (u8 ≤ [`RING`]), `n` nonces
/// (u64 LE, oldest first; the last is write `seq`'s), `m` (u8 ≤ [`SLOT_ENTITIES`]), then `m`
/// times: the entity's fingerprint (u64 LE), the length of its state (u32 LE) and
/// [`EntityState::encode`]'s bytes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Stored {
    pub(crate) seq: u64,
    pub(crate) nonces: Vec<u64>,
    pub(crate) entities: Vec<(u64, EntityState)>,
}

impl Stored {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Stored, String> {
        let truncated = || "velocity state: truncated".to_string();
        if bytes.first() != Some(&ENVELOPE) {
            return Err("velocity state: not a slot value".into());
        }
        let head = bytes.get(1..10).ok_or_else(truncated)?;
        let seq = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let n = usize::from(head[8]);
        if n > RING {
            return Err("velocity state: too many nonces".into());
        }
        let ring = bytes.get(10..10 + 8 * n).ok_or_else(truncated)?;
        let nonces = ring
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let mut at = 10 + 8 * n;
        let m = usize::from(*bytes.get(at).ok_or_else(truncated)?);
        if m > SLOT_ENTITIES {
            return Err("velocity state: too many entities".into());
        }
        at += 1;
        let mut entities = Vec::with_capacity(m);
        for _ in 0..m {
            let head = bytes.get(at..at + 12).ok_or_else(truncated)?;
            let fingerprint = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
            at += 12;
            let state = bytes
                .get(at..at.saturating_add(len))
                .ok_or_else(truncated)?;
            at += len;
            let state = EntityState::decode(state).map_err(|e| e.to_string())?;
            entities.push((fingerprint, state));
        }
        if at != bytes.len() {
            return Err("velocity state: trailing bytes".into());
        }
        Ok(Stored {
            seq,
            nonces,
            entities,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let states: Vec<Vec<u8>> = self.entities.iter().map(|(_, s)| s.encode()).collect();
        let size = states.iter().map(|s| 12 + s.len()).sum::<usize>();
        let mut out = Vec::with_capacity(11 + 8 * self.nonces.len() + size);
        out.push(ENVELOPE);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.push(self.nonces.len() as u8);
        for n in &self.nonces {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(self.entities.len() as u8);
        for ((fingerprint, _), state) in self.entities.iter().zip(&states) {
            out.extend_from_slice(&fingerprint.to_le_bytes());
            out.extend_from_slice(&(state.len() as u32).to_le_bytes());
            out.extend_from_slice(state);
        }
        out
    }

    /// The state of the entity `fingerprint`, made room for: the states `outlived` says can no
    /// longer change a feature are dropped first; then, if the slot is full, the least recently
    /// seen goes (its fingerprint is returned).
    pub(crate) fn entity(
        &mut self,
        fingerprint: u64,
        outlived: impl Fn(&EntityState) -> bool,
    ) -> (&mut EntityState, Option<u64>) {
        self.entities
            .retain(|(f, s)| *f == fingerprint || !outlived(s));
        let mut evicted = None;
        let found = self.entities.iter().position(|(f, _)| *f == fingerprint);
        let at = found.unwrap_or_else(|| {
            if self.entities.len() >= SLOT_ENTITIES {
                let oldest = (0..self.entities.len())
                    .min_by_key(|&i| self.entities[i].1.last_ms())
                    .expect("a full slot");
                evicted = Some(self.entities.remove(oldest).0);
            }
            self.entities.push((fingerprint, EntityState::default()));
            self.entities.len() - 1
        });
        (&mut self.entities[at].1, evicted)
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
    spec: &'static VelocitySpec,
    fields: &Map<String, Value>,
    locks: &Locks,
    writes: Writes,
    slots: u32,
) -> Result<(Vec<f64>, bool), ApiError> {
    let payload = contract::JsonPayload(fields);
    let bad = |e: model_format::velocity::VelocityError| ApiError::bad_request(e.to_string());
    spec.check(&payload).map_err(bad)?;
    let now = host.now().timestamp_millis();
    let t = spec.event_time(&payload, now).map_err(bad)?;
    // Other entities' states are judged at the edge's clock when the caller dates its event
    // ahead of it: a transaction dated next year must not make its slot-mates look outlived.
    let judged_at = t.min(now);
    let mut values = vec![0.0; spec.features().len()];
    spec.no_history(&mut values);
    let mut stale = false;
    let mut shared: Option<Rc<Map<String, Value>>> = None;
    for e in 0..spec.entities().len() {
        let Some(id) = spec.entity_id(&payload, e).map_err(bad)? else {
            continue;
        };
        let (key, fingerprint) = spec.state_slot(e, &id, slots);
        let job = Rc::new(Job {
            spec,
            entity: e,
            fingerprint,
            t,
            judged_at,
            payload: shared
                .get_or_insert_with(|| Rc::new(fields.clone()))
                .clone(),
            values: RefCell::new(values),
            evicted: Cell::new(None),
            outcome: RefCell::new(None),
        });
        let written = locks.write(host, &key, job.clone(), writes).await;
        values = job.values.take();
        let written = written.map_err(|err| {
            // Scoring without history would answer with numbers the model never saw for
            // this entity: refuse instead (503: worth retrying).
            ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                format!("velocity state unavailable: {err}"),
            )
        })?;
        stale |= !written;
        if let Some(other) = job.evicted.get().filter(|_| written) {
            eprintln!(
                "worker: {key}: full of live states; entity {other:016x} starts afresh (raise velocity_slots)"
            );
        }
    }
    Ok((values, stale))
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
    apply: impl FnOnce(&mut Stored),
) -> Result<bool, String> {
    let mut stored = decode_or_fresh(key, host.state_get(key).await?);
    apply(&mut stored);
    let nonce = u64::from_le_bytes(host.random_bytes::<8>());
    stored.record(nonce);
    if let Err(e) = host.state_set(key, &stored.encode()).await {
        // The answer still holds the values; only later windows miss this transaction.
        eprintln!("worker: writing velocity state {key} failed: {e}");
    }
    Ok(true)
}

/// The counter ticketed writers of `key` draw their turns from (see [`update_ticketed`]).
pub(crate) fn turn_key(key: &str) -> String {
    format!("{key}/turn")
}

/// `velocity_writes = ticketed`: writes of `key` in the order of tickets drawn from the store's
/// atomic increment of [`turn_key`], with plain reads and writes.
///
/// The stored state's `seq` is the ticket of the write that made it. A writer draws ticket `t`,
/// waits until it reads a state with `seq = t - 1` (the turn before its own has landed), applies
/// its observations to exactly that state and writes it with `seq = t`. Every ticket is drawn
/// once, so each turn builds on the one before and no update is lost, however many instances
/// and edges write one entity. What can go wrong, and what happens then:
///
/// - **A dead ticket**: its writer failed between drawing and writing (a store error, an
///   instance killed, a turn out of time). The state stops at `seq = t - 1` and the waiters
///   behind it wait [`TURN_STALL_NS`] per ticket ahead of them (so the nearest goes first); then
///   the waiter skips: it draws a fresh ticket (the latest) and writes with that, taking every
///   ticket before it for dead. A live waiter whose ticket that passes sees a state beyond its
///   ticket and draws again (nothing lost). Only a writer that took longer than the stall
///   between reading its turn and writing it could lose an update to a skip.
/// - **A counter behind the state** (it was lost, or the state was written before tickets):
///   a ticket at or below the state's `seq` is moved past it with one more increment.
async fn update_ticketed<H: Host>(
    host: &H,
    key: &str,
    mut apply: impl FnMut(&mut Stored),
) -> Result<bool, String> {
    let nonce = u64::from_le_bytes(host.random_bytes::<8>());
    let turns = turn_key(key);
    let start = host.monotonic_ns();
    let mut ticket = draw(host, &turns, 1).await?;
    // The state's seq as first seen at, to tell a dead ticket from a slow queue.
    let mut seen: Option<(u64, u64)> = None;
    let mut pause = TURN_POLL_NS;
    loop {
        let mut stored = decode_or_fresh(key, host.state_get(key).await?);
        let now = host.monotonic_ns();
        if stored.seq >= ticket {
            // Our ticket was skipped (taken for dead) or the counter is behind the state:
            // draw again, past the state.
            ticket = draw(host, &turns, 1).await?;
            if ticket <= stored.seq {
                ticket = draw(host, &turns, (stored.seq + 1 - ticket) as i64).await?;
            }
            continue;
        }
        let ahead = ticket - stored.seq - 1;
        let since = match seen {
            Some((seq, at)) if seq == stored.seq => at,
            _ => {
                seen = Some((stored.seq, now));
                now
            }
        };
        let stalled = now.saturating_sub(since) >= TURN_STALL_NS * ahead.min(TURN_STALL_TICKETS);
        if ahead == 0 || stalled {
            if ahead > 0 {
                // The tickets ahead are dead: write with the latest ticket, so that every live
                // waiter before it draws again rather than writing over this.
                ticket = draw(host, &turns, 1).await?;
                eprintln!(
                    "worker: {key}: velocity state stood at write {} for {} ms; taking {} \
                     tickets before {ticket} for dead",
                    stored.seq,
                    now.saturating_sub(since) / 1_000_000,
                    ticket - stored.seq - 1
                );
            }
            apply(&mut stored);
            stored.record(nonce);
            stored.seq = ticket;
            host.state_set(key, &stored.encode()).await?;
            return Ok(true);
        }
        if now.saturating_sub(start) >= UPDATE_BUDGET_NS {
            // Out of time behind live turns: answered from the state last read, not recorded;
            // our ticket dies (the waiters behind skip it).
            apply(&mut stored);
            let ms = now.saturating_sub(start) / 1_000_000;
            eprintln!("worker: {key}: velocity update given up after {ms} ms waiting for its turn");
            return Ok(false);
        }
        host.sleep(pause).await;
        pause = (pause * 2).min(TURN_POLL_MAX_NS);
    }
}

/// Adds `delta` to the turn counter `turns` and returns the ticket drawn.
async fn draw<H: Host>(host: &H, turns: &str, delta: i64) -> Result<u64, String> {
    // A negative counter (nothing here writes one) is behind every state: taken as 0, the
    // caller moves it past the state.
    Ok(u64::try_from(host.state_increment(turns, delta).await?).unwrap_or(0))
}

/// The counter whose first increment makes a writer the creator of `key`'s state.
pub(crate) fn birth_key(key: &str) -> String {
    format!("{key}/born")
}

/// Applies `apply` to the state under `key` and swaps the result in, until a write lands: the
/// store accepts the swap and, when `verify` (or the write created the key), the value read back
/// holds it. `apply` runs once per attempt on the state as read (its side effects — the feature
/// values — are those of the last attempt). Ok(false): out of time or attempts, nothing
/// recorded.
async fn update<H: Host>(
    host: &H,
    key: &str,
    mut apply: impl FnMut(&mut Stored),
    verify: bool,
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
        let creating = current.is_none();
        let mut stored = decode_or_fresh(key, current);
        apply(&mut stored);
        stored.record(nonce);
        let seq = stored.seq;
        match host.state_swap(cas, stored.encode()).await? {
            Swap::Conflict(next) => cas = next,
            Swap::Written if !verify && !creating => return Ok(true),
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
    fn stored_slots_round_trip_and_refuse_damage() {
        let mut s = Stored::default();
        for n in 1..=20 {
            s.record(n);
        }
        assert_eq!(s.seq, 20);
        assert_eq!(s.nonces, (5..=20).collect::<Vec<_>>());
        assert_eq!(Stored::decode(&s.encode()).unwrap(), s);
        s.entities.push((7, EntityState::default()));
        s.entities.push((9, EntityState::default()));
        let bytes = s.encode();
        assert_eq!(Stored::decode(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(Stored::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Stored::decode(&longer).is_err());
        // A value from an edge before slots (an entity's state alone) is not read as a slot.
        assert!(Stored::decode(&EntityState::default().encode()).is_err());
        assert!(Stored::decode(&[ENVELOPE, 0, 0, 0, 0, 0, 0, 0, 0, 99]).is_err());
    }

    #[test]
    fn a_slot_drops_outlived_states_and_pushes_out_the_least_recently_seen_when_full() {
        use model_format::velocity::VelocitySpec;
        let spec = VelocitySpec::new("timestamp", &[("n", "count by card_id over 10m")]).unwrap();
        let p = serde_json::Map::new();
        let payload = contract::JsonPayload(&p);
        let minute = 60_000;
        let mut slot = Stored::default();
        let mut values = [0.0];
        // Eight cards seen at minutes 0..8 fill the slot.
        for card in 0..SLOT_ENTITIES as u64 {
            let t = card as i64 * minute;
            let (state, out) = slot.entity(card, |s| spec.outlived(0, s, t));
            assert_eq!(out, None);
            spec.observe(0, state, t, &payload, &mut values);
        }
        // Card 0 again: found, nothing pushed out.
        let t = 9 * minute;
        let (state, out) = slot.entity(0, |s| spec.outlived(0, s, t));
        assert_eq!(out, None);
        spec.observe(0, state, t, &payload, &mut values);
        assert_eq!(values, [1.0]);
        // A ninth card while all are live: the least recently seen (card 1) makes room.
        let t = 10 * minute;
        let (_, out) = slot.entity(100, |s| spec.outlived(0, s, t));
        assert_eq!(out, Some(1));
        assert_eq!(slot.entities.len(), SLOT_ENTITIES);
        // At minute 18 every state but card 0's (minute 9) has outlived its 10 minutes (card
        // 100's never recorded anything): they are gone before anything is pushed out.
        let t = 18 * minute;
        let (_, out) = slot.entity(200, |s| spec.outlived(0, s, t));
        assert_eq!(out, None);
        let kept: Vec<u64> = slot.entities.iter().map(|(f, _)| *f).collect();
        assert_eq!(kept, [0, 200]);
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
