//! Seeded synthetic transactions in the legacy five-feature schema, with labelled anomalies.
//!
//! Normal traffic follows the legacy sample's shape: modest log-normal amounts, daytime hours,
//! common merchant categories, mostly purchases. Anomalies mix the patterns fraud analysts
//! describe: very large amounts, night-time activity, rare categories, and transfers.

use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal};

pub use model_format::normalize::LEGACY_FEATURES;

/// Builds `rows` transactions, about `anomaly_rate` of them anomalous (`label` = 1, else 0).
pub fn transactions(rows: usize, anomaly_rate: f64, seed: u64) -> anyhow::Result<DataFrame> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal_amount = LogNormal::new(25f64.ln(), 0.9)?;
    let big_amount = LogNormal::new(1500f64.ln(), 0.8)?;
    let day_hour = Normal::new(12.5f64, 2.8)?;
    let (mut amount, mut hour, mut dow, mut cat, mut kind, mut label) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for _ in 0..rows {
        let anomalous = rng.random_bool(anomaly_rate);
        let (a, h, c, t) = if anomalous {
            // Each anomaly carries two or more of the suspicious traits.
            let pattern = rng.random_range(0..4);
            let a = if pattern != 1 {
                big_amount.sample(&mut rng)
            } else {
                normal_amount.sample(&mut rng)
            };
            let h = if pattern != 2 {
                rng.random_range(0..6)
            } else {
                day_hour.sample(&mut rng).round().clamp(7.0, 21.0) as i64
            };
            let c = if pattern != 3 {
                rng.random_range(6..10)
            } else {
                rng.random_range(0..6)
            };
            let t = if pattern != 0 {
                rng.random_range(1..3)
            } else {
                0
            };
            (a, h, c, t)
        } else {
            let a = normal_amount.sample(&mut rng).min(2000.0);
            let h = day_hour.sample(&mut rng).round().clamp(6.0, 23.0) as i64;
            let c = [0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7][rng.random_range(0..12)];
            let t = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2][rng.random_range(0..10)];
            (a, h, c, t)
        };
        amount.push((a * 100.0).round() / 100.0);
        hour.push(h);
        dow.push(rng.random_range(0..7i64));
        cat.push(i64::from(c));
        kind.push(i64::from(t));
        label.push(i64::from(anomalous));
    }
    Ok(df!(
        "amount" => amount,
        "hour" => hour,
        "day_of_week" => dow,
        "merchant_category" => cat,
        "transaction_type" => kind,
        "label" => label,
    )?)
}

/// Fraud patterns [`patterned`] labels, besides `normal`.
pub const PATTERNS: [&str; 4] = ["card_testing", "burst", "unusual_combo", "amount_outlier"];

/// Richer synthetic traffic for evaluation: cards with their own habits and a `timestamp`, and
/// labelled fraud patterns in a `pattern` column (`label` = 1 unless `normal`):
///
/// * `card_testing`: a run of 5–12 tiny amounts (0.50–2.00) on one card within minutes;
/// * `burst`: 6–15 ordinary-looking purchases on one card within a few minutes;
/// * `unusual_combo`: a night-time transfer or withdrawal in a category the card never uses;
/// * `amount_outlier`: one amount 20–200× the card's usual.
///
/// Rows are in **arrival order**, as an edge would receive them: by time, except that about 3 %
/// arrive late (10 s to 20 min after their `timestamp`, so after later transactions), as
/// retried or batched submissions do. `card_id` is a string (`card-00042`), as payloads send
/// it. `anomaly_rate` is the share of *rows* in fraud patterns (runs count every row). Seeded:
/// the same arguments give the same frame.
pub fn patterned(rows: usize, anomaly_rate: f64, seed: u64) -> anyhow::Result<DataFrame> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&anomaly_rate),
        "anomaly_rate must be in [0, 1]"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cards = (rows / 40).max(10);
    // Per card: typical amount, favourite categories, active hours centre.
    let habits: Vec<(f64, [i64; 2], f64)> = (0..cards)
        .map(|_| {
            let typical = LogNormal::new(25f64.ln(), 0.7).map(|d| d.sample(&mut rng))?;
            let cats = [rng.random_range(0..6), rng.random_range(0..6)];
            Ok((typical, cats, rng.random_range(9.0..19.0)))
        })
        .collect::<anyhow::Result<_>>()?;
    // 28 days starting Monday 2024-01-01, in seconds.
    const SPAN: i64 = 28 * 86_400;
    struct Tx {
        t: i64,
        card: usize,
        amount: f64,
        cat: i64,
        kind: i64,
        pattern: &'static str,
    }
    let mut txs: Vec<Tx> = Vec::with_capacity(rows);
    let normal_kind = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2];
    while txs.len() < rows {
        let card = rng.random_range(0..cards);
        let (typical, cats, centre) = habits[card];
        let day = rng.random_range(0..28i64);
        if !rng.random_bool(anomaly_rate) {
            let hour = Normal::new(centre, 2.5)?
                .sample(&mut rng)
                .round()
                .clamp(6.0, 23.0) as i64;
            let t = day * 86_400 + hour * 3600 + rng.random_range(0..3600);
            let amount = LogNormal::new(typical.ln(), 0.5)?
                .sample(&mut rng)
                .min(5000.0);
            let cat = if rng.random_bool(0.8) {
                cats[rng.random_range(0..2)]
            } else {
                rng.random_range(0..8)
            };
            txs.push(Tx {
                t,
                card,
                amount,
                cat,
                kind: normal_kind[rng.random_range(0..10)],
                pattern: "normal",
            });
            continue;
        }
        let pattern = PATTERNS[rng.random_range(0..PATTERNS.len())];
        let start = day * 86_400 + rng.random_range(0..86_400);
        match pattern {
            "card_testing" | "burst" => {
                let n = if pattern == "card_testing" {
                    rng.random_range(5..=12)
                } else {
                    rng.random_range(6..=15)
                };
                let mut t = start;
                for _ in 0..n.min(rows - txs.len()) {
                    t += rng.random_range(5..60);
                    let amount = if pattern == "card_testing" {
                        rng.random_range(0.5..2.0)
                    } else {
                        LogNormal::new(typical.ln(), 0.5)?.sample(&mut rng)
                    };
                    txs.push(Tx {
                        t,
                        card,
                        amount,
                        cat: cats[0],
                        kind: 0,
                        pattern,
                    });
                }
            }
            "unusual_combo" => {
                let t = day * 86_400 + rng.random_range(1..5) * 3600 + rng.random_range(0..3600);
                // Habitual categories are 0..6, so 6..10 is one the card never uses.
                let cat = rng.random_range(6..10);
                let amount = LogNormal::new(typical.ln(), 0.5)?.sample(&mut rng);
                txs.push(Tx {
                    t,
                    card,
                    amount,
                    cat,
                    kind: rng.random_range(1..3),
                    pattern,
                });
            }
            _ => {
                let amount = typical * rng.random_range(20.0..200.0);
                txs.push(Tx {
                    t: start,
                    card,
                    amount,
                    cat: cats[0],
                    kind: 0,
                    pattern,
                });
            }
        }
    }
    txs.sort_by_key(|x| (x.t, x.card));
    // Arrival: late rows arrive up to 20 minutes after their time (a stable sort keeps the
    // others in time order).
    let mut arrival: Vec<(i64, usize)> = txs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let delay = if rng.random_bool(0.03) {
                rng.random_range(10..1200)
            } else {
                0
            };
            (x.t + delay, i)
        })
        .collect();
    arrival.sort_by_key(|&(at, _)| at);
    let order: Vec<usize> = arrival.into_iter().map(|(_, i)| i).collect();
    let txs: Vec<&Tx> = order.iter().map(|&i| &txs[i]).collect();
    let base = 1_704_067_200i64; // 2024-01-01T00:00:00Z, a Monday
    let stamp = |t: i64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs((base + t.clamp(0, SPAN + 86_400)) as u64),
        )
        .to_string()
    };
    Ok(df!(
        "timestamp" => txs.iter().map(|x| stamp(x.t)).collect::<Vec<_>>(),
        "card_id" => txs.iter().map(|x| format!("card-{:05}", x.card)).collect::<Vec<_>>(),
        "amount" => txs.iter().map(|x| (x.amount * 100.0).round() / 100.0).collect::<Vec<_>>(),
        "hour" => txs.iter().map(|x| x.t.rem_euclid(86_400) / 3600).collect::<Vec<_>>(),
        "day_of_week" => txs.iter().map(|x| x.t.div_euclid(86_400).rem_euclid(7)).collect::<Vec<_>>(),
        "merchant_category" => txs.iter().map(|x| x.cat).collect::<Vec<_>>(),
        "transaction_type" => txs.iter().map(|x| x.kind).collect::<Vec<_>>(),
        "label" => txs.iter().map(|x| i64::from(x.pattern != "normal")).collect::<Vec<_>>(),
        "pattern" => txs.iter().map(|x| x.pattern).collect::<Vec<_>>(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterned_is_seeded_and_labelled_by_pattern() {
        let a = patterned(4000, 0.1, 3).unwrap();
        assert_eq!(a.height(), 4000);
        assert!(a.equals(&patterned(4000, 0.1, 3).unwrap()));
        assert!(!a.equals(&patterned(4000, 0.1, 4).unwrap()));
        let pattern = a.column("pattern").unwrap().str().unwrap().clone();
        let label = a.column("label").unwrap().i64().unwrap().clone();
        for (p, l) in pattern.iter().zip(label.iter()) {
            assert_eq!(l == Some(1), p != Some("normal"));
        }
        for name in PATTERNS {
            assert!(pattern.iter().any(|p| p == Some(name)), "{name} missing");
        }
        // Card testing is tiny amounts; outliers are large.
        let amount = a.column("amount").unwrap().f64().unwrap().clone();
        for (p, v) in pattern.iter().zip(amount.iter()) {
            match p {
                Some("card_testing") => assert!(v.unwrap() <= 2.0),
                Some("amount_outlier") => assert!(v.unwrap() > 50.0),
                _ => {}
            }
        }
        // Some rows arrive after later ones (out of order), most do not.
        let ts = a.column("timestamp").unwrap().str().unwrap().clone();
        let late = (1..4000)
            .filter(|&i| ts.get(i).unwrap() < ts.get(i - 1).unwrap())
            .count();
        assert!(
            (20..400).contains(&late),
            "{late} rows arrive before an earlier one"
        );
        assert!(
            a.column("card_id")
                .unwrap()
                .str()
                .unwrap()
                .get(0)
                .unwrap()
                .starts_with("card-")
        );
        // hour and day_of_week agree with the timestamp, as the edge derives them.
        let ts = a.column("timestamp").unwrap().str().unwrap().clone();
        let hour = a.column("hour").unwrap().i64().unwrap().clone();
        let dow = a.column("day_of_week").unwrap().i64().unwrap().clone();
        for i in (0..4000).step_by(97) {
            let s = model_format::normalize::parse_timestamp(ts.get(i).unwrap()).unwrap();
            assert_eq!(i64::from(s.hour), hour.get(i).unwrap());
            assert_eq!(i64::from(s.weekday), dow.get(i).unwrap());
        }
    }
}
