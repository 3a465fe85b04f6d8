//! A real server on port 0 with one user and an API token, for the tests that drive the CLI
//! against it.

use ouro_core::Actor;
use ouro_store::Store;
use ouro_store::accounts::User;
use ouro_store::testing::TestDb;

pub struct Served {
    pub base: String,
    pub state: ouro_server::AppState,
    pub store: Store,
    /// The user's API token (scope `api`).
    pub token: String,
    pub user: User,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

/// Starts a server on a fresh database of `db` with user `name` (an admin when `admin`) and
/// `runner_slots` in-process runner slots.
pub async fn served(db: &TestDb, name: &str, admin: bool, runner_slots: usize) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let settings = ouro_server::Settings {
        data_dir: dir.path().join("data"),
        database_url: Some(db.fresh_url(dir.path()).await),
        runner_slots,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = ouro_server::start(settings, listener).await.unwrap();
    let base = format!("http://{}", running.addr);
    let state = running.state.clone();
    let store = state.store.clone();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(running.serve(async move {
        let _ = rx.await;
    }));
    let user = ouro_store::accounts::create_user(
        &store,
        &Actor::System("test"),
        name,
        "password-1",
        admin,
    )
    .await
    .unwrap();
    let token = ouro_store::accounts::create_token(
        &store,
        &Actor::System("test"),
        &user,
        "cli",
        &["api".into()],
        None,
    )
    .await
    .unwrap()
    .1;
    Served {
        base,
        state,
        store,
        token,
        user,
        stop,
        server,
        _dir: dir,
    }
}

impl Served {
    /// Stops the server and waits for it.
    /// Creates project `demo` with an empty repository `app`; returns its clone URL with the
    /// user's token in it, for `git push`.
    pub async fn demo_repo(&self) -> String {
        ouro_store::projects::create(
            &self.store,
            &self.user,
            "demo",
            "Demo",
            "",
            ouro_store::projects::Visibility::Private,
        )
        .await
        .unwrap();
        let repo: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/api/v1/projects/demo/repos", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"name": "app"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let auth = format!("http://{}:{}@", self.user.name, self.token);
        repo["clone_url"]
            .as_str()
            .unwrap()
            .replacen("http://", &auth, 1)
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }
}
