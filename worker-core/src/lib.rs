//! The SecureFlow Edge worker's logic, independent of Spin: routing, request parsing, API keys,
//! CORS, prediction answers, feedback, the store proxy and write forwarding with its outbox.
//!
//! Why a crate of its own: the Spin component only builds for wasm32, so code inside it is
//! exercised only through the wasm build and the harness. Here the same code runs under
//! `cargo test` on the host, against an in-memory [`Host`]; `worker/` keeps only the glue
//! (`#[http_service]`, variables, key-value, outbound HTTP, spawn, the embedded model).
//!
//! An instance builds one [`App`] (settings read once, model decoded once) and hands it every
//! request: [`App::handle`]. Errors carry their status ([`ApiError`]): 4xx when the request is
//! at fault, 5xx when we are.

#![deny(missing_docs)]

mod budget;
mod decide;
mod feedback;
mod forward;
mod host;
mod ids;
mod limits;
mod model;
mod predict;
mod proxy;
mod response;
mod rollout;
mod settings;
mod trust;
mod velocity;

use std::cell::RefCell;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use model_format::{FORMAT_VERSION, Model};
use serde::Serialize;
use serde_json::{Map, Value};

pub use budget::BUDGET_PREFIX;
pub use decide::{POLICY_KEY, POLICY_SIGNATURE_KEY};
pub use forward::{DEAD_LETTER, Forwarder, OUTBOX, outbox_key_millis};
pub use host::{Fetched, Host, PostAnswer, Swap, Task};
pub use limits::RATE_PREFIX;
pub use model::Loaded;
pub use response::{ApiError, json};
pub use rollout::{
    BUNDLE_PART_BYTES, CHANNELS_KEY, EdgeChannels, PART_BYTES, REFRESH_KEY, RefreshState,
    StoredModel,
};
pub use settings::{
    BadVariable, DEFAULT_MODEL_REFRESH_SECS, DEFAULT_VELOCITY_SLOTS, IdFormat, Settings,
    StoreConfig, Variables,
};
pub use velocity::SLOT_ENTITIES;

use contract::limits::PREDICT_MAX_BODY_BYTES;
use predict::Stamp;

/// One instance's state: its host, settings, model and forwarding queue.
pub struct App<H: Host + 'static> {
    host: &'static H,
    settings: Settings,
    models: rollout::Models,
    /// Names this instance in the edge-wide refresh claim (unique even when `edge_instance`
    /// is set for the whole edge).
    instance_id: String,
    forwarder: Forwarder,
    dashboard: proxy::DashboardCache,
    legacy_ids: RefCell<Option<contract::legacy_id::Sequence>>,
    policies: decide::Policies,
    velocity_locks: velocity::Locks,
    limiter: limits::Limiter,
    budgets: budget::Budgets,
}

enum Route {
    Health,
    Model,
    Warmup,
    Predict,
    Batch,
    Feedback,
    Dashboard,
    Transactions,
}

impl<H: Host + 'static> App<H> {
    /// An instance's app serving `embedded`, the decoded embedded model, or why there is none
    /// (the instance then answers 500 where a model is needed, and `/api/health` says
    /// unhealthy). It does not look at the key-value store: see [`App::start`].
    pub fn new(host: &'static H, variables: &Variables, embedded: Result<Loaded, String>) -> Self {
        let instance_id = format!("worker-{}", &ids::new_uuid(host).simple().to_string()[20..]);
        let (settings, bad) = Settings::parse(variables, instance_id.clone());
        for b in bad {
            eprintln!("worker: variable {} ignored: {}", b.name, b.problem);
        }
        App {
            host,
            settings,
            models: rollout::Models::embedded(embedded),
            instance_id,
            forwarder: Forwarder::default(),
            dashboard: RefCell::new(None),
            legacy_ids: RefCell::new(None),
            policies: decide::Policies::default(),
            velocity_locks: velocity::Locks::default(),
            limiter: limits::Limiter::default(),
            budgets: budget::Budgets::default(),
        }
    }

    /// [`App::new`], then the model the key-value store holds (`model/channels`, see the
    /// rollout docs), when there is one that passes every check: what an instance starts with.
    pub async fn start(
        host: &'static H,
        variables: &Variables,
        embedded: Result<Loaded, String>,
    ) -> Self {
        let app = Self::new(host, variables, embedded);
        app.models.start(host, &app.settings.rollout.trust).await;
        // Rules and lists: read and parsed once per instance (see `decide`).
        let policy = match decide::read_stored(host).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("worker: reading the policy failed: {e}; deciding by the model alone");
                None
            }
        };
        app.policies.install(
            policy
                .as_ref()
                .map(|(t, sig)| (t.as_slice(), sig.as_deref())),
            &app.settings.rollout.trust,
        );
        app
    }

    /// The forwarding queue (for tests and diagnostics).
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// Answers one request. CORS headers are added to every answer from an allowed origin.
    pub async fn handle<B>(&'static self, req: Request<B>) -> Response<String>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let allow_origin = self.settings.allow_origin(req.headers().get("origin"));
        let mut resp = match self.route(req, allow_origin.is_some()).await {
            Ok(resp) => resp,
            Err(e) => e.response(),
        };
        let headers = resp.headers_mut();
        if let Some(origin) = allow_origin {
            headers.insert("access-control-allow-origin", origin);
        }
        if matches!(self.settings.cors, settings::Cors::List(_)) {
            headers.append("vary", HeaderValue::from_static("Origin"));
        }
        self.models.after_request(
            self.host,
            &self.settings.rollout,
            self.settings.store.as_ref(),
            &self.instance_id,
        );
        self.policies
            .after_request(self.host, &self.settings.rollout.trust);
        if let Some(store) = &self.settings.store {
            self.forwarder.after_request(self.host, store);
        }
        resp
    }

    async fn route<B>(
        &'static self,
        req: Request<B>,
        cors_allowed: bool,
    ) -> Result<Response<String>, ApiError>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        let (allowed, route) = match path {
            "/api/health" => (Method::GET, Route::Health),
            "/api/model" => (Method::GET, Route::Model),
            "/api/warmup" => (Method::POST, Route::Warmup),
            "/api/predict" => (Method::POST, Route::Predict),
            "/api/predict-batch" => (Method::POST, Route::Batch),
            "/api/feedback" => (Method::POST, Route::Feedback),
            "/api/dashboard" => (Method::GET, Route::Dashboard),
            "/api/transactions" => (Method::GET, Route::Transactions),
            _ => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no route for {path}"),
                ));
            }
        };
        if req.method() == Method::OPTIONS {
            return Ok(preflight(&allowed, cors_allowed));
        }
        let public = matches!(route, Route::Health) && req.method() == Method::GET;
        let caller = match self.settings.caller(req.headers()) {
            Ok(key) => key,
            Err(()) if public => None,
            Err(()) => {
                return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or invalid API key; send X-API-Key: <key> or Authorization: Bearer <key>",
            )
            .with_header("www-authenticate", "Bearer"));
            }
        };
        if req.method() != allowed {
            let allow = if allowed == Method::GET {
                "GET"
            } else {
                "POST"
            };
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method not allowed; use {allowed}"),
            )
            .with_header("allow", allow));
        }
        if let Some(key) = caller
            && let Some(limit) = &key.limit
            && !public
            && let limits::Verdict::Refuse { retry_after_secs } =
                self.limiter.check(self.host, &key.name, limit).await
        {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the API key {} is over its limit ({limit}); retry in {retry_after_secs} s",
                    key.name
                ),
            )
            .with_retry_after(retry_after_secs));
        }
        match route {
            Route::Health => Ok(self.health()),
            Route::Model => self.model_info(),
            Route::Warmup => self.warmup(),
            Route::Dashboard => match &self.settings.store {
                Some(store) => Ok(proxy::dashboard(self.host, store, &self.dashboard).await),
                None => Err(proxy::store_not_configured()),
            },
            Route::Transactions => match &self.settings.store {
                Some(store) => Ok(proxy::transactions(self.host, store, req.uri().query()).await),
                None => Err(proxy::store_not_configured()),
            },
            Route::Predict | Route::Batch | Route::Feedback => {
                unsupported_content_type(req.headers())?;
                let explain = match route {
                    Route::Feedback => false,
                    _ => predict::wants_explanation(req.uri().query())?,
                };
                let body = read_body(req.into_body()).await?;
                let l = self.loaded()?;
                let payload = serde_json::from_slice::<Value>(&body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
                match route {
                    Route::Predict => self.predict(l, &payload, explain).await,
                    Route::Batch => self.predict_batch(l, &payload, explain).await,
                    _ => self.feedback(&payload).await,
                }
            }
        }
    }

    fn loaded(&self) -> Result<&'static Loaded, ApiError> {
        self.models.live().map_err(ApiError::internal)
    }

    /// Ids and time for one prediction.
    fn stamp(&self) -> Stamp {
        let mut ids = self.legacy_ids.borrow_mut();
        let sequence = ids.get_or_insert_with(|| {
            contract::legacy_id::Sequence::new(u64::from_le_bytes(self.host.random_bytes::<8>()))
        });
        Stamp {
            uuid: ids::new_uuid(self.host),
            legacy_id: sequence.next(),
            at: self.host.now(),
        }
    }

    /// Hands events to the store's forwarding (checked against the contract first: an event the
    /// store would refuse goes straight to the dead letters instead of being sent). With the
    /// journal on (the default), returns only once they are in the key-value store's outbox,
    /// so the caller may answer; 503 when that write fails (nothing is answered that could be
    /// lost).
    async fn forward(&'static self, events: Vec<contract::Event>) -> Result<(), ApiError> {
        let Some(store) = &self.settings.store else {
            return Ok(());
        };
        let texts = events.into_iter().filter_map(|event| {
            let text = serde_json::to_string(&event).ok()?;
            match event.validate() {
                Ok(()) => Some(text),
                Err(e) => {
                    eprintln!(
                        "worker: an event would be refused by the store ({e}); dead-lettered"
                    );
                    let host = self.host;
                    host.spawn(Box::pin(async move {
                        let key = format!("{DEAD_LETTER}{}", ids::new_uuid(host));
                        let _ = host.kv_set(&key, format!("[{text}]").as_bytes()).await;
                    }));
                    None
                }
            }
        });
        let texts: Vec<String> = texts.collect();
        if texts.is_empty() {
            return Ok(());
        }
        let journal = self.settings.forward_journal;
        let entries = Forwarder::entries(self.host, texts, journal)
            .await
            .map_err(|e| {
                eprintln!("worker: the outbox cannot be written ({e}); answering 503");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the transaction could not be recorded (the edge's key-value store is unavailable); retry",
                )
            })?;
        self.forwarder.submit(self.host, store, entries);
        Ok(())
    }

    /// The policy compiled for `l`, when one is in force.
    fn rules_for(&self, l: &Loaded) -> Option<std::rc::Rc<Result<decide::Bound, String>>> {
        self.policies.bind(&l.model, &l.version)
    }

    /// One transaction's velocity values (its entities' states updated) and whether an update
    /// was given up. A transaction that will be refused is refused here, before its state is
    /// touched, and so is not counted (see `predict::check_transaction`).
    async fn velocity_of(
        &self,
        l: &'static Loaded,
        payload: &Value,
    ) -> Result<Option<(Vec<f64>, bool)>, ApiError> {
        match (l.model.velocity(), payload) {
            (Some(spec), Value::Object(fields)) => {
                predict::check_transaction(l, payload)?;
                velocity::observe(
                    self.host,
                    spec,
                    fields,
                    &self.velocity_locks,
                    self.settings.velocity_writes,
                    self.settings.velocity_slots,
                )
                .await
                .map(Some)
            }
            _ => Ok(None),
        }
    }

    async fn predict(
        &'static self,
        l: &'static Loaded,
        payload: &Value,
        explain: bool,
    ) -> Result<Response<String>, ApiError> {
        // Recorded before scoring (and so before the answer: the caller's next transaction
        // sees this one).
        let velocity = self.velocity_of(l, payload).await?;
        self.budgets.prepare(self.host, l).await;
        let rules = self.rules_for(l);
        let bound = rules.as_deref().and_then(|r| r.as_ref().ok());
        let mut p = predict::score_transaction(
            l,
            &self.settings,
            payload,
            explain,
            self.stamp(),
            velocity.as_ref().map(|(v, _)| v.as_slice()),
            decide::Deciders {
                rules: bound,
                budgets: &self.budgets,
            },
        )?;
        p.velocity_stale = velocity.is_some_and(|(_, stale)| stale);
        let resp = json(StatusCode::OK, &p);
        self.budgets.write_if_due(self.host).await;
        if self.settings.store.is_some() {
            let shadow = self
                .models
                .shadow()
                .and_then(|s| predict::shadow_score(s, payload));
            self.forward(vec![p.event(l, &self.settings, shadow)])
                .await?;
        }
        Ok(resp)
    }

    /// `{transactions: [...]}` → one result per item; a bad item gets `{index, error}` and the
    /// rest are still scored.
    async fn predict_batch(
        &'static self,
        l: &'static Loaded,
        payload: &Value,
        explain: bool,
    ) -> Result<Response<String>, ApiError> {
        let items = predict::batch_items(payload)?;
        let forwarding = self.settings.store.is_some();
        let shadow = self.models.shadow();
        let rules = self.rules_for(l);
        let bound = rules.as_deref().and_then(|r| r.as_ref().ok());
        let mut failed = 0;
        let mut events = Vec::new();
        // In order: an entity's later items see its earlier ones.
        let mut velocities = Vec::with_capacity(items.len());
        for item in items {
            velocities.push(self.velocity_of(l, item).await);
        }
        self.budgets.prepare(self.host, l).await;
        let results: Vec<Value> = items
            .iter()
            .zip(velocities)
            .enumerate()
            .map(|(index, (item, velocity))| {
                let outcome = velocity
                    .map_err(|e| predict::ItemError::Input(e.message))
                    .and_then(|v| {
                        let mut p = predict::score_transaction(
                            l,
                            &self.settings,
                            item,
                            explain,
                            self.stamp(),
                            v.as_ref().map(|(v, _)| v.as_slice()),
                            decide::Deciders {
                                rules: bound,
                                budgets: &self.budgets,
                            },
                        )?;
                        p.velocity_stale = v.is_some_and(|(_, stale)| stale);
                        Ok(p)
                    });
                match &outcome {
                    Ok(p) if forwarding => {
                        let shadow = shadow.and_then(|s| predict::shadow_score(s, item));
                        events.push(p.event(l, &self.settings, shadow));
                    }
                    Ok(_) => {}
                    Err(_) => failed += 1,
                }
                predict::batch_result(index, outcome)
            })
            .collect();
        #[derive(Serialize)]
        struct Batch {
            results: Vec<Value>,
            total_processed: usize,
            succeeded: usize,
            failed: usize,
            timestamp: String,
        }
        let resp = json(
            StatusCode::OK,
            &Batch {
                total_processed: results.len(),
                succeeded: results.len() - failed,
                failed,
                results,
                timestamp: predict::iso_millis(self.host.now()),
            },
        );
        self.budgets.write_if_due(self.host).await;
        self.forward(events).await?;
        Ok(resp)
    }

    /// `POST /api/feedback`: 202 once queued for the store.
    async fn feedback(&'static self, payload: &Value) -> Result<Response<String>, ApiError> {
        let (transaction, event) =
            feedback::parse(payload, ids::new_uuid(self.host), self.host.now())?;
        if self.settings.store.is_none() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "feedback needs the central store, which is not configured (store_url, store_token)",
            ));
        }
        let contract::Event::Feedback(f) = &event else {
            unreachable!("feedback::parse returns feedback")
        };
        let label = f.label;
        self.forward(vec![event]).await?;
        Ok(json(
            StatusCode::ACCEPTED,
            &serde_json::json!({
                "message": "Feedback queued",
                "status": "queued",
                "transaction_id": transaction.to_json(),
                "feedback": label,
            }),
        ))
    }

    fn health(&self) -> Response<String> {
        #[derive(Serialize)]
        struct Health<'a> {
            status: &'a str,
            model_initialized: bool,
            /// Legacy field. The worker never waits on the central store, so it reports
            /// whether writes are forwarded to one (`forwarding`) or not (`not_configured`),
            /// not its reachability.
            database: &'a str,
            model_version: &'a str,
            model_checksum: &'a str,
            #[serde(flatten)]
            rollout: Rollout<'a>,
            features: &'a [String],
            /// Rules in force (the stored policy's; 0 without one).
            policy_rules: usize,
            /// Why the stored policy is not in force, when it is not.
            #[serde(skip_serializing_if = "Option::is_none")]
            policy_error: Option<String>,
            timestamp: String,
        }
        match self.models.live() {
            Ok(l) => json(
                StatusCode::OK,
                &Health {
                    status: "healthy",
                    model_initialized: true,
                    database: if self.settings.store.is_some() {
                        "forwarding"
                    } else {
                        "not_configured"
                    },
                    model_version: &l.version,
                    model_checksum: &l.checksum,
                    rollout: self.rollout(),
                    features: l.model.features(),
                    policy_rules: self.policies.rule_count(),
                    policy_error: self.policies.error(),
                    timestamp: predict::iso_millis(self.host.now()),
                },
            ),
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"status": "unhealthy", "model_initialized": false, "error": e}),
            ),
        }
    }

    fn rollout(&self) -> Rollout<'_> {
        Rollout {
            model_source: self.models.source(),
            shadow_model_version: self.models.shadow().map(|s| s.version.clone()),
            model_pull: self.settings.rollout.pull,
            model_pin: self.settings.rollout.pin.as_deref(),
            status: self.models.status(),
        }
    }

    fn model_info(&self) -> Result<Response<String>, ApiError> {
        #[derive(Serialize)]
        struct ModelInfo<'a> {
            model_version: &'a str,
            model_checksum: &'a str,
            format_version: u16,
            features: &'a [String],
            n_trees: usize,
            n_nodes: usize,
            max_samples: u32,
            offset: f64,
            expected_value: f64,
            size_bytes: usize,
            #[serde(flatten)]
            rollout: Rollout<'a>,
            metadata: Map<String, Value>,
        }
        let l = self.loaded()?;
        let forest = l.model.forest();
        Ok(json(
            StatusCode::OK,
            &ModelInfo {
                model_version: &l.version,
                model_checksum: &l.checksum,
                format_version: FORMAT_VERSION,
                features: l.model.features(),
                n_trees: forest.trees().len(),
                n_nodes: forest.node_count(),
                max_samples: forest.max_samples(),
                offset: forest.offset(),
                expected_value: l.model.expected_value(),
                size_bytes: l.file.len(),
                rollout: self.rollout(),
                metadata: l
                    .model
                    .metadata()
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            },
        ))
    }

    /// Decodes the model file with every check and compares it with the loaded model, and
    /// confirms installed tables against it in full (what an instance start may skip);
    /// clients call it opportunistically.
    fn warmup(&self) -> Result<Response<String>, ApiError> {
        let l = self.loaded()?;
        let model_ok = Model::from_bytes(l.file)
            .inspect_err(|e| eprintln!("worker: embedded model: {e}"))
            .is_ok_and(|full| full == l.model);
        let verified = model_ok
            && (!l.tables_installed.get()
                || l.model
                    .verify_explanation_table_parts(&l.tables.borrow())
                    .inspect_err(|e| eprintln!("worker: embedded explanation tables: {e}"))
                    .is_ok());
        let ready =
            verified && l.model.prepare_explanations() && l.model.expected_value().is_finite();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({"status": "warm", "model_version": l.version, "explanations_ready": ready}),
        ))
    }
}

/// Where the served model comes from, in `/api/health` and `/api/model`.
#[derive(Serialize)]
struct Rollout<'a> {
    /// `embedded` (compiled in) or `registry` (pulled, from the key-value store).
    model_source: &'static str,
    shadow_model_version: Option<String>,
    model_pull: bool,
    model_pin: Option<&'a str>,
    #[serde(flatten)]
    status: rollout::Status,
}

/// `OPTIONS` on a known route: 204, with the CORS preflight headers when the origin is
/// allowed. Never needs an API key (browsers do not send one on a preflight).
fn preflight(allowed: &Method, cors_allowed: bool) -> Response<String> {
    let mut resp = Response::new(String::new());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        "allow",
        HeaderValue::from_static(if *allowed == Method::GET {
            "GET, OPTIONS"
        } else {
            "POST, OPTIONS"
        }),
    );
    if cors_allowed {
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("content-type, x-api-key, authorization"),
        );
        h.insert("access-control-max-age", HeaderValue::from_static("600"));
    }
    resp
}

/// 415 unless the body is declared JSON; a missing content type is taken as JSON, as the
/// legacy service's clients did not always send one.
fn unsupported_content_type(headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get("content-type") else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("content type {essence:?} is not supported; send application/json"),
    ))
}

/// Collects the body, refusing more than [`PREDICT_MAX_BODY_BYTES`].
async fn read_body<B>(body: B) -> Result<Vec<u8>, ApiError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, PREDICT_MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is larger than 1 MiB",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "could not read request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests;
