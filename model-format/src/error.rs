//! Typed errors. Decoding hostile bytes and scoring hostile rows return these, never panic.

use thiserror::Error;

/// A model that is internally inconsistent (wrong widths, bad indices, non-finite values).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InvalidModel {
    #[error("model has no features")]
    NoFeatures,
    #[error("model has {count} features; at most {max} are supported", max = crate::MAX_FEATURES)]
    TooManyFeatures { count: usize },
    #[error("feature {index} has an empty name")]
    EmptyFeatureName { index: usize },
    #[error("feature name {name:?} appears twice")]
    DuplicateFeature { name: String },
    #[error("scaler has {mean} means but {scale} scales")]
    ScalerShape { mean: usize, scale: usize },
    #[error("scaler covers {scaler} features but the schema has {features}")]
    ScalerWidth { scaler: usize, features: usize },
    #[error(
        "scaler entry {index} is invalid (mean {mean}, scale {scale}): need finite values and scale > 0"
    )]
    ScalerValue { index: usize, mean: f64, scale: f64 },
    #[error("a tree splits on feature {index} but the schema has {features} features")]
    FeatureIndex { index: u16, features: usize },
    #[error("forest has no trees")]
    NoTrees,
    #[error("max_samples must be at least 1")]
    MaxSamples,
    #[error("decision offset {0} is not finite")]
    Offset(f64),
    #[error("tree {tree}: {problem}")]
    Tree { tree: usize, problem: TreeProblem },
    #[error("normalization rules: {0}")]
    Normalization(String),
    #[error("training score distribution: {0}")]
    ScoreDistribution(String),
    #[error("velocity features: {0}")]
    Velocity(String),
    #[error("supervised model: {0}")]
    Supervised(String),
    #[error("feature groups of the forest: {0}")]
    TreeGroups(String),
}

/// What is wrong with one tree's node array.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TreeProblem {
    #[error("no nodes")]
    Empty,
    #[error("node {node}: right child {right} must lie after the left subtree and inside the tree")]
    BadChild { node: usize, right: u32 },
    #[error("node {node}: threshold is NaN")]
    NanThreshold { node: usize },
    #[error("node {node}: a leaf must hold at least one sample")]
    EmptyLeaf { node: usize },
    #[error("nodes do not form one pre-order binary tree (node {node} is misplaced)")]
    Shape { node: usize },
}

/// Why bytes could not be decoded into a model.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DecodeError {
    #[error("not a SecureFlow model file (bad magic bytes)")]
    BadMagic,
    #[error("model format version {found} is not supported (this reader supports {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error(
        "model file is truncated: {what} needs {needed} bytes at offset {offset}, file has {len}"
    )]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("header says the file is {declared} bytes long but it is {actual}")]
    LengthMismatch { declared: u64, actual: usize },
    #[error(
        "checksum mismatch: file says {stored:08x}, contents hash to {computed:08x} (corrupt file)"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("unknown required section {tag:?}: written by a newer trainer")]
    UnknownRequiredSection { tag: [u8; 4] },
    #[error("section {tag:?} appears twice")]
    DuplicateSection { tag: [u8; 4] },
    #[error("required section {tag:?} is missing")]
    MissingSection { tag: [u8; 4] },
    #[error("section {tag:?} is {declared} bytes but its contents take {used}")]
    SectionLength {
        tag: [u8; 4],
        declared: usize,
        used: usize,
    },
    #[error("nonzero padding or reserved bytes at offset {offset}")]
    Reserved { offset: usize },
    #[error("{what} is not valid UTF-8")]
    Utf8 { what: &'static str },
    #[error("{what}: count {count} is implausible for the bytes that remain")]
    Count { what: &'static str, count: u64 },
    #[error("unknown normalization source kind {kind}")]
    UnknownSource { kind: u8 },
    #[error("invalid model: {0}")]
    Invalid(#[from] InvalidModel),
}

/// Why a model could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error(
        "tree {tree}: node {node} has a right subtree too far away for the v1 encoding (max offset 65535)"
    )]
    TreeTooLarge { tree: usize, node: usize },
    #[error("a feature has more than 255 normalization sources")]
    TooManySources,
    #[error("string {what} is too long ({len} bytes)")]
    StringTooLong { what: &'static str, len: usize },
}

/// Why a row could not be scored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScoreError {
    #[error("row has {found} values but the model expects {expected}")]
    Width { expected: usize, found: usize },
    #[error("feature {feature} is not a finite number")]
    NotFinite { feature: String },
}

/// Why a row could not be explained.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExplainError {
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error("attribution buffer has {found} slots but the model has {expected} features")]
    PhiWidth { expected: usize, found: usize },
    #[error(
        "tree {tree} has a path through {features} distinct features; explanations support at most {max}",
        max = crate::explain::MAX_PATH_FEATURES
    )]
    PathTooComplex { tree: usize, features: usize },
}
