//! Runners: the protocol between the server and whatever executes jobs, and the runner itself.
//!
//! - [`RunnerApi`] is the protocol, seen from a runner: claim a job (long-poll), heartbeat (which
//!   carries cancellation back), append log chunks by byte offset, mark step sections, finish.
//!   Every job write carries the attempt token; a write from an attempt that is no longer the
//!   job's current one is refused ([`ApiError::Stale`]).
//! - [`server`] holds the server side of every call (the HTTP handlers and the in-process runner
//!   both call it: one lease logic), the reaper ([`server::reap`]) and runner registration.
//! - [`local`] is the in-process runner of `ouro serve`: N slots, [`local::LocalApi`] calling
//!   [`server`] directly.
//! - [`cache`]: the pipeline file, parsed and planned, cached per run for the claim and worker.
//! - [`wake`]: claimers wait for a job to become claimable instead of polling.
//! - [`worker`] runs one claimed job on a runner: it plans the job from the pipeline file at the
//!   commit with the same planner as `ouro run` ([`crate::plan::plan_jobs`], `decide`, `job_context`,
//!   [`crate::local::prepare`]), runs it with an [`crate::exec::Executor`], masks the output and
//!   ships it in chunks, heartbeats, and finishes.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::exec::BoxFuture;

pub mod cache;
pub mod local;
pub mod server;
pub mod wake;
pub mod worker;

/// How long a lease lasts without a heartbeat, unless the instance sets its own ([`set_lease`]).
pub const LEASE_MS: i64 = 30_000;
/// The shortest and longest lease an instance may set (at least three heartbeats).
pub const MIN_LEASE_SECS: u64 = 6;
pub const MAX_LEASE_SECS: u64 = 3600;

type Leases = std::sync::Mutex<Vec<(std::path::PathBuf, i64)>>;

fn leases() -> &'static Leases {
    static L: std::sync::OnceLock<Leases> = std::sync::OnceLock::new();
    L.get_or_init(Default::default)
}

/// Sets the job lease of the instance with this data dir (`[build] lease_seconds`): how long a
/// job stays with a runner that stopped heartbeating before it is retried or fails with
/// `runner_lost`. Kept per data dir, so several servers in one process (tests) keep their own.
pub fn set_lease(data_dir: &std::path::Path, lease: Duration) {
    let ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let mut l = leases().lock().unwrap_or_else(|e| e.into_inner());
    l.retain(|(d, _)| d != data_dir);
    l.push((data_dir.to_path_buf(), ms));
}

/// The job lease of the instance with this data dir, in milliseconds ([`LEASE_MS`] unless set).
pub fn lease_ms(data_dir: &std::path::Path) -> i64 {
    let l = leases().lock().unwrap_or_else(|e| e.into_inner());
    l.iter()
        .find(|(d, _)| d == data_dir)
        .map_or(LEASE_MS, |(_, ms)| *ms)
}
/// How often a runner heartbeats a running job.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// The largest log chunk a runner sends.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// How long a claim waits for a job at most (long-poll).
pub const CLAIM_WAIT: Duration = Duration::from_secs(25);

/// The prefix of a job's API token (`OURO_JOB_TOKEN`).
pub const JOB_TOKEN_PREFIX: &str = "ourojob_";

/// The API token a job's steps get as `OURO_JOB_TOKEN`: `ourojob_{job id}_{hex}` where hex is
/// the SHA-256 of the attempt token under a fixed label. It is derived, never stored: the server
/// recomputes it from the job's current attempt token ([`server::job_for_api_token`]), so it is
/// valid only while that attempt runs, and a step that reads it cannot recover the attempt token
/// (which would let it write the job's log or finish it).
pub fn job_api_token(job_id: i64, attempt_token: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ouro-job-api-token\0");
    h.update(attempt_token.as_bytes());
    format!("{JOB_TOKEN_PREFIX}{job_id}_{:x}", h.finalize())
}

/// What caused the run, as stored with it: the runner plans the job again from it, so `ouro.*`,
/// `inputs.*` and `if:` evaluate as they did when the run was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClaimTrigger {
    /// `push`, `manual`, ... (`rerun` for a re-run).
    pub kind: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub actor: String,
    /// The planner's event (`push`, `change_request`, `schedule`, `manual`, `api`; a re-run
    /// keeps its original run's). Absent from older servers: `kind` is used.
    #[serde(default)]
    pub event: Option<String>,
    /// A change request's target branch.
    #[serde(default)]
    pub target_branch: Option<String>,
    /// The run's manual inputs (typed values as strings; the runner types them again against
    /// the pipeline's declared inputs).
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

/// Where the runner gets the commit from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckoutSource {
    /// The bare repository on this machine (the in-process runner).
    Local { repo_path: String, sha: String },
    /// Smart HTTP on the server: `path` is relative to the server URL (`/git/demo/app.git`); the
    /// credentials are user `ouro-job`, password the attempt token.
    Git { path: String, sha: String },
}

/// What a claim hands a runner: everything it needs to plan and run the job on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClaimedJob {
    pub run_id: i64,
    pub run_number: i64,
    pub job_id: i64,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// Carried by every later write of this attempt (`Ouro-Attempt-Token` over HTTP).
    pub token: String,
    pub project: String,
    pub repo: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file's path (`.ouro/pipelines/ci.yml`) and its text at the commit.
    pub file: String,
    pub pipeline_file: String,
    /// The job's key in the run (`build (linux)`).
    pub job_key: String,
    pub trigger: ClaimTrigger,
    /// The states of the jobs this one needs, by key.
    pub needs: BTreeMap<String, String>,
    /// Variables the job gets in its environment.
    pub variables: BTreeMap<String, String>,
    /// Secrets (`secrets.NAME`): masked in the log.
    pub secrets: BTreeMap<String, String>,
    pub checkout: CheckoutSource,
}

/// A step section mark: `start` (with the step's name) or `end` (with its exit code).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SectionMark {
    pub step: usize,
    /// `start` or `end`.
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// The end of an attempt, as the runner reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobResult {
    /// `success`, `failure`, `timed_out`, `skipped` (its `if:` is false) or `cancelled`.
    pub status: String,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The failure is the runner's or the executor's, not the script's (`retry.when:
    /// infra_failure`).
    #[serde(default)]
    pub infra_failure: bool,
    /// Unix ms.
    #[serde(default)]
    pub started_at_ms: u64,
    #[serde(default)]
    pub finished_at_ms: u64,
}

/// Why a protocol call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The attempt is no longer the job's current one: stop the job, send nothing more.
    #[error("this attempt is no longer the job's current one")]
    Stale,
    /// Anything else (network, server error): the call may be retried.
    #[error("{0}")]
    Failed(String),
}

/// The runner protocol, seen from a runner (see the module docs).
pub trait RunnerApi: Send + Sync {
    /// A job for this runner, waiting up to `wait` for one.
    fn claim(&self, wait: Duration) -> BoxFuture<'_, Result<Option<ClaimedJob>, ApiError>>;
    /// Extends the lease; `true` when the job was cancelled.
    fn heartbeat<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, ApiError>>;
    /// Appends masked output at byte `offset` of the attempt's log (idempotent).
    fn append_log<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
        offset: u64,
        data: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
    /// Marks a step start or end at the current end of the log.
    fn section<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
        mark: SectionMark,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
    /// Ends the attempt.
    fn finish<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
        result: JobResult,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
    /// [`RunnerApi::finish`], and the runner's next job claimed with the same write when the
    /// server can (the in-process runner: one transaction, see
    /// [`server::finish_then_claim`]); `None`: claim as usual. The default only finishes.
    fn finish_and_claim<'a>(
        &'a self,
        job_id: i64,
        token: &'a str,
        result: JobResult,
    ) -> BoxFuture<'a, Result<Option<ClaimedJob>, ApiError>> {
        Box::pin(async move { self.finish(job_id, token, result).await.map(|()| None) })
    }
    /// The job's artifact and cache hooks ([`crate::artifacts::JobFiles`]): restore caches and
    /// download the artifacts of its needs after the checkout, upload artifacts and save caches
    /// after its steps. `None`: nothing to do (no `cache:`, `artifacts:` or needs).
    fn job_hooks(
        &self,
        _job: &ClaimedJob,
        _spec: &crate::pipeline::Job,
        _ctx: crate::expr::Context,
    ) -> Option<std::sync::Arc<dyn crate::exec::JobHooks>> {
        None
    }
    /// The server's base URL jobs can call (`OURO_SERVER_URL`), when known.
    fn server_url(&self) -> Option<String> {
        None
    }
}
