//! Where training and evaluation data comes from.
//!
//! An input is a local path or glob (`data/*.parquet`), a `file://` URL, or an object-store URL
//! (`s3://bucket/prefix/*.parquet`, `gs://…`, `az://…`/`abfs://…`, `https://…`). Local files are
//! scanned in place with polars' lazy readers, so only the selected columns are read and big
//! files stream. Object-store objects are first downloaded into a private temporary directory
//! (removed when the [`Inputs`] is dropped) and then scanned the same way: this keeps one code
//! path for every store and avoids polars' own cloud stack, a second large dependency tree.
//!
//! S3 credentials, region and endpoint come from the standard `AWS_*` environment variables
//! (`AmazonS3Builder::from_env`), overridable with [`StoreOptions`]; Google Cloud and Azure read
//! their usual `GOOGLE_*` / `AZURE_*` variables.

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme};
use polars::prelude::{
    DataFrame, LazyCsvReader, LazyFileListReader, LazyFrame, LazyJsonLineReader, PlRefPath,
    ScanArgsParquet, UnionArgs,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use url::Url;

/// A table file format, by extension or forced with `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Parquet,
    Csv,
    /// Newline-delimited JSON, one object per line (`.ndjson`, `.jsonl`, `.json`).
    Ndjson,
}

impl InputFormat {
    /// The format a file name's extension implies, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" | "json" => Some(Self::Ndjson),
            _ => None,
        }
    }
}

/// Object-store settings given on the command line; unset fields fall back to the environment.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// S3-compatible endpoint, e.g. `http://127.0.0.1:9000` (MinIO, s3s-fs, Ceph…).
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    /// Allow plain-HTTP endpoints (local S3-compatible servers).
    pub s3_allow_http: bool,
    /// What to read from `postgres://` inputs.
    pub postgres: crate::pg::PgOptions,
}

/// True when `input` names an object store rather than a local file.
pub fn is_url(input: &str) -> bool {
    Url::parse(input).is_ok_and(|u| u.scheme().len() > 1 && u.scheme() != "file")
}

/// Opens the object store an URL points into; returns it with the path inside it and, when
/// that path has glob characters, the raw pattern (object_store would escape them in a path).
pub fn open_store(
    url: &Url,
    opts: &StoreOptions,
) -> Result<(Arc<dyn ObjectStore>, StorePath, Option<String>)> {
    let (scheme, path) =
        ObjectStoreScheme::parse(url).with_context(|| format!("unsupported store URL {url}"))?;
    let raw = path.as_ref();
    let pattern = if has_glob(url.path()) {
        // Where the bucket is the host, the URL path is the key pattern; otherwise take
        // object_store's reading of the path and unescape the glob characters.
        Some(match url.scheme() {
            "s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" => {
                url.path().trim_start_matches('/').to_string()
            }
            _ => raw
                .replace("%2A", "*")
                .replace("%3F", "?")
                .replace("%5B", "["),
        })
    } else {
        None
    };
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url.as_str());
            if let Some(e) = &opts.s3_endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(r) = &opts.s3_region {
                b = b.with_region(r);
            }
            if opts.s3_allow_http
                || opts
                    .s3_endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://"))
            {
                b = b.with_allow_http(true);
            }
            Arc::new(b.build().context("configuring S3 (see AWS_* variables)")?)
        }
        ObjectStoreScheme::GoogleCloudStorage => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .build()
                .context("configuring Google Cloud Storage")?,
        ),
        ObjectStoreScheme::MicrosoftAzure => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .build()
                .context("configuring Azure storage")?,
        ),
        _ => {
            let (store, _) =
                object_store::parse_url(url).with_context(|| format!("opening store for {url}"))?;
            Arc::from(store)
        }
    };
    Ok((store, path, pattern))
}

/// The temporary directory downloads go to, created on first use.
fn download_dir(downloads: &mut Option<tempfile::TempDir>) -> Result<PathBuf> {
    Ok(match downloads {
        Some(d) => d.path().to_path_buf(),
        None => downloads
            .insert(tempfile::tempdir().context("creating a download directory")?)
            .path()
            .to_path_buf(),
    })
}

/// A small single-threaded runtime to drive object_store's async API from the CLI.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// One resolved input file on local disk.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Where the data is read from now.
    pub local: PathBuf,
    /// Where it came from, for messages (path or URL).
    pub origin: String,
    pub format: InputFormat,
}

/// Resolved inputs; keeps downloaded objects alive until dropped.
pub struct Inputs {
    pub files: Vec<InputFile>,
    _downloads: Option<tempfile::TempDir>,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn format_of(name: &str, forced: Option<InputFormat>) -> Result<InputFormat> {
    forced
        .or_else(|| InputFormat::from_name(name))
        .with_context(|| {
            format!("cannot tell the format of {name}: use .parquet, .csv or .ndjson, or --format")
        })
}

/// Expands every input (paths, globs, URLs) into local files, downloading remote objects.
/// Fails if an input matches nothing: a silent empty training set would be worse.
pub fn resolve(
    inputs: &[String],
    forced: Option<InputFormat>,
    opts: &StoreOptions,
) -> Result<Inputs> {
    resolve_only(inputs, forced, opts, |_| true)
}

/// [`resolve`], but fetches (downloads, copies out of Postgres) only the files whose position
/// in the list `fetch` accepts; the others are listed with an empty `local` path. One shard of
/// a batch job lists everything, so that all shards agree on positions, and fetches its own.
pub fn resolve_only(
    inputs: &[String],
    forced: Option<InputFormat>,
    opts: &StoreOptions,
    fetch: impl Fn(usize) -> bool,
) -> Result<Inputs> {
    anyhow::ensure!(!inputs.is_empty(), "no --input given");
    let mut files = Vec::new();
    let mut downloads: Option<tempfile::TempDir> = None;
    let mut rt: Option<tokio::runtime::Runtime> = None;
    for input in inputs {
        if crate::pg::is_postgres(input) {
            let local = if fetch(files.len()) {
                let dir = download_dir(&mut downloads)?;
                let local = dir.join(format!("{:05}-postgres.csv", files.len()));
                crate::pg::copy_to_csv(input, &opts.postgres, &local)?;
                local
            } else {
                PathBuf::new()
            };
            files.push(InputFile {
                local,
                origin: crate::pg::redact(input),
                format: InputFormat::Csv,
            });
            continue;
        }
        let local_path = match input.strip_prefix("file://") {
            Some(rest) => Some(rest.to_string()),
            None if !is_url(input) => Some(input.clone()),
            None => None,
        };
        if let Some(path) = local_path {
            let before = files.len();
            if has_glob(&path) {
                let mut matched: Vec<PathBuf> = glob::glob(&path)
                    .with_context(|| format!("bad glob {path:?}"))?
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("expanding {path:?}"))?;
                matched.sort();
                for m in matched.into_iter().filter(|m| m.is_file()) {
                    let name = m.to_string_lossy().into_owned();
                    files.push(InputFile {
                        format: format_of(&name, forced)?,
                        origin: name,
                        local: m,
                    });
                }
            } else {
                let p = PathBuf::from(&path);
                anyhow::ensure!(p.is_file(), "input {path} does not exist or is not a file");
                files.push(InputFile {
                    format: format_of(&path, forced)?,
                    origin: path.clone(),
                    local: p,
                });
            }
            anyhow::ensure!(files.len() > before, "input {input} matches no files");
            continue;
        }
        let url = Url::parse(input).with_context(|| format!("bad URL {input}"))?;
        let (store, path, pattern) = open_store(&url, opts)?;
        let rt = match &mut rt {
            Some(rt) => rt,
            None => rt.insert(runtime()?),
        };
        let dir = download_dir(&mut downloads)?;
        let keys: Vec<StorePath> = rt.block_on(async {
            let Some(raw) = &pattern else {
                return Ok::<_, anyhow::Error>(vec![path.clone()]);
            };
            // List under the longest glob-free directory prefix, then match the whole key.
            let fixed: Vec<&str> = raw.split('/').take_while(|seg| !has_glob(seg)).collect();
            let prefix = StorePath::from_iter(fixed.iter().copied());
            let glob = glob::Pattern::new(raw).with_context(|| format!("bad glob {raw:?}"))?;
            let options = glob::MatchOptions {
                require_literal_separator: true,
                ..Default::default()
            };
            let mut keys: Vec<StorePath> = store
                .list(Some(&prefix))
                .try_filter(|m| {
                    futures::future::ready(glob.matches_with(m.location.as_ref(), options))
                })
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .with_context(|| format!("listing {input}"))?;
            keys.sort();
            Ok(keys)
        })?;
        anyhow::ensure!(!keys.is_empty(), "input {input} matches no objects");
        for key in keys {
            let name = key.as_ref().to_string();
            let format = format_of(&name, forced)?;
            let local = if fetch(files.len()) {
                let local = dir.join(format!(
                    "{:05}-{}",
                    files.len(),
                    key.filename().unwrap_or("object")
                ));
                let bytes = rt
                    .block_on(async { store.get(&key).await?.bytes().await })
                    .with_context(|| format!("downloading {name} from {input}"))?;
                std::fs::write(&local, &bytes)
                    .with_context(|| format!("saving {name} to {}", local.display()))?;
                local
            } else {
                PathBuf::new()
            };
            files.push(InputFile {
                local,
                origin: format!(
                    "{}://{}/{}",
                    url.scheme(),
                    url.host_str().unwrap_or(""),
                    name
                ),
                format,
            });
        }
    }
    Ok(Inputs {
        files,
        _downloads: downloads,
    })
}

/// A lazy scan of one file.
pub fn scan_file(file: &InputFile) -> Result<LazyFrame> {
    let location = PlRefPath::new(
        file.local
            .to_str()
            .context("input path is not valid UTF-8")?,
    );
    let lf = match file.format {
        InputFormat::Parquet => LazyFrame::scan_parquet(location, ScanArgsParquet::default()),
        // Full-file type inference: a column of whole numbers that turns fractional after the
        // first rows (Postgres prints 14 and 12.5 alike) must not fail mid-read.
        InputFormat::Csv => LazyCsvReader::new(location)
            .with_has_header(true)
            .with_infer_schema_length(None)
            .finish(),
        InputFormat::Ndjson => LazyJsonLineReader::new(location).finish(),
    };
    lf.with_context(|| format!("opening {}", file.origin))
}

/// All inputs as one lazy frame (vertical concatenation in input order). Inputs must share
/// their column names; types are relaxed to a common supertype.
pub fn scan(inputs: &Inputs) -> Result<LazyFrame> {
    let frames = inputs
        .files
        .iter()
        .map(scan_file)
        .collect::<Result<Vec<_>>>()?;
    match frames.len() {
        0 => bail!("no input files"),
        1 => Ok(frames.into_iter().next().expect("one frame")),
        _ => polars::prelude::concat(
            frames,
            UnionArgs {
                rechunk: false,
                parallel: true,
                to_supertypes: true,
                ..Default::default()
            },
        )
        .context("combining the inputs"),
    }
}

/// Uploads (or writes) `bytes` to `dest`, a local path or an object-store URL.
pub fn put(dest: &str, bytes: Vec<u8>, opts: &StoreOptions) -> Result<()> {
    if let Some(path) = dest
        .strip_prefix("file://")
        .map(str::to_string)
        .or_else(|| (!is_url(dest)).then(|| dest.to_string()))
    {
        let path = Path::new(&path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Write then rename, so readers never see half a file.
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    } else {
        let url = Url::parse(dest).with_context(|| format!("bad URL {dest}"))?;
        let (store, path, _) = open_store(&url, opts)?;
        runtime()?
            .block_on(store.put(&path, bytes.into()))
            .with_context(|| format!("uploading to {dest}"))?;
        Ok(())
    }
}

/// Reads `src` (local path or object-store URL); `Ok(None)` if it does not exist.
pub fn get_opt(src: &str, opts: &StoreOptions) -> Result<Option<Vec<u8>>> {
    if let Some(path) = src
        .strip_prefix("file://")
        .map(str::to_string)
        .or_else(|| (!is_url(src)).then(|| src.to_string()))
    {
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {path}")),
        }
    } else {
        let url = Url::parse(src).with_context(|| format!("bad URL {src}"))?;
        let (store, path, _) = open_store(&url, opts)?;
        runtime()?.block_on(async {
            match store.get(&path).await {
                Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(anyhow::Error::from(e).context(format!("reading {src}"))),
            }
        })
    }
}

/// Collects a lazy frame, naming the inputs on failure.
pub fn collect(lf: LazyFrame, what: &str) -> Result<DataFrame> {
    lf.collect().with_context(|| format!("reading {what}"))
}
