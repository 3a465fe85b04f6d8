//! Test results end to end: a pushed pipeline writes a JUnit report and an LCOV file, the
//! in-process runner uploads them, the server ingests them when the job ends, and the API and the
//! pages show totals, failures, flaky tests, history and coverage; a broken report annotates the
//! job log with FILE:LINE:COL; the quality gate fails the job with a sentence and posts
//! `ouro/quality/<job>`; a quarantined failure no longer fails the gate.

use std::path::PathBuf;

use crate::code_hosting::{Git, app_checkout};
use crate::support::*;
use ouro_build::runs;
use reqwest::Method;
use serde_json::json;

const RUNS: &str = "/api/v1/projects/demo/pipelines";
const REPO: &str = "/api/v1/projects/demo/repos/app";

fn log_text(s: &TestServer, job_id: i64, attempt: i64) -> String {
    let dir = runs::log_dir(&s.state.settings.data_dir, job_id, attempt);
    String::from_utf8_lossy(
        &ouro_build::logs::LogReader::open(&dir)
            .unwrap()
            .read_all()
            .unwrap(),
    )
    .to_string()
}

const PIPELINE: &str = r#"name: CI
on:
  push:
    branches: [main]
jobs:
  test:
    quality:
      max-failures: 0
      min-coverage: 50
    artifacts:
      reports:
        junit: [report.xml]
        coverage: lcov.info
    steps:
      - run: |
          cat > report.xml <<'EOF'
          <?xml version="1.0" encoding="UTF-8"?>
          <testsuites>
            <testsuite name="calc" tests="5" failures="2" skipped="1">
              <testcase classname="calc.Add" name="adds" time="0.010"/>
              <testcase classname="calc.Add" name="overflows" time="0.250">
                <failure message="expected 0, got 1" type="AssertionError">assert 0 == 1</failure>
              </testcase>
              <testcase classname="calc.Add" name="later" time="0.001"><skipped/></testcase>
              <testcase classname="calc.Net" name="retries" time="0.100">
                <failure message="timeout">first attempt</failure>
              </testcase>
              <testcase classname="calc.Net" name="retries" time="0.090"/>
            </testsuite>
          </testsuites>
          EOF
          printf 'SF:src/lib.rs\nDA:1,1\nDA:2,1\nDA:3,0\nDA:4,1\nend_of_record\n' > lcov.info
  broken:
    artifacts:
      reports:
        junit: [bad.xml]
    steps:
      - run: printf '<testsuite name="x">\n  <testcase name="a">\n</testsuite>\n' > bad.xml
"#;

async fn push(s: &TestServer) -> (Git, PathBuf, String) {
    s.demo_project().await;
    let (git, work, _) = app_checkout(s).await;
    std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
    let head = git
        .commit(&work, ".ouro/pipelines/ci.yml", PIPELINE, "Add CI")
        .await;
    git.run(&work, &["push", "-q", "origin", "main"]).await;
    (git, work, head)
}

#[tokio::test]
async fn reports_are_ingested_shown_gated_and_quarantine_lifts_the_gate() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        let (git, work, head) = push(&s).await;
        let run = run_finished(&s, 1).await;

        // The gate failed the job whose steps passed, with a sentence naming threshold and value.
        let t = job_of(&run, "test");
        assert_eq!(t["status"], "failure", "{run}");
        assert_eq!(
            t["reason"], "quality gate: max-failures 0 failed: 1 test(s) failed",
            "{run}"
        );
        let log = log_text(&s, t["id"].as_i64().unwrap(), 1);
        assert!(log.contains("reports: uploaded 1 junit file(s)"), "{log}");
        assert!(
            log.contains("tests: 4 total, 2 passed, 1 failed, 0 errored, 1 skipped, 1 flaky"),
            "{log}"
        );
        assert!(log.contains("line coverage 75.0% (3/4)"), "{log}");
        assert!(
            log.contains("quality: min-coverage 50 passed: line coverage is 75%"),
            "{log}"
        );
        // A named commit status the merge gate can require.
        let sts = eventually(&s, &format!("{REPO}/commits/{head}/statuses"), |b| {
            b.as_array()
                .is_some_and(|a| a.iter().any(|x| x["name"] == "ouro/quality/test"))
        })
        .await;
        let q = sts
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "ouro/quality/test")
            .unwrap();
        assert_eq!(q["state"], "failure", "{sts}");

        // The broken report: the job log names FILE:LINE:COL and the code; the run shows it.
        let b = job_of(&run, "broken");
        assert_eq!(b["status"], "success", "{run}");
        let blog = log_text(&s, b["id"].as_i64().unwrap(), 1);
        assert!(blog.contains("reports: bad.xml:3:"), "{blog}");
        assert!(blog.contains("error[test."), "{blog}");

        // The API: totals, failures first with message and type, flaky, skipped, slowest.
        let (st, tests) = s.admin(Method::GET, &format!("{RUNS}/1/tests"), None).await;
        assert_eq!(st, 200, "{tests}");
        assert_eq!(tests["totals"]["total"], 4, "{tests}");
        assert_eq!(tests["totals"]["failed"], 1, "{tests}");
        assert_eq!(tests["totals"]["flaky"], 1, "{tests}");
        assert_eq!(tests["coverage_percent"], 75.0, "{tests}");
        let f = &tests["failures"][0];
        assert_eq!(f["name"], "overflows", "{tests}");
        assert_eq!(f["message"], "expected 0, got 1", "{tests}");
        assert_eq!(f["type"], "AssertionError", "{tests}");
        assert_eq!(f["new_failure"], true, "{tests}");
        assert_eq!(tests["flaky"][0]["name"], "retries", "{tests}");
        assert_eq!(tests["flaky"][0]["attempts"], 2, "{tests}");
        assert_eq!(tests["skipped"][0]["name"], "later", "{tests}");
        assert_eq!(tests["slowest"][0]["name"], "overflows", "{tests}");
        let broken = tests["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == "broken")
            .expect("the broken job reported a problem");
        assert_eq!(broken["problems"][0]["file"], "bad.xml", "{tests}");
        assert_eq!(broken["problems"][0]["line"], 3, "{tests}");
        let gate = &tests["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == "test")
            .unwrap()["gate"];
        assert_eq!(gate["passed"], false, "{tests}");

        // Coverage per file.
        let (_, cov) = s
            .admin(Method::GET, &format!("{RUNS}/1/coverage"), None)
            .await;
        assert_eq!(cov["files"][0]["path"], "src/lib.rs", "{cov}");
        assert_eq!(cov["files"][0]["lines_covered"], 3, "{cov}");

        // The flaky test is listed once, with its cause.
        let (_, flaky) = s
            .admin(Method::GET, "/api/v1/projects/demo/tests/flaky", None)
            .await;
        let list = flaky["flaky"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{flaky}");
        assert_eq!(list[0]["case"]["name"], "retries", "{flaky}");
        assert_eq!(list[0]["cause"], "retry", "{flaky}");
        assert_eq!(list[0]["score"], 100, "{flaky}");

        // History of the failing test.
        let id = f["case_id"].as_i64().unwrap();
        let (st, h) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/tests/cases/{id}"),
                None,
            )
            .await;
        assert_eq!(st, 200, "{h}");
        assert_eq!(h["entries"].as_array().unwrap().len(), 1, "{h}");
        assert_eq!(h["first_failure"]["run"], 1, "{h}");
        assert!(h["last_success"].is_null(), "{h}");
        let (st, nf) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/tests/cases/999999",
                None,
            )
            .await;
        assert_eq!(st, 404, "{nf}");
        assert_eq!(error_code(&nf), "test.case_not_found");

        // Quarantine: validated, then the failure no longer fails the gate on the next run.
        let qpath = format!("/api/v1/projects/demo/tests/cases/{id}/quarantine");
        let (st, bad) = s
            .admin(Method::PUT, &qpath, Some(json!({"reason": "", "days": 3})))
            .await;
        assert_eq!(st, 422, "{bad}");
        let (st, bad) = s
            .admin(
                Method::PUT,
                &qpath,
                Some(json!({"reason": "x", "days": 91})),
            )
            .await;
        assert_eq!(st, 422, "{bad}");
        let (st, qu) = s
            .admin(
                Method::PUT,
                &qpath,
                Some(json!({"reason": "overflow is tracked in DEMO-1", "days": 7})),
            )
            .await;
        assert_eq!(st, 200, "{qu}");
        assert_eq!(qu["reason"], "overflow is tracked in DEMO-1");
        let head2 = git.commit(&work, "README.md", "again\n", "Again").await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run2 = run_finished(&s, 2).await;
        assert_eq!(job_of(&run2, "test")["status"], "success", "{run2}");
        let (_, t2) = s.admin(Method::GET, &format!("{RUNS}/2/tests"), None).await;
        assert_eq!(t2["failures"][0]["quarantined"], true, "{t2}");
        // Compared with run 1 on the same branch: not a new failure any more.
        assert_eq!(t2["failures"][0]["new_failure"], false, "{t2}");
        let sts = eventually(&s, &format!("{REPO}/commits/{head2}/statuses"), |b| {
            b.as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["name"] == "ouro/quality/test" && x["state"] == "success")
            })
        })
        .await;
        assert!(sts.is_array());
        let (_, h2) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/tests/cases/{id}"),
                None,
            )
            .await;
        assert_eq!(h2["entries"].as_array().unwrap().len(), 2, "{h2}");
        assert_eq!(h2["first_failure"]["run"], 1, "{h2}");
        assert!(h2["next_before"].is_null(), "{h2}");
        // Paged: one result per page, the older page through `before`; the streak is the
        // whole history's on every page.
        let (st, p1) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/tests/cases/{id}?limit=1"),
                None,
            )
            .await;
        assert_eq!(st, 200, "{p1}");
        assert_eq!(p1["entries"].as_array().unwrap().len(), 1, "{p1}");
        assert_eq!(p1["entries"][0], h2["entries"][0], "{p1}");
        assert_eq!(p1["first_failure"]["run"], 1, "{p1}");
        let before = p1["next_before"].as_i64().unwrap();
        assert_eq!(before, p1["entries"][0]["id"].as_i64().unwrap());
        let (_, p2) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/tests/cases/{id}?limit=1&before={before}"),
                None,
            )
            .await;
        assert_eq!(p2["entries"][0], h2["entries"][1], "{p2}");
        assert!(p2["next_before"].is_null(), "{p2}");
        let (st, bad) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/tests/cases/{id}?before=x"),
                None,
            )
            .await;
        assert_eq!(st, 400, "{bad}");
        let (_, html) = s
            .admin_page(&format!("/projects/demo/tests/cases/{id}?limit=1"))
            .await;
        let older = format!("/projects/demo/tests/cases/{id}?before={before}&amp;limit=1");
        assert!(html.contains(&older), "{html}");
        assert!(!html.contains("id=\"history-newest\""), "{html}");
        let (_, html) = s
            .admin_page(&format!(
                "/projects/demo/tests/cases/{id}?before={before}&limit=1"
            ))
            .await;
        assert!(html.contains("id=\"history-newest\""), "{html}");
        assert!(!html.contains("id=\"history-older\""), "{html}");
        assert_eq!(html.matches("<tr class=\"test-").count(), 1, "{html}");
        assert_eq!(h2["quarantine"]["reason"], "overflow is tracked in DEMO-1");
        let (st, _) = s.admin(Method::DELETE, &qpath, None).await;
        assert_eq!(st, 204);
        let (st, _) = s.admin(Method::DELETE, &qpath, None).await;
        assert_eq!(st, 404);
        // The page's quarantine button.
        let (st, loc, _) = s
            .admin_form(
                &format!("/projects/demo/tests/cases/{id}/quarantine"),
                form_body(&[("reason", "flaky on CI"), ("days", "3")]),
            )
            .await;
        assert_eq!(st, 303);
        assert_eq!(loc, format!("/projects/demo/tests/cases/{id}"));
        let (_, html) = s
            .admin_page(&format!("/projects/demo/tests/cases/{id}"))
            .await;
        assert!(html.contains("id=\"quarantined\""), "{html}");
        assert!(html.contains("flaky on CI"), "{html}");
        let (_, ql) = s
            .admin(Method::GET, "/api/v1/projects/demo/tests/quarantine", None)
            .await;
        assert_eq!(ql["quarantined"][0]["case"]["id"], id, "{ql}");

        // The pages: the run's Tests page (new failure first, the problem, the gate), the
        // history page with its sparkline and quarantine form, the flaky list.
        let (st, html) = s.admin_page("/projects/demo/pipelines/1/tests").await;
        assert_eq!(st, 200);
        assert!(html.contains("id=\"test-failures\""), "{html}");
        assert!(html.contains("calc/calc.Add/overflows"), "{html}");
        assert!(html.contains("bad.xml:3:"), "{html}");
        assert!(
            html.contains("max-failures 0 failed: 1 test(s) failed"),
            "{html}"
        );
        assert!(!html.contains("style="), "no inline styles");
        let (_, run_html) = s.admin_page("/projects/demo/pipelines/1").await;
        assert!(run_html.contains("id=\"tests-link\""));
        let (st, html) = s
            .admin_page(&format!("/projects/demo/tests/cases/{id}"))
            .await;
        assert_eq!(st, 200);
        assert_eq!(
            html.matches("<rect class=\"spark-failed\"").count(),
            2,
            "{html}"
        );
        assert!(html.contains("id=\"unquarantine\""), "{html}");
        assert!(html.contains("id=\"first-failure\""), "{html}");
        let (st, html) = s.admin_page("/projects/demo/tests/flaky").await;
        assert_eq!(st, 200);
        assert!(html.contains("calc/calc.Net/retries"), "{html}");
        let (st, _) = s.admin_page("/projects/demo/tests/cases/999999").await;
        assert_eq!(st, 404);

        // Coverage trend of main.
        let (_, trend) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/tests/coverage?ref=main",
                None,
            )
            .await;
        assert_eq!(trend["points"].as_array().unwrap().len(), 2, "{trend}");
        assert_eq!(trend["points"][0]["run"], 1, "{trend}");
        s.stop().await;
    }
}

pub(crate) const CR_PIPELINE: &str = r#"name: CR
on:
  change_request: {}
jobs:
  check:
    quality:
      min-diff-coverage: 80
    artifacts:
      reports:
        junit: [report.xml]
        coverage: lcov.info
    steps:
      - run: |
          printf '<testsuite name="s"><testcase classname="c" name="t1"><failure message="boom"/></testcase><testcase classname="c" name="t2"/></testsuite>\n' > report.xml
          printf 'SF:src/lib.rs\nDA:1,1\nDA:2,1\nDA:3,1\nDA:4,0\nend_of_record\n' > lcov.info
"#;

#[tokio::test]
async fn a_change_request_shows_new_failures_and_uncovered_changed_lines_and_its_gate_fails() {
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        std::fs::create_dir_all(work.join("src")).unwrap();
        git.commit(&work, ".ouro/pipelines/cr.yml", CR_PIPELINE, "CI")
            .await;
        git.commit(&work, "src/lib.rs", "one\ntwo\n", "Lib").await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        git.run(&work, &["checkout", "-q", "-b", "feature"]).await;
        let head = git
            .commit(&work, "src/lib.rs", "one\ntwo\nthree\nfour\n", "More")
            .await;
        git.run(&work, &["push", "-q", "origin", "feature"]).await;
        let (st, cr) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests"),
                Some(json!({"source": "feature", "target": "main", "title": "More"})),
            )
            .await;
        assert_eq!(st, 201, "{cr}");
        // The change request's run (pushes of a change-request-only pipeline may record runs
        // that do nothing).
        let list = eventually(&s, RUNS, |b| {
            b["runs"].as_array().is_some_and(|r| {
                r.iter().any(|x| {
                    x["cr_number"] == 1
                        && matches!(x["status"].as_str(), Some("success" | "failure"))
                })
            })
        })
        .await;
        let number = list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["cr_number"] == 1)
            .unwrap()["number"]
            .as_i64()
            .unwrap();
        let run = run_finished(&s, number).await;
        let check = job_of(&run, "check");
        assert_eq!(check["status"], "failure", "{run}");
        assert_eq!(
            check["reason"],
            "quality gate: min-diff-coverage 80 failed: 50% of the changed lines are covered (1 of 2)",
            "{run}"
        );
        let (st, t) = s
            .admin(
                Method::GET,
                &format!("{REPO}/change-requests/1/tests"),
                None,
            )
            .await;
        assert_eq!(st, 200, "{t}");
        assert_eq!(t["run"], number, "{t}");
        assert_eq!(t["tests"]["new_failures"][0]["name"], "t1", "{t}");
        assert_eq!(t["diff_coverage"]["covered"], 1, "{t}");
        assert_eq!(t["diff_coverage"]["total"], 2, "{t}");
        assert_eq!(
            t["diff_coverage"]["uncovered"],
            json!([{"path": "src/lib.rs", "lines": [4]}]),
            "{t}"
        );
        let (st, nf) = s
            .admin(
                Method::GET,
                &format!("{REPO}/change-requests/9/tests"),
                None,
            )
            .await;
        assert_eq!(st, 404, "{nf}");
        // The CR page loads the summary; the summary lists the new failure and line 4.
        let (_, page) = s
            .admin_page("/projects/demo/code/app/change-requests/1")
            .await;
        assert!(
            page.contains("hx-get=\"/projects/demo/code/app/change-requests/1/tests/summary\""),
            "{page}"
        );
        let (st, frag) = s
            .admin_page("/projects/demo/code/app/change-requests/1/tests/summary")
            .await;
        assert_eq!(st, 200);
        assert!(frag.contains("id=\"cr-new-failures\""), "{frag}");
        assert!(frag.contains("c/t1"), "{frag}");
        assert!(
            frag.contains("<span class=\"uncovered-line\">4</span>"),
            "{frag}"
        );
        // The CR diff marks exactly the uncovered changed line (4) and the covered one (3), in
        // both views, with the legend naming the run.
        assert!(page.contains("id=\"cov-legend\""), "{page}");
        assert!(
            page.contains(&format!("Not covered by tests in run <a href=\"/projects/demo/pipelines/{number}/tests\">#{number}</a> (1 changed line)")),
            "{page}"
        );
        assert_eq!(unified_marks(&page, "cov-miss"), vec![4], "{page}");
        assert_eq!(unified_marks(&page, "cov-hit"), vec![3], "{page}");
        let (_, split) = s
            .admin_page("/projects/demo/code/app/change-requests/1?view=split")
            .await;
        assert_eq!(split_marks(&split, "cov-miss"), vec![4], "{split}");
        assert_eq!(split_marks(&split, "cov-hit"), vec![3], "{split}");
        assert!(!split.contains("style="), "no inline styles");
        // A collapsed file loaded on demand (`diff-file`, which the page links with `cr=1`)
        // carries the same marks; without the change request it has none.
        let base = String::from_utf8(
            std::process::Command::new("git")
                .args(["rev-parse", "main"])
                .current_dir(&work)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let file = format!(
            "/projects/demo/code/app/diff-file?base={}&head={head}&view=unified&path=src/lib.rs",
            base.trim()
        );
        let (st, frag) = s.admin_page(&format!("{file}&cr=1")).await;
        assert_eq!(st, 200, "{frag}");
        assert_eq!(unified_marks(&frag, "cov-miss"), vec![4], "{frag}");
        assert_eq!(unified_marks(&frag, "cov-hit"), vec![3], "{frag}");
        let (_, plain) = s.admin_page(&file).await;
        assert!(unified_marks(&plain, "cov-miss").is_empty(), "{plain}");
        let (st, _) = s.admin_page(&format!("{file}&cr=9")).await;
        assert_eq!(st, 404, "an unknown change request");
        // The gate's status is on the CR's head, where the merge gate looks.
        let sts = eventually(&s, &format!("{REPO}/commits/{head}/statuses"), |b| {
            b.as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["name"] == "ouro/quality/check" && x["state"] == "failure")
            })
        })
        .await;
        assert!(sts.is_array());
        // A repository that requires the gate's status cannot merge the change request.
        let (st, b) = s
            .admin(
                Method::PUT,
                &format!("{REPO}/merge-rules"),
                Some(json!({"merge_method": "merge", "required_approvals": 0,
                            "required_checks": ["ouro/quality/check"],
                            "dismiss_stale_approvals": true})),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("{REPO}/change-requests/1/merge"),
                None,
            )
            .await;
        assert_eq!(st, 409, "{b}");
        let conditions = b["error"]["details"]["conditions"].as_array().unwrap();
        let checks = conditions.iter().find(|c| c["id"] == "checks").unwrap();
        assert_eq!(checks["met"], false, "{b}");
        assert!(
            checks["message"]
                .as_str()
                .is_some_and(|d| d.contains("ouro/quality/check is failure")),
            "{b}"
        );
        s.stop().await;
    }
}

/// New-side line numbers of the unified diff rows whose class includes `class`.
fn unified_marks(html: &str, class: &str) -> Vec<u32> {
    html.split("<tr class=\"")
        .skip(1)
        .filter(|chunk| {
            chunk
                .split('"')
                .next()
                .is_some_and(|c| c.split(' ').any(|x| x == class))
        })
        .filter_map(|chunk| {
            let cells: Vec<&str> = chunk
                .split("<td class=\"ln\">")
                .skip(1)
                .take(2)
                .map(|c| c.split("</td>").next().unwrap_or(""))
                .collect();
            cells.get(1).and_then(|n| n.trim().parse().ok())
        })
        .collect()
}

/// Line numbers of the split diff's cells whose class includes `class` (the number cell
/// precedes the code cell).
fn split_marks(html: &str, class: &str) -> Vec<u32> {
    html.split("<td class=\"ln\">")
        .skip(1)
        .filter_map(|chunk| {
            let (num, rest) = chunk.split_once("</td>")?;
            let classes = rest.strip_prefix("<td class=\"")?.split('"').next()?;
            classes
                .split(' ')
                .any(|x| x == class)
                .then(|| num.trim().parse().ok())
                .flatten()
        })
        .collect()
}

/// Whether a real tool this module needs is on this machine (`probe` ran and succeeded). When it
/// is not: a loud skip message, or a failure with `CI=true` (as the browser test does).
fn tool_present(what: &str, program: &str, args: &[&str], install: &str) -> bool {
    let ok = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let msg = format!("the real-tools test needs {what} ({install})");
    if std::env::var("CI").is_ok_and(|c| c == "true") {
        panic!("CI=true and {msg}");
    }
    use std::io::Write;
    let bar = "*".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n*** SKIPPING a real-tools test: {msg} ***\n{bar}\n"
    );
    false
}

/// The Python interpreter that has pytest, pytest-cov and pytest-rerunfailures (its absolute
/// path: a job's environment is clean, so shims that need HOME would not work there).
fn python_with_pytest() -> Option<String> {
    if !tool_present(
        "python3 with pytest, pytest-cov and pytest-rerunfailures",
        "python3",
        &["-c", "import pytest, pytest_cov, pytest_rerunfailures"],
        "Debian: python3-pytest python3-pytest-cov python3-pytest-rerunfailures; or pip install pytest pytest-cov pytest-rerunfailures",
    ) {
        return None;
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn yq(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The real tools' pipeline: a Rust crate tested by cargo-nextest with its JUnit profile, and a
/// Python package tested by pytest with reruns, JUnit and Cobertura coverage from pytest-cov.
/// The job environment is clean: PATH and the toolchain homes of this machine are passed on.
fn real_tools_pipeline(python: &str) -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{home}/.cargo"));
    let rustup_home = std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{home}/.rustup"));
    let path = std::env::var("PATH").unwrap_or_default();
    format!(
        r#"name: Real tools
on:
  push:
    branches: [main]
env:
  PATH: {path}
  CARGO_HOME: {cargo_home}
  RUSTUP_HOME: {rustup_home}
  PYTHON: {python}
jobs:
  rust:
    artifacts:
      reports:
        junit: [rust/target/nextest/ci/junit.xml]
    steps:
      - run: cd rust && cargo nextest run --profile ci --offline
  python:
    quality:
      max-failures: 0
      min-coverage: 50
    artifacts:
      reports:
        junit: [junit.xml]
        coverage: coverage.xml
    steps:
      - run: $PYTHON -m pytest -p no:cacheprovider --reruns 2 --junitxml=junit.xml --cov=. --cov-report=xml:coverage.xml tests/
"#,
        path = yq(&path),
        cargo_home = yq(&cargo_home),
        rustup_home = yq(&rustup_home),
        python = yq(python),
    )
}

const RUST_LIB: &str = r#"pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds() {
        assert_eq!(add(2, 2), 4);
    }

    #[test]
    fn adds_zero() {
        assert_eq!(add(0, 7), 7);
    }
}
"#;

const PY_CALC: &str = "def add(a, b):
    return a + b


def sign(x):
    if x < 0:
        return -1
    return 1


def unused(x):
    y = x * 2
    return y
";

/// `test_flaky_once` fails on its first attempt in a fresh checkout (no marker file yet) and
/// passes on the rerun: a deliberately flaky test.
const PY_TESTS: &str = r#"import pathlib

from calc import add, sign

MARKER = pathlib.Path("flaky.marker")


def test_add():
    assert add(2, 2) == 4


def test_sign():
    assert sign(-3) == -1


def test_flaky_once():
    first = not MARKER.exists()
    MARKER.write_text("seen")
    assert not first, "first attempt fails"
"#;

/// Writes the Rust crate (under `rust/`) and the Python package (at the top, so coverage paths
/// are repository paths) into the checkout.
fn write_real_projects(work: &std::path::Path) {
    for d in ["rust/src", "rust/.config", "calc", "tests"] {
        std::fs::create_dir_all(work.join(d)).unwrap();
    }
    std::fs::write(
        work.join("rust/Cargo.toml"),
        "[package]\nname = \"adder\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    )
    .unwrap();
    std::fs::write(work.join("rust/src/lib.rs"), RUST_LIB).unwrap();
    std::fs::write(
        work.join("rust/.config/nextest.toml"),
        "[profile.ci]\nfail-fast = false\n\n[profile.ci.junit]\npath = \"junit.xml\"\n",
    )
    .unwrap();
    std::fs::write(work.join("calc/__init__.py"), PY_CALC).unwrap();
    std::fs::write(work.join("tests/test_calc.py"), PY_TESTS).unwrap();
    std::fs::write(work.join(".coveragerc"), "[run]\nrelative_files = true\n").unwrap();
    std::fs::write(work.join(".gitignore"), "target/\n__pycache__/\n").unwrap();
}

#[tokio::test]
async fn real_nextest_and_pytest_pipelines_show_reports_history_coverage_and_a_flaky_test() {
    let nextest = tool_present(
        "cargo-nextest",
        "cargo",
        &["nextest", "--version"],
        "cargo install --locked cargo-nextest",
    );
    let Some(python) = python_with_pytest() else {
        return;
    };
    if !nextest {
        return;
    }
    for db in backends() {
        let s = TestServer::with_runner(&db).await;
        s.demo_project().await;
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        write_real_projects(&work);
        git.commit(
            &work,
            ".ouro/pipelines/ci.yml",
            &real_tools_pipeline(&python),
            "Real tools",
        )
        .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run = run_finished(&s, 1).await;
        let rust = job_of(&run, "rust");
        let py = job_of(&run, "python");
        let rlog = log_text(&s, rust["id"].as_i64().unwrap(), 1);
        let plog = log_text(&s, py["id"].as_i64().unwrap(), 1);
        assert_eq!(rust["status"], "success", "{run}\n{rlog}");
        assert_eq!(py["status"], "success", "{run}\n{plog}");
        // nextest's JUnit profile: two tests of the `adder` binary.
        assert!(
            rlog.contains("tests: 2 total, 2 passed, 0 failed, 0 errored, 0 skipped, 0 flaky"),
            "{rlog}"
        );
        // pytest with a rerun: three tests, one flaky (failed once, passed on the rerun);
        // Cobertura from pytest-cov: 6 of the package's 9 lines plus the test file's lines.
        assert!(
            plog.contains("tests: 3 total, 3 passed, 0 failed, 0 errored, 0 skipped, 1 flaky"),
            "{plog}"
        );
        assert!(
            plog.contains("tests: a newly flaky test got the work item DEMO-"),
            "{plog}"
        );
        assert!(plog.contains("quality: min-coverage 50 passed"), "{plog}");

        let (_, tests) = s.admin(Method::GET, &format!("{RUNS}/1/tests"), None).await;
        assert_eq!(tests["totals"]["total"], 5, "{tests}");
        assert_eq!(tests["totals"]["flaky"], 1, "{tests}");
        assert_eq!(tests["flaky"][0]["name"], "test_flaky_once", "{tests}");
        assert_eq!(tests["flaky"][0]["attempts"], 2, "{tests}");
        let keys: Vec<&str> = tests["slowest"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["key"].as_str().unwrap())
            .collect();
        assert!(
            keys.iter().any(|k| k.contains("tests::adds_zero")),
            "{tests}"
        );
        assert!(keys.iter().any(|k| k.contains("test_sign")), "{tests}");
        let (_, cov) = s
            .admin(Method::GET, &format!("{RUNS}/1/coverage"), None)
            .await;
        let calc = cov["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "calc/__init__.py")
            .unwrap_or_else(|| panic!("coverage of calc/__init__.py: {cov}"));
        assert_eq!(calc["lines_total"], 9, "{cov}");
        assert_eq!(calc["lines_covered"], 6, "{cov}");
        assert!(
            calc["lines"].as_array().unwrap().contains(&json!([8, 0])),
            "line 8 (`return 1`) is not covered: {cov}"
        );

        // The flaky test: listed once with its cause and the bug work item Plan filed.
        let (_, flaky) = s
            .admin(Method::GET, "/api/v1/projects/demo/tests/flaky", None)
            .await;
        let list = flaky["flaky"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{flaky}");
        assert_eq!(list[0]["case"]["name"], "test_flaky_once", "{flaky}");
        assert_eq!(list[0]["cause"], "retry", "{flaky}");
        let key = list[0]["work_item"]
            .as_str()
            .expect("a work item")
            .to_string();
        let (st, item) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/items/{key}"),
                None,
            )
            .await;
        assert_eq!(st, 200, "{item}");
        assert_eq!(item["title"], "Flaky test: test_flaky_once", "{item}");
        let case_id = list[0]["case"]["id"].as_i64().unwrap();

        // Quarantined by a maintainer.
        let (st, qu) = s
            .admin(
                Method::PUT,
                &format!("/api/v1/projects/demo/tests/cases/{case_id}/quarantine"),
                Some(json!({"reason": format!("flaky, see {key}"), "days": 7})),
            )
            .await;
        assert_eq!(st, 200, "{qu}");

        // A second run: history across runs; the flaky test is flaky again but gets no second
        // work item.
        git.commit(&work, "README.md", "real tools\n", "Readme")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;
        let run2 = run_finished(&s, 2).await;
        assert_eq!(job_of(&run2, "python")["status"], "success", "{run2}");
        assert_eq!(job_of(&run2, "rust")["status"], "success", "{run2}");
        let (_, flaky) = s
            .admin(Method::GET, "/api/v1/projects/demo/tests/flaky", None)
            .await;
        assert_eq!(flaky["flaky"].as_array().unwrap().len(), 1, "{flaky}");
        assert_eq!(flaky["flaky"][0]["work_item"], key.as_str(), "{flaky}");
        assert_eq!(
            flaky["flaky"][0]["quarantine"]["reason"],
            format!("flaky, see {key}"),
            "{flaky}"
        );
        let (_, items) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/items?label=flaky-test",
                None,
            )
            .await;
        assert_eq!(items["items"].as_array().map(Vec::len), Some(1), "{items}");
        let (_, t2) = s.admin(Method::GET, &format!("{RUNS}/2/tests"), None).await;
        let adds = t2["slowest"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["key"]
                    .as_str()
                    .is_some_and(|k| k.ends_with("tests::adds"))
            })
            .unwrap_or_else(|| panic!("tests::adds in run 2: {t2}"));
        let id = adds["case_id"].as_i64().unwrap();
        let (_, h) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/tests/cases/{id}"),
                None,
            )
            .await;
        let runs: Vec<i64> = h["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["run"].as_i64().unwrap())
            .collect();
        assert_eq!(runs, vec![2, 1], "{h}");
        assert_eq!(h["last_success"]["run"], 2, "{h}");
        let (_, trend) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/tests/coverage?ref=main",
                None,
            )
            .await;
        assert_eq!(trend["points"].as_array().unwrap().len(), 2, "{trend}");
        // The pages show them.
        let (_, html) = s.admin_page("/projects/demo/pipelines/1/tests").await;
        assert!(html.contains("test_flaky_once"), "{html}");
        assert!(html.contains("tests::adds_zero"), "{html}");
        let (_, html) = s.admin_page("/projects/demo/tests/flaky").await;
        assert!(html.contains(&key), "{html}");
        s.stop().await;
    }
}
