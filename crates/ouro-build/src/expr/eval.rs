//! Evaluation and the built-in functions.

use std::borrow::Cow;

use super::value::{Value, fold, loose_cmp, loose_eq};
use super::{Accessor, CmpOp, Context, EvalError, Expr, ExprKind, Func, JobStatus, MAX_STRING_LEN};

static NULL: Value = Value::Null;

pub(crate) fn eval(expr: &Expr, ctx: &Context) -> Result<Value, EvalError> {
    Ok(eval_cow(expr, ctx)?.into_owned())
}

fn eval_cow<'c>(expr: &Expr, ctx: &'c Context) -> Result<Cow<'c, Value>, EvalError> {
    Ok(match &expr.kind {
        ExprKind::Literal(v) => Cow::Owned(v.clone()),
        ExprKind::Context(name) => match ctx.get(name) {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(Value::Object(Default::default())),
        },
        ExprKind::Access { base, path } => {
            let base = match &base.kind {
                ExprKind::Context(name) => match ctx.get(name) {
                    Some(v) => Cow::Borrowed(v),
                    None => Cow::Borrowed(&NULL),
                },
                _ => eval_cow(base, ctx)?,
            };
            access(base, path, ctx)?
        }
        ExprKind::Not(e) => Cow::Owned(Value::Bool(!eval_cow(e, ctx)?.is_truthy())),
        ExprKind::Compare { op, lhs, rhs } => {
            let a = eval_cow(lhs, ctx)?;
            let b = eval_cow(rhs, ctx)?;
            let r = match op {
                CmpOp::Eq => loose_eq(&a, &b),
                CmpOp::Ne => !loose_eq(&a, &b),
                CmpOp::Lt => loose_cmp(&a, &b).is_some_and(|o| o.is_lt()),
                CmpOp::Le => loose_cmp(&a, &b).is_some_and(|o| o.is_le()),
                CmpOp::Gt => loose_cmp(&a, &b).is_some_and(|o| o.is_gt()),
                CmpOp::Ge => loose_cmp(&a, &b).is_some_and(|o| o.is_ge()),
            };
            Cow::Owned(Value::Bool(r))
        }
        ExprKind::And(items) => {
            let mut last = Cow::Owned(Value::Null);
            for e in items {
                last = eval_cow(e, ctx)?;
                if !last.is_truthy() {
                    break;
                }
            }
            last
        }
        ExprKind::Or(items) => {
            let mut last = Cow::Owned(Value::Null);
            for e in items {
                last = eval_cow(e, ctx)?;
                if last.is_truthy() {
                    break;
                }
            }
            last
        }
        ExprKind::Call { func, args } => Cow::Owned(call(*func, args, expr.offset, ctx)?),
    })
}

/// Walks a property path. Before any `*` the walk borrows from the context; a `*` turns the
/// current object or array into the array of its values and later steps map over that array,
/// dropping elements where the property is missing or null.
fn access<'c>(
    base: Cow<'c, Value>,
    path: &[Accessor],
    ctx: &'c Context,
) -> Result<Cow<'c, Value>, EvalError> {
    let mut cur = base;
    let mut filtered: Option<Vec<Value>> = None;
    for acc in path {
        let key = match acc {
            Accessor::Prop(name) => Some(Value::String(name.clone())),
            Accessor::Index(e) => Some(eval(e, ctx)?),
            Accessor::Star => None,
        };
        if let Some(items) = filtered.as_mut() {
            *items = match &key {
                None => items.drain(..).flat_map(values_of).collect(),
                Some(k) => items
                    .iter()
                    .filter_map(|v| lookup(v, k))
                    .filter(|v| !matches!(v, Value::Null))
                    .cloned()
                    .collect(),
            };
            continue;
        }
        match &key {
            None => {
                let taken = std::mem::replace(&mut cur, Cow::Owned(Value::Null));
                filtered = Some(values_of(taken.into_owned()));
            }
            Some(k) => {
                cur = match cur {
                    Cow::Borrowed(v) => Cow::Borrowed(lookup(v, k).unwrap_or(&NULL)),
                    Cow::Owned(v) => Cow::Owned(lookup(&v, k).cloned().unwrap_or(Value::Null)),
                };
            }
        }
    }
    Ok(match filtered {
        Some(items) => Cow::Owned(Value::Array(items)),
        None => cur,
    })
}

fn lookup<'v>(v: &'v Value, key: &Value) -> Option<&'v Value> {
    match key {
        Value::String(s) => match v {
            Value::Object(_) => v.get_key(s),
            _ => None,
        },
        other => v.get_index(other),
    }
}

fn values_of(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(o) => o.into_values().collect(),
        _ => Vec::new(),
    }
}

fn too_large(at: usize, what: &str) -> EvalError {
    EvalError::new(
        at,
        "expr.too_large",
        format!("{what} would be longer than {MAX_STRING_LEN} bytes"),
    )
}

fn call(func: Func, args: &[Expr], at: usize, ctx: &Context) -> Result<Value, EvalError> {
    let mut vals = Vec::with_capacity(args.len());
    for a in args {
        vals.push(eval_cow(a, ctx)?);
    }
    let arg = |i: usize| -> &Value { vals.get(i).map(|c| c.as_ref()).unwrap_or(&Value::Null) };
    Ok(match func {
        Func::Success => Value::Bool(ctx.status == JobStatus::Success),
        Func::Failure => Value::Bool(ctx.status == JobStatus::Failure),
        Func::Cancelled => Value::Bool(ctx.status == JobStatus::Cancelled),
        Func::Always => Value::Bool(true),
        Func::Contains => Value::Bool(match arg(0) {
            Value::Array(items) => items.iter().any(|v| loose_eq(v, arg(1))),
            hay => fold(&hay.to_display()).contains(&fold(&arg(1).to_display())),
        }),
        Func::StartsWith => {
            Value::Bool(fold(&arg(0).to_display()).starts_with(&fold(&arg(1).to_display())))
        }
        Func::EndsWith => {
            Value::Bool(fold(&arg(0).to_display()).ends_with(&fold(&arg(1).to_display())))
        }
        Func::Format => {
            let strings: Vec<String> = vals[1..].iter().map(|v| v.to_display()).collect();
            match format(&arg(0).to_display(), &strings) {
                Ok(out) => Value::String(out),
                Err(FormatError::TooLarge) => return Err(too_large(at, "the result of format()")),
                Err(FormatError::Bad(m)) => return Err(EvalError::new(at, "expr.format", m)),
            }
        }
        Func::Join => {
            let sep = if vals.len() > 1 {
                arg(1).to_display()
            } else {
                ",".to_string()
            };
            match arg(0) {
                Value::Array(items) => {
                    let mut out = String::new();
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            out.push_str(&sep);
                        }
                        out.push_str(&v.to_display());
                        if out.len() > MAX_STRING_LEN {
                            return Err(too_large(at, "the result of join()"));
                        }
                    }
                    Value::String(out)
                }
                other => Value::String(other.to_display()),
            }
        }
        Func::ToJson => {
            let out = serde_json::to_string_pretty(&arg(0).to_json()).unwrap_or_default();
            if out.len() > MAX_STRING_LEN {
                return Err(too_large(at, "the result of toJSON()"));
            }
            Value::String(out)
        }
        Func::FromJson => {
            let text = arg(0).to_display();
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(j) => Value::from_json(&j),
                Err(e) => {
                    return Err(EvalError::new(
                        at,
                        "expr.from_json",
                        format!("fromJSON: the argument is not JSON ({e})"),
                    ));
                }
            }
        }
        Func::HashFiles => {
            let Some(provider) = ctx.hash_files_provider() else {
                return Err(EvalError::new(
                    at,
                    "expr.hash_files",
                    "hashFiles() is only available where a job has a workspace",
                ));
            };
            let patterns: Vec<String> = vals.iter().map(|v| v.to_display()).collect();
            let h = provider
                .hash_files(&patterns)
                .map_err(|m| EvalError::new(at, "expr.hash_files", format!("hashFiles: {m}")))?;
            Value::String(h)
        }
    })
}

pub(crate) enum FormatError {
    Bad(String),
    TooLarge,
}

/// `format`: `{N}` is argument N, `{{` and `}}` are literal braces.
pub(crate) fn format(fmt: &str, args: &[String]) -> Result<String, FormatError> {
    let mut out = String::with_capacity(fmt.len());
    let mut chars = fmt.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => {
                if chars.peek().map(|p| p.1) == Some('{') {
                    chars.next();
                    out.push('{');
                    continue;
                }
                let mut n: usize = 0;
                let mut digits = 0;
                loop {
                    match chars.next() {
                        Some((_, d)) if d.is_ascii_digit() => {
                            digits += 1;
                            if digits > 6 {
                                return Err(FormatError::Bad(format!(
                                    "the placeholder at byte {i} is too long"
                                )));
                            }
                            n = n * 10 + (d as usize - '0' as usize);
                        }
                        Some((_, '}')) if digits > 0 => break,
                        _ => {
                            return Err(FormatError::Bad(format!(
                                "the `{{` at byte {i} of the format string is not a placeholder \
                                 like {{0}} (write `{{{{` for a literal brace)"
                            )));
                        }
                    }
                }
                match args.get(n) {
                    Some(a) => out.push_str(a),
                    None => {
                        return Err(FormatError::Bad(format!(
                            "the format string uses {{{n}}} but only {} argument{} given",
                            args.len(),
                            if args.len() == 1 { " is" } else { "s are" }
                        )));
                    }
                }
                if out.len() > MAX_STRING_LEN {
                    return Err(FormatError::TooLarge);
                }
            }
            '}' => {
                if chars.peek().map(|p| p.1) == Some('}') {
                    chars.next();
                    out.push('}');
                } else {
                    return Err(FormatError::Bad(format!(
                        "the `}}` at byte {i} of the format string has no `{{` (write `}}}}` for a \
                         literal brace)"
                    )));
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Checks a literal format string against the number of arguments given (parse time).
pub(crate) fn check_format(fmt: &str, nargs: usize) -> Result<(), String> {
    let placeholders = vec![String::new(); nargs];
    match format(fmt, &placeholders) {
        Ok(_) | Err(FormatError::TooLarge) => Ok(()),
        Err(FormatError::Bad(m)) => Err(m),
    }
}
