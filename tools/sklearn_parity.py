#!/usr/bin/env python3
"""Parity check: scikit-learn IsolationForest vs. ``trainer import-sklearn`` + ``trainer score``.

For each case it fits scikit-learn (a StandardScaler in front, as the legacy service did, unless
the case says otherwise) on a shared data set, exports with tools/export_sklearn.py, imports
and scores the same file with the trainer, and compares ``score_samples`` and
``decision_function`` row by row. Exits non-zero if any |difference| exceeds the tolerance.

It also scores with ``--explain`` and checks the explanations: for every row, additivity
``Σ phi_* + expected_value = mean_path_length`` within 1e-9; and for a seeded sample of rows per
case (``SHAP_ROWS``), the ``phi_*`` columns and ``expected_value`` against
``shap.TreeExplainer(forest)`` on the same (scaled) matrix the forest sees, within 1e-6. (For
bootstrap forests stock shap is not additive, so the gate uses shap with consistent covers; see
``check_shap``.)

Run by ``cargo test --release -p trainer`` (trainer/tests/sklearn_parity.rs); by hand:

    .venv/bin/python tools/sklearn_parity.py --trainer $CARGO_TARGET_DIR/release/trainer
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import joblib
    import numpy as np
    import pandas as pd
    import pyarrow  # noqa: F401  (pandas needs it for Parquet)
    import shap
    import sklearn
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
except ImportError as e:
    sys.exit(
        f"sklearn parity: {e.name} is not installed for {sys.executable}; "
        "run scripts/setup.sh (it creates .venv with pinned scikit-learn, numpy, pandas, pyarrow, shap)"
    )

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_sklearn import export  # noqa: E402

TOLERANCE = 1e-12
MIN_ROWS = 10_000
# Explanations: |Δφ| and |Δexpected_value| against shap, and |Σφ + expected_value - E[h]|.
SHAP_TOLERANCE = 1e-6
ADDITIVITY_TOLERANCE = 1e-9
# Rows per case compared with shap (a seeded sample; shap is the slow part), and the minimum
# over all cases.
SHAP_ROWS = 1_000
MIN_SHAP_ROWS = 5_000

ADBENCH = "data/adbench/{}.parquet"
LEGACY = "reference/legacy_sample_transactions.csv"

# (name, data file under shared/, IsolationForest params, StandardScaler in front, output ext)
CASES = [
    ("shuttle/legacy-params", ADBENCH.format("shuttle"),
     dict(n_estimators=100, max_samples="auto", contamination=0.1, random_state=42), True, "parquet"),
    ("shuttle/max_features=0.5,bootstrap,max_samples=0.05,no-scaler", ADBENCH.format("shuttle"),
     dict(n_estimators=100, max_samples=0.05, max_features=0.5, bootstrap=True,
          contamination="auto", random_state=1), False, "csv"),
    ("mammography/max_features=0.5,max_samples=512", ADBENCH.format("mammography"),
     dict(n_estimators=100, max_samples=512, max_features=0.5, contamination=0.1,
          random_state=2), True, "parquet"),
    ("mammography/bootstrap,auto", ADBENCH.format("mammography"),
     dict(n_estimators=50, bootstrap=True, contamination="auto", random_state=3), True, "csv"),
    ("cardio/max_features=0.5,bootstrap,max_samples=0.8", ADBENCH.format("cardio"),
     dict(n_estimators=200, max_samples=0.8, max_features=0.5, bootstrap=True,
          contamination=0.1, random_state=4), True, "parquet"),
    ("cardio/max_features=3,no-scaler", ADBENCH.format("cardio"),
     dict(n_estimators=100, max_features=3, contamination="auto", random_state=5), False, "csv"),
    # Exported through the CLI from a joblib-dumped Pipeline, like an operator would.
    ("legacy/legacy-params,cli", LEGACY,
     dict(n_estimators=100, max_samples="auto", contamination=0.1, random_state=42), True, "csv"),
    ("legacy/max_features=0.5,bootstrap,max_samples=300", LEGACY,
     dict(n_estimators=100, max_samples=300, max_features=0.5, bootstrap=True,
          contamination="auto", random_state=6), True, "parquet"),
]


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    # Parse numbers with Python's float(), which is correctly rounded, so the CSV check does not
    # depend on pandas' float parser (not round-trip exact in every version).
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.DataFrame({
        c: raw[c].map({"true": True, "false": False}) if set(raw[c]) <= {"true", "false"}
        else raw[c].map(float)
        for c in raw.columns
    })


def run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}{out.stdout}")


def check_case(name, rel, params, scaled, ext, trainer, shared, work):
    data_path = shared / rel
    df = read(data_path)
    features = [c for c in df.columns if c != "label"]
    X = df[features].to_numpy(dtype=np.float64)

    scaler = StandardScaler().fit(X) if scaled else None
    Xs = scaler.transform(X) if scaled else X
    forest = IsolationForest(**params).fit(Xs)
    expected_ss = forest.score_samples(Xs)
    expected_dec = forest.decision_function(Xs)
    expected_anomaly = forest.predict(Xs) == -1

    slug = name.replace("/", "_").replace(",", "_").replace("=", "")
    json_path, model_path = work / f"{slug}.json", work / f"{slug}.sfm"
    scores_path = work / f"{slug}.scores.{ext}"
    if name.endswith(",cli"):
        pickled = work / f"{slug}.joblib"
        joblib.dump(make_pipeline(scaler, forest) if scaled else forest, pickled)
        run([sys.executable, str(Path(__file__).with_name("export_sklearn.py")), str(pickled),
             str(json_path), "--feature-names", ",".join(features)])
    else:
        export(forest, json_path, scaler=scaler, feature_names=features)
    run([trainer, "import-sklearn", "--input", str(json_path), "--output", str(model_path)])
    # The shared file is scored in place: the trainer reads the columns by the model's names.
    run([trainer, "score", "--model", str(model_path), "--input", str(data_path),
         "--output", str(scores_path), "--explain"])

    got = read(scores_path)
    problems = []
    if len(got) != len(df):
        raise AssertionError(f"{name}: {len(got)} scores for {len(df)} rows")
    ss = got["score_samples"].to_numpy(np.float64)
    dec = got["anomaly_score"].to_numpy(np.float64)
    d_ss = float(np.max(np.abs(ss - expected_ss)))
    d_dec = float(np.max(np.abs(dec - expected_dec)))
    identical = int(np.sum((ss == expected_ss) & (dec == expected_dec)))
    if not np.array_equal(got["risk_score"].to_numpy(np.float64), -ss):
        problems.append("risk_score != -score_samples")
    if not np.array_equal(got["is_anomaly"].to_numpy(bool), dec < 0):
        problems.append("is_anomaly != (anomaly_score < 0)")
    # predict may differ only where the decision is within rounding of 0.
    flips = (got["is_anomaly"].to_numpy(bool) != expected_anomaly) & (np.abs(expected_dec) > TOLERANCE)
    if flips.any():
        problems.append(f"is_anomaly differs from sklearn predict on {int(flips.sum())} rows")
    if d_ss > TOLERANCE or d_dec > TOLERANCE:
        problems.append(f"difference above {TOLERANCE:g}")
    shap_result = check_shap(name, forest, Xs, features, got, problems)
    print(
        f"{name}: {len(df)} rows, {len(features)} features, {len(forest.estimators_)} trees, "
        f"max_samples_ {forest.max_samples_}, offset {forest.offset_:.6f}, via {ext}: "
        f"max |Δscore_samples| = {d_ss:.3e}, max |Δdecision| = {d_dec:.3e}, "
        f"bit-identical {identical}/{len(df)}"
        + ("" if not problems else "  FAIL: " + "; ".join(problems)),
        flush=True,
    )
    return len(df), d_ss, d_dec, shap_result, not problems


def check_shap(name, forest, Xs, features, got, problems):
    """Compares the ``phi_*``/``expected_value`` columns with shap on a seeded row sample and
    checks additivity on every row. Returns (rows vs shap, max |Δφ|, max |Δexpected|,
    max additivity error)."""
    phi_cols = [f"phi_{f}" for f in features]
    missing = [c for c in phi_cols + ["expected_value"] if c not in got.columns]
    if missing:
        problems.append(f"missing explanation columns {missing}")
        return 0, float("inf"), float("inf"), float("inf")
    phi = got[phi_cols].to_numpy(np.float64)
    ev = got["expected_value"].to_numpy(np.float64)
    mpl = got["mean_path_length"].to_numpy(np.float64)
    d_add = float(np.max(np.abs(phi.sum(axis=1) + ev - mpl)))

    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(Xs), size=min(SHAP_ROWS, len(Xs)), replace=False))
    # The matrix the forest was fitted on and scored (after the scaler, float64); shap casts it
    # to float32 itself, as scikit-learn does.
    explainer = shap.TreeExplainer(forest)
    want = np.asarray(explainer.shap_values(Xs[idx], check_additivity=False), dtype=np.float64)
    want_ev = float(np.asarray(explainer.expected_value, dtype=np.float64).reshape(-1)[0])
    d_ev = float(np.max(np.abs(ev - want_ev)))
    note = ""
    # With bootstrap=True, scikit-learn fits each tree with sample weights (draw counts), so a
    # node's weighted_n_node_samples (shap's path-dependent cover) differs from n_node_samples
    # (what the leaf values, shap's expected_value, and our covers use). Stock shap is then not
    # additive (Σφ + expected_value ≠ E[h(x)]), and its φ cannot be matched. For those forests
    # the gate uses shap with its covers set to n_node_samples, the consistent game; the stock
    # figure is still printed.
    weighted = any(not np.array_equal(e.tree_.weighted_n_node_samples, e.tree_.n_node_samples)
                   for e in forest.estimators_)
    if weighted:
        d_stock = float(np.max(np.abs(phi[idx] - want)))
        stock_add = float(np.max(np.abs(want.sum(axis=1) + want_ev - mpl[idx])))
        covers = explainer.model.node_sample_weight
        for i, e in enumerate(forest.estimators_):
            n = e.tree_.node_count
            assert np.array_equal(covers[i, :n], e.tree_.weighted_n_node_samples)
            covers[i, :n] = e.tree_.n_node_samples
        want = np.asarray(explainer.shap_values(Xs[idx], check_additivity=False), dtype=np.float64)
        note = (f" [bootstrap: shap covers set to n_node_samples; stock shap: max |Δφ| = "
                f"{d_stock:.3e}, its own additivity error {stock_add:.3e}]")
    # shap 0.51 compares the float64 input with the thresholds as is, while scikit-learn (and
    # we) cast the input to float32 first. On rows where that changes a split's outcome, shap
    # explains a path the forest does not take; those rows are compared with shap on the
    # float32-cast row instead (the exact input the trees see), and stock shap's difference
    # there is printed.
    tie = threshold_ties(forest, Xs[idx])
    if tie.any():
        stock_tie = float(np.max(np.abs(phi[idx][tie] - want[tie])))
        want[tie] = np.asarray(explainer.shap_values(Xs[idx][tie].astype(np.float32),
                                                     check_additivity=False), dtype=np.float64)
        note += (f" [{int(tie.sum())} float32/float64 threshold-tie rows compared on the "
                 f"float32-cast row; stock shap there: max |Δφ| = {stock_tie:.3e}]")
    d_phi = float(np.max(np.abs(phi[idx] - want)))
    bad = []
    if want.shape != (len(idx), len(features)):
        bad.append(f"shap returned shape {want.shape}")
    if d_phi > SHAP_TOLERANCE or d_ev > SHAP_TOLERANCE:
        bad.append(f"shap difference above {SHAP_TOLERANCE:g}")
    if d_add > ADDITIVITY_TOLERANCE:
        bad.append(f"additivity error above {ADDITIVITY_TOLERANCE:g}")
    problems.extend(bad)
    print(
        f"{name}: shap on {len(idx)} rows: max |Δφ| = {d_phi:.3e}, "
        f"|Δexpected| = {d_ev:.3e} (expected_value {want_ev:.6f}), "
        f"max additivity error = {d_add:.3e} over {len(got)} rows" + note
        + ("" if not bad else "  FAIL: " + "; ".join(bad)),
        flush=True,
    )
    return len(idx), d_phi, d_ev, d_add


def threshold_ties(forest, Xs):
    """Rows of Xs (float64) with a split where ``x <= threshold`` and ``float32(x) <= threshold``
    disagree."""
    x32 = Xs.astype(np.float32)
    tie = np.zeros(len(Xs), dtype=bool)
    for est, feats in zip(forest.estimators_, forest.estimators_features_):
        tree = est.tree_
        split = tree.feature >= 0
        thr = tree.threshold[split]
        cols = np.asarray(feats)[tree.feature[split]]
        tie |= ((Xs[:, cols] <= thr) != (x32[:, cols] <= thr)).any(axis=1)
    return tie


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainer", required=True, help="path of the trainer binary")
    root = Path(__file__).resolve().parent.parent
    p.add_argument("--shared", default=str(root.parent / "shared"), help="the shared/ directory")
    args = p.parse_args()
    shared = Path(args.shared)

    print(f"sklearn parity: scikit-learn {sklearn.__version__}, numpy {np.__version__}, "
          f"python {sys.version.split()[0]}", flush=True)
    rows, max_ss, max_dec, ok = 0, 0.0, 0.0, True
    shap_rows, max_phi, max_ev, max_add = 0, 0.0, 0.0, 0.0
    with tempfile.TemporaryDirectory(prefix="sfe-parity-") as tmp:
        for case in CASES:
            n, d_ss, d_dec, (n_shap, d_phi, d_ev, d_add), case_ok = check_case(
                *case, args.trainer, shared, Path(tmp))
            rows += n
            max_ss, max_dec = max(max_ss, d_ss), max(max_dec, d_dec)
            shap_rows += n_shap
            max_phi, max_ev, max_add = max(max_phi, d_phi), max(max_ev, d_ev), max(max_add, d_add)
            ok &= case_ok
    print(f"sklearn parity: {rows} rows, max |Δscore_samples| = {max_ss:.3e}, "
          f"max |Δdecision| = {max_dec:.3e} (tolerance {TOLERANCE:g})", flush=True)
    print(f"shap parity: {shap_rows} rows, max |Δφ| = {max_phi:.3e}, "
          f"max |Δexpected| = {max_ev:.3e}, max additivity error = {max_add:.3e} over {rows} rows "
          f"(shap {shap.__version__}; tolerances {SHAP_TOLERANCE:g}, {ADDITIVITY_TOLERANCE:g})",
          flush=True)
    if shap_rows < MIN_SHAP_ROWS:
        print(f"shap parity: FAIL: only {shap_rows} rows compared with shap, need {MIN_SHAP_ROWS}",
              flush=True)
        ok = False
    if rows < MIN_ROWS:
        print(f"sklearn parity: FAIL: only {rows} rows compared, need {MIN_ROWS}", flush=True)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
