//! JUnit XML from each producer, normalised.

use ouro_test::model::{Outcome, Report, Totals};
use ouro_test::parse::{self, Limits};

pub fn fixture(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn parse(rel: &str) -> Report {
    parse::junit(rel, &fixture(rel), &Limits::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn nextest_retries_fold_into_attempts() {
    let r = parse("nextest/junit.xml");
    assert_eq!(
        r.totals(),
        Totals {
            total: 5,
            passed: 3,
            failed: 2,
            skipped: 0,
            errored: 0,
            flaky: 1
        }
    );
    let flaky = r
        .cases()
        .find(|c| c.name == "tests::flaky_counter")
        .unwrap();
    assert_eq!(flaky.key, "demo/demo/tests::flaky_counter");
    assert_eq!(flaky.attempts.len(), 2);
    assert_eq!(flaky.attempts[0].outcome, Outcome::Failed);
    assert!(flaky.is_flaky());
    let failed = r
        .cases()
        .find(|c| c.name == "panics_with_xml_chars")
        .unwrap();
    assert_eq!(failed.attempts.len(), 3);
    assert_eq!(failed.outcome(), Outcome::Failed);
    assert!(
        failed.attempts[2]
            .details
            .as_deref()
            .unwrap()
            .contains("expected <ok> & got \"err\""),
        "{:?}",
        failed.attempts[2].details
    );
}
