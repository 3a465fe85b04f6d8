//! The run planner: trigger filters, matrix expansion into concrete jobs, needs fan-in, DAG
//! layers, `if:` and skip rules, run status derivation.

use ouro_build::plan::{
    Decision, EventKind, JobState, PlanError, RunStatus, Trigger, derive_run_status,
    filter_matches, plan,
};

fn pipeline(src: &str) -> ouro_build::Pipeline {
    ouro_build::parse("ci.yml", src.as_bytes()).unwrap_or_else(|d| panic!("{d:?}"))
}

const SHA: &str = "0123456789012345678901234567890123456789";

fn runs(src: &str, t: &Trigger) -> bool {
    match plan("ci", &pipeline(src), t) {
        Ok(_) => true,
        Err(PlanError::NotTriggered(_)) => false,
        Err(e) => panic!("{e}"),
    }
}

const STEP: &str = "jobs:\n  a:\n    steps:\n      - run: 'true'\n";

#[test]
fn branch_filters_with_globs_and_negation() {
    let src =
        format!("on:\n  push:\n    branches: [main, \"release/**\", \"!release/old\"]\n{STEP}");
    assert!(runs(&src, &Trigger::push("main", SHA)));
    assert!(runs(&src, &Trigger::push("release/1.0", SHA)));
    assert!(runs(&src, &Trigger::push("release/a/b", SHA)));
    assert!(!runs(&src, &Trigger::push("release/old", SHA)));
    assert!(!runs(&src, &Trigger::push("feature", SHA)));
    // No tags listed: tag pushes do not run it.
    assert!(!runs(&src, &Trigger::tag("v1", SHA)));
    // `*` stays within a segment.
    assert!(filter_matches(&["feat/*".into()], "feat/x"));
    assert!(!filter_matches(&["feat/*".into()], "feat/x/y"));
    // Only negative patterns: everything else is included.
    assert!(filter_matches(&["!wip".into()], "main"));
    assert!(!filter_matches(&["!wip".into()], "wip"));
    // The last matching pattern decides.
    assert!(filter_matches(
        &["**".into(), "!tmp/*".into(), "tmp/keep".into()],
        "tmp/keep"
    ));
}

#[test]
fn tag_and_path_filters() {
    let src = format!(
        "on:\n  push:\n    tags: [\"v*\", \"!v0*\"]\n    paths: [\"src/**\", \"!src/gen/**\"]\n{STEP}"
    );
    assert!(runs(&src, &Trigger::tag("v1.2", SHA)));
    assert!(!runs(&src, &Trigger::tag("v0.9", SHA)));
    assert!(!runs(&src, &Trigger::tag("release", SHA)));
    // Branches: every branch (none listed), but the paths filter applies.
    let mut t = Trigger::push("main", SHA);
    t.changed_paths = Some(vec!["docs/a.md".into()]);
    assert!(!runs(&src, &t));
    t.changed_paths = Some(vec!["src/gen/x.rs".into()]);
    assert!(!runs(&src, &t));
    t.changed_paths = Some(vec!["docs/a.md".into(), "src/lib.rs".into()]);
    assert!(runs(&src, &t));
    // Unknown changes (a new branch): runs.
    t.changed_paths = None;
    assert!(runs(&src, &t));
}

#[test]
fn events_and_manual_inputs() {
    let src = format!(
        "on:\n  manual:\n    inputs:\n      level:\n        type: choice\n        options: [low, high]\n        default: low\n      dry:\n        type: boolean\n        required: true\n{STEP}"
    );
    let p = pipeline(&src);
    assert!(matches!(
        plan("ci", &p, &Trigger::push("main", SHA)),
        Err(PlanError::NotTriggered(_))
    ));
    let mut t = Trigger::push("main", SHA);
    t.event = EventKind::Manual;
    let e = plan("ci", &p, &t).unwrap_err();
    assert_eq!(e.code(), "plan.input");
    t.inputs.insert("dry".into(), "true".into());
    let rp = plan("ci", &p, &t).unwrap();
    assert_eq!(rp.inputs["dry"], serde_json::json!(true));
    assert_eq!(rp.inputs["level"], serde_json::json!("low"));
    t.inputs.insert("level".into(), "medium".into());
    assert_eq!(plan("ci", &p, &t).unwrap_err().code(), "plan.input");
    // No `on:`: push and change request.
    let mut cr = Trigger::push("topic", SHA);
    cr.event = EventKind::ChangeRequest;
    cr.target_branch = Some("main".into());
    assert!(runs(STEP, &cr));
    assert!(runs(STEP, &Trigger::push("x", SHA)));
    let only_main = format!("on:\n  change_request:\n    branches: [main]\n{STEP}");
    assert!(runs(&only_main, &cr));
    cr.target_branch = Some("dev".into());
    assert!(!runs(&only_main, &cr));
}

const DAG: &str = "
jobs:
  build:
    strategy:
      matrix:
        os: [linux, mac]
        rust: ['1.80', stable]
        exclude:
          - os: mac
            rust: '1.80'
    steps:
      - run: echo ${{ matrix.os }}
  lint:
    steps:
      - run: 'true'
  test:
    needs: [build, lint]
    steps:
      - run: 'true'
  deploy:
    needs: test
    if: ouro.branch == 'main'
    steps:
      - run: 'true'
  report:
    needs: test
    if: always()
    steps:
      - run: 'true'
";

#[test]
fn matrix_expansion_needs_fan_in_and_layers() {
    let rp = plan("ci", &pipeline(DAG), &Trigger::push("main", SHA)).unwrap();
    let ids: Vec<&str> = rp.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "build (linux, 1.80)",
            "build (linux, stable)",
            "build (mac, stable)",
            "lint",
            "test",
            "deploy",
            "report"
        ]
    );
    let keys: Vec<&str> = rp.jobs.iter().map(|j| j.key.as_str()).collect();
    assert_eq!(keys[..4], ["build.1", "build.2", "build.3", "lint"]);
    assert_eq!(rp.jobs[1].matrix["rust"], serde_json::json!("stable"));
    assert_eq!(rp.jobs[1].base, "build");
    // test needs all three expansions and lint.
    assert_eq!(rp.jobs[4].needs, vec![0, 1, 2, 3]);
    let layers = rp.layers();
    assert_eq!(layers, vec![vec![0, 1, 2, 3], vec![4], vec![5, 6]]);
    // --job test keeps test and everything it needs.
    let only = rp.only(&["test".into()]).unwrap();
    assert_eq!(only.jobs.len(), 5);
    assert_eq!(only.jobs[4].needs, vec![0, 1, 2, 3]);
    let one = rp.only(&["build (mac, stable)".into()]).unwrap();
    assert_eq!(one.jobs.len(), 1);
    assert!(rp.only(&["nope".into()]).is_err());
}

#[test]
fn ready_if_and_skip_rules() {
    let rp = plan("ci", &pipeline(DAG), &Trigger::push("main", SHA)).unwrap();
    let mut st = vec![JobState::Queued; rp.jobs.len()];
    assert_eq!(rp.ready(&st), vec![0, 1, 2, 3]);
    st[0] = JobState::Success;
    st[1] = JobState::Success;
    st[2] = JobState::Running;
    st[3] = JobState::Success;
    assert_eq!(rp.ready(&st), Vec::<usize>::new());
    // One matrix expansion failed: test (default success()) is skipped.
    st[2] = JobState::Failure;
    assert_eq!(rp.ready(&st), vec![4]);
    assert!(matches!(rp.decide(4, &st, false), Ok(Decision::Skip(_))));
    st[2] = JobState::Success;
    assert_eq!(rp.decide(4, &st, false), Ok(Decision::Run));
    st[4] = JobState::Failure;
    assert_eq!(rp.ready(&st), vec![5, 6]);
    // deploy: implicit success() && branch == main -> skipped; report: always() -> runs.
    assert!(matches!(rp.decide(5, &st, false), Ok(Decision::Skip(_))));
    assert_eq!(rp.decide(6, &st, false), Ok(Decision::Run));
    // needs.<job>.result in the context.
    let ctx = rp.job_context(6, &st, false);
    assert!(
        ouro_build::expr::eval_condition("always() && needs.test.result == 'failure'", &ctx)
            .unwrap()
    );
    // Test succeeded: deploy runs on main, is skipped on another branch.
    st[4] = JobState::Success;
    assert_eq!(rp.decide(5, &st, false), Ok(Decision::Run));
    let other = plan("ci", &pipeline(DAG), &Trigger::push("dev", SHA)).unwrap();
    assert!(matches!(other.decide(5, &st, false), Ok(Decision::Skip(_))));
    // A skipped need skips a default-success dependent.
    let chain = pipeline(
        "jobs:\n  a:\n    if: \"false\"\n    steps: [{run: 'true'}]\n  b:\n    needs: a\n    steps: [{run: 'true'}]\n",
    );
    let cp = plan("ci", &chain, &Trigger::push("main", SHA)).unwrap();
    assert!(matches!(
        cp.decide(0, &[JobState::Queued; 2], false),
        Ok(Decision::Skip(_))
    ));
    assert!(matches!(
        cp.decide(1, &[JobState::Skipped, JobState::Queued], false),
        Ok(Decision::Skip(_))
    ));
    // A cancelled run cancels what has not started, except always().
    st[4] = JobState::Cancelled;
    assert_eq!(rp.decide(5, &st, true), Ok(Decision::Cancel));
    assert_eq!(rp.decide(6, &st, true), Ok(Decision::Run));
}

#[test]
fn run_status_derivation() {
    use JobState::*;
    assert_eq!(
        derive_run_status(&[(Queued, false), (Queued, false)]),
        RunStatus::Queued
    );
    assert_eq!(
        derive_run_status(&[(Running, false), (Queued, false)]),
        RunStatus::Running
    );
    assert_eq!(
        derive_run_status(&[(Failure, false), (Queued, false)]),
        RunStatus::Running
    );
    assert_eq!(
        derive_run_status(&[(Success, false), (Skipped, false)]),
        RunStatus::Success
    );
    assert_eq!(
        derive_run_status(&[(Success, false), (Failure, false)]),
        RunStatus::Failure
    );
    assert_eq!(derive_run_status(&[(TimedOut, false)]), RunStatus::Failure);
    // continue-on-error: a failure does not fail the run.
    assert_eq!(
        derive_run_status(&[(Success, false), (Failure, true)]),
        RunStatus::Success
    );
    assert_eq!(
        derive_run_status(&[(Cancelled, false), (Failure, false)]),
        RunStatus::Cancelled
    );

    let p = pipeline(
        "jobs:\n  a:\n    continue-on-error: true\n    steps: [{run: 'false'}]\n  b:\n    needs: a\n    steps: [{run: 'true'}]\n",
    );
    let rp = plan("ci", &p, &Trigger::push("main", SHA)).unwrap();
    assert_eq!(rp.status(&[Failure, Success]), RunStatus::Success);
    // The dependent of a continue-on-error failure still runs.
    assert_eq!(rp.decide(1, &[Failure, Queued], false), Ok(Decision::Run));
}

#[test]
fn schedule_trigger_and_plan_fields() {
    let src = format!("on:\n  schedule:\n    - cron: '0 3 * * *'\nname: nightly\n{STEP}");
    let mut t = Trigger::push("main", SHA);
    t.event = EventKind::Schedule;
    let rp = plan("file", &pipeline(&src), &t).unwrap();
    assert_eq!(rp.name, "nightly");
    assert_eq!(rp.jobs.len(), 1);
    assert_eq!(rp.jobs[0].key, "a");
    assert_eq!(rp.find("a"), Some(0));
    assert!(!runs(&src, &Trigger::push("main", SHA)));
    // The ouro context comes from the trigger.
    let ctx = rp.job_context(0, &[JobState::Queued], false);
    assert!(
        ouro_build::expr::eval_condition("ouro.event == 'schedule' && ouro.branch == 'main'", &ctx)
            .unwrap()
    );
}

#[test]
fn failure_and_always_hold_after_a_failed_ancestor_and_mark_jobs_that_outlive_failures() {
    let p = pipeline(
        "jobs:
  a:
    steps: [{run: 'false'}]
  plain:
    needs: a
    steps: [{run: 'true'}]
  on_fail:
    needs: a
    if: failure()
    steps: [{run: 'true'}]
  always:
    needs: plain
    if: always()
    steps: [{run: 'true'}]
  late_fail:
    needs: plain
    if: ${{ failure() }}
    steps: [{run: 'true'}]
  only_ok:
    needs: a
    if: success()
    steps: [{run: 'true'}]
",
    );
    let rp = plan("ci", &p, &Trigger::push("main", SHA)).unwrap();
    let i = |id: &str| rp.find(id).unwrap();
    // Which jobs a server must not skip together with a failed need.
    assert!(!rp.runs_after_failed_needs(i("a")));
    assert!(!rp.runs_after_failed_needs(i("plain")));
    assert!(rp.runs_after_failed_needs(i("on_fail")));
    assert!(rp.runs_after_failed_needs(i("always")));
    assert!(rp.runs_after_failed_needs(i("late_fail")));
    assert!(!rp.runs_after_failed_needs(i("only_ok")));
    let mut st = vec![JobState::Queued; rp.jobs.len()];
    st[i("a")] = JobState::Failure;
    assert!(matches!(
        rp.decide(i("plain"), &st, false),
        Ok(Decision::Skip(_))
    ));
    assert!(matches!(
        rp.decide(i("only_ok"), &st, false),
        Ok(Decision::Skip(_))
    ));
    assert_eq!(rp.decide(i("on_fail"), &st, false), Ok(Decision::Run));
    st[i("plain")] = JobState::Skipped;
    // `plain` was skipped because `a` failed: failure() still sees the failed ancestor.
    assert_eq!(rp.decide(i("late_fail"), &st, false), Ok(Decision::Run));
    assert_eq!(rp.decide(i("always"), &st, false), Ok(Decision::Run));
    // Everything succeeded: failure() is false, always() runs.
    let ok = vec![JobState::Success; rp.jobs.len()];
    assert!(matches!(
        rp.decide(i("on_fail"), &ok, false),
        Ok(Decision::Skip(_))
    ));
    assert_eq!(rp.decide(i("always"), &ok, false), Ok(Decision::Run));
}

#[test]
fn a_run_is_planned_again_without_its_on_filter() {
    // A change request run for `main` planned again by a runner that lost the target branch
    // would not be triggered; `plan_jobs` plans the run's jobs regardless.
    let p = pipeline(
        "on:\n  change_request:\n    branches: [main]\njobs:\n  t:\n    steps: [{run: 'echo ${{ ouro.target_branch }}'}]\n",
    );
    let mut t = Trigger::push("feature", SHA);
    t.event = ouro_build::plan::EventKind::ChangeRequest;
    assert!(plan("ci", &p, &t).is_err());
    assert_eq!(
        ouro_build::plan::plan_jobs("ci", &p, &t)
            .unwrap()
            .jobs
            .len(),
        1
    );
    t.target_branch = Some("main".into());
    let rp = plan("ci", &p, &t).unwrap();
    let ctx = rp.job_context(0, &[JobState::Queued], false);
    assert!(ouro_build::expr::eval_condition("ouro.target_branch == 'main'", &ctx).unwrap());
}
