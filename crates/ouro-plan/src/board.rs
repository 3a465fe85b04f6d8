//! The board: one column per state of the project's `standard` workflow, cards in rank order,
//! optional swimlanes, and per-column WIP limits (`plan_board_columns`).
//!
//! Types on another workflow (incidents) have states that are not columns; their cards sit in
//! the first column of the same category, so every matching item appears exactly once.
//! The items come from one query ([`crate::items::board_items`]); nothing is fetched per card.

use ouro_core::events as ev;
use ouro_core::{Actor, NewEvent, OuroError};
use ouro_store::projects::Project;
use ouro_store::{Executor, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::items::{self, Item, Priority};
use crate::workflow::{self, Category};

pub const MAX_WIP: i64 = 999;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Swimlane {
    #[default]
    None,
    Assignee,
    Epic,
    Priority,
}

impl Swimlane {
    pub fn parse(s: Option<&str>) -> Result<Swimlane, OuroError> {
        match s.map(str::trim).unwrap_or("") {
            "" | "none" => Ok(Swimlane::None),
            "assignee" => Ok(Swimlane::Assignee),
            "epic" => Ok(Swimlane::Epic),
            "priority" => Ok(Swimlane::Priority),
            _ => Err(OuroError::field(
                "swimlane",
                "swimlane must be none, assignee, epic or priority",
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Swimlane::None => "none",
            Swimlane::Assignee => "assignee",
            Swimlane::Epic => "epic",
            Swimlane::Priority => "priority",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Card {
    pub key: String,
    pub title: String,
    #[serde(rename = "type")]
    pub item_type: String,
    pub state: String,
    pub assignee: Option<String>,
    pub priority: Priority,
    pub estimate: Option<i64>,
    pub epic: Option<String>,
    pub sprint: Option<String>,
    pub rank: String,
    pub version: i64,
    /// The swimlane this card is in (null without swimlanes, or for "no assignee/epic").
    pub lane: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Column {
    pub state: String,
    pub category: Category,
    pub wip_limit: Option<i64>,
    /// Cards in the column (all lanes).
    pub count: usize,
    /// More cards than the WIP limit.
    pub over_limit: bool,
    pub cards: Vec<Card>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Lane {
    /// The assignee, epic key or priority; null is "none".
    pub name: Option<String>,
    /// Per column (same order as `columns`), the keys of this lane's cards.
    pub cards: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Board {
    pub swimlane: Swimlane,
    pub columns: Vec<Column>,
    /// Empty without swimlanes.
    pub lanes: Vec<Lane>,
}

fn lane_of(it: &Item, s: Swimlane) -> Option<String> {
    match s {
        Swimlane::None => None,
        Swimlane::Assignee => it.assignee.clone(),
        Swimlane::Epic => it.epic.clone(),
        Swimlane::Priority => Some(it.priority.as_str().to_string()),
    }
}

/// The stored WIP limits by column (state) name; columns without a row have no limit.
pub async fn wip_limits(
    ex: &mut impl Executor,
    project_id: i64,
) -> Result<Vec<(String, Option<i64>)>, StoreError> {
    let rows = q("SELECT state, wip_limit FROM plan_board_columns WHERE project_id = $1")
        .bind(project_id)
        .fetch_all(ex)
        .await?;
    rows.iter()
        .map(|r| Ok((r.text("state")?, r.opt_i64("wip_limit")?)))
        .collect()
}

/// Builds the board from states, limits and items (pure).
pub fn assemble(
    states: &[workflow::State],
    limits: &[(String, Option<i64>)],
    items: Vec<Item>,
    swimlane: Swimlane,
) -> Board {
    let mut columns: Vec<Column> = states
        .iter()
        .map(|s| Column {
            state: s.name.clone(),
            category: s.category,
            wip_limit: limits
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&s.name))
                .and_then(|(_, l)| *l),
            count: 0,
            over_limit: false,
            cards: Vec::new(),
        })
        .collect();
    let mut lanes: Vec<Lane> = Vec::new();
    for it in items {
        let col = columns
            .iter()
            .position(|c| c.state.eq_ignore_ascii_case(&it.state))
            .or_else(|| columns.iter().position(|c| c.category == it.state_category));
        let Some(col) = col else { continue };
        let lane = lane_of(&it, swimlane);
        if swimlane != Swimlane::None {
            let li = match lanes.iter().position(|l| l.name == lane) {
                Some(i) => i,
                None => {
                    lanes.push(Lane {
                        name: lane.clone(),
                        cards: vec![Vec::new(); columns.len()],
                    });
                    lanes.len() - 1
                }
            };
            lanes[li].cards[col].push(it.key.clone());
        }
        columns[col].cards.push(Card {
            key: it.key,
            title: it.title,
            item_type: it.item_type,
            state: it.state,
            assignee: it.assignee,
            priority: it.priority,
            estimate: it.estimate,
            epic: it.epic,
            sprint: it.sprint,
            rank: it.rank,
            version: it.version,
            lane,
        });
    }
    for c in &mut columns {
        c.count = c.cards.len();
        c.over_limit = c.wip_limit.is_some_and(|l| c.count as i64 > l);
    }
    // Named lanes alphabetically (priorities by severity), "none" last.
    let prio = |n: &Option<String>| {
        n.as_deref()
            .and_then(Priority::parse)
            .map(|p| -(p as i64))
            .unwrap_or(0)
    };
    lanes.sort_by(|a, b| {
        (a.name.is_none(), prio(&a.name), &a.name).cmp(&(b.name.is_none(), prio(&b.name), &b.name))
    });
    Board {
        swimlane,
        columns,
        lanes,
    }
}

/// The board of the project, filtered by `query` (item query language).
pub async fn board(
    store: &Store,
    project_id: i64,
    query: Option<&str>,
    me: Option<i64>,
    swimlane: Swimlane,
) -> Result<Board, StoreError> {
    workflow::for_project(store, project_id).await?;
    let mut ex = store.read().await?;
    let states = workflow::states(&mut ex, project_id, workflow::STANDARD).await?;
    let limits = wip_limits(&mut ex, project_id).await?;
    let its = items::board_items(&mut ex, project_id, query, me, None).await?;
    Ok(assemble(&states, &limits, its, swimlane))
}

/// Sets (or with `None` clears) the WIP limit of a column; `state` must be a column.
pub async fn set_wip_limit(
    store: &Store,
    project: &Project,
    actor: &Actor,
    state: &str,
    wip_limit: Option<i64>,
) -> Result<Column, StoreError> {
    if let Some(l) = wip_limit
        && !(1..=MAX_WIP).contains(&l)
    {
        return Err(OuroError::field("wip_limit", "the WIP limit must be 1 to 999 or null").into());
    }
    workflow::for_project(store, project.id).await?;
    let mut tx = store.begin().await?;
    let states = workflow::states(&mut tx, project.id, workflow::STANDARD).await?;
    let Some(col) = states
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(state.trim()))
    else {
        let names: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
        return Err(OuroError::field(
            "state",
            format!(
                "{state:?} is not a board column; columns: {}",
                names.join(", ")
            ),
        )
        .into());
    };
    q("DELETE FROM plan_board_columns WHERE project_id = $1 AND state = $2")
        .bind(project.id)
        .bind(&col.name)
        .execute(&mut tx)
        .await?;
    q("INSERT INTO plan_board_columns (project_id, state, wip_limit) VALUES ($1, $2, $3)")
        .bind(project.id)
        .bind(&col.name)
        .bind(wip_limit)
        .execute(&mut tx)
        .await?;
    tx.append(
        NewEvent::new(
            ev::PLAN_CONFIG_CHANGED,
            actor,
            project.id,
            json!({"board_column": col.name, "wip_limit": wip_limit}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(Column {
        state: col.name.clone(),
        category: col.category,
        wip_limit,
        count: 0,
        over_limit: false,
        cards: vec![],
    })
}
