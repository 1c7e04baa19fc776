"""Regenerates shap_isolation_forest.txt: a scikit-learn IsolationForest (10 trees, psi=256,
5 features) and shap.TreeExplainer's values for 12 rows, for tests/explain.rs.
Run with numpy, scikit-learn and shap installed (written with sklearn 1.9.1, shap 0.51.0).
Format: tree count; per tree its node count, then "S feature threshold(f32) right" or
"L samples" per node in pre-order; row count; "x... | phi..." per row; "E expected_value"."""
import numpy as np, shap
from sklearn.ensemble import IsolationForest
rng = np.random.RandomState(0)
X = rng.randn(2000, 5).astype(np.float64)
X[:40] *= 5
iso = IsolationForest(n_estimators=10, max_samples=256, random_state=1).fit(X)
rows = X[::97][:12]
ex = shap.TreeExplainer(iso)
sv = ex.shap_values(rows)
with open("shap_isolation_forest.txt", "w") as f:
    f.write(f"{len(iso.estimators_)}\n")
    for est, feats in zip(iso.estimators_, iso.estimators_features_):
        t = est.tree_
        f.write(f"{t.node_count}\n")
        for i in range(t.node_count):
            if t.children_left[i] == -1:
                f.write(f"L {t.n_node_samples[i]}\n")
            else:
                assert t.children_left[i] == i + 1
                f.write(f"S {feats[t.feature[i]]} {np.float32(t.threshold[i]).item()!r} {t.children_right[i]}\n")
    f.write(f"{len(rows)}\n")
    for r, s in zip(rows, sv):
        f.write(" ".join(repr(float(v)) for v in r) + " | " + " ".join(repr(float(v)) for v in s) + "\n")
    f.write(f"E {float(np.ravel(ex.expected_value)[0])!r}\n")
print("expected", ex.expected_value, "sv[0]", sv[0])
