//! Code: browsing a repository over the API (branches, tags, trees, blobs, raw files, the commit
//! log, one commit, its diff, and comparing two refs). Read only; viewers may read. The domain
//! logic is `ouro_code::browse` and `ouro_code::diff`.

use std::path::PathBuf;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use ouro_code::browse::{self, Blob, Branch, CommitInfo, PathKind, Resolved, Tag, TreeEntry};
use ouro_code::diff::{self, Diff, DiffOptions};
use ouro_code::repos::{self, Repo};
use ouro_core::{OuroError, Permission, Role};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::AppState;
use crate::api::repos::repos_root;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let viewer = Permission::Project(Role::Viewer);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/repos/{name}/branches",
        viewer,
        branches,
    )
    .doc(
        "code",
        "The repository's branches: head commit, and commits ahead of and behind the default branch",
    )
    .response::<Vec<Branch>>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/repos/{name}/tags",
        viewer,
        tags,
    )
    .doc(
        "code",
        "The repository's tags (annotated or lightweight), newest first",
    )
    .response::<Vec<Tag>>(200);
    reg.route(Method::GET, "/api/v1/projects/{slug}/repos/{name}/tree", viewer, tree)
        .doc(
            "code",
            "A directory at a ref: directories first, with sizes. An empty repository gives `empty: true` and no entries",
        )
        .query("ref", "Branch, tag or commit id (default: the default branch); branches are tried first, then tags")
        .query("path", "Directory from the root (default: the root)")
        .response::<TreeView>(200);
    reg.route(Method::GET, "/api/v1/projects/{slug}/repos/{name}/blob", viewer, blob)
        .doc(
            "code",
            "A file at a ref: `encoding` utf-8, lossy (not UTF-8), base64 (binary) or none (over 1 MiB: use raw)",
        )
        .query("ref", "Branch, tag or commit id (default: the default branch)")
        .query("path", "The file's path")
        .response::<Blob>(200);
    reg.route(Method::GET, "/api/v1/projects/{slug}/repos/{name}/raw", viewer, raw)
        .doc(
            "code",
            "A file's bytes: text/plain or application/octet-stream, never rendered (nosniff, sandboxed)",
        )
        .query("ref", "Branch, tag or commit id (default: the default branch)")
        .query("path", "The file's path");
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/repos/{name}/commits",
        viewer,
        commits,
    )
    .doc(
        "code",
        "The commit log at a ref, newest first, paged; optionally only commits touching a path",
    )
    .query(
        "ref",
        "Branch, tag or commit id (default: the default branch)",
    )
    .query("path", "Only commits that change this file or directory")
    .query("page", "From 1")
    .query("per_page", "1 to 100 (default 30)")
    .response::<browse::Log>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/repos/{name}/commits/{sha}",
        viewer,
        commit,
    )
    .doc("code", "One commit's metadata (full or abbreviated id)")
    .response::<CommitInfo>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/repos/{name}/commits/{sha}/diff",
        viewer,
        commit_diff,
    )
    .doc(
        "code",
        "A commit's diff against its first parent (a root commit against the empty tree). Large files are `collapsed`: fetch them with `path`",
    )
    .query("path", "Only this file, never collapsed")
    .query("context", "Lines of context (0 to 100, default 3)")
    .response::<Diff>(200);
    reg.route(Method::GET, "/api/v1/projects/{slug}/repos/{name}/compare", viewer, compare)
        .doc(
            "code",
            "Compare two refs: the commits on `head` not on `base`, and the diff from their merge base to `head`",
        )
        .query("base", "Branch, tag or commit id")
        .query("head", "Branch, tag or commit id")
        .query("path", "Only this file, never collapsed")
        .query("context", "Lines of context (0 to 100, default 3)")
        .response::<Compare>(200);
}

/// The repository and its git directory.
pub async fn open(st: &AppState, ctx: &Ctx, name: &str) -> Result<(Repo, PathBuf), OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    let repo = repos::get(&mut st.store.read().await?, p.id, name).await?;
    let dir = repo.dir(&repos_root(st));
    Ok((repo, dir))
}

/// Resolves `rref` (default: the default branch). `None` when the repository is empty and the
/// default branch was asked for: the caller shows an empty state.
pub async fn resolve_or_empty(
    dir: &std::path::Path,
    repo: &Repo,
    rref: Option<&str>,
) -> Result<Option<Resolved>, OuroError> {
    let name = rref
        .filter(|r| !r.is_empty())
        .unwrap_or(&repo.default_branch);
    match browse::resolve(dir, name).await {
        Ok(r) => Ok(Some(r)),
        Err(e)
            if e.code == ouro_core::ErrorCode::RefNotFound
                && name == repo.default_branch
                && browse::is_empty(dir).await? =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct BrowseQuery {
    #[serde(rename = "ref")]
    pub rref: Option<String>,
    pub path: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
    pub base: Option<String>,
    pub head: Option<String>,
    pub context: Option<u32>,
}

impl BrowseQuery {
    fn diff_options(&self) -> DiffOptions {
        DiffOptions {
            context: self.context.unwrap_or(3).min(100),
            ..DiffOptions::default()
        }
    }
}

type RepoPath = Path<(String, String)>;

async fn branches(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): RepoPath,
) -> ApiResult<Json<Vec<Branch>>> {
    let (repo, dir) = open(&st, &ctx, &name).await?;
    Ok(Json(browse::branches(&dir, &repo.default_branch).await?))
}

async fn tags(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): RepoPath,
) -> ApiResult<Json<Vec<Tag>>> {
    let (_, dir) = open(&st, &ctx, &name).await?;
    Ok(Json(browse::tags(&dir).await?))
}

/// A directory listing (or the empty state of an empty repository).
#[derive(Debug, Serialize, JsonSchema)]
pub struct TreeView {
    /// The resolved ref; absent for an empty repository.
    #[serde(rename = "ref")]
    pub rref: Option<Resolved>,
    pub path: String,
    /// The repository has no commits yet.
    pub empty: bool,
    pub entries: Vec<TreeEntry>,
}

async fn tree(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): RepoPath,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Json<TreeView>> {
    let (repo, dir) = open(&st, &ctx, &name).await?;
    let path = browse::validate_path(q.path.as_deref().unwrap_or(""))?;
    let Some(r) = resolve_or_empty(&dir, &repo, q.rref.as_deref()).await? else {
        return Ok(Json(TreeView {
            rref: None,
            path,
            empty: true,
            entries: Vec::new(),
        }));
    };
    match browse::tree(&dir, &r, &path).await? {
        PathKind::Dir(t) => Ok(Json(TreeView {
            rref: Some(t.rref),
            path: t.path,
            empty: false,
            entries: t.entries,
        })),
        PathKind::File => Err(OuroError::field(
            "path",
            format!("{path:?} is a file, not a directory: read it with blob or raw"),
        )
        .into()),
    }
}

async fn blob(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): RepoPath,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Json<Blob>> {
    let (repo, dir) = open(&st, &ctx, &name).await?;
    let r = browse::resolve(
        &dir,
        q.rref.as_deref().unwrap_or(repo.default_branch.as_str()),
    )
    .await?;
    Ok(Json(
        browse::blob(&dir, &r, q.path.as_deref().unwrap_or("")).await?,
    ))
}

async fn raw(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): RepoPath,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Response> {
    let (repo, dir) = open(&st, &ctx, &name).await?;
    let r = browse::resolve(
        &dir,
        q.rref.as_deref().unwrap_or(repo.default_branch.as_str()),
    )
    .await?;
    Ok(raw_response(&dir, &r, q.path.as_deref().unwrap_or("")).await?)
}

/// A safe `filename` for Content-Disposition: the last segment, ASCII letters, digits and
/// `._-` kept, anything else `_`.
pub fn safe_filename(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or("");
    let s: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "file".into()
    } else {
        s
    }
}

/// Streams a file's bytes: `text/plain; charset=utf-8` for text, `application/octet-stream`
/// (as an attachment) for binary; never HTML, never sniffed, sandboxed if opened.
pub async fn raw_response(
    dir: &std::path::Path,
    r: &Resolved,
    path: &str,
) -> Result<Response, OuroError> {
    let (id, size) = browse::raw_target(dir, r, path).await?;
    let mut child = browse::cat_blob(dir, &id)?
        .spawn()
        .map_err(|e| OuroError::new(ouro_core::ErrorCode::GitFailed, e.to_string()))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut head = Vec::with_capacity(8000);
    (&mut stdout)
        .take(8000)
        .read_to_end(&mut head)
        .await
        .map_err(|e| OuroError::new(ouro_core::ErrorCode::GitFailed, e.to_string()))?;
    let binary = browse::looks_binary(&head);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            match stdout.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
        let _ = child.wait().await;
    });
    let fname = safe_filename(path);
    let (ctype, disp) = if binary {
        ("application/octet-stream", "attachment")
    } else {
        ("text/plain; charset=utf-8", "inline")
    };
    let mut res = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{disp}; filename=\"{fname}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

async fn commits(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): RepoPath,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Json<browse::Log>> {
    let (repo, dir) = open(&st, &ctx, &name).await?;
    let (page, per_page) = browse::paging(q.page, q.per_page);
    let path = browse::validate_path(q.path.as_deref().unwrap_or(""))?;
    let Some(r) = resolve_or_empty(&dir, &repo, q.rref.as_deref()).await? else {
        return Ok(Json(browse::Log {
            rref: None,
            path,
            page,
            per_page,
            has_next: false,
            commits: Vec::new(),
        }));
    };
    Ok(Json(browse::log(&dir, &r, &path, page, per_page).await?))
}

async fn commit(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, sha)): Path<(String, String, String)>,
) -> ApiResult<Json<CommitInfo>> {
    let (_, dir) = open(&st, &ctx, &name).await?;
    Ok(Json(browse::commit(&dir, &sha).await?))
}

/// A diff, or (with `path`) just that file of it, uncollapsed.
async fn diff_or_file(
    dir: &std::path::Path,
    base: &str,
    head: &str,
    q: &BrowseQuery,
) -> Result<Diff, OuroError> {
    let opts = q.diff_options();
    match q.path.as_deref().filter(|p| !p.is_empty()) {
        None => diff::between(dir, base, head, &opts).await,
        Some(p) => {
            let f = diff::file(dir, base, head, p, &opts).await?;
            Ok(Diff {
                base: base.to_string(),
                head: head.to_string(),
                additions: f.additions,
                deletions: f.deletions,
                files: vec![f],
                truncated: false,
            })
        }
    }
}

async fn commit_diff(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, sha)): Path<(String, String, String)>,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Json<Diff>> {
    let (_, dir) = open(&st, &ctx, &name).await?;
    let c = browse::commit(&dir, &sha).await?;
    Ok(Json(
        diff_or_file(&dir, &diff::base_of(&c), &c.id, &q).await?,
    ))
}

/// Two refs compared.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Compare {
    pub base: Resolved,
    pub head: Resolved,
    /// Absent when the two have no common history (the diff is then base to head).
    pub merge_base: Option<String>,
    /// Commits on head and not on base, newest first (at most 250).
    pub commits: Vec<CommitInfo>,
    pub diff: Diff,
}

pub const COMPARE_MAX_COMMITS: u32 = 250;

/// Compares `base...head` (what the UI and API share).
pub async fn compare_refs(
    dir: &std::path::Path,
    base: &str,
    head: &str,
    q: &BrowseQuery,
) -> Result<Compare, OuroError> {
    let base = browse::resolve(dir, base)
        .await
        .map_err(|e| field_named(e, "base"))?;
    let head = browse::resolve(dir, head)
        .await
        .map_err(|e| field_named(e, "head"))?;
    let mb = browse::merge_base(dir, &base.commit, &head.commit).await?;
    let from = mb.clone().unwrap_or_else(|| base.commit.clone());
    let commits = browse::log_range(dir, &base.commit, &head.commit, COMPARE_MAX_COMMITS).await?;
    let diff = diff_or_file(dir, &from, &head.commit, q).await?;
    Ok(Compare {
        base,
        head,
        merge_base: mb,
        commits,
        diff,
    })
}

/// A validation error on `ref` renamed to the parameter it came from.
fn field_named(mut e: OuroError, field: &str) -> OuroError {
    if let Some(d) = e.details.as_mut()
        && d.get("field").is_some()
    {
        d["field"] = serde_json::Value::String(field.to_string());
    }
    e
}

async fn compare(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): RepoPath,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Json<Compare>> {
    let (_, dir) = open(&st, &ctx, &name).await?;
    let base = q.base.clone().unwrap_or_default();
    let head = q.head.clone().unwrap_or_default();
    for (f, v) in [("base", &base), ("head", &head)] {
        if v.is_empty() {
            return Err(OuroError::field(f, format!("{f} is required")).into());
        }
    }
    Ok(Json(compare_refs(&dir, &base, &head, &q).await?))
}
