//! Build: pipeline runs in the web UI. The project's runs (`/projects/{slug}/pipelines`) and one
//! run with its jobs by DAG layer and the diagnostics of an invalid file, with a cancel button
//! for developers. Thin: everything goes through `ouro_build::runs` and `api::pipelines`.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use ouro_build::runs::{self, Job};
use ouro_core::{Permission, Role};
use ouro_store::projects::Project;

use crate::AppState;
use crate::api::pipelines::{ListQuery, cancel_run, filter_of};
use crate::extract::{Ctx, Path, Query};
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, UiResult, render};

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/projects/{slug}/pipelines",
        Permission::Project(Role::Viewer),
        list,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/pipelines/{number}",
        Permission::Project(Role::Viewer),
        show,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/pipelines/{number}/cancel",
        Permission::Project(Role::Developer),
        cancel,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/pipelines/{number}/rerun",
        Permission::Project(Role::Developer),
        rerun,
    );
}

/// `refs/heads/main` -> `main`.
fn short_ref(r: &str) -> &str {
    r.strip_prefix("refs/heads/")
        .or_else(|| r.strip_prefix("refs/tags/"))
        .unwrap_or(r)
}

fn actor_text(a: &str) -> &str {
    a.strip_prefix("user:").unwrap_or(a)
}

pub struct RunRow {
    pub number: i64,
    pub status: String,
    pub pipeline: String,
    pub repo: String,
    pub git_ref: String,
    pub short_sha: String,
    pub trigger: String,
    pub actor: String,
    pub created: When,
    pub duration: String,
}

fn duration(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) if e >= s => {
            let secs = (e - s) / 1000;
            if secs >= 60 {
                format!("{}m {}s", secs / 60, secs % 60)
            } else {
                format!("{secs}s")
            }
        }
        _ => String::new(),
    }
}

/// A run as the run lists show it (also the change request and commit pages, `ui::code_runs`).
pub(crate) fn run_row(r: ouro_build::runs::Run) -> RunRow {
    RunRow {
        number: r.number,
        duration: duration(r.started_at, r.finished_at),
        status: r.status,
        pipeline: r.pipeline,
        repo: r.repo,
        git_ref: short_ref(&r.git_ref).to_string(),
        short_sha: r.sha.chars().take(10).collect(),
        trigger: r.trigger,
        actor: actor_text(&r.actor).to_string(),
        created: When::of(r.created_at),
    }
}

#[derive(Template)]
#[template(path = "build_runs.html")]
struct ListPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    status: String,
    filters: [(&'static str, &'static str); 6],
    rows: Vec<RunRow>,
    next: Option<String>,
    /// Developers get the "Run pipeline" link (`ui::pipeline_run`).
    can_run: bool,
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let f = filter_of(&q).map_err(|e| fail(&ctx, e))?;
    let runs = runs::list(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        &f,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let next = (runs.len() as i64 == f.limit)
        .then(|| runs.last().map(|r| r.number.to_string()))
        .flatten();
    let p = ListPage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "pipelines",
        manage: ctx.role() >= Some(Role::Maintainer),
        can_run: ctx.role() >= Some(Role::Developer),
        status: f.status.clone().unwrap_or_default(),
        filters: [
            ("", "All"),
            ("queued", "Queued"),
            ("running", "Running"),
            ("success", "Passed"),
            ("failure", "Failed"),
            ("cancelled", "Cancelled"),
        ],
        rows: runs
            .into_iter()
            .map(|r| RunRow {
                number: r.number,
                duration: duration(r.started_at, r.finished_at),
                status: r.status,
                pipeline: r.pipeline,
                repo: r.repo,
                git_ref: short_ref(&r.git_ref).to_string(),
                short_sha: r.sha.chars().take(10).collect(),
                trigger: r.trigger,
                actor: actor_text(&r.actor).to_string(),
                created: When::of(r.created_at),
            })
            .collect(),
        next,
    };
    Ok(flash.finish(render(&p)))
}

pub struct JobRow {
    /// The job's id (its page is `/projects/{slug}/pipelines/{n}/jobs/{id}`).
    pub id: i64,
    pub key: String,
    pub name: String,
    pub status: String,
    pub needs: String,
    pub attempt: i64,
    pub duration: String,
    pub reason: String,
    /// For a re-run: the run whose result this job reuses (0: it ran).
    pub reused_from: i64,
    /// `continue-on-error`: shown on the job; its failure does not fail the run.
    pub continue_on_error: bool,
}

pub struct Layer {
    pub index: i64,
    pub jobs: Vec<JobRow>,
}

#[derive(Template)]
#[template(path = "build_run.html")]
struct ShowPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    can_write: bool,
    /// Developers get the "Create release" form on a successful run (`ui::releases`).
    can_release: bool,
    row: RunRow,
    sha: String,
    file: String,
    finished: bool,
    layers: Vec<Layer>,
    /// The job graph is polled with the run badge out of band (only in the fragment).
    oob: bool,
    /// The diagnostics, rustc-style (`file:line:col: error[code]: message` and help).
    diagnostics: String,
    /// The run this one re-runs (0: none).
    rerun_of: i64,
    /// The change request it builds (0: none).
    cr_number: i64,
    /// False for a change request run whose author is not trusted (no secrets).
    trusted: bool,
    /// The CSRF token of the job graph's re-run forms (the fragment has no chrome).
    csrf: String,
}

/// Jobs grouped by DAG layer (also the job graph fragment of `ui::pipeline_logs`).
pub fn layers(jobs: Vec<Job>) -> Vec<Layer> {
    let mut out: Vec<Layer> = Vec::new();
    for j in jobs {
        let row = JobRow {
            id: j.id,
            duration: duration(j.started_at, j.finished_at),
            key: j.key,
            name: j.name,
            status: j.status,
            needs: j.needs.join(", "),
            attempt: j.attempt,
            reason: j.reason.unwrap_or_default(),
            reused_from: j.reused_from.unwrap_or(0),
            continue_on_error: j.continue_on_error,
        };
        match out.last_mut() {
            Some(l) if l.index == j.layer => l.jobs.push(row),
            _ => out.push(Layer {
                index: j.layer,
                jobs: vec![row],
            }),
        }
    }
    out
}

fn render_diagnostics(ds: &[serde_json::Value]) -> String {
    let mut s = String::new();
    for d in ds {
        s.push_str(&format!(
            "{}:{}:{}: {}[{}]: {}\n",
            d["file"].as_str().unwrap_or(""),
            d["line"],
            d["col"],
            d["severity"].as_str().unwrap_or("error"),
            d["code"].as_str().unwrap_or(""),
            d["message"].as_str().unwrap_or("")
        ));
        if let Some(l) = d["label"].as_str() {
            s.push_str(&format!("  = note: {l}\n"));
        }
        if let Some(h) = d["help"].as_str() {
            s.push_str(&format!("  = help: {h}\n"));
        }
    }
    s
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let d = runs::detail(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        number,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let r = d.run;
    let chrome = Chrome::of(&ctx).with_flash(flash.message());
    let p = ShowPage {
        csrf: chrome.csrf.clone(),
        chrome,
        project,
        phases: PHASES,
        active: "pipelines",
        manage: ctx.role() >= Some(Role::Maintainer),
        can_write: ctx.role() >= Some(Role::Developer),
        can_release: ctx.role() >= Some(Role::Developer) && r.status == "success",
        finished: matches!(r.status.as_str(), "success" | "failure" | "cancelled"),
        diagnostics: render_diagnostics(&r.diagnostics),
        sha: r.sha.clone(),
        file: r.file.clone(),
        rerun_of: r.rerun_of.unwrap_or(0),
        cr_number: r.cr_number.unwrap_or(0),
        trusted: r.trusted,
        row: RunRow {
            number: r.number,
            duration: duration(r.started_at, r.finished_at),
            status: r.status,
            pipeline: r.pipeline,
            repo: r.repo,
            git_ref: short_ref(&r.git_ref).to_string(),
            short_sha: r.sha.chars().take(10).collect(),
            trigger: r.trigger,
            actor: actor_text(&r.actor).to_string(),
            created: When::of(r.created_at),
        },
        layers: layers(d.jobs),
        oob: false,
    };
    Ok(flash.finish(render(&p)))
}

async fn cancel(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let to = format!("/projects/{}/pipelines/{number}", project.slug);
    match cancel_run(&st, &ctx, number).await {
        Ok(_) => Ok(redirect_with_flash(
            &to,
            &format!("Pipeline #{number} was cancelled."),
        )),
        Err(e) if e.code == ouro_core::ErrorCode::RunFinished => {
            Ok(redirect_with_flash(&to, &e.message))
        }
        Err(e) => Err(fail(&ctx, e)),
    }
}

/// The re-run buttons: `jobs` = `all` or `failed`, or `job` = one job key.
async fn rerun(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
    form: crate::ui::Form,
) -> UiResult {
    use ouro_build::rerun::Selection;
    let project = ctx.project()?;
    let job = form.get("job");
    let sel = if !job.is_empty() {
        Selection::Jobs(vec![job])
    } else if form.get("jobs") == "failed" {
        Selection::Keyword("failed".into())
    } else {
        Selection::Keyword("all".into())
    };
    let back = format!("/projects/{}/pipelines/{number}", project.slug);
    match crate::api::pipelines::rerun_run(&st, &ctx, number, &sel).await {
        Ok(d) => Ok(redirect_with_flash(
            &format!("/projects/{}/pipelines/{}", project.slug, d.run.number),
            &format!("Pipeline #{number} is re-running as #{}.", d.run.number),
        )),
        Err(e)
            if matches!(
                e.code,
                ouro_core::ErrorCode::RunNotFinished | ouro_core::ErrorCode::ValidationFailed
            ) =>
        {
            Ok(redirect_with_flash(&back, &e.message))
        }
        Err(e) => Err(fail(&ctx, e)),
    }
}
