//! The day partitions of `transactions`: created ahead, created on demand at ingest, dropped by
//! retention.
//!
//! The partition definition itself (name, bounds) lives in SQL, in migration 0004
//! (`sfe_transaction_partition`, `sfe_drop_transaction_partitions_before`), so the migration
//! and this module cannot disagree. This module decides *when*: [`Partitions::maintain`] runs
//! after the migrations and then every [`MAINTENANCE_INTERVAL`]; ingest calls
//! [`Partitions::ensure`] for the days of a batch, which costs nothing for days this process
//! already knows exist. When another store process dropped a day this one still believed in,
//! the insert fails with "no partition" ([`crate::db::DbError::MissingPartition`]); ingest then
//! [forgets](Partitions::forget) and retries.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use deadpool_postgres::Pool;

use crate::db::DbError;

/// How often the store creates the days ahead and applies retention.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);
/// Days created ahead of today by default (plus yesterday, for late events around midnight).
pub const DEFAULT_AHEAD_DAYS: u32 = 7;
/// How long retention waits for the lock on `transactions` before trying again next time
/// (dropping a partition needs an exclusive lock; a long export must not stall ingest behind it).
const DROP_LOCK_TIMEOUT: &str = "5s";

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Days (UTC) whose partition exists after the pass, oldest first, from yesterday on.
    pub ensured: Vec<NaiveDate>,
    /// Partitions dropped by retention.
    pub dropped: Vec<String>,
}

/// Days known (by this process) to have a partition.
#[derive(Debug, Default)]
pub struct Partitions {
    known: Mutex<BTreeSet<NaiveDate>>,
}

impl Partitions {
    /// The known days (a panic elsewhere cannot leave the set half-updated: take it as is).
    fn known(&self) -> std::sync::MutexGuard<'_, BTreeSet<NaiveDate>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn missing(&self, days: &BTreeSet<NaiveDate>) -> Vec<NaiveDate> {
        let known = self.known();
        days.difference(&known).copied().collect()
    }

    /// Makes sure every day in `days` has a partition. Each creation is its own short
    /// transaction (it locks `transactions` briefly), never part of an ingest transaction.
    pub async fn ensure(&self, pool: &Pool, days: &BTreeSet<NaiveDate>) -> Result<usize, DbError> {
        let missing = self.missing(days);
        if missing.is_empty() {
            return Ok(0);
        }
        let client = pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT sfe_transaction_partition($1)")
            .await?;
        for day in &missing {
            client.query_one(&stmt, &[day]).await?;
            self.known().insert(*day);
        }
        Ok(missing.len())
    }

    /// Forgets what this process knew (another process may have dropped a partition).
    pub fn forget(&self) {
        self.known().clear();
    }

    /// Creates yesterday through `ahead_days` after today, then, with a retention of
    /// `retention_days`, drops every partition of a day before today − `retention_days`.
    pub async fn maintain(
        &self,
        pool: &Pool,
        ahead_days: u32,
        retention_days: Option<u32>,
    ) -> Result<Maintenance, DbError> {
        let today = Utc::now().date_naive();
        let first = today.pred_opt().unwrap_or(today);
        let days: BTreeSet<NaiveDate> = first
            .iter_days()
            .take_while(|d| *d <= today + Days::new(u64::from(ahead_days)))
            .collect();
        // Re-check what exists: the days ahead are cheap to confirm and another process (or an
        // operator) may have changed them.
        self.forget();
        self.ensure(pool, &days).await?;
        let mut dropped = Vec::new();
        if let Some(keep) = retention_days {
            let cutoff = today - Days::new(u64::from(keep));
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(&format!("SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
                .await?;
            dropped = tx
                .query(
                    "SELECT sfe_drop_transaction_partitions_before($1)",
                    &[&cutoff],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.commit().await?;
            self.known().retain(|d| *d >= cutoff);
        }
        Ok(Maintenance {
            ensured: days.into_iter().collect(),
            dropped,
        })
    }
}

/// The UTC day a `scored_at` falls in: the partition it belongs to.
pub fn day_of(t: chrono::DateTime<Utc>) -> NaiveDate {
    t.date_naive()
}
