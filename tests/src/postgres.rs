//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, `pg_ctl start`
//! on a free loopback port, database `secureflow`, trust authentication, removed on drop.
//!
//! Tests need the real server (the store's bulk inserts, COPY, conflicts and outages behave as
//! they do in production only against it), but not a shared one: each test gets its own cluster,
//! so tests run in parallel and leave nothing behind. initdb refuses to run as root, so when the
//! tests run as root every server command runs as the `postgres` user (`runuser`), in a
//! directory that user owns. Durability settings are relaxed (`fsync=off`): a crash of the test
//! machine is not a case under test, a stopped server is (`stop`/`restart` shut down cleanly).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A running (or stopped, see [`TempPostgres::stop`]) throwaway cluster.
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
    /// Stops the server once this process is gone (see [`TempPostgres::spawn_reaper`]).
    reaper: Option<Child>,
}

impl TempPostgres {
    /// Creates and starts a cluster with database `secureflow`.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("sfe-postgres-")
            .tempdir()
            .context("creating the cluster directory")?;
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path()))?;
        }
        let mut pg = TempPostgres {
            dir,
            bin,
            port: free_port()?,
            as_postgres,
            running: false,
            reaper: None,
        };
        let data = pg.data_dir();
        pg.server_command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output_checked("initdb")?;
        pg.restart()?;
        pg.reaper = Some(pg.spawn_reaper(std::process::id())?);
        pg.client_command("createdb")
            .arg("secureflow")
            .output_checked("createdb")?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:PORT/secureflow`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/secureflow", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Stops the server (fast shutdown: open connections are cut, committed data is kept).
    pub fn stop(&mut self) -> Result<()> {
        if self.running {
            self.pg_ctl(&["stop", "-m", "fast", "-w"])?;
            self.running = false;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data (also used for the first start).
    pub fn restart(&mut self) -> Result<()> {
        if self.running {
            return Ok(());
        }
        let socket_dir = self.dir.path().to_string_lossy().into_owned();
        let options = format!(
            "-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port
        );
        let log = self.dir.path().join("server.log");
        let log = log.to_string_lossy().into_owned();
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log, "-o", &options])?;
        self.running = true;
        Ok(())
    }

    /// A client program of the cluster's version, connected to it as `postgres`.
    fn client_command(&self, program: &str) -> Command {
        let mut cmd = self.server_command(program);
        cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string());
        cmd
    }

    /// Runs SQL with `psql` and returns its unaligned, tuples-only output, trimmed — handy for
    /// counting rows without a client library (`pg.psql("select count(*) from t")?`).
    pub fn psql(&self, sql: &str) -> Result<String> {
        let out = self
            .client_command("psql")
            .args([
                "-d",
                "secureflow",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .output_checked("psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A cluster held in a `static` (a fixture shared by a test binary's tests) is never dropped,
    /// and a test process can be killed; either way the server would outlive it. This small
    /// shell process waits for process `pid` (ours) to end, then stops the server and removes
    /// its directory. `Drop` ends it when the cluster is dropped normally.
    fn spawn_reaper(&self, pid: u32) -> Result<Child> {
        let stop = self.pg_ctl_command(&["stop", "-m", "immediate", "-w"]);
        let script = r#"pid=$1 dir=$2; shift 2
while [ -d "/proc/$pid" ]; do sleep 1; done
"$@" >/dev/null 2>&1; rm -rf "$dir""#;
        Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(pid.to_string())
            .arg(self.dir.path())
            .arg(stop.get_program())
            .args(stop.get_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the cluster's reaper (sh)")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `pg_ctl -D <data> ARGS` for this cluster (run here, or by the reaper).
    fn pg_ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D").arg(self.data_dir()).args(args);
        cmd
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        self.pg_ctl_command(args)
            .output_checked("pg_ctl")
            .with_context(|| format!("pg_ctl {}; server log:\n{}", args[0], self.log()))?;
        Ok(())
    }

    /// `bin/<program>`, run as `postgres` when we are root.
    fn server_command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        }
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
    }
}

trait OutputChecked {
    fn output_checked(&mut self, what: &str) -> Result<Output>;
}

impl OutputChecked for Command {
    fn output_checked(&mut self, what: &str) -> Result<Output> {
        let out = self
            .output()
            .with_context(|| format!("running {what} (is PostgreSQL installed?)"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    cmd.output_checked("command").map(drop)
}

/// `$SFE_PG_BIN`, else `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SFE_PG_BIN") {
        return Ok(dir.into());
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    if let Some((_, bin)) = candidates.pop() {
        return Ok(bin);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output_checked("pg_config")?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if Path::new(&bin).join("initdb").exists() {
        Ok(bin)
    } else {
        bail!("no PostgreSQL server binaries found (install postgresql or set SFE_PG_BIN)")
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A free loopback port below the kernel's ephemeral range (Linux: 32768 up). A port from that
/// range can go to any outgoing connection while the server is stopped, and `restart` on the
/// same port then fails with "Address already in use" (seen in CI).
fn free_port() -> Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..200 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = 20_000 + (random % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_starts_stops_and_keeps_its_data() {
        let mut pg = TempPostgres::start().unwrap();
        pg.psql("create table t (x int); insert into t values (1), (2)")
            .unwrap();
        assert_eq!(pg.psql("select count(*) from t").unwrap(), "2");
        pg.stop().unwrap();
        assert!(
            pg.psql("select 1").is_err(),
            "a stopped server must refuse connections"
        );
        pg.restart().unwrap();
        assert_eq!(pg.psql("select sum(x) from t").unwrap(), "3");
        assert!(pg.url().ends_with(&format!(":{}/secureflow", pg.port())));
    }

    /// The reaper stops the server and removes its directory once the process it watches is
    /// gone (here a short `sleep` stands in for a test process that never dropped its cluster).
    #[test]
    fn a_cluster_does_not_outlive_its_process() {
        let pg = TempPostgres::start().unwrap();
        let mut owner = Command::new("sleep").arg("1").spawn().unwrap();
        let mut reaper = pg.spawn_reaper(owner.id()).unwrap();
        assert_eq!(
            pg.psql("select 1").unwrap(),
            "1",
            "running while its owner lives"
        );
        owner.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while pg.dir.path().exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(
            !pg.dir.path().exists(),
            "the cluster's directory is removed"
        );
        assert!(pg.psql("select 1").is_err(), "the server is stopped");
        reaper.wait().unwrap();
    }
}
