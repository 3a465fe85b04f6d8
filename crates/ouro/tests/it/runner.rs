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

/// What one pipeline run on a separate `ouro runner` left behind.
struct Ran {
    run: Value,
    /// The first job's log.
    log: String,
    /// Every job's log, in the run's order.
    logs: Vec<String>,
    runner_dir: std::path::PathBuf,
    runners: Value,
}

/// Pushes `pipeline` (made from the runner's work dir) to a fresh server, starts `ouro runner`
/// with `extra` arguments, waits for run 1 to finish and returns what it left.
async fn run_on_runner(
    db: &ouro_store::testing::TestDb,
    extra: &[&str],
    pipeline: impl FnOnce(&Path) -> String,
) -> Ran {
    let srv = crate::served::served(db, "admin", true, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let (base, token) = (srv.base.clone(), srv.token.clone());
    let data_dir = srv.state.settings.data_dir.clone();
    let client = reqwest::Client::new();
    let url = srv.demo_repo().await;
    let work = dir.path().join("work");
    let runner_dir = dir.path().join("runner");
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    std::fs::create_dir_all(&runner_dir).unwrap();
    let ci = pipeline(&runner_dir.canonicalize().unwrap());
    let w = work.clone();
    tokio::task::spawn_blocking(move || {
        git(&w, &["init", "-q", "-b", "main"]);
        std::fs::write(w.join("README.md"), "hello from the repo\n").unwrap();
        std::fs::write(w.join(".ouro/pipelines/ci.yml"), ci).unwrap();
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
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ouro"))
        .args(["runner", "--server", &base, "--labels", "remote,linux"])
        .args(["--slots", "2", "--name", "test-runner", "--token"])
        .arg(reg["token"].as_str().unwrap())
        .arg("--work-dir")
        .arg(&runner_dir)
        .args(extra)
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
    let logs: Vec<String> = run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let dir = ouro_build::runs::log_dir(&data_dir, j["id"].as_i64().unwrap(), 1);
            let log = ouro_build::logs::LogReader::open(&dir)
                .and_then(|r| r.read_all())
                .unwrap_or_default();
            String::from_utf8_lossy(&log).into_owned()
        })
        .collect();
    let runners: Value = client
        .get(format!("{base}/api/v1/admin/runners"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    child.kill().await.unwrap();
    srv.stop().await;
    Ran {
        run,
        log: logs[0].clone(),
        logs,
        runner_dir: dir.keep().join("runner"),
        runners,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ouro_runner_runs_a_pushed_pipeline_to_success() {
    for db in backends() {
        // `test` asks for the sandbox without network: the runner offers it (bubblewrap works
        // here) and runs that job, and only that one, inside it.
        let ran = run_on_runner(&db, &[], |runner_dir| {
            let token = runner_dir.join("runner.json");
            format!(
                "name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    runs-on: remote
    steps:
      - run: cat README.md; echo built-remotely
      - run: test -e '{token}' && echo token-visible
  test:
    needs: build
    runs-on: remote
    executor: sandbox
    network: false
    steps:
      - run: test ! -e '{token}' && echo token-hidden
      - run: |
          {interfaces}
",
                token = token.display(),
                interfaces = crate::PRINT_INTERFACES,
            )
        })
        .await;
        assert_eq!(ran.run["status"], "success", "{}", ran.run);
        assert!(
            ran.log.contains("hello from the repo\nbuilt-remotely\n"),
            "{}",
            ran.log
        );
        assert!(ran.log.contains("token-visible\n"), "{}", ran.log);
        let sandboxed = &ran.logs[1];
        assert!(sandboxed.contains("token-hidden\n"), "{sandboxed}");
        assert!(sandboxed.contains("interfaces: lo \n"), "{sandboxed}");
        // The runner is registered (its token kept in the work dir) and listed.
        assert!(ran.runner_dir.join("runner.json").exists());
        let list = &ran.runners;
        assert_eq!(list["runners"][0]["name"], "test-runner", "{list}");
        assert_eq!(list["runners"][0]["labels"], json!(["remote", "linux"]));
        assert_eq!(
            list["runners"][0]["executors"],
            json!(["shell", "sandbox"]),
            "{list}"
        );
        let _ = std::fs::remove_dir_all(ran.runner_dir.parent().unwrap());
    }
}

/// `ouro runner --sandbox`: the job still checks out and runs, but inside bubblewrap: the
/// runner's token file is not visible, the host is read-only, and the runner says `sandbox`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ouro_runner_with_sandbox_hides_its_token_and_the_host_is_read_only() {
    for db in backends() {
        let ran = run_on_runner(&db, &["--sandbox"], |runner_dir| {
            format!(
                "name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    runs-on: remote
    steps:
      - run: cat README.md
      - run: test ! -e '{token}' && echo token-hidden
      - run: if touch /ouro-sandbox-probe 2>/dev/null; then echo host-writable; exit 1; fi; echo host-read-only
      - run: echo scratch > \"$TMPDIR/x\" && echo workspace-writable
",
                token = runner_dir.join("runner.json").display()
            )
        })
        .await;
        assert_eq!(ran.run["status"], "success", "{}\n{}", ran.run, ran.log);
        for line in [
            "hello from the repo\n",
            "token-hidden\n",
            "host-read-only\n",
            "workspace-writable\n",
        ] {
            assert!(ran.log.contains(line), "{line}: {}", ran.log);
        }
        assert!(
            ran.runner_dir.join("runner.json").exists(),
            "the token exists outside"
        );
        let list = &ran.runners;
        assert_eq!(
            list["runners"][0]["executors"],
            json!(["sandbox"]),
            "{list}"
        );
        let _ = std::fs::remove_dir_all(ran.runner_dir.parent().unwrap());
    }
}
