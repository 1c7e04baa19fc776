//! `trainer`: fits SecureFlow Edge models from exported transactions.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Instant;
use trainer::forest::{Contamination, IsolationForestParams, MaxSamples};
use trainer::{data, synth};

#[derive(Parser)]
#[command(
    version,
    about = "Fit SecureFlow Edge anomaly models and write the model file the worker embeds."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fit a StandardScaler + isolation forest on a Parquet or CSV file and write a model file.
    Fit {
        /// Training data (.parquet or .csv).
        #[arg(long)]
        input: PathBuf,
        /// Where to write the model file.
        #[arg(long)]
        output: PathBuf,
        /// Feature columns, in model order (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = synth::LEGACY_FEATURES.map(String::from))]
        features: Vec<String>,
        /// Number of trees.
        #[arg(long, default_value_t = 100)]
        n_estimators: usize,
        /// Rows per tree: 'auto' (min(256, rows)), a count, or a fraction of the rows.
        #[arg(long, default_value = "auto")]
        max_samples: MaxSamples,
        /// Expected share of anomalies: 'auto' (offset -0.5) or a fraction in (0, 0.5].
        #[arg(long, default_value = "auto")]
        contamination: Contamination,
        /// Random seed; the same data and seed give the same model bytes.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Convert a scikit-learn IsolationForest (+ StandardScaler) exported by
    /// tools/export_sklearn.py into a model file that scores exactly like scikit-learn.
    ImportSklearn {
        /// The JSON export.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the model file.
        #[arg(long)]
        output: PathBuf,
    },
    /// Score every row of a Parquet or CSV file and write score_samples, anomaly_score
    /// (decision_function), risk_score, is_anomaly and mean_path_length, in row order.
    Score {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        /// Rows to score (.parquet or .csv).
        #[arg(long)]
        input: PathBuf,
        /// Where to write the scores (.parquet or .csv; floats read back bit for bit).
        #[arg(long)]
        output: PathBuf,
        /// Input columns holding the model's features, in model order (comma-separated).
        /// Default: the model's own feature names.
        #[arg(long, value_delimiter = ',')]
        features: Option<Vec<String>>,
        /// Also explain every row: per feature a `phi_<feature>` column (exact TreeSHAP value
        /// of mean_path_length, as shap.TreeExplainer), then `expected_value`, so that
        /// Σphi + expected_value = mean_path_length.
        #[arg(long)]
        explain: bool,
    },
    /// Write seeded synthetic transactions (legacy five features + `label`, 1 = anomaly).
    Synth {
        /// Output file (.parquet or .csv).
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        /// Share of labelled anomalies.
        #[arg(long, default_value_t = 0.05)]
        anomaly_rate: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Fit {
            input,
            output,
            features,
            n_estimators,
            max_samples,
            contamination,
            seed,
        } => {
            let started = Instant::now();
            let table = data::read_features(&input, &features)?;
            let params = IsolationForestParams {
                n_estimators,
                max_samples,
                contamination,
                seed,
            };
            let model = trainer::fit(&table, &params)?;
            let bytes = model.to_bytes()?;
            write_file(&output, &bytes)?;
            let id = model_format::ModelId::of(&bytes)?;
            println!(
                "wrote {} ({} bytes, version {}): {} rows, {} features, {} trees, {} nodes, offset {:.6}, in {:.2?}",
                output.display(),
                bytes.len(),
                id.version(),
                table.rows(),
                features.len(),
                model.forest().trees().len(),
                model.forest().node_count(),
                model.forest().offset(),
                started.elapsed()
            );
        }
        Command::ImportSklearn { input, output } => {
            let json = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let model = trainer::sklearn::import(&json)
                .with_context(|| format!("importing {}", input.display()))?;
            let bytes = model.to_bytes()?;
            write_file(&output, &bytes)?;
            let id = model_format::ModelId::of(&bytes)?;
            println!(
                "wrote {} ({} bytes, version {}): scikit-learn {}, {} features, {} trees, {} nodes, max_samples {}, offset {}",
                output.display(),
                bytes.len(),
                id.version(),
                model.meta("sklearn_version").unwrap_or("(version unknown)"),
                model.features().len(),
                model.forest().trees().len(),
                model.forest().node_count(),
                model.forest().max_samples(),
                model.forest().offset(),
            );
        }
        Command::Score {
            model,
            input,
            output,
            features,
            explain,
        } => {
            let started = Instant::now();
            let bytes =
                std::fs::read(&model).with_context(|| format!("reading {}", model.display()))?;
            let model = model_format::Model::from_bytes(&bytes)
                .with_context(|| format!("decoding {}", model.display()))?;
            let columns = features.unwrap_or_else(|| model.features().to_vec());
            let scores = trainer::score::score_file(&model, &input, &columns, &output, explain)?;
            let anomalies = scores.rows.iter().filter(|s| s.is_anomaly()).count();
            println!(
                "wrote {}: {} rows scored, {} anomalies, in {:.2?}",
                output.display(),
                scores.rows.len(),
                anomalies,
                started.elapsed()
            );
        }
        Command::Synth {
            output,
            rows,
            anomaly_rate,
            seed,
        } => {
            anyhow::ensure!(
                (0.0..=1.0).contains(&anomaly_rate),
                "--anomaly-rate must be in [0, 1]"
            );
            let mut df = synth::transactions(rows, anomaly_rate, seed)?;
            data::write_frame(&output, &mut df)?;
            println!(
                "wrote {} ({rows} transactions, seed {seed})",
                output.display()
            );
        }
    }
    Ok(())
}

/// Writes `bytes` to `path`, creating its directory.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
