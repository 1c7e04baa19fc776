//! `trainer score`: Score every row of a Parquet or CSV file and write score_samples, anomaly_score (decision_function), risk_score, is_anomaly and mean_path_length, in row order.

use std::path::PathBuf;
use std::time::Instant;

use crate::args::read_model;
use crate::failure::{Classify, Failure};
use crate::output::Log;

/// Score every row of a Parquet or CSV file and write score_samples, anomaly_score
/// (decision_function), risk_score, is_anomaly and mean_path_length, in row order.
#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Rows to score (.parquet or .csv).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the scores (.parquet or .csv; floats read back bit for bit).
    #[arg(long)]
    pub output: PathBuf,
    /// Input columns holding the model's features, in model order (comma-separated).
    /// Default: the model's own feature names.
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Also explain every row: per feature a `phi_<feature>` column (exact TreeSHAP value
    /// of mean_path_length, as shap.TreeExplainer), then `expected_value`, so that
    /// Σphi + expected_value = mean_path_length.
    #[arg(long)]
    pub explain: bool,
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    let Args {
        model,
        input,
        output,
        features,
        explain,
    } = args;
    let started = Instant::now();
    let (model, _) = read_model(&model).data()?;
    let columns = features.unwrap_or_else(|| model.features().to_vec());
    let scores = trainer::score::score_file(&model, &input, &columns, &output, explain).data()?;
    let anomalies = scores.rows.iter().filter(|s| s.is_anomaly()).count();
    log.event(
        "scored",
        &format!(
            "wrote {}: {} rows scored, {} anomalies, in {:.2?}",
            output.display(),
            scores.rows.len(),
            anomalies,
            started.elapsed()
        ),
        serde_json::json!({"output": output.display().to_string(), "rows": scores.rows.len(),
            "anomalies": anomalies, "seconds": started.elapsed().as_secs_f64()}),
    );
    Ok(())
}
