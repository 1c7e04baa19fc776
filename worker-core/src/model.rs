//! The model an instance serves, with its identity and the bytes it came from.

use std::cell::{Cell, RefCell};

use model_format::{Model, ModelId, TablesError, TablesTrust};

/// A decoded model (the worker decodes the embedded file; how much it checks at instance start
/// is the worker's choice, `/api/warmup` re-checks everything).
#[derive(Debug)]
pub struct Loaded {
    pub(crate) model: Model,
    /// Whether `tables` were installed (else the model builds its own on first use).
    pub(crate) tables_installed: Cell<bool>,
    pub(crate) version: String,
    pub(crate) checksum: String,
    pub(crate) file: &'static [u8],
    /// In the parts the host handed them over (one for embedded tables).
    pub(crate) tables: RefCell<Vec<&'static [u8]>>,
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
            tables_installed: Cell::new(tables_installed),
            version: id.version(),
            checksum: format!("crc32:{:08x}", id.checksum),
            file,
            tables: RefCell::new(tables),
        }
    }

    /// Installs `tables` (see [`Model::install_explanation_table_parts`]) once the model is
    /// shared: tables arrive after the model when their memory is decided at instance start.
    /// Nothing changes when the model has tables already (installed, or built by a first
    /// explanation).
    pub(crate) fn install_tables(
        &self,
        tables: Vec<&'static [u8]>,
        trust: TablesTrust,
    ) -> Result<(), TablesError> {
        if self.tables_installed.get() {
            return Ok(());
        }
        self.model.install_explanation_table_parts(&tables, trust)?;
        *self.tables.borrow_mut() = tables;
        self.tables_installed.set(true);
        Ok(())
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
