//! Histogram gradient-boosted trees for binary log-loss: the supervised model's learner.
//!
//! Why written here rather than taken from a crate: the trees must come out in model-format's
//! node layout (f32 thresholds compared with `<=` on exactly the values the edge computes,
//! leaf sample counts as TreeSHAP covers), the fit must be deterministic for a seed on any
//! thread count, and validation must be in time order (the last rows, not a random split, so
//! that a run of fraud never lands on both sides of the cut). The design follows LightGBM and
//! scikit-learn's `HistGradientBoostingClassifier`: features binned into ≤ 256 bins, one
//! histogram of gradient/hessian sums per feature and node (the larger child's by subtraction),
//! leaf-wise growth up to `max_leaves`, L2-regularised Newton leaf values, shrinkage, and early
//! stopping on the validation log-loss.
//!
//! Determinism: each histogram sums fixed chunks of rows in ascending row order, then the
//! chunks in order, so the thread count never changes a sum.

use model_format::Node;
use rayon::prelude::*;

/// Parameters as the operator gives them; [`GbdtParams::check`] validates them.
#[derive(Debug, Clone, PartialEq)]
pub struct GbdtParams {
    pub learning_rate: f64,
    pub max_iter: usize,
    pub max_leaves: usize,
    pub max_depth: usize,
    pub min_samples_leaf: usize,
    pub l2: f64,
    /// Rounds without a better validation log-loss before stopping.
    pub patience: usize,
    /// Weight of a positive row relative to a negative one; `None` = √(negatives/positives).
    pub positive_weight: Option<f64>,
    /// Rows sampled to choose bin edges (all rows when fewer).
    pub bin_sample: usize,
    pub seed: u64,
}

impl Default for GbdtParams {
    fn default() -> Self {
        GbdtParams {
            // Small trees and a larger step than scikit-learn's defaults (31 leaves, 0.1):
            // as good on the independent streams, and a third of the nodes to explain at
            // the edge (docs/trainer.md).
            learning_rate: 0.2,
            max_iter: 300,
            max_leaves: 8,
            max_depth: 6,
            min_samples_leaf: 20,
            l2: 1.0,
            patience: 20,
            positive_weight: None,
            bin_sample: 200_000,
            seed: 1,
        }
    }
}

/// Why the parameters or data cannot be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GbdtError {
    #[error("{0}")]
    Params(String),
    #[error("{0}")]
    Data(String),
}

/// Validated parameters.
#[derive(Debug, Clone)]
pub struct CheckedGbdt(GbdtParams);

impl GbdtParams {
    pub fn check(&self) -> Result<CheckedGbdt, GbdtError> {
        let bad = |m: &str| Err(GbdtError::Params(m.to_string()));
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning rate must be in (0, 1]");
        }
        if self.max_iter == 0 {
            return bad("max_iter must be at least 1");
        }
        if !(2..=4096).contains(&self.max_leaves) {
            return bad("max_leaves must be between 2 and 4096");
        }
        if !(1..=16).contains(&self.max_depth) {
            return bad("max_depth must be between 1 and 16");
        }
        if self.min_samples_leaf == 0 {
            return bad("min_samples_leaf must be at least 1");
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad("l2 must be finite and ≥ 0");
        }
        if self
            .positive_weight
            .is_some_and(|w| !(w.is_finite() && w > 0.0))
        {
            return bad("positive weight must be finite and > 0");
        }
        Ok(CheckedGbdt(self.clone()))
    }
}

/// One fitted tree in model-format's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedTree {
    pub nodes: Vec<Node>,
    /// One per leaf, in pre-order.
    pub leaf_values: Vec<f64>,
}

/// The fitted ensemble and how it got there.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub base_margin: f64,
    pub trees: Vec<FittedTree>,
    /// Validation log-loss after each kept iteration.
    pub validation_loss: Vec<f64>,
    /// Raw margins of the validation rows (the kept trees), in row order.
    pub validation_margin: Vec<f64>,
    pub positive_weight: f64,
}

/// Binned inputs: per input, per row, the bin (`bin ≤ b` ⇔ `x ≤ edges[b]`).
struct Binned {
    /// Per input, per row.
    bins: Vec<Vec<u8>>,
    /// The same bins row by row (`row * inputs + input`): a histogram over a node's rows reads
    /// one row's bins from one cache line instead of one line per input.
    by_row: Vec<u8>,
    edges: Vec<Vec<f32>>,
}

/// Bin edges of one input: strictly increasing f32 values, at most 255.
fn edges_of(values: &[f32], sample: &[usize]) -> Vec<f32> {
    let mut s: Vec<f32> = sample.iter().map(|&i| values[i]).collect();
    s.sort_by(f32::total_cmp);
    s.dedup();
    let cuts: Vec<f32> = if s.len() <= 256 {
        // Midpoints between neighbouring distinct values (as f32, kept only if they separate).
        s.windows(2)
            .map(|w| (f64::from(w[0]) + (f64::from(w[1]) - f64::from(w[0])) / 2.0) as f32)
            .collect()
    } else {
        (1..256).map(|k| s[k * s.len() / 256]).collect()
    };
    let mut edges: Vec<f32> = Vec::with_capacity(cuts.len());
    for c in cuts {
        if edges.last().is_none_or(|&l| c > l) {
            edges.push(c);
        }
    }
    edges.truncate(255);
    edges
}

fn bin_of(edges: &[f32], x: f32) -> u8 {
    edges.partition_point(|&e| e < x) as u8
}

fn bin_inputs(inputs: &[Vec<f32>], rows: usize, params: &GbdtParams) -> Binned {
    // A seeded sample of rows for the edges (splitmix64 over the row indices).
    let sample: Vec<usize> = if rows <= params.bin_sample {
        (0..rows).collect()
    } else {
        let mut keyed: Vec<(u64, usize)> = (0..rows)
            .map(|i| {
                (
                    splitmix(params.seed ^ (i as u64).wrapping_mul(0x9E37_79B9)),
                    i,
                )
            })
            .collect();
        keyed.select_nth_unstable(params.bin_sample);
        let mut s: Vec<usize> = keyed[..params.bin_sample].iter().map(|k| k.1).collect();
        s.sort_unstable();
        s
    };
    let edges: Vec<Vec<f32>> = inputs.par_iter().map(|c| edges_of(c, &sample)).collect();
    let bins: Vec<Vec<u8>> = inputs
        .par_iter()
        .zip(&edges)
        .map(|(c, e)| c.iter().map(|&x| bin_of(e, x)).collect())
        .collect();
    let k = bins.len();
    let mut by_row = vec![0u8; rows * k];
    by_row
        .par_chunks_mut(k)
        .enumerate()
        .for_each(|(r, row)| row.iter_mut().zip(&bins).for_each(|(b, c)| *b = c[r]));
    Binned {
        bins,
        by_row,
        edges,
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Per bin: Σ gradient, Σ hessian, rows.
#[derive(Clone, Copy, Default)]
struct Bin {
    g: f64,
    h: f64,
    n: u32,
}

type Histogram = Vec<[Bin; 256]>;

/// Rows per partial histogram: fixed, so the sums (chunk by chunk, then chunks in order) do
/// not depend on how many threads run them.
const CHUNK: usize = 65_536;

fn histogram(binned: &Binned, rows: &[u32], g: &[f64], h: &[f64]) -> Histogram {
    // One pass over the rows per chunk updating every input's histogram: each row's gradient
    // is read once, and the bins of all inputs stream in order (a pass per input would read
    // the gradients once per input).
    let inputs = binned.bins.len();
    let partial: Vec<Histogram> = rows
        .par_chunks(CHUNK)
        .map(|chunk| {
            let mut hist = vec![[Bin::default(); 256]; inputs];
            for &r in chunk {
                let r = r as usize;
                let (gr, hr) = (g[r], h[r]);
                let row = &binned.by_row[r * inputs..(r + 1) * inputs];
                for (&bin, hist) in row.iter().zip(hist.iter_mut()) {
                    let b = &mut hist[usize::from(bin)];
                    b.g += gr;
                    b.h += hr;
                    b.n += 1;
                }
            }
            hist
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut out = parts
        .next()
        .unwrap_or_else(|| vec![[Bin::default(); 256]; inputs]);
    for part in parts {
        for (o, p) in out.iter_mut().zip(&part) {
            for (a, b) in o.iter_mut().zip(p) {
                a.g += b.g;
                a.h += b.h;
                a.n += b.n;
            }
        }
    }
    out
}

fn subtract(parent: &Histogram, child: &Histogram) -> Histogram {
    parent
        .iter()
        .zip(child)
        .map(|(p, c)| {
            let mut out = [Bin::default(); 256];
            for b in 0..256 {
                out[b] = Bin {
                    g: p[b].g - c[b].g,
                    h: p[b].h - c[b].h,
                    n: p[b].n - c[b].n,
                };
            }
            out
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Split {
    gain: f64,
    input: usize,
    bin: u8,
    /// Σ gradient and Σ hessian of the rows it sends left (the right's: the parent's minus
    /// these), read off the histogram instead of summed again over the rows.
    gl: f64,
    hl: f64,
}

/// A leaf being grown: its rows, sums, histogram and best split.
struct Open {
    rows: Vec<u32>,
    g: f64,
    h: f64,
    depth: usize,
    hist: Histogram,
    best: Option<Split>,
    /// Where this leaf sits in the growing tree.
    id: usize,
}

fn score(g: f64, h: f64, l2: f64) -> f64 {
    g * g / (h + l2)
}

fn best_split(hist: &Histogram, g: f64, h: f64, n: usize, p: &GbdtParams) -> Option<Split> {
    let parent = score(g, h, p.l2);
    let mut best: Option<Split> = None;
    for (input, bins) in hist.iter().enumerate() {
        let (mut gl, mut hl, mut nl) = (0.0, 0.0, 0usize);
        for (b, bin) in bins.iter().enumerate().take(255) {
            gl += bin.g;
            hl += bin.h;
            nl += bin.n as usize;
            let nr = n - nl;
            if nl < p.min_samples_leaf {
                continue;
            }
            if nr < p.min_samples_leaf {
                break;
            }
            let (gr, hr) = (g - gl, h - hl);
            if hl < 1e-3 || hr < 1e-3 {
                continue;
            }
            let gain = score(gl, hl, p.l2) + score(gr, hr, p.l2) - parent;
            if gain > 1e-9 && best.is_none_or(|s| gain > s.gain) {
                best = Some(Split {
                    gain,
                    input,
                    bin: b as u8,
                    gl,
                    hl,
                });
            }
        }
    }
    best
}

/// A tree while it grows: nodes by id, children filled in when a leaf splits.
enum Grown {
    Leaf {
        value: f64,
        rows: u32,
    },
    Split {
        input: usize,
        bin: u8,
        left: usize,
        right: usize,
    },
}

/// `rows` split by `bins[row] <= bin`, each side in its original order: chunks partitioned in
/// parallel, then joined in chunk order.
fn partition(bins: &[u8], rows: &[u32], bin: u8) -> (Vec<u32>, Vec<u32>) {
    let parts: Vec<(Vec<u32>, Vec<u32>)> = rows
        .par_chunks(CHUNK)
        .map(|chunk| {
            let (mut l, mut r) = (Vec::with_capacity(chunk.len()), Vec::new());
            for &row in chunk {
                if bins[row as usize] <= bin {
                    l.push(row);
                } else {
                    r.push(row);
                }
            }
            (l, r)
        })
        .collect();
    let n_left = parts.iter().map(|p| p.0.len()).sum();
    let (mut left, mut right) = (
        Vec::with_capacity(n_left),
        Vec::with_capacity(rows.len() - n_left),
    );
    for (l, r) in parts {
        left.extend_from_slice(&l);
        right.extend_from_slice(&r);
    }
    (left, right)
}

/// Grows one tree on `rows` (all training rows) and returns it with each row's leaf value.
fn grow(
    binned: &Binned,
    rows: &[u32],
    g: &[f64],
    h: &[f64],
    p: &GbdtParams,
) -> (Vec<Grown>, Vec<(Vec<u32>, f64)>) {
    let (g0, h0) = rows.iter().fold((0.0, 0.0), |(a, b), &r| {
        (a + g[r as usize], b + h[r as usize])
    });
    let hist = histogram(binned, rows, g, h);
    let best = best_split(&hist, g0, h0, rows.len(), p);
    let mut nodes = vec![Grown::Leaf {
        value: 0.0,
        rows: rows.len() as u32,
    }];
    let mut open = vec![Open {
        rows: rows.to_vec(),
        g: g0,
        h: h0,
        depth: 0,
        hist,
        best,
        id: 0,
    }];
    let mut done: Vec<Open> = Vec::new();
    let mut leaves = 1;
    while leaves < p.max_leaves {
        // The open leaf with the largest gain (first in creation order on ties).
        let pick = open
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.best.map(|s| (i, s.gain)))
            .fold(None, |acc: Option<(usize, f64)>, (i, gain)| match acc {
                Some((_, g)) if g >= gain => acc,
                _ => Some((i, gain)),
            });
        let Some((i, _)) = pick else { break };
        let leaf = open.remove(i);
        let split = leaf.best.expect("picked leaves have a split");
        let (left, right) = partition(&binned.bins[split.input], &leaf.rows, split.bin);
        let (gl, hl) = (split.gl, split.hl);
        let (gr, hr) = (leaf.g - gl, leaf.h - hl);
        // The smaller child's histogram directly, the larger one's by subtraction.
        let (hist_l, hist_r) = if left.len() <= right.len() {
            let hl_ = histogram(binned, &left, g, h);
            let hr_ = subtract(&leaf.hist, &hl_);
            (hl_, hr_)
        } else {
            let hr_ = histogram(binned, &right, g, h);
            let hl_ = subtract(&leaf.hist, &hr_);
            (hl_, hr_)
        };
        let depth = leaf.depth + 1;
        let (id_l, id_r) = (nodes.len(), nodes.len() + 1);
        nodes.push(Grown::Leaf {
            value: 0.0,
            rows: left.len() as u32,
        });
        nodes.push(Grown::Leaf {
            value: 0.0,
            rows: right.len() as u32,
        });
        nodes[leaf.id] = Grown::Split {
            input: split.input,
            bin: split.bin,
            left: id_l,
            right: id_r,
        };
        for (rows, gs, hs, hist, id) in
            [(left, gl, hl, hist_l, id_l), (right, gr, hr, hist_r, id_r)]
        {
            let best = if depth < p.max_depth {
                best_split(&hist, gs, hs, rows.len(), p)
            } else {
                None
            };
            open.push(Open {
                rows,
                g: gs,
                h: hs,
                depth,
                hist,
                best,
                id,
            });
        }
        leaves += 1;
    }
    done.extend(open);
    done.sort_by_key(|o| o.id);
    let mut members = Vec::with_capacity(done.len());
    for o in done {
        let value = -p.learning_rate * o.g / (o.h + p.l2);
        if let Grown::Leaf { value: v, .. } = &mut nodes[o.id] {
            *v = value;
        }
        members.push((o.rows, value));
    }
    (nodes, members)
}

/// The grown tree in pre-order with f32 thresholds (model-format's layout).
fn to_model_tree(nodes: &[Grown], edges: &[Vec<f32>]) -> FittedTree {
    let mut out = Vec::new();
    let mut leaf_values = Vec::new();
    fn walk(
        id: usize,
        nodes: &[Grown],
        edges: &[Vec<f32>],
        out: &mut Vec<Node>,
        values: &mut Vec<f64>,
    ) {
        match &nodes[id] {
            Grown::Leaf { value, rows } => {
                out.push(Node::Leaf { samples: *rows });
                values.push(*value);
            }
            Grown::Split {
                input,
                bin,
                left,
                right,
            } => {
                let at = out.len();
                out.push(Node::Split {
                    feature: *input as u16,
                    threshold: edges[*input][usize::from(*bin)],
                    right: 0,
                });
                walk(*left, nodes, edges, out, values);
                let r = out.len() as u32;
                if let Node::Split { right, .. } = &mut out[at] {
                    *right = r;
                }
                walk(*right, nodes, edges, out, values);
            }
        }
    }
    walk(0, nodes, edges, &mut out, &mut leaf_values);
    FittedTree {
        nodes: out,
        leaf_values,
    }
}

/// The leaf value of a validation row (its bins) through a grown tree.
fn grown_value(nodes: &[Grown], bins: &[Vec<u8>], row: usize) -> f64 {
    let mut i = 0;
    loop {
        match &nodes[i] {
            Grown::Leaf { value, .. } => return *value,
            Grown::Split {
                input,
                bin,
                left,
                right,
            } => {
                i = if bins[*input][row] <= *bin {
                    *left
                } else {
                    *right
                };
            }
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    model_format::booster::sigmoid(z)
}

/// Mean log-loss of margins against labels.
pub fn log_loss(margin: &[f64], y: &[bool]) -> f64 {
    // Chunk sums in parallel, added in chunk order: the same bits on any thread count.
    let partial: Vec<f64> = margin
        .par_chunks(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .map(|(margin, y)| {
            margin
                .iter()
                .zip(y)
                .map(|(&m, &t)| {
                    // log(1 + e^−m) for a positive, log(1 + e^m) for a negative, stably.
                    let z = if t { -m } else { m };
                    if z > 0.0 {
                        z + libm::log1p(libm::exp(-z))
                    } else {
                        libm::log1p(libm::exp(z))
                    }
                })
                .sum::<f64>()
        })
        .collect();
    let total: f64 = partial.iter().sum();
    total / margin.len().max(1) as f64
}

impl CheckedGbdt {
    /// Fits on the first `train_rows` rows of `inputs` (column-major, f32 exactly as scored)
    /// and early-stops on the rest.
    pub fn fit(
        &self,
        inputs: &[Vec<f32>],
        labels: &[bool],
        train_rows: usize,
    ) -> Result<Fitted, GbdtError> {
        let p = &self.0;
        let rows = labels.len();
        if inputs.iter().any(|c| c.len() != rows) {
            return Err(GbdtError::Data("inputs and labels differ in length".into()));
        }
        if inputs.is_empty() || inputs.len() > usize::from(u16::MAX) {
            return Err(GbdtError::Data("need 1 to 65,535 inputs".into()));
        }
        if train_rows == 0 || train_rows >= rows {
            return Err(GbdtError::Data(
                "need rows both to fit on and to validate on".into(),
            ));
        }
        let pos = labels[..train_rows].iter().filter(|&&b| b).count();
        if pos == 0 || pos == train_rows {
            return Err(GbdtError::Data("the fitting rows need both labels".into()));
        }
        let neg = train_rows - pos;
        let w_pos = p
            .positive_weight
            .unwrap_or_else(|| (neg as f64 / pos as f64).sqrt());
        let weight = |y: bool| if y { w_pos } else { 1.0 };
        let binned = bin_inputs(inputs, rows, p);
        let (wp, wn) = (pos as f64 * w_pos, neg as f64);
        let base_margin = libm::log(wp / wn);
        let train: Vec<u32> = (0..train_rows as u32).collect();
        let y_train = &labels[..train_rows];
        let y_val = &labels[train_rows..];
        let mut margin = vec![base_margin; train_rows];
        let mut val_margin = vec![base_margin; rows - train_rows];
        let (mut g, mut h) = (vec![0.0; train_rows], vec![0.0; train_rows]);
        let mut trees = Vec::new();
        let mut losses = Vec::new();
        let (mut best_loss, mut best_at) = (log_loss(&val_margin, y_val), 0usize);
        let mut best_val_margin = val_margin.clone();
        for _ in 0..p.max_iter {
            g.par_iter_mut()
                .zip(h.par_iter_mut())
                .enumerate()
                .for_each(|(i, (gi, hi))| {
                    let pr = sigmoid(margin[i]);
                    let w = weight(y_train[i]);
                    *gi = w * (pr - f64::from(u8::from(y_train[i])));
                    *hi = (w * pr * (1.0 - pr)).max(1e-16);
                });
            let (grown, members) = grow(&binned, &train, &g, &h, p);
            for (rows, value) in &members {
                for &r in rows {
                    margin[r as usize] += value;
                }
            }
            val_margin
                .par_iter_mut()
                .enumerate()
                .for_each(|(i, m)| *m += grown_value(&grown, &binned.bins, train_rows + i));
            trees.push(to_model_tree(&grown, &binned.edges));
            let loss = log_loss(&val_margin, y_val);
            losses.push(loss);
            if loss < best_loss - 1e-9 {
                best_loss = loss;
                best_at = trees.len();
                best_val_margin.clone_from(&val_margin);
            } else if trees.len() - best_at >= p.patience {
                break;
            }
            if matches!(grown.as_slice(), [Grown::Leaf { .. }]) {
                break; // nothing left to split
            }
        }
        // At least one tree, so that the model has a supervised section to explain.
        let keep = best_at.max(1);
        if best_at == 0 {
            best_val_margin = val_margin_after(&trees[..1], inputs, train_rows, base_margin);
        }
        trees.truncate(keep);
        losses.truncate(keep);
        Ok(Fitted {
            base_margin,
            trees,
            validation_loss: losses,
            validation_margin: best_val_margin,
            positive_weight: w_pos,
        })
    }
}

/// Validation margins of `trees` walked on the f32 inputs (as the edge does).
fn val_margin_after(trees: &[FittedTree], inputs: &[Vec<f32>], from: usize, base: f64) -> Vec<f64> {
    let rows = inputs[0].len();
    (from..rows)
        .map(|r| {
            let mut m = base;
            for t in trees {
                let mut i = 0;
                let leaf;
                loop {
                    match t.nodes[i] {
                        Node::Split {
                            feature,
                            threshold,
                            right,
                        } => {
                            i = if inputs[usize::from(feature)][r] <= threshold {
                                i + 1
                            } else {
                                right as usize
                            };
                        }
                        Node::Leaf { .. } => {
                            leaf = t.nodes[..i]
                                .iter()
                                .filter(|n| matches!(n, Node::Leaf { .. }))
                                .count();
                            break;
                        }
                    }
                }
                m += t.leaf_values[leaf];
            }
            m
        })
        .collect()
}

/// Platt scaling: `(slope, intercept)` minimising the log-loss of `sigmoid(slope·m + b)` on
/// `margin` against `y` (Newton's method on the two parameters with step halving, so each step
/// lowers the loss; deterministic).
pub fn platt(margin: &[f64], y: &[bool]) -> (f64, f64) {
    let loss = |a: f64, b: f64| {
        let z: Vec<f64> = margin.iter().map(|&m| a * m + b).collect();
        log_loss(&z, y)
    };
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let mut current = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&m, &t) in margin.iter().zip(y) {
            let p = sigmoid(a * m + b);
            let d = p - f64::from(u8::from(t));
            let w = (p * (1.0 - p)).max(1e-12);
            ga += d * m;
            gb += d;
            haa += w * m * m;
            hab += w * m;
            hbb += w;
        }
        // A little ridge keeps the step defined on separable data.
        let (haa, hbb) = (haa + 1e-9, hbb + 1e-9);
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        let mut step = 1.0;
        let mut moved = false;
        for _ in 0..40 {
            let (na, nb) = (a - step * da, b - step * db);
            let l = loss(na, nb);
            if l.is_finite() && l <= current {
                (a, b, current, moved) = (na, nb, l, true);
                break;
            }
            step /= 2.0;
        }
        if !moved || (step * da).abs() < 1e-12 && (step * db).abs() < 1e-12 {
            break;
        }
    }
    if !(a.is_finite() && a > 0.0 && b.is_finite()) {
        return (1.0, 0.0);
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two informative inputs and one noise input; the label depends on both.
    fn data(rows: usize) -> (Vec<Vec<f32>>, Vec<bool>) {
        let mut s = 7u64;
        let mut next = || {
            s = splitmix(s);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut a, mut b, mut c, mut y) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rows {
            let (x0, x1, x2) = (next() * 4.0 - 2.0, next() * 4.0 - 2.0, next());
            let p = sigmoid(3.0 * x0 - 2.0 * x1 * x1 + 1.0);
            y.push(next() < p);
            a.push(x0 as f32);
            b.push(x1 as f32);
            c.push(x2 as f32);
        }
        (vec![a, b, c], y)
    }

    #[test]
    fn learns_a_signal_deterministically_and_stops_early() {
        let (x, y) = data(6000);
        let params = GbdtParams {
            max_iter: 200,
            ..GbdtParams::default()
        }
        .check()
        .unwrap();
        let fit = params.fit(&x, &y, 4500).unwrap();
        assert!(
            fit.trees.len() < 200,
            "{} trees: no early stop",
            fit.trees.len()
        );
        let first = fit.validation_loss[0];
        let last = *fit.validation_loss.last().unwrap();
        assert!(last < first * 0.8, "loss {first} -> {last}");
        // The margins the fit reports are the ones the trees give on the f32 inputs.
        let walked = val_margin_after(&fit.trees, &x, 4500, fit.base_margin);
        assert_eq!(walked, fit.validation_margin);
        let again = params.fit(&x, &y, 4500).unwrap();
        assert_eq!(fit.trees, again.trees);
        // The noise input is used far less than the informative ones.
        let uses = |f: u16| {
            fit.trees
                .iter()
                .flat_map(|t| &t.nodes)
                .filter(|n| matches!(n, Node::Split { feature, .. } if *feature == f))
                .count()
        };
        assert!(
            uses(2) * 3 < uses(0) + uses(1),
            "{} {} {}",
            uses(0),
            uses(1),
            uses(2)
        );
        for t in &fit.trees {
            assert!(model_format::booster::BoostTree::new(t.nodes.clone(), &t.leaf_values).is_ok());
        }
    }

    #[test]
    fn bins_agree_with_thresholds() {
        let values: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 7.0).collect();
        let all: Vec<usize> = (0..values.len()).collect();
        let edges = edges_of(&values, &all);
        assert!(edges.windows(2).all(|w| w[0] < w[1]));
        for &v in &values {
            let b = bin_of(&edges, v);
            for (k, &e) in edges.iter().enumerate() {
                assert_eq!(usize::from(b) <= k, v <= e);
            }
        }
    }

    #[test]
    fn platt_recovers_a_known_scaling() {
        let margin: Vec<f64> = (0..4000).map(|i| (f64::from(i) / 400.0) - 5.0).collect();
        let mut s = 3u64;
        let y: Vec<bool> = margin
            .iter()
            .map(|&m| {
                s = splitmix(s);
                ((s >> 11) as f64 / (1u64 << 53) as f64) < sigmoid(0.5 * m - 1.0)
            })
            .collect();
        let (a, b) = platt(&margin, &y);
        assert!((a - 0.5).abs() < 0.1 && (b + 1.0).abs() < 0.2, "{a} {b}");
    }

    #[test]
    fn bad_parameters_and_data_are_refused() {
        assert!(
            GbdtParams {
                learning_rate: 0.0,
                ..GbdtParams::default()
            }
            .check()
            .is_err()
        );
        assert!(
            GbdtParams {
                max_leaves: 1,
                ..GbdtParams::default()
            }
            .check()
            .is_err()
        );
        let p = GbdtParams::default().check().unwrap();
        let x = vec![vec![0.0f32; 10]];
        assert!(p.fit(&x, &[false; 10], 5).is_err()); // one class only
        assert!(p.fit(&x, &[true; 9], 5).is_err()); // lengths differ
    }
}
