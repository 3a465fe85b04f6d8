//! Snapshots of the rendered diagnostics (rustc-style and one-line) for representative files.

use ouro_build::pipeline::lint;

use crate::fixture;

fn render_all(name: &str, bytes: &[u8]) -> String {
    let text = std::str::from_utf8(bytes).ok();
    let diags = lint(name, bytes);
    let mut out = String::new();
    for d in &diags {
        out.push_str(&d.render(text));
        out.push('\n');
    }
    out.push_str("---- one-line form ----\n");
    for d in &diags {
        out.push_str(&d.one_line());
        out.push('\n');
    }
    out
}

#[test]
fn many_problems_in_one_file() {
    let name = ".ouro/pipelines/ci.yml";
    insta::assert_snapshot!(render_all(name, &fixture("render_many.yml")));
}

#[test]
fn merge_key_and_duplicate_key() {
    insta::assert_snapshot!(
        "merge_key",
        render_all("merge.yml", &fixture("merge_key.yml"))
    );
    insta::assert_snapshot!(
        "duplicate_key",
        render_all("dup.yml", &fixture("duplicate_key.yml"))
    );
}

#[test]
fn syntax_error_and_not_utf8() {
    insta::assert_snapshot!("syntax", render_all("s.yml", &fixture("yaml_syntax.yml")));
    insta::assert_snapshot!("not_utf8", render_all("u.yml", &fixture("not_utf8.yml")));
}
