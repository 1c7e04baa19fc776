#!/usr/bin/env python3
"""Export a fitted scikit-learn IsolationForest (and optional StandardScaler) to JSON for
``trainer import-sklearn``.

The JSON keeps scikit-learn's own attribute names and exact values (thresholds as float64;
Python's ``json`` writes the shortest decimal that reads back to the same bits), so the
trainer can rebuild a model that scores exactly like scikit-learn. Non-finite numbers are
written as ``null`` (they are not JSON); the importer rejects them with a clear message.

Library use::

    from export_sklearn import export
    export(iforest, "model.json", scaler=scaler, feature_names=["amount", "hour", ...])

Command line, on a pickled or joblib-dumped model::

    python tools/export_sklearn.py model.joblib model.json [--scaler scaler.joblib] \\
        [--feature-names amount,hour,...]

The pickle may also hold a ``Pipeline(StandardScaler, IsolationForest)`` or a dict with keys
``model`` / ``scaler`` / ``feature_names``. Only unpickle files you trust.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from pathlib import Path

FORMAT = "secureflow-edge/sklearn-isolation-forest"
FORMAT_VERSION = 1


def _floats(values) -> list:
    """float64 values as JSON numbers; NaN/inf become null (JSON has no such numbers)."""
    return [float(v) if math.isfinite(v) else None for v in values]


def _ints(values) -> list:
    return [int(v) for v in values]


def _param(value):
    """A hyper-parameter as a JSON value (random_state may be a RandomState object)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def to_dict(model, scaler=None, feature_names=None) -> dict:
    """The export as a JSON-ready dict. See ``export``."""
    import sklearn
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import StandardScaler

    if not isinstance(model, IsolationForest):
        raise TypeError(f"expected a fitted IsolationForest, got {type(model).__name__}")
    if not hasattr(model, "estimators_"):
        raise ValueError("the IsolationForest is not fitted")
    n_features = int(model.n_features_in_)

    # Scoring divides by c(_max_samples); max_samples_ is the public copy. They must agree.
    max_samples = int(model.max_samples_)
    if hasattr(model, "_max_samples") and int(model._max_samples) != max_samples:
        raise ValueError(
            f"max_samples_ ({max_samples}) != _max_samples ({model._max_samples}); "
            "this scikit-learn version scores differently from what the exporter expects"
        )

    if feature_names is None:
        for source in (model, scaler):
            names = getattr(source, "feature_names_in_", None)
            if names is not None:
                feature_names = names
                break
    if feature_names is not None:
        feature_names = [str(n) for n in feature_names]
        if len(feature_names) != n_features:
            raise ValueError(f"{len(feature_names)} feature names for {n_features} features")

    scaler_json = None
    if scaler is not None:
        if not isinstance(scaler, StandardScaler):
            raise TypeError(f"expected a fitted StandardScaler, got {type(scaler).__name__}")
        if int(scaler.n_features_in_) != n_features:
            raise ValueError(
                f"scaler has {scaler.n_features_in_} features, the forest {n_features}"
            )
        # with_mean=False / with_std=False leave mean_ / scale_ as None: identity for that part.
        mean = scaler.mean_ if scaler.with_mean else [0.0] * n_features
        scale = scaler.scale_ if scaler.with_std else [1.0] * n_features
        scaler_json = {"mean_": _floats(mean), "scale_": _floats(scale)}

    estimators = []
    for est in model.estimators_:
        t = est.tree_
        estimators.append(
            {
                "children_left": _ints(t.children_left),
                "children_right": _ints(t.children_right),
                "feature": _ints(t.feature),
                "threshold": _floats(t.threshold),
                "n_node_samples": _ints(t.n_node_samples),
            }
        )

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sklearn_version": sklearn.__version__,
        "n_features_in_": n_features,
        "feature_names": feature_names,
        "max_samples_": max_samples,
        "max_features_": int(model._max_features) if hasattr(model, "_max_features") else None,
        "offset_": float(model.offset_) if math.isfinite(model.offset_) else None,
        # Informational: recorded in the model's metadata, not needed to score.
        "params": {
            k: _param(v)
            for k, v in model.get_params().items()
            if k in ("n_estimators", "max_samples", "max_features", "contamination",
                     "bootstrap", "random_state")
        },
        "scaler": scaler_json,
        "estimators": estimators,
        "estimators_features_": [_ints(f) for f in model.estimators_features_],
    }


def export(model, path, scaler=None, feature_names=None) -> None:
    """Write ``model`` (a fitted IsolationForest) to ``path`` as JSON.

    ``scaler``: the fitted StandardScaler applied before the forest, if any (without one the
    trainer uses an identity scaler). ``feature_names``: column names in model order; defaults
    to ``feature_names_in_`` of the forest or scaler when fitted on a DataFrame, else the
    importer names them f0..fN.
    """
    data = to_dict(model, scaler=scaler, feature_names=feature_names)
    # allow_nan=False: a stray NaN must fail here, not produce a file the importer rejects.
    Path(path).write_text(json.dumps(data, allow_nan=False, separators=(",", ":")))


def _unpack(obj):
    """(model, scaler, feature_names) from a pickled object."""
    if isinstance(obj, dict):
        return obj.get("model"), obj.get("scaler"), obj.get("feature_names")
    steps = getattr(obj, "steps", None)
    if steps is not None:  # Pipeline([... StandardScaler, IsolationForest])
        if len(steps) == 1:
            return steps[0][1], None, None
        if len(steps) == 2:
            return steps[1][1], steps[0][1], None
        raise ValueError("expected a pipeline of at most StandardScaler + IsolationForest")
    return obj, None, None


def _load(path):
    try:
        import joblib

        return joblib.load(path)
    except ImportError:
        with open(path, "rb") as f:
            return pickle.load(f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="pickled / joblib IsolationForest, Pipeline or dict")
    p.add_argument("output", help="JSON file to write")
    p.add_argument("--scaler", help="pickled / joblib StandardScaler applied before the forest")
    p.add_argument("--feature-names", help="comma-separated feature names in model order")
    args = p.parse_args(argv)

    model, scaler, names = _unpack(_load(args.model))
    if args.scaler:
        scaler = _load(args.scaler)
    if args.feature_names:
        names = args.feature_names.split(",")
    export(model, args.output, scaler=scaler, feature_names=names)
    print(f"wrote {args.output}: {len(model.estimators_)} trees, {model.n_features_in_} features")
    return 0


if __name__ == "__main__":
    sys.exit(main())
