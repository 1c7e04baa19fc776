//! The supervised section (`GBDT`): encoding round trip, scoring and explanation through the
//! model, and refusal of damaged sections.

mod common;

use common::{leaf, reseal, split};
use model_format::booster::{BoostTree, Booster, Calibration, Thresholds};
use model_format::{Forest, Model, Scaler, Tree, section_table};

fn model() -> Model {
    let forest = Forest::new(
        vec![
            Tree::new(vec![split(0, 0.0, 2), leaf(3), leaf(5)]).unwrap(),
            Tree::new(vec![split(1, 0.5, 2), leaf(6), leaf(2)]).unwrap(),
        ],
        8,
        -0.5,
    )
    .unwrap();
    Model::new(
        vec!["amount".into(), "card_count_10m".into()],
        Scaler::new(vec![50.0, 1.0], vec![20.0, 2.0]).unwrap(),
        forest,
        vec![("seed".into(), "1".into())],
    )
    .unwrap()
}

/// Input 2 is the forest's risk; input 0 repeats on a path.
fn booster() -> Booster {
    let trees = vec![
        BoostTree::new(
            vec![
                split(0, 1.0, 4),
                split(2, 0.6, 3),
                leaf(40),
                leaf(10),
                split(0, 3.0, 6),
                leaf(8),
                leaf(2),
            ],
            &[-0.5, 0.7, 0.4, 2.5],
        )
        .unwrap(),
        BoostTree::new(vec![split(1, 0.25, 2), leaf(50), leaf(10)], &[-0.1, 0.9]).unwrap(),
    ];
    Booster::new(
        trees,
        -3.0,
        Calibration {
            slope: 1.1,
            intercept: 0.2,
        },
        Thresholds {
            review: Some(0.2),
            block: Some(0.8),
        },
        3,
    )
    .unwrap()
}

#[test]
fn round_trip_keeps_every_bit_and_the_section_is_optional() {
    let m = model().with_supervised(booster()).unwrap();
    let bytes = m.to_bytes().unwrap();
    let back = Model::from_bytes(&bytes).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.to_bytes().unwrap(), bytes);
    let gbdt = section_table(&bytes)
        .unwrap()
        .into_iter()
        .find(|s| &s.tag == b"GBDT")
        .expect("a GBDT section");
    assert!(!gbdt.required, "readers that predate it must skip it");
    // Without the section the forest's bytes are what they were.
    let plain = model().to_bytes().unwrap();
    assert_eq!(Model::from_bytes(&plain).unwrap().supervised(), None);
    assert!(bytes.len() > plain.len());
}

#[test]
fn fraud_scores_and_explanations_add_up() {
    let m = model().with_supervised(booster()).unwrap();
    for row in [[10.0, 0.0], [120.0, 6.0], [60.0, 1.0], [200.0, 0.0]] {
        let (score, fraud) = m.score_fraud(&row).unwrap();
        assert_eq!(score, m.score(&row).unwrap());
        let fraud = fraud.unwrap();
        let mut phi = [0.0; 3];
        let (score2, explained) = m.explain_fraud(&row, &mut phi).unwrap();
        let (fraud2, expected) = explained.unwrap();
        assert_eq!((score2, fraud2), (score, fraud));
        let sum = phi.iter().sum::<f64>() + expected;
        assert!(
            (sum - fraud.log_odds).abs() < 1e-12,
            "{sum} vs {}",
            fraud.log_odds
        );
        assert!((0.0..=1.0).contains(&fraud.probability));
        // Both explanations at once give the same bits as each alone.
        let (mut forest_phi, mut both_phi) = ([0.0; 2], [0.0; 3]);
        let (e, both) = m
            .explain_with_fraud(&row, &mut forest_phi, &mut both_phi)
            .unwrap();
        let mut alone = [0.0; 2];
        assert_eq!(e, m.explain(&row, &mut alone).unwrap());
        assert_eq!((forest_phi, both_phi), (alone, phi));
        assert_eq!(both, Some((fraud, expected)));
    }
    // A model without the section scores as before and explains nothing more.
    let (_, none) = model().score_fraud(&[10.0, 0.0]).unwrap();
    assert!(none.is_none());
}

#[test]
fn a_booster_of_the_wrong_width_is_refused() {
    let wrong = Booster::new(
        vec![BoostTree::new(vec![leaf(1)], &[0.0]).unwrap()],
        0.0,
        Calibration::IDENTITY,
        Thresholds::default(),
        2,
    )
    .unwrap();
    assert!(model().with_supervised(wrong).is_err());
}

#[test]
fn damaged_sections_are_refused_not_misread() {
    let m = model().with_supervised(booster()).unwrap();
    let bytes = m.to_bytes().unwrap();
    let info = section_table(&bytes).unwrap();
    // Where the GBDT payload starts: sections follow the 24-byte header back to back.
    let mut at = 24;
    for s in &info {
        if &s.tag == b"GBDT" {
            break;
        }
        at += s.total_bytes as usize;
    }
    let payload = at + 16;
    // Flip bytes across the payload (fixing the checksum each time): every variant must be
    // refused or decode into a valid model, never panic.
    let mut refused = 0;
    for offset in (payload..bytes.len() - 4).step_by(3) {
        let mut b = bytes.clone();
        b[offset] ^= 0x5a;
        reseal(&mut b);
        if Model::from_bytes(&b).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 10, "only {refused} damaged variants refused");
    // A NaN leaf value is refused by name.
    let mut b = bytes.clone();
    // The last leaf value sits just before the section's padding and the trailer.
    let gbdt = info.iter().find(|s| &s.tag == b"GBDT").unwrap();
    let end = payload + gbdt.payload_bytes as usize;
    b[end - 8..end].copy_from_slice(&f64::NAN.to_le_bytes());
    reseal(&mut b);
    let err = Model::from_bytes(&b).unwrap_err().to_string();
    assert!(err.contains("supervised model"), "{err}");
}
