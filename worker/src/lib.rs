//! SecureFlow Edge worker: the Spin HTTP component (WASI P3) around `worker-core`.
//!
//! Only the glue lives here: the embedded model, `#[http_service]`, Spin variables, the
//! key-value store, outbound HTTP, clocks, randomness and `spawn`. Everything that decides an
//! answer is in `worker-core`, where `cargo test` exercises it on the host.
//!
//! A model promoted in the registry replaces the embedded one without a rebuild (worker-core's
//! rollout: pulled in the background, kept in the key-value store, verified by every instance
//! that loads it); the embedded model is what an edge serves until then.
//!
//! The model bytes are compiled in (`build.rs` picks the file) and decoded once per instance:
//! P3 hosts reuse an instance for many requests, so the decode cost is paid once, not per call.
//! The TreeSHAP tables explanations need are built by `build.rs` too and embedded next to the
//! model, so a fresh instance installs them (header and sizes checked, used in place) rather
//! than spending its first explained request building them; an instance that starts on a
//! registry model receives that model into their memory instead ([`resident`]). Scoring itself is model-format's
//! code, the same the trainer runs, so an edge score equals the trainer's to the bit.

use std::cell::{Cell, OnceCell};

use model_format::{FileTrust, Model, ModelId};
use serde_json::Value;
use spin_sdk::experimental::wasi::keyvalue::{atomics, store as wasi_kv};
use spin_sdk::http::{Request, Response};
use spin_sdk::key_value::Store;
use spin_sdk::wasip3::clocks::monotonic_clock;
use spin_sdk::wasip3::http::types;
use spin_sdk::wasip3::http_compat::BodyWriter;
use worker_core::{App, Fetched, Host, Loaded, PostAnswer, Swap, Task, Variables};

/// 8-byte alignment for embedded bytes, so arrays of `f64` in them can be used in place.
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

/// The embedded model file, aligned so that its node records are used in place.
static MODEL_BYTES: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("SFE_MODEL_FILE")));

/// The model file's CRC-32, verified by `build.rs` when it embedded the file.
const MODEL_CRC: &str = env!("SFE_MODEL_CRC");

mod resident;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: resident::Allocator = resident::Allocator;

/// Decodes the embedded model. Both files were decoded, validated and matched by `build.rs`,
/// and are part of this program: a fresh instance (whose start is on some request's path)
/// neither hashes nor copies nor walks them again. `/api/warmup` re-runs every check. The
/// tables are installed once the instance knows it serves this model
/// ([`Host::embedded_tables`]).
fn load() -> Result<Loaded, String> {
    let checksum: u32 = MODEL_CRC
        .parse()
        .map_err(|e| format!("SFE_MODEL_CRC is not a number: {e}"))?;
    let model = Model::from_static_bytes(&MODEL_BYTES.0, FileTrust::DecodedBefore(checksum))
        .map_err(|e| format!("embedded model is invalid: {e}"))?;
    Ok(Loaded::new(
        model,
        ModelId { checksum },
        &MODEL_BYTES.0,
        Vec::new(),
        false,
    ))
}

/// Spin's interfaces, as the core's [`Host`].
struct Spin;

static SPIN: Spin = Spin;

impl Host for Spin {
    type Cas = atomics::Cas;

    fn monotonic_ns(&self) -> u64 {
        monotonic_clock::now()
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        std::time::SystemTime::now().into()
    }

    fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let bytes = spin_sdk::wasip3::random::random::get_random_bytes(N as u64);
        std::array::from_fn(|i| bytes.get(i).copied().unwrap_or(0))
    }

    fn spawn(&self, task: Task) {
        spin_sdk::wasip3::spawn(task);
    }

    async fn sleep(&self, ns: u64) {
        monotonic_clock::wait_for(ns).await;
    }

    async fn post_json(&self, url: &str, token: &str, body: String, timeout_ns: u64) -> PostAnswer {
        use http_body_util::BodyExt;
        let request = http::Request::post(url)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body);
        let request = match request {
            Ok(r) => r,
            Err(e) => return PostAnswer::Failed(format!("bad store URL {url:?}: {e}")),
        };
        let Some(answer) = with_timeout(spin_sdk::http::send(request), timeout_ns).await else {
            return PostAnswer::TimedOut;
        };
        match answer {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = match with_timeout(resp.into_body().collect(), timeout_ns).await {
                    Some(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                    _ => String::new(),
                };
                PostAnswer::Status(status, body)
            }
            Err(e) => PostAnswer::Failed(format!("{e:?}")),
        }
    }

    async fn get_json(&self, url: &str, token: &str) -> Result<(u16, Value), String> {
        // No deadline here, as before: the proxy's reads wait for the store's answer.
        let answer = self.get_bytes(url, token, None, u64::MAX).await?;
        let value = serde_json::from_slice(&answer.body).map_err(|e| {
            format!(
                "store answered {} with a body that is not JSON: {e}",
                answer.status
            )
        })?;
        Ok((answer.status, value))
    }

    async fn get_bytes(
        &self,
        url: &str,
        token: &str,
        if_none_match: Option<&str>,
        timeout_ns: u64,
    ) -> Result<Fetched, String> {
        use http_body_util::BodyExt;
        let mut request =
            http::Request::get(url).header("authorization", format!("Bearer {token}"));
        if let Some(tag) = if_none_match {
            request = request.header("if-none-match", tag);
        }
        let request = request
            .body(String::new())
            .map_err(|e| format!("bad store URL {url:?}: {e}"))?;
        let fetch = async {
            let resp = spin_sdk::http::send(request)
                .await
                .map_err(|e| format!("store unreachable: {e:?}"))?;
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let (etag, signature) = (header("etag"), header("x-signature"));
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the store's answer: {e}"))?
                .to_bytes()
                .to_vec();
            Ok(Fetched {
                status,
                etag,
                signature,
                body,
            })
        };
        with_timeout(fetch, timeout_ns).await.unwrap_or_else(|| {
            Err(format!(
                "no answer from {url} in {} s",
                timeout_ns / 1_000_000_000
            ))
        })
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        after_listings().await;
        let store = Store::open_default().await.map_err(|e| format!("{e:?}"))?;
        store.get(key).await.map_err(|e| format!("{e:?}"))
    }

    async fn kv_get_resident(&self, key: &str, len: usize) -> Result<Option<Vec<u8>>, String> {
        after_listings().await;
        let store = Store::open_default().await.map_err(|e| format!("{e:?}"))?;
        resident::offered_to(len, store.get(key))
            .await
            .map_err(|e| format!("{e:?}"))
    }

    fn embedded_tables(&self) -> Option<&'static [u8]> {
        resident::embedded_tables()
    }

    async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        after_listings().await;
        let store = Store::open_default().await.map_err(|e| format!("{e:?}"))?;
        store.set(key, value).await.map_err(|e| format!("{e:?}"))
    }

    async fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        after_listings().await;
        let store = velocity_store().await?;
        store.get(key).await.map_err(|e| format!("{e:?}"))
    }

    async fn state_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        after_listings().await;
        let store = velocity_store().await?;
        store.set(key, value).await.map_err(|e| format!("{e:?}"))
    }

    async fn state_cas(&self, key: &str) -> Result<atomics::Cas, String> {
        after_listings().await;
        atomics::Cas::new(velocity_bucket()?, key).map_err(|e| format!("{e:?}"))
    }

    async fn state_current(&self, cas: &atomics::Cas) -> Result<Option<Vec<u8>>, String> {
        after_listings().await;
        cas.current().map_err(|e| format!("{e:?}"))
    }

    async fn state_swap(
        &self,
        cas: atomics::Cas,
        value: Vec<u8>,
    ) -> Result<Swap<atomics::Cas>, String> {
        after_listings().await;
        match atomics::swap(cas, &value) {
            Ok(()) => Ok(Swap::Written),
            Err(atomics::CasError::CasFailed(next)) => Ok(Swap::Conflict(next)),
            Err(atomics::CasError::StoreError(e)) => Err(format!("{e:?}")),
        }
    }

    async fn state_increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        after_listings().await;
        atomics::increment(velocity_bucket()?, key, delta).map_err(|e| format!("{e:?}"))
    }

    async fn state_delete(&self, key: &str) -> Result<(), String> {
        after_listings().await;
        let store = velocity_store().await?;
        store.delete(key).await.map_err(|e| format!("{e:?}"))
    }

    async fn kv_delete(&self, key: &str) -> Result<(), String> {
        after_listings().await;
        let store = Store::open_default().await.map_err(|e| format!("{e:?}"))?;
        store.delete(key).await.map_err(|e| format!("{e:?}"))
    }

    async fn kv_keys(&self) -> Result<Vec<String>, String> {
        let _listing = Listing::start();
        let store = Store::open_default().await.map_err(|e| format!("{e:?}"))?;
        store
            .get_keys()
            .await
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))
    }
}

thread_local! {
    /// Key listings in progress in this instance (see [`after_listings`]).
    static LISTINGS: Cell<u32> = const { Cell::new(0) };
}

/// A key listing in progress; counted in [`LISTINGS`] until dropped (also when the request
/// that lists is dropped midway).
struct Listing;

impl Listing {
    fn start() -> Listing {
        LISTINGS.with(|n| n.set(n.get() + 1));
        Listing
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        LISTINGS.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Waits until no key listing of this instance is in progress. Spin 4.1's SQLite stores list
/// keys on a blocking thread that holds the store's one connection while it hands the keys to
/// this instance four at a time (`get_keys_async` in crates/key-value-spin/src/store.rs). A
/// key-value call made by this instance meanwhile waits for that connection inside
/// `block_in_place`, on the thread that runs this instance, so nobody takes the keys and both
/// wait for ever: the whole edge stops at 0 % CPU as soon as its other instances queue behind
/// the connection. So the instance's other key-value calls wait here until its listing ends.
async fn after_listings() {
    while LISTINGS.with(Cell::get) > 0 {
        monotonic_clock::wait_for(50_000).await;
    }
}

thread_local! {
    /// The instance's velocity store, opened on first use (two host calls fewer per request).
    static VELOCITY: OnceCell<&'static Store> = const { OnceCell::new() };
}

/// The `velocity` key-value store when the app is granted one (runtime config: in memory for
/// `spin up`, Redis in production), else `default`: velocity state then shares the durable
/// store and pays its write cost.
async fn velocity_store() -> Result<&'static Store, String> {
    if let Some(store) = VELOCITY.with(|v| v.get().copied()) {
        return Ok(store);
    }
    let store = match Store::open("velocity").await {
        Ok(s) => s,
        Err(_) => Store::open_default().await.map_err(|e| format!("{e:?}"))?,
    };
    Ok(VELOCITY.with(|v| *v.get_or_init(|| Box::leak(Box::new(store)))))
}

thread_local! {
    /// The same store as [`velocity_store`] through `wasi:keyvalue`, whose `atomics` interface
    /// has the compare-and-swap spin-sdk's key-value API lacks.
    static VELOCITY_BUCKET: OnceCell<&'static wasi_kv::Bucket> = const { OnceCell::new() };
}

/// The `velocity` store (else `default`) as a `wasi:keyvalue` bucket, opened once per instance.
fn velocity_bucket() -> Result<&'static wasi_kv::Bucket, String> {
    if let Some(b) = VELOCITY_BUCKET.with(|v| v.get().copied()) {
        return Ok(b);
    }
    let bucket = match wasi_kv::open("velocity") {
        Ok(b) => b,
        Err(_) => wasi_kv::open("default").map_err(|e| format!("{e:?}"))?,
    };
    Ok(VELOCITY_BUCKET.with(|v| *v.get_or_init(|| Box::leak(Box::new(bucket)))))
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

/// Reads the variables once per instance. A variable that cannot be read counts as unset; an
/// undefined one (no mapping in the manifest) silently, any other failure is logged by kind
/// only, never with a value.
async fn variables() -> Variables {
    async fn var(name: &str) -> String {
        match spin_sdk::variables::get(name).await {
            Ok(value) => value,
            Err(spin_sdk::variables::Error::Undefined(_)) => String::new(),
            Err(e) => {
                let kind = match e {
                    spin_sdk::variables::Error::InvalidName(_) => "invalid name",
                    spin_sdk::variables::Error::Undefined(_) => "undefined",
                    spin_sdk::variables::Error::Provider(_) => "provider error",
                    spin_sdk::variables::Error::Other(_) => "error",
                };
                eprintln!("worker: variable {name} not read ({kind}); treating it as unset");
                String::new()
            }
        }
    }
    Variables {
        api_keys: var("api_keys").await,
        rate_limits: var("rate_limits").await,
        cors_origins: var("cors_origins").await,
        store_url: var("store_url").await,
        store_token: var("store_token").await,
        edge_instance: var("edge_instance").await,
        edge_region: var("edge_region").await,
        transaction_id_format: var("transaction_id_format").await,
        model_pull: var("model_pull").await,
        model_pin: var("model_pin").await,
        model_refresh_secs: var("model_refresh_secs").await,
        velocity_writes: var("velocity_writes").await,
        velocity_slots: var("velocity_slots").await,
        trusted_keys: var("trusted_keys").await,
        accept_unsigned: var("accept_unsigned").await,
        forward_journal: var("forward_journal").await,
    }
}

thread_local! {
    /// The instance's app (wasm instances are single-threaded; one per instance).
    static APP: OnceCell<&'static App<Spin>> = const { OnceCell::new() };
}

/// The instance's app, built on its first request: variables read, the embedded model decoded
/// and the key-value store's registry model loaded over it when there is one that passes every
/// check (`worker_core::App::start`).
async fn app() -> &'static App<Spin> {
    if let Some(app) = APP.with(|a| a.get().copied()) {
        return app;
    }
    let variables = variables().await;
    let app = App::start(&SPIN, &variables, load()).await;
    // Concurrent first requests may each build one; the first stored wins.
    APP.with(|a| *a.get_or_init(|| Box::leak(Box::new(app))))
}

#[spin_sdk::http_service]
async fn handle(req: Request) -> Result<types::Response, types::ErrorCode> {
    body_first(app().await.handle(req).await).await
}

/// Converts the answer for the host so that its body is already on offer when the handler
/// returns.
///
/// spin-sdk's own conversion starts writing the body in a task that first runs after the
/// handler has returned, while the host (Spin, and the harness: both use `wasmtime-wasi-http`'s
/// dispatcher) hands the response head to hyper as soon as the handler returns. hyper then
/// often finds no body yet, sends the head alone and the body in a second segment. Spin leaves
/// Nagle's algorithm on, so that second small segment waits for the client's ACK of the first,
/// which a keep-alive client delays by up to 40 ms: the 10–43 ms stalls under `spin up`,
/// mostly on the first request of a fresh instance (one per 128 requests by default) and on
/// instances serving several requests at once. Here the writer task is polled first (its write
/// is then pending on the body stream) and the handler yields to the host once more before it
/// returns, so the host already holds the pending write when it takes the response and copies
/// the body without running the guest again; head and body leave in one write.
async fn body_first(resp: Response<String>) -> Result<types::Response, types::ErrorCode> {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::task::{Poll, Waker};

    let (parts, body) = resp.into_parts();
    let headers = types::Fields::try_from(parts.headers)
        .map_err(|e| types::ErrorCode::InternalError(Some(format!("response headers: {e:?}"))))?;
    let (writer, contents, trailers) = BodyWriter::new();
    let (response, _sent) = types::Response::new(headers, Some(contents), trailers);
    response
        .set_status_code(parts.status.as_u16())
        .map_err(|()| types::ErrorCode::InternalError(Some("response status".into())))?;
    // Wakes the handler once the writer has been polled (and so has issued its write).
    struct Started {
        yes: Cell<bool>,
        waker: Cell<Option<Waker>>,
    }
    let started = Rc::new(Started {
        yes: Cell::new(false),
        waker: Cell::new(None),
    });
    let signal = Rc::clone(&started);
    spin_sdk::wasip3::spawn(async move {
        signal.yes.set(true);
        if let Some(w) = signal.waker.take() {
            w.wake();
        }
        let mut body = body;
        // A failed write means the client went away; the host reports that.
        let _ = writer.send_http_body(&mut body).await;
    });
    std::future::poll_fn(|cx| {
        if started.yes.get() {
            Poll::Ready(())
        } else {
            started.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    })
    .await;
    // Without this yield a handler that answers without awaiting anything (health, 404, 405)
    // still split its answer: the host had not yet taken in the pending write.
    spin_sdk::wasip3::wit_bindgen::yield_async().await;
    Ok(response)
}
