//! Build: the job page (`/projects/{slug}/pipelines/{n}/jobs/{job_id}`): the job's state and its
//! log rendered server-side by step section (line numbers, times, ANSI colours, the truncation
//! marker), search (`?q=`), raw and download links, and live updates by `assets/joblog.js`
//! over the SSE stream of `api::pipeline_logs`. Also the run page's job graph fragment, polled by
//! htmx while the run is not finished.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use axum::response::{Html, IntoResponse};
use ouro_build::logview::{self, Block, Match, SearchResult};
use ouro_build::runs;
use ouro_core::{Permission, Role};
use ouro_store::projects::Project;

use crate::AppState;
use crate::api::pipeline_logs::{LogQuery, blocking, snapshot, target};
use crate::extract::{Ctx, Path, Query};
use crate::registry::Registry;
use crate::ui::common::{When, fail};
use crate::ui::pipelines::{Layer, layers};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, UiResult, render};

/// The page shows at most this many lines of the end of a log (the raw log has all).
pub const PAGE_LINES: usize = 5000;
/// ... and at most this many bytes of them.
pub const PAGE_BYTES: u64 = 4 << 20;
/// Search results shown at most.
pub const SEARCH_LIMIT: usize = 500;

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/projects/{slug}/pipelines/{number}/jobs/{job_id}",
        Permission::Project(Role::Viewer),
        show,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/pipelines/{number}/graph",
        Permission::Project(Role::Viewer),
        graph,
    );
}

fn finished_run(status: &str) -> bool {
    matches!(status, "success" | "failure" | "cancelled")
}

fn span(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) if e >= s => logview::duration_text((e - s) as u64),
        _ => String::new(),
    }
}

/// A line as the template shows it.
pub struct LineRow {
    pub number: u64,
    pub clock: String,
    pub iso: String,
    pub html: String,
    pub marker: bool,
    pub cut: bool,
}

pub struct BlockRow {
    pub section: bool,
    pub step: usize,
    pub name: String,
    pub status: String,
    pub duration: String,
    pub exit_code: String,
    pub lines: Vec<LineRow>,
}

pub struct AttemptLink {
    pub n: i64,
    pub current: bool,
}

pub struct MatchRow {
    pub number: u64,
    pub clock: String,
    pub html: String,
}

fn iso(ms: u64) -> String {
    When::of(ms as i64).iso
}

fn line_rows(blocks: Vec<Block>) -> Vec<BlockRow> {
    blocks
        .into_iter()
        .map(|b| {
            let lines = b
                .lines
                .into_iter()
                .map(|l| LineRow {
                    number: l.number,
                    clock: l.time_ms.map(logview::clock).unwrap_or_default(),
                    iso: l.time_ms.map(iso).unwrap_or_default(),
                    html: l.html,
                    marker: l.marker,
                    cut: l.cut,
                })
                .collect();
            match b.section {
                Some(s) => BlockRow {
                    section: true,
                    step: s.step,
                    duration: s.duration(),
                    exit_code: s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    name: s.name,
                    status: s.status,
                    lines,
                },
                None => BlockRow {
                    section: false,
                    step: 0,
                    name: String::new(),
                    status: String::new(),
                    duration: String::new(),
                    exit_code: String::new(),
                    lines,
                },
            }
        })
        .collect()
}

fn match_rows(ms: Vec<Match>) -> Vec<MatchRow> {
    ms.into_iter()
        .map(|m| MatchRow {
            number: m.number,
            clock: m.time_ms.map(logview::clock).unwrap_or_default(),
            html: m.html,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "build_job.html")]
struct JobPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    run_number: i64,
    run_pipeline: String,
    job_id: i64,
    name: String,
    key: String,
    status: String,
    attempt: i64,
    attempts: Vec<AttemptLink>,
    latest_attempt: i64,
    runner: String,
    /// What a runner needs to take the job (`runs-on` labels, executor); empty: any runner.
    requires: String,
    reason: String,
    exit_code: String,
    started: Option<When>,
    finished: Option<When>,
    duration: String,
    live: bool,
    size: u64,
    truncated: bool,
    /// Lines before the first shown one.
    hidden_lines: u64,
    total_lines: u64,
    /// Whether the log ends inside a line (the live view continues it).
    open_line: bool,
    blocks: Vec<BlockRow>,
    query: String,
    matches: Vec<MatchRow>,
    more_matches: bool,
    log_url: String,
    download_url: String,
    stream_url: String,
    job_url: String,
}

/// "labels linux, gpu and the sandbox executor": what a runner must have to take a job.
fn requirements(labels: &[String], executor: Option<&str>) -> String {
    let labels = match labels {
        [] => String::new(),
        [one] => format!("label {one}"),
        many => format!("labels {}", many.join(", ")),
    };
    match (labels.is_empty(), executor) {
        (true, None) => String::new(),
        (false, None) => labels,
        (true, Some(e)) => format!("the {e} executor"),
        (false, Some(e)) => format!("{labels} and the {e} executor"),
    }
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number, job_id)): Path<(String, i64, i64)>,
    Query(lq): Query<LogQuery>,
) -> UiResult {
    let project = ctx.project()?;
    let t = target(&st, &ctx, number, job_id, lq.attempt)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let query = lq.q.clone().unwrap_or_default().trim().to_string();
    let dir = t.dir.clone();
    let q2 = query.clone();
    let (state, window, blocks, found, open_line) = blocking(move || {
        let snap = snapshot(&dir)?;
        let Some(r) = &snap.reader else {
            return Ok((snap.state(0), None, Vec::new(), None, false));
        };
        let times = r.times()?;
        let w = logview::tail_window(r, PAGE_LINES, PAGE_BYTES)?;
        let blocks = logview::render(r, w.start, r.len(), w.first_line, &times, &snap.sections)?;
        let found = if q2.is_empty() {
            None
        } else {
            Some(logview::search(r, &q2, SEARCH_LIMIT, &times)?)
        };
        let open_line = !r.is_empty() && r.read_range(r.len() - 1, r.len())? != b"\n";
        Ok((snap.state(0), Some(w), blocks, found, open_line))
    })
    .await
    .map_err(|e| fail(&ctx, e))?;
    let job = t.job;
    let base = format!(
        "/api/v1/projects/{}/pipelines/{}/jobs/{}",
        project.slug, t.run.number, job.id
    );
    let attempt_q = if lq.attempt.is_some() {
        format!("?attempt={}", t.attempt)
    } else {
        String::new()
    };
    let found = found.unwrap_or(SearchResult {
        matches: Vec::new(),
        more: false,
    });
    let live = matches!(job.status.as_str(), "queued" | "running") && t.attempt == job.attempt;
    let p = JobPage {
        chrome: Chrome::of(&ctx),
        project,
        phases: PHASES,
        active: "pipelines",
        manage: ctx.role() >= Some(Role::Maintainer),
        run_number: t.run.number,
        run_pipeline: t.run.pipeline.clone(),
        job_id: job.id,
        name: job.name.clone(),
        key: job.key.clone(),
        status: job.status.clone(),
        attempt: t.attempt,
        attempts: (1..=job.attempt)
            .map(|n| AttemptLink {
                n,
                current: n == t.attempt,
            })
            .collect(),
        latest_attempt: job.attempt,
        runner: job.runner_id.clone().unwrap_or_default(),
        requires: requirements(&job.labels, job.executor.as_deref()),
        reason: job.reason.clone().unwrap_or_default(),
        exit_code: job.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        started: job.started_at.map(When::of),
        finished: job.finished_at.map(When::of),
        duration: span(job.started_at, job.finished_at),
        live,
        size: state.size,
        truncated: state.truncated,
        hidden_lines: window.map_or(0, |w| w.first_line - 1),
        total_lines: window.map_or(0, |w| w.total_lines),
        open_line,
        blocks: line_rows(blocks),
        query,
        matches: match_rows(found.matches),
        more_matches: found.more,
        log_url: format!("{base}/log{attempt_q}"),
        download_url: if attempt_q.is_empty() {
            format!("{base}/log?download=1")
        } else {
            format!("{base}/log{attempt_q}&download=1")
        },
        stream_url: format!("{base}/log/stream{attempt_q}"),
        job_url: format!(
            "/projects/{}/pipelines/{}/jobs/{}",
            project.slug, t.run.number, job.id
        ),
    };
    Ok(render(&p))
}

/// What the run page's job graph shows (`build_job_graph.html`, included by `build_run.html`).
pub struct GraphRow {
    pub number: i64,
    pub status: String,
}

#[derive(Template)]
#[template(path = "build_job_graph.html")]
struct GraphFragment<'a> {
    project: &'a Project,
    row: GraphRow,
    finished: bool,
    layers: Vec<Layer>,
    oob: bool,
    /// Re-run buttons (developers, finished runs) post with this CSRF token.
    can_write: bool,
    /// The "Create release" box comes along out of band once the run succeeded (`ui::releases`).
    can_release: bool,
    csrf: String,
}

/// The run's job graph alone (htmx polls it every 2 s while the run is not finished; the run's
/// status badge comes along out of band).
async fn graph(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let d = runs::detail(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        number,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let can_release = ctx.role() >= Some(ouro_core::Role::Developer) && d.run.status == "success";
    let f = GraphFragment {
        project,
        finished: finished_run(&d.run.status),
        row: GraphRow {
            number: d.run.number,
            status: d.run.status,
        },
        layers: layers(d.jobs),
        oob: true,
        can_write: ctx.role() >= Some(ouro_core::Role::Developer),
        can_release,
        csrf: crate::ui::Chrome::of(&ctx).csrf,
    };
    Ok(match f.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            return Err(fail(
                &ctx,
                ouro_core::OuroError::new(ouro_core::ErrorCode::Internal, e.to_string()),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::requirements;

    #[test]
    fn requirements_name_the_labels_and_the_executor() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(requirements(&[], None), "");
        assert_eq!(requirements(&l(&["gpu"]), None), "label gpu");
        assert_eq!(
            requirements(&l(&["linux", "gpu"]), Some("sandbox")),
            "labels linux, gpu and the sandbox executor"
        );
        assert_eq!(requirements(&[], Some("shell")), "the shell executor");
    }
}
