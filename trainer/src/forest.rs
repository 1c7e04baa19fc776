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
    pub seed: u64,
}

impl Default for IsolationForestParams {
    /// scikit-learn's defaults (seed 0 in place of an unseeded generator).
    fn default() -> Self {
        IsolationForestParams {
            n_estimators: 100,
            max_samples: MaxSamples::Auto,
            contamination: Contamination::Auto,
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
    pub seed: u64,
}

impl IsolationForestParams {
    /// Resolves and checks the parameters for `n_rows` training rows.
    pub fn check(&self, n_rows: usize) -> Result<ValidParams, ParamError> {
        if self.n_estimators == 0 {
            return Err(ParamError::NoEstimators);
        }
        if n_rows == 0 {
            return Err(ParamError::NoRows);
        }
        let psi = match self.max_samples {
            MaxSamples::Auto => n_rows.min(256),
            MaxSamples::Count(n) if n >= 1 => n.min(n_rows),
            MaxSamples::Fraction(f) if f > 0.0 && f <= 1.0 => ((f * n_rows as f64) as usize).max(1),
            other => return Err(ParamError::MaxSamples(other)),
        };
        if let Contamination::Fraction(c) = self.contamination {
            if !(c > 0.0 && c <= 0.5) {
                return Err(ParamError::Contamination(c));
            }
        }
        let max_depth = (psi.max(2) as f64).log2().ceil() as u32;
        Ok(ValidParams {
            n_estimators: self.n_estimators,
            psi,
            max_depth,
            contamination: self.contamination,
            seed: self.seed,
        })
    }
}

impl ValidParams {
    /// Grows the trees on scaled, column-major `f32` data (`columns[feature][row]`).
    ///
    /// Tree `t` draws from its own ChaCha8 stream `t` of the seed, so the result is the same
    /// whatever the number of threads.
    pub fn grow_trees(&self, columns: &[Vec<f32>]) -> Vec<Tree> {
        let n_rows = columns.first().map_or(0, Vec::len);
        (0..self.n_estimators)
            .into_par_iter()
            .map(|t| {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(t as u64);
                let mut rows: Vec<u32> = index::sample(&mut rng, n_rows, self.psi)
                    .into_iter()
                    .map(|i| i as u32)
                    .collect();
                let mut grower = Grower {
                    columns,
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
        self.order.extend(0..self.columns.len());
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

/// numpy's default (linear) `percentile` of `values`, which it sorts; `q` in [0, 100].
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = q / 100.0 * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let t = pos - lo as f64;
    let (a, b) = (values[lo], values[hi]);
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
        let v = p.check(1000).unwrap();
        assert_eq!((v.psi, v.max_depth), (256, 8));
        assert_eq!(p.check(100).unwrap().psi, 100);
        assert_eq!(p.check(100).unwrap().max_depth, 7);
        let frac = IsolationForestParams {
            max_samples: MaxSamples::Fraction(0.5),
            ..p.clone()
        };
        assert_eq!(frac.check(1000).unwrap().psi, 500);
        assert!(
            IsolationForestParams {
                n_estimators: 0,
                ..p.clone()
            }
            .check(10)
            .is_err()
        );
        assert!(
            IsolationForestParams {
                contamination: Contamination::Fraction(0.7),
                ..p.clone()
            }
            .check(10)
            .is_err()
        );
        assert!(
            IsolationForestParams {
                max_samples: MaxSamples::Fraction(1.5),
                ..p.clone()
            }
            .check(10)
            .is_err()
        );
        assert!(p.check(0).is_err());
    }

    #[test]
    fn percentile_matches_numpy() {
        // numpy.percentile([1, 2, 3, 4], 10) == 1.3 ; ([5, 1, 3], 50) == 3
        assert!((percentile(&mut [4.0, 1.0, 3.0, 2.0], 10.0) - 1.3).abs() < 1e-15);
        assert_eq!(percentile(&mut [5.0, 1.0, 3.0], 50.0), 3.0);
        assert_eq!(percentile(&mut [2.0], 37.0), 2.0);
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
        .check(501)
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
