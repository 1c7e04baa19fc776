#![deny(missing_docs)]
//! SecureFlow Edge decision rules: what happens to a transaction after the model has scored it.
//!
//! A policy is a small TOML document of ordered rules (`when` → block / review / allow) plus
//! allow/block lists and a default decision by the model's `is_anomaly` flag. The edge worker
//! evaluates it on every request; the trainer's backtest evaluates it over historical data.
//!
//! Why it is built this way:
//!
//! * **Parsed and validated once per instance, never per request.** [`Policy::from_toml`]
//!   checks everything that can be wrong with a document (TOML, every `when`, names, lists,
//!   limits) and [`Policy::compile`] resolves every variable name to a position in the host's
//!   value row. [`Compiled::evaluate`] then only walks a small tree: no parsing, no name lookups,
//!   no allocation per comparison or list lookup, no panics on any input.
//! * **One implementation for the edge and the backtest**, so a backtest says exactly what the
//!   edge would have done. No I/O; builds for `wasm32-wasip2`.
//! * **Missing data never triggers a rule by accident** (see the semantics below).
//!
//! # Document
//!
//! ```toml
//! [default]                  # decision when no rule matches
//! anomaly = "review"         # when the model says is_anomaly (default "review")
//! normal = "allow"           # otherwise (default "allow")
//!
//! [lists]                    # name -> members (strings)
//! blocked_cards = ["card-0001", "card-0042"]
//! trusted_merchants = ["acme"]
//!
//! [[rule]]
//! name = "blocked_card"      # [a-z0-9_]+, unique
//! when = "card_id in blocked_cards"
//! outcome = "block"          # block | review | allow
//! reason = "card is on the block list"   # optional; defaults to the rule's name
//! ```
//!
//! Unknown keys anywhere are errors. List names must be identifiers (below). Members must be
//! non-empty after trimming and at most [`MAX_MEMBER_BYTES`]; they are stored trimmed and
//! ASCII-lowercased, deduplicated.
//!
//! # `when` grammar
//!
//! ```text
//! expr       := or
//! or         := and ("or" and)*
//! and        := unary ("and" unary)*
//! unary      := "not" unary | primary
//! primary    := "(" expr ")" | comparison | membership | operand
//! comparison := operand ("<" | "<=" | ">" | ">=" | "==" | "!=") operand
//! membership := operand ["not"] "in" LISTNAME
//! operand    := NUMBER | STRING | "true" | "false" | IDENT
//! IDENT      := [A-Za-z_][A-Za-z0-9_.]*   (not one of: and or not in true false)
//! NUMBER     := [+-]? digits [. digits] [(e|E) [+-]? digits]   (finite)
//! STRING     := '...' or "..." with escapes \" \' \\ only
//! ```
//!
//! Keywords are case-sensitive lowercase. Identifiers name variables the host supplies
//! (payload fields, model and velocity features, `anomaly_score`, `risk_score`, `is_anomaly`);
//! a rule that uses `is_anomaly` needs the host to pass it as a variable too.
//! Parentheses and `not` together nest at most [`MAX_DEPTH`] deep.
//!
//! # Semantics
//!
//! * **Decision.** Every rule is evaluated; [`Verdict::matched`] lists all that match, in file
//!   order. The decision is the outcome of the *first* matching rule in file order (so an allow
//!   rule placed first overrides a later block: order rules by priority), with that rule's
//!   reason and [`Verdict::by_rule`] set. If none matches: `default.anomaly` when `is_anomaly`,
//!   else `default.normal`, with reason [`REASON_ANOMALOUS`] / [`REASON_NORMAL`] and
//!   `by_rule = None`. A host whose model has a supervised classifier passes that model's own
//!   verdict instead ([`Compiled::evaluate_or`]: block / review / allow by its thresholds on
//!   `fraud_probability`, reasons [`REASON_FRAUD_BLOCK`], [`REASON_FRAUD_REVIEW`],
//!   [`REASON_FRAUD_LOW`], [`REASON_FRAUD_OVER_BUDGET`]).
//! * **Unknown values.** [`Operand::Missing`], and a number that is NaN, make every comparison
//!   false (including `!=`), every `in` and every `not in` false, and are false as a bare
//!   operand.
//! * **Comparisons.** Number vs number: numeric. Text vs text: only `==` / `!=`, after trimming
//!   and ASCII-lowercasing both sides; `<`, `<=`, `>`, `>=` are false. Bool vs bool: `==` / `!=`
//!   only. Number vs text: if the trimmed text parses as an `f64`, numeric; else `!=` is true and
//!   the rest false. Any other pair of kinds (a bool against a number or text) is unequal: `!=`
//!   true, the rest false.
//! * **Membership.** `x in list`: text is trimmed and ASCII-lowercased, then looked up; a number
//!   is spelled as an integer when integral (`5.0` → `"5"`, `-0.0` → `"0"`) and with Rust's `{}`
//!   for `f64` otherwise (`0.5` → `"0.5"`), then looked up; a bool is in no list.
//!   `x not in list` is the negation, except that it is false for unknown values.
//! * **Bare operand.** True for `true` and for a nonzero number; false for text.
//! * **`not`** negates the boolean result of what follows. So `not (amount > 5)` is **true**
//!   when `amount` is missing: `amount > 5` is false, and `not false` is true. Write
//!   `amount <= 5` to keep a missing amount from matching.
//! * `and` / `or` short-circuit; there are no side effects, so that only saves time.
//!
//! # Example
//!
//! ```
//! use rules::{Operand, Outcome, Policy};
//!
//! let policy = Policy::from_toml(r#"
//!     [lists]
//!     blocked_cards = ["card-0001"]
//!
//!     [[rule]]
//!     name = "blocked_card"
//!     when = "card_id in blocked_cards"
//!     outcome = "block"
//!
//!     [[rule]]
//!     name = "card_testing"
//!     when = "card_count_10m >= 5 and amount < 5"
//!     outcome = "block"
//! "#)?;
//! let known = policy.variables(); // ["card_id", "card_count_10m", "amount"]
//! let compiled = policy.compile(&known)?;
//!
//! let row = [Operand::Text(" CARD-0001"), Operand::Number(1.0), Operand::Number(20.0)];
//! let verdict = compiled.evaluate(&row, false);
//! assert_eq!(verdict.decision, Outcome::Block);
//! assert_eq!(verdict.reason, "blocked_card");
//!
//! let verdict = compiled.evaluate(&[Operand::Missing, Operand::Missing, Operand::Missing], true);
//! assert_eq!((verdict.decision, verdict.reason), (Outcome::Review, "model: anomalous"));
//! # Ok::<(), rules::PolicyError>(())
//! ```

mod ast;
mod error;
mod eval;
mod lex;
mod list;
mod operand;
mod outcome;
mod parse;
mod policy;

pub use error::{ParseError, ParseErrorKind, PolicyError};
pub use eval::{
    Compiled, REASON_ANOMALOUS, REASON_FRAUD_BLOCK, REASON_FRAUD_LOW, REASON_FRAUD_OVER_BUDGET,
    REASON_FRAUD_REVIEW, REASON_NORMAL, Verdict, fraud_outcome,
};
pub use operand::Operand;
pub use outcome::{Outcome, ParseOutcomeError};
pub use policy::Policy;

// Limits keep a policy small enough to store as one key-value value and cheap to evaluate on
// every request.

/// Most rules a policy may have.
pub const MAX_RULES: usize = 256;
/// Longest `when` expression, in bytes.
pub const MAX_WHEN_BYTES: usize = 4096;
/// Deepest nesting of parentheses and `not` in one `when`.
pub const MAX_DEPTH: usize = 32;
/// Most lists a policy may define.
pub const MAX_LISTS: usize = 64;
/// Most members over all lists together (counted as written, before deduplication).
pub const MAX_MEMBERS: usize = 100_000;
/// Longest list member, in bytes after trimming.
pub const MAX_MEMBER_BYTES: usize = 256;
/// Largest policy document, in bytes (1 MiB).
pub const MAX_POLICY_BYTES: usize = 1_048_576;
