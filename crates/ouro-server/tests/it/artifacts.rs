//! Build artifacts and caches over HTTP: a runner uploads with its attempt token (stale and
//! missing tokens refused, unsafe paths refused, a full store is 507), users list and download
//! byte-exact (API and pages), and the real `HttpTransfer` client runs two jobs end to end through
//! the runner API (artifacts of needed jobs, cache save and restore).

use std::sync::Arc;

use crate::code_hosting::member;
use crate::support::*;
use ouro_build::artifacts::{HttpTransfer, JobFiles, Limits, StorageSettings, TOKEN_HEADER};
use ouro_build::exec::{
    ExecEvent, Executor, JobContext, JobSpec, JobStatus, ShellExecutor, StepSpec,
};
use ouro_build::runs;
use reqwest::Method;
use serde_json::Value;

const RUNS: &str = "/api/v1/projects/demo/pipelines";

const CI: &str = "name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    steps:
      - run: echo build
  test:
    needs: build
    steps:
      - run: echo test
";

/// A project with a pushed pipeline and its queued run #1.
async fn pushed(s: &TestServer) {
    s.demo_project().await;
    let (git, work, _) = crate::code_hosting::app_checkout(s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    git.commit(&work, ".ouro/pipelines/ci.yml", CI, "Add CI")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, b) = s.admin(Method::GET, RUNS, None).await;
        if b["runs"].as_array().is_some_and(|r| !r.is_empty()) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no run: {b}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn claim(s: &TestServer, key: &str) -> runs::Claim {
    let c = runs::claim_next(&s.state.store, "r1", 60_000)
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(c.job.key, key);
    c
}

async fn put(
    s: &TestServer,
    job: i64,
    token: Option<&str>,
    path: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut r = s
        .client
        .put(s.url(&format!("/api/v1/runner/jobs/{job}/artifacts/{path}")))
        .body(body);
    if let Some(t) = token {
        r = r.header(TOKEN_HEADER, t);
    }
    parse(r.send().await.unwrap()).await
}

fn data() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 256) as u8).collect()
}

#[tokio::test]
async fn runners_upload_with_their_attempt_token_and_users_download_byte_exact() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        pushed(&s).await;
        let c = claim(&s, "build").await;

        let (st, b) = put(&s, c.job.id, Some("att_nope"), "out/app.bin", data()).await;
        assert_eq!(
            (st, error_code(&b).as_str()),
            (409, "build.stale_attempt"),
            "{b}"
        );
        let (st, b) = put(&s, c.job.id, None, "out/app.bin", data()).await;
        assert_eq!(
            (st, error_code(&b).as_str()),
            (409, "build.stale_attempt"),
            "{b}"
        );
        let (st, b) = put(
            &s,
            c.job.id,
            Some(&c.token),
            "out%2F..%2F..%2Fetc",
            b"x".to_vec(),
        )
        .await;
        assert_eq!(st, 422, "{b}");
        let (st, b) = put(&s, c.job.id, Some(&c.token), "out/app.bin", data()).await;
        assert_eq!(st, 201, "{}: {b}", db.name());
        assert_eq!(b["path"], "out/app.bin");
        assert_eq!(b["size"], 300_000);
        assert_eq!(b["job"], "build");
        let id = b["id"].as_i64().unwrap();
        let (st, b) = put(
            &s,
            c.job.id,
            Some(&c.token),
            "report%20one.txt",
            b"ok\n".to_vec(),
        )
        .await;
        assert_eq!(st, 201, "{b}");
        assert_eq!(b["path"], "report one.txt");

        // Users: list and download (admin, a viewer); outsiders see nothing.
        let (st, list) = s
            .admin(Method::GET, &format!("{RUNS}/1/artifacts"), None)
            .await;
        assert_eq!(st, 200, "{list}");
        let arts = list["artifacts"].as_array().unwrap();
        assert_eq!(arts.len(), 2, "{list}");
        assert!(
            arts.iter()
                .all(|a| a["expired"] == false && a["expires_at"].is_string()),
            "{list}"
        );
        let viewer = member(&s, "viewer", "viewer").await;
        let r = s
            .req(
                Method::GET,
                &format!("{RUNS}/1/artifacts/{id}"),
                Some(&viewer),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cd = r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            cd.starts_with("attachment;") && cd.contains("app.bin"),
            "{cd}"
        );
        assert_eq!(r.bytes().await.unwrap().to_vec(), data(), "byte-exact");
        let (st, b) = s
            .admin(Method::GET, &format!("{RUNS}/1/artifacts/99999"), None)
            .await;
        assert_eq!(
            (st, error_code(&b).as_str()),
            (404, "build.artifact_not_found")
        );
        let outsider = s.user("mallory").await;
        let r = s
            .req(
                Method::GET,
                &format!("{RUNS}/1/artifacts/{id}"),
                Some(&outsider),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        // Pages: the run links to its artifacts; the list has sizes and download links.
        let (st, html) = s.admin_page("/projects/demo/pipelines/1").await;
        assert_eq!(st, 200);
        assert!(
            html.contains("/projects/demo/pipelines/1/artifacts\""),
            "{html}"
        );
        let (st, html) = s.admin_page("/projects/demo/pipelines/1/artifacts").await;
        assert_eq!(st, 200, "{html}");
        assert!(
            html.contains(&format!("/projects/demo/pipelines/1/artifacts/{id}\"")),
            "{html}"
        );
        assert!(
            html.contains("out/app.bin") && html.contains("293.0 KiB"),
            "{html}"
        );
        let r = s
            .req(
                Method::GET,
                &format!("/projects/demo/pipelines/1/artifacts/{id}"),
                Some(&viewer),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 300_000);

        // Expired: marked on the page, not downloadable.
        let mut tx = s.state.store.begin().await.unwrap();
        ouro_store::q("UPDATE build_artifacts SET expires_at = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let (_, html) = s.admin_page("/projects/demo/pipelines/1/artifacts").await;
        assert!(html.contains("artifact-expired"), "{html}");
        assert!(
            !html.contains(&format!("/projects/demo/pipelines/1/artifacts/{id}\"")),
            "{html}"
        );
        let (st, b) = s
            .admin(Method::GET, &format!("{RUNS}/1/artifacts/{id}"), None)
            .await;
        assert_eq!(
            (st, error_code(&b).as_str()),
            (404, "build.artifact_not_found"),
            "{b}"
        );

        // After the job ends its token is stale.
        runs::finish_job(&s.state.store, c.job.id, &c.token, "success", Some(0))
            .await
            .unwrap();
        let (st, b) = put(&s, c.job.id, Some(&c.token), "late.txt", b"x".to_vec()).await;
        assert_eq!(
            (st, error_code(&b).as_str()),
            (409, "build.stale_attempt"),
            "{b}"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn a_full_store_is_507_and_keeps_what_it_had() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st| st.artifacts.capacity_bytes = Some(400_000),
                ..Default::default()
            },
        )
        .await;
        pushed(&s).await;
        let c = claim(&s, "build").await;
        let (st, b) = put(&s, c.job.id, Some(&c.token), "a.bin", data()).await;
        assert_eq!(st, 201, "{b}");
        let mut other = data();
        other[0] = 1;
        let (st, b) = put(&s, c.job.id, Some(&c.token), "b.bin", other).await;
        assert_eq!(
            (st, error_code(&b).as_str()),
            (507, "build.storage_full"),
            "{}: {b}",
            db.name()
        );
        let (_, list) = s
            .admin(Method::GET, &format!("{RUNS}/1/artifacts"), None)
            .await;
        assert_eq!(list["artifacts"].as_array().unwrap().len(), 1, "{list}");
        // Identical content is stored once, so it still fits.
        let (st, b) = put(&s, c.job.id, Some(&c.token), "copy.bin", data()).await;
        assert_eq!(st, 201, "{b}");
        s.stop().await;
    }
}

async fn run_job(
    root: &std::path::Path,
    id: &str,
    script: &str,
    hooks: Arc<JobFiles>,
) -> (JobStatus, String) {
    let ex = ShellExecutor::new(root);
    let job = JobSpec {
        id: id.into(),
        steps: vec![StepSpec {
            name: "main".into(),
            run: script.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let (mut ctx, mut rx, _cancel) = JobContext::channel(64);
    ctx.hooks = Some(hooks);
    let drain = async {
        let mut text = Vec::new();
        while let Some(ev) = rx.recv().await {
            if let ExecEvent::Log { data, .. } = ev {
                text.extend_from_slice(&data);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    };
    let (out, log) = tokio::join!(ex.run(&job, ctx), drain);
    (out.unwrap().status, log)
}

fn http_files(s: &TestServer, c: &runs::Claim, artifacts: bool) -> Arc<JobFiles> {
    let transfer = Arc::new(HttpTransfer {
        client: reqwest::Client::new(),
        base_url: s.base.clone(),
        job_id: c.job.id,
        token: c.token.clone(),
    });
    Arc::new(JobFiles::new(
        transfer,
        artifacts.then(|| ouro_build::pipeline::Artifacts {
            paths: vec!["dist".into()],
            expire_in: Some("1 week".into()),
            reports: None,
        }),
        Some(ouro_build::pipeline::Cache {
            key: "deps-${{ env.V }}".into(),
            paths: vec!["vendor".into()],
            restore_keys: vec!["deps-".into()],
        }),
        ouro_build::expr::Context::new().with_env([("V".to_string(), "1".to_string())]),
        Limits::from(&StorageSettings::default()),
    ))
}

#[tokio::test]
async fn the_http_transfer_runs_two_jobs_through_the_runner_api() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        pushed(&s).await;
        let root = tempfile::tempdir().unwrap();
        let b = claim(&s, "build").await;
        let script = "mkdir -p dist vendor/lib\nhead -c 200000 /dev/urandom > dist/app.bin\necho dep > vendor/lib/dep.txt\nchmod 750 vendor/lib/dep.txt\nln -s lib/dep.txt vendor/link\n";
        let (st, log) = run_job(root.path(), "build", script, http_files(&s, &b, true)).await;
        assert_eq!(st, JobStatus::Success, "{log}");
        assert!(log.contains("cache miss: key deps-1"), "{log}");
        assert!(log.contains("cache saved: key deps-1"), "{log}");
        assert!(log.contains("artifacts: uploaded 1 file(s)"), "{log}");
        runs::finish_job(&s.state.store, b.job.id, &b.token, "success", Some(0))
            .await
            .unwrap();

        let (_, list) = s
            .admin(Method::GET, &format!("{RUNS}/1/artifacts"), None)
            .await;
        let arts = list["artifacts"].as_array().unwrap();
        assert_eq!(arts.len(), 1, "{}: {list}", db.name());
        assert_eq!(arts[0]["path"], "dist/app.bin");
        let sha = arts[0]["sha256"].as_str().unwrap().to_string();

        let t = claim(&s, "test").await;
        // Only the jobs it needs: the token of `test` sees build's artifact.
        let r = s
            .client
            .get(s.url(&format!(
                "/api/v1/runner/jobs/{}/needed-artifacts",
                t.job.id
            )))
            .header(TOKEN_HEADER, &t.token)
            .send()
            .await
            .unwrap();
        let (st, needed) = parse(r).await;
        assert_eq!(st, 200, "{needed}");
        assert_eq!(needed["artifacts"][0]["sha256"], sha.as_str());
        let script = "test -f dist/app.bin\ntest \"$(sha256sum dist/app.bin | cut -d' ' -f1)\" = \"$EXPECT\"\ntest \"$(cat vendor/link)\" = dep\ntest \"$(stat -c %a vendor/lib/dep.txt)\" = 750\n";
        let files = http_files(&s, &t, false);
        let ex = ShellExecutor::new(root.path());
        let job = JobSpec {
            id: "test".into(),
            steps: vec![StepSpec {
                name: "main".into(),
                run: script.into(),
                ..Default::default()
            }],
            env: [("EXPECT".to_string(), sha.clone())].into(),
            ..Default::default()
        };
        let (mut ctx, mut rx, _cancel) = JobContext::channel(64);
        ctx.hooks = Some(files);
        let drain = async {
            let mut text = Vec::new();
            while let Some(ev) = rx.recv().await {
                if let ExecEvent::Log { data, .. } = ev {
                    text.extend_from_slice(&data);
                }
            }
            String::from_utf8_lossy(&text).into_owned()
        };
        let (out, log) = tokio::join!(ex.run(&job, ctx), drain);
        assert_eq!(out.unwrap().status, JobStatus::Success, "{log}");
        assert!(
            log.contains("artifacts: 1 file(s) from needed jobs"),
            "{log}"
        );
        assert!(log.contains("cache hit: key deps-1 (restored"), "{log}");
        assert!(
            log.contains("cache: key deps-1 exists already") || !log.contains("cache saved"),
            "{log}"
        );

        // A cache lookup that misses is 204; a stale token is 409.
        let r = s
            .client
            .get(s.url(&format!(
                "/api/v1/runner/jobs/{}/cache?key=nothing",
                t.job.id
            )))
            .header(TOKEN_HEADER, &t.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let r = s
            .client
            .get(s.url(&format!(
                "/api/v1/runner/jobs/{}/cache?key=deps-1",
                b.job.id
            )))
            .header(TOKEN_HEADER, &b.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        s.stop().await;
    }
}
