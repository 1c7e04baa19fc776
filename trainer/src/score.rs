//! Batch scoring: every row of a table scored exactly as [`Model::score`] would, in parallel,
//! order kept.
//!
//! Scoring one row at a time walks 100 trees per row, each step a data-dependent branch the CPU
//! mispredicts about half the time. [`BatchForest`] instead flattens the trees (leaves loop to
//! themselves, carrying their path length) and walks a block of rows through one tree at a
//! time, a fixed number of branch-free steps per row, so the loads of many rows overlap. Each
//! row still adds its trees' path lengths in tree order and goes through the same final
//! expression, so the scores are the same bits as [`Model::score`] (tested below).
//!
//! Output columns (all `f64` at full precision except `is_anomaly`):
//!
//! | column | meaning |
//! |---|---|
//! | `score_samples` | scikit-learn's `score_samples`, `-2^(-E[h]/c(ψ))` |
//! | `anomaly_score` | scikit-learn's `decision_function` = `score_samples - offset` |
//! | `risk_score` | `-score_samples`, in (0, 1], higher = more anomalous |
//! | `is_anomaly` | `anomaly_score < 0` |
//! | `mean_path_length` | `E[h(x)]` over the trees |
//!
//! With explanations ([`score_table`] with `explain`, `trainer score --explain`), then, per
//! feature in model order, `phi_<feature>` (exact path-dependent TreeSHAP value of
//! `mean_path_length`, [`Model::explain`]; lower pushes towards anomalous) and finally
//! `expected_value` (the base value, the same on every row), so that
//! `Σ phi_* + expected_value = mean_path_length` up to rounding.

use crate::data::{self, Format, Table};
use anyhow::{Context, Result};
use model_format::{ExplainError, Forest, Model, Node, Score, ScoreError, leaf_path_length};
use polars::prelude::{Column, CsvWriter, DataFrame, ParquetCompression, ParquetWriter, SerWriter};
use rayon::prelude::*;
use std::path::Path;

/// Column names, in output order.
pub const COLUMNS: [&str; 5] = [
    "score_samples",
    "anomaly_score",
    "risk_score",
    "is_anomaly",
    "mean_path_length",
];

/// Scores of every row of a table, in row order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub rows: Vec<Score>,
    /// Per-row TreeSHAP explanations, when asked for.
    pub explanations: Option<Explanations>,
}

/// TreeSHAP attributions of `mean_path_length` for every row ([`Model::explain`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Explanations {
    /// Feature names, in model order.
    pub features: Vec<String>,
    /// `phi[j][i]`: attribution of feature `j` in row `i`.
    pub phi: Vec<Vec<f64>>,
    /// The base value ([`Model::expected_value`]), the same for every row.
    pub expected_value: f64,
}

/// Name of the output column holding the attributions of `feature`.
pub fn phi_column(feature: &str) -> String {
    format!("phi_{feature}")
}

/// Name of the output column holding the explanations' base value.
pub const EXPECTED_VALUE_COLUMN: &str = "expected_value";

/// Why a row could not be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("the table has {found} feature columns but the model expects {expected}")]
    Width { expected: usize, found: usize },
    #[error("row {row}: {source}")]
    Row { row: usize, source: ScoreError },
    #[error("row {row}: {source}")]
    Explain { row: usize, source: ExplainError },
}

/// Scores every row of `table` (columns in the model's schema order), and explains every row
/// too when `explain` is set.
pub fn score_table(model: &Model, table: &Table, explain: bool) -> Result<Scores, BatchError> {
    let width = model.features().len();
    if table.columns.len() != width {
        return Err(BatchError::Width {
            expected: width,
            found: table.columns.len(),
        });
    }
    if explain {
        return explain_table(model, table);
    }
    if table
        .columns
        .iter()
        .any(|c| c.iter().any(|v| !v.is_finite()))
    {
        // Let the row-at-a-time path report the first bad row with Model::score's own error.
        return score_rows_one_by_one(model, table);
    }
    let Some(batch) = BatchForest::new(model.forest()) else {
        return score_rows_one_by_one(model, table);
    };
    let scaler = model.scaler();
    let mut sums = vec![0.0; table.rows()];
    batch.path_length_sums(width, &mut sums, |start, block, len| {
        // Same expression and cast as Model::score's scaling.
        for (f, col) in table.columns.iter().enumerate() {
            let dst = &mut block[f * BLOCK..f * BLOCK + len];
            for (d, &v) in dst.iter_mut().zip(&col[start..start + len]) {
                *d = scaler.scale_one(f, v) as f32;
            }
        }
    });
    Ok(Scores {
        rows: sums
            .par_iter()
            .map(|&s| model.forest().score_path_sum(s))
            .collect(),
        explanations: None,
    })
}

/// [`Model::score`] row by row: the reference [`BatchForest`] must agree with, and the path that
/// reports invalid rows.
fn score_rows_one_by_one(model: &Model, table: &Table) -> Result<Scores, BatchError> {
    let width = model.features().len();
    // Indexed parallel iterators collect in index order, so row i's score lands at i.
    let rows = (0..table.rows())
        .into_par_iter()
        .map_init(
            || Vec::with_capacity(width),
            |row, i| {
                row.clear();
                row.extend(table.columns.iter().map(|c| c[i]));
                model
                    .score(row)
                    .map_err(|source| BatchError::Row { row: i, source })
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scores {
        rows,
        explanations: None,
    })
}

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
    /// Flattens `forest`'s trees (already validated by [`model_format::Tree::new`]); `None` if
    /// one is deeper than [`MAX_BATCH_DEPTH`].
    pub fn new(forest: &Forest) -> Option<Self> {
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

    /// Sum of the path lengths over the trees, in tree order, for `sums.len()` rows, in
    /// parallel over blocks of [`BLOCK`] rows.
    ///
    /// `fill(start, block, len)` writes rows `start..start + len` of the scaled `f32` features
    /// into `block`, column-major with a stride of [`BLOCK`]: feature `f` of row `start + r` at
    /// `block[f * BLOCK + r]`. `width` is the number of features, above every split's feature.
    pub fn path_length_sums(
        &self,
        width: usize,
        sums: &mut [f64],
        fill: impl Fn(usize, &mut [f32], usize) + Sync,
    ) {
        // At least as wide as the splits need, whatever the caller says: the unchecked reads
        // below rely on it.
        let columns = width.max(self.width);
        sums.par_chunks_mut(BLOCK).enumerate().for_each_init(
            || vec![0f32; columns * BLOCK],
            |block, (b, out)| {
                let len = out.len();
                fill(b * BLOCK, block, len);
                out.fill(0.0);
                add_path_lengths(&self.trees, block, out);
            },
        );
    }
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

/// [`score_table`] with explanations; the width is already checked.
fn explain_table(model: &Model, table: &Table) -> Result<Scores, BatchError> {
    let width = model.features().len();
    // Row-major attributions, one chunk of `width` per row, collected in row order.
    let explained = (0..table.rows())
        .into_par_iter()
        .map_init(
            || Vec::with_capacity(width),
            |row, i| {
                row.clear();
                row.extend(table.columns.iter().map(|c| c[i]));
                let mut phi = vec![0.0; width];
                model
                    .explain(row, &mut phi)
                    .map(|e| (e.score, phi))
                    .map_err(|source| BatchError::Explain { row: i, source })
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    let mut phi = vec![Vec::with_capacity(explained.len()); width];
    let mut rows = Vec::with_capacity(explained.len());
    for (score, row_phi) in explained {
        rows.push(score);
        for (col, v) in phi.iter_mut().zip(row_phi) {
            col.push(v);
        }
    }
    Ok(Scores {
        rows,
        explanations: Some(Explanations {
            features: model.features().to_vec(),
            phi,
            expected_value: model.expected_value(),
        }),
    })
}

impl Scores {
    /// The output table: columns as in [`COLUMNS`], then the explanation columns if any.
    pub fn to_frame(&self) -> Result<DataFrame> {
        // One column per task: building them is mostly first-touch page faults on 8 MB
        // each (per million rows), which both cores take at once.
        type Field = fn(&Score) -> f64;
        let floats: [(&str, Field); 4] = [
            (COLUMNS[0], |s| s.score_samples),
            (COLUMNS[1], |s| s.decision),
            (COLUMNS[2], Score::risk),
            (COLUMNS[4], |s| s.mean_path_length),
        ];
        let (mut columns, is_anomaly) = rayon::join(
            || {
                floats
                    .into_par_iter()
                    .map(|(name, f)| {
                        Column::new(name.into(), self.rows.iter().map(f).collect::<Vec<f64>>())
                    })
                    .collect::<Vec<_>>()
            },
            || {
                let flags = self.rows.iter().map(Score::is_anomaly);
                Column::new(COLUMNS[3].into(), flags.collect::<Vec<bool>>())
            },
        );
        columns.insert(3, is_anomaly);
        if let Some(e) = &self.explanations {
            for (feature, phi) in e.features.iter().zip(&e.phi) {
                columns.push(Column::new(phi_column(feature).into(), phi.clone()));
            }
            columns.push(Column::new(
                EXPECTED_VALUE_COLUMN.into(),
                vec![e.expected_value; self.rows.len()],
            ));
        }
        Ok(DataFrame::new(self.rows.len(), columns)?)
    }
}

/// Reads `input` (feature columns `columns`, in model order), scores it (and explains it, if
/// `explain`) and writes the scores to `output` (.parquet or .csv). Returns the scores.
pub fn score_file(
    model: &Model,
    input: &Path,
    columns: &[String],
    output: &Path,
    explain: bool,
) -> Result<Scores> {
    anyhow::ensure!(
        columns.len() == model.features().len(),
        "{} feature columns given but the model has {} features ({})",
        columns.len(),
        model.features().len(),
        model.features().join(", ")
    );
    let timings = std::env::var_os("SFE_TIMINGS").is_some();
    let lap = |phase: &str, since: std::time::Instant| {
        if timings {
            eprintln!("score: {phase:<8} {:>9.1?}", since.elapsed());
        }
        std::time::Instant::now()
    };
    let t = std::time::Instant::now();
    let table = data::read_features(input, columns)?;
    let t = lap("read", t);
    let scores = score_table(model, &table, explain)
        .with_context(|| format!("scoring {}", input.display()))?;
    let t = lap("score", t);
    let mut frame = scores.to_frame()?;
    write_exact(output, &mut frame)?;
    lap("write", t);
    Ok(scores)
}

/// Writes scores so every `f64` reads back to the same bits: Parquet stores the bits; for CSV,
/// polars' default float format (no fixed precision) is the shortest string that round-trips.
fn write_exact(path: &Path, frame: &mut DataFrame) -> Result<()> {
    match Format::from_path(path)? {
        Format::Parquet => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            // Snappy, as pandas and pyarrow write by default: scores are full-precision
            // floats that zstd shrinks by a quarter at three times the writing time.
            ParquetWriter::new(file)
                .with_compression(ParquetCompression::Snappy)
                .finish(frame)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
        Format::Csv => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            CsvWriter::new(file)
                .include_header(true)
                .with_float_precision(None)
                .with_float_scientific(None)
                .finish(frame)
                .with_context(|| format!("writing {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::{Contamination, IsolationForestParams, MaxFeatures, MaxSamples};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A table of `n` rows: three skewed features with ties and a few far outliers.
    fn table(n: usize, seed: u64) -> Table {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let columns = (0..3)
            .map(|f| {
                (0..n)
                    .map(|i| {
                        let v: f64 = rng.random_range(0.0..1.0);
                        match (i % 97, f) {
                            (0, _) => 1e4 * v,
                            (_, 0) => (v * 10.0).round(),
                            (_, 1) => v.powi(3) * 500.0,
                            _ => -v,
                        }
                    })
                    .collect()
            })
            .collect();
        Table {
            names: vec!["a".into(), "b".into(), "c".into()],
            columns,
        }
    }

    fn fit(table: &Table, params: &IsolationForestParams) -> Model {
        crate::fit(table, params).unwrap()
    }

    #[test]
    fn batch_scores_are_model_score_bits() {
        let train = table(3000, 1);
        // Block edges: fewer rows than a block, exactly one, and a ragged last block.
        for n in [1, 7, BLOCK, 2 * BLOCK + 3, 5000] {
            let rows = table(n, 2);
            for params in [
                IsolationForestParams {
                    contamination: Contamination::Fraction(0.1),
                    seed: 3,
                    ..Default::default()
                },
                // Deep trees (ψ = 3000, depth 12) whose leaves sit at many depths.
                IsolationForestParams {
                    max_samples: MaxSamples::Fraction(1.0),
                    max_features: MaxFeatures::Count(2),
                    bootstrap: true,
                    n_estimators: 7,
                    seed: 4,
                    ..Default::default()
                },
            ] {
                let model = fit(&train, &params);
                let fast = score_table(&model, &rows, false).unwrap();
                let slow = score_rows_one_by_one(&model, &rows).unwrap();
                assert_eq!(fast.rows.len(), n);
                for (i, (a, b)) in fast.rows.iter().zip(&slow.rows).enumerate() {
                    assert_eq!(
                        (
                            a.score_samples.to_bits(),
                            a.decision.to_bits(),
                            a.mean_path_length.to_bits()
                        ),
                        (
                            b.score_samples.to_bits(),
                            b.decision.to_bits(),
                            b.mean_path_length.to_bits()
                        ),
                        "row {i} of {n}"
                    );
                }
            }
        }
    }

    /// The dispatching kernel (AVX2 on this machine, when it has it) and the portable one
    /// agree to the bit, also for trees too shallow for the vectorized top levels.
    #[test]
    fn every_kernel_gives_the_same_sums() {
        let train = table(3000, 5);
        let rows = table(BLOCK, 6);
        for max_samples in [MaxSamples::Count(4), MaxSamples::Count(8), MaxSamples::Auto] {
            let params = IsolationForestParams {
                max_samples,
                n_estimators: 20,
                seed: 7,
                ..Default::default()
            };
            let model = fit(&train, &params);
            let batch = BatchForest::new(model.forest()).unwrap();
            let width = batch.width.max(3);
            let mut block = vec![0f32; width * BLOCK];
            for (f, col) in rows.columns.iter().enumerate() {
                for (d, &v) in block[f * BLOCK..].iter_mut().zip(col) {
                    *d = model.scaler().scale_one(f, v) as f32;
                }
            }
            for len in [BLOCK, 13] {
                let (mut fast, mut portable) = (vec![0.0; len], vec![0.0; len]);
                add_path_lengths(&batch.trees, &block, &mut fast);
                add_path_lengths_in(&batch.trees, &block, &mut portable);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&portable), "{max_samples:?}, {len} rows");
                assert!(fast.iter().all(|&s| s > 0.0));
            }
        }
    }

    #[test]
    fn bad_rows_report_model_score_errors() {
        let train = table(500, 1);
        let model = fit(&train, &IsolationForestParams::default());
        let mut rows = table(600, 2);
        rows.columns[1][321] = f64::NAN;
        rows.columns[0][400] = f64::INFINITY;
        match score_table(&model, &rows, false) {
            Err(BatchError::Row {
                row: 321,
                source: ScoreError::NotFinite { feature },
            }) => assert_eq!(feature, "b"),
            other => panic!("{other:?}"),
        }
        rows.columns.pop();
        assert_eq!(
            score_table(&model, &rows, false),
            Err(BatchError::Width {
                expected: 3,
                found: 2
            })
        );
    }

    #[test]
    fn fit_offset_is_the_training_score_quantile() {
        let train = table(4000, 9);
        let model = fit(
            &train,
            &IsolationForestParams {
                contamination: Contamination::Fraction(0.1),
                ..Default::default()
            },
        );
        // Exactly 10% of training rows fall below the offset, give or take ties at it.
        let below = (0..train.rows())
            .filter(|&i| model.score(&train.row(i)).unwrap().is_anomaly())
            .count();
        assert!(
            (395..=400).contains(&below),
            "{below} of 4000 below the offset"
        );
    }

    #[test]
    fn trees_too_deep_to_flatten_score_row_by_row() {
        // ψ = 70,000 allows depth 17, beyond MAX_BATCH_DEPTH: fit and score_table fall back to
        // Model::score's own path, with the same offset rule.
        let train = table(70_000, 8);
        let model = fit(
            &train,
            &IsolationForestParams {
                n_estimators: 3,
                max_samples: MaxSamples::Fraction(1.0),
                contamination: Contamination::Fraction(0.1),
                seed: 1,
                ..Default::default()
            },
        );
        assert!(BatchForest::new(model.forest()).is_none());
        let scores = score_table(&model, &train, false).unwrap();
        let mut samples: Vec<f64> = scores.rows.iter().map(|s| s.score_samples).collect();
        let offset = crate::forest::percentile(&mut samples, 10.0);
        assert_eq!(model.forest().offset().to_bits(), offset.to_bits());
    }

    #[test]
    fn fitted_models_do_not_depend_on_the_thread_count() {
        let train = table(20_000, 5);
        for params in [
            IsolationForestParams {
                contamination: Contamination::Fraction(0.05),
                seed: 12,
                ..Default::default()
            },
            IsolationForestParams {
                max_features: MaxFeatures::Fraction(0.5),
                bootstrap: true,
                contamination: Contamination::Fraction(0.2),
                seed: 12,
                ..Default::default()
            },
        ] {
            let bytes = |threads| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| fit(&train, &params).to_bytes().unwrap())
            };
            let one = bytes(1);
            assert_eq!(one, bytes(2));
            assert_eq!(one, bytes(3));
        }
    }
}
