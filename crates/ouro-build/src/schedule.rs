//! Scheduled runs: `on.schedule` cron entries of the pipeline files on a repository's default
//! branch.
//!
//! - `build_schedules` holds one row per (repository, file, cron entry) with the next time it is
//!   due (UTC). [`sync`] recomputes the rows from the default branch head; the
//!   [`ScheduleSync`] consumer calls it when a push moves the default branch. An entry whose
//!   cron is unchanged keeps its `next_at`.
//! - [`tick`] (the server calls it every few seconds, tests with an injected clock) creates a
//!   run with trigger `schedule` for every due entry, at the default branch head, for that file
//!   only, with `source_key` = `schedule:<id>:<due time>`: two tickers or a restart never
//!   create the same run twice. The entry's next time is then computed from *now*, so after
//!   downtime a missed schedule runs once, not once per missed occurrence.
//! - Cron expressions have 5 fields (or 6 with seconds first) and support `L`, `W` and `#`
//!   (croner); they are evaluated in UTC.

use std::path::Path;

use chrono::{DateTime, Utc};
use ouro_code::repos::Repo;
use ouro_core::events as ev;
use ouro_core::{Actor, OuroError};
use ouro_store::{Store, StoreError, q};

use crate::runs::{self, Run, TriggerInfo};

/// At most this many due entries are handled per tick.
pub const MAX_PER_TICK: i64 = 100;

/// A schedule row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScheduleRow {
    pub id: i64,
    pub repo_id: i64,
    pub file: String,
    pub entry: i64,
    pub cron: String,
    /// Ms since the epoch, UTC.
    pub next_at: i64,
}

/// The first time strictly after `after_ms` (ms since the epoch) that `cron` matches, in UTC;
/// `None` for an invalid expression or one that never matches.
pub fn next_after(cron: &str, after_ms: i64) -> Option<i64> {
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build();
    let c = parser.parse(cron).ok()?;
    let start: DateTime<Utc> = DateTime::from_timestamp_millis(after_ms)?;
    c.find_next_occurrence(&start, false)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn row_from(r: &ouro_store::Row) -> Result<ScheduleRow, StoreError> {
    Ok(ScheduleRow {
        id: r.i64("id")?,
        repo_id: r.i64("repo_id")?,
        file: r.text("file")?,
        entry: r.i64("entry")?,
        cron: r.text("cron")?,
        next_at: r.i64("next_at")?,
    })
}

/// A repository's schedules, by file and entry.
pub async fn list(store: &Store, repo_id: i64) -> Result<Vec<ScheduleRow>, StoreError> {
    q("SELECT * FROM build_schedules WHERE repo_id = $1 ORDER BY file, entry")
        .bind(repo_id)
        .fetch_all(&mut store.read().await?)
        .await?
        .iter()
        .map(row_from)
        .collect()
}

/// The commit the default branch points at (`None`: no such branch yet), read in process.
async fn default_head(root: &Path, repo: &Repo) -> Option<String> {
    let (dir, branch) = (repo.dir(root), repo.default_branch.clone());
    tokio::task::spawn_blocking(move || ouro_code::git::branch_commit(&dir, &branch))
        .await
        .ok()
        .flatten()
}

/// Recomputes `repo`'s schedules from the pipeline files at its default branch head, as of
/// `now_ms`: new entries are due at their next occurrence after now, unchanged entries keep
/// their time, entries that are gone (or whose file became invalid) are removed.
pub async fn sync(
    store: &Store,
    root: &Path,
    repo: &Repo,
    now_ms: i64,
) -> Result<Vec<ScheduleRow>, StoreError> {
    let mut wanted: Vec<(String, i64, String)> = Vec::new();
    if let Some(head) = default_head(root, repo).await {
        for (file, bytes) in runs::pipeline_files(&repo.dir(root), &head).await? {
            let Ok(p) = crate::pipeline::parse(&file, &bytes) else {
                continue;
            };
            for (i, s) in p.triggers().schedule.iter().enumerate() {
                wanted.push((file.clone(), i as i64, s.cron().to_string()));
            }
        }
    }
    let mut tx = store.begin().await?;
    let have: Vec<ScheduleRow> = q("SELECT * FROM build_schedules WHERE repo_id = $1")
        .bind(repo.id)
        .fetch_all(&mut tx)
        .await?
        .iter()
        .map(row_from)
        .collect::<Result<_, _>>()?;
    for h in &have {
        let keep = wanted
            .iter()
            .any(|(f, e, c)| *f == h.file && *e == h.entry && *c == h.cron);
        if !keep {
            q("DELETE FROM build_schedules WHERE id = $1")
                .bind(h.id)
                .execute(&mut tx)
                .await?;
        }
    }
    for (file, entry, cron) in &wanted {
        let kept = have
            .iter()
            .any(|h| h.file == *file && h.entry == *entry && h.cron == *cron);
        if kept {
            continue;
        }
        let Some(next) = next_after(cron, now_ms) else {
            continue;
        };
        q("INSERT INTO build_schedules (project_id, repo_id, file, entry, cron, next_at, created_at) \
           VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(repo.project_id)
        .bind(repo.id)
        .bind(file.as_str())
        .bind(*entry)
        .bind(cron.as_str())
        .bind(next)
        .bind(now_ms)
        .execute(&mut tx)
        .await?;
    }
    tx.commit().await?;
    list(store, repo.id).await
}

/// Creates the runs of every schedule entry due at `now_ms` (see the module docs). Returns the
/// runs created.
pub async fn tick(store: &Store, root: &Path, now_ms: i64) -> Result<Vec<Run>, StoreError> {
    let due: Vec<(ScheduleRow, i64)> = q(format!(
        "SELECT * FROM build_schedules WHERE next_at <= $1 ORDER BY next_at, id LIMIT {MAX_PER_TICK}"
    ))
    .bind(now_ms)
    .fetch_all(&mut store.read().await?)
    .await?
    .iter()
    .map(|r| Ok((row_from(r)?, r.i64("project_id")?)))
    .collect::<Result<_, StoreError>>()?;
    let mut created = Vec::new();
    for (s, project_id) in due {
        let repo = repo_by_id(store, project_id, s.repo_id).await?;
        let head = match &repo {
            Some(repo) => default_head(root, repo).await,
            None => None,
        };
        if let (Some(repo), Some(head)) = (&repo, head) {
            let trigger = TriggerInfo {
                kind: "schedule",
                git_ref: format!("refs/heads/{}", repo.default_branch),
                sha: head,
                actor: Actor::System("schedule").label(),
                source_key: Some(format!("schedule:{}:{}", s.id, s.next_at)),
                file: Some(s.file.clone()),
                trusted: true,
                ..Default::default()
            };
            match runs::create_runs(store, root, repo, &trigger).await {
                Ok(runs) => created.extend(runs),
                // Another ticker created it at the same moment.
                Err(e) if crate::triggers::is_unique_violation(&e) => {}
                Err(StoreError::Domain(e)) if e.code == ouro_core::ErrorCode::GitFailed => {
                    tracing::warn!(schedule = s.id, error = %e, "cannot read the scheduled pipeline");
                }
                Err(e) => return Err(e),
            }
        }
        // The next occurrence after now: a schedule missed during downtime runs once.
        let next = next_after(&s.cron, now_ms.max(s.next_at));
        let mut tx = store.begin().await?;
        match next {
            Some(next) => {
                q("UPDATE build_schedules SET next_at = $1 WHERE id = $2 AND next_at = $3")
                    .bind(next)
                    .bind(s.id)
                    .bind(s.next_at)
                    .execute(&mut tx)
                    .await?;
            }
            None => {
                q("DELETE FROM build_schedules WHERE id = $1")
                    .bind(s.id)
                    .execute(&mut tx)
                    .await?;
            }
        }
        tx.commit().await?;
    }
    Ok(created)
}

/// [`sync`] for every repository (the server does it once at start, so schedules follow a
/// default branch that was renamed, or files pushed before this version). Errors of one
/// repository are logged, not returned.
pub async fn sync_all(store: &Store, root: &Path, now_ms: i64) -> Result<usize, StoreError> {
    let repos = ouro_code::repos::all(&mut store.read().await?).await?;
    let mut n = 0;
    for repo in repos {
        match sync(store, root, &repo, now_ms).await {
            Ok(rows) => n += rows.len(),
            Err(e) => {
                tracing::warn!(repo = repo.id, error = %e, "cannot read the repository's schedules")
            }
        }
    }
    Ok(n)
}

async fn repo_by_id(
    store: &Store,
    project_id: i64,
    repo_id: i64,
) -> Result<Option<Repo>, StoreError> {
    ouro_code::repos::by_id(&mut store.read().await?, project_id, repo_id).await
}

/// The event consumer that keeps `build_schedules` in step with the default branch: a push
/// (`code.pushed`) to a repository's default branch recomputes its schedules.
pub struct ScheduleSync {
    /// Where the bare repositories live (`ouro_code::repos::root(data_dir)`).
    pub root: std::path::PathBuf,
}

/// Handles one event for [`ScheduleSync`] (public for tests that replay an event).
pub async fn on_push_event(
    store: &Store,
    root: &Path,
    event: &ouro_core::Event,
) -> Result<(), StoreError> {
    let p = &event.payload;
    if event.kind != ev::CODE_PUSHED.name {
        return Ok(());
    }
    let (Some(project_id), Some(name), Some(refname)) =
        (event.project_id, p["repo"].as_str(), p["ref"].as_str())
    else {
        return Ok(());
    };
    let Some(repo) = ouro_code::repos::by_name(&mut store.read().await?, project_id, name).await?
    else {
        return Ok(());
    };
    if refname != format!("refs/heads/{}", repo.default_branch) {
        return Ok(());
    }
    match sync(store, root, &repo, ouro_core::time::now_ms()).await {
        Err(StoreError::Domain(e)) if e.code == ouro_core::ErrorCode::GitFailed => {
            tracing::warn!(seq = event.seq, error = %e, "cannot read the default branch's pipelines");
            Ok(())
        }
        other => other.map(|_| ()),
    }
}

impl ouro_store::consumers::Consumer for ScheduleSync {
    fn name(&self) -> &'static str {
        "build.schedule_sync"
    }

    fn handle<'a>(
        &'a self,
        store: &'a Store,
        event: &'a ouro_core::Event,
    ) -> ouro_store::consumers::BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move {
            on_push_event(store, &self.root, event)
                .await
                .map_err(OuroError::from)
        })
    }
}
