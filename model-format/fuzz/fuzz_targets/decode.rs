//! Arbitrary bytes -> `Model::from_bytes`. Decoding must never panic; when it succeeds, the
//! model must score, explain and normalize rows derived from the same bytes without panicking,
//! and re-encoding it must give back the same model.
//!
//! A mutated file almost never keeps a valid CRC-32 trailer, which would stop nearly every
//! input at the checksum; so each input is also decoded "resealed": with the header's file
//! length and the trailer rewritten to match, which lets mutations reach the section parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_format::normalize::Value;
use model_format::{Model, ModelId, Payload};

/// A few payload fields derived from the input, for `Model::normalize`.
struct Fields<'a> {
    bytes: &'a [u8],
}

impl Payload for Fields<'_> {
    fn get(&self, field: &str) -> Option<Value<'_>> {
        let h = field.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        match (h ^ self.bytes.first().copied().unwrap_or(0)) % 5 {
            0 => None,
            1 => Some(Value::Number(f64::from(h) - 64.0)),
            2 => Some(Value::Text(
                std::str::from_utf8(self.bytes).unwrap_or("2024-01-02T03:04:05Z"),
            )),
            3 => Some(Value::Bool(h & 1 == 0)),
            _ => Some(Value::Other),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = ModelId::of(data);
    if let Ok(model) = Model::from_bytes(data) {
        exercise(&model, data);
    }
    if data.len() >= 28 {
        let mut sealed = data.to_vec();
        let n = sealed.len();
        sealed[16..24].copy_from_slice(&(n as u64).to_le_bytes());
        let crc = crc32fast::hash(&sealed[..n - 4]);
        sealed[n - 4..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(model) = Model::from_bytes(&sealed) {
            exercise(&model, data);
        }
    }
});

fn exercise(model: &Model, data: &[u8]) {
    let n = model.features().len();
    let mut phi = vec![0.0; n];
    let byte = |i: usize| data[i % data.len()];
    for k in 0..4usize {
        let row: Vec<f64> = (0..n)
            .map(|i| match k {
                // Raw bit patterns from the input: may be huge, subnormal or non-finite.
                0 => {
                    let mut b = [0u8; 8];
                    for (j, slot) in b.iter_mut().enumerate() {
                        *slot = byte(i * 8 + j);
                    }
                    f64::from_le_bytes(b)
                }
                // Small values around the scaler's range.
                1 => (f64::from(byte(i)) - 128.0) / 16.0,
                2 => f64::from(byte(i * 7 + 3)) * 1e3 - 1e5,
                _ => model.scaler().mean()[i],
            })
            .collect();
        let score = model.score(&row);
        let explained = model.explain(&row, &mut phi);
        if let (Ok(s), Ok(e)) = (score, explained) {
            assert_eq!(
                s.mean_path_length.to_bits(),
                e.score.mean_path_length.to_bits()
            );
        }
    }
    // Wrong widths are errors, not panics.
    let _ = model.score(&[]);
    let _ = model.explain(&vec![0.0; n + 1], &mut phi);
    let mut row = vec![0.0; n];
    let _ = model.normalize(&Fields { bytes: data }, &mut row);
    // A decoded model re-encodes to a file that decodes to the same model.
    let again = model.to_bytes().expect("a decoded model encodes");
    assert_eq!(
        &Model::from_bytes(&again).expect("re-encoded model decodes"),
        model
    );
}
