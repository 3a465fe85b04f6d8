//! Section 10 faults with real processes: `ouro serve` killed with SIGKILL mid-run and
//! restarted (the run completes, the killed job is retried, never two attempts at once, nothing
//! committed is lost), and an `ouro runner` killed with SIGKILL mid-job (after its lease expires
//! the job is retried per `retry: when: [infra_failure]` or fails with `runner_lost`; the
//! runner removes its clones and workspaces). No timing assertions: every wait polls with a
//! generous deadline (a lease lasts 30 s).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ouro_store::testing::backends;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ouro");

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

/// Waits until `ok` holds (polling), panicking with `what` after a generous deadline.
async fn until<F: FnMut() -> bool>(what: &str, mut ok: F) {
    let deadline = Instant::now() + Duration::from_secs(150);
    while !ok() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn get(&self, path: &str) -> Option<Value> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let st = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(st.is_success(), "POST {path}: {st} {v}");
        v
    }

    /// Waits for run `n` to finish (the server may be down meanwhile: it is polled again).
    async fn finished(&self, n: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(r) = self
                .get(&format!("/api/v1/projects/demo/pipelines/{n}"))
                .await
                && matches!(
                    r["status"].as_str(),
                    Some("success" | "failure" | "cancelled")
                )
            {
                return r;
            }
            assert!(Instant::now() < deadline, "run #{n} did not finish");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The project's `job.*` events for job `key`, in ledger order: (kind, payload).
    async fn job_events(&self, key: &str) -> Vec<(String, Value)> {
        let body = self
            .get("/api/v1/projects/demo/events?kind=job.*&limit=500")
            .await
            .expect("events");
        let items = body["items"]
            .as_array()
            .or(body["events"].as_array())
            .cloned()
            .unwrap_or_default();
        items
            .into_iter()
            .filter(|e| e["payload"]["job"] == key)
            .map(|e| {
                (
                    e["kind"].as_str().unwrap_or("").to_string(),
                    e["payload"].clone(),
                )
            })
            .collect()
    }

    /// Creates project `demo` with repo `app` holding `ci` as its pipeline; returns the
    /// pushed commit's work tree.
    async fn push_app(&self, dir: &Path, ci: &str) {
        self.post("/api/v1/projects", json!({"slug": "demo", "name": "Demo"}))
            .await;
        let repo = self
            .post("/api/v1/projects/demo/repos", json!({"name": "app"}))
            .await;
        let url = repo["clone_url"].as_str().unwrap().replacen(
            "http://",
            &format!("http://admin:{}@", self.token),
            1,
        );
        let work = dir.join("work");
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        let ci = ci.to_string();
        tokio::task::spawn_blocking(move || {
            git(&work, &["init", "-q", "-b", "main"]);
            std::fs::write(work.join("README.md"), "hello\n").unwrap();
            std::fs::write(work.join(".ouro/pipelines/ci.yml"), ci).unwrap();
            git(&work, &["add", "."]);
            git(&work, &["commit", "-q", "-m", "Start"]);
            git(&work, &["push", "-q", &url, "main"]);
        })
        .await
        .unwrap();
    }
}

fn job<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["key"] == key)
        .unwrap_or_else(|| panic!("no job {key} in {run}"))
}

/// No two attempts of one job ever overlap: every `job.started` follows the previous attempt's
/// end (`job.requeued` or `job.finished`), and the attempts count up by one.
fn assert_serial_attempts(events: &[(String, Value)]) {
    let mut running = false;
    let mut attempt = 0;
    for (kind, payload) in events {
        match kind.as_str() {
            "job.started" => {
                assert!(!running, "two attempts at once: {events:?}");
                running = true;
                attempt += 1;
                assert_eq!(payload["attempt"], attempt, "{events:?}");
            }
            "job.requeued" | "job.finished" => {
                assert!(running, "an end without a start: {events:?}");
                running = false;
            }
            _ => {}
        }
    }
    assert!(!running, "the job did not end: {events:?}");
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// A step that records its attempt; the first attempt announces itself and waits until
/// `release` exists (it never does: the process is killed with its server or runner).
fn waiting_step(marks: &Path, name: &str) -> String {
    let m = marks.display();
    format!(
        r#"      - run: |
          echo attempt >> "{m}/{name}-attempts"
          if [ ! -f "{m}/{name}-first" ]; then
            touch "{m}/{name}-first"
            echo $$ > "{m}/{name}-pid"
            echo first attempt waits
            while [ ! -f "{m}/release" ]; do sleep 0.1; done
          fi
          p=$(cat "{m}/{name}-pid")
          state=$(awk '{{print $3}}' "/proc/$p/stat" 2>/dev/null || true)
          if [ -n "$state" ] && [ "$state" != Z ]; then echo overlap >> "{m}/overlap"; fi
          echo {name}-finished
"#
    )
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// An `ouro serve` process on a fixed port with its data dir and database.
struct Serve {
    data: PathBuf,
    url: String,
    listen: String,
}

impl Serve {
    fn admin(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .arg("admin")
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--database-url", &self.url])
            .env("OURO_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ouro admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn start(&self) -> tokio::process::Child {
        tokio::process::Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--database-url", &self.url, "--listen", &self.listen])
            .env("OURO_RUNNER_SLOTS", "2")
            .env("OURO_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }
}

async fn healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{base} did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_with_sigkill_mid_run_finishes_the_run_after_a_restart() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let marks = dir.path().join("marks");
        std::fs::create_dir_all(&marks).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let srv = Serve {
            data: dir.path().join("data"),
            url: db.fresh_url(dir.path()).await,
            listen: format!("127.0.0.1:{port}"),
        };
        srv.admin(
            &[
                "create-user",
                "--name",
                "admin",
                "--admin",
                "--password-stdin",
            ],
            Some("password-1\n"),
        );
        let token = srv
            .admin(&["create-token", "--user", "admin"], None)
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_string();
        let api = Api {
            client: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
            token,
        };
        let mut server = srv.start();
        healthy(&api.client, &api.base).await;
        let ci = format!(
            "name: CI\non:\n  push:\n    branches: [main]\njobs:\n  slow:\n    retry:\n      max: 1\n      when: [infra_failure]\n    steps:\n{}  after:\n    needs: slow\n    steps:\n      - run: echo after-ran\n",
            waiting_step(&marks, "slow")
        );
        api.push_app(dir.path(), &ci).await;
        until("the first attempt runs", || {
            marks.join("slow-first").exists()
        })
        .await;
        until("the first attempt wrote its pid", || {
            marks.join("slow-pid").exists()
        })
        .await;

        // kill -9 mid-run, then start again on the same data.
        server.start_kill().unwrap();
        server.wait().await.unwrap();
        let mut server = srv.start();
        healthy(&api.client, &api.base).await;

        let run = api.finished(1).await;
        assert_eq!(run["status"], "success", "{run}");
        let slow = job(&run, "slow");
        assert_eq!(slow["status"], "success", "{run}");
        assert_eq!(
            slow["attempt"], 2,
            "retried once after the runner was lost: {run}"
        );
        assert_eq!(job(&run, "after")["status"], "success", "{run}");
        // Two attempts ran the step, never at the same time (the restarted server killed the
        // first attempt's processes before the second started).
        assert_eq!(lines(&marks.join("slow-attempts")), 2);
        assert!(!marks.join("overlap").exists(), "two attempts overlapped");
        let pid = std::fs::read_to_string(marks.join("slow-pid")).unwrap();
        assert!(
            !alive(&pid),
            "the first attempt's process outlived its server"
        );
        let events = api.job_events("slow").await;
        assert_serial_attempts(&events);
        assert!(
            events.iter().any(|(k, p)| k == "job.requeued"
                && p["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("runner_lost"))),
            "{events:?}"
        );
        // Nothing committed was lost or doubled: one run for the push, its jobs' ends recorded.
        let list = api.get("/api/v1/projects/demo/pipelines").await.unwrap();
        assert_eq!(list["runs"].as_array().unwrap().len(), 1, "{list}");
        assert_serial_attempts(&api.job_events("after").await);
        server.start_kill().unwrap();
        server.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_job_gets_its_jobs_retried_or_failed_as_runner_lost_and_cleans_up() {
    for db in backends() {
        let srv = crate::served::served(&db, "admin", true, 0).await;
        let dir = tempfile::tempdir().unwrap();
        let marks = dir.path().join("marks");
        std::fs::create_dir_all(&marks).unwrap();
        let api = Api {
            client: reqwest::Client::new(),
            base: srv.base.clone(),
            token: srv.token.clone(),
        };
        let ci = format!(
            "name: CI\non:\n  push:\n    branches: [main]\njobs:\n  slow:\n    runs-on: remote\n    retry:\n      max: 1\n      when: [infra_failure]\n    steps:\n{}  after:\n    needs: slow\n    runs-on: remote\n    steps:\n      - run: echo after-ran\n  lost:\n    runs-on: remote\n    steps:\n{}  after_lost:\n    needs: lost\n    runs-on: remote\n    steps:\n      - run: echo never\n",
            waiting_step(&marks, "slow"),
            waiting_step(&marks, "lost")
        );
        api.push_app(dir.path(), &ci).await;
        let reg = api.post("/api/v1/admin/runner-tokens", json!({})).await;
        let runner_dir = dir.path().join("runner");
        let runner = |reg: &str| {
            tokio::process::Command::new(BIN)
                .args(["runner", "--server", &srv.base, "--labels", "remote"])
                .args(["--slots", "2", "--name", "r1", "--token", reg])
                .arg("--work-dir")
                .arg(&runner_dir)
                .env("OURO_LOG", "warn")
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        };
        let mut child = runner(reg["token"].as_str().unwrap());
        until("both first attempts run", || {
            marks.join("slow-pid").exists() && marks.join("lost-pid").exists()
        })
        .await;
        // SIGKILL the runner mid-job; a new incarnation (same work dir: registered already)
        // kills what the old one left running.
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        let mut child = runner("unused");

        let run = api.finished(1).await;
        assert_eq!(run["status"], "failure", "{run}");
        assert_eq!(job(&run, "slow")["status"], "success", "{run}");
        assert_eq!(job(&run, "slow")["attempt"], 2, "{run}");
        assert_eq!(job(&run, "after")["status"], "success", "{run}");
        assert_eq!(job(&run, "lost")["status"], "failure", "{run}");
        assert_eq!(job(&run, "lost")["reason"], "runner_lost", "{run}");
        assert_eq!(job(&run, "after_lost")["status"], "skipped", "{run}");
        assert_eq!(lines(&marks.join("slow-attempts")), 2);
        assert_eq!(lines(&marks.join("lost-attempts")), 1);
        assert!(!marks.join("overlap").exists(), "two attempts overlapped");
        for name in ["slow", "lost"] {
            let pid = std::fs::read_to_string(marks.join(format!("{name}-pid"))).unwrap();
            assert!(!alive(&pid), "{name}'s first attempt outlived its runner");
            assert_serial_attempts(&api.job_events(name).await);
        }
        // The runner keeps no clone or workspace of a finished job.
        let empty = |d: PathBuf| std::fs::read_dir(d).map_or(true, |mut rd| rd.next().is_none());
        until("the runner removed its clones and workspaces", || {
            empty(runner_dir.join("clones")) && empty(runner_dir.join("work"))
        })
        .await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        srv.stop().await;
    }
}
