//! The loop that lets the supervised model learn from the product's own labels, through real
//! parts: predictions through the edge (the real component in the harness) → the store
//! (throwaway PostgreSQL) → analysts' feedback through the edge on some of them → the store's
//! labelled rows, with velocity features recomputed over every stored transaction → `fit`
//! with the supervised model → the registry → the same running edge answers with
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
    // The model it learns carries velocity features: the edge keeps their state.
    config.key_value_stores = vec!["default".into(), "velocity".into()];
    config.memory_key_value_stores = vec!["velocity".into()];
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
    // Each transaction also names a card and its own time (11 s apart), and the same rows go
    // to a file: what the trainer would have computed had it seen the traffic itself.
    let card = |i: usize| format!("card-{}", (i * 7919) % 53);
    let time = |i: usize| {
        let at =
            std::time::UNIX_EPOCH + Duration::from_millis(1_796_000_000_000 + 11_000 * i as u64);
        humantime::format_rfc3339_millis(at).to_string()
    };
    let history = dir.path().join("history.csv");
    let mut text = format!("{},card_id,timestamp,label\n", features.join(","));
    for (i, &fraud) in truth.iter().enumerate() {
        for c in columns {
            text.push_str(&format!("{},", c[i]));
        }
        text.push_str(&format!("{},{},{}\n", card(i), time(i), u8::from(fraud)));
    }
    std::fs::write(&history, text).unwrap();
    let mut answered = Vec::new();
    for (i, &fraud) in truth.iter().enumerate() {
        let mut payload = serde_json::Map::new();
        for (f, c) in features.iter().zip(columns) {
            payload.insert((*f).into(), json!(c[i]));
        }
        payload.insert("card_id".into(), json!(card(i)));
        payload.insert("timestamp".into(), json!(time(i)));
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
    // Analysts' verdicts through the edge, in the legacy meaning: "the model was right", on
    // two transactions in three (the others stay unlabelled, as most traffic does).
    let feedback = format!("{}/api/feedback", edge.url());
    let labelled = |i: usize| i % 3 != 2;
    for (i, (id, a, fraud)) in answered.iter().enumerate() {
        if !labelled(i) {
            continue;
        }
        let right = a["is_anomaly"].as_bool().unwrap() == *fraud;
        let (status, body) = post(&feedback, &json!({"transaction_id": id, "feedback": right}));
        assert_eq!(status, 202, "{body}");
    }
    let n = answered.len() as u64;
    let n_labelled = (0..answered.len()).filter(|&i| labelled(i)).count();
    for (table, want) in [("transactions", n), ("feedback", n_labelled as u64)] {
        let got = common::wait_for_count(want, Duration::from_secs(120), || {
            common::count(&pg, &format!("select count(*) from {table}"))
        });
        assert_eq!(got, want, "{table}");
    }
    assert_eq!(
        common::count(
            &pg,
            "select count(*) from transactions where transaction_time is not null"
        ),
        n,
        "the edge forwards each payload's own time"
    );

    // Train from the store as `trainer fit --input postgres://… --labels-from-feedback
    // --supervised` with velocity features reads it: the labelled rows, their features
    // recomputed over every stored transaction in arrival order.
    let velocity_spec = trainer::spec::FeatureSpec {
        velocity: [
            ("card_count_1h", "count by card_id over 1h"),
            (
                "card_amount_ratio_1d",
                "log(amount / mean(amount)) by card_id over 1d",
            ),
        ]
        .map(|(name, definition)| trainer::spec::VelocityDecl {
            name: name.into(),
            definition: definition.into(),
        })
        .to_vec(),
        ..spec.clone()
    };
    let velocity = velocity_spec.velocity_spec().unwrap();
    let options = trainer::source::StoreOptions {
        postgres: trainer::pg::PgOptions {
            labels_from_feedback: true,
            velocity_history: Some("timestamp".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let inputs = trainer::source::resolve(&[pg.url()], None, &options).unwrap();
    let data = trainer::spec::load_file(&inputs.files[0].local, &velocity_spec, true).unwrap();
    let labels = data.labels.clone().unwrap();
    assert_eq!(labels.len(), n_labelled);
    assert_eq!(data.history_rows, answered.len() - n_labelled);
    // The store's label is the truth: fraud = the verdict agrees with the feedback.
    let labelled_truth: Vec<bool> = (0..truth.len())
        .filter(|&i| labelled(i))
        .map(|i| truth[i])
        .collect();
    assert_eq!(labels, labelled_truth);
    // Velocity from the store = velocity over the traffic itself, bit for bit, unlabelled
    // transactions counted.
    let reference = trainer::spec::load_file(&history, &velocity_spec, true).unwrap();
    for f in 5..7 {
        let want: Vec<u64> = (0..truth.len())
            .filter(|&i| labelled(i))
            .map(|i| reference.table.columns[f][i].to_bits())
            .collect();
        let got: Vec<u64> = data.table.columns[f].iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{}", data.table.names[f]);
    }
    let busiest = data.table.columns[5].iter().copied().fold(0.0, f64::max);
    assert!(busiest >= 3.0, "cards repeat within the hour: {busiest}");
    let forest = trainer::fit_with_velocity(
        &data.table,
        &trainer::forest::IsolationForestParams {
            n_estimators: 50,
            seed: 3,
            ..Default::default()
        },
        velocity.as_ref(),
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
    // A card the edge has not seen: its velocity features are the no-history values.
    let payload = json!({"amount": 4800.0, "hour": 3, "day_of_week": 6, "merchant_category": 9,
                         "transaction_type": 2, "card_id": "a-new-card"});
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
    let mut fresh = [0.0; 2];
    velocity.as_ref().unwrap().no_history(&mut fresh);
    let row = [4800.0, 3.0, 6.0, 9.0, 2.0, fresh[0], fresh[1]];
    let (_, fraud) = model.score_fraud(&row).unwrap();
    let want = fraud.unwrap().probability;
    assert_eq!(
        answer["fraud_probability"].as_f64().map(f64::to_bits),
        Some(want.to_bits()),
        "{answer}"
    );
    common::report(format!(
        "labels loop: {} predictions ({n_labelled} with feedback) through the edge → store → \
         fit with velocity recomputed over all of them → registry; the edge served {version} \
         after {:.1?}: fraud_probability {want:.4} on a 3 a.m. transfer of 4,800 ({})",
        answered.len(),
        started.elapsed(),
        answer["decision"]
    ));
}
