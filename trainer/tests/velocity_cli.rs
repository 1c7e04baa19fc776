//! Velocity features, rules and the backtest, as an operator runs them: the synthetic card
//! stream's card testing and bursts, seen with and without velocity features.

use std::io::Write as _;

mod common;

use common::{ok, p, trainer};
use serde_json::Value;

/// The velocity features docs/trainer.md suggests for card fraud.
const SPEC: &str = r#"
label = "label"
ignore = ["pattern"]
[[velocity]]
name = "card_count_2m"
definition = "count by card_id over 2m every 12s"
[[velocity]]
name = "card_count_10m"
definition = "count by card_id over 10m"
[[velocity]]
name = "card_count_1h"
definition = "count by card_id over 1h"
[[velocity]]
name = "card_log_seconds_since_last"
definition = "log(seconds_since_last) by card_id"
[[velocity]]
name = "card_log_amount_ratio_30d"
definition = "log(amount / mean(amount)) by card_id over 30d every 1d"
[[velocity]]
name = "card_categories_24h"
definition = "distinct(merchant_category) by card_id over 24h every 1h"
"#;

const RULES: &str = r#"
[lists]
blocked_cards = ["CARD-00007"]

[[rule]]
name = "blocked_card"
when = "card_id in blocked_cards"
outcome = "block"
reason = "card is on the block list"

[[rule]]
name = "card_testing"
when = "card_count_10m >= 3 and amount < 5"
outcome = "block"

[[rule]]
name = "burst"
when = "card_count_10m >= 4"
outcome = "review"
"#;

const LEGACY: &str = "amount,hour,day_of_week,merchant_category,transaction_type";

fn report(line: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let _ = writeln!(std::io::stdout(), "{line} [load {}]", load.join(" "));
}

fn segment<'a>(model: &'a Value, name: &str) -> &'a Value {
    model["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["segment"] == name)
        .unwrap()
}

#[test]
fn velocity_features_see_card_testing_and_bursts_and_the_backtest_scores_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    std::fs::write(d("spec.toml"), SPEC).unwrap();
    std::fs::write(d("rules.toml"), RULES).unwrap();
    // Training history with fraud at 1 % of rows; a later stream at 5 %.
    for (name, rows, rate, seed) in [
        ("train.parquet", "50000", "0.01", "1"),
        ("test.csv", "20000", "0.05", "2"),
    ] {
        ok(&[
            "synth",
            "--patterns",
            "--rows",
            rows,
            "--anomaly-rate",
            rate,
            "--seed",
            seed,
            "--output",
            p(&d(name)),
        ]);
    }
    ok(&[
        "fit",
        "--input",
        p(&d("train.parquet")),
        "--features",
        LEGACY,
        "--output",
        p(&d("base.sfm")),
    ]);
    let fitted = ok(&[
        "fit",
        "--input",
        p(&d("train.parquet")),
        "--features",
        LEGACY,
        "--spec",
        p(&d("spec.toml")),
        "--output",
        p(&d("velocity.sfm")),
    ]);
    assert!(fitted.contains("11 features"), "{fitted}");
    let model =
        model_format::Model::from_bytes(&std::fs::read(d("velocity.sfm")).unwrap()).unwrap();
    assert_eq!(model.velocity().unwrap().features().len(), 6);

    ok(&[
        "backtest",
        "--model",
        p(&d("velocity.sfm")),
        "--model",
        p(&d("base.sfm")),
        "--input",
        p(&d("test.csv")),
        "--rules",
        p(&d("rules.toml")),
        "--segment",
        "pattern",
        "--output",
        p(&d("report.json")),
    ]);
    let r: Value = serde_json::from_slice(&std::fs::read(d("report.json")).unwrap()).unwrap();
    let (with, without) = (&r["models"][0], &r["models"][1]);
    for pattern in ["card_testing", "burst"] {
        let (w, wo) = (segment(with, pattern), segment(without, pattern));
        let auc = |s: &Value| s["roc_auc"].as_f64().unwrap();
        let ap = |s: &Value| s["average_precision"].as_f64().unwrap();
        report(&format!(
            "velocity detection: {pattern}: ROC-AUC {:.4} / AP {:.4} with velocity features, {:.4} / {:.4} without ({} positives)",
            auc(w),
            ap(w),
            auc(wo),
            ap(wo),
            w["positives"]
        ));
        assert!(auc(w) >= 0.95 && auc(wo) < 0.65, "{pattern}: {w} vs {wo}");
    }

    // `trainer score` computes the velocity features over the file as fit and backtest do:
    // its scores rank the stream exactly as the backtest's ROC-AUC says.
    ok(&[
        "score",
        "--model",
        p(&d("velocity.sfm")),
        "--input",
        p(&d("test.csv")),
        "--output",
        p(&d("scores.csv")),
    ]);
    let scores = std::fs::read_to_string(d("scores.csv")).unwrap();
    let column = |text: &str, name: &str| -> Vec<String> {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let i = header.iter().position(|h| *h == name).unwrap();
        lines
            .map(|l| l.split(',').nth(i).unwrap().to_string())
            .collect()
    };
    let risk: Vec<f64> = column(&scores, "risk_score")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let labels = column(&std::fs::read_to_string(d("test.csv")).unwrap(), "label");
    assert_eq!(risk.len(), labels.len());
    let (pos, neg): (Vec<_>, Vec<_>) = risk.iter().zip(&labels).partition(|(_, l)| *l == "1");
    let above = pos
        .iter()
        .map(|(p, _)| neg.iter().filter(|(n, _)| *p > *n).count() as f64)
        .sum::<f64>();
    let score_auc = above / (pos.len() * neg.len()) as f64;
    let overall = with["roc_auc"].as_f64().unwrap();
    assert!(
        (score_auc - overall).abs() < 1e-3,
        "trainer score ranks like the backtest: {score_auc} vs {overall}"
    );

    // Rules: hits counted against the file itself.
    let text = std::fs::read_to_string(d("test.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let card = header.iter().position(|h| *h == "card_id").unwrap();
    let on_card_7 = text
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(card) == Some("card-00007"))
        .count();
    let rules = r["rules"].as_array().unwrap();
    let rule = |name: &str| rules.iter().find(|x| x["rule"] == name).unwrap();
    assert!(on_card_7 > 0);
    assert_eq!(rule("blocked_card")["hits"], on_card_7);
    assert_eq!(
        rule("blocked_card")["decided"],
        on_card_7,
        "first in order decides"
    );
    let testing = rule("card_testing");
    assert!(testing["precision"].as_f64().unwrap() > 0.95, "{testing}");
    assert!(testing["recall"].as_f64().unwrap() > 0.1, "{testing}");
    let decided: u64 = r["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[1].as_u64().unwrap())
        .sum();
    assert_eq!(decided, 20_000);
    for x in rules {
        report(&format!(
            "backtest rule {}: {} hits, decided {}, precision {}, recall {}",
            x["rule"], x["hits"], x["decided"], x["precision"], x["recall"]
        ));
    }

    // Bad definitions and rules are refused before anything is scored, naming what is wrong.
    let out = trainer(&[
        "fit",
        "--input",
        p(&d("train.parquet")),
        "--velocity",
        "x=median(amount) by card_id over 1h",
        "--output",
        p(&d("x.sfm")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown aggregate"),
        "{out:?}"
    );
    let out = trainer(&[
        "fit",
        "--input",
        p(&d("train.parquet")),
        "--velocity",
        "x=count by device_id over 1h",
        "--features",
        LEGACY,
        "--output",
        p(&d("x.sfm")),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a column")
            && String::from_utf8_lossy(&out.stderr).contains("device_id"),
        "{out:?}"
    );
    std::fs::write(d("bad.toml"), RULES.replace("amount < 5", "ammount < 5")).unwrap();
    let out = trainer(&[
        "backtest",
        "--model",
        p(&d("velocity.sfm")),
        "--input",
        p(&d("test.csv")),
        "--rules",
        p(&d("bad.toml")),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ammount"),
        "{out:?}"
    );
}
