//! Arguments several subcommands share (inputs, object storage, Postgres, feature spec) and
//! the loading they drive.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use trainer::source::{self, InputFormat, StoreOptions};
use trainer::spec::{self, Derive, FeatureSpec, Plan};

/// Where data is read from.
#[derive(Args, Clone)]
pub struct InputArgs {
    /// Input data: a path, glob, file:// or object-store URL (s3://, gs://, az://, https://).
    /// Repeat to combine several inputs (same columns).
    #[arg(long, required = true)]
    pub input: Vec<String>,
    /// Force the file format instead of guessing it from the extension.
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub postgres: PgArgs,
}

/// What to read from a postgres:// input.
#[derive(Args, Clone, Default)]
pub struct PgArgs {
    /// Postgres inputs: the table to read (default: transactions).
    #[arg(long, conflicts_with = "query")]
    pub table: Option<String>,
    /// Postgres inputs: a SELECT to read instead of a table.
    #[arg(long)]
    pub query: Option<String>,
    /// Postgres inputs: the timestamp column --since/--until apply to.
    #[arg(long, default_value = "scored_at")]
    pub time_column: String,
    /// Postgres inputs: rows at or after this: a duration back from now (30d, 12h) or an
    /// RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Postgres inputs: rows before this (RFC 3339 time, or a duration back from now).
    #[arg(long)]
    pub until: Option<String>,
    /// Postgres inputs: keep only transactions with analyst feedback and derive `label` from
    /// it (anomalous = flagged and confirmed, or not flagged and reported). With velocity
    /// features, the window's other transactions are read too, as the history they are
    /// computed over (not as training rows).
    #[arg(long)]
    pub labels_from_feedback: bool,
}

#[derive(Args, Clone, Default)]
pub struct StoreArgs {
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
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_allow_http: self.s3_allow_http,
            postgres: Default::default(),
        }
    }
}

impl InputArgs {
    pub fn options(&self) -> StoreOptions {
        let p = &self.postgres;
        StoreOptions {
            postgres: trainer::pg::PgOptions {
                table: p.table.clone(),
                query: p.query.clone(),
                time_column: p.time_column.clone(),
                since: p.since.clone(),
                until: p.until.clone(),
                labels_from_feedback: p.labels_from_feedback,
                velocity_history: None,
            },
            ..self.store.options()
        }
    }
}

/// Which columns are features and label.
#[derive(Args, Clone)]
pub struct SpecArgs {
    /// Feature spec file (TOML: features, label, label_positive, ignore, derive).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Feature columns, in model order (comma-separated). Default: the legacy five if present
    /// (or derivable from timestamp/merchant/category/type), else every numeric column except
    /// the label and --ignore'd ones.
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Label column (default: `label` if present). Only evaluation and gates use it.
    #[arg(long)]
    pub label: Option<String>,
    /// Label value that marks an anomaly (default: 1/true/yes/anomaly/fraud, or any non-zero number).
    #[arg(long)]
    pub label_positive: Option<String>,
    /// Columns never used as features (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub ignore: Vec<String>,
    /// Derivation of the legacy features from raw fields (timestamp → hour/day_of_week,
    /// merchant/category hashing, type lookup), with the edge's own rules.
    #[arg(long, value_enum)]
    pub derive: Option<Derive>,
    /// A velocity feature, `NAME=DEFINITION` (repeatable; after the spec file's), e.g.
    /// `card_count_10m=count by card_id over 10m`. Definitions: SPEC.md §4.6.
    #[arg(long = "velocity", value_name = "NAME=DEFINITION")]
    pub velocity: Vec<String>,
    /// The transaction time column velocity windows use (default `timestamp`).
    #[arg(long)]
    pub time_field: Option<String>,
}

impl SpecArgs {
    pub fn spec(&self) -> Result<FeatureSpec> {
        let base = match &self.spec {
            Some(p) => FeatureSpec::from_file(p)?,
            None => FeatureSpec::default(),
        };
        let mut spec = base.with_overrides(
            self.features.clone(),
            self.label.clone(),
            self.label_positive.clone(),
            self.ignore.clone(),
            self.derive,
        );
        for v in &self.velocity {
            let (name, definition) = v
                .split_once('=')
                .with_context(|| format!("--velocity {v:?}: expected NAME=DEFINITION"))?;
            spec.velocity.push(trainer::spec::VelocityDecl {
                name: name.trim().to_string(),
                definition: definition.trim().to_string(),
            });
        }
        if self.time_field.is_some() {
            spec.time_field.clone_from(&self.time_field);
        }
        // Checked now: a bad definition is a usage error before any data is read.
        spec.velocity_spec()?;
        Ok(spec)
    }
}

/// Resolves inputs and spec and loads the dataset.
pub fn load(
    input: &InputArgs,
    spec: &FeatureSpec,
    require_label: bool,
    fixed_features: Option<&[String]>,
) -> Result<(spec::Dataset, Vec<String>)> {
    let mut options = input.options();
    if let Some(v) = spec.velocity_spec()? {
        // Feedback labels then come with the whole window as velocity history.
        options.postgres.velocity_history = Some(v.time_field().to_string());
    }
    let inputs = source::resolve(&input.input, input.format, &options)?;
    let origins: Vec<String> = inputs.files.iter().map(|f| f.origin.clone()).collect();
    let lf = source::scan(&inputs)?;
    let schema = lf
        .clone()
        .collect_schema()
        .context("reading the input schema")?;
    let mut spec = spec.clone();
    if let Some(f) = fixed_features {
        // A model's features: the velocity ones are computed, not read.
        let computed: Vec<String> = spec.velocity.iter().map(|v| v.name.clone()).collect();
        spec.features = Some(
            f.iter()
                .filter(|n| !computed.contains(n))
                .cloned()
                .collect(),
        );
    }
    let plan = Plan::resolve(&spec, &schema, require_label)?;
    let dataset = spec::load(lf, &plan, &origins.join(", "))?;
    anyhow::ensure!(dataset.table.rows() > 0, "the inputs hold no rows");
    Ok((dataset, origins))
}

pub fn read_model(path: &Path) -> Result<(model_format::Model, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let model = model_format::Model::from_bytes(&bytes)
        .with_context(|| format!("decoding {}", path.display()))?;
    Ok((model, bytes))
}

/// Writes `bytes` to `path`, creating its directory.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
