//! Mirrors: repositories that follow an external URL. A mirror is created like an import (one
//! `git clone --bare`), then fetched on its interval by the server's scheduler ([`due`] +
//! [`sync`]) and on demand (the API's sync route). A fetch runs under the repository's push
//! lock, so the refs before and after belong to it, and its moved refs get `code.pushed`
//! events like a push (actor `system:mirror`). Pushing to a mirror is refused: it would be
//! overwritten by the next fetch.
//!
//! The source URL may carry credentials, so it is stored sealed (`code_mirrors.url_enc`) and
//! given to git for each fetch; the repository's config never holds it, and messages mask it.

use std::path::Path;
use std::time::Instant;

use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_store::crypto::SecretBox;
use ouro_store::{Executor, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::git;
use crate::repos::{Repo, RepoKind};

/// The default and the bounds of a mirror's fetch interval, in minutes.
pub const DEFAULT_INTERVAL_MINUTES: u32 = 60;
pub const MIN_INTERVAL_MINUTES: u32 = 1;
pub const MAX_INTERVAL_MINUTES: u32 = 7 * 24 * 60;

/// The actor of scheduled and on-demand fetches in the ledger.
pub const ACTOR: Actor = Actor::System("mirror");

/// A mirror's schedule and the outcome of its last fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct MirrorStatus {
    /// Minutes between scheduled fetches.
    pub interval_minutes: i64,
    /// When the scheduler fetches next.
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub next_sync_at: i64,
    /// When the last fetch finished (none yet: never fetched since the clone).
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub last_synced_at: Option<i64>,
    /// `ok` or `failed`.
    pub last_status: Option<String>,
    /// git's message when the last fetch failed (passwords masked).
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i64>,
    /// How many refs the last fetch moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refs_moved: Option<usize>,
}

/// Changing a mirror's schedule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorPatch {
    /// Minutes between scheduled fetches (1 to 10080).
    pub interval_minutes: u32,
}

pub fn validate_interval(minutes: u32) -> Result<u32, OuroError> {
    if !(MIN_INTERVAL_MINUTES..=MAX_INTERVAL_MINUTES).contains(&minutes) {
        return Err(OuroError::field(
            "interval_minutes",
            format!(
                "the interval must be {MIN_INTERVAL_MINUTES} to {MAX_INTERVAL_MINUTES} minutes"
            ),
        ));
    }
    Ok(minutes)
}

fn not_a_mirror(name: &str) -> OuroError {
    OuroError::new(
        ErrorCode::NotAMirror,
        format!("repository {name:?} is not a mirror; only mirrors fetch from a source"),
    )
}

/// The refusal a push to a mirror gets.
pub fn read_only(repo: &Repo) -> OuroError {
    OuroError::new(
        ErrorCode::MirrorReadOnly,
        format!(
            "{:?} mirrors {}; it only changes by fetching from there. Push to the source instead.",
            repo.name,
            repo.source_url.as_deref().unwrap_or("its source")
        ),
    )
}

fn from_row(r: &Row) -> Result<MirrorStatus, StoreError> {
    Ok(MirrorStatus {
        interval_minutes: r.i64("interval_secs")? / 60,
        next_sync_at: r.i64("next_sync_at")?,
        last_synced_at: r.opt_i64("last_synced_at")?,
        last_status: r.opt_text("last_status")?,
        last_error: r.opt_text("last_error")?,
        last_duration_ms: r.opt_i64("last_duration_ms")?,
        refs_moved: None,
    })
}

/// Inserts the mirror row of a new repository (inside the creating transaction).
pub async fn insert(
    ex: &mut impl Executor,
    secrets: &SecretBox,
    repo_id: i64,
    url: &str,
    interval_minutes: u32,
    now: i64,
) -> Result<(), StoreError> {
    let secs = i64::from(interval_minutes) * 60;
    q("INSERT INTO code_mirrors (repo_id, url_enc, interval_secs, next_sync_at) VALUES ($1, $2, $3, $4)")
        .bind(repo_id)
        .bind(secrets.seal(url))
        .bind(secs)
        .bind(now + secs * 1000)
        .execute(ex)
        .await?;
    Ok(())
}

/// The mirror state of a repository (`None` when it is not a mirror).
pub async fn status(
    ex: &mut impl Executor,
    repo_id: i64,
) -> Result<Option<MirrorStatus>, StoreError> {
    q("SELECT * FROM code_mirrors WHERE repo_id = $1")
        .bind(repo_id)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Changes the interval; the next fetch is due one interval after the last one.
pub async fn set_interval(
    store: &Store,
    repo: &Repo,
    patch: &MirrorPatch,
) -> Result<MirrorStatus, StoreError> {
    let minutes = validate_interval(patch.interval_minutes)?;
    let secs = i64::from(minutes) * 60;
    let mut tx = store.begin().await?;
    let current = status(&mut tx, repo.id)
        .await?
        .ok_or_else(|| not_a_mirror(&repo.name))?;
    let base = current
        .last_synced_at
        .unwrap_or(current.next_sync_at - current.interval_minutes * 60_000);
    q("UPDATE code_mirrors SET interval_secs = $1, next_sync_at = $2 WHERE repo_id = $3")
        .bind(secs)
        .bind(base + secs * 1000)
        .bind(repo.id)
        .execute(&mut tx)
        .await?;
    let out = status(&mut tx, repo.id).await?.expect("row read above");
    tx.commit().await?;
    Ok(out)
}

/// The mirrors whose next fetch is due at `now` (oldest first, at most `limit`), with their
/// project slugs.
pub async fn due(
    ex: &mut impl Executor,
    now: i64,
    limit: i64,
) -> Result<Vec<(Repo, String)>, StoreError> {
    let rows = q("SELECT r.*, p.slug AS project_slug FROM code_mirrors m \
         JOIN code_repos r ON r.id = m.repo_id JOIN projects p ON p.id = r.project_id \
         WHERE m.next_sync_at <= $1 ORDER BY m.next_sync_at LIMIT $2")
    .bind(now)
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| Ok((crate::repos::from_row(r)?, r.text("project_slug")?)))
        .collect()
}

/// Fetches a mirror now: refs before, `git fetch --prune`, refs after, one `code.pushed` per
/// moved ref, and the outcome stored. A failed fetch is an outcome (`last_status: failed`),
/// not an error; the next one is scheduled either way.
pub async fn sync(
    store: &Store,
    root: &Path,
    secrets: &SecretBox,
    repo: &Repo,
    project_slug: &str,
) -> Result<MirrorStatus, StoreError> {
    if repo.kind != RepoKind::Mirror {
        return Err(not_a_mirror(&repo.name).into());
    }
    let url_enc = q("SELECT url_enc FROM code_mirrors WHERE repo_id = $1")
        .bind(repo.id)
        .fetch_optional(&mut store.read().await?)
        .await?
        .ok_or_else(|| not_a_mirror(&repo.name))?
        .text("url_enc")?;
    let started = Instant::now();
    let dir = repo.dir(root);
    let lock = crate::push::lock(&dir);
    let _guard = lock.lock().await;
    let outcome: Result<usize, String> = match secrets.open(&url_enc) {
        None => Err(
            "the stored source URL cannot be decrypted with this instance's secret key; \
             set the URL again"
                .to_string(),
        ),
        Some(url) => {
            async {
                let before = git::refs(&dir).await.map_err(|e| e.to_string())?;
                git::fetch_mirror(&dir, &url).await.map_err(|e| e.message)?;
                let after = git::refs(&dir).await.map_err(|e| e.to_string())?;
                crate::push::record(store, &dir, repo, project_slug, &ACTOR, &before, &after)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await
        }
    };
    let now = ouro_core::time::now_ms();
    let elapsed = started.elapsed().as_millis() as i64;
    let (state, error, moved) = match &outcome {
        Ok(n) => ("ok", None, Some(*n)),
        Err(e) => {
            tracing::warn!(repo = repo.id, error = %e, "mirror fetch failed");
            ("failed", Some(e.clone()), None)
        }
    };
    let mut tx = store.begin().await?;
    q(
        "UPDATE code_mirrors SET last_synced_at = $1, last_status = $2, last_error = $3, \
       last_duration_ms = $4, next_sync_at = $1 + interval_secs * 1000 WHERE repo_id = $5",
    )
    .bind(now)
    .bind(state)
    .bind(error)
    .bind(elapsed)
    .bind(repo.id)
    .execute(&mut tx)
    .await?;
    let mut out = status(&mut tx, repo.id)
        .await?
        .ok_or_else(|| not_a_mirror(&repo.name))?;
    tx.commit().await?;
    out.refs_moved = moved;
    Ok(out)
}

/// One pass of the scheduler: fetches every due mirror, one after another. Returns how many
/// were fetched.
pub async fn sync_due(
    store: &Store,
    root: &Path,
    secrets: &SecretBox,
) -> Result<usize, StoreError> {
    let due = due(&mut store.read().await?, ouro_core::time::now_ms(), 20).await?;
    let n = due.len();
    for (repo, slug) in due {
        if let Err(e) = sync(store, root, secrets, &repo, &slug).await {
            tracing::warn!(repo = repo.id, error = %e, "mirror sync failed");
        }
    }
    Ok(n)
}

/// The payload fields `repo.created` gets for a mirror.
pub fn created_payload(interval_minutes: u32) -> serde_json::Value {
    json!({"interval_minutes": interval_minutes})
}
