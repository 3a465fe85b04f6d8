//! Deploy: what runs in each environment, deployments with their steps, rollout and rollback.
//! Thin: the engine (`ouro_deploy::engine`) records and drives deployments in the background,
//! so the write routes answer 202 with the running deployment.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::{OuroError, Permission, Role};
use ouro_deploy::deployments::{self, Deployment};
use ouro_deploy::engine::EnvironmentView;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let viewer = Permission::Project(Role::Viewer);
    let maintainer = Permission::Project(Role::Maintainer);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/environments/{env}",
        viewer,
        get_environment,
    )
    .doc(
        "deploy",
        "What runs in an environment: the live `version`, the one a rollback puts back, each service's route and traffic split, every replica with its `health`, the running deployment and the recent ones; 404 deploy.environment_not_found before the first deployment",
    )
    .response::<EnvironmentView>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/environments/{env}/rollback",
        maintainer,
        post_rollback,
    )
    .doc(
        "deploy",
        "Put the environment's previous release back live (a blue-green switch; instant while the previous version is still warm) → 202 with the running rollback; 409 deploy.nothing_to_roll_back, deploy.in_progress",
    )
    .response::<Deployment>(202);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/environments/{env}/deployments",
        maintainer,
        post_deployment,
    )
    .doc(
        "deploy",
        "Deploy a published release to the environment with each service's strategy: `{\"version\"}` → 202 with the running deployment; 422 deploy.no_services, deploy.services_invalid (with `details.diagnostics`), deploy.bundle_unavailable; 409 deploy.in_progress. Approved promotions are deployed the same way without a call",
    )
    .request::<RolloutRequest>()
    .response::<Deployment>(202);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/deployments",
        viewer,
        list,
    )
    .doc(
        "deploy",
        "The newest deployments (and rollbacks) of the project, optionally of one `environment` or one `release` (version)",
    )
    .query("environment", "Only this environment")
    .query("release", "Only deployments of this release version")
    .response::<Vec<Deployment>>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/deployments/{id}",
        viewer,
        get_deployment,
    )
    .doc(
        "deploy",
        "One deployment with who, what, strategy, outcome and each step with its timings and numbers (a canary step's error rates and p99s, a switch's duration, a drain's cut requests)",
    )
    .response::<Deployment>(200);
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// The release version to deploy.
    pub version: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub environment: Option<String>,
    pub release: Option<String>,
}

/// The newest deployments of a project (of one environment or one release version).
pub async fn recent(
    st: &AppState,
    project_id: i64,
    environment: Option<&str>,
    release: Option<&str>,
    limit: i64,
) -> Result<Vec<Deployment>, OuroError> {
    let mut c = st.store.read().await?;
    let release_id = match release {
        Some(v) => Some(
            ouro_release::promotions::release(&mut c, project_id, v)
                .await?
                .id,
        ),
        None => None,
    };
    Ok(deployments::list(&mut c, project_id, environment, release_id, limit).await?)
}

async fn get_environment(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, env)): Path<(String, String)>,
) -> ApiResult<Json<EnvironmentView>> {
    let p = ctx.project()?;
    Ok(Json(st.deploy.view((p.id, &p.slug), &env).await?))
}

async fn post_rollback(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, env)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let p = ctx.project()?;
    let d = st
        .deploy
        .rollback((p.id, &p.slug), &env, &ctx.actor())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}

async fn post_deployment(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, env)): Path<(String, String)>,
    Json(body): Json<RolloutRequest>,
) -> ApiResult<impl IntoResponse> {
    let p = ctx.project()?;
    let d = st
        .deploy
        .deploy(
            (p.id, &p.slug),
            &env,
            body.version.trim(),
            &ctx.actor(),
            None,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(qy): Query<ListQuery>,
) -> ApiResult<Json<Vec<Deployment>>> {
    let p = ctx.project()?;
    Ok(Json(
        recent(
            &st,
            p.id,
            qy.environment.as_deref(),
            qy.release.as_deref(),
            50,
        )
        .await?,
    ))
}

async fn get_deployment(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> ApiResult<Json<Deployment>> {
    let p = ctx.project()?;
    Ok(Json(
        deployments::get(&mut st.store.read().await?, p.id, id).await?,
    ))
}
