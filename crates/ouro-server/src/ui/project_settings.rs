//! Project settings: name, description and visibility (maintainers), and deletion (owners).

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_store::projects::{self, Project, ProjectPatch, Visibility};

use crate::AppState;
use crate::extract::Ctx;
use crate::registry::Registry;
use crate::ui::common::{Flash, fail, field_of, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render, render_status};

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    reg.route(
        Method::GET,
        "/projects/{slug}/settings",
        InProject(Role::Maintainer),
        page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/settings",
        InProject(Role::Maintainer),
        save,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/delete",
        InProject(Role::Owner),
        delete,
    );
}

#[derive(Default)]
pub struct SettingsErrors {
    pub form: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub visibility: Option<String>,
    pub confirm: Option<String>,
}

/// What the user tried to save when someone else changed the project first.
pub struct Conflict {
    pub name: String,
    pub description: String,
    pub visibility: String,
}

#[derive(Template)]
#[template(path = "project_settings.html")]
struct SettingsPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    /// Maintainers see the settings and webhooks links.
    manage: bool,
    is_owner: bool,
    name: String,
    description: String,
    visibility: String,
    version: i64,
    errors: SettingsErrors,
    conflict: Option<Conflict>,
    confirm: String,
}

impl<'a> SettingsPage<'a> {
    /// The form filled with the project as stored.
    fn of(ctx: &Ctx, project: &'a Project) -> SettingsPage<'a> {
        SettingsPage {
            chrome: Chrome::of(ctx),
            project,
            phases: PHASES,
            active: "settings",
            manage: ctx.role() >= Some(ouro_core::Role::Maintainer),
            is_owner: ctx.role() == Some(Role::Owner),
            name: project.name.clone(),
            description: project.description.clone(),
            visibility: project.visibility.as_str().into(),
            version: project.version,
            errors: SettingsErrors::default(),
            conflict: None,
            confirm: String::new(),
        }
    }
}

async fn page(ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let mut page = SettingsPage::of(&ctx, project);
    page.chrome = page.chrome.with_flash(flash.message());
    Ok(flash.finish(render(&page)))
}

async fn save(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let (name, description, visibility) = (
        form.get("name"),
        form.get("description"),
        form.get("visibility"),
    );
    // Re-renders the form with what was typed, so nothing the user wrote is lost.
    let retry = |status: StatusCode, errors: SettingsErrors| {
        let mut p = SettingsPage::of(&ctx, project);
        p.name = name.clone();
        p.description = description.clone();
        p.visibility = visibility.clone();
        p.version = form.get("version").parse().unwrap_or(project.version);
        p.errors = errors;
        render_status(status, &p)
    };
    let Ok(version) = form.get("version").trim().parse::<i64>() else {
        let form_err =
            "The form is missing the project's version; reload the page and try again.".to_string();
        let errors = SettingsErrors {
            form: Some(form_err),
            ..Default::default()
        };
        return Ok(retry(StatusCode::UNPROCESSABLE_ENTITY, errors));
    };
    let Some(vis) = Visibility::parse(&visibility) else {
        let msg = "Choose private, internal or public.".to_string();
        let errors = SettingsErrors {
            visibility: Some(msg),
            ..Default::default()
        };
        return Ok(retry(StatusCode::UNPROCESSABLE_ENTITY, errors));
    };
    let patch = ProjectPatch {
        name: Some(name.clone()),
        description: Some(description.clone()),
        visibility: Some(vis),
    };
    match projects::update(&st.store, &ctx.actor(), &project.slug, Some(version), patch).await {
        Ok(p) => Ok(redirect_with_flash(
            &format!("/projects/{}/settings", p.slug),
            "Settings saved.",
        )),
        Err(e) => {
            let e: OuroError = e.into();
            match (e.code, field_of(&e)) {
                (ErrorCode::StaleVersion, _) => {
                    // Show the project as it is now (with its new version) and what the user tried,
                    // so they can apply their change again on top of the other one.
                    let current = projects::by_slug(
                        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
                        &project.slug,
                    )
                    .await
                    .map_err(|e| fail(&ctx, e))?
                    .ok_or_else(|| fail(&ctx, projects::not_found(&project.slug)))?;
                    let mut p = SettingsPage::of(&ctx, &current);
                    p.conflict = Some(Conflict {
                        name,
                        description,
                        visibility: vis.as_str().into(),
                    });
                    Ok(render_status(StatusCode::CONFLICT, &p))
                }
                (ErrorCode::ValidationFailed, Some("name")) => {
                    let errors = SettingsErrors {
                        name: Some(e.message),
                        ..Default::default()
                    };
                    Ok(retry(StatusCode::UNPROCESSABLE_ENTITY, errors))
                }
                (ErrorCode::ValidationFailed, Some("description")) => {
                    let errors = SettingsErrors {
                        description: Some(e.message),
                        ..Default::default()
                    };
                    Ok(retry(StatusCode::UNPROCESSABLE_ENTITY, errors))
                }
                _ => Err(fail(&ctx, e)),
            }
        }
    }
}

async fn delete(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let confirm = form.get("confirm").trim().to_string();
    if confirm != project.slug {
        let mut p = SettingsPage::of(&ctx, project);
        p.errors.confirm = Some(format!(
            "Type {} exactly to confirm; nothing was deleted.",
            project.slug
        ));
        p.confirm = confirm;
        return Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &p));
    }
    projects::delete(&st.store, &ctx.actor(), &project.slug)
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        "/projects",
        &format!("Project {} ({}) was deleted.", project.name, project.slug),
    ))
}
