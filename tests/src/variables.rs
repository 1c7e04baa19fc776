//! `spin:variables/variables@3.0.0`, as Spin implements it for a component: names are
//! validated the way Spin validates variable keys, then looked up among the component's
//! variables (here: [`crate::HarnessConfig::variables`], standing in for the resolved
//! `[component.<id>.variables]` of spin.toml).

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{Accessor, HasData, Linker};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/variables.wit",
        world: "harness-host",
    });
}

pub use bindings::spin::variables::variables::Error;

/// The component's variables, shared by every store of one harness.
#[derive(Clone, Debug, Default)]
pub struct Variables(Arc<HashMap<String, String>>);

impl Variables {
    /// Variables from `(name, value)` pairs; a later pair overrides an earlier one. Names are
    /// checked as the manifest's are.
    pub fn new(pairs: &[(String, String)]) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for (name, value) in pairs {
            validate_name(name)
                .map_err(|e| anyhow::anyhow!("invalid variable name {name:?}: {e}"))?;
            map.insert(name.clone(), value.clone());
        }
        Ok(Self(Arc::new(map)))
    }

    /// What the guest's `get(name)` returns.
    pub fn get(&self, name: &str) -> Result<String, Error> {
        validate_name(name).map_err(|e| Error::InvalidName(format!("{name:?}: {e}")))?;
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Undefined(format!("no variable for {name:?}")))
    }
}

/// Spin's rules for a variable key: non-empty; only lowercase ASCII letters, digits and `_`;
/// starts with a letter, ends with a letter or digit; no `__`.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Err("must not be empty");
    };
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
    {
        return Err("may contain only lowercase letters, digits and '_'");
    }
    if !first.is_ascii_lowercase() {
        return Err("must start with a lowercase letter");
    }
    if !(last.is_ascii_lowercase() || last.is_ascii_digit()) {
        return Err("must end with a lowercase letter or digit");
    }
    if name.contains("__") {
        return Err("must not contain consecutive underscores");
    }
    Ok(())
}

/// `HasData` marker: the host functions see the store's [`Variables`].
pub struct SpinVariables;

impl HasData for SpinVariables {
    type Data<'a> = &'a Variables;
}

impl bindings::spin::variables::variables::Host for &Variables {}

impl<T> bindings::spin::variables::variables::HostWithStore<T> for SpinVariables {
    async fn get(accessor: &Accessor<T, Self>, name: String) -> Result<String, Error> {
        accessor.with(|mut view| view.get().get(&name))
    }
}

/// Links `spin:variables/variables@3.0.0`, reading each store's variables through `get`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &Variables,
) -> wasmtime::Result<()> {
    bindings::spin::variables::variables::add_to_linker::<T, SpinVariables>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        Variables::new(&[("api_keys".into(), "k1,k2".into())]).unwrap()
    }

    #[test]
    fn defined_variable_is_returned() {
        assert_eq!(vars().get("api_keys").unwrap(), "k1,k2");
    }

    #[test]
    fn unknown_variable_is_undefined() {
        assert!(matches!(
            vars().get("cors_origins"),
            Err(Error::Undefined(_))
        ));
    }

    #[test]
    fn invalid_names_are_rejected_before_lookup() {
        for name in ["", "API_KEYS", "1abc", "_abc", "abc_", "a__b", "a-b", "a.b"] {
            assert!(
                matches!(vars().get(name), Err(Error::InvalidName(_))),
                "{name:?}"
            );
        }
        for name in ["a", "a1", "a_b", "api_keys2"] {
            assert!(validate_name(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn invalid_configured_name_is_refused() {
        assert!(Variables::new(&[("Bad".into(), "x".into())]).is_err());
    }
}
