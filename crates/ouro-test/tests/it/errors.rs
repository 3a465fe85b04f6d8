//! Malformed input, limits and entity bombs: positioned errors with stable codes, never a
//! panic, bounded work.

use ouro_test::parse::{self, Limits, ParseError};

fn err(file: &str, bytes: &[u8], limits: &Limits) -> ParseError {
    match parse::junit(file, bytes, limits) {
        Ok(r) => panic!("{file} parsed: {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn malformed_xml_names_file_line_and_column() {
    let e = err(
        "r.xml",
        b"<testsuite name=\"s\">\n  <testcase name=\"a\">\n  </testsuite>\n",
        &Limits::default(),
    );
    assert_eq!(e.code, "test.xml_malformed");
    assert_eq!((e.line, e.column), (3, 3));
    insta::assert_snapshot!("mismatched_end", e.to_string());

    let e = err(
        "t.xml",
        b"<testsuite name=\"s\">\n<testcase name=\"a\"/>\n",
        &Limits::default(),
    );
    assert_eq!(e.code, "test.xml_malformed");
    insta::assert_snapshot!("truncated", e.to_string());

    // Columns are characters, not bytes.
    let e = err(
        "u.xml",
        "<testsuite name=\"ünïcödé\"><testcase name=\"a\" x=1/></testsuite>".as_bytes(),
        &Limits::default(),
    );
    assert_eq!(e.code, "test.xml_malformed");
    assert_eq!(e.line, 1);
    insta::assert_snapshot!("unquoted_attribute", e.to_string());
}

#[test]
fn not_junit_not_utf8_and_empty() {
    let l = Limits::default();
    let e = err(
        "c.xml",
        b"<?xml version=\"1.0\"?>\n<coverage line-rate=\"1\"/>",
        &l,
    );
    assert_eq!(e.code, "test.not_junit");
    assert_eq!((e.line, e.column), (2, 1));
    insta::assert_snapshot!("not_junit", e.to_string());
    let e = err("e.xml", b"   \n", &l);
    assert_eq!(e.code, "test.not_junit");
    let e = err("l.xml", b"<testsuite name=\"caf\xe9\"/>", &l);
    assert_eq!(e.code, "test.not_utf8");
    assert_eq!((e.line, e.column), (1, 21));
    insta::assert_snapshot!("not_utf8", e.to_string());
    let e = err("two.xml", b"<testsuite/><testsuite/>", &l);
    assert_eq!(e.code, "test.xml_malformed");
    assert_eq!((e.line, e.column), (1, 13));
}

#[test]
fn a_billion_laughs_is_refused_without_expanding_anything() {
    let mut bomb =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        bomb.push_str(&format!(
            " <!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    bomb.push_str("]>\n<testsuite name=\"&lol9;\"><testcase name=\"&lol9;\"/></testsuite>\n");
    let e = err("bomb.xml", bomb.as_bytes(), &Limits::default());
    assert_eq!(e.code, "test.xml_dtd_refused");
    assert_eq!((e.line, e.column), (2, 1));
    insta::assert_snapshot!("billion_laughs", e.to_string());
    // Without the declarations, an undeclared entity is an error too, not an expansion.
    let e = err(
        "ref.xml",
        b"<testsuite name=\"s\"><testcase name=\"a\"><failure>&lol9;</failure></testcase></testsuite>",
        &Limits::default(),
    );
    assert_eq!(e.code, "test.xml_malformed");
    assert_eq!((e.line, e.column), (1, 49));
    insta::assert_snapshot!("undeclared_entity", e.to_string());
    // A DOCTYPE without entities (Cobertura's usual one) is ignored.
    let ok = b"<!DOCTYPE testsuite SYSTEM \"junit.dtd\">\n<testsuite name=\"s\"><testcase name=\"a\"/></testsuite>";
    assert_eq!(
        parse::junit("d.xml", ok, &Limits::default())
            .unwrap()
            .totals()
            .total,
        1
    );
}

#[test]
fn limits_are_enforced_with_their_own_code() {
    let ok = b"<testsuites><testsuite name=\"s\"><testcase name=\"a\"/><testcase name=\"b\"/></testsuite></testsuites>";
    let small = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        l
    };
    let e = err("big.xml", ok, &small(|l| l.max_bytes = 10));
    assert_eq!(e.code, "test.limit_exceeded");
    insta::assert_snapshot!("max_bytes", e.to_string());
    let e = err("deep.xml", ok, &small(|l| l.max_depth = 2));
    assert_eq!(e.code, "test.limit_exceeded");
    assert_eq!((e.line, e.column), (1, 33));
    insta::assert_snapshot!("max_depth", e.to_string());
    let e = err("cases.xml", ok, &small(|l| l.max_cases = 1));
    assert_eq!(e.code, "test.limit_exceeded");
    assert_eq!((e.line, e.column), (1, 53));
    insta::assert_snapshot!("max_cases", e.to_string());
    let e = err("attr.xml", ok, &small(|l| l.max_attr_bytes = 0));
    assert_eq!(e.code, "test.limit_exceeded");
    insta::assert_snapshot!("max_attr_bytes", e.to_string());
    // Deep nesting far past the limit stops at the limit.
    let deep = format!("<testsuites>{}", "<x>".repeat(100_000));
    let e = err("nest.xml", deep.as_bytes(), &Limits::default());
    assert_eq!(e.code, "test.limit_exceeded");
    assert_eq!((e.line, e.column), (1, 13 + 63 * 3));
}

#[test]
fn long_text_is_truncated_not_refused() {
    let body = "x".repeat(1000);
    let xml = format!(
        "<testsuite name=\"s\"><testcase name=\"a\"><failure>{body}</failure><system-out>{body}</system-out></testcase></testsuite>"
    );
    let l = Limits {
        max_text_bytes: 100,
        ..Limits::default()
    };
    let r = parse::junit("long.xml", xml.as_bytes(), &l).unwrap();
    let a = &r.suites[0].cases[0].attempts[0];
    let details = a.details.as_deref().unwrap();
    assert!(details.starts_with(&"x".repeat(100)));
    assert!(details.ends_with(parse::TRUNCATED), "{details}");
    assert_eq!(details.len(), 100 + parse::TRUNCATED.len());
    assert_eq!(
        a.stdout.as_deref().unwrap().len(),
        100 + parse::TRUNCATED.len()
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Whatever the bytes, the parsers answer (a report or a positioned error), never panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let l = Limits::default();
        if let Err(e) = parse::junit("f", &bytes, &l) {
            proptest::prop_assert!(e.line >= 1 && e.column >= 1);
        }
        let _ = parse::coverage("f", &bytes, &l);
    }

    #[test]
    fn mangled_fixtures_never_panic(cut in 0usize..4000, byte in proptest::prelude::any::<u8>()) {
        let mut f = crate::junit::fixture("nextest/junit.xml");
        let i = cut.min(f.len() - 1);
        f[i] = byte;
        f.truncate(f.len() - (cut % 50));
        let _ = parse::junit("f", &f, &Limits::default());
    }
}
