//! A policy bound to the host's variables, and the per-transaction evaluation.

use crate::ast::{CmpOp, Expr, Term};
use crate::list::List;
use crate::operand::Operand;
use crate::outcome::Outcome;

/// Reason of a default decision for an anomalous transaction.
pub const REASON_ANOMALOUS: &str = "model: anomalous";
/// Reason of a default decision for a normal transaction.
pub const REASON_NORMAL: &str = "model: normal";
/// Reason of a supervised model's block (no rule matched).
pub const REASON_FRAUD_BLOCK: &str = "model: fraud probability at or above the block threshold";
/// Reason of a supervised model's review (no rule matched).
pub const REASON_FRAUD_REVIEW: &str = "model: fraud probability at or above the review threshold";
/// Reason of a supervised model's allow (no rule matched).
pub const REASON_FRAUD_LOW: &str = "model: fraud probability below the review threshold";
/// Reason of a supervised model's allow in its stored review band when the review budget is
/// spent (model-format's `budget`: the threshold in force was raised).
pub const REASON_FRAUD_OVER_BUDGET: &str =
    "model: fraud probability in the review band, but the review budget is spent";

/// What a supervised model's verdict decides when no rule does, and why: the one mapping the
/// edge and the trainer's backtest share.
pub fn fraud_outcome(verdict: model_format::booster::Verdict) -> (Outcome, &'static str) {
    use model_format::booster::Verdict;
    match verdict {
        Verdict::Block => (Outcome::Block, REASON_FRAUD_BLOCK),
        Verdict::Review => (Outcome::Review, REASON_FRAUD_REVIEW),
        Verdict::Allow => (Outcome::Allow, REASON_FRAUD_LOW),
        Verdict::OverBudget => (Outcome::Allow, REASON_FRAUD_OVER_BUDGET),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompiledRule {
    pub expr: Expr<usize>,
    pub outcome: Outcome,
    pub reason: String,
}

/// A [`crate::Policy`] whose variables are resolved to positions in the host's value row
/// ([`crate::Policy::compile`]). Owns everything it needs; evaluating it does no lookups by
/// name and allocates only the `matched` vector (and only when a rule matches).
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) names: Vec<String>,
    pub(crate) lists: Vec<List>,
    pub(crate) anomaly: Outcome,
    pub(crate) normal: Outcome,
}

/// What a policy decided for one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// The first matching rule's outcome, else the default for the model's flag.
    pub decision: Outcome,
    /// The deciding rule's reason, else [`REASON_ANOMALOUS`] / [`REASON_NORMAL`].
    pub reason: &'a str,
    /// Index (into [`Compiled::rule_names`]) of every rule that matched, in file order.
    pub matched: Vec<u16>,
    /// Index of the rule that decided; `None` when the default did.
    pub by_rule: Option<usize>,
}

impl Compiled {
    /// Evaluates every rule against one transaction. `values[i]` is the value of the `i`-th
    /// name passed to [`crate::Policy::compile`]; positions past the end of `values` count as
    /// [`Operand::Missing`]. `is_anomaly` (the model's flag) picks the default decision.
    #[must_use]
    pub fn evaluate(&self, values: &[Operand<'_>], is_anomaly: bool) -> Verdict<'_> {
        let default = if is_anomaly {
            (self.anomaly, REASON_ANOMALOUS)
        } else {
            (self.normal, REASON_NORMAL)
        };
        self.evaluate_or(values, default)
    }

    /// [`Compiled::evaluate`] with the decision and reason to give when no rule matches: a
    /// supervised model's own verdict from its thresholds, which the policy's `default`
    /// (made for the forest's flag) does not replace.
    #[must_use]
    pub fn evaluate_or(
        &self,
        values: &[Operand<'_>],
        default: (Outcome, &'static str),
    ) -> Verdict<'_> {
        let mut matched = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if self.holds(&rule.expr, values) {
                // At most MAX_RULES (256) rules, so the index fits.
                matched.push(u16::try_from(i).unwrap_or(u16::MAX));
            }
        }
        let by_rule = matched.first().map(|&i| usize::from(i));
        let (decision, reason) = match by_rule.and_then(|i| self.rules.get(i)) {
            Some(rule) => (rule.outcome, rule.reason.as_str()),
            None => default,
        };
        Verdict {
            decision,
            reason,
            matched,
            by_rule,
        }
    }

    /// Rule names in file order; [`Verdict::matched`] and [`Verdict::by_rule`] index this.
    #[must_use]
    pub fn rule_names(&self) -> &[String] {
        &self.names
    }

    fn holds(&self, expr: &Expr<usize>, values: &[Operand<'_>]) -> bool {
        match expr {
            Expr::Or(xs) => xs.iter().any(|x| self.holds(x, values)),
            Expr::And(xs) => xs.iter().all(|x| self.holds(x, values)),
            Expr::Not(x) => !self.holds(x, values),
            Expr::Compare(l, op, r) => compare(value(l, values), *op, value(r, values)),
            Expr::In {
                term,
                list,
                negated,
            } => {
                let v = value(term, values);
                if is_unknown(v) {
                    return false;
                }
                self.lists.get(*list).is_some_and(|l| l.contains(v)) != *negated
            }
            Expr::Truthy(t) => match value(t, values) {
                Operand::Bool(b) => b,
                Operand::Number(n) => n != 0.0 && !n.is_nan(),
                Operand::Text(_) | Operand::Missing => false,
            },
        }
    }
}

fn value<'a>(term: &'a Term<usize>, values: &'a [Operand<'a>]) -> Operand<'a> {
    match term {
        Term::Var(i) => values.get(*i).copied().unwrap_or(Operand::Missing),
        Term::Number(n) => Operand::Number(*n),
        Term::Text(t) => Operand::Text(t),
        Term::Bool(b) => Operand::Bool(*b),
    }
}

/// Missing data and NaN (how missing numbers often arrive) never make a test true.
fn is_unknown(v: Operand<'_>) -> bool {
    match v {
        Operand::Missing => true,
        Operand::Number(n) => n.is_nan(),
        Operand::Text(_) | Operand::Bool(_) => false,
    }
}

/// The comparison semantics documented at the crate root.
pub(crate) fn compare(l: Operand<'_>, op: CmpOp, r: Operand<'_>) -> bool {
    if is_unknown(l) || is_unknown(r) {
        return false;
    }
    match (l, r) {
        (Operand::Number(a), Operand::Number(b)) => numeric(a, op, b),
        (Operand::Text(a), Operand::Text(b)) => match op {
            CmpOp::Eq => text_eq(a, b),
            CmpOp::Ne => !text_eq(a, b),
            _ => false,
        },
        (Operand::Bool(a), Operand::Bool(b)) => match op {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            _ => false,
        },
        (Operand::Number(a), Operand::Text(t)) => match parse_number(t) {
            Some(b) => numeric(a, op, b),
            None => op == CmpOp::Ne,
        },
        (Operand::Text(t), Operand::Number(b)) => match parse_number(t) {
            Some(a) => numeric(a, op, b),
            None => op == CmpOp::Ne,
        },
        // Values of different kinds (a flag and a number or text) are never equal.
        _ => op == CmpOp::Ne,
    }
}

fn numeric(a: f64, op: CmpOp, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return false;
    }
    match op {
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
    }
}

fn parse_number(t: &str) -> Option<f64> {
    t.trim().parse().ok()
}

fn text_eq(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operand::{Bool, Missing, Number, Text};

    const OPS: [CmpOp; 6] = [
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::Eq,
        CmpOp::Ne,
    ];

    /// The ops that hold, as their spellings.
    fn holding(l: Operand<'_>, r: Operand<'_>) -> Vec<&'static str> {
        OPS.into_iter()
            .filter(|&op| compare(l, op, r))
            .map(CmpOp::as_str)
            .collect()
    }

    #[test]
    fn numbers() {
        assert_eq!(holding(Number(1.0), Number(2.0)), ["<", "<=", "!="]);
        assert_eq!(holding(Number(2.0), Number(2.0)), ["<=", ">=", "=="]);
        assert_eq!(holding(Number(f64::NAN), Number(2.0)), Vec::<&str>::new());
        assert_eq!(
            holding(Number(f64::NAN), Number(f64::NAN)),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn text() {
        assert_eq!(holding(Text(" ACME "), Text("acme")), ["=="]);
        assert_eq!(holding(Text("a"), Text("b")), ["!="]);
        // No ordering on text.
        assert!(!compare(Text("a"), CmpOp::Lt, Text("b")));
    }

    #[test]
    fn number_against_text() {
        assert_eq!(holding(Number(5.0), Text(" 5.0 ")), ["<=", ">=", "=="]);
        assert_eq!(holding(Text("4"), Number(5.0)), ["<", "<=", "!="]);
        assert_eq!(holding(Number(5.0), Text("five")), ["!="]);
        assert_eq!(holding(Text("nan"), Number(5.0)), Vec::<&str>::new());
    }

    #[test]
    fn bools_and_mixed_kinds() {
        assert_eq!(holding(Bool(true), Bool(true)), ["=="]);
        assert_eq!(holding(Bool(true), Bool(false)), ["!="]);
        assert_eq!(holding(Bool(true), Number(1.0)), ["!="]);
        assert_eq!(holding(Text("true"), Bool(true)), ["!="]);
    }

    #[test]
    fn missing_never_compares() {
        for other in [Number(1.0), Text("x"), Bool(true), Missing] {
            assert_eq!(holding(Missing, other), Vec::<&str>::new());
            assert_eq!(holding(other, Missing), Vec::<&str>::new());
        }
    }
}
