//! `trainer synth`: Write seeded synthetic transactions (legacy five features + `label`, 1 = anomaly).

use std::path::PathBuf;
use trainer::{data, synth};

use crate::failure::{Classify, Failure};
use crate::output::Log;

/// Write seeded synthetic transactions (legacy five features + `label`, 1 = anomaly).
#[derive(clap::Args)]
pub struct Args {
    /// Output file (.parquet or .csv).
    #[arg(long)]
    pub output: PathBuf,
    /// Richer traffic: per-card habits, a timestamp, and labelled fraud patterns (card
    /// testing, bursts, unusual combinations, amount outliers) in a `pattern` column.
    #[arg(long)]
    pub patterns: bool,
    #[arg(long, default_value_t = 10_000)]
    pub rows: usize,
    /// Share of labelled anomalies.
    #[arg(long, default_value_t = 0.05)]
    pub anomaly_rate: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    let Args {
        output,
        patterns,
        rows,
        anomaly_rate,
        seed,
    } = args;
    if !(0.0..=1.0).contains(&anomaly_rate) {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--anomaly-rate must be in [0, 1]"
        )));
    }
    let mut df = if patterns {
        synth::patterned(rows, anomaly_rate, seed)
    } else {
        synth::transactions(rows, anomaly_rate, seed)
    }
    .internal()?;
    data::write_frame(&output, &mut df).internal()?;
    log.event(
        "synthesized",
        &format!(
            "wrote {} ({rows} transactions, seed {seed})",
            output.display()
        ),
        serde_json::json!({"output": output.display().to_string(), "rows": rows, "seed": seed}),
    );
    Ok(())
}
