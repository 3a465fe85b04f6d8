//! Release: the promotion path and promotions. Thin: the rules live in
//! `ouro_release::{environments, gates, promotions}`. Requested promotions are re-evaluated when
//! viewed (and by the server's promotion ticker), so a wait timer ending or a window opening shows.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::{OuroError, Permission, Role};
use ouro_release::environments::Environment;
use ouro_release::promotions::{self, Placement, Promotion, User};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::repos::repos_root;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let viewer = Permission::Project(Role::Viewer);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/environments",
        viewer,
        get_environments,
    )
    .doc(
        "release",
        "The promotion path (from `.ouro/environments.yml` at the newest published release's commit, or at `?release=VERSION`'s; else the project settings) with each environment's gates and where releases are: the newest approved promotion and the open ones; 404 release.environments_not_configured, 422 release.environments_invalid",
    )
    .query("release", "Read the path at this release's commit")
    .response::<EnvironmentsView>(200);
    reg.route(
        Method::PUT,
        "/api/v1/projects/{slug}/environments",
        Permission::Project(Role::Maintainer),
        put_environments,
    )
    .doc(
        "release",
        "Set the promotion path kept in the project settings (used when a release's commit has no `.ouro/environments.yml`): `{\"yaml\"}` in the file's format, empty to remove; 422 release.environments_invalid with `details.diagnostics`",
    )
    .request::<EnvironmentsSettings>()
    .response::<SettingsSaved>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/releases/{version}/promotions",
        viewer,
        list_promotions,
    )
    .doc(
        "release",
        "A release's promotion path: each environment with its state (`approved`, `requested`, `rejected` or `none`), gates and approvals, and every promotion request (oldest first)",
    )
    .response::<ReleasePromotions>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/releases/{version}/promotions",
        Permission::Project(Role::Developer),
        post_promotion,
    )
    .doc(
        "release",
        "Request the promotion of a published release to an environment: `{\"environment\"}` → 201 (state `approved` at once when every gate passes, else `requested`); 409 release.promotion_out_of_order before the environment in front succeeded, release.promotion_gate_failed past a failing check, release.promotion_exists, release.promotion_not_published",
    )
    .request::<PromotionRequest>()
    .response::<Promotion>(201);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/promotions/{id}/approve",
        viewer,
        approve,
    )
    .doc(
        "release",
        "Approve a requested promotion: `{\"comment\"?}`; the caller must be in the environment's approvers (`approvals.from`: members with that role, or the named users); 403 release.approval_not_allowed (with no-self-approval: the requester and the publisher), 409 release.promotion_closed or release.approval_duplicate",
    )
    .request::<DecisionRequest>()
    .response::<Promotion>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/promotions/{id}/reject",
        viewer,
        reject,
    )
    .doc(
        "release",
        "Reject a requested promotion with a comment (same approvers as approve); the promotion becomes `rejected`",
    )
    .request::<DecisionRequest>()
    .response::<Promotion>(200);
}

/// One environment of the path and where releases are in it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EnvironmentPlace {
    pub environment: Environment,
    pub releases: Vec<Placement>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EnvironmentsView {
    /// `.ouro/environments.yml` or `settings`.
    pub source: String,
    /// The release whose commit the path was read at (none: the project settings).
    pub release: Option<String>,
    pub environments: Vec<EnvironmentPlace>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentsSettings {
    /// The YAML of `.ouro/environments.yml`; empty removes the settings.
    pub yaml: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SettingsSaved {
    /// The environment names in path order (empty: removed).
    pub environments: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromotionRequest {
    pub environment: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Up to 2000 characters.
    #[serde(default)]
    pub comment: String,
}

/// An environment of a release's path with the release's state there.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EnvironmentState {
    pub environment: Environment,
    /// `approved`, `requested`, `rejected` or `none`.
    pub state: String,
    /// The newest promotion request to it.
    pub promotion: Option<Promotion>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReleasePromotions {
    pub release: String,
    /// The release's state (`draft`, `published`, `withdrawn`).
    pub state: String,
    /// Where the path comes from (none: it could not be read, see `config_error`).
    pub source: Option<String>,
    pub config_error: Option<String>,
    pub environments: Vec<EnvironmentState>,
    pub promotions: Vec<Promotion>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ReleaseQuery {
    pub release: Option<String>,
}

/// The promotion path of the project with where releases are.
pub async fn environments_of(
    st: &AppState,
    project_id: i64,
    version: Option<&str>,
) -> Result<EnvironmentsView, OuroError> {
    let version = match version {
        Some(v) => Some(v.to_string()),
        None => ouro_store::q(
            "SELECT version FROM release_releases WHERE project_id = $1 AND state = 'published' \
             ORDER BY published_at DESC, id DESC LIMIT 1",
        )
        .bind(project_id)
        .fetch_optional(&mut st.store.read().await?)
        .await?
        .map(|r| r.text("version"))
        .transpose()?,
    };
    let (config, source) = match &version {
        Some(v) => {
            let rel = promotions::release(&mut st.store.read().await?, project_id, v).await?;
            promotions::config_for(&st.store, &repos_root(st), &rel).await?
        }
        None => promotions::project_config(&st.store, project_id).await?,
    };
    promotions::reevaluate(&st.store, Some(project_id), ouro_core::time::now_ms()).await?;
    let mut c = st.store.read().await?;
    let mut environments = Vec::new();
    for e in config.environments {
        environments.push(EnvironmentPlace {
            releases: promotions::placements(&mut c, project_id, &e.name).await?,
            environment: e,
        });
    }
    Ok(EnvironmentsView {
        release: version.filter(|_| source != "settings"),
        source,
        environments,
    })
}

/// A release's path, promotions, gates and approvals (re-evaluated now).
pub async fn release_promotions(
    st: &AppState,
    project_id: i64,
    version: &str,
) -> Result<ReleasePromotions, OuroError> {
    let rel = promotions::release(&mut st.store.read().await?, project_id, version).await?;
    promotions::reevaluate(&st.store, Some(project_id), ouro_core::time::now_ms()).await?;
    let list = promotions::list(&mut st.store.read().await?, rel.id).await?;
    let (config, source, config_error) =
        match promotions::config_for(&st.store, &repos_root(st), &rel).await {
            Ok((c, s)) => (c, Some(s), None),
            Err(e) => (Default::default(), None, Some(e.message)),
        };
    let environments = config
        .environments
        .into_iter()
        .map(|e| {
            let promotion = list.iter().rev().find(|p| p.environment == e.name).cloned();
            EnvironmentState {
                state: promotion
                    .as_ref()
                    .map_or("none".to_string(), |p| p.state.clone()),
                environment: e,
                promotion,
            }
        })
        .collect();
    Ok(ReleasePromotions {
        release: rel.version,
        state: rel.state,
        source,
        config_error,
        environments,
        promotions: list,
    })
}

/// Requests a promotion as the signed-in user.
pub async fn request_promotion(
    st: &AppState,
    ctx: &Ctx,
    version: &str,
    environment: &str,
) -> Result<Promotion, OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    let u = ctx.user().map_err(|e| e.0)?;
    let environment = environment.trim();
    if environment.is_empty() {
        return Err(OuroError::field("environment", "name an environment"));
    }
    promotions::request(
        &st.store,
        &repos_root(st),
        p.id,
        version,
        environment,
        &User {
            id: u.id,
            name: &u.name,
        },
        ouro_core::time::now_ms(),
    )
    .await
}

/// Approves or rejects a promotion as the signed-in user.
pub async fn decide_promotion(
    st: &AppState,
    ctx: &Ctx,
    id: i64,
    approve: bool,
    comment: &str,
) -> Result<Promotion, OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    let u = ctx.user().map_err(|e| e.0)?;
    promotions::decide(
        &st.store,
        p.id,
        id,
        &User {
            id: u.id,
            name: &u.name,
        },
        approve,
        comment,
        ouro_core::time::now_ms(),
    )
    .await
}

async fn get_environments(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(qy): Query<ReleaseQuery>,
) -> ApiResult<Json<EnvironmentsView>> {
    let p = ctx.project()?;
    Ok(Json(
        environments_of(&st, p.id, qy.release.as_deref()).await?,
    ))
}

async fn put_environments(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<EnvironmentsSettings>,
) -> ApiResult<Json<SettingsSaved>> {
    let p = ctx.project()?;
    let user = ctx.user()?;
    let config = promotions::put_settings(
        &st.store,
        p.id,
        &ctx.actor(),
        Some(user.id),
        &body.yaml,
        ouro_core::time::now_ms(),
    )
    .await?;
    Ok(Json(SettingsSaved {
        environments: config
            .map(|c| c.environments.into_iter().map(|e| e.name).collect())
            .unwrap_or_default(),
    }))
}

async fn list_promotions(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
) -> ApiResult<Json<ReleasePromotions>> {
    let p = ctx.project()?;
    Ok(Json(release_promotions(&st, p.id, &version).await?))
}

async fn post_promotion(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
    Json(body): Json<PromotionRequest>,
) -> ApiResult<impl IntoResponse> {
    let p = request_promotion(&st, &ctx, &version, &body.environment).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

async fn approve(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Json(body): Json<DecisionRequest>,
) -> ApiResult<Json<Promotion>> {
    Ok(Json(
        decide_promotion(&st, &ctx, id, true, &body.comment).await?,
    ))
}

async fn reject(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    Json(body): Json<DecisionRequest>,
) -> ApiResult<Json<Promotion>> {
    Ok(Json(
        decide_promotion(&st, &ctx, id, false, &body.comment).await?,
    ))
}
