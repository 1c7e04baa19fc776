//! `trainer`: fits SecureFlow Edge models from exported transactions.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
            if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&output, &bytes)
                .with_context(|| format!("writing {}", output.display()))?;
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
