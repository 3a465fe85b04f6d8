//! Conventional Commit messages: headers, scopes, `!`, breaking footers, non-conventional messages.

use ouro_release::conventional::{Conventional, parse};
use proptest::prelude::*;

fn conv(kind: &str, scope: Option<&str>, breaking: bool, description: &str) -> Conventional {
    Conventional {
        kind: Some(kind.into()),
        scope: scope.map(str::to_string),
        breaking,
        description: description.into(),
        body: String::new(),
        breaking_note: None,
    }
}

#[test]
fn headers_with_type_scope_and_bang() {
    assert_eq!(
        parse("feat: add login"),
        conv("feat", None, false, "add login")
    );
    assert_eq!(
        parse("fix(api): handle empty body"),
        conv("fix", Some("api"), false, "handle empty body")
    );
    assert_eq!(
        parse("feat(api)!: drop the v1 routes"),
        conv("feat", Some("api"), true, "drop the v1 routes")
    );
    assert_eq!(
        parse("refactor!: rename"),
        conv("refactor", None, true, "rename")
    );
    // The type is read in lower case; the scope is trimmed.
    assert_eq!(parse("Feat( ui ): x"), conv("feat", Some("ui"), false, "x"));
    // Surrounding blank lines and CRLF do not matter.
    assert_eq!(
        parse("\n\nperf: faster\r\n"),
        conv("perf", None, false, "faster")
    );
}

#[test]
fn body_and_breaking_footers() {
    let c = parse(
        "feat(auth): tokens expire\n\nTokens now expire after a day.\n\nBREAKING CHANGE: clients must refresh\ntheir tokens daily.\nRefs: DEMO-4\n",
    );
    assert_eq!(c.kind.as_deref(), Some("feat"));
    assert!(c.breaking);
    assert_eq!(
        c.breaking_note.as_deref(),
        Some("clients must refresh\ntheir tokens daily.")
    );
    assert!(c.body.starts_with("Tokens now expire after a day."));
    assert!(c.body.ends_with("Refs: DEMO-4"));

    let c = parse("fix: y\n\nBREAKING-CHANGE: the hyphen form counts too");
    assert!(c.breaking);
    assert_eq!(
        c.breaking_note.as_deref(),
        Some("the hyphen form counts too")
    );

    // The footer must be upper case; "breaking change:" in prose is not a footer.
    let c = parse("fix: y\n\nThis is not a breaking change: really.");
    assert!(!c.breaking);
    assert_eq!(c.breaking_note, None);

    // `!` without a footer: breaking, no separate note.
    let c = parse("chore!: drop Node 16");
    assert!(c.breaking);
    assert_eq!(c.breaking_note, None);
}

#[test]
fn non_conventional_messages_keep_their_first_line() {
    for (msg, first) in [
        ("Merge branch 'feature/x'", "Merge branch 'feature/x'"),
        ("Update README.md\n\nMore words", "Update README.md"),
        (
            "fix:no space after the colon",
            "fix:no space after the colon",
        ),
        ("feat(): empty scope", "feat(): empty scope"),
        ("feat(api: unclosed scope", "feat(api: unclosed scope"),
        ("feat: ", "feat:"),
        ("http://example.com: a link", "http://example.com: a link"),
        ("12:30 meeting notes", "12:30 meeting notes"),
        ("", ""),
    ] {
        let c = parse(msg);
        assert_eq!(c.kind, None, "{msg:?}");
        assert!(!c.is_conventional());
        assert_eq!(c.description, first, "{msg:?}");
        assert_eq!(c.scope, None);
    }
    assert_eq!(parse("Update README.md\n\nMore words").body, "More words");
    // A breaking footer still counts on a non-conventional message.
    let c = parse("Rework the API\n\nBREAKING CHANGE: v1 is gone");
    assert_eq!(c.kind, None);
    assert!(c.breaking);
}

#[test]
fn lossy_non_utf8_messages_still_parse() {
    let raw = b"fix(caf\xe9): r\xe9sum\xe9 upload";
    let text = String::from_utf8_lossy(raw);
    let c = parse(&text);
    assert_eq!(c.kind.as_deref(), Some("fix"));
    assert_eq!(c.scope.as_deref(), Some("caf\u{fffd}"));
    assert_eq!(c.description, "r\u{fffd}sum\u{fffd} upload");
}

proptest! {
    #[test]
    fn parse_never_panics(s in any::<String>()) {
        let c = parse(&s);
        // The description is always one line of the input.
        prop_assert!(!c.description.contains('\n'));
    }

    #[test]
    fn parse_never_panics_on_header_like_text(
        kind in "[a-zA-Z]{0,6}",
        scope in "(\\([^\n]{0,8}\\))?",
        bang in "!?",
        sep in "(: |:|;| )",
        rest in "[^\u{0}]{0,40}",
    ) {
        let msg = format!("{kind}{scope}{bang}{sep}{rest}");
        let c = parse(&msg);
        if c.is_conventional() {
            prop_assert_eq!(c.kind.clone().unwrap(), kind.to_ascii_lowercase());
            prop_assert_eq!(c.breaking || !bang.is_empty(), c.breaking);
        }
    }
}
