//! JUnit XML from each producer, normalised. The snapshots hold the `ouro test-report parse
//! --json` object for each fixture.

use ouro_test::model::{Outcome, Report, Totals};
use ouro_test::parse::{self, Limits};
use ouro_test::summary;

pub fn fixture(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn parse(rel: &str) -> Report {
    parse::junit(rel, &fixture(rel), &Limits::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn totals(total: u64, passed: u64, failed: u64, skipped: u64, errored: u64, flaky: u64) -> Totals {
    Totals {
        total,
        passed,
        failed,
        skipped,
        errored,
        flaky,
    }
}

fn case<'r>(r: &'r Report, key: &str) -> &'r ouro_test::model::Case {
    r.cases().find(|c| c.key == key).unwrap_or_else(|| {
        panic!(
            "no case {key}; have {:?}",
            r.cases().map(|c| &c.key).collect::<Vec<_>>()
        )
    })
}

#[test]
fn nextest_one_suite_per_binary_and_retries_as_attempts() {
    let r = parse("nextest/junit.xml");
    assert_eq!(r.totals(), totals(5, 3, 2, 0, 0, 1));
    assert_eq!(
        r.suites.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["demo", "demo::api"]
    );
    let flaky = case(&r, "demo/demo/tests::flaky_counter");
    assert_eq!(flaky.attempts.len(), 2);
    assert_eq!(flaky.attempts[0].outcome, Outcome::Failed);
    assert_eq!(flaky.attempts[0].duration_ms, Some(10));
    assert!(
        flaky.attempts[0]
            .stderr
            .as_deref()
            .unwrap()
            .contains("attempt 1")
    );
    assert_eq!(flaky.attempts[1].outcome, Outcome::Passed);
    assert_eq!(flaky.duration_ms(), Some(5));
    assert!(flaky.is_flaky());
    // `failure` is the first run, each `rerunFailure` a later one.
    let failed = case(&r, "demo::api/demo::api/panics_with_xml_chars");
    assert_eq!(failed.attempts.len(), 3);
    assert_eq!(
        failed
            .attempts
            .iter()
            .map(|a| a.duration_ms)
            .collect::<Vec<_>>(),
        [Some(19), Some(12), Some(20)]
    );
    assert_eq!(failed.outcome(), Outcome::Failed);
    assert!(!failed.is_flaky());
    let last = failed.attempts.last().unwrap();
    assert!(
        last.details
            .as_deref()
            .unwrap()
            .contains("expected <ok> & got \"err\"")
    );
    assert_eq!(
        last.message.as_deref(),
        Some("thread 'panics_with_xml_chars' (1457) panicked at tests/api.rs:8:5")
    );
    assert_eq!(
        last.kind.as_deref(),
        Some("test failure with exit code 101")
    );
    insta::assert_json_snapshot!("nextest", summary::json(&r, None));
}

#[test]
fn pytest_reruns_are_repeated_testcases_whose_earlier_runs_look_passed() {
    let r = parse("pytest/junit.xml");
    // 13 testcase elements (5 of them reruns) are 8 tests.
    assert_eq!(r.totals(), totals(8, 5, 1, 1, 1, 1));
    let flaky = case(&r, "pytest/tests.test_calc/test_flaky");
    assert_eq!(
        flaky.attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [Outcome::Failed, Outcome::Passed]
    );
    assert!(flaky.is_flaky());
    let broken = case(&r, "pytest/tests.test_calc/test_broken");
    assert_eq!(broken.attempts.len(), 3);
    assert_eq!(broken.outcome(), Outcome::Failed);
    assert_eq!(
        broken.attempts[2].message.as_deref(),
        Some("AssertionError: one and one\nassert 2 == 3\n +  where 2 = add(1, 1)")
    );
    let errored = case(&r, "pytest/tests.test_calc/test_errors");
    assert_eq!(errored.outcome(), Outcome::Errored);
    assert_eq!(errored.attempts.len(), 3);
    let skipped = case(&r, "pytest/tests.test_calc/test_skipped");
    assert_eq!(skipped.outcome(), Outcome::Skipped);
    assert_eq!(
        skipped.attempts[0].message.as_deref(),
        Some("not on this platform")
    );
    case(&r, "pytest/tests.test_calc/test_sign[-2--1]");
    case(&r, "pytest/tests.test_calc.TestGroup/test_in_class");
    insta::assert_json_snapshot!("pytest", summary::json(&r, None));
}

#[test]
fn jest_junit_name_equal_to_classname_and_leading_spaces() {
    let r = parse("jest/junit.xml");
    assert_eq!(r.totals(), totals(5, 3, 1, 1, 0, 0));
    let top = case(&r, "undefined//adds at top level");
    assert_eq!(top.name, "adds at top level");
    assert_eq!(top.class, "");
    let failed = case(&r, "undefined//add fails on purpose");
    // `failure` without `message`: the first line of the body stands in.
    assert_eq!(
        failed.attempts[0].message.as_deref(),
        Some("Error: expect(received).toBe(expected) // Object.is equality")
    );
    // jest.retryTimes() retries are invisible in jest-junit's output: the flaky test looks passed.
    let retried = case(&r, "flaky//flaky passes on the second try");
    assert_eq!(retried.attempts.len(), 1);
    insta::assert_json_snapshot!("jest", summary::json(&r, None));
}

#[test]
fn surefire_one_file_per_class_with_flaky_and_rerun_elements() {
    let files = [
        "surefire/TEST-com.example.CalculatorTest.xml",
        "surefire/TEST-com.example.ParserTest.xml",
    ];
    let r = parse::merge(files.iter().map(|f| parse(f)));
    assert_eq!(r.totals(), totals(7, 4, 1, 1, 1, 1));
    assert_eq!(r.suites.len(), 2);
    assert_eq!(r.suites[1].source, files[1]);
    let flaky = case(
        &r,
        "com.example.CalculatorTest/com.example.CalculatorTest/fetchesRates",
    );
    assert_eq!(
        flaky.attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [Outcome::Failed, Outcome::Errored, Outcome::Passed]
    );
    // Surefire writes times with the locale's grouping separator.
    assert_eq!(flaky.duration_ms(), Some(1_002_500));
    assert_eq!(
        flaky.attempts[0].message.as_deref(),
        Some("expected: <200> but was: <503>")
    );
    assert!(
        flaky.attempts[0]
            .details
            .as_deref()
            .unwrap()
            .contains("CalculatorTest.java:31")
    );
    assert_eq!(
        flaky.attempts[0].stdout.as_deref(),
        Some("connecting to rates service...\n")
    );
    assert_eq!(flaky.attempts[1].stderr.as_deref(), Some("WARN retrying\n"));
    assert_eq!(
        flaky.attempts[1].kind.as_deref(),
        Some("java.net.SocketException")
    );
    let divides = case(
        &r,
        "com.example.CalculatorTest/com.example.CalculatorTest/divides",
    );
    assert_eq!(divides.attempts.len(), 3);
    assert_eq!(
        divides.attempts[0].stdout.as_deref(),
        Some("dividing 6 by 3\n")
    );
    assert_eq!(
        divides.attempts[2].message.as_deref(),
        Some("still expected: <2> but was: <3>")
    );
    let config = case(
        &r,
        "com.example.ParserTest/com.example.ParserTest/readsConfig",
    );
    assert_eq!(
        config
            .attempts
            .iter()
            .map(|a| a.outcome)
            .collect::<Vec<_>>(),
        [Outcome::Errored, Outcome::Errored]
    );
    insta::assert_json_snapshot!("surefire", summary::json(&r, None));
}

#[test]
fn gotestsum_build_failure_subtests_and_reruns() {
    let r = parse("gotestsum/junit.xml");
    assert_eq!(r.totals(), totals(7, 3, 2, 1, 1, 1));
    // The package that did not build: only `errors="1"` on an empty suite.
    let broken = case(&r, "example.com/calc/broken//example.com/calc/broken");
    assert_eq!(broken.outcome(), Outcome::Errored);
    assert!(
        broken.attempts[0]
            .message
            .as_deref()
            .unwrap()
            .contains("did not run")
    );
    // A failing subtest fails its parent too: both are failures of their own.
    let sub = case(&r, "example.com/calc/example.com/calc/TestDivide/by_zero");
    assert_eq!(sub.attempts.len(), 2);
    assert_eq!(sub.outcome(), Outcome::Failed);
    assert_eq!(
        case(&r, "example.com/calc/example.com/calc/TestDivide").outcome(),
        Outcome::Failed
    );
    // `--rerun-fails`: reruns are duplicate testcases after the first run's.
    let net = case(&r, "example.com/calc/example.com/calc/TestNetwork");
    assert_eq!(
        net.attempts
            .iter()
            .map(|a| (a.outcome, a.duration_ms))
            .collect::<Vec<_>>(),
        [(Outcome::Failed, Some(120)), (Outcome::Passed, Some(80))]
    );
    assert!(net.is_flaky());
    let skip = case(&r, "example.com/calc/example.com/calc/TestSkip");
    assert_eq!(skip.outcome(), Outcome::Skipped);
    insta::assert_json_snapshot!("gotestsum", summary::json(&r, None));
}

#[test]
fn identity_keys_are_stable_across_runs_and_spellings() {
    // The same jest test with and without jest-junit's leading space and repeated classname.
    let a = br#"<testsuites><testsuite name="s"><testcase classname=" adds one" name=" adds one"/></testsuite></testsuites>"#;
    let b = br#"<testsuite name=" s "><testcase name="adds  one"/></testsuite>"#;
    let ka = parse::junit("a.xml", a, &Limits::default()).unwrap().suites[0].cases[0]
        .key
        .clone();
    let kb = parse::junit("b.xml", b, &Limits::default()).unwrap().suites[0].cases[0]
        .key
        .clone();
    assert_eq!(ka, "s//adds one");
    assert_eq!(ka, kb);
    // Parsing the same bytes twice gives the same report.
    let f = fixture("nextest/junit.xml");
    assert_eq!(
        parse::junit("x", &f, &Limits::default()).unwrap(),
        parse::junit("x", &f, &Limits::default()).unwrap()
    );
}

#[test]
fn merge_folds_the_same_case_across_files() {
    let first = br#"<testsuite name="s"><testcase classname="c" name="t"><failure message="boom"/></testcase><testcase classname="c" name="u"/></testsuite>"#;
    let second = br#"<testsuite name="s"><testcase classname="c" name="t"/></testsuite>"#;
    let l = Limits::default();
    let r = parse::merge([
        parse::junit("1.xml", first, &l).unwrap(),
        parse::junit("2.xml", second, &l).unwrap(),
    ]);
    assert_eq!(r.totals(), totals(2, 2, 0, 0, 0, 1));
    let t = case(&r, "s/c/t");
    assert_eq!(t.attempts.len(), 2);
    assert_eq!(t.attempts[0].message.as_deref(), Some("boom"));
    // The emptied suite of the second file stays, without cases.
    assert_eq!(r.suites.len(), 2);
    assert!(r.suites[1].cases.is_empty());
}

#[test]
fn nested_suites_status_attributes_and_bare_testsuite() {
    let x = br#"<?xml version="1.0"?>
<!-- a comment -->
<testsuites name="all">
  <testsuite name="outer">
    <testsuite name="inner"><testcase name="deep" time="0.5"/></testsuite>
    <testcase name="shallow" status="notrun"/>
  </testsuite>
  <testcase name="loose"><error>crash&#10;second line</error></testcase>
</testsuites>"#;
    let r = parse::junit("n.xml", x, &Limits::default()).unwrap();
    assert_eq!(case(&r, "inner//deep").duration_ms(), Some(500));
    assert_eq!(case(&r, "outer//shallow").outcome(), Outcome::Skipped);
    let loose = case(&r, "all//loose");
    assert_eq!(loose.outcome(), Outcome::Errored);
    assert_eq!(loose.attempts[0].message.as_deref(), Some("crash"));
    assert_eq!(
        loose.attempts[0].details.as_deref(),
        Some("crash\nsecond line")
    );
}
