//! Velocity feature columns over history: the edge's own state machine
//! ([`VelocitySpec::observe`]) run over the rows in their order, per entity, so a model is
//! trained on exactly the numbers an edge would have computed when each transaction arrived.
//!
//! Row order is arrival order (the store's export is ordered by `scored_at`; a synthetic
//! stream is written in arrival order). Sorting by the transaction's own timestamp would be
//! look-ahead for late events, so it is not done here.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use model_format::velocity::{EntityState, VelocitySpec};
use polars::prelude::{LazyFrame, col};

use crate::spec::{RowPayload, raw_columns};

/// One column per velocity feature of `spec`, in its order, for the rows of `lf`.
pub fn columns(lf: LazyFrame, spec: &VelocitySpec, what: &str) -> Result<Vec<Vec<f64>>> {
    let schema = lf
        .clone()
        .collect_schema()
        .with_context(|| format!("reading the schema of {what}"))?;
    let fields: Vec<String> = spec.fields().iter().map(|f| (*f).to_string()).collect();
    for f in &fields {
        if schema.get(f.as_str()).is_none() {
            let used_by = spec
                .features()
                .iter()
                .find(|v| v.definition.to_string().contains(f.as_str()))
                .map_or_else(
                    || "the velocity features".to_string(),
                    |v| format!("velocity feature {:?}", v.name),
                );
            bail!("{what}: {used_by} needs a column {f:?}");
        }
    }
    let df = lf
        .select(fields.iter().map(|f| col(f.as_str())).collect::<Vec<_>>())
        .collect()
        .with_context(|| format!("reading the velocity columns of {what}"))?;
    // Entity ids are strings at the edge; a numeric-looking id column is read as text.
    let entities: Vec<&str> = spec.entities().iter().map(String::as_str).collect();
    let mut as_text = entities.clone();
    as_text.push(spec.time_field());
    let raw = raw_columns(&df, &schema, &fields, &as_text)?;
    let n = spec.features().len();
    let mut out = vec![Vec::with_capacity(df.height()); n];
    let mut states: HashMap<(usize, String), EntityState> = HashMap::new();
    let mut values = vec![0.0; n];
    for row in 0..df.height() {
        let payload = RowPayload {
            names: &fields,
            raw: &raw,
            row,
        };
        let at = |e: model_format::velocity::VelocityError| format!("{what}: row {row}: {e}");
        // History has no edge clock to fall back on.
        if payload_missing(&payload, spec.time_field()) {
            bail!(
                "{what}: row {row}: no {:?} (velocity features need the transaction time)",
                spec.time_field()
            );
        }
        let t = spec
            .event_time(&payload, 0)
            .map_err(|e| anyhow::anyhow!(at(e)))?;
        spec.no_history(&mut values);
        for e in 0..entities.len() {
            if let Some(id) = spec
                .entity_id(&payload, e)
                .map_err(|e| anyhow::anyhow!(at(e)))?
            {
                let state = states.entry((e, id)).or_default();
                spec.observe(e, state, t, &payload, &mut values);
            }
        }
        for (c, v) in out.iter_mut().zip(&values) {
            c.push(*v);
        }
    }
    Ok(out)
}

fn payload_missing(p: &RowPayload<'_>, field: &str) -> bool {
    use model_format::normalize::Payload;
    p.get(field).is_none()
}
