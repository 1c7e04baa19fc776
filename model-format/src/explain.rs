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
//! Per tree, a forward pass over the splits carries `P(t_k) = Π_j f_j(t_k)` from
//! each split to its children; leaves turn `P` into `H = value·P`; a backward pass sums `H`
//! up and, at each split on `i`, adds to `φ_i` the telescoping change of `(o−z)/f_i` between
//! its children and the previous split on `i` along the path, weighted by the children's `H`.
//! Because `o ∈ {0, 1}`:
//!
//! * once `x` has left a feature's edge (`o = 0`), `f = z(1−t)`, so deeper splits on that
//!   feature only scale `P` by the cover ratio and contribute nothing;
//! * `(o−z)/f = −1/(1−t)` for a cold edge, independent of `z`.
//!
//! So a child's `P` is its split's times one of three factors, and a split adds to `φ` its
//! hot child's `H` and its cold child's `H`, each weighted: all of them fixed by the model.
//! They are precomputed per split when the forest is built (a record of five `q`-rows and four
//! scalars, see `write_record`; every division is done there), so a row costs
//! multiplications only, and `x` only picks which factor and which weight. The passes are
//! branch-free: the control flow is the same for every row, because mispredicted branches,
//! not arithmetic, dominated a recursive walk. The splits are laid out in level order (the
//! root, then depth 1, ...; pre-order within a level), so consecutive splits are never parent
//! and child and the processor overlaps them; the scratch lanes are padded to an even count
//! and 32-byte aligned so that a value stored is forwarded to the load that reads it.
//!
//! Cost: `O(nodes · q)` per tree, where the textbook algorithm is `O(leaves · depth²)`. The
//! forest uses one `q` (from its most feature-rich path) and dispatches to a monomorphised
//! kernel so the `q`-wide loops unroll. `trainer/tests/explain_exactness.rs` checks it against
//! the textbook algorithm on forests fitted to the ADBench sets and the legacy sample.
//!
//! # Several rows at once
//!
//! A batch job ([`crate::Model::explain_rows`], `trainer score --explain`) runs the same passes
//! over [`ROWS`] rows together: the split, its record and the loop are read once for all of
//! them, the rows' lanes sit side by side (per node and quadrature point, `ROWS` values: vector
//! registers, AVX2 when the processor has it), a row's flag picks its value by bit selection,
//! and each value a row can pick is computed per split with the very operations the one-row
//! pass uses. So every row gets the bits it gets alone, at about half the time per row on one
//! core (`bench_explain`, `explain_rows`).
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
//!    8  version          u32 = 3 (`TABLES_VERSION`; 2 had the weights unscaled, 1 reciprocals)
//!   12  n_trees          u32
//!   16  n_steps          u32   splits in the whole forest
//!   20  q                u32   quadrature points (0: some path has too many features)
//!   24  fingerprint      u64   XXH3-64 of each tree's node count and leaf sample counts (u32)
//!   32  checksum         u64   XXH3-64 (seed 0) of every byte after the header
//!   40  reserved         u64 = 0
//! per tree (16 bytes each): n_steps u32, path_features u32, root_value f64
//! steps: n_steps × 20 bytes (`Step`: node, right, prev u32; threshold f32; feature, 0 u16),
//!        in level order, zero-padded to a multiple of 8
//! records: n_steps × (5q + 4) f64 (`write_record`; none when q = 0)
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

/// Nodes whose scratch is kept on the stack (a power of two); larger trees allocate.
const STACK_NODES: usize = 512;
/// Features a row may have for the portable kernel's fixed-size buffers (a power of two).
const STACK_FEATURES: usize = 64;

/// One split, in level order: where its values live and which flag gates it. `repr(C)` without
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
            Visit(usize, u32),
            Set(usize, (f64, u32, u32)),
        }
        let mut depths = Vec::with_capacity(n_splits);
        let mut stack = vec![Walk::Visit(0, 0)];
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
                Walk::Visit(node, depth) => match nodes[node] {
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
                        depths.push(depth);
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
                        stack.push(Walk::Visit(r, depth + 1));
                        stack.push(Walk::Set(f, (z_r, uses + 1, 2 * s + 1)));
                        stack.push(Walk::Visit(node + 1, depth + 1));
                        stack.push(Walk::Set(f, (z_l, uses + 1, 2 * s)));
                    }
                },
            }
        }
        // Level order (pre-order within a level): consecutive splits are then independent, so
        // the passes do not wait on the value the previous split just stored.
        let mut order: Vec<usize> = (0..steps.len()).collect();
        order.sort_by_key(|&i| (depths[i], i));
        let mut position = vec![0u32; steps.len()];
        for (i, &o) in order.iter().enumerate() {
            position[o] = i as u32;
        }
        let steps: Vec<Step> = order
            .iter()
            .map(|&o| {
                let mut step = steps[o];
                if step.prev != always_hot {
                    step.prev = 2 * position[step.prev as usize / 2] + step.prev % 2;
                }
                step
            })
            .collect();
        let scalars: Vec<[f64; SCALARS]> = order.iter().map(|&o| scalars[o]).collect();
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
    /// Per tree, one record per split in level order (see `write_record`): the divisions,
    /// done once here instead of per row. Borrowed when installed from embedded tables.
    tables: Vec<Cow<'static, [f64]>>,
    /// Most nodes in one tree, to size the scratch.
    max_nodes: usize,
    /// Σ root values / n_trees.
    expected_value: f64,
}

/// Per split: five `q`-rows and four scalars (see `write_record`); none without a rule.
fn record_len(q: usize) -> usize {
    if q == 0 { 0 } else { 5 * q + 4 }
}

/// One split's record for a `q`-point rule with points `t`: everything a row needs from this split,
/// with every division done here. With `a = z + t(1−z)` (the feature's factor before the split
/// while x follows it), `b_c = z_c + t(1−z_c)` (after x takes child c) and `u = (1−t)/a`:
///
/// ```text
/// rows:    b_l/a · v_l | u | b_r/a · v_r | (1−t)²·dz_l/(a·b_l) | (1−t)²·dz_r/(a·b_r)
/// scalars: r_l·v_l, r_r·v_r, z_l·v_l, z_r·v_r
/// ```
///
/// A child's `P` is its split's times `b_c/a · v_c` when x follows the feature into it,
/// `z_c·v_c · u` when x leaves the feature here, `r_c·v_c` when x had left it above; the
/// backward pass weighs the hot child by `w·dz_c/(a·b_c)` and the cold one by
/// `w/((1−t)·a) = u · w/(1−t)²`. The passes carry `P` and `H` times `w/(1−t)²` (per point, from
/// the root on), so the cold weight is `u` itself and the hot one is stored divided by that
/// factor: one product less per point and split. Sharing `u` keeps the tables as small as the
/// scalars and reciprocals they replace.
fn write_record(s: &[f64; SCALARS], t: &[f64], out: &mut Vec<f64>) {
    let a = |k: usize| s[Z] + t[k] * (1.0 - s[Z]);
    let b = |z: f64, k: usize| z + t[k] * (1.0 - z);
    let q = t.len();
    out.extend((0..q).map(|k| b(s[Z_LEFT], k) / a(k) * s[V_LEFT]));
    out.extend((0..q).map(|k| (1.0 - t[k]) / a(k)));
    out.extend((0..q).map(|k| b(s[Z_RIGHT], k) / a(k) * s[V_RIGHT]));
    for (dz, z) in [(s[DZ_LEFT], s[Z_LEFT]), (s[DZ_LEFT + 1], s[Z_RIGHT])] {
        out.extend((0..q).map(|k| {
            let one_minus_t = 1.0 - t[k];
            one_minus_t * one_minus_t * dz / (a(k) * b(z, k))
        }));
    }
    out.extend([
        s[R_LEFT] * s[V_LEFT],
        s[R_RIGHT] * s[V_RIGHT],
        s[Z_LEFT] * s[V_LEFT],
        s[Z_RIGHT] * s[V_RIGHT],
    ]);
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
                    let mut out = Vec::with_capacity(shap.scalars.len() * record_len(q));
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

/// Adds the attributions of the forest's trees `trees` (unscaled: each leaf worth its full
/// path length) to `phi`. `x` must cover every split feature and `phi.len() == x.len()`.
pub(crate) fn forest_phi(
    forest: &Forest,
    x: &[f32],
    phi: &mut [f64],
    trees: std::ops::Range<usize>,
) -> Result<(), ExplainError> {
    let shap = forest.shap();
    if !shap.supported() {
        return Err(too_complex(forest.trees().iter().map(Tree::shap)));
    }
    let first = trees.start;
    ensemble_phi(
        shap,
        forest.trees()[trees].iter().map(Tree::shap),
        first,
        x,
        phi,
    );
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
/// with the rule and tables of `shap` (built for an ensemble whose trees from index `first` on
/// are these, in this order, and `supported`). `x` must cover every split feature and
/// `phi.len() == x.len()`.
pub(crate) fn ensemble_phi<'t>(
    shap: &ForestShap,
    trees: impl Iterator<Item = &'t TreeShap>,
    first: usize,
    x: &[f32],
    phi: &mut [f64],
) {
    let tables = shap.tables.get(first..).unwrap_or_default();
    match shap.q {
        0 => {}
        1 => run::<1, 2>(shap, trees, tables, x, phi, true),
        2 => run::<2, 2>(shap, trees, tables, x, phi, true),
        3 => run::<3, 4>(shap, trees, tables, x, phi, true),
        4 => run::<4, 4>(shap, trees, tables, x, phi, true),
        5 => run::<5, 6>(shap, trees, tables, x, phi, true),
        6 => run::<6, 6>(shap, trees, tables, x, phi, true),
        8 => run::<8, 8>(shap, trees, tables, x, phi, true),
        12 => run::<12, 12>(shap, trees, tables, x, phi, true),
        16 => run::<16, 16>(shap, trees, tables, x, phi, true),
        24 => run::<24, 24>(shap, trees, tables, x, phi, true),
        _ => run::<32, 32>(shap, trees, tables, x, phi, true),
    }
}

/// One node's lanes, aligned so that no load or store of them straddles a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Lanes<const L: usize>([f64; L]);

/// One kernel for all the trees: on the AVX2 loop when `vector` and the processor has AVX2,
/// else on the portable one (what WebAssembly runs); both give the same bits (a test compares
/// them).
fn run<'t, const Q: usize, const L: usize>(
    shap: &ForestShap,
    trees: impl Iterator<Item = &'t TreeShap>,
    tables: &[Cow<'static, [f64]>],
    x: &[f32],
    phi: &mut [f64],
    vector: bool,
) {
    // Per point w/(1−t)²: a record's u times this is the cold child's weight. The passes carry
    // P and H scaled by it (the root starts at it), so the backward pass needs no product for
    // it; the hot child's weight in the record is divided by it instead (`write_record`).
    let cold: [f64; Q] = core::array::from_fn(|k| {
        let one_minus_t = 1.0 - shap.t[k];
        shap.w[k] / (one_minus_t * one_minus_t)
    });
    // P, then H, per node; and per split its hot-left/hot-right flags. Both lengths are powers
    // of two (see `tree_phi`).
    let mut stack_values = [Lanes([0.0f64; L]); STACK_NODES];
    let mut stack_flags = [0u8; 2 * STACK_NODES];
    let (mut heap_values, mut heap_flags) = (Vec::new(), Vec::new());
    let (values, flags): (&mut [Lanes<L>], &mut [u8]) = if shap.max_nodes <= STACK_NODES {
        (&mut stack_values, &mut stack_flags)
    } else {
        // Only trees far larger than scikit-learn grows for ψ = 256 (≤ 511 nodes).
        let n = shap.max_nodes.next_power_of_two();
        heap_values.resize(n, Lanes([0.0; L]));
        heap_flags.resize(2 * n, 0);
        (&mut heap_values, &mut heap_flags)
    };
    // With the stack's scratch and a row that fits, the row and its sums go into fixed-size
    // buffers: then every index mask in the loop is a constant and the feature indices need
    // no bounds checks (WebAssembly compilers then keep fewer values live across it: 7 %
    // faster there). Copying `phi` in and out keeps the sums' order, so the bits.
    if values.len() == STACK_NODES && x.len() <= STACK_FEATURES && phi.len() == x.len() {
        let mut xs = [0f32; STACK_FEATURES];
        let mut sums = [0f64; STACK_FEATURES];
        xs[..x.len()].copy_from_slice(x);
        sums[..phi.len()].copy_from_slice(phi);
        all_trees::<Q, L, STACK_NODES>(trees, tables, &xs, &cold, values, flags, &mut sums, vector);
        phi.copy_from_slice(&sums[..x.len()]);
    } else {
        all_trees::<Q, L, 0>(trees, tables, x, &cold, values, flags, phi, vector);
    }
}

/// `tree_phi` over the trees: the AVX2 loop when `vector` and the processor has it, else the
/// portable one. `N` as in `tree_phi`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn all_trees<'t, const Q: usize, const L: usize, const N: usize>(
    trees: impl Iterator<Item = &'t TreeShap>,
    tables: &[Cow<'static, [f64]>],
    x: &[f32],
    cold: &[f64; Q],
    values: &mut [Lanes<L>],
    flags: &mut [u8],
    phi: &mut [f64],
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2 (checked just above).
        unsafe { trees_avx2::<Q, L, N>(trees, tables, x, cold, values, flags, phi) };
        return;
    }
    let _ = vector;
    for (tree, table) in trees.zip(tables) {
        tree_phi::<Q, L, Q, N>(tree, table, x, cold, values, flags, phi);
    }
}

/// `run`'s loop over the trees compiled for AVX2: a node's lanes in one register, the padding
/// lanes computed along (one 4-wide operation instead of a 2-wide and a scalar one for `Q = 3`);
/// no FMA, so every operation rounds as without it and the bits are the same. About 5 % faster
/// natively, and 3–5 % more with the padding lanes computed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn trees_avx2<'t, const Q: usize, const L: usize, const N: usize>(
    trees: impl Iterator<Item = &'t TreeShap>,
    tables: &[Cow<'static, [f64]>],
    x: &[f32],
    cold: &[f64; Q],
    values: &mut [Lanes<L>],
    flags: &mut [u8],
    phi: &mut [f64],
) {
    for (tree, table) in trees.zip(tables) {
        tree_phi::<Q, L, L, N>(tree, table, x, cold, values, flags, phi);
    }
}

/// A flag (0 or 1) as a float, from bits rather than an int-to-float conversion: x86's
/// `cvtsi2sd` merges into its destination register, a false dependency that chained each
/// split to the previous one's arithmetic.
#[inline(always)]
fn unit(flag: usize) -> f64 {
    f64::from_bits((flag as u64 & 1).wrapping_neg() & 1f64.to_bits())
}

/// One tree's contribution: a forward pass over the splits, then a backward one.
///
/// `values` holds one `P`, then `H`, per node: `Q` lanes padded to `L` (even), so that every
/// load and store of a node's lanes has the same width and offsets and a value just stored
/// is forwarded to the next load. `flags` holds 2 per split + 1. Both have power-of-two
/// lengths, at least the largest tree's node count and twice it, and every index into them
/// is masked to that length: in range by construction, so the loop carries no bounds checks,
/// and for any table that installed (every split checked unless the caller vouched for them)
/// the mask changes nothing. Rows of a record are indexed by 0/1 flags plus constants, below 5.
#[inline(always)]
fn tree_phi<const Q: usize, const L: usize, const W: usize, const N: usize>(
    tree: &TreeShap,
    table: &[f64],
    x: &[f32],
    cold: &[f64; Q],
    values: &mut [Lanes<L>],
    flags: &mut [u8],
    phi: &mut [f64],
) {
    debug_assert!(values.len().is_power_of_two() && flags.len() == 2 * values.len());
    // `N > 0`: the scratch holds `N` nodes and the row and `phi` are `STACK_FEATURES` long,
    // so every index can be masked by a constant (0: lengths read, features bounds-checked).
    assert!(
        N == 0
            || (values.len() == N
                && flags.len() == 2 * N
                && x.len() == STACK_FEATURES
                && phi.len() == STACK_FEATURES)
    );
    let (vmask, fmask) = if N > 0 {
        (N - 1, 2 * N - 1)
    } else {
        (values.len() - 1, flags.len() - 1)
    };
    let steps = &tree.steps[..];
    let splits = steps.iter().zip(table.chunks_exact(5 * Q + 4));
    const { assert!(W == Q || W == L) };
    const { assert!(Q <= L && L <= Q + 4) };
    // `W` values from row `r` on: the row's `Q` and, when `W = L`, the record's next values
    // (any finite numbers; they only reach the padding lanes).
    let row = |rec: &[f64], r: usize| -> [f64; W] {
        debug_assert!(rec.len() == 5 * Q + 4 && r < 5);
        // SAFETY: `rec` has 5 rows of `Q` and 4 more values (chunks_exact), every `r` passed
        // is below 5, and `4Q + W ≤ 5Q + 4` (asserted above, W ≤ L ≤ Q + 4).
        unsafe { *(rec.as_ptr().add(r * Q) as *const [f64; W]) }
    };
    // SAFETY (every get_unchecked below): the index is masked to the slice's length, a power
    // of two.
    let value = |values: &[Lanes<L>], i: usize| unsafe { values.get_unchecked(i & vmask).0 };
    // A feature's entry of the row or of `phi`: masked when `N > 0` (asserted above: both are
    // `STACK_FEATURES` long, a power of two), else bounds-checked.
    #[inline(always)]
    fn feature<T, const N: usize>(v: &[T], f: u16) -> &T {
        if N > 0 {
            // SAFETY: `v.len() == STACK_FEATURES` (asserted by the caller), a power of two.
            unsafe { v.get_unchecked(usize::from(f) & (STACK_FEATURES - 1)) }
        } else {
            &v[usize::from(f)]
        }
    }
    #[inline(always)]
    fn feature_mut<T, const N: usize>(v: &mut [T], f: u16) -> &mut T {
        if N > 0 {
            // SAFETY: as in `feature`.
            unsafe { v.get_unchecked_mut(usize::from(f) & (STACK_FEATURES - 1)) }
        } else {
            &mut v[usize::from(f)]
        }
    }
    // flags[2s] / flags[2s+1]: x took every edge on the split's feature down to its left /
    // right child (o after the edge). The slot after them is the always-hot root state.
    flags[(2 * steps.len()) & fmask] = 1;
    // Padding lanes start at 0 and so stay 0 (finite factors), whatever `W` computes in them.
    values[0] = Lanes(core::array::from_fn(|k| if k < Q { cold[k] } else { 0.0 }));
    for (s, (step, rec)) in splits.clone().enumerate() {
        let left = usize::from(*feature::<f32, N>(x, step.feature) <= step.threshold);
        let was_hot = usize::from(unsafe { *flags.get_unchecked(step.prev as usize & fmask) } & 1);
        let (o_l, o_r) = (was_hot & left, was_hot & (1 - left));
        unsafe {
            *flags.get_unchecked_mut((2 * s) & fmask) = o_l as u8;
            *flags.get_unchecked_mut((2 * s + 1) & fmask) = o_r as u8;
        }
        // Each child's factor as `row · scale + add` (see `write_record`): the hot row, else
        // u scaled by z_c·v_c, else 0·u + r_c·v_c. Selections by 0/1 factors are exact.
        let sc = &rec[5 * Q..];
        let (hot, fl, fr) = (unit(was_hot), unit(o_l), unit(o_r));
        let scale_l = hot * (fl + (1.0 - fl) * sc[2]);
        let scale_r = hot * (fr + (1.0 - fr) * sc[3]);
        let (add_l, add_r) = ((1.0 - hot) * sc[0], (1.0 - hot) * sc[1]);
        let (m_l, m_r) = (row(rec, 1 - o_l), row(rec, 1 + o_r));
        let node = step.node as usize;
        let p = value(values, node);
        let (mut pl, mut pr) = ([0.0; L], [0.0; L]);
        for k in 0..W {
            pl[k] = p[k] * (m_l[k] * scale_l + add_l);
            pr[k] = p[k] * (m_r[k] * scale_r + add_r);
        }
        unsafe {
            *values.get_unchecked_mut(node.wrapping_add(1) & vmask) = Lanes(pl);
            *values.get_unchecked_mut(step.right as usize & vmask) = Lanes(pr);
        }
    }
    for (s, (step, rec)) in splits.enumerate().rev() {
        // φ_f += Σ_k w_k/a_k · (dz_hot/b_hot · H_hot − H_cold/(1−t_k)) if x still followed
        // f above this split: the change of (o−z)/f between its children and the previous
        // split on f. The hot side is the one whose flag is set.
        let o_l = usize::from(unsafe { *flags.get_unchecked((2 * s) & fmask) } & 1);
        let o_r = usize::from(unsafe { *flags.get_unchecked((2 * s + 1) & fmask) } & 1);
        let node = step.node as usize;
        let (left, right) = (node.wrapping_add(1), step.right as usize);
        // The hot child and the other, swapped without a branch when the right one is hot.
        let swap = o_r.wrapping_neg() & (left ^ right);
        let (h_hot, h_cold) = (value(values, left ^ swap), value(values, right ^ swap));
        let (alpha, u) = (row(rec, 3 + o_r), row(rec, 1));
        let (mut d, mut h) = ([0.0; W], [0.0; L]);
        for k in 0..W {
            d[k] = alpha[k] * h_hot[k] - u[k] * h_cold[k];
            h[k] = h_hot[k] + h_cold[k];
        }
        // Summed point by point in order, whatever `W`: the same bits on every path.
        let mut acc = 0.0;
        for dk in &d[..Q] {
            acc += dk;
        }
        unsafe { *values.get_unchecked_mut(node & vmask) = Lanes(h) };
        *feature_mut::<f64, N>(phi, step.feature) += unit(o_l | o_r) * acc;
    }
}

// ---------------------------------------------------------------------------------------------
// Several rows at once (batch jobs)
// ---------------------------------------------------------------------------------------------

/// Rows [`Model::explain_rows`](crate::Model::explain_rows) carries through each tree together
/// (four AVX2 registers of f64 per quadrature point; 4 and 8 measured slower), with the same
/// arithmetic per row as one row alone, so each row's result is bit for bit what it gets alone.
pub const ROWS: usize = 16;

/// Whether [`forest_phi_rows`] beats one row at a time on this processor: with AVX2 only. As
/// WebAssembly (no SIMD in the component) it took 2.3× as long per row as `forest_phi`
/// (`bench_explain` under wasmtime), the lanes being scalar loops there.
pub(crate) fn rows_at_once_pay() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Scratch for [`forest_phi_rows`], reused across calls: per node `Q × ROWS` lanes (held as
/// up to 32 × ROWS), per split two flags per row, per feature the rows' sums.
pub(crate) struct RowsScratch {
    /// The rows feature by feature, so that a split compares all of them at once.
    xt: Vec<[f32; ROWS]>,
    values: Vec<[f64; ROWS]>,
    flags: Vec<[u64; ROWS]>,
    phi: Vec<[f64; ROWS]>,
}

impl RowsScratch {
    pub(crate) fn new() -> Self {
        Self {
            xt: Vec::new(),
            values: Vec::new(),
            flags: Vec::new(),
            phi: Vec::new(),
        }
    }
}

/// [`forest_phi`] for [`ROWS`] rows at once, adding to each `phis[r]` what `forest_phi` would add
/// for `xs[r]`, to the bit. A batch job's bottleneck is the per-split work that does not depend
/// on the row (reading the split and its record, the loop itself); here it is done once per
/// `ROWS` rows and the per-row arithmetic runs side by side in vector lanes. Each `xs[r]` must
/// cover every split feature and `phis[r].len() == xs[r].len()`.
pub(crate) fn forest_phi_rows(
    forest: &Forest,
    xs: [&[f32]; ROWS],
    phis: &mut [&mut [f64]; ROWS],
    trees: std::ops::Range<usize>,
    scratch: &mut RowsScratch,
) -> Result<(), ExplainError> {
    let shap = forest.shap();
    if !shap.supported() {
        return Err(too_complex(forest.trees().iter().map(Tree::shap)));
    }
    let width = phis.iter().map(|p| p.len()).max().unwrap_or(0);
    // Power-of-two scratch, every index masked to it: in range by construction (no panic on
    // tables a caller vouched for), as in `tree_phi`.
    // Lanes and flags are written before they are read in every tree: sized, never cleared.
    let nodes = shap.max_nodes.max(1).next_power_of_two();
    scratch.values.resize(nodes * shap.q, [0.0; ROWS]);
    scratch.flags.resize(2 * nodes, [0; ROWS]);
    scratch.phi.clear();
    scratch.phi.resize(width, [0.0; ROWS]);
    scratch.xt.clear();
    let columns = xs.iter().map(|x| x.len()).min().unwrap_or(0);
    scratch
        .xt
        .extend((0..columns).map(|j| core::array::from_fn(|r| xs[r][j])));
    let first = trees.start;
    let tables = shap.tables.get(first..).unwrap_or_default();
    let trees = forest.trees()[trees].iter().map(Tree::shap);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available, checked just above.
        unsafe { rows_avx2(shap, trees, tables, scratch) };
        return finish_rows(&scratch.phi, phis);
    }
    rows_dispatch(shap, trees, tables, scratch);
    finish_rows(&scratch.phi, phis)
}

/// Adds the summed attributions to each row's `phi`.
fn finish_rows(phi: &[[f64; ROWS]], phis: &mut [&mut [f64]; ROWS]) -> Result<(), ExplainError> {
    for (r, out) in phis.iter_mut().enumerate() {
        for (o, p) in out.iter_mut().zip(phi) {
            *o += p[r];
        }
    }
    Ok(())
}

/// [`rows_dispatch`] compiled for AVX2, so the `ROWS` lanes are one register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_avx2<'t>(
    shap: &ForestShap,
    trees: impl Iterator<Item = &'t TreeShap>,
    tables: &[Cow<'static, [f64]>],
    scratch: &mut RowsScratch,
) {
    rows_dispatch(shap, trees, tables, scratch);
}

#[inline(always)]
fn rows_dispatch<'t>(
    shap: &ForestShap,
    trees: impl Iterator<Item = &'t TreeShap>,
    tables: &[Cow<'static, [f64]>],
    scratch: &mut RowsScratch,
) {
    match shap.q {
        0 => {}
        1 => run_rows::<1>(shap, trees, tables, scratch),
        2 => run_rows::<2>(shap, trees, tables, scratch),
        3 => run_rows::<3>(shap, trees, tables, scratch),
        4 => run_rows::<4>(shap, trees, tables, scratch),
        5 => run_rows::<5>(shap, trees, tables, scratch),
        6 => run_rows::<6>(shap, trees, tables, scratch),
        8 => run_rows::<8>(shap, trees, tables, scratch),
        12 => run_rows::<12>(shap, trees, tables, scratch),
        16 => run_rows::<16>(shap, trees, tables, scratch),
        24 => run_rows::<24>(shap, trees, tables, scratch),
        _ => run_rows::<32>(shap, trees, tables, scratch),
    }
}

#[inline(always)]
fn run_rows<'t, const Q: usize>(
    shap: &ForestShap,
    trees: impl Iterator<Item = &'t TreeShap>,
    tables: &[Cow<'static, [f64]>],
    scratch: &mut RowsScratch,
) {
    // As in `run`: w/(1−t)² per point.
    let cold: [f64; Q] = core::array::from_fn(|k| {
        let one_minus_t = 1.0 - shap.t[k];
        shap.w[k] / (one_minus_t * one_minus_t)
    });
    let s = scratch;
    let (xt, values, flags, phi) = (
        &s.xt[..],
        &mut s.values[..],
        &mut s.flags[..],
        &mut s.phi[..],
    );
    for (tree, table) in trees.zip(tables) {
        tree_phi_rows::<Q>(tree, table, xt, &cold, values, flags, phi);
    }
}

/// A 0/1 flag per row as an all-zeros / all-ones mask.
#[inline(always)]
fn mask(flag: bool) -> u64 {
    u64::from(flag).wrapping_neg()
}

/// `unit` of a mask: 1.0 where set, else 0.0.
#[inline(always)]
fn unit_mask(m: u64) -> f64 {
    f64::from_bits(m & 1f64.to_bits())
}

/// `a` where the mask is set, else `b`: exactly one of them. Written as a select on the sign
/// bit, which vectorizes to one blend (a bit select takes three operations).
#[inline(always)]
fn pick(m: u64, a: f64, b: f64) -> f64 {
    if (m as i64) < 0 { a } else { b }
}

/// [`tree_phi`] for `ROWS` rows: the same passes and, per row, the same operations in the same
/// order (a flag picks a record's row, or a child, by bit selection rather than by index), so
/// that a row's attributions do not depend on the rows beside it. `values` holds `Q` lane
/// groups per node (node `i` at `Q·i`), `flags` two per split and the always-hot slot; both
/// lengths are powers of two times their strides and every index is masked to them.
#[inline(always)]
fn tree_phi_rows<const Q: usize>(
    tree: &TreeShap,
    table: &[f64],
    xt: &[[f32; ROWS]],
    cold: &[f64; Q],
    values: &mut [[f64; ROWS]],
    flags: &mut [[u64; ROWS]],
    phi: &mut [[f64; ROWS]],
) {
    let vmask = values.len() / Q - 1;
    let fmask = flags.len() - 1;
    let steps = &tree.steps[..];
    let splits = steps.iter().zip(table.chunks_exact(5 * Q + 4));
    let at = |node: usize| (node & vmask) * Q;
    flags[(2 * steps.len()) & fmask] = [u64::MAX; ROWS];
    for (k, lanes) in values[..Q].iter_mut().enumerate() {
        *lanes = [cold[k]; ROWS];
    }
    for (s, (step, rec)) in splits.clone().enumerate() {
        let x = xt[usize::from(step.feature)];
        let was_hot = flags[step.prev as usize & fmask];
        let mut o_l = [0u64; ROWS];
        let mut o_r = [0u64; ROWS];
        for r in 0..ROWS {
            let left = mask(x[r] <= step.threshold);
            o_l[r] = was_hot[r] & left;
            o_r[r] = was_hot[r] & !left;
        }
        flags[(2 * s) & fmask] = o_l;
        flags[(2 * s + 1) & fmask] = o_r;
        // A child's factor takes one of three values per point, fixed by the split: `tree_phi`'s
        // `row · scale + add` for x following the feature into it (hot), leaving it here
        // (cold), or having left it above (off), computed here once with the same operations,
        // so each row only picks one.
        let sc = &rec[5 * Q..];
        let case = |hot: f64, flag: f64, z: f64, r: f64| {
            (hot * (flag + (1.0 - flag) * z), (1.0 - hot) * r)
        };
        let (hot_sl, hot_al) = case(1.0, 1.0, sc[2], sc[0]);
        let (cold_sl, cold_al) = case(1.0, 0.0, sc[2], sc[0]);
        let (off_sl, off_al) = case(0.0, 0.0, sc[2], sc[0]);
        let (hot_sr, hot_ar) = case(1.0, 1.0, sc[3], sc[1]);
        let (cold_sr, cold_ar) = case(1.0, 0.0, sc[3], sc[1]);
        let (off_sr, off_ar) = case(0.0, 0.0, sc[3], sc[1]);
        let (p_at, l_at, r_at) = (
            at(step.node as usize),
            at(step.node as usize + 1),
            at(step.right as usize),
        );
        for k in 0..Q {
            let (hot_l, u, hot_r) = (rec[k], rec[Q + k], rec[2 * Q + k]);
            let left = [
                hot_l * hot_sl + hot_al,
                u * cold_sl + cold_al,
                u * off_sl + off_al,
            ];
            let right = [
                hot_r * hot_sr + hot_ar,
                u * cold_sr + cold_ar,
                u * off_sr + off_ar,
            ];
            let p = values[p_at + k];
            let (mut pl, mut pr) = ([0.0; ROWS], [0.0; ROWS]);
            for r in 0..ROWS {
                let (w, ol, or) = (was_hot[r], o_l[r], o_r[r]);
                pl[r] = p[r] * pick(ol, left[0], pick(w, left[1], left[2]));
                pr[r] = p[r] * pick(or, right[0], pick(w, right[1], right[2]));
            }
            values[l_at + k] = pl;
            values[r_at + k] = pr;
        }
    }
    for (s, (step, rec)) in splits.enumerate().rev() {
        let (o_l, o_r) = (flags[(2 * s) & fmask], flags[(2 * s + 1) & fmask]);
        let (n_at, l_at, r_at) = (
            at(step.node as usize),
            at(step.node as usize + 1),
            at(step.right as usize),
        );
        let mut acc = [0.0; ROWS];
        for k in 0..Q {
            let (alpha_l, alpha_r) = (rec[3 * Q + k], rec[4 * Q + k]);
            let u_cold = rec[Q + k];
            let (vl, vr) = (values[l_at + k], values[r_at + k]);
            let mut h = [0.0; ROWS];
            for r in 0..ROWS {
                // `tree_phi`'s term with the left child hot, and with the right one hot.
                let (by_l, by_r) = (
                    alpha_l * vl[r] - u_cold * vr[r],
                    alpha_r * vr[r] - u_cold * vl[r],
                );
                acc[r] += pick(o_r[r], by_r, by_l);
                h[r] = vl[r] + vr[r];
            }
            values[n_at + k] = h;
        }
        let sums = &mut phi[usize::from(step.feature)];
        for r in 0..ROWS {
            sums[r] += unit_mask(o_l[r] | o_r[r]) * acc[r];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Precomputed tables
// ---------------------------------------------------------------------------------------------
//
// Serialized form of the tables: see "Precomputed tables" in the module docs.

const TABLES_MAGIC: [u8; 8] = *b"SFESHAP\0";
/// The serialized tables' format version; a host that stores tables (the edge's key-value
/// store) keeps it beside them and rebuilds tables of another version.
pub const TABLES_VERSION: u32 = 3;
const TABLES_HEADER: usize = 48;
const TREE_ENTRY: usize = 16;
const STEP_BYTES: usize = core::mem::size_of::<Step>();

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
            + 8 * record_len(q) * n_steps,
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
    for table in &shap.tables {
        table
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
    let checksum = xxh3_64(&out[TABLES_HEADER..]);
    out[32..40].copy_from_slice(&checksum.to_le_bytes());
    out
}

/// Serialized tables as consecutive parts of one byte string: a key-value store that caps
/// the size of a value hands them over that way. Each range is viewed in the part that holds
/// it and only a range across two parts is copied, so installing tables does not join the
/// parts into a second copy first. At a fresh edge instance every megabyte of new memory costs
/// ~0.3 ms in page faults, more than the rest of installing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts<'p> {
    parts: &'p [&'static [u8]],
    len: usize,
}

impl<'p> Parts<'p> {
    pub(crate) fn new(parts: &'p [&'static [u8]]) -> Self {
        Parts {
            parts,
            len: parts.iter().map(|p| p.len()).sum(),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Bytes `start..end` (within `len`): borrowed from one part, or copied across parts.
    fn range(&self, start: usize, end: usize) -> Cow<'static, [u8]> {
        let mut joined: Option<Vec<u8>> = None;
        let mut at = 0;
        for part in self.parts {
            let (lo, hi) = (at, at + part.len());
            at = hi;
            if hi <= start || start >= end {
                continue;
            }
            if lo >= end {
                break;
            }
            let piece = &part[start.max(lo) - lo..end.min(hi) - lo];
            match &mut joined {
                None if end <= hi => return Cow::Borrowed(piece),
                None => joined = Some(piece.to_vec()),
                Some(out) => out.extend_from_slice(piece),
            }
        }
        joined.map_or(Cow::Borrowed(&[]), Cow::Owned)
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.range(at, at + 4)[..].try_into().unwrap_or([0; 4]))
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.range(at, at + 8)[..].try_into().unwrap_or([0; 8]))
    }

    /// XXH3-64 of the bytes from `start` on, as if they were one slice.
    fn xxh3_from(&self, start: usize) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut at = 0;
        for part in self.parts {
            let skip = start.saturating_sub(at).min(part.len());
            hasher.update(&part[skip..]);
            at += part.len();
        }
        hasher.digest()
    }
}

/// A view of `bytes` as `T`s: borrowed if suitably aligned, else copied.
fn view<T: Pod>(bytes: Cow<'static, [u8]>) -> Cow<'static, [T]> {
    match bytes {
        Cow::Borrowed(b) => match bytemuck::try_cast_slice(b) {
            Ok(slice) => Cow::Borrowed(slice),
            Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(b)),
        },
        Cow::Owned(b) => Cow::Owned(bytemuck::pod_collect_to_vec(&b)),
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
    bytes: Parts<'_>,
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
    if *bytes.range(0, 8) != TABLES_MAGIC {
        return Err(TablesError::Magic);
    }
    let version = bytes.u32_at(8);
    if version != TABLES_VERSION {
        return Err(TablesError::Version(version));
    }
    if bytes.u32_at(12) as usize != trees.len() {
        return Err(TablesError::Mismatch("tree count"));
    }
    let n_steps = u64::from(bytes.u32_at(16));
    let q = bytes.u32_at(20) as usize;
    if !(q == 0 || QUAD_SIZES.contains(&q)) {
        return Err(TablesError::Mismatch("quadrature size"));
    }
    if bytes.u64_at(40) != 0 {
        return Err(TablesError::Reserved);
    }
    // In u64: n_steps is not yet known to be the model's, and usize may be 32 bits.
    let steps_at = (TABLES_HEADER + TREE_ENTRY * trees.len()) as u64;
    let records_at = steps_at + (STEP_BYTES as u64 * n_steps).next_multiple_of(8);
    let record_bytes = 8 * record_len(q);
    let expected = records_at + record_bytes as u64 * n_steps;
    if bytes.len() as u64 != expected {
        return Err(TablesError::Length {
            expected: usize::try_from(expected).unwrap_or(usize::MAX),
            found: bytes.len(),
        });
    }
    // Every offset is now within `bytes`, so fits a usize.
    let (steps_at, records_at) = (steps_at as usize, records_at as usize);
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
        let count = u64::from(bytes.u32_at(entry));
        let path_features = bytes.u32_at(entry + 4) as usize;
        let root_value = f64::from_bits(bytes.u64_at(entry + 8));
        if first + count > n_steps {
            return Err(TablesError::Mismatch("split count"));
        }
        if !root_value.is_finite() {
            return Err(TablesError::RootValue { tree: i });
        }
        // In range: first + count ≤ n_steps, which sized every section.
        let (first_us, end) = (first as usize, (first + count) as usize);
        let range = |at: usize, size: usize| bytes.range(at + size * first_us, at + size * end);
        let steps: Cow<'static, [Step]> = view(range(steps_at, STEP_BYTES));
        if structure {
            check_steps(tree, &steps).map_err(|step| TablesError::Step { tree: i, step })?;
        }
        shaps.push(TreeShap {
            steps,
            // Only building tables reads these; installed tables are already built.
            scalars: Cow::Borrowed(&[]),
            root_value,
            path_features,
        });
        if q > 0 {
            tables.push(view(range(records_at, record_bytes)));
        }
        max_features = max_features.max(path_features);
        first += count;
    }
    if first != n_steps {
        return Err(TablesError::Mismatch("split count"));
    }
    if structure && bytes.u64_at(24) != fingerprint(forest) {
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
fn verify_checksum(bytes: Parts<'_>) -> Result<(), TablesError> {
    let found = bytes.xxh3_from(TABLES_HEADER);
    let expected = bytes.u64_at(32);
    if found != expected {
        return Err(TablesError::Checksum { expected, found });
    }
    Ok(())
}

/// Checks that `steps` are the tree's splits in level order (pre-order within a level, as
/// `TreeShap::new` lays them out) with the same children, features and thresholds, and that
/// each flag slot is one `tree_phi` has written by then. Returns the first bad step. Two passes
/// over the nodes (depths, then positions); no copy of the tree.
fn check_steps(tree: &Tree, steps: &[Step]) -> Result<(), usize> {
    let always_hot = 2 * steps.len() as u64;
    // Each split's depth in pre-order: a stack of the depths of right children still to come.
    let depths = || {
        let mut pending: Vec<u32> = Vec::new();
        let mut next = 0u32;
        tree.iter_nodes().enumerate().map(move |(i, node)| {
            let depth = next;
            match node {
                Node::Split { .. } => {
                    pending.push(depth + 1);
                    next = depth + 1;
                }
                Node::Leaf { .. } => next = pending.pop().unwrap_or(0),
            }
            (i, node, depth as usize)
        })
    };
    let mut per_depth: Vec<usize> = Vec::new();
    let mut n_splits = 0;
    for (_, node, depth) in depths() {
        if let Node::Split { .. } = node {
            if per_depth.len() <= depth {
                per_depth.resize(depth + 1, 0);
            }
            per_depth[depth] += 1;
            n_splits += 1;
        }
    }
    if n_splits != steps.len() {
        return Err(n_splits.min(steps.len()));
    }
    // First position of each depth, then advanced as its splits appear in pre-order.
    let mut at: Vec<usize> = per_depth
        .iter()
        .scan(0, |first, &n| {
            let here = *first;
            *first += n;
            Some(here)
        })
        .collect();
    for (i, node, depth) in depths() {
        let Node::Split {
            feature,
            threshold,
            right,
        } = node
        else {
            continue;
        };
        let s = at[depth];
        at[depth] += 1;
        let step = &steps[s];
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::{Node, Tree};

    /// A random tree in pre-order (`right` is the right child's index), `m` features, at most
    /// `depth` deep (SplitMix64 stream).
    fn random_tree(state: &mut u64, m: usize, depth: u32) -> Tree {
        fn next(state: &mut u64) -> u64 {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn grow(state: &mut u64, m: usize, depth: u32, out: &mut Vec<Node>) {
            if depth == 0 || next(state) % 10 < 2 {
                out.push(Node::Leaf {
                    samples: 1 + (next(state) % 40) as u32,
                });
                return;
            }
            let at = out.len();
            out.push(Node::Leaf { samples: 0 });
            grow(state, m, depth - 1, out);
            let right = out.len() as u32;
            grow(state, m, depth - 1, out);
            out[at] = Node::Split {
                feature: (next(state) % m as u64) as u16,
                threshold: (next(state) % 1000) as f32 / 1000.0,
                right,
            };
        }
        let mut nodes = Vec::new();
        grow(state, m, depth, &mut nodes);
        Tree::new(nodes).unwrap()
    }

    /// The AVX2 loop (padding lanes computed) and the portable one (what WebAssembly runs),
    /// each with fixed-size buffers (a row of up to `STACK_FEATURES`) and without (a longer
    /// row), give the same bits, for every rule size up to 6 features.
    #[test]
    fn vector_and_portable_passes_agree_to_the_bit() {
        let mut state = 7u64;
        let mut compared = 0;
        for m in 1..=6 {
            let trees: Vec<Tree> = (0..20).map(|_| random_tree(&mut state, m, 8)).collect();
            let shap = ForestShap::new(&trees);
            assert!(shap.supported());
            for r in 0..50 {
                let x: Vec<f32> = (0..m)
                    .map(|j| ((r * 37 + j * 101) % 1000) as f32 / 1000.0)
                    .collect();
                let phi_of = |vector: bool, width: usize| {
                    let mut x = x.clone();
                    x.resize(width, 0.0);
                    let mut phi = vec![0.0; width];
                    let shaps = trees.iter().map(Tree::shap);
                    match shap.q {
                        1 => run::<1, 2>(&shap, shaps, &shap.tables, &x, &mut phi, vector),
                        2 => run::<2, 2>(&shap, shaps, &shap.tables, &x, &mut phi, vector),
                        3 => run::<3, 4>(&shap, shaps, &shap.tables, &x, &mut phi, vector),
                        4 => run::<4, 4>(&shap, shaps, &shap.tables, &x, &mut phi, vector),
                        q => panic!("rule size {q} not covered"),
                    }
                    phi[..m].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                let portable = phi_of(false, m);
                assert!(
                    portable.iter().any(|&b| b != 0),
                    "m = {m}, row {r}: all zero"
                );
                for (vector, width) in [
                    (true, m),
                    (false, STACK_FEATURES + 1),
                    (true, STACK_FEATURES + 1),
                ] {
                    assert_eq!(
                        phi_of(vector, width),
                        portable,
                        "m = {m}, row {r}, vector {vector}, width {width}"
                    );
                }
                compared += 1;
            }
        }
        assert_eq!(compared, 300);
    }
}
