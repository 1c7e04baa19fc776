//! Velocity features: what an entity (a card, a customer, a device, an IP) did before the
//! current transaction, over a time window — the signal of card testing and bursts, which no
//! per-transaction feature carries.
//!
//! Why here: the trainer computes these features over history and every edge computes them per
//! request from state in its key-value store. If the two definitions differed by one bucket
//! boundary or one late event, a model would be trained on numbers the edge never produces. So
//! the definition *and* the state machine live in this crate, and both sides run the same
//! [`VelocitySpec::observe`] over the same events in the same order (SPEC.md §4.6).
//!
//! # Definitions (text form, stored in the model's `VELO` section)
//! ```text
//! count by card_id over 10m                  events of this card in the window
//! sum(amount) by card_id over 1h             sum of a numeric field
//! mean(amount) by card_id over 24h           sum / count (0 with no events)
//! distinct(merchant_category) by card_id over 24h   distinct values (at most 32 per bucket)
//! seen(merchant_id) by card_id over 30d every 1d     buckets in which this value occurred (0: new)
//! seconds_since_last by card_id              since the card's latest earlier event (cap 30 days)
//! amount / mean(amount) by card_id over 30d every 1d   this value against the card's own habit
//! log(amount / mean(amount)) by card_id over 30d   any of the above on a log scale
//! sum(amount) by card_id over 2h / mean(amount) by card_id over 30d every 1d
//!                                            one window against another (0 if the divisor is not positive)
//! ```
//! Durations are a whole number with `s`, `m`, `h` or `d`. A window of length `W` is `N = W / S`
//! buckets of `S` seconds (`every S`; default `W / 10`), `1 ≤ N ≤ 64`.
//!
//! # Window semantics (one definition, both sides)
//! * Events are processed **in arrival order** (the order the edge received them; the order of
//!   the store's export). Each event has a time `t` in milliseconds: its `timestamp` field, or
//!   the edge's clock when it has none.
//! * An event's bucket is `floor(t / S)`. The features of an event at `t` are computed from the
//!   events of the same entity **that arrived before it** whose bucket lies in
//!   `(floor(t/S) − N, floor(t/S)]`; the event itself never counts (no look-ahead). Within the
//!   current bucket an earlier arrival counts even if its timestamp is later (bucket
//!   granularity).
//! * State keeps, per accumulator, only the `N` buckets ending at the newest bucket seen. A late
//!   event whose bucket is already older than that is not recorded (it still gets features from
//!   what is kept); an event in a newer bucket drops the oldest ones.
//! * `seconds_since_last` is `(t − latest earlier-arrived t) / 1000`, clamped to `[0, 30 days]`;
//!   30 days with no earlier event.
//! * A sum/mean/ratio accumulator records only events whose field is a finite number; `count`
//!   records every event. `ratio` (`x / mean(x)`) is 1 when the mean is not positive, the window
//!   is empty, or the event has no value.
//! * `log(…)` is the natural logarithm of the aggregate's value (no-history values included),
//!   the value first raised to at least [`LOG_FLOOR`] (so 0 becomes ln 0.001 ≈ −6.91). Why: an
//!   isolation forest splits uniformly between a feature's extremes, so on a heavy-tailed value
//!   (a ratio of 0.04 against ratios up to 200, a gap of 30 s against gaps of days) it almost
//!   never cuts where the anomalies are; on a log scale it does. Computed with `libm`, so every
//!   platform gives the same bits.
//! * An absent entity field (or an empty string) means no entity: its features take their
//!   no-history values (0; 30 days; ratio 1) and nothing is recorded. An entity id that is not a
//!   string is an error. Ids compare trimmed and ASCII-lowercased.

use std::fmt;
use std::str::FromStr;

use crate::normalize::{Payload, Value, timestamp_millis};

/// Most buckets one window may have: bounds the state per entity.
pub const MAX_BUCKETS: u32 = 64;
/// Distinct values recorded per bucket; later new values in a full bucket are not recorded.
pub const DISTINCT_PER_BUCKET: usize = 32;
/// `seconds_since_last` with no earlier event, and its largest value.
pub const SINCE_LAST_CAP_SECS: f64 = 30.0 * 86_400.0;
/// Smallest value `log(…)` takes the logarithm of.
pub const LOG_FLOOR: f64 = 1e-3;
/// Most velocity features a model may declare.
pub const MAX_VELOCITY_FEATURES: usize = 64;
/// Longest entity id, in bytes.
pub const MAX_ENTITY_ID_LEN: usize = 256;
/// Longest encoded state of one entity a reader accepts ([`EntityState::decode`]).
pub const MAX_STATE_BYTES: usize = 256 * 1024;

/// What a velocity feature aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aggregate {
    /// Events in the window.
    Count,
    /// Sum of a numeric field.
    Sum(String),
    /// Mean of a numeric field.
    Mean(String),
    /// Distinct values of a field.
    Distinct(String),
    /// In how many of the window's buckets the entity had the event's own value of a field
    /// (0: a value new to the entity). Reads the same state as `distinct` of the field.
    Seen(String),
    /// Seconds since the entity's latest earlier event (no window).
    SecondsSinceLast,
    /// The event's value of a field divided by the field's mean in the window.
    Ratio(String),
}

/// A window: `seconds` long, in buckets of `bucket_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Length.
    pub seconds: u32,
    /// Bucket size; divides `seconds`.
    pub bucket_seconds: u32,
}

impl Window {
    fn buckets(self) -> i64 {
        i64::from(self.seconds / self.bucket_seconds)
    }

    fn bucket_ms(self) -> i64 {
        i64::from(self.bucket_seconds) * 1000
    }
}

/// One velocity feature's definition (its text form is [`fmt::Display`] / [`FromStr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// What is aggregated.
    pub aggregate: Aggregate,
    /// The payload field naming the entity (e.g. `card_id`).
    pub entity: String,
    /// The window; `None` only for `seconds_since_last`.
    pub window: Option<Window>,
    /// `log(…)`: the value on a log scale.
    pub log: bool,
    /// `A / B`: this definition (A) divided by another aggregate B of the same entity over its
    /// own window, e.g. the card's spend in 2 hours against its mean amount over 30 days — a
    /// comparison across two windows that no single window expresses. `None` for the rest.
    pub per: Option<Box<Definition>>,
}

impl Definition {
    /// The feature's value from its aggregate's value.
    fn finish(&self, v: f64) -> f64 {
        if self.log {
            libm::log(v.max(LOG_FLOOR))
        } else {
            v
        }
    }
}

/// Why a definition, a spec, a payload or a stored state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VelocityError {
    /// A definition does not parse or is out of bounds.
    #[error("velocity feature {feature:?}: {problem} (in {text:?})")]
    Definition {
        /// The feature's name.
        feature: String,
        /// The definition as written.
        text: String,
        /// What is wrong.
        problem: String,
    },
    /// The spec as a whole is inconsistent.
    #[error("velocity features: {0}")]
    Spec(String),
    /// An entity field holds something other than a string.
    #[error("field {field:?} must be a string (an entity id)")]
    EntityNotText {
        /// The field.
        field: String,
    },
    /// An entity id is longer than [`MAX_ENTITY_ID_LEN`].
    #[error("field {field:?} is longer than {MAX_ENTITY_ID_LEN} bytes")]
    EntityTooLong {
        /// The field.
        field: String,
    },
    /// The time field is present but not a timestamp.
    #[error("field {field:?} must be an ISO-8601 timestamp")]
    BadTime {
        /// The field.
        field: String,
    },
    /// Stored state bytes are not a valid state.
    #[error("velocity state is corrupt: {0}")]
    CorruptState(&'static str),
}

fn duration(text: &str) -> Option<u32> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u32 = digits.parse().ok().filter(|&n| n > 0)?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(unit)
}

fn format_duration(s: u32) -> String {
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn is_field(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

impl FromStr for Definition {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.iter().filter(|w| **w == "by").count() < 2 {
            return Definition::parse_simple(&words);
        }
        // A quotient `[log(] A / B [)]`: two definitions, each with its own `by`.
        let text = words.join(" ");
        let (inner, log) = match text.strip_prefix("log(").and_then(|t| t.strip_suffix(')')) {
            Some(inner) => (inner.to_string(), true),
            None => (text, false),
        };
        let words: Vec<&str> = inner.split_whitespace().collect();
        let first_by = words.iter().position(|w| *w == "by").unwrap_or(0);
        let slash = words[first_by..]
            .iter()
            .position(|w| *w == "/")
            .map(|i| first_by + i)
            .ok_or("expected `A / B`: two definitions of one entity (e.g. `sum(amount) by card_id over 2h / mean(amount) by card_id over 30d every 1d`)")?;
        let mut num = Definition::parse_simple(&words[..slash])?;
        let den = Definition::parse_simple(&words[slash + 1..])?;
        for side in [&num, &den] {
            if side.log || side.per.is_some() {
                return Err(
                    "write `log(A / B)`: a side of a quotient takes no log of its own".into(),
                );
            }
            if !matches!(
                side.aggregate,
                Aggregate::Count | Aggregate::Sum(_) | Aggregate::Mean(_) | Aggregate::Distinct(_)
            ) {
                return Err(
                    "a quotient divides count, sum(f), mean(f) or distinct(f) over windows".into(),
                );
            }
        }
        if num.entity != den.entity {
            return Err(format!(
                "both sides of a quotient need the same entity ({} and {})",
                num.entity, den.entity
            ));
        }
        num.log = log;
        num.per = Some(Box::new(den));
        Ok(num)
    }
}

impl Definition {
    /// One aggregate over one window (`words` split on whitespace): everything but a quotient.
    fn parse_simple(words: &[&str]) -> Result<Self, String> {
        let by = words
            .iter()
            .position(|w| *w == "by")
            .ok_or("expected `<aggregate> by <entity field> [over <window> [every <bucket>]]`")?;
        let head = words[..by].join(" ");
        let (head, log) = match head.strip_prefix("log(").and_then(|h| h.strip_suffix(')')) {
            Some(inner) => (inner.trim().to_string(), true),
            None => (head, false),
        };
        let arg = |name: &str, s: &str| -> Result<Option<String>, String> {
            let Some(inner) = s
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'))
            else {
                return Ok(None);
            };
            let inner = inner.trim();
            if !is_field(inner) {
                return Err(format!("{inner:?} is not a field name"));
            }
            Ok(Some(inner.to_string()))
        };
        let aggregate = if head == "count" {
            Aggregate::Count
        } else if head == "seconds_since_last" {
            Aggregate::SecondsSinceLast
        } else if let Some(f) = arg("sum", &head)? {
            Aggregate::Sum(f)
        } else if let Some(f) = arg("mean", &head)? {
            Aggregate::Mean(f)
        } else if let Some(f) = arg("distinct", &head)? {
            Aggregate::Distinct(f)
        } else if let Some(f) = arg("seen", &head)? {
            Aggregate::Seen(f)
        } else if let Some((x, mean)) = head.split_once('/') {
            let x = x.trim();
            match arg("mean", mean.trim())? {
                Some(f) if f == x => Aggregate::Ratio(f),
                Some(f) => {
                    return Err(format!(
                        "a ratio divides a field by its own mean: {x} / mean({f})"
                    ));
                }
                None => return Err(format!("expected `{x} / mean({x})`")),
            }
        } else {
            return Err(format!(
                "unknown aggregate {head:?} (count, sum(f), mean(f), distinct(f), seen(f), seconds_since_last, f / mean(f), or log(one of them))"
            ));
        };
        let entity = words.get(by + 1).ok_or("no entity field after `by`")?;
        if !is_field(entity) {
            return Err(format!("{entity:?} is not a field name"));
        }
        let rest = &words[by + 2..];
        let window = match rest {
            [] => None,
            ["over", w] | ["over", w, "every", _] => {
                let seconds = duration(w).ok_or(format!("bad window {w:?} (e.g. 10m, 1h, 30d)"))?;
                let bucket_seconds = match rest {
                    [_, _, _, b] => duration(b).ok_or(format!("bad bucket {b:?}"))?,
                    _ if seconds % 10 == 0 => seconds / 10,
                    _ => {
                        return Err(format!(
                            "window {w} is not a multiple of 10 s: give `every <bucket>`"
                        ));
                    }
                };
                if seconds % bucket_seconds != 0 {
                    return Err("the bucket must divide the window".into());
                }
                let n = seconds / bucket_seconds;
                if !(1..=MAX_BUCKETS).contains(&n) {
                    return Err(format!("{n} buckets; 1 to {MAX_BUCKETS} are allowed"));
                }
                Some(Window {
                    seconds,
                    bucket_seconds,
                })
            }
            _ => return Err("expected `over <window> [every <bucket>]` after the entity".into()),
        };
        let shape: Result<(), String> = match (&aggregate, window) {
            (Aggregate::SecondsSinceLast, Some(_)) => {
                Err("seconds_since_last takes no window".into())
            }
            (Aggregate::SecondsSinceLast, None) => Ok(()),
            (_, None) => Err("this aggregate needs `over <window>`".into()),
            _ => Ok(()),
        };
        shape?;
        Ok(Definition {
            aggregate,
            entity: entity.to_string(),
            window,
            log,
            per: None,
        })
    }
}

impl fmt::Display for Definition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(den) = &self.per {
            let num = Definition {
                log: false,
                per: None,
                ..self.clone()
            };
            return if self.log {
                write!(f, "log({num} / {den})")
            } else {
                write!(f, "{num} / {den}")
            };
        }
        if self.log {
            write!(f, "log(")?;
        }
        match &self.aggregate {
            Aggregate::Count => write!(f, "count")?,
            Aggregate::Sum(x) => write!(f, "sum({x})")?,
            Aggregate::Mean(x) => write!(f, "mean({x})")?,
            Aggregate::Distinct(x) => write!(f, "distinct({x})")?,
            Aggregate::Seen(x) => write!(f, "seen({x})")?,
            Aggregate::SecondsSinceLast => write!(f, "seconds_since_last")?,
            Aggregate::Ratio(x) => write!(f, "{x} / mean({x})")?,
        }
        if self.log {
            write!(f, ")")?;
        }
        write!(f, " by {}", self.entity)?;
        if let Some(w) = self.window {
            write!(
                f,
                " over {} every {}",
                format_duration(w.seconds),
                format_duration(w.bucket_seconds)
            )?;
        }
        Ok(())
    }
}

/// How one accumulator in an entity's state is keyed: features that need the same numbers
/// (count, sum, mean, ratio of one field over one window) share one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Accumulator {
    /// Stable identity in stored state: XXH3 of the canonical text below.
    id: u64,
    /// `None` = count every event.
    field: Option<String>,
    distinct: bool,
    window: Window,
}

/// One declared velocity feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VelocityFeature {
    /// The schema feature it fills.
    pub name: String,
    /// How.
    pub definition: Definition,
    entity: usize,
    /// Index into the entity's accumulators (`None` for `seconds_since_last`).
    accumulator: Option<usize>,
    /// A quotient's divisor's accumulator.
    denominator: Option<usize>,
}

/// The velocity features a model declares (section `VELO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VelocitySpec {
    time_field: String,
    features: Vec<VelocityFeature>,
    /// Entity fields in first-use order.
    entities: Vec<String>,
    /// Per entity, its accumulators.
    accumulators: Vec<Vec<Accumulator>>,
}

impl VelocitySpec {
    /// Parses `(feature name, definition text)` pairs; `time_field` names the payload's
    /// transaction time (usually `timestamp`).
    pub fn new<N: AsRef<str>, D: AsRef<str>>(
        time_field: &str,
        features: &[(N, D)],
    ) -> Result<Self, VelocityError> {
        if !is_field(time_field) {
            return Err(VelocityError::Spec(format!(
                "{time_field:?} is not a field name"
            )));
        }
        if features.is_empty() || features.len() > MAX_VELOCITY_FEATURES {
            return Err(VelocityError::Spec(format!(
                "{} features; 1 to {MAX_VELOCITY_FEATURES} are allowed",
                features.len()
            )));
        }
        let mut spec = VelocitySpec {
            time_field: time_field.to_string(),
            features: Vec::new(),
            entities: Vec::new(),
            accumulators: Vec::new(),
        };
        for (name, text) in features {
            let (name, text) = (name.as_ref(), text.as_ref());
            let bad = |problem: String| VelocityError::Definition {
                feature: name.to_string(),
                text: text.to_string(),
                problem,
            };
            if name.is_empty() || spec.features.iter().any(|f| f.name == name) {
                return Err(bad("empty or duplicate feature name".into()));
            }
            let definition: Definition = text.parse().map_err(bad)?;
            if definition.entity == time_field {
                return Err(bad("the entity cannot be the time field".into()));
            }
            let entity = if let Some(i) = spec.entities.iter().position(|e| *e == definition.entity)
            {
                i
            } else {
                spec.entities.push(definition.entity.clone());
                spec.accumulators.push(Vec::new());
                spec.entities.len() - 1
            };
            let accumulator = definition
                .window
                .map(|w| spec.accumulator(entity, &definition.aggregate, w));
            let denominator = definition.per.as_deref().and_then(|den| {
                den.window
                    .map(|w| spec.accumulator(entity, &den.aggregate, w))
            });
            spec.features.push(VelocityFeature {
                name: name.to_string(),
                definition,
                entity,
                accumulator,
                denominator,
            });
        }
        Ok(spec)
    }

    /// The index of entity `entity`'s accumulator that `aggregate` over `window` reads, added
    /// if no earlier feature needs the same numbers.
    fn accumulator(&mut self, entity: usize, aggregate: &Aggregate, window: Window) -> usize {
        let field = aggregated_field(aggregate).map(str::to_string);
        let distinct = matches!(aggregate, Aggregate::Distinct(_) | Aggregate::Seen(_));
        let accs = &mut self.accumulators[entity];
        let same =
            |a: &Accumulator| a.window == window && a.field == field && a.distinct == distinct;
        if let Some(i) = accs.iter().position(same) {
            return i;
        }
        let canonical = format!(
            "{}|{}|{}|{}",
            if distinct { "distinct" } else { "sum" },
            field.as_deref().unwrap_or(""),
            window.seconds,
            window.bucket_seconds
        );
        accs.push(Accumulator {
            id: xxhash_rust::xxh3::xxh3_64(canonical.as_bytes()),
            field,
            distinct,
            window,
        });
        accs.len() - 1
    }

    /// The payload field holding the transaction time.
    pub fn time_field(&self) -> &str {
        &self.time_field
    }

    /// The declared features, in declaration order: the order of every `values` slice.
    pub fn features(&self) -> &[VelocityFeature] {
        &self.features
    }

    /// The entity fields, in first-use order: what [`VelocitySpec::observe`]'s `entity` indexes.
    pub fn entities(&self) -> &[String] {
        &self.entities
    }

    /// Every payload field the features read (entities, aggregated fields, the time field).
    pub fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = vec![&self.time_field];
        for f in &self.features {
            let d = &f.definition;
            let den = d
                .per
                .as_deref()
                .and_then(|p| aggregated_field(&p.aggregate));
            for name in [Some(d.entity.as_str()), aggregated_field(&d.aggregate), den]
                .into_iter()
                .flatten()
            {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    /// The event's time in ms since the epoch: the time field when present, else `now_ms`.
    pub fn event_time(&self, payload: &impl Payload, now_ms: i64) -> Result<i64, VelocityError> {
        match payload.get(&self.time_field) {
            None => Ok(now_ms),
            Some(Value::Text(s)) => timestamp_millis(s).ok_or_else(|| VelocityError::BadTime {
                field: self.time_field.clone(),
            }),
            Some(_) => Err(VelocityError::BadTime {
                field: self.time_field.clone(),
            }),
        }
    }

    /// The normalized id of entity `entity` in `payload` (trimmed, ASCII-lowercased), or `None`
    /// when the field is absent or empty.
    pub fn entity_id(
        &self,
        payload: &impl Payload,
        entity: usize,
    ) -> Result<Option<String>, VelocityError> {
        let field = &self.entities[entity];
        match payload.get(field) {
            None => Ok(None),
            Some(Value::Text(s)) => {
                let s = s.trim();
                if s.len() > MAX_ENTITY_ID_LEN {
                    return Err(VelocityError::EntityTooLong {
                        field: field.clone(),
                    });
                }
                Ok((!s.is_empty()).then(|| s.to_ascii_lowercase()))
            }
            Some(_) => Err(VelocityError::EntityNotText {
                field: field.clone(),
            }),
        }
    }

    /// Checks every entity field and the time field of `payload` without touching any state:
    /// a request fails on these before anything is read or written.
    pub fn check(&self, payload: &impl Payload) -> Result<(), VelocityError> {
        self.event_time(payload, 0)?;
        for e in 0..self.entities.len() {
            self.entity_id(payload, e)?;
        }
        Ok(())
    }

    /// Where one entity's state lives at the edge: the key-value key of its slot (one of
    /// `slots` per entity field: the store holds at most that many, however many cards pass)
    /// and the entity's fingerprint within the slot (XXH3-64 of the id).
    pub fn state_slot(&self, entity: usize, id: &str, slots: u32) -> (String, u64) {
        let fingerprint = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
        let slot = fingerprint % u64::from(slots.max(1));
        (
            format!("vel/{}/s{slot:x}", self.entities[entity]),
            fingerprint,
        )
    }

    /// How long an entity's state can change a feature: the longest window among its
    /// features, 30 days if one is `seconds_since_last`.
    pub fn horizon_ms(&self, entity: usize) -> i64 {
        self.features
            .iter()
            .filter(|f| f.entity == entity)
            .flat_map(|f| [Some(&f.definition), f.definition.per.as_deref()])
            .flatten()
            .map(|d| {
                d.window.map_or(SINCE_LAST_CAP_SECS as i64 * 1000, |w| {
                    w.buckets() * w.bucket_ms()
                })
            })
            .max()
            .unwrap_or(0)
    }

    /// Whether `state` (of entity field `entity`) can no longer change the features of an
    /// event at `t_ms`: empty, or its newest event more than [`Self::horizon_ms`] before. Such
    /// an event gets exactly the no-history values, so the edge may drop the state.
    pub fn outlived(&self, entity: usize, state: &EntityState, t_ms: i64) -> bool {
        state
            .last_ms
            .is_none_or(|last| t_ms.saturating_sub(last) > self.horizon_ms(entity))
    }

    /// Writes every feature's no-history value into `values` (one slot per feature).
    pub fn no_history(&self, values: &mut [f64]) {
        for (v, f) in values.iter_mut().zip(&self.features) {
            *v = f.definition.finish(match f.definition.aggregate {
                Aggregate::SecondsSinceLast => SINCE_LAST_CAP_SECS,
                Aggregate::Ratio(_) => 1.0,
                _ => 0.0,
            });
        }
    }

    /// The heart of it: writes the features of entity `entity` for an event at `t_ms` into
    /// `values` (its slots only), computed from `state` as it was, then records the event in
    /// `state`. Call it once per entity present in the payload, in arrival order.
    pub fn observe(
        &self,
        entity: usize,
        state: &mut EntityState,
        t_ms: i64,
        payload: &impl Payload,
        values: &mut [f64],
    ) {
        // Past the horizon the state cannot change this event's features; dropping it here
        // (trainer and edge alike) also keeps a late event after a long gap from meeting
        // buckets the edge has already let go of.
        if self.outlived(entity, state, t_ms) {
            *state = EntityState::default();
        }
        let accs = &self.accumulators[entity];
        state.align(accs);
        for (slot, f) in values.iter_mut().zip(&self.features) {
            if f.entity != entity {
                continue;
            }
            let Some(a) = f.accumulator else {
                *slot = f.definition.finish(match state.last_ms {
                    None => SINCE_LAST_CAP_SECS,
                    Some(last) => ((t_ms - last) as f64 / 1000.0).clamp(0.0, SINCE_LAST_CAP_SECS),
                });
                continue;
            };
            let value = aggregate_value(
                &f.definition.aggregate,
                &state.slots[a],
                accs[a].window,
                t_ms,
                payload,
            );
            *slot = f
                .definition
                .finish(match (&f.definition.per, f.denominator) {
                    (Some(den), Some(d)) => {
                        let divisor = aggregate_value(
                            &den.aggregate,
                            &state.slots[d],
                            accs[d].window,
                            t_ms,
                            payload,
                        );
                        if divisor > 0.0 { value / divisor } else { 0.0 }
                    }
                    _ => value,
                });
        }
        for (acc, slot) in accs.iter().zip(&mut state.slots) {
            let value = match (&acc.field, acc.distinct) {
                (None, _) => Some(Observed::Count),
                (Some(f), false) => number(payload, f).map(Observed::Number),
                (Some(f), true) => distinct_hash(payload, f).map(Observed::Distinct),
            };
            if let Some(v) = value {
                slot.record(t_ms, acc.window, v);
            }
        }
        state.last_ms = Some(state.last_ms.map_or(t_ms, |l| l.max(t_ms)));
    }

    /// The spec in `VELO` form: (name, canonical definition) pairs.
    pub fn definitions(&self) -> impl Iterator<Item = (&str, String)> {
        self.features
            .iter()
            .map(|f| (f.name.as_str(), f.definition.to_string()))
    }
}

/// The payload field an aggregate reads, if any.
fn aggregated_field(a: &Aggregate) -> Option<&str> {
    match a {
        Aggregate::Sum(x)
        | Aggregate::Mean(x)
        | Aggregate::Distinct(x)
        | Aggregate::Seen(x)
        | Aggregate::Ratio(x) => Some(x.as_str()),
        Aggregate::Count | Aggregate::SecondsSinceLast => None,
    }
}

/// One windowed aggregate's value for an event at `t_ms`, from its accumulator's slot.
fn aggregate_value(
    aggregate: &Aggregate,
    slot: &Slot,
    window: Window,
    t_ms: i64,
    payload: &impl Payload,
) -> f64 {
    let (count, sum, distinct) = slot.in_window(t_ms, window);
    let mean = if count == 0 { 0.0 } else { sum / count as f64 };
    match aggregate {
        Aggregate::Count => count as f64,
        Aggregate::Sum(_) => sum,
        Aggregate::Mean(_) => mean,
        Aggregate::Distinct(_) => distinct as f64,
        Aggregate::Seen(field) => {
            distinct_hash(payload, field).map_or(0.0, |h| slot.buckets_with(t_ms, window, h) as f64)
        }
        Aggregate::Ratio(field) => match number(payload, field) {
            Some(x) if mean > 0.0 => x / mean,
            _ => 1.0,
        },
        // Has no window, hence no accumulator: never asked.
        Aggregate::SecondsSinceLast => SINCE_LAST_CAP_SECS,
    }
}

fn number(payload: &impl Payload, field: &str) -> Option<f64> {
    let v = match payload.get(field)? {
        Value::Number(n) => n,
        Value::Text(s) => s.trim().parse().ok()?,
        Value::Bool(_) | Value::Other => return None,
    };
    v.is_finite().then_some(v)
}

/// A value's identity for distinct counts: numbers by their value (an integral number as an
/// integer, so `3` and `3.0` agree; a numeric string is that number), text trimmed and
/// ASCII-lowercased.
fn distinct_hash(payload: &impl Payload, field: &str) -> Option<u64> {
    let canonical = match payload.get(field)? {
        Value::Number(n) => canonical_number(n)?,
        Value::Text(s) => match s.trim().parse::<f64>() {
            Ok(n) => canonical_number(n)?,
            Err(_) => format!("s:{}", s.trim().to_ascii_lowercase()),
        },
        Value::Bool(b) => format!("b:{b}"),
        Value::Other => return None,
    };
    Some(xxhash_rust::xxh3::xxh3_64(canonical.as_bytes()))
}

fn canonical_number(n: f64) -> Option<String> {
    if !n.is_finite() {
        return None;
    }
    Some(if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("n:{}", n as i64)
    } else {
        format!("n:{n}")
    })
}

#[derive(Clone, Copy)]
enum Observed {
    Count,
    Number(f64),
    Distinct(u64),
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Bucket {
    index: i64,
    count: u32,
    sum: f64,
    distinct: Vec<u64>,
}

/// One accumulator's buckets, ascending by index, at most `N`.
#[derive(Debug, Clone, PartialEq, Default)]
struct Slot {
    id: u64,
    buckets: Vec<Bucket>,
}

impl Slot {
    fn in_window(&self, t_ms: i64, w: Window) -> (u64, f64, usize) {
        let current = t_ms.div_euclid(w.bucket_ms());
        let first = current - w.buckets() + 1;
        let (mut count, mut sum) = (0u64, 0.0);
        let mut seen: Vec<u64> = Vec::new();
        for b in self
            .buckets
            .iter()
            .filter(|b| (first..=current).contains(&b.index))
        {
            count += u64::from(b.count);
            sum += b.sum;
            seen.extend(&b.distinct);
        }
        seen.sort_unstable();
        seen.dedup();
        (count, sum, seen.len())
    }

    /// How many of the window's buckets recorded the value hashed `h`.
    fn buckets_with(&self, t_ms: i64, w: Window, h: u64) -> usize {
        let current = t_ms.div_euclid(w.bucket_ms());
        let first = current - w.buckets() + 1;
        self.buckets
            .iter()
            .filter(|b| (first..=current).contains(&b.index) && b.distinct.contains(&h))
            .count()
    }

    fn record(&mut self, t_ms: i64, w: Window, v: Observed) {
        let index = t_ms.div_euclid(w.bucket_ms());
        let newest = self.buckets.last().map_or(index, |b| b.index.max(index));
        let oldest_kept = newest - w.buckets() + 1;
        self.buckets.retain(|b| b.index >= oldest_kept);
        if index < oldest_kept {
            return; // too late: its bucket has left the window of the newest event
        }
        let at = match self.buckets.binary_search_by_key(&index, |b| b.index) {
            Ok(i) => i,
            Err(i) => {
                self.buckets.insert(
                    i,
                    Bucket {
                        index,
                        ..Bucket::default()
                    },
                );
                i
            }
        };
        let b = &mut self.buckets[at];
        b.count += 1;
        match v {
            Observed::Count => {}
            Observed::Number(x) => b.sum += x,
            Observed::Distinct(h) => {
                if !b.distinct.contains(&h) && b.distinct.len() < DISTINCT_PER_BUCKET {
                    b.distinct.push(h);
                }
            }
        }
    }
}

/// What the edge keeps per entity (one key-value value) and the trainer per entity in memory.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EntityState {
    last_ms: Option<i64>,
    slots: Vec<Slot>,
}

const STATE_VERSION: u8 = 1;

impl EntityState {
    /// The time of the newest event recorded (ms since the epoch), if any.
    pub fn last_ms(&self) -> Option<i64> {
        self.last_ms
    }

    /// Matches the stored slots to the spec's accumulators by id: slots of accumulators the
    /// model no longer has are dropped, new ones start empty (so unchanged definitions keep
    /// their history across model versions).
    fn align(&mut self, accs: &[Accumulator]) {
        if self.slots.len() == accs.len() && self.slots.iter().zip(accs).all(|(s, a)| s.id == a.id)
        {
            return;
        }
        let mut old = std::mem::take(&mut self.slots);
        self.slots = accs
            .iter()
            .map(|a| match old.iter().position(|s| s.id == a.id) {
                Some(i) => old.swap_remove(i),
                None => Slot {
                    id: a.id,
                    buckets: Vec::new(),
                },
            })
            .collect();
    }

    /// The state's bytes (little-endian; see SPEC.md §4.6).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.slots.len() * 64);
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.last_ms.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&(self.slots.len() as u16).to_le_bytes());
        for s in &self.slots {
            out.extend_from_slice(&s.id.to_le_bytes());
            out.extend_from_slice(&(s.buckets.len() as u16).to_le_bytes());
            for b in &s.buckets {
                out.extend_from_slice(&b.index.to_le_bytes());
                out.extend_from_slice(&b.count.to_le_bytes());
                out.extend_from_slice(&b.sum.to_le_bytes());
                out.push(b.distinct.len() as u8);
                for h in &b.distinct {
                    out.extend_from_slice(&h.to_le_bytes());
                }
            }
        }
        out
    }

    /// Reads [`EntityState::encode`]'s bytes, checking every count and order.
    pub fn decode(bytes: &[u8]) -> Result<Self, VelocityError> {
        let bad = VelocityError::CorruptState;
        if bytes.len() > MAX_STATE_BYTES {
            return Err(bad("too long"));
        }
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8], VelocityError> {
            if r.len() < n {
                return Err(bad("truncated"));
            }
            let (head, tail) = r.split_at(n);
            r = tail;
            Ok(head)
        };
        if take(1)?[0] != STATE_VERSION {
            return Err(bad("unknown version"));
        }
        let le8 = |b: &[u8]| <[u8; 8]>::try_from(b).expect("8 bytes");
        let last = i64::from_le_bytes(le8(take(8)?));
        let n_slots = u16::from_le_bytes([take(1)?[0], take(1)?[0]]);
        let mut slots = Vec::with_capacity(usize::from(n_slots).min(64));
        for _ in 0..n_slots {
            let id = u64::from_le_bytes(le8(take(8)?));
            let n = u16::from_le_bytes([take(1)?[0], take(1)?[0]]);
            if u32::from(n) > MAX_BUCKETS {
                return Err(bad("too many buckets"));
            }
            let mut buckets: Vec<Bucket> = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                let index = i64::from_le_bytes(le8(take(8)?));
                let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
                let sum = f64::from_le_bytes(le8(take(8)?));
                let k = usize::from(take(1)?[0]);
                if k > DISTINCT_PER_BUCKET || count == 0 || !sum.is_finite() {
                    return Err(bad("bucket out of range"));
                }
                if buckets.last().is_some_and(|b| b.index >= index) {
                    return Err(bad("buckets out of order"));
                }
                let mut distinct = Vec::with_capacity(k);
                for _ in 0..k {
                    distinct.push(u64::from_le_bytes(le8(take(8)?)));
                }
                buckets.push(Bucket {
                    index,
                    count,
                    sum,
                    distinct,
                });
            }
            slots.push(Slot { id, buckets });
        }
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(EntityState {
            last_ms: (last != i64::MIN).then_some(last),
            slots,
        })
    }
}

/// A payload with the velocity values laid over it: the model's rules read a velocity feature
/// by its name, and the value computed here wins over anything the caller sent under it.
pub struct Overlay<'a, P: Payload> {
    /// The request payload.
    pub base: &'a P,
    /// The spec the values belong to.
    pub spec: &'a VelocitySpec,
    /// One value per feature of `spec`.
    pub values: &'a [f64],
}

impl<P: Payload> Payload for Overlay<'_, P> {
    fn get(&self, field: &str) -> Option<Value<'_>> {
        match self.spec.features.iter().position(|f| f.name == field) {
            Some(i) => Some(Value::Number(self.values[i])),
            None => self.base.get(field),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P(Vec<(&'static str, Value<'static>)>);
    impl Payload for P {
        fn get(&self, field: &str) -> Option<Value<'_>> {
            self.0.iter().find(|(k, _)| *k == field).map(|(_, v)| *v)
        }
    }

    fn spec() -> VelocitySpec {
        VelocitySpec::new(
            "timestamp",
            &[
                ("n10m", "count by card_id over 10m"),
                ("sum1h", "sum(amount) by card_id over 1h"),
                ("mean1h", "mean(amount) by card_id over 1h"),
                ("cats", "distinct(cat) by card_id over 1h every 6m"),
                ("since", "seconds_since_last by card_id"),
                ("ratio", "amount / mean(amount) by card_id over 1h"),
                ("dev10m", "count by device over 10m"),
            ],
        )
        .unwrap()
    }

    fn event(
        spec: &VelocitySpec,
        states: &mut [EntityState],
        t_s: i64,
        amount: f64,
        cat: f64,
    ) -> Vec<f64> {
        let p = P(vec![
            ("amount", Value::Number(amount)),
            ("cat", Value::Number(cat)),
        ]);
        let mut v = vec![0.0; spec.features().len()];
        spec.no_history(&mut v);
        spec.observe(0, &mut states[0], t_s * 1000, &p, &mut v);
        v
    }

    #[test]
    fn definitions_parse_and_print_canonically() {
        for (text, canonical) in [
            (
                "count by card_id over 10m",
                "count by card_id over 10m every 1m",
            ),
            (
                "sum(amount)  by card_id over 1h",
                "sum(amount) by card_id over 1h every 6m",
            ),
            (
                "amount / mean(amount) by card_id over 30d every 1d",
                "amount / mean(amount) by card_id over 30d every 1d",
            ),
            ("seconds_since_last by ip", "seconds_since_last by ip"),
            (
                "log( amount / mean(amount) ) by card_id over 30d every 1d",
                "log(amount / mean(amount)) by card_id over 30d every 1d",
            ),
            (
                "log(seconds_since_last) by card_id",
                "log(seconds_since_last) by card_id",
            ),
        ] {
            let d: Definition = text.parse().unwrap();
            assert_eq!(d.to_string(), canonical);
            assert_eq!(canonical.parse::<Definition>().unwrap(), d);
        }
        for bad in [
            "count over 10m",
            "count by card_id",
            "median(amount) by card_id over 1h",
            "seconds_since_last by card_id over 1h",
            "amount / mean(fee) by card_id over 1h",
            "count by card_id over 10x",
            "count by card_id over 65m every 1m",
            "count by card_id over 10m every 3m",
            "count by card_id over 7s",
            "log(count by card_id over 10m",
            "log(median(amount)) by card_id over 1h",
            "log(log(count)) by card_id over 10m",
            // Quotients: one entity, plain windowed aggregates on both sides, one `/`.
            "sum(amount) by card_id over 2h / mean(amount) by ip over 30d every 1d",
            "log(sum(amount)) by card_id over 2h / mean(amount) by card_id over 30d every 1d",
            "sum(amount) by card_id over 2h / seconds_since_last by card_id",
            "amount / mean(amount) by card_id over 2h / count by card_id over 30d every 1d",
            "sum(amount) by card_id over 2h mean(amount) by card_id over 30d every 1d",
            "sum(amount) by card_id over 2h / mean(amount) by card_id",
        ] {
            assert!(bad.parse::<Definition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn quotients_parse_print_and_divide_one_window_by_another() {
        for (text, canonical) in [
            (
                "sum(amount) by card_id over 2h / mean(amount) by card_id over 30d every 1d",
                "sum(amount) by card_id over 2h every 12m / mean(amount) by card_id over 30d every 1d",
            ),
            (
                "log( count by card_id over 1h  /  count by card_id over 30d every 1d )",
                "log(count by card_id over 1h every 6m / count by card_id over 30d every 1d)",
            ),
        ] {
            let d: Definition = text.parse().unwrap();
            assert_eq!(d.to_string(), canonical);
            assert_eq!(canonical.parse::<Definition>().unwrap(), d);
        }
        let s = VelocitySpec::new(
            "timestamp",
            &[
                ("mean30d", "mean(amount) by card_id over 30d every 1d"),
                (
                    "spend_vs_habit",
                    "sum(amount) by card_id over 2h / mean(amount) by card_id over 30d every 1d",
                ),
                (
                    "log_spend_vs_habit",
                    "log(sum(amount) by card_id over 2h / mean(amount) by card_id over 30d every 1d)",
                ),
            ],
        )
        .unwrap();
        // The divisor's window sets how long the state matters, and its field is read.
        assert_eq!(s.horizon_ms(0), 30 * 86_400_000);
        assert!(s.fields().contains(&"amount"));
        // The mean's accumulator is shared with the plain feature: one slot for both windows.
        assert_eq!(s.accumulators[0].len(), 2);
        let mut st = vec![EntityState::default()];
        let day = 86_400;
        // No history: 0 (and its logarithm at the floor).
        let v = event(&s, &mut st, 0, 10.0, 1.0);
        assert_eq!((v[1], v[2]), (0.0, libm::log(LOG_FLOOR)));
        // A habit of 10, then a burst two days later: the burst's spend against the habit.
        event(&s, &mut st, day, 10.0, 1.0);
        event(&s, &mut st, 2 * day, 30.0, 1.0);
        let v = event(&s, &mut st, 2 * day + 600, 40.0, 1.0);
        assert_eq!(v[0], 50.0 / 3.0);
        assert_eq!(v[1], 30.0 / (50.0 / 3.0));
        assert_eq!(v[2], libm::log(30.0 / (50.0 / 3.0)));
        let v = event(&s, &mut st, 2 * day + 1200, 5.0, 1.0);
        assert_eq!(v[1], 70.0 / (90.0 / 4.0));
        // Past the 2-hour window only the habit is left.
        let v = event(&s, &mut st, 3 * day, 5.0, 1.0);
        assert_eq!(v[1], 0.0);
    }

    #[test]
    fn windows_count_earlier_arrivals_in_whole_buckets() {
        let s = spec();
        let mut st = vec![EntityState::default(); 2];
        let v = event(&s, &mut st, 1000 * 60, 10.0, 1.0);
        assert_eq!(v[..6], [0.0, 0.0, 0.0, 0.0, SINCE_LAST_CAP_SECS, 1.0]);
        let v = event(&s, &mut st, 1000 * 60 + 30, 30.0, 2.0);
        assert_eq!(v[..6], [1.0, 10.0, 10.0, 1.0, 30.0, 3.0]);
        // 9 minutes later (bucket 9 after the first): both still in the 10-minute window.
        let v = event(&s, &mut st, 1000 * 60 + 9 * 60, 20.0, 2.0);
        assert_eq!(v[..6], [2.0, 40.0, 20.0, 2.0, 510.0, 1.0]);
        // 10 buckets after the first: it has left the 10-minute window, not the hour.
        let v = event(&s, &mut st, 1000 * 60 + 10 * 60, 5.0, 3.0);
        assert_eq!(v[0], 1.0);
        assert_eq!(v[1], 60.0);
        // A late event, in a bucket the 10-minute accumulator no longer keeps: nothing counts
        // for it there, it is not recorded there, and since_last clamps to 0. The hour still
        // counts only the two events in its own bucket (later buckets are not its window).
        let v = event(&s, &mut st, 1000 * 60 + 5, 1.0, 1.0);
        assert_eq!(v[..5], [0.0, 40.0, 20.0, 2.0, 0.0]);
        let v = event(&s, &mut st, 1000 * 60 + 10 * 60 + 1, 1.0, 1.0);
        assert_eq!(
            v[0], 2.0,
            "the late event was not recorded in the 10-minute buckets"
        );
        assert_eq!(v[1], 66.0, "but it was in the hour's");
        // The other entity's slots are untouched.
        assert_eq!(v[6], 0.0);
    }

    #[test]
    fn a_state_past_its_horizon_is_dropped_and_changes_nothing() {
        let s = VelocitySpec::new(
            "timestamp",
            &[
                ("n", "count by card_id over 10m"),
                ("total", "sum(amount) by card_id over 1h every 6m"),
                ("since", "seconds_since_last by ip"),
            ],
        )
        .unwrap();
        assert_eq!(s.horizon_ms(0), 3_600_000);
        assert_eq!(s.horizon_ms(1), 30 * 86_400_000);
        let minute = 60_000;
        let paid = |x: f64| P(vec![("amount", Value::Number(x))]);
        let mut old = EntityState::default();
        assert!(s.outlived(0, &old, 0), "an empty state has nothing to give");
        let mut v = vec![0.0; 3];
        for m in [0, 5, 30] {
            s.observe(0, &mut old, m * minute, &paid(10.0), &mut v);
        }
        assert_eq!(old.last_ms(), Some(30 * minute));
        // Outlived strictly after one horizon (bucket edges can end a window's reach earlier).
        assert!(!s.outlived(0, &old, 90 * minute));
        assert!(s.outlived(0, &old, 90 * minute + 1));
        // Past the horizon: the no-history values, and the state is the one a new card gets.
        let later = 90 * minute + 1;
        let (mut kept, mut fresh) = (old.clone(), EntityState::default());
        let (mut a, mut b) = (vec![7.0; 3], vec![7.0; 3]);
        s.observe(0, &mut kept, later, &P(vec![]), &mut a);
        s.observe(0, &mut fresh, later, &P(vec![]), &mut b);
        assert_eq!(a, b);
        assert_eq!(a[..2], [0.0, 0.0]);
        assert_eq!(
            kept, fresh,
            "an event without an amount keeps no old sum buckets"
        );
        // Within the horizon the old events still count.
        let mut within = old.clone();
        s.observe(0, &mut within, 55 * minute, &paid(1.0), &mut a);
        assert_eq!(a[..2], [0.0, 30.0]);
    }

    #[test]
    fn slots_bound_the_keys_and_fingerprints_tell_entities_apart() {
        let s = VelocitySpec::new("timestamp", &[("n", "count by card_id over 10m")]).unwrap();
        let (key, fp) = s.state_slot(0, "c1", 1 << 20);
        assert_eq!(fp, xxhash_rust::xxh3::xxh3_64(b"c1"));
        assert_eq!(key, format!("vel/card_id/s{:x}", fp % (1 << 20)));
        let keys: std::collections::HashSet<String> = (0..1000)
            .map(|i| s.state_slot(0, &format!("card-{i}"), 16).0)
            .collect();
        assert_eq!(keys.len(), 16);
        // A slot count of 0 is taken as 1, not a division by zero.
        assert_eq!(s.state_slot(0, "c1", 0).0, "vel/card_id/s0");
    }

    #[test]
    fn seen_counts_the_buckets_that_had_this_value_and_shares_distincts_state() {
        let s = VelocitySpec::new(
            "timestamp",
            &[
                ("seen", "seen(cat) by card_id over 1h every 6m"),
                ("cats", "distinct(cat) by card_id over 1h every 6m"),
            ],
        )
        .unwrap();
        // One accumulator for both: the state format does not change.
        assert_eq!(s.accumulators[0].len(), 1);
        assert_eq!(
            "seen( cat ) by card_id over 1h every 6m"
                .parse::<Definition>()
                .unwrap()
                .to_string(),
            "seen(cat) by card_id over 1h every 6m"
        );
        let mut st = vec![EntityState::default(); 1];
        let at = |st: &mut Vec<EntityState>, minute: i64, cat: f64| {
            let p = P(vec![("cat", Value::Number(cat))]);
            let mut v = vec![0.0; 2];
            s.observe(0, &mut st[0], minute * 60_000, &p, &mut v);
            v
        };
        assert_eq!(at(&mut st, 0, 1.0), [0.0, 0.0]); // new
        assert_eq!(at(&mut st, 1, 1.0), [1.0, 1.0]); // seen in one bucket
        assert_eq!(at(&mut st, 7, 1.0), [1.0, 1.0]); // the next bucket: still one before
        assert_eq!(at(&mut st, 8, 2.0), [0.0, 1.0]); // another value: new
        assert_eq!(at(&mut st, 9, 1.0), [2.0, 2.0]);
        // An hour on, the old buckets have left the window.
        assert_eq!(at(&mut st, 80, 1.0), [0.0, 0.0]);
        // No value: counts as not seen.
        let p = P(vec![]);
        let mut v = vec![9.0; 2];
        s.observe(0, &mut st[0], 81 * 60_000, &p, &mut v);
        assert_eq!(v[0], 0.0);
    }

    #[test]
    fn log_features_are_the_logarithm_of_the_same_numbers() {
        let features = [
            ("n", "count by card_id over 10m"),
            ("since", "seconds_since_last by card_id"),
            ("ratio", "amount / mean(amount) by card_id over 1h"),
        ];
        let logged: Vec<(String, String)> = features
            .iter()
            .map(|(n, d)| {
                let (head, rest) = d.split_once(" by ").unwrap();
                (format!("log_{n}"), format!("log({head}) by {rest}"))
            })
            .collect();
        let mut all: Vec<(String, String)> = features
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_string()))
            .collect();
        all.extend(logged);
        let s = VelocitySpec::new("timestamp", &all).unwrap();
        let mut st = vec![EntityState::default()];
        // No history: the logarithm of each no-history value (0 raised to the floor).
        let v = event(&s, &mut st, 60, 10.0, 1.0);
        assert_eq!(v[3], libm::log(LOG_FLOOR));
        assert_eq!(v[4], libm::log(SINCE_LAST_CAP_SECS));
        assert_eq!(v[5], 0.0);
        for (i, t) in [(1, 90), (2, 150), (3, 150), (4, 4000)] {
            let v = event(&s, &mut st, t, 0.5 * f64::from(i), 1.0);
            for k in 0..3 {
                assert_eq!(
                    v[3 + k],
                    libm::log(v[k].max(LOG_FLOOR)),
                    "event {i} feature {k}"
                );
            }
        }
    }

    #[test]
    fn state_round_trips_and_rejects_corruption() {
        let s = spec();
        let mut st = vec![EntityState::default(); 2];
        for i in 0..50 {
            event(
                &s,
                &mut st,
                10_000 + i * 37,
                f64::from(i as u32),
                (i % 7) as f64,
            );
        }
        let bytes = st[0].encode();
        assert_eq!(EntityState::decode(&bytes).unwrap(), st[0]);
        for cut in [0, 1, 5, bytes.len() - 1] {
            assert!(EntityState::decode(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(EntityState::decode(&longer).is_err());
        let mut v2 = bytes;
        v2[0] = 9;
        assert!(EntityState::decode(&v2).is_err());
    }

    #[test]
    fn payload_checks_name_the_field() {
        let s = spec();
        let p = P(vec![("card_id", Value::Number(5.0))]);
        assert_eq!(
            s.entity_id(&p, 0).unwrap_err().to_string(),
            "field \"card_id\" must be a string (an entity id)"
        );
        let p = P(vec![
            ("card_id", Value::Text("  AB-1 ")),
            ("timestamp", Value::Text("2024-01-01T00:00:01.5+01:00")),
        ]);
        assert_eq!(s.entity_id(&p, 0).unwrap().as_deref(), Some("ab-1"));
        assert_eq!(s.event_time(&p, 7).unwrap(), 1_704_063_601_500);
        assert_eq!(s.event_time(&P(vec![]), 7).unwrap(), 7);
        let p = P(vec![("timestamp", Value::Text("yesterday"))]);
        assert!(s.check(&p).is_err());
    }
}
