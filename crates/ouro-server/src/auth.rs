//! Who is calling, and may they? Every route declares a [`Permission`]; [`guard`] enforces it
//! before the handler runs and hands the handler a [`Ctx`]. Credentials: `Authorization: Bearer
//! TOKEN` (API) or the session cookie (web UI). State-changing requests made with the cookie must
//! carry the session's CSRF token (form field `_csrf` or header `X-CSRF-Token`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use ouro_core::{ErrorCode, OuroError, Permission};
use ouro_store::accounts::{self, User};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Ctx;

pub const SESSION_COOKIE: &str = "ouro_session";

/// How the caller proved who they are.
#[derive(Clone, Debug)]
pub enum Via {
    Token { scopes: Vec<String> },
    Session { secret: String, csrf: String },
}

#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    pub via: Via,
    /// Unread notifications, counted for browser sessions only (the page header shows it);
    /// 0 for tokens, which have the API for that.
    pub unread: i64,
}

impl Principal {
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf, .. } => csrf,
            Via::Token { .. } => "",
        }
    }
}

pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Resolves credentials. `Err` for credentials that were sent but are not valid: a wrong token
/// is an error even on a public route, so a client learns its token is bad.
///
/// `page` says the request is for a web page (not the API or an asset): only then is the
/// session's unread notification count read, for the page header. `basic` accepts HTTP Basic
/// (user name + API token as the password), which only git clients use (`/git/...`).
pub async fn resolve(
    state: &AppState,
    headers: &HeaderMap,
    page: bool,
    basic: bool,
) -> Result<Option<Principal>, ApiError> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let auth = auth.to_str().unwrap_or("");
        if let Some(encoded) = auth
            .strip_prefix("Basic ")
            .or_else(|| auth.strip_prefix("basic "))
            .filter(|_| basic)
        {
            return basic_auth(state, encoded.trim()).await.map(Some);
        }
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .map(str::trim);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(unauthorized("use Authorization: Bearer TOKEN"));
        };
        if token.starts_with(crate::api::runners::RUNNER_TOKEN_PREFIX) {
            // A runner, not a user: the runner protocol's handlers check it.
            return Ok(None);
        }
        return match accounts::authenticate_token(&state.store, token).await? {
            Some((user, scopes)) => Ok(Some(Principal {
                user,
                via: Via::Token { scopes },
                unread: 0,
            })),
            None => Err(unauthorized("the token is unknown, expired or revoked")),
        };
    }
    if let Some(secret) = cookie_value(headers, SESSION_COOKIE) {
        // A stale cookie is not an error: the browser is simply signed out.
        if let Some(s) = accounts::session(&state.store, &secret).await? {
            let unread = if page {
                ouro_plan::notifications::unread_count(&mut state.store.read().await?, s.user.id)
                    .await?
            } else {
                0
            };
            return Ok(Some(Principal {
                unread,
                user: s.user,
                via: Via::Session {
                    secret,
                    csrf: s.csrf,
                },
            }));
        }
    }
    Ok(None)
}

/// HTTP Basic for git clients: the user name and an API token as the password. The name must
/// be the token owner's.
async fn basic_auth(state: &AppState, encoded: &str) -> Result<Principal, ApiError> {
    use base64::Engine;
    let bad = || unauthorized("use your user name and an API token as the password");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (name, token) = raw.split_once(':').ok_or_else(bad)?;
    if token.is_empty() {
        return Err(bad());
    }
    match accounts::authenticate_token(&state.store, token).await? {
        Some((user, scopes)) if user.name.eq_ignore_ascii_case(name) => Ok(Principal {
            user,
            via: Via::Token { scopes },
            unread: 0,
        }),
        _ => Err(bad()),
    }
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError(OuroError::new(ErrorCode::AuthRequired, msg))
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// True for paths answered with JSON (errors too); everything else is the web UI.
pub fn is_api_path(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics" || path == "/healthz" || path == "/readyz"
}

/// Enforces `perm` for one route.
pub async fn guard(state: AppState, perm: Permission, req: Request, next: Next) -> Response {
    let api = is_api_path(req.uri().path());
    let git = crate::git_http::is_git_path(req.uri().path());
    match check(&state, perm, req).await {
        Ok(req) => next.run(req).await,
        Err((ApiError(e), _)) if git => crate::git_http::refusal(&e),
        Err((e, _)) if api => e.into_response(),
        Err(e) => ui_refusal(&state, e, api),
    }
}

fn ui_refusal(state: &AppState, e: (ApiError, String), _api: bool) -> Response {
    let (ApiError(err), path) = e;
    if err.code == ErrorCode::AuthRequired {
        let next = crate::ui::url_encode(&path);
        return Redirect::to(&format!("/login?next={next}")).into_response();
    }
    crate::ui::error_page(state, None, &err)
}

async fn check(
    state: &AppState,
    perm: Permission,
    req: Request,
) -> Result<Request, (ApiError, String)> {
    let path = req.uri().path().to_string();
    let fail = |e: ApiError| (e, path.clone());
    let page = !path.starts_with("/api/")
        && !path.starts_with("/assets/")
        && !crate::git_http::is_git_path(&path);
    let git = crate::git_http::is_git_path(&path);
    let job_auth = if git {
        let (headers, method) = (req.headers().clone(), req.method().clone());
        job_token_access(state, &headers, &method, &path)
            .await
            .map_err(fail)?
    } else {
        None
    };
    if let Some(ctx) = job_auth {
        let mut req = req;
        req.extensions_mut().insert(ctx);
        return Ok(req);
    }
    if let Some(token) = bearer(req.headers())
        && token.starts_with(ouro_build::runner::JOB_TOKEN_PREFIX)
    {
        let (ctx, job) = job_api_access(state, perm, req.method(), &path, &token)
            .await
            .map_err(fail)?;
        let mut req = req;
        req.extensions_mut().insert(ctx);
        req.extensions_mut().insert(job);
        return Ok(req);
    }
    let principal = resolve(state, req.headers(), page, git)
        .await
        .map_err(fail)?;
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());

    // A read-only token may not change anything, whatever the route.
    if let Some(Principal {
        via: Via::Token { scopes },
        ..
    }) = &principal
        && !is_safe(req.method())
        && !crate::git_http::is_git_read_post(&path)
        && !scopes.iter().any(|s| s == "api")
    {
        return Err(fail(ApiError(OuroError::new(
            ErrorCode::InsufficientScope,
            "this token has the read_api scope; create a token with the api scope to make changes",
        ))));
    }

    let mut ctx = Ctx {
        principal: principal.clone(),
        project: None,
        client_ip,
    };
    match perm {
        Permission::Public => {}
        Permission::Authenticated => {
            ctx.user().map_err(fail)?;
        }
        Permission::Admin => {
            let u = ctx.user().map_err(fail)?;
            if !u.is_admin {
                return Err(fail(ApiError(OuroError::new(
                    ErrorCode::Forbidden,
                    "only instance administrators may do this",
                ))));
            }
        }
        Permission::Project(min) => {
            let slug = project_slug(req.uri().path()).ok_or_else(|| {
                fail(ApiError(OuroError::new(
                    ErrorCode::InvalidPath,
                    "the project slug in the path is not valid UTF-8",
                )))
            })?;
            let user = principal.as_ref().map(|p| &p.user);
            let mut conn = state.store.read().await.map_err(|e| fail(e.into()))?;
            let access = ouro_store::projects::access(&mut conn, &slug, user)
                .await
                .map_err(|e| fail(e.into()))?;
            drop(conn);
            let Some((project, role)) = access else {
                // Do not reveal that a private project exists; but tell anonymous callers to sign in.
                if principal.is_none() {
                    return Err(fail(unauthorized(
                        "sign in or send a token to see this project",
                    )));
                }
                return Err(fail(ApiError(ouro_store::projects::not_found(&slug))));
            };
            if role < min && principal.is_none() {
                return Err(fail(unauthorized("sign in or send a token to do this")));
            }
            if role < min {
                return Err(fail(ApiError(
                    OuroError::new(
                        ErrorCode::Forbidden,
                        format!(
                            "this needs the {} role in project {slug:?}; you are {}",
                            min.as_str(),
                            role.as_str()
                        ),
                    )
                    .with_details(serde_json::json!({"required_role": min, "your_role": role})),
                )));
            }
            ctx.project = Some((project, role));
        }
    }

    let mut req = req;
    if let Some(Principal {
        via: Via::Session { csrf, .. },
        ..
    }) = &principal
        && !is_safe(req.method())
    {
        req = check_csrf(req, csrf, state.settings.max_body_bytes)
            .await
            .map_err(fail)?;
    }
    req.extensions_mut().insert(ctx);
    Ok(req)
}

/// The `{slug}` of `/api/v1/projects/{slug}/...`, `/projects/{slug}/...` or `/git/{slug}/...`,
/// percent-decoded.
fn project_slug(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix("/api/v1/projects/")
        .or_else(|| path.strip_prefix("/projects/"))
        .or_else(|| path.strip_prefix("/git/"))?;
    let raw = rest.split('/').next()?;
    crate::ui::url_decode(raw)
}

async fn check_csrf(req: Request, expected: &str, limit: usize) -> Result<Request, ApiError> {
    let bad = || {
        ApiError(OuroError::new(
            ErrorCode::CsrfFailed,
            "the form is stale or was not sent by Ouro; reload the page and try again",
        ))
    };
    if let Some(h) = req.headers().get("x-csrf-token") {
        return if constant_eq(h.as_bytes(), expected.as_bytes()) {
            Ok(req)
        } else {
            Err(bad())
        };
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // File uploads (multipart forms) carry the token in the query string, so the body (which
    // may be far larger than a form) is not read twice.
    if content_type.starts_with("multipart/form-data") {
        let token = req
            .uri()
            .query()
            .and_then(|q| form_urlencoded_get(q.as_bytes(), "_csrf"))
            .unwrap_or_default();
        return if constant_eq(token.as_bytes(), expected.as_bytes()) {
            Ok(req)
        } else {
            Err(bad())
        };
    }
    let is_form = content_type.starts_with("application/x-www-form-urlencoded");
    if !is_form {
        return Err(bad());
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError(OuroError::new(
            ErrorCode::BodyTooLarge,
            "the form is larger than the server accepts",
        ))
    })?;
    let token = form_urlencoded_get(&bytes, "_csrf").unwrap_or_default();
    if !constant_eq(token.as_bytes(), expected.as_bytes()) {
        return Err(bad());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn form_urlencoded_get(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| crate::ui::url_decode(v))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && !b.is_empty()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts failed sign-ins per account and per client address in a sliding window.
pub struct Throttle {
    window: Duration,
    per_account: usize,
    per_ip: usize,
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Throttle {
    pub fn new(window: Duration, per_account: u32, per_ip: u32) -> Throttle {
        Throttle {
            window,
            per_account: per_account as usize,
            per_ip: per_ip as usize,
            hits: Mutex::new(HashMap::new()),
        }
    }

    fn count(
        &self,
        map: &mut HashMap<String, VecDeque<Instant>>,
        key: &str,
        now: Instant,
    ) -> usize {
        let q = map.entry(key.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            q.pop_front();
        }
        q.len()
    }

    /// `Err` with the seconds to wait when the account or address is over its limit.
    pub fn check(&self, account: &str, ip: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        let a = self.count(&mut map, &format!("u:{account}"), now);
        let i = self.count(&mut map, &format!("ip:{ip}"), now);
        if a >= self.per_account || i >= self.per_ip {
            return Err(self.window.as_secs());
        }
        Ok(())
    }

    pub fn fail(&self, account: &str, ip: &str) {
        let now = Instant::now();
        let mut map = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(format!("u:{account}"))
            .or_default()
            .push_back(now);
        map.entry(format!("ip:{ip}")).or_default().push_back(now);
        if map.len() > 100_000 {
            // Bounded memory under a spray of random names: forget everything older than the window.
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= window));
        }
    }

    pub fn succeed(&self, account: &str) {
        let mut map = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("u:{account}"));
    }
}

/// The error for a throttled sign-in.
pub fn throttled(secs: u64) -> ApiError {
    ApiError(
        OuroError::new(
            ErrorCode::Throttled,
            format!(
                "too many failed sign-ins; try again in up to {} minutes",
                secs.div_ceil(60)
            ),
        )
        .with_details(serde_json::json!({"retry_after_secs": secs})),
    )
}

pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    auth.strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .map(|t| t.trim().to_string())
}

/// Whether a pipeline job's API token may call `method path`: only the release routes of the
/// API, reading them and creating a release (`POST .../releases`); nothing else.
pub fn job_token_allows(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/projects/") else {
        return false;
    };
    let mut parts = rest.splitn(3, '/');
    let (_slug, section, tail) = (parts.next(), parts.next(), parts.next());
    if section != Some("releases") {
        return false;
    }
    match *method {
        Method::GET | Method::HEAD => true,
        Method::POST => tail.is_none_or(str::is_empty),
        _ => false,
    }
}

/// Job API token auth (`OURO_JOB_TOKEN`, see `ouro_build::runner::job_api_token`): the token of
/// a running job's current attempt, scoped to that job's project and to what
/// [`job_token_allows`]: reading releases and creating one, with the developer role at most.
/// A finished attempt's token is refused (401); another project is 404; another route 403.
async fn job_api_access(
    state: &AppState,
    perm: Permission,
    method: &Method,
    path: &str,
    token: &str,
) -> Result<(Ctx, crate::api::releases::JobCaller), ApiError> {
    let Some(job) = ouro_build::runner::server::job_for_api_token(&state.store, token).await?
    else {
        return Err(unauthorized(
            "the job token is not the token of a running job's current attempt",
        ));
    };
    let refused = || {
        ApiError(OuroError::new(
            ErrorCode::InsufficientScope,
            "a job token may only read releases and create one in its own project",
        ))
    };
    if !matches!(perm, Permission::Project(r) if r <= ouro_core::Role::Developer)
        || !job_token_allows(method, path)
    {
        return Err(refused());
    }
    let slug = project_slug(path).unwrap_or_default();
    let project = ouro_store::projects::by_slug(&mut state.store.read().await?, &slug).await?;
    let Some(project) = project.filter(|p| p.id == job.project_id) else {
        return Err(ApiError(ouro_store::projects::not_found(&slug)));
    };
    Ok((
        Ctx {
            principal: None,
            project: Some((project, ouro_core::Role::Developer)),
            client_ip: format!("job:{}", job.job_id),
        },
        crate::api::releases::JobCaller {
            run: job.run_number,
            job_id: job.job_id,
            job: job.job_key,
        },
    ))
}

/// Job-token auth for runners cloning over smart HTTP: user `ouro-job`, password the current
/// attempt token of a running job; read access to that job's repository only. `None` when the
/// request does not use it.
async fn job_token_access(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
) -> Result<Option<Ctx>, ApiError> {
    use base64::Engine;
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
    else {
        return Ok(None);
    };
    let Some(raw) = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|r| String::from_utf8(r).ok())
    else {
        return Ok(None);
    };
    let Some(token) = raw.strip_prefix("ouro-job:") else {
        return Ok(None);
    };
    let refused = || unauthorized("the job token is not the current attempt of a running job");
    let read = is_safe(method) || crate::git_http::is_git_read_post(path);
    let mut parts = path.trim_start_matches("/git/").splitn(3, '/');
    let (slug, repo) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    let Some((project_id, repo_name)) =
        ouro_build::runner::server::job_repo_for_token(&state.store, token).await?
    else {
        return Err(refused());
    };
    let project = ouro_store::projects::by_slug(&mut state.store.read().await?, slug).await?;
    match project {
        Some(p) if read && p.id == project_id && repo_name == repo => Ok(Some(Ctx {
            principal: None,
            project: Some((p, ouro_core::Role::Viewer)),
            client_ip: "runner".into(),
        })),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_counts_per_account_and_ip() {
        let t = Throttle::new(Duration::from_secs(60), 2, 3);
        assert!(t.check("a", "1").is_ok());
        t.fail("a", "1");
        t.fail("a", "1");
        assert!(t.check("a", "2").is_err(), "account limit");
        assert!(t.check("b", "1").is_ok());
        t.fail("b", "1");
        assert!(t.check("c", "1").is_err(), "ip limit");
        t.succeed("a");
        assert!(t.check("a", "9").is_ok());
    }

    #[test]
    fn slugs_from_paths() {
        assert_eq!(
            project_slug("/api/v1/projects/demo/members").as_deref(),
            Some("demo")
        );
        assert_eq!(project_slug("/projects/demo").as_deref(), Some("demo"));
        assert_eq!(
            project_slug("/git/demo/app.git/info/refs").as_deref(),
            Some("demo")
        );
        assert_eq!(project_slug("/api/v1/users"), None);
    }
}
