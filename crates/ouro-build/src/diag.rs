//! Diagnostics for pipeline files: a position (file, line, column), a stable code, a message and an
//! optional help, rendered either rustc-style (with the source line and a `^^^` underline) or as the
//! one-line contract form `FILE:LINE:COL: error[CODE]: message`.
//!
//! The codes are stable (external tools and tests match on them); [`CODES`] is the table that
//! docs/pipelines.md documents.

use std::fmt::Write as _;

/// How bad a diagnostic is. Only errors make a pipeline file invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One finding about a pipeline file. `line` and `col` are 1-based (col counts characters);
/// `len` is the width of the underline in characters (at least 1).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub len: u32,
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
    /// A short text printed after the underline (e.g. "unknown key").
    pub label: Option<String>,
}

impl Diagnostic {
    pub fn error(file: &str, line: u32, col: u32, code: &'static str, message: String) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: line.max(1),
            col: col.max(1),
            len: 1,
            code,
            severity: Severity::Error,
            message,
            help: None,
            label: None,
        }
    }

    pub fn with_len(mut self, len: u32) -> Self {
        self.len = len.max(1);
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The contract form: `FILE:LINE:COL: error[CODE]: message` (no trailing newline).
    pub fn one_line(&self) -> String {
        format!(
            "{}:{}:{}: {}[{}]: {}",
            self.file,
            self.line,
            self.col,
            self.severity.as_str(),
            self.code,
            self.message
        )
    }

    /// The rustc-style form, ending with a newline:
    ///
    /// ```text
    /// error[pipeline.unknown_key]: unknown key `stpes`
    ///  --> .ouro/pipelines/ci.yml:4:5
    ///   |
    /// 4 |     stpes:
    ///   |     ^^^^^ unknown key
    ///   |
    ///   = help: did you mean `steps`?
    /// ```
    ///
    /// `source` is the file's text (the line is omitted when it cannot be found, e.g. for a file
    /// that is not UTF-8).
    pub fn render(&self, source: Option<&str>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}[{}]: {}",
            self.severity.as_str(),
            self.code,
            self.message
        );
        let line_no = self.line.to_string();
        let pad = " ".repeat(line_no.len());
        let _ = writeln!(out, "{pad}--> {}:{}:{}", self.file, self.line, self.col);
        let text = source.and_then(|s| {
            let idx = (self.line as usize).checked_sub(1)?;
            s.lines().nth(idx)
        });
        if let Some(text) = text {
            let text = text.trim_end_matches('\r');
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{line_no} | {}", text.replace('\t', " "));
            let width = text.chars().count() as u32;
            let start = self.col.saturating_sub(1).min(width);
            let len = self.len.min(width.saturating_sub(start).max(1));
            let _ = write!(
                out,
                "{pad} | {}{}",
                " ".repeat(start as usize),
                "^".repeat(len as usize)
            );
            if let Some(label) = &self.label {
                let _ = write!(out, " {label}");
            }
            out.push('\n');
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out
    }
}

/// Every diagnostic code with its meaning. Stable: codes are never renamed or reused.
pub const CODES: &[(&str, &str)] = &[
    (NOT_UTF8, "the file is not valid UTF-8"),
    (TOO_LARGE, "the file is larger than the size budget"),
    (YAML_SYNTAX, "the file is not valid YAML"),
    (
        YAML_BUDGET,
        "the YAML exceeds a parsing budget (alias expansion, nesting, node count): a YAML bomb",
    ),
    (DUPLICATE_KEY, "a mapping repeats a key"),
    (
        MERGE_KEY,
        "a merge key `<<` is used; merge keys are not supported",
    ),
    (
        UNKNOWN_KEY,
        "a key that is not allowed at that place (with a \"did you mean\" suggestion)",
    ),
    (
        INVALID_TYPE,
        "a value has the wrong type (e.g. a list where a string is expected)",
    ),
    (INVALID_VALUE, "a value is not one of the allowed values"),
    (MISSING_FIELD, "a required key is missing"),
    (OUT_OF_RANGE, "a number is outside its allowed range"),
    (
        USES_UNSUPPORTED,
        "a step uses `uses:`; actions are not supported yet",
    ),
    (NEEDS_UNKNOWN, "`needs` names a job that does not exist"),
    (NEEDS_CYCLE, "the `needs` of some jobs form a cycle"),
    (NO_STEPS, "a job has no steps"),
    (
        STEP_WITHOUT_RUN,
        "a step has no `run` command, or an empty one",
    ),
    (
        MATRIX_TOO_LARGE,
        "a matrix expands to more jobs than allowed (256)",
    ),
    (
        INVALID_CRON,
        "a `schedule` entry is not a valid cron expression",
    ),
    (
        INVALID_GLOB,
        "a branch, tag or path pattern is not a valid glob",
    ),
    (
        INVALID_ID,
        "a job or input id has characters that are not allowed",
    ),
    (
        INVALID_INPUT,
        "a manual input is inconsistent (type, options, default)",
    ),
    (
        EXPRESSION,
        "a `${{ }}` expression or `if:` condition does not parse",
    ),
    (
        TOO_MANY_JOBS,
        "the file defines more jobs than the budget allows",
    ),
    (
        TOO_MANY_STEPS,
        "a job has more steps than the budget allows",
    ),
    (
        NETWORK_NEEDS_SANDBOX,
        "a job sets `network: false` without `executor: sandbox`",
    ),
];

pub const NOT_UTF8: &str = "pipeline.not_utf8";
pub const TOO_LARGE: &str = "pipeline.too_large";
pub const YAML_SYNTAX: &str = "pipeline.yaml_syntax";
pub const YAML_BUDGET: &str = "pipeline.yaml_budget";
pub const DUPLICATE_KEY: &str = "pipeline.duplicate_key";
pub const MERGE_KEY: &str = "pipeline.merge_key";
pub const UNKNOWN_KEY: &str = "pipeline.unknown_key";
pub const INVALID_TYPE: &str = "pipeline.invalid_type";
pub const INVALID_VALUE: &str = "pipeline.invalid_value";
pub const MISSING_FIELD: &str = "pipeline.missing_field";
pub const OUT_OF_RANGE: &str = "pipeline.out_of_range";
pub const USES_UNSUPPORTED: &str = "pipeline.uses_unsupported";
pub const NEEDS_UNKNOWN: &str = "pipeline.needs_unknown";
pub const NEEDS_CYCLE: &str = "pipeline.needs_cycle";
pub const NO_STEPS: &str = "pipeline.no_steps";
pub const STEP_WITHOUT_RUN: &str = "pipeline.step_without_run";
pub const MATRIX_TOO_LARGE: &str = "pipeline.matrix_too_large";
pub const INVALID_CRON: &str = "pipeline.invalid_cron";
pub const INVALID_GLOB: &str = "pipeline.invalid_glob";
pub const INVALID_ID: &str = "pipeline.invalid_id";
pub const INVALID_INPUT: &str = "pipeline.invalid_input";
pub const EXPRESSION: &str = "pipeline.expression";
pub const TOO_MANY_JOBS: &str = "pipeline.too_many_jobs";
pub const TOO_MANY_STEPS: &str = "pipeline.too_many_steps";
pub const NETWORK_NEEDS_SANDBOX: &str = "pipeline.network_needs_sandbox";

/// The closest candidate to `word` by edit distance, when it is close enough to be a plausible
/// typo (about a third of the word's length, at least 1).
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = word.chars().count().div_ceil(3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over characters with adjacent transpositions (optimal string alignment),
/// case-insensitive; `_` and `-` count as equal so that `timeout_minutes` suggests
/// `timeout-minutes`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let norm = |c: char| match c {
        '_' => '-',
        c => c.to_ascii_lowercase(),
    };
    let a: Vec<char> = a.chars().map(norm).collect();
    let b: Vec<char> = b.chars().map(norm).collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_forms() {
        let src = "jobs:\n  build:\n    stpes: []\n";
        let d = Diagnostic::error("ci.yml", 3, 5, UNKNOWN_KEY, "unknown key `stpes`".into())
            .with_len(5)
            .with_label("unknown key")
            .with_help("did you mean `steps`?");
        assert_eq!(
            d.one_line(),
            "ci.yml:3:5: error[pipeline.unknown_key]: unknown key `stpes`"
        );
        assert_eq!(
            d.render(Some(src)),
            "error[pipeline.unknown_key]: unknown key `stpes`\n --> ci.yml:3:5\n  |\n3 |     stpes: []\n  |     ^^^^^ unknown key\n  |\n  = help: did you mean `steps`?\n"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("stpes", &["steps", "needs"]), Some("steps"));
        assert_eq!(
            did_you_mean("timeout_minutes", &["timeout-minutes", "env"]),
            Some("timeout-minutes")
        );
        assert_eq!(did_you_mean("zzzz", &["steps", "needs"]), None);
    }

    #[test]
    fn codes_are_unique_and_prefixed() {
        let mut seen = std::collections::BTreeSet::new();
        for (c, _) in CODES {
            assert!(c.starts_with("pipeline."), "{c}");
            assert!(seen.insert(*c), "duplicate {c}");
        }
    }
}
