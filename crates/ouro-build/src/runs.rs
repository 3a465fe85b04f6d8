//! Pipeline runs on the server: storage (`build_runs`, `build_jobs`), creating runs for a push or
//! a manual trigger from the pipeline files *at the commit*, cancelling, and the job lease that
//! runners will claim work with.
//!
//! - A run is numbered per project (`build_counters`, never reused). Its status is derived from
//!   its jobs ([`derive_status`]): queued, running, success, failure or cancelled.
//! - An invalid pipeline file still gets a run: status `failure`, no jobs, the diagnostics stored
//!   (`diagnostics`), and a `failure` commit status. A push is never silently ignored.
//! - Every state change appends an event in the same transaction: `pipeline.queued` (created),
//!   `pipeline.started`, `pipeline.finished`, `job.started`, `job.finished`.
//! - A run posts one commit status per pipeline, named `ouro/<pipeline name>`, through
//!   `ouro_code::cr::post_status`, so the change request merge gate sees it.
//! - Runner protocol (groundwork): [`claim_next`] gives a runner a queued job whose `needs` all
//!   succeeded, with a lease and a fresh attempt token; a job whose lease expired can be claimed
//!   again (a new attempt, a new token). [`heartbeat`] and [`finish_job`] refuse a token that is
//!   not the job's current one (`build.stale_attempt`).
//!
//! Runs are planned by [`crate::plan::plan`], the planner `ouro run` uses (trigger filters, matrix
//! jobs, needs, DAG layers); [`jobs_of_plan`] turns a plan into job rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use ouro_code::cr::{self, NewStatus, StatusState};
use ouro_code::repos::Repo;
use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::{Executor, Row, Store, StoreError, Tx, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::diag::Diagnostic;
use crate::pipeline::Pipeline;

/// Where pipeline files live in a repository.
pub const PIPELINE_DIR: &str = ".ouro/pipelines/";
/// At most this many pipeline files are read per commit.
pub const MAX_FILES: usize = 50;
/// Run states.
pub const RUN_STATUSES: [&str; 5] = ["queued", "running", "success", "failure", "cancelled"];
/// Job states.
pub const JOB_STATUSES: [&str; 7] = [
    "queued",
    "running",
    "success",
    "failure",
    "cancelled",
    "skipped",
    "timed_out",
];
const ACTOR: Actor = Actor::System("pipelines");

/// A pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Run {
    pub id: i64,
    /// Numbered per project, never reused.
    pub number: i64,
    /// `queued`, `running`, `success`, `failure` or `cancelled`.
    pub status: String,
    /// The full ref name (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub repo: String,
    /// The pipeline's `name` (the file name without `.yml` when it has none).
    pub pipeline: String,
    /// The pipeline file (`.ouro/pipelines/ci.yml`).
    pub file: String,
    /// `push` or `manual`.
    pub trigger: String,
    /// Who caused the run (a ledger actor label, e.g. `user:alice`).
    pub actor: String,
    /// The file's diagnostics when it is invalid (`file`, `line`, `col`, `code`, `message`, ...).
    #[schemars(with = "Vec<serde_json::Value>")]
    pub diagnostics: Vec<Value>,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<i64>,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<i64>,
    pub version: i64,
    /// The change request this run builds (trigger `change_request`, or a re-run of one).
    pub cr_number: Option<i64>,
    /// Whether whoever caused the run is trusted (a change request's author who is not a member
    /// with at least developer is not): untrusted runs get no secrets.
    pub trusted: bool,
    /// Claim priority: 2 manual, API, change request and re-run; 1 push; 0 schedule.
    pub priority: i64,
    /// For a re-run: the number of the run it re-runs.
    pub rerun_of: Option<i64>,
    /// The typed inputs of a manual run (`{}` otherwise).
    #[schemars(with = "serde_json::Value")]
    pub inputs: Value,
    /// The planner's event (`push`, `change_request`, `schedule`, `manual`, `api`): `trigger`
    /// except for a re-run, which keeps the event of the run it re-runs.
    #[serde(skip)]
    pub event: String,
    /// A change request run's target branch (`ouro` context, `change_request.branches`).
    #[serde(skip)]
    pub target_branch: Option<String>,
    #[serde(skip)]
    pub project_id: i64,
    #[serde(skip)]
    pub repo_id: Option<i64>,
    /// The pipeline-level `concurrency` group (rendered at creation): runs of a group go one at
    /// a time, oldest first.
    pub concurrency_group: Option<String>,
}

/// A job of a run.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Job {
    pub id: i64,
    /// Unique in the run: the job id, with the matrix values for a matrix job (`test (linux)`).
    pub key: String,
    pub name: String,
    /// Keys of the jobs this one waits for.
    pub needs: Vec<String>,
    #[schemars(with = "serde_json::Value")]
    pub matrix: Value,
    /// The DAG layer: 0 for jobs without needs, else one more than the deepest need.
    pub layer: i64,
    /// `queued`, `running`, `success`, `failure`, `cancelled`, `skipped` or `timed_out`.
    pub status: String,
    /// How many times a runner claimed it.
    pub attempt: i64,
    pub runner_id: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub lease_expires_at: Option<i64>,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<i64>,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    /// The job's concurrency group, rendered at run creation (`None`: no group).
    pub concurrency_group: Option<String>,
    /// For a re-run: the number of the run whose result this job reuses (it did not run again).
    pub reused_from: Option<i64>,
    /// The `runs-on` labels: only a runner having all of them claims the job.
    pub labels: Vec<String>,
    /// The executor the job must run on (`shell`, `sandbox`); `None`: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    /// `continue-on-error`: a failure or timeout of this job does not fail the run, and the
    /// jobs that need it run as if it had succeeded.
    #[serde(default)]
    pub continue_on_error: bool,
    /// `retry.max` and `retry.when` of the job (kept for re-runs and the runner's retry).
    #[serde(skip)]
    pub retry_max: i64,
    #[serde(skip)]
    pub retry_when: Vec<String>,
    /// Whether its `if:` may let it run after a need failed (see
    /// [`crate::plan::RunPlan::runs_after_failed_needs`]): not skipped with its failed needs.
    #[serde(skip)]
    pub after_failure: bool,
    #[serde(skip)]
    pub run_id: i64,
    #[serde(skip)]
    pub version: i64,
    #[serde(skip)]
    pub attempt_token: Option<String>,
}

/// A run with its jobs.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub jobs: Vec<Job>,
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub key: String,
    pub name: String,
    pub needs: Vec<String>,
    pub matrix: Value,
    pub layer: i64,
    /// The rendered `concurrency.group` (`None`: no group).
    pub group: Option<String>,
    /// `concurrency.cancel-in-progress`: creating this job cancels the group's older jobs.
    pub cancel_in_progress: bool,
    /// `runs-on` labels.
    pub labels: Vec<String>,
    /// See [`Job::executor`].
    pub executor: Option<String>,
    /// `retry.max` (0: no retry) and `retry.when` (`infra_failure`, `script_failure`).
    pub retry_max: i64,
    pub retry_when: Vec<String>,
    /// See [`Job::after_failure`].
    pub after_failure: bool,
    /// See [`Job::continue_on_error`].
    pub continue_on_error: bool,
}

/// Where the log of one attempt of a job is stored (a [`crate::logs::LogWriter`] directory):
/// `<data dir>/build/logs/<job id>/<attempt>`. The runner protocol writes it, the log pages
/// and the API read it.
pub fn log_dir(data_dir: &Path, job_id: i64, attempt: i64) -> std::path::PathBuf {
    data_dir
        .join("build")
        .join("logs")
        .join(job_id.to_string())
        .join(attempt.to_string())
}

fn not_found(number: i64) -> OuroError {
    OuroError::new(
        ErrorCode::RunNotFound,
        format!("pipeline run #{number} does not exist in this project"),
    )
}

fn stale() -> StoreError {
    OuroError::new(
        ErrorCode::StaleAttempt,
        "this attempt is no longer the job's current one (its lease expired or the job ended)",
    )
    .into()
}

fn json_list(text: &str) -> Vec<Value> {
    serde_json::from_str(text).unwrap_or_default()
}

fn run_from(r: &Row) -> Result<Run, StoreError> {
    Ok(Run {
        id: r.i64("id")?,
        number: r.i64("number")?,
        status: r.text("status")?,
        git_ref: r.text("git_ref")?,
        sha: r.text("sha")?,
        repo: r.text("repo_name")?,
        pipeline: r.text("name")?,
        file: r.text("file")?,
        trigger: r.text("trigger_kind")?,
        actor: r.text("actor")?,
        diagnostics: json_list(&r.text("diagnostics")?),
        created_at: r.i64("created_at")?,
        started_at: r.opt_i64("started_at")?,
        finished_at: r.opt_i64("finished_at")?,
        version: r.i64("version")?,
        cr_number: r.opt_i64("cr_number")?,
        trusted: r.bool("trusted")?,
        priority: r.i64("priority")?,
        rerun_of: r.opt_i64("rerun_of")?,
        inputs: serde_json::from_str(&r.text("inputs")?).unwrap_or_else(|_| json!({})),
        event: match r.opt_text("event")? {
            Some(e) => e,
            None => r.text("trigger_kind")?,
        },
        target_branch: r.opt_text("target_branch")?,
        project_id: r.i64("project_id")?,
        repo_id: r.opt_i64("repo_id")?,
        concurrency_group: r.opt_text("concurrency_group")?,
    })
}

pub(crate) fn job_from(r: &Row) -> Result<Job, StoreError> {
    Ok(Job {
        id: r.i64("id")?,
        key: r.text("job_key")?,
        name: r.text("name")?,
        needs: json_list(&r.text("needs")?)
            .into_iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        matrix: serde_json::from_str(&r.text("matrix")?).unwrap_or(Value::Null),
        layer: r.i64("layer")?,
        status: r.text("status")?,
        attempt: r.i64("attempt")?,
        runner_id: r.opt_text("runner_id")?,
        lease_expires_at: r.opt_i64("lease_expires_at")?,
        started_at: r.opt_i64("started_at")?,
        finished_at: r.opt_i64("finished_at")?,
        exit_code: r.opt_i64("exit_code")?,
        reason: r.opt_text("reason")?,
        concurrency_group: r.opt_text("concurrency_group")?,
        reused_from: r.opt_i64("reused_from")?,
        labels: json_list(&r.text("labels")?)
            .into_iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        executor: r.opt_text("executor")?,
        retry_max: r.i64("retry_max")?,
        retry_when: json_list(&r.text("retry_when")?)
            .into_iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        after_failure: r.bool("after_failure")?,
        continue_on_error: r.bool("continue_on_error")?,
        run_id: r.i64("run_id")?,
        version: r.i64("version")?,
        attempt_token: r.opt_text("attempt_token")?,
    })
}

// ---------------------------------------------------------------------------------------------
// From a pipeline to jobs (until the planner lands)

// ---------------------------------------------------------------------------------------------
// Reading pipeline files at a commit

fn git_failed(what: &str, msg: String) -> StoreError {
    OuroError::new(ErrorCode::GitFailed, format!("reading {what} failed"))
        .with_details(json!({"git": msg}))
        .into()
}

/// The pipeline files (`.ouro/pipelines/*.yml`) of commit `sha` in the bare repository `dir`,
/// with their bytes, sorted by path (at most [`MAX_FILES`]), read in process.
pub async fn pipeline_files(dir: &Path, sha: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let (d, s) = (dir.to_path_buf(), sha.to_string());
    tokio::task::spawn_blocking(move || {
        ouro_code::git::files_in_dir(
            &d,
            &s,
            PIPELINE_DIR.trim_end_matches('/'),
            |p| p.ends_with(".yml"),
            MAX_FILES,
        )
    })
    .await
    .map_err(|e| git_failed("the pipeline files", e.to_string()))?
    .map_err(|e| git_failed("the pipeline files", e.message))
}

// ---------------------------------------------------------------------------------------------
// Creating runs

/// The jobs of a valid pipeline, or the diagnostics of an invalid one.
type Planned = Result<Vec<NewJob>, Vec<Diagnostic>>;

/// What caused the runs.
#[derive(Debug, Clone, Default)]
pub struct TriggerInfo {
    /// `push`, `manual`, `api`, `change_request`, `schedule` or `rerun`.
    pub kind: &'static str,
    pub git_ref: String,
    pub sha: String,
    /// The ledger label of who caused it (`user:alice`).
    pub actor: String,
    /// Files the push changed (`None`: unknown or not a push).
    pub changed: Option<Vec<String>>,
    /// Makes creation idempotent: one run per (source key, file). `event:<seq>` for a push.
    pub source_key: Option<String>,
    /// A change request's number (trigger `change_request`).
    pub cr_number: Option<i64>,
    /// A change request's target branch (what `on.change_request.branches` filters).
    pub target_branch: Option<String>,
    /// Whether whoever caused it is trusted (see [`Run::trusted`]). Set by the trigger.
    pub trusted: bool,
    /// Manual inputs as given (typed against the pipeline's `manual.inputs`).
    pub inputs: BTreeMap<String, String>,
    /// Only this pipeline file (a schedule belongs to one file).
    pub file: Option<String>,
    /// For a re-run: the run it re-runs.
    pub rerun_of: Option<i64>,
    /// The planner's event when it is not `kind` (a re-run keeps its original run's event).
    pub event: Option<String>,
}

/// The planner's view of a trigger: the same `on:` filters `ouro run` applies.
fn plan_trigger(repo: &str, t: &TriggerInfo) -> crate::plan::Trigger {
    use crate::plan::EventKind;
    let branch = t.git_ref.strip_prefix("refs/heads/").map(String::from);
    let tag = t.git_ref.strip_prefix("refs/tags/").map(String::from);
    crate::plan::Trigger {
        event: EventKind::parse(t.kind).unwrap_or(EventKind::Manual),
        git_ref: t.git_ref.clone(),
        branch,
        tag,
        target_branch: t.target_branch.clone(),
        sha: t.sha.clone(),
        changed_paths: t.changed.clone(),
        inputs: t.inputs.clone(),
        actor: t.actor.clone(),
        project: String::new(),
        repo: repo.to_string(),
        run_number: 0,
    }
}

/// The job rows of a planned run: the planner's display ids (`build (linux, 1.80)`) as keys.
pub fn jobs_of_plan(rp: &crate::plan::RunPlan) -> Vec<NewJob> {
    rp.jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let (group, cancel_in_progress) = crate::triggers::job_group(rp, i);
            NewJob {
                key: j.id.clone(),
                name: j.name.clone(),
                needs: j.needs.iter().map(|&n| rp.jobs[n].id.clone()).collect(),
                matrix: Value::Object(j.matrix.clone()),
                layer: j.layer as i64,
                group,
                cancel_in_progress,
                labels: j.spec.runs_on.to_vec(),
                executor: j.spec.executor.map(|e| e.name().to_string()),
                retry_max: j.spec.retry.as_ref().map_or(0, |r| i64::from(r.max)),
                retry_when: j.spec.retry.as_ref().map_or_else(Vec::new, |r| {
                    r.when
                        .iter()
                        .map(|w| match w {
                            crate::pipeline::RetryWhen::InfraFailure => "infra_failure".to_string(),
                            crate::pipeline::RetryWhen::ScriptFailure => {
                                "script_failure".to_string()
                            }
                        })
                        .collect()
                }),
                after_failure: rp.runs_after_failed_needs(i),
                continue_on_error: j.spec.continue_on_error,
            }
        })
        .collect()
}

async fn slug_of(ex: &mut impl Executor, project_id: i64) -> Result<String, StoreError> {
    q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(ex)
        .await?
        .text("slug")
}

fn pipeline_name(file: &str, p: Option<&Pipeline>) -> String {
    p.and_then(|p| p.name.clone()).unwrap_or_else(|| {
        file.rsplit('/')
            .next()
            .unwrap_or(file)
            .trim_end_matches(".yml")
            .to_string()
    })
}

/// Creates the runs for `trigger` on `repo` from the pipeline files at `trigger.sha`: a queued run
/// per valid file whose `on:` matches (push filters; `manual` for a manual trigger), a failed run
/// per invalid file. Posts the commit statuses. Returns the runs created (none when `source_key`
/// was seen before).
pub async fn create_runs(
    store: &Store,
    root: &Path,
    repo: &Repo,
    trigger: &TriggerInfo,
) -> Result<Vec<Run>, StoreError> {
    let files = pipeline_files(&repo.dir(root), &trigger.sha).await?;
    let mut planned: Vec<(String, String, Planned)> = Vec::new();
    // The pipeline-level concurrency group of each file's run (and cancel-in-progress).
    let mut run_groups: BTreeMap<String, (Option<String>, bool)> = BTreeMap::new();
    let mut inputs: BTreeMap<String, Value> = BTreeMap::new();
    for (file, bytes) in &files {
        if trigger.file.as_ref().is_some_and(|f| f != file) {
            continue;
        }
        match crate::pipeline::parse(file, bytes) {
            Ok(p) => {
                let name = pipeline_name(file, Some(&p));
                match crate::plan::plan(&name, &p, &plan_trigger(&repo.name, trigger)) {
                    Ok(rp) => {
                        inputs.insert(file.clone(), Value::Object(rp.inputs.clone()));
                        run_groups.insert(file.clone(), crate::triggers::run_group(&p, &rp));
                        planned.push((file.clone(), name, Ok(jobs_of_plan(&rp))))
                    }
                    Err(crate::plan::PlanError::NotTriggered(_)) => {}
                    // Inputs given by hand are checked before anything is created: 422.
                    Err(crate::plan::PlanError::Input { input, message })
                        if matches!(trigger.kind, "manual" | "api") =>
                    {
                        return Err(OuroError::field(
                            &format!("inputs.{input}"),
                            format!("input `{input}`: {message}"),
                        )
                        .into());
                    }
                    Err(e) => planned.push((
                        file.clone(),
                        name,
                        Err(vec![Diagnostic::error(file, 1, 1, e.code(), e.to_string())]),
                    )),
                }
            }
            Err(d) => planned.push((file.clone(), pipeline_name(file, None), Err(d))),
        }
    }
    let mut tx = store.begin().await?;
    let slug = slug_of(&mut tx, repo.project_id).await?;
    let mut created = Vec::new();
    let mut superseded = Vec::new();
    for (file, name, jobs) in planned {
        if let Some(key) = &trigger.source_key {
            let seen = q(
                "SELECT id FROM build_runs WHERE project_id = $1 AND source_key = $2 AND file = $3",
            )
            .bind(repo.project_id)
            .bind(key.clone())
            .bind(file.clone())
            .fetch_optional(&mut tx)
            .await?;
            if seen.is_some() {
                continue;
            }
        }
        let cancel_groups: Vec<String> = match &jobs {
            Ok(js) => js
                .iter()
                .filter(|j| j.cancel_in_progress)
                .filter_map(|j| j.group.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        let typed = inputs.remove(&file).unwrap_or_else(|| json!({}));
        let mut run = insert_run(&mut tx, &slug, repo, trigger, &file, &name, jobs, &typed).await?;
        if let Some((Some(group), cancel)) = run_groups.remove(&file) {
            q("UPDATE build_runs SET concurrency_group = $1 WHERE id = $2")
                .bind(group.clone())
                .bind(run.id)
                .execute(&mut tx)
                .await?;
            run.concurrency_group = Some(group.clone());
            if cancel {
                superseded.extend(
                    crate::triggers::cancel_superseded_runs(&mut tx, &slug, &run, &group).await?,
                );
            }
        }
        superseded.extend(
            crate::triggers::cancel_superseded(&mut tx, &slug, &run, &cancel_groups).await?,
        );
        created.push(run);
    }
    tx.commit().await?;
    if !created.is_empty() || !superseded.is_empty() {
        crate::runner::wake::claimable();
    }
    for run in &created {
        post_run_status(store, root, repo, &slug, run).await;
    }
    for run in superseded.iter().filter(|r| r.repo_id == Some(repo.id)) {
        post_run_status(store, root, repo, &slug, run).await;
    }
    Ok(created)
}

/// Inserts a run and its queued jobs (numbered, with its `pipeline.queued` event; a failed run
/// with the diagnostics when `jobs` is `Err`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_run(
    tx: &mut Tx,
    slug: &str,
    repo: &Repo,
    trigger: &TriggerInfo,
    file: &str,
    name: &str,
    jobs: Result<Vec<NewJob>, Vec<Diagnostic>>,
    inputs: &Value,
) -> Result<Run, StoreError> {
    let now = ouro_core::time::now_ms();
    let number = q("INSERT INTO build_counters (project_id, last_number) VALUES ($1, 1) \
                    ON CONFLICT (project_id) DO UPDATE SET last_number = build_counters.last_number + 1 \
                    RETURNING last_number")
    .bind(repo.project_id)
    .fetch_one(&mut *tx)
    .await?
    .i64("last_number")?;
    let (status, diags, finished) = match &jobs {
        Ok(_) => ("queued", "[]".to_string(), None),
        Err(d) => (
            "failure",
            serde_json::to_string(d).unwrap_or_else(|_| "[]".into()),
            Some(now),
        ),
    };
    let id = q(
        "INSERT INTO build_runs (project_id, repo_id, repo_name, number, trigger_kind, source_key, \
                git_ref, sha, actor, status, file, name, diagnostics, created_at, finished_at, \
                cr_number, trusted, priority, rerun_of, inputs, event, target_branch) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                $16, $17, $18, $19, $20, $21, $22) RETURNING id",
    )
    .bind(repo.project_id)
    .bind(repo.id)
    .bind(repo.name.clone())
    .bind(number)
    .bind(trigger.kind)
    .bind(trigger.source_key.clone())
    .bind(trigger.git_ref.clone())
    .bind(trigger.sha.clone())
    .bind(trigger.actor.clone())
    .bind(status)
    .bind(file)
    .bind(name)
    .bind(diags)
    .bind(now)
    .bind(finished)
    .bind(trigger.cr_number)
    .bind(trigger.trusted)
    .bind(crate::triggers::priority(trigger.kind))
    .bind(trigger.rerun_of)
    .bind(inputs.to_string())
    .bind(
        trigger
            .event
            .clone()
            .unwrap_or_else(|| trigger.kind.to_string()),
    )
    .bind(trigger.target_branch.clone())
    .fetch_one(&mut *tx)
    .await?
    .i64("id")?;
    let keys: Vec<String> = match &jobs {
        Ok(jobs) => jobs.iter().map(|j| j.key.clone()).collect(),
        Err(_) => Vec::new(),
    };
    if let Ok(jobs) = &jobs {
        for j in jobs {
            q(
                "INSERT INTO build_jobs (run_id, job_key, name, needs, matrix, layer, status, \
                 concurrency_group, labels, retry_max, retry_when, after_failure, continue_on_error, \
                 executor) \
               VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(id)
            .bind(j.key.clone())
            .bind(j.name.clone())
            .bind(serde_json::to_string(&j.needs).unwrap_or_else(|_| "[]".into()))
            .bind(j.matrix.to_string())
            .bind(j.layer)
            .bind(j.group.clone())
            .bind(serde_json::to_string(&j.labels).unwrap_or_else(|_| "[]".into()))
            .bind(j.retry_max)
            .bind(serde_json::to_string(&j.retry_when).unwrap_or_else(|_| "[]".into()))
            .bind(j.after_failure)
            .bind(j.continue_on_error)
            .bind(j.executor.clone())
            .execute(&mut *tx)
            .await?;
        }
    }
    let payload = json!({"number": number, "repo": repo.name, "ref": trigger.git_ref,
        "sha": trigger.sha, "pipeline": name, "file": file, "trigger": trigger.kind,
        "status": status, "jobs": keys, "cr_number": trigger.cr_number,
        "rerun_of": trigger.rerun_of, "trusted": trigger.trusted});
    tx.append(
        NewEvent::new(ev::PIPELINE_QUEUED, &ACTOR, id, payload).in_project(repo.project_id, slug),
    )
    .await?;
    if status == "failure" {
        tx.append(
            NewEvent::new(
                ev::PIPELINE_FINISHED,
                &ACTOR,
                id,
                json!({"number": number, "status": "failure", "reason": "invalid_pipeline"}),
            )
            .in_project(repo.project_id, slug),
        )
        .await?;
    }
    get_by_id(&mut *tx, id).await
}

/// Posts the commit status that matches the run's state (`ouro/<pipeline>`). A failure is
/// logged, not returned: the run exists either way.
pub async fn post_run_status(store: &Store, root: &Path, repo: &Repo, slug: &str, run: &Run) {
    let (state, description) = match run.status.as_str() {
        "queued" | "running" => (
            StatusState::Pending,
            format!("pipeline #{} is {}", run.number, run.status),
        ),
        "success" => (
            StatusState::Success,
            format!("pipeline #{} passed", run.number),
        ),
        "cancelled" => (
            StatusState::Failure,
            format!("pipeline #{} was cancelled", run.number),
        ),
        _ if !run.diagnostics.is_empty() => {
            let first = run
                .diagnostics
                .first()
                .map(|d| {
                    format!(
                        "{}:{}:{}: error[{}]: {}",
                        d["file"].as_str().unwrap_or(""),
                        d["line"],
                        d["col"],
                        d["code"].as_str().unwrap_or(""),
                        d["message"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_default();
            (
                StatusState::Failure,
                format!("invalid pipeline file: {first}"),
            )
        }
        _ => (
            StatusState::Failure,
            format!("pipeline #{} failed", run.number),
        ),
    };
    let description: String = description.chars().take(1000).collect();
    let new = NewStatus {
        name: format!("ouro/{}", run.pipeline).chars().take(100).collect(),
        state,
        url: None,
        description: Some(description),
    };
    if let Err(e) = cr::post_status(store, root, repo, slug, &ACTOR, &run.sha, &new).await {
        tracing::warn!(run = run.id, error = %e, "cannot post the pipeline's commit status");
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A run by its id (the subject of its `pipeline.*` events).
pub async fn get_by_id(ex: &mut impl Executor, id: i64) -> Result<Run, StoreError> {
    run_from(
        &q("SELECT * FROM build_runs WHERE id = $1")
            .bind(id)
            .fetch_one(ex)
            .await?,
    )
}

/// A run by number, or `build.run_not_found`.
pub async fn get(ex: &mut impl Executor, project_id: i64, number: i64) -> Result<Run, StoreError> {
    q("SELECT * FROM build_runs WHERE project_id = $1 AND number = $2")
        .bind(project_id)
        .bind(number)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(run_from)
        .transpose()?
        .ok_or_else(|| not_found(number).into())
}

/// A run's jobs, by layer then key.
pub async fn jobs(ex: &mut impl Executor, run_id: i64) -> Result<Vec<Job>, StoreError> {
    q("SELECT * FROM build_jobs WHERE run_id = $1 ORDER BY layer, job_key")
        .bind(run_id)
        .fetch_all(ex)
        .await?
        .iter()
        .map(job_from)
        .collect()
}

/// A run with its jobs.
pub async fn detail(
    ex: &mut impl Executor,
    project_id: i64,
    number: i64,
) -> Result<RunDetail, StoreError> {
    let run = get(ex, project_id, number).await?;
    let jobs = jobs(ex, run.id).await?;
    Ok(RunDetail { run, jobs })
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListFilter {
    pub status: Option<String>,
    /// A full ref (`refs/heads/main`) or a branch or tag name.
    pub git_ref: Option<String>,
    pub repo_id: Option<i64>,
    /// Only runs numbered below this (the previous page's `next_cursor`).
    pub before: Option<i64>,
    pub limit: i64,
}

/// A project's runs, newest first.
pub async fn list(
    ex: &mut impl Executor,
    project_id: i64,
    f: &ListFilter,
) -> Result<Vec<Run>, StoreError> {
    let mut sql = String::from("SELECT * FROM build_runs WHERE project_id = $1 AND number < $2");
    let mut args: Vec<String> = Vec::new();
    if let Some(s) = &f.status {
        args.push(s.clone());
        sql.push_str(&format!(" AND status = ${}", args.len() + 2));
    }
    if let Some(r) = &f.git_ref {
        let forms = if r.starts_with("refs/") {
            vec![r.clone(), r.clone()]
        } else {
            vec![format!("refs/heads/{r}"), format!("refs/tags/{r}")]
        };
        let n = args.len() + 2;
        sql.push_str(&format!(" AND git_ref IN (${}, ${})", n + 1, n + 2));
        args.extend(forms);
    }
    let repo_pos = args.len() + 3;
    if f.repo_id.is_some() {
        sql.push_str(&format!(" AND repo_id = ${repo_pos}"));
    }
    sql.push_str(&format!(
        " ORDER BY number DESC LIMIT {}",
        f.limit.clamp(1, 200)
    ));
    let mut query = q(sql).bind(project_id).bind(f.before.unwrap_or(i64::MAX));
    for a in args {
        query = query.bind(a);
    }
    if let Some(r) = f.repo_id {
        query = query.bind(r);
    }
    query.fetch_all(ex).await?.iter().map(run_from).collect()
}

/// At most this many runs are listed for one commit or change request.
pub const RUNS_PER_TARGET: i64 = 50;

/// The runs of one commit of a repository (any trigger), newest first.
pub async fn for_commit(
    ex: &mut impl Executor,
    repo_id: i64,
    sha: &str,
) -> Result<Vec<Run>, StoreError> {
    q(format!(
        "SELECT * FROM build_runs WHERE repo_id = $1 AND sha = $2 ORDER BY number DESC LIMIT {RUNS_PER_TARGET}"
    ))
    .bind(repo_id)
    .bind(sha.to_string())
    .fetch_all(ex)
    .await?
    .iter()
    .map(run_from)
    .collect()
}

/// The runs a change request shows, newest first: those that build it (`cr_number`) and those of
/// its head commit (the push runs of its source branch, whose statuses its merge gate sees).
pub async fn for_change_request(
    ex: &mut impl Executor,
    repo_id: i64,
    cr_number: i64,
    head: &str,
) -> Result<Vec<Run>, StoreError> {
    q(format!(
        "SELECT * FROM build_runs WHERE repo_id = $1 AND (cr_number = $2 OR sha = $3) ORDER BY number DESC LIMIT {RUNS_PER_TARGET}"
    ))
    .bind(repo_id)
    .bind(cr_number)
    .bind(head.to_string())
    .fetch_all(ex)
    .await?
    .iter()
    .map(run_from)
    .collect()
}

// ---------------------------------------------------------------------------------------------
// State changes

/// A job's status as the run sees it: a failure or timeout of a `continue-on-error` job counts
/// as done (it neither fails the run nor skips the jobs that need it).
pub fn effective_status(status: &str, continue_on_error: bool) -> &str {
    if continue_on_error && matches!(status, "failure" | "timed_out") {
        "success"
    } else {
        status
    }
}

/// A run's status from its jobs' statuses (see the module docs).
pub fn derive_status<'a>(jobs: impl IntoIterator<Item = &'a str>) -> &'static str {
    let (mut open, mut running, mut done, mut failed, mut cancelled) = (0, 0, 0, 0, 0);
    for s in jobs {
        match s {
            "queued" => open += 1,
            "running" => running += 1,
            "failure" | "timed_out" => failed += 1,
            "cancelled" => cancelled += 1,
            _ => done += 1,
        }
    }
    if open + running > 0 {
        if running + done + failed + cancelled > 0 {
            "running"
        } else {
            "queued"
        }
    } else if failed > 0 {
        "failure"
    } else if cancelled > 0 {
        "cancelled"
    } else {
        "success"
    }
}

fn is_finished(status: &str) -> bool {
    matches!(status, "success" | "failure" | "cancelled")
}

/// Sets the run's status from its jobs, with its event; returns the run.
pub(crate) async fn rederive(tx: &mut Tx, run: &Run, slug: &str) -> Result<Run, StoreError> {
    // Only which states occur matters to `derive_status`, not how often.
    let states = q("SELECT DISTINCT status, continue_on_error FROM build_jobs WHERE run_id = $1")
        .bind(run.id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok(effective_status(&r.text("status")?, r.bool("continue_on_error")?).to_string()))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let status = derive_status(states.iter().map(String::as_str));
    if status != run.status {
        let now = ouro_core::time::now_ms();
        let finished = is_finished(status).then_some(now);
        let started = run.started_at.or((status != "queued").then_some(now));
        q("UPDATE build_runs SET status = $1, started_at = $2, finished_at = $3, version = version + 1 \
           WHERE id = $4")
        .bind(status)
        .bind(started)
        .bind(finished)
        .bind(run.id)
        .execute(&mut *tx)
        .await?;
        let kind = if is_finished(status) {
            Some(ev::PIPELINE_FINISHED)
        } else if run.status == "queued" {
            Some(ev::PIPELINE_STARTED)
        } else {
            None
        };
        if let Some(kind) = kind {
            tx.append(
                NewEvent::new(
                    kind,
                    &ACTOR,
                    run.id,
                    json!({"number": run.number, "status": status, "pipeline": run.pipeline,
                           "ref": run.git_ref, "sha": run.sha}),
                )
                .in_project(run.project_id, slug),
            )
            .await?;
        }
    }
    get_by_id(&mut *tx, run.id).await
}

/// Cancels a run: its queued and running jobs become `cancelled` (a running job's runner learns
/// it from its next heartbeat), the run's status is derived again. A finished run: 409.
pub async fn cancel(
    store: &Store,
    project_id: i64,
    number: i64,
    actor: &Actor,
) -> Result<RunDetail, StoreError> {
    let mut tx = store.begin().await?;
    let run = get(&mut tx, project_id, number).await?;
    if is_finished(&run.status) {
        return Err(OuroError::new(
            ErrorCode::RunFinished,
            format!(
                "pipeline run #{number} has already finished ({})",
                run.status
            ),
        )
        .into());
    }
    let slug = slug_of(&mut tx, project_id).await?;
    let now = ouro_core::time::now_ms();
    for j in jobs(&mut tx, run.id).await? {
        if !matches!(j.status.as_str(), "queued" | "running") {
            continue;
        }
        q(
            "UPDATE build_jobs SET status = 'cancelled', finished_at = $1, reason = 'cancelled', \
           lease_expires_at = NULL, version = version + 1 WHERE id = $2",
        )
        .bind(now)
        .bind(j.id)
        .execute(&mut tx)
        .await?;
        tx.append(
            NewEvent::new(
                ev::JOB_FINISHED,
                actor,
                j.id,
                json!({"run": run.number, "job": j.key, "status": "cancelled", "reason": "cancelled"}),
            )
            .in_project(project_id, &slug),
        )
        .await?;
    }
    let run = rederive(&mut tx, &run, &slug).await?;
    let jobs = jobs(&mut tx, run.id).await?;
    tx.commit().await?;
    crate::runner::wake::claimable(); // its concurrency slots are free
    Ok(RunDetail { run, jobs })
}

/// A job a runner claimed: the job, its run and the attempt token every later write carries.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: Job,
    pub run: Run,
    pub token: String,
}

/// What a runner offers: its labels and its executors. It claims a job only when it has all of
/// the job's `runs-on` labels and, when the job names an executor, offers that executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offer<'a> {
    pub labels: &'a [String],
    pub executors: &'a [String],
}

impl Offer<'_> {
    /// Whether a runner with this offer may run `job`.
    pub fn fits(&self, job: &Job) -> bool {
        job.labels.iter().all(|l| self.labels.contains(l))
            && job
                .executor
                .as_ref()
                .is_none_or(|e| self.executors.contains(e))
    }
}

/// Gives `runner_id` the oldest claimable job: a queued job of a queued or running run whose
/// `needs` all succeeded (or were skipped), without `runs-on` labels and not naming an
/// executor. A running job whose lease expired is not claimed here: the reaper
/// ([`crate::runner::reap`]) re-queues or fails it. The lease lasts `lease_ms`; the claim is a compare-and-set on the job's version, so two runners
/// never hold the same job.
pub async fn claim_next(
    store: &Store,
    runner_id: &str,
    lease_ms: i64,
) -> Result<Option<Claim>, StoreError> {
    claim_next_labeled(store, runner_id, Offer::default(), lease_ms).await
}

/// [`claim_next`] for a runner with `offer`: a job is claimed only when it [fits](Offer::fits).
pub async fn claim_next_labeled(
    store: &Store,
    runner_id: &str,
    offer: Offer<'_>,
    lease_ms: i64,
) -> Result<Option<Claim>, StoreError> {
    let mut candidates = Candidates::default();
    let mut states = HashMap::new();
    loop {
        let batch = candidates.next(&mut store.read().await?).await?;
        if batch.is_empty() {
            return Ok(None);
        }
        for job in batch {
            if !claim_ready(&mut store.read().await?, &mut states, &job, offer).await? {
                continue;
            }
            let mut tx = store.begin().await?;
            // Not taken (another runner was first, or admission refused): it rolls back.
            if let Some(c) = take(&mut tx, job, runner_id, lease_ms).await? {
                tx.commit().await?;
                return Ok(Some(c));
            }
        }
    }
}

/// [`claim_next_labeled`] inside the caller's transaction `tx` (which sees the caller's own
/// changes, e.g. the job it just finished): each attempt is undone alone (a savepoint) when the
/// job cannot be taken. Committing is the caller's.
pub async fn claim_next_in(
    tx: &mut Tx,
    runner_id: &str,
    offer: Offer<'_>,
    lease_ms: i64,
) -> Result<Option<Claim>, StoreError> {
    let mut candidates = Candidates::default();
    let mut states = HashMap::new();
    loop {
        let batch = candidates.next(&mut *tx).await?;
        if batch.is_empty() {
            return Ok(None);
        }
        for job in batch {
            if !claim_ready(&mut *tx, &mut states, &job, offer).await? {
                continue;
            }
            q("SAVEPOINT ouro_claim").execute(&mut *tx).await?;
            match take(tx, job, runner_id, lease_ms).await? {
                Some(c) => {
                    q("RELEASE SAVEPOINT ouro_claim").execute(&mut *tx).await?;
                    return Ok(Some(c));
                }
                None => {
                    q("ROLLBACK TO SAVEPOINT ouro_claim")
                        .execute(&mut *tx)
                        .await?;
                    q("RELEASE SAVEPOINT ouro_claim").execute(&mut *tx).await?;
                }
            }
        }
    }
}

/// The queued jobs a claim considers: the oldest [`Candidates::WINDOW`] of live runs that pass
/// the concurrency pre-check, by priority, read a few at a time. The first ones are usually
/// claimable, and the waiting jobs of a long chain need not all be read and decoded per claim.
#[derive(Default)]
struct Candidates {
    read: usize,
    done: bool,
}

impl Candidates {
    const WINDOW: usize = 100;
    const FIRST_BATCH: usize = 8;

    /// The next batch; empty when the window is used up or no queued job is left.
    async fn next(&mut self, ex: &mut impl Executor) -> Result<Vec<Job>, StoreError> {
        if self.done {
            return Ok(Vec::new());
        }
        // 8, then 24 (32 read), then the rest of the window.
        let limit = match self.read {
            0 => Self::FIRST_BATCH,
            n if n < 4 * Self::FIRST_BATCH => 3 * n,
            n => Self::WINDOW - n,
        };
        let jobs = q(format!(
            "SELECT j.* FROM build_jobs j JOIN build_runs r ON r.id = j.run_id \
             WHERE r.status IN ('queued', 'running') AND j.status = 'queued' \
             AND {} ORDER BY r.priority DESC, j.id LIMIT {limit} OFFSET {}",
            crate::triggers::CLAIMABLE_SQL,
            self.read
        ))
        .fetch_all(ex)
        .await?
        .iter()
        .map(job_from)
        .collect::<Result<Vec<_>, _>>()?;
        self.read += jobs.len();
        self.done = jobs.len() < limit || self.read >= Self::WINDOW;
        Ok(jobs)
    }
}

/// Whether `job` may start on a runner with `offer`: it [fits](Offer::fits) and the job's
/// needs are done. `states` caches each run's job statuses as the run sees them
/// (`effective_status`: continue-on-error failures count as done).
async fn claim_ready(
    ex: &mut impl Executor,
    states: &mut HashMap<i64, HashMap<String, String>>,
    job: &Job,
    offer: Offer<'_>,
) -> Result<bool, StoreError> {
    if !offer.fits(job) {
        return Ok(false);
    }
    if job.needs.is_empty() {
        return Ok(true);
    }
    let s = states.entry(job.run_id).or_default();
    let missing: Vec<&String> = job.needs.iter().filter(|n| !s.contains_key(*n)).collect();
    if !missing.is_empty() {
        for (key, status, continue_on_error) in job_states(ex, job.run_id, &missing).await? {
            s.insert(
                key,
                effective_status(&status, continue_on_error).to_string(),
            );
        }
        for n in missing {
            // A need without a row (not expected) is never done; not asked again.
            s.entry(n.clone()).or_default();
        }
    }
    // A job whose `if:` may run after a failure waits for its needs to finish, whatever
    // their result: the runner decides its `if:` ([`crate::plan::RunPlan::decide`]).
    Ok(job
        .needs
        .iter()
        .all(|n| match s.get(n).map(String::as_str) {
            Some("success" | "skipped") => true,
            Some("failure" | "timed_out" | "cancelled") => job.after_failure,
            _ => false,
        }))
}

/// `(key, status, continue_on_error)` of the jobs of run `run_id` named in `keys` (only those
/// rows: a run may have hundreds of jobs).
pub(crate) async fn job_states(
    ex: &mut impl Executor,
    run_id: i64,
    keys: &[&String],
) -> Result<Vec<(String, String, bool)>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let marks: Vec<String> = (2..keys.len() + 2).map(|i| format!("${i}")).collect();
    let mut read = q(format!(
        "SELECT job_key, status, continue_on_error FROM build_jobs \
         WHERE run_id = $1 AND job_key IN ({})",
        marks.join(", ")
    ))
    .bind(run_id);
    for k in keys {
        read = read.bind(k.as_str());
    }
    read.fetch_all(ex)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.text("job_key")?,
                r.text("status")?,
                r.bool("continue_on_error")?,
            ))
        })
        .collect()
}

/// Takes `job` for `runner_id` in `tx`: a compare-and-set on its version (so two runners never
/// hold the same job), then admission (concurrency group, project limit), the `job.started`
/// event and the run's status. `None`: not taken; the caller must undo what `tx` did since the
/// attempt began (admission refused after the update).
async fn take(
    tx: &mut Tx,
    job: Job,
    runner_id: &str,
    lease_ms: i64,
) -> Result<Option<Claim>, StoreError> {
    let now = ouro_core::time::now_ms();
    let token = ouro_store::crypto::random_token("att_");
    let n = q(
        "UPDATE build_jobs SET status = 'running', attempt = attempt + 1, runner_id = $1, \
               lease_expires_at = $2, attempt_token = $3, started_at = $4, version = version + 1 \
               WHERE id = $5 AND version = $6",
    )
    .bind(runner_id)
    .bind(now + lease_ms)
    .bind(token.clone())
    .bind(now)
    .bind(job.id)
    .bind(job.version)
    .execute(&mut *tx)
    .await?;
    if n != 1 {
        return Ok(None); // another runner took it
    }
    let run = get_by_id(&mut *tx, job.run_id).await?;
    if !crate::triggers::admit(tx, &run, &job).await? {
        return Ok(None); // its concurrency group or the project's limit is full
    }
    let slug = slug_of(&mut *tx, run.project_id).await?;
    tx.append(
        NewEvent::new(
            ev::JOB_STARTED,
            &ACTOR,
            job.id,
            json!({"run": run.number, "job": job.key, "attempt": job.attempt + 1,
                   "runner": runner_id, "reclaimed": job.status == "running"}),
        )
        .in_project(run.project_id, &slug),
    )
    .await?;
    let run = rederive(tx, &run, &slug).await?;
    let job = job_from(
        &q("SELECT * FROM build_jobs WHERE id = $1")
            .bind(job.id)
            .fetch_one(&mut *tx)
            .await?,
    )?;
    Ok(Some(Claim { job, run, token }))
}

async fn job_for_token(tx: &mut Tx, job_id: i64, token: &str) -> Result<Job, StoreError> {
    let job = q("SELECT * FROM build_jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(job_from)
        .transpose()?
        .ok_or_else(stale)?;
    if job.attempt_token.as_deref() != Some(token) {
        return Err(stale());
    }
    Ok(job)
}

/// Extends the lease of the attempt holding `token`. Returns `true` when the job was cancelled
/// (the runner should stop it). A token that is not the job's current one: `build.stale_attempt`.
pub async fn heartbeat(
    store: &Store,
    job_id: i64,
    token: &str,
    lease_ms: i64,
) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let job = job_for_token(&mut tx, job_id, token).await?;
    match job.status.as_str() {
        "running" => {
            q("UPDATE build_jobs SET lease_expires_at = $1 WHERE id = $2")
                .bind(ouro_core::time::now_ms() + lease_ms)
                .bind(job_id)
                .execute(&mut tx)
                .await?;
            tx.commit().await?;
            Ok(false)
        }
        "cancelled" => Ok(true),
        _ => Err(stale()),
    }
}

/// Records the end of the attempt holding `token`: `success`, `failure` or `timed_out`, with the
/// exit code. Queued jobs that (transitively) need a job that did not succeed become `skipped`.
/// Returns the run after the change. A stale token or a job that is not running:
/// `build.stale_attempt`.
pub async fn finish_job(
    store: &Store,
    job_id: i64,
    token: &str,
    status: &str,
    exit_code: Option<i64>,
) -> Result<Run, StoreError> {
    finish_job_with_reason(store, job_id, token, status, exit_code, None).await
}

/// [`finish_job`] with a reason (`exit code 1`, `runner_lost`, ...); `skipped` is accepted too
/// (the runner decided the job's `if:` is false).
pub async fn finish_job_with_reason(
    store: &Store,
    job_id: i64,
    token: &str,
    status: &str,
    exit_code: Option<i64>,
    reason: Option<&str>,
) -> Result<Run, StoreError> {
    let mut tx = store.begin().await?;
    let run = finish_in(&mut tx, job_id, token, status, exit_code, reason).await?;
    tx.commit().await?;
    crate::runner::wake::claimable(); // its dependents, its concurrency slot
    Ok(run)
}

/// [`finish_job_with_reason`] inside the caller's transaction (committing and raising
/// [`crate::runner::wake::claimable`] afterwards are the caller's).
pub async fn finish_in(
    tx: &mut Tx,
    job_id: i64,
    token: &str,
    status: &str,
    exit_code: Option<i64>,
    reason: Option<&str>,
) -> Result<Run, StoreError> {
    if !matches!(status, "success" | "failure" | "timed_out" | "skipped") {
        return Err(OuroError::field("status", "success, failure, timed_out or skipped").into());
    }
    let job = job_for_token(tx, job_id, token).await?;
    if job.status != "running" {
        return Err(stale());
    }
    let run = get_by_id(&mut *tx, job.run_id).await?;
    let slug = slug_of(&mut *tx, run.project_id).await?;
    let now = ouro_core::time::now_ms();
    q("UPDATE build_jobs SET status = $1, exit_code = $2, finished_at = $3, lease_expires_at = NULL, \
       reason = $4, version = version + 1 WHERE id = $5")
    .bind(status)
    .bind(exit_code)
    .bind(now)
    .bind(reason.map(String::from))
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    tx.append(
        NewEvent::new(
            ev::JOB_FINISHED,
            &ACTOR,
            job_id,
            json!({"run": run.number, "job": job.key, "status": status, "exit_code": exit_code,
                   "reason": reason}),
        )
        .in_project(run.project_id, &slug),
    )
    .await?;
    if !matches!(
        effective_status(status, job.continue_on_error),
        "success" | "skipped"
    ) {
        let all = jobs(&mut *tx, run.id).await?;
        for j in skipped_with_failed(&all, BTreeSet::from([job.key.clone()])) {
            q("UPDATE build_jobs SET status = 'skipped', reason = 'needs_failed', finished_at = $1, \
               version = version + 1 WHERE id = $2")
            .bind(now)
            .bind(j.id)
            .execute(&mut *tx)
            .await?;
            tx.append(
                NewEvent::new(
                    ev::JOB_FINISHED,
                    &ACTOR,
                    j.id,
                    json!({"run": run.number, "job": j.key, "status": "skipped", "reason": "needs_failed"}),
                )
                .in_project(run.project_id, &slug),
            )
            .await?;
        }
    }
    rederive(tx, &run, &slug).await
}

/// The queued jobs of a run (`all`) to skip because a job in `dead` (ended without success)
/// is among their needs, directly or through another skipped job. Jobs whose `if:` may run
/// after a failure ([`Job::after_failure`]) are not skipped (nor, through them, their
/// dependents): they wait for their needs and a runner decides their `if:`.
pub(crate) fn skipped_with_failed(all: &[Job], mut dead: BTreeSet<String>) -> Vec<&Job> {
    let mut out = Vec::new();
    let mut changed = true;
    while changed {
        changed = false;
        for j in all {
            if j.status == "queued"
                && !j.after_failure
                && !dead.contains(&j.key)
                && j.needs.iter().any(|n| dead.contains(n))
            {
                dead.insert(j.key.clone());
                out.push(j);
                changed = true;
            }
        }
    }
    out
}

/// The running job whose current attempt holds `token` (runner writes other than the lease ones:
/// artifacts, caches). Anything else: `build.stale_attempt`.
pub async fn check_attempt(
    ex: &mut impl Executor,
    job_id: i64,
    token: &str,
) -> Result<Job, StoreError> {
    let job = q("SELECT * FROM build_jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(&mut *ex)
        .await?
        .as_ref()
        .map(job_from)
        .transpose()?
        .ok_or_else(stale)?;
    if job.attempt_token.as_deref() != Some(token) || job.status != "running" {
        return Err(stale());
    }
    Ok(job)
}

/// A run by its id.
pub async fn run_by_id(ex: &mut impl Executor, id: i64) -> Result<Run, StoreError> {
    get_by_id(ex, id).await
}

// ---------------------------------------------------------------------------------------------
// The push trigger

/// The event consumer that creates runs for pushes (`code.pushed`, not imports, not deletions).
/// Idempotent: keyed by the event's seq and the file.
pub struct PushTrigger {
    /// Where the bare repositories live (`ouro_code::repos::root(data_dir)`).
    pub root: std::path::PathBuf,
}

/// The files a push changed, or `None` when the event does not list them all.
fn changed_files(payload: &Value) -> Option<Vec<String>> {
    if payload["truncated"].as_bool() == Some(true) {
        return None;
    }
    let mut out = BTreeSet::new();
    for c in payload["commits"].as_array()? {
        let files = c["files"].as_array()?;
        if c["files_changed"].as_u64().unwrap_or(0) as usize > files.len() {
            return None;
        }
        out.extend(files.iter().filter_map(|f| f.as_str().map(String::from)));
    }
    Some(out.into_iter().collect())
}

/// Handles one event for [`PushTrigger`] (public for tests that replay an event).
pub async fn on_event(
    store: &Store,
    root: &Path,
    event: &ouro_core::Event,
) -> Result<Vec<Run>, StoreError> {
    let p = &event.payload;
    if event.kind != ev::CODE_PUSHED.name
        || p["imported"].as_bool() == Some(true)
        || p["deleted"].as_bool() == Some(true)
    {
        return Ok(Vec::new());
    }
    let (Some(project_id), Some(name), Some(refname), Some(sha)) = (
        event.project_id,
        p["repo"].as_str(),
        p["ref"].as_str(),
        p["new"].as_str(),
    ) else {
        return Ok(Vec::new());
    };
    if !(refname.starts_with("refs/heads/") || refname.starts_with("refs/tags/")) {
        return Ok(Vec::new());
    }
    let Some(repo) = ouro_code::repos::by_name(&mut store.read().await?, project_id, name).await?
    else {
        return Ok(Vec::new()); // deleted since
    };
    if repo.id.to_string() != event.subject.id {
        return Ok(Vec::new()); // a newer repository of the same name
    }
    let trigger = TriggerInfo {
        kind: "push",
        git_ref: refname.to_string(),
        sha: sha.to_string(),
        actor: event.actor.clone(),
        changed: changed_files(p),
        source_key: Some(format!("event:{}", event.seq)),
        trusted: true, // whoever may push is trusted
        ..Default::default()
    };
    match create_runs(store, root, &repo, &trigger).await {
        // The commit may be gone (a force push since): nothing to build.
        Err(StoreError::Domain(e)) if e.code == ErrorCode::GitFailed => {
            tracing::warn!(seq = event.seq, error = %e, "cannot read the pushed pipeline files");
            Ok(Vec::new())
        }
        other => other,
    }
}

impl ouro_store::consumers::Consumer for PushTrigger {
    fn name(&self) -> &'static str {
        "build.push_trigger"
    }

    fn handle<'a>(
        &'a self,
        store: &'a Store,
        event: &'a ouro_core::Event,
    ) -> ouro_store::consumers::BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move {
            on_event(store, &self.root, event)
                .await
                .map(|_| ())
                .map_err(OuroError::from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(text: &str) -> Pipeline {
        crate::pipeline::parse("ci.yml", text.as_bytes()).expect("valid")
    }

    fn push(git_ref: &str) -> TriggerInfo {
        TriggerInfo {
            kind: "push",
            git_ref: git_ref.into(),
            sha: "0".repeat(40),
            actor: "user:alice".into(),
            changed: None,
            source_key: None,
            ..Default::default()
        }
    }

    /// Server runs are planned by the same planner as `ouro run` (filters, matrix, needs, layers).
    #[test]
    fn jobs_come_from_the_planner_with_matrix_needs_and_layers() {
        let p = pipeline(
            "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    strategy:\n      matrix:\n        os: [linux, mac]\n    steps:\n      - run: x\n  test:\n    needs: build\n    steps:\n      - run: x\n  deploy:\n    needs: [test]\n    steps:\n      - run: x\n",
        );
        let rp = crate::plan::plan("ci", &p, &plan_trigger("app", &push("refs/heads/main")))
            .expect("runs on main");
        let jobs = jobs_of_plan(&rp);
        let keys: Vec<(&str, i64)> = jobs.iter().map(|j| (j.key.as_str(), j.layer)).collect();
        assert_eq!(
            keys,
            vec![
                ("build (linux)", 0),
                ("build (mac)", 0),
                ("test", 1),
                ("deploy", 2)
            ]
        );
        assert_eq!(jobs[2].needs, vec!["build (linux)", "build (mac)"]);
        assert_eq!(jobs[0].matrix, json!({"os": "linux"}));
        // The branch filter is the planner's: another branch gets no run.
        assert!(matches!(
            crate::plan::plan("ci", &p, &plan_trigger("app", &push("refs/heads/topic"))),
            Err(crate::plan::PlanError::NotTriggered(_))
        ));
    }
}
