//! The SecureFlow Edge trainer as a library: what the `trainer` binary runs, also callable from
//! tests so they exercise exactly the code operators do.

pub mod backtest;
pub mod data;
pub mod evaluate;
pub mod forest;
pub mod gbdt;
pub mod inspect;
pub mod pg;
pub mod publish;
pub mod registry;
pub mod score;
pub mod sklearn;
pub mod source;
pub mod spec;
pub mod supervised;
pub mod synth;
pub mod velocity;

use anyhow::{Context, Result};
use forest::{Contamination, IsolationForestParams};
use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_preprocessing::linear_scaling::LinearScaler;
use model_format::normalize::LEGACY_FEATURES;
use model_format::{Forest, Model, Normalization, Scaler};
use ndarray::Array2;
use rayon::prelude::*;

/// Version of this trainer, recorded in every model it writes.
pub const TRAINER_VERSION: &str = concat!("trainer ", env!("CARGO_PKG_VERSION"));

/// Why [`fit`] failed: the caller's parameters, the data, or this trainer (a bug), so that the
/// binary's exit code follows from the error's type.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The parameters do not suit the data (no rows, more samples than rows, ...).
    #[error(transparent)]
    Params(#[from] forest::ParamError),
    /// The data cannot be fitted (e.g. a scaler that cannot be computed).
    #[error("fitting the scaler: {0:#}")]
    Data(anyhow::Error),
    /// The model built from valid parameters and data failed its own checks: a bug here.
    #[error("the fitted model is invalid (a trainer bug): {0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> FitError {
    FitError::Internal(e.to_string())
}

/// Fits scaler and forest on `table` and returns the validated model.
///
/// Deterministic: the same table and parameters give the same model, hence the same bytes.
pub fn fit(table: &data::Table, params: &IsolationForestParams) -> Result<Model, FitError> {
    fit_with_velocity(table, params, None)
}

/// [`fit`] for a table whose last columns are `velocity`'s features: the model then carries
/// their definitions (section `VELO`) and reads them from the edge's computed values.
pub fn fit_with_velocity(
    table: &data::Table,
    params: &IsolationForestParams,
    velocity: Option<&model_format::velocity::VelocitySpec>,
) -> Result<Model, FitError> {
    fit_forest(
        table,
        params,
        velocity,
        VelocityForest::Mixed,
        VelocityTail::default(),
    )
}

/// How a forest treats velocity features.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VelocityForest {
    /// One forest over every feature (each tree may split on any of them).
    #[default]
    Mixed,
    /// `n_estimators` trees on the per-transaction features and as many on the velocity
    /// features, the second group adding only in its tail (the velocity tail share): velocity
    /// then finds bursts without blurring what one transaction alone shows
    /// ([`model_format::TreeGroups`]).
    Separate,
}

/// The default share of training rows in the velocity group's tail: a row adds the velocity
/// trees' evidence only where their path length is below this quantile of the training rows'.
/// Larger shares reach more of the sequences and blur more of the single transactions
/// (tools/forest_groups.py measures the trade-off on a labelled stream).
pub const DEFAULT_VELOCITY_TAIL: f64 = 0.1;

/// Where and how much a separate velocity forest adds (`trainer fit --velocity-tail`,
/// `--velocity-weight`; model-format's `TreeGroups`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VelocityTail {
    /// The share (in (0, 0.5]) of training rows, most unusual in their velocity, for which
    /// the velocity trees add.
    pub share: f64,
    /// What their shortening of the path length is multiplied by (1 to
    /// `model_format::MAX_TREE_GROUP_WEIGHT`).
    pub weight: u32,
}

impl Default for VelocityTail {
    fn default() -> Self {
        Self {
            share: DEFAULT_VELOCITY_TAIL,
            weight: 1,
        }
    }
}

/// [`fit_with_velocity`] with the velocity features in a forest of their own when `how` is
/// [`VelocityForest::Separate`] (and the table has both kinds of features), adding as `tail`
/// says for the training rows most unusual there.
pub fn fit_forest(
    table: &data::Table,
    params: &IsolationForestParams,
    velocity: Option<&model_format::velocity::VelocitySpec>,
    how: VelocityForest,
    tail: VelocityTail,
) -> Result<Model, FitError> {
    let VelocityTail {
        share: velocity_tail,
        weight: velocity_weight,
    } = tail;
    if !(velocity_tail > 0.0 && velocity_tail <= 0.5) {
        return Err(forest::ParamError::VelocityTail(velocity_tail).into());
    }
    if !(1..=model_format::MAX_TREE_GROUP_WEIGHT).contains(&velocity_weight) {
        return Err(forest::ParamError::VelocityWeight(velocity_weight).into());
    }
    let mut timer = Timings::from_env();
    let n_rows = table.rows();
    let valid = params.check(n_rows, table.columns.len())?;
    let scaler = fit_scaler(table).map_err(FitError::Data)?;
    timer.lap("scaler");

    // Scale through model-format's own expression and cast to f32 like the scorer does, so
    // trees are grown on exactly the values they will later compare.
    let scaled: Vec<Vec<f32>> = table
        .columns
        .par_iter()
        .enumerate()
        .map(|(f, col)| {
            col.par_iter()
                .map(|&v| scaler.scale_one(f, v) as f32)
                .collect()
        })
        .collect();
    timer.lap("scale");
    let n_velocity = velocity.map_or(0, |v| v.features().len());
    let n_base = table.columns.len() - n_velocity;
    let grouped = how == VelocityForest::Separate && n_velocity > 0 && n_base > 0;
    let (trees, velocity_trees) = if grouped {
        let base: Vec<usize> = (0..n_base).collect();
        let rest: Vec<usize> = (n_base..table.columns.len()).collect();
        let velocity_params = forest::ValidParams {
            max_features: valid.max_features.min(rest.len()),
            ..valid
        };
        let base_params = forest::ValidParams {
            max_features: valid.max_features.min(base.len()),
            ..valid
        };
        (
            base_params.grow_trees_on(&scaled, &base, 0),
            velocity_params.grow_trees_on(&scaled, &rest, valid.n_estimators as u64),
        )
    } else {
        (valid.grow_trees(&scaled), Vec::new())
    };
    timer.lap("trees");

    let mut metadata = vec![
        ("trainer".to_string(), TRAINER_VERSION.to_string()),
        ("training_rows".to_string(), n_rows.to_string()),
        (
            "training_data_crc32".to_string(),
            format!("{:08x}", fingerprint(table)),
        ),
        ("n_estimators".to_string(), valid.n_estimators.to_string()),
        ("max_samples".to_string(), valid.psi.to_string()),
        ("contamination".to_string(), valid.contamination.to_string()),
        ("seed".to_string(), valid.seed.to_string()),
    ];
    // Recorded only when not scikit-learn's defaults, so default models keep their bytes.
    if valid.max_features < valid.n_features {
        metadata.push(("max_features".to_string(), valid.max_features.to_string()));
    }
    if valid.bootstrap {
        metadata.push(("bootstrap".to_string(), "true".to_string()));
    }
    if grouped {
        metadata.push(("velocity_forest".to_string(), "separate".to_string()));
        metadata.push(("velocity_tail".to_string(), velocity_tail.to_string()));
        // Recorded only when set, so models fitted before weights keep their bytes.
        if velocity_weight != 1 {
            metadata.push(("velocity_weight".to_string(), velocity_weight.to_string()));
        }
    }
    timer.lap("fingerprint");
    let psi = valid.psi as u32;
    // Every training row's score: the contamination offset (scikit-learn's) is one of their
    // quantiles, and the model carries their distribution for drift monitoring. The rows are
    // already scaled to f32 exactly as Model::score scales them, so the batch scorer gives the
    // same scores without scaling again.
    let base = Forest::new(trees, psi, -0.5).map_err(internal)?;
    let sums = training_path_sums(&base, &scaled)?;
    let (mut forest, mut scores): (Forest, Vec<f64>) = if grouped {
        // The velocity group's tail: that quantile of its training path lengths.
        let rest = Forest::new(velocity_trees, psi, -0.5).map_err(internal)?;
        let rest_sums = training_path_sums(&rest, &scaled)?;
        let n = rest.trees().len() as f64;
        let mut means: Vec<f64> = rest_sums.iter().map(|s| s / n).collect();
        let tail = forest::percentile(&mut means, 100.0 * velocity_tail);
        let n0 = base.trees().len() as u32;
        let groups =
            model_format::TreeGroups::new(vec![n0, n0 + rest.trees().len() as u32], vec![tail])
                .and_then(|g| g.with_weight(velocity_weight))
                .map_err(internal)?;
        let trees = [base.trees(), rest.trees()].concat();
        let forest = Forest::new(trees, psi, -0.5)
            .and_then(|f| f.with_groups(groups))
            .map_err(internal)?;
        let scores = sums
            .par_iter()
            .zip(&rest_sums)
            .map(|(&a, &b)| forest.score_group_sums(&[a, b]).score_samples)
            .collect();
        (forest, scores)
    } else {
        let scores = sums
            .par_iter()
            .map(|&s| base.score_path_sum(s).score_samples)
            .collect();
        (base, scores)
    };
    timer.lap("training scores");
    if let Contamination::Fraction(c) = valid.contamination {
        // Offset = the contamination quantile of the training scores, as scikit-learn does.
        let offset = forest::percentile(&mut scores, 100.0 * c);
        forest = forest.with_offset(offset).map_err(internal)?;
    }
    let offset = forest.offset();
    let distribution: Vec<f64> = (0..SCORE_QUANTILES)
        .map(|k| {
            let q = 100.0 * k as f64 / (SCORE_QUANTILES - 1) as f64;
            forest::percentile(&mut scores, q) - offset
        })
        .collect();
    drop(scores);
    timer.lap("quantiles");
    drop(scaled);
    let model = Model::new(table.names.clone(), scaler, forest, metadata).map_err(internal)?;
    let model = model
        .with_normalization(payload_rules(&table.names, velocity))
        .and_then(|m| m.with_score_distribution(distribution))
        .map_err(internal)?;
    match velocity {
        Some(v) => model.with_velocity(v.clone()).map_err(internal),
        None => Ok(model),
    }
}

/// Every training row's path lengths summed over `forest`'s trees in tree order, from rows
/// already scaled to f32 (`scaled[feature][row]`).
fn training_path_sums(forest: &Forest, scaled: &[Vec<f32>]) -> Result<Vec<f64>, FitError> {
    let n_rows = scaled.first().map_or(0, Vec::len);
    let mut sums = vec![0.0; n_rows];
    if let Some(batch) = model_format::batch::BatchForest::new(forest) {
        let block_rows = model_format::batch::BLOCK;
        score::path_length_sums(&batch, scaled.len(), &mut sums, |start, block, len| {
            for (f, col) in scaled.iter().enumerate() {
                block[f * block_rows..f * block_rows + len]
                    .copy_from_slice(&col[start..start + len]);
            }
        });
    } else {
        // Trees too deep to lay out flat (ψ above 65,536): one row at a time.
        sums.par_iter_mut()
            .enumerate()
            .try_for_each_init(
                || Vec::with_capacity(scaled.len()),
                |row, (i, s)| {
                    row.clear();
                    row.extend(scaled.iter().map(|c| c[i]));
                    *s = forest.path_length_sum(row)?;
                    Ok::<_, model_format::ScoreError>(())
                },
            )
            .map_err(internal)?;
    }
    Ok(sums)
}

/// Points of the training score distribution a fitted model carries: the deciles, minimum and
/// maximum included (ten equally likely bins for the store's population stability index).
pub const SCORE_QUANTILES: usize = 11;

/// Phase timings on stderr when `SFE_TIMINGS` is set, for profiling `fit`.
struct Timings(Option<std::time::Instant>);

impl Timings {
    fn from_env() -> Self {
        Timings(std::env::var_os("SFE_TIMINGS").map(|_| std::time::Instant::now()))
    }

    fn lap(&mut self, phase: &str) {
        if let Some(start) = &mut self.0 {
            eprintln!("fit: {phase:<16} {:>9.1?}", start.elapsed());
            *start = std::time::Instant::now();
        }
    }
}

/// The legacy API's payload shapes when the features are the legacy five (followed by any
/// velocity features); otherwise each feature is read from the payload field of the same name.
/// Velocity features are always read by name: the edge lays its computed values over the
/// payload under those names.
pub fn payload_rules(
    features: &[String],
    velocity: Option<&model_format::velocity::VelocitySpec>,
) -> Normalization {
    let n_velocity = velocity.map_or(0, |v| v.features().len());
    let base = &features[..features.len().saturating_sub(n_velocity)];
    if base.iter().map(String::as_str).eq(LEGACY_FEATURES) {
        let mut rules = Normalization::legacy();
        rules.rules.extend(
            features[base.len()..]
                .iter()
                .map(|f| model_format::normalize::FeatureRule::numeric(f)),
        );
        rules
    } else {
        Normalization::generic(features)
    }
}

/// StandardScaler fitted with linfa-preprocessing. linfa stores the multiplier `1/std` (1 for
/// constant features); the model stores scikit-learn's divisor `scale_`.
fn fit_scaler(table: &data::Table) -> Result<Scaler> {
    let records = Array2::from_shape_fn((table.rows(), table.columns.len()), |(r, f)| {
        table.columns[f][r]
    });
    let fitted = LinearScaler::standard()
        .fit(&DatasetBase::from(records))
        .context("fitting the standard scaler")?;
    let mean = fitted.offsets().to_vec();
    let scale = fitted.scales().iter().map(|&inv| 1.0 / inv).collect();
    Ok(Scaler::new(mean, scale)?)
}

/// CRC-32 over the training values, recorded so a model can be traced to its data.
fn fingerprint(table: &data::Table) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (name, col) in table.names.iter().zip(&table.columns) {
        h.update(name.as_bytes());
        // Same bytes as one update per value, fed in chunks: one call per 32 KiB, not per 8 B.
        let mut bytes = Vec::with_capacity(8 * 4096);
        for chunk in col.chunks(4096) {
            bytes.clear();
            chunk
                .iter()
                .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            h.update(&bytes);
        }
    }
    h.finalize()
}
