#!/usr/bin/env python3
"""Batch explanations side by side: ``trainer score --explain`` against shap's TreeExplainer on
the same scikit-learn IsolationForest (exported with export_sklearn.py, imported with
``trainer import-sklearn``, so both explain the very same trees).

For each case: the trainer explains every row of the file (wall time of the whole command:
reading, scoring, the exact TreeSHAP of every row over all cores, writing Parquet); shap
explains a seeded sample of the same rows (it is far slower; its rate does not depend on the
sample size). Printed: rows/s of both, their ratio, and the largest |Δφ| and |Δ expected value|
between the two on the sample, with the machine's load.

Run by scripts/bench-explain-batch.sh; by hand:

    .venv/bin/python tools/bench_explain_batch.py --trainer $CARGO_TARGET_DIR/release/trainer \\
        --rows 1000000 --adbench ../shared/data/adbench/cardio.parquet
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import shap
from sklearn.ensemble import IsolationForest

sys.path.insert(0, str(Path(__file__).parent))
from export_sklearn import export  # noqa: E402


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}{out.stdout}")
    return time.perf_counter() - start


def case(name: str, df: pd.DataFrame, rows: int, sample: int, trainer: str, work: Path) -> bool:
    features = [c for c in df.columns if c != "label"]
    # Repeated to `rows` rows (the ADBench sets are small); the forest is fitted on the original.
    fit_x = df[features].to_numpy(np.float64)
    reps = -(-rows // len(df))
    data = pd.concat([df[features]] * reps, ignore_index=True).iloc[:rows]
    x = data.to_numpy(np.float64)
    forest = IsolationForest(n_estimators=100, max_samples=256, random_state=0).fit(fit_x)
    slug = name.replace(" ", "_")
    data_path, json_path = work / f"{slug}.parquet", work / f"{slug}.json"
    model_path, out_path = work / f"{slug}.sfm", work / f"{slug}.scores.parquet"
    data.to_parquet(data_path, index=False)
    export(forest, json_path, feature_names=features)
    run([trainer, "import-sklearn", "--input", str(json_path), "--output", str(model_path)])
    secs = run([trainer, "score", "--model", str(model_path), "--input", str(data_path),
                "--output", str(out_path), "--explain"])
    got = pd.read_parquet(out_path)
    ours = rows / secs

    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(rows, size=min(sample, rows), replace=False))
    explainer = shap.TreeExplainer(forest)
    start = time.perf_counter()
    want = np.asarray(explainer.shap_values(x[idx], check_additivity=False), dtype=np.float64)
    shap_secs = time.perf_counter() - start
    theirs = len(idx) / shap_secs
    want_ev = float(np.asarray(explainer.expected_value, dtype=np.float64).reshape(-1)[0])
    phi = got[[f"phi_{f}" for f in features]].to_numpy(np.float64)[idx]
    d_phi = float(np.max(np.abs(phi - want)))
    d_ev = float(np.max(np.abs(got["expected_value"].to_numpy(np.float64)[idx] - want_ev)))
    print(
        f"{name}: {rows:,} rows x {len(features)} features, 100 trees, psi 256 | "
        f"trainer score --explain {secs:.1f} s = {ours:,.0f} rows/s (whole command) | "
        f"shap TreeExplainer {len(idx):,} rows in {shap_secs:.1f} s = {theirs:,.0f} rows/s | "
        f"ratio {ours / theirs:.0f}x | max |dphi| {d_phi:.1e}, |d expected| {d_ev:.1e} "
        f"[load {load()}]",
        flush=True,
    )
    return d_phi <= 1e-6 and d_ev <= 1e-6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainer", required=True, help="path of the trainer binary")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the legacy-five case")
    p.add_argument("--adbench", type=Path, help="an ADBench Parquet file (widest: cardio)")
    p.add_argument("--adbench-rows", type=int, default=200_000, help="its rows, repeated")
    p.add_argument("--shap-rows", type=int, default=5_000, help="rows shap explains")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synth = work / "synth.csv"
        run([args.trainer, "synth", "--output", str(synth), "--rows", str(args.rows),
             "--seed", "1"])
        ok = case("legacy five (trainer synth)", pd.read_csv(synth), args.rows, args.shap_rows,
                  args.trainer, work)
        if args.adbench:
            df = pd.read_parquet(args.adbench)
            ok &= case(f"ADBench {args.adbench.stem}", df, args.adbench_rows, args.shap_rows,
                       args.trainer, work)
    if not ok:
        print("explanations differ from shap by more than 1e-6", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
