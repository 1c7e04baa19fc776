//! `inspect`, `evaluate` and `fit --publish` as a scheduler runs them.

mod common;

use common::{ok, p, trainer};

#[test]
fn inspect_reports_metadata_sections_and_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&[
        "synth",
        "--output",
        p(&d.join("tx.parquet")),
        "--rows",
        "1000",
        "--seed",
        "4",
    ]);
    ok(&[
        "fit",
        "--input",
        p(&d.join("tx.parquet")),
        "--output",
        p(&d.join("m.sfm")),
        "--n-estimators",
        "20",
    ]);
    let bytes = std::fs::read(d.join("m.sfm")).unwrap();
    let model = model_format::Model::from_bytes(&bytes).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", "--json", p(&d.join("m.sfm"))])).unwrap();
    let id = model_format::ModelId::of(&bytes).unwrap();
    assert_eq!(json["version"], id.version().as_str());
    assert_eq!(
        json["checksum"],
        format!("crc32:{:08x}", id.checksum).as_str()
    );
    assert_eq!(json["file_bytes"], bytes.len());
    assert_eq!(json["trees"], 20);
    assert_eq!(json["payload_rules"], "legacy");
    assert_eq!(json["training_rows"], "1000");
    assert_eq!(json["trainer"], trainer::TRAINER_VERSION);
    assert_eq!(
        json["training_data_fingerprint"],
        format!("crc32:{}", model.meta("training_data_crc32").unwrap()).as_str()
    );
    let sections = json["sections"].as_array().unwrap();
    let tags: Vec<&str> = sections
        .iter()
        .map(|s| s["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["META", "SCHM", "NORM", "SCAL", "FRST", "SDST"]);
    // The training score distribution: deciles of the training rows' anomaly_score.
    let q: Vec<f64> = json["score_distribution"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(q.len(), trainer::SCORE_QUANTILES);
    assert!(q.windows(2).all(|w| w[0] <= w[1]), "{q:?}");
    assert_eq!(Some(&q[..]), model.score_distribution());
    // Header (24) + every section + checksum (4) = the file.
    let total: u64 = sections
        .iter()
        .map(|s| s["total_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(total + 28, bytes.len() as u64);

    let text = ok(&["inspect", p(&d.join("m.sfm"))]);
    assert!(
        text.contains(&id.version()) && text.contains("FRST"),
        "{text}"
    );

    // A corrupted file is a data error, not a description.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    std::fs::write(d.join("bad.sfm"), bad).unwrap();
    let out = trainer(&["inspect", p(&d.join("bad.sfm"))]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn evaluate_writes_reports_and_plots_consistent_with_the_scores() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&[
        "synth",
        "--output",
        p(&d.join("train.csv")),
        "--rows",
        "3000",
        "--seed",
        "1",
    ]);
    ok(&[
        "synth",
        "--output",
        p(&d.join("test.csv")),
        "--rows",
        "2000",
        "--seed",
        "2",
    ]);
    ok(&[
        "fit",
        "--input",
        p(&d.join("train.csv")),
        "--output",
        p(&d.join("m.sfm")),
        "--contamination",
        "0.05",
    ]);
    let report_dir = d.join("report");
    ok(&[
        "evaluate",
        "--model",
        p(&d.join("m.sfm")),
        "--input",
        p(&d.join("test.csv")),
        "--output-dir",
        p(&report_dir),
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();

    // Recompute from the library's scores and the file's labels.
    let model = model_format::Model::from_bytes(&std::fs::read(d.join("m.sfm")).unwrap()).unwrap();
    let table = trainer::data::read_features(&d.join("test.csv"), model.features()).unwrap();
    let labels: Vec<bool> =
        trainer::data::read_features(&d.join("test.csv"), &["label".to_string()])
            .unwrap()
            .columns[0]
            .iter()
            .map(|&v| v == 1.0)
            .collect();
    let decision: Vec<f64> = (0..table.rows())
        .map(|i| model.score(&table.row(i)).unwrap().decision)
        .collect();
    let flagged = decision.iter().filter(|&&d| d < 0.0).count();
    let tp = decision
        .iter()
        .zip(&labels)
        .filter(|(d, l)| **d < 0.0 && **l)
        .count();
    let l = &report["labelled"];
    assert_eq!(report["rows"], 2000);
    assert_eq!(report["alerts"], flagged);
    assert_eq!(l["confusion"]["tp"], tp);
    assert_eq!(l["confusion"]["fp"], flagged - tp);
    assert_eq!(l["positives"], labels.iter().filter(|&&l| l).count());
    let auc = l["roc_auc"].as_f64().unwrap();
    let ap = l["average_precision"].as_f64().unwrap();
    // The synthetic anomalies are easy: a working model separates them well.
    assert!(auc > 0.9 && ap > 0.5, "auc {auc} ap {ap}");
    assert!((l["precision"].as_f64().unwrap() - tp as f64 / flagged as f64).abs() < 1e-12);

    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(md.contains("ROC-AUC") && md.contains("roc.png"), "{md}");
    for png in ["score_histogram.png", "roc.png", "pr.png"] {
        let bytes = std::fs::read(report_dir.join(png)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 800,
            "{png}"
        );
    }

    // Without labels: distribution only, histogram only.
    let unl = d.join("unlabelled");
    ok(&[
        "evaluate",
        "--model",
        p(&d.join("m.sfm")),
        "--input",
        p(&d.join("test.csv")),
        "--label",
        "",
        "--output-dir",
        p(&unl),
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unl.join("report.json")).unwrap()).unwrap();
    assert!(report["labelled"].is_null());
    assert!(unl.join("score_histogram.png").exists() && !unl.join("roc.png").exists());
    let p50 = report["anomaly_score"]["p50"].as_f64().unwrap();
    let mut sorted = decision.clone();
    sorted.sort_by(f64::total_cmp);
    assert!((p50 - (sorted[999] + sorted[1000]) / 2.0).abs() < 1e-12);
}

#[test]
fn publish_is_idempotent_and_the_gate_refuses_worse_models() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pubdir = d.join("published");
    ok(&[
        "synth",
        "--output",
        p(&d.join("train.parquet")),
        "--rows",
        "3000",
        "--seed",
        "1",
    ]);
    ok(&[
        "synth",
        "--output",
        p(&d.join("holdout.parquet")),
        "--rows",
        "2000",
        "--seed",
        "3",
    ]);
    let (train, holdout) = (d.join("train.parquet"), d.join("holdout.parquet"));
    let fit = |extra: &[&str]| {
        let mut args = vec![
            "fit",
            "--input",
            p(&train),
            "--publish",
            p(&pubdir),
            "--gate-input",
            p(&holdout),
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        trainer(&args)
    };
    let first = fit(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let latest_path = pubdir.join("latest");
    let latest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&latest_path).unwrap()).unwrap();
    let version = latest["version"].as_str().unwrap().to_string();
    let model = std::fs::read(pubdir.join(format!("models/{version}.sfm"))).unwrap();
    assert_eq!(
        model_format::ModelId::of(&model).unwrap().version(),
        version
    );
    assert!(latest["metrics"]["average_precision"].as_f64().unwrap() > 0.5);

    // Same data and seed: nothing is rewritten (the pointer keeps its bytes and mtime).
    let before = (
        std::fs::read(&latest_path).unwrap(),
        std::fs::metadata(&latest_path).unwrap().modified().unwrap(),
    );
    let again = fit(&[]);
    assert!(again.status.success());
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("already latest"), "{stdout}");
    assert_eq!(
        before,
        (
            std::fs::read(&latest_path).unwrap(),
            std::fs::metadata(&latest_path).unwrap().modified().unwrap()
        )
    );

    // A crippled model (2 trees on 16 samples) must be refused with exit code 4.
    let worse = fit(&[
        "--n-estimators",
        "2",
        "--max-samples",
        "16",
        "--seed",
        "9",
        "--gate-tolerance",
        "0",
    ]);
    let err = String::from_utf8_lossy(&worse.stderr);
    assert_eq!(worse.status.code(), Some(4), "{err}");
    assert!(err.contains("quality gate refused"), "{err}");
    assert_eq!(
        before.0,
        std::fs::read(&latest_path).unwrap(),
        "a refused model must not move latest"
    );
    assert_eq!(std::fs::read_dir(pubdir.join("models")).unwrap().count(), 1);

    // Dry run of a different model: reports, writes nothing.
    let dry = fit(&["--seed", "5", "--dry-run", "--gate-tolerance", "1"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dry run"));
    assert_eq!(std::fs::read_dir(pubdir.join("models")).unwrap().count(), 1);
    assert_eq!(before.0, std::fs::read(&latest_path).unwrap());

    // A usage error is exit code 2.
    assert_eq!(trainer(&["fit", "--bogus"]).status.code(), Some(2));
}

/// Exit codes follow the failure's kind, and `--log-format json` holds for every subcommand.
#[test]
fn exit_codes_by_kind_and_json_logs_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data_path = d.join("tx.csv");
    let data = p(&data_path);
    let out = trainer(&[
        "--log-format",
        "json",
        "synth",
        "--output",
        data,
        "--rows",
        "300",
        "--seed",
        "5",
    ]);
    assert!(out.status.success());
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(line["event"], "synthesized");
    assert_eq!(line["rows"], 300);
    // Parameters that cannot work: a usage error (2), not a data error.
    let model_path = d.join("m.sfm");
    let model = p(&model_path);
    let bad = trainer(&[
        "--log-format",
        "json",
        "fit",
        "--input",
        data,
        "--output",
        model,
        "--n-estimators",
        "0",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let err: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&bad.stderr).trim()).unwrap();
    assert_eq!(err["exit_code"], 2);
    assert!(
        err["message"].as_str().unwrap().contains("n_estimators"),
        "{err}"
    );
    // A good fit, then score with JSON logs.
    assert!(
        trainer(&["fit", "--input", data, "--output", model])
            .status
            .success()
    );
    let scores_path = d.join("s.parquet");
    let scores = p(&scores_path);
    let out = trainer(&[
        "--log-format",
        "json",
        "score",
        "--model",
        model,
        "--input",
        data,
        "--output",
        scores,
    ]);
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(
        (line["event"].as_str(), line["rows"].as_u64()),
        (Some("scored"), Some(300))
    );
    // A missing input is a data error (3).
    let missing = trainer(&[
        "score",
        "--model",
        model,
        "--input",
        "/nonexistent.csv",
        "--output",
        scores,
    ]);
    assert_eq!(missing.status.code(), Some(3));
}
