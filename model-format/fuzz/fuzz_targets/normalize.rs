//! Arbitrary bytes as a small key/value payload -> payload normalization (legacy rules, generic
//! rules over the payload's own keys, and rules exercising every source kind). Must never panic.
//!
//! Input format (lossy UTF-8): one field per line, `key=value`. The value's first character
//! picks its type: `#` a number (the rest parsed as f64, else raw bits of the first 8 bytes),
//! `?` a bool, `!` "other" (array/object), `~` absent (null); anything else is text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_format::normalize::{
    FeatureRule, LEGACY_FEATURES, Normalization, Source, Value, category_code, parse_timestamp,
};
use model_format::{Forest, Model, Node, Payload, Scaler, Tree};

enum Owned {
    Number(f64),
    Text(String),
    Bool(bool),
    Other,
    Null,
}

struct Fields(Vec<(String, Owned)>);

impl Payload for Fields {
    fn get(&self, field: &str) -> Option<Value<'_>> {
        // First occurrence wins, as a JSON parser keeping the first duplicate would.
        let (_, v) = self.0.iter().find(|(k, _)| k == field)?;
        Some(match v {
            Owned::Number(n) => Value::Number(*n),
            Owned::Text(s) => Value::Text(s),
            Owned::Bool(b) => Value::Bool(*b),
            Owned::Other => Value::Other,
            Owned::Null => return None,
        })
    }
}

fn parse(data: &[u8]) -> Fields {
    let text = String::from_utf8_lossy(data);
    let fields = text
        .split('\n')
        .take(64)
        .map(|line| {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            let value = match v.chars().next() {
                Some('#') => {
                    let rest = &v[1..];
                    Owned::Number(rest.trim().parse::<f64>().unwrap_or_else(|_| {
                        let mut b = [0u8; 8];
                        for (slot, byte) in b.iter_mut().zip(rest.bytes()) {
                            *slot = byte;
                        }
                        f64::from_le_bytes(b)
                    }))
                }
                Some('?') => Owned::Bool(v.len() % 2 == 0),
                Some('!') => Owned::Other,
                Some('~') => Owned::Null,
                _ => Owned::Text(v.to_string()),
            };
            (k.to_string(), value)
        })
        .collect();
    Fields(fields)
}

/// One rule per payload key, each trying every source kind on that key.
fn every_kind(keys: &[String], seed: u64) -> Normalization {
    let rules = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mut sources = vec![
                Source::TimestampHour(k.clone()),
                Source::TimestampWeekday(k.clone()),
                Source::Lookup {
                    field: k.clone(),
                    table: vec![("purchase".into(), 0.0), (k.to_lowercase(), 1.5)],
                },
                Source::Hash {
                    field: k.clone(),
                    buckets: 1 + i as u32 * 7,
                },
                Source::Field(k.clone()),
                Source::Default(-1.0),
            ];
            sources.rotate_left(i % 6);
            FeatureRule {
                sources,
                range: (i % 2 == 0).then_some((-1e6, 1e6)),
                integer: i % 3 == 0,
            }
        })
        .collect();
    Normalization {
        hash_seed: seed,
        rules,
    }
}

fuzz_target!(|data: &[u8]| {
    let payload = parse(data);
    let seed = data
        .iter()
        .fold(0u64, |a, &b| a.rotate_left(5) ^ u64::from(b));

    // Direct helpers on every text value.
    for (_, v) in &payload.0 {
        if let Owned::Text(s) = v {
            let _ = parse_timestamp(s);
            assert!(category_code(s, seed, 10) < 10);
            let _ = category_code(s, seed, 0);
        }
    }

    // Legacy rules, through the Normalization and through a model carrying them.
    let names: Vec<String> = LEGACY_FEATURES.iter().map(|s| s.to_string()).collect();
    let legacy = Normalization::legacy();
    let mut row = [0.0; 5];
    if legacy.apply(&names, &payload, &mut row).is_ok() {
        assert!(row.iter().all(|v| v.is_finite()));
    }
    let tree = Tree::new(vec![Node::Leaf { samples: 1 }]).unwrap();
    let model = Model::new(
        names.clone(),
        Scaler::identity(5),
        Forest::new(vec![tree], 1, -0.5).unwrap(),
        vec![],
    )
    .unwrap()
    .with_normalization(legacy)
    .unwrap();
    let mut long_row = [0.0; 8];
    if model.normalize(&payload, &mut long_row).is_ok() {
        let _ = model.score(&long_row[..5]);
    }
    let _ = model.normalize(&payload, &mut [0.0; 2]);

    // Generic rules over the payload's own (distinct, non-empty) keys.
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in &payload.0 {
        if !k.is_empty() && !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    let generic = Normalization::generic(&keys);
    let mut row = vec![0.0; keys.len()];
    let _ = generic.apply(&keys, &payload, &mut row);

    // Every source kind, seeded from the input.
    let rules = every_kind(&keys, seed);
    let _ = rules.apply(&keys, &payload, &mut row);
});
