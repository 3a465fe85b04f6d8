//! The server side of the runner protocol. The HTTP handlers (`/api/v1/runner/...`) and the
//! in-process runner call these same functions: one lease logic, one log path.
//!
//! - [`claim`]: [`runs::claim_next_labeled`] plus what the runner needs ([`ClaimedJob`]): the
//!   pipeline file at the commit, the states of the job's needs, its variables and secrets
//!   ([`job_variables`] is the one place where they are looked up), the checkout.
//! - [`append_log`] / [`section`]: the attempt's log at [`runs::log_dir`], written by a
//!   [`LogWriter`] kept open between chunks; a chunk is checked against the attempt token.
//! - [`finish`]: a failed attempt whose `retry` policy allows another is queued again
//!   (`job.requeued`); otherwise [`runs::finish_job_with_reason`]; when the run is finished its
//!   commit status is posted.
//! - [`reap`]: a running job whose lease expired (its runner vanished) is queued again when its
//!   `retry.when` includes `infra_failure` and attempts remain, else it fails with the reason
//!   `runner_lost`.
//! - Runners: registration tokens (one use), [`register`], runner tokens stored hashed,
//!   [`list_runners`] with their current jobs, [`set_draining`] (a draining runner claims nothing).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::crypto::SecretBox;
use ouro_store::{Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use super::{CheckoutSource, ClaimTrigger, ClaimedJob, JobResult, SectionMark};
use crate::logs::{LogConfig, LogError, LogWriter};
use crate::pipeline::ExecutorKind;
use crate::runs;

const ACTOR: Actor = Actor::System("runners");

/// How a claimed job gets its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutKind {
    /// The bare repository path (the in-process runner).
    Local,
    /// Smart HTTP (a remote runner).
    Http,
}

fn stale() -> StoreError {
    OuroError::new(
        ErrorCode::StaleAttempt,
        "this attempt is no longer the job's current one (its lease expired or the job ended)",
    )
    .into()
}

fn texts(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

async fn slug_of(store: &Store, project_id: i64) -> Result<String, StoreError> {
    q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(&mut store.read().await?)
        .await?
        .text("slug")
}

/// The variables and secrets of a job ([`crate::secrets::for_job`]): the project's, overridden by
/// those of the job's `environment:`; a run that is not trusted (a change request from an author
/// below developer) gets no secrets.
pub async fn job_variables(
    store: &Store,
    sbox: &SecretBox,
    run: &runs::Run,
    job: &runs::Job,
    pipeline_file: &str,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), StoreError> {
    let environment = job_environment(&run.file, pipeline_file, &job.key);
    let v = crate::secrets::for_job(
        &mut store.read().await?,
        sbox,
        run.project_id,
        environment.as_deref(),
        run.trusted,
    )
    .await?;
    Ok((v.vars, v.secrets))
}

/// The `environment:` of the job whose run key is `key` (`build`, or `build (linux)` for a
/// matrix expansion of `build`).
fn job_environment(file: &str, text: &str, key: &str) -> Option<String> {
    let parsed = super::cache::parsed(file, text);
    let pipeline = parsed.as_ref().as_ref().ok()?;
    let base = key.split(" (").next().unwrap_or(key);
    pipeline.jobs.get(base)?.environment.clone()
}

/// The definition of the run's job `key` (a matrix expansion `build (linux)` gives `build`), read
/// from the run's pipeline file at its commit; `None` when it cannot be read or parsed. For later
/// phases (Test's quality gate).
pub async fn pipeline_job(
    data_dir: &Path,
    run: &runs::Run,
    key: &str,
) -> Option<crate::pipeline::Job> {
    let repo_id = run.repo_id?;
    let dir = ouro_code::repos::dir(&ouro_code::repos::root(data_dir), run.project_id, repo_id);
    let text = super::cache::file_at(&dir, &run.sha, &run.file)
        .await
        .ok()?;
    let mut pipeline = crate::pipeline::parse(&run.file, text.as_bytes()).ok()?;
    let base = key.split(" (").next().unwrap_or(key);
    pipeline.jobs.remove(base)
}

/// Whether runner `runner_id` is draining (an unknown runner is not).
async fn draining(store: &Store, runner_id: &str) -> Result<bool, StoreError> {
    Ok(q("SELECT draining FROM build_runners WHERE id = $1")
        .bind(runner_id)
        .fetch_optional(&mut store.read().await?)
        .await?
        .map(|r| r.i64("draining"))
        .transpose()?
        .unwrap_or(0)
        != 0)
}

/// Records that the runner was heard from.
pub async fn touch(store: &Store, runner_id: &str) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    q("UPDATE build_runners SET last_contact_at = $1 WHERE id = $2")
        .bind(ouro_core::time::now_ms())
        .bind(runner_id)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Gives the runner a job (see the module docs), or `None` when nothing is claimable or the
/// runner is draining. A job whose pipeline file cannot be read fails at once (`infra`).
pub async fn claim(
    store: &Store,
    data_dir: &Path,
    sbox: &SecretBox,
    runner_id: &str,
    offer: runs::Offer<'_>,
    kind: CheckoutKind,
) -> Result<Option<ClaimedJob>, StoreError> {
    if draining(store, runner_id).await? {
        return Ok(None);
    }
    loop {
        let lease = super::lease_ms(data_dir);
        let Some(c) = runs::claim_next_labeled(store, runner_id, offer, lease).await? else {
            return Ok(None);
        };
        match claimed(store, data_dir, sbox, &c, kind).await {
            Ok(job) => return Ok(Some(job)),
            Err(why) => {
                tracing::warn!(job = c.job.id, error = %why, "cannot hand out a claimed job");
                finish(store, data_dir, c.job.id, &c.token, &not_handed_out(why)).await?;
            }
        }
    }
}

async fn claimed(
    store: &Store,
    data_dir: &Path,
    sbox: &SecretBox,
    c: &runs::Claim,
    kind: CheckoutKind,
) -> Result<ClaimedJob, String> {
    let err = |e: StoreError| OuroError::from(e).message;
    let slug = slug_of(store, c.run.project_id).await.map_err(err)?;
    let repo_id = c
        .run
        .repo_id
        .ok_or_else(|| "the run's repository was deleted".to_string())?;
    let dir = ouro_code::repos::dir(&ouro_code::repos::root(data_dir), c.run.project_id, repo_id);
    let pipeline_file = super::cache::file_at(&dir, &c.run.sha, &c.run.file).await?;
    let needs = if c.job.needs.is_empty() {
        BTreeMap::new()
    } else {
        let keys: Vec<&String> = c.job.needs.iter().collect();
        runs::job_states(&mut store.read().await.map_err(err)?, c.run.id, &keys)
            .await
            .map_err(err)?
            .into_iter()
            .map(|(key, status, _)| (key, status))
            .collect()
    };
    let (variables, secrets) = job_variables(store, sbox, &c.run, &c.job, &pipeline_file)
        .await
        .map_err(err)?;
    let checkout = match kind {
        CheckoutKind::Local => CheckoutSource::Local {
            repo_path: dir.to_string_lossy().into_owned(),
            sha: c.run.sha.clone(),
        },
        CheckoutKind::Http => CheckoutSource::Git {
            path: format!("/git/{slug}/{}.git", c.run.repo),
            sha: c.run.sha.clone(),
        },
    };
    Ok(ClaimedJob {
        run_id: c.run.id,
        run_number: c.run.number,
        job_id: c.job.id,
        attempt: c.job.attempt,
        token: c.token.clone(),
        project: slug,
        repo: c.run.repo.clone(),
        pipeline: c.run.pipeline.clone(),
        file: c.run.file.clone(),
        pipeline_file: pipeline_file.as_ref().clone(),
        job_key: c.job.key.clone(),
        trigger: ClaimTrigger {
            kind: c.run.trigger.clone(),
            git_ref: c.run.git_ref.clone(),
            sha: c.run.sha.clone(),
            actor: c.run.actor.clone(),
            event: Some(c.run.event.clone()),
            target_branch: c.run.target_branch.clone(),
            inputs: input_strings(&c.run.inputs),
        },
        needs,
        variables,
        secrets,
        checkout,
    })
}

/// A run's typed inputs as the planner takes them (strings, typed again against the pipeline).
fn input_strings(inputs: &serde_json::Value) -> BTreeMap<String, String> {
    inputs
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Extends the lease of the attempt; `true` when the job was cancelled.
pub async fn heartbeat(
    store: &Store,
    data_dir: &Path,
    runner_id: &str,
    job_id: i64,
    token: &str,
) -> Result<bool, StoreError> {
    touch(store, runner_id).await?;
    runs::heartbeat(store, job_id, token, super::lease_ms(data_dir)).await
}

/// The job row of the attempt holding `token` (running or cancelled), else stale.
async fn attempt_of(store: &Store, job_id: i64, token: &str) -> Result<runs::Job, StoreError> {
    let row = q("SELECT * FROM build_jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(&mut store.read().await?)
        .await?
        .ok_or_else(stale)?;
    let job = job_of(&row)?;
    if job.attempt_token.as_deref() != Some(token)
        || !matches!(job.status.as_str(), "running" | "cancelled")
    {
        return Err(stale());
    }
    Ok(job)
}

fn job_of(row: &Row) -> Result<runs::Job, StoreError> {
    runs::job_from(row)
}

/// The log settings of each instance, by data directory ([`configure_logs`]).
static LOG_CONFIGS: LazyLock<Mutex<HashMap<PathBuf, LogConfig>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Sets how the logs of jobs under `data_dir` are stored (the per-job cap: `[build]
/// log_cap_bytes`); [`LogConfig::default`] until called. `ouro serve` calls it at start (through
/// [`super::local::start`]), before any job is claimed.
pub fn configure_logs(data_dir: &Path, cfg: LogConfig) {
    LOG_CONFIGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(data_dir.to_path_buf(), cfg);
}

/// The log settings for the log directory `dir` (under a data directory's build logs).
fn log_config(dir: &Path) -> LogConfig {
    let cfgs = LOG_CONFIGS.lock().unwrap_or_else(|e| e.into_inner());
    dir.ancestors()
        .find_map(|a| cfgs.get(a).cloned())
        .unwrap_or_default()
}

/// Open log writers, by log directory (kept between chunks; closed when the attempt ends).
static OPEN_LOGS: LazyLock<Mutex<HashMap<PathBuf, LogWriter>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn log_error(e: LogError) -> StoreError {
    match e {
        LogError::Gap { .. } | LogError::Mismatch { .. } | LogError::Finished => {
            let reason = e.code();
            OuroError::new(ErrorCode::LogChunkRejected, e.to_string())
                .with_details(json!({"reason": reason}))
                .into()
        }
        other => {
            tracing::error!(error = %other, "job log storage");
            OuroError::internal().into()
        }
    }
}

/// Runs `f` on the open writer of `dir` (opening or creating it) on a blocking thread.
async fn with_writer<T: Send + 'static>(
    dir: PathBuf,
    f: impl FnOnce(&mut LogWriter) -> Result<T, LogError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(move || {
        let mut open = OPEN_LOGS.lock().unwrap_or_else(|e| e.into_inner());
        if !open.contains_key(&dir) {
            let w = if dir.join("meta.json").exists() {
                return Err(LogError::Finished);
            } else if dir.exists() {
                LogWriter::reopen(&dir, log_config(&dir))?
            } else {
                LogWriter::create(&dir, log_config(&dir))?
            };
            open.insert(dir.clone(), w);
        }
        let w = open.get_mut(&dir).expect("just inserted");
        f(w)
    })
    .await
    .map_err(|_| StoreError::from(OuroError::internal()))?
    .map_err(log_error)
}

/// Finishes the attempt's log (if one was opened).
async fn close_log(data_dir: &Path, job_id: i64, attempt: i64) {
    let dir = runs::log_dir(data_dir, job_id, attempt);
    let _ = tokio::task::spawn_blocking(move || {
        let w = OPEN_LOGS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&dir);
        let w = match w {
            Some(w) => Some(w),
            None if dir.exists() && !dir.join("meta.json").exists() => {
                LogWriter::reopen(&dir, log_config(&dir)).ok()
            }
            None => None,
        };
        if let Some(Err(e)) = w.map(|mut w| w.finish()) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot finish a job log");
        }
    })
    .await;
}

/// Appends `data` at `offset` of the attempt's log (see [`LogWriter::append`]).
pub async fn append_log(
    store: &Store,
    data_dir: &Path,
    job_id: i64,
    token: &str,
    offset: u64,
    data: Vec<u8>,
) -> Result<(), StoreError> {
    let job = attempt_of(store, job_id, token).await?;
    let dir = runs::log_dir(data_dir, job_id, job.attempt);
    with_writer(dir, move |w| w.append(offset, &data, crate::logs::now_ms())).await
}

/// Records a step start or end at the current end of the attempt's log.
pub async fn section(
    store: &Store,
    data_dir: &Path,
    job_id: i64,
    token: &str,
    mark: SectionMark,
) -> Result<(), StoreError> {
    let job = attempt_of(store, job_id, token).await?;
    let dir = runs::log_dir(data_dir, job_id, job.attempt);
    match mark.kind.as_str() {
        "start" => {
            let name = mark.name.unwrap_or_default();
            with_writer(dir, move |w| {
                w.begin_step(mark.step, &name, crate::logs::now_ms())
            })
            .await
        }
        "end" => {
            with_writer(dir, move |w| {
                w.end_step(mark.step, mark.exit_code, crate::logs::now_ms())
            })
            .await
        }
        _ => Err(OuroError::field("kind", "start or end").into()),
    }
}

/// Queues job `job` again for a new attempt (the old token becomes stale). `false` when the job
/// changed meanwhile.
async fn requeue(store: &Store, job: &runs::Job, reason: &str) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let n = q(
        "UPDATE build_jobs SET status = 'queued', runner_id = NULL, lease_expires_at = NULL, \
         attempt_token = NULL, reason = $1, version = version + 1 WHERE id = $2 AND version = $3",
    )
    .bind(reason)
    .bind(job.id)
    .bind(job.version)
    .execute(&mut tx)
    .await?;
    if n != 1 {
        return Ok(false);
    }
    let run = q("SELECT r.number, r.project_id, p.slug FROM build_runs r \
                 JOIN projects p ON p.id = r.project_id WHERE r.id = $1")
    .bind(job.run_id)
    .fetch_one(&mut tx)
    .await?;
    tx.append(
        NewEvent::new(
            ev::JOB_REQUEUED,
            &ACTOR,
            job.id,
            json!({"run": run.i64("number")?, "job": job.key, "attempt": job.attempt,
                   "reason": reason}),
        )
        .in_project(run.i64("project_id")?, &run.text("slug")?),
    )
    .await?;
    tx.commit().await?;
    super::wake::claimable();
    Ok(true)
}

/// Posts the run's commit status when it has finished.
async fn post_if_finished(store: &Store, data_dir: &Path, run: &runs::Run) {
    if !matches!(run.status.as_str(), "success" | "failure" | "cancelled") {
        return;
    }
    let root = ouro_code::repos::root(data_dir);
    let Ok(slug) = slug_of(store, run.project_id).await else {
        return;
    };
    let Ok(mut rd) = store.read().await else {
        return;
    };
    if let Ok(Some(repo)) = ouro_code::repos::by_name(&mut rd, run.project_id, &run.repo).await {
        drop(rd);
        if Some(repo.id) == run.repo_id {
            runs::post_run_status(store, &root, &repo, &slug, run).await;
        }
    }
}

/// Ends the attempt holding `token` with `result` (see the module docs).
pub async fn finish(
    store: &Store,
    data_dir: &Path,
    job_id: i64,
    token: &str,
    result: &JobResult,
) -> Result<(), StoreError> {
    finish_then_claim(store, data_dir, job_id, token, result, None)
        .await
        .map(|_| ())
}

/// Who claims the next job in the finishing transaction ([`finish_then_claim`]).
pub struct NextClaim<'a> {
    pub sbox: &'a SecretBox,
    pub runner_id: &'a str,
    pub offer: runs::Offer<'a>,
    pub kind: CheckoutKind,
}

/// [`finish`], and with `next` the runner's next job claimed in the same transaction that
/// records the result: one synced commit instead of two, and a job the result made ready (the
/// next job of a chain) starts without waiting for a wake-up. Nothing is claimed when the
/// attempt is requeued or was cancelled, or the runner is draining. The claim is the same as
/// [`claim`]'s (a compare-and-set on the job's version, admission), so no job is ever held by two
/// runners; if the transaction fails, neither the result nor the claim is recorded.
pub async fn finish_then_claim(
    store: &Store,
    data_dir: &Path,
    job_id: i64,
    token: &str,
    result: &JobResult,
    next: Option<NextClaim<'_>>,
) -> Result<Option<ClaimedJob>, StoreError> {
    let job = attempt_of(store, job_id, token).await?;
    if job.status == "cancelled" {
        close_log(data_dir, job_id, job.attempt).await;
        return Ok(None);
    }
    let status = match result.status.as_str() {
        "cancelled" => "failure", // cancelled by the runner itself (it is stopping)
        s => s,
    };
    let verdict = run_finish_hook(store, data_dir, &job, status).await;
    if !verdict.log.is_empty() {
        let dir = runs::log_dir(data_dir, job_id, job.attempt);
        let mut text = String::new();
        for l in &verdict.log {
            text.push_str(l);
            text.push('\n');
        }
        let res = with_writer(dir, move |w| {
            w.append(w.received(), text.as_bytes(), crate::logs::now_ms())
        })
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, job_id, "cannot annotate a job log");
        }
    }
    let mut reason = result.reason.clone();
    let (status, gate_failed) = match (&verdict.fail_reason, status) {
        (Some(r), "success") => {
            reason = Some(r.clone());
            ("failure", true)
        }
        _ => (status, false),
    };
    if !gate_failed && matches!(status, "failure" | "timed_out") {
        let when = q("SELECT retry_max, retry_when FROM build_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut store.read().await?)
            .await?;
        let (max, when) = (when.i64("retry_max")?, texts(&when.text("retry_when")?));
        let kind = if result.infra_failure {
            "infra_failure"
        } else {
            "script_failure"
        };
        if job.attempt < 1 + max && when.iter().any(|w| w == kind) {
            let reason = format!(
                "{}; retrying (attempt {} of {})",
                result.reason.as_deref().unwrap_or(status),
                job.attempt + 1,
                1 + max
            );
            if requeue(store, &job, &reason).await? {
                close_log(data_dir, job_id, job.attempt).await;
                return Ok(None);
            }
            return Err(stale());
        }
    }
    let next = match next {
        Some(n) if !draining(store, n.runner_id).await? => Some(n),
        _ => None,
    };
    let mut tx = store.begin().await?;
    let run = runs::finish_in(
        &mut tx,
        job_id,
        token,
        status,
        result.exit_code,
        reason.as_deref(),
    )
    .await?;
    let claim = match &next {
        Some(n) => {
            let lease = super::lease_ms(data_dir);
            runs::claim_next_in(&mut tx, n.runner_id, n.offer, lease).await?
        }
        None => None,
    };
    tx.commit().await?;
    super::wake::claimable(); // the job's dependents, its concurrency slot
    close_log(data_dir, job_id, job.attempt).await;
    post_if_finished(store, data_dir, &run).await;
    let (Some(c), Some(n)) = (claim, next) else {
        return Ok(None);
    };
    match claimed(store, data_dir, n.sbox, &c, n.kind).await {
        Ok(job) => Ok(Some(job)),
        Err(why) => {
            // As in [`claim`]: a job that cannot be handed out fails at once.
            tracing::warn!(job = c.job.id, error = %why, "cannot hand out a claimed job");
            Box::pin(finish(
                store,
                data_dir,
                c.job.id,
                &c.token,
                &not_handed_out(why),
            ))
            .await?;
            Ok(None)
        }
    }
}

/// What a [`FinishHook`] decided about an attempt that is ending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishVerdict {
    /// Lines appended to the attempt's log (e.g. a report's parse error with FILE:LINE:COL).
    pub log: Vec<String>,
    /// Fails a job whose steps succeeded, with this reason (a quality gate).
    pub fail_reason: Option<String>,
}

/// Work a later phase does when an attempt ends, before it is recorded: Test ingests the job's
/// reports (uploaded under [`crate::artifacts::REPORTS_PREFIX`]) and evaluates its quality gate.
/// Build does not depend on Test: the server installs the hook with [`set_finish_hook`]. The
/// hook must not fail the finish: its errors are logged and ignored.
pub trait FinishHook: Send + Sync {
    fn job_finishing<'a>(
        &'a self,
        store: &'a Store,
        data_dir: &'a Path,
        job: &'a runs::Job,
        status: &'a str,
    ) -> crate::exec::BoxFuture<'a, Result<FinishVerdict, StoreError>>;
}

static FINISH_HOOK: std::sync::OnceLock<std::sync::Arc<dyn FinishHook>> =
    std::sync::OnceLock::new();

/// Installs the hook [`finish`] calls for every ending attempt (once per process; later calls
/// are ignored, so it must not hold per-server state: it gets the store and data dir).
pub fn set_finish_hook(hook: std::sync::Arc<dyn FinishHook>) {
    let _ = FINISH_HOOK.set(hook);
}

async fn run_finish_hook(
    store: &Store,
    data_dir: &Path,
    job: &runs::Job,
    status: &str,
) -> FinishVerdict {
    let Some(h) = FINISH_HOOK.get() else {
        return FinishVerdict::default();
    };
    match h.job_finishing(store, data_dir, job, status).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, job_id = job.id, "the finish hook failed");
            FinishVerdict::default()
        }
    }
}

/// Handles every running job whose lease expired (see the module docs). Returns how many.
pub async fn reap(store: &Store, data_dir: &Path) -> Result<usize, StoreError> {
    let expired = q(
        "SELECT * FROM build_jobs WHERE status = 'running' AND lease_expires_at < $1 \
                     ORDER BY id LIMIT 100",
    )
    .bind(ouro_core::time::now_ms())
    .fetch_all(&mut store.read().await?)
    .await?;
    let mut n = 0;
    for row in &expired {
        let job = job_of(row)?;
        let Some(token) = job.attempt_token.clone() else {
            continue;
        };
        let (max, when) = (row.i64("retry_max")?, texts(&row.text("retry_when")?));
        if job.attempt < 1 + max && when.iter().any(|w| w == "infra_failure") {
            let reason = format!(
                "runner_lost; retrying (attempt {} of {})",
                job.attempt + 1,
                1 + max
            );
            if requeue(store, &job, &reason).await? {
                n += 1;
            }
        } else {
            match runs::finish_job_with_reason(
                store,
                job.id,
                &token,
                "failure",
                None,
                Some("runner_lost"),
            )
            .await
            {
                Ok(run) => {
                    n += 1;
                    post_if_finished(store, data_dir, &run).await;
                }
                Err(StoreError::Domain(e)) if e.code == ErrorCode::StaleAttempt => continue,
                Err(e) => return Err(e),
            }
        }
        close_log(data_dir, job.id, job.attempt).await;
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Runners

/// A runner as the admin sees it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunnerInfo {
    pub id: String,
    pub name: String,
    pub labels: Vec<String>,
    pub executors: Vec<String>,
    pub slots: i64,
    pub draining: bool,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub last_contact_at: Option<i64>,
    /// The jobs it runs now.
    pub jobs: Vec<CurrentJob>,
}

impl RunnerInfo {
    /// What it claims jobs with: its labels and executors.
    pub fn offer(&self) -> runs::Offer<'_> {
        runs::Offer {
            labels: &self.labels,
            executors: &self.executors,
        }
    }
}

/// A job a runner runs now.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CurrentJob {
    pub project: String,
    pub run: i64,
    pub job: String,
    pub job_id: i64,
}

fn runner_of(r: &Row) -> Result<RunnerInfo, StoreError> {
    Ok(RunnerInfo {
        id: r.text("id")?,
        name: r.text("name")?,
        labels: texts(&r.text("labels")?),
        executors: texts(&r.text("executors")?),
        slots: r.i64("slots")?,
        draining: r.i64("draining")? != 0,
        created_at: r.i64("created_at")?,
        last_contact_at: r.opt_i64("last_contact_at")?,
        jobs: Vec::new(),
    })
}

/// Every runner with its current jobs, by name.
pub async fn list_runners(store: &Store) -> Result<Vec<RunnerInfo>, StoreError> {
    let mut rd = store.read().await?;
    let mut runners = q("SELECT * FROM build_runners ORDER BY name, id")
        .fetch_all(&mut rd)
        .await?
        .iter()
        .map(runner_of)
        .collect::<Result<Vec<_>, _>>()?;
    let jobs = q(
        "SELECT j.id, j.job_key, j.runner_id, r.number, p.slug FROM build_jobs j \
                  JOIN build_runs r ON r.id = j.run_id JOIN projects p ON p.id = r.project_id \
                  WHERE j.status = 'running' ORDER BY j.id",
    )
    .fetch_all(&mut rd)
    .await?;
    for j in &jobs {
        let Some(rid) = j.opt_text("runner_id")? else {
            continue;
        };
        if let Some(r) = runners.iter_mut().find(|r| r.id == rid) {
            r.jobs.push(CurrentJob {
                project: j.text("slug")?,
                run: j.i64("number")?,
                job: j.text("job_key")?,
                job_id: j.i64("id")?,
            });
        }
    }
    Ok(runners)
}

/// One runner.
pub async fn get_runner(store: &Store, id: &str) -> Result<RunnerInfo, StoreError> {
    list_runners(store)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| {
            OuroError::new(
                ErrorCode::RunnerNotFound,
                format!("runner {id} does not exist"),
            )
            .into()
        })
}

/// Records (or refreshes) a runner that needs no registration (the in-process runner).
pub async fn upsert_runner(
    store: &Store,
    id: &str,
    name: &str,
    labels: &[String],
    executors: &[String],
    slots: i64,
) -> Result<(), StoreError> {
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    q("INSERT INTO build_runners (id, name, labels, executors, slots, created_at, last_contact_at) \
       VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (id) DO UPDATE SET name = $2, labels = $3, \
       executors = $4, slots = $5, last_contact_at = $6")
    .bind(id)
    .bind(name)
    .bind(json!(labels).to_string())
    .bind(json!(executors).to_string())
    .bind(slots)
    .bind(now)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Drains a runner (it finishes its current jobs and claims no new ones) or resumes it.
pub async fn set_draining(
    store: &Store,
    id: &str,
    draining: bool,
    actor: &Actor,
) -> Result<RunnerInfo, StoreError> {
    let mut tx = store.begin().await?;
    let n = q("UPDATE build_runners SET draining = $1 WHERE id = $2")
        .bind(i64::from(draining))
        .bind(id)
        .execute(&mut tx)
        .await?;
    if n != 1 {
        return Err(OuroError::new(
            ErrorCode::RunnerNotFound,
            format!("runner {id} does not exist"),
        )
        .into());
    }
    tx.append(NewEvent::new(
        ev::RUNNER_DRAINED,
        actor,
        id,
        json!({"draining": draining}),
    ))
    .await?;
    tx.commit().await?;
    get_runner(store, id).await
}

/// Creates a one-time runner registration token (valid for a day); returns it (shown once).
pub async fn create_registration_token(store: &Store, actor: &Actor) -> Result<String, StoreError> {
    let token = ouro_store::crypto::random_token("ourreg_");
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    q(
        "INSERT INTO build_runner_tokens (token_hash, created_by, created_at, expires_at) \
       VALUES ($1, $2, $3, $4)",
    )
    .bind(ouro_store::crypto::token_hash(&token))
    .bind(actor.label())
    .bind(now)
    .bind(now + 24 * 3600 * 1000)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(token)
}

fn bad_token() -> StoreError {
    OuroError::new(
        ErrorCode::RunnerTokenInvalid,
        "the runner token is unknown, used or expired",
    )
    .into()
}

/// A runner's registration.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Registered {
    pub id: String,
    /// Shown once: the runner authenticates with it (`Authorization: Bearer`).
    pub token: String,
}

/// Registers a runner with a registration token (used up by it).
pub async fn register(
    store: &Store,
    registration_token: &str,
    name: &str,
    labels: &[String],
    executors: &[String],
    slots: i64,
) -> Result<Registered, StoreError> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(OuroError::field("name", "1 to 100 characters").into());
    }
    for l in labels {
        let ok = !l.is_empty()
            && l.len() <= 50
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(OuroError::field("labels", format!("invalid label {l:?}")).into());
        }
    }
    check_executors(executors)?;
    if !(1..=256).contains(&slots) {
        return Err(OuroError::field("slots", "1 to 256").into());
    }
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let n = q(
        "UPDATE build_runner_tokens SET used_at = $1 WHERE token_hash = $2 \
               AND used_at IS NULL AND (expires_at IS NULL OR expires_at > $1)",
    )
    .bind(now)
    .bind(ouro_store::crypto::token_hash(registration_token))
    .execute(&mut tx)
    .await?;
    if n != 1 {
        return Err(bad_token());
    }
    let id = ouro_store::crypto::random_token("run_");
    let id = id[..16.min(id.len())].to_string();
    let token = ouro_store::crypto::random_token("ourrun_");
    q(
        "INSERT INTO build_runners (id, name, token_hash, labels, executors, slots, created_at, \
       last_contact_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(id.clone())
    .bind(name.trim())
    .bind(ouro_store::crypto::token_hash(&token))
    .bind(json!(labels).to_string())
    .bind(json!(executors).to_string())
    .bind(slots)
    .bind(now)
    .execute(&mut tx)
    .await?;
    tx.append(NewEvent::new(
        ev::RUNNER_REGISTERED,
        &ACTOR,
        id.clone(),
        json!({"name": name.trim(), "labels": labels}),
    ))
    .await?;
    tx.commit().await?;
    Ok(Registered { id, token })
}

/// The executors a runner may offer are those a job may name.
fn check_executors(executors: &[String]) -> Result<(), StoreError> {
    let known = ExecutorKind::ALL.map(ExecutorKind::name);
    match executors.iter().find(|e| !known.contains(&e.as_str())) {
        Some(e) => Err(OuroError::field(
            "executors",
            format!("unknown executor {e:?}: one of {}", known.join(", ")),
        )
        .into()),
        None => Ok(()),
    }
}

/// Records the executors a registered runner offers now: it may have restarted with or
/// without the sandbox since it registered. Only a change is written.
pub async fn set_executors(
    store: &Store,
    runner: &RunnerInfo,
    executors: &[String],
) -> Result<(), StoreError> {
    check_executors(executors)?;
    if runner.executors == executors {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    q("UPDATE build_runners SET executors = $1 WHERE id = $2")
        .bind(json!(executors).to_string())
        .bind(&runner.id)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The runner a runner token belongs to.
pub async fn runner_by_token(store: &Store, token: &str) -> Result<RunnerInfo, StoreError> {
    let row = q("SELECT * FROM build_runners WHERE token_hash = $1")
        .bind(ouro_store::crypto::token_hash(token))
        .fetch_optional(&mut store.read().await?)
        .await?
        .ok_or_else(bad_token)?;
    runner_of(&row)
}

/// The project and repository of the running job whose current attempt token is `token`
/// (job-token auth for cloning over smart HTTP).
pub async fn job_repo_for_token(
    store: &Store,
    token: &str,
) -> Result<Option<(i64, String)>, StoreError> {
    if token.is_empty() {
        return Ok(None);
    }
    q(
        "SELECT r.project_id, r.repo_name FROM build_jobs j JOIN build_runs r ON r.id = j.run_id \
       WHERE j.attempt_token = $1 AND j.status = 'running'",
    )
    .bind(token)
    .fetch_optional(&mut store.read().await?)
    .await?
    .map(|r| Ok((r.i64("project_id")?, r.text("repo_name")?)))
    .transpose()
}

/// The running job a job API token ([`super::job_api_token`]) belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobApiCaller {
    pub project_id: i64,
    pub run_number: i64,
    pub job_id: i64,
    pub job_key: String,
    pub repo: String,
}

/// Checks a job API token: the job must be running and the token derived from its current
/// attempt token. `None` otherwise (finished, retried, or a made-up token).
pub async fn job_for_api_token(
    store: &Store,
    token: &str,
) -> Result<Option<JobApiCaller>, StoreError> {
    let Some(rest) = token.strip_prefix(super::JOB_TOKEN_PREFIX) else {
        return Ok(None);
    };
    let Some(job_id) = rest.split('_').next().and_then(|n| n.parse::<i64>().ok()) else {
        return Ok(None);
    };
    let row = q(
        "SELECT j.attempt_token, j.job_key, r.project_id, r.number, r.repo_name FROM build_jobs j \
         JOIN build_runs r ON r.id = j.run_id WHERE j.id = $1 AND j.status = 'running'",
    )
    .bind(job_id)
    .fetch_optional(&mut store.read().await?)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let Some(attempt) = row.opt_text("attempt_token")? else {
        return Ok(None);
    };
    let expected = super::job_api_token(job_id, &attempt);
    let same = expected.len() == token.len()
        && expected
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Ok(None);
    }
    Ok(Some(JobApiCaller {
        project_id: row.i64("project_id")?,
        run_number: row.i64("number")?,
        job_id,
        job_key: row.text("job_key")?,
        repo: row.text("repo_name")?,
    }))
}

/// The result of a claimed job that could not be handed out (its workspace or secrets could
/// not be prepared): an infrastructure failure, so its `retry` policy applies.
fn not_handed_out(why: String) -> JobResult {
    JobResult {
        status: "failure".into(),
        exit_code: None,
        reason: Some(why),
        infra_failure: true,
        started_at_ms: 0,
        finished_at_ms: 0,
    }
}
