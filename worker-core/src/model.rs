//! The model an instance serves, with its identity and the bytes it came from.

use model_format::{Model, ModelId};

/// A decoded model (the worker decodes the embedded file; how much it checks at instance start
/// is the worker's choice, `/api/warmup` re-checks everything).
#[derive(Debug)]
pub struct Loaded {
    pub(crate) model: Model,
    /// Whether `tables` were installed (else the model builds its own on first use).
    pub(crate) tables_installed: bool,
    pub(crate) version: String,
    pub(crate) checksum: String,
    pub(crate) file: &'static [u8],
    /// In the parts the host handed them over (one for embedded tables).
    pub(crate) tables: Vec<&'static [u8]>,
    /// The supervised model's review budget, when it has one.
    pub(crate) budget: Option<model_format::budget::ReviewBudget>,
}

impl Loaded {
    /// `model` decoded from `file`, with `tables` installed or not.
    pub fn new(
        model: Model,
        id: ModelId,
        file: &'static [u8],
        tables: Vec<&'static [u8]>,
        tables_installed: bool,
    ) -> Self {
        Loaded {
            budget: model_format::budget::ReviewBudget::of(&model),
            model,
            tables_installed,
            version: id.version(),
            checksum: format!("crc32:{:08x}", id.checksum),
            file,
            tables,
        }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Its version string (`if1-…`).
    pub fn version(&self) -> &str {
        &self.version
    }
}
