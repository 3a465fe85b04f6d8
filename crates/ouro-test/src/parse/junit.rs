//! JUnit XML, streamed: `testsuites` > `testsuite` (possibly nested) > `testcase` > outcome,
//! retry and output elements. Unknown elements are skipped.

use super::xml::{Ev, Xml, attr};
use super::{Limits, ParseError, TRUNCATED, codes, push_capped, text};
use crate::model::{self, Attempt, Case, Outcome, Suite};

/// Text kept under a cap, remembering whether something was cut.
#[derive(Default)]
struct Capped {
    s: String,
    cut: bool,
}

impl Capped {
    fn push(&mut self, s: &str, cap: usize) {
        if !push_capped(&mut self.s, s, cap) {
            self.cut = true;
        }
    }

    fn finish(self) -> Option<String> {
        if self.s.trim().is_empty() {
            return None;
        }
        let mut s = self.s;
        if self.cut {
            s.push_str(TRUNCATED);
        }
        Some(s)
    }
}

struct AttemptBuild {
    outcome: Outcome,
    message: Option<String>,
    kind: Option<String>,
    duration_ms: Option<u64>,
    details: Capped,
    stdout: Capped,
    stderr: Capped,
}

impl AttemptBuild {
    fn new(outcome: Outcome, attrs: &[(String, String)]) -> Self {
        Self {
            outcome,
            message: attr(attrs, "message")
                .filter(|m| !m.trim().is_empty())
                .map(str::to_string),
            kind: attr(attrs, "type")
                .filter(|m| !m.trim().is_empty())
                .map(str::to_string),
            duration_ms: attr(attrs, "time").and_then(seconds_to_ms),
            details: Capped::default(),
            stdout: Capped::default(),
            stderr: Capped::default(),
        }
    }

    fn finish(self, cap: usize) -> Attempt {
        let details = self.details.finish();
        let message = self.message.or_else(|| {
            details.as_deref().and_then(|d| {
                d.lines().map(str::trim).find(|l| !l.is_empty()).map(|l| {
                    let mut m = String::new();
                    push_capped(&mut m, l, cap.min(1024));
                    m
                })
            })
        });
        Attempt {
            outcome: self.outcome,
            duration_ms: self.duration_ms,
            message,
            kind: self.kind,
            details,
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
        }
    }
}

struct CaseBuild {
    suite: usize,
    name: String,
    class: String,
    file: Option<String>,
    main: AttemptBuild,
    retries: Vec<AttemptBuild>,
}

struct SuiteBuild {
    index: usize,
    errors: u64,
    failures: u64,
    out: Capped,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    MainDetails,
    CaseStdout,
    CaseStderr,
    RetryDetails,
    RetryStdout,
    RetryStderr,
    SuiteOut,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Frame {
    Suites,
    Suite,
    Case,
    Retry,
    /// An element whose text goes to the target (or nowhere).
    Text(Option<Target>),
}

impl Frame {
    fn target(self) -> Option<Target> {
        match self {
            Frame::Retry => Some(Target::RetryDetails),
            Frame::Text(t) => t,
            _ => None,
        }
    }
}

struct Parser<'a> {
    limits: &'a Limits,
    file: &'a str,
    suites: Vec<Suite>,
    suite_stack: Vec<SuiteBuild>,
    /// The suite for cases found directly under `<testsuites>`.
    loose_suite: Option<usize>,
    suites_name: String,
    frames: Vec<Frame>,
    case: Option<CaseBuild>,
    cases_seen: usize,
}

fn severity(o: Outcome) -> u8 {
    match o {
        Outcome::Passed => 0,
        Outcome::Skipped => 1,
        Outcome::Failed => 2,
        Outcome::Errored => 3,
    }
}

/// Seconds as JUnit writes them (`0.123`, Surefire's locale-formatted `1,234.5`) to whole
/// milliseconds; `None` when absent or not a finite non-negative number.
pub(crate) fn seconds_to_ms(s: &str) -> Option<u64> {
    let s = s.trim().replace(',', "");
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    Some((v * 1000.0).round() as u64)
}

pub(crate) fn parse(
    file: &str,
    bytes: &[u8],
    limits: &Limits,
) -> Result<model::Report, ParseError> {
    let (body, base) = text(file, bytes, limits)?;
    let mut xml = Xml::new(file, bytes, body, base, limits);
    let mut p = Parser {
        limits,
        file,
        suites: Vec::new(),
        suite_stack: Vec::new(),
        loose_suite: None,
        suites_name: String::new(),
        frames: Vec::new(),
        case: None,
        cases_seen: 0,
    };
    let mut root_seen = false;
    loop {
        match xml.next()? {
            Ev::Eof => break,
            Ev::Start { name, attrs, empty } => {
                if !root_seen {
                    if name != "testsuites" && name != "testsuite" {
                        return Err(xml.error(
                            codes::NOT_JUNIT,
                            format!(
                                "the root element is <{name}>, not <testsuites> or <testsuite>: this is not a JUnit XML report"
                            ),
                        ));
                    }
                    root_seen = true;
                } else if p.frames.is_empty() {
                    // A second root element: not well-formed XML, quick-xml lets it through.
                    return Err(xml.error(
                        codes::XML_MALFORMED,
                        "malformed XML: more than one root element",
                    ));
                }
                let frame = p.start(&xml, &name, &attrs)?;
                if empty {
                    p.end(frame);
                } else {
                    p.frames.push(frame);
                }
            }
            Ev::End => {
                if let Some(f) = p.frames.pop() {
                    p.end(f);
                }
            }
            Ev::Text(t) => {
                if let Some(target) = p.frames.last().and_then(|f| f.target()) {
                    p.text(target, &t);
                }
            }
        }
    }
    if !root_seen {
        return Err(ParseError::at(
            codes::NOT_JUNIT,
            file,
            bytes,
            0,
            "the file has no XML element: this is not a JUnit XML report",
        ));
    }
    Ok(model::Report { suites: p.suites })
}

impl Parser<'_> {
    fn start(
        &mut self,
        xml: &Xml<'_>,
        name: &str,
        attrs: &[(String, String)],
    ) -> Result<Frame, ParseError> {
        let parent = self.frames.last().copied();
        let frame = match (parent, name) {
            (Some(Frame::Text(t)), _) => Frame::Text(t),
            (Some(Frame::Retry), "stackTrace") => Frame::Text(Some(Target::RetryDetails)),
            (Some(Frame::Retry), "system-out") => Frame::Text(Some(Target::RetryStdout)),
            (Some(Frame::Retry), "system-err") => Frame::Text(Some(Target::RetryStderr)),
            (Some(Frame::Retry), _) => Frame::Text(None),
            (Some(Frame::Case), "failure" | "error" | "skipped") => {
                let outcome = match name {
                    "failure" => Outcome::Failed,
                    "error" => Outcome::Errored,
                    _ => Outcome::Skipped,
                };
                let case = self.case.as_mut().expect("a case frame has a case");
                let new = AttemptBuild::new(outcome, attrs);
                if severity(outcome) > severity(case.main.outcome) {
                    let old = std::mem::replace(&mut case.main, new);
                    case.main.duration_ms = old.duration_ms;
                    case.main.stdout = old.stdout;
                    case.main.stderr = old.stderr;
                    case.main.details = old.details;
                } else if case.main.message.is_none() {
                    case.main.message = new.message;
                }
                Frame::Text(Some(Target::MainDetails))
            }
            (Some(Frame::Case), "system-out") => Frame::Text(Some(Target::CaseStdout)),
            (Some(Frame::Case), "system-err") => Frame::Text(Some(Target::CaseStderr)),
            (Some(Frame::Case), "flakyFailure" | "flakyError" | "rerunFailure" | "rerunError") => {
                let outcome = if name.ends_with("Error") {
                    Outcome::Errored
                } else {
                    Outcome::Failed
                };
                let case = self.case.as_mut().expect("a case frame has a case");
                case.retries.push(AttemptBuild::new(outcome, attrs));
                Frame::Retry
            }
            (Some(Frame::Case), _) => Frame::Text(None),
            (Some(Frame::Suite), "system-out" | "system-err") => {
                Frame::Text(Some(Target::SuiteOut))
            }
            (None | Some(Frame::Suites) | Some(Frame::Suite), "testsuites") => {
                if parent.is_none() {
                    self.suites_name = model::normalise(attr(attrs, "name").unwrap_or(""));
                }
                Frame::Suites
            }
            (None | Some(Frame::Suites) | Some(Frame::Suite), "testsuite") => {
                let name = model::normalise(attr(attrs, "name").unwrap_or(""));
                let count = |k| {
                    attr(attrs, k)
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                self.suites.push(Suite {
                    name,
                    source: self.file.to_string(),
                    cases: Vec::new(),
                });
                self.suite_stack.push(SuiteBuild {
                    index: self.suites.len() - 1,
                    errors: count("errors"),
                    failures: count("failures"),
                    out: Capped::default(),
                });
                Frame::Suite
            }
            (Some(Frame::Suites) | Some(Frame::Suite), "testcase") => {
                self.cases_seen += 1;
                if self.cases_seen > self.limits.max_cases {
                    return Err(xml.error(
                        codes::LIMIT_EXCEEDED,
                        format!(
                            "the report has more test cases than the limit of {}",
                            self.limits.max_cases
                        ),
                    ));
                }
                let suite = match self.suite_stack.last() {
                    Some(s) => s.index,
                    None => self.loose_suite(),
                };
                let mut main = AttemptBuild::new(Outcome::Passed, &[]);
                main.duration_ms = attr(attrs, "time").and_then(seconds_to_ms);
                if let Some(status) = attr(attrs, "status")
                    && matches!(
                        status.trim().to_ascii_lowercase().as_str(),
                        "skipped" | "notrun" | "disabled" | "ignored"
                    )
                {
                    main.outcome = Outcome::Skipped;
                }
                self.case = Some(CaseBuild {
                    suite,
                    name: model::normalise(attr(attrs, "name").unwrap_or("")),
                    class: model::normalise(attr(attrs, "classname").unwrap_or("")),
                    file: attr(attrs, "file")
                        .filter(|f| !f.trim().is_empty())
                        .map(|f| f.trim().to_string()),
                    main,
                    retries: Vec::new(),
                });
                Frame::Case
            }
            _ => Frame::Text(None),
        };
        Ok(frame)
    }

    fn loose_suite(&mut self) -> usize {
        if let Some(i) = self.loose_suite {
            return i;
        }
        self.suites.push(Suite {
            name: self.suites_name.clone(),
            source: self.file.to_string(),
            cases: Vec::new(),
        });
        self.loose_suite = Some(self.suites.len() - 1);
        self.suites.len() - 1
    }

    fn text(&mut self, target: Target, t: &str) {
        let cap = self.limits.max_text_bytes;
        if target == Target::SuiteOut {
            if let Some(s) = self.suite_stack.last_mut() {
                s.out.push(t, cap);
            }
            return;
        }
        let Some(case) = self.case.as_mut() else {
            return;
        };
        let buf = match target {
            Target::MainDetails => &mut case.main.details,
            Target::CaseStdout => &mut case.main.stdout,
            Target::CaseStderr => &mut case.main.stderr,
            Target::RetryDetails | Target::RetryStdout | Target::RetryStderr => {
                let Some(r) = case.retries.last_mut() else {
                    return;
                };
                match target {
                    Target::RetryDetails => &mut r.details,
                    Target::RetryStdout => &mut r.stdout,
                    _ => &mut r.stderr,
                }
            }
            Target::SuiteOut => unreachable!("handled above"),
        };
        buf.push(t, cap);
    }

    fn end(&mut self, frame: Frame) {
        match frame {
            Frame::Case => {
                if let Some(c) = self.case.take() {
                    self.finish_case(c);
                }
            }
            Frame::Suite => {
                if let Some(s) = self.suite_stack.pop() {
                    self.finish_suite(s);
                }
            }
            _ => {}
        }
    }

    fn finish_case(&mut self, c: CaseBuild) {
        let cap = self.limits.max_text_bytes;
        let suite_name = self.suites[c.suite].name.clone();
        let class = if c.class == c.name {
            String::new()
        } else {
            c.class
        };
        let key = model::identity_key(&suite_name, &class, &c.name);
        // Retry elements next to a passed (or skipped) testcase are its earlier, failed
        // attempts (`flaky*`); next to a failure they are the re-runs after it (`rerun*`).
        let main_failed = matches!(c.main.outcome, Outcome::Failed | Outcome::Errored);
        let mut attempts = Vec::with_capacity(c.retries.len() + 1);
        if main_failed {
            attempts.push(c.main.finish(cap));
            attempts.extend(c.retries.into_iter().map(|r| r.finish(cap)));
        } else {
            attempts.extend(c.retries.into_iter().map(|r| r.finish(cap)));
            attempts.push(c.main.finish(cap));
        }
        self.suites[c.suite].cases.push(Case {
            suite: suite_name,
            class,
            name: c.name,
            key,
            file: c.file,
            attempts,
        });
    }

    fn finish_suite(&mut self, s: SuiteBuild) {
        let suite = &mut self.suites[s.index];
        if !suite.cases.is_empty() || (s.errors == 0 && s.failures == 0) {
            return;
        }
        let n = s.errors.max(s.failures);
        let name = suite.name.clone();
        suite.cases.push(Case {
            suite: name.clone(),
            class: String::new(),
            key: model::identity_key(&name, "", &name),
            name: name.clone(),
            file: None,
            attempts: vec![Attempt {
                outcome: Outcome::Errored,
                duration_ms: None,
                message: Some(format!(
                    "the suite reports {n} {} but no test case: it did not run (e.g. a package that did not build)",
                    if s.errors > 0 { "error(s)" } else { "failure(s)" }
                )),
                kind: None,
                details: s.out.finish(),
                stdout: None,
                stderr: None,
            }],
        });
    }
}
