//! Sprints: time boxes of committed items, and the reports derived from the ledger.
//!
//! A sprint is `planned`, then `active` (at most one per project: the domain checks and a
//! partial unique index backs it), then `completed`. Planning sets `items.sprint_id` and writes
//! `item.updated` with a `sprint` change (plus `sprint_id`, `estimate` and `done`, so reports can
//! replay it). Starting writes `sprint.started` with a snapshot of the committed items; the
//! burndown and burnup are then replayed from that snapshot and the later `item.updated` /
//! `item.transitioned` events, so they show what happened, not today's state.

use std::collections::BTreeMap;

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::projects::Project;
use ouro_store::{Executor, Row, Store, StoreError, Tx, on_unique, q};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use crate::items::{self, Item, change, parse_time};
use crate::workflow::Category;

pub const MAX_NAME: usize = 100;
pub const MAX_GOAL: usize = 2_000;
pub const MAX_CAPACITY: i64 = 100_000;
/// The most days a report covers.
pub const MAX_REPORT_DAYS: i64 = 120;
const DAY: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SprintState {
    Planned,
    Active,
    Completed,
}

impl SprintState {
    pub fn as_str(self) -> &'static str {
        match self {
            SprintState::Planned => "planned",
            SprintState::Active => "active",
            SprintState::Completed => "completed",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [Self::Planned, Self::Active, Self::Completed]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A sprint as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Sprint {
    pub id: i64,
    pub name: String,
    pub goal: String,
    /// Story points the team expects to finish.
    pub capacity: Option<i64>,
    #[serde(serialize_with = "ouro_core::time::serde_ms_opt::serialize")]
    #[schemars(with = "Option<String>")]
    pub start_at: Option<i64>,
    #[serde(serialize_with = "ouro_core::time::serde_ms_opt::serialize")]
    #[schemars(with = "Option<String>")]
    pub end_at: Option<i64>,
    pub state: SprintState,
    #[serde(serialize_with = "ouro_core::time::serde_ms_opt::serialize")]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<i64>,
    #[serde(serialize_with = "ouro_core::time::serde_ms_opt::serialize")]
    #[schemars(with = "Option<String>")]
    pub completed_at: Option<i64>,
    /// Points committed when the sprint started.
    pub committed_points: Option<i64>,
    /// Points done when the sprint completed.
    pub completed_points: Option<i64>,
    /// Items planned into the sprint now.
    pub item_count: i64,
    /// Their points now.
    pub points: i64,
    pub version: i64,
}

fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}
fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSprint {
    /// 1 to 100 characters, unique in the project.
    pub name: String,
    #[serde(default)]
    pub goal: String,
    /// Points, 0 to 100000.
    pub capacity: Option<i64>,
    /// RFC 3339 time or `YYYY-MM-DD`.
    pub start_at: Option<String>,
    pub end_at: Option<String>,
}

/// Fields to change; absent ones stay, `null` clears.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SprintPatch {
    pub name: Option<String>,
    pub goal: Option<String>,
    #[serde(default, deserialize_with = "opt_i64")]
    pub capacity: Option<Option<i64>>,
    #[serde(default, deserialize_with = "opt_string")]
    pub start_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "opt_string")]
    pub end_at: Option<Option<String>>,
    /// The version read; a stale one is `409 conflict.stale_version`.
    pub version: Option<i64>,
}

/// Items to plan into (`add`) or take out of (`remove`) a sprint, by key.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SprintItems {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Where the unfinished items of a completed sprint go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveTo {
    Backlog,
    /// The next planned sprint (earliest start, then oldest).
    Next,
    Sprint(i64),
}

impl MoveTo {
    /// `backlog`, `next` or a sprint id.
    pub fn parse(v: &Value) -> Result<MoveTo, OuroError> {
        match v {
            Value::Null => Ok(MoveTo::Backlog),
            Value::String(s) if s == "backlog" => Ok(MoveTo::Backlog),
            Value::String(s) if s == "next" => Ok(MoveTo::Next),
            Value::String(s) if s.parse::<i64>().is_ok() => {
                Ok(MoveTo::Sprint(s.parse().unwrap_or(0)))
            }
            Value::Number(n) if n.as_i64().is_some() => Ok(MoveTo::Sprint(n.as_i64().unwrap_or(0))),
            _ => Err(OuroError::field(
                "move_to",
                "move_to must be \"backlog\", \"next\" or a sprint id",
            )),
        }
    }
}

pub fn not_found(id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::SprintNotFound,
        format!("sprint {id} does not exist in this project"),
    )
}

fn invalid_state(msg: String) -> OuroError {
    OuroError::new(ErrorCode::SprintInvalidState, msg)
}

fn already_active() -> OuroError {
    OuroError::new(
        ErrorCode::SprintAlreadyActive,
        "the project already has an active sprint; complete it first",
    )
}

fn validate_name(name: &str) -> Result<String, OuroError> {
    let n = name.trim();
    let len = n.chars().count();
    if len == 0 || len > MAX_NAME || n.chars().any(char::is_control) {
        return Err(OuroError::field(
            "name",
            "the name must be 1 to 100 characters on one line",
        ));
    }
    Ok(n.to_string())
}

fn validate_goal(goal: &str) -> Result<String, OuroError> {
    items::no_nul("goal", goal)?;
    if goal.chars().count() > MAX_GOAL {
        return Err(OuroError::field(
            "goal",
            "the goal must have at most 2000 characters",
        ));
    }
    Ok(goal.trim().to_string())
}

fn validate_capacity(c: Option<i64>) -> Result<Option<i64>, OuroError> {
    if let Some(c) = c
        && !(0..=MAX_CAPACITY).contains(&c)
    {
        return Err(OuroError::field(
            "capacity",
            "the capacity must be 0 to 100000 points",
        ));
    }
    Ok(c)
}

fn check_dates(start: Option<i64>, end: Option<i64>) -> Result<(), OuroError> {
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        return Err(OuroError::field(
            "end_at",
            "the end must be after the start",
        ));
    }
    Ok(())
}

fn taken(name: &str) -> OuroError {
    OuroError::field("name", format!("a sprint named {name:?} already exists"))
}

const SELECT: &str = "SELECT s.*, \
    (SELECT COUNT(*) FROM items i WHERE i.sprint_id = s.id) AS item_count, \
    (SELECT CAST(COALESCE(SUM(i.estimate), 0) AS BIGINT) FROM items i WHERE i.sprint_id = s.id) AS points \
    FROM plan_sprints s";

fn from_row(r: &Row) -> Result<Sprint, StoreError> {
    let st = r.text("state")?;
    Ok(Sprint {
        id: r.i64("id")?,
        name: r.text("name")?,
        goal: r.text("goal")?,
        capacity: r.opt_i64("capacity")?,
        start_at: r.opt_i64("start_at")?,
        end_at: r.opt_i64("end_at")?,
        state: SprintState::parse(&st)
            .ok_or_else(|| StoreError::Decode(format!("unknown sprint state {st:?}")))?,
        started_at: r.opt_i64("started_at")?,
        completed_at: r.opt_i64("completed_at")?,
        committed_points: r.opt_i64("committed_points")?,
        completed_points: r.opt_i64("completed_points")?,
        item_count: r.i64("item_count")?,
        points: r.i64("points")?,
        version: r.i64("version")?,
    })
}

/// The project's sprints: active first, then planned by start, then completed newest first.
pub async fn list(ex: &mut impl Executor, project_id: i64) -> Result<Vec<Sprint>, StoreError> {
    let rows = q(format!("{SELECT} WHERE s.project_id = $1 ORDER BY s.id"))
        .bind(project_id)
        .fetch_all(ex)
        .await?;
    let mut out = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|s| match s.state {
        SprintState::Active => (0, 0, s.id),
        SprintState::Planned => (1, s.start_at.unwrap_or(i64::MAX), s.id),
        SprintState::Completed => (2, -s.completed_at.unwrap_or(0), -s.id),
    });
    Ok(out)
}

pub async fn get(ex: &mut impl Executor, project_id: i64, id: i64) -> Result<Sprint, StoreError> {
    let row = q(format!("{SELECT} WHERE s.project_id = $1 AND s.id = $2"))
        .bind(project_id)
        .bind(id)
        .fetch_optional(ex)
        .await?
        .ok_or_else(|| not_found(id))?;
    from_row(&row)
}

/// The project's active sprint, if any.
pub async fn active(ex: &mut impl Executor, project_id: i64) -> Result<Option<Sprint>, StoreError> {
    let row = q(format!(
        "{SELECT} WHERE s.project_id = $1 AND s.state = 'active'"
    ))
    .bind(project_id)
    .fetch_optional(ex)
    .await?;
    row.as_ref().map(from_row).transpose()
}

fn event(
    kind: ouro_core::events::EventKind,
    actor: &Actor,
    p: &Project,
    id: i64,
    v: Value,
) -> NewEvent {
    NewEvent::new(kind, actor, id, v).in_project(p.id, &p.slug)
}

pub async fn create(
    store: &Store,
    project: &Project,
    actor: &Actor,
    new: NewSprint,
) -> Result<Sprint, StoreError> {
    let name = validate_name(&new.name)?;
    let goal = validate_goal(&new.goal)?;
    let capacity = validate_capacity(new.capacity)?;
    let start = parse_time("start_at", new.start_at.as_deref())?;
    let end = parse_time("end_at", new.end_at.as_deref())?;
    check_dates(start, end)?;
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let row = on_unique(
        q(
            "INSERT INTO plan_sprints (project_id, name, goal, capacity, start_at, end_at, state, \
           version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'planned', 1, $7, $7) \
           RETURNING id",
        )
        .bind(project.id)
        .bind(&name)
        .bind(&goal)
        .bind(capacity)
        .bind(start)
        .bind(end)
        .bind(now)
        .fetch_one(&mut tx)
        .await,
        || taken(&name),
    )?;
    let sprint = get(&mut tx, project.id, row.i64("id")?).await?;
    tx.append(event(
        ev::SPRINT_CREATED,
        actor,
        project,
        sprint.id,
        json!({"name": sprint.name, "goal": sprint.goal, "capacity": sprint.capacity,
               "start_at": sprint.start_at, "end_at": sprint.end_at}),
    ))
    .await?;
    tx.commit().await?;
    Ok(sprint)
}

pub async fn update(
    store: &Store,
    project: &Project,
    actor: &Actor,
    id: i64,
    patch: SprintPatch,
) -> Result<Sprint, StoreError> {
    let name = patch.name.as_deref().map(validate_name).transpose()?;
    let goal = patch.goal.as_deref().map(validate_goal).transpose()?;
    let capacity = patch.capacity.map(validate_capacity).transpose()?;
    let start = match &patch.start_at {
        Some(s) => Some(parse_time("start_at", s.as_deref())?),
        None => None,
    };
    let end = match &patch.end_at {
        Some(s) => Some(parse_time("end_at", s.as_deref())?),
        None => None,
    };
    let mut tx = store.begin().await?;
    let cur = get(&mut tx, project.id, id).await?;
    if let Some(v) = patch.version
        && v != cur.version
    {
        return Err(OuroError::stale_version("sprint", cur.version).into());
    }
    let name = name.unwrap_or(cur.name.clone());
    let goal = goal.unwrap_or(cur.goal.clone());
    let capacity = capacity.unwrap_or(cur.capacity);
    let start = start.unwrap_or(cur.start_at);
    let end = end.unwrap_or(cur.end_at);
    check_dates(start, end)?;
    let mut changes = Map::new();
    change(&mut changes, "name", &cur.name, &name);
    change(&mut changes, "goal", &cur.goal, &goal);
    change(&mut changes, "capacity", &cur.capacity, &capacity);
    change(&mut changes, "start_at", &cur.start_at, &start);
    change(&mut changes, "end_at", &cur.end_at, &end);
    if changes.is_empty() {
        return Ok(cur);
    }
    on_unique(
        q(
            "UPDATE plan_sprints SET name = $1, goal = $2, capacity = $3, start_at = $4, \
           end_at = $5, updated_at = $6, version = version + 1 WHERE id = $7 AND version = $8 \
           RETURNING id",
        )
        .bind(&name)
        .bind(&goal)
        .bind(capacity)
        .bind(start)
        .bind(end)
        .bind(ouro_core::time::now_ms())
        .bind(cur.id)
        .bind(cur.version)
        .fetch_optional(&mut tx)
        .await,
        || taken(&name),
    )?
    .ok_or_else(|| OuroError::stale_version("sprint", cur.version + 1))?;
    let sprint = get(&mut tx, project.id, id).await?;
    tx.append(event(
        ev::SPRINT_UPDATED,
        actor,
        project,
        id,
        json!({"name": sprint.name, "changes": Value::Object(changes)}),
    ))
    .await?;
    tx.commit().await?;
    Ok(sprint)
}

/// Moves one item into `to` (a sprint, or the backlog), with its `item.updated` event.
async fn set_item_sprint(
    tx: &mut Tx,
    project: &Project,
    actor: &Actor,
    item: &Item,
    to: Option<&Sprint>,
) -> Result<(), StoreError> {
    let to_id = to.map(|s| s.id);
    if item.sprint_id == to_id {
        return Ok(());
    }
    q("UPDATE items SET sprint_id = $1, updated_at = $2, version = version + 1 WHERE id = $3")
        .bind(to_id)
        .bind(ouro_core::time::now_ms())
        .bind(item.id)
        .execute(&mut *tx)
        .await?;
    let mut changes = Map::new();
    change(
        &mut changes,
        "sprint",
        &item.sprint,
        &to.map(|s| s.name.clone()),
    );
    tx.append(
        NewEvent::new(
            ev::ITEM_UPDATED,
            actor,
            item.id,
            json!({
                "key": item.key, "changes": Value::Object(changes),
                "sprint_id": to_id, "from_sprint_id": item.sprint_id,
                "estimate": item.estimate, "done": item.state_category == Category::Done,
            }),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    Ok(())
}

/// Plans items into the sprint (`add`) or back to the backlog (`remove`). A completed sprint
/// takes no changes; removing an item that is not in this sprint is a 422.
pub async fn plan_items(
    store: &Store,
    project: &Project,
    actor: &Actor,
    id: i64,
    change_set: SprintItems,
) -> Result<Sprint, StoreError> {
    if change_set.add.len() + change_set.remove.len() > items::MAX_BULK {
        return Err(OuroError::field("add", "give at most 100 item keys").into());
    }
    let mut tx = store.begin().await?;
    let sprint = get(&mut tx, project.id, id).await?;
    if sprint.state == SprintState::Completed {
        return Err(invalid_state(format!("sprint {:?} is completed", sprint.name)).into());
    }
    for key in &change_set.add {
        let item = items::get_or_404(&mut tx, project.id, key).await?;
        set_item_sprint(&mut tx, project, actor, &item, Some(&sprint)).await?;
    }
    for key in &change_set.remove {
        let item = items::get_or_404(&mut tx, project.id, key).await?;
        if item.sprint_id != Some(sprint.id) {
            return Err(OuroError::field(
                "remove",
                format!("{} is not in sprint {:?}", item.key, sprint.name),
            )
            .into());
        }
        set_item_sprint(&mut tx, project, actor, &item, None).await?;
    }
    let sprint = get(&mut tx, project.id, id).await?;
    tx.commit().await?;
    Ok(sprint)
}

async fn sprint_items(
    ex: &mut impl Executor,
    project_id: i64,
    id: i64,
) -> Result<Vec<Item>, StoreError> {
    items::board_items(ex, project_id, None, None, Some(id)).await
}

/// The items planned into a sprint, in rank order.
pub async fn items_of(store: &Store, project_id: i64, id: i64) -> Result<Vec<Item>, StoreError> {
    let mut ex = store.read().await?;
    get(&mut ex, project_id, id).await?;
    items::in_sprint(&mut ex, project_id, id).await
}

/// Starts a planned sprint. Refused while another sprint is active (409
/// `sprint.already_active`). The `sprint.started` event holds the committed items and points.
pub async fn start(
    store: &Store,
    project: &Project,
    actor: &Actor,
    id: i64,
) -> Result<Sprint, StoreError> {
    let mut tx = store.begin().await?;
    let sprint = get(&mut tx, project.id, id).await?;
    if sprint.state != SprintState::Planned {
        return Err(invalid_state(format!(
            "sprint {:?} is {}; only a planned sprint can start",
            sprint.name,
            sprint.state.as_str()
        ))
        .into());
    }
    if active(&mut tx, project.id).await?.is_some() {
        return Err(already_active().into());
    }
    let its = sprint_items(&mut tx, project.id, id).await?;
    let committed: i64 = its.iter().filter_map(|i| i.estimate).sum();
    let now = ouro_core::time::now_ms();
    let start_at = sprint.start_at.unwrap_or(now);
    let end_at = sprint.end_at.unwrap_or(start_at + 14 * DAY);
    on_unique(
        q("UPDATE plan_sprints SET state = 'active', started_at = $1, start_at = $2, end_at = $3, \
           committed_points = $4, updated_at = $1, version = version + 1 WHERE id = $5")
        .bind(now)
        .bind(start_at)
        .bind(end_at)
        .bind(committed)
        .bind(id)
        .execute(&mut tx)
        .await,
        already_active,
    )?;
    let snapshot: Vec<Value> = its
        .iter()
        .map(|i| {
            json!({"id": i.id, "key": i.key, "estimate": i.estimate,
                         "done": i.state_category == Category::Done})
        })
        .collect();
    tx.append(event(
        ev::SPRINT_STARTED,
        actor,
        project,
        id,
        json!({"name": sprint.name, "items": snapshot, "committed_points": committed,
               "start_at": start_at, "end_at": end_at}),
    ))
    .await?;
    let sprint = get(&mut tx, project.id, id).await?;
    tx.commit().await?;
    Ok(sprint)
}

/// Completes the active sprint. Items not in a done category move to `move_to`: the backlog,
/// the next planned sprint, or a given planned sprint.
pub async fn complete(
    store: &Store,
    project: &Project,
    actor: &Actor,
    id: i64,
    move_to: MoveTo,
) -> Result<Sprint, StoreError> {
    let mut tx = store.begin().await?;
    let sprint = get(&mut tx, project.id, id).await?;
    if sprint.state != SprintState::Active {
        return Err(invalid_state(format!(
            "sprint {:?} is {}; only the active sprint can complete",
            sprint.name,
            sprint.state.as_str()
        ))
        .into());
    }
    let target = match move_to {
        MoveTo::Backlog => None,
        MoveTo::Next => {
            let next = list(&mut tx, project.id)
                .await?
                .into_iter()
                .find(|s| s.state == SprintState::Planned);
            Some(next.ok_or_else(|| {
                OuroError::field("move_to", "there is no planned sprint to move the items to")
            })?)
        }
        MoveTo::Sprint(to) => {
            let s = get(&mut tx, project.id, to)
                .await
                .map_err(|_| OuroError::field("move_to", format!("sprint {to} does not exist")))?;
            if s.state != SprintState::Planned {
                return Err(
                    OuroError::field("move_to", "items can only move to a planned sprint").into(),
                );
            }
            Some(s)
        }
    };
    let its = sprint_items(&mut tx, project.id, id).await?;
    let done: i64 = its
        .iter()
        .filter(|i| i.state_category == Category::Done)
        .filter_map(|i| i.estimate)
        .sum();
    let mut moved = Vec::new();
    for it in its.iter().filter(|i| i.state_category != Category::Done) {
        set_item_sprint(&mut tx, project, actor, it, target.as_ref()).await?;
        moved.push(it.key.clone());
    }
    let now = ouro_core::time::now_ms();
    q(
        "UPDATE plan_sprints SET state = 'completed', completed_at = $1, completed_points = $2, \
       updated_at = $1, version = version + 1 WHERE id = $3",
    )
    .bind(now)
    .bind(done)
    .bind(id)
    .execute(&mut tx)
    .await?;
    tx.append(event(
        ev::SPRINT_COMPLETED,
        actor,
        project,
        id,
        json!({"name": sprint.name, "committed_points": sprint.committed_points,
               "completed_points": done, "moved": moved,
               "moved_to": target.as_ref().map(|s| s.id)}),
    ))
    .await?;
    let sprint = get(&mut tx, project.id, id).await?;
    tx.commit().await?;
    Ok(sprint)
}

/// One day of a sprint report: points at the end of that UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ReportDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Points in the sprint not yet done.
    pub remaining: i64,
    /// Points in the sprint done.
    pub completed: i64,
    /// All points in the sprint (remaining + completed).
    pub scope: i64,
}

/// Burndown and burnup data of a sprint, replayed from the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Report {
    pub sprint: Sprint,
    /// Points committed at the start.
    pub committed_points: i64,
    /// Days from the start to the end (or today, or the completion); empty before the start.
    pub days: Vec<ReportDay>,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    in_sprint: bool,
    estimate: i64,
    done: bool,
}

fn day_string(ms: i64) -> String {
    ouro_core::time::rfc3339(ms)[..10].to_string()
}

/// One ledger event, as the replay needs it.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub time: i64,
    pub kind: String,
    pub item_id: i64,
    pub payload: Value,
}

/// Replays the events after the start snapshot into daily points (pure; unit-tested).
pub fn replay(
    sprint_id: i64,
    snapshot: &[Value],
    events: &[Replayed],
    day0: i64,
    last_day: i64,
) -> Vec<ReportDay> {
    let mut track: BTreeMap<i64, Track> = BTreeMap::new();
    for s in snapshot {
        if let Some(id) = s["id"].as_i64() {
            track.insert(
                id,
                Track {
                    in_sprint: true,
                    estimate: s["estimate"].as_i64().unwrap_or(0),
                    done: s["done"].as_bool().unwrap_or(false),
                },
            );
        }
    }
    let mut days = Vec::new();
    let mut idx = 0;
    let mut d = day0;
    while d <= last_day && days.len() < MAX_REPORT_DAYS as usize {
        let end = d + DAY;
        while idx < events.len() && events[idx].time < end {
            let e = &events[idx];
            idx += 1;
            let p = &e.payload;
            if e.kind == ev::ITEM_TRANSITIONED.name {
                if let Some(t) = track.get_mut(&e.item_id) {
                    t.done = p["to_category"] == "done";
                }
            } else if e.kind == ev::ITEM_UPDATED.name {
                let changes = &p["changes"];
                if changes.get("sprint").is_some() {
                    if p["sprint_id"].as_i64() == Some(sprint_id) {
                        track.insert(
                            e.item_id,
                            Track {
                                in_sprint: true,
                                estimate: p["estimate"].as_i64().unwrap_or(0),
                                done: p["done"].as_bool().unwrap_or(false),
                            },
                        );
                    } else if let Some(t) = track.get_mut(&e.item_id) {
                        t.in_sprint = false;
                    }
                }
                if let Some(est) = changes.get("estimate")
                    && let Some(t) = track.get_mut(&e.item_id)
                {
                    t.estimate = est["new"].as_i64().unwrap_or(0);
                }
            }
        }
        let (mut remaining, mut completed) = (0, 0);
        for t in track.values().filter(|t| t.in_sprint) {
            if t.done {
                completed += t.estimate;
            } else {
                remaining += t.estimate;
            }
        }
        days.push(ReportDay {
            date: day_string(d),
            remaining,
            completed,
            scope: remaining + completed,
        });
        d = end;
    }
    days
}

/// The sprint's daily remaining, completed and scope points, from the ledger.
pub async fn report(
    ex: &mut impl Executor,
    project_id: i64,
    id: i64,
) -> Result<Report, StoreError> {
    let sprint = get(&mut *ex, project_id, id).await?;
    let events =
        ouro_store::events::for_subject(&mut *ex, "sprint", &id.to_string(), 1_000).await?;
    let started = events
        .iter()
        .rev()
        .find(|e| e.kind == ev::SPRINT_STARTED.name && e.project_id == Some(project_id));
    let Some(started) = started else {
        return Ok(Report {
            committed_points: sprint.points,
            sprint,
            days: vec![],
        });
    };
    let completed_seq = events
        .iter()
        .find(|e| e.kind == ev::SPRINT_COMPLETED.name && e.seq > started.seq)
        .map(|e| e.seq)
        .unwrap_or(i64::MAX);
    let rows = q(
        "SELECT time, kind, subject_id, payload FROM events WHERE project_id = $1 \
                  AND seq > $2 AND seq < $3 AND (kind = $4 OR kind = $5) ORDER BY seq",
    )
    .bind(project_id)
    .bind(started.seq)
    .bind(completed_seq)
    .bind(ev::ITEM_UPDATED.name)
    .bind(ev::ITEM_TRANSITIONED.name)
    .fetch_all(&mut *ex)
    .await?;
    let mut replayed = Vec::new();
    for r in &rows {
        replayed.push(Replayed {
            time: r.i64("time")?,
            kind: r.text("kind")?,
            item_id: r.text("subject_id")?.parse().unwrap_or(-1),
            payload: serde_json::from_str(&r.text("payload")?)
                .map_err(|e| StoreError::Decode(e.to_string()))?,
        });
    }
    let snapshot = started.payload["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let start = started.time;
    let day0 = start - start.rem_euclid(DAY);
    let now = ouro_core::time::now_ms();
    let last = sprint
        .completed_at
        .unwrap_or_else(|| now.min(sprint.end_at.unwrap_or(now)))
        .max(start);
    let last_day = last - last.rem_euclid(DAY);
    let mut days = replay(id, &snapshot, &replayed, day0, last_day);
    // Planned days still ahead show no data; the chart draws the ideal line across them.
    let end = sprint.end_at.unwrap_or(start);
    let mut d = last_day + DAY;
    while sprint.completed_at.is_none() && d <= end && days.len() < MAX_REPORT_DAYS as usize {
        days.push(ReportDay {
            date: day_string(d),
            remaining: -1,
            completed: -1,
            scope: -1,
        });
        d += DAY;
    }
    Ok(Report {
        committed_points: started.payload["committed_points"].as_i64().unwrap_or(0),
        sprint,
        days,
    })
}

/// Committed and completed points of the last `n` completed sprints, oldest first.
pub async fn velocity(
    ex: &mut impl Executor,
    project_id: i64,
    n: usize,
) -> Result<Vec<Sprint>, StoreError> {
    let mut done: Vec<Sprint> = list(ex, project_id)
        .await?
        .into_iter()
        .filter(|s| s.state == SprintState::Completed)
        .take(n)
        .collect();
    done.reverse();
    Ok(done)
}

fn short_dates(r: &Report) -> Vec<String> {
    r.days.iter().map(|d| d.date[5..].to_string()).collect()
}

fn known(v: i64) -> Option<f64> {
    (v >= 0).then_some(v as f64)
}

/// The burndown SVG: remaining points per day and the ideal line from the committed points.
pub fn burndown_svg(r: &Report) -> String {
    let n = r.days.len();
    let start = r
        .days
        .first()
        .map(|d| d.scope)
        .unwrap_or(r.committed_points) as f64;
    let ideal = (0..n)
        .map(|i| {
            Some(if n <= 1 {
                start
            } else {
                start * (1.0 - i as f64 / (n - 1) as f64)
            })
        })
        .collect();
    crate::charts::line_chart(&crate::charts::Chart {
        title: format!("Burndown: {}", r.sprint.name),
        x_labels: short_dates(r),
        series: vec![
            crate::charts::Series {
                name: "Remaining".into(),
                values: r.days.iter().map(|d| known(d.remaining)).collect(),
                dashed: false,
            },
            crate::charts::Series {
                name: "Ideal".into(),
                values: ideal,
                dashed: true,
            },
        ],
        y_label: "points".into(),
    })
}

/// The burnup SVG: completed points and total scope per day.
pub fn burnup_svg(r: &Report) -> String {
    crate::charts::line_chart(&crate::charts::Chart {
        title: format!("Burnup: {}", r.sprint.name),
        x_labels: short_dates(r),
        series: vec![
            crate::charts::Series {
                name: "Completed".into(),
                values: r.days.iter().map(|d| known(d.completed)).collect(),
                dashed: false,
            },
            crate::charts::Series {
                name: "Scope".into(),
                values: r.days.iter().map(|d| known(d.scope)).collect(),
                dashed: false,
            },
        ],
        y_label: "points".into(),
    })
}

/// The velocity SVG: committed vs completed points of completed sprints.
pub fn velocity_svg(done: &[Sprint]) -> String {
    crate::charts::bar_chart(&crate::charts::Chart {
        title: "Velocity".into(),
        x_labels: done.iter().map(|s| s.name.clone()).collect(),
        series: vec![
            crate::charts::Series {
                name: "Committed".into(),
                values: done
                    .iter()
                    .map(|s| Some(s.committed_points.unwrap_or(0) as f64))
                    .collect(),
                dashed: false,
            },
            crate::charts::Series {
                name: "Completed".into(),
                values: done
                    .iter()
                    .map(|s| Some(s.completed_points.unwrap_or(0) as f64))
                    .collect(),
                dashed: false,
            },
        ],
        y_label: "points".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(time: i64, item: i64, payload: Value) -> Replayed {
        Replayed {
            time,
            kind: ev::ITEM_UPDATED.name.into(),
            item_id: item,
            payload,
        }
    }

    #[test]
    fn replay_follows_transitions_scope_and_estimates() {
        let snap = vec![
            json!({"id": 1, "estimate": 3, "done": false}),
            json!({"id": 2, "estimate": 5, "done": false}),
        ];
        let events = vec![
            Replayed {
                time: DAY + 10,
                kind: ev::ITEM_TRANSITIONED.name.into(),
                item_id: 1,
                payload: json!({"to_category": "done"}),
            },
            upd(
                DAY + 20,
                3,
                json!({"changes": {"sprint": {"old": null, "new": "S"}},
                                    "sprint_id": 7, "estimate": 2, "done": false}),
            ),
            upd(
                2 * DAY + 1,
                2,
                json!({"changes": {"estimate": {"old": 5, "new": 8}}}),
            ),
            upd(
                2 * DAY + 2,
                3,
                json!({"changes": {"sprint": {"old": "S", "new": null}},
                                       "sprint_id": null}),
            ),
        ];
        let days = replay(7, &snap, &events, 0, 2 * DAY);
        let got: Vec<(i64, i64, i64)> = days
            .iter()
            .map(|d| (d.remaining, d.completed, d.scope))
            .collect();
        assert_eq!(got, vec![(8, 0, 8), (7, 3, 10), (8, 3, 11)]);
        assert_eq!(days[0].date, "1970-01-01");
    }
}
