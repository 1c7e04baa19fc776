//! The parsed form of a `when` expression.
//!
//! Generic over how a variable is named: `String` in a [`crate::Policy`] (as written),
//! `usize` in a [`crate::Compiled`] (an index into the host's values, resolved once).
//! `and`/`or` chains are flat vectors, so evaluation recursion is bounded by the nesting limit.

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[cfg(test)]
impl CmpOp {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }
}

/// A variable or a literal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Term<V> {
    Var(V),
    Number(f64),
    Text(String),
    Bool(bool),
}

/// A boolean expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr<V> {
    /// At least two alternatives.
    Or(Vec<Expr<V>>),
    /// At least two conjuncts.
    And(Vec<Expr<V>>),
    Not(Box<Expr<V>>),
    Compare(Term<V>, CmpOp, Term<V>),
    /// `term [not] in list`; `list` indexes the policy's lists.
    In {
        term: Term<V>,
        list: usize,
        negated: bool,
    },
    /// A bare operand used as a condition.
    Truthy(Term<V>),
}

impl<V> Term<V> {
    fn try_map<W, E>(&self, f: &mut impl FnMut(&V) -> Result<W, E>) -> Result<Term<W>, E> {
        Ok(match self {
            Term::Var(v) => Term::Var(f(v)?),
            Term::Number(n) => Term::Number(*n),
            Term::Text(t) => Term::Text(t.clone()),
            Term::Bool(b) => Term::Bool(*b),
        })
    }
}

impl<V> Expr<V> {
    /// Rewrites every variable with `f`, stopping at its first error.
    pub(crate) fn try_map<W, E>(
        &self,
        f: &mut impl FnMut(&V) -> Result<W, E>,
    ) -> Result<Expr<W>, E> {
        Ok(match self {
            Expr::Or(xs) => Expr::Or(xs.iter().map(|x| x.try_map(f)).collect::<Result<_, _>>()?),
            Expr::And(xs) => Expr::And(xs.iter().map(|x| x.try_map(f)).collect::<Result<_, _>>()?),
            Expr::Not(x) => Expr::Not(Box::new(x.try_map(f)?)),
            Expr::Compare(l, op, r) => Expr::Compare(l.try_map(f)?, *op, r.try_map(f)?),
            Expr::In {
                term,
                list,
                negated,
            } => Expr::In {
                term: term.try_map(f)?,
                list: *list,
                negated: *negated,
            },
            Expr::Truthy(t) => Expr::Truthy(t.try_map(f)?),
        })
    }

    /// Calls `f` on every variable, left to right as written.
    pub(crate) fn for_each_var<'a>(&'a self, f: &mut impl FnMut(&'a V)) {
        let mut term = |t: &'a Term<V>| {
            if let Term::Var(v) = t {
                f(v);
            }
        };
        match self {
            Expr::Or(xs) | Expr::And(xs) => {
                for x in xs {
                    x.for_each_var(f);
                }
            }
            Expr::Not(x) => x.for_each_var(f),
            Expr::Compare(l, _, r) => {
                term(l);
                term(r);
            }
            Expr::In { term: t, .. } | Expr::Truthy(t) => term(t),
        }
    }
}
