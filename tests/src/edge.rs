//! One edge under test, served either by [`crate::Harness`] or by the real `spin up`
//! ([`crate::spin_up`]), so the same end-to-end tests run against both.
//!
//! The host comes from the environment: `SFE_EDGE=spin` runs `spin up`, anything else (or
//! unset) the harness. `scripts/test.sh` runs the HTTP suites both ways.

use std::net::SocketAddr;

use crate::spin_up::SpinUp;
use crate::{HarnessConfig, RunningHarness};

/// What serves the component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeHost {
    /// [`crate::Harness`] in this process.
    Harness,
    /// The Spin CLI, `spin up`, as a child process.
    Spin,
}

impl EdgeHost {
    /// `SFE_EDGE=spin` → [`EdgeHost::Spin`]; otherwise [`EdgeHost::Harness`].
    pub fn from_env() -> Self {
        match std::env::var("SFE_EDGE").as_deref() {
            Ok("spin") => Self::Spin,
            _ => Self::Harness,
        }
    }
}

/// A running edge; stopped on drop.
pub struct Edge {
    /// The address it serves.
    pub addr: SocketAddr,
    /// Who serves it.
    pub host: EdgeHost,
    running: Running,
    key_value_dir: Option<std::path::PathBuf>,
}

enum Running {
    Harness(RunningHarness),
    Spin(SpinUp),
}

/// Starts the component with `config` on the host chosen by [`EdgeHost::from_env`].
pub fn start_edge(config: HarnessConfig) -> anyhow::Result<Edge> {
    start_edge_on(EdgeHost::from_env(), config)
}

/// Starts the component with `config` on `host`.
pub fn start_edge_on(host: EdgeHost, config: HarnessConfig) -> anyhow::Result<Edge> {
    let key_value_dir = config.key_value_dir.clone();
    let (addr, running) = match host {
        EdgeHost::Harness => {
            let h = crate::start(config)?;
            (h.addr, Running::Harness(h))
        }
        EdgeHost::Spin => {
            let s = SpinUp::start(&config)?;
            (s.addr, Running::Spin(s))
        }
    };
    Ok(Edge {
        addr,
        host,
        running,
        key_value_dir,
    })
}

impl Edge {
    /// An edge around a `spin up` started by the caller (e.g. with a runtime config).
    pub fn from_spin(s: SpinUp) -> Self {
        Edge {
            addr: s.addr,
            host: EdgeHost::Spin,
            running: Running::Spin(s),
            key_value_dir: None,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Keys of the `default` key-value store that start with `prefix` (e.g. `outbox/`): files
    /// under the harness's key-value directory, rows in Spin's SQLite file.
    pub fn stored_keys(&self, prefix: &str) -> anyhow::Result<usize> {
        match &self.running {
            Running::Harness(_) => Ok(self
                .key_value_dir
                .as_deref()
                .map_or(0, |d| keys_under(d, prefix))),
            Running::Spin(s) => s.stored_keys(prefix),
        }
    }

    /// The `default` key-value store's value for `key`, read behind the edge's back.
    pub fn read_key(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match &self.running {
            Running::Harness(_) => match std::fs::read(self.key_file(key)?) {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            },
            Running::Spin(s) => s.read_key(key),
        }
    }

    /// Sets `key` in the `default` store behind the edge's back (to corrupt a value).
    pub fn write_key(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match &self.running {
            Running::Harness(_) => {
                // Atomically, as the harness itself writes (readers never see half a value).
                let file = self.key_file(key)?;
                let tmp = file.with_extension("corrupting");
                std::fs::write(&tmp, value)?;
                Ok(std::fs::rename(tmp, file)?)
            }
            Running::Spin(s) => s.write_key(key, value),
        }
    }

    /// The harness's file for `key` (see `key_value`: `k` + the key's hex).
    fn key_file(&self, key: &str) -> anyhow::Result<std::path::PathBuf> {
        let dir = self.key_value_dir.as_deref().ok_or_else(|| {
            anyhow::anyhow!("this edge keeps its key-value store in a temporary directory")
        })?;
        Ok(dir.join("default").join(format!("k{}", hex::encode(key))))
    }

    /// Stops the edge.
    pub fn shutdown(self) -> anyhow::Result<()> {
        match self.running {
            Running::Harness(h) => h.shutdown(),
            Running::Spin(s) => s.shutdown(),
        }
    }
}

/// Keys starting with `prefix` in the harness's `default` store under `dir` (one file per
/// key, named `k` + the key's hex; see `key_value`).
pub fn keys_under(dir: &std::path::Path, prefix: &str) -> usize {
    std::fs::read_dir(dir.join("default"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let key = hex::decode(name.strip_prefix('k')?).ok()?;
            key.starts_with(prefix.as_bytes()).then_some(())
        })
        .count()
}
