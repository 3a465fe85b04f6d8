//! Item types and workflows. Every project gets the defaults the first time Plan touches it
//! (its first item, or the first read of its workflows), so nothing has to be configured first.
//!
//! Defaults:
//! - workflow `standard` (epic, feature, story, task, bug, feedback):
//!   New, Ready (todo) → In progress, In review (in progress) → Done (done).
//!   Any state may move to any other, except that Done only goes back to Ready (a reopen).
//! - workflow `incident` (incident): Open (todo) → Mitigated (in progress) → Resolved (done).
//!   Open ↔ Mitigated, either → Resolved, and Resolved only back to Open (a reopen).

use ouro_store::{Executor, Row, StoreError, Tx, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an item is; the hierarchy and the default workflow follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Epic,
    Feature,
    Story,
    Task,
    Bug,
    Incident,
    Feedback,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Epic,
        Kind::Feature,
        Kind::Story,
        Kind::Task,
        Kind::Bug,
        Kind::Incident,
        Kind::Feedback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Epic => "epic",
            Kind::Feature => "feature",
            Kind::Story => "story",
            Kind::Task => "task",
            Kind::Bug => "bug",
            Kind::Incident => "incident",
            Kind::Feedback => "feedback",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kinds an item of this kind may sit under: epic > feature > story > task, with bugs
    /// and tasks under stories. Incidents and feedback stand alone.
    pub fn allowed_parents(self) -> &'static [Kind] {
        match self {
            Kind::Feature => &[Kind::Epic],
            Kind::Story => &[Kind::Feature, Kind::Epic],
            Kind::Task | Kind::Bug => &[Kind::Story],
            Kind::Epic | Kind::Incident | Kind::Feedback => &[],
        }
    }
}

/// The category a state belongs to; boards, reports and metrics read this, not state names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Todo,
    InProgress,
    Done,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Todo => "todo",
            Category::InProgress => "in_progress",
            Category::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        [Category::Todo, Category::InProgress, Category::Done]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ItemType {
    pub name: String,
    pub kind: Kind,
    pub enabled: bool,
    pub workflow: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct State {
    pub name: String,
    pub category: Category,
    pub position: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Transition {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Workflow {
    pub name: String,
    pub states: Vec<State>,
    pub transitions: Vec<Transition>,
}

/// A project's item types and workflows.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Workflows {
    pub types: Vec<ItemType>,
    pub workflows: Vec<Workflow>,
}

pub const STANDARD: &str = "standard";
pub const INCIDENT: &str = "incident";

const STANDARD_STATES: &[(&str, Category)] = &[
    ("New", Category::Todo),
    ("Ready", Category::Todo),
    ("In progress", Category::InProgress),
    ("In review", Category::InProgress),
    ("Done", Category::Done),
];
const INCIDENT_STATES: &[(&str, Category)] = &[
    ("Open", Category::Todo),
    ("Mitigated", Category::InProgress),
    ("Resolved", Category::Done),
];

/// The default transitions of a workflow: everything to everything, except that a done state
/// only reopens to `reopen_to`, so finished work is not silently dragged back into progress.
fn default_transitions(states: &[(&str, Category)], reopen_to: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (from, cat) in states {
        for (to, _) in states {
            let ok = from != to && (*cat != Category::Done || *to == reopen_to);
            if ok {
                out.push((from.to_string(), to.to_string()));
            }
        }
    }
    out
}

/// Seeds the default types and workflows of a project unless it has them. Idempotent and safe
/// under concurrency: every insert skips rows that already exist.
pub async fn ensure_defaults(tx: &mut Tx, project_id: i64) -> Result<(), StoreError> {
    let have = q("SELECT COUNT(*) AS n FROM item_types WHERE project_id = $1")
        .bind(project_id)
        .fetch_one(tx)
        .await?
        .i64("n")?;
    if have > 0 {
        return Ok(());
    }
    for (workflow, states, reopen) in [
        (STANDARD, STANDARD_STATES, "Ready"),
        (INCIDENT, INCIDENT_STATES, "Open"),
    ] {
        for (pos, (name, cat)) in states.iter().enumerate() {
            q(
                "INSERT INTO workflow_states (project_id, workflow, name, category, position) \
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_id, workflow, name) DO NOTHING",
            )
            .bind(project_id)
            .bind(workflow)
            .bind(*name)
            .bind(cat.as_str())
            .bind(pos as i64)
            .execute(tx)
            .await?;
        }
        for (from, to) in default_transitions(states, reopen) {
            q(
                "INSERT INTO workflow_transitions (project_id, workflow, from_state, to_state) \
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(project_id)
            .bind(workflow)
            .bind(from)
            .bind(to)
            .execute(tx)
            .await?;
        }
    }
    for (pos, kind) in Kind::ALL.into_iter().enumerate() {
        let workflow = if kind == Kind::Incident {
            INCIDENT
        } else {
            STANDARD
        };
        q(
            "INSERT INTO item_types (project_id, name, kind, enabled, workflow, position) \
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project_id, name) DO NOTHING",
        )
        .bind(project_id)
        .bind(kind.as_str())
        .bind(kind.as_str())
        .bind(true)
        .bind(workflow)
        .bind(pos as i64)
        .execute(tx)
        .await?;
    }
    Ok(())
}

fn type_from(r: &Row) -> Result<ItemType, StoreError> {
    let kind = r.text("kind")?;
    Ok(ItemType {
        name: r.text("name")?,
        kind: Kind::parse(&kind)
            .ok_or_else(|| StoreError::Decode(format!("unknown item kind {kind:?}")))?,
        enabled: r.bool("enabled")?,
        workflow: r.text("workflow")?,
    })
}

fn state_from(r: &Row) -> Result<State, StoreError> {
    let cat = r.text("category")?;
    Ok(State {
        name: r.text("name")?,
        category: Category::parse(&cat)
            .ok_or_else(|| StoreError::Decode(format!("unknown state category {cat:?}")))?,
        position: r.i64("position")?,
    })
}

pub async fn item_type(
    ex: &mut impl Executor,
    project_id: i64,
    name: &str,
) -> Result<Option<ItemType>, StoreError> {
    q("SELECT * FROM item_types WHERE project_id = $1 AND name = $2")
        .bind(project_id)
        .bind(name)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(type_from)
        .transpose()
}

/// The states of a workflow in board order.
pub async fn states(
    ex: &mut impl Executor,
    project_id: i64,
    workflow: &str,
) -> Result<Vec<State>, StoreError> {
    q("SELECT * FROM workflow_states WHERE project_id = $1 AND workflow = $2 ORDER BY position, id")
        .bind(project_id)
        .bind(workflow)
        .fetch_all(ex)
        .await?
        .iter()
        .map(state_from)
        .collect()
}

/// The states an item in `from` may move to, in board order.
pub async fn allowed_targets(
    ex: &mut impl Executor,
    project_id: i64,
    workflow: &str,
    from: &str,
) -> Result<Vec<State>, StoreError> {
    q(
        "SELECT s.* FROM workflow_transitions t JOIN workflow_states s \
       ON s.project_id = t.project_id AND s.workflow = t.workflow AND s.name = t.to_state \
       WHERE t.project_id = $1 AND t.workflow = $2 AND t.from_state = $3 ORDER BY s.position, s.id",
    )
    .bind(project_id)
    .bind(workflow)
    .bind(from)
    .fetch_all(ex)
    .await?
    .iter()
    .map(state_from)
    .collect()
}

/// The project's types and workflows as stored (empty before the defaults are seeded).
pub async fn load(ex: &mut impl Executor, project_id: i64) -> Result<Workflows, StoreError> {
    let types = q("SELECT * FROM item_types WHERE project_id = $1 ORDER BY position, id")
        .bind(project_id)
        .fetch_all(ex)
        .await?
        .iter()
        .map(type_from)
        .collect::<Result<Vec<_>, _>>()?;
    let names =
        q("SELECT DISTINCT workflow FROM workflow_states WHERE project_id = $1 ORDER BY workflow")
            .bind(project_id)
            .fetch_all(ex)
            .await?;
    let mut workflows = Vec::new();
    for r in &names {
        let name = r.text("workflow")?;
        let st = states(ex, project_id, &name).await?;
        let transitions = q("SELECT t.from_state, t.to_state FROM workflow_transitions t \
             JOIN workflow_states a ON a.project_id = t.project_id AND a.workflow = t.workflow AND a.name = t.from_state \
             JOIN workflow_states b ON b.project_id = t.project_id AND b.workflow = t.workflow AND b.name = t.to_state \
             WHERE t.project_id = $1 AND t.workflow = $2 ORDER BY a.position, b.position")
        .bind(project_id)
        .bind(&name)
        .fetch_all(ex)
        .await?
        .iter()
        .map(|r| {
            Ok(Transition {
                from: r.text("from_state")?,
                to: r.text("to_state")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        workflows.push(Workflow {
            name,
            states: st,
            transitions,
        });
    }
    Ok(Workflows { types, workflows })
}

/// The project's types and workflows, seeding the defaults first if it has none yet.
pub async fn for_project(
    store: &ouro_store::Store,
    project_id: i64,
) -> Result<Workflows, StoreError> {
    let w = load(&mut store.read().await?, project_id).await?;
    if !w.types.is_empty() {
        return Ok(w);
    }
    let mut tx = store.begin().await?;
    ensure_defaults(&mut tx, project_id).await?;
    let w = load(&mut tx, project_id).await?;
    tx.commit().await?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_only_reopens() {
        let t = default_transitions(STANDARD_STATES, "Ready");
        let from_done: Vec<_> = t.iter().filter(|(f, _)| f == "Done").collect();
        assert_eq!(from_done, vec![&("Done".to_string(), "Ready".to_string())]);
        assert!(t.contains(&("New".into(), "Done".into())));
        assert!(!t.iter().any(|(f, to)| f == to));
        // 4 open states × 4 others + the reopen.
        assert_eq!(t.len(), 17);
    }

    #[test]
    fn hierarchy() {
        assert!(Kind::Task.allowed_parents().contains(&Kind::Story));
        assert!(Kind::Bug.allowed_parents().contains(&Kind::Story));
        assert!(Kind::Epic.allowed_parents().is_empty());
        assert!(!Kind::Story.allowed_parents().contains(&Kind::Task));
    }
}
