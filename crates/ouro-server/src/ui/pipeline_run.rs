//! Build: the "Run pipeline" page (`/projects/{slug}/pipelines/run`): the pipelines with a
//! `manual` trigger in a repository at a ref (the default branch unless `?ref=` says otherwise),
//! with a form field per typed input (`string` text, `boolean` yes/no, `number`, `choice` a
//! select of its options). Posting starts them through `api::pipelines::trigger_manual`; a
//! refused value comes back on the form (422) with the message by its field.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_build::pipeline::{EnvValue, InputType};
use ouro_build::runs;
use ouro_code::repos::{self, Repo};
use ouro_core::{OuroError, Permission, Role};
use ouro_store::projects::Project;
use serde::Deserialize;

use crate::AppState;
use crate::api::repos::repos_root;
use crate::extract::{Ctx, Query};
use crate::registry::Registry;
use crate::ui::common::{fail, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render_status};

pub fn register(reg: &mut Registry) {
    reg.route(
        Method::GET,
        "/projects/{slug}/pipelines/run",
        Permission::Project(Role::Developer),
        page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/pipelines/run",
        Permission::Project(Role::Developer),
        start,
    );
}

/// One input field of the form.
pub struct Field {
    pub id: String,
    /// `string`, `boolean`, `number` or `choice`.
    pub kind: &'static str,
    pub description: String,
    pub required: bool,
    pub options: Vec<String>,
    /// The value shown: what was posted, else the default.
    pub value: String,
    pub error: Option<String>,
}

/// A manual pipeline at the ref.
pub struct ManualPipeline {
    pub name: String,
    pub file: String,
}

#[derive(Template)]
#[template(path = "build_run_new.html")]
struct RunPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    repos: Vec<String>,
    repo: String,
    git_ref: String,
    pipelines: Vec<ManualPipeline>,
    fields: Vec<Field>,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RunQuery {
    repo: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

fn kind_text(k: InputType) -> &'static str {
    match k {
        InputType::String => "string",
        InputType::Boolean => "boolean",
        InputType::Number => "number",
        InputType::Choice => "choice",
    }
}

fn value_text(v: &EnvValue) -> String {
    match v {
        EnvValue::String(s) => s.clone(),
        EnvValue::Bool(b) => b.to_string(),
        EnvValue::Int(i) => i.to_string(),
        EnvValue::Float(f) => f.to_string(),
    }
}

/// The manual pipelines of `repo` at `git_ref` and their inputs (by id; the first declaration
/// of an id wins). A ref that does not resolve has none.
async fn manual_pipelines(
    st: &AppState,
    repo: &Repo,
    git_ref: &str,
) -> (Vec<ManualPipeline>, Vec<Field>) {
    let dir = repo.dir(&repos_root(st));
    let d = dir.to_string_lossy().to_string();
    let mut sha = None;
    for full in [
        format!("refs/heads/{git_ref}"),
        format!("refs/tags/{git_ref}"),
        git_ref.to_string(),
    ] {
        if !full.starts_with("refs/") {
            continue;
        }
        let spec = format!("{full}^{{commit}}");
        if let Ok(s) = ouro_code::git::run(&[
            "-C",
            &d,
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ])
        .await
        {
            sha = Some(s.trim().to_string());
            break;
        }
    }
    let Some(sha) = sha else {
        return (Vec::new(), Vec::new());
    };
    let files = runs::pipeline_files(&dir, &sha).await.unwrap_or_default();
    let mut pipelines = Vec::new();
    let mut fields: BTreeMap<String, Field> = BTreeMap::new();
    for (file, bytes) in files {
        let Ok(p) = ouro_build::pipeline::parse(&file, &bytes) else {
            continue;
        };
        let Some(manual) = p.triggers().manual else {
            continue;
        };
        let stem = file
            .rsplit('/')
            .next()
            .unwrap_or(&file)
            .trim_end_matches(".yml")
            .to_string();
        pipelines.push(ManualPipeline {
            name: p.name.clone().unwrap_or(stem),
            file,
        });
        for (id, i) in manual.inputs {
            fields.entry(id.clone()).or_insert(Field {
                id,
                kind: kind_text(i.kind),
                description: i.description.unwrap_or_default(),
                required: i.required,
                value: i.default.as_ref().map(value_text).unwrap_or_default(),
                options: i.options,
                error: None,
            });
        }
    }
    (pipelines, fields.into_values().collect())
}

#[allow(clippy::too_many_arguments)]
async fn build<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
    repo_name: Option<String>,
    git_ref: Option<String>,
    posted: Option<&Form>,
    error: Option<OuroError>,
) -> Result<RunPage<'a>, crate::ui::UiError> {
    let list = repos::list(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        project.id,
    )
    .await
    .map_err(|e| fail(ctx, e))?;
    let repo = match &repo_name {
        Some(n) => list.iter().find(|r| &r.name == n),
        None => list.first(),
    };
    let (repo_name, git_ref, pipelines, mut fields) = match repo {
        Some(r) => {
            let git_ref = git_ref
                .filter(|g| !g.trim().is_empty())
                .unwrap_or_else(|| r.default_branch.clone());
            let (p, f) = manual_pipelines(st, r, git_ref.trim()).await;
            (r.name.clone(), git_ref, p, f)
        }
        None => (String::new(), String::new(), Vec::new(), Vec::new()),
    };
    let field_of_error = error
        .as_ref()
        .and_then(|e| e.details.as_ref())
        .and_then(|d| d["field"].as_str())
        .and_then(|f| f.strip_prefix("inputs."))
        .map(str::to_string);
    for f in &mut fields {
        if let Some(form) = posted {
            f.value = form.get(&format!("input.{}", f.id));
        }
        if field_of_error.as_deref() == Some(f.id.as_str()) {
            f.error = error.as_ref().map(|e| e.message.clone());
        }
    }
    let general = match (&error, &field_of_error) {
        (Some(e), Some(id)) if fields.iter().any(|f| &f.id == id) => {
            Some(format!("Check the input {id}: {}", e.message))
        }
        (Some(e), _) => Some(e.message.clone()),
        _ => None,
    };
    Ok(RunPage {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "pipelines",
        manage: ctx.role() >= Some(Role::Maintainer),
        repos: list.iter().map(|r| r.name.clone()).collect(),
        repo: repo_name,
        git_ref,
        pipelines,
        fields,
        error: general,
    })
}

async fn page(State(st): State<AppState>, ctx: Ctx, Query(q): Query<RunQuery>) -> UiResult {
    let project = ctx.project()?;
    let p = build(&st, &ctx, project, q.repo, q.git_ref, None, None).await?;
    Ok(render_status(StatusCode::OK, &p))
}

async fn start(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let repo = form.get("repo");
    let git_ref = form.get("ref");
    // Typed values from the fields the form declared; an empty optional field is left out so
    // the input's default applies.
    let mut inputs = BTreeMap::new();
    for (k, v) in &form.0 {
        let Some(id) = k.strip_prefix("input.") else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        let kind = form.get(&format!("type.{id}"));
        let value = match kind.as_str() {
            "boolean" if v == "true" || v == "false" => serde_json::Value::Bool(v == "true"),
            "number" => v
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(|n| match v.trim().parse::<i64>() {
                    Ok(i) => serde_json::Value::from(i),
                    Err(_) => serde_json::Value::Number(n),
                })
                .unwrap_or_else(|| serde_json::Value::String(v.clone())),
            _ => serde_json::Value::String(v.clone()),
        };
        inputs.insert(id.to_string(), value);
    }
    match crate::api::pipelines::trigger_manual(&st, &ctx, &repo, &git_ref, &inputs).await {
        Ok(list) => {
            let first = list.iter().map(|r| r.number).min().unwrap_or(0);
            let names: Vec<String> = list.iter().map(|r| format!("#{}", r.number)).collect();
            Ok(redirect_with_flash(
                &format!("/projects/{}/pipelines/{first}", project.slug),
                &format!("Started {}.", names.join(", ")),
            ))
        }
        Err(e) => {
            let status = crate::ui::change_requests::status_code(&e);
            if status.is_server_error() {
                return Err(fail(&ctx, e));
            }
            let p = build(
                &st,
                &ctx,
                project,
                Some(repo),
                Some(git_ref),
                Some(&form),
                Some(e),
            )
            .await?;
            Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &p))
        }
    }
}
