//! Writes the seed corpus of the cargo-fuzz targets (`fuzz/corpus/<target>/seed-*`):
//! `cargo run --release -p model-format --example fuzz_seeds`. Deterministic, so rerunning it
//! only rewrites identical files unless the encoding changed.

#[path = "../tests/common/grow.rs"]
mod grow;

use std::fs;
use std::path::Path;

use model_format::normalize::{FeatureRule, LEGACY_FEATURES, Normalization, Source};
use model_format::{Forest, Model, Node, Scaler, Tree};

fn main() -> std::io::Result<()> {
    // Cargo's run-time variable, not `env!`: a reused build would carry another checkout's path.
    let package = std::env::var_os("CARGO_MANIFEST_DIR").expect("run with `cargo run --example`");
    let root = Path::new(&package).join("fuzz/corpus");
    let decode = root.join("decode");
    let normalize = root.join("normalize");
    fs::create_dir_all(&decode)?;
    fs::create_dir_all(&normalize)?;
    let write = |dir: &Path, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        assert!(bytes.len() <= 20 * 1024, "{name}: {} bytes", bytes.len());
        println!("{name}: {} bytes", bytes.len());
        fs::write(dir.join(name), bytes)
    };

    // A grown 3-tree model (ψ = 16) over the synthetic transaction features.
    let rows = grow::synthetic_rows(256, 7);
    let three = grow::grow_model(&rows, 3, 16, 11);
    let three_bytes = three.to_bytes().unwrap();
    write(&decode, "seed-3trees.bin", &three_bytes)?;

    // The same shape on the legacy schema, carrying the legacy normalization rules (NORM).
    let legacy = Model::new(
        LEGACY_FEATURES
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        three.scaler().clone(),
        grow::grow_model(&rows, 4, 32, 12).forest().clone(),
        vec![
            ("trainer".into(), "fuzz-seed".into()),
            ("seed".into(), "12".into()),
        ],
    )
    .unwrap()
    .with_normalization(Normalization::legacy())
    .unwrap();
    write(&decode, "seed-legacy-norm.bin", &legacy.to_bytes().unwrap())?;

    // Every normalization source kind, a non-zero hash seed, infinite thresholds.
    let nodes = vec![
        Node::Split {
            feature: 0,
            threshold: f32::NEG_INFINITY,
            right: 2,
        },
        Node::Leaf { samples: 3 },
        Node::Split {
            feature: 1,
            threshold: 0.5,
            right: 4,
        },
        Node::Leaf { samples: 1 },
        Node::Leaf { samples: 9 },
    ];
    let kinds = Model::new(
        vec!["amount".into(), "hour".into()],
        Scaler::new(vec![10.0, 12.0], vec![3.0, 7.0]).unwrap(),
        Forest::new(vec![Tree::new(nodes).unwrap()], 8, -0.45).unwrap(),
        vec![],
    )
    .unwrap()
    .with_normalization(Normalization {
        hash_seed: 0xDEAD_BEEF,
        rules: vec![
            FeatureRule {
                sources: vec![
                    Source::Field("amount".into()),
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
                range: Some((-1e9, 1e9)),
                integer: false,
            },
            FeatureRule {
                sources: vec![
                    Source::TimestampHour("ts".into()),
                    Source::TimestampWeekday("ts".into()),
                ],
                range: Some((0.0, 23.0)),
                integer: true,
            },
        ],
    })
    .unwrap();
    write(&decode, "seed-every-source.bin", &kinds.to_bytes().unwrap())?;

    // The smallest valid model: one feature, one single-leaf tree.
    let tiny = Model::new(
        vec!["x".into()],
        Scaler::identity(1),
        Forest::new(
            vec![Tree::new(vec![Node::Leaf { samples: 1 }]).unwrap()],
            1,
            -0.5,
        )
        .unwrap(),
        vec![],
    )
    .unwrap();
    write(&decode, "seed-tiny.bin", &tiny.to_bytes().unwrap())?;

    // A truncated file (half of the 3-tree model).
    write(
        &decode,
        "seed-truncated.bin",
        &three_bytes[..three_bytes.len() / 2],
    )?;

    // Payloads for the normalize target (format in fuzz_targets/normalize.rs).
    let payloads: [(&str, &str); 5] = [
        (
            "seed-legacy-full",
            "amount=#120.5\nhour=#13\nday_of_week=#2\nmerchant_category=#4\ntransaction_type=#1",
        ),
        (
            "seed-legacy-short",
            "amount=99.99\nmerchant=Grocery Store \ntimestamp=2024-03-15T14:30:00Z\ntype=purchase",
        ),
        (
            "seed-category",
            "amount=#5\ncategory=ELECTRONICS\ntimestamp=2023-12-31 23:59:59.123+05:30\ntype=Refund",
        ),
        (
            "seed-odd-types",
            "amount=?\nhour=!\nday_of_week=~\ntimestamp=#1e3\ntype=!\nmerchant=#nan",
        ),
        (
            "seed-numbers",
            "amount=#-0.0\nhour=#23.0\nday_of_week=7\nx=#1e308\ny=inf",
        ),
    ];
    for (name, text) in payloads {
        write(&normalize, name, text.as_bytes())?;
    }
    Ok(())
}
