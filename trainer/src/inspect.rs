//! `trainer inspect`: what a model file holds, for operators and audits.
//!
//! The model is fully decoded (so a corrupt file is reported, not described), then model-format
//! lists the section table to report each section's size as laid out in `model-format/SPEC.md`.

use anyhow::{Context, Result};
use model_format::{Model, ModelId};
use serde::Serialize;
use std::collections::BTreeMap;

/// One section of the file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Section {
    pub tag: String,
    pub required: bool,
    /// Payload bytes.
    pub payload_bytes: u64,
    /// Header + payload + padding.
    pub total_bytes: u64,
}

/// Everything `inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: String,
    pub checksum: String,
    pub format_version: u16,
    pub file_bytes: usize,
    pub sections: Vec<Section>,
    pub features: Vec<String>,
    /// `legacy` (the legacy API's payload shapes) or `generic` (one field per feature).
    pub payload_rules: &'static str,
    pub trees: usize,
    pub nodes: usize,
    pub max_samples: u32,
    pub offset: f64,
    /// The base of explanations (with feature groups: the first group's).
    pub expected_value: f64,
    /// The trees' feature groups (SPEC §4.8), when the forest was grown in groups.
    pub tree_groups: Option<Vec<TreeGroup>>,
    /// The training score distribution (SDST: `anomaly_score` at evenly spaced quantiles), when
    /// the file carries one.
    pub score_distribution: Option<Vec<f64>>,
    pub scaler_mean: Vec<f64>,
    pub scaler_scale: Vec<f64>,
    pub trainer: Option<String>,
    pub training_rows: Option<String>,
    pub training_data_fingerprint: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// One feature group of a grouped forest.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TreeGroup {
    /// First tree and the tree after the last.
    pub trees: [usize; 2],
    /// The features its trees split on, in schema order.
    pub features: Vec<String>,
    /// The mean path length below which it shortens a row's (none for the first group).
    pub tail: Option<f64>,
    /// What its shortening is multiplied by (none for the first group).
    pub weight: Option<u32>,
}

/// The forest's feature groups as [`TreeGroup`]s.
fn tree_groups(model: &Model) -> Option<Vec<TreeGroup>> {
    let forest = model.forest();
    let groups = forest.groups()?;
    Some(
        (0..groups.ends().len())
            .map(|g| {
                let range = groups.range(g);
                let mut used = vec![false; model.features().len()];
                for tree in &forest.trees()[range.clone()] {
                    for node in tree.nodes() {
                        if let model_format::Node::Split { feature, .. } = *node {
                            used[usize::from(feature)] = true;
                        }
                    }
                }
                TreeGroup {
                    trees: [range.start, range.end],
                    features: model
                        .features()
                        .iter()
                        .zip(&used)
                        .filter(|(_, u)| **u)
                        .map(|(f, _)| f.clone())
                        .collect(),
                    tail: g.checked_sub(1).map(|i| groups.tails()[i]),
                    weight: g.checked_sub(1).map(|_| groups.weight()),
                }
            })
            .collect(),
    )
}

/// The section table, as model-format reads it.
fn sections(bytes: &[u8]) -> Result<Vec<Section>> {
    Ok(model_format::section_table(bytes)?
        .into_iter()
        .map(|s| Section {
            tag: String::from_utf8_lossy(&s.tag).into_owned(),
            required: s.required,
            payload_bytes: s.payload_bytes,
            total_bytes: s.total_bytes,
        })
        .collect())
}

/// Decodes `bytes` and describes the model.
pub fn inspect(bytes: &[u8]) -> Result<Report> {
    let model = Model::from_bytes(bytes).context("decoding the model")?;
    let id = ModelId::of(bytes)?;
    let legacy = *model.normalization() == model_format::Normalization::legacy();
    let meta = |k: &str| model.meta(k).map(str::to_string);
    Ok(Report {
        version: id.version(),
        checksum: format!("crc32:{:08x}", id.checksum),
        // The decoder accepts exactly this version.
        format_version: model_format::FORMAT_VERSION,
        file_bytes: bytes.len(),
        sections: sections(bytes)?,
        features: model.features().to_vec(),
        payload_rules: if legacy { "legacy" } else { "generic" },
        trees: model.forest().trees().len(),
        nodes: model.forest().node_count(),
        max_samples: model.forest().max_samples(),
        offset: model.forest().offset(),
        expected_value: model.expected_value(),
        tree_groups: tree_groups(&model),
        score_distribution: model.score_distribution().map(<[f64]>::to_vec),
        scaler_mean: model.scaler().mean().to_vec(),
        scaler_scale: model.scaler().scale().to_vec(),
        trainer: meta("trainer"),
        training_rows: meta("training_rows"),
        training_data_fingerprint: meta("training_data_crc32").map(|c| format!("crc32:{c}")),
        metadata: model.metadata().iter().cloned().collect(),
    })
}

impl Report {
    /// Human-readable text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let none = || "(unknown)".to_string();
        let _ = writeln!(s, "model        {}", self.version);
        let _ = writeln!(s, "checksum     {}", self.checksum);
        let _ = writeln!(s, "format       SFEMODEL v{}", self.format_version);
        let _ = writeln!(s, "size         {} bytes", self.file_bytes);
        let _ = writeln!(
            s,
            "trainer      {}",
            self.trainer.clone().unwrap_or_else(none)
        );
        let _ = writeln!(
            s,
            "training     {} rows, data {}",
            self.training_rows.clone().unwrap_or_else(none),
            self.training_data_fingerprint.clone().unwrap_or_else(none)
        );
        let _ = writeln!(
            s,
            "forest       {} trees, {} nodes, max_samples {}, offset {}, expected path length {:.6}",
            self.trees, self.nodes, self.max_samples, self.offset, self.expected_value
        );
        for (g, group) in self.tree_groups.iter().flatten().enumerate() {
            let [a, b] = group.trees;
            let tail = match group.tail {
                None => String::new(),
                Some(t) => format!(
                    ", adding below mean path length {t:.6}, times {}",
                    group.weight.unwrap_or(1)
                ),
            };
            let _ = writeln!(
                s,
                "  group {g}    trees {a}..{b} on {}{tail}",
                group.features.join(",")
            );
        }
        let _ = writeln!(s, "payload      {} rules", self.payload_rules);
        if let Some(q) = &self.score_distribution {
            let q: Vec<String> = q.iter().map(|v| format!("{v:.4}")).collect();
            let _ = writeln!(s, "training     anomaly_score quantiles {}", q.join(" "));
        }
        let _ = writeln!(s, "features     {}", self.features.len());
        for (i, f) in self.features.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {f:<24} mean {:<14.6} scale {:.6}",
                self.scaler_mean[i], self.scaler_scale[i]
            );
        }
        let _ = writeln!(s, "sections");
        for sec in &self.sections {
            let _ = writeln!(
                s,
                "  {} {:<9} {:>10} bytes payload, {:>10} bytes in file",
                sec.tag,
                if sec.required { "required" } else { "optional" },
                sec.payload_bytes,
                sec.total_bytes
            );
        }
        let _ = writeln!(s, "metadata");
        for (k, v) in &self.metadata {
            let _ = writeln!(s, "  {k} = {v}");
        }
        s
    }
}
