//! `trainer evaluate`: Score labelled (or unlabelled) data with a model and write report.json, report.md and PNG plots: ROC-AUC, average precision, precision/recall/F1 and confusion matrix at the model's threshold, alert rate, score distribution.

use std::path::PathBuf;
use std::time::Instant;
use trainer::evaluate;

use crate::args::{InputArgs, SpecArgs, load, read_model};
use crate::failure::{Classify, Failure};
use crate::output::{Log, Step};

/// Score labelled (or unlabelled) data with a model and write report.json, report.md and
/// PNG plots: ROC-AUC, average precision, precision/recall/F1 and confusion matrix at the
/// model's threshold, alert rate, score distribution.
#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Directory for report.json, report.md and the plots.
    #[arg(long, default_value = "report")]
    pub output_dir: PathBuf,
    /// Skip the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    let Args {
        model,
        input,
        spec,
        output_dir,
        no_plots,
    } = args;
    let started = Instant::now();
    let (model, bytes) = read_model(&model).data()?;
    let spec = spec.spec().usage()?.for_model(&model);
    let step = Step::start(log, "reading and scoring");
    let (dataset, origins) = load(&input, &spec, false, Some(model.features())).data()?;
    let scores = trainer::score::score_table(&model, &dataset.table, false).data()?;
    let decision: Vec<f64> = scores.rows.iter().map(|s| s.decision).collect();
    drop(step);
    let id = model_format::ModelId::of(&bytes).internal()?;
    let report = evaluate::evaluate(
        id.version(),
        origins,
        model.forest().offset(),
        &decision,
        dataset.labels.as_deref(),
    );
    evaluate::write(
        &output_dir,
        &report,
        &decision,
        dataset.labels.as_deref(),
        !no_plots,
    )
    .internal()?;
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    let summary = match &report.labelled {
        Some(l) => format!(
            "ROC-AUC {}, average precision {}, precision {:.4}, recall {:.4}, F1 {:.4}",
            fmt(l.roc_auc),
            fmt(l.average_precision),
            l.precision,
            l.recall,
            l.f1
        ),
        None => "no labels: score distribution only".to_string(),
    };
    log.event(
        "evaluated",
        &format!(
            "wrote {}: {} rows, alert rate {:.4}, {summary}, in {:.2?}",
            output_dir.display(),
            report.rows,
            report.alert_rate,
            started.elapsed()
        ),
        serde_json::to_value(&report).unwrap_or_default(),
    );
    Ok(())
}
