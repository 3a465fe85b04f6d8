//! `ouro pipeline run|rerun|cancel` against a real server (in-process runner on), with a
//! repository pushed with git: a manual run with `--input`, its re-run, and the API's errors.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ouro_store::testing::backends;
use serde_json::Value;

fn ouro(base: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ouro"))
        .arg("pipeline")
        .args(args)
        .env("OURO_SERVER", base)
        .env("OURO_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

const CI: &str = r#"name: Deploy
on:
  manual:
    inputs:
      level:
        type: choice
        options: [low, high]
        default: low
jobs:
  show:
    steps:
      - run: echo "level=${{ inputs.level }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_run_with_inputs_rerun_and_cancel_go_through_the_api() {
    for db in backends() {
        let srv = crate::served::served(&db, "admin", true, 1).await;
        let (base, token) = (srv.base.clone(), srv.token.clone());
        let client = reqwest::Client::new();
        let url = srv.demo_repo().await;
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
            git(&work, &["init", "-q", "-b", "main"]);
            std::fs::write(work.join(".ouro/pipelines/deploy.yml"), CI).unwrap();
            git(&work, &["add", "."]);
            git(&work, &["commit", "-q", "-m", "Start"]);
            git(&work, &["push", "-q", &url, "main"]);
        })
        .await
        .unwrap();

        let (b, t) = (base.clone(), token.clone());
        let cli = move |args: Vec<&'static str>| {
            let (b, t) = (b.clone(), t.clone());
            async move {
                tokio::task::spawn_blocking(move || ouro(&b, &t, &args))
                    .await
                    .unwrap()
            }
        };
        // A bad input is the API's 422, naming it; a malformed one is refused before any call.
        let (ok, _, err) = cli(vec![
            "run",
            "-p",
            "demo",
            "-r",
            "app",
            "--input",
            "level=max",
        ])
        .await;
        assert!(!ok);
        assert!(
            err.contains("inputs.level") || err.contains("level"),
            "{err}"
        );
        let (ok, _, err) = cli(vec!["run", "-p", "demo", "-r", "app", "--input", "level"]).await;
        assert!(!ok);
        assert!(err.contains("NAME=VALUE"), "{err}");

        let (ok, out, err) = cli(vec![
            "run",
            "-p",
            "demo",
            "-r",
            "app",
            "--input",
            "level=high",
        ])
        .await;
        assert!(ok, "{err}");
        assert!(out.starts_with("#1 Deploy "), "{out}");
        let finished = |n: i64| {
            let (client, base, token) = (client.clone(), base.clone(), token.clone());
            async move {
                let deadline = Instant::now() + Duration::from_secs(90);
                loop {
                    let r: Value = client
                        .get(format!("{base}/api/v1/projects/demo/pipelines/{n}"))
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
                        return r;
                    }
                    assert!(Instant::now() < deadline, "run #{n} did not finish: {r}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let data_dir = srv.state.settings.data_dir.clone();
        let log = |run: &Value| {
            let id = run["jobs"][0]["id"].as_i64().unwrap();
            let bytes =
                ouro_build::logs::LogReader::open(&ouro_build::runs::log_dir(&data_dir, id, 1))
                    .unwrap()
                    .read_all()
                    .unwrap();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let run = finished(1).await;
        assert_eq!(run["status"], "success", "{run}");
        assert_eq!(run["inputs"]["level"], "high", "{run}");
        assert!(log(&run).contains("level=high\n"), "{}", log(&run));

        // Re-run: a new run with the same inputs.
        let (ok, out, err) = cli(vec!["rerun", "-p", "demo", "1"]).await;
        assert!(ok, "{err}");
        assert!(out.starts_with("#2 "), "{out}");
        let run = finished(2).await;
        assert_eq!(run["status"], "success", "{run}");
        assert!(log(&run).contains("level=high\n"), "{}", log(&run));

        // Cancelling a finished run is the API's 409, with its code.
        let (ok, _, err) = cli(vec!["cancel", "-p", "demo", "1"]).await;
        assert!(!ok);
        assert!(err.contains("build.run_finished"), "{err}");
        srv.stop().await;
    }
}
