#!/usr/bin/env python3
"""Detection quality of the trainer's isolation forest vs scikit-learn's, on labelled data sets.

For each data set (Parquet with feature columns f0..fN and a 0/1 `label`, 1 = anomaly) and each
seed, scikit-learn's IsolationForest(n_estimators, max_samples) is fitted on all rows and scores
all rows; the trainer's scores for the same seed are read from
`<scores-dir>/<data set>-seed<seed>.parquet` (`trainer score` output, written by
scripts/quality-adbench.sh). Both are ranked by -score_samples (higher = more anomalous) with
the same scikit-learn metrics, and a table of ROC-AUC and average precision, mean ± sd over the
seeds, is printed. Figures only: nothing is asserted.
"""

import argparse
import pathlib
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("datasets", nargs="+", type=pathlib.Path, help="Parquet files")
    ap.add_argument("--scores-dir", type=pathlib.Path, required=True)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--n-estimators", type=int, default=100)
    ap.add_argument("--max-samples", type=int, default=256)
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import sklearn
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import average_precision_score, roc_auc_score

    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"{len(seeds)} seeds, {args.n_estimators} trees, max_samples={args.max_samples}, "
        f"fit and score on all rows; scikit-learn {sklearn.__version__}"
    )
    head = f"{'data set':<12} {'rows':>6} {'dims':>4} {'anom%':>6}  {'metric':<7} {'trainer':>15} {'scikit-learn':>15} {'diff':>8}"
    print(head)
    print("-" * len(head))
    for path in args.datasets:
        df = pd.read_parquet(path)
        features = [c for c in df.columns if c != "label"]
        x = df[features].to_numpy(dtype=np.float64)
        y = df["label"].to_numpy()
        name = path.stem
        ours = {"ROC-AUC": [], "AP": []}
        theirs = {"ROC-AUC": [], "AP": []}
        for seed in seeds:
            scores = pd.read_parquet(args.scores_dir / f"{name}-seed{seed}.parquet")
            if len(scores) != len(y):
                raise SystemExit(f"{name} seed {seed}: {len(scores)} scores for {len(y)} rows")
            mine = -scores["score_samples"].to_numpy()
            forest = IsolationForest(
                n_estimators=args.n_estimators,
                max_samples=min(args.max_samples, len(y)),
                random_state=seed,
            ).fit(x)
            ref = -forest.score_samples(x)
            for got, into in ((mine, ours), (ref, theirs)):
                into["ROC-AUC"].append(roc_auc_score(y, got))
                into["AP"].append(average_precision_score(y, got))
        for metric in ("ROC-AUC", "AP"):
            a, b = np.array(ours[metric]), np.array(theirs[metric])
            print(
                f"{name:<12} {len(y):>6} {len(features):>4} {100 * y.mean():>6.2f}  {metric:<7} "
                f"{a.mean():.4f}±{a.std(ddof=1):.4f} {b.mean():.4f}±{b.std(ddof=1):.4f} "
                f"{a.mean() - b.mean():>+8.4f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
