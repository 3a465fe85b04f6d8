//! Rolling updates through the API on the local target, and the retention of old unpacked
//! versions the engine runs after each deployment (`[deploy] keep_versions`).

use std::time::Duration;

use reqwest::Method;

use crate::code_hosting::app_checkout;
use crate::deploy::{Cleanup, app, deploy, environment, finished, release};
use crate::support::{Options, TestServer, backends};

const ROLLING: &str = r#"services:
  web:
    run: exec python3 app.py
    replicas: 2
    health:
      readiness: {http: /healthz, interval: 200ms, timeout: 1s, failure: 1}
    route:
      staging: {listen: "127.0.0.1:0"}
    strategy: {kind: rolling, max-surge: 1, max-unavailable: 0}
    drain: {timeout: 5s, upgrade-grace: 1s}
"#;

/// The unpacked version directories of `web` in staging.
fn version_dirs(s: &TestServer) -> Vec<String> {
    let dir = s
        .state
        .settings
        .data_dir
        .join("deploy")
        .join("demo")
        .join("staging")
        .join("web");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Polls until the version directories are `want` (retention runs right after a deployment
/// is recorded as finished).
async fn dirs_become(s: &TestServer, want: &[String], what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = version_dirs(s);
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {now:?} instead of {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn rolling_updates_go_in_batches_and_old_versions_are_cleaned_up_after_deployments() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                // One version beyond the protected ones: the previous one survives anyway.
                tweak: |s| s.deploy_keep_versions = 1,
                ..Options::default()
            },
        )
        .await;
        let name = db.name();
        let project = s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro")).unwrap();
        let sha = git
            .commit(&work, ".ouro/services.yml", ROLLING, "Run the web service")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let versions = ["1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0"];
        for v in versions {
            release(&s, project.id, v, &sha, &app(v, false)).await;
        }
        let cleanup = Cleanup(
            s.state.clone(),
            versions
                .iter()
                .map(|v| ("demo/staging".to_string(), v.to_string()))
                .collect(),
        );

        for (i, v) in versions.iter().enumerate() {
            let d = deploy(&s, "staging", v).await;
            assert_eq!(d["state"], "succeeded", "{name}: {d}");
            assert_eq!(d["strategy"], "rolling", "{d}");
            let batches: Vec<(u64, u64, u64, u64)> = d["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|st| st["name"] == "batch")
                .map(|st| {
                    let n = |k: &str| st["detail"][k].as_u64().unwrap_or(u64::MAX);
                    assert!(n("running") <= 3, "{st}");
                    (
                        n("started"),
                        n("stopped"),
                        n("new_replicas"),
                        n("old_replicas"),
                    )
                })
                .collect();
            if i == 0 {
                assert!(batches.is_empty(), "nothing to replace: {d}");
            } else {
                assert_eq!(batches, vec![(1, 1, 1, 1), (1, 1, 2, 0)], "{name}: {d}");
            }
            // After each deployment: the live version and the previous one, nothing older.
            let mut want: Vec<String> = versions[i.saturating_sub(1)..=i]
                .iter()
                .map(|s| s.to_string())
                .collect();
            want.dedup();
            dirs_become(&s, &want, &format!("{name} after {v}")).await;
        }
        let env = environment(&s, "staging").await;
        assert_eq!(env["version"], "5.0.0", "{env}");
        let replicas = env["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 2, "{env}");
        assert!(replicas.iter().all(|r| r["version"] == "5.0.0"), "{env}");

        // A rollback after the cleanup: the previous version's files are still there.
        let (st, rb) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/environments/staging/rollback",
                None,
            )
            .await;
        assert_eq!(st, 202, "{rb}");
        let rb = finished(&s, rb["id"].as_i64().unwrap()).await;
        assert_eq!(rb["state"], "succeeded", "{name}: {rb}");
        assert_eq!(rb["version"], "4.0.0", "{rb}");
        let env = environment(&s, "staging").await;
        let listen = env["services"][0]["listen"].as_str().unwrap().to_string();
        let body = reqwest::get(format!("http://{listen}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "4.0.0");
        dirs_become(
            &s,
            &["4.0.0".to_string(), "5.0.0".to_string()],
            &format!("{name} after the rollback"),
        )
        .await;
        cleanup.run().await;
    }
}
