//! Binary encoding v1. All integers and floats are little-endian.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "SFEMODEL"
//! 8       2     format version (u16) = 1
//! 10      2     reserved, 0
//! 12      4     section count (u32)
//! 16      8     file length in bytes (u64), trailer included
//! 24      ...   sections, each: tag [u8; 4], flags u32 (bit 0 = required),
//!               payload length u64, payload, zero padding to a multiple of 8
//! len-4   4     CRC-32 (IEEE, as zlib's crc32) of bytes [0, len-4)
//! ```
//!
//! Sections: `META` (optional; string pairs), `SCHM` (feature names), `SCAL` (scaler), `FRST`
//! (forest). A string is a u32 byte length followed by UTF-8. A reader skips unknown optional
//! sections and refuses unknown required ones, so later writers can add data old readers may
//! ignore.

use crate::error::{DecodeError, EncodeError, InvalidModel};
use crate::forest::{self, Decoded, STACK_LEN};
use crate::normalize::{FeatureRule, Normalization, Source};
use crate::{Forest, Model, Node, Scaler, Tree};

pub const MAGIC: [u8; 8] = *b"SFEMODEL";
pub const FORMAT_VERSION: u16 = 1;

const HEADER_LEN: usize = 24;
const TRAILER_LEN: usize = 4;
const FLAG_REQUIRED: u32 = 1;
/// Feature index marking a leaf in the node record.
const LEAF: u16 = u16::MAX;
const NODE_LEN: usize = 8;

const META: [u8; 4] = *b"META";
const SCHEMA: [u8; 4] = *b"SCHM";
const NORMALIZATION: [u8; 4] = *b"NORM";
const SCALER: [u8; 4] = *b"SCAL";
const FOREST: [u8; 4] = *b"FRST";
const SCORE_DISTRIBUTION: [u8; 4] = *b"SDST";
const VELOCITY: [u8; 4] = *b"VELO";
const SUPERVISED: [u8; 4] = *b"GBDT";
const TREE_GROUPS: [u8; 4] = *b"GRPS";

pub(crate) fn encode(model: &Model) -> Result<Vec<u8>, EncodeError> {
    let mut sections: Vec<([u8; 4], u32, Vec<u8>)> = Vec::with_capacity(4);

    let mut meta = Vec::new();
    put_u32(&mut meta, model.metadata().len() as u32);
    for (k, v) in model.metadata() {
        put_str(&mut meta, k, "metadata key")?;
        put_str(&mut meta, v, "metadata value")?;
    }
    sections.push((META, 0, meta));

    let mut schema = Vec::new();
    put_u32(&mut schema, model.features().len() as u32);
    for name in model.features() {
        put_str(&mut schema, name, "feature name")?;
    }
    sections.push((SCHEMA, FLAG_REQUIRED, schema));

    // Optional: a reader that ignores it still scores full-shape payloads identically.
    sections.push((
        NORMALIZATION,
        0,
        encode_normalization(model.normalization())?,
    ));

    let scaler = model.scaler();
    let mut scal = Vec::with_capacity(8 + 16 * scaler.len());
    put_u32(&mut scal, scaler.len() as u32);
    put_u32(&mut scal, 0);
    scaler
        .mean()
        .iter()
        .for_each(|v| scal.extend_from_slice(&v.to_le_bytes()));
    scaler
        .scale()
        .iter()
        .for_each(|v| scal.extend_from_slice(&v.to_le_bytes()));
    sections.push((SCALER, FLAG_REQUIRED, scal));

    let forest = model.forest();
    let mut frst =
        Vec::with_capacity(16 + forest.node_count() * NODE_LEN + forest.trees().len() * 8);
    put_u32(&mut frst, forest.trees().len() as u32);
    put_u32(&mut frst, forest.max_samples());
    frst.extend_from_slice(&forest.offset().to_le_bytes());
    for (t, tree) in forest.trees().iter().enumerate() {
        put_tree(&mut frst, tree.nodes(), t)?;
    }
    sections.push((FOREST, FLAG_REQUIRED, frst));

    // Required: a reader that scored the trees as one forest would give other scores.
    if let Some(groups) = forest.groups() {
        let mut grps = Vec::with_capacity(8 + 12 * groups.ends().len());
        put_u32(&mut grps, groups.ends().len() as u32);
        // Weight 1 as 0: the bytes files had before weights.
        put_u32(&mut grps, groups.weight() * u32::from(groups.weight() != 1));
        groups.ends().iter().for_each(|&e| put_u32(&mut grps, e));
        groups
            .tails()
            .iter()
            .for_each(|t| grps.extend_from_slice(&t.to_le_bytes()));
        sections.push((TREE_GROUPS, FLAG_REQUIRED, grps));
    }

    // Optional: only drift monitoring reads it; scoring never does.
    if let Some(quantiles) = model.score_distribution() {
        let mut sdst = Vec::with_capacity(8 + 8 * quantiles.len());
        put_u32(&mut sdst, quantiles.len() as u32);
        put_u32(&mut sdst, 0);
        quantiles
            .iter()
            .for_each(|q| sdst.extend_from_slice(&q.to_le_bytes()));
        sections.push((SCORE_DISTRIBUTION, 0, sdst));
    }

    // Required: a reader that cannot compute these features would score without them.
    if let Some(spec) = model.velocity() {
        let mut velo = Vec::new();
        put_str(&mut velo, spec.time_field(), "velocity time field")?;
        put_u32(&mut velo, spec.features().len() as u32);
        for (name, definition) in spec.definitions() {
            put_str(&mut velo, name, "velocity feature name")?;
            put_str(&mut velo, &definition, "velocity definition")?;
        }
        sections.push((VELOCITY, FLAG_REQUIRED, velo));
    }

    // Optional: a reader that skips it scores with the forest alone, as before it existed.
    if let Some(b) = model.supervised() {
        sections.push((SUPERVISED, 0, encode_supervised(b)?));
    }

    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    put_u32(&mut out, sections.len() as u32);
    out.extend_from_slice(&0u64.to_le_bytes()); // file length, patched below
    for (tag, flags, payload) in &sections {
        out.extend_from_slice(tag);
        put_u32(&mut out, *flags);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    let len = (out.len() + TRAILER_LEN) as u64;
    out[16..24].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, crc);
    Ok(out)
}

// Source kinds in the NORM section.
const SRC_FIELD: u8 = 1;
const SRC_TS_HOUR: u8 = 2;
const SRC_TS_WEEKDAY: u8 = 3;
const SRC_LOOKUP: u8 = 4;
const SRC_HASH: u8 = 5;
const SRC_DEFAULT: u8 = 6;
const RULE_INTEGER: u8 = 1;
const RULE_RANGE: u8 = 2;

fn encode_normalization(n: &Normalization) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    out.extend_from_slice(&n.hash_seed.to_le_bytes());
    put_u32(&mut out, n.rules.len() as u32);
    for rule in &n.rules {
        let flags = if rule.integer { RULE_INTEGER } else { 0 }
            | if rule.range.is_some() { RULE_RANGE } else { 0 };
        out.push(flags);
        if let Some((lo, hi)) = rule.range {
            out.extend_from_slice(&lo.to_le_bytes());
            out.extend_from_slice(&hi.to_le_bytes());
        }
        let count = u8::try_from(rule.sources.len()).map_err(|_| EncodeError::TooManySources)?;
        out.push(count);
        for source in &rule.sources {
            match source {
                Source::Field(f) => {
                    out.push(SRC_FIELD);
                    put_str(&mut out, f, "source field")?;
                }
                Source::TimestampHour(f) => {
                    out.push(SRC_TS_HOUR);
                    put_str(&mut out, f, "source field")?;
                }
                Source::TimestampWeekday(f) => {
                    out.push(SRC_TS_WEEKDAY);
                    put_str(&mut out, f, "source field")?;
                }
                Source::Lookup { field, table } => {
                    out.push(SRC_LOOKUP);
                    put_str(&mut out, field, "source field")?;
                    put_u32(&mut out, table.len() as u32);
                    for (key, code) in table {
                        put_str(&mut out, key, "lookup key")?;
                        out.extend_from_slice(&code.to_le_bytes());
                    }
                }
                Source::Hash { field, buckets } => {
                    out.push(SRC_HASH);
                    put_str(&mut out, field, "source field")?;
                    put_u32(&mut out, *buckets);
                }
                Source::Default(v) => {
                    out.push(SRC_DEFAULT);
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    Ok(out)
}

fn read_normalization(p: &mut Reader) -> Result<Normalization, DecodeError> {
    let hash_seed = p.u64("hash seed")?;
    let n = p.count("normalization rules", 2)?;
    let mut rules = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = p.array::<1>("rule flags")?[0];
        if flags & !(RULE_INTEGER | RULE_RANGE) != 0 {
            return Err(DecodeError::Reserved { offset: p.pos - 1 });
        }
        let range = if flags & RULE_RANGE != 0 {
            Some((p.f64("range min")?, p.f64("range max")?))
        } else {
            None
        };
        let count = p.array::<1>("source count")?[0];
        let mut sources = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let kind = p.array::<1>("source kind")?[0];
            sources.push(match kind {
                SRC_FIELD => Source::Field(p.string("source field")?),
                SRC_TS_HOUR => Source::TimestampHour(p.string("source field")?),
                SRC_TS_WEEKDAY => Source::TimestampWeekday(p.string("source field")?),
                SRC_LOOKUP => {
                    let field = p.string("source field")?;
                    let entries = p.count("lookup entries", 12)?;
                    let table = (0..entries)
                        .map(|_| Ok((p.string("lookup key")?, p.f64("lookup code")?)))
                        .collect::<Result<Vec<_>, DecodeError>>()?;
                    Source::Lookup { field, table }
                }
                SRC_HASH => Source::Hash {
                    field: p.string("source field")?,
                    buckets: p.u32("hash buckets")?,
                },
                SRC_DEFAULT => Source::Default(p.f64("default value")?),
                other => return Err(DecodeError::UnknownSource { kind: other }),
            });
        }
        rules.push(FeatureRule {
            sources,
            range,
            integer: flags & RULE_INTEGER != 0,
        });
    }
    Ok(Normalization { hash_seed, rules })
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), EncodeError> {
    let len =
        u32::try_from(s.len()).map_err(|_| EncodeError::StringTooLong { what, len: s.len() })?;
    put_u32(out, len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Checks magic, version, declared length and checksum; returns the checksum.
pub(crate) fn checked_crc(bytes: &[u8]) -> Result<u32, DecodeError> {
    checked_header(bytes, None)
}

/// [`checked_crc`], or with `verified` (the checksum of these bytes, computed earlier) only
/// compares the stored checksum with it instead of hashing the file again.
fn checked_header(bytes: &[u8], verified: Option<u32>) -> Result<u32, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(MAGIC.len(), "magic").ok() != Some(&MAGIC[..]) {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u16("format version")?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    r.take(6, "header")?;
    let declared = r.u64("file length")?;
    if declared != bytes.len() as u64 {
        return if declared > bytes.len() as u64 {
            Err(DecodeError::Truncated {
                what: "the whole file",
                offset: 0,
                needed: usize::try_from(declared).unwrap_or(usize::MAX),
                len: bytes.len(),
            })
        } else {
            Err(DecodeError::LengthMismatch {
                declared,
                actual: bytes.len(),
            })
        };
    }
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err(DecodeError::LengthMismatch {
            declared,
            actual: bytes.len(),
        });
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let stored = u32::from_le_bytes(trailer.try_into().expect("trailer is 4 bytes"));
    let computed = verified.unwrap_or_else(|| crc32fast::hash(body));
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok(stored)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Model, DecodeError> {
    decode_with(bytes, None, |_| None, false)
}

/// [`decode`] for bytes that live as long as the program: node records are validated and
/// used in place when the bytes are 8-byte aligned on a little-endian machine (copied
/// otherwise), and a `verified` checksum spares the CRC pass (see [`checked_header`]).
///
/// `prechecked` (only with `verified`): the trees are not validated again when used in place,
/// for a file this crate decoded before (see [`crate::FileTrust::DecodedBefore`]).
pub(crate) fn decode_static(
    bytes: &'static [u8],
    verified: Option<u32>,
    prechecked: bool,
) -> Result<Model, DecodeError> {
    let in_place = |records| {
        if cfg!(target_endian = "little") {
            bytemuck::try_cast_slice(records).ok()
        } else {
            None
        }
    };
    decode_with(bytes, verified, in_place, prechecked && verified.is_some())
}

/// `in_place` views a tree's node records as words without copying, when it can.
fn decode_with<'a>(
    bytes: &'a [u8],
    verified: Option<u32>,
    in_place: fn(&'a [u8]) -> Option<&'static [u64]>,
    prechecked: bool,
) -> Result<Model, DecodeError> {
    checked_header(bytes, verified)?;
    let body = &bytes[..bytes.len() - TRAILER_LEN];
    let mut r = Reader {
        bytes: body,
        pos: 10,
    };
    if r.u16("reserved")? != 0 {
        return Err(DecodeError::Reserved { offset: 10 });
    }
    let n_sections = r.u32("section count")?;
    r.pos = HEADER_LEN;

    let (mut meta, mut schema, mut norm, mut scaler, mut forest) = (None, None, None, None, None);
    let (mut distribution, mut velocity, mut supervised) = (None, None, None);
    let mut groups = None;
    for _ in 0..n_sections {
        let (section, payload) = next_section(&mut r)?;
        let tag = section.tag;
        let mut p = Reader {
            bytes: payload,
            pos: 0,
        };
        let slot_filled = match tag {
            META => meta.replace(read_meta(&mut p)?).is_some(),
            SCHEMA => schema.replace(read_schema(&mut p)?).is_some(),
            NORMALIZATION => norm.replace(read_normalization(&mut p)?).is_some(),
            SCALER => scaler.replace(read_scaler(&mut p)?).is_some(),
            FOREST => forest
                .replace(read_forest(&mut p, in_place, prechecked)?)
                .is_some(),
            SCORE_DISTRIBUTION => distribution
                .replace(read_score_distribution(&mut p)?)
                .is_some(),
            VELOCITY => velocity.replace(read_velocity(&mut p)?).is_some(),
            SUPERVISED => supervised.replace(read_supervised(&mut p)?).is_some(),
            TREE_GROUPS => groups.replace(read_tree_groups(&mut p)?).is_some(),
            _ if section.required => {
                return Err(DecodeError::UnknownRequiredSection { tag });
            }
            _ => {
                p.pos = payload.len();
                false
            }
        };
        if slot_filled {
            return Err(DecodeError::DuplicateSection { tag });
        }
        if p.pos != payload.len() {
            return Err(DecodeError::SectionLength {
                tag,
                declared: payload.len(),
                used: p.pos,
            });
        }
    }
    if r.pos != body.len() {
        return Err(DecodeError::LengthMismatch {
            declared: bytes.len() as u64,
            actual: r.pos + TRAILER_LEN,
        });
    }
    let schema = schema.ok_or(DecodeError::MissingSection { tag: SCHEMA })?;
    let scaler = scaler.ok_or(DecodeError::MissingSection { tag: SCALER })?;
    let forest = forest.ok_or(DecodeError::MissingSection { tag: FOREST })?;
    let forest = match groups {
        Some(g) => forest.with_groups(g)?,
        None => forest,
    };
    let model = Model::new(schema, scaler, forest, meta.unwrap_or_default())?;
    let model = match norm {
        Some(norm) => model.with_normalization(norm)?,
        None => model,
    };
    let model = match distribution {
        Some(q) => model.with_score_distribution(q)?,
        None => model,
    };
    let model = match velocity {
        Some(spec) => model.with_velocity(spec)?,
        None => model,
    };
    Ok(match supervised {
        Some(b) => model.with_supervised(b)?,
        None => model,
    })
}

/// One tree as SPEC §4.4 lays it out: node count, reserved word, 8-byte node records.
fn put_tree(out: &mut Vec<u8>, nodes: &[Node], tree: usize) -> Result<(), EncodeError> {
    put_u32(out, nodes.len() as u32);
    put_u32(out, 0);
    for (i, node) in nodes.iter().enumerate() {
        let (feature, delta, value) = match *node {
            Node::Split {
                feature,
                threshold,
                right,
            } => {
                let delta = u16::try_from(right as usize - i)
                    .map_err(|_| EncodeError::TreeTooLarge { tree, node: i })?;
                (feature, delta, threshold.to_bits())
            }
            Node::Leaf { samples } => (LEAF, 0, samples),
        };
        out.extend_from_slice(&feature.to_le_bytes());
        out.extend_from_slice(&delta.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    Ok(())
}

const THRESHOLD_REVIEW: u32 = 1;
const THRESHOLD_BLOCK: u32 = 2;

fn encode_supervised(b: &crate::Booster) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64 + b.node_count() * (NODE_LEN + 8));
    put_u32(&mut out, b.n_inputs() as u32);
    put_u32(&mut out, b.trees().len() as u32);
    let c = b.calibration();
    for v in [b.base_margin(), c.slope, c.intercept] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let t = b.thresholds();
    let flags = u32::from(t.review.is_some()) * THRESHOLD_REVIEW
        + u32::from(t.block.is_some()) * THRESHOLD_BLOCK;
    put_u32(&mut out, flags);
    put_u32(&mut out, 0);
    for v in [t.review, t.block] {
        out.extend_from_slice(&v.unwrap_or(0.0).to_le_bytes());
    }
    for (t, tree) in b.trees().iter().enumerate() {
        put_tree(&mut out, tree.nodes(), t)?;
        tree.leaf_values()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
    Ok(out)
}

fn read_supervised(p: &mut Reader) -> Result<crate::Booster, DecodeError> {
    use crate::booster::{BoostTree, Booster, Calibration, Thresholds};
    let n_inputs = p.u32("supervised inputs")? as usize;
    let n_trees = p.count("supervised trees", 8 + NODE_LEN + 8)?;
    let base = p.f64("supervised base margin")?;
    let slope = p.f64("calibration slope")?;
    let intercept = p.f64("calibration intercept")?;
    let flags = p.u32("threshold flags")?;
    if flags & !(THRESHOLD_REVIEW | THRESHOLD_BLOCK) != 0 {
        return Err(DecodeError::Reserved { offset: p.pos - 4 });
    }
    if p.u32("supervised reserved")? != 0 {
        return Err(DecodeError::Reserved { offset: p.pos - 4 });
    }
    let review = p.f64("review threshold")?;
    let block = p.f64("block threshold")?;
    let thresholds = Thresholds {
        review: (flags & THRESHOLD_REVIEW != 0).then_some(review),
        block: (flags & THRESHOLD_BLOCK != 0).then_some(block),
    };
    for (on, v) in [(thresholds.review, review), (thresholds.block, block)] {
        if on.is_none() && v.to_bits() != 0 {
            return Err(DecodeError::Reserved { offset: p.pos - 8 });
        }
    }
    let mut trees = Vec::with_capacity(n_trees);
    for t in 0..n_trees {
        let n_nodes = p.count("supervised tree nodes", NODE_LEN)?;
        if p.u32("supervised tree reserved")? != 0 {
            return Err(DecodeError::Reserved { offset: p.pos - 4 });
        }
        let start = p.pos;
        let records = p.take(n_nodes * NODE_LEN, "supervised tree nodes")?;
        let nodes = decode_nodes(records, start)?;
        let leaves = nodes
            .iter()
            .filter(|n| matches!(n, Node::Leaf { .. }))
            .count();
        if leaves > (p.bytes.len() - p.pos) / 8 {
            return Err(DecodeError::Count {
                what: "supervised leaf values",
                count: leaves as u64,
            });
        }
        let values: Vec<f64> = (0..leaves)
            .map(|_| p.f64("supervised leaf value"))
            .collect::<Result<_, _>>()?;
        trees.push(BoostTree::new(nodes, &values).map_err(|e| match e {
            InvalidModel::Tree { problem, .. } => InvalidModel::Tree { tree: t, problem },
            other => other,
        })?);
    }
    Ok(Booster::new(
        trees,
        base,
        Calibration { slope, intercept },
        thresholds,
        n_inputs,
    )?)
}

fn read_velocity(p: &mut Reader) -> Result<crate::velocity::VelocitySpec, DecodeError> {
    let time_field = p.string("velocity time field")?;
    let n = p.count("velocity features", 8)?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        pairs.push((
            p.string("velocity feature name")?,
            p.string("velocity definition")?,
        ));
    }
    crate::velocity::VelocitySpec::new(&time_field, &pairs)
        .map_err(|e| InvalidModel::Velocity(e.to_string()).into())
}

fn read_tree_groups(p: &mut Reader) -> Result<crate::TreeGroups, DecodeError> {
    let n = p.count("feature groups", 4)?;
    let weight = p.u32("feature groups weight")?.max(1);
    let ends = (0..n)
        .map(|_| p.u32("feature group end"))
        .collect::<Result<Vec<_>, _>>()?;
    let tails = (1..n.max(1))
        .map(|_| p.f64("feature group tail"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::TreeGroups::new(ends, tails)?.with_weight(weight)?)
}

fn read_score_distribution(p: &mut Reader) -> Result<Vec<f64>, DecodeError> {
    let n = p.count("score quantiles", 8)?;
    if p.u32("score distribution reserved")? != 0 {
        return Err(DecodeError::Reserved { offset: p.pos - 4 });
    }
    (0..n).map(|_| p.f64("score quantile")).collect()
}

/// One entry of a model file's section table (SPEC.md, "Sections").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionInfo {
    /// The four-byte tag, e.g. `FRST`.
    pub tag: [u8; 4],
    /// Whether a reader that does not know the tag must refuse the file.
    pub required: bool,
    /// Payload bytes.
    pub payload_bytes: u64,
    /// Header, payload and padding.
    pub total_bytes: u64,
}

/// Reads the section header, payload and padding at `r`'s position.
fn next_section<'a>(r: &mut Reader<'a>) -> Result<(SectionInfo, &'a [u8]), DecodeError> {
    let start = r.pos;
    let tag: [u8; 4] = r.take(4, "section tag")?.try_into().expect("4 bytes");
    let flags = r.u32("section flags")?;
    if flags & !FLAG_REQUIRED != 0 {
        return Err(DecodeError::Reserved { offset: r.pos - 4 });
    }
    let len = r.u64("section length")?;
    let len = usize::try_from(len).map_err(|_| DecodeError::Count {
        what: "section length",
        count: len,
    })?;
    let payload = r.take(len, "section payload")?;
    let padded = len.next_multiple_of(8) - len;
    if r.take(padded, "section padding")?.iter().any(|&b| b != 0) {
        return Err(DecodeError::Reserved {
            offset: r.pos - padded,
        });
    }
    let info = SectionInfo {
        tag,
        required: flags & FLAG_REQUIRED != 0,
        payload_bytes: len as u64,
        total_bytes: (r.pos - start) as u64,
    };
    Ok((info, payload))
}

/// The section table of a model file, in file order. The header (magic, version, length,
/// checksum) and the table's framing are checked, not the payloads: decode the file with
/// [`Model::from_bytes`] to know it is usable.
pub fn section_table(bytes: &[u8]) -> Result<Vec<SectionInfo>, DecodeError> {
    checked_header(bytes, None)?;
    let body = &bytes[..bytes.len() - TRAILER_LEN];
    let mut r = Reader {
        bytes: body,
        pos: 12,
    };
    let n_sections = r.u32("section count")?;
    r.pos = HEADER_LEN;
    (0..n_sections)
        .map(|_| next_section(&mut r).map(|(info, _)| info))
        .collect()
}

fn read_meta(p: &mut Reader) -> Result<Vec<(String, String)>, DecodeError> {
    let n = p.count("metadata entries", 8)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((p.string("metadata key")?, p.string("metadata value")?));
    }
    Ok(out)
}

fn read_schema(p: &mut Reader) -> Result<Vec<String>, DecodeError> {
    let n = p.count("feature names", 4)?;
    if n > crate::MAX_FEATURES {
        return Err(InvalidModel::TooManyFeatures { count: n }.into());
    }
    (0..n).map(|_| p.string("feature name")).collect()
}

fn read_scaler(p: &mut Reader) -> Result<Scaler, DecodeError> {
    let n = p.count("scaler entries", 16)?;
    if p.u32("scaler reserved")? != 0 {
        return Err(DecodeError::Reserved { offset: p.pos - 4 });
    }
    let mean = (0..n)
        .map(|_| p.f64("scaler mean"))
        .collect::<Result<Vec<_>, _>>()?;
    let scale = (0..n)
        .map(|_| p.f64("scaler scale"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scaler::new(mean, scale)?)
}

fn read_forest<'a>(
    p: &mut Reader<'a>,
    in_place: fn(&'a [u8]) -> Option<&'static [u64]>,
    prechecked: bool,
) -> Result<Forest, DecodeError> {
    let n_trees = p.count("trees", 8 + NODE_LEN)?;
    let max_samples = p.u32("max_samples")?;
    let offset = p.f64("offset")?;
    // One arena for the nodes of all trees; what remains of the payload bounds its size.
    let mut arena = Vec::with_capacity((p.bytes.len() - p.pos) / NODE_LEN);
    let mut decoded = Vec::with_capacity(n_trees);
    let mut stack = [0; STACK_LEN];
    for t in 0..n_trees {
        let n_nodes = p.count("tree nodes", NODE_LEN)?;
        if p.u32("tree reserved")? != 0 {
            return Err(DecodeError::Reserved { offset: p.pos - 4 });
        }
        // One bounds check for the whole node array, then fixed-size records.
        let start = p.pos;
        let records = p.take(n_nodes * NODE_LEN, "tree nodes")?;
        let fast = match in_place(records) {
            Some(words) if prechecked => Tree::adopt_static(words),
            Some(words) => Tree::decode_static(words, &mut stack),
            None => Tree::decode_into(records, &mut arena, &mut stack),
        };
        match fast {
            Some(d) => decoded.push(d),
            None => decoded.push(Decoded::Own(diagnose_tree(records, start, t)?)),
        }
    }
    Ok(Forest::new(
        Tree::from_arena(arena, decoded),
        max_samples,
        offset,
    )?)
}

/// The slow path for a tree the fast decoder rejected: decodes node by node and validates
/// with [`Tree::new`] to name the first problem (the same errors, in the same order, as
/// before the fast path existed). The fast path turns down valid trees only when they are
/// deeper than it tracks; those decode here.
#[cold]
fn diagnose_tree(records: &[u8], start: usize, t: usize) -> Result<Tree, DecodeError> {
    let nodes = decode_nodes(records, start)?;
    Ok(Tree::new(nodes).map_err(|problem| InvalidModel::Tree { tree: t, problem })?)
}

/// Node records (at file offset `start`) as [`Node`]s, not yet checked as a tree.
fn decode_nodes(records: &[u8], start: usize) -> Result<Vec<Node>, DecodeError> {
    let mut nodes = Vec::with_capacity(records.len() / NODE_LEN);
    for (i, r) in records.chunks_exact(NODE_LEN).enumerate() {
        let w = u64::from_le_bytes(r.try_into().expect("NODE_LEN bytes"));
        // A leaf's offset field is reserved: name it rather than the shape it would break.
        if w as u16 == LEAF && (w >> 16) as u16 != 0 {
            return Err(DecodeError::Reserved {
                offset: start + i * NODE_LEN + 2,
            });
        }
        nodes.push(forest::node(i, w));
    }
    Ok(nodes)
}

/// A bounds-checked cursor: every read names what it was reading for the error message.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(DecodeError::Truncated {
                what,
                offset: self.pos,
                needed: n,
                len: self.bytes.len(),
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        Ok(self
            .take(N, what)?
            .try_into()
            .expect("take returned N bytes"))
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, DecodeError> {
        self.array(what).map(f64::from_le_bytes)
    }

    /// Reads a u32 count and rejects it if `count * min_item_len` cannot fit in what remains,
    /// so a hostile count cannot make us reserve gigabytes.
    fn count(&mut self, what: &'static str, min_item_len: usize) -> Result<usize, DecodeError> {
        let n = self.u32(what)?;
        let remaining = self.bytes.len() - self.pos;
        if (n as usize).saturating_mul(min_item_len) > remaining {
            return Err(DecodeError::Count {
                what,
                count: u64::from(n),
            });
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.u32(what)? as usize;
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8 { what })
    }
}
