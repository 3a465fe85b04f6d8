//! Plan: saved item queries, personal (any viewer, for themselves) and shared (maintainers).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::{Permission, Role};
use ouro_plan::saved_queries::{self, Caller, SavedQuery, SavedQueryPatch};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    // Viewers may save queries for themselves; the domain asks for a maintainer when the
    // query is (or becomes) shared, so the route itself only needs a viewer.
    let read = Permission::Project(Role::Viewer);
    let path = "/api/v1/projects/{slug}/saved-queries";
    let one = "/api/v1/projects/{slug}/saved-queries/{id}";
    reg.route(Method::GET, path, read, list)
        .doc(
            "items",
            "Your saved queries in this project and the project's shared ones (shared first)",
        )
        .response::<Vec<SavedQuery>>(200);
    reg.route(Method::POST, path, read, create)
        .doc(
            "items",
            "Save a query for yourself, or for the project with `shared: true` (maintainers); 400 item.invalid_query locates a bad query",
        )
        .request::<NewSavedQuery>()
        .response::<SavedQuery>(201);
    reg.route(Method::PATCH, one, read, patch)
        .doc(
            "items",
            "Rename or rewrite a saved query (yours, or a shared one as maintainer); send `version` to detect conflicts",
        )
        .request::<SavedQueryPatch>()
        .response::<SavedQuery>(200);
    reg.route(Method::DELETE, one, read, delete).doc(
        "items",
        "Delete a saved query (yours, or a shared one as maintainer)",
    );
}

#[derive(Debug, Deserialize, JsonSchema)]
struct NewSavedQuery {
    /// 1 to 100 characters, unique among your queries (or among the project's shared ones).
    name: String,
    /// The item query language text (docs/query-language.md).
    query: String,
    /// Share with the project (maintainers only); default false.
    #[serde(default)]
    shared: bool,
}

/// The caller as the domain sees them; anyone reading without signing in has no personal queries.
pub(crate) fn caller(ctx: &Ctx) -> Caller {
    Caller {
        user_id: ctx.principal.as_ref().map(|p| p.user.id).unwrap_or(-1),
        can_share: ctx.role().is_some_and(|r| r >= Role::Maintainer),
    }
}

async fn list(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Vec<SavedQuery>>> {
    let c = caller(&ctx);
    Ok(Json(
        saved_queries::list(&mut st.store.read().await?, ctx.project()?.id, c.user_id).await?,
    ))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<NewSavedQuery>,
) -> ApiResult<impl IntoResponse> {
    ctx.user()?;
    let s = saved_queries::create(
        &st.store,
        ctx.project()?.id,
        caller(&ctx),
        &body.name,
        &body.query,
        body.shared,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(s)))
}

async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Json(body): Json<SavedQueryPatch>,
) -> ApiResult<Json<SavedQuery>> {
    ctx.user()?;
    Ok(Json(
        saved_queries::update(&st.store, ctx.project()?.id, caller(&ctx), id, body).await?,
    ))
}

async fn delete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    ctx.user()?;
    saved_queries::delete(&st.store, ctx.project()?.id, caller(&ctx), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
