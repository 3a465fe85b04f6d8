//! The runner's fast paths: an idle claim waits for a wake-up instead of polling (a job that
//! becomes claimable while a claimer waits is claimed without the fallback poll), the per-run
//! caches of the claim and worker, and the configurable per-job log cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::code_hosting::app_checkout;
use crate::support::*;
use ouro_build::runner::server::{self as rs, CheckoutKind};
use ouro_build::runner::{ClaimedJob, JobResult, wake};
use ouro_build::runs::{self, Offer};
use ouro_server::Settings;
use reqwest::Method;
use serde_json::Value;

const RUNS: &str = "/api/v1/projects/demo/pipelines";

const CHAIN: &str = r#"name: Chain
on:
  push:
    branches: [main]
jobs:
  first:
    steps:
      - run: echo first
  second:
    needs: first
    steps:
      - run: echo second
"#;

/// Claims for `s` with `wake::wait_for`, its fallback poll and deadline an hour away (a claim
/// that returns a job came from a wake-up). `parked` is told once the first attempt found
/// nothing, i.e. the claimer waits.
fn claimer(
    s: &TestServer,
    attempts: Arc<AtomicUsize>,
) -> (
    tokio::task::JoinHandle<Option<ClaimedJob>>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (store, dir, sbox) = (
        s.state.store.clone(),
        s.state.settings.data_dir.clone(),
        s.state.secrets.clone(),
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let hour = Duration::from_secs(3600);
    let task = tokio::spawn(async move {
        wake::wait_for(hour, hour, || {
            let (store, dir, sbox) = (store.clone(), dir.clone(), sbox.clone());
            let attempts = attempts.clone();
            let tx = tx.take();
            async move {
                let got = rs::claim(
                    &store,
                    &dir,
                    &sbox,
                    "perf-test",
                    Offer::default(),
                    CheckoutKind::Local,
                )
                .await;
                attempts.fetch_add(1, Ordering::SeqCst);
                if let (Ok(None), Some(tx)) = (&got, tx) {
                    let _ = tx.send(());
                }
                got
            }
        })
        .await
        .expect("claims")
    });
    (task, rx)
}

async fn finish(s: &TestServer, job: &ClaimedJob, status: &str) {
    rs::finish(
        &s.state.store,
        &s.state.settings.data_dir,
        job.job_id,
        &job.token,
        &JobResult {
            status: status.into(),
            exit_code: Some(0),
            reason: None,
            infra_failure: false,
            started_at_ms: 0,
            finished_at_ms: 0,
        },
    )
    .await
    .expect("finished");
}

/// A claimer waiting while nothing is claimable gets the job of a run pushed meanwhile (run
/// creation wakes it), then, waiting while `second` still needs `first`, gets `second` once
/// `first` finishes (the finish wakes it). Neither waits for the hour-long fallback poll.
#[tokio::test]
async fn a_job_that_becomes_claimable_while_a_claimer_waits_is_claimed_on_the_wake_up() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;

        // Nothing queued yet: the claimer parks; the push creates the run and wakes it.
        let attempts = Arc::new(AtomicUsize::new(0));
        let (task, parked) = claimer(&s, attempts.clone());
        parked.await.expect("the claimer waits");
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        let head = git
            .commit(&work, ".ouro/pipelines/ci.yml", CHAIN, "Add CI")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let first = task
            .await
            .unwrap()
            .expect("woken by the new run, not by the deadline");
        assert_eq!(first.job_key, "first");
        assert_eq!(first.trigger.sha, head);
        assert!(attempts.load(Ordering::SeqCst) >= 2, "claimed after a wait");

        // `second` needs `first`: the claimer parks until `first` finishes.
        let attempts = Arc::new(AtomicUsize::new(0));
        let (task, parked) = claimer(&s, attempts.clone());
        parked.await.expect("the claimer waits");
        finish(&s, &first, "success").await;
        let second = task
            .await
            .unwrap()
            .expect("woken by the finish, not by the deadline");
        assert_eq!(second.job_key, "second");
        assert_eq!(
            second.needs.get("first").map(String::as_str),
            Some("success")
        );
        assert_eq!(second.run_id, first.run_id);
        // The claim handed out the pipeline file at the commit, the same for both jobs (cached).
        assert_eq!(second.pipeline_file, CHAIN);
        assert_eq!(first.pipeline_file, second.pipeline_file);
        finish(&s, &second, "success").await;
        let (st, run) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(st, 200);
        assert_eq!(run["status"], "success", "{run}");
        s.stop().await;
    }
}

const FORK: &str = r#"name: Fork
on:
  push:
    branches: [main]
jobs:
  first:
    steps:
      - run: echo first
  second:
    needs: first
    steps:
      - run: echo second
  gpu:
    needs: first
    runs-on: [gpu]
    steps:
      - run: echo gpu
"#;

fn success() -> JobResult {
    JobResult {
        status: "success".into(),
        exit_code: Some(0),
        reason: None,
        infra_failure: false,
        started_at_ms: 0,
        finished_at_ms: 0,
    }
}

/// Finishing a job can claim the runner's next job in the same transaction: the job the result
/// made ready (`second`) comes back with the finish, running for that runner, and is not handed
/// to anyone else; a job needing a label the runner lacks (`gpu`) is left for a runner that has
/// it; the finished attempt's token is stale afterwards.
#[tokio::test]
async fn finishing_a_job_claims_the_next_in_the_same_transaction_and_never_hands_it_out_twice() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;
        let (store, dir, sbox) = (&s.state.store, &s.state.settings.data_dir, &s.state.secrets);
        let (task, parked) = claimer(&s, Arc::new(AtomicUsize::new(0)));
        parked.await.expect("the claimer waits");
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        git.commit(&work, ".ouro/pipelines/ci.yml", FORK, "Add CI")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let first = task.await.unwrap().expect("claimed after the push");
        assert_eq!(first.job_key, "first");

        let next = |runner: &'static str| rs::NextClaim {
            sbox,
            runner_id: runner,
            offer: Offer::default(),
            kind: CheckoutKind::Local,
        };
        let second = rs::finish_then_claim(
            store,
            dir,
            first.job_id,
            &first.token,
            &success(),
            Some(next("perf-test")),
        )
        .await
        .expect("finished")
        .expect("the next job came with the finish");
        assert_eq!(second.job_key, "second");
        assert_eq!(second.attempt, 1);
        assert_eq!(
            second.needs.get("first").map(String::as_str),
            Some("success")
        );
        // Held by perf-test: another runner without labels gets nothing; `gpu` waits for a
        // runner with its label.
        assert!(
            runs::claim_next(store, "other", 60_000)
                .await
                .unwrap()
                .is_none()
        );
        let gpu_offer = Offer {
            labels: &["gpu".to_string()],
            executors: &[],
        };
        let gpu = runs::claim_next_labeled(store, "gpu-runner", gpu_offer, 60_000)
            .await
            .unwrap()
            .expect("gpu is claimable by a gpu runner");
        assert_eq!(gpu.job.key, "gpu");
        let (_, run) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        let by_key = |k: &str| {
            run["jobs"]
                .as_array()
                .and_then(|a| a.iter().find(|j| j["key"] == k))
                .cloned()
                .unwrap_or(Value::Null)
        };
        assert_eq!(by_key("first")["status"], "success", "{run}");
        assert_eq!(by_key("second")["status"], "running", "{run}");
        assert_eq!(run["status"], "running", "{run}");
        // The finished attempt cannot write again.
        let e = rs::finish(store, dir, first.job_id, &first.token, &success())
            .await
            .unwrap_err();
        assert_eq!(
            ouro_core::OuroError::from(e).code.as_str(),
            "build.stale_attempt"
        );
        // Nothing left for perf-test: the finish comes back alone.
        let none = rs::finish_then_claim(
            store,
            dir,
            second.job_id,
            &second.token,
            &success(),
            Some(next("perf-test")),
        )
        .await
        .expect("finished");
        assert!(none.is_none(), "{none:?}");
        rs::finish(store, dir, gpu.job.id, &gpu.token, &success())
            .await
            .unwrap();
        let (_, run) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(run["status"], "success", "{run}");
        s.stop().await;
    }
}

async fn run_finished(s: &TestServer, number: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, body) = s
            .admin(Method::GET, &format!("{RUNS}/{number}"), None)
            .await;
        if st == 200
            && matches!(
                body["status"].as_str(),
                Some("success" | "failure" | "cancelled")
            )
        {
            return body;
        }
        assert!(Instant::now() < deadline, "run {number}: {st} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const NOISY: &str = r#"name: Noisy
on:
  push:
    branches: [main]
jobs:
  noisy:
    steps:
      - run: |
          for i in $(seq 1 200); do echo "line $i of a noisy job, padded to be long enough"; done
          echo done
  after:
    needs: noisy
    steps:
      - run: echo after ran
"#;

/// `[build] log_cap_bytes` caps a job's stored log: the first bytes, then the marker line; the
/// job still succeeds and its dependents run (on both databases, with the in-process runner).
#[tokio::test]
async fn a_small_log_cap_truncates_the_job_log_with_the_marker_and_the_job_finishes() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st: &mut Settings| {
                    st.runner_slots = 2;
                    st.build_log_cap_bytes = 1000;
                },
                ..Options::default()
            },
        )
        .await;
        s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        git.commit(&work, ".ouro/pipelines/ci.yml", NOISY, "Add CI")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "success", "{run}");
        let jobs = run["jobs"].as_array().unwrap();
        assert!(jobs.iter().all(|j| j["status"] == "success"), "{run}");
        let id = jobs[0]["id"].as_i64().unwrap();
        let dir = runs::log_dir(&s.state.settings.data_dir, id, 1);
        let log = ouro_build::logs::LogReader::open(&dir)
            .unwrap()
            .read_all()
            .unwrap();
        let marker = ouro_build::logs::truncation_marker(1000);
        assert!(log.ends_with(&marker), "{}", String::from_utf8_lossy(&log));
        assert_eq!(log.len(), 1000 + marker.len());
        assert!(log.starts_with(b"line 1 of a noisy job"));
        assert!(
            !log.windows(4).any(|w| w == b"done"),
            "the end is not stored"
        );
        // The job after it has its whole (short) log.
        let after = ouro_build::logs::LogReader::open(&runs::log_dir(
            &s.state.settings.data_dir,
            jobs[1]["id"].as_i64().unwrap(),
            1,
        ))
        .unwrap()
        .read_all()
        .unwrap();
        assert!(after.windows(9).any(|w| w == b"after ran"));
        s.stop().await;
    }
}

/// The setting comes from `[build] log_cap_bytes` and `OURO_BUILD_LOG_CAP_BYTES` (the
/// environment wins), with the 64 MiB default.
#[test]
fn the_log_cap_setting_reads_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let over = ouro_server::settings::Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let s = Settings::load(&over, &|_| None).unwrap();
    assert_eq!(s.build_log_cap_bytes, 64 << 20);
    std::fs::write(
        dir.path().join("ouro.toml"),
        "[build]\nlog_cap_bytes = 4096\n",
    )
    .unwrap();
    let s = Settings::load(&over, &|_| None).unwrap();
    assert_eq!(s.build_log_cap_bytes, 4096);
    let s = Settings::load(&over, &|k| {
        (k == "OURO_BUILD_LOG_CAP_BYTES").then(|| "2048".to_string())
    })
    .unwrap();
    assert_eq!(s.build_log_cap_bytes, 2048);
    let bad = Settings::load(&over, &|k| {
        (k == "OURO_BUILD_LOG_CAP_BYTES").then(|| "lots".to_string())
    });
    assert!(bad.is_err());
}
