//! Importing a fitted scikit-learn `IsolationForest` (+ optional `StandardScaler`) from the JSON
//! written by `tools/export_sklearn.py`.
//!
//! The converted model scores exactly like scikit-learn:
//!
//! * thresholds are stored as `f64` by scikit-learn but compared against `f32` inputs, so each is
//!   rounded *down* to `f32` (see [`round_down_to_f32`]), which keeps every comparison identical;
//! * with `max_features < 1` a tree sees only the columns in its `estimators_features_` entry;
//!   its feature indices are remapped to global ones. scikit-learn subsets columns only when a
//!   tree's subset is narrower than `n_features_in_` (a full-width subset is a permutation it
//!   ignores), and so do we;
//! * a leaf's `n_node_samples` becomes [`Node::Leaf`]`::samples` (bootstrap duplicates are not
//!   counted there by scikit-learn either, so nothing else is needed for `bootstrap=True`);
//! * nodes are re-laid in pre-order (left child = next node) whatever scikit-learn's numbering.
//!
//! Every array length, index and number is checked; a bad file gives an [`ImportError`] naming
//! the problem, never a panic.

use crate::forest::round_down_to_f32;
use model_format::{Forest, InvalidModel, MAX_FEATURES, Model, Node, Scaler, Tree};
use serde::Deserialize;
use thiserror::Error;

/// The `format` tag `tools/export_sklearn.py` writes.
pub const FORMAT: &str = "secureflow-edge/sklearn-isolation-forest";
/// The export layout version this importer reads.
pub const FORMAT_VERSION: u32 = 1;
/// Value of the `source` metadata key on imported models.
pub const SOURCE: &str = "scikit-learn import";

/// scikit-learn's `TREE_LEAF` marker in `children_left` / `children_right`.
const TREE_LEAF: i64 = -1;

/// Why an export could not be imported.
#[derive(Debug, Error)]
pub enum ImportError {
    #[error(
        "not a valid scikit-learn export: {0} (NaN/Infinity are not JSON; the exporter writes null)"
    )]
    Json(#[from] serde_json::Error),
    #[error(
        "format is {found:?}, expected {FORMAT:?} (write the file with tools/export_sklearn.py)"
    )]
    Format { found: String },
    #[error("format_version {0} is not supported (this trainer reads {FORMAT_VERSION})")]
    Version(u32),
    #[error("n_features_in_ is {0}; must be between 1 and {MAX_FEATURES}")]
    FeatureCount(usize),
    #[error("{what} has {found} entries but n_features_in_ is {expected}")]
    Width {
        what: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("{what} is missing or not a finite number")]
    NotFinite { what: String },
    #[error("max_samples_ is {0}; must be between 1 and {max}", max = u32::MAX)]
    MaxSamples(i64),
    #[error("the export has no estimators")]
    NoEstimators,
    #[error("{trees} estimators but {subsets} entries in estimators_features_")]
    SubsetCount { trees: usize, subsets: usize },
    #[error("estimator {tree}: {problem}")]
    Tree { tree: usize, problem: TreeError },
    #[error("invalid model: {0}")]
    Invalid(#[from] InvalidModel),
}

/// What is wrong with one exported estimator.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TreeError {
    #[error("no nodes")]
    Empty,
    #[error("{array} has {found} entries but children_left has {expected}")]
    ArrayLength {
        array: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("estimators_features_ entry {index} is {feature}; must be in 0..{n_features}")]
    SubsetFeature {
        index: usize,
        feature: i64,
        n_features: usize,
    },
    #[error("estimators_features_ lists feature {feature} twice")]
    SubsetDuplicate { feature: i64 },
    #[error("estimators_features_ has {found} entries but max_features_ is {expected}")]
    SubsetLength { found: usize, expected: usize },
    #[error("node {node}: child {child} is out of range (tree has {nodes} nodes)")]
    Child {
        node: usize,
        child: i64,
        nodes: usize,
    },
    #[error("node {node}: exactly one child is a leaf marker (-1); need both or neither")]
    HalfLeaf { node: usize },
    #[error("node {node} is reached twice (the arrays do not form a tree)")]
    Revisited { node: usize },
    #[error("node {node} is not reachable from the root")]
    Unreachable { node: usize },
    #[error("node {node}: split feature {feature} is out of range (tree sees {width} features)")]
    Feature {
        node: usize,
        feature: i64,
        width: usize,
    },
    #[error("node {node}: threshold is missing or not a finite number")]
    Threshold { node: usize },
    #[error("node {node}: leaf n_node_samples is {samples}; must be between 1 and {max}", max = u32::MAX)]
    Samples { node: usize, samples: i64 },
}

/// The JSON layout of `tools/export_sklearn.py` (keys follow scikit-learn's attribute names).
/// Unknown keys are ignored so the exporter can add informational fields.
#[derive(Debug, Deserialize)]
struct Export {
    format: String,
    format_version: u32,
    #[serde(default)]
    sklearn_version: Option<String>,
    n_features_in_: usize,
    #[serde(default)]
    feature_names: Option<Vec<String>>,
    max_samples_: i64,
    #[serde(default)]
    max_features_: Option<usize>,
    offset_: Option<f64>,
    #[serde(default)]
    params: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    scaler: Option<ScalerExport>,
    estimators: Vec<TreeExport>,
    estimators_features_: Vec<Vec<i64>>,
}

#[derive(Debug, Deserialize)]
struct ScalerExport {
    mean_: Vec<Option<f64>>,
    scale_: Vec<Option<f64>>,
}

/// One fitted `ExtraTreeRegressor`'s `tree_` arrays. Signed so that bad values parse and get a
/// precise error instead of a generic type error.
#[derive(Debug, Deserialize)]
struct TreeExport {
    children_left: Vec<i64>,
    children_right: Vec<i64>,
    feature: Vec<i64>,
    threshold: Vec<Option<f64>>,
    n_node_samples: Vec<i64>,
}

/// Parses and converts an export (the JSON text) into a validated model.
pub fn import(json: &str) -> Result<Model, ImportError> {
    let export: Export = serde_json::from_str(json)?;
    convert(export)
}

fn convert(e: Export) -> Result<Model, ImportError> {
    if e.format != FORMAT {
        return Err(ImportError::Format { found: e.format });
    }
    if e.format_version != FORMAT_VERSION {
        return Err(ImportError::Version(e.format_version));
    }
    let width = e.n_features_in_;
    if width == 0 || width > MAX_FEATURES {
        return Err(ImportError::FeatureCount(width));
    }
    let features = match e.feature_names {
        Some(names) => {
            check_width("feature_names", names.len(), width)?;
            names
        }
        // Same convention as the ADBench files: columns f0..fN.
        None => (0..width).map(|i| format!("f{i}")).collect(),
    };
    let scaler = match e.scaler {
        Some(s) => {
            check_width("scaler.mean_", s.mean_.len(), width)?;
            check_width("scaler.scale_", s.scale_.len(), width)?;
            Scaler::new(
                finite_all("scaler.mean_", s.mean_)?,
                finite_all("scaler.scale_", s.scale_)?,
            )?
        }
        None => Scaler::identity(width),
    };
    let offset = e
        .offset_
        .filter(|o| o.is_finite())
        .ok_or_else(|| ImportError::NotFinite {
            what: "offset_".into(),
        })?;
    let max_samples = u32::try_from(e.max_samples_)
        .ok()
        .filter(|&m| m >= 1)
        .ok_or(ImportError::MaxSamples(e.max_samples_))?;
    if e.estimators.is_empty() {
        return Err(ImportError::NoEstimators);
    }
    if e.estimators.len() != e.estimators_features_.len() {
        return Err(ImportError::SubsetCount {
            trees: e.estimators.len(),
            subsets: e.estimators_features_.len(),
        });
    }
    let trees = e
        .estimators
        .iter()
        .zip(&e.estimators_features_)
        .enumerate()
        .map(|(i, (tree, subset))| {
            let nodes = convert_tree(tree, subset, width, e.max_features_)
                .map_err(|problem| ImportError::Tree { tree: i, problem })?;
            // Cannot fail for nodes laid out by convert_tree, but is reported rather than unwrapped.
            Tree::new(nodes)
                .map_err(|problem| ImportError::Invalid(InvalidModel::Tree { tree: i, problem }))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut metadata = vec![
        ("source".to_string(), SOURCE.to_string()),
        ("trainer".to_string(), crate::TRAINER_VERSION.to_string()),
    ];
    if let Some(v) = e.sklearn_version {
        metadata.push(("sklearn_version".into(), v));
    }
    metadata.push(("n_estimators".into(), trees.len().to_string()));
    metadata.push(("max_samples".into(), max_samples.to_string()));
    if let Some(m) = e.max_features_ {
        metadata.push(("max_features".into(), m.to_string()));
    }
    // Hyper-parameters as the exporter recorded them (contamination, bootstrap, random_state...).
    for (k, v) in e.params.into_iter().flatten() {
        let v = match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        metadata.push((format!("sklearn.{k}"), v));
    }
    let forest = Forest::new(trees, max_samples, offset)?;
    let rules = crate::payload_rules(&features, None);
    // Same payload rules as a model fitted by the trainer on these features.
    Ok(Model::new(features, scaler, forest, metadata)?.with_normalization(rules)?)
}

fn check_width(what: &'static str, found: usize, expected: usize) -> Result<(), ImportError> {
    if found == expected {
        Ok(())
    } else {
        Err(ImportError::Width {
            what,
            found,
            expected,
        })
    }
}

fn finite_all(what: &str, values: Vec<Option<f64>>) -> Result<Vec<f64>, ImportError> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.filter(|v| v.is_finite())
                .ok_or_else(|| ImportError::NotFinite {
                    what: format!("{what}[{i}]"),
                })
        })
        .collect()
}

/// Converts one estimator's arrays into pre-order nodes with global feature indices.
fn convert_tree(
    t: &TreeExport,
    subset: &[i64],
    n_features: usize,
    max_features: Option<usize>,
) -> Result<Vec<Node>, TreeError> {
    let n = t.children_left.len();
    if n == 0 {
        return Err(TreeError::Empty);
    }
    for (array, found) in [
        ("children_right", t.children_right.len()),
        ("feature", t.feature.len()),
        ("threshold", t.threshold.len()),
        ("n_node_samples", t.n_node_samples.len()),
    ] {
        if found != n {
            return Err(TreeError::ArrayLength {
                array,
                found,
                expected: n,
            });
        }
    }

    // Global index of each column the tree was fitted on.
    let mut seen = vec![false; n_features];
    let mut global = Vec::with_capacity(subset.len());
    for (index, &f) in subset.iter().enumerate() {
        let g = usize::try_from(f).ok().filter(|&g| g < n_features).ok_or(
            TreeError::SubsetFeature {
                index,
                feature: f,
                n_features,
            },
        )?;
        if std::mem::replace(&mut seen[g], true) {
            return Err(TreeError::SubsetDuplicate { feature: f });
        }
        global.push(g as u16);
    }
    if let Some(m) = max_features
        && subset.len() != m
    {
        return Err(TreeError::SubsetLength {
            found: subset.len(),
            expected: m,
        });
    }
    // scikit-learn's rule (`_max_features != X.shape[1]`): only a narrower subset is applied.
    let remap = subset.len() != n_features;
    let tree_width = if remap { subset.len() } else { n_features };

    let child = |node: usize, c: i64| -> Result<Option<usize>, TreeError> {
        if c == TREE_LEAF {
            return Ok(None);
        }
        usize::try_from(c)
            .ok()
            .filter(|&c| c < n)
            .map(Some)
            .ok_or(TreeError::Child {
                node,
                child: c,
                nodes: n,
            })
    };

    let mut nodes = Vec::with_capacity(n);
    let mut visited = vec![false; n];
    // (scikit-learn node, index of the split whose `right` must point at it). Pushing the right
    // child before the left one lays the left subtree out right after its parent.
    let mut stack: Vec<(usize, Option<usize>)> = vec![(0, None)];
    while let Some((node, parent)) = stack.pop() {
        if std::mem::replace(&mut visited[node], true) {
            return Err(TreeError::Revisited { node });
        }
        let here = nodes.len();
        if let Some(p) = parent
            && let Node::Split { right, .. } = &mut nodes[p]
        {
            *right = here as u32;
        }
        match (
            child(node, t.children_left[node])?,
            child(node, t.children_right[node])?,
        ) {
            (None, None) => {
                let samples = t.n_node_samples[node];
                let samples = u32::try_from(samples)
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or(TreeError::Samples { node, samples })?;
                nodes.push(Node::Leaf { samples });
            }
            (Some(left), Some(right)) => {
                let f = t.feature[node];
                let local = usize::try_from(f).ok().filter(|&f| f < tree_width).ok_or(
                    TreeError::Feature {
                        node,
                        feature: f,
                        width: tree_width,
                    },
                )?;
                let feature = if remap { global[local] } else { local as u16 };
                let threshold = t.threshold[node]
                    .filter(|v| v.is_finite())
                    .ok_or(TreeError::Threshold { node })?;
                nodes.push(Node::Split {
                    feature,
                    threshold: round_down_to_f32(threshold),
                    right: 0,
                });
                stack.push((right, Some(here)));
                stack.push((left, None));
            }
            _ => return Err(TreeError::HalfLeaf { node }),
        }
    }
    if let Some(node) = visited.iter().position(|v| !v) {
        return Err(TreeError::Unreachable { node });
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Three features; one tree fitted on the subset [2, 0] (max_features < 1) whose nodes are
    /// not numbered in pre-order: 0 splits on local 1 (global 0) with left = 2, right = 1.
    fn base() -> Value {
        json!({
            "format": FORMAT,
            "format_version": 1,
            "sklearn_version": "1.9.1",
            "n_features_in_": 3,
            "feature_names": ["a", "b", "c"],
            "max_samples_": 6,
            "max_features_": 2,
            "offset_": -0.5,
            "params": {"contamination": "auto", "bootstrap": true},
            "scaler": null,
            "estimators": [{
                "children_left":  [2, -1, 3, -1, -1],
                "children_right": [1, -1, 4, -1, -1],
                "feature":        [1, -2, 0, -2, -2],
                "threshold":      [0.1, -2.0, -1.5, -2.0, -2.0],
                "n_node_samples": [6, 3, 3, 1, 2]
            }],
            "estimators_features_": [[2, 0]]
        })
    }

    fn import_value(v: &Value) -> Result<Model, ImportError> {
        import(&v.to_string())
    }

    fn tree_error(v: &Value) -> TreeError {
        match import_value(v) {
            Err(ImportError::Tree { tree: 0, problem }) => problem,
            other => panic!("expected a tree error, got {other:?}"),
        }
    }

    #[test]
    fn remaps_features_and_relays_in_pre_order() {
        let model = import_value(&base()).unwrap();
        let nodes = model.forest().trees()[0].nodes();
        assert_eq!(
            nodes,
            &[
                // 0.1 is not an f32: the largest f32 below it keeps `x <= 0.1` exact for f32 x.
                Node::Split {
                    feature: 0,
                    threshold: 0.1f32.next_down(),
                    right: 4
                },
                Node::Split {
                    feature: 2,
                    threshold: -1.5,
                    right: 3
                },
                Node::Leaf { samples: 1 },
                Node::Leaf { samples: 2 },
                Node::Leaf { samples: 3 },
            ]
        );
        assert_eq!(model.features(), ["a", "b", "c"]);
        assert_eq!(model.scaler(), &Scaler::identity(3));
        assert_eq!(model.forest().max_samples(), 6);
        assert_eq!(model.meta("source"), Some(SOURCE));
        assert_eq!(model.meta("sklearn_version"), Some("1.9.1"));
        assert_eq!(model.meta("sklearn.bootstrap"), Some("true"));
        // 0.1 as f32 is above 0.1, so scikit-learn sends it right: depth 1 + c(3).
        let s = model.score(&[0.1, 9.0, 0.0]).unwrap();
        assert_eq!(
            s.mean_path_length,
            1.0 + model_format::average_path_length(3)
        );
        // -1.5 <= -1.5 goes left twice: depth 2, one sample.
        let s = model.score(&[0.0, 9.0, -1.5]).unwrap();
        assert_eq!(s.mean_path_length, 2.0);
        // The model survives encoding.
        assert_eq!(
            Model::from_bytes(&model.to_bytes().unwrap()).unwrap(),
            model
        );
    }

    #[test]
    fn full_width_subset_is_not_applied_and_defaults_are_filled() {
        // scikit-learn ignores estimators_features_ when it covers every feature.
        let mut v = base();
        v["n_features_in_"] = json!(2);
        v["max_features_"] = json!(2);
        v["estimators_features_"] = json!([[1, 0]]);
        v["feature_names"] = Value::Null;
        v["scaler"] = json!({"mean_": [1.0, 2.0], "scale_": [0.5, 4.0]});
        let model = import_value(&v).unwrap();
        let Node::Split { feature, .. } = model.forest().trees()[0].nodes()[0] else {
            panic!("root is a split")
        };
        assert_eq!(feature, 1);
        assert_eq!(model.features(), ["f0", "f1"]);
        assert_eq!(model.scaler().scale(), [0.5, 4.0]);
    }

    #[test]
    fn malformed_exports_are_rejected_with_the_reason() {
        assert!(matches!(import("{\"format\": "), Err(ImportError::Json(_))));
        // Python's json.dumps default writes NaN, which is not JSON.
        let nan = base().to_string().replace("0.1", "NaN");
        let err = import(&nan).unwrap_err();
        assert!(err.to_string().contains("null"), "{err}");

        let mut v = base();
        v["format"] = json!("something-else");
        assert!(matches!(import_value(&v), Err(ImportError::Format { .. })));

        let mut v = base();
        v["estimators"][0]["threshold"][0] = Value::Null;
        assert_eq!(tree_error(&v), TreeError::Threshold { node: 0 });

        let mut v = base();
        v["estimators"][0]["threshold"] = json!([0.1, -2.0, -1.5, -2.0]);
        assert!(matches!(
            tree_error(&v),
            TreeError::ArrayLength {
                array: "threshold",
                found: 4,
                expected: 5
            }
        ));

        // Local feature 2 does not exist in a two-column subset.
        let mut v = base();
        v["estimators"][0]["feature"][2] = json!(2);
        assert_eq!(
            tree_error(&v),
            TreeError::Feature {
                node: 2,
                feature: 2,
                width: 2
            }
        );

        let mut v = base();
        v["estimators_features_"] = json!([[3, 0]]);
        assert!(matches!(
            tree_error(&v),
            TreeError::SubsetFeature { feature: 3, .. }
        ));

        let mut v = base();
        v["estimators_features_"] = json!([[0, 0]]);
        assert_eq!(tree_error(&v), TreeError::SubsetDuplicate { feature: 0 });

        let mut v = base();
        v["estimators"][0]["children_right"][2] = json!(7);
        assert!(matches!(
            tree_error(&v),
            TreeError::Child {
                node: 2,
                child: 7,
                ..
            }
        ));

        // A cycle back to the root.
        let mut v = base();
        v["estimators"][0]["children_left"][2] = json!(0);
        assert_eq!(tree_error(&v), TreeError::Revisited { node: 0 });

        let mut v = base();
        v["estimators"][0]["children_right"][2] = json!(-1);
        assert_eq!(tree_error(&v), TreeError::HalfLeaf { node: 2 });

        let mut v = base();
        v["estimators"][0]["n_node_samples"][3] = json!(0);
        assert_eq!(
            tree_error(&v),
            TreeError::Samples {
                node: 3,
                samples: 0
            }
        );

        // Node 1 made unreachable: root's right child points at node 2's subtree twice.
        let mut v = base();
        v["estimators"][0]["children_left"] = json!([3, -1, -1, -1, -1]);
        v["estimators"][0]["children_right"] = json!([4, -1, -1, -1, -1]);
        assert_eq!(tree_error(&v), TreeError::Unreachable { node: 1 });

        let mut v = base();
        v["estimators_features_"] = json!([]);
        assert!(matches!(
            import_value(&v),
            Err(ImportError::SubsetCount {
                trees: 1,
                subsets: 0
            })
        ));

        let mut v = base();
        v["scaler"] = json!({"mean_": [0.0, 0.0], "scale_": [1.0, 1.0, 1.0]});
        assert!(matches!(
            import_value(&v),
            Err(ImportError::Width {
                what: "scaler.mean_",
                ..
            })
        ));

        let mut v = base();
        v["scaler"] = json!({"mean_": [0.0, 0.0, 0.0], "scale_": [1.0, 0.0, 1.0]});
        assert!(matches!(import_value(&v), Err(ImportError::Invalid(_))));

        let mut v = base();
        v["offset_"] = Value::Null;
        assert!(matches!(
            import_value(&v),
            Err(ImportError::NotFinite { .. })
        ));

        let mut v = base();
        v["max_samples_"] = json!(0);
        assert!(matches!(import_value(&v), Err(ImportError::MaxSamples(0))));

        let mut v = base();
        v["feature_names"] = json!(["a", "a", "c"]);
        assert!(matches!(import_value(&v), Err(ImportError::Invalid(_))));
    }
}
