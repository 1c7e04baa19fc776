//! Reading and writing tables with polars.

use anyhow::{Context, Result, bail};
use polars::prelude::{
    CsvWriter, DataFrame, DataType, Expr, LazyCsvReader, LazyFileListReader, LazyFrame,
    ParquetWriter, PlRefPath, ScanArgsParquet, SerWriter, col,
};
use rayon::prelude::*;
use std::path::Path;

/// File formats the trainer reads and writes, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
}

impl Format {
    pub fn from_path(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("parquet" | "pq") => Ok(Format::Parquet),
            Some("csv") => Ok(Format::Csv),
            _ => bail!(
                "cannot tell the format of {}: use a .parquet or .csv file",
                path.display()
            ),
        }
    }
}

/// Feature columns as `f64`, column-major: `columns[feature][row]`.
pub struct Table {
    pub names: Vec<String>,
    pub columns: Vec<Vec<f64>>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }

    /// One row in schema order.
    pub fn row(&self, i: usize) -> Vec<f64> {
        self.columns.iter().map(|c| c[i]).collect()
    }
}

/// Reads `features` from a Parquet or CSV file as `f64`, refusing nulls and non-finite values.
pub fn read_features(path: &Path, features: &[String]) -> Result<Table> {
    let format = Format::from_path(path)?;
    let location = PlRefPath::new(path.to_str().context("input path is not valid UTF-8")?);
    let frame = match format {
        Format::Parquet => LazyFrame::scan_parquet(location, ScanArgsParquet::default())?,
        Format::Csv => LazyCsvReader::new(location)
            .with_has_header(true)
            .finish()?,
    };
    let schema = frame
        .clone()
        .collect_schema()
        .with_context(|| format!("reading the schema of {}", path.display()))?;
    for name in features {
        if schema.get(name.as_str()).is_none() {
            let have: Vec<&str> = schema
                .iter_names()
                .map(polars::prelude::PlSmallStr::as_str)
                .collect();
            bail!(
                "{} has no column {name:?} (columns: {})",
                path.display(),
                have.join(", ")
            );
        }
    }
    let exprs: Vec<Expr> = features
        .iter()
        .map(|f| col(f.as_str()).strict_cast(DataType::Float64))
        .collect();
    let df = frame
        .select(exprs)
        .collect()
        .with_context(|| format!("reading feature columns from {}", path.display()))?;
    // One column per task: copying a million values is mostly first-touch page faults on
    // the new vector, which both cores take at once.
    let columns = features
        .par_iter()
        .map(|name| {
            let ca = df.column(name)?.f64()?;
            if ca.null_count() > 0 {
                bail!("column {name:?} has {} missing values", ca.null_count());
            }
            // Chunk by chunk as slices rather than value by value through the chunked
            // iterator (a third of the read time on a million rows).
            let mut values = Vec::with_capacity(ca.len());
            for chunk in ca.downcast_iter() {
                values.extend_from_slice(chunk.values());
            }
            if let Some(row) = values.iter().position(|v| !v.is_finite()) {
                bail!(
                    "column {name:?} row {row} is not a finite number ({})",
                    values[row]
                );
            }
            Ok(values)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Table {
        names: features.to_vec(),
        columns,
    })
}

/// Writes a data frame as Parquet or CSV, by the path's extension.
pub fn write_frame(path: &Path, df: &mut DataFrame) -> Result<()> {
    let format = Format::from_path(path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    match format {
        Format::Parquet => {
            ParquetWriter::new(file).finish(df)?;
        }
        Format::Csv => CsvWriter::new(file).include_header(true).finish(df)?,
    }
    Ok(())
}
