//! What the core needs from its host: time, randomness, background tasks, outbound HTTP to the
//! store and a key-value store. The Spin glue (worker/) implements it with Spin's interfaces;
//! unit tests implement it in memory.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A background task (it runs on after the response has been sent).
pub type Task = Pin<Box<dyn Future<Output = ()> + 'static>>;

/// How a POST to the store ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostAnswer {
    /// The store answered with this status and body.
    Status(u16, String),
    /// No answer within the timeout.
    TimedOut,
    /// No answer at all (refused, reset, DNS, bad URL).
    Failed(String),
}

/// The answer to a GET of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Status code.
    pub status: u16,
    /// The `ETag` header, as sent.
    pub etag: Option<String>,
    /// The `X-Signature` header (the publisher's signature of a model file or policy).
    pub signature: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// How a compare-and-swap of velocity state ended ([`Host::state_swap`]).
pub enum Swap<C> {
    /// The host reported the new value written.
    Written,
    /// The value changed since it was read: retry with this handle (its value re-read).
    Conflict(C),
}

/// The host's services. Methods are `async` where the host's are; none may panic.
#[allow(async_fn_in_trait)] // single-threaded hosts (wasm): no `Send` bound wanted
pub trait Host {
    /// A compare-and-swap in progress on one velocity key.
    type Cas;
    /// Monotonic time in nanoseconds.
    fn monotonic_ns(&self) -> u64;
    /// Wall-clock time.
    fn now(&self) -> DateTime<Utc>;
    /// `N` random bytes from a CSPRNG.
    fn random_bytes<const N: usize>(&self) -> [u8; N];
    /// Runs `task` in the background of this instance.
    fn spawn(&self, task: Task);
    /// Waits `ns` nanoseconds.
    async fn sleep(&self, ns: u64);
    /// POSTs `body` (JSON) to `url` with a bearer token, giving up after `timeout_ns`.
    async fn post_json(&self, url: &str, token: &str, body: String, timeout_ns: u64) -> PostAnswer;
    /// GETs `url` with a bearer token: status and JSON body.
    async fn get_json(&self, url: &str, token: &str) -> Result<(u16, Value), String>;
    /// GETs `url` with a bearer token (and `If-None-Match` when given), giving up after
    /// `timeout_ns`; Err when no answer came.
    async fn get_bytes(
        &self,
        url: &str,
        token: &str,
        if_none_match: Option<&str>,
        timeout_ns: u64,
    ) -> Result<Fetched, String>;
    /// The key-value store's value for `key`.
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// [`Host::kv_get`] for a value of `len` bytes that the instance will keep for its whole
    /// life (a registry model's bundle), received into memory the instance already has
    /// resident when the host has such memory free: the memory of the embedded model's
    /// explanation tables, which an instance that serves a registry model does not use. After
    /// that, [`Host::embedded_tables`] is None. A fresh instance's other memory is faulted in
    /// page by page (~1 µs per 4 KiB under Spin), so this takes most of a registry model's
    /// start cost away.
    async fn kv_get_resident(&self, key: &str, len: usize) -> Result<Option<Vec<u8>>, String> {
        let _ = len;
        self.kv_get(key).await
    }
    /// The embedded model's explanation tables (checked against it by whoever embedded
    /// them), unless their memory went to [`Host::kv_get_resident`]; the first call that
    /// returns them keeps that memory for them for good. None: the embedded model builds its
    /// tables when it first explains.
    fn embedded_tables(&self) -> Option<&'static [u8]> {
        None
    }
    /// Sets `key` in the key-value store.
    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Deletes `key` from the key-value store.
    async fn kv_delete(&self, key: &str) -> Result<(), String>;
    /// Every key in the key-value store.
    async fn kv_keys(&self) -> Result<Vec<String>, String>;
    /// Per-entity velocity state for `key` (the `velocity` store when the host has one: it may
    /// trade durability for speed; else the key-value store above). Velocity only reads this
    /// way to check that a write landed; updates go through [`Host::state_cas`].
    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Sets velocity state `key` unconditionally (`velocity_writes = plain`).
    async fn state_set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// A compare-and-swap handle on velocity state `key` (`wasi:keyvalue/atomics.cas`).
    async fn state_cas(&self, key: &str) -> Result<Self::Cas, String>;
    /// The value under `cas`'s key, as the swap will compare it.
    async fn state_current(&self, cas: &Self::Cas) -> Result<Option<Vec<u8>>, String>;
    /// Writes `value` if the key still holds what [`Host::state_current`] read.
    async fn state_swap(&self, cas: Self::Cas, value: Vec<u8>) -> Result<Swap<Self::Cas>, String>;
    /// Adds `delta` to the integer under velocity key `key` (absent: 0) and returns the sum
    /// (`wasi:keyvalue/atomics.increment`).
    async fn state_increment(&self, key: &str, delta: i64) -> Result<i64, String>;
    /// Deletes velocity state `key`.
    async fn state_delete(&self, key: &str) -> Result<(), String>;
}
