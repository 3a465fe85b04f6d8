//! Code: a repository's settings page (`/projects/{slug}/code/{repo}/settings`, maintainers):
//! protected branches, secret scanning rules on/off, push size limits. One form saves them all
//! through `ouro_code::push_rules::save`, like `PUT .../push-rules`.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_code::push_rules::{self, ProtectedBranch, PushRole, PushRulesUpdate};
use ouro_code::{repos, secrets};
use ouro_core::{OuroError, Permission, Role};
use ouro_store::projects::Project;

use crate::AppState;
use crate::extract::{Ctx, Path};
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render, render_status};

pub fn register(reg: &mut Registry) {
    let path = "/projects/{slug}/code/{repo}/settings";
    reg.route(
        Method::GET,
        path,
        Permission::Project(Role::Maintainer),
        page,
    );
    reg.route(
        Method::POST,
        path,
        Permission::Project(Role::Maintainer),
        save,
    );
}

pub struct BranchRow {
    pub index: usize,
    pub pattern: String,
    pub role: &'static str,
    pub force: bool,
    pub delete: bool,
}

/// A refused push, newest first.
pub struct Refusal {
    pub when: When,
    pub pusher: String,
    pub refname: String,
    pub rule: String,
    pub message: String,
}

/// How many recent events of the repository are looked through for refusals, and how many
/// are shown.
const REFUSALS_SCANNED: i64 = 500;
const REFUSALS_SHOWN: usize = 10;

pub struct SecretRow {
    pub id: &'static str,
    pub title: &'static str,
    pub enabled: bool,
}

#[derive(Template)]
#[template(path = "code_settings.html")]
struct SettingsPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    repo: String,
    default_branch: String,
    custom: bool,
    branches: Vec<BranchRow>,
    roles: [&'static str; 3],
    secrets: Vec<SecretRow>,
    max_push_bytes: String,
    max_file_bytes: String,
    /// Protected tag patterns, comma-separated.
    protected_tags: String,
    server_push_bytes: u64,
    server_file_bytes: u64,
    allow_file: &'static str,
    refusals: Vec<Refusal>,
    error: Option<String>,
}

fn url(project: &Project, repo: &str) -> String {
    format!("/projects/{}/code/{repo}/settings", project.slug)
}

async fn build<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
    name: &str,
) -> Result<SettingsPage<'a>, crate::ui::UiError> {
    let mut db = st.store.read().await.map_err(|e| fail(ctx, e))?;
    let repo = repos::get(&mut db, project.id, name)
        .await
        .map_err(|e| fail(ctx, e))?;
    let rules = push_rules::load(&mut db, &repo)
        .await
        .map_err(|e| fail(ctx, e))?;
    let refusals: Vec<Refusal> =
        ouro_store::events::for_subject(&mut db, "repo", &repo.id.to_string(), REFUSALS_SCANNED)
            .await
            .map_err(|e| fail(ctx, e))?
            .into_iter()
            .rev()
            .filter(|e| e.kind == ouro_core::events::CODE_PUSH_REJECTED.name)
            .take(REFUSALS_SHOWN)
            .map(|e| {
                let text = |k: &str| e.payload[k].as_str().unwrap_or("").to_string();
                Refusal {
                    when: When::of(e.time),
                    pusher: text("pusher"),
                    refname: text("ref"),
                    rule: text("rule"),
                    message: e.payload["violations"][0]["message"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                }
            })
            .collect();
    let mut branches: Vec<BranchRow> = rules
        .protected_branches
        .iter()
        .enumerate()
        .map(|(index, b)| BranchRow {
            index,
            pattern: b.pattern.clone(),
            role: b.push_role.as_str(),
            force: b.allow_force_push,
            delete: b.allow_deletion,
        })
        .collect();
    // One empty row to add a rule.
    branches.push(BranchRow {
        index: branches.len(),
        pattern: String::new(),
        role: "maintainer",
        force: false,
        delete: false,
    });
    Ok(SettingsPage {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "code",
        manage: true,
        default_branch: repo.default_branch.clone(),
        repo: repo.name,
        custom: rules.custom_protection,
        branches,
        roles: ["nobody", "developer", "maintainer"],
        secrets: secrets::RULES
            .iter()
            .map(|r| SecretRow {
                id: r.id,
                title: r.title,
                enabled: rules.secret_rule_enabled(r.id),
            })
            .collect(),
        max_push_bytes: rules
            .max_push_bytes
            .map(|v| v.to_string())
            .unwrap_or_default(),
        max_file_bytes: rules
            .max_file_bytes
            .map(|v| v.to_string())
            .unwrap_or_default(),
        protected_tags: rules.protected_tags.join(", "),
        server_push_bytes: st.settings.push_max_bytes,
        server_file_bytes: st.settings.push_max_file_bytes,
        allow_file: secrets::ALLOW_FILE,
        refusals,
        error: None,
    })
}

async fn page(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo)): Path<(String, String)>,
    flash: Flash,
) -> UiResult {
    let project = ctx.project()?;
    let mut p = build(&st, &ctx, project, &repo).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render(&p)))
}

/// Reads the form into an update; a malformed number is a field error.
fn parse(form: &Form) -> Result<PushRulesUpdate, OuroError> {
    let rows: usize = form.get("rows").parse().unwrap_or(0).min(500);
    let mut branches = Vec::new();
    for i in 0..rows {
        let pattern = form.get(&format!("pattern.{i}")).trim().to_string();
        if pattern.is_empty() || form.get(&format!("remove.{i}")) == "on" {
            continue;
        }
        let role = form.get(&format!("role.{i}"));
        let push_role = PushRole::parse(&role).ok_or_else(|| {
            OuroError::field("protected_branches", format!("unknown role {role:?}"))
        })?;
        branches.push(ProtectedBranch {
            pattern,
            push_role,
            allow_force_push: form.get(&format!("force.{i}")) == "on",
            allow_deletion: form.get(&format!("delete.{i}")) == "on",
        });
    }
    let disabled = secrets::RULES
        .iter()
        .filter(|r| form.get(&format!("secret.{}", r.id)) != "on")
        .map(|r| r.id.to_string())
        .collect();
    let number = |name: &str| -> Result<Option<i64>, OuroError> {
        let v = form.get(name);
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<i64>().map(Some).map_err(|_| {
            OuroError::field(name, format!("{name} must be a number of bytes (or empty)"))
        })
    };
    Ok(PushRulesUpdate {
        protected_branches: Some(branches),
        disabled_secret_rules: Some(disabled),
        max_push_bytes: number("max_push_bytes")?,
        max_file_bytes: number("max_file_bytes")?,
        protected_tags: Some(
            form.get("protected_tags")
                .split([',', '\n'])
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
        ),
    })
}

async fn save(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, repo)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let result = match parse(&form) {
        Ok(update) => {
            let r = repos::get(
                &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
                project.id,
                &repo,
            )
            .await
            .map_err(|e| fail(&ctx, e))?;
            push_rules::save(&st.store, &r, &project.slug, &ctx.actor(), &update)
                .await
                .map(|_| ())
                .map_err(OuroError::from)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(redirect_with_flash(
            &url(project, &repo),
            "The push rules were saved.",
        )),
        Err(e) => {
            let status = crate::auth::status_of(e.code);
            if status.is_server_error() {
                return Err(fail(&ctx, e));
            }
            let mut p = build(&st, &ctx, project, &repo).await?;
            p.error = Some(e.message);
            Ok(render_status(
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
                &p,
            ))
        }
    }
}
