//! Test: results in the web UI. A run's Tests page (`/projects/{slug}/pipelines/{number}/tests`:
//! totals, coverage, per-job parse problems and quality gates, failures with new failures first,
//! fixed, flaky, slowest, skipped), a change request's tests
//! (`/projects/{slug}/code/{repo}/change-requests/{number}/tests`), one test's history with a
//! server-rendered duration sparkline and the quarantine form for maintainers
//! (`/projects/{slug}/tests/cases/{id}`), and the flaky list (`/projects/{slug}/tests/flaky`).
//! Thin: everything goes through `api::test_results`.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use ouro_core::{Permission, Role};
use ouro_store::projects::Project;
use ouro_test::flaky::FlakyTest;
use ouro_test::results::{CaseHistory, HistoryEntry, RunTests};
use serde::Deserialize;

use crate::AppState;
use crate::api::test_results::{end_quarantine, quarantine_case, tests_of_cr, tests_of_run};
use crate::extract::{Ctx, Path, Query};
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render};

pub fn register(reg: &mut Registry) {
    let viewer = Permission::Project(Role::Viewer);
    reg.route(
        Method::GET,
        "/projects/{slug}/pipelines/{number}/tests",
        viewer,
        run_page,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/change-requests/{number}/tests",
        viewer,
        cr_page,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/code/{repo}/change-requests/{number}/tests/summary",
        viewer,
        cr_summary,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/tests/cases/{id}",
        viewer,
        case_page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/tests/cases/{id}/quarantine",
        Permission::Project(Role::Maintainer),
        quarantine_post,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/tests/cases/{id}/unquarantine",
        Permission::Project(Role::Maintainer),
        unquarantine_post,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/tests/flaky",
        viewer,
        flaky_page,
    );
}

/// `1234` ms -> `1.23 s`, `12` -> `12 ms`.
pub fn ms(v: Option<i64>) -> String {
    match v {
        None => String::new(),
        Some(v) if v < 1000 => format!("{v} ms"),
        Some(v) => format!("{:.2} s", v as f64 / 1000.0),
    }
}

#[derive(Template)]
#[template(path = "test_run.html")]
struct RunPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    title: String,
    back: String,
    back_text: String,
    /// 0: no run reported (a change request without results yet).
    number: i64,
    t: RunTests,
    coverage: String,
}

fn coverage_text(t: &RunTests) -> String {
    match (t.coverage_percent, t.lines_covered, t.lines_total) {
        (Some(p), Some(c), Some(n)) => format!("{p:.1}% of lines ({c} of {n})"),
        _ => String::new(),
    }
}

async fn run_page(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let t = tests_of_run(&st, project.id, number)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let p = RunPage {
        chrome: Chrome::of(&ctx),
        project,
        phases: PHASES,
        active: "pipelines",
        manage: ctx.role() >= Some(Role::Maintainer),
        title: format!("Tests of run #{number}"),
        back: format!("/projects/{}/pipelines/{number}", project.slug),
        back_text: "Back to the run".into(),
        number,
        coverage: coverage_text(&t),
        t,
    };
    Ok(render(&p))
}

async fn cr_page(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, number)): Path<(String, String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let c = tests_of_cr(&st, project.id, &repo, number)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let p = RunPage {
        chrome: Chrome::of(&ctx),
        project,
        phases: PHASES,
        active: "code",
        manage: ctx.role() >= Some(Role::Maintainer),
        title: format!("Tests of change request !{number}"),
        back: format!(
            "/projects/{}/code/{repo}/change-requests/{number}",
            project.slug
        ),
        back_text: "Back to the change request".into(),
        number: c.run.unwrap_or(0),
        coverage: coverage_text(&c.tests),
        t: c.tests,
    };
    Ok(render(&p))
}

#[derive(Template)]
#[template(path = "test_cr_summary.html")]
struct CrSummary<'a> {
    project: &'a Project,
    repo: String,
    number: i64,
    run: i64,
    t: RunTests,
    coverage: String,
    diff: Option<ouro_test::results::DiffCoverage>,
}

/// The change request page's test summary (loaded by htmx): new failures first, diff coverage
/// with the uncovered changed lines.
async fn cr_summary(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo, number)): Path<(String, String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let c = tests_of_cr(&st, project.id, &repo, number)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let p = CrSummary {
        project,
        repo,
        number,
        run: c.run.unwrap_or(0),
        coverage: coverage_text(&c.tests),
        t: c.tests,
        diff: c.diff_coverage,
    };
    Ok(render(&p))
}

/// One bar of the duration sparkline.
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub h: i64,
    pub outcome: String,
    pub title: String,
}

/// The sparkline's bars, oldest left: heights scaled to the slowest result (at least 2 px so a
/// result is visible), 6 px wide with a 2 px gap, 40 px tall.
pub fn sparkline(entries: &[HistoryEntry]) -> Vec<Bar> {
    let max = entries
        .iter()
        .filter_map(|e| e.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    entries
        .iter()
        .rev()
        .enumerate()
        .map(|(i, e)| {
            let d = e.duration_ms.unwrap_or(0);
            let h = ((d * 38) / max).max(2);
            Bar {
                x: i as i64 * 8,
                y: 40 - h,
                h,
                outcome: e.outcome.clone(),
                title: format!("#{} {} {}", e.run, e.outcome, ms(e.duration_ms)),
            }
        })
        .collect()
}

pub struct EntryRow {
    pub e: HistoryEntry,
    pub when: When,
    pub short_sha: String,
    pub branch: String,
    pub duration: String,
}

#[derive(Template)]
#[template(path = "test_case.html")]
struct CasePage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    h: CaseHistory,
    rows: Vec<EntryRow>,
    bars: Vec<Bar>,
    width: i64,
    quarantine_until: Option<When>,
    first_sha: String,
    last_sha: String,
    between: Vec<String>,
    /// This page starts below the newest result (`?before=`).
    older: bool,
    /// The page size asked for, kept in the link to older results.
    limit: Option<i64>,
}

/// Results per page of a test's history, unless `?limit=` (up to 1,000) says otherwise.
const HISTORY_PAGE: i64 = 200;

fn short(sha: &str) -> String {
    sha.chars().take(10).collect()
}

fn row_of(e: &HistoryEntry) -> EntryRow {
    EntryRow {
        when: When::of(e.at),
        short_sha: short(&e.sha),
        branch: e
            .git_ref
            .strip_prefix("refs/heads/")
            .unwrap_or(&e.git_ref)
            .to_string(),
        duration: ms(e.duration_ms),
        e: e.clone(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    before: Option<i64>,
    limit: Option<i64>,
}

async fn case_page(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Query(page): Query<PageQuery>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let h = ouro_test::results::case_history_page(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        id,
        page.limit.unwrap_or(HISTORY_PAGE).clamp(1, 1000),
        page.before,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let bars = sparkline(&h.entries);
    let p = CasePage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "pipelines",
        manage: ctx.role() >= Some(Role::Maintainer),
        width: (bars.len() as i64 * 8).max(8),
        rows: h.entries.iter().map(row_of).collect(),
        quarantine_until: h.quarantine.as_ref().map(|q| When::of(q.expires_at)),
        first_sha: h
            .first_failure
            .as_ref()
            .map(|e| short(&e.sha))
            .unwrap_or_default(),
        last_sha: h
            .last_success
            .as_ref()
            .map(|e| short(&e.sha))
            .unwrap_or_default(),
        between: h.commits_between.iter().map(|c| short(c)).collect(),
        bars,
        older: page.before.is_some(),
        limit: page.limit,
        h,
    };
    Ok(flash.finish(render(&p)))
}

async fn quarantine_post(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let to = format!("/projects/{}/tests/cases/{id}", project.slug);
    let days = form.get("days").trim().parse::<i64>().unwrap_or(0);
    match quarantine_case(&st, &ctx, id, &form.get("reason"), days).await {
        Ok(q) => Ok(redirect_with_flash(
            &to,
            &format!(
                "The test is quarantined until {}.",
                ouro_core::time::rfc3339(q.expires_at)
            ),
        )),
        Err(e) if e.code == ouro_core::ErrorCode::ValidationFailed => {
            Ok(redirect_with_flash(&to, &e.message))
        }
        Err(e) => Err(fail(&ctx, e)),
    }
}

async fn unquarantine_post(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let to = format!("/projects/{}/tests/cases/{id}", project.slug);
    match end_quarantine(&st, &ctx, id).await {
        Ok(()) => Ok(redirect_with_flash(&to, "The quarantine ended.")),
        Err(e) => Ok(redirect_with_flash(&to, &e.message)),
    }
}

pub struct FlakyRow {
    pub f: FlakyTest,
    pub first: When,
    pub last: When,
    pub until: Option<When>,
}

#[derive(Template)]
#[template(path = "test_flaky.html")]
struct FlakyPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    rows: Vec<FlakyRow>,
}

async fn flaky_page(State(st): State<AppState>, ctx: Ctx) -> UiResult {
    let project = ctx.project()?;
    let list = ouro_test::flaky::list(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let p = FlakyPage {
        chrome: Chrome::of(&ctx),
        project,
        phases: PHASES,
        active: "pipelines",
        manage: ctx.role() >= Some(Role::Maintainer),
        rows: list
            .into_iter()
            .map(|f| FlakyRow {
                first: When::of(f.first_seen_at),
                last: When::of(f.last_seen_at),
                until: f.quarantine.as_ref().map(|q| When::of(q.expires_at)),
                f,
            })
            .collect(),
    };
    Ok(render(&p))
}
