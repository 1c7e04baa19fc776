//! scikit-learn parity: fits IsolationForest (+ StandardScaler) with scikit-learn on the shared
//! data sets, imports the export with `trainer import-sklearn`, scores with `trainer score`, and
//! requires the same `score_samples` and `decision_function` within 1e-12; and scores with
//! `--explain` and requires the `phi_*`/`expected_value` columns to match
//! `shap.TreeExplainer` within 1e-6 and to add up to `mean_path_length` within 1e-9
//! (tools/sklearn_parity.py does the work).
//!
//! Python comes from `SFE_PYTHON`, else `.venv/bin/python` at the repo root (made by
//! scripts/setup.sh), else `python3`. A missing interpreter or scikit-learn fails the test:
//! skipping would let parity regressions through unnoticed.

mod common;

use common::{python, repo_root};
use std::io::Write;
use std::process::Command;

#[test]
fn scores_match_scikit_learn() {
    let root = repo_root();
    let python = python(&root);
    let probe = Command::new(&python)
        .args(["-c", "import sklearn, numpy, pandas, pyarrow, joblib, shap"])
        .output();
    match probe {
        Err(e) => panic!(
            "cannot run {} ({e}): run scripts/setup.sh to create .venv with scikit-learn \
             (or set SFE_PYTHON)",
            python.display()
        ),
        Ok(out) if !out.status.success() => panic!(
            "{} lacks scikit-learn/numpy/pandas/pyarrow: run scripts/setup.sh \
             (or set SFE_PYTHON)\n{}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }

    let out = Command::new(&python)
        .arg(root.join("tools/sklearn_parity.py"))
        .args(["--trainer", env!("CARGO_BIN_EXE_trainer")])
        .arg("--shared")
        .arg(root.join("../shared"))
        .output()
        .expect("running tools/sklearn_parity.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Written to the real stderr (not eprintln!, which the test harness captures) so the
    // figures show in every `cargo test` run.
    let _ = writeln!(std::io::stderr(), "{stdout}");
    assert!(
        out.status.success(),
        "sklearn parity failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Re-check the summary line here too, so a script that exits 0 by mistake cannot pass.
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("sklearn parity: ") && l.contains(" rows, max "))
        .expect("summary line");
    let rows: usize = summary["sklearn parity: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("row count in summary");
    assert!(rows >= 10_000, "only {rows} rows compared: {summary}");
    for key in ["max |Δscore_samples| = ", "max |Δdecision| = "] {
        let at = summary.find(key).expect(key) + key.len();
        let value: f64 = summary[at..]
            .split([',', ' '])
            .next()
            .and_then(|v| v.parse().ok())
            .expect("difference in summary");
        assert!(value <= 1e-12, "{key}{value} > 1e-12: {summary}");
    }

    let shap = stdout
        .lines()
        .find(|l| l.starts_with("shap parity: ") && l.contains(" rows, max "))
        .expect("shap summary line");
    let rows: usize = shap["shap parity: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("row count in shap summary");
    assert!(rows >= 5_000, "only {rows} rows compared with shap: {shap}");
    for (key, tolerance) in [
        ("max |Δφ| = ", 1e-6),
        ("max |Δexpected| = ", 1e-6),
        ("max additivity error = ", 1e-9),
    ] {
        let at = shap.find(key).expect(key) + key.len();
        let value: f64 = shap[at..]
            .split([',', ' '])
            .next()
            .and_then(|v| v.parse().ok())
            .expect("figure in shap summary");
        assert!(value <= tolerance, "{key}{value} > {tolerance}: {shap}");
    }
}
