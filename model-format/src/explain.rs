//! Exact path-dependent TreeSHAP for the mean path length `E[h(x)]`.
//!
//! # The game
//!
//! As `shap.TreeExplainer(isolation_forest)` with `feature_perturbation="tree_path_dependent"`:
//! a leaf is worth `depth + c(samples)`, a node's cover is the number of training samples below
//! it (the sum of its leaves' `samples`), and for a feature set `S`
//!
//! ```text
//! v(S) = Σ_leaves value · Π_{edges on the leaf's path} (feature ∈ S ? [x takes the edge] : cover(child)/cover(parent))
//! ```
//!
//! averaged over trees. `φ` are the exact Shapley values of `v`, so `Σφ + v(∅) = v(all) = E[h(x)]`.
//!
//! # Algorithm
//!
//! Group a leaf's edges by feature: feature `j` on the path to leaf `l` has a cover product
//! `z_j` and an indicator `o_j ∈ {0, 1}` (x takes every `j` edge). The leaf's game is a product
//! `Π_j (j ∈ S ? o_j : z_j)`, whose Shapley values have the closed form
//!
//! ```text
//! φ_i = value · (o_i − z_i) · ∫₀¹ Π_{j≠i} f_j(t) dt,    f_j(t) = z_j + t·(o_j − z_j)
//! ```
//!
//! (the Shapley weight `|S|!(d−|S|−1)!/d!` is `∫ t^|S| (1−t)^(d−|S|−1) dt`). The integrand is a
//! polynomial of degree < d (distinct features on the path), so a `q`-point Gauss–Legendre rule
//! with `2q ≥ d` integrates it exactly. This is Linear TreeSHAP (Yu et al., 2022) with
//! quadrature points instead of their Chebyshev basis, and it matches shap's duplicate-feature
//! merging because `z_j`, `o_j` are the merged values.
//!
//! Per tree, a forward pass over the splits (pre-order) carries `P(t_k) = Π_j f_j(t_k)` from
//! each split to its children; leaves turn `P` into `H = value·P`; a backward pass sums `H`
//! up and, at each split on `i`, adds to `φ_i` the telescoping change of `(o−z)/f_i` between
//! its children and the previous split on `i` along the path, weighted by the children's `H`.
//! Because `o ∈ {0, 1}`:
//!
//! * once `x` has left a feature's edge (`o = 0`), `f = z(1−t)`, so deeper splits on that
//!   feature only scale `P` by the cover ratio and contribute nothing;
//! * `(o−z)/f = −1/(1−t)` for a cold edge, independent of `z`.
//!
//! Everything that does not depend on `x` (cover ratios, the previous split on the same
//! feature, and the reciprocals `1/f` at the quadrature points) is precomputed per split when
//! the forest is built, so a row costs multiplications only. The passes are branch-free: the
//! control flow is the same for every row, and `x` only selects operands, because
//! mispredicted branches, not arithmetic, dominated a recursive walk.
//!
//! Cost: `O(nodes · q)` per tree, where the textbook algorithm is `O(leaves · depth²)`. The
//! forest uses one `q` (from its most feature-rich path) and dispatches to a monomorphised
//! kernel so the `q`-wide loops unroll.
//!
//! # Precomputed tables
//!
//! Building these tables costs several explanations' worth of time, once per decoded model.
//! A host that decodes the model per short-lived instance (the edge worker) would pay that on
//! a request, so the tables can also be serialized ([`crate::Model::explanation_tables`], e.g.
//! in a build script) and installed ([`crate::Model::install_explanation_tables`]) wherever
//! the same model is decoded. Installing checks a checksum of the bytes, binds them to the
//! forest (every split compared, a fingerprint of the leaf covers) and then uses the arrays in
//! place (`repr(C)`, little-endian, 8-byte aligned; misaligned bytes are copied), so the
//! results are bit-identical to built tables. The checksum is not a defence against a forger,
//! but the structural checks alone keep every index the kernel uses in range; that is why a
//! host whose tables are embedded next to the model may skip it at install
//! ([`crate::TablesTrust::IntegrityKnown`]) and verify later: hashing the float
//! arrays on a fresh wasm instance costs more than everything else installing does. A host
//! that checked the tables against the same model file when it embedded both (a build
//! script) may skip the structural walk as well
//! ([`crate::TablesTrust::CheckedForThisModel`]: header and sizes only).
//!
//! Layout, all integers and floats little-endian, every section 8-byte aligned:
//!
//! ```text
//! header (48 bytes)
//!    0  magic            b"SFESHAP\0"
//!    8  version          u32 = 1
//!   12  n_trees          u32
//!   16  n_steps          u32   splits in the whole forest
//!   20  q                u32   quadrature points (0: some path has too many features)
//!   24  fingerprint      u64   XXH3-64 of each tree's node count and leaf sample counts (u32)
//!   32  checksum         u64   XXH3-64 (seed 0) of every byte after the header
//!   40  reserved         u64 = 0
//! per tree (16 bytes each): n_steps u32, path_features u32, root_value f64
//! steps: n_steps × 20 bytes (`Step`: node, right, prev u32; threshold f32; feature, 0 u16),
//!        zero-padded to a multiple of 8
//! scalars: n_steps × 9 f64 (`R_LEFT`...)
//! reciprocals: n_steps × 3q f64 (`write_record`)
//! ```
//!
//! Per-tree data is concatenated in tree order within each section.
//!
//! Quadrature makes the result exact up to rounding, not bit-for-bit equal to shap's
//! (which sums the Shapley weights directly); on a scikit-learn forest both agree to ~1e-14
//! (`tests/data/shap_isolation_forest.*`).

use std::borrow::Cow;

use bytemuck::{Pod, Zeroable};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::ExplainError;
use crate::forest::{Forest, Node, Tree};

/// Most distinct features on one root-to-leaf path that [`crate::Model::explain`] supports.
pub const MAX_PATH_FEATURES: usize = 64;

/// Quadrature sizes with a compiled kernel; the forest uses the smallest with `2q ≥ d`.
const QUAD_SIZES: [usize; 11] = [1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32];

/// Scratch `f64`s kept on the stack (nodes × q); larger trees allocate.
const STACK_SCRATCH: usize = 4096;
/// Scratch flags kept on the stack (2 per split + 1); larger trees allocate.
const STACK_FLAGS: usize = 2048;

/// One split, in pre-order: where its values live and which flag gates it. `repr(C)` without
/// padding so that serialized tables can be viewed in place (see [`Model::explanation_tables`]).
///
/// [`Model::explanation_tables`]: crate::Model::explanation_tables
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
struct Step {
    node: u32,
    right: u32,
    /// Flag slot holding `o` of this feature just above this split: `2·s + side` of the
    /// previous split `s` on the same feature along the path, or the always-1 slot.
    prev: u32,
    threshold: f32,
    feature: u16,
    _pad: u16,
}

// Per-split scalars, indexed by these.
/// Cover ratios `cover(child)/cover(split)`.
const R_LEFT: usize = 0;
const R_RIGHT: usize = 1;
/// `z_c = z·r_c`, `z` being the cover product of earlier edges on the feature (1 if none).
const Z_LEFT: usize = 2;
const Z_RIGHT: usize = 3;
/// `z(1 − r_c)`: how much the edge shrinks the feature's cover product.
const DZ_LEFT: usize = 4;
/// Child's value if it is a leaf, else 1: folds leaves into the forward pass.
const V_LEFT: usize = 6;
const V_RIGHT: usize = 7;
const Z: usize = 8;
const SCALARS: usize = 9;

/// Per-tree data for explanations, derived from the nodes at construction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TreeShap {
    /// Borrowed when installed from embedded tables, owned when built here.
    steps: Cow<'static, [Step]>,
    /// One per step; see the `R_LEFT`... indices.
    scalars: Cow<'static, [[f64; SCALARS]]>,
    /// Cover-weighted mean leaf value: the tree's `v(∅)`.
    root_value: f64,
    /// Most distinct features on one path.
    path_features: usize,
}

impl TreeShap {
    /// `nodes` must already be validated (pre-order, indices in range, samples ≥ 1).
    pub(crate) fn new(nodes: &[Node], leaf_value: &[f64]) -> Self {
        let n = nodes.len();
        // Covers bottom-up: children follow their parent in pre-order.
        let mut cover = vec![0u64; n];
        for i in (0..n).rev() {
            cover[i] = match nodes[i] {
                Node::Leaf { samples } => u64::from(samples),
                Node::Split { right, .. } => cover[i + 1] + cover[right as usize],
            };
        }
        let total = cover[0] as f64;
        let mut root_value = 0.0;
        let n_splits = nodes
            .iter()
            .filter(|n| matches!(n, Node::Split { .. }))
            .count();
        let always_hot = 2 * n_splits as u32;
        let width = nodes
            .iter()
            .filter_map(|n| match n {
                Node::Split { feature, .. } => Some(usize::from(*feature) + 1),
                Node::Leaf { .. } => None,
            })
            .max()
            .unwrap_or(0);
        // Per feature along the current path: (cover product, edges, flag slot of last edge).
        let mut state = vec![(1.0f64, 0u32, always_hot); width];
        let mut distinct = 0usize;
        let mut path_features = 0usize;
        let mut steps = Vec::with_capacity(n_splits);
        let mut scalars = Vec::with_capacity(n_splits);
        let value = |i: usize| match nodes[i] {
            Node::Leaf { .. } => leaf_value[i],
            Node::Split { .. } => 1.0,
        };

        // Pre-order walk; `Set` restores a feature's state after a subtree.
        enum Walk {
            Visit(usize),
            Set(usize, (f64, u32, u32)),
        }
        let mut stack = vec![Walk::Visit(0)];
        while let Some(w) = stack.pop() {
            match w {
                Walk::Set(f, st) => {
                    if state[f].1 == 0 && st.1 > 0 {
                        distinct += 1;
                    } else if state[f].1 > 0 && st.1 == 0 {
                        distinct -= 1;
                    }
                    state[f] = st;
                }
                Walk::Visit(node) => match nodes[node] {
                    Node::Leaf { .. } => {
                        root_value += leaf_value[node] * (cover[node] as f64 / total);
                        path_features = path_features.max(distinct);
                    }
                    Node::Split {
                        feature,
                        threshold,
                        right,
                    } => {
                        let f = usize::from(feature);
                        let r = right as usize;
                        let here = cover[node] as f64;
                        let s = steps.len() as u32;
                        let (z, uses, prev) = state[f];
                        steps.push(Step {
                            node: node as u32,
                            right,
                            feature,
                            threshold,
                            prev,
                            _pad: 0,
                        });
                        let (r_l, r_r) = (cover[node + 1] as f64 / here, cover[r] as f64 / here);
                        let (z_l, z_r) = (z * r_l, z * r_r);
                        let (v_l, v_r) = (value(node + 1), value(r));
                        scalars.push([r_l, r_r, z_l, z_r, z - z_l, z - z_r, v_l, v_r, z]);
                        // Children pop in pre-order: left subtree, then right, then restore.
                        stack.push(Walk::Set(f, (z, uses, prev)));
                        stack.push(Walk::Visit(r));
                        stack.push(Walk::Set(f, (z_r, uses + 1, 2 * s + 1)));
                        stack.push(Walk::Visit(node + 1));
                        stack.push(Walk::Set(f, (z_l, uses + 1, 2 * s)));
                    }
                },
            }
        }
        TreeShap {
            steps: Cow::Owned(steps),
            scalars: Cow::Owned(scalars),
            root_value,
            path_features,
        }
    }

    pub(crate) fn root_value(&self) -> f64 {
        self.root_value
    }

    pub(crate) fn path_features(&self) -> usize {
        self.path_features
    }
}

/// Forest-wide quadrature rule on [0, 1], chosen from the trees' path feature counts, and
/// per-split tables for it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForestShap {
    /// Points in the rule, or 0 if some path has more than [`MAX_PATH_FEATURES`] features.
    q: usize,
    t: [f64; 32],
    w: [f64; 32],
    /// Per tree, `3q` values per split in pre-order (see `write_record`): the divisions, done
    /// once here instead of per row. Borrowed when installed from embedded tables.
    tables: Vec<Cow<'static, [f64]>>,
    /// Most nodes in one tree, to size the scratch.
    max_nodes: usize,
    /// Σ root values / n_trees.
    expected_value: f64,
}

/// One split's reciprocals at the quadrature points. With `a = z + t(1−z)` (the feature's
/// factor before the split while x follows it) and `b_c = z_c + t(1−z_c)` (after x takes
/// child c): `1/a`, `1/b_left`, `1/b_right`, `q` each.
fn write_record(s: &[f64; SCALARS], t: &[f64], out: &mut Vec<f64>) {
    for z in [s[Z], s[Z_LEFT], s[Z_RIGHT]] {
        out.extend(t.iter().map(|&t| 1.0 / (z + t * (1.0 - z))));
    }
}

/// The quadrature size for a forest whose richest path has `d` distinct features (0: none fits).
fn quad_size(d: usize) -> usize {
    if d > MAX_PATH_FEATURES {
        0
    } else {
        let need = d.div_ceil(2).max(1);
        QUAD_SIZES.into_iter().find(|&q| q >= need).unwrap_or(0)
    }
}

impl ForestShap {
    pub(crate) fn new(trees: &[Tree]) -> Self {
        let shaps: Vec<&TreeShap> = trees.iter().map(Tree::shap).collect();
        let max_nodes = trees.iter().map(Tree::len).max().unwrap_or(0);
        Self::of_trees(&shaps, max_nodes)
    }

    /// The rule and tables for any ensemble of trees (the forest's, or the supervised
    /// model's: [`crate::booster`]); `max_nodes` is the largest tree's node count.
    pub(crate) fn of_trees(shaps: &[&TreeShap], max_nodes: usize) -> Self {
        let q = quad_size(shaps.iter().map(|s| s.path_features()).max().unwrap_or(0));
        let (t, _) = quadrature(q);
        let tables = if q == 0 {
            Vec::new()
        } else {
            shaps
                .iter()
                .map(|shap| {
                    let mut out = Vec::with_capacity(shap.scalars.len() * 3 * q);
                    shap.scalars
                        .iter()
                        .for_each(|s| write_record(s, &t[..q], &mut out));
                    Cow::Owned(out)
                })
                .collect()
        };
        Self::assemble_parts(shaps, max_nodes, q, tables)
    }

    /// The forest-wide part from per-tree parts; shared by building and installing so both
    /// give the same bits.
    fn assemble(
        trees: &[Tree],
        shaps: &[&TreeShap],
        q: usize,
        tables: Vec<Cow<'static, [f64]>>,
    ) -> Self {
        let max_nodes = trees.iter().map(Tree::len).max().unwrap_or(0);
        Self::assemble_parts(shaps, max_nodes, q, tables)
    }

    fn assemble_parts(
        shaps: &[&TreeShap],
        max_nodes: usize,
        q: usize,
        tables: Vec<Cow<'static, [f64]>>,
    ) -> Self {
        let (t, w) = quadrature(q);
        // Same summation shape as scoring: sum in tree order, then divide.
        let sum: f64 = shaps.iter().map(|s| s.root_value()).sum();
        ForestShap {
            q,
            t,
            w,
            tables,
            max_nodes,
            expected_value: sum / shaps.len().max(1) as f64,
        }
    }

    /// Whether [`forest_phi`] can explain with this rule (no path is too feature-rich).
    pub(crate) fn supported(&self) -> bool {
        self.q > 0
    }

    pub(crate) fn expected_value(&self) -> f64 {
        self.expected_value
    }
}

/// The `q`-point rule in the front of two fixed arrays (all zero for `q = 0`).
fn quadrature(q: usize) -> ([f64; 32], [f64; 32]) {
    let (mut t, mut w) = ([0.0; 32], [0.0; 32]);
    if q > 0 {
        gauss_legendre_01(&mut t[..q], &mut w[..q]);
    }
    (t, w)
}

/// Gauss–Legendre nodes and weights on [0, 1] (Newton on the Legendre recurrence).
fn gauss_legendre_01(t: &mut [f64], w: &mut [f64]) {
    let n = t.len();
    for i in 0..n.div_ceil(2) {
        let mut x = libm::cos(core::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5));
        let mut dp = 1.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, x);
            for j in 2..=n {
                let j = j as f64;
                let p2 = ((2.0 * j - 1.0) * x * p1 - (j - 1.0) * p0) / j;
                p0 = p1;
                p1 = p2;
            }
            dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
            let dx = p1 / dp;
            x -= dx;
            if dx.abs() <= 1e-16 {
                break;
            }
        }
        let weight = 1.0 / ((1.0 - x * x) * dp * dp); // 2/(...) on [-1, 1], halved for [0, 1]
        t[i] = 0.5 * (1.0 - x);
        t[n - 1 - i] = 0.5 * (1.0 + x);
        w[i] = weight;
        w[n - 1 - i] = weight;
    }
}

/// Adds every tree's attributions (unscaled: each leaf worth its full path length) to `phi`.
/// `x` must cover every split feature and `phi.len() == x.len()`.
pub(crate) fn forest_phi(forest: &Forest, x: &[f32], phi: &mut [f64]) -> Result<(), ExplainError> {
    let shap = forest.shap();
    if !shap.supported() {
        return Err(too_complex(forest.trees().iter().map(Tree::shap)));
    }
    ensemble_phi(shap, forest.trees().iter().map(Tree::shap), x, phi);
    Ok(())
}

/// The error for an ensemble whose richest path has too many features: names that tree.
pub(crate) fn too_complex<'t>(trees: impl Iterator<Item = &'t TreeShap>) -> ExplainError {
    let (tree, features) = trees
        .enumerate()
        .map(|(i, t)| (i, t.path_features()))
        .max_by_key(|&(_, f)| f)
        .unwrap_or((0, 0));
    ExplainError::PathTooComplex { tree, features }
}

/// Adds the attributions of every tree in `trees` (each leaf worth its own value) to `phi`,
/// with the rule and tables of `shap` (built for exactly these trees, in this order, and
/// `supported`). `x` must cover every split feature and `phi.len() == x.len()`.
pub(crate) fn ensemble_phi<'t>(
    shap: &ForestShap,
    trees: impl Iterator<Item = &'t TreeShap>,
    x: &[f32],
    phi: &mut [f64],
) {
    match shap.q {
        0 => {}
        1 => run::<1>(shap, trees, x, phi),
        2 => run::<2>(shap, trees, x, phi),
        3 => run::<3>(shap, trees, x, phi),
        4 => run::<4>(shap, trees, x, phi),
        5 => run::<5>(shap, trees, x, phi),
        6 => run::<6>(shap, trees, x, phi),
        8 => run::<8>(shap, trees, x, phi),
        12 => run::<12>(shap, trees, x, phi),
        16 => run::<16>(shap, trees, x, phi),
        24 => run::<24>(shap, trees, x, phi),
        _ => run::<32>(shap, trees, x, phi),
    }
}

/// The quadrature rule as fixed-size arrays, plus `1−t` and `w/(1−t)`.
struct Quad<const Q: usize> {
    t: [f64; Q],
    w: [f64; Q],
    one_minus_t: [f64; Q],
    w_cold: [f64; Q],
}

fn run<'t, const Q: usize>(
    shap: &ForestShap,
    trees: impl Iterator<Item = &'t TreeShap>,
    x: &[f32],
    phi: &mut [f64],
) {
    let mut quad = Quad {
        t: [0.0; Q],
        w: [0.0; Q],
        one_minus_t: [0.0; Q],
        w_cold: [0.0; Q],
    };
    for k in 0..Q {
        quad.t[k] = shap.t[k];
        quad.w[k] = shap.w[k];
        quad.one_minus_t[k] = 1.0 - shap.t[k];
        quad.w_cold[k] = shap.w[k] / (1.0 - shap.t[k]);
    }
    // P, then H, per node; and per split its hot-left/hot-right flags.
    let mut stack_values = [0.0f64; STACK_SCRATCH];
    let mut stack_flags = [0u8; STACK_FLAGS];
    let (mut heap_values, mut heap_flags) = (Vec::new(), Vec::new());
    let need = shap.max_nodes * Q;
    let values: &mut [f64] = if need <= STACK_SCRATCH {
        &mut stack_values[..need]
    } else {
        // Only trees far larger than scikit-learn grows for ψ = 256 (≤ 511 nodes).
        heap_values.resize(need, 0.0);
        &mut heap_values
    };
    let flags: &mut [u8] = if shap.max_nodes < STACK_FLAGS {
        &mut stack_flags
    } else {
        heap_flags.resize(shap.max_nodes + 1, 0);
        &mut heap_flags
    };
    for (tree, table) in trees.zip(&shap.tables) {
        tree_phi(tree, table, x, &quad, values, flags, phi);
    }
}

/// One tree's contribution: a forward pass over the splits, then a backward one. `values`
/// holds `Q` per node (`P`, then `H`), `flags` 2 per split + 1.
#[inline(never)]
fn tree_phi<const Q: usize>(
    tree: &TreeShap,
    table: &[f64],
    x: &[f32],
    quad: &Quad<Q>,
    values: &mut [f64],
    flags: &mut [u8],
    phi: &mut [f64],
) {
    let steps = &tree.steps[..];
    let splits = steps
        .iter()
        .zip(tree.scalars.iter())
        .zip(table.chunks_exact(3 * Q));
    // flags[2s] / flags[2s+1]: x took every edge on the split's feature down to its left /
    // right child (o after the edge). The slot after them is the always-hot root state.
    flags[2 * steps.len()] = 1;
    values[..Q].fill(1.0);
    for (s, ((step, sc), recip)) in splits.clone().enumerate() {
        let left_hot = x[usize::from(step.feature)] <= step.threshold;
        let was_hot = flags[step.prev as usize];
        let (o_l, o_r) = (was_hot & u8::from(left_hot), was_hot & u8::from(!left_hot));
        flags[2 * s] = o_l;
        flags[2 * s + 1] = o_r;
        // f goes from a = z + t(1−z) to z_c + t(o_c − z_c) per child; if x already left this
        // feature, from z(1−t) to z_c(1−t): the cover ratio. Leaves take their value here.
        let hot = f64::from(was_hot);
        let (o_l, o_r) = (f64::from(o_l), f64::from(o_r));
        let (z_l, z_r) = (sc[Z_LEFT], sc[Z_RIGHT]);
        let (c_l, c_r) = ((1.0 - hot) * sc[R_LEFT], (1.0 - hot) * sc[R_RIGHT]);
        let (v_l, v_r) = (sc[V_LEFT], sc[V_RIGHT]);
        let inv_a = &recip[..Q];
        let node = step.node as usize * Q;
        let p: [f64; Q] = values[node..node + Q].try_into().unwrap();
        let (mut pl, mut pr) = ([0.0; Q], [0.0; Q]);
        for k in 0..Q {
            let t = quad.t[k];
            let hi = hot * inv_a[k];
            pl[k] = p[k] * ((z_l + t * (o_l - z_l)) * hi + c_l) * v_l;
            pr[k] = p[k] * ((z_r + t * (o_r - z_r)) * hi + c_r) * v_r;
        }
        values[node + Q..node + 2 * Q].copy_from_slice(&pl);
        let right = step.right as usize * Q;
        values[right..right + Q].copy_from_slice(&pr);
    }
    for (s, ((step, sc), recip)) in splits.enumerate().rev() {
        // φ_f += Σ_k w_k/a_k · (z(1−r_hot)/b_hot · H_hot − H_cold/(1−t_k)) if x still followed
        // f above this split: the change of (o−z)/f between its children and the previous
        // split on f. The hot side is the one whose flag is set.
        let (o_l, o_r) = (flags[2 * s], flags[2 * s + 1]);
        let node = step.node as usize * Q;
        let right = step.right as usize * Q;
        let hl: [f64; Q] = values[node + Q..node + 2 * Q].try_into().unwrap();
        let hr: [f64; Q] = values[right..right + Q].try_into().unwrap();
        let right_hot = usize::from(o_r);
        let (h_hot, h_cold) = if o_r == 1 { (hr, hl) } else { (hl, hr) };
        let gate = f64::from(o_l | o_r);
        let dz = sc[DZ_LEFT + right_hot] * gate;
        let inv_a = &recip[..Q];
        let inv_b = &recip[Q * (1 + right_hot)..Q * (2 + right_hot)];
        let mut acc = 0.0;
        let mut h = [0.0; Q];
        for k in 0..Q {
            acc += inv_a[k]
                * (quad.w[k] * dz * inv_b[k] * h_hot[k] - gate * quad.w_cold[k] * h_cold[k]);
            h[k] = hl[k] + hr[k];
        }
        values[node..node + Q].copy_from_slice(&h);
        phi[usize::from(step.feature)] += acc;
    }
}

// ---------------------------------------------------------------------------------------------
// Precomputed tables
// ---------------------------------------------------------------------------------------------
//
// Serialized form of the tables: see "Precomputed tables" in the module docs.

const TABLES_MAGIC: [u8; 8] = *b"SFESHAP\0";
const TABLES_VERSION: u32 = 1;
const TABLES_HEADER: usize = 48;
const TREE_ENTRY: usize = 16;
const STEP_BYTES: usize = core::mem::size_of::<Step>();
const SCALAR_BYTES: usize = SCALARS * 8;

/// Why serialized explanation tables were not installed; the model is left unchanged and
/// builds its tables on first use instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TablesError {
    #[error("explanation tables are {found} bytes, expected {expected}")]
    Length { expected: usize, found: usize },
    #[error("not explanation tables (bad magic)")]
    Magic,
    #[error("explanation tables version {0} is not supported (expected {TABLES_VERSION})")]
    Version(u32),
    #[error("explanation tables checksum {found:016x} does not match {expected:016x}")]
    Checksum { expected: u64, found: u64 },
    #[error("explanation tables are for another model: {0}")]
    Mismatch(&'static str),
    #[error("explanation tables: tree {tree}, split {step} does not match the model")]
    Step { tree: usize, step: usize },
    #[error("explanation tables: tree {tree} has a non-finite expected path length")]
    RootValue { tree: usize },
    #[error("explanation tables: reserved header bytes are not zero")]
    Reserved,
    #[error("explanation tables cannot be read on a big-endian target")]
    BigEndian,
}

/// Identifies the forest's covers beyond its split structure (which [`read_tables`] compares
/// split by split): per tree its node count, then its leaves' sample counts, as u32 LE.
fn fingerprint(forest: &Forest) -> u64 {
    let mut words = Vec::with_capacity(4 * forest.node_count() + 4 * forest.trees().len());
    for tree in forest.trees() {
        fingerprint_tree(tree, &mut words);
    }
    xxh3_64(&words)
}

/// Reads the tree node by node rather than through [`Tree::nodes`]: installing tables at an
/// instance's start should not build (and allocate) a second copy of every tree.
fn fingerprint_tree(tree: &Tree, words: &mut Vec<u8>) {
    words.extend_from_slice(&(tree.len() as u32).to_le_bytes());
    for node in tree.iter_nodes() {
        if let Node::Leaf { samples } = node {
            words.extend_from_slice(&samples.to_le_bytes());
        }
    }
}

/// Serializes the forest's explanation tables (building them if needed) in the layout above.
pub(crate) fn write_tables(forest: &Forest) -> Vec<u8> {
    let shap = forest.shap();
    let trees = forest.trees();
    let n_steps: usize = trees.iter().map(|t| t.shap().steps.len()).sum();
    let q = shap.q;
    let mut out = Vec::with_capacity(
        TABLES_HEADER
            + TREE_ENTRY * trees.len()
            + (STEP_BYTES * n_steps).next_multiple_of(8)
            + (SCALAR_BYTES + 24 * q) * n_steps,
    );
    out.extend_from_slice(&TABLES_MAGIC);
    out.extend_from_slice(&TABLES_VERSION.to_le_bytes());
    out.extend_from_slice(&(trees.len() as u32).to_le_bytes());
    out.extend_from_slice(&(n_steps as u32).to_le_bytes());
    out.extend_from_slice(&(q as u32).to_le_bytes());
    out.extend_from_slice(&fingerprint(forest).to_le_bytes());
    out.extend_from_slice(&[0; 16]); // checksum (filled in below), reserved
    for tree in trees {
        let t = tree.shap();
        out.extend_from_slice(&(t.steps.len() as u32).to_le_bytes());
        out.extend_from_slice(&(t.path_features as u32).to_le_bytes());
        out.extend_from_slice(&t.root_value.to_le_bytes());
    }
    for step in trees.iter().flat_map(|t| t.shap().steps.iter()) {
        out.extend_from_slice(&step.node.to_le_bytes());
        out.extend_from_slice(&step.right.to_le_bytes());
        out.extend_from_slice(&step.prev.to_le_bytes());
        out.extend_from_slice(&step.threshold.to_le_bytes());
        out.extend_from_slice(&step.feature.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(8), 0);
    for s in trees.iter().flat_map(|t| t.shap().scalars.iter()) {
        s.iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
    for table in &shap.tables {
        table
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
    let checksum = xxh3_64(&out[TABLES_HEADER..]);
    out[32..40].copy_from_slice(&checksum.to_le_bytes());
    out
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// A view of `bytes` as `T`s: borrowed if suitably aligned, else copied.
fn view<T: Pod>(bytes: &'static [u8]) -> Cow<'static, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(slice) => Cow::Borrowed(slice),
        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

/// What is already known about serialized explanation tables, hence how much
/// [`Model::install_explanation_tables`](crate::Model::install_explanation_tables) checks.
/// From least to most trusting; every level keeps each slice in range, so no input can cause
/// undefined behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TablesTrust {
    /// Nothing: checksum, header, and every split and leaf cover against the forest.
    /// Explanations are then bit-identical to built tables.
    Untrusted,
    /// Their integrity (embedded in the same binary as the model, checked when it was built):
    /// all but the checksum, so the float arrays are not read at all until the first
    /// explanation (hashing them costs more than the rest together). Corrupted floats would
    /// give wrong explanations, which [`TablesTrust::Untrusted`] detects.
    IntegrityKnown,
    /// That they were checked in full against this same model file before (in the build
    /// script that embedded both): header and sizes only. Tables of another model give wrong
    /// explanations or make `explain` panic.
    CheckedForThisModel,
}

/// Validates serialized tables against `forest` and returns its per-tree and forest-wide
/// parts, viewing `bytes` in place when they are 8-byte aligned.
pub(crate) fn read_tables(
    forest: &Forest,
    bytes: &'static [u8],
    checks: TablesTrust,
) -> Result<(Vec<TreeShap>, ForestShap), TablesError> {
    if cfg!(target_endian = "big") {
        return Err(TablesError::BigEndian);
    }
    let trees = forest.trees();
    if bytes.len() < TABLES_HEADER {
        return Err(TablesError::Length {
            expected: TABLES_HEADER,
            found: bytes.len(),
        });
    }
    if bytes[..8] != TABLES_MAGIC {
        return Err(TablesError::Magic);
    }
    let version = u32_at(bytes, 8);
    if version != TABLES_VERSION {
        return Err(TablesError::Version(version));
    }
    if u32_at(bytes, 12) as usize != trees.len() {
        return Err(TablesError::Mismatch("tree count"));
    }
    let n_steps = u64::from(u32_at(bytes, 16));
    let q = u32_at(bytes, 20) as usize;
    if !(q == 0 || QUAD_SIZES.contains(&q)) {
        return Err(TablesError::Mismatch("quadrature size"));
    }
    if u64_at(bytes, 40) != 0 {
        return Err(TablesError::Reserved);
    }
    // In u64: n_steps is not yet known to be the model's, and usize may be 32 bits.
    let steps_at = (TABLES_HEADER + TREE_ENTRY * trees.len()) as u64;
    let scalars_at = steps_at + (STEP_BYTES as u64 * n_steps).next_multiple_of(8);
    let recips_at = scalars_at + SCALAR_BYTES as u64 * n_steps;
    let expected = recips_at + 24 * q as u64 * n_steps;
    if bytes.len() as u64 != expected {
        return Err(TablesError::Length {
            expected: usize::try_from(expected).unwrap_or(usize::MAX),
            found: bytes.len(),
        });
    }
    // Every offset is now within `bytes`, so fits a usize.
    let (steps_at, scalars_at, recips_at) =
        (steps_at as usize, scalars_at as usize, recips_at as usize);
    if checks == TablesTrust::Untrusted {
        verify_checksum(bytes)?;
    }
    let structure = checks != TablesTrust::CheckedForThisModel;

    let mut shaps = Vec::with_capacity(trees.len());
    let mut tables = Vec::with_capacity(if q == 0 { 0 } else { trees.len() });
    let mut first = 0u64; // first step of the current tree
    let mut max_features = 0;
    for (i, tree) in trees.iter().enumerate() {
        let entry = TABLES_HEADER + TREE_ENTRY * i;
        let count = u64::from(u32_at(bytes, entry));
        let path_features = u32_at(bytes, entry + 4) as usize;
        let root_value = f64::from_bits(u64_at(bytes, entry + 8));
        if first + count > n_steps {
            return Err(TablesError::Mismatch("split count"));
        }
        if !root_value.is_finite() {
            return Err(TablesError::RootValue { tree: i });
        }
        // In range: first + count ≤ n_steps, which sized every section.
        let (first_us, end) = (first as usize, (first + count) as usize);
        let range = |at: usize, size: usize| &bytes[at + size * first_us..at + size * end];
        let steps: Cow<'static, [Step]> = view(range(steps_at, STEP_BYTES));
        if structure {
            check_steps(tree, &steps).map_err(|step| TablesError::Step { tree: i, step })?;
        }
        shaps.push(TreeShap {
            steps,
            scalars: view(range(scalars_at, SCALAR_BYTES)),
            root_value,
            path_features,
        });
        if q > 0 {
            tables.push(view(range(recips_at, 24 * q)));
        }
        max_features = max_features.max(path_features);
        first += count;
    }
    if first != n_steps {
        return Err(TablesError::Mismatch("split count"));
    }
    if structure && u64_at(bytes, 24) != fingerprint(forest) {
        return Err(TablesError::Mismatch("leaf covers"));
    }
    if quad_size(max_features) != q {
        return Err(TablesError::Mismatch("quadrature size"));
    }
    let refs: Vec<&TreeShap> = shaps.iter().collect();
    let forest_shap = ForestShap::assemble(trees, &refs, q, tables);
    Ok((shaps, forest_shap))
}

/// Compares the stored checksum with the bytes after the header; `bytes` is at least a header.
fn verify_checksum(bytes: &[u8]) -> Result<(), TablesError> {
    let found = xxh3_64(&bytes[TABLES_HEADER..]);
    let expected = u64_at(bytes, 32);
    if found != expected {
        return Err(TablesError::Checksum { expected, found });
    }
    Ok(())
}

/// Checks that `steps` are the tree's splits in pre-order (which is node order) with the same
/// children, features and thresholds, and that each flag slot is one `tree_phi` has written by
/// then: what keeps every index in `tree_phi` in range. Returns the first bad step.
fn check_steps(tree: &Tree, steps: &[Step]) -> Result<(), usize> {
    let always_hot = 2 * steps.len() as u64;
    let mut splits = tree.iter_nodes().enumerate().filter_map(|(i, n)| match n {
        Node::Split {
            feature,
            threshold,
            right,
        } => Some((i, feature, threshold, right)),
        Node::Leaf { .. } => None,
    });
    for (s, step) in steps.iter().enumerate() {
        let Some((i, feature, threshold, right)) = splits.next() else {
            return Err(s);
        };
        let prev = u64::from(step.prev);
        if step.node as usize != i
            || step.right != right
            || step.feature != feature
            || step.threshold.to_bits() != threshold.to_bits()
            || step._pad != 0
            || !(prev < 2 * s as u64 || prev == always_hot)
        {
            return Err(s);
        }
    }
    match splits.next() {
        Some(_) => Err(steps.len()),
        None => Ok(()),
    }
}
