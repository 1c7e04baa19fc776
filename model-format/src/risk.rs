//! Attributions turned into what a person reads: a ranked list of risk factors.
//!
//! A TreeSHAP value φ explains the mean path length, so φ < 0 means the feature makes the
//! transaction easier to isolate: it *raises* risk. The phrase compares the raw value with the
//! training distribution through the scaler (z = (x − mean) / scale).

use crate::Model;

/// Whether a feature pushes the transaction towards or away from "anomalous".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    RaisesRisk,
    LowersRisk,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::RaisesRisk => "increases_risk",
            Direction::LowersRisk => "decreases_risk",
        }
    }
}

/// One feature's part in a score.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskFactor<'m> {
    pub feature: &'m str,
    /// The raw value scored.
    pub value: f64,
    /// The TreeSHAP value φ (contribution to the mean path length).
    pub contribution: f64,
    pub direction: Direction,
    /// Short human phrase, e.g. "amount far above usual".
    pub phrase: String,
}

impl Model {
    /// The `top` features with the largest |φ|, largest first (ties by schema order).
    /// `row` and `phi` are as given to and returned by [`Model::explain`].
    pub fn risk_factors(&self, row: &[f64], phi: &[f64], top: usize) -> Vec<RiskFactor<'_>> {
        let n = self.features().len().min(row.len()).min(phi.len());
        ranked(&phi[..n], top)
            .map(|i| {
                // A shorter path (φ < 0) makes the transaction easier to isolate.
                let direction = if phi[i] < 0.0 {
                    Direction::RaisesRisk
                } else {
                    Direction::LowersRisk
                };
                self.factor(i, row[i], phi[i], direction)
            })
            .collect()
    }

    /// The supervised model's risk factors: `phi` has one value per feature and one more
    /// (last) for the forest's `risk`, as [`Model::explain_fraud`] writes them; φ > 0 raises
    /// the log-odds of fraud. The forest's part is named `anomaly_score`.
    pub fn fraud_risk_factors(
        &self,
        row: &[f64],
        risk: f64,
        phi: &[f64],
        top: usize,
    ) -> Vec<RiskFactor<'_>> {
        let n = self.features().len().min(row.len());
        let phi = &phi[..phi.len().min(n + 1)];
        ranked(phi, top)
            .map(|i| {
                let direction = if phi[i] > 0.0 {
                    Direction::RaisesRisk
                } else {
                    Direction::LowersRisk
                };
                if i == n {
                    RiskFactor {
                        feature: "anomaly_score",
                        value: risk,
                        contribution: phi[i],
                        direction,
                        phrase: match direction {
                            Direction::RaisesRisk => "unusual overall for this traffic",
                            Direction::LowersRisk => "ordinary overall for this traffic",
                        }
                        .to_string(),
                    }
                } else {
                    self.factor(i, row[i], phi[i], direction)
                }
            })
            .collect()
    }

    fn factor(
        &self,
        i: usize,
        value: f64,
        contribution: f64,
        direction: Direction,
    ) -> RiskFactor<'_> {
        let feature = self.features()[i].as_str();
        RiskFactor {
            feature,
            value,
            contribution,
            direction,
            phrase: self.phrase(i, value, direction),
        }
    }

    /// Words for one feature's value: velocity features say what they count, the hour is read
    /// on a clock (3 a.m. is not "below" 11 p.m.), codes are usual or not for this traffic, and
    /// other numbers are compared with the training distribution through the scaler.
    fn phrase(&self, i: usize, value: f64, direction: Direction) -> String {
        let feature = self.features()[i].as_str();
        if let Some(v) = self
            .velocity()
            .and_then(|v| v.features().iter().find(|f| f.name == feature))
        {
            return velocity_phrase(&v.definition, value);
        }
        let usual = match direction {
            Direction::RaisesRisk => "unusual for this traffic",
            Direction::LowersRisk => "usual for this traffic",
        };
        match feature {
            "hour" => {
                let mean = self.scaler().mean()[i];
                let scale = self.scaler().scale()[i];
                let d = (value - mean).rem_euclid(24.0);
                let d = d.min(24.0 - d) / scale;
                let when = if d >= 1.5 {
                    "outside the usual hours"
                } else {
                    "within the usual hours"
                };
                format!("at {:02}:00, {when}", value.rem_euclid(24.0) as u32)
            }
            "day_of_week" => {
                const DAYS: [&str; 7] = [
                    "Monday",
                    "Tuesday",
                    "Wednesday",
                    "Thursday",
                    "Friday",
                    "Saturday",
                    "Sunday",
                ];
                let day = DAYS.get(value as usize).copied().unwrap_or("day");
                format!("on a {day}, {usual}")
            }
            "transaction_type" => {
                const KINDS: [&str; 3] = ["a purchase", "a withdrawal", "a transfer"];
                let kind = KINDS.get(value as usize).copied().unwrap_or("this type");
                format!("{kind}, {usual}")
            }
            "merchant_category" => format!("merchant category {value}, {usual}"),
            _ if self.is_code(i) => format!("{feature} {value}, {usual}"),
            _ => {
                let z = self.scaler().scale_one(i, value);
                let how = match (direction, z) {
                    (_, z) if z >= 3.0 => "far above usual",
                    (_, z) if z >= 1.5 => "above usual",
                    (_, z) if z <= -3.0 => "far below usual",
                    (_, z) if z <= -1.5 => "below usual",
                    (Direction::RaisesRisk, _) => "unusual in this combination",
                    (Direction::LowersRisk, _) => "typical",
                };
                format!("{feature} {how}")
            }
        }
    }

    /// Whether feature `i` is a code (hashed or looked up from text), not a quantity.
    fn is_code(&self, i: usize) -> bool {
        use crate::normalize::Source;
        self.normalization().rules.get(i).is_some_and(|r| {
            r.sources
                .iter()
                .any(|s| matches!(s, Source::Hash { .. } | Source::Lookup { .. }))
        })
    }
}

/// Indices of the `top` largest |φ|, largest first (ties by index).
fn ranked(phi: &[f64], top: usize) -> impl Iterator<Item = usize> {
    let mut order: Vec<usize> = (0..phi.len()).collect();
    order.sort_by(|&a, &b| phi[b].abs().total_cmp(&phi[a].abs()).then(a.cmp(&b)));
    order.into_iter().take(top)
}

/// "7 transactions on this card in 10 minutes", from a velocity definition and its value.
fn velocity_phrase(d: &crate::velocity::Definition, value: f64) -> String {
    use crate::velocity::Aggregate;
    let v = if d.log { libm::exp(value) } else { value };
    let entity = d
        .entity
        .strip_suffix("_id")
        .unwrap_or(&d.entity)
        .replace('_', " ");
    let window = d.window.map_or(String::new(), |w| duration(w.seconds));
    if let Some(den) = &d.per {
        // "amount in 2 hours 4.2× this card's mean amount over 30 days"
        let what = |d: &crate::velocity::Definition| match &d.aggregate {
            Aggregate::Count => "transactions".to_string(),
            Aggregate::Sum(f) => f.clone(),
            Aggregate::Mean(f) => format!("mean {f}"),
            Aggregate::Distinct(f) => format!("different {f} values"),
            _ => String::new(),
        };
        let over = den.window.map_or(String::new(), |w| duration(w.seconds));
        return format!(
            "{} in {window} {v:.1}× this {entity}'s {} over {over}",
            what(d),
            what(den)
        );
    }
    let count = |v: f64, one: &str, many: &str| {
        let n = v.round();
        format!("{n} {}", if n == 1.0 { one } else { many })
    };
    match &d.aggregate {
        Aggregate::Count => format!(
            "{} on this {entity} in {window}",
            count(v, "transaction", "transactions")
        ),
        Aggregate::Sum(f) => format!("{f} totalling {v:.2} on this {entity} in {window}"),
        Aggregate::Mean(f) => format!("mean {f} {v:.2} on this {entity} over {window}"),
        Aggregate::Distinct(f) => format!(
            "{} on this {entity} in {window}",
            count(v, &format!("{f} value"), &format!("different {f} values"))
        ),
        Aggregate::Seen(f) if v < 0.5 => format!("{f} new to this {entity} in {window}"),
        Aggregate::Seen(f) => {
            let (n, of) = d
                .window
                .map_or((0, 0), |w| (v.round() as u32, w.seconds / w.bucket_seconds));
            let bucket = d
                .window
                .map_or(String::new(), |w| duration(w.bucket_seconds));
            format!("{f} used by this {entity} in {n} of the last {of} periods of {bucket}")
        }
        Aggregate::SecondsSinceLast if v >= 2_592_000.0 => {
            format!("the first transaction on this {entity} in 30 days")
        }
        Aggregate::SecondsSinceLast => format!(
            "{} since this {entity}'s previous transaction",
            duration(v.max(0.0).round() as u32)
        ),
        Aggregate::Ratio(f) => format!("{f} {v:.1}× this {entity}'s mean over {window}"),
    }
}

/// `600` → "10 minutes", `86400` → "1 day".
fn duration(seconds: u32) -> String {
    let (n, unit) = match seconds {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s if s >= 3600 => return format!("{:.1} hours", f64::from(s) / 3600.0),
        s if s >= 60 => return format!("{:.1} minutes", f64::from(s) / 60.0),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Forest, Node, Scaler, Tree};

    #[test]
    fn ranked_by_magnitude_with_direction_and_phrase() {
        let tree = Tree::new(vec![
            Node::Split {
                feature: 0,
                threshold: 0.0,
                right: 2,
            },
            Node::Leaf { samples: 1 },
            Node::Leaf { samples: 1 },
        ])
        .unwrap();
        let model = crate::Model::new(
            vec!["amount".into(), "hour".into(), "day".into()],
            Scaler::new(vec![50.0, 12.0, 3.0], vec![10.0, 4.0, 2.0]).unwrap(),
            Forest::new(vec![tree], 2, -0.5).unwrap(),
            vec![],
        )
        .unwrap();
        let row = [100.0, 5.0, 3.0]; // z = 5, -1.75, 0
        let phi = [-0.8, 0.1, -0.3];
        let f = model.risk_factors(&row, &phi, 2);
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].feature, f[0].direction),
            ("amount", Direction::RaisesRisk)
        );
        assert_eq!(f[0].phrase, "amount far above usual");
        assert_eq!(
            (f[1].feature, f[1].phrase.as_str()),
            ("day", "day unusual in this combination")
        );
        let all = model.risk_factors(&row, &phi, 10);
        assert_eq!(all.len(), 3);
        // hour 5 against a mean of 12 (scale 4): 7 hours away on the clock.
        assert_eq!(all[2].phrase, "at 05:00, outside the usual hours");
        assert_eq!(all[2].direction.as_str(), "decreases_risk");
    }

    #[test]
    fn velocity_and_clock_phrases_read_as_words() {
        use crate::velocity::Definition;
        let d: Definition = "count by card_id over 10m".parse().unwrap();
        assert_eq!(
            velocity_phrase(&d, 7.0),
            "7 transactions on this card in 10 minutes"
        );
        let d: Definition = "log(count) by card_id over 1h".parse().unwrap();
        assert_eq!(
            velocity_phrase(&d, libm::log(3.0)),
            "3 transactions on this card in 1 hour"
        );
        let d: Definition = "seconds_since_last by card_id".parse().unwrap();
        assert_eq!(
            velocity_phrase(&d, 90.0),
            "1.5 minutes since this card's previous transaction"
        );
        assert_eq!(
            velocity_phrase(&d, 2_592_000.0),
            "the first transaction on this card in 30 days"
        );
        let d: Definition = "distinct(merchant_id) by card_id over 1h".parse().unwrap();
        assert_eq!(
            velocity_phrase(&d, 4.0),
            "4 different merchant_id values on this card in 1 hour"
        );
        let d: Definition = "amount / mean(amount) by card_id over 30d every 1d"
            .parse()
            .unwrap();
        assert_eq!(
            velocity_phrase(&d, 12.0),
            "amount 12.0× this card's mean over 30 days"
        );
        let d: Definition =
            "log(sum(amount) by card_id over 2h / mean(amount) by card_id over 30d every 1d)"
                .parse()
                .unwrap();
        assert_eq!(
            velocity_phrase(&d, libm::log(4.2)),
            "amount in 2 hours 4.2× this card's mean amount over 30 days"
        );
        let d: Definition = "seen(merchant_id) by card_id over 30d every 1d"
            .parse()
            .unwrap();
        assert_eq!(
            velocity_phrase(&d, 0.0),
            "merchant_id new to this card in 30 days"
        );
        assert_eq!(
            velocity_phrase(&d, 4.0),
            "merchant_id used by this card in 4 of the last 30 periods of 1 day"
        );
    }

    #[test]
    fn the_hour_is_read_on_a_clock_and_codes_are_usual_or_not() {
        let tree = Tree::new(vec![Node::Leaf { samples: 1 }]).unwrap();
        let features = crate::normalize::LEGACY_FEATURES.map(String::from).to_vec();
        let model = crate::Model::new(
            features,
            Scaler::new(
                vec![50.0, 22.0, 3.0, 2.0, 0.5],
                vec![10.0, 2.0, 2.0, 2.0, 0.5],
            )
            .unwrap(),
            Forest::new(vec![tree], 2, -0.5).unwrap(),
            vec![],
        )
        .unwrap();
        // 1 a.m. is three hours after a 22:00 mean on the clock, not 21 hours before it.
        assert_eq!(
            model.phrase(1, 1.0, Direction::RaisesRisk),
            "at 01:00, outside the usual hours"
        );
        assert_eq!(
            model.phrase(1, 23.0, Direction::LowersRisk),
            "at 23:00, within the usual hours"
        );
        assert_eq!(
            model.phrase(4, 2.0, Direction::RaisesRisk),
            "a transfer, unusual for this traffic"
        );
        assert_eq!(
            model.phrase(3, 9.0, Direction::LowersRisk),
            "merchant category 9, usual for this traffic"
        );
        // The supervised model's factors: φ > 0 raises risk; the last is the forest's part.
        let f = model.fraud_risk_factors(
            &[100.0, 1.0, 2.0, 9.0, 2.0],
            0.7,
            &[0.1, 0.0, 0.0, -0.5, 0.0, 2.0],
            2,
        );
        assert_eq!(
            (f[0].feature, f[0].direction),
            ("anomaly_score", Direction::RaisesRisk)
        );
        assert_eq!(f[0].value, 0.7);
        assert_eq!(
            (f[1].feature, f[1].direction),
            ("merchant_category", Direction::LowersRisk)
        );
    }
}
