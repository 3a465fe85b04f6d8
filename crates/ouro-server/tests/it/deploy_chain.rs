//! The whole loop for one real service, through the API only (issue 8's "done when"): a work
//! item, a push, a pipeline that builds a small HTTP service (python3) into an artifact, a
//! release created from the green run, its promotion to staging (deployed blue-green) and to
//! production (approved by a second person, deployed by canary steps with three replicas: the
//! services file's `environments.production`), a second release built from a fix and rolled out
//! the same way under a steady keep-alive load on both environments, a rollback of production,
//! and the item's trail showing the deployments. Zero failed requests throughout.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::code_hosting::app_checkout;
use crate::deploy::{Cleanup, Load, environment, finished, get_text};
use crate::support::{TestServer, backends};

/// The service's source: answers `/` with its greeting and the version Ouro runs
/// (`OURO_VERSION`), `/healthz` with 200.
fn server_py(greeting: &str) -> String {
    format!(
        r#"import os, http.server, socketserver
BODY = ("{greeting} from " + os.environ["OURO_VERSION"]).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#
    )
}

/// The pipeline "builds" the service: the source is checked (compiled) and copied into `dist/`,
/// which becomes the run's artifact and so the release bundle's content.
const PIPELINE: &str = "name: build
on:
  push:
    branches: [main]
jobs:
  build:
    steps:
      - run: mkdir -p dist && cp src/server.py dist/server.py
      - run: python3 -m py_compile dist/server.py && rm -rf dist/__pycache__
    artifacts:
      paths: [dist/server.py]
";

/// Staging switches blue-green with one replica; production runs three and moves traffic in
/// canary steps gated on the error rate.
const SERVICES: &str = r#"services:
  web:
    run: exec python3 dist/server.py
    replicas: 1
    health:
      readiness: {http: /healthz, interval: 200ms, timeout: 1s, failure: 1}
    route:
      staging: {listen: "127.0.0.1:0"}
      production: {listen: "127.0.0.1:0"}
    strategy: {kind: blue-green, keep-warm: 5m}
    drain: {timeout: 5s, upgrade-grace: 1s}
    environments:
      production:
        replicas: 3
        strategy:
          kind: canary
          steps: [{weight: 34, pause: 1s}, {weight: 67, pause: 1s}, 100]
          analysis: {max-error-rate: 1%, min-requests: 5}
          keep-warm: 5m
"#;

const ENVIRONMENTS: &str = "environments:
  staging: {}
  production:
    approvals: {required: 1, no-self-approval: true}
";

async fn get(s: &TestServer, path: &str) -> Value {
    let (st, v) = s.admin(Method::GET, path, None).await;
    assert_eq!(st, 200, "{path}: {v}");
    v
}

/// Waits for pipeline run `number` to finish and asserts it succeeded.
async fn green_run(s: &TestServer, number: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs = get(s, "/api/v1/projects/demo/pipelines").await;
        if let Some(r) = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["number"] == number)
        {
            match r["status"].as_str().unwrap() {
                "success" => return,
                "queued" | "running" => {}
                other => panic!("run {number} ended {other}: {r}"),
            }
        }
        assert!(Instant::now() < deadline, "run {number} not done: {runs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates and publishes a release from run `number`; returns its computed version.
async fn release_from_run(s: &TestServer, number: i64) -> String {
    let (st, r) = s
        .admin(
            Method::POST,
            "/api/v1/projects/demo/releases",
            Some(json!({"repo": "app", "run": number, "draft": false})),
        )
        .await;
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["state"], "published", "{r}");
    r["version"].as_str().unwrap().to_string()
}

/// The environment once `version` is live there and no deployment runs.
async fn live(s: &TestServer, env: &str, version: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (st, v) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/environments/{env}"),
                None,
            )
            .await;
        if st == 200 && v["version"] == version && v["deploying"].is_null() {
            return v;
        }
        if st == 200 {
            let d = &v["deployments"][0];
            assert!(
                !(d["version"] == version && d["state"] == "failed"),
                "{version} failed to deploy to {env}: {d}"
            );
        }
        assert!(Instant::now() < deadline, "{env} never ran {version}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Requests `version`'s promotion to staging (no gates: deployed at once) and to production,
/// which the maintainer `ann` approves (the requester may not); waits until it is live in both.
async fn promote_through(s: &TestServer, ann: &str, version: &str) -> (Value, Value) {
    let path = format!("/api/v1/projects/demo/releases/{version}/promotions");
    let (st, p) = s
        .admin(Method::POST, &path, Some(json!({"environment": "staging"})))
        .await;
    assert_eq!(st, 201, "{p}");
    assert_eq!(p["state"], "approved", "{p}");
    let staging = live(s, "staging", version).await;

    let (st, p) = s
        .admin(
            Method::POST,
            &path,
            Some(json!({"environment": "production"})),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    assert_eq!(p["state"], "requested", "{p}");
    let id = p["id"].as_i64().unwrap();
    let (st, a) = s
        .call(
            Method::POST,
            &format!("/api/v1/projects/demo/promotions/{id}/approve"),
            Some(ann),
            Some(json!({"comment": "ship it"})),
        )
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["state"], "approved", "{a}");
    let production = live(s, "production", version).await;
    (staging, production)
}

fn listen(env: &Value) -> String {
    env["services"][0]["listen"]
        .as_str()
        .unwrap_or_else(|| panic!("no listen address: {env}"))
        .to_string()
}

fn replicas_of(env: &Value, version: &str) -> Vec<Value> {
    env["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["version"] == version)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_built_service_is_released_promoted_deployed_blue_green_and_canary_and_rolled_back() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        s.demo_project().await;
        let ann = s.user("ann").await;
        let (st, m) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/ann",
                Some(json!({"role": "maintainer"})),
            )
            .await;
        assert_eq!(st, 200, "{m}");
        let (st, item) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/items",
                Some(json!({"type": "story", "title": "Greet our visitors"})),
            )
            .await;
        assert_eq!(st, 201, "{item}");
        let key = item["key"].as_str().unwrap().to_string();

        // Code: the service, its pipeline, what to run and the promotion path, in one push.
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        std::fs::create_dir_all(work.join("src")).unwrap();
        std::fs::write(work.join(".ouro/pipelines/build.yml"), PIPELINE).unwrap();
        std::fs::write(work.join(".ouro/services.yml"), SERVICES).unwrap();
        std::fs::write(work.join(".ouro/environments.yml"), ENVIRONMENTS).unwrap();
        git.commit(
            &work,
            "src/server.py",
            &server_py("hello"),
            &format!("feat: a greeting service ({key})"),
        )
        .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;

        // Build, then release from the green run.
        green_run(&s, 1).await;
        let v1 = release_from_run(&s, 1).await;
        assert_eq!(v1, "0.1.0", "the first version");
        let mut cleanup = Cleanup(
            s.state.clone(),
            ["staging", "production"]
                .iter()
                .map(|e| (format!("demo/{e}"), v1.clone()))
                .collect(),
        );

        // First rollout: nothing runs yet, both environments get v1.
        let (staging, production) = promote_through(&s, &ann, &v1).await;
        assert_eq!(
            staging["services"][0]["strategy"], "blue-green",
            "{staging}"
        );
        assert_eq!(
            production["services"][0]["strategy"], "canary",
            "{production}"
        );
        assert_eq!(replicas_of(&staging, &v1).len(), 1, "{staging}");
        assert_eq!(replicas_of(&production, &v1).len(), 3, "{production}");
        let (staging_url, production_url) = (
            format!("http://{}/", listen(&staging)),
            format!("http://{}/", listen(&production)),
        );
        let body = get_text(&production_url).await;
        assert_eq!(body, format!("hello from {v1}"));

        // A fix, built and rolled out while both environments serve a steady load.
        let staging_load = Load::start(staging_url.clone());
        let production_load = Load::start(production_url.clone());
        git.commit(
            &work,
            "src/server.py",
            &server_py("welcome"),
            &format!("fix: a warmer greeting ({key})"),
        )
        .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        green_run(&s, 2).await;
        let v2 = release_from_run(&s, 2).await;
        assert_eq!(v2, "0.1.1", "a fix after 0.1.0");
        cleanup
            .1
            .extend(["staging", "production"].map(|e| (format!("demo/{e}"), v2.clone())));
        let (staging, production) = promote_through(&s, &ann, &v2).await;

        // Staging switched blue-green; production moved through every canary step.
        let d = finished(&s, staging["deployments"][0]["id"].as_i64().unwrap()).await;
        assert_eq!(
            (d["state"].as_str(), d["strategy"].as_str()),
            (Some("succeeded"), Some("blue-green")),
            "{d}"
        );
        let d = finished(&s, production["deployments"][0]["id"].as_i64().unwrap()).await;
        assert_eq!(
            (d["state"].as_str(), d["strategy"].as_str()),
            (Some("succeeded"), Some("canary")),
            "{d}"
        );
        let weights: Vec<i64> = d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|st| st["detail"]["weight"].as_i64())
            .collect();
        assert!(
            weights.starts_with(&[34, 67]),
            "the canary steps of production: {d}"
        );
        assert_eq!(replicas_of(&production, &v2).len(), 3, "{production}");
        let body = get_text(&production_url).await;
        assert_eq!(body, format!("welcome from {v2}"));

        // Production goes back to v1 with one call; v1 is still warm, so this is a switch.
        let started = Instant::now();
        let (st, r) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/environments/production/rollback",
                None,
            )
            .await;
        assert_eq!(st, 202, "{r}");
        let rolled = live(&s, "production", &v1).await;
        let took = started.elapsed();
        let body = get_text(&production_url).await;
        assert_eq!(body, format!("hello from {v1}"));
        assert_eq!(rolled["deployments"][0]["kind"], "rollback", "{rolled}");
        eprintln!("rollback of production: {took:?} from the call to v1 live");

        let (ok_staging, failed_staging) = staging_load.finish().await;
        let (ok_production, failed_production) = production_load.finish().await;
        assert!(
            failed_staging.is_empty(),
            "{} failed staging requests: {:?}",
            failed_staging.len(),
            &failed_staging[..failed_staging.len().min(5)]
        );
        assert!(
            failed_production.is_empty(),
            "{} failed production requests: {:?}",
            failed_production.len(),
            &failed_production[..failed_production.len().min(5)]
        );
        assert!(
            ok_staging > 50 && ok_production > 50,
            "{ok_staging} {ok_production}"
        );

        // Plan's trail of the item: both commits, both runs, both releases, and the
        // deployments per environment, the newest production one rolled back.
        let trail = get(&s, &format!("/api/v1/projects/demo/items/{key}/trail")).await;
        let stage = |t: &str| -> Vec<Value> {
            trail["stages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|st| st["type"] == t)
                .map(|st| st["entries"].as_array().unwrap().clone())
                .unwrap_or_default()
        };
        assert_eq!(stage("commit").len(), 2, "{trail}");
        assert_eq!(stage("pipeline_run").len(), 2, "{trail}");
        assert_eq!(stage("release").len(), 2, "{trail}");
        let deployments = stage("deployment");
        for env in ["staging", "production"] {
            assert!(
                deployments
                    .iter()
                    .any(|e| e["environment"] == env && e["status"] == "succeeded"),
                "no succeeded deployment to {env} in the trail: {trail}"
            );
        }
        assert!(
            deployments
                .iter()
                .any(|e| e["environment"] == "production" && e["status"] == "rolled back"),
            "the rollback is not in the trail: {trail}"
        );
        let env = environment(&s, "production").await;
        assert_eq!(env["previous_version"], v2.as_str(), "{env}");

        cleanup.run().await;
        s.stop().await;
    }
}
