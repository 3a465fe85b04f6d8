//! Project pages: list, create, overview.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_store::PageReq;
use ouro_store::projects::{self, Project, Visibility};

use crate::AppState;
use crate::extract::Ctx;
use crate::registry::Registry;
use crate::ui::common::Flash;
use crate::ui::{Chrome, Form, UiError, UiResult, render, render_status};

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    use Permission::{Authenticated, Public};
    reg.route(Method::GET, "/projects", Public, list);
    reg.route(Method::GET, "/projects/new", Authenticated, new_page);
    reg.route(Method::POST, "/projects", Authenticated, create);
    reg.route(
        Method::GET,
        "/projects/{slug}",
        InProject(Role::Viewer),
        overview,
    );
}

/// One phase of the loop as the project navigation shows it.
pub struct PhaseLink {
    pub name: &'static str,
    pub path: &'static str,
    pub blurb: &'static str,
    /// Whether the phase has pages yet; phases light up as their issues land.
    pub ready: bool,
}

pub const PHASES: &[PhaseLink] = &[
    PhaseLink {
        name: "Plan",
        path: "plan",
        blurb: "Backlog, boards, sprints and the roadmap.",
        ready: true,
    },
    PhaseLink {
        name: "Code",
        path: "code",
        blurb: "Repositories, change requests, reviews and the merge gate.",
        ready: true,
    },
    PhaseLink {
        name: "Build",
        path: "pipelines",
        blurb: "Pipelines as code, runners, logs and artifacts.",
        ready: true,
    },
    PhaseLink {
        name: "Test",
        path: "test",
        blurb: "Test reports, flaky tests, coverage and quality gates.",
        ready: false,
    },
    PhaseLink {
        name: "Release",
        path: "releases",
        blurb: "Versions, notes, bundles and approvals.",
        ready: true,
    },
    PhaseLink {
        name: "Deploy",
        path: "deploy",
        blurb: "Environments, blue-green, canary, rollback and flags.",
        ready: true,
    },
    PhaseLink {
        name: "Operate",
        path: "operate",
        blurb: "Health checks, self-healing, scaling and incidents.",
        ready: false,
    },
    PhaseLink {
        name: "Monitor",
        path: "monitor",
        blurb: "Metrics, logs, alerts, DORA and feedback.",
        ready: false,
    },
];

#[derive(Template)]
#[template(path = "projects.html")]
struct ListPage {
    chrome: Chrome,
    projects: Vec<Project>,
}

#[derive(Default)]
pub struct NewErrors {
    pub form: Option<String>,
    pub name: Option<String>,
    pub slug: Option<String>,
}

#[derive(Template)]
#[template(path = "project_new.html")]
struct NewPage {
    chrome: Chrome,
    name: String,
    slug: String,
    description: String,
    visibility: String,
    errors: NewErrors,
}

pub struct EventLine {
    pub time: String,
    pub kind: String,
    pub actor: String,
}

#[derive(Template)]
#[template(path = "project.html")]
struct OverviewPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    role: &'static str,
    phases: &'static [PhaseLink],
    active: &'static str,
    /// Maintainers see the settings and webhooks links.
    manage: bool,
    events: Vec<EventLine>,
}

async fn list(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let user = ctx.principal.as_ref().map(|p| &p.user);
    let page = projects::list_visible(
        &mut st.store.read().await?,
        user,
        PageReq::new(0, Some(500)),
        None,
    )
    .await?;
    let chrome = Chrome::of(&ctx).with_flash(flash.message());
    Ok(flash.finish(render(&ListPage {
        chrome,
        projects: page.items,
    })))
}

async fn new_page(ctx: Ctx) -> UiResult {
    Ok(render(&NewPage {
        chrome: Chrome::of(&ctx),
        name: String::new(),
        slug: String::new(),
        description: String::new(),
        visibility: "private".into(),
        errors: NewErrors::default(),
    }))
}

async fn create(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let user = ctx.user()?;
    let (name, slug, description) = (
        form.get("name"),
        form.get("slug").trim().to_string(),
        form.get("description"),
    );
    let visibility = form.get("visibility");
    let vis = Visibility::parse(&visibility).unwrap_or(Visibility::Private);
    match projects::create(&st.store, user, &slug, &name, &description, vis).await {
        Ok(p) => Ok(Redirect::to(&format!("/projects/{}", p.slug)).into_response()),
        Err(e) => {
            let e: OuroError = e.into();
            let mut errors = NewErrors::default();
            match (e.code, e.details.as_ref().and_then(|d| d["field"].as_str())) {
                (ErrorCode::InvalidSlug | ErrorCode::SlugTaken, _) => errors.slug = Some(e.message),
                (ErrorCode::ValidationFailed, Some("name")) => errors.name = Some(e.message),
                (ErrorCode::ValidationFailed, _) => errors.form = Some(e.message),
                _ => return Err(UiError(e, ctx.principal.clone())),
            }
            Ok(render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &NewPage {
                    chrome: Chrome::of(&ctx),
                    name,
                    slug,
                    description,
                    visibility: vis.as_str().into(),
                    errors,
                },
            ))
        }
    }
}

async fn overview(State(st): State<AppState>, ctx: Ctx) -> UiResult {
    let project = ctx.project()?;
    let mut conn = st.store.read().await?;
    let events = ouro_store::events::recent(&mut conn, project.id, 20)
        .await?
        .iter()
        .map(|e| EventLine {
            time: ouro_core::time::rfc3339(e.time),
            kind: e.kind.clone(),
            actor: e.actor.clone(),
        })
        .collect();
    Ok(render(&OverviewPage {
        chrome: Chrome::of(&ctx),
        project,
        role: ctx.role().map(Role::as_str).unwrap_or("viewer"),
        phases: PHASES,
        active: "",
        manage: ctx.role() >= Some(ouro_core::Role::Maintainer),
        events,
    }))
}
