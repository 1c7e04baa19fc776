//! Batch scoring kernels: many rows walked through the forest at once, giving the same bits as
//! [`Forest::score_scaled`] / [`Model::score`](crate::Model::score) row by row.
//!
//! Scoring one row at a time walks every tree per row, each step a data-dependent branch the
//! CPU mispredicts about half the time. [`BatchForest`] instead flattens the trees (leaves
//! padded down to the deepest level, carrying their path length) and walks a block of
//! [`BLOCK`] rows through one tree at a time, a fixed number of branch-free steps per row, so
//! the loads of many rows overlap. Each row still adds its trees' path lengths in tree order,
//! so the sums are the same bits as the row scorer's. The caller (the trainer) owns the
//! parallel loop over blocks and the I/O; this module is serial and allocation-light, so it
//! builds for wasm32 too (where it runs the portable path).
//!
//! Unsafe code: the AVX2 kernels (`#[target_feature]`, entered only after a run-time check)
//! and unchecked reads of node arrays and block columns whose bounds [`FlatTree::new`] and
//! [`BatchForest::path_length_sums`] establish; each `unsafe` block states its contract.

use crate::{Forest, Node, leaf_path_length};

/// Rows walked through a tree together. 512 rows × a few features of `f32` stay in L1.
pub const BLOCK: usize = 512;

/// Deepest tree [`BatchForest`] lays out as a complete binary tree (2^17 - 1 nodes, 1 MiB).
pub const MAX_BATCH_DEPTH: u32 = 16;

/// A tree laid out as a complete binary tree of its deepest leaf's depth `D`: node `i` has
/// children `2i + 1` (x <= threshold) and `2i + 2`, so a step is one 8-byte load and some
/// arithmetic. A leaf above depth `D` is padded with splits whose every descendant leaf
/// carries its path length, so every row takes exactly `D` steps.
#[derive(Debug, Clone)]
struct FlatTree {
    /// Thresholds of the 2^D - 1 inner nodes.
    thresholds: Vec<f32>,
    /// `feature * BLOCK` of the inner nodes: where the feature's column starts in a block.
    offsets: Vec<u32>,
    /// Path length of the 2^D bottom slots, as model-format computes it for their leaf.
    path_length: Vec<f64>,
    depth: u32,
}

impl FlatTree {
    /// Walks every row of `block` through the tree's top levels and leaves its position in
    /// `at`; returns how many levels that was. The top seven nodes are the same for every
    /// row, so instead of three dependent lookups per row, all seven comparisons are made,
    /// column against constant (contiguous, so they vectorize), and the path is picked from
    /// them with bitwise selects: about a third of the walk at a fraction of its cost.
    #[inline(always)]
    fn top_levels(&self, block: &[f32], at: &mut [u32]) -> u32 {
        if self.depth < 3 {
            at.fill(0);
            return 0;
        }
        let len = at.len();
        let node = |k: usize| {
            let (threshold, offset) = (self.thresholds[k], self.offsets[k]);
            (&block[offset as usize..offset as usize + len], threshold)
        };
        let [
            (x0, t0),
            (x1, t1),
            (x2, t2),
            (x3, t3),
            (x4, t4),
            (x5, t5),
            (x6, t6),
        ] = std::array::from_fn(node);
        // `m ? a : b` on 0/1 values with an all-ones/zero mask `m`, without a branch.
        let pick = |m: u32, a: u32, b: u32| b ^ ((a ^ b) & m);
        for (r, i) in at.iter_mut().enumerate() {
            let c = |x: &[f32], t: f32| u32::from(x[r] > t);
            let (c0, c1, c2) = (c(x0, t0), c(x1, t1), c(x2, t2));
            let (c3, c4, c5, c6) = (c(x3, t3), c(x4, t4), c(x5, t5), c(x6, t6));
            let m0 = 0u32.wrapping_sub(c0);
            // Level 1 node 1 + c0 answered c1 or c2; level 2 node 3 + 2·c0 + c_1.
            let l1 = pick(m0, c2, c1);
            let m1 = 0u32.wrapping_sub(l1);
            let l2 = pick(m0, pick(m1, c6, c5), pick(m1, c4, c3));
            // Position on level 3: 2 · (3 + 2·c0 + l1) + 1 + l2.
            *i = 7 + 4 * c0 + 2 * l1 + l2;
        }
        3
    }

    /// `None` if the tree is deeper than [`MAX_BATCH_DEPTH`].
    fn new(nodes: &[Node]) -> Option<Self> {
        // Pre-order layout: a split's left child follows it, `right` points to the other.
        let mut depth = 0;
        let mut pending = vec![(0usize, 0u32)];
        while let Some((i, d)) = pending.pop() {
            match nodes[i] {
                Node::Split { right, .. } => {
                    pending.push((i + 1, d + 1));
                    pending.push((right as usize, d + 1));
                }
                Node::Leaf { .. } => depth = depth.max(d),
            }
            if d > MAX_BATCH_DEPTH {
                return None;
            }
        }
        let mut flat = FlatTree {
            thresholds: vec![0.0; (1 << depth) - 1],
            offsets: vec![0; (1 << depth) - 1],
            path_length: vec![0.0; 1 << depth],
            depth,
        };
        // (model node, complete-tree position, depth)
        let mut pending = vec![(0usize, 0usize, 0u32)];
        while let Some((i, pos, d)) = pending.pop() {
            match nodes[i] {
                Node::Split {
                    feature,
                    threshold,
                    right,
                } => {
                    flat.thresholds[pos] = threshold;
                    flat.offsets[pos] = u32::from(feature) * BLOCK as u32;
                    pending.push((i + 1, 2 * pos + 1, d + 1));
                    pending.push((right as usize, 2 * pos + 2, d + 1));
                }
                Node::Leaf { samples } => {
                    let value = leaf_path_length(d, samples);
                    // The bottom slots under position `pos` (at depth d).
                    let first = (pos + 1 - (1 << d)) << (depth - d);
                    flat.path_length[first..first + (1 << (depth - d))].fill(value);
                }
            }
        }
        Some(flat)
    }
}

/// A fitted forest laid out for scoring many rows at once (see the module docs). Gives the
/// same bits as [`Forest::score_scaled`] / [`Model::score`]. Covers trees up to
/// [`MAX_BATCH_DEPTH`] deep (ψ up to 65,536 for forests grown here).
#[derive(Debug, Clone)]
pub struct BatchForest {
    trees: Vec<FlatTree>,
    /// 1 + the highest feature any split reads: the block must hold that many columns.
    width: usize,
}

impl BatchForest {
    /// Flattens `forest`'s trees (already validated by [`crate::Tree::new`]); `None` if
    /// one is deeper than [`MAX_BATCH_DEPTH`] or the trees are in feature groups (one sum per
    /// row does not score those).
    pub fn new(forest: &Forest) -> Option<Self> {
        if forest.groups().is_some() {
            return None;
        }
        let trees = forest
            .trees()
            .iter()
            .map(|t| FlatTree::new(t.nodes()))
            .collect::<Option<Vec<_>>>()?;
        let width = trees
            .iter()
            .flat_map(|t| &t.offsets)
            .map(|&offset| offset as usize / BLOCK + 1)
            .max()
            .unwrap_or(0);
        Some(BatchForest { trees, width })
    }

    /// How many `f32` a block buffer for `features` feature columns must hold: at least as
    /// many columns as the splits read, whatever the caller has.
    pub fn block_len(&self, features: usize) -> usize {
        features.max(self.width) * BLOCK
    }

    /// Sets `sums[r]` to the sum of the path lengths over the trees, in tree order, of row `r`
    /// of `block` (at most [`BLOCK`] rows). `block` holds the scaled `f32` features
    /// column-major with a stride of [`BLOCK`] (feature `f` of row `r` at `block[f * BLOCK +
    /// r]`) and is at least [`BatchForest::block_len`] long. `kernel` picks the code path
    /// (they give the same bits; [`Kernel::Portable`] exists for tests and comparisons).
    ///
    /// # Panics
    /// If `sums` is longer than [`BLOCK`] or `block` shorter than the splits need (the walk
    /// reads without bounds checks, which these checks make safe).
    pub fn path_length_sums(&self, block: &[f32], sums: &mut [f64], kernel: Kernel) {
        assert!(sums.len() <= BLOCK, "at most {BLOCK} rows per block");
        assert!(
            block.len() >= self.width * BLOCK,
            "the block holds fewer columns than the splits read"
        );
        sums.fill(0.0);
        match kernel {
            Kernel::Dispatch => add_path_lengths(&self.trees, block, sums),
            Kernel::Portable => add_path_lengths_in(&self.trees, block, sums),
        }
    }
}

/// Which code path [`BatchForest::path_length_sums`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX2 where the CPU has it (checked at run time), else portable: the one to use.
    Dispatch,
    /// Portable code only.
    Portable,
}

/// Adds every tree's path length, in tree order, to `out[r]` for the rows of `block`.
/// Compiled twice: with AVX2 where the CPU has it (checked at run time, so one binary serves
/// every x86-64 machine), which vectorizes the top levels eight rows wide (a third faster
/// overall), and without. The steps are the same integer and comparison operations and the
/// sums the same additions, so the bits are the same. (Gathering the deeper steps eight
/// rows at a time with AVX2 was measured slower than these scalar steps on this machine's AMD CPU.)
fn add_path_lengths(trees: &[FlatTree], block: &[f32], out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { add_path_lengths_avx2(trees, block, out) };
        return;
    }
    add_path_lengths_in(trees, block, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_path_lengths_avx2(trees: &[FlatTree], block: &[f32], out: &mut [f64]) {
    let len = out.len();
    let columns = block.len() / BLOCK;
    let lanes = len - len % 8;
    let mut at = [0u32; BLOCK];
    for tree in trees {
        let at = &mut at[..len];
        let mut level = tree.top_levels(block, at);
        // Levels 3 and 4 (8 and 16 nodes) eight rows at a time while the features fit a
        // short select, then one row at a time (measured: deeper levels, with more nodes to
        // pick among, are no faster this way).
        if columns <= VECTOR_COLUMNS {
            while (3..tree.depth.min(5)).contains(&level) {
                tree.level_avx2(level, block, columns, &mut at[..lanes]);
                for (r, i) in at.iter_mut().enumerate().skip(lanes) {
                    *i = tree.step(block, *i, r);
                }
                level += 1;
            }
        }
        for _ in level..tree.depth {
            for (r, i) in at.iter_mut().enumerate() {
                *i = tree.step(block, *i, r);
            }
        }
        tree.add_bottom(at, out);
    }
}

/// Most feature columns [`FlatTree::level_avx2`] selects among.
#[cfg(target_arch = "x86_64")]
const VECTOR_COLUMNS: usize = 8;

#[inline(always)]
fn add_path_lengths_in(trees: &[FlatTree], block: &[f32], out: &mut [f64]) {
    let len = out.len();
    let mut at = [0u32; BLOCK];
    for tree in trees {
        let at = &mut at[..len];
        let first = tree.top_levels(block, at);
        for _ in first..tree.depth {
            for (r, i) in at.iter_mut().enumerate() {
                *i = tree.step(block, *i, r);
            }
        }
        tree.add_bottom(at, out);
    }
}

impl FlatTree {
    /// One step down from level `level` (3 or 4, below the depth) for the rows of `at` (a
    /// multiple of eight), eight rows at a time: the level's nodes (8 or 16, stored
    /// contiguously) are looked up with in-register permutes, each row's feature value is
    /// picked among the ≤ 8 columns with selects, so nothing is gathered from memory (AVX2
    /// gathers are slower than scalar loads on this machine's AMD CPU). Same comparison and
    /// position arithmetic as [`FlatTree::step`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn level_avx2(&self, level: u32, block: &[f32], columns: usize, at: &mut [u32]) {
        use std::arch::x86_64::*;
        debug_assert!(
            matches!(level, 3 | 4) && level < self.depth,
            "level {level}"
        );
        let first = (1usize << level) - 1;
        let count = 1usize << level; // nodes on this level, a multiple of 8
        // The level's nodes, eight per register. In range: level < depth, so the level's
        // nodes lie within the 2^depth - 1 stored ones.
        let thresholds = &self.thresholds[first..first + count];
        let offsets = &self.offsets[first..first + count];
        let (mut t_tables, mut o_tables) = ([_mm256_setzero_ps(); 2], [_mm256_setzero_si256(); 2]);
        for (j, (t, o)) in thresholds
            .chunks_exact(8)
            .zip(offsets.chunks_exact(8))
            .enumerate()
        {
            // SAFETY: each chunk holds exactly eight 4-byte values.
            unsafe {
                t_tables[j] = _mm256_loadu_ps(t.as_ptr());
                o_tables[j] = _mm256_loadu_si256(o.as_ptr().cast());
            }
        }
        let tables = count / 8;
        let base = _mm256_set1_epi32(first as i32);
        for (c, chunk) in at.chunks_exact_mut(8).enumerate() {
            let r = c * 8;
            // SAFETY: `chunk` holds eight u32; every column f < columns = block.len() / BLOCK
            // and r + 8 <= at.len() <= BLOCK, so block[f * BLOCK + r..][..8] is in bounds.
            unsafe {
                let i = _mm256_loadu_si256(chunk.as_ptr().cast());
                let k = _mm256_sub_epi32(i, base); // position within the level
                let table = _mm256_srli_epi32::<3>(k);
                let mut t = _mm256_permutevar8x32_ps(t_tables[0], k);
                let mut o = _mm256_permutevar8x32_epi32(o_tables[0], k);
                for j in 1..tables {
                    let here = _mm256_cmpeq_epi32(table, _mm256_set1_epi32(j as i32));
                    let tj = _mm256_permutevar8x32_ps(t_tables[j], k);
                    let oj = _mm256_permutevar8x32_epi32(o_tables[j], k);
                    t = _mm256_blendv_ps(t, tj, _mm256_castsi256_ps(here));
                    o = _mm256_blendv_epi8(o, oj, here);
                }
                let mut x = _mm256_loadu_ps(block.as_ptr().add(r));
                for f in 1..columns {
                    let column = _mm256_loadu_ps(block.as_ptr().add(f * BLOCK + r));
                    let here = _mm256_cmpeq_epi32(o, _mm256_set1_epi32((f * BLOCK) as i32));
                    x = _mm256_blendv_ps(x, column, _mm256_castsi256_ps(here));
                }
                // All ones (-1) where x > threshold: 2i + 1 - (-1) = 2i + 2.
                let right = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(x, t));
                let next = _mm256_sub_epi32(
                    _mm256_add_epi32(_mm256_add_epi32(i, i), _mm256_set1_epi32(1)),
                    right,
                );
                _mm256_storeu_si256(chunk.as_mut_ptr().cast(), next);
            }
        }
    }

    /// One step down from position `i` for row `r` of `block`.
    #[inline(always)]
    fn step(&self, block: &[f32], i: u32, r: usize) -> u32 {
        // SAFETY: at step k (< D) every position is on level k of the complete tree, below
        // 2^(k+1) - 1 <= 2^D - 1 = nodes.len(); and offset = feature * BLOCK with feature <
        // width <= columns (`path_length_sums` sizes the block), r < len <= BLOCK, so
        // offset + r < columns * BLOCK = block.len(). Bounds checks here cost a third of the
        // scoring time.
        let (threshold, offset) = unsafe {
            (
                *self.thresholds.get_unchecked(i as usize),
                *self.offsets.get_unchecked(i as usize),
            )
        };
        let x = unsafe { *block.get_unchecked(offset as usize + r) };
        2 * i + 1 + u32::from(x > threshold)
    }

    /// Adds the path length of each row's bottom position `at[r]` to `out[r]`.
    #[inline(always)]
    fn add_bottom(&self, at: &[u32], out: &mut [f64]) {
        // Bottom level starts at position 2^D - 1.
        let base = (1u32 << self.depth) - 1;
        for (s, &i) in out.iter_mut().zip(at) {
            *s += self.path_length[(i - base) as usize];
        }
    }
}
