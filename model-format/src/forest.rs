//! Isolation trees and forest scoring, following scikit-learn's `IsolationForest`.

use crate::Score;
use crate::error::{ExplainError, InvalidModel, ScoreError, TreeProblem};
use crate::explain::{ForestShap, TreeShap};
use std::sync::{Arc, OnceLock};

#[path = "average_path.rs"]
mod average_path;
#[cfg(test)]
use average_path::EULER_GAMMA;
use average_path::c_direct;

include!(concat!(env!("OUT_DIR"), "/small_c.rs"));

/// `c(n)`: the average path length of an unsuccessful search in a binary search tree of `n`
/// points — scikit-learn's `_average_path_length`: 0 for n ≤ 1, 1 for n = 2, otherwise
/// `2(ln(n-1) + γ) - 2(n-1)/n`.
pub fn average_path_length(n: u32) -> f64 {
    match small_c().get(n as usize) {
        Some(&c) => c,
        None => c_direct(n),
    }
}

/// `c(n)` for `n < 512`. Leaves mostly hold few samples: the table spares scoring one
/// logarithm per leaf. Built by `build.rs` with the same function, so the same bits.
fn small_c() -> &'static [f64; 512] {
    bytemuck::cast_ref(&SMALL_C_BITS)
}

/// Path length a leaf at `depth` with `samples` training samples contributes, with the same
/// expression as scikit-learn: `(depth + 1) + c(n) - 1`. Every scorer (row by row here, batched
/// in the trainer) goes through it, so they agree to the bit.
pub fn leaf_path_length(depth: u32, samples: u32) -> f64 {
    leaf_path_length_in(depth, samples, small_c())
}

/// [`leaf_path_length`] with the c(n) table already at hand (the scoring loops).
#[inline]
fn leaf_path_length_in(depth: u32, samples: u32, small: &[f64; 512]) -> f64 {
    let c = match small.get(samples as usize) {
        Some(&c) => c,
        None => c_direct(samples),
    };
    (f64::from(depth) + 1.0 + c) - 1.0
}

/// Length of a node record in the file (SPEC §4.4).
const NODE_LEN: usize = 8;
/// Feature index marking a leaf in a node record.
const LEAF: u16 = u16::MAX;

/// Validation work list: holds at most depth + 1 entries, so a fixed array covers every
/// realistic tree without allocating; a Vec takes over beyond that.
struct Stack {
    fixed: [(usize, usize); 64],
    len: usize,
    spill: Vec<(usize, usize)>,
}

impl Default for Stack {
    fn default() -> Self {
        Stack {
            fixed: [(0, 0); 64],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl Stack {
    fn push(&mut self, entry: (usize, usize)) {
        if self.len < self.fixed.len() {
            self.fixed[self.len] = entry;
        } else {
            self.spill.push(entry);
        }
        self.len += 1;
    }

    fn pop(&mut self) -> Option<(usize, usize)> {
        self.len = self.len.checked_sub(1)?;
        if self.len < self.fixed.len() {
            Some(self.fixed[self.len])
        } else {
            self.spill.pop()
        }
    }
}

/// One node of a tree stored in pre-order: a split's left child is the next node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Node {
    /// Rows with `scaled[feature] <= threshold` go to the left child (index + 1), the rest to
    /// `right`.
    Split {
        feature: u16,
        threshold: f32,
        right: u32,
    },
    /// A leaf and the number of training samples that reached it.
    Leaf { samples: u32 },
}

/// One validated isolation tree.
///
/// Storage: a decoded tree keeps its node records as the file has them (SPEC §4.4: feature,
/// right-child offset and threshold or sample count in one 64-bit word), in one arena shared
/// by all trees of the forest: decoding is then a copy plus validation, one allocation for
/// the whole model, with no per-node conversion (building a [`Node`] means choosing an enum
/// variant per node: a branch that mispredicts on about every other node, or a select
/// through memory). Scoring reads the words directly. The public [`Node`] view
/// ([`Tree::nodes`]) is built on first use, like the explanation data. Trees built in memory
/// ([`Tree::new`]) use the same words when they fit (offsets ≤ 65,535, which every tree a
/// file can hold does) and keep their nodes otherwise.
#[derive(Debug, Clone)]
pub struct Tree {
    storage: Storage,
    /// Highest feature index a split reads (`None` for a single leaf), so that `Model::new`
    /// checks the schema width without walking the nodes again.
    max_feature: Option<u16>,
    /// The [`Node`] view of `Storage::Words`, built on first use.
    nodes: OnceLock<Vec<Node>>,
    /// Covers and cover ratios for explanations, derived from `nodes` on first use: callers
    /// that only score (most requests, `trainer score`) never pay for them at load.
    shap: OnceLock<TreeShap>,
}

#[derive(Debug, Clone)]
enum Storage {
    /// One word per node: `feature | offset << 16 | value << 32`.
    Words(Words),
    /// A tree whose right-child offsets do not fit in 16 bits.
    Nodes(Vec<Node>),
}

/// Where a tree's node words live.
#[derive(Debug, Clone)]
enum Words {
    /// `arena[start..start + len]`, an arena shared by the trees decoded together.
    Shared {
        arena: Arc<Vec<u64>>,
        start: usize,
        len: usize,
    },
    /// In place in a model file that lives as long as the program (one embedded in it):
    /// decoding such a file copies no node at all ([`crate::Model::from_static_bytes`]).
    Static(&'static [u64]),
}

/// A node's file word (SPEC §4.4), if its offset fits.
fn word(i: usize, node: Node) -> Option<u64> {
    Some(match node {
        Node::Split {
            feature,
            threshold,
            right,
        } => {
            let delta = u16::try_from((right as usize).checked_sub(i)?).ok()?;
            if feature == LEAF {
                return None;
            }
            u64::from(feature) | u64::from(delta) << 16 | u64::from(threshold.to_bits()) << 32
        }
        Node::Leaf { samples } => u64::from(LEAF) | u64::from(samples) << 32,
    })
}

/// The node a file word at index `i` describes.
pub(crate) fn node(i: usize, w: u64) -> Node {
    let (feature, delta, value) = split_word(w);
    if feature == LEAF {
        Node::Leaf { samples: value }
    } else {
        Node::Split {
            feature,
            threshold: f32::from_bits(value),
            right: (i + usize::from(delta)) as u32,
        }
    }
}

#[inline(always)]
fn split_word(w: u64) -> (u16, u16, u32) {
    (w as u16, (w >> 16) as u16, (w >> 32) as u32)
}

/// Trees are equal when their nodes are: everything else is derived from them.
impl PartialEq for Tree {
    fn eq(&self, other: &Self) -> bool {
        match (&self.storage, &other.storage) {
            (Storage::Words(_), Storage::Words(_)) => self.words() == other.words(),
            _ => self.nodes() == other.nodes(),
        }
    }
}

/// Scratch space for [`Tree::decode_into`]'s validation stack, reused across trees.
pub(crate) const STACK_LEN: usize = 1024;

/// A decoded tree before the arena is shared: a range of it, or (rare: trees deeper than
/// the fast path tracks) a tree of its own.
pub(crate) enum Decoded {
    Span {
        start: usize,
        len: usize,
        max_feature: Option<u16>,
    },
    /// Validated in place (see [`Words::Static`]).
    Static {
        words: &'static [u64],
        max_feature: Option<u16>,
    },
    Own(Tree),
}

impl Tree {
    /// Validates that `nodes` form one binary tree in pre-order (every node reached exactly
    /// once, every child index in range).
    pub fn new(nodes: Vec<Node>) -> Result<Self, TreeProblem> {
        validate(&nodes)?;
        let max_feature = nodes
            .iter()
            .filter_map(|n| match n {
                Node::Split { feature, .. } => Some(*feature),
                Node::Leaf { .. } => None,
            })
            .max();
        let words: Option<Vec<u64>> = nodes.iter().enumerate().map(|(i, &n)| word(i, n)).collect();
        Ok(match words {
            Some(words) => Tree {
                storage: Storage::Words(Words::Shared {
                    start: 0,
                    len: words.len(),
                    arena: Arc::new(words),
                }),
                max_feature,
                nodes: OnceLock::from(nodes),
                shap: OnceLock::new(),
            },
            None => Tree {
                storage: Storage::Nodes(nodes),
                max_feature,
                nodes: OnceLock::new(),
                shap: OnceLock::new(),
            },
        })
    }

    /// Validates one tree's node records (SPEC §4.4, 8 bytes each) and appends them to
    /// `arena`. Returns `None` (and leaves `arena` as it was) when the records are not a
    /// valid tree: the caller then re-runs the precise, slower checks to report what is
    /// wrong, so this path only has to be exact about *whether* the tree is valid, not why.
    ///
    /// Why it is fast: no check depends on a branch (isolation trees alternate leaves and
    /// splits unpredictably; a mispredicted branch per node cost more than everything else
    /// together). The copy and the checks that concern one node alone vectorize; the shape is
    /// checked with the pre-order walk's stack of subtree ends, where a split pushes its right
    /// child's index (the end of its left subtree) and a leaf pops. Values pushed come from
    /// the records, never from the stack, so nothing waits on memory from one node to the
    /// next. Where the CPU has AVX2, trees of up to 1,021 nodes are instead checked eight
    /// nodes at a time by counting leaves (`check_counts_avx2`), twice as fast again.
    pub(crate) fn decode_into(
        records: &[u8],
        arena: &mut Vec<u64>,
        stack: &mut [u32; STACK_LEN],
    ) -> Option<Decoded> {
        let n = records.len() / NODE_LEN;
        if n == 0 || !records.len().is_multiple_of(NODE_LEN) || u32::try_from(n).is_err() {
            return None;
        }
        let start = arena.len();
        arena.extend(records.chunks_exact(NODE_LEN).map(|r| {
            let mut w = [0; NODE_LEN];
            w.copy_from_slice(r);
            u64::from_le_bytes(w)
        }));
        if let Some(max_feature) = check_words(&arena[start..], stack) {
            Some(Decoded::Span {
                start,
                len: n,
                max_feature,
            })
        } else {
            arena.truncate(start);
            None
        }
    }

    /// [`Tree::decode_into`] for node words that stay where they are (see [`Words::Static`]).
    pub(crate) fn decode_static(
        words: &'static [u64],
        stack: &mut [u32; STACK_LEN],
    ) -> Option<Decoded> {
        if words.is_empty() || u32::try_from(words.len()).is_err() {
            return None;
        }
        check_words(words, stack).map(|max_feature| Decoded::Static { words, max_feature })
    }

    /// [`Tree::decode_static`] without the validation, for words validated when the same file
    /// was decoded before (see [`crate::FileTrust::DecodedBefore`]). Only the
    /// highest split feature is computed, which the model checks against its schema.
    pub(crate) fn adopt_static(words: &'static [u64]) -> Option<Decoded> {
        if words.is_empty() || u32::try_from(words.len()).is_err() {
            return None;
        }
        let max_feature_1 = words
            .iter()
            .map(|&w| (w as u32).wrapping_add(1) & 0xffff)
            .max()
            .unwrap_or(0);
        Some(Decoded::Static {
            words,
            max_feature: (max_feature_1 as u16).checked_sub(1),
        })
    }

    /// The trees `decode_into` appended to `arena`, sharing it.
    pub(crate) fn from_arena(arena: Vec<u64>, decoded: Vec<Decoded>) -> Vec<Tree> {
        let arena = Arc::new(arena);
        decoded
            .into_iter()
            .map(|d| match d {
                Decoded::Span {
                    start,
                    len,
                    max_feature,
                } => Tree {
                    storage: Storage::Words(Words::Shared {
                        arena: Arc::clone(&arena),
                        start,
                        len,
                    }),
                    max_feature,
                    nodes: OnceLock::new(),
                    shap: OnceLock::new(),
                },
                Decoded::Static { words, max_feature } => Tree {
                    storage: Storage::Words(Words::Static(words)),
                    max_feature,
                    nodes: OnceLock::new(),
                    shap: OnceLock::new(),
                },
                Decoded::Own(tree) => tree,
            })
            .collect()
    }

    fn words(&self) -> &[u64] {
        match &self.storage {
            Storage::Words(Words::Shared { arena, start, len }) => &arena[*start..*start + *len],
            Storage::Words(Words::Static(words)) => words,
            Storage::Nodes(_) => &[],
        }
    }

    pub fn nodes(&self) -> &[Node] {
        match &self.storage {
            Storage::Nodes(nodes) => nodes,
            Storage::Words(_) => self.nodes.get_or_init(|| {
                self.words()
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| node(i, w))
                    .collect()
            }),
        }
    }

    /// Number of nodes.
    pub(crate) fn len(&self) -> usize {
        match &self.storage {
            Storage::Words(_) => self.words().len(),
            Storage::Nodes(nodes) => nodes.len(),
        }
    }

    /// The nodes in order, without building the [`Tree::nodes`] view: for one pass over a
    /// tree that is not worth an allocation (checking installed explanation tables).
    pub(crate) fn iter_nodes(&self) -> impl Iterator<Item = Node> + '_ {
        let (words, nodes): (&[u64], &[Node]) = match &self.storage {
            Storage::Words(_) => (self.words(), &[]),
            Storage::Nodes(nodes) => (&[], nodes),
        };
        let from_words = words.iter().enumerate().map(|(i, &w)| node(i, w));
        from_words.chain(nodes.iter().copied())
    }

    pub(crate) fn shap(&self) -> &TreeShap {
        self.shap
            .get_or_init(|| TreeShap::new(self.nodes(), &leaf_path_lengths(self.nodes())))
    }

    /// The tree's expected path length over its training samples: the cover-weighted mean of
    /// its leaves' path lengths, `v(∅)` of the explanation game.
    pub fn expected_path_length(&self) -> f64 {
        self.shap().root_value()
    }

    /// Path length of `x` (scaled, f32) through this tree: depth of its leaf + c(leaf samples).
    /// The depth is counted on the way down rather than stored per leaf, so decoding a model
    /// computes nothing per leaf.
    #[inline]
    fn path_length(&self, x: &[f32], small: &[f64; 512]) -> f64 {
        let mut i = 0;
        let mut depth = 0;
        match &self.storage {
            Storage::Words(_) => {
                let words = self.words();
                loop {
                    let (feature, delta, value) = split_word(words[i]);
                    if feature == LEAF {
                        return leaf_path_length_in(depth, value, small);
                    }
                    i += if x[usize::from(feature)] <= f32::from_bits(value) {
                        1
                    } else {
                        usize::from(delta)
                    };
                    depth += 1;
                }
            }
            Storage::Nodes(nodes) => loop {
                match nodes[i] {
                    Node::Split {
                        feature,
                        threshold,
                        right,
                    } => {
                        i = if x[usize::from(feature)] <= threshold {
                            i + 1
                        } else {
                            right as usize
                        };
                        depth += 1;
                    }
                    Node::Leaf { samples } => return leaf_path_length_in(depth, samples, small),
                }
            },
        }
    }
}

/// The fast validation of [`Tree::decode_into`]: `Some(highest split feature)` when `words`
/// (not empty) form a valid tree. See there for why it is written this way.
fn check_words(words: &[u64], stack: &mut [u32; STACK_LEN]) -> Option<Option<u16>> {
    #[cfg(target_arch = "x86_64")]
    if (1..=STACK_LEN - 3).contains(&words.len()) && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above; 1 ≤ n ≤ STACK_LEN - 3.
        let (ok, max_feature_1) = unsafe { check_counts_avx2(words, stack) };
        return ok.then(|| (max_feature_1 as u16).checked_sub(1));
    }
    check_words_portable(words, stack)
}

/// [`check_words`] on any CPU (and in WebAssembly): the node checks, then the walk.
fn check_words_portable(words: &[u64], stack: &mut [u32; STACK_LEN]) -> Option<Option<u16>> {
    let n = words.len();
    let (bad_node, max_feature_1) = node_checks(words);
    // Each node pushes at most one entry, so the stack pointer stays ≤ n + 1 and the slot
    // written above it ≤ n + 2: a ring of more than n + 2 slots never wraps. Bigger trees
    // (ψ > 512) use a small ring with a depth guard.
    let shape_ok = match stack.first_chunk_mut::<64>() {
        Some(small) if n > STACK_LEN - 3 => shape_ok::<64, true>(words, small),
        _ => shape_ok::<STACK_LEN, false>(words, stack),
    };
    (!bad_node && shape_ok).then(|| (max_feature_1 as u16).checked_sub(1))
}

/// Checks that concern one node alone: a leaf has offset 0 and at least one sample; a split an
/// offset of at least 2 (its left subtree is not empty) and a threshold that is not NaN.
/// Returns whether some node fails, and the highest split feature + 1 (0 without splits).
#[inline(always)]
fn node_checks(words: &[u64]) -> (bool, u32) {
    // Bitwise operators on purpose: `if` or `&&` here compiles to a branch. On 32-bit halves
    // (`lo` = feature | offset << 16, `hi` = value), which vectorize with fewer shuffles
    // than 16-bit fields.
    let mut bad_node = 0u32;
    // Highest split feature + 1 (a leaf's 0xFFFF wraps to 0), 0 while no split is seen.
    let mut max_feature_1 = 0u32;
    for &w in words {
        let (lo, hi) = (w as u32, (w >> 32) as u32);
        let leaf = lo & 0xffff == 0xffff;
        max_feature_1 = max_feature_1.max(lo.wrapping_add(1) & 0xffff);
        let leaf_bad = (lo != 0xffff) | (hi == 0);
        let split_bad = (lo < 0x2_0000) | (hi & 0x7fff_ffff > 0x7f80_0000);
        bad_node |= u32::from((leaf & leaf_bad) | (!leaf & split_bad));
    }
    (bad_node != 0, max_feature_1)
}

/// [`node_checks`] and [`shape_ok`] together, the shape by counting instead of walking,
/// eight nodes at a time with AVX2 (the walk's stack makes every node wait for the one
/// before; counts vectorize): about twice as fast. For `1 ≤ n ≤ STACK_LEN - 3`; returns
/// whether the words are valid and, like [`node_checks`], the highest split feature + 1.
///
/// With `L(k)` the number of leaves among the first `k` nodes and `S(k) = k − 2·L(k)` (the
/// pending subtrees after `k` nodes, minus one), the words are one pre-order tree iff
/// (1) `S(k) ≥ 0` for `0 < k < n` and `S(n) = −1`: the leaf/split sequence is a tree;
/// (2) every split `i` with right child `r = i + offset` has `r ≤ n` and `S(r) = S(i)`; and
/// (3) the right children sum to the sum of the positions that follow a leaf (`k < n`).
/// In that tree, the right child of split `i` is the first `k > i` with `S(k) = S(i)`, and
/// the right children are exactly the positions that follow a leaf; (2) makes every `r` at
/// least that true child, so (3) leaves no room for any `r` to be later. (All given the node
/// checks: a split's offset is at least 2, a leaf's 0.) Pass one checks the nodes and (1),
/// sums for (3) and stores `L(k) | offset(k) << 16` in `leaves_before`; pass two checks (2),
/// gathering `L(r)`.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn check_counts_avx2(words: &[u64], leaves_before: &mut [u32; STACK_LEN]) -> (bool, u32) {
    use std::arch::x86_64::*;
    let n = words.len();
    debug_assert!((1..=STACK_LEN - 3).contains(&n));
    // Chunks of eight that end before the last node, whose S(n) condition differs.
    let full = (n - 1) / 8 * 8;
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let ffff = _mm256_set1_epi32(0xffff);
    // The feature | offset << 16 halves of words[c..c + 8] and their value halves, in
    // order. SAFETY (callers): c + 8 ≤ n.
    let halves = |c: usize| unsafe {
        let a = _mm256_castsi256_ps(_mm256_loadu_si256(words.as_ptr().add(c).cast()));
        let b = _mm256_castsi256_ps(_mm256_loadu_si256(words.as_ptr().add(c + 4).cast()));
        let in_order = |v: __m256| _mm256_permute4x64_epi64::<0xD8>(_mm256_castps_si256(v));
        (
            in_order(_mm256_shuffle_ps::<0x88>(a, b)),
            in_order(_mm256_shuffle_ps::<0xDD>(a, b)),
        )
    };
    let sum = |v: __m256i| {
        let mut a = [0u32; 8];
        // SAFETY: `a` holds 32 bytes.
        unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), v) };
        a.iter().fold(0u32, |s, &x| s.wrapping_add(x))
    };
    let mut carry = _mm256_setzero_si256(); // leaves so far, in every lane
    let mut bad = _mm256_setzero_si256();
    let mut max_feature_1 = _mm256_setzero_si256();
    let (mut after_leaf, mut rights) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for c in (0..full).step_by(8) {
        let (lo, hi) = halves(c);
        let leaf = _mm256_cmpeq_epi32(_mm256_and_si256(lo, ffff), ffff);
        // The node checks: a leaf is exactly 0xFFFF with samples; a split has an offset of
        // at least 2 and a threshold that is not NaN (|bits| above infinity's).
        let zero = _mm256_setzero_si256();
        let leaf_bad = _mm256_or_si256(
            _mm256_xor_si256(_mm256_cmpeq_epi32(lo, ffff), _mm256_set1_epi32(-1)),
            _mm256_cmpeq_epi32(hi, zero),
        );
        let short = _mm256_cmpeq_epi32(_mm256_srli_epi32::<17>(lo), zero);
        let magnitude = _mm256_and_si256(hi, _mm256_set1_epi32(0x7fff_ffff));
        let nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f80_0000));
        let split_bad = _mm256_or_si256(short, nan);
        bad = _mm256_or_si256(bad, _mm256_blendv_epi8(split_bad, leaf_bad, leaf));
        let feature_1 = _mm256_and_si256(_mm256_add_epi32(lo, _mm256_set1_epi32(1)), ffff);
        max_feature_1 = _mm256_max_epu32(max_feature_1, feature_1);
        let is_leaf = _mm256_srli_epi32::<31>(leaf);
        // Inclusive prefix sum over the eight lanes.
        let mut x = _mm256_add_epi32(is_leaf, _mm256_slli_si256::<4>(is_leaf));
        x = _mm256_add_epi32(x, _mm256_slli_si256::<8>(x));
        let low_total = _mm256_permutevar8x32_epi32(x, _mm256_set1_epi32(3));
        let upper = _mm256_setr_epi32(0, 0, 0, 0, -1, -1, -1, -1);
        x = _mm256_add_epi32(x, _mm256_and_si256(low_total, upper));
        let through = _mm256_add_epi32(x, carry); // L(k + 1)
        // SAFETY: c + 8 ≤ n < STACK_LEN.
        unsafe {
            // L(k) in the low half, the node's offset in the high half (as in `lo`): pass
            // two then reads one array, not the words again.
            let before = _mm256_sub_epi32(through, is_leaf);
            let packed = _mm256_or_si256(before, _mm256_andnot_si256(ffff, lo));
            _mm256_storeu_si256(leaves_before.as_mut_ptr().add(c).cast(), packed);
        }
        carry = _mm256_permutevar8x32_epi32(through, _mm256_set1_epi32(7));
        let k = _mm256_add_epi32(lanes, _mm256_set1_epi32(c as i32));
        let next = _mm256_add_epi32(k, _mm256_set1_epi32(1));
        // (1): S(k + 1) < 0 iff 2·L(k + 1) > k + 1 (small values: signed compare is fine).
        bad = _mm256_or_si256(
            bad,
            _mm256_cmpgt_epi32(_mm256_add_epi32(through, through), next),
        );
        after_leaf = _mm256_add_epi32(after_leaf, _mm256_and_si256(leaf, next));
        let right = _mm256_add_epi32(k, _mm256_srli_epi32::<16>(lo));
        rights = _mm256_add_epi32(rights, _mm256_andnot_si256(leaf, right));
    }
    let mut ok = _mm256_testz_si256(bad, bad) == 1;
    let (mut after_leaf, mut rights) = (sum(after_leaf), sum(rights));
    let mut leaves = _mm256_extract_epi32::<0>(carry) as u32;
    let mut max_lanes = [0u32; 8];
    // SAFETY: `max_lanes` holds 32 bytes.
    unsafe { _mm256_storeu_si256(max_lanes.as_mut_ptr().cast(), max_feature_1) };
    let (tail_bad, tail_max) = node_checks(&words[full..]);
    ok &= !tail_bad;
    let max_feature_1 = max_lanes.into_iter().fold(tail_max, u32::max);
    for (i, &w) in words.iter().enumerate().skip(full) {
        leaves_before[i] = leaves | (w as u32 & 0xffff_0000);
        let leaf = w as u16 == LEAF;
        leaves += u32::from(leaf);
        let next = i as u32 + 1;
        ok &= (2 * leaves <= next) | (next as usize == n);
        after_leaf = after_leaf.wrapping_add(if leaf { next } else { 0 });
        let right = i as u32 + u32::from((w >> 16) as u16);
        rights = rights.wrapping_add(if leaf { 0 } else { right });
    }
    leaves_before[n] = leaves;
    // (1) at n, and (3): the position after the last node is not a right child.
    ok &= 2 * leaves as usize == n + 1;
    ok &= after_leaf.wrapping_sub(n as u32) == rights;
    // (2), with r capped at n (S(n) = −1 differs from every S(i) ≥ 0): S(r) = S(i) iff
    // r − i = 2·(L(r) − L(i)). Leaves have r = i.
    let (n8, cap) = (n / 8 * 8, _mm256_set1_epi32(n as i32));
    let mut bad = _mm256_setzero_si256();
    for c in (0..n8).step_by(8) {
        let k = _mm256_add_epi32(lanes, _mm256_set1_epi32(c as i32));
        // SAFETY: c + 8 ≤ n < STACK_LEN.
        let at_k = unsafe { _mm256_loadu_si256(leaves_before.as_ptr().add(c).cast()) };
        let r = _mm256_min_epu32(_mm256_add_epi32(k, _mm256_srli_epi32::<16>(at_k)), cap);
        // SAFETY: every r ≤ n < STACK_LEN, written above.
        let at_r = unsafe { _mm256_i32gather_epi32::<4>(leaves_before.as_ptr().cast(), r) };
        let between = _mm256_sub_epi32(_mm256_and_si256(at_r, ffff), _mm256_and_si256(at_k, ffff));
        let same = _mm256_cmpeq_epi32(_mm256_sub_epi32(r, k), _mm256_add_epi32(between, between));
        bad = _mm256_or_si256(bad, _mm256_xor_si256(same, _mm256_set1_epi32(-1)));
    }
    ok &= _mm256_testz_si256(bad, bad) == 1;
    for i in n8..n {
        let packed = leaves_before[i];
        let r = (i + (packed >> 16) as usize).min(n);
        let between = (leaves_before[r] & 0xffff).wrapping_sub(packed & 0xffff);
        ok &= (r - i) as u32 == between.wrapping_mul(2);
    }
    (ok, max_feature_1)
}

/// Whether the node words form one binary tree in pre-order (offsets and leaf/split checks
/// are done elsewhere: a leaf's offset must be 0 here).
///
/// The stack holds the ends of pending subtrees; its top is the end of the subtree rooted at
/// the current node: a split's right child must lie before it, a leaf must end it. A split
/// pushes its right child's index (the end of its left subtree), a leaf pops. Values pushed
/// come from the words, never from the stack, so nothing waits on memory from one node to
/// the next; there is no data-dependent branch. The stack is a ring with masked indexes (no
/// bounds checks): `stack[0] = 0` is a sentinel (once the root's subtree is complete, any
/// further node sees end 0 and fails), `stack[1] = n` (the root spans `[0, n)`). Without
/// `GUARD` the caller ensures the ring cannot wrap (n + 2 ≤ RING); with it, a tree deeper
/// than the ring allows (or one that pops more than it pushed) is reported invalid, for the
/// slow path to judge.
#[inline(always)]
fn shape_ok<const RING: usize, const GUARD: bool>(words: &[u64], stack: &mut [u32; RING]) -> bool {
    use std::hint::select_unpredictable as select;
    // Other slots may hold values of an earlier tree: a slot is read only after this tree
    // wrote it, as long as every node so far was valid.
    stack[0] = 0;
    stack[1] = words.len() as u32;
    let mut sp = 1usize;
    let mut seen = 0usize;
    let mut ok = true;
    for (i, &w) in words.iter().enumerate() {
        let (feature, delta, _) = split_word(w);
        let leaf = feature == LEAF;
        // In a valid prefix, end > i always, so a leaf ends its subtree iff end <= i + 1; with
        // a leaf's offset 0, `right + 1` is i + 1.
        // Wrapping: a corrupt offset must fail the check below, not overflow (debug builds).
        let right = (i as u32).wrapping_add(u32::from(delta));
        let bound = right.wrapping_add(u32::from(leaf));
        ok &= (stack[sp % RING] > bound) != leaf;
        // Harmless for a leaf: the slot above the top is dead.
        stack[sp.wrapping_add(1) % RING] = right;
        sp = select(leaf, sp.wrapping_sub(1), sp.wrapping_add(1));
        if GUARD {
            seen |= sp;
        }
    }
    // A valid tree pops its last subtree at its last node.
    ok && sp == 0 && (!GUARD || seen < RING / 2)
}

/// The precise validation behind [`Tree::new`]: reports the first problem in pre-order.
pub(crate) fn validate(nodes: &[Node]) -> Result<(), TreeProblem> {
    if nodes.is_empty() {
        return Err(TreeProblem::Empty);
    }
    // Each entry is a subtree that must occupy exactly nodes[start..end].
    let mut pending = Stack::default();
    pending.push((0, nodes.len()));
    while let Some((start, end)) = pending.pop() {
        match nodes[start] {
            Node::Leaf { samples } => {
                if end != start + 1 {
                    return Err(TreeProblem::Shape { node: start + 1 });
                }
                if samples == 0 {
                    return Err(TreeProblem::EmptyLeaf { node: start });
                }
            }
            Node::Split {
                threshold, right, ..
            } => {
                if threshold.is_nan() {
                    return Err(TreeProblem::NanThreshold { node: start });
                }
                let r = right as usize;
                if r <= start + 1 || r >= end {
                    return Err(TreeProblem::BadChild { node: start, right });
                }
                pending.push((r, end));
                pending.push((start + 1, r));
            }
        }
    }
    Ok(())
}

/// For each node of a valid tree, the path length it contributes if it is a leaf (0 for
/// splits): what explanations use as leaf values. Only built when a tree is first explained.
fn leaf_path_lengths(nodes: &[Node]) -> Vec<f64> {
    let small = small_c();
    let mut out = vec![0.0; nodes.len()];
    // Pre-order: a node's depth is known when it is reached; keep the depth of pending
    // right children.
    let mut pending: Vec<(usize, u32)> = Vec::with_capacity(64);
    pending.push((0, 0));
    while let Some((i, depth)) = pending.pop() {
        match nodes.get(i) {
            Some(&Node::Leaf { samples }) => out[i] = leaf_path_length_in(depth, samples, small),
            Some(&Node::Split { right, .. }) => {
                pending.push((right as usize, depth + 1));
                pending.push((i + 1, depth + 1));
            }
            None => {}
        }
    }
    out
}

/// An isolation forest: trees, the subsample size ψ they were grown on, and the decision offset.
#[derive(Debug, Clone)]
pub struct Forest {
    trees: Vec<Tree>,
    max_samples: u32,
    offset: f64,
    /// n_trees · c(ψ), the normaliser of the mean path length.
    denominator: f64,
    /// Highest feature index any split reads, if any tree splits at all.
    max_feature: Option<u16>,
    /// Quadrature rule and expected value for explanations, derived from the trees on first use.
    shap: OnceLock<ForestShap>,
    /// Trees grown on separate feature groups and how their path lengths combine (SPEC §4.8).
    groups: Option<TreeGroups>,
}

/// Consecutive runs of a forest's trees, each grown on its own feature group (say the
/// per-transaction features, then the velocity features), combined so that a later group adds
/// to a row's anomaly only where it is itself in its tail.
///
/// Why: an isolation forest picks split features at random, so every feature added to one
/// forest takes splits away from the others; on held-out fraud streams adding velocity
/// features to the legacy five cost every single-transaction pattern 0.04–0.13 ROC-AUC. Apart,
/// each group keeps its own resolution, and the tail rule keeps the ordinary spread of one
/// group (busy cards) from burying another group's anomalies (a 40× amount).
///
/// With `E_g` the mean path length over group `g`'s trees, a row's mean path length is
/// `max(0, E_0 − w · Σ_{g≥1} max(0, tail_g − E_g))`: group 0 as a plain forest, and each later
/// group shortening it by how far below its tail (a low quantile of its training path
/// lengths) the row falls there, times the groups' weight `w` (1 unless set: a shortening is
/// measured on the later group's scale, which can be narrower than group 0's).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeGroups {
    /// Exclusive end of each group's trees, increasing; the last is the tree count.
    ends: Vec<u32>,
    /// Per group after the first: the mean path length below which it adds.
    tails: Vec<f64>,
    /// What the later groups' shortening is multiplied by, 1 to [`MAX_TREE_GROUP_WEIGHT`].
    weight: u32,
}

/// Largest weight of the later groups' shortening ([`TreeGroups::with_weight`]).
pub const MAX_TREE_GROUP_WEIGHT: u32 = 16;

/// Most feature groups a forest may have.
pub const MAX_TREE_GROUPS: usize = 16;

impl TreeGroups {
    /// Groups from each one's exclusive tree end (increasing) and, for every group but the
    /// first, its tail. Checked against the forest in [`Forest::with_groups`].
    pub fn new(ends: Vec<u32>, tails: Vec<f64>) -> Result<Self, InvalidModel> {
        let bad = |why: String| Err(InvalidModel::TreeGroups(why));
        if ends.len() < 2 || ends.len() > MAX_TREE_GROUPS {
            return bad(format!(
                "{} groups; need 2 to {MAX_TREE_GROUPS}",
                ends.len()
            ));
        }
        if tails.len() + 1 != ends.len() {
            return bad(format!(
                "{} tails for {} groups (one per group after the first)",
                tails.len(),
                ends.len()
            ));
        }
        let mut start = 0;
        for (g, &end) in ends.iter().enumerate() {
            if end <= start {
                return bad(format!("group {g} ends at tree {end}, not after {start}"));
            }
            start = end;
        }
        if let Some((g, t)) = tails
            .iter()
            .enumerate()
            .find(|(_, t)| !(t.is_finite() && **t >= 0.0))
        {
            return bad(format!("group {}'s tail {t} is not a path length", g + 1));
        }
        Ok(TreeGroups {
            ends,
            tails,
            weight: 1,
        })
    }

    /// The same groups with the later groups' shortening multiplied by `weight` (1 to
    /// [`MAX_TREE_GROUP_WEIGHT`]; 1 is what [`TreeGroups::new`] gives).
    pub fn with_weight(mut self, weight: u32) -> Result<Self, InvalidModel> {
        if !(1..=MAX_TREE_GROUP_WEIGHT).contains(&weight) {
            return Err(InvalidModel::TreeGroups(format!(
                "weight {weight}; need 1 to {MAX_TREE_GROUP_WEIGHT}"
            )));
        }
        self.weight = weight;
        Ok(self)
    }

    /// What the later groups' shortening is multiplied by.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Each group's exclusive tree end.
    pub fn ends(&self) -> &[u32] {
        &self.ends
    }

    /// The tails of the groups after the first.
    pub fn tails(&self) -> &[f64] {
        &self.tails
    }

    /// Group `g`'s trees.
    pub fn range(&self, g: usize) -> std::ops::Range<usize> {
        let start = if g == 0 { 0 } else { self.ends[g - 1] as usize };
        start..self.ends[g] as usize
    }

    /// Each group's mean path length from its sum.
    fn means(&self, sums: &[f64]) -> [f64; MAX_TREE_GROUPS] {
        let mut means = [0.0; MAX_TREE_GROUPS];
        for (g, (m, s)) in means.iter_mut().zip(sums).enumerate() {
            *m = s / self.range(g).len() as f64;
        }
        means
    }

    /// The combined mean path length from each group's mean, and the factor the later groups'
    /// shortening was scaled by to keep it at or above 0 (1 unless clamped).
    fn combine(&self, means: &[f64]) -> (f64, f64) {
        let shortening: f64 = self
            .tails
            .iter()
            .zip(&means[1..])
            .map(|(&tail, &e)| (tail - e).max(0.0))
            .sum::<f64>()
            * f64::from(self.weight);
        if shortening <= means[0] {
            (means[0] - shortening, 1.0)
        } else {
            (0.0, means[0] / shortening)
        }
    }
}

/// Forests are equal when their stored parts are: the rest is derived from them.
impl PartialEq for Forest {
    fn eq(&self, other: &Self) -> bool {
        self.trees == other.trees
            && self.groups == other.groups
            && self.max_samples == other.max_samples
            && self.offset.to_bits() == other.offset.to_bits()
    }
}

impl Forest {
    pub fn new(trees: Vec<Tree>, max_samples: u32, offset: f64) -> Result<Self, InvalidModel> {
        if trees.is_empty() {
            return Err(InvalidModel::NoTrees);
        }
        if max_samples == 0 {
            return Err(InvalidModel::MaxSamples);
        }
        if !offset.is_finite() {
            return Err(InvalidModel::Offset(offset));
        }
        let denominator = trees.len() as f64 * average_path_length(max_samples);
        let max_feature = trees.iter().filter_map(|t| t.max_feature).max();
        Ok(Forest {
            trees,
            max_samples,
            offset,
            denominator,
            max_feature,
            shap: OnceLock::new(),
            groups: None,
        })
    }

    /// The same trees as consecutive feature groups (see [`TreeGroups`]).
    pub fn with_groups(mut self, groups: TreeGroups) -> Result<Self, InvalidModel> {
        let last = *groups.ends.last().expect("at least two groups") as usize;
        if last != self.trees.len() {
            return Err(InvalidModel::TreeGroups(format!(
                "groups end at tree {last} but the forest has {}",
                self.trees.len()
            )));
        }
        self.groups = Some(groups);
        Ok(self)
    }

    /// The feature groups, if the trees were grown in groups.
    pub fn groups(&self) -> Option<&TreeGroups> {
        self.groups.as_ref()
    }

    /// The same forest with another decision offset (the trainer sets it after scoring the
    /// training data).
    pub fn with_offset(mut self, offset: f64) -> Result<Self, InvalidModel> {
        if !offset.is_finite() {
            return Err(InvalidModel::Offset(offset));
        }
        self.offset = offset;
        Ok(self)
    }

    pub fn trees(&self) -> &[Tree] {
        &self.trees
    }

    /// ψ, the number of samples each tree was grown on.
    pub fn max_samples(&self) -> u32 {
        self.max_samples
    }

    pub fn offset(&self) -> f64 {
        self.offset
    }

    pub fn node_count(&self) -> usize {
        self.trees.iter().map(Tree::len).sum()
    }

    pub(crate) fn max_feature_index(&self) -> Option<u16> {
        self.max_feature
    }

    pub(crate) fn shap(&self) -> &ForestShap {
        self.shap.get_or_init(|| ForestShap::new(&self.trees))
    }

    /// `E[h]` over the training samples, the base value of explanations: the mean over trees
    /// of each tree's cover-weighted mean leaf path length.
    ///
    /// With feature groups, group 0's (the later groups add only in their tails, and their
    /// part of an explanation is the whole of what they add).
    pub fn expected_value(&self) -> f64 {
        match &self.groups {
            None => self.shap().expected_value(),
            Some(g) => self.group_expected_value(g.range(0)),
        }
    }

    /// Mean over `trees` of each tree's expected path length, summed in tree order.
    fn group_expected_value(&self, trees: std::ops::Range<usize>) -> f64 {
        let n = trees.len() as f64;
        let sum: f64 = self.trees[trees]
            .iter()
            .map(|t| t.shap().root_value())
            .sum();
        sum / n
    }

    /// Exact path-dependent TreeSHAP of the mean path length for an already scaled row:
    /// overwrites `phi` (one slot per entry of `x`) so that
    /// `Σphi + expected_value() = score.mean_path_length`. See [`crate::explain`].
    pub fn explain_scaled(&self, x: &[f32], phi: &mut [f64]) -> Result<Score, ExplainError> {
        // A grouped forest's score and its groups' means come from one walk of the trees.
        let (score, sums) = match &self.groups {
            None => (self.score_scaled(x)?, None),
            Some(groups) => {
                self.check_width(x)?;
                let sums = self.group_sums(x, groups);
                (
                    self.score_group_sums(&sums[..groups.ends.len()]),
                    Some(sums),
                )
            }
        };
        if phi.len() != x.len() {
            return Err(ExplainError::PhiWidth {
                expected: x.len(),
                found: phi.len(),
            });
        }
        phi.fill(0.0);
        let Some(groups) = &self.groups else {
            crate::explain::forest_phi(self, x, phi, 0..self.trees.len())?;
            let scale = 1.0 / self.trees.len() as f64;
            for v in phi.iter_mut() {
                *v *= scale;
            }
            return Ok(score);
        };
        // Group 0 as a forest of its own; each later group in its tail: its exact attributions
        // (summing to E_g − its expected value) scaled to sum to what it subtracts, E_g − tail.
        let means = groups.means(&sums.expect("summed for groups")[..groups.ends.len()]);
        let range = groups.range(0);
        let scale = 1.0 / range.len() as f64;
        crate::explain::forest_phi(self, x, phi, range)?;
        phi.iter_mut().for_each(|v| *v *= scale);
        let (_, clamp) = groups.combine(&means[..groups.ends.len()]);
        let mut part = [0.0; crate::MAX_FEATURES];
        let part = &mut part[..x.len()];
        for (g, &tail) in groups.tails.iter().enumerate().map(|(i, t)| (i + 1, t)) {
            let shortening = tail - means[g];
            if shortening <= 0.0 {
                continue;
            }
            let range = groups.range(g);
            part.fill(0.0);
            let n = range.len() as f64;
            crate::explain::forest_phi(self, x, part, range.clone())?;
            let expected = self.group_expected_value(range);
            // Σ part/n = E_g − expected: scaled by (E_g − tail)/(E_g − expected), in [0, 1]
            // whenever the tail lies below the expected value (a low quantile always does);
            // otherwise spread evenly, so the sum still holds.
            let ratio = (means[g] - tail) / (means[g] - expected);
            if ratio.is_finite() && (0.0..=1.0).contains(&ratio) {
                let f = ratio * f64::from(groups.weight) / n * clamp;
                phi.iter_mut()
                    .zip(part.iter())
                    .for_each(|(p, v)| *p += v * f);
            } else {
                let each = -(shortening * f64::from(groups.weight)) * clamp / x.len() as f64;
                phi.iter_mut().for_each(|p| *p += each);
            }
        }
        Ok(score)
    }

    /// [`Forest::explain_scaled`] for [`ROWS`](crate::explain::ROWS) scaled rows at once, bit
    /// for bit what it gives each row (see [`crate::explain::forest_phi_rows`]); pushes their
    /// scores to `scores` in order. A grouped forest explains them one by one.
    pub(crate) fn explain_scaled_rows(
        &self,
        xs: [&[f32]; crate::explain::ROWS],
        phis: &mut [&mut [f64]; crate::explain::ROWS],
        scratch: &mut crate::explain::RowsScratch,
        scores: &mut Vec<Score>,
    ) -> Result<(), ExplainError> {
        if self.groups.is_some() {
            for (x, phi) in xs.into_iter().zip(phis.iter_mut()) {
                scores.push(self.explain_scaled(x, phi)?);
            }
            return Ok(());
        }
        let start = scores.len();
        for (x, phi) in xs.into_iter().zip(phis.iter()) {
            let score = self.score_scaled(x);
            if phi.len() != x.len() || score.is_err() {
                scores.truncate(start);
                return Err(match score {
                    Err(e) => e.into(),
                    Ok(_) => ExplainError::PhiWidth {
                        expected: x.len(),
                        found: phi.len(),
                    },
                });
            }
            scores.extend(score);
        }
        phis.iter_mut().for_each(|phi| phi.fill(0.0));
        crate::explain::forest_phi_rows(self, xs, phis, 0..self.trees.len(), scratch)
            .inspect_err(|_| scores.truncate(start))?;
        let scale = 1.0 / self.trees.len() as f64;
        for v in phis.iter_mut().flat_map(|phi| phi.iter_mut()) {
            *v *= scale;
        }
        Ok(())
    }

    /// Each group's path lengths for a scaled row, summed in tree order.
    fn group_sums(&self, x: &[f32], groups: &TreeGroups) -> [f64; MAX_TREE_GROUPS] {
        let mut sums = [0.0; MAX_TREE_GROUPS];
        for (g, sum) in sums.iter_mut().enumerate().take(groups.ends.len()) {
            *sum = self.sum_paths(x, groups.range(g));
        }
        sums
    }

    /// Path lengths of `trees` for a scaled row of checked width, added in tree order from 0
    /// (the one summation every score goes through).
    fn sum_paths(&self, x: &[f32], trees: std::ops::Range<usize>) -> f64 {
        let small = small_c();
        let mut depths = 0.0;
        for tree in &self.trees[trees] {
            depths += tree.path_length(x, small);
        }
        depths
    }

    /// The sum of an already scaled row's path lengths over every tree, in tree order (what
    /// [`Forest::score_path_sum`] and, per group, [`Forest::score_group_sums`] take).
    pub fn path_length_sum(&self, x: &[f32]) -> Result<f64, ScoreError> {
        self.check_width(x)?;
        Ok(self.sum_paths(x, 0..self.trees.len()))
    }

    /// The row must cover every feature a split reads.
    fn check_width(&self, x: &[f32]) -> Result<(), ScoreError> {
        match self.max_feature {
            Some(max) if x.len() <= usize::from(max) => Err(ScoreError::Width {
                expected: usize::from(max) + 1,
                found: x.len(),
            }),
            _ => Ok(()),
        }
    }

    /// Scores an already scaled row. The row must cover every feature a split reads.
    pub fn score_scaled(&self, x: &[f32]) -> Result<Score, ScoreError> {
        self.check_width(x)?;
        if let Some(groups) = &self.groups {
            let sums = self.group_sums(x, groups);
            return Ok(self.score_group_sums(&sums[..groups.ends.len()]));
        }
        // Sum in tree order, then normalise, exactly like scikit-learn's _compute_score_samples.
        Ok(self.score_path_sum(self.sum_paths(x, 0..self.trees.len())))
    }

    /// The score of a row from the sum of its path lengths over the trees, added in tree
    /// order: the one normalisation every scorer (row by row here, batched in the trainer)
    /// goes through, so they agree to the bit.
    pub fn score_path_sum(&self, depths: f64) -> Score {
        let ratio = if self.denominator != 0.0 {
            depths / self.denominator
        } else {
            1.0
        };
        let score_samples = -libm::pow(2.0, -ratio);
        Score {
            mean_path_length: depths / self.trees.len() as f64,
            score_samples,
            decision: score_samples - self.offset,
        }
    }

    /// The score of a row from the sum of its path lengths over each group's trees, in tree
    /// order (see [`TreeGroups`]; a forest without groups has one). A row no later group
    /// shortens scores exactly as group 0 alone would, to the bit.
    pub fn score_group_sums(&self, sums: &[f64]) -> Score {
        let Some(groups) = &self.groups else {
            return self.score_path_sum(sums[0]);
        };
        let means = groups.means(sums);
        let (mean, _) = groups.combine(&means[..groups.ends.len()]);
        let c = average_path_length(self.max_samples);
        let ratio = if mean == means[0] {
            // Group 0's own normalisation (score_path_sum's, over its trees).
            let denominator = groups.range(0).len() as f64 * c;
            if denominator != 0.0 {
                sums[0] / denominator
            } else {
                1.0
            }
        } else if c != 0.0 {
            mean / c
        } else {
            1.0
        };
        let score_samples = -libm::pow(2.0, -ratio);
        Score {
            mean_path_length: mean,
            score_samples,
            decision: score_samples - self.offset,
        }
    }

    /// Installs explanation tables read by `explain::read_tables` (one per tree, in order)
    /// where none were built yet (built ones have the same bits). Owned by the explain work;
    /// keep at the end of this impl.
    pub(crate) fn install_shap(&self, trees: Vec<TreeShap>, forest: ForestShap) {
        for (tree, shap) in self.trees.iter().zip(trees) {
            let _ = tree.shap.set(shap);
        }
        let _ = self.shap.set(forest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_matches_scikit_learn_values() {
        // numpy: 2*(log(255)+euler_gamma) - 2*255/256
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        assert!((average_path_length(256) - 10.244_770_920_119_917).abs() < 1e-12);
        assert!(
            (average_path_length(3) - (2.0 * (2f64.ln() + EULER_GAMMA) - 4.0 / 3.0)).abs() < 1e-15
        );
    }

    #[test]
    fn build_time_table_is_the_direct_computation() {
        for n in 0..600 {
            assert_eq!(
                average_path_length(n).to_bits(),
                c_direct(n).to_bits(),
                "c({n})"
            );
        }
        assert_ne!(small_c()[300], 0.0);
    }

    fn leaf(samples: u32) -> Node {
        Node::Leaf { samples }
    }

    fn split(feature: u16, threshold: f32, right: u32) -> Node {
        Node::Split {
            feature,
            threshold,
            right,
        }
    }

    #[test]
    fn tree_walk_and_path_lengths() {
        // root: x0 <= 0.5 ? (leaf 3 samples) : (x1 <= 0 ? leaf 1 : leaf 2)
        let t = Tree::new(vec![
            split(0, 0.5, 2),
            leaf(3),
            split(1, 0.0, 4),
            leaf(1),
            leaf(2),
        ])
        .unwrap();
        let small = small_c();
        assert_eq!(
            t.path_length(&[0.5, 9.0], small),
            1.0 + average_path_length(3)
        );
        assert_eq!(t.path_length(&[0.6, 0.0], small), 2.0);
        assert_eq!(t.path_length(&[0.6, 0.1], small), 3.0);
        assert_eq!(
            leaf_path_lengths(t.nodes()),
            vec![0.0, 1.0 + average_path_length(3), 0.0, 2.0, 3.0]
        );
    }

    #[test]
    fn malformed_trees_are_rejected() {
        assert_eq!(Tree::new(vec![]), Err(TreeProblem::Empty));
        assert!(matches!(
            Tree::new(vec![split(0, 0.0, 1), leaf(1)]),
            Err(TreeProblem::BadChild { .. })
        ));
        assert!(matches!(
            Tree::new(vec![split(0, 0.0, 5), leaf(1), leaf(1)]),
            Err(TreeProblem::BadChild { .. })
        ));
        assert!(matches!(
            Tree::new(vec![leaf(1), leaf(1)]),
            Err(TreeProblem::Shape { .. })
        ));
        assert!(matches!(
            Tree::new(vec![leaf(0)]),
            Err(TreeProblem::EmptyLeaf { .. })
        ));
        assert!(matches!(
            Tree::new(vec![split(0, f32::NAN, 2), leaf(1), leaf(1)]),
            Err(TreeProblem::NanThreshold { .. })
        ));
        // A cycle back to the root cannot be expressed: children always point forward.
        assert!(matches!(
            Tree::new(vec![split(0, 0.0, 0), leaf(1)]),
            Err(TreeProblem::BadChild { .. })
        ));
    }

    #[test]
    fn forest_score_matches_formula() {
        let t = Tree::new(vec![split(0, 0.0, 2), leaf(1), leaf(1)]).unwrap();
        let f = Forest::new(vec![t.clone(), t], 4, -0.5).unwrap();
        let s = f.score_scaled(&[-1.0]).unwrap();
        let expected = -(2f64).powf(-(2.0 / (2.0 * average_path_length(4))));
        assert!((s.score_samples - expected).abs() < 1e-15);
        assert_eq!(s.decision, s.score_samples + 0.5);
        assert_eq!(s.mean_path_length, 1.0);
        assert!(f.score_scaled(&[]).is_err());
    }

    /// The slow reference for one tree's records: the codec's leaf-offset rule, then `validate`.
    fn reference_ok(records: &[u8]) -> bool {
        let mut nodes = Vec::new();
        for (i, r) in records.chunks_exact(NODE_LEN).enumerate() {
            let w = u64::from_le_bytes(r.try_into().unwrap());
            let (feature, delta, _) = split_word(w);
            if feature == LEAF && delta != 0 {
                return false;
            }
            nodes.push(node(i, w));
        }
        validate(&nodes).is_ok()
    }

    fn fast_ok(records: &[u8]) -> bool {
        let mut arena = vec![7];
        let mut stack = [0; STACK_LEN];
        let ok = Tree::decode_into(records, &mut arena, &mut stack).is_some();
        if !ok {
            assert_eq!(arena, [7], "a rejected tree leaves the arena as it was");
        }
        ok
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A random valid tree of at most `budget` splits.
    fn random_tree(rng: &mut Rng, budget: usize) -> Vec<Node> {
        fn grow(rng: &mut Rng, out: &mut Vec<Node>, splits: &mut usize) {
            if *splits == 0 || rng.below(3) == 0 {
                out.push(Node::Leaf {
                    samples: 1 + rng.below(300) as u32,
                });
                return;
            }
            *splits -= 1;
            let me = out.len();
            out.push(Node::Leaf { samples: 0 });
            grow(rng, out, splits);
            let right = out.len() as u32;
            grow(rng, out, splits);
            out[me] = Node::Split {
                feature: rng.below(5) as u16,
                threshold: rng.below(100) as f32 - 50.0,
                right,
            };
        }
        let mut out = Vec::new();
        let mut splits = budget;
        grow(rng, &mut out, &mut splits);
        out
    }

    fn records(nodes: &[Node]) -> Vec<u8> {
        nodes
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| word(i, n).unwrap().to_le_bytes())
            .collect()
    }

    #[test]
    fn fast_decoder_accepts_exactly_what_the_precise_checks_accept() {
        let mut rng = Rng(42);
        let (mut valid, mut invalid) = (0, 0);
        for case in 0..20_000 {
            let budget = rng.below(40) as usize;
            let nodes = random_tree(&mut rng, budget);
            let mut bytes = records(&nodes);
            // Corrupt most cases: one random byte, or one field set to an edge value.
            match case % 4 {
                0 => {}
                1 => {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = rng.next() as u8;
                }
                2 => {
                    let at = rng.below(bytes.len() as u64 / 8) as usize * 8;
                    let edges: [&[u8]; 6] = [
                        &[0xff, 0xff],
                        &[0, 0],
                        &[1, 0],
                        &[2, 0],
                        &[0, 0, 0xc0, 0x7f],
                        &[0; 4],
                    ];
                    let edge = edges[rng.below(6) as usize];
                    let off = [0, 2, 4][rng.below(3) as usize];
                    let end = (at + off + edge.len()).min(bytes.len());
                    bytes[at + off..end].copy_from_slice(&edge[..end - at - off]);
                }
                _ => {
                    // Drop or duplicate a node.
                    let at = rng.below(bytes.len() as u64 / 8) as usize * 8;
                    if rng.below(2) == 0 {
                        bytes.drain(at..at + 8);
                    } else {
                        let dup = bytes[at..at + 8].to_vec();
                        bytes.splice(at..at, dup);
                    }
                }
            }
            let expected = !bytes.is_empty() && reference_ok(&bytes);
            assert_eq!(fast_ok(&bytes), expected, "case {case}: {bytes:?}");
            // The portable path (the only one in WebAssembly) too, whichever the CPU picks.
            if !bytes.is_empty() && bytes.len().is_multiple_of(8) {
                let words: Vec<u64> = bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                let mut stack = [0; STACK_LEN];
                let portable = check_words_portable(&words, &mut stack);
                assert_eq!(portable.is_some(), expected, "case {case} (portable)");
                assert_eq!(portable, check_words(&words, &mut stack), "case {case}");
            }
            if expected { valid += 1 } else { invalid += 1 }
        }
        // Both outcomes are exercised in earnest.
        assert!(
            valid > 5_000 && invalid > 5_000,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn deep_trees_decode_through_either_path() {
        // A left-leaning chain: every split's left child is a split, so the stack of pending
        // right subtrees grows with the depth (here 300 and 700, past the small ring).
        for depth in [300u32, 700] {
            let n = 2 * depth + 1;
            let mut nodes = Vec::new();
            for d in 0..depth {
                nodes.push(Node::Split {
                    feature: 0,
                    threshold: d as f32,
                    right: n - 1 - d,
                });
            }
            nodes.push(Node::Leaf { samples: 1 });
            for _ in 0..depth {
                nodes.push(Node::Leaf { samples: 2 });
            }
            assert!(reference_ok(&records(&nodes)));
            let bytes = records(&nodes);
            let mut arena = Vec::new();
            let mut stack = [0; STACK_LEN];
            // ≤ 1021 nodes: the wide ring; more: the guarded ring turns it down for the slow path.
            let fast = Tree::decode_into(&bytes, &mut arena, &mut stack).is_some();
            assert_eq!(fast, n <= 1021, "depth {depth}");
            let tree = Tree::new(nodes.clone()).unwrap();
            assert_eq!(tree.nodes(), &nodes[..]);
            assert_eq!(tree.path_length(&[-1.0], small_c()), f64::from(depth));
        }
    }
}
