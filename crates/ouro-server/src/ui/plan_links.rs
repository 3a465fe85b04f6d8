//! Plan pages beside the backlog and item page: item links and deletion (forms on the item
//! page), the trail shown there, and the automation rules page with each rule's run log.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_core::{ErrorCode, OuroError, Permission, Role};
use ouro_plan::items;
use ouro_plan::links;
use ouro_plan::rules::{self, Action, NewRule, References, Rule, RulePatch, Run, When};
use ouro_plan::trail::Trail;
use ouro_store::projects::Project;

use crate::AppState;
use crate::extract::{Ctx, Path};
use crate::registry::Registry;
use crate::ui::common::{Flash, When as Time, fail, redirect_with_flash};
use crate::ui::plan::{build_item, item_href};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiResult, render_status};

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, write, manage) = (
        InProject(Role::Viewer),
        InProject(Role::Developer),
        InProject(Role::Maintainer),
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/items/{key}/links",
        write,
        add_link,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/items/{key}/links/{id}/delete",
        write,
        remove_link,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/items/{key}/delete",
        manage,
        delete_item,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/plan/import",
        read,
        import_page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/import",
        write,
        import_post,
    );
    reg.route(Method::GET, "/projects/{slug}/plan/rules", read, rules_page);
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/rules",
        manage,
        create_rule,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/plan/rules/{id}",
        read,
        rule_page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/rules/{id}",
        manage,
        save_rule,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/rules/{id}/toggle",
        manage,
        toggle_rule,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/rules/{id}/delete",
        manage,
        delete_rule,
    );
}

/// One stage of the trail as the item page shows it.
pub struct TrailStageView {
    pub subject_type: String,
    pub title: String,
    pub entries: Vec<TrailEntryView>,
}

pub struct TrailEntryView {
    pub id: String,
    pub title: String,
    pub url: Option<String>,
    pub status: String,
    /// A CSS class for the status: ok, bad, busy or plain.
    pub tone: &'static str,
    pub environment: Option<String>,
    pub when: Time,
}

fn tone(status: &str) -> &'static str {
    match status {
        "merged" | "success" | "published" | "succeeded" | "resolved" | "approved" => "ok",
        "failure" | "failed" | "rolled back" | "withdrawn" | "closed" | "open incident" => "bad",
        "open" | "queued" | "running" | "deploying" | "draft" => "busy",
        _ => "plain",
    }
}

impl TrailStageView {
    pub fn of(t: Trail) -> Vec<TrailStageView> {
        t.stages
            .into_iter()
            .map(|s| TrailStageView {
                entries: s
                    .entries
                    .into_iter()
                    .map(|e| TrailEntryView {
                        tone: if s.subject_type == "incident" && e.status == "open" {
                            "bad"
                        } else {
                            tone(&e.status)
                        },
                        // Only web links are made clickable.
                        url: e
                            .url
                            .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
                        id: e.id,
                        title: e.title,
                        status: e.status,
                        environment: e.environment,
                        when: Time::of(e.time),
                    })
                    .collect(),
                subject_type: s.subject_type,
                title: s.title,
            })
            .collect()
    }
}

async fn add_link(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let (kind, target) = (form.get("kind"), form.get("target"));
    match links::link(&st.store, project, &ctx.actor(), &key, &kind, target.trim()).await {
        Ok(l) => Ok(redirect_with_flash(
            &format!("{}#links", item_href(project, &key.to_ascii_uppercase())),
            &format!("Linked: {} {}.", l.label, l.key),
        )),
        Err(e) => {
            let e: OuroError = e.into();
            let status = crate::auth::status_of(e.code);
            if !status.is_client_error() {
                return Err(fail(&ctx, e));
            }
            let mut p = build_item(&st, &ctx, project, &key).await?;
            p.link_error = Some(e.message);
            Ok(render_status(status, &p))
        }
    }
}

async fn remove_link(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key, id)): Path<(String, String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    links::unlink(&st.store, project, &ctx.actor(), &key, id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        &format!("{}#links", item_href(project, &key.to_ascii_uppercase())),
        "Link removed.",
    ))
}

async fn delete_item(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
) -> UiResult {
    let project = ctx.project()?;
    let upper = key.to_ascii_uppercase();
    items::delete(&st.store, project, &ctx.actor(), &key)
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        &format!("/projects/{}/plan", project.slug),
        &format!("{upper} was deleted."),
    ))
}

/// The rule form's values, as typed.
#[derive(Default, Clone)]
pub struct RuleForm {
    pub name: String,
    pub event: String,
    pub closing: bool,
    pub item_type: String,
    pub state: String,
    pub label: String,
    pub transition: String,
    pub assign: String,
    pub add_label: String,
    pub comment: String,
}

impl RuleForm {
    fn of(r: &Rule) -> RuleForm {
        let mut f = RuleForm {
            name: r.name.clone(),
            event: r.when.event.clone(),
            closing: r.when.references == References::Closing,
            item_type: r.when.item_type.clone().unwrap_or_default(),
            state: r.when.state.clone().unwrap_or_default(),
            label: r.when.label.clone().unwrap_or_default(),
            ..RuleForm::default()
        };
        for a in &r.then {
            match a {
                Action::Transition(s) => f.transition = s.clone(),
                Action::Assign(s) => f.assign = s.clone(),
                Action::AddLabel(s) => f.add_label = s.clone(),
                Action::Comment(s) => f.comment = s.clone(),
            }
        }
        f
    }

    fn read(form: &Form) -> RuleForm {
        let t = |k: &str| form.get(k).trim().to_string();
        RuleForm {
            name: t("name"),
            event: t("event"),
            closing: form.get("references") == "closing",
            item_type: t("type"),
            state: t("state"),
            label: t("label"),
            transition: t("transition"),
            assign: t("assign"),
            add_label: t("add_label"),
            comment: form.get("comment"),
        }
    }

    fn when(&self) -> When {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        When {
            event: self.event.clone(),
            references: if self.closing {
                References::Closing
            } else {
                References::Any
            },
            item_type: opt(&self.item_type),
            state: opt(&self.state),
            label: opt(&self.label),
        }
    }

    /// The actions in a fixed order: label, assign, comment, then the transition last, so a
    /// refused transition still leaves the other effects and the log says which step failed.
    fn then(&self) -> Vec<Action> {
        let mut v = Vec::new();
        if !self.add_label.is_empty() {
            v.push(Action::AddLabel(self.add_label.clone()));
        }
        if !self.assign.is_empty() {
            v.push(Action::Assign(self.assign.clone()));
        }
        if !self.comment.trim().is_empty() {
            v.push(Action::Comment(self.comment.clone()));
        }
        if !self.transition.is_empty() {
            v.push(Action::Transition(self.transition.clone()));
        }
        v
    }
}

pub struct RuleRow {
    pub id: i64,
    pub name: String,
    pub enabled: bool,
    pub summary: String,
}

fn summary(r: &Rule) -> String {
    let mut when = format!("When {}", r.when.event);
    if r.when.references == References::Closing {
        when.push_str(" closes an item");
    }
    for (what, v) in [
        ("type", &r.when.item_type),
        ("state", &r.when.state),
        ("label", &r.when.label),
    ] {
        if let Some(v) = v {
            when.push_str(&format!(", {what} {v}"));
        }
    }
    let then: Vec<String> = r
        .then
        .iter()
        .map(|a| match a {
            Action::Transition(s) => format!("move to {s}"),
            Action::Assign(s) => format!("assign {s}"),
            Action::AddLabel(s) => format!("label {s}"),
            Action::Comment(_) => "comment".into(),
        })
        .collect();
    format!("{when}: {}", then.join(", "))
}

pub struct RunRow {
    pub item: String,
    pub event: String,
    pub outcome: String,
    pub message: String,
    pub when: Time,
}

#[derive(Template)]
#[template(path = "plan_rules.html")]
struct RulesPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    tab: &'static str,
    manage: bool,
    rules: Vec<RuleRow>,
    /// The rule being edited (None on the list page).
    editing: Option<RuleRow>,
    version: i64,
    form: RuleForm,
    error: Option<String>,
    error_field: String,
    kinds: Vec<&'static str>,
    runs: Vec<RunRow>,
}

fn page<'a>(ctx: &Ctx, project: &'a Project, rules: &[Rule]) -> RulesPage<'a> {
    RulesPage {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "plan",
        tab: "rules",
        manage: ctx.role() >= Some(Role::Maintainer),
        rules: rules
            .iter()
            .map(|r| RuleRow {
                id: r.id,
                name: r.name.clone(),
                enabled: r.enabled,
                summary: summary(r),
            })
            .collect(),
        editing: None,
        version: 0,
        form: RuleForm {
            event: "cr.opened".into(),
            ..RuleForm::default()
        },
        error: None,
        error_field: String::new(),
        kinds: ouro_core::events::KINDS.iter().map(|k| k.name).collect(),
        runs: vec![],
    }
}

async fn rules_page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let list = rules::list(&st.store, project)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let mut p = page(&ctx, project, &list);
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

async fn create_rule(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let f = RuleForm::read(&form);
    let new = NewRule {
        name: f.name.clone(),
        enabled: true,
        when: f.when(),
        then: f.then(),
    };
    match rules::create(&st.store, project, &ctx.actor(), new).await {
        Ok(r) => Ok(redirect_with_flash(
            &format!("/projects/{}/plan/rules", project.slug),
            &format!("Rule \"{}\" created.", r.name),
        )),
        Err(e) => {
            let e: OuroError = e.into();
            if e.code != ErrorCode::ValidationFailed {
                return Err(fail(&ctx, e));
            }
            let list = rules::list(&st.store, project)
                .await
                .map_err(|e| fail(&ctx, e))?;
            let mut p = page(&ctx, project, &list);
            p.error_field = field_name(&e);
            p.error = Some(e.message);
            p.form = f;
            Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &p))
        }
    }
}

fn field_name(e: &OuroError) -> String {
    e.details
        .as_ref()
        .and_then(|d| d.get("field"))
        .and_then(|f| f.as_str())
        .unwrap_or("")
        .to_string()
}

async fn edit_page<'a>(
    st: &AppState,
    ctx: &Ctx,
    project: &'a Project,
    id: i64,
) -> Result<RulesPage<'a>, crate::ui::UiError> {
    let mut c = st.store.read().await.map_err(|e| fail(ctx, e))?;
    let rule = rules::get(&mut c, project.id, id)
        .await
        .map_err(|e| fail(ctx, e))?;
    let runs: Vec<Run> = rules::runs(&mut c, project.id, id, 100)
        .await
        .map_err(|e| fail(ctx, e))?;
    let mut p = page(ctx, project, &[]);
    p.editing = Some(RuleRow {
        id: rule.id,
        name: rule.name.clone(),
        enabled: rule.enabled,
        summary: summary(&rule),
    });
    p.version = rule.version;
    p.form = RuleForm::of(&rule);
    p.runs = runs
        .into_iter()
        .map(|r| RunRow {
            item: r.item,
            event: format!("{} #{}", r.event_kind, r.event_seq),
            outcome: r.outcome,
            message: r.message,
            when: Time::of(r.time),
        })
        .collect();
    Ok(p)
}

async fn rule_page(
    State(st): State<AppState>,
    ctx: Ctx,
    flash: Flash,
    Path((_, id)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    let mut p = edit_page(&st, &ctx, project, id).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

async fn save_rule(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let f = RuleForm::read(&form);
    let patch = RulePatch {
        name: Some(f.name.clone()),
        enabled: None,
        when: Some(f.when()),
        then: Some(f.then()),
        version: form.get("version").parse().ok(),
    };
    match rules::update(&st.store, project, &ctx.actor(), id, patch).await {
        Ok(r) => Ok(redirect_with_flash(
            &format!("/projects/{}/plan/rules/{}", project.slug, r.id),
            "Rule saved.",
        )),
        Err(e) => {
            let e: OuroError = e.into();
            if !matches!(
                e.code,
                ErrorCode::ValidationFailed | ErrorCode::StaleVersion
            ) {
                return Err(fail(&ctx, e));
            }
            let mut p = edit_page(&st, &ctx, project, id).await?;
            p.error_field = field_name(&e);
            p.error = Some(if e.code == ErrorCode::StaleVersion {
                "Someone else changed this rule while you were editing; the form shows your values, save again to replace theirs.".into()
            } else {
                e.message
            });
            p.form = f;
            Ok(render_status(crate::auth::status_of(e.code), &p))
        }
    }
}

async fn toggle_rule(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let on = form.get("on") == "true";
    let r = rules::update(
        &st.store,
        project,
        &ctx.actor(),
        id,
        RulePatch {
            enabled: Some(on),
            ..RulePatch::default()
        },
    )
    .await
    .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        &format!("/projects/{}/plan/rules", project.slug),
        &format!(
            "Rule \"{}\" {}.",
            r.name,
            if r.enabled { "enabled" } else { "disabled" }
        ),
    ))
}

async fn delete_rule(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    rules::delete(&st.store, project, &ctx.actor(), id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        &format!("/projects/{}/plan/rules", project.slug),
        "Rule deleted.",
    )
    .into_response())
}

pub struct PreviewRow {
    pub row: usize,
    pub key: String,
    pub item_type: String,
    pub title: String,
    pub state: String,
    pub warnings: String,
}

#[derive(Template)]
#[template(path = "plan_import.html")]
struct ImportPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    tab: &'static str,
    manage: bool,
    can_edit: bool,
    csv: String,
    error: Option<String>,
    row_errors: Vec<ouro_plan::csv::RowError>,
    preview: Vec<PreviewRow>,
}

fn import_view<'a>(ctx: &Ctx, project: &'a Project) -> ImportPage<'a> {
    ImportPage {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "plan",
        tab: "import",
        manage: ctx.role() >= Some(Role::Maintainer),
        can_edit: ctx.role() >= Some(Role::Developer),
        csv: String::new(),
        error: None,
        row_errors: vec![],
        preview: vec![],
    }
}

async fn import_page(ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let mut p = import_view(&ctx, project);
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

/// Preview (a dry run) or import the pasted CSV; errors list the rows, nothing is written.
async fn import_post(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let text = form.get("csv");
    let dry_run = form.get("mode") != "import";
    match ouro_plan::csv::import(&st.store, project, &ctx.actor(), &text, dry_run).await {
        Ok(r) if !dry_run => Ok(redirect_with_flash(
            &format!("/projects/{}/plan", project.slug),
            &format!("Imported {} item(s).", r.created),
        )),
        Ok(r) => {
            let mut p = import_view(&ctx, project);
            p.preview = r
                .items
                .into_iter()
                .map(|i| PreviewRow {
                    row: i.row,
                    key: i.item.key,
                    item_type: i.item.item_type,
                    title: i.item.title,
                    state: i.item.state,
                    warnings: i.warnings.join("; "),
                })
                .collect();
            p.csv = text;
            Ok(render_status(StatusCode::OK, &p))
        }
        Err(e) => {
            let e: OuroError = e.into();
            if e.code != ErrorCode::ValidationFailed {
                return Err(fail(&ctx, e));
            }
            let mut p = import_view(&ctx, project);
            p.row_errors = e
                .details
                .as_ref()
                .and_then(|d| d.get("rows"))
                .and_then(|r| serde_json::from_value::<Vec<RowErrorIn>>(r.clone()).ok())
                .unwrap_or_default()
                .into_iter()
                .map(|r| ouro_plan::csv::RowError {
                    row: r.row,
                    column: r.column,
                    message: r.message,
                })
                .collect();
            p.error = Some(e.message);
            p.csv = text;
            Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &p))
        }
    }
}

#[derive(serde::Deserialize)]
struct RowErrorIn {
    row: usize,
    column: String,
    message: String,
}
