//! Browsing a hosted repository (read only): resolving refs, trees, blobs, the commit log, one
//! commit, branches (ahead/behind the default branch) and tags. Everything is read from git with
//! the CLI's plumbing (`ls-tree -z`, `cat-file`, `log`, `for-each-ref`); nothing is stored.
//!
//! User input never reaches git unchecked: ref names are checked with `git check-ref-format`
//! (an invalid one is a 422 on the field `ref`), paths are checked here (no `..`, no empty
//! segments; a bad one is a 422 on the field `path`) and passed after `--` with literal
//! pathspecs. Unknown refs are `code.ref_not_found`, missing paths `code.path_not_found`.
//! An empty repository (no commits yet) gives empty lists, never an error.

use std::path::Path;
use std::process::Stdio;

use ouro_core::{ErrorCode, OuroError};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::git;

/// The id of git's empty tree: the base a root commit is compared with.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
/// Blobs larger than this are not shown inline (the raw download still works).
pub const MAX_DISPLAY_BYTES: u64 = 1024 * 1024;
/// Bytes looked at for a NUL when deciding whether a blob is binary (as git does).
const BINARY_PROBE: usize = 8000;
pub const MAX_PER_PAGE: u32 = 100;
pub const DEFAULT_PER_PAGE: u32 = 30;

pub(crate) fn git_failed(e: impl std::fmt::Display) -> OuroError {
    OuroError::new(ErrorCode::GitFailed, "a git command failed on the server")
        .with_details(json!({"git": e.to_string()}))
}

fn ref_not_found(name: &str) -> OuroError {
    OuroError::new(
        ErrorCode::RefNotFound,
        format!("no branch, tag or commit {name:?} exists in this repository"),
    )
}

fn path_not_found(path: &str, at: &str) -> OuroError {
    OuroError::new(
        ErrorCode::PathNotFound,
        format!("no file or directory {path:?} exists at {at}"),
    )
}

/// A git command for reading: literal pathspecs (a path like `:(glob)x` is just a name).
pub(crate) fn cmd(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let d = dir.to_string_lossy().into_owned();
    let mut all: Vec<&str> = vec!["-C", &d, "--literal-pathspecs"];
    all.extend_from_slice(args);
    let mut c = git::command(&all);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Runs git and returns its stdout as bytes (`None` as the error when git exited non-zero:
/// the caller decides whether that means "not found"; `Some` when git could not run).
pub(crate) async fn output(
    dir: &Path,
    args: &[&str],
) -> Result<Result<Vec<u8>, String>, OuroError> {
    let out = cmd(dir, args).output().await.map_err(git_failed)?;
    if out.status.success() {
        Ok(Ok(out.stdout))
    } else {
        Ok(Err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// Runs git; a non-zero exit is `code.git_failed`.
pub(crate) async fn run(dir: &Path, args: &[&str]) -> Result<Vec<u8>, OuroError> {
    output(dir, args)
        .await?
        .map_err(|e| git_failed(format!("{}: {e}", args.first().unwrap_or(&""))))
}

/// Runs git and reads at most `limit` bytes of its stdout; `true` when there was more.
pub(crate) async fn run_limited(
    dir: &Path,
    args: &[&str],
    limit: usize,
) -> Result<(Vec<u8>, bool), OuroError> {
    let mut c = cmd(dir, args);
    c.stderr(Stdio::null());
    let mut child = c.spawn().map_err(git_failed)?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut buf = Vec::new();
    (&mut stdout)
        .take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(git_failed)?;
    let more = buf.len() > limit;
    if more {
        buf.truncate(limit);
        let _ = child.kill().await;
    } else {
        let st = child.wait().await.map_err(git_failed)?;
        if !st.success() {
            return Err(git_failed(format!(
                "{} exited with {st}",
                args.first().unwrap_or(&"")
            )));
        }
    }
    Ok((buf, more))
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn is_hex_id(s: &str) -> bool {
    (4..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a ref name a user typed (a branch, a tag, or a commit id): 422 on `ref` when git
/// would not accept it as a branch name.
pub async fn validate_ref(name: &str) -> Result<(), OuroError> {
    let bad = |m: &str| OuroError::field("ref", format!("{name:?} is not a valid ref name: {m}"));
    if name.is_empty() || name.len() > 255 {
        return Err(bad("it must be 1 to 255 characters"));
    }
    if name.starts_with('-') {
        return Err(bad("it may not start with '-'"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(bad("it may not contain control characters"));
    }
    if is_hex_id(name) {
        return Ok(());
    }
    let full = format!("refs/heads/{name}");
    match git::run(&["check-ref-format", &full]).await {
        Ok(_) => Ok(()),
        Err(_) => Err(bad(
            "ref names may not contain '..', '~', '^', ':', '?', '*', '[', '\\', spaces or '@{', \
             nor start or end with '/' or '.', nor end in '.lock'",
        )),
    }
}

/// Checks a path inside the repository: `/`-separated, no empty, `.` or `..` segments. A
/// leading or trailing `/` is dropped. Returns the normalised path ("" is the root).
pub fn validate_path(path: &str) -> Result<String, OuroError> {
    let bad = |m: &str| OuroError::field("path", format!("{path:?} is not a valid path: {m}"));
    let p = path.trim_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    if p.len() > 4096 {
        return Err(bad("it is longer than 4096 bytes"));
    }
    if p.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    for seg in p.split('/') {
        match seg {
            "" => return Err(bad("it contains an empty segment ('//')")),
            "." | ".." => return Err(bad("'.' and '..' are not allowed")),
            _ => {}
        }
    }
    Ok(p.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefKind {
    Branch,
    Tag,
    Commit,
}

/// A ref as a user named it, resolved to a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Resolved {
    /// As given (a branch or tag name, or a commit id).
    pub name: String,
    pub kind: RefKind,
    /// The full commit id.
    pub commit: String,
}

/// Every branch and tag name with the commit it points at (tags peeled).
async fn ref_names(dir: &Path) -> Result<Vec<(String, RefKind, String)>, OuroError> {
    let out = run(
        dir,
        &[
            "for-each-ref",
            "--format=%(refname)%00%(objectname)%00%(*objectname)",
            "refs/heads",
            "refs/tags",
        ],
    )
    .await?;
    let mut v = Vec::new();
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let f: Vec<&[u8]> = line.split(|b| *b == 0).collect();
        if f.len() < 3 {
            continue;
        }
        let name = lossy(f[0]);
        let peeled = if f[2].is_empty() { f[1] } else { f[2] };
        if let Some(b) = name.strip_prefix("refs/heads/") {
            v.push((b.to_string(), RefKind::Branch, lossy(peeled)));
        } else if let Some(t) = name.strip_prefix("refs/tags/") {
            v.push((t.to_string(), RefKind::Tag, lossy(peeled)));
        }
    }
    Ok(v)
}

/// The commit an object id (full or abbreviated) names, if it is a commit.
async fn commit_of(dir: &Path, id: &str) -> Result<Option<String>, OuroError> {
    let spec = format!("{id}^{{commit}}");
    match output(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ],
    )
    .await?
    {
        Ok(out) => Ok(Some(lossy(&out).trim().to_string())),
        Err(_) => Ok(None),
    }
}

/// Resolves a branch, tag (peeled to its commit) or commit id, in that order.
pub async fn resolve(dir: &Path, name: &str) -> Result<Resolved, OuroError> {
    validate_ref(name).await?;
    let refs = ref_names(dir).await?;
    for kind in [RefKind::Branch, RefKind::Tag] {
        if let Some((_, _, c)) = refs.iter().find(|(n, k, _)| n == name && *k == kind) {
            return Ok(Resolved {
                name: name.to_string(),
                kind,
                commit: c.clone(),
            });
        }
    }
    if is_hex_id(name)
        && let Some(c) = commit_of(dir, name).await?
    {
        return Ok(Resolved {
            name: name.to_string(),
            kind: RefKind::Commit,
            commit: c,
        });
    }
    Err(ref_not_found(name))
}

/// Splits `ref/path...` (a branch may contain `/`): the longest prefix that is a branch or tag
/// wins; otherwise the first segment must be a commit id. Returns the ref and the path.
pub async fn resolve_prefixed(dir: &Path, rest: &str) -> Result<(Resolved, String), OuroError> {
    let rest = rest.trim_start_matches('/');
    let refs = ref_names(dir).await?;
    let mut best: Option<&(String, RefKind, String)> = None;
    for r in &refs {
        let n = r.0.as_str();
        let matches = rest == n
            || (rest.len() > n.len() && rest.starts_with(n) && rest.as_bytes()[n.len()] == b'/');
        let better = best.is_none_or(|b| {
            n.len() > b.0.len() || (n.len() == b.0.len() && r.1 == RefKind::Branch)
        });
        if matches && better {
            best = Some(r);
        }
    }
    if let Some((n, k, c)) = best {
        let path = validate_path(&rest[n.len()..])?;
        return Ok((
            Resolved {
                name: n.clone(),
                kind: *k,
                commit: c.clone(),
            },
            path,
        ));
    }
    let (first, path) = rest.split_once('/').unwrap_or((rest, ""));
    let r = resolve(dir, first).await?;
    Ok((r, validate_path(path)?))
}

/// Whether the repository has no refs at all (nothing pushed yet).
pub async fn is_empty(dir: &Path) -> Result<bool, OuroError> {
    let out = run(dir, &["for-each-ref", "--count=1", "--format=x"]).await?;
    Ok(out.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// A submodule (a commit of another repository).
    Submodule,
}

/// One entry of a tree listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TreeEntry {
    /// The last path segment (shown lossily when it is not UTF-8).
    pub name: String,
    /// The full path from the repository root.
    pub path: String,
    pub kind: EntryKind,
    /// The git mode, e.g. `100644`, `100755`, `040000`.
    pub mode: String,
    pub id: String,
    /// Bytes, for files and symlinks.
    pub size: Option<u64>,
    /// The name is not valid UTF-8 (shown with replacement characters).
    pub lossy_name: bool,
}

/// A directory listing at a ref.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Tree {
    #[serde(rename = "ref")]
    pub rref: Resolved,
    /// The directory ("" is the root).
    pub path: String,
    /// Directories first, then by name.
    pub entries: Vec<TreeEntry>,
}

fn parse_ls_tree(out: &[u8]) -> Vec<TreeEntry> {
    // `<mode> SP <type> SP <object> SP+ <size> TAB <path> NUL`
    let mut v = Vec::new();
    for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let Some(tab) = rec.iter().position(|b| *b == b'\t') else {
            continue;
        };
        let meta = lossy(&rec[..tab]);
        let path_b = &rec[tab + 1..];
        let mut f = meta.split_whitespace();
        let (Some(mode), Some(ty), Some(id), Some(size)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let kind = match (ty, mode) {
            ("tree", _) => EntryKind::Dir,
            ("commit", _) => EntryKind::Submodule,
            (_, "120000") => EntryKind::Symlink,
            _ => EntryKind::File,
        };
        let name_b = path_b.rsplit(|b| *b == b'/').next().unwrap_or(path_b);
        v.push(TreeEntry {
            name: lossy(name_b),
            path: lossy(path_b),
            kind,
            mode: mode.to_string(),
            id: id.to_string(),
            size: size.parse().ok(),
            lossy_name: std::str::from_utf8(name_b).is_err(),
        });
    }
    v.sort_by(|a, b| {
        (a.kind != EntryKind::Dir)
            .cmp(&(b.kind != EntryKind::Dir))
            .then_with(|| a.name.cmp(&b.name))
    });
    v
}

/// The tree entry at `path` (None for a path that does not exist; the root is a Dir).
async fn entry_at(dir: &Path, commit: &str, path: &str) -> Result<Option<TreeEntry>, OuroError> {
    if path.is_empty() {
        return Ok(Some(TreeEntry {
            name: String::new(),
            path: String::new(),
            kind: EntryKind::Dir,
            mode: "040000".into(),
            id: String::new(),
            size: None,
            lossy_name: false,
        }));
    }
    let out = run(dir, &["ls-tree", "-z", "--long", commit, "--", path]).await?;
    Ok(parse_ls_tree(&out).into_iter().find(|e| e.path == path))
}

/// What is at a path: a directory (listed) or a file.
pub enum PathKind {
    Dir(Tree),
    File,
}

/// Lists the directory `path` at `rref`. A file at `path` gives `PathKind::File`.
pub async fn tree(dir: &Path, rref: &Resolved, path: &str) -> Result<PathKind, OuroError> {
    let path = validate_path(path)?;
    let Some(e) = entry_at(dir, &rref.commit, &path).await? else {
        return Err(path_not_found(&path, &rref.name));
    };
    if e.kind != EntryKind::Dir {
        return Ok(PathKind::File);
    }
    let spec = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let mut args = vec!["ls-tree", "-z", "--long", &rref.commit];
    if !spec.is_empty() {
        args.extend(["--", spec.as_str()]);
    }
    let out = run(dir, &args).await?;
    Ok(PathKind::Dir(Tree {
        rref: rref.clone(),
        path,
        entries: parse_ls_tree(&out),
    }))
}

/// A file's content as shown to users.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Blob {
    #[serde(rename = "ref")]
    pub rref: Resolved,
    pub path: String,
    pub id: String,
    pub mode: String,
    pub size: u64,
    /// Contains a NUL byte in its first 8000 bytes (as git decides).
    pub binary: bool,
    /// Larger than the display limit: `content` is absent, fetch `raw` instead.
    pub too_large: bool,
    /// `utf-8` (valid text), `lossy` (not valid UTF-8; invalid bytes replaced with U+FFFD),
    /// `base64` (binary, within the size limit) or `none` (too large).
    pub encoding: String,
    pub content: Option<String>,
    /// A symlink (the content is its target).
    pub symlink: bool,
}

/// Whether `bytes` look binary: a NUL within the first 8000 bytes.
pub fn looks_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(BINARY_PROBE)].contains(&0)
}

/// Reads the file at `path` (not a directory: `code.path_not_found`).
pub async fn blob(dir: &Path, rref: &Resolved, path: &str) -> Result<Blob, OuroError> {
    let path = validate_path(path)?;
    let e = match entry_at(dir, &rref.commit, &path).await? {
        Some(e) if matches!(e.kind, EntryKind::File | EntryKind::Symlink) => e,
        Some(_) => {
            return Err(OuroError::new(
                ErrorCode::PathNotFound,
                format!(
                    "{path:?} is a directory or submodule at {}, not a file",
                    rref.name
                ),
            ));
        }
        None => return Err(path_not_found(&path, &rref.name)),
    };
    let size = e.size.unwrap_or(0);
    let mut b = Blob {
        rref: rref.clone(),
        path,
        id: e.id.clone(),
        mode: e.mode.clone(),
        size,
        binary: false,
        too_large: size > MAX_DISPLAY_BYTES,
        encoding: "none".into(),
        content: None,
        symlink: e.kind == EntryKind::Symlink,
    };
    let (bytes, _) = run_limited(
        dir,
        &["cat-file", "blob", &e.id],
        if b.too_large {
            BINARY_PROBE
        } else {
            size as usize
        },
    )
    .await?;
    b.binary = looks_binary(&bytes);
    if b.too_large {
        return Ok(b);
    }
    if b.binary {
        use base64_lite::encode;
        b.encoding = "base64".into();
        b.content = Some(encode(&bytes));
    } else {
        match String::from_utf8(bytes) {
            Ok(s) => {
                b.encoding = "utf-8".into();
                b.content = Some(s);
            }
            Err(e) => {
                b.encoding = "lossy".into();
                b.content = Some(lossy(e.as_bytes()));
            }
        }
    }
    Ok(b)
}

/// The object id and size of the file at `path`, for streaming it raw.
pub async fn raw_target(
    dir: &Path,
    rref: &Resolved,
    path: &str,
) -> Result<(String, u64), OuroError> {
    let path = validate_path(path)?;
    match entry_at(dir, &rref.commit, &path).await? {
        Some(e) if matches!(e.kind, EntryKind::File | EntryKind::Symlink) => {
            Ok((e.id, e.size.unwrap_or(0)))
        }
        _ => Err(path_not_found(&path, &rref.name)),
    }
}

/// `git cat-file blob <id>` with stdout piped: the blob's bytes, for streaming them raw.
/// `id` must be a full object id (from [`raw_target`]).
pub fn cat_blob(dir: &Path, id: &str) -> Result<tokio::process::Command, OuroError> {
    if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(git_failed(format!("not an object id: {id:?}")));
    }
    let mut c = cmd(dir, &["cat-file", "blob", id]);
    c.stderr(Stdio::null());
    Ok(c)
}

/// A minimal standard base64 encoder (the only place this crate needs one).
mod base64_lite {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(b: &[u8]) -> String {
        let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}

/// A commit's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct CommitInfo {
    pub id: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    /// Unix seconds.
    pub authored_at: i64,
    pub committer_name: String,
    pub committer_email: String,
    pub committed_at: i64,
    /// The first line of the message.
    pub subject: String,
    /// The rest of the message.
    pub body: String,
}

impl CommitInfo {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(10)]
    }
}

const LOG_FORMAT: &str =
    "--format=%x1e%H%x00%P%x00%an%x00%ae%x00%at%x00%cn%x00%ce%x00%ct%x00%s%x00%b";

fn parse_log(out: &[u8]) -> Vec<CommitInfo> {
    let mut v = Vec::new();
    for rec in out.split(|b| *b == 0x1e).filter(|r| !r.is_empty()) {
        let f: Vec<&[u8]> = rec.splitn(10, |b| *b == 0).collect();
        if f.len() < 10 {
            continue;
        }
        let s = |i: usize| lossy(f[i]);
        v.push(CommitInfo {
            id: s(0),
            parents: s(1).split_whitespace().map(String::from).collect(),
            author_name: s(2),
            author_email: s(3),
            authored_at: s(4).trim().parse().unwrap_or(0),
            committer_name: s(5),
            committer_email: s(6),
            committed_at: s(7).trim().parse().unwrap_or(0),
            subject: s(8),
            body: s(9).trim_end().to_string(),
        });
    }
    v
}

/// One page of the commit log.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Log {
    #[serde(rename = "ref")]
    pub rref: Option<Resolved>,
    pub path: String,
    pub page: u32,
    pub per_page: u32,
    pub has_next: bool,
    pub commits: Vec<CommitInfo>,
}

/// Clamps paging input: page from 1, per_page 1 to 100 (30 by default).
pub fn paging(page: Option<u32>, per_page: Option<u32>) -> (u32, u32) {
    (
        page.unwrap_or(1).max(1),
        per_page.unwrap_or(DEFAULT_PER_PAGE).clamp(1, MAX_PER_PAGE),
    )
}

/// The commits reachable from `rref` (newest first), touching `path` when it is not empty.
pub async fn log(
    dir: &Path,
    rref: &Resolved,
    path: &str,
    page: u32,
    per_page: u32,
) -> Result<Log, OuroError> {
    let path = validate_path(path)?;
    let skip = format!("--skip={}", (page.max(1) - 1) as u64 * per_page as u64);
    let max = format!("--max-count={}", per_page + 1);
    let mut args = vec!["log", LOG_FORMAT, &skip, &max, &rref.commit, "--"];
    if !path.is_empty() {
        args.push(&path);
    }
    let mut commits = parse_log(&run(dir, &args).await?);
    let has_next = commits.len() > per_page as usize;
    commits.truncate(per_page as usize);
    Ok(Log {
        rref: Some(rref.clone()),
        path,
        page,
        per_page,
        has_next,
        commits,
    })
}

/// The commits reachable from `head` and not from `base` (newest first, at most `limit`).
pub async fn log_range(
    dir: &Path,
    base: &str,
    head: &str,
    limit: u32,
) -> Result<Vec<CommitInfo>, OuroError> {
    let range = format!("{base}..{head}");
    let max = format!("--max-count={limit}");
    Ok(parse_log(
        &run(dir, &["log", LOG_FORMAT, &max, &range, "--"]).await?,
    ))
}

/// One commit by id (full or abbreviated): `code.ref_not_found` when there is none.
pub async fn commit(dir: &Path, id: &str) -> Result<CommitInfo, OuroError> {
    if !is_hex_id(id) {
        return Err(OuroError::field(
            "sha",
            format!("{id:?} is not a commit id (4 to 40 hexadecimal digits)"),
        ));
    }
    let Some(full) = commit_of(dir, id).await? else {
        return Err(ref_not_found(id));
    };
    let out = run(dir, &["log", LOG_FORMAT, "--no-walk", &full, "--"]).await?;
    parse_log(&out)
        .into_iter()
        .next()
        .ok_or_else(|| ref_not_found(id))
}

/// A branch with its head commit and how far it is from the default branch.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Branch {
    pub name: String,
    pub commit: String,
    pub subject: String,
    pub committed_at: i64,
    pub default: bool,
    /// Commits on this branch that are not on the default branch.
    pub ahead: u64,
    /// Commits on the default branch that are not on this branch.
    pub behind: u64,
}

/// All branches, the default first, then by most recent commit.
pub async fn branches(dir: &Path, default_branch: &str) -> Result<Vec<Branch>, OuroError> {
    let default_ref = format!("refs/heads/{default_branch}");
    let has_default = !run(dir, &["for-each-ref", "--format=x", &default_ref])
        .await?
        .is_empty();
    let ab = if has_default {
        format!("%00%(ahead-behind:{default_ref})")
    } else {
        String::new()
    };
    let fmt = format!(
        "--format=%(refname)%00%(objectname)%00%(committerdate:unix)%00%(contents:subject){ab}"
    );
    let out = run(
        dir,
        &["for-each-ref", "--sort=-committerdate", &fmt, "refs/heads"],
    )
    .await?;
    let mut v = Vec::new();
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let f: Vec<String> = line.split(|b| *b == 0).map(lossy).collect();
        if f.len() < 4 {
            continue;
        }
        let name = f[0]
            .strip_prefix("refs/heads/")
            .unwrap_or(&f[0])
            .to_string();
        let (ahead, behind) = f
            .get(4)
            .and_then(|s| s.split_once(' '))
            .map(|(a, b)| (a.parse().unwrap_or(0), b.parse().unwrap_or(0)))
            .unwrap_or((0, 0));
        v.push(Branch {
            default: name == default_branch,
            name,
            commit: f[1].clone(),
            committed_at: f[2].parse().unwrap_or(0),
            subject: f[3].clone(),
            ahead,
            behind,
        });
    }
    v.sort_by_key(|b| !b.default);
    Ok(v)
}

/// A tag, annotated or lightweight.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Tag {
    pub name: String,
    /// The commit the tag points at (peeled through an annotated tag).
    pub commit: String,
    pub annotated: bool,
    /// The annotation's first line, or the commit's subject for a lightweight tag.
    pub subject: String,
    pub tagger_name: Option<String>,
    /// The tag's date (annotated) or the commit's (lightweight), unix seconds.
    pub created_at: i64,
}

/// All tags, newest first.
pub async fn tags(dir: &Path) -> Result<Vec<Tag>, OuroError> {
    let out = run(
        dir,
        &[
            "for-each-ref",
            "--sort=-creatordate",
            "--format=%(refname)%00%(objecttype)%00%(objectname)%00%(*objectname)%00%(contents:subject)%00%(taggername)%00%(creatordate:unix)",
            "refs/tags",
        ],
    )
    .await?;
    let mut v = Vec::new();
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let f: Vec<String> = line.split(|b| *b == 0).map(lossy).collect();
        if f.len() < 7 {
            continue;
        }
        let annotated = f[1] == "tag";
        v.push(Tag {
            name: f[0].strip_prefix("refs/tags/").unwrap_or(&f[0]).to_string(),
            commit: if annotated {
                f[3].clone()
            } else {
                f[2].clone()
            },
            annotated,
            subject: f[4].clone(),
            tagger_name: Some(f[5].clone()).filter(|s| annotated && !s.is_empty()),
            created_at: f[6].parse().unwrap_or(0),
        });
    }
    Ok(v)
}

/// The merge base of two commits, if they share history.
pub async fn merge_base(dir: &Path, a: &str, b: &str) -> Result<Option<String>, OuroError> {
    match output(dir, &["merge-base", "--end-of-options", a, b]).await? {
        Ok(out) => Ok(Some(lossy(&out).trim().to_string())),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(validate_path("").unwrap(), "");
        assert_eq!(validate_path("/").unwrap(), "");
        assert_eq!(validate_path("a/b/").unwrap(), "a/b");
        assert_eq!(validate_path("/a").unwrap(), "a");
        assert_eq!(validate_path(":(glob)*").unwrap(), ":(glob)*");
        for bad in ["..", "a/../b", "a//b", "./a", "a/.", "a\0b"] {
            let e = validate_path(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::ValidationFailed, "{bad:?}");
            assert_eq!(e.details.unwrap()["field"], "path");
        }
    }

    #[tokio::test]
    async fn refs() {
        for ok in ["main", "feature/x", "v1.0", "abc123", "a-b_c"] {
            assert!(validate_ref(ok).await.is_ok(), "{ok}");
        }
        for bad in [
            "", "a..b", "-x", "a b", "a~1", "a^", "a:b", "x.lock", "/a", "a/", "@{u}", "a\nb", "a*",
        ] {
            let e = validate_ref(bad).await.unwrap_err();
            assert_eq!(e.details.unwrap()["field"], "ref", "{bad:?}");
        }
    }

    #[test]
    fn base64() {
        assert_eq!(base64_lite::encode(b""), "");
        assert_eq!(base64_lite::encode(b"f"), "Zg==");
        assert_eq!(base64_lite::encode(b"fo"), "Zm8=");
        assert_eq!(base64_lite::encode(b"foo"), "Zm9v");
        assert_eq!(base64_lite::encode(&[0, 255, 1, 2]), "AP8BAg==");
    }

    #[test]
    fn ls_tree_parsing_sorts_dirs_first() {
        let out = b"100644 blob aaa     12\tz.txt\x00040000 tree bbb       -\tsrc\x00120000 blob ccc      3\tlink\x00160000 commit ddd       -\tsub\x00100644 blob eee 1\tdir/\xff.bin\0";
        let v = parse_ls_tree(out);
        assert_eq!(v[0].name, "src");
        assert_eq!(v[0].kind, EntryKind::Dir);
        assert_eq!(v[0].size, None);
        let z = v.iter().find(|e| e.name == "z.txt").unwrap();
        assert_eq!(z.size, Some(12));
        assert_eq!(
            v.iter().find(|e| e.name == "link").unwrap().kind,
            EntryKind::Symlink
        );
        assert_eq!(
            v.iter().find(|e| e.name == "sub").unwrap().kind,
            EntryKind::Submodule
        );
        let l = v.iter().find(|e| e.lossy_name).unwrap();
        assert_eq!(l.name, "\u{fffd}.bin");
        assert_eq!(l.path, "dir/\u{fffd}.bin");
    }

    #[test]
    fn log_parsing() {
        let out = b"\x1eabc\0p1 p2\0Ada\0a@x\x001700000000\0Bob\0b@x\x001700000001\0Subject\0Body line\n\n\x1edef\0\0A\0a@x\x001\0C\0c@x\x002\0Root\0\n";
        let v = parse_log(out);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].parents, vec!["p1", "p2"]);
        assert_eq!(v[0].body, "Body line");
        assert_eq!(v[0].committed_at, 1700000001);
        assert!(v[1].parents.is_empty());
        assert_eq!(v[1].subject, "Root");
    }
}
