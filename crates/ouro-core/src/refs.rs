//! Item references in free text (`DEMO-42`, `fixes DEMO-1, DEMO-2 and DEMO-3`).
//!
//! The one parser every phase uses: Code (commit messages, branch names), change request titles
//! and descriptions, Build and Release notes. Syntax in `docs/references.md`.

use serde::Serialize;

/// What a reference asks for when the change lands; all three close the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Fixes,
    Closes,
    Resolves,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    /// `DEMO-42`
    pub key: String,
    /// `DEMO`
    pub project_key: String,
    /// `42`
    pub number: u64,
    pub action: Option<Action>,
    /// Byte offsets of `key` in the text (of its first occurrence).
    pub span: (usize, usize),
}

/// Whether `s` is a project key: 2 to 10 characters, `A-Z` then `A-Z`/`0-9`.
pub fn is_project_key(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=10).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Every distinct item reference in `text`, in order of first appearance. A key mentioned twice
/// appears once, with an action if any mention had one (the first action wins).
pub fn parse(text: &str) -> Vec<Reference> {
    let found = scan(text);
    let mut out: Vec<Reference> = Vec::new();
    let mut prev: Option<(usize, Option<Action>)> = None; // (end, action) of the previous match
    for (start, end, dash) in found {
        let gap_from = prev.map_or(0, |(e, _)| e);
        let gap = &text[gap_from..start];
        // A list continues the previous reference's action: "fixes and A-3".
        let action = match prev {
            Some((_, Some(a))) if is_list_separator(gap) => Some(a),
            _ => action_before(gap),
        };
        prev = Some((end, action));
        let key = &text[start..end];
        let Ok(number) = text[dash + 1..end].parse::<u64>() else {
            continue;
        };
        if let Some(existing) = out.iter_mut().find(|r| r.key == key) {
            if existing.action.is_none() {
                existing.action = action;
            }
            continue;
        }
        out.push(Reference {
            key: key.to_owned(),
            project_key: text[start..dash].to_owned(),
            number,
            action,
            span: (start, end),
        });
    }
    out
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `(start, end, dash)` byte offsets of each well-formed key, at word boundaries.
fn scan(text: &str) -> Vec<(usize, usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_uppercase() || text[..i].chars().next_back().is_some_and(is_word_char)
        {
            i += 1;
            continue;
        }
        // Project key, then '-', then a number without a leading zero.
        let mut j = i + 1;
        while j < bytes.len() && (bytes[j].is_ascii_uppercase() || bytes[j].is_ascii_digit()) {
            j += 1;
        }
        let ok_key = is_project_key(&text[i..j]) && bytes.get(j) == Some(&b'-');
        let digits_from = j + 1;
        let mut k = digits_from;
        while ok_key && k < bytes.len() && bytes[k].is_ascii_digit() {
            k += 1;
        }
        let ok_number = ok_key && k > digits_from && bytes[digits_from] != b'0';
        // The number must end the word: not `DEMO-4a`, `DEMO-4_x`, nor a version `DEMO-4.5`.
        // (`k` is a char boundary only when the number was read.)
        let ok_end = ok_number
            && match text[k..].chars().next() {
                None => true,
                Some('.') => !bytes.get(k + 1).is_some_and(u8::is_ascii_digit),
                Some(c) => !is_word_char(c),
            };
        if ok_end {
            out.push((i, k, j));
            i = k;
        } else {
            // Skip the rest of this word so a key is never matched inside it (`XYDEMO-4` is
            // one word, `ABCDEFGHIJK-1` is too long, not a suffix of something valid).
            i = j.max(i + 1);
        }
    }
    out
}

/// Text between two references that keeps a list going: `,`, `and`, `&`, `/`, whitespace.
fn is_list_separator(gap: &str) -> bool {
    let rest = gap.trim();
    let rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    let rest = rest
        .strip_prefix("and")
        .or_else(|| rest.strip_prefix('&'))
        .or_else(|| rest.strip_prefix('/'))
        .unwrap_or(rest);
    rest.trim().is_empty()
}

/// The action keyword that ends `gap` ("... fixes " / "Closes: "), if any.
fn action_before(gap: &str) -> Option<Action> {
    // The keyword must be separated from the key by whitespace and/or one ':'.
    if !gap.ends_with(|c: char| c.is_whitespace() || c == ':') {
        return None;
    }
    let g = gap.trim_end();
    let g = g.strip_suffix(':').unwrap_or(g);
    let word_start = g
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_ascii_alphabetic())
        .last()
        .map(|(i, _)| i)?;
    // Not the tail of a longer word ("prefix DEMO-1" is not "fix").
    if g[..word_start]
        .chars()
        .next_back()
        .is_some_and(is_word_char)
    {
        return None;
    }
    match g[word_start..].to_ascii_lowercase().as_str() {
        "fix" | "fixes" | "fixed" => Some(Action::Fixes),
        "close" | "closes" | "closed" => Some(Action::Closes),
        "resolve" | "resolves" | "resolved" => Some(Action::Resolves),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use proptest::prelude::*;

    /// (key, action) pairs, the compact form for the table.
    fn keys(text: &str) -> Vec<(String, Option<Action>)> {
        parse(text).into_iter().map(|r| (r.key, r.action)).collect()
    }

    /// A text and the (key, action) pairs expected from it.
    type Case<'a> = (&'a str, &'a [(&'a str, Option<Action>)]);

    #[test]
    fn commit_messages() {
        let table: &[Case] = &[
            ("DEMO-42", &[("DEMO-42", None)]),
            ("Add login form (DEMO-42)", &[("DEMO-42", None)]),
            ("DEMO-42: add login form", &[("DEMO-42", None)]),
            ("[DEMO-42] add login form", &[("DEMO-42", None)]),
            ("Fixes DEMO-42", &[("DEMO-42", Some(Fixes))]),
            ("fix DEMO-42", &[("DEMO-42", Some(Fixes))]),
            ("Fixed: DEMO-42", &[("DEMO-42", Some(Fixes))]),
            ("FIXES DEMO-42", &[("DEMO-42", Some(Fixes))]),
            ("closes DEMO-7", &[("DEMO-7", Some(Closes))]),
            ("Close DEMO-7", &[("DEMO-7", Some(Closes))]),
            ("closed:DEMO-7", &[("DEMO-7", Some(Closes))]),
            ("Resolves OPS2-19", &[("OPS2-19", Some(Resolves))]),
            ("resolved  OPS2-19", &[("OPS2-19", Some(Resolves))]),
            ("resolve\tOPS2-19", &[("OPS2-19", Some(Resolves))]),
            (
                "Refactor session cache\n\nfixes DEMO-1, DEMO-2 and DEMO-3",
                &[
                    ("DEMO-1", Some(Fixes)),
                    ("DEMO-2", Some(Fixes)),
                    ("DEMO-3", Some(Fixes)),
                ],
            ),
            (
                "closes DEMO-1 & DEMO-2, and DEMO-3",
                &[
                    ("DEMO-1", Some(Closes)),
                    ("DEMO-2", Some(Closes)),
                    ("DEMO-3", Some(Closes)),
                ],
            ),
            (
                "Fixes DEMO-1. See also DEMO-2",
                &[("DEMO-1", Some(Fixes)), ("DEMO-2", None)],
            ),
            (
                "DEMO-1 fixes DEMO-2",
                &[("DEMO-1", None), ("DEMO-2", Some(Fixes))],
            ),
            (
                "Relates to DEMO-5, fixes DEMO-6",
                &[("DEMO-5", None), ("DEMO-6", Some(Fixes))],
            ),
            // Dedupe: once, keeping the action from any mention.
            ("DEMO-9 ... closes DEMO-9", &[("DEMO-9", Some(Closes))]),
            ("fixes DEMO-9, DEMO-9", &[("DEMO-9", Some(Fixes))]),
            ("fixes DEMO-9; resolves DEMO-9", &[("DEMO-9", Some(Fixes))]),
            // Two projects.
            ("OPS-1 and WEB-2", &[("OPS-1", None), ("WEB-2", None)]),
            // Branch names and paths.
            ("feature/DEMO-42-login", &[("DEMO-42", None)]),
            ("Merge branch 'DEMO-42_x'", &[]),
            (
                "https://ouro.example/demo/items/DEMO-42",
                &[("DEMO-42", None)],
            ),
            ("see abc/DEMO-4x", &[]),
            ("end of sentence DEMO-4.", &[("DEMO-4", None)]),
            ("question DEMO-4?", &[("DEMO-4", None)]),
            // Not references.
            ("XDEMO-4 is its own key", &[("XDEMO-4", None)]),
            ("aDEMO-4", &[]),
            ("DEMO-4a", &[]),
            ("DEMO-0", &[]),
            ("DEMO-007", &[]),
            ("DEMO-", &[]),
            ("DEMO 42", &[]),
            ("demo-42", &[]),
            ("Demo-42", &[]),
            ("D-42", &[]),
            ("ABCDEFGHIJ-1", &[("ABCDEFGHIJ-1", None)]),
            ("ABCDEFGHIJK-1", &[]),
            ("2DEMO-1", &[]),
            ("UTF-8 text", &[("UTF-8", None)]),
            ("bump to v1.2 (DEMO-4.5)", &[]),
            ("éDEMO-4", &[]),
            ("DEMO-99999999999999999999999", &[]),
            ("prefix DEMO-1", &[("DEMO-1", None)]),
            ("unfixed DEMO-1", &[("DEMO-1", None)]),
            ("fix(DEMO-1): conventional commit", &[("DEMO-1", None)]),
            ("fixes: DEMO-1", &[("DEMO-1", Some(Fixes))]),
            ("fixes -> DEMO-1", &[("DEMO-1", None)]),
            ("", &[]),
        ];
        for (text, want) in table {
            let want: Vec<_> = want.iter().map(|(k, a)| (k.to_string(), *a)).collect();
            assert_eq!(keys(text), want, "{text:?}");
        }
    }

    #[test]
    fn fields_and_spans() {
        let text = "Fixes DEMO-42 and OPS2-7";
        let refs = parse(text);
        assert_eq!(
            refs[0],
            Reference {
                key: "DEMO-42".into(),
                project_key: "DEMO".into(),
                number: 42,
                action: Some(Fixes),
                span: (6, 13),
            }
        );
        assert_eq!(refs[1].project_key, "OPS2");
        assert_eq!(refs[1].number, 7);
        assert_eq!(&text[refs[1].span.0..refs[1].span.1], "OPS2-7");
        // Multi-byte text before the key: spans are bytes.
        let text = "résumé → DEMO-3";
        let r = &parse(text)[0];
        assert_eq!(&text[r.span.0..r.span.1], "DEMO-3");
    }

    #[test]
    fn project_keys() {
        for ok in ["DEMO", "OPS2", "AB", "A1", "ABCDEFGHIJ"] {
            assert!(is_project_key(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "demo",
            "Demo",
            "1AB",
            "AB-C",
            "ABCDEFGHIJK",
            "DÉMO",
            "AB ",
        ] {
            assert!(!is_project_key(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_spans_are_exact(text in "\\PC{0,80}") {
            for r in parse(&text) {
                prop_assert_eq!(&text[r.span.0..r.span.1], r.key.as_str());
                prop_assert_eq!(format!("{}-{}", r.project_key, r.number), r.key.clone());
                prop_assert!(is_project_key(&r.project_key));
                prop_assert!(r.number >= 1);
            }
        }

        /// Key-heavy input, where plain random text rarely forms a key.
        #[test]
        fn key_like_text(text in "(DEMO-|OPS2-|fixes |and |, |[0-9]|[A-Za-z]|[-_./: ]|é){0,40}") {
            for r in parse(&text) {
                prop_assert_eq!(&text[r.span.0..r.span.1], r.key.as_str());
                let before = text[..r.span.0].chars().next_back();
                prop_assert!(!before.is_some_and(is_word_char), "{:?}", text);
            }
        }

        #[test]
        fn finds_keys_in_noise(
            pre in "[ a-z,.:()\\[\\]/é→]{0,10}",
            key in "[A-Z][A-Z0-9]{1,9}",
            n in 1u64..1_000_000,
            post in "[ ,.:()\\[\\]/]{0,10}",
        ) {
            prop_assume!(!pre.ends_with(|c: char| c.is_alphanumeric()));
            prop_assume!(!post.starts_with('.') || !post[1..].starts_with(|c: char| c.is_ascii_digit()));
            let text = format!("{pre}{key}-{n}{post}");
            let refs = parse(&text);
            prop_assert_eq!(refs.len(), 1, "{:?}", text);
            prop_assert_eq!(refs[0].key.clone(), format!("{key}-{n}"));
            prop_assert_eq!(refs[0].span.0, pre.len());
        }
    }
}
