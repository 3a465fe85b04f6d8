//! Users (admin) and your own account and tokens.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::Permission;
use ouro_store::Page;
use ouro_store::accounts::{self, ApiToken, User};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::PageQuery;
use crate::error::{ApiResult, err};
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;
use ouro_core::ErrorCode;

pub fn register(reg: &mut Registry) {
    use Permission::*;
    reg.route(Method::GET, "/api/v1/user", Authenticated, me)
        .doc("users", "The signed-in user")
        .response::<User>(200);
    reg.route(
        Method::GET,
        "/api/v1/user/tokens",
        Authenticated,
        list_tokens,
    )
    .doc("tokens", "Your personal API tokens (never their secrets)")
    .response::<Vec<ApiToken>>(200);
    reg.route(
        Method::POST,
        "/api/v1/user/tokens",
        Authenticated,
        create_token,
    )
    .doc(
        "tokens",
        "Create a personal API token; the secret is in the response, once",
    )
    .request::<CreateToken>()
    .response::<CreatedToken>(201);
    reg.route(
        Method::DELETE,
        "/api/v1/user/tokens/{id}",
        Authenticated,
        revoke_token,
    )
    .doc("tokens", "Revoke one of your tokens");
    reg.route(Method::GET, "/api/v1/users", Admin, list_users)
        .doc("users", "All users (instance admins)")
        .query("limit", "Page size, 1 to 500 (default 50)")
        .query("cursor", "next_cursor of the previous page")
        .response::<Page<User>>(200);
    reg.route(Method::POST, "/api/v1/users", Admin, create_user)
        .doc("users", "Create a user (instance admins)")
        .request::<CreateUser>()
        .response::<User>(201);
    reg.route(Method::PATCH, "/api/v1/users/{name}", Admin, patch_user)
        .doc(
            "users",
            "Grant or take away instance admin (instance admins)",
        )
        .request::<PatchUser>()
        .response::<User>(200);
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// `api` (default: everything you can do) or `read_api` (reads only).
    pub scopes: Option<Vec<String>>,
    /// Days until the token expires; no expiry when absent.
    pub expires_in_days: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CreatedToken {
    pub token: ApiToken,
    /// The secret to send as `Authorization: Bearer ...`. It is shown only this once.
    pub secret: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub is_admin: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    pub is_admin: bool,
}

async fn me(ctx: Ctx) -> ApiResult<Json<User>> {
    Ok(Json(ctx.user()?.clone()))
}

async fn list_tokens(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Vec<ApiToken>>> {
    Ok(Json(
        accounts::list_tokens(&mut st.store.read().await?, ctx.user()?.id).await?,
    ))
}

async fn create_token(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateToken>,
) -> ApiResult<impl IntoResponse> {
    let user = ctx.user()?;
    let scopes = b.scopes.unwrap_or_else(|| vec!["api".into()]);
    let (token, secret) = accounts::create_token(
        &st.store,
        &ctx.actor(),
        user,
        &b.name,
        &scopes,
        b.expires_in_days,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
}

async fn revoke_token(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: i64 = id
        .parse()
        .map_err(|_| err(ErrorCode::TokenNotFound, format!("no token {id:?}")))?;
    accounts::revoke_token(&st.store, &ctx.actor(), ctx.user()?, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_users(
    State(st): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<User>>> {
    Ok(Json(
        accounts::list_users(&mut st.store.read().await?, q.to_req()?).await?,
    ))
}

async fn create_user(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateUser>,
) -> ApiResult<impl IntoResponse> {
    let u =
        accounts::create_user(&st.store, &ctx.actor(), &b.name, &b.password, b.is_admin).await?;
    Ok((StatusCode::CREATED, Json(u)))
}

async fn patch_user(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
    Json(b): Json<PatchUser>,
) -> ApiResult<Json<User>> {
    if ctx.user()?.name == name && !b.is_admin {
        return Err(err(
            ErrorCode::ValidationFailed,
            "you cannot take away your own admin rights; ask another admin",
        ));
    }
    Ok(Json(
        accounts::set_admin(&st.store, &ctx.actor(), &name, b.is_admin).await?,
    ))
}
