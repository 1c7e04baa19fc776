//! Reading and writing tables with polars.

use anyhow::{Context, Result, bail};
use polars::prelude::{CsvWriter, DataFrame, DataType, Expr, ParquetWriter, SerWriter, col};
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
    read_input_features(&local_input(path)?, features)
}

/// A local .parquet or .csv file as a resolved input (its format from the extension).
pub fn local_input(path: &Path) -> Result<crate::source::InputFile> {
    let format = match Format::from_path(path)? {
        Format::Parquet => crate::source::InputFormat::Parquet,
        Format::Csv => crate::source::InputFormat::Csv,
    };
    Ok(crate::source::InputFile {
        local: path.to_path_buf(),
        origin: path.display().to_string(),
        format,
    })
}

/// [`read_features`] of a resolved input (any format, local or downloaded; errors name its
/// origin).
pub fn read_input_features(input: &crate::source::InputFile, features: &[String]) -> Result<Table> {
    // The one reader per format that every input goes through (`source::scan_file`: the same
    // type inference for `score` as for `fit`).
    let path = Path::new(&input.origin);
    let frame = crate::source::scan_file(input)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `score` reads CSV as `fit` does: a column of whole numbers that turns fractional after
    /// the first hundred rows (as Postgres prints 14 and 12.5) is read, not refused.
    #[test]
    fn csv_type_inference_covers_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late-fraction.csv");
        let mut text = String::from("amount,hour\n");
        for i in 0..500 {
            text.push_str(&format!("{},{}\n", 10 + i, i % 24));
        }
        text.push_str("12.5,3\n");
        std::fs::write(&path, text).unwrap();
        let table = read_features(&path, &["amount".to_owned(), "hour".to_owned()]).unwrap();
        assert_eq!(table.rows(), 501);
        assert_eq!(table.columns[0][500], 12.5);
    }
}
