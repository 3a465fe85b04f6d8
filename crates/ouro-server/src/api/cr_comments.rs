//! Code: comments and threads on change requests (on the whole change request or on a diff
//! line), replies, edits, deletion and resolving. Thin: the rules live in `ouro_code::cr_comments`.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_code::cr;
use ouro_code::cr_comments::{self, Comment, CommentEdit, NewComment, Thread};
use ouro_code::repos::{self, Repo};
use ouro_core::{Permission, Role};

use crate::AppState;
use crate::api::repos::repos_root;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let read = Permission::Project(Role::Viewer);
    let write = Permission::Project(Role::Developer);
    let base = "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}/comments";
    reg.route(Method::GET, base, read, list)
        .doc(
            "code",
            "A change request's comment threads, oldest first, each with its comments, anchor (null for the whole change request), resolved and outdated",
        )
        .response::<Vec<Thread>>(200);
    reg.route(Method::POST, base, write, add)
        .doc(
            "code",
            "Comment: `{\"body\"}` on the change request, with `path`, `side` (old|new) and `line` on a line of its diff (422 when the line is not in the diff), or `reply_to` (a comment id) to reply in its thread → 201 with the comment and its `thread_id`",
        )
        .request::<NewComment>()
        .response::<Comment>(201);
    let one = "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}/comments/{id}";
    reg.route(Method::PATCH, one, write, edit)
        .doc("code", "Edit a comment's body (its author only)")
        .request::<CommentEdit>()
        .response::<Comment>(200);
    reg.route(Method::DELETE, one, write, remove).doc(
        "code",
        "Delete a comment (its author, or a maintainer) → 204; a thread without comments is deleted with it",
    );
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}/threads/{id}/resolve",
        write,
        resolve,
    )
    .doc("code", "Resolve a comment thread")
    .response::<Thread>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}/threads/{id}/unresolve",
        write,
        unresolve,
    )
    .doc("code", "Unresolve a comment thread")
    .response::<Thread>(200);
}

async fn repo_of(st: &AppState, ctx: &Ctx, name: &str) -> ApiResult<Repo> {
    let p = ctx.project()?;
    Ok(repos::get(&mut st.store.read().await?, p.id, name).await?)
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
) -> ApiResult<Json<Vec<Thread>>> {
    let repo = repo_of(&st, &ctx, &name).await?;
    let c = cr::get(&mut st.store.read().await?, repo.id, number).await?;
    Ok(Json(
        cr_comments::threads_checked(&st.store, &repos_root(&st), &repo, &c).await?,
    ))
}

async fn add(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    Json(body): Json<NewComment>,
) -> ApiResult<impl IntoResponse> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    let c = cr_comments::add(
        &st.store,
        &repos_root(&st),
        &repo,
        &p.slug,
        &ctx.actor(),
        number,
        &body,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn edit(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number, id)): Path<(String, String, i64, i64)>,
    Json(body): Json<CommentEdit>,
) -> ApiResult<Json<Comment>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        cr_comments::edit(&st.store, &repo, &p.slug, &ctx.actor(), number, id, &body).await?,
    ))
}

async fn remove(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number, id)): Path<(String, String, i64, i64)>,
) -> ApiResult<StatusCode> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    let moderator = ctx.role().is_some_and(|r| r >= Role::Maintainer);
    cr_comments::delete(
        &st.store,
        &repo,
        &p.slug,
        &ctx.actor(),
        number,
        id,
        moderator,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resolve(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number, id)): Path<(String, String, i64, i64)>,
) -> ApiResult<Json<Thread>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        cr_comments::set_resolved(&st.store, &repo, &p.slug, &ctx.actor(), number, id, true)
            .await?,
    ))
}

async fn unresolve(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number, id)): Path<(String, String, i64, i64)>,
) -> ApiResult<Json<Thread>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        cr_comments::set_resolved(&st.store, &repo, &p.slug, &ctx.actor(), number, id, false)
            .await?,
    ))
}
