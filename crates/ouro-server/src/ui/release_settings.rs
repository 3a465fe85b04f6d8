//! Release: the project's release settings pages. `/projects/{slug}/settings/release`: the 0.x
//! version rules, the first version, the notes template and `auto_promote`;
//! `/projects/{slug}/settings/environments`: the promotion path kept in the project settings, with
//! the path in effect for the newest release. Everybody who can read the project sees them; the
//! POST routes need the maintainer role (the guard answers 403 to others). Thin: the rules live in
//! `ouro_release::settings` and `ouro_release::promotions`, as for the API.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_release::environments::{self, Config, Environment};
use ouro_release::notes::DEFAULT_TEMPLATE;
use ouro_release::promotions;
use ouro_release::settings::{self, Settings, SettingsChange};
use ouro_store::projects::Project;

use crate::AppState;
use crate::api::repos::repos_root;
use crate::extract::Ctx;
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, field_of, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiError, UiResult, render_status};

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, manage) = (InProject(Role::Viewer), InProject(Role::Maintainer));
    reg.route(
        Method::GET,
        "/projects/{slug}/settings/release",
        read,
        release_page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/settings/release",
        manage,
        release_save,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/settings/release/reset-template",
        manage,
        template_reset,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/settings/environments",
        read,
        environments_page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/settings/environments",
        manage,
        environments_save,
    );
}

// ---------------------------------------------------------------------------------------------
// Release settings

/// Messages shown next to the fields.
#[derive(Default)]
pub struct ReleaseErrors {
    pub initial_version: Option<String>,
    pub notes_template: Option<String>,
    pub form: Option<String>,
}

#[derive(Template)]
#[template(path = "release_settings.html")]
struct ReleasePage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    zero_major_bumps_minor: bool,
    zero_minor_bumps_patch: bool,
    initial_version: String,
    /// Empty: the default layout.
    notes_template: String,
    /// The stored settings use the default layout.
    default_template: bool,
    auto_promote: bool,
    /// Who changed the settings last (empty: never changed).
    updated_by: String,
    updated: Option<When>,
    default_layout: &'static str,
    errors: ReleaseErrors,
}

impl<'a> ReleasePage<'a> {
    fn of(ctx: &Ctx, project: &'a Project, s: Settings) -> ReleasePage<'a> {
        ReleasePage {
            chrome: Chrome::of(ctx),
            project,
            phases: PHASES,
            active: "release-settings",
            manage: ctx.role() >= Some(Role::Maintainer),
            zero_major_bumps_minor: s.rules.zero_major_bumps_minor,
            zero_minor_bumps_patch: s.rules.zero_minor_bumps_patch,
            initial_version: s.rules.initial.to_string(),
            default_template: s.notes_template.is_none(),
            notes_template: s.notes_template.unwrap_or_default(),
            auto_promote: s.auto_promote,
            updated_by: s
                .updated_by
                .map(|u| u.strip_prefix("user:").unwrap_or(&u).to_string())
                .unwrap_or_default(),
            updated: s.updated_at.map(When::of),
            default_layout: DEFAULT_TEMPLATE,
            errors: ReleaseErrors::default(),
        }
    }
}

async fn stored_settings(st: &AppState, ctx: &Ctx, project_id: i64) -> Result<Settings, UiError> {
    settings::get(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        project_id,
    )
    .await
    .map_err(|e| fail(ctx, e))
}

async fn release_page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let s = stored_settings(&st, &ctx, project.id).await?;
    let mut p = ReleasePage::of(&ctx, project, s);
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

/// Browsers send a textarea's line breaks as CRLF; stored texts use LF like the files they mirror.
fn unix_lines(text: &str) -> String {
    text.replace("\r\n", "\n")
}

/// A checkbox is sent only when ticked.
fn checked(form: &Form, name: &str) -> bool {
    matches!(form.get(name).as_str(), "on" | "true" | "1")
}

async fn release_save(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let template = unix_lines(&form.get("notes_template"));
    let change = SettingsChange {
        zero_major_bumps_minor: Some(checked(&form, "zero_major_bumps_minor")),
        zero_minor_bumps_patch: Some(checked(&form, "zero_minor_bumps_patch")),
        initial_version: Some(form.get("initial_version").trim().to_string()),
        // An empty template is the default layout (the domain stores it as none).
        notes_template: Some(Some(template.clone())),
        auto_promote: Some(checked(&form, "auto_promote")),
    };
    match settings::update(&st.store, &ctx.actor(), project.id, &change).await {
        Ok(_) => Ok(redirect_with_flash(
            &format!("/projects/{}/settings/release", project.slug),
            "Release settings saved.",
        )),
        Err(e) => {
            let e: OuroError = e.into();
            let mut errors = ReleaseErrors::default();
            match (e.code, field_of(&e)) {
                (ErrorCode::ReleaseTemplateInvalid, _) => errors.notes_template = Some(e.message),
                (ErrorCode::ReleaseInvalidVersion, _) | (_, Some("initial_version")) => {
                    errors.initial_version = Some(e.message)
                }
                _ if e.code.http_status() < 500 => errors.form = Some(e.message),
                _ => return Err(fail(&ctx, e)),
            }
            // Everything typed comes back, so a long template is never lost to a typo.
            let stored = stored_settings(&st, &ctx, project.id).await?;
            let mut p = ReleasePage::of(&ctx, project, stored);
            p.zero_major_bumps_minor = checked(&form, "zero_major_bumps_minor");
            p.zero_minor_bumps_patch = checked(&form, "zero_minor_bumps_patch");
            p.initial_version = form.get("initial_version");
            p.notes_template = template;
            p.auto_promote = checked(&form, "auto_promote");
            p.errors = errors;
            Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &p))
        }
    }
}

async fn template_reset(State(st): State<AppState>, ctx: Ctx) -> UiResult {
    let project = ctx.project()?;
    let change = SettingsChange {
        notes_template: Some(None),
        ..Default::default()
    };
    settings::update(&st.store, &ctx.actor(), project.id, &change)
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        &format!("/projects/{}/settings/release", project.slug),
        "The notes template is back to the default layout.",
    ))
}

// ---------------------------------------------------------------------------------------------
// Promotion path

/// One environment of a path as the page lists it.
pub struct EnvRow {
    pub name: String,
    /// The environment in front (empty: the first).
    pub after: String,
    /// Each gate in words (empty: none, promotion is approved at once).
    pub gates: Vec<String>,
}

/// `90` -> `1m 30s`, `7200` -> `2h`.
fn duration_text(secs: u64) -> String {
    let parts = [
        (604_800, "w"),
        (86_400, "d"),
        (3_600, "h"),
        (60, "m"),
        (1, "s"),
    ];
    let mut left = secs;
    let mut out = Vec::new();
    for (size, unit) in parts {
        if left >= size {
            out.push(format!("{}{unit}", left / size));
            left %= size;
        }
    }
    if out.is_empty() {
        "0s".into()
    } else {
        out.join(" ")
    }
}

fn gates_of(e: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = &e.approvals {
        out.push(format!(
            "approvals: {} from {}{}",
            a.required,
            a.from.join(", "),
            if a.no_self_approval {
                " (no self-approval)"
            } else {
                ""
            }
        ));
    }
    if let Some(w) = e.wait_secs {
        out.push(format!(
            "wait: {} after {} succeeded",
            duration_text(w),
            e.after.as_deref().unwrap_or("the environment in front")
        ));
    }
    for w in &e.windows {
        out.push(format!("window: {} ({})", w.cron, w.timezone));
    }
    for f in &e.freeze {
        out.push(format!("freeze: {} ({})", f.cron, f.timezone));
    }
    for c in &e.checks {
        out.push(format!("check: {}", c.as_str()));
    }
    out
}

fn rows_of(c: &Config) -> Vec<EnvRow> {
    c.environments
        .iter()
        .map(|e| EnvRow {
            name: e.name.clone(),
            after: e.after.clone().unwrap_or_default(),
            gates: gates_of(e),
        })
        .collect()
}

/// The path that applies to the newest release.
pub struct InEffect {
    pub release: String,
    pub short_sha: String,
    /// `.ouro/environments.yml` or `settings`; empty when it could not be read.
    pub source: String,
    pub envs: Vec<EnvRow>,
    /// Why there is no path (not configured, or the file at the commit is invalid).
    pub problem: String,
    pub diagnostics: Vec<String>,
}

#[derive(Template)]
#[template(path = "release_environments.html")]
struct EnvironmentsPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    /// None: the project has no release yet.
    in_effect: Option<InEffect>,
    /// The settings' YAML (or what was posted).
    yaml: String,
    /// The settings' own path, parsed (empty: none kept, or what was posted is invalid).
    settings_envs: Vec<EnvRow>,
    /// The diagnostics of a refused save, `FILE:LINE:COL: error[CODE]: message`.
    diagnostics: Vec<String>,
    error: Option<String>,
    file: &'static str,
}

fn diagnostics_of(e: &OuroError) -> Vec<String> {
    e.details
        .as_ref()
        .and_then(|d| d["diagnostics"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn in_effect(st: &AppState, project_id: i64) -> Result<Option<InEffect>, OuroError> {
    let newest = ouro_store::q(
        "SELECT version FROM release_releases WHERE project_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(project_id)
    .fetch_optional(&mut st.store.read().await?)
    .await?
    .map(|r| r.text("version"))
    .transpose()?;
    let Some(version) = newest else {
        return Ok(None);
    };
    let rel = promotions::release(&mut st.store.read().await?, project_id, &version).await?;
    let mut out = InEffect {
        release: rel.version.clone(),
        short_sha: rel.sha.chars().take(10).collect(),
        source: String::new(),
        envs: Vec::new(),
        problem: String::new(),
        diagnostics: Vec::new(),
    };
    match promotions::config_for(&st.store, &repos_root(st), &rel).await {
        Ok((config, source)) => {
            out.envs = rows_of(&config);
            out.source = source;
        }
        Err(e)
            if matches!(
                e.code,
                ErrorCode::EnvironmentsInvalid | ErrorCode::EnvironmentsNotConfigured
            ) =>
        {
            out.diagnostics = diagnostics_of(&e);
            out.problem = e.message;
        }
        Err(e) => return Err(e),
    }
    Ok(Some(out))
}

async fn environments_view<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
) -> Result<EnvironmentsPage<'a>, UiError> {
    let yaml = promotions::settings_yaml(
        &mut st.store.read().await.map_err(|e| fail(ctx, e))?,
        project.id,
    )
    .await
    .map_err(|e| fail(ctx, e))?
    .unwrap_or_default();
    // Stored settings were valid when saved; a later, stricter parser could refuse them, and
    // then the page shows nothing parsed rather than failing.
    let settings_envs = if yaml.trim().is_empty() {
        Vec::new()
    } else {
        environments::parse(environments::SETTINGS_FILE, &yaml)
            .map(|c| rows_of(&c))
            .unwrap_or_default()
    };
    Ok(EnvironmentsPage {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "environment-settings",
        manage: ctx.role() >= Some(Role::Maintainer),
        in_effect: in_effect(st, project.id).await.map_err(|e| fail(ctx, e))?,
        yaml,
        settings_envs,
        diagnostics: Vec::new(),
        error: None,
        file: environments::FILE,
    })
}

async fn environments_page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let mut p = environments_view(&st, &ctx, project).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

async fn environments_save(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let user = ctx.user()?;
    let yaml = unix_lines(&form.get("yaml"));
    match promotions::put_settings(
        &st.store,
        project.id,
        &ctx.actor(),
        Some(user.id),
        &yaml,
        ouro_core::time::now_ms(),
    )
    .await
    {
        Ok(config) => {
            let msg = match config {
                Some(c) => format!(
                    "Promotion path saved: {}.",
                    c.environments
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" → ")
                ),
                None => "The promotion path was removed from the project settings.".to_string(),
            };
            Ok(redirect_with_flash(
                &format!("/projects/{}/settings/environments", project.slug),
                &msg,
            ))
        }
        Err(e) if e.code == ErrorCode::EnvironmentsInvalid => {
            let mut p = environments_view(&st, &ctx, project).await?;
            p.diagnostics = diagnostics_of(&e);
            p.error = Some(e.message);
            p.yaml = yaml;
            p.settings_envs = Vec::new();
            Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &p))
        }
        Err(e) => Err(fail(&ctx, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_file() {
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(600), "10m");
        assert_eq!(duration_text(5400), "1h 30m");
        assert_eq!(duration_text(604_800 + 86_400), "1w 1d");
    }
}
