//! The typed model of a pipeline file (`.ouro/pipelines/*.yml`) and its parser.
//!
//! The same types derive serde (what the parser produces) and schemars (docs/pipeline.schema.json,
//! for editors); the checker in `check` validates the file against that schema first, so every
//! problem is reported with its line and column, then runs the semantic checks (needs, cycles,
//! cron, globs, expressions, budgets). See docs/pipelines.md for the reference.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::diag::{self, Diagnostic};

/// The largest pipeline file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// The most jobs one file may define (before matrix expansion).
pub const MAX_JOBS: usize = 500;
/// The most steps one job may have.
pub const MAX_STEPS: usize = 200;
/// The most jobs one matrix may expand to.
pub const MAX_MATRIX_JOBS: usize = 256;
/// The longest timeout, in minutes (7 days).
pub const MAX_TIMEOUT_MINUTES: u32 = 10_080;

/// A `timeout-minutes` value as a duration (fractions of a minute allowed, rounded to the
/// millisecond; the checker keeps values within 0.01..=10080).
pub fn minutes(m: f64) -> std::time::Duration {
    let m = if m.is_finite() {
        m.clamp(0.0, f64::from(MAX_TIMEOUT_MINUTES))
    } else {
        0.0
    };
    std::time::Duration::from_millis((m * 60_000.0).round() as u64)
}

/// A pipeline: when it runs (`on`), and the jobs it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Ouro pipeline")]
pub struct Pipeline {
    /// The pipeline's display name (default: the file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The events that start the pipeline (default: every push and change request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<On>,
    /// Variables for every job and step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Runs of the same group (in the project) go one at a time, oldest first; with
    /// `cancel-in-progress` a new run cancels the group's older runs instead of waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// The jobs, by id (letters, digits, `_` and `-`, starting with a letter or `_`).
    pub jobs: BTreeMap<String, Job>,
}

/// `on:` — one event name, a list of event names, or a mapping with each event's filters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum On {
    Event(EventName),
    Events(Vec<EventName>),
    Triggers(Triggers),
}

/// The event names usable in the short forms of `on:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    Push,
    ChangeRequest,
    Manual,
}

/// The events that start a pipeline, with their filters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    /// A push to a branch or tag (an empty `push:` means every branch).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub push: Option<PushTrigger>,
    /// A change request opened or updated.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub change_request: Option<ChangeRequestTrigger>,
    /// Cron schedules (5 or 6 fields; `L`, `W` and `#` are supported), in UTC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Schedule>,
    /// Started by hand (UI, API, CLI), with typed inputs.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub manual: Option<Manual>,
}

/// Filters of a push trigger. Patterns are globs; a pattern starting with `!` excludes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushTrigger {
    /// Branch name patterns (default: every branch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    /// Tag name patterns (default: no tags).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Changed-file path patterns (default: any change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// Filters of a change request trigger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequestTrigger {
    /// Target branch patterns (default: every target branch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    /// Changed-file path patterns (default: any change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// One schedule: `- cron: "0 3 * * *"` or just `- "0 3 * * *"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Schedule {
    Cron(String),
    Entry(CronEntry),
}

impl Schedule {
    pub fn cron(&self) -> &str {
        match self {
            Schedule::Cron(c) => c,
            Schedule::Entry(e) => &e.cron,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronEntry {
    /// A cron expression.
    pub cron: String,
}

/// A manual trigger and its inputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manual {
    /// Inputs asked for when the pipeline is started, by id; available as `inputs.<id>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Input>,
}

/// A typed input of a manual trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The input's type (default: string).
    #[serde(default, rename = "type")]
    pub kind: InputType,
    /// Whether a value must be given (default: false).
    #[serde(default)]
    pub required: bool,
    /// The value used when none is given; must match the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<EnvValue>,
    /// The allowed values of a `choice` input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    #[default]
    String,
    Boolean,
    Number,
    Choice,
}

/// A scalar value of a variable, an input default or a matrix entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    String(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl std::fmt::Display for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvValue::String(s) => f.write_str(s),
            EnvValue::Bool(b) => write!(f, "{b}"),
            EnvValue::Int(i) => write!(f, "{i}"),
            EnvValue::Float(x) => write!(f, "{x}"),
        }
    }
}

/// One job: a list of steps run on one runner, in one fresh workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Job {
    /// The display name (default: the job id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Jobs that must finish first (one id or a list).
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub needs: OneOrMany,
    /// A condition (expression); the job is skipped when false. Default: `success()`.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_: Option<String>,
    /// Runner labels the runner must all have (one or a list).
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub runs_on: OneOrMany,
    /// The executor the job must run on (`shell` or `sandbox`); only a runner offering it
    /// claims the job. Default: the runner's own (docs/executors.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorKind>,
    /// `false`: the steps have no network (only `lo`). Needs `executor: sandbox`: the shell
    /// executor cannot take the network away. Default: `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<bool>,
    /// A matrix: one job per combination of the axes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Variables for every step of the job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// The job's time limit in minutes (default: 60); fractions allowed (`0.5` is 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 10080))]
    pub timeout_minutes: Option<f64>,
    /// Retry a failed job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// A failure of this job does not fail the pipeline.
    #[serde(default)]
    pub continue_on_error: bool,
    /// At most one run of the group at a time (a group name, or a mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// The deployment environment this job targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// A cache restored before the steps and saved after a successful job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    /// Files kept after the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
    /// Quality gate over the job's test and coverage reports (docs/test-results.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// The steps, run in order.
    pub steps: Vec<Step>,
}

/// `quality:` of a job: thresholds checked when its reports are ingested. A failing threshold
/// fails the job and posts a failing `ouro/quality/<job>` commit status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Quality {
    /// At most this many failed or errored tests (quarantined tests do not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u64>,
    /// Line coverage of the run, at least this percentage (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min_coverage: Option<f64>,
    /// Line coverage of the lines a change request changes, at least this percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min_diff_coverage: Option<f64>,
    /// At most this many tests failing that passed on the target branch's last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_failures: Option<u64>,
    /// The total test duration may grow at most this many percent over the target branch's
    /// last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_increase: Option<f64>,
}

/// A string or a list of strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
    pub fn is_empty(&self) -> bool {
        matches!(self, OneOrMany::Many(v) if v.is_empty())
    }
}

/// `strategy:` of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    pub matrix: Matrix,
}

/// A matrix: axes (a name and its list of values), plus `include` (extra combinations, or extra
/// values for matching ones) and `exclude` (combinations to drop). Kept as data here; expansion
/// happens when a run is planned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Matrix {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<BTreeMap<String, serde_json::Value>>,
    #[serde(flatten)]
    pub axes: BTreeMap<String, Vec<serde_json::Value>>,
}

/// `retry:` of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// How many times to retry (0 to 10).
    #[schemars(range(max = 10))]
    pub max: u32,
    /// Which failures are retried (default: both).
    #[serde(default = "RetryWhen::all")]
    pub when: Vec<RetryWhen>,
}

/// `executor:` of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Local processes in a fresh workspace.
    Shell,
    /// The same inside bubblewrap: read-only host, private /tmp and /home, the server's and
    /// other jobs' files hidden; never run unsandboxed.
    Sandbox,
}

impl ExecutorKind {
    pub const ALL: [ExecutorKind; 2] = [ExecutorKind::Shell, ExecutorKind::Sandbox];

    /// The name runners offer it by (`shell`, `sandbox`).
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Shell => "shell",
            ExecutorKind::Sandbox => "sandbox",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryWhen {
    /// The runner vanished or the executor failed.
    InfraFailure,
    /// A step exited non-zero or timed out.
    ScriptFailure,
}

impl RetryWhen {
    fn all() -> Vec<RetryWhen> {
        vec![RetryWhen::InfraFailure, RetryWhen::ScriptFailure]
    }
}

/// `concurrency:` — a group name, or a mapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Concurrency {
    Group(String),
    Detailed(ConcurrencyGroup),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConcurrencyGroup {
    pub group: String,
    /// Cancel the running member of the group when a new one starts (default: false, it waits).
    #[serde(default)]
    pub cancel_in_progress: bool,
}

/// `cache:` of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Cache {
    /// The cache key; usually with `hashFiles(...)`.
    pub key: String,
    /// Paths (globs) saved and restored.
    pub paths: Vec<String>,
    /// Key prefixes tried in order when `key` misses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_keys: Vec<String>,
}

/// `artifacts:` of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Artifacts {
    /// Paths (globs) uploaded after the job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// How long they are kept, e.g. `30 minutes`, `12 hours`, `7 days`, `2 weeks` (default: 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_in: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<Reports>,
}

/// Test and coverage reports shown with the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    /// JUnit XML files (globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub junit: Vec<String>,
    /// A Cobertura coverage XML file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<String>,
}

/// One step of a job: a shell command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Step {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The commands, run by `shell`.
    pub run: String,
    /// The shell (default: `bash -eo pipefail` when bash exists, else `sh -e`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Relative to the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// A condition (expression); the step is skipped when false. Default: `success()`.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_: Option<String>,
    /// The step's time limit in minutes; fractions allowed (`0.5` is 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 10080))]
    pub timeout_minutes: Option<f64>,
}

impl Pipeline {
    /// The triggers with the short forms of `on:` spelled out; no `on:` means push and change
    /// request.
    pub fn triggers(&self) -> Triggers {
        let from_events = |events: &[EventName]| {
            let mut t = Triggers::default();
            for e in events {
                match e {
                    EventName::Push => t.push = Some(PushTrigger::default()),
                    EventName::ChangeRequest => {
                        t.change_request = Some(ChangeRequestTrigger::default())
                    }
                    EventName::Manual => t.manual = Some(Manual::default()),
                }
            }
            t
        };
        match &self.on {
            None => from_events(&[EventName::Push, EventName::ChangeRequest]),
            Some(On::Event(e)) => from_events(&[*e]),
            Some(On::Events(es)) => from_events(es),
            Some(On::Triggers(t)) => t.clone(),
        }
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// The JSON Schema of a pipeline file (docs/pipeline.schema.json), generated from the types.
pub fn json_schema() -> serde_json::Value {
    // Draft 7: the draft editors' YAML language servers support best.
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Pipeline>();
    serde_json::to_value(schema).expect("the schema serialises")
}

/// Parses a pipeline file: `file` is the name used in diagnostics, `bytes` its content. Returns the
/// model, or every diagnostic found (never an empty list).
pub fn parse(file: &str, bytes: &[u8]) -> Result<Pipeline, Vec<Diagnostic>> {
    let text = crate::check::text(file, bytes)?;
    let node = crate::yaml::read(file, text)?;
    let diags = crate::check::check(file, text, &node);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    serde_saphyr::from_str_with_options::<Pipeline>(text, crate::yaml::options()).map_err(|e| {
        let mut d = crate::yaml::error_to_diag(file, &e);
        if d.code == diag::YAML_SYNTAX {
            d.code = diag::INVALID_TYPE;
        }
        vec![d]
    })
}

/// All diagnostics for a file (empty when it is valid).
pub fn lint(file: &str, bytes: &[u8]) -> Vec<Diagnostic> {
    match parse(file, bytes) {
        Ok(_) => Vec::new(),
        Err(d) => d,
    }
}
