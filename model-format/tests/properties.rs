//! Property tests of the encoding: random forests, scalers, metadata and normalization rules
//! survive encode → decode unchanged and score bit-identically; corrupted files are refused,
//! and files corrupted then resealed (CRC recomputed) either fail to decode or decode to a model
//! that scores, explains and normalizes without panicking.
//!
//! Models are built from a proptest-chosen seed and shape parameters with a SplitMix stream, so
//! a failure reports (and shrinks) those parameters.

mod common;

use common::grow::SplitMix;
use model_format::normalize::{FeatureRule, Normalization, Source, Value};
use model_format::{Forest, Model, ModelId, Node, Payload, Scaler, Tree};
use proptest::prelude::*;

/// Field names payloads and rules draw from, so lookups sometimes hit.
const FIELDS: [&str; 6] = ["amount", "hour", "ts", "kind", "merchant", "x"];
const WORDS: [&str; 6] = [
    "purchase",
    "Transfer ",
    "",
    "ÉLAN",
    "2024-02-29T23:59:59Z",
    "12.5",
];

#[derive(Debug, Clone, Copy)]
struct Shape {
    seed: u64,
    features: usize,
    trees: usize,
    max_depth: u32,
    with_rules: bool,
}

fn shapes() -> impl Strategy<Value = Shape> {
    (
        any::<u64>(),
        1usize..=6,
        1usize..=5,
        0u32..=6,
        any::<bool>(),
    )
        .prop_map(|(seed, features, trees, max_depth, with_rules)| Shape {
            seed,
            features,
            trees,
            max_depth,
            with_rules,
        })
}

/// A threshold: mostly ordinary values, sometimes the awkward ones (±0, ±∞, subnormal, extremes).
fn threshold(rng: &mut SplitMix) -> f32 {
    match rng.below(10) {
        0 => [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE / 2.0,
            f32::MAX,
            f32::MIN,
        ][rng.below(7)],
        _ => (rng.normal() * 2.0) as f32,
    }
}

/// Random pre-order tree: splits until `max_depth` or a coin says leaf.
fn grow_tree(nodes: &mut Vec<Node>, rng: &mut SplitMix, depth: u32, max_depth: u32, m: usize) {
    if depth >= max_depth || rng.below(4) == 0 {
        let samples = match rng.below(8) {
            0 => u32::MAX - rng.below(3) as u32,
            _ => 1 + rng.below(300) as u32,
        };
        nodes.push(Node::Leaf { samples });
        return;
    }
    let at = nodes.len();
    nodes.push(Node::Leaf { samples: 1 }); // placeholder
    grow_tree(nodes, rng, depth + 1, max_depth, m);
    let right = nodes.len() as u32;
    grow_tree(nodes, rng, depth + 1, max_depth, m);
    nodes[at] = Node::Split {
        feature: rng.below(m) as u16,
        threshold: threshold(rng),
        right,
    };
}

fn text(rng: &mut SplitMix) -> String {
    let mut s = String::from(WORDS[rng.below(WORDS.len())]);
    for _ in 0..rng.below(3) {
        s.push(char::from_u32(rng.below(0x3000) as u32).unwrap_or('?'));
    }
    s
}

fn field(rng: &mut SplitMix) -> String {
    FIELDS[rng.below(FIELDS.len())].to_string()
}

fn source(rng: &mut SplitMix) -> Source {
    match rng.below(6) {
        0 => Source::Field(field(rng)),
        1 => Source::TimestampHour(field(rng)),
        2 => Source::TimestampWeekday(field(rng)),
        3 => Source::Lookup {
            field: field(rng),
            table: (0..rng.below(4))
                .map(|_| (text(rng), rng.normal() * 10.0))
                .collect(),
        },
        4 => Source::Hash {
            field: field(rng),
            buckets: 1 + rng.below(1000) as u32,
        },
        _ => Source::Default(rng.normal() * 100.0),
    }
}

fn rules(rng: &mut SplitMix, m: usize) -> Normalization {
    Normalization {
        hash_seed: rng.next_u64(),
        rules: (0..m)
            .map(|_| FeatureRule {
                sources: (0..1 + rng.below(4)).map(|_| source(rng)).collect(),
                range: (rng.below(2) == 0).then(|| {
                    let lo = rng.normal() * 50.0;
                    (lo, lo + rng.unit() * 100.0)
                }),
                integer: rng.below(3) == 0,
            })
            .collect(),
    }
}

fn model(shape: Shape) -> Model {
    let mut rng = SplitMix(shape.seed);
    let m = shape.features;
    let features: Vec<String> = (0..m).map(|i| format!("f{i}{}", text(&mut rng))).collect();
    let mean = (0..m)
        .map(|_| rng.normal() * 10f64.powi(rng.below(7) as i32))
        .collect();
    let scale = (0..m)
        .map(|_| 10f64.powi(rng.below(9) as i32 - 4) * (0.5 + rng.unit()))
        .collect();
    let trees = (0..shape.trees)
        .map(|_| {
            let mut nodes = Vec::new();
            grow_tree(&mut nodes, &mut rng, 0, shape.max_depth, m);
            Tree::new(nodes).unwrap()
        })
        .collect();
    let max_samples = 1 + rng.below(4096) as u32;
    let offset = -rng.unit();
    let metadata = (0..rng.below(4))
        .map(|i| (format!("k{i}"), text(&mut rng)))
        .collect();
    let model = Model::new(
        features,
        Scaler::new(mean, scale).unwrap(),
        Forest::new(trees, max_samples, offset).unwrap(),
        metadata,
    )
    .unwrap();
    if shape.with_rules {
        model.with_normalization(rules(&mut rng, m)).unwrap()
    } else {
        model
    }
}

/// Rows near the scaler's range, plus extremes and the occasional non-finite value.
fn rows(model: &Model, seed: u64, count: usize) -> Vec<Vec<f64>> {
    let mut rng = SplitMix(seed);
    let s = model.scaler();
    (0..count)
        .map(|_| {
            (0..s.len())
                .map(|j| match rng.below(20) {
                    0 => [0.0, -0.0, 1e308, -1e308, f64::MIN_POSITIVE][rng.below(5)],
                    1 => [f64::NAN, f64::INFINITY][rng.below(2)],
                    _ => s.mean()[j] + s.scale()[j] * rng.normal() * 2.0,
                })
                .collect()
        })
        .collect()
}

struct Fields(Vec<(String, Option<Value<'static>>)>);

impl Payload for Fields {
    fn get(&self, field: &str) -> Option<Value<'_>> {
        self.0
            .iter()
            .find(|(k, _)| k == field)
            .and_then(|(_, v)| *v)
    }
}

fn payload(seed: u64) -> Fields {
    let mut rng = SplitMix(seed);
    Fields(
        FIELDS
            .iter()
            .map(|f| {
                let v = match rng.below(6) {
                    0 => None,
                    1 => Some(Value::Number(rng.normal() * 20.0)),
                    2 => Some(Value::Number(rng.below(24) as f64)),
                    3 => Some(Value::Text(WORDS[rng.below(WORDS.len())])),
                    4 => Some(Value::Bool(rng.below(2) == 0)),
                    _ => Some(Value::Other),
                };
                (f.to_string(), v)
            })
            .collect(),
    )
}

/// Scores, explains and normalizes with `model`; results as bits so NaN-free equality is exact.
fn outcomes(model: &Model, rows: &[Vec<f64>], payload_seed: u64) -> Vec<String> {
    let n = model.features().len();
    let mut out = Vec::new();
    let mut phi = vec![0.0; n];
    for row in rows {
        match model.score(row) {
            Ok(s) => out.push(format!(
                "score {:x} {:x} {:x}",
                s.mean_path_length.to_bits(),
                s.score_samples.to_bits(),
                s.decision.to_bits()
            )),
            Err(e) => out.push(format!("score err {e}")),
        }
        match model.explain(row, &mut phi) {
            Ok(e) => {
                let bits: Vec<u64> = phi.iter().map(|v| v.to_bits()).collect();
                out.push(format!(
                    "explain {:x} {bits:x?}",
                    e.score.mean_path_length.to_bits()
                ));
            }
            Err(e) => out.push(format!("explain err {e}")),
        }
    }
    let mut row = vec![0.0; n];
    match model.normalize(&payload(payload_seed), &mut row) {
        Ok(()) => out.push(format!(
            "{:x?}",
            row.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        )),
        Err(e) => out.push(format!("normalize err {e}")),
    }
    out
}

fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= 4 {
        let n = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_is_exact(shape in shapes(), row_seed in any::<u64>()) {
        let model = model(shape);
        let bytes = model.to_bytes().unwrap();
        let back = Model::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &model);
        prop_assert_eq!(back.normalization(), model.normalization());
        prop_assert_eq!(back.metadata(), model.metadata());
        prop_assert_eq!(back.to_bytes().unwrap(), bytes.clone());
        let id = ModelId::of(&bytes).unwrap();
        prop_assert_eq!(&id.checksum.to_le_bytes()[..], &bytes[bytes.len() - 4..]);
        let rows = rows(&model, row_seed, 16);
        prop_assert_eq!(outcomes(&back, &rows, row_seed), outcomes(&model, &rows, row_seed));
    }

    #[test]
    fn any_single_byte_flip_is_rejected(shape in shapes(), at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let mut bytes = model(shape).to_bytes().unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        // CRC-32 detects every error burst of up to 32 bits.
        prop_assert!(Model::from_bytes(&bytes).is_err());
    }

    #[test]
    fn flipped_bytes_never_panic(
        shape in shapes(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..=4),
        resealed in any::<bool>(),
        row_seed in any::<u64>(),
    ) {
        let mut bytes = model(shape).to_bytes().unwrap();
        for (at, mask) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        if resealed {
            reseal(&mut bytes);
        }
        if let Ok(decoded) = Model::from_bytes(&bytes) {
            // Whatever decodes is a valid model: it evaluates and survives another round trip.
            let rows = rows(&decoded, row_seed, 8);
            let first = outcomes(&decoded, &rows, row_seed);
            let again = Model::from_bytes(&decoded.to_bytes().unwrap()).unwrap();
            prop_assert_eq!(&again, &decoded);
            prop_assert_eq!(outcomes(&again, &rows, row_seed), first);
        }
    }
}

/// The resealed-flip property must actually reach successful decodes, or it tests nothing.
#[test]
fn resealed_flips_often_decode() {
    let mut ok = 0;
    let mut rng = SplitMix(99);
    for case in 0..400u64 {
        let shape = Shape {
            seed: case,
            features: 3,
            trees: 3,
            max_depth: 4,
            with_rules: case % 2 == 0,
        };
        let mut bytes = model(shape).to_bytes().unwrap();
        let i = rng.below(bytes.len() - 4);
        bytes[i] ^= 1 << rng.below(8);
        reseal(&mut bytes);
        if let Ok(m) = Model::from_bytes(&bytes) {
            ok += 1;
            let _ = outcomes(&m, &rows(&m, case, 4), case);
        }
    }
    eprintln!("{ok} of 400 resealed single-bit flips decoded");
    assert!(
        ok >= 40,
        "only {ok} of 400 resealed single-bit flips decoded"
    );
}
