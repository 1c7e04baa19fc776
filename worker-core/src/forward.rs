//! Write forwarding: scored transactions and feedback leave the request path and reach the
//! central store, surviving store outages without loss or duplication, and no single bad event
//! can hold up the events behind it.
//!
//! The response is never held for the store. With `forward_journal = on` (the default) a
//! handler first writes its events to the key-value store's outbox ([`Forwarder::journal`],
//! key `outbox/<UUIDv7>`, so keys sort oldest first) and answers only once that write
//! succeeded: an answered transaction is durable before the caller sees it, whatever happens
//! to the instance or the process afterwards (kill -9, SIGTERM, a rolling deploy). If the
//! write fails the request is answered 503 and nothing was answered. With `forward_journal =
//! off` the events are kept in memory only until delivered or parked (faster; a crash loses
//! what was in memory: the 10 ms batch, retries, the cool-down).
//!
//! Either way [`Forwarder::submit`] queues them in the instance and, if no flush is under way,
//! spawns one (the task runs on after the response has been sent). The flush waits 10 ms, then
//! sends what has queued up as one batch (at most [`FORWARD_MAX_EVENTS`] events and
//! [`FORWARD_MAX_BYTES`] bytes), retrying with exponential backoff, and deletes the journal
//! entries it delivered. Events the store would still not take stay in (or, without the
//! journal, are written to) the outbox and are sent again by later drains once the store
//! answers. A drain takes the entries this instance failed to deliver and others' only once
//! they are [`ORPHAN_AFTER_MS`] old (younger ones belong to a live instance's flush); it starts
//! at most once a second per instance, from any request — also `/api/health`, so a liveness
//! probe drains an otherwise idle edge. It sends a POST's worth at a time, in turn with the
//! instance's new events, and starts at a random entry: after an outage every new instance drains the
//! same large outbox, and from different starting points they share the work instead of each
//! reading all of it (an entry found gone was another drain's; after a run of them the drain
//! stops and a later one lists what is left).
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

/// An outbox entry younger than this may still be in a live instance's flush: drains leave it.
pub const ORPHAN_AFTER_MS: i64 = 2_000;

/// An outbox entry older than this was not delivered by a live flush (those take milliseconds):
/// a drain that leaves one waits for it to become an orphan.
pub const STALE_AFTER_MS: i64 = 500;

/// Least time between two outbox drains of one instance (each lists the keys).
const DRAIN_INTERVAL_NS: u64 = 1_000_000_000;

/// Key prefix of batches waiting for the store.
pub const OUTBOX: &str = "outbox/";
/// Key prefix of events the store refused, kept for an operator.
pub const DEAD_LETTER: &str = "deadletter/";

/// Serialized events (one request's, or one POST-sized part of a large one's) and their
/// journal entry (None: in memory only).
#[derive(Debug)]
pub(crate) struct Entry {
    key: Option<String>,
    events: Vec<String>,
}

/// The per-instance forwarding state.
#[derive(Debug)]
pub struct Forwarder {
    /// Events waiting for the next flush.
    pending: RefCell<Vec<Entry>>,
    /// A flush task is running in this instance.
    flushing: Cell<bool>,
    /// The outbox may hold entries (true at instance start: an earlier instance may have
    /// left some).
    outbox_maybe_full: Cell<bool>,
    /// Monotonic time before which the store is taken as down.
    down_until: Cell<u64>,
    /// Monotonic time before which this instance does not drain the outbox again.
    next_drain: Cell<u64>,
    /// Journal entries this instance failed to deliver: its drains take them at any age.
    own_undelivered: RefCell<std::collections::BTreeSet<String>>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder {
            pending: RefCell::new(Vec::new()),
            flushing: Cell::new(false),
            outbox_maybe_full: Cell::new(true),
            down_until: Cell::new(0),
            next_drain: Cell::new(0),
            own_undelivered: RefCell::new(std::collections::BTreeSet::new()),
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
        self.pending.borrow().iter().map(|e| e.events.len()).sum()
    }

    /// Splits one request's events into POST-sized entries and, when `journal`, writes each to
    /// the outbox before the request is answered.
    pub(crate) async fn entries<H: Host>(
        host: &H,
        events: Vec<String>,
        journal: bool,
    ) -> Result<Vec<Entry>, String> {
        let mut entries = Vec::new();
        let mut rest = events;
        while !rest.is_empty() {
            let n = fitting(rest.iter().map(std::slice::from_ref));
            let tail = rest.split_off(n);
            let events = std::mem::replace(&mut rest, tail);
            let key = if journal {
                let key = format!("{OUTBOX}{}", crate::ids::new_uuid(host));
                persist(host, &key, json_array(&events).as_bytes()).await?;
                Some(key)
            } else {
                None
            };
            entries.push(Entry { key, events });
        }
        Ok(entries)
    }

    /// Queues entries (from [`Forwarder::entries`]) for the store and makes sure a flush is
    /// under way.
    pub(crate) fn submit<H: Host>(
        &'static self,
        host: &'static H,
        config: &'static StoreConfig,
        entries: Vec<Entry>,
    ) {
        self.pending.borrow_mut().extend(entries);
        if !self.flushing.replace(true) {
            host.spawn(Box::pin(self.flush(host, config)));
        }
    }

    /// After any request: drains the outbox when it may hold entries and no flush runs, so an
    /// edge without predictions (only health probes) still empties it.
    pub(crate) fn after_request<H: Host>(
        &'static self,
        host: &'static H,
        config: &'static StoreConfig,
    ) {
        if self.outbox_maybe_full.get()
            && host.monotonic_ns() >= self.next_drain.get().max(self.down_until.get())
            && !self.flushing.replace(true)
        {
            host.spawn(Box::pin(self.flush(host, config)));
        }
    }

    /// Sends queued events until none are left and drains the outbox when it may hold entries
    /// and the store is up: a batch of new events, then a POST's worth of the outbox, in turn,
    /// so that neither waits for the other to end (a busy long-lived instance always has new
    /// events; a large outbox takes seconds).
    async fn flush<H: Host>(&'static self, host: &'static H, config: &'static StoreConfig) {
        let mut stuck = false;
        let mut drain: Option<Drain> = None;
        // When entries a drain left become orphans (this flush waits for them once: `waited`).
        let mut orphans_at: Option<u64> = None;
        let mut waited = false;
        // This flush waited for the cool-down to try its own undelivered entries again (once).
        let mut retried = false;
        // The end of such a wait: then the outbox is drained once more.
        let mut resume_at: Option<u64> = None;
        loop {
            if !self.pending.borrow().is_empty() {
                // Let events gather first: one POST per flush interval, not one per request,
                // keeps the store's and the database's share of the CPU (which the edge may
                // share) small.
                if self.pending.borrow().len() < FORWARD_MAX_EVENTS {
                    host.sleep(FLUSH_INTERVAL_NS).await;
                }
                let (keys, batch) = self.take_batch();
                if !batch.is_empty() && !self.forward(host, config, keys, batch).await {
                    stuck = true;
                    break;
                }
            }
            if let Some(current) = drain.as_mut() {
                match self.drain_step(host, config, current).await {
                    Step::More => {}
                    Step::Stopped => drain = None,
                    Step::Done => {
                        let done = drain.take().expect("a drain under way");
                        self.outbox_maybe_full.set(done.skipped);
                        // Entries an instance that stopped delivering left (a store outage, a
                        // retired instance) may not be orphans yet: note when they will be,
                        // for the wait below (the queue may be busy now: after an outage the
                        // first drain often runs amid a burst of requests).
                        if let Some(wait_ns) = done.wait_ns()
                            && !waited
                        {
                            orphans_at = Some(host.monotonic_ns() + wait_ns);
                        }
                    }
                }
                continue;
            }
            let now = host.monotonic_ns();
            if self.outbox_maybe_full.get()
                && now >= self.down_until.get()
                && now >= self.next_drain.get()
            {
                self.next_drain.set(now + DRAIN_INTERVAL_NS);
                drain = self.list_outbox(host).await;
                if drain.is_some() {
                    continue;
                }
            }
            if self.pending.borrow().is_empty() {
                // Nothing queued. Spin runs an instance only for requests, so before it ends
                // with entries it knows are undelivered, it waits for the moment a drain can
                // take them (each case once): left entries' coming of age, or, for its own
                // entries (say, the events of requests answered in a cool-down), the end of
                // the cool-down. Without this, an edge whose traffic stops just after the
                // store comes back keeps them until its next request.
                let now = host.monotonic_ns();
                if let Some(at) = resume_at {
                    if now < at {
                        // In slices, so events queued meanwhile are not held up.
                        host.sleep(FLUSH_INTERVAL_NS.min(at - now)).await;
                    } else {
                        resume_at = None;
                        self.next_drain.set(0);
                    }
                    continue;
                }
                if let Some(at) = orphans_at.take() {
                    waited = true;
                    resume_at = Some(at.max(self.down_until.get()));
                    continue;
                }
                if !retried
                    && self.outbox_maybe_full.get()
                    && !self.own_undelivered.borrow().is_empty()
                {
                    retried = true;
                    resume_at = Some(self.down_until.get().max(self.next_drain.get()));
                    continue;
                }
                break;
            }
        }
        self.flushing.set(false);
        // Events queued at the very end would otherwise wait for the next request. Not after a
        // key-value failure: they wait in memory for the next request rather than keep a task
        // spinning (and the instance alive).
        if !stuck && !self.pending.borrow().is_empty() && !self.flushing.replace(true) {
            host.spawn(Box::pin(self.flush(host, config)));
        }
    }

    /// Sends one batch of queued events (journaled under `keys`); false if they are back in
    /// memory because the key-value store failed too.
    async fn forward<H: Host>(
        &self,
        host: &H,
        config: &StoreConfig,
        keys: Vec<String>,
        batch: Vec<String>,
    ) -> bool {
        // In the cool-down after a failure nothing is sent, and the cool-down is not renewed:
        // the first batch after it tries the store again, however busy the edge.
        let (left, why) = if host.monotonic_ns() < self.down_until.get() {
            (
                batch,
                "store marked down after a recent failure".to_string(),
            )
        } else {
            match self.send(host, config, batch, true).await {
                Sent::All => {
                    delete_all(host, &keys).await;
                    return true;
                }
                Sent::Stuck => return false,
                Sent::Stopped { left, why } => {
                    self.down_until.set(host.monotonic_ns() + COOL_DOWN_NS);
                    (left, why)
                }
            }
        };
        if keys.is_empty() {
            return self.park(host, OUTBOX, &left, &why).await;
        }
        // Journaled: the events are in the outbox already; a drain sends them.
        self.outbox_maybe_full.set(true);
        self.own_undelivered.borrow_mut().extend(keys);
        eprintln!(
            "worker: store delivery failed ({why}); {} event(s) stay in the outbox",
            left.len()
        );
        true
    }

    /// The oldest pending entries that fit one request (whole entries, at least one), with
    /// their journal keys.
    fn take_batch(&self) -> (Vec<String>, Vec<String>) {
        let mut pending = self.pending.borrow_mut();
        let n = fitting(pending.iter().map(|e| e.events.as_slice()));
        let mut keys = Vec::new();
        let mut events = Vec::new();
        for entry in pending.drain(..n) {
            keys.extend(entry.key);
            events.extend(entry.events);
        }
        (keys, events)
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
                    self.own_undelivered.borrow_mut().insert(key.clone());
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
                self.pending.borrow_mut().push(Entry {
                    key: None,
                    events: events.to_vec(),
                });
                false
            }
        }
    }

    /// Lists the outbox entries a drain takes: this instance's own undelivered ones, and
    /// others' once [`ORPHAN_AFTER_MS`] old. Oldest first from a random entry on: every new
    /// instance drains, and after an outage many start at once on the same large outbox;
    /// from different starting points they send different entries rather than all the same.
    async fn list_outbox<H: Host>(&self, host: &H) -> Option<Drain> {
        let keys = host.kv_keys().await.ok()?;
        let mut keys: Vec<String> = keys.into_iter().filter(|k| k.starts_with(OUTBOX)).collect();
        keys.sort();
        let now_ms = host.now().timestamp_millis();
        let mut own = self.own_undelivered.borrow_mut();
        // Entries another instance delivered meanwhile are not this one's to wait for.
        own.retain(|k| keys.binary_search(k).is_ok());
        let mut drain = Drain::default();
        for key in keys {
            let age = now_ms - outbox_key_millis(&key).unwrap_or(0);
            if own.contains(&key) || age >= ORPHAN_AFTER_MS {
                drain.keys.push(key);
            } else {
                drain.skipped = true;
                if age >= STALE_AFTER_MS && drain.youngest_stale.is_none_or(|y| age < y) {
                    drain.youngest_stale = Some(age);
                }
            }
        }
        if !drain.keys.is_empty() {
            let start = u64::from_le_bytes(host.random_bytes::<8>()) % drain.keys.len() as u64;
            drain.keys.rotate_left(start as usize);
        }
        Some(drain)
    }

    /// Sends the next POST's worth of a drain's entries and deletes them once the store has
    /// them. Redelivery (an entry sent by two instances, or after a lost answer) is harmless:
    /// the store deduplicates by event id.
    async fn drain_step<H: Host>(&self, host: &H, config: &StoreConfig, drain: &mut Drain) -> Step {
        let mut budget = Budget::default();
        let mut batch: Vec<(String, Vec<String>)> = Vec::new();
        loop {
            let (key, events) = if let Some(entry) = drain.carried.take() {
                entry
            } else {
                let Some(key) = drain.keys.get(drain.next).cloned() else {
                    break;
                };
                drain.next += 1;
                let body = match host.kv_get(&key).await {
                    Ok(Some(body)) => body,
                    // Another instance delivered it meanwhile: a run of these means this
                    // drain has caught up with another; a later listing goes on from what
                    // is left.
                    Ok(None) => {
                        drain.gone_in_a_row += 1;
                        if drain.gone_in_a_row >= GONE_BEFORE_RELISTING {
                            drain.skipped = true;
                            drain.keys.clear();
                        }
                        continue;
                    }
                    Err(_) => return Step::Stopped,
                };
                drain.gone_in_a_row = 0;
                match serde_json::from_slice::<Vec<Value>>(&body) {
                    Ok(events) => (key, events.iter().map(Value::to_string).collect()),
                    Err(e) => {
                        // Not ours to parse: keep it for an operator, out of the way.
                        let text = String::from_utf8_lossy(&body).into_owned();
                        let dead = format!("{DEAD_LETTER}{}", &key[OUTBOX.len()..]);
                        if host.kv_set(&dead, text.as_bytes()).await.is_err()
                            || host.kv_delete(&key).await.is_err()
                        {
                            return Step::Stopped;
                        }
                        eprintln!(
                            "worker: outbox entry {key} is not a JSON array: {e}; moved to the dead letters"
                        );
                        continue;
                    }
                }
            };
            if !budget.admit(&events) {
                drain.carried = Some((key, events));
                break;
            }
            batch.push((key, events));
        }
        if batch.is_empty() {
            return Step::Done;
        }
        let events: Vec<String> = batch.iter().flat_map(|(_, e)| e.iter().cloned()).collect();
        match self.send(host, config, events, false).await {
            Sent::All => {
                let keys: Vec<String> = batch.into_iter().map(|(k, _)| k).collect();
                delete_all(host, &keys).await;
                let mut own = self.own_undelivered.borrow_mut();
                keys.iter().for_each(|k| {
                    own.remove(k);
                });
                Step::More
            }
            Sent::Stopped { .. } => {
                self.down_until.set(host.monotonic_ns() + COOL_DOWN_NS);
                Step::Stopped
            }
            Sent::Stuck => Step::Stopped,
        }
    }
}

/// Entries a drain found gone one after another (delivered by another instance's drain) before
/// it stops and leaves the rest to a later listing.
const GONE_BEFORE_RELISTING: usize = 32;

/// An outbox drain under way.
#[derive(Default)]
struct Drain {
    /// The entries it takes, in the order it sends them.
    keys: Vec<String>,
    /// The next of `keys` to read.
    next: usize,
    /// An entry read that did not fit the last POST.
    carried: Option<(String, Vec<String>)>,
    /// Entries found gone since the last one read.
    gone_in_a_row: usize,
    /// Entries were left for later: young ones, or the rest after a run of gone ones.
    skipped: bool,
    /// The age (ms) of the youngest entry left that looks abandoned already (older than
    /// [`STALE_AFTER_MS`]; a live flush delivers its entries within milliseconds).
    youngest_stale: Option<i64>,
}

impl Drain {
    /// How long to wait before the entries it left become orphans, when some look abandoned.
    fn wait_ns(&self) -> Option<u64> {
        self.youngest_stale
            .map(|ms| (ORPHAN_AFTER_MS - ms).max(0) as u64 * 1_000_000 + 1_000_000)
    }
}

/// Where a drain got to after one step.
enum Step {
    /// One POST delivered; more may follow.
    More,
    /// Nothing left to send.
    Done,
    /// The store or the key-value store failed: a later drain goes on.
    Stopped,
}

/// What one POST may still hold.
struct Budget {
    entries: usize,
    events: usize,
    bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            entries: 0,
            events: 0,
            bytes: 2,
        }
    }
}

impl Budget {
    /// Takes `entry` (one request's events, kept whole) if it fits; the first always does.
    fn admit(&mut self, entry: &[String]) -> bool {
        let size: usize = entry.iter().map(|e| e.len() + 1).sum();
        if self.entries > 0
            && (self.events + entry.len() > FORWARD_MAX_EVENTS
                || self.bytes + size > FORWARD_MAX_BYTES)
        {
            return false;
        }
        self.entries += 1;
        self.events += entry.len();
        self.bytes += size;
        true
    }
}

/// How many of `entries` (each one request's events, kept whole) fit one POST: at least one.
fn fitting<'a>(entries: impl Iterator<Item = &'a [String]>) -> usize {
    let mut budget = Budget::default();
    entries.take_while(|entry| budget.admit(entry)).count()
}

/// Longest a journal write keeps retrying before the request is answered 503.
const JOURNAL_BUDGET_NS: u64 = 2_000_000_000;

/// Writes one journal entry, retrying failures with a growing pause (100 µs doubling to
/// 20 ms) within [`JOURNAL_BUDGET_NS`]: Spin's SQLite store answers "database is locked" at
/// once when another instance is writing, and a set of the same key is safe to repeat.
async fn persist<H: Host>(host: &H, key: &str, value: &[u8]) -> Result<(), String> {
    let deadline = host.monotonic_ns() + JOURNAL_BUDGET_NS;
    let mut pause = 100_000;
    loop {
        match host.kv_set(key, value).await {
            Ok(()) => return Ok(()),
            Err(e) if host.monotonic_ns() + pause > deadline => return Err(e),
            Err(_) => {
                host.sleep(pause).await;
                pause = (pause * 2).min(20_000_000);
            }
        }
    }
}

/// Deletes delivered outbox entries. One that cannot be deleted is drained and delivered again
/// later, which the store's deduplication makes harmless.
async fn delete_all<H: Host>(host: &H, keys: &[String]) {
    for key in keys {
        let mut result = host.kv_delete(key).await;
        // A locked store (see `persist`): a few more tries, off the answer's path.
        for pause in [1_000_000, 5_000_000, 20_000_000] {
            if result.is_ok() {
                break;
            }
            host.sleep(pause).await;
            result = host.kv_delete(key).await;
        }
        if let Err(e) = result {
            eprintln!(
                "worker: delivered outbox entry {key} not deleted ({e}); it will be sent again"
            );
        }
    }
}

/// The creation time (ms since the epoch) in an outbox key's UUIDv7; None for another key.
pub fn outbox_key_millis(key: &str) -> Option<i64> {
    let id = uuid::Uuid::parse_str(key.strip_prefix(OUTBOX)?).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
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
