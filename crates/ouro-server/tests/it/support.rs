//! Starting a real server for a test.

use std::time::Duration;

use ouro_core::Actor;
use ouro_server::{Settings, start};
use ouro_store::testing::TestDb;
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;
use tokio::sync::oneshot;

pub use ouro_store::testing::backends;

#[allow(dead_code)] // Not every test module uses every field.
pub struct TestServer {
    pub base: String,
    pub db: TestDb,
    pub state: ouro_server::AppState,
    /// An instance admin's API token.
    pub admin_token: String,
    pub setup_url: Option<String>,
    pub client: Client,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub struct Options {
    pub with_admin: bool,
    pub tweak: fn(&mut Settings),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            with_admin: true,
            tweak: |_| {},
        }
    }
}

impl TestServer {
    pub async fn start(db: &TestDb) -> TestServer {
        TestServer::start_with(db, Options::default()).await
    }

    /// A server whose in-process runner has 2 slots (the default test server has none, so
    /// runs stay queued), for tests that watch jobs run.
    pub async fn with_runner(db: &TestDb) -> TestServer {
        TestServer::start_with(
            db,
            Options {
                tweak: |s: &mut Settings| s.runner_slots = 2,
                ..Options::default()
            },
        )
        .await
    }

    pub async fn start_with(db: &TestDb, opts: Options) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(db.fresh_url(dir.path()).await),
            shutdown_grace_secs: 2,
            // No in-process runner unless a test asks for one (runs stay queued).
            runner_slots: 0,
            ..Settings::default()
        };
        (opts.tweak)(&mut settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = start(settings, listener).await.expect("server starts");
        let base = format!("http://{}", running.addr);
        let state = running.state.clone();
        let setup_url = running.setup_url.clone();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(running.serve(async move {
            let _ = rx.await;
        }));
        let mut admin_token = String::new();
        if opts.with_admin {
            let admin = ouro_store::accounts::create_user(
                &state.store,
                &Actor::System("test"),
                "admin",
                "admin-password",
                true,
            )
            .await
            .unwrap();
            admin_token = ouro_store::accounts::create_token(
                &state.store,
                &Actor::System("test"),
                &admin,
                "t",
                &["api".into()],
                None,
            )
            .await
            .unwrap()
            .1;
        }
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        TestServer {
            base,
            db: db.clone(),
            state,
            admin_token,
            setup_url,
            client,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let r = self.client.request(method, self.url(path));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends JSON (or nothing) and returns status and parsed body (Null when empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.req(method, path, token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        parse(r.send().await.unwrap()).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.admin_token.clone()), body)
            .await
    }

    /// Creates a user and a token for it; returns the token.
    pub async fn user(&self, name: &str) -> String {
        let (s, _) = self
            .admin(
                Method::POST,
                "/api/v1/users",
                Some(serde_json::json!({"name": name, "password": "password-123"})),
            )
            .await;
        assert_eq!(s, 201);
        let u =
            ouro_store::accounts::user_by_name(&mut self.state.store.read().await.unwrap(), name)
                .await
                .unwrap()
                .unwrap();
        ouro_store::accounts::create_token(
            &self.state.store,
            &Actor::System("test"),
            &u,
            "t",
            &["api".into()],
            None,
        )
        .await
        .unwrap()
        .1
    }

    /// Creates the project `demo` ("Demo") as the admin.
    pub async fn demo_project(&self) -> ouro_store::projects::Project {
        let (st, body) = self
            .admin(
                Method::POST,
                "/api/v1/projects",
                Some(serde_json::json!({"slug": "demo", "name": "Demo"})),
            )
            .await;
        assert_eq!(st, 201, "{body}");
        ouro_store::projects::by_slug(&mut self.state.store.read().await.unwrap(), "demo")
            .await
            .unwrap()
            .unwrap()
    }

    /// GETs a page with the admin's token (UI routes accept tokens): status and body.
    pub async fn admin_page(&self, path: &str) -> (u16, String) {
        let r = self
            .req(Method::GET, path, Some(&self.admin_token))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// POSTs an urlencoded form with the admin's token (a token needs no CSRF field): status,
    /// Location header and body.
    pub async fn admin_form(&self, path: &str, body: String) -> (u16, String, String) {
        let r = self
            .req(Method::POST, path, Some(&self.admin_token))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, location, r.text().await.unwrap())
    }

    /// Stops serving and starts again on the same data dir and database (a restart of Ouro).
    pub async fn restart(mut self) -> TestServer {
        let settings = self.state.settings.clone();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = start(settings, listener).await.expect("server restarts");
        let base = format!("http://{}", running.addr);
        let state = running.state.clone();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(running.serve(async move {
            let _ = rx.await;
        }));
        TestServer {
            base,
            db: self.db.clone(),
            state,
            admin_token: std::mem::take(&mut self.admin_token),
            setup_url: None,
            client: self.client.clone(),
            dir: std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

pub async fn parse(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts the one error shape and returns the code.
pub fn error_code(body: &Value) -> String {
    let e = &body["error"];
    assert!(
        e["code"].is_string() && e["message"].is_string(),
        "not the error shape: {body}"
    );
    e["code"].as_str().unwrap().to_string()
}

/// An `application/x-www-form-urlencoded` body.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                ouro_server::ui::url_encode(k),
                ouro_server::ui::url_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The pipelines API of the demo project.
const PIPELINES: &str = "/api/v1/projects/demo/pipelines";

/// Pushes `pipeline` as `.ouro/pipelines/ci.yml` of a new repo `app` on `main` of the demo
/// project (created here); returns the checkout and the commit.
pub async fn push_pipeline(
    s: &TestServer,
    pipeline: &str,
) -> (crate::code_hosting::Git, std::path::PathBuf, String) {
    s.demo_project().await;
    let (git, work, _) = crate::code_hosting::app_checkout(s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    let head = git
        .commit(&work, ".ouro/pipelines/ci.yml", pipeline, "Add CI")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    (git, work, head)
}

/// GETs `path` as the admin until it answers 200 with a body `ok` accepts (90 s at most: jobs
/// run real processes on a shared machine).
pub async fn eventually(s: &TestServer, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (st, body) = s.admin(Method::GET, path, None).await;
        if st == 200 && ok(&body) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting on {path}: {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for run `number` of the demo project to end; returns its JSON.
pub async fn run_finished(s: &TestServer, number: i64) -> Value {
    eventually(s, &format!("{PIPELINES}/{number}"), |b| {
        matches!(
            b["status"].as_str(),
            Some("success" | "failure" | "cancelled")
        )
    })
    .await
}

/// Job `key` of a run as the API shows it.
pub fn job_of<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["key"] == key)
        .unwrap_or_else(|| panic!("no job {key}: {run}"))
}
