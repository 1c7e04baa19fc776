//! `store`: the central store service. See `store/README.md`.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use store::auth::Role;
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
#[command(
    name = "store",
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// PostgreSQL connection URL, e.g. postgres://store:secret@db.internal:5432/secureflow
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, required = true)]
    database_url: Option<String>,

    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "STORE_LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,

    /// Named tokens with roles (edge, operator, reader), one `name role sha256:<hex>` per line;
    /// `store token NAME ROLE` makes one. Re-read every 2 s, so tokens rotate without a restart.
    #[arg(long, env = "STORE_TOKENS_FILE", required_unless_present = "token")]
    tokens_file: Option<std::path::PathBuf>,

    /// A single development token with every permission (at least 16 characters), named
    /// `admin` in the audit columns. Use --tokens-file in production: with this, any holder
    /// (every edge) may publish models and policies.
    #[arg(long, env = "STORE_TOKEN", hide_env_values = true)]
    token: Option<String>,

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

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Makes a new random token for the tokens file: prints the token (give it to the caller,
    /// it is shown once) and the line to add to the file (its hash; the store keeps no token).
    Token {
        /// The token's name: recorded as the actor of every change it makes.
        name: String,
        /// edge, operator or reader.
        #[arg(value_parser = ["edge", "operator", "reader"])]
        role: String,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Token { name, role }) = &cli.command {
        let role = Role::GRANTABLE
            .into_iter()
            .find(|r| r.name() == role)
            .context("unknown role")?;
        let (token, line) = store::auth::generate(name, role)?;
        println!("token: {token}");
        println!("line:  {line}");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let config = Config {
        database_url: cli.database_url.context("--database-url is required")?,
        token: cli.token,
        tokens_file: cli.tokens_file,
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
