//! The real Spin CLI (`spin up`) serving the component, for the tests and benchmarks that must
//! see what users see rather than what [`crate::Harness`] reproduces.
//!
//! [`SpinUp::start`] writes a manifest next to a state directory: the repository's `spin.toml`
//! unchanged except for the component's `source` (the `.wasm` under test) and its
//! `key_value_stores` (from [`HarnessConfig::key_value_stores`]). It then runs
//! `spin up --from <manifest> --listen <addr> --state-dir <dir>` with one `--variable` per
//! [`HarnessConfig::variables`] entry and the instance-reuse flags of [`HarnessConfig`], and
//! returns once Spin prints the address it serves. Spin keeps the `default` key-value store in
//! `<state dir>/sqlite_key_value.db` and the component's stdout/stderr in `<state dir>/logs/`.
//!
//! Which Spin: `$SFE_SPIN`, else `~/.cache/secureflow-edge/bin/spin` (where
//! `scripts/setup.sh --tests` installs the CLI from `../shared/tools/`), else `spin` on `PATH`.
//!
//! Options that `spin up` does not have are not applied: [`HarnessConfig::header_read_timeout`]
//! (Spin sets none), [`HarnessConfig::tcp_nodelay`] (Spin never sets it),
//! [`HarnessConfig::pool_instances`] (Spin's pool has 1,000 slots).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::HarnessConfig;

/// How long `spin up` may take to print its address (it compiles the component on a cold cache).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A running `spin up` (its own process group); stopped on drop.
pub struct SpinUp {
    /// The address Spin serves.
    pub addr: SocketAddr,
    child: Child,
    /// Held open for as long as this process lives (see `start`).
    _lifeline: std::process::ChildStdin,
    state_dir: PathBuf,
    /// Holds the manifest and, when the config named no key-value directory, the state.
    _dir: tempfile::TempDir,
}

/// The Spin CLI these tests run (see the module docs).
pub fn spin_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SFE_SPIN") {
        return PathBuf::from(path);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = Path::new(&home).join(".cache/secureflow-edge/bin/spin");
        if cached.exists() {
            return cached;
        }
    }
    PathBuf::from("spin")
}

/// The repository's `spin.toml`.
pub fn repo_manifest() -> PathBuf {
    crate::repo_root().join("spin.toml")
}

/// The repository's manifest, pointed at `component` and granted `key_value_stores`.
fn manifest_for(component: &Path, key_value_stores: &[String]) -> anyhow::Result<String> {
    let path = repo_manifest();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let worker = doc
        .get_mut("component")
        .and_then(|c| c.get_mut("worker"))
        .and_then(toml::Value::as_table_mut)
        .context("spin.toml has no [component.worker]")?;
    let component = component
        .canonicalize()
        .with_context(|| format!("component {}", component.display()))?;
    worker.insert(
        "source".into(),
        toml::Value::String(component.display().to_string()),
    );
    worker.insert(
        "key_value_stores".into(),
        toml::Value::Array(
            key_value_stores
                .iter()
                .map(|l| toml::Value::String(l.clone()))
                .collect(),
        ),
    );
    // `spin up` does not build; the build section would only point at the repository.
    worker.remove("build");
    Ok(toml::to_string(&doc)?)
}

impl SpinUp {
    /// Starts `spin up` with `config` (see the module docs for what maps to what).
    pub fn start(config: &HarnessConfig) -> anyhow::Result<Self> {
        Self::start_with_runtime_config(config, None)
    }

    /// [`SpinUp::start`] with `spin up --runtime-config-file` (e.g. a Redis key-value store for
    /// `default`: `[key_value_store.default] type = "redis" url = "redis://…"`). The harness
    /// has no equivalent: it keeps every store on local disk.
    pub fn start_with_runtime_config(
        config: &HarnessConfig,
        runtime_config: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // In-memory stores (the harness's `memory_key_value_stores`) are Spin's `type = "spin"`
        // without a path: a runtime config of our own when the caller gave none.
        let generated;
        let runtime_config = match runtime_config {
            Some(file) => Some(file),
            None if config.memory_key_value_stores.is_empty() => None,
            None => {
                let mut text = String::new();
                for label in &config.memory_key_value_stores {
                    text += &format!("[key_value_store.{label}]\ntype = \"spin\"\n");
                }
                generated = dir.path().join("runtime-config.toml");
                std::fs::write(&generated, text)?;
                Some(generated.as_path())
            }
        };
        if let (None, Some(label)) = (
            runtime_config,
            config.key_value_stores.iter().find(|l| *l != "default"),
        ) {
            bail!(
                "spin up provides only the `default` key-value store without a runtime config, not {label:?}"
            );
        }
        let manifest = dir.path().join("spin.toml");
        std::fs::write(
            &manifest,
            manifest_for(&config.component, &config.key_value_stores)?,
        )?;
        let state_dir = match &config.key_value_dir {
            Some(d) => d.clone(),
            None => dir.path().join("state"),
        };
        std::fs::create_dir_all(&state_dir)?;

        let spin = spin_binary();
        let mut cmd = tied_to_this_process(&spin);
        cmd.arg("up")
            .arg("--from")
            .arg(&manifest)
            .arg("--listen")
            .arg(config.listen.to_string())
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--max-instance-reuse-count")
            .arg(config.max_reuse.to_string())
            .arg("--max-instance-concurrent-reuse-count")
            .arg(config.max_concurrent_reuse.to_string())
            .arg("--idle-instance-timeout")
            .arg(format!("{}ms", config.idle_instance_timeout.as_millis()));
        if let Some(file) = runtime_config {
            cmd.arg("--runtime-config-file").arg(file);
        }
        for (name, value) in &config.variables {
            cmd.arg("--variable").arg(format!("{name}={value}"));
        }
        for (key, value) in &config.env {
            cmd.arg("--env").arg(format!("{key}={value}"));
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "running {} (install it with scripts/setup.sh --tests, or set SFE_SPIN)",
                spin.display()
            )
        })?;

        // Spin announces `Serving http://ADDR` on stdout; everything it prints goes on to our
        // stderr so a failing test shows it.
        let (tx, rx) = mpsc::channel();
        let lifeline = child.stdin.take().context("spin stdin")?;
        let stdout = child.stdout.take().context("spin stdout")?;
        let stderr = child.stderr.take().context("spin stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.trim().strip_prefix("Serving http://") {
                    let _ = tx.send(url.trim_end_matches('/').to_owned());
                }
                eprintln!("spin: {line}");
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("spin: {line}");
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => break addr,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = child.try_wait()? {
                        bail!("spin up exited with {status} before serving (its output is above)");
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = stop_group(&mut child);
                    bail!("spin up did not report an address within {START_TIMEOUT:?}");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait()?;
                    bail!(
                        "spin up closed its output ({status}) before serving (its output is above)"
                    );
                }
            }
        };
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("spin up printed an address that is not one: {addr:?}"))?;
        Ok(Self {
            addr,
            child,
            _lifeline: lifeline,
            state_dir,
            _dir: dir,
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Keys of the `default` key-value store that start with `prefix` (Spin's SQLite file, read
    /// with Python's sqlite3 while Spin runs; SQLite's locking makes that safe).
    pub fn stored_keys(&self, prefix: &str) -> anyhow::Result<usize> {
        let db = self.state_dir.join("sqlite_key_value.db");
        if !db.exists() {
            return Ok(0);
        }
        let out = Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True, timeout=10)\n\
                 print(c.execute(\"select count(*) from spin_key_value where store = 'default' and substr(key, 1, length(?)) = ?\", (sys.argv[2], sys.argv[2])).fetchone()[0])",
            )
            .arg(&db)
            .arg(prefix)
            .output()
            .context("running python3 to read Spin's key-value database")?;
        if !out.status.success() {
            bail!(
                "reading {}: {}",
                db.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }

    /// The `default` store's value for `key` in Spin's SQLite file (None when absent).
    pub fn read_key(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let out = self.sqlite(
            "r = c.execute(\"select hex(value) from spin_key_value where store = 'default' and key = ?\", (sys.argv[2],)).fetchone()\n\
             print('' if r is None else 'v' + r[0])",
            key,
            "",
        )?;
        let out = out.trim();
        match out.strip_prefix('v') {
            None => Ok(None),
            Some(h) => Ok(Some(hex::decode(h)?)),
        }
    }

    /// Sets `key` in the `default` store straight in Spin's SQLite file (as a corrupting disk
    /// or operator would).
    pub fn write_key(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.sqlite(
            "c.execute(\"insert into spin_key_value (store, key, value) values ('default', ?, ?) \
             on conflict (store, key) do update set value = excluded.value\", (sys.argv[2], bytes.fromhex(sys.stdin.read())))\n\
             c.commit()",
            key,
            &hex::encode(value),
        )
        .map(|_| ())
    }

    /// Runs `script` on Spin's database: `sys.argv[2]` is `key`, stdin is `value` (values can
    /// exceed the kernel's limit on one argument).
    fn sqlite(&self, script: &str, key: &str, value: &str) -> anyhow::Result<String> {
        use std::io::Write as _;
        let db = self.state_dir.join("sqlite_key_value.db");
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=10)\n{script}"
            ))
            .arg(&db)
            .arg(key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running python3 on Spin's key-value database")?;
        child
            .stdin
            .take()
            .context("python3's stdin")?
            .write_all(value.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("{}: {}", db.display(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops Spin (SIGTERM to its group, SIGKILL after 10 s).
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        stop_group(&mut self.child)
    }

    /// Stops Spin as `signal` comes in practice: `KILL` to its whole process group (a crash,
    /// the OOM killer, a container runtime: `spin up` and the `spin trigger http` process it
    /// runs die together), `INT` to the group (Ctrl-C in a terminal), `TERM` to `spin up`
    /// alone (an orchestrator, which signals the container's first process). Then waits until
    /// `spin up` exited; SIGKILL to its group after 15 s.
    pub fn stop_with(mut self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let target = if signal == "TERM" {
            pid
        } else {
            format!("-{pid}")
        };
        Command::new("kill")
            .args([&format!("-{signal}"), "--", &target])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                // Nothing of it may serve on: whatever is left of the group goes too.
                let group = format!("-{}", self.child.id());
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_group(&mut self.child)
    }
}

/// `program` run through `sh` in a process group of its own (so stopping the group also stops
/// what it forks), with a watcher that stops the group when our end of its stdin closes, i.e.
/// when this process exits: test fixtures live in statics, which are never dropped. Keep the
/// child's stdin open for as long as the program should run.
pub(crate) fn tied_to_this_process(program: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        // (An asynchronous list's stdin is /dev/null in sh, hence the copy on fd 3.)
        .arg(r#"exec 3<&0; (cat <&3 >/dev/null; kill -TERM 0) & exec "$0" "$@" </dev/null 3<&-"#)
        .arg(program)
        .process_group(0)
        .stdin(Stdio::piped());
    cmd
}

pub(crate) fn stop_group(child: &mut Child) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    child.wait()?;
    Ok(())
}

impl Drop for SpinUp {
    fn drop(&mut self) {
        if let Err(e) = stop_group(&mut self.child) {
            eprintln!("spin: stopping it failed: {e:#}");
        }
    }
}
