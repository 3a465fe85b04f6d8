//! Plan pages for the board, sprints and the roadmap. Charts are inline SVG from
//! `ouro_plan::sprints` (no script); dragging cards is `assets/board.js`, and every drag has a
//! form fallback (a "move to" select per card).

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::{OuroError, Permission, Role};
use ouro_plan::board::{self, Board, Card, Swimlane};
use ouro_plan::items::{self, Item, RankMove};
use ouro_plan::roadmap::{self, Roadmap};
use ouro_plan::sprints::{self, MoveTo, NewSprint, Sprint, SprintItems, SprintState};
use ouro_store::projects::Project;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::extract::{Ctx, Path, Query};
use crate::registry::Registry;
use crate::ui::common::{Flash, fail, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render_status, url_encode};

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, write) = (InProject(Role::Viewer), InProject(Role::Developer));
    reg.route(Method::GET, "/projects/{slug}/plan/board", read, board_page);
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/board/move",
        write,
        board_move,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/plan/sprints",
        read,
        sprints_page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/sprints",
        write,
        sprint_create,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/plan/sprints/{id}",
        read,
        sprint_page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/sprints/{id}/items",
        write,
        sprint_plan,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/sprints/{id}/start",
        write,
        sprint_start,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/sprints/{id}/complete",
        write,
        sprint_complete,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/plan/roadmap",
        read,
        roadmap_page,
    );
}

#[derive(Deserialize, Default)]
pub struct BoardQuery {
    q: Option<String>,
    swimlane: Option<String>,
}

/// One lane row of the board as the template draws it: per column, its cards.
pub struct LaneRow<'a> {
    pub name: String,
    pub cells: Vec<Vec<&'a board::Card>>,
}

#[derive(Template)]
#[template(path = "plan_board.html")]
struct BoardPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    tab: &'static str,
    manage: bool,
    can_edit: bool,
    q: String,
    swimlane: &'static str,
    error: Option<String>,
    board: &'a Board,
    rows: Vec<LaneRow<'a>>,
    states: Vec<String>,
}

fn head(ctx: &Ctx) -> (bool, bool) {
    (
        ctx.role() >= Some(Role::Maintainer),
        ctx.role() >= Some(Role::Developer),
    )
}

fn rows_of(b: &Board) -> Vec<LaneRow<'_>> {
    let by_key: std::collections::HashMap<&str, &Card> = b
        .columns
        .iter()
        .flat_map(|c| c.cards.iter())
        .map(|c| (c.key.as_str(), c))
        .collect();
    let find = |key: &String| by_key.get(key.as_str()).copied();
    if b.lanes.is_empty() {
        return vec![LaneRow {
            name: String::new(),
            cells: b.columns.iter().map(|c| c.cards.iter().collect()).collect(),
        }];
    }
    b.lanes
        .iter()
        .map(|l| LaneRow {
            name: l.name.clone().unwrap_or_else(|| "(none)".into()),
            cells: l
                .cards
                .iter()
                .map(|keys| keys.iter().filter_map(find).collect())
                .collect(),
        })
        .collect()
}

async fn board_page(
    State(st): State<AppState>,
    ctx: Ctx,
    flash: Flash,
    Query(query): Query<BoardQuery>,
) -> UiResult {
    let project = ctx.project()?;
    let q = query.q.clone().unwrap_or_default();
    let lane = Swimlane::parse(query.swimlane.as_deref()).unwrap_or_default();
    let me = ctx.principal.as_ref().map(|p| p.user.id);
    let (b, error) = match board::board(&st.store, project.id, Some(&q), me, lane).await {
        Ok(b) => (b, None),
        Err(e) => {
            let e: OuroError = e.into();
            let b = board::board(&st.store, project.id, None, me, lane)
                .await
                .map_err(|e| fail(&ctx, e))?;
            (b, Some(e.message))
        }
    };
    let (manage, can_edit) = head(&ctx);
    let p = BoardPage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "plan",
        tab: "board",
        manage,
        can_edit,
        q,
        swimlane: lane.as_str(),
        error,
        rows: rows_of(&b),
        states: b.columns.iter().map(|c| c.state.clone()).collect(),
        board: &b,
    };
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

/// A card dropped on a column (`to`) and/or next to another card (`before`/`after`): the
/// transition and the rank move. From board.js (`x-board-js` header) the answer is JSON with
/// the error message and `allowed` states; from the fallback form, a redirect with a flash.
async fn board_move(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let js = headers.contains_key("x-board-js");
    let key = form.get("key");
    let to = form.get("to");
    let back = {
        let q = form.get("back");
        if q.starts_with(&format!("/projects/{}/plan/board", project.slug)) {
            q
        } else {
            format!("/projects/{}/plan/board", project.slug)
        }
    };
    let mut result: Result<String, OuroError> = Ok(String::new());
    let cur = items::get(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        &key,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let Some(cur) = cur else {
        return Err(fail(&ctx, items::not_found(&key)));
    };
    if !to.trim().is_empty() && !cur.state.eq_ignore_ascii_case(to.trim()) {
        result = items::transition(&st.store, project, &ctx.actor(), &key, &to, None)
            .await
            .map(|i| format!("{} moved to {}.", i.key, i.state))
            .map_err(OuroError::from);
    }
    let (before, after) = (form.get("before"), form.get("after"));
    if result.is_ok() && (!before.is_empty() || !after.is_empty()) {
        let mv = RankMove {
            before: (!before.is_empty()).then_some(before),
            after: (!after.is_empty() && form.get("before").is_empty()).then_some(after),
        };
        result = items::move_rank(&st.store, project, &ctx.actor(), &key, mv)
            .await
            .map(|i| format!("{} moved.", i.key))
            .map_err(OuroError::from);
    }
    match (js, result) {
        (true, Ok(msg)) => Ok(axum::Json(json!({"ok": true, "message": msg})).into_response()),
        (true, Err(e)) => {
            let allowed = e
                .details
                .as_ref()
                .and_then(|d| d.get("allowed").cloned())
                .unwrap_or(json!([]));
            Ok((
                crate::auth::status_of(e.code),
                axum::Json(json!({"ok": false, "code": e.code.as_str(), "message": e.message, "allowed": allowed})),
            )
                .into_response())
        }
        (false, Ok(msg)) => Ok(redirect_with_flash(&back, &msg)),
        (false, Err(e)) => Ok(redirect_with_flash(&back, &e.message)),
    }
}

#[derive(Template)]
#[template(path = "plan_sprints.html")]
struct SprintsPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    tab: &'static str,
    manage: bool,
    can_edit: bool,
    sprints: Vec<Sprint>,
    velocity: String,
}

async fn sprints_page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let mut ex = st.store.read().await.map_err(|e| fail(&ctx, e))?;
    let list = sprints::list(&mut ex, project.id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let done = sprints::velocity(&mut ex, project.id, 6)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let (manage, can_edit) = head(&ctx);
    let p = SprintsPage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "plan",
        tab: "sprints",
        manage,
        can_edit,
        sprints: list,
        velocity: sprints::velocity_svg(&done),
    };
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

fn opt(s: String) -> Option<String> {
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

async fn sprint_create(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let list = format!("/projects/{}/plan/sprints", project.slug);
    let capacity = match opt(form.get("capacity")) {
        None => None,
        Some(c) => match c.parse::<i64>() {
            Ok(c) => Some(c),
            Err(_) => {
                return Ok(redirect_with_flash(
                    &list,
                    "The capacity must be a number of points.",
                ));
            }
        },
    };
    let new = NewSprint {
        name: form.get("name"),
        goal: form.get("goal"),
        capacity,
        start_at: opt(form.get("start_at")),
        end_at: opt(form.get("end_at")),
    };
    match sprints::create(&st.store, project, &ctx.actor(), new).await {
        Ok(s) => Ok(redirect_with_flash(
            &format!("{list}/{}", s.id),
            &format!("Created {}.", s.name),
        )),
        Err(e) => Ok(redirect_with_flash(&list, &OuroError::from(e).message)),
    }
}

#[derive(Template)]
#[template(path = "plan_sprint.html")]
struct SprintPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    tab: &'static str,
    manage: bool,
    can_edit: bool,
    sprint: Sprint,
    items: Vec<Item>,
    backlog: Vec<Item>,
    planned: Vec<Sprint>,
    burndown: String,
    burnup: String,
    over_capacity: bool,
}

async fn sprint_page(
    State(st): State<AppState>,
    ctx: Ctx,
    flash: Flash,
    Path((_, id)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let mut ex = st.store.read().await.map_err(|e| fail(&ctx, e))?;
    let report = sprints::report(&mut ex, project.id, id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let its = items::board_items(&mut ex, project.id, None, None, Some(id))
        .await
        .map_err(|e| fail(&ctx, e))?;
    let mut backlog = items::board_items(
        &mut ex,
        project.id,
        Some("sprint:none -category:done"),
        None,
        None,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    backlog.truncate(100);
    let planned = sprints::list(&mut ex, project.id)
        .await
        .map_err(|e| fail(&ctx, e))?
        .into_iter()
        .filter(|s| s.state == SprintState::Planned && s.id != id)
        .collect();
    let (manage, can_edit) = head(&ctx);
    let sprint = report.sprint.clone();
    let p = SprintPage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "plan",
        tab: "sprints",
        manage,
        can_edit,
        over_capacity: sprint.capacity.is_some_and(|c| sprint.points > c),
        burndown: sprints::burndown_svg(&report),
        burnup: sprints::burnup_svg(&report),
        sprint,
        items: its,
        backlog,
        planned,
    };
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

fn sprint_href(project: &Project, id: i64) -> String {
    format!("/projects/{}/plan/sprints/{id}", url_encode(&project.slug))
}

async fn sprint_plan(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let (add, remove) = (opt(form.get("add")), opt(form.get("remove")));
    let change = SprintItems {
        add: add.into_iter().collect(),
        remove: remove.into_iter().collect(),
    };
    let msg = match sprints::plan_items(&st.store, project, &ctx.actor(), id, change).await {
        Ok(s) => format!(
            "{} now has {} items ({} points).",
            s.name, s.item_count, s.points
        ),
        Err(e) => OuroError::from(e).message,
    };
    Ok(redirect_with_flash(&sprint_href(project, id), &msg))
}

async fn sprint_start(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let msg = match sprints::start(&st.store, project, &ctx.actor(), id).await {
        Ok(s) => format!("Started {}.", s.name),
        Err(e) => OuroError::from(e).message,
    };
    Ok(redirect_with_flash(&sprint_href(project, id), &msg))
}

async fn sprint_complete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let to = match MoveTo::parse(&json!(form.get("move_to"))) {
        Ok(t) => t,
        Err(e) => return Ok(redirect_with_flash(&sprint_href(project, id), &e.message)),
    };
    let msg = match sprints::complete(&st.store, project, &ctx.actor(), id, to).await {
        Ok(s) => format!("Completed {}.", s.name),
        Err(e) => OuroError::from(e).message,
    };
    Ok(redirect_with_flash(&sprint_href(project, id), &msg))
}

/// One roadmap bar: its place on the timeline in percent of the width.
pub struct Bar {
    pub left: i64,
    pub width: i64,
}

#[derive(Template)]
#[template(path = "plan_roadmap.html")]
struct RoadmapPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    tab: &'static str,
    manage: bool,
    roadmap: Roadmap,
    bars: Vec<Bar>,
    first: String,
    last: String,
}

async fn roadmap_page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let rm = roadmap::roadmap(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let lo = rm.dated.iter().map(|e| e.start_at).min().unwrap_or(0);
    let hi = rm
        .dated
        .iter()
        .filter_map(|e| e.target_at)
        .max()
        .unwrap_or(lo)
        .max(lo + 1);
    // Widths snap to 5% steps: the stylesheet has one class per step (no inline styles).
    let pct = |v: i64| ((v - lo) * 100 / (hi - lo)).clamp(0, 100);
    let bars = rm
        .dated
        .iter()
        .map(|e| {
            let l = pct(e.start_at.min(e.target_at.unwrap_or(hi))) / 5 * 5;
            let r = (pct(e.target_at.unwrap_or(hi)) + 4) / 5 * 5;
            Bar {
                left: l.min(95),
                width: (r - l).max(5).min(100 - l.min(95)),
            }
        })
        .collect();
    let (manage, _) = head(&ctx);
    let day = |ms: i64| ouro_core::time::rfc3339(ms)[..10].to_string();
    let p = RoadmapPage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "plan",
        tab: "roadmap",
        manage,
        first: day(lo),
        last: day(hi),
        roadmap: rm,
        bars,
    };
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}
