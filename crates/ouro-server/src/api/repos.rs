//! Code: hosted repositories (create empty or imported, list, show, delete). The git protocol
//! itself is served by `crate::git_http`.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_code::mirror::{self, MirrorPatch, MirrorStatus};
use ouro_code::repos::{self, NewRepo, Repo, RepoKind};
use ouro_core::{Permission, Role};
use schemars::JsonSchema;
use serde::Serialize;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let path = "/api/v1/projects/{slug}/repos";
    let one = "/api/v1/projects/{slug}/repos/{name}";
    reg.route(Method::GET, path, Permission::Project(Role::Viewer), list)
        .doc(
            "code",
            "The project's git repositories, by name, with clone URLs",
        )
        .response::<Vec<RepoView>>(200);
    reg.route(
        Method::POST,
        path,
        Permission::Project(Role::Developer),
        create,
    )
    .doc(
        "code",
        "Create a repository, empty or cloned from `import_url` (https, http, git or file); 409 code.repo_name_taken",
    )
    .request::<NewRepo>()
    .response::<RepoView>(201);
    reg.route(Method::GET, one, Permission::Project(Role::Viewer), show)
        .doc("code", "One repository with its clone URL")
        .response::<RepoView>(200);
    reg.route(
        Method::DELETE,
        one,
        Permission::Project(Role::Maintainer),
        delete,
    )
    .doc(
        "code",
        "Delete a repository and its git data (cannot be undone)",
    );
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/repos/{name}/mirror/sync",
        Permission::Project(Role::Developer),
        sync_mirror,
    )
    .doc(
        "code",
        "Fetch a mirror from its source now; the answer is the outcome (`last_status` ok or failed, `last_error`); 409 code.not_a_mirror",
    )
    .response::<MirrorStatus>(200);
    reg.route(
        Method::PATCH,
        "/api/v1/projects/{slug}/repos/{name}/mirror",
        Permission::Project(Role::Maintainer),
        patch_mirror,
    )
    .doc("code", "Change a mirror's fetch interval")
    .request::<MirrorPatch>()
    .response::<MirrorStatus>(200);
}

/// A repository as the API shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RepoView {
    #[serde(flatten)]
    pub repo: Repo,
    /// `git clone` this (smart HTTP; user name and an API token as password).
    pub clone_url: String,
    /// A mirror's schedule and last fetch (absent for other repositories).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorStatus>,
}

pub fn clone_url(st: &AppState, slug: &str, name: &str) -> String {
    format!("{}/git/{slug}/{name}.git", st.base_url)
}

pub fn view(st: &AppState, slug: &str, repo: Repo) -> RepoView {
    RepoView {
        clone_url: clone_url(st, slug, &repo.name),
        repo,
        mirror: None,
    }
}

/// [`view`] with a mirror's status read.
pub async fn full_view(st: &AppState, slug: &str, repo: Repo) -> ApiResult<RepoView> {
    let mirror = if repo.kind == RepoKind::Mirror {
        mirror::status(&mut st.store.read().await?, repo.id).await?
    } else {
        None
    };
    Ok(RepoView {
        mirror,
        ..view(st, slug, repo)
    })
}

pub fn repos_root(st: &AppState) -> std::path::PathBuf {
    repos::root(&st.settings.data_dir)
}

async fn list(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Vec<RepoView>>> {
    let p = ctx.project()?;
    let rows = repos::list(&mut st.store.read().await?, p.id).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(full_view(&st, &p.slug, r).await?);
    }
    Ok(Json(out))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<NewRepo>,
) -> ApiResult<impl IntoResponse> {
    let p = ctx.project()?;
    let repo = repos::create_with(
        &st.store,
        &repos_root(&st),
        (p.id, &p.slug),
        &ctx.actor(),
        &body,
        Some(&st.secrets),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(full_view(&st, &p.slug, repo).await?),
    ))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<RepoView>> {
    let p = ctx.project()?;
    let repo = repos::get(&mut st.store.read().await?, p.id, &name).await?;
    Ok(Json(full_view(&st, &p.slug, repo).await?))
}

async fn sync_mirror(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<MirrorStatus>> {
    let p = ctx.project()?;
    let repo = repos::get(&mut st.store.read().await?, p.id, &name).await?;
    let out = mirror::sync(&st.store, &repos_root(&st), &st.secrets, &repo, &p.slug).await?;
    Ok(Json(out))
}

async fn patch_mirror(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<MirrorPatch>,
) -> ApiResult<Json<MirrorStatus>> {
    let p = ctx.project()?;
    let repo = repos::get(&mut st.store.read().await?, p.id, &name).await?;
    Ok(Json(mirror::set_interval(&st.store, &repo, &body).await?))
}

async fn delete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let p = ctx.project()?;
    repos::delete(
        &st.store,
        &repos_root(&st),
        (p.id, &p.slug),
        &ctx.actor(),
        &name,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
