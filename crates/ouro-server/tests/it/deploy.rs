//! Deploy end to end on the local target: a real small HTTP service (python3) in signed release
//! bundles, deployed blue-green behind the built-in proxy through the API, rolled back, under a
//! steady keep-alive load with zero failed requests; a healthy canary goes live under load with
//! zero failed requests and one whose new version fails its error-rate check rolls back by
//! itself; a killed replica; a restart of Ouro; an approved promotion deployed without a call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ouro_release::{bundle, signing};
use ouro_store::q;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::code_hosting::app_checkout;
use crate::support::{TestServer, backends, error_code};

/// The service: answers `/` with its version (or 500 when `FAIL` is in its source), `/healthz`
/// with 200; HTTP/1.1 keep-alive.
pub(crate) fn app(version: &str, fail: bool) -> String {
    format!(
        r#"import os, http.server, socketserver
VERSION = "{version}"
FAIL = {fail}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without TCP_NODELAY the second waits for the
    # proxy's delayed ACK (about 40 ms a request).
    disable_nagle_algorithm = True
    def do_GET(self):
        code = 200
        body = VERSION.encode()
        if self.path != "/healthz" and FAIL:
            code = 500
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#,
        fail = if fail { "True" } else { "False" }
    )
}

pub(crate) const SERVICES: &str = r#"services:
  web:
    run: exec python3 app.py
    replicas: 2
    health:
      readiness: {http: /healthz, interval: 200ms, timeout: 1s, failure: 1}
    route:
      staging: {listen: "127.0.0.1:0"}
      production: {listen: "127.0.0.1:0"}
    strategy: {kind: blue-green, keep-warm: 5m}
    drain: {timeout: 5s, upgrade-grace: 1s}
"#;

const CANARY: &str = r#"services:
  web:
    run: exec python3 app.py
    replicas: 1
    health:
      readiness: {http: /healthz, interval: 200ms, timeout: 1s, failure: 1}
    route:
      staging: {listen: "127.0.0.1:0"}
    strategy:
      kind: canary
      steps: [{weight: 50, pause: 1500ms}, 100]
      sticky: {header: x-client}
      analysis: {max-error-rate: 5%, min-requests: 5}
      keep-warm: 5m
"#;

/// A published release `version` of repo `app` at `sha` whose bundle holds `app.py`.
pub(crate) async fn release(
    s: &TestServer,
    project_id: i64,
    version: &str,
    sha: &str,
    source: &str,
) -> i64 {
    let mut tx = s.state.store.begin().await.unwrap();
    let repo = q("SELECT id FROM code_repos WHERE name = 'app'")
        .fetch_one(&mut tx)
        .await
        .unwrap()
        .i64("id")
        .unwrap();
    let id = q(
        "INSERT INTO release_releases (project_id, repo_id, version, tag, sha, state, notes, \
         created_at, published_by, published_at) VALUES ($1, $2, $3, $4, $5, 'published', '', 1, \
         (SELECT id FROM users WHERE name = 'admin'), 1) RETURNING id",
    )
    .bind(project_id)
    .bind(repo)
    .bind(version)
    .bind(format!("v{version}"))
    .bind(sha)
    .fetch_one(&mut tx)
    .await
    .unwrap()
    .i64("id")
    .unwrap();
    s.state.blobs.put(&mut source.as_bytes(), None).unwrap();
    q("INSERT INTO release_artifacts (release_id, path, sha256, size) VALUES ($1, 'app.py', $2, $3)")
        .bind(id)
        .bind(hex::encode(Sha256::digest(source.as_bytes())))
        .bind(source.len() as i64)
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let key = signing::load_or_create(&s.state.settings.data_dir).unwrap();
    bundle::create_for_release(&s.state.store, s.state.blobs.clone(), &key, id)
        .await
        .unwrap();
    id
}

/// Waits until deployment `id` is no longer running and returns it.
pub(crate) async fn finished(s: &TestServer, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, d) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/deployments/{id}"),
                None,
            )
            .await;
        assert_eq!(st, 200, "{d}");
        if d["state"] != "running" {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "deployment {id} still running: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn deploy(s: &TestServer, env: &str, version: &str) -> Value {
    let (st, d) = s
        .admin(
            Method::POST,
            &format!("/api/v1/projects/demo/environments/{env}/deployments"),
            Some(json!({"version": version})),
        )
        .await;
    assert_eq!(st, 202, "{d}");
    assert_eq!(d["state"], "running");
    finished(s, d["id"].as_i64().unwrap()).await
}

pub(crate) async fn environment(s: &TestServer, env: &str) -> Value {
    let (st, v) = s
        .admin(
            Method::GET,
            &format!("/api/v1/projects/demo/environments/{env}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Stops every version the test started: supervised replicas outlive the server by design.
pub(crate) struct Cleanup(
    pub(crate) ouro_server::AppState,
    pub(crate) Vec<(String, String)>,
);

impl Cleanup {
    pub(crate) async fn run(mut self) {
        use ouro_deploy::target::Target;
        for (env, version) in std::mem::take(&mut self.1) {
            let _ = self.0.deploy_target.stop(&env, "web", &version).await;
        }
    }
}

/// A test that panicked before `run`: kill the replicas' process groups (each replica leads
/// its own session), so no service outlives the test.
impl Drop for Cleanup {
    fn drop(&mut self) {
        use ouro_deploy::target::Target;
        let envs: std::collections::BTreeSet<&String> = self.1.iter().map(|(e, _)| e).collect();
        for env in envs {
            for r in self.0.deploy_target.status(env, "web") {
                if let Some(pid) = r.pid {
                    // SAFETY: kill(2) on process groups this test's server started.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
            }
        }
    }
}

/// A keep-alive client that sends requests through the proxy until stopped; counts failures.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub(crate) fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (st, okc, fc) = (stop.clone(), ok.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(4)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            while !st.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.text().await;
                        okc.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => fc.lock().unwrap().push(format!("status {}", r.status())),
                    Err(e) => fc.lock().unwrap().push(format!("{e:?}")),
                }
            }
        });
        Load {
            stop,
            ok,
            failed,
            task,
        }
    }

    pub(crate) async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.lock().unwrap().clone(),
        )
    }
}

pub(crate) async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn blue_green_deploys_and_rolls_back_with_zero_failed_requests() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let name = db.name();
        let project = s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro")).unwrap();
        let sha = git
            .commit(&work, ".ouro/services.yml", SERVICES, "Run the web service")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        release(&s, project.id, "1.0.0", &sha, &app("1.0.0", false)).await;
        release(&s, project.id, "1.1.0", &sha, &app("1.1.0", false)).await;
        let cleanup = Cleanup(
            s.state.clone(),
            vec![
                ("demo/staging".into(), "1.0.0".into()),
                ("demo/staging".into(), "1.1.0".into()),
            ],
        );

        // Nothing deployed yet; nothing to roll back.
        let (st, body) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/environments/staging",
                None,
            )
            .await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (404, "deploy.environment_not_found"),
            "{name}"
        );

        let d = deploy(&s, "staging", "1.0.0").await;
        assert_eq!(d["state"], "succeeded", "{name}: {d}");
        assert_eq!(d["strategy"], "blue-green");
        let steps: Vec<&str> = d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["start", "ready", "switch"], "{d}");
        let env = environment(&s, "staging").await;
        assert_eq!(env["version"], "1.0.0", "{env}");
        let replicas = env["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 2, "{env}");
        assert!(replicas.iter().all(|r| r["health"] == "ready"), "{env}");
        let listen = env["services"][0]["listen"].as_str().unwrap().to_string();
        let url = format!("http://{listen}/");
        assert_eq!(get_text(&url).await, "1.0.0");

        let (st, body) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/environments/staging/rollback",
                None,
            )
            .await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (409, "deploy.nothing_to_roll_back")
        );

        // Under a steady keep-alive load: 1.1.0 goes live, then back to 1.0.0, several times.
        let load = Load::start(url.clone());
        let d = deploy(&s, "staging", "1.1.0").await;
        assert_eq!(d["state"], "succeeded", "{d}");
        assert_eq!(get_text(&url).await, "1.1.0");
        let env = environment(&s, "staging").await;
        assert_eq!(
            (env["version"].as_str(), env["previous_version"].as_str()),
            (Some("1.1.0"), Some("1.0.0"))
        );
        assert_eq!(env["services"][0]["traffic"], json!({"1.1.0": 100}));
        // The old version is still warm beside the new one.
        assert_eq!(env["replicas"].as_array().unwrap().len(), 4, "{env}");

        // 20 blue-green switches and 20 rollbacks on SQLite (the storage is the same on both
        // databases; PostgreSQL does a few rounds).
        let rounds = if name == "sqlite" { 20 } else { 3 };
        for round in 0..rounds {
            // Live: 1.1.0. Roll back to 1.0.0, then deploy 1.1.0 again (both stay warm).
            let started = Instant::now();
            let (st, rb) = s
                .admin(
                    Method::POST,
                    "/api/v1/projects/demo/environments/staging/rollback",
                    None,
                )
                .await;
            assert_eq!(st, 202, "{rb}");
            assert_eq!(rb["kind"], "rollback");
            let rb = finished(&s, rb["id"].as_i64().unwrap()).await;
            assert_eq!(rb["state"], "succeeded", "{rb}");
            assert_eq!(get_text(&url).await, "1.0.0", "round {round}");
            // Generous: the measured figure (well under a second) is in docs/benchmarks.md.
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
            let d = deploy(&s, "staging", "1.1.0").await;
            assert_eq!(d["state"], "succeeded", "{d}");
            assert_eq!(get_text(&url).await, "1.1.0", "round {round}");
        }
        let (ok, failed) = load.finish().await;
        assert!(
            failed.is_empty(),
            "{name}: {} failed requests: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(ok > 10, "{ok}");

        // Deployments and their events.
        let (_, list) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/deployments?environment=staging",
                None,
            )
            .await;
        assert_eq!(
            list.as_array().unwrap().len(),
            (2 + 2 * rounds).min(50),
            "{list}"
        );
        let kinds: Vec<String> = q("SELECT kind FROM events WHERE kind LIKE 'deploy.%' AND kind <> 'deploy.step' ORDER BY seq")
            .fetch_all(&mut s.state.store.read().await.unwrap())
            .await
            .unwrap()
            .iter()
            .map(|r| r.text("kind").unwrap())
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| *k == "deploy.started").count(),
            2 + 2 * rounds,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| *k == "deploy.rolled_back").count(),
            rounds,
            "{kinds:?}"
        );

        // Errors: an unknown release, a viewer, a release without services.yml.
        let (st, body) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/environments/staging/deployments",
                Some(json!({"version": "9.9.9"})),
            )
            .await;
        assert_eq!((st, error_code(&body).as_str()), (404, "release.not_found"));
        let vic = s.user("vic").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/vic",
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(st, 200);
        let (st, body) = s
            .call(
                Method::POST,
                "/api/v1/projects/demo/environments/staging/rollback",
                Some(&vic),
                None,
            )
            .await;
        assert_eq!(st, 403, "{body}");
        let (st, _) = s
            .call(
                Method::GET,
                "/api/v1/projects/demo/environments/staging",
                Some(&vic),
                None,
            )
            .await;
        assert_eq!(st, 200);
        git.run(&work, &["rm", "-q", ".ouro/services.yml"]).await;
        let gone = git.commit(&work, "NOTES.md", "x\n", "Drop services").await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        release(&s, project.id, "3.0.0", &gone, &app("3.0.0", false)).await;
        let (st, body) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/environments/staging/deployments",
                Some(json!({"version": "3.0.0"})),
            )
            .await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (422, "deploy.no_services"),
            "{body}"
        );

        cleanup.run().await;
        s.stop().await;
    }
}

#[tokio::test]
async fn a_healthy_canary_goes_live_under_load_and_a_failing_one_rolls_back_by_itself() {
    let db = &backends()[0];
    let s = TestServer::start(db).await;
    let project = s.demo_project().await;
    let (git, work, _) = app_checkout(&s).await;
    std::fs::create_dir_all(work.join(".ouro")).unwrap();
    let sha = git
        .commit(&work, ".ouro/services.yml", CANARY, "Canary")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    release(&s, project.id, "1.0.0", &sha, &app("1.0.0", false)).await;
    release(&s, project.id, "1.0.1", &sha, &app("1.0.1", false)).await;
    release(&s, project.id, "1.1.0", &sha, &app("1.1.0", true)).await;
    let cleanup = Cleanup(
        s.state.clone(),
        ["1.0.0", "1.0.1", "1.1.0"]
            .iter()
            .map(|v| ("demo/staging".to_string(), v.to_string()))
            .collect(),
    );
    let d = deploy(&s, "staging", "1.0.0").await;
    assert_eq!(d["state"], "succeeded", "{d}");
    let env = environment(&s, "staging").await;
    let url = format!("http://{}/", env["services"][0]["listen"].as_str().unwrap());

    // Requests from many clients: the `x-client` header is the stickiness key, so about half of
    // them reach the canary during the 50% step.
    let load = |url: String, stop: Arc<AtomicBool>| {
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut codes = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match client
                    .get(&url)
                    .header("x-client", i.to_string())
                    .send()
                    .await
                {
                    Ok(r) => codes.push(r.status().as_u16()),
                    Err(_) => codes.push(0),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            codes
        })
    };

    // A healthy canary: every step passes, no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(url.clone(), stop.clone());
    let d = deploy(&s, "staging", "1.0.1").await;
    stop.store(true, Ordering::Relaxed);
    let codes = running.await.unwrap();
    assert_eq!(d["state"], "succeeded", "{d}");
    assert!(codes.len() > 20, "{}", codes.len());
    assert!(
        codes.iter().all(|c| *c == 200),
        "a request failed: {codes:?}"
    );
    let canary: Vec<&Value> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "canary")
        .collect();
    assert_eq!(canary.len(), 2, "{d}");
    assert!(canary.iter().all(|s| s["state"] == "ok"), "{d}");
    assert!(
        canary[0]["detail"]["new"]["requests"].as_u64().unwrap() >= 5,
        "the 50% step judged real traffic: {d}"
    );
    assert_eq!(canary[0]["detail"]["new"]["errors"], 0);
    assert_eq!(get_text(&url).await, "1.0.1");
    let env = environment(&s, "staging").await;
    let signals = &env["services"][0]["signals"];
    assert!(signals["1.0.1"]["requests"].as_u64().unwrap() > 0, "{env}");
    assert_eq!(signals["1.0.1"]["errors"], 0, "{env}");

    // A failing canary: the error-rate check fails at 50% and traffic goes back by itself.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(url.clone(), stop.clone());
    let d = deploy(&s, "staging", "1.1.0").await;
    stop.store(true, Ordering::Relaxed);
    let codes = running.await.unwrap();
    // Only the canary's answers failed (500 from the service), never a connection.
    assert!(!codes.contains(&0), "{codes:?}");
    assert_eq!(d["state"], "rolled_back", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("canary step 50% failed"), "{reason}");
    assert!(reason.contains("error rate"), "{reason}");
    assert!(reason.contains("traffic went back to 1.0.1"), "{reason}");
    let step = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "canary")
        .unwrap()
        .clone();
    assert_eq!(step["state"], "failed", "{step}");
    assert!(
        step["detail"]["new"]["errors"].as_u64().unwrap() > 0,
        "{step}"
    );
    assert_eq!(get_text(&url).await, "1.0.1");
    let env = environment(&s, "staging").await;
    assert_eq!(env["version"], "1.0.1");
    cleanup.run().await;
    s.stop().await;
}

#[tokio::test]
async fn an_approved_promotion_is_deployed_without_a_call() {
    let db = &backends()[0];
    let s = TestServer::start(db).await;
    let project = s.demo_project().await;
    let (git, work, _) = app_checkout(&s).await;
    std::fs::create_dir_all(work.join(".ouro")).unwrap();
    git.commit(&work, ".ouro/services.yml", SERVICES, "Services")
        .await;
    let sha = git
        .commit(
            &work,
            ".ouro/environments.yml",
            "environments:\n  staging: {}\n",
            "Path",
        )
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    release(&s, project.id, "1.0.0", &sha, &app("1.0.0", false)).await;
    let cleanup = Cleanup(
        s.state.clone(),
        vec![("demo/staging".into(), "1.0.0".into())],
    );
    let (st, p) = s
        .admin(
            Method::POST,
            "/api/v1/projects/demo/releases/1.0.0/promotions",
            Some(json!({"environment": "staging"})),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    assert_eq!(p["state"], "approved");
    let deadline = Instant::now() + Duration::from_secs(60);
    let d = loop {
        let (_, list) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/deployments?release=1.0.0",
                None,
            )
            .await;
        if let Some(d) = list.as_array().and_then(|l| l.first())
            && d["state"] != "running"
        {
            break d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no deployment of the promotion: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(d["state"], "succeeded", "{d}");
    assert_eq!(d["promotion_id"], p["id"]);
    assert_eq!(d["actor"], "system:deploy");
    let env = environment(&s, "staging").await;
    assert_eq!(env["version"], "1.0.0");
    cleanup.run().await;
    s.stop().await;
}

#[tokio::test]
async fn a_replica_killed_under_load_is_taken_out_and_restarted() {
    let db = &backends()[0];
    let s = TestServer::start(db).await;
    let project = s.demo_project().await;
    let (git, work, _) = app_checkout(&s).await;
    std::fs::create_dir_all(work.join(".ouro")).unwrap();
    let sha = git
        .commit(&work, ".ouro/services.yml", SERVICES, "Services")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    release(&s, project.id, "1.0.0", &sha, &app("1.0.0", false)).await;
    let cleanup = Cleanup(
        s.state.clone(),
        vec![("demo/staging".into(), "1.0.0".into())],
    );
    let d = deploy(&s, "staging", "1.0.0").await;
    assert_eq!(d["state"], "succeeded", "{d}");
    let env = environment(&s, "staging").await;
    let url = format!("http://{}/", env["services"][0]["listen"].as_str().unwrap());
    let victim = env["replicas"][0].clone();
    let pid = victim["pid"].as_i64().expect("a pid") as i32;

    let load = Load::start(url.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: kill(2) on a pid this test's server started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // The supervisor restarts it; wait until it is back and ready under the load.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let env = environment(&s, "staging").await;
        let r = env["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["replica"] == victim["replica"])
            .cloned()
            .unwrap();
        if r["restarts"].as_u64().unwrap_or(0) >= 1 && r["health"] == "ready" {
            assert_ne!(r["pid"], victim["pid"]);
            break;
        }
        assert!(Instant::now() < deadline, "not restarted: {env}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = load.finish().await;
    // A request already sent to the replica when it died cannot be retried (it may not be
    // idempotent): at most that one fails, as a 502; every request that never reached the
    // dead replica was retried on the other one.
    assert!(failed.len() <= 1, "{failed:?}");
    assert!(
        failed.iter().all(|f| f == "status 502 Bad Gateway"),
        "{failed:?}"
    );
    assert!(ok > 20, "{ok}");
    cleanup.run().await;
    s.stop().await;
}

#[tokio::test]
async fn a_restarted_server_adopts_its_replicas_and_serves_the_same_version() {
    let db = &backends()[0];
    let s = TestServer::start(db).await;
    let project = s.demo_project().await;
    let (git, work, _) = app_checkout(&s).await;
    std::fs::create_dir_all(work.join(".ouro")).unwrap();
    let sha = git
        .commit(&work, ".ouro/services.yml", SERVICES, "Services")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    release(&s, project.id, "1.0.0", &sha, &app("1.0.0", false)).await;
    let d = deploy(&s, "staging", "1.0.0").await;
    assert_eq!(d["state"], "succeeded", "{d}");
    let before = environment(&s, "staging").await;
    let mut pids: Vec<i64> = before["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pid"].as_i64().unwrap())
        .collect();
    pids.sort();

    let s = s.restart().await;
    let cleanup = Cleanup(
        s.state.clone(),
        vec![("demo/staging".into(), "1.0.0".into())],
    );
    // The replicas kept running; the new server adopts them (same processes) and routes again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let env = loop {
        let env = environment(&s, "staging").await;
        let ready = env["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["health"] == "ready")
            .count();
        let listen = env["services"][0]["listen"].as_str().unwrap_or(":0");
        if ready == 2 && !listen.ends_with(":0") {
            break env;
        }
        assert!(Instant::now() < deadline, "not restored: {env}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(env["version"], "1.0.0");
    let mut again: Vec<i64> = env["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pid"].as_i64().unwrap())
        .collect();
    again.sort();
    assert_eq!(again, pids, "the same processes, no second copy: {env}");
    for pid in &pids {
        // SAFETY: signal 0 only checks that the process exists.
        assert_eq!(unsafe { libc::kill(*pid as i32, 0) }, 0);
    }
    let url = format!("http://{}/", env["services"][0]["listen"].as_str().unwrap());
    assert_eq!(get_text(&url).await, "1.0.0");
    cleanup.run().await;
    s.stop().await;
}

pub(crate) const REVIEW_CI: &str = "name: CR
on:
  change_request:
    branches: [main]
jobs:
  build:
    steps:
      - run: test -f app.py
    artifacts:
      paths: [app.py]
";

const REVIEW_SERVICES: &str = r#"services:
  web:
    run: exec python3 app.py
    health:
      readiness: {http: /healthz, interval: 200ms, failure: 1}
    route:
      staging: {listen: "127.0.0.1:0"}
      review: {listen: "127.0.0.1:0", host: "cr-{cr}.review.test"}
"#;

#[tokio::test]
async fn a_change_request_gets_a_review_environment_until_it_is_closed() {
    let db = &backends()[0];
    let s = TestServer::with_runner(db).await;
    s.demo_project().await;
    let (git, work, _) = app_checkout(&s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    git.commit(&work, ".ouro/pipelines/cr.yml", REVIEW_CI, "CI")
        .await;
    git.commit(&work, ".ouro/services.yml", REVIEW_SERVICES, "Services")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    git.run(&work, &["checkout", "-q", "-b", "feature"]).await;
    let head = git
        .commit(&work, "app.py", &app("review", false), "The app")
        .await;
    git.run(&work, &["push", "-q", "origin", "feature"]).await;
    let version = format!("cr1-{}", &head[..12]);
    let cleanup = Cleanup(
        s.state.clone(),
        vec![("demo/review-app-1".into(), version.clone())],
    );
    let (st, cr) = s
        .admin(
            Method::POST,
            "/api/v1/projects/demo/repos/app/change-requests",
            Some(json!({"source": "feature", "target": "main", "title": "Feature"})),
        )
        .await;
    assert_eq!(st, 201, "{cr}");

    // The green run of the change request goes to review-app-1 (repository `app`, CR 1) by itself.
    let deadline = Instant::now() + Duration::from_secs(90);
    let env = loop {
        let (st, env) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/environments/review-app-1",
                None,
            )
            .await;
        if st == 200 && env["version"] == version.as_str() {
            break env;
        }
        assert!(Instant::now() < deadline, "no review environment: {env}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let d = &env["deployments"][0];
    assert_eq!(d["kind"], "review", "{env}");
    assert_eq!(d["state"], "succeeded", "{env}");
    assert_eq!(d["actor"], "system:deploy");
    assert_eq!(env["services"][0]["host"], "cr-1.review.test");
    let listen = env["services"][0]["listen"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let body = client
        .get(format!("http://{listen}/"))
        .header("host", "cr-1.review.test")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "review");
    // Another host on that address is not this review environment.
    let other = client
        .get(format!("http://{listen}/"))
        .header("host", "cr-2.review.test")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    // Closing the change request tears the environment down.
    let (st, closed) = s
        .admin(
            Method::POST,
            "/api/v1/projects/demo/repos/app/change-requests/1/close",
            None,
        )
        .await;
    assert_eq!(st, 200, "{closed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/deployments?environment=review-app-1",
                None,
            )
            .await;
        if list[0]["kind"] == "teardown" && list[0]["state"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "not torn down: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let env = environment(&s, "review-app-1").await;
    assert_eq!(env["version"], Value::Null, "{env}");
    assert!(env["replicas"].as_array().unwrap().is_empty(), "{env}");
    let gone = client
        .get(format!("http://{listen}/"))
        .header("host", "cr-1.review.test")
        .send()
        .await;
    assert!(
        gone.map(|r| r.status() == 404).unwrap_or(true),
        "the route is gone"
    );
    cleanup.run().await;
    s.stop().await;
}

#[tokio::test]
async fn auto_promote_follows_a_succeeded_deployment_and_a_failed_one_blocks_the_next_environment()
{
    let db = &backends()[0];
    let s = TestServer::start_with(
        db,
        crate::support::Options {
            tweak: |st: &mut ouro_server::Settings| st.deploy_ready_timeout_secs = 3,
            ..Default::default()
        },
    )
    .await;
    let project = s.demo_project().await;
    let (git, work, _) = app_checkout(&s).await;
    std::fs::create_dir_all(work.join(".ouro")).unwrap();
    git.commit(&work, ".ouro/services.yml", SERVICES, "Services")
        .await;
    let sha = git
        .commit(
            &work,
            ".ouro/environments.yml",
            "environments:\n  staging: {}\n  production: {}\n",
            "Path",
        )
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    release(&s, project.id, "1.0.0", &sha, &app("1.0.0", false)).await;
    // 2.0.0 exits at once: it never becomes ready.
    release(&s, project.id, "2.0.0", &sha, "import sys\nsys.exit(3)\n").await;
    let cleanup = Cleanup(
        s.state.clone(),
        ["staging", "production"]
            .iter()
            .flat_map(|e| ["1.0.0", "2.0.0"].map(|v| (format!("demo/{e}"), v.to_string())))
            .collect(),
    );
    let (st, set) = s
        .admin(
            Method::PATCH,
            "/api/v1/projects/demo/release-settings",
            Some(json!({"auto_promote": true})),
        )
        .await;
    assert_eq!(st, 200, "{set}");
    assert_eq!(set["auto_promote"], true);

    // 1.0.0 to staging; once deployed there, its promotion to production is requested (no
    // gates: approved) and deployed without anyone asking.
    let (st, p) = s
        .admin(
            Method::POST,
            "/api/v1/projects/demo/releases/1.0.0/promotions",
            Some(json!({"environment": "staging"})),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, env) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/environments/production",
                None,
            )
            .await;
        if st == 200 && env["version"] == "1.0.0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "production never got 1.0.0: {env}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, promos) = s
        .admin(
            Method::GET,
            "/api/v1/projects/demo/releases/1.0.0/promotions",
            None,
        )
        .await;
    let prod = promos["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["environment"] == "production")
        .unwrap()
        .clone();
    assert_eq!(prod["requested_by"], "admin", "{promos}");
    assert_eq!(prod["state"], "approved");

    // 2.0.0 to staging fails to deploy: production refuses it, naming the deployment.
    let (st, p) = s
        .admin(
            Method::POST,
            "/api/v1/projects/demo/releases/2.0.0/promotions",
            Some(json!({"environment": "staging"})),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, body) = s
            .admin(
                Method::POST,
                "/api/v1/projects/demo/releases/2.0.0/promotions",
                Some(json!({"environment": "production"})),
            )
            .await;
        assert_ne!(
            st, 201,
            "production accepted a release whose staging deployment failed: {body}"
        );
        assert_eq!(
            error_code(&body),
            "release.promotion_out_of_order",
            "{body}"
        );
        if body["error"]["details"]["deployment"] == "failed" {
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("its deployment to `staging` is failed"),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed deployment was not seen: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let env = environment(&s, "staging").await;
    assert_eq!(env["version"], "1.0.0", "staging kept 1.0.0: {env}");
    assert_eq!(env["deployments"][0]["state"], "failed", "{env}");
    cleanup.run().await;
    s.stop().await;
}
