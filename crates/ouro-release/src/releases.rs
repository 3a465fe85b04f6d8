//! Releases (tables `release_releases`, `release_artifacts`, `release_links`): a draft made from
//! a successful pipeline run ([`create`]), its notes edited while it is a draft ([`edit_notes`]),
//! published with a tag in the hosted repository ([`publish`]), withdrawn with a reason
//! ([`withdraw`]); the readers ([`list`], [`get`], [`changelog`], [`compare`]).
//!
//! - A draft pins the run's artifacts by content hash (path, sha256, size): creating one is refused
//!   (`release.artifacts_unavailable`) when an artifact is expired or its blob is gone.
//! - Publishing creates the tag `v{version}` with `git update-ref REF NEW ""`: the empty old
//!   value makes git refuse a tag that exists (pushed by someone else in between), which is a
//!   409 `release.tag_exists` with nothing changed. A published release is immutable; only
//!   withdrawing it (with a reason) is possible.
//! - Every change appends its `release.*` event in the same transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use ouro_build::blobs::BlobStore;
use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::{Executor, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Release states.
pub const STATES: [&str; 3] = ["draft", "published", "withdrawn"];
/// The longest release notes accepted (bytes).
pub const MAX_NOTES: usize = 256 * 1024;
/// The longest withdrawal reason (characters).
pub const MAX_REASON: usize = 500;

/// A release.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Release {
    #[serde(skip)]
    pub id: i64,
    #[serde(skip)]
    pub project_id: i64,
    #[serde(skip)]
    pub repo_id: i64,
    /// The repository it was made from.
    pub repo: String,
    /// SemVer, without a leading `v` (`1.4.0`, `2.0.0-rc.1`).
    pub version: String,
    /// The tag in the repository (`v1.4.0`).
    pub tag: String,
    /// The commit it releases (the pipeline run's commit).
    pub sha: String,
    /// `draft`, `published` or `withdrawn`.
    pub state: String,
    /// The pipeline run (number) it was made from.
    pub run: Option<i64>,
    #[serde(skip)]
    pub build_run_id: Option<i64>,
    /// The previous release whose tag the commits were counted from (none: the first release).
    pub previous_version: Option<String>,
    /// `major`, `minor`, `patch`, `pre` or `explicit`, and why.
    pub bump: Option<String>,
    pub reason: Option<String>,
    /// Markdown.
    pub notes: String,
    /// The run's test summary: totals, coverage and quality gates (none: the run reported no tests).
    #[schemars(with = "Option<serde_json::Value>")]
    pub test_summary: Option<Value>,
    pub created_by: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    pub published_by: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub published_at: Option<i64>,
    pub withdrawn_by: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub withdrawn_at: Option<i64>,
    pub withdrawn_reason: Option<String>,
    /// The signed bundle's sha256 and size, once it is built.
    pub bundle_sha256: Option<String>,
    pub bundle_size: Option<i64>,
    /// Send it back with a notes edit; a stale revision gets 409.
    pub revision: i64,
}

/// An artifact pinned by a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseArtifact {
    pub path: String,
    pub sha256: String,
    pub size: i64,
}

/// A work item or change request a release links.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct Link {
    /// `item` or `cr`.
    pub kind: String,
    /// The item key (`DEMO-4`) or the change request number.
    #[serde(rename = "ref")]
    pub reference: String,
    pub title: String,
}

/// A release with its artifacts and links.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ReleaseDetail {
    #[serde(flatten)]
    pub release: Release,
    pub artifacts: Vec<ReleaseArtifact>,
    pub items: Vec<Link>,
    pub change_requests: Vec<Link>,
}

/// Creating a release.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRelease {
    /// The repository (name).
    pub repo: String,
    /// The pipeline run's number; it must have succeeded.
    pub run: i64,
    /// An explicit version (`1.2.3`, `v1.2.3` or `2.0.0-rc.1`); none: computed from the
    /// Conventional Commits since the previous release.
    #[serde(default)]
    pub version: Option<String>,
    /// Make a pre-release with this identifier (`rc` -> `1.3.0-rc.1`) when computing.
    #[serde(default)]
    pub pre: Option<String>,
    /// Notes to use instead of the generated ones.
    #[serde(default)]
    pub notes: Option<String>,
    /// `false`: publish at once (the API; default `true`, a draft).
    #[serde(default)]
    pub draft: Option<bool>,
}

/// Where a release's repository and blobs live.
#[derive(Clone)]
pub struct Env {
    pub data_dir: std::path::PathBuf,
    pub blobs: Arc<dyn BlobStore>,
}

impl Env {
    fn git_dir(&self, project_id: i64, repo_id: i64) -> std::path::PathBuf {
        ouro_code::repos::dir(&ouro_code::repos::root(&self.data_dir), project_id, repo_id)
    }
}

pub fn not_found(version: &str) -> OuroError {
    OuroError::new(
        ErrorCode::ReleaseNotFound,
        format!("release {version:?} does not exist in this project"),
    )
}

fn version_exists(version: &str) -> OuroError {
    OuroError::new(
        ErrorCode::ReleaseVersionExists,
        format!("the project already has a release {version}"),
    )
    .with_details(json!({"version": version}))
}

fn tag_exists(tag: &str) -> OuroError {
    OuroError::new(
        ErrorCode::ReleaseTagExists,
        format!("the tag {tag} already exists in the repository"),
    )
    .with_details(json!({"tag": tag}))
}

fn immutable(r: &Release) -> OuroError {
    OuroError::new(
        ErrorCode::ReleaseImmutable,
        format!(
            "release {} is {} and can no longer be changed",
            r.version, r.state
        ),
    )
}

/// Normalises an explicit version: strips a leading `v`, checks SemVer 2.0.0 (`MAJOR.MINOR.PATCH`
/// with optional `-pre` and `+build`).
pub fn check_version(s: &str) -> Result<String, OuroError> {
    let v = s.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let bad = || {
        OuroError::field(
            "version",
            format!(
                "{s:?} is not a SemVer version (MAJOR.MINOR.PATCH, optionally -pre and +build)"
            ),
        )
    };
    let (core, build) = match v.split_once('+') {
        Some((c, b)) => (c, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match core.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (core, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    let numeric = |n: &str| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'))
    };
    if nums.len() != 3 || !nums.iter().all(|n| numeric(n) && n.len() <= 18) {
        return Err(bad());
    }
    let ident_ok = |part: &str, pre: bool| {
        !part.is_empty()
            && part.split('.').all(|i| {
                !i.is_empty()
                    && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && (!pre || !i.bytes().all(|b| b.is_ascii_digit()) || numeric(i))
            })
    };
    if pre.is_some_and(|p| !ident_ok(p, true)) || build.is_some_and(|b| !ident_ok(b, false)) {
        return Err(bad());
    }
    if v.len() > 100 {
        return Err(bad());
    }
    Ok(v.to_string())
}

/// `(major, minor, patch, pre)` for ordering versions (pre-releases before their release).
type SortKey = (u64, u64, u64, bool, Vec<(bool, u64, String)>);

fn sort_key(v: &str) -> SortKey {
    let core = v.split('+').next().unwrap_or(v);
    let (core, pre) = match core.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (core, None),
    };
    let mut n = core.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let ids = pre
        .map(|p| {
            p.split('.')
                .map(|i| match i.parse::<u64>() {
                    Ok(n) => (false, n, String::new()),
                    Err(_) => (true, 0, i.to_string()),
                })
                .collect()
        })
        .unwrap_or_default();
    (
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        pre.is_none(),
        ids,
    )
}

/// Compares two SemVer versions by precedence.
pub fn cmp_versions(a: &str, b: &str) -> std::cmp::Ordering {
    sort_key(a).cmp(&sort_key(b))
}

const SELECT: &str = "SELECT r.*, cu.name AS created_name, pu.name AS published_name, \
     wu.name AS withdrawn_name FROM release_releases r \
     LEFT JOIN users cu ON cu.id = r.created_by LEFT JOIN users pu ON pu.id = r.published_by \
     LEFT JOIN users wu ON wu.id = r.withdrawn_by";

fn release_from(r: &Row, repo: &str) -> Result<Release, StoreError> {
    let summary = r
        .opt_text("test_summary")?
        .and_then(|s| serde_json::from_str(&s).ok());
    Ok(Release {
        id: r.i64("id")?,
        project_id: r.i64("project_id")?,
        repo_id: r.i64("repo_id")?,
        repo: repo.to_string(),
        version: r.text("version")?,
        tag: r.text("tag")?,
        sha: r.text("sha")?,
        state: r.text("state")?,
        run: r.opt_i64("run_number")?,
        build_run_id: r.opt_i64("build_run_id")?,
        previous_version: r.opt_text("previous_version")?,
        bump: r.opt_text("bump")?,
        reason: r.opt_text("reason")?,
        notes: r.text("notes")?,
        test_summary: summary,
        created_by: r.opt_text("created_name")?,
        created_at: r.i64("created_at")?,
        published_by: r.opt_text("published_name")?,
        published_at: r.opt_i64("published_at")?,
        withdrawn_by: r.opt_text("withdrawn_name")?,
        withdrawn_at: r.opt_i64("withdrawn_at")?,
        withdrawn_reason: r.opt_text("withdrawn_reason")?,
        bundle_sha256: r.opt_text("bundle_sha256")?,
        bundle_size: r.opt_i64("bundle_size")?,
        revision: r.i64("revision")?,
    })
}

async fn repo_names(
    ex: &mut impl Executor,
    project_id: i64,
) -> Result<BTreeMap<i64, String>, StoreError> {
    Ok(ouro_code::repos::list(ex, project_id)
        .await?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect())
}

async fn rows_to_releases(
    ex: &mut impl Executor,
    project_id: i64,
    rows: Vec<Row>,
) -> Result<Vec<Release>, StoreError> {
    let names = repo_names(ex, project_id).await?;
    rows.iter()
        .map(|r| {
            let repo_id = r.i64("repo_id")?;
            release_from(r, names.get(&repo_id).map_or("", String::as_str))
        })
        .collect()
}

/// A project's releases, newest first.
pub async fn list(ex: &mut impl Executor, project_id: i64) -> Result<Vec<Release>, StoreError> {
    let rows = q(format!(
        "{SELECT} WHERE r.project_id = $1 ORDER BY r.created_at DESC, r.id DESC"
    ))
    .bind(project_id)
    .fetch_all(ex)
    .await?;
    rows_to_releases(ex, project_id, rows).await
}

/// The published (and later withdrawn) releases, newest publication first: the changelog.
pub async fn changelog(
    ex: &mut impl Executor,
    project_id: i64,
) -> Result<Vec<Release>, StoreError> {
    let rows = q(format!(
        "{SELECT} WHERE r.project_id = $1 AND r.state <> 'draft' \
         ORDER BY r.published_at DESC, r.id DESC"
    ))
    .bind(project_id)
    .fetch_all(ex)
    .await?;
    rows_to_releases(ex, project_id, rows).await
}

/// A release by version (a leading `v` is accepted), or `release.not_found`.
pub async fn get(
    ex: &mut impl Executor,
    project_id: i64,
    version: &str,
) -> Result<Release, StoreError> {
    let v = version.strip_prefix('v').unwrap_or(version);
    let row = q(format!(
        "{SELECT} WHERE r.project_id = $1 AND r.version = $2"
    ))
    .bind(project_id)
    .bind(v)
    .fetch_optional(ex)
    .await?
    .ok_or_else(|| not_found(version))?;
    Ok(rows_to_releases(ex, project_id, vec![row]).await?.remove(0))
}

/// A release with its artifacts, items and change requests.
pub async fn detail(
    ex: &mut impl Executor,
    project_id: i64,
    version: &str,
) -> Result<ReleaseDetail, StoreError> {
    let release = get(ex, project_id, version).await?;
    let artifacts = artifacts(ex, release.id).await?;
    let links = links(ex, release.id).await?;
    let (items, change_requests) = links.into_iter().partition(|l| l.kind == "item");
    Ok(ReleaseDetail {
        release,
        artifacts,
        items,
        change_requests,
    })
}

/// A release's artifacts, by path.
pub async fn artifacts(
    ex: &mut impl Executor,
    release_id: i64,
) -> Result<Vec<ReleaseArtifact>, StoreError> {
    q("SELECT path, sha256, size FROM release_artifacts WHERE release_id = $1 ORDER BY path")
        .bind(release_id)
        .fetch_all(ex)
        .await?
        .iter()
        .map(|r| {
            Ok(ReleaseArtifact {
                path: r.text("path")?,
                sha256: r.text("sha256")?,
                size: r.i64("size")?,
            })
        })
        .collect()
}

/// A release's links, items first.
pub async fn links(ex: &mut impl Executor, release_id: i64) -> Result<Vec<Link>, StoreError> {
    let mut out = q("SELECT kind, ref, title FROM release_links WHERE release_id = $1")
        .bind(release_id)
        .fetch_all(ex)
        .await?
        .iter()
        .map(|r| {
            Ok(Link {
                kind: r.text("kind")?,
                reference: r.text("ref")?,
                title: r.text("title")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    out.sort_by(|a, b| {
        (a.kind.as_str(), a.reference.len(), &a.reference).cmp(&(
            b.kind.as_str(),
            b.reference.len(),
            &b.reference,
        ))
    });
    Ok(out)
}

/// The newest published (or withdrawn) release of a repository by SemVer precedence: the one
/// the next version counts from.
pub async fn previous(
    ex: &mut impl Executor,
    project_id: i64,
    repo_id: i64,
) -> Result<Option<Release>, StoreError> {
    let rows = q(format!(
        "{SELECT} WHERE r.project_id = $1 AND r.repo_id = $2 AND r.state <> 'draft'"
    ))
    .bind(project_id)
    .bind(repo_id)
    .fetch_all(ex)
    .await?;
    let mut all = rows_to_releases(ex, project_id, rows).await?;
    all.sort_by(|a, b| cmp_versions(&a.version, &b.version));
    Ok(all.pop())
}

/// A commit between two releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Commit {
    pub sha: String,
    pub author: String,
    pub subject: String,
    /// The full message (lossy UTF-8).
    #[serde(skip)]
    pub message: String,
}

/// The commits reachable from `to` and not from `from` (newest first), read with the git CLI.
pub async fn commits_between(
    git_dir: &Path,
    from: Option<&str>,
    to: &str,
) -> Result<Vec<Commit>, OuroError> {
    let dir = git_dir.to_string_lossy().into_owned();
    let range = match from {
        Some(f) => format!("{f}..{to}"),
        None => to.to_string(),
    };
    let out = ouro_code::git::command(&[
        "--git-dir",
        &dir,
        "log",
        "--no-color",
        "--format=%H%x00%an%x00%B%x1e",
        &range,
        "--",
    ])
    .output()
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "cannot run git log");
        OuroError::internal()
    })?;
    if !out.status.success() {
        tracing::error!(stderr = %String::from_utf8_lossy(&out.stderr), "git log failed");
        return Err(OuroError::internal());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split('\x1e')
        .filter_map(|rec| {
            let rec = rec.trim_start_matches('\n');
            let mut p = rec.splitn(3, '\0');
            let sha = p.next()?.trim().to_string();
            if sha.len() < 40 {
                return None;
            }
            let author = p.next().unwrap_or("").to_string();
            let message = p.next().unwrap_or("").trim_end().to_string();
            Some(Commit {
                sha,
                author,
                subject: message.lines().next().unwrap_or("").to_string(),
                message,
            })
        })
        .collect())
}

/// The items (by key, with titles) that `commits` mention, and the merged change requests of
/// the repository whose merge commit is among them.
pub async fn linked(
    ex: &mut impl Executor,
    project_id: i64,
    repo_id: i64,
    commits: &[Commit],
) -> Result<(Vec<Link>, Vec<Link>), StoreError> {
    let mut keys = BTreeSet::new();
    for c in commits {
        for r in ouro_core::refs::parse(&c.message) {
            keys.insert(r.key);
        }
    }
    let mut items = Vec::new();
    for k in keys {
        if let Some(item) = ouro_plan::items::get(ex, project_id, &k).await? {
            items.push(Link {
                kind: "item".into(),
                reference: item.key.clone(),
                title: item.title.clone(),
            });
        }
    }
    let shas: BTreeSet<&str> = commits.iter().map(|c| c.sha.as_str()).collect();
    let crs = ouro_code::cr::list(ex, repo_id, Some("merged"))
        .await?
        .into_iter()
        .filter(|cr| {
            cr.merge_commit.as_deref().is_some_and(|m| shas.contains(m))
                || shas.contains(cr.head.as_str())
        })
        .map(|cr| Link {
            kind: "cr".into(),
            reference: cr.number.to_string(),
            title: cr.title,
        })
        .collect();
    Ok((items, crs))
}

/// The run's test summary as stored with a release: totals, coverage and each job's gate.
pub async fn test_summary(
    ex: &mut impl Executor,
    project_id: i64,
    run_id: i64,
) -> Result<Option<Value>, StoreError> {
    let t = ouro_test::results::run_tests(ex, project_id, run_id).await?;
    if t.jobs.is_empty() {
        return Ok(None);
    }
    let gates: Vec<Value> = t
        .jobs
        .iter()
        .filter_map(|j| {
            j.gate.as_ref().map(
                |g| json!({"job": j.job, "passed": g.passed, "failures": g.failure_sentence()}),
            )
        })
        .collect();
    let gate = if gates.is_empty() {
        Value::Null
    } else {
        json!(gates.iter().all(|g| g["passed"] == true))
    };
    Ok(Some(json!({
        "totals": t.totals,
        "duration_ms": t.duration_ms,
        "lines_covered": t.lines_covered,
        "lines_total": t.lines_total,
        "coverage_percent": t.coverage_percent,
        "gate_passed": gate,
        "gates": gates,
    })))
}

/// At most this many commit ids go into a `release.created` event (10k commits since the
/// previous release would make a megabyte-sized event).
const MAX_EVENT_COMMITS: usize = 1000;

/// What [`create`] needs besides the request: the version it settled on and why, and the
/// generated notes. [`plan`] computes it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub version: String,
    pub bump: String,
    pub reason: String,
    pub previous: Option<String>,
    pub notes: String,
    pub commits: Vec<Commit>,
}

/// Decides the version and renders the notes for a release of `sha` in `git_dir`.
pub async fn plan(
    ex: &mut impl Executor,
    project_id: i64,
    repo_id: i64,
    git_dir: &Path,
    sha: &str,
    req: &NewRelease,
) -> Result<Planned, StoreError> {
    let prev = previous(ex, project_id, repo_id).await?;
    let settings = crate::settings::get(ex, project_id).await?;
    // The commits since the previous release's tag (RELA's reader: oldest first, lossy UTF-8).
    let found = crate::changes::since_async(
        git_dir.to_path_buf(),
        sha.to_string(),
        prev.as_ref().map(|p| p.tag.clone()),
    )
    .await?;
    let prev_version = prev
        .as_ref()
        .and_then(|p| semver::Version::parse(&p.version).ok());
    let (version, bump, reason) = match req.version.as_deref().filter(|v| !v.trim().is_empty()) {
        Some(v) => (
            crate::version::explicit(v)?.to_string(),
            "explicit".to_string(),
            "the version was given".to_string(),
        ),
        None => {
            let existing: Vec<semver::Version> =
                q("SELECT version FROM release_releases WHERE project_id = $1")
                    .bind(project_id)
                    .fetch_all(ex)
                    .await?
                    .iter()
                    .filter_map(|r| r.text("version").ok())
                    .filter_map(|v| semver::Version::parse(&v).ok())
                    .collect();
            let convs: Vec<crate::conventional::Conventional> =
                found.iter().map(|c| c.conventional.clone()).collect();
            let pre = req.pre.as_deref().map(str::trim).filter(|p| !p.is_empty());
            match crate::version::next(
                prev_version.as_ref(),
                &convs,
                &settings.rules,
                pre,
                &existing,
            ) {
                Ok(n) => (n.version.to_string(), n.bump.as_str().to_string(), n.reason),
                Err(no) => {
                    return Err(
                        OuroError::new(ErrorCode::ReleaseNothingToRelease, no.message).into(),
                    );
                }
            }
        }
    };
    let commits: Vec<Commit> = found
        .iter()
        .rev()
        .map(|c| Commit {
            sha: c.sha.clone(),
            author: c.author_name.clone(),
            subject: c.message.lines().next().unwrap_or("").to_string(),
            message: c.message.clone(),
        })
        .collect();
    let date = ouro_core::time::rfc3339(ouro_core::time::now_ms())[..10].to_string();
    let (items, crs) = linked(ex, project_id, repo_id, &commits).await?;
    let input = crate::notes::NotesInput {
        version: semver::Version::parse(&version)
            .map_err(|_| OuroError::field("version", "not a SemVer version"))?,
        previous: prev_version,
        date,
        contributors: crate::notes::contributors(&found),
        commits: found,
        items: items
            .iter()
            .map(|i| crate::notes::ItemRef {
                key: i.reference.clone(),
                title: i.title.clone(),
            })
            .collect(),
        change_requests: crs
            .iter()
            .map(|c| crate::notes::CrRef {
                number: c.reference.parse().unwrap_or(0),
                title: c.title.clone(),
            })
            .collect(),
    };
    let notes = crate::notes::render(&input, settings.notes_template.as_deref())?;
    Ok(Planned {
        version,
        bump,
        reason,
        previous: prev.map(|p| p.version),
        notes,
        commits,
    })
}

/// Creates a draft release from pipeline run `req.run` of repository `req.repo`: the run must
/// have succeeded and all its artifacts still be stored. Appends `release.created`.
pub async fn create(
    store: &Store,
    env: &Env,
    actor: &Actor,
    project_id: i64,
    req: &NewRelease,
) -> Result<ReleaseDetail, StoreError> {
    create_as(store, env, actor, project_id, req, None).await
}

/// [`create`] called by job `caller_job` (a pipeline step with the job's token): when the job
/// belongs to the run being released and the run is still running because of it, the run counts
/// as successful if every other job of the run succeeded (or was skipped).
pub async fn create_as(
    store: &Store,
    env: &Env,
    actor: &Actor,
    project_id: i64,
    req: &NewRelease,
    caller_job: Option<i64>,
) -> Result<ReleaseDetail, StoreError> {
    let mut c = store.read().await?;
    let repo = ouro_code::repos::get(&mut c, project_id, req.repo.trim()).await?;
    let run = ouro_build::runs::get(&mut c, project_id, req.run).await?;
    if run.repo_id != Some(repo.id) {
        return Err(OuroError::field(
            "run",
            format!(
                "run {} is not a run of repository {}",
                run.number, repo.name
            ),
        )
        .into());
    }
    let mut ok = run.status == "success";
    if let Some(j) = caller_job.filter(|_| run.status == "running") {
        let jobs = ouro_build::runs::jobs(&mut c, run.id).await?;
        ok = jobs.iter().any(|x| x.id == j)
            && jobs
                .iter()
                .filter(|x| x.id != j)
                .all(|x| matches!(x.status.as_str(), "success" | "skipped"));
    }
    if !ok {
        return Err(OuroError::new(
            ErrorCode::ReleaseRunNotSuccessful,
            format!(
                "run {} is {}: a release is made from a successful run",
                run.number, run.status
            ),
        )
        .with_details(json!({"run": run.number, "status": run.status}))
        .into());
    }
    // The run's artifacts, pinned by hash; refused when any is gone.
    let mut missing = Vec::new();
    let mut pinned: BTreeMap<String, ReleaseArtifact> = BTreeMap::new();
    for a in ouro_build::artifacts::list_for_run(&mut c, run.id).await? {
        let why = if a.expired {
            Some("expired")
        } else {
            let blobs = env.blobs.clone();
            let sha = a.sha256.clone();
            let exists = tokio::task::spawn_blocking(move || blobs.exists(&sha))
                .await
                .map_err(|_| OuroError::internal())?
                .map_err(OuroError::from)?;
            (!exists).then_some("its file is missing from the artifact store")
        };
        if let Some(why) = why {
            missing.push(json!({"path": a.path, "job": a.job, "reason": why}));
            continue;
        }
        let mut path = a.path.clone();
        if pinned.get(&path).is_some_and(|p| p.sha256 != a.sha256) {
            path = format!("{}/{}", a.job, a.path);
        }
        pinned.insert(
            path.clone(),
            ReleaseArtifact {
                path,
                sha256: a.sha256,
                size: a.size,
            },
        );
    }
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|m| {
                format!(
                    "{} ({})",
                    m["path"].as_str().unwrap_or(""),
                    m["reason"].as_str().unwrap_or("")
                )
            })
            .collect();
        return Err(OuroError::new(
            ErrorCode::ReleaseArtifactsUnavailable,
            format!(
                "run {} cannot be released: artifacts unavailable: {}",
                run.number,
                names.join(", ")
            ),
        )
        .with_details(json!({"artifacts": missing}))
        .into());
    }
    let git_dir = env.git_dir(project_id, repo.id);
    let planned = plan(&mut c, project_id, repo.id, &git_dir, &run.sha, req).await?;
    let summary = test_summary(&mut c, project_id, run.id).await?;
    let (items, crs) = linked(&mut c, project_id, repo.id, &planned.commits).await?;
    drop(c);
    let notes = match &req.notes {
        Some(n) => check_notes(n)?.to_string(),
        None => planned.notes.clone(),
    };
    let version = planned.version.clone();
    let tag = format!("v{version}");

    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let slug = q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(&mut tx)
        .await?
        .text("slug")?;
    let exists = q("SELECT id FROM release_releases WHERE project_id = $1 AND version = $2")
        .bind(project_id)
        .bind(version.as_str())
        .fetch_optional(&mut tx)
        .await?;
    if exists.is_some() {
        return Err(version_exists(&version).into());
    }
    let id = ouro_store::on_unique(
        q(
            "INSERT INTO release_releases (project_id, repo_id, version, tag, sha, state, \
           build_run_id, notes, test_summary, created_by, created_at, run_number, \
           previous_version, bump, reason, revision) VALUES ($1, $2, $3, $4, $5, 'draft', $6, \
           $7, $8, $9, $10, $11, $12, $13, $14, 1) RETURNING id",
        )
        .bind(project_id)
        .bind(repo.id)
        .bind(version.as_str())
        .bind(tag.as_str())
        .bind(run.sha.as_str())
        .bind(run.id)
        .bind(notes.as_str())
        .bind(summary.as_ref().map(|s| s.to_string()))
        .bind(actor.user_id())
        .bind(now)
        .bind(run.number)
        .bind(planned.previous.clone())
        .bind(planned.bump.as_str())
        .bind(planned.reason.as_str())
        .fetch_one(&mut tx)
        .await,
        || version_exists(&version),
    )?
    .i64("id")?;
    for a in pinned.values() {
        q("INSERT INTO release_artifacts (release_id, path, sha256, size) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(a.path.as_str())
            .bind(a.sha256.as_str())
            .bind(a.size)
            .execute(&mut tx)
            .await?;
    }
    // Pinned at once: build artifact expiry must not take a draft's files before it is bundled.
    crate::bundle::pin_release_artifacts(&mut tx, id).await?;
    for l in items.iter().chain(crs.iter()) {
        q(
            "INSERT INTO release_links (release_id, kind, ref, title) VALUES ($1, $2, $3, $4) \
           ON CONFLICT (release_id, kind, ref) DO NOTHING",
        )
        .bind(id)
        .bind(l.kind.as_str())
        .bind(l.reference.as_str())
        .bind(l.title.as_str())
        .execute(&mut tx)
        .await?;
    }
    tx.append(
        NewEvent::new(
            ev::RELEASE_CREATED,
            actor,
            id,
            json!({"version": version, "tag": tag, "sha": run.sha, "repo": repo.name,
                   "run": run.number, "artifacts": pinned.len(), "bump": planned.bump,
                   "previous": planned.previous,
                   // Plan's trail links the release to the items of these commits and run.
                   "commits": planned.commits.iter().take(MAX_EVENT_COMMITS)
                       .map(|c| c.sha.as_str()).collect::<Vec<_>>(),
                   "pipelines": [run.id]}),
        )
        .in_project(project_id, &slug),
    )
    .await?;
    tx.commit().await?;
    detail(&mut store.read().await?, project_id, &version).await
}

fn check_notes(notes: &str) -> Result<&str, OuroError> {
    if notes.len() > MAX_NOTES {
        return Err(OuroError::field(
            "notes",
            format!("release notes are at most {MAX_NOTES} bytes"),
        ));
    }
    if notes.contains('\0') {
        return Err(OuroError::field(
            "notes",
            "release notes cannot contain NUL",
        ));
    }
    Ok(notes)
}

async fn slug_of(ex: &mut impl Executor, project_id: i64) -> Result<String, StoreError> {
    q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(ex)
        .await?
        .text("slug")
}

/// Replaces a draft's notes; `revision` (when given) must be the one read, else 409
/// `conflict.stale_version`. Published and withdrawn releases: 409 `release.immutable`.
/// Appends `release.notes_edited`.
pub async fn edit_notes(
    store: &Store,
    actor: &Actor,
    project_id: i64,
    version: &str,
    notes: &str,
    revision: Option<i64>,
) -> Result<Release, StoreError> {
    check_notes(notes)?;
    let mut tx = store.begin().await?;
    let cur = get(&mut tx, project_id, version).await?;
    if cur.state != "draft" {
        return Err(immutable(&cur).into());
    }
    if revision.is_some_and(|r| r != cur.revision) {
        return Err(OuroError::stale_version("release", cur.revision).into());
    }
    let n = q(
        "UPDATE release_releases SET notes = $1, revision = revision + 1 \
               WHERE id = $2 AND revision = $3 AND state = 'draft'",
    )
    .bind(notes)
    .bind(cur.id)
    .bind(cur.revision)
    .execute(&mut tx)
    .await?;
    if n == 0 {
        return Err(OuroError::stale_version("release", cur.revision + 1).into());
    }
    let slug = slug_of(&mut tx, project_id).await?;
    tx.append(
        NewEvent::new(
            ev::RELEASE_NOTES_EDITED,
            actor,
            cur.id,
            json!({"version": cur.version, "bytes": notes.len(), "revision": cur.revision + 1}),
        )
        .in_project(project_id, &slug),
    )
    .await?;
    tx.commit().await?;
    get(&mut store.read().await?, project_id, &cur.version).await
}

async fn git_out(mut cmd: tokio::process::Command, input: Option<&[u8]>) -> Result<String, String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(data)
            .await
            .map_err(|e| format!("writing to git: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Whether `refs/tags/{tag}` exists in `git_dir`.
pub async fn tag_present(git_dir: &Path, tag: &str) -> bool {
    let dir = git_dir.to_string_lossy().into_owned();
    let r = format!("refs/tags/{tag}");
    ouro_code::git::run(&["--git-dir", &dir, "rev-parse", "--verify", "--quiet", &r])
        .await
        .is_ok()
}

/// Creates the annotated tag `tag` at `sha`, refusing (409 `release.tag_exists`) when the ref
/// exists; returns the tag object id.
pub async fn create_tag(
    git_dir: &Path,
    tag: &str,
    sha: &str,
    tagger: &str,
    message: &str,
) -> Result<String, OuroError> {
    let dir = git_dir.to_string_lossy().into_owned();
    let refname = format!("refs/tags/{tag}");
    if ouro_code::git::run(&["check-ref-format", &refname])
        .await
        .is_err()
    {
        return Err(OuroError::field(
            "version",
            format!("{tag} is not a valid tag name"),
        ));
    }
    let tagger: String = tagger
        .chars()
        .filter(|c| !matches!(c, '<' | '>' | '\n' | '\0'))
        .collect();
    let secs = ouro_core::time::now_ms() / 1000;
    let body = format!(
        "object {sha}\ntype commit\ntag {tag}\ntagger {tagger} <{tagger}@ouro> {secs} +0000\n\n{message}\n"
    );
    let internal = |e: String| {
        tracing::error!(error = %e, tag, "creating a release tag failed");
        OuroError::internal()
    };
    let obj = git_out(
        ouro_code::git::command(&["--git-dir", &dir, "mktag"]),
        Some(body.as_bytes()),
    )
    .await
    .map_err(internal)?;
    match git_out(
        ouro_code::git::command(&["--git-dir", &dir, "update-ref", &refname, &obj, ""]),
        None,
    )
    .await
    {
        Ok(_) => Ok(obj),
        Err(_) if tag_present(git_dir, tag).await => Err(tag_exists(tag)),
        Err(e) => Err(internal(e)),
    }
}

async fn delete_tag(git_dir: &Path, tag: &str, obj: &str) {
    let dir = git_dir.to_string_lossy().into_owned();
    let refname = format!("refs/tags/{tag}");
    if let Err(e) =
        ouro_code::git::run(&["--git-dir", &dir, "update-ref", "-d", &refname, obj]).await
    {
        tracing::warn!(error = %e, tag, "removing a release tag after a failed publish failed");
    }
}

/// Publishes a draft: creates its tag in the repository at its commit (409
/// `release.tag_exists` when the tag exists, `release.immutable` when it is not a draft) and
/// appends `release.published`. If recording fails after the tag was made, the tag is removed.
pub async fn publish(
    store: &Store,
    env: &Env,
    actor: &Actor,
    project_id: i64,
    version: &str,
) -> Result<Release, StoreError> {
    let mut tx = store.begin().await?;
    let cur = get(&mut tx, project_id, version).await?;
    if cur.state != "draft" {
        return Err(immutable(&cur).into());
    }
    let git_dir = env.git_dir(project_id, cur.repo_id);
    let who = match actor {
        Actor::User { name, .. } => name.clone(),
        _ => "ouro".to_string(),
    };
    let obj = create_tag(
        &git_dir,
        &cur.tag,
        &cur.sha,
        &who,
        &format!("Release {}", cur.version),
    )
    .await?;
    let now = ouro_core::time::now_ms();
    let result = async {
        q("UPDATE release_releases SET state = 'published', published_by = $1, published_at = $2, \
           revision = revision + 1 WHERE id = $3 AND state = 'draft'")
        .bind(actor.user_id())
        .bind(now)
        .bind(cur.id)
        .execute(&mut tx)
        .await?;
        let slug = slug_of(&mut tx, project_id).await?;
        tx.append(
            NewEvent::new(
                ev::RELEASE_PUBLISHED,
                actor,
                cur.id,
                json!({"version": cur.version, "tag": cur.tag, "sha": cur.sha, "repo": cur.repo,
                       "run": cur.run}),
            )
            .in_project(project_id, &slug),
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = result {
        delete_tag(&git_dir, &cur.tag, &obj).await;
        return Err(e);
    }
    get(&mut store.read().await?, project_id, &cur.version).await
}

/// Withdraws a published release with a reason (1 to 500 characters); its tag stays. Appends
/// `release.withdrawn`.
pub async fn withdraw(
    store: &Store,
    actor: &Actor,
    project_id: i64,
    version: &str,
    reason: &str,
) -> Result<Release, StoreError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(OuroError::field(
            "reason",
            format!("say why, in 1 to {MAX_REASON} characters"),
        )
        .into());
    }
    let mut tx = store.begin().await?;
    let cur = get(&mut tx, project_id, version).await?;
    if cur.state != "published" {
        return Err(OuroError::new(
            ErrorCode::ReleaseWrongState,
            format!(
                "release {} is {}: only a published release can be withdrawn",
                cur.version, cur.state
            ),
        )
        .into());
    }
    q(
        "UPDATE release_releases SET state = 'withdrawn', withdrawn_by = $1, withdrawn_at = $2, \
       withdrawn_reason = $3, revision = revision + 1 WHERE id = $4 AND state = 'published'",
    )
    .bind(actor.user_id())
    .bind(ouro_core::time::now_ms())
    .bind(reason)
    .bind(cur.id)
    .execute(&mut tx)
    .await?;
    let slug = slug_of(&mut tx, project_id).await?;
    tx.append(
        NewEvent::new(
            ev::RELEASE_WITHDRAWN,
            actor,
            cur.id,
            json!({"version": cur.version, "tag": cur.tag, "reason": reason}),
        )
        .in_project(project_id, &slug),
    )
    .await?;
    tx.commit().await?;
    get(&mut store.read().await?, project_id, &cur.version).await
}

/// An artifact that differs between two releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ArtifactChange {
    pub path: String,
    pub from: Option<ReleaseArtifact>,
    pub to: Option<ReleaseArtifact>,
}

/// Two releases compared.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Comparison {
    pub from: Release,
    pub to: Release,
    /// Commits in `to` and not in `from`, newest first.
    pub commits: Vec<Commit>,
    /// Items those commits mention.
    pub items: Vec<Link>,
    pub change_requests: Vec<Link>,
    pub added: Vec<ReleaseArtifact>,
    pub removed: Vec<ReleaseArtifact>,
    /// Same path, different content (sha256).
    pub changed: Vec<ArtifactChange>,
    pub unchanged: usize,
}

/// Compares release `from` with release `to` of the same project.
pub async fn compare(
    ex: &mut impl Executor,
    env: &Env,
    project_id: i64,
    from: &str,
    to: &str,
) -> Result<Comparison, StoreError> {
    let a = get(ex, project_id, from).await?;
    let b = get(ex, project_id, to).await?;
    let commits = if a.repo_id == b.repo_id {
        commits_between(&env.git_dir(project_id, b.repo_id), Some(&a.sha), &b.sha).await?
    } else {
        Vec::new()
    };
    let (items, change_requests) = linked(ex, project_id, b.repo_id, &commits).await?;
    let fa: BTreeMap<String, ReleaseArtifact> = artifacts(ex, a.id)
        .await?
        .into_iter()
        .map(|x| (x.path.clone(), x))
        .collect();
    let fb: BTreeMap<String, ReleaseArtifact> = artifacts(ex, b.id)
        .await?
        .into_iter()
        .map(|x| (x.path.clone(), x))
        .collect();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    let mut unchanged = 0;
    for (p, x) in &fb {
        match fa.get(p) {
            None => added.push(x.clone()),
            Some(old) if old.sha256 != x.sha256 => changed.push(ArtifactChange {
                path: p.clone(),
                from: Some(old.clone()),
                to: Some(x.clone()),
            }),
            Some(_) => unchanged += 1,
        }
    }
    for (p, x) in &fa {
        if !fb.contains_key(p) {
            removed.push(x.clone());
        }
    }
    Ok(Comparison {
        from: a,
        to: b,
        commits,
        items,
        change_requests,
        added,
        removed,
        changed,
        unchanged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_versions_are_checked() {
        assert_eq!(check_version("v1.2.3").unwrap(), "1.2.3");
        assert_eq!(check_version("2.0.0-rc.1").unwrap(), "2.0.0-rc.1");
        assert_eq!(check_version("1.0.0+build.5").unwrap(), "1.0.0+build.5");
        for bad in [
            "1.2",
            "01.2.3",
            "1.2.3-",
            "1.2.3-01",
            "x.y.z",
            "",
            "1.2.3 ; rm",
        ] {
            assert!(check_version(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn versions_order_by_precedence() {
        let mut v = vec![
            "1.10.0",
            "1.2.0",
            "1.2.0-rc.1",
            "1.2.0-rc.10",
            "1.2.0-rc.2",
            "0.9.9",
        ];
        v.sort_by(|a, b| cmp_versions(a, b));
        assert_eq!(
            v,
            [
                "0.9.9",
                "1.2.0-rc.1",
                "1.2.0-rc.2",
                "1.2.0-rc.10",
                "1.2.0",
                "1.10.0"
            ]
        );
    }
}
