//! Coverage: Cobertura XML (coverage.py / pytest-cov, cargo-llvm-cov, gcovr, istanbul) and LCOV
//! (`lcov`, `cargo llvm-cov --lcov`, istanbul, c8), merged per file.

use std::collections::{BTreeMap, HashMap};

use super::xml::{Ev, Xml, attr};
use super::{Limits, ParseError, codes, text};
use crate::model::{Coverage, FileCoverage};

/// True when the content starts like a Cobertura (`<coverage>` root) or LCOV report.
pub(crate) fn looks_like_coverage(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(8192)];
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    let head = &head[start..];
    if head.starts_with(b"<") {
        return root_name(head).as_deref() == Some("coverage");
    }
    let first = head.split(|b| *b == b'\n').next().unwrap_or(b"");
    ["TN:", "SF:", "VER:"]
        .iter()
        .any(|p| first.starts_with(p.as_bytes()))
}

/// The name of the first element of an XML head, skipping the declaration, comments and the
/// DOCTYPE.
fn root_name(head: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < head.len() {
        let at = head[i..].iter().position(|b| *b == b'<')? + i;
        let rest = &head[at + 1..];
        if rest.starts_with(b"?") || rest.starts_with(b"!") {
            let end = if rest.starts_with(b"!--") {
                rest.windows(3).position(|w| w == b"-->")? + 3
            } else {
                rest.iter().position(|b| *b == b'>')? + 1
            };
            i = at + 1 + end;
            continue;
        }
        let len = rest
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/')
            .unwrap_or(rest.len());
        return Some(String::from_utf8_lossy(&rest[..len]).into_owned());
    }
    None
}

/// Per-file accumulation: hits per line, hits per branch, and the totals a report states when
/// it lists no lines (LCOV's `LF`/`LH`, `BRF`/`BRH`).
#[derive(Default)]
struct FileAcc {
    lines: BTreeMap<u32, u64>,
    branches: BTreeMap<(u32, u32, u32), u64>,
    stated_lines: Option<(u64, u64)>,
    stated_branches: Option<(u64, u64)>,
}

#[derive(Default)]
pub(crate) struct Acc {
    index: HashMap<String, usize>,
    files: Vec<(String, FileAcc)>,
}

impl Acc {
    fn file(&mut self, path: &str) -> &mut FileAcc {
        let i = match self.index.get(path) {
            Some(i) => *i,
            None => {
                self.files.push((path.to_string(), FileAcc::default()));
                self.index.insert(path.to_string(), self.files.len() - 1);
                self.files.len() - 1
            }
        };
        &mut self.files[i].1
    }

    /// Adds an already parsed file (for merging reports): lines are added hit by hit; the
    /// branch totals, which a [`FileCoverage`] keeps only as numbers, are the larger of both.
    pub(crate) fn add_file(&mut self, f: FileCoverage) {
        let acc = self.file(&f.path);
        for (line, hits) in f.lines {
            *acc.lines.entry(line).or_default() += hits;
        }
        if f.branches_total > 0 {
            let (c, t) = acc.stated_branches.unwrap_or((0, 0));
            acc.stated_branches = Some((c.max(f.branches_covered), t.max(f.branches_total)));
        }
        if acc.lines.is_empty() && f.lines_total > 0 {
            let (c, t) = acc.stated_lines.unwrap_or((0, 0));
            acc.stated_lines = Some((c.max(f.lines_covered), t.max(f.lines_total)));
        }
    }

    pub(crate) fn finish(self) -> Coverage {
        let files = self
            .files
            .into_iter()
            .map(|(path, f)| {
                let (lines_covered, lines_total) = if f.lines.is_empty() {
                    f.stated_lines.unwrap_or((0, 0))
                } else {
                    (
                        f.lines.values().filter(|h| **h > 0).count() as u64,
                        f.lines.len() as u64,
                    )
                };
                let (branches_covered, branches_total) = if f.branches.is_empty() {
                    f.stated_branches.unwrap_or((0, 0))
                } else {
                    (
                        f.branches.values().filter(|h| **h > 0).count() as u64,
                        f.branches.len() as u64,
                    )
                };
                FileCoverage {
                    path,
                    lines_total,
                    lines_covered,
                    branches_total,
                    branches_covered,
                    lines: f.lines.into_iter().collect(),
                }
            })
            .collect();
        Coverage { files }
    }
}

pub(crate) fn parse(file: &str, bytes: &[u8], limits: &Limits) -> Result<Coverage, ParseError> {
    let (body, base) = text(file, bytes, limits)?;
    let trimmed = body.trim_start();
    if trimmed.starts_with('<') {
        return cobertura(file, bytes, body, base, limits);
    }
    if looks_like_coverage(bytes) {
        return lcov(file, bytes, body, base);
    }
    Err(ParseError::at(
        codes::COVERAGE_UNKNOWN_FORMAT,
        file,
        bytes,
        0,
        "not a coverage report Ouro reads: expected Cobertura XML (root <coverage>) or LCOV (lines like `SF:path`)",
    ))
}

fn strip_dot(p: &str) -> &str {
    let mut p = p.trim();
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    p
}

fn cobertura(
    file: &str,
    bytes: &[u8],
    body: &str,
    base: u64,
    limits: &Limits,
) -> Result<Coverage, ParseError> {
    let mut xml = Xml::new(file, bytes, body, base, limits);
    let mut acc = Acc::default();
    // Open element names, innermost last.
    let mut stack: Vec<String> = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut root_seen = false;
    loop {
        match xml.next()? {
            Ev::Eof => break,
            Ev::Start { name, attrs, empty } => {
                if !root_seen {
                    if name != "coverage" {
                        return Err(xml.error(
                            codes::COVERAGE_UNKNOWN_FORMAT,
                            format!(
                                "the root element is <{name}>, not <coverage>: Ouro reads Cobertura XML and LCOV coverage"
                            ),
                        ));
                    }
                    root_seen = true;
                }
                let parent = stack.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (Some("sources"), "source") => sources.push(String::new()),
                    (_, "class") => {
                        let f = attr(&attrs, "filename").unwrap_or("").trim();
                        if f.is_empty() {
                            return Err(
                                xml.error(codes::COVERAGE_MALFORMED, "a <class> has no `filename`")
                            );
                        }
                        let path = relative(f, &sources);
                        acc.file(&path);
                        current = Some(path);
                    }
                    (Some("lines"), "line")
                        if stack.len() >= 2 && stack[stack.len() - 2] == "class" =>
                    {
                        let Some(path) = current.clone() else {
                            continue;
                        };
                        let number = attr(&attrs, "number")
                            .and_then(|v| v.trim().parse::<u32>().ok())
                            .ok_or_else(|| {
                                xml.error(
                                    codes::COVERAGE_MALFORMED,
                                    "a <line> has no valid `number`",
                                )
                            })?;
                        let hits = attr(&attrs, "hits").and_then(parse_hits).ok_or_else(|| {
                            xml.error(codes::COVERAGE_MALFORMED, "a <line> has no valid `hits`")
                        })?;
                        let fa = acc.file(&path);
                        *fa.lines.entry(number).or_default() += hits;
                        let branch = attr(&attrs, "branch").map(str::trim) == Some("true");
                        if let Some((c, t)) = attr(&attrs, "condition-coverage")
                            .filter(|_| branch)
                            .and_then(condition_coverage)
                        {
                            for i in 0..t.min(10_000) {
                                *fa.branches.entry((number, 0, i)).or_default() += u64::from(i < c);
                            }
                        }
                    }
                    _ => {}
                }
                if !empty {
                    stack.push(name);
                }
            }
            Ev::End => {
                if stack.pop().as_deref() == Some("class") {
                    current = None;
                }
            }
            Ev::Text(t) => {
                if stack.last().map(String::as_str) == Some("source")
                    && let Some(s) = sources.last_mut()
                    && s.len() < 4096
                {
                    s.push_str(&t);
                }
            }
        }
    }
    if !root_seen {
        return Err(ParseError::at(
            codes::COVERAGE_UNKNOWN_FORMAT,
            file,
            bytes,
            0,
            "the file has no XML element: not a Cobertura coverage report",
        ));
    }
    Ok(acc.finish())
}

/// A Cobertura `filename` relative to the repository: as written, unless it is absolute and
/// under one of the report's `<source>` directories.
fn relative(f: &str, sources: &[String]) -> String {
    if f.starts_with('/') {
        for s in sources {
            let s = s.trim().trim_end_matches('/');
            if s.is_empty() {
                continue;
            }
            if let Some(rest) = f.strip_prefix(s).and_then(|r| r.strip_prefix('/')) {
                return strip_dot(rest).to_string();
            }
        }
    }
    strip_dot(f).to_string()
}

fn parse_hits(v: &str) -> Option<u64> {
    let v = v.trim();
    // Some producers write large counts in exponent form ("1.5E7").
    v.parse::<u64>().ok().or_else(|| {
        v.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// `"50% (1/2)"` -> `(1, 2)`.
fn condition_coverage(v: &str) -> Option<(u32, u32)> {
    let inner = v.split('(').nth(1)?.split(')').next()?;
    let (c, t) = inner.split_once('/')?;
    let (c, t) = (c.trim().parse().ok()?, t.trim().parse().ok()?);
    (c <= t).then_some((c, t))
}

fn lcov(file: &str, bytes: &[u8], body: &str, base: u64) -> Result<Coverage, ParseError> {
    let mut acc = Acc::default();
    let mut current: Option<String> = None;
    let mut offset = base;
    for raw in body.split_inclusive('\n') {
        let line_start = offset;
        offset += raw.len() as u64;
        let line = raw.trim_end_matches(['\n', '\r']);
        let err = |col: usize, msg: String| {
            ParseError::at(
                codes::COVERAGE_MALFORMED,
                file,
                bytes,
                line_start + col as u64,
                msg,
            )
        };
        if line.trim().is_empty() {
            continue;
        }
        if line.trim() == "end_of_record" {
            current = None;
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(err(0, format!("not an LCOV line: `{}`", truncate(line))));
        };
        let vcol = key.len() + 1;
        let need_file = |current: &Option<String>| {
            current
                .clone()
                .ok_or_else(|| err(0, format!("`{key}:` before any `SF:` line")))
        };
        let num = |s: &str, what: &str| -> Result<u64, ParseError> {
            let s = s.trim();
            if s == "-" {
                return Ok(0);
            }
            parse_hits(s).ok_or_else(|| {
                err(
                    vcol,
                    format!("`{key}:` has an invalid {what}: `{}`", truncate(s)),
                )
            })
        };
        match key {
            "SF" => {
                let path = strip_dot(value).to_string();
                if path.is_empty() {
                    return Err(err(vcol, "`SF:` without a path".into()));
                }
                acc.file(&path);
                current = Some(path);
            }
            "DA" => {
                let path = need_file(&current)?;
                let mut parts = value.split(',');
                let line_no = num(parts.next().unwrap_or(""), "line number")?;
                let hits = num(parts.next().unwrap_or(""), "hit count")?;
                let line_no = u32::try_from(line_no)
                    .map_err(|_| err(vcol, "`DA:` line number out of range".into()))?;
                *acc.file(&path).lines.entry(line_no).or_default() += hits;
            }
            "BRDA" => {
                let path = need_file(&current)?;
                let parts: Vec<&str> = value.split(',').collect();
                if parts.len() < 4 {
                    return Err(err(vcol, "`BRDA:` needs line,block,branch,taken".into()));
                }
                let small = |s: &str, what: &str| -> Result<u32, ParseError> {
                    // Block and branch ids may be large or symbolic (e.g. llvm's "e0"); hash the
                    // rest into the id space.
                    Ok(match s.trim().parse::<u32>() {
                        Ok(v) => v,
                        Err(_) if what != "line number" => {
                            s.bytes().fold(2_166_136_261u32, |h, b| {
                                (h ^ u32::from(b)).wrapping_mul(16_777_619)
                            })
                        }
                        Err(_) => {
                            return Err(err(vcol, format!("`BRDA:` has an invalid {what}")));
                        }
                    })
                };
                let l = small(parts[0], "line number")?;
                let block = small(parts[1], "block")?;
                let branch = small(parts[2], "branch")?;
                let taken = num(parts[3], "taken count")?;
                *acc.file(&path)
                    .branches
                    .entry((l, block, branch))
                    .or_default() += taken;
            }
            "LF" | "LH" | "BRF" | "BRH" => {
                let path = need_file(&current)?;
                let v = num(value, "count")?;
                let f = acc.file(&path);
                let slot = if key.starts_with('L') {
                    &mut f.stated_lines
                } else {
                    &mut f.stated_branches
                };
                let (c, t) = slot.unwrap_or((0, 0));
                *slot = Some(if key.ends_with('F') { (c, v) } else { (v, t) });
            }
            // Test names, functions, versions: nothing Ouro keeps.
            _ => {}
        }
    }
    Ok(acc.finish())
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_content() {
        assert!(looks_like_coverage(
            b"<?xml version=\"1.0\" ?>\n<!DOCTYPE coverage SYSTEM \"x.dtd\">\n<!-- c -->\n<coverage line-rate=\"1\">"
        ));
        assert!(looks_like_coverage(b"TN:\nSF:src/a.rs\n"));
        assert!(looks_like_coverage(b"SF:src/a.rs\n"));
        assert!(!looks_like_coverage(b"<?xml version=\"1.0\"?><testsuites>"));
        assert!(!looks_like_coverage(b"hello"));
    }

    #[test]
    fn condition_coverage_is_read() {
        assert_eq!(condition_coverage("50% (1/2)"), Some((1, 2)));
        assert_eq!(condition_coverage("100% (4/4)"), Some((4, 4)));
        assert_eq!(condition_coverage("garbage"), None);
    }
}
