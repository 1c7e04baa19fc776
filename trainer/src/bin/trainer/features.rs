//! `trainer features`: the feature table a model would be fitted on, written out.

use polars::prelude::{Column, DataFrame};
use std::path::PathBuf;

use crate::args::{InputArgs, SpecArgs, load};
use crate::failure::{Classify, Failure};
use crate::output::Log;

/// Write the feature table `fit` would train on (the spec's features, velocity ones computed
/// over the rows in arrival order, exactly as `fit` computes them) and the label: what a model
/// sees, for analysis or to train another learner on the very same inputs (e.g.
/// tools/hgb_sklearn.py, the side-by-side check of the supervised model).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Where to write the table (.csv or .parquet).
    #[arg(long)]
    pub output: PathBuf,
    /// Text columns of the input to copy beside the features (e.g. `pattern`); local files only.
    #[arg(long, value_delimiter = ',')]
    pub carry: Vec<String>,
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    let Args {
        input,
        spec,
        output,
        carry,
    } = args;
    let spec = spec.spec().usage()?;
    let (dataset, origins) = load(&input, &spec, false, None).data()?;
    let table = &dataset.table;
    let mut columns: Vec<Column> = table
        .names
        .iter()
        .zip(&table.columns)
        .map(|(n, c)| Column::new(n.as_str().into(), c.clone()))
        .collect();
    if let Some(labels) = &dataset.labels {
        let label: Vec<i64> = labels.iter().map(|&b| i64::from(b)).collect();
        columns.push(Column::new("label".into(), label));
    }
    for name in &carry {
        let [path] = input.input.as_slice() else {
            return Err(Failure::Usage(anyhow::anyhow!(
                "--carry needs exactly one local input file"
            )));
        };
        let values = trainer::backtest::text_column(std::path::Path::new(path), name).data()?;
        columns.push(Column::new(name.as_str().into(), values));
    }
    let mut frame = DataFrame::new(table.rows(), columns).internal()?;
    trainer::data::write_frame(&output, &mut frame).data()?;
    log.event(
        "features",
        &format!(
            "wrote {} ({} rows, features {})",
            output.display(),
            table.rows(),
            table.names.join(",")
        ),
        serde_json::json!({"rows": table.rows(), "features": table.names, "inputs": origins}),
    );
    Ok(())
}
