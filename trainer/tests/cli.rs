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

/// `score --shard i/n` over several files: every file is scored by exactly one shard, and the
/// shards' outputs together are the unsharded output, byte for byte (so row for row).
#[test]
fn sharded_scoring_unions_to_the_unsharded_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inputs = d.join("in");
    std::fs::create_dir(&inputs).unwrap();
    // Five daily exports of different sizes, Parquet and CSV mixed.
    for (day, rows) in [(1, 400), (2, 250), (3, 600), (4, 90), (5, 333)] {
        let ext = if day % 2 == 0 { "csv" } else { "parquet" };
        let file = inputs.join(format!("2026-11-0{day}.{ext}"));
        ok(&[
            "synth",
            "--output",
            p(&file),
            "--rows",
            &rows.to_string(),
            "--seed",
            &day.to_string(),
        ]);
    }
    let model = "../data/model.sfm";
    let glob = format!("{}/*", inputs.display());
    let all = d.join("all");
    let sharded = d.join("sharded");
    // `score` over all inputs into `output`, with `--shard` when given.
    let score = |output: &Path, shard: Option<&str>| {
        let mut args = vec![
            "score",
            "--model",
            model,
            "--input",
            &glob,
            "--output",
            p(output),
        ];
        args.extend(shard.iter().flat_map(|s| ["--shard", s]));
        trainer(&args)
    };
    let out = score(&all, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8(out.stdout).unwrap();
    assert!(
        summary.contains("shard 0/1: 5 of 5 input files") && summary.contains("1673 rows"),
        "{summary}"
    );
    let mut per_shard = Vec::new();
    for i in 0..3 {
        let out = score(&sharded, Some(&format!("{i}/3")));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        per_shard.push(String::from_utf8(out.stdout).unwrap());
    }
    assert!(
        per_shard[0].contains("shard 0/3: 2 of 5"),
        "{}",
        per_shard[0]
    );
    assert!(
        per_shard[2].contains("shard 2/3: 1 of 5"),
        "{}",
        per_shard[2]
    );
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let names = listing(&all);
    assert_eq!(
        names,
        (1..=5)
            .map(|day| format!("2026-11-0{day}.scores.parquet"))
            .collect::<Vec<_>>()
    );
    assert_eq!(listing(&sharded), names);
    let score_columns: Vec<String> = trainer::score::COLUMNS
        .iter()
        .filter(|c| **c != "is_anomaly")
        .map(ToString::to_string)
        .collect();
    for name in &names {
        let (a, b) = (all.join(name), sharded.join(name));
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{name}"
        );
        // And the files hold the scores of their own input, row for row.
        let scores = trainer::data::read_features(&a, &score_columns).unwrap();
        let stem = name.trim_end_matches(".scores.parquet");
        let input = std::fs::read_dir(&inputs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|path| path.file_stem().unwrap().to_str() == Some(stem))
            .unwrap();
        let m = model_format::Model::from_bytes(&std::fs::read(model).unwrap()).unwrap();
        let table = trainer::data::read_features(&input, m.features()).unwrap();
        assert_eq!(scores.rows(), table.rows(), "{name}");
        for i in [0, table.rows() / 2, table.rows() - 1] {
            let want = m.score(&table.row(i)).unwrap();
            assert_eq!(
                scores.row(i)[0].to_bits(),
                want.score_samples.to_bits(),
                "{name} row {i}"
            );
        }
    }

    // Shard specs that cannot work, and a file output with several inputs, are usage errors.
    for bad in ["3/3", "0/0", "1", "a/b"] {
        let out = score(&sharded, Some(bad));
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("shard"),
            "{bad}"
        );
    }
    let out = score(&d.join("one.parquet"), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give --output a directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
