//! `trainer score`: score input files (optionally one shard of them) and write score_samples,
//! anomaly_score (decision_function), risk_score, is_anomaly and mean_path_length, in row order.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, anyhow};
use trainer::score::{Shard, output_name};

use crate::args::{InputArgs, read_model};
use crate::failure::{Classify, Failure};
use crate::output::Log;

/// Score every row of the input files and write score_samples, anomaly_score
/// (decision_function), risk_score, is_anomaly and mean_path_length, in row order: one input
/// file to one output file, or many input files (globs, object-store prefixes) to one scores
/// file each in an output directory, optionally just one shard of them (`--shard`) so a
/// batch job can fan out, e.g. as a Kubernetes Indexed Job.
#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// Where to write the scores. A name ending in .parquet or .csv is one file (one input
    /// file, no --shard). Anything else is a directory (local or an object-store URL) that
    /// gets `<input file stem>.scores.<--output-format>` per input file (floats read back bit
    /// for bit).
    #[arg(long)]
    pub output: String,
    /// Format of the files written into an output directory.
    #[arg(long, value_enum, default_value = "parquet")]
    pub output_format: OutputFormat,
    /// Score only shard INDEX of COUNT (0-based): the input files whose position in the
    /// sorted input list is INDEX modulo COUNT. In a Kubernetes Indexed Job:
    /// `--shard $(JOB_COMPLETION_INDEX)/COUNT`. The shards' outputs together are the
    /// unsharded output.
    #[arg(long, env = "SFE_SHARD")]
    pub shard: Option<Shard>,
    /// Input columns holding the model's features, in model order (comma-separated).
    /// Default: the model's own feature names. A model's velocity features are not read but
    /// computed over each file's rows in file order (arrival order), as `fit` does: the file
    /// needs their entity, time and aggregated columns instead.
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Also explain every row: per feature a `phi_<feature>` column (exact TreeSHAP value
    /// of mean_path_length, as shap.TreeExplainer), then `expected_value`, so that
    /// Σphi + expected_value = mean_path_length.
    #[arg(long)]
    pub explain: bool,
}

/// The format of scores files written into a directory.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    Parquet,
    Csv,
}

impl OutputFormat {
    fn ext(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Csv => "csv",
        }
    }
}

/// An `--output` naming one file rather than a directory.
fn is_file_output(output: &str) -> bool {
    let lower = output.to_ascii_lowercase();
    lower.ends_with(".parquet") || lower.ends_with(".csv")
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    let Args {
        model,
        input,
        output,
        output_format,
        shard: given_shard,
        features,
        explain,
    } = args;
    let started = Instant::now();
    let (model, _) = read_model(&model).data()?;
    let columns = features.unwrap_or_else(|| model.features().to_vec());
    let opts = input.options();
    let shard = given_shard.unwrap_or(Shard::ALL);
    // Every shard lists all inputs (so positions agree) but downloads only its own.
    let inputs = trainer::source::resolve_only(&input.input, input.format, &opts, |position| {
        shard.owns(position)
    })
    .data()?;
    let files = &inputs.files;

    if is_file_output(&output) {
        if given_shard.is_some() || files.len() != 1 {
            return Err(Failure::Usage(anyhow!(
                "--output {} is one file, but {} input files{} were given: give --output a \
                 directory to get one scores file per input file",
                output,
                files.len(),
                if given_shard.is_some() {
                    " and --shard"
                } else {
                    ""
                }
            )));
        }
        let output = PathBuf::from(&output);
        let scores =
            trainer::score::score_input(&model, &files[0], &columns, &output, explain).data()?;
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
        return Ok(());
    }

    // Directory output. Names are decided over the whole input list, so every shard agrees.
    let ext = output_format.ext();
    let mut names: BTreeMap<String, &str> = BTreeMap::new();
    for file in files {
        let name = output_name(file, ext);
        if let Some(other) = names.insert(name.clone(), &file.origin) {
            return Err(Failure::Usage(anyhow!(
                "{other} and {} would both be scored into {name}: input file names must \
                 differ before their first dot",
                file.origin
            )));
        }
    }
    let scratch = tempfile::tempdir()
        .context("creating a scratch directory")
        .internal()?;
    let (mut rows, mut anomalies, mut written) = (0usize, 0usize, 0usize);
    for (position, file) in files.iter().enumerate() {
        if !shard.owns(position) {
            continue;
        }
        let name = output_name(file, ext);
        let local = scratch.path().join(&name);
        let scores = trainer::score::score_input(&model, file, &columns, &local, explain).data()?;
        let dest = format!("{}/{name}", output.trim_end_matches('/'));
        let bytes = std::fs::read(&local)
            .with_context(|| format!("reading back {}", local.display()))
            .internal()?;
        trainer::source::put(&dest, bytes, &opts).internal()?;
        let flagged = scores.rows.iter().filter(|s| s.is_anomaly()).count();
        log.event(
            "scored_file",
            &format!(
                "wrote {dest}: {} rows of {} scored, {flagged} anomalies",
                scores.rows.len(),
                file.origin
            ),
            serde_json::json!({"input": file.origin, "output": dest, "rows": scores.rows.len(),
                "anomalies": flagged}),
        );
        rows += scores.rows.len();
        anomalies += flagged;
        written += 1;
    }
    log.event(
        "scored",
        &format!(
            "shard {shard}: {written} of {} input files scored into {}: {rows} rows, {anomalies} \
             anomalies, in {:.2?}",
            files.len(),
            output,
            started.elapsed()
        ),
        serde_json::json!({"shard": shard.to_string(), "files": written, "input_files": files.len(),
            "output": output, "rows": rows, "anomalies": anomalies,
            "seconds": started.elapsed().as_secs_f64()}),
    );
    Ok(())
}
