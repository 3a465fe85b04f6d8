//! Intake: the optional public feedback form of a project, and triage of what comes in.
//!
//! Submissions of the public form become `feedback` items with no reporter (the contact
//! address, if given, is appended to the description). Triage lists feedback and incident items
//! in a to-do state that were not triaged yet; a triager accepts one (it becomes a story, bug...),
//! merges it into another item (comment, `duplicates` link, closed) or declines it (comment,
//! closed). Each decision is recorded in `plan_triage` and written as `item.triaged`.

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::projects::Project;
use ouro_store::{Executor, Store, StoreError, Tx, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::items::{self, Item, NewItem};
use crate::workflow::{self, Category, Kind};

pub const ACTOR: &str = "intake";
pub const MAX_TITLE: usize = 200;
pub const MAX_BODY: usize = 5_000;
pub const MAX_CONTACT: usize = 200;
pub const MAX_REASON: usize = 1_000;

/// A project's intake settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Intake {
    /// Whether anyone may send feedback at `/p/{slug}/feedback` (public and internal projects only).
    pub public_form: bool,
}

/// What a triager decides for an item.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decision {
    /// Keep it as work: change its type (e.g. `story` or `bug`).
    Accept {
        #[serde(rename = "type")]
        item_type: String,
    },
    /// It duplicates another item: comment, link as `duplicates`, close.
    Merge { into: String },
    /// Not something we will do: close it with the reason as a comment.
    Decline { reason: String },
}

/// One public form submission.
#[derive(Debug, Clone, Default)]
pub struct Feedback {
    pub title: String,
    pub body: String,
    /// Optional e-mail address to answer to.
    pub contact: String,
}

pub async fn get(ex: &mut impl Executor, project_id: i64) -> Result<Intake, StoreError> {
    let row = q("SELECT public_form FROM plan_intake WHERE project_id = $1")
        .bind(project_id)
        .fetch_optional(ex)
        .await?;
    Ok(Intake {
        public_form: match row {
            Some(r) => r.bool("public_form")?,
            None => false,
        },
    })
}

/// Opens or closes the public form; `plan.config_changed` records it.
pub async fn set(
    store: &Store,
    project: &Project,
    actor: &Actor,
    intake: Intake,
) -> Result<Intake, StoreError> {
    let mut tx = store.begin().await?;
    let cur = get(&mut tx, project.id).await?;
    if cur == intake {
        return Ok(cur);
    }
    q(
        "INSERT INTO plan_intake (project_id, public_form, updated_at) VALUES ($1, $2, $3) \
       ON CONFLICT (project_id) DO UPDATE SET public_form = $2, updated_at = $3",
    )
    .bind(project.id)
    .bind(intake.public_form)
    .bind(ouro_core::time::now_ms())
    .execute(&mut tx)
    .await?;
    tx.append(
        NewEvent::new(
            ev::PLAN_CONFIG_CHANGED,
            actor,
            project.id,
            json!({"intake": {"public_form": intake.public_form}}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(intake)
}

fn check_len(field: &str, s: &str, min: usize, max: usize) -> Result<(), OuroError> {
    let n = s.trim().chars().count();
    if n < min || s.chars().count() > max {
        return Err(OuroError::field(
            field,
            if min > 0 {
                format!("{field} must have {min} to {max} characters")
            } else {
                format!("{field} must have at most {max} characters")
            },
        ));
    }
    if s.contains('\0') {
        return Err(OuroError::field(
            field,
            format!("{field} must not contain NUL"),
        ));
    }
    Ok(())
}

/// Checks a submission: title 1 to 200 characters, text up to 5000, contact an e-mail address.
pub fn validate(f: &Feedback) -> Result<(), OuroError> {
    check_len("title", &f.title, 1, MAX_TITLE)?;
    check_len("body", &f.body, 0, MAX_BODY)?;
    let c = f.contact.trim();
    check_len("contact", c, 0, MAX_CONTACT)?;
    if !c.is_empty() {
        let ok = c
            .split_once('@')
            .is_some_and(|(u, d)| !u.is_empty() && d.contains('.') && !d.contains('@'))
            && !c.chars().any(char::is_whitespace);
        if !ok {
            return Err(OuroError::field(
                "contact",
                "contact must be an e-mail address, or empty",
            ));
        }
    }
    Ok(())
}

/// Files a submission as a `feedback` item, acting as `system:intake` (no reporter).
pub async fn submit(store: &Store, project: &Project, f: Feedback) -> Result<Item, StoreError> {
    validate(&f)?;
    let mut description = f.body.trim().to_string();
    let contact = f.contact.trim();
    if !contact.is_empty() {
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&format!("Contact: {contact}"));
    }
    // A project that never had an item has no types yet.
    let mut tx = store.begin().await?;
    workflow::ensure_defaults(&mut tx, project.id).await?;
    tx.commit().await?;
    let feedback_type = types_of_kind(store, project, Kind::Feedback)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            OuroError::new(
                ErrorCode::PlanTypeNotFound,
                "this project has no enabled feedback item type",
            )
        })?;
    items::create(
        store,
        project,
        &Actor::System(ACTOR),
        NewItem {
            item_type: feedback_type,
            title: f.title.trim().to_string(),
            description,
            ..NewItem::default()
        },
    )
    .await
}

async fn types_of_kind(
    store: &Store,
    project: &Project,
    kind: Kind,
) -> Result<Vec<String>, StoreError> {
    q("SELECT name FROM item_types WHERE project_id = $1 AND kind = $2 AND enabled = TRUE ORDER BY position, id")
        .bind(project.id)
        .bind(kind.as_str())
        .fetch_all(&mut store.read().await?)
        .await?
        .iter()
        .map(|r| r.text("name"))
        .collect()
}

const PENDING: &str = "SELECT i.key FROM items i \
     JOIN item_types t ON t.project_id = i.project_id AND t.name = i.type \
     WHERE i.project_id = $1 AND i.state_category = 'todo' AND t.kind IN ('feedback', 'incident') \
     AND NOT EXISTS (SELECT 1 FROM plan_triage g WHERE g.item_id = i.id)";

/// Feedback and incident items in a to-do state that were not triaged yet, oldest first.
pub async fn pending(ex: &mut impl Executor, project_id: i64) -> Result<Vec<Item>, StoreError> {
    let keys: Vec<String> = q(format!("{PENDING} ORDER BY i.id LIMIT 500"))
        .bind(project_id)
        .fetch_all(ex)
        .await?
        .iter()
        .map(|r| r.text("key"))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        if let Some(i) = items::get(ex, project_id, &k).await? {
            out.push(i);
        }
    }
    Ok(out)
}

async fn is_pending(
    ex: &mut impl Executor,
    project_id: i64,
    key: &str,
) -> Result<bool, StoreError> {
    Ok(q(format!("{PENDING} AND i.key = $2"))
        .bind(project_id)
        .bind(key.trim().to_ascii_uppercase())
        .fetch_optional(ex)
        .await?
        .is_some())
}

/// The first done state of the item's workflow.
async fn done_state(
    ex: &mut impl Executor,
    project_id: i64,
    item: &Item,
) -> Result<String, StoreError> {
    let ty = workflow::item_type(ex, project_id, &item.item_type)
        .await?
        .ok_or_else(|| StoreError::Decode(format!("item type {:?} is gone", item.item_type)))?;
    workflow::states(ex, project_id, &ty.workflow)
        .await?
        .into_iter()
        .find(|s| s.category == Category::Done)
        .map(|s| s.name)
        .ok_or_else(|| {
            OuroError::new(
                ErrorCode::PlanStateNotFound,
                format!(
                    "workflow {:?} has no done state to close {} in",
                    ty.workflow, item.key
                ),
            )
            .into()
        })
}

/// Applies a triage decision to a pending item and returns the item afterwards.
pub async fn triage(
    store: &Store,
    project: &Project,
    actor: &Actor,
    key: &str,
    decision: Decision,
) -> Result<Item, StoreError> {
    if let Decision::Decline { reason } = &decision {
        check_len("reason", reason, 1, MAX_REASON)?;
    }
    // One transaction: the decision's comment, link, type change and transition land together
    // or not at all.
    let mut tx = store.begin().await?;
    let item = items::get(&mut tx, project.id, key)
        .await?
        .ok_or_else(|| items::not_found(key))?;
    if !is_pending(&mut tx, project.id, &item.key).await? {
        return Err(OuroError::new(
            ErrorCode::TriageNotPending,
            format!(
                "{} is not waiting for triage (only untriaged feedback and incidents in a to-do state are)",
                item.key
            ),
        )
        .into());
    }
    let action = match &decision {
        Decision::Accept { .. } => "accept",
        Decision::Merge { .. } => "merge",
        Decision::Decline { .. } => "decline",
    };
    // Claimed first: a second triager at the same time waits for this transaction (the row's
    // key) and then finds the item taken.
    q(
        "INSERT INTO plan_triage (item_id, action, actor, created_at) VALUES ($1, $2, $3, $4) \
       ON CONFLICT (item_id) DO NOTHING RETURNING item_id",
    )
    .bind(item.id)
    .bind(action)
    .bind(actor.label())
    .bind(ouro_core::time::now_ms())
    .fetch_optional(&mut tx)
    .await?
    .ok_or_else(|| {
        OuroError::new(
            ErrorCode::TriageNotPending,
            format!("{} was triaged by someone else meanwhile", item.key),
        )
    })?;
    let mut payload = json!({"key": item.key, "from_type": item.item_type});
    match &decision {
        Decision::Accept { item_type } => {
            accept(&mut tx, project, actor, &item, item_type, &mut payload).await?;
        }
        Decision::Merge { into } => {
            let target = items::get(&mut tx, project.id, into)
                .await?
                .ok_or_else(|| {
                    OuroError::field("into", format!("{into} does not exist in this project"))
                })?;
            if target.id == item.id {
                return Err(
                    OuroError::field("into", "an item cannot be merged into itself").into(),
                );
            }
            let note = format!("Duplicate of {}.", target.key);
            items::add_comment_in(&mut tx, project, actor, &item.key, &note).await?;
            crate::links::link_in(
                &mut tx,
                project,
                actor,
                &item.key,
                "duplicates",
                &target.key,
            )
            .await?;
            let done = done_state(&mut tx, project.id, &item).await?;
            items::transition_in(&mut tx, project, actor, &item.key, &done, None).await?;
            payload["into"] = json!(target.key);
        }
        Decision::Decline { reason } => {
            let note = format!("Declined: {}", reason.trim());
            items::add_comment_in(&mut tx, project, actor, &item.key, &note).await?;
            let done = done_state(&mut tx, project.id, &item).await?;
            items::transition_in(&mut tx, project, actor, &item.key, &done, None).await?;
            payload["reason"] = json!(reason.trim());
        }
    }
    payload["action"] = json!(action);
    tx.append(
        NewEvent::new(ev::ITEM_TRIAGED, actor, item.id, payload)
            .in_project(project.id, &project.slug),
    )
    .await?;
    let after = items::get(&mut tx, project.id, &item.key)
        .await?
        .ok_or_else(|| items::not_found(key))?;
    tx.commit().await?;
    Ok(after)
}

/// Changes the item's type; when the new type uses another workflow, the item moves to that
/// workflow's first state.
async fn accept(
    tx: &mut Tx,
    project: &Project,
    actor: &Actor,
    item: &Item,
    to_type: &str,
    payload: &mut serde_json::Value,
) -> Result<(), StoreError> {
    let bad = || {
        OuroError::field(
            "type",
            format!("{to_type:?} is not an enabled item type of this project"),
        )
    };
    let new_ty = workflow::item_type(&mut *tx, project.id, to_type.trim())
        .await?
        .filter(|t| t.enabled)
        .ok_or_else(bad)?;
    if matches!(
        new_ty.kind,
        Kind::Feedback | Kind::Incident | Kind::Epic | Kind::Feature
    ) {
        return Err(OuroError::field(
            "type",
            format!("accept as a story, task or bug type, not {}", new_ty.name),
        )
        .into());
    }
    let old_ty = workflow::item_type(&mut *tx, project.id, &item.item_type).await?;
    let (state, category) = if old_ty.is_some_and(|o| o.workflow == new_ty.workflow) {
        (item.state.clone(), item.state_category)
    } else {
        let first = workflow::states(&mut *tx, project.id, &new_ty.workflow)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                StoreError::Decode(format!("workflow {:?} has no states", new_ty.workflow))
            })?;
        (first.name, first.category)
    };
    q(
        "UPDATE items SET type = $1, state = $2, state_category = $3, updated_at = $4, \
       version = version + 1 WHERE id = $5 AND version = $6 RETURNING id",
    )
    .bind(new_ty.name.as_str())
    .bind(state.as_str())
    .bind(category.as_str())
    .bind(ouro_core::time::now_ms())
    .bind(item.id)
    .bind(item.version)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| OuroError::stale_version("item", item.version + 1))?;
    let mut changes = serde_json::Map::new();
    changes.insert(
        "type".into(),
        json!({"old": item.item_type, "new": new_ty.name}),
    );
    tx.append(
        NewEvent::new(
            ev::ITEM_UPDATED,
            actor,
            item.id,
            json!({"key": item.key, "changes": changes}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    if state != item.state {
        tx.append(
            NewEvent::new(
                ev::ITEM_TRANSITIONED,
                actor,
                item.id,
                json!({
                    "key": item.key, "from": item.state, "to": state,
                    "from_category": item.state_category, "to_category": category,
                }),
            )
            .in_project(project.id, &project.slug),
        )
        .await?;
    }
    payload["type"] = json!(new_ty.name);
    payload["state"] = json!(state);
    Ok(())
}
