//! Recursive-descent parser for `when` expressions (grammar in the crate docs).

use crate::MAX_DEPTH;
use crate::ast::{Expr, Term};
use crate::error::{ParseError, ParseErrorKind};
use crate::lex::{Spanned, Tok, tokenize};

/// Why a `when` was rejected: its syntax, or a list it names that the policy lacks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WhenError {
    Syntax(ParseError),
    UnknownList(String),
}

impl From<ParseError> for WhenError {
    fn from(e: ParseError) -> Self {
        WhenError::Syntax(e)
    }
}

/// Parses `src`; `list` maps a list name to its index in the policy.
pub(crate) fn parse(
    src: &str,
    list: &dyn Fn(&str) -> Option<usize>,
) -> Result<Expr<String>, WhenError> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
        list,
    };
    let expr = p.or()?;
    match p.peek() {
        None => Ok(expr),
        Some(t) => {
            let found = p.text(t).to_owned();
            Err(p.err(ParseErrorKind::Trailing(found), t.start))
        }
    }
}

struct Parser<'s, 'l> {
    src: &'s str,
    toks: Vec<Spanned<'s>>,
    pos: usize,
    depth: usize,
    list: &'l dyn Fn(&str) -> Option<usize>,
}

impl<'s> Parser<'s, '_> {
    fn peek(&self) -> Option<&Spanned<'s>> {
        self.toks.get(self.pos)
    }

    fn peek_tok(&self) -> Option<&Tok<'s>> {
        self.peek().map(|t| &t.tok)
    }

    fn text(&self, t: &Spanned<'_>) -> &'s str {
        &self.src[t.start..t.end]
    }

    /// The source text of the token before the cursor (None at the start).
    fn prev_text(&self) -> Option<String> {
        let i = self.pos.checked_sub(1)?;
        self.toks.get(i).map(|t| self.text(t).to_owned())
    }

    /// What is at the cursor, for "found ..." (None at the end), and its position.
    fn found(&self) -> (Option<String>, usize) {
        match self.peek() {
            Some(t) => (Some(self.text(t).to_owned()), t.start),
            None => (None, self.src.len()),
        }
    }

    fn err(&self, kind: ParseErrorKind, at: usize) -> WhenError {
        WhenError::Syntax(ParseError::new(kind, at))
    }

    fn eat(&mut self, tok: &Tok<'_>) -> bool {
        if self.peek_tok() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr<String>, WhenError> {
        let mut xs = vec![self.and()?];
        while self.eat(&Tok::Or) {
            xs.push(self.and()?);
        }
        Ok(flatten(xs, Expr::Or))
    }

    fn and(&mut self) -> Result<Expr<String>, WhenError> {
        let mut xs = vec![self.unary()?];
        while self.eat(&Tok::And) {
            xs.push(self.unary()?);
        }
        Ok(flatten(xs, Expr::And))
    }

    /// Enters one nesting level (a `not` or a `(`) starting at byte `at`.
    fn descend(&mut self, at: usize) -> Result<(), WhenError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(ParseErrorKind::TooDeep, at));
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Expr<String>, WhenError> {
        let Some(start) = self.peek().filter(|t| t.tok == Tok::Not).map(|t| t.start) else {
            return self.primary();
        };
        self.descend(start)?;
        self.pos += 1;
        let inner = self.unary()?;
        self.depth -= 1;
        Ok(Expr::Not(Box::new(inner)))
    }

    fn primary(&mut self) -> Result<Expr<String>, WhenError> {
        if let Some(open) = self.peek().filter(|t| t.tok == Tok::Open).map(|t| t.start) {
            self.descend(open)?;
            self.pos += 1;
            let inner = self.or()?;
            if !self.eat(&Tok::Close) {
                let (found, at) = self.found();
                return Err(self.err(ParseErrorKind::Unclosed { open, found }, at));
            }
            self.depth -= 1;
            return Ok(inner);
        }
        let left = self.operand()?;
        match self.peek_tok() {
            Some(Tok::Cmp(op)) => {
                let op = *op;
                self.pos += 1;
                let right = self.operand()?;
                Ok(Expr::Compare(left, op, right))
            }
            Some(Tok::In) => {
                self.pos += 1;
                self.membership(left, false)
            }
            // `x not in l`; a `not` here can only start that.
            Some(Tok::Not) => {
                self.pos += 1;
                if !self.eat(&Tok::In) {
                    let (found, at) = self.found();
                    return Err(self.err(ParseErrorKind::ExpectedIn { found }, at));
                }
                self.membership(left, true)
            }
            _ => Ok(Expr::Truthy(left)),
        }
    }

    fn membership(&mut self, term: Term<String>, negated: bool) -> Result<Expr<String>, WhenError> {
        let Some(Tok::Ident(name)) = self.peek_tok() else {
            let (found, at) = self.found();
            return Err(self.err(ParseErrorKind::ExpectedListName { found }, at));
        };
        let name = *name;
        let list = (self.list)(name).ok_or_else(|| WhenError::UnknownList(name.to_owned()))?;
        self.pos += 1;
        Ok(Expr::In {
            term,
            list,
            negated,
        })
    }

    fn operand(&mut self) -> Result<Term<String>, WhenError> {
        let term = match self.peek_tok() {
            Some(Tok::Ident(v)) => Term::Var((*v).to_owned()),
            Some(Tok::Number(n)) => Term::Number(*n),
            Some(Tok::Str(s)) => Term::Text(s.clone()),
            Some(Tok::True) => Term::Bool(true),
            Some(Tok::False) => Term::Bool(false),
            _ => {
                let (found, at) = self.found();
                let after = self.prev_text();
                return Err(self.err(ParseErrorKind::ExpectedOperand { after, found }, at));
            }
        };
        self.pos += 1;
        Ok(term)
    }
}

/// One item stays itself; more become an `and`/`or` node.
fn flatten(mut xs: Vec<Expr<String>>, node: fn(Vec<Expr<String>>) -> Expr<String>) -> Expr<String> {
    match xs.pop() {
        Some(x) if xs.is_empty() => x,
        Some(x) => {
            xs.push(x);
            node(xs)
        }
        None => node(xs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::CmpOp;

    fn lists(name: &str) -> Option<usize> {
        ["blocked", "trusted"].iter().position(|l| *l == name)
    }

    fn p(src: &str) -> Expr<String> {
        parse(src, &lists).unwrap()
    }

    fn syntax(src: &str) -> String {
        match parse(src, &lists) {
            Err(WhenError::Syntax(e)) => e.to_string(),
            other => panic!("expected a syntax error for {src:?}, got {other:?}"),
        }
    }

    fn var(v: &str) -> Term<String> {
        Term::Var(v.to_owned())
    }

    fn truthy(v: &str) -> Expr<String> {
        Expr::Truthy(var(v))
    }

    #[test]
    fn precedence() {
        // `a or b and c` = `a or (b and c)`.
        assert_eq!(
            p("a or b and c"),
            Expr::Or(vec![truthy("a"), Expr::And(vec![truthy("b"), truthy("c")])])
        );
        assert_eq!(
            p("(a or b) and c"),
            Expr::And(vec![Expr::Or(vec![truthy("a"), truthy("b")]), truthy("c")])
        );
        // `not` binds tighter than `and`.
        assert_eq!(
            p("not a and b"),
            Expr::And(vec![Expr::Not(Box::new(truthy("a"))), truthy("b")])
        );
        // Chains are flat.
        assert_eq!(
            p("a and b and c"),
            Expr::And(vec![truthy("a"), truthy("b"), truthy("c")])
        );
    }

    #[test]
    fn comparisons_and_membership() {
        assert_eq!(
            p("amount >= -0.5"),
            Expr::Compare(var("amount"), CmpOp::Ge, Term::Number(-0.5))
        );
        assert_eq!(
            p("'x' != true"),
            Expr::Compare(Term::Text("x".into()), CmpOp::Ne, Term::Bool(true))
        );
        assert_eq!(
            p("card not in trusted"),
            Expr::In {
                term: var("card"),
                list: 1,
                negated: true
            }
        );
        assert_eq!(
            p("not card in blocked"),
            Expr::Not(Box::new(Expr::In {
                term: var("card"),
                list: 0,
                negated: false
            }))
        );
        assert_eq!(
            parse("x in nope", &lists),
            Err(WhenError::UnknownList("nope".into()))
        );
    }

    #[test]
    fn errors_have_positions() {
        assert_eq!(
            syntax("card_count_10m >="),
            r#"expected an operand after ">=" at byte 17"#
        );
        assert_eq!(
            syntax("a >= and b"),
            r#"expected an operand after ">=", found "and" at byte 5"#
        );
        assert_eq!(
            syntax("and"),
            r#"expected an operand, found "and" at byte 0"#
        );
        assert_eq!(
            syntax("a in"),
            r#"expected a list name after "in" at byte 4"#
        );
        assert_eq!(
            syntax("a in 5"),
            r#"expected a list name after "in", found "5" at byte 5"#
        );
        assert_eq!(
            syntax("a not b"),
            r#"expected "in" after "not", found "b" at byte 6"#
        );
        assert_eq!(
            syntax("(a or b"),
            r#"expected ")" to close "(" (byte 0) at byte 7"#
        );
        assert_eq!(
            syntax("a b"),
            r#"expected "and", "or" or the end, found "b" at byte 2"#
        );
        assert_eq!(
            syntax("a < b < c"),
            r#"expected "and", "or" or the end, found "<" at byte 6"#
        );
        assert_eq!(
            syntax("a AND b"),
            r#"expected "and", "or" or the end, found "AND" at byte 2"#
        );
        assert_eq!(
            syntax("(a) < 1"),
            r#"expected "and", "or" or the end, found "<" at byte 4"#
        );
        assert_eq!(
            syntax("a )"),
            r#"expected "and", "or" or the end, found ")" at byte 2"#
        );
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok, &lists).is_ok());
        let deep = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(
            syntax(&deep),
            format!("nested deeper than 32 levels at byte {MAX_DEPTH}")
        );
        let nots = format!("{}a", "not ".repeat(MAX_DEPTH + 1));
        assert!(syntax(&nots).starts_with("nested deeper than 32 levels"));
        // Depth is nesting, not count: many siblings are fine.
        let wide = vec!["(not a)"; 200].join(" or ");
        assert!(parse(&wide, &lists).is_ok());
    }
}
