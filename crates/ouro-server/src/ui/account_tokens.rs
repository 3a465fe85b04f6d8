//! Personal API tokens: list, create (the secret is shown once), revoke.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use ouro_core::{ErrorCode, OuroError, Permission};
use ouro_store::accounts::{self, ApiToken};

use crate::AppState;
use crate::extract::Ctx;
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, field_of, redirect_with_flash};
use crate::ui::{Chrome, Form, UiError, UiResult, render_status};

pub fn register(reg: &mut Registry) {
    use Permission::Authenticated;
    reg.route(Method::GET, "/account/tokens", Authenticated, page);
    reg.route(Method::POST, "/account/tokens", Authenticated, create);
    reg.route(
        Method::POST,
        "/account/tokens/revoke",
        Authenticated,
        revoke,
    );
}

pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub scopes: String,
    pub created: When,
    pub expires: Option<When>,
    pub last_used: Option<When>,
    pub revoked: Option<When>,
    /// "active", "expired" or "revoked".
    pub state: &'static str,
}

impl TokenRow {
    fn of(t: ApiToken, now: i64) -> TokenRow {
        let state = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        TokenRow {
            id: t.id,
            name: t.name,
            scopes: t.scopes.join(", "),
            created: When::of(t.created_at),
            expires: t.expires_at.map(When::of),
            last_used: t.last_used_at.map(When::of),
            revoked: t.revoked_at.map(When::of),
            state,
        }
    }
}

/// A token just created: its secret is in this one response and nowhere else.
pub struct NewToken {
    pub name: String,
    pub scopes: String,
    pub secret: String,
}

#[derive(Default)]
pub struct TokenErrors {
    pub name: Option<String>,
    pub scope: Option<String>,
    pub expires: Option<String>,
    pub list: Option<String>,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<TokenRow>,
    created: Option<NewToken>,
    base_url: String,
    name: String,
    scope: String,
    expires_days: String,
    errors: TokenErrors,
}

async fn build(st: &AppState, ctx: &Ctx) -> Result<TokensPage, UiError> {
    let user = ctx.user()?;
    let now = ouro_core::time::now_ms();
    let tokens = accounts::list_tokens(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        user.id,
    )
    .await
    .map_err(|e| fail(ctx, e))?
    .into_iter()
    .map(|t| TokenRow::of(t, now))
    .collect();
    Ok(TokensPage {
        chrome: Chrome::of(ctx),
        tokens,
        created: None,
        base_url: st.base_url.clone(),
        name: String::new(),
        scope: "api".into(),
        expires_days: String::new(),
        errors: TokenErrors::default(),
    })
}

async fn page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let mut p = build(&st, &ctx).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

async fn create(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let user = ctx.user()?;
    let name = form.get("name").trim().to_string();
    let scope = form.get("scope");
    let expires_days = form.get("expires_days").trim().to_string();
    let mut errors = TokenErrors::default();
    let expires = if expires_days.is_empty() {
        None
    } else {
        match expires_days.parse::<i64>() {
            Ok(d) => Some(d),
            Err(_) => {
                errors.expires = Some(
                    "Enter a whole number of days (1 to 3650), or leave it empty for no expiry."
                        .into(),
                );
                None
            }
        }
    };
    if errors.expires.is_none() {
        match accounts::create_token(
            &st.store,
            &ctx.actor(),
            user,
            &name,
            std::slice::from_ref(&scope),
            expires,
        )
        .await
        {
            Ok((token, secret)) => {
                let mut p = build(&st, &ctx).await?;
                p.created = Some(NewToken {
                    name: token.name,
                    scopes: token.scopes.join(", "),
                    secret,
                });
                p.chrome = p.chrome.with_flash(Some(
                    "Token created. Copy it now: it is not shown again.".into(),
                ));
                let mut res = render_status(StatusCode::CREATED, &p);
                // The secret must not linger in caches or the back/forward cache.
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return Ok(res);
            }
            Err(e) => {
                let e: OuroError = e.into();
                match (e.code, field_of(&e)) {
                    (ErrorCode::ValidationFailed, Some("name")) => errors.name = Some(e.message),
                    (ErrorCode::ValidationFailed, Some("scopes")) => {
                        errors.scope =
                            Some("Choose api (read and write) or read_api (read only).".into())
                    }
                    (ErrorCode::ValidationFailed, Some("expires_in_days")) => {
                        errors.expires = Some(e.message)
                    }
                    _ => return Err(fail(&ctx, e)),
                }
            }
        }
    }
    let mut p = build(&st, &ctx).await?;
    p.name = name;
    p.scope = scope;
    p.expires_days = expires_days;
    p.errors = errors;
    Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &p))
}

async fn revoke(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let user = ctx.user()?;
    let outcome = match form.get("id").trim().parse::<i64>() {
        Ok(id) => accounts::revoke_token(&st.store, &ctx.actor(), user, id)
            .await
            .map_err(OuroError::from),
        Err(_) => Err(OuroError::new(ErrorCode::TokenNotFound, "no such token")),
    };
    match outcome {
        Ok(()) => Ok(redirect_with_flash(
            "/account/tokens",
            "Token revoked. Programs using it can no longer sign in with it.",
        )),
        Err(e) if e.code == ErrorCode::TokenNotFound => {
            let mut p = build(&st, &ctx).await?;
            p.errors.list = Some("That token does not exist or was already revoked.".into());
            Ok(render_status(StatusCode::NOT_FOUND, &p))
        }
        Err(e) => Err(fail(&ctx, e)),
    }
}
