//! Fitting an isolation forest, with scikit-learn's parameters and tree-growing rules.
//!
//! Unfitted parameters ([`IsolationForestParams`]) are validated against the data before any
//! work starts; fitting yields model-format [`Tree`]s, so the trainer never holds a second
//! representation of a tree.

use model_format::{Node, Tree};
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::fmt;

/// How many rows each tree is grown on (ψ), as scikit-learn's `max_samples`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxSamples {
    /// `min(256, n_rows)`.
    Auto,
    /// An absolute count, capped at `n_rows`.
    Count(usize),
    /// A fraction of `n_rows` in (0, 1].
    Fraction(f64),
}

impl std::str::FromStr for MaxSamples {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(MaxSamples::Auto);
        }
        if let Ok(n) = s.parse::<usize>() {
            return Ok(MaxSamples::Count(n));
        }
        s.parse::<f64>()
            .map(MaxSamples::Fraction)
            .map_err(|_| format!("expected 'auto', a row count or a fraction, got {s:?}"))
    }
}

/// How many features each tree may split on, as scikit-learn's `max_features`: each tree draws
/// its own subset without replacement and only ever splits on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxFeatures {
    /// An absolute count in `1..=n_features`.
    Count(usize),
    /// A fraction of the features in (0, 1]: `max(1, floor(f * n_features))`.
    Fraction(f64),
}

impl Default for MaxFeatures {
    /// Every feature, scikit-learn's `max_features=1.0`.
    fn default() -> Self {
        MaxFeatures::Fraction(1.0)
    }
}

impl std::str::FromStr for MaxFeatures {
    type Err = String;
    /// `"3"` is a count, `"0.5"` or `"1.0"` a fraction, as Python's int/float distinction.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<usize>() {
            return Ok(MaxFeatures::Count(n));
        }
        s.parse::<f64>()
            .map(MaxFeatures::Fraction)
            .map_err(|_| format!("expected a feature count or a fraction, got {s:?}"))
    }
}

impl fmt::Display for MaxFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxFeatures::Count(n) => write!(f, "{n}"),
            MaxFeatures::Fraction(x) => write!(f, "{x:?}"),
        }
    }
}

/// Share of anomalies expected in the training data, as scikit-learn's `contamination`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contamination {
    /// Decision offset -0.5, as in the original paper.
    Auto,
    /// Offset at this quantile of the training scores, in (0, 0.5].
    Fraction(f64),
}

impl std::str::FromStr for Contamination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Contamination::Auto);
        }
        match s.parse::<f64>() {
            Ok(c) if c > 0.0 && c <= 0.5 => Ok(Contamination::Fraction(c)),
            _ => Err(format!(
                "expected 'auto' or a fraction in (0, 0.5], got {s:?}"
            )),
        }
    }
}

impl fmt::Display for Contamination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contamination::Auto => f.write_str("auto"),
            Contamination::Fraction(c) => write!(f, "{c}"),
        }
    }
}

/// Parameters of an isolation forest that has not been fitted yet.
#[derive(Debug, Clone, PartialEq)]
pub struct IsolationForestParams {
    pub n_estimators: usize,
    pub max_samples: MaxSamples,
    pub contamination: Contamination,
    /// Features each tree may split on (drawn per tree, without replacement).
    pub max_features: MaxFeatures,
    /// Draw each tree's ψ rows with replacement instead of without.
    pub bootstrap: bool,
    pub seed: u64,
}

impl Default for IsolationForestParams {
    /// scikit-learn's defaults (seed 0 in place of an unseeded generator).
    fn default() -> Self {
        IsolationForestParams {
            n_estimators: 100,
            max_samples: MaxSamples::Auto,
            contamination: Contamination::Auto,
            max_features: MaxFeatures::default(),
            bootstrap: false,
            seed: 0,
        }
    }
}

/// Why parameters do not fit the data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    #[error("n_estimators must be at least 1")]
    NoEstimators,
    #[error("the training data has no rows")]
    NoRows,
    #[error("max_samples must be 'auto', a count >= 1 or a fraction in (0, 1], got {0:?}")]
    MaxSamples(MaxSamples),
    #[error("contamination must be 'auto' or a fraction in (0, 0.5], got {0}")]
    Contamination(f64),
    #[error("the training data has no feature columns")]
    NoFeatures,
    #[error(
        "max_features must be a count in 1..={n_features} or a fraction in (0, 1], got {value}"
    )]
    MaxFeatures {
        value: MaxFeatures,
        n_features: usize,
    },
    #[error("at most {max} training rows are supported, got {rows}", max = u32::MAX)]
    TooManyRows { rows: usize },
    #[error("the velocity tail must be a share in (0, 0.5], got {0}")]
    VelocityTail(f64),
    #[error("the velocity weight must be 1 to {max}, got {0}", max = model_format::MAX_TREE_GROUP_WEIGHT)]
    VelocityWeight(u32),
}

/// Parameters checked against a data size: ψ resolved and the tree depth limit derived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidParams {
    pub n_estimators: usize,
    /// ψ: rows drawn (without replacement) for each tree.
    pub psi: usize,
    /// ceil(log2(ψ)), scikit-learn's depth limit.
    pub max_depth: u32,
    pub contamination: Contamination,
    /// Features per tree, in `1..=n_features`; all of them (the default) draws no subset.
    pub max_features: usize,
    pub n_features: usize,
    pub bootstrap: bool,
    pub seed: u64,
}

impl IsolationForestParams {
    /// Resolves and checks the parameters for `n_rows` training rows of `n_features` features.
    pub fn check(&self, n_rows: usize, n_features: usize) -> Result<ValidParams, ParamError> {
        if self.n_estimators == 0 {
            return Err(ParamError::NoEstimators);
        }
        if n_rows == 0 {
            return Err(ParamError::NoRows);
        }
        // Row indices are stored as u32 while growing trees.
        if u32::try_from(n_rows).is_err() {
            return Err(ParamError::TooManyRows { rows: n_rows });
        }
        if n_features == 0 {
            return Err(ParamError::NoFeatures);
        }
        let max_features = match self.max_features {
            MaxFeatures::Count(k) if (1..=n_features).contains(&k) => k,
            MaxFeatures::Fraction(f) if f > 0.0 && f <= 1.0 => {
                ((f * n_features as f64) as usize).max(1)
            }
            value => return Err(ParamError::MaxFeatures { value, n_features }),
        };
        let psi = match self.max_samples {
            MaxSamples::Auto => n_rows.min(256),
            MaxSamples::Count(n) if n >= 1 => n.min(n_rows),
            MaxSamples::Fraction(f) if f > 0.0 && f <= 1.0 => ((f * n_rows as f64) as usize).max(1),
            other => return Err(ParamError::MaxSamples(other)),
        };
        if let Contamination::Fraction(c) = self.contamination
            && !(c > 0.0 && c <= 0.5)
        {
            return Err(ParamError::Contamination(c));
        }
        let max_depth = (psi.max(2) as f64).log2().ceil() as u32;
        Ok(ValidParams {
            n_estimators: self.n_estimators,
            psi,
            max_depth,
            contamination: self.contamination,
            max_features,
            n_features,
            bootstrap: self.bootstrap,
            seed: self.seed,
        })
    }
}

impl ValidParams {
    /// Grows the trees on scaled, column-major `f32` data (`columns[feature][row]`).
    ///
    /// Tree `t` draws from its own ChaCha8 stream `t` of the seed, so the result is the same
    /// whatever the number of threads. Each tree draws, in this order: its ψ rows (with
    /// replacement if `bootstrap`), its feature subset (only when `max_features` is below the
    /// feature count, so the default draws exactly what it did before these options existed),
    /// then its split features and thresholds.
    ///
    /// `columns` must hold the `n_features` columns the parameters were checked for.
    pub fn grow_trees(&self, columns: &[Vec<f32>]) -> Vec<Tree> {
        self.grow(columns, None, 0)
    }

    /// Grows `n_estimators` trees that split only on `features` (ascending column indices;
    /// `max_features` draws within them), tree `t` on stream `first_stream + t` of the seed: one
    /// group of a forest grown in feature groups ([`model_format::TreeGroups`]).
    pub fn grow_trees_on(
        &self,
        columns: &[Vec<f32>],
        features: &[usize],
        first_stream: u64,
    ) -> Vec<Tree> {
        self.grow(columns, Some(features), first_stream)
    }

    fn grow(&self, columns: &[Vec<f32>], only: Option<&[usize]>, first_stream: u64) -> Vec<Tree> {
        debug_assert_eq!(columns.len(), self.n_features);
        let n_rows = columns.first().map_or(0, Vec::len);
        let pool: Vec<usize> = only.map_or_else(|| (0..columns.len()).collect(), <[usize]>::to_vec);
        (0..self.n_estimators)
            .into_par_iter()
            .map(|t| {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(first_stream + t as u64);
                let mut rows: Vec<u32> = if self.bootstrap {
                    (0..self.psi)
                        .map(|_| rng.random_range(0..n_rows) as u32)
                        .collect()
                } else {
                    index::sample(&mut rng, n_rows, self.psi)
                        .into_iter()
                        .map(|i| i as u32)
                        .collect()
                };
                let features: Vec<usize> = if self.max_features < pool.len() {
                    let mut subset: Vec<usize> =
                        index::sample(&mut rng, pool.len(), self.max_features)
                            .into_iter()
                            .map(|i| pool[i])
                            .collect();
                    subset.sort_unstable();
                    subset
                } else {
                    pool.clone()
                };
                let mut grower = Grower {
                    columns,
                    features: &features,
                    rng,
                    nodes: Vec::new(),
                    order: Vec::new(),
                    max_depth: self.max_depth,
                };
                grower.grow(&mut rows, 0);
                Tree::new(grower.nodes).expect("grown trees are well-formed by construction")
            })
            .collect()
    }
}

struct Grower<'a> {
    columns: &'a [Vec<f32>],
    /// The tree's feature subset, ascending.
    features: &'a [usize],
    rng: ChaCha8Rng,
    nodes: Vec<Node>,
    order: Vec<usize>,
    max_depth: u32,
}

impl Grower<'_> {
    /// Appends the subtree for `rows` in pre-order.
    fn grow(&mut self, rows: &mut [u32], depth: u32) {
        let leaf = Node::Leaf {
            samples: rows.len() as u32,
        };
        if depth >= self.max_depth || rows.len() < 2 {
            self.nodes.push(leaf);
            return;
        }
        let Some((feature, lo, hi)) = self.pick_feature(rows) else {
            // Every feature is constant here: the rows cannot be told apart.
            self.nodes.push(leaf);
            return;
        };
        let threshold = round_down_to_f32(self.rng.random_range(f64::from(lo)..f64::from(hi)));
        debug_assert!(lo <= threshold && threshold < hi);
        let column = &self.columns[feature];
        let split = partition(rows, |&r| column[r as usize] <= threshold);
        let me = self.nodes.len();
        self.nodes.push(Node::Split {
            feature: feature as u16,
            threshold,
            right: 0,
        });
        let (left, right) = rows.split_at_mut(split);
        self.grow(left, depth + 1);
        let right_index = self.nodes.len() as u32;
        if let Node::Split { right, .. } = &mut self.nodes[me] {
            *right = right_index;
        }
        self.grow(right, depth + 1);
    }

    /// Draws features uniformly without replacement until one is not constant on `rows`, as
    /// scikit-learn's random splitter skips constant features; returns it with its range.
    fn pick_feature(&mut self, rows: &[u32]) -> Option<(usize, f32, f32)> {
        self.order.clear();
        self.order.extend_from_slice(self.features);
        while !self.order.is_empty() {
            let j = self.rng.random_range(0..self.order.len());
            let feature = self.order.swap_remove(j);
            let column = &self.columns[feature];
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &r in rows {
                let v = column[r as usize];
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if lo < hi {
                return Some((feature, lo, hi));
            }
        }
        None
    }
}

/// Largest `f32` not above `t`: for any `f32` x, `x <= t` exactly when `x <= result`, so an
/// `f32` threshold splits `f32` data exactly like the `f64` draw would.
pub(crate) fn round_down_to_f32(t: f64) -> f32 {
    let f = t as f32;
    if f64::from(f) > t { f.next_down() } else { f }
}

/// Moves the elements satisfying `pred` to the front, returns how many there are.
fn partition<T>(items: &mut [T], pred: impl Fn(&T) -> bool) -> usize {
    let mut k = 0;
    for i in 0..items.len() {
        if pred(&items[i]) {
            items.swap(i, k);
            k += 1;
        }
    }
    k
}

/// numpy's default (linear) `percentile` of `values`, which it reorders; `q` in [0, 100].
///
/// Selects the two order statistics it needs instead of sorting: O(n), same result.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = q / 100.0 * (n - 1) as f64;
    let lo = (pos.floor() as usize).min(n - 1);
    let t = pos - lo as f64;
    let (_, &mut a, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    // The next order statistic is the smallest value above position `lo` (or `a` at the end).
    let b = above.iter().copied().min_by(f64::total_cmp).unwrap_or(a);
    // numpy's _lerp: accurate at both ends of the interval.
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_follow_scikit_learn() {
        let p = IsolationForestParams::default();
        let v = p.check(1000, 2).unwrap();
        assert_eq!((v.psi, v.max_depth), (256, 8));
        assert_eq!(p.check(100, 2).unwrap().psi, 100);
        assert_eq!(p.check(100, 2).unwrap().max_depth, 7);
        let frac = IsolationForestParams {
            max_samples: MaxSamples::Fraction(0.5),
            ..p.clone()
        };
        assert_eq!(frac.check(1000, 2).unwrap().psi, 500);
        assert!(
            IsolationForestParams {
                n_estimators: 0,
                ..p.clone()
            }
            .check(10, 2)
            .is_err()
        );
        assert!(
            IsolationForestParams {
                contamination: Contamination::Fraction(0.7),
                ..p.clone()
            }
            .check(10, 2)
            .is_err()
        );
        assert!(
            IsolationForestParams {
                max_samples: MaxSamples::Fraction(1.5),
                ..p.clone()
            }
            .check(10, 2)
            .is_err()
        );
        assert!(p.check(0, 2).is_err());
    }

    #[test]
    fn percentile_matches_numpy() {
        // numpy.percentile([1, 2, 3, 4], 10) == 1.3 ; ([5, 1, 3], 50) == 3
        assert!((percentile(&mut [4.0, 1.0, 3.0, 2.0], 10.0) - 1.3).abs() < 1e-15);
        assert_eq!(percentile(&mut [5.0, 1.0, 3.0], 50.0), 3.0);
        assert_eq!(percentile(&mut [2.0], 37.0), 2.0);
    }

    #[test]
    fn percentile_agrees_with_sorting() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for n in [1usize, 2, 3, 10, 1001] {
            let values: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            for q in [0.0, 10.0, 37.5, 50.0, 99.9, 100.0] {
                let pos = q / 100.0 * (n - 1) as f64;
                let lo = pos.floor() as usize;
                let (a, b) = (sorted[lo], sorted[(lo + 1).min(n - 1)]);
                let t = pos - lo as f64;
                let want = if t >= 0.5 {
                    b - (b - a) * (1.0 - t)
                } else {
                    a + (b - a) * t
                };
                assert_eq!(percentile(&mut values.clone(), q), want, "n={n} q={q}");
            }
        }
    }

    #[test]
    fn max_features_and_bootstrap_are_validated() {
        let p = IsolationForestParams::default();
        // Default: every feature, no subset drawn.
        let v = p.check(100, 5).unwrap();
        assert_eq!((v.max_features, v.bootstrap), (5, false));
        let with = |m| IsolationForestParams {
            max_features: m,
            ..p.clone()
        };
        assert_eq!(
            with(MaxFeatures::Count(3))
                .check(100, 5)
                .unwrap()
                .max_features,
            3
        );
        // scikit-learn: max(1, int(f * n_features)).
        assert_eq!(
            with(MaxFeatures::Fraction(0.5))
                .check(100, 5)
                .unwrap()
                .max_features,
            2
        );
        assert_eq!(
            with(MaxFeatures::Fraction(0.01))
                .check(100, 5)
                .unwrap()
                .max_features,
            1
        );
        for bad in [
            MaxFeatures::Count(0),
            MaxFeatures::Count(6),
            MaxFeatures::Fraction(0.0),
            MaxFeatures::Fraction(1.5),
            MaxFeatures::Fraction(f64::NAN),
        ] {
            match with(bad).check(100, 5) {
                Err(ParamError::MaxFeatures { n_features: 5, .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(p.check(100, 0), Err(ParamError::NoFeatures));
        assert_eq!("3".parse::<MaxFeatures>(), Ok(MaxFeatures::Count(3)));
        assert_eq!("1.0".parse::<MaxFeatures>(), Ok(MaxFeatures::Fraction(1.0)));
        assert!("many".parse::<MaxFeatures>().is_err());
    }

    /// Columns where every feature varies, plus one outlier row.
    fn three_columns(n: usize) -> Vec<Vec<f32>> {
        (0..3)
            .map(|f| {
                (0..n)
                    .map(|i| ((i * (f + 3) * 7919) % 101) as f32 / 10.0 + f as f32)
                    .collect()
            })
            .collect()
    }

    fn split_features(tree: &Tree) -> std::collections::BTreeSet<u16> {
        tree.nodes()
            .iter()
            .filter_map(|n| match n {
                Node::Split { feature, .. } => Some(*feature),
                Node::Leaf { .. } => None,
            })
            .collect()
    }

    #[test]
    fn trees_split_only_on_their_feature_subset() {
        let cols = three_columns(2000);
        let v = IsolationForestParams {
            max_features: MaxFeatures::Count(1),
            seed: 11,
            ..Default::default()
        }
        .check(2000, 3)
        .unwrap();
        let trees = v.grow_trees(&cols);
        let mut used = std::collections::BTreeSet::new();
        for t in &trees {
            let f = split_features(t);
            assert_eq!(f.len(), 1, "a max_features=1 tree split on {f:?}");
            used.extend(f);
        }
        // Different trees drew different subsets.
        assert_eq!(used.len(), 3);
        let two = ValidParams {
            max_features: 2,
            ..v
        }
        .grow_trees(&cols);
        assert!(two.iter().all(|t| split_features(t).len() <= 2));
        assert!(two.iter().any(|t| split_features(t).len() == 2));
        // With every feature allowed, trees use all three.
        let all = ValidParams {
            max_features: 3,
            ..v
        }
        .grow_trees(&cols);
        assert!(all.iter().any(|t| split_features(t).len() == 3));
    }

    #[test]
    fn bootstrap_draws_rows_with_replacement() {
        // ψ = all 300 rows. Without replacement every tree holds the lone outlier (1e6 where
        // everything else is below 20), so nearly every tree draws a threshold above 1e4;
        // a bootstrap of 300 misses a given row with probability (299/300)^300 ≈ 0.37, and a
        // tree that missed it never splits above 1e4.
        let mut cols = three_columns(300);
        for c in &mut cols {
            c[0] = 1e6;
        }
        let base = IsolationForestParams {
            max_samples: MaxSamples::Fraction(1.0),
            seed: 5,
            ..Default::default()
        };
        let saw_outlier = |trees: &[Tree]| {
            trees
                .iter()
                .filter(|t| {
                    t.nodes()
                        .iter()
                        .any(|n| matches!(n, Node::Split { threshold, .. } if *threshold > 1e4))
                })
                .count()
        };
        let plain = base.check(300, 3).unwrap().grow_trees(&cols);
        let boot = IsolationForestParams {
            bootstrap: true,
            ..base.clone()
        }
        .check(300, 3)
        .unwrap()
        .grow_trees(&cols);
        assert!(saw_outlier(&plain) >= 95, "{}", saw_outlier(&plain));
        let n = saw_outlier(&boot);
        assert!(
            (40..=85).contains(&n),
            "{n} of 100 bootstrap trees saw the outlier"
        );
        // Duplicated rows still count: leaves hold ψ samples in total.
        for t in &boot {
            let total: u32 = t
                .nodes()
                .iter()
                .map(|n| match n {
                    Node::Leaf { samples } => *samples,
                    Node::Split { .. } => 0,
                })
                .sum();
            assert_eq!(total, 300);
        }
    }

    #[test]
    fn trees_do_not_depend_on_the_thread_count() {
        let cols = three_columns(5000);
        for (max_features, bootstrap) in [(3, false), (2, true), (1, false)] {
            let v = IsolationForestParams {
                max_features: MaxFeatures::Count(max_features),
                bootstrap,
                seed: 99,
                ..Default::default()
            }
            .check(5000, 3)
            .unwrap();
            let grow = |threads| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| v.grow_trees(&cols))
            };
            assert_eq!(grow(1), grow(2));
            assert_eq!(grow(1), grow(4));
        }
    }

    #[test]
    fn round_down_is_exact() {
        for t in [0.1f64, -0.1, 1.0, 1e-40, 3.4e38, -7.3] {
            let r = round_down_to_f32(t);
            assert!(f64::from(r) <= t);
            assert!(f64::from(r.next_up()) > t);
        }
    }

    #[test]
    fn trees_isolate_an_outlier_and_are_deterministic() {
        let mut xs: Vec<f32> = (0..500).map(|i| (i % 50) as f32 / 50.0).collect();
        xs.push(100.0);
        let ys: Vec<f32> = (0..501).map(|i| ((i * 7) % 31) as f32).collect();
        let cols = vec![xs, ys];
        let v = IsolationForestParams {
            seed: 7,
            ..Default::default()
        }
        .check(501, 2)
        .unwrap();
        let a = v.grow_trees(&cols);
        let b = v.grow_trees(&cols);
        assert_eq!(a, b);
        let other = ValidParams { seed: 8, ..v }.grow_trees(&cols);
        assert_ne!(a, other);
        // Leaf counts add up to ψ in every tree.
        for t in &a {
            let total: u32 = t
                .nodes()
                .iter()
                .map(|n| {
                    if let Node::Leaf { samples } = n {
                        *samples
                    } else {
                        0
                    }
                })
                .sum();
            assert_eq!(total, 256);
        }
    }
}
