//! Code: change requests in the web UI. The list of a repository's change requests, a form to
//! open one, one change request with its commits, statuses, reviews, merge gate and merge
//! controls, and the repository's merge rules. Thin: everything goes through `ouro_code::cr`
//! (and `api::change_requests::view`, so the page shows exactly what the API shows).

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_code::browse;
use ouro_code::cr::{
    self, ChangeRequest, CommitStatus, Condition, MergeMethod, MergeOptions, MergeRules,
    NewChangeRequest, NewReview, Verdict,
};
use ouro_code::cr_meta::{self, CrPatch, ListFilter, RequestedReviewer};
use ouro_code::diff::{self, DiffOptions};
use ouro_code::repos::{self, Repo};
use ouro_core::{OuroError, Permission, Role};
use ouro_plan::markdown;
use ouro_store::projects::Project;
use serde::Deserialize;

use crate::AppState;
use crate::api::change_requests::{identity, view};
use crate::api::repos::repos_root;
use crate::extract::{Ctx, Path, Query};
use crate::registry::Registry;
use crate::ui::code_browse::DiffView;
use crate::ui::common::{Flash, When, fail, field_of, redirect_with_flash};
use crate::ui::cr_comments::{ThreadRow, line_threads, thread_rows};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiError, UiResult, render, render_status};

pub fn register(reg: &mut Registry) {
    let base = "/projects/{slug}/code/{repo}/change-requests";
    let one = "/projects/{slug}/code/{repo}/change-requests/{number}";
    reg.route(Method::GET, base, Permission::Project(Role::Viewer), list);
    reg.route(
        Method::POST,
        base,
        Permission::Project(Role::Developer),
        create,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/change-requests/new",
        Permission::Project(Role::Developer),
        new_form,
    );
    reg.route(Method::GET, one, Permission::Project(Role::Viewer), show);
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/reviews",
        Permission::Project(Role::Developer),
        review,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/edit",
        Permission::Project(Role::Developer),
        edit,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/ready",
        Permission::Project(Role::Developer),
        mark_ready,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/draft",
        Permission::Project(Role::Developer),
        mark_draft,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/merge",
        Permission::Project(Role::Developer),
        merge,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/close",
        Permission::Project(Role::Developer),
        close,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/reopen",
        Permission::Project(Role::Developer),
        reopen,
    );
    let rules = "/projects/{slug}/code/{repo}/settings/merge";
    reg.route(
        Method::GET,
        rules,
        Permission::Project(Role::Viewer),
        rules_page,
    );
    reg.route(
        Method::POST,
        rules,
        Permission::Project(Role::Maintainer),
        save_rules,
    );
}

pub(crate) fn base_url(project: &Project, repo: &str) -> String {
    format!("/projects/{}/code/{repo}/change-requests", project.slug)
}

pub(crate) fn status_code(e: &OuroError) -> StatusCode {
    StatusCode::from_u16(crate::auth::status_of(e.code).as_u16())
        .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
}

pub(crate) async fn repo_of(
    st: &AppState,
    ctx: &Ctx,
    project: &Project,
    name: &str,
) -> Result<Repo, UiError> {
    let mut conn = st.store.read().await.map_err(|e| fail(ctx, e))?;
    repos::get(&mut conn, project.id, name)
        .await
        .map_err(|e| fail(ctx, e))
}

// ---------------------------------------------------------------------------------------------
// The list

pub struct CrRow {
    pub number: i64,
    pub title: String,
    pub source: String,
    pub target: String,
    pub author: String,
    pub state: String,
    pub draft: bool,
    pub labels: Vec<String>,
    pub updated: When,
}

#[derive(Template)]
#[template(path = "code_crs.html")]
struct ListPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    can_write: bool,
    repo: String,
    /// `open`, `merged`, `closed` or empty (all).
    state: String,
    filters: [(&'static str, &'static str); 4],
    rows: Vec<CrRow>,
    /// The label, author and draft filters as given (`draft`: `true`, `false` or empty).
    label: String,
    author: String,
    /// A requested reviewer.
    reviewer: String,
    draft: String,
}

#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    label: Option<String>,
    author: Option<String>,
    reviewer: Option<String>,
    draft: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    // Open ones by default; `?state=all` shows every change request.
    let state = match q.state.as_deref() {
        None => "open",
        Some(s @ ("open" | "merged" | "closed")) => s,
        Some(_) => "",
    };
    let label = q.label.unwrap_or_default().trim().to_string();
    let author = q.author.unwrap_or_default().trim().to_string();
    let reviewer = q.reviewer.unwrap_or_default().trim().to_string();
    let draft = match q.draft.as_deref() {
        Some("true") => "true",
        Some("false") => "false",
        _ => "",
    };
    let filter = ListFilter {
        state: Some(state.to_string()).filter(|s| !s.is_empty()),
        label: Some(label.clone()).filter(|s| !s.is_empty()),
        author: Some(author.clone()).filter(|s| !s.is_empty()),
        reviewer: Some(reviewer.clone()).filter(|s| !s.is_empty()),
        draft: match draft {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
    };
    let rows = cr_meta::list(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        repo.id,
        &filter,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let p = ListPage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "code",
        manage: ctx.role() >= Some(Role::Maintainer),
        can_write: ctx.role() >= Some(Role::Developer),
        repo: repo.name,
        state: state.to_string(),
        filters: [
            ("open", "Open"),
            ("merged", "Merged"),
            ("closed", "Closed"),
            ("all", "All"),
        ],
        rows: rows
            .into_iter()
            .map(|c| CrRow {
                number: c.number,
                title: c.title,
                source: c.source,
                target: c.target,
                author: c.author.unwrap_or_default(),
                state: c.state,
                draft: c.draft,
                labels: c.labels,
                updated: When::of(c.updated_at),
            })
            .collect(),
        label,
        author,
        reviewer,
        draft: draft.to_string(),
    };
    Ok(flash.finish(render(&p)))
}

// ---------------------------------------------------------------------------------------------
// Opening one

#[derive(Template)]
#[template(path = "code_cr_new.html")]
struct NewPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    repo: String,
    branches: Vec<String>,
    source: String,
    target: String,
    title: String,
    description: String,
    draft: bool,
    /// Comma-separated, as typed.
    labels: String,
    /// Members who may review (name, checked).
    reviewers: Vec<(String, bool)>,
    /// (field, message)
    error: Option<(String, String)>,
}

/// Project members with at least the developer role except `except` (the author): who may be
/// asked to review, each with whether `chosen` names them.
async fn reviewer_choices(
    st: &AppState,
    ctx: &Ctx,
    project: &Project,
    except: Option<&str>,
    chosen: &[String],
) -> Result<Vec<(String, bool)>, UiError> {
    let members = ouro_store::projects::members(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        project.id,
    )
    .await
    .map_err(|e| fail(ctx, e))?;
    Ok(members
        .into_iter()
        .filter(|m| m.role >= Role::Developer && Some(m.user.as_str()) != except)
        .map(|m| {
            let on = chosen.contains(&m.user);
            (m.user, on)
        })
        .collect())
}

/// Reviewers chosen in a form: one checkbox `reviewer:NAME` per member.
fn chosen_reviewers(form: &Form) -> Vec<String> {
    let mut v: Vec<String> = form
        .0
        .iter()
        .filter(|(_, val)| !val.is_empty())
        .filter_map(|(k, _)| k.strip_prefix("reviewer:").map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Labels typed comma-separated.
fn split_labels(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

async fn branches(ctx: &Ctx, st: &AppState, repo: &Repo) -> Result<Vec<String>, UiError> {
    let refs = ouro_code::git::refs(&repo.dir(&repos_root(st)))
        .await
        .map_err(|e| {
            fail(
                ctx,
                OuroError::new(
                    ouro_core::ErrorCode::GitFailed,
                    "a git command failed on the server",
                )
                .with_details(serde_json::json!({"git": e.to_string()})),
            )
        })?;
    Ok(refs
        .keys()
        .filter_map(|r| r.strip_prefix("refs/heads/"))
        .map(str::to_string)
        .collect())
}

async fn new_page<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
    name: &str,
) -> Result<NewPage<'a>, UiError> {
    let repo = repo_of(st, ctx, project, name).await?;
    let branches = branches(ctx, st, &repo).await?;
    // The first branch that is not the default one is the likely source.
    let source = branches
        .iter()
        .find(|b| **b != repo.default_branch)
        .cloned()
        .unwrap_or_default();
    Ok(NewPage {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "code",
        manage: ctx.role() >= Some(Role::Maintainer),
        target: repo.default_branch.clone(),
        repo: repo.name,
        branches,
        source,
        title: String::new(),
        description: String::new(),
        draft: false,
        labels: String::new(),
        reviewers: reviewer_choices(
            st,
            ctx,
            project,
            ctx.principal.as_ref().map(|p| p.user.name.as_str()),
            &[],
        )
        .await?,
        error: None,
    })
}

async fn new_form(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> UiResult {
    let project = ctx.project()?;
    let p = new_page(&st, &ctx, project, &name).await?;
    Ok(render(&p))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let new = NewChangeRequest {
        source: form.get("source"),
        target: form.get("target"),
        title: form.get("title"),
        description: Some(form.get("description")).filter(|d| !d.is_empty()),
        draft: !form.get("draft").is_empty(),
        labels: split_labels(&form.get("labels")),
        reviewers: chosen_reviewers(&form),
    };
    match cr::open(
        &st.store,
        &repos_root(&st),
        &repo,
        &project.slug,
        &ctx.actor(),
        &new,
    )
    .await
    {
        Ok(c) => Ok(redirect_with_flash(
            &format!("{}/{}", base_url(project, &repo.name), c.number),
            &format!("Change request !{} was opened.", c.number),
        )),
        Err(e) => {
            let e: OuroError = e.into();
            let status = status_code(&e);
            if status.is_server_error() {
                return Err(fail(&ctx, e));
            }
            let mut p = new_page(&st, &ctx, project, &name).await?;
            p.source = new.source;
            p.target = new.target;
            p.title = new.title;
            p.description = new.description.unwrap_or_default();
            p.draft = new.draft;
            p.labels = form.get("labels");
            for (name, on) in p.reviewers.iter_mut() {
                *on = new.reviewers.contains(name);
            }
            p.error = Some((field_of(&e).unwrap_or("title").to_string(), e.message));
            Ok(render_status(status, &p))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One change request

pub struct CommitRow {
    pub sha: String,
    pub short: String,
    pub subject: String,
    pub author: String,
    pub when: When,
}

pub struct ReviewRow {
    pub reviewer: String,
    pub approve: bool,
    pub body_html: String,
    pub head: String,
    pub dismissed: bool,
    pub when: When,
}

pub struct StatusRow {
    pub name: String,
    pub state: String,
    /// Only http(s) links are shown as links.
    pub url: Option<String>,
    pub description: String,
    pub creator: String,
    pub when: When,
}

#[derive(Template)]
#[template(path = "code_cr.html")]
pub(crate) struct ShowPage<'a> {
    pub(crate) chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    can_write: bool,
    repo: String,
    /// This change request's page; the forms post below it.
    base: String,
    cr: ChangeRequest,
    created: When,
    merged_at: Option<When>,
    /// Sanitised by `ouro_plan::markdown::render`; output raw by the template.
    description_html: String,
    commits: Vec<CommitRow>,
    statuses: Vec<StatusRow>,
    reviews: Vec<ReviewRow>,
    mergeable: bool,
    method: &'static str,
    /// The target-branch pattern whose merge rules apply (`None`: the repository default).
    rules_pattern: Option<String>,
    conditions: Vec<Condition>,
    /// An action that was refused, with the unmet conditions when a merge was blocked.
    error: Option<String>,
    refused: Vec<String>,
    /// The change (merge base to head) while the change request is not merged.
    diffv: Option<DiffView>,
    /// Comment threads, oldest first (see `ui::cr_comments`).
    threads: Vec<ThreadRow>,
    /// Requested reviewers with their state.
    requested: Vec<RequestedReviewer>,
    /// The edit form: labels comma-separated, members who may review (name, requested).
    labels_text: String,
    reviewer_choices: Vec<(String, bool)>,
    /// The pipeline runs of this change request (`ui::code_runs`), rendered.
    runs_html: String,
}

impl ShowPage<'_> {
    fn unmet(&self) -> impl Iterator<Item = &Condition> {
        self.conditions.iter().filter(|c| !c.met)
    }
}

fn method_text(m: MergeMethod) -> &'static str {
    match m {
        MergeMethod::Merge => "merge commit",
        MergeMethod::Squash => "squash",
        MergeMethod::FastForward => "fast-forward",
    }
}

/// The commits the change brings: on its head and not on the target (for an open or closed
/// change request; once merged the target contains them, so the list is empty).
async fn commits(dir: &std::path::Path, target: &str, head: &str) -> Vec<CommitRow> {
    // A listing problem (a branch gone meanwhile) shows no commits rather than failing the page.
    let list = browse::log_range(dir, &format!("refs/heads/{target}"), head, 250)
        .await
        .unwrap_or_default();
    list.into_iter()
        .map(|c| CommitRow {
            short: c.id.chars().take(10).collect(),
            sha: c.id,
            subject: c.subject,
            author: c.author_name,
            when: When::of(c.authored_at * 1000),
        })
        .collect()
}

fn status_row(s: CommitStatus) -> StatusRow {
    StatusRow {
        url: s
            .url
            .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
        name: s.name,
        state: s.state,
        description: s.description.unwrap_or_default(),
        creator: s.creator.unwrap_or_default(),
        when: When::of(s.created_at),
    }
}

pub(crate) async fn show_page<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
    name: &str,
    number: i64,
    split: bool,
) -> Result<ShowPage<'a>, UiError> {
    let repo = repo_of(st, ctx, project, name).await?;
    let v = view(st, &project.slug, &repo, number)
        .await
        .map_err(|e| fail(ctx, e.0))?;
    let dir = repo.dir(&repos_root(st));
    let commits = if v.cr.state == "merged" {
        Vec::new()
    } else {
        commits(&dir, &v.cr.target, &v.cr.head).await
    };
    // The change as reviewers see it: from the merge base with the target to the head.
    let page_url = format!("{}/{number}", base_url(project, name));
    let repo_base = format!("/projects/{}/code/{}", project.slug, name);
    let mut diffv = None;
    if v.cr.state != "merged"
        && let Ok(Some(base)) =
            browse::merge_base(&dir, &format!("refs/heads/{}", v.cr.target), &v.cr.head).await
        && let Ok(d) = diff::between(&dir, &base, &v.cr.head, &DiffOptions::default()).await
    {
        diffv = Some(DiffView::new(d, split, &repo_base, page_url.clone()));
    }
    let threads = v.threads.clone();
    if let Some(d) = diffv.as_mut() {
        decorate_diff(st, ctx, project, &repo, &v, d).await;
    }
    let threads = thread_rows(ctx, threads, &page_url);
    let requested_names: Vec<String> = v.cr.reviewers.iter().map(|r| r.user.clone()).collect();
    let reviewer_choices = if ctx.role() >= Some(Role::Developer) {
        reviewer_choices(st, ctx, project, v.cr.author.as_deref(), &requested_names).await?
    } else {
        Vec::new()
    };
    let runs_html =
        crate::ui::code_runs::cr_panel(st, project, repo.id, &repo.name, number, &v.cr.head)
            .await
            .map_err(|e| fail(ctx, e))?
            .html();
    Ok(ShowPage {
        runs_html,
        chrome: Chrome::of(ctx),
        requested: v.cr.reviewers.clone(),
        labels_text: v.cr.labels.join(", "),
        reviewer_choices,
        project,
        phases: PHASES,
        active: "code",
        manage: ctx.role() >= Some(Role::Maintainer),
        can_write: ctx.role() >= Some(Role::Developer),
        base: format!("{}/{}", base_url(project, &repo.name), v.cr.number),
        repo: repo.name,
        created: When::of(v.cr.created_at),
        merged_at: v.cr.merged_at.map(When::of),
        description_html: markdown::render(&v.cr.description),
        cr: v.cr,
        commits,
        statuses: v.statuses.into_iter().map(status_row).collect(),
        reviews: v
            .reviews
            .into_iter()
            .map(|r| ReviewRow {
                approve: r.verdict == "approve",
                body_html: markdown::render(&r.body),
                head: r.head.chars().take(10).collect(),
                reviewer: r.reviewer,
                dismissed: r.dismissed,
                when: When::of(r.created_at),
            })
            .collect(),
        mergeable: v.gate.mergeable,
        method: method_text(v.gate.merge_method),
        rules_pattern: v.gate.rules_pattern,
        conditions: v.gate.conditions,
        error: None,
        refused: Vec::new(),
        diffv,
        threads,
    })
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    Query(q): Query<ViewQuery>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let split = q.view.as_deref() == Some("split");
    let mut p = show_page(&st, &ctx, project, &name, number, split).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render(&p)))
}

/// After an action: back to the change request with `ok`, or the page again with the refusal.
pub(crate) async fn answer(
    st: &AppState,
    ctx: &Ctx,
    project: &Project,
    name: &str,
    number: i64,
    result: Result<String, OuroError>,
) -> UiResult {
    match result {
        Ok(msg) => Ok(redirect_with_flash(
            &format!("{}/{number}", base_url(project, name)),
            &msg,
        )),
        Err(e) => {
            let status = status_code(&e);
            if status.is_server_error() || status == StatusCode::NOT_FOUND {
                return Err(fail(ctx, e));
            }
            let mut p = show_page(st, ctx, project, name, number, false).await?;
            p.refused = e
                .details
                .as_ref()
                .and_then(|d| d["conditions"].as_array())
                .map(|cs| {
                    cs.iter()
                        .filter(|c| c["met"] != serde_json::Value::Bool(true))
                        .filter_map(|c| c["message"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            p.error = Some(e.message);
            Ok(render_status(status, &p))
        }
    }
}

async fn review(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let result = match form.get("verdict").as_str() {
        "approve" => Ok(Verdict::Approve),
        "request_changes" => Ok(Verdict::RequestChanges),
        _ => Err(OuroError::field(
            "verdict",
            "choose approve or request changes",
        )),
    };
    let result = match result {
        Ok(verdict) => {
            let new = NewReview {
                verdict,
                body: Some(form.get("body")).filter(|b| !b.trim().is_empty()),
            };
            cr::review(&st.store, &repo, &project.slug, &ctx.actor(), number, &new)
                .await
                .map(|r| {
                    if r.verdict == "approve" {
                        "You approved the change request.".to_string()
                    } else {
                        "You requested changes.".to_string()
                    }
                })
                .map_err(OuroError::from)
        }
        Err(e) => Err(e),
    };
    answer(&st, &ctx, project, &name, number, result).await
}

async fn merge(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let opts = MergeOptions {
        delete_source: !form.get("delete_source").is_empty(),
    };
    let result = cr::merge(
        &st.store,
        &repos_root(&st),
        &repo,
        &project.slug,
        &ctx.actor(),
        &identity(&ctx),
        number,
        &opts,
    )
    .await
    .map(|c| {
        format!(
            "Change request !{} was merged into {}{}.",
            c.number,
            c.target,
            if opts.delete_source {
                format!("; {} was deleted", c.source)
            } else {
                String::new()
            }
        )
    })
    .map_err(OuroError::from);
    answer(&st, &ctx, project, &name, number, result).await
}

async fn edit(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let result = match form.get("version").trim().parse::<i64>() {
        Ok(version) => {
            let patch = CrPatch {
                title: Some(form.get("title")),
                description: Some(form.get("description")),
                draft: None,
                labels: Some(split_labels(&form.get("labels"))),
                reviewers: Some(chosen_reviewers(&form)),
                version: Some(version),
            };
            cr_meta::update(
                &st.store,
                &repo,
                &project.slug,
                &ctx.actor(),
                number,
                &patch,
            )
            .await
            .map(|c| format!("Change request !{} was saved.", c.number))
            .map_err(OuroError::from)
        }
        Err(_) => Err(OuroError::field(
            "version",
            "the form is missing the version; reload the page",
        )),
    };
    answer(&st, &ctx, project, &name, number, result).await
}

async fn set_draft(
    st: AppState,
    ctx: Ctx,
    name: String,
    number: i64,
    form: Form,
    draft: bool,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let patch = CrPatch {
        draft: Some(draft),
        version: form.get("version").trim().parse::<i64>().ok(),
        ..Default::default()
    };
    let result = cr_meta::update(
        &st.store,
        &repo,
        &project.slug,
        &ctx.actor(),
        number,
        &patch,
    )
    .await
    .map(|c| {
        if draft {
            format!("Change request !{} is a draft again.", c.number)
        } else {
            format!("Change request !{} is ready for review.", c.number)
        }
    })
    .map_err(OuroError::from);
    answer(&st, &ctx, project, &name, number, result).await
}

async fn mark_ready(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    form: Form,
) -> UiResult {
    set_draft(st, ctx, name, number, form, false).await
}

async fn mark_draft(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    form: Form,
) -> UiResult {
    set_draft(st, ctx, name, number, form, true).await
}

async fn set_open(st: AppState, ctx: Ctx, name: String, number: i64, open: bool) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let result = cr::set_open(&st.store, &repo, &project.slug, &ctx.actor(), number, open)
        .await
        .map(|c| {
            if open {
                format!("Change request !{} was reopened.", c.number)
            } else {
                format!("Change request !{} was closed.", c.number)
            }
        })
        .map_err(OuroError::from);
    answer(&st, &ctx, project, &name, number, result).await
}

async fn close(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
) -> UiResult {
    set_open(st, ctx, name, number, false).await
}

async fn reopen(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
) -> UiResult {
    set_open(st, ctx, name, number, true).await
}

// ---------------------------------------------------------------------------------------------
// Merge rules

#[derive(Template)]
#[template(path = "code_merge_rules.html")]
pub(crate) struct RulesPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    repo: String,
    methods: [(&'static str, &'static str); 3],
    method: String,
    approvals: String,
    checks: String,
    dismiss: bool,
    /// Every thread must be resolved before merging.
    threads: bool,
    /// Rule sets per target-branch pattern, most specific first (`ui::merge_rules`).
    branches: Vec<crate::ui::merge_rules::BranchRow>,
    pub(crate) error: Option<String>,
}

pub(crate) async fn rules_build<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
    name: &str,
) -> Result<RulesPage<'a>, UiError> {
    let repo = repo_of(st, ctx, project, name).await?;
    let rules = cr::rules(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        repo.id,
    )
    .await
    .map_err(|e| fail(ctx, e))?;
    let branches = crate::ui::merge_rules::rows(st, ctx, &repo).await?;
    Ok(RulesPage {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "code",
        manage: ctx.role() >= Some(Role::Maintainer),
        repo: repo.name,
        methods: [
            ("merge", "Merge commit: both parents are kept"),
            ("squash", "Squash: one commit on top of the target"),
            (
                "fast_forward",
                "Fast-forward: the target moves to the source's head (refused when the target moved on)",
            ),
        ],
        method: rules.merge_method.as_str().to_string(),
        approvals: rules.required_approvals.to_string(),
        checks: rules.required_checks.join(", "),
        dismiss: rules.dismiss_stale_approvals,
        threads: rules.require_resolved_threads,
        branches,
        error: None,
    })
}

async fn rules_page(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let mut p = rules_build(&st, &ctx, project, &name).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render(&p)))
}

pub(crate) fn parse_rules(form: &Form) -> Result<MergeRules, OuroError> {
    let merge_method = match form.get("merge_method").as_str() {
        "merge" => MergeMethod::Merge,
        "squash" => MergeMethod::Squash,
        "fast_forward" => MergeMethod::FastForward,
        other => {
            return Err(OuroError::field(
                "merge_method",
                format!("unknown merge method {other:?}"),
            ));
        }
    };
    let required_approvals = form
        .get("required_approvals")
        .trim()
        .parse::<u32>()
        .map_err(|_| OuroError::field("required_approvals", "a number from 0 to 20"))?;
    let required_checks = form
        .get("required_checks")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    Ok(MergeRules {
        merge_method,
        required_approvals,
        required_checks,
        dismiss_stale_approvals: !form.get("dismiss_stale_approvals").is_empty(),
        require_resolved_threads: !form.get("require_resolved_threads").is_empty(),
    })
}

async fn save_rules(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let result = match parse_rules(&form) {
        Ok(rules) => cr::set_rules(&st.store, &repo, &project.slug, &ctx.actor(), &rules)
            .await
            .map(|_| ())
            .map_err(OuroError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(redirect_with_flash(
            &format!(
                "/projects/{}/code/{}/settings/merge",
                project.slug, repo.name
            ),
            "The merge rules were saved.",
        )),
        Err(e) => {
            let status = status_code(&e);
            if status.is_server_error() {
                return Err(fail(&ctx, e));
            }
            let mut p = rules_build(&st, &ctx, project, &name).await?;
            p.method = form.get("merge_method");
            p.approvals = form.get("required_approvals");
            p.checks = form.get("required_checks");
            p.dismiss = !form.get("dismiss_stale_approvals").is_empty();
            p.threads = !form.get("require_resolved_threads").is_empty();
            p.error = Some(e.message);
            Ok(render_status(status, &p))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ViewQuery {
    view: Option<String>,
}

/// What a change request adds to its diff, on its page and in each collapsed file loaded later
/// (`diff-file?cr=N`): the line threads, the "comment on this line" links when the viewer may
/// comment, and the test coverage of the changed lines, marked only when the run that reported
/// it tested the head shown (line numbers of another commit would lie).
pub(crate) async fn decorate_diff(
    st: &AppState,
    ctx: &Ctx,
    project: &Project,
    repo: &Repo,
    v: &crate::api::change_requests::CrView,
    d: &mut DiffView,
) {
    let page_url = format!("{}/{}", base_url(project, &repo.name), v.cr.number);
    d.threads = line_threads(&v.threads, &page_url);
    if ctx.role() >= Some(Role::Developer) && v.cr.state == "open" {
        d.comment_url = Some(format!("{page_url}/comments/new?"));
    }
    d.file_url.push_str(&format!("cr={}&", v.cr.number));
    match ouro_test::results::coverage_marks(&st.store, &st.settings.data_dir, repo, &v.cr).await {
        Ok(Some(m)) if m.sha == v.cr.head && d.diff.head == v.cr.head => {
            d.cov_runs_url = format!("/projects/{}/pipelines/", project.slug);
            d.coverage = Some(m);
        }
        Ok(Some(m)) => {
            d.cov_note = Some(format!(
                "Coverage of run #{} is for commit {}, not the head: changed lines are not marked until a run of the head reports coverage.",
                m.run,
                m.sha.chars().take(10).collect::<String>()
            ));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "coverage marks of a change request"),
    }
}
