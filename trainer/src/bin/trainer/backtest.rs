//! `trainer backtest`: what models and rules would have done on a labelled history.

use std::path::PathBuf;

use crate::args::{SpecArgs, read_model};
use crate::failure::{Classify, Failure};
use crate::output::Log;

/// Replay a history through models (and a rule policy): each model's ROC-AUC and average
/// precision, overall and per segment (e.g. `--segment pattern`); each rule's hits, and with
/// labels its precision and recall. Velocity features are computed over the rows in file
/// (arrival) order, as the edge would have.
#[derive(clap::Args)]
pub struct Args {
    /// Model file(s); the first one's scores feed the rules. Give a model with velocity
    /// features and one without to compare them on the same history.
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// History: a local Parquet/CSV/NDJSON file, in arrival order.
    #[arg(long)]
    pub input: PathBuf,
    /// Rule policy (TOML: rules, lists, defaults), as the edge reads it.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// A column whose values split the positives (e.g. the synthetic `pattern`).
    #[arg(long)]
    pub segment: Option<String>,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Also draw average precision per segment and model as a PNG here.
    #[arg(long)]
    pub chart: Option<PathBuf>,
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    let Args {
        models: paths,
        input,
        rules,
        segment,
        spec,
        output,
        chart,
    } = args;
    let spec = spec.spec().usage()?;
    let mut models = Vec::new();
    for path in &paths {
        let (model, bytes) = read_model(path).data()?;
        let id = model_format::ModelId::of(&bytes).internal()?;
        models.push((id.version(), model));
    }
    let policy = match &rules {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Failure::Data(anyhow::anyhow!("reading {}: {e}", p.display())))?;
            Some(
                rules::Policy::from_toml(&text)
                    .map_err(|e| Failure::Data(anyhow::anyhow!("{}: {e}", p.display())))?,
            )
        }
    };
    let report =
        trainer::backtest::run(&input, &spec, &models, policy.as_ref(), segment.as_deref())
            .data()?;
    if let Some(path) = &chart {
        report.chart(path).data()?;
    }
    if let Some(out) = &output {
        let json = serde_json::to_vec_pretty(&report).internal()?;
        crate::args::write_file(out, &json).internal()?;
    }
    let text = report.to_text();
    log.event(
        "backtested",
        &text,
        serde_json::to_value(&report).unwrap_or_default(),
    );
    Ok(())
}
