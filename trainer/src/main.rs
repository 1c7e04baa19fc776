//! `trainer`: fits SecureFlow Edge models from exported transactions.
//!
//! Exit codes (stable, for schedulers and scripts):
//! 0 success · 1 unexpected failure · 2 usage error (bad flags) · 3 data error (inputs missing,
//! unreadable or invalid; model file corrupt) · 4 quality gate refused to publish.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use trainer::forest::{Contamination, IsolationForestParams, MaxFeatures, MaxSamples};
use trainer::source::{self, InputFormat, StoreOptions};
use trainer::spec::{self, Derive, FeatureSpec, Plan};
use trainer::{data, evaluate, inspect, publish, synth};

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 unexpected failure, 2 usage error, 3 data error, 4 quality gate refused.
Inputs: local paths or globs, file:// URLs, or object-store URLs (s3://bucket/prefix/*.parquet,
gs://, az://, https://). S3 settings come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, AWS_ENDPOINT... unless given with --s3-* flags. See docs/operations.md.";

#[derive(Parser)]
#[command(
    version,
    about = "Fit SecureFlow Edge anomaly models and write the model file the worker embeds.",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Log output: text for people, json (one object per line) for log collectors; auto picks
    /// text on a terminal and json otherwise.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Auto,
    Json,
    Text,
}

/// Where data is read from.
#[derive(Args, Clone)]
struct InputArgs {
    /// Input data: a path, glob, file:// or object-store URL (s3://, gs://, az://, https://).
    /// Repeat to combine several inputs (same columns).
    #[arg(long, required = true)]
    input: Vec<String>,
    /// Force the file format instead of guessing it from the extension.
    #[arg(long, value_enum)]
    format: Option<InputFormat>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    postgres: PgArgs,
}

/// What to read from a postgres:// input.
#[derive(Args, Clone, Default)]
struct PgArgs {
    /// Postgres inputs: the table to read (default: transactions).
    #[arg(long, conflicts_with = "query")]
    table: Option<String>,
    /// Postgres inputs: a SELECT to read instead of a table.
    #[arg(long)]
    query: Option<String>,
    /// Postgres inputs: the timestamp column --since/--until apply to.
    #[arg(long, default_value = "scored_at")]
    time_column: String,
    /// Postgres inputs: rows at or after this: a duration back from now (30d, 12h) or an
    /// RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Postgres inputs: rows before this (RFC 3339 time, or a duration back from now).
    #[arg(long)]
    until: Option<String>,
    /// Postgres inputs: keep only transactions with analyst feedback and derive `label` from
    /// it (anomalous = flagged and confirmed, or not flagged and reported).
    #[arg(long)]
    labels_from_feedback: bool,
}

#[derive(Args, Clone, Default)]
struct StoreArgs {
    /// S3-compatible endpoint URL (default: AWS_ENDPOINT / AWS_ENDPOINT_URL, else AWS).
    #[arg(long, env = "SFE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION / AWS_DEFAULT_REGION).
    #[arg(long)]
    s3_region: Option<String>,
    /// Allow plain-HTTP S3 endpoints (local MinIO and the like).
    #[arg(long)]
    s3_allow_http: bool,
}

impl StoreArgs {
    fn options(&self) -> StoreOptions {
        StoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_allow_http: self.s3_allow_http,
            postgres: Default::default(),
        }
    }
}

impl InputArgs {
    fn options(&self) -> StoreOptions {
        let p = &self.postgres;
        StoreOptions {
            postgres: trainer::pg::PgOptions {
                table: p.table.clone(),
                query: p.query.clone(),
                time_column: p.time_column.clone(),
                since: p.since.clone(),
                until: p.until.clone(),
                labels_from_feedback: p.labels_from_feedback,
            },
            ..self.store.options()
        }
    }
}

/// Which columns are features and label.
#[derive(Args, Clone)]
struct SpecArgs {
    /// Feature spec file (TOML: features, label, label_positive, ignore, derive).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Feature columns, in model order (comma-separated). Default: the legacy five if present
    /// (or derivable from timestamp/merchant/category/type), else every numeric column except
    /// the label and --ignore'd ones.
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
    /// Label column (default: `label` if present). Only evaluation and gates use it.
    #[arg(long)]
    label: Option<String>,
    /// Label value that marks an anomaly (default: 1/true/yes/anomaly/fraud, or any non-zero number).
    #[arg(long)]
    label_positive: Option<String>,
    /// Columns never used as features (comma-separated).
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// Derivation of the legacy features from raw fields (timestamp → hour/day_of_week,
    /// merchant/category hashing, type lookup), with the edge's own rules.
    #[arg(long, value_enum)]
    derive: Option<Derive>,
}

impl SpecArgs {
    fn spec(&self) -> Result<FeatureSpec> {
        let base = match &self.spec {
            Some(p) => FeatureSpec::from_file(p)?,
            None => FeatureSpec::default(),
        };
        Ok(base.with_overrides(
            self.features.clone(),
            self.label.clone(),
            self.label_positive.clone(),
            self.ignore.clone(),
            self.derive,
        ))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Fit a StandardScaler + isolation forest on Parquet/CSV/NDJSON data and write a model file.
    Fit {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        spec: SpecArgs,
        /// Where to write the model file. Optional with --publish.
        #[arg(long, required_unless_present = "publish")]
        output: Option<PathBuf>,
        /// Number of trees.
        #[arg(long, default_value_t = 100)]
        n_estimators: usize,
        /// Rows per tree: 'auto' (min(256, rows)), a count, or a fraction of the rows.
        #[arg(long, default_value = "auto")]
        max_samples: MaxSamples,
        /// Expected share of anomalies: 'auto' (offset -0.5) or a fraction in (0, 0.5].
        #[arg(long, default_value = "auto")]
        contamination: Contamination,
        /// Features each tree may split on: a count, or a fraction of the features (1.0 = all).
        #[arg(long, default_value = "1.0")]
        max_features: MaxFeatures,
        /// Draw each tree's rows with replacement (scikit-learn's bootstrap=True).
        #[arg(long)]
        bootstrap: bool,
        /// Random seed; the same data and seed give the same model bytes.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// Describe a model file: metadata, schema, section sizes, checksum, training data.
    Inspect {
        /// The model file.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Score labelled (or unlabelled) data with a model and write report.json, report.md and
    /// PNG plots: ROC-AUC, average precision, precision/recall/F1 and confusion matrix at the
    /// model's threshold, alert rate, score distribution.
    Evaluate {
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        spec: SpecArgs,
        /// Directory for report.json, report.md and the plots.
        #[arg(long, default_value = "report")]
        output_dir: PathBuf,
        /// Skip the PNG plots.
        #[arg(long)]
        no_plots: bool,
    },
    /// Copy data (typically a Postgres time window) to a Parquet file on disk or object
    /// storage, e.g. `export --input postgres://… --since 30d --output s3://bucket/tx.parquet`.
    Export {
        #[command(flatten)]
        input: InputArgs,
        /// Destination .parquet path or object-store URL.
        #[arg(long)]
        output: String,
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
        /// Richer traffic: per-card habits, a timestamp, and labelled fraud patterns (card
        /// testing, bursts, unusual combinations, amount outliers) in a `pattern` column.
        #[arg(long)]
        patterns: bool,
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        /// Share of labelled anomalies.
        #[arg(long, default_value_t = 0.05)]
        anomaly_rate: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// Publishing a fitted model for scheduled runs.
#[derive(Args, Clone)]
struct PublishArgs {
    /// Publish to a directory or object-store URL: writes models/<version>.sfm and a `latest`
    /// pointer (JSON). Re-running on the same data and seed changes nothing.
    #[arg(long)]
    publish: Option<String>,
    /// Labelled holdout data for the quality gate (path/glob/URL; same spec as training).
    /// The new model must not be worse than `latest` on it beyond --gate-tolerance.
    #[arg(long)]
    gate_input: Option<String>,
    /// Gate metric: average precision, ROC-AUC (need labels), or mean anomaly_score on the
    /// holdout (higher = the holdout looks more normal; for unlabelled, known-good data).
    #[arg(long, value_enum, default_value = "average-precision")]
    gate_metric: publish::GateMetric,
    /// How much worse than `latest` the new model may be (absolute, in the metric's units).
    #[arg(long, default_value_t = 0.01)]
    gate_tolerance: f64,
    /// Do everything except writing: report what would be published.
    #[arg(long)]
    dry_run: bool,
}

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

trait ExitWith<T> {
    fn exit(self, code: u8) -> std::result::Result<T, Failure>;
}

impl<T> ExitWith<T> for Result<T> {
    fn exit(self, code: u8) -> std::result::Result<T, Failure> {
        self.map_err(|error| Failure { code, error })
    }
}

const DATA_ERROR: u8 = 3;
const GATE_REFUSED: u8 = 4;

/// Prints progress/result lines as text or JSON objects.
struct Log {
    json: bool,
}

/// A spinner on stderr while a step runs, only for people at a terminal (text logs).
struct Step(Option<indicatif::ProgressBar>);

impl Step {
    fn start(log: &Log, what: &str) -> Self {
        if log.json || !std::io::stderr().is_terminal() {
            return Step(None);
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Step(Some(bar))
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

impl Log {
    fn event(&self, event: &str, text: &str, fields: serde_json::Value) {
        if self.json {
            let mut obj = serde_json::json!({"event": event, "message": text});
            if let (Some(o), serde_json::Value::Object(f)) = (obj.as_object_mut(), fields) {
                o.extend(f);
            }
            println!("{obj}");
        } else {
            println!("{text}");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match cli.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let log = Log { json };
    match run(cli.command, &log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            if log.json {
                let msg = format!("{error:#}");
                eprintln!(
                    "{}",
                    serde_json::json!({"event": "error", "exit_code": code, "message": msg})
                );
            } else {
                eprintln!("Error: {error:?}");
            }
            ExitCode::from(code)
        }
    }
}

/// Resolves inputs and spec and loads the dataset.
fn load(
    input: &InputArgs,
    spec: &FeatureSpec,
    require_label: bool,
    fixed_features: Option<&[String]>,
) -> Result<(spec::Dataset, Vec<String>)> {
    let inputs = source::resolve(&input.input, input.format, &input.options())?;
    let origins: Vec<String> = inputs.files.iter().map(|f| f.origin.clone()).collect();
    let lf = source::scan(&inputs)?;
    let schema = lf
        .clone()
        .collect_schema()
        .context("reading the input schema")?;
    let mut spec = spec.clone();
    if let Some(f) = fixed_features {
        spec.features = Some(f.to_vec());
    }
    let plan = Plan::resolve(&spec, &schema, require_label)?;
    let dataset = spec::load(lf, &plan, &origins.join(", "))?;
    anyhow::ensure!(dataset.table.rows() > 0, "the inputs hold no rows");
    Ok((dataset, origins))
}

fn read_model(path: &Path) -> Result<(model_format::Model, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let model = model_format::Model::from_bytes(&bytes)
        .with_context(|| format!("decoding {}", path.display()))?;
    Ok((model, bytes))
}

fn run(command: Command, log: &Log) -> std::result::Result<(), Failure> {
    match command {
        Command::Fit {
            input,
            spec,
            output,
            n_estimators,
            max_samples,
            contamination,
            max_features,
            bootstrap,
            seed,
            publish,
        } => {
            let started = Instant::now();
            let spec = spec.spec().exit(2)?;
            let step = Step::start(log, "reading inputs");
            let (dataset, origins) = load(&input, &spec, false, None).exit(DATA_ERROR)?;
            drop(step);
            let table = &dataset.table;
            log.event(
                "loaded",
                &format!("read {} rows, features {}", table.rows(), table.names.join(",")),
                serde_json::json!({"rows": table.rows(), "features": table.names, "inputs": origins}),
            );
            let params = IsolationForestParams {
                n_estimators,
                max_samples,
                contamination,
                max_features,
                bootstrap,
                seed,
            };
            let step = Step::start(log, "fitting");
            let model = trainer::fit(table, &params).exit(DATA_ERROR)?;
            drop(step);
            let bytes = model.to_bytes().map_err(anyhow::Error::from).exit(1)?;
            let id = model_format::ModelId::of(&bytes)
                .map_err(anyhow::Error::from)
                .exit(1)?;
            if let Some(output) = &output
                && !publish.dry_run
            {
                write_file(output, &bytes).exit(1)?;
            }
            log.event(
                "fitted",
                &format!(
                    "{} {} ({} bytes, version {}): {} rows, {} features, {} trees, {} nodes, offset {:.6}, in {:.2?}",
                    if publish.dry_run { "would write" } else { "wrote" },
                    output.as_ref().map_or("model".to_string(), |o| o.display().to_string()),
                    bytes.len(),
                    id.version(),
                    table.rows(),
                    table.names.len(),
                    model.forest().trees().len(),
                    model.forest().node_count(),
                    model.forest().offset(),
                    started.elapsed()
                ),
                serde_json::json!({"version": id.version(), "bytes": bytes.len(), "rows": table.rows(),
                    "seconds": started.elapsed().as_secs_f64()}),
            );
            if let Some(dest) = &publish.publish {
                let store = input.store.options();
                let gate = match &publish.gate_input {
                    None => None,
                    Some(g) => {
                        let gate_args = InputArgs {
                            input: vec![g.clone()],
                            format: input.format,
                            store: input.store.clone(),
                            postgres: PgArgs::default(),
                        };
                        let needs_label = publish.gate_metric != publish::GateMetric::MeanScore;
                        let (holdout, _) = load(&gate_args, &spec, needs_label, Some(&table.names))
                            .exit(DATA_ERROR)?;
                        Some(holdout)
                    }
                };
                let step = Step::start(log, "publishing");
                let outcome = publish::publish(
                    dest,
                    &model,
                    &bytes,
                    gate.as_ref(),
                    &publish::GateConfig {
                        metric: publish.gate_metric,
                        tolerance: publish.gate_tolerance,
                    },
                    publish.dry_run,
                    &store,
                );
                drop(step);
                match outcome {
                    Ok(o) => log.event(
                        "published",
                        &o.message,
                        serde_json::to_value(&o).unwrap_or_default(),
                    ),
                    Err(publish::PublishError::GateRefused(msg)) => {
                        return Err(Failure {
                            code: GATE_REFUSED,
                            error: anyhow::anyhow!(msg),
                        });
                    }
                    Err(publish::PublishError::Other(e)) => {
                        return Err(Failure { code: 1, error: e });
                    }
                }
            }
        }
        Command::Inspect { model, json } => {
            let bytes = std::fs::read(&model)
                .with_context(|| format!("reading {}", model.display()))
                .exit(DATA_ERROR)?;
            let report = inspect::inspect(&bytes)
                .with_context(|| format!("inspecting {}", model.display()))
                .exit(DATA_ERROR)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.to_text());
            }
        }
        Command::Evaluate {
            model,
            input,
            spec,
            output_dir,
            no_plots,
        } => {
            let started = Instant::now();
            let (model, bytes) = read_model(&model).exit(DATA_ERROR)?;
            let spec = spec.spec().exit(2)?;
            let step = Step::start(log, "reading and scoring");
            let (dataset, origins) =
                load(&input, &spec, false, Some(model.features())).exit(DATA_ERROR)?;
            let scores = trainer::score::score_table(&model, &dataset.table, false)
                .map_err(anyhow::Error::from)
                .exit(DATA_ERROR)?;
            let decision: Vec<f64> = scores.rows.iter().map(|s| s.decision).collect();
            drop(step);
            let id = model_format::ModelId::of(&bytes)
                .map_err(anyhow::Error::from)
                .exit(1)?;
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
            .exit(1)?;
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
        }
        Command::Export { input, output } => {
            let started = Instant::now();
            let opts = input.options();
            let inputs = source::resolve(&input.input, input.format, &opts).exit(DATA_ERROR)?;
            let lf = source::scan(&inputs).exit(DATA_ERROR)?;
            let mut df = source::collect(lf, "the inputs").exit(DATA_ERROR)?;
            let mut buf = Vec::new();
            polars::prelude::ParquetWriter::new(&mut buf)
                .finish(&mut df)
                .map_err(anyhow::Error::from)
                .exit(1)?;
            let bytes = buf.len();
            source::put(&output, buf, &opts).exit(1)?;
            log.event(
                "exported",
                &format!(
                    "wrote {output}: {} rows, {} columns, {bytes} bytes, in {:.2?}",
                    df.height(),
                    df.width(),
                    started.elapsed()
                ),
                serde_json::json!({"rows": df.height(), "columns": df.width(), "bytes": bytes}),
            );
        }
        Command::ImportSklearn { input, output } => {
            let json = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))
                .exit(DATA_ERROR)?;
            let model = trainer::sklearn::import(&json)
                .with_context(|| format!("importing {}", input.display()))
                .exit(DATA_ERROR)?;
            let bytes = model.to_bytes().map_err(anyhow::Error::from).exit(1)?;
            write_file(&output, &bytes).exit(1)?;
            let id = model_format::ModelId::of(&bytes)
                .map_err(anyhow::Error::from)
                .exit(1)?;
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
            let (model, _) = read_model(&model).exit(DATA_ERROR)?;
            let columns = features.unwrap_or_else(|| model.features().to_vec());
            let scores = trainer::score::score_file(&model, &input, &columns, &output, explain)
                .exit(DATA_ERROR)?;
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
            patterns,
            rows,
            anomaly_rate,
            seed,
        } => {
            if !(0.0..=1.0).contains(&anomaly_rate) {
                return Err(Failure {
                    code: 2,
                    error: anyhow::anyhow!("--anomaly-rate must be in [0, 1]"),
                });
            }
            let mut df = if patterns {
                synth::patterned(rows, anomaly_rate, seed)
            } else {
                synth::transactions(rows, anomaly_rate, seed)
            }
            .exit(1)?;
            data::write_frame(&output, &mut df).exit(1)?;
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
