//! `ouro lint`: the contract line format on stdout, the rustc-style form on stderr, exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn lint(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ouro"))
        .arg("lint")
        .args(args)
        .current_dir(dir)
        .env("OURO_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

const GOOD: &str = "on: push\njobs:\n  build:\n    steps:\n      - run: make\n";
const BAD: &str = "on: push
jobs:
  build:
    runs-on: linux
    stpes:
      - run: make
  test:
    needs: biuld
    steps:
      - uses: actions/checkout@v4
";

#[test]
fn a_valid_file_exits_0_with_nothing_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ci.yml"), GOOD).unwrap();
    let o = lint(dir.path(), &["ci.yml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("ok: 1 pipeline file checked"));
}

#[test]
fn errors_exit_1_with_one_contract_line_each() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yml"), BAD).unwrap();
    std::fs::write(dir.path().join("good.yml"), GOOD).unwrap();
    let o = lint(dir.path(), &["good.yml", "bad.yml"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "bad.yml:5:5: error[pipeline.unknown_key]: unknown key `stpes` in `build`
bad.yml:8:12: error[pipeline.needs_unknown]: job `test` needs `biuld`, which is not a job of this pipeline
bad.yml:10:9: error[pipeline.uses_unsupported]: actions are not supported yet; use `run:`
"
    );
    // Every stdout line has the contract shape FILE:LINE:COL: error[CODE]: message.
    for line in stdout(&o).lines() {
        let mut parts = line.splitn(4, ':');
        assert_eq!(parts.next(), Some("bad.yml"));
        assert!(parts.next().unwrap().parse::<u32>().is_ok(), "{line}");
        assert!(parts.next().unwrap().parse::<u32>().is_ok(), "{line}");
        assert!(
            parts.next().unwrap().starts_with(" error[pipeline."),
            "{line}"
        );
    }
    let err = stderr(&o);
    assert!(
        err.contains(
            "error[pipeline.unknown_key]: unknown key `stpes` in `build`\n --> bad.yml:5:5\n  |\n5 |     stpes:\n  |     ^^^^^ unknown key\n  |\n  = help: did you mean `steps`?\n"
        ),
        "{err}"
    );
    assert!(err.contains("= help: did you mean `build`?"), "{err}");
    assert!(err.contains("error: 3 errors in 1 of 2 files"), "{err}");
}

#[test]
fn without_files_it_lints_the_checkouts_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(".ouro/pipelines");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("a.yml"), GOOD).unwrap();
    std::fs::write(p.join("b.yml"), "jobs:\n  x:\n    steps: []\n").unwrap();
    std::fs::write(p.join("notes.txt"), "not a pipeline: [").unwrap();
    let o = lint(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        ".ouro/pipelines/b.yml:3:12: error[pipeline.no_steps]: job `x` has no steps\n"
    );
    std::fs::write(p.join("b.yml"), GOOD).unwrap();
    let o = lint(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("ok: 2 pipeline files checked"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = lint(dir.path(), &["missing.yml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("error: cannot read missing.yml: no such file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "");
    let o = lint(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no .ouro/pipelines/ directory here"));
    std::fs::create_dir_all(dir.path().join(".ouro/pipelines")).unwrap();
    let o = lint(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("has no *.yml file"));
    let o = lint(dir.path(), &["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn not_utf8_and_yaml_bombs_are_errors_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("latin1.yml"), b"name: caf\xe9\njobs: {}\n").unwrap();
    let o = lint(dir.path(), &["latin1.yml"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "latin1.yml:1:10: error[pipeline.not_utf8]: the file is not valid UTF-8 (byte 0xe9 at offset 9)\n"
    );
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, c) in "bcdefghij".chars().enumerate() {
        let prev = (b'a' + i as u8) as char;
        bomb.push_str(&format!(
            "{c}: &{c} [{}]\n",
            vec![format!("*{prev}"); 10].join(", ")
        ));
    }
    bomb.push_str("jobs: *j\n");
    std::fs::write(dir.path().join("bomb.yml"), bomb).unwrap();
    let o = lint(dir.path(), &["bomb.yml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("error[pipeline.yaml_budget]"),
        "{}",
        stdout(&o)
    );
}

const GOOD_SERVICES: &str = "services:\n  web:\n    run: ./bin/web\n    health: {readiness: {http: /healthz}}\n    route:\n      staging: {listen: \"127.0.0.1:8081\"}\n";
const BAD_SERVICES: &str =
    "services:\n  web:\n    replica: 2\n    run: ./web\n    stop: {signal: TREM}\n";
const GOOD_ENVIRONMENTS: &str = "environments:\n  dev: {}\n  staging:\n    after: dev\n";
const BAD_ENVIRONMENTS: &str = "environments:\n  dev: {}\n  staging:\n    aprovals: {}\n";

#[test]
fn services_and_environments_files_are_checked_by_their_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yml"), GOOD_SERVICES).unwrap();
    std::fs::write(dir.path().join("environments.yaml"), GOOD_ENVIRONMENTS).unwrap();
    let o = lint(dir.path(), &["services.yml", "environments.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert!(
        stderr(&o).contains("ok: 1 services file and 1 environments file checked, no problems"),
        "{}",
        stderr(&o)
    );

    // The same texts as pipeline files are refused: the name picks the checker.
    std::fs::write(dir.path().join("web.yml"), GOOD_SERVICES).unwrap();
    let o = lint(dir.path(), &["web.yml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("error[pipeline."), "{}", stdout(&o));

    std::fs::write(dir.path().join("services.yaml"), BAD_SERVICES).unwrap();
    std::fs::write(dir.path().join("environments.yml"), BAD_ENVIRONMENTS).unwrap();
    let o = lint(dir.path(), &["services.yaml", "environments.yml"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "services.yaml:3:5: error[deploy.svc_unknown_key]: unknown key `replica` in service `web`
services.yaml:5:20: error[deploy.svc_unknown_signal]: unknown stop signal `TREM`
environments.yml:4:5: error[release.env_unknown_key]: unknown key `aprovals` in environment `staging`
"
    );
    let err = stderr(&o);
    assert!(
        err.contains(
            "error[deploy.svc_unknown_key]: unknown key `replica` in service `web`\n --> services.yaml:3:5\n  |\n3 |     replica: 2\n  |     ^^^^^^^ unknown key\n  |\n  = help: did you mean `replicas`?\n"
        ),
        "{err}"
    );
    assert!(err.contains("= help: did you mean `TERM`?"), "{err}");
    assert!(err.contains("= help: did you mean `approvals`?"), "{err}");
    assert!(err.contains("error: 3 errors in 2 of 2 files"), "{err}");
}

#[test]
fn without_files_it_also_lints_services_and_environments() {
    let dir = tempfile::tempdir().unwrap();
    let ouro = dir.path().join(".ouro");
    std::fs::create_dir_all(ouro.join("pipelines")).unwrap();
    std::fs::write(ouro.join("pipelines/ci.yml"), GOOD).unwrap();
    std::fs::write(ouro.join("services.yml"), GOOD_SERVICES).unwrap();
    std::fs::write(ouro.join("environments.yml"), GOOD_ENVIRONMENTS).unwrap();
    let o = lint(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "ok: 1 pipeline file, 1 services file and 1 environments file checked, no problems"
        ),
        "{}",
        stderr(&o)
    );

    std::fs::write(ouro.join("services.yml"), BAD_SERVICES).unwrap();
    std::fs::write(ouro.join("environments.yml"), BAD_ENVIRONMENTS).unwrap();
    let o = lint(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        ".ouro/services.yml:3:5: error[deploy.svc_unknown_key]: unknown key `replica` in service `web`
.ouro/services.yml:5:20: error[deploy.svc_unknown_signal]: unknown stop signal `TREM`
.ouro/environments.yml:4:5: error[release.env_unknown_key]: unknown key `aprovals` in environment `staging`
"
    );
    assert!(stderr(&o).contains("error: 3 errors in 2 of 3 files"));

    // Without a pipelines directory the services file alone is checked.
    std::fs::remove_dir_all(ouro.join("pipelines")).unwrap();
    std::fs::remove_file(ouro.join("environments.yml")).unwrap();
    std::fs::write(ouro.join("services.yml"), GOOD_SERVICES).unwrap();
    let o = lint(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("ok: 1 services file checked, no problems"));
}

#[test]
fn broken_services_and_environments_files_are_errors_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("environments.yml"),
        b"environments:\n  d\xe9v: {}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("services.yml"), "services: [\n").unwrap();
    let o = lint(dir.path(), &["environments.yml", "services.yml"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0],
        "environments.yml:2:4: error[release.env_syntax]: the file is not valid UTF-8 (byte 0xe9 at offset 17)"
    );
    assert!(
        lines[1].starts_with("services.yml:") && lines[1].contains(": error[deploy.svc_syntax]: "),
        "{out}"
    );
}
