//! Forests in feature groups (SPEC §4.8): the combined score, its explanation, the file section.

mod common;

use common::grow::{grow_model, synthetic_rows};
use model_format::{DecodeError, Forest, InvalidModel, Model, TablesTrust, TreeGroups};

/// Group 0 = `a`'s trees, group 1 = `b`'s, one model with `a`'s schema and scaler.
fn grouped(a: &Model, b: &Model, tail: f64) -> Model {
    let n0 = a.forest().trees().len() as u32;
    let n1 = b.forest().trees().len() as u32;
    let trees = [a.forest().trees(), b.forest().trees()].concat();
    let groups = TreeGroups::new(vec![n0, n0 + n1], vec![tail]).unwrap();
    let forest = Forest::new(trees, a.forest().max_samples(), a.forest().offset())
        .unwrap()
        .with_groups(groups)
        .unwrap();
    Model::new(
        a.features().to_vec(),
        a.scaler().clone(),
        forest,
        a.metadata().to_vec(),
    )
    .unwrap()
}

/// Two plain models on the same rows and scaler (b's trees grown with another seed).
fn parts() -> (Vec<Vec<f64>>, Model, Model) {
    let rows = synthetic_rows(2000, 5);
    let a = grow_model(&rows, 40, 256, 1);
    let b = grow_model(&rows, 30, 256, 2);
    assert_eq!(a.scaler(), b.scaler());
    (rows, a, b)
}

/// `model`'s median mean path length over `rows`: a tail half the rows fall below.
fn median_path_length(model: &Model, rows: &[Vec<f64>]) -> f64 {
    let mut v: Vec<f64> = rows
        .iter()
        .map(|r| model.score(r).unwrap().mean_path_length)
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn the_score_is_group_0_shortened_by_the_later_groups_tails() {
    let (rows, a, b) = parts();
    let tail = median_path_length(&b, &rows);
    let m = grouped(&a, &b, tail);
    let c = model_format::average_path_length(256);
    let (mut shortened, mut plain) = (0, 0);
    for row in &rows {
        let e0 = a.score(row).unwrap().mean_path_length;
        let e1 = b.score(row).unwrap().mean_path_length;
        let want = (e0 - (tail - e1).max(0.0)).max(0.0);
        let got = m.score(row).unwrap();
        assert_eq!(got.mean_path_length.to_bits(), want.to_bits());
        if e1 < tail {
            let samples = -libm::pow(2.0, -want / c);
            assert_eq!(got.score_samples.to_bits(), samples.to_bits());
            assert_eq!(got.decision, samples - a.forest().offset());
            shortened += 1;
        } else {
            // Outside its tail the second group changes nothing.
            assert_eq!(got, a.score(row).unwrap());
            plain += 1;
        }
    }
    assert!(shortened > 500 && plain > 500, "{shortened} / {plain}");
}

#[test]
fn explanations_add_up_and_credit_a_group_only_in_its_tail() {
    let (rows, a, b) = parts();
    let tail = median_path_length(&b, &rows);
    let m = grouped(&a, &b, tail);
    assert_eq!(m.expected_value(), a.expected_value());
    let (mut phi, mut phi_a, mut phi_b) = ([0.0; 5], [0.0; 5], [0.0; 5]);
    let mut worst: f64 = 0.0;
    for row in rows.iter().step_by(3) {
        let e = m.explain(row, &mut phi).unwrap();
        assert_eq!(e.score, m.score(row).unwrap());
        assert_eq!(e.expected_value, a.expected_value());
        let total = phi.iter().sum::<f64>() + e.expected_value;
        worst = worst.max((total - e.mean_path_length()).abs());
        a.explain(row, &mut phi_a).unwrap();
        let eb = b.explain(row, &mut phi_b).unwrap();
        if eb.mean_path_length() >= tail {
            assert_eq!(phi, phi_a, "no credit outside the tail");
        } else {
            // The second group's own attributions, scaled to what it subtracts (and, where that
            // is more than group 0's path length, to what is left of it).
            let e0 = a.score(row).unwrap().mean_path_length;
            let shortening = tail - eb.mean_path_length();
            let clamp = (e0 / shortening).min(1.0);
            let ratio = -shortening / (eb.mean_path_length() - b.expected_value());
            assert!((0.0..=1.0).contains(&ratio));
            for i in 0..5 {
                let want = phi_a[i] + ratio * clamp * phi_b[i];
                assert!((phi[i] - want).abs() <= 1e-12, "{i}: {} vs {want}", phi[i]);
            }
        }
    }
    assert!(worst <= 1e-9, "additivity error {worst}");
}

/// A weight multiplies the later groups' shortening, in the score and in the explanation; the
/// file keeps it, and a weight of 1 keeps the bytes a file had before weights.
#[test]
fn a_weight_multiplies_the_shortening_and_survives_the_file() {
    let (rows, a, b) = parts();
    let tail = median_path_length(&b, &rows);
    let one = grouped(&a, &b, tail);
    let groups = one
        .forest()
        .groups()
        .unwrap()
        .clone()
        .with_weight(2)
        .unwrap();
    let forest = one.forest().clone().with_groups(groups).unwrap();
    let m = Model::new(
        a.features().to_vec(),
        a.scaler().clone(),
        forest,
        a.metadata().to_vec(),
    )
    .unwrap();
    let (mut phi, mut phi_one) = ([0.0; 5], [0.0; 5]);
    let mut shortened = 0;
    for row in rows.iter().step_by(7) {
        let e0 = a.score(row).unwrap().mean_path_length;
        let e1 = b.score(row).unwrap().mean_path_length;
        let want = (e0 - 2.0 * (tail - e1).max(0.0)).max(0.0);
        let e = m.explain(row, &mut phi).unwrap();
        assert_eq!(e.score, m.score(row).unwrap());
        assert_eq!(e.mean_path_length().to_bits(), want.to_bits());
        let total = phi.iter().sum::<f64>() + e.expected_value;
        assert!((total - e.mean_path_length()).abs() <= 1e-9);
        let e_one = one.explain(row, &mut phi_one).unwrap();
        if e1 < tail && want > 0.0 {
            shortened += 1;
            // Twice the later group's part of the weight-1 explanation.
            let phi_a = {
                let mut p = [0.0; 5];
                a.explain(row, &mut p).unwrap();
                p
            };
            for i in 0..5 {
                let want = phi_a[i] + 2.0 * (phi_one[i] - phi_a[i]);
                assert!((phi[i] - want).abs() <= 1e-12, "{i}: {} vs {want}", phi[i]);
            }
        } else if e1 >= tail {
            assert_eq!(e.score, e_one.score);
            assert_eq!(phi, phi_one);
        }
    }
    assert!(shortened > 50, "{shortened}");
    let bytes = m.to_bytes().unwrap();
    let back = Model::from_bytes(&bytes).unwrap();
    assert_eq!(back.forest().groups().unwrap().weight(), 2);
    assert_eq!(back, m);
    // Weight 1 is written as the 0 of files before weights.
    let old = one.to_bytes().unwrap();
    let at = old.windows(4).position(|w| w == b"GRPS").unwrap() + 16 + 4;
    assert_eq!(old[at..at + 4], [0, 0, 0, 0]);
    assert_eq!(bytes[at..at + 4], 2u32.to_le_bytes());
    for w in [0, model_format::MAX_TREE_GROUP_WEIGHT + 1] {
        let g = one.forest().groups().unwrap().clone();
        assert!(matches!(g.with_weight(w), Err(InvalidModel::TreeGroups(_))));
    }
}

/// A batch job explains a grouped forest's rows as `explain` does, to the bit.
#[test]
fn rows_at_once_explain_a_grouped_forest_as_one_by_one() {
    let (rows, a, b) = parts();
    let m = grouped(&a, &b, median_path_length(&b, &rows));
    let rows = &rows[..37];
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let (mut phi, mut out) = (vec![0.0; flat.len()], Vec::new());
    m.explain_rows(&flat, &mut phi, &mut out).unwrap();
    let mut one = [0.0; 5];
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(out[i], m.explain(row, &mut one).unwrap());
        for (got, want) in phi[5 * i..5 * i + 5].iter().zip(one) {
            assert_eq!(got.to_bits(), want.to_bits(), "row {i}");
        }
    }
}

#[test]
fn a_shortening_beyond_group_0_is_clamped_at_zero_and_still_adds_up() {
    let (rows, a, b) = parts();
    // A tail far above every path length: every row shortened past zero.
    let m = grouped(&a, &b, 1e3);
    let mut phi = [0.0; 5];
    for row in rows.iter().step_by(97) {
        let e = m.explain(row, &mut phi).unwrap();
        assert_eq!(e.mean_path_length(), 0.0);
        assert_eq!(e.score.score_samples, -1.0);
        let total = phi.iter().sum::<f64>() + e.expected_value;
        assert!(total.abs() <= 1e-9, "{total}");
    }
}

#[test]
fn groups_round_trip_through_the_file_and_its_tables() {
    let (rows, a, b) = parts();
    let m = grouped(&a, &b, 9.5);
    let bytes = m.to_bytes().unwrap();
    let sections = model_format::section_table(&bytes).unwrap();
    let grps = sections.iter().find(|s| &s.tag == b"GRPS").unwrap();
    assert!(
        grps.required,
        "an old reader must refuse, not score one forest"
    );
    let back = Model::from_bytes(&bytes).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.forest().groups().unwrap().tails(), &[9.5]);
    // Tables built for the grouped model install on a fresh decode and explain the same.
    let tables: &'static [u8] = Vec::leak(m.explanation_tables());
    let fresh = Model::from_bytes(&bytes).unwrap();
    fresh
        .install_explanation_tables(tables, TablesTrust::Untrusted)
        .unwrap();
    let (mut p, mut q) = ([0.0; 5], [0.0; 5]);
    for row in rows.iter().step_by(101) {
        let e = m.explain(row, &mut p).unwrap();
        assert_eq!(fresh.explain(row, &mut q).unwrap(), e);
        assert_eq!(p, q);
    }
    // Without groups the file has no such section (plain models keep their bytes).
    let plain = a.to_bytes().unwrap();
    assert!(
        model_format::section_table(&plain)
            .unwrap()
            .iter()
            .all(|s| &s.tag != b"GRPS")
    );
}

#[test]
fn bad_groups_are_refused() {
    let (_, a, _) = parts();
    let n = a.forest().trees().len() as u32;
    let invalid =
        |r: Result<TreeGroups, InvalidModel>| matches!(r, Err(InvalidModel::TreeGroups(_)));
    assert!(invalid(TreeGroups::new(vec![n], vec![])));
    assert!(invalid(TreeGroups::new(vec![10, n], vec![])));
    assert!(invalid(TreeGroups::new(vec![10, 10, n], vec![1.0, 1.0])));
    assert!(invalid(TreeGroups::new(vec![0, n], vec![1.0])));
    assert!(invalid(TreeGroups::new(vec![10, n], vec![f64::NAN])));
    assert!(invalid(TreeGroups::new(vec![10, n], vec![-1.0])));
    let short = TreeGroups::new(vec![10, n - 1], vec![1.0]).unwrap();
    let forest = a.forest().clone();
    assert!(matches!(
        forest.with_groups(short),
        Err(InvalidModel::TreeGroups(_))
    ));
    // A file whose groups do not cover the forest is refused at decode.
    let b = grow_model(&synthetic_rows(500, 9), 5, 64, 3);
    let m = grouped(&a, &b, 9.0);
    let mut bytes = m.to_bytes().unwrap();
    let at = bytes.windows(4).position(|w| w == b"GRPS").unwrap() + 16 + 8;
    bytes[at..at + 4].copy_from_slice(&3u32.to_le_bytes()); // group 0 ends at tree 3
    bytes[at + 4..at + 8].copy_from_slice(&7u32.to_le_bytes()); // group 1 at 7, not 45
    common::reseal(&mut bytes);
    assert!(matches!(
        Model::from_bytes(&bytes),
        Err(DecodeError::Invalid(InvalidModel::TreeGroups(_)))
    ));
}
