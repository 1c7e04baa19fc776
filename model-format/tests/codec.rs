//! Encoding round trips and hostile bytes: every corruption is a typed error, never a panic.

mod common;

use common::reseal;
use model_format::{
    DecodeError, FileTrust, Forest, InvalidModel, Model, ModelId, Node, Scaler, Tree,
};

/// A small deterministic model: `trees` trees of depth 3 over 3 features.
fn sample_model(trees: usize) -> Model {
    let mut out = Vec::new();
    for t in 0..trees {
        let f = |k: usize| ((t + k) % 3) as u16;
        let th = |k: usize| (t as f32 * 0.37 + k as f32 * 0.11).sin();
        // pre-order: 0 split, 1 split, 2 leaf, 3 leaf, 4 split, 5 leaf, 6 leaf
        let nodes = vec![
            Node::Split {
                feature: f(0),
                threshold: th(0),
                right: 4,
            },
            Node::Split {
                feature: f(1),
                threshold: th(1),
                right: 3,
            },
            Node::Leaf {
                samples: 1 + t as u32 % 5,
            },
            Node::Leaf { samples: 2 },
            Node::Split {
                feature: f(2),
                threshold: th(2),
                right: 6,
            },
            Node::Leaf { samples: 7 },
            Node::Leaf { samples: 1 },
        ];
        out.push(Tree::new(nodes).unwrap());
    }
    Model::new(
        vec!["amount".into(), "hour".into(), "day_of_week".into()],
        Scaler::new(vec![50.0, 12.0, 3.0], vec![20.0, 6.5, 2.0]).unwrap(),
        Forest::new(out, 16, -0.52).unwrap(),
        vec![("trainer".into(), "test".into())],
    )
    .unwrap()
}

fn rows() -> Vec<[f64; 3]> {
    (0..200)
        .map(|i| {
            [
                f64::from(i) * 1.7 - 40.0,
                f64::from(i % 24),
                f64::from(i % 7),
            ]
        })
        .collect()
}

#[test]
fn round_trip_preserves_model_and_scores() {
    let model = sample_model(10);
    let bytes = model.to_bytes().unwrap();
    let back = Model::from_bytes(&bytes).unwrap();
    assert_eq!(back, model);
    for r in rows() {
        assert_eq!(model.score(&r).unwrap(), back.score(&r).unwrap());
    }
    // Encoding is deterministic.
    assert_eq!(back.to_bytes().unwrap(), bytes);
    assert_eq!(
        ModelId::of(&bytes).unwrap().checksum,
        u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap())
    );
}

#[test]
fn every_truncation_is_a_typed_error() {
    let bytes = sample_model(3).to_bytes().unwrap();
    for len in 0..bytes.len() {
        let err = Model::from_bytes(&bytes[..len]).unwrap_err();
        if len >= 24 {
            assert!(
                matches!(err, DecodeError::Truncated { .. }),
                "len {len}: {err}"
            );
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Model::from_bytes(&longer),
        Err(DecodeError::LengthMismatch { .. })
    ));
}

#[test]
fn every_flipped_byte_is_rejected() {
    let bytes = sample_model(3).to_bytes().unwrap();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            assert!(
                Model::from_bytes(&b).is_err(),
                "flip {mask:#x} at {i} was accepted"
            );
        }
    }
}

#[test]
fn wrong_magic_and_version() {
    let bytes = sample_model(2).to_bytes().unwrap();
    let mut b = bytes.clone();
    b[0] = b'X';
    assert_eq!(Model::from_bytes(&b), Err(DecodeError::BadMagic));
    assert_eq!(Model::from_bytes(b"PK\x03\x04"), Err(DecodeError::BadMagic));
    let mut b = bytes.clone();
    b[8..10].copy_from_slice(&2u16.to_le_bytes());
    reseal(&mut b);
    assert_eq!(
        Model::from_bytes(&b),
        Err(DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
}

#[test]
fn checksum_mismatch_is_reported() {
    let mut b = sample_model(2).to_bytes().unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    assert!(matches!(
        Model::from_bytes(&b),
        Err(DecodeError::Checksum { .. })
    ));
}

/// Offset of the first node record of the first tree (FRST section is last).
fn first_node_offset(bytes: &[u8], trees: usize) -> usize {
    // 7 nodes x 8 bytes + 8 bytes tree header per tree, preceded by 16 bytes of forest header.
    let forest_payload = 16 + trees * (8 + 7 * 8);
    bytes.len() - 4 - forest_payload.next_multiple_of(8) + 16 + 8
}

#[test]
fn structurally_corrupt_but_sealed_files_are_invalid() {
    let bytes = sample_model(2).to_bytes().unwrap();
    let node0 = first_node_offset(&bytes, 2);
    // Root's right child pushed beyond the tree.
    let mut b = bytes.clone();
    b[node0 + 2..node0 + 4].copy_from_slice(&40u16.to_le_bytes());
    reseal(&mut b);
    assert!(
        matches!(
            Model::from_bytes(&b),
            Err(DecodeError::Invalid(InvalidModel::Tree { tree: 0, .. }))
        ),
        "{:?}",
        Model::from_bytes(&b)
    );
    // Root splits on a feature the schema does not have.
    let mut b = bytes.clone();
    b[node0..node0 + 2].copy_from_slice(&9u16.to_le_bytes());
    reseal(&mut b);
    assert!(matches!(
        Model::from_bytes(&b),
        Err(DecodeError::Invalid(InvalidModel::FeatureIndex {
            index: 9,
            ..
        }))
    ));
    // NaN threshold.
    let mut b = bytes.clone();
    b[node0 + 4..node0 + 8].copy_from_slice(&f32::NAN.to_bits().to_le_bytes());
    reseal(&mut b);
    assert!(matches!(
        Model::from_bytes(&b),
        Err(DecodeError::Invalid(InvalidModel::Tree { .. }))
    ));
    // A huge tree count cannot make the reader allocate: it is checked against remaining bytes.
    let mut b = bytes.clone();
    let frst = node0 - 8 - 16;
    b[frst..frst + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut b);
    assert!(matches!(
        Model::from_bytes(&b),
        Err(DecodeError::Count { .. })
    ));
}

/// Appends a section (tag, flags, payload) to an encoded file and fixes up count, length, CRC.
fn with_extra_section(bytes: &[u8], tag: &[u8; 4], flags: u32) -> Vec<u8> {
    let mut b = bytes[..bytes.len() - 4].to_vec();
    b.extend_from_slice(tag);
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&3u64.to_le_bytes());
    b.extend_from_slice(&[1, 2, 3, 0, 0, 0, 0, 0]);
    let count = u32::from_le_bytes(b[12..16].try_into().unwrap()) + 1;
    b[12..16].copy_from_slice(&count.to_le_bytes());
    let len = (b.len() + 4) as u64;
    b[16..24].copy_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    reseal(&mut b);
    b
}

#[test]
fn unknown_sections_follow_the_compatibility_policy() {
    let model = sample_model(2);
    let bytes = model.to_bytes().unwrap();
    let optional = with_extra_section(&bytes, b"XTRA", 0);
    assert_eq!(Model::from_bytes(&optional).unwrap(), model);
    let required = with_extra_section(&bytes, b"XTRA", 1);
    assert_eq!(
        Model::from_bytes(&required),
        Err(DecodeError::UnknownRequiredSection { tag: *b"XTRA" })
    );
    let dup = with_extra_section(&bytes, b"SCHM", 1);
    assert!(matches!(
        Model::from_bytes(&dup),
        Err(DecodeError::DuplicateSection { .. } | DecodeError::Truncated { .. })
    ));
}

#[test]
fn scoring_rejects_bad_rows() {
    let m = sample_model(2);
    assert!(m.score(&[1.0, 2.0]).is_err());
    assert!(m.score(&[f64::NAN, 2.0, 3.0]).is_err());
    assert!(m.score(&[f64::INFINITY, 2.0, 3.0]).is_err());
    // Extreme but finite values still score.
    assert!(m.score(&[1e300, -1e300, 0.0]).is_ok());
}

fn every_source_kind() -> model_format::Normalization {
    use model_format::normalize::{FeatureRule, Normalization, Source};
    Normalization {
        hash_seed: 0xDEAD_BEEF,
        rules: vec![
            FeatureRule::numeric("amount"),
            FeatureRule {
                sources: vec![
                    Source::Field("hour".into()),
                    Source::TimestampHour("ts".into()),
                ],
                range: Some((0.0, 23.0)),
                integer: true,
            },
            FeatureRule {
                sources: vec![
                    Source::TimestampWeekday("ts".into()),
                    Source::Lookup {
                        field: "kind".into(),
                        table: vec![("a".into(), 1.0), ("b".into(), 2.5)],
                    },
                    Source::Hash {
                        field: "kind".into(),
                        buckets: 7,
                    },
                    Source::Default(-1.0),
                ],
                range: None,
                integer: false,
            },
        ],
    }
}

#[test]
fn normalization_rules_round_trip() {
    let model = sample_model(2)
        .with_normalization(every_source_kind())
        .unwrap();
    let bytes = model.to_bytes().unwrap();
    let back = Model::from_bytes(&bytes).unwrap();
    assert_eq!(back.normalization(), model.normalization());
    assert_eq!(back, model);
    // Without NORM a model reads each feature by name (generic numeric schema).
    let plain = Model::from_bytes(&sample_model(2).to_bytes().unwrap()).unwrap();
    assert_eq!(
        plain.normalization(),
        &model_format::Normalization::generic(plain.features())
    );
}

#[test]
fn unknown_normalization_source_is_rejected() {
    let bytes = sample_model(2)
        .with_normalization(every_source_kind())
        .unwrap()
        .to_bytes()
        .unwrap();
    let tag = bytes.windows(4).position(|w| w == b"NORM").unwrap();
    // payload: u64 seed, u32 rules, then rule 0: flags (0), source count, first kind.
    let kind = tag + 16 + 8 + 4 + 2;
    assert_eq!(bytes[kind], 1, "first source of rule 0 is a Field");
    let mut b = bytes.clone();
    b[kind] = 42;
    reseal(&mut b);
    assert_eq!(
        Model::from_bytes(&b),
        Err(DecodeError::UnknownSource { kind: 42 })
    );
    // Rules that disagree with the schema width are invalid.
    let mut b = bytes.clone();
    b[tag + 16 + 8..tag + 16 + 12].copy_from_slice(&2u32.to_le_bytes());
    reseal(&mut b);
    assert!(Model::from_bytes(&b).is_err());
}

/// `bytes` copied to a leaked buffer at `misalign` bytes past an 8-byte boundary: the static
/// lifetime an embedded file has, with the alignment chosen.
fn leak_at(bytes: &[u8], misalign: usize) -> &'static [u8] {
    let words = vec![0u64; (bytes.len() + misalign).div_ceil(8) + 1].leak();
    let all: &'static mut [u8] = bytemuck::cast_slice_mut(words);
    let out = &mut all[misalign..misalign + bytes.len()];
    out.copy_from_slice(bytes);
    out
}

#[test]
fn static_bytes_decode_to_the_same_model_aligned_or_not() {
    let model = sample_model(6);
    let bytes = model.to_bytes().unwrap();
    let crc = ModelId::of(&bytes).unwrap().checksum;
    for misalign in [0, 1, 4] {
        for verified in [FileTrust::Untrusted, FileTrust::ChecksumVerified(crc)] {
            let decoded = Model::from_static_bytes(leak_at(&bytes, misalign), verified).unwrap();
            assert_eq!(decoded, model, "misalign {misalign}, verified {verified:?}");
            for r in rows() {
                assert_eq!(
                    decoded.score(&r).unwrap().score_samples.to_bits(),
                    model.score(&r).unwrap().score_samples.to_bits()
                );
            }
            assert_eq!(decoded.to_bytes().unwrap(), bytes);
        }
    }
}

#[test]
fn static_bytes_are_validated_like_any_other() {
    let bytes = sample_model(2).to_bytes().unwrap();
    let crc = ModelId::of(&bytes).unwrap().checksum;
    // A checksum verified for other bytes is a mismatch, not a licence to skip it.
    assert!(matches!(
        Model::from_static_bytes(leak_at(&bytes, 0), FileTrust::ChecksumVerified(crc ^ 1)),
        Err(DecodeError::Checksum { .. })
    ));
    // Structural checks still run on records used in place.
    let node0 = first_node_offset(&bytes, 2);
    let mut b = bytes.clone();
    b[node0 + 2..node0 + 4].copy_from_slice(&40u16.to_le_bytes());
    reseal(&mut b);
    let resealed = ModelId::of(&b).unwrap().checksum;
    for misalign in [0, 3] {
        assert!(matches!(
            Model::from_static_bytes(leak_at(&b, misalign), FileTrust::ChecksumVerified(resealed)),
            Err(DecodeError::Invalid(InvalidModel::Tree { tree: 0, .. }))
        ));
    }
    // And every truncation is still a typed error.
    for len in 0..bytes.len() {
        assert!(Model::from_static_bytes(leak_at(&bytes[..len], 0), FileTrust::Untrusted).is_err());
    }
}

/// The section table as `trainer inspect` shows it: every section, sizes that add up to the
/// file, and a typed error (not a wrong table) for a corrupt file.
#[test]
fn section_table_lists_every_section() {
    let bytes = sample_model(6).to_bytes().unwrap();
    let table = model_format::section_table(&bytes).unwrap();
    let tags: Vec<&[u8; 4]> = table.iter().map(|s| &s.tag).collect();
    for required in [b"SCHM", b"SCAL", b"FRST"] {
        assert!(tags.contains(&required), "{tags:?}");
        assert!(table.iter().any(|s| &s.tag == required && s.required));
    }
    let sum: u64 = table.iter().map(|s| s.total_bytes).sum();
    assert_eq!(sum as usize, bytes.len() - 24 - 4);
    for s in &table {
        assert!(s.total_bytes >= s.payload_bytes + 16 && s.total_bytes % 8 == 0);
    }
    assert!(model_format::section_table(&bytes[..bytes.len() - 1]).is_err());
    let mut flipped = bytes.clone();
    flipped[40] ^= 1;
    assert!(model_format::section_table(&flipped).is_err());
}

/// The optional training score distribution (SDST): round trip, checks, and files without it.
#[test]
fn score_distribution_round_trips_and_is_checked() {
    let plain = sample_model(3);
    assert_eq!(plain.score_distribution(), None);
    let q = vec![-0.2, -0.05, 0.0, 0.0, 0.07, 0.19];
    let with = plain.clone().with_score_distribution(q.clone()).unwrap();
    let bytes = with.to_bytes().unwrap();
    let back = Model::from_bytes(&bytes).unwrap();
    assert_eq!(back.score_distribution(), Some(&q[..]));
    assert_eq!(back, with);
    // The section is optional and scoring ignores it: same scores as without it.
    let row = [10.0, 3.0, 2.0];
    assert_eq!(back.score(&row).unwrap(), plain.score(&row).unwrap());
    let tags: Vec<[u8; 4]> = model_format::section_table(&bytes)
        .unwrap()
        .iter()
        .map(|s| s.tag)
        .collect();
    assert_eq!(tags.last(), Some(b"SDST"));
    assert!(
        !model_format::section_table(&bytes)
            .unwrap()
            .last()
            .unwrap()
            .required
    );

    for bad in [
        vec![0.1],
        vec![0.0, f64::NAN],
        vec![0.2, 0.1],
        vec![0.0; model_format::MAX_SCORE_QUANTILES + 1],
    ] {
        let e = plain.clone().with_score_distribution(bad).unwrap_err();
        assert!(matches!(e, InvalidModel::ScoreDistribution(_)), "{e}");
    }
}
