//! Code: hosted repositories (create empty or imported, list, show, delete). The git protocol
//! itself is served by `crate::git_http`.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_code::repos::{self, NewRepo, Repo};
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
}

/// A repository as the API shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RepoView {
    #[serde(flatten)]
    pub repo: Repo,
    /// `git clone` this (smart HTTP; user name and an API token as password).
    pub clone_url: String,
}

pub fn clone_url(st: &AppState, slug: &str, name: &str) -> String {
    format!("{}/git/{slug}/{name}.git", st.base_url)
}

pub fn view(st: &AppState, slug: &str, repo: Repo) -> RepoView {
    RepoView {
        clone_url: clone_url(st, slug, &repo.name),
        repo,
    }
}

pub fn repos_root(st: &AppState) -> std::path::PathBuf {
    repos::root(&st.settings.data_dir)
}

async fn list(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<Vec<RepoView>>> {
    let p = ctx.project()?;
    let rows = repos::list(&mut st.store.read().await?, p.id).await?;
    Ok(Json(
        rows.into_iter().map(|r| view(&st, &p.slug, r)).collect(),
    ))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    Json(body): Json<NewRepo>,
) -> ApiResult<impl IntoResponse> {
    let p = ctx.project()?;
    let repo = repos::create(
        &st.store,
        &repos_root(&st),
        (p.id, &p.slug),
        &ctx.actor(),
        &body,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(&st, &p.slug, repo))))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<RepoView>> {
    let p = ctx.project()?;
    let repo = repos::get(&mut st.store.read().await?, p.id, &name).await?;
    Ok(Json(view(&st, &p.slug, repo)))
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
