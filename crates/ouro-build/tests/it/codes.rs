//! One case per diagnostic code: every code of `diag::CODES` has a fixture
//! (tests/fixtures/<code>.yml, whose first line says `# expect: LINE:COL CODE`; `LINE:*` where
//! the column is the expression parser's to choose, `*` for anywhere) or a generated
//! input, and produces that code at that position.

use std::fmt::Write as _;
use std::time::Instant;

use ouro_build::diag::{self, CODES};
use ouro_build::pipeline::{MAX_FILE_BYTES, MAX_JOBS, MAX_STEPS, lint};

use crate::{fixture, fixture_dir};

/// Inputs too big to commit as fixtures.
fn generated(code: &str) -> Option<(Vec<u8>, &'static str)> {
    Some(match code {
        diag::TOO_LARGE => {
            let mut s = String::from("jobs:\n  a:\n    steps:\n      - run: |\n");
            while s.len() <= MAX_FILE_BYTES {
                s.push_str("          echo 0123456789012345678901234567890123456789\n");
            }
            (s.into_bytes(), "1:1")
        }
        diag::TOO_MANY_JOBS => {
            let mut s = String::from("jobs:\n");
            for i in 0..=MAX_JOBS {
                let _ = writeln!(s, "  j{i}:\n    steps: [{{run: 'true'}}]");
            }
            (s.into_bytes(), "1:1")
        }
        diag::TOO_MANY_STEPS => {
            let mut s = String::from("jobs:\n  a:\n    steps:\n");
            for _ in 0..=MAX_STEPS {
                s.push_str("      - run: 'true'\n");
            }
            (s.into_bytes(), "3:5")
        }
        _ => return None,
    })
}

fn expectation(bytes: &[u8]) -> (String, String) {
    let first = String::from_utf8_lossy(bytes.split(|b| *b == b'\n').next().unwrap()).to_string();
    let rest = first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("fixture without `# expect:` line: {first}"));
    let (pos, code) = rest.split_once(' ').unwrap();
    (pos.to_string(), code.trim().to_string())
}

#[test]
fn every_code_has_a_case_that_produces_it_at_its_position() {
    let mut failures = Vec::new();
    for (code, _) in CODES {
        let short = code.strip_prefix("pipeline.").unwrap();
        let name = format!("{short}.yml");
        let (bytes, pos) = match generated(code) {
            Some((b, pos)) => (b, pos.to_string()),
            None => {
                assert!(
                    fixture_dir().join(&name).exists(),
                    "no fixture for {code}: add tests/fixtures/{name}"
                );
                let b = fixture(&name);
                let (pos, expected) = expectation(&b);
                assert_eq!(&expected, code, "the expect line of {name}");
                (b, pos)
            }
        };
        let t = Instant::now();
        let diags = lint(&name, &bytes);
        // No timing assertion; a hostile file is refused by budgets, not by a clock.
        let _ = t.elapsed();
        let hit = diags.iter().any(|d| {
            d.code == *code
                && d.is_error()
                && (pos == "*"
                    || format!("{}:{}", d.line, d.col) == pos
                    || format!("{}:*", d.line) == pos)
        });
        if !hit {
            failures.push(format!(
                "{code}: expected at {pos}, got:\n  {}",
                diags
                    .iter()
                    .map(|d| d.one_line())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixtures_hold_only_known_codes() {
    for e in std::fs::read_dir(fixture_dir()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let Some(short) = name.strip_suffix(".yml") else {
            continue;
        };
        if short == "full" || short.starts_with("render_") {
            continue;
        }
        let code = format!("pipeline.{short}");
        assert!(
            CODES.iter().any(|(c, _)| *c == code),
            "fixture {name} names no code"
        );
    }
}

#[test]
fn many_errors_are_reported_at_once() {
    let yaml = b"jobs:
  a:
    stpes: []
    needs: [nope]
    timeout-minutes: 99999
  b:
    steps:
      - uses: x/y@v1
      - name: no run
  c:
    name: no steps
";
    let diags = lint("many.yml", yaml);
    let codes: Vec<&str> = diags.iter().map(|d| d.code).collect();
    for want in [
        diag::UNKNOWN_KEY,
        diag::NO_STEPS,
        diag::NEEDS_UNKNOWN,
        diag::OUT_OF_RANGE,
        diag::USES_UNSUPPORTED,
        diag::STEP_WITHOUT_RUN,
    ] {
        assert!(codes.contains(&want), "{want} missing from {codes:?}");
    }
    // Sorted by position.
    let pos: Vec<(u32, u32)> = diags.iter().map(|d| (d.line, d.col)).collect();
    let mut sorted = pos.clone();
    sorted.sort();
    assert_eq!(pos, sorted);
}

#[test]
fn suggestions_and_cycle_paths() {
    let d = lint("u.yml", &fixture("unknown_key.yml"));
    // The misspelt `steps` explains the missing one: one diagnostic, not two.
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].help.as_deref(), Some("did you mean `steps`?"));
    let d = lint("n.yml", &fixture("needs_unknown.yml"));
    assert_eq!(d[0].help.as_deref(), Some("did you mean `build`?"));
    let d = lint("c.yml", &fixture("needs_cycle.yml"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].message.contains("`a` -> `b` -> `a`"),
        "{}",
        d[0].message
    );
    let d = lint(
        "self.yml",
        b"jobs:\n  a:\n    needs: a\n    steps: [{run: x}]\n",
    );
    assert!(d[0].message.contains("`a` -> `a`"), "{}", d[0].message);
    let d = lint("m.yml", &fixture("merge_key.yml"));
    assert!(d[0].message.contains("merge keys (`<<`) are not supported"));
    assert!(d[0].help.as_deref().unwrap().contains("repeat the keys"));
    let d = lint("u.yml", &fixture("uses_unsupported.yml"));
    assert_eq!(d[0].message, "actions are not supported yet; use `run:`");
}

#[test]
fn a_yaml_bomb_is_refused_by_a_budget() {
    let d = lint("bomb.yml", &fixture("yaml_budget.yml"));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, diag::YAML_BUDGET);
    // Deep nesting is a budget error too, not a stack overflow.
    let deep = format!("jobs: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let d = lint("deep.yml", deep.as_bytes());
    assert_eq!(d[0].code, diag::YAML_BUDGET, "{d:?}");
}

#[test]
fn not_utf8_points_at_the_bad_byte() {
    let d = lint("bad.yml", &fixture("not_utf8.yml"));
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].one_line(),
        "bad.yml:2:10: error[pipeline.not_utf8]: the file is not valid UTF-8 (byte 0xe9 at offset 42)"
    );
}

#[test]
fn more_semantic_checks() {
    let codes = |yaml: &str| -> Vec<String> {
        lint("x.yml", yaml.as_bytes())
            .iter()
            .map(|d| format!("{}:{} {}", d.line, d.col, d.code))
            .collect()
    };
    // An empty `run:` is a step without a command.
    assert_eq!(
        codes("jobs:\n  a:\n    steps:\n      - run: '  '\n"),
        ["4:14 pipeline.step_without_run"]
    );
    // A cron written as a number is still checked.
    assert_eq!(
        codes("on:\n  schedule: [{cron: 5}]\njobs:\n  a:\n    steps: [{run: x}]\n"),
        ["2:21 pipeline.invalid_cron"]
    );
    // Expressions are checked wherever they are, e.g. in a step's env (the column within the
    // value is the expression parser's to choose).
    let d = codes("jobs:\n  a:\n    steps:\n      - run: x\n        env:\n          A: ${{ }}\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("6:") && d[0].ends_with(" pipeline.expression"),
        "{d:?}"
    );
    // Matrix excludes are counted: 16 x 16 = 256 minus one is within the cap; 17 x 16 is not.
    let axis = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let m = |a: usize| {
        format!(
            "jobs:\n  a:\n    strategy:\n      matrix:\n        x: [{}]\n        y: [{}]\n        exclude: [{{x: 0, y: 0}}]\n    steps: [{{run: x}}]\n",
            axis(a),
            axis(16)
        )
    };
    assert!(codes(&m(16)).is_empty());
    assert_eq!(codes(&m(17)), ["5:9 pipeline.matrix_too_large"]);
    // Input defaults must fit their type.
    assert_eq!(
        codes(
            "on:\n  manual:\n    inputs:\n      n: {type: number, default: many}\njobs:\n  a:\n    steps: [{run: x}]\n"
        ),
        ["4:34 pipeline.invalid_input"]
    );
}

#[test]
fn expressions_are_checked_by_the_expression_language() {
    let diags = |yaml: &str| lint("x.yml", yaml.as_bytes());
    // An unknown function, a dangling operator, and text mixed with `${{ }}` in an `if:`.
    for (cond, expr_code) in [
        ("nosuch(1)", "expr.unknown_function"),
        ("ouro.branch ==", "expr.syntax"),
        (
            "\"${{ ouro.sha }} && ${{ ouro.ref }}\"",
            "expr.condition_template",
        ),
    ] {
        let d = diags(&format!(
            "jobs:\n  a:\n    if: {cond}\n    steps: [{{run: x}}]\n"
        ));
        assert_eq!(d.len(), 1, "{cond}: {d:?}");
        assert_eq!(d[0].code, "pipeline.expression", "{cond}");
        assert_eq!(d[0].line, 3, "{cond}");
        let help = d[0].help.clone().unwrap_or_default();
        assert!(help.starts_with(expr_code), "{cond}: {help}");
    }
    // The same expressions, written well, pass.
    let ok = diags(
        "jobs:\n  a:\n    if: ${{ startsWith(ouro.ref, 'refs/tags/') && success() }}\n    steps: [{run: \"echo ${{ format('{0}-{1}', ouro.branch, ouro.sha) }}\"}]\n",
    );
    assert!(ok.is_empty(), "{ok:?}");
}
