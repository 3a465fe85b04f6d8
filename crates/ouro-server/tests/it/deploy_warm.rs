//! The version that loses traffic is stopped after its keep-warm time: at once (after
//! draining) with `keep-warm: 0`, for blue-green deployments, rollbacks and the end of a
//! canary; later with a keep-warm time. Retention still keeps the unpacked versions, so a
//! rollback to a stopped version starts it again.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::code_hosting::app_checkout;
use crate::deploy::{Cleanup, app, deploy, environment, finished, get_text, release};
use crate::support::{TestServer, backends};

const SERVICES: &str = r#"services:
  web:
    run: exec python3 app.py
    replicas: 1
    health:
      readiness: {http: /healthz, interval: 200ms, timeout: 1s, failure: 1}
    route:
      staging: {listen: "127.0.0.1:0"}
      production: {listen: "127.0.0.1:0"}
      qa: {listen: "127.0.0.1:0"}
    strategy: {kind: blue-green, keep-warm: 0s}
    drain: {timeout: 5s, upgrade-grace: 1s}
    environments:
      production:
        strategy: {kind: canary, steps: [{weight: 50, pause: 300ms}, 100], keep-warm: 0s}
      qa:
        strategy: {kind: blue-green, keep-warm: 2s}
"#;

/// The pids of the replicas of `version` the environment reports as running.
fn pids(env: &Value, version: &str) -> Vec<i32> {
    env["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["version"] == version && r["health"] != "stopped")
        .filter_map(|r| r["pid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Polls until none of `pids` is a running process any more.
async fn stopped(pids: &[i32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "{what}: {pids:?} still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step_names(d: &Value) -> Vec<String> {
    d["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{} {}",
                s["name"].as_str().unwrap_or(""),
                s["detail"]["version"].as_str().unwrap_or("")
            )
            .trim()
            .to_string()
        })
        .collect()
}

fn version_dirs(s: &TestServer, env: &str) -> Vec<String> {
    let dir = s
        .state
        .settings
        .data_dir
        .join("deploy/demo")
        .join(env)
        .join("web");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn rollback(s: &TestServer, env: &str) -> Value {
    let (st, rb) = s
        .admin(
            Method::POST,
            &format!("/api/v1/projects/demo/environments/{env}/rollback"),
            None,
        )
        .await;
    assert_eq!(st, 202, "{rb}");
    finished(s, rb["id"].as_i64().unwrap_or_default()).await
}

/// The demo project with SERVICES pushed and releases 1.0.0 and 1.1.0 of the app.
async fn two_releases(s: &TestServer) {
    let project = s.demo_project().await;
    let (git, work, _) = app_checkout(s).await;
    std::fs::create_dir_all(work.join(".ouro")).unwrap();
    let sha = git
        .commit(&work, ".ouro/services.yml", SERVICES, "Run the web service")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    release(s, project.id, "1.0.0", &sha, &app("1.0.0", false)).await;
    release(s, project.id, "1.1.0", &sha, &app("1.1.0", false)).await;
}

#[tokio::test]
async fn the_version_that_loses_traffic_stops_after_its_keep_warm_time() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let name = db.name();
        two_releases(&s).await;
        let mut pairs = Vec::new();
        for env in ["staging", "production", "qa"] {
            for v in ["1.0.0", "1.1.0"] {
                pairs.push((format!("demo/{env}"), v.to_string()));
            }
        }
        let cleanup = Cleanup(s.state.clone(), pairs);

        // Blue-green, keep-warm 0: the old version is drained and stopped by the deployment.
        let d = deploy(&s, "staging", "1.0.0").await;
        assert_eq!(d["state"], "succeeded", "{name}: {d}");
        let old = pids(&environment(&s, "staging").await, "1.0.0");
        assert_eq!(old.len(), 1, "{name}");
        let d = deploy(&s, "staging", "1.1.0").await;
        assert_eq!(d["state"], "succeeded", "{name}: {d}");
        assert_eq!(
            step_names(&d),
            [
                "start 1.1.0",
                "ready 1.1.0",
                "switch",
                "drain 1.0.0",
                "stop 1.0.0"
            ],
            "{name}: {d}"
        );
        stopped(&old, "1.0.0 after the deployment of 1.1.0").await;
        let env = environment(&s, "staging").await;
        assert!(pids(&env, "1.0.0").is_empty(), "{name}: {env}");
        let url = format!("http://{}/", env["services"][0]["listen"].as_str().unwrap());
        assert_eq!(get_text(&url).await, "1.1.0");
        // Retention keeps the stopped version unpacked for a rollback.
        assert_eq!(version_dirs(&s, "staging"), ["1.0.0", "1.1.0"], "{name}");

        // The rollback starts 1.0.0 again, switches, and stops 1.1.0.
        let new = pids(&env, "1.1.0");
        assert_eq!(new.len(), 1, "{name}: {env}");
        let rb = rollback(&s, "staging").await;
        assert_eq!(rb["state"], "succeeded", "{name}: {rb}");
        assert!(
            step_names(&rb).ends_with(&["drain 1.1.0".to_string(), "stop 1.1.0".to_string()]),
            "{name}: {rb}"
        );
        stopped(&new, "1.1.0 after the rollback").await;
        assert_eq!(get_text(&url).await, "1.0.0");
        let env = environment(&s, "staging").await;
        assert!(pids(&env, "1.1.0").is_empty(), "{name}: {env}");
        assert_eq!(pids(&env, "1.0.0").len(), 1, "{name}: {env}");

        // The end of a canary with keep-warm 0.
        let d = deploy(&s, "production", "1.0.0").await;
        assert_eq!(d["state"], "succeeded", "{name}: {d}");
        let old = pids(&environment(&s, "production").await, "1.0.0");
        let d = deploy(&s, "production", "1.1.0").await;
        assert_eq!(d["state"], "succeeded", "{name}: {d}");
        assert_eq!(d["strategy"], "canary", "{name}: {d}");
        assert!(
            step_names(&d).ends_with(&["drain 1.0.0".to_string(), "stop 1.0.0".to_string()]),
            "{name}: {d}"
        );
        stopped(&old, "1.0.0 after the canary").await;

        // A keep-warm time: the old version stops when it is over, with no step of the
        // deployment (it has finished).
        let d = deploy(&s, "qa", "1.0.0").await;
        assert_eq!(d["state"], "succeeded", "{name}: {d}");
        let old = pids(&environment(&s, "qa").await, "1.0.0");
        let d = deploy(&s, "qa", "1.1.0").await;
        assert_eq!(d["state"], "succeeded", "{name}: {d}");
        assert_eq!(
            step_names(&d).last().map(String::as_str),
            Some("drain 1.0.0")
        );
        stopped(&old, "1.0.0 after its keep-warm time").await;
        assert_eq!(version_dirs(&s, "qa"), ["1.0.0", "1.1.0"], "{name}");

        cleanup.run().await;
        s.stop().await;
    }
}

#[tokio::test]
async fn a_version_kept_warm_across_a_restart_still_stops() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let name = db.name();
        two_releases(&s).await;
        let d = deploy(&s, "qa", "1.0.0").await;
        assert_eq!(d["state"], "succeeded", "{name}: {d}");
        let old = pids(&environment(&s, "qa").await, "1.0.0");
        assert_eq!(old.len(), 1, "{name}");
        let d = deploy(&s, "qa", "1.1.0").await;
        assert_eq!(d["state"], "succeeded", "{name}: {d}");
        // The server stops while 1.0.0 is warm (2 s): its stop timer dies with it. The
        // restarted server adopts 1.0.0 and stops it after the keep-warm time.
        let s = s.restart().await;
        let cleanup = Cleanup(
            s.state.clone(),
            vec![
                ("demo/qa".into(), "1.0.0".into()),
                ("demo/qa".into(), "1.1.0".into()),
            ],
        );
        stopped(&old, "1.0.0 kept warm across a restart").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let env = loop {
            let env = environment(&s, "qa").await;
            let listen = env["services"][0]["listen"].as_str().unwrap_or(":0");
            if pids(&env, "1.1.0").len() == 1 && !listen.ends_with(":0") {
                break env;
            }
            assert!(Instant::now() < deadline, "{name}: not restored: {env}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let url = format!("http://{}/", env["services"][0]["listen"].as_str().unwrap());
        assert_eq!(get_text(&url).await, "1.1.0", "{name}");
        cleanup.run().await;
        s.stop().await;
    }
}
