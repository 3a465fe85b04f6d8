//! More triggers and the claim policy, with real git pushes: change request runs on the source
//! head with the change request's number and the author's trust; schedules with an injected
//! clock (exactly one run per due time, once after downtime); concurrency groups and
//! cancel-in-progress; claim priorities; the per-project running-job limit; manual inputs;
//! re-running all, the failed jobs or one job (and 409 for a run that has not finished).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::code_hosting::{Git, app_checkout, member};
use crate::support::*;
use ouro_build::{rerun, runs, schedule, triggers};
use reqwest::Method;
use serde_json::{Value, json};

const RUNS: &str = "/api/v1/projects/demo/pipelines";
const REPO: &str = "/api/v1/projects/demo/repos/app";

/// `app` with `files` committed and pushed to `main`.
async fn app_with(s: &TestServer, files: &[(&str, &str)]) -> (Git, PathBuf, String) {
    let (git, work, _) = app_checkout(s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    let mut head = String::new();
    for (f, text) in files {
        head = git.commit(&work, f, text, &format!("Add {f}")).await;
    }
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    (git, work, head)
}

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

fn code(e: ouro_store::StoreError) -> String {
    ouro_core::OuroError::from(e).code.as_str().to_string()
}

async fn manual(s: &TestServer, body: Value) -> (u16, Value) {
    s.admin(Method::POST, &format!("{REPO}/pipelines"), Some(body))
        .await
}

async fn claim(s: &TestServer) -> Option<runs::Claim> {
    runs::claim_next(&s.state.store, "r", 60_000).await.unwrap()
}

async fn finish(s: &TestServer, c: &runs::Claim, status: &str) -> runs::Run {
    runs::finish_job(&s.state.store, c.job.id, &c.token, status, Some(0))
        .await
        .unwrap()
}

const CR_CI: &str = "name: CR
on:
  change_request:
    branches: [main]
jobs:
  check:
    steps:
      - run: echo check
";

#[tokio::test]
async fn a_change_request_gets_runs_on_its_source_head_with_its_number_and_trust() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let project = s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        let (git, work, _) = app_with(&s, &[(".ouro/pipelines/cr.yml", CR_CI)]).await;
        git.run(&work, &["checkout", "-q", "-b", "feature"]).await;
        let head1 = git.commit(&work, "a.txt", "a\n", "A").await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        // The push itself runs nothing: the pipeline only has a change request trigger.
        let (st, cr) = s
            .call(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(&dev),
                Some(json!({"source": "feature", "target": "main", "title": "Feature"})),
            )
            .await;
        assert_eq!(st, 201, "{cr}");
        let body = eventually(&s, RUNS, |b| !runs_of(b).is_empty()).await;
        let list = runs_of(&body);
        assert_eq!(list.len(), 1, "{body}");
        let run = &list[0];
        assert_eq!(run["trigger"], "change_request", "{run}");
        assert_eq!(run["sha"], head1.as_str());
        assert_eq!(run["ref"], "refs/heads/feature");
        assert_eq!(run["cr_number"], 1);
        assert_eq!(run["trusted"], true, "a developer is trusted: {run}");
        assert_eq!(run["actor"], "user:dev");
        // The status lands on the head commit, where the merge gate looks.
        let sts = eventually(&s, &format!("{REPO}/commits/{head1}/statuses"), |b| {
            b.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        assert_eq!(sts[0]["name"], "ouro/CR", "{sts}");

        // A second push to the source branch: a new run on the new head.
        let head2 = git.commit(&work, "b.txt", "b\n", "B").await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        let body = eventually(&s, RUNS, |b| runs_of(b).len() >= 2).await;
        let list = runs_of(&body);
        assert_eq!(list.len(), 2, "{body}");
        assert_eq!(list[0]["sha"], head2.as_str());
        assert_eq!(list[0]["cr_number"], 1);

        // Replaying the events creates nothing (idempotent per head and file).
        let (st, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=cr.opened",
                None,
            )
            .await;
        assert_eq!(st, 200, "{evs}");
        let first = evs["items"]
            .as_array()
            .or(evs["events"].as_array())
            .and_then(|a| a.first().cloned())
            .expect("the cr.opened event");
        let event = ouro_core::Event {
            seq: first["seq"].as_i64().unwrap(),
            time: 0,
            project: Some("demo".into()),
            project_id: Some(project.id),
            actor: first["actor"].as_str().unwrap().into(),
            kind: "cr.opened".into(),
            schema_version: 1,
            subject: ouro_core::events::Subject {
                kind: first["subject"]["type"].as_str().unwrap().into(),
                id: first["subject"]["id"].as_str().unwrap().into(),
            },
            payload: first["payload"].clone(),
        };
        let root = ouro_code::repos::root(&s.state.settings.data_dir);
        // The head moved since: the stale event builds nothing.
        let again = triggers::on_cr_event(&s.state.store, &root, &event)
            .await
            .unwrap();
        assert!(again.is_empty(), "{again:?}");
        let mut current = event.clone();
        current.kind = "cr.updated".into();
        current.payload["head"] = json!(head2);
        let again = triggers::on_cr_event(&s.state.store, &root, &current)
            .await
            .unwrap();
        assert!(again.is_empty(), "the same head twice: {again:?}");

        // The author is no longer a developer: the next run is untrusted (no secrets).
        let (st, b) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/dev",
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        let head3 = git.commit(&work, "c.txt", "c\n", "C").await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        let body = eventually(&s, RUNS, |b| runs_of(b).len() >= 3).await;
        let newest = &runs_of(&body)[0];
        assert_eq!(newest["sha"], head3.as_str());
        assert_eq!(newest["trusted"], false, "{newest}");
        let n = newest["number"].as_i64().unwrap();
        let r = s
            .req(
                Method::GET,
                &format!("/projects/demo/pipelines/{n}"),
                Some(&dev),
            )
            .send()
            .await
            .unwrap();
        let html = r.text().await.unwrap();
        assert!(
            html.contains("/projects/demo/code/app/change-requests/1\">change request !1</a>"),
            "{html}"
        );
        assert!(html.contains("gets no secrets"), "{html}");

        // A change request into a branch the filter does not name runs nothing.
        git.run(&work, &["push", "-q", "origin", "feature:other"])
            .await;
        git.run(&work, &["checkout", "-q", "-b", "topic"]).await;
        git.commit(&work, "d.txt", "d\n", "D").await;
        git.run(&work, &["push", "-q", "origin", "topic"]).await;
        let (st, cr2) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(json!({"source": "topic", "target": "other", "title": "Other"})),
            )
            .await;
        assert_eq!(st, 201, "{cr2}");
        // Open one more into main so the consumer has provably passed the one into `other`.
        git.run(&work, &["checkout", "-q", "-b", "last", "main"])
            .await;
        git.run(&work, &["reset", "-q", "--hard", "origin/main"])
            .await;
        let head4 = git.commit(&work, "e.txt", "e\n", "E").await;
        git.run(&work, &["push", "-q", "origin", "last"]).await;
        let (st, cr3) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(json!({"source": "last", "target": "main", "title": "Last"})),
            )
            .await;
        assert_eq!(st, 201, "{cr3}");
        let body = eventually(&s, RUNS, |b| {
            runs_of(b).iter().any(|r| r["sha"] == head4.as_str())
        })
        .await;
        let list = runs_of(&body);
        assert_eq!(
            list.len(),
            4,
            "no run for the change request into other: {body}"
        );
        assert_eq!(list[0]["cr_number"], 3);
        assert_eq!(
            list[0]["trusted"], true,
            "the admin owns the project: {body}"
        );
        s.stop().await;
    }
}

const SCHEDULED: &str = "name: Nightly
on:
  schedule:
    - cron: \"0 0 1 1 *\"
jobs:
  sweep:
    steps:
      - run: echo sweep
";

#[tokio::test]
async fn a_due_schedule_creates_exactly_one_run_and_once_after_downtime() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let project = s.demo_project().await;
        let (_git, _work, head) = app_with(&s, &[(".ouro/pipelines/nightly.yml", SCHEDULED)]).await;
        let store = &s.state.store;
        let root = ouro_code::repos::root(&s.state.settings.data_dir);
        let repo = ouro_code::repos::get(&mut store.read().await.unwrap(), project.id, "app")
            .await
            .unwrap();
        // The push to the default branch filled the schedule table (a consumer).
        let deadline = Instant::now() + Duration::from_secs(30);
        let rows = loop {
            let rows = schedule::list(store, repo.id).await.unwrap();
            if !rows.is_empty() {
                break rows;
            }
            assert!(Instant::now() < deadline, "no schedule was recorded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].file, ".ouro/pipelines/nightly.yml");
        assert_eq!(rows[0].cron, "0 0 1 1 *");
        let due = rows[0].next_at;
        assert_eq!(schedule::next_after("0 0 1 1 *", due - 1), Some(due));

        // Not yet due: nothing.
        assert!(
            schedule::tick(store, &root, due - 1)
                .await
                .unwrap()
                .is_empty()
        );
        // Due: exactly one run, on the default branch head, for that file.
        let made = schedule::tick(store, &root, due).await.unwrap();
        assert_eq!(made.len(), 1, "{made:?}");
        assert_eq!(made[0].trigger, "schedule");
        assert_eq!(made[0].sha, head);
        assert_eq!(made[0].git_ref, "refs/heads/main");
        assert_eq!(made[0].priority, 0);
        // Ticking again at the same moment: nothing more.
        assert!(schedule::tick(store, &root, due).await.unwrap().is_empty());
        // A second ticker that read the row before it moved: the source key stops it.
        let mut tx = store.begin().await.unwrap();
        ouro_store::q("UPDATE build_schedules SET next_at = $1 WHERE id = $2")
            .bind(due)
            .bind(rows[0].id)
            .execute(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(schedule::tick(store, &root, due).await.unwrap().is_empty());
        let (_, body) = s.admin(Method::GET, RUNS, None).await;
        assert_eq!(runs_of(&body).len(), 1, "{body}");

        // Three years of downtime: one run, not three, and the next time is in the future.
        let later = due + 3 * 366 * 24 * 3600 * 1000;
        let made = schedule::tick(store, &root, later).await.unwrap();
        assert_eq!(made.len(), 1, "{made:?}");
        let rows = schedule::list(store, repo.id).await.unwrap();
        assert!(rows[0].next_at > later, "{rows:?}");
        assert!(
            schedule::tick(store, &root, later)
                .await
                .unwrap()
                .is_empty()
        );
        let (_, body) = s.admin(Method::GET, RUNS, None).await;
        assert_eq!(runs_of(&body).len(), 2, "{body}");

        // Syncing again keeps an unchanged entry's time.
        let again = schedule::sync(store, &root, &repo, later + 5)
            .await
            .unwrap();
        assert_eq!(again, rows);
        // At start the server syncs every repository: lost rows come back.
        let mut tx = store.begin().await.unwrap();
        ouro_store::q("DELETE FROM build_schedules")
            .execute(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(schedule::sync_all(store, &root, later).await.unwrap(), 1);
        let back = schedule::list(store, repo.id).await.unwrap();
        assert_eq!(back.len(), 1);
        assert!(back[0].next_at > later, "{back:?}");
        s.stop().await;
    }
}

const GROUPED: &str = "name: Deploy
on: manual
jobs:
  deploy:
    concurrency: deploy-${{ ouro.branch }}
    steps:
      - run: echo deploy
";

const CANCELLING: &str = "name: Preview
on: manual
jobs:
  preview:
    concurrency:
      group: preview
      cancel-in-progress: true
    steps:
      - run: echo preview
";

#[tokio::test]
async fn a_concurrency_group_runs_one_job_at_a_time_and_cancel_in_progress_cancels_the_older() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        app_with(&s, &[(".ouro/pipelines/deploy.yml", GROUPED)]).await;
        for _ in 0..2 {
            let (st, b) = manual(&s, json!({"ref": "main"})).await;
            assert_eq!(st, 201, "{b}");
        }
        let (_, one) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(one["jobs"][0]["concurrency_group"], "deploy-main", "{one}");
        let c1 = claim(&s).await.expect("the first deploy");
        assert_eq!(c1.run.number, 1);
        // The second run's deploy waits while the first runs.
        assert!(claim(&s).await.is_none());
        finish(&s, &c1, "success").await;
        let c2 = claim(&s).await.expect("now the second deploy");
        assert_eq!(c2.run.number, 2);
        finish(&s, &c2, "success").await;
        s.stop().await;
    }
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        app_with(&s, &[(".ouro/pipelines/preview.yml", CANCELLING)]).await;
        let (st, b) = manual(&s, json!({"ref": "main"})).await;
        assert_eq!(st, 201, "{b}");
        let c1 = claim(&s).await.expect("the first preview");
        // A newer run of the group cancels the running older job.
        let (st, b) = manual(&s, json!({"ref": "main"})).await;
        assert_eq!(st, 201, "{b}");
        let (_, one) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(one["status"], "cancelled", "{one}");
        assert_eq!(one["jobs"][0]["status"], "cancelled", "{one}");
        assert_eq!(one["jobs"][0]["reason"], "superseded", "{one}");
        // Its runner learns it from the heartbeat.
        assert!(
            runs::heartbeat(&s.state.store, c1.job.id, &c1.token, 60_000)
                .await
                .unwrap()
        );
        let c2 = claim(&s).await.expect("the newer preview");
        assert_eq!(c2.run.number, 2);
        let (st, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=job.finished",
                None,
            )
            .await;
        assert_eq!(st, 200, "{evs}");
        let text = evs.to_string();
        assert!(text.contains("superseded"), "{text}");
        s.stop().await;
    }
}

const ONE_JOB: &str = "name: P
on:
  push:
    branches: [main]
  schedule:
    - \"0 0 1 1 *\"
  manual:
    inputs:
      level:
        type: choice
        options: [low, high]
        default: low
jobs:
  only:
    steps:
      - run: echo one
";

#[tokio::test]
async fn claims_go_by_priority_then_age_and_manual_inputs_are_checked() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let project = s.demo_project().await;
        app_with(&s, &[(".ouro/pipelines/p.yml", ONE_JOB)]).await;
        // #1: the push.
        eventually(&s, RUNS, |b| !runs_of(b).is_empty()).await;
        // #2: a schedule (created directly, as the ticker would).
        let store = &s.state.store;
        let root = ouro_code::repos::root(&s.state.settings.data_dir);
        let repo = ouro_code::repos::get(&mut store.read().await.unwrap(), project.id, "app")
            .await
            .unwrap();
        let (_, one) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        let sha = one["sha"].as_str().unwrap().to_string();
        let made = runs::create_runs(
            store,
            &root,
            &repo,
            &runs::TriggerInfo {
                kind: "schedule",
                git_ref: "refs/heads/main".into(),
                sha,
                actor: "system:schedule".into(),
                trusted: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(made.len(), 1);
        // Manual inputs are typed and checked: a bad one is a 422 naming it, nothing created.
        let (st, err) = manual(&s, json!({"ref": "main", "inputs": {"level": "max"}})).await;
        assert_eq!(st, 422, "{err}");
        assert_eq!(error_code(&err), "request.validation_failed", "{err}");
        assert!(err.to_string().contains("inputs.level"), "{err}");
        let (st, err) = manual(&s, json!({"ref": "main", "inputs": {"nope": "1"}})).await;
        assert_eq!(st, 422, "{err}");
        // #3: manual, with its input.
        let (st, b) = manual(&s, json!({"ref": "main", "inputs": {"level": "high"}})).await;
        assert_eq!(st, 201, "{b}");
        assert_eq!(b["runs"][0]["number"], 3, "{b}");
        assert_eq!(b["runs"][0]["inputs"], json!({"level": "high"}), "{b}");
        assert_eq!(b["runs"][0]["priority"], 2, "{b}");

        // Manual first, then the push, then the schedule.
        let order: Vec<i64> = {
            let mut v = Vec::new();
            while let Some(c) = claim(&s).await {
                v.push(c.run.number);
            }
            v
        };
        assert_eq!(order, vec![3, 1, 2]);
        s.stop().await;
    }
}

const TWO_JOBS: &str = "name: Two
on: manual
jobs:
  a:
    steps:
      - run: echo a
  b:
    steps:
      - run: echo b
";

#[tokio::test]
async fn the_project_running_job_limit_is_honoured_by_claims() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let dev = member(&s, "dev", "developer").await;
        app_with(&s, &[(".ouro/pipelines/two.yml", TWO_JOBS)]).await;
        let settings = "/api/v1/projects/demo/pipeline-settings";
        let (st, b) = s.admin(Method::GET, settings, None).await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["max_running_jobs"], Value::Null, "unlimited by default");
        let (st, b) = s
            .admin(Method::PUT, settings, Some(json!({"max_running_jobs": 0})))
            .await;
        assert_eq!(st, 422, "{b}");
        let (st, b) = s
            .call(
                Method::PUT,
                settings,
                Some(&dev),
                Some(json!({"max_running_jobs": 1})),
            )
            .await;
        assert_eq!(st, 403, "maintainers set limits: {b}");
        let (st, b) = s
            .admin(Method::PUT, settings, Some(json!({"max_running_jobs": 1})))
            .await;
        assert_eq!(st, 200, "{b}");
        let (st, b) = manual(&s, json!({"ref": "main"})).await;
        assert_eq!(st, 201, "{b}");
        let c1 = claim(&s).await.expect("one job");
        assert!(claim(&s).await.is_none(), "the limit is 1");
        finish(&s, &c1, "success").await;
        let c2 = claim(&s).await.expect("the other job");
        assert_ne!(c1.job.key, c2.job.key);
        // Unlimited again.
        finish(&s, &c2, "success").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                settings,
                Some(json!({"max_running_jobs": null})),
            )
            .await;
        assert_eq!(st, 200);
        manual(&s, json!({"ref": "main"})).await;
        assert!(claim(&s).await.is_some());
        assert!(claim(&s).await.is_some());
        s.stop().await;
    }
}

const DAG: &str = "name: Dag
on: manual
jobs:
  a:
    steps:
      - run: echo a
  b:
    needs: a
    steps:
      - run: echo b
  c:
    steps:
      - run: echo c
";

fn jobs_by_key(run: &Value) -> std::collections::BTreeMap<String, Value> {
    run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["key"].as_str().unwrap().to_string(), j.clone()))
        .collect()
}

#[tokio::test]
async fn re_running_all_failed_or_one_job_makes_a_new_run() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let project = s.demo_project().await;
        let viewer = member(&s, "viewer", "viewer").await;
        let dev = member(&s, "dev", "developer").await;
        app_with(&s, &[(".ouro/pipelines/dag.yml", DAG)]).await;
        let (st, b) = manual(&s, json!({"ref": "main"})).await;
        assert_eq!(st, 201, "{b}");
        let rerun_of = |n: i64| format!("{RUNS}/{n}/rerun");

        // A run that has not finished cannot be re-run.
        let (st, err) = s
            .admin(Method::POST, &rerun_of(1), Some(json!({"jobs": "all"})))
            .await;
        assert_eq!(st, 409, "{err}");
        assert_eq!(error_code(&err), "build.run_not_finished");

        // a succeeds, c fails, b (needs a) succeeds: the run fails.
        let mut last = None;
        while let Some(c) = claim(&s).await {
            let status = if c.job.key == "c" {
                "failure"
            } else {
                "success"
            };
            last = Some(finish(&s, &c, status).await);
        }
        assert_eq!(last.unwrap().status, "failure");

        // Viewers cannot re-run; bad selections are 422.
        let (st, _) = s
            .call(
                Method::POST,
                &rerun_of(1),
                Some(&viewer),
                Some(json!({"jobs": "all"})),
            )
            .await;
        assert_eq!(st, 403);
        for bad in [
            json!({"jobs": "some"}),
            json!({"jobs": ["zz"]}),
            json!({"jobs": []}),
        ] {
            let (st, err) = s.admin(Method::POST, &rerun_of(1), Some(bad)).await;
            assert_eq!(st, 422, "{err}");
        }

        // Failed: c runs again, a and b are reused from #1.
        let (st, r2) = s
            .call(
                Method::POST,
                &rerun_of(1),
                Some(&dev),
                Some(json!({"jobs": "failed"})),
            )
            .await;
        assert_eq!(st, 201, "{r2}");
        assert_eq!(r2["number"], 2);
        assert_eq!(r2["trigger"], "rerun");
        assert_eq!(r2["rerun_of"], 1);
        assert_eq!(r2["actor"], "user:dev");
        assert_eq!(r2["status"], "running", "{r2}");
        let j = jobs_by_key(&r2);
        assert_eq!(j["c"]["status"], "queued");
        assert_eq!(j["a"]["status"], "success");
        assert_eq!(j["a"]["reused_from"], 1);
        assert_eq!(j["b"]["reused_from"], 1);
        let c = claim(&s).await.expect("c again");
        assert_eq!((c.run.number, c.job.key.as_str()), (2, "c"));
        assert!(claim(&s).await.is_none(), "nothing else to run in #2");
        assert_eq!(finish(&s, &c, "success").await.status, "success");

        // All: every job queued again.
        let (st, r3) = s
            .admin(Method::POST, &rerun_of(1), Some(json!({"jobs": "all"})))
            .await;
        assert_eq!(st, 201, "{r3}");
        assert!(
            r3["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|j| j["status"] == "queued"),
            "{r3}"
        );
        assert_eq!(r3["status"], "queued");

        // One job: a and its dependent b; c keeps its result from #1.
        let (st, r4) = s
            .admin(Method::POST, &rerun_of(1), Some(json!({"jobs": ["a"]})))
            .await;
        assert_eq!(st, 201, "{r4}");
        let j = jobs_by_key(&r4);
        assert_eq!(j["a"]["status"], "queued");
        assert_eq!(j["b"]["status"], "queued");
        assert_eq!(j["c"]["status"], "failure");
        assert_eq!(j["c"]["reused_from"], 1);

        // The run page offers the buttons to developers, not viewers.
        let page = |tok: String| {
            let s = &s;
            async move {
                let r = s
                    .req(Method::GET, "/projects/demo/pipelines/1", Some(&tok))
                    .send()
                    .await
                    .unwrap();
                r.text().await.unwrap()
            }
        };
        let html = page(dev.clone()).await;
        assert!(html.contains("id=\"rerun-all\""), "{html}");
        assert!(html.contains("id=\"rerun-failed\""), "{html}");
        assert!(html.contains("name=\"job\" value=\"c\""), "{html}");
        let html = page(viewer.clone()).await;
        assert!(!html.contains("rerun-all"));
        let r = s
            .req(Method::GET, "/projects/demo/pipelines/2", Some(&viewer))
            .send()
            .await
            .unwrap();
        let html = r.text().await.unwrap();
        assert!(
            html.contains("Re-run of <a href=\"/projects/demo/pipelines/1\">#1</a>"),
            "{html}"
        );
        assert!(html.contains("reused from #1"), "{html}");

        // The page's buttons: one job (c, from run #1) -> run #5, then the page of #5.
        let (st, to, body) = s
            .admin_form(
                "/projects/demo/pipelines/1/rerun",
                form_body(&[("job", "c")]),
            )
            .await;
        assert_eq!(st, 303, "{body}");
        assert_eq!(to, "/projects/demo/pipelines/5");
        let (_, r5) = s.admin(Method::GET, &format!("{RUNS}/5"), None).await;
        let j = jobs_by_key(&r5);
        assert_eq!(j["c"]["status"], "queued", "{r5}");
        assert_eq!(j["a"]["reused_from"], 1, "{r5}");
        // A run that has not finished: the page says so instead of re-running.
        let (st, to, _) = s
            .admin_form(
                "/projects/demo/pipelines/5/rerun",
                form_body(&[("jobs", "all")]),
            )
            .await;
        assert_eq!(st, 303);
        assert_eq!(to, "/projects/demo/pipelines/5");

        // The domain refuses a running run the same way.
        let err = rerun::rerun(
            &s.state.store,
            &ouro_code::repos::root(&s.state.settings.data_dir),
            project.id,
            3,
            &rerun::Selection::Keyword("all".into()),
            "user:admin",
        )
        .await
        .unwrap_err();
        assert_eq!(code(err), "build.run_not_finished");
        s.stop().await;
    }
}
