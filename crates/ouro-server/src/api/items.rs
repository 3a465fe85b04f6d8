//! Plan: work items, their comments, watchers and history, and the project's workflows.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::{Event, Permission, Role};
use ouro_plan::items::{
    self, BulkEdit, Comment, Item, ItemFilter, ItemPatch, NewItem, RankMove, Search, Watchers,
};
use ouro_plan::workflow::{self, Workflows};
use ouro_store::Page;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::AppState;
use crate::api::PageQuery;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, write) = (InProject(Role::Viewer), InProject(Role::Developer));
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/workflows",
        read,
        workflows,
    )
    .doc(
        "items",
        "The project's item types and their workflows (states and allowed transitions)",
    )
    .response::<Workflows>(200);
    reg.route(Method::GET, "/api/v1/projects/{slug}/items", read, list)
        .doc(
            "items",
            "Work items in backlog (rank) order, filtered; 400 item.invalid_query locates a bad `q`",
        )
        .query(
            "q",
            "A query in the item query language (docs/query-language.md), e.g. `type:bug assignee:me sort:-updated`",
        )
        .query("type", "Only items of this type (`story`, `bug`, ...)")
        .query("state", "Only items in this state (case-insensitive)")
        .query("assignee", "Only items assigned to this user name")
        .query("label", "Only items with this label")
        .query("limit", "Page size, 1 to 500 (default 50)")
        .query("cursor", "next_cursor of the previous page")
        .response::<Page<Item>>(200);
    reg.route(Method::POST, "/api/v1/projects/{slug}/items", write, create)
        .doc(
            "items",
            "Create a work item; it gets the next key (`DEMO-42`) and its workflow's first state",
        )
        .request::<NewItem>()
        .response::<Item>(201);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/items/{key}",
        read,
        get,
    )
    .doc("items", "A work item by key")
    .response::<Item>(200);
    reg.route(
        Method::PATCH,
        "/api/v1/projects/{slug}/items/{key}",
        write,
        patch,
    )
    .doc(
        "items",
        "Change a work item's fields (send `version` to detect conflicts; `null` clears a field)",
    )
    .request::<ItemPatch>()
    .response::<Item>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/items/{key}/transitions",
        write,
        transition,
    )
    .doc(
        "items",
        "Move a work item to another state; 422 item.invalid_transition lists the allowed ones",
    )
    .request::<TransitionBody>()
    .response::<Item>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/items/{key}/rank",
        write,
        rank,
    )
    .doc(
        "items",
        "Move a work item in the backlog right before or after another one (exactly one of `before`, `after`)",
    )
    .request::<RankMove>()
    .response::<Item>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/items/bulk",
        write,
        bulk,
    )
    .doc(
        "items",
        "Change several work items at once, all or nothing; per-item errors are in `details.items`",
    )
    .request::<BulkEdit>()
    .response::<Vec<Item>>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/items/{key}/comments",
        read,
        comments,
    )
    .doc("items", "Comments on a work item, oldest first")
    .query("limit", "Page size, 1 to 500 (default 50)")
    .query("cursor", "next_cursor of the previous page")
    .response::<Page<Comment>>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/items/{key}/comments",
        write,
        comment,
    )
    .doc(
        "items",
        "Comment on a work item (Markdown); you start watching it",
    )
    .request::<CommentBody>()
    .response::<Comment>(201);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/items/{key}/history",
        read,
        history,
    )
    .doc(
        "items",
        "A work item's events from the ledger, oldest first",
    )
    .response::<Vec<Event>>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/items/{key}/watchers",
        read,
        watchers,
    )
    .doc("items", "Who watches a work item")
    .response::<Watchers>(200);
    // Watching is a personal subscription, not a change to the item, so viewers may watch too.
    reg.route(
        Method::PUT,
        "/api/v1/projects/{slug}/items/{key}/watchers/me",
        read,
        watch,
    )
    .doc("items", "Watch a work item")
    .response::<Watchers>(200);
    reg.route(
        Method::DELETE,
        "/api/v1/projects/{slug}/items/{key}/watchers/me",
        read,
        unwatch,
    )
    .doc("items", "Stop watching a work item")
    .response::<Watchers>(200);
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    /// The target state's name, e.g. `In progress` (case-insensitive).
    pub to: String,
    /// The version you read; if the item changed since, the move is refused with 409.
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    /// Markdown, 1 to 65536 characters.
    pub body: String,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    q: Option<String>,
    #[serde(rename = "type")]
    item_type: Option<String>,
    state: Option<String>,
    assignee: Option<String>,
    label: Option<String>,
}

/// Empty query parameters (`?type=`) mean "no filter", as a cleared form field would.
fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

async fn workflows(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Workflows>> {
    Ok(Json(
        workflow::for_project(&st.store, ctx.project()?.id).await?,
    ))
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Item>>> {
    // Checks the limit; the cursor is text here (see ListPage), so it is passed on as is.
    let page = PageQuery {
        limit: q.limit,
        cursor: None,
    }
    .to_req()?;
    let filter = ItemFilter {
        item_type: given(q.item_type),
        state: given(q.state),
        assignee: given(q.assignee),
        label: given(q.label),
        ..ItemFilter::default()
    };
    let page = Search {
        query: given(q.q),
        me: ctx.principal.as_ref().map(|p| p.user.id),
        cursor: q.cursor,
        limit: page.limit,
    };
    Ok(Json(
        items::search(
            &mut st.store.read().await?,
            ctx.project()?.id,
            &filter,
            &page,
        )
        .await?,
    ))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<NewItem>,
) -> ApiResult<impl IntoResponse> {
    let item = items::create(&st.store, ctx.project()?, &ctx.actor(), body).await?;
    Ok((StatusCode::CREATED, Json(item)))
}

async fn get(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<Json<Item>> {
    let item = items::get(&mut st.store.read().await?, ctx.project()?.id, &key)
        .await?
        .ok_or_else(|| items::not_found(&key))?;
    Ok(Json(item))
}

async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    Json(body): Json<ItemPatch>,
) -> ApiResult<Json<Item>> {
    Ok(Json(
        items::update(&st.store, ctx.project()?, &ctx.actor(), &key, body).await?,
    ))
}

async fn transition(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    Json(body): Json<TransitionBody>,
) -> ApiResult<Json<Item>> {
    Ok(Json(
        items::transition(
            &st.store,
            ctx.project()?,
            &ctx.actor(),
            &key,
            &body.to,
            body.version,
        )
        .await?,
    ))
}

async fn rank(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    Json(body): Json<RankMove>,
) -> ApiResult<Json<Item>> {
    Ok(Json(
        items::move_rank(&st.store, ctx.project()?, &ctx.actor(), &key, body).await?,
    ))
}

async fn bulk(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<BulkEdit>,
) -> ApiResult<Json<Vec<Item>>> {
    Ok(Json(
        items::bulk_edit(&st.store, ctx.project()?, &ctx.actor(), body).await?,
    ))
}

async fn comments(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<Page<Comment>>> {
    Ok(Json(
        items::comments(
            &mut st.store.read().await?,
            ctx.project()?.id,
            &key,
            page.to_req()?,
        )
        .await?,
    ))
}

async fn comment(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    Json(body): Json<CommentBody>,
) -> ApiResult<impl IntoResponse> {
    let c = items::add_comment(&st.store, ctx.project()?, &ctx.actor(), &key, &body.body).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn history(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Event>>> {
    Ok(Json(
        items::history(&mut st.store.read().await?, ctx.project()?.id, &key).await?,
    ))
}

async fn watchers(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<Json<Watchers>> {
    let uid = ctx.principal.as_ref().map(|p| p.user.id).unwrap_or(-1);
    Ok(Json(
        items::watchers(&mut st.store.read().await?, ctx.project()?.id, uid, &key).await?,
    ))
}

async fn watch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<Json<Watchers>> {
    let uid = ctx.user()?.id;
    Ok(Json(
        items::set_watching(&st.store, ctx.project()?.id, uid, &key, true).await?,
    ))
}

async fn unwatch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<Json<Watchers>> {
    let uid = ctx.user()?.id;
    Ok(Json(
        items::set_watching(&st.store, ctx.project()?.id, uid, &key, false).await?,
    ))
}
