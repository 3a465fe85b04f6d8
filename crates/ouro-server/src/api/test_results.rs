//! Test: a run's test results and coverage, one test's history, the flaky list, quarantine and
//! coverage per branch. Thin: the answers come from `ouro_test::results` and `ouro_test::flaky`.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_build::runs;
use ouro_core::{OuroError, Permission, Role};
use ouro_test::flaky::{FlakyTest, Quarantine};
use ouro_test::results::{self, CaseHistory, CoveragePoint, FileCoverage, RunTests, TestCase};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let viewer = Permission::Project(Role::Viewer);
    let maintainer = Permission::Project(Role::Maintainer);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/pipelines/{number}/tests",
        viewer,
        run_tests,
    )
    .doc(
        "test",
        "A run's test results: totals, per-job reports with parse problems and quality gates, failures (new failures versus the target branch first), new failures, fixed, flaky (passed on retry), the slowest and the skipped tests; quarantined failures are marked",
    )
    .response::<RunTests>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/pipelines/{number}/coverage",
        viewer,
        run_coverage,
    )
    .doc(
        "test",
        "A run's line coverage per file (every reporting job merged): `{\"files\": [{path, lines_covered, lines_total, lines: [[line, hits]]}]}`",
    )
    .response::<CoverageFiles>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}/tests",
        viewer,
        cr_tests,
    )
    .doc(
        "test",
        "The test results of the change request's newest reporting run (`run`: its number, null when none reported), new failures first",
    )
    .response::<CrTests>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/tests/cases/{id}",
        viewer,
        case_history,
    )
    .doc(
        "test",
        "One test's history across runs and branches (newest first, one page), its first failure, last success and the commits between (over the whole history), its flaky record and quarantine; `next_before` is the `before` of the next older page; 404 test.case_not_found",
    )
    .query("limit", "At most this many results (1 to 10000, default 200)")
    .query("before", "Only results older than this result id (an entry's `id`, or the previous page's `next_before`)")
    .response::<CaseHistory>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/tests/flaky",
        viewer,
        flaky_list,
    )
    .doc(
        "test",
        "The project's flaky tests with score (0 to 100), cause, first and last seen, an example run, the bug work item and the quarantine",
    )
    .response::<FlakyList>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/tests/quarantine",
        viewer,
        quarantine_list,
    )
    .doc("test", "The project's active quarantines")
    .response::<QuarantineList>(200);
    reg.route(
        Method::PUT,
        "/api/v1/projects/{slug}/tests/cases/{id}/quarantine",
        maintainer,
        put_quarantine,
    )
    .doc(
        "test",
        "Quarantine a test: `{\"reason\", \"days\"}` (1 to 90); its failures stay visible but no longer fail the job or the quality gate until it expires",
    )
    .request::<QuarantineRequest>()
    .response::<Quarantine>(200);
    reg.route(
        Method::DELETE,
        "/api/v1/projects/{slug}/tests/cases/{id}/quarantine",
        maintainer,
        delete_quarantine,
    )
    .doc(
        "test",
        "End a test's quarantine now (204; 404 when it has none)",
    );
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/tests/coverage",
        viewer,
        coverage_trend,
    )
    .doc(
        "test",
        "Line coverage of the last reporting runs of a branch, oldest first",
    )
    .query("ref", "The branch (`main` or `refs/heads/main`; required)")
    .query("limit", "At most this many runs (1 to 1000, default 50)")
    .response::<CoverageTrend>(200);
}

/// A run's coverage per file.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CoverageFiles {
    pub files: Vec<FileCoverage>,
}

/// A change request's tests.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CrTests {
    /// The pipeline run the results come from (none reported yet: null).
    pub run: Option<i64>,
    pub tests: RunTests,
    /// Changed lines of the change request covered by that run's coverage report (none: no
    /// coverage report or no run).
    pub diff_coverage: Option<results::DiffCoverage>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FlakyList {
    pub flaky: Vec<FlakyTest>,
}

/// A quarantined test.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Quarantined {
    pub case: TestCase,
    pub quarantine: Quarantine,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct QuarantineList {
    pub quarantined: Vec<Quarantined>,
}

/// Quarantining a test.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRequest {
    /// Why (1 to 500 characters).
    pub reason: String,
    /// How long, in days (1 to 90).
    pub days: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CoverageTrend {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub points: Vec<CoveragePoint>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LimitQuery {
    pub limit: Option<i64>,
    pub before: Option<i64>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

/// The tests of run `number` of the project.
pub async fn tests_of_run(
    st: &AppState,
    project_id: i64,
    number: i64,
) -> Result<RunTests, OuroError> {
    let mut c = st.store.read().await?;
    let run = runs::get(&mut c, project_id, number).await?;
    Ok(results::run_tests(&mut c, project_id, run.id).await?)
}

async fn run_tests(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
) -> ApiResult<Json<RunTests>> {
    let p = ctx.project()?;
    Ok(Json(tests_of_run(&st, p.id, number).await?))
}

async fn run_coverage(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
) -> ApiResult<Json<CoverageFiles>> {
    let p = ctx.project()?;
    let mut c = st.store.read().await?;
    let run = runs::get(&mut c, p.id, number).await?;
    Ok(Json(CoverageFiles {
        files: results::run_coverage(&mut c, run.id).await?,
    }))
}

/// The tests of change request `number` of repository `name` (its newest reporting run).
pub async fn tests_of_cr(
    st: &AppState,
    project_id: i64,
    name: &str,
    number: i64,
) -> Result<CrTests, OuroError> {
    let mut c = st.store.read().await?;
    let repo = ouro_code::repos::get(&mut c, project_id, name).await?;
    let cr = ouro_code::cr::get(&mut c, repo.id, number).await?;
    let Some((id, n)) = results::latest_run_for_cr(&mut c, project_id, repo.id, number).await?
    else {
        return Ok(CrTests {
            run: None,
            tests: RunTests::default(),
            diff_coverage: None,
        });
    };
    let tests = results::run_tests(&mut c, project_id, id).await?;
    let files = results::run_coverage(&mut c, id).await?;
    let sha = runs::get(&mut c, project_id, n).await?.sha;
    drop(c);
    let diff_coverage = if files.is_empty() {
        None
    } else {
        ouro_test::hook::cr_changed_lines(&st.settings.data_dir, &repo, &cr, &sha)
            .await
            .map(|ch| results::diff_coverage_detail(&files, &ch))
    };
    Ok(CrTests {
        run: Some(n),
        tests,
        diff_coverage,
    })
}

async fn cr_tests(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
) -> ApiResult<Json<CrTests>> {
    let p = ctx.project()?;
    Ok(Json(tests_of_cr(&st, p.id, &name, number).await?))
}

async fn case_history(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Json<CaseHistory>> {
    let p = ctx.project()?;
    let limit = q.limit.unwrap_or(200);
    if !(1..=10_000).contains(&limit) {
        return Err(OuroError::field("limit", "1 to 10000").into());
    }
    Ok(Json(
        results::case_history_page(&mut st.store.read().await?, p.id, id, limit, q.before).await?,
    ))
}

async fn flaky_list(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<FlakyList>> {
    let p = ctx.project()?;
    Ok(Json(FlakyList {
        flaky: ouro_test::flaky::list(&mut st.store.read().await?, p.id).await?,
    }))
}

async fn quarantine_list(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<QuarantineList>> {
    let p = ctx.project()?;
    let list = ouro_test::flaky::quarantines(&mut st.store.read().await?, p.id).await?;
    Ok(Json(QuarantineList {
        quarantined: list
            .into_iter()
            .map(|(case, quarantine)| Quarantined { case, quarantine })
            .collect(),
    }))
}

/// Quarantines test `id` for `days` days (the API and the page).
pub async fn quarantine_case(
    st: &AppState,
    ctx: &Ctx,
    id: i64,
    reason: &str,
    days: i64,
) -> Result<Quarantine, OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    if !(1..=90).contains(&days) {
        return Err(OuroError::field("days", "a quarantine lasts 1 to 90 days"));
    }
    let expires = ouro_core::time::now_ms() + days * 86_400_000;
    Ok(ouro_test::flaky::quarantine(&st.store, &ctx.actor(), p.id, id, reason, expires).await?)
}

async fn put_quarantine(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Json(body): Json<QuarantineRequest>,
) -> ApiResult<Json<Quarantine>> {
    Ok(Json(
        quarantine_case(&st, &ctx, id, &body.reason, body.days).await?,
    ))
}

/// Ends test `id`'s quarantine; 404 when it has none.
pub async fn end_quarantine(st: &AppState, ctx: &Ctx, id: i64) -> Result<(), OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    if ouro_test::flaky::end_quarantine(&st.store, &ctx.actor(), p.id, id).await? {
        Ok(())
    } else {
        Err(OuroError::new(
            ouro_core::ErrorCode::TestCaseNotFound,
            format!("test {id} is not quarantined"),
        ))
    }
}

async fn delete_quarantine(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    end_quarantine(&st, &ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn coverage_trend(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Json<CoverageTrend>> {
    let p = ctx.project()?;
    let r = q.git_ref.unwrap_or_default();
    let r = r.trim();
    if r.is_empty() {
        return Err(OuroError::field("ref", "a branch is required").into());
    }
    let git_ref = if r.starts_with("refs/") {
        r.to_string()
    } else {
        format!("refs/heads/{r}")
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(OuroError::field("limit", "1 to 1000").into());
    }
    let points =
        results::coverage_trend(&mut st.store.read().await?, p.id, &git_ref, limit).await?;
    Ok(Json(CoverageTrend { git_ref, points }))
}
