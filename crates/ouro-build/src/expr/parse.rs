//! Lexer, recursive-descent parser and `${{ }}` template scanner. Every offset is a byte offset
//! into the source the caller gave (template parts are parsed with their base offset).

use super::value::{Value, parse_number};
use super::{
    Accessor, CONTEXTS, CmpOp, Expr, ExprError, ExprKind, Func, MAX_DEPTH, MAX_EXPR_LEN,
    MAX_TEMPLATE_LEN, Part, Template,
};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Number(f64),
    Str(String),
    Ident(String),
    Dot,
    Star,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
    Not,
    Cmp(CmpOp),
    And,
    Or,
    Eof,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Number(_) => "a number".into(),
        Tok::Str(_) => "a string".into(),
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Dot => "`.`".into(),
        Tok::Star => "`*`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Not => "`!`".into(),
        Tok::Cmp(op) => format!("`{}`", op.as_str()),
        Tok::And => "`&&`".into(),
        Tok::Or => "`||`".into(),
        Tok::Eof => "the end of the expression".into(),
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// Splits `src` into tokens; offsets are `base + index`.
fn lex(src: &str, base: usize) -> Result<Vec<(Tok, usize)>, ExprError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let at = base + i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let two = if i + 1 < b.len() { b[i + 1] } else { 0 };
        let (tok, len) = match c {
            b'.' if !two.is_ascii_digit() => (Tok::Dot, 1),
            b'*' => (Tok::Star, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b',' => (Tok::Comma, 1),
            b'!' if two == b'=' => (Tok::Cmp(CmpOp::Ne), 2),
            b'!' => (Tok::Not, 1),
            b'=' if two == b'=' => (Tok::Cmp(CmpOp::Eq), 2),
            b'<' if two == b'=' => (Tok::Cmp(CmpOp::Le), 2),
            b'<' => (Tok::Cmp(CmpOp::Lt), 1),
            b'>' if two == b'=' => (Tok::Cmp(CmpOp::Ge), 2),
            b'>' => (Tok::Cmp(CmpOp::Gt), 1),
            b'&' if two == b'&' => (Tok::And, 2),
            b'|' if two == b'|' => (Tok::Or, 2),
            b'=' => {
                return Err(ExprError::new(
                    at,
                    "expr.syntax",
                    "`=` is not an operator: compare with `==`",
                ));
            }
            b'&' | b'|' => {
                let op = c as char;
                return Err(ExprError::new(
                    at,
                    "expr.syntax",
                    format!("`{op}` is not an operator: did you mean `{op}{op}`?"),
                ));
            }
            b'\'' => {
                let (s, len) = lex_string(src, i, base)?;
                (Tok::Str(s), len)
            }
            b'"' => {
                return Err(ExprError::new(
                    at,
                    "expr.syntax",
                    "strings use single quotes: 'text' (write '' for a quote inside)",
                ));
            }
            b'0'..=b'9' | b'.' => lex_number(src, i, base)?,
            b'-' | b'+' if two.is_ascii_digit() || two == b'.' => lex_number(src, i, base)?,
            c if is_ident_start(c) => {
                let mut j = i + 1;
                while j < b.len() && is_ident_char(b[j]) {
                    j += 1;
                }
                (Tok::Ident(src[i..j].to_string()), j - i)
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                let hint = match ch {
                    '-' | '+' => " (there is no arithmetic)",
                    '?' | ':' => " (write `cond && a || b` for a choice)",
                    '$' => " (`${{ }}` wraps a whole expression; it cannot appear inside one)",
                    _ => "",
                };
                return Err(ExprError::new(
                    at,
                    "expr.syntax",
                    format!("unexpected character `{ch}`{hint}"),
                ));
            }
        };
        out.push((tok, at));
        i += len;
    }
    out.push((Tok::Eof, base + b.len()));
    Ok(out)
}

/// A single-quoted string starting at `src[i]`; `''` is a quote.
fn lex_string(src: &str, i: usize, base: usize) -> Result<(String, usize), ExprError> {
    let b = src.as_bytes();
    let mut s = String::new();
    let mut j = i + 1;
    let mut run = j;
    loop {
        if j >= b.len() {
            return Err(ExprError::new(
                base + i,
                "expr.unterminated_string",
                "this string has no closing `'`",
            ));
        }
        if b[j] == b'\'' {
            s.push_str(&src[run..j]);
            if j + 1 < b.len() && b[j + 1] == b'\'' {
                s.push('\'');
                j += 2;
                run = j;
                continue;
            }
            return Ok((s, j + 1 - i));
        }
        j += 1;
    }
}

fn lex_number(src: &str, i: usize, base: usize) -> Result<(Tok, usize), ExprError> {
    let b = src.as_bytes();
    let mut j = i;
    // Take the longest run that could belong to a number, then validate it as a whole.
    while j < b.len() {
        let c = b[j];
        let sign_after_e =
            (c == b'-' || c == b'+') && j > i && matches!(b[j - 1], b'e' | b'E') && !is_hex(src, i);
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || sign_after_e || j == i {
            j += 1;
        } else {
            break;
        }
    }
    let text = &src[i..j];
    match parse_number(text) {
        Some(n) if !text.is_empty() => Ok((Tok::Number(n), j - i)),
        _ => Err(ExprError::new(
            base + i,
            "expr.bad_number",
            format!("`{text}` is not a number (decimal like 1.5e3 or hex like 0xff)"),
        )),
    }
}

fn is_hex(src: &str, i: usize) -> bool {
    let t = src[i..].trim_start_matches(['-', '+']);
    t.starts_with("0x") || t.starts_with("0X")
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

pub(crate) fn parse_expr_at(src: &str, base: usize) -> Result<Expr, ExprError> {
    if src.len() > MAX_EXPR_LEN {
        return Err(ExprError::new(
            base,
            "expr.too_long",
            format!(
                "this expression is {} bytes; the limit is {MAX_EXPR_LEN}",
                src.len()
            ),
        ));
    }
    if src.trim().is_empty() {
        return Err(ExprError::new(
            base,
            "expr.empty",
            "the expression is empty",
        ));
    }
    let toks = lex(src, base)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    let (t, at) = p.peek_full();
    if *t != Tok::Eof {
        let msg = format!("expected an operator or the end, found {}", describe(t));
        return Err(ExprError::new(at, "expr.syntax", msg));
    }
    Ok(e)
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn peek_full(&self) -> (&Tok, usize) {
        let (t, at) = &self.toks[self.pos];
        (t, *at)
    }

    fn next(&mut self) -> (Tok, usize) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn enter(&mut self, at: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::new(
                at,
                "expr.too_deep",
                format!("the expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<usize, ExprError> {
        let (t, at) = self.peek_full();
        if *t == want {
            self.next();
            Ok(at)
        } else {
            let msg = format!("expected {what}, found {}", describe(t));
            Err(ExprError::new(at, "expr.syntax", msg))
        }
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        let at = self.peek_full().1;
        self.enter(at)?;
        let e = self.or();
        self.leave();
        e
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let first = self.and()?;
        if *self.peek() != Tok::Or {
            return Ok(first);
        }
        let offset = first.offset;
        let mut items = vec![first];
        while *self.peek() == Tok::Or {
            self.next();
            items.push(self.and()?);
        }
        Ok(Expr {
            offset,
            kind: ExprKind::Or(items),
        })
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let first = self.equality()?;
        if *self.peek() != Tok::And {
            return Ok(first);
        }
        let offset = first.offset;
        let mut items = vec![first];
        while *self.peek() == Tok::And {
            self.next();
            items.push(self.equality()?);
        }
        Ok(Expr {
            offset,
            kind: ExprKind::And(items),
        })
    }

    fn equality(&mut self) -> Result<Expr, ExprError> {
        self.binary_chain(true)
    }

    fn comparison(&mut self) -> Result<Expr, ExprError> {
        self.binary_chain(false)
    }

    /// `==`/`!=` chains over comparisons, or `< <= > >=` chains over unary expressions. Each
    /// link nests the tree one level deeper, so links count against the depth budget.
    fn binary_chain(&mut self, equality: bool) -> Result<Expr, ExprError> {
        let mut lhs = if equality {
            self.comparison()?
        } else {
            self.unary()?
        };
        let mut links = 0;
        loop {
            let (op, at) = match self.peek_full() {
                (Tok::Cmp(op), at) if equality == matches!(op, CmpOp::Eq | CmpOp::Ne) => (*op, at),
                _ => break,
            };
            links += 1;
            if self.depth + links > MAX_DEPTH {
                return Err(ExprError::new(
                    at,
                    "expr.too_deep",
                    format!("the expression nests deeper than {MAX_DEPTH} levels"),
                ));
            }
            self.next();
            let rhs = if equality {
                self.comparison()?
            } else {
                self.unary()?
            };
            lhs = Expr {
                offset: lhs.offset,
                kind: ExprKind::Compare {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        let (t, at) = self.peek_full();
        if *t == Tok::Not {
            self.next();
            self.enter(at)?;
            let inner = self.unary();
            self.leave();
            return Ok(Expr {
                offset: at,
                kind: ExprKind::Not(Box::new(inner?)),
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let base = self.primary()?;
        let mut path = Vec::new();
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.next();
                    let (t, at) = self.next();
                    match t {
                        Tok::Ident(name) => path.push(Accessor::Prop(name)),
                        Tok::Star => path.push(Accessor::Star),
                        other => {
                            let msg = format!(
                                "expected a property name or `*` after `.`, found {}",
                                describe(&other)
                            );
                            return Err(ExprError::new(at, "expr.syntax", msg));
                        }
                    }
                }
                Tok::LBracket => {
                    self.next();
                    if *self.peek() == Tok::Star {
                        self.next();
                        path.push(Accessor::Star);
                    } else {
                        let idx = self.expr()?;
                        path.push(Accessor::Index(idx));
                    }
                    self.expect(Tok::RBracket, "`]`")?;
                }
                _ => break,
            }
        }
        if path.is_empty() {
            return Ok(base);
        }
        Ok(Expr {
            offset: base.offset,
            kind: ExprKind::Access {
                base: Box::new(base),
                path,
            },
        })
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let (t, at) = self.next();
        let kind = match t {
            Tok::Number(n) => ExprKind::Literal(Value::Number(n)),
            Tok::Str(s) => ExprKind::Literal(Value::String(s)),
            Tok::LParen => {
                let e = self.expr()?;
                self.expect(Tok::RParen, "`)`")?;
                // Keep the inner node; the offset of a parenthesised expression is its `(`.
                return Ok(Expr {
                    offset: at,
                    kind: e.kind,
                });
            }
            Tok::Ident(name) => {
                if *self.peek() == Tok::LParen {
                    return self.call(name, at);
                }
                match name.as_str() {
                    "true" => ExprKind::Literal(Value::Bool(true)),
                    "false" => ExprKind::Literal(Value::Bool(false)),
                    "null" => ExprKind::Literal(Value::Null),
                    _ => {
                        let lower = name.to_ascii_lowercase();
                        if CONTEXTS.contains(&lower.as_str()) {
                            ExprKind::Context(lower)
                        } else {
                            return Err(unknown_context(&name, at));
                        }
                    }
                }
            }
            Tok::Eof => {
                return Err(ExprError::new(
                    at,
                    "expr.syntax",
                    "the expression ends where a value was expected",
                ));
            }
            other => {
                let msg = format!("expected a value, found {}", describe(&other));
                return Err(ExprError::new(at, "expr.syntax", msg));
            }
        };
        Ok(Expr { offset: at, kind })
    }

    fn call(&mut self, name: String, at: usize) -> Result<Expr, ExprError> {
        let Some(func) = Func::from_name(&name) else {
            let names: Vec<&str> = Func::ALL.iter().map(|f| f.name()).collect();
            let hint = did_you_mean(&name, &names)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| format!("; the functions are {}", names.join(", ")));
            return Err(ExprError::new(
                at,
                "expr.unknown_function",
                format!("unknown function `{name}`{hint}"),
            ));
        };
        self.next(); // (
        self.enter(at)?;
        let mut args = Vec::new();
        if *self.peek() != Tok::RParen {
            loop {
                args.push(self.expr()?);
                if *self.peek() == Tok::Comma {
                    self.next();
                    continue;
                }
                break;
            }
        }
        self.leave();
        self.expect(Tok::RParen, "`,` or `)`")?;
        let (min, max) = func.arity();
        if args.len() < min || max.is_some_and(|m| args.len() > m) {
            let want = match max {
                Some(m) if m == min => format!("{min}"),
                Some(m) => format!("{min} to {m}"),
                None => format!("at least {min}"),
            };
            return Err(ExprError::new(
                at,
                "expr.arity",
                format!(
                    "`{}` takes {want} argument{}, given {}",
                    func.name(),
                    if want == "1" { "" } else { "s" },
                    args.len()
                ),
            ));
        }
        if let (
            Func::Format,
            Some(Expr {
                kind: ExprKind::Literal(Value::String(f)),
                offset,
            }),
        ) = (func, args.first())
            && let Err(msg) = super::eval::check_format(f, args.len() - 1)
        {
            return Err(ExprError::new(*offset, "expr.format", msg));
        }
        Ok(Expr {
            offset: at,
            kind: ExprKind::Call { func, args },
        })
    }
}

fn unknown_context(name: &str, at: usize) -> ExprError {
    let hint = if name.eq_ignore_ascii_case("github") {
        "; Ouro's is `ouro` (ouro.ref, ouro.sha, ...)".to_string()
    } else if let Some(s) = did_you_mean(name, CONTEXTS) {
        format!("; did you mean `{s}`?")
    } else {
        format!("; the contexts are {}", CONTEXTS.join(", "))
    };
    ExprError::new(
        at,
        "expr.unknown_context",
        format!("unknown context `{name}`{hint}"),
    )
}

/// The closest candidate within a small edit distance, case-insensitively.
fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (levenshtein(&w, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Splits a template into text and `${{ expr }}` parts.
pub(crate) fn parse_template(src: &str) -> Result<Template, ExprError> {
    if src.len() > MAX_TEMPLATE_LEN {
        return Err(ExprError::new(
            0,
            "expr.too_long",
            format!(
                "this string is {} bytes; the limit is {MAX_TEMPLATE_LEN}",
                src.len()
            ),
        ));
    }
    let mut parts = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    while let Some(found) = src[i..].find("${{") {
        let open = i + found;
        let inner_start = open + 3;
        let close = find_close(src, inner_start).ok_or_else(|| {
            ExprError::new(
                open,
                "expr.unterminated_template",
                "this `${{` has no closing `}}`",
            )
        })?;
        if open > text_start {
            parts.push(Part::Text(src[text_start..open].to_string()));
        }
        let inner = &src[inner_start..close];
        if inner.trim().is_empty() {
            return Err(ExprError::new(
                open,
                "expr.empty",
                "`${{ }}` holds no expression",
            ));
        }
        parts.push(Part::Expr(parse_expr_at(inner, inner_start)?));
        i = close + 2;
        text_start = i;
    }
    if text_start < src.len() {
        parts.push(Part::Text(src[text_start..].to_string()));
    }
    Ok(Template { parts })
}

/// The index of the `}}` that ends the expression starting at `from`, skipping `}}` inside
/// single-quoted strings.
fn find_close(src: &str, from: usize) -> Option<usize> {
    let b = src.as_bytes();
    let mut i = from;
    let mut in_str = false;
    while i < b.len() {
        if in_str {
            if b[i] == b'\'' {
                if i + 1 < b.len() && b[i + 1] == b'\'' {
                    i += 2;
                    continue;
                }
                in_str = false;
            }
        } else if b[i] == b'\'' {
            in_str = true;
        } else if b[i] == b'}' && i + 1 < b.len() && b[i + 1] == b'}' {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_close_names() {
        assert_eq!(did_you_mean("matrx", CONTEXTS), Some("matrix"));
        assert_eq!(did_you_mean("secret", CONTEXTS), Some("secrets"));
        assert_eq!(did_you_mean("zzzzzzzz", CONTEXTS), None);
    }

    #[test]
    fn close_skips_strings() {
        assert_eq!(find_close("a '}}' }}", 0), Some(7));
        assert_eq!(find_close("'it''s }}' }}", 0), Some(11));
        assert_eq!(find_close("'}}", 0), None);
    }
}
