//! A structured diff between two commits, parsed from the git CLI's output: files (old and new
//! path, status, binary flag, additions and deletions), hunks, and lines with their old and new
//! line numbers. Used by the commit and compare pages and by change requests.
//!
//! Two git runs: `git diff -z --raw --numstat` (the file list: exact statuses, renames, binary
//! flags, counts; NUL-separated so any path survives) and `git diff` (the patch text, for the
//! hunks). Patch sections come in the same order as the raw entries (a type change is two
//! sections: a deletion and an addition). Paths and lines that are not UTF-8 are shown lossily.
//!
//! Large diffs stay cheap: a file with more than `max_file_lines` changed lines, and every file
//! once `max_total_lines` have been shown, is `collapsed` (no hunks; [`file`] loads it on
//! demand); the patch text read is capped at `max_bytes`.

use std::path::Path;

use ouro_core::{ErrorCode, OuroError};
use schemars::JsonSchema;
use serde::Serialize;

use crate::browse::{self, EMPTY_TREE, lossy};

/// Limits for one diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// Lines of context around each change.
    pub context: u32,
    /// A file with more diff lines than this is collapsed (loaded on demand).
    pub max_file_lines: usize,
    /// Once this many lines are shown, the remaining files are collapsed.
    pub max_total_lines: usize,
    /// At most this many bytes of patch text are read.
    pub max_bytes: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            context: 3,
            max_file_lines: 1_000,
            max_total_lines: 10_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Added,
    Modified,
    Deleted,
    Renamed,
    Copied,
    /// The kind changed (e.g. a symlink became a file).
    Typechange,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Added => "added",
            FileStatus::Modified => "modified",
            FileStatus::Deleted => "deleted",
            FileStatus::Renamed => "renamed",
            FileStatus::Copied => "copied",
            FileStatus::Typechange => "typechange",
        }
    }

    fn from_letter(c: u8) -> FileStatus {
        match c {
            b'A' => FileStatus::Added,
            b'D' => FileStatus::Deleted,
            b'R' => FileStatus::Renamed,
            b'C' => FileStatus::Copied,
            b'T' => FileStatus::Typechange,
            _ => FileStatus::Modified,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    Context,
    Add,
    Del,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Context => "context",
            LineKind::Add => "add",
            LineKind::Del => "del",
        }
    }
}

/// One line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Line {
    pub kind: LineKind,
    /// The line number in the old file (context and deleted lines).
    pub old: Option<u32>,
    /// The line number in the new file (context and added lines).
    pub new: Option<u32>,
    /// The text without the leading marker and line end (lossy when not UTF-8).
    pub text: String,
    /// Git said "\ No newline at end of file" after this line.
    pub no_newline: bool,
}

/// A hunk: `@@ -old_start,old_lines +new_start,new_lines @@ section`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Hunk {
    pub old_start: u32,
    pub old_lines: u32,
    pub new_start: u32,
    pub new_lines: u32,
    /// The function or section name git printed after the second `@@`.
    pub section: String,
    pub lines: Vec<Line>,
}

impl Hunk {
    pub fn header(&self) -> String {
        format!(
            "@@ -{},{} +{},{} @@",
            self.old_start, self.old_lines, self.new_start, self.new_lines
        )
    }
}

/// One changed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct FileDiff {
    /// The path before (absent for an added file).
    pub old_path: Option<String>,
    /// The path after (absent for a deleted file).
    pub new_path: Option<String>,
    pub status: FileStatus,
    /// Rename or copy similarity, 0 to 100.
    pub similarity: Option<u8>,
    pub old_mode: String,
    pub new_mode: String,
    pub binary: bool,
    pub additions: u64,
    pub deletions: u64,
    /// A path is not valid UTF-8 (shown with replacement characters).
    pub lossy_path: bool,
    /// Too large to show with the rest: `hunks` is empty; load it with `diff::file`.
    pub collapsed: bool,
    pub hunks: Vec<Hunk>,
}

impl FileDiff {
    /// The path to show and to anchor comments on: the new path, or the old for a deletion.
    pub fn path(&self) -> &str {
        self.new_path
            .as_deref()
            .or(self.old_path.as_deref())
            .unwrap_or("")
    }

    pub fn line_count(&self) -> usize {
        self.hunks.iter().map(|h| h.lines.len()).sum()
    }
}

/// A diff between two commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Diff {
    /// The base commit (or the empty tree for a root commit).
    pub base: String,
    pub head: String,
    pub files: Vec<FileDiff>,
    pub additions: u64,
    pub deletions: u64,
    /// The patch text was larger than `max_bytes`: files past that point are collapsed.
    pub truncated: bool,
}

/// Resolves a base or head given by a caller: a commit id, branch or tag; the empty tree id is
/// accepted as a base.
async fn rev(dir: &Path, r: &str) -> Result<String, OuroError> {
    if r == EMPTY_TREE {
        return Ok(r.to_string());
    }
    Ok(browse::resolve(dir, r).await?.commit)
}

fn raw_args<'a>(base: &'a str, head: &'a str) -> Vec<&'a str> {
    vec![
        "diff",
        "-z",
        "--raw",
        "--numstat",
        "--no-abbrev",
        "--find-renames",
        "--no-ext-diff",
        "--no-textconv",
        "--no-color",
        "--end-of-options",
        base,
        head,
        "--",
    ]
}

async fn patch(
    dir: &Path,
    base: &str,
    head: &str,
    context: u32,
    paths: &[&str],
    max_bytes: usize,
) -> Result<(Vec<u8>, bool), OuroError> {
    let u = format!("-U{context}");
    let mut args = vec![
        "diff",
        "--find-renames",
        "--no-ext-diff",
        "--no-textconv",
        "--no-color",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        &u,
        "--end-of-options",
        base,
        head,
        "--",
    ];
    args.extend_from_slice(paths);
    browse::run_limited(dir, &args, max_bytes).await
}

/// The diff from `base` to `head` (commit ids, branches or tags).
pub async fn between(
    dir: &Path,
    base: &str,
    head: &str,
    opts: &DiffOptions,
) -> Result<Diff, OuroError> {
    let base = rev(dir, base).await?;
    let head = rev(dir, head).await?;
    let raw = browse::run(dir, &raw_args(&base, &head)).await?;
    let mut files = parse_raw(&raw);
    let (text, truncated) = patch(dir, &base, &head, opts.context, &[], opts.max_bytes).await?;
    attach_patch(&mut files, &text, truncated, opts);
    Ok(summed(base, head, files, truncated))
}

fn summed(base: String, head: String, files: Vec<FileDiff>, truncated: bool) -> Diff {
    Diff {
        additions: files.iter().map(|f| f.additions).sum(),
        deletions: files.iter().map(|f| f.deletions).sum(),
        base,
        head,
        files,
        truncated,
    }
}

/// One file of the diff from `base` to `head`, never collapsed (up to `max_bytes` of patch):
/// what a collapsed file loads on demand. `path` is its new path (or old path when deleted).
pub async fn file(
    dir: &Path,
    base: &str,
    head: &str,
    path: &str,
    opts: &DiffOptions,
) -> Result<FileDiff, OuroError> {
    let path = browse::validate_path(path)?;
    let base = rev(dir, base).await?;
    let head = rev(dir, head).await?;
    let raw = browse::run(dir, &raw_args(&base, &head)).await?;
    let files = parse_raw(&raw);
    let Some(mut f) = files
        .into_iter()
        .find(|f| f.new_path.as_deref() == Some(&path) || f.old_path.as_deref() == Some(&path))
    else {
        return Err(OuroError::new(
            ErrorCode::PathNotFound,
            format!("{path:?} is not changed between these commits"),
        ));
    };
    let mut paths: Vec<&str> = Vec::new();
    for p in [f.old_path.as_deref(), f.new_path.as_deref()]
        .into_iter()
        .flatten()
    {
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    let (text, truncated) = patch(dir, &base, &head, opts.context, &paths, opts.max_bytes).await?;
    let mut one = vec![f.clone()];
    let all = DiffOptions {
        max_file_lines: usize::MAX,
        max_total_lines: usize::MAX,
        ..opts.clone()
    };
    attach_patch(&mut one, &text, truncated, &all);
    f = one.remove(0);
    Ok(f)
}

/// The diff of one commit against its first parent (a root commit against the empty tree; a
/// merge commit against its first parent, as `git show --first-parent` does).
pub async fn of_commit(dir: &Path, id: &str, opts: &DiffOptions) -> Result<Diff, OuroError> {
    let c = browse::commit(dir, id).await?;
    let base = c
        .parents
        .first()
        .cloned()
        .unwrap_or_else(|| EMPTY_TREE.into());
    between(dir, &base, &c.id, opts).await
}

/// The base a commit is shown against: its first parent, or the empty tree.
pub fn base_of(c: &browse::CommitInfo) -> String {
    c.parents
        .first()
        .cloned()
        .unwrap_or_else(|| EMPTY_TREE.into())
}

/// Parses `git diff -z --raw --numstat` output into files without hunks.
pub fn parse_raw(out: &[u8]) -> Vec<FileDiff> {
    let tok: Vec<&[u8]> = out.split(|b| *b == 0).collect();
    let mut files: Vec<FileDiff> = Vec::new();
    let mut counted = 0usize;
    let mut i = 0;
    while i < tok.len() {
        let t = tok[i];
        if t.is_empty() {
            i += 1;
            continue;
        }
        if t[0] == b':' {
            let meta = lossy(&t[1..]);
            let f: Vec<&str> = meta.split(' ').collect();
            if f.len() < 5 || f[4].is_empty() {
                i += 1;
                continue;
            }
            let status = FileStatus::from_letter(f[4].as_bytes()[0]);
            let similarity = f[4][1..].parse::<u8>().ok();
            let two = matches!(status, FileStatus::Renamed | FileStatus::Copied);
            let p1 = tok.get(i + 1).copied().unwrap_or_default();
            let p2 = if two {
                tok.get(i + 2).copied().unwrap_or_default()
            } else {
                p1
            };
            i += if two { 3 } else { 2 };
            let lossy_path = std::str::from_utf8(p1).is_err() || std::str::from_utf8(p2).is_err();
            files.push(FileDiff {
                old_path: (status != FileStatus::Added).then(|| lossy(p1)),
                new_path: (status != FileStatus::Deleted).then(|| lossy(p2)),
                status,
                similarity: similarity.filter(|_| two),
                old_mode: f[0].to_string(),
                new_mode: f[1].to_string(),
                binary: false,
                additions: 0,
                deletions: 0,
                lossy_path,
                collapsed: false,
                hunks: Vec::new(),
            });
        } else {
            // numstat: `added TAB deleted TAB path` or, for a rename, `added TAB deleted TAB`
            // followed by the old and new paths as two more fields.
            let s = lossy(t);
            let mut f = s.splitn(3, '\t');
            let (a, d, p) = (
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
            );
            i += if p.is_empty() { 3 } else { 1 };
            if let Some(file) = files.get_mut(counted) {
                if a == "-" && d == "-" {
                    file.binary = true;
                } else {
                    file.additions = a.parse().unwrap_or(0);
                    file.deletions = d.parse().unwrap_or(0);
                }
            }
            counted += 1;
        }
    }
    files
}

/// One `diff --git` section of patch text.
#[derive(Debug, Default, PartialEq)]
struct Section {
    binary: bool,
    hunks: Vec<Hunk>,
    /// The section was cut off by the byte limit.
    partial: bool,
}

/// Parses `@@ -a[,b] +c[,d] @@ section`.
fn parse_hunk_header(l: &[u8]) -> Option<Hunk> {
    let s = lossy(l);
    let rest = s.strip_prefix("@@ -")?;
    let (ranges, section) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |r: &str| -> Option<(u32, u32)> {
        match r.split_once(',') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let (os, ol) = range(old)?;
    let (ns, nl) = range(new)?;
    Some(Hunk {
        old_start: os,
        old_lines: ol,
        new_start: ns,
        new_lines: nl,
        section: section.trim().to_string(),
        lines: Vec::new(),
    })
}

/// Splits patch text into sections and parses their hunks. Malformed or cut-off input never
/// panics: a hunk ends early and the section is marked partial.
fn parse_patch(text: &[u8], truncated: bool) -> Vec<Section> {
    let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut out: Vec<Section> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with(b"diff --git ") {
            out.push(Section::default());
            i += 1;
            continue;
        }
        let Some(cur) = out.last_mut() else {
            i += 1;
            continue;
        };
        if l.starts_with(b"Binary files ") || l.starts_with(b"GIT binary patch") {
            cur.binary = true;
            i += 1;
            continue;
        }
        if l.starts_with(b"@@ -")
            && let Some(mut h) = parse_hunk_header(l)
        {
            i += 1;
            let (mut old_left, mut new_left) = (h.old_lines, h.new_lines);
            let (mut o, mut n) = (h.old_start, h.new_start);
            let mut complete = true;
            while old_left > 0 || new_left > 0 {
                let Some(l) = lines.get(i) else {
                    complete = false;
                    break;
                };
                let (kind, text) = match l.first() {
                    Some(b' ') if old_left > 0 && new_left > 0 => (LineKind::Context, &l[1..]),
                    // An empty line in a hunk is an empty context line (some tools strip
                    // the trailing space).
                    None if old_left > 0 && new_left > 0 => (LineKind::Context, &l[..]),
                    Some(b'-') if old_left > 0 => (LineKind::Del, &l[1..]),
                    Some(b'+') if new_left > 0 => (LineKind::Add, &l[1..]),
                    Some(b'\\') => {
                        if let Some(last) = h.lines.last_mut() {
                            last.no_newline = true;
                        }
                        i += 1;
                        continue;
                    }
                    _ => {
                        complete = false;
                        break;
                    }
                };
                let line = match kind {
                    LineKind::Context => {
                        old_left -= 1;
                        new_left -= 1;
                        o += 1;
                        n += 1;
                        Line {
                            kind,
                            old: Some(o - 1),
                            new: Some(n - 1),
                            text: lossy(text),
                            no_newline: false,
                        }
                    }
                    LineKind::Del => {
                        old_left -= 1;
                        o += 1;
                        Line {
                            kind,
                            old: Some(o - 1),
                            new: None,
                            text: lossy(text),
                            no_newline: false,
                        }
                    }
                    LineKind::Add => {
                        new_left -= 1;
                        n += 1;
                        Line {
                            kind,
                            old: None,
                            new: Some(n - 1),
                            text: lossy(text),
                            no_newline: false,
                        }
                    }
                };
                h.lines.push(line);
                i += 1;
            }
            // "\ No newline at end of file" after the hunk's last line.
            if let Some(l) = lines.get(i)
                && l.first() == Some(&b'\\')
            {
                if let Some(last) = h.lines.last_mut() {
                    last.no_newline = true;
                }
                i += 1;
            }
            if !complete {
                cur.partial = true;
            }
            cur.hunks.push(h);
            continue;
        }
        i += 1;
    }
    if truncated && let Some(last) = out.last_mut() {
        last.partial = true;
    }
    out
}

/// Puts the hunks of `text` on `files` (in order), collapsing per the limits.
fn attach_patch(files: &mut [FileDiff], text: &[u8], truncated: bool, opts: &DiffOptions) {
    let mut sections = parse_patch(text, truncated).into_iter();
    let mut shown = 0usize;
    for f in files.iter_mut() {
        let Some(mut s) = sections.next() else {
            // Cut off before this file's section (or git printed none): load on demand.
            f.collapsed = !f.binary;
            continue;
        };
        if f.status == FileStatus::Typechange
            && let Some(s2) = sections.next()
        {
            s.binary |= s2.binary;
            s.partial |= s2.partial;
            s.hunks.extend(s2.hunks);
        }
        f.binary |= s.binary;
        let n: usize = s.hunks.iter().map(|h| h.lines.len()).sum();
        if s.partial || n > opts.max_file_lines || shown.saturating_add(n) > opts.max_total_lines {
            f.collapsed = true;
            continue;
        }
        shown += n;
        f.hunks = s.hunks;
    }
}

/// A row of the side-by-side view: the old line on the left, the new on the right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitRow<'a> {
    pub left: Option<&'a Line>,
    pub right: Option<&'a Line>,
}

/// Pairs a hunk's lines for the side-by-side view: context lines on both sides; a run of
/// deletions next to the run of additions that follows it.
pub fn split_rows(h: &Hunk) -> Vec<SplitRow<'_>> {
    let mut rows = Vec::with_capacity(h.lines.len());
    let mut i = 0;
    let l = &h.lines;
    while i < l.len() {
        match l[i].kind {
            LineKind::Context => {
                rows.push(SplitRow {
                    left: Some(&l[i]),
                    right: Some(&l[i]),
                });
                i += 1;
            }
            _ => {
                let dels: Vec<&Line> = l[i..]
                    .iter()
                    .take_while(|x| x.kind == LineKind::Del)
                    .collect();
                i += dels.len();
                let adds: Vec<&Line> = l[i..]
                    .iter()
                    .take_while(|x| x.kind == LineKind::Add)
                    .collect();
                i += adds.len();
                for k in 0..dels.len().max(adds.len()) {
                    rows.push(SplitRow {
                        left: dels.get(k).copied(),
                        right: adds.get(k).copied(),
                    });
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &[u8] = b":000000 100644 0000000000000000000000000000000000000000 bdc955b7b2e610ad5a72302b139a2e6cb325519a A\0bin\0:120000 100644 c1b0730e0133447badcfd47fd144e254807b06e1 bca70f35318f31dd1d1d1d2d2e64c19b880899ff T\0l\0:100644 100644 422c2b7ab3b3c668038da977e4e93a5fc623169c 817f660e4423f7df2dfc7d4bff0e01b2092a8ce9 M\0x\0:100644 100644 975fbec8256d3e8a3797e7a3611380f27c49f4ac 975fbec8256d3e8a3797e7a3611380f27c49f4ac R100\0y\0y2\0:000000 100644 0000000000000000000000000000000000000000 ce542efaa5124a0437f0c4db329d7ec4b7ba70a7 A\0\xe9.txt\0-\t-\tbin\x001\t1\tl\x001\t1\tx\x000\t0\t\0y\0y2\x001\t0\t\xe9.txt\0";

    const PATCH: &[u8] = b"diff --git a/bin b/bin
new file mode 100644
index 0000000..bdc955b
Binary files /dev/null and b/bin differ
diff --git a/l b/l
deleted file mode 120000
index c1b0730..0000000
--- a/l
+++ /dev/null
@@ -1 +0,0 @@
-x
\\ No newline at end of file
diff --git a/l b/l
new file mode 100644
index 0000000..bca70f3
--- /dev/null
+++ b/l
@@ -0,0 +1 @@
+q
diff --git a/x b/x
index 422c2b7..817f660 100644
--- a/x
+++ b/x
@@ -1,2 +1,2 @@ fn main
 a
-b
+c
\\ No newline at end of file
diff --git a/y b/y2
similarity index 100%
rename from y
rename to y2
diff --git \"a/\\351.txt\" \"b/\\351.txt\"
new file mode 100644
index 0000000..ce542ef
--- /dev/null
+++ \"b/\\351.txt\"
@@ -0,0 +1 @@
+\xff
\\ No newline at end of file
";

    fn parsed() -> Vec<FileDiff> {
        let mut f = parse_raw(RAW);
        attach_patch(&mut f, PATCH, false, &DiffOptions::default());
        f
    }

    #[test]
    fn raw_entries_statuses_paths_and_counts() {
        let f = parse_raw(RAW);
        assert_eq!(f.len(), 5);
        assert_eq!(f[0].status, FileStatus::Added);
        assert_eq!(f[0].old_path, None);
        assert_eq!(f[0].new_path.as_deref(), Some("bin"));
        assert!(f[0].binary);
        assert_eq!(f[1].status, FileStatus::Typechange);
        assert_eq!((f[1].additions, f[1].deletions), (1, 1));
        assert_eq!(f[1].old_mode, "120000");
        assert_eq!(f[3].status, FileStatus::Renamed);
        assert_eq!(f[3].old_path.as_deref(), Some("y"));
        assert_eq!(f[3].new_path.as_deref(), Some("y2"));
        assert_eq!(f[3].similarity, Some(100));
        assert_eq!((f[3].additions, f[3].deletions), (0, 0));
        assert!(f[4].lossy_path);
        assert_eq!(f[4].path(), "\u{fffd}.txt");
        assert_eq!((f[4].additions, f[4].deletions), (1, 0));
    }

    #[test]
    fn hunks_line_numbers_and_no_newline_markers() {
        let f = parsed();
        assert!(f[0].hunks.is_empty());
        // The type change's two sections (deletion, addition) are one file.
        assert_eq!(f[1].hunks.len(), 2);
        assert!(f[1].hunks[0].lines[0].no_newline);
        assert_eq!(f[1].hunks[1].lines[0].text, "q");
        let x = &f[2];
        assert_eq!(x.hunks.len(), 1);
        let h = &x.hunks[0];
        assert_eq!(h.section, "fn main");
        assert_eq!(h.header(), "@@ -1,2 +1,2 @@");
        let kinds: Vec<_> = h.lines.iter().map(|l| (l.kind, l.old, l.new)).collect();
        assert_eq!(
            kinds,
            vec![
                (LineKind::Context, Some(1), Some(1)),
                (LineKind::Del, Some(2), None),
                (LineKind::Add, None, Some(2)),
            ]
        );
        assert!(!h.lines[1].no_newline);
        assert!(h.lines[2].no_newline);
        assert!(f[3].hunks.is_empty());
        assert!(!f[3].collapsed);
        assert_eq!(f[4].hunks[0].lines[0].text, "\u{fffd}");
        assert!(f.iter().all(|f| !f.collapsed));
    }

    #[test]
    fn caps_collapse_files() {
        let mut f = parse_raw(RAW);
        let opts = DiffOptions {
            max_file_lines: 1,
            ..DiffOptions::default()
        };
        attach_patch(&mut f, PATCH, false, &opts);
        assert!(f[1].collapsed, "two lines over a cap of one");
        assert!(f[2].collapsed, "three lines");
        assert!(!f[4].collapsed, "one line");
        let mut f = parse_raw(RAW);
        let opts = DiffOptions {
            max_total_lines: 2,
            ..DiffOptions::default()
        };
        attach_patch(&mut f, PATCH, false, &opts);
        assert!(!f[1].collapsed);
        assert!(f[2].collapsed, "past the total");
        assert!(f[4].collapsed, "a later small file is collapsed too");
    }

    #[test]
    fn cut_off_patch_collapses_the_rest() {
        let mut f = parse_raw(RAW);
        // Cut inside x's hunk.
        let cut = PATCH.windows(4).position(|w| w == b"\n-b\n").unwrap() + 2;
        attach_patch(&mut f, &PATCH[..cut], true, &DiffOptions::default());
        assert!(!f[1].collapsed);
        assert_eq!(f[1].hunks.len(), 2);
        assert!(f[2].collapsed, "its hunk was cut off");
        assert!(f[2].hunks.is_empty());
        assert!(f[3].collapsed);
        assert!(f[4].collapsed);
    }

    #[test]
    fn hunk_headers() {
        let h = parse_hunk_header(b"@@ -0,0 +1 @@").unwrap();
        assert_eq!(
            (h.old_start, h.old_lines, h.new_start, h.new_lines),
            (0, 0, 1, 1)
        );
        let h = parse_hunk_header(b"@@ -10,7 +12,9 @@ impl X {").unwrap();
        assert_eq!(
            (h.old_start, h.old_lines, h.new_start, h.new_lines),
            (10, 7, 12, 9)
        );
        assert_eq!(h.section, "impl X {");
        for bad in [
            &b"@@ -x +1 @@"[..],
            b"@@ -1 +1",
            b"@@@ -1,1 -1,1 +1,1 @@@",
            b"",
        ] {
            assert!(parse_hunk_header(bad).is_none());
        }
    }

    #[test]
    fn split_rows_pair_runs() {
        let mk = |kind, old, new| Line {
            kind,
            old,
            new,
            text: String::new(),
            no_newline: false,
        };
        let h = Hunk {
            old_start: 1,
            old_lines: 4,
            new_start: 1,
            new_lines: 3,
            section: String::new(),
            lines: vec![
                mk(LineKind::Context, Some(1), Some(1)),
                mk(LineKind::Del, Some(2), None),
                mk(LineKind::Del, Some(3), None),
                mk(LineKind::Add, None, Some(2)),
                mk(LineKind::Context, Some(4), Some(3)),
                mk(LineKind::Add, None, Some(4)),
            ],
        };
        let r = split_rows(&h);
        let nums: Vec<_> = r
            .iter()
            .map(|r| (r.left.and_then(|l| l.old), r.right.and_then(|l| l.new)))
            .collect();
        assert_eq!(
            nums,
            vec![
                (Some(1), Some(1)),
                (Some(2), Some(2)),
                (Some(3), None),
                (Some(4), Some(3)),
                (None, Some(4)),
            ]
        );
    }

    /// A scratch repository with one commit per content of `file`; returns the commit ids.
    fn repo_with(contents: &[&[u8]]) -> (tempfile::TempDir, Vec<String>) {
        let d = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(d.path())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_AUTHOR_NAME", "T")
                .env("GIT_AUTHOR_EMAIL", "t@x")
                .env("GIT_COMMITTER_NAME", "T")
                .env("GIT_COMMITTER_EMAIL", "t@x")
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        git(&["init", "-q", "-b", "main"]);
        let mut ids = Vec::new();
        for (i, c) in contents.iter().enumerate() {
            std::fs::write(d.path().join("f.txt"), c).unwrap();
            git(&["add", "-A"]);
            git(&["commit", "-q", "--allow-empty", "-m", &format!("c{i}")]);
            ids.push(git(&["rev-parse", "HEAD"]));
        }
        (d, ids)
    }

    /// The old and new text a full-context hunk list describes.
    fn reconstruct(f: &FileDiff) -> (String, String) {
        let (mut old, mut new) = (String::new(), String::new());
        for l in f.hunks.iter().flat_map(|h| &h.lines) {
            let end = if l.no_newline { "" } else { "\n" };
            if l.kind != LineKind::Add {
                old.push_str(&l.text);
                old.push_str(end);
            }
            if l.kind != LineKind::Del {
                new.push_str(&l.text);
                new.push_str(end);
            }
        }
        (old, new)
    }

    fn text_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        (
            proptest::collection::vec(
                prop_oneof![Just(""), Just("a"), Just("b"), Just(" c"), Just("dd\t")],
                1..12,
            ),
            any::<bool>(),
        )
            .prop_map(|(lines, nl)| {
                let mut s = lines.join("\n");
                if nl {
                    s.push('\n');
                }
                s
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Against real git: the parsed hunks (with full context) give back both versions,
        /// and the line numbers count up on each side.
        #[test]
        fn roundtrip_against_git(old in text_strategy(), new in text_strategy()) {
            proptest::prop_assume!(old != new);
            let (d, ids) = repo_with(&[old.as_bytes(), new.as_bytes()]);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let opts = DiffOptions { context: 100_000, ..DiffOptions::default() };
            let diff = rt.block_on(between(d.path(), &ids[0], &ids[1], &opts)).unwrap();
            proptest::prop_assert_eq!(diff.files.len(), 1);
            let f = &diff.files[0];
            let (o, n) = reconstruct(f);
            proptest::prop_assert_eq!(&o, &old);
            proptest::prop_assert_eq!(&n, &new);
            let adds = f.hunks.iter().flat_map(|h| &h.lines).filter(|l| l.kind == LineKind::Add).count();
            proptest::prop_assert_eq!(adds as u64, f.additions);
            let olds: Vec<u32> = f.hunks.iter().flat_map(|h| &h.lines).filter_map(|l| l.old).collect();
            proptest::prop_assert_eq!(olds, (1..=old.lines().count() as u32).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn root_commit_merge_commit_and_file() {
        let (d, ids) = repo_with(&[b"one\n", b"one\ntwo\n"]);
        // The root commit against the empty tree.
        let root = of_commit(d.path(), &ids[0], &DiffOptions::default())
            .await
            .unwrap();
        assert_eq!(root.base, EMPTY_TREE);
        assert_eq!(root.files[0].status, FileStatus::Added);
        assert_eq!(root.additions, 1);
        let one = file(d.path(), &ids[0], &ids[1], "f.txt", &DiffOptions::default())
            .await
            .unwrap();
        assert_eq!(one.additions, 1);
        assert_eq!(one.hunks[0].lines.last().unwrap().text, "two");
        let e = file(d.path(), &ids[0], &ids[1], "nope", &DiffOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PathNotFound);
        let e = between(d.path(), "nope", &ids[1], &DiffOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::RefNotFound);
        let e = between(d.path(), "a..b", &ids[1], &DiffOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationFailed);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Arbitrary bytes never panic the parsers.
        #[test]
        fn parsers_never_panic(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
                               text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let mut f = parse_raw(&raw);
            attach_patch(&mut f, &text, false, &DiffOptions::default());
            let mut prefixed = b"diff --git a/x b/x\n@@ -1,3 +1,3 @@\n".to_vec();
            prefixed.extend_from_slice(&text);
            let _ = parse_patch(&prefixed, true);
        }
    }
}
