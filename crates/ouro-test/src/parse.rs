//! Report parsers: JUnit XML from the real producers (cargo-nextest, pytest, jest-junit, Maven
//! Surefire, gotestsum) and coverage (Cobertura XML, LCOV), all into the normalised [`model`].
//!
//! The parsers stream over the bytes (quick-xml events, no document tree) under [`Limits`]:
//! file size, element depth, attribute size, number of cases, and a cap on each kept text
//! (messages, stack traces, output; longer text is truncated, not refused). DTDs are never
//! processed: a `<!DOCTYPE` that declares entities is refused and an entity other than the five
//! XML ones is an error, so an entity bomb costs nothing. Every failure is a [`ParseError`]
//! naming the file, the 1-based line and column (in characters) and a stable code.
//!
//! Producers' quirks, and how they are normalised (see docs/test-reports.md):
//! - retries inside a testcase (`flakyFailure`, `flakyError`, `rerunFailure`, `rerunError`;
//!   Surefire and nextest) become earlier (or later) attempts of the same case;
//! - a case that appears more than once in one report (pytest-rerunfailures, gotestsum reruns)
//!   is one case whose attempts are its appearances, in document order; an appearance that does
//!   not say it failed but was run again is recorded as failed (tools retry only failures);
//! - a suite that reports `errors=`/`failures=` but holds no case (gotestsum's package build
//!   failure) gets one errored case named after the suite;
//! - names are trimmed and a `classname` equal to the `name` is dropped (jest-junit), see
//!   [`model::identity_key`].

mod coverage;
mod junit;
mod xml;

use std::collections::HashMap;
use std::fmt;

use crate::model::{self, Outcome};

/// The stable codes a [`ParseError`] carries.
pub mod codes {
    /// The bytes are not well-formed XML (or an entity other than the predefined ones is used).
    pub const XML_MALFORMED: &str = "test.xml_malformed";
    /// A `<!DOCTYPE` declares entities: refused, entities are never expanded.
    pub const XML_DTD: &str = "test.xml_dtd_refused";
    /// The file is not valid UTF-8.
    pub const NOT_UTF8: &str = "test.not_utf8";
    /// A configured limit (size, depth, attribute size, number of cases) was exceeded.
    pub const LIMIT_EXCEEDED: &str = "test.limit_exceeded";
    /// Well-formed XML whose root is not `<testsuites>` or `<testsuite>`.
    pub const NOT_JUNIT: &str = "test.not_junit";
    /// Neither Cobertura XML nor LCOV.
    pub const COVERAGE_UNKNOWN_FORMAT: &str = "test.coverage_unknown_format";
    /// A coverage file of a known format with a line or value that makes no sense.
    pub const COVERAGE_MALFORMED: &str = "test.coverage_malformed";
}

/// Bounds on what one report file may cost. All are configurable; the defaults suit CI
/// reports of very large test suites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file accepted, in bytes (64 MiB).
    pub max_bytes: u64,
    /// Deepest element nesting (64).
    pub max_depth: usize,
    /// Largest attribute value, in bytes (64 KiB).
    pub max_attr_bytes: usize,
    /// Most test cases in one file, counting each appearance (1,000,000).
    pub max_cases: usize,
    /// Longest message, stack trace or output kept per attempt, in bytes; longer text is
    /// truncated with a marker (64 KiB).
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_depth: 64,
            max_attr_bytes: 64 * 1024,
            max_cases: 1_000_000,
            max_text_bytes: 64 * 1024,
        }
    }
}

/// Why a report file could not be parsed, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// A stable code from [`codes`], e.g. `test.xml_malformed`.
    pub code: &'static str,
    /// The file name as given to the parser.
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column, in characters.
    pub column: u64,
    pub message: String,
}

impl ParseError {
    /// An error at byte `offset` of `bytes`.
    pub(crate) fn at(
        code: &'static str,
        file: &str,
        bytes: &[u8],
        offset: u64,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(bytes, offset);
        Self {
            code,
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error[{}]: {}",
            self.file, self.line, self.column, self.code, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// 1-based line and column (in characters) of byte `offset` in `bytes`.
pub fn line_column(bytes: &[u8], offset: u64) -> (u64, u64) {
    let offset = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let before = &bytes[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    // Characters, not bytes: count the bytes that start a UTF-8 sequence.
    let column = before[start..]
        .iter()
        .filter(|b| (**b & 0xC0) != 0x80)
        .count() as u64
        + 1;
    (line, column)
}

/// Checks the size limit and UTF-8, and strips a byte order mark. Returns the text and the
/// byte offset it starts at in `bytes`.
pub(crate) fn text<'a>(
    file: &str,
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<(&'a str, u64), ParseError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ParseError::at(
            codes::LIMIT_EXCEEDED,
            file,
            bytes,
            0,
            format!(
                "the file is {} bytes, over the limit of {} bytes",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let (body, skip) = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (rest, 3),
        None => (bytes, 0),
    };
    match std::str::from_utf8(body) {
        Ok(s) => Ok((s, skip)),
        Err(e) => {
            let at = skip + e.valid_up_to() as u64;
            Err(ParseError::at(
                codes::NOT_UTF8,
                file,
                bytes,
                at,
                format!(
                    "the file is not valid UTF-8 (byte 0x{:02x} at offset {at}); write reports as UTF-8",
                    body[e.valid_up_to()]
                ),
            ))
        }
    }
}

/// Parses one JUnit XML report (any of the producers above). Cases that appear more than once
/// are folded into one case with several attempts.
pub fn junit(file: &str, bytes: &[u8], limits: &Limits) -> Result<model::Report, ParseError> {
    let mut report = junit::parse(file, bytes, limits)?;
    fold_retries(&mut report);
    Ok(report)
}

/// Parses one coverage report, Cobertura XML or LCOV, told apart by content.
pub fn coverage(file: &str, bytes: &[u8], limits: &Limits) -> Result<model::Coverage, ParseError> {
    coverage::parse(file, bytes, limits)
}

/// What kind of report a file is, by its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Junit,
    Coverage,
}

/// Tells a JUnit report from a coverage report by looking at the start of the content: the
/// root element `<coverage>` (Cobertura) or LCOV records mean coverage, anything else is read
/// as JUnit (and fails there with a precise error when it is not).
pub fn detect(bytes: &[u8]) -> Kind {
    if coverage::looks_like_coverage(bytes) {
        Kind::Coverage
    } else {
        Kind::Junit
    }
}

/// Merges several reports (e.g. one per file) into one. A case with the same identity key in
/// several of them becomes one case with all its attempts, in the order given, exactly as a
/// case repeated within one file does.
pub fn merge(reports: impl IntoIterator<Item = model::Report>) -> model::Report {
    let mut out = model::Report::default();
    for r in reports {
        out.suites.extend(r.suites);
    }
    fold_retries(&mut out);
    out
}

/// Merges several coverage reports: files with the same path are combined line by line (hits
/// added), then totals are recomputed.
pub fn merge_coverage(reports: impl IntoIterator<Item = model::Coverage>) -> model::Coverage {
    let mut acc = coverage::Acc::default();
    for r in reports {
        for f in r.files {
            acc.add_file(f);
        }
    }
    acc.finish()
}

/// Folds every later appearance of an identity key into the first one (as further attempts),
/// and records as failed any attempt that was followed by another but does not say it failed.
fn fold_retries(report: &mut model::Report) {
    let mut first: HashMap<String, (usize, usize)> = HashMap::new();
    let mut moved: Vec<((usize, usize), model::Case)> = Vec::new();
    let mut any_dup = false;
    for (si, suite) in report.suites.iter().enumerate() {
        for (ci, case) in suite.cases.iter().enumerate() {
            if first.contains_key(&case.key) {
                any_dup = true;
            } else {
                first.insert(case.key.clone(), (si, ci));
            }
        }
    }
    if any_dup {
        for (si, suite) in report.suites.iter_mut().enumerate() {
            let cases = std::mem::take(&mut suite.cases);
            for (ci, case) in cases.into_iter().enumerate() {
                let home = first[&case.key];
                if home == (si, ci) {
                    suite.cases.push(case);
                } else {
                    moved.push((home, case));
                }
            }
        }
        // Positions shifted only for removed later duplicates; find homes by key again.
        let mut index: HashMap<String, (usize, usize)> = HashMap::new();
        for (si, suite) in report.suites.iter().enumerate() {
            for (ci, case) in suite.cases.iter().enumerate() {
                index.insert(case.key.clone(), (si, ci));
            }
        }
        for (_, case) in moved {
            let (si, ci) = index[&case.key];
            let home = &mut report.suites[si].cases[ci];
            if home.file.is_none() {
                home.file = case.file;
            }
            home.attempts.extend(case.attempts);
        }
    }
    for case in report.suites.iter_mut().flat_map(|s| s.cases.iter_mut()) {
        let n = case.attempts.len();
        for a in case.attempts.iter_mut().take(n.saturating_sub(1)) {
            if a.outcome == Outcome::Passed {
                a.outcome = Outcome::Failed;
                if a.message.is_none() {
                    a.message = Some(RETRIED_WITHOUT_DETAILS.to_string());
                }
            }
        }
    }
}

/// Appends `s` to `buf` without letting `buf` grow past `cap` bytes (cut at a character
/// boundary). Returns false once something was cut.
pub(crate) fn push_capped(buf: &mut String, s: &str, cap: usize) -> bool {
    if buf.len() >= cap {
        return s.is_empty();
    }
    let room = cap - buf.len();
    if s.len() <= room {
        buf.push_str(s);
        true
    } else {
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        buf.push_str(&s[..end]);
        false
    }
}

/// The message of an attempt that the report shows as passed but that was run again (pytest
/// with reruns writes earlier runs as plain testcases).
pub const RETRIED_WITHOUT_DETAILS: &str =
    "failed: the test tool ran it again (its report keeps no details of this run)";

/// The marker appended to text cut by [`Limits::max_text_bytes`].
pub const TRUNCATED: &str = "\n[truncated by ouro: over the text limit]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters() {
        let b = "ab\nçé<x".as_bytes();
        assert_eq!(line_column(b, 0), (1, 1));
        assert_eq!(line_column(b, 3), (2, 1));
        // "çé" is 4 bytes, 2 characters: '<' is column 3.
        assert_eq!(line_column(b, 7), (2, 3));
        assert_eq!(line_column(b, 999), (2, 5));
    }

    #[test]
    fn capped_text_cuts_at_a_character_boundary() {
        let mut s = String::new();
        assert!(push_capped(&mut s, "ab", 4));
        assert!(!push_capped(&mut s, "çé", 4));
        assert_eq!(s, "abç");
        assert!(!push_capped(&mut s, "x", 4));
        assert_eq!(s, "abç");
    }
}
