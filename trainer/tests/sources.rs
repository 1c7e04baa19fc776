//! Inputs as operators give them: globs, several files, NDJSON, `file://`, object storage (a real
//! S3-compatible server, `s3s-fs`), raw legacy fields, and the ADBench layout.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn trainer(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running trainer")
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = trainer(args, env);
    assert!(
        out.status.success(),
        "trainer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn synth(path: &Path, rows: &str, seed: &str) {
    ok(
        &["synth", "--output", p(path), "--rows", rows, "--seed", seed],
        &[],
    );
}

fn fit(inputs: &[String], out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
    let mut args = vec!["fit".to_string()];
    for i in inputs {
        args.push("--input".into());
        args.push(i.clone());
    }
    args.extend([
        "--output".to_string(),
        p(out).to_string(),
        "--seed".into(),
        "7".into(),
    ]);
    args.extend(extra.iter().map(std::string::ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args, env);
    std::fs::read(out).unwrap()
}

#[test]
fn globs_urls_formats_and_repeated_inputs_read_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("parts")).unwrap();
    synth(&d.join("parts/a.parquet"), "800", "1");
    synth(&d.join("parts/b.parquet"), "700", "2");
    synth(&d.join("a.csv"), "800", "1");
    synth(&d.join("b.csv"), "700", "2");

    let both = fit(
        &[
            p(&d.join("parts/a.parquet")).into(),
            p(&d.join("parts/b.parquet")).into(),
        ],
        &d.join("m1.sfm"),
        &[],
        &[],
    );
    let globbed = fit(
        &[format!("{}/parts/*.parquet", p(d))],
        &d.join("m2.sfm"),
        &[],
        &[],
    );
    let url = fit(
        &[
            format!("file://{}/parts/a.parquet", p(d)),
            p(&d.join("b.csv")).into(),
        ],
        &d.join("m3.sfm"),
        &[],
        &[],
    );
    assert_eq!(
        both, globbed,
        "a glob must read the files a list names, in name order"
    );
    assert_eq!(
        both, url,
        "file:// and CSV must read the same values as Parquet"
    );
    let model = model_format::Model::from_bytes(&both).unwrap();
    assert_eq!(model.meta("training_rows"), Some("1500"));

    // NDJSON with the same values.
    let df = trainer::synth::transactions(300, 0.05, 9).unwrap();
    let mut lines = String::new();
    let cols: Vec<_> = df.columns().iter().map(|c| c.name().to_string()).collect();
    for i in 0..df.height() {
        let obj: serde_json::Map<String, serde_json::Value> = cols
            .iter()
            .map(|c| {
                let v = df.column(c).unwrap().get(i).unwrap();
                let v: f64 = v.extract().unwrap();
                (c.clone(), serde_json::json!(v))
            })
            .collect();
        lines.push_str(&serde_json::Value::Object(obj).to_string());
        lines.push('\n');
    }
    std::fs::write(d.join("c.ndjson"), lines).unwrap();
    synth(&d.join("c.csv"), "300", "9");
    let from_json = fit(&[p(&d.join("c.ndjson")).into()], &d.join("j.sfm"), &[], &[]);
    let from_csv = fit(&[p(&d.join("c.csv")).into()], &d.join("c.sfm"), &[], &[]);
    assert_eq!(from_json, from_csv);

    // A glob matching nothing is an error (exit 3), not an empty training set.
    let out = trainer(
        &[
            "fit",
            "--input",
            &format!("{}/none/*.parquet", p(d)),
            "--output",
            p(&d.join("x.sfm")),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches no files"));
}

#[test]
fn legacy_features_are_derived_from_raw_fields_like_the_edge_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = "amount,timestamp,merchant,type,label\n\
               12.5,2024-01-15T14:30:00Z,Grocery ,purchase,0\n\
               900,2024-01-20 03:05:00,Casino,transfer,1\n\
               40,2024-01-16T09:00:00,grocery,withdrawal,0\n\
               7.25,2024-01-17T22:10:00+02:00,Books,refund,0\n";
    std::fs::write(d.join("raw.csv"), csv).unwrap();
    let spec = trainer::spec::FeatureSpec::default();
    let inputs = trainer::source::resolve(
        &[p(&d.join("raw.csv")).to_string()],
        None,
        &Default::default(),
    )
    .unwrap();
    let lf = trainer::source::scan(&inputs).unwrap();
    let schema = lf.clone().collect_schema().unwrap();
    let plan = trainer::spec::Plan::resolve(&spec, &schema, false).unwrap();
    assert_eq!(
        plan.features,
        model_format::normalize::LEGACY_FEATURES.map(String::from)
    );
    let ds = trainer::spec::load(lf, &plan, "raw.csv").unwrap();
    let code = |s: &str| f64::from(model_format::normalize::category_code(s, 0, 10));
    assert_eq!(ds.table.columns[0], vec![12.5, 900.0, 40.0, 7.25]);
    assert_eq!(
        ds.table.columns[1],
        vec![14.0, 3.0, 9.0, 22.0],
        "hour as written"
    );
    // 2024-01-15 was a Monday.
    assert_eq!(ds.table.columns[2], vec![0.0, 5.0, 1.0, 2.0]);
    assert_eq!(
        ds.table.columns[3],
        vec![
            code("grocery"),
            code("casino"),
            code("grocery"),
            code("books")
        ]
    );
    let refund = f64::from(model_format::normalize::category_code("refund", 0, 3));
    assert_eq!(ds.table.columns[4], vec![0.0, 2.0, 1.0, refund]);
    assert_eq!(ds.labels, Some(vec![false, true, false, false]));

    // A bad timestamp names the row and the field.
    std::fs::write(
        d.join("bad.csv"),
        "amount,timestamp,merchant\n1,2024-01-15T10:00:00,a\n2,yesterday,b\n",
    )
    .unwrap();
    let out = trainer(
        &[
            "fit",
            "--input",
            p(&d.join("bad.csv")),
            "--output",
            p(&d.join("b.sfm")),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("row 1") && err.contains("timestamp"), "{err}");
}

#[test]
fn adbench_files_train_on_every_numeric_column_but_the_label() {
    let path = harness::repo_root().join("../shared/data/adbench/cardio.parquet");
    assert!(path.exists(), "{} is missing", path.display());
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("cardio.sfm");
    let bytes = fit(&[p(&path).into()], &model, &["--ignore", "f20"], &[]);
    let model = model_format::Model::from_bytes(&bytes).unwrap();
    let want: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    assert_eq!(model.features(), want.as_slice());
    assert_eq!(model.meta("training_rows"), Some("1831"));
}

/// Finds `s3s-fs`: `SFE_S3S_FS`, then PATH, then ~/.cargo/bin.
fn s3s_fs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SFE_S3S_FS") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home)
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn s3_inputs_and_publishing_work_against_a_real_s3_server() {
    let Some(bin) = s3s_fs() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "s3s-fs is required in CI: cargo install s3s-fs --version 0.14.1 --locked --features binary"
        );
        eprintln!(
            "\n!!! SKIPPED: s3s-fs not installed (cargo install s3s-fs --version 0.14.1 --locked --features binary) !!!\n"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("s3");
    std::fs::create_dir_all(root.join("bucket/exports/2026")).unwrap();
    synth(&root.join("bucket/exports/2026/day1.parquet"), "900", "11");
    synth(&root.join("bucket/exports/2026/day2.parquet"), "600", "12");
    std::fs::write(root.join("bucket/exports/2026/notes.txt"), "not data").unwrap();

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "AKTEST", "--secret-key", "SKTEST", p(&root)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting s3s-fs"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKTEST"),
        ("AWS_SECRET_ACCESS_KEY", "SKTEST"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];

    let from_s3 = fit(
        &["s3://bucket/exports/*/day*.parquet".into()],
        &d.join("s3.sfm"),
        &[],
        &env,
    );
    let local = fit(
        &[
            p(&root.join("bucket/exports/2026/day1.parquet")).into(),
            p(&root.join("bucket/exports/2026/day2.parquet")).into(),
        ],
        &d.join("local.sfm"),
        &[],
        &[],
    );
    assert_eq!(
        from_s3, local,
        "S3 objects must train the same model as the local files"
    );

    // Endpoint given by flags instead of the environment.
    let flags_env = [
        ("AWS_ACCESS_KEY_ID", "AKTEST"),
        ("AWS_SECRET_ACCESS_KEY", "SKTEST"),
    ];
    let by_flags = fit(
        &[
            "s3://bucket/exports/2026/day1.parquet".into(),
            "s3://bucket/exports/2026/day2.parquet".into(),
        ],
        &d.join("flags.sfm"),
        &[
            "--s3-endpoint",
            &endpoint,
            "--s3-region",
            "us-east-1",
            "--s3-allow-http",
        ],
        &flags_env,
    );
    assert_eq!(by_flags, local);

    // Publishing to the bucket: model and pointer land as objects.
    let out = ok(
        &[
            "fit",
            "--input",
            "s3://bucket/exports/2026/*.parquet",
            "--seed",
            "7",
            "--publish",
            "s3://bucket/models-prod",
            "--log-format",
            "json",
        ],
        &env,
    );
    let version = model_format::ModelId::of(&local).unwrap().version();
    let stored =
        std::fs::read(root.join(format!("bucket/models-prod/models/{version}.sfm"))).unwrap();
    assert_eq!(stored, local);
    let latest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("bucket/models-prod/latest")).unwrap())
            .unwrap();
    assert_eq!(latest["version"], version.as_str(), "{out}");

    // Wrong credentials fail as a data error with the store's message.
    let bad = [
        ("AWS_ACCESS_KEY_ID", "AKTEST"),
        ("AWS_SECRET_ACCESS_KEY", "wrong"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let out = trainer(
        &[
            "fit",
            "--input",
            "s3://bucket/exports/2026/day1.parquet",
            "--output",
            p(&d.join("x.sfm")),
        ],
        &bad,
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
