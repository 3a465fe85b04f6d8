//! Code: comment threads on the change request page. The page lists every thread (with reply,
//! resolve/unresolve and delete forms), the diff shows current line threads under their lines
//! with a "+" link per line that opens `.../comments/new?path=&side=&line=` (a plain page with
//! the form: no script needed). Thin: everything goes through `ouro_code::cr_comments`.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use ouro_code::cr;
use ouro_code::cr_comments::{self, NewComment, Thread};
use ouro_core::{OuroError, Permission, Role};
use ouro_plan::markdown;
use ouro_store::projects::Project;
use serde::Deserialize;

use crate::AppState;
use crate::api::repos::repos_root;
use crate::extract::{Ctx, Path, Query};
use crate::registry::Registry;
use crate::ui::change_requests::{answer, repo_of};
use crate::ui::code_browse::{LineThread, ThreadComment};
use crate::ui::common::{When, fail};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render};

pub fn register(reg: &mut Registry) {
    let write = Permission::Project(Role::Developer);
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/comments",
        write,
        add,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/change-requests/{number}/comments/new",
        write,
        new_form,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/comments/{id}/edit",
        write,
        edit,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/comments/{id}/delete",
        write,
        delete,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/threads/{id}/resolve",
        write,
        resolve,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/change-requests/{number}/threads/{id}/unresolve",
        write,
        unresolve,
    );
}

pub struct CommentRow {
    pub id: i64,
    pub author: String,
    pub when: When,
    pub edited: bool,
    /// Sanitised by `ouro_plan::markdown::render`; output raw by the template.
    pub body_html: String,
    /// The viewer wrote it, or may moderate.
    pub can_delete: bool,
    /// The viewer wrote it (and may write): the edit form is shown with `body`.
    pub can_edit: bool,
    pub body: String,
}

pub struct ThreadRow {
    pub id: i64,
    /// "app.txt, line 3 (new)" for a line thread.
    pub anchor: Option<String>,
    /// The line in the diff, for a current line thread.
    pub anchor_href: Option<String>,
    pub outdated: bool,
    pub resolved: bool,
    pub resolved_by: String,
    pub comments: Vec<CommentRow>,
}

/// The current (not outdated) line threads, for the diff.
pub fn line_threads(threads: &[Thread], page_url: &str) -> Vec<LineThread> {
    threads
        .iter()
        .filter(|t| !t.outdated)
        .filter_map(|t| {
            let a = t.anchor.as_ref()?;
            Some(LineThread {
                id: t.id.to_string(),
                path: a.path.clone(),
                side: if a.side == "old" { "old" } else { "new" },
                line: a.line,
                resolved: t.resolved,
                comments: t
                    .comments
                    .iter()
                    .map(|c| ThreadComment {
                        author: c.author.clone().unwrap_or_else(|| "someone".into()),
                        when: When::of(c.created_at),
                        body_html: markdown::render(&c.body),
                    })
                    .collect(),
                link: Some(format!("{page_url}#c-thread-{}", t.id)),
            })
        })
        .collect()
}

/// The rows of the comments section.
pub fn thread_rows(ctx: &Ctx, threads: Vec<Thread>, page_url: &str) -> Vec<ThreadRow> {
    let me = ctx.principal.as_ref().map(|p| p.user.name.clone());
    let moderator = ctx.role() >= Some(Role::Maintainer);
    let can_write = ctx.role() >= Some(Role::Developer);
    threads
        .into_iter()
        .map(|t| ThreadRow {
            id: t.id,
            anchor: t
                .anchor
                .as_ref()
                .map(|a| format!("{}, line {} ({})", a.path, a.line, a.side)),
            anchor_href: (t.anchor.is_some() && !t.outdated)
                .then(|| format!("{page_url}#thread-{}", t.id)),
            outdated: t.outdated,
            resolved: t.resolved,
            resolved_by: t.resolved_by.unwrap_or_default(),
            comments: t
                .comments
                .into_iter()
                .map(|c| CommentRow {
                    id: c.id,
                    can_delete: can_write && (moderator || (c.author.is_some() && c.author == me)),
                    can_edit: can_write && c.author.is_some() && c.author == me,
                    author: c.author.unwrap_or_else(|| "someone".into()),
                    when: When::of(c.created_at),
                    edited: c.edited_at.is_some(),
                    body_html: markdown::render(&c.body),
                    body: c.body,
                })
                .collect(),
        })
        .collect()
}

fn opt_num<T: std::str::FromStr>(form: &Form, field: &str) -> Result<Option<T>, OuroError> {
    let v = form.get(field);
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| OuroError::field(field, "a number"))
}

async fn add(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let parsed = (|| -> Result<NewComment, OuroError> {
        let path = form.get("path");
        Ok(NewComment {
            body: form.get("body"),
            path: Some(path).filter(|p| !p.is_empty()),
            side: Some(form.get("side")).filter(|p| !p.is_empty()),
            line: opt_num(&form, "line")?,
            reply_to: opt_num(&form, "reply_to")?,
        })
    })();
    let result = match parsed {
        Ok(new) => cr_comments::add(
            &st.store,
            &repos_root(&st),
            &repo,
            &project.slug,
            &ctx.actor(),
            number,
            &new,
        )
        .await
        .map(|c| {
            if new.reply_to.is_some() {
                "Your reply was added.".to_string()
            } else {
                format!("Your comment was added (thread {}).", c.thread_id)
            }
        })
        .map_err(OuroError::from),
        Err(e) => Err(e),
    };
    answer(&st, &ctx, project, &name, number, result).await
}

async fn edit(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number, id)): Path<(String, String, i64, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let result = cr_comments::edit(
        &st.store,
        &repo,
        &project.slug,
        &ctx.actor(),
        number,
        id,
        &cr_comments::CommentEdit {
            body: form.get("body"),
        },
    )
    .await
    .map(|_| "The comment was saved.".to_string())
    .map_err(OuroError::from);
    answer(&st, &ctx, project, &name, number, result).await
}

async fn delete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number, id)): Path<(String, String, i64, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let moderator = ctx.role() >= Some(Role::Maintainer);
    let result = cr_comments::delete(
        &st.store,
        &repo,
        &project.slug,
        &ctx.actor(),
        number,
        id,
        moderator,
    )
    .await
    .map(|_| "The comment was deleted.".to_string())
    .map_err(OuroError::from);
    answer(&st, &ctx, project, &name, number, result).await
}

async fn set_resolved(
    st: AppState,
    ctx: Ctx,
    name: String,
    number: i64,
    id: i64,
    on: bool,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let result = cr_comments::set_resolved(
        &st.store,
        &repo,
        &project.slug,
        &ctx.actor(),
        number,
        id,
        on,
    )
    .await
    .map(|_| {
        if on {
            "The thread was resolved.".to_string()
        } else {
            "The thread was unresolved.".to_string()
        }
    })
    .map_err(OuroError::from);
    answer(&st, &ctx, project, &name, number, result).await
}

async fn resolve(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number, id)): Path<(String, String, i64, i64)>,
) -> UiResult {
    set_resolved(st, ctx, name, number, id, true).await
}

async fn unresolve(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number, id)): Path<(String, String, i64, i64)>,
) -> UiResult {
    set_resolved(st, ctx, name, number, id, false).await
}

#[derive(Debug, Deserialize)]
pub struct LineQuery {
    path: Option<String>,
    side: Option<String>,
    line: Option<String>,
}

#[derive(Template)]
#[template(path = "code_cr_comment_new.html")]
struct NewPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    repo: String,
    number: i64,
    title: String,
    base: String,
    path: String,
    side: String,
    line: String,
    /// The line's text in the diff, when the line is in it.
    text: Option<String>,
}

/// The form that starts a thread on one line (what the "+" link of a diff line opens).
async fn new_form(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    Query(q): Query<LineQuery>,
) -> UiResult {
    let project = ctx.project()?;
    let repo = repo_of(&st, &ctx, project, &name).await?;
    let c = cr::get(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        repo.id,
        number,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let path = q.path.unwrap_or_default();
    let side = match q.side.as_deref() {
        Some("old") => "old",
        _ => "new",
    };
    let line = q.line.unwrap_or_default();
    let mut text = None;
    if let Ok(n) = line.trim().parse::<u32>()
        && !path.is_empty()
        && c.state == "open"
    {
        let dir = repo.dir(&repos_root(&st));
        if let Ok(Some(base)) = cr_comments::diff_base(&dir, &c).await {
            text = cr_comments::line_in_diff(&dir, &base, &c.head, &path, side, n)
                .await
                .ok()
                .flatten();
        }
    }
    let p = NewPage {
        chrome: Chrome::of(&ctx),
        project,
        phases: PHASES,
        active: "code",
        manage: ctx.role() >= Some(Role::Maintainer),
        base: format!(
            "{}/{}",
            crate::ui::change_requests::base_url(project, &repo.name),
            c.number
        ),
        repo: repo.name,
        number: c.number,
        title: c.title,
        path,
        side: side.to_string(),
        line,
        text,
    };
    Ok(render(&p))
}
