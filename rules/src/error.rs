//! Why a policy was rejected. Every message names the rule (or list) and what is wrong.

use thiserror::Error;

use crate::outcome::ParseOutcomeError;

/// A syntax error in a `when` expression, at a byte offset into that expression.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{kind} at byte {at}")]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// Byte offset into the `when` text of the offending token (its length at the end).
    pub at: usize,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind, at: usize) -> Self {
        Self { kind, at }
    }
}

/// The kinds of [`ParseError`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ParseErrorKind {
    /// A character that starts no token.
    #[error("unexpected character \"{0}\"")]
    UnexpectedChar(char),
    /// A quote with no closing quote.
    #[error("unterminated string")]
    UnterminatedString,
    /// A backslash escape other than `\"`, `\'` and `\\`.
    #[error("unknown escape \\{0} in a string")]
    BadEscape(char),
    /// Something number-like that is not a finite decimal number.
    #[error("invalid number \"{0}\"")]
    InvalidNumber(String),
    /// An operand was required.
    #[error("expected an operand{}{}", after_suffix(after.as_deref()), found_suffix(found.as_deref()))]
    ExpectedOperand {
        /// The token before the gap, `None` at the start of the expression.
        after: Option<String>,
        /// The token found instead, `None` at the end.
        found: Option<String>,
    },
    /// `in` must be followed by a list name.
    #[error("expected a list name after \"in\"{}", found_suffix(found.as_deref()))]
    ExpectedListName {
        /// The token found instead, `None` at the end.
        found: Option<String>,
    },
    /// A `not` after an operand must be followed by `in`.
    #[error("expected \"in\" after \"not\"{}", found_suffix(found.as_deref()))]
    ExpectedIn {
        /// The token found instead, `None` at the end.
        found: Option<String>,
    },
    /// A `(` that is never closed.
    #[error("expected \")\" to close \"(\" (byte {open}){}", found_suffix(found.as_deref()))]
    Unclosed {
        /// Where the `(` is.
        open: usize,
        /// The token found instead, `None` at the end.
        found: Option<String>,
    },
    /// A complete expression followed by more tokens.
    #[error("expected \"and\", \"or\" or the end, found \"{0}\"")]
    Trailing(String),
    /// Parentheses and `not` nested too deeply.
    #[error("nested deeper than {} levels", crate::MAX_DEPTH)]
    TooDeep,
}

fn after_suffix(after: Option<&str>) -> String {
    after.map_or_else(String::new, |a| format!(" after \"{a}\""))
}

fn found_suffix(found: Option<&str>) -> String {
    found.map_or_else(String::new, |f| format!(", found \"{f}\""))
}

/// Why [`crate::Policy::from_toml`] or [`crate::Policy::compile`] failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PolicyError {
    /// Not TOML, or TOML of the wrong shape (unknown key, wrong type, missing field).
    #[error("policy is not a valid TOML policy document: {0}")]
    Toml(#[from] toml::de::Error),
    /// Over one of the size limits.
    #[error("{what} is {found}, over the limit of {limit} (a policy must fit one key-value value)")]
    TooLarge {
        /// What was measured, with its unit.
        what: String,
        /// The limit.
        limit: usize,
        /// What was found.
        found: usize,
    },
    /// A rule name that is not `[a-z0-9_]+`.
    #[error("invalid rule name {name:?}: use lowercase letters, digits and \"_\"")]
    InvalidRuleName {
        /// The name as written.
        name: String,
    },
    /// Two rules with one name.
    #[error("duplicate rule name {name:?}")]
    DuplicateRule {
        /// The repeated name.
        name: String,
    },
    /// A list name that an expression could not refer to.
    #[error(
        "invalid list name {name:?}: use letters, digits, \"_\" and \".\", not starting with a digit, not a keyword"
    )]
    InvalidListName {
        /// The name as written.
        name: String,
    },
    /// A list member that is empty after trimming.
    #[error("list {list:?}: member {index} is empty")]
    EmptyMember {
        /// The list.
        list: String,
        /// Position of the member in the list (0-based).
        index: usize,
    },
    /// A rule whose `when` is empty or blank.
    #[error("rule {rule:?}: when is empty")]
    EmptyWhen {
        /// The rule.
        rule: String,
    },
    /// A rule whose `reason` is empty or blank (omit it to use the rule's name).
    #[error("rule {rule:?}: reason is empty (omit it to use the rule's name)")]
    EmptyReason {
        /// The rule.
        rule: String,
    },
    /// A `when` that does not parse.
    #[error("rule {rule:?}: when: {error}")]
    Syntax {
        /// The rule.
        rule: String,
        /// Where and what.
        #[source]
        error: ParseError,
    },
    /// `x in name` where no list is called `name`.
    #[error(
        "rule {rule:?}: unknown list {name:?} ({})",
        names_or(lists, "no lists are defined", "lists")
    )]
    UnknownList {
        /// The rule.
        rule: String,
        /// The name as written.
        name: String,
        /// The lists the policy defines, sorted.
        lists: Vec<String>,
    },
    /// An `outcome` (of a rule or a default) that is not block/review/allow.
    #[error("{context}: {error}")]
    InvalidOutcome {
        /// `rule "x"`, `default.anomaly` or `default.normal`.
        context: String,
        /// The bad value.
        #[source]
        error: ParseOutcomeError,
    },
    /// At compile time: a rule uses a variable the host does not supply.
    #[error(
        "rule {rule:?}: unknown variable {name:?} ({})",
        names_or(known, "no variables are known", "known")
    )]
    UnknownVariable {
        /// The first rule (in file order) that uses it.
        rule: String,
        /// The variable as written.
        name: String,
        /// What the host supplies, sorted and deduplicated.
        known: Vec<String>,
    },
}

fn names_or(names: &[String], none: &str, label: &str) -> String {
    if names.is_empty() {
        none.to_owned()
    } else {
        format!("{label}: {}", names.join(", "))
    }
}
