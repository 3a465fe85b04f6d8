//! Stored results on both databases: ingestion with totals and capped text, new failures and
//! fixed tests against the target branch's last run, the quality gate with quarantine, flaky
//! detection (retry, same commit, flip rate) appending its event once, quarantine validation and
//! expiry, history with first failure and last success, diff coverage, coverage trend.

use std::collections::{BTreeMap, BTreeSet};

use ouro_build::pipeline::Quality;
use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_store::testing::{TestDb, backends};
use ouro_store::{Store, q};
use ouro_test::flaky;
use ouro_test::model::{
    Attempt, Case, Coverage, FileCoverage, Outcome, Report, Suite, identity_key,
};
use ouro_test::results::{self, Ingest, JobRef};

struct Env {
    store: Store,
    project: i64,
    _dir: tempfile::TempDir,
}

async fn env(db: &TestDb) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let url = db.fresh_url(dir.path()).await;
    let migrations = [
        ouro_store::PLATFORM_MIGRATIONS,
        ouro_plan::MIGRATIONS,
        ouro_code::MIGRATIONS,
        ouro_build::MIGRATIONS,
        ouro_test::MIGRATIONS,
    ]
    .concat();
    let store = Store::open(&url, &migrations).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let project = q(
        "INSERT INTO projects (slug, name, description, visibility, created_at, updated_at) \
         VALUES ('demo', 'Demo', '', 'private', 1, 1) RETURNING id",
    )
    .fetch_one(&mut tx)
    .await
    .unwrap()
    .i64("id")
    .unwrap();
    tx.commit().await.unwrap();
    Env {
        store,
        project,
        _dir: dir,
    }
}

fn attempt(outcome: Outcome, ms: u64) -> Attempt {
    Attempt {
        outcome,
        duration_ms: Some(ms),
        message: (outcome != Outcome::Passed).then(|| format!("{outcome:?} here")),
        kind: None,
        details: None,
        stdout: None,
        stderr: None,
    }
}

fn case(name: &str, outcomes: &[Outcome]) -> Case {
    Case {
        suite: "s".into(),
        class: "C".into(),
        name: name.into(),
        key: identity_key("s", "C", name),
        file: None,
        attempts: outcomes.iter().map(|o| attempt(*o, 100)).collect(),
    }
}

fn report(cases: Vec<Case>) -> Report {
    Report {
        suites: vec![Suite {
            name: "s".into(),
            source: "r.xml".into(),
            cases,
        }],
    }
}

fn job(e: &Env, run: i64, git_ref: &str, sha: &str) -> JobRef {
    JobRef {
        project_id: e.project,
        build_run_id: run,
        run_number: run,
        job_id: run * 10,
        job_key: "test".into(),
        attempt: 1,
        repo_id: Some(1),
        git_ref: git_ref.into(),
        sha: sha.into(),
        cr_number: None,
    }
}

fn main_input(r: Report) -> Ingest {
    Ingest {
        report: r,
        baseline_ref: Some("refs/heads/main".into()),
        default_ref: Some("refs/heads/main".into()),
        ..Ingest::default()
    }
}

async fn events(e: &Env, kind: &str) -> i64 {
    q("SELECT COUNT(*) AS n FROM events WHERE kind = $1")
        .bind(kind)
        .fetch_one(&mut e.store.read().await.unwrap())
        .await
        .unwrap()
        .i64("n")
        .unwrap()
}

use Outcome::{Failed, Passed, Skipped};

#[tokio::test]
async fn new_failures_fixed_and_the_gate_against_the_target_branch() {
    for db in backends() {
        let e = env(&db).await;
        // main: a fails, b passes.
        let r1 = report(vec![case("a", &[Failed]), case("b", &[Passed])]);
        let done = results::ingest(
            &e.store,
            &job(&e, 1, "refs/heads/main", "s1"),
            &main_input(r1),
        )
        .await
        .unwrap();
        assert_eq!(done.failures, 1);
        assert_eq!(events(&e, "test.report_ingested").await, 1);
        // A branch: a passes now (fixed), b fails (new), c skipped; gate max-new-failures 0.
        let r2 = report(vec![
            case("a", &[Passed]),
            case("b", &[Failed]),
            case("c", &[Skipped]),
        ]);
        let mut input = main_input(r2);
        input.quality = Some(Quality {
            max_new_failures: Some(0),
            max_failures: Some(5),
            ..Quality::default()
        });
        let done = results::ingest(&e.store, &job(&e, 2, "refs/heads/feat", "s2"), &input)
            .await
            .unwrap();
        assert_eq!(done.new_failures, 1);
        let gate = done.gate.unwrap();
        assert!(!gate.passed);
        assert_eq!(
            gate.failure_sentence().unwrap(),
            "max-new-failures 0 failed: 1 test(s) failed that did not fail on the target branch"
        );
        assert_eq!(events(&e, "quality_gate.evaluated").await, 1);
        let t = results::run_tests(&mut e.store.read().await.unwrap(), e.project, 2)
            .await
            .unwrap();
        assert_eq!(t.totals.total, 3);
        assert_eq!(t.new_failures.len(), 1);
        assert_eq!(t.new_failures[0].name, "b");
        assert_eq!(t.fixed.len(), 1);
        assert_eq!(t.fixed[0].name, "a");
        assert_eq!(t.skipped[0].name, "c");
        assert_eq!(t.jobs[0].baseline_run, Some(1));

        // Quarantined, b's failure no longer counts for the gate (but is still shown).
        let b_id = t.new_failures[0].case_id;
        let far = ouro_core::time::now_ms() + 86_400_000;
        let actor = Actor::System("test");
        let err = flaky::quarantine(&e.store, &actor, e.project, b_id, " ", far)
            .await
            .unwrap_err();
        assert_eq!(OuroError::from(err).code, ErrorCode::ValidationFailed);
        let err = flaky::quarantine(&e.store, &actor, e.project, b_id, "why", 5)
            .await
            .unwrap_err();
        assert_eq!(OuroError::from(err).code, ErrorCode::ValidationFailed);
        let err = flaky::quarantine(&e.store, &actor, e.project, 9999, "why", far)
            .await
            .unwrap_err();
        assert_eq!(OuroError::from(err).code, ErrorCode::TestCaseNotFound);
        flaky::quarantine(&e.store, &actor, e.project, b_id, "tracked", far)
            .await
            .unwrap();
        let r3 = report(vec![case("a", &[Passed]), case("b", &[Failed])]);
        let mut input = main_input(r3);
        input.quality = Some(Quality {
            max_failures: Some(0),
            ..Quality::default()
        });
        let done = results::ingest(&e.store, &job(&e, 3, "refs/heads/feat", "s3"), &input)
            .await
            .unwrap();
        assert_eq!(done.failures, 0);
        assert!(done.gate.unwrap().passed);
        let t = results::run_tests(&mut e.store.read().await.unwrap(), e.project, 3)
            .await
            .unwrap();
        assert!(t.failures[0].quarantined);
        // Expired quarantines end by themselves.
        let mut tx = e.store.begin().await.unwrap();
        q("UPDATE test_quarantine SET expires_at = 1")
            .execute(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let keys = results::quarantined_keys(
            &mut e.store.read().await.unwrap(),
            e.project,
            ouro_core::time::now_ms(),
        )
        .await
        .unwrap();
        assert!(keys.is_empty());

        // History of b: newest first, first failure of the streak, last success.
        let h = results::case_history(&mut e.store.read().await.unwrap(), e.project, b_id, 100)
            .await
            .unwrap();
        let runs: Vec<i64> = h.entries.iter().map(|x| x.run).collect();
        assert_eq!(runs, vec![3, 2, 1]);
        assert_eq!(h.first_failure.unwrap().run, 2);
        assert_eq!(h.last_success.unwrap().run, 1);
        assert_eq!(h.commits_between, vec!["s2".to_string(), "s1".to_string()]);
    }
}

#[tokio::test]
async fn history_pages_by_before_and_finds_the_streak_beyond_the_page() {
    for db in backends() {
        let e = env(&db).await;
        // Runs 1-3 pass, 4 skips, 5-12 fail: the streak began at run 5, beyond a page of 3.
        for run in 1..=12 {
            let outcome = match run {
                1..=3 => Passed,
                4 => Skipped,
                _ => Failed,
            };
            // `other` passes on retry in the last run.
            let other: &[Outcome] = if run == 12 {
                &[Failed, Passed]
            } else {
                &[Passed]
            };
            let r = report(vec![case("t", &[outcome]), case("other", other)]);
            let sha = format!("s{run}");
            results::ingest(
                &e.store,
                &job(&e, run, "refs/heads/feat", &sha),
                &main_input(r),
            )
            .await
            .unwrap();
        }
        let id = case_id(&e, "t").await;
        let mut seen = Vec::new();
        let mut before = None;
        let mut pages = 0;
        loop {
            let h = results::case_history_page(
                &mut e.store.read().await.unwrap(),
                e.project,
                id,
                3,
                before,
            )
            .await
            .unwrap();
            pages += 1;
            // Whatever the page, the streak and the commits are those of the whole history.
            assert_eq!(h.first_failure.as_ref().unwrap().run, 5, "page {pages}");
            assert_eq!(
                h.first_failure.as_ref().unwrap().message.as_deref(),
                Some("Failed here")
            );
            assert_eq!(h.last_success.as_ref().unwrap().run, 3);
            assert_eq!(h.commits_between, vec!["s5", "s4", "s3"]);
            for x in &h.entries {
                let expected = match x.outcome.as_str() {
                    "passed" => None,
                    "skipped" => Some("Skipped here"),
                    _ => Some("Failed here"),
                };
                assert_eq!(x.message.as_deref(), expected, "run {}", x.run);
            }
            seen.extend(h.entries.iter().map(|x| x.run));
            match h.next_before {
                Some(b) => {
                    assert_eq!(b, h.entries.last().unwrap().id);
                    before = Some(b);
                }
                None => break,
            }
        }
        assert_eq!(seen, (1..=12).rev().collect::<Vec<_>>());
        assert_eq!(pages, 4);
        // A page that ends exactly at the oldest result says there is no older one.
        let h = results::case_history(&mut e.store.read().await.unwrap(), e.project, id, 12)
            .await
            .unwrap();
        assert_eq!(h.entries.len(), 12);
        assert_eq!(h.next_before, None);
        // A test that never passed has no last success; its streak starts at its first result.
        let other_fail = report(vec![case("new", &[Failed])]);
        results::ingest(
            &e.store,
            &job(&e, 13, "refs/heads/feat", "s13"),
            &main_input(other_fail),
        )
        .await
        .unwrap();
        let new_id = case_id(&e, "new").await;
        let h = results::case_history(&mut e.store.read().await.unwrap(), e.project, new_id, 5)
            .await
            .unwrap();
        assert!(h.last_success.is_none());
        assert_eq!(h.first_failure.unwrap().run, 13);
        assert!(h.commits_between.is_empty());
        // A passing test has no streak.
        let other = case_id(&e, "other").await;
        let h = results::case_history(&mut e.store.read().await.unwrap(), e.project, other, 5)
            .await
            .unwrap();
        assert!(h.first_failure.is_none());
        assert_eq!(h.last_success.unwrap().run, 12);
        assert!(
            h.entries[0].flaky && h.entries[0].attempts == 2,
            "{:?}",
            h.entries[0]
        );
        assert!(
            !h.entries[1].flaky && h.entries[1].attempts == 1,
            "{:?}",
            h.entries[1]
        );
        assert_eq!(
            (h.entries[0].job.as_str(), h.entries[0].git_ref.as_str()),
            ("test", "refs/heads/feat")
        );
        assert_eq!(
            (h.entries[0].sha.as_str(), h.entries[0].duration_ms),
            ("s12", Some(100))
        );
        assert_eq!(h.next_before, Some(h.entries[4].id));
    }
}

#[tokio::test]
async fn flaky_tests_are_found_once_by_retry_same_commit_and_flip_rate() {
    for db in backends() {
        let e = env(&db).await;
        // Passed on retry within one run.
        let r = report(vec![case("r", &[Failed, Passed]), case("x", &[Passed])]);
        let done = results::ingest(
            &e.store,
            &job(&e, 1, "refs/heads/main", "c1"),
            &main_input(r),
        )
        .await
        .unwrap();
        assert_eq!(done.newly_flaky.len(), 1);
        assert_eq!(events(&e, "test.flaky_detected").await, 1);
        // Again: not new, no second event.
        let r = report(vec![case("r", &[Failed, Passed]), case("x", &[Passed])]);
        let done = results::ingest(
            &e.store,
            &job(&e, 2, "refs/heads/main", "c2"),
            &main_input(r),
        )
        .await
        .unwrap();
        assert!(done.newly_flaky.is_empty());
        assert_eq!(events(&e, "test.flaky_detected").await, 1);
        // Both outcomes on one commit across two runs.
        let r = report(vec![case("x", &[Failed])]);
        let mut j = job(&e, 3, "refs/heads/feat", "c3");
        results::ingest(&e.store, &j, &main_input(r)).await.unwrap();
        j.build_run_id = 4;
        j.run_number = 4;
        j.job_id = 40;
        let r = report(vec![case("x", &[Passed])]);
        let done = results::ingest(&e.store, &j, &main_input(r)).await.unwrap();
        assert_eq!(done.newly_flaky.len(), 1);
        // Flip rate on the default branch: f alternates over five runs.
        for (i, o) in [Passed, Failed, Passed, Failed, Passed].iter().enumerate() {
            let n = 10 + i as i64;
            let r = report(vec![case("f", &[*o])]);
            results::ingest(
                &e.store,
                &job(&e, n, "refs/heads/main", &format!("m{n}")),
                &main_input(r),
            )
            .await
            .unwrap();
        }
        let list = flaky::list(&mut e.store.read().await.unwrap(), e.project)
            .await
            .unwrap();
        let causes: BTreeMap<String, (String, i64)> = list
            .iter()
            .map(|f| (f.case.name.clone(), (f.cause.clone(), f.score)))
            .collect();
        assert_eq!(causes["r"], ("retry".to_string(), 100));
        assert_eq!(causes["x"], ("same_commit".to_string(), 100));
        assert_eq!(causes["f"], ("flip_rate".to_string(), 100));
        assert_eq!(events(&e, "test.flaky_detected").await, 3);
        // The bug work item through Plan, remembered on the flaky record.
        let r_id = list.iter().find(|f| f.case.name == "r").unwrap().case.id;
        let key = flaky::file_work_item(&e.store, e.project, r_id, 1)
            .await
            .unwrap();
        let listed = flaky::flaky_of(&mut e.store.read().await.unwrap(), e.project, r_id)
            .await
            .unwrap()
            .unwrap();
        assert!(key.is_some(), "Plan filed a bug");
        assert_eq!(listed.work_item, key);
    }
}

#[tokio::test]
async fn coverage_per_file_diff_coverage_and_trend() {
    for db in backends() {
        let e = env(&db).await;
        let cov = |covered: &[(u32, u64)]| Coverage {
            files: vec![FileCoverage {
                path: "src/lib.rs".into(),
                lines_total: covered.len() as u64,
                lines_covered: covered.iter().filter(|(_, h)| *h > 0).count() as u64,
                branches_total: 0,
                branches_covered: 0,
                lines: covered.to_vec(),
            }],
        };
        let mut input = main_input(report(vec![case("a", &[Passed])]));
        input.coverage = Some(cov(&[(1, 1), (2, 0), (3, 1), (4, 0)]));
        input.quality = Some(Quality {
            min_coverage: Some(60.0),
            min_diff_coverage: Some(100.0),
            ..Quality::default()
        });
        let changed = BTreeMap::from([("src/lib.rs".to_string(), BTreeSet::from([3, 4, 9]))]);
        input.changed_lines = Some(changed.clone());
        assert_eq!(
            results::diff_coverage(input.coverage.as_ref().unwrap(), &changed),
            (1, 2)
        );
        let done = results::ingest(&e.store, &job(&e, 1, "refs/heads/main", "a1"), &input)
            .await
            .unwrap();
        let g = done.gate.unwrap();
        assert_eq!(
            g.failure_sentence().unwrap(),
            "min-coverage 60 failed: line coverage is 50% (2 of 4 lines); min-diff-coverage 100 failed: 50% of the changed lines are covered (1 of 2)"
        );
        let mut input = main_input(report(vec![case("a", &[Passed])]));
        input.coverage = Some(cov(&[(1, 1), (2, 3), (3, 1), (4, 0)]));
        results::ingest(&e.store, &job(&e, 2, "refs/heads/main", "a2"), &input)
            .await
            .unwrap();
        let trend = results::coverage_trend(
            &mut e.store.read().await.unwrap(),
            e.project,
            "refs/heads/main",
            10,
        )
        .await
        .unwrap();
        let pts: Vec<f64> = trend.iter().map(|p| p.percent).collect();
        assert_eq!(pts, vec![50.0, 75.0]);
        let files = results::run_coverage(&mut e.store.read().await.unwrap(), 2)
            .await
            .unwrap();
        assert_eq!(files[0].lines, vec![(1, 1), (2, 3), (3, 1), (4, 0)]);
        assert_eq!(files[0].lines_covered, 3);
        // The marks for the CR diff: only changed lines the coverage instruments, split by hits;
        // another file and uninstrumented changed lines (9) stay unmarked.
        let changed = BTreeMap::from([
            ("src/lib.rs".to_string(), BTreeSet::from([2, 4, 9])),
            ("src/other.rs".to_string(), BTreeSet::from([1])),
        ]);
        let marks = results::marks_of(2, "a2", &files, &changed);
        assert_eq!(marks.run, 2);
        assert_eq!(
            marks.uncovered,
            BTreeMap::from([("src/lib.rs".to_string(), BTreeSet::from([4]))])
        );
        assert_eq!(
            marks.covered,
            BTreeMap::from([("src/lib.rs".to_string(), BTreeSet::from([2]))])
        );
        assert_eq!(marks.class_of("src/lib.rs", 4), "cov-miss");
        assert_eq!(marks.class_of("src/lib.rs", 2), "cov-hit");
        assert_eq!(
            marks.class_of("src/lib.rs", 1),
            "",
            "unchanged lines are not marked"
        );
        assert_eq!(marks.class_of("src/lib.rs", 9), "");
        assert_eq!(marks.class_of("src/other.rs", 1), "");
        assert_eq!(marks.uncovered_count(), 1);
    }
}

#[tokio::test]
async fn long_messages_are_capped_and_a_reingested_attempt_replaces_itself() {
    for db in backends() {
        let e = env(&db).await;
        let mut c = case("big", &[Failed]);
        c.attempts[0].message = Some("é".repeat(10_000));
        c.attempts[0].stdout = Some("x".repeat(100_000));
        let j = job(&e, 1, "refs/heads/main", "b1");
        results::ingest(&e.store, &j, &main_input(report(vec![c.clone()])))
            .await
            .unwrap();
        results::ingest(&e.store, &j, &main_input(report(vec![c])))
            .await
            .unwrap();
        let t = results::run_tests(&mut e.store.read().await.unwrap(), e.project, 1)
            .await
            .unwrap();
        assert_eq!(t.totals.total, 1, "the second ingestion replaced the first");
        let f = &t.failures[0];
        assert!(f.message.as_ref().unwrap().len() <= 4 * 1024 + 3);
        assert!(f.output.as_ref().unwrap().len() <= 16 * 1024 + 3);
    }
}

/// `n` cases with every shape ingestion writes differently: passed with output, failed with
/// message and output, skipped, passed on retry (flaky), and every 97th case repeated later in
/// the report (a duplicate key: one case, two results).
fn bulk_report(n: usize) -> Report {
    let mut cases = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("t{i}");
        let mut c = match i % 5 {
            0 | 1 => case(&name, &[Passed]),
            2 => case(&name, &[Failed]),
            3 => case(&name, &[Skipped]),
            _ => case(&name, &[Failed, Passed]),
        };
        c.attempts.last_mut().unwrap().duration_ms = Some(i as u64);
        if i % 5 == 2 {
            c.attempts[0].stdout = Some(format!("out {i}"));
            c.attempts[0].kind = Some("panic".into());
        }
        if i % 7 == 0 {
            c.file = Some(format!("src/t{}.rs", i % 3));
        }
        cases.push(c);
    }
    for i in (0..n).step_by(97) {
        if i > 0 {
            let mut again = cases[i].clone();
            again.attempts = vec![attempt(Passed, 1)];
            cases.push(again);
        }
    }
    report(cases)
}

/// What one case's result row must hold, computed from the model the way the per-row writer
/// stored it: `(key, outcome, attempts, flaky, duration, message, kind, output)`.
type Stored = (
    String,
    String,
    i64,
    bool,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn expected(r: &Report) -> Vec<Stored> {
    r.cases()
        .map(|c| {
            let last = c.attempts.last().unwrap();
            let output = [&last.details, &last.stdout, &last.stderr]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("\n");
            (
                c.key.clone(),
                format!("{:?}", c.outcome()).to_lowercase(),
                c.attempts.len() as i64,
                c.is_flaky(),
                last.duration_ms.map(|d| d as i64),
                last.message.clone(),
                last.kind.clone(),
                (!output.is_empty()).then_some(output),
            )
        })
        .collect()
}

async fn stored(e: &Env, test_run_id: i64) -> Vec<Stored> {
    q(
        "SELECT c.case_key, r.outcome, r.attempts, r.flaky, r.duration_ms, r.message, r.kind, \
         r.output FROM test_results r JOIN test_cases c ON c.id = r.case_id \
         WHERE r.test_run_id = $1 ORDER BY r.id",
    )
    .bind(test_run_id)
    .fetch_all(&mut e.store.read().await.unwrap())
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.text("case_key").unwrap(),
            r.text("outcome").unwrap(),
            r.i64("attempts").unwrap(),
            r.bool("flaky").unwrap(),
            r.opt_i64("duration_ms").unwrap(),
            r.opt_text("message").unwrap(),
            r.opt_text("kind").unwrap(),
            r.opt_text("output").unwrap(),
        )
    })
    .collect()
}

async fn case_id(e: &Env, name: &str) -> i64 {
    q("SELECT id FROM test_cases WHERE name = $1")
        .bind(name)
        .fetch_one(&mut e.store.read().await.unwrap())
        .await
        .unwrap()
        .i64("id")
        .unwrap()
}

async fn count(e: &Env, sql: &str) -> i64 {
    q(sql)
        .fetch_one(&mut e.store.read().await.unwrap())
        .await
        .unwrap()
        .i64("n")
        .unwrap()
}

/// Bulk ingestion writes exactly what the model holds, whatever the batch boundaries: a single
/// case, exactly one batch of results (1,000), and more than one batch with an odd tail
/// (2,345 cases plus 24 repeated ones). A second run of the same report reuses every case id,
/// records no new flaky test and appends no second event for one, updates the flaky records'
/// sightings and picks up a case's new file.
#[tokio::test]
async fn bulk_ingestion_stores_every_case_result_and_flaky_mark_at_any_batch_boundary() {
    for db in backends() {
        for n in [1usize, 1_000, 2_345] {
            let e = env(&db).await;
            let r = bulk_report(n);
            let unique: BTreeSet<&str> = r.cases().map(|c| c.key.as_str()).collect();
            let retry: BTreeSet<&str> = r
                .cases()
                .filter(|c| c.is_flaky())
                .map(|c| c.key.as_str())
                .collect();
            let done = results::ingest(
                &e.store,
                &job(&e, 1, "refs/heads/main", "bulk1"),
                &main_input(r.clone()),
            )
            .await
            .unwrap();
            let what = format!("{} with {n} cases", db.name());
            assert_eq!(stored(&e, done.test_run_id).await, expected(&r), "{what}");
            assert_eq!(done.totals.total as usize, r.cases().count(), "{what}");
            assert_eq!(
                count(&e, "SELECT COUNT(*) AS n FROM test_cases").await as usize,
                unique.len(),
                "{what}: a repeated case is one case"
            );
            assert_eq!(done.newly_flaky.len(), retry.len(), "{what}");
            assert_eq!(
                count(
                    &e,
                    "SELECT COUNT(*) AS n FROM test_flaky WHERE cause = 'retry'"
                )
                .await as usize,
                retry.len(),
                "{what}"
            );
            assert_eq!(
                events(&e, "test.flaky_detected").await as usize,
                retry.len(),
                "{what}"
            );
            assert_eq!(events(&e, "test.report_ingested").await, 1, "{what}");
            if let Some(first) = done.newly_flaky.first() {
                let ev = q(
                    "SELECT payload FROM events WHERE kind = 'test.flaky_detected' \
                            ORDER BY seq LIMIT 1",
                )
                .fetch_one(&mut e.store.read().await.unwrap())
                .await
                .unwrap()
                .text("payload")
                .unwrap();
                let ev: serde_json::Value = serde_json::from_str(&ev).unwrap();
                let case = results::get_case(&mut e.store.read().await.unwrap(), e.project, *first)
                    .await
                    .unwrap();
                assert_eq!(ev["case_id"], *first, "{what}");
                assert_eq!(ev["key"], case.key.as_str(), "{what}");
            }
            let ids = q("SELECT id, case_key FROM test_cases ORDER BY id")
                .fetch_all(&mut e.store.read().await.unwrap())
                .await
                .unwrap()
                .iter()
                .map(|r| (r.text("case_key").unwrap(), r.i64("id").unwrap()))
                .collect::<BTreeMap<_, _>>();

            // The same tests again in the next run; t0 now names its file.
            let mut r2 = r.clone();
            r2.suites[0].cases[0].file = Some("src/moved.rs".into());
            let done2 = results::ingest(
                &e.store,
                &job(&e, 2, "refs/heads/main", "bulk2"),
                &main_input(r2.clone()),
            )
            .await
            .unwrap();
            assert_eq!(stored(&e, done2.test_run_id).await, expected(&r2), "{what}");
            let ids2 = q("SELECT id, case_key FROM test_cases ORDER BY id")
                .fetch_all(&mut e.store.read().await.unwrap())
                .await
                .unwrap()
                .iter()
                .map(|r| (r.text("case_key").unwrap(), r.i64("id").unwrap()))
                .collect::<BTreeMap<_, _>>();
            assert_eq!(ids, ids2, "{what}: the same cases, the same ids");
            let t0 =
                results::get_case(&mut e.store.read().await.unwrap(), e.project, ids["s/C/t0"])
                    .await
                    .unwrap();
            assert_eq!(t0.file.as_deref(), Some("src/moved.rs"), "{what}");
            assert!(done2.newly_flaky.is_empty(), "{what}");
            assert_eq!(
                events(&e, "test.flaky_detected").await as usize,
                retry.len(),
                "{what}: flagged once"
            );
            assert_eq!(
                count(
                    &e,
                    "SELECT COUNT(*) AS n FROM test_flaky WHERE example_run = 2"
                )
                .await as usize,
                retry.len(),
                "{what}: the flaky records saw run 2"
            );

            // Deleting the project deletes its results too (PostgreSQL: by trigger).
            let mut tx = e.store.begin().await.unwrap();
            q("DELETE FROM projects WHERE id = $1")
                .bind(e.project)
                .execute(&mut tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(
                count(&e, "SELECT COUNT(*) AS n FROM test_results").await,
                0,
                "{what}"
            );
        }
    }
}
