//! Batch scoring: every row of a table through [`Model::score`], in parallel, order kept.
//!
//! Output columns (all `f64` at full precision except `is_anomaly`):
//!
//! | column | meaning |
//! |---|---|
//! | `score_samples` | scikit-learn's `score_samples`, `-2^(-E[h]/c(ψ))` |
//! | `anomaly_score` | scikit-learn's `decision_function` = `score_samples - offset` |
//! | `risk_score` | `-score_samples`, in (0, 1], higher = more anomalous |
//! | `is_anomaly` | `anomaly_score < 0` |
//! | `mean_path_length` | `E[h(x)]` over the trees |
//!
//! With explanations ([`score_table`] with `explain`, `trainer score --explain`), then, per
//! feature in model order, `phi_<feature>` (exact path-dependent TreeSHAP value of
//! `mean_path_length`, [`Model::explain`]; lower pushes towards anomalous) and finally
//! `expected_value` (the base value, the same on every row), so that
//! `Σ phi_* + expected_value = mean_path_length` up to rounding.

use crate::data::{self, Format, Table};
use anyhow::{Context, Result};
use model_format::{ExplainError, Model, Score, ScoreError};
use polars::prelude::{Column, CsvWriter, DataFrame, SerWriter};
use rayon::prelude::*;
use std::path::Path;

/// Column names, in output order.
pub const COLUMNS: [&str; 5] = [
    "score_samples",
    "anomaly_score",
    "risk_score",
    "is_anomaly",
    "mean_path_length",
];

/// Scores of every row of a table, in row order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub rows: Vec<Score>,
    /// Per-row TreeSHAP explanations, when asked for.
    pub explanations: Option<Explanations>,
}

/// TreeSHAP attributions of `mean_path_length` for every row ([`Model::explain`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Explanations {
    /// Feature names, in model order.
    pub features: Vec<String>,
    /// `phi[j][i]`: attribution of feature `j` in row `i`.
    pub phi: Vec<Vec<f64>>,
    /// The base value ([`Model::expected_value`]), the same for every row.
    pub expected_value: f64,
}

/// Name of the output column holding the attributions of `feature`.
pub fn phi_column(feature: &str) -> String {
    format!("phi_{feature}")
}

/// Name of the output column holding the explanations' base value.
pub const EXPECTED_VALUE_COLUMN: &str = "expected_value";

/// Why a row could not be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("the table has {found} feature columns but the model expects {expected}")]
    Width { expected: usize, found: usize },
    #[error("row {row}: {source}")]
    Row { row: usize, source: ScoreError },
    #[error("row {row}: {source}")]
    Explain { row: usize, source: ExplainError },
}

/// Scores every row of `table` (columns in the model's schema order), and explains every row
/// too when `explain` is set.
pub fn score_table(model: &Model, table: &Table, explain: bool) -> Result<Scores, BatchError> {
    let width = model.features().len();
    if table.columns.len() != width {
        return Err(BatchError::Width {
            expected: width,
            found: table.columns.len(),
        });
    }
    if explain {
        return explain_table(model, table);
    }
    // Indexed parallel iterators collect in index order, so row i's score lands at i.
    let rows = (0..table.rows())
        .into_par_iter()
        .map_init(
            || Vec::with_capacity(width),
            |row, i| {
                row.clear();
                row.extend(table.columns.iter().map(|c| c[i]));
                model
                    .score(row)
                    .map_err(|source| BatchError::Row { row: i, source })
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scores {
        rows,
        explanations: None,
    })
}

/// [`score_table`] with explanations; the width is already checked.
fn explain_table(model: &Model, table: &Table) -> Result<Scores, BatchError> {
    let width = model.features().len();
    // Row-major attributions, one chunk of `width` per row, collected in row order.
    let explained = (0..table.rows())
        .into_par_iter()
        .map_init(
            || Vec::with_capacity(width),
            |row, i| {
                row.clear();
                row.extend(table.columns.iter().map(|c| c[i]));
                let mut phi = vec![0.0; width];
                model
                    .explain(row, &mut phi)
                    .map(|e| (e.score, phi))
                    .map_err(|source| BatchError::Explain { row: i, source })
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    let mut phi = vec![Vec::with_capacity(explained.len()); width];
    let mut rows = Vec::with_capacity(explained.len());
    for (score, row_phi) in explained {
        rows.push(score);
        for (col, v) in phi.iter_mut().zip(row_phi) {
            col.push(v);
        }
    }
    Ok(Scores {
        rows,
        explanations: Some(Explanations {
            features: model.features().to_vec(),
            phi,
            expected_value: model.expected_value(),
        }),
    })
}

impl Scores {
    /// The output table: columns as in [`COLUMNS`], then the explanation columns if any.
    pub fn to_frame(&self) -> Result<DataFrame> {
        let col = |name: &str, f: fn(&Score) -> f64| {
            Column::new(name.into(), self.rows.iter().map(f).collect::<Vec<f64>>())
        };
        let mut columns = vec![
            col(COLUMNS[0], |s| s.score_samples),
            col(COLUMNS[1], |s| s.decision),
            col(COLUMNS[2], Score::risk),
            Column::new(
                COLUMNS[3].into(),
                self.rows
                    .iter()
                    .map(Score::is_anomaly)
                    .collect::<Vec<bool>>(),
            ),
            col(COLUMNS[4], |s| s.mean_path_length),
        ];
        if let Some(e) = &self.explanations {
            for (feature, phi) in e.features.iter().zip(&e.phi) {
                columns.push(Column::new(phi_column(feature).into(), phi.clone()));
            }
            columns.push(Column::new(
                EXPECTED_VALUE_COLUMN.into(),
                vec![e.expected_value; self.rows.len()],
            ));
        }
        Ok(DataFrame::new(self.rows.len(), columns)?)
    }
}

/// Reads `input` (feature columns `columns`, in model order), scores it (and explains it, if
/// `explain`) and writes the scores to `output` (.parquet or .csv). Returns the scores.
pub fn score_file(
    model: &Model,
    input: &Path,
    columns: &[String],
    output: &Path,
    explain: bool,
) -> Result<Scores> {
    anyhow::ensure!(
        columns.len() == model.features().len(),
        "{} feature columns given but the model has {} features ({})",
        columns.len(),
        model.features().len(),
        model.features().join(", ")
    );
    let table = data::read_features(input, columns)?;
    let scores = score_table(model, &table, explain)
        .with_context(|| format!("scoring {}", input.display()))?;
    let mut frame = scores.to_frame()?;
    write_exact(output, &mut frame)?;
    Ok(scores)
}

/// Writes scores so every `f64` reads back to the same bits: Parquet stores the bits; for CSV,
/// polars' default float format (no fixed precision) is the shortest string that round-trips.
fn write_exact(path: &Path, frame: &mut DataFrame) -> Result<()> {
    match Format::from_path(path)? {
        Format::Parquet => data::write_frame(path, frame),
        Format::Csv => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            CsvWriter::new(file)
                .include_header(true)
                .with_float_precision(None)
                .with_float_scientific(None)
                .finish(frame)
                .with_context(|| format!("writing {}", path.display()))
        }
    }
}
