//! `hashFiles(...)`: the provider trait the runner implements, and the real provider over a
//! workspace directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Computes `hashFiles(patterns...)`. The runner gives the context one that knows the job's
/// workspace; `Err` carries a message for the user.
pub trait HashFiles: Send + Sync {
    fn hash_files(&self, patterns: &[String]) -> Result<String, String>;
}

/// Files visited at most by one `hashFiles` call (directories and files together).
pub const MAX_WALK_ENTRIES: usize = 200_000;
/// Deepest directory level visited.
pub const MAX_WALK_DEPTH: usize = 64;

/// The provider over a directory. Patterns are globs relative to the directory: `*` and `?`
/// within one path segment, `[abc]`/`[a-z]`/`[!a]` classes, `**` for any number of
/// segments; a pattern that matches a directory matches every file under it; a pattern starting
/// with `!` excludes what it matches (later patterns win). Dot files are matched; `.git`
/// directories are not visited; symbolic links to directories are not followed, symbolic links
/// to files are only when the target is inside the directory.
///
/// The hash is GitHub's: the SHA-256 of the concatenated SHA-256 digests of the matching
/// files' contents, in the byte order of their relative paths, in hex; the empty string when no
/// file matches.
#[derive(Debug, Clone)]
pub struct DirHashFiles {
    root: PathBuf,
}

impl DirHashFiles {
    pub fn new(root: impl Into<PathBuf>) -> DirHashFiles {
        DirHashFiles { root: root.into() }
    }

    /// The relative paths (with `/`) of the files the patterns match, sorted.
    pub fn matching_files(&self, patterns: &[String]) -> Result<Vec<String>, String> {
        let globs = patterns
            .iter()
            .map(|p| Glob::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut files = Vec::new();
        let root = fs::canonicalize(&self.root)
            .map_err(|e| format!("the workspace cannot be read: {e}"))?;
        walk(&root, &mut |rel| {
            let segs: Vec<&str> = rel.split('/').collect();
            let mut included = false;
            for g in &globs {
                if g.matches(&segs) {
                    included = !g.negated;
                }
            }
            if included {
                files.push(rel.to_string());
            }
        })?;
        files.sort();
        Ok(files)
    }
}

impl HashFiles for DirHashFiles {
    fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
        let files = self.matching_files(patterns)?;
        if files.is_empty() {
            return Ok(String::new());
        }
        let mut outer = Sha256::new();
        for rel in &files {
            let path = self.root.join(rel);
            let mut f = fs::File::open(&path).map_err(|e| format!("{rel}: {e}"))?;
            let mut inner = Sha256::new();
            io::copy(&mut f, &mut inner).map_err(|e| format!("{rel}: {e}"))?;
            outer.update(inner.finalize());
        }
        Ok(hex::encode(outer.finalize()))
    }
}

/// Visits every regular file under `root` (relative paths with `/`).
fn walk(root: &Path, visit: &mut dyn FnMut(&str)) -> Result<(), String> {
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    let mut seen = 0usize;
    while let Some((dir, rel, depth)) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", display_rel(&rel)))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", display_rel(&rel)))?;
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                return Err(format!(
                    "the workspace has more than {MAX_WALK_ENTRIES} entries"
                ));
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if name != ".git" && depth + 1 < MAX_WALK_DEPTH {
                    stack.push((entry.path(), child_rel, depth + 1));
                }
            } else if ft.is_file() {
                visit(&child_rel);
            } else if ft.is_symlink() {
                let inside = fs::canonicalize(entry.path())
                    .is_ok_and(|t| t.starts_with(root) && t.is_file());
                if inside {
                    visit(&child_rel);
                }
            }
        }
    }
    Ok(())
}

fn display_rel(rel: &str) -> &str {
    if rel.is_empty() { "." } else { rel }
}

/// One glob pattern, split into path segments.
#[derive(Debug)]
struct Glob {
    negated: bool,
    segs: Vec<Seg>,
}

#[derive(Debug)]
enum Seg {
    /// `**`
    Any,
    Pattern(Vec<char>),
}

impl Glob {
    fn parse(pattern: &str) -> Result<Glob, String> {
        let mut p = pattern.trim();
        let negated = p.starts_with('!');
        if negated {
            p = p[1..].trim_start();
        }
        if p.is_empty() {
            return Err(format!("the pattern `{pattern}` is empty"));
        }
        while let Some(rest) = p.strip_prefix("./") {
            p = rest;
        }
        if p.starts_with('/') || p.contains('\\') || p.contains(':') {
            return Err(format!(
                "the pattern `{pattern}` must be a relative path inside the workspace"
            ));
        }
        let mut segs = Vec::new();
        for s in p.split('/').filter(|s| !s.is_empty() && *s != ".") {
            if s == ".." {
                return Err(format!(
                    "the pattern `{pattern}` leaves the workspace (`..`)"
                ));
            }
            if s == "**" {
                if !matches!(segs.last(), Some(Seg::Any)) {
                    segs.push(Seg::Any);
                }
            } else {
                segs.push(Seg::Pattern(s.chars().collect()));
            }
        }
        Ok(Glob { negated, segs })
    }

    /// True when the pattern matches the path or one of its parent directories.
    fn matches(&self, path: &[&str]) -> bool {
        if self.segs.is_empty() {
            // `.`: the whole workspace.
            return true;
        }
        let n = path.len();
        // reach[j]: the pattern so far matches path[..j].
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        for seg in &self.segs {
            let mut next = vec![false; n + 1];
            match seg {
                Seg::Any => {
                    if let Some(first) = reach.iter().position(|r| *r) {
                        next[first..].iter_mut().for_each(|r| *r = true);
                    }
                }
                Seg::Pattern(p) => {
                    for j in 0..n {
                        if reach[j] {
                            let s: Vec<char> = path[j].chars().collect();
                            if seg_match(p, &s) {
                                next[j + 1] = true;
                            }
                        }
                    }
                }
            }
            reach = next;
        }
        reach[1..].iter().any(|r| *r)
    }
}

/// Matches one path segment against `*`, `?`, `[...]` and literal characters.
fn seg_match(p: &[char], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                '?' => Some(pi + 1),
                '[' => match class(p, pi, s[si]) {
                    Some((true, next)) => Some(next),
                    Some((false, _)) => None,
                    None => (s[si] == '[').then_some(pi + 1),
                },
                c => (c == s[si]).then_some(pi + 1),
            }
        } else {
            None
        };
        if let Some(next) = step {
            pi = next;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A `[...]` class at `p[at]`: (does `c` match, index after `]`); `None` when unclosed.
fn class(p: &[char], at: usize, c: char) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        let g = Glob::parse(pattern).unwrap();
        let segs: Vec<&str> = path.split('/').collect();
        g.matches(&segs)
    }

    #[test]
    fn globs() {
        assert!(m("**/Cargo.lock", "Cargo.lock"));
        assert!(m("**/Cargo.lock", "a/b/Cargo.lock"));
        assert!(!m("**/Cargo.lock", "a/b/Cargo.toml"));
        assert!(m("*.rs", "main.rs"));
        assert!(!m("*.rs", "src/main.rs"));
        assert!(m("src/**/*.rs", "src/main.rs"));
        assert!(m("src/**/*.rs", "src/a/b/c.rs"));
        assert!(m("src", "src/a/b/c.rs"));
        assert!(m("./src/", "src/x"));
        assert!(m("file?.txt", "file1.txt"));
        assert!(!m("file?.txt", "file10.txt"));
        assert!(m("[a-c]*.txt", "b.txt"));
        assert!(!m("[!a-c]*.txt", "b.txt"));
        assert!(m("[]]x", "]x"));
        assert!(m("[x", "[x"));
        assert!(m("*", ".hidden"));
        assert!(m("**", "a/b"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**/**/x", "x"));
        assert!(m(".", "any/file"));
        assert!(m("!./", "x"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Glob::parse("/etc/passwd").is_err());
        assert!(Glob::parse("../x").is_err());
        assert!(Glob::parse("a/../../x").is_err());
        assert!(Glob::parse("").is_err());
        assert!(Glob::parse("!").is_err());
    }
}
