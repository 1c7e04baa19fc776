//! `trainer import-sklearn`: Convert a scikit-learn IsolationForest (+ StandardScaler) exported by tools/export_sklearn.py into a model file that scores exactly like scikit-learn.

use anyhow::Context;
use std::path::PathBuf;

use crate::args::write_file;
use crate::failure::{Classify, Failure};
use crate::output::Log;

/// Convert a scikit-learn IsolationForest (+ StandardScaler) exported by
/// tools/export_sklearn.py into a model file that scores exactly like scikit-learn.
#[derive(clap::Args)]
pub struct Args {
    /// The JSON export.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the model file.
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    let Args { input, output } = args;
    let json = std::fs::read_to_string(&input)
        .with_context(|| format!("reading {}", input.display()))
        .data()?;
    let model = trainer::sklearn::import(&json)
        .with_context(|| format!("importing {}", input.display()))
        .data()?;
    let bytes = model.to_bytes().internal()?;
    write_file(&output, &bytes).internal()?;
    let id = model_format::ModelId::of(&bytes).internal()?;
    let sklearn = model.meta("sklearn_version").unwrap_or("(version unknown)");
    log.event(
        "imported",
        &format!(
            "wrote {} ({} bytes, version {}): scikit-learn {sklearn}, {} features, {} trees, {} nodes, max_samples {}, offset {}",
            output.display(),
            bytes.len(),
            id.version(),
            model.features().len(),
            model.forest().trees().len(),
            model.forest().node_count(),
            model.forest().max_samples(),
            model.forest().offset(),
        ),
        serde_json::json!({"output": output.display().to_string(), "version": id.version(),
            "bytes": bytes.len(), "sklearn_version": sklearn,
            "trees": model.forest().trees().len()}),
    );
    Ok(())
}
