//! `trainer inspect`: Describe a model file: metadata, schema, section sizes, checksum, training data.

use anyhow::Context;
use std::path::PathBuf;
use trainer::inspect;

use crate::failure::{Classify, Failure};
use crate::output::Log;

/// Describe a model file: metadata, schema, section sizes, checksum, training data.
#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    let Args { model, json } = args;
    let bytes = std::fs::read(&model)
        .with_context(|| format!("reading {}", model.display()))
        .data()?;
    let report = inspect::inspect(&bytes)
        .with_context(|| format!("inspecting {}", model.display()))
        .data()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else if log.json {
        // One event line, like every other subcommand under --log-format json.
        log.event(
            "inspected",
            &format!("{} {}", model.display(), report.version),
            serde_json::to_value(&report).unwrap_or_default(),
        );
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
