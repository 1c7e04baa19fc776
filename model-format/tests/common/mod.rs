#![allow(dead_code)] // each test binary uses a different subset

pub mod grow;

use model_format::Node;

/// A split node (right child `right` nodes ahead).
pub fn split(feature: u16, threshold: f32, right: u32) -> Node {
    Node::Split {
        feature,
        threshold,
        right,
    }
}

/// A leaf holding `samples` training samples.
pub fn leaf(samples: u32) -> Node {
    Node::Leaf { samples }
}

/// Recomputes the trailer checksum after a deliberate edit, so the structural checks are reached.
pub fn reseal(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = crc32(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

/// CRC-32/ISO-HDLC, bitwise; independent of the crate under test.
pub fn crc32(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
