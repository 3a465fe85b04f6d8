//! Projects and members.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_store::Page;
use ouro_store::projects::{self, Member, Project, ProjectPatch, Visibility};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::AppState;
use crate::api::PageQuery;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    use Permission::{Authenticated, Public};
    reg.route(Method::GET, "/api/v1/projects", Public, list)
        .doc(
            "projects",
            "Projects you can see (public ones when anonymous)",
        )
        .query("limit", "Page size, 1 to 500 (default 50)")
        .query("cursor", "next_cursor of the previous page")
        .query("q", "Only projects whose slug or name contains this text")
        .response::<Page<Project>>(200);
    reg.route(Method::POST, "/api/v1/projects", Authenticated, create)
        .doc("projects", "Create a project; you become its owner")
        .request::<CreateProject>()
        .response::<Project>(201);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}",
        InProject(Role::Viewer),
        get,
    )
    .doc("projects", "A project")
    .response::<Project>(200);
    reg.route(
        Method::PATCH,
        "/api/v1/projects/{slug}",
        InProject(Role::Maintainer),
        patch,
    )
    .doc(
        "projects",
        "Change a project's name, description or visibility (send `version` to detect conflicts)",
    )
    .request::<PatchProject>()
    .response::<Project>(200);
    reg.route(
        Method::DELETE,
        "/api/v1/projects/{slug}",
        InProject(Role::Owner),
        delete,
    )
    .doc("projects", "Delete a project and everything in it");
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/members",
        InProject(Role::Viewer),
        members,
    )
    .doc("members", "Members of a project and their roles")
    .response::<Vec<Member>>(200);
    reg.route(
        Method::PUT,
        "/api/v1/projects/{slug}/members/{user}",
        InProject(Role::Maintainer),
        put_member,
    )
    .doc(
        "members",
        "Add a member or change a member's role (only owners grant or change owner)",
    )
    .request::<SetMember>()
    .response::<Member>(200);
    reg.route(
        Method::DELETE,
        "/api/v1/projects/{slug}/members/{user}",
        InProject(Role::Maintainer),
        delete_member,
    )
    .doc(
        "members",
        "Remove a member (only owners remove owners; the last owner stays)",
    );
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// 1 to 40 characters of a-z, 0-9 and '-'; used in URLs; cannot change later.
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Defaults to private.
    #[serde(default)]
    pub visibility: Option<Visibility>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchProject {
    pub name: Option<String>,
    pub description: Option<String>,
    pub visibility: Option<Visibility>,
    /// The version you read; if the project changed since, the update is refused with 409.
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMember {
    pub role: Role,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    q: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Project>>> {
    let user = ctx.principal.as_ref().map(|p| &p.user);
    let page = projects::list_visible(
        &mut st.store.read().await?,
        user,
        PageQuery {
            limit: q.limit,
            cursor: q.cursor,
        }
        .to_req()?,
        q.q.as_deref(),
    )
    .await?;
    Ok(Json(page))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<CreateProject>,
) -> ApiResult<impl IntoResponse> {
    let user = ctx.user()?;
    let p = projects::create(
        &st.store,
        user,
        &body.slug,
        &body.name,
        &body.description,
        body.visibility.unwrap_or(Visibility::Private),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

async fn get(ctx: Ctx) -> ApiResult<Json<Project>> {
    Ok(Json(ctx.project()?.clone()))
}

async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<PatchProject>,
) -> ApiResult<Json<Project>> {
    let p = ctx.project()?;
    let patch = ProjectPatch {
        name: body.name,
        description: body.description,
        visibility: body.visibility,
    };
    Ok(Json(
        projects::update(&st.store, &ctx.actor(), &p.slug, body.version, patch).await?,
    ))
}

async fn delete(State(st): State<AppState>, ctx: Ctx) -> ApiResult<StatusCode> {
    projects::delete(&st.store, &ctx.actor(), &ctx.project()?.slug).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn members(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Vec<Member>>> {
    Ok(Json(
        projects::members(&mut st.store.read().await?, ctx.project()?.id).await?,
    ))
}

/// Owners alone may hand out or take away ownership.
pub(crate) fn check_owner_rule(
    ctx: &Ctx,
    old: Option<Role>,
    new: Option<Role>,
) -> Result<(), ApiError> {
    let touches_owner = old == Some(Role::Owner) || new == Some(Role::Owner);
    if touches_owner && ctx.role() != Some(Role::Owner) {
        return Err(ApiError(OuroError::new(
            ErrorCode::Forbidden,
            "only owners can grant, change or remove the owner role",
        )));
    }
    Ok(())
}

async fn current_role(
    st: &AppState,
    project_id: i64,
    user: &str,
) -> Result<Option<Role>, ApiError> {
    let list = projects::members(&mut st.store.read().await?, project_id).await?;
    Ok(list.into_iter().find(|m| m.user == user).map(|m| m.role))
}

async fn put_member(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, user)): Path<(String, String)>,
    Json(body): Json<SetMember>,
) -> ApiResult<Json<Member>> {
    let p = ctx.project()?;
    check_owner_rule(&ctx, current_role(&st, p.id, &user).await?, Some(body.role))?;
    Ok(Json(
        projects::set_member(&st.store, &ctx.actor(), p, &user, body.role).await?,
    ))
}

async fn delete_member(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let p = ctx.project()?;
    check_owner_rule(&ctx, current_role(&st, p.id, &user).await?, None)?;
    projects::remove_member(&st.store, &ctx.actor(), p, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}
