//! PostgreSQL as a data source: the central store's `transactions` table (or any table or query)
//! over a time window, read in bulk with `COPY (…) TO STDOUT (FORMAT csv, HEADER)` into a
//! temporary CSV file that polars then scans like any other input. COPY streams the result in
//! one round trip instead of row-by-row fetches, and the CSV path reuses the whole file pipeline
//! (feature spec, derivation, labels).
//!
//! COPY takes no bind parameters, so the window bounds are parsed first and re-emitted in a
//! canonical form (RFC 3339 timestamps in UTC, microseconds), and identifiers are quoted; user text is
//! never pasted into the statement except `--query`, which is SQL by definition.

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

/// What to read from a Postgres input.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Table (optionally `schema.table`); default `transactions`.
    pub table: Option<String>,
    /// A SELECT to read instead of a table.
    pub query: Option<String>,
    /// Column the window applies to.
    pub time_column: String,
    /// Lower bound: a duration back from now (`30d`, `12h`) or an RFC 3339 time.
    pub since: Option<String>,
    /// Upper bound (exclusive): RFC 3339 time or a duration back from now.
    pub until: Option<String>,
    /// Add a `label` column from the `feedback` table and keep only rows with feedback.
    pub labels_from_feedback: bool,
    /// With `labels_from_feedback`, for velocity features: keep the window's transactions
    /// without feedback too (an empty `label`: history the features are computed over, not
    /// training rows), and add the entity ids ([`contract::ENTITY_FIELDS`]) and the
    /// transaction's time (the edge's instant for velocity) as columns; this names the time
    /// column (the spec's time field). The store's `transactions` table only.
    pub velocity_history: Option<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            table: None,
            query: None,
            time_column: "scored_at".to_string(),
            since: None,
            until: None,
            labels_from_feedback: false,
            velocity_history: None,
        }
    }
}

/// True for `postgres://` and `postgresql://` inputs.
pub fn is_postgres(input: &str) -> bool {
    input.starts_with("postgres://") || input.starts_with("postgresql://")
}

fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// A window bound as a SQL timestamptz literal.
fn bound(value: &str, flag: &str) -> Result<String> {
    let at = if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        t
    } else if let Ok(d) = humantime::parse_duration(value) {
        SystemTime::now()
            .checked_sub(d)
            .with_context(|| format!("{flag} {value} reaches before the epoch"))?
    } else {
        bail!("{flag} {value:?}: expected a duration such as 30d or 12h, or an RFC 3339 time");
    };
    Ok(format!(
        "'{}'::timestamptz",
        humantime::format_rfc3339_micros(at)
    ))
}

/// The SELECT whose rows are exported.
pub fn select_sql(opts: &PgOptions, feedback_column: Option<&str>) -> Result<String> {
    let source = match (&opts.query, &opts.table) {
        (Some(_), Some(_)) => bail!("give --table or --query, not both"),
        (Some(q), None) => format!("({}) AS src", q.trim().trim_end_matches(';')),
        (None, t) => format!(
            "{} AS src",
            quote_ident(t.as_deref().unwrap_or("transactions"))
        ),
    };
    let time = format!("src.{}", quote_ident(&opts.time_column));
    let mut filters = Vec::new();
    if let Some(s) = &opts.since {
        filters.push(format!("{time} >= {}", bound(s, "--since")?));
    }
    if let Some(u) = &opts.until {
        filters.push(format!("{time} < {}", bound(u, "--until")?));
    }
    let history = match (&opts.velocity_history, feedback_column) {
        (Some(time), Some(_)) => {
            if opts.query.is_some() {
                bail!(
                    "velocity features from feedback labels read the store's transactions table, \
                     not --query"
                );
            }
            Some(time)
        }
        _ => None,
    };
    let (select, join) = match (feedback_column, history) {
        (Some(col), Some(time)) => {
            let fb = format!("fb.{}", quote_ident(col));
            let mut select = format!(
                "src.*, CASE WHEN {fb} IS NULL THEN NULL ELSE {} END AS \"label\"",
                contract::legacy::label_sql("src.\"is_anomaly\"", &fb)
            );
            for e in contract::ENTITY_FIELDS {
                select.push_str(&format!(
                    ", src.\"entities\" ->> '{e}' AS {}",
                    quote_ident(e)
                ));
            }
            // The instant the edge computed velocity at: the payload's time, else its clock.
            select.push_str(&format!(
                ", to_char(COALESCE(src.\"transaction_time\", src.\"scored_at\") \
                 AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {}",
                quote_ident(time),
            ));
            (
                select,
                " LEFT JOIN \"feedback\" AS fb ON fb.\"transaction_id\" = src.\"id\"".to_string(),
            )
        }
        (Some(col), None) => (
            // The store's label rule (the contract crate: one definition for both).
            format!(
                "src.*, {} AS \"label\"",
                contract::legacy::label_sql(
                    "src.\"is_anomaly\"",
                    &format!("fb.{}", quote_ident(col))
                )
            ),
            " JOIN \"feedback\" AS fb ON fb.\"transaction_id\" = src.\"id\"".to_string(),
        ),
        (None, _) => ("src.*".to_string(), String::new()),
    };
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    let order = if history.is_some() {
        // Arrival order, ties (the same microsecond) by the time-ordered id.
        format!(" ORDER BY {time}, src.\"id\"")
    } else if opts.query.is_none() || opts.since.is_some() || opts.until.is_some() {
        format!(" ORDER BY {time}")
    } else {
        String::new()
    };
    Ok(format!(
        "SELECT {select} FROM {source}{join}{filter}{order}"
    ))
}

/// Runs the export into `dest` as CSV with a header; returns the bytes written.
pub fn copy_to_csv(url: &str, opts: &PgOptions, dest: &Path) -> Result<u64> {
    let rt = crate::source::runtime()?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {}", redact(url)))?;
        let conn = tokio::spawn(connection);
        let feedback_column = if opts.labels_from_feedback {
            // The store's table calls it `label`; older exports `feedback` / `user_feedback`.
            let row = client
                .query_opt(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_name = 'feedback' AND data_type = 'boolean' \
                       AND column_name IN ('label', 'feedback', 'user_feedback') \
                     ORDER BY column_name LIMIT 1",
                    &[],
                )
                .await
                .context("looking up the feedback table")?;
            Some(
                row.map(|r| r.get::<_, String>(0))
                    .context("no feedback table with a boolean label/feedback column")?,
            )
        } else {
            None
        };
        let sql = select_sql(opts, feedback_column.as_deref())?;
        let copy = format!("COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)");
        let stream = client
            .copy_out(copy.as_str())
            .await
            .with_context(|| format!("running {copy}"))?;
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?,
        );
        let mut written = 0u64;
        futures::pin_mut!(stream);
        while let Some(chunk) = stream.try_next().await.context("reading COPY output")? {
            file.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        file.flush()?;
        drop(client);
        let _ = conn.await;
        Ok(written)
    })
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_quote_and_canonicalize() {
        let opts = PgOptions {
            table: Some("public.tx\"s".into()),
            until: Some("2026-01-02T03:04:05.678Z".into()),
            ..Default::default()
        };
        assert_eq!(
            select_sql(&opts, None).unwrap(),
            "SELECT src.* FROM \"public\".\"tx\"\"s\" AS src WHERE src.\"scored_at\" < \
             '2026-01-02T03:04:05.678000Z'::timestamptz ORDER BY src.\"scored_at\""
        );
        let bad = PgOptions {
            since: Some("'; DROP TABLE x; --".into()),
            ..Default::default()
        };
        assert!(select_sql(&bad, None).is_err());
        let both = PgOptions {
            table: Some("t".into()),
            query: Some("SELECT 1".into()),
            ..Default::default()
        };
        assert!(select_sql(&both, None).is_err());
    }

    #[test]
    fn velocity_history_keeps_unlabelled_rows_with_entities_and_time() {
        let opts = PgOptions {
            labels_from_feedback: true,
            velocity_history: Some("timestamp".into()),
            ..Default::default()
        };
        let sql = select_sql(&opts, Some("label")).unwrap();
        assert!(sql.contains(" LEFT JOIN \"feedback\" AS fb"), "{sql}");
        assert!(
            sql.contains("CASE WHEN fb.\"label\" IS NULL THEN NULL"),
            "{sql}"
        );
        assert!(
            sql.contains("src.\"entities\" ->> 'card_id' AS \"card_id\""),
            "{sql}"
        );
        assert!(sql.contains(") AS \"timestamp\""), "{sql}");
        assert!(
            sql.ends_with("ORDER BY src.\"scored_at\", src.\"id\""),
            "{sql}"
        );
        // Without feedback labels the option changes nothing.
        assert_eq!(
            select_sql(&opts, None).unwrap(),
            "SELECT src.* FROM \"transactions\" AS src ORDER BY src.\"scored_at\""
        );
        let query = PgOptions {
            query: Some("SELECT * FROM transactions".into()),
            ..opts
        };
        assert!(select_sql(&query, Some("label")).is_err());
    }
}
