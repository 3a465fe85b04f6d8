//! Code: browsing a repository in the web UI. URL scheme (under `/projects/{slug}/code/{repo}`):
//! the repo home (default branch tree + README), `tree/{ref}/{path...}`, `blob/{ref}/{path...}`,
//! `raw/{ref}/{path...}`, `commits/{ref}`, `commit/{sha}` (`?view=split` for side by side),
//! `branches`, `tags`, `compare/{base}...{head}`, and `diff-file` (one collapsed file, loaded by
//! htmx). A ref may contain `/`: `{ref}/{path...}` is split at the longest existing branch or
//! tag name (branches win a tie), else the first segment is a commit id.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use axum::response::IntoResponse;
use ouro_code::browse::{self, Blob, Branch, CommitInfo, PathKind, Resolved, Tag, TreeEntry};
use ouro_code::diff::{self, Diff, DiffOptions, FileDiff, Hunk, SplitRow};
use ouro_code::repos::Repo;
use ouro_core::{OuroError, Permission, Role};
use ouro_store::projects::Project;
use serde::Deserialize;

use crate::AppState;
use crate::api::code_browse::{self as api, BrowseQuery, open, resolve_or_empty};
use crate::api::repos::clone_url;
use crate::extract::{Ctx, Path, Query};
use crate::registry::Registry;
use crate::ui::common::{When, fail};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, UiResult, render, url_encode};

pub fn register(reg: &mut Registry) {
    let v = Permission::Project(Role::Viewer);
    reg.route(Method::GET, "/projects/{slug}/code/{repo}", v, home);
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/tree/{*rest}",
        v,
        tree,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/blob/{*rest}",
        v,
        blob,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/raw/{*rest}",
        v,
        raw,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/commits/{*rest}",
        v,
        commits,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/commit/{sha}",
        v,
        commit,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/branches",
        v,
        branches,
    );
    reg.route(Method::GET, "/projects/{slug}/code/{repo}/tags", v, tags);
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/compare/{*spec}",
        v,
        compare,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/diff-file",
        v,
        diff_file,
    );
}

/// A comment thread anchored on a diff line, for the diff partial to show under that line.
/// Change requests fill these from their line comments (path, side, line, commit).
pub struct LineThread {
    pub id: String,
    pub path: String,
    /// "old" or "new".
    pub side: &'static str,
    pub line: u32,
    pub resolved: bool,
    pub comments: Vec<ThreadComment>,
    /// Where to reply or resolve it (e.g. the thread in the change request's comments).
    pub link: Option<String>,
}

pub struct ThreadComment {
    pub author: String,
    pub when: When,
    /// Already sanitised HTML (e.g. `ouro_plan::markdown::render`).
    pub body_html: String,
}

/// What `templates/code_diff.html` renders: a diff, unified or split, with optional threads.
pub struct DiffView {
    pub diff: Diff,
    pub split: bool,
    /// `diff-file` URL without `path` (for collapsed files), ending in `&` or `?`.
    pub file_url: String,
    /// The page itself without `view`, for the unified/split toggle.
    pub page_url: String,
    pub threads: Vec<LineThread>,
    /// The page that starts a thread on a line (`...?`), when the viewer may comment.
    pub comment_url: Option<String>,
    /// Test coverage of the changed lines (a change request's diff): see [`Self::cov_class`].
    pub coverage: Option<ouro_test::results::CoverageMarks>,
    /// The run page the coverage marks link to (`/projects/{slug}/pipelines/`).
    pub cov_runs_url: String,
    /// Why coverage marks are not shown (e.g. the run tested an older commit).
    pub cov_note: Option<String>,
}

impl DiffView {
    pub fn new(diff: Diff, split: bool, repo_base: &str, page_url: String) -> DiffView {
        let file_url = format!(
            "{repo_base}/diff-file?base={}&head={}&view={}&",
            diff.base,
            diff.head,
            if split { "split" } else { "unified" }
        );
        DiffView {
            diff,
            split,
            file_url,
            page_url,
            threads: Vec::new(),
            comment_url: None,
            coverage: None,
            cov_runs_url: String::new(),
            cov_note: None,
        }
    }

    /// The link to the tests of the run the coverage marks come from.
    pub fn cov_run_href(&self) -> String {
        match &self.coverage {
            Some(c) => format!("{}{}/tests", self.cov_runs_url, c.run),
            None => String::new(),
        }
    }

    /// The coverage class of a diff line (with a leading space, or "" when unmarked): only
    /// added lines are marked, ` cov-miss` when no test covered them, ` cov-hit` when one did.
    pub fn cov_class(&self, path: &str, l: &diff::Line) -> &'static str {
        match (&self.coverage, l.kind, l.new) {
            (Some(c), diff::LineKind::Add, Some(n)) => match c.class_of(path, n) {
                "cov-miss" => " cov-miss",
                "cov-hit" => " cov-hit",
                _ => "",
            },
            _ => "",
        }
    }

    /// The tooltip of a marked line ([`Self::cov_class`]).
    pub fn cov_title(&self, path: &str, l: &diff::Line) -> &'static str {
        match self.cov_class(path, l) {
            " cov-miss" => "Not covered by tests",
            " cov-hit" => "Covered by tests",
            _ => "",
        }
    }

    /// The link that starts a thread on a line (`side` "old" or "new"), or "" when none.
    pub fn comment_href(&self, path: &str, side: &str, line: &Option<u32>) -> String {
        match (&self.comment_url, line) {
            (Some(u), Some(n)) => format!("{u}path={}&side={side}&line={n}", url_encode(path)),
            _ => String::new(),
        }
    }

    /// [`comment_href`](Self::comment_href) for a line of the unified view.
    pub fn comment_href_for(&self, path: &str, l: &diff::Line) -> String {
        match l.kind {
            diff::LineKind::Del => self.comment_href(path, "old", &l.old),
            _ => self.comment_href(path, "new", &l.new),
        }
    }

    /// The threads under one line (`line` absent: none).
    pub fn threads_at(&self, path: &str, side: &str, line: &Option<u32>) -> Vec<&LineThread> {
        if self.threads.is_empty() {
            return Vec::new();
        }
        let Some(line) = *line else {
            return Vec::new();
        };
        self.threads
            .iter()
            .filter(|t| t.path == path && t.side == side && t.line == line)
            .collect()
    }

    /// Threads on a line of the unified view: old-side for deletions, new-side otherwise.
    pub fn threads_for(&self, path: &str, l: &diff::Line) -> Vec<&LineThread> {
        match l.kind {
            diff::LineKind::Del => self.threads_at(path, "old", &l.old),
            _ => self.threads_at(path, "new", &l.new),
        }
    }

    pub fn rows<'a>(&self, h: &'a Hunk) -> Vec<SplitRow<'a>> {
        diff::split_rows(h)
    }

    pub fn file_href(&self, f: &FileDiff) -> String {
        format!("{}path={}", self.file_url, url_encode(f.path()))
    }

    pub fn anchor(&self, f: &FileDiff) -> String {
        let mut s = String::from("file-");
        for b in f.path().bytes() {
            if b.is_ascii_alphanumeric() {
                s.push(b as char);
            } else {
                s.push_str(&format!("-{b:02x}"));
            }
        }
        s
    }

    pub fn view_href(&self, split: bool) -> String {
        let sep = if self.page_url.contains('?') {
            '&'
        } else {
            '?'
        };
        if split {
            format!("{}{sep}view=split", self.page_url)
        } else {
            self.page_url.clone()
        }
    }
}

pub fn num(n: &Option<u32>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

/// One row of a blob view.
pub struct BlobLine {
    pub n: usize,
    pub text: String,
}

pub enum View {
    /// No commits yet: how to push the first one.
    Empty,
    Tree {
        rref: Resolved,
        path: String,
        crumbs: Vec<(String, String)>,
        entries: Vec<TreeEntry>,
        readme_html: Option<String>,
        last: Option<CommitInfo>,
    },
    Blob {
        rref: Resolved,
        path: String,
        crumbs: Vec<(String, String)>,
        blob: Blob,
        lines: Vec<BlobLine>,
        raw_href: String,
    },
    Commits {
        rref: Resolved,
        commits: Vec<(CommitInfo, When)>,
        page: u32,
        has_next: bool,
    },
    Commit {
        commit: CommitInfo,
        when: When,
        diffv: DiffView,
        /// The commit's pipeline runs (`ui::code_runs`), rendered.
        runs_html: String,
    },
    Branches(Vec<(Branch, When)>),
    Tags(Vec<(Tag, When)>),
    Compare {
        base: Resolved,
        head: Resolved,
        merge_base: Option<String>,
        commits: Vec<(CommitInfo, When)>,
        diffv: DiffView,
    },
}

#[derive(Template)]
#[template(path = "code_browse.html")]
struct BrowsePage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    repo: Repo,
    /// `/projects/{slug}/code/{repo}`
    base: String,
    tab: &'static str,
    clone_url: String,
    view: View,
}

#[derive(Template)]
#[template(path = "code_diff_fragment.html")]
struct DiffFragment {
    diffv: DiffView,
    f: FileDiff,
}

fn secs(t: i64) -> When {
    When::of(t.saturating_mul(1000))
}

fn dated(v: Vec<CommitInfo>) -> Vec<(CommitInfo, When)> {
    v.into_iter()
        .map(|c| {
            let w = secs(c.committed_at);
            (c, w)
        })
        .collect()
}

/// `(name, href)` for each directory above and including `path`.
fn crumbs(base: &str, kind: &str, rref: &str, path: &str) -> Vec<(String, String)> {
    let mut v = Vec::new();
    let mut acc = String::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(seg);
        v.push((
            seg.to_string(),
            format!("{base}/{kind}/{}/{}", url_encode(rref), url_encode(&acc)),
        ));
    }
    v
}

struct Page {
    ctx: Ctx,
    repo: Repo,
    dir: std::path::PathBuf,
    base: String,
    clone_url: String,
}

async fn page_of(st: &AppState, ctx: Ctx, repo: &str) -> Result<Page, crate::ui::UiError> {
    let (r, dir) = open(st, &ctx, repo).await.map_err(|e| fail(&ctx, e))?;
    let p = ctx.project().map_err(|e| fail(&ctx, e.0))?;
    Ok(Page {
        base: format!("/projects/{}/code/{}", p.slug, r.name),
        clone_url: clone_url(st, &p.slug, &r.name),
        repo: r,
        dir,
        ctx,
    })
}

#[allow(clippy::result_large_err)] // UiError is what every page returns.
fn show(p: Page, tab: &'static str, view: View) -> UiResult {
    let project = p.ctx.project().map_err(|e| fail(&p.ctx, e.0))?;
    Ok(render(&BrowsePage {
        chrome: Chrome::of(&p.ctx),
        project,
        phases: PHASES,
        active: "code",
        manage: p.ctx.role() >= Some(Role::Maintainer),
        repo: p.repo.clone(),
        base: p.base.clone(),
        tab,
        clone_url: p.clone_url.clone(),
        view,
    }))
}

async fn tree_view(p: &Page, rref: Resolved, path: String) -> Result<View, OuroError> {
    let t = match browse::tree(&p.dir, &rref, &path).await? {
        PathKind::Dir(t) => t,
        PathKind::File => unreachable!("callers redirect files"),
    };
    let mut readme_html = None;
    if let Some(e) = t
        .entries
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case("readme.md") && e.kind == browse::EntryKind::File)
        && let Ok(b) = browse::blob(&p.dir, &rref, &e.path).await
        && let Some(c) = b.content.filter(|_| !b.binary)
    {
        readme_html = Some(ouro_plan::markdown::render(&c));
    }
    let last = browse::log(&p.dir, &rref, &path, 1, 1)
        .await?
        .commits
        .into_iter()
        .next();
    Ok(View::Tree {
        crumbs: crumbs(&p.base, "tree", &rref.name, &path),
        rref,
        path,
        entries: t.entries,
        readme_html,
        last,
    })
}

async fn home(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo)): Path<(String, String)>,
) -> UiResult {
    let p = page_of(&st, ctx, &repo).await?;
    let r = resolve_or_empty(&p.dir, &p.repo, None).await;
    let view = match r {
        Ok(None) => View::Empty,
        Ok(Some(r)) => tree_view(&p, r, String::new())
            .await
            .map_err(|e| fail(&p.ctx, e))?,
        // The default branch is gone but others exist: list the branches.
        Err(_) => return branches_page(&p).await,
    };
    show(p, "files", view)
}

async fn tree(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, rest)): Path<(String, String, String)>,
) -> UiResult {
    let p = page_of(&st, ctx, &repo).await?;
    let (r, path) = browse::resolve_prefixed(&p.dir, &rest)
        .await
        .map_err(|e| fail(&p.ctx, e))?;
    if let PathKind::File = browse::tree(&p.dir, &r, &path)
        .await
        .map_err(|e| fail(&p.ctx, e))?
    {
        return Ok(axum::response::Redirect::to(&format!(
            "{}/blob/{}/{}",
            p.base,
            url_encode(&r.name),
            url_encode(&path)
        ))
        .into_response());
    }
    let view = tree_view(&p, r, path).await.map_err(|e| fail(&p.ctx, e))?;
    show(p, "files", view)
}

async fn blob(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, rest)): Path<(String, String, String)>,
) -> UiResult {
    let p = page_of(&st, ctx, &repo).await?;
    let (r, path) = browse::resolve_prefixed(&p.dir, &rest)
        .await
        .map_err(|e| fail(&p.ctx, e))?;
    let b = browse::blob(&p.dir, &r, &path)
        .await
        .map_err(|e| fail(&p.ctx, e))?;
    let lines = match (&b.content, b.binary) {
        (Some(c), false) => c
            .lines()
            .enumerate()
            .map(|(i, t)| BlobLine {
                n: i + 1,
                text: t.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let raw_href = format!(
        "{}/raw/{}/{}",
        p.base,
        url_encode(&r.name),
        url_encode(&path)
    );
    let view = View::Blob {
        crumbs: crumbs(&p.base, "tree", &r.name, &path),
        rref: r,
        path,
        blob: b,
        lines,
        raw_href,
    };
    show(p, "files", view)
}

async fn raw(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, rest)): Path<(String, String, String)>,
) -> UiResult {
    let p = page_of(&st, ctx, &repo).await?;
    let (r, path) = browse::resolve_prefixed(&p.dir, &rest)
        .await
        .map_err(|e| fail(&p.ctx, e))?;
    api::raw_response(&p.dir, &r, &path)
        .await
        .map_err(|e| fail(&p.ctx, e))
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    page: Option<u32>,
    view: Option<String>,
}

async fn commits(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, rest)): Path<(String, String, String)>,
    Query(q): Query<PageQuery>,
) -> UiResult {
    let p = page_of(&st, ctx, &repo).await?;
    let r = match resolve_or_empty(&p.dir, &p.repo, Some(&rest))
        .await
        .map_err(|e| fail(&p.ctx, e))?
    {
        None => return show(p, "commits", View::Empty),
        Some(r) => r,
    };
    let (page, per_page) = browse::paging(q.page, None);
    let log = browse::log(&p.dir, &r, "", page, per_page)
        .await
        .map_err(|e| fail(&p.ctx, e))?;
    let view = View::Commits {
        rref: r,
        commits: dated(log.commits),
        page,
        has_next: log.has_next,
    };
    show(p, "commits", view)
}

async fn commit(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, sha)): Path<(String, String, String)>,
    Query(q): Query<PageQuery>,
) -> UiResult {
    let p = page_of(&st, ctx, &repo).await?;
    let c = browse::commit(&p.dir, &sha)
        .await
        .map_err(|e| fail(&p.ctx, e))?;
    let d = diff::between(&p.dir, &diff::base_of(&c), &c.id, &DiffOptions::default())
        .await
        .map_err(|e| fail(&p.ctx, e))?;
    let split = q.view.as_deref() == Some("split");
    let diffv = DiffView::new(d, split, &p.base, format!("{}/commit/{}", p.base, c.id));
    let project = p.ctx.project().map_err(|e| fail(&p.ctx, e.0))?;
    let runs_html =
        crate::ui::code_runs::commit_panel(&st, project, p.repo.id, &p.repo.name, &c.id)
            .await
            .map_err(|e| fail(&p.ctx, e))?
            .html();
    let view = View::Commit {
        runs_html,
        when: secs(c.committed_at),
        commit: c,
        diffv,
    };
    show(p, "commits", view)
}

async fn branches_page(p: &Page) -> UiResult {
    let b = browse::branches(&p.dir, &p.repo.default_branch)
        .await
        .map_err(|e| fail(&p.ctx, e))?;
    let view = if b.is_empty() {
        View::Empty
    } else {
        View::Branches(
            b.into_iter()
                .map(|b| {
                    let w = secs(b.committed_at);
                    (b, w)
                })
                .collect(),
        )
    };
    show(
        Page {
            ctx: p.ctx.clone(),
            repo: p.repo.clone(),
            dir: p.dir.clone(),
            base: p.base.clone(),
            clone_url: p.clone_url.clone(),
        },
        "branches",
        view,
    )
}

async fn branches(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo)): Path<(String, String)>,
) -> UiResult {
    let p = page_of(&st, ctx, &repo).await?;
    branches_page(&p).await
}

async fn tags(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo)): Path<(String, String)>,
) -> UiResult {
    let p = page_of(&st, ctx, &repo).await?;
    let t = browse::tags(&p.dir).await.map_err(|e| fail(&p.ctx, e))?;
    let empty = browse::is_empty(&p.dir)
        .await
        .map_err(|e| fail(&p.ctx, e))?;
    let view = if empty {
        View::Empty
    } else {
        View::Tags(
            t.into_iter()
                .map(|t| {
                    let w = secs(t.created_at);
                    (t, w)
                })
                .collect(),
        )
    };
    show(p, "tags", view)
}

async fn compare(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, spec)): Path<(String, String, String)>,
    Query(q): Query<PageQuery>,
) -> UiResult {
    let p = page_of(&st, ctx, &repo).await?;
    let Some((base, head)) = spec.split_once("...") else {
        return Err(fail(
            &p.ctx,
            OuroError::field("spec", "compare two refs as {base}...{head}"),
        ));
    };
    let c = api::compare_refs(&p.dir, base, head, &BrowseQuery::default())
        .await
        .map_err(|e| fail(&p.ctx, e))?;
    let split = q.view.as_deref() == Some("split");
    let diffv = DiffView::new(c.diff, split, &p.base, format!("{}/compare/{spec}", p.base));
    let view = View::Compare {
        base: c.base,
        head: c.head,
        merge_base: c.merge_base,
        commits: dated(c.commits),
        diffv,
    };
    show(p, "commits", view)
}

#[derive(Debug, Default, Deserialize)]
struct FileQuery {
    base: Option<String>,
    head: Option<String>,
    path: Option<String>,
    view: Option<String>,
    /// The change request whose page the file is part of: its threads and coverage marks.
    cr: Option<i64>,
}

/// One file of a diff, never collapsed: the fragment htmx swaps in for a collapsed file.
async fn diff_file(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> UiResult {
    let p = page_of(&st, ctx, &repo).await?;
    let (base, head) = (q.base.unwrap_or_default(), q.head.unwrap_or_default());
    let f = diff::file(
        &p.dir,
        &base,
        &head,
        q.path.as_deref().unwrap_or(""),
        &DiffOptions::default(),
    )
    .await
    .map_err(|e| fail(&p.ctx, e))?;
    let d = Diff {
        base,
        head,
        files: Vec::new(),
        additions: f.additions,
        deletions: f.deletions,
        truncated: false,
    };
    let split = q.view.as_deref() == Some("split");
    let mut diffv = DiffView::new(d, split, &p.base, String::new());
    if let Some(number) = q.cr {
        let project = p.ctx.project().map_err(|e| fail(&p.ctx, e.0))?;
        let v = crate::api::change_requests::view(&st, &project.slug, &p.repo, number)
            .await
            .map_err(|e| fail(&p.ctx, e.0))?;
        crate::ui::change_requests::decorate_diff(&st, &p.ctx, project, &p.repo, &v, &mut diffv)
            .await;
    }
    Ok(render(&DiffFragment { diffv, f }))
}
