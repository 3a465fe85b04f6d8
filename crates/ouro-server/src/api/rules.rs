//! Plan: automation rules and their run log.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::{Permission, Role};
use ouro_plan::rules::{self, NewRule, Rule, RulePatch, Run};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, write) = (InProject(Role::Viewer), InProject(Role::Maintainer));
    let path = "/api/v1/projects/{slug}/rules";
    let one = "/api/v1/projects/{slug}/rules/{id}";
    reg.route(Method::GET, path, read, list)
        .doc(
            "rules",
            "The project's automation rules (the defaults are created on first use)",
        )
        .response::<Vec<Rule>>(200);
    reg.route(Method::POST, path, write, create)
        .doc(
            "rules",
            "Create a rule: when (event kind + conditions) then (actions); maintainers",
        )
        .request::<NewRule>()
        .response::<Rule>(201);
    reg.route(Method::GET, one, read, get)
        .doc("rules", "One automation rule")
        .response::<Rule>(200);
    reg.route(Method::PATCH, one, write, patch)
        .doc(
            "rules",
            "Change, enable or disable a rule; send `version` to detect conflicts (409)",
        )
        .request::<RulePatch>()
        .response::<Rule>(200);
    reg.route(Method::DELETE, one, write, delete)
        .doc("rules", "Delete a rule and its run log");
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/rules/{id}/runs",
        read,
        runs,
    )
    .doc(
        "rules",
        "The rule's newest runs first: event, item, outcome (ok, skipped, failed) and why",
    )
    .query("limit", "1 to 500 (default 100)")
    .response::<Vec<Run>>(200);
}

async fn list(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Vec<Rule>>> {
    Ok(Json(rules::list(&st.store, ctx.project()?).await?))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<NewRule>,
) -> ApiResult<impl IntoResponse> {
    let r = rules::create(&st.store, ctx.project()?, &ctx.actor(), body).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

async fn get(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<Json<Rule>> {
    Ok(Json(
        rules::get(&mut st.store.read().await?, ctx.project()?.id, id).await?,
    ))
}

async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Json(body): Json<RulePatch>,
) -> ApiResult<Json<Rule>> {
    Ok(Json(
        rules::update(&st.store, ctx.project()?, &ctx.actor(), id, body).await?,
    ))
}

async fn delete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    rules::delete(&st.store, ctx.project()?, &ctx.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    limit: Option<i64>,
}

async fn runs(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Json<Vec<Run>>> {
    Ok(Json(
        rules::runs(
            &mut st.store.read().await?,
            ctx.project()?.id,
            id,
            q.limit.unwrap_or(100),
        )
        .await?,
    ))
}
