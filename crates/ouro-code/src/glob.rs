//! Glob patterns for branch names and file paths: `*` matches any characters except `/`, `**`
//! matches any characters including `/`, `?` matches one character except `/`; everything else
//! matches itself.

/// True when `pattern` matches all of `text`.
pub fn matches(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                // `**/` also matches no directory at all.
                let rest = &p[2..];
                if rest.first() == Some(&b'/') && go(&rest[1..], t) {
                    return true;
                }
                (0..=t.len()).any(|i| go(rest, &t[i..]))
            }
            Some(b'*') => {
                let rest = &p[1..];
                for i in 0..=t.len() {
                    if go(rest, &t[i..]) {
                        return true;
                    }
                    if t.get(i) == Some(&b'/') {
                        break;
                    }
                }
                false
            }
            Some(b'?') => t.first().is_some_and(|c| *c != b'/') && go(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        assert!(matches("main", "main"));
        assert!(!matches("main", "main2"));
        assert!(matches("release/*", "release/1.0"));
        assert!(!matches("release/*", "release/1.0/hotfix"));
        assert!(matches("release/**", "release/1.0/hotfix"));
        assert!(matches("*", "feature"));
        assert!(!matches("*", "feature/x"));
        assert!(matches("v?", "v1"));
        assert!(matches("tests/**/*.pem", "tests/a/b/k.pem"));
        assert!(matches("tests/**/*.pem", "tests/k.pem"));
        assert!(matches("**/fixtures/*", "a/b/fixtures/x"));
        assert!(!matches("docs/*", "src/docs/x"));
    }
}
