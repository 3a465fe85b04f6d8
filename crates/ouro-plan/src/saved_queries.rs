//! Saved item queries, per user (personal) and per project (shared).
//!
//! A personal query is a user preference, like watching an item; a shared one is project state.
//! Neither records a ledger event: the kinds table has no fitting kind, and saved views can get
//! their own kinds later. Names are unique among a user's personal queries and among a project's
//! shared ones (a unique expression index over `COALESCE(owner_user_id, 0)` backs the check).

use ouro_core::{ErrorCode, OuroError};
use ouro_store::{Executor, Row, Store, StoreError, on_unique, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::items::query_error;

pub const MAX_NAME: usize = 100;
pub const MAX_QUERY: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SavedQuery {
    pub id: i64,
    pub name: String,
    /// The item query language text (docs/query-language.md).
    pub query: String,
    /// True when the query is shared with the project; false when it is the caller's own.
    pub shared: bool,
    pub position: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

/// Who acts: the user, and whether they may manage the project's shared queries (maintainers).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: i64,
    pub can_share: bool,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct SavedQueryPatch {
    pub name: Option<String>,
    pub query: Option<String>,
    /// The version read; a stale one is `409 conflict.stale_version`.
    pub version: Option<i64>,
}

fn invalid(field: &str, msg: &str) -> OuroError {
    OuroError::new(ErrorCode::ValidationFailed, msg.to_string())
        .with_details(json!({"field": field}))
}

fn validate_name(name: &str) -> Result<String, OuroError> {
    let n = name.trim();
    let len = n.chars().count();
    if len == 0 || len > MAX_NAME {
        return Err(invalid("name", "the name must be 1 to 100 characters"));
    }
    Ok(n.to_string())
}

fn validate_query(query: &str) -> Result<String, OuroError> {
    if query.chars().count() > MAX_QUERY {
        return Err(invalid(
            "query",
            "the query must be at most 2000 characters",
        ));
    }
    crate::query::parse(query).map_err(|e| query_error(query, &e))?;
    Ok(query.to_string())
}

pub fn not_found(id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::SavedQueryNotFound,
        format!("saved query {id} does not exist in this project"),
    )
}

fn taken(name: &str) -> OuroError {
    OuroError::new(
        ErrorCode::SavedQueryNameTaken,
        format!("a saved query named {name:?} already exists"),
    )
}

fn from_row(r: &Row) -> Result<SavedQuery, StoreError> {
    Ok(SavedQuery {
        id: r.i64("id")?,
        name: r.text("name")?,
        query: r.text("query")?,
        shared: r.opt_i64("owner_user_id")?.is_none(),
        position: r.i64("position")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
        version: r.i64("version")?,
    })
}

/// The user's personal queries and the project's shared ones: shared first, then by position.
pub async fn list(
    ex: &mut impl Executor,
    project_id: i64,
    user_id: i64,
) -> Result<Vec<SavedQuery>, StoreError> {
    let rows = q("SELECT * FROM saved_queries WHERE project_id = $1 \
                  AND (owner_user_id IS NULL OR owner_user_id = $2) \
                  ORDER BY owner_user_id IS NOT NULL, position, id")
    .bind(project_id)
    .bind(user_id)
    .fetch_all(ex)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Saves a query: personal, or shared when `shared` (maintainers only, else 403).
pub async fn create(
    store: &Store,
    project_id: i64,
    caller: Caller,
    name: &str,
    query: &str,
    shared: bool,
) -> Result<SavedQuery, StoreError> {
    let name = validate_name(name)?;
    let query = validate_query(query)?;
    if shared && !caller.can_share {
        return Err(forbidden().into());
    }
    let owner = (!shared).then_some(caller.user_id);
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let position = q(
        "SELECT COALESCE(MAX(position), 0) + 1 AS p FROM saved_queries \
                      WHERE project_id = $1 AND COALESCE(owner_user_id, 0) = $2",
    )
    .bind(project_id)
    .bind(owner.unwrap_or(0))
    .fetch_one(&mut tx)
    .await?
    .i64("p")?;
    let row = on_unique(
        q(
            "INSERT INTO saved_queries (project_id, owner_user_id, name, query, position, \
           created_by, created_at, updated_at, version) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 1) RETURNING *",
        )
        .bind(project_id)
        .bind(owner)
        .bind(&name)
        .bind(&query)
        .bind(position)
        .bind(caller.user_id)
        .bind(now)
        .fetch_one(&mut tx)
        .await,
        || taken(&name),
    )?;
    let saved = from_row(&row)?;
    tx.commit().await?;
    Ok(saved)
}

fn forbidden() -> OuroError {
    OuroError::new(
        ErrorCode::Forbidden,
        "only maintainers may manage the project's shared queries",
    )
}

/// The row if the caller may change it: someone else's personal query is 404 (no leak), a
/// shared one needs a maintainer (403).
async fn writable(
    ex: &mut impl Executor,
    project_id: i64,
    caller: Caller,
    id: i64,
) -> Result<SavedQuery, StoreError> {
    let row = q(
        "SELECT * FROM saved_queries WHERE id = $1 AND project_id = $2 \
                 AND (owner_user_id IS NULL OR owner_user_id = $3)",
    )
    .bind(id)
    .bind(project_id)
    .bind(caller.user_id)
    .fetch_optional(ex)
    .await?
    .ok_or_else(|| not_found(id))?;
    let saved = from_row(&row)?;
    if saved.shared && !caller.can_share {
        return Err(forbidden().into());
    }
    Ok(saved)
}

/// Renames or rewrites a saved query, if still at `patch.version` (when given).
pub async fn update(
    store: &Store,
    project_id: i64,
    caller: Caller,
    id: i64,
    patch: SavedQueryPatch,
) -> Result<SavedQuery, StoreError> {
    let name = patch.name.as_deref().map(validate_name).transpose()?;
    let query = patch.query.as_deref().map(validate_query).transpose()?;
    let mut tx = store.begin().await?;
    let cur = writable(&mut tx, project_id, caller, id).await?;
    if let Some(v) = patch.version
        && v != cur.version
    {
        return Err(OuroError::stale_version("saved query", cur.version).into());
    }
    let name = name.unwrap_or(cur.name.clone());
    let query = query.unwrap_or(cur.query.clone());
    if name == cur.name && query == cur.query {
        return Ok(cur);
    }
    let row = on_unique(
        q(
            "UPDATE saved_queries SET name = $1, query = $2, updated_at = $3, \
           version = version + 1 WHERE id = $4 AND version = $5 RETURNING *",
        )
        .bind(&name)
        .bind(&query)
        .bind(ouro_core::time::now_ms())
        .bind(cur.id)
        .bind(cur.version)
        .fetch_optional(&mut tx)
        .await,
        || taken(&name),
    )?
    .ok_or_else(|| OuroError::stale_version("saved query", cur.version + 1))?;
    let saved = from_row(&row)?;
    tx.commit().await?;
    Ok(saved)
}

/// Deletes a saved query the caller may change.
pub async fn delete(
    store: &Store,
    project_id: i64,
    caller: Caller,
    id: i64,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let cur = writable(&mut tx, project_id, caller, id).await?;
    q("DELETE FROM saved_queries WHERE id = $1")
        .bind(cur.id)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
