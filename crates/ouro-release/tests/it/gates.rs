//! Gates with a fixed clock: approvals (distinct, from the group, no self-approval, rejection),
//! wait timer, windows and freezes in a time zone (across a DST change), checks.

use std::collections::BTreeSet;

use ouro_release::environments::{self, Environment};
use ouro_release::gates::{self, Decision, GateStatus, PromotionFacts, ReleaseFacts};

fn at(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn env(yaml: &str) -> Environment {
    let text = format!("environments:\n  dev: {{}}\n  staging:\n{yaml}");
    environments::parse("e.yml", &text)
        .unwrap()
        .get("staging")
        .unwrap()
        .clone()
}

fn green() -> ReleaseFacts {
    ReleaseFacts {
        publisher: Some("pat".into()),
        failed_tests: Some(0),
        quality_gate_passed: Some(true),
    }
}

fn req(by: &str) -> PromotionFacts {
    PromotionFacts {
        requested_by: by.into(),
        requested_at: at("2026-03-02T10:00:00Z"),
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn yes(u: &str) -> Decision {
    Decision {
        user: u.into(),
        approve: true,
    }
}

fn state(gs: &[gates::GateState], name: &str) -> (GateStatus, String) {
    let g = gs.iter().find(|g| g.name == name).expect(name);
    (g.status, g.detail.clone())
}

#[test]
fn approvals_count_distinct_eligible_approvers_and_exclude_the_requester_and_publisher() {
    let e = env("    approvals: {required: 2, from: [maintainers], no-self-approval: true}\n");
    let eligible = set(&["ann", "bob", "pat", "rex"]);
    let now = at("2026-03-02T10:00:00Z");
    let run = |ds: &[Decision]| {
        state(
            &gates::evaluate(&e, &green(), &req("rex"), ds, &eligible, Some(now), now),
            "approvals",
        )
    };
    assert_eq!(run(&[]).0, GateStatus::Pending);
    // The requester and the publisher do not count, nor does someone outside the group.
    assert_eq!(
        run(&[yes("rex"), yes("pat"), yes("zed"), yes("ann")]).0,
        GateStatus::Pending
    );
    assert_eq!(run(&[yes("ann"), yes("ann")]).0, GateStatus::Pending);
    let (s, d) = run(&[yes("ann"), yes("bob")]);
    assert_eq!(s, GateStatus::Passed);
    assert_eq!(d, "2 of 2 approvals (ann, bob)");
    let no = Decision {
        user: "bob".into(),
        approve: false,
    };
    let (s, d) = run(&[yes("ann"), no]);
    assert_eq!(s, GateStatus::Failed);
    assert_eq!(d, "rejected by bob");

    let err = gates::may_approve(&e, &green(), &req("rex"), &eligible, "rex").unwrap_err();
    assert!(err.contains("requested this promotion"), "{err}");
    let err = gates::may_approve(&e, &green(), &req("rex"), &eligible, "pat").unwrap_err();
    assert!(err.contains("published this release"), "{err}");
    assert!(gates::may_approve(&e, &green(), &req("rex"), &eligible, "zed").is_err());
    assert!(gates::may_approve(&e, &green(), &req("rex"), &eligible, "ann").is_ok());

    // Without no-self-approval the requester may approve.
    let open = env("    approvals: {required: 1, from: [maintainers]}\n");
    assert!(gates::may_approve(&open, &green(), &req("rex"), &eligible, "rex").is_ok());
}

#[test]
fn the_wait_timer_runs_from_the_previous_success() {
    let e = env("    wait: 10m\n");
    let done = at("2026-03-02T10:00:00Z");
    let g = |now| {
        state(
            &gates::evaluate(&e, &green(), &req("rex"), &[], &set(&[]), Some(done), now),
            "wait",
        )
    };
    let (s, d) = g(at("2026-03-02T10:09:59Z"));
    assert_eq!(s, GateStatus::Pending);
    assert_eq!(d, "waiting until 2026-03-02 10:10 UTC");
    assert_eq!(g(at("2026-03-02T10:10:00Z")).0, GateStatus::Passed);
}

#[test]
fn windows_follow_the_time_zone_across_daylight_saving_time() {
    let e = env("    windows: [{cron: \"* 9-17 * * 1-5\", timezone: \"Europe/Paris\"}]\n");
    let g = |now| {
        state(
            &gates::evaluate(&e, &green(), &req("rex"), &[], &set(&[]), None, now),
            "window",
        )
    };
    // Friday 27 March 2026, CET (UTC+1): 07:30 UTC is 08:30 in Paris, 08:30 UTC is 09:30.
    let (s, d) = g(at("2026-03-27T07:30:00Z"));
    assert_eq!(s, GateStatus::Pending);
    assert!(d.contains("next opens 2026-03-27 09:00 CET"), "{d}");
    assert_eq!(g(at("2026-03-27T08:30:00Z")).0, GateStatus::Passed);
    // Clocks go forward on Sunday 29 March; Monday 30 March is CEST (UTC+2): 07:30 UTC is 09:30.
    assert_eq!(g(at("2026-03-30T07:30:00Z")).0, GateStatus::Passed);
    assert_eq!(g(at("2026-03-30T15:59:00Z")).0, GateStatus::Passed);
    assert_eq!(g(at("2026-03-30T16:00:00Z")).0, GateStatus::Pending);
    // Saturday: outside; the next window opens Monday 09:00 CEST.
    let (s, d) = g(at("2026-03-28T12:00:00Z"));
    assert_eq!(s, GateStatus::Pending);
    assert!(d.contains("next opens 2026-03-30 09:00 CEST"), "{d}");
}

#[test]
fn a_window_in_the_skipped_hour_never_opens_that_day() {
    // 02:00-02:59 does not exist in Paris on 29 March 2026.
    let e = env("    windows: [{cron: \"* 2 * * *\", timezone: \"Europe/Paris\"}]\n");
    let g = |now| {
        state(
            &gates::evaluate(&e, &green(), &req("rex"), &[], &set(&[]), None, now),
            "window",
        )
    };
    for m in [
        "2026-03-29T00:59:00Z",
        "2026-03-29T01:00:00Z",
        "2026-03-29T01:30:00Z",
    ] {
        assert_eq!(g(at(m)).0, GateStatus::Pending, "{m}");
    }
    // The day before it is 01:00 UTC (CET) and open.
    assert_eq!(g(at("2026-03-28T01:30:00Z")).0, GateStatus::Passed);
    let (_, d) = g(at("2026-03-29T01:30:00Z"));
    assert!(d.contains("next opens 2026-03-30 02:00 CEST"), "{d}");
}

#[test]
fn freeze_periods_block_inside_only() {
    let e = env("    freeze: [{cron: \"* * 24-26 12 *\", timezone: \"America/New_York\"}]\n");
    let g = |now| {
        state(
            &gates::evaluate(&e, &green(), &req("rex"), &[], &set(&[]), None, now),
            "freeze",
        )
    };
    // 24 Dec 03:00 UTC is still 23 Dec 22:00 in New York.
    assert_eq!(g(at("2026-12-24T03:00:00Z")).0, GateStatus::Passed);
    let (s, d) = g(at("2026-12-24T06:00:00Z"));
    assert_eq!(s, GateStatus::Pending);
    assert!(d.contains("inside freeze period"), "{d}");
    assert_eq!(g(at("2026-12-27T04:59:00Z")).0, GateStatus::Pending);
    assert_eq!(g(at("2026-12-27T05:00:00Z")).0, GateStatus::Passed);
}

#[test]
fn checks_fail_on_failed_tests_a_failed_gate_or_no_results() {
    let e = env("    checks: [tests-passed, quality-gate]\n");
    let now = at("2026-03-02T10:00:00Z");
    let run = |f: &ReleaseFacts| gates::evaluate(&e, f, &req("rex"), &[], &set(&[]), None, now);
    let gs = run(&green());
    assert_eq!(gates::overall(&gs), GateStatus::Passed);
    let red = ReleaseFacts {
        failed_tests: Some(3),
        quality_gate_passed: Some(false),
        ..green()
    };
    let gs = run(&red);
    assert_eq!(
        state(&gs, "tests-passed"),
        (
            GateStatus::Failed,
            "3 failed tests in the release's run".into()
        )
    );
    assert_eq!(state(&gs, "quality-gate").0, GateStatus::Failed);
    assert_eq!(gates::overall(&gs), GateStatus::Failed);
    let gs = run(&ReleaseFacts::default());
    assert_eq!(state(&gs, "tests-passed").0, GateStatus::Failed);
}

#[test]
fn an_environment_without_gates_passes_at_once() {
    let e = env("    after: dev\n");
    let gs = gates::evaluate(&e, &green(), &req("rex"), &[], &set(&[]), None, 0);
    assert!(gs.is_empty());
    assert_eq!(gates::overall(&gs), GateStatus::Passed);
}
