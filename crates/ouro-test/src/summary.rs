//! The normalised summary `ouro test-report parse` prints: one JSON object (the contract in
//! docs/test-reports.md) or a short text for people.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::model::{Case, Coverage, Outcome, Report};

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
        Outcome::Errored => "errored",
        Outcome::Skipped => "skipped",
    }
}

/// The message worth showing for a case: its last attempt's, or for a case that passed in the
/// end, the last failed attempt's (why it was flaky).
pub fn message(c: &Case) -> Option<&str> {
    let last = c.attempts.last()?;
    if let Some(m) = last.message.as_deref() {
        return Some(m);
    }
    if c.is_flaky() {
        return c.attempts.iter().rev().find_map(|a| a.message.as_deref());
    }
    None
}

fn percent(covered: u64, total: u64) -> Value {
    if total == 0 {
        Value::Null
    } else {
        // Two decimals, as a number.
        json!((covered as f64 * 10_000.0 / total as f64).round() / 100.0)
    }
}

/// The contract object: integer `total`, `passed`, `failed`, `skipped`, `errored`, `flaky`, the
/// `cases` array, and a `coverage` object when coverage was given.
pub fn json(report: &Report, coverage: Option<&Coverage>) -> Value {
    let t = report.totals();
    let cases: Vec<Value> = report
        .cases()
        .map(|c| {
            json!({
                "suite": c.suite,
                "class": c.class,
                "name": c.name,
                "key": c.key,
                "outcome": outcome_str(c.outcome()),
                "attempts": c.attempts.len(),
                "duration_ms": c.duration_ms(),
                "message": message(c),
                "flaky": c.is_flaky(),
            })
        })
        .collect();
    let mut v = json!({
        "total": t.total,
        "passed": t.passed,
        "failed": t.failed,
        "skipped": t.skipped,
        "errored": t.errored,
        "flaky": t.flaky,
        "cases": cases,
    });
    if let Some(cov) = coverage {
        let (lc, lt) = cov.line_totals();
        let (bc, bt) = cov.branch_totals();
        v["coverage"] = json!({
            "lines_covered": lc,
            "lines_total": lt,
            "line_percent": percent(lc, lt),
            "branches_covered": bc,
            "branches_total": bt,
            "branch_percent": percent(bc, bt),
            "files": cov.files.iter().map(|f| json!({
                "path": f.path,
                "lines_covered": f.lines_covered,
                "lines_total": f.lines_total,
                "branches_covered": f.branches_covered,
                "branches_total": f.branches_total,
            })).collect::<Vec<_>>(),
        });
    }
    v
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// A short text for people: totals, failures with their message, flaky tests, coverage.
pub fn text(report: &Report, coverage: Option<&Coverage>) -> String {
    let t = report.totals();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} tests: {} passed, {} failed, {} errored, {} skipped ({} flaky)",
        t.total, t.passed, t.failed, t.errored, t.skipped, t.flaky
    );
    let bad: Vec<&Case> = report
        .cases()
        .filter(|c| matches!(c.outcome(), Outcome::Failed | Outcome::Errored))
        .collect();
    if !bad.is_empty() {
        let _ = writeln!(out, "\nFailures:");
        for c in bad {
            let tries = if c.attempts.len() > 1 {
                format!(" [{} attempts]", c.attempts.len())
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {} {}{tries}",
                outcome_str(c.outcome()).to_uppercase(),
                c.key
            );
            if let Some(m) = message(c) {
                let _ = writeln!(out, "      {}", first_line(m));
            }
        }
    }
    let flaky: Vec<&Case> = report.cases().filter(|c| c.is_flaky()).collect();
    if !flaky.is_empty() {
        let _ = writeln!(out, "\nFlaky (passed on retry):");
        for c in flaky {
            let _ = writeln!(out, "  {} passed on attempt {}", c.key, c.attempts.len());
            if let Some(m) = message(c) {
                let _ = writeln!(out, "      {}", first_line(m));
            }
        }
    }
    if let Some(cov) = coverage {
        let (lc, lt) = cov.line_totals();
        let (bc, bt) = cov.branch_totals();
        let pct = |c: u64, t: u64| {
            if t == 0 {
                "n/a".to_string()
            } else {
                format!("{:.2}%", c as f64 * 100.0 / t as f64)
            }
        };
        let _ = writeln!(
            out,
            "\nCoverage: lines {lc}/{lt} ({}), branches {bc}/{bt} ({}) in {} files",
            pct(lc, lt),
            pct(bc, bt),
            cov.files.len()
        );
    }
    out
}
