//! Quality gates (pure): a job's `quality:` thresholds checked against the facts of its ingested
//! reports. Every check says in one sentence which threshold it compared with what value.

use ouro_build::pipeline::Quality;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the gate looks at, computed at ingestion.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// Failed or errored tests that are not quarantined.
    pub failures: u64,
    /// Of those, the ones that did not fail on the target branch's last run.
    pub new_failures: u64,
    /// `(covered, total)` lines of the run's coverage report, when there is one.
    pub coverage: Option<(u64, u64)>,
    /// `(covered, total)` changed lines of the change request, when known.
    pub diff_coverage: Option<(u64, u64)>,
    /// Total test time of this run and of the target branch's last run (ms).
    pub duration_ms: u64,
    pub baseline_duration_ms: Option<u64>,
}

/// One threshold checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    /// The `quality:` key: `max-failures`, `min-coverage`, ...
    pub threshold: String,
    pub limit: f64,
    /// The measured value; none when it could not be measured (the check then passes).
    pub value: Option<f64>,
    pub passed: bool,
    /// E.g. `min-coverage 80% failed: line coverage is 61.5%`.
    pub sentence: String,
}

/// The gate's verdict: passed when every check passed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verdict {
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl Verdict {
    /// The sentences of the failed checks, joined with `; `.
    pub fn failure_sentence(&self) -> Option<String> {
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.sentence.as_str())
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }
}

fn pct(covered: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        (covered as f64 * 1000.0 / total as f64).round() / 10.0
    }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Checks `q` against `f`.
pub fn evaluate(q: &Quality, f: &Facts) -> Verdict {
    let mut checks = Vec::new();
    let mut push = |threshold: &str, limit: f64, value: Option<f64>, ok: bool, what: String| {
        let sentence = match value {
            None => format!("{threshold} {} not checked: {what}", num(limit)),
            Some(_) if ok => format!("{threshold} {} passed: {what}", num(limit)),
            Some(_) => format!("{threshold} {} failed: {what}", num(limit)),
        };
        checks.push(Check {
            threshold: threshold.into(),
            limit,
            value,
            passed: ok || value.is_none(),
            sentence,
        });
    };
    if let Some(max) = q.max_failures {
        let v = f.failures;
        push(
            "max-failures",
            max as f64,
            Some(v as f64),
            v <= max,
            format!("{v} test(s) failed"),
        );
    }
    if let Some(max) = q.max_new_failures {
        let v = f.new_failures;
        push(
            "max-new-failures",
            max as f64,
            Some(v as f64),
            v <= max,
            format!("{v} test(s) failed that did not fail on the target branch"),
        );
    }
    if let Some(min) = q.min_coverage {
        match f.coverage {
            Some((c, t)) => {
                let p = pct(c, t);
                push(
                    "min-coverage",
                    min,
                    Some(p),
                    p >= min,
                    format!("line coverage is {}% ({c} of {t} lines)", num(p)),
                )
            }
            None => push(
                "min-coverage",
                min,
                None,
                true,
                "the job has no coverage report".into(),
            ),
        }
    }
    if let Some(min) = q.min_diff_coverage {
        match (f.diff_coverage, f.coverage) {
            (Some((c, t)), Some(_)) if t > 0 => {
                let p = pct(c, t);
                push(
                    "min-diff-coverage",
                    min,
                    Some(p),
                    p >= min,
                    format!("{}% of the changed lines are covered ({c} of {t})", num(p)),
                )
            }
            (_, None) => push(
                "min-diff-coverage",
                min,
                None,
                true,
                "the job has no coverage report".into(),
            ),
            _ => push(
                "min-diff-coverage",
                min,
                None,
                true,
                "no changed line is instrumented (or the run is not for a change request)".into(),
            ),
        }
    }
    if let Some(max) = q.max_duration_increase {
        match f.baseline_duration_ms {
            Some(base) if base > 0 => {
                let inc = (f.duration_ms as f64 - base as f64) * 100.0 / base as f64;
                let inc = (inc * 10.0).round() / 10.0;
                push(
                    "max-duration-increase",
                    max,
                    Some(inc),
                    inc <= max,
                    format!(
                        "the tests took {} ms, {}% more than the target branch's {} ms",
                        f.duration_ms,
                        num(inc),
                        base
                    ),
                )
            }
            _ => push(
                "max-duration-increase",
                max,
                None,
                true,
                "the target branch has no earlier run to compare with".into(),
            ),
        }
    }
    Verdict {
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_threshold_names_itself_and_the_value() {
        let q = Quality {
            max_failures: Some(0),
            min_coverage: Some(80.0),
            ..Quality::default()
        };
        let v = evaluate(
            &q,
            &Facts {
                failures: 2,
                coverage: Some((615, 1000)),
                ..Facts::default()
            },
        );
        assert!(!v.passed);
        assert_eq!(
            v.failure_sentence().unwrap(),
            "max-failures 0 failed: 2 test(s) failed; min-coverage 80 failed: line coverage is 61.5% (615 of 1000 lines)"
        );
    }

    #[test]
    fn unmeasurable_checks_pass_and_say_so() {
        let q = Quality {
            max_duration_increase: Some(10.0),
            min_diff_coverage: Some(50.0),
            ..Quality::default()
        };
        let v = evaluate(&q, &Facts::default());
        assert!(v.passed);
        assert!(v.checks.iter().all(|c| c.value.is_none()));
        assert!(v.checks[0].sentence.contains("not checked"));
    }

    #[test]
    fn duration_increase_is_percent_of_the_baseline() {
        let q = Quality {
            max_duration_increase: Some(20.0),
            ..Quality::default()
        };
        let f = Facts {
            duration_ms: 1300,
            baseline_duration_ms: Some(1000),
            ..Facts::default()
        };
        let v = evaluate(&q, &f);
        assert!(!v.passed);
        assert_eq!(v.checks[0].value, Some(30.0));
    }
}
