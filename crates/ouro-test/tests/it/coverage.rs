//! Cobertura XML and LCOV, told apart by content, merged per file.

use ouro_test::model::Coverage;
use ouro_test::parse::{self, Kind, Limits};
use ouro_test::summary;

use crate::junit::fixture;

fn cov(rel: &str) -> Coverage {
    parse::coverage(rel, &fixture(rel), &Limits::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn pytest_cov_cobertura_with_branches() {
    let c = cov("pytest/coverage.xml");
    assert_eq!(
        parse::detect(&fixture("pytest/coverage.xml")),
        Kind::Coverage
    );
    assert_eq!(c.files.len(), 1);
    let f = &c.files[0];
    assert_eq!(f.path, "__init__.py");
    // The report's own header says lines-valid="10" lines-covered="8", branches 3 of 4.
    assert_eq!((f.lines_covered, f.lines_total), (8, 10));
    assert_eq!((f.branches_covered, f.branches_total), (3, 4));
    assert_eq!(f.lines[..3], [(1, 1), (2, 1), (5, 1)]);
    assert!(f.lines.contains(&(10, 0)));
    insta::assert_json_snapshot!(
        "pytest_cov",
        summary::json(&Default::default(), Some(&c))["coverage"]
    );
}

#[test]
fn jest_cobertura_ignores_method_lines_and_the_doctype() {
    let c = cov("jest/cobertura-coverage.xml");
    assert_eq!(c.files.len(), 1);
    let f = &c.files[0];
    // The filename is relative already; the <source> is not prepended.
    assert_eq!(f.path, "src/math.js");
    assert_eq!((f.lines_covered, f.lines_total), (4, 6));
    assert_eq!((f.branches_covered, f.branches_total), (1, 4));
}

#[test]
fn istanbul_lcov_equals_its_cobertura() {
    let l = cov("lcov/jest-lcov.info");
    assert_eq!(
        parse::detect(&fixture("lcov/jest-lcov.info")),
        Kind::Coverage
    );
    let x = cov("jest/cobertura-coverage.xml");
    assert_eq!(l.line_totals(), (4, 6));
    assert_eq!(l.branch_totals(), (1, 4));
    assert_eq!(l.line_totals(), x.line_totals());
    assert_eq!(l.branch_totals(), x.branch_totals());
    assert_eq!(l.files[0].lines, x.files[0].lines);
}

#[test]
fn lcov_records_of_one_file_are_merged_and_stated_totals_used_without_lines() {
    let c = cov("lcov/merged.info");
    assert_eq!(
        c.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["src/lib.rs", "src/main.rs"]
    );
    let lib = &c.files[0];
    // Lines 3, 4, 8: hits added over both records (8 is covered by the second).
    assert_eq!(lib.lines, [(3, 5), (4, 4), (8, 2)]);
    assert_eq!((lib.lines_covered, lib.lines_total), (3, 3));
    // Branch 4/0/1 was `-` (never taken) then 0: still uncovered.
    assert_eq!((lib.branches_covered, lib.branches_total), (1, 2));
    let main = &c.files[1];
    assert_eq!((main.lines_covered, main.lines_total), (7, 10));
    assert!(main.lines.is_empty());
    assert_eq!(c.line_totals(), (10, 13));
}

#[test]
fn merge_coverage_adds_hits_per_file() {
    let a = cov("lcov/jest-lcov.info");
    let b = cov("jest/cobertura-coverage.xml");
    let m = parse::merge_coverage([a, b]);
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.files[0].lines[0], (2, 6));
    assert_eq!(m.line_totals(), (4, 6));
}

#[test]
fn unknown_and_malformed_coverage_are_positioned_errors() {
    let l = Limits::default();
    let e = parse::coverage(
        "jacoco.xml",
        b"<?xml version=\"1.0\"?>\n<report name=\"x\"/>",
        &l,
    )
    .unwrap_err();
    assert_eq!(e.code, "test.coverage_unknown_format");
    assert_eq!((e.line, e.column), (2, 1));
    insta::assert_snapshot!("jacoco", e.to_string());
    let e = parse::coverage("notes.txt", b"hello world\n", &l).unwrap_err();
    assert_eq!(e.code, "test.coverage_unknown_format");
    insta::assert_snapshot!("plain_text", e.to_string());
    let e =
        parse::coverage("bad.info", b"TN:\nSF:a.rs\nDA:3,many\nend_of_record\n", &l).unwrap_err();
    assert_eq!(e.code, "test.coverage_malformed");
    assert_eq!((e.line, e.column), (3, 4));
    insta::assert_snapshot!("lcov_bad_hits", e.to_string());
    let e = parse::coverage("orphan.info", b"TN:\nDA:3,1\n", &l).unwrap_err();
    assert_eq!(e.code, "test.coverage_malformed");
    assert_eq!((e.line, e.column), (2, 1));
    let e = parse::coverage(
        "c.xml",
        b"<coverage><packages><package><classes><class filename=\"a.py\"><lines><line number=\"x\" hits=\"1\"/></lines></class></classes></package></packages></coverage>",
        &l,
    )
    .unwrap_err();
    assert_eq!(e.code, "test.coverage_malformed");
    insta::assert_snapshot!("cobertura_bad_line", e.to_string());
}

#[test]
fn junit_is_not_taken_for_coverage() {
    assert_eq!(parse::detect(&fixture("nextest/junit.xml")), Kind::Junit);
    assert_eq!(parse::detect(&fixture("pytest/junit.xml")), Kind::Junit);
    assert_eq!(parse::detect(b"garbage"), Kind::Junit);
}
