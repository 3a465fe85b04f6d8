//! The web UI: server-rendered HTML (askama), htmx for small interactions, one stylesheet.
//! Every page is registered through the same [`Registry`] as the API, so it declares its
//! permission and the guard enforces it (anonymous visitors are sent to the sign-in page).

pub mod account;
pub mod account_tokens;
pub mod admin;
pub mod artifacts;
pub mod boards;
pub mod build_vars;
pub mod change_requests;
pub mod code;
pub mod code_browse;
pub mod code_runs;
pub mod code_settings;
pub mod common;
pub mod cr_comments;
pub mod deploy;
pub mod intake;
pub mod members;
pub mod merge_rules;
pub mod notifications;
pub mod pipeline_logs;
pub mod pipeline_run;
pub mod pipelines;
pub mod plan;
pub mod plan_attachments;
pub mod plan_links;
pub mod plan_settings;
pub mod project_settings;
pub mod projects;
pub mod promotions;
pub mod release_settings;
pub mod releases;
pub mod runners;
pub mod test_results;
pub mod webhooks;

use std::collections::HashMap;

use askama::Template;
use axum::extract::{FromRequest, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use ouro_core::{ErrorCode, OuroError, Permission};
use ouro_store::accounts::User;

use crate::AppState;
use crate::auth::{Principal, SESSION_COOKIE};
use crate::extract::{Ctx, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    use Permission::*;
    reg.route(Method::GET, "/assets/{file}", Public, asset);
    reg.route(Method::GET, "/", Public, home);
    reg.route(Method::GET, "/setup", Public, account::setup_page);
    reg.route(Method::POST, "/setup", Public, account::setup_submit);
    reg.route(Method::GET, "/login", Public, account::login_page);
    reg.route(Method::POST, "/login", Public, account::login_submit);
    reg.route(Method::POST, "/logout", Authenticated, account::logout);
    account_tokens::register(reg);
    admin::register(reg);
    runners::register(reg);
    members::register(reg);
    notifications::register(reg);
    intake::register(reg);
    plan::register(reg);
    plan_links::register(reg);
    plan_settings::register(reg);
    plan_attachments::register(reg);
    boards::register(reg);
    code::register(reg);
    code_settings::register(reg);
    code_browse::register(reg);
    code_runs::register(reg);
    change_requests::register(reg);
    cr_comments::register(reg);
    merge_rules::register(reg);
    pipeline_run::register(reg);
    pipelines::register(reg);
    artifacts::register(reg);
    test_results::register(reg);
    promotions::register(reg);
    deploy::register(reg);
    releases::register(reg);
    release_settings::register(reg);
    pipeline_logs::register(reg);
    build_vars::register(reg);
    project_settings::register(reg);
    projects::register(reg);
    webhooks::register(reg);
}

/// What every page's frame needs: who is signed in, their CSRF token, a one-off message.
pub struct Chrome {
    pub user: Option<User>,
    pub csrf: String,
    pub flash: Option<String>,
    pub version: &'static str,
    /// Unread notifications of the signed-in user (the header's badge).
    pub unread: i64,
}

impl Chrome {
    pub fn of(ctx: &Ctx) -> Chrome {
        Chrome::from_principal(ctx.principal.as_ref())
    }

    pub fn from_principal(p: Option<&Principal>) -> Chrome {
        Chrome {
            user: p.map(|p| p.user.clone()),
            csrf: p.map(|p| p.csrf().to_string()).unwrap_or_default(),
            flash: None,
            version: env!("CARGO_PKG_VERSION"),
            unread: p.map(|p| p.unread).unwrap_or(0),
        }
    }

    pub fn with_flash(mut self, f: Option<String>) -> Chrome {
        self.flash = f;
        self
    }
}

/// Renders a template, or a plain 500 page if the template fails (it never should).
pub fn render(t: &impl Template) -> Response {
    render_status(StatusCode::OK, t)
}

pub fn render_status(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<h1>Internal error</h1>".to_string()),
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    title: &'a str,
    message: &'a str,
}

fn title_of(code: ErrorCode) -> &'static str {
    match code.http_status() {
        403 => "Not allowed",
        404 => "Not found",
        409 => "Conflict",
        413 => "Too large",
        429 => "Slow down",
        400 | 415 | 422 => "Check your input",
        _ => "Something went wrong",
    }
}

/// An error as a page, with the caller's frame when known.
pub fn error_page(_state: &AppState, p: Option<&Principal>, e: &OuroError) -> Response {
    let status = crate::auth::status_of(e.code);
    render_status(
        status,
        &ErrorPage {
            chrome: Chrome::from_principal(p),
            title: title_of(e.code),
            message: &e.message,
        },
    )
}

pub fn plain_error_page(e: &OuroError) -> Response {
    let status = crate::auth::status_of(e.code);
    render_status(
        status,
        &ErrorPage {
            chrome: Chrome::from_principal(None),
            title: title_of(e.code),
            message: &e.message,
        },
    )
}

/// A failed UI action: rendered as an error page.
pub struct UiError(pub OuroError, pub Option<Principal>);

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = crate::auth::status_of(self.0.code);
        render_status(
            status,
            &ErrorPage {
                chrome: Chrome::from_principal(self.1.as_ref()),
                title: title_of(self.0.code),
                message: &self.0.message,
            },
        )
    }
}

impl From<ouro_store::StoreError> for UiError {
    fn from(e: ouro_store::StoreError) -> Self {
        UiError(e.into(), None)
    }
}

impl From<crate::error::ApiError> for UiError {
    fn from(e: crate::error::ApiError) -> Self {
        UiError(e.0, None)
    }
}

pub type UiResult = Result<Response, UiError>;

/// A submitted form as name/value pairs; a malformed body is a 400 page, never a 500.
pub struct Form(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = UiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Form::<HashMap<String, String>>::from_request(req, state)
            .await
            .map(|f| Form(f.0))
            .map_err(|r| UiError(OuroError::new(ErrorCode::InvalidBody, r.body_text()), None))
    }
}

impl Form {
    pub fn get(&self, k: &str) -> String {
        self.0.get(k).cloned().unwrap_or_default()
    }
}

pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-decodes (and `+` as space); `None` when the result is not UTF-8.
pub fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Only same-site paths are followed after sign-in (no open redirects).
pub fn safe_next(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") {
        next.to_string()
    } else {
        "/projects".to_string()
    }
}

pub fn session_cookie(secret: &str, max_age_secs: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("ouro_session=; Path=/; Max-Age=0"))
}

pub fn redirect_with_cookie(to: &str, cookie: HeaderValue) -> Response {
    let mut res = Redirect::to(to).into_response();
    res.headers_mut().append(header::SET_COOKIE, cookie);
    res
}

async fn home(ctx: Ctx) -> Response {
    if ctx.principal.is_some() {
        Redirect::to("/projects").into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

const CSS: &str = include_str!("../../assets/ouro.css");
const HTMX: &str = include_str!("../../assets/htmx-2.0.11.min.js");
const BOARD_JS: &str = include_str!("../../assets/board.js");
const COPY_JS: &str = include_str!("../../assets/copy.js");
const JOBLOG_JS: &str = include_str!("../../assets/joblog.js");
/// The ANSI colour classes of job logs, generated once.
static ANSI_CSS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(ouro_build::logview::palette_css);

async fn asset(
    State(_): State<AppState>,
    crate::extract::Path(file): crate::extract::Path<String>,
) -> Response {
    let (body, ctype) = match file.as_str() {
        "ouro.css" => (CSS, "text/css; charset=utf-8"),
        "htmx-2.0.11.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "board.js" => (BOARD_JS, "text/javascript; charset=utf-8"),
        "copy.js" => (COPY_JS, "text/javascript; charset=utf-8"),
        "joblog.js" => (JOBLOG_JS, "text/javascript; charset=utf-8"),
        "ansi.css" => (ANSI_CSS.as_str(), "text/css; charset=utf-8"),
        _ => {
            return plain_error_page(&OuroError::new(
                ErrorCode::RouteNotFound,
                format!("no asset {file:?}"),
            ));
        }
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

#[derive(serde::Deserialize, Default)]
pub struct NextQuery {
    pub next: Option<String>,
    pub token: Option<String>,
}

pub type NextQ = Query<NextQuery>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_coding() {
        assert_eq!(url_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(url_decode("%FF"), None);
        assert_eq!(url_decode("%"), Some("%".into()));
        assert_eq!(url_encode("/p?x=1"), "/p%3Fx%3D1");
        assert_eq!(safe_next("//evil.example"), "/projects");
        assert_eq!(safe_next("/projects/demo"), "/projects/demo");
    }
}
