//! Isolation trees and forest scoring, following scikit-learn's `IsolationForest`.

use crate::Score;
use crate::error::{ExplainError, InvalidModel, ScoreError, TreeProblem};
use crate::explain::{ForestShap, TreeShap};
use std::sync::OnceLock;

/// Euler–Mascheroni constant, as `numpy.euler_gamma`.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// `c(n)`: the average path length of an unsuccessful search in a binary search tree of `n`
/// points — scikit-learn's `_average_path_length`: 0 for n ≤ 1, 1 for n = 2, otherwise
/// `2(ln(n-1) + γ) - 2(n-1)/n`.
pub fn average_path_length(n: u32) -> f64 {
    // Leaves mostly hold few samples: a table of the common counts spares decoding one
    // logarithm per leaf. Same function, so the same bits as computing directly.
    const TABLE: usize = 512;
    static SMALL: OnceLock<[f64; TABLE]> = OnceLock::new();
    match usize::try_from(n) {
        Ok(i) if i < TABLE => SMALL.get_or_init(|| std::array::from_fn(|i| c_direct(i as u32)))[i],
        _ => c_direct(n),
    }
}

fn c_direct(n: u32) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = f64::from(n);
            2.0 * (libm::log(n - 1.0) + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// Validation work list: holds at most depth + 1 entries, so a fixed array covers every
/// realistic tree without allocating; a Vec takes over beyond that.
struct Stack {
    fixed: [(usize, usize, u32); 64],
    len: usize,
    spill: Vec<(usize, usize, u32)>,
}

impl Default for Stack {
    fn default() -> Self {
        Stack {
            fixed: [(0, 0, 0); 64],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl Stack {
    fn push(&mut self, entry: (usize, usize, u32)) {
        if self.len < self.fixed.len() {
            self.fixed[self.len] = entry;
        } else {
            self.spill.push(entry);
        }
        self.len += 1;
    }

    fn pop(&mut self) -> Option<(usize, usize, u32)> {
        self.len = self.len.checked_sub(1)?;
        if self.len < self.fixed.len() {
            Some(self.fixed[self.len])
        } else {
            self.spill.pop()
        }
    }
}

/// One node of a tree stored in pre-order: a split's left child is the next node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Node {
    /// Rows with `scaled[feature] <= threshold` go to the left child (index + 1), the rest to
    /// `right`.
    Split {
        feature: u16,
        threshold: f32,
        right: u32,
    },
    /// A leaf and the number of training samples that reached it.
    Leaf { samples: u32 },
}

/// One validated isolation tree.
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
    /// For each leaf, the path length it contributes: depth + c(samples). Derived from `nodes`
    /// at construction so scoring does no logarithms.
    path_length: Vec<f64>,
    /// Covers and cover ratios for explanations, derived from `nodes` on first use: callers
    /// that only score (most requests, `trainer score`) never pay for them at load.
    shap: OnceLock<TreeShap>,
}

/// Trees are equal when their nodes are: everything else is derived from them.
impl PartialEq for Tree {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
    }
}

impl Tree {
    /// Validates that `nodes` form one binary tree in pre-order (every node reached exactly
    /// once, every child index in range) and precomputes each leaf's path length.
    pub fn new(nodes: Vec<Node>) -> Result<Self, TreeProblem> {
        if nodes.is_empty() {
            return Err(TreeProblem::Empty);
        }
        let mut path_length = vec![0.0; nodes.len()];
        // Each entry is a subtree that must occupy exactly nodes[start..end].
        let mut pending = Stack::default();
        pending.push((0, nodes.len(), 0));
        while let Some((start, end, depth)) = pending.pop() {
            match nodes[start] {
                Node::Leaf { samples } => {
                    if end != start + 1 {
                        return Err(TreeProblem::Shape { node: start + 1 });
                    }
                    if samples == 0 {
                        return Err(TreeProblem::EmptyLeaf { node: start });
                    }
                    // Same expression as scikit-learn: (depth + 1) + c(n) - 1.
                    path_length[start] =
                        (f64::from(depth) + 1.0 + average_path_length(samples)) - 1.0;
                }
                Node::Split {
                    threshold, right, ..
                } => {
                    if threshold.is_nan() {
                        return Err(TreeProblem::NanThreshold { node: start });
                    }
                    let r = right as usize;
                    if r <= start + 1 || r >= end {
                        return Err(TreeProblem::BadChild { node: start, right });
                    }
                    pending.push((r, end, depth + 1));
                    pending.push((start + 1, r, depth + 1));
                }
            }
        }
        Ok(Tree {
            nodes,
            path_length,
            shap: OnceLock::new(),
        })
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub(crate) fn shap(&self) -> &TreeShap {
        self.shap
            .get_or_init(|| TreeShap::new(&self.nodes, &self.path_length))
    }

    /// The tree's expected path length over its training samples: the cover-weighted mean of
    /// its leaves' path lengths, `v(∅)` of the explanation game.
    pub fn expected_path_length(&self) -> f64 {
        self.shap().root_value()
    }

    /// Path length of `x` (scaled, f32) through this tree: depth of its leaf + c(leaf samples).
    #[inline]
    fn path_length(&self, x: &[f32]) -> f64 {
        let mut i = 0;
        loop {
            match self.nodes[i] {
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
                Node::Leaf { .. } => return self.path_length[i],
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

/// An isolation forest: trees, the subsample size ψ they were grown on, and the decision offset.
#[derive(Debug, Clone)]
pub struct Forest {
    trees: Vec<Tree>,
    max_samples: u32,
    offset: f64,
    /// n_trees · c(ψ), the normaliser of the mean path length.
    denominator: f64,
    /// Highest feature index any split reads, if any tree splits at all.
    max_feature: Option<u16>,
    /// Quadrature rule and expected value for explanations, derived from the trees on first use.
    shap: OnceLock<ForestShap>,
}

/// Forests are equal when their stored parts are: the rest is derived from them.
impl PartialEq for Forest {
    fn eq(&self, other: &Self) -> bool {
        self.trees == other.trees
            && self.max_samples == other.max_samples
            && self.offset.to_bits() == other.offset.to_bits()
    }
}

impl Forest {
    pub fn new(trees: Vec<Tree>, max_samples: u32, offset: f64) -> Result<Self, InvalidModel> {
        if trees.is_empty() {
            return Err(InvalidModel::NoTrees);
        }
        if max_samples == 0 {
            return Err(InvalidModel::MaxSamples);
        }
        if !offset.is_finite() {
            return Err(InvalidModel::Offset(offset));
        }
        let denominator = trees.len() as f64 * average_path_length(max_samples);
        let max_feature = trees.iter().filter_map(Tree::max_feature).max();
        Ok(Forest {
            trees,
            max_samples,
            offset,
            denominator,
            max_feature,
            shap: OnceLock::new(),
        })
    }

    /// The same forest with another decision offset (the trainer sets it after scoring the
    /// training data).
    pub fn with_offset(mut self, offset: f64) -> Result<Self, InvalidModel> {
        if !offset.is_finite() {
            return Err(InvalidModel::Offset(offset));
        }
        self.offset = offset;
        Ok(self)
    }

    pub fn trees(&self) -> &[Tree] {
        &self.trees
    }

    /// ψ, the number of samples each tree was grown on.
    pub fn max_samples(&self) -> u32 {
        self.max_samples
    }

    pub fn offset(&self) -> f64 {
        self.offset
    }

    pub fn node_count(&self) -> usize {
        self.trees.iter().map(|t| t.nodes.len()).sum()
    }

    pub(crate) fn max_feature_index(&self) -> Option<u16> {
        self.max_feature
    }

    pub(crate) fn shap(&self) -> &ForestShap {
        self.shap.get_or_init(|| ForestShap::new(&self.trees))
    }

    /// `E[h]` over the training samples, the base value of explanations: the mean over trees
    /// of each tree's cover-weighted mean leaf path length.
    pub fn expected_value(&self) -> f64 {
        self.shap().expected_value()
    }

    /// Exact path-dependent TreeSHAP of the mean path length for an already scaled row:
    /// overwrites `phi` (one slot per entry of `x`) so that
    /// `Σphi + expected_value() = score.mean_path_length`. See [`crate::explain`].
    pub fn explain_scaled(&self, x: &[f32], phi: &mut [f64]) -> Result<Score, ExplainError> {
        let score = self.score_scaled(x)?;
        if phi.len() != x.len() {
            return Err(ExplainError::PhiWidth {
                expected: x.len(),
                found: phi.len(),
            });
        }
        phi.fill(0.0);
        crate::explain::forest_phi(self, x, phi)?;
        let scale = 1.0 / self.trees.len() as f64;
        for v in phi.iter_mut() {
            *v *= scale;
        }
        Ok(score)
    }

    /// Scores an already scaled row. The row must cover every feature a split reads.
    pub fn score_scaled(&self, x: &[f32]) -> Result<Score, ScoreError> {
        if let Some(max) = self.max_feature {
            if x.len() <= usize::from(max) {
                return Err(ScoreError::Width {
                    expected: usize::from(max) + 1,
                    found: x.len(),
                });
            }
        }
        // Sum in tree order, then normalise, exactly like scikit-learn's _compute_score_samples.
        let mut depths = 0.0;
        for tree in &self.trees {
            depths += tree.path_length(x);
        }
        let ratio = if self.denominator != 0.0 {
            depths / self.denominator
        } else {
            1.0
        };
        let score_samples = -libm::pow(2.0, -ratio);
        Ok(Score {
            mean_path_length: depths / self.trees.len() as f64,
            score_samples,
            decision: score_samples - self.offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_matches_scikit_learn_values() {
        // numpy: 2*(log(255)+euler_gamma) - 2*255/256
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        assert!((average_path_length(256) - 10.244_770_920_119_917).abs() < 1e-12);
        assert!(
            (average_path_length(3) - (2.0 * (2f64.ln() + EULER_GAMMA) - 4.0 / 3.0)).abs() < 1e-15
        );
    }

    fn leaf(samples: u32) -> Node {
        Node::Leaf { samples }
    }

    fn split(feature: u16, threshold: f32, right: u32) -> Node {
        Node::Split {
            feature,
            threshold,
            right,
        }
    }

    #[test]
    fn tree_walk_and_path_lengths() {
        // root: x0 <= 0.5 ? (leaf 3 samples) : (x1 <= 0 ? leaf 1 : leaf 2)
        let t = Tree::new(vec![
            split(0, 0.5, 2),
            leaf(3),
            split(1, 0.0, 4),
            leaf(1),
            leaf(2),
        ])
        .unwrap();
        assert_eq!(t.path_length(&[0.5, 9.0]), 1.0 + average_path_length(3));
        assert_eq!(t.path_length(&[0.6, 0.0]), 2.0);
        assert_eq!(t.path_length(&[0.6, 0.1]), 3.0);
    }

    #[test]
    fn malformed_trees_are_rejected() {
        assert_eq!(Tree::new(vec![]), Err(TreeProblem::Empty));
        assert!(matches!(
            Tree::new(vec![split(0, 0.0, 1), leaf(1)]),
            Err(TreeProblem::BadChild { .. })
        ));
        assert!(matches!(
            Tree::new(vec![split(0, 0.0, 5), leaf(1), leaf(1)]),
            Err(TreeProblem::BadChild { .. })
        ));
        assert!(matches!(
            Tree::new(vec![leaf(1), leaf(1)]),
            Err(TreeProblem::Shape { .. })
        ));
        assert!(matches!(
            Tree::new(vec![leaf(0)]),
            Err(TreeProblem::EmptyLeaf { .. })
        ));
        assert!(matches!(
            Tree::new(vec![split(0, f32::NAN, 2), leaf(1), leaf(1)]),
            Err(TreeProblem::NanThreshold { .. })
        ));
        // A cycle back to the root cannot be expressed: children always point forward.
        assert!(matches!(
            Tree::new(vec![split(0, 0.0, 0), leaf(1)]),
            Err(TreeProblem::BadChild { .. })
        ));
    }

    #[test]
    fn forest_score_matches_formula() {
        let t = Tree::new(vec![split(0, 0.0, 2), leaf(1), leaf(1)]).unwrap();
        let f = Forest::new(vec![t.clone(), t], 4, -0.5).unwrap();
        let s = f.score_scaled(&[-1.0]).unwrap();
        let expected = -(2f64).powf(-(2.0 / (2.0 * average_path_length(4))));
        assert!((s.score_samples - expected).abs() < 1e-15);
        assert_eq!(s.decision, s.score_samples + 0.5);
        assert_eq!(s.mean_path_length, 1.0);
        assert!(f.score_scaled(&[]).is_err());
    }
}
