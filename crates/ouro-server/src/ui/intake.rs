//! Intake pages: the public feedback form of a project (`/p/{slug}/feedback`, no sign-in) and
//! the triage page under Plan.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_plan::intake::{self, Decision, Feedback, Intake};
use ouro_store::projects::{Project, Visibility};

use crate::AppState;
use crate::extract::{Ctx, Path};
use crate::registry::Registry;
use crate::ui::common::{Flash, fail, field_of, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render_status};

/// Submissions allowed per client address in the window.
pub const THROTTLE_PER_IP: u32 = 5;
pub const THROTTLE_WINDOW_SECS: u64 = 600;
/// The honeypot field: hidden by CSS, so only robots fill it in.
pub const HONEYPOT: &str = "website";

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    reg.route(
        Method::GET,
        "/p/{slug}/feedback",
        Permission::Public,
        form_page,
    );
    reg.route(
        Method::POST,
        "/p/{slug}/feedback",
        Permission::Public,
        submit,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/plan/triage",
        InProject(Role::Viewer),
        triage_page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/triage/settings",
        InProject(Role::Maintainer),
        settings,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/triage/{key}",
        InProject(Role::Developer),
        decide,
    );
}

#[derive(Template)]
#[template(path = "feedback.html")]
struct FeedbackPage {
    chrome: Chrome,
    slug: String,
    name: String,
    sent: bool,
    title: String,
    body: String,
    contact: String,
    error: Option<String>,
    error_field: String,
}

fn closed(ctx: &Ctx) -> crate::ui::UiError {
    fail(
        ctx,
        OuroError::new(
            ErrorCode::ProjectNotFound,
            "this project has no public feedback form",
        ),
    )
}

/// The project, if its public form is open: public projects only, and switched on.
async fn open_project(st: &AppState, ctx: &Ctx, slug: &str) -> Result<Project, crate::ui::UiError> {
    let mut c = st.store.read().await.map_err(|e| fail(ctx, e))?;
    let project = ouro_store::projects::by_slug(&mut c, slug)
        .await
        .map_err(|e| fail(ctx, e))?
        .filter(|p| p.visibility == Visibility::Public)
        .ok_or_else(|| closed(ctx))?;
    let on = intake::get(&mut c, project.id)
        .await
        .map_err(|e| fail(ctx, e))?
        .public_form;
    if !on {
        return Err(closed(ctx));
    }
    Ok(project)
}

fn blank(ctx: &Ctx, p: &Project) -> FeedbackPage {
    FeedbackPage {
        chrome: Chrome::of(ctx),
        slug: p.slug.clone(),
        name: p.name.clone(),
        sent: false,
        title: String::new(),
        body: String::new(),
        contact: String::new(),
        error: None,
        error_field: String::new(),
    }
}

async fn form_page(State(st): State<AppState>, ctx: Ctx, Path(slug): Path<String>) -> UiResult {
    let project = open_project(&st, &ctx, &slug).await?;
    Ok(render_status(StatusCode::OK, &blank(&ctx, &project)))
}

async fn submit(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    form: Form,
) -> UiResult {
    let project = open_project(&st, &ctx, &slug).await?;
    let mut page = blank(&ctx, &project);
    // A robot filled in the hidden field: say thanks and store nothing.
    if !form.get(HONEYPOT).trim().is_empty() {
        page.sent = true;
        return Ok(render_status(StatusCode::OK, &page));
    }
    let key = format!("feedback:{}", project.slug);
    if let Err(secs) = st.intake_throttle.check(&key, &ctx.client_ip) {
        return Err(fail(
            &ctx,
            OuroError::new(
                ErrorCode::IntakeThrottled,
                format!(
                    "too much feedback from your address; try again in up to {} minutes",
                    secs.div_ceil(60)
                ),
            )
            .with_details(serde_json::json!({"retry_after_secs": secs})),
        ));
    }
    let f = Feedback {
        title: form.get("title"),
        body: form.get("body"),
        contact: form.get("contact"),
    };
    match intake::submit(&st.store, &project, f.clone()).await {
        Ok(_) => {
            st.intake_throttle.fail(&key, &ctx.client_ip);
            page.sent = true;
            Ok(render_status(StatusCode::CREATED, &page))
        }
        Err(e) => {
            let e: OuroError = e.into();
            if e.code != ErrorCode::ValidationFailed {
                return Err(fail(&ctx, e));
            }
            page.error_field = field_of(&e).unwrap_or("").to_string();
            page.error = Some(e.message);
            page.title = f.title;
            page.body = f.body;
            page.contact = f.contact;
            Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
    }
}

pub struct TriageRow {
    pub key: String,
    pub title: String,
    pub item_type: String,
    pub state: String,
    pub description: String,
}

#[derive(Template)]
#[template(path = "plan_triage.html")]
struct TriagePage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    tab: &'static str,
    manage: bool,
    write: bool,
    intake: Intake,
    public_project: bool,
    rows: Vec<TriageRow>,
    types: Vec<String>,
}

async fn triage_page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let mut c = st.store.read().await.map_err(|e| fail(&ctx, e))?;
    let intake = intake::get(&mut c, project.id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let rows = intake::pending(&mut c, project.id)
        .await
        .map_err(|e| fail(&ctx, e))?
        .into_iter()
        .map(|i| TriageRow {
            key: i.key,
            title: i.title,
            item_type: i.item_type,
            state: i.state,
            description: i.description.chars().take(300).collect(),
        })
        .collect();
    drop(c);
    let types = ouro_plan::workflow::for_project(&st.store, project.id)
        .await
        .map_err(|e| fail(&ctx, e))?
        .types
        .into_iter()
        .filter(|t| {
            t.enabled
                && matches!(
                    t.kind,
                    ouro_plan::workflow::Kind::Story
                        | ouro_plan::workflow::Kind::Task
                        | ouro_plan::workflow::Kind::Bug
                )
        })
        .map(|t| t.name)
        .collect();
    let role = ctx.role();
    let p = TriagePage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "plan",
        tab: "triage",
        manage: role.is_some_and(|r| r >= Role::Maintainer),
        write: role.is_some_and(|r| r >= Role::Developer),
        intake,
        public_project: project.visibility == Visibility::Public,
        rows,
        types,
    };
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

async fn settings(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let on = !form.get("public_form").is_empty();
    intake::set(&st.store, project, &ctx.actor(), Intake { public_form: on })
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        &format!("/projects/{}/plan/triage", project.slug),
        if on {
            "The public feedback form is open."
        } else {
            "The public feedback form is closed."
        },
    ))
}

async fn decide(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let decision = match form.get("action").as_str() {
        "accept" => Decision::Accept {
            item_type: form.get("type"),
        },
        "merge" => Decision::Merge {
            into: form.get("into"),
        },
        "decline" => Decision::Decline {
            reason: form.get("reason"),
        },
        _ => {
            return Err(fail(
                &ctx,
                OuroError::field("action", "choose accept, merge or decline"),
            ));
        }
    };
    let item = intake::triage(&st.store, project, &ctx.actor(), &key, decision)
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        &format!("/projects/{}/plan/triage", project.slug),
        &format!("{} triaged.", item.key),
    ))
}
