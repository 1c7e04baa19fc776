//! A deterministic isolation-forest grower for tests and benches: scikit-learn's rules
//! (ψ-row subsample, random feature, uniform threshold, depth limit ⌈log2 ψ⌉) on synthetic
//! transaction-like data. Not the trainer; only realistic shapes are needed here.

#![allow(dead_code)]

use model_format::{Forest, Model, Node, Scaler, Tree};

/// SplitMix64: small, deterministic, good enough for test data.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Roughly normal (sum of uniforms).
    pub fn normal(&mut self) -> f64 {
        (0..6).map(|_| self.unit()).sum::<f64>() - 3.0
    }
}

pub const FEATURES: [&str; 5] = ["amount", "hour", "day_of_week", "merchant_risk", "velocity"];

/// Transaction-like rows: mostly regular, a few outliers.
pub fn synthetic_rows(n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|i| {
            let outlier = i % 50 == 0;
            let k = if outlier { 6.0 } else { 1.0 };
            vec![
                (60.0 + 25.0 * k * rng.normal()).abs(),
                ((13.0 + 4.0 * k * rng.normal()).rem_euclid(24.0)).floor(),
                rng.below(7) as f64,
                (0.2 + 0.1 * k * rng.normal()).clamp(0.0, 1.0),
                (3.0 + 1.5 * k * rng.normal()).abs().round(),
            ]
        })
        .collect()
}

/// Fits a StandardScaler on `rows` and grows `n_trees` isolation trees on ψ-row subsamples.
pub fn grow_model(rows: &[Vec<f64>], n_trees: usize, psi: usize, seed: u64) -> Model {
    let m = rows[0].len();
    let n = rows.len() as f64;
    let mean: Vec<f64> = (0..m)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let scale: Vec<f64> = (0..m)
        .map(|j| {
            let var = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
            if var > 0.0 { var.sqrt() } else { 1.0 }
        })
        .collect();
    let scaler = Scaler::new(mean, scale).unwrap();
    let scaled: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| (0..m).map(|j| scaler.scale_one(j, r[j]) as f32).collect())
        .collect();
    let psi = psi.min(rows.len());
    let max_depth = (psi as f64).log2().ceil() as u32;
    let mut rng = SplitMix(seed);
    let trees = (0..n_trees)
        .map(|_| {
            // Partial Fisher–Yates: ψ distinct rows.
            let mut idx: Vec<usize> = (0..scaled.len()).collect();
            for i in 0..psi {
                let j = i + rng.below(idx.len() - i);
                idx.swap(i, j);
            }
            let sample: Vec<&[f32]> = idx[..psi].iter().map(|&i| &scaled[i][..]).collect();
            let mut nodes = Vec::new();
            grow(&mut nodes, &sample, 0, max_depth, m, &mut rng);
            Tree::new(nodes).unwrap()
        })
        .collect();
    let names = FEATURES
        .iter()
        .map(std::string::ToString::to_string)
        .take(m)
        .collect();
    Model::new(
        names,
        scaler,
        Forest::new(trees, psi as u32, -0.5).unwrap(),
        vec![],
    )
    .unwrap()
}

fn grow(
    nodes: &mut Vec<Node>,
    rows: &[&[f32]],
    depth: u32,
    max_depth: u32,
    m: usize,
    rng: &mut SplitMix,
) {
    let leaf = Node::Leaf {
        samples: rows.len() as u32,
    };
    if depth >= max_depth || rows.len() <= 1 {
        nodes.push(leaf);
        return;
    }
    // A random feature that is not constant here, as scikit-learn's random splitter.
    let start = rng.below(m);
    for off in 0..m {
        let f = (start + off) % m;
        let lo = rows.iter().map(|r| r[f]).fold(f32::INFINITY, f32::min);
        let hi = rows.iter().map(|r| r[f]).fold(f32::NEG_INFINITY, f32::max);
        if lo >= hi {
            continue;
        }
        let threshold = (f64::from(lo) + rng.unit() * (f64::from(hi) - f64::from(lo))) as f32;
        let (left, right): (Vec<&[f32]>, Vec<&[f32]>) =
            rows.iter().partition(|r| r[f] <= threshold);
        if left.is_empty() || right.is_empty() {
            continue;
        }
        let at = nodes.len();
        nodes.push(leaf); // placeholder
        grow(nodes, &left, depth + 1, max_depth, m, rng);
        let r = nodes.len() as u32;
        grow(nodes, &right, depth + 1, max_depth, m, rng);
        nodes[at] = Node::Split {
            feature: f as u16,
            threshold,
            right: r,
        };
        return;
    }
    nodes.push(leaf);
}
