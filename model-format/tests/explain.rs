//! Path-dependent TreeSHAP: the fast explainer against a brute-force Shapley reference.

mod common;

use common::{leaf, split};

use common::grow::{SplitMix, grow_model, synthetic_rows};
use model_format::{
    ExplainError, Forest, Model, Node, Scaler, ScoreError, Tree, average_path_length,
};
use proptest::prelude::*;

fn model(m: usize, scaler: Scaler, trees: Vec<Vec<Node>>) -> Model {
    let trees = trees.into_iter().map(|t| Tree::new(t).unwrap()).collect();
    let names = (0..m).map(|i| format!("f{i}")).collect();
    Model::new(
        names,
        scaler,
        Forest::new(trees, 256, -0.5).unwrap(),
        vec![],
    )
    .unwrap()
}

// ---- brute-force reference, independent of the crate's covers and leaf values ----

/// Training samples below `i`.
fn cover(nodes: &[Node], i: usize) -> f64 {
    match nodes[i] {
        Node::Leaf { samples } => f64::from(samples),
        Node::Split { right, .. } => cover(nodes, i + 1) + cover(nodes, right as usize),
    }
}

/// E[h | x_S] the path-dependent way: follow x on features in S, otherwise average the
/// children by cover.
fn cond(nodes: &[Node], i: usize, depth: u32, x: &[f32], s: u64) -> f64 {
    match nodes[i] {
        Node::Leaf { samples } => f64::from(depth) + average_path_length(samples),
        Node::Split {
            feature,
            threshold,
            right,
        } => {
            let (l, r) = (i + 1, right as usize);
            if s >> feature & 1 == 1 {
                let next = if x[usize::from(feature)] <= threshold {
                    l
                } else {
                    r
                };
                cond(nodes, next, depth + 1, x, s)
            } else {
                let (cl, cr) = (cover(nodes, l), cover(nodes, r));
                (cl * cond(nodes, l, depth + 1, x, s) + cr * cond(nodes, r, depth + 1, x, s))
                    / (cl + cr)
            }
        }
    }
}

/// Exact Shapley values over all feature subsets, and v(∅).
fn brute_force(model: &Model, row: &[f64]) -> (Vec<f64>, f64) {
    let m = model.features().len();
    let x: Vec<f32> = (0..m)
        .map(|j| model.scaler().scale_one(j, row[j]) as f32)
        .collect();
    let trees = model.forest().trees();
    let v: Vec<f64> = (0..1u64 << m)
        .map(|s| {
            trees
                .iter()
                .map(|t| cond(t.nodes(), 0, 0, &x, s))
                .sum::<f64>()
                / trees.len() as f64
        })
        .collect();
    // weight[k] = k!(m-k-1)!/m!
    let fact = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
    let weight: Vec<f64> = (0..m)
        .map(|k| fact(k) * fact(m - k - 1) / fact(m))
        .collect();
    let phi = (0..m)
        .map(|i| {
            (0..1u64 << m)
                .filter(|s| s >> i & 1 == 0)
                .map(|s| {
                    weight[s.count_ones() as usize] * (v[(s | 1 << i) as usize] - v[s as usize])
                })
                .sum()
        })
        .collect();
    (phi, v[0])
}

// ---- random trees with ties and repeated features ----

const GRID: [f32; 5] = [-1.0, -0.5, 0.0, 0.5, 1.0];

fn random_tree(rng: &mut SplitMix, m: usize, max_depth: u32, leaf_p: f64) -> Vec<Node> {
    fn go(n: &mut Vec<Node>, rng: &mut SplitMix, m: usize, depth: u32, max: u32, p: f64) {
        if depth >= max || (depth > 0 && rng.unit() < p) {
            n.push(leaf(1 + rng.below(20) as u32));
            return;
        }
        let at = n.len();
        n.push(leaf(1));
        go(n, rng, m, depth + 1, max, p);
        let right = n.len() as u32;
        go(n, rng, m, depth + 1, max, p);
        n[at] = split(rng.below(m) as u16, GRID[rng.below(GRID.len())], right);
    }
    let mut nodes = Vec::new();
    go(&mut nodes, rng, m, 0, max_depth, leaf_p);
    nodes
}

/// Raw values that land on, between and outside the thresholds (identity scaler).
fn random_row(rng: &mut SplitMix, m: usize) -> Vec<f64> {
    (0..m)
        .map(|_| match rng.below(3) {
            0 => f64::from(GRID[rng.below(GRID.len())]),
            _ => rng.unit() * 3.0 - 1.5,
        })
        .collect()
}

fn check_against_brute_force(model: &Model, row: &[f64], tol: f64) {
    let m = model.features().len();
    let mut phi = vec![f64::NAN; m];
    let e = model.explain(row, &mut phi).unwrap();
    let (want, v0) = brute_force(model, row);
    for i in 0..m {
        assert!(
            (phi[i] - want[i]).abs() <= tol,
            "feature {i}: fast {} vs brute force {} (row {row:?})",
            phi[i],
            want[i]
        );
    }
    assert!((e.expected_value - v0).abs() <= tol);
    assert_eq!(e.score, model.score(row).unwrap());
    let total = phi.iter().sum::<f64>() + e.expected_value;
    assert!((total - e.mean_path_length()).abs() <= 1e-9);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Small random forests, up to 6 features, depth ≤ 8, ties on thresholds, repeated
    /// features along paths.
    #[test]
    fn matches_brute_force(
        seed in any::<u64>(),
        m in 1usize..=6,
        n_trees in 1usize..=4,
        max_depth in 0u32..=8,
        leaf_p in 0.0f64..0.6,
    ) {
        let mut rng = SplitMix(seed);
        let trees = (0..n_trees).map(|_| random_tree(&mut rng, m, max_depth, leaf_p)).collect();
        let model = model(m, Scaler::identity(m), trees);
        for _ in 0..6 {
            let row = random_row(&mut rng, m);
            check_against_brute_force(&model, &row, 1e-12);
        }
    }

    /// Non-trivial scaler: the explainer compares scaled f32 values exactly like scoring.
    #[test]
    fn matches_brute_force_with_scaler(seed in any::<u64>(), m in 1usize..=5) {
        let mut rng = SplitMix(seed);
        let trees = (0..3).map(|_| random_tree(&mut rng, m, 6, 0.2)).collect();
        let mean = (0..m).map(|_| rng.normal() * 10.0).collect();
        let scale = (0..m).map(|_| 0.1 + rng.unit() * 5.0).collect();
        let scaler = Scaler::new(mean, scale).unwrap();
        let model = model(m, scaler.clone(), trees);
        for _ in 0..6 {
            let row: Vec<f64> = random_row(&mut rng, m)
                .iter()
                .enumerate()
                .map(|(j, v)| v * scaler.scale()[j] + scaler.mean()[j])
                .collect();
            check_against_brute_force(&model, &row, 1e-12);
        }
    }
}

/// Many distinct features on a path: larger quadrature rules (q = 4..8) stay exact. With 2^16
/// subsets the reference's own rounding reaches ~1e-12 (its Σφ + E misses v(all) by that much,
/// the fast one by < 1e-14), hence the looser bound for m > 6.
#[test]
fn many_features_per_path() {
    for (m, seed) in [(8, 1u64), (12, 2), (16, 3)] {
        let mut rng = SplitMix(seed);
        let trees = (0..3)
            .map(|_| random_tree(&mut rng, m, m as u32 + 2, 0.45))
            .collect();
        let model = model(m, Scaler::identity(m), trees);
        for _ in 0..3 {
            let row = random_row(&mut rng, m);
            check_against_brute_force(&model, &row, 1e-11);
        }
    }
}

/// A 100-deep chain over 3 features: heap frames, long runs of a repeated feature.
#[test]
fn deep_chain_with_repeated_features() {
    let depth = 100;
    let mut nodes = Vec::new();
    for d in 0..depth {
        // split, then a leaf as left child, the chain continues on the right
        let at = nodes.len() as u32;
        nodes.push(split((d % 3) as u16, GRID[d % GRID.len()], at + 2));
        nodes.push(leaf(1 + (d % 4) as u32));
    }
    nodes.push(leaf(2));
    let model = model(3, Scaler::identity(3), vec![nodes]);
    let mut rng = SplitMix(7);
    for _ in 0..20 {
        let row = random_row(&mut rng, 3);
        check_against_brute_force(&model, &row, 1e-12);
    }
}

/// Realistic forest (100 trees, ψ = 256, 5 features): Σφ + E = E[h(x)].
#[test]
fn additivity_on_a_grown_forest() {
    let rows = synthetic_rows(3000, 11);
    let model = grow_model(&rows, 100, 256, 12);
    let mut phi = [0.0; 5];
    let mut worst: f64 = 0.0;
    for row in rows.iter().step_by(7) {
        let e = model.explain(row, &mut phi).unwrap();
        assert_eq!(e.score, model.score(row).unwrap());
        assert_eq!(e.expected_value, model.expected_value());
        let total = phi.iter().sum::<f64>() + e.expected_value;
        worst = worst.max((total - e.mean_path_length()).abs());
    }
    assert!(worst <= 1e-9, "additivity error {worst}");
    // And against brute force on a few rows (5 features: 32 subsets).
    for row in rows.iter().step_by(301) {
        check_against_brute_force(&model, row, 1e-12);
    }
}

/// `explain_rows` gives every row exactly what `explain` gives it alone (bits, not a
/// tolerance), whatever rows share its batch; `count` need not be a multiple of the batch.
fn check_rows_match_one_by_one(model: &Model, rows: &[Vec<f64>]) {
    let m = model.features().len();
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let mut phi = vec![f64::NAN; flat.len()];
    let mut out = Vec::new();
    model.explain_rows(&flat, &mut phi, &mut out).unwrap();
    assert_eq!(out.len(), rows.len());
    let mut one = vec![f64::NAN; m];
    for (i, row) in rows.iter().enumerate() {
        let e = model.explain(row, &mut one).unwrap();
        assert_eq!(out[i], e, "row {i}");
        let got = &phi[i * m..(i + 1) * m];
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(got), bits(&one), "row {i}: {got:?} vs {one:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Batched explanations on random forests (ties, repeated features, every rule size up to
    /// 6 features) equal one-by-one explanations to the bit.
    #[test]
    fn rows_at_once_equal_rows_one_by_one(
        seed in any::<u64>(),
        m in 1usize..=6,
        n_trees in 1usize..=4,
        max_depth in 0u32..=8,
        count in 0usize..=11,
    ) {
        let mut rng = SplitMix(seed);
        let trees = (0..n_trees).map(|_| random_tree(&mut rng, m, max_depth, 0.3)).collect();
        let model = model(m, Scaler::identity(m), trees);
        let rows: Vec<Vec<f64>> = (0..count).map(|_| random_row(&mut rng, m)).collect();
        check_rows_match_one_by_one(&model, &rows);
    }
}

/// The same on a realistic forest and on rules for many features (q up to 8).
#[test]
fn rows_at_once_on_grown_and_wide_forests() {
    let rows = synthetic_rows(1003, 5);
    check_rows_match_one_by_one(&grow_model(&rows, 100, 256, 3), &rows);
    for (m, seed) in [(8, 1u64), (16, 3)] {
        let mut rng = SplitMix(seed);
        let trees = (0..3)
            .map(|_| random_tree(&mut rng, m, m as u32 + 2, 0.45))
            .collect();
        let model = model(m, Scaler::identity(m), trees);
        let rows: Vec<Vec<f64>> = (0..13).map(|_| random_row(&mut rng, m)).collect();
        check_rows_match_one_by_one(&model, &rows);
    }
}

/// A bad row stops the batch there: an error, and the rows before it explained.
#[test]
fn rows_at_once_stop_at_the_first_bad_row() {
    let rows = synthetic_rows(10, 9);
    let model = grow_model(&rows, 10, 64, 1);
    for bad in [0, 3, 6, 9] {
        let mut flat: Vec<f64> = rows.iter().flatten().copied().collect();
        flat[bad * 5 + 2] = f64::NAN;
        let mut phi = vec![0.0; flat.len()];
        let mut out = Vec::new();
        let err = model.explain_rows(&flat, &mut phi, &mut out).unwrap_err();
        assert!(
            matches!(err, ExplainError::Score(ScoreError::NotFinite { .. })),
            "{err:?}"
        );
        assert_eq!(out.len(), bad, "rows explained before row {bad}");
    }
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let mut out = Vec::new();
    let short = model.explain_rows(&flat, &mut vec![0.0; flat.len() - 1], &mut out);
    assert!(matches!(short, Err(ExplainError::PhiWidth { .. })));
    let partial = model.explain_rows(&flat[..7], &mut [0.0; 7], &mut out);
    assert!(matches!(
        partial,
        Err(ExplainError::Score(ScoreError::Width { .. }))
    ));
    assert!(out.is_empty());
}

/// One split, checkable by hand: x0 <= 0 → leaf of 1 sample at depth 1 (h = 1); else a leaf of
/// 3 samples (h = 1 + c(3)). Covers 1 and 3.
#[test]
fn one_split_by_hand() {
    let model = model(
        2,
        Scaler::identity(2),
        vec![vec![split(0, 0.0, 2), leaf(1), leaf(3)]],
    );
    // c(3) = 2(ln 2 + γ) − 4/3 = 1.2073929...; E = (1·1 + 3·(1 + c(3)))/4.
    let c3 = 2.0 * (2f64.ln() + 0.577_215_664_901_532_9) - 4.0 / 3.0;
    let e = (1.0 + 3.0 * (1.0 + c3)) / 4.0;
    assert!((model.expected_value() - e).abs() < 1e-15);
    assert!((e - 1.905_544_268_192_217).abs() < 1e-12);

    let mut phi = [0.0; 2];
    // Left: h = 1, all of the gap to E goes to x0; x1 is never read.
    let got = model.explain(&[-3.0, 5.0], &mut phi).unwrap();
    assert!((phi[0] - (1.0 - e)).abs() < 1e-15, "{phi:?}");
    assert!((phi[0] + 0.905_544_268_192_217).abs() < 1e-12);
    assert_eq!(phi[1], 0.0);
    assert_eq!(got.mean_path_length(), 1.0);
    // Right (and exactly at the threshold, which goes left).
    model.explain(&[0.5, 0.0], &mut phi).unwrap();
    assert!((phi[0] - (1.0 + c3 - e)).abs() < 1e-15);
    model.explain(&[0.0, 0.0], &mut phi).unwrap();
    assert!((phi[0] - (1.0 - e)).abs() < 1e-15);
}

/// Two trees on different features: φ of each is that tree's own gap, divided by 2.
#[test]
fn two_independent_trees_by_hand() {
    let model = model(
        2,
        Scaler::identity(2),
        vec![
            vec![split(0, 0.0, 2), leaf(1), leaf(3)],
            vec![split(1, 0.0, 2), leaf(2), leaf(2)],
        ],
    );
    // Tree 2: both leaves h = 1 + c(2) = 2 → E2 = 2, and x1 changes nothing.
    let mut phi = [0.0; 2];
    let e = model.explain(&[1.0, -1.0], &mut phi).unwrap();
    let c3 = average_path_length(3);
    let e1 = (1.0 + 3.0 * (1.0 + c3)) / 4.0;
    assert!((e.expected_value - (e1 + 2.0) / 2.0).abs() < 1e-15);
    assert!((phi[0] - (1.0 + c3 - e1) / 2.0).abs() < 1e-15);
    assert!(phi[1].abs() < 1e-15);
}

#[test]
fn bad_inputs_are_errors() {
    let model = model(
        2,
        Scaler::identity(2),
        vec![vec![split(0, 0.0, 2), leaf(1), leaf(3)]],
    );
    let mut phi = [0.0; 2];
    assert_eq!(
        model.explain(&[1.0], &mut phi),
        Err(ExplainError::Score(ScoreError::Width {
            expected: 2,
            found: 1
        }))
    );
    assert!(matches!(
        model.explain(&[f64::NAN, 0.0], &mut phi),
        Err(ExplainError::Score(ScoreError::NotFinite { .. }))
    ));
    assert!(matches!(
        model.explain(&[0.0, f64::INFINITY], &mut phi),
        Err(ExplainError::Score(ScoreError::NotFinite { .. }))
    ));
    assert_eq!(
        model.explain(&[0.0, 0.0], &mut [0.0; 3]),
        Err(ExplainError::PhiWidth {
            expected: 2,
            found: 3
        })
    );
    // A bare forest checks the row covers every split feature.
    assert!(model.forest().explain_scaled(&[], &mut []).is_err());
}

/// More distinct features on one path than the quadrature tables cover: a typed error.
#[test]
fn too_many_path_features_is_an_error() {
    let m = model_format::MAX_PATH_FEATURES + 1;
    let mut nodes = Vec::new();
    for d in 0..m {
        let at = nodes.len() as u32;
        nodes.push(split(d as u16, 0.0, at + 2));
        nodes.push(leaf(1));
    }
    nodes.push(leaf(1));
    let model = model(m, Scaler::identity(m), vec![nodes]);
    let mut phi = vec![0.0; m];
    assert!(matches!(
        model.explain(&vec![0.0; m], &mut phi),
        Err(ExplainError::PathTooComplex { tree: 0, features }) if features == m
    ));
    assert!(model.score(&vec![0.0; m]).is_ok());
}

/// A single-leaf tree explains to all zeros.
#[test]
fn leaf_only_tree() {
    let model = model(1, Scaler::identity(1), vec![vec![leaf(5)]]);
    let mut phi = [1.0];
    let e = model.explain(&[3.0], &mut phi).unwrap();
    assert_eq!(phi, [0.0]);
    assert_eq!(e.expected_value, e.mean_path_length());
}

/// Against shap itself: `shap.TreeExplainer(IsolationForest(...)).shap_values(rows)` on a
/// scikit-learn forest (10 trees, ψ = 256, 5 features), from `tests/data/shap_isolation_forest.py`.
#[test]
fn matches_shap_on_a_scikit_learn_forest() {
    let text = include_str!("data/shap_isolation_forest.txt");
    let mut lines = text.lines();
    let mut next = || lines.next().expect("fixture is truncated");
    let n_trees: usize = next().parse().unwrap();
    let trees = (0..n_trees)
        .map(|_| {
            let n: usize = next().parse().unwrap();
            (0..n)
                .map(|_| {
                    let p: Vec<&str> = next().split(' ').collect();
                    match p[0] {
                        "L" => leaf(p[1].parse().unwrap()),
                        _ => split(
                            p[1].parse().unwrap(),
                            p[2].parse().unwrap(),
                            p[3].parse().unwrap(),
                        ),
                    }
                })
                .collect()
        })
        .collect();
    let model = model(5, Scaler::identity(5), trees);
    let n_rows: usize = next().parse().unwrap();
    let rows: Vec<(Vec<f64>, Vec<f64>)> = (0..n_rows)
        .map(|_| {
            let (x, phi) = next().split_once(" | ").unwrap();
            let parse = |s: &str| s.split(' ').map(|v| v.parse().unwrap()).collect();
            (parse(x), parse(phi))
        })
        .collect();
    let expected: f64 = next().strip_prefix("E ").unwrap().parse().unwrap();
    assert!((model.expected_value() - expected).abs() < 1e-12);
    let mut phi = [0.0; 5];
    for (x, want) in &rows {
        model.explain(x, &mut phi).unwrap();
        for i in 0..5 {
            assert!(
                (phi[i] - want[i]).abs() < 1e-12,
                "feature {i}: {} vs shap {}",
                phi[i],
                want[i]
            );
        }
    }
}
