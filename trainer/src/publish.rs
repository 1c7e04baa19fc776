//! Publishing models for scheduled retraining.
//!
//! Layout under the destination (a directory or an object-store URL):
//!
//! ```text
//! models/<version>.sfm   content-addressed: the version is the file's checksum
//! latest                 JSON pointer {version, checksum, path, created, metrics}
//! ```
//!
//! The model file is written before the pointer, so `latest` never names a missing model.
//! Publishing is idempotent: the same data and seed give the same bytes, hence the same version,
//! and when `latest` already points at it nothing is written at all. An optional quality gate
//! scores the new model and the current `latest` on the same holdout and refuses to move the
//! pointer to a model that is worse beyond a tolerance.
//!
//! A destination `store+http://host:port` (or `store+https://…`) publishes to a store's model
//! registry instead ([`publish_to_registry`]): the gate compares against the registry's `live`
//! model, then the file is uploaded (content-addressed and idempotent there too). Uploading
//! changes no channel; `promote` then points `live` at the new version.

use crate::evaluate;
use crate::registry::{self, Channel, RegistryError};
use crate::source::{self, StoreOptions};
use crate::spec::Dataset;
use contract::models::{Channels, Uploaded};
use model_format::{Model, ModelId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The figure the gate compares (higher is better for all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMetric {
    AveragePrecision,
    RocAuc,
    /// Mean anomaly_score (decision_function) on holdout data believed normal.
    MeanScore,
}

impl GateMetric {
    fn name(self) -> &'static str {
        match self {
            GateMetric::AveragePrecision => "average_precision",
            GateMetric::RocAuc => "roc_auc",
            GateMetric::MeanScore => "mean_anomaly_score",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct GateConfig {
    pub metric: GateMetric,
    pub tolerance: f64,
}

/// The `latest` pointer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latest {
    pub version: String,
    pub checksum: String,
    /// Path of the model relative to the destination.
    pub path: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// Holdout figures of this model, when a gate input was given.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub version: String,
    pub model_location: String,
    /// False when `latest` already pointed at this model (nothing written).
    pub changed: bool,
    pub dry_run: bool,
    pub previous: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    pub previous_metrics: BTreeMap<String, f64>,
    pub message: String,
    /// Registry destinations only: what the store answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryOutcome>,
}

/// What a registry publish did.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryOutcome {
    /// The store's answer to the upload (None: nothing uploaded, the model was live already or
    /// this was a dry run).
    pub uploaded: Option<Uploaded>,
    /// Whether `live` was pointed at the new version.
    pub promoted: bool,
    /// The channels afterwards.
    pub channels: Channels,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    GateRefused(String),
    /// A registry call failed (unreachable, refused, unreadable answer).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn join(dest: &str, rel: &str) -> String {
    if source::is_url(dest) {
        format!("{}/{rel}", dest.trim_end_matches('/'))
    } else {
        std::path::Path::new(dest.strip_prefix("file://").unwrap_or(dest))
            .join(rel)
            .to_string_lossy()
            .into_owned()
    }
}

/// Holdout metric of supervised models: the share of fraud their thresholds flag.
pub const RECALL_AT_OPERATING_POINT: &str = "recall_at_operating_point";

/// Holdout figures of `model`: the label-based ones when labels exist, and the mean score.
pub fn holdout_metrics(model: &Model, holdout: &Dataset) -> anyhow::Result<BTreeMap<String, f64>> {
    let scores = crate::score::score_table(model, &holdout.table, false)?;
    let decision: Vec<f64> = scores.rows.iter().map(|s| s.decision).collect();
    let mut m = BTreeMap::new();
    m.insert(
        GateMetric::MeanScore.name().to_string(),
        decision.iter().sum::<f64>() / decision.len().max(1) as f64,
    );
    if let Some(labels) = &holdout.labels {
        // A supervised model is judged by what decides at the edge: its probability.
        let probabilities = crate::supervised::probabilities(model, &holdout.table)?;
        let ranking: Vec<f64> = match &probabilities {
            Some(p) => p.clone(),
            None => decision.iter().map(|d| -d).collect(),
        };
        if let (Some(p), Some(b)) = (&probabilities, model.supervised()) {
            // Share of the holdout's fraud its thresholds send to review or block.
            let flagged = b.thresholds().review.or(b.thresholds().block);
            let positives = labels.iter().filter(|&&y| y).count();
            if let (Some(t), true) = (flagged, positives > 0) {
                let caught = p.iter().zip(labels).filter(|&(&p, &y)| y && p >= t).count();
                m.insert(
                    RECALL_AT_OPERATING_POINT.to_string(),
                    caught as f64 / positives as f64,
                );
            }
        }
        if let Some(ap) = evaluate::average_precision(&ranking, labels) {
            m.insert(GateMetric::AveragePrecision.name().to_string(), ap);
        }
        if let Some(auc) = evaluate::roc_auc(&ranking, labels) {
            m.insert(GateMetric::RocAuc.name().to_string(), auc);
        }
    }
    Ok(m)
}

/// Publishes `bytes` (the encoding of `model`) under `dest`.
pub fn publish(
    dest: &str,
    model: &Model,
    bytes: &[u8],
    holdout: Option<&Dataset>,
    gate: &GateConfig,
    dry_run: bool,
    store: &StoreOptions,
) -> Result<Outcome, PublishError> {
    use anyhow::Context;
    let id = ModelId::of(bytes).map_err(anyhow::Error::from)?;
    let version = id.version();
    let rel = format!("models/{version}.sfm");
    let model_location = join(dest, &rel);
    let latest_location = join(dest, "latest");

    let previous: Option<Latest> = source::get_opt(&latest_location, store)?
        .map(|b| serde_json::from_slice(&b))
        .transpose()
        .with_context(|| format!("{latest_location} is not a valid latest pointer"))?;

    let metrics = match holdout {
        Some(h) => holdout_metrics(model, h)?,
        None => BTreeMap::new(),
    };
    let mut previous_metrics = BTreeMap::new();
    if let (Some(prev), Some(h)) = (&previous, holdout)
        && prev.version != version
    {
        let prev_bytes = source::get_opt(&join(dest, &prev.path), store)?
            .with_context(|| format!("latest points at {} which is missing", prev.path))?;
        let prev_model = Model::from_bytes(&prev_bytes)
            .with_context(|| format!("decoding the current latest model {}", prev.path))?;
        previous_metrics = gate_check(
            &version,
            model,
            &metrics,
            ("latest", &prev.version, &prev_model),
            h,
            gate,
        )?;
    }

    let unchanged = previous.as_ref().is_some_and(|p| p.version == version);
    let message = if unchanged {
        format!("{version} is already latest at {dest}: nothing written")
    } else if dry_run {
        format!("dry run: would publish {version} to {model_location} and point latest at it")
    } else {
        format!("published {version} to {model_location}; latest now points at it")
    };
    if !unchanged && !dry_run {
        // Content-addressed: an existing file with this name has these very bytes.
        if source::get_opt(&model_location, store)?.is_none() {
            source::put(&model_location, bytes.to_vec(), store)?;
        }
        let pointer = Latest {
            version: version.clone(),
            checksum: format!("crc32:{:08x}", id.checksum),
            path: rel,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            metrics: metrics.clone(),
        };
        let json = serde_json::to_vec_pretty(&pointer).map_err(anyhow::Error::from)?;
        source::put(&latest_location, json, store)?;
    }
    Ok(Outcome {
        version,
        model_location,
        changed: !unchanged && !dry_run,
        dry_run,
        previous: previous.map(|p| p.version),
        metrics,
        previous_metrics,
        message,
        registry: None,
    })
}

/// The gate: scores the current model (`current`: what it is called, its version, the model)
/// on the holdout and refuses `version` when it is worse by more than the tolerance. Returns
/// the current model's figures.
fn gate_check(
    version: &str,
    model: &Model,
    metrics: &BTreeMap<String, f64>,
    current: (&str, &str, &Model),
    holdout: &Dataset,
    gate: &GateConfig,
) -> Result<BTreeMap<String, f64>, PublishError> {
    use anyhow::Context;
    let (name, current_version, current_model) = current;
    if current_model.features() != model.features() {
        return Err(anyhow::anyhow!(
            "the current {name} model has features {:?}, the new one {:?}: the gate cannot compare them",
            current_model.features(),
            model.features()
        )
        .into());
    }
    let previous_metrics = holdout_metrics(current_model, holdout)?;
    let key = gate.metric.name();
    let new = metrics.get(key).copied().with_context(|| {
        format!("the gate metric {key} cannot be computed on the holdout (labels of both classes needed)")
    })?;
    let old = previous_metrics
        .get(key)
        .copied()
        .unwrap_or(f64::NEG_INFINITY);
    if new < old - gate.tolerance {
        return Err(PublishError::GateRefused(format!(
            "quality gate refused {version}: {key} {new:.6} is worse than {name} {current_version} ({old:.6}) by more than the tolerance {}",
            gate.tolerance
        )));
    }
    // Two supervised models: the new one must also catch as much fraud at its operating point.
    if let (Some(&new), Some(&old)) = (
        metrics.get(RECALL_AT_OPERATING_POINT),
        previous_metrics.get(RECALL_AT_OPERATING_POINT),
    ) && new < old - gate.tolerance
    {
        return Err(PublishError::GateRefused(format!(
            "quality gate refused {version}: {RECALL_AT_OPERATING_POINT} {new:.6} is worse than {name} {current_version} ({old:.6}) by more than the tolerance {}",
            gate.tolerance
        )));
    }
    Ok(previous_metrics)
}

fn shown(version: Option<&str>) -> &str {
    version.unwrap_or("none")
}

/// Publishes `bytes` (the encoding of `model`) to the registry `client` talks to: the gate
/// (with a holdout) compares against the registry's `live` model when there is one, then the
/// file is uploaded. No channel changes unless `promote`, which then points `live` at it.
pub fn publish_to_registry(
    client: &registry::Client,
    model: &Model,
    bytes: &[u8],
    holdout: Option<&Dataset>,
    gate: &GateConfig,
    dry_run: bool,
    promote: bool,
) -> Result<Outcome, PublishError> {
    use anyhow::Context;
    let id = ModelId::of(bytes).map_err(anyhow::Error::from)?;
    let version = id.version();
    let model_location = client.model_url(&version);
    let base = client.base().to_string();
    let channels = client.channels()?;
    let live = Channel::Live.of(&channels).map(str::to_string);

    let metrics = match holdout {
        Some(h) => holdout_metrics(model, h)?,
        None => BTreeMap::new(),
    };
    let mut previous_metrics = BTreeMap::new();
    if let (Some(current), Some(h)) = (&live, holdout)
        && *current != version
    {
        let current_bytes = client.file(current)?;
        let current_model = Model::from_bytes(&current_bytes)
            .with_context(|| format!("decoding the live model {current} from the registry"))?;
        previous_metrics = gate_check(
            &version,
            model,
            &metrics,
            ("live", current, &current_model),
            h,
            gate,
        )?;
    }

    let already_live = live.as_deref() == Some(version.as_str());
    let mut uploaded = None;
    let mut after = channels.clone();
    let mut promoted = false;
    let message = if already_live {
        format!("{version} is already live in the registry at {base}: nothing uploaded")
    } else if dry_run {
        format!(
            "dry run: would upload {version} to the registry at {base}{}",
            if promote {
                format!(
                    " and point live at it (live: {} → {version})",
                    shown(live.as_deref())
                )
            } else {
                "; channels unchanged".to_string()
            }
        )
    } else {
        let answer = client.upload(bytes.to_vec())?;
        if answer.version != version {
            return Err(RegistryError::BadAnswer {
                request: "POST /v1/models".into(),
                detail: format!("the store registered {version} as {}", answer.version),
            }
            .into());
        }
        let how = if answer.created {
            "new"
        } else {
            "already registered"
        };
        uploaded = Some(answer);
        if promote {
            after = client.set_channel(Channel::Live, Some(&version))?;
            promoted = true;
            format!(
                "published {version} to the registry at {base} ({how}); live: {} → {}",
                shown(live.as_deref()),
                shown(Channel::Live.of(&after))
            )
        } else {
            format!(
                "published {version} to the registry at {base} ({how}); channels unchanged (live: {})",
                shown(live.as_deref())
            )
        }
    };
    let changed = uploaded.as_ref().is_some_and(|u| u.created) || promoted;
    Ok(Outcome {
        version,
        model_location,
        changed,
        dry_run,
        previous: live,
        metrics,
        previous_metrics,
        message,
        registry: Some(RegistryOutcome {
            uploaded,
            promoted,
            channels: after,
        }),
    })
}
