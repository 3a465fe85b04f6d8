//! Per-project plan settings: item types (add, rename, enable/disable) and workflow editing
//! (states, categories, transitions).
//!
//! Every change runs in one transaction that seeds the defaults first (so a project can be
//! configured before its first item), applies the change, keeps existing items consistent
//! (a renamed type or state is renamed on its items; a category change rewrites
//! `items.state_category`) and appends one `plan.config_changed` event whose payload says what
//! changed.

use std::collections::BTreeSet;

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::projects::Project;
use ouro_store::{Store, StoreError, Tx, on_unique, q};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::workflow::{self, Category, ItemType, Kind, State, Transition, Workflows};

pub const MAX_NAME: usize = 50;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct NewType {
    /// 1 to 50 characters, unique in the project.
    pub name: String,
    /// What the type is (hierarchy rules follow from it): epic, feature, story, task, bug, incident, feedback.
    pub kind: Kind,
    /// The workflow its items follow; it must have at least one state. Default `standard`.
    pub workflow: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct TypePatch {
    /// New name; existing items of the type are renamed with it.
    pub name: Option<String>,
    /// False refuses new items of the type (existing ones stay).
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct NewState {
    /// 1 to 50 characters, unique in the workflow.
    pub name: String,
    pub category: Category,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct StatePatch {
    /// New name; items in the state and the workflow's transitions follow.
    pub name: Option<String>,
    /// New category; the items in the state are re-categorised.
    pub category: Option<Category>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TransitionIn {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Transitions {
    /// The complete new set of allowed moves; replaces the old one.
    pub transitions: Vec<TransitionIn>,
}

fn validate_name(field: &str, name: &str) -> Result<String, OuroError> {
    let n = name.trim();
    let len = n.chars().count();
    if len == 0 || len > MAX_NAME {
        return Err(OuroError::field(
            field,
            format!("the {field} must be 1 to {MAX_NAME} characters"),
        ));
    }
    if n.chars().any(char::is_control) {
        return Err(OuroError::field(
            field,
            format!("the {field} must not contain control characters"),
        ));
    }
    Ok(n.to_string())
}

fn type_not_found(name: &str) -> OuroError {
    OuroError::new(
        ErrorCode::PlanTypeNotFound,
        format!("item type {name:?} does not exist in this project"),
    )
}

fn type_taken(name: &str) -> OuroError {
    OuroError::new(
        ErrorCode::PlanTypeExists,
        format!("an item type named {name:?} already exists"),
    )
}

fn state_not_found(workflow: &str, name: &str) -> OuroError {
    OuroError::new(
        ErrorCode::PlanStateNotFound,
        format!("workflow {workflow:?} has no state {name:?}"),
    )
}

fn state_taken(workflow: &str, name: &str) -> OuroError {
    OuroError::new(
        ErrorCode::PlanStateExists,
        format!("workflow {workflow:?} already has a state {name:?}"),
    )
}

async fn begin(store: &Store, project: &Project) -> Result<Tx, StoreError> {
    let mut tx = store.begin().await?;
    workflow::ensure_defaults(&mut tx, project.id).await?;
    Ok(tx)
}

async fn changed(
    tx: &mut Tx,
    project: &Project,
    actor: &Actor,
    payload: Value,
) -> Result<(), StoreError> {
    tx.append(
        NewEvent::new(ev::PLAN_CONFIG_CHANGED, actor, project.id, payload)
            .in_project(project.id, &project.slug),
    )
    .await?;
    Ok(())
}

async fn existing_type(tx: &mut Tx, project_id: i64, name: &str) -> Result<ItemType, StoreError> {
    Ok(workflow::item_type(tx, project_id, name)
        .await?
        .ok_or_else(|| type_not_found(name))?)
}

async fn existing_state(
    tx: &mut Tx,
    project_id: i64,
    wf: &str,
    name: &str,
) -> Result<State, StoreError> {
    Ok(workflow::states(tx, project_id, wf)
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| state_not_found(wf, name))?)
}

/// The SQL condition "item `i`'s type follows workflow $W" used when states change.
const IN_WORKFLOW: &str =
    "type IN (SELECT name FROM item_types WHERE project_id = $2 AND workflow = $3)";

/// Adds an item type following an existing workflow.
pub async fn create_type(
    store: &Store,
    project: &Project,
    actor: &Actor,
    input: NewType,
) -> Result<ItemType, StoreError> {
    let name = validate_name("name", &input.name)?;
    let wf = input
        .workflow
        .as_deref()
        .unwrap_or(workflow::STANDARD)
        .trim()
        .to_string();
    let mut tx = begin(store, project).await?;
    if workflow::states(&mut tx, project.id, &wf).await?.is_empty() {
        return Err(OuroError::field(
            "workflow",
            format!("workflow {wf:?} does not exist in this project (add a state to create it)"),
        )
        .into());
    }
    let position =
        q("SELECT COALESCE(MAX(position), 0) + 1 AS p FROM item_types WHERE project_id = $1")
            .bind(project.id)
            .fetch_one(&mut tx)
            .await?
            .i64("p")?;
    on_unique(
        q(
            "INSERT INTO item_types (project_id, name, kind, enabled, workflow, position) \
           VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(project.id)
        .bind(&name)
        .bind(input.kind.as_str())
        .bind(true)
        .bind(&wf)
        .bind(position)
        .execute(&mut tx)
        .await,
        || type_taken(&name),
    )?;
    let ty = existing_type(&mut tx, project.id, &name).await?;
    changed(
        &mut tx,
        project,
        actor,
        json!({"what": "type_added", "type": name, "kind": ty.kind, "workflow": wf}),
    )
    .await?;
    tx.commit().await?;
    Ok(ty)
}

/// Renames, enables or disables an item type. A rename moves the type's items with it.
pub async fn update_type(
    store: &Store,
    project: &Project,
    actor: &Actor,
    name: &str,
    patch: TypePatch,
) -> Result<ItemType, StoreError> {
    let new_name = patch
        .name
        .as_deref()
        .map(|n| validate_name("name", n))
        .transpose()?;
    let mut tx = begin(store, project).await?;
    let cur = existing_type(&mut tx, project.id, name).await?;
    let new_name = new_name.unwrap_or_else(|| cur.name.clone());
    let enabled = patch.enabled.unwrap_or(cur.enabled);
    if new_name == cur.name && enabled == cur.enabled {
        return Ok(cur);
    }
    on_unique(
        q("UPDATE item_types SET name = $1, enabled = $2 WHERE project_id = $3 AND name = $4")
            .bind(&new_name)
            .bind(enabled)
            .bind(project.id)
            .bind(&cur.name)
            .execute(&mut tx)
            .await,
        || type_taken(&new_name),
    )?;
    let mut moved = 0;
    if new_name != cur.name {
        moved = q("UPDATE items SET type = $1 WHERE project_id = $2 AND type = $3")
            .bind(&new_name)
            .bind(project.id)
            .bind(&cur.name)
            .execute(&mut tx)
            .await?;
    }
    let ty = existing_type(&mut tx, project.id, &new_name).await?;
    changed(
        &mut tx,
        project,
        actor,
        json!({
            "what": "type_changed", "type": new_name,
            "from": {"name": cur.name, "enabled": cur.enabled},
            "to": {"name": ty.name, "enabled": ty.enabled},
            "items_renamed": moved,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(ty)
}

/// Adds a state at the end of a workflow; a workflow that does not exist yet is created.
pub async fn add_state(
    store: &Store,
    project: &Project,
    actor: &Actor,
    wf: &str,
    input: NewState,
) -> Result<State, StoreError> {
    let wf = validate_name("workflow", wf)?;
    let name = validate_name("name", &input.name)?;
    let mut tx = begin(store, project).await?;
    let position = q(
        "SELECT COALESCE(MAX(position), -1) + 1 AS p FROM workflow_states \
                      WHERE project_id = $1 AND workflow = $2",
    )
    .bind(project.id)
    .bind(&wf)
    .fetch_one(&mut tx)
    .await?
    .i64("p")?;
    on_unique(
        q(
            "INSERT INTO workflow_states (project_id, workflow, name, category, position) \
           VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(project.id)
        .bind(&wf)
        .bind(&name)
        .bind(input.category.as_str())
        .bind(position)
        .execute(&mut tx)
        .await,
        || state_taken(&wf, &name),
    )?;
    let st = existing_state(&mut tx, project.id, &wf, &name).await?;
    changed(
        &mut tx,
        project,
        actor,
        json!({"what": "state_added", "workflow": wf, "state": name, "category": st.category}),
    )
    .await?;
    tx.commit().await?;
    Ok(st)
}

/// Renames a state or changes its category; items in the state and transitions follow.
pub async fn update_state(
    store: &Store,
    project: &Project,
    actor: &Actor,
    wf: &str,
    name: &str,
    patch: StatePatch,
) -> Result<State, StoreError> {
    let new_name = patch
        .name
        .as_deref()
        .map(|n| validate_name("name", n))
        .transpose()?;
    let mut tx = begin(store, project).await?;
    let cur = existing_state(&mut tx, project.id, wf, name).await?;
    let new_name = new_name.unwrap_or_else(|| cur.name.clone());
    let category = patch.category.unwrap_or(cur.category);
    if new_name == cur.name && category == cur.category {
        return Ok(cur);
    }
    on_unique(
        q("UPDATE workflow_states SET name = $1, category = $2 \
           WHERE project_id = $3 AND workflow = $4 AND name = $5")
        .bind(&new_name)
        .bind(category.as_str())
        .bind(project.id)
        .bind(wf)
        .bind(&cur.name)
        .execute(&mut tx)
        .await,
        || state_taken(wf, &new_name),
    )?;
    if new_name != cur.name {
        for col in ["from_state", "to_state"] {
            q(format!(
                "UPDATE workflow_transitions SET {col} = $1 \
                 WHERE project_id = $2 AND workflow = $3 AND {col} = $4"
            ))
            .bind(&new_name)
            .bind(project.id)
            .bind(wf)
            .bind(&cur.name)
            .execute(&mut tx)
            .await?;
        }
    }
    let items = q(format!(
        "UPDATE items SET state = $1, state_category = $4 \
         WHERE project_id = $2 AND state = $5 AND {IN_WORKFLOW}"
    ))
    .bind(&new_name)
    .bind(project.id)
    .bind(wf)
    .bind(category.as_str())
    .bind(&cur.name)
    .execute(&mut tx)
    .await?;
    let st = existing_state(&mut tx, project.id, wf, &new_name).await?;
    changed(
        &mut tx,
        project,
        actor,
        json!({
            "what": "state_changed", "workflow": wf, "state": new_name,
            "from": {"name": cur.name, "category": cur.category},
            "to": {"name": st.name, "category": st.category},
            "items_updated": items,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(st)
}

/// Deletes a state nobody is in (409 `plan.state_in_use` with `details.items` otherwise), with
/// its transitions. The last state of a workflow that types still use cannot go.
pub async fn delete_state(
    store: &Store,
    project: &Project,
    actor: &Actor,
    wf: &str,
    name: &str,
) -> Result<(), StoreError> {
    let mut tx = begin(store, project).await?;
    let cur = existing_state(&mut tx, project.id, wf, name).await?;
    let n = q(format!(
        "SELECT COUNT(*) AS n FROM items WHERE project_id = $2 AND state = $1 AND {IN_WORKFLOW}"
    ))
    .bind(&cur.name)
    .bind(project.id)
    .bind(wf)
    .fetch_one(&mut tx)
    .await?
    .i64("n")?;
    if n > 0 {
        return Err(OuroError::new(
            ErrorCode::PlanStateInUse,
            format!(
                "{n} item(s) are in state {:?}; move them to another state first",
                cur.name
            ),
        )
        .with_details(json!({"items": n}))
        .into());
    }
    let left = workflow::states(&mut tx, project.id, wf).await?.len();
    let users = q("SELECT COUNT(*) AS n FROM item_types WHERE project_id = $1 AND workflow = $2")
        .bind(project.id)
        .bind(wf)
        .fetch_one(&mut tx)
        .await?
        .i64("n")?;
    if left == 1 && users > 0 {
        return Err(OuroError::new(
            ErrorCode::PlanStateInUse,
            format!(
                "{:?} is the last state of a workflow that item types use",
                cur.name
            ),
        )
        .with_details(json!({"items": 0, "types": users}))
        .into());
    }
    q(
        "DELETE FROM workflow_transitions WHERE project_id = $1 AND workflow = $2 \
       AND (from_state = $3 OR to_state = $3)",
    )
    .bind(project.id)
    .bind(wf)
    .bind(&cur.name)
    .execute(&mut tx)
    .await?;
    q("DELETE FROM workflow_states WHERE project_id = $1 AND workflow = $2 AND name = $3")
        .bind(project.id)
        .bind(wf)
        .bind(&cur.name)
        .execute(&mut tx)
        .await?;
    changed(
        &mut tx,
        project,
        actor,
        json!({"what": "state_deleted", "workflow": wf, "state": cur.name}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Replaces all transitions of a workflow. Every name must be one of its states; a state may
/// not move to itself. Returns the project's workflows afterwards.
pub async fn set_transitions(
    store: &Store,
    project: &Project,
    actor: &Actor,
    wf: &str,
    input: Transitions,
) -> Result<Workflows, StoreError> {
    let mut tx = begin(store, project).await?;
    let states: BTreeSet<String> = workflow::states(&mut tx, project.id, wf)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    if states.is_empty() {
        return Err(OuroError::new(
            ErrorCode::PlanStateNotFound,
            format!("workflow {wf:?} does not exist in this project"),
        )
        .into());
    }
    let mut set = BTreeSet::new();
    for (i, t) in input.transitions.iter().enumerate() {
        for (side, v) in [("from", &t.from), ("to", &t.to)] {
            if !states.contains(v) {
                return Err(OuroError::field(
                    &format!("transitions[{i}].{side}"),
                    format!("{v:?} is not a state of workflow {wf:?}"),
                )
                .into());
            }
        }
        if t.from == t.to {
            return Err(OuroError::field(
                &format!("transitions[{i}].to"),
                "a state cannot move to itself",
            )
            .into());
        }
        set.insert((t.from.clone(), t.to.clone()));
    }
    q("DELETE FROM workflow_transitions WHERE project_id = $1 AND workflow = $2")
        .bind(project.id)
        .bind(wf)
        .execute(&mut tx)
        .await?;
    for (from, to) in &set {
        q(
            "INSERT INTO workflow_transitions (project_id, workflow, from_state, to_state) \
           VALUES ($1, $2, $3, $4)",
        )
        .bind(project.id)
        .bind(wf)
        .bind(from)
        .bind(to)
        .execute(&mut tx)
        .await?;
    }
    let list: Vec<Transition> = set
        .iter()
        .map(|(f, t)| Transition {
            from: f.clone(),
            to: t.clone(),
        })
        .collect();
    changed(
        &mut tx,
        project,
        actor,
        json!({"what": "transitions_replaced", "workflow": wf, "transitions": list}),
    )
    .await?;
    let out = workflow::load(&mut tx, project.id).await?;
    tx.commit().await?;
    Ok(out)
}
