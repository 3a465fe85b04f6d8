//! Releases end to end: a pushed pipeline builds an artifact, and its `release` step creates a
//! draft with the job's token (`OURO_JOB_TOKEN`, masked in the log, refused elsewhere and after
//! the job); publishing tags the hosted repository (`git ls-remote` shows it); published releases
//! are immutable; duplicates and a tag pushed by someone else first are 409s; the list keeps its
//! contract shape; compare, changelog and the pages show them.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const RELEASES: &str = "/api/v1/projects/demo/releases";

const PIPELINE: &str = r#"name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    artifacts:
      paths: [dist/app.txt]
    steps:
      - run: mkdir -p dist && echo "app $(git log -1 --format=%s)" > dist/app.txt
  release:
    needs: [build]
    artifacts:
      paths: [token.txt, made.json]
    steps:
      - run: |
          echo "token=$OURO_JOB_TOKEN"
          printf '%s' "$OURO_JOB_TOKEN" > token.txt
          other=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $OURO_JOB_TOKEN" "$OURO_SERVER_URL/api/v1/projects/demo/repos")
          echo "repos=$other"
          if git log -1 --format=%s | grep -q '^feat: first'; then
            curl -s -o made.json -w 'create=%{http_code}\n' -X POST \
              -H "Authorization: Bearer $OURO_JOB_TOKEN" -H 'content-type: application/json' \
              -d "{\"repo\": \"$OURO_REPO\", \"run\": $OURO_RUN_NUMBER, \"version\": \"0.9.0\"}" \
              "$OURO_SERVER_URL/api/v1/projects/$OURO_PROJECT/releases"
          else
            echo '{}' > made.json
          fi
"#;

fn log_text(s: &TestServer, job_id: i64, attempt: i64) -> String {
    let dir = ouro_build::runs::log_dir(&s.state.settings.data_dir, job_id, attempt);
    String::from_utf8_lossy(
        &ouro_build::logs::LogReader::open(&dir)
            .unwrap()
            .read_all()
            .unwrap(),
    )
    .to_string()
}

/// The content of artifact `path` of run `number`.
async fn artifact(s: &TestServer, number: i64, path: &str) -> String {
    let mut c = s.state.store.read().await.unwrap();
    let p = ouro_store::projects::by_slug(&mut c, "demo")
        .await
        .unwrap()
        .unwrap();
    let run = ouro_build::runs::get(&mut c, p.id, number).await.unwrap();
    let a = ouro_build::artifacts::list_for_run(&mut c, run.id)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.path == path)
        .unwrap_or_else(|| panic!("no artifact {path}"));
    let mut r = s.state.blobs.open(&a.sha256).unwrap().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut r, &mut out).unwrap();
    out
}

#[tokio::test]
async fn a_pipeline_step_creates_a_release_that_publishes_a_tag() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        s.demo_project().await;
        let (git, work, _) = crate::code_hosting::app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        git.commit(&work, ".ouro/pipelines/ci.yml", PIPELINE, "chore: add CI")
            .await;
        let head = git
            .commit(&work, "lib.rs", "pub fn a() {}\n", "feat: first feature")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "success", "{}: {run}", db.name());

        // The step's token: masked in the log, allowed to create the release, nothing else.
        let rj = job_of(&run, "release");
        let log = log_text(&s, rj["id"].as_i64().unwrap(), 1);
        let token = artifact(&s, 1, "token.txt").await;
        assert!(token.starts_with("ourojob_"), "{token}");
        assert!(!log.contains(&token), "the job token is masked: {log}");
        assert!(log.contains("repos=403"), "{log}");
        assert!(log.contains("create=201"), "{log}");
        let made: Value = serde_json::from_str(&artifact(&s, 1, "made.json").await).unwrap();
        assert_eq!(made["version"], "0.9.0", "{made}");
        // After the job ended its token is refused.
        let (st, body) = s.call(Method::GET, RELEASES, Some(&token), None).await;
        assert_eq!(st, 401, "{body}");

        // The contract: {"releases": [{version, tag, sha, state, ...}]}.
        let (st, list) = s.admin(Method::GET, RELEASES, None).await;
        assert_eq!(st, 200);
        let r0 = &list["releases"][0];
        assert_eq!(r0["version"], "0.9.0");
        assert_eq!(r0["tag"], "v0.9.0");
        assert_eq!(r0["sha"], head.as_str());
        assert_eq!(r0["state"], "draft");
        assert_eq!(r0["run"], 1);
        let (_, d) = s
            .admin(Method::GET, &format!("{RELEASES}/0.9.0"), None)
            .await;
        let arts = d["artifacts"].as_array().unwrap();
        assert_eq!(arts.len(), 1, "only the build job's artifact: {d}");
        assert_eq!(arts[0]["path"], "dist/app.txt");
        assert_eq!(arts[0]["sha256"].as_str().unwrap().len(), 64);

        // A developer may edit the draft but not publish it.
        let dev = crate::code_hosting::member(&s, "dev", "developer").await;
        let (st, e) = s
            .call(
                Method::PATCH,
                &format!("{RELEASES}/0.9.0"),
                Some(&dev),
                Some(json!({"notes": "## 0.9.0\n\nFirst!", "revision": d["revision"]})),
            )
            .await;
        assert_eq!(st, 200, "{e}");
        let (st, _) = s
            .call(
                Method::POST,
                &format!("{RELEASES}/0.9.0/publish"),
                Some(&dev),
                None,
            )
            .await;
        assert_eq!(st, 403);

        let (st, p) = s
            .admin(Method::POST, &format!("{RELEASES}/0.9.0/publish"), None)
            .await;
        assert_eq!(st, 200, "{p}");
        assert_eq!(p["state"], "published");
        let remote = git.run(&work, &["ls-remote", "--tags", "origin"]).await;
        assert!(
            remote.contains(&format!("{head}\trefs/tags/v0.9.0^{{}}")),
            "{}: {remote}",
            db.name()
        );
        let (st, e) = s
            .admin(
                Method::PATCH,
                &format!("{RELEASES}/0.9.0"),
                Some(json!({"notes": "rewrite history"})),
            )
            .await;
        assert_eq!((st, error_code(&e).as_str()), (409, "release.immutable"));
        let (st, e) = s
            .admin(
                Method::POST,
                RELEASES,
                Some(json!({"repo": "app", "run": 1, "version": "v0.9.0"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (409, "release.version_exists")
        );

        // A tag pushed by someone else before publishing: 409, the release stays a draft.
        let (st, e) = s
            .admin(
                Method::POST,
                RELEASES,
                Some(json!({"repo": "app", "run": 1, "version": "1.0.0"})),
            )
            .await;
        assert_eq!(st, 201, "{e}");
        git.run(&work, &["tag", "v1.0.0"]).await;
        git.run(&work, &["push", "-q", "origin", "v1.0.0"]).await;
        let (st, e) = s
            .admin(Method::POST, &format!("{RELEASES}/1.0.0/publish"), None)
            .await;
        assert_eq!((st, error_code(&e).as_str()), (409, "release.tag_exists"));
        let (_, d) = s
            .admin(Method::GET, &format!("{RELEASES}/1.0.0"), None)
            .await;
        assert_eq!(d["state"], "draft");

        // A fix: the next version is computed from the commits since 0.9.0.
        git.commit(&work, "lib.rs", "pub fn a() { }\n", "fix: spacing")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run2 = run_finished(&s, 2).await;
        assert_eq!(run2["status"], "success", "{run2}");
        let (st, next) = s
            .admin(
                Method::POST,
                RELEASES,
                Some(json!({"repo": "app", "run": 2, "draft": false})),
            )
            .await;
        assert_eq!(st, 201, "{next}");
        assert_eq!(next["state"], "published");
        assert_eq!(next["previous_version"], "0.9.0");
        let v2 = next["version"].as_str().unwrap().to_string();
        assert_ne!(v2, "0.9.0");
        assert!(
            next["notes"].as_str().unwrap().contains("spacing"),
            "{next}"
        );

        let (st, cmp) = s
            .admin(
                Method::GET,
                &format!("{RELEASES}/compare?from=0.9.0&to={v2}"),
                None,
            )
            .await;
        assert_eq!(st, 200, "{cmp}");
        let subjects: Vec<&str> = cmp["commits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["subject"].as_str().unwrap())
            .collect();
        assert_eq!(subjects, ["fix: spacing"], "{cmp}");
        assert_eq!(cmp["changed"][0]["path"], "dist/app.txt", "{cmp}");
        let (st, e) = s
            .admin(Method::GET, &format!("{RELEASES}/compare?from=0.9.0"), None)
            .await;
        assert_eq!(
            (st, error_code(&e).as_str()),
            (422, "request.validation_failed")
        );

        // Nothing releasable since the last release.
        let (st, e) = s
            .admin(
                Method::POST,
                RELEASES,
                Some(json!({"repo": "app", "run": 2})),
            )
            .await;
        assert_eq!(st, 422, "{e}");
        assert_eq!(error_code(&e), "release.nothing_to_release");

        let (st, w) = s
            .admin(
                Method::POST,
                &format!("{RELEASES}/0.9.0/withdraw"),
                Some(json!({"reason": "superseded"})),
            )
            .await;
        assert_eq!((st, w["state"].as_str()), (200, Some("withdrawn")), "{w}");
        let (_, cl) = s
            .admin(Method::GET, &format!("{RELEASES}/changelog"), None)
            .await;
        let versions: Vec<&str> = cl["releases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_str().unwrap())
            .collect();
        assert_eq!(
            versions,
            [v2.as_str(), "0.9.0"],
            "drafts are not in the changelog"
        );

        // The pages.
        for path in [
            "/projects/demo/releases".to_string(),
            format!("/projects/demo/releases/{v2}"),
            "/projects/demo/releases/0.9.0".to_string(),
            "/projects/demo/releases/changelog".to_string(),
            format!("/projects/demo/releases/compare?from=0.9.0&to={v2}"),
        ] {
            let (st, html) = s.admin_page(&path).await;
            assert_eq!(st, 200, "{path}: {html}");
        }
        let (_, page) = s.admin_page("/projects/demo/releases/0.9.0").await;
        assert!(page.contains("superseded"), "{page}");
        assert!(page.contains("First!"), "rendered notes: {page}");
        assert!(page.contains("dist/app.txt"));
        assert!(page.contains("/projects/demo/releases/0.9.0/promotions"));
        s.stop().await;
    }
}
