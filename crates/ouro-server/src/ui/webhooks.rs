//! Webhook pages: the project's webhooks with a form to add one, and one webhook with its
//! delivery log, redelivery, editing and deletion. Maintainers only, like the API.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_store::projects::Project;
use ouro_store::webhooks::{self, Delivery, DeliveryStatus, Webhook, WebhookPatch};
use ouro_store::{PageReq, StoreError};

use crate::AppState;
use crate::api::PageQuery;
use crate::extract::{Ctx, Path, Query};
use crate::registry::Registry;
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiError, UiResult, render, render_status};

pub fn register(reg: &mut Registry) {
    let m = Permission::Project(Role::Maintainer);
    reg.route(Method::GET, "/projects/{slug}/webhooks", m, list_page);
    reg.route(Method::POST, "/projects/{slug}/webhooks", m, create);
    reg.route(Method::GET, "/projects/{slug}/webhooks/{id}", m, detail);
    reg.route(Method::POST, "/projects/{slug}/webhooks/{id}", m, update);
    reg.route(
        Method::POST,
        "/projects/{slug}/webhooks/{id}/delete",
        m,
        delete,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/webhooks/{id}/deliveries/{delivery}/redeliver",
        m,
        redeliver,
    );
}

/// A webhook as a table row.
pub struct HookLine {
    pub id: i64,
    pub url: String,
    pub kinds: String,
    pub active: bool,
    pub created: String,
}

impl HookLine {
    fn of(w: &Webhook) -> HookLine {
        HookLine {
            id: w.id,
            url: w.url.clone(),
            kinds: w.kinds.join(", "),
            active: w.active,
            created: ouro_core::time::rfc3339(w.created_at),
        }
    }
}

/// The secret shown once, right after creation.
pub struct Created {
    pub id: i64,
    pub secret: String,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct ListPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    /// Maintainers see the settings and webhooks links.
    manage: bool,
    hooks: Vec<HookLine>,
    created: Option<Created>,
    url: String,
    kinds: String,
    error: Option<String>,
}

/// A delivery as a row of the log.
pub struct DeliveryLine {
    pub id: i64,
    pub event: String,
    pub seq: i64,
    pub status: &'static str,
    pub status_class: &'static str,
    pub attempts: i64,
    pub response: String,
    pub time: String,
    pub next: String,
    pub error: String,
    pub duration: String,
    pub redelivery_of: String,
}

impl DeliveryLine {
    fn of(d: &Delivery) -> DeliveryLine {
        DeliveryLine {
            id: d.id,
            event: d
                .event_kind
                .clone()
                .unwrap_or_else(|| "(unknown event)".into()),
            seq: d.event_seq,
            status: d.status.as_str(),
            status_class: match d.status {
                DeliveryStatus::Succeeded => "status-ok",
                DeliveryStatus::Failed => "status-failed",
                DeliveryStatus::Pending => "status-pending",
            },
            attempts: d.attempts,
            response: d
                .response_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none".into()),
            time: ouro_core::time::rfc3339(d.updated_at),
            next: match (d.status, d.next_attempt_at) {
                (DeliveryStatus::Pending, Some(t)) => ouro_core::time::rfc3339(t),
                _ => String::new(),
            },
            error: d.error.clone().unwrap_or_default(),
            duration: d
                .duration_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_default(),
            redelivery_of: d.redelivery_of.map(|i| i.to_string()).unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct DetailPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    /// Maintainers see the settings and webhooks links.
    manage: bool,
    hook: HookLine,
    version: i64,
    url: String,
    kinds: String,
    deliveries: Vec<DeliveryLine>,
    older: Option<String>,
    error: Option<String>,
}

/// Kind patterns as typed in a text field: separated by commas, spaces or new lines.
fn parse_kinds(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n', '\r', '\t'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// A path id; one that is not a number is simply not found.
fn parse_id(raw: &str, code: ErrorCode, what: &str) -> Result<i64, OuroError> {
    raw.parse::<i64>().map_err(|_| {
        let shown: String = raw.chars().take(40).collect();
        OuroError::new(code, format!("there is no {what} {shown:?}"))
    })
}

/// An error page with the caller's frame.
fn ui_err(ctx: &Ctx, e: OuroError) -> UiError {
    UiError(e, ctx.principal.clone())
}

async fn hook_of(st: &AppState, ctx: &Ctx, raw: &str) -> Result<Webhook, UiError> {
    let id = parse_id(raw, ErrorCode::WebhookNotFound, "webhook").map_err(|e| ui_err(ctx, e))?;
    let p = ctx.project()?;
    webhooks::get(&mut st.store.read().await?, p.id, id)
        .await?
        .ok_or_else(|| ui_err(ctx, webhooks::not_found(id)))
}

async fn hook_lines(st: &AppState, project_id: i64) -> Result<Vec<HookLine>, StoreError> {
    let page = webhooks::list(
        &mut st.store.read().await?,
        project_id,
        PageReq::new(0, Some(webhooks::MAX_PER_PROJECT)),
    )
    .await?;
    Ok(page.items.iter().map(HookLine::of).collect())
}

async fn list_page(State(st): State<AppState>, ctx: Ctx) -> UiResult {
    let project = ctx.project()?;
    Ok(render(&ListPage {
        chrome: Chrome::of(&ctx),
        project,
        phases: PHASES,
        active: "webhooks",
        manage: ctx.role() >= Some(ouro_core::Role::Maintainer),
        hooks: hook_lines(&st, project.id).await?,
        created: None,
        url: String::new(),
        kinds: "*".into(),
        error: None,
    }))
}

/// True for errors the person can fix in the form (shown next to it rather than as an error page).
fn is_input_error(e: &OuroError) -> bool {
    matches!(
        e.code,
        ErrorCode::ValidationFailed | ErrorCode::StaleVersion
    )
}

async fn create(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let (url, kinds_text) = (form.get("url").trim().to_string(), form.get("kinds"));
    let secret = Some(form.get("secret")).filter(|s| !s.is_empty());
    let result =
        crate::webhooks::create_webhook(&st, &ctx, &url, &parse_kinds(&kinds_text), secret, true)
            .await;
    let (created, error, status) = match result {
        Ok((hook, secret)) => (
            Some(Created {
                id: hook.id,
                secret,
            }),
            None,
            StatusCode::CREATED,
        ),
        Err(e) if is_input_error(&e.0) => {
            (None, Some(e.0.message), StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(e) => return Err(UiError(e.0, ctx.principal.clone())),
    };
    let keep = error.is_some();
    // The page is rendered here, not redirected to, because the secret is shown this once.
    Ok(render_status(
        status,
        &ListPage {
            chrome: Chrome::of(&ctx),
            project,
            phases: PHASES,
            active: "webhooks",
            manage: ctx.role() >= Some(ouro_core::Role::Maintainer),
            hooks: hook_lines(&st, project.id).await?,
            created,
            url: if keep { url } else { String::new() },
            kinds: if keep { kinds_text } else { "*".into() },
            error,
        },
    ))
}

#[allow(clippy::too_many_arguments)]
async fn detail_page(
    st: &AppState,
    ctx: &Ctx,
    hook: &Webhook,
    page: PageReq,
    url: String,
    kinds: String,
    error: Option<String>,
    status: StatusCode,
) -> UiResult {
    let project = ctx.project()?;
    let log = webhooks::list_deliveries(&mut st.store.read().await?, hook.id, page).await?;
    Ok(render_status(
        status,
        &DetailPage {
            chrome: Chrome::of(ctx),
            project,
            phases: PHASES,
            active: "webhooks",
            manage: ctx.role() >= Some(ouro_core::Role::Maintainer),
            hook: HookLine::of(hook),
            version: hook.version,
            url,
            kinds,
            deliveries: log.items.iter().map(DeliveryLine::of).collect(),
            older: log.next_cursor,
            error,
        },
    ))
}

async fn detail(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> UiResult {
    let hook = hook_of(&st, &ctx, &id).await?;
    let page = q
        .to_req()
        .map_err(|e| UiError(e.0, ctx.principal.clone()))?;
    detail_page(
        &st,
        &ctx,
        &hook,
        page,
        hook.url.clone(),
        hook.kinds.join(", "),
        None,
        StatusCode::OK,
    )
    .await
}

async fn update(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let hook = hook_of(&st, &ctx, &id).await?;
    let project = ctx.project()?;
    let (url, kinds_text) = (form.get("url").trim().to_string(), form.get("kinds"));
    let patch = WebhookPatch {
        url: Some(url.clone()),
        kinds: Some(parse_kinds(&kinds_text)),
        active: Some(form.get("active") == "on"),
        secret_enc: None,
    };
    let version = form.get("version").parse::<i64>().ok();
    match webhooks::update(&st.store, &ctx.actor(), project, hook.id, version, patch).await {
        Ok(h) => Ok(
            Redirect::to(&format!("/projects/{}/webhooks/{}", project.slug, h.id)).into_response(),
        ),
        Err(e) => {
            let e: OuroError = e.into();
            if !is_input_error(&e) {
                return Err(UiError(e, ctx.principal.clone()));
            }
            let status = crate::auth::status_of(e.code);
            detail_page(
                &st,
                &ctx,
                &hook,
                PageReq::default(),
                url,
                kinds_text,
                Some(e.message),
                status,
            )
            .await
        }
    }
}

async fn delete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> UiResult {
    let hook = hook_of(&st, &ctx, &id).await?;
    let project = ctx.project()?;
    webhooks::delete(&st.store, &ctx.actor(), project, hook.id).await?;
    Ok(Redirect::to(&format!("/projects/{}/webhooks", project.slug)).into_response())
}

async fn redeliver(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id, delivery)): Path<(String, String, String)>,
) -> UiResult {
    let hook = hook_of(&st, &ctx, &id).await?;
    let delivery = parse_id(&delivery, ErrorCode::DeliveryNotFound, "delivery")
        .map_err(|e| ui_err(&ctx, e))?;
    crate::webhooks::redeliver_delivery(&st, &ctx, hook.id, delivery)
        .await
        .map_err(|e| UiError(e.0, ctx.principal.clone()))?;
    Ok(Redirect::to(&format!(
        "/projects/{}/webhooks/{}",
        ctx.project()?.slug,
        hook.id
    ))
    .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_from_a_text_field() {
        assert_eq!(
            super::parse_kinds(" project.*, cr.merged\n*  "),
            ["project.*", "cr.merged", "*"]
        );
        assert!(super::parse_kinds(" , ").is_empty());
    }
}
