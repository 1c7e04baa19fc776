//! Running the `trainer` binary from the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `trainer args...` and returns whatever happened.
pub fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("running trainer")
}

/// Runs `trainer args...`, requires success, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = trainer(args);
    assert!(
        out.status.success(),
        "trainer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    harness::repo_root()
}

/// Python for the tools: `SFE_PYTHON`, else `.venv/bin/python` at the repo root (made by
/// scripts/setup.sh), else `python3`.
pub fn python(root: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("SFE_PYTHON") {
        return p.into();
    }
    let venv = root.join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}
