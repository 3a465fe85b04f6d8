//! Secret scanning: the rules that find credentials in the added lines of pushed commits, and
//! the repository's allow-list file. Matching is hand-written (no regex engine): every rule is a
//! prefix or shape test over one line, so a line is scanned in linear time. The rules, their ids
//! and examples are documented in `docs/push-rules.md`; ids are stable.

use sha2::{Digest, Sha256};

/// One rule of the table: a stable id and what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
}

/// Every rule, in the order a line is checked (a more specific rule wins over an overlapping
/// later one).
pub const RULES: &[Rule] = &[
    Rule {
        id: "private-key",
        title: "PEM private key block (-----BEGIN ... PRIVATE KEY-----)",
    },
    Rule {
        id: "aws-access-key-id",
        title: "AWS access key id (AKIA/ASIA/ABIA/ACCA and 16 upper-case letters or digits)",
    },
    Rule {
        id: "github-token",
        title: "GitHub token (ghp_, gho_, ghu_, ghs_, ghr_ and 36 characters, or github_pat_)",
    },
    Rule {
        id: "slack-token",
        title: "Slack token (xoxb-, xoxa-, xoxp-, xoxr-, xoxs-) or incoming webhook URL",
    },
    Rule {
        id: "gcp-service-account",
        title: "Google Cloud service account key (\"private_key_id\" of 40 hex digits) or API key (AIza...)",
    },
    Rule {
        id: "generic-assignment",
        title: "A literal assigned to a name ending in TOKEN, SECRET, PASSWORD, PASSWD, API_KEY, ACCESS_KEY or PRIVATE_KEY",
    },
    Rule {
        id: "high-entropy",
        title: "A quoted string of 32+ base64 characters mixing upper case, lower case and digits, with Shannon entropy of at least 4.3 bits per character",
    },
];

/// The entropy (bits per character) from which a long quoted token counts as a secret.
pub const ENTROPY_THRESHOLD: f64 = 4.3;
/// The shortest token `high-entropy` looks at.
pub const ENTROPY_MIN_LEN: usize = 32;
/// The shortest literal `generic-assignment` looks at.
pub const ASSIGNMENT_MIN_LEN: usize = 8;

pub fn is_rule(id: &str) -> bool {
    RULES.iter().any(|r| r.id == id)
}

/// A match in one line: the rule and the byte range of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: &'static str,
    pub start: usize,
    pub end: usize,
}

impl Hit {
    pub fn secret<'a>(&self, line: &'a str) -> &'a str {
        &line[self.start..self.end]
    }
}

/// The secret with most of it hidden: a few leading characters and the length.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    let keep = (n / 5).min(4);
    let head: String = secret.chars().take(keep).collect();
    format!("{head}{} ({n} characters)", "*".repeat(8))
}

/// A short stable fingerprint of a secret (the first 16 hex digits of its SHA-256), which the
/// allow-list file can name without containing the secret.
pub fn fingerprint(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Finds `needle` at every position; calls `f(position)`.
fn each<F: FnMut(usize)>(hay: &str, needle: &str, mut f: F) {
    let mut from = 0;
    while let Some(i) = hay[from..].find(needle) {
        f(from + i);
        from += i + needle.len();
    }
}

/// The length of the run of bytes from `at` that satisfy `ok`.
fn run_len(b: &[u8], at: usize, ok: impl Fn(u8) -> bool) -> usize {
    b[at.min(b.len())..].iter().take_while(|c| ok(**c)).count()
}

fn private_key(line: &str, out: &mut Vec<Hit>) {
    each(line, "-----BEGIN ", |i| {
        let rest = &line[i + 11..];
        let kind_len = run_len(rest.as_bytes(), 0, |c| c.is_ascii_uppercase() || c == b' ');
        let kind = &rest[..kind_len];
        if kind.ends_with("PRIVATE KEY") && rest[kind_len..].starts_with("-----") {
            out.push(Hit {
                rule: "private-key",
                start: i,
                end: i + 11 + kind_len + 5,
            });
        }
    });
}

fn aws(line: &str, out: &mut Vec<Hit>) {
    let b = line.as_bytes();
    for prefix in ["AKIA", "ASIA", "ABIA", "ACCA"] {
        each(line, prefix, |i| {
            if i > 0 && word(b[i - 1]) {
                return;
            }
            let n = run_len(b, i + 4, |c| c.is_ascii_uppercase() || c.is_ascii_digit());
            if n == 16 && !b.get(i + 20).is_some_and(|c| word(*c)) {
                out.push(Hit {
                    rule: "aws-access-key-id",
                    start: i,
                    end: i + 20,
                });
            }
        });
    }
}

fn github(line: &str, out: &mut Vec<Hit>) {
    let b = line.as_bytes();
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        each(line, prefix, |i| {
            if i > 0 && word(b[i - 1]) {
                return;
            }
            let n = run_len(b, i + 4, |c| c.is_ascii_alphanumeric());
            if (36..=255).contains(&n) && b.get(i + 4 + n).is_none_or(|c| *c != b'_') {
                out.push(Hit {
                    rule: "github-token",
                    start: i,
                    end: i + 4 + n,
                });
            }
        });
    }
    each(line, "github_pat_", |i| {
        if i > 0 && word(b[i - 1]) {
            return;
        }
        let n = run_len(b, i + 11, word);
        if n >= 60 {
            out.push(Hit {
                rule: "github-token",
                start: i,
                end: i + 11 + n,
            });
        }
    });
}

fn slack(line: &str, out: &mut Vec<Hit>) {
    let b = line.as_bytes();
    each(line, "xox", |i| {
        if i > 0 && word(b[i - 1]) {
            return;
        }
        let Some(kind) = b.get(i + 3) else { return };
        if !matches!(kind, b'a' | b'b' | b'p' | b'r' | b's') || b.get(i + 4) != Some(&b'-') {
            return;
        }
        let n = run_len(b, i + 5, |c| c.is_ascii_alphanumeric() || c == b'-');
        let digits = b[i + 5..i + 5 + n]
            .iter()
            .filter(|c| c.is_ascii_digit())
            .count();
        if n >= 20 && digits >= 6 {
            out.push(Hit {
                rule: "slack-token",
                start: i,
                end: i + 5 + n,
            });
        }
    });
    let hook = "https://hooks.slack.com/services/";
    each(line, hook, |i| {
        let n = run_len(b, i + hook.len(), |c| {
            c.is_ascii_alphanumeric() || c == b'/'
        });
        if n >= 20 && b[i + hook.len()..i + hook.len() + n].contains(&b'/') {
            out.push(Hit {
                rule: "slack-token",
                start: i,
                end: i + hook.len() + n,
            });
        }
    });
}

fn gcp(line: &str, out: &mut Vec<Hit>) {
    let b = line.as_bytes();
    each(line, "\"private_key_id\"", |i| {
        let mut j = i + 16;
        j += run_len(b, j, |c| c == b' ' || c == b'\t');
        if b.get(j) != Some(&b':') {
            return;
        }
        j += 1;
        j += run_len(b, j, |c| c == b' ' || c == b'\t');
        if b.get(j) != Some(&b'"') {
            return;
        }
        let n = run_len(b, j + 1, |c| c.is_ascii_hexdigit());
        if n == 40 && b.get(j + 1 + n) == Some(&b'"') {
            out.push(Hit {
                rule: "gcp-service-account",
                start: j + 1,
                end: j + 1 + n,
            });
        }
    });
    each(line, "AIza", |i| {
        if i > 0 && word(b[i - 1]) {
            return;
        }
        let n = run_len(b, i + 4, |c| {
            c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
        });
        if n == 35 {
            out.push(Hit {
                rule: "gcp-service-account",
                start: i,
                end: i + 39,
            });
        }
    });
}

const SECRET_NAMES: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "API_KEY",
    "APIKEY",
    "ACCESS_KEY",
    "SECRET_KEY",
    "PRIVATE_KEY",
];

const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "change_me",
    "change-me",
    "password",
    "secret",
    "example",
    "placeholder",
    "redacted",
    "dummy",
    "your_",
    "your-",
    "yourtoken",
    "xxxx",
    "****",
    "...",
    "todo",
    "fixme",
    "notasecret",
    "not-a-secret",
    "sample",
    "test",
    "fake",
    "mock",
];

/// True for values that are obviously not a real secret: templates, references, placeholders.
fn placeholder(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    if v.contains("${")
        || v.contains("{{")
        || v.contains("%(")
        || (v.starts_with('<') && v.ends_with('>'))
        || v.starts_with('$')
        || v.chars().any(char::is_whitespace)
    {
        return true;
    }
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return true;
    }
    let first = v.chars().next();
    v.chars().all(|c| Some(c) == first)
}

fn secret_name(name: &str) -> bool {
    let n: String = name
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    SECRET_NAMES.iter().any(|s| {
        n.ends_with(s) && {
            // The suffix starts the name or follows a separator or a lower-to-upper change:
            // API_TOKEN, apiToken, token; not "tokenizer_input" (that ends differently anyway).
            let at = n.len() - s.len();
            at == 0 || n.as_bytes()[at - 1] == b'_' || {
                let orig = name.as_bytes();
                orig[at - 1].is_ascii_lowercase() && orig[at].is_ascii_uppercase()
            }
        }
    })
}

fn assignment(line: &str, out: &mut Vec<Hit>) {
    let b = line.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c != b'=' && c != b':' {
            continue;
        }
        // `==`, `:=`/`=` after `!<>`, `::` are comparisons or paths, not assignments.
        if b.get(i + 1) == Some(&b'=')
            || (i > 0 && matches!(b[i - 1], b'=' | b'!' | b'<' | b'>' | b':'))
            || (c == b':' && b.get(i + 1) == Some(&b':'))
        {
            continue;
        }
        // The name: identifier characters before the operator, maybe quoted and spaced.
        let mut j = i;
        while j > 0 && b[j - 1] == b' ' {
            j -= 1;
        }
        if j > 0 && (b[j - 1] == b'"' || b[j - 1] == b'\'') {
            j -= 1;
        }
        let end = j;
        while j > 0 && (word(b[j - 1]) || b[j - 1] == b'-' || b[j - 1] == b'.') {
            j -= 1;
        }
        if j == end || !secret_name(&line[j..end]) {
            continue;
        }
        // The value: a quoted literal, or an unquoted run up to whitespace, ',' or ';'.
        let mut k = i + 1;
        k += run_len(b, k, |c| c == b' ' || c == b'\t');
        let (start, stop, quoted) = match b.get(k) {
            Some(q @ (b'"' | b'\'' | b'`')) => {
                let n = run_len(b, k + 1, |c| c != *q);
                if b.get(k + 1 + n) != Some(q) {
                    continue;
                }
                (k + 1, k + 1 + n, true)
            }
            Some(_) => {
                let n = run_len(b, k, |c| !c.is_ascii_whitespace() && c != b',' && c != b';');
                (k, k + n, false)
            }
            None => continue,
        };
        let v = &line[start..stop];
        if v.len() < ASSIGNMENT_MIN_LEN || placeholder(v) {
            continue;
        }
        if !quoted {
            // Code, not a literal: calls, indexing, attribute access, or a bare identifier.
            if v.bytes()
                .any(|c| matches!(c, b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'.' | b'<'))
                || v.bytes().all(|c| c.is_ascii_alphabetic() || c == b'_')
                // Type annotations and paths (`token: token::Paren`), references, escapes.
                || v.contains("::")
                || v.starts_with(['&', '*', '\\', '_', ':'])
                // A snake_case identifier (`SECRET = default_secret_v2`).
                || (v.contains('_')
                    && v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                    && v.as_bytes()[0].is_ascii_alphabetic())
                || matches!(v, "true" | "false" | "null" | "None" | "nil")
            {
                continue;
            }
        }
        out.push(Hit {
            rule: "generic-assignment",
            start,
            end: stop,
        });
    }
}

/// Shannon entropy of a string, in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// The share of `v` covered by capitalised words (`[A-Z][a-z]{2,}`): identifiers such as
/// `PropertyNameLongEastAsianWidthV1` score over 0.75; random base64 rarely over 0.6.
fn camel_coverage(v: &str) -> f64 {
    let b = v.as_bytes();
    let (mut i, mut covered) = (0, 0);
    while i < b.len() {
        if b[i].is_ascii_uppercase() {
            let n = run_len(b, i + 1, |c| c.is_ascii_lowercase());
            if n >= 2 {
                covered += n + 1;
                i += n + 1;
                continue;
            }
        }
        i += 1;
    }
    covered as f64 / b.len().max(1) as f64
}

/// Looks like code or an alphabet rather than a key: camel-case words, `snake_case` names
/// (one underscore per 10 characters or more), or 5 consecutive characters in sequence
/// (`ABCDE`, `01234`).
fn not_random(v: &str) -> bool {
    let b = v.as_bytes();
    let underscores = b.iter().filter(|c| **c == b'_').count();
    camel_coverage(v) >= 0.75
        || (underscores >= 3 && underscores * 10 >= b.len())
        || b.windows(5)
            .any(|w| w.windows(2).all(|p| p[1] == p[0].wrapping_add(1)))
}

fn high_entropy(line: &str, out: &mut Vec<Hit>) {
    let b = line.as_bytes();
    let b64 = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'_' | b'-');
    let mut i = 0;
    while i < b.len() {
        if !matches!(b[i], b'"' | b'\'' | b'`') {
            i += 1;
            continue;
        }
        let q = b[i];
        let n = run_len(b, i + 1, b64);
        let (start, end) = (i + 1, i + 1 + n);
        if b.get(end) == Some(&q) && n >= ENTROPY_MIN_LEN {
            let v = &line[start..end];
            let mixed = v.bytes().any(|c| c.is_ascii_uppercase())
                && v.bytes().any(|c| c.is_ascii_lowercase())
                && v.bytes().any(|c| c.is_ascii_digit());
            let integrity = ["sha1-", "sha256-", "sha384-", "sha512-"]
                .iter()
                .any(|p| v.starts_with(p));
            if mixed
                && !integrity
                && !v.contains("//")
                && !not_random(v)
                && entropy(v) >= ENTROPY_THRESHOLD
            {
                out.push(Hit {
                    rule: "high-entropy",
                    start,
                    end,
                });
            }
            i = end + 1;
        } else {
            i = end.max(i + 1);
        }
    }
}

type Finder = fn(&str, &mut Vec<Hit>);

/// Every hit of the enabled rules in one line, earlier rules winning over overlapping later
/// ones, ordered by position.
pub fn scan_line(line: &str, enabled: &dyn Fn(&str) -> bool) -> Vec<Hit> {
    let finders: [(&str, Finder); 7] = [
        ("private-key", private_key),
        ("aws-access-key-id", aws),
        ("github-token", github),
        ("slack-token", slack),
        ("gcp-service-account", gcp),
        ("generic-assignment", assignment),
        ("high-entropy", high_entropy),
    ];
    let mut kept: Vec<Hit> = Vec::new();
    for (id, find) in finders {
        if !enabled(id) {
            continue;
        }
        let mut found = Vec::new();
        find(line, &mut found);
        for h in found {
            if !kept.iter().any(|k| h.start < k.end && k.start < h.end) {
                kept.push(h);
            }
        }
    }
    kept.sort_by_key(|h| h.start);
    kept
}

/// The allow-list file read from the pushed commit.
pub const ALLOW_FILE: &str = ".ouroignore-secrets";

/// What the allow-list file allows: paths (globs), rule ids, fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    pub paths: Vec<String>,
    pub rules: Vec<String>,
    pub fingerprints: Vec<String>,
}

impl AllowList {
    /// Parses the file: one `path: GLOB`, `rule: ID` or `fingerprint: HEX` per line; `#` starts
    /// a comment. Lines it does not understand are returned as warnings (and ignored).
    pub fn parse(text: &str) -> (AllowList, Vec<String>) {
        let mut a = AllowList::default();
        let mut warnings = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                warnings.push(format!("line {}: expected `key: value`", n + 1));
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
            match k.trim() {
                "path" if !v.is_empty() => a.paths.push(v),
                "rule" if is_rule(&v) => a.rules.push(v),
                "fingerprint" if !v.is_empty() => a.fingerprints.push(v.to_ascii_lowercase()),
                k => warnings.push(format!(
                    "line {}: unknown key or value {k:?} (use path, rule or fingerprint)",
                    n + 1
                )),
            }
        }
        (a, warnings)
    }

    pub fn allows(&self, path: &str, rule: &str, fingerprint: &str) -> bool {
        self.rules.iter().any(|r| r == rule)
            || self.fingerprints.iter().any(|f| f == fingerprint)
            || self.paths.iter().any(|g| crate::glob::matches(g, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(line: &str) -> Vec<&'static str> {
        scan_line(line, &|_| true).iter().map(|h| h.rule).collect()
    }

    fn one(line: &str, rule: &str, secret: &str) {
        let hits = scan_line(line, &|_| true);
        assert_eq!(hits.len(), 1, "{line:?}: {hits:?}");
        assert_eq!(hits[0].rule, rule, "{line:?}");
        assert_eq!(hits[0].secret(line), secret, "{line:?}");
    }

    fn none(line: &str) {
        assert!(rules(line).is_empty(), "{line:?}: {:?}", rules(line));
    }

    #[test]
    fn private_keys() {
        for kind in ["RSA ", "OPENSSH ", "EC ", "", "ENCRYPTED "] {
            let l = format!("-----BEGIN {kind}PRIVATE KEY-----");
            one(&l, "private-key", &l);
        }
        one(
            "  \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIIE\"",
            "private-key",
            "-----BEGIN PRIVATE KEY-----",
        );
        none("-----BEGIN PUBLIC KEY-----");
        none("-----BEGIN CERTIFICATE-----");
        none("-----BEGIN RSA PRIVATE KEY");
        none("// BEGIN PRIVATE KEY");
    }

    #[test]
    fn aws_keys() {
        one(
            "aws_id = AKIAIOSFODNN7EXAMPL3",
            "aws-access-key-id",
            "AKIAIOSFODNN7EXAMPL3",
        );
        one(
            "ASIAY34FZKBOKMUTVV7A",
            "aws-access-key-id",
            "ASIAY34FZKBOKMUTVV7A",
        );
        none("AKIAIOSFODNN7EXAMPL"); // 15 after the prefix
        none("AKIAIOSFODNN7EXAMPL33"); // 17
        none("XAKIAIOSFODNN7EXAMPL3"); // inside a word
        none("akiaiosfodnn7exampl3");
    }

    #[test]
    fn github_tokens() {
        let t = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cD1fG2hJ4");
        one(&format!("token: {t}"), "github-token", &t);
        let pat = format!("github_pat_11ABCDEFG0{}", "x".repeat(70));
        assert_eq!(rules(&pat), vec!["github-token"]);
        none("ghp_short1234567890");
        none("xghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cD1fG2hJ4");
        none("ghx_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cD1fG2hJ4");
    }

    #[test]
    fn slack_tokens() {
        let t = "xoxb-2345678901-2345678901234-AbCdEfGhIjKlMnOpQrStUvWx";
        one(&format!("SLACK={t}"), "slack-token", t);
        let h = "https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/aBcDeFgHiJkLmNoPqRsTuVwX";
        one(h, "slack-token", h);
        none("xoxq-2345678901-2345678901234-AbCdEfGhIjKl");
        none("xoxb-short");
        none("https://hooks.slack.com/services/");
    }

    #[test]
    fn gcp_keys() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        one(
            &format!("  \"private_key_id\": \"{id}\","),
            "gcp-service-account",
            id,
        );
        let k = "AIzaSyA1bC2dE3fG4hI5jK6lM7nO8pQ9rS0tU1v";
        assert_eq!(k.len(), 39);
        one(&format!("key={k}"), "gcp-service-account", k);
        none("  \"private_key_id\": \"0123456789abcdef\",");
        none("  \"client_id\": \"0123456789abcdef0123456789abcdef01234567\",");
        none("AIzaShort");
    }

    #[test]
    fn assignments() {
        one(
            "DB_PASSWORD=hunter2hunter2",
            "generic-assignment",
            "hunter2hunter2",
        );
        one(
            "export API_TOKEN=\"s3cr3t-v4lue-99\"",
            "generic-assignment",
            "s3cr3t-v4lue-99",
        );
        one(
            "  client_secret: 'Zq8mPl2VnX7r'",
            "generic-assignment",
            "Zq8mPl2VnX7r",
        );
        one(
            "{\"stripe_api_key\": \"sk9Lm2Pq7Xv4\"}",
            "generic-assignment",
            "sk9Lm2Pq7Xv4",
        );
        one(
            "const apiToken = 'tk_9f8e7d6c5b'",
            "generic-assignment",
            "tk_9f8e7d6c5b",
        );
        // Near misses: references, templates, placeholders, short values, other names.
        none("DB_PASSWORD=${DB_PASSWORD}");
        none("password = os.environ[\"PASSWORD\"]");
        none("API_TOKEN = settings.api_token");
        none("API_TOKEN = read_token()");
        none("API_TOKEN=changeme123");
        none("API_TOKEN=\"<your token here>\"");
        none("API_TOKEN=short");
        none("API_TOKEN={{ secrets.API_TOKEN }}");
        none("SECRET_NAME=OTHER_VARIABLE");
        none("if token == \"abcdefgh123\" {");
        none("TOKENIZER=wordpiece_v2_large");
        none("    paren_token: token::Paren,");
        none("    private_key: &PrivateKey,");
        none("SECRET = default_secret_v2");
        none("pub const ACCESS_KEY: _bindgen_ty_3 = 1;");
        none("PASSWORD=xxxxxxxxxxxx");
        none("api_key: ''");
        none("API_TOKEN = \"test-token-1234\"");
        none("password: Option<String>,");
        none("fn login(password: &str) -> bool");
        none("SECRET_KEY = os.environ.get(\"SECRET_KEY\")");
        one(
            "SECRET_KEY = 'django-insecure-k2#9x!q7'",
            "generic-assignment",
            "django-insecure-k2#9x!q7",
        );
    }

    #[test]
    fn entropy_strings() {
        let s = "q8Z2mX4vB7nL1kP9sD3fG6hJ0wE5rT2y";
        assert!(entropy(s) >= ENTROPY_THRESHOLD, "{}", entropy(s));
        one(&format!("let k = \"{s}\";"), "high-entropy", s);
        // Hex (checksums, commit ids), prose-like identifiers, unquoted, short, integrity.
        none("\"3f786850e387550fdab836ed7e6dc881de23001b0f3c0e9d0a5ea5c1e4b8f6a2\"");
        none("\"ThisIsAVeryLongIdentifierWithWords1\"");
        none("\"getUserAccountSettingsFromDatabase2024\"");
        none("q8Z2mX4vB7nL1kP9sD3fG6hJ0wE5rT2y");
        none("\"q8Z2mX4vB7nL1kP9sD3fG6\"");
        none(
            "\"integrity\": \"sha512-q8Z2mX4vB7nL1kP9sD3fG6hJ0wE5rT2yq8Z2mX4vB7nL1kP9sD3fG6hJ0wE5rT2y\"",
        );
        none("\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"");
        // Alphabets, camel-case and snake_case identifiers.
        none("\"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\"");
        none("\"PropertyNameParseIndicSyllabicCategoryV1\"");
        none("\"aws_lc_0_47_0_X509_REVOKED_set_revocationDate\"");
        // Real-looking base64 still counts.
        one(
            "k = \"QME/vQVMciqjwvIRc8Bp6kl9NSlrzCRl9vnQQQh716k=\"",
            "high-entropy",
            "QME/vQVMciqjwvIRc8Bp6kl9NSlrzCRl9vnQQQh716k=",
        );
    }

    #[test]
    fn specific_rules_win_and_rules_can_be_disabled() {
        let l = "AWS_ACCESS_KEY=AKIAIOSFODNN7EXAMPL3";
        assert_eq!(rules(l), vec!["aws-access-key-id"]);
        let hits = scan_line(l, &|r| r != "aws-access-key-id");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].rule, "generic-assignment");
        assert!(scan_line(l, &|_| false).is_empty());
    }

    #[test]
    fn masks_and_fingerprints() {
        let m = mask("hunter2hunter2");
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.contains("14 characters"), "{m}");
        assert_eq!(fingerprint("abc").len(), 16);
        assert_eq!(fingerprint("abc"), "ba7816bf8f01cfea");
    }

    #[test]
    fn allow_lists() {
        let (a, warnings) = AllowList::parse(
            "# test fixtures\npath: tests/fixtures/**\nrule: high-entropy\nfingerprint: BA7816BF8F01CFEA\nbogus\nrule: nope\n",
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(a.allows("tests/fixtures/a/key.pem", "private-key", "x"));
        assert!(a.allows("src/x.rs", "high-entropy", "x"));
        assert!(a.allows("src/x.rs", "private-key", "ba7816bf8f01cfea"));
        assert!(!a.allows("src/x.rs", "private-key", "0000000000000000"));
    }
}
