//! `harness`: serve a Spin P3 HTTP component the way Spin does (see the
//! library docs), for manual testing and for end-to-end tests that want a
//! separate process.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use harness::{DEFAULT_MAX_REUSE, Harness, HarnessConfig};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Host a Spin (WASI P3) HTTP component in wasmtime, as Spin does"
)]
struct Args {
    /// Component to serve (.wasm).
    #[arg(long)]
    component: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Guest environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Spin variable of the component, NAME=VALUE (repeatable); as if set in
    /// spin.toml's `[component.<id>.variables]`.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_env)]
    vars: Vec<(String, String)>,
    /// Requests served by one instance before it is replaced.
    #[arg(long, default_value_t = DEFAULT_MAX_REUSE)]
    max_reuse: usize,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = HarnessConfig {
        component: args.component,
        listen: args.listen,
        max_reuse: args.max_reuse,
        env: args.env,
        variables: args.vars,
    };
    let harness = Harness::bind(&config).await?;

    // Tests wait for exactly this line before connecting.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", harness.local_addr())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    drop(stdout);

    harness.serve(shutdown_signal()).await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("harness: cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                eprintln!("harness: cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
