//! The feature spec: which columns are features, which is the label, what to ignore, and how
//! the legacy features are derived from raw columns.
//!
//! A spec comes from `--spec spec.toml` and/or flags (flags win):
//!
//! ```toml
//! features = ["amount", "hour"]   # omit for automatic selection
//! label = "is_fraud"              # default: a column named "label", if any
//! label_positive = "yes"          # default: 1 / true / yes / anomaly / fraud
//! ignore = ["id", "scored_at"]
//! derive = "auto"                 # auto | legacy | none
//! time_field = "timestamp"        # velocity features: the transaction time column
//! supervised = true               # also learn from the label (`trainer fit --supervised`)
//! velocity_forest = "separate"     # velocity features in trees of their own (`--velocity-forest`)
//! velocity_tail = 0.1             # … adding for this share of training rows (`--velocity-tail`)
//! velocity_weight = 1             # … by this multiple of how far below the tail (`--velocity-weight`)
//!
//! [[velocity]]                    # per-entity history features (model-format's velocity)
//! name = "card_count_10m"
//! definition = "count by card_id over 10m"
//! ```
//!
//! Automatic selection: the legacy five when all are columns; else, when `amount` is present with
//! any of the legacy raw fields (`timestamp`, `merchant`, `category`, `type`), the legacy five
//! *derived* from them; else every numeric column except the label and ignored ones (the
//! `f0..fN + label` layout of the ADBench files). Derivation runs model-format's own
//! [`Normalization::legacy`] rules row by row — the very code the edge runs on a request — so a
//! column such as `merchant = "Grocery "` gets the same category code in training and at the edge.

use anyhow::{Context, Result, bail};
use model_format::normalize::{LEGACY_FEATURES, Normalization, Payload, Value};
use model_format::velocity::VelocitySpec;
use polars::prelude::{DataType, LazyFrame, Schema, col};
use serde::Deserialize;
use std::path::Path;

use crate::data::Table;

/// How legacy features may be derived from raw fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Derive {
    /// Derive the legacy five only when they are not all present as columns.
    #[default]
    Auto,
    /// Always go through the legacy payload rules (fields or raw timestamp/merchant/category/type).
    Legacy,
    /// Never derive: feature columns are read as numbers.
    None,
}

/// What the operator asked for; `None`/empty fields mean "decide from the data".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub features: Option<Vec<String>>,
    pub label: Option<String>,
    pub label_positive: Option<String>,
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub derive: Derive,
    /// Velocity features, appended to the features in this order.
    #[serde(default)]
    pub velocity: Vec<VelocityDecl>,
    /// The transaction time column velocity windows use (default `timestamp`).
    pub time_field: Option<String>,
    /// Also fit the supervised model on the label (as `trainer fit --supervised`).
    #[serde(default)]
    pub supervised: bool,
    /// How the forest treats velocity features (as `trainer fit --velocity-forest`).
    pub velocity_forest: Option<crate::VelocityForest>,
    /// The velocity trees' tail share (as `trainer fit --velocity-tail`).
    pub velocity_tail: Option<f64>,
    /// The velocity trees' weight (as `trainer fit --velocity-weight`).
    pub velocity_weight: Option<u32>,
}

/// One `[[velocity]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocityDecl {
    pub name: String,
    pub definition: String,
}

impl FeatureSpec {
    /// This spec as `model` reads data: the model's own features, its velocity features
    /// (replacing any the spec had) computed rather than read.
    pub fn for_model(&self, model: &model_format::Model) -> FeatureSpec {
        let mut spec = self.clone();
        let velocity = model.velocity();
        let computed: Vec<&str> = velocity
            .map(|v| v.features().iter().map(|f| f.name.as_str()).collect())
            .unwrap_or_default();
        spec.features = Some(
            model
                .features()
                .iter()
                .filter(|f| !computed.contains(&f.as_str()))
                .cloned()
                .collect(),
        );
        spec.velocity = velocity
            .map(|v| {
                v.definitions()
                    .map(|(name, definition)| VelocityDecl {
                        name: name.to_string(),
                        definition,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(v) = velocity {
            spec.time_field = Some(v.time_field().to_string());
        }
        spec
    }

    /// The velocity spec the entries declare, checked; `None` when there are none.
    pub fn velocity_spec(&self) -> Result<Option<VelocitySpec>> {
        if self.velocity.is_empty() {
            return Ok(None);
        }
        let pairs: Vec<(&str, &str)> = self
            .velocity
            .iter()
            .map(|v| (v.name.as_str(), v.definition.as_str()))
            .collect();
        Ok(Some(VelocitySpec::new(
            self.time_field.as_deref().unwrap_or("timestamp"),
            &pairs,
        )?))
    }
}

impl FeatureSpec {
    /// Reads a TOML spec file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("parsing the feature spec {}", path.display()))
    }

    /// Applies command-line overrides on top of this spec.
    pub fn with_overrides(
        mut self,
        features: Option<Vec<String>>,
        label: Option<String>,
        label_positive: Option<String>,
        ignore: Vec<String>,
        derive: Option<Derive>,
    ) -> Self {
        if features.is_some() {
            self.features = features;
        }
        if label.is_some() {
            self.label = label;
        }
        if label_positive.is_some() {
            self.label_positive = label_positive;
        }
        self.ignore.extend(ignore);
        if let Some(d) = derive {
            self.derive = d;
        }
        self
    }
}

/// Raw fields the legacy rules can read.
const LEGACY_RAW: [&str; 4] = ["timestamp", "merchant", "category", "type"];

/// A spec resolved against an input's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub features: Vec<String>,
    /// `Some(fields)`: derive the legacy five through the payload rules from these columns.
    pub derive_from: Option<Vec<String>>,
    pub label: Option<String>,
    pub label_positive: Option<String>,
    /// Velocity features computed from the rows in order, appended after `features`.
    pub velocity: Option<VelocitySpec>,
}

fn is_numeric(dt: &DataType) -> bool {
    dt.is_primitive_numeric() || matches!(dt, DataType::Boolean)
}

impl Plan {
    /// Decides features, derivation and label for a table with `schema`.
    /// `require_label`: fail if no label column can be found.
    pub fn resolve(spec: &FeatureSpec, schema: &Schema, require_label: bool) -> Result<Plan> {
        let has = |c: &str| schema.get(c).is_some();
        let columns: Vec<&str> = schema
            .iter_names()
            .map(polars::prelude::PlSmallStr::as_str)
            .collect();
        let label = match &spec.label {
            Some(l) if l.is_empty() => None,
            Some(l) => {
                if !has(l) {
                    bail!(
                        "label column {l:?} not found (columns: {})",
                        columns.join(", ")
                    );
                }
                Some(l.clone())
            }
            None => has("label").then(|| "label".to_string()),
        };
        if require_label && label.is_none() {
            bail!(
                "no label column: name it with --label (columns: {})",
                columns.join(", ")
            );
        }
        let legacy: Vec<String> = LEGACY_FEATURES.map(String::from).to_vec();
        let all_legacy = LEGACY_FEATURES.iter().all(|f| has(f));
        let raw_legacy = has("amount") && LEGACY_RAW.iter().any(|f| has(f));
        let wants_legacy = spec.features.as_ref().is_none_or(|f| *f == legacy);
        let derive = match spec.derive {
            Derive::None => false,
            Derive::Legacy => true,
            Derive::Auto => wants_legacy && !all_legacy && raw_legacy,
        };
        if derive {
            if !wants_legacy {
                bail!("derivation produces the legacy five features; drop --features or derive");
            }
            let rules = Normalization::legacy();
            let mut fields: Vec<String> = Vec::new();
            for source in rules.rules.iter().flat_map(|r| &r.sources) {
                if let Some(f) = source.field().filter(|f| has(f))
                    && !fields.iter().any(|x| x == f)
                {
                    fields.push(f.to_string());
                }
            }
            return Ok(Plan {
                features: legacy,
                derive_from: Some(fields),
                label,
                label_positive: spec.label_positive.clone(),
                velocity: spec.velocity_spec()?,
            });
        }
        let features = match &spec.features {
            Some(f) => {
                anyhow::ensure!(!f.is_empty(), "--features is empty");
                for name in f {
                    if !has(name) {
                        bail!("no column {name:?} (columns: {})", columns.join(", "));
                    }
                }
                f.clone()
            }
            None if all_legacy => legacy,
            None if LEGACY_FEATURES.iter().any(|f| has(f)) => {
                // Half a legacy table is more likely a broken export than a new schema.
                let missing: Vec<&str> = LEGACY_FEATURES
                    .iter()
                    .copied()
                    .filter(|f| !has(f))
                    .collect();
                bail!(
                    "the input looks like legacy transactions but lacks {} (columns: {}); \
                     name the features with --features to train on other columns",
                    missing.join(", "),
                    columns.join(", ")
                );
            }
            None => {
                let picked: Vec<String> = schema
                    .iter()
                    .filter(|(name, dt)| {
                        is_numeric(dt)
                            && Some(name.as_str()) != label.as_deref()
                            && !spec.ignore.iter().any(|i| i == name.as_str())
                    })
                    .map(|(name, _)| name.to_string())
                    .collect();
                anyhow::ensure!(
                    !picked.is_empty(),
                    "no numeric feature columns found (columns: {}); name them with --features",
                    columns.join(", ")
                );
                picked
            }
        };
        if let Some(l) = &label {
            anyhow::ensure!(
                !features.contains(l),
                "the label {l:?} cannot also be a feature"
            );
        }
        let velocity = spec.velocity_spec()?;
        let features = match &velocity {
            // Automatic selection must not pick up what velocity computes or reads.
            Some(v) if spec.features.is_none() => features
                .into_iter()
                .filter(|f| {
                    !v.features().iter().any(|x| x.name == *f) && !v.fields().contains(&f.as_str())
                })
                .collect(),
            _ => features,
        };
        Ok(Plan {
            features,
            derive_from: None,
            label,
            label_positive: spec.label_positive.clone(),
            velocity,
        })
    }
}

/// Feature table plus labels (true = anomalous) when the plan has a label.
pub struct Dataset {
    pub table: Table,
    pub labels: Option<Vec<bool>>,
    /// Rows without a label that were read only as velocity history (their transactions
    /// count in the labelled rows' velocity features; they are not in `table`).
    pub history_rows: usize,
}

/// One raw column in memory.
pub(crate) enum Raw {
    Num(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
}

/// One row of raw columns, read the way the edge reads a request payload.
pub(crate) struct RowPayload<'a> {
    pub(crate) names: &'a [String],
    pub(crate) raw: &'a [Raw],
    pub(crate) row: usize,
}

impl Payload for RowPayload<'_> {
    fn get(&self, field: &str) -> Option<Value<'_>> {
        let i = self.names.iter().position(|n| n == field)?;
        match &self.raw[i] {
            Raw::Num(v) => v[self.row].map(Value::Number),
            Raw::Text(v) => v[self.row].as_deref().map(Value::Text),
        }
    }
}

/// Reads the plan's columns (only those) from `lf` and builds the dataset.
pub fn load(lf: LazyFrame, plan: &Plan, what: &str) -> Result<Dataset> {
    let lf_velocity = lf.clone();
    let schema = lf
        .clone()
        .collect_schema()
        .with_context(|| format!("reading the schema of {what}"))?;
    let mut wanted: Vec<String> = match &plan.derive_from {
        Some(fields) => fields.clone(),
        None => plan.features.clone(),
    };
    if let Some(l) = &plan.label {
        wanted.push(l.clone());
    }
    let exprs: Vec<_> = wanted.iter().map(|c| col(c.as_str())).collect();
    let df = lf
        .select(exprs)
        .collect()
        .with_context(|| format!("reading {what}"))?;
    let rows = df.height();

    let columns = match &plan.derive_from {
        None => {
            let mut columns = Vec::with_capacity(plan.features.len());
            for name in &plan.features {
                let s = df
                    .column(name)?
                    .as_materialized_series()
                    .strict_cast(&DataType::Float64)
                    .with_context(|| format!("column {name:?} is not numeric"))?;
                let ca = s.f64()?;
                if ca.null_count() > 0 {
                    bail!("column {name:?} has {} missing values", ca.null_count());
                }
                let values: Vec<f64> = ca.into_no_null_iter().collect();
                if let Some(row) = values.iter().position(|v| !v.is_finite()) {
                    bail!(
                        "column {name:?} row {row} is not a finite number ({})",
                        values[row]
                    );
                }
                columns.push(values);
            }
            columns
        }
        Some(fields) => {
            let raw = raw_columns(&df, &schema, fields, &[])?;
            let rules = Normalization::legacy();
            let mut columns = vec![Vec::with_capacity(rows); plan.features.len()];
            let mut buf = vec![0.0; plan.features.len()];
            for row in 0..rows {
                let payload = RowPayload {
                    names: fields,
                    raw: &raw,
                    row,
                };
                rules
                    .apply(&plan.features, &payload, &mut buf)
                    .with_context(|| format!("{what}: row {row}"))?;
                for (c, v) in columns.iter_mut().zip(&buf) {
                    c.push(*v);
                }
            }
            columns
        }
    };

    let mut names = plan.features.clone();
    let mut columns = columns;
    if let Some(v) = &plan.velocity {
        columns.extend(crate::velocity::columns(lf_velocity, v, what)?);
        names.extend(v.features().iter().map(|f| f.name.clone()));
    }

    let mut history_rows = 0;
    let labels = match &plan.label {
        None => None,
        Some(name) => {
            let s = df
                .column(name)?
                .as_materialized_series()
                .cast(&DataType::String)?;
            let ca = s.str()?;
            if ca.null_count() > 0 {
                // With velocity features an unlabelled row is history (the store's window
                // around its labelled transactions): its features were computed above, now it
                // leaves. Without them a missing label is a hole in the data.
                anyhow::ensure!(
                    plan.velocity.is_some(),
                    "label column {name:?} has {} missing values",
                    ca.null_count()
                );
                history_rows = ca.null_count();
                let keep: Vec<bool> = ca.iter().map(|v| v.is_some()).collect();
                for c in &mut columns {
                    let mut row = 0;
                    c.retain(|_| {
                        row += 1;
                        keep[row - 1]
                    });
                }
            }
            Some(
                ca.iter()
                    .flatten()
                    .map(|v| is_positive(v, plan.label_positive.as_deref()))
                    .collect(),
            )
        }
    };
    Ok(Dataset {
        table: Table { names, columns },
        labels,
        history_rows,
    })
}

/// Reads one local file (Parquet/CSV/NDJSON by extension) with `spec`: what `fit` and
/// `evaluate` do with their inputs, for callers that hold a path (tests, the backtest).
pub fn load_file(path: &Path, spec: &FeatureSpec, require_label: bool) -> Result<Dataset> {
    let input = crate::data::local_input(path)?;
    let lf = crate::source::scan_file(&input)?;
    let schema = lf
        .clone()
        .collect_schema()
        .with_context(|| format!("reading the schema of {}", path.display()))?;
    let plan = Plan::resolve(spec, &schema, require_label)?;
    load(lf, &plan, &path.display().to_string())
}

/// The named columns of `df` as the edge would see them in a payload: numbers as numbers,
/// everything else (and the `as_text` columns, e.g. entity ids) as text.
pub(crate) fn raw_columns(
    df: &polars::prelude::DataFrame,
    schema: &Schema,
    fields: &[String],
    as_text: &[&str],
) -> Result<Vec<Raw>> {
    let mut raw = Vec::with_capacity(fields.len());
    for name in fields {
        let s = df.column(name)?.as_materialized_series();
        let dt = schema.get(name.as_str()).cloned().unwrap_or(DataType::Null);
        raw.push(
            if dt.is_primitive_numeric() && !as_text.contains(&name.as_str()) {
                Raw::Num(s.cast(&DataType::Float64)?.f64()?.iter().collect())
            } else {
                Raw::Text(
                    s.cast(&DataType::String)?
                        .str()?
                        .iter()
                        .map(|v| v.map(str::to_string))
                        .collect(),
                )
            },
        );
    }
    Ok(raw)
}

/// Whether a label value (as text) marks an anomaly.
pub fn is_positive(value: &str, positive: Option<&str>) -> bool {
    let v = value.trim();
    match positive {
        Some(p) => v.eq_ignore_ascii_case(p.trim()),
        None => {
            ["true", "yes", "y", "anomaly", "fraud"]
                .iter()
                .any(|p| v.eq_ignore_ascii_case(p))
                || v.parse::<f64>().is_ok_and(|x| x != 0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_positive_values() {
        for v in ["1", "1.0", "true", "Yes", " fraud "] {
            assert!(is_positive(v, None), "{v}");
        }
        for v in ["0", "0.0", "false", "no", "legit"] {
            assert!(!is_positive(v, None), "{v}");
        }
        assert!(is_positive("chargeback", Some("ChargeBack")));
        assert!(!is_positive("1", Some("chargeback")));
    }

    /// An unlabelled row is velocity history when the spec has velocity features (the store's
    /// window around its labelled transactions), and a hole in the data otherwise.
    #[test]
    fn unlabelled_rows_are_velocity_history_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("window.csv");
        std::fs::write(
            &path,
            "amount,card_id,timestamp,label\n\
             10,a,2026-11-30T12:00:00Z,0\n\
             20,a,2026-11-30T12:01:00Z,\n\
             30,a,2026-11-30T12:02:00Z,1\n",
        )
        .unwrap();
        let plain = FeatureSpec {
            features: Some(vec!["amount".into()]),
            ..Default::default()
        };
        let err = load_file(&path, &plain, true).err().unwrap();
        assert!(err.to_string().contains("1 missing values"), "{err:#}");
        let with_velocity = FeatureSpec {
            velocity: vec![VelocityDecl {
                name: "card_count_1h".into(),
                definition: "count by card_id over 1h".into(),
            }],
            ..plain
        };
        let data = load_file(&path, &with_velocity, true).unwrap();
        assert_eq!(data.history_rows, 1);
        assert_eq!(data.labels, Some(vec![false, true]));
        assert_eq!(data.table.columns, [vec![10.0, 30.0], vec![0.0, 2.0]]);
    }
}
