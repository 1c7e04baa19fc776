//! Configuration from Spin variables (`[component.worker.variables]` in spin.toml), parsed once
//! per instance, and the checks it drives: API keys and CORS.

use crate::velocity::Writes;
use http::{HeaderMap, HeaderValue};

/// The raw variable values (unset = empty).
#[derive(Debug, Clone, Default)]
pub struct Variables {
    /// `api_keys`: comma-separated keys, each optionally named (`name:key`); empty = no
    /// authentication.
    pub api_keys: String,
    /// `rate_limits`: comma-separated `<key name>=<rate>[/<burst>]` (`*` for every key not
    /// named); empty = no limits.
    pub rate_limits: String,
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
    /// `velocity_writes`: `atomic` (default; compare-and-swap), `verified` (compare-and-swap,
    /// every write read back), `ticketed` (writes in the order of tickets drawn from the store's
    /// atomic increment: for Redis) or `plain` (read, then write: concurrent updates of one
    /// entity may be lost). See [`crate::velocity::Writes`].
    pub velocity_writes: String,
    /// `velocity_slots`: key-value values per entity field holding velocity state (default
    /// [`DEFAULT_VELOCITY_SLOTS`]); every edge sharing a store must use the same number.
    pub velocity_slots: String,
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
    pub(crate) api_keys: Vec<ApiKey>,
    pub(crate) cors: Cors,
    /// The central store, when `store_token` is set.
    pub(crate) store: Option<StoreConfig>,
    pub(crate) edge_instance: String,
    pub(crate) region: Option<String>,
    pub(crate) id_format: IdFormat,
    pub(crate) rollout: Rollout,
    /// How velocity state is written (`velocity_writes`).
    pub(crate) velocity_writes: Writes,
    /// Slots per entity field of velocity state (`velocity_slots`).
    pub(crate) velocity_slots: u32,
    /// Events journaled in the outbox before the answer (`forward_journal = on`).
    pub(crate) forward_journal: bool,
}

/// One accepted API key.
#[derive(Debug)]
pub(crate) struct ApiKey {
    /// Its name: the part before `:` in `api_keys`, else `key-<position>` (from 1). Names the
    /// key in logs, 429 answers and `rate_limits`; never the key itself.
    pub(crate) name: String,
    secret: String,
    /// Its request limit (`rate_limits`).
    pub(crate) limit: Option<crate::limits::Limit>,
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

/// Default of `velocity_slots`: room for about a million entities active within a model's
/// longest window (per entity field) before two of them meet in a full slot.
pub const DEFAULT_VELOCITY_SLOTS: u32 = 1 << 20;

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
        let velocity_writes = match v.velocity_writes.trim() {
            "" | "atomic" => Writes::Atomic,
            "verified" => Writes::Verified,
            "ticketed" => Writes::Ticketed,
            "plain" => Writes::Plain,
            other => {
                bad.push(BadVariable {
                    name: "velocity_writes",
                    problem: format!(
                        "{other:?} is not \"atomic\", \"verified\", \"ticketed\" or \"plain\""
                    ),
                });
                Writes::Atomic
            }
        };
        let velocity_slots = match v.velocity_slots.trim() {
            "" => DEFAULT_VELOCITY_SLOTS,
            raw => match raw.replace('_', "").parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    bad.push(BadVariable {
                        name: "velocity_slots",
                        problem: format!("{raw:?} is not a whole number from 1 to 4294967295"),
                    });
                    DEFAULT_VELOCITY_SLOTS
                }
            },
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
        let api_keys = api_keys(&list(&v.api_keys), &list(&v.rate_limits), &mut bad);
        let settings = Settings {
            api_keys,
            cors,
            store,
            edge_instance,
            region,
            id_format,
            rollout,
            velocity_writes,
            velocity_slots,
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

    /// The key the request carries (in `X-API-Key` or `Authorization: Bearer`): `Ok(None)` when
    /// no keys are configured, `Err(())` when it carries none of them. Every configured key is
    /// compared, in constant time.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Result<Option<&ApiKey>, ()> {
        use subtle::{ConditionallySelectable, ConstantTimeEq};
        if self.api_keys.is_empty() {
            return Ok(None);
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = header("authorization").and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let presented = [header("x-api-key").map(str::trim), bearer];
        let mut ok = subtle::Choice::from(0);
        let mut found = 0u32;
        for candidate in presented.into_iter().flatten() {
            for (i, key) in self.api_keys.iter().enumerate() {
                let same = key.secret.as_bytes().ct_eq(candidate.as_bytes());
                found.conditional_assign(&(i as u32), same);
                ok |= same;
            }
        }
        if bool::from(ok) {
            Ok(self.api_keys.get(found as usize))
        } else {
            Err(())
        }
    }

    /// True if no keys are configured or the request carries one of them.
    #[cfg(test)]
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        self.caller(headers).is_ok()
    }
}

/// The keys of `api_keys` with their names and the limits `rate_limits` gives them. An entry
/// of `rate_limits` that does not parse or names no key is reported and left out.
fn api_keys(entries: &[String], limits: &[String], bad: &mut Vec<BadVariable>) -> Vec<ApiKey> {
    let named = |entry: &str| {
        let (name, secret) = entry.split_once(':')?;
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        (ok && !secret.trim().is_empty()).then(|| (name.to_owned(), secret.trim().to_owned()))
    };
    let mut keys: Vec<ApiKey> = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let (name, secret) =
                named(entry).unwrap_or_else(|| (format!("key-{}", i + 1), entry.clone()));
            ApiKey {
                name,
                secret,
                limit: None,
            }
        })
        .collect();
    let mut every = None;
    for entry in limits {
        let parsed = entry
            .split_once('=')
            .ok_or_else(|| "is not <key name>=<rate>[/<burst>]".to_owned())
            .and_then(|(name, limit)| {
                let limit = crate::limits::Limit::parse(limit)?;
                let name = name.trim();
                if keys.is_empty() {
                    return Err("limits need API keys (api_keys is empty)".into());
                } else if name == "*" {
                    every = Some(limit);
                } else if let Some(key) = keys.iter_mut().find(|k| k.name == name) {
                    key.limit = Some(limit);
                } else {
                    return Err(format!("names no key of api_keys ({name:?})"));
                }
                Ok(())
            });
        if let Err(problem) = parsed {
            bad.push(BadVariable {
                name: "rate_limits",
                problem: format!("{entry:?} {problem}; left out"),
            });
        }
    }
    for key in &mut keys {
        key.limit = key.limit.or(every);
    }
    keys
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
    fn keys_are_named_and_limited_by_name_or_all_at_once() {
        let (s, bad) = Settings::parse(
            &vars(|v| {
                v.api_keys = "mobile:k1, k2, web:k3".into();
                v.rate_limits = "mobile=100/200, *=10, nobody=5, web=fast".into();
            }),
            "i".into(),
        );
        let keys: Vec<(&str, Option<String>)> = s
            .api_keys
            .iter()
            .map(|k| (k.name.as_str(), k.limit.map(|l| l.to_string())))
            .collect();
        assert_eq!(
            keys,
            [
                ("mobile", Some("100/s, burst 200".into())),
                ("key-2", Some("10/s, burst 10".into())),
                ("web", Some("10/s, burst 10".into())),
            ]
        );
        let problems: Vec<&str> = bad.iter().map(|b| b.problem.as_str()).collect();
        assert_eq!(bad.len(), 2, "{problems:?}");
        assert!(problems[0].contains("names no key"), "{problems:?}");
        assert!(
            problems[1].contains("\"fast\" is not a rate"),
            "{problems:?}"
        );
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k3"));
        assert_eq!(s.caller(&h).unwrap().unwrap().name, "web");
        // Limits without keys limit nothing, and say so.
        let (_, bad) = Settings::parse(&vars(|v| v.rate_limits = "*=1".into()), "i".into());
        assert!(bad[0].problem.contains("need API keys"), "{bad:?}");
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
