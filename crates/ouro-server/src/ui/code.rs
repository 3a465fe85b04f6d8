//! Code: the project's repositories with their clone URLs (a copy button, `assets/copy.js`),
//! and a form to create one, empty or imported (developers and up).

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_code::repos::{self, NewRepo};
use ouro_core::{OuroError, Permission, Role};
use ouro_store::projects::Project;

use crate::AppState;
use crate::api::repos::{clone_url, repos_root};
use crate::extract::Ctx;
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, field_of, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render, render_status};

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/projects/{slug}/code",
        Permission::Project(Role::Viewer),
        page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/code/repos",
        Permission::Project(Role::Developer),
        create,
    );
}

pub struct RepoRow {
    pub name: String,
    pub kind: &'static str,
    pub default_branch: String,
    pub clone_url: String,
    pub created: When,
}

#[derive(Template)]
#[template(path = "code_repos.html")]
struct CodePage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    can_create: bool,
    repos: Vec<RepoRow>,
    /// The create form as submitted, with its error (field, message).
    name: String,
    import_url: String,
    error: Option<(String, String)>,
    user_name: String,
}

async fn build<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
) -> Result<CodePage<'a>, crate::ui::UiError> {
    let rows = repos::list(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        project.id,
    )
    .await
    .map_err(|e| fail(ctx, e))?;
    Ok(CodePage {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "code",
        manage: ctx.role() >= Some(Role::Maintainer),
        can_create: ctx.role() >= Some(Role::Developer),
        repos: rows
            .into_iter()
            .map(|r| RepoRow {
                clone_url: clone_url(st, &project.slug, &r.name),
                kind: r.kind.as_str(),
                default_branch: r.default_branch,
                created: When::of(r.created_at),
                name: r.name,
            })
            .collect(),
        name: String::new(),
        import_url: String::new(),
        error: None,
        user_name: ctx
            .principal
            .as_ref()
            .map(|p| p.user.name.clone())
            .unwrap_or_else(|| "USER".into()),
    })
}

async fn page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let mut p = build(&st, &ctx, project).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render(&p)))
}

async fn create(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let new = NewRepo {
        name: form.get("name").trim().to_string(),
        import_url: Some(form.get("import_url").trim().to_string()).filter(|u| !u.is_empty()),
    };
    match repos::create(
        &st.store,
        &repos_root(&st),
        (project.id, &project.slug),
        &ctx.actor(),
        &new,
    )
    .await
    {
        Ok(r) => Ok(redirect_with_flash(
            &format!("/projects/{}/code", project.slug),
            &format!("Repository {} was created.", r.name),
        )),
        Err(e) => {
            let e: OuroError = e.into();
            let status = crate::auth::status_of(e.code);
            if status.is_server_error() {
                return Err(fail(&ctx, e));
            }
            let mut p = build(&st, &ctx, project).await?;
            p.name = new.name;
            p.import_url = new.import_url.unwrap_or_default();
            let field = field_of(&e).unwrap_or("name").to_string();
            p.error = Some((field, e.message));
            Ok(render_status(
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                &p,
            ))
        }
    }
}
