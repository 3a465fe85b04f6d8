//! Scheduling faults on the server: jobs whose `if:` uses `failure()`/`always()` run after their
//! needs failed (as `ouro run` does, through the same `RunPlan::decide`), and the runner plans a
//! claimed job from the run's whole stored trigger (manual inputs, a change request's target
//! branch, a re-run's original event). Section 10 faults with the in-process runner: daemons
//! left by a step, a job over its `timeout-minutes`, a pipeline file that is not UTF-8. (The
//! server or a runner killed with SIGKILL: crates/ouro/tests/it/faults.rs.)

use std::time::{Duration, Instant};

use crate::code_hosting::app_checkout;
use crate::support::*;
use ouro_build::runs;
use reqwest::Method;
use serde_json::{Value, json};

const RUNS: &str = "/api/v1/projects/demo/pipelines";
const REPO: &str = "/api/v1/projects/demo/repos/app";

fn log_text(s: &TestServer, job: &Value) -> String {
    let (id, attempt) = (
        job["id"].as_i64().unwrap(),
        job["attempt"].as_i64().unwrap(),
    );
    let dir = runs::log_dir(&s.state.settings.data_dir, id, attempt);
    let bytes = ouro_build::logs::LogReader::open(&dir)
        .unwrap_or_else(|e| panic!("log {}: {e}", dir.display()))
        .read_all()
        .unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

const AFTER_FAILURE: &str = r#"on:
  push: {}
jobs:
  a:
    steps:
      - run: echo a; exit 3
  plain:
    needs: a
    steps:
      - run: echo plain-ran
  on_fail:
    needs: a
    if: failure()
    steps:
      - run: echo on-fail-ran
  late:
    needs: plain
    if: always()
    steps:
      - run: echo late-ran
  only_ok:
    needs: a
    if: success()
    steps:
      - run: echo only-ok-ran
"#;

#[tokio::test]
async fn failure_and_always_jobs_run_after_their_need_failed_with_the_in_process_runner() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        push_pipeline(&s, AFTER_FAILURE).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "failure", "{run}");
        assert_eq!(job_of(&run, "a")["status"], "failure", "{run}");
        assert_eq!(job_of(&run, "plain")["status"], "skipped", "{run}");
        assert_eq!(job_of(&run, "only_ok")["status"], "skipped", "{run}");
        assert_eq!(job_of(&run, "on_fail")["status"], "success", "{run}");
        // `late` needs a job that was skipped because `a` failed: always() still runs it.
        assert_eq!(job_of(&run, "late")["status"], "success", "{run}");
        assert!(log_text(&s, job_of(&run, "on_fail")).contains("on-fail-ran\n"));
        assert!(log_text(&s, job_of(&run, "late")).contains("late-ran\n"));
        s.stop().await;
    }
}

#[tokio::test]
async fn a_failed_need_skips_only_the_jobs_that_cannot_run_after_it_and_the_rest_wait_for_a_claim()
{
    for db in backends() {
        // No in-process runner: claims by hand.
        let s = TestServer::start(&db).await;
        push_pipeline(&s, AFTER_FAILURE).await;
        eventually(&s, RUNS, |b| {
            b["runs"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        let store = &s.state.store;
        let a = runs::claim_next(store, "r", 60_000).await.unwrap().unwrap();
        assert_eq!(a.job.key, "a");
        // Nothing else is ready while `a` runs (on_fail and only_ok wait for it).
        assert!(
            runs::claim_next(store, "r", 60_000)
                .await
                .unwrap()
                .is_none()
        );
        let run = runs::finish_job(store, a.job.id, &a.token, "failure", Some(3))
            .await
            .unwrap();
        assert_eq!(run.status, "running");
        let (_, detail) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        // Skipped at once: plain and only_ok (they only run after success).
        assert_eq!(job_of(&detail, "plain")["status"], "skipped", "{detail}");
        assert_eq!(
            job_of(&detail, "plain")["reason"],
            "needs_failed",
            "{detail}"
        );
        assert_eq!(job_of(&detail, "only_ok")["status"], "skipped", "{detail}");
        // Left for a runner to decide: on_fail and late are claimable now.
        assert_eq!(job_of(&detail, "on_fail")["status"], "queued", "{detail}");
        assert_eq!(job_of(&detail, "late")["status"], "queued", "{detail}");
        let mut claimed = Vec::new();
        while let Some(c) = runs::claim_next(store, "r", 60_000).await.unwrap() {
            claimed.push(c.job.key.clone());
            runs::finish_job(store, c.job.id, &c.token, "success", Some(0))
                .await
                .unwrap();
        }
        claimed.sort();
        assert_eq!(claimed, ["late", "on_fail"]);
        let (_, detail) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(detail["status"], "failure", "{detail}");
        s.stop().await;
    }
}

const TRIGGERS: &str = r#"name: P
on:
  push:
    branches: [main]
  change_request:
    branches: [main]
  manual:
    inputs:
      level:
        type: choice
        options: [low, high]
        default: low
jobs:
  show:
    env:
      LEVEL: ${{ inputs.level }}
    steps:
      - run: echo "level=$LEVEL event=${{ ouro.event }} target=${{ ouro.target_branch }}"
  high_only:
    if: inputs.level == 'high'
    steps:
      - run: echo high-ran
  cr_only:
    if: ouro.target_branch == 'main'
    steps:
      - run: echo cr-ran
"#;

#[tokio::test]
async fn the_runner_gets_the_runs_inputs_target_branch_and_original_event() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        let (git, work, _) = push_pipeline(&s, TRIGGERS).await;
        // #1: the push (default input `low`, no target branch).
        let push = run_finished(&s, 1).await;
        assert_eq!(push["status"], "success", "{push}");
        assert!(
            log_text(&s, job_of(&push, "show")).contains("level=low event=push target=\n"),
            "{}",
            log_text(&s, job_of(&push, "show"))
        );
        assert_eq!(job_of(&push, "high_only")["status"], "skipped", "{push}");
        assert_eq!(job_of(&push, "cr_only")["status"], "skipped", "{push}");

        // #2: a manual run with level=high: the input reaches env, the step and `if:`.
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("{REPO}/pipelines"),
                Some(json!({"ref": "main", "inputs": {"level": "high"}})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
        let manual = run_finished(&s, 2).await;
        assert_eq!(manual["status"], "success", "{manual}");
        let log = log_text(&s, job_of(&manual, "show"));
        assert!(log.contains("level=high event=manual target=\n"), "{log}");
        assert_eq!(
            job_of(&manual, "high_only")["status"],
            "success",
            "{manual}"
        );
        assert!(log_text(&s, job_of(&manual, "high_only")).contains("high-ran\n"));

        // #3: re-running #2 keeps its inputs and its event.
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("{RUNS}/2/rerun"),
                Some(json!({"jobs": "all"})),
            )
            .await;
        assert!(st == 200 || st == 201, "{st} {b}");
        let again = run_finished(&s, 3).await;
        assert_eq!(again["status"], "success", "{again}");
        let log = log_text(&s, job_of(&again, "show"));
        assert!(log.contains("level=high event=manual target=\n"), "{log}");
        assert_eq!(job_of(&again, "high_only")["status"], "success", "{again}");

        // #4: a change request into main: its target branch reaches the job.
        git.run(&work, &["checkout", "-q", "-b", "feature"]).await;
        git.commit(&work, "f.txt", "f\n", "F").await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        let (st, cr) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(json!({"source": "feature", "target": "main", "title": "Feature"})),
            )
            .await;
        assert_eq!(st, 201, "{cr}");
        let cr_run = run_finished(&s, 4).await;
        assert_eq!(cr_run["trigger"], "change_request", "{cr_run}");
        assert_eq!(cr_run["status"], "success", "{cr_run}");
        let log = log_text(&s, job_of(&cr_run, "show"));
        assert!(
            log.contains("level=low event=change_request target=main\n"),
            "{log}"
        );
        assert_eq!(job_of(&cr_run, "cr_only")["status"], "success", "{cr_run}");
        s.stop().await;
    }
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn daemons_do_not_outlive_their_job_and_a_job_over_its_timeout_is_timed_out_and_killed() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        let marks = tempfile::tempdir().unwrap();
        let m = marks.path().display().to_string();
        let pipeline = format!(
            r#"on:
  push: {{}}
jobs:
  daemon:
    steps:
      - run: |
          sleep 1000 & echo $! > "{m}/bg"
          nohup sleep 1001 >/dev/null 2>&1 & echo $! > "{m}/nohup"
          setsid sleep 1002 >/dev/null 2>&1 < /dev/null & echo $! > "{m}/setsid"
          ( setsid sh -c 'sleep 1003 >/dev/null 2>&1 & echo $! > "{m}/double.tmp"; mv "{m}/double.tmp" "{m}/double"' & )
          while [ ! -f "{m}/double" ]; do sleep 0.05; done
          echo daemons-started
  slow:
    timeout-minutes: 0.1
    steps:
      - run: |
          echo $$ > "{m}/slow"
          sleep 1000 & echo $! > "{m}/slow-child"
          wait
"#
        );
        push_pipeline(&s, &pipeline).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "failure", "{run}");
        assert_eq!(job_of(&run, "daemon")["status"], "success", "{run}");
        assert!(log_text(&s, job_of(&run, "daemon")).contains("daemons-started\n"));
        assert_eq!(job_of(&run, "slow")["status"], "timed_out", "{run}");
        // Every process a step left behind is gone once its job has ended.
        let deadline = Instant::now() + Duration::from_secs(60);
        for name in ["bg", "nohup", "setsid", "double", "slow", "slow-child"] {
            let pid = std::fs::read_to_string(marks.path().join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!pid.trim().is_empty(), "{name}");
            while alive(&pid) {
                assert!(
                    Instant::now() < deadline,
                    "{name} (pid {}) outlived its job",
                    pid.trim()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn a_pipeline_file_that_is_not_utf8_gives_a_failed_run_with_a_positioned_diagnostic() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        std::fs::write(
            work.join(".ouro/pipelines/ci.yml"),
            b"on:\n  push: {}\n# caf\xe9 in Latin-1\njobs:\n  a:\n    steps: [{run: 'true'}]\n",
        )
        .unwrap();
        git.run(&work, &["add", "."]).await;
        git.run(&work, &["commit", "-q", "-m", "Latin-1 pipeline"])
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let list = eventually(&s, RUNS, |b| {
            b["runs"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        assert_eq!(list["runs"][0]["status"], "failure", "{list}");
        let (st, run) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(st, 200, "{run}");
        assert_eq!(run["jobs"].as_array().map(Vec::len), Some(0), "{run}");
        let d = &run["diagnostics"][0];
        assert_eq!(d["code"], "pipeline.not_utf8", "{run}");
        assert_eq!(d["file"], ".ouro/pipelines/ci.yml", "{run}");
        assert_eq!(d["line"], 3, "{run}");
        assert_eq!(d["col"], 6, "{run}");
        s.stop().await;
    }
}
