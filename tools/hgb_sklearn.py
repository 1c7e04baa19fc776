#!/usr/bin/env python3
"""A supervised reference point: scikit-learn's HistGradientBoostingClassifier on feature files.

The trainer's isolation forest is unsupervised; this shows how far a standard supervised
learner gets on the same features (e.g. per-transaction + velocity features computed over
tools/fraud_streams.py or `trainer synth --patterns` traffic), so a detection figure can be
read against what labels would buy. It is a yardstick, not part of the product.

Each CSV holds numeric feature columns plus the label (and optionally a pattern column, never a
feature), rows in time order. The model is HistGradientBoostingClassifier(loss="log_loss",
learning_rate=0.1, max_leaf_nodes=31) fitted on the FIRST 80% of the training rows (file
order) with scikit-learn's own early stopping off; the LAST 20% is the validation set: the
iteration count is the one with the lowest validation log-loss over the staged predictions (no
random validation split, so no look-ahead across time). The test file is scored with that many
iterations. Prints one JSON object: fit seconds, n_iter, ROC-AUC and average precision on the
test file, and per pattern (each pattern's rows against all label-0 rows).

    .venv/bin/python tools/hgb_sklearn.py --train feats_train.csv --test feats_test.csv
"""

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="CSV: numeric features + label, time order")
    ap.add_argument("--test", required=True, help="CSV with the same columns")
    ap.add_argument("--label", default="label")
    ap.add_argument("--pattern-column", default="pattern")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--validation-share", type=float, default=0.2, help="last share of training rows")
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import sklearn
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    train = pd.read_csv(args.train)
    test = pd.read_csv(args.test)
    for name, df in (("train", train), ("test", test)):
        if args.label not in df.columns:
            print(f"hgb_sklearn: {name} file has no column {args.label!r}", file=sys.stderr)
            return 2
    excluded = {args.label, args.pattern_column}
    features = [c for c in train.columns if c not in excluded and pd.api.types.is_numeric_dtype(train[c])]
    ignored = [c for c in train.columns if c not in excluded and c not in features]
    missing = [c for c in features if c not in test.columns]
    if missing or not features:
        print(f"hgb_sklearn: test file lacks features {missing}" if missing else "hgb_sklearn: no numeric features", file=sys.stderr)
        return 2

    x = train[features].to_numpy(dtype=np.float64)
    y = train[args.label].to_numpy().astype(np.int64)
    cut = int(round(len(train) * (1.0 - args.validation_share)))
    if cut <= 0 or cut >= len(train):
        print("hgb_sklearn: training file too small for a validation split", file=sys.stderr)
        return 2
    x_fit, y_fit, x_val, y_val = x[:cut], y[:cut], x[cut:], y[cut:]
    if len(np.unique(y_fit)) < 2:
        print("hgb_sklearn: the first part of the training file has one class only", file=sys.stderr)
        return 2

    model = HistGradientBoostingClassifier(
        loss="log_loss",
        learning_rate=0.1,
        max_leaf_nodes=31,
        max_iter=args.max_iter,
        early_stopping=False,
        random_state=args.seed,
    )
    t0 = time.perf_counter()
    model.fit(x_fit, y_fit)
    fit_seconds = time.perf_counter() - t0
    # Iteration count: lowest validation log-loss over the stages (first such on ties).
    t1 = time.perf_counter()
    losses = [log_loss(y_val, p[:, 1], labels=[0, 1]) for p in model.staged_predict_proba(x_val)]
    best = int(np.argmin(losses)) + 1
    select_seconds = time.perf_counter() - t1

    # Test scores from the model cut at `best` iterations (staged predictions are exactly that).
    x_test = test[features].to_numpy(dtype=np.float64)
    y_test = test[args.label].to_numpy().astype(np.int64)
    score = None
    for i, p in enumerate(model.staged_predict_proba(x_test), start=1):
        if i == best:
            score = p[:, 1]
            break

    def metrics(yt, s):
        if len(np.unique(yt)) < 2:
            return {"roc_auc": None, "average_precision": None}
        return {
            "roc_auc": round(float(roc_auc_score(yt, s)), 6),
            "average_precision": round(float(average_precision_score(yt, s)), 6),
        }

    out = {
        "train": args.train,
        "test": args.test,
        "sklearn": sklearn.__version__,
        "features": features,
        "ignored_non_numeric": ignored,
        "train_rows": len(train),
        "fit_rows": cut,
        "validation_rows": len(train) - cut,
        "test_rows": len(test),
        "test_positive_share": round(float(y_test.mean()), 6),
        "fit_seconds": round(fit_seconds, 3),
        "select_seconds": round(select_seconds, 3),
        "max_iter": args.max_iter,
        "n_iter_fitted": int(model.n_iter_),
        "n_iter": best,
        "validation_log_loss": round(float(losses[best - 1]), 6),
        **metrics(y_test, score),
    }
    if args.pattern_column in test.columns:
        pattern = test[args.pattern_column].astype(str).to_numpy()
        normal = y_test == 0
        per = {}
        for name in sorted(set(pattern[y_test == 1])):
            pos = (pattern == name) & (y_test == 1)
            keep = pos | normal
            per[name] = {"rows": int(pos.sum()), **metrics(pos[keep].astype(np.int64), score[keep])}
        out["patterns"] = per
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
