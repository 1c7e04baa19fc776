#!/usr/bin/env python3
"""scikit-learn side of scripts/bench-trainer.sh: the legacy pipeline's fit and batch scoring.

fit:   pandas.read_parquet + StandardScaler + IsolationForest(contamination=...).fit, which is
       what `trainer fit` does end to end (read -> scale -> forest -> threshold). The forest is
       pickled so the `score` step scores with the same model.
score: pandas.read_parquet + scaler.transform + IsolationForest.score_samples + decision_function
       on every row, written to Parquet like `trainer score`.

Prints one line per phase, `phase seconds`, and the in-process total; the caller times the
whole process (interpreter start and imports included) itself.
"""

import argparse
import pickle
import sys
import time

FEATURES = ["amount", "hour", "day_of_week", "merchant_category", "transaction_type"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    fit = sub.add_parser("fit")
    fit.add_argument("--input", required=True)
    fit.add_argument("--model", required=True, help="where to pickle scaler + forest")
    fit.add_argument("--n-estimators", type=int, default=100)
    fit.add_argument("--contamination", type=float, default=0.1)
    fit.add_argument("--seed", type=int, default=42)
    fit.add_argument("--n-jobs", type=int, default=None, help="IsolationForest n_jobs")
    score = sub.add_parser("score")
    score.add_argument("--input", required=True)
    score.add_argument("--model", required=True)
    score.add_argument("--output", required=True)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import StandardScaler

    t_import = time.perf_counter()
    print(f"import {t_import - t0:.3f}")
    start = time.perf_counter()
    df = pd.read_parquet(args.input, columns=FEATURES)
    x = df[FEATURES].to_numpy(dtype=np.float64)
    lap = time.perf_counter()
    print(f"read {lap - start:.3f}")

    if args.cmd == "fit":
        scaler = StandardScaler().fit(x)
        xs = scaler.transform(x)
        t = time.perf_counter()
        print(f"scale {t - lap:.3f}")
        forest = IsolationForest(
            n_estimators=args.n_estimators,
            contamination=args.contamination,
            random_state=args.seed,
            n_jobs=args.n_jobs,
        ).fit(xs)
        t2 = time.perf_counter()
        print(f"forest+threshold {t2 - t:.3f}")
        with open(args.model, "wb") as f:
            pickle.dump((scaler, forest), f)
        print(f"write {time.perf_counter() - t2:.3f}")
    else:
        with open(args.model, "rb") as f:
            scaler, forest = pickle.load(f)
        xs = scaler.transform(x)
        t = time.perf_counter()
        s = forest.score_samples(xs)
        d = s - forest.offset_
        t2 = time.perf_counter()
        print(f"score {t2 - t:.3f}")
        pd.DataFrame(
            {"score_samples": s, "anomaly_score": d, "is_anomaly": d < 0}
        ).to_parquet(args.output)
        print(f"write {time.perf_counter() - t2:.3f}")
    print(f"in-process {time.perf_counter() - start:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
