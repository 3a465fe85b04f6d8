//! Gates of one environment, evaluated for one promotion request. Pure: the clock (`now`, ms since
//! the epoch) and every fact are parameters, so tests pin times (DST edges included).
//!
//! - `approvals`: N distinct approvers from the eligible set; with `no-self-approval` the requester
//!   and the release's publisher do not count; any rejection fails the gate.
//! - `wait`: pending until the environment in front succeeded plus the wait (for the first
//!   environment: the request time plus the wait).
//! - `window`: pending outside every deployment window.
//! - `freeze`: pending inside a freeze period.
//! - `checks`: failed when the release's run has failed tests or a failed quality gate (or no
//!   results at all).

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::environments::{self, Check, Environment, Schedule};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GateStatus {
    Passed,
    Pending,
    Failed,
}

impl GateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GateStatus::Passed => "passed",
            GateStatus::Pending => "pending",
            GateStatus::Failed => "failed",
        }
    }
}

/// One gate's state with a human detail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GateState {
    /// `approvals`, `wait`, `window`, `freeze`, `tests-passed` or `quality-gate`.
    pub name: String,
    pub status: GateStatus,
    pub detail: String,
}

/// What gates need to know of the release.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReleaseFacts {
    /// User name of who published it.
    pub publisher: Option<String>,
    /// Failed or errored tests in the release's run (`None`: no test results).
    pub failed_tests: Option<u64>,
    /// Whether every quality gate of the run passed (`None`: no gate was evaluated).
    pub quality_gate_passed: Option<bool>,
}

/// What gates need to know of the promotion request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromotionFacts {
    /// User name of who requested it.
    pub requested_by: String,
    pub requested_at: i64,
}

/// One recorded decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub user: String,
    pub approve: bool,
}

/// Whether `user` may approve for `env` given the eligible set and the request (a reason when not).
pub fn may_approve(
    env: &Environment,
    release: &ReleaseFacts,
    promotion: &PromotionFacts,
    eligible: &BTreeSet<String>,
    user: &str,
) -> Result<(), String> {
    let Some(a) = &env.approvals else {
        return Err(format!("`{}` needs no approval", env.name));
    };
    if !eligible.contains(user) {
        return Err(format!(
            "`{user}` is not an approver for `{}` (approvers: {})",
            env.name,
            a.from.join(", ")
        ));
    }
    if a.no_self_approval {
        if user == promotion.requested_by {
            return Err(format!(
                "`{user}` requested this promotion and `{}` forbids self-approval",
                env.name
            ));
        }
        if release.publisher.as_deref() == Some(user) {
            return Err(format!(
                "`{user}` published this release and `{}` forbids self-approval",
                env.name
            ));
        }
    }
    Ok(())
}

fn fmt_time(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

/// Whether the wall clock minute of `now` in the schedule's zone matches its cron; with the next
/// matching time when it does not (for details).
fn matches(s: &Schedule, now: i64) -> Option<(bool, Option<i64>)> {
    let cron = environments::parse_cron(&s.cron).ok()?;
    let tz = environments::time_zone(&s.timezone)?;
    let t = jiff::Timestamp::from_millisecond(now).ok()?;
    let z = t.to_zoned(tz);
    let hit = cron.is_time_matching(&z).ok()?;
    let next = if hit {
        None
    } else {
        cron.find_next_occurrence(&z, false)
            .ok()
            .map(|n| n.timestamp().as_millisecond())
    };
    Some((hit, next))
}

fn describe(s: &Schedule) -> String {
    format!("`{}` ({})", s.cron, s.timezone)
}

/// Evaluates every gate `env` declares for one promotion. `eligible` holds the user names that
/// may approve (group members and named users); `decisions` the recorded approvals and
/// rejections; `previous_success_at` when the environment in front succeeded for this release.
pub fn evaluate(
    env: &Environment,
    release: &ReleaseFacts,
    promotion: &PromotionFacts,
    decisions: &[Decision],
    eligible: &BTreeSet<String>,
    previous_success_at: Option<i64>,
    now: i64,
) -> Vec<GateState> {
    let mut out = Vec::new();
    let gate = |name: &str, status, detail: String| GateState {
        name: name.to_string(),
        status,
        detail,
    };
    if let Some(a) = &env.approvals {
        let rejected: Vec<&str> = decisions
            .iter()
            .filter(|d| !d.approve)
            .map(|d| d.user.as_str())
            .collect();
        let approvers: BTreeSet<&str> = decisions
            .iter()
            .filter(|d| {
                d.approve && may_approve(env, release, promotion, eligible, &d.user).is_ok()
            })
            .map(|d| d.user.as_str())
            .collect();
        let n = approvers.len() as u32;
        let who = approvers.iter().copied().collect::<Vec<_>>().join(", ");
        out.push(if !rejected.is_empty() {
            gate(
                "approvals",
                GateStatus::Failed,
                format!("rejected by {}", rejected.join(", ")),
            )
        } else if n >= a.required {
            gate(
                "approvals",
                GateStatus::Passed,
                format!("{n} of {} approvals ({who})", a.required),
            )
        } else {
            let mut d = format!("{n} of {} approvals from {}", a.required, a.from.join(", "));
            if !who.is_empty() {
                d.push_str(&format!(" ({who})"));
            }
            if a.no_self_approval {
                d.push_str("; the requester and the publisher cannot approve");
            }
            gate("approvals", GateStatus::Pending, d)
        });
    }
    if let Some(wait) = env.wait_secs {
        let since = match (&env.after, previous_success_at) {
            (None, _) => Some(promotion.requested_at),
            (Some(_), p) => p,
        };
        let utc = jiff::tz::TimeZone::UTC;
        out.push(match since {
            None => gate(
                "wait",
                GateStatus::Pending,
                format!(
                    "waits {}s after `{}` succeeded",
                    wait,
                    env.after.as_deref().unwrap_or("")
                ),
            ),
            Some(s) => {
                let until = s.saturating_add(wait as i64 * 1000);
                if now >= until {
                    gate(
                        "wait",
                        GateStatus::Passed,
                        format!("waited until {}", fmt_time(until, &utc)),
                    )
                } else {
                    gate(
                        "wait",
                        GateStatus::Pending,
                        format!("waiting until {}", fmt_time(until, &utc)),
                    )
                }
            }
        });
    }
    if !env.windows.is_empty() {
        let mut next: Option<(i64, &Schedule)> = None;
        let mut inside = None;
        for w in &env.windows {
            match matches(w, now) {
                Some((true, _)) => {
                    inside = Some(w);
                    break;
                }
                Some((false, Some(n))) if next.is_none_or(|(m, _)| n < m) => next = Some((n, w)),
                _ => {}
            }
        }
        out.push(match (inside, next) {
            (Some(w), _) => gate(
                "window",
                GateStatus::Passed,
                format!("inside window {}", describe(w)),
            ),
            (None, Some((n, w))) => {
                let tz = environments::time_zone(&w.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
                gate(
                    "window",
                    GateStatus::Pending,
                    format!(
                        "outside every deployment window; next opens {} ({})",
                        fmt_time(n, &tz),
                        describe(w)
                    ),
                )
            }
            (None, None) => gate(
                "window",
                GateStatus::Pending,
                "outside every deployment window".into(),
            ),
        });
    }
    if !env.freeze.is_empty() {
        let frozen = env
            .freeze
            .iter()
            .find(|f| matches!(matches(f, now), Some((true, _))));
        out.push(match frozen {
            Some(f) => gate(
                "freeze",
                GateStatus::Pending,
                format!("inside freeze period {}", describe(f)),
            ),
            None => gate("freeze", GateStatus::Passed, "no freeze period now".into()),
        });
    }
    for c in &env.checks {
        out.push(match c {
            Check::TestsPassed => match release.failed_tests {
                Some(0) => gate(c.as_str(), GateStatus::Passed, "no failed tests".into()),
                Some(n) => gate(
                    c.as_str(),
                    GateStatus::Failed,
                    format!("{n} failed tests in the release's run"),
                ),
                None => gate(
                    c.as_str(),
                    GateStatus::Failed,
                    "the release's run reported no test results".into(),
                ),
            },
            Check::QualityGate => match release.quality_gate_passed {
                Some(true) => gate(c.as_str(), GateStatus::Passed, "quality gate passed".into()),
                Some(false) => gate(
                    c.as_str(),
                    GateStatus::Failed,
                    "the quality gate of the release's run failed".into(),
                ),
                None => gate(
                    c.as_str(),
                    GateStatus::Failed,
                    "the release's run evaluated no quality gate".into(),
                ),
            },
        });
    }
    out
}

/// The overall status: failed if any gate failed, else pending if any is pending, else passed.
pub fn overall(gates: &[GateState]) -> GateStatus {
    if gates.iter().any(|g| g.status == GateStatus::Failed) {
        GateStatus::Failed
    } else if gates.iter().any(|g| g.status == GateStatus::Pending) {
        GateStatus::Pending
    } else {
        GateStatus::Passed
    }
}
