//! `harness`: serve a Spin P3 HTTP component the way Spin does (see the
//! library docs), for manual testing and for end-to-end tests that want a
//! separate process.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// The Spin manifest whose key-value stores and variables (with their defaults and
    /// SPIN_VARIABLE_* overrides) the component is granted, as `spin up` grants them; `none`
    /// for none. Default: ./spin.toml when it exists. --kv-store and --var add to it.
    #[arg(long = "from", value_name = "SPIN_TOML")]
    manifest: Option<PathBuf>,
    /// Spin's runtime configuration: its `type = "spin"` stores without a path are held in
    /// memory, as `spin up --runtime-config-file` holds them. Default: ./runtime-config.toml
    /// next to the manifest read from ./spin.toml, when it exists.
    #[arg(long = "runtime-config-file", value_name = "FILE")]
    runtime_config: Option<PathBuf>,
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
    /// Directory of the key-value stores' data, kept across restarts
    /// (`<DIR>/<LABEL>/`). Grants the store `default` unless --kv-store is given.
    #[arg(long, value_name = "DIR")]
    kv_dir: Option<PathBuf>,
    /// Key-value store label the component may open (repeatable), as in
    /// spin.toml's `key_value_stores`. Without --kv-dir the data lives in a
    /// temporary directory removed on exit.
    #[arg(long = "kv-store", value_name = "LABEL")]
    kv_stores: Vec<String>,
    /// A granted store held in memory (repeatable), as Spin holds a `type = "spin"` store
    /// without a `path` (the repository's runtime-config.toml: `velocity`).
    #[arg(long = "kv-memory", value_name = "LABEL")]
    kv_memory: Vec<String>,
    /// Requests served by one instance before it is replaced (Spin's
    /// `--max-instance-reuse-count`).
    #[arg(long, alias = "max-instance-reuse-count", default_value_t = DEFAULT_MAX_REUSE)]
    max_reuse: usize,
    /// Requests one instance serves at once (Spin's
    /// `--max-instance-concurrent-reuse-count`).
    #[arg(long = "max-instance-concurrent-reuse-count", default_value_t = harness::DEFAULT_MAX_CONCURRENT_REUSE)]
    max_concurrent_reuse: usize,
    /// An instance idle this long is dropped (Spin's `--idle-instance-timeout`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    idle_instance_timeout: std::time::Duration,
    /// Set TCP_NODELAY on accepted connections. Spin does not; off by default
    /// so that latency here is what `spin up` shows.
    #[arg(long)]
    tcp_nodelay: bool,
    /// Most component instances alive at once (Spin's default).
    #[arg(long, default_value_t = harness::SPIN_POOL_INSTANCES)]
    pool_instances: u32,
    /// Close a connection that has not sent a whole request head within this
    /// time (e.g. 30s, 500ms); 0 = never, as `spin up` (which sets none).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    header_read_timeout: std::time::Duration,
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
    // What spin.toml grants (./spin.toml by default, as `spin up`), then the flags on top.
    let default_manifest = Path::new("spin.toml");
    let manifest = match &args.manifest {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None => default_manifest
            .exists()
            .then(|| default_manifest.to_path_buf()),
    };
    let env = |k: &str| std::env::var(k).ok();
    let grants = match &manifest {
        Some(p) => harness::manifest::read_manifest(p, &env)?,
        None => harness::manifest::Grants::default(),
    };
    let runtime_config = args.runtime_config.clone().or_else(|| {
        let p = Path::new("runtime-config.toml");
        (args.manifest.is_none() && manifest.is_some() && p.exists()).then(|| p.to_path_buf())
    });
    let mut memory = match &runtime_config {
        Some(p) => harness::manifest::memory_stores(p)?,
        None => Vec::new(),
    };
    memory.extend(args.kv_memory);
    let mut key_value_stores = grants.key_value_stores;
    for s in args.kv_stores {
        if !key_value_stores.contains(&s) {
            key_value_stores.push(s);
        }
    }
    if key_value_stores.is_empty() && args.kv_dir.is_some() {
        key_value_stores.push("default".to_owned());
    }
    // Flags after the manifest's: a later pair overrides an earlier one.
    let mut variables = grants.variables;
    variables.extend(args.vars);
    if let Some(p) = &manifest {
        eprintln!(
            "harness: granted by {}: key-value stores {:?} (in memory: {:?}), {} variables",
            p.display(),
            key_value_stores,
            memory,
            variables.len()
        );
    }
    let config = HarnessConfig {
        component: args.component,
        listen: args.listen,
        max_reuse: args.max_reuse,
        max_concurrent_reuse: args.max_concurrent_reuse,
        idle_instance_timeout: args.idle_instance_timeout,
        tcp_nodelay: args.tcp_nodelay,
        pool_instances: args.pool_instances,
        env: args.env,
        variables,
        key_value_stores,
        key_value_dir: args.kv_dir,
        memory_key_value_stores: memory,
        header_read_timeout: (!args.header_read_timeout.is_zero())
            .then_some(args.header_read_timeout),
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
