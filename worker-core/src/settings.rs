//! Configuration from Spin variables (`[component.worker.variables]` in spin.toml), parsed once
//! per instance, and the checks it drives: API keys and CORS.

use http::{HeaderMap, HeaderValue};

/// The raw variable values (unset = empty).
#[derive(Debug, Clone, Default)]
pub struct Variables {
    /// `api_keys`: comma-separated keys; empty = no authentication.
    pub api_keys: String,
    /// `cors_origins`: comma-separated origins or `*`; empty = no CORS headers.
    pub cors_origins: String,
    /// `store_url`.
    pub store_url: String,
    /// `store_token`: empty = forwarding off.
    pub store_token: String,
    /// `edge_instance`: empty = a name made up per instance.
    pub edge_instance: String,
    /// `edge_region`.
    pub edge_region: String,
    /// `transaction_id_format`: `uuid` (default) or `legacy`.
    pub transaction_id_format: String,
    /// `model_pull`: `on` (default) follows the registry's channels, `off` never asks it.
    pub model_pull: String,
    /// `model_pin`: a registry version served instead of the `live` channel's.
    pub model_pin: String,
    /// `model_refresh_secs`: how often one instance of the edge asks the registry (default 15).
    pub model_refresh_secs: String,
    /// `velocity_writes`: `atomic` (default; compare-and-swap) or `plain` (read, then write:
    /// concurrent updates of one entity may be lost).
    pub velocity_writes: String,
    /// `trusted_keys`: public keys (`ed25519:<hex>`, comma-separated) whose signatures on
    /// models and policies the edge accepts.
    pub trusted_keys: String,
    /// `accept_unsigned`: `yes` or `no`; empty = `no` once keys are trusted, else `yes`.
    pub accept_unsigned: String,
    /// `forward_journal`: `on` (default; events are in the outbox before the answer) or `off`
    /// (in memory until delivered: faster, a crash loses what was in memory).
    pub forward_journal: String,
}

/// What `transaction_id` holds in prediction answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdFormat {
    /// The UUIDv7 (the default).
    Uuid,
    /// The legacy integer id, as the old service returned (for its web front end).
    Legacy,
}

/// Where the store is and how to authenticate.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Base URL.
    pub url: String,
    /// Bearer token.
    pub token: String,
}

/// Parsed configuration.
#[derive(Debug)]
pub struct Settings {
    pub(crate) api_keys: Vec<String>,
    pub(crate) cors: Cors,
    /// The central store, when `store_token` is set.
    pub(crate) store: Option<StoreConfig>,
    pub(crate) edge_instance: String,
    pub(crate) region: Option<String>,
    pub(crate) id_format: IdFormat,
    pub(crate) rollout: Rollout,
    /// Velocity state updated by compare-and-swap (`velocity_writes = atomic`).
    pub(crate) velocity_atomic: bool,
    /// Events journaled in the outbox before the answer (`forward_journal = on`).
    pub(crate) forward_journal: bool,
}

/// How the edge follows the model registry (see `rollout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rollout {
    /// Ask the registry at all (`model_pull`, and a store configured).
    pub(crate) pull: bool,
    /// Serve this version instead of the `live` channel's.
    pub(crate) pin: Option<String>,
    /// Seconds between two registry checks of the edge (across its instances).
    pub(crate) refresh_secs: u64,
    /// Whose models and policies are served.
    pub(crate) trust: crate::trust::Trust,
}

/// Default of `model_refresh_secs`: a promotion reaches every instance within about this plus
/// the instances' 1 s key-value check.
pub const DEFAULT_MODEL_REFRESH_SECS: u64 = 15;

#[derive(Debug)]
pub(crate) enum Cors {
    /// No CORS headers at all (the default).
    Off,
    /// `*`: any origin, answered with `Access-Control-Allow-Origin: *`.
    Any,
    /// These origins (compared ASCII case-insensitively), echoed back.
    List(Vec<String>),
}

/// A variable whose value is refused (the instance still starts, with the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadVariable {
    /// Its name.
    pub name: &'static str,
    /// Why.
    pub problem: String,
}

impl Settings {
    /// Parses the variables. `fallback_instance` names the instance when `edge_instance` is
    /// unset. Values the store could not keep (NUL, too long) are refused and reported.
    pub fn parse(v: &Variables, fallback_instance: String) -> (Self, Vec<BadVariable>) {
        let mut bad = Vec::new();
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let origins: Vec<String> = list(&v.cors_origins)
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect();
        let cors = if origins.iter().any(|o| o == "*") {
            Cors::Any
        } else if origins.is_empty() {
            Cors::Off
        } else {
            Cors::List(origins)
        };
        let store =
            (!v.store_token.trim().is_empty() && !v.store_url.trim().is_empty()).then(|| {
                StoreConfig {
                    url: v.store_url.trim().trim_end_matches('/').to_owned(),
                    token: v.store_token.trim().to_owned(),
                }
            });
        let mut name = |var: &'static str, value: &str| -> Option<String> {
            let value = value.trim();
            if value.is_empty() {
                return None;
            }
            if value.len() > contract::limits::MAX_NAME_LEN || value.contains('\0') {
                bad.push(BadVariable {
                    name: var,
                    problem: format!(
                        "must be at most {} bytes without NUL characters",
                        contract::limits::MAX_NAME_LEN
                    ),
                });
                return None;
            }
            Some(value.to_owned())
        };
        let edge_instance = name("edge_instance", &v.edge_instance).unwrap_or(fallback_instance);
        let region = name("edge_region", &v.edge_region);
        let pin = name("model_pin", &v.model_pin);
        let id_format = match v.transaction_id_format.trim() {
            "" | "uuid" => IdFormat::Uuid,
            "legacy" => IdFormat::Legacy,
            other => {
                bad.push(BadVariable {
                    name: "transaction_id_format",
                    problem: format!("{other:?} is neither \"uuid\" nor \"legacy\""),
                });
                IdFormat::Uuid
            }
        };
        let pull = match v.model_pull.trim() {
            "" | "on" => true,
            "off" => false,
            other => {
                bad.push(BadVariable {
                    name: "model_pull",
                    problem: format!("{other:?} is neither \"on\" nor \"off\""),
                });
                true
            }
        };
        let refresh_secs = match v.model_refresh_secs.trim() {
            "" => DEFAULT_MODEL_REFRESH_SECS,
            raw => match raw.parse::<u64>() {
                Ok(n) if (1..=86_400).contains(&n) => n,
                _ => {
                    bad.push(BadVariable {
                        name: "model_refresh_secs",
                        problem: format!(
                            "{raw:?} is not a whole number of seconds from 1 to 86400"
                        ),
                    });
                    DEFAULT_MODEL_REFRESH_SECS
                }
            },
        };
        let velocity_atomic = match v.velocity_writes.trim() {
            "" | "atomic" => true,
            "plain" => false,
            other => {
                bad.push(BadVariable {
                    name: "velocity_writes",
                    problem: format!("{other:?} is neither \"atomic\" nor \"plain\""),
                });
                true
            }
        };
        let forward_journal = match v.forward_journal.trim() {
            "" | "on" => true,
            "off" => false,
            other => {
                bad.push(BadVariable {
                    name: "forward_journal",
                    problem: format!("{other:?} is neither \"on\" nor \"off\""),
                });
                true
            }
        };
        let keys = match contract::signing::parse_keys(&v.trusted_keys) {
            Ok(keys) => keys,
            Err(e) => {
                bad.push(BadVariable {
                    name: "trusted_keys",
                    problem: format!("{e}; trusting no key (nothing new is served)"),
                });
                Vec::new()
            }
        };
        // Keys configured (even unreadable ones): unsigned models stop passing by default.
        let keys_configured = !v.trusted_keys.trim().is_empty();
        let accept_unsigned = match v.accept_unsigned.trim() {
            "" => !keys_configured,
            "yes" | "true" => true,
            "no" | "false" => false,
            other => {
                bad.push(BadVariable {
                    name: "accept_unsigned",
                    problem: format!("{other:?} is neither \"yes\" nor \"no\""),
                });
                !keys_configured
            }
        };
        let rollout = Rollout {
            pull: pull && store.is_some(),
            pin,
            refresh_secs,
            trust: crate::trust::Trust {
                keys,
                accept_unsigned,
            },
        };
        let settings = Settings {
            api_keys: list(&v.api_keys),
            cors,
            store,
            edge_instance,
            region,
            id_format,
            rollout,
            velocity_atomic,
            forward_journal,
        };
        (settings, bad)
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    pub(crate) fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        match &self.cors {
            Cors::Off => None,
            Cors::Any => Some(HeaderValue::from_static("*")),
            Cors::List(list) => {
                let text = origin.to_str().ok()?;
                list.iter()
                    .any(|o| o.eq_ignore_ascii_case(text))
                    .then(|| origin.clone())
            }
        }
    }

    /// True if no keys are configured or the request carries one of them, in `X-API-Key` or
    /// `Authorization: Bearer`. Every configured key is compared, in constant time.
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        use subtle::ConstantTimeEq;
        if self.api_keys.is_empty() {
            return true;
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = header("authorization").and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let presented = [header("x-api-key").map(str::trim), bearer];
        let mut ok = subtle::Choice::from(0);
        for candidate in presented.into_iter().flatten() {
            for key in &self.api_keys {
                ok |= key.as_bytes().ct_eq(candidate.as_bytes());
            }
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(f: impl FnOnce(&mut Variables)) -> Variables {
        let mut v = Variables::default();
        f(&mut v);
        v
    }

    #[test]
    fn keys_are_checked_in_either_header() {
        let (s, bad) = Settings::parse(&vars(|v| v.api_keys = " k1, k2 ,".into()), "i".into());
        assert!(bad.is_empty());
        let mut h = HeaderMap::new();
        assert!(!s.authorized(&h));
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert!(s.authorized(&h));
        h.clear();
        h.insert("authorization", HeaderValue::from_static("BEARER  k1 "));
        assert!(s.authorized(&h));
        h.insert("authorization", HeaderValue::from_static("Basic k1"));
        assert!(!s.authorized(&h));
        let (open, _) = Settings::parse(&Variables::default(), "i".into());
        assert!(open.authorized(&HeaderMap::new()));
    }

    #[test]
    fn unsigned_models_stop_passing_once_keys_are_trusted() {
        let key = contract::signing::SecretKey::from_seed([3; 32])
            .public()
            .to_string();
        let trust = |f: &dyn Fn(&mut Variables)| {
            let mut v = Variables::default();
            f(&mut v);
            let (s, bad) = Settings::parse(&v, "i".into());
            (
                s.rollout.trust.keys.len(),
                s.rollout.trust.accept_unsigned,
                bad.len(),
            )
        };
        assert_eq!(
            trust(&|_| {}),
            (0, true, 0),
            "no keys: as before signatures"
        );
        assert_eq!(trust(&|v| v.trusted_keys = key.clone()), (1, false, 0));
        let explicit = |v: &mut Variables| {
            v.trusted_keys = key.clone();
            v.accept_unsigned = "yes".into();
        };
        assert_eq!(trust(&explicit), (1, true, 0));
        // A key that does not parse trusts nothing: reported, and nothing new passes.
        assert_eq!(
            trust(&|v| v.trusted_keys = "ed25519:nope".into()),
            (0, false, 1)
        );
        assert_eq!(trust(&|v| v.accept_unsigned = "maybe".into()), (0, true, 1));
    }

    #[test]
    fn cors_modes() {
        let origin = HeaderValue::from_static("https://App.example");
        let (off, _) = Settings::parse(&Variables::default(), "i".into());
        assert_eq!(off.allow_origin(Some(&origin)), None);
        let (any, _) = Settings::parse(&vars(|v| v.cors_origins = "*".into()), "i".into());
        assert_eq!(any.allow_origin(Some(&origin)).unwrap(), "*");
        let (list, _) = Settings::parse(
            &vars(|v| v.cors_origins = "https://app.example/, https://b".into()),
            "i".into(),
        );
        assert_eq!(list.allow_origin(Some(&origin)).unwrap(), origin);
        let other = HeaderValue::from_static("https://evil");
        assert_eq!(list.allow_origin(Some(&other)), None);
        assert_eq!(list.allow_origin(None), None);
    }

    #[test]
    fn store_names_and_formats() {
        let (s, bad) = Settings::parse(
            &vars(|v| {
                v.store_url = "http://s:1/".into();
                v.store_token = "t".into();
                v.edge_region = "eu\0".into();
                v.edge_instance = " e1 ".into();
                v.transaction_id_format = "legacy".into();
            }),
            "fallback".into(),
        );
        assert_eq!(s.store.as_ref().unwrap().url, "http://s:1");
        assert_eq!(s.edge_instance, "e1");
        assert_eq!(s.region, None);
        assert_eq!(bad[0].name, "edge_region");
        assert_eq!(s.id_format, IdFormat::Legacy);
        let (s, bad) = Settings::parse(
            &vars(|v| v.transaction_id_format = "int".into()),
            "fallback".into(),
        );
        assert_eq!(
            (s.id_format, s.edge_instance.as_str()),
            (IdFormat::Uuid, "fallback")
        );
        assert_eq!(bad[0].name, "transaction_id_format");
        assert!(s.store.is_none());
    }
}
