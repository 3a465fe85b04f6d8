//! Job executors: run one job's steps somewhere and report what happens.
//!
//! The interface is [`Executor`]: it takes a [`JobSpec`] and a [`JobContext`] (an event sink and a
//! cancellation signal) and returns a [`JobOutcome`]. Events ([`ExecEvent`]) go through a
//! *bounded* channel, so a job printing faster than the log store can take it is slowed down
//! (its pipe fills up and its writes block) instead of filling memory.
//!
//! Executors here:
//! - [`ShellExecutor`] (`shell`): steps run on the host in a fresh workspace per job, each in its
//!   own process group, with an allow-listed environment and rlimits;
//! - [`ShellExecutor::sandboxed`] (`sandbox`): the same inside bubblewrap (see [`sandbox`]).
//!
//! A container or Kubernetes executor implements the same trait: prepare the workspace (clone at
//! the commit), run each step as a process whose output is a byte stream, kill everything of the
//! job on cancel/timeout/end, emit the same events. See docs/executors.md.

pub mod limits;
pub mod sandbox;
pub mod shell;
pub mod spawn;
pub mod trees;
mod vspawn;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

pub use limits::Limits;
pub use sandbox::SandboxConfig;
pub use shell::ShellExecutor;

/// A boxed future (the trait stays object-safe: runners hold `Arc<dyn Executor>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the job's code comes from: a local repository and the exact commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    /// A bare or non-bare repository on this machine (cloned with shared objects).
    pub repo: PathBuf,
    /// The full commit id (40 or 64 hex digits).
    pub sha: String,
}

/// One step of a job (`if:` is evaluated by the scheduler; see [`JobContext::should_run`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StepSpec {
    pub name: String,
    /// The script.
    pub run: String,
    /// `bash` (default), `sh`, or a command line where `{0}` is the script file (`python3 {0}`).
    pub shell: Option<String>,
    /// Relative to the workspace; no `..`.
    pub working_directory: Option<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// A failure of this step does not fail the job.
    #[serde(default)]
    pub continue_on_error: bool,
}

/// One job to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobSpec {
    /// Used in directory names and `OURO_JOB_ID`: `[A-Za-z0-9_.-]`, at most 100 characters.
    pub id: String,
    pub checkout: Option<Checkout>,
    pub steps: Vec<StepSpec>,
    /// The job's variables (after expression evaluation), visible to every step.
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub limits: Limits,
    /// Network access (only the sandbox can turn it off).
    pub network: bool,
    /// Refuse to run anywhere but in a sandbox.
    pub require_sandbox: bool,
}

/// What an executor reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    StepStarted {
        index: usize,
        name: String,
    },
    /// Output bytes (stdout and stderr merged, in order). `step` is `None` for the executor's own
    /// lines (checkout).
    Log {
        step: Option<usize>,
        data: Vec<u8>,
    },
    StepFinished {
        index: usize,
        status: StepStatus,
        exit_code: Option<i32>,
        duration: Duration,
    },
    /// The scheduler's hook said no.
    StepSkipped {
        index: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Success,
    Failure,
    Cancelled,
    TimedOut,
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Success,
    Failure,
    Cancelled,
    TimedOut,
}

/// A step's result in the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    pub name: String,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub duration: Duration,
}

/// How the job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub status: JobStatus,
    /// Exit code of the failing step (or the last step).
    pub exit_code: Option<i32>,
    /// Why it failed when no step says it (checkout failed, ...).
    pub reason: Option<String>,
    pub duration: Duration,
    pub checkout_duration: Duration,
    pub steps: Vec<StepResult>,
}

/// What the step hook sees.
#[derive(Debug, Clone, Copy)]
pub struct StepState {
    pub index: usize,
    /// A previous step failed (and did not continue on error).
    pub job_failed: bool,
}

/// Decides whether a step runs (the scheduler evaluates `if:` here). Without a hook, steps run
/// until one fails.
pub type StepHook = Arc<dyn Fn(&StepSpec, StepState) -> bool + Send + Sync>;

/// Work done around a job's steps by the executor: restore caches and download the artifacts of
/// needed jobs after the checkout, upload artifacts and save caches after the steps (see
/// [`crate::artifacts::JobFiles`]). Lines for the job log go through `events` (`step: None`).
/// An `Err` fails the job with that reason.
pub trait JobHooks: Send + Sync {
    fn after_checkout<'a>(
        &'a self,
        workspace: &'a std::path::Path,
        events: &'a mpsc::Sender<ExecEvent>,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// `success`: every step succeeded (or continued on error). Not called for a cancelled or
    /// timed-out job.
    fn after_steps<'a>(
        &'a self,
        workspace: &'a std::path::Path,
        success: bool,
        events: &'a mpsc::Sender<ExecEvent>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The channels of one job run.
pub struct JobContext {
    pub events: mpsc::Sender<ExecEvent>,
    /// Becomes `true` to cancel.
    pub cancel: watch::Receiver<bool>,
    pub should_run: Option<StepHook>,
    /// Artifacts and caches around the steps (none: nothing happens).
    pub hooks: Option<Arc<dyn JobHooks>>,
}

impl JobContext {
    /// A context with a bounded event channel of `capacity` and its receiver, and the cancel
    /// sender.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<ExecEvent>, watch::Sender<bool>) {
        let (tx, rx) = mpsc::channel(capacity);
        let (ctx, crx) = watch::channel(false);
        (
            JobContext {
                events: tx,
                cancel: crx,
                should_run: None,
                hooks: None,
            },
            rx,
            ctx,
        )
    }
}

/// Errors that keep a job from running at all (the runner reports them as infrastructure
/// failures, not as a failed build).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("this runner cannot run the job: {0}")]
    Refused(String),
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("executor I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl ExecError {
    pub fn code(&self) -> &'static str {
        match self {
            ExecError::Refused(_) => "build.executor_refused",
            ExecError::Invalid(_) => "build.job_invalid",
            ExecError::Io(_) => "build.executor_io",
        }
    }
}

/// Runs jobs. Implementations must: give each job a fresh workspace with the commit checked out;
/// run steps in order, stopping at the first failure unless the hook says otherwise; kill every
/// process of the job on cancel, timeout and job end; emit events through the bounded channel
/// (awaiting sends is the backpressure); never run a `require_sandbox` job unsandboxed.
pub trait Executor: Send + Sync {
    /// `shell`, `sandbox`, ...: the executor a job that names none runs on.
    fn name(&self) -> &'static str;
    /// Every executor this one can run a job as: what the runner advertises, and the jobs
    /// naming one of them (`executor:`) it may claim.
    fn offers(&self) -> Vec<&'static str> {
        vec![self.name()]
    }
    /// Whether this executor can run on this machine now (with the reason when not).
    fn available(&self) -> Result<(), String>;
    fn run<'a>(
        &'a self,
        job: &'a JobSpec,
        ctx: JobContext,
    ) -> BoxFuture<'a, Result<JobOutcome, ExecError>>;
}

/// Checks the names and values a job hands to the environment and the file system.
pub(crate) fn validate(job: &JobSpec) -> Result<(), ExecError> {
    let id_ok = !job.id.is_empty()
        && job.id.len() <= 100
        && job
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !job.id.starts_with('.');
    if !id_ok {
        return Err(ExecError::Invalid(format!("job id {:?}", job.id)));
    }
    if let Some(c) = &job.checkout {
        let hex = c.sha.bytes().all(|b| b.is_ascii_hexdigit());
        if !(hex && (c.sha.len() == 40 || c.sha.len() == 64)) {
            return Err(ExecError::Invalid(format!(
                "commit {:?} is not a full commit id",
                c.sha
            )));
        }
    }
    let env_names = job
        .env
        .iter()
        .chain(job.steps.iter().flat_map(|s| s.env.iter()));
    for (k, v) in env_names {
        let ok = !k.is_empty()
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(ExecError::Invalid(format!(
                "environment variable name {k:?}"
            )));
        }
        if v.contains('\0') {
            return Err(ExecError::Invalid(format!(
                "environment variable {k} contains NUL"
            )));
        }
    }
    for s in &job.steps {
        if let Some(wd) = &s.working_directory {
            let p = std::path::Path::new(wd);
            if p.is_absolute()
                || p.components().any(|c| {
                    !matches!(
                        c,
                        std::path::Component::Normal(_) | std::path::Component::CurDir
                    )
                })
            {
                return Err(ExecError::Invalid(format!(
                    "step {:?}: working-directory {wd:?} must be relative, without `..`",
                    s.name
                )));
            }
        }
    }
    Ok(())
}

/// The result of [`run_logged`].
#[derive(Debug)]
pub struct LoggedRun {
    pub outcome: JobOutcome,
    pub log: crate::logs::LogMeta,
}

/// Why [`run_logged`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunLoggedError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The log could not be written (the job was stopped: nobody could see its output).
    #[error(transparent)]
    Log(#[from] crate::logs::LogError),
}

/// Runs `job` with `ex`, feeding its events through `log` (masking, sections, the store) on a
/// blocking thread, with a bounded channel in between: the in-process runner and `ouro run` use
/// this. Cancel through `cancel`; `should_run` is the step hook. If the log cannot be written the
/// job is stopped and the log error returned.
pub async fn run_logged(
    ex: &dyn Executor,
    job: &JobSpec,
    log: crate::logs::JobLog,
    cancel: watch::Receiver<bool>,
    should_run: Option<StepHook>,
) -> Result<LoggedRun, RunLoggedError> {
    run_logged_with_hooks(ex, job, log, cancel, should_run, None).await
}

/// [`run_logged`] with [`JobHooks`] (artifacts and caches: pass an
/// [`crate::artifacts::JobFiles`]).
pub async fn run_logged_with_hooks(
    ex: &dyn Executor,
    job: &JobSpec,
    mut log: crate::logs::JobLog,
    cancel: watch::Receiver<bool>,
    should_run: Option<StepHook>,
    hooks: Option<Arc<dyn JobHooks>>,
) -> Result<LoggedRun, RunLoggedError> {
    let (tx, mut rx) = mpsc::channel::<ExecEvent>(16);
    let store = tokio::task::spawn_blocking(move || {
        while let Some(ev) = rx.blocking_recv() {
            // On an error `rx` is dropped: the executor's next send fails and it stops the job.
            log.handle(&ev, crate::logs::now_ms())?;
        }
        log.finish()
    });
    let ctx = JobContext {
        events: tx,
        cancel,
        should_run,
        hooks,
    };
    let outcome = ex.run(job, ctx).await;
    let meta = store
        .await
        .map_err(|e| crate::logs::LogError::Io(std::io::Error::other(e)))?;
    let outcome = outcome?;
    Ok(LoggedRun {
        outcome,
        log: meta?,
    })
}
