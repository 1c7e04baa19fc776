#!/usr/bin/env python3
"""How to combine an isolation forest on per-transaction features with one on velocity
features: a study on feature tables, with scikit-learn's IsolationForest.

`trainer fit --velocity-forest separate` keeps the two apart and lets the velocity trees add
only in their tail (model-format's TreeGroups, SPEC.md section 4.8): with E_0, E_1 the mean path
lengths of the two groups and tail the q-quantile of E_1 over the training rows, a row's path
length is E_0 - w * max(0, tail - E_1) with w = 1. This script measures the rule's trade-off
over q and w on any labelled stream, beside one forest over all features ("mixed") and the
most anomalous group deciding ("max": min(E_0, E_1)), as ROC-AUC per pattern against all normal
rows, as a change from the per-transaction forest alone.

Input: feature tables written by `trainer features --carry pattern` (the same velocity values
`fit` computes), e.g. on tools/fraud_streams.py traffic:

    trainer features --input train.csv --spec trainer/tests/data/streams-spec.toml \\
        --carry pattern --output train.feat.csv      # and the same for test.csv
    .venv/bin/python tools/forest_groups.py train.feat.csv test.feat.csv
"""

import argparse

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

LEGACY = ["amount", "hour", "day_of_week", "merchant_category", "transaction_type"]


def path_lengths(train, test, columns, seed, trees):
    """Mean path length, up to the forest-wide constant c(psi), of every train and test row."""
    forest = IsolationForest(n_estimators=trees, max_samples=256, random_state=seed)
    forest.fit(train[columns].values)
    # score_samples = -2^(-E/c): -log2(-score) = E/c, which orders rows as E does.
    return (
        -np.log2(-forest.score_samples(train[columns].values)),
        -np.log2(-forest.score_samples(test[columns].values)),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train")
    ap.add_argument("test")
    ap.add_argument("--base", default=",".join(LEGACY), help="per-transaction feature columns")
    ap.add_argument("--trees", type=int, default=100, help="trees per group")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tails", default="0.05,0.1,0.2", help="tail shares q to try")
    ap.add_argument("--weights", default="1,2,4", help="weights w to try")
    args = ap.parse_args()

    train, test = pd.read_csv(args.train), pd.read_csv(args.test)
    base = args.base.split(",")
    velocity = [c for c in train.columns if c not in base + ["label", "pattern"]]
    patterns = sorted(p for p in test["pattern"].unique() if p != "normal")
    normal = test["pattern"] == "normal"

    def aucs(path_length):
        out = []
        for p in patterns:
            rows = (test["pattern"] == p) | normal
            out.append(roc_auc_score(test["label"][rows], -path_length[rows]))
        return np.array(out)

    e0_train, e0 = path_lengths(train, test, base, args.seed, args.trees)
    e1_train, e1 = path_lengths(train, test, velocity, args.seed + 1, args.trees)
    _, mixed = path_lengths(train, test, base + velocity, args.seed, args.trees)
    alone = aucs(e0)
    print(f"{len(base)} per-transaction and {len(velocity)} velocity features")
    print("rule            " + " ".join(f"{p[:12]:>12}" for p in patterns))
    print("per-transaction " + " ".join(f"{a:12.3f}" for a in alone))

    def row(name, path_length):
        print(f"{name:<16}" + " ".join(f"{d:+12.3f}" for d in aucs(path_length) - alone))

    row("mixed", mixed)
    for q in map(float, args.tails.split(",")):
        tail = np.quantile(e1_train, q)
        for w in map(float, args.weights.split(",")):
            row(f"tail q={q:g} w={w:g}", e0 - w * np.maximum(0.0, tail - e1))
    row("max", np.minimum(e0, e1))


if __name__ == "__main__":
    main()
