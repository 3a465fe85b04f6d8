//! Runners: the in-process runner executes pushed pipelines end to end (logs, statuses, needs,
//! cancel, retry), the reaper handles lost runners, and the runner protocol over HTTP
//! (registration, labels, stale attempts, drain).

use std::time::{Duration, Instant};

use crate::code_hosting::app_checkout;
use crate::support::*;
use ouro_build::runner::server as rs;
use ouro_build::runs;
use reqwest::Method;
use serde_json::Value;

const RUNS: &str = "/api/v1/projects/demo/pipelines";
const REPO: &str = "/api/v1/projects/demo/repos/app";

fn log_of(s: &TestServer, job_id: i64, attempt: i64) -> Vec<u8> {
    let dir = runs::log_dir(&s.state.settings.data_dir, job_id, attempt);
    ouro_build::logs::LogReader::open(&dir)
        .unwrap_or_else(|e| panic!("log {}: {e}", dir.display()))
        .read_all()
        .unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A file of the data dir the server itself reads: sandboxed steps must not see it.
fn data_dir_file(s: &TestServer) -> std::path::PathBuf {
    std::fs::read_dir(&s.state.settings.data_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("a file in the data dir")
}

/// Runner `id` as `GET /api/v1/admin/runners` lists it.
async fn listed_runner(s: &TestServer, id: &str) -> Value {
    let (st, list) = s.admin(Method::GET, "/api/v1/admin/runners", None).await;
    assert_eq!(st, 200, "{list}");
    list["runners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("runner {id} is not listed: {list}"))
}

/// A step that prints the network interfaces of its own namespace (`/proc/net/dev`).
const PRINT_INTERFACES: &str = r#"echo "interfaces: $(awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }' /proc/net/dev | tr '\n' ' ')""#;

const TWO_JOBS: &str = r#"name: CI
on:
  push:
    branches: [main]
jobs:
  a:
    steps:
      - name: say
        run: printf 'marker-\303\251-\001-end\n'
  b:
    needs: a
    steps:
      - run: echo b ran
"#;

#[tokio::test]
async fn the_in_process_runner_runs_a_pushed_pipeline_to_success_with_log_and_status() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        let (_git, _work, head) = push_pipeline(&s, TWO_JOBS).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "success", "{run}");
        let jobs = run["jobs"].as_array().unwrap();
        assert!(jobs.iter().all(|j| j["status"] == "success"), "{run}");
        assert!(jobs.iter().all(|j| j["attempt"] == 1), "{run}");
        assert_eq!(jobs[0]["exit_code"], 0, "{run}");
        // The marker, byte-exact (UTF-8 and a control byte), in job a's log.
        let log = log_of(&s, jobs[0]["id"].as_i64().unwrap(), 1);
        assert!(
            contains(&log, b"marker-\xc3\xa9-\x01-end\n"),
            "{:?}",
            String::from_utf8_lossy(&log)
        );
        let log_b = log_of(&s, jobs[1]["id"].as_i64().unwrap(), 1);
        assert!(contains(&log_b, b"b ran\n"));
        // A finished log has its step sections.
        let reader = ouro_build::logs::LogReader::open(&runs::log_dir(
            &s.state.settings.data_dir,
            jobs[0]["id"].as_i64().unwrap(),
            1,
        ))
        .unwrap();
        let sections = reader.sections().unwrap();
        assert_eq!(sections.len(), 1, "{sections:?}");
        assert_eq!(sections[0].name, "say");
        assert_eq!(sections[0].exit_code, Some(0));
        assert!(reader.meta().unwrap().is_some(), "the log is finished");
        let sts = eventually(&s, &format!("{REPO}/commits/{head}/statuses"), |b| {
            b[0]["state"] == "success"
        })
        .await;
        assert_eq!(sts[0]["name"], "ouro/CI", "{sts}");
        // The in-process runner is listed.
        let runners = rs::list_runners(&s.state.store).await.unwrap();
        assert_eq!(runners.len(), 1);
        assert_eq!(runners[0].id, "local");
        assert!(runners[0].labels.contains(&"local".to_string()));
        s.stop().await;
    }
}

#[tokio::test]
async fn a_failing_job_fails_the_run_skips_its_dependents_and_posts_failure() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        let pipeline = "on:\n  push: {}\njobs:\n  a:\n    steps:\n      - run: echo before; exit 3\n  b:\n    needs: a\n    steps:\n      - run: echo never\n";
        let (_git, _work, head) = push_pipeline(&s, pipeline).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "failure", "{run}");
        assert_eq!(run["jobs"][0]["status"], "failure", "{run}");
        assert_eq!(run["jobs"][0]["exit_code"], 3, "{run}");
        assert_eq!(run["jobs"][0]["reason"], "exit code 3", "{run}");
        assert_eq!(run["jobs"][1]["status"], "skipped", "{run}");
        let log = log_of(&s, run["jobs"][0]["id"].as_i64().unwrap(), 1);
        assert!(contains(&log, b"before\n"));
        eventually(&s, &format!("{REPO}/commits/{head}/statuses"), |b| {
            b[0]["state"] == "failure"
        })
        .await;
        s.stop().await;
    }
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it_and_kills_its_processes() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        let pipeline = "on:\n  push: {}\njobs:\n  slow:\n    steps:\n      - run: echo pid=$$; exec sleep 60\n";
        push_pipeline(&s, pipeline).await;
        let run = eventually(&s, &format!("{RUNS}/1"), |b| {
            b["jobs"][0]["status"] == "running"
        })
        .await;
        let job_id = run["jobs"][0]["id"].as_i64().unwrap();
        // The pid, from the live log.
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid: i32 = loop {
            let dir = runs::log_dir(&s.state.settings.data_dir, job_id, 1);
            if let Ok(r) = ouro_build::logs::LogReader::open(&dir) {
                let text = String::from_utf8_lossy(&r.read_all().unwrap()).to_string();
                if let Some(p) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("pid=").map(|p| p.trim().to_string()))
                {
                    break p.parse().unwrap();
                }
            }
            assert!(Instant::now() < deadline, "no pid in the log");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(ouro_build::exec::limits::alive(pid));
        let (st, body) = s
            .admin(Method::POST, &format!("{RUNS}/1/cancel"), None)
            .await;
        assert_eq!(st, 200, "{body}");
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "cancelled", "{run}");
        // The runner learns it from its next heartbeat and kills the job's processes.
        let deadline = Instant::now() + Duration::from_secs(30);
        while ouro_build::exec::limits::alive(pid) {
            assert!(
                Instant::now() < deadline,
                "the job's process {pid} survived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Its log is finished.
        let dir = runs::log_dir(&s.state.settings.data_dir, job_id, 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.join("meta.json").exists() {
            assert!(Instant::now() < deadline, "the log was not finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn a_script_failure_is_retried_within_retry_max() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        let flag = s.dir.path().join("once");
        let pipeline = format!(
            "on:\n  push: {{}}\njobs:\n  flaky:\n    retry:\n      max: 2\n      when: [script_failure]\n    steps:\n      - run: if [ -f {f} ]; then echo second; else touch {f}; echo first; exit 1; fi\n",
            f = flag.display()
        );
        push_pipeline(&s, &pipeline).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "success", "{run}");
        assert_eq!(run["jobs"][0]["attempt"], 2, "{run}");
        let id = run["jobs"][0]["id"].as_i64().unwrap();
        assert!(contains(&log_of(&s, id, 1), b"first\n"));
        assert!(contains(&log_of(&s, id, 2), b"second\n"));
        s.stop().await;
    }
}

/// Lease expiry at the domain level: without a retry policy the job fails with `runner_lost`;
/// with `retry.when: [infra_failure]` it is queued again and claimed as a new attempt; the old
/// attempt's writes are refused.
#[tokio::test]
async fn the_reaper_fails_or_requeues_jobs_whose_runner_vanished() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let pipeline = "on:\n  push: {}\njobs:\n  plain:\n    steps:\n      - run: 'true'\n  retried:\n    retry:\n      max: 1\n      when: [infra_failure]\n    steps:\n      - run: 'true'\n";
        push_pipeline(&s, pipeline).await;
        eventually(&s, RUNS, |b| {
            b["runs"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        let store = &s.state.store;
        let data = &s.state.settings.data_dir;
        // Two claims with leases that already expired: the runners "vanished".
        let c1 = runs::claim_next(store, "r1", -1000).await.unwrap().unwrap();
        let c2 = runs::claim_next(store, "r2", -1000).await.unwrap().unwrap();
        assert_eq!(
            (c1.job.key.as_str(), c2.job.key.as_str()),
            ("plain", "retried")
        );
        // An expired lease is not claimable directly: only the reaper handles it.
        assert!(
            runs::claim_next(store, "r3", 60_000)
                .await
                .unwrap()
                .is_none()
        );
        // The old attempt can still write its log before the reaper runs.
        rs::append_log(store, data, c1.job.id, &c1.token, 0, b"hello\n".to_vec())
            .await
            .unwrap();
        assert_eq!(rs::reap(store, data).await.unwrap(), 2);
        let (_, run) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(run["jobs"][0]["status"], "failure", "{run}");
        assert_eq!(run["jobs"][0]["reason"], "runner_lost", "{run}");
        assert_eq!(run["jobs"][1]["status"], "queued", "{run}");
        assert_eq!(run["status"], "running", "{run}");
        // The stale attempts are refused everywhere.
        for (id, token) in [(c1.job.id, &c1.token), (c2.job.id, &c2.token)] {
            let e = runs::heartbeat(store, id, token, 60_000).await.unwrap_err();
            assert_eq!(
                ouro_core::OuroError::from(e).code.as_str(),
                "build.stale_attempt"
            );
            let e = rs::append_log(store, data, id, token, 0, b"x".to_vec())
                .await
                .unwrap_err();
            assert_eq!(
                ouro_core::OuroError::from(e).code.as_str(),
                "build.stale_attempt"
            );
        }
        // The reaped attempt's log was finished.
        assert!(runs::log_dir(data, c1.job.id, 1).join("meta.json").exists());
        // The retried job is claimed again: attempt 2, a new token.
        let c3 = runs::claim_next(store, "r1", 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c3.job.key, "retried");
        assert_eq!(c3.job.attempt, 2);
        assert_ne!(c3.token, c2.token);
        // A second loss exhausts the retry policy.
        let result = ouro_build::runner::JobResult {
            status: "success".into(),
            exit_code: Some(0),
            reason: None,
            infra_failure: false,
            started_at_ms: 0,
            finished_at_ms: 0,
        };
        rs::finish(store, data, c3.job.id, &c3.token, &result)
            .await
            .unwrap();
        let (_, run) = s.admin(Method::GET, &format!("{RUNS}/1"), None).await;
        assert_eq!(run["jobs"][1]["status"], "success", "{run}");
        assert_eq!(run["status"], "failure", "{run}");
        s.stop().await;
    }
}

/// A runner call: `path` with the runner token and (for job writes) the attempt token.
async fn runner_call(
    s: &TestServer,
    method: Method,
    path: &str,
    runner: &str,
    attempt: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut r = s
        .client
        .request(method, s.url(path))
        .header("authorization", format!("Bearer {runner}"));
    if let Some(a) = attempt {
        r = r.header("ouro-attempt-token", a);
    }
    if let Some(b) = body {
        r = r.body(b);
    }
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    let text = r.text().await.unwrap();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn register(s: &TestServer, name: &str, labels: &[&str]) -> (String, String) {
    let (st, t) = s
        .admin(Method::POST, "/api/v1/admin/runner-tokens", None)
        .await;
    assert_eq!(st, 201, "{t}");
    let reg = t["token"].as_str().unwrap().to_string();
    let body = serde_json::json!({"token": reg, "name": name, "labels": labels,
                                  "executors": ["shell"], "slots": 2});
    let r = s
        .client
        .post(s.url("/api/v1/runners/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (st, out) = parse(r).await;
    assert_eq!(st, 201, "{out}");
    // A registration token is used up.
    let r = s
        .client
        .post(s.url("/api/v1/runners/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (st, err) = parse(r).await;
    assert_eq!(st, 401, "{err}");
    assert_eq!(error_code(&err), "build.runner_token_invalid");
    (
        out["id"].as_str().unwrap().to_string(),
        out["token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn remote_runners_register_claim_by_labels_write_logs_and_drain_over_http() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let pipeline = "on:\n  push: {}\njobs:\n  lin:\n    runs-on: linux\n    steps:\n      - run: 'true'\n  any:\n    steps:\n      - run: 'true'\n";
        let (git, work, _) = push_pipeline(&s, pipeline).await;
        eventually(&s, RUNS, |b| {
            b["runs"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        let (r1, t1) = register(&s, "plain", &[]).await;
        let (_r2, t2) = register(&s, "linux box", &["linux"]).await;
        const CLAIM: &str = "/api/v1/runner/claim?wait=0";

        // No runner token: 401; a user's token is not a runner token.
        let (st, _) = runner_call(&s, Method::POST, CLAIM, "nope", None, None).await;
        assert_eq!(st, 401);
        let admin = s.admin_token.clone();
        let (st, _) = runner_call(&s, Method::POST, CLAIM, &admin, None, None).await;
        assert_eq!(st, 401);

        // `lin` needs the label `linux`: the plain runner gets `any` only.
        let (st, any) = runner_call(&s, Method::POST, CLAIM, &t1, None, None).await;
        assert_eq!(st, 200, "{any}");
        assert_eq!(any["job_key"], "any");
        assert_eq!(any["attempt"], 1);
        assert_eq!(any["checkout"]["kind"], "git");
        assert_eq!(any["checkout"]["path"], "/git/demo/app.git");
        assert!(
            any["pipeline_file"]
                .as_str()
                .unwrap()
                .contains("runs-on: linux")
        );
        let (st, _) = runner_call(&s, Method::POST, CLAIM, &t1, None, None).await;
        assert_eq!(st, 204);
        let (st, lin) = runner_call(&s, Method::POST, CLAIM, &t2, None, None).await;
        assert_eq!(st, 200, "{lin}");
        assert_eq!(lin["job_key"], "lin");
        let (id, att) = (
            lin["job_id"].as_i64().unwrap(),
            lin["token"].as_str().unwrap().to_string(),
        );
        let job = |what: &str| format!("/api/v1/runner/jobs/{id}/{what}");

        // Heartbeat; a wrong attempt token is stale.
        let (st, hb) =
            runner_call(&s, Method::POST, &job("heartbeat"), &t2, Some(&att), None).await;
        assert_eq!((st, hb["cancel"].as_bool()), (200, Some(false)), "{hb}");
        let (st, err) = runner_call(
            &s,
            Method::POST,
            &job("heartbeat"),
            &t2,
            Some("att_nope"),
            None,
        )
        .await;
        assert_eq!(st, 409);
        assert_eq!(error_code(&err), "build.stale_attempt");

        // Log chunks by offset: idempotent retries, gaps refused.
        let put = |off: u64, data: &'static [u8]| {
            let path = format!("{}?offset={off}", job("log"));
            let (t2, att) = (t2.clone(), att.clone());
            let s = &s;
            async move { runner_call(s, Method::PUT, &path, &t2, Some(&att), Some(data.to_vec())).await }
        };
        let mark = |m: Value| {
            let (t2, att) = (t2.clone(), att.clone());
            let s = &s;
            let path = job("sections");
            async move {
                let r = s
                    .client
                    .post(s.url(&path))
                    .header("authorization", format!("Bearer {t2}"))
                    .header("ouro-attempt-token", att)
                    .json(&m)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            }
        };
        assert_eq!(
            mark(serde_json::json!({"step": 0, "kind": "start", "name": "s1"})).await,
            204
        );
        assert_eq!(put(0, b"hello ").await.0, 204);
        assert_eq!(put(0, b"hello ").await.0, 204);
        let (st, err) = put(100, b"gap").await;
        assert_eq!(st, 409, "{err}");
        assert_eq!(error_code(&err), "build.log_chunk_rejected");
        let (st, err) = put(0, b"HELLO ").await;
        assert_eq!(st, 409, "{err}");
        assert_eq!(put(6, b"world\n").await.0, 204);
        assert_eq!(
            mark(serde_json::json!({"step": 0, "kind": "end", "exit_code": 0})).await,
            204
        );

        // The admin sees both runners and their current jobs.
        let (st, list) = s.admin(Method::GET, "/api/v1/admin/runners", None).await;
        assert_eq!(st, 200, "{list}");
        let runners = list["runners"].as_array().unwrap();
        assert_eq!(runners.len(), 2, "{list}");
        let plain = runners.iter().find(|r| r["id"] == r1.as_str()).unwrap();
        assert_eq!(plain["jobs"][0]["job"], "any", "{list}");
        assert!(plain["last_contact_at"].is_string(), "{list}");

        // Finish: the log is complete and byte-exact; a second finish is stale.
        let result = serde_json::json!({"status": "success", "exit_code": 0});
        let r = s
            .client
            .post(s.url(&job("finish")))
            .header("authorization", format!("Bearer {t2}"))
            .header("ouro-attempt-token", &att)
            .json(&result)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        let r = s
            .client
            .post(s.url(&job("finish")))
            .header("authorization", format!("Bearer {t2}"))
            .header("ouro-attempt-token", &att)
            .json(&result)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 409);
        assert_eq!(log_of(&s, id, 1), b"hello world\n");
        let dir = runs::log_dir(&s.state.settings.data_dir, id, 1);
        let sections = ouro_build::logs::LogReader::open(&dir)
            .unwrap()
            .sections()
            .unwrap();
        assert_eq!(sections[0].name, "s1");

        // Drain the plain runner: it finishes `any` but claims nothing new.
        let (st, d) = s
            .admin(
                Method::POST,
                &format!("/api/v1/admin/runners/{r1}/drain"),
                Some(serde_json::json!({"draining": true})),
            )
            .await;
        assert_eq!(st, 200, "{d}");
        assert_eq!(d["draining"], true);
        let any_path = format!("/api/v1/runner/jobs/{}/finish", any["job_id"]);
        let r = s
            .client
            .post(s.url(&any_path))
            .header("authorization", format!("Bearer {t1}"))
            .header("ouro-attempt-token", any["token"].as_str().unwrap())
            .json(&result)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "success", "{run}");
        git.commit(&work, "more.txt", "x\n", "More").await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        eventually(&s, &format!("{RUNS}/2"), |b| b["status"] == "queued").await;
        let (st, _) = runner_call(&s, Method::POST, CLAIM, &t1, None, None).await;
        assert_eq!(st, 204, "a draining runner claims nothing");
        let (st, next) = runner_call(&s, Method::POST, CLAIM, &t2, None, None).await;
        assert_eq!(st, 200, "{next}");
        assert_eq!(next["run_number"], 2);
        s.stop().await;
    }
}

#[tokio::test]
async fn the_admin_runners_page_lists_runners_drains_and_creates_tokens() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        // The in-process runner records itself at start.
        let deadline = Instant::now() + Duration::from_secs(30);
        let page = loop {
            let (st, page) = s.admin_page("/admin/runners").await;
            assert_eq!(st, 200, "{page}");
            if page.contains("data-runner=\"local\"") {
                break page;
            }
            assert!(Instant::now() < deadline, "{page}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(page.contains("in-process"), "{page}");
        assert!(page.contains("Drain in-process"), "{page}");
        let (st, loc, _) = s
            .admin_form(
                "/admin/runners/drain",
                form_body(&[("id", "local"), ("draining", "true")]),
            )
            .await;
        assert_eq!((st, loc.as_str()), (303, "/admin/runners"));
        let runners = rs::list_runners(&s.state.store).await.unwrap();
        assert!(runners[0].draining);
        let (_, page) = s.admin_page("/admin/runners").await;
        assert!(page.contains("Resume in-process"), "{page}");
        let (st, _, page) = s.admin_form("/admin/runners/tokens", String::new()).await;
        assert_eq!(st, 200, "{page}");
        assert!(page.contains("ourreg_"), "{page}");
        s.stop().await;
    }
}

const FILES_AND_SECRETS: &str = r#"name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    cache:
      key: deps-${{ hashFiles('deps.txt') }}
      paths: [deps]
      restore-keys: [deps-]
    artifacts:
      paths: [out/]
    steps:
      - run: |
          echo "greeting=$GREETING"
          echo "token=${{ secrets.DEPLOY_TOKEN }}"
          echo "var=${{ vars.GREETING }}"
          if [ -d deps ]; then echo "deps were restored"; fi
          mkdir -p out deps && echo built-by-build > out/app.txt && echo dep > deps/lib
  test:
    needs: build
    steps:
      - run: cat out/app.txt
"#;

/// The in-process runner gives jobs the project's variables and secrets (masked in the log),
/// uploads artifacts, hands them to the jobs that need them, and saves and restores caches.
#[tokio::test]
async fn jobs_get_variables_secrets_artifacts_and_caches_from_the_in_process_runner() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        s.demo_project().await;
        for (kind, name, value) in [
            ("variables", "GREETING", "hello-from-ouro"),
            ("secrets", "DEPLOY_TOKEN", "s3cr3t-deploy-value"),
        ] {
            let (st, body) = s
                .admin(
                    Method::PUT,
                    &format!("/api/v1/projects/demo/{kind}/{name}"),
                    Some(serde_json::json!({ "value": value })),
                )
                .await;
            assert!(st == 200 || st == 201, "{st} {body}");
        }
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        git.commit(&work, ".ouro/pipelines/ci.yml", FILES_AND_SECRETS, "Add CI")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run = run_finished(&s, 1).await;
        assert_eq!(run["status"], "success", "{run}");
        let jobs = run["jobs"].as_array().unwrap();
        let log = log_of(&s, jobs[0]["id"].as_i64().unwrap(), 1);
        let text = String::from_utf8_lossy(&log);
        assert!(text.contains("greeting=hello-from-ouro"), "{text}");
        assert!(text.contains("var=hello-from-ouro"), "{text}");
        assert!(text.contains("token=***"), "the secret is masked: {text}");
        assert!(!text.contains("s3cr3t-deploy-value"), "{text}");
        assert!(text.contains("cache miss"), "{text}");
        assert!(!text.contains("deps were restored"), "{text}");
        // The artifact is stored and the job that needs it got it.
        let (st, list) = s
            .admin(Method::GET, &format!("{RUNS}/1/artifacts"), None)
            .await;
        assert_eq!(st, 200, "{list}");
        assert_eq!(list["artifacts"][0]["path"], "out/app.txt", "{list}");
        let log_test = log_of(&s, jobs[1]["id"].as_i64().unwrap(), 1);
        assert!(
            contains(&log_test, b"built-by-build\n"),
            "{}",
            String::from_utf8_lossy(&log_test)
        );
        // A second push restores the cache saved by the first run.
        git.commit(&work, "README", "again\n", "Again").await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run = run_finished(&s, 2).await;
        assert_eq!(run["status"], "success", "{run}");
        let log = log_of(&s, run["jobs"][0]["id"].as_i64().unwrap(), 1);
        let text = String::from_utf8_lossy(&log);
        assert!(text.contains("cache hit"), "{text}");
        assert!(text.contains("deps were restored"), "{text}");
        s.stop().await;
    }
}

/// A job's attempt token is a read-only git credential for its own repository, while the
/// attempt is current: another repository, a push, or a finished attempt are refused.
#[tokio::test]
async fn the_job_token_reads_only_its_own_repository_while_the_attempt_runs() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (git, work, _) = push_pipeline(
            &s,
            "on:\n  push: {}\njobs:\n  a:\n    steps:\n      - run: 'true'\n",
        )
        .await;
        eventually(&s, RUNS, |b| {
            b["runs"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        let (st, other) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/repos",
                Some(serde_json::json!({"name": "other"})),
            )
            .await;
        assert_eq!(st, 201, "{other}");
        let claim = runs::claim_next(&s.state.store, "r1", 60_000)
            .await
            .unwrap()
            .expect("the job is claimable");
        let (_, app) = s.admin(Method::GET, REPO, None).await;
        let url = |clone: &Value| {
            crate::code_hosting::with_credentials(
                clone["clone_url"].as_str().unwrap(),
                "ouro-job",
                &claim.token,
            )
        };
        let (ok, out) = git.try_run(&work, &["ls-remote", &url(&app)]).await;
        assert!(ok, "its own repository is readable: {out}");
        assert!(out.contains("refs/heads/main"), "{out}");
        let (ok, out) = git.try_run(&work, &["ls-remote", &url(&other)]).await;
        assert!(!ok, "another repository is refused: {out}");
        let (ok, out) = git
            .try_run(
                &work,
                &["push", "-q", &url(&app), "HEAD:refs/heads/from-job"],
            )
            .await;
        assert!(!ok, "a push is refused: {out}");
        runs::finish_job(
            &s.state.store,
            claim.job.id,
            &claim.token,
            "success",
            Some(0),
        )
        .await
        .unwrap();
        let (ok, out) = git.try_run(&work, &["ls-remote", &url(&app)]).await;
        assert!(!ok, "a finished attempt's token is refused: {out}");
        s.stop().await;
    }
}

/// `[runner] sandbox = true`: the in-process runner runs each step in bubblewrap: the job checks
/// out and runs, the data dir (database, keys) is hidden, the host is read-only, and the runner
/// is listed with the `sandbox` executor.
#[tokio::test]
async fn the_in_process_runner_with_sandbox_hides_the_data_dir() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st: &mut ouro_server::Settings| {
                    st.runner_slots = 1;
                    st.runner_sandbox = true;
                },
                ..Options::default()
            },
        )
        .await;
        s.demo_project().await;
        // A file of the data dir the server itself reads.
        let secret = data_dir_file(&s);
        let pipeline = format!(
            "name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    steps:
      - run: cat README.md
      - run: test ! -e '{}' && echo data-dir-hidden
      - run: if touch /ouro-sandbox-probe 2>/dev/null; then echo host-writable; exit 1; fi; echo host-read-only
",
            secret.display()
        );
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        git.commit(&work, "README.md", "hello from the repo\n", "Readme")
            .await;
        git.commit(&work, ".ouro/pipelines/ci.yml", &pipeline, "CI")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run = run_finished(&s, 1).await;
        let job = run["jobs"][0]["id"].as_i64().unwrap();
        let r = s
            .req(
                Method::GET,
                &format!("{RUNS}/1/jobs/{job}/log"),
                Some(&s.admin_token),
            )
            .send()
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned();
        assert_eq!(run["status"], "success", "{run}\n{log}");
        for line in ["hello from the repo", "data-dir-hidden", "host-read-only"] {
            assert!(log.contains(line), "{line}: {log}");
        }
        assert!(secret.exists(), "the file is there outside the sandbox");
        let local = listed_runner(&s, "local").await;
        assert_eq!(
            local["executors"],
            serde_json::json!(["sandbox"]),
            "{local}"
        );
        s.stop().await;
    }
}

/// `executor:` routes jobs: a runner that offers only `shell` never gets a job that names
/// `sandbox`, one that offers it does; a runner says what it offers now with each claim (it may
/// have restarted with the sandbox), and an unknown executor is refused.
#[tokio::test]
async fn jobs_naming_an_executor_go_only_to_runners_that_offer_it() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let pipeline = "on:\n  push: {}\njobs:\n  boxed:\n    executor: sandbox\n    network: false\n    steps:\n      - run: 'true'\n  plain:\n    executor: shell\n    steps:\n      - run: 'true'\n";
        push_pipeline(&s, pipeline).await;
        let run = eventually(&s, &format!("{RUNS}/1"), |b| {
            b["jobs"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
        assert_eq!(job_of(&run, "boxed")["executor"], "sandbox", "{run}");
        assert_eq!(job_of(&run, "plain")["executor"], "shell", "{run}");
        let (id, token) = register(&s, "shell only", &[]).await;
        const CLAIM: &str = "/api/v1/runner/claim?wait=0";

        let (st, plain) = runner_call(&s, Method::POST, CLAIM, &token, None, None).await;
        assert_eq!(st, 200, "{plain}");
        assert_eq!(plain["job_key"], "plain");
        // `boxed` is queued, but not for this runner.
        let (st, none) = runner_call(&s, Method::POST, CLAIM, &token, None, None).await;
        assert_eq!(st, 204, "{none}");
        let (st, err) = runner_call(
            &s,
            Method::POST,
            &format!("{CLAIM}&executors=shell,docker"),
            &token,
            None,
            None,
        )
        .await;
        assert_eq!(st, 422, "{err}");
        assert_eq!(error_code(&err), "request.validation_failed", "{err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains("docker"),
            "{err}"
        );

        // Restarted with bubblewrap: it now offers both, gets `boxed`, and is listed so.
        let (st, boxed) = runner_call(
            &s,
            Method::POST,
            &format!("{CLAIM}&executors=shell,sandbox"),
            &token,
            None,
            None,
        )
        .await;
        assert_eq!(st, 200, "{boxed}");
        assert_eq!(boxed["job_key"], "boxed");
        let me = listed_runner(&s, &id).await;
        assert_eq!(
            me["executors"],
            serde_json::json!(["shell", "sandbox"]),
            "{me}"
        );
        s.stop().await;
    }
}

/// The in-process runner offers both executors where bubblewrap works: a job with
/// `executor: sandbox` and `network: false` runs in the sandbox (the data dir hidden, only the
/// loopback interface), while a job without runs as plain processes beside it.
#[tokio::test]
async fn the_in_process_runner_sandboxes_the_jobs_that_ask_for_it() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st: &mut ouro_server::Settings| st.runner_slots = 2,
                ..Options::default()
            },
        )
        .await;
        s.demo_project().await;
        let secret = data_dir_file(&s);
        let pipeline = format!(
            "on:
  push:
    branches: [main]
jobs:
  boxed:
    executor: sandbox
    network: false
    steps:
      - run: test ! -e '{secret}' && echo data-dir-hidden
      - run: |
          {PRINT_INTERFACES}
  plain:
    steps:
      - run: test -e '{secret}' && echo data-dir-visible
",
            secret = secret.display()
        );
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        git.commit(&work, ".ouro/pipelines/ci.yml", &pipeline, "CI")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run = run_finished(&s, 1).await;
        let log = |key: &str| {
            let id = job_of(&run, key)["id"].as_i64().unwrap();
            String::from_utf8_lossy(&log_of(&s, id, 1)).into_owned()
        };
        let (boxed, plain) = (log("boxed"), log("plain"));
        let boxed_id = &job_of(&run, "boxed")["id"];
        let (st, page) = s
            .admin_page(&format!("/projects/demo/pipelines/1/jobs/{boxed_id}"))
            .await;
        assert_eq!(st, 200, "{page}");
        assert!(
            page.contains(
                r#"<span id="job-requires">for a runner with the sandbox executor</span>"#
            ),
            "{page}"
        );
        assert_eq!(run["status"], "success", "{run}\n{boxed}\n{plain}");
        assert!(boxed.contains("data-dir-hidden\n"), "{boxed}");
        assert!(boxed.contains("interfaces: lo \n"), "{boxed}");
        assert!(plain.contains("data-dir-visible\n"), "{plain}");
        let local = listed_runner(&s, "local").await;
        assert_eq!(
            local["executors"],
            serde_json::json!(["shell", "sandbox"]),
            "{local}"
        );
        s.stop().await;
    }
}
