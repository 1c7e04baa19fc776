//! The central store as a data source: a real throwaway PostgreSQL cluster holding the store's
//! `transactions` and `feedback` tables; training over a time window, labels from feedback, and
//! `export` to Parquet.

use harness::postgres::TempPostgres;

mod common;

use common::{ok, p, trainer};

/// 600 transactions, one per hour back from now (row i scored i hours ago); the legacy five as
/// double precision (whole amounts in the first rows, fractional later, as real data does);
/// feedback on every third transaction.
const SETUP: &str = "
CREATE TABLE transactions (
    id uuid PRIMARY KEY, features jsonb NOT NULL,
    amount double precision, hour double precision, day_of_week double precision,
    merchant_category double precision, transaction_type double precision,
    anomaly_score double precision NOT NULL, is_anomaly boolean NOT NULL,
    model_version text NOT NULL, scored_at timestamptz NOT NULL);
CREATE TABLE feedback (transaction_id uuid PRIMARY KEY, label boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO transactions
SELECT md5(i::text)::uuid, jsonb_build_object('amount', i),
       CASE WHEN i < 200 THEN (i % 50)::float8 ELSE 10 + (i % 37) * 1.25 END,
       (i % 24)::float8, (i % 7)::float8, (i % 10)::float8, (i % 3)::float8,
       -0.1 + (i % 5) * 0.05, i % 5 = 0, 'if1-00000000',
       now() - make_interval(hours => i)
FROM generate_series(0, 599) AS i;
INSERT INTO feedback (transaction_id, label)
SELECT md5(i::text)::uuid, i % 2 = 0 FROM generate_series(0, 599, 3) AS i;
";

#[test]
fn trains_evaluates_and_exports_a_time_window_with_feedback_labels() {
    let pg = TempPostgres::start().expect("starting PostgreSQL");
    pg.psql(SETUP).expect("creating the store tables");
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Rows scored in the last 10 days (240 hours): i in 0..=239, plus i = 240 only if the
    // query ran in the very microsecond of the setup (`now()` moves on between statements).
    let out = ok(&[
        "fit",
        "--input",
        &url,
        "--since",
        "10d",
        "--output",
        p(&d.join("m.sfm")),
        "--n-estimators",
        "20",
        "--log-format",
        "json",
    ]);
    let model = model_format::Model::from_bytes(&std::fs::read(d.join("m.sfm")).unwrap()).unwrap();
    let rows: usize = model.meta("training_rows").unwrap().parse().unwrap();
    assert!(
        (240..=241).contains(&rows),
        "{rows} rows in the window: {out}"
    );
    assert_eq!(
        model.features(),
        model_format::normalize::LEGACY_FEATURES.map(String::from)
    );

    // An explicit query and an upper bound.
    let until = pg.psql("SELECT to_char((now() - interval '99 hours 30 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')").unwrap();
    ok(&[
        "fit",
        "--input",
        &url,
        "--query",
        "SELECT * FROM transactions WHERE transaction_type = 0",
        "--until",
        &until,
        "--output",
        p(&d.join("q.sfm")),
        "--n-estimators",
        "5",
    ]);
    let q = model_format::Model::from_bytes(&std::fs::read(d.join("q.sfm")).unwrap()).unwrap();
    // i in 100..=599 with i % 3 == 0: 102, 105, …, 597 → 166 rows.
    assert_eq!(q.meta("training_rows"), Some("166"));

    // Labels from feedback: only the 200 transactions with feedback; anomalous when the
    // model's flag (i % 5 == 0) agrees with the feedback (i % 2 == 0).
    let want_pos = (0..600)
        .step_by(3)
        .filter(|i| (i % 5 == 0) == (i % 2 == 0))
        .count();
    ok(&[
        "evaluate",
        "--model",
        p(&d.join("m.sfm")),
        "--input",
        &url,
        "--labels-from-feedback",
        "--output-dir",
        p(&d.join("report")),
        "--no-plots",
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("report/report.json")).unwrap()).unwrap();
    assert_eq!(report["rows"], 200);
    assert_eq!(report["labelled"]["positives"], want_pos);

    // Export a window to Parquet and read it back.
    let parquet = d.join("export/tx.parquet");
    ok(&[
        "export",
        "--input",
        &url,
        "--until",
        "3d",
        "--output",
        p(&parquet),
    ]);
    let inputs =
        trainer::source::resolve(&[p(&parquet).to_string()], None, &Default::default()).unwrap();
    let df = trainer::source::scan(&inputs).unwrap().collect().unwrap();
    // Rows scored more than 72 hours before the query: i in 72..=599 (i = 72 drops out only
    // if the query ran in the very microsecond of the setup).
    assert!((527..=528).contains(&df.height()), "{} rows", df.height());
    let amount = df.column("amount").unwrap().f64().unwrap();
    assert!(amount.iter().all(|v| v.is_some()));
    assert!(df.column("scored_at").is_ok() && df.column("features").is_ok());

    // A bad window bound is a data error and names the flag.
    let out = trainer(&[
        "fit",
        "--input",
        &url,
        "--since",
        "last tuesday",
        "--output",
        p(&d.join("x.sfm")),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}
