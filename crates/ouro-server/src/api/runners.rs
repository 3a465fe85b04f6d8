//! Build: the runner protocol over HTTP, and runner administration. Thin: every call is
//! `ouro_build::runner::server`, the functions the in-process runner calls too.
//!
//! - `POST /api/v1/runners/register` with a registration token → the runner's id and token.
//! - `/api/v1/runner/...`: the runner authenticates with `Authorization: Bearer <runner token>`;
//!   every job write carries `Ouro-Attempt-Token`; a stale attempt → 409 `build.stale_attempt`.
//! - `/api/v1/admin/runners...`: list, drain, registration tokens (instance admins).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ouro_build::runner::server::{self as rs, CheckoutKind, Registered, RunnerInfo};
use ouro_build::runner::{ClaimedJob, JobResult, SectionMark, wake};
use ouro_core::{ErrorCode, OuroError, Permission};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

/// The header every job write carries.
pub const ATTEMPT_HEADER: &str = "ouro-attempt-token";
/// The prefix of runner tokens (the auth layer leaves them to these handlers).
pub const RUNNER_TOKEN_PREFIX: &str = "ourrun_";

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::POST,
        "/api/v1/runners/register",
        Permission::Public,
        register_runner,
    )
    .doc(
        "build",
        "Register a runner with a registration token (used up) → 201 with the runner's id and token (shown once); 401 build.runner_token_invalid",
    )
    .request::<Registration>()
    .response::<Registered>(201);
    reg.route(
        Method::POST,
        "/api/v1/runner/claim",
        Permission::Public,
        claim,
    )
    .doc(
        "build",
        "Runner: wait up to `wait` seconds (default 25, at most 60) for a job → 200 with the job, or 204 when none came; runner token as Bearer",
    )
    .query("wait", "Seconds to wait for a job (0 to 60, default 25)")
    .query(
        "executors",
        "The executors the runner offers now, comma-separated (`shell`, `sandbox`); recorded on the runner. Absent: those it registered with",
    )
    .response::<ClaimedJob>(200);
    reg.route(
        Method::POST,
        "/api/v1/runner/jobs/{id}/heartbeat",
        Permission::Public,
        heartbeat,
    )
    .doc(
        "build",
        "Runner: extend the job's lease → `{\"cancel\": bool}` (stop the job when true); Ouro-Attempt-Token header; 409 build.stale_attempt",
    )
    .response::<Heartbeat>(200);
    reg.route(
        Method::PUT,
        "/api/v1/runner/jobs/{id}/log",
        Permission::Public,
        append_log,
    )
    .doc(
        "build",
        "Runner: append the raw body at byte `offset` of the attempt's log (idempotent) → 204; 409 build.log_chunk_rejected for a gap or different bytes",
    )
    .query("offset", "Byte offset of the body's first byte in the job's output");
    reg.route(
        Method::POST,
        "/api/v1/runner/jobs/{id}/sections",
        Permission::Public,
        section,
    )
    .doc(
        "build",
        "Runner: a step starts (`kind: start`, `name`) or ends (`kind: end`, `exit_code`) at the current end of the log → 204",
    )
    .request::<SectionMark>();
    reg.route(
        Method::POST,
        "/api/v1/runner/jobs/{id}/finish",
        Permission::Public,
        finish,
    )
    .doc(
        "build",
        "Runner: end the attempt with its status, exit code and timings → 204 (a failure the retry policy covers queues the job again)",
    )
    .request::<JobResult>();
    reg.route(
        Method::GET,
        "/api/v1/admin/runners",
        Permission::Admin,
        list,
    )
    .doc(
        "build",
        "Runners with labels, executors, slots, last contact and current jobs",
    )
    .response::<RunnerList>(200);
    reg.route(
        Method::POST,
        "/api/v1/admin/runners/{id}/drain",
        Permission::Admin,
        drain,
    )
    .doc(
        "build",
        "Drain a runner (it finishes its current jobs and claims no new ones), or resume it with `{\"draining\": false}`",
    )
    .request::<Drain>()
    .response::<RunnerInfo>(200);
    reg.route(
        Method::POST,
        "/api/v1/admin/runner-tokens",
        Permission::Admin,
        new_token,
    )
    .doc(
        "build",
        "Create a one-time runner registration token, valid for a day → 201 (shown once)",
    )
    .response::<RegistrationToken>(201);
}

/// A runner registering.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The registration token an admin created.
    pub token: String,
    pub name: String,
    #[serde(default)]
    pub labels: Vec<String>,
    /// The executors it offers (`shell`, `sandbox`).
    #[serde(default)]
    pub executors: Vec<String>,
    #[serde(default = "one")]
    pub slots: i64,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Heartbeat {
    pub cancel: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunnerList {
    pub runners: Vec<RunnerInfo>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Drain {
    #[serde(default = "yes")]
    pub draining: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RegistrationToken {
    pub token: String,
}

#[derive(Debug, Deserialize)]
pub struct ClaimQuery {
    wait: Option<u64>,
    /// The executors the runner offers now, comma-separated (absent: those it registered).
    executors: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    offset: Option<u64>,
}

fn bad_runner() -> OuroError {
    OuroError::new(
        ErrorCode::RunnerTokenInvalid,
        "send the runner token: Authorization: Bearer <runner token>",
    )
}

/// The runner the request's bearer token belongs to.
async fn runner_of(st: &AppState, headers: &HeaderMap) -> Result<RunnerInfo, OuroError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| t.starts_with(RUNNER_TOKEN_PREFIX))
        .ok_or_else(bad_runner)?;
    let r = rs::runner_by_token(&st.store, token).await?;
    Ok(r)
}

fn attempt_token(headers: &HeaderMap) -> Result<String, OuroError> {
    headers
        .get(ATTEMPT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            OuroError::new(
                ErrorCode::StaleAttempt,
                "send the attempt token of the job in the Ouro-Attempt-Token header",
            )
        })
}

async fn register_runner(
    State(st): State<AppState>,
    Json(r): Json<Registration>,
) -> ApiResult<impl IntoResponse> {
    let reg = rs::register(
        &st.store,
        &r.token,
        &r.name,
        &r.labels,
        &r.executors,
        r.slots,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(reg)))
}

async fn claim(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ClaimQuery>,
) -> ApiResult<Response> {
    let mut runner = runner_of(&st, &headers).await?;
    if let Some(list) = &q.executors {
        let executors: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        rs::set_executors(&st.store, &runner, &executors).await?;
        runner.executors = executors;
    }
    let wait = Duration::from_secs(q.wait.unwrap_or(25).min(60));
    let mut shutdown = st.shutting_down.clone();
    rs::touch(&st.store, &runner.id).await?;
    // Waits for a wake-up (a job became claimable), not a poll; shutting down ends the wait.
    let claim = wake::wait_for(wait, wake::FALLBACK_POLL, || {
        rs::claim(
            &st.store,
            &st.settings.data_dir,
            &st.secrets,
            &runner.id,
            runner.offer(),
            CheckoutKind::Http,
        )
    });
    let job = tokio::select! {
        job = claim => job?,
        _ = shutdown.wait_for(|s| *s) => None,
    };
    Ok(match job {
        Some(job) => Json(job).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn heartbeat(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Json<Heartbeat>> {
    let runner = runner_of(&st, &headers).await?;
    let token = attempt_token(&headers)?;
    let cancel = rs::heartbeat(&st.store, &st.settings.data_dir, &runner.id, id, &token).await?;
    Ok(Json(Heartbeat { cancel }))
}

async fn append_log(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    runner_of(&st, &headers).await?;
    let token = attempt_token(&headers)?;
    let offset = q
        .offset
        .ok_or_else(|| OuroError::field("offset", "the byte offset of the chunk"))?;
    rs::append_log(
        &st.store,
        &st.settings.data_dir,
        id,
        &token,
        offset,
        body.to_vec(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn section(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(mark): Json<SectionMark>,
) -> ApiResult<StatusCode> {
    runner_of(&st, &headers).await?;
    let token = attempt_token(&headers)?;
    rs::section(&st.store, &st.settings.data_dir, id, &token, mark).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn finish(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(result): Json<JobResult>,
) -> ApiResult<StatusCode> {
    runner_of(&st, &headers).await?;
    let token = attempt_token(&headers)?;
    if !matches!(
        result.status.as_str(),
        "success" | "failure" | "timed_out" | "skipped" | "cancelled"
    ) {
        return Err(OuroError::field(
            "status",
            "success, failure, timed_out, skipped or cancelled",
        )
        .into());
    }
    rs::finish(&st.store, &st.settings.data_dir, id, &token, &result).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list(State(st): State<AppState>) -> ApiResult<Json<RunnerList>> {
    Ok(Json(RunnerList {
        runners: rs::list_runners(&st.store).await?,
    }))
}

async fn drain(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(d): Json<Drain>,
) -> ApiResult<Json<RunnerInfo>> {
    Ok(Json(
        rs::set_draining(&st.store, &id, d.draining, &ctx.actor()).await?,
    ))
}

async fn new_token(State(st): State<AppState>, ctx: Ctx) -> ApiResult<impl IntoResponse> {
    let token = rs::create_registration_token(&st.store, &ctx.actor()).await?;
    Ok((StatusCode::CREATED, Json(RegistrationToken { token })))
}
