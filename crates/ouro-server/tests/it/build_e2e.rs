//! End to end with real projects: a small Rust crate (made by `cargo new --lib`, built and
//! tested offline by `cargo`) and a small Python package (tested by `python3 -m unittest`) are
//! pushed to Ouro with the git CLI, a change request is opened from a branch, and the in-process
//! runner runs their pipelines. Checked: the runs succeed, the logs hold the tools' real output,
//! the artifacts download byte-exact, the second run restores the cache, and the commit status
//! `ouro/<pipeline>` is success on the change request, where the merge gate requires it.
//!
//! The jobs run with a clean environment: the pipeline gets the toolchain's `bin` directory
//! (`rustc --print sysroot`) on its `PATH`, and cargo's home is the job's own (`--offline`, no
//! dependencies: nothing touches the network).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::code_hosting::{app_checkout, member};
use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const RUNS: &str = "/api/v1/projects/demo/pipelines";
const REPO: &str = "/api/v1/projects/demo/repos/app";

async fn eventually(s: &TestServer, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (st, body) = s.admin(Method::GET, path, None).await;
        if st == 200 && ok(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting on {path}: {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn runs_of(body: &Value) -> Vec<Value> {
    body["runs"].as_array().cloned().unwrap_or_default()
}

fn finished(status: &Value) -> bool {
    matches!(status.as_str(), Some("success" | "failure" | "cancelled"))
}

/// Waits for the run building change request 1 at `sha` to finish; returns it with its jobs.
async fn cr_run_at(s: &TestServer, sha: &str) -> Value {
    let list = eventually(s, RUNS, |b| {
        runs_of(b)
            .iter()
            .any(|r| r["sha"] == sha && r["cr_number"] == 1 && finished(&r["status"]))
    })
    .await;
    let n = runs_of(&list)
        .into_iter()
        .find(|r| r["sha"] == sha)
        .unwrap()["number"]
        .as_i64()
        .unwrap();
    let (st, run) = s.admin(Method::GET, &format!("{RUNS}/{n}"), None).await;
    assert_eq!(st, 200, "{run}");
    run
}

/// The log of the run's only job, as text.
async fn log_of(s: &TestServer, run: &Value) -> String {
    let job = run["jobs"][0]["id"].as_i64().unwrap();
    let n = run["number"].as_i64().unwrap();
    let r = s
        .req(
            Method::GET,
            &format!("{RUNS}/{n}/jobs/{job}/log"),
            Some(&s.admin_token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned()
}

/// The run's artifacts by path, downloaded.
async fn artifacts(s: &TestServer, run: &Value) -> Vec<(String, Vec<u8>)> {
    let n = run["number"].as_i64().unwrap();
    let (st, list) = s
        .admin(Method::GET, &format!("{RUNS}/{n}/artifacts"), None)
        .await;
    assert_eq!(st, 200, "{list}");
    let mut out = Vec::new();
    for a in list["artifacts"].as_array().unwrap() {
        let id = a["id"].as_i64().unwrap();
        let r = s
            .req(
                Method::GET,
                &format!("{RUNS}/{n}/artifacts/{id}"),
                Some(&s.admin_token),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let bytes = r.bytes().await.unwrap().to_vec();
        assert_eq!(bytes.len() as i64, a["size"].as_i64().unwrap(), "{a}");
        out.push((a["path"].as_str().unwrap().to_string(), bytes));
    }
    out
}

fn artifact<'a>(list: &'a [(String, Vec<u8>)], path: &str) -> &'a [u8] {
    &list
        .iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| {
            panic!(
                "no artifact {path}: {:?}",
                list.iter().map(|(p, _)| p).collect::<Vec<_>>()
            )
        })
        .1
}

/// The directory of the active toolchain's `cargo` and `rustc` (no rustup proxy needed).
fn toolchain_bin() -> String {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    assert!(out.status.success());
    format!("{}/bin", String::from_utf8(out.stdout).unwrap().trim())
}

fn cargo(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new(format!("{}/cargo", toolchain_bin()))
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

/// The merge rules of `app` require the status `check`; returns a developer's token (who opens
/// the change request).
async fn require_check(s: &TestServer, check: &str) -> String {
    let dev = member(s, "dev", "developer").await;
    let (st, body) = s
        .admin(
            Method::PUT,
            &format!("{REPO}/merge-rules"),
            Some(json!({"merge_method": "merge", "required_approvals": 0,
                        "required_checks": [check], "dismiss_stale_approvals": true})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    dev
}

fn rust_pipeline() -> String {
    format!(
        "name: Rust
on:
  change_request: {{}}
jobs:
  crate:
    env:
      PATH: {bin}:/usr/bin:/bin
    cache:
      key: cargo-${{{{ hashFiles('Cargo.lock') }}}}
      paths: [target]
    artifacts:
      paths: [target/debug/libdemo_crate.rlib, out/Cargo.lock]
    steps:
      - name: Test
        run: cargo test --offline
      - name: Build
        run: cargo build --offline
      - name: Report
        run: mkdir -p out && cp Cargo.lock out/Cargo.lock
",
        bin = toolchain_bin()
    )
}

#[tokio::test]
async fn a_rust_crate_is_tested_and_built_on_its_change_request() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;
        // A real crate from `cargo new --lib` (it has a unit test), with its lock file.
        let top = work.parent().unwrap().join("gen");
        std::fs::create_dir_all(&top).unwrap();
        cargo(
            &top,
            &["new", "--lib", "--vcs", "none", "--offline", "demo-crate"],
        );
        let made = top.join("demo-crate");
        cargo(&made, &["generate-lockfile", "--offline"]);
        for f in ["Cargo.toml", "Cargo.lock", "src/lib.rs"] {
            write(&work, f, &std::fs::read_to_string(made.join(f)).unwrap());
        }
        write(&work, ".gitignore", "/target\n");
        write(&work, ".ouro/pipelines/rust.yml", &rust_pipeline());
        let lock = std::fs::read(work.join("Cargo.lock")).unwrap();
        git.run(&work, &["add", "-A"]).await;
        git.run(&work, &["commit", "-q", "-m", "A crate"]).await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let dev = require_check(&s, "ouro/Rust").await;

        git.run(&work, &["checkout", "-q", "-b", "feature"]).await;
        let head1 = git.commit(&work, "NOTES.md", "one\n", "Notes").await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        let (st, cr) = s
            .call(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(&dev),
                Some(json!({"source": "feature", "target": "main", "title": "Notes"})),
            )
            .await;
        assert_eq!(st, 201, "{cr}");

        let run = cr_run_at(&s, &head1).await;
        let log = log_of(&s, &run).await;
        assert_eq!(run["status"], "success", "{run}\n{log}");
        // The tools' real output.
        assert!(log.contains("Compiling demo-crate v0.1.0"), "{log}");
        assert!(log.contains("test tests::it_works ... ok"), "{log}");
        assert!(log.contains("test result: ok. 1 passed"), "{log}");
        assert!(log.contains("cache miss: key cargo-"), "{log}");
        assert!(log.contains("cache saved: key cargo-"), "{log}");
        // The artifacts, byte-exact: the lock file copy, and the rlib (an `ar` archive).
        let arts = artifacts(&s, &run).await;
        assert_eq!(artifact(&arts, "out/Cargo.lock"), lock.as_slice());
        let rlib = artifact(&arts, "target/debug/libdemo_crate.rlib");
        assert!(rlib.starts_with(b"!<arch>\n"), "an rlib is an ar archive");

        // The second run (a new head, the same Cargo.lock) restores the cache.
        let head2 = git.commit(&work, "NOTES.md", "two\n", "More notes").await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        let run2 = cr_run_at(&s, &head2).await;
        let log2 = log_of(&s, &run2).await;
        assert_eq!(run2["status"], "success", "{run2}\n{log2}");
        assert!(log2.contains("cache hit: key cargo-"), "{log2}");
        assert!(log2.contains("test result: ok. 1 passed"), "{log2}");

        // The status is on the change request, and the merge gate is satisfied by it. (The
        // status is posted just after the run's result is recorded: wait for it.)
        let view = eventually(&s, &format!("{REPO}/change-requests/1"), |v| {
            v["statuses"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["name"] == "ouro/Rust" && x["state"] != "pending")
            })
        })
        .await;
        let status = view["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "ouro/Rust")
            .cloned()
            .unwrap_or_else(|| panic!("no ouro/Rust status: {view}"));
        assert_eq!(status["state"], "success", "{view}");
        let checks = view["gate"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "checks")
            .cloned()
            .unwrap_or_else(|| panic!("no checks condition: {view}"));
        assert_eq!(checks["met"], true, "{view}");
        assert_eq!(view["gate"]["mergeable"], true, "{view}");
        s.stop().await;
    }
}

const PY_PIPELINE: &str = "name: Python
on:
  change_request: {}
jobs:
  package:
    cache:
      key: pip-${{ hashFiles('requirements.txt') }}
      paths: [.cache/pip]
    artifacts:
      paths: [dist/result.txt]
    steps:
      - name: Test
        run: python3 -m unittest discover -s tests -v
      - name: Use
        run: mkdir -p dist .cache/pip && python3 -c 'import calc; print(calc.add(2, 3))' > dist/result.txt && echo seen >> .cache/pip/marker
";

const PY_MODULE: &str = "\"\"\"A tiny package.\"\"\"\n\n\ndef add(a, b):\n    return a + b\n";
const PY_TEST: &str = "import unittest\n\nimport calc\n\n\nclass AddTest(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(calc.add(2, 3), 5)\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n";
const PYPROJECT: &str = "[project]\nname = \"calc\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\n\n[build-system]\nrequires = [\"setuptools\"]\nbuild-backend = \"setuptools.build_meta\"\n";

#[tokio::test]
async fn a_python_package_is_tested_on_its_change_request() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;
        write(&work, "pyproject.toml", PYPROJECT);
        write(&work, "calc/__init__.py", PY_MODULE);
        write(&work, "tests/test_calc.py", PY_TEST);
        write(&work, "requirements.txt", "# no dependencies\n");
        write(&work, ".ouro/pipelines/python.yml", PY_PIPELINE);
        git.run(&work, &["add", "-A"]).await;
        git.run(&work, &["commit", "-q", "-m", "A package"]).await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let dev = require_check(&s, "ouro/Python").await;

        git.run(&work, &["checkout", "-q", "-b", "feature"]).await;
        let head1 = git.commit(&work, "NOTES.md", "one\n", "Notes").await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        let (st, cr) = s
            .call(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(&dev),
                Some(json!({"source": "feature", "target": "main", "title": "Notes"})),
            )
            .await;
        assert_eq!(st, 201, "{cr}");

        let run = cr_run_at(&s, &head1).await;
        let log = log_of(&s, &run).await;
        assert_eq!(run["status"], "success", "{run}\n{log}");
        assert!(log.contains("test_add (test_calc.AddTest"), "{log}");
        assert!(log.contains("Ran 1 test"), "{log}");
        assert!(log.contains("\nOK"), "{log}");
        assert!(log.contains("cache miss: key pip-"), "{log}");
        let arts = artifacts(&s, &run).await;
        assert_eq!(artifact(&arts, "dist/result.txt"), b"5\n");

        let head2 = git.commit(&work, "NOTES.md", "two\n", "More notes").await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        let run2 = cr_run_at(&s, &head2).await;
        let log2 = log_of(&s, &run2).await;
        assert_eq!(run2["status"], "success", "{run2}\n{log2}");
        assert!(log2.contains("cache hit: key pip-"), "{log2}");

        let (st, view) = s
            .admin(Method::GET, &format!("{REPO}/change-requests/1"), None)
            .await;
        assert_eq!(st, 200, "{view}");
        let status = view["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "ouro/Python")
            .cloned()
            .unwrap_or_else(|| panic!("no ouro/Python status: {view}"));
        assert_eq!(status["state"], "success", "{view}");
        assert_eq!(view["gate"]["mergeable"], true, "{view}");
        s.stop().await;
    }
}
