//! Allow/block lists: normalized members, looked up without allocating.

use std::cmp::Ordering;

use crate::MAX_MEMBER_BYTES;
use crate::operand::Operand;

/// One named list. Members are trimmed, ASCII-lowercased, sorted and deduplicated once, when
/// the policy is parsed, so a lookup is a binary search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct List {
    pub name: String,
    pub members: Vec<String>,
}

/// Why a member was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberError {
    Empty { index: usize },
    TooLong { index: usize, len: usize },
}

impl List {
    pub(crate) fn new(name: String, raw: &[String]) -> Result<Self, MemberError> {
        let mut members = Vec::with_capacity(raw.len());
        for (index, m) in raw.iter().enumerate() {
            let m = m.trim();
            if m.is_empty() {
                return Err(MemberError::Empty { index });
            }
            if m.len() > MAX_MEMBER_BYTES {
                return Err(MemberError::TooLong {
                    index,
                    len: m.len(),
                });
            }
            members.push(m.to_ascii_lowercase());
        }
        members.sort_unstable();
        members.dedup();
        Ok(Self { name, members })
    }

    /// Whether `value` is a member. Missing, bools and NaN are members of nothing.
    pub(crate) fn contains(&self, value: Operand<'_>) -> bool {
        match value {
            Operand::Text(t) => self.contains_text(t),
            Operand::Number(n) if !n.is_nan() => {
                let mut buf = StackBuf::default();
                // A number too long to format into the buffer is longer than any member.
                number_text(n, &mut buf).is_ok() && self.contains_text(buf.as_str())
            }
            _ => false,
        }
    }

    fn contains_text(&self, text: &str) -> bool {
        let key = text.trim().as_bytes();
        self.members
            .binary_search_by(|m| cmp_lowercased(m.as_bytes(), key))
            .is_ok()
    }
}

/// Compares an already-normalized member with `key` as if `key` were ASCII-lowercased.
fn cmp_lowercased(member: &[u8], key: &[u8]) -> Ordering {
    member
        .iter()
        .copied()
        .cmp(key.iter().map(u8::to_ascii_lowercase))
}

/// How a number is spelled for list lookups: integral values without a fraction (`5.0` → `5`,
/// `-0.0` → `0`), others with Rust's `{}` for `f64` (shortest round-trip, never an exponent).
pub(crate) fn number_text(n: f64, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    if n == 0.0 {
        out.write_str("0")
    } else {
        // `{}` already prints integral values without a fraction.
        write!(out, "{n}")
    }
}

/// A fixed buffer for [`number_text`]: lookups must not allocate.
struct StackBuf {
    bytes: [u8; MAX_MEMBER_BYTES],
    len: usize,
}

impl Default for StackBuf {
    fn default() -> Self {
        Self {
            bytes: [0; MAX_MEMBER_BYTES],
            len: 0,
        }
    }
}

impl StackBuf {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this never fails.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(members: &[&str]) -> List {
        let raw: Vec<String> = members.iter().map(|m| (*m).to_owned()).collect();
        List::new("l".to_owned(), &raw).unwrap()
    }

    fn spelled(n: f64) -> String {
        let mut s = String::new();
        number_text(n, &mut s).unwrap();
        s
    }

    #[test]
    fn normalizes_members_once() {
        let l = list(&["  Card-0001 ", "card-0001", "ACME"]);
        assert_eq!(l.members, ["acme", "card-0001"]);
        assert!(l.contains(Operand::Text("\tcard-0001\n")));
        assert!(l.contains(Operand::Text("AcMe")));
        assert!(!l.contains(Operand::Text("acm")));
        assert!(!l.contains(Operand::Text("acmee")));
    }

    #[test]
    fn numbers_are_spelled_as_integers_when_integral() {
        assert_eq!(spelled(5.0), "5");
        assert_eq!(spelled(-0.0), "0");
        assert_eq!(spelled(-3.0), "-3");
        assert_eq!(spelled(0.5), "0.5");
        assert_eq!(spelled(1e20), "100000000000000000000");
        let l = list(&["5", "0.5", "-3", "0"]);
        for n in [5.0, 0.5, -3.0, 0.0, -0.0] {
            assert!(l.contains(Operand::Number(n)), "{n}");
        }
        assert!(!l.contains(Operand::Number(5.5)));
        assert!(!l.contains(Operand::Number(f64::NAN)));
        // Longer than any member: no match, no allocation, no panic.
        assert!(!l.contains(Operand::Number(f64::MAX)));
    }

    #[test]
    fn bools_and_missing_are_members_of_nothing() {
        let l = list(&["true", "false", "missing"]);
        assert!(!l.contains(Operand::Bool(true)));
        assert!(!l.contains(Operand::Bool(false)));
        assert!(!l.contains(Operand::Missing));
    }

    #[test]
    fn rejects_bad_members() {
        let raw = ["a".to_owned(), "  ".to_owned()];
        assert_eq!(
            List::new("l".into(), &raw),
            Err(MemberError::Empty { index: 1 })
        );
        let long = ["x".repeat(MAX_MEMBER_BYTES + 1)];
        assert_eq!(
            List::new("l".into(), &long),
            Err(MemberError::TooLong {
                index: 0,
                len: MAX_MEMBER_BYTES + 1
            })
        );
        assert!(List::new("l".into(), &["x".repeat(MAX_MEMBER_BYTES)]).is_ok());
    }
}
