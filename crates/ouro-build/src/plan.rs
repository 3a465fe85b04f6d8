//! Run planning: from a parsed [`Pipeline`] and a [`Trigger`] to a [`RunPlan`], and the rules a
//! scheduler applies while the run goes on. Pure: no I/O, no clock.
//!
//! - [`plan`] decides whether the pipeline runs for the trigger (`on:` with its `branches`,
//!   `tags` and `paths` globs, `!` negation, manual inputs), expands every matrix into concrete
//!   jobs, resolves `needs` to concrete jobs (a job that needs a matrix job needs *all* its
//!   expansions) and computes the DAG layers.
//! - [`RunPlan::ready`] lists the queued jobs whose needs have all finished;
//!   [`RunPlan::decide`] evaluates a ready job's `if:` (with `needs.<job>.result` and the status
//!   functions) to run, skip or cancel it; [`RunPlan::status`] / [`derive_run_status`] give the
//!   run's status from its jobs' states.
//!
//! Steps keep their `${{ }}` as written: they are rendered when the job starts
//! ([`RunPlan::job_context`] gives the expression context of a job).
//!
//! The local scheduler (`crate::local`) and the server's scheduler use the same functions.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::expr::{self, Condition, Context, ExprKind, Func, OuroContext};
use crate::matrix::{self, Combo};
use crate::pipeline::{EnvValue, InputType, Job, Pipeline};

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Push,
    ChangeRequest,
    Schedule,
    Manual,
    /// Started through the API: planned like `manual` (the pipeline needs `on: manual`).
    Api,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::ChangeRequest => "change_request",
            EventKind::Schedule => "schedule",
            EventKind::Manual => "manual",
            EventKind::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Some(match s {
            "push" => EventKind::Push,
            "change_request" => EventKind::ChangeRequest,
            "schedule" => EventKind::Schedule,
            "manual" => EventKind::Manual,
            "api" => EventKind::Api,
            _ => return None,
        })
    }
}

/// The event a run is planned for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub event: EventKind,
    /// The full ref: `refs/heads/main`, `refs/tags/v1`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The branch name (for a change request: its source branch).
    pub branch: Option<String>,
    /// The tag name for a tag push.
    pub tag: Option<String>,
    /// A change request's target branch (what `change_request.branches` filters).
    pub target_branch: Option<String>,
    /// The full commit id.
    pub sha: String,
    /// The files changed by the push or change request; `None` when unknown (a new branch): a
    /// `paths` filter then matches.
    pub changed_paths: Option<Vec<String>>,
    /// Manual inputs as given (strings; typed by [`plan`] against the declared inputs).
    pub inputs: BTreeMap<String, String>,
    pub actor: String,
    pub project: String,
    pub repo: String,
    pub run_number: u64,
}

impl Trigger {
    /// A push of `sha` to branch `branch`.
    pub fn push(branch: &str, sha: &str) -> Trigger {
        Trigger {
            event: EventKind::Push,
            git_ref: format!("refs/heads/{branch}"),
            branch: Some(branch.to_string()),
            tag: None,
            target_branch: None,
            sha: sha.to_string(),
            changed_paths: None,
            inputs: BTreeMap::new(),
            actor: String::new(),
            project: String::new(),
            repo: String::new(),
            run_number: 0,
        }
    }

    /// A push of tag `tag` pointing at `sha`.
    pub fn tag(tag: &str, sha: &str) -> Trigger {
        Trigger {
            git_ref: format!("refs/tags/{tag}"),
            branch: None,
            tag: Some(tag.to_string()),
            ..Trigger::push("", sha)
        }
    }

    /// The `ouro` expression context of this trigger.
    pub fn ouro_context(&self) -> OuroContext {
        OuroContext {
            event: self.event.as_str().to_string(),
            git_ref: self.git_ref.clone(),
            branch: self.branch.clone().unwrap_or_default(),
            sha: self.sha.clone(),
            project: self.project.clone(),
            repo: self.repo.clone(),
            run_number: self.run_number,
            actor: self.actor.clone(),
            target_branch: self.target_branch.clone().unwrap_or_default(),
        }
    }
}

/// Why a pipeline cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The pipeline does not run for this trigger (not an error for a scheduler: no run).
    #[error("the pipeline does not run for this event: {0}")]
    NotTriggered(String),
    #[error("input `{input}`: {message}")]
    Input { input: String, message: String },
    #[error("job `{job}`: {message}")]
    Matrix { job: String, message: String },
    #[error("job `{job}` needs `{need}`, which is not a job of this pipeline")]
    UnknownNeed { job: String, need: String },
    #[error("the needs of these jobs form a cycle: {0}")]
    Cycle(String),
    #[error("no job `{0}` in this pipeline")]
    UnknownJob(String),
}

impl PlanError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            PlanError::NotTriggered(_) => "plan.not_triggered",
            PlanError::Input { .. } => "plan.input",
            PlanError::Matrix { .. } => "plan.matrix",
            PlanError::UnknownNeed { .. } => "plan.needs_unknown",
            PlanError::Cycle(_) => "plan.needs_cycle",
            PlanError::UnknownJob(_) => "plan.unknown_job",
        }
    }
}

/// One concrete job of a run (a job of the file, or one expansion of its matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// The display id: `build`, or `build (linux, 1.80)` for a matrix expansion.
    pub id: String,
    /// A stable key, usable in file names and as the executor's job id: `build`, or `build.2`
    /// for the second expansion of `build`'s matrix.
    pub key: String,
    /// The job id in the file.
    pub base: String,
    /// The display name (`name:` or the id, with the matrix values).
    pub name: String,
    /// The `matrix` context (empty without a matrix).
    pub matrix: Combo,
    /// Indexes (into [`RunPlan::jobs`]) of the concrete jobs this one needs.
    pub needs: Vec<usize>,
    /// The DAG layer: 0 for jobs without needs, else one more than the deepest need.
    pub layer: usize,
    /// The job as written (steps with their `${{ }}` unrendered).
    pub spec: Job,
}

/// A pipeline planned for one trigger.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The pipeline's display name.
    pub name: String,
    pub trigger: Trigger,
    /// The pipeline's top-level `env`.
    pub env: BTreeMap<String, EnvValue>,
    /// The typed inputs (declared defaults applied), the `inputs` context.
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// The concrete jobs, in layer order then file (id) order.
    pub jobs: Vec<PlannedJob>,
}

/// The state of one concrete job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Not started yet (waiting for its needs or a slot).
    Queued,
    Running,
    Success,
    Failure,
    Cancelled,
    /// Its `if:` was false (or its needs failed with the default `success()`).
    Skipped,
    TimedOut,
}

impl JobState {
    /// True for the states a job ends in.
    pub fn is_finished(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    /// True for failure and timed_out.
    pub fn is_failure(self) -> bool {
        matches!(self, JobState::Failure | JobState::TimedOut)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Success => "success",
            JobState::Failure => "failure",
            JobState::Cancelled => "cancelled",
            JobState::Skipped => "skipped",
            JobState::TimedOut => "timed_out",
        }
    }
}

/// The state of a run, derived from its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Success,
    Failure,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Failure => "failure",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// The run's status from `(state, continue_on_error)` of each job:
/// - `queued` while no job has started;
/// - `running` while any job is queued or running (and some job has started or finished);
/// - once every job has finished: `cancelled` if any job was cancelled, else `failure` if any job
///   failed or timed out without `continue-on-error`, else `success` (skipped jobs and failures
///   with `continue-on-error` do not fail the run).
pub fn derive_run_status(jobs: &[(JobState, bool)]) -> RunStatus {
    let unfinished = jobs.iter().any(|(s, _)| !s.is_finished());
    if unfinished {
        if jobs.iter().all(|(s, _)| *s == JobState::Queued) {
            return RunStatus::Queued;
        }
        return RunStatus::Running;
    }
    if jobs.iter().any(|(s, _)| *s == JobState::Cancelled) {
        RunStatus::Cancelled
    } else if jobs.iter().any(|(s, coe)| s.is_failure() && !coe) {
        RunStatus::Failure
    } else {
        RunStatus::Success
    }
}

/// What to do with a job whose needs have finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// Its `if:` is false; the reason says why.
    Skip(String),
    /// The run was cancelled (and the job's `if:` does not ask for `always()`).
    Cancel,
}

/// Whether a branch, tag or path matches a filter list: the last matching pattern decides
/// (`!` patterns exclude); a list with only `!` patterns starts from "included". `*` does not
/// cross `/`, `**` does.
pub fn filter_matches(patterns: &[String], name: &str) -> bool {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut included = patterns.iter().all(|p| p.starts_with('!'));
    for p in patterns {
        let (neg, pat) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        let hit = match glob::Pattern::new(pat) {
            Ok(g) => g.matches_with(name, opts),
            Err(_) => pat == name,
        };
        if hit {
            included = !neg;
        }
    }
    included
}

/// `paths`: true when no filter, unknown changes, or any changed path is included.
fn paths_match(patterns: &[String], changed: &Option<Vec<String>>) -> bool {
    match changed {
        _ if patterns.is_empty() => true,
        None => true,
        Some(paths) => paths.iter().any(|p| filter_matches(patterns, p)),
    }
}

/// Whether `pipeline` runs for `trigger` (`Err` says why not).
pub fn triggered(pipeline: &Pipeline, trigger: &Trigger) -> Result<(), String> {
    let t = pipeline.triggers();
    match trigger.event {
        EventKind::Push => {
            let Some(push) = &t.push else {
                return Err("the pipeline has no `push` trigger".into());
            };
            if let Some(tag) = &trigger.tag {
                if push.tags.is_empty() || !filter_matches(&push.tags, tag) {
                    return Err(format!("tag `{tag}` does not match `push.tags`"));
                }
            } else {
                let branch = trigger.branch.as_deref().unwrap_or_default();
                if !push.branches.is_empty() && !filter_matches(&push.branches, branch) {
                    return Err(format!("branch `{branch}` does not match `push.branches`"));
                }
            }
            if !paths_match(&push.paths, &trigger.changed_paths) {
                return Err("no changed file matches `push.paths`".into());
            }
            Ok(())
        }
        EventKind::ChangeRequest => {
            let Some(cr) = &t.change_request else {
                return Err("the pipeline has no `change_request` trigger".into());
            };
            let target = trigger.target_branch.as_deref().unwrap_or_default();
            if !cr.branches.is_empty() && !filter_matches(&cr.branches, target) {
                return Err(format!(
                    "target branch `{target}` does not match `change_request.branches`"
                ));
            }
            if !paths_match(&cr.paths, &trigger.changed_paths) {
                return Err("no changed file matches `change_request.paths`".into());
            }
            Ok(())
        }
        EventKind::Schedule => {
            if t.schedule.is_empty() {
                Err("the pipeline has no `schedule` trigger".into())
            } else {
                Ok(())
            }
        }
        EventKind::Manual | EventKind::Api => {
            if t.manual.is_some() {
                Ok(())
            } else {
                Err("the pipeline has no `manual` trigger".into())
            }
        }
    }
}

/// Types the trigger's inputs against the pipeline's `manual.inputs` (defaults applied,
/// required ones checked, unknown ones refused).
fn typed_inputs(
    pipeline: &Pipeline,
    trigger: &Trigger,
) -> Result<serde_json::Map<String, serde_json::Value>, PlanError> {
    use serde_json::Value;
    let declared = pipeline
        .triggers()
        .manual
        .map(|m| m.inputs)
        .unwrap_or_default();
    let manual = matches!(trigger.event, EventKind::Manual | EventKind::Api);
    let err = |input: &str, message: String| PlanError::Input {
        input: input.to_string(),
        message,
    };
    if let Some(k) = trigger.inputs.keys().find(|k| !declared.contains_key(*k)) {
        return Err(err(k, "not an input of this pipeline".into()));
    }
    let mut out = serde_json::Map::new();
    for (name, input) in &declared {
        let given = trigger.inputs.get(name).cloned();
        let raw = match (given, &input.default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) if input.required && manual => {
                return Err(err(name, "a value is required".into()));
            }
            (None, None) => continue,
        };
        let value = match input.kind {
            InputType::String => Value::String(raw),
            InputType::Boolean => match raw.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(err(name, format!("`{raw}` is not true or false"))),
            },
            InputType::Number => match raw.parse::<f64>() {
                Ok(n) => serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .ok_or_else(|| err(name, format!("`{raw}` is not a number")))?,
                Err(_) => return Err(err(name, format!("`{raw}` is not a number"))),
            },
            InputType::Choice => {
                if !input.options.contains(&raw) {
                    return Err(err(
                        name,
                        format!("`{raw}` is not one of {}", input.options.join(", ")),
                    ));
                }
                Value::String(raw)
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// Plans `pipeline` (named `name`) for `trigger`: see the module docs.
pub fn plan(name: &str, pipeline: &Pipeline, trigger: &Trigger) -> Result<RunPlan, PlanError> {
    triggered(pipeline, trigger).map_err(PlanError::NotTriggered)?;
    plan_jobs(name, pipeline, trigger)
}

/// [`plan`] without the `on:` check: the jobs of a run that already exists (a runner plans the
/// job it claimed again from the run's stored trigger; whether the pipeline runs for the event
/// was decided when the run was created).
pub fn plan_jobs(name: &str, pipeline: &Pipeline, trigger: &Trigger) -> Result<RunPlan, PlanError> {
    let inputs = typed_inputs(pipeline, trigger)?;

    // Expand each job of the file.
    let mut expanded: BTreeMap<&str, Vec<(String, String, String, Combo)>> = BTreeMap::new();
    for (id, job) in &pipeline.jobs {
        let display = job.name.clone().unwrap_or_else(|| id.clone());
        let list =
            match &job.strategy {
                None => vec![(id.clone(), id.clone(), display, Combo::new())],
                Some(s) => {
                    let m = &s.matrix;
                    let axes: Vec<(String, Vec<serde_json::Value>)> =
                        m.axes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    let to_combo = |e: &BTreeMap<String, serde_json::Value>| -> Combo {
                        e.clone().into_iter().collect()
                    };
                    let include: Vec<Combo> = m.include.iter().map(to_combo).collect();
                    let exclude: Vec<Combo> = m.exclude.iter().map(to_combo).collect();
                    let combos = matrix::expand(&axes, &include, &exclude, matrix::MAX_JOBS)
                        .map_err(|e| PlanError::Matrix {
                            job: id.clone(),
                            message: e.to_string(),
                        })?;
                    let order: Vec<&str> = m.axes.keys().map(String::as_str).collect();
                    combos
                        .into_iter()
                        .enumerate()
                        .map(|(i, c)| {
                            (
                                matrix::job_name_ordered(id, &c, &order),
                                format!("{id}.{}", i + 1),
                                matrix::job_name_ordered(&display, &c, &order),
                                c,
                            )
                        })
                        .collect()
                }
            };
        expanded.insert(id.as_str(), list);
    }

    // Layers of the base jobs (Kahn's algorithm; what is left over is a cycle).
    let mut layer_of: BTreeMap<&str, usize> = BTreeMap::new();
    loop {
        let mut progressed = false;
        for (id, job) in &pipeline.jobs {
            if layer_of.contains_key(id.as_str()) {
                continue;
            }
            let needs = job.needs.to_vec();
            let mut layer = 0;
            let mut ready = true;
            for n in &needs {
                if !pipeline.jobs.contains_key(n) {
                    return Err(PlanError::UnknownNeed {
                        job: id.clone(),
                        need: n.clone(),
                    });
                }
                match layer_of.get(n.as_str()) {
                    Some(l) => layer = layer.max(l + 1),
                    None => ready = false,
                }
            }
            if ready {
                layer_of.insert(id, layer);
                progressed = true;
            }
        }
        if layer_of.len() == pipeline.jobs.len() {
            break;
        }
        if !progressed {
            let left: Vec<&str> = pipeline
                .jobs
                .keys()
                .map(String::as_str)
                .filter(|k| !layer_of.contains_key(k))
                .collect();
            return Err(PlanError::Cycle(left.join(", ")));
        }
    }

    // Concrete jobs in layer order, then id order.
    let mut bases: Vec<&str> = pipeline.jobs.keys().map(String::as_str).collect();
    bases.sort_by_key(|b| (layer_of[b], *b));
    let mut jobs: Vec<PlannedJob> = Vec::new();
    let mut index_of: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for base in bases {
        let job = &pipeline.jobs[base];
        let needs: Vec<usize> = job
            .needs
            .to_vec()
            .iter()
            .flat_map(|n| index_of[n.as_str()].iter().copied())
            .collect();
        for (id, key, name, combo) in &expanded[base] {
            index_of.entry(base).or_default().push(jobs.len());
            jobs.push(PlannedJob {
                id: id.clone(),
                key: key.clone(),
                base: base.to_string(),
                name: name.clone(),
                matrix: combo.clone(),
                needs: needs.clone(),
                layer: layer_of[base],
                spec: job.clone(),
            });
        }
    }

    Ok(RunPlan {
        name: pipeline.name.clone().unwrap_or_else(|| name.to_string()),
        trigger: trigger.clone(),
        env: pipeline.env.clone(),
        inputs,
        jobs,
    })
}

/// The aggregated `needs.<job>.result` of the concrete jobs of one base job: `failure` if any
/// failed or timed out, else `cancelled` if any was cancelled, else `skipped` if all were
/// skipped, else `success`.
fn aggregate(states: impl IntoIterator<Item = JobState>) -> &'static str {
    let all: Vec<JobState> = states.into_iter().collect();
    if all.iter().any(|s| s.is_failure()) {
        "failure"
    } else if all.contains(&JobState::Cancelled) {
        "cancelled"
    } else if !all.is_empty() && all.iter().all(|s| *s == JobState::Skipped) {
        "skipped"
    } else {
        "success"
    }
}

impl RunPlan {
    /// The index of a job by display id, key, or (for a job without matrix) base id.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.jobs.iter().position(|j| j.id == id || j.key == id)
    }

    /// The jobs at each DAG layer (indexes).
    pub fn layers(&self) -> Vec<Vec<usize>> {
        let mut layers: Vec<Vec<usize>> = Vec::new();
        for (i, j) in self.jobs.iter().enumerate() {
            if layers.len() <= j.layer {
                layers.resize(j.layer + 1, Vec::new());
            }
            layers[j.layer].push(i);
        }
        layers
    }

    /// The plan restricted to the jobs named by `ids` (a display id, a key, or a base id for all
    /// its expansions) and everything they need, directly or not.
    pub fn only(&self, ids: &[String]) -> Result<RunPlan, PlanError> {
        let mut keep: BTreeSet<usize> = BTreeSet::new();
        let mut stack: Vec<usize> = Vec::new();
        for id in ids {
            let hits: Vec<usize> = (0..self.jobs.len())
                .filter(|&i| {
                    let j = &self.jobs[i];
                    j.id == *id || j.key == *id || j.base == *id
                })
                .collect();
            if hits.is_empty() {
                return Err(PlanError::UnknownJob(id.clone()));
            }
            stack.extend(hits);
        }
        while let Some(i) = stack.pop() {
            if keep.insert(i) {
                stack.extend(self.jobs[i].needs.iter().copied());
            }
        }
        let new_index: BTreeMap<usize, usize> =
            keep.iter().enumerate().map(|(n, o)| (*o, n)).collect();
        let jobs = keep
            .iter()
            .map(|&i| {
                let mut j = self.jobs[i].clone();
                j.needs = j.needs.iter().map(|n| new_index[n]).collect();
                j
            })
            .collect();
        Ok(RunPlan {
            jobs,
            ..self.clone()
        })
    }

    /// The queued jobs whose needs have all finished (in plan order). `states[i]` is the state
    /// of `jobs[i]`.
    pub fn ready(&self, states: &[JobState]) -> Vec<usize> {
        self.jobs
            .iter()
            .enumerate()
            .filter(|(i, j)| {
                states[*i] == JobState::Queued && j.needs.iter().all(|n| states[*n].is_finished())
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The run's status (see [`derive_run_status`]).
    pub fn status(&self, states: &[JobState]) -> RunStatus {
        let pairs: Vec<(JobState, bool)> = self
            .jobs
            .iter()
            .zip(states)
            .map(|(j, s)| (*s, j.spec.continue_on_error))
            .collect();
        derive_run_status(&pairs)
    }

    /// The expression context of job `i` when it becomes ready: `ouro`, `env` (the pipeline's),
    /// `matrix`, `inputs`, `needs.<job>.result` (per base job, aggregated over a matrix), and the
    /// status: `cancelled` when the run is, `failure` when a needed job failed or timed out
    /// (without `continue-on-error`), else `success`.
    pub fn job_context(&self, i: usize, states: &[JobState], run_cancelled: bool) -> Context {
        let job = &self.jobs[i];
        let mut ctx = Context::new()
            .with_ouro(&self.trigger.ouro_context())
            .with_env(self.env.iter().map(|(k, v)| (k.clone(), v.to_string())))
            .with_matrix(&job.matrix)
            .with_inputs(&self.inputs);
        let mut by_base: BTreeMap<&str, Vec<JobState>> = BTreeMap::new();
        for &n in &job.needs {
            by_base
                .entry(&self.jobs[n].base)
                .or_default()
                .push(states[n]);
        }
        // GitHub semantics: `failure()` holds when any ancestor (a need, or a need of a need...)
        // failed, also when the job in between was skipped because of it.
        let mut failed = false;
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = job.needs.clone();
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            failed |= states[n].is_failure() && !self.jobs[n].spec.continue_on_error;
            stack.extend(self.jobs[n].needs.iter().copied());
        }
        for (base, st) in by_base {
            ctx = ctx.with_need(base, aggregate(st), Vec::new());
        }
        let status = if run_cancelled {
            expr::JobStatus::Cancelled
        } else if failed {
            expr::JobStatus::Failure
        } else {
            expr::JobStatus::Success
        };
        ctx.with_status(status)
    }

    /// The parsed `if:` of job `i` (default `success()`).
    fn condition(&self, i: usize) -> Result<Condition, String> {
        match self.jobs[i].spec.if_.as_deref() {
            None => Ok(Condition::default_success()),
            Some(src) => expr::parse_condition(src).map_err(|e| format!("`if:` {}", e.message)),
        }
    }

    /// Whether job `i` may still run when a job it needs failed, was cancelled or was skipped:
    /// its `if:` calls a status function other than a bare `success()` (`always()`,
    /// `failure()`, `cancelled()`, `!success()`...), or cannot be parsed (then [`RunPlan::decide`]
    /// reports the problem). A scheduler skips the other jobs at once when a need ends without
    /// success, and leaves these for [`RunPlan::decide`] once all their needs have finished.
    pub fn runs_after_failed_needs(&self, i: usize) -> bool {
        self.condition(i).map_or(true, |c| !only_success(&c))
    }

    /// Decides what happens to ready job `i`: evaluates its `if:` (default `success()`) in
    /// [`RunPlan::job_context`]. A job whose needs include a skipped job is skipped too unless
    /// its `if:` calls a status function other than a bare `success()` (`always()`,
    /// `failure()`, ...). When the run is cancelled the job is cancelled unless its `if:` is
    /// true in a cancelled context (`always()`, `cancelled()`). An `if:` that cannot be parsed or
    /// evaluated fails with the message.
    pub fn decide(
        &self,
        i: usize,
        states: &[JobState],
        run_cancelled: bool,
    ) -> Result<Decision, String> {
        let job = &self.jobs[i];
        let cond = self.condition(i)?;
        let only_success = only_success(&cond);
        let skipped_need = job.needs.iter().any(|&n| states[n] == JobState::Skipped);
        if skipped_need && only_success && !run_cancelled {
            return Ok(Decision::Skip("a needed job was skipped".into()));
        }
        let ctx = self.job_context(i, states, run_cancelled);
        let yes = cond
            .eval(&ctx)
            .map_err(|e| format!("`if:` {}", e.message))?;
        Ok(match (yes, run_cancelled) {
            (true, _) => Decision::Run,
            (false, true) => Decision::Cancel,
            (false, false) => {
                let failed_need = ctx.status == expr::JobStatus::Failure;
                if failed_need && only_success {
                    Decision::Skip("a needed job failed".into())
                } else {
                    Decision::Skip("its `if:` is false".into())
                }
            }
        })
    }
}

/// True when `cond` holds only after success: no status function (implicit `success()`) or a
/// bare `success()`.
fn only_success(cond: &Condition) -> bool {
    cond.implicit_success
        || matches!(
            &cond.expr.kind,
            ExprKind::Call { func: Func::Success, args } if args.is_empty()
        )
}
