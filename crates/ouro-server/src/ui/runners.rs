//! Instance administration: runners (last contact, current jobs, drain) and registration tokens.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use ouro_build::runner::server::{self as rs, RunnerInfo};
use ouro_core::Permission;

use crate::AppState;
use crate::extract::Ctx;
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, redirect_with_flash};
use crate::ui::{Chrome, Form, UiResult, render};

pub fn register(reg: &mut Registry) {
    use Permission::Admin;
    reg.route(Method::GET, "/admin/runners", Admin, page);
    reg.route(Method::POST, "/admin/runners/drain", Admin, drain);
    reg.route(Method::POST, "/admin/runners/tokens", Admin, new_token);
}

pub struct RunnerRow {
    pub info: RunnerInfo,
    pub contact: Option<When>,
}

#[derive(Template)]
#[template(path = "admin_runners.html")]
struct RunnersPage {
    chrome: Chrome,
    runners: Vec<RunnerRow>,
    /// A registration token just created (shown once).
    new_token: Option<String>,
}

async fn build(st: &AppState, ctx: &Ctx) -> Result<RunnersPage, crate::ui::UiError> {
    let runners = rs::list_runners(&st.store)
        .await
        .map_err(|e| fail(ctx, e))?
        .into_iter()
        .map(|info| RunnerRow {
            contact: info.last_contact_at.map(When::of),
            info,
        })
        .collect();
    Ok(RunnersPage {
        chrome: Chrome::of(ctx),
        runners,
        new_token: None,
    })
}

async fn page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let mut p = build(&st, &ctx).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render(&p)))
}

async fn drain(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let id = form.get("id");
    let draining = form.get("draining") != "false";
    let r = rs::set_draining(&st.store, &id, draining, &ctx.actor())
        .await
        .map_err(|e| fail(&ctx, e))?;
    let msg = if r.draining {
        format!(
            "Runner {} is draining: it finishes its current jobs and takes no new ones.",
            r.name
        )
    } else {
        format!("Runner {} takes jobs again.", r.name)
    };
    Ok(redirect_with_flash("/admin/runners", &msg))
}

async fn new_token(State(st): State<AppState>, ctx: Ctx, _form: Form) -> UiResult {
    let token = rs::create_registration_token(&st.store, &ctx.actor())
        .await
        .map_err(|e| fail(&ctx, e))?;
    let mut p = build(&st, &ctx).await?;
    p.new_token = Some(token);
    Ok(render(&p))
}
