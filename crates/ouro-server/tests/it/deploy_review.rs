//! Review environments of two repositories of one project: change request numbers count per
//! repository, so both have a `!1`; each gets its own environment (`review-REPO-N`) and host,
//! and closing one tears down only that one.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::code_hosting::{Git, with_credentials};
use crate::deploy::{Cleanup, REVIEW_CI, app, environment};
use crate::support::{TestServer, backends};

const SERVICES: &str = r#"services:
  web:
    run: exec python3 app.py
    health:
      readiness: {http: /healthz, interval: 200ms, failure: 1}
    route:
      review: {listen: "127.0.0.1:0", host: "{repo}-{cr}.review.test"}
"#;

/// Repository `name` with CI and services on `main` and change request !1 from `feature`,
/// whose app answers with the repository's name; returns the review version.
async fn repo_with_cr(s: &TestServer, git: &Git, name: &str) -> String {
    let (st, repo) = s
        .admin(
            Method::POST,
            "/api/v1/projects/demo/repos",
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(st, 201, "{repo}");
    let url = with_credentials(
        repo["clone_url"].as_str().unwrap_or_default(),
        "admin",
        &s.admin_token,
    );
    let top = git.dir(name);
    git.run(&top, &["clone", "-q", &url, "w"]).await;
    let work = top.join("w");
    git.run(&work, &["checkout", "-q", "-b", "main"]).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    git.commit(&work, ".ouro/pipelines/cr.yml", REVIEW_CI, "CI")
        .await;
    git.commit(&work, ".ouro/services.yml", SERVICES, "Services")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    git.run(&work, &["checkout", "-q", "-b", "feature"]).await;
    let head = git
        .commit(&work, "app.py", &app(name, false), "The app")
        .await;
    git.run(&work, &["push", "-q", "origin", "feature"]).await;
    let (st, cr) = s
        .admin(
            Method::POST,
            &format!("/api/v1/projects/demo/repos/{name}/change-requests"),
            Some(json!({"source": "feature", "target": "main", "title": "Feature"})),
        )
        .await;
    assert_eq!((st, cr["number"].as_i64()), (201, Some(1)), "{cr}");
    format!("cr1-{}", &head[..12])
}

async fn live(s: &TestServer, env: &str, version: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (st, v) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/environments/{env}"),
                None,
            )
            .await;
        if st == 200 && v["version"] == version {
            return v;
        }
        assert!(Instant::now() < deadline, "{env} never ran {version}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get(listen: &str, host: &str) -> (u16, String) {
    match reqwest::Client::new()
        .get(format!("http://{listen}/"))
        .header("host", host)
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test]
async fn change_requests_of_two_repositories_get_separate_review_environments() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        let name = db.name();
        s.demo_project().await;
        let git = Git::new();
        let app_v = repo_with_cr(&s, &git, "app").await;
        let api_v = repo_with_cr(&s, &git, "api").await;
        let cleanup = Cleanup(
            s.state.clone(),
            vec![
                ("demo/review-app-1".into(), app_v.clone()),
                ("demo/review-api-1".into(), api_v.clone()),
            ],
        );

        let app_env = live(&s, "review-app-1", &app_v).await;
        let api_env = live(&s, "review-api-1", &api_v).await;
        assert_eq!(
            app_env["services"][0]["host"], "app-1.review.test",
            "{name}"
        );
        assert_eq!(
            api_env["services"][0]["host"], "api-1.review.test",
            "{name}"
        );
        let app_listen = app_env["services"][0]["listen"]
            .as_str()
            .unwrap()
            .to_string();
        let api_listen = api_env["services"][0]["listen"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            get(&app_listen, "app-1.review.test").await,
            (200, "app".into())
        );
        assert_eq!(
            get(&api_listen, "api-1.review.test").await,
            (200, "api".into())
        );

        // Closing the api's !1 tears down its environment only.
        let (st, closed) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/repos/api/change-requests/1/close",
                None,
            )
            .await;
        assert_eq!(st, 200, "{closed}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let env = environment(&s, "review-api-1").await;
            if env["version"].is_null() && env["replicas"].as_array().is_some_and(|r| r.is_empty())
            {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: not torn down: {env}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_ne!(get(&api_listen, "api-1.review.test").await.0, 200);
        let env = environment(&s, "review-app-1").await;
        assert_eq!(env["version"], app_v.as_str(), "{name}: {env}");
        assert_eq!(
            get(&app_listen, "app-1.review.test").await,
            (200, "app".into())
        );

        cleanup.run().await;
        s.stop().await;
    }
}
