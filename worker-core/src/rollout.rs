//! Model rollout at the edge: which model an instance serves, and how a model promoted in the
//! registry (the store's `/v1/models`, [`contract::models`]) reaches every instance without a
//! rebuild.
//!
//! # The key-value store is the edge's copy of the registry
//! - `model/channels` ([`EdgeChannels`]): the versions the edge serves (`live`, `shadow`) and
//!   where their bytes are. No `live` = the model embedded in the component.
//! - `model/bundle/<version>/<i>`: the model file and its TreeSHAP tables (built once by the
//!   refreshing instance, not by every instance) in one byte string, in parts of at most
//!   [`BUNDLE_PART_BYTES`], within Spin's guaranteed 1 MiB per value: what an instance start
//!   reads, in as few reads as the values allow (one for a 50-tree forest), because every read
//!   costs a fresh instance a host call and a thread hand-off.
//! - `model/file/<version>/<i>` and `model/tables/<version>/<i>`: the same file and tables
//!   apart, in parts of at most [`PART_BYTES`]: the layout workers before the bundle read
//!   and write. Still written, so that both kinds of worker can share one store during an
//!   upgrade, and still read when a copy has no bundle.
//! - `model/refresh` ([`RefreshState`]): who last asked the registry, when, and how it went.
//!
//! # Who does what, never on a request's path
//! - **Instance start** ([`Models::start`]): reads `model/channels` and loads what it names,
//!   checking that the bytes are those the storing instance verified (their XXH3, recorded
//!   beside them; see [`load`]), the version and the structure; anything that fails is
//!   refused, logged and counted, and the instance serves the embedded model (or its previous
//!   one).
//! - **After a request**, at most once a second per instance, a background task re-reads
//!   `model/channels` and switches when it names other versions, so a change reaches every
//!   running instance within about a second of being stored.
//! - **At most one refresh per `model_refresh_secs` across the edge's instances**: the same task
//!   reads `model/refresh`; when the interval has passed it writes its claim, reads it back and
//!   only then asks the registry (`GET /v1/models/channels` with `If-None-Match`, so an unchanged
//!   registry costs one 304). New versions are downloaded, verified with
//!   [`contract::models::verify`] (the store's rule), their tables built, stored in parts, and
//!   `model/channels` is written last, so a reader never sees a half-stored model. The claim is
//!   read-after-write, not compare-and-swap (Spin's `wasi:keyvalue/atomics` is not used): two
//!   instances that claim within the same few milliseconds may both refresh; both then store
//!   the same content-addressed parts, so that costs a download, never a wrong model.
//!
//! The parts of the previous live version are kept (an instance that read the old
//! `model/channels` just before the switch still finds them); older ones are deleted.
//! A switched instance keeps the bytes of the model it served before until it retires (they may
//! still be in use by requests in flight); Spin retires an instance after a bounded number of
//! requests, so this is bounded by model changes per instance life.

use std::cell::{Cell, RefCell};

use model_format::{FileTrust, Model, ModelId, TablesTrust};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::host::{Fetched, Host};
use crate::model::Loaded;
use crate::settings::{Rollout, StoreConfig};
use crate::trust::Trust;

/// Key of [`EdgeChannels`].
pub const CHANNELS_KEY: &str = "model/channels";
/// Key of [`RefreshState`].
pub const REFRESH_KEY: &str = "model/refresh";
/// Largest part of the separate file and tables (see the module docs).
pub const PART_BYTES: usize = 512 * 1024;
/// Largest part of a bundle: 4 KiB under Spin's guaranteed 1 MiB per value (a host may count
/// its own overhead in the limit), a multiple of 8 so that the tables, which start at a
/// multiple of 8, keep their alignment in every part.
pub const BUNDLE_PART_BYTES: usize = 1024 * 1024 - 4096;
/// How often an instance re-reads `model/channels`.
const CHECK_NS: u64 = 1_000_000_000;
/// Longest wait for one registry answer (a model download included).
const FETCH_TIMEOUT_NS: u64 = 20_000_000_000;

/// A model stored in the key-value store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredModel {
    /// Its version.
    pub version: String,
    /// `crc32:…` of the file.
    pub checksum: String,
    /// File length and parts.
    pub file_len: usize,
    /// See `file_len`.
    pub file_parts: usize,
    /// Tables length and parts (0 for a shadow model: it is never explained).
    pub tables_len: usize,
    /// See `tables_len`.
    pub tables_parts: usize,
    /// Their format ([`model_format::TABLES_VERSION`] of the worker that built them; copies
    /// stored before this field have format 1). Tables of another format are not installed
    /// but rebuilt: by a loading instance for itself, and stored again by the next refresh.
    #[serde(default = "first_tables_format")]
    pub tables_format: u32,
    /// When it was stored (ms since the epoch): a re-download after a refusal is a change.
    #[serde(default)]
    pub stored_at_ms: i64,
    /// XXH3-64 of the file and of the tables as the storing instance verified them (0: not
    /// recorded, so a loading instance checks everything itself).
    #[serde(default)]
    pub file_xxh3: u64,
    /// See `file_xxh3`.
    #[serde(default)]
    pub tables_xxh3: u64,
    /// The publisher's signature the storing instance verified (None: unsigned, accepted
    /// then). An instance loads the copy only while its key is still trusted.
    #[serde(default)]
    pub signature: Option<String>,
    /// Parts of `model/bundle/<version>`: the file, zeros up to a multiple of 8, the tables
    /// (0: stored without a bundle, by an earlier worker; the separate parts are read).
    #[serde(default)]
    pub bundle_parts: usize,
}

impl StoredModel {
    /// Where the tables start in the bundle (8-byte aligned, as installing wants them).
    fn bundle_tables_at(&self) -> usize {
        self.file_len.next_multiple_of(8)
    }
}

fn first_tables_format() -> u32 {
    1
}

/// `model/channels`: what the edge serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeChannels {
    /// The model answers come from; None = the embedded one.
    pub live: Option<StoredModel>,
    /// The model also scored.
    pub shadow: Option<StoredModel>,
    /// The registry's ETag for the channels these follow.
    pub etag: Option<String>,
    /// The `model_pin` in force when they were written.
    #[serde(default)]
    pub pin: Option<String>,
}

/// `model/refresh`: the edge-wide refresh claim and its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshState {
    /// The instance that claimed the last refresh.
    pub claimed_by: String,
    /// When (milliseconds since the epoch).
    pub claimed_at_ms: i64,
    /// When a refresh last completed (RFC 3339).
    pub last_refresh: Option<String>,
    /// Why the last refresh failed, if it did.
    pub last_error: Option<String>,
    /// Failed refreshes so far.
    pub failures: u64,
    /// A stored version an instance refused (corrupt parts): the next refresh downloads it
    /// again instead of keeping what is stored.
    #[serde(default)]
    pub refused: Option<String>,
}

/// What the instance serves and what it knows about the rollout.
pub(crate) struct Models {
    embedded: Result<&'static Loaded, String>,
    /// The registry model in use, if any (else `embedded`).
    live: Cell<Option<&'static Loaded>>,
    shadow: Cell<Option<&'static Loaded>>,
    /// The `model/channels` the instance follows.
    following: RefCell<EdgeChannels>,
    /// The last `model/channels` that failed to load (not retried until it changes).
    refused: RefCell<Option<EdgeChannels>>,
    status: RefCell<Status>,
    next_check_ns: Cell<u64>,
    checking: Cell<bool>,
    started: Cell<bool>,
}

/// For `/api/health` and `/api/model`.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Status {
    /// Edge-wide: the last completed registry refresh.
    pub(crate) last_refresh: Option<String>,
    /// Edge-wide: why the last refresh failed.
    pub(crate) last_refresh_error: Option<String>,
    /// Edge-wide: failed refreshes.
    pub(crate) refresh_failures: u64,
    /// This instance: models refused from the key-value store.
    pub(crate) verification_failures: u64,
    /// This instance: why the last one was refused.
    pub(crate) last_verification_error: Option<String>,
}

impl Models {
    /// Serving the embedded model only.
    pub(crate) fn embedded(embedded: Result<Loaded, String>) -> Self {
        Models {
            embedded: embedded.map(|l| &*Box::leak(Box::new(l))),
            live: Cell::new(None),
            shadow: Cell::new(None),
            following: RefCell::new(EdgeChannels::default()),
            refused: RefCell::new(None),
            status: RefCell::new(Status::default()),
            next_check_ns: Cell::new(0),
            checking: Cell::new(false),
            started: Cell::new(false),
        }
    }

    /// The model answers come from.
    pub(crate) fn live(&self) -> Result<&'static Loaded, &str> {
        match self.live.get() {
            Some(l) => Ok(l),
            None => self.embedded.as_ref().copied().map_err(String::as_str),
        }
    }

    /// The shadow model, if one is set.
    pub(crate) fn shadow(&self) -> Option<&'static Loaded> {
        self.shadow.get()
    }

    /// `embedded` or `registry`.
    pub(crate) fn source(&self) -> &'static str {
        if self.live.get().is_some() {
            "registry"
        } else {
            "embedded"
        }
    }

    pub(crate) fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Loads what `model/channels` names (at instance start). The first request's background
    /// check follows at once: instances may live well under [`CHECK_NS`] (Spin retires one
    /// after 128 requests), and each must still get its turn at the edge-wide refresh claim.
    pub(crate) async fn start<H: Host>(&self, host: &H, trust: &Trust) {
        self.sync(host, trust).await;
        if self.live.get().is_none() {
            self.embedded_tables(host);
        }
        self.started.set(true);
    }

    /// Installs the embedded model's tables when the host still has them (see
    /// [`Host::embedded_tables`]): decided once the instance knows which model it serves,
    /// because an instance on a registry model receives that model into their memory.
    fn embedded_tables<H: Host>(&self, host: &H) {
        if let Ok(embedded) = self.embedded
            && !embedded.tables_installed.get()
            && let Some(tables) = host.embedded_tables()
            && let Err(e) = embedded.install_tables(vec![tables], TablesTrust::CheckedForThisModel)
        {
            // Still correct, only slower: the tables are built on first use instead.
            eprintln!(
                "worker: embedded explanation tables not installed ({e}); building them lazily"
            );
        }
    }

    /// Spawns the background check when it is due (called after every request).
    pub(crate) fn after_request<H: Host + 'static>(
        &'static self,
        host: &'static H,
        rollout: &'static Rollout,
        store: Option<&'static StoreConfig>,
        instance: &'static str,
    ) {
        let now = host.monotonic_ns();
        if self.checking.get() || now < self.next_check_ns.get() {
            return;
        }
        self.checking.set(true);
        host.spawn(Box::pin(async move {
            if let (true, Some(store)) = (rollout.pull, store) {
                self.maybe_refresh(host, rollout, store, instance).await;
            }
            self.sync(host, &rollout.trust).await;
            self.next_check_ns.set(host.monotonic_ns() + CHECK_NS);
            self.checking.set(false);
        }));
    }

    /// Follows `model/channels`: loads and switches to what it names when that changed.
    async fn sync<H: Host>(&self, host: &H, trust: &Trust) {
        if let Ok(Some(raw)) = host.kv_get(REFRESH_KEY).await
            && let Ok(state) = serde_json::from_slice::<RefreshState>(&raw)
        {
            let mut status = self.status.borrow_mut();
            status.last_refresh = state.last_refresh;
            status.last_refresh_error = state.last_error;
            status.refresh_failures = state.failures;
        }
        let wanted = match host.kv_get(CHANNELS_KEY).await {
            Ok(Some(raw)) => match serde_json::from_slice::<EdgeChannels>(&raw) {
                Ok(c) => c,
                Err(e) => {
                    self.refuse(&format!("{CHANNELS_KEY} is not readable: {e}"), None);
                    return;
                }
            },
            Ok(None) => EdgeChannels::default(),
            // The key-value store is down: keep serving what we have.
            Err(_) => return,
        };
        let following = self.following.borrow().clone();
        if wanted.live == following.live && wanted.shadow == following.shadow {
            return;
        }
        if self.refused.borrow().as_ref() == Some(&wanted) {
            return;
        }
        // What is loaded already is kept; anything new is loaded with every check.
        let pick =
            async |want: &Option<StoredModel>, had: &Option<StoredModel>, cur, tables| match want {
                None => Ok(None),
                Some(s) if had.as_ref() == Some(s) => Ok(cur),
                // Stored under other trust settings (a key since removed, unsigned ones since
                // refused): not served; the next refresh downloads and checks it again.
                Some(s) if !trust.admits_stored(s.signature.as_deref()) => Err((
                    format!(
                        "{} in the key-value store: its signature is no longer trusted",
                        s.version
                    ),
                    s.version.clone(),
                )),
                Some(s) => load(host, s, tables)
                    .await
                    .map(Some)
                    .map_err(|e| (e, s.version.clone())),
            };
        let picked = match pick(&wanted.live, &following.live, self.live.get(), true).await {
            Ok(live) => pick(&wanted.shadow, &following.shadow, self.shadow.get(), false)
                .await
                .map(|shadow| (live, shadow)),
            Err(e) => Err(e),
        };
        let (live, shadow) = match picked {
            Ok(both) => both,
            Err((why, version)) => {
                self.refuse(&why, Some(wanted));
                report_refused(host, version).await;
                return;
            }
        };
        let from = self.live().map(|l| l.version.clone()).unwrap_or_default();
        if live.is_none() && self.started.get() {
            self.embedded_tables(host);
        }
        self.live.set(live);
        self.shadow.set(shadow);
        let to = self.live().map(|l| l.version.clone()).unwrap_or_default();
        // Logged for running instances only (not for every instance start).
        if from != to && self.started.get() {
            eprintln!(
                "worker: now serving {to} (was {from}, source {})",
                self.source()
            );
        }
        *self.following.borrow_mut() = wanted;
    }

    fn refuse(&self, why: &str, wanted: Option<EdgeChannels>) {
        eprintln!("worker: model in the key-value store refused, serving the previous one: {why}");
        let mut status = self.status.borrow_mut();
        status.verification_failures += 1;
        status.last_verification_error = Some(why.to_string());
        *self.refused.borrow_mut() = wanted;
    }

    /// Claims and runs the edge's registry refresh when the interval has passed.
    async fn maybe_refresh<H: Host>(
        &self,
        host: &H,
        rollout: &Rollout,
        store: &StoreConfig,
        instance: &str,
    ) {
        let now_ms = host.now().timestamp_millis();
        let read = || async {
            match host.kv_get(REFRESH_KEY).await {
                Ok(Some(raw)) => {
                    Ok(serde_json::from_slice::<RefreshState>(&raw).unwrap_or_default())
                }
                Ok(None) => Ok(RefreshState::default()),
                Err(e) => Err(e),
            }
        };
        let Ok(mut state) = read().await else { return };
        let interval_ms = rollout.refresh_secs as i64 * 1000;
        // A claim from the future (clock skew between hosts) counts as expired.
        if now_ms >= state.claimed_at_ms && now_ms - state.claimed_at_ms < interval_ms {
            return;
        }
        state.claimed_by = instance.to_string();
        state.claimed_at_ms = now_ms;
        let claim = serde_json::to_vec(&state).unwrap_or_default();
        if host.kv_set(REFRESH_KEY, &claim).await.is_err() {
            return;
        }
        match read().await {
            Ok(s) if s.claimed_by == instance && s.claimed_at_ms == now_ms => {}
            _ => return, // another instance claimed it
        }
        let models = refresh(host, rollout, store, state.refused.as_deref()).await;
        // Rules and lists follow the store the same way (one refresh claim for both).
        let policy = crate::decide::pull(host, store, &rollout.trust).await;
        if let Err(e) = &policy {
            eprintln!("worker: policy refresh failed, keeping the current policy: {e}");
        }
        match models.and(policy) {
            Ok(()) => {
                state.last_refresh = Some(crate::predict::iso_millis(host.now()));
                state.last_error = None;
                state.refused = None;
            }
            Err(e) => {
                eprintln!("worker: model refresh failed, serving the current model: {e}");
                state.last_error = Some(e);
                state.failures += 1;
            }
        }
        let _ = host
            .kv_set(REFRESH_KEY, &serde_json::to_vec(&state).unwrap_or_default())
            .await;
    }
}

/// Tells the edge's next refresh that `version`'s stored parts were refused.
async fn report_refused<H: Host>(host: &H, version: String) {
    let mut state = match host.kv_get(REFRESH_KEY).await {
        Ok(Some(raw)) => serde_json::from_slice::<RefreshState>(&raw).unwrap_or_default(),
        Ok(None) => RefreshState::default(),
        Err(_) => return,
    };
    if state.refused.as_deref() != Some(&version) {
        state.refused = Some(version);
        let _ = host
            .kv_set(REFRESH_KEY, &serde_json::to_vec(&state).unwrap_or_default())
            .await;
    }
}

/// Asks the registry and stores what changed; `model/channels` is written last. `refused`:
/// a stored version some instance refused, downloaded again rather than kept.
async fn refresh<H: Host>(
    host: &H,
    rollout: &Rollout,
    store: &StoreConfig,
    refused: Option<&str>,
) -> Result<(), String> {
    let mut current: EdgeChannels = match host.kv_get(CHANNELS_KEY).await? {
        Some(raw) => serde_json::from_slice(&raw).unwrap_or_default(),
        None => EdgeChannels::default(),
    };
    for slot in [&mut current.live, &mut current.shadow] {
        if slot
            .as_ref()
            .is_some_and(|s| Some(s.version.as_str()) == refused)
        {
            *slot = None;
            current.etag = None;
        }
    }
    // A changed pin invalidates the ETag (the channels did not change, what we serve did);
    // so do live tables of another format (this worker's tables replace them).
    let stale_tables = current
        .live
        .as_ref()
        .is_some_and(|s| s.tables_format != model_format::TABLES_VERSION);
    let etag = current
        .etag
        .as_deref()
        .filter(|_| current.pin == rollout.pin && !stale_tables);
    let url = format!("{}/v1/models/channels", store.url);
    let answer = host
        .get_bytes(&url, &store.token, etag, FETCH_TIMEOUT_NS)
        .await?;
    let channels: contract::models::Channels = match answer.status {
        304 => return Ok(()),
        200 => serde_json::from_slice(&answer.body)
            .map_err(|e| format!("the registry's channels are of another shape: {e}"))?,
        status => return Err(registry_error(&url, &answer, status)),
    };
    let live = match (&rollout.pin, &channels.live) {
        (Some(pin), _) => Some(pin.clone()),
        (None, target) => target.as_ref().map(|t| t.version.clone()),
    };
    let shadow = channels.shadow.as_ref().map(|t| t.version.clone());
    let keep = |v: &Option<String>, have: &[&Option<StoredModel>]| {
        have.iter()
            .filter_map(|s| s.as_ref())
            .find(|s| Some(&s.version) == v.as_ref())
            .cloned()
    };
    let have = [&current.live, &current.shadow];
    // A stored copy is kept while the registry's signature for it is the one checked then
    // (a re-signed model is checked again) and that signature is still trusted.
    let signed_as = |v: &Option<String>| {
        [&channels.live, &channels.shadow]
            .into_iter()
            .flatten()
            .find(|t| Some(&t.version) == v.as_ref())
            .map(|t| t.signature.clone())
    };
    let still_good = |s: &StoredModel, v: &Option<String>| {
        rollout.trust.admits_stored(s.signature.as_deref())
            && signed_as(v).is_none_or(|sig| sig == s.signature)
    };
    let trust = &rollout.trust;
    let stored_live = match (&live, keep(&live, &have)) {
        (None, _) => None,
        (Some(_), Some(s))
            if s.tables_parts > 0
                && s.tables_format == model_format::TABLES_VERSION
                && still_good(&s, &live) =>
        {
            Some(s)
        }
        (Some(v), _) => Some(download(host, store, v, true, trust).await?),
    };
    let stored_shadow = match (&shadow, keep(&shadow, &have)) {
        (None, _) => None,
        (Some(_), Some(s)) if still_good(&s, &shadow) => Some(s),
        (Some(v), _) => Some(download(host, store, v, false, trust).await?),
    };
    let next = EdgeChannels {
        live: stored_live,
        shadow: stored_shadow,
        etag: answer.etag,
        pin: rollout.pin.clone(),
    };
    host.kv_set(CHANNELS_KEY, &serde_json::to_vec(&next).unwrap_or_default())
        .await?;
    // Parts of versions neither served now nor just before are no longer needed.
    let needed: Vec<&str> = [&next.live, &next.shadow, &current.live, &current.shadow]
        .into_iter()
        .flatten()
        .map(|s| s.version.as_str())
        .collect();
    if let Ok(keys) = host.kv_keys().await {
        for key in keys {
            let version = key
                .strip_prefix("model/bundle/")
                .or_else(|| key.strip_prefix("model/file/"))
                .or_else(|| key.strip_prefix("model/tables/"))
                .and_then(|rest| rest.split('/').next());
            if version.is_some_and(|v| !needed.contains(&v)) {
                let _ = host.kv_delete(&key).await;
            }
        }
    }
    Ok(())
}

fn registry_error(url: &str, answer: &Fetched, status: u16) -> String {
    let text = String::from_utf8_lossy(&answer.body);
    let text: String = text.chars().take(200).collect();
    format!("the registry answered {status} to GET {url}: {text}")
}

/// Downloads `version`, checks its publisher's signature ([`Trust`]) and verifies it with the
/// store's rule, builds its tables and stores it.
async fn download<H: Host>(
    host: &H,
    store: &StoreConfig,
    version: &str,
    with_tables: bool,
    trust: &Trust,
) -> Result<StoredModel, String> {
    let url = format!("{}/v1/models/{version}/file", store.url);
    let answer = host
        .get_bytes(&url, &store.token, None, FETCH_TIMEOUT_NS)
        .await?;
    if answer.status != 200 {
        return Err(registry_error(&url, &answer, answer.status));
    }
    // Who made it, before anything is decoded: an untrusted file is not even parsed.
    trust.check(
        contract::signing::Signed::Model,
        version,
        &answer.body,
        answer.signature.as_deref(),
    )?;
    let verified = contract::models::verify(&answer.body, Some(version))
        .map_err(|e| format!("{version} from the registry refused: {e}"))?;
    let checksum = verified.checksum();
    if let Some(tag) = &answer.etag
        && tag.trim_matches('"') != checksum
    {
        return Err(format!(
            "{version} from the registry refused: ETag {tag} but the file is {checksum}"
        ));
    }
    let tables = if with_tables {
        verified.model.explanation_tables()
    } else {
        Vec::new()
    };
    let file_parts = put_parts(
        host,
        &format!("model/file/{version}"),
        &answer.body,
        PART_BYTES,
    )
    .await?;
    let tables_parts = put_parts(
        host,
        &format!("model/tables/{version}"),
        &tables,
        PART_BYTES,
    )
    .await?;
    let mut bundle = Vec::with_capacity(answer.body.len() + 8 + tables.len());
    bundle.extend_from_slice(&answer.body);
    bundle.resize(answer.body.len().next_multiple_of(8), 0);
    bundle.extend_from_slice(&tables);
    let bundle_parts = put_parts(
        host,
        &format!("model/bundle/{version}"),
        &bundle,
        BUNDLE_PART_BYTES,
    )
    .await?;
    eprintln!(
        "worker: stored {version} from the registry ({} + {} bytes)",
        answer.body.len(),
        tables.len()
    );
    Ok(StoredModel {
        version: version.to_string(),
        checksum,
        file_len: answer.body.len(),
        file_parts,
        tables_len: tables.len(),
        tables_parts,
        tables_format: model_format::TABLES_VERSION,
        stored_at_ms: host.now().timestamp_millis(),
        file_xxh3: xxh3_64(&answer.body),
        tables_xxh3: xxh3_64(&tables),
        signature: answer.signature.clone(),
        bundle_parts,
    })
}

async fn put_parts<H: Host>(
    host: &H,
    prefix: &str,
    bytes: &[u8],
    part_bytes: usize,
) -> Result<usize, String> {
    let mut n = 0;
    for (i, part) in bytes.chunks(part_bytes).enumerate() {
        host.kv_set(&format!("{prefix}/{i}"), part).await?;
        n += 1;
    }
    Ok(n)
}

/// The parts of a value `put_parts` stored, each as the host handed it over; the first into
/// resident memory when `resident` ([`Host::kv_get_resident`]).
async fn get_part_list<H: Host>(
    host: &H,
    prefix: &str,
    (parts, part_bytes): (usize, usize),
    len: usize,
    resident: bool,
) -> Result<Vec<Vec<u8>>, String> {
    if len > contract::limits::MODEL_MAX_BYTES * 16 || parts != len.div_ceil(part_bytes) {
        return Err(format!("{prefix}: {parts} parts cannot hold {len} bytes"));
    }
    let mut list = Vec::with_capacity(parts);
    for i in 0..parts {
        let key = format!("{prefix}/{i}");
        let part = if i == 0 && resident {
            host.kv_get_resident(&key, len.min(part_bytes)).await?
        } else {
            host.kv_get(&key).await?
        };
        match part {
            Some(part) => list.push(part),
            None => return Err(format!("{key} is missing")),
        }
    }
    let found: usize = list.iter().map(Vec::len).sum();
    if found != len {
        return Err(format!("{prefix}: {found} bytes, expected {len}"));
    }
    Ok(list)
}

/// A value `put_parts` stored, as one slice: a single part (any model file under
/// [`PART_BYTES`]) is the host's buffer itself, no copy.
async fn get_parts<H: Host>(
    host: &H,
    prefix: &str,
    parts: usize,
    len: usize,
) -> Result<&'static [u8], String> {
    let mut list = get_part_list(host, prefix, (parts, PART_BYTES), len, false).await?;
    let bytes = if list.len() == 1 {
        list.pop().unwrap_or_default()
    } else {
        list.concat()
    };
    Ok(Vec::leak(bytes))
}

/// The file and the tables (none unless `with_tables`) of a stored model: from its bundle when
/// it has one, else from the separate parts. The tables stay in the parts the host wrote them
/// to, and so does a file that fits in the first: joining would double their memory, and a
/// fresh instance pays ~0.3 ms of page faults per megabyte it touches.
async fn read_stored<H: Host>(
    host: &H,
    stored: &StoredModel,
    with_tables: bool,
) -> Result<(&'static [u8], Vec<&'static [u8]>), String> {
    let v = &stored.version;
    let leak = |parts: Vec<Vec<u8>>| -> Vec<&'static [u8]> {
        parts.into_iter().map(|p| &*Vec::leak(p)).collect()
    };
    if stored.bundle_parts == 0 {
        let file = get_parts(
            host,
            &format!("model/file/{v}"),
            stored.file_parts,
            stored.file_len,
        )
        .await?;
        let tables = if with_tables {
            let parts = (stored.tables_parts, PART_BYTES);
            let prefix = format!("model/tables/{v}");
            leak(get_part_list(host, &prefix, parts, stored.tables_len, false).await?)
        } else {
            Vec::new()
        };
        return Ok((file, tables));
    }
    let at = stored.bundle_tables_at();
    let parts = (stored.bundle_parts, BUNDLE_PART_BYTES);
    let prefix = format!("model/bundle/{v}");
    // The live model's bundle (the one with tables) is what an instance keeps for its life.
    let len = at + stored.tables_len;
    let parts = leak(get_part_list(host, &prefix, parts, len, with_tables).await?);
    let tables_len = if with_tables { stored.tables_len } else { 0 };
    Ok(unbundle(&parts, stored.file_len, at, tables_len))
}

/// The file (its first `file_len` bytes) and the tables (`tables_len` bytes from `at`) of a
/// bundle in `parts`: the file in place when the first part holds it (else joined), the
/// tables as the slices of the parts they span.
fn unbundle(
    parts: &[&'static [u8]],
    file_len: usize,
    at: usize,
    tables_len: usize,
) -> (&'static [u8], Vec<&'static [u8]>) {
    let file: &'static [u8] = match parts.first() {
        Some(first) if first.len() >= file_len => &first[..file_len],
        _ => {
            let mut file = Vec::with_capacity(file_len);
            for part in parts {
                let want = file_len - file.len();
                file.extend_from_slice(&part[..want.min(part.len())]);
            }
            Vec::leak(file)
        }
    };
    let mut tables = Vec::new();
    let (mut start, end_of_tables) = (0, at + tables_len);
    for part in parts {
        let end = start + part.len();
        let (from, to) = (at.clamp(start, end), end_of_tables.clamp(start, end));
        if from < to {
            tables.push(&part[from - start..to - start]);
        }
        start = end;
    }
    (file, tables)
}

/// Loads a stored model. The bytes are the key-value store's, not ours: when the storing
/// instance recorded their XXH3 (it had verified them in full: [`contract::models::verify`],
/// tables built from that model), bytes with the same hash are those bytes, so the checks it
/// made are not repeated — hashing is several times cheaper in WebAssembly than the CRC-32 and
/// the tables' own checksum, which matters because every new instance pays it on some
/// request's path. Without recorded hashes everything is checked here.
async fn load<H: Host>(
    host: &H,
    stored: &StoredModel,
    with_tables: bool,
) -> Result<&'static Loaded, String> {
    // Tables another worker version built in another format: this instance builds its own
    // when it first explains (the next refresh stores them again).
    let with_tables = with_tables && stored.tables_format == model_format::TABLES_VERSION;
    let v = &stored.version;
    let (file, tables) = read_stored(host, stored, with_tables).await?;
    let hashed = stored.file_xxh3 != 0 && (!with_tables || stored.tables_xxh3 != 0);
    let (id, trust) = if hashed {
        if xxh3_64(file) != stored.file_xxh3 {
            return Err(format!(
                "{v} in the key-value store: the file's content hash does not match (corrupt)"
            ));
        }
        // The storing instance computed the CRC-32 when it verified these very bytes: not
        // hashed again (decoding still compares it with the file's header).
        let checksum =
            contract::models::parse_checksum_text(&stored.checksum).ok_or_else(|| {
                format!(
                    "{v} in the key-value store: {:?} is not a checksum",
                    stored.checksum
                )
            })?;
        (ModelId { checksum }, FileTrust::DecodedBefore(checksum))
    } else {
        let id = ModelId::of(file).map_err(|e| format!("{v} in the key-value store: {e}"))?;
        (id, FileTrust::Untrusted)
    };
    let model = Model::from_static_bytes(file, trust)
        .map_err(|e| format!("{v} in the key-value store: {e}"))?;
    if id.version() != *v || contract::models::checksum_text(id.checksum) != stored.checksum {
        return Err(format!("{v} in the key-value store is {}", id.version()));
    }
    if with_tables {
        let trust = if hashed {
            let mut hash = xxhash_rust::xxh3::Xxh3::new();
            tables.iter().for_each(|part| hash.update(part));
            if hash.digest() != stored.tables_xxh3 {
                return Err(format!(
                    "{v}'s explanation tables in the key-value store: content hash does not match (corrupt)"
                ));
            }
            TablesTrust::CheckedForThisModel
        } else {
            TablesTrust::Untrusted
        };
        model
            .install_explanation_table_parts(&tables, trust)
            .map_err(|e| format!("{v}'s explanation tables in the key-value store: {e}"))?;
    }
    Ok(Box::leak(Box::new(Loaded::new(
        model,
        id,
        file,
        tables,
        with_tables,
    ))))
}

#[cfg(test)]
mod bundle_tests {
    use super::unbundle;

    /// `file_len` bytes of file, zeros to a multiple of 8, `tables_len` bytes of tables, cut
    /// into parts of `part` bytes: what `download` stores.
    fn bundle(file_len: usize, tables_len: usize, part: usize) -> (Vec<u8>, Vec<&'static [u8]>) {
        let mut bytes: Vec<u8> = (0..file_len).map(|i| (i % 251) as u8).collect();
        bytes.resize(file_len.next_multiple_of(8), 0);
        bytes.extend((0..tables_len).map(|i| (i % 241) as u8 + 1));
        let parts = bytes.chunks(part).map(|c| &*c.to_vec().leak()).collect();
        (bytes, parts)
    }

    #[test]
    fn file_and_tables_come_back_whatever_the_parts_they_span() {
        for (file_len, tables_len, part) in [
            (61, 700, 1000),  // all in one part
            (100, 1000, 400), // tables over three parts
            (1000, 50, 400),  // the file over three parts, joined
            (8, 16, 8),       // boundaries exactly at the file's and the tables' ends
            (13, 0, 8),       // no tables (a shadow model, or tables not wanted)
        ] {
            let (bytes, parts) = bundle(file_len, tables_len, part);
            let at = file_len.next_multiple_of(8);
            let (file, tables) = unbundle(&parts, file_len, at, tables_len);
            assert_eq!(file, &bytes[..file_len], "{file_len} {tables_len} {part}");
            assert_eq!(
                tables.concat(),
                &bytes[at..],
                "{file_len} {tables_len} {part}"
            );
            assert!(tables.iter().all(|t| !t.is_empty()));
            // In place, not copied, when the first part holds the file.
            assert_eq!(
                std::ptr::eq(file.as_ptr(), parts[0].as_ptr()),
                file_len <= part
            );
        }
    }
}
