//! `trainer export`: Copy data (typically a Postgres time window) to a Parquet file on disk or object storage, e.g. `export --input postgres://… --since 30d --output s3://bucket/tx.parquet`.

use std::time::Instant;
use trainer::source;

use crate::args::InputArgs;
use crate::failure::{Classify, Failure};
use crate::output::Log;

/// Copy data (typically a Postgres time window) to a Parquet file on disk or object
/// storage, e.g. `export --input postgres://… --since 30d --output s3://bucket/tx.parquet`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub input: InputArgs,
    /// Destination .parquet path or object-store URL.
    #[arg(long)]
    pub output: String,
}

pub fn run(args: Args, log: &Log) -> Result<(), Failure> {
    let Args { input, output } = args;
    let started = Instant::now();
    let opts = input.options();
    let inputs = source::resolve(&input.input, input.format, &opts).data()?;
    let lf = source::scan(&inputs).data()?;
    let mut df = source::collect(lf, "the inputs").data()?;
    let mut buf = Vec::new();
    polars::prelude::ParquetWriter::new(&mut buf)
        .finish(&mut df)
        .internal()?;
    let bytes = buf.len();
    source::put(&output, buf, &opts).internal()?;
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
    Ok(())
}
