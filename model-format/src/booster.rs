//! The supervised model: gradient-boosted trees that learned what fraud looks like from labels,
//! stored beside the isolation forest (section `GBDT`, SPEC.md §4.7).
//!
//! Why beside and not instead: the forest finds what is *unusual* and needs no labels; the
//! boosted trees learn which unusual things are *fraud*, and take the forest's own risk score as
//! one of their inputs, so a pattern nobody has labelled yet still moves the probability.
//!
//! Inputs are the forest's scaled row (`f32`, exactly what the forest's trees compare) followed
//! by the forest's `risk` (`2^(-E[h]/c(ψ))`) as `f32`. Trees reuse the forest's node layout
//! (SPEC §4.4): a split sends `x` left when `x[feature] <= threshold`, a leaf's `samples` is the
//! number of training rows that reached it (the cover TreeSHAP weighs by), and each leaf
//! carries an `f64` value. The raw margin is `base + Σ leaf values` (tree order); the
//! calibrated log-odds are `slope · margin + intercept` (Platt scaling fitted on a later time
//! window than the trees), and `fraud_probability = 1 / (1 + e^(−log_odds))` with `libm`'s
//! `exp`, so trainer and edge agree to the bit.
//!
//! Explanations are exact path-dependent TreeSHAP values of the calibrated log-odds (the
//! margin's values times `slope`), computed by the same quadrature kernel as the forest's
//! ([`crate::explain`]).

use std::sync::OnceLock;

use crate::error::{ExplainError, InvalidModel, ScoreError};
use crate::explain::{ForestShap, TreeShap, ensemble_phi, too_complex};
use crate::forest::Node;

/// Most trees a supervised model may have.
pub const MAX_TREES: usize = 10_000;

/// Platt scaling of the raw margin: `log_odds = slope · margin + intercept`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    pub slope: f64,
    pub intercept: f64,
}

impl Calibration {
    /// No calibration: the margin is the log-odds.
    pub const IDENTITY: Calibration = Calibration {
        slope: 1.0,
        intercept: 0.0,
    };
}

/// Operating points on `fraud_probability`, chosen by the trainer from an alert budget: at or
/// above `block` a transaction is blocked, else at or above `review` it goes to review.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Thresholds {
    pub review: Option<f64>,
    pub block: Option<f64>,
}

/// What the thresholds say of one probability, before any rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Block,
    Review,
    Allow,
    /// Allowed although the stored thresholds say review: the review budget is spent
    /// ([`crate::budget::ReviewBudget::verdict`]; [`Thresholds::verdict`] never says it).
    OverBudget,
}

impl Thresholds {
    /// The verdict for `p`.
    pub fn verdict(&self, p: f64) -> Verdict {
        if self.block.is_some_and(|t| p >= t) {
            Verdict::Block
        } else if self.review.is_some_and(|t| p >= t) {
            Verdict::Review
        } else {
            Verdict::Allow
        }
    }
}

/// One boosted tree: the forest's node layout plus a value per leaf.
#[derive(Debug, Clone, PartialEq)]
pub struct BoostTree {
    /// Validated, pre-order (the forest's rules: `forest::validate`).
    nodes: Vec<Node>,
    /// Indexed by node; 0 at splits.
    values: Vec<f64>,
}

impl BoostTree {
    /// A tree from pre-order nodes (see [`Node`]) and one finite value per leaf, in pre-order.
    pub fn new(nodes: Vec<Node>, leaf_values: &[f64]) -> Result<Self, InvalidModel> {
        let leaves = nodes
            .iter()
            .filter(|n| matches!(n, Node::Leaf { .. }))
            .count();
        if leaves != leaf_values.len() {
            return Err(InvalidModel::Supervised(format!(
                "a tree has {leaves} leaves but {} leaf values",
                leaf_values.len()
            )));
        }
        if leaf_values.iter().any(|v| !v.is_finite()) {
            return Err(InvalidModel::Supervised(
                "a leaf value is not finite".into(),
            ));
        }
        let mut next = leaf_values.iter();
        let values = nodes
            .iter()
            .map(|n| match n {
                Node::Leaf { .. } => *next.next().unwrap_or(&0.0),
                Node::Split { .. } => 0.0,
            })
            .collect();
        crate::forest::validate(&nodes)
            .map_err(|problem| InvalidModel::Tree { tree: 0, problem })?;
        Ok(BoostTree { nodes, values })
    }

    /// The nodes in pre-order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The leaf values in pre-order.
    pub fn leaf_values(&self) -> impl Iterator<Item = f64> + '_ {
        self.nodes
            .iter()
            .zip(&self.values)
            .filter(|(n, _)| matches!(n, Node::Leaf { .. }))
            .map(|(_, v)| *v)
    }

    /// The value of the leaf `x` reaches.
    #[inline]
    fn value(&self, x: &[f32]) -> f64 {
        let nodes = &self.nodes;
        let mut i = 0;
        loop {
            match nodes[i] {
                Node::Split {
                    feature,
                    threshold,
                    right,
                } => {
                    i = if x[usize::from(feature)] <= threshold {
                        i + 1
                    } else {
                        right as usize
                    };
                }
                Node::Leaf { .. } => return self.values[i],
            }
        }
    }

    fn max_feature(&self) -> Option<u16> {
        self.nodes
            .iter()
            .filter_map(|n| match n {
                Node::Split { feature, .. } => Some(*feature),
                Node::Leaf { .. } => None,
            })
            .max()
    }
}

/// The boosted classifier of a [`crate::Model`] (see the module docs).
#[derive(Debug, Clone)]
pub struct Booster {
    trees: Vec<BoostTree>,
    base_margin: f64,
    calibration: Calibration,
    thresholds: Thresholds,
    n_inputs: usize,
    shap: OnceLock<BoosterShap>,
}

#[derive(Debug, Clone)]
struct BoosterShap {
    trees: Vec<TreeShap>,
    rule: ForestShap,
    /// `base + Σ root values`: the margin's expected value over the training rows.
    expected_margin: f64,
}

impl PartialEq for Booster {
    fn eq(&self, other: &Self) -> bool {
        self.trees == other.trees
            && self.base_margin.to_bits() == other.base_margin.to_bits()
            && self.calibration == other.calibration
            && self.thresholds == other.thresholds
            && self.n_inputs == other.n_inputs
    }
}

/// One row's supervised score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FraudScore {
    /// Calibrated log-odds of fraud.
    pub log_odds: f64,
    /// `1 / (1 + e^(−log_odds))`.
    pub probability: f64,
}

impl Booster {
    /// Checks and assembles a booster over `n_inputs` inputs (the model's features + 1).
    pub fn new(
        trees: Vec<BoostTree>,
        base_margin: f64,
        calibration: Calibration,
        thresholds: Thresholds,
        n_inputs: usize,
    ) -> Result<Self, InvalidModel> {
        let bad = |m: String| Err(InvalidModel::Supervised(m));
        if trees.is_empty() || trees.len() > MAX_TREES {
            return bad(format!(
                "{} trees; 1 to {MAX_TREES} are allowed",
                trees.len()
            ));
        }
        if !base_margin.is_finite() {
            return bad("the base margin is not finite".into());
        }
        if !(calibration.slope.is_finite()
            && calibration.slope > 0.0
            && calibration.intercept.is_finite())
        {
            return bad(format!(
                "calibration slope {} / intercept {}: need a finite slope > 0 and a finite intercept",
                calibration.slope, calibration.intercept
            ));
        }
        for (name, t) in [("review", thresholds.review), ("block", thresholds.block)] {
            if t.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                return bad(format!("the {name} threshold must be a probability"));
            }
        }
        if let Some(max) = trees.iter().filter_map(BoostTree::max_feature).max()
            && usize::from(max) >= n_inputs
        {
            return bad(format!(
                "a tree splits on input {max} but there are {n_inputs}"
            ));
        }
        Ok(Booster {
            trees,
            base_margin,
            calibration,
            thresholds,
            n_inputs,
            shap: OnceLock::new(),
        })
    }

    pub fn trees(&self) -> &[BoostTree] {
        &self.trees
    }

    pub fn base_margin(&self) -> f64 {
        self.base_margin
    }

    pub fn calibration(&self) -> Calibration {
        self.calibration
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// The same booster with other operating points.
    pub fn with_thresholds(mut self, thresholds: Thresholds) -> Result<Self, InvalidModel> {
        for t in [thresholds.review, thresholds.block].into_iter().flatten() {
            if !(0.0..=1.0).contains(&t) {
                return Err(InvalidModel::Supervised(
                    "a threshold must be a probability".into(),
                ));
            }
        }
        self.thresholds = thresholds;
        Ok(self)
    }

    /// The same booster with another calibration.
    pub fn with_calibration(self, calibration: Calibration) -> Result<Self, InvalidModel> {
        let n = self.n_inputs;
        Booster::new(
            self.trees,
            self.base_margin,
            calibration,
            self.thresholds,
            n,
        )
    }

    /// Inputs per row: the model's features and the forest's risk.
    pub fn n_inputs(&self) -> usize {
        self.n_inputs
    }

    /// Node count over all trees.
    pub fn node_count(&self) -> usize {
        self.trees.iter().map(|t| t.values.len()).sum()
    }

    /// The raw margin of an input row: `base + Σ leaf values`, in tree order.
    pub fn margin(&self, x: &[f32]) -> Result<f64, ScoreError> {
        self.check(x)?;
        let mut m = self.base_margin;
        for t in &self.trees {
            m += t.value(x);
        }
        Ok(m)
    }

    /// Calibrated log-odds and probability from a raw margin.
    pub fn calibrate(&self, margin: f64) -> FraudScore {
        let log_odds = self.calibration.slope * margin + self.calibration.intercept;
        FraudScore {
            log_odds,
            probability: sigmoid(log_odds),
        }
    }

    /// [`Booster::margin`] then [`Booster::calibrate`].
    pub fn score(&self, x: &[f32]) -> Result<FraudScore, ScoreError> {
        Ok(self.calibrate(self.margin(x)?))
    }

    /// Exact path-dependent TreeSHAP values of the calibrated log-odds into `phi` (one per
    /// input); returns the expected log-odds, so that `Σphi + expected = log_odds`.
    pub fn explain(&self, x: &[f32], phi: &mut [f64]) -> Result<f64, ExplainError> {
        self.check(x)?;
        if phi.len() != x.len() {
            return Err(ExplainError::PhiWidth {
                expected: x.len(),
                found: phi.len(),
            });
        }
        let shap = self.shap();
        if !shap.rule.supported() {
            return Err(too_complex(shap.trees.iter()));
        }
        phi.fill(0.0);
        ensemble_phi(&shap.rule, shap.trees.iter(), 0, x, phi);
        let slope = self.calibration.slope;
        for v in phi.iter_mut() {
            *v *= slope;
        }
        Ok(slope * shap.expected_margin + self.calibration.intercept)
    }

    /// The expected calibrated log-odds over the training rows: the base of [`Booster::explain`].
    pub fn expected_log_odds(&self) -> f64 {
        self.calibration.slope * self.shap().expected_margin + self.calibration.intercept
    }

    fn check(&self, x: &[f32]) -> Result<(), ScoreError> {
        if x.len() != self.n_inputs {
            return Err(ScoreError::Width {
                expected: self.n_inputs,
                found: x.len(),
            });
        }
        Ok(())
    }

    fn shap(&self) -> &BoosterShap {
        self.shap.get_or_init(|| {
            let trees: Vec<TreeShap> = self
                .trees
                .iter()
                .map(|t| TreeShap::new(&t.nodes, &t.values))
                .collect();
            let refs: Vec<&TreeShap> = trees.iter().collect();
            let max_nodes = self.trees.iter().map(|t| t.values.len()).max().unwrap_or(0);
            let rule = ForestShap::of_trees(&refs, max_nodes);
            let mut expected_margin = self.base_margin;
            for t in &trees {
                expected_margin += t.root_value();
            }
            BoosterShap {
                trees,
                rule,
                expected_margin,
            }
        })
    }

    /// Builds the explanation tables now (the first explanation otherwise does).
    pub fn prepare_explanations(&self) -> bool {
        self.shap().rule.supported()
    }
}

/// The logistic function with `libm`'s `exp`: the same bits on every platform.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + libm::exp(-z))
    } else {
        let e = libm::exp(z);
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(feature: u16, threshold: f32, right: u32) -> Node {
        Node::Split {
            feature,
            threshold,
            right,
        }
    }

    fn leaf(samples: u32) -> Node {
        Node::Leaf { samples }
    }

    /// A small booster with a repeated feature on a path and three inputs.
    fn booster() -> Booster {
        let t1 = BoostTree::new(
            vec![
                split(0, 0.5, 4),
                split(1, -1.0, 3),
                leaf(10),
                leaf(30),
                split(0, 2.0, 6),
                leaf(25),
                leaf(5),
            ],
            &[-1.0, 0.25, 0.5, 3.0],
        )
        .unwrap();
        let t2 = BoostTree::new(vec![split(2, 0.1, 2), leaf(60), leaf(10)], &[-0.2, 1.5]).unwrap();
        Booster::new(
            vec![t1, t2],
            -2.0,
            Calibration {
                slope: 0.8,
                intercept: -0.3,
            },
            Thresholds {
                review: Some(0.3),
                block: Some(0.9),
            },
            3,
        )
        .unwrap()
    }

    /// The game of path-dependent TreeSHAP for one tree, evaluated directly.
    fn tree_value(nodes: &[Node], values: &[f64], x: &[f32], known: &[bool], i: usize) -> f64 {
        let cover = |i: usize| -> f64 {
            fn c(nodes: &[Node], i: usize) -> f64 {
                match nodes[i] {
                    Node::Leaf { samples } => f64::from(samples),
                    Node::Split { right, .. } => c(nodes, i + 1) + c(nodes, right as usize),
                }
            }
            c(nodes, i)
        };
        match nodes[i] {
            Node::Leaf { .. } => values[i],
            Node::Split {
                feature,
                threshold,
                right,
            } => {
                let f = usize::from(feature);
                if known[f] {
                    let next = if x[f] <= threshold {
                        i + 1
                    } else {
                        right as usize
                    };
                    tree_value(nodes, values, x, known, next)
                } else {
                    let (l, r) = (cover(i + 1), cover(right as usize));
                    (l * tree_value(nodes, values, x, known, i + 1)
                        + r * tree_value(nodes, values, x, known, right as usize))
                        / (l + r)
                }
            }
        }
    }

    #[test]
    fn explanation_is_the_brute_force_shapley_value_and_adds_up() {
        let b = booster();
        let factorial = |n: usize| (1..=n).product::<usize>() as f64;
        for x in [
            [0.0f32, -2.0, 0.0],
            [1.0, 0.0, 1.0],
            [3.0, -1.0, 0.1],
            [0.5, 5.0, -4.0],
        ] {
            let mut phi = [0.0; 3];
            let expected = b.explain(&x, &mut phi).unwrap();
            let score = b.score(&x).unwrap();
            let sum: f64 = phi.iter().sum::<f64>() + expected;
            assert!((sum - score.log_odds).abs() < 1e-12, "{sum} vs {score:?}");
            // Brute force over every coalition.
            let v = |s: u32| -> f64 {
                let known = [s & 1 != 0, s & 2 != 0, s & 4 != 0];
                let mut m = b.base_margin;
                for t in &b.trees {
                    m += tree_value(&t.nodes, &t.values, &x, &known, 0);
                }
                b.calibration.slope * m + b.calibration.intercept
            };
            for (i, got) in phi.iter().enumerate() {
                let mut want = 0.0;
                for s in 0..8u32 {
                    if s & (1 << i) != 0 {
                        continue;
                    }
                    let k = s.count_ones() as usize;
                    let w = factorial(k) * factorial(3 - k - 1) / factorial(3);
                    want += w * (v(s | (1 << i)) - v(s));
                }
                assert!((got - want).abs() < 1e-12, "φ{i} {got} vs {want}");
            }
            assert!((expected - v(0)).abs() < 1e-12);
        }
    }

    #[test]
    fn score_is_base_plus_leaves_then_platt() {
        let b = booster();
        let s = b.score(&[3.0, 0.0, 0.0]).unwrap();
        let margin = -2.0 + 3.0 - 0.2;
        assert_eq!(s.log_odds, 0.8 * margin - 0.3);
        assert_eq!(s.probability, sigmoid(0.8 * margin - 0.3));
        assert_eq!(b.thresholds().verdict(0.95), Verdict::Block);
        assert_eq!(b.thresholds().verdict(0.5), Verdict::Review);
        assert_eq!(b.thresholds().verdict(0.1), Verdict::Allow);
        assert!(matches!(b.score(&[0.0; 2]), Err(ScoreError::Width { .. })));
    }

    #[test]
    fn invalid_parts_are_refused() {
        assert!(BoostTree::new(vec![leaf(1)], &[]).is_err());
        assert!(BoostTree::new(vec![leaf(1)], &[f64::NAN]).is_err());
        let t = || BoostTree::new(vec![split(3, 0.0, 2), leaf(1), leaf(1)], &[0.0, 1.0]).unwrap();
        let ok = Calibration::IDENTITY;
        assert!(Booster::new(vec![t()], 0.0, ok, Thresholds::default(), 3).is_err());
        assert!(Booster::new(vec![t()], 0.0, ok, Thresholds::default(), 4).is_ok());
        let bad_slope = Calibration {
            slope: 0.0,
            intercept: 0.0,
        };
        assert!(Booster::new(vec![t()], 0.0, bad_slope, Thresholds::default(), 4).is_err());
        let bad_threshold = Thresholds {
            review: Some(1.5),
            block: None,
        };
        assert!(Booster::new(vec![t()], 0.0, ok, bad_threshold, 4).is_err());
        assert!(Booster::new(vec![], 0.0, ok, Thresholds::default(), 4).is_err());
    }

    #[test]
    fn sigmoid_is_stable_at_both_ends() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-800.0) >= 0.0 && sigmoid(-800.0) < 1e-300);
        assert_eq!(sigmoid(800.0), 1.0);
        assert!((sigmoid(2.0) + sigmoid(-2.0) - 1.0).abs() < 1e-15);
    }
}
