//! A throwaway Redis server (Debian's `redis-server`) on a free loopback port, for the tests
//! that run Spin with a Redis key-value store. No persistence; stopped on drop (and with this
//! process, like [`crate::spin_up::SpinUp`]).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::spin_up::{stop_group, tied_to_this_process};

/// A running `redis-server`.
pub struct TempRedis {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    _lifeline: std::process::ChildStdin,
    _dir: tempfile::TempDir,
}

impl TempRedis {
    /// Starts `redis-server` (from PATH; `scripts/setup.sh --tests` installs it) and waits
    /// until it answers `PING`.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // A free port: bound and released (Redis cannot be told to pick one and report it).
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = tied_to_this_process(Path::new("redis-server"));
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .context("running redis-server (install it with scripts/setup.sh --tests)")?;
        let lifeline = child.stdin.take().context("redis-server stdin")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let redis = TempRedis {
            addr,
            child,
            _lifeline: lifeline,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis
            .cli(&["PING"])
            .map(|o| o.trim() != "PONG")
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                bail!("redis-server on {addr} did not answer PING within 20 s");
            }
            if TcpStream::connect(addr).is_err() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Runs `redis-cli` against it; its stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(args)
            .output()
            .context("running redis-cli")?;
        if !out.status.success() {
            bail!(
                "redis-cli {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every key (SCAN, as Spin's `get-keys` does).
    pub fn keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.cli(&["--scan"])?.lines().map(str::to_owned).collect())
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        let _ = stop_group(&mut self.child);
    }
}
