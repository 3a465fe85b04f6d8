//! Your in-app notifications (written by the `plan-notifications` consumer).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_core::Permission;
use ouro_plan::notifications::{self, Notification};
use ouro_store::Page;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::PageQuery;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    use Permission::Authenticated;
    reg.route(Method::GET, "/api/v1/notifications", Authenticated, list)
        .doc(
            "notifications",
            "Your notifications, newest first; `?unread=true` for unread ones only (paged)",
        )
        .response::<Page<Notification>>(200);
    reg.route(
        Method::GET,
        "/api/v1/notifications/count",
        Authenticated,
        count,
    )
    .doc("notifications", "How many unread notifications you have")
    .response::<UnreadCount>(200);
    reg.route(
        Method::POST,
        "/api/v1/notifications/{id}/read",
        Authenticated,
        read_one,
    )
    .doc(
        "notifications",
        "Mark one of your notifications read (someone else's is 404)",
    );
    reg.route(
        Method::POST,
        "/api/v1/notifications/read-all",
        Authenticated,
        read_all,
    )
    .doc("notifications", "Mark all your notifications read")
    .response::<UnreadCount>(200);
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    unread: bool,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
struct UnreadCount {
    unread: i64,
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Notification>>> {
    let user = ctx.user()?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .to_req()?;
    Ok(Json(
        notifications::list(&mut st.store.read().await?, user.id, q.unread, page).await?,
    ))
}

async fn count(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<UnreadCount>> {
    let user = ctx.user()?;
    Ok(Json(UnreadCount {
        unread: notifications::unread_count(&mut st.store.read().await?, user.id).await?,
    }))
}

async fn read_one(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let user = ctx.user()?;
    // A malformed id names no notification of yours: the same 404.
    let id = id.parse::<i64>().unwrap_or(-1);
    notifications::mark_read(&st.store, user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn read_all(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<UnreadCount>> {
    let user = ctx.user()?;
    notifications::mark_all_read(&st.store, user.id).await?;
    Ok(Json(UnreadCount { unread: 0 }))
}
