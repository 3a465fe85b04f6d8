//! The expression language of pipeline files: `${{ ... }}` in strings and `if:` conditions
//! (docs/expressions.md is the user reference).
//!
//! - [`parse`] turns one expression into an [`Expr`] (budgets: [`MAX_EXPR_LEN`] bytes,
//!   [`MAX_DEPTH`] levels of nesting; never panics, never overflows the stack).
//! - [`parse_template`] splits a string into literal text and `${{ expr }}` parts; offsets of
//!   every error and node are byte offsets into the string given.
//! - [`parse_condition`] / [`eval_condition`] read an `if:` (with or without `${{ }}`); a
//!   condition that calls no status function is implicitly `success() && (...)`.
//! - [`eval`] evaluates against a [`Context`] (the contexts `ouro`, `env`, `matrix`, `inputs`,
//!   `needs`, `secrets`, the job status and a [`HashFiles`] provider).
//! - [`contexts_used`] lists what an expression reads, so the pipeline checker can refuse
//!   e.g. `matrix.x` outside a matrix job or `secrets` in `runs-on`.

mod eval;
mod hash_files;
mod parse;
mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use hash_files::{DirHashFiles, HashFiles};
pub use value::Value;

/// Longest expression accepted, in bytes (the text between `${{` and `}}`, or an `if:`).
pub const MAX_EXPR_LEN: usize = 8 * 1024;
/// Deepest nesting accepted: parentheses, `!`, function calls, `[...]` and chained comparisons.
pub const MAX_DEPTH: usize = 48;
/// Longest template accepted, in bytes (a whole `run:` script, for instance).
pub const MAX_TEMPLATE_LEN: usize = 1024 * 1024;
/// Longest string an evaluation may produce (`format`, `join`, `toJSON`, a rendered template).
pub const MAX_STRING_LEN: usize = 1024 * 1024;

/// The contexts an expression may name, in the order the docs list them.
pub const CONTEXTS: &[&str] = &[
    "ouro", "env", "matrix", "inputs", "needs", "secrets", "vars",
];

/// A parse error: where (byte offset into the source given), a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} at byte {offset}: {message}")]
pub struct ExprError {
    pub offset: usize,
    pub code: &'static str,
    pub message: String,
}

impl ExprError {
    pub(crate) fn new(offset: usize, code: &'static str, message: impl Into<String>) -> Self {
        ExprError {
            offset,
            code,
            message: message.into(),
        }
    }
}

/// An evaluation error: the offset of the expression node that failed, a stable code, a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} at byte {offset}: {message}")]
pub struct EvalError {
    pub offset: usize,
    pub code: &'static str,
    pub message: String,
}

impl EvalError {
    pub(crate) fn new(offset: usize, code: &'static str, message: impl Into<String>) -> Self {
        EvalError {
            offset,
            code,
            message: message.into(),
        }
    }
}

/// Either kind of error, for the one-call helpers ([`eval_condition`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Parse(#[from] ExprError),
    #[error(transparent)]
    Eval(#[from] EvalError),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::Parse(e) => e.code,
            Error::Eval(e) => e.code,
        }
    }
    pub fn offset(&self) -> usize {
        match self {
            Error::Parse(e) => e.offset,
            Error::Eval(e) => e.offset,
        }
    }
}

/// A parsed expression node; `offset` is where it starts in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub offset: usize,
    pub kind: ExprKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Literal(Value),
    /// A context name (`ouro`, `env`, ...), lower-cased.
    Context(String),
    /// `base.a['b'].*.c`
    Access {
        base: Box<Expr>,
        path: Vec<Accessor>,
    },
    Not(Box<Expr>),
    Compare {
        op: CmpOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `a && b && c`: the first falsy operand, else the last.
    And(Vec<Expr>),
    /// `a || b || c`: the first truthy operand, else the last.
    Or(Vec<Expr>),
    Call {
        func: Func,
        args: Vec<Expr>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Accessor {
    /// `.name`
    Prop(String),
    /// `[expr]`
    Index(Expr),
    /// `.*` or `[*]`
    Star,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// The built-in functions. Names are matched case-insensitively, like GitHub Actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Contains,
    StartsWith,
    EndsWith,
    Format,
    Join,
    ToJson,
    FromJson,
    HashFiles,
    Success,
    Failure,
    Always,
    Cancelled,
}

impl Func {
    pub const ALL: &'static [Func] = &[
        Func::Contains,
        Func::StartsWith,
        Func::EndsWith,
        Func::Format,
        Func::Join,
        Func::ToJson,
        Func::FromJson,
        Func::HashFiles,
        Func::Success,
        Func::Failure,
        Func::Always,
        Func::Cancelled,
    ];

    /// The canonical spelling (`startsWith`).
    pub fn name(self) -> &'static str {
        match self {
            Func::Contains => "contains",
            Func::StartsWith => "startsWith",
            Func::EndsWith => "endsWith",
            Func::Format => "format",
            Func::Join => "join",
            Func::ToJson => "toJSON",
            Func::FromJson => "fromJSON",
            Func::HashFiles => "hashFiles",
            Func::Success => "success",
            Func::Failure => "failure",
            Func::Always => "always",
            Func::Cancelled => "cancelled",
        }
    }

    pub fn from_name(name: &str) -> Option<Func> {
        Func::ALL
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// (minimum, maximum) number of arguments; `None` = no maximum.
    pub fn arity(self) -> (usize, Option<usize>) {
        match self {
            Func::Contains | Func::StartsWith | Func::EndsWith => (2, Some(2)),
            Func::Format => (1, None),
            Func::Join => (1, Some(2)),
            Func::ToJson | Func::FromJson => (1, Some(1)),
            Func::HashFiles => (1, None),
            Func::Success | Func::Failure | Func::Always | Func::Cancelled => (0, Some(0)),
        }
    }

    /// `success()`, `failure()`, `always()`, `cancelled()`.
    pub fn is_status(self) -> bool {
        matches!(
            self,
            Func::Success | Func::Failure | Func::Always | Func::Cancelled
        )
    }
}

/// Parses one expression (the inside of `${{ }}`).
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    parse::parse_expr_at(src, 0)
}

/// A string with zero or more `${{ expr }}` parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Expr(Expr),
}

impl Template {
    /// True when the template has no `${{ }}` part.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The expressions of the template, in order.
    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(e) => Some(e),
            Part::Text(_) => None,
        })
    }

    /// The one expression when the template is exactly `${{ expr }}` (no text around it).
    pub fn single_expr(&self) -> Option<&Expr> {
        match self.parts.as_slice() {
            [Part::Expr(e)] => Some(e),
            _ => None,
        }
    }

    /// The typed value for fields that are not strings (`timeout-minutes: ${{ inputs.t }}`,
    /// `continue-on-error: ${{ ... }}`): a template that is exactly one `${{ expr }}` gives the
    /// expression's value as is; any other template gives its rendered string.
    pub fn eval_value(&self, ctx: &Context) -> Result<Value, EvalError> {
        match self.single_expr() {
            Some(e) => eval(e, ctx),
            None => self.render(ctx).map(Value::String),
        }
    }

    /// Renders the template: each expression's value as a string (see [`Value::to_display`]).
    pub fn render(&self, ctx: &Context) -> Result<String, EvalError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => {
                    let v = eval(e, ctx)?;
                    out.push_str(&v.to_display());
                }
            }
            if out.len() > MAX_STRING_LEN {
                return Err(EvalError::new(
                    0,
                    "expr.too_large",
                    format!("the rendered string is longer than {MAX_STRING_LEN} bytes"),
                ));
            }
        }
        Ok(out)
    }

    /// Every context reference of every expression of the template.
    pub fn contexts_used(&self) -> Vec<ContextRef> {
        self.exprs().flat_map(contexts_used).collect()
    }
}

/// Parses a string with `${{ expr }}` parts; offsets are relative to `src`.
pub fn parse_template(src: &str) -> Result<Template, ExprError> {
    parse::parse_template(src)
}

/// Evaluates an expression.
pub fn eval(expr: &Expr, ctx: &Context) -> Result<Value, EvalError> {
    eval::eval(expr, ctx)
}

/// A parsed `if:` condition. `implicit_success` is true when the condition calls no status
/// function and is therefore evaluated as `success() && (expr)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub expr: Expr,
    pub implicit_success: bool,
}

impl Condition {
    /// The default condition (no `if:`): `success()`.
    pub fn default_success() -> Condition {
        Condition {
            expr: Expr {
                offset: 0,
                kind: ExprKind::Call {
                    func: Func::Success,
                    args: Vec::new(),
                },
            },
            implicit_success: false,
        }
    }

    /// A condition from an already parsed expression (implicit `success()` when it calls no
    /// status function).
    pub fn from_expr(expr: Expr) -> Condition {
        let implicit_success = !calls_status_function(&expr);
        Condition {
            expr,
            implicit_success,
        }
    }

    pub fn eval(&self, ctx: &Context) -> Result<bool, EvalError> {
        if self.implicit_success && ctx.status != JobStatus::Success {
            return Ok(false);
        }
        Ok(eval(&self.expr, ctx)?.is_truthy())
    }
}

/// Parses an `if:` value. It may be written bare (`ouro.branch == 'main'`) or wrapped in one
/// `${{ }}`; an empty one is the default `success()`. Offsets are relative to `src`.
pub fn parse_condition(src: &str) -> Result<Condition, ExprError> {
    let trimmed = src.trim();
    if trimmed.is_empty() {
        return Ok(Condition::default_success());
    }
    let lead = src.len() - src.trim_start().len();
    let expr = if trimmed.starts_with("${{") {
        let t = parse::parse_template(src)?;
        let mut exprs = Vec::new();
        let mut other_text = false;
        for p in t.parts {
            match p {
                Part::Expr(e) => exprs.push(e),
                Part::Text(s) => other_text |= !s.trim().is_empty(),
            }
        }
        if exprs.len() != 1 || other_text {
            return Err(ExprError::new(
                lead,
                "expr.condition_template",
                "an `if:` is one expression: write it bare or wrap all of it in a single `${{ }}`",
            ));
        }
        exprs
            .pop()
            .unwrap_or_else(|| Condition::default_success().expr)
    } else {
        parse::parse_expr_at(src, 0)?
    };
    Ok(Condition::from_expr(expr))
}

/// Parses and evaluates an `if:` in one call.
pub fn eval_condition(src: &str, ctx: &Context) -> Result<bool, Error> {
    Ok(parse_condition(src)?.eval(ctx)?)
}

/// True when the expression calls `success()`, `failure()`, `always()` or `cancelled()`.
pub fn calls_status_function(expr: &Expr) -> bool {
    let mut found = false;
    walk(expr, &mut |e| {
        if let ExprKind::Call { func, .. } = &e.kind {
            found |= func.is_status();
        }
    });
    found
}

/// The functions an expression calls, with the offset of each call.
pub fn functions_used(expr: &Expr) -> Vec<(Func, usize)> {
    let mut out = Vec::new();
    walk(expr, &mut |e| {
        if let ExprKind::Call { func, .. } = &e.kind {
            out.push((*func, e.offset));
        }
    });
    out
}

/// One context reference: `needs.build.result` is `{context: "needs", path: ["build",
/// "result"]}`. The path holds the statically known property names (`*` for a filter) and stops
/// at the first computed index (`matrix[format(...)]` has an empty path).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContextRef {
    pub context: String,
    pub path: Vec<String>,
    pub offset: usize,
}

/// Every context an expression reads, in source order.
pub fn contexts_used(expr: &Expr) -> Vec<ContextRef> {
    let mut out = Vec::new();
    walk(expr, &mut |e| match &e.kind {
        ExprKind::Context(name) => {
            // A bare context (no property access); `walk` does not visit the context under an
            // Access, which the arm below records with its path.
            out.push(ContextRef {
                context: name.clone(),
                path: Vec::new(),
                offset: e.offset,
            });
        }
        ExprKind::Access { base, path } => {
            if let ExprKind::Context(name) = &base.kind {
                let mut p = Vec::new();
                for acc in path {
                    match acc {
                        Accessor::Prop(s) => p.push(s.clone()),
                        Accessor::Star => p.push("*".to_string()),
                        Accessor::Index(Expr {
                            kind: ExprKind::Literal(Value::String(s)),
                            ..
                        }) => p.push(s.clone()),
                        Accessor::Index(_) => break,
                    }
                }
                out.push(ContextRef {
                    context: name.clone(),
                    path: p,
                    offset: base.offset,
                });
            }
        }
        _ => {}
    });
    out
}

/// Refuses a context that is not available where the expression is written: the first
/// reference to a context outside `allowed` gives `expr.context_not_allowed` at its offset.
/// `place` names the place for the message (`runs-on`, "a job's `if`").
pub fn check_contexts(expr: &Expr, allowed: &[&str], place: &str) -> Result<(), ExprError> {
    match contexts_used(expr)
        .into_iter()
        .find(|r| !allowed.contains(&r.context.as_str()))
    {
        None => Ok(()),
        Some(r) => {
            let avail = if allowed.is_empty() {
                "no context is".to_string()
            } else {
                format!("only {} are", allowed.join(", "))
            };
            Err(ExprError::new(
                r.offset,
                "expr.context_not_allowed",
                format!(
                    "`{}` is not available in {place}: {avail} available there",
                    r.context
                ),
            ))
        }
    }
}

/// Pre-order walk over every node (the parser bounds the depth, so recursion is safe).
fn walk<'a>(expr: &'a Expr, f: &mut dyn FnMut(&'a Expr)) {
    f(expr);
    match &expr.kind {
        ExprKind::Literal(_) | ExprKind::Context(_) => {}
        ExprKind::Access { base, path } => {
            // The base is recorded by the Access itself when it is a context.
            if !matches!(base.kind, ExprKind::Context(_)) {
                walk(base, f);
            }
            for acc in path {
                if let Accessor::Index(e) = acc {
                    walk(e, f);
                }
            }
        }
        ExprKind::Not(e) => walk(e, f),
        ExprKind::Compare { lhs, rhs, .. } => {
            walk(lhs, f);
            walk(rhs, f);
        }
        ExprKind::And(v) | ExprKind::Or(v) => v.iter().for_each(|e| walk(e, f)),
        ExprKind::Call { args, .. } => args.iter().for_each(|e| walk(e, f)),
    }
}

/// The status of the job (for job-level `if:`) or of the steps so far (for step-level `if:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobStatus {
    /// Nothing has failed: `success()` is true.
    #[default]
    Success,
    /// A needed job or an earlier step failed: `failure()` is true.
    Failure,
    /// The run was cancelled: `cancelled()` is true.
    Cancelled,
}

/// The `ouro` context.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OuroContext {
    /// `push`, `change_request`, `schedule`, `manual`.
    pub event: String,
    /// The full ref, `refs/heads/main`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The branch name (`main`), empty for a tag.
    pub branch: String,
    pub sha: String,
    /// The project slug.
    pub project: String,
    /// The repository name.
    pub repo: String,
    pub run_number: u64,
    /// The username of who triggered the run.
    pub actor: String,
    /// A change request run's target branch (`main`); empty for other events.
    pub target_branch: String,
}

/// What expressions can read. Contexts that were never set read as empty objects.
#[derive(Clone, Default)]
pub struct Context {
    contexts: BTreeMap<String, Value>,
    pub status: JobStatus,
    hash_files: Option<Arc<dyn HashFiles>>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("contexts", &self.contexts.keys().collect::<Vec<_>>())
            .field("status", &self.status)
            .field("hash_files", &self.hash_files.is_some())
            .finish()
    }
}

fn string_map(map: impl IntoIterator<Item = (String, String)>) -> Value {
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    pub fn with_ouro(mut self, ouro: &OuroContext) -> Context {
        let json = serde_json::to_value(ouro).unwrap_or(serde_json::Value::Null);
        self.contexts.insert("ouro".into(), Value::from_json(&json));
        self
    }

    pub fn with_env(mut self, env: impl IntoIterator<Item = (String, String)>) -> Context {
        self.contexts.insert("env".into(), string_map(env));
        self
    }

    pub fn with_matrix(mut self, combo: &serde_json::Map<String, serde_json::Value>) -> Context {
        let v = Value::from_json(&serde_json::Value::Object(combo.clone()));
        self.contexts.insert("matrix".into(), v);
        self
    }

    pub fn with_inputs(mut self, inputs: &serde_json::Map<String, serde_json::Value>) -> Context {
        let v = Value::from_json(&serde_json::Value::Object(inputs.clone()));
        self.contexts.insert("inputs".into(), v);
        self
    }

    /// Adds `needs.<job>` with its `result` (`success`, `failure`, `cancelled`, `skipped`)
    /// and `outputs`.
    pub fn with_need(
        mut self,
        job: &str,
        result: &str,
        outputs: impl IntoIterator<Item = (String, String)>,
    ) -> Context {
        let entry = self
            .contexts
            .entry("needs".into())
            .or_insert_with(|| Value::Object(BTreeMap::new()));
        if let Value::Object(m) = entry {
            let mut need = BTreeMap::new();
            need.insert("result".to_string(), Value::String(result.to_string()));
            need.insert("outputs".to_string(), string_map(outputs));
            m.insert(job.to_string(), Value::Object(need));
        }
        self
    }

    pub fn with_secrets(mut self, secrets: impl IntoIterator<Item = (String, String)>) -> Context {
        self.contexts.insert("secrets".into(), string_map(secrets));
        self
    }

    /// Sets `vars`: the project's pipeline variables (see `crate::secrets`).
    pub fn with_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Context {
        self.contexts.insert("vars".into(), string_map(vars));
        self
    }

    pub fn with_status(mut self, status: JobStatus) -> Context {
        self.status = status;
        self
    }

    pub fn with_hash_files(mut self, provider: Arc<dyn HashFiles>) -> Context {
        self.hash_files = Some(provider);
        self
    }

    /// Sets a whole context from JSON (`name` must be one of [`CONTEXTS`]).
    pub fn with_json(mut self, name: &str, value: &serde_json::Value) -> Context {
        if CONTEXTS.contains(&name) {
            self.contexts
                .insert(name.to_string(), Value::from_json(value));
        }
        self
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.contexts.get(name)
    }

    pub(crate) fn hash_files_provider(&self) -> Option<&Arc<dyn HashFiles>> {
        self.hash_files.as_ref()
    }
}
