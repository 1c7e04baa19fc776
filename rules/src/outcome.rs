//! What a rule (or the default) decides.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A decision. Ordered by severity, `Allow < Review < Block`, so `max` picks the most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Reject the transaction.
    Block,
    /// Hold the transaction for a human (or a slower check).
    Review,
    /// Let the transaction through.
    Allow,
}

impl Outcome {
    /// Every outcome, most severe first.
    pub const ALL: [Outcome; 3] = [Outcome::Block, Outcome::Review, Outcome::Allow];

    /// The lowercase name used in policy files and verdicts.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Block => "block",
            Outcome::Review => "review",
            Outcome::Allow => "allow",
        }
    }

    /// 0 for allow, 1 for review, 2 for block.
    const fn severity(self) -> u8 {
        match self {
            Outcome::Allow => 0,
            Outcome::Review => 1,
            Outcome::Block => 2,
        }
    }
}

impl PartialOrd for Outcome {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Outcome {
    fn cmp(&self, other: &Self) -> Ordering {
        self.severity().cmp(&other.severity())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not `block`, `review` or `allow` (exact, lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid outcome {0:?} (block, review, allow)")]
pub struct ParseOutcomeError(pub String);

impl FromStr for Outcome {
    type Err = ParseOutcomeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| ParseOutcomeError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for o in Outcome::ALL {
            assert_eq!(o.to_string().parse::<Outcome>(), Ok(o));
        }
        let err = "deny".parse::<Outcome>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid outcome "deny" (block, review, allow)"#
        );
        // Keywords are exact: no case folding.
        assert!("Block".parse::<Outcome>().is_err());
    }

    #[test]
    fn block_is_most_severe() {
        assert!(Outcome::Block > Outcome::Review && Outcome::Review > Outcome::Allow);
        assert_eq!(Outcome::ALL.into_iter().max(), Some(Outcome::Block));
    }
}
