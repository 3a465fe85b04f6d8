//! Instance administration: the users of this Ouro, creating accounts, granting admin.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_core::{ErrorCode, OuroError, Permission};
use ouro_store::PageReq;
use ouro_store::accounts;

use crate::AppState;
use crate::extract::{Ctx, Query};
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, redirect_with_flash};
use crate::ui::{Chrome, Form, UiError, UiResult, render, render_status};

pub fn register(reg: &mut Registry) {
    use Permission::Admin;
    reg.route(Method::GET, "/admin/users", Admin, page);
    reg.route(Method::POST, "/admin/users", Admin, create);
    reg.route(Method::POST, "/admin/users/admin", Admin, set_admin);
}

pub struct UserRow {
    pub name: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created: When,
    pub is_you: bool,
}

#[derive(Default)]
pub struct UserErrors {
    pub name: Option<String>,
    pub password: Option<String>,
    pub list: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    /// Cursor of the next page when there are more users than fit on one.
    next: Option<String>,
    name: String,
    is_admin: bool,
    errors: UserErrors,
}

#[derive(serde::Deserialize, Default)]
pub struct UsersQuery {
    pub after: Option<String>,
}

async fn build(st: &AppState, ctx: &Ctx, after: i64) -> Result<UsersPage, UiError> {
    let me = ctx.user()?.id;
    let page = accounts::list_users(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        PageReq::new(after, Some(200)),
    )
    .await
    .map_err(|e| fail(ctx, e))?;
    let users = page
        .items
        .into_iter()
        .map(|u| UserRow {
            is_you: u.id == me,
            created: When::of(u.created_at),
            is_admin: u.is_admin,
            disabled: u.disabled,
            name: u.name,
        })
        .collect();
    Ok(UsersPage {
        chrome: Chrome::of(ctx),
        users,
        next: page.next_cursor,
        name: String::new(),
        is_admin: false,
        errors: UserErrors::default(),
    })
}

async fn page(
    State(st): State<AppState>,
    ctx: Ctx,
    flash: Flash,
    Query(q): Query<UsersQuery>,
) -> UiResult {
    // A mangled cursor starts from the beginning rather than failing.
    let after = q.after.and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut p = build(&st, &ctx, after).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render(&p)))
}

async fn create(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let name = form.get("name").trim().to_string();
    let password = form.get("password");
    let is_admin = !form.get("is_admin").is_empty();
    match accounts::create_user(&st.store, &ctx.actor(), &name, &password, is_admin).await {
        Ok(u) => {
            let what = if u.is_admin {
                "administrator account"
            } else {
                "account"
            };
            let msg = format!(
                "Created the {what} {}. Give them the password; they can sign in now, and a maintainer can add them to projects.",
                u.name
            );
            Ok(redirect_with_flash("/admin/users", &msg))
        }
        Err(e) => {
            let e: OuroError = e.into();
            let mut errors = UserErrors::default();
            let status = crate::auth::status_of(e.code);
            match e.code {
                ErrorCode::InvalidUserName | ErrorCode::UserNameTaken => {
                    errors.name = Some(e.message)
                }
                ErrorCode::InvalidPassword => errors.password = Some(e.message),
                _ => return Err(fail(&ctx, e)),
            }
            let mut p = build(&st, &ctx, 0).await?;
            p.name = name;
            p.is_admin = is_admin;
            p.errors = errors;
            Ok(render_status(status, &p))
        }
    }
}

async fn set_admin(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let name = form.get("name");
    let grant = form.get("admin") == "true";
    if ctx.user()?.name == name && !grant {
        let msg =
            "You cannot take away your own admin rights; ask another administrator.".to_string();
        return refuse(&st, &ctx, StatusCode::UNPROCESSABLE_ENTITY, msg).await;
    }
    match accounts::set_admin(&st.store, &ctx.actor(), &name, grant).await {
        Ok(u) if u.is_admin => Ok(redirect_with_flash(
            "/admin/users",
            &format!("{} is now an administrator.", u.name),
        )),
        Ok(u) => Ok(redirect_with_flash(
            "/admin/users",
            &format!("{} is no longer an administrator.", u.name),
        )),
        Err(e) => {
            let e: OuroError = e.into();
            if e.code == ErrorCode::UserNotFound {
                return refuse(&st, &ctx, StatusCode::NOT_FOUND, e.message).await;
            }
            Err(fail(&ctx, e))
        }
    }
}

/// The users page again with a refused change shown above the list.
async fn refuse(st: &AppState, ctx: &Ctx, status: StatusCode, msg: String) -> UiResult {
    let mut p = build(st, ctx, 0).await?;
    p.errors.list = Some(msg);
    Ok(render_status(status, &p))
}
