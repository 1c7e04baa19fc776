//! Batch scoring: every row of a table scored exactly as [`Model::score`] would, in parallel,
//! order kept.
//!
//! The kernels are model-format's ([`model_format::batch`]: the forest flattened and walked a
//! block of rows at a time, same bits as [`Model::score`]); this module owns the parallel loop
//! over blocks, the scaling into blocks and the I/O. Tested below against [`Model::score`].
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
//!
//! A model with a supervised classifier adds a last column, `fraud_probability`, exactly as the
//! edge computes it ([`Model::score_fraud`]).

use crate::data::{self, Format, Table};
use anyhow::{Context, Result};
use model_format::batch::{BLOCK, BatchForest, Kernel};
use model_format::{ExplainError, Model, Score, ScoreError};
use polars::prelude::{Column, CsvWriter, DataFrame, ParquetCompression, ParquetWriter, SerWriter};
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

/// Name of the output column holding a supervised model's probability of fraud.
pub const FRAUD_PROBABILITY_COLUMN: &str = "fraud_probability";

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
    if table
        .columns
        .iter()
        .any(|c| c.iter().any(|v| !v.is_finite()))
    {
        // Let the row-at-a-time path report the first bad row with Model::score's own error.
        return score_rows_one_by_one(model, table);
    }
    let Some(batch) = BatchForest::new(model.forest()) else {
        return score_rows_one_by_one(model, table);
    };
    let scaler = model.scaler();
    let mut sums = vec![0.0; table.rows()];
    path_length_sums(&batch, width, &mut sums, |start, block, len| {
        // Same expression and cast as Model::score's scaling.
        for (f, col) in table.columns.iter().enumerate() {
            let dst = &mut block[f * BLOCK..f * BLOCK + len];
            for (d, &v) in dst.iter_mut().zip(&col[start..start + len]) {
                *d = scaler.scale_one(f, v) as f32;
            }
        }
    });
    Ok(Scores {
        rows: sums
            .par_iter()
            .map(|&s| model.forest().score_path_sum(s))
            .collect(),
        explanations: None,
    })
}

/// Path-length sums of every row (see [`BatchForest::path_length_sums`]), in parallel over
/// blocks of [`BLOCK`] rows. `fill(start, block, len)` writes rows `start..start + len` of the
/// scaled `f32` features into `block`, column-major with a stride of [`BLOCK`].
pub(crate) fn path_length_sums(
    batch: &BatchForest,
    features: usize,
    sums: &mut [f64],
    fill: impl Fn(usize, &mut [f32], usize) + Sync,
) {
    sums.par_chunks_mut(BLOCK).enumerate().for_each_init(
        || vec![0f32; batch.block_len(features)],
        |block, (b, out)| {
            fill(b * BLOCK, block, out.len());
            batch.path_length_sums(block, out, Kernel::Dispatch);
        },
    );
}

/// [`Model::score`] row by row: the reference [`BatchForest`] must agree with, and the path that
/// reports invalid rows.
fn score_rows_one_by_one(model: &Model, table: &Table) -> Result<Scores, BatchError> {
    let width = model.features().len();
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

/// [`score_table`] with explanations; the width is already checked. Chunks of rows go to the
/// cores, and each chunk is explained several rows at a time ([`Model::explain_rows`]: the
/// same bits as [`Model::explain`] row by row, about twice as fast on one core).
fn explain_table(model: &Model, table: &Table) -> Result<Scores, BatchError> {
    /// Rows per task: enough to amortize the task, few enough to spread over the cores.
    const CHUNK: usize = 2048;
    let width = model.features().len();
    let n = table.rows();
    // Per chunk: its explanations and its attributions, row-major.
    let chunks = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let range = c * CHUNK..((c + 1) * CHUNK).min(n);
            let mut rows = Vec::with_capacity(range.len() * width);
            for i in range.clone() {
                rows.extend(table.columns.iter().map(|col| col[i]));
            }
            let mut phi = vec![0.0; rows.len()];
            let mut out = Vec::with_capacity(range.len());
            model
                .explain_rows(&rows, &mut phi, &mut out)
                .map_err(|source| BatchError::Explain {
                    row: range.start + out.len(),
                    source,
                })?;
            Ok((out, phi))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut phi = vec![Vec::with_capacity(n); width];
    let mut rows = Vec::with_capacity(n);
    for (explained, chunk_phi) in chunks {
        rows.extend(explained.iter().map(|e| e.score));
        for row_phi in chunk_phi.chunks_exact(width.max(1)) {
            for (col, &v) in phi.iter_mut().zip(row_phi) {
                col.push(v);
            }
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
        // One column per task: building them is mostly first-touch page faults on 8 MB
        // each (per million rows), which both cores take at once.
        type Field = fn(&Score) -> f64;
        let floats: [(&str, Field); 4] = [
            (COLUMNS[0], |s| s.score_samples),
            (COLUMNS[1], |s| s.decision),
            (COLUMNS[2], Score::risk),
            (COLUMNS[4], |s| s.mean_path_length),
        ];
        let (mut columns, is_anomaly) = rayon::join(
            || {
                floats
                    .into_par_iter()
                    .map(|(name, f)| {
                        Column::new(name.into(), self.rows.iter().map(f).collect::<Vec<f64>>())
                    })
                    .collect::<Vec<_>>()
            },
            || {
                let flags = self.rows.iter().map(Score::is_anomaly);
                Column::new(COLUMNS[3].into(), flags.collect::<Vec<bool>>())
            },
        );
        columns.insert(3, is_anomaly);
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
    score_input(model, &data::local_input(input)?, columns, output, explain)
}

/// One shard of a batch-scoring job over many files: shard `index` of `count` (0-based, as a
/// Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`) takes the files whose position in the
/// sorted input list is `index` modulo `count`. Every shard resolves the same list, so the
/// shards split the files without talking to each other, and a failed index can be rerun alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

/// A `--shard` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not `INDEX/COUNT`.
    #[error("a shard is INDEX/COUNT with a 0-based INDEX, e.g. 0/4 (got {0:?})")]
    Syntax(String),
    /// `COUNT` is 0 or `INDEX` is not below it.
    #[error("shard index {index} is not below the shard count {count} (indexes are 0-based)")]
    OutOfRange {
        /// The index given.
        index: usize,
        /// The count given.
        count: usize,
    },
}

impl Shard {
    /// The whole job as one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`.
    pub fn new(index: usize, count: usize) -> Result<Self, ShardError> {
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// Whether the file at `position` of the sorted input list is this shard's.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ShardError::Syntax(s.to_owned());
        let (index, count) = s.split_once('/').ok_or_else(syntax)?;
        let index = index.trim().parse().map_err(|_| syntax())?;
        let count = count.trim().parse().map_err(|_| syntax())?;
        Shard::new(index, count)
    }
}

/// The name a file's scores get in a scoring directory: `<input file stem>.scores.<ext>`.
/// Every shard names a file the same way, so the union of the shards' directories is the
/// unsharded job's directory.
pub fn output_name(input: &crate::source::InputFile, ext: &str) -> String {
    let name = input.origin.rsplit('/').next().unwrap_or(&input.origin);
    let stem = name.split_once('.').map_or(name, |(stem, _)| stem);
    format!("{stem}.scores.{ext}")
}

/// [`score_file`] of a resolved input (any input format, local or downloaded).
pub fn score_input(
    model: &Model,
    input: &crate::source::InputFile,
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
    let timings = std::env::var_os("SFE_TIMINGS").is_some();
    let lap = |phase: &str, since: std::time::Instant| {
        if timings {
            eprintln!("score: {phase:<8} {:>9.1?}", since.elapsed());
        }
        std::time::Instant::now()
    };
    let t = std::time::Instant::now();
    let table = read_features(model, input, columns)?;
    let t = lap("read", t);
    let scores =
        score_table(model, &table, explain).with_context(|| format!("scoring {}", input.origin))?;
    let t = lap("score", t);
    let mut frame = scores.to_frame()?;
    if let Some(p) = crate::supervised::probabilities(model, &table)? {
        frame.with_column(Column::new(FRAUD_PROBABILITY_COLUMN.into(), p))?;
    }
    write_exact(output, &mut frame)?;
    lap("write", t);
    Ok(scores)
}

/// The model's feature columns of `input`: read from the columns `columns` names, except the
/// velocity features, which are computed over the file's rows in their order (arrival order,
/// as [`crate::velocity`] does for fit), each entity starting without history. A column of a
/// velocity feature's name in the input is ignored: scores must not depend on numbers an edge
/// would not have computed.
fn read_features(
    model: &Model,
    input: &crate::source::InputFile,
    columns: &[String],
) -> Result<Table> {
    let Some(velocity) = model.velocity() else {
        return data::read_input_features(input, columns);
    };
    let computed: Vec<&str> = velocity
        .features()
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    let is_computed = |feature: &String| computed.contains(&feature.as_str());
    let read: Vec<String> = model
        .features()
        .iter()
        .zip(columns)
        .filter(|(f, _)| !is_computed(f))
        .map(|(_, c)| c.clone())
        .collect();
    let mut read = data::read_input_features(input, &read)?.columns.into_iter();
    let lf = crate::source::scan_file(input)?;
    let mut velocity_columns: Vec<Option<Vec<f64>>> =
        crate::velocity::columns(lf, velocity, &input.origin)?
            .into_iter()
            .map(Some)
            .collect();
    let columns = model
        .features()
        .iter()
        .map(|f| match computed.iter().position(|c| c == f) {
            Some(i) => velocity_columns[i].take(),
            None => read.next(),
        })
        .collect::<Option<Vec<_>>>()
        .context("feature columns out of step with the model")?;
    Ok(Table {
        names: model.features().to_vec(),
        columns,
    })
}

/// Writes scores so every `f64` reads back to the same bits: Parquet stores the bits; for CSV,
/// polars' default float format (no fixed precision) is the shortest string that round-trips.
fn write_exact(path: &Path, frame: &mut DataFrame) -> Result<()> {
    match Format::from_path(path)? {
        Format::Parquet => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            // Snappy, as pandas and pyarrow write by default: scores are full-precision
            // floats that zstd shrinks by a quarter at three times the writing time.
            ParquetWriter::new(file)
                .with_compression(ParquetCompression::Snappy)
                .finish(frame)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_positions_and_refuse_bad_specs() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for position in 0..10 {
            let owners = shards.iter().filter(|s| s.owns(position)).count();
            assert_eq!(owners, 1, "position {position}");
        }
        assert!(Shard::ALL.owns(7));
        assert_eq!(" 2 / 5".parse::<Shard>().unwrap().to_string(), "2/5");
        for bad in ["", "3", "a/b", "1/", "-1/3", "1.5/3"] {
            assert!(
                matches!(bad.parse::<Shard>(), Err(ShardError::Syntax(_))),
                "{bad}"
            );
        }
        for (bad, index, count) in [("3/3", 3, 3), ("0/0", 0, 0)] {
            assert_eq!(
                bad.parse::<Shard>(),
                Err(ShardError::OutOfRange { index, count })
            );
        }
        let file = |origin: &str| crate::source::InputFile {
            local: origin.into(),
            origin: origin.into(),
            format: crate::source::InputFormat::Csv,
        };
        assert_eq!(
            output_name(&file("s3://b/exports/2026-11-01.csv"), "parquet"),
            "2026-11-01.scores.parquet"
        );
        assert_eq!(output_name(&file("day.ndjson.gz"), "csv"), "day.scores.csv");
    }
    use crate::forest::{Contamination, IsolationForestParams, MaxFeatures, MaxSamples};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A table of `n` rows: three skewed features with ties and a few far outliers.
    fn table(n: usize, seed: u64) -> Table {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let columns = (0..3)
            .map(|f| {
                (0..n)
                    .map(|i| {
                        let v: f64 = rng.random_range(0.0..1.0);
                        match (i % 97, f) {
                            (0, _) => 1e4 * v,
                            (_, 0) => (v * 10.0).round(),
                            (_, 1) => v.powi(3) * 500.0,
                            _ => -v,
                        }
                    })
                    .collect()
            })
            .collect();
        Table {
            names: vec!["a".into(), "b".into(), "c".into()],
            columns,
        }
    }

    fn fit(table: &Table, params: &IsolationForestParams) -> Model {
        crate::fit(table, params).unwrap()
    }

    #[test]
    fn batch_scores_are_model_score_bits() {
        let train = table(3000, 1);
        // Block edges: fewer rows than a block, exactly one, and a ragged last block.
        for n in [1, 7, BLOCK, 2 * BLOCK + 3, 5000] {
            let rows = table(n, 2);
            for params in [
                IsolationForestParams {
                    contamination: Contamination::Fraction(0.1),
                    seed: 3,
                    ..Default::default()
                },
                // Deep trees (ψ = 3000, depth 12) whose leaves sit at many depths.
                IsolationForestParams {
                    max_samples: MaxSamples::Fraction(1.0),
                    max_features: MaxFeatures::Count(2),
                    bootstrap: true,
                    n_estimators: 7,
                    seed: 4,
                    ..Default::default()
                },
            ] {
                let model = fit(&train, &params);
                let fast = score_table(&model, &rows, false).unwrap();
                let slow = score_rows_one_by_one(&model, &rows).unwrap();
                assert_eq!(fast.rows.len(), n);
                for (i, (a, b)) in fast.rows.iter().zip(&slow.rows).enumerate() {
                    assert_eq!(
                        (
                            a.score_samples.to_bits(),
                            a.decision.to_bits(),
                            a.mean_path_length.to_bits()
                        ),
                        (
                            b.score_samples.to_bits(),
                            b.decision.to_bits(),
                            b.mean_path_length.to_bits()
                        ),
                        "row {i} of {n}"
                    );
                }
            }
        }
    }

    /// The dispatching kernel (AVX2 on this machine, when it has it) and the portable one
    /// agree to the bit, also for trees too shallow for the vectorized top levels.
    #[test]
    fn every_kernel_gives_the_same_sums() {
        let train = table(3000, 5);
        let rows = table(BLOCK, 6);
        for max_samples in [MaxSamples::Count(4), MaxSamples::Count(8), MaxSamples::Auto] {
            let params = IsolationForestParams {
                max_samples,
                n_estimators: 20,
                seed: 7,
                ..Default::default()
            };
            let model = fit(&train, &params);
            let batch = BatchForest::new(model.forest()).unwrap();
            let mut block = vec![0f32; batch.block_len(3)];
            for (f, col) in rows.columns.iter().enumerate() {
                for (d, &v) in block[f * BLOCK..].iter_mut().zip(col) {
                    *d = model.scaler().scale_one(f, v) as f32;
                }
            }
            for len in [BLOCK, 13] {
                let (mut fast, mut portable) = (vec![0.0; len], vec![0.0; len]);
                batch.path_length_sums(&block, &mut fast, Kernel::Dispatch);
                batch.path_length_sums(&block, &mut portable, Kernel::Portable);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&portable), "{max_samples:?}, {len} rows");
                assert!(fast.iter().all(|&s| s > 0.0));
            }
        }
    }

    #[test]
    fn bad_rows_report_model_score_errors() {
        let train = table(500, 1);
        let model = fit(&train, &IsolationForestParams::default());
        let mut rows = table(600, 2);
        rows.columns[1][321] = f64::NAN;
        rows.columns[0][400] = f64::INFINITY;
        match score_table(&model, &rows, false) {
            Err(BatchError::Row {
                row: 321,
                source: ScoreError::NotFinite { feature },
            }) => assert_eq!(feature, "b"),
            other => panic!("{other:?}"),
        }
        rows.columns.pop();
        assert_eq!(
            score_table(&model, &rows, false),
            Err(BatchError::Width {
                expected: 3,
                found: 2
            })
        );
    }

    #[test]
    fn fit_offset_is_the_training_score_quantile() {
        let train = table(4000, 9);
        let model = fit(
            &train,
            &IsolationForestParams {
                contamination: Contamination::Fraction(0.1),
                ..Default::default()
            },
        );
        // Exactly 10% of training rows fall below the offset, give or take ties at it.
        let below = (0..train.rows())
            .filter(|&i| model.score(&train.row(i)).unwrap().is_anomaly())
            .count();
        assert!(
            (395..=400).contains(&below),
            "{below} of 4000 below the offset"
        );
    }

    #[test]
    fn trees_too_deep_to_flatten_score_row_by_row() {
        // ψ = 70,000 allows depth 17, beyond MAX_BATCH_DEPTH: fit and score_table fall back to
        // Model::score's own path, with the same offset rule.
        let train = table(70_000, 8);
        let model = fit(
            &train,
            &IsolationForestParams {
                n_estimators: 3,
                max_samples: MaxSamples::Fraction(1.0),
                contamination: Contamination::Fraction(0.1),
                seed: 1,
                ..Default::default()
            },
        );
        assert!(BatchForest::new(model.forest()).is_none());
        let scores = score_table(&model, &train, false).unwrap();
        let mut samples: Vec<f64> = scores.rows.iter().map(|s| s.score_samples).collect();
        let offset = crate::forest::percentile(&mut samples, 10.0);
        assert_eq!(model.forest().offset().to_bits(), offset.to_bits());
    }

    #[test]
    fn fitted_models_do_not_depend_on_the_thread_count() {
        let train = table(20_000, 5);
        for params in [
            IsolationForestParams {
                contamination: Contamination::Fraction(0.05),
                seed: 12,
                ..Default::default()
            },
            IsolationForestParams {
                max_features: MaxFeatures::Fraction(0.5),
                bootstrap: true,
                contamination: Contamination::Fraction(0.2),
                seed: 12,
                ..Default::default()
            },
        ] {
            let bytes = |threads| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| fit(&train, &params).to_bytes().unwrap())
            };
            let one = bytes(1);
            assert_eq!(one, bytes(2));
            assert_eq!(one, bytes(3));
        }
    }
}
