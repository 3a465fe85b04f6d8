//! Release: a project's releases (list, create from a pipeline run, show, edit notes, publish,
//! withdraw), the changelog and the comparison of two releases. Thin: the answers come from
//! `ouro_release::releases`.
//!
//! A pipeline job's token (`OURO_JOB_TOKEN`) may call the read routes and the create route of
//! its own project only (see `auth::job_api_access`); it is marked by a [`JobCaller`] in the
//! request's extensions.

use axum::Extension;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_core::{Actor, ErrorCode, OuroError, Permission, Role};
use ouro_release::releases::{self, Comparison, NewRelease, Release, ReleaseDetail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

/// Set by the guard when a pipeline job's token made the request.
#[derive(Debug, Clone)]
pub struct JobCaller {
    pub run: i64,
    pub job_id: i64,
    pub job: String,
}

pub fn register(reg: &mut Registry) {
    let viewer = Permission::Project(Role::Viewer);
    let developer = Permission::Project(Role::Developer);
    let maintainer = Permission::Project(Role::Maintainer);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/releases",
        viewer,
        list,
    )
    .doc(
        "release",
        "The project's releases, newest first: `{\"releases\": [{version, tag, sha, state, ...}]}`",
    )
    .response::<ReleaseList>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/releases",
        developer,
        create,
    )
    .doc(
        "release",
        "Create a draft release from a successful pipeline run (`repo`, `run`; `version` explicit or computed from Conventional Commits since the previous release, `pre` for a pre-release, `notes` to replace the generated ones, `draft: false` to publish at once, which needs the maintainer role). 422 release.run_not_successful, release.artifacts_unavailable, release.nothing_to_release; 409 release.version_exists. A pipeline job's token (`OURO_JOB_TOKEN`) may call it for its own project",
    )
    .request::<NewRelease>()
    .response::<ReleaseDetail>(201);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/releases/changelog",
        viewer,
        changelog,
    )
    .doc(
        "release",
        "The changelog: every published (or withdrawn) release with its notes, newest first",
    )
    .response::<ReleaseList>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/releases/compare",
        viewer,
        compare,
    )
    .doc(
        "release",
        "Compare two releases: the commits of `to` not in `from`, the items and merged change requests they name, artifacts added, removed and changed (by sha256)",
    )
    .query("from", "The older release's version (required)")
    .query("to", "The newer release's version (required)")
    .response::<Comparison>(200);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/releases/{version}",
        viewer,
        show,
    )
    .doc(
        "release",
        "A release with its artifacts (path, sha256, size), linked items and change requests, test summary; 404 release.not_found",
    )
    .response::<ReleaseDetail>(200);
    reg.route(
        Method::PATCH,
        "/api/v1/projects/{slug}/releases/{version}",
        developer,
        edit,
    )
    .doc(
        "release",
        "Replace a draft's notes (`notes`, Markdown; `revision`: the one you read, else 409 conflict.stale_version); 409 release.immutable once published",
    )
    .request::<EditRelease>()
    .response::<Release>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/releases/{version}/publish",
        maintainer,
        publish,
    )
    .doc(
        "release",
        "Publish a draft: creates the annotated tag `v{version}` at its commit in the repository and makes it immutable; 409 release.tag_exists when the tag exists (nothing changes), release.immutable when it is not a draft",
    )
    .response::<Release>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/releases/{version}/withdraw",
        maintainer,
        withdraw,
    )
    .doc(
        "release",
        "Withdraw a published release with a `reason` (1 to 500 characters); its tag stays; 409 release.wrong_state for a draft or a withdrawn release",
    )
    .request::<WithdrawRelease>()
    .response::<Release>(200);
}

/// Releases, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReleaseList {
    pub releases: Vec<Release>,
}

/// Editing a draft's notes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRelease {
    pub notes: String,
    /// The revision you read (optional); a stale one gets 409.
    #[serde(default)]
    pub revision: Option<i64>,
}

/// Withdrawing a release.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRelease {
    pub reason: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct CompareQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Where releases find repositories and blobs.
pub fn env(st: &AppState) -> releases::Env {
    releases::Env {
        data_dir: st.settings.data_dir.clone(),
        blobs: st.blobs.clone(),
    }
}

/// Who acts: the signed-in user, or a pipeline job.
pub fn actor(ctx: &Ctx, job: Option<&JobCaller>) -> Actor {
    match job {
        Some(_) if ctx.principal.is_none() => Actor::System("job"),
        _ => ctx.actor(),
    }
}

async fn list(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<ReleaseList>> {
    let p = ctx.project()?;
    Ok(Json(ReleaseList {
        releases: releases::list(&mut st.store.read().await?, p.id).await?,
    }))
}

async fn changelog(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<ReleaseList>> {
    let p = ctx.project()?;
    Ok(Json(ReleaseList {
        releases: releases::changelog(&mut st.store.read().await?, p.id).await?,
    }))
}

/// Publishes a draft (the API and the page): first its signed bundle is built from the pinned
/// artifacts (so a release whose files are gone is refused before its tag exists), then the tag
/// is created and the row becomes immutable.
pub async fn publish_release(
    st: &AppState,
    actor: &Actor,
    project_id: i64,
    version: &str,
) -> Result<Release, OuroError> {
    let draft = releases::get(&mut st.store.read().await?, project_id, version).await?;
    if draft.state == "draft" {
        let key = crate::api::release_bundles::load_key(st)
            .await
            .map_err(|e| e.0)?;
        ouro_release::bundle::create_for_release(&st.store, st.blobs.clone(), &key, draft.id)
            .await?;
    }
    Ok(releases::publish(&st.store, &env(st), actor, project_id, version).await?)
}

/// Creates a release (the API, the page and job tokens); `draft: false` publishes it too,
/// which needs the maintainer role.
pub async fn create_release(
    st: &AppState,
    ctx: &Ctx,
    job: Option<&JobCaller>,
    req: &NewRelease,
) -> Result<ReleaseDetail, OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    let publish = req.draft == Some(false);
    if publish && ctx.role().is_none_or(|r| r < Role::Maintainer) {
        return Err(OuroError::new(
            ErrorCode::Forbidden,
            "publishing needs the maintainer role; create a draft instead",
        ));
    }
    if req.repo.trim().is_empty() {
        return Err(OuroError::field("repo", "name the repository"));
    }
    let actor = actor(ctx, job);
    let env = env(st);
    let d = releases::create_as(&st.store, &env, &actor, p.id, req, job.map(|j| j.job_id)).await?;
    if publish {
        publish_release(st, &actor, p.id, &d.release.version).await?;
        return Ok(releases::detail(&mut st.store.read().await?, p.id, &d.release.version).await?);
    }
    Ok(d)
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    job: Option<Extension<JobCaller>>,
    Json(body): Json<NewRelease>,
) -> ApiResult<(StatusCode, Json<ReleaseDetail>)> {
    let d = create_release(&st, &ctx, job.as_ref().map(|j| &j.0), &body).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
) -> ApiResult<Json<ReleaseDetail>> {
    let p = ctx.project()?;
    Ok(Json(
        releases::detail(&mut st.store.read().await?, p.id, &version).await?,
    ))
}

async fn edit(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
    Json(body): Json<EditRelease>,
) -> ApiResult<Json<Release>> {
    let p = ctx.project()?;
    Ok(Json(
        releases::edit_notes(
            &st.store,
            &ctx.actor(),
            p.id,
            &version,
            &body.notes,
            body.revision,
        )
        .await?,
    ))
}

async fn publish(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
) -> ApiResult<Json<Release>> {
    let p = ctx.project()?;
    Ok(Json(
        publish_release(&st, &ctx.actor(), p.id, &version).await?,
    ))
}

async fn withdraw(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
    Json(body): Json<WithdrawRelease>,
) -> ApiResult<Json<Release>> {
    let p = ctx.project()?;
    Ok(Json(
        releases::withdraw(&st.store, &ctx.actor(), p.id, &version, &body.reason).await?,
    ))
}

/// Compares two releases of the project (the API and the page).
pub async fn compare_releases(
    st: &AppState,
    project_id: i64,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Comparison, OuroError> {
    let from = from.map(str::trim).filter(|s| !s.is_empty());
    let to = to.map(str::trim).filter(|s| !s.is_empty());
    let Some(from) = from else {
        return Err(OuroError::field("from", "name the older release"));
    };
    let Some(to) = to else {
        return Err(OuroError::field("to", "name the newer release"));
    };
    Ok(releases::compare(&mut st.store.read().await?, &env(st), project_id, from, to).await?)
}

async fn compare(
    State(st): State<AppState>,
    ctx: Ctx,
    Query(q): Query<CompareQuery>,
) -> ApiResult<Json<Comparison>> {
    let p = ctx.project()?;
    Ok(Json(
        compare_releases(&st, p.id, q.from.as_deref(), q.to.as_deref()).await?,
    ))
}
