//! `ouro run` in a temporary repository: exit codes, job lines, invalid pipelines, `--job`.

use std::path::Path;
use std::process::{Command, Output};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A repository with `files` committed.
fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    git(d.path(), &["init", "-q", "-b", "main"]);
    for (name, text) in files {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(d.path(), &["add", "."]);
    git(d.path(), &["commit", "-q", "-m", "first"]);
    d
}

fn ouro_run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ouro"))
        .arg("run")
        .args(args)
        .current_dir(dir)
        .env("OURO_LOG", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const TWO_JOBS: &str = "on: push
jobs:
  build:
    steps:
      - run: echo built-$(cat version.txt)
  test:
    needs: build
    steps:
      - run: echo tested
";

#[test]
fn a_two_job_pipeline_exits_0_and_prints_both_jobs() {
    let d = repo(&[
        (".ouro/pipelines/ci.yml", TWO_JOBS),
        ("version.txt", "1.0\n"),
    ]);
    let o = ouro_run(d.path(), &["--slots", "2"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("[build] built-1.0"), "{out}");
    assert!(out.contains("[test] tested"), "{out}");
    assert!(out.contains("build  success"), "{out}");
    assert!(out.contains("test  success"), "{out}");
    assert!(out.contains("run ci: success"), "{out}");
    assert!(!out.contains("uncommitted"), "{out}");

    // A dirty work tree: a note, and the jobs see the committed state.
    std::fs::write(d.path().join("version.txt"), "2.0\n").unwrap();
    let o = ouro_run(d.path(), &["--quiet"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("uncommitted changes"), "{out}");
    assert!(!out.contains("built-"), "--quiet hides logs: {out}");
}

#[test]
fn a_failing_job_exits_1() {
    let d = repo(&[(
        ".ouro/pipelines/ci.yml",
        "jobs:\n  build:\n    steps:\n      - run: echo broken; exit 3\n  test:\n    needs: build\n    steps:\n      - run: echo tested\n",
    )]);
    let o = ouro_run(d.path(), &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("build  failure"), "{out}");
    assert!(out.contains("test  skipped"), "{out}");
    assert!(!out.contains("[test] tested"), "{out}");
    assert!(out.contains("run ci: failure"), "{out}");
}

#[test]
fn an_invalid_pipeline_exits_1_with_the_diagnostic_line() {
    let d = repo(&[(
        ".ouro/pipelines/ci.yml",
        "jobs:\n  build:\n    stpes:\n      - run: make\n",
    )]);
    let o = ouro_run(d.path(), &[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains(".ouro/pipelines/ci.yml:3:5: error[pipeline.unknown_key]"),
        "{out}"
    );
    assert!(out.contains("nothing was run"), "{out}");
}

#[test]
fn job_runs_only_the_chain_it_needs() {
    let d = repo(&[(
        ".ouro/pipelines/ci.yml",
        "jobs:
  a:
    steps: [{run: echo ran-a}]
  b:
    needs: a
    steps: [{run: echo ran-b}]
  c:
    needs: a
    steps: [{run: echo ran-c}]
  d:
    steps: [{run: echo ran-d}]
",
    )]);
    let o = ouro_run(d.path(), &["--job", "b"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("ran-a") && out.contains("ran-b"), "{out}");
    assert!(!out.contains("ran-c") && !out.contains("ran-d"), "{out}");

    let o = ouro_run(d.path(), &["--job", "nope"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = ouro_run(d.path(), &["--slots", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn outside_a_repository_is_a_usage_error() {
    let d = tempfile::tempdir().unwrap();
    let o = ouro_run(d.path(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn manual_event_with_inputs() {
    let d = repo(&[(
        ".ouro/pipelines/release.yml",
        "on:
  manual:
    inputs:
      level:
        type: choice
        options: [low, high]
jobs:
  go:
    steps:
      - run: echo level=${{ inputs.level }}
",
    )]);
    // Not a push pipeline: nothing to run.
    let o = ouro_run(d.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing to run"), "{}", text(&o));
    let o = ouro_run(d.path(), &["--event", "manual", "--input", "level=high"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("[go] level=high"), "{}", text(&o));
    let o = ouro_run(d.path(), &["--event", "manual", "--input", "level=mid"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

/// `executor: sandbox` runs that job in bubblewrap on the developer's machine too: the host is
/// read-only and, with `network: false`, only `lo` exists; the other job runs as it always did.
#[test]
fn a_job_that_asks_for_the_sandbox_runs_in_it_locally() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().canonicalize().unwrap();
    let probe = |name: &str| {
        format!(
            "if touch '{}/{name}' 2>/dev/null; then echo {name}-writable; else echo {name}-read-only; fi",
            outside.display()
        )
    };
    let pipeline = format!(
        "on: push
jobs:
  boxed:
    executor: sandbox
    network: false
    steps:
      - run: {}
      - run: |
          {interfaces}
  plain:
    steps:
      - run: {}
",
        probe("boxed"),
        probe("plain"),
        interfaces = crate::PRINT_INTERFACES,
    );
    let r = repo(&[(".ouro/pipelines/ci.yml", &pipeline)]);
    let o = ouro_run(r.path(), &["--slots", "2"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("[boxed] boxed-read-only"), "{out}");
    assert!(out.contains("[boxed] interfaces: lo \n"), "{out}");
    assert!(out.contains("[plain] plain-writable"), "{out}");
    assert!(!outside.join("boxed").exists());
}
