//! Tokens of a `when` expression, each with its byte span (for error positions).

use crate::ast::CmpOp;
use crate::error::{ParseError, ParseErrorKind};

/// One token. Text borrows the source except for strings, whose escapes are resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'s> {
    Ident(&'s str),
    Number(f64),
    Str(String),
    And,
    Or,
    Not,
    In,
    True,
    False,
    Open,
    Close,
    Cmp(CmpOp),
}

/// A token and where it is: `start..end` in bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spanned<'s> {
    pub tok: Tok<'s>,
    pub start: usize,
    pub end: usize,
}

/// The reserved words; everything else that looks like a name is a variable or list name.
pub(crate) const KEYWORDS: [&str; 6] = ["and", "or", "not", "in", "true", "false"];

pub(crate) fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

/// Whether `s` is a valid identifier (and not a keyword).
pub(crate) fn is_ident(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_ident_start(b[0])
        && b[1..].iter().all(|&c| is_ident_continue(c))
        && !KEYWORDS.contains(&s)
}

/// Splits `src` into tokens.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Spanned<'_>>, ParseError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match b {
            b'(' => {
                i += 1;
                Tok::Open
            }
            b')' => {
                i += 1;
                Tok::Close
            }
            b'<' | b'>' | b'=' | b'!' => {
                let (op, len) = comparison(&bytes[i..]).ok_or_else(|| {
                    ParseError::new(ParseErrorKind::UnexpectedChar(char::from(b)), start)
                })?;
                i += len;
                Tok::Cmp(op)
            }
            b'\'' | b'"' => {
                let (text, len) = string(src, start)?;
                i += len;
                Tok::Str(text)
            }
            b'0'..=b'9' | b'.' | b'+' | b'-' => {
                let len = number_len(&bytes[i..]);
                let text = &src[start..start + len];
                i += len;
                // A number glued to a name (`5abc`, `1.2.3`) is a typo, not two tokens.
                let glued = bytes.get(i).is_some_and(|&c| is_ident_continue(c));
                match text.parse::<f64>() {
                    Ok(v) if v.is_finite() && !glued => Tok::Number(v),
                    _ => {
                        let end = if glued { ident_end(bytes, i) } else { i };
                        let bad = src[start..end.max(start + 1)].to_owned();
                        return Err(ParseError::new(ParseErrorKind::InvalidNumber(bad), start));
                    }
                }
            }
            _ if is_ident_start(b) => {
                i = ident_end(bytes, i);
                keyword_or_ident(&src[start..i])
            }
            _ => {
                let c = src[start..].chars().next().unwrap_or('\u{fffd}');
                return Err(ParseError::new(ParseErrorKind::UnexpectedChar(c), start));
            }
        };
        out.push(Spanned { tok, start, end: i });
    }
    Ok(out)
}

fn ident_end(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|&c| is_ident_continue(c)) {
        i += 1;
    }
    i
}

fn keyword_or_ident(word: &str) -> Tok<'_> {
    match word {
        "and" => Tok::And,
        "or" => Tok::Or,
        "not" => Tok::Not,
        "in" => Tok::In,
        "true" => Tok::True,
        "false" => Tok::False,
        _ => Tok::Ident(word),
    }
}

fn comparison(rest: &[u8]) -> Option<(CmpOp, usize)> {
    let second_eq = rest.get(1) == Some(&b'=');
    match (rest.first()?, second_eq) {
        (b'<', true) => Some((CmpOp::Le, 2)),
        (b'<', false) => Some((CmpOp::Lt, 1)),
        (b'>', true) => Some((CmpOp::Ge, 2)),
        (b'>', false) => Some((CmpOp::Gt, 1)),
        (b'=', true) => Some((CmpOp::Eq, 2)),
        (b'!', true) => Some((CmpOp::Ne, 2)),
        _ => None,
    }
}

/// Length of the longest prefix shaped like `[+-]? digits [. digits] [(e|E) [+-]? digits]`.
/// Whether it is a valid number is left to `f64::from_str`.
fn number_len(rest: &[u8]) -> usize {
    let digits = |from: usize| {
        rest[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut i = usize::from(matches!(rest.first(), Some(b'+' | b'-')));
    i += digits(i);
    if rest.get(i) == Some(&b'.') {
        i += 1;
        i += digits(i);
    }
    if matches!(rest.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(rest.get(i + 1), Some(b'+' | b'-')));
        let exp = digits(i + 1 + sign);
        if exp > 0 {
            i += 1 + sign + exp;
        }
    }
    i
}

/// A quoted string starting at `start`; returns its text and its length in the source.
fn string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    let mut chars = src[start..].char_indices();
    let quote = chars.next().map_or('"', |(_, c)| c);
    let mut text = String::new();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\'' | '\\'))) => text.push(e),
                Some((_, e)) => {
                    return Err(ParseError::new(ParseErrorKind::BadEscape(e), start + at));
                }
                None => break,
            },
            c if c == quote => return Ok((text, at + c.len_utf8())),
            c => text.push(c),
        }
    }
    Err(ParseError::new(ParseErrorKind::UnterminatedString, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok<'_>> {
        tokenize(src).unwrap().into_iter().map(|s| s.tok).collect()
    }

    fn err(src: &str) -> String {
        tokenize(src).unwrap_err().to_string()
    }

    #[test]
    fn numbers() {
        assert_eq!(
            toks("5 -0.5 1e3 +2 .5 3. 2E-2"),
            [5.0, -0.5, 1000.0, 2.0, 0.5, 3.0, 0.02].map(Tok::Number)
        );
        assert_eq!(err("5abc"), r#"invalid number "5abc" at byte 0"#);
        assert_eq!(err("x < 1.2.3"), r#"invalid number "1.2.3" at byte 4"#);
        assert_eq!(err("x < -"), r#"invalid number "-" at byte 4"#);
        assert_eq!(err("x < 1e999"), r#"invalid number "1e999" at byte 4"#);
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            toks(r#"'a"b' "c'd" 'e\'f' "g\\h" """#),
            ["a\"b", "c'd", "e'f", "g\\h", ""].map(|s| Tok::Str(s.to_owned()))
        );
        assert_eq!(
            err(r"x == 'a\n'"),
            r"unknown escape \n in a string at byte 7"
        );
        assert_eq!(err("x == 'abc"), "unterminated string at byte 5");
        assert_eq!(err(r"x == 'abc\"), "unterminated string at byte 5");
        // Multi-byte text is kept as is.
        assert_eq!(toks("'é'"), [Tok::Str("é".to_owned())]);
    }

    #[test]
    fn operators_keywords_idents() {
        assert_eq!(
            toks("a.b_1<=2 and not(x in l) or y != true"),
            [
                Tok::Ident("a.b_1"),
                Tok::Cmp(CmpOp::Le),
                Tok::Number(2.0),
                Tok::And,
                Tok::Not,
                Tok::Open,
                Tok::Ident("x"),
                Tok::In,
                Tok::Ident("l"),
                Tok::Close,
                Tok::Or,
                Tok::Ident("y"),
                Tok::Cmp(CmpOp::Ne),
                Tok::True,
            ]
        );
        // Keywords are case-sensitive.
        assert_eq!(toks("AND"), [Tok::Ident("AND")]);
        assert_eq!(err("a = 1"), r#"unexpected character "=" at byte 2"#);
        assert_eq!(err("a ! b"), r#"unexpected character "!" at byte 2"#);
        assert_eq!(err("a € b"), r#"unexpected character "€" at byte 2"#);
    }

    #[test]
    fn spans() {
        let t = tokenize("ab >= 'c'").unwrap();
        let spans: Vec<_> = t.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(spans, [(0, 2), (3, 5), (6, 9)]);
    }

    #[test]
    fn identifiers() {
        assert!(is_ident("blocked_cards") && is_ident("_x.y") && !is_ident("in"));
        assert!(!is_ident("1x") && !is_ident("") && !is_ident("a-b"));
    }
}
