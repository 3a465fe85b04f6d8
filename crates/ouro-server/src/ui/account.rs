//! First-run setup, sign in and sign out.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_store::accounts;

use crate::AppState;
use crate::auth::Via;
use crate::extract::Ctx;
use crate::ui::common::Flash;
use crate::ui::{Chrome, Form, NextQ, UiResult, render, render_status};

#[derive(Default)]
pub struct FieldErrors {
    pub name: Option<String>,
    pub password: Option<String>,
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    chrome: Chrome,
    token: String,
    name: String,
    errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    name: String,
    error: Option<String>,
}

fn setup_token_valid(st: &AppState, token: &str) -> bool {
    let guard = st.setup_token.lock().unwrap_or_else(|p| p.into_inner());
    guard
        .as_deref()
        .is_some_and(|h| h == ouro_store::crypto::token_hash(token))
}

/// The link also dies when a user was created some other way (the CLI) after the server started.
async fn users_exist(st: &AppState) -> Result<bool, crate::ui::UiError> {
    let n = accounts::count_users(&mut st.store.read().await?).await?;
    if n > 0 {
        *st.setup_token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    Ok(n > 0)
}

fn setup_gone() -> crate::ui::UiError {
    crate::ui::UiError(
        OuroError::new(
            ErrorCode::SetupInvalid,
            "this setup link is not valid or was already used; sign in instead",
        ),
        None,
    )
}

pub async fn setup_page(State(st): State<AppState>, ctx: Ctx, q: NextQ) -> UiResult {
    let token = q.0.token.unwrap_or_default();
    if !setup_token_valid(&st, &token) || users_exist(&st).await? {
        return Err(setup_gone());
    }
    Ok(render(&SetupPage {
        chrome: Chrome::of(&ctx),
        token,
        name: String::new(),
        errors: FieldErrors::default(),
    }))
}

pub async fn setup_submit(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let token = form.get("token");
    let name = form.get("name").trim().to_string();
    let password = form.get("password");
    if users_exist(&st).await? {
        return Err(setup_gone());
    }
    // Take the token first so two racing submissions cannot both create an admin.
    {
        let mut guard = st.setup_token.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_deref() != Some(ouro_store::crypto::token_hash(&token).as_str()) {
            return Err(setup_gone());
        }
        *guard = None;
    }
    let restore = |st: &AppState| {
        *st.setup_token.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(ouro_store::crypto::token_hash(&token));
    };
    let user =
        match accounts::create_user(&st.store, &Actor::System("setup"), &name, &password, true)
            .await
        {
            Ok(u) => u,
            Err(e) => {
                restore(&st);
                let e: OuroError = e.into();
                let mut errors = FieldErrors::default();
                match e.code {
                    ErrorCode::InvalidPassword => errors.password = Some(e.message),
                    ErrorCode::InvalidUserName | ErrorCode::UserNameTaken => {
                        errors.name = Some(e.message)
                    }
                    _ => return Err(crate::ui::UiError(e, None)),
                }
                return Ok(render_status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &SetupPage {
                        chrome: Chrome::of(&ctx),
                        token: token.clone(),
                        name,
                        errors,
                    },
                ));
            }
        };
    let (secret, _) = accounts::create_session(&st.store, &user, &ctx.client_ip).await?;
    Ok(crate::ui::redirect_with_cookie(
        "/projects",
        crate::ui::session_cookie(&secret, accounts::SESSION_TTL_MS / 1000),
    ))
}

pub async fn login_page(ctx: Ctx, q: NextQ, flash: Flash) -> Response {
    if ctx.principal.is_some() {
        return Redirect::to(&crate::ui::safe_next(&q.0.next.unwrap_or_default())).into_response();
    }
    flash.finish(render(&LoginPage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        next: q.0.next.unwrap_or_else(|| "/projects".into()),
        name: String::new(),
        error: None,
    }))
}

pub async fn login_submit(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let name = form.get("name").trim().to_string();
    let password = form.get("password");
    let next = crate::ui::safe_next(&form.get("next"));
    let retry = |status: StatusCode, msg: String| {
        render_status(
            status,
            &LoginPage {
                chrome: Chrome::of(&ctx),
                next: next.clone(),
                name: name.clone(),
                error: Some(msg),
            },
        )
    };
    if let Err(secs) = st.throttle.check(&name, &ctx.client_ip) {
        let _ =
            accounts::record_failed_sign_in(&st.store, &name, &ctx.client_ip, "throttled").await;
        return Ok(retry(
            StatusCode::TOO_MANY_REQUESTS,
            crate::auth::throttled(secs).0.message,
        ));
    }
    match accounts::check_password(&st.store, &name, &password).await? {
        Some(user) => {
            st.throttle.succeed(&name);
            let (secret, _) = accounts::create_session(&st.store, &user, &ctx.client_ip).await?;
            Ok(crate::ui::redirect_with_cookie(
                &next,
                crate::ui::session_cookie(&secret, accounts::SESSION_TTL_MS / 1000),
            ))
        }
        None => {
            st.throttle.fail(&name, &ctx.client_ip);
            accounts::record_failed_sign_in(&st.store, &name, &ctx.client_ip, "bad credentials")
                .await?;
            Ok(retry(
                StatusCode::UNAUTHORIZED,
                "The user name or password is not right.".into(),
            ))
        }
    }
}

pub async fn logout(State(st): State<AppState>, ctx: Ctx) -> UiResult {
    if let Some(p) = &ctx.principal
        && let Via::Session { secret, .. } = &p.via
    {
        accounts::delete_session(&st.store, secret, &p.user).await?;
    }
    let res = crate::ui::redirect_with_cookie("/login", crate::ui::session_cookie("", 0));
    Ok(crate::ui::common::with_flash(res, "You are signed out."))
}
