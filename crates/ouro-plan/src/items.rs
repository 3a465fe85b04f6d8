//! Work items: create, read, list, update, transition, comment, watch, and their history.
//!
//! Keys are `KEY-N`: KEY comes from the project slug (upper case, dashes dropped, at most 10
//! characters) and N from the project's `plan_counters` row, incremented in the item's own
//! transaction, so numbers are unique, gap-free while nothing fails, and never handed out twice.
//!
//! Backlog order is a fractional rank per item ([`crate::rank`]): creating appends, [`move_rank`]
//! rewrites only the moved row, and a UNIQUE (project_id, rank) index backs the project lock that
//! serialises rank writers. [`search`] runs the item query language; [`bulk_edit`] changes many
//! items in one transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, Event, NewEvent, OuroError};
use ouro_store::Backend;
use ouro_store::db::Arg;
use ouro_store::projects::Project;
use ouro_store::{Executor, Page, PageReq, Row, Store, StoreError, Tx, q};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use crate::workflow::{self, Category, Kind};

pub const MAX_TITLE: usize = 300;
pub const MAX_DESCRIPTION: usize = 65_536;
pub const MAX_COMMENT: usize = 65_536;
pub const MAX_LABELS: usize = 20;
pub const MAX_LABEL: usize = 50;
pub const MAX_ESTIMATE: i64 = 1_000;
pub const MAX_WORDS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::None => "none",
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        [
            Priority::None,
            Priority::Low,
            Priority::Medium,
            Priority::High,
            Priority::Critical,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// A work item as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Item {
    pub id: i64,
    /// `DEMO-42`: unique in the project and never reused.
    pub key: String,
    pub number: i64,
    #[serde(rename = "type")]
    pub item_type: String,
    pub title: String,
    /// Markdown source.
    pub description: String,
    pub state: String,
    pub state_category: Category,
    /// User name, or null.
    pub assignee: Option<String>,
    pub reporter: Option<String>,
    pub priority: Priority,
    /// Story points.
    pub estimate: Option<i64>,
    pub labels: Vec<String>,
    /// Custom field values by field name (docs/plan-settings.md).
    pub fields: BTreeMap<String, String>,
    /// Key of the parent item, or null.
    pub parent: Option<String>,
    /// Key of the epic this item belongs to (directly or through its parents), or null.
    pub epic: Option<String>,
    /// Name of the sprint the item is planned into, or null (the backlog).
    pub sprint: Option<String>,
    #[serde(serialize_with = "ouro_core::time::serde_ms_opt::serialize")]
    #[schemars(with = "Option<String>")]
    pub due_at: Option<i64>,
    #[serde(serialize_with = "ouro_core::time::serde_ms_opt::serialize")]
    #[schemars(with = "Option<String>")]
    pub target_at: Option<i64>,
    /// Backlog order: items sort by this text.
    pub rank: String,
    /// Send it back with an update; a stale version gets 409.
    pub version: i64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub updated_at: i64,
    #[serde(skip)]
    pub kind: Option<Kind>,
    #[serde(skip)]
    pub parent_id: Option<i64>,
    #[serde(skip)]
    pub epic_id: Option<i64>,
    #[serde(skip)]
    pub assignee_id: Option<i64>,
    #[serde(skip)]
    pub sprint_id: Option<i64>,
}

/// What a new item needs: a type and a title; everything else is optional.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// An enabled item type of the project (`epic`, `feature`, `story`, `task`, `bug`,
    /// `incident`, `feedback` by default).
    #[serde(rename = "type")]
    pub item_type: String,
    /// 1 to 300 characters.
    pub title: String,
    /// Markdown.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub priority: Option<Priority>,
    /// User name of a project member.
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub estimate: Option<i64>,
    #[serde(default)]
    pub labels: Vec<String>,
    /// Key of the parent item (epic > feature > story > task; bugs under stories).
    #[serde(default)]
    pub parent: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD`.
    #[serde(default)]
    pub due_at: Option<String>,
    #[serde(default)]
    pub target_at: Option<String>,
    /// Custom field values by name; checked against the field's type.
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
}

/// A partial update: absent fields stay, `null` clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub priority: Option<Priority>,
    #[serde(default, deserialize_with = "nullable")]
    pub assignee: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub estimate: Option<Option<i64>>,
    /// Replaces the whole label set.
    pub labels: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub parent: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub due_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub target_at: Option<Option<String>>,
    /// Custom field values to set (`null` or "" clears one); fields not named stay.
    pub fields: Option<BTreeMap<String, Value>>,
    /// The version you read; if the item changed since, the update is refused with 409.
    pub version: Option<i64>,
}

/// Tells "absent" (outer `None`, via `default`) from "null" (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Filters for [`list`]. All given filters must hold.
#[derive(Debug, Clone, Default)]
pub struct ItemFilter {
    /// Words that must all appear in the title, case-insensitively.
    pub text: Option<String>,
    pub item_type: Option<String>,
    pub state: Option<String>,
    /// A user name.
    pub assignee: Option<String>,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Comment {
    pub id: i64,
    /// User name, or null when the author was deleted.
    pub author: Option<String>,
    /// Markdown source.
    pub body: String,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Watchers {
    /// Whether the caller watches the item.
    pub watching: bool,
    /// User names, sorted.
    pub watchers: Vec<String>,
}

/// The key prefix of a project: `payments-api` → `PAYMENTSAP`.
pub fn key_prefix(slug: &str) -> String {
    slug.chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .take(10)
        .collect()
}

/// Items created before fractional ranks got the zero-padded number (`000000000010`), which
/// `rank` refuses when it ends in `0`. As a base-36 fraction, dropping trailing zeros keeps the
/// value, so such a rank still works as a bound and the order of old and new rows agrees.
fn as_bound(r: &str) -> String {
    r.trim_end_matches('0').to_string()
}

/// A rank strictly between two neighbours (`None` = open end), both as stored.
fn rank_between(before: Option<&str>, after: Option<&str>) -> Result<String, StoreError> {
    let before = before.map(as_bound).filter(|b| !b.is_empty());
    let after = after.map(as_bound);
    crate::rank::between(before.as_deref(), after.as_deref()).map_err(|e| {
        StoreError::Decode(format!("cannot rank between {before:?} and {after:?}: {e}"))
    })
}

/// Where to move an item in the backlog: exactly one of `before` and `after`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RankMove {
    /// Key of the item to place this one right before.
    pub before: Option<String>,
    /// Key of the item to place this one right after.
    pub after: Option<String>,
}

/// Locks the project's counter row until commit (bound to the project id). On PostgreSQL this
/// serialises rank writers (creates take the same row), so the neighbour read and the write
/// cannot interleave with another move into the same gap; on SQLite the one writer already
/// does. The no-op UPDATE is the one spelling of a row lock both engines accept. It must be a
/// statement of its own, before the reads: a read in the same statement would use a snapshot
/// taken before the lock was granted.
const LOCK_PROJECT: &str =
    "UPDATE plan_counters SET last_number = last_number WHERE project_id = $1";

struct RankTarget {
    id: i64,
    key: String,
    rank: String,
}

/// The moved item's full row, its labels and custom fields (as JSON arrays), the target's id,
/// key and rank (NULL when there is no such target) and the target's neighbour on the far side
/// (NULL at the end of the backlog), in one statement: $1 project, $2 moved key, $3 target key.
/// Each read was a round trip of its own; on PostgreSQL those were most of a move's time.
fn move_read_sql(backend: Backend, before: bool) -> String {
    let (cmp, order) = if before { ("<", "DESC") } else { (">", "ASC") };
    let (labels, fields) = match backend {
        Backend::Postgres => (
            "(SELECT json_agg(l.label ORDER BY l.label)::text FROM item_labels l \
             WHERE l.item_id = i.id)",
            "(SELECT json_agg(json_build_array(f.name, v.value))::text FROM plan_field_values v \
             JOIN plan_fields f ON f.id = v.field_id WHERE v.item_id = i.id)",
        ),
        Backend::Sqlite => (
            "(SELECT json_group_array(l.label ORDER BY l.label) FROM item_labels l \
             WHERE l.item_id = i.id)",
            "(SELECT json_group_array(json_array(f.name, v.value)) FROM plan_field_values v \
             JOIN plan_fields f ON f.id = v.field_id WHERE v.item_id = i.id)",
        ),
    };
    let columns = format!(
        "SELECT tg.id AS target_id, tg.key AS target_key, tg.rank AS target_rank, \
         (SELECT o.rank FROM items o WHERE o.project_id = $1 AND o.rank {cmp} tg.rank \
         AND o.id <> i.id ORDER BY o.rank {order} LIMIT 1) AS other_rank, \
         {labels} AS labels_json, {fields} AS fields_json, i.*,"
    );
    format!(
        "WITH tg AS (SELECT id, key, rank FROM items WHERE project_id = $1 AND key = $3) {} \
         LEFT JOIN tg ON 1 = 1 WHERE i.project_id = $1 AND i.key = $2",
        SELECT.replacen("SELECT i.*,", &columns, 1)
    )
}

/// A JSON array of strings as the move read returns it; NULL (PostgreSQL's aggregate over no
/// rows) is empty.
fn json_list<T: serde::de::DeserializeOwned>(raw: Option<String>) -> Result<Vec<T>, StoreError> {
    match raw {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Decode(format!("cannot read aggregated values: {e}"))),
    }
}

/// Moves an item right before or right after another one. Only the moved row is written: its
/// new rank lies between the target and the target's neighbour on that side.
pub async fn move_rank(
    store: &Store,
    project: &Project,
    actor: &Actor,
    key: &str,
    to: RankMove,
) -> Result<Item, StoreError> {
    let (target_key, before) = match (&to.before, &to.after) {
        (Some(k), None) => (k.as_str(), true),
        (None, Some(k)) => (k.as_str(), false),
        _ => {
            return Err(OuroError::field("before", "give exactly one of before and after").into());
        }
    };
    if key.contains('\0') {
        return Err(not_found(key).into());
    }
    let mut tx = store.begin_then(LOCK_PROJECT, project.id).await?;
    let sql = move_read_sql(store.backend(), before);
    // No key holds NUL or is empty, so "" finds no target, after the moved item was looked up.
    let target_arg = if target_key.contains('\0') {
        String::new()
    } else {
        target_key.trim().to_ascii_uppercase()
    };
    let row = q(sql)
        .bind(project.id)
        .bind(key.trim().to_ascii_uppercase())
        .bind(target_arg)
        .fetch_optional(&mut tx)
        .await?
        .ok_or_else(|| not_found(key))?;
    let mut cur = item_from(&row)?;
    cur.labels = json_list(row.opt_text("labels_json")?)?;
    cur.fields = json_list::<(String, String)>(row.opt_text("fields_json")?)?
        .into_iter()
        .collect();
    let Some(target_id) = row.opt_i64("target_id")? else {
        return Err(not_found(target_key).into());
    };
    let target = RankTarget {
        id: target_id,
        key: row.text("target_key")?,
        rank: row.text("target_rank")?,
    };
    if target.id == cur.id {
        let field = if before { "before" } else { "after" };
        return Err(OuroError::field(field, "an item cannot move next to itself").into());
    }
    let other = row.opt_text("other_rank")?;
    let rank = if before {
        rank_between(other.as_deref(), Some(&target.rank))?
    } else {
        rank_between(Some(&target.rank), other.as_deref())?
    };
    let now = ouro_core::time::now_ms();
    let write =
        q("UPDATE items SET rank = $1, updated_at = $2, version = version + 1 WHERE id = $3")
            .bind(&rank)
            .bind(now)
            .bind(cur.id);
    // The row was read under the project lock and only these columns changed.
    let item = Item {
        rank,
        updated_at: now,
        version: cur.version + 1,
        ..cur.clone()
    };
    let mut changes = Map::new();
    change(&mut changes, "rank", &cur.rank, &item.rank);
    let place = if before { "before" } else { "after" };
    // The row and its event in one statement (one round trip on PostgreSQL).
    tx.append_after(
        write,
        NewEvent::new(
            ev::ITEM_UPDATED,
            actor,
            cur.id,
            json!({"key": cur.key, "changes": Value::Object(changes), place: target.key}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(item)
}

pub fn not_found(key: &str) -> OuroError {
    OuroError::new(
        ErrorCode::ItemNotFound,
        format!("item {key:?} does not exist in this project"),
    )
}

/// PostgreSQL TEXT cannot hold NUL; refusing it up front keeps both engines alike and such
/// input a 422 instead of a database error.
pub(crate) fn no_nul(field: &str, s: &str) -> Result<(), OuroError> {
    if s.contains('\0') {
        return Err(OuroError::field(
            field,
            format!("{field} must not contain NUL characters"),
        ));
    }
    Ok(())
}

fn validate_title(t: &str) -> Result<String, OuroError> {
    let t = t.trim();
    let n = t.chars().count();
    if n == 0 || n > MAX_TITLE {
        return Err(OuroError::field(
            "title",
            format!("the title must have 1 to {MAX_TITLE} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(OuroError::field(
            "title",
            "the title must be one line without control characters",
        ));
    }
    Ok(t.to_string())
}

fn validate_description(d: &str) -> Result<(), OuroError> {
    no_nul("description", d)?;
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(OuroError::field(
            "description",
            format!("the description must have at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(())
}

pub(crate) fn validate_estimate(e: Option<i64>) -> Result<Option<i64>, OuroError> {
    if let Some(v) = e
        && !(0..=MAX_ESTIMATE).contains(&v)
    {
        return Err(OuroError::field(
            "estimate",
            format!("the estimate must be 0 to {MAX_ESTIMATE} points"),
        ));
    }
    Ok(e)
}

/// Trims, drops duplicates and sorts; labels have no spaces or commas so filters stay simple.
fn validate_labels(labels: &[String]) -> Result<Vec<String>, OuroError> {
    let set: BTreeSet<String> = labels.iter().map(|l| l.trim().to_string()).collect();
    if set.len() > MAX_LABELS {
        return Err(OuroError::field(
            "labels",
            format!("an item can have at most {MAX_LABELS} labels"),
        ));
    }
    for l in &set {
        let n = l.chars().count();
        let bad = |c: char| c.is_whitespace() || c.is_control() || c == ',';
        if n == 0 || n > MAX_LABEL || l.chars().any(bad) {
            return Err(OuroError::field(
                "labels",
                format!("label {l:?}: use 1 to {MAX_LABEL} characters without spaces or commas"),
            ));
        }
    }
    Ok(set.into_iter().collect())
}

/// Parses an RFC 3339 time or a `YYYY-MM-DD` date (midnight UTC) into Unix milliseconds.
pub(crate) fn parse_time(field: &str, s: Option<&str>) -> Result<Option<i64>, OuroError> {
    use time::format_description::well_known::Rfc3339;
    let Some(s) = s.map(str::trim) else {
        return Ok(None);
    };
    let t = time::OffsetDateTime::parse(s, &Rfc3339).ok().or_else(|| {
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
            .ok()
            .map(|d| d.midnight().assume_utc())
    });
    match t {
        Some(t) => Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64)),
        None => Err(OuroError::field(
            field,
            format!("{field} must be an RFC 3339 time or a YYYY-MM-DD date"),
        )),
    }
}

const SELECT: &str = "SELECT i.*, t.kind AS type_kind, a.name AS assignee_name, \
    r.name AS reporter_name, p.key AS parent_key, e.key AS epic_key, sp.name AS sprint_name FROM items i \
    LEFT JOIN item_types t ON t.project_id = i.project_id AND t.name = i.type \
    LEFT JOIN users a ON a.id = i.assignee_id LEFT JOIN users r ON r.id = i.reporter_id \
    LEFT JOIN items p ON p.id = i.parent_id LEFT JOIN items e ON e.id = i.epic_id \
    LEFT JOIN plan_sprints sp ON sp.id = i.sprint_id";

/// The columns a card shows (key, title, type, state, assignee, priority, estimate, epic,
/// sprint, rank) and what moving one needs; see [`card_from`]. Boards and sprint pages list
/// thousands of cards, and every column costs on each of them.
const CARD_SELECT: &str = "SELECT i.id, i.key, i.type, i.title, i.state, i.state_category, \
    i.priority, i.estimate, i.rank, i.version, i.sprint_id, i.epic_id, i.assignee_id, \
    a.name AS assignee_name, e.key AS epic_key, sp.name AS sprint_name FROM items i \
    LEFT JOIN users a ON a.id = i.assignee_id LEFT JOIN items e ON e.id = i.epic_id \
    LEFT JOIN plan_sprints sp ON sp.id = i.sprint_id";

/// An item from a [`CARD_SELECT`] row: the card's fields are filled; description, reporter,
/// parent, dates, labels and custom fields are left empty.
fn card_from(r: &Row) -> Result<Item, StoreError> {
    let cat = r.text("state_category")?;
    let key = r.text("key")?;
    Ok(Item {
        id: r.i64("id")?,
        number: key
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0),
        key,
        item_type: r.text("type")?,
        title: r.text("title")?,
        description: String::new(),
        state: r.text("state")?,
        state_category: Category::parse(&cat)
            .ok_or_else(|| StoreError::Decode(format!("unknown state category {cat:?}")))?,
        assignee: r.opt_text("assignee_name")?,
        reporter: None,
        priority: Priority::parse(&r.text("priority")?).unwrap_or_default(),
        estimate: r.opt_i64("estimate")?,
        labels: Vec::new(),
        fields: BTreeMap::new(),
        parent: None,
        epic: r.opt_text("epic_key")?,
        sprint: r.opt_text("sprint_name")?,
        due_at: None,
        target_at: None,
        rank: r.text("rank")?,
        version: r.i64("version")?,
        created_at: 0,
        updated_at: 0,
        kind: None,
        parent_id: None,
        epic_id: r.opt_i64("epic_id")?,
        assignee_id: r.opt_i64("assignee_id")?,
        sprint_id: r.opt_i64("sprint_id")?,
    })
}

fn item_from(r: &Row) -> Result<Item, StoreError> {
    let cat = r.text("state_category")?;
    Ok(Item {
        id: r.i64("id")?,
        key: r.text("key")?,
        number: r.i64("number")?,
        item_type: r.text("type")?,
        title: r.text("title")?,
        description: r.text("description")?,
        state: r.text("state")?,
        state_category: Category::parse(&cat)
            .ok_or_else(|| StoreError::Decode(format!("unknown state category {cat:?}")))?,
        assignee: r.opt_text("assignee_name")?,
        reporter: r.opt_text("reporter_name")?,
        priority: Priority::parse(&r.text("priority")?).unwrap_or_default(),
        estimate: r.opt_i64("estimate")?,
        labels: Vec::new(),
        fields: BTreeMap::new(),
        parent: r.opt_text("parent_key")?,
        epic: r.opt_text("epic_key")?,
        sprint: r.opt_text("sprint_name")?,
        due_at: r.opt_i64("due_at")?,
        target_at: r.opt_i64("target_at")?,
        rank: r.text("rank")?,
        version: r.i64("version")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
        kind: r.opt_text("type_kind")?.and_then(|k| Kind::parse(&k)),
        parent_id: r.opt_i64("parent_id")?,
        epic_id: r.opt_i64("epic_id")?,
        assignee_id: r.opt_i64("assignee_id")?,
        sprint_id: r.opt_i64("sprint_id")?,
    })
}

/// Fills in the labels of `items` with one query.
async fn with_labels(
    ex: &mut impl Executor,
    mut items: Vec<Item>,
) -> Result<Vec<Item>, StoreError> {
    if items.is_empty() {
        return Ok(items);
    }
    // Ids are integers from our own table, so inlining them is safe and keeps one statement.
    let ids: Vec<String> = items.iter().map(|i| i.id.to_string()).collect();
    let rows = q(format!(
        "SELECT item_id, label FROM item_labels WHERE item_id IN ({}) ORDER BY label",
        ids.join(",")
    ))
    // Its text changes with every page: keeping it prepared would only churn the cache.
    .plan_each_run()
    .fetch_all(ex)
    .await?;
    // A page can hold thousands of items: look them up by id, not by a scan per row.
    let at: HashMap<i64, usize> = items.iter().enumerate().map(|(n, i)| (i.id, n)).collect();
    for r in &rows {
        if let Some(&n) = at.get(&r.i64("item_id")?) {
            items[n].labels.push(r.text("label")?);
        }
    }
    let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
    for (id, name, value) in crate::fields::values_of(ex, &ids).await? {
        if let Some(&n) = at.get(&id) {
            items[n].fields.insert(name, value);
        }
    }
    Ok(items)
}

/// An item by key (case-insensitive), or `None`.
pub async fn get(
    ex: &mut impl Executor,
    project_id: i64,
    key: &str,
) -> Result<Option<Item>, StoreError> {
    if key.contains('\0') {
        return Ok(None);
    }
    let row = q(format!("{SELECT} WHERE i.project_id = $1 AND i.key = $2"))
        .bind(project_id)
        .bind(key.trim().to_ascii_uppercase())
        .fetch_optional(ex)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let item = item_from(&row)?;
    Ok(with_labels(ex, vec![item]).await?.pop())
}

pub(crate) async fn get_or_404(
    ex: &mut impl Executor,
    project_id: i64,
    key: &str,
) -> Result<Item, StoreError> {
    Ok(get(ex, project_id, key)
        .await?
        .ok_or_else(|| not_found(key))?)
}

/// A query in the item query language and the page of [`search`] to return.
///
/// `cursor` is `None` for the first page, else the previous page's `next_cursor`. In the default
/// order (rank) that is `r:RANK`, the last rank seen, so moves and inserts elsewhere never repeat
/// or skip an item; with a `sort:` in the query it is `o:OFFSET`, a plain offset (sort values
/// tie and change between pages, so there is no stable key to continue from).
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// A query in the item query language (`docs/query-language.md`).
    pub query: Option<String>,
    /// The caller's user id, for `me` in the query.
    pub me: Option<i64>,
    pub cursor: Option<String>,
    pub limit: i64,
}

fn bad_cursor() -> OuroError {
    OuroError::new(
        ErrorCode::InvalidQuery,
        "invalid cursor: pass back next_cursor as given, with the same query",
    )
}

/// The 400 for a query that does not parse, located for display.
pub(crate) fn query_error(q: &str, e: &crate::query::QueryError) -> OuroError {
    OuroError::new(ErrorCode::InvalidItemQuery, format!("invalid query: {e}")).with_details(json!({
        "position": e.position, "expected": e.expected, "found": e.found,
        "reason": e.code, "caret": crate::query::caret(q, e),
    }))
}

/// The most items a board or a sprint shows.
pub const MAX_BOARD: i64 = 5_000;

/// Items matching `query` (and in sprint `sprint_id`, when given), in rank order, at most
/// [`MAX_BOARD`], in one statement, as cards (see [`card_from`]: only what boards and sprint
/// views show and what moving a card needs).
pub async fn board_items(
    ex: &mut impl Executor,
    project_id: i64,
    query: Option<&str>,
    me: Option<i64>,
    sprint_id: Option<i64>,
) -> Result<Vec<Item>, StoreError> {
    matching(ex, project_id, query, me, sprint_id, CARD_SELECT, card_from).await
}

/// The items of sprint `sprint_id` in rank order, at most [`MAX_BOARD`], complete (with
/// descriptions, without labels): what the sprint API answers.
pub async fn in_sprint(
    ex: &mut impl Executor,
    project_id: i64,
    sprint_id: i64,
) -> Result<Vec<Item>, StoreError> {
    matching(
        ex,
        project_id,
        None,
        None,
        Some(sprint_id),
        SELECT,
        item_from,
    )
    .await
}

async fn matching(
    ex: &mut impl Executor,
    project_id: i64,
    query: Option<&str>,
    me: Option<i64>,
    sprint_id: Option<i64>,
    select: &str,
    decode: fn(&Row) -> Result<Item, StoreError>,
) -> Result<Vec<Item>, StoreError> {
    use crate::query::{self, SqlArg, SqlContext};
    let query = query.map(str::trim).filter(|t| !t.is_empty());
    if query.is_some_and(|t| t.contains('\0')) {
        return Ok(vec![]);
    }
    let parsed = match query {
        Some(text) => query::parse(text).map_err(|e| query_error(text, &e))?,
        None => query::Query::default(),
    };
    let mut args: Vec<Arg> = vec![project_id.into()];
    let mut sql = format!("{select} WHERE i.project_id = $1");
    if let Some(s) = sprint_id {
        args.push(s.into());
        sql.push_str(&format!(" AND i.sprint_id = ${}", args.len()));
    }
    let ctx = SqlContext {
        me,
        now_ms: ouro_core::time::now_ms(),
        next_param: args.len() + 1,
        backend: ex.backend(),
    };
    let (cond, qargs) =
        query::to_sql(&parsed, &ctx).map_err(|e| query_error(query.unwrap_or(""), &e))?;
    sql.push_str(&format!(" AND ({cond})"));
    args.extend(qargs.into_iter().map(|a| match a {
        SqlArg::I64(n) => Arg::from(n),
        SqlArg::Text(t) => Arg::from(t),
    }));
    args.push(MAX_BOARD.into());
    sql.push_str(&format!(" ORDER BY i.rank LIMIT ${}", args.len()));
    // Query-language statements are planned with their values (see `Q::plan_each_run`).
    let mut stmt = q(sql).plan_each_run();
    for a in args {
        stmt = stmt.bind(a);
    }
    stmt.fetch_all(ex).await?.iter().map(decode).collect()
}

/// Items matching `filter`, in backlog (rank) order, one page at a time; the cursor is the
/// number of items already seen (for callers that page with numbers; [`search`] pages by rank).
pub async fn list(
    ex: &mut impl Executor,
    project_id: i64,
    filter: &ItemFilter,
    page: PageReq,
) -> Result<Page<Item>, StoreError> {
    let s = Search {
        cursor: Some(format!("o:{}", page.after)),
        limit: page.limit,
        ..Search::default()
    };
    let out = search_impl(ex, project_id, filter, &s, true).await?;
    Ok(Page {
        items: out.items,
        next_cursor: out
            .next_cursor
            .map(|c| c.trim_start_matches("o:").to_string()),
    })
}

/// Items matching `filter` and the query in `s`, one page at a time, in backlog (rank) order
/// unless the query sorts. A query that does not parse is `400 item.invalid_query`.
pub async fn search(
    ex: &mut impl Executor,
    project_id: i64,
    filter: &ItemFilter,
    s: &Search,
) -> Result<Page<Item>, StoreError> {
    search_impl(ex, project_id, filter, s, false).await
}

async fn search_impl(
    ex: &mut impl Executor,
    project_id: i64,
    filter: &ItemFilter,
    page: &Search,
    offset_paging: bool,
) -> Result<Page<Item>, StoreError> {
    use crate::query::{self, SortField, SqlArg, SqlContext};
    let parsed = match page.query.as_deref() {
        Some(text) => query::parse(text).map_err(|e| query_error(text, &e))?,
        None => query::Query::default(),
    };
    let by_rank = !offset_paging
        && match parsed.sort.as_slice() {
            [] => true,
            [k] => k.field == SortField::Rank && !k.descending,
            _ => false,
        };
    let limit = page.limit.clamp(1, ouro_store::page::MAX_LIMIT);
    let (after_rank, offset) = match page.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => (None, 0),
        Some(c) => match (by_rank, c.split_once(':')) {
            // Ranks only ever hold 0-9 and a-z.
            (true, Some(("r", r)))
                if !r.is_empty()
                    && r.bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()) =>
            {
                (Some(r.to_string()), 0)
            }
            (false, Some(("o", n))) => match n.parse::<i64>() {
                Ok(n) if n >= 0 => (None, n),
                _ => return Err(bad_cursor().into()),
            },
            _ => return Err(bad_cursor().into()),
        },
    };
    let values = [
        &filter.text,
        &filter.item_type,
        &filter.state,
        &filter.assignee,
        &filter.label,
        &page.query,
        &page.cursor,
    ];
    if values
        .iter()
        .any(|v| v.as_deref().is_some_and(|v| v.contains('\0')))
    {
        // Nothing stored contains NUL, so nothing matches (and PostgreSQL would refuse it).
        return Ok(Page {
            items: vec![],
            next_cursor: None,
        });
    }
    let mut sql = format!("{SELECT} WHERE i.project_id = $1");
    let mut args: Vec<Arg> = vec![project_id.into()];
    let mut push = |sql: &mut String, cond: &str, a: Arg| {
        args.push(a);
        sql.push_str(&cond.replace("$?", &format!("${}", args.len())));
    };
    if let Some(r) = after_rank {
        push(&mut sql, " AND i.rank > $?", r.into());
    }
    if let Some(t) = filter.item_type.as_deref() {
        push(&mut sql, " AND i.type = $?", t.into());
    }
    if let Some(s) = filter.state.as_deref() {
        push(
            &mut sql,
            " AND LOWER(i.state) = $?",
            s.to_lowercase().into(),
        );
    }
    if let Some(a) = filter.assignee.as_deref() {
        push(&mut sql, " AND a.name = $?", a.into());
    }
    if let Some(l) = filter.label.as_deref() {
        push(
            &mut sql,
            " AND i.id IN (SELECT l.item_id FROM item_labels l WHERE l.label = $?)",
            l.trim().into(),
        );
    }
    if let Some(text) = filter.text.as_deref() {
        // Every word must appear; LIKE wildcards typed by the user are taken out, not escaped,
        // which keeps the SQL identical on both engines.
        // A bounded number of words keeps the statement within every engine's parameter limit.
        for word in text.split_whitespace().take(MAX_WORDS) {
            let pat = format!("%{}%", word.to_lowercase().replace(['%', '_'], ""));
            push(&mut sql, " AND LOWER(i.title) LIKE $?", pat.into());
        }
    }
    let ctx = SqlContext {
        me: page.me,
        now_ms: ouro_core::time::now_ms(),
        next_param: args.len() + 1,
        backend: ex.backend(),
    };
    let (cond, qargs) = query::to_sql(&parsed, &ctx)
        .map_err(|e| query_error(page.query.as_deref().unwrap_or(""), &e))?;
    sql.push_str(&format!(" AND ({cond})"));
    args.extend(qargs.into_iter().map(|a| match a {
        SqlArg::I64(n) => Arg::from(n),
        SqlArg::Text(t) => Arg::from(t),
    }));
    args.push((limit + 1).into());
    sql.push_str(&format!(
        " ORDER BY {} LIMIT ${}",
        query::order_by(&parsed),
        args.len()
    ));
    if offset > 0 {
        args.push(offset.into());
        sql.push_str(&format!(" OFFSET ${}", args.len()));
    }
    let mut stmt = q(sql).plan_each_run();
    for a in args {
        stmt = stmt.bind(a);
    }
    let rows = stmt.fetch_all(ex).await?;
    let mut items = rows.iter().map(item_from).collect::<Result<Vec<_>, _>>()?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = match items.last() {
        Some(last) if more && by_rank => Some(format!("r:{}", last.rank)),
        Some(_) if more => Some(format!("o:{}", offset + limit)),
        _ => None,
    };
    Ok(Page {
        items: with_labels(ex, items).await?,
        next_cursor,
    })
}

/// The id of a user who may be assigned work in the project (a member, or an instance admin).
async fn assignable(
    ex: &mut impl Executor,
    project_id: i64,
    name: &str,
) -> Result<i64, StoreError> {
    no_nul("assignee", name)?;
    let row = q(
        "SELECT u.id FROM users u WHERE u.name = $1 AND (u.is_admin = TRUE OR EXISTS \
                 (SELECT 1 FROM members m WHERE m.project_id = $2 AND m.user_id = u.id))",
    )
    .bind(name)
    .bind(project_id)
    .fetch_optional(ex)
    .await?;
    match row {
        Some(r) => r.i64("id"),
        None => Err(OuroError::field(
            "assignee",
            format!("{name:?} is not a member of this project"),
        )
        .into()),
    }
}

/// Resolves a parent key for an item of `kind`; returns the parent's id and the epic the child
/// then belongs to.
async fn resolve_parent(
    ex: &mut impl Executor,
    project_id: i64,
    kind: Kind,
    key: &str,
) -> Result<(Item, Option<i64>), StoreError> {
    let parent = get(ex, project_id, key).await?.ok_or_else(|| {
        OuroError::field(
            "parent",
            format!("item {key:?} does not exist in this project"),
        )
    })?;
    let allowed = kind.allowed_parents();
    match parent.kind {
        Some(pk) if allowed.contains(&pk) => {
            let epic = if pk == Kind::Epic {
                Some(parent.id)
            } else {
                parent.epic_id
            };
            Ok((parent, epic))
        }
        pk => {
            let names: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
            let msg = if names.is_empty() {
                format!("a {} cannot have a parent", kind.as_str())
            } else {
                format!(
                    "a {} can only sit under: {}; {} is a {}",
                    kind.as_str(),
                    names.join(", "),
                    parent.key,
                    pk.map(|k| k.as_str()).unwrap_or("?")
                )
            };
            Err(OuroError::field("parent", msg).into())
        }
    }
}

async fn set_labels(tx: &mut Tx, item_id: i64, labels: &[String]) -> Result<(), StoreError> {
    q("DELETE FROM item_labels WHERE item_id = $1")
        .bind(item_id)
        .execute(tx)
        .await?;
    for l in labels {
        q("INSERT INTO item_labels (item_id, label) VALUES ($1, $2)")
            .bind(item_id)
            .bind(l)
            .execute(tx)
            .await?;
    }
    Ok(())
}

async fn add_watcher(tx: &mut Tx, item_id: i64, user_id: i64) -> Result<(), StoreError> {
    q(
        "INSERT INTO item_watchers (item_id, user_id, created_at) VALUES ($1, $2, $3) \
       ON CONFLICT (item_id, user_id) DO NOTHING",
    )
    .bind(item_id)
    .bind(user_id)
    .bind(ouro_core::time::now_ms())
    .execute(tx)
    .await?;
    Ok(())
}

/// Creates an item in the first state of its type's workflow. The reporter (the actor) watches it.
pub async fn create(
    store: &Store,
    project: &Project,
    actor: &Actor,
    input: NewItem,
) -> Result<Item, StoreError> {
    let title = validate_title(&input.title)?;
    validate_description(&input.description)?;
    let estimate = validate_estimate(input.estimate)?;
    let labels = validate_labels(&input.labels)?;
    let due_at = parse_time("due_at", input.due_at.as_deref())?;
    let target_at = parse_time("target_at", input.target_at.as_deref())?;
    let priority = input.priority.unwrap_or_default();

    let mut tx = store.begin().await?;
    let item = create_in(
        &mut tx,
        project,
        actor,
        &input,
        (title, estimate, labels, due_at, target_at, priority),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(item)
}

/// Validated fields of a [`NewItem`]: title, estimate, labels, due, target, priority.
type Checked = (
    String,
    Option<i64>,
    Vec<String>,
    Option<i64>,
    Option<i64>,
    Priority,
);

/// Creates an item inside a caller's transaction (CSV imports create many in one); `state`
/// names a state of the type's workflow to start in instead of the first (case-insensitive).
pub async fn create_in_tx(
    tx: &mut Tx,
    project: &Project,
    actor: &Actor,
    input: NewItem,
    state: Option<&str>,
) -> Result<Item, StoreError> {
    let title = validate_title(&input.title)?;
    validate_description(&input.description)?;
    let estimate = validate_estimate(input.estimate)?;
    let labels = validate_labels(&input.labels)?;
    let due_at = parse_time("due_at", input.due_at.as_deref())?;
    let target_at = parse_time("target_at", input.target_at.as_deref())?;
    let priority = input.priority.unwrap_or_default();
    create_in(
        tx,
        project,
        actor,
        &input,
        (title, estimate, labels, due_at, target_at, priority),
        state,
    )
    .await
}

async fn create_in(
    tx: &mut Tx,
    project: &Project,
    actor: &Actor,
    input: &NewItem,
    checked: Checked,
    state: Option<&str>,
) -> Result<Item, StoreError> {
    let (title, estimate, labels, due_at, target_at, priority) = checked;
    // Taking the number first also serialises concurrent creates in one project on PostgreSQL
    // (the counter row is locked until commit), so seeding the defaults below cannot race.
    let number = q("INSERT INTO plan_counters (project_id, last_number) VALUES ($1, 1) \
                    ON CONFLICT (project_id) DO UPDATE SET last_number = plan_counters.last_number + 1 \
                    RETURNING last_number")
    .bind(project.id)
    .fetch_one(tx)
    .await?
    .i64("last_number")?;
    workflow::ensure_defaults(tx, project.id).await?;
    // After the current last item; the counter row locked above keeps this read current.
    let last = q("SELECT rank FROM items WHERE project_id = $1 ORDER BY rank DESC LIMIT 1")
        .bind(project.id)
        .fetch_optional(tx)
        .await?
        .map(|r| r.text("rank"))
        .transpose()?;
    let rank = rank_between(last.as_deref(), None)?;
    let ty = workflow::item_type(tx, project.id, input.item_type.trim())
        .await?
        .filter(|t| t.enabled)
        .ok_or_else(|| {
            OuroError::field(
                "type",
                format!(
                    "{:?} is not an enabled item type of this project (see GET /api/v1/projects/{}/workflows)",
                    input.item_type, project.slug
                ),
            )
        })?;
    let states = workflow::states(tx, project.id, &ty.workflow).await?;
    let first = match state {
        Some(name) => states
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                OuroError::field(
                    "state",
                    format!("{name:?} is not a state of the {:?} workflow", ty.workflow),
                )
            })?,
        None => states.first().ok_or_else(|| {
            StoreError::Decode(format!("workflow {:?} has no states", ty.workflow))
        })?,
    };
    let assignee_id = match input.assignee.as_deref() {
        Some(name) => Some(assignable(tx, project.id, name).await?),
        None => None,
    };
    let (parent_id, epic_id) = match input.parent.as_deref() {
        Some(k) => {
            let (p, epic) = resolve_parent(tx, project.id, ty.kind, k).await?;
            (Some(p.id), epic)
        }
        None => (None, None),
    };
    let field_values = crate::fields::validate(tx, project.id, &input.fields).await?;
    let key = format!("{}-{number}", key_prefix(&project.slug));
    let now = ouro_core::time::now_ms();
    let id = q("INSERT INTO items (project_id, number, key, type, title, description, state, \
                state_category, assignee_id, reporter_id, priority, estimate, parent_id, epic_id, \
                due_at, target_at, rank, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18) RETURNING id")
    .bind(project.id)
    .bind(number)
    .bind(&key)
    .bind(&ty.name)
    .bind(&title)
    .bind(&input.description)
    .bind(&first.name)
    .bind(first.category.as_str())
    .bind(assignee_id)
    .bind(actor.user_id())
    .bind(priority.as_str())
    .bind(estimate)
    .bind(parent_id)
    .bind(epic_id)
    .bind(due_at)
    .bind(target_at)
    .bind(&rank)
    .bind(now)
    .fetch_one(tx)
    .await?
    .i64("id")?;
    set_labels(tx, id, &labels).await?;
    crate::fields::set(tx, id, &field_values).await?;
    if let Some(uid) = actor.user_id() {
        add_watcher(tx, id, uid).await?;
    }
    let item = get_or_404(tx, project.id, &key).await?;
    tx.append(
        NewEvent::new(
            ev::ITEM_CREATED,
            actor,
            id,
            json!({
                "key": item.key, "type": item.item_type, "title": item.title,
                "state": item.state, "state_category": item.state_category,
                "assignee": item.assignee, "priority": item.priority,
                "parent": item.parent, "labels": item.labels, "fields": item.fields,
                // Who the description names: consumers see the event after later edits may
                // have changed the description.
                "mentions": crate::markdown::mentions(&item.description),
            }),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    Ok(item)
}

pub(crate) fn change<T: Serialize + PartialEq>(
    changes: &mut Map<String, Value>,
    field: &str,
    old: &T,
    new: &T,
) {
    if old != new {
        changes.insert(field.into(), json!({"old": old, "new": new}));
    }
}

/// Applies `patch` if the item is still at `patch.version` (when given); otherwise 409 with the
/// current version in the details. The event lists each changed field's old and new value.
pub async fn update(
    store: &Store,
    project: &Project,
    actor: &Actor,
    key: &str,
    patch: ItemPatch,
) -> Result<Item, StoreError> {
    let title = patch.title.as_deref().map(validate_title).transpose()?;
    if let Some(d) = &patch.description {
        validate_description(d)?;
    }
    let estimate = patch.estimate.map(validate_estimate).transpose()?;
    let labels = patch.labels.as_deref().map(validate_labels).transpose()?;
    let due_at = match &patch.due_at {
        Some(v) => Some(parse_time("due_at", v.as_deref())?),
        None => None,
    };
    let target_at = match &patch.target_at {
        Some(v) => Some(parse_time("target_at", v.as_deref())?),
        None => None,
    };

    let mut tx = store.begin().await?;
    let cur = get_or_404(&mut tx, project.id, key).await?;
    if let Some(v) = patch.version
        && v != cur.version
    {
        return Err(OuroError::stale_version("item", cur.version).into());
    }
    let assignee_id = match &patch.assignee {
        Some(Some(name)) => Some(assignable(&mut tx, project.id, name).await?),
        Some(None) => None,
        None => cur.assignee_id,
    };
    let kind = cur.kind.unwrap_or(Kind::Task);
    let (parent_id, epic_id, parent_key) = match &patch.parent {
        Some(Some(k)) => {
            let (p, epic) = resolve_parent(&mut tx, project.id, kind, k).await?;
            (Some(p.id), epic, Some(p.key))
        }
        Some(None) => (None, None, None),
        None => (cur.parent_id, cur.epic_id, cur.parent.clone()),
    };

    let title = title.unwrap_or(cur.title.clone());
    let description = patch.description.unwrap_or(cur.description.clone());
    let priority = patch.priority.unwrap_or(cur.priority);
    let estimate = estimate.unwrap_or(cur.estimate);
    let due_at = due_at.unwrap_or(cur.due_at);
    let target_at = target_at.unwrap_or(cur.target_at);
    let labels = labels.unwrap_or(cur.labels.clone());
    let assignee = match &patch.assignee {
        Some(a) => a.clone(),
        None => cur.assignee.clone(),
    };

    let mut changes = Map::new();
    change(&mut changes, "title", &cur.title, &title);
    change(&mut changes, "description", &cur.description, &description);
    change(&mut changes, "priority", &cur.priority, &priority);
    change(&mut changes, "estimate", &cur.estimate, &estimate);
    change(&mut changes, "assignee", &cur.assignee, &assignee);
    change(&mut changes, "parent", &cur.parent, &parent_key);
    change(&mut changes, "labels", &cur.labels, &labels);
    let rfc = |v: Option<i64>| v.map(ouro_core::time::rfc3339);
    change(&mut changes, "due_at", &rfc(cur.due_at), &rfc(due_at));
    change(
        &mut changes,
        "target_at",
        &rfc(cur.target_at),
        &rfc(target_at),
    );
    let field_values = match &patch.fields {
        Some(f) => crate::fields::validate(&mut tx, project.id, f).await?,
        None => Vec::new(),
    };
    for (f, v) in &field_values {
        let old = cur.fields.get(&f.name).cloned();
        change(&mut changes, &format!("fields.{}", f.name), &old, v);
    }
    if changes.is_empty() {
        return Ok(cur);
    }
    q(
        "UPDATE items SET title = $1, description = $2, priority = $3, estimate = $4, \
       assignee_id = $5, parent_id = $6, epic_id = $7, due_at = $8, target_at = $9, \
       updated_at = $10, version = version + 1 WHERE id = $11 AND version = $12 RETURNING id",
    )
    .bind(&title)
    .bind(&description)
    .bind(priority.as_str())
    .bind(estimate)
    .bind(assignee_id)
    .bind(parent_id)
    .bind(epic_id)
    .bind(due_at)
    .bind(target_at)
    .bind(ouro_core::time::now_ms())
    .bind(cur.id)
    .bind(cur.version)
    .fetch_optional(&mut tx)
    .await?
    .ok_or_else(|| OuroError::stale_version("item", cur.version + 1))?;
    if epic_id != cur.epic_id && kind != Kind::Epic {
        // The epic is derived from the parent chain, which is at most two levels below a
        // feature (story, then task or bug), so children and grandchildren follow here.
        q("UPDATE items SET epic_id = $1 WHERE parent_id = $2 \
           OR parent_id IN (SELECT id FROM items WHERE parent_id = $2)")
        .bind(epic_id)
        .bind(cur.id)
        .execute(&mut tx)
        .await?;
    }
    if labels != cur.labels {
        set_labels(&mut tx, cur.id, &labels).await?;
    }
    crate::fields::set(&mut tx, cur.id, &field_values).await?;
    let item = get_or_404(&mut tx, project.id, &cur.key).await?;
    tx.append(
        NewEvent::new(
            ev::ITEM_UPDATED,
            actor,
            cur.id,
            json!({"key": cur.key, "changes": Value::Object(changes)}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await?;
    Ok(item)
}

/// Moves an item to the state named `to` (case-insensitive). A move the workflow does not allow
/// is refused with `item.invalid_transition` and `details.allowed`, the states it does allow.
pub async fn transition(
    store: &Store,
    project: &Project,
    actor: &Actor,
    key: &str,
    to: &str,
    expected_version: Option<i64>,
) -> Result<Item, StoreError> {
    let mut tx = store.begin().await?;
    let item = transition_in(&mut tx, project, actor, key, to, expected_version).await?;
    tx.commit().await?;
    Ok(item)
}

/// [`transition`] inside the caller's transaction.
pub async fn transition_in(
    tx: &mut Tx,
    project: &Project,
    actor: &Actor,
    key: &str,
    to: &str,
    expected_version: Option<i64>,
) -> Result<Item, StoreError> {
    let cur = get_or_404(&mut *tx, project.id, key).await?;
    if let Some(v) = expected_version
        && v != cur.version
    {
        return Err(OuroError::stale_version("item", cur.version).into());
    }
    let ty = workflow::item_type(&mut *tx, project.id, &cur.item_type)
        .await?
        .ok_or_else(|| StoreError::Decode(format!("item type {:?} is gone", cur.item_type)))?;
    let allowed = workflow::allowed_targets(&mut *tx, project.id, &ty.workflow, &cur.state).await?;
    let Some(target) = allowed
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(to.trim()))
        .cloned()
    else {
        let names: Vec<&str> = allowed.iter().map(|s| s.name.as_str()).collect();
        return Err(OuroError::new(
            ErrorCode::InvalidTransition,
            format!(
                "{} cannot move from {:?} to {to:?}; allowed: {}",
                cur.key,
                cur.state,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )
        .with_details(json!({"from": cur.state, "to": to, "allowed": names}))
        .into());
    };
    q(
        "UPDATE items SET state = $1, state_category = $2, updated_at = $3, version = version + 1 \
       WHERE id = $4 AND version = $5 RETURNING id",
    )
    .bind(&target.name)
    .bind(target.category.as_str())
    .bind(ouro_core::time::now_ms())
    .bind(cur.id)
    .bind(cur.version)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| OuroError::stale_version("item", cur.version + 1))?;
    let item = get_or_404(&mut *tx, project.id, &cur.key).await?;
    tx.append(
        NewEvent::new(
            ev::ITEM_TRANSITIONED,
            actor,
            cur.id,
            json!({
                "key": cur.key,
                "from": cur.state, "to": target.name,
                "from_category": cur.state_category, "to_category": target.category,
            }),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    Ok(item)
}

/// Deletes an item with its comments, labels, watchers and links; children lose their parent.
/// The key is never handed out again (numbers come from the project counter) and the ledger
/// keeps the item's history.
pub async fn delete(
    store: &Store,
    project: &Project,
    actor: &Actor,
    key: &str,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let cur = get_or_404(&mut tx, project.id, key).await?;
    // Children of the deleted item keep their own epic unless it was this item.
    q("UPDATE items SET epic_id = NULL WHERE epic_id = $1")
        .bind(cur.id)
        .execute(&mut tx)
        .await?;
    q("DELETE FROM items WHERE id = $1")
        .bind(cur.id)
        .execute(&mut tx)
        .await?;
    tx.append(
        NewEvent::new(
            ev::ITEM_DELETED,
            actor,
            cur.id,
            json!({"key": cur.key, "type": cur.item_type, "title": cur.title}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    tx.commit().await
}

/// The most items one bulk edit may change.
pub const MAX_BULK: usize = 100;

/// One change applied to several items, all or nothing.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkEdit {
    /// Item keys, 1 to 100 (duplicates count once).
    pub keys: Vec<String>,
    pub set: BulkSet,
}

/// What to change; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSet {
    /// Target state name (case-insensitive); items already in it stay.
    pub state: Option<String>,
    /// A project member's user name; `null` unassigns.
    #[serde(default, deserialize_with = "nullable")]
    pub assignee: Option<Option<String>>,
    #[serde(default)]
    pub add_labels: Vec<String>,
    #[serde(default)]
    pub remove_labels: Vec<String>,
    /// A sprint name (case-insensitive) to plan the items into; `null` moves them to the backlog.
    #[serde(default, deserialize_with = "nullable")]
    pub sprint: Option<Option<String>>,
}

/// Applies `edit` to every listed item in one transaction. Every item is checked first; if any
/// cannot take the change (unknown key, a transition its workflow forbids, too many labels),
/// nothing is written and the 422 lists each failing item in `details.items`. Each changed item
/// gets the same events a single update or transition would write.
pub async fn bulk_edit(
    store: &Store,
    project: &Project,
    actor: &Actor,
    edit: BulkEdit,
) -> Result<Vec<Item>, StoreError> {
    let mut keys: Vec<String> = Vec::new();
    for k in &edit.keys {
        let k = k.trim().to_ascii_uppercase();
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    if keys.is_empty() || keys.len() > MAX_BULK {
        return Err(OuroError::field("keys", format!("give 1 to {MAX_BULK} item keys")).into());
    }
    let add = validate_labels(&edit.set.add_labels)?;
    let remove = validate_labels(&edit.set.remove_labels)?;
    if let Some(s) = &edit.set.state {
        no_nul("state", s)?;
    }
    let mut tx = store.begin().await?;
    let assignee_id = match &edit.set.assignee {
        Some(Some(name)) => Some(Some(assignable(&mut tx, project.id, name).await?)),
        Some(None) => Some(None),
        None => None,
    };
    let sprint: Option<Option<(i64, String)>> = match &edit.set.sprint {
        Some(Some(name)) => {
            no_nul("sprint", name)?;
            let row = q(
                "SELECT id, name, state FROM plan_sprints WHERE project_id = $1 \
                         AND LOWER(name) = LOWER($2)",
            )
            .bind(project.id)
            .bind(name.trim())
            .fetch_optional(&mut tx)
            .await?
            .ok_or_else(|| OuroError::field("sprint", format!("no sprint named {name:?}")))?;
            if row.text("state")? == "completed" {
                return Err(OuroError::field("sprint", "a completed sprint takes no items").into());
            }
            Some(Some((row.i64("id")?, row.text("name")?)))
        }
        Some(None) => Some(None),
        None => None,
    };
    // Check every item before writing anything, so the answer lists all problems at once.
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for key in &keys {
        let Some(cur) = get(&mut tx, project.id, key).await? else {
            errors.push(json!({"key": key, "code": ErrorCode::ItemNotFound.as_str(),
                               "message": "no such item in this project"}));
            continue;
        };
        let mut target = None;
        if let Some(to) = edit.set.state.as_deref().map(str::trim)
            && !cur.state.eq_ignore_ascii_case(to)
        {
            let ty = workflow::item_type(&mut tx, project.id, &cur.item_type)
                .await?
                .ok_or_else(|| {
                    StoreError::Decode(format!("item type {:?} is gone", cur.item_type))
                })?;
            let allowed =
                workflow::allowed_targets(&mut tx, project.id, &ty.workflow, &cur.state).await?;
            match allowed.iter().find(|s| s.name.eq_ignore_ascii_case(to)) {
                Some(t) => target = Some(t.clone()),
                None => {
                    let names: Vec<&str> = allowed.iter().map(|s| s.name.as_str()).collect();
                    errors.push(json!({
                        "key": cur.key, "code": ErrorCode::InvalidTransition.as_str(),
                        "message": format!("cannot move from {:?} to {to:?}", cur.state),
                        "from": cur.state, "allowed": names,
                    }));
                    continue;
                }
            }
        }
        let labels: Vec<String> = cur
            .labels
            .iter()
            .chain(add.iter())
            .filter(|l| !remove.contains(l))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if labels.len() > MAX_LABELS {
            errors.push(
                json!({"key": cur.key, "code": ErrorCode::ValidationFailed.as_str(),
                               "message": format!("an item can have at most {MAX_LABELS} labels")}),
            );
            continue;
        }
        plans.push((cur, target, labels));
    }
    if !errors.is_empty() {
        return Err(OuroError::new(
            ErrorCode::ValidationFailed,
            format!(
                "{} of {} items cannot take this change; nothing was changed",
                errors.len(),
                keys.len()
            ),
        )
        .with_details(json!({"items": errors}))
        .into());
    }
    let now = ouro_core::time::now_ms();
    let mut out = Vec::new();
    for (cur, target, labels) in plans {
        let new_assignee = assignee_id.unwrap_or(cur.assignee_id);
        let (state, category) = match &target {
            Some(t) => (t.name.clone(), t.category),
            None => (cur.state.clone(), cur.state_category),
        };
        let new_sprint = match &sprint {
            Some(s) => s.as_ref().map(|(id, _)| *id),
            None => cur.sprint_id,
        };
        if target.is_none()
            && new_assignee == cur.assignee_id
            && labels == cur.labels
            && new_sprint == cur.sprint_id
        {
            out.push(cur);
            continue;
        }
        q(
            "UPDATE items SET state = $1, state_category = $2, assignee_id = $3, updated_at = $4, \
           sprint_id = $6, version = version + 1 WHERE id = $5",
        )
        .bind(&state)
        .bind(category.as_str())
        .bind(new_assignee)
        .bind(now)
        .bind(cur.id)
        .bind(new_sprint)
        .execute(&mut tx)
        .await?;
        if labels != cur.labels {
            set_labels(&mut tx, cur.id, &labels).await?;
        }
        let item = get_or_404(&mut tx, project.id, &cur.key).await?;
        if let Some(t) = &target {
            tx.append(
                NewEvent::new(
                    ev::ITEM_TRANSITIONED,
                    actor,
                    cur.id,
                    json!({
                        "key": cur.key, "from": cur.state, "to": t.name,
                        "from_category": cur.state_category, "to_category": t.category,
                    }),
                )
                .in_project(project.id, &project.slug),
            )
            .await?;
        }
        let mut changes = Map::new();
        change(&mut changes, "assignee", &cur.assignee, &item.assignee);
        change(&mut changes, "labels", &cur.labels, &item.labels);
        change(&mut changes, "sprint", &cur.sprint, &item.sprint);
        if !changes.is_empty() {
            let mut payload = json!({"key": cur.key, "changes": Value::Object(changes)});
            if new_sprint != cur.sprint_id {
                // What sprint reports replay (see crate::sprints).
                payload["sprint_id"] = json!(new_sprint);
                payload["from_sprint_id"] = json!(cur.sprint_id);
                payload["estimate"] = json!(item.estimate);
                payload["done"] = json!(item.state_category == Category::Done);
            }
            tx.append(
                NewEvent::new(ev::ITEM_UPDATED, actor, cur.id, payload)
                    .in_project(project.id, &project.slug),
            )
            .await?;
        }
        out.push(item);
    }
    tx.commit().await?;
    Ok(out)
}

fn comment_from(r: &Row) -> Result<Comment, StoreError> {
    Ok(Comment {
        id: r.i64("id")?,
        author: r.opt_text("author")?,
        body: r.text("body")?,
        created_at: r.i64("created_at")?,
    })
}

/// Adds a comment (Markdown); the author starts watching the item.
pub async fn add_comment(
    store: &Store,
    project: &Project,
    actor: &Actor,
    key: &str,
    body: &str,
) -> Result<Comment, StoreError> {
    let mut tx = store.begin().await?;
    let comment = add_comment_in(&mut tx, project, actor, key, body).await?;
    tx.commit().await?;
    Ok(comment)
}

/// [`add_comment`] inside the caller's transaction.
pub async fn add_comment_in(
    tx: &mut Tx,
    project: &Project,
    actor: &Actor,
    key: &str,
    body: &str,
) -> Result<Comment, StoreError> {
    no_nul("body", body)?;
    if body.trim().is_empty() || body.chars().count() > MAX_COMMENT {
        return Err(OuroError::field(
            "body",
            format!("a comment must have 1 to {MAX_COMMENT} characters"),
        )
        .into());
    }
    let item = get_or_404(&mut *tx, project.id, key).await?;
    let row = q(
        "INSERT INTO item_comments (item_id, author_id, body, created_at) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(item.id)
    .bind(actor.user_id())
    .bind(body)
    .bind(ouro_core::time::now_ms())
    .fetch_one(&mut *tx)
    .await?;
    let id = row.i64("id")?;
    if let Some(uid) = actor.user_id() {
        add_watcher(&mut *tx, item.id, uid).await?;
    }
    let comment = q("SELECT c.*, u.name AS author FROM item_comments c \
                     LEFT JOIN users u ON u.id = c.author_id WHERE c.id = $1")
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .and_then(|r| comment_from(&r))?;
    tx.append(
        NewEvent::new(
            ev::ITEM_COMMENTED,
            actor,
            item.id,
            json!({"key": item.key, "comment_id": id, "body": body}),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    Ok(comment)
}

/// Comments of an item, oldest first, one page at a time (the cursor is the comment id).
pub async fn comments(
    ex: &mut impl Executor,
    project_id: i64,
    key: &str,
    page: PageReq,
) -> Result<Page<Comment>, StoreError> {
    let item = get_or_404(ex, project_id, key).await?;
    let rows = q("SELECT c.*, u.name AS author FROM item_comments c \
                  LEFT JOIN users u ON u.id = c.author_id \
                  WHERE c.item_id = $1 AND c.id > $2 ORDER BY c.id LIMIT $3")
    .bind(item.id)
    .bind(page.after)
    .bind(page.limit + 1)
    .fetch_all(ex)
    .await?;
    let list = rows
        .iter()
        .map(comment_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(list, |c| c.id))
}

async fn watchers_of(
    ex: &mut impl Executor,
    item_id: i64,
    user_id: i64,
) -> Result<Watchers, StoreError> {
    let rows = q(
        "SELECT u.id, u.name FROM item_watchers w JOIN users u ON u.id = w.user_id \
                  WHERE w.item_id = $1 ORDER BY u.name",
    )
    .bind(item_id)
    .fetch_all(ex)
    .await?;
    let mut watching = false;
    let mut watchers = Vec::new();
    for r in &rows {
        watching |= r.i64("id")? == user_id;
        watchers.push(r.text("name")?);
    }
    Ok(Watchers { watching, watchers })
}

/// Starts (`on`) or stops watching an item. Watching is a personal subscription, not a change
/// to the item, so it records no event and does not bump the item's version.
pub async fn set_watching(
    store: &Store,
    project_id: i64,
    user_id: i64,
    key: &str,
    on: bool,
) -> Result<Watchers, StoreError> {
    let mut tx = store.begin().await?;
    let item = get_or_404(&mut tx, project_id, key).await?;
    if on {
        add_watcher(&mut tx, item.id, user_id).await?;
    } else {
        q("DELETE FROM item_watchers WHERE item_id = $1 AND user_id = $2")
            .bind(item.id)
            .bind(user_id)
            .execute(&mut tx)
            .await?;
    }
    let w = watchers_of(&mut tx, item.id, user_id).await?;
    tx.commit().await?;
    Ok(w)
}

/// Who watches an item, and whether `user_id` does.
pub async fn watchers(
    ex: &mut impl Executor,
    project_id: i64,
    user_id: i64,
    key: &str,
) -> Result<Watchers, StoreError> {
    let item = get_or_404(ex, project_id, key).await?;
    watchers_of(ex, item.id, user_id).await
}

/// The item's events from the ledger, oldest first (the newest 1,000).
pub async fn history(
    ex: &mut impl Executor,
    project_id: i64,
    key: &str,
) -> Result<Vec<Event>, StoreError> {
    let item = get_or_404(ex, project_id, key).await?;
    let events = ouro_store::events::for_subject(ex, "item", &item.id.to_string(), 1_000).await?;
    // Subjects are per type, not per project; the project filter is a guard, not a need today.
    Ok(events
        .into_iter()
        .filter(|e| e.project_id == Some(project_id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes() {
        assert_eq!(key_prefix("demo"), "DEMO");
        assert_eq!(key_prefix("payments-api"), "PAYMENTSAP");
        assert_eq!(key_prefix("a-b-c"), "ABC");
    }

    #[test]
    fn old_padded_ranks_work_as_bounds() {
        // `000000000010` ends in 0, which rank refuses as is.
        let r = rank_between(Some("000000000010"), Some("000000000011")).unwrap();
        assert!("000000000010" < r.as_str() && r.as_str() < "000000000011");
        let r = rank_between(Some("000000000020"), None).unwrap();
        assert!(r.as_str() > "000000000020");
        let r = rank_between(None, Some("000000000001")).unwrap();
        assert!(r.as_str() < "000000000001");
    }

    #[test]
    fn labels_are_normalised_and_checked() {
        assert_eq!(
            validate_labels(&[" ui ".into(), "api".into(), "ui".into()]).unwrap(),
            vec!["api", "ui"]
        );
        assert!(validate_labels(&["two words".into()]).is_err());
        assert!(validate_labels(&["".into()]).is_err());
    }

    #[test]
    fn times_parse_as_rfc3339_or_dates() {
        assert_eq!(
            parse_time("due_at", Some("1970-01-02")).unwrap(),
            Some(86_400_000)
        );
        assert_eq!(
            parse_time("due_at", Some("1970-01-01T00:00:01Z")).unwrap(),
            Some(1_000)
        );
        assert!(parse_time("due_at", Some("tomorrow")).is_err());
        assert_eq!(parse_time("due_at", None).unwrap(), None);
    }
}
