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
        cat.push(c as i64);
        kind.push(t as i64);
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
