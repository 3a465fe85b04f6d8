//! Project settings → Variables and secrets: the pipeline variables (with values) and secrets
//! (names only) of a project, a form to add or replace each, and delete buttons. Developers see
//! the lists; maintainers change them (the same permissions as the API).

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use ouro_build::secrets::{self, Kind};
use ouro_core::{ErrorCode, Permission, Role};
use ouro_store::projects::Project;

use crate::AppState;
use crate::api::build_vars::{delete_value, set_value};
use crate::extract::Ctx;
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, field_of, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render_status};

pub fn register(reg: &mut Registry) {
    let path = "/projects/{slug}/settings/variables";
    reg.route(
        Method::GET,
        path,
        Permission::Project(Role::Developer),
        page,
    );
    reg.route(
        Method::POST,
        path,
        Permission::Project(Role::Maintainer),
        save,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/settings/variables/delete",
        Permission::Project(Role::Maintainer),
        delete,
    );
}

/// A row of either table.
pub struct Line {
    pub name: String,
    /// Empty for every environment.
    pub environment: String,
    /// Variables only.
    pub value: String,
    pub updated_by: String,
    pub updated: When,
}

/// What the person typed, shown again next to an error (never a secret's value).
#[derive(Default)]
pub struct Draft {
    pub name: String,
    pub environment: String,
    pub value: String,
    pub name_error: Option<String>,
    pub value_error: Option<String>,
    pub environment_error: Option<String>,
}

#[derive(Template)]
#[template(path = "build_vars.html")]
struct Page<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    /// Maintainers see the settings links and the forms.
    manage: bool,
    vars: Vec<Line>,
    secrets: Vec<Line>,
    var_draft: Draft,
    secret_draft: Draft,
    min_secret: usize,
}

fn lines(entries: Vec<secrets::Entry>) -> Vec<Line> {
    entries
        .into_iter()
        .map(|e| Line {
            name: e.name,
            environment: e.environment,
            value: e.value.unwrap_or_default(),
            updated_by: e.updated_by,
            updated: When::of(e.updated_at),
        })
        .collect()
}

async fn build<'a>(st: &AppState, ctx: &'a Ctx) -> Result<Page<'a>, crate::ui::UiError> {
    let project = ctx.project()?;
    let mut conn = st.store.read().await?;
    let vars = lines(secrets::list(&mut conn, project.id, Kind::Variable).await?);
    let secrets = lines(secrets::list(&mut conn, project.id, Kind::Secret).await?);
    Ok(Page {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "variables",
        manage: ctx.role() >= Some(Role::Maintainer),
        vars,
        secrets,
        var_draft: Draft::default(),
        secret_draft: Draft::default(),
        min_secret: ouro_build::mask::MIN_SECRET_LEN,
    })
}

fn no_store(mut res: axum::response::Response) -> axum::response::Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let mut p = build(&st, &ctx).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(no_store(render_status(StatusCode::OK, &p))))
}

fn kind_of(form: &Form) -> Kind {
    if form.get("kind") == "secret" {
        Kind::Secret
    } else {
        Kind::Variable
    }
}

fn back(slug: &str) -> String {
    format!("/projects/{slug}/settings/variables")
}

fn scope_text(env: &str) -> String {
    if env.is_empty() {
        "all environments".into()
    } else {
        format!("environment {env}")
    }
}

async fn save(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let kind = kind_of(&form);
    let name = form.get("name").trim().to_string();
    let environment = form.get("environment").trim().to_string();
    let value = form.get("value");
    match set_value(&st, &ctx, kind, &name, &environment, &value).await {
        Ok((_, created)) => {
            let slug = &ctx.project()?.slug;
            let what = match kind {
                Kind::Variable => "Variable",
                Kind::Secret => "Secret",
            };
            let verb = if created { "added" } else { "updated" };
            Ok(redirect_with_flash(
                &back(slug),
                &format!("{what} {name} {verb} for {}.", scope_text(&environment)),
            ))
        }
        Err(e) => {
            let mut draft = Draft {
                name,
                environment,
                // A secret is never echoed back into the page.
                value: if kind == Kind::Variable {
                    value
                } else {
                    String::new()
                },
                ..Draft::default()
            };
            match (e.code, field_of(&e)) {
                (ErrorCode::InvalidVariableName, _) => draft.name_error = Some(e.message),
                (ErrorCode::InvalidVariableValue, _) => draft.value_error = Some(e.message),
                (ErrorCode::ValidationFailed, Some("environment")) => {
                    draft.environment_error = Some(e.message)
                }
                _ => return Err(fail(&ctx, e)),
            }
            let mut p = build(&st, &ctx).await?;
            match kind {
                Kind::Variable => p.var_draft = draft,
                Kind::Secret => p.secret_draft = draft,
            }
            Ok(no_store(render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &p,
            )))
        }
    }
}

async fn delete(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let kind = kind_of(&form);
    let name = form.get("name");
    let environment = form.get("environment");
    let slug = ctx.project()?.slug.clone();
    match delete_value(&st, &ctx, kind, &name, &environment).await {
        Ok(()) => Ok(redirect_with_flash(
            &back(&slug),
            &format!(
                "{} {name} deleted for {}.",
                match kind {
                    Kind::Variable => "Variable",
                    Kind::Secret => "Secret",
                },
                scope_text(&environment)
            ),
        )),
        Err(e) if e.code == ErrorCode::VariableNotFound => Ok(redirect_with_flash(
            &back(&slug),
            &format!("{name} was already deleted."),
        )),
        Err(e) => Err(fail(&ctx, e)),
    }
}
