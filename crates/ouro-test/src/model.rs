//! The normalised model every report parser produces: a report holds suites, a suite holds
//! cases, a case holds one attempt per execution (retries and re-runs included). Whatever the
//! producer's quirks, a case is counted once and its outcome is its last attempt's.

use serde::{Deserialize, Serialize};

/// What one execution of a test did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    /// An assertion failed (`<failure>`).
    Failed,
    /// The test could not run or crashed (`<error>`).
    Errored,
    Skipped,
}

/// One execution of a test case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub outcome: Outcome,
    /// Wall time in milliseconds, when the report says.
    pub duration_ms: Option<u64>,
    /// The failure/error/skip message (`message=` or the first line of the body).
    pub message: Option<String>,
    /// The failure type (`type=`), e.g. an exception class.
    pub kind: Option<String>,
    /// Failure body, stdout and stderr of this attempt, each capped by the parser's limits.
    pub details: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

/// One test case with all its attempts, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// The suite it was reported in (testsuite `name`, normalised).
    pub suite: String,
    /// `classname`, normalised (empty when absent or equal to `name`).
    pub class: String,
    pub name: String,
    /// The identity that lines up history across runs: `suite/class/name` after normalisation
    /// (see [`identity_key`]).
    pub key: String,
    /// The source file, when the report names it.
    pub file: Option<String>,
    pub attempts: Vec<Attempt>,
}

impl Case {
    /// The case's outcome: its last attempt's.
    pub fn outcome(&self) -> Outcome {
        self.attempts
            .last()
            .map(|a| a.outcome)
            .unwrap_or(Outcome::Passed)
    }

    /// Passed in the end after an earlier attempt did not: it had both outcomes on one commit.
    pub fn is_flaky(&self) -> bool {
        self.attempts.len() > 1 && self.outcome() == Outcome::Passed
    }

    /// The last attempt's duration.
    pub fn duration_ms(&self) -> Option<u64> {
        self.attempts.last().and_then(|a| a.duration_ms)
    }
}

/// One test suite (JUnit `testsuite`). Errors a suite reports without a case to hang them on
/// (gotestsum's package build failure: `errors="1"` and no testcase) become one errored case
/// named after the suite, so nothing reported is lost from the totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    pub name: String,
    /// The report file it came from.
    pub source: String,
    pub cases: Vec<Case>,
}

/// All suites of one or more report files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub suites: Vec<Suite>,
}

/// Counts over a report. A case counts once, by its last attempt; `flaky` cases are also
/// counted in `passed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub errored: u64,
    pub flaky: u64,
}

impl Report {
    pub fn cases(&self) -> impl Iterator<Item = &Case> {
        self.suites.iter().flat_map(|s| s.cases.iter())
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in self.cases() {
            t.total += 1;
            match c.outcome() {
                Outcome::Passed => t.passed += 1,
                Outcome::Failed => t.failed += 1,
                Outcome::Errored => t.errored += 1,
                Outcome::Skipped => t.skipped += 1,
            }
            if c.is_flaky() {
                t.flaky += 1;
            }
        }
        t
    }
}

/// Normalises a name part: trims surrounding whitespace (jest-junit adds a leading space) and
/// collapses inner runs of whitespace.
pub fn normalise(part: &str) -> String {
    part.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The identity key of a case: `suite/class/name`, each part normalised, with the class left
/// empty when it equals the name (jest-junit) so both spellings line up.
pub fn identity_key(suite: &str, class: &str, name: &str) -> String {
    let (suite, class, name) = (normalise(suite), normalise(class), normalise(name));
    let class = if class == name { String::new() } else { class };
    format!("{suite}/{class}/{name}")
}

/// Coverage of one source file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileCoverage {
    /// Path relative to the repository root when it can be made so.
    pub path: String,
    pub lines_total: u64,
    pub lines_covered: u64,
    pub branches_total: u64,
    pub branches_covered: u64,
    /// `(line number, hits)` for every instrumented line, ascending by line.
    pub lines: Vec<(u32, u64)>,
}

/// A coverage report (Cobertura XML or LCOV), merged per file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub files: Vec<FileCoverage>,
}

impl Coverage {
    /// `(covered, total)` lines over all files.
    pub fn line_totals(&self) -> (u64, u64) {
        self.files
            .iter()
            .fold((0, 0), |(c, t), f| (c + f.lines_covered, t + f.lines_total))
    }

    /// `(covered, total)` branches over all files.
    pub fn branch_totals(&self) -> (u64, u64) {
        self.files.iter().fold((0, 0), |(c, t), f| {
            (c + f.branches_covered, t + f.branches_total)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: Outcome) -> Attempt {
        Attempt {
            outcome,
            duration_ms: None,
            message: None,
            kind: None,
            details: None,
            stdout: None,
            stderr: None,
        }
    }

    #[test]
    fn a_retried_case_counts_once_by_its_last_attempt() {
        let case = |name: &str, outcomes: &[Outcome]| Case {
            suite: "s".into(),
            class: String::new(),
            name: name.into(),
            key: identity_key("s", "", name),
            file: None,
            attempts: outcomes.iter().map(|o| attempt(*o)).collect(),
        };
        let report = Report {
            suites: vec![Suite {
                name: "s".into(),
                source: "r.xml".into(),
                cases: vec![
                    case("a", &[Outcome::Failed, Outcome::Passed]),
                    case("b", &[Outcome::Failed, Outcome::Failed]),
                    case("c", &[Outcome::Skipped]),
                    case("d", &[Outcome::Errored]),
                ],
            }],
        };
        let t = report.totals();
        assert_eq!(
            t,
            Totals {
                total: 4,
                passed: 1,
                failed: 1,
                skipped: 1,
                errored: 1,
                flaky: 1
            }
        );
    }

    #[test]
    fn identity_ignores_jest_spacing_and_class_equal_to_name() {
        assert_eq!(
            identity_key(" Suite", " adds  one", "adds one"),
            "Suite//adds one"
        );
        assert_eq!(identity_key("s", "pkg.Cls", "t"), "s/pkg.Cls/t");
    }
}
