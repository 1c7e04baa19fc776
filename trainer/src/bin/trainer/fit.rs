//! `trainer fit`: Fit a StandardScaler + isolation forest on Parquet/CSV/NDJSON data and write a model file.

use clap::Args as ClapArgs;
use std::path::PathBuf;
use std::time::Instant;
use trainer::forest::{Contamination, IsolationForestParams, MaxFeatures, MaxSamples};
use trainer::publish;
use trainer::registry;

use crate::args::{InputArgs, PgArgs, SpecArgs, load, write_file};
use crate::failure::{Classify, Failure};
use crate::output::{Log, Step};

/// Fit a StandardScaler + isolation forest on Parquet/CSV/NDJSON data and write a model file.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Where to write the model file. Optional with --publish.
    #[arg(long, required_unless_present = "publish")]
    pub output: Option<PathBuf>,
    /// Number of trees.
    #[arg(long, default_value_t = 100)]
    pub n_estimators: usize,
    /// Rows per tree: 'auto' (min(256, rows)), a count, or a fraction of the rows.
    #[arg(long, default_value = "auto")]
    pub max_samples: MaxSamples,
    /// Expected share of anomalies: 'auto' (offset -0.5) or a fraction in (0, 0.5].
    #[arg(long, default_value = "auto")]
    pub contamination: Contamination,
    /// Features each tree may split on: a count, or a fraction of the features (1.0 = all).
    #[arg(long, default_value = "1.0")]
    pub max_features: MaxFeatures,
    /// Draw each tree's rows with replacement (scikit-learn's bootstrap=True).
    #[arg(long)]
    pub bootstrap: bool,
    /// Random seed; the same data and seed give the same model bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Velocity features in the forest: `mixed` (one forest over every feature) or `separate`
    /// (as many trees again on the velocity features alone, adding only for the training rows
    /// most unusual there, so velocity does not blur single-transaction anomalies). Default:
    /// the spec's `velocity_forest`, else mixed.
    #[arg(long, value_enum)]
    pub velocity_forest: Option<trainer::VelocityForest>,
    /// With `--velocity-forest separate`: the share of training rows, most unusual in their
    /// velocity, for which the velocity trees add (e.g. `10%`, in (0, 50 %]). Larger reaches
    /// more bursts and blurs more single transactions. Default: the spec's `velocity_tail`,
    /// else 10 %.
    #[arg(long, value_parser = parse_share)]
    pub velocity_tail: Option<f64>,
    /// With `--velocity-forest separate`: what the velocity trees' evidence is multiplied by
    /// (how far below the tail a row falls there, 1 to 16). 2 lifts slow sequences further at a
    /// small cost to single transactions (docs/trainer.md). Default: the spec's
    /// `velocity_weight`, else 1.
    #[arg(long)]
    pub velocity_weight: Option<u32>,
    #[command(flatten)]
    pub supervised: SupervisedArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
}

/// The supervised model beside the forest (off by default: a label column otherwise only
/// evaluates).
#[derive(ClapArgs, Clone)]
pub struct SupervisedArgs {
    /// Also learn from the label column: gradient-boosted trees on the features and the
    /// forest's score, validated, calibrated and given thresholds on the latest rows (file
    /// order = arrival order). The edge then answers `fraud_probability` and decides by it.
    /// Same as `supervised = true` in the spec file.
    #[arg(long)]
    pub supervised: bool,
    /// Alert budget: the share of traffic to send to review, e.g. `0.5%` or `0.005`.
    #[arg(long, default_value = "0.5%", value_parser = parse_share)]
    pub review_rate: f64,
    /// Transactions the edge counts the review share over: when the traffic shifts, it raises
    /// the review threshold so that no more than the budget of its last this-many transactions
    /// goes to review.
    #[arg(long, default_value_t = model_format::budget::DEFAULT_WINDOW, value_parser = clap::value_parser!(u64).range(2..))]
    pub review_window: u64,
    /// Block outright where the validation window shows at least this precision (`off`: never
    /// block by probability).
    #[arg(long, default_value = "0.95")]
    pub block_precision: BlockPrecision,
    /// Fewer labelled positives than this → no supervised model (the forest decides alone).
    #[arg(long, default_value_t = 50)]
    pub min_positives: usize,
    /// Most boosting rounds (early stopping on the validation window usually ends sooner).
    #[arg(long, default_value_t = 300)]
    pub max_iter: usize,
    /// Leaves per boosted tree: fewer make explanations at the edge cheaper.
    #[arg(long, default_value_t = trainer::gbdt::GbdtParams::default().max_leaves)]
    pub max_leaves: usize,
    /// Shrinkage of each boosted tree's values.
    #[arg(long, default_value_t = trainer::gbdt::GbdtParams::default().learning_rate)]
    pub learning_rate: f64,
}

/// `0.5%` or `0.005` → 0.005.
fn parse_share(s: &str) -> Result<f64, String> {
    let (text, scale) = match s.trim().strip_suffix('%') {
        Some(t) => (t, 0.01),
        None => (s.trim(), 1.0),
    };
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a share (e.g. 0.5% or 0.005)"))?;
    let v = v * scale;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} is not between 0 and 100 %"));
    }
    Ok(v)
}

/// `--block-precision`: a share, or `off`.
#[derive(Clone, Copy)]
pub struct BlockPrecision(pub Option<f64>);

impl std::str::FromStr for BlockPrecision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(BlockPrecision(None));
        }
        let v = parse_share(s)?;
        if v <= 0.0 {
            return Err("the block precision must be above 0 (or `off`)".into());
        }
        Ok(BlockPrecision(Some(v)))
    }
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    let Args {
        input,
        spec,
        output,
        n_estimators,
        max_samples,
        contamination,
        max_features,
        bootstrap,
        seed,
        velocity_forest,
        velocity_tail,
        velocity_weight,
        supervised,
        publish,
    } = args;
    let started = Instant::now();
    // Registry settings are checked before any work, so a typo fails in milliseconds.
    let registry = match publish
        .publish
        .as_deref()
        .and_then(registry::publish_target)
    {
        Some(base) => {
            let token = publish.store_token.as_deref().ok_or_else(|| {
                Failure::Usage(anyhow::anyhow!(
                    "publishing to a registry needs the store's token: --store-token or SFE_STORE_TOKEN"
                ))
            })?;
            let actor = crate::models::default_actor(publish.actor.clone());
            let key = registry::signing_key(publish.signing_key.as_deref())?;
            Some(registry::Client::new(base, token, &actor)?.with_signing_key(key))
        }
        None if publish.promote => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "--promote needs a registry destination: --publish store+http(s)://host:port"
            )));
        }
        None => None,
    };
    let spec = spec.spec().usage()?;
    let step = Step::start(log, "reading inputs");
    let want_supervised = supervised.supervised || spec.supervised;
    let (dataset, origins) = load(&input, &spec, want_supervised, None).data()?;
    drop(step);
    let table = &dataset.table;
    log.event(
        "loaded",
        &format!(
            "read {} rows, features {}{}",
            table.rows(),
            table.names.join(","),
            match dataset.history_rows {
                0 => String::new(),
                h => format!(" ({h} more without a label read as velocity history only)"),
            }
        ),
        serde_json::json!({"rows": table.rows(), "features": table.names, "inputs": origins,
                           "history_rows": dataset.history_rows}),
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
    // The exit code follows the error's type (parameters, data, or a bug).
    let velocity = spec.velocity_spec().usage()?;
    let how = velocity_forest.or(spec.velocity_forest).unwrap_or_default();
    let tail = trainer::VelocityTail {
        share: velocity_tail
            .or(spec.velocity_tail)
            .unwrap_or(trainer::DEFAULT_VELOCITY_TAIL),
        weight: velocity_weight.or(spec.velocity_weight).unwrap_or(1),
    };
    let model = trainer::fit_forest(table, &params, velocity.as_ref(), how, tail)?;
    drop(step);
    let model = if want_supervised {
        let labels = dataset.labels.as_deref().ok_or_else(|| {
            Failure::Usage(anyhow::anyhow!(
                "--supervised needs a label column (--label, or a column named label)"
            ))
        })?;
        let step = Step::start(log, "fitting the supervised model");
        let params = trainer::supervised::SupervisedParams {
            gbdt: trainer::gbdt::GbdtParams {
                max_iter: supervised.max_iter,
                max_leaves: supervised.max_leaves,
                learning_rate: supervised.learning_rate,
                seed,
                ..Default::default()
            },
            review_rate: supervised.review_rate,
            review_window: supervised.review_window,
            block_precision: supervised.block_precision.0,
            min_positives: supervised.min_positives,
            ..Default::default()
        };
        let (model, report) = trainer::supervised::fit(model, table, labels, &params).usage()?;
        drop(step);
        log.event(
            "supervised",
            &report.to_text(),
            serde_json::to_value(&report).unwrap_or_default(),
        );
        model
    } else {
        model
    };
    let bytes = model.to_bytes().internal()?;
    let id = model_format::ModelId::of(&bytes).internal()?;
    if let Some(output) = &output
        && !publish.dry_run
    {
        write_file(output, &bytes).internal()?;
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
                let (holdout, _) =
                    load(&gate_args, &spec, needs_label, Some(&table.names)).data()?;
                Some(holdout)
            }
        };
        let step = Step::start(log, "publishing");
        let gate_config = publish::GateConfig {
            metric: publish.gate_metric,
            tolerance: publish.gate_tolerance,
        };
        let outcome = match &registry {
            Some(client) => publish::publish_to_registry(
                client,
                &model,
                &bytes,
                gate.as_ref(),
                &gate_config,
                publish.dry_run,
                publish.promote,
            ),
            None => publish::publish(
                dest,
                &model,
                &bytes,
                gate.as_ref(),
                &gate_config,
                publish.dry_run,
                &store,
            ),
        };
        drop(step);
        match outcome {
            Ok(o) => log.event(
                "published",
                &o.message,
                serde_json::to_value(&o).unwrap_or_default(),
            ),
            Err(publish::PublishError::GateRefused(msg)) => {
                return Err(Failure::GateRefused(anyhow::anyhow!(msg)));
            }
            // Unreachable/5xx → 1, refused (4xx) → 2: see failure.rs.
            Err(publish::PublishError::Registry(e)) => return Err(e.into()),
            Err(publish::PublishError::Other(e)) => {
                return Err(Failure::Internal(e));
            }
        }
    }
    Ok(())
}

/// Publishing a fitted model for scheduled runs.
#[derive(ClapArgs, Clone)]
pub struct PublishArgs {
    /// Publish to a directory or object-store URL: writes models/<version>.sfm and a `latest`
    /// pointer (JSON). Or to a store's model registry: `store+http://host:port` or
    /// `store+https://host[:port][/prefix]` uploads the file to the store's /v1/models (token:
    /// --store-token / SFE_STORE_TOKEN); the gate compares against the registry's `live`
    /// model; no channel changes unless --promote. Re-running on the same data and seed
    /// changes nothing.
    #[arg(long)]
    pub publish: Option<String>,
    /// Labelled holdout data for the quality gate (path/glob/URL; same spec as training).
    /// The new model must not be worse than `latest` (registry: `live`) on it beyond
    /// --gate-tolerance.
    #[arg(long)]
    pub gate_input: Option<String>,
    /// Gate metric: average precision, ROC-AUC (need labels), or mean anomaly_score on the
    /// holdout (higher = the holdout looks more normal; for unlabelled, known-good data).
    #[arg(long, value_enum, default_value = "average-precision")]
    pub gate_metric: publish::GateMetric,
    /// How much worse than `latest` the new model may be (absolute, in the metric's units).
    #[arg(long, default_value_t = 0.01)]
    pub gate_tolerance: f64,
    /// Do everything except writing: report what would be published.
    #[arg(long)]
    pub dry_run: bool,
    /// Registry destinations only: after the upload, point the `live` channel at the new
    /// version (every edge then serves it). Without it, publishing changes no channel.
    #[arg(long, requires = "publish")]
    pub promote: bool,
    /// Registry destinations: the store's bearer token.
    #[arg(long, env = "SFE_STORE_TOKEN", hide_env_values = true)]
    pub store_token: Option<String>,
    /// Registry destinations: a note recorded beside the upload and promotion (default: $USER,
    /// else "trainer"); the actor itself is the store token's name.
    #[arg(long)]
    pub actor: Option<String>,
    /// Registry destinations: sign the upload with this key (`trainer keygen`); else
    /// `SFE_SIGNING_KEY` holds the key itself; else it goes unsigned.
    #[arg(long, env = "SFE_SIGNING_KEY_FILE", value_name = "FILE")]
    pub signing_key: Option<std::path::PathBuf>,
}
