//! The central store: system of record for transactions scored at the edge and for analyst
//! feedback, in front of PostgreSQL.
//!
//! Edge workers batch their events and `POST /v1/events`; the store validates the whole batch,
//! then writes it in one database transaction with a few multi-row statements (`UNNEST` of
//! arrays), deduplicating by `event_id` so that the edge can redeliver freely (at-least-once in,
//! exactly-once stored). The worker reads the legacy dashboard and transaction listing from it,
//! and the trainer pulls labelled rows from the export. The HTTP API, schema and operational
//! behaviour are documented in `store/README.md`.
//!
//! Layout: the `contract` crate parses and validates batches (the same types the edge
//! serialises), [`ingest`] writes them, [`query`] serves the
//! read side, [`db`] holds the pool, migrations and error classification, [`http`] the routes,
//! and [`metrics`] the Prometheus registry. [`Store`] ties them together; [`app`] and [`serve`]
//! let tests run the service in-process, and `main.rs` is a thin CLI over them.
//!
//! Startup with the database down: the service binds and serves at once; a background task
//! applies the migrations, retrying with capped exponential backoff and logging each failure,
//! and until it succeeds `/readyz` and the `/v1` endpoints answer 503. Later outages are
//! reported the same way per request (503 + `Retry-After`) and heal by themselves.

pub mod auth;
pub mod console;
pub mod db;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod partitions;
pub mod policy;
pub mod query;
pub mod registry;
pub mod review;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::net::TcpListener;

/// Settings of one store instance (the CLI flags of `main.rs` map onto these).
#[derive(Debug, Clone)]
pub struct Config {
    /// `postgres://user[:password]@host:port/database` (libpq key=value strings work too).
    pub database_url: String,
    /// A single development token with every permission (named `admin`), expected as
    /// `Authorization: Bearer <token>` on `/v1/*`. Production uses `tokens_file`.
    pub token: Option<String>,
    /// Named tokens with roles (see [`auth`]), re-read every [`TOKENS_RELOAD_INTERVAL`].
    pub tokens_file: Option<PathBuf>,
    /// Most simultaneous database connections.
    pub pool_size: usize,
    /// Connect, pool-wait and recycle timeout: how long a request waits for the database.
    pub db_timeout: Duration,
    /// Largest accepted `POST /v1/events` body.
    pub max_body_bytes: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Day partitions of `transactions` created ahead of today.
    pub partitions_ahead_days: u32,
    /// Keep transactions scored in this many days before today (whole UTC days, dropped a
    /// partition at a time); `None` keeps everything.
    pub retention_days: Option<u32>,
}

impl Config {
    pub const DEFAULT_POOL_SIZE: usize = 16;
    pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_MAX_BODY_BYTES: usize = contract::limits::INGEST_MAX_BODY_BYTES;
    pub const DEFAULT_MAX_BATCH_EVENTS: usize = contract::limits::INGEST_MAX_EVENTS;
    /// A configuration with the defaults for everything but the database and a development
    /// token (every permission).
    pub fn new(database_url: impl Into<String>, token: impl Into<String>) -> Self {
        Config {
            database_url: database_url.into(),
            token: Some(token.into()),
            tokens_file: None,
            pool_size: Self::DEFAULT_POOL_SIZE,
            db_timeout: Self::DEFAULT_DB_TIMEOUT,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_batch_events: Self::DEFAULT_MAX_BATCH_EVENTS,
            partitions_ahead_days: partitions::DEFAULT_AHEAD_DAYS,
            retention_days: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    DatabaseUrl(String),
    #[error("building the connection pool: {0}")]
    Pool(String),
    #[error(transparent)]
    Tokens(#[from] auth::TokenError),
    #[error("pool size must be at least 1")]
    PoolSize,
    #[error("the retention must be at least 1 day")]
    Retention,
    #[error("setting up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Database(#[from] db::DbError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// A store instance: pool, metrics and state shared by all requests. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    tokens: RwLock<Arc<auth::Tokens>>,
    pool: Pool,
    metrics: metrics::Metrics,
    migrated: AtomicBool,
    partitions: partitions::Partitions,
}

impl Store {
    /// Validates the configuration and builds the (lazy) pool; does not touch the database.
    pub fn new(config: Config) -> Result<Self, StoreError> {
        let tokens = load_tokens(&config)?;
        if config.pool_size == 0 {
            return Err(StoreError::PoolSize);
        }
        if config.retention_days == Some(0) {
            return Err(StoreError::Retention);
        }
        let pool = db::pool(&config.database_url, config.pool_size, config.db_timeout)?;
        Ok(Store {
            inner: Arc::new(Inner {
                tokens: RwLock::new(Arc::new(tokens)),
                config,
                pool,
                metrics: metrics::Metrics::new()?,
                migrated: AtomicBool::new(false),
                partitions: partitions::Partitions::default(),
            }),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The tokens accepted now.
    pub fn tokens(&self) -> Arc<auth::Tokens> {
        // A poisoned lock only means a reload panicked; the last tokens are still whole.
        self.inner
            .tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the tokens file (if configured). A bad file is refused whole and the tokens
    /// in force stay, so a typo during a rotation locks nobody out.
    pub fn reload_tokens(&self) -> Result<(), StoreError> {
        if self.inner.config.tokens_file.is_none() {
            return Ok(());
        }
        let fresh = load_tokens(&self.inner.config)?;
        let (before, after) = (self.tokens().names(), fresh.names());
        if before != after {
            tracing::info!(?before, ?after, "tokens reloaded");
        }
        *self
            .inner
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }

    /// [`Store::reload_tokens`] every [`TOKENS_RELOAD_INTERVAL`], logging refused files.
    async fn reload_tokens_forever(&self) {
        loop {
            tokio::time::sleep(TOKENS_RELOAD_INTERVAL).await;
            if let Err(e) = self.reload_tokens() {
                self.inner.metrics.error("tokens_file");
                tracing::error!(error = %e, "tokens file refused; the tokens in force stay");
            }
        }
    }

    pub(crate) fn inner_metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// Whether this instance has applied (or verified) the schema migrations.
    pub fn is_migrated(&self) -> bool {
        self.inner.migrated.load(Ordering::Acquire)
    }

    /// Applies pending migrations once; returns how many were applied.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let applied = db::migrate(&self.inner.pool).await?;
        self.inner.migrated.store(true, Ordering::Release);
        Ok(applied)
    }

    /// One partition maintenance pass (days ahead, retention), see [`partitions`]. The store
    /// runs it after the migrations and then hourly; tests and operators may run it any time.
    pub async fn maintain_partitions(&self) -> Result<partitions::Maintenance, StoreError> {
        let c = &self.inner.config;
        let done = self
            .inner
            .partitions
            .maintain(&self.inner.pool, c.partitions_ahead_days, c.retention_days)
            .await?;
        let m = &self.inner.metrics;
        m.partitions_dropped.inc_by(done.dropped.len() as u64);
        m.partitions_maintained.inc();
        if !done.dropped.is_empty() {
            tracing::info!(dropped = ?done.dropped, retention_days = ?c.retention_days,
                "retention dropped transaction partitions");
        }
        Ok(done)
    }

    /// [`Store::maintain_partitions`] now and every [`partitions::MAINTENANCE_INTERVAL`]
    /// (a failure is logged and counted; the next pass retries).
    async fn maintain_partitions_forever(&self) {
        loop {
            if let Err(e) = self.maintain_partitions().await {
                self.inner.metrics.error("partition_maintenance");
                tracing::warn!(error = %e, "partition maintenance failed; retrying next interval");
            }
            tokio::time::sleep(partitions::MAINTENANCE_INTERVAL).await;
        }
    }

    /// [`Store::migrate`] until it succeeds, backing off from 0.5 s to 30 s between attempts
    /// and logging every failure (so a down database is visible, not a silent crash loop).
    pub async fn migrate_with_retry(&self) {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1u32;
        loop {
            match self.migrate().await {
                Ok(applied) => {
                    tracing::info!(applied, attempt, "database schema up to date; ready");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64,
                        "database not reachable or migration failed; retrying (service reports not ready)");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
            attempt += 1;
        }
    }
}

/// How often the tokens file is re-read (a Kubernetes Secret mounted as a file changes in
/// place, so a rotation needs no restart).
pub const TOKENS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

fn load_tokens(config: &Config) -> Result<auth::Tokens, auth::TokenError> {
    let file = config
        .tokens_file
        .as_deref()
        .map(auth::Tokens::load)
        .transpose()?;
    let single = config
        .token
        .as_deref()
        .map(auth::Tokens::single)
        .transpose()?;
    match (file, single) {
        (Some(f), Some(s)) => Ok(f.merge(s)),
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (None, None) => Err(auth::TokenError::Empty),
    }
}

/// The HTTP application (all routes), for in-process use.
pub fn app(store: Store) -> axum::Router {
    http::router(store)
}

/// Serves `store` on `listener` until `shutdown` resolves, then stops accepting connections
/// and waits for in-flight requests (so a batch being written is committed and answered).
/// Starts the background task first: the migrations (unless already applied), then partition
/// maintenance.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StoreError> {
    let reload = {
        let store = store.clone();
        tokio::spawn(async move { store.reload_tokens_forever().await })
    };
    let background = {
        let store = store.clone();
        tokio::spawn(async move {
            if !store.is_migrated() {
                store.migrate_with_retry().await;
            }
            store.maintain_partitions_forever().await;
        })
    };
    let result = axum::serve(listener, app(store))
        .with_graceful_shutdown(shutdown)
        .await;
    background.abort();
    reload.abort();
    Ok(result?)
}
