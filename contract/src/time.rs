//! How a time is printed where it crosses a process boundary in an answer or an export: RFC
//! 3339 in UTC with exactly six fraction digits (microseconds, what PostgreSQL keeps). A fixed
//! width sorts as text; chrono's default trims trailing zeros, so `…15.225Z` (a whole
//! millisecond) came after `…15.225727Z`. Reading accepts any RFC 3339 time.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// `t` as answers print it: `2026-12-05T00:37:15.225000Z`.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `#[serde(with = "crate::time::micros")]` for a `DateTime<Utc>` field.
pub mod micros {
    use super::*;

    /// Prints [`format`].
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    /// Reads any RFC 3339 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }
}

/// `#[serde(with = "crate::time::micros_option")]` for an `Option<DateTime<Utc>>` field
/// (`null` when absent).
pub mod micros_option {
    use super::*;

    /// Prints [`format`], or `null`.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(*t)),
            None => s.serialize_none(),
        }
    }

    /// Reads any RFC 3339 time, or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<DateTime<Utc>>::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_with_six_fraction_digits_and_sort_as_text() {
        let at = |micros: i64| DateTime::from_timestamp_micros(micros).unwrap();
        // A whole millisecond, a microsecond time after it, a whole second after both.
        let (ms, us, s) = (
            at(1_764_895_035_225_000),
            at(1_764_895_035_225_727),
            at(1_764_895_036_000_000),
        );
        assert_eq!(format(ms), "2025-12-05T00:37:15.225000Z");
        assert_eq!(format(s), "2025-12-05T00:37:16.000000Z");
        assert!(format(ms) < format(us) && format(us) < format(s));
    }
}
