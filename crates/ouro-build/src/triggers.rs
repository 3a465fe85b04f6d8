//! More triggers and the scheduling policy around claims:
//!
//! - **Change requests**: [`ChangeRequestTrigger`] consumes `cr.opened` and `cr.updated` and
//!   creates runs with trigger `change_request` for the change request's source branch head,
//!   filtered by `on.change_request` (`branches` = target branch patterns, `paths`). The run
//!   stores the change request's number and whether its author is trusted (a member of the
//!   project with at least developer); untrusted runs get no secrets. Idempotent: one run per
//!   (repository, change request, head, file), however often the events are seen.
//! - **Priorities**: a run's claim priority comes from its trigger ([`priority`]): manual, API,
//!   change request and re-run (2) before push (1) before schedule (0); `runs::claim_next`
//!   orders by priority, then age.
//! - **Concurrency groups**: a job's `concurrency.group` is rendered when its run is created
//!   ([`job_group`]) and stored on the job. A job whose group (per project) has a running job is
//!   not claimed ([`CLAIMABLE_SQL`], re-checked under a row lock by [`admit`]). With
//!   `cancel-in-progress`, creating the run cancels the group's older queued and running jobs
//!   ([`cancel_superseded`]; a running job's runner learns it from its next heartbeat).
//! - **Per-project limit**: `build_settings.max_running_jobs` (default unlimited), honoured by
//!   the claim the same way ([`set_max_running_jobs`]).

use std::collections::BTreeSet;
use std::path::Path;

use ouro_core::events as ev;
use ouro_core::{Actor, NewEvent, OuroError};
use ouro_store::{Executor, Store, StoreError, Tx, q};
use serde_json::json;

use crate::runs::{self, Job, Run, TriggerInfo};

const ACTOR: Actor = Actor::System("pipelines");

/// The claim priority of a trigger kind: higher is claimed first.
pub fn priority(kind: &str) -> i64 {
    match kind {
        "schedule" => 0,
        "push" => 1,
        _ => 2, // manual, api, change_request, rerun
    }
}

/// The rendered `concurrency` of planned job `i`: its group (rendered with the `ouro`, `env`,
/// `matrix` and `inputs` contexts; an empty or unrenderable group is the literal text, an empty
/// one none) and `cancel-in-progress`.
pub fn job_group(rp: &crate::plan::RunPlan, i: usize) -> (Option<String>, bool) {
    use crate::pipeline::Concurrency;
    let Some(c) = &rp.jobs[i].spec.concurrency else {
        return (None, false);
    };
    let (raw, cancel) = match c {
        Concurrency::Group(g) => (g.as_str(), false),
        Concurrency::Detailed(d) => (d.group.as_str(), d.cancel_in_progress),
    };
    let states = vec![crate::plan::JobState::Queued; rp.jobs.len()];
    let ctx = rp.job_context(i, &states, false);
    render_group(raw, cancel, &ctx)
}

fn render_group(raw: &str, cancel: bool, ctx: &crate::expr::Context) -> (Option<String>, bool) {
    let rendered = crate::expr::parse_template(raw)
        .ok()
        .and_then(|t| t.render(ctx).ok())
        .unwrap_or_else(|| raw.to_string());
    let rendered: String = rendered.trim().chars().take(200).collect();
    if rendered.is_empty() {
        (None, false)
    } else {
        (Some(rendered), cancel)
    }
}

/// The rendered pipeline-level `concurrency` of a run (contexts `ouro`, `env` and `inputs`):
/// its group and `cancel-in-progress`.
pub fn run_group(
    p: &crate::pipeline::Pipeline,
    rp: &crate::plan::RunPlan,
) -> (Option<String>, bool) {
    use crate::pipeline::Concurrency;
    let Some(c) = &p.concurrency else {
        return (None, false);
    };
    let (raw, cancel) = match c {
        Concurrency::Group(g) => (g.as_str(), false),
        Concurrency::Detailed(d) => (d.group.as_str(), d.cancel_in_progress),
    };
    let ctx = crate::expr::Context::new()
        .with_ouro(&rp.trigger.ouro_context())
        .with_env(rp.env.iter().map(|(k, v)| (k.clone(), v.to_string())))
        .with_inputs(&rp.inputs);
    render_group(raw, cancel, &ctx)
}

/// The extra condition of `runs::claim_next`'s candidate query (aliases `j` for the job, `r` for
/// its run): no older run of the run's pipeline-level concurrency group is still queued or
/// running (runs of a group go one at a time, oldest first; a run only ever moves from unfinished
/// to finished, so no lock is needed), the job's concurrency group has no other running job in
/// the project, and the project is below its running-job limit.
pub const CLAIMABLE_SQL: &str = "(r.concurrency_group IS NULL OR NOT EXISTS (\
     SELECT 1 FROM build_runs o WHERE o.project_id = r.project_id \
     AND o.concurrency_group = r.concurrency_group AND o.id < r.id \
     AND o.status IN ('queued', 'running'))) \
     AND (j.concurrency_group IS NULL OR NOT EXISTS (\
     SELECT 1 FROM build_jobs g JOIN build_runs gr ON gr.id = g.run_id \
     WHERE g.concurrency_group = j.concurrency_group AND g.status = 'running' AND g.id <> j.id \
     AND gr.project_id = r.project_id)) \
     AND NOT EXISTS (SELECT 1 FROM build_settings s WHERE s.project_id = r.project_id \
     AND s.max_running_jobs IS NOT NULL AND s.max_running_jobs <= (\
     SELECT COUNT(*) FROM build_jobs x JOIN build_runs xr ON xr.id = x.run_id \
     WHERE xr.project_id = r.project_id AND x.status = 'running' AND x.id <> j.id))";

/// Takes the row lock that serializes claims of `name` in the project (on PostgreSQL a second
/// claimer waits here and then sees the first one's committed claim).
async fn lock(tx: &mut Tx, project_id: i64, name: &str) -> Result<(), StoreError> {
    q(
        "INSERT INTO build_claim_locks (project_id, name, claims) VALUES ($1, $2, 1) \
       ON CONFLICT (project_id, name) DO UPDATE SET claims = build_claim_locks.claims + 1",
    )
    .bind(project_id)
    .bind(name)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Called by `runs::claim_next` inside the claim's transaction, after the job was marked
/// running: `false` when the claim must be rolled back because the job's concurrency group
/// already has a running job or the project is at its running-job limit.
pub async fn admit(tx: &mut Tx, run: &Run, job: &Job) -> Result<bool, StoreError> {
    if let Some(group) = job.concurrency_group.as_deref().filter(|g| !g.is_empty()) {
        lock(tx, run.project_id, group).await?;
        let busy = q(
            "SELECT COUNT(*) AS n FROM build_jobs g JOIN build_runs gr ON gr.id = g.run_id \
             WHERE gr.project_id = $1 AND g.concurrency_group = $2 AND g.status = 'running' \
             AND g.id <> $3",
        )
        .bind(run.project_id)
        .bind(group)
        .bind(job.id)
        .fetch_one(&mut *tx)
        .await?
        .i64("n")?;
        if busy > 0 {
            return Ok(false);
        }
    }
    if let Some(max) = max_running_jobs(&mut *tx, run.project_id).await? {
        lock(tx, run.project_id, "").await?;
        let running = q(
            "SELECT COUNT(*) AS n FROM build_jobs x JOIN build_runs xr ON xr.id = x.run_id \
             WHERE xr.project_id = $1 AND x.status = 'running' AND x.id <> $2",
        )
        .bind(run.project_id)
        .bind(job.id)
        .fetch_one(&mut *tx)
        .await?
        .i64("n")?;
        if running >= max {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The project's running-job limit (`None`: unlimited).
pub async fn max_running_jobs(
    ex: &mut impl Executor,
    project_id: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(
        q("SELECT max_running_jobs FROM build_settings WHERE project_id = $1")
            .bind(project_id)
            .fetch_optional(ex)
            .await?
            .map(|r| r.opt_i64("max_running_jobs"))
            .transpose()?
            .flatten(),
    )
}

/// Sets the project's running-job limit (`None`: unlimited; otherwise 1 to 10000).
pub async fn set_max_running_jobs(
    store: &Store,
    project_id: i64,
    max: Option<i64>,
) -> Result<(), StoreError> {
    if let Some(m) = max
        && !(1..=10_000).contains(&m)
    {
        return Err(
            OuroError::field("max_running_jobs", "1 to 10000, or null for no limit").into(),
        );
    }
    let mut tx = store.begin().await?;
    q(
        "INSERT INTO build_settings (project_id, max_running_jobs) VALUES ($1, $2) \
       ON CONFLICT (project_id) DO UPDATE SET max_running_jobs = $2",
    )
    .bind(project_id)
    .bind(max)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    crate::runner::wake::claimable(); // a raised limit admits more
    Ok(())
}

/// With `cancel-in-progress`: cancels the queued and running jobs of older runs of the project
/// in each of `groups` (reason `superseded`, a `job.finished` event each); queued jobs that need
/// them are skipped. Returns the affected runs with their status derived again.
pub async fn cancel_superseded(
    tx: &mut Tx,
    slug: &str,
    run: &Run,
    groups: &[String],
) -> Result<Vec<Run>, StoreError> {
    let mut affected: BTreeSet<i64> = BTreeSet::new();
    let now = ouro_core::time::now_ms();
    for group in groups.iter().collect::<BTreeSet<_>>() {
        let old = q(
            "SELECT j.id, j.run_id FROM build_jobs j JOIN build_runs r ON r.id = j.run_id \
             WHERE r.project_id = $1 AND j.concurrency_group = $2 AND r.id < $3 \
             AND j.status IN ('queued', 'running') ORDER BY j.id",
        )
        .bind(run.project_id)
        .bind(group.as_str())
        .bind(run.id)
        .fetch_all(&mut *tx)
        .await?;
        for row in old {
            affected.insert(row.i64("run_id")?);
            end_job(
                tx,
                slug,
                run,
                row.i64("id")?,
                "cancelled",
                "superseded",
                now,
            )
            .await?;
        }
    }
    let mut out = Vec::new();
    for run_id in affected {
        let all = runs::jobs(&mut *tx, run_id).await?;
        // Queued jobs that (transitively) need a job that ended without success are skipped.
        let dead: BTreeSet<String> = all
            .iter()
            .filter(|j| {
                matches!(
                    runs::effective_status(&j.status, j.continue_on_error),
                    "cancelled" | "failure" | "timed_out"
                )
            })
            .map(|j| j.key.clone())
            .collect();
        let skip: Vec<i64> = runs::skipped_with_failed(&all, dead)
            .iter()
            .map(|j| j.id)
            .collect();
        for id in skip {
            end_job(tx, slug, run, id, "skipped", "needs_failed", now).await?;
        }
        let old = runs::get_by_id(&mut *tx, run_id).await?;
        out.push(runs::rederive(tx, &old, slug).await?);
    }
    Ok(out)
}

/// With pipeline-level `cancel-in-progress`: cancels the queued and running jobs of the older
/// runs of the project in `group` (reason `superseded`); returns those runs, status derived.
pub async fn cancel_superseded_runs(
    tx: &mut Tx,
    slug: &str,
    run: &Run,
    group: &str,
) -> Result<Vec<Run>, StoreError> {
    let now = ouro_core::time::now_ms();
    let old = q(
        "SELECT j.id, j.run_id FROM build_jobs j JOIN build_runs r ON r.id = j.run_id \
         WHERE r.project_id = $1 AND r.concurrency_group = $2 AND r.id < $3 \
         AND j.status IN ('queued', 'running') ORDER BY j.id",
    )
    .bind(run.project_id)
    .bind(group)
    .bind(run.id)
    .fetch_all(&mut *tx)
    .await?;
    let mut affected: BTreeSet<i64> = BTreeSet::new();
    for row in old {
        affected.insert(row.i64("run_id")?);
        end_job(
            tx,
            slug,
            run,
            row.i64("id")?,
            "cancelled",
            "superseded",
            now,
        )
        .await?;
    }
    let mut out = Vec::new();
    for run_id in affected {
        let old = runs::get_by_id(&mut *tx, run_id).await?;
        out.push(runs::rederive(tx, &old, slug).await?);
    }
    Ok(out)
}

async fn end_job(
    tx: &mut Tx,
    slug: &str,
    by: &Run,
    job_id: i64,
    status: &str,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    let row = q(
        "SELECT j.job_key, r.number, r.project_id FROM build_jobs j \
         JOIN build_runs r ON r.id = j.run_id WHERE j.id = $1",
    )
    .bind(job_id)
    .fetch_one(&mut *tx)
    .await?;
    q(
        "UPDATE build_jobs SET status = $1, finished_at = $2, reason = $3, \
       lease_expires_at = NULL, version = version + 1 WHERE id = $4",
    )
    .bind(status)
    .bind(now)
    .bind(reason)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    tx.append(
        NewEvent::new(
            ev::JOB_FINISHED,
            &ACTOR,
            job_id,
            json!({"run": row.i64("number")?, "job": row.text("job_key")?, "status": status,
                   "reason": reason, "superseded_by": by.number}),
        )
        .in_project(row.i64("project_id")?, slug),
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The change request trigger

/// The files changed between the merge base of `target` and `head` (`None` when git cannot
/// tell: a `paths` filter then matches).
async fn changed_between(dir: &Path, target: &str, head: &str) -> Option<Vec<String>> {
    let d = dir.to_string_lossy();
    let range = format!("refs/heads/{target}...{head}");
    let out = ouro_code::git::command(&[
        "-C",
        &d,
        "diff",
        "--name-only",
        "-z",
        "--no-renames",
        &range,
        "--",
    ])
    .output()
    .await
    .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        out.stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
    )
}

/// The event consumer that creates runs for change requests (`cr.opened`, `cr.updated` while
/// open). Idempotent: keyed by repository, number, head and file.
pub struct ChangeRequestTrigger {
    /// Where the bare repositories live (`ouro_code::repos::root(data_dir)`).
    pub root: std::path::PathBuf,
}

/// Handles one event for [`ChangeRequestTrigger`] (public for tests that replay an event).
pub async fn on_cr_event(
    store: &Store,
    root: &Path,
    event: &ouro_core::Event,
) -> Result<Vec<Run>, StoreError> {
    let p = &event.payload;
    if event.kind != ev::CR_OPENED.name && event.kind != ev::CR_UPDATED.name {
        return Ok(Vec::new());
    }
    let (Some(project_id), Some(name), Some(number), Some(source), Some(target), Some(head)) = (
        event.project_id,
        p["repo"].as_str(),
        p["number"].as_i64(),
        p["source"].as_str(),
        p["target"].as_str(),
        p["head"].as_str(),
    ) else {
        return Ok(Vec::new());
    };
    if p["state"].as_str() != Some("open") || head.len() < 40 {
        return Ok(Vec::new());
    }
    let mut conn = store.read().await?;
    let Some(repo) = ouro_code::repos::by_name(&mut conn, project_id, name).await? else {
        return Ok(Vec::new());
    };
    // The change request as it is now: a later event may already have moved the head.
    let cr = match ouro_code::cr::get(&mut conn, repo.id, number).await {
        Ok(cr) => cr,
        Err(_) => return Ok(Vec::new()),
    };
    if cr.id.to_string() != event.subject.id || cr.state != "open" || cr.head != head {
        return Ok(Vec::new());
    }
    let trusted = match cr.author.as_deref() {
        Some(author) => crate::secrets::is_trusted(&mut conn, project_id, author).await?,
        None => false, // the author's account was deleted
    };
    drop(conn);
    let changed = changed_between(&repo.dir(root), target, head).await;
    let trigger = TriggerInfo {
        kind: "change_request",
        git_ref: format!("refs/heads/{source}"),
        sha: head.to_string(),
        actor: cr
            .author
            .as_deref()
            .map(|a| format!("user:{a}"))
            .unwrap_or_else(|| event.actor.clone()),
        changed,
        source_key: Some(format!("cr:{}:{number}:{head}", repo.id)),
        cr_number: Some(number),
        target_branch: Some(target.to_string()),
        trusted,
        ..Default::default()
    };
    match runs::create_runs(store, root, &repo, &trigger).await {
        Err(StoreError::Domain(e)) if e.code == ouro_core::ErrorCode::GitFailed => {
            tracing::warn!(seq = event.seq, error = %e, "cannot read the change request's pipeline files");
            Ok(Vec::new())
        }
        // Two deliveries racing on the unique source key: the other one created the run.
        Err(e) if is_unique_violation(&e) => Ok(Vec::new()),
        other => other,
    }
}

/// Whether `e` is a unique-index violation (an idempotent insert that lost a race).
pub fn is_unique_violation(e: &StoreError) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("unique") || s.contains("duplicate key")
}

impl ouro_store::consumers::Consumer for ChangeRequestTrigger {
    fn name(&self) -> &'static str {
        "build.cr_trigger"
    }

    fn handle<'a>(
        &'a self,
        store: &'a Store,
        event: &'a ouro_core::Event,
    ) -> ouro_store::consumers::BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move {
            on_cr_event(store, &self.root, event)
                .await
                .map(|_| ())
                .map_err(OuroError::from)
        })
    }
}
