//! The `trainer` binary as operators run it.

use std::path::Path;

mod common;

use common::{ok, p, trainer};

#[test]
fn same_data_and_seed_give_the_same_model_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["csv", "parquet"] {
        let data = dir.path().join(format!("tx.{ext}"));
        ok(&[
            "synth",
            "--output",
            p(&data),
            "--rows",
            "3000",
            "--seed",
            "5",
        ]);
        let fit = |out: &Path, seed: &str| {
            ok(&[
                "fit",
                "--input",
                p(&data),
                "--output",
                p(out),
                "--contamination",
                "0.1",
                "--seed",
                seed,
            ])
        };
        let (a, b, c) = (
            dir.path().join("a.sfm"),
            dir.path().join("b.sfm"),
            dir.path().join("c.sfm"),
        );
        let summary = fit(&a, "1");
        assert!(
            summary.contains("3000 rows") && summary.contains("100 trees"),
            "{summary}"
        );
        fit(&b, "1");
        fit(&c, "2");
        let (a, b, c) = (
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            std::fs::read(c).unwrap(),
        );
        assert_eq!(a, b, "same seed, different bytes ({ext})");
        assert_ne!(a, c, "different seeds, same bytes ({ext})");
        let model = model_format::Model::from_bytes(&a).unwrap();
        assert_eq!(model.features().len(), 5);
        assert_eq!(model.forest().max_samples(), 256);
        assert_eq!(model.meta("seed"), Some("1"));
        assert!(model.forest().offset() < 0.0 && model.forest().offset() > -1.0);
    }
}

#[test]
fn synth_is_reproducible_from_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    ok(&["synth", "--output", p(&a), "--rows", "500", "--seed", "9"]);
    ok(&["synth", "--output", p(&b), "--rows", "500", "--seed", "9"]);
    let text = std::fs::read_to_string(&a).unwrap();
    assert_eq!(text, std::fs::read_to_string(&b).unwrap());
    assert!(text.starts_with("amount,hour,day_of_week,merchant_category,transaction_type,label\n"));
    let anomalies = text.lines().skip(1).filter(|l| l.ends_with(",1")).count();
    assert!(
        (5..=60).contains(&anomalies),
        "{anomalies} anomalies in 500 rows at rate 0.05"
    );
}

/// Runs `fit` on a CSV with these contents; expects failure and returns stderr.
fn fit_fails(dir: &Path, csv: &str, extra: &[&str]) -> String {
    let data = dir.join("tx.csv");
    let model = dir.join("m.sfm");
    std::fs::write(&data, csv).unwrap();
    let mut args = vec!["fit", "--input", p(&data), "--output", p(&model)];
    args.extend_from_slice(extra);
    let out = trainer(&args);
    assert!(!out.status.success(), "fit {extra:?} on {csv:?} succeeded");
    assert!(
        !model.exists(),
        "a failed fit must not leave a model behind"
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let two = ["--features", "amount,hour"];

    let err = fit_fails(dir, "amount,hour\n1.0,2\n", &[]);
    assert!(err.contains("day_of_week"), "{err}");

    let err = fit_fails(dir, "amount,hour\n1.0,2\nNaN,3\n", &two);
    assert!(err.contains("amount") && err.contains("finite"), "{err}");

    let err = fit_fails(dir, "amount,hour\n1.0,2\nabc,3\n", &two);
    assert!(err.contains("amount") || err.contains("abc"), "{err}");

    let err = fit_fails(
        dir,
        "amount,hour\n1.0,2\n3.0,4\n",
        &["--features", "amount,hour", "--contamination", "0.9"],
    );
    assert!(err.contains("contamination"), "{err}");

    let err = fit_fails(dir, "amount,hour\n", &two);
    assert!(err.contains("no rows"), "{err}");

    let out = trainer(&[
        "fit",
        "--input",
        p(&dir.join("missing.parquet")),
        "--output",
        p(&dir.join("x.sfm")),
    ]);
    assert!(!out.status.success());
}

#[test]
fn score_writes_every_row_in_order_with_exact_floats() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (data, model_path) = (d.join("tx.csv"), d.join("m.sfm"));
    ok(&[
        "synth",
        "--output",
        p(&data),
        "--rows",
        "700",
        "--seed",
        "3",
    ]);
    ok(&[
        "fit",
        "--input",
        p(&data),
        "--output",
        p(&model_path),
        "--contamination",
        "0.1",
    ]);
    let model = model_format::Model::from_bytes(&std::fs::read(&model_path).unwrap()).unwrap();

    // Same columns under other names, selected with --features.
    let text = std::fs::read_to_string(&data).unwrap();
    let renamed = d.join("renamed.csv");
    std::fs::write(&renamed, text.replacen("amount,hour", "amt,hr", 1)).unwrap();
    let scores = d.join("scores.csv");
    let summary = ok(&[
        "score",
        "--model",
        p(&model_path),
        "--input",
        p(&renamed),
        "--output",
        p(&scores),
        "--features",
        "amt,hr,day_of_week,merchant_category,transaction_type",
    ]);
    assert!(summary.contains("700 rows scored"), "{summary}");

    let out = std::fs::read_to_string(&scores).unwrap();
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("score_samples,anomaly_score,risk_score,is_anomaly,mean_path_length")
    );
    let table = trainer::data::read_features(&data, model.features()).unwrap();
    let mut n = 0;
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let want = model.score(&table.row(i)).unwrap();
        // Parsing the CSV text gives back the exact bits.
        assert_eq!(
            f[0].parse::<f64>().unwrap().to_bits(),
            want.score_samples.to_bits()
        );
        assert_eq!(
            f[1].parse::<f64>().unwrap().to_bits(),
            want.decision.to_bits()
        );
        assert_eq!(f[2].parse::<f64>().unwrap(), want.risk());
        assert_eq!(f[3], if want.is_anomaly() { "true" } else { "false" });
        assert_eq!(f[4].parse::<f64>().unwrap(), want.mean_path_length);
        n += 1;
    }
    assert_eq!(n, 700);

    // Default columns are the model's own names; a missing one is named in the error.
    let out = trainer(&[
        "score",
        "--model",
        p(&model_path),
        "--input",
        p(&renamed),
        "--output",
        p(&d.join("x.parquet")),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("amount"));
}

#[test]
fn score_explain_writes_attributions_that_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (data, model_path) = (d.join("tx.parquet"), d.join("m.sfm"));
    ok(&[
        "synth",
        "--output",
        p(&data),
        "--rows",
        "600",
        "--seed",
        "4",
    ]);
    ok(&[
        "fit",
        "--input",
        p(&data),
        "--output",
        p(&model_path),
        "--seed",
        "7",
    ]);
    let model = model_format::Model::from_bytes(&std::fs::read(&model_path).unwrap()).unwrap();
    let table = trainer::data::read_features(&data, model.features()).unwrap();

    for ext in ["csv", "parquet"] {
        let scores = d.join(format!("explained.{ext}"));
        let summary = ok(&[
            "score",
            "--model",
            p(&model_path),
            "--input",
            p(&data),
            "--output",
            p(&scores),
            "--explain",
        ]);
        assert!(summary.contains("600 rows scored"), "{summary}");

        let phi_names: Vec<String> = model
            .features()
            .iter()
            .map(|f| format!("phi_{f}"))
            .collect();
        let mut all = vec!["mean_path_length".to_string(), "expected_value".to_string()];
        all.extend(phi_names.iter().cloned());
        let got = trainer::data::read_features(&scores, &all).unwrap();
        assert_eq!(got.rows(), 600);
        let mut phi = vec![0.0; model.features().len()];
        for i in 0..got.rows() {
            let (mpl, ev) = (got.columns[0][i], got.columns[1][i]);
            let sum: f64 = got.columns[2..].iter().map(|c| c[i]).sum();
            assert!(
                (sum + ev - mpl).abs() <= 1e-9,
                "{ext} row {i}: Σφ {sum} + expected_value {ev} != mean_path_length {mpl}"
            );
            // Exact floats, in row order.
            let want = model.explain(&table.row(i), &mut phi).unwrap();
            assert_eq!(ev.to_bits(), want.expected_value.to_bits());
            assert_eq!(mpl.to_bits(), want.mean_path_length().to_bits());
            for (c, v) in got.columns[2..].iter().zip(&phi) {
                assert_eq!(c[i].to_bits(), v.to_bits(), "{ext} row {i}");
            }
        }
    }

    // Without --explain there are no explanation columns.
    let plain = d.join("plain.csv");
    ok(&[
        "score",
        "--model",
        p(&model_path),
        "--input",
        p(&data),
        "--output",
        p(&plain),
    ]);
    let header = std::fs::read_to_string(&plain).unwrap();
    assert!(!header.lines().next().unwrap().contains("phi_"));
}
