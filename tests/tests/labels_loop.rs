//! The loop that lets the supervised model learn from the product's own labels, through real
//! parts: predictions through the edge (the real component in the harness) → the store
//! (throwaway PostgreSQL) → analysts' feedback through the edge → the store's labelled rows →
//! `fit` with the supervised model → the registry → the same running edge answers with
//! `fraud_probability`, bit for bit the trainer's.

mod common;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use common::{STORE_TOKEN as TOKEN, StoreService};
use serde_json::{Value, json};

static BUILT: LazyLock<common::Built> = LazyLock::new(|| common::fit_and_build(2_000, 11, 50));

fn post(url: &str, body: &Value) -> (u16, Value) {
    let mut r = common::agent()
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send(body.to_string())
        .unwrap();
    (
        r.status().as_u16(),
        r.body_mut().read_json().unwrap_or(Value::Null),
    )
}

#[test]
fn feedback_labels_train_a_supervised_model_the_running_edge_then_serves() {
    let pg = harness::postgres::TempPostgres::start().unwrap();
    let store = StoreService::start(&pg.url());
    let store_url = store.url();
    let kv = tempfile::tempdir().unwrap();
    let mut config = harness::HarnessConfig::new(&BUILT.component);
    config.variables = vec![
        ("store_url".into(), store_url.clone()),
        ("store_token".into(), TOKEN.into()),
        ("model_refresh_secs".into(), "1".into()),
    ];
    config.key_value_stores = vec!["default".into()];
    config.key_value_dir = Some(kv.path().to_path_buf());
    let edge = harness::start_edge(config).unwrap();
    let predict = format!("{}/api/predict?explain=false", edge.url());

    // Traffic whose truth we know (trainer synth: 10 % anomalous, labelled), through the edge.
    let dir = tempfile::tempdir().unwrap();
    let traffic = dir.path().join("traffic.csv");
    let mut df = trainer::synth::transactions(1_500, 0.1, 21).unwrap();
    trainer::data::write_frame(&traffic, &mut df).unwrap();
    let features = trainer::synth::LEGACY_FEATURES;
    let spec = trainer::spec::FeatureSpec {
        features: Some(features.map(String::from).to_vec()),
        label: Some("label".into()),
        ..Default::default()
    };
    let sent = trainer::spec::load_file(&traffic, &spec, true).unwrap();
    let columns = &sent.table.columns;
    let truth = sent.labels.clone().unwrap();
    let mut answered = Vec::new();
    for (i, &fraud) in truth.iter().enumerate() {
        let mut payload = serde_json::Map::new();
        for (f, c) in features.iter().zip(columns) {
            payload.insert((*f).into(), json!(c[i]));
        }
        let (status, a) = post(&predict, &Value::Object(payload));
        assert_eq!(status, 200, "{a}");
        assert!(
            a.get("fraud_probability").is_none(),
            "the forest alone: {a}"
        );
        answered.push((
            a["transaction_uuid"].as_str().unwrap().to_string(),
            a,
            fraud,
        ));
    }
    // Analysts' verdicts through the edge, in the legacy meaning: "the model was right".
    let feedback = format!("{}/api/feedback", edge.url());
    for (id, a, fraud) in &answered {
        let right = a["is_anomaly"].as_bool().unwrap() == *fraud;
        let (status, body) = post(&feedback, &json!({"transaction_id": id, "feedback": right}));
        assert_eq!(status, 202, "{body}");
    }
    let n = answered.len() as u64;
    for table in ["transactions", "feedback"] {
        let got = common::wait_for_count(n, Duration::from_secs(120), || {
            common::count(&pg, &format!("select count(*) from {table}"))
        });
        assert_eq!(got, n, "{table}");
    }

    // Train from the store: its rows with their feedback as labels, as `trainer fit --input
    // postgres://… --labels-from-feedback --supervised` reads them.
    let options = trainer::source::StoreOptions {
        postgres: trainer::pg::PgOptions {
            labels_from_feedback: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let inputs = trainer::source::resolve(&[pg.url()], None, &options).unwrap();
    let data = trainer::spec::load_file(&inputs.files[0].local, &spec, true).unwrap();
    let labels = data.labels.clone().unwrap();
    assert_eq!(labels.len(), answered.len());
    // The store's label is the truth: fraud = the verdict agrees with the feedback.
    assert_eq!(
        labels.iter().filter(|&&l| l).count(),
        truth.iter().filter(|&&l| l).count()
    );
    let forest = trainer::fit(
        &data.table,
        &trainer::forest::IsolationForestParams {
            n_estimators: 50,
            seed: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let params = trainer::supervised::SupervisedParams {
        min_positives: 20,
        ..Default::default()
    };
    let (model, report) = trainer::supervised::fit(forest, &data.table, &labels, &params).unwrap();
    assert!(report.fitted, "{}", report.to_text());
    common::report(format!("labels loop: {}", report.to_text()));
    let bytes = model.to_bytes().unwrap();
    let version = model_format::ModelId::of(&bytes).unwrap().version();

    // Publish and promote: the running edge picks it up and answers with its probability.
    let mut r = common::agent()
        .post(&format!("{store_url}/v1/models"))
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send(&bytes[..])
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
    let mut r = common::agent()
        .put(&format!("{store_url}/v1/models/channels/live"))
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send_json(json!({"version": version}))
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
    let payload = json!({"amount": 4800.0, "hour": 3, "day_of_week": 6, "merchant_category": 9,
                         "transaction_type": 2});
    let started = Instant::now();
    let answer = loop {
        let (status, a) = post(&predict, &payload);
        assert_eq!(status, 200, "{a}");
        if a["model_version"] == version.as_str() {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the edge still answers with {}",
            a["model_version"]
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let row = [4800.0, 3.0, 6.0, 9.0, 2.0];
    let (_, fraud) = model.score_fraud(&row).unwrap();
    let want = fraud.unwrap().probability;
    assert_eq!(
        answer["fraud_probability"].as_f64().map(f64::to_bits),
        Some(want.to_bits()),
        "{answer}"
    );
    common::report(format!(
        "labels loop: {} predictions and feedback through the edge → store → fit → registry; \
         the edge served {version} after {:.1?}: fraud_probability {want:.4} on a 3 a.m. \
         transfer of 4,800 ({})",
        answered.len(),
        started.elapsed(),
        answer["decision"]
    ));
}
