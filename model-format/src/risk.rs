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
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| phi[b].abs().total_cmp(&phi[a].abs()).then(a.cmp(&b)));
        order
            .into_iter()
            .take(top)
            .map(|i| {
                let feature = self.features()[i].as_str();
                let direction = if phi[i] < 0.0 {
                    Direction::RaisesRisk
                } else {
                    Direction::LowersRisk
                };
                let z = self.scaler().scale_one(i, row[i]);
                RiskFactor {
                    feature,
                    value: row[i],
                    contribution: phi[i],
                    direction,
                    phrase: phrase(feature, z, direction),
                }
            })
            .collect()
    }
}

fn phrase(feature: &str, z: f64, direction: Direction) -> String {
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
        assert_eq!(all[2].phrase, "hour below usual");
        assert_eq!(all[2].direction.as_str(), "decreases_risk");
    }
}
