//! Velocity features through real parts: a seeded stream of card transactions (several cards
//! interleaved, late arrivals) replayed through the worker component in the harness, its events
//! stored by the store in a throwaway PostgreSQL, and the velocity values the edge used compared
//! row by row with the trainer's over the same stream.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{STORE_TOKEN as TOKEN, StoreService};
use serde_json::{Map, Value};
use trainer::forest::{Contamination, IsolationForestParams, MaxSamples};
use trainer::spec::{FeatureSpec, VelocityDecl};

/// The velocity features of the test model (and of docs/trainer.md's example).
const VELOCITY: [(&str, &str); 8] = [
    ("card_count_10m", "count by card_id over 10m"),
    ("card_count_1h", "count by card_id over 1h"),
    ("card_seconds_since_last", "seconds_since_last by card_id"),
    (
        "card_log_seconds_since_last",
        "log(seconds_since_last) by card_id",
    ),
    (
        "card_amount_ratio_30d",
        "amount / mean(amount) by card_id over 30d every 1d",
    ),
    (
        "card_log_amount_ratio_30d",
        "log(amount / mean(amount)) by card_id over 30d every 1d",
    ),
    (
        "card_categories_24h",
        "distinct(merchant_category) by card_id over 24h every 1h",
    ),
    (
        "card_spend_vs_habit",
        "log(sum(amount) by card_id over 2h every 10m / mean(amount) by card_id over 30d every 1d)",
    ),
];

fn spec() -> FeatureSpec {
    FeatureSpec {
        features: Some(trainer::synth::LEGACY_FEATURES.map(String::from).to_vec()),
        velocity: VELOCITY
            .iter()
            .map(|(n, d)| VelocityDecl {
                name: (*n).into(),
                definition: (*d).into(),
            })
            .collect(),
        ..FeatureSpec::default()
    }
}

fn write_stream(dir: &Path, name: &str, rows: usize, seed: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut df = trainer::synth::patterned(rows, 0.1, seed).unwrap();
    trainer::data::write_frame(&path, &mut df).unwrap();
    path
}

/// Fits a model with [`VELOCITY`] on a `rows`-transaction stream of `seed` (the velocity
/// features `how` the forest treats them) and builds the worker around it (in `dir`).
fn velocity_component(
    dir: &Path,
    rows: usize,
    seed: u64,
    trees: usize,
    how: trainer::VelocityForest,
) -> std::path::PathBuf {
    let train = write_stream(dir, "train.parquet", rows, seed);
    let data = trainer::spec::load_file(&train, &spec(), false).unwrap();
    let params = IsolationForestParams {
        n_estimators: trees,
        max_samples: MaxSamples::Auto,
        contamination: Contamination::Fraction(0.1),
        seed,
        ..IsolationForestParams::default()
    };
    let velocity = spec().velocity_spec().unwrap().unwrap();
    // Separate as docs/trainer.md recommends it for the forest alone (a 30 % tail, weight 2),
    // so that the edge is compared on a weighted grouped forest.
    let tail = match how {
        trainer::VelocityForest::Separate => trainer::VelocityTail {
            share: 0.3,
            weight: 2,
        },
        trainer::VelocityForest::Mixed => trainer::VelocityTail::default(),
    };
    let model = trainer::fit_forest(&data.table, &params, Some(&velocity), how, tail).unwrap();
    // With the supervised classifier beside the forest (the labels of the same stream), so
    // the parity covers fraud_probability and its explanation too.
    let supervised = trainer::supervised::SupervisedParams {
        gbdt: trainer::gbdt::GbdtParams {
            max_iter: 40,
            seed,
            ..Default::default()
        },
        ..Default::default()
    };
    let (model, report) = trainer::supervised::fit(
        model,
        &data.table,
        data.labels.as_deref().unwrap(),
        &supervised,
    )
    .unwrap();
    assert!(report.fitted, "{}", report.to_text());
    let model_path = dir.join("velocity.sfm");
    std::fs::write(&model_path, model.to_bytes().unwrap()).unwrap();
    let component = dir.join("worker.wasm");
    std::fs::copy(common::build_component(&model_path), &component).unwrap();
    component
}

/// The CSV's rows as payloads (every column but the label and pattern), in file order.
fn payloads(csv: &Path) -> Vec<Map<String, Value>> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            let mut m = Map::new();
            for (k, v) in header.iter().zip(line.split(',')) {
                match *k {
                    "label" | "pattern" => {}
                    "timestamp" | "card_id" => {
                        m.insert((*k).into(), Value::String(v.into()));
                    }
                    _ => {
                        m.insert((*k).into(), serde_json::from_str(v).unwrap());
                    }
                }
            }
            m
        })
        .collect()
}

#[test]
fn the_edge_computes_the_trainers_velocity_features_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // The model: trained on another stream of the same generator, its velocity features in
    // trees of their own (so the forest's score and explanation in feature groups are
    // compared too).
    let component =
        velocity_component(dir.path(), 20_000, 5, 50, trainer::VelocityForest::Separate);

    // The stream: 10,000 transactions, replayed in file (arrival) order.
    let stream = write_stream(dir.path(), "stream.csv", 10_000, 7);
    let expected = trainer::spec::load_file(&stream, &spec(), false).unwrap();
    let payloads = payloads(&stream);
    let late = payloads
        .windows(2)
        .filter(|w| w[1]["timestamp"].as_str() < w[0]["timestamp"].as_str())
        .count();
    let cards: std::collections::BTreeSet<&str> = payloads
        .iter()
        .map(|p| p["card_id"].as_str().unwrap())
        .collect();
    assert!(
        late > 100 && cards.len() > 100,
        "{late} late rows, {} cards",
        cards.len()
    );

    // Velocity state in few slots, so that cards share them (one value holding several cards'
    // states, every one live for 30 days): the fewest that still fit each slot's cards.
    let velocity = model_format::velocity::VelocitySpec::new("timestamp", &VELOCITY).unwrap();
    let fullest = |slots: u32| {
        let mut per_slot: HashMap<String, usize> = HashMap::new();
        for card in &cards {
            let id = card.trim().to_ascii_lowercase();
            *per_slot
                .entry(velocity.state_slot(0, &id, slots).0)
                .or_default() += 1;
        }
        per_slot.into_values().max().unwrap()
    };
    let slots = (3..16)
        .map(|bits| 1u32 << bits)
        .find(|&s| fullest(s) <= worker_core::SLOT_ENTITIES)
        .unwrap();
    assert!(fullest(slots) >= 2, "{} cards, {slots} slots", cards.len());

    let pg = harness::postgres::TempPostgres::start().unwrap();
    let store = StoreService::start(&pg.url());
    let kv = tempfile::tempdir().unwrap();
    let mut config = harness::HarnessConfig::new(&component);
    config.variables = vec![
        ("store_url".into(), store.url()),
        ("store_token".into(), TOKEN.into()),
        ("velocity_slots".into(), slots.to_string()),
    ];
    // As spin.toml and runtime-config.toml: velocity state in the in-memory `velocity` store.
    config.key_value_stores = vec!["default".into(), "velocity".into()];
    config.memory_key_value_stores = vec!["velocity".into()];
    config.key_value_dir = Some(kv.path().to_path_buf());
    let edge = harness::start_edge(config).unwrap();
    let agent = common::agent();
    let url = format!("http://{}/api/predict", edge.addr);
    let started = std::time::Instant::now();
    let mut ids = Vec::with_capacity(payloads.len());
    let mut answers = Vec::with_capacity(payloads.len());
    for p in &payloads {
        let mut r = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(Value::Object(p.clone()).to_string())
            .unwrap();
        let body: Value = r.body_mut().read_json().unwrap();
        assert_eq!(r.status(), 200, "{body}");
        assert!(body["decision"].is_string(), "{body}");
        ids.push(body["transaction_uuid"].as_str().unwrap().to_string());
        answers.push(body);
    }
    let replay = started.elapsed();
    let n = payloads.len() as u64;
    let stored = common::wait_for_count(n, Duration::from_secs(120), || {
        common::count(&pg, "select count(*) from transactions")
    });
    assert_eq!(stored, n);
    // The store keeps what the edge decided and the supervised probability beside the scores.
    assert_eq!(
        common::count(
            &pg,
            "select count(*) from transactions where fraud_probability between 0 and 1 \
             and decision in ('block', 'review', 'allow')"
        ),
        n
    );

    let rows: Value = serde_json::from_str(
        &pg.psql("select json_object_agg(id, features)::text from transactions")
            .unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = VELOCITY.iter().map(|(n, _)| *n).collect();
    let base = expected.table.names.len() - names.len();
    let mut mismatches = 0;
    let mut nonzero: HashMap<&str, usize> = HashMap::new();
    for (row, id) in ids.iter().enumerate() {
        let features = &rows[id];
        for (k, name) in names.iter().enumerate() {
            let want = expected.table.columns[base + k][row];
            let got = features[name].as_f64().unwrap();
            if got.to_bits() != want.to_bits() {
                mismatches += 1;
                if mismatches <= 5 {
                    eprintln!("row {row} {name}: edge {got}, trainer {want}");
                }
            }
            if got != 0.0 {
                *nonzero.entry(name).or_default() += 1;
            }
        }
    }
    common::report(format!(
        "velocity parity: {} transactions ({} cards in {slots} slots, {late} late arrivals) replayed \
         in {replay:.1?}, {} values compared, {mismatches} mismatches",
        payloads.len(),
        cards.len(),
        payloads.len() * names.len()
    ));
    assert_eq!(mismatches, 0);

    // The supervised model's probability and explanation, edge against trainer, to the bit.
    let model =
        model_format::Model::from_bytes(&std::fs::read(dir.path().join("velocity.sfm")).unwrap())
            .unwrap();
    let probabilities = trainer::supervised::probabilities(&model, &expected.table)
        .unwrap()
        .unwrap();
    assert_eq!(
        model
            .forest()
            .groups()
            .map(model_format::TreeGroups::weight),
        Some(2)
    );
    let n = model.features().len();
    let (mut p_mismatches, mut phi_mismatches, mut factors) = (0, 0, 0);
    // The forest in feature groups: its score and exact explanation, edge against trainer.
    let (mut forest_mismatches, mut shortened) = (0, 0);
    let mut forest_phi = vec![0.0; n];
    // The per-transaction trees alone: how often the velocity trees changed a score.
    let first = model.forest().groups().unwrap().range(0);
    let alone = model_format::Model::new(
        model.features().to_vec(),
        model.scaler().clone(),
        model_format::Forest::new(
            model.forest().trees()[first].to_vec(),
            model.forest().max_samples(),
            -0.5,
        )
        .unwrap(),
        vec![],
    )
    .unwrap();
    for (row, answer) in answers.iter().enumerate() {
        let x = expected.table.row(row);
        let e = model.explain(&x, &mut forest_phi).unwrap();
        let shap = &answer["explanation"];
        let same = answer["risk_score"].as_f64().map(f64::to_bits)
            == Some(e.score.risk().to_bits())
            && shap["mean_path_length"].as_f64().map(f64::to_bits)
                == Some(e.mean_path_length().to_bits())
            && model.features().iter().zip(&forest_phi).all(|(name, v)| {
                shap["values"][name.as_str()].as_f64().map(f64::to_bits) == Some(v.to_bits())
            });
        if !same {
            forest_mismatches += 1;
            if forest_mismatches <= 5 {
                eprintln!("row {row}: edge {answer}, trainer {e:?} {forest_phi:?}");
            }
        }
        if alone.score(&x).unwrap().mean_path_length != e.mean_path_length() {
            shortened += 1;
        }
    }
    common::report(format!(
        "grouped forest parity: {} scores and explanations compared, {forest_mismatches} \
         mismatches ({shortened} rows shortened by the velocity trees)",
        answers.len()
    ));
    assert_eq!(forest_mismatches, 0);
    assert!(shortened > 100, "{shortened}");
    for (row, answer) in answers.iter().enumerate() {
        let got = answer["fraud_probability"].as_f64().unwrap();
        if got.to_bits() != probabilities[row].to_bits() {
            p_mismatches += 1;
            if p_mismatches <= 5 {
                eprintln!("row {row}: edge p {got}, trainer {}", probabilities[row]);
            }
        }
        let x = expected.table.row(row);
        let mut phi = vec![0.0; n + 1];
        model.explain_fraud(&x, &mut phi).unwrap();
        for f in answer["risk_factors"].as_array().unwrap() {
            let name = f["feature"].as_str().unwrap();
            let i = model.features().iter().position(|x| x == name).unwrap_or(n); // anomaly_score: the forest's part
            factors += 1;
            if f["contribution"].as_f64().unwrap().to_bits() != phi[i].to_bits() {
                phi_mismatches += 1;
            }
        }
    }
    common::report(format!(
        "supervised parity: {} fraud probabilities and {factors} risk-factor contributions \
         compared, {p_mismatches} + {phi_mismatches} mismatches",
        answers.len()
    ));
    assert_eq!((p_mismatches, phi_mismatches), (0, 0));
    assert!(factors >= answers.len() * 3);
    // Every feature varies (a parity of zeros would prove nothing).
    for name in &names {
        assert!(
            nonzero.get(name).copied().unwrap_or(0) > 500,
            "{name}: {nonzero:?}"
        );
    }
}

/// Where the edges under test keep velocity state.
struct Stores {
    name: &'static str,
    /// Writes that must lose nothing (else plain: losses are measured, not refused).
    atomic: bool,
    edges: Vec<harness::edge::Edge>,
}

/// The edges of every store this host offers, each on `store_url`. Harness: its in-memory store
/// and its durable files. `spin up`: its in-memory store (runtime-config.toml), its SQLite file
/// (the `default` store), Redis (deploy/runtime-config.redis.toml), and two edges on one Redis.
/// On both, the in-memory store once more with the ticketed writes Redis uses.
fn race_setups(
    component: &Path,
    store_url: &str,
    dir: &Path,
    redis: Option<&harness::redis::TempRedis>,
) -> Vec<Stores> {
    let config = |memory: bool| {
        let mut c = harness::HarnessConfig::new(component);
        c.variables = vec![
            ("store_url".into(), store_url.into()),
            ("store_token".into(), TOKEN.into()),
        ];
        c.key_value_stores = vec!["default".into()];
        // 64 connections: Spin's pool, not the tests' smaller one (each request blocked in a
        // key-value call holds a fiber stack).
        c.pool_instances = harness::SPIN_POOL_INSTANCES;
        if memory {
            c.key_value_stores.push("velocity".into());
            c.memory_key_value_stores = vec!["velocity".into()];
        }
        c
    };
    let mut setups = vec![
        Stores {
            atomic: true,
            name: "in-memory store",
            edges: vec![harness::start_edge(config(true)).unwrap()],
        },
        Stores {
            atomic: true,
            name: match harness::EdgeHost::from_env() {
                harness::EdgeHost::Spin => "SQLite file (default store)",
                harness::EdgeHost::Harness => "durable files (default store)",
            },
            edges: vec![harness::start_edge(config(false)).unwrap()],
        },
        // The protocol Redis runs (it has no usable compare-and-swap), on a store every host has.
        Stores {
            atomic: true,
            name: "in-memory store, ticketed writes",
            edges: vec![
                harness::start_edge({
                    let mut c = config(true);
                    c.variables
                        .push(("velocity_writes".into(), "ticketed".into()));
                    c
                })
                .unwrap(),
            ],
        },
    ];
    if let Some(redis) = redis {
        let text = format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{0}\"\n\
             [key_value_store.velocity]\ntype = \"redis\"\nurl = \"{0}\"\n",
            redis.url()
        );
        let file = dir.join("runtime-config.redis.toml");
        std::fs::write(&file, text).unwrap();
        let mut c = config(false);
        c.key_value_stores.push("velocity".into());
        // As deploy/spinapp.yaml: Spin's Redis store cannot do compare-and-swap under load, so
        // writes go in the order of tickets drawn from its atomic increment.
        c.variables
            .push(("velocity_writes".into(), "ticketed".into()));
        let spin = |c: &harness::HarnessConfig| {
            let s = harness::spin_up::SpinUp::start_with_runtime_config(c, Some(&file)).unwrap();
            harness::edge::Edge::from_spin(s)
        };
        setups.push(Stores {
            atomic: true,
            name: "Redis, ticketed writes",
            edges: vec![spin(&c)],
        });
        setups.push(Stores {
            atomic: true,
            name: "Redis, ticketed writes, two edges",
            edges: vec![spin(&c), spin(&c)],
        });
    }
    setups
}

/// Sends `n` transactions on `card` from `connections` clients at once (spread over `urls`),
/// all within one minute. Returns how many answers said `velocity_stale` (the edge gave up
/// recording them after its bounded retries).
fn burst(urls: &[String], card: &str, connections: usize, n: usize) -> usize {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stale = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for c in 0..connections {
            let (url, next, stale) = (&urls[c % urls.len()], &next, &stale);
            s.spawn(move || {
                let agent = common::agent();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let mut r = agent
                        .post(url)
                        .header("content-type", "application/json")
                        .send(race_body(card, 0, i % 60))
                        .unwrap();
                    let answer: Value = r.body_mut().read_json().unwrap();
                    assert_eq!(r.status(), 200, "{answer}");
                    if answer["velocity_stale"] == true {
                        stale.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    stale.into_inner()
}

fn race_body(card: &str, minute: usize, second: usize) -> String {
    format!(
        r#"{{"amount": 20, "hour": 12, "day_of_week": 1, "merchant_category": 2, "transaction_type": 0,
            "card_id": "{card}", "timestamp": "2024-03-01T10:{minute:02}:{second:02}Z"}}"#
    )
}

/// Many requests updating one card at the same moment, from many connections, on every store
/// the host offers (and two edges sharing one Redis): the next transaction of the card counts
/// every one of them. Each update is a compare-and-swap, checked after it lands (see
/// worker-core's velocity module). Reports what each burst lost; asserts that none was lost
/// silently: an update the edge gave up on after its bounded retries (3 s of conflicts between
/// instances; before an instance's requests were written together, 2 s gave up 6 times in 2,000
/// on a loaded CI machine) must have said so in its answer, and such give-ups stay rare (at
/// most 1 in 1,000).
#[test]
fn concurrent_updates_of_one_card_are_all_counted_on_every_store() {
    let dir = tempfile::tempdir().unwrap();
    let component = velocity_component(dir.path(), 5_000, 3, 20, trainer::VelocityForest::Mixed);
    let pg = harness::postgres::TempPostgres::start().unwrap();
    let store = StoreService::start(&pg.url());
    let redis = matches!(harness::EdgeHost::from_env(), harness::EdgeHost::Spin)
        .then(|| harness::redis::TempRedis::start().unwrap());
    let setups = race_setups(&component, &store.url(), dir.path(), redis.as_ref());
    let mut stored = 0u64;
    let mut lost_any = Vec::new();
    // `SFE_RACE_CONNECTIONS=8` runs only the 8-connection bursts (e.g. for a quick look).
    let only: Option<usize> = std::env::var("SFE_RACE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok());
    for (k, setup) in setups.iter().enumerate() {
        let urls: Vec<String> = setup
            .edges
            .iter()
            .map(|e| format!("{}/api/predict?explain=false", e.url()))
            .collect();
        for (connections, sent) in [(8usize, 200usize), (64, 2_000)] {
            if only.is_some_and(|c| c != connections) {
                continue;
            }
            let card = format!("card-race-{k}-{connections}");
            let stale = burst(&urls, &card, connections, sent);
            // The next transaction, alone: what does it count?
            let mut r = common::agent()
                .post(&urls[0])
                .header("content-type", "application/json")
                .send(race_body(&card, 30, 0))
                .unwrap();
            let answer: Value = r.body_mut().read_json().unwrap();
            assert_eq!(r.status(), 200, "{answer}");
            let id = answer["transaction_uuid"].as_str().unwrap().to_string();
            stored += sent as u64 + 1;
            let arrived = common::wait_for_count(stored, Duration::from_secs(120), || {
                common::count(&pg, "select count(*) from transactions")
            });
            assert_eq!(arrived, stored);
            let count: f64 = pg
                .psql(&format!(
                    "select features->>'card_count_1h' from transactions where id = '{id}'"
                ))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let lost = sent as f64 - count;
            common::report(format!(
                "velocity races, {}: {sent} transactions on one card from {connections} \
                 connections at once, {count} counted by the next one, {lost} lost \
                 ({stale} answered velocity_stale)",
                setup.name
            ));
            let silent = lost != stale as f64;
            if setup.atomic && (silent || stale * 1000 > sent) {
                lost_any.push(format!("{}: {lost} of {sent}, {stale} said so", setup.name));
            }
        }
    }
    assert!(lost_any.is_empty(), "lost updates: {lost_any:?}");
}

/// Rules and lists follow the store without a rebuild or restart: a policy PUT to the store
/// reaches the running component (its refresh copies it into the key-value store, each instance
/// re-reads it within a second), and so does a list change.
#[test]
fn a_policy_pushed_to_the_store_reaches_the_running_edge() {
    let built = common::fit_and_build(2_000, 11, 50);
    let pg = harness::postgres::TempPostgres::start().unwrap();
    let store = StoreService::start(&pg.url());
    let kv = tempfile::tempdir().unwrap();
    let mut config = harness::HarnessConfig::new(&built.component);
    config.variables = vec![
        ("store_url".into(), store.url()),
        ("store_token".into(), TOKEN.into()),
        ("model_refresh_secs".into(), "1".into()),
    ];
    config.key_value_stores = vec!["default".into()];
    config.key_value_dir = Some(kv.path().to_path_buf());
    let edge = harness::start_edge(config).unwrap();
    let agent = common::agent();
    let policy = |blocked: &str| {
        format!(
            "[lists]\nblocked_cards = [\"{blocked}\"]\n\n[[rule]]\nname = \"blocked_card\"\n\
             when = \"card_id in blocked_cards\"\noutcome = \"block\"\nreason = \"card is on the block list\"\n"
        )
    };
    let push = |text: String| {
        let r = agent
            .put(&format!("{}/v1/policy", store.url()))
            .header("authorization", &format!("Bearer {TOKEN}"))
            .header("x-actor", "e2e")
            .send(text)
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    };
    let decide = |card: &str| -> Value {
        let body = format!(
            r#"{{"amount": 12.5, "hour": 12, "day_of_week": 2, "merchant_category": 1, "transaction_type": 0, "card_id": "{card}"}}"#
        );
        let mut r = agent
            .post(&format!("http://{}/api/predict?explain=false", edge.addr))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        assert_eq!(r.status(), 200);
        r.body_mut().read_json().unwrap()
    };
    // Keeps sending until `card` gets `want`; the seconds it took.
    let until = |card: &str, want: &str| -> f64 {
        let start = std::time::Instant::now();
        loop {
            let a = decide(card);
            if a["decision"] == want {
                return start.elapsed().as_secs_f64();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{card}: still {a}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_ne!(decide("card-a")["decision"], "block");
    push(policy("card-a"));
    let first = until("card-a", "block");
    let a = decide("card-a");
    assert_eq!(a["rules_matched"], serde_json::json!(["blocked_card"]));
    assert_eq!(a["decision_reason"], "card is on the block list");
    push(policy("card-b"));
    let changed = until("card-b", "block");
    assert_ne!(decide("card-a")["decision"], "block");
    common::report(format!(
        "policy rollout: pushed policy in force after {first:.1} s, list change after {changed:.1} s (model_refresh_secs 1)"
    ));
}

/// The harness binary run as the demo runs it, from the repository with no store flags: it
/// grants what spin.toml declares (`default`, and `velocity` held in memory as
/// runtime-config.toml says), so a velocity model answers instead of 503 "velocity state
/// unavailable", and the second transaction of a card counts the first.
#[test]
fn the_harness_binary_grants_what_spin_toml_declares() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let component = velocity_component(dir.path(), 5_000, 3, 20, trainer::VelocityForest::Mixed);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(common::root())
        .args([
            "--component",
            component.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let url = format!("{base}/api/predict?explain=false");
    let body = |minute: u32| {
        format!(
            r#"{{"amount": 20, "hour": 12, "day_of_week": 1, "merchant_category": 2, "transaction_type": 0,
                "card_id": "card-demo", "timestamp": "2024-03-01T10:{minute:02}:00Z"}}"#
        )
    };
    let agent = common::agent();
    let mut answers = Vec::new();
    for minute in [0, 1] {
        let mut r = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body(minute))
            .unwrap();
        let status = r.status().as_u16();
        answers.push((status, r.body_mut().read_to_string().unwrap()));
    }
    let _ = child.kill();
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
    let _ = child.wait();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}\n{stderr}");
    }
    assert!(
        stderr.contains("granted by spin.toml") && stderr.contains("\"velocity\""),
        "{stderr}"
    );
}
