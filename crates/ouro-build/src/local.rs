//! The local scheduler: runs a [`RunPlan`] in memory with N slots through an [`Executor`]
//! (`ouro run` uses it with the shell executor).
//!
//! It starts ready jobs as slots free up (in plan order), decides each job's `if:` when its
//! needs have finished ([`RunPlan::decide`]), renders `${{ }}` in env, names and scripts when the
//! job starts, layers the environment (pipeline `env` < job `env` < step `env`), evaluates step
//! `if:` through the executor's [`StepHook`], applies `timeout-minutes` (job default: 60),
//! `continue-on-error` and `retry`, and cancels everything when the cancel signal turns `true`.
//! What happens is reported as [`Progress`] events, in order (a job's log lines come before its
//! `JobFinished`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::exec::{
    Checkout, ExecEvent, Executor, JobContext, JobSpec, JobStatus, StepHook, StepSpec, StepStatus,
};
use crate::expr::{self, Condition, Context};
use crate::pipeline::{EnvValue, RetryWhen};
use crate::plan::{Decision, JobState, RunPlan, RunStatus};

/// The job time limit when `timeout-minutes` is not set.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// A log line longer than this is cut into several.
const MAX_LINE: usize = 64 * 1024;

/// How a local run is done.
pub struct LocalOptions {
    /// Jobs running at the same time (at least 1).
    pub slots: usize,
    /// The repository and commit every job checks out (`None`: an empty workspace).
    pub checkout: Option<Checkout>,
    /// Turns `true` to cancel the run (Ctrl-C).
    pub cancel: watch::Receiver<bool>,
    /// Emit [`Progress::Tick`] at this interval (to redraw elapsed times).
    pub tick: Option<Duration>,
}

impl LocalOptions {
    /// `slots` slots (0: the number of cores), no checkout, no ticks; the returned sender
    /// cancels the run.
    pub fn new(slots: usize) -> (LocalOptions, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let slots = if slots == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            slots
        };
        (
            LocalOptions {
                slots,
                checkout: None,
                cancel: rx,
                tick: None,
            },
            tx,
        )
    }
}

/// What the scheduler reports. `job` is an index into [`RunPlan::jobs`].
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Every job, once, at the start.
    JobQueued { job: usize },
    /// The job started (`attempt` 1, then 2... when retried).
    JobStarted { job: usize, attempt: u32 },
    StepStarted {
        job: usize,
        index: usize,
        name: String,
    },
    StepFinished {
        job: usize,
        index: usize,
        status: StepStatus,
        duration: Duration,
    },
    /// One line of output (without its newline).
    Log { job: usize, line: String },
    /// The job ended (`elapsed` is zero for a job that never started).
    JobFinished {
        job: usize,
        state: JobState,
        elapsed: Duration,
        reason: Option<String>,
    },
    /// Time passed (only with [`LocalOptions::tick`]).
    Tick,
}

/// The result of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub state: JobState,
    pub elapsed: Duration,
    pub attempts: u32,
    pub reason: Option<String>,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub status: RunStatus,
    /// By job index.
    pub jobs: Vec<JobReport>,
}

/// A job ready to hand to an executor: the spec and the `if:` of each step.
pub struct PreparedJob {
    pub spec: JobSpec,
    pub hook: StepHook,
}

fn render(src: &str, ctx: &Context) -> Result<String, String> {
    let t = expr::parse_template(src).map_err(|e| e.message)?;
    t.render(ctx).map_err(|e| e.message)
}

fn render_env(
    vars: &BTreeMap<String, EnvValue>,
    base: &BTreeMap<String, String>,
    ctx: &Context,
    what: &str,
) -> Result<BTreeMap<String, String>, String> {
    let ctx = ctx.clone().with_env(base.clone());
    let mut out = base.clone();
    for (k, v) in vars {
        let value = match v {
            EnvValue::String(s) => render(s, &ctx).map_err(|e| format!("{what} env `{k}`: {e}"))?,
            other => other.to_string(),
        };
        out.insert(k.clone(), value);
    }
    Ok(out)
}

/// Builds the executor's job for job `i` of `plan`, with `ctx` its context
/// ([`RunPlan::job_context`]): renders env (pipeline < job < step), step names and scripts,
/// parses the step `if:`s into the hook. An expression that fails gives the message.
pub fn prepare(
    plan: &RunPlan,
    i: usize,
    ctx: &Context,
    checkout: Option<Checkout>,
) -> Result<PreparedJob, String> {
    let job = &plan.jobs[i];
    let pipeline_env = render_env(&plan.env, &BTreeMap::new(), ctx, "pipeline")?;
    let job_env = render_env(&job.spec.env, &pipeline_env, ctx, "job")?;
    let mut steps = Vec::new();
    let mut conds: Vec<(Condition, Context)> = Vec::new();
    for (n, s) in job.spec.steps.iter().enumerate() {
        let all_env = render_env(&s.env, &job_env, ctx, &format!("step {}", n + 1))?;
        let sctx = ctx.clone().with_env(all_env.clone());
        let run = render(&s.run, &sctx).map_err(|e| format!("step {} run: {e}", n + 1))?;
        let name = match &s.name {
            Some(name) => render(name, &sctx).map_err(|e| format!("step {} name: {e}", n + 1))?,
            None => run.lines().next().unwrap_or("").trim().to_string(),
        };
        let cond = match &s.if_ {
            Some(src) => expr::parse_condition(src)
                .map_err(|e| format!("step `{name}` if: {}", e.message))?,
            None => Condition::default_success(),
        };
        conds.push((cond, sctx));
        // The executor layers job env under step env: only the step's own variables here.
        let step_env = all_env
            .into_iter()
            .filter(|(k, v)| job_env.get(k) != Some(v))
            .collect();
        steps.push(StepSpec {
            name,
            run,
            shell: s.shell.clone(),
            working_directory: s.working_directory.clone(),
            env: step_env,
            timeout: s.timeout_minutes.map(crate::pipeline::minutes),
            continue_on_error: false,
        });
    }
    let spec = JobSpec {
        id: job.key.clone(),
        checkout,
        steps,
        env: job_env,
        timeout: Some(
            job.spec
                .timeout_minutes
                .map_or(DEFAULT_JOB_TIMEOUT, crate::pipeline::minutes),
        ),
        network: job.spec.network.unwrap_or(true),
        require_sandbox: job.spec.executor == Some(crate::pipeline::ExecutorKind::Sandbox),
        ..Default::default()
    };
    let hook: StepHook = Arc::new(move |_step, state| {
        let Some((cond, sctx)) = conds.get(state.index) else {
            return !state.job_failed;
        };
        let status = if state.job_failed {
            expr::JobStatus::Failure
        } else {
            expr::JobStatus::Success
        };
        cond.eval(&sctx.clone().with_status(status))
            .unwrap_or(false)
    });
    Ok(PreparedJob { spec, hook })
}

enum Msg {
    P(Progress),
    Done {
        job: usize,
        state: JobState,
        elapsed: Duration,
        attempts: u32,
        reason: Option<String>,
    },
}

/// Splits output bytes into lines.
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    fn push(&mut self, data: &[u8], out: &mut Vec<String>) {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            out.push(clean(&line[..line.len() - 1]));
        }
        while self.buf.len() > MAX_LINE {
            let line: Vec<u8> = self.buf.drain(..MAX_LINE).collect();
            out.push(clean(&line));
        }
    }

    fn flush(&mut self, out: &mut Vec<String>) {
        if !self.buf.is_empty() {
            out.push(clean(&self.buf));
            self.buf.clear();
        }
    }
}

fn clean(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.strip_suffix('\r').unwrap_or(&s).to_string()
}

/// Runs job `i` (with retries) and reports through `tx`.
async fn job_task(
    i: usize,
    prepared: PreparedJob,
    retry: Option<crate::pipeline::Retry>,
    executor: Arc<dyn Executor>,
    cancel: watch::Receiver<bool>,
    tx: mpsc::Sender<Msg>,
) {
    let started = Instant::now();
    let max_attempts = 1 + retry.as_ref().map_or(0, |r| r.max);
    let retries_on = |w: RetryWhen| retry.as_ref().is_some_and(|r| r.when.contains(&w));
    let mut attempt = 0;
    let (state, reason) = loop {
        attempt += 1;
        let _ = tx
            .send(Msg::P(Progress::JobStarted { job: i, attempt }))
            .await;
        let (etx, mut erx) = mpsc::channel::<ExecEvent>(64);
        let ctx = JobContext {
            events: etx,
            cancel: cancel.clone(),
            should_run: Some(prepared.hook.clone()),
            hooks: None,
        };
        let forward = async {
            let mut lines = Lines { buf: Vec::new() };
            let mut out = Vec::new();
            while let Some(ev) = erx.recv().await {
                match ev {
                    ExecEvent::Log { data, .. } => lines.push(&data, &mut out),
                    ExecEvent::StepStarted { index, name } => {
                        lines.flush(&mut out);
                        flush_lines(&tx, i, &mut out).await;
                        let _ = tx
                            .send(Msg::P(Progress::StepStarted {
                                job: i,
                                index,
                                name,
                            }))
                            .await;
                    }
                    ExecEvent::StepFinished {
                        index,
                        status,
                        duration,
                        ..
                    } => {
                        lines.flush(&mut out);
                        flush_lines(&tx, i, &mut out).await;
                        let _ = tx
                            .send(Msg::P(Progress::StepFinished {
                                job: i,
                                index,
                                status,
                                duration,
                            }))
                            .await;
                    }
                    ExecEvent::StepSkipped { index } => {
                        let _ = tx
                            .send(Msg::P(Progress::StepFinished {
                                job: i,
                                index,
                                status: StepStatus::Skipped,
                                duration: Duration::ZERO,
                            }))
                            .await;
                    }
                }
                flush_lines(&tx, i, &mut out).await;
            }
            lines.flush(&mut out);
            flush_lines(&tx, i, &mut out).await;
        };
        let (result, ()) = tokio::join!(executor.run(&prepared.spec, ctx), forward);
        let cancelled = *cancel.borrow();
        let (state, reason, retryable) = match result {
            Ok(o) => {
                let state = match o.status {
                    JobStatus::Success => JobState::Success,
                    JobStatus::Failure => JobState::Failure,
                    JobStatus::Cancelled => JobState::Cancelled,
                    JobStatus::TimedOut => JobState::TimedOut,
                };
                let reason = o.reason.or_else(|| match state {
                    JobState::Failure => o.exit_code.map(|c| format!("exit code {c}")),
                    JobState::TimedOut => Some("timed out".into()),
                    _ => None,
                });
                (
                    state,
                    reason,
                    state.is_failure() && retries_on(RetryWhen::ScriptFailure),
                )
            }
            Err(e) => (
                JobState::Failure,
                Some(e.to_string()),
                retries_on(RetryWhen::InfraFailure),
            ),
        };
        if retryable && !cancelled && attempt < max_attempts {
            let _ = tx
                .send(Msg::P(Progress::Log {
                    job: i,
                    line: format!(
                        "retrying ({}, attempt {} of {max_attempts})",
                        reason.as_deref().unwrap_or(state.as_str()),
                        attempt + 1
                    ),
                }))
                .await;
            continue;
        }
        break (state, reason);
    };
    let _ = tx
        .send(Msg::Done {
            job: i,
            state,
            elapsed: started.elapsed(),
            attempts: attempt,
            reason,
        })
        .await;
}

async fn flush_lines(tx: &mpsc::Sender<Msg>, job: usize, out: &mut Vec<String>) {
    for line in out.drain(..) {
        let _ = tx.send(Msg::P(Progress::Log { job, line })).await;
    }
}

/// Runs `plan` to the end (see the module docs); `on` sees every [`Progress`] event.
pub async fn run(
    plan: &RunPlan,
    executor: Arc<dyn Executor>,
    opts: LocalOptions,
    mut on: impl FnMut(&Progress),
) -> RunReport {
    let n = plan.jobs.len();
    let slots = opts.slots.max(1);
    let mut states = vec![JobState::Queued; n];
    let mut reports: Vec<JobReport> = (0..n)
        .map(|_| JobReport {
            state: JobState::Queued,
            elapsed: Duration::ZERO,
            attempts: 0,
            reason: None,
        })
        .collect();
    for job in 0..n {
        on(&Progress::JobQueued { job });
    }
    let (tx, mut rx) = mpsc::channel::<Msg>(256);
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let mut user_cancel = opts.cancel.clone();
    let mut cancel_open = true;
    let mut cancelled = *user_cancel.borrow();
    let mut tasks = tokio::task::JoinSet::new();
    let mut running = 0usize;
    let mut ticker = tokio::time::interval(opts.tick.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    loop {
        // Start, skip or cancel what is ready, until nothing changes.
        loop {
            let mut changed = false;
            for i in plan.ready(&states) {
                let decision = plan.decide(i, &states, cancelled);
                let ctx = plan.job_context(i, &states, cancelled);
                let mut finish = |state: JobState, reason: Option<String>| {
                    states[i] = state;
                    reports[i].state = state;
                    reports[i].reason = reason.clone();
                    on(&Progress::JobFinished {
                        job: i,
                        state,
                        elapsed: Duration::ZERO,
                        reason,
                    });
                };
                match decision {
                    Ok(Decision::Run) if cancelled => {
                        finish(JobState::Cancelled, Some("the run was cancelled".into()))
                    }
                    Ok(Decision::Run) => {
                        if running >= slots {
                            continue;
                        }
                        match prepare(plan, i, &ctx, opts.checkout.clone()) {
                            Ok(prepared) => {
                                states[i] = JobState::Running;
                                reports[i].state = JobState::Running;
                                running += 1;
                                tasks.spawn(job_task(
                                    i,
                                    prepared,
                                    plan.jobs[i].spec.retry.clone(),
                                    executor.clone(),
                                    cancel_rx.clone(),
                                    tx.clone(),
                                ));
                            }
                            Err(e) => finish(JobState::Failure, Some(e)),
                        }
                    }
                    Ok(Decision::Skip(why)) => finish(JobState::Skipped, Some(why)),
                    Ok(Decision::Cancel) => {
                        finish(JobState::Cancelled, Some("the run was cancelled".into()))
                    }
                    Err(e) => finish(JobState::Failure, Some(e)),
                }
                changed = true;
            }
            if !changed {
                break;
            }
        }
        if running == 0 {
            break;
        }
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::P(p)) => on(&p),
                Some(Msg::Done { job, state, elapsed, attempts, reason }) => {
                    running -= 1;
                    states[job] = state;
                    reports[job] = JobReport { state, elapsed, attempts, reason: reason.clone() };
                    on(&Progress::JobFinished { job, state, elapsed, reason });
                }
                None => break,
            },
            r = user_cancel.changed(), if cancel_open && !cancelled => {
                match r {
                    Ok(()) if *user_cancel.borrow() => {
                        cancelled = true;
                        let _ = cancel_tx.send(true);
                    }
                    Ok(()) => {}
                    Err(_) => cancel_open = false,
                }
            }
            _ = ticker.tick(), if opts.tick.is_some() => on(&Progress::Tick),
        }
    }
    while tasks.join_next().await.is_some() {}
    RunReport {
        status: plan.status(&states),
        jobs: reports,
    }
}
