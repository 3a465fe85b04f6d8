//! Project settings → Variables and secrets: the pipeline variables (with values) and secrets
//! (names only) of a project, a form to add or replace each, and delete buttons; and the
//! project's limit of jobs running at once. Developers see the lists; maintainers change them
//! (the same permissions as the API).

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
    reg.route(
        Method::POST,
        "/projects/{slug}/settings/variables/limit",
        Permission::Project(Role::Maintainer),
        save_limit,
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
    /// `build_settings.max_running_jobs`: none means no limit.
    limit: Option<i64>,
    /// What was typed into the limit field, shown again with its error.
    limit_draft: String,
    limit_error: Option<String>,
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
    let limit = ouro_build::triggers::max_running_jobs(&mut conn, project.id).await?;
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
        limit,
        limit_draft: limit.map(|n| n.to_string()).unwrap_or_default(),
        limit_error: None,
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

/// Sets (or, when the field is empty, removes) the project's limit of jobs running at once.
async fn save_limit(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let typed = form.get("max_running_jobs").trim().to_string();
    let project = ctx.project()?;
    let parsed = if typed.is_empty() {
        Ok(None)
    } else {
        typed.parse::<i64>().map(Some).map_err(|_| {
            ouro_core::OuroError::field("max_running_jobs", "1 to 10000, or null for no limit")
        })
    };
    let result = match parsed {
        Ok(max) => ouro_build::triggers::set_max_running_jobs(&st.store, project.id, max)
            .await
            .map(|()| max)
            .map_err(ouro_core::OuroError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(max) => Ok(redirect_with_flash(
            &back(&project.slug),
            &match max {
                Some(n) => format!("At most {n} jobs of this project run at once."),
                None => "No limit on the jobs of this project running at once.".into(),
            },
        )),
        Err(e) if field_of(&e) == Some("max_running_jobs") => {
            let mut p = build(&st, &ctx).await?;
            p.limit_draft = typed;
            p.limit_error = Some(format!(
                "`{}` is not a limit: a whole number from 1 to 10000, or empty for no limit.",
                p.limit_draft
            ));
            Ok(no_store(render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &p,
            )))
        }
        Err(e) => Err(fail(&ctx, e)),
    }
}
