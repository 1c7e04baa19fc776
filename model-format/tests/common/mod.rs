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
