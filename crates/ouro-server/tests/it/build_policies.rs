//! Run policies on the server: `continue-on-error` through the in-process runner (a failing or
//! timed-out job with it does not fail the run, the jobs that need it run, the run page says so;
//! fractional `timeout-minutes`), and the pipeline-level `concurrency` group (runs of a group
//! go one at a time in order; `cancel-in-progress` cancels the older runs).

use crate::code_hosting::app_checkout;
use crate::support::*;
use ouro_build::runs;
use reqwest::Method;
use serde_json::json;

const RUNS: &str = "/api/v1/projects/demo/pipelines";
const REPO: &str = "/api/v1/projects/demo/repos/app";

const ALLOWED_TO_FAIL: &str = "name: CI
on:
  push:
    branches: [main]
jobs:
  flaky:
    continue-on-error: true
    steps:
      - run: echo trying && exit 3
  slow:
    continue-on-error: true
    timeout-minutes: 0.05
    steps:
      - run: sleep 120
  after:
    needs: [flaky, slow]
    steps:
      - run: echo after ran with ${{ needs.flaky.result }}
  strict:
    steps:
      - run: echo fine
";

#[tokio::test]
async fn continue_on_error_jobs_fail_without_failing_the_run_and_their_dependents_run() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        push_pipeline(&s, ALLOWED_TO_FAIL).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "success", "{}: {run}", db.name());
        assert_eq!(job_of(&run, "flaky")["status"], "failure", "{run}");
        assert_eq!(job_of(&run, "flaky")["continue_on_error"], true, "{run}");
        assert_eq!(job_of(&run, "slow")["status"], "timed_out", "{run}");
        assert_eq!(job_of(&run, "after")["status"], "success", "{run}");
        assert_eq!(job_of(&run, "after")["continue_on_error"], false, "{run}");
        assert_eq!(job_of(&run, "strict")["status"], "success", "{run}");
        // The run page marks the allowed failures.
        let (st, html) = s.admin_page("/projects/demo/pipelines/1").await;
        assert_eq!(st, 200);
        assert_eq!(html.matches("failure allowed").count(), 2, "{html}");
        // The commit status follows the run: success.
        let sha = run["sha"].as_str().unwrap().to_string();
        let statuses = eventually(&s, &format!("{REPO}/commits/{sha}/statuses"), |b| {
            b.to_string().contains("success")
        })
        .await;
        assert!(!statuses.to_string().contains("\"failure\""), "{statuses}");
        s.stop().await;
    }
}

const STRICT_AFTER_FAIL: &str = "name: CI
on:
  push:
    branches: [main]
jobs:
  broken:
    steps:
      - run: exit 1
  after:
    needs: broken
    steps:
      - run: echo never
";

#[tokio::test]
async fn without_continue_on_error_a_failure_fails_the_run_and_skips_dependents() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        push_pipeline(&s, STRICT_AFTER_FAIL).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "failure", "{run}");
        assert_eq!(job_of(&run, "after")["status"], "skipped", "{run}");
        s.stop().await;
    }
}

const SERIAL: &str = "name: Deploy
on: manual
concurrency: deploy-${{ ouro.branch }}
jobs:
  a:
    steps:
      - run: echo a
  b:
    needs: a
    steps:
      - run: echo b
";

const LATEST_WINS: &str = "name: Preview
on: manual
concurrency:
  group: preview
  cancel-in-progress: true
jobs:
  a:
    steps:
      - run: echo a
  b:
    steps:
      - run: echo b
";

async fn app_with(s: &TestServer, file: &str, text: &str) {
    s.demo_project().await;
    let (git, work, _) = app_checkout(s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    git.commit(&work, file, text, "Add a pipeline").await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
}

async fn manual(s: &TestServer) {
    let (st, b) = s
        .admin(
            Method::POST,
            &format!("{REPO}/pipelines"),
            Some(json!({"ref": "main"})),
        )
        .await;
    assert_eq!(st, 201, "{b}");
}

async fn claim(s: &TestServer) -> Option<runs::Claim> {
    runs::claim_next(&s.state.store, "r", 60_000).await.unwrap()
}

async fn finish(s: &TestServer, c: &runs::Claim) {
    runs::finish_job(&s.state.store, c.job.id, &c.token, "success", Some(0))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_pipeline_concurrency_group_runs_whole_runs_one_at_a_time_in_order() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        app_with(&s, ".ouro/pipelines/deploy.yml", SERIAL).await;
        for _ in 0..3 {
            manual(&s).await;
        }
        let (_, one) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(one["concurrency_group"], "deploy-main", "{one}");
        for number in 1..=3 {
            // Only the oldest unfinished run of the group has claimable jobs, also between
            // its jobs (b waits for a: nothing of the later runs slips in).
            let a = claim(&s).await.expect("a of the oldest run");
            assert_eq!((a.run.number, a.job.key.as_str()), (number, "a"));
            assert!(claim(&s).await.is_none(), "run {number}: nothing else");
            finish(&s, &a).await;
            let b = claim(&s).await.expect("b of the same run");
            assert_eq!((b.run.number, b.job.key.as_str()), (number, "b"));
            assert!(claim(&s).await.is_none());
            finish(&s, &b).await;
            let (_, r) = s
                .admin(Method::GET, &format!("{RUNS}/{number}"), None)
                .await;
            assert_eq!(r["status"], "success", "{r}");
        }
        assert!(claim(&s).await.is_none());
        s.stop().await;
    }
}

/// A re-run belongs to its run's pipeline-level group: it waits for the group's older run like
/// any other run of the group (it used to lose the group and run beside it).
#[tokio::test]
async fn a_rerun_keeps_its_runs_concurrency_group() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        app_with(&s, ".ouro/pipelines/deploy.yml", SERIAL).await;
        manual(&s).await;
        for key in ["a", "b"] {
            let c = claim(&s).await.expect("a job of run 1");
            assert_eq!((c.run.number, c.job.key.as_str()), (1, key));
            finish(&s, &c).await;
        }
        // Run 2 holds the group; the re-run of run 1 (run 3) must wait for it.
        manual(&s).await;
        let a2 = claim(&s).await.expect("a of run 2");
        assert_eq!(a2.run.number, 2);
        let (st, rerun) = s
            .admin(
                Method::POST,
                &format!("{RUNS}/1/rerun"),
                Some(json!({"jobs": "all"})),
            )
            .await;
        assert_eq!(st, 201, "{rerun}");
        assert_eq!(rerun["number"], 3, "{rerun}");
        assert_eq!(rerun["concurrency_group"], "deploy-main", "{rerun}");
        assert!(
            claim(&s).await.is_none(),
            "the re-run slipped into the group beside run 2"
        );
        finish(&s, &a2).await;
        let b2 = claim(&s).await.expect("b of run 2");
        assert_eq!(b2.run.number, 2);
        finish(&s, &b2).await;
        let a3 = claim(&s)
            .await
            .expect("a of the re-run once run 2 finished");
        assert_eq!((a3.run.number, a3.job.key.as_str()), (3, "a"));
        finish(&s, &a3).await;
        s.stop().await;
    }
}

#[tokio::test]
async fn pipeline_cancel_in_progress_cancels_the_older_runs_of_the_group() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        app_with(&s, ".ouro/pipelines/preview.yml", LATEST_WINS).await;
        manual(&s).await;
        let running = claim(&s).await.expect("a job of run 1");
        assert_eq!(running.run.number, 1);
        manual(&s).await;
        let (_, one) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(one["status"], "cancelled", "{one}");
        for j in one["jobs"].as_array().unwrap() {
            assert_eq!(j["status"], "cancelled", "{one}");
            assert_eq!(j["reason"], "superseded", "{one}");
        }
        // The running job's runner learns it from its heartbeat.
        assert!(
            runs::heartbeat(&s.state.store, running.job.id, &running.token, 60_000)
                .await
                .unwrap()
        );
        // Run 2 is not blocked by the cancelled run.
        let c = claim(&s).await.expect("a job of run 2");
        assert_eq!(c.run.number, 2);
        s.stop().await;
    }
}

const HOLDS: &str = "name: CI
on:
  push:
    branches: [main]
jobs:
  hold:
    timeout-minutes: 0.1
    steps:
      - run: sleep 60
";

#[tokio::test]
async fn the_lease_length_comes_from_the_settings() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st: &mut ouro_server::Settings| {
                    st.runner_slots = 1;
                    st.build_lease_seconds = 300;
                },
                ..Options::default()
            },
        )
        .await;
        push_pipeline(&s, HOLDS).await;
        eventually(&s, &format!("{RUNS}/1"), |b| {
            b["jobs"][0]["status"] == "running"
        })
        .await;
        // Granted at the claim and renewed by heartbeats: always about 300 s ahead, never the
        // default 30 s.
        let lease =
            ouro_store::q("SELECT lease_expires_at FROM build_jobs WHERE status = 'running'")
                .fetch_one(&mut s.state.store.read().await.unwrap())
                .await
                .unwrap()
                .i64("lease_expires_at")
                .unwrap();
        let ahead = lease - ouro_core::time::now_ms();
        assert!(
            ahead > 200_000 && ahead <= 300_000,
            "lease {ahead} ms ahead"
        );
        let run = run_finished(&s, 1).await;
        assert_eq!(run["jobs"][0]["status"], "timed_out", "{run}");
        s.stop().await;
    }
}
