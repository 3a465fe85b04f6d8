//! `ouro test-report parse`: the contract JSON, the text summary, exit codes and error lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(rel: &str) -> String {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ouro-test/tests/fixtures")
        .join(rel);
    p.to_str().unwrap().to_string()
}

fn ouro(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ouro"))
        .args(["test-report", "parse"])
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

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    let out = stdout(o);
    // Exactly one JSON object on standard output.
    let mut it = serde_json::Deserializer::from_str(&out).into_iter::<serde_json::Value>();
    let v = it.next().expect("one JSON value").unwrap();
    assert!(it.next().is_none(), "more than one JSON value: {out}");
    assert!(v.is_object());
    v
}

fn int(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} is not an integer in {v}"))
}

#[test]
fn json_counts_each_case_once_by_its_last_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let o = ouro(dir.path(), &["--json", &fixture("nextest/junit.xml")]);
    let v = json(&o);
    assert_eq!(
        ["total", "passed", "failed", "skipped", "errored", "flaky"].map(|k| int(&v, k)),
        [5, 3, 2, 0, 0, 1]
    );
    assert!(v.get("coverage").is_none());
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    let flaky = cases
        .iter()
        .find(|c| c["name"] == "tests::flaky_counter")
        .unwrap();
    assert_eq!(flaky["suite"], "demo");
    assert_eq!(flaky["class"], "demo");
    assert_eq!(flaky["key"], "demo/demo/tests::flaky_counter");
    assert_eq!(flaky["outcome"], "passed");
    assert_eq!(flaky["attempts"], 2);
    assert_eq!(flaky["flaky"], true);
    assert_eq!(flaky["duration_ms"], 5);
    assert_eq!(
        flaky["message"],
        "thread 'tests::flaky_counter' (1439) panicked at src/lib.rs:31:9"
    );
    let failed = cases
        .iter()
        .find(|c| c["name"] == "tests::subtracts_wrongly")
        .unwrap();
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["flaky"], false);
}

#[test]
fn several_files_and_coverage_make_one_object() {
    let dir = tempfile::tempdir().unwrap();
    let o = ouro(
        dir.path(),
        &[
            "--json",
            &fixture("pytest/junit.xml"),
            &fixture("pytest/coverage.xml"),
            &fixture("surefire/TEST-com.example.CalculatorTest.xml"),
            &fixture("surefire/TEST-com.example.ParserTest.xml"),
            &fixture("lcov/merged.info"),
        ],
    );
    let v = json(&o);
    // pytest 8 tests (1 flaky) + Surefire 7 tests (1 flaky).
    assert_eq!(
        ["total", "passed", "failed", "skipped", "errored", "flaky"].map(|k| int(&v, k)),
        [15, 9, 2, 2, 2, 2]
    );
    let cov = &v["coverage"];
    // pytest-cov 8/10 lines, 3/4 branches; LCOV 10/13 lines, 1/2 branches.
    assert_eq!(int(cov, "lines_covered"), 18);
    assert_eq!(int(cov, "lines_total"), 23);
    assert_eq!(int(cov, "branches_covered"), 4);
    assert_eq!(int(cov, "branches_total"), 6);
    assert_eq!(cov["files"].as_array().unwrap().len(), 3);
}

#[test]
fn coverage_alone_has_zero_tests() {
    let dir = tempfile::tempdir().unwrap();
    let v = json(&ouro(
        dir.path(),
        &["--json", &fixture("lcov/jest-lcov.info")],
    ));
    assert_eq!(int(&v, "total"), 0);
    assert_eq!(v["cases"], serde_json::json!([]));
    assert_eq!(int(&v["coverage"], "lines_covered"), 4);
    assert_eq!(v["coverage"]["line_percent"], 66.67);
}

#[test]
fn the_text_summary_lists_failures_and_flaky_tests() {
    let dir = tempfile::tempdir().unwrap();
    let o = ouro(
        dir.path(),
        &[
            &fixture("gotestsum/junit.xml"),
            &fixture("pytest/coverage.xml"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("7 tests: 3 passed, 2 failed, 1 errored, 1 skipped (1 flaky)\n"),
        "{out}"
    );
    assert!(
        out.contains("  FAILED example.com/calc/example.com/calc/TestDivide/by_zero [2 attempts]\n      Failed\n"),
        "{out}"
    );
    assert!(
        out.contains("  ERRORED example.com/calc/broken//example.com/calc/broken\n"),
        "{out}"
    );
    assert!(
        out.contains("Flaky (passed on retry):\n  example.com/calc/example.com/calc/TestNetwork passed on attempt 2\n"),
        "{out}"
    );
    assert!(
        out.contains("Coverage: lines 8/10 (80.00%), branches 3/4 (75.00%) in 1 files"),
        "{out}"
    );
}

#[test]
fn a_file_that_does_not_parse_exits_2_with_a_positioned_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.xml"),
        "<testsuite name=\"s\">\n  <testcase name=\"a\">\n  </testsuite>\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("cov.info"), "SF:a.rs\nDA:x,1\n").unwrap();
    let good = fixture("nextest/junit.xml");
    let o = ouro(dir.path(), &["--json", &good, "bad.xml", "cov.info"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        "bad.xml:3:3: error[test.xml_malformed]: malformed XML: ill-formed document: expected `</testcase>`, but `</testsuite>` was found\n\
         cov.info:2:4: error[test.coverage_malformed]: `DA:` has an invalid line number: `x`\n"
    );
    // Failing tests are not a parse error: exit 0.
    let o = ouro(dir.path(), &[&good]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = ouro(dir.path(), &["missing.xml"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "error: cannot read missing.xml: no such file\n");
    let o = ouro(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = ouro(dir.path(), &["--json", "."]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("it is a directory"), "{}", stderr(&o));
}
