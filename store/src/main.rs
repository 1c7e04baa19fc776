//! `store`: the central store service. See `store/README.md`.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use store::{Config, Store};

/// SecureFlow central store: ingests scored transactions and analyst feedback from the edge
/// into PostgreSQL and serves the dashboard, the transaction listing and the labelled export.
///
/// Schema migrations are applied at start. If the database is unreachable the service still
/// starts, logs each retry, and reports 503 on /readyz and /v1/* until the database is back.
/// Logs are JSON lines on stderr (level via RUST_LOG, default info); the bound address is
/// printed on stdout as `listening on ADDR`. SIGTERM/SIGINT stop accepting connections and
/// finish in-flight requests before exiting.
#[derive(Debug, Parser)]
#[command(name = "store", version)]
struct Cli {
    /// PostgreSQL connection URL, e.g. postgres://store:secret@db.internal:5432/secureflow
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,

    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "STORE_LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,

    /// Bearer token that clients must send on /v1/* (at least 16 characters).
    #[arg(long, env = "STORE_TOKEN", hide_env_values = true)]
    token: String,

    /// Maximum number of PostgreSQL connections.
    #[arg(long, env = "STORE_POOL_SIZE", default_value_t = Config::DEFAULT_POOL_SIZE)]
    pool_size: usize,

    /// How long a request waits to connect to / get a connection from the database before 503.
    #[arg(long, env = "STORE_DB_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    db_timeout: Duration,

    /// Largest POST /v1/events body in bytes (larger bodies get 413).
    #[arg(long, env = "STORE_MAX_BODY_BYTES", default_value_t = Config::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,

    /// Most events accepted in one batch (more gets 400).
    #[arg(long, env = "STORE_MAX_BATCH_EVENTS", default_value_t = Config::DEFAULT_MAX_BATCH_EVENTS)]
    max_batch_events: usize,

    /// Day partitions of the transactions table created ahead of today (UTC).
    #[arg(long, env = "STORE_PARTITIONS_AHEAD_DAYS", default_value_t = store::partitions::DEFAULT_AHEAD_DAYS)]
    partitions_ahead_days: u32,

    /// Keep transactions of this many days before today (UTC); older day partitions are dropped
    /// hourly. Unset keeps everything.
    #[arg(long, env = "STORE_RETENTION_DAYS")]
    retention_days: Option<u32>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let config = Config {
        database_url: cli.database_url,
        token: cli.token,
        pool_size: cli.pool_size,
        db_timeout: cli.db_timeout,
        max_body_bytes: cli.max_body_bytes,
        max_batch_events: cli.max_batch_events,
        partitions_ahead_days: cli.partitions_ahead_days,
        retention_days: cli.retention_days,
    };
    let store = Store::new(config).context("invalid configuration")?;
    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!("listening on {addr}");
    tracing::info!(%addr, "listening");
    store::serve(listener, store, shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
