//! What `spin up` reads before it runs a component, read the same way for the harness binary:
//! the key-value stores a component may open and its variables (spin.toml), and which stores
//! the runtime configuration defines (runtime-config.toml). So `harness --component …` from the
//! repository grants what `spin up` grants, for any model; command-line flags still override.
//!
//! Covered: `[variables]` with `default` (an application variable without one must come from
//! `SPIN_VARIABLE_<NAME>` or `--var`, as Spin requires), `{{ name }}` templates in
//! `[component.<id>.variables]`, `key_value_stores`, and `[key_value_store.<label>]` of type
//! `spin` without a `path` (Spin's in-memory SQLite). Not covered: other store types (a Redis
//! store is held in memory here, and said so), `allowed_outbound_hosts` (the harness lets the
//! component reach any host), several components (the first one with a source is used).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use toml::Value;

/// What one component is granted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    /// Key-value store labels the component may open.
    pub key_value_stores: Vec<String>,
    /// The component's variables, templates resolved.
    pub variables: Vec<(String, String)>,
}

/// Reads spin.toml's first component: its stores and its variables, each `{{ app_var }}`
/// replaced by `SPIN_VARIABLE_<APP_VAR>` from `env`, else the application variable's default.
pub fn read_manifest(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Grants> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let app_vars: BTreeMap<String, Option<String>> = doc
        .get("variables")
        .and_then(Value::as_table)
        .map(|t| {
            t.iter()
                .map(|(k, v)| {
                    let default = v.get("default").and_then(Value::as_str).map(String::from);
                    (k.clone(), default)
                })
                .collect()
        })
        .unwrap_or_default();
    let Some((id, component)) = doc
        .get("component")
        .and_then(Value::as_table)
        .and_then(|c| c.iter().find(|(_, v)| v.get("source").is_some()))
    else {
        bail!("{}: no [component.<id>] with a source", path.display());
    };
    let key_value_stores = component
        .get("key_value_stores")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let resolve = |name: &str| -> Result<String> {
        if let Some(v) = env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())) {
            return Ok(v);
        }
        match app_vars.get(name) {
            Some(Some(default)) => Ok(default.clone()),
            Some(None) => bail!(
                "application variable {name:?} has no default: set SPIN_VARIABLE_{} or --var",
                name.to_ascii_uppercase()
            ),
            None => {
                bail!("component {id} uses {{{{ {name} }}}}, which [variables] does not declare")
            }
        }
    };
    let mut variables = Vec::new();
    if let Some(vars) = component.get("variables").and_then(Value::as_table) {
        for (name, template) in vars {
            let template = template
                .as_str()
                .with_context(|| format!("component variable {name:?} is not a string"))?;
            variables.push((name.clone(), expand(template, &resolve)?));
        }
    }
    Ok(Grants {
        key_value_stores,
        variables,
    })
}

/// `{{ name }}` templates replaced (Spin's manifest templates; text outside them kept).
fn expand(template: &str, resolve: &dyn Fn(&str) -> Result<String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .with_context(|| format!("unclosed template in {template:?}"))?;
        out.push_str(&resolve(rest[start + 2..start + end].trim())?);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The store labels a runtime configuration defines to be held in memory: `type = "spin"`
/// without a `path`. Other types are held in memory too, with a warning on stderr.
pub fn memory_stores(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = Vec::new();
    if let Some(stores) = doc.get("key_value_store").and_then(Value::as_table) {
        for (label, store) in stores {
            let kind = store.get("type").and_then(Value::as_str).unwrap_or("");
            match (kind, store.get("path")) {
                ("spin", None) => out.push(label.clone()),
                ("spin", Some(_)) => {} // a file: the harness keeps stores on disk anyway
                (other, _) => {
                    eprintln!(
                        "harness: key-value store {label:?} is of type {other:?}; held in memory here"
                    );
                    out.push(label.clone());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        crate::repo_root()
    }

    #[test]
    fn the_repository_manifest_grants_what_spin_up_grants() {
        let none = |_: &str| None;
        let g = read_manifest(&root().join("spin.toml"), &none).unwrap();
        assert_eq!(g.key_value_stores, ["default", "velocity"]);
        let get = |n: &str| {
            g.variables
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("store_url"), Some("http://127.0.0.1:8090"));
        assert_eq!(get("model_refresh_secs"), Some("15"));
        assert_eq!(get("store_token"), Some(""));
        // The environment overrides a default, as SPIN_VARIABLE_* does for spin up.
        let env = |k: &str| (k == "SPIN_VARIABLE_STORE_TOKEN").then(|| "t0k".to_string());
        let g = read_manifest(&root().join("spin.toml"), &env).unwrap();
        assert!(g.variables.contains(&("store_token".into(), "t0k".into())));
        assert_eq!(
            memory_stores(&root().join("runtime-config.toml")).unwrap(),
            ["velocity"]
        );
    }

    #[test]
    fn templates_and_missing_values_are_reported() {
        let r = |n: &str| -> Result<String> {
            match n {
                "a" => Ok("1".into()),
                _ => bail!("no {n}"),
            }
        };
        assert_eq!(expand("x{{ a }}y{{a}}", &r).unwrap(), "x1y1");
        assert!(expand("{{ b }}", &r).is_err());
        assert!(expand("{{ a", &r).is_err());
    }
}
