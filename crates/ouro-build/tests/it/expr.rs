//! The expression language: literals, operators, coercion, functions, contexts, templates,
//! conditions, errors and budgets, hashFiles over a directory.

use std::sync::Arc;

use ouro_build::expr::{
    self, Context, ContextRef, DirHashFiles, Func, HashFiles, JobStatus, MAX_DEPTH, OuroContext,
    Value, contexts_used, eval, eval_condition, parse, parse_condition, parse_template,
};
use proptest::prelude::*;
use serde_json::json;

fn ctx() -> Context {
    let ouro = OuroContext {
        event: "push".into(),
        git_ref: "refs/heads/main".into(),
        branch: "main".into(),
        sha: "0123456789abcdef0123456789abcdef01234567".into(),
        project: "demo".into(),
        repo: "app".into(),
        run_number: 42,
        actor: "alice".into(),
        target_branch: String::new(),
    };
    let matrix = json!({"os": "linux", "rust": "1.80", "n": 3});
    let inputs = json!({"level": "debug", "dry": false, "count": 2});
    Context::new()
        .with_ouro(&ouro)
        .with_env([
            ("CI".to_string(), "true".to_string()),
            ("Name".to_string(), "Ouro".to_string()),
        ])
        .with_matrix(matrix.as_object().unwrap())
        .with_inputs(inputs.as_object().unwrap())
        .with_need(
            "build",
            "success",
            [("version".to_string(), "1.2.3".to_string())],
        )
        .with_need("lint", "failure", [])
        .with_secrets([("TOKEN".to_string(), "s3cret-value".to_string())])
}

/// Evaluates `src` and returns the value as JSON.
fn ev(src: &str) -> serde_json::Value {
    ev_in(src, &ctx())
}

fn ev_in(src: &str, c: &Context) -> serde_json::Value {
    let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    eval(&e, c)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .to_json()
}

/// The parse error (code, offset) of `src`.
fn perr(src: &str) -> (&'static str, usize) {
    let e = parse(src).expect_err(src);
    (e.code, e.offset)
}

#[test]
fn literals() {
    assert_eq!(ev("null"), json!(null));
    assert_eq!(ev("true"), json!(true));
    assert_eq!(ev("false"), json!(false));
    assert_eq!(ev("711"), json!(711));
    assert_eq!(ev("-9.2"), json!(-9.2));
    assert_eq!(ev("0xff"), json!(255));
    assert_eq!(ev("-2.99e-2"), json!(-0.0299));
    assert_eq!(ev("1E3"), json!(1000));
    assert_eq!(ev("'Mona the Octocat'"), json!("Mona the Octocat"));
    assert_eq!(ev("'It''s open source!'"), json!("It's open source!"));
    assert_eq!(ev("''"), json!(""));
    assert_eq!(ev("  'spaces around'  "), json!("spaces around"));
}

#[test]
fn property_access() {
    assert_eq!(ev("ouro.branch"), json!("main"));
    assert_eq!(ev("ouro.ref"), json!("refs/heads/main"));
    assert_eq!(ev("ouro.run_number"), json!(42));
    assert_eq!(ev("ouro['event']"), json!("push"));
    assert_eq!(
        ev("OURO.Actor"),
        json!("alice"),
        "names are case-insensitive"
    );
    assert_eq!(ev("env.CI"), json!("true"));
    assert_eq!(ev("env.name"), json!("Ouro"));
    assert_eq!(ev("matrix.os"), json!("linux"));
    assert_eq!(ev("matrix['o' == 'o' && 'rust']"), json!("1.80"));
    assert_eq!(ev("inputs.count"), json!(2));
    assert_eq!(ev("needs.build.result"), json!("success"));
    assert_eq!(ev("needs.build.outputs.version"), json!("1.2.3"));
    assert_eq!(ev("secrets.TOKEN"), json!("s3cret-value"));
    // Missing properties are null, never an error.
    assert_eq!(ev("env.MISSING"), json!(null));
    assert_eq!(ev("env.MISSING.deeper[3]"), json!(null));
    assert_eq!(ev("needs.nope.result"), json!(null));
    // Indexes into arrays, and into function results.
    assert_eq!(ev("fromJSON('[10, 20, 30]')[1]"), json!(20));
    assert_eq!(ev("fromJSON('[10, 20, 30]')[7]"), json!(null));
    assert_eq!(ev("fromJSON('{\"a\": {\"b-c\": 5}}').a.b-c"), json!(5));
    // A context that was never set reads as an empty object.
    assert_eq!(ev_in("inputs.x", &Context::new()), json!(null));
    assert_eq!(ev_in("toJSON(inputs)", &Context::new()), json!("{}"));
}

#[test]
fn star_filters() {
    let mut got = ev("needs.*.result");
    got.as_array_mut().unwrap().sort_by_key(|v| v.to_string());
    assert_eq!(got, json!(["failure", "success"]));
    assert_eq!(ev("contains(needs.*.result, 'failure')"), json!(true));
    assert_eq!(
        ev("fromJSON('[{\"n\":1},{\"m\":2},{\"n\":3}]').*.n"),
        json!([1, 3]),
        "elements without the property are dropped"
    );
    assert_eq!(ev("fromJSON('[[1,2],[3]]')[*].*"), json!([1, 2, 3]));
    assert_eq!(ev("'text'.*"), json!([]));
}

#[test]
fn operators() {
    assert_eq!(ev("!true"), json!(false));
    assert_eq!(ev("!''"), json!(true));
    assert_eq!(ev("!!'x'"), json!(true));
    assert_eq!(ev("1 == 1"), json!(true));
    assert_eq!(ev("1 != 1"), json!(false));
    assert_eq!(ev("1 < 2"), json!(true));
    assert_eq!(ev("2 <= 2"), json!(true));
    assert_eq!(ev("3 > 2"), json!(true));
    assert_eq!(ev("2 >= 3"), json!(false));
    assert_eq!(
        ev("'a' < 'B'"),
        json!(true),
        "strings order case-insensitively"
    );
    assert_eq!(ev("'abc' == 'ABC'"), json!(true));
    // && and || return an operand, like JavaScript: the ternary idiom works.
    assert_eq!(ev("true && 'yes' || 'no'"), json!("yes"));
    assert_eq!(ev("false && 'yes' || 'no'"), json!("no"));
    assert_eq!(ev("'' || null"), json!(null));
    assert_eq!(ev("0 && 'never'"), json!(0));
    assert_eq!(ev("1 && 2 && 3"), json!(3));
    assert_eq!(ev("null || 0 || 'x' || 'y'"), json!("x"));
    // Precedence: ! > comparisons > equality > && > ||.
    assert_eq!(ev("!false == true"), json!(true));
    assert_eq!(ev("1 < 2 == true"), json!(true));
    assert_eq!(ev("true || false && false"), json!(true));
    assert_eq!(ev("(true || false) && false"), json!(false));
    assert_eq!(
        ev("ouro.branch == 'main' && ouro.event == 'push'"),
        json!(true)
    );
}

#[test]
fn short_circuit_skips_errors() {
    // The right side would fail (no hashFiles provider) but is never evaluated.
    assert_eq!(ev("false && hashFiles('x')"), json!(false));
    assert_eq!(ev("true || hashFiles('x')"), json!(true));
    let e = eval(&parse("true && hashFiles('x')").unwrap(), &ctx()).unwrap_err();
    assert_eq!(e.code, "expr.hash_files");
    assert_eq!(e.offset, 8);
}

/// The coercion table of docs/expressions.md, row by row.
#[test]
fn coercion_table() {
    let cases: &[(&str, bool)] = &[
        // null -> 0
        ("null == 0", true),
        ("null == false", true),
        ("null == ''", true),
        ("null == null", true),
        ("null == 'null'", false),
        // booleans -> 1 / 0
        ("true == 1", true),
        ("false == 0", true),
        ("true == '1'", true),
        ("true == 'true'", false),
        ("false == ''", true),
        // strings -> number when they are one, else NaN
        ("'0x10' == 16", true),
        ("' 12 ' == 12", true),
        ("'1e2' == 100", true),
        ("'abc' == 0", false),
        ("'' == 0", true),
        // NaN (a string that is not a number) equals nothing, orders with nothing
        ("'abc' == 'abc' && 'abc' != 0", true),
        ("'abc' < 1", false),
        ("'abc' >= 1", false),
        // arrays and objects: equal to the same structure, never to a scalar
        ("fromJSON('[1,2]') == fromJSON('[1,2]')", true),
        ("fromJSON('[1,2]') == fromJSON('[2,1]')", false),
        ("fromJSON('{}') == 0", false),
        ("fromJSON('[]') == ''", false),
        ("fromJSON('[]') < 1", false),
        (
            "fromJSON('{\"a\":\"X\"}') == fromJSON('{\"a\":\"x\"}')",
            true,
        ),
        // numbers
        ("1 == 1.0", true),
        ("0.1 < 0.2", true),
        ("-1 < 0", true),
        ("2 > '10'", false),
        ("'2' > '10'", true),
    ];
    for (src, want) in cases {
        assert_eq!(ev(src), json!(*want), "{src}");
    }
    // Truthiness of each type.
    for (src, want) in [
        ("null", false),
        ("false", false),
        ("0", false),
        ("-0", false),
        ("''", false),
        ("fromJSON('\"x\"') == 'x' && 'x' == 'y'", false),
        ("true", true),
        ("1", true),
        ("'0'", true),
        ("'false'", true),
        ("fromJSON('[]')", true),
        ("fromJSON('{}')", true),
    ] {
        assert_eq!(
            parse(src)
                .map(|e| eval(&e, &ctx()).unwrap().is_truthy())
                .unwrap(),
            want,
            "{src}"
        );
    }
    assert!(!Value::Number(f64::NAN).is_truthy());
}

#[test]
fn string_functions() {
    assert_eq!(ev("contains('Hello world', 'llo')"), json!(true));
    assert_eq!(
        ev("contains('Hello world', 'LLO')"),
        json!(true),
        "case-insensitive"
    );
    assert_eq!(ev("contains('Hello world', 'xyz')"), json!(false));
    assert_eq!(
        ev("contains(fromJSON('[\"bug\", \"help wanted\"]'), 'BUG')"),
        json!(true)
    );
    assert_eq!(
        ev("contains(fromJSON('[1, 2]'), '2')"),
        json!(true),
        "loose equality in arrays"
    );
    assert_eq!(ev("contains(fromJSON('[1, 2]'), 3)"), json!(false));
    assert_eq!(
        ev("contains(123, 2)"),
        json!(true),
        "non-strings compare as strings"
    );
    assert_eq!(ev("startsWith('Hello world', 'he')"), json!(true));
    assert_eq!(ev("startsWith('Hello world', 'world')"), json!(false));
    assert_eq!(ev("endsWith('Hello world', 'ORLD')"), json!(true));
    assert_eq!(ev("endsWith('Hello world', 'hello')"), json!(false));
    assert_eq!(ev("startsWith(ouro.ref, 'refs/tags/')"), json!(false));
    assert_eq!(
        ev("StartsWith(ouro.ref, 'refs/heads/')"),
        json!(true),
        "names are case-insensitive"
    );
}

#[test]
fn format_function() {
    assert_eq!(
        ev("format('Hello {0} {1} {2}', 'Mona', 'the', 'Octocat')"),
        json!("Hello Mona the Octocat")
    );
    assert_eq!(
        ev("format('{{Hello {0} {1} {2}!}}', 'Mona', 'the', 'Octocat')"),
        json!("{Hello Mona the Octocat!}")
    );
    assert_eq!(ev("format('{0}{0}', 'ab')"), json!("abab"));
    assert_eq!(ev("format('{1}-{0}', 1.5, true)"), json!("true-1.5"));
    assert_eq!(ev("format('[{0}]', null)"), json!("[]"));
    assert_eq!(ev("format('no placeholders')"), json!("no placeholders"));
    assert_eq!(
        ev("format('{0}', fromJSON('[1,\"a\"]'))"),
        json!("[1,\"a\"]")
    );
    // A literal format string is checked when parsing.
    assert_eq!(perr("format('{1}', 'a')"), ("expr.format", 7));
    assert_eq!(perr("format('a { b', 'a')"), ("expr.format", 7));
    assert_eq!(perr("format('a } b')"), ("expr.format", 7));
    assert_eq!(perr("format('{x}', 1)"), ("expr.format", 7));
    // A computed one is checked when evaluating.
    let e = eval(
        &parse("format(env.Name, 1)").unwrap(),
        &ctx().with_env([("Name".into(), "{3}".into())]),
    )
    .unwrap_err();
    assert_eq!((e.code, e.offset), ("expr.format", 0));
}

#[test]
fn join_and_json_functions() {
    assert_eq!(ev("join(fromJSON('[\"a\", \"b\", 3]'))"), json!("a,b,3"));
    assert_eq!(
        ev("join(fromJSON('[\"a\", \"b\"]'), ' | ')"),
        json!("a | b")
    );
    assert_eq!(ev("join(fromJSON('[]'), '-')"), json!(""));
    assert_eq!(ev("join('just a string', '-')"), json!("just a string"));
    assert_eq!(ev("join(needs.*.outputs.version)"), json!("1.2.3"));
    assert_eq!(
        ev("toJSON(matrix)"),
        json!("{\n  \"n\": 3,\n  \"os\": \"linux\",\n  \"rust\": \"1.80\"\n}")
    );
    assert_eq!(ev("toJSON('a')"), json!("\"a\""));
    assert_eq!(ev("toJSON(null)"), json!("null"));
    assert_eq!(ev("toJSON(1.5)"), json!("1.5"));
    assert_eq!(
        ev("fromJSON('{\"a\": [1, true, null]}')"),
        json!({"a": [1, true, null]})
    );
    assert_eq!(ev("fromJSON('true')"), json!(true));
    assert_eq!(ev("fromJSON(toJSON(matrix)).os"), json!("linux"));
    assert_eq!(ev("fromJSON(inputs.count) == 2"), json!(true));
    let e = eval(&parse("fromJSON('{nope')").unwrap(), &ctx()).unwrap_err();
    assert_eq!(e.code, "expr.from_json");
}

#[test]
fn status_functions_and_conditions() {
    let ok = ctx();
    let failed = ctx().with_status(JobStatus::Failure);
    let cancelled = ctx().with_status(JobStatus::Cancelled);
    for (src, s, f, c) in [
        ("success()", true, false, false),
        ("failure()", false, true, false),
        ("cancelled()", false, false, true),
        ("always()", true, true, true),
        ("!cancelled()", true, true, false),
    ] {
        assert_eq!(ev_in(src, &ok), json!(s), "{src} on success");
        assert_eq!(ev_in(src, &failed), json!(f), "{src} on failure");
        assert_eq!(ev_in(src, &cancelled), json!(c), "{src} on cancel");
    }

    // `if:` without a status function is `success() && (...)`.
    assert!(eval_condition("ouro.branch == 'main'", &ok).unwrap());
    assert!(!eval_condition("ouro.branch == 'main'", &failed).unwrap());
    assert!(!eval_condition("ouro.branch == 'main'", &cancelled).unwrap());
    let c = parse_condition("ouro.branch == 'main'").unwrap();
    assert!(c.implicit_success);
    // With one, it means what it says.
    assert!(eval_condition("failure() && ouro.branch == 'main'", &failed).unwrap());
    assert!(!parse_condition("always()").unwrap().implicit_success);
    assert!(eval_condition("always()", &cancelled).unwrap());
    // Wrapped in ${{ }} or bare, with surrounding whitespace: the same.
    assert!(eval_condition("${{ ouro.event == 'push' }}", &ok).unwrap());
    assert!(eval_condition("  ${{ ouro.event == 'push' }}  ", &ok).unwrap());
    assert!(!eval_condition("${{ ouro.event == 'schedule' }}", &ok).unwrap());
    // Empty: the default, success().
    assert!(eval_condition("", &ok).unwrap());
    assert!(!eval_condition("  ", &failed).unwrap());
    // A value, not only booleans: truthiness decides.
    assert!(eval_condition("env.CI", &ok).unwrap());
    assert!(!eval_condition("env.MISSING", &ok).unwrap());
    // Offsets of errors inside a wrapped condition point into the whole string.
    let e = eval_condition("${{ matrx.os }}", &ok).unwrap_err();
    assert_eq!((e.code(), e.offset()), ("expr.unknown_context", 4));
    let e = parse_condition("${{ true }} && ${{ false }}").unwrap_err();
    assert_eq!(e.code, "expr.condition_template");
}

#[test]
fn templates() {
    let t = parse_template("cargo +${{ matrix.rust }} test --target ${{ matrix.os }}-gnu").unwrap();
    assert_eq!(t.exprs().count(), 2);
    assert_eq!(
        t.render(&ctx()).unwrap(),
        "cargo +1.80 test --target linux-gnu"
    );
    let t = parse_template("no expressions at all").unwrap();
    assert!(t.is_literal());
    assert_eq!(t.render(&ctx()).unwrap(), "no expressions at all");
    assert_eq!(parse_template("").unwrap().render(&ctx()).unwrap(), "");
    // Values render as strings: null empty, numbers without .0, containers as JSON.
    let t =
        parse_template("[${{ null }}][${{ 3 }}][${{ 0.5 }}][${{ true }}][${{ fromJSON('[1]') }}]")
            .unwrap();
    assert_eq!(t.render(&ctx()).unwrap(), "[][3][0.5][true][[1]]");
    // `}}` inside a string does not end the expression.
    let t = parse_template("a ${{ format('{0}}}', 'x') }} b").unwrap();
    assert_eq!(t.render(&ctx()).unwrap(), "a x} b");
    // Offsets are relative to the template.
    let e = parse_template("echo ${{ matrix.os == }}").unwrap_err();
    assert_eq!((e.code, e.offset), ("expr.syntax", 22));
    let e = parse_template("echo ${{ matrix.os").unwrap_err();
    assert_eq!((e.code, e.offset), ("expr.unterminated_template", 5));
    let e = parse_template("echo ${{   }} x").unwrap_err();
    assert_eq!((e.code, e.offset), ("expr.empty", 5));
    let t = parse_template("x ${{ secrets.TOKEN }} ${{ matrix.os }}").unwrap();
    let used: Vec<String> = t.contexts_used().into_iter().map(|r| r.context).collect();
    assert_eq!(used, ["secrets", "matrix"]);
    // Typed values: a template that is one expression keeps the value's type.
    let t = parse_template("${{ inputs.count }}").unwrap();
    assert!(t.single_expr().is_some());
    assert_eq!(t.eval_value(&ctx()).unwrap(), Value::Number(2.0));
    let t = parse_template("n=${{ inputs.count }}").unwrap();
    assert!(t.single_expr().is_none());
    assert_eq!(t.eval_value(&ctx()).unwrap(), Value::String("n=2".into()));
    // A node's offset in a template points at it.
    let t = parse_template("ab${{ env.CI }}").unwrap();
    assert_eq!(t.exprs().next().unwrap().offset, 6);
}

#[test]
fn contexts_used_lists_references() {
    let e = parse(
        "needs.build.result == 'success' && contains(matrix['os'], env.X) || secrets[format('{0}', inputs.k)] || needs.*.result || ouro",
    )
    .unwrap();
    let refs: Vec<(String, Vec<String>)> = contexts_used(&e)
        .into_iter()
        .map(|r| (r.context, r.path))
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        refs,
        vec![
            ("needs".to_string(), s(&["build", "result"])),
            ("matrix".to_string(), s(&["os"])),
            ("env".to_string(), s(&["X"])),
            ("secrets".to_string(), s(&[])),
            ("inputs".to_string(), s(&["k"])),
            ("needs".to_string(), s(&["*", "result"])),
            ("ouro".to_string(), s(&[])),
        ]
    );
    let first = &contexts_used(&parse("  matrix.os").unwrap())[0];
    assert_eq!(
        first,
        &ContextRef {
            context: "matrix".into(),
            path: vec!["os".into()],
            offset: 2
        }
    );
    assert!(contexts_used(&parse("'a' == 'b'").unwrap()).is_empty());
    let funcs: Vec<Func> =
        expr::functions_used(&parse("always() && hashFiles('x') != ''").unwrap())
            .into_iter()
            .map(|(f, _)| f)
            .collect();
    assert_eq!(funcs, [Func::Always, Func::HashFiles]);
}

#[test]
fn contexts_can_be_restricted() {
    let e = parse("ouro.branch == 'main' && secrets.TOKEN != ''").unwrap();
    let err = expr::check_contexts(&e, &["ouro", "env", "inputs"], "`runs-on`").unwrap_err();
    assert_eq!((err.code, err.offset), ("expr.context_not_allowed", 25));
    assert_eq!(
        err.message,
        "`secrets` is not available in `runs-on`: only ouro, env, inputs are available there"
    );
    assert!(expr::check_contexts(&e, &["ouro", "secrets"], "a step").is_ok());
    assert!(expr::check_contexts(&parse("1 == 1").unwrap(), &[], "x").is_ok());
    // A condition built from a parsed expression gets the implicit success() too.
    let c = expr::Condition::from_expr(parse("env.CI").unwrap());
    assert!(c.implicit_success);
    assert!(!c.eval(&ctx().with_status(JobStatus::Failure)).unwrap());
    assert!(c.eval(&ctx()).unwrap());
}

#[test]
fn parse_errors_have_codes_and_offsets() {
    let cases: &[(&str, &str, usize)] = &[
        ("", "expr.empty", 0),
        ("   ", "expr.empty", 0),
        ("1 +", "expr.syntax", 2),
        ("a == 1", "expr.unknown_context", 0),
        ("github.ref", "expr.unknown_context", 0),
        ("  matrx.os", "expr.unknown_context", 2),
        ("foo(1)", "expr.unknown_function", 0),
        (
            "success() && contain('a', 'b')",
            "expr.unknown_function",
            13,
        ),
        ("contains('a')", "expr.arity", 0),
        ("success(1)", "expr.arity", 0),
        ("join()", "expr.arity", 0),
        ("toJSON(1, 2)", "expr.arity", 0),
        ("hashFiles()", "expr.arity", 0),
        ("'abc", "expr.unterminated_string", 0),
        ("1 == 'it''s", "expr.unterminated_string", 5),
        ("\"double\"", "expr.syntax", 0),
        ("1 = 1", "expr.syntax", 2),
        ("true & false", "expr.syntax", 5),
        ("true | false", "expr.syntax", 5),
        ("(1 == 1", "expr.syntax", 7),
        ("1 == 1)", "expr.syntax", 6),
        ("env.", "expr.syntax", 4),
        ("env.(x)", "expr.syntax", 4),
        ("env[", "expr.syntax", 4),
        ("env['a'", "expr.syntax", 7),
        ("contains('a' 'b')", "expr.syntax", 13),
        ("contains('a',)", "expr.syntax", 13),
        ("1 2", "expr.syntax", 2),
        ("12abc", "expr.bad_number", 0),
        ("0xZZ", "expr.bad_number", 0),
        ("1e", "expr.bad_number", 0),
        ("a ? b : c", "expr.syntax", 2),
        ("true ? 1 : 2", "expr.syntax", 5),
        ("== 1", "expr.syntax", 0),
        ("!", "expr.syntax", 1),
        ("€", "expr.syntax", 0),
        ("true && ${{ false }}", "expr.syntax", 8),
    ];
    for (src, code, offset) in cases {
        let e = parse(src).expect_err(src);
        assert_eq!((e.code, e.offset), (*code, *offset), "{src}: {}", e.message);
        assert!(!e.message.is_empty());
    }
}

#[test]
fn error_messages_snapshot() {
    let srcs = [
        "github.ref == 'x'",
        "matrx.os",
        "startswith(ouro.ref, 'v') && contians(env.X, 'y')",
        "contains('a')",
        "format('{0} {1}', 'a')",
        "\"hi\"",
        "1 = 1",
        "'open",
        "success() && ${{ env.X }}",
    ];
    let out: Vec<String> = srcs
        .iter()
        .map(|s| {
            let e = parse(s).unwrap_err();
            format!("{s}\n  {}@{}: {}", e.code, e.offset, e.message)
        })
        .collect();
    insta::assert_snapshot!(out.join("\n"));
}

#[test]
fn budgets_refuse_cleanly() {
    // Deep nesting: refused with a code, no stack overflow, whatever the construct.
    for deep in [
        format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000)),
        format!("{}true", "!".repeat(5000)),
        format!("{}1{}", "toJSON(".repeat(1000), ")".repeat(1000)),
        format!("env{}", "[env".repeat(1000)),
        std::iter::repeat_n("1", 1000)
            .collect::<Vec<_>>()
            .join(" == "),
        std::iter::repeat_n("1", 1000)
            .collect::<Vec<_>>()
            .join(" < "),
    ] {
        let e = parse(&deep[..deep.len().min(expr::MAX_EXPR_LEN)]).unwrap_err();
        assert!(
            matches!(e.code, "expr.too_deep"),
            "{}...: {} {}",
            &deep[..20],
            e.code,
            e.message
        );
    }
    // Just under the depth budget is fine.
    let ok = format!(
        "{}1{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert_eq!(
        eval(&parse(&ok).unwrap(), &ctx()).unwrap(),
        Value::Number(1.0)
    );
    // Long flat chains of && and || are not nesting.
    let chain = std::iter::repeat_n("true", 1000)
        .collect::<Vec<_>>()
        .join(" && ");
    assert_eq!(ev(&chain), json!(true));
    // Too long.
    let long = format!("'{}'", "a".repeat(expr::MAX_EXPR_LEN));
    assert_eq!(parse(&long).unwrap_err().code, "expr.too_long");
    // Output size.
    let big = "x".repeat(600 * 1024);
    let c = ctx().with_env([("BIG".to_string(), big)]);
    let e = eval(&parse("format('{0}{0}', env.BIG)").unwrap(), &c).unwrap_err();
    assert_eq!(e.code, "expr.too_large");
}

#[test]
fn hash_files_over_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src/nested")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join("Cargo.lock"), "lock v1\n").unwrap();
    std::fs::write(root.join("src/nested/Cargo.lock"), "nested lock\n").unwrap();
    std::fs::write(root.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(root.join("src/gen.rs"), "// generated\n").unwrap();
    std::fs::write(root.join(".git/Cargo.lock"), "not this one\n").unwrap();
    let p = DirHashFiles::new(root);
    let pats = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    assert_eq!(
        p.matching_files(&pats(&["**/Cargo.lock"])).unwrap(),
        ["Cargo.lock", "src/nested/Cargo.lock"]
    );
    assert_eq!(
        p.matching_files(&pats(&["src/**/*.rs", "!src/gen.rs"]))
            .unwrap(),
        ["src/main.rs"]
    );
    assert_eq!(
        p.matching_files(&pats(&["src"])).unwrap().len(),
        3,
        "a directory matches its files"
    );

    // The hash: sha256 over the sha256 of each file, in path order.
    use sha2::{Digest, Sha256};
    let mut outer = Sha256::new();
    outer.update(Sha256::digest(b"lock v1\n"));
    outer.update(Sha256::digest(b"nested lock\n"));
    let want = hex::encode(outer.finalize());
    assert_eq!(p.hash_files(&pats(&["**/Cargo.lock"])).unwrap(), want);
    // The same files through different patterns give the same hash; order of patterns is
    // irrelevant.
    assert_eq!(
        p.hash_files(&pats(&["src/nested/Cargo.lock", "Cargo.lock"]))
            .unwrap(),
        want
    );
    // Nothing matches: the empty string.
    assert_eq!(p.hash_files(&pats(&["**/*.py"])).unwrap(), "");
    // A change of content changes the hash.
    std::fs::write(root.join("Cargo.lock"), "lock v2\n").unwrap();
    assert_ne!(p.hash_files(&pats(&["**/Cargo.lock"])).unwrap(), want);
    // Patterns outside the workspace are refused.
    assert!(p.hash_files(&pats(&["../etc/passwd"])).is_err());
    assert!(p.hash_files(&pats(&["/etc/passwd"])).is_err());

    // Through the language, with the provider on the context.
    let c = ctx().with_hash_files(Arc::new(DirHashFiles::new(root)));
    let key = parse_template("cargo-${{ hashFiles('**/Cargo.lock') }}").unwrap();
    let rendered = key.render(&c).unwrap();
    assert_eq!(rendered.len(), "cargo-".len() + 64);
    assert_eq!(ev_in("hashFiles('nothing/*')", &c), json!(""));
    let e = eval(&parse("hashFiles('../x')").unwrap(), &c).unwrap_err();
    assert_eq!(e.code, "expr.hash_files");
}

#[cfg(unix)]
#[test]
fn hash_files_does_not_follow_links_out_of_the_workspace() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "outside\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("a.txt"), dir.path().join("inner.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
    let p = DirHashFiles::new(dir.path());
    assert_eq!(
        p.matching_files(&["**/*.txt".to_string()]).unwrap(),
        ["a.txt", "inner.txt"]
    );
}

/// A provider supplied by the runner is called with the patterns as strings.
#[test]
fn hash_files_uses_the_given_provider() {
    struct Fixed;
    impl HashFiles for Fixed {
        fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
            Ok(patterns.join("+"))
        }
    }
    let c = ctx().with_hash_files(Arc::new(Fixed));
    assert_eq!(
        ev_in("hashFiles('a', format('{0}', 1), 2)", &c),
        json!("a+1+2")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Parsing never panics on any input, and a successful parse evaluates without panicking.
    #[test]
    fn parse_never_panics(src in "\\PC{0,80}") {
        if let Ok(e) = parse(&src) {
            let _ = eval(&e, &ctx());
        }
        let _ = parse_template(&src);
        let _ = parse_condition(&src);
    }

    /// Inputs built from the language's own tokens reach deeper than random text.
    #[test]
    fn token_soup_never_panics(toks in proptest::collection::vec(
        proptest::sample::select(vec![
            "(", ")", "[", "]", ".", "*", ",", "!", "==", "!=", "<", "<=", ">", ">=", "&&", "||",
            "'s'", "''", "1", "-2.5e3", "0x1f", "null", "true", "false", "env", "matrix", "needs",
            "contains(", "format(", "fromJSON(", "toJSON(", "join(", "success()", "'{0}'", "${{", "}}",
        ]),
        0..40,
    )) {
        let src = toks.join(" ");
        if let Ok(e) = parse(&src) {
            let _ = eval(&e, &ctx());
            let _ = contexts_used(&e);
        }
        let _ = parse_template(&src);
    }

    /// String literals round-trip: any text, quoted with '' escapes, evaluates to itself.
    #[test]
    fn string_literals_round_trip(s in "\\PC{0,60}") {
        let src = format!("'{}'", s.replace('\'', "''"));
        prop_assert_eq!(ev(&src), json!(s));
    }

    /// Number literals round-trip through their shortest form.
    #[test]
    fn number_literals_round_trip(n in -1.0e12f64..1.0e12) {
        let src = format!("{n}");
        prop_assert_eq!(eval(&parse(&src).unwrap(), &ctx()).unwrap(), Value::Number(n));
        let shown = Value::Number(n).to_display();
        prop_assert_eq!(eval(&parse(&shown).unwrap(), &ctx()).unwrap(), Value::Number(n));
    }

    /// format() puts arguments back verbatim, and escaped braces come out single.
    #[test]
    fn format_round_trips(a in "\\PC{0,20}", b in "\\PC{0,20}") {
        let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let src = format!("format('{{{{{{1}}-{{0}}}}}}', {}, {})", q(&a), q(&b));
        prop_assert_eq!(ev(&src), json!(format!("{{{b}-{a}}}")));
    }
}
