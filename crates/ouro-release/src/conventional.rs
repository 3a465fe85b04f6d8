//! Conventional Commits (<https://www.conventionalcommits.org/en/v1.0.0/>): reads a commit
//! message's header `type(scope)!: description`, its body and its `BREAKING CHANGE:` footer.
//!
//! Parsing never fails: a message that does not follow the format is returned with `kind: None`
//! and its first line as the description, so release notes can list it under "Other".

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A commit message read as a Conventional Commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Conventional {
    /// The type in lower case (`feat`, `fix`, `perf`, `docs`, ...); `None` when the header does not
    /// follow the format.
    pub kind: Option<String>,
    /// The scope in parentheses, trimmed (`api` in `feat(api): ...`).
    pub scope: Option<String>,
    /// A `!` before the colon, or a `BREAKING CHANGE:` / `BREAKING-CHANGE:` footer.
    pub breaking: bool,
    /// The header's description; the whole first line for a non-conventional message.
    pub description: String,
    /// Everything after the header (footers included), trimmed.
    pub body: String,
    /// The text of the `BREAKING CHANGE:` footer, if there is one.
    pub breaking_note: Option<String>,
}

impl Conventional {
    /// True when the message follows the Conventional Commits header format.
    pub fn is_conventional(&self) -> bool {
        self.kind.is_some()
    }
}

/// Reads a commit message. Never panics, whatever the text; `\r\n` line ends are accepted.
pub fn parse(message: &str) -> Conventional {
    let text = message.replace("\r\n", "\n");
    // Leading blank lines are not part of the header.
    let text = text.trim_start_matches(['\n', '\r', ' ', '\t']);
    let (header, rest) = match text.split_once('\n') {
        Some((h, r)) => (h.trim(), r),
        None => (text.trim(), ""),
    };
    let body = rest.trim().to_string();
    let breaking_note = breaking_footer(rest);
    let mut c = match header_parts(header) {
        Some((kind, scope, bang, description)) => Conventional {
            kind: Some(kind.to_ascii_lowercase()),
            scope,
            breaking: bang,
            description: description.to_string(),
            body,
            breaking_note: None,
        },
        None => Conventional {
            kind: None,
            scope: None,
            breaking: false,
            description: header.to_string(),
            body,
            breaking_note: None,
        },
    };
    if let Some(note) = breaking_note {
        c.breaking = true;
        c.breaking_note = (!note.is_empty()).then_some(note);
    }
    c
}

/// `type(scope)!: description` -> (type, scope, bang, description).
fn header_parts(header: &str) -> Option<(&str, Option<String>, bool, &str)> {
    let kind_len = header
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(header.len());
    let kind = &header[..kind_len];
    if kind.is_empty() || !kind.starts_with(|c: char| c.is_ascii_alphabetic()) || kind.len() > 32 {
        return None;
    }
    let mut rest = &header[kind_len..];
    let mut scope = None;
    if let Some(after) = rest.strip_prefix('(') {
        let close = after.find(')')?;
        let s = after[..close].trim();
        if s.is_empty() || s.contains('(') {
            return None;
        }
        scope = Some(s.to_string());
        rest = &after[close + 1..];
    }
    let bang = match rest.strip_prefix('!') {
        Some(r) => {
            rest = r;
            true
        }
        None => false,
    };
    let description = rest.strip_prefix(':')?;
    // The spec wants a space after the colon; `fix:x` is not a Conventional Commit (and
    // `http://...` or `12:30` never look like one).
    if !description.starts_with([' ', '\t']) {
        return None;
    }
    let description = description.trim();
    if description.is_empty() {
        return None;
    }
    Some((kind, scope, bang, description))
}

/// A footer line: `Token: value` or `Token #value`, where the token is a word with hyphens or
/// one of the two breaking-change spellings. Returns the token and the value.
fn footer_token(line: &str) -> Option<(&str, &str)> {
    for breaking in ["BREAKING CHANGE", "BREAKING-CHANGE"] {
        if let Some(v) = line
            .strip_prefix(breaking)
            .and_then(|rest| rest.strip_prefix(':'))
        {
            return Some((breaking, v));
        }
    }
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(line.len());
    if end == 0 {
        return None;
    }
    let rest = &line[end..];
    if let Some(v) = rest.strip_prefix(": ") {
        return Some((&line[..end], v));
    }
    if let Some(v) = rest.strip_prefix(" #") {
        return Some((&line[..end], v));
    }
    None
}

/// The text of the first `BREAKING CHANGE:` footer: its value and the lines that follow it up to
/// the next footer token.
fn breaking_footer(rest: &str) -> Option<String> {
    let mut lines = rest.lines();
    while let Some(line) = lines.next() {
        let Some((token, value)) = footer_token(line) else {
            continue;
        };
        if token != "BREAKING CHANGE" && token != "BREAKING-CHANGE" {
            continue;
        }
        let mut note = value.trim().to_string();
        for more in lines.by_ref() {
            if footer_token(more).is_some() {
                break;
            }
            if !note.is_empty() {
                note.push('\n');
            }
            note.push_str(more.trim_end());
        }
        let note = note.trim().to_string();
        // An empty footer still marks the change as breaking; the description then explains it.
        return Some(note);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms() {
        let c = parse("feat(api)!: drop v1");
        assert_eq!(c.kind.as_deref(), Some("feat"));
        assert_eq!(c.scope.as_deref(), Some("api"));
        assert!(c.breaking);
        assert_eq!(c.description, "drop v1");
        assert!(!parse("fix:nospace").is_conventional());
        assert!(!parse("Merge branch 'x'").is_conventional());
    }
}
