//! The pipeline runs on the commit page and the change request page (`ui::code_runs`): after a
//! push the commit page lists its run, the change request page lists the runs that build it, the
//! panel polls (htmx) while a run is active and stops once every run is finished.

use std::time::{Duration, Instant};

use crate::code_hosting::{app_checkout, member};
use crate::support::*;
use ouro_build::runs;
use reqwest::Method;
use serde_json::{Value, json};

const RUNS: &str = "/api/v1/projects/demo/pipelines";
const REPO: &str = "/api/v1/projects/demo/repos/app";
const UI: &str = "/projects/demo/code/app";

const CI: &str = "name: Checks
on:
  push:
    branches: [main]
  change_request:
    branches: [main]
jobs:
  check:
    steps:
      - run: echo check
";

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

/// Runs every queued job to success through the runner protocol.
async fn finish_all(s: &TestServer) {
    while let Some(c) = runs::claim_next(&s.state.store, "r", 60_000).await.unwrap() {
        runs::finish_job(&s.state.store, c.job.id, &c.token, "success", Some(0))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn commit_and_change_request_pages_list_their_runs_live_until_finished() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let viewer = member(&s, "viewer", "viewer").await;
        let dev = member(&s, "dev", "developer").await;
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        let main_head = git.commit(&work, ".ouro/pipelines/ci.yml", CI, "CI").await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let body = eventually(&s, RUNS, |b| !runs_of(b).is_empty()).await;
        assert_eq!(runs_of(&body)[0]["sha"], main_head.as_str(), "{body}");

        // The commit page lists its run, queued, and polls while it is active.
        let commit_page = format!("{UI}/commit/{main_head}");
        let (st, html) = page(&s, &viewer, &commit_page).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("id=\"runs\""), "{html}");
        assert!(html.contains("data-run=\"1\""), "{html}");
        assert!(
            html.contains("href=\"/projects/demo/pipelines/1\">Checks</a>"),
            "{html}"
        );
        assert!(html.contains("badge run-queued"), "{html}");
        let fragment = format!("{commit_page}/runs");
        assert!(html.contains(&format!("hx-get=\"{fragment}\"")), "{html}");

        // A branch and a change request: its page lists the change request run (and not main's).
        git.run(&work, &["checkout", "-q", "-b", "feature"]).await;
        let head = git.commit(&work, "a.txt", "a\n", "A").await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        let (st, cr) = s
            .call(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(&dev),
                Some(json!({"source": "feature", "target": "main", "title": "Feature"})),
            )
            .await;
        assert_eq!(st, 201, "{cr}");
        eventually(&s, RUNS, |b| runs_of(b).iter().any(|r| r["cr_number"] == 1)).await;
        let cr_page = format!("{UI}/change-requests/1");
        let (st, html) = page(&s, &viewer, &cr_page).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("data-run=\"2\""), "{html}");
        assert!(
            !html.contains("data-run=\"1\""),
            "main's run is not the CR's: {html}"
        );
        assert!(html.contains(&head[..10]), "{html}");
        assert!(
            html.contains(&format!("hx-get=\"{cr_page}/runs\"")),
            "the panel polls while the run is queued: {html}"
        );

        // Once the jobs finish, the fragments show success and stop polling.
        finish_all(&s).await;
        let (st, frag) = page(&s, &viewer, &format!("{cr_page}/runs")).await;
        assert_eq!(st, 200, "{frag}");
        assert!(frag.contains("data-status=\"success\""), "{frag}");
        assert!(
            !frag.contains("hx-trigger"),
            "a finished panel stops polling: {frag}"
        );
        assert!(!frag.contains("<html"), "a fragment, not a page: {frag}");
        let (st, frag) = page(&s, &viewer, &fragment).await;
        assert_eq!(st, 200, "{frag}");
        assert!(frag.contains("data-run=\"1\""), "{frag}");
        assert!(frag.contains("badge run-success"), "{frag}");
        assert!(!frag.contains("hx-trigger"), "{frag}");

        // A commit without runs says so; an unknown change request is a 404.
        let (st, html) = page(&s, &viewer, &format!("{UI}/commit/{head}")).await;
        assert_eq!(st, 200);
        assert!(
            html.contains("data-run=\"2\""),
            "the CR run built {head}: {html}"
        );
        let (st, _) = page(&s, &viewer, &format!("{UI}/change-requests/99/runs")).await;
        assert_eq!(st, 404);
        let (st, html) = page(&s, &viewer, &format!("{UI}/commit/{}/runs", "0".repeat(40))).await;
        assert_eq!(st, 200);
        assert!(html.contains("id=\"no-runs\""), "{html}");
        s.stop().await;
    }
}
