//! The Plan settings page: item types, workflows (states and the transitions matrix), custom
//! fields and board WIP limits, plus the custom field inputs of the item forms. Every change goes
//! through the same `ouro_plan` functions as the JSON API, so each appends `plan.config_changed`.
//!
//! Everybody who can read the project sees the settings; only maintainers get the forms, and
//! the POST routes require the maintainer role (the guard answers 403 to others).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_core::{OuroError, Permission, Role};
use ouro_plan::board;
use ouro_plan::config::{
    self, NewState, NewType, StatePatch, TransitionIn, Transitions, TypePatch,
};
use ouro_plan::fields::{self, Field, FieldPatch, FieldType, NewField};
use ouro_plan::workflow::{self, Category, Kind, Workflows};
use ouro_store::projects::Project;
use ouro_store::{Executor, StoreError};
use serde_json::Value;

use crate::AppState;
use crate::extract::Ctx;
use crate::registry::Registry;
use crate::ui::common::{Flash, fail, redirect_with_flash};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiError, UiResult, render_status};

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, manage) = (InProject(Role::Viewer), InProject(Role::Maintainer));
    const BASE: &str = "/projects/{slug}/plan/settings";
    reg.route(Method::GET, BASE, read, settings_page);
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/types",
        manage,
        add_type,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/types/rename",
        manage,
        rename_type,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/types/toggle",
        manage,
        toggle_type,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/states",
        manage,
        add_state,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/states/update",
        manage,
        update_state,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/states/delete",
        manage,
        delete_state,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/transitions",
        manage,
        save_transitions,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/fields",
        manage,
        add_field,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/fields/update",
        manage,
        update_field,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/fields/delete",
        manage,
        delete_field,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/settings/wip",
        manage,
        save_wip,
    );
}

pub const CATEGORIES: [(Category, &str); 3] = [
    (Category::Todo, "to do"),
    (Category::InProgress, "in progress"),
    (Category::Done, "done"),
];

const FIELD_TYPES: [FieldType; 5] = [
    FieldType::Text,
    FieldType::Number,
    FieldType::Select,
    FieldType::User,
    FieldType::Date,
];

fn category_label(c: Category) -> &'static str {
    CATEGORIES
        .iter()
        .find(|(k, _)| *k == c)
        .map(|(_, l)| *l)
        .unwrap_or("")
}

pub struct StateView {
    pub name: String,
    pub category: &'static str,
    pub category_label: &'static str,
}

pub struct MatrixRow {
    pub from: String,
    /// Per target state (same order as the states): whether the move is allowed; None on the
    /// diagonal (a state cannot move to itself).
    pub cells: Vec<MatrixCell>,
}

pub struct MatrixCell {
    pub to: String,
    pub allowed: Option<bool>,
}

pub struct WorkflowView {
    pub name: String,
    /// The HTML id of its section (error anchors, links).
    pub anchor: String,
    pub states: Vec<StateView>,
    pub matrix: Vec<MatrixRow>,
    /// The types following this workflow.
    pub used_by: Vec<String>,
}

pub struct FieldView {
    pub name: String,
    pub label: String,
    pub field_type: &'static str,
    pub options: Vec<String>,
    /// The options one per line, for the edit textarea.
    pub options_text: String,
}

pub struct WipRow {
    pub state: String,
    pub limit: String,
}

/// What was typed into the "add" forms, kept when the page is shown again with an error.
#[derive(Default)]
pub struct Drafts {
    pub type_name: String,
    pub type_kind: String,
    pub type_workflow: String,
    pub state_name: String,
    pub state_workflow: String,
    /// The name typed into the "new workflow" form.
    pub new_workflow: String,
    pub field_name: String,
    pub field_label: String,
    pub field_type: String,
    pub field_options: String,
    /// Submitted WIP limits by state (after a refused save).
    pub wip: BTreeMap<String, String>,
}

#[derive(Template)]
#[template(path = "plan_settings.html")]
struct SettingsPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    tab: &'static str,
    manage: bool,
    /// The item types with the anchor of their workflow's section.
    types: Vec<(workflow::ItemType, String)>,
    kinds: Vec<&'static str>,
    workflow_names: Vec<String>,
    workflows: Vec<WorkflowView>,
    categories: Vec<(&'static str, &'static str)>,
    fields: Vec<FieldView>,
    field_types: Vec<&'static str>,
    wip: Vec<WipRow>,
    /// The section a refusal belongs to ("types", a workflow's anchor, "fields", "wip") and its
    /// message, shown next to that section's forms.
    error_at: String,
    error: Option<String>,
    drafts: Drafts,
}

fn anchor_of(workflow: &str) -> String {
    let slug: String = workflow
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("wf-{slug}")
}

fn workflow_views(w: &Workflows) -> Vec<WorkflowView> {
    w.workflows
        .iter()
        .map(|wf| WorkflowView {
            name: wf.name.clone(),
            anchor: anchor_of(&wf.name),
            states: wf
                .states
                .iter()
                .map(|s| StateView {
                    name: s.name.clone(),
                    category: s.category.as_str(),
                    category_label: category_label(s.category),
                })
                .collect(),
            matrix: wf
                .states
                .iter()
                .map(|from| MatrixRow {
                    from: from.name.clone(),
                    cells: wf
                        .states
                        .iter()
                        .map(|to| MatrixCell {
                            to: to.name.clone(),
                            allowed: (to.name != from.name).then(|| {
                                wf.transitions
                                    .iter()
                                    .any(|t| t.from == from.name && t.to == to.name)
                            }),
                        })
                        .collect(),
                })
                .collect(),
            used_by: w
                .types
                .iter()
                .filter(|t| t.workflow == wf.name)
                .map(|t| t.name.clone())
                .collect(),
        })
        .collect()
}

async fn build<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
) -> Result<SettingsPage<'a>, UiError> {
    let mut w = workflow::for_project(&st.store, project.id)
        .await
        .map_err(|e| fail(ctx, e))?;
    // The standard workflow first: most types follow it, and its states are the board columns.
    w.workflows.sort_by_key(|x| x.name != workflow::STANDARD);
    let mut conn = st.store.read().await.map_err(|e| fail(ctx, e))?;
    let defs = fields::list(&mut conn, project.id)
        .await
        .map_err(|e| fail(ctx, e))?;
    let limits = board::wip_limits(&mut conn, project.id)
        .await
        .map_err(|e| fail(ctx, e))?;
    let wip = w
        .workflows
        .iter()
        .find(|x| x.name == workflow::STANDARD)
        .map(|x| {
            x.states
                .iter()
                .map(|s| WipRow {
                    state: s.name.clone(),
                    limit: limits
                        .iter()
                        .find(|(n, _)| n == &s.name)
                        .and_then(|(_, l)| *l)
                        .map(|l| l.to_string())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(SettingsPage {
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "plan",
        tab: "settings",
        manage: ctx.role() >= Some(Role::Maintainer),
        kinds: Kind::ALL.iter().map(|k| k.as_str()).collect(),
        workflow_names: w.workflows.iter().map(|x| x.name.clone()).collect(),
        workflows: workflow_views(&w),
        types: w
            .types
            .into_iter()
            .map(|t| {
                let a = anchor_of(&t.workflow);
                (t, a)
            })
            .collect(),
        categories: CATEGORIES.iter().map(|(c, l)| (c.as_str(), *l)).collect(),
        fields: defs
            .into_iter()
            .map(|f| FieldView {
                options_text: f.options.join("\n"),
                name: f.name,
                label: f.label,
                field_type: f.field_type.as_str(),
                options: f.options,
            })
            .collect(),
        field_types: FIELD_TYPES.iter().map(|t| t.as_str()).collect(),
        wip,
        error_at: String::new(),
        error: None,
        drafts: Drafts::default(),
    })
}

async fn settings_page(State(st): State<AppState>, ctx: Ctx, flash: Flash) -> UiResult {
    let project = ctx.project()?;
    let mut p = build(&st, &ctx, project).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

fn back(project: &Project, anchor: &str) -> String {
    format!("/projects/{}/plan/settings#{anchor}", project.slug)
}

/// After a change: back to the page with a notice. After a refusal the client can act on
/// (validation, conflict, not found): the page again with the message next to the section's
/// forms and the typed values kept. Anything else is an error page.
async fn finish<T>(
    st: &AppState,
    ctx: &Ctx,
    project: &Project,
    anchor: &str,
    result: Result<T, StoreError>,
    ok: impl FnOnce(T) -> String,
    drafts: Drafts,
) -> UiResult {
    match result {
        Ok(v) => Ok(redirect_with_flash(&back(project, anchor), &ok(v))),
        Err(e) => refused(st, ctx, project, anchor, e.into(), drafts).await,
    }
}

async fn refused(
    st: &AppState,
    ctx: &Ctx,
    project: &Project,
    anchor: &str,
    e: OuroError,
    drafts: Drafts,
) -> UiResult {
    let status = crate::auth::status_of(e.code);
    if !status.is_client_error() {
        return Err(fail(ctx, e));
    }
    let mut p = build(st, ctx, project).await?;
    p.error_at = anchor.to_string();
    p.error = Some(e.message);
    p.drafts = drafts;
    Ok(render_status(status, &p))
}

fn bad(field: &str, msg: impl Into<String>) -> StoreError {
    OuroError::field(field, msg.into()).into()
}

async fn add_type(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let (name, kind, wf) = (form.get("name"), form.get("kind"), form.get("workflow"));
    let result = match Kind::parse(kind.trim()) {
        None => Err(bad("kind", "choose one of the kinds in the list")),
        Some(k) => {
            let input = NewType {
                name: name.clone(),
                kind: k,
                workflow: Some(wf.clone()).filter(|w| !w.trim().is_empty()),
            };
            config::create_type(&st.store, project, &ctx.actor(), input).await
        }
    };
    let drafts = Drafts {
        type_name: name,
        type_kind: kind,
        type_workflow: wf,
        ..Drafts::default()
    };
    finish(
        &st,
        &ctx,
        project,
        "types",
        result,
        |t| format!("Added the item type \"{}\".", t.name),
        drafts,
    )
    .await
}

async fn rename_type(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let patch = TypePatch {
        name: Some(form.get("name")),
        enabled: None,
    };
    let result =
        config::update_type(&st.store, project, &ctx.actor(), &form.get("type"), patch).await;
    finish(
        &st,
        &ctx,
        project,
        "types",
        result,
        |t| format!("The item type is now called \"{}\".", t.name),
        Drafts::default(),
    )
    .await
}

async fn toggle_type(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let patch = TypePatch {
        name: None,
        enabled: Some(form.get("enabled") == "true"),
    };
    let result =
        config::update_type(&st.store, project, &ctx.actor(), &form.get("type"), patch).await;
    finish(
        &st,
        &ctx,
        project,
        "types",
        result,
        |t| {
            let how = if t.enabled { "enabled" } else { "disabled" };
            format!("The item type \"{}\" is {how}.", t.name)
        },
        Drafts::default(),
    )
    .await
}

fn category_of(form: &Form) -> Result<Category, StoreError> {
    Category::parse(form.get("category").trim())
        .ok_or_else(|| bad("category", "choose to do, in progress or done"))
}

async fn add_state(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let (wf, name) = (form.get("workflow"), form.get("name"));
    let result = match category_of(&form) {
        Err(e) => Err(e),
        Ok(category) => {
            let input = NewState {
                name: name.clone(),
                category,
            };
            config::add_state(&st.store, project, &ctx.actor(), &wf, input).await
        }
    };
    // The "new workflow" form creates a workflow with its first state; its refusals show there.
    let new = form.get("new_workflow") == "true";
    let anchor = if new {
        "new-workflow".to_string()
    } else {
        anchor_of(&wf)
    };
    let drafts = Drafts {
        state_name: name,
        state_workflow: if new { String::new() } else { wf.clone() },
        new_workflow: if new { wf.clone() } else { String::new() },
        ..Drafts::default()
    };
    finish(
        &st,
        &ctx,
        project,
        &anchor,
        result,
        |s| format!("Added the state \"{}\" to {wf}.", s.name),
        drafts,
    )
    .await
}

async fn update_state(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let wf = form.get("workflow");
    let result = match category_of(&form) {
        Err(e) => Err(e),
        Ok(category) => {
            let patch = StatePatch {
                name: Some(form.get("name")),
                category: Some(category),
            };
            config::update_state(
                &st.store,
                project,
                &ctx.actor(),
                &wf,
                &form.get("state"),
                patch,
            )
            .await
        }
    };
    finish(
        &st,
        &ctx,
        project,
        &anchor_of(&wf),
        result,
        |s| {
            format!(
                "Saved the state \"{}\" ({}).",
                s.name,
                category_label(s.category)
            )
        },
        Drafts::default(),
    )
    .await
}

async fn delete_state(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let (wf, name) = (form.get("workflow"), form.get("state"));
    let result = config::delete_state(&st.store, project, &ctx.actor(), &wf, &name).await;
    finish(
        &st,
        &ctx,
        project,
        &anchor_of(&wf),
        result,
        |_| format!("Deleted the state \"{name}\"."),
        Drafts::default(),
    )
    .await
}

/// Reads the matrix: `s.N` names the Nth state as the page showed it, and `t.F.T` is checked
/// when the move from state F to state T is allowed.
fn read_matrix(form: &Form) -> Vec<TransitionIn> {
    let mut names = BTreeMap::new();
    for (k, v) in &form.0 {
        if let Some(i) = k.strip_prefix("s.").and_then(|i| i.parse::<usize>().ok()) {
            names.insert(i, v.clone());
        }
    }
    let mut out = Vec::new();
    for (k, v) in &form.0 {
        let Some(rest) = k.strip_prefix("t.") else {
            continue;
        };
        let Some((f, t)) = rest.split_once('.') else {
            continue;
        };
        let (Ok(f), Ok(t)) = (f.parse::<usize>(), t.parse::<usize>()) else {
            continue;
        };
        if v != "on" {
            continue;
        }
        if let (Some(from), Some(to)) = (names.get(&f), names.get(&t)) {
            out.push(TransitionIn {
                from: from.clone(),
                to: to.clone(),
            });
        }
    }
    out.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    out
}

async fn save_transitions(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let wf = form.get("workflow");
    let input = Transitions {
        transitions: read_matrix(&form),
    };
    let n = input.transitions.len();
    let result = config::set_transitions(&st.store, project, &ctx.actor(), &wf, input).await;
    finish(
        &st,
        &ctx,
        project,
        &anchor_of(&wf),
        result,
        |_| format!("Saved the transitions of {wf}: {n} allowed move(s)."),
        Drafts::default(),
    )
    .await
}

/// Options as typed: one per line, or comma separated when given on one line.
pub fn parse_options(text: &str) -> Vec<String> {
    let parts: Vec<&str> = if text.contains('\n') {
        text.lines().collect()
    } else {
        text.split(',').collect()
    };
    parts
        .into_iter()
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect()
}

fn field_type_of(s: &str) -> Option<FieldType> {
    FIELD_TYPES.into_iter().find(|t| t.as_str() == s.trim())
}

async fn add_field(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let (name, label, ty, options) = (
        form.get("name"),
        form.get("label"),
        form.get("type"),
        form.get("options"),
    );
    let result = match field_type_of(&ty) {
        None => Err(bad("type", "choose text, number, select, user or date")),
        Some(t) => {
            // Options typed for a field that is not a select are ignored rather than refused:
            // the textarea stays on the form whatever type is chosen.
            let opts = if t == FieldType::Select {
                parse_options(&options)
            } else {
                Vec::new()
            };
            let input = NewField {
                name: name.trim().to_string(),
                label: Some(label.clone()).filter(|l| !l.trim().is_empty()),
                field_type: t,
                options: opts,
            };
            fields::create(&st.store, project, &ctx.actor(), input).await
        }
    };
    let drafts = Drafts {
        field_name: name,
        field_label: label,
        field_type: ty,
        field_options: options,
        ..Drafts::default()
    };
    finish(
        &st,
        &ctx,
        project,
        "fields",
        result,
        |f| format!("Added the custom field \"{}\".", f.label),
        drafts,
    )
    .await
}

async fn update_field(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let options = form
        .0
        .get("options")
        .map(|o| parse_options(o))
        .filter(|o| !o.is_empty());
    let patch = FieldPatch {
        label: Some(form.get("label")),
        options,
    };
    let result = fields::update(&st.store, project, &ctx.actor(), &form.get("field"), patch).await;
    finish(
        &st,
        &ctx,
        project,
        "fields",
        result,
        |f| format!("Saved the custom field \"{}\".", f.label),
        Drafts::default(),
    )
    .await
}

async fn delete_field(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let name = form.get("field");
    let result = fields::delete(&st.store, project, &ctx.actor(), &name).await;
    finish(
        &st,
        &ctx,
        project,
        "fields",
        result,
        |_| format!("Deleted the custom field \"{name}\" and its values."),
        Drafts::default(),
    )
    .await
}

/// Saves the WIP limits of all board columns at once: `c.N` names a column, `w.N` is its limit
/// (empty: no limit). Every value is checked before anything is written; only the columns whose
/// limit changes are saved (one `plan.config_changed` each, as through the API).
async fn save_wip(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (k, v) in &form.0 {
        if let Some(i) = k.strip_prefix("c.") {
            wanted.push((v.clone(), form.get(&format!("w.{i}")).trim().to_string()));
        }
    }
    wanted.sort();
    let drafts = || Drafts {
        wip: wanted.iter().cloned().collect(),
        ..Drafts::default()
    };
    let mut parsed = Vec::new();
    for (state, text) in &wanted {
        if text.is_empty() {
            parsed.push((state.clone(), None));
            continue;
        }
        match text.parse::<i64>() {
            Ok(n) if (1..=board::MAX_WIP).contains(&n) => parsed.push((state.clone(), Some(n))),
            _ => {
                let e = OuroError::field(
                    "wip_limit",
                    format!(
                        "the WIP limit of {state:?} must be a whole number from 1 to {}, or empty for no limit",
                        board::MAX_WIP
                    ),
                );
                return refused(&st, &ctx, project, "wip", e, drafts()).await;
            }
        }
    }
    let current = {
        let mut conn = st.store.read().await.map_err(|e| fail(&ctx, e))?;
        current_limits(&mut conn, project.id)
            .await
            .map_err(|e| fail(&ctx, e))?
    };
    let mut changed = 0;
    for (state, limit) in parsed {
        let now = current.get(&state).copied().flatten();
        if now == limit {
            continue;
        }
        if let Err(e) = board::set_wip_limit(&st.store, project, &ctx.actor(), &state, limit).await
        {
            return refused(&st, &ctx, project, "wip", e.into(), drafts()).await;
        }
        changed += 1;
    }
    Ok(redirect_with_flash(
        &back(project, "wip"),
        &format!("Saved the WIP limits ({changed} column(s) changed)."),
    ))
}

async fn current_limits(
    ex: &mut impl Executor,
    project_id: i64,
) -> Result<BTreeMap<String, Option<i64>>, StoreError> {
    Ok(board::wip_limits(ex, project_id)
        .await?
        .into_iter()
        .collect())
}

// ---- Custom field inputs of the item forms ----

/// One input of a custom field on the new-item or edit form.
pub struct FieldInput {
    pub name: String,
    pub label: String,
    /// text, number, select, user or date.
    pub kind: &'static str,
    pub value: String,
    /// For select and user fields: the choices (the current value is always one of them).
    pub choices: Vec<String>,
    pub error: Option<String>,
}

/// The inputs for `defs` holding `values`; `error` is (field name, message) of a refusal.
pub fn inputs(
    defs: &[Field],
    members: &[String],
    values: &BTreeMap<String, String>,
    error: Option<&(String, String)>,
) -> Vec<FieldInput> {
    defs.iter()
        .map(|f| {
            let mut value = values.get(&f.name).cloned().unwrap_or_default();
            let mut choices = match f.field_type {
                FieldType::Select => f.options.clone(),
                FieldType::User => members.to_vec(),
                _ => Vec::new(),
            };
            if matches!(f.field_type, FieldType::Select | FieldType::User)
                && !value.is_empty()
                && !choices.contains(&value)
            {
                choices.push(value.clone());
            }
            // A date input shows YYYY-MM-DD; values set through the API may carry a time.
            if f.field_type == FieldType::Date
                && value.len() > 10
                && value.as_bytes().get(10) == Some(&b'T')
            {
                value.truncate(10);
            }
            FieldInput {
                name: f.name.clone(),
                label: f.label.clone(),
                kind: f.field_type.as_str(),
                value,
                choices,
                error: error.filter(|(n, _)| n == &f.name).map(|(_, m)| m.clone()),
            }
        })
        .collect()
}

/// The submitted values of the custom field inputs (`cf.NAME`), as typed.
pub fn submitted(defs: &[Field], form: &Form) -> BTreeMap<String, String> {
    defs.iter()
        .filter_map(|f| {
            form.0
                .get(&format!("cf.{}", f.name))
                .map(|v| (f.name.clone(), v.clone()))
        })
        .collect()
}

/// The values to hand to the domain (validated there, as through the API).
pub fn to_values(v: &BTreeMap<String, String>) -> BTreeMap<String, Value> {
    v.iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// Whether a typed value is the stored one as the form showed it (a date input shows only the
/// day of a stored time).
pub fn unchanged(stored: Option<&str>, typed: &str) -> bool {
    let (stored, typed) = (stored.unwrap_or("").trim(), typed.trim());
    stored == typed
        || (!typed.is_empty()
            && stored.len() > 10
            && stored.as_bytes()[10] == b'T'
            && stored.get(..10) == Some(typed))
}

/// The custom field a refusal names (`fields.NAME`), with its message.
pub fn field_error(e: &OuroError) -> Option<(String, String)> {
    crate::ui::common::field_of(e)
        .and_then(|f| f.strip_prefix("fields."))
        .map(|n| (n.to_string(), e.message.clone()))
}

/// The project's field definitions and the members a user field may name.
pub async fn defs_and_members(
    ex: &mut impl Executor,
    project_id: i64,
) -> Result<(Vec<Field>, Vec<String>), StoreError> {
    let defs = fields::list(ex, project_id).await?;
    let members = if defs.iter().any(|f| f.field_type == FieldType::User) {
        ouro_store::projects::members(ex, project_id)
            .await?
            .into_iter()
            .map(|m| m.user)
            .collect()
    } else {
        Vec::new()
    };
    Ok((defs, members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_by_line_or_comma() {
        assert_eq!(parse_options("a, b ,,c"), vec!["a", "b", "c"]);
        assert_eq!(parse_options("x, y\nz\n\n"), vec!["x, y", "z"]);
        assert!(parse_options("  ").is_empty());
    }

    #[test]
    fn unchanged_values() {
        assert!(unchanged(None, ""));
        assert!(unchanged(Some("3"), " 3 "));
        assert!(unchanged(Some("2026-01-02T10:00:00Z"), "2026-01-02"));
        assert!(!unchanged(Some("2026-01-02T10:00:00Z"), "2026-01-03"));
        assert!(!unchanged(Some("3"), ""));
        assert!(!unchanged(None, "x"));
    }

    #[test]
    fn anchors_are_plain() {
        assert_eq!(anchor_of("standard"), "wf-standard");
        assert_eq!(anchor_of("My Flow\"<"), "wf-my-flow--");
    }
}
