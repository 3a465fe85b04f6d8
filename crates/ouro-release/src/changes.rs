//! The commits a release brings: reachable from its commit and not from the previous release's
//! tag, oldest first, read with one `git log -z` (10k commits in well under a second).
//!
//! Messages are decoded lossily: a commit whose message is not UTF-8 (and says no encoding) keeps
//! its readable parts, with U+FFFD for the rest, and is never dropped. A commit that declares an
//! encoding (`i18n.commitEncoding`) is re-encoded to UTF-8 by git.

use std::path::Path;
use std::process::{Command, Stdio};

use ouro_core::error::{ErrorCode, OuroError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conventional::{self, Conventional};

/// One commit of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Commit {
    pub sha: String,
    /// The first 7 characters of the sha.
    pub short: String,
    pub author_name: String,
    pub author_email: String,
    /// Author time, Unix milliseconds.
    pub time: i64,
    /// The whole message, lossily decoded, trailing whitespace removed.
    pub message: String,
    pub conventional: Conventional,
    /// Parent shas (two or more for a merge commit).
    pub parents: Vec<String>,
}

impl Commit {
    /// A commit from its parts, the message parsed as a Conventional Commit.
    pub fn new(
        sha: &str,
        parents: Vec<String>,
        author_name: &str,
        author_email: &str,
        time: i64,
        message: &str,
    ) -> Commit {
        let message = message.trim_end().to_string();
        Commit {
            sha: sha.to_string(),
            short: sha.chars().take(7).collect(),
            author_name: author_name.to_string(),
            author_email: author_email.to_string(),
            time,
            conventional: conventional::parse(&message),
            message,
            parents,
        }
    }
}

/// Fields per commit in the `git log -z` output below.
const FIELDS: usize = 6;

/// The commits reachable from `to_sha` and not from the tag `previous_tag` (a tag name such as
/// `v1.2.0`, looked up as `refs/tags/<name>`), oldest first (parents before children).
/// `repo_git_dir` is a bare repository or a `.git` directory. Blocking: call it from
/// `spawn_blocking` in async code.
pub fn since(
    repo_git_dir: &Path,
    to_sha: &str,
    previous_tag: Option<&str>,
) -> Result<Vec<Commit>, OuroError> {
    if !is_revision(to_sha) {
        return Err(OuroError::new(
            ErrorCode::ReleaseCommitNotFound,
            format!("{to_sha:?} is not a commit"),
        ));
    }
    let to = resolve(repo_git_dir, to_sha).ok_or_else(|| {
        OuroError::new(
            ErrorCode::ReleaseCommitNotFound,
            format!("commit {to_sha} is not in the repository"),
        )
    })?;
    let mut args: Vec<String> = vec![
        "log".into(),
        "-z".into(),
        "--topo-order".into(),
        "--reverse".into(),
        "--no-color".into(),
        "--encoding=UTF-8".into(),
        "--format=%H%x00%P%x00%an%x00%ae%x00%at%x00%B".into(),
        "--end-of-options".into(),
        to,
    ];
    if let Some(tag) = previous_tag {
        let not_found = || {
            OuroError::new(
                ErrorCode::ReleaseTagNotFound,
                format!("tag {tag:?} is not in the repository"),
            )
        };
        if !is_tag_name(tag) {
            return Err(not_found());
        }
        let prev = resolve(repo_git_dir, &format!("refs/tags/{tag}")).ok_or_else(not_found)?;
        args.push(format!("^{prev}"));
    }
    args.push("--".into());
    let out = git(repo_git_dir)
        .args(&args)
        .output()
        .map_err(|e| internal(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(internal(format!(
            "git log: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_log(&out.stdout)
}

/// [`since`] on tokio's blocking pool, for async callers (the server, the CLI).
pub async fn since_async(
    repo_git_dir: std::path::PathBuf,
    to_sha: String,
    previous_tag: Option<String>,
) -> Result<Vec<Commit>, OuroError> {
    tokio::task::spawn_blocking(move || since(&repo_git_dir, &to_sha, previous_tag.as_deref()))
        .await
        .map_err(|e| internal(format!("reading commits panicked or was cancelled: {e}")))?
}

/// Reads the `git log -z` output: NUL-separated fields, commits separated by NUL as well.
fn parse_log(out: &[u8]) -> Result<Vec<Commit>, OuroError> {
    let mut out = out;
    // `-z` ends the last record with a NUL only between commits; tolerate either.
    if out.last() == Some(&0) {
        out = &out[..out.len() - 1];
    }
    if out.is_empty() {
        return Ok(Vec::new());
    }
    let fields: Vec<&[u8]> = out.split(|b| *b == 0).collect();
    if !fields.len().is_multiple_of(FIELDS) {
        return Err(internal(format!(
            "git log printed {} fields, not a multiple of {FIELDS}",
            fields.len()
        )));
    }
    let mut commits = Vec::with_capacity(fields.len() / FIELDS);
    for f in fields.chunks_exact(FIELDS) {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        // Each record after the first starts with the newline git puts after a message.
        let sha = text(f[0]).trim().to_string();
        let parents = text(f[1]).split_whitespace().map(str::to_string).collect();
        let secs: i64 = text(f[4]).trim().parse().unwrap_or(0);
        commits.push(Commit::new(
            &sha,
            parents,
            &text(f[2]),
            &text(f[3]),
            secs.saturating_mul(1000),
            &String::from_utf8_lossy(f[5]),
        ));
    }
    Ok(commits)
}

/// The full sha of `rev` as a commit, or `None` if it does not name one.
fn resolve(dir: &Path, rev: &str) -> Option<String> {
    let out = git(dir)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!sha.is_empty()).then_some(sha)
}

/// A sha or a ref name: no option-like start, no revision syntax, no control characters.
fn is_revision(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('-')
        && !s.contains("..")
        && !s
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\@{".contains(c))
}

/// A tag name as `git check-ref-format` accepts it (the rules that matter for a lookup).
fn is_tag_name(s: &str) -> bool {
    is_revision(s)
        && !s.starts_with('/')
        && !s.ends_with('/')
        && !s.ends_with('.')
        && !s.ends_with(".lock")
        && !s.contains("//")
        && !s.split('/').any(|p| p.starts_with('.'))
}

/// git with a clean environment (no user or system config, no prompts), like `ouro_code::git`.
fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("--git-dir")
        .arg(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(Stdio::null());
    c
}

fn internal(cause: String) -> OuroError {
    tracing::error!(%cause, "reading release commits failed");
    OuroError::internal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_records() {
        let out = b"aaaaaaaaaa\x00p1 p2\x00Ann\x00ann@x\x00100\x00feat: one\n\x00\nbbbbbbbbbb\x00\x00Bob\x00bob@x\x00200\x00fix\xff: two\n\x00";
        let commits = parse_log(out).unwrap();
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].parents, vec!["p1", "p2"]);
        assert_eq!(commits[0].conventional.kind.as_deref(), Some("feat"));
        assert_eq!(commits[1].sha, "bbbbbbbbbb");
        assert_eq!(commits[1].short, "bbbbbbb");
        assert_eq!(commits[1].time, 200_000);
        assert!(commits[1].message.contains('\u{fffd}'));
    }

    #[test]
    fn refuses_revision_syntax() {
        assert!(is_revision("0123abc"));
        assert!(!is_revision("--output=x"));
        assert!(!is_revision("a..b"));
        assert!(!is_tag_name("v1.lock"));
        assert!(is_tag_name("v1.2.0"));
    }
}
