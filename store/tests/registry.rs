//! The model registry against a real PostgreSQL: uploads (verified, content-addressed,
//! idempotent), refusals with a reason, downloads with ETags, channels with conditional GETs,
//! recorded changes and rollback.

mod common;

use common::*;
use model_format::Model;
use serde_json::{Value, json};

/// The repository's model, and the same forest under other metadata (so another version).
fn models() -> (Vec<u8>, Vec<u8>) {
    let a = std::fs::read(harness::repo_root().join("data/model.sfm")).unwrap();
    let m = Model::from_bytes(&a).unwrap();
    let b = Model::new(
        m.features().to_vec(),
        m.scaler().clone(),
        m.forest().clone(),
        vec![("variant".into(), "b".into())],
    )
    .unwrap()
    .with_normalization(m.normalization().clone())
    .unwrap()
    .to_bytes()
    .unwrap();
    (a, b)
}

fn version_of(bytes: &[u8]) -> String {
    model_format::ModelId::of(bytes).unwrap().version()
}

impl TestStore {
    async fn upload(&self, bytes: Vec<u8>) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/v1/models"))
            .bearer_auth(TOKEN)
            .header("x-actor", "ci")
            .body(bytes)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn set(&self, channel: &str, version: Option<&str>) -> (u16, Value) {
        let r = self
            .http
            .put(self.url(&format!("/v1/models/channels/{channel}")))
            .bearer_auth(TOKEN)
            .json(&json!({"version": version, "actor": "alice"}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn rollback(&self, channel: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(&format!("/v1/models/channels/{channel}/rollback")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_verified_content_addressed_and_idempotent() {
    let t = TestStore::start().await;
    let (a, b) = models();
    let (va, vb) = (version_of(&a), version_of(&b));
    assert_ne!(va, vb);

    let (status, body) = t.upload(a.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], va);
    assert_eq!(body["created"], true);
    let checksum = body["checksum"].as_str().unwrap().to_string();
    assert!(checksum.starts_with("crc32:"), "{checksum}");
    // The same bytes again: 200, nothing new.
    let (status, body) = t.upload(a.clone()).await;
    assert_eq!((status, body["created"].clone()), (200, json!(false)));
    assert_eq!(t.upload(b.clone()).await.0, 201);
    assert_eq!(t.count("model_files"), 2);

    // Corrupt, truncated, empty and foreign files: 400 with the reason, nothing stored.
    let mut flipped = a.clone();
    flipped[a.len() / 2] ^= 0x40;
    for (bad, reason) in [
        (flipped, "checksum"),
        (a[..a.len() - 100].to_vec(), "truncated"),
        (Vec::new(), "magic"),
        (b"{\"not\": \"a model\"}".to_vec(), "magic"),
    ] {
        let (status, body) = t.upload(bad).await;
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with("not a valid model file"), "{error}");
        assert!(error.contains(reason), "{error} should name {reason}");
    }
    assert_eq!(t.count("model_files"), 2);

    // Listing and one version: metadata, features, who uploaded.
    let (status, list) = t.get_json("/v1/models").await;
    assert_eq!(status, 200);
    let models = list["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    let b_entry = models.iter().find(|m| m["version"] == vb).unwrap();
    assert_eq!(b_entry["metadata"]["variant"], "b");
    // The development token is named `admin`; what the uploader called itself is a note.
    assert_eq!(b_entry["uploaded_by"], "admin");
    assert_eq!(b_entry["upload_note"], "ci");
    assert_eq!(b_entry["size_bytes"], b.len());
    assert!(b_entry["features"].as_array().unwrap().len() >= 5);
    assert_eq!(
        t.get_json(&format!("/v1/models/{va}")).await.1["checksum"],
        checksum
    );
    assert_eq!(t.get_json("/v1/models/if1-00000000").await.0, 404);

    // Download: the bytes, ETag = checksum, 304 when the client has them.
    let r = t
        .http
        .get(t.url(&format!("/v1/models/{va}/file")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], format!("\"{checksum}\"").as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), a.as_slice());
    let r = t
        .http
        .get(t.url(&format!("/v1/models/{va}/file")))
        .bearer_auth(TOKEN)
        .header("if-none-match", format!("\"{checksum}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Without the token: 401.
    let r = t.http.get(t.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_change_atomically_are_recorded_and_roll_back() {
    let t = TestStore::start().await;
    let (a, b) = models();
    let (va, vb) = (version_of(&a), version_of(&b));
    t.upload(a).await;
    t.upload(b).await;

    // Nothing set: the edges use their embedded model; revision 0.
    let (status, channels) = t.get_json("/v1/models/channels").await;
    assert_eq!(status, 200);
    assert_eq!(channels["live"], Value::Null);
    assert_eq!(channels["revision"], 0);
    assert_eq!(t.rollback("live").await.0, 409);

    let (status, channels) = t.set("live", Some(&va)).await;
    assert_eq!(status, 200, "{channels}");
    assert_eq!(channels["live"]["version"], va);
    let rev = channels["revision"].as_i64().unwrap();
    // The conditional GET an edge makes: 304 while nothing changed.
    let get = |tag: String| {
        t.http
            .get(t.url("/v1/models/channels"))
            .bearer_auth(TOKEN)
            .header("if-none-match", tag)
            .send()
    };
    let r = get(format!("\"rev-{rev}\"")).await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], format!("\"rev-{rev}\"").as_str());

    // Promote B, set A as shadow; unknown versions and channels are refused, nothing changes.
    assert_eq!(t.set("live", Some(&vb)).await.0, 200);
    assert_eq!(t.set("shadow", Some(&va)).await.0, 200);
    assert_eq!(t.set("live", Some("if1-deadbeef")).await.0, 404);
    assert_eq!(t.set("canary", Some(&va)).await.0, 404);
    let (_, channels) = t.get_json("/v1/models/channels").await;
    assert_eq!(channels["live"]["version"], vb);
    assert_eq!(channels["shadow"]["version"], va);
    assert_eq!(get(format!("\"rev-{rev}\"")).await.unwrap().status(), 200);
    // Setting what is already set records nothing.
    assert_eq!(t.set("live", Some(&vb)).await.0, 200);

    // Rollback: live back to A, recorded as a rollback.
    let (status, channels) = t.rollback("live").await;
    assert_eq!(status, 200, "{channels}");
    assert_eq!(channels["live"]["version"], va);
    assert_eq!(channels["shadow"]["version"], va);
    let (_, list) = t.get_json("/v1/models").await;
    let a_entry = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["version"] == va)
        .unwrap();
    assert_eq!(a_entry["channels"], json!(["live", "shadow"]));

    // Shadow off.
    let (_, channels) = t.set("shadow", None).await;
    assert_eq!(channels["shadow"], Value::Null);

    let (_, history) = t.get_json("/v1/models/channels/history").await;
    let changes: Vec<(String, Value, Value, String, String)> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap().to_string(),
                c["from"].clone(),
                c["to"].clone(),
                c["action"].as_str().unwrap().to_string(),
                match c["note"].as_str() {
                    Some(note) => format!("{}/{note}", c["changed_by"].as_str().unwrap()),
                    None => c["changed_by"].as_str().unwrap().to_string(),
                },
            )
        })
        .collect();
    let s = |v: &str| json!(v);
    assert_eq!(
        changes,
        vec![
            (
                "shadow".into(),
                s(&va),
                Value::Null,
                "set".into(),
                "admin/alice".into()
            ),
            (
                "live".into(),
                s(&vb),
                s(&va),
                "rollback".into(),
                "admin".into()
            ),
            (
                "shadow".into(),
                Value::Null,
                s(&va),
                "set".into(),
                "admin/alice".into()
            ),
            (
                "live".into(),
                s(&va),
                s(&vb),
                "set".into(),
                "admin/alice".into()
            ),
            (
                "live".into(),
                Value::Null,
                s(&va),
                "set".into(),
                "admin/alice".into()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_shadow_are_compared_on_the_same_transactions() {
    let t = TestStore::start().await;
    let (a, b) = models();
    let (va, vb) = (version_of(&a), version_of(&b));
    t.upload(a).await;
    t.upload(b).await;
    let now = chrono::Utc::now();
    // 100 transactions scored by A with B as shadow: B ranks them the same way except that
    // transactions 0 and 99 trade places; A flags 20 (n % 5 == 0), B flags n < 10.
    let events: Vec<Value> = (0..100u128)
        .map(|n| {
            let mut e = scored(n, now);
            e["model_version"] = json!(va);
            e["anomaly_score"] = json!(n as f64 / 100.0);
            let rank = match n {
                0 => 99,
                99 => 0,
                n => n,
            };
            e["shadow"] = json!({"model_version": vb, "anomaly_score": rank as f64 / 50.0,
                                 "is_anomaly": n < 10});
            // Decisions: A reviews what it flags; B blocks 0 and reviews 1..9.
            e["decision"] = json!(if n % 5 == 0 { "review" } else { "allow" });
            e["shadow"]["decision"] = json!(match n {
                0 => "block",
                1..10 => "review",
                _ => "allow",
            });
            // Probabilities of fraud on the first 80, ranked as the scores are.
            if n < 80 {
                e["fraud_probability"] = json!(n as f64 / 100.0);
                e["shadow"]["fraud_probability"] = json!(rank as f64 / 100.0);
            }
            e
        })
        .collect();
    assert_eq!(t.post_events(&events).await.0, 200);
    // Events without a shadow do not count.
    let mut plain = scored(500, now);
    plain["model_version"] = json!(va);
    assert_eq!(t.post_events(&[plain]).await.0, 200);

    let (status, c) = t
        .get_json(&format!("/v1/models/compare?live={va}&shadow={vb}"))
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["transactions"], 100);
    assert_eq!(c["live_alert_rate"], 0.2);
    assert_eq!(c["shadow_alert_rate"], 0.1);
    // Both flag 0 and 5; A alone 18 others, B alone 1..4 and 6..9 (8): 74 agree.
    assert_eq!(c["agreement"], 0.74);
    // Spearman with d = 99 on two items: 1 - 6·2·99² / (100·(100²-1)).
    let want = 1.0 - 6.0 * 2.0 * 99f64.powi(2) / (100.0 * (100f64.powi(2) - 1.0));
    let got = c["rank_correlation"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    let d = c["disagreements"].as_array().unwrap();
    assert_eq!(d.len(), 20);
    assert_eq!(d[0]["rank_gap"], 1.0);
    let first_two: Vec<&Value> = d[..2].iter().map(|x| &x["transaction_id"]).collect();
    assert!(first_two.contains(&&json!(tx_id(0))) && first_two.contains(&&json!(tx_id(99))));
    assert_eq!(d[2]["rank_gap"], 0.0);
    let zero = d
        .iter()
        .find(|x| x["transaction_id"] == json!(tx_id(0)))
        .unwrap();
    assert_eq!(
        (
            &zero["live_decision"],
            &zero["shadow_decision"],
            &zero["live_fraud_probability"],
            &zero["shadow_fraud_probability"]
        ),
        (&json!("review"), &json!("block"), &json!(0.0), &json!(0.99)),
        "{zero}"
    );
    // What each would send to people: A reviews 20 %, B blocks 1 % and reviews 9 %; they
    // agree on 5 (review) and on the 72 that neither flags.
    assert_eq!(
        c["decisions"],
        json!({"transactions": 100, "agreement": 0.73,
               "live": {"block": 0.0, "review": 0.2, "allow": 0.8},
               "shadow": {"block": 0.01, "review": 0.09, "allow": 0.9}})
    );
    // Probabilities on the 80 that have both: means, and Spearman with 0 moved to the top
    // (d = 79 once, 1 for the 79 others).
    let f = &c["fraud_probability"];
    assert_eq!(f["transactions"], 80, "{f}");
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9;
    assert!(close(&f["live_mean"], 0.395), "{f}");
    assert!(close(&f["shadow_mean"], 0.407375), "{f}");
    let want = 1.0 - 6.0 * (79f64.powi(2) + 79.0) / (80.0 * (80f64.powi(2) - 1.0));
    assert!(close(&f["rank_correlation"], want), "{f} vs {want}");
    assert_eq!(t.get_json("/v1/models/compare?live=x").await.0, 400);

    // On the dashboard while the channels name this pair.
    assert!(
        t.get_json("/v1/dashboard")
            .await
            .1
            .get("shadow_comparison")
            .is_none()
    );
    t.set("live", Some(&va)).await;
    t.set("shadow", Some(&vb)).await;
    let (_, dash) = t.get_json("/v1/dashboard").await;
    assert_eq!(dash["shadow_comparison"]["transactions"], 100, "{dash}");
    assert_eq!(
        dash["shadow_comparison"]["decisions"]["agreement"], 0.73,
        "{dash}"
    );
    // The window's decisions and mean probability (the event without a shadow had neither).
    assert_eq!(
        dash["stats"]["decisions"],
        json!({"block": 0, "review": 20, "allow": 80})
    );
    let p = dash["stats"]["avg_fraud_probability"].as_f64().unwrap();
    assert!((p - 0.395).abs() < 1e-9, "{p}");
}

/// Drift: live scores against the model's training distribution, per hour and as gauges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_separates_a_shifted_stream_from_a_steady_one() {
    let t = TestStore::start().await;
    let m = Model::from_bytes(&models().0).unwrap();
    let quantiles: Vec<f64> = (0..11).map(|k| -0.10 + 0.02 * f64::from(k)).collect();
    let variant = |tag: &str| {
        Model::new(
            m.features().to_vec(),
            m.scaler().clone(),
            m.forest().clone(),
            vec![("variant".into(), tag.into())],
        )
        .unwrap()
        .with_normalization(m.normalization().clone())
        .unwrap()
        .with_score_distribution(quantiles.clone())
        .unwrap()
        .to_bytes()
        .unwrap()
    };
    let (steady, shifted) = (variant("steady"), variant("shifted"));
    let (vs, vd) = (version_of(&steady), version_of(&shifted));
    assert_eq!(t.upload(steady).await.0, 201);
    assert_eq!(t.upload(shifted).await.0, 201);
    let now = chrono::Utc::now();
    // Steady: 100 scores in each training decile. Shifted: every score below the first decile.
    let events: Vec<Value> = (0..2000u128)
        .map(|n| {
            let mut e = scored(n, now);
            let i = (n % 1000) as usize;
            if n < 1000 {
                e["model_version"] = json!(vs);
                e["anomaly_score"] = json!(quantiles[i % 10] + 0.01);
                e["is_anomaly"] = json!(i.is_multiple_of(10));
            } else {
                e["model_version"] = json!(vd);
                e["anomaly_score"] = json!(-0.2);
                e["is_anomaly"] = json!(true);
            }
            e
        })
        .collect();
    assert_eq!(t.post_events(&events).await.0, 200);

    let (status, d) = t.get_json(&format!("/v1/models/{vs}/drift?hours=2")).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["overall"]["transactions"], 1000);
    assert_eq!(d["overall"]["alert_rate"], 0.1);
    let psi_steady = d["overall"]["psi"].as_f64().unwrap();
    assert!(psi_steady.abs() < 1e-9, "{d}");
    assert!(!d["hours"].as_array().unwrap().is_empty());
    assert_eq!(d["training_quantiles"].as_array().unwrap().len(), 11);

    let (_, d) = t.get_json(&format!("/v1/models/{vd}/drift")).await;
    let psi_shifted = d["overall"]["psi"].as_f64().unwrap();
    // All mass in one of ten bins: 0.9·ln 10 + 9·(1e-4 − 0.1)·ln 1e-3.
    let want = 0.9 * 10f64.ln() + 9.0 * (1e-4 - 0.1) * (1e-3f64).ln();
    assert!((psi_shifted - want).abs() < 1e-9, "{psi_shifted} vs {want}");
    assert!(psi_shifted > 0.25);

    // A model without a distribution: alert rates, no PSI. Unknown versions: 404; bad hours: 400.
    let (_, plain) = models(); // rebuilt with Model::new: no distribution
    let va = version_of(&plain);
    t.upload(plain).await;
    let (_, d) = t.get_json(&format!("/v1/models/{va}/drift")).await;
    assert_eq!(
        (d["training_quantiles"].clone(), d["overall"]["psi"].clone()),
        (Value::Null, Value::Null),
        "{d}"
    );
    assert_eq!(t.get_json("/v1/models/if1-00000000/drift").await.0, 404);
    assert_eq!(
        t.get_json(&format!("/v1/models/{vs}/drift?hours=0"))
            .await
            .0,
        400
    );

    // Gauges for the channels' models.
    t.set("live", Some(&vs)).await;
    t.set("shadow", Some(&vd)).await;
    let (_, metrics) = t.get_text("/metrics").await;
    let gauge = |name: &str, version: &str, channel: &str| -> f64 {
        let prefix = format!("{name}{{channel=\"{channel}\",model_version=\"{version}\"}} ");
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{prefix} in {metrics}"));
        line[prefix.len()..].parse().unwrap()
    };
    assert!(gauge("store_model_score_psi", &vs, "live").abs() < 1e-9);
    assert!(gauge("store_model_score_psi", &vd, "shadow") > 0.25);
    assert_eq!(gauge("store_model_alert_rate", &vd, "shadow"), 1.0);
}
