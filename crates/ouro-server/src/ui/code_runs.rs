//! Build: the pipeline runs of a commit and of a change request, shown on the commit page
//! (`code/{repo}/commit/{sha}`) and the change request page. The panel is a fragment
//! (`build_runs_panel.html`) that htmx polls every 2 s while one of its runs is queued or running,
//! like the run page's job graph; once every run is finished the fragment stops polling.
//! Fragments: `.../commit/{sha}/runs` and `.../change-requests/{number}/runs`. The data comes from
//! `ouro_build::runs::{for_commit, for_change_request}`.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use axum::response::{Html, IntoResponse};
use ouro_build::runs::{self, Run};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_store::projects::Project;

use crate::AppState;
use crate::extract::{Ctx, Path};
use crate::registry::Registry;
use crate::ui::common::fail;
use crate::ui::pipelines::{RunRow, run_row};
use crate::ui::{UiError, UiResult};

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/commit/{sha}/runs",
        Permission::Project(Role::Viewer),
        commit_fragment,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/change-requests/{number}/runs",
        Permission::Project(Role::Viewer),
        cr_fragment,
    );
}

/// The runs panel of a commit or change request page.
#[derive(Template)]
#[template(path = "build_runs_panel.html")]
pub struct RunsPanel {
    pub slug: String,
    /// The fragment htmx polls while a run is active.
    pub url: String,
    /// What the runs build, for the empty text (`this commit`, `this change request`).
    pub what: &'static str,
    pub rows: Vec<RunRow>,
    /// Some run is queued or running: the panel polls.
    pub live: bool,
}

impl RunsPanel {
    fn new(project: &Project, url: String, what: &'static str, list: Vec<Run>) -> RunsPanel {
        let live = list
            .iter()
            .any(|r| matches!(r.status.as_str(), "queued" | "running"));
        RunsPanel {
            slug: project.slug.clone(),
            url,
            what,
            rows: list.into_iter().map(run_row).collect(),
            live,
        }
    }

    /// The panel as HTML for a page to embed (an empty string if rendering fails: the page
    /// still shows).
    pub fn html(&self) -> String {
        self.render().unwrap_or_else(|e| {
            tracing::error!(error = %e, "runs panel failed");
            String::new()
        })
    }
}

fn commit_url(project: &Project, repo: &str, sha: &str) -> String {
    format!("/projects/{}/code/{repo}/commit/{sha}/runs", project.slug)
}

fn cr_url(project: &Project, repo: &str, number: i64) -> String {
    format!(
        "/projects/{}/code/{repo}/change-requests/{number}/runs",
        project.slug
    )
}

/// The runs panel of a commit.
pub async fn commit_panel(
    st: &AppState,
    project: &Project,
    repo_id: i64,
    repo: &str,
    sha: &str,
) -> Result<RunsPanel, OuroError> {
    let list = runs::for_commit(&mut st.store.read().await?, repo_id, sha).await?;
    Ok(RunsPanel::new(
        project,
        commit_url(project, repo, sha),
        "this commit",
        list,
    ))
}

/// The runs panel of a change request (its own runs and its head commit's).
pub async fn cr_panel(
    st: &AppState,
    project: &Project,
    repo_id: i64,
    repo: &str,
    number: i64,
    head: &str,
) -> Result<RunsPanel, OuroError> {
    let list = runs::for_change_request(&mut st.store.read().await?, repo_id, number, head).await?;
    Ok(RunsPanel::new(
        project,
        cr_url(project, repo, number),
        "this change request",
        list,
    ))
}

#[allow(clippy::result_large_err)] // UiError is what every page returns.
fn fragment(ctx: &Ctx, p: RunsPanel) -> UiResult {
    match p.render() {
        Ok(html) => Ok(Html(html).into_response()),
        Err(e) => Err(fail(
            ctx,
            OuroError::new(ErrorCode::Internal, e.to_string()),
        )),
    }
}

async fn repo_id(st: &AppState, ctx: &Ctx, project: &Project, name: &str) -> Result<i64, UiError> {
    Ok(crate::ui::change_requests::repo_of(st, ctx, project, name)
        .await?
        .id)
}

async fn commit_fragment(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, sha)): Path<(String, String, String)>,
) -> UiResult {
    let project = ctx.project()?;
    let id = repo_id(&st, &ctx, project, &repo).await?;
    let p = commit_panel(&st, project, id, &repo, &sha)
        .await
        .map_err(|e| fail(&ctx, e))?;
    fragment(&ctx, p)
}

async fn cr_fragment(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, number)): Path<(String, String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let id = repo_id(&st, &ctx, project, &repo).await?;
    let cr = ouro_code::cr::get(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        id,
        number,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let p = cr_panel(&st, project, id, &repo, number, &cr.head)
        .await
        .map_err(|e| fail(&ctx, e))?;
    fragment(&ctx, p)
}
