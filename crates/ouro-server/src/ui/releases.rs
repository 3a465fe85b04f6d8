//! Release: releases in the web UI. The list with the "Create release" form (pick a successful
//! run) at `/projects/{slug}/releases`, a release's page (rendered notes, artifacts with sizes and
//! hashes, items, change requests, checks, the notes form while it is a draft, publish and
//! withdraw for maintainers, the link to its environments), the changelog and the comparison of
//! two releases. Thin: everything goes through `ouro_release::releases` and `api::releases`.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use ouro_core::{ErrorCode, Permission, Role};
use ouro_plan::markdown;
use ouro_release::releases::{self, Comparison, NewRelease, Release, ReleaseDetail};
use ouro_store::projects::Project;
use serde::Deserialize;

use crate::AppState;
use crate::api::releases::{compare_releases, create_release};
use crate::extract::{Ctx, Path, Query};
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render};

pub fn register(reg: &mut Registry) {
    let viewer = Permission::Project(Role::Viewer);
    let developer = Permission::Project(Role::Developer);
    let maintainer = Permission::Project(Role::Maintainer);
    reg.route(Method::GET, "/projects/{slug}/releases", viewer, list_page);
    reg.route(
        Method::POST,
        "/projects/{slug}/releases",
        developer,
        create_post,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/pipelines/{number}/release",
        developer,
        create_from_run_post,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/releases/changelog",
        viewer,
        changelog_page,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/releases/compare",
        viewer,
        compare_page,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/releases/{version}",
        viewer,
        release_page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/releases/{version}/notes",
        developer,
        notes_post,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/releases/{version}/publish",
        maintainer,
        publish_post,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/releases/{version}/withdraw",
        maintainer,
        withdraw_post,
    );
}

/// `1536` -> `1.5 KiB`.
pub fn size(n: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

pub struct Row {
    pub r: Release,
    pub created: When,
    pub published: Option<When>,
    pub short_sha: String,
}

fn row(r: Release) -> Row {
    Row {
        created: When::of(r.created_at),
        published: r.published_at.map(When::of),
        short_sha: r.sha.chars().take(10).collect(),
        r,
    }
}

pub struct RunChoice {
    pub number: i64,
    pub label: String,
}

#[derive(Template)]
#[template(path = "release_list.html")]
struct ListPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    write: bool,
    rows: Vec<Row>,
    repos: Vec<String>,
    runs: Vec<RunChoice>,
    chosen_run: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub run: Option<i64>,
}

async fn list_page(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let mut c = st.store.read().await.map_err(|e| fail(&ctx, e))?;
    let list = releases::list(&mut c, project.id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let repos = ouro_code::repos::list(&mut c, project.id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let runs = ouro_build::runs::list(
        &mut c,
        project.id,
        &ouro_build::runs::ListFilter {
            status: Some("success".into()),
            limit: 30,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    drop(c);
    let p = ListPage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "releases",
        manage: ctx.role() >= Some(Role::Maintainer),
        write: ctx.role() >= Some(Role::Developer),
        rows: list.into_iter().map(row).collect(),
        repos: repos.into_iter().map(|r| r.name).collect(),
        runs: runs
            .into_iter()
            .map(|r| RunChoice {
                number: r.number,
                label: format!(
                    "#{} · {} · {} · {}",
                    r.number,
                    r.repo,
                    r.git_ref.strip_prefix("refs/heads/").unwrap_or(&r.git_ref),
                    r.sha.chars().take(10).collect::<String>()
                ),
            })
            .collect(),
        chosen_run: q.run.unwrap_or(0),
    };
    Ok(flash.finish(render(&p)))
}

fn opt(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

async fn create_post(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let back = format!("/projects/{}/releases", project.slug);
    let Ok(run) = form.get("run").trim().parse::<i64>() else {
        return Ok(redirect_with_flash(&back, "Pick a pipeline run."));
    };
    let req = NewRelease {
        repo: form.get("repo"),
        run,
        version: opt(form.get("version")),
        pre: opt(form.get("pre")),
        notes: None,
        draft: Some(true),
    };
    create_draft(&st, &ctx, project, &req, &back).await
}

/// Creates the draft `req` asks for and opens its page; a refusal the user can act on goes back
/// to `back` as a flash with its message (both "Create release" forms).
async fn create_draft(
    st: &AppState,
    ctx: &Ctx,
    project: &Project,
    req: &NewRelease,
    back: &str,
) -> UiResult {
    match create_release(st, ctx, None, req).await {
        Ok(d) => Ok(redirect_with_flash(
            &release_url(project, &d.release.version),
            &format!(
                "Draft release {} created from run #{}.",
                d.release.version, req.run
            ),
        )),
        Err(e) if e.code.http_status() < 500 && e.code != ErrorCode::Forbidden => {
            Ok(redirect_with_flash(back, &e.message))
        }
        Err(e) => Err(fail(ctx, e)),
    }
}

/// The run page's "Create release" form: a draft from run `number` (its repository), with an
/// optional explicit version and the pre-release box (`-rc.N` on the computed version). A refusal
/// goes back to the run page as a flash with its message.
async fn create_from_run_post(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let back = format!("/projects/{}/pipelines/{number}", project.slug);
    let run = ouro_build::runs::get(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        number,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let version = opt(form.get("version"));
    let prerelease = form.get("prerelease") == "on";
    if prerelease && version.as_deref().is_some_and(|v| !v.contains('-')) {
        return Ok(redirect_with_flash(
            &back,
            "With an explicit version, write the pre-release in it (for example 1.4.0-rc.1), or leave the version empty.",
        ));
    }
    let req = NewRelease {
        repo: run.repo,
        run: number,
        pre: (prerelease && version.is_none()).then(|| "rc".to_string()),
        version,
        notes: None,
        draft: Some(true),
    };
    create_draft(&st, &ctx, project, &req, &back).await
}

#[derive(Template)]
#[template(path = "release.html")]
struct ReleasePage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    write: bool,
    d: ReleaseDetail,
    row: Row,
    notes_html: String,
    sizes: Vec<String>,
    withdrawn: Option<When>,
    checks: Vec<String>,
    gate: String,
    /// Where this release was deployed (newest first).
    deployments: Vec<ouro_deploy::deployments::Deployment>,
}

fn checks_of(summary: &Option<serde_json::Value>) -> (Vec<String>, String) {
    let Some(s) = summary else {
        return (vec!["The run reported no tests.".into()], String::new());
    };
    let t = &s["totals"];
    let mut out = vec![format!(
        "Tests: {} total, {} passed, {} failed, {} errored, {} skipped",
        t["total"], t["passed"], t["failed"], t["errored"], t["skipped"]
    )];
    if let Some(p) = s["coverage_percent"].as_f64() {
        out.push(format!("Line coverage: {p:.1}%"));
    }
    for g in s["gates"].as_array().into_iter().flatten() {
        let verdict = if g["passed"] == true {
            "passed".to_string()
        } else {
            format!("failed: {}", g["failures"].as_str().unwrap_or(""))
        };
        out.push(format!(
            "Quality gate of {}: {verdict}",
            g["job"].as_str().unwrap_or("")
        ));
    }
    let gate = match s["gate_passed"].as_bool() {
        Some(true) => "passed",
        Some(false) => "failed",
        None => "",
    };
    (out, gate.to_string())
}

async fn release_page(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let d = releases::detail(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        &version,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let (checks, gate) = checks_of(&d.release.test_summary);
    let deployments =
        crate::api::deploy::recent(&st, project.id, None, Some(&d.release.version), 20)
            .await
            .map_err(|e| fail(&ctx, e))?;
    let p = ReleasePage {
        deployments,
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "releases",
        manage: ctx.role() >= Some(Role::Maintainer),
        write: ctx.role() >= Some(Role::Developer),
        notes_html: markdown::render(&d.release.notes),
        sizes: d.artifacts.iter().map(|a| size(a.size)).collect(),
        withdrawn: d.release.withdrawn_at.map(When::of),
        row: row(d.release.clone()),
        checks,
        gate,
        d,
    };
    Ok(flash.finish(render(&p)))
}

fn release_url(project: &Project, version: &str) -> String {
    format!("/projects/{}/releases/{version}", project.slug)
}

/// Errors users can act on go back to the page as a flash (`None`: show an error page).
fn flash_back(to: &str, e: &ouro_core::OuroError) -> Option<axum::response::Response> {
    (e.code.http_status() < 500 && e.code != ErrorCode::ReleaseNotFound)
        .then(|| redirect_with_flash(to, &e.message))
}

async fn notes_post(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let to = release_url(project, &version);
    let revision = form.get("revision").trim().parse::<i64>().ok();
    match releases::edit_notes(
        &st.store,
        &ctx.actor(),
        project.id,
        &version,
        // Browsers send a textarea's line breaks as CRLF; the notes are LF Markdown like the
        // generated ones.
        &form.get("notes").replace("\r\n", "\n"),
        revision,
    )
    .await
    {
        Ok(_) => Ok(redirect_with_flash(&to, "The notes were saved.")),
        Err(e) => {
            let e: ouro_core::OuroError = e.into();
            flash_back(&to, &e).ok_or_else(|| fail(&ctx, e))
        }
    }
}

async fn publish_post(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
) -> UiResult {
    let project = ctx.project()?;
    let to = release_url(project, &version);
    match crate::api::releases::publish_release(&st, &ctx.actor(), project.id, &version).await {
        Ok(r) => Ok(redirect_with_flash(
            &to,
            &format!("Release {} is published and tagged {}.", r.version, r.tag),
        )),
        Err(e) => flash_back(&to, &e).ok_or_else(|| fail(&ctx, e)),
    }
}

async fn withdraw_post(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let to = release_url(project, &version);
    match releases::withdraw(
        &st.store,
        &ctx.actor(),
        project.id,
        &version,
        &form.get("reason"),
    )
    .await
    {
        Ok(_) => Ok(redirect_with_flash(&to, "The release was withdrawn.")),
        Err(e) => {
            let e: ouro_core::OuroError = e.into();
            flash_back(&to, &e).ok_or_else(|| fail(&ctx, e))
        }
    }
}

pub struct ChangelogEntry {
    pub row: Row,
    pub notes_html: String,
}

#[derive(Template)]
#[template(path = "release_changelog.html")]
struct ChangelogPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    entries: Vec<ChangelogEntry>,
}

async fn changelog_page(State(st): State<AppState>, ctx: Ctx) -> UiResult {
    let project = ctx.project()?;
    let list = releases::changelog(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let p = ChangelogPage {
        chrome: Chrome::of(&ctx),
        project,
        phases: PHASES,
        active: "releases",
        manage: ctx.role() >= Some(Role::Maintainer),
        entries: list
            .into_iter()
            .map(|r| ChangelogEntry {
                notes_html: markdown::render(&r.notes),
                row: row(r),
            })
            .collect(),
    };
    Ok(render(&p))
}

#[derive(Debug, Default, Deserialize)]
pub struct CompareQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Template)]
#[template(path = "release_compare.html")]
struct ComparePage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    versions: Vec<String>,
    from: String,
    to: String,
    c: Option<Comparison>,
}

async fn compare_page(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<CompareQuery>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let versions: Vec<String> = releases::list(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
    )
    .await
    .map_err(|e| fail(&ctx, e))?
    .into_iter()
    .map(|r| r.version)
    .collect();
    let from = q.from.clone().unwrap_or_default();
    let to = q.to.clone().unwrap_or_default();
    let c = if from.is_empty() || to.is_empty() {
        None
    } else {
        Some(
            compare_releases(&st, project.id, Some(&from), Some(&to))
                .await
                .map_err(|e| fail(&ctx, e))?,
        )
    };
    let p = ComparePage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "releases",
        manage: ctx.role() >= Some(Role::Maintainer),
        versions,
        from,
        to,
        c,
    };
    Ok(flash.finish(render(&p)))
}
