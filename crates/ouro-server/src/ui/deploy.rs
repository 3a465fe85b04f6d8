//! Deploy in the web UI: the environments of a project (`/projects/{slug}/deploy`: what version
//! runs where), an environment's page (services, traffic split, each replica's health, recent
//! deployments, the rollback button and a deploy form; its live panel refreshes itself), and a
//! deployment's page with its steps as they happen. Thin: everything goes through
//! `ouro_deploy::engine` and `api::deploy`.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use ouro_core::{ErrorCode, Permission, Role};
use ouro_deploy::deployments::{self, Deployment};
use ouro_deploy::engine::EnvironmentView;
use ouro_store::projects::Project;

use crate::AppState;
use crate::extract::{Ctx, Path};
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render};

pub fn register(reg: &mut Registry) {
    let viewer = Permission::Project(Role::Viewer);
    let maintainer = Permission::Project(Role::Maintainer);
    reg.route(Method::GET, "/projects/{slug}/deploy", viewer, index);
    reg.route(
        Method::GET,
        "/projects/{slug}/environments/{env}",
        viewer,
        environment,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/environments/{env}/panel",
        viewer,
        panel,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/environments/{env}/rollback",
        maintainer,
        rollback_post,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/environments/{env}/deploy",
        maintainer,
        deploy_post,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/deployments/{id}",
        viewer,
        deployment,
    );
}

/// One environment on the index.
pub struct EnvRow {
    pub name: String,
    pub version: String,
    pub previous: String,
    pub last: Option<Deployment>,
}

#[derive(Template)]
#[template(path = "deploy.html")]
struct Index<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    envs: Vec<EnvRow>,
}

async fn index(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let mut c = st.store.read().await.map_err(|e| fail(&ctx, e))?;
    let records = deployments::environments(&mut c, project.id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let recent = deployments::list(&mut c, project.id, None, None, 200)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let mut names: Vec<String> = records.iter().map(|r| r.name.clone()).collect();
    // Environments of the promotion path that have seen no deployment yet are listed too.
    drop(c);
    if let Ok(path) = crate::api::promotions::environments_of(&st, project.id, None).await {
        for e in path.environments {
            if !names.contains(&e.environment.name) {
                names.push(e.environment.name);
            }
        }
    }
    for d in &recent {
        if !names.contains(&d.environment) {
            names.push(d.environment.clone());
        }
    }
    let envs = names
        .into_iter()
        .map(|name| {
            let rec = records.iter().find(|r| r.name == name);
            EnvRow {
                version: rec.and_then(|r| r.live_version.clone()).unwrap_or_default(),
                previous: rec
                    .and_then(|r| r.previous_version.clone())
                    .unwrap_or_default(),
                last: recent.iter().find(|d| d.environment == name).cloned(),
                name,
            }
        })
        .collect();
    let p = Index {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "deploy",
        manage: ctx.role() >= Some(Role::Maintainer),
        envs,
    };
    Ok(flash.finish(render(&p)))
}

/// A deployment as a table row.
pub struct DeployRow {
    pub d: Deployment,
    pub when: When,
}

impl DeployRow {
    fn of(d: Deployment) -> DeployRow {
        DeployRow {
            when: When::of(d.started_at),
            d,
        }
    }
}

#[derive(Template)]
#[template(path = "deploy_env_panel.html")]
struct Panel<'a> {
    project: &'a Project,
    chrome: Chrome,
    env: String,
    view: Option<EnvironmentView>,
    rows: Vec<DeployRow>,
    manage: bool,
}

#[derive(Template)]
#[template(path = "deploy_environment.html")]
struct EnvPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    panel: Panel<'a>,
    releases: Vec<String>,
}

async fn panel_of<'a>(
    st: &AppState,
    ctx: &Ctx,
    project: &'a Project,
    env: &str,
) -> Result<Panel<'a>, crate::ui::UiError> {
    let view = match st.deploy.view((project.id, &project.slug), env).await {
        Ok(v) => Some(v),
        Err(e) if e.code == ErrorCode::DeployEnvironmentNotFound => None,
        Err(e) => return Err(fail(ctx, e)),
    };
    let rows = view
        .as_ref()
        .map(|v| v.deployments.iter().cloned().map(DeployRow::of).collect())
        .unwrap_or_default();
    Ok(Panel {
        project,
        chrome: Chrome::of(ctx),
        env: env.to_string(),
        view,
        rows,
        manage: ctx.role() >= Some(Role::Maintainer) && ctx.principal.is_some(),
    })
}

async fn environment(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, env)): Path<(String, String)>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let panel = panel_of(&st, &ctx, project, &env).await?;
    let releases = ouro_store::q(
        "SELECT version FROM release_releases WHERE project_id = $1 AND state = 'published' \
         ORDER BY published_at DESC, id DESC LIMIT 50",
    )
    .bind(project.id)
    .fetch_all(&mut st.store.read().await.map_err(|e| fail(&ctx, e))?)
    .await
    .map_err(|e| fail(&ctx, e))?
    .iter()
    .filter_map(|r| r.text("version").ok())
    .collect();
    let p = EnvPage {
        chrome: Chrome::of(&ctx).with_flash(flash.message()),
        project,
        phases: PHASES,
        active: "deploy",
        manage: ctx.role() >= Some(Role::Maintainer),
        panel,
        releases,
    };
    Ok(flash.finish(render(&p)))
}

async fn panel(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, env)): Path<(String, String)>,
) -> UiResult {
    let project = ctx.project()?;
    Ok(render(&panel_of(&st, &ctx, project, &env).await?))
}

async fn rollback_post(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, env)): Path<(String, String)>,
    _form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let to = format!("/projects/{}/environments/{env}", project.slug);
    match st
        .deploy
        .rollback((project.id, &project.slug), &env, &ctx.actor())
        .await
    {
        Ok(d) => Ok(redirect_with_flash(
            &to,
            &format!("Rolling back {env} to {} (deployment {}).", d.version, d.id),
        )),
        Err(e) if e.code.http_status() < 500 => Ok(redirect_with_flash(&to, &e.message)),
        Err(e) => Err(fail(&ctx, e)),
    }
}

async fn deploy_post(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, env)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let to = format!("/projects/{}/environments/{env}", project.slug);
    let version = form.get("version");
    match st
        .deploy
        .deploy(
            (project.id, &project.slug),
            &env,
            version.trim(),
            &ctx.actor(),
            None,
        )
        .await
    {
        Ok(d) => Ok(redirect_with_flash(
            &to,
            &format!("Deploying {} to {env} (deployment {}).", d.version, d.id),
        )),
        Err(e) if e.code.http_status() < 500 => Ok(redirect_with_flash(&to, &e.message)),
        Err(e) => Err(fail(&ctx, e)),
    }
}

#[derive(Template)]
#[template(path = "deploy_deployment.html")]
struct DeploymentPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    row: DeployRow,
}

async fn deployment(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let d = deployments::get(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        id,
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    Ok(render(&DeploymentPage {
        chrome: Chrome::of(&ctx),
        project,
        phases: PHASES,
        active: "deploy",
        manage: ctx.role() >= Some(Role::Maintainer),
        row: DeployRow::of(d),
    }))
}
