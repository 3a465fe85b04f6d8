//! Pipeline runs on the server, with real git pushes: a push with a pipeline file gets a queued
//! run with its jobs and a pending commit status; an invalid file gets a failed run with its
//! diagnostics; `on.push.branches` filters; the push consumer is idempotent; manual trigger;
//! cancel; who may do what; the pages; and the runner lease at the domain level.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::code_hosting::{Git, app_checkout, member};
use crate::support::*;
use ouro_build::runs;
use reqwest::Method;
use serde_json::{Value, json};

const RUNS: &str = "/api/v1/projects/demo/pipelines";
const REPO: &str = "/api/v1/projects/demo/repos/app";

const CI: &str = "name: CI
on:
  push:
    branches: [main]
  manual: {}
jobs:
  build:
    steps:
      - run: echo build
  test:
    needs: build
    steps:
      - run: echo test
";

/// A repository `app` and a clone with `main` checked out (nothing pushed yet).
async fn setup(s: &TestServer) -> (Git, PathBuf) {
    let (git, work, _) = app_checkout(s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    (git, work)
}

/// Polls `path` until `ok` holds (the push consumer runs in the background).
async fn eventually(s: &TestServer, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, body) = s.admin(Method::GET, path, None).await;
        assert_eq!(st, 200, "{path}: {body}");
        if ok(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting on {path}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn runs_of(body: &Value) -> Vec<Value> {
    body["runs"].as_array().cloned().unwrap_or_default()
}

async fn page(s: &TestServer, token: &str, path: &str) -> (u16, String) {
    let r = s.req(Method::GET, path, Some(token)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_push_with_a_pipeline_gets_a_queued_run_with_its_jobs_and_a_pending_status() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let project = s.demo_project().await;
        let viewer = member(&s, "viewer", "viewer").await;
        let dev = member(&s, "dev", "developer").await;
        let (git, work) = setup(&s).await;
        let head = git
            .commit(&work, ".ouro/pipelines/ci.yml", CI, "Add CI")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;

        let body = eventually(&s, RUNS, |b| !runs_of(b).is_empty()).await;
        let list = runs_of(&body);
        assert_eq!(list.len(), 1, "{body}");
        let run = &list[0];
        for key in ["id", "number", "status", "ref", "sha"] {
            assert!(run.get(key).is_some(), "the contract needs {key}: {run}");
        }
        assert_eq!(run["number"], 1);
        assert_eq!(run["status"], "queued");
        assert_eq!(run["ref"], "refs/heads/main");
        assert_eq!(run["sha"], head.as_str());
        assert_eq!(run["pipeline"], "CI");
        assert_eq!(run["trigger"], "push");
        assert_eq!(run["file"], ".ouro/pipelines/ci.yml");

        let (st, one) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(st, 200, "{one}");
        let jobs = one["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 2, "{one}");
        assert_eq!(jobs[0]["key"], "build");
        assert_eq!(jobs[0]["layer"], 0);
        assert_eq!(jobs[1]["key"], "test");
        assert_eq!(jobs[1]["needs"], json!(["build"]));
        assert_eq!(jobs[1]["layer"], 1);
        assert!(jobs.iter().all(|j| j["status"] == "queued"));

        let statuses = format!("{REPO}/commits/{head}/statuses");
        let sts = eventually(&s, &statuses, |b| {
            b.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        assert_eq!(sts[0]["name"], "ouro/CI", "{sts}");
        assert_eq!(sts[0]["state"], "pending", "{sts}");

        // A branch the pipeline excludes gets no run; the next push to main does (the consumer
        // handles events in order, so once run 2 exists the other branch's push was seen).
        git.run(&work, &["checkout", "-q", "-b", "other"]).await;
        git.commit(&work, "other.txt", "x\n", "Other").await;
        git.run(&work, &["push", "-q", "origin", "other"]).await;
        git.run(&work, &["checkout", "-q", "main"]).await;
        let head2 = git.commit(&work, "more.txt", "y\n", "More").await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let body = eventually(&s, RUNS, |b| runs_of(b).len() >= 2).await;
        let list = runs_of(&body);
        assert_eq!(list.len(), 2, "{body}");
        assert_eq!(list[0]["number"], 2, "newest first: {body}");
        assert_eq!(list[0]["sha"], head2.as_str());
        assert!(list.iter().all(|r| r["ref"] == "refs/heads/main"), "{body}");

        // The consumer may see an event twice: replaying the push of main creates nothing.
        let (st, evs) = s
            .admin(
                Method::GET,
                "/api/v1/events?project=demo&kind=code.pushed&limit=500",
                None,
            )
            .await;
        assert_eq!(st, 200, "{evs}");
        let first = evs["items"]
            .as_array()
            .or(evs["events"].as_array())
            .expect("events listed")
            .iter()
            .find(|e| e["payload"]["new"] == head.as_str())
            .cloned()
            .expect("the first push's event");
        let event = ouro_core::Event {
            seq: first["seq"].as_i64().unwrap(),
            time: 0,
            project: Some("demo".into()),
            project_id: Some(project.id),
            actor: first["actor"].as_str().unwrap().into(),
            kind: "code.pushed".into(),
            schema_version: 1,
            subject: ouro_core::events::Subject {
                kind: first["subject"]["type"].as_str().unwrap().into(),
                id: first["subject"]["id"].as_str().unwrap().into(),
            },
            payload: first["payload"].clone(),
        };
        let root = ouro_code::repos::root(&s.state.settings.data_dir);
        let again = runs::on_event(&s.state.store, &root, &event).await.unwrap();
        assert!(
            again.is_empty(),
            "a replayed event creates no run: {again:?}"
        );
        let (_, body) = s.admin(Method::GET, RUNS, None).await;
        assert_eq!(runs_of(&body).len(), 2, "{body}");

        // Manual trigger: the pipeline has `manual`, so main gets run 3.
        let (st, made) = s
            .call(
                Method::POST,
                &format!("{REPO}/pipelines"),
                Some(&dev),
                Some(json!({"ref": "main"})),
            )
            .await;
        assert_eq!(st, 201, "{made}");
        assert_eq!(made["runs"][0]["number"], 3, "{made}");
        assert_eq!(made["runs"][0]["trigger"], "manual");
        assert_eq!(made["runs"][0]["actor"], "user:dev");
        let (st, err) = s
            .admin(
                Method::POST,
                &format!("{REPO}/pipelines"),
                Some(json!({"ref": "nope"})),
            )
            .await;
        assert_eq!(st, 404, "{err}");
        assert_eq!(error_code(&err), "code.ref_not_found");
        let (st, err) = s
            .call(
                Method::POST,
                &format!("{REPO}/pipelines"),
                Some(&viewer),
                Some(json!({"ref": "main"})),
            )
            .await;
        assert_eq!(st, 403, "{err}");

        // Cancel: viewers may not; developers may; twice is a conflict.
        let (st, err) = s
            .call(
                Method::POST,
                &format!("{RUNS}/3/cancel"),
                Some(&viewer),
                None,
            )
            .await;
        assert_eq!(st, 403, "{err}");
        let (st, c) = s
            .call(Method::POST, &format!("{RUNS}/3/cancel"), Some(&dev), None)
            .await;
        assert_eq!(st, 200, "{c}");
        assert_eq!(c["status"], "cancelled", "{c}");
        assert!(
            c["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|j| j["status"] == "cancelled"),
            "{c}"
        );
        let (st, err) = s
            .call(Method::POST, &format!("{RUNS}/3/cancel"), Some(&dev), None)
            .await;
        assert_eq!(st, 409, "{err}");
        assert_eq!(error_code(&err), "build.run_finished");
        let (st, err) = s.admin(Method::GET, &format!("{RUNS}/99"), None).await;
        assert_eq!(st, 404, "{err}");
        assert_eq!(error_code(&err), "build.run_not_found");

        // Filters and paging.
        let (_, f) = s
            .admin(Method::GET, &format!("{RUNS}?status=cancelled"), None)
            .await;
        let nums: Vec<i64> = runs_of(&f)
            .iter()
            .map(|r| r["number"].as_i64().unwrap())
            .collect();
        assert_eq!(nums, vec![3], "{f}");
        let (_, f) = s
            .admin(Method::GET, &format!("{RUNS}?ref=main&limit=2"), None)
            .await;
        let nums: Vec<i64> = runs_of(&f)
            .iter()
            .map(|r| r["number"].as_i64().unwrap())
            .collect();
        assert_eq!(nums, vec![3, 2], "{f}");
        let cursor = f["next_cursor"].as_str().expect("a next page").to_string();
        let (_, f) = s
            .admin(
                Method::GET,
                &format!("{RUNS}?ref=main&limit=2&cursor={cursor}"),
                None,
            )
            .await;
        let nums: Vec<i64> = runs_of(&f)
            .iter()
            .map(|r| r["number"].as_i64().unwrap())
            .collect();
        assert_eq!(nums, vec![1], "{f}");
        let (_, f) = s
            .admin(Method::GET, &format!("{RUNS}?ref=other"), None)
            .await;
        assert!(runs_of(&f).is_empty(), "{f}");
        let (st, err) = s
            .admin(Method::GET, &format!("{RUNS}?status=bogus"), None)
            .await;
        assert_eq!(st, 422, "{err}");

        // Pages.
        let (st, html) = page(&s, &viewer, "/projects/demo/pipelines").await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("id=\"run-list\""), "{html}");
        assert!(html.contains("data-run=\"3\"") && html.contains("data-run=\"1\""));
        assert!(
            html.contains("href=\"/projects/demo/pipelines\""),
            "nav link"
        );
        let (st, html) = page(&s, &viewer, "/projects/demo/pipelines/1").await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("data-layer=\"0\"") && html.contains("data-layer=\"1\""));
        assert!(html.contains("data-job=\"test\""), "{html}");
        assert!(
            !html.contains("id=\"cancel-form\""),
            "viewers get no cancel button"
        );
        let (_, html) = page(&s, &dev, "/projects/demo/pipelines/1").await;
        assert!(html.contains("id=\"cancel-form\""), "{html}");
        let (st, _) = page(&s, &viewer, "/projects/demo/pipelines/42").await;
        assert_eq!(st, 404);
        s.stop().await;
    }
}

#[tokio::test]
async fn an_invalid_pipeline_gets_a_failed_run_with_diagnostics_and_a_failure_status() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (git, work) = setup(&s).await;
        let bad = "name: Broken\njobs:\n  build:\n    stepz:\n      - run: echo\n";
        let head = git
            .commit(&work, ".ouro/pipelines/ci.yml", bad, "Broken CI")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let body = eventually(&s, RUNS, |b| !runs_of(b).is_empty()).await;
        let run = &runs_of(&body)[0];
        assert_eq!(run["status"], "failure", "{body}");
        assert_eq!(run["sha"], head.as_str());
        let d = &run["diagnostics"][0];
        assert_eq!(d["file"], ".ouro/pipelines/ci.yml", "{run}");
        assert_eq!(d["line"], 4, "{run}");
        assert_eq!(d["col"], 5, "{run}");
        assert!(d["code"].as_str().is_some_and(|c| !c.is_empty()), "{run}");
        let (_, one) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert!(one["jobs"].as_array().unwrap().is_empty(), "{one}");

        let sts = eventually(&s, &format!("{REPO}/commits/{head}/statuses"), |b| {
            b.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        assert_eq!(sts[0]["name"], "ouro/ci", "{sts}");
        assert_eq!(sts[0]["state"], "failure", "{sts}");
        assert!(
            sts[0]["description"]
                .as_str()
                .unwrap()
                .contains(".ouro/pipelines/ci.yml:4:5: error["),
            "{sts}"
        );

        let (st, html) = s.admin_page("/projects/demo/pipelines/1").await;
        assert_eq!(st, 200);
        assert!(
            html.contains("<pre class=\"diagnostics\">.ouro/pipelines/ci.yml:4:5: error["),
            "{html}"
        );
        // A finished run cannot be cancelled.
        let (st, err) = s
            .admin(Method::POST, &format!("{RUNS}/1/cancel"), None)
            .await;
        assert_eq!(st, 409, "{err}");
        s.stop().await;
    }
}

/// A pipeline of one chain of `n` jobs (`c00` first), run on pushes to `main` and `other`.
fn chain(n: usize) -> String {
    let mut y = String::from("name: chain\non:\n  push:\n    branches: [main, other]\njobs:\n");
    for i in 0..n {
        y.push_str(&format!("  c{i:02}:\n"));
        if i > 0 {
            y.push_str(&format!("    needs: c{:02}\n", i - 1));
        }
        y.push_str("    steps:\n      - run: \"true\"\n");
    }
    y
}

#[tokio::test]
async fn a_claim_looks_past_a_long_chain_of_waiting_jobs_and_takes_each_once_its_need_is_done() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (git, work) = setup(&s).await;
        git.commit(&work, ".ouro/pipelines/chain.yml", &chain(40), "Add chain")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        eventually(&s, RUNS, |b| runs_of(b).len() == 1).await;
        git.run(&work, &["push", "-q", "origin", "HEAD:other"])
            .await;
        eventually(&s, RUNS, |b| runs_of(b).len() == 2).await;
        let store = &s.state.store;

        // (run number, job key) of what `runner` claims, if anything.
        let claim = |runner: &'static str| async move {
            runs::claim_next(store, runner, 60_000)
                .await
                .unwrap()
                .map(|c| (c.run.number, c.job.key.clone(), c))
        };
        let (run, key, first) = claim("r1").await.unwrap();
        assert_eq!((run, key.as_str()), (1, "c00"));
        // The 39 waiting jobs of run 1 come first in the queue; run 2's ready job is past them.
        let (run, key, _) = claim("r2").await.unwrap();
        assert_eq!((run, key.as_str()), (2, "c00"));
        assert!(claim("r3").await.is_none());

        runs::finish_job(store, first.job.id, &first.token, "success", Some(0))
            .await
            .unwrap();
        let (run, key, _) = claim("r1").await.unwrap();
        assert_eq!((run, key.as_str()), (1, "c01"));
        assert!(claim("r3").await.is_none());
        s.stop().await;
    }
}

#[tokio::test]
async fn runners_claim_jobs_in_dag_order_with_a_lease_and_stale_attempts_are_refused() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let (git, work) = setup(&s).await;
        git.commit(&work, ".ouro/pipelines/ci.yml", CI, "Add CI")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        eventually(&s, RUNS, |b| !runs_of(b).is_empty()).await;
        let store = &s.state.store;

        // An already expired lease: the runner "vanished".
        let c1 = runs::claim_next(store, "r1", -1000)
            .await
            .unwrap()
            .expect("build is ready");
        assert_eq!(c1.job.key, "build");
        assert_eq!(c1.job.attempt, 1);
        assert_eq!(c1.run.status, "running");
        // Only the reaper handles an expired lease (see
        // runners::the_reaper_fails_or_requeues_jobs_whose_runner_vanished); here the run is
        // cancelled and run again by a manual trigger.
        assert!(
            runs::claim_next(store, "r2", 60_000)
                .await
                .unwrap()
                .is_none()
        );
        let (st, body) = s
            .admin(Method::POST, &format!("{RUNS}/1/cancel"), None)
            .await;
        assert_eq!(st, 200, "{body}");
        let (st, body) = s
            .admin(
                Method::POST,
                &format!("{REPO}/pipelines"),
                Some(json!({"ref": "main"})),
            )
            .await;
        assert_eq!(st, 201, "{body}");
        let c2 = runs::claim_next(store, "r2", 60_000)
            .await
            .unwrap()
            .expect("the new run's build");
        assert_eq!(c2.job.key, "build");
        assert_eq!(c2.job.attempt, 1);
        assert_ne!(c1.token, c2.token);
        assert!(
            runs::claim_next(store, "r3", 60_000)
                .await
                .unwrap()
                .is_none()
        );
        // The cancelled attempt learns it from its heartbeat; its writes are refused; a token
        // that is not the job's current one is stale.
        assert!(
            runs::heartbeat(store, c1.job.id, &c1.token, 60_000)
                .await
                .unwrap()
        );
        let stale = runs::heartbeat(store, c2.job.id, &c1.token, 60_000)
            .await
            .unwrap_err();
        assert_eq!(
            ouro_core::OuroError::from(stale).code.as_str(),
            "build.stale_attempt"
        );
        let stale = runs::finish_job(store, c1.job.id, &c1.token, "success", Some(0))
            .await
            .unwrap_err();
        assert_eq!(
            ouro_core::OuroError::from(stale).code.as_str(),
            "build.stale_attempt"
        );
        assert!(
            !runs::heartbeat(store, c2.job.id, &c2.token, 60_000)
                .await
                .unwrap()
        );
        let run = runs::finish_job(store, c2.job.id, &c2.token, "success", Some(0))
            .await
            .unwrap();
        assert_eq!(run.status, "running");

        let c3 = runs::claim_next(store, "r1", 60_000)
            .await
            .unwrap()
            .expect("test is ready");
        assert_eq!(c3.job.key, "test");
        let run = runs::finish_job(store, c3.job.id, &c3.token, "failure", Some(1))
            .await
            .unwrap();
        assert_eq!(run.status, "failure");
        assert!(run.finished_at.is_some());
        let (_, one) = s.admin(Method::GET, &format!("{RUNS}/2"), None).await;
        assert_eq!(one["status"], "failure", "{one}");
        assert_eq!(one["jobs"][0]["attempt"], 1, "{one}");
        assert_eq!(one["jobs"][1]["exit_code"], 1, "{one}");
        s.stop().await;
    }
}

#[test]
fn run_status_is_derived_from_job_statuses() {
    assert_eq!(runs::derive_status(["queued", "queued"]), "queued");
    assert_eq!(runs::derive_status(["success", "queued"]), "running");
    assert_eq!(runs::derive_status(["running"]), "running");
    assert_eq!(runs::derive_status(["success", "skipped"]), "success");
    assert_eq!(runs::derive_status(["failure", "cancelled"]), "failure");
    assert_eq!(runs::derive_status(["timed_out", "success"]), "failure");
    assert_eq!(runs::derive_status(["cancelled", "success"]), "cancelled");
}
