//! The SecureFlow Edge model: what the trainer writes and every edge worker embeds.
//!
//! A model is a feature schema (ordered names), a StandardScaler (per-feature mean and
//! scale), and an isolation forest whose trees split on the scaled features. Scoring follows
//! scikit-learn's `IsolationForest` exactly:
//!
//! * a tree sends `x` left when `(x_scaled as f32) <= threshold`: scikit-learn casts inputs to
//!   `float32` before walking its trees, so thresholds are `f32` here too;
//! * a leaf reached at depth `d` holding `n` training samples contributes `d + c(n)`;
//! * `score_samples(x) = -2^(-E[h(x)] / c(ψ))` and `decision_function = score_samples - offset`;
//! * `is_anomaly = decision_function < 0`.
//!
//! Why a crate of its own: trainer and worker must agree to the bit on every score, so they
//! share this code instead of re-implementing it. It does no I/O and builds for
//! `wasm32-wasip2`. Transcendental functions come from the pure-Rust `libm` crate rather than
//! the platform's C library, so a native build and a wasm build round identically.
//!
//! The binary encoding is in [`codec`]; it validates every length, index and value and returns
//! a [`DecodeError`] instead of panicking on hostile bytes.
//!
//! [`Model::explain`] attributes `E[h(x)]` to the features with exact path-dependent TreeSHAP,
//! the values `shap.TreeExplainer(isolation_forest).shap_values(x)` computes. The textbook
//! algorithm costs `O(leaves · depth²)` per tree; [`explain`] instead writes each leaf's Shapley
//! values as an integral of a polynomial, evaluates it exactly with Gauss–Legendre quadrature
//! and shares the work between leaves in one `O(nodes · q)` walk per tree (`q` ≤ 3 points for
//! five features), allocation-free. Everything it needs (covers, cover ratios) is derived from
//! the nodes when a tree is built; the file format is unchanged.

pub mod batch;
pub mod booster;
pub mod budget;
mod codec;
mod error;
pub mod explain;
mod forest;
pub mod normalize;
mod risk;
mod scaler;
pub mod velocity;

pub use booster::{Booster, FraudScore};
pub use codec::{FORMAT_VERSION, MAGIC, SectionInfo, section_table};
pub use error::{DecodeError, EncodeError, ExplainError, InvalidModel, ScoreError};
pub use explain::{MAX_PATH_FEATURES, TABLES_VERSION, TablesError, TablesTrust};
pub use forest::{
    Forest, MAX_TREE_GROUP_WEIGHT, MAX_TREE_GROUPS, Node, Tree, TreeGroups, average_path_length,
    leaf_path_length,
};
pub use normalize::{Normalization, NormalizeError, Payload};
pub use scaler::Scaler;

/// Largest number of features a model may have. Scoring keeps the scaled row on the stack
/// (no allocation on the request path), so the width is bounded.
pub const MAX_FEATURES: usize = 1024;

/// A complete, validated model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    features: Vec<String>,
    scaler: Scaler,
    forest: Forest,
    metadata: Vec<(String, String)>,
    normalization: Normalization,
    score_distribution: Option<Vec<f64>>,
    velocity: Option<velocity::VelocitySpec>,
    supervised: Option<Booster>,
}

/// Most points a training score distribution may have ([`Model::with_score_distribution`]).
pub const MAX_SCORE_QUANTILES: usize = 1025;

/// The result of scoring one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Mean path length over the trees, `E[h(x)]`.
    pub mean_path_length: f64,
    /// scikit-learn's `score_samples`: `-2^(-E[h(x)]/c(ψ))`, in `[-1, 0)`; lower = more anomalous.
    pub score_samples: f64,
    /// scikit-learn's `decision_function`: `score_samples - offset`; negative = anomalous.
    pub decision: f64,
}

impl Score {
    /// `decision < 0`, as scikit-learn's `predict` returns -1.
    pub fn is_anomaly(&self) -> bool {
        self.decision < 0.0
    }

    /// `2^(-E[h(x)]/c(ψ))` in `(0, 1]`: the isolation forest paper's anomaly score, higher =
    /// more anomalous.
    pub fn risk(&self) -> f64 {
        -self.score_samples
    }
}

/// The result of explaining one row: `Σφ + expected_value = score.mean_path_length`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Explanation {
    /// `E[h]` over the training samples ([`Model::expected_value`]), the base of the φ.
    pub expected_value: f64,
    /// The row's score, identical to [`Model::score`].
    pub score: Score,
}

impl Explanation {
    /// `E[h(x)]`, the quantity the attributions explain.
    pub fn mean_path_length(&self) -> f64 {
        self.score.mean_path_length
    }
}

impl Model {
    /// Assembles a model, checking that all parts agree with each other.
    pub fn new(
        features: Vec<String>,
        scaler: Scaler,
        forest: Forest,
        metadata: Vec<(String, String)>,
    ) -> Result<Self, InvalidModel> {
        if features.is_empty() {
            return Err(InvalidModel::NoFeatures);
        }
        if features.len() > MAX_FEATURES {
            return Err(InvalidModel::TooManyFeatures {
                count: features.len(),
            });
        }
        for (i, name) in features.iter().enumerate() {
            if name.is_empty() {
                return Err(InvalidModel::EmptyFeatureName { index: i });
            }
            if features[..i].contains(name) {
                return Err(InvalidModel::DuplicateFeature { name: name.clone() });
            }
        }
        if scaler.len() != features.len() {
            return Err(InvalidModel::ScalerWidth {
                scaler: scaler.len(),
                features: features.len(),
            });
        }
        if let Some(max) = forest.max_feature_index()
            && usize::from(max) >= features.len()
        {
            return Err(InvalidModel::FeatureIndex {
                index: max,
                features: features.len(),
            });
        }
        let normalization = Normalization::generic(&features);
        Ok(Model {
            features,
            scaler,
            forest,
            metadata,
            normalization,
            score_distribution: None,
            velocity: None,
            supervised: None,
        })
    }

    /// The same model with other payload-normalization rules (one per feature).
    pub fn with_normalization(
        mut self,
        normalization: Normalization,
    ) -> Result<Self, InvalidModel> {
        normalization
            .validate(&self.features)
            .map_err(InvalidModel::Normalization)?;
        self.normalization = normalization;
        Ok(self)
    }

    /// The same model carrying its training score distribution: `decision` values at evenly
    /// spaced quantiles of the training rows, from the minimum (quantile 0) to the maximum
    /// (quantile 1): 2 to [`MAX_SCORE_QUANTILES`] finite, nondecreasing values. Drift monitoring
    /// compares live scores against it (SPEC.md §4.5); scoring never reads it.
    pub fn with_score_distribution(mut self, quantiles: Vec<f64>) -> Result<Self, InvalidModel> {
        if !(2..=MAX_SCORE_QUANTILES).contains(&quantiles.len()) {
            return Err(InvalidModel::ScoreDistribution(format!(
                "{} quantiles; 2 to {MAX_SCORE_QUANTILES} are allowed",
                quantiles.len()
            )));
        }
        if let Some(i) = quantiles.iter().position(|q| !q.is_finite()) {
            return Err(InvalidModel::ScoreDistribution(format!(
                "quantile {i} is not finite"
            )));
        }
        if let Some(i) = quantiles.windows(2).position(|w| w[1] < w[0]) {
            return Err(InvalidModel::ScoreDistribution(format!(
                "quantile {} is below quantile {i}",
                i + 1
            )));
        }
        self.score_distribution = Some(quantiles);
        Ok(self)
    }

    /// The same model computing some of its features from per-entity history (section `VELO`,
    /// [`velocity`]). Each velocity feature must be a schema feature whose normalization rule
    /// reads the field of its own name, which [`velocity::Overlay`] supplies.
    pub fn with_velocity(mut self, spec: velocity::VelocitySpec) -> Result<Self, InvalidModel> {
        for f in spec.features() {
            let Some(i) = self.features.iter().position(|n| *n == f.name) else {
                return Err(InvalidModel::Velocity(format!(
                    "{:?} is not a feature of the model",
                    f.name
                )));
            };
            let rule = &self.normalization.rules[i];
            if rule.sources != [normalize::Source::Field(f.name.clone())] {
                return Err(InvalidModel::Velocity(format!(
                    "feature {:?} must be read from the field of its own name",
                    f.name
                )));
            }
        }
        self.velocity = Some(spec);
        Ok(self)
    }

    /// The same model with a supervised classifier beside the forest (section `GBDT`,
    /// [`booster`]): its inputs are the model's features and the forest's risk.
    pub fn with_supervised(mut self, booster: Booster) -> Result<Self, InvalidModel> {
        if booster.n_inputs() != self.features.len() + 1 {
            return Err(InvalidModel::Supervised(format!(
                "{} inputs; the model has {} features (+ the forest's risk)",
                booster.n_inputs(),
                self.features.len()
            )));
        }
        self.supervised = Some(booster);
        Ok(self)
    }

    /// The same model without its supervised classifier.
    pub fn without_supervised(mut self) -> Self {
        self.supervised = None;
        self
    }

    /// The supervised classifier, when the model has one.
    pub fn supervised(&self) -> Option<&Booster> {
        self.supervised.as_ref()
    }

    /// Scores one row with the forest and, when the model has one, the supervised classifier
    /// (which reads the forest's risk). Allocation-free.
    pub fn score_fraud(&self, row: &[f64]) -> Result<(Score, Option<FraudScore>), ScoreError> {
        let mut scaled = [0f32; MAX_FEATURES + 1];
        let n = self.scale_row(row, &mut scaled)?.len();
        let score = self.forest.score_scaled(&scaled[..n])?;
        match self.with_risk(&mut scaled, n, &score) {
            Some((b, x)) => Ok((score, Some(b.score(x)?))),
            None => Ok((score, None)),
        }
    }

    /// [`Model::score_fraud`] with the supervised classifier's explanation: `phi` gets one
    /// exact TreeSHAP value of the calibrated log-odds per feature and one more (last) for the
    /// forest's risk; returns the expected log-odds beside the scores, so that
    /// `Σphi + expected = log_odds`. `None` for the fraud part when the model has no
    /// supervised classifier (`phi` untouched).
    pub fn explain_fraud(
        &self,
        row: &[f64],
        phi: &mut [f64],
    ) -> Result<(Score, Option<(FraudScore, f64)>), ExplainError> {
        let mut scaled = [0f32; MAX_FEATURES + 1];
        let n = self.scale_row(row, &mut scaled)?.len();
        let score = self.forest.score_scaled(&scaled[..n])?;
        Ok((score, self.explain_supervised(&mut scaled, n, &score, phi)?))
    }

    /// [`Model::explain`] and [`Model::explain_fraud`] of one row at once (what an explained
    /// prediction needs), scaling the row and scoring the forest once: `forest_phi` as
    /// [`Model::explain`] writes it, `fraud_phi` as [`Model::explain_fraud`] does.
    pub fn explain_with_fraud(
        &self,
        row: &[f64],
        forest_phi: &mut [f64],
        fraud_phi: &mut [f64],
    ) -> Result<(Explanation, Option<(FraudScore, f64)>), ExplainError> {
        let mut scaled = [0f32; MAX_FEATURES + 1];
        let n = self.scale_row(row, &mut scaled)?.len();
        if forest_phi.len() != n {
            return Err(ExplainError::PhiWidth {
                expected: n,
                found: forest_phi.len(),
            });
        }
        let score = self.forest.explain_scaled(&scaled[..n], forest_phi)?;
        let explanation = Explanation {
            expected_value: self.expected_value(),
            score,
        };
        let fraud = self.explain_supervised(&mut scaled, n, &score, fraud_phi)?;
        Ok((explanation, fraud))
    }

    /// The supervised classifier's score and explanation of an already scaled row.
    fn explain_supervised(
        &self,
        scaled: &mut [f32; MAX_FEATURES + 1],
        n: usize,
        score: &Score,
        phi: &mut [f64],
    ) -> Result<Option<(FraudScore, f64)>, ExplainError> {
        let Some((b, x)) = self.with_risk(scaled, n, score) else {
            return Ok(None);
        };
        let fraud = b.score(x)?;
        let expected = b.explain(x, phi)?;
        Ok(Some((fraud, expected)))
    }

    /// The supervised classifier and its input row: the `n` scaled features in `scaled`, then
    /// the forest's risk as f32 (SPEC §4.7). `None` without a supervised classifier.
    fn with_risk<'b>(
        &self,
        scaled: &'b mut [f32; MAX_FEATURES + 1],
        n: usize,
        score: &Score,
    ) -> Option<(&Booster, &'b [f32])> {
        let b = self.supervised.as_ref()?;
        scaled[n] = score.risk() as f32;
        Some((b, &scaled[..=n]))
    }

    /// The velocity features, when the model has any.
    pub fn velocity(&self) -> Option<&velocity::VelocitySpec> {
        self.velocity.as_ref()
    }

    /// The training score distribution, when the file carries one.
    pub fn score_distribution(&self) -> Option<&[f64]> {
        self.score_distribution.as_deref()
    }

    /// How payloads become rows (see [`normalize`]).
    pub fn normalization(&self) -> &Normalization {
        &self.normalization
    }

    /// Fills `row[..n_features]` from a request payload with the model's normalization rules.
    pub fn normalize(&self, payload: &impl Payload, row: &mut [f64]) -> Result<(), NormalizeError> {
        let n = self.features.len();
        if row.len() < n {
            return Err(NormalizeError::RowTooShort {
                needed: n,
                found: row.len(),
            });
        }
        self.normalization
            .apply(&self.features, payload, &mut row[..n])
    }

    /// Ordered feature names: the row layout [`Model::score`] expects.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    pub fn scaler(&self) -> &Scaler {
        &self.scaler
    }

    pub fn forest(&self) -> &Forest {
        &self.forest
    }

    /// Free-form key/value pairs the trainer recorded (seed, row count, trainer version...).
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The same model with `key` set to `value` in its metadata (replacing an earlier value).
    pub fn with_meta(mut self, key: &str, value: &str) -> Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => self.metadata.push((key.to_string(), value.to_string())),
        }
        self
    }

    /// Looks up one metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Scores one row of raw (unscaled) feature values in schema order.
    ///
    /// Allocation-free. Errors if the row has the wrong width or a non-finite value.
    pub fn score(&self, row: &[f64]) -> Result<Score, ScoreError> {
        let mut scaled = [0f32; MAX_FEATURES];
        let x = self.scale_row(row, &mut scaled)?;
        // Model::new checked that every split reads a feature below n.
        self.forest.score_scaled(x)
    }

    /// `E[h]` over the training samples: the base value of [`Model::explain`], as shap's
    /// `TreeExplainer(...).expected_value`.
    pub fn expected_value(&self) -> f64 {
        self.forest.expected_value()
    }

    /// Explains one row of raw feature values: writes into `phi` (one slot per feature, in
    /// schema order) the exact path-dependent TreeSHAP values of `E[h(x)]`, so that
    /// `Σphi + expected_value = mean_path_length`. Lower φ pushes towards anomalous.
    ///
    /// Allocation-free for trees up to 64 deep. Errors like [`Model::score`], and if `phi` has
    /// the wrong length or a path uses more than [`MAX_PATH_FEATURES`] distinct features.
    pub fn explain(&self, row: &[f64], phi: &mut [f64]) -> Result<Explanation, ExplainError> {
        let mut scaled = [0f32; MAX_FEATURES];
        let x = self.scale_row(row, &mut scaled)?;
        if phi.len() != x.len() {
            return Err(ExplainError::PhiWidth {
                expected: x.len(),
                found: phi.len(),
            });
        }
        let score = self.forest.explain_scaled(x, phi)?;
        Ok(Explanation {
            expected_value: self.expected_value(),
            score,
        })
    }

    /// [`Model::explain`] for many rows, for batch jobs: `rows` holds them one after another
    /// (`features().len()` values each) and `phi` receives their attributions laid out the
    /// same way; each row's explanation is pushed to `out`, in order. Every row gets exactly
    /// what [`Model::explain`] gives it alone, to the bit; the rows go through each tree
    /// several at a time ([`explain`] module: each split's record is read once for all of
    /// them and their arithmetic shares vector lanes), which is what makes a batch faster
    /// than a loop over `explain` on the same core — with AVX2; elsewhere (WebAssembly, x86
    /// without AVX2) it explains them one by one, which is faster there.
    ///
    /// Errors like [`Model::explain`] for the first row it refuses; `out` then holds the
    /// explanations of the rows before that one, so the rows pushed in this call are its
    /// index. Also an error if `phi.len() != rows.len()` or `rows` ends in a partial row.
    pub fn explain_rows(
        &self,
        rows: &[f64],
        phi: &mut [f64],
        out: &mut Vec<Explanation>,
    ) -> Result<(), ExplainError> {
        use explain::ROWS;
        let n = self.features.len();
        if phi.len() != rows.len() {
            return Err(ExplainError::PhiWidth {
                expected: rows.len(),
                found: phi.len(),
            });
        }
        if n == 0 || !rows.len().is_multiple_of(n) {
            return Err(ScoreError::Width {
                expected: n,
                found: rows.len() % n.max(1),
            }
            .into());
        }
        if !explain::rows_at_once_pay() {
            // The same bits either way; without AVX2 one row at a time is the faster.
            for (row, phi) in rows.chunks_exact(n).zip(phi.chunks_exact_mut(n)) {
                out.push(self.explain(row, phi)?);
            }
            return Ok(());
        }
        let expected_value = self.expected_value();
        let mut scratch = explain::RowsScratch::new();
        let mut scaled = [0f32; ROWS * MAX_FEATURES];
        let mut scores = Vec::with_capacity(ROWS);
        let mut blocks = rows.chunks_exact(ROWS * n);
        let mut phi_blocks = phi.chunks_exact_mut(ROWS * n);
        for (block, phi_block) in (&mut blocks).zip(&mut phi_blocks) {
            let mut bufs = scaled.chunks_exact_mut(MAX_FEATURES);
            for (r, (row, buf)) in block.chunks_exact(n).zip(&mut bufs).enumerate() {
                if let Err(e) = self.scale_row(row, buf) {
                    // The rows before it, one by one, so that `out` says which row failed.
                    let before = block.chunks_exact(n).zip(phi_block.chunks_exact_mut(n));
                    for (row, phi) in before.take(r) {
                        out.push(self.explain(row, phi)?);
                    }
                    return Err(e.into());
                }
            }
            let xs: [&[f32]; ROWS] =
                core::array::from_fn(|r| &scaled[r * MAX_FEATURES..r * MAX_FEATURES + n]);
            let mut rest = phi_block;
            let mut phis: [&mut [f64]; ROWS] = core::array::from_fn(|_| {
                // In range: the block holds ROWS rows of n.
                let (head, tail) = core::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                head
            });
            scores.clear();
            self.forest
                .explain_scaled_rows(xs, &mut phis, &mut scratch, &mut scores)?;
            out.extend(scores.iter().map(|&score| Explanation {
                expected_value,
                score,
            }));
        }
        let tail = blocks.remainder().chunks_exact(n);
        for (row, phi) in tail.zip(phi_blocks.into_remainder().chunks_exact_mut(n)) {
            out.push(self.explain(row, phi)?);
        }
        Ok(())
    }

    /// Builds the explanation tables now if they are neither built nor installed, so the next
    /// [`Model::explain`] does no setup. False if explanations are unsupported for this forest
    /// (a path uses more than [`MAX_PATH_FEATURES`] distinct features).
    pub fn prepare_explanations(&self) -> bool {
        self.forest.shap().supported()
    }

    /// The explanation tables [`Model::explain`] uses, serialized (building them if needed):
    /// a validated, checksummed, little-endian layout documented in [`explain`]. Meant to be
    /// built once (e.g. in a build script) and installed with
    /// [`Model::install_explanation_tables`] wherever the same model is decoded.
    pub fn explanation_tables(&self) -> Vec<u8> {
        explain::write_tables(&self.forest)
    }

    /// Installs tables from [`Model::explanation_tables`] of this same model instead of
    /// building them on first use, checking as much of them as `trust` says is not known
    /// yet ([`TablesTrust`]), then using them in place when 8-byte aligned (else copied).
    /// On error the model is unchanged (and builds its tables lazily). Takes `&self`, so a
    /// shared model can get its tables later; a model that built its tables already (a first
    /// explanation) keeps them: they have the same bits.
    pub fn install_explanation_tables(
        &self,
        tables: &'static [u8],
        trust: TablesTrust,
    ) -> Result<(), TablesError> {
        self.install_explanation_table_parts(&[tables], trust)
    }

    /// [`Model::install_explanation_tables`] for tables handed over in consecutive parts (a
    /// key-value store's values): each array is used in the part that holds it, and only one
    /// that straddles two parts is copied, rather than joining the parts into a second copy.
    pub fn install_explanation_table_parts(
        &self,
        parts: &[&'static [u8]],
        trust: TablesTrust,
    ) -> Result<(), TablesError> {
        let (trees, forest) =
            explain::read_tables(&self.forest, explain::Parts::new(parts), trust)?;
        self.forest.install_shap(trees, forest);
        Ok(())
    }

    /// Every check [`Model::install_explanation_tables`] makes, checksum included, without
    /// installing anything.
    pub fn verify_explanation_tables(&self, tables: &'static [u8]) -> Result<(), TablesError> {
        self.verify_explanation_table_parts(&[tables])
    }

    /// [`Model::verify_explanation_tables`] for tables in consecutive parts.
    pub fn verify_explanation_table_parts(
        &self,
        parts: &[&'static [u8]],
    ) -> Result<(), TablesError> {
        explain::read_tables(
            &self.forest,
            explain::Parts::new(parts),
            TablesTrust::Untrusted,
        )
        .map(|_| ())
    }

    /// Checks and scales `row` into the front of `buf` (at least [`MAX_FEATURES`] long), as
    /// f32 like scikit-learn.
    fn scale_row<'b>(&self, row: &[f64], buf: &'b mut [f32]) -> Result<&'b [f32], ScoreError> {
        let n = self.features.len();
        if row.len() != n {
            return Err(ScoreError::Width {
                expected: n,
                found: row.len(),
            });
        }
        for (i, &v) in row.iter().enumerate() {
            if !v.is_finite() {
                return Err(ScoreError::NotFinite {
                    feature: self.features[i].clone(),
                });
            }
            buf[i] = self.scaler.scale_one(i, v) as f32;
        }
        Ok(&buf[..n])
    }

    /// Encodes the model into the v1 binary format (see [`codec`](crate::codec)).
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        codec::encode(self)
    }

    /// Decodes and fully validates a model file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes)
    }

    /// [`Model::from_bytes`] for a file that lives as long as the program, typically one
    /// embedded with `include_bytes!`: the node records are used in place when the bytes are
    /// 8-byte aligned (no copy, no allocation: what a fresh edge instance pays at start), and
    /// the checks `trust` says were made before ([`FileTrust`]) are skipped.
    pub fn from_static_bytes(bytes: &'static [u8], trust: FileTrust) -> Result<Self, DecodeError> {
        let (verified, decoded) = match trust {
            FileTrust::Untrusted => (None, false),
            FileTrust::ChecksumVerified(crc) => (Some(crc), false),
            FileTrust::DecodedBefore(crc) => (Some(crc), true),
        };
        codec::decode_static(bytes, verified, decoded)
    }
}

/// What is already known about a model file's bytes, hence what [`Model::from_static_bytes`]
/// may skip. From least to most trusting; no level allows undefined behaviour (every access
/// stays bounds-checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileTrust {
    /// Nothing: every check of [`Model::from_bytes`].
    Untrusted,
    /// The file's CRC-32 was verified before and the bytes cannot have changed since (e.g.
    /// embedded by a build script that checked them): the stored checksum is compared with
    /// this one instead of hashing the whole file again (the costliest step in WebAssembly,
    /// which lacks a carry-less multiply). Everything else is checked.
    ChecksumVerified(u32),
    /// This crate fully decoded these exact bytes before (the build script that embedded
    /// them), identified by their CRC-32: the stored checksum is compared with it, the
    /// sections are parsed and the model is checked as usual, but the trees (used in place)
    /// are not walked again, which is most of the work; node records copied because of
    /// misalignment are still validated. Bytes that never passed [`Model::from_bytes`] yet
    /// carry a matching checksum can make scoring panic or give wrong scores.
    DecodedBefore(u32),
}

/// Identity of an encoded model file: its CRC-32 checksum (the file's last four bytes) and the
/// version string derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelId {
    pub checksum: u32,
}

impl ModelId {
    /// Reads the identity of an already validated model file.
    pub fn of(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::checked_crc(bytes).map(|checksum| ModelId { checksum })
    }

    /// Content-derived version string, e.g. `if1-3a9f00c2`.
    pub fn version(&self) -> String {
        format!("if{}-{:08x}", FORMAT_VERSION, self.checksum)
    }
}
