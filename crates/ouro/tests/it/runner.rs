//! `ouro runner`: the real binary registers with a registration token, claims a pushed
//! pipeline's jobs over HTTP, clones the commit with its job token, and runs them to success
//! (the server's in-process runner is off).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ouro_store::testing::backends;
use serde_json::{Value, json};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CI: &str = "name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    runs-on: remote
    steps:
      - run: cat README.md; echo built-remotely
  test:
    needs: build
    runs-on: remote
    steps:
      - run: test -f README.md && echo tested
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ouro_runner_runs_a_pushed_pipeline_to_success() {
    for db in backends() {
        let srv = crate::served::served(&db, "admin", true, 0).await;
        let dir = tempfile::tempdir().unwrap();
        let (base, token) = (srv.base.clone(), srv.token.clone());
        let data_dir = srv.state.settings.data_dir.clone();
        let client = reqwest::Client::new();
        let url = srv.demo_repo().await;
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        let w = work.clone();
        tokio::task::spawn_blocking(move || {
            git(&w, &["init", "-q", "-b", "main"]);
            std::fs::write(w.join("README.md"), "hello from the repo\n").unwrap();
            std::fs::write(w.join(".ouro/pipelines/ci.yml"), CI).unwrap();
            git(&w, &["add", "."]);
            git(&w, &["commit", "-q", "-m", "Start"]);
            git(&w, &["push", "-q", &url, "main"]);
        })
        .await
        .unwrap();

        let reg: Value = client
            .post(format!("{base}/api/v1/admin/runner-tokens"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let runner_dir = dir.path().join("runner");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ouro"))
            .args(["runner", "--server", &base, "--labels", "remote,linux"])
            .args(["--slots", "2", "--name", "test-runner", "--token"])
            .arg(reg["token"].as_str().unwrap())
            .arg("--work-dir")
            .arg(&runner_dir)
            .env("OURO_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        let deadline = Instant::now() + Duration::from_secs(90);
        let run = loop {
            let r: Value = client
                .get(format!("{base}/api/v1/projects/demo/pipelines/1"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if matches!(
                r["status"].as_str(),
                Some("success" | "failure" | "cancelled")
            ) {
                break r;
            }
            assert!(Instant::now() < deadline, "the run did not finish: {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(run["status"], "success", "{run}");
        let id = run["jobs"][0]["id"].as_i64().unwrap();
        let log = ouro_build::logs::LogReader::open(&ouro_build::runs::log_dir(&data_dir, id, 1))
            .unwrap()
            .read_all()
            .unwrap();
        let text = String::from_utf8_lossy(&log);
        assert!(
            text.contains("hello from the repo\nbuilt-remotely\n"),
            "{text}"
        );
        // The runner is registered (its token kept in the work dir) and listed.
        assert!(runner_dir.join("runner.json").exists());
        let list: Value = client
            .get(format!("{base}/api/v1/admin/runners"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["runners"][0]["name"], "test-runner", "{list}");
        assert_eq!(list["runners"][0]["labels"], json!(["remote", "linux"]));
        child.kill().await.unwrap();
        srv.stop().await;
    }
}
