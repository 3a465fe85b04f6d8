//! Build: pipeline runs. Thin: runs are created, read and cancelled by `ouro_build::runs`.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_build::runs::{self, ListFilter, Run, RunDetail, TriggerInfo};
use ouro_code::repos;
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::repos::repos_root;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/pipelines",
        Permission::Project(Role::Viewer),
        list,
    )
    .doc(
        "build",
        "The project's pipeline runs, newest first: `{\"runs\": [...], \"next_cursor\"}`",
    )
    .query(
        "status",
        "Only runs in this state: queued, running, success, failure, cancelled",
    )
    .query(
        "ref",
        "Only runs of this ref (`refs/heads/main`, or a branch or tag name)",
    )
    .query("limit", "At most this many runs (1 to 200, default 50)")
    .query("cursor", "next_cursor of the previous page")
    .response::<RunList>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/pipelines/{number}",
        Permission::Project(Role::Viewer),
        show,
    )
    .doc(
        "build",
        "One run with its jobs, and the diagnostics of an invalid pipeline file",
    )
    .response::<RunDetail>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/pipelines/{number}/cancel",
        Permission::Project(Role::Developer),
        cancel,
    )
    .doc(
        "build",
        "Cancel a run: its queued and running jobs become cancelled; 409 build.run_finished when it has finished",
    )
    .response::<RunDetail>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/repos/{name}/pipelines",
        Permission::Project(Role::Developer),
        trigger,
    )
    .doc(
        "build",
        "Run the pipelines with a `manual` trigger at `ref` (a branch, tag or full ref) → 201 `{\"runs\": [...]}`; 422 build.no_pipeline when none runs",
    )
    .request::<NewRuns>()
    .response::<RunList>(201);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/pipelines/{number}/rerun",
        Permission::Project(Role::Developer),
        rerun,
    )
    .doc(
        "build",
        "Re-run a finished run as a new run (trigger `rerun`, `rerun_of`): `{\"jobs\": \"all\" | \"failed\" | [\"key\", ...]}` → 201 the new run; 409 build.run_not_finished while it is queued or running",
    )
    .request::<RerunRequest>()
    .response::<RunDetail>(201);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/pipeline-settings",
        Permission::Project(Role::Viewer),
        get_settings,
    )
    .doc(
        "build",
        "The project's build settings: `max_running_jobs` (null: unlimited)",
    )
    .response::<BuildSettings>(200);
    reg.route(
        Method::PUT,
        "/api/v1/projects/{slug}/pipeline-settings",
        Permission::Project(Role::Maintainer),
        put_settings,
    )
    .doc(
        "build",
        "Set the project's build settings: `max_running_jobs` (1 to 10000, or null for no limit)",
    )
    .request::<BuildSettings>()
    .response::<BuildSettings>(200);
}

/// A re-run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    /// `"all"`, `"failed"`, or a list of job keys (each with the jobs that need it). Default `"all"`.
    #[serde(default)]
    pub jobs: Option<ouro_build::rerun::Selection>,
}

/// The project's build settings.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSettings {
    /// At most this many jobs of the project run at once (null: unlimited).
    pub max_running_jobs: Option<i64>,
}

/// Re-runs run `number` (see `ouro_build::rerun`).
pub async fn rerun_run(
    st: &AppState,
    ctx: &Ctx,
    number: i64,
    sel: &ouro_build::rerun::Selection,
) -> Result<RunDetail, OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    Ok(ouro_build::rerun::rerun(
        &st.store,
        &repos_root(st),
        p.id,
        number,
        sel,
        &ctx.actor().label(),
    )
    .await?)
}

async fn rerun(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
    Json(body): Json<RerunRequest>,
) -> ApiResult<impl IntoResponse> {
    let sel = body
        .jobs
        .unwrap_or_else(|| ouro_build::rerun::Selection::Keyword("all".into()));
    let d = rerun_run(&st, &ctx, number, &sel).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

async fn get_settings(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<BuildSettings>> {
    let p = ctx.project()?;
    let max = ouro_build::triggers::max_running_jobs(&mut st.store.read().await?, p.id).await?;
    Ok(Json(BuildSettings {
        max_running_jobs: max,
    }))
}

async fn put_settings(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<BuildSettings>,
) -> ApiResult<Json<BuildSettings>> {
    let p = ctx.project()?;
    ouro_build::triggers::set_max_running_jobs(&st.store, p.id, body.max_running_jobs).await?;
    Ok(Json(body))
}

/// A page of runs.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A manual trigger.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRuns {
    /// A branch or tag name, or a full ref (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Values of the pipeline's `manual.inputs`, by id (typed and checked: 422 on a bad one).
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Checks `?status=&ref=&limit=&cursor=`.
pub fn filter_of(q: &ListQuery) -> Result<ListFilter, OuroError> {
    if let Some(s) = &q.status
        && !runs::RUN_STATUSES.contains(&s.as_str())
    {
        return Err(OuroError::field(
            "status",
            "status is one of queued, running, success, failure, cancelled",
        ));
    }
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            OuroError::new(
                ErrorCode::InvalidQuery,
                "invalid cursor: pass back next_cursor as given",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(OuroError::field("limit", "limit is 1 to 200"));
    }
    Ok(ListFilter {
        status: q.status.clone(),
        git_ref: q.git_ref.clone().filter(|r| !r.is_empty()),
        repo_id: None,
        before,
        limit,
    })
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<RunList>> {
    let p = ctx.project()?;
    let f = filter_of(&q)?;
    let runs = runs::list(&mut st.store.read().await?, p.id, &f).await?;
    let next_cursor = (runs.len() as i64 == f.limit)
        .then(|| runs.last().map(|r| r.number.to_string()))
        .flatten();
    Ok(Json(RunList { runs, next_cursor }))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
) -> ApiResult<Json<RunDetail>> {
    let p = ctx.project()?;
    Ok(Json(
        runs::detail(&mut st.store.read().await?, p.id, number).await?,
    ))
}

/// Cancels run `number` and posts its commit status.
pub async fn cancel_run(st: &AppState, ctx: &Ctx, number: i64) -> Result<RunDetail, OuroError> {
    let p = ctx.project().map_err(|e| e.0)?.clone();
    let d = runs::cancel(&st.store, p.id, number, &ctx.actor()).await?;
    if let Some(repo_id) = d.run.repo_id {
        let repo = repos::list(&mut st.store.read().await?, p.id)
            .await?
            .into_iter()
            .find(|r| r.id == repo_id);
        if let Some(repo) = repo {
            runs::post_run_status(&st.store, &repos_root(st), &repo, &p.slug, &d.run).await;
        }
    }
    Ok(d)
}

async fn cancel(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, number)): Path<(String, i64)>,
) -> ApiResult<Json<RunDetail>> {
    Ok(Json(cancel_run(&st, &ctx, number).await?))
}

/// Creates the manual runs of `git_ref` in repository `name`.
pub async fn trigger_manual(
    st: &AppState,
    ctx: &Ctx,
    name: &str,
    git_ref: &str,
    inputs: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<Vec<Run>, OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    let repo = repos::get(&mut st.store.read().await?, p.id, name).await?;
    let git_ref = git_ref.trim();
    if git_ref.is_empty() || git_ref.starts_with('-') || git_ref.contains("..") {
        return Err(OuroError::field("ref", "a branch, tag or full ref name"));
    }
    let root = repos_root(st);
    let dir = repo.dir(&root);
    let d = dir.to_string_lossy();
    let candidates = if git_ref.starts_with("refs/") {
        vec![git_ref.to_string()]
    } else {
        vec![
            format!("refs/heads/{git_ref}"),
            format!("refs/tags/{git_ref}"),
        ]
    };
    let mut found = None;
    for full in candidates {
        let spec = format!("{full}^{{commit}}");
        if let Ok(sha) = ouro_code::git::run(&[
            "-C",
            &d,
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ])
        .await
        {
            found = Some((full, sha.trim().to_string()));
            break;
        }
    }
    let Some((full, sha)) = found else {
        return Err(OuroError::new(
            ErrorCode::RefNotFound,
            format!("{git_ref:?} is not a branch or tag of {}", repo.name),
        ));
    };
    let mut given = std::collections::BTreeMap::new();
    for (k, v) in inputs {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Bool(_) | serde_json::Value::Number(_) => v.to_string(),
            _ => {
                return Err(OuroError::field(
                    &format!("inputs.{k}"),
                    "an input is a string, number or boolean",
                ));
            }
        };
        given.insert(k.clone(), text);
    }
    let trigger = TriggerInfo {
        kind: "manual",
        git_ref: full.clone(),
        sha,
        actor: ctx.actor().label(),
        changed: None,
        source_key: None,
        trusted: true,
        inputs: given,
        ..Default::default()
    };
    let runs = runs::create_runs(&st.store, &root, &repo, &trigger).await?;
    if runs.is_empty() {
        return Err(OuroError::new(
            ErrorCode::NoPipeline,
            format!(
                "no pipeline file at {full} has a manual trigger (`on: manual` in .ouro/pipelines/*.yml)"
            ),
        )
        .with_details(serde_json::json!({"field": "ref"})));
    }
    Ok(runs)
}

async fn trigger(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<NewRuns>,
) -> ApiResult<impl IntoResponse> {
    let runs = trigger_manual(&st, &ctx, &name, &body.git_ref, &body.inputs).await?;
    Ok((
        StatusCode::CREATED,
        Json(RunList {
            runs,
            next_cursor: None,
        }),
    ))
}
