//! The edge's explainer (quadrature TreeSHAP over precomputed per-split rows, model-format's
//! `explain`) against the textbook algorithm, on forests fitted to real data: every ADBench set
//! in `../shared/data/adbench/` and the legacy service's sample. The textbook algorithm
//! (Lundberg, Erion & Lee 2018, "Consistent individualized feature attribution for tree
//! ensembles", Algorithm 2: a path of (feature, zero fraction, one fraction, weight) extended
//! at each split, unwound where a feature repeats) shares no code or tables with the crate,
//! so agreement to rounding means the fast kernel is exact. Also additivity:
//! `Σφ + E[h] = E[h(x)]`.

use std::path::{Path, PathBuf};

use model_format::{Model, Node, leaf_path_length};
use trainer::forest::IsolationForestParams;

/// One element of the textbook path.
#[derive(Clone, Copy)]
struct Elem {
    feature: i64,
    zero: f64,
    one: f64,
    weight: f64,
}

fn extend(path: &mut Vec<Elem>, zero: f64, one: f64, feature: i64) {
    let l = path.len();
    path.push(Elem {
        feature,
        zero,
        one,
        weight: if l == 0 { 1.0 } else { 0.0 },
    });
    for i in (0..l).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / (l + 1) as f64;
        path[i].weight = zero * path[i].weight * (l - i) as f64 / (l + 1) as f64;
    }
}

fn unwind(path: &mut Vec<Elem>, i: usize) {
    let l = path.len() - 1;
    let (one, zero) = (path[i].one, path[i].zero);
    let mut n = path[l].weight;
    for j in (0..l).rev() {
        if one != 0.0 {
            let t = path[j].weight;
            path[j].weight = n * (l + 1) as f64 / ((j + 1) as f64 * one);
            n = t - path[j].weight * zero * (l - j) as f64 / (l + 1) as f64;
        } else {
            path[j].weight = path[j].weight * (l + 1) as f64 / (zero * (l - j) as f64);
        }
    }
    // The weights stay where they are; the other fields close the gap.
    for j in i..l {
        let next = path[j + 1];
        path[j] = Elem {
            weight: path[j].weight,
            ..next
        };
    }
    path.pop();
}

/// Σ of the weights the path would have with element `i` unwound.
fn unwound_sum(path: &[Elem], i: usize) -> f64 {
    let mut copy = path.to_vec();
    unwind(&mut copy, i);
    copy.iter().map(|e| e.weight).sum()
}

struct TreeGame<'a> {
    nodes: &'a [Node],
    cover: Vec<f64>,
    value: Vec<f64>,
}

impl<'a> TreeGame<'a> {
    fn new(nodes: &'a [Node]) -> Self {
        let n = nodes.len();
        let mut cover = vec![0.0; n];
        for i in (0..n).rev() {
            cover[i] = match nodes[i] {
                Node::Leaf { samples } => f64::from(samples),
                Node::Split { right, .. } => cover[i + 1] + cover[right as usize],
            };
        }
        let mut value = vec![0.0; n];
        let mut stack = vec![(0usize, 0u32)];
        while let Some((i, depth)) = stack.pop() {
            match nodes[i] {
                Node::Leaf { samples } => value[i] = leaf_path_length(depth, samples),
                Node::Split { right, .. } => {
                    stack.push((i + 1, depth + 1));
                    stack.push((right as usize, depth + 1));
                }
            }
        }
        TreeGame {
            nodes,
            cover,
            value,
        }
    }

    /// Visits node `j`, reached through an edge on `feature` with fractions `(zero, one)`.
    fn recurse(
        &self,
        j: usize,
        mut path: Vec<Elem>,
        (zero, one, feature): (f64, f64, i64),
        x: &[f32],
        phi: &mut [f64],
    ) {
        extend(&mut path, zero, one, feature);
        match self.nodes[j] {
            Node::Leaf { .. } => {
                for i in 1..path.len() {
                    let w = unwound_sum(&path, i);
                    let e = path[i];
                    phi[e.feature as usize] += w * (e.one - e.zero) * self.value[j];
                }
            }
            Node::Split {
                feature: f,
                threshold,
                right,
            } => {
                let (l, r) = (j + 1, right as usize);
                let (hot, cold) = if x[usize::from(f)] <= threshold {
                    (l, r)
                } else {
                    (r, l)
                };
                let (mut iz, mut io) = (1.0, 1.0);
                if let Some(k) = (1..path.len()).find(|&k| path[k].feature == i64::from(f)) {
                    iz = path[k].zero;
                    io = path[k].one;
                    unwind(&mut path, k);
                }
                let c = self.cover[j];
                self.recurse(
                    hot,
                    path.clone(),
                    (iz * self.cover[hot] / c, io, i64::from(f)),
                    x,
                    phi,
                );
                self.recurse(
                    cold,
                    path,
                    (iz * self.cover[cold] / c, 0.0, i64::from(f)),
                    x,
                    phi,
                );
            }
        }
    }
}

/// The model's φ the textbook way: per tree, then averaged, as `Model::explain` defines them.
fn textbook(model: &Model, row: &[f64]) -> Vec<f64> {
    let m = model.features().len();
    let x: Vec<f32> = (0..m)
        .map(|j| model.scaler().scale_one(j, row[j]) as f32)
        .collect();
    let trees = model.forest().trees();
    let mut phi = vec![0.0; m];
    for tree in trees {
        let game = TreeGame::new(tree.nodes());
        game.recurse(0, Vec::new(), (1.0, 1.0, -1), &x, &mut phi);
    }
    phi.iter().map(|p| p / trees.len() as f64).collect()
}

fn shared(rel: &str) -> PathBuf {
    harness::repo_root().join("../shared").join(rel)
}

/// Fits a default forest (100 trees, ψ = 256) to `path` and compares both explainers on
/// `rows` of its rows, spread over the file.
fn check(path: &Path, features: &[String], rows: usize) {
    assert!(path.exists(), "{} is missing", path.display());
    let table = trainer::data::read_features(path, features).unwrap();
    let params = IsolationForestParams {
        seed: 7,
        ..IsolationForestParams::default()
    };
    let model = trainer::fit(&table, &params).unwrap();
    let mut phi = vec![0.0; features.len()];
    let (mut worst_rel, mut worst_sum) = (0.0f64, 0.0f64);
    let step = (table.rows() / rows).max(1);
    for i in (0..table.rows()).step_by(step) {
        let row = table.row(i);
        let e = model.explain(&row, &mut phi).unwrap();
        let want = textbook(&model, &row);
        // Relative to the row's largest attribution (a feature that never splits gets 0).
        let scale = want.iter().fold(1e-3f64, |a, v| a.max(v.abs()));
        for (j, (got, want)) in phi.iter().zip(&want).enumerate() {
            let rel = (got - want).abs() / scale;
            assert!(
                rel <= 1e-12,
                "{}: row {i}, {}: {got} vs textbook {want} (relative {rel:e})",
                path.display(),
                features[j]
            );
            worst_rel = worst_rel.max(rel);
        }
        let total = phi.iter().sum::<f64>() + e.expected_value;
        worst_sum = worst_sum.max((total - e.mean_path_length()).abs());
    }
    assert!(
        worst_sum <= 1e-9,
        "{}: additivity error {worst_sum:e}",
        path.display()
    );
    eprintln!(
        "{}: {} features, worst relative difference {worst_rel:.1e}, additivity {worst_sum:.1e}",
        path.display(),
        features.len()
    );
}

fn columns(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f{i}")).collect()
}

#[test]
fn adbench_forests_explain_as_the_textbook_algorithm() {
    for (name, width) in [("cardio", 21), ("mammography", 6), ("shuttle", 9)] {
        let path = shared(&format!("data/adbench/{name}.parquet"));
        check(&path, &columns(width), 60);
    }
}

#[test]
fn the_legacy_sample_explains_as_the_textbook_algorithm() {
    let features: Vec<String> = [
        "amount",
        "hour",
        "day_of_week",
        "merchant_category",
        "transaction_type",
    ]
    .map(String::from)
    .to_vec();
    check(
        &shared("reference/legacy_sample_transactions.csv"),
        &features,
        200,
    );
}
