use super::*;
use proptest::prelude::*;

fn ctx() -> SqlContext {
    SqlContext {
        me: Some(7),
        now_ms: 1_790_000_000_000,
        next_param: 1,
        backend: ouro_store::Backend::Sqlite,
    }
}

/// Positions do not matter when comparing meaning.
fn strip(mut q: Query) -> Query {
    for c in &mut q.clauses {
        c.position = 0;
    }
    q
}

#[test]
fn parses_to_canonical_form() {
    let table: &[(&str, &str)] = &[
        ("", ""),
        ("   ", ""),
        ("type:story", r#"type:"story""#),
        ("TYPE:Story", r#"type:"story""#),
        (r#"state:"In progress""#, r#"state:"in progress""#),
        ("assignee:me", "assignee:me"),
        ("assignee:ME", "assignee:me"),
        (r#"assignee:"me""#, r#"assignee:"me""#),
        (
            "assignee:none reporter:alice",
            r#"assignee:none reporter:"alice""#,
        ),
        ("assignee:Alice", r#"assignee:"alice""#),
        (
            "label:api -label:blocked",
            r#"label:"api" -label:"blocked""#,
        ),
        // Same field and sign: OR, merged into one clause, duplicates dropped.
        ("label:api label:ui label:api", r#"label:"api" label:"ui""#),
        ("-label:a -label:b", r#"-label:"a" -label:"b""#),
        ("login", r#"text:"login""#),
        ("login error", r#"text:"login" text:"error""#),
        (r#""login page""#, r#"text:"login page""#),
        (r#"text:"login""#, r#"text:"login""#),
        (r#"-"wont fix""#, r#"-text:"wont fix""#),
        (r#""say \"hi\" \\ bye""#, r#"text:"say \"hi\" \\ bye""#),
        ("priority:high", r#"priority:"high""#),
        ("priority:none", "priority:none"),
        ("sprint:current", "sprint:current"),
        ("sprint:none", "sprint:none"),
        (r#"sprint:"Sprint 4""#, r#"sprint:"Sprint 4""#),
        ("parent:DEMO-3 epic:demo-1", "parent:DEMO-3 epic:DEMO-1"),
        ("epic:none", "epic:none"),
        ("key:DEMO-4 key:DEMO-5", "key:DEMO-4 key:DEMO-5"),
        ("category:in_progress", "category:in_progress"),
        (r#"category:"Done""#, "category:done"),
        ("estimate:3", "estimate:3"),
        ("estimate:=3", "estimate:3"),
        ("estimate:>=3 estimate:<8", "estimate:>=3 estimate:<8"),
        ("estimate:none", "estimate:none"),
        ("due:overdue", "due:overdue"),
        ("due:none", "due:none"),
        ("due:2026-12-01", "due:2026-12-01"),
        ("due:<=2026-12-01", "due:<=2026-12-01"),
        (
            "created:>2026-01-31 updated:>=2024-02-29",
            "created:>2026-01-31 updated:>=2024-02-29",
        ),
        ("sort:rank", "sort:rank"),
        ("sort:-updated sort:priority", "sort:-updated sort:priority"),
        ("SORT:Created", "sort:created"),
        (
            r#"type:story state:"In progress" assignee:me label:api -label:blocked text:"login" priority:high sprint:current parent:DEMO-3 key:DEMO-4 sort:rank"#,
            r#"type:"story" state:"in progress" assignee:me label:"api" -label:"blocked" text:"login" priority:"high" sprint:current parent:DEMO-3 key:DEMO-4 sort:rank"#,
        ),
        // A quote inside a bare word is just a character; any whitespace separates terms.
        ("it's", r#"text:"it's""#),
        ("a\tb\nc", r#"text:"a" text:"b" text:"c""#),
    ];
    for (q, want) in table {
        let got = parse(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        assert_eq!(got.to_string(), *want, "{q:?}");
        // The canonical form is a fixed point.
        assert_eq!(strip(parse(want).unwrap()), strip(got), "{q:?}");
    }
}

#[test]
fn structure() {
    let q = parse(r#"label:api -label:x label:ui estimate:>1 estimate:>2 login error sort:-due"#)
        .unwrap();
    let fields: Vec<(Field, bool, usize)> = q
        .clauses
        .iter()
        .map(|c| (c.field, c.negated, c.values.len()))
        .collect();
    assert_eq!(
        fields,
        vec![
            (Field::Label, false, 2),
            (Field::Label, true, 1),
            (Field::Estimate, false, 1),
            (Field::Estimate, false, 1),
            (Field::Text, false, 1),
            (Field::Text, false, 1),
        ]
    );
    assert_eq!(q.clauses[1].position, 10);
    assert_eq!(
        q.sort,
        vec![SortKey {
            field: SortField::Due,
            descending: true
        }]
    );
    assert_eq!(
        parse("due:>=2026-12-01").unwrap().clauses[0].values,
        vec![Value::Date {
            op: Cmp::Ge,
            date: Date {
                year: 2026,
                month: 12,
                day: 1
            }
        }]
    );
    assert_eq!(
        parse("estimate:<=13").unwrap().clauses[0].values,
        vec![Value::Number {
            op: Cmp::Le,
            value: 13
        }]
    );
    // Equality dates and numbers are alternatives like any other value.
    assert_eq!(parse("estimate:1 estimate:2").unwrap().clauses.len(), 1);
    // Positions are chars, not bytes.
    let e = parse("é é state:").unwrap_err();
    assert_eq!(e.position, 10);
}

#[test]
fn dates() {
    assert_eq!(Date::parse("1970-01-01").unwrap().start_ms(), 0);
    assert_eq!(
        Date::parse("2026-12-01").unwrap().days_since_epoch(),
        20_788
    );
    assert_eq!(
        Date::parse("2000-03-01").unwrap().days_since_epoch(),
        11_017
    );
    assert_eq!(Date::parse("1969-12-31").unwrap().days_since_epoch(), -1);
    assert!(Date::parse("2024-02-29").is_some());
    for bad in [
        "2026-02-29",
        "2100-02-29",
        "2026-13-01",
        "2026-00-10",
        "2026-04-31",
        "2026-1-01",
        "26-01-01",
        "2026/01/01",
        "+026-01-01",
        "2026-01-0a",
        "２０２６-01-01",
    ] {
        assert!(Date::parse(bad).is_none(), "{bad}");
    }
}

#[test]
fn suggestions() {
    assert_eq!(
        suggest("asignee", Field::ALL.iter().map(|f| f.name())),
        Some("assignee")
    );
    assert_eq!(
        suggest("lable", Field::ALL.iter().map(|f| f.name())),
        Some("label")
    );
    assert_eq!(
        suggest("status", Field::ALL.iter().map(|f| f.name())),
        Some("state")
    );
    assert_eq!(suggest("zzzzzz", Field::ALL.iter().map(|f| f.name())), None);
    assert_eq!(
        suggest("est", Field::ALL.iter().map(|f| f.name())),
        Some("estimate")
    );
    // Ambiguous prefix: no guess.
    assert_eq!(suggest("re", ["reporter", "rank"].into_iter()), None);
    assert_eq!(levenshtein("kitten", "sitting"), 3);
    assert_eq!(levenshtein("", "abc"), 3);
}

/// Every bad query with its caret display and message, as users will see them.
#[test]
fn error_messages() {
    let bad = [
        "state:",
        "type:story state: label:x",
        "asignee:me",
        "status:done",
        "colour:red",
        r#"text:"unterminated"#,
        r#""a"b"#,
        r#"text:"bad \n escape""#,
        "- label:x",
        ":value",
        "category:doing",
        "estimate:>=x",
        "estimate:-1",
        "due:2026-13-01",
        "created:yesterday",
        "priority:urgent",
        "parent:42",
        "key:none",
        "assignee:bob@example.com",
        "sort:-prio",
        "-sort:rank",
        r#"label:"""#,
        "état:x",
    ];
    let mut out = String::new();
    for q in bad {
        let e = parse(q).expect_err(q);
        assert!(e.position <= q.chars().count(), "{q}");
        out.push_str(&format!("{}\n{}\n[{}]\n\n", caret(q, &e), e, e.code));
    }
    insta::assert_snapshot!("errors", out);
}

#[test]
fn length_limit() {
    let ok = format!(
        "{}{}",
        "x ".repeat(MAX_TERMS),
        " ".repeat(MAX_QUERY_CHARS - 2 * MAX_TERMS)
    );
    assert_eq!(parse(&ok).unwrap().clauses.len(), MAX_TERMS);
    let long = format!("{ok}y");
    let e = parse(&long).unwrap_err();
    assert_eq!((e.code, e.position), ("query.too_long", MAX_QUERY_CHARS));
    assert_eq!(
        e.to_string(),
        "at 4096: expected at most 4096 characters, found 4097 characters"
    );
}

#[test]
fn term_limit() {
    let e = parse(&"x ".repeat(MAX_TERMS + 1)).unwrap_err();
    assert_eq!(
        (e.code, e.position),
        ("query.too_many_terms", 2 * MAX_TERMS)
    );
}

#[test]
fn display_format() {
    let e = parse("type:story state:").unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"at 17: expected a value after "state:", found end of query"#
    );
    assert_eq!(
        caret("type:story state:", &e),
        "type:story state:\n                 ^"
    );
    assert_eq!(caret("a\tb:", &parse("a\tb:").unwrap_err()), "a b:\n    ^");
}

fn sql(q: &str) -> String {
    let (s, args) = to_sql(&parse(q).unwrap(), &ctx()).unwrap();
    format!(
        "{q}\n  WHERE {s}\n  ARGS {args:?}\n  ORDER BY {}\n",
        order_by(&parse(q).unwrap())
    )
}

#[test]
fn sql_snapshots() {
    let queries = [
        "",
        "type:story",
        r#"state:"In progress" category:done"#,
        "assignee:me",
        "assignee:none -reporter:me",
        "assignee:alice assignee:bob",
        "-assignee:alice",
        "label:api -label:blocked",
        "-label:a -label:b",
        r#"login "50% off_" "back\\slash""#,
        "priority:high priority:critical sort:priority",
        "sprint:current",
        r#"sprint:"Sprint 4" sprint:none"#,
        "parent:DEMO-3 epic:none key:DEMO-4",
        "estimate:>=3 estimate:<8",
        "due:overdue sort:due",
        "due:2026-12-01",
        "created:>2026-01-01 updated:<=2026-01-31 sort:-updated sort:title",
        "-due:none",
    ];
    let out: String = queries.iter().map(|q| sql(q)).collect();
    insta::assert_snapshot!("sql", out);
}

#[test]
fn sql_params_start_at_next_param_and_me_absent() {
    let q = parse("assignee:me label:x login").unwrap();
    let c = SqlContext {
        me: None,
        now_ms: 0,
        next_param: 4,
        backend: ouro_store::Backend::Sqlite,
    };
    let (s, args) = to_sql(&q, &c).unwrap();
    assert_eq!(
        s,
        "1 = 0 AND i.id IN (SELECT l.item_id FROM item_labels l WHERE LOWER(l.label) = $4) \
         AND (LOWER(i.title) LIKE $5 ESCAPE '\\' OR LOWER(i.description) LIKE $5 ESCAPE '\\')"
    );
    assert_eq!(
        args,
        vec![SqlArg::Text("x".into()), SqlArg::Text("%login%".into())]
    );
}

/// The SQL text never contains a value: every quote in it belongs to a fixed literal.
fn assert_no_spliced_values(sql: &str) {
    let mut s = sql
        .replace("ESCAPE '\\'", "")
        .replace("'active'", "")
        .replace("'done'", "");
    for p in PRIORITIES {
        s = s.replace(&format!("'{p}'"), "");
    }
    assert!(!s.contains('\''), "{sql}");
}

/// Placeholders are exactly $first..$first+args-1.
fn assert_placeholders(sql: &str, first: usize, nargs: usize) {
    let mut seen = std::collections::BTreeSet::new();
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
        seen.insert(n.parse::<usize>().unwrap());
    }
    let want: std::collections::BTreeSet<usize> = (first..first + nargs).collect();
    assert_eq!(seen, want, "{sql}");
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(q in "\\PC{0,60}") {
        match parse(&q) {
            Ok(query) => {
                let (s, args) = to_sql(&query, &ctx()).unwrap();
                assert_no_spliced_values(&s);
                assert_placeholders(&s, 1, args.len());
                let _ = order_by(&query);
            }
            Err(e) => {
                prop_assert!(e.position <= q.chars().count());
                let _ = caret(&q, &e);
            }
        }
    }

    #[test]
    fn query_like_input(
        q in "((-)?(type|state|label|assignee|reporter|priority|sprint|parent|epic|key|estimate|due|created|updated|category|sort|text|lable):(me|none|current|overdue|high|alice|DEMO-3|>=3|<2026-01-01|2026-12-01|done|-updated|x'y|\"a \\\\\" b\"|\"\")|login|\"it's\"|'; DROP TABLE items; --|[ \t]){0,10}",
        first in 1usize..20,
    ) {
        match parse(&q) {
            Ok(query) => {
                let c = SqlContext { next_param: first, ..ctx() };
                let (s, args) = to_sql(&query, &c).unwrap();
                assert_no_spliced_values(&s);
                assert_placeholders(&s, first, args.len());
                // Canonical text parses back to the same query.
                let again = parse(&query.to_string()).unwrap();
                prop_assert_eq!(strip(again), strip(query));
            }
            Err(e) => prop_assert!(e.position <= q.chars().count()),
        }
    }
}

/// The worked example in docs/query-language.md.
#[test]
fn documented_example() {
    let q = parse("assignee:me -label:blocked login").unwrap();
    let (s, args) = to_sql(&q, &ctx()).unwrap();
    let doc = include_str!("../../../../docs/query-language.md");
    let block = doc
        .split("```sql\n")
        .nth(1)
        .unwrap()
        .split("\n-- ")
        .next()
        .unwrap();
    assert_eq!(s, block.replace('\n', " "));
    assert_eq!(
        args,
        vec![
            SqlArg::I64(7),
            SqlArg::Text("blocked".into()),
            SqlArg::Text("%login%".into())
        ]
    );
}

#[test]
fn label_condition_takes_the_array_form_on_postgres() {
    let q = parse("label:x -label:y").unwrap();
    let pg = SqlContext {
        backend: ouro_store::Backend::Postgres,
        ..ctx()
    };
    let (s, args) = to_sql(&q, &pg).unwrap();
    assert_eq!(
        s,
        "i.id = ANY(ARRAY(SELECT l.item_id FROM item_labels l WHERE LOWER(l.label) = $1)) \
         AND NOT COALESCE(i.id = ANY(ARRAY(SELECT l.item_id FROM item_labels l WHERE LOWER(l.label) = $2)), 1 = 0)"
    );
    assert_eq!(args.len(), 2);
    let (lite, _) = to_sql(&q, &ctx()).unwrap();
    assert!(lite.starts_with("i.id IN (SELECT"), "{lite}");
}
