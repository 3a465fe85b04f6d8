//! Release: a release's promotion path in the web UI (`/projects/{slug}/releases/{version}/promotions`):
//! each environment with its state, each gate's state and detail, the approvals with who, when and
//! comment, and the request, approve and reject forms. Thin: everything goes through
//! `api::promotions`.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use ouro_core::{ErrorCode, Permission, Role};
use ouro_store::projects::Project;

use crate::AppState;
use crate::api::promotions::{
    ReleasePromotions, decide_promotion, release_promotions, request_promotion,
};
use crate::extract::{Ctx, Path};
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render};

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/projects/{slug}/releases/{version}/promotions",
        Permission::Project(Role::Viewer),
        page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/releases/{version}/promotions",
        Permission::Project(Role::Developer),
        request_post,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/releases/{version}/promotions/{id}/decide",
        Permission::Project(Role::Viewer),
        decide_post,
    );
}

/// One approval row.
pub struct ApprovalRow {
    pub user: String,
    pub decision: String,
    pub comment: String,
    pub when: When,
}

/// One environment card.
pub struct EnvRow {
    pub name: String,
    pub after: String,
    pub state: String,
    pub promotion: i64,
    pub requested_by: String,
    pub requested: Option<When>,
    pub decided: Option<When>,
    pub reason: String,
    pub gates: Vec<ouro_release::gates::GateState>,
    pub approvals: Vec<ApprovalRow>,
    /// The signed-in user may request it now (developer, not open or approved yet, the one in
    /// front approved).
    pub can_request: bool,
    /// An approvals gate exists and the promotion is open.
    pub can_decide: bool,
}

#[derive(Template)]
#[template(path = "promotions.html")]
struct Page<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    r: ReleasePromotions,
    envs: Vec<EnvRow>,
}

async fn page(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let r = release_promotions(&st, project.id, &version)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let developer = ctx.role() >= Some(Role::Developer) && ctx.principal.is_some();
    let approved: Vec<&str> = r
        .environments
        .iter()
        .filter(|e| e.state == "approved")
        .map(|e| e.environment.name.as_str())
        .collect();
    let envs = r
        .environments
        .iter()
        .map(|e| {
            let p = e.promotion.as_ref();
            let open = matches!(e.state.as_str(), "requested" | "approved");
            EnvRow {
                name: e.environment.name.clone(),
                after: e.environment.after.clone().unwrap_or_default(),
                state: e.state.clone(),
                promotion: p.map_or(0, |p| p.id),
                requested_by: p.map(|p| p.requested_by.clone()).unwrap_or_default(),
                requested: p.map(|p| When::of(p.requested_at)),
                decided: p.and_then(|p| p.decided_at).map(When::of),
                reason: p.and_then(|p| p.reason.clone()).unwrap_or_default(),
                gates: p.map(|p| p.gates.clone()).unwrap_or_default(),
                approvals: p
                    .map(|p| {
                        p.approvals
                            .iter()
                            .map(|a| ApprovalRow {
                                user: a.user.clone(),
                                decision: a.decision.clone(),
                                comment: a.comment.clone(),
                                when: When::of(a.at),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                can_request: developer
                    && r.state == "published"
                    && !open
                    && e.environment
                        .after
                        .as_deref()
                        .is_none_or(|a| approved.contains(&a)),
                can_decide: ctx.principal.is_some()
                    && e.state == "requested"
                    && e.environment.approvals.is_some(),
            }
        })
        .collect();
    let p = Page {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "release",
        manage: ctx.role() >= Some(Role::Maintainer),
        r,
        envs,
    };
    Ok(flash.finish(render(&p)))
}

async fn request_post(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let to = format!("/projects/{}/releases/{version}/promotions", project.slug);
    let env = form.get("environment");
    match request_promotion(&st, &ctx, &version, &env).await {
        Ok(p) => Ok(redirect_with_flash(
            &to,
            &format!("Promotion to {} {}.", p.environment, p.state),
        )),
        Err(e) if e.code.http_status() < 500 && e.code != ErrorCode::ReleaseNotFound => {
            Ok(redirect_with_flash(&to, &e.message))
        }
        Err(e) => Err(fail(&ctx, e)),
    }
}

async fn decide_post(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, version, id)): Path<(String, String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let to = format!("/projects/{}/releases/{version}/promotions", project.slug);
    let approve = form.get("decision") != "reject";
    match decide_promotion(&st, &ctx, id, approve, &form.get("comment")).await {
        Ok(p) => Ok(redirect_with_flash(
            &to,
            &format!(
                "{} recorded; the promotion to {} is {}.",
                if approve { "Approval" } else { "Rejection" },
                p.environment,
                p.state
            ),
        )),
        Err(e) if e.code.http_status() < 500 && e.code != ErrorCode::PromotionNotFound => {
            Ok(redirect_with_flash(&to, &e.message))
        }
        Err(e) => Err(fail(&ctx, e)),
    }
}
