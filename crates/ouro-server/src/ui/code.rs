//! Code: the project's repositories with their clone URLs (a copy button, `assets/copy.js`),
//! and a form to create one, empty or imported (developers and up).

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_code::mirror;
use ouro_code::repos::{self, NewRepo, RepoKind};
use ouro_core::{OuroError, Permission, Role};
use ouro_store::projects::Project;

use crate::AppState;
use crate::api::repos::{clone_url, repos_root};
use crate::extract::{Ctx, Path};
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
    reg.route(
        Method::POST,
        "/projects/{slug}/code/{repo}/mirror/sync",
        Permission::Project(Role::Developer),
        sync_mirror,
    );
}

/// A mirror's line on the page.
pub struct MirrorRow {
    pub every: String,
    pub last: Option<When>,
    pub failed: bool,
    pub error: String,
    pub next: When,
}

pub struct RepoRow {
    pub name: String,
    pub kind: &'static str,
    pub default_branch: String,
    pub clone_url: String,
    pub created: When,
    pub source_url: String,
    pub mirror: Option<MirrorRow>,
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
    mirror: bool,
    interval: String,
    error: Option<(String, String)>,
    user_name: String,
}

async fn build<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
) -> Result<CodePage<'a>, crate::ui::UiError> {
    let mut conn = st.store.read().await.map_err(|e| fail(ctx, e))?;
    let rows = repos::list(&mut conn, project.id)
        .await
        .map_err(|e| fail(ctx, e))?;
    let mut mirrors = std::collections::HashMap::new();
    for r in rows.iter().filter(|r| r.kind == RepoKind::Mirror) {
        if let Some(m) = mirror::status(&mut conn, r.id)
            .await
            .map_err(|e| fail(ctx, e))?
        {
            mirrors.insert(r.id, m);
        }
    }
    drop(conn);
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
                source_url: r.source_url.clone().unwrap_or_default(),
                mirror: mirrors.remove(&r.id).map(|m| MirrorRow {
                    every: every(m.interval_minutes),
                    last: m.last_synced_at.map(When::of),
                    failed: m.last_status.as_deref() == Some("failed"),
                    error: m.last_error.unwrap_or_default(),
                    next: When::of(m.next_sync_at),
                }),
                name: r.name,
            })
            .collect(),
        name: String::new(),
        import_url: String::new(),
        mirror: false,
        interval: mirror::DEFAULT_INTERVAL_MINUTES.to_string(),
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
    let is_mirror = !form.get("mirror").is_empty();
    let interval_text = form.get("mirror_interval_minutes").trim().to_string();
    let interval = if is_mirror && !interval_text.is_empty() {
        match interval_text.parse::<u32>() {
            Ok(v) => Some(v),
            // Out of range on purpose, so the domain check names the field and the bounds.
            Err(_) => Some(0),
        }
    } else {
        None
    };
    let new = NewRepo {
        name: form.get("name").trim().to_string(),
        import_url: Some(form.get("import_url").trim().to_string()).filter(|u| !u.is_empty()),
        mirror: is_mirror,
        mirror_interval_minutes: interval,
    };
    match repos::create_with(
        &st.store,
        &repos_root(&st),
        (project.id, &project.slug),
        &ctx.actor(),
        &new,
        Some(&st.secrets),
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
            p.mirror = is_mirror;
            if !interval_text.is_empty() {
                p.interval = interval_text;
            }
            let field = field_of(&e).unwrap_or("name").to_string();
            p.error = Some((field, e.message));
            Ok(render_status(
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                &p,
            ))
        }
    }
}

fn every(minutes: i64) -> String {
    match minutes {
        m if m % 1440 == 0 => format!("every {} day(s)", m / 1440),
        m if m % 60 == 0 => format!("every {} hour(s)", m / 60),
        m => format!("every {m} minute(s)"),
    }
}

async fn sync_mirror(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> UiResult {
    let project = ctx.project()?;
    let back = format!("/projects/{}/code", project.slug);
    let repo = repos::get(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        &name,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let out = mirror::sync(
        &st.store,
        &repos_root(&st),
        &st.secrets,
        &repo,
        &project.slug,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    let message = match out.last_status.as_deref() {
        Some("ok") => format!(
            "Fetched {} from its source: {} ref(s) moved.",
            repo.name,
            out.refs_moved.unwrap_or(0)
        ),
        _ => format!(
            "Fetching {} failed: {}",
            repo.name,
            out.last_error.unwrap_or_default()
        ),
    };
    Ok(redirect_with_flash(&back, &message))
}
