use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ouro_store::testing::backends;

fn ouro() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ouro"));
    c.env_remove("OURO_DATABASE_URL")
        .env_remove("OURO_DATA_DIR")
        .env_remove("OURO_LISTEN")
        .env("OURO_LOG", "warn");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the server if a test fails half-way.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn create_user(dir: &str, db: Option<&str>, name: &str, admin: bool) -> std::process::Output {
    let mut c = ouro();
    c.args([
        "admin",
        "create-user",
        "--data-dir",
        dir,
        "--name",
        name,
        "--password-stdin",
    ]);
    if admin {
        c.arg("--admin");
    }
    if let Some(db) = db {
        c.args(["--database-url", db]);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct-horse\n")
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn version_and_default_config() {
    let out = ouro().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ouro "));
    let out = ouro().args(["config", "default"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("# listen = \"127.0.0.1:7070\"") && text.contains("database_url"));
}

#[tokio::test]
async fn serve_admin_commands_and_the_contract() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let url = match db {
            ouro_store::testing::TestDb::Sqlite => None,
            _ => Some(db.fresh_url(dir.path()).await),
        };
        let port = free_port();
        let mut cmd = ouro();
        cmd.args([
            "serve",
            "--data-dir",
            &d,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]);
        if let Some(u) = &url {
            cmd.args(["--database-url", u]);
        }
        let started = Instant::now();
        let mut server = Server(
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(server.0.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert_eq!(first, format!("Ouro is running at http://127.0.0.1:{port}"));
        let _ = lines.next();
        let setup = lines.next().unwrap().unwrap();
        assert!(
            setup
                .trim()
                .starts_with(&format!("http://127.0.0.1:{port}/setup?token=")),
            "{setup}"
        );

        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        while client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            assert!(started.elapsed() < Duration::from_secs(20), "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        // The admin commands work on the same data dir while the server runs.
        let out = create_user(&d, url.as_deref(), "alice", true);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dup = create_user(&d, url.as_deref(), "alice", false);
        assert!(!dup.status.success());
        assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
        let mut c = ouro();
        c.args(["admin", "create-token", "--data-dir", &d, "--user", "alice"]);
        if let Some(u) = &url {
            c.args(["--database-url", u]);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string();
        assert!(token.starts_with("ouro_"));

        let r = client
            .post(format!("{base}/api/v1/projects"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"slug": "demo", "name": "Demo"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = client
            .get(format!("{base}/api/v1/projects/demo"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("\"slug\":\"demo\""));
        assert_eq!(
            client
                .get(format!("{base}/api/v1/projects/demo"))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
        // The setup link died when the CLI created the first user.
        assert_eq!(client.get(setup.trim()).send().await.unwrap().status(), 404);

        // SIGTERM: a clean exit with status 0.
        let pid = server.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let t = Instant::now();
        loop {
            if let Some(status) = server.0.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn helpful_errors_for_operators() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = ouro()
        .args(["admin", "create-token", "--data-dir", d, "--user", "ghost"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("create-user"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.path().join("ouro.toml"), "listen = 7\n").unwrap();
    let out = ouro().args(["serve", "--data-dir", d]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ouro.toml"));
    let out = ouro()
        .args([
            "serve",
            "--data-dir",
            d,
            "--config",
            "/nonexistent/ouro.toml",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn serve_refuses_a_database_newer_than_the_binary_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(create_user(d, None, "alice", true).status.success());
    let db = dir.path().join("ouro.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut newer = ouro_server::all_migrations();
        newer.push(ouro_store::Migration {
            component: "platform",
            version: 99,
            name: "future",
            sqlite: "CREATE TABLE future (x BIGINT)",
            postgres: "",
        });
        ouro_store::Store::open(&format!("sqlite://{}", db.display()), &newer)
            .await
            .unwrap()
            .close()
            .await;
    });
    let before = std::fs::read(&db).unwrap();
    let out = ouro()
        .args([
            "serve",
            "--data-dir",
            d,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("newer than this binary") && err.contains("platform v99"),
        "{err}"
    );
    assert_eq!(
        before,
        std::fs::read(&db).unwrap(),
        "the database file is unchanged"
    );
}
