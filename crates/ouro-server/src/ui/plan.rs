//! Plan pages: the backlog (list, search, filters, new item) and the item page (fields,
//! description, transitions, comments, watching, history, edit). Everything goes through the
//! public functions of `ouro_plan::items` and `ouro_plan::workflow`, like the JSON API.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect};
use ouro_core::{ErrorCode, Event, OuroError, Permission, Role};
use ouro_plan::items::{self, Comment, Item, ItemFilter, ItemPatch, NewItem, Priority};
use ouro_plan::{markdown, saved_queries, workflow};
use ouro_store::PageReq;
use ouro_store::projects::Project;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use crate::AppState;
use crate::extract::{Ctx, Path, Query};
use crate::registry::Registry;
use crate::ui::common::{Flash, When, fail, field_of, redirect_with_flash};
use crate::ui::plan_settings::{self as custom_fields, FieldInput};
use crate::ui::projects::{PHASES, PhaseLink};
use crate::ui::{Chrome, Form, UiError, UiResult, render_status, url_encode};

pub fn register(reg: &mut Registry) {
    use Permission::Project as InProject;
    let (read, write) = (InProject(Role::Viewer), InProject(Role::Developer));
    reg.route(Method::GET, "/projects/{slug}/plan", read, backlog);
    reg.route(Method::POST, "/projects/{slug}/plan/items", write, create);
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/saved",
        read,
        save_query,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/saved/{id}/delete",
        read,
        delete_query,
    );
    reg.route(
        Method::GET,
        "/projects/{slug}/plan/items/{key}",
        read,
        item_page,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/items/{key}/edit",
        write,
        edit,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/items/{key}/transition",
        write,
        transition,
    );
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/items/{key}/comments",
        write,
        comment,
    );
    // Watching is a personal subscription, not a change to the item: viewers may watch too,
    // as in the API.
    reg.route(
        Method::POST,
        "/projects/{slug}/plan/items/{key}/watch",
        read,
        watch,
    );
}

/// The backlog shows this many items per page; "Older items" follows the cursor.
const PAGE: i64 = 100;

const PRIORITIES: [Priority; 5] = [
    Priority::None,
    Priority::Low,
    Priority::Medium,
    Priority::High,
    Priority::Critical,
];

/// A filter link above the backlog table.
pub struct Chip {
    pub label: String,
    pub href: String,
    pub on: bool,
}

pub struct Row {
    pub key: String,
    pub item_type: String,
    pub title: String,
    pub state: String,
    pub category: &'static str,
    pub assignee: String,
    pub priority: &'static str,
    pub estimate: String,
    pub labels: Vec<String>,
}

impl Row {
    fn of(i: Item) -> Row {
        Row {
            category: i.state_category.as_str(),
            priority: i.priority.as_str(),
            estimate: i.estimate.map(|e| e.to_string()).unwrap_or_default(),
            assignee: i.assignee.unwrap_or_default(),
            key: i.key,
            item_type: i.item_type,
            title: i.title,
            state: i.state,
            labels: i.labels,
        }
    }
}

#[derive(Default)]
pub struct NewErrors {
    pub form: Option<String>,
    pub item_type: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
}

pub struct Opt {
    pub value: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "plan_backlog.html")]
struct BacklogPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    can_edit: bool,
    rows: Vec<Row>,
    q: String,
    /// The type and state filters, carried by the search form so a search keeps them.
    type_filter: String,
    state_filter: String,
    /// Whether any search or filter is applied (changes what the empty state says).
    filtered: bool,
    /// A query that did not parse: the message and the query with a caret under the position.
    search_error: Option<(String, String)>,
    type_chips: Vec<Chip>,
    state_chips: Vec<Chip>,
    clear_href: String,
    next_href: Option<String>,
    type_options: Vec<Opt>,
    new_title: String,
    new_description: String,
    new_errors: NewErrors,
    /// One input per custom field of the project on the new-item form.
    custom_inputs: Vec<FieldInput>,
    saved: Vec<SavedChip>,
    /// Whether the "Save this search" form shows, and its shared checkbox.
    can_save: bool,
    can_share: bool,
}

/// A saved query on the backlog: a chip linking to its search, with a delete button.
pub struct SavedChip {
    pub id: i64,
    pub name: String,
    pub href: String,
    pub shared: bool,
}

#[derive(Deserialize, Default)]
pub struct BacklogQuery {
    q: Option<String>,
    #[serde(rename = "type")]
    item_type: Option<String>,
    state: Option<String>,
    cursor: Option<String>,
}

/// Empty parameters mean "no filter", as a cleared search box would.
fn given(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn backlog_href(
    slug: &str,
    q: &Option<String>,
    ty: &Option<String>,
    st: &Option<String>,
) -> String {
    let mut parts = Vec::new();
    for (k, v) in [("q", q), ("type", ty), ("state", st)] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", url_encode(v)));
        }
    }
    let base = format!("/projects/{slug}/plan");
    if parts.is_empty() {
        base
    } else {
        format!("{base}?{}", parts.join("&"))
    }
}

fn page_head(ctx: &Ctx) -> (bool, bool) {
    (
        ctx.role() >= Some(Role::Maintainer),
        ctx.role() >= Some(Role::Developer),
    )
}

/// Builds the backlog page for `query`; the new-item form starts empty.
async fn build_backlog<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
    query: &BacklogQuery,
) -> Result<BacklogPage<'a>, UiError> {
    let (q, ty, state) = (
        given(&query.q),
        given(&query.item_type),
        given(&query.state),
    );
    // A cursor that is not a number starts from the top rather than failing the page.
    let after = query
        .cursor
        .as_deref()
        .and_then(|c| c.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let wf = workflow::for_project(&st.store, project.id)
        .await
        .map_err(|e| fail(ctx, e))?;
    let filter = ItemFilter {
        text: None,
        item_type: ty.clone(),
        state: state.clone(),
        assignee: None,
        label: None,
    };
    // The search box takes the item query language (docs/query-language.md); a query that does
    // not parse is shown with its position under the box instead of failing the page.
    let search = items::Search {
        query: q.clone(),
        me: ctx.principal.as_ref().map(|p| p.user.id),
        cursor: query.cursor.clone().filter(|c| !c.trim().is_empty()),
        limit: PAGE,
    };
    let mut conn = st.store.read().await.map_err(|e| fail(ctx, e))?;
    let mut result = items::search(&mut conn, project.id, &filter, &search).await;
    if result.is_err() && search.cursor.is_some() {
        // A stale or hand-edited cursor starts from the top rather than failing the page.
        let from_top = items::Search {
            cursor: None,
            ..search
        };
        result = items::search(&mut conn, project.id, &filter, &from_top).await;
    }
    let (list, search_error) = match result {
        Ok(l) => (l, None),
        Err(e) => {
            let e: OuroError = e.into();
            if e.code.http_status() == 400 {
                let caret = e
                    .details
                    .as_ref()
                    .and_then(|d| d["caret"].as_str())
                    .map(String::from);
                let empty = ouro_store::Page {
                    items: Vec::new(),
                    next_cursor: None,
                };
                (empty, Some((e.message, caret.unwrap_or_default())))
            } else {
                return Err(fail(ctx, e));
            }
        }
    };
    let slug = &project.slug;
    let enabled: Vec<&workflow::ItemType> = wf.types.iter().filter(|t| t.enabled).collect();
    let type_chips = enabled
        .iter()
        .map(|t| {
            let on = ty.as_deref() == Some(t.name.as_str());
            let next = if on { None } else { Some(t.name.clone()) };
            Chip {
                label: t.name.clone(),
                href: backlog_href(slug, &q, &next, &state),
                on,
            }
        })
        .collect();
    // States of every workflow, each name once, in board order of the first workflow using it.
    // The standard workflow goes first: most items use it, incidents are the exception.
    let mut flows: Vec<&workflow::Workflow> = wf.workflows.iter().collect();
    flows.sort_by_key(|w| w.name != workflow::STANDARD);
    let mut names: Vec<(String, &'static str)> = Vec::new();
    for w in flows {
        for s in &w.states {
            if !names.iter().any(|(n, _)| n == &s.name) {
                names.push((s.name.clone(), s.category.as_str()));
            }
        }
    }
    let state_chips = names
        .into_iter()
        .map(|(n, _)| {
            let on = state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(&n));
            let next = if on { None } else { Some(n.clone()) };
            Chip {
                href: backlog_href(slug, &q, &ty, &next),
                label: n,
                on,
            }
        })
        .collect();
    let next_href = list.next_cursor.as_ref().map(|c| {
        let base = backlog_href(slug, &q, &ty, &state);
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}cursor={}", url_encode(c))
    });
    let (manage, can_edit) = page_head(ctx);
    let caller = crate::api::saved_queries::caller(ctx);
    let saved = saved_queries::list(&mut st.store.read().await?, project.id, caller.user_id)
        .await?
        .into_iter()
        .map(|s| SavedChip {
            id: s.id,
            href: backlog_href(slug, &Some(s.query), &None, &None),
            name: s.name,
            shared: s.shared,
        })
        .collect();
    let (defs, members) = custom_fields::defs_and_members(&mut st.store.read().await?, project.id)
        .await
        .map_err(|e| fail(ctx, e))?;
    Ok(BacklogPage {
        custom_inputs: custom_fields::inputs(&defs, &members, &BTreeMap::new(), None),
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "plan",
        manage,
        can_edit,
        rows: list.items.into_iter().map(Row::of).collect(),
        filtered: q.is_some() || ty.is_some() || state.is_some() || after > 0,
        search_error,
        q: q.clone().unwrap_or_default(),
        type_filter: ty.clone().unwrap_or_default(),
        state_filter: state.clone().unwrap_or_default(),
        type_chips,
        state_chips,
        clear_href: format!("/projects/{slug}/plan"),
        next_href,
        type_options: enabled
            .iter()
            .map(|t| Opt {
                value: t.name.clone(),
                selected: t.name == "story",
            })
            .collect(),
        new_title: String::new(),
        new_description: String::new(),
        new_errors: NewErrors::default(),
        saved,
        can_save: ctx.principal.is_some(),
        can_share: caller.can_share,
    })
}

/// Saves the current search; any refusal (bad name, bad query, duplicate) comes back as a flash
/// on the backlog, with the search kept.
async fn save_query(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    ctx.user()?;
    let q = form.get("q");
    let back = backlog_href(&project.slug, &Some(q.clone()), &None, &None);
    let shared = form.get("shared") == "on";
    let caller = crate::api::saved_queries::caller(&ctx);
    let msg =
        match saved_queries::create(&st.store, project.id, caller, &form.get("name"), &q, shared)
            .await
        {
            Ok(s) => format!("Saved the search as {:?}.", s.name),
            Err(e) => OuroError::from(e).message,
        };
    Ok(redirect_with_flash(&back, &msg))
}

async fn delete_query(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, i64)>,
) -> UiResult {
    let project = ctx.project()?;
    ctx.user()?;
    let caller = crate::api::saved_queries::caller(&ctx);
    saved_queries::delete(&st.store, project.id, caller, id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    Ok(redirect_with_flash(
        &format!("/projects/{}/plan", project.slug),
        "Deleted the saved search.",
    ))
}

async fn backlog(
    State(st): State<AppState>,
    ctx: Ctx,
    flash: Flash,
    Query(query): Query<BacklogQuery>,
) -> UiResult {
    let project = ctx.project()?;
    let mut p = build_backlog(&st, &ctx, project, &query).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

pub(crate) fn item_href(project: &Project, key: &str) -> String {
    format!("/projects/{}/plan/items/{}", project.slug, url_encode(key))
}

async fn create(State(st): State<AppState>, ctx: Ctx, form: Form) -> UiResult {
    let project = ctx.project()?;
    let (ty, title, description) = (form.get("type"), form.get("title"), form.get("description"));
    let (defs, members) = custom_fields::defs_and_members(&mut st.store.read().await?, project.id)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let typed = custom_fields::submitted(&defs, &form);
    let input = NewItem {
        item_type: ty.trim().to_string(),
        title: title.clone(),
        description: description.clone(),
        fields: custom_fields::to_values(&typed),
        ..Default::default()
    };
    match items::create(&st.store, project, &ctx.actor(), input).await {
        Ok(item) => Ok(Redirect::to(&item_href(project, &item.key)).into_response()),
        Err(e) => {
            let e: OuroError = e.into();
            let mut errors = NewErrors::default();
            let custom_error =
                custom_fields::field_error(&e).filter(|(n, _)| defs.iter().any(|d| &d.name == n));
            match (e.code, field_of(&e)) {
                _ if e.code == ErrorCode::ValidationFailed && custom_error.is_some() => {}
                (ErrorCode::ValidationFailed, Some("title")) => errors.title = Some(e.message),
                (ErrorCode::ValidationFailed, Some("description")) => {
                    errors.description = Some(e.message)
                }
                (ErrorCode::ValidationFailed, Some("type")) => errors.item_type = Some(e.message),
                (ErrorCode::ValidationFailed, _) => errors.form = Some(e.message),
                _ => return Err(fail(&ctx, e)),
            }
            let mut p = build_backlog(&st, &ctx, project, &BacklogQuery::default()).await?;
            for o in &mut p.type_options {
                o.selected = o.value == ty.trim();
            }
            p.new_title = title;
            p.new_description = description;
            p.new_errors = errors;
            p.custom_inputs = custom_fields::inputs(&defs, &members, &typed, custom_error.as_ref());
            Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &p))
        }
    }
}

// ---- The item page ----

pub struct CommentView {
    pub author: String,
    pub when: When,
    /// Sanitised by `ouro_plan::markdown::render`; the only HTML the template outputs raw.
    pub html: String,
}

/// One line of the history: who did what when, and the field changes if any.
pub struct HistoryLine {
    pub actor: String,
    pub when: When,
    pub what: String,
    pub changes: Vec<(String, String)>,
}

/// The edit form's values (as submitted, or the item's).
#[derive(Clone)]
pub struct EditValues {
    pub title: String,
    pub description: String,
    pub priority: String,
    pub estimate: String,
    pub assignee: String,
    pub labels: String,
    pub version: i64,
    /// Custom field values by field name.
    pub fields: BTreeMap<String, String>,
}

impl EditValues {
    fn of(i: &Item) -> EditValues {
        EditValues {
            title: i.title.clone(),
            description: i.description.clone(),
            priority: i.priority.as_str().into(),
            estimate: i.estimate.map(|e| e.to_string()).unwrap_or_default(),
            assignee: i.assignee.clone().unwrap_or_default(),
            labels: i.labels.join(" "),
            version: i.version,
            fields: i.fields.clone(),
        }
    }
}

#[derive(Default)]
pub struct EditErrors {
    pub title: Option<String>,
    pub description: Option<String>,
    pub priority: Option<String>,
    pub estimate: Option<String>,
    pub assignee: Option<String>,
    pub labels: Option<String>,
    /// A refused custom field value: (field name, message).
    pub custom: Option<(String, String)>,
}

/// A stale edit: someone else's values next to the ones that were submitted.
pub struct Conflict {
    pub rows: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "plan_item.html")]
pub(crate) struct ItemPage<'a> {
    chrome: Chrome,
    project: &'a Project,
    phases: &'static [PhaseLink],
    active: &'static str,
    manage: bool,
    can_edit: bool,
    item: Item,
    category: &'static str,
    created: When,
    updated: When,
    due: Option<When>,
    /// Sanitised description HTML (see [`CommentView::html`]).
    description_html: String,
    targets: Vec<(String, &'static str)>,
    /// A refused transition or edit, shown above the fields.
    pub(crate) error: Option<String>,
    comments: Vec<CommentView>,
    comment_body: String,
    comment_error: Option<String>,
    watching: bool,
    watchers: Vec<String>,
    history: Vec<HistoryLine>,
    edit: EditValues,
    edit_errors: EditErrors,
    /// Whether the edit form starts open (after a failed edit).
    edit_open: bool,
    conflict: Option<Conflict>,
    priorities: Vec<Opt>,
    links: Vec<ouro_plan::links::ItemLink>,
    /// A refused link, shown in the Links section.
    pub(crate) link_error: Option<String>,
    trail: Vec<crate::ui::plan_links::TrailStageView>,
    /// The project's custom fields as (label, value or empty), in display order.
    custom: Vec<(String, String)>,
    /// The custom field inputs of the edit form.
    custom_inputs: Vec<FieldInput>,
    field_defs: Vec<ouro_plan::fields::Field>,
    members: Vec<String>,
    attachments: Vec<crate::ui::plan_attachments::AttachmentView>,
    /// Where the upload form posts (carries the CSRF token: the body is multipart).
    attach_action: String,
    /// A refused upload, shown in the Attachments section.
    pub(crate) attachment_error: Option<String>,
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::Null => "—".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "—".to_string(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    // History lines stay one line: long values are cut, not wrapped across the page.
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

fn history_line(e: &Event) -> HistoryLine {
    let p = &e.payload;
    let (what, changes) = match e.kind.as_str() {
        "item.created" => (
            format!("created this {}", p["type"].as_str().unwrap_or("item")),
            vec![],
        ),
        "item.transitioned" => (
            format!(
                "moved it from {} to {}",
                p["from"].as_str().unwrap_or("?"),
                p["to"].as_str().unwrap_or("?")
            ),
            vec![],
        ),
        "item.commented" => ("commented".to_string(), vec![]),
        "item.updated" => {
            let mut ch = Vec::new();
            if let Some(m) = p["changes"].as_object() {
                for (field, v) in m {
                    // The description can be long; saying that it changed is enough here.
                    let text = if field == "description" {
                        "changed".to_string()
                    } else {
                        format!("{} → {}", short(&v["old"]), short(&v["new"]))
                    };
                    ch.push((field.clone(), text));
                }
            }
            ("changed".to_string(), ch)
        }
        other => (other.to_string(), vec![]),
    };
    HistoryLine {
        // Ledger actors are `user:NAME` (or `system:...`); people read the name.
        actor: e
            .actor
            .strip_prefix("user:")
            .unwrap_or(&e.actor)
            .to_string(),
        when: When::of(e.time),
        what,
        changes,
    }
}

fn priority_opts(selected: &str) -> Vec<Opt> {
    PRIORITIES
        .iter()
        .map(|p| Opt {
            value: p.as_str().into(),
            selected: p.as_str() == selected,
        })
        .collect()
}

pub(crate) async fn build_item<'a>(
    st: &AppState,
    ctx: &'a Ctx,
    project: &'a Project,
    key: &str,
) -> Result<ItemPage<'a>, UiError> {
    let mut conn = st.store.read().await.map_err(|e| fail(ctx, e))?;
    let item = items::get(&mut conn, project.id, key)
        .await
        .map_err(|e| fail(ctx, e))?
        .ok_or_else(|| fail(ctx, items::not_found(key)))?;
    let targets = match workflow::item_type(&mut conn, project.id, &item.item_type)
        .await
        .map_err(|e| fail(ctx, e))?
    {
        Some(t) => workflow::allowed_targets(&mut conn, project.id, &t.workflow, &item.state)
            .await
            .map_err(|e| fail(ctx, e))?
            .into_iter()
            .map(|s| (s.name, s.category.as_str()))
            .collect(),
        None => vec![],
    };
    // Comments are shown up to the API's page maximum; busier threads will need paging here.
    let comments = items::comments(&mut conn, project.id, &item.key, PageReq::new(0, Some(500)))
        .await
        .map_err(|e| fail(ctx, e))?
        .items
        .into_iter()
        .map(|c: Comment| CommentView {
            author: c.author.unwrap_or_else(|| "deleted user".into()),
            when: When::of(c.created_at),
            html: markdown::render(&c.body),
        })
        .collect();
    let uid = ctx.principal.as_ref().map(|p| p.user.id).unwrap_or(-1);
    let w = items::watchers(&mut conn, project.id, uid, &item.key)
        .await
        .map_err(|e| fail(ctx, e))?;
    let mut history: Vec<HistoryLine> = items::history(&mut conn, project.id, &item.key)
        .await
        .map_err(|e| fail(ctx, e))?
        .iter()
        .map(history_line)
        .collect();
    history.reverse();
    let links = ouro_plan::links::list(&mut conn, item.id)
        .await
        .map_err(|e| fail(ctx, e))?;
    let trail = ouro_plan::trail::of_item(&mut conn, item.id)
        .await
        .map_err(|e| fail(ctx, e))?;
    let (field_defs, members) = custom_fields::defs_and_members(&mut conn, project.id)
        .await
        .map_err(|e| fail(ctx, e))?;
    let custom = field_defs
        .iter()
        .map(|f| {
            let v = item.fields.get(&f.name).cloned().unwrap_or_default();
            (f.label.clone(), v)
        })
        .collect();
    let custom_inputs = custom_fields::inputs(&field_defs, &members, &item.fields, None);
    let (manage, can_edit) = page_head(ctx);
    let attachments = crate::ui::plan_attachments::AttachmentView::of(
        ctx,
        ouro_plan::attachments::list(&mut conn, item.id)
            .await
            .map_err(|e| fail(ctx, e))?,
    );
    let attach_action = format!(
        "/projects/{}/plan/items/{}/attachments?_csrf={}",
        project.slug,
        item.key,
        url_encode(&Chrome::of(ctx).csrf)
    );
    Ok(ItemPage {
        attachments,
        attach_action,
        attachment_error: None,
        links,
        link_error: None,
        trail: crate::ui::plan_links::TrailStageView::of(trail),
        custom,
        custom_inputs,
        field_defs,
        members,
        chrome: Chrome::of(ctx),
        project,
        phases: PHASES,
        active: "plan",
        manage,
        can_edit,
        category: item.state_category.as_str(),
        created: When::of(item.created_at),
        updated: When::of(item.updated_at),
        due: item.due_at.map(When::of),
        description_html: markdown::render(&item.description),
        targets,
        error: None,
        comments,
        comment_body: String::new(),
        comment_error: None,
        watching: w.watching,
        watchers: w.watchers,
        history,
        edit: EditValues::of(&item),
        edit_errors: EditErrors::default(),
        edit_open: false,
        conflict: None,
        priorities: priority_opts(item.priority.as_str()),
        item,
    })
}

async fn item_page(
    State(st): State<AppState>,
    ctx: Ctx,
    flash: Flash,
    Path((_, key)): Path<(String, String)>,
) -> UiResult {
    let project = ctx.project()?;
    let mut p = build_item(&st, &ctx, project, &key).await?;
    p.chrome = p.chrome.with_flash(flash.message());
    Ok(flash.finish(render_status(StatusCode::OK, &p)))
}

async fn transition(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let to = form.get("to");
    match items::transition(&st.store, project, &ctx.actor(), &key, &to, None).await {
        Ok(item) => Ok(redirect_with_flash(
            &item_href(project, &item.key),
            &format!("{} moved to {}.", item.key, item.state),
        )),
        Err(e) => {
            let e: OuroError = e.into();
            match e.code {
                ErrorCode::InvalidTransition | ErrorCode::StaleVersion => {
                    let mut p = build_item(&st, &ctx, project, &key).await?;
                    p.error = Some(e.message.clone());
                    Ok(render_status(crate::auth::status_of(e.code), &p))
                }
                _ => Err(fail(&ctx, e)),
            }
        }
    }
}

async fn comment(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let body = form.get("body");
    match items::add_comment(&st.store, project, &ctx.actor(), &key, &body).await {
        Ok(_) => Ok(redirect_with_flash(
            &format!("{}#comments", item_href(project, &key.to_ascii_uppercase())),
            "Comment added.",
        )),
        Err(e) => {
            let e: OuroError = e.into();
            if e.code != ErrorCode::ValidationFailed {
                return Err(fail(&ctx, e));
            }
            let mut p = build_item(&st, &ctx, project, &key).await?;
            p.comment_body = body;
            p.comment_error = Some(e.message);
            Ok(render_status(StatusCode::UNPROCESSABLE_ENTITY, &p))
        }
    }
}

async fn watch(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let uid = ctx.user()?.id;
    let on = form.get("on") != "false";
    let w = items::set_watching(&st.store, project.id, uid, &key, on)
        .await
        .map_err(|e| fail(&ctx, e))?;
    let msg = if w.watching {
        "You are watching this item."
    } else {
        "You stopped watching this item."
    };
    Ok(redirect_with_flash(
        &item_href(project, &key.to_ascii_uppercase()),
        msg,
    ))
}

/// Reads the edit form into a patch; a field that cannot be read becomes a field error.
fn read_edit(form: &Form) -> (EditValues, Result<ItemPatch, EditErrors>) {
    let v = EditValues {
        title: form.get("title"),
        description: form.get("description"),
        priority: form.get("priority").trim().to_string(),
        estimate: form.get("estimate").trim().to_string(),
        assignee: form.get("assignee").trim().to_string(),
        labels: form.get("labels"),
        version: form.get("version").trim().parse().unwrap_or(0),
        fields: form
            .0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("cf.").map(|n| (n.to_string(), v.clone())))
            .collect(),
    };
    let mut errors = EditErrors::default();
    let priority = Priority::parse(&v.priority);
    if priority.is_none() {
        errors.priority = Some("Choose one of the priorities in the list.".into());
    }
    let estimate = if v.estimate.is_empty() {
        Some(None)
    } else {
        match v.estimate.parse::<i64>() {
            Ok(n) => Some(Some(n)),
            Err(_) => {
                errors.estimate = Some("Enter whole story points, or leave it empty.".into());
                None
            }
        }
    };
    let labels: Vec<String> = v
        .labels
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let any = errors.priority.is_some() || errors.estimate.is_some();
    let patch = ItemPatch {
        title: Some(v.title.clone()),
        description: Some(v.description.clone()),
        priority,
        assignee: Some(Some(v.assignee.clone()).filter(|a| !a.is_empty())),
        estimate,
        labels: Some(labels),
        fields: Some(custom_fields::to_values(&v.fields)),
        // 0 is never a stored version, so a missing or garbled version is a conflict, not a
        // silent overwrite.
        version: Some(v.version),
        ..Default::default()
    };
    (v, if any { Err(errors) } else { Ok(patch) })
}

async fn edit(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, key)): Path<(String, String)>,
    form: Form,
) -> UiResult {
    let project = ctx.project()?;
    let (values, patch) = read_edit(&form);
    let mut patch = match patch {
        Ok(p) => p,
        Err(errors) => {
            return edit_failed(
                &st,
                &ctx,
                project,
                &key,
                &values,
                errors,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
            )
            .await;
        }
    };
    // Only the custom fields the user changed are sent: a value that is no longer allowed (an
    // option since removed, a user who left the project) must not block saving other changes.
    let stored = items::get(
        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
        project.id,
        &key,
    )
    .await
    .map_err(|e| fail(&ctx, e))?
    .map(|i| i.fields)
    .unwrap_or_default();
    if let Some(f) = patch.fields.as_mut() {
        f.retain(|name, v| {
            let typed = v.as_str().unwrap_or("");
            !custom_fields::unchanged(stored.get(name).map(String::as_str), typed)
        });
    }
    match items::update(&st.store, project, &ctx.actor(), &key, patch).await {
        Ok(item) => Ok(redirect_with_flash(
            &item_href(project, &item.key),
            &format!("{} was saved.", item.key),
        )),
        Err(e) => {
            let e: OuroError = e.into();
            let mut errors = EditErrors::default();
            match (e.code, field_of(&e)) {
                (ErrorCode::StaleVersion, _) => {
                    let cur = items::get(
                        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
                        project.id,
                        &key,
                    )
                    .await
                    .map_err(|e| fail(&ctx, e))?
                    .ok_or_else(|| fail(&ctx, items::not_found(&key)))?;
                    let now = EditValues::of(&cur);
                    let rows = [
                        ("Title", &now.title, &values.title),
                        ("Description", &now.description, &values.description),
                        ("Priority", &now.priority, &values.priority),
                        ("Estimate", &now.estimate, &values.estimate),
                        ("Assignee", &now.assignee, &values.assignee),
                        ("Labels", &now.labels, &values.labels),
                    ]
                    .into_iter()
                    .map(|(f, a, b)| (f.to_string(), a.clone(), b.clone()))
                    .collect::<Vec<_>>();
                    let mut rows = rows;
                    let defs = ouro_plan::fields::list(
                        &mut st.store.read().await.map_err(|e| fail(&ctx, e))?,
                        project.id,
                    )
                    .await
                    .map_err(|e| fail(&ctx, e))?;
                    for d in defs {
                        let get = |m: &BTreeMap<String, String>| {
                            m.get(&d.name).cloned().unwrap_or_default()
                        };
                        rows.push((d.label.clone(), get(&now.fields), get(&values.fields)));
                    }
                    return edit_failed(
                        &st,
                        &ctx,
                        project,
                        &key,
                        &values,
                        errors,
                        StatusCode::CONFLICT,
                        Some(Conflict { rows }),
                    )
                    .await;
                }
                (ErrorCode::ValidationFailed, Some("title")) => errors.title = Some(e.message),
                (ErrorCode::ValidationFailed, Some("description")) => {
                    errors.description = Some(e.message)
                }
                (ErrorCode::ValidationFailed, Some("estimate")) => {
                    errors.estimate = Some(e.message)
                }
                (ErrorCode::ValidationFailed, Some("assignee")) => {
                    errors.assignee = Some(e.message)
                }
                (ErrorCode::ValidationFailed, Some("labels")) => errors.labels = Some(e.message),
                (ErrorCode::ValidationFailed, Some(f)) if f.starts_with("fields.") => {
                    errors.custom = custom_fields::field_error(&e)
                }
                (ErrorCode::ValidationFailed, _) => errors.title = Some(e.message),
                _ => return Err(fail(&ctx, e)),
            }
            edit_failed(
                &st,
                &ctx,
                project,
                &key,
                &values,
                errors,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
            )
            .await
        }
    }
}

/// The item page again with the edit form open, holding what was submitted.
#[allow(clippy::too_many_arguments)]
async fn edit_failed(
    st: &AppState,
    ctx: &Ctx,
    project: &Project,
    key: &str,
    values: &EditValues,
    errors: EditErrors,
    status: StatusCode,
    conflict: Option<Conflict>,
) -> UiResult {
    let mut p = build_item(st, ctx, project, key).await?;
    // After a conflict the form takes the current version: saving again is then a deliberate
    // choice to overwrite, made after seeing the current values. Otherwise the version stays
    // the one that was read, so a resubmission still detects other people's changes.
    let version = if conflict.is_some() {
        p.item.version
    } else {
        values.version
    };
    p.edit = EditValues {
        version,
        ..values.clone()
    };
    p.priorities = priority_opts(&values.priority);
    let mut errors = errors;
    p.custom_inputs = custom_fields::inputs(
        &p.field_defs,
        &p.members,
        &values.fields,
        errors.custom.as_ref(),
    );
    // A value for a field the project does not have (a stale form) still shows its message.
    if let Some((n, m)) = &errors.custom
        && !p.field_defs.iter().any(|d| &d.name == n)
    {
        errors.title = Some(m.clone());
    }
    p.edit_errors = errors;
    p.edit_open = true;
    p.conflict = conflict;
    Ok(render_status(status, &p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_links_keep_other_filters() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            backlog_href("demo", &None, &None, &None),
            "/projects/demo/plan"
        );
        assert_eq!(
            backlog_href("demo", &s("a b"), &s("bug"), &s("In progress")),
            "/projects/demo/plan?q=a%20b&type=bug&state=In%20progress"
        );
    }

    #[test]
    fn history_values_are_short() {
        assert_eq!(short(&Value::Null), "—");
        assert_eq!(short(&serde_json::json!(["a", "b"])), "a, b");
        assert_eq!(short(&Value::String("x".repeat(100))).chars().count(), 81);
    }
}
