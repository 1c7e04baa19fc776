//! The SecureFlow Edge trainer as a library: what the `trainer` binary runs, also callable from
//! tests so they exercise exactly the code operators do.

pub mod data;
pub mod forest;
pub mod score;
pub mod sklearn;
pub mod synth;

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

/// Fits scaler and forest on `table` and returns the validated model.
///
/// Deterministic: the same table and parameters give the same model, hence the same bytes.
pub fn fit(table: &data::Table, params: &IsolationForestParams) -> Result<Model> {
    let n_rows = table.rows();
    let valid = params.check(n_rows)?;
    let scaler = fit_scaler(table)?;

    // Scale through model-format's own expression and cast to f32 like the scorer does, so
    // trees are grown on exactly the values they will later compare.
    let scaled: Vec<Vec<f32>> = table
        .columns
        .par_iter()
        .enumerate()
        .map(|(f, col)| col.iter().map(|&v| scaler.scale_one(f, v) as f32).collect())
        .collect();
    let trees = valid.grow_trees(&scaled);
    drop(scaled);

    let metadata = vec![
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
    let forest = Forest::new(trees, valid.psi as u32, -0.5)?;
    let mut model = Model::new(table.names.clone(), scaler, forest, metadata)?;
    if let Contamination::Fraction(c) = valid.contamination {
        // Offset = the contamination quantile of the training scores, as scikit-learn does.
        let mut scores: Vec<f64> = (0..n_rows)
            .into_par_iter()
            .map(|i| model.score(&table.row(i)).map(|s| s.score_samples))
            .collect::<Result<_, _>>()?;
        let offset = forest::percentile(&mut scores, 100.0 * c);
        let forest = model.forest().clone().with_offset(offset)?;
        model = Model::new(
            model.features().to_vec(),
            model.scaler().clone(),
            forest,
            model.metadata().to_vec(),
        )?;
    }
    Ok(model.with_normalization(payload_rules(&table.names))?)
}

/// The legacy API's payload shapes when the features are the legacy five; otherwise each
/// feature is read from the payload field of the same name.
pub fn payload_rules(features: &[String]) -> Normalization {
    if features.iter().map(String::as_str).eq(LEGACY_FEATURES) {
        Normalization::legacy()
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
        col.iter().for_each(|v| h.update(&v.to_le_bytes()));
    }
    h.finalize()
}
