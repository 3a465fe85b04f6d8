//! End to end through a separate `ouro runner` process (the server's in-process runner is off):
//! a real Rust crate (`cargo new --lib`, tested and built offline) and a real Python package
//! (`python3 -m unittest`) in one repository, pushed with the git CLI, a change request opened
//! from a branch. Both pipelines run on the runner: real tool output in the logs, artifacts
//! byte-exact, the second run restores the caches over the runner API, and the statuses
//! `ouro/Rust` and `ouro/Python` satisfy the change request's merge gate.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ouro_store::testing::backends;
use serde_json::{Value, json};

fn git(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The directory of the active toolchain's `cargo` and `rustc` (no rustup proxy needed).
fn toolchain_bin() -> String {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    assert!(out.status.success());
    format!("{}/bin", String::from_utf8(out.stdout).unwrap().trim())
}

fn cargo(dir: &Path, args: &[&str]) {
    let out = Command::new(format!("{}/cargo", toolchain_bin()))
        .args(args)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn rust_pipeline() -> String {
    format!(
        "name: Rust
on:
  change_request: {{}}
jobs:
  crate:
    runs-on: remote
    env:
      PATH: {bin}:/usr/bin:/bin
    cache:
      key: cargo-${{{{ hashFiles('Cargo.lock') }}}}
      paths: [target]
    artifacts:
      paths: [target/debug/libdemo_crate.rlib, out/Cargo.lock]
    steps:
      - run: cargo test --offline
      - run: cargo build --offline
      - run: mkdir -p out && cp Cargo.lock out/Cargo.lock
",
        bin = toolchain_bin()
    )
}

const PY_PIPELINE: &str = "name: Python
on:
  change_request: {}
jobs:
  package:
    runs-on: remote
    cache:
      key: pip-${{ hashFiles('py/requirements.txt') }}
      paths: [py/.cache]
    artifacts:
      paths: [py/dist/result.txt]
    steps:
      - run: python3 -m unittest discover -s tests -v
        working-directory: py
      - run: mkdir -p dist .cache && python3 -c 'import calc; print(calc.add(2, 3))' > dist/result.txt && echo seen >> .cache/marker
        working-directory: py
";

struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.json().await.unwrap()
    }

    async fn bytes(&self, path: &str) -> Vec<u8> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.bytes().await.unwrap().to_vec()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The finished run of `pipeline` at `sha`, with its jobs.
    async fn finished_run(&self, pipeline: &str, sha: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let list = self.get("/api/v1/projects/demo/pipelines").await;
            let found = list["runs"].as_array().unwrap().iter().find(|r| {
                r["sha"] == sha
                    && r["pipeline"] == pipeline
                    && matches!(
                        r["status"].as_str(),
                        Some("success" | "failure" | "cancelled")
                    )
            });
            if let Some(r) = found {
                let n = r["number"].as_i64().unwrap();
                return self
                    .get(&format!("/api/v1/projects/demo/pipelines/{n}"))
                    .await;
            }
            assert!(
                Instant::now() < deadline,
                "no finished {pipeline} run at {sha}: {list}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn log(&self, run: &Value) -> String {
        let n = run["number"].as_i64().unwrap();
        let job = run["jobs"][0]["id"].as_i64().unwrap();
        let b = self
            .bytes(&format!(
                "/api/v1/projects/demo/pipelines/{n}/jobs/{job}/log"
            ))
            .await;
        String::from_utf8_lossy(&b).into_owned()
    }

    async fn artifact(&self, run: &Value, path: &str) -> Vec<u8> {
        let n = run["number"].as_i64().unwrap();
        let list = self
            .get(&format!("/api/v1/projects/demo/pipelines/{n}/artifacts"))
            .await;
        let a = list["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["path"] == path)
            .unwrap_or_else(|| panic!("no artifact {path}: {list}"))
            .clone();
        let id = a["id"].as_i64().unwrap();
        self.bytes(&format!(
            "/api/v1/projects/demo/pipelines/{n}/artifacts/{id}"
        ))
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_crate_and_a_python_package_run_on_a_separate_ouro_runner() {
    for db in backends() {
        let srv = crate::served::served(&db, "admin", true, 0).await;
        let dir = tempfile::tempdir().unwrap();
        ouro_store::projects::create(
            &srv.store,
            &srv.user,
            "demo",
            "Demo",
            "",
            ouro_store::projects::Visibility::Private,
        )
        .await
        .unwrap();
        let api = Api {
            base: srv.base.clone(),
            token: srv.token.clone(),
            client: reqwest::Client::new(),
        };
        let repo = api
            .send(
                reqwest::Method::POST,
                "/api/v1/projects/demo/repos",
                json!({"name": "app"}),
            )
            .await;
        let url = repo["clone_url"].as_str().unwrap().replacen(
            "http://",
            &format!("http://admin:{}@", srv.token),
            1,
        );
        api.send(
            reqwest::Method::PUT,
            "/api/v1/projects/demo/repos/app/merge-rules",
            json!({"merge_method": "merge", "required_approvals": 0,
                   "required_checks": ["ouro/Rust", "ouro/Python"],
                   "dismiss_stale_approvals": true}),
        )
        .await;

        // The repository: a crate from `cargo new --lib` at the top, a package in `py/`.
        let work = dir.path().join("work");
        let gen_dir = dir.path().join("gen");
        let (w, g, u) = (work.clone(), gen_dir.clone(), url.clone());
        let (lock, head1) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&w).unwrap();
            std::fs::create_dir_all(&g).unwrap();
            cargo(&g, &["new", "--lib", "--vcs", "none", "--offline", "demo-crate"]);
            let made = g.join("demo-crate");
            cargo(&made, &["generate-lockfile", "--offline"]);
            for f in ["Cargo.toml", "Cargo.lock", "src/lib.rs"] {
                write(&w, f, &std::fs::read_to_string(made.join(f)).unwrap());
            }
            write(&w, ".gitignore", "/target\n");
            write(&w, "py/calc/__init__.py", "def add(a, b):\n    return a + b\n");
            write(
                &w,
                "py/tests/test_calc.py",
                "import unittest\n\nimport calc\n\n\nclass AddTest(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(calc.add(2, 3), 5)\n",
            );
            write(&w, "py/pyproject.toml", "[project]\nname = \"calc\"\nversion = \"0.1.0\"\n");
            write(&w, "py/requirements.txt", "# no dependencies\n");
            write(&w, ".ouro/pipelines/rust.yml", &rust_pipeline());
            write(&w, ".ouro/pipelines/python.yml", PY_PIPELINE);
            git(&w, &["init", "-q", "-b", "main"]);
            git(&w, &["add", "-A"]);
            git(&w, &["commit", "-q", "-m", "A crate and a package"]);
            git(&w, &["push", "-q", &u, "main"]);
            git(&w, &["checkout", "-q", "-b", "feature"]);
            write(&w, "NOTES.md", "one\n");
            git(&w, &["add", "-A"]);
            git(&w, &["commit", "-q", "-m", "Notes"]);
            git(&w, &["push", "-q", &u, "feature"]);
            (
                std::fs::read(w.join("Cargo.lock")).unwrap(),
                git(&w, &["rev-parse", "HEAD"]),
            )
        })
        .await
        .unwrap();
        api.send(
            reqwest::Method::POST,
            "/api/v1/projects/demo/repos/app/change-requests",
            json!({"source": "feature", "target": "main", "title": "Notes"}),
        )
        .await;

        let reg = api
            .send(
                reqwest::Method::POST,
                "/api/v1/admin/runner-tokens",
                json!({}),
            )
            .await;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ouro"))
            .args(["runner", "--server", &srv.base, "--labels", "remote,linux"])
            .args(["--slots", "2", "--name", "e2e-runner", "--token"])
            .arg(reg["token"].as_str().unwrap())
            .arg("--work-dir")
            .arg(dir.path().join("runner"))
            .env("OURO_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        let rust = api.finished_run("Rust", &head1).await;
        let log = api.log(&rust).await;
        assert_eq!(rust["status"], "success", "{rust}\n{log}");
        assert_eq!(rust["cr_number"], 1);
        assert_eq!(
            rust["jobs"][0]["runner_id"].as_str().map(|r| r == "local"),
            Some(false)
        );
        assert!(log.contains("Compiling demo-crate v0.1.0"), "{log}");
        assert!(log.contains("test result: ok. 1 passed"), "{log}");
        assert!(log.contains("cache miss: key cargo-"), "{log}");
        assert_eq!(api.artifact(&rust, "out/Cargo.lock").await, lock);
        let rlib = api.artifact(&rust, "target/debug/libdemo_crate.rlib").await;
        assert!(rlib.starts_with(b"!<arch>\n"), "an rlib is an ar archive");

        let py = api.finished_run("Python", &head1).await;
        let log = api.log(&py).await;
        assert_eq!(py["status"], "success", "{py}\n{log}");
        assert!(log.contains("Ran 1 test"), "{log}");
        assert!(log.contains("cache miss: key pip-"), "{log}");
        assert_eq!(api.artifact(&py, "py/dist/result.txt").await, b"5\n");

        // A second push: both runs restore their caches.
        let (w, u) = (work.clone(), url.clone());
        let head2 = tokio::task::spawn_blocking(move || {
            write(&w, "NOTES.md", "two\n");
            git(&w, &["commit", "-q", "-am", "More notes"]);
            git(&w, &["push", "-q", &u, "feature"]);
            git(&w, &["rev-parse", "HEAD"])
        })
        .await
        .unwrap();
        let rust2 = api.finished_run("Rust", &head2).await;
        let log = api.log(&rust2).await;
        assert_eq!(rust2["status"], "success", "{rust2}\n{log}");
        assert!(log.contains("cache hit: key cargo-"), "{log}");
        let py2 = api.finished_run("Python", &head2).await;
        let log = api.log(&py2).await;
        assert_eq!(py2["status"], "success", "{py2}\n{log}");
        assert!(log.contains("cache hit: key pip-"), "{log}");

        // The statuses are on the change request and its merge gate is satisfied.
        let view = api
            .get("/api/v1/projects/demo/repos/app/change-requests/1")
            .await;
        for name in ["ouro/Rust", "ouro/Python"] {
            let s = view["statuses"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .unwrap_or_else(|| panic!("no {name}: {view}"));
            assert_eq!(s["state"], "success", "{view}");
        }
        assert_eq!(view["gate"]["mergeable"], true, "{view}");
        child.kill().await.unwrap();
        srv.stop().await;
    }
}
