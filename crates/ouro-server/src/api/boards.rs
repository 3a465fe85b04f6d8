//! Plan: sprints (lifecycle, planning, reports and SVG charts), the board and the roadmap.

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ouro_core::{Permission, Role};
use ouro_plan::board::{self, Board, Column, Swimlane};
use ouro_plan::roadmap::{self, Roadmap};
use ouro_plan::sprints::{self, MoveTo, NewSprint, Report, Sprint, SprintItems, SprintPatch};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, write, admin) = (
        InProject(Role::Viewer),
        InProject(Role::Developer),
        InProject(Role::Maintainer),
    );
    let list_p = "/api/v1/projects/{slug}/sprints";
    let one = "/api/v1/projects/{slug}/sprints/{id}";
    reg.route(Method::GET, list_p, read, list)
        .doc(
            "sprints",
            "The project's sprints: active, planned, then completed",
        )
        .response::<Vec<Sprint>>(200);
    reg.route(Method::POST, list_p, write, create)
        .doc("sprints", "Create a planned sprint")
        .request::<NewSprint>()
        .response::<Sprint>(201);
    reg.route(Method::GET, one, read, get)
        .doc("sprints", "A sprint")
        .response::<Sprint>(200);
    reg.route(Method::PATCH, one, write, patch)
        .doc(
            "sprints",
            "Change a sprint's name, goal, capacity or dates (send `version` to detect conflicts)",
        )
        .request::<SprintPatch>()
        .response::<Sprint>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/sprints/{id}/items",
        read,
        sprint_items,
    )
    .doc("sprints", "The items planned into a sprint, in rank order")
    .response::<Vec<ouro_plan::items::Item>>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/sprints/{id}/items",
        write,
        plan,
    )
    .doc(
        "sprints",
        "Plan items into the sprint (`add`) or back to the backlog (`remove`), by key",
    )
    .request::<SprintItems>()
    .response::<Sprint>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/sprints/{id}/start",
        write,
        start,
    )
    .doc(
        "sprints",
        "Start a planned sprint; 409 sprint.already_active while another one runs",
    )
    .response::<Sprint>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/sprints/{id}/complete",
        write,
        complete,
    )
    .doc(
        "sprints",
        "Complete the active sprint; unfinished items move to `move_to`: \"backlog\" (default), \"next\" or a sprint id",
    )
    .request::<CompleteBody>()
    .response::<Sprint>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/sprints/{id}/report",
        read,
        report,
    )
    .doc(
        "sprints",
        "Daily remaining, completed and scope points of a sprint, replayed from the ledger (-1: a day still ahead)",
    )
    .response::<Report>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/sprints/{id}/burndown.svg",
        read,
        burndown,
    )
    .doc("sprints", "The sprint's burndown chart (image/svg+xml)");
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/sprints/{id}/burnup.svg",
        read,
        burnup,
    )
    .doc("sprints", "The sprint's burnup chart (image/svg+xml)");
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/velocity",
        read,
        velocity,
    )
    .doc(
        "sprints",
        "Committed and completed points of the last completed sprints, oldest first",
    )
    .query("n", "How many sprints, 1 to 20 (default 6)")
    .response::<Vec<Sprint>>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/velocity.svg",
        read,
        velocity_svg,
    )
    .doc("sprints", "The velocity chart (image/svg+xml)")
    .query("n", "How many sprints, 1 to 20 (default 6)");
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/board",
        read,
        get_board,
    )
    .doc(
        "board",
        "The board: columns (workflow states) with WIP limits and ranked cards, optional swimlanes",
    )
    .query("q", "Item query language filter")
    .query("swimlane", "none (default), assignee, epic or priority")
    .response::<Board>(200);
    reg.route(
        Method::PUT,
        "/api/v1/projects/{slug}/board/columns/{state}",
        admin,
        put_column,
    )
    .doc(
        "board",
        "Set or clear (null) a board column's WIP limit (maintainers)",
    )
    .request::<ColumnBody>()
    .response::<Column>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/roadmap",
        read,
        get_roadmap,
    )
    .doc(
        "board",
        "Epics and features on a timeline by target date, with progress from their children",
    )
    .response::<Roadmap>(200);
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// `"backlog"` (default), `"next"` (the next planned sprint) or a planned sprint's id.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub move_to: serde_json::Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnBody {
    /// 1 to 999, or null for no limit.
    pub wip_limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct BoardQuery {
    pub q: Option<String>,
    pub swimlane: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct VelocityQuery {
    pub n: Option<usize>,
}

pub(crate) fn svg(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn list(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Vec<Sprint>>> {
    Ok(Json(
        sprints::list(&mut st.store.read().await?, ctx.project()?.id).await?,
    ))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<NewSprint>,
) -> ApiResult<impl IntoResponse> {
    let s = sprints::create(&st.store, ctx.project()?, &ctx.actor(), body).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

async fn get(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<Json<Sprint>> {
    Ok(Json(
        sprints::get(&mut st.store.read().await?, ctx.project()?.id, id).await?,
    ))
}

async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Json(body): Json<SprintPatch>,
) -> ApiResult<Json<Sprint>> {
    Ok(Json(
        sprints::update(&st.store, ctx.project()?, &ctx.actor(), id, body).await?,
    ))
}

async fn sprint_items(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<Json<Vec<ouro_plan::items::Item>>> {
    Ok(Json(
        sprints::items_of(&st.store, ctx.project()?.id, id).await?,
    ))
}

async fn plan(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Json(body): Json<SprintItems>,
) -> ApiResult<Json<Sprint>> {
    Ok(Json(
        sprints::plan_items(&st.store, ctx.project()?, &ctx.actor(), id, body).await?,
    ))
}

async fn start(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<Json<Sprint>> {
    Ok(Json(
        sprints::start(&st.store, ctx.project()?, &ctx.actor(), id).await?,
    ))
}

async fn complete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Json(body): Json<CompleteBody>,
) -> ApiResult<Json<Sprint>> {
    let to = MoveTo::parse(&body.move_to)?;
    Ok(Json(
        sprints::complete(&st.store, ctx.project()?, &ctx.actor(), id, to).await?,
    ))
}

async fn report(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<Json<Report>> {
    Ok(Json(
        sprints::report(&mut st.store.read().await?, ctx.project()?.id, id).await?,
    ))
}

async fn burndown(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<Response> {
    let r = sprints::report(&mut st.store.read().await?, ctx.project()?.id, id).await?;
    Ok(svg(sprints::burndown_svg(&r)))
}

async fn burnup(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<Response> {
    let r = sprints::report(&mut st.store.read().await?, ctx.project()?.id, id).await?;
    Ok(svg(sprints::burnup_svg(&r)))
}

fn count(n: Option<usize>) -> Result<usize, ouro_core::OuroError> {
    let n = n.unwrap_or(6);
    if !(1..=20).contains(&n) {
        return Err(ouro_core::OuroError::field("n", "n must be 1 to 20"));
    }
    Ok(n)
}

async fn velocity(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<VelocityQuery>,
) -> ApiResult<Json<Vec<Sprint>>> {
    let n = count(q.n)?;
    Ok(Json(
        sprints::velocity(&mut st.store.read().await?, ctx.project()?.id, n).await?,
    ))
}

async fn velocity_svg(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<VelocityQuery>,
) -> ApiResult<Response> {
    let n = count(q.n)?;
    let done = sprints::velocity(&mut st.store.read().await?, ctx.project()?.id, n).await?;
    Ok(svg(sprints::velocity_svg(&done)))
}

async fn get_board(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<BoardQuery>,
) -> ApiResult<Json<Board>> {
    let lane = Swimlane::parse(q.swimlane.as_deref())?;
    let me = ctx.principal.as_ref().map(|p| p.user.id);
    Ok(Json(
        board::board(&st.store, ctx.project()?.id, q.q.as_deref(), me, lane).await?,
    ))
}

async fn put_column(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, state)): Path<(String, String)>,
    Json(body): Json<ColumnBody>,
) -> ApiResult<Json<Column>> {
    Ok(Json(
        board::set_wip_limit(
            &st.store,
            ctx.project()?,
            &ctx.actor(),
            &state,
            body.wip_limit,
        )
        .await?,
    ))
}

async fn get_roadmap(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Roadmap>> {
    Ok(Json(
        roadmap::roadmap(&mut st.store.read().await?, ctx.project()?.id).await?,
    ))
}
