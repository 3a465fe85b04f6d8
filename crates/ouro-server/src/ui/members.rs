//! Project members: everyone who can see the project sees the list; maintainers add members,
//! change roles and remove members. Only owners hand out or take away the owner role.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_store::projects::{self, Member, Project};

use crate::AppState;
use crate::api::projects::check_owner_rule;
use crate::extract::Ctx;
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiError, UiResult, render, render_status};

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    reg.route(
        Method::GET,
        "/projects/{slug}/members",
        InProject(Role::Viewer),
        page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/members",
        InProject(Role::Maintainer),
        add,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/members/role",
        InProject(Role::Maintainer),
        change_role,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/members/remove",
        InProject(Role::Maintainer),
        remove,
    );
}

/// One `<option>` of a role picker.
pub struct RoleOption {
    pub value: &'static str,
    pub selected: bool,
}

pub struct MemberRow {
    pub user: String,
    pub role: &'static str,
    pub since: When,
    pub is_you: bool,
    /// Whether the viewer may change or remove this member (owners only touch owners).
    pub editable: bool,
    pub options: Vec<RoleOption>,
}

#[derive(Default)]
pub struct AddErrors {
    pub user: Option<String>,
    pub role: Option<String>,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    /// Maintainers see the settings and webhooks links.
    manage: bool,
    your_role: &'static str,
    can_manage: bool,
    members: Vec<MemberRow>,
    add_user: String,
    add_options: Vec<RoleOption>,
    add_errors: AddErrors,
    /// A refused change or removal, shown above the list.
    error: Option<String>,
}

/// Roles the caller may hand out: owners may grant every role, maintainers all but owner.
fn grantable(ctx: &Ctx) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|r| *r != Role::Owner || ctx.role() == Some(Role::Owner))
        .collect()
}

fn options(roles: &[Role], selected: Role) -> Vec<RoleOption> {
    roles
        .iter()
        .map(|r| RoleOption {
            value: r.as_str(),
            selected: *r == selected,
        })
        .collect()
}

async fn build<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
) -> Result<MembersPage<'a>, UiError> {
    let list: Vec<Member> = projects::members(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        project.id,
    )
    .await
    .map_err(|e| fail(ctx, e))?;
    let can_manage = ctx.role() >= Some(Role::Maintainer);
    let is_owner = ctx.role() == Some(Role::Owner);
    let roles = grantable(ctx);
    let me = ctx.principal.as_ref().map(|p| p.user.name.as_str());
    let members = list
        .into_iter()
        .map(|m| MemberRow {
            is_you: Some(m.user.as_str()) == me,
            editable: can_manage && (m.role != Role::Owner || is_owner),
            options: options(&roles, m.role),
            role: m.role.as_str(),
            since: When::of(m.since),
            user: m.user,
        })
        .collect();
    Ok(MembersPage {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "members",
        manage: ctx.role() >= Some(ouro_core::Role::Maintainer),
        your_role: ctx.role().map(Role::as_str).unwrap_or("viewer"),
        can_manage,
        members,
        add_user: String::new(),
        add_options: options(&roles, Role::Developer),
        add_errors: AddErrors::default(),
        error: None,
    })
}

async fn page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let mut p = build(&st, &ctx, project).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render(&p)))
}

fn back(project: &Project, msg: &str) -> Response {
    redirect_with_flash(&format!("/projects/{}/members", project.slug), msg)
}

/// The members page again with a refusal shown above the list, with the error's own status.
async fn refused(st: &AppState, ctx: &Ctx, project: &Project, e: OuroError) -> UiResult {
    let mut p = build(st, ctx, project).await?;
    p.error = Some(e.message);
    Ok(render_status(crate::auth::status_of(e.code), &p))
}

async fn current_role(
    st: &AppState,
    ctx: &Ctx,
    project: &Project,
    user: &str,
) -> Result<Option<Role>, UiError> {
    let list = projects::members(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        project.id,
    )
    .await
    .map_err(|e| fail(ctx, e))?;
    Ok(list.into_iter().find(|m| m.user == user).map(|m| m.role))
}

async fn add(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let user = form.get("user").trim().to_string();
    let role_text = form.get("role");
    let fail_with = |status: StatusCode, errors: AddErrors| {
        add_failed(&st, &ctx, project, &user, &role_text, status, errors)
    };
    if user.is_empty() {
        let e = AddErrors {
            user: Some("Enter the user name of the person to add.".into()),
            ..Default::default()
        };
        return fail_with(StatusCode::UNPROCESSABLE_ENTITY, e).await;
    }
    let Some(role) = Role::parse(&role_text) else {
        let e = AddErrors {
            role: Some("Choose one of the roles in the list.".into()),
            ..Default::default()
        };
        return fail_with(StatusCode::UNPROCESSABLE_ENTITY, e).await;
    };
    let old = current_role(&st, &ctx, project, &user).await?;
    if let Some(old) = old {
        let msg = format!(
            "{user} is already a member ({}); change their role in the list below.",
            old.as_str()
        );
        return fail_with(
            StatusCode::CONFLICT,
            AddErrors {
                user: Some(msg),
                ..Default::default()
            },
        )
        .await;
    }
    if let Err(e) = check_owner_rule(&ctx, None, Some(role)) {
        return fail_with(
            StatusCode::FORBIDDEN,
            AddErrors {
                role: Some(e.0.message),
                ..Default::default()
            },
        )
        .await;
    }
    match projects::set_member(&st.store, &ctx.actor(), project, &user, role).await {
        Ok(m) => Ok(back(
            project,
            &format!("{} was added as {}.", m.user, m.role.as_str()),
        )),
        Err(e) => {
            let e: OuroError = e.into();
            match e.code {
                ErrorCode::UserNotFound => {
                    let msg = format!(
                        "There is no user named {user:?}. An administrator can create the account first."
                    );
                    fail_with(
                        StatusCode::NOT_FOUND,
                        AddErrors {
                            user: Some(msg),
                            ..Default::default()
                        },
                    )
                    .await
                }
                _ => Err(fail(&ctx, e)),
            }
        }
    }
}

/// The members page again with the add form as it was submitted and its errors.
async fn add_failed(
    st: &AppState,
    ctx: &Ctx,
    project: &Project,
    user: &str,
    role_text: &str,
    status: StatusCode,
    errors: AddErrors,
) -> UiResult {
    let mut p = build(st, ctx, project).await?;
    p.add_user = user.to_string();
    if let Some(r) = Role::parse(role_text) {
        p.add_options = options(&grantable(ctx), r);
    }
    p.add_errors = errors;
    Ok(render_status(status, &p))
}

async fn change_role(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let user = form.get("user");
    let Some(role) = Role::parse(&form.get("role")) else {
        return refused(
            &st,
            &ctx,
            project,
            OuroError::new(
                ErrorCode::ValidationFailed,
                "Choose one of the roles in the list.",
            ),
        )
        .await;
    };
    let Some(old) = current_role(&st, &ctx, project, &user).await? else {
        let e = OuroError::new(
            ErrorCode::MemberNotFound,
            format!("{user:?} is not a member of this project."),
        );
        return refused(&st, &ctx, project, e).await;
    };
    if let Err(e) = check_owner_rule(&ctx, Some(old), Some(role)) {
        return refused(&st, &ctx, project, e.0).await;
    }
    match projects::set_member(&st.store, &ctx.actor(), project, &user, role).await {
        Ok(_) if old == role => Ok(back(
            project,
            &format!("{user} already is {}.", role.as_str()),
        )),
        Ok(m) => Ok(back(
            project,
            &format!("{} is now {}.", m.user, m.role.as_str()),
        )),
        Err(e) => refused_or_fail(&st, &ctx, project, e.into()).await,
    }
}

async fn remove(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let user = form.get("user");
    let Some(old) = current_role(&st, &ctx, project, &user).await? else {
        let e = OuroError::new(
            ErrorCode::MemberNotFound,
            format!("{user:?} is not a member of this project."),
        );
        return refused(&st, &ctx, project, e).await;
    };
    if let Err(e) = check_owner_rule(&ctx, Some(old), None) {
        return refused(&st, &ctx, project, e.0).await;
    }
    match projects::remove_member(&st.store, &ctx.actor(), project, &user).await {
        // Leaving a private project may take away access to it, so go somewhere that always works.
        Ok(()) if ctx.principal.as_ref().is_some_and(|p| p.user.name == user) => Ok(
            redirect_with_flash("/projects", &format!("You left {}.", project.name)),
        ),
        Ok(()) => Ok(back(
            project,
            &format!("{user} was removed from the project."),
        )),
        Err(e) => refused_or_fail(&st, &ctx, project, e.into()).await,
    }
}

/// Rule refusals (last owner, unknown member) are shown on the page; anything else is an error page.
async fn refused_or_fail(st: &AppState, ctx: &Ctx, project: &Project, e: OuroError) -> UiResult {
    match e.code {
        ErrorCode::LastOwner
        | ErrorCode::MemberNotFound
        | ErrorCode::UserNotFound
        | ErrorCode::Forbidden => refused(st, ctx, project, e).await,
        _ => Err(fail(ctx, e)),
    }
}
