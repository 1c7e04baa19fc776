//! Connection pool, schema migrations and database error classification.
//!
//! Migrations are plain SQL files embedded at compile time and applied in order inside one
//! transaction, under an advisory lock so that several store processes starting together apply
//! each file once; applied versions are recorded in `schema_migrations`.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// `(version, name, sql)`, in the order they are applied. Never edit an applied file: add one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "legacy_ids",
        include_str!("../migrations/0002_legacy_ids.sql"),
    ),
    (
        3,
        "model_registry",
        include_str!("../migrations/0003_model_registry.sql"),
    ),
    (
        4,
        "partitioned_transactions",
        include_str!("../migrations/0004_partitioned_transactions.sql"),
    ),
    (
        5,
        "policies",
        include_str!("../migrations/0005_policies.sql"),
    ),
    (
        6,
        "decisions",
        include_str!("../migrations/0006_decisions.sql"),
    ),
    (
        7,
        "audit_and_signatures",
        include_str!("../migrations/0007_audit_and_signatures.sql"),
    ),
    (
        8,
        "shadow_decisions",
        include_str!("../migrations/0008_shadow_decisions.sql"),
    ),
    (
        9,
        "review_and_labels",
        include_str!("../migrations/0009_review_and_labels.sql"),
    ),
    (
        10,
        "transaction_time",
        include_str!("../migrations/0010_transaction_time.sql"),
    ),
];

/// Arbitrary constant naming the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x5345_4355_5245_464c; // "SECUREFL"

/// Errors talking to PostgreSQL, split by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached right now (down, restarting, pool timed out): retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A transaction lost a deadlock or serialization conflict: safe to rerun at once.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// The database refused a value it cannot store (SQLSTATE classes 22 "data exception" and
    /// 54 "program limit exceeded"): the input's fault, never worth retrying. Validation
    /// ([`contract::Event::validate`]) should have caught it first; this keeps it a 400.
    #[error("value cannot be stored: {0}")]
    Invalid(String),
    /// A row's `scored_at` has no partition of `transactions` (another store process dropped
    /// one this process believed in): recreate the partitions and rerun.
    #[error("no partition for a row: {0}")]
    MissingPartition(String),
    /// Anything else (a bug, a schema problem).
    #[error("database error: {0}")]
    Other(String),
}

impl DbError {
    /// The label used in the `store_errors_total{kind}` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            DbError::Unavailable(_) => "database_unavailable",
            DbError::Conflict(_) => "database_conflict",
            DbError::Invalid(_) => "database_invalid_input",
            DbError::MissingPartition(_) => "database_missing_partition",
            DbError::Other(_) => "database",
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            // The top-level message of a connection error ("error connecting to server") hides
            // the cause (refused, timed out, DNS): append it.
            None => match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        };
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                DbError::Conflict(message)
            }
            // Class 08 (connection exception) and the shutdown / starting-up family of 57P0x.
            Some(c) if c.code().starts_with("08") || c.code().starts_with("57P0") => {
                DbError::Unavailable(message)
            }
            Some(c)
                if *c == SqlState::CHECK_VIOLATION
                    && e.as_db_error()
                        .is_some_and(|d| d.message().starts_with("no partition of relation")) =>
            {
                DbError::MissingPartition(message)
            }
            Some(c) if c.code().starts_with("22") || c.code().starts_with("54") => {
                DbError::Invalid(message)
            }
            Some(_) => DbError::Other(message),
            // No SQLSTATE: the connection broke (I/O error, closed, server went away).
            None => DbError::Unavailable(message),
        }
    }
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

/// Builds the pool; connections are opened lazily, so this succeeds with the database down.
pub fn pool(
    database_url: &str,
    max_size: usize,
    timeout: Duration,
) -> Result<Pool, crate::StoreError> {
    let mut pg: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e| crate::StoreError::DatabaseUrl(format!("{e}")))?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(timeout);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("secureflow-store");
    }
    // Fast recycling: a connection whose socket closed is discarded on checkout; a connection
    // broken without notice fails its first query, which the caller reports as unavailable.
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| crate::StoreError::Pool(e.to_string()))
}

/// Applies the migrations not yet recorded in `schema_migrations`; returns how many it applied.
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tracing::info!(version, name, "applied migration");
        count += 1;
    }
    tx.commit().await?;
    Ok(count)
}
