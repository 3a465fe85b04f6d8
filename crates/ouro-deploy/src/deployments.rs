//! Deployment records (tables `deploy_environments`, `deploy_deployments`, `deploy_steps`).
//!
//! Each change appends its event in the same transaction: `deploy.started` when a deployment
//! (or rollback) begins, `deploy.step` for each finished step with its timings and numbers,
//! then `deploy.succeeded`, `deploy.failed` or `deploy.rolled_back`. Payloads carry `release`
//! (the release's id, as the Release phase's events name it), `environment` and `version`, so
//! Plan's trail links a deployment to the items its release delivers.

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::{Executor, Row, Store, StoreError, on_unique, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `deploy` (a release goes live) or `rollback` (the previous one goes back).
pub const KIND_DEPLOY: &str = "deploy";
pub const KIND_ROLLBACK: &str = "rollback";
/// A change request's build deployed to its review environment.
pub const KIND_REVIEW: &str = "review";
/// A review environment removed (its change request was merged or closed).
pub const KIND_TEARDOWN: &str = "teardown";

/// How many deployments an environment view lists.
pub const RECENT: i64 = 20;

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Deployment {
    pub id: i64,
    pub environment: String,
    pub version: String,
    /// The version that was live before (none for the first deployment).
    pub from_version: Option<String>,
    /// `deploy` or `rollback`.
    pub kind: String,
    /// `recreate`, `rolling`, `blue-green`, `canary` (the first service's; per service in steps).
    pub strategy: String,
    /// `running`, `succeeded`, `failed`, `rolled_back`.
    pub state: String,
    pub actor: String,
    pub promotion_id: Option<i64>,
    /// Why it failed or rolled back (which check, with which numbers).
    pub reason: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub started_at: i64,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Step {
    pub seq: i64,
    pub service: String,
    /// `start`, `ready`, `switch`, `canary`, `drain`, `stop`, `keep-warm`, ...
    pub name: String,
    /// `ok` or `failed`.
    pub state: String,
    /// Numbers of the step (a canary step's error rates and p99s, a drain's cut requests...).
    pub detail: Value,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub started_at: i64,
    pub duration_ms: i64,
}

/// An environment's live and previous release, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentRecord {
    pub project_id: i64,
    pub name: String,
    pub live_release_id: Option<i64>,
    pub live_version: Option<String>,
    pub previous_release_id: Option<i64>,
    pub previous_version: Option<String>,
    /// What should run (restored after a restart): see `engine::Desired`.
    #[serde(skip)]
    #[schemars(skip)]
    pub desired: Option<String>,
}

fn domain(code: ErrorCode, message: impl Into<String>) -> StoreError {
    StoreError::Domain(OuroError::new(code, message))
}

const DEPLOYMENT_SQL: &str = "SELECT id, project_id, environment, release_id, version, from_version, \
     kind, strategy, state, promotion_id, actor, reason, started_at, finished_at FROM deploy_deployments";

fn deployment_from(r: &Row) -> Result<Deployment, StoreError> {
    let started_at = r.i64("started_at")?;
    let finished_at = r.opt_i64("finished_at")?;
    Ok(Deployment {
        id: r.i64("id")?,
        environment: r.text("environment")?,
        version: r.text("version")?,
        from_version: r.opt_text("from_version")?,
        kind: r.text("kind")?,
        strategy: r.text("strategy")?,
        state: r.text("state")?,
        actor: r.text("actor")?,
        promotion_id: r.opt_i64("promotion_id")?,
        reason: r.opt_text("reason")?,
        started_at,
        finished_at,
        duration_ms: finished_at.map(|f| f - started_at),
        steps: Vec::new(),
    })
}

async fn steps_of(ex: &mut impl Executor, deployment_id: i64) -> Result<Vec<Step>, StoreError> {
    q(
        "SELECT seq, service, name, state, detail, started_at, finished_at FROM deploy_steps \
       WHERE deployment_id = $1 ORDER BY seq",
    )
    .bind(deployment_id)
    .fetch_all(ex)
    .await?
    .iter()
    .map(|r| {
        let started_at = r.i64("started_at")?;
        Ok(Step {
            seq: r.i64("seq")?,
            service: r.text("service")?,
            name: r.text("name")?,
            state: r.text("state")?,
            detail: serde_json::from_str(&r.text("detail")?).unwrap_or(Value::Null),
            started_at,
            duration_ms: r.i64("finished_at")? - started_at,
        })
    })
    .collect()
}

/// Deployment `id` of the project, with its steps (404 `deploy.deployment_not_found`).
pub async fn get(
    ex: &mut impl Executor,
    project_id: i64,
    id: i64,
) -> Result<Deployment, StoreError> {
    let row = q(format!(
        "{DEPLOYMENT_SQL} WHERE project_id = $1 AND id = $2"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(ex)
    .await?
    .ok_or_else(|| {
        domain(
            ErrorCode::DeploymentNotFound,
            format!("no deployment {id} in this project"),
        )
    })?;
    let mut d = deployment_from(&row)?;
    d.steps = steps_of(ex, id).await?;
    Ok(d)
}

/// The newest deployments of the project, optionally of one environment or one release.
pub async fn list(
    ex: &mut impl Executor,
    project_id: i64,
    environment: Option<&str>,
    release_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Deployment>, StoreError> {
    q(format!(
        "{DEPLOYMENT_SQL} WHERE project_id = $1 AND ($2 = '' OR environment = $2) \
         AND ($3 = 0 OR release_id = $3) ORDER BY id DESC LIMIT {}",
        limit.clamp(1, 200)
    ))
    .bind(project_id)
    .bind(environment.unwrap_or(""))
    .bind(release_id.unwrap_or(0))
    .fetch_all(ex)
    .await?
    .iter()
    .map(deployment_from)
    .collect()
}

/// The running deployment of an environment, if any.
pub async fn running(
    ex: &mut impl Executor,
    project_id: i64,
    environment: &str,
) -> Result<Option<Deployment>, StoreError> {
    q(format!(
        "{DEPLOYMENT_SQL} WHERE project_id = $1 AND environment = $2 AND state = 'running'"
    ))
    .bind(project_id)
    .bind(environment)
    .fetch_optional(ex)
    .await?
    .map(|r| deployment_from(&r))
    .transpose()
}

/// Every running deployment (the server marks them interrupted after a restart).
pub async fn all_running(ex: &mut impl Executor) -> Result<Vec<(i64, Deployment)>, StoreError> {
    q(format!("{DEPLOYMENT_SQL} WHERE state = 'running'"))
        .fetch_all(ex)
        .await?
        .iter()
        .map(|r| Ok((r.i64("project_id")?, deployment_from(r)?)))
        .collect()
}

/// What a new deployment is.
pub struct NewDeployment<'a> {
    pub project_id: i64,
    pub project_slug: &'a str,
    pub environment: &'a str,
    pub release_id: i64,
    pub version: &'a str,
    pub from_version: Option<&'a str>,
    pub kind: &'a str,
    pub strategy: &'a str,
    pub promotion_id: Option<i64>,
    pub actor: &'a Actor,
}

/// Records a running deployment and appends `deploy.started` (409 `deploy.in_progress` when
/// the environment already has one running).
pub async fn start(store: &Store, d: NewDeployment<'_>) -> Result<i64, OuroError> {
    let mut tx = store.begin().await?;
    if let Some(cur) = running(&mut tx, d.project_id, d.environment).await? {
        return Err(in_progress(d.environment, cur.id));
    }
    let now = ouro_core::time::now_ms();
    let id = on_unique(
        q(
            "INSERT INTO deploy_deployments (project_id, environment, release_id, version, \
           from_version, kind, strategy, state, promotion_id, actor, started_at) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, $10) RETURNING id",
        )
        .bind(d.project_id)
        .bind(d.environment)
        .bind(d.release_id)
        .bind(d.version)
        .bind(d.from_version.map(str::to_string))
        .bind(d.kind)
        .bind(d.strategy)
        .bind(d.promotion_id)
        .bind(d.actor.label())
        .bind(now)
        .fetch_one(&mut tx)
        .await,
        || in_progress(d.environment, 0),
    )?
    .i64("id")?;
    tx.append(
        NewEvent::new(
            ev::DEPLOYMENT_STARTED,
            d.actor,
            id,
            json!({"release": release_ref(d.release_id), "environment": d.environment,
                   "version": d.version, "from_version": d.from_version, "kind": d.kind,
                   "strategy": d.strategy, "promotion": d.promotion_id}),
        )
        .in_project(d.project_id, d.project_slug),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The release as Release's events name it; none for a review deployment (no release).
fn release_ref(release_id: i64) -> Option<String> {
    (release_id > 0).then(|| release_id.to_string())
}

fn in_progress(environment: &str, id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::DeployInProgress,
        format!(
            "a deployment of `{environment}` is already running; wait for it to finish or roll back afterwards"
        ),
    )
    .with_details(json!({"deployment": id}))
}

/// One finished step.
pub struct NewStep<'a> {
    pub service: &'a str,
    pub name: &'a str,
    pub ok: bool,
    pub detail: Value,
    pub started_at: i64,
    pub finished_at: i64,
}

/// Records a step and appends `deploy.step`.
pub async fn step(
    store: &Store,
    project: (i64, &str),
    deployment_id: i64,
    actor: &Actor,
    s: NewStep<'_>,
) -> Result<(), OuroError> {
    let mut tx = store.begin().await?;
    let seq = q("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM deploy_steps WHERE deployment_id = $1")
        .bind(deployment_id)
        .fetch_one(&mut tx)
        .await?
        .i64("n")?;
    let state = if s.ok { "ok" } else { "failed" };
    q(
        "INSERT INTO deploy_steps (deployment_id, seq, service, name, state, detail, started_at, \
       finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(deployment_id)
    .bind(seq)
    .bind(s.service)
    .bind(s.name)
    .bind(state)
    .bind(s.detail.to_string())
    .bind(s.started_at)
    .bind(s.finished_at)
    .execute(&mut tx)
    .await?;
    tx.append(
        NewEvent::new(
            ev::DEPLOYMENT_STEP,
            actor,
            deployment_id,
            json!({"seq": seq, "service": s.service, "step": s.name, "state": state,
                   "duration_ms": s.finished_at - s.started_at, "detail": s.detail}),
        )
        .in_project(project.0, project.1),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// How a deployment ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The version is live; `desired` is the environment's new desired state (JSON).
    Succeeded { desired: String },
    /// It failed before traffic moved (or moved back); the live version is unchanged.
    Failed { reason: String },
    /// A check failed after traffic moved and traffic went back to the old version.
    RolledBack { reason: String },
    /// A review environment was removed: its record goes.
    TornDown,
}

/// Ends a running deployment: its state, the environment's live/previous release on success,
/// and `deploy.succeeded` / `deploy.failed` / `deploy.rolled_back`.
pub async fn finish(
    store: &Store,
    project: (i64, &str),
    deployment_id: i64,
    actor: &Actor,
    outcome: &Outcome,
) -> Result<(), OuroError> {
    let mut tx = store.begin().await?;
    let d = q(format!("{DEPLOYMENT_SQL} WHERE id = $1"))
        .bind(deployment_id)
        .fetch_one(&mut tx)
        .await?;
    let release_id = d.i64("release_id")?;
    let d = deployment_from(&d)?;
    if d.state != "running" {
        return Ok(());
    }
    let now = ouro_core::time::now_ms();
    let (state, reason, kind) = match outcome {
        Outcome::Succeeded { .. } if d.kind == KIND_ROLLBACK => {
            ("succeeded", None, ev::DEPLOYMENT_ROLLED_BACK)
        }
        Outcome::Succeeded { .. } => ("succeeded", None, ev::DEPLOYMENT_SUCCEEDED),
        Outcome::Failed { reason } => ("failed", Some(reason.clone()), ev::DEPLOYMENT_FAILED),
        Outcome::RolledBack { reason } => (
            "rolled_back",
            Some(reason.clone()),
            ev::DEPLOYMENT_ROLLED_BACK,
        ),
        Outcome::TornDown => ("succeeded", None, ev::DEPLOYMENT_SUCCEEDED),
    };
    q("UPDATE deploy_deployments SET state = $1, reason = $2, finished_at = $3 WHERE id = $4")
        .bind(state)
        .bind(reason.clone())
        .bind(now)
        .bind(deployment_id)
        .execute(&mut tx)
        .await?;
    if let Outcome::Succeeded { desired } = outcome {
        let cur = environment(&mut tx, project.0, &d.environment).await?;
        let (prev_id, prev_version) = match (&cur, d.kind.as_str()) {
            // A rollback swaps: the version it left becomes the one to go back to.
            (Some(c), _) => (c.live_release_id, c.live_version.clone()),
            (None, _) => (None, None),
        };
        let prev_id_same = prev_id == Some(release_id);
        q(
            "INSERT INTO deploy_environments (project_id, name, live_release_id, live_version, \
           previous_release_id, previous_version, desired, updated_at) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
           ON CONFLICT (project_id, name) DO UPDATE SET live_release_id = $3, live_version = $4, \
           previous_release_id = $5, previous_version = $6, desired = $7, updated_at = $8",
        )
        .bind(project.0)
        .bind(d.environment.as_str())
        .bind(release_id)
        .bind(d.version.as_str())
        // Redeploying the live release keeps the older previous one.
        .bind(if prev_id_same {
            cur.as_ref().and_then(|c| c.previous_release_id)
        } else {
            prev_id
        })
        .bind(if prev_id_same {
            cur.as_ref().and_then(|c| c.previous_version.clone())
        } else {
            prev_version
        })
        .bind(desired.as_str())
        .bind(now)
        .execute(&mut tx)
        .await?;
    }
    if matches!(outcome, Outcome::TornDown) {
        q("DELETE FROM deploy_environments WHERE project_id = $1 AND name = $2")
            .bind(project.0)
            .bind(d.environment.as_str())
            .execute(&mut tx)
            .await?;
    }
    tx.append(
        NewEvent::new(
            kind,
            actor,
            deployment_id,
            json!({"release": release_ref(release_id), "environment": d.environment,
                   "version": d.version, "from_version": d.from_version, "kind": d.kind,
                   "promotion": d.promotion_id, "reason": reason,
                   "duration_ms": now - d.started_at}),
        )
        .in_project(project.0, project.1),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// An environment's record (none before its first successful deployment).
pub async fn environment(
    ex: &mut impl Executor,
    project_id: i64,
    name: &str,
) -> Result<Option<EnvironmentRecord>, StoreError> {
    q(
        "SELECT project_id, name, live_release_id, live_version, previous_release_id, \
       previous_version, desired FROM deploy_environments WHERE project_id = $1 AND name = $2",
    )
    .bind(project_id)
    .bind(name)
    .fetch_optional(ex)
    .await?
    .map(|r| env_from(&r))
    .transpose()
}

fn env_from(r: &Row) -> Result<EnvironmentRecord, StoreError> {
    Ok(EnvironmentRecord {
        project_id: r.i64("project_id")?,
        name: r.text("name")?,
        live_release_id: r.opt_i64("live_release_id")?,
        live_version: r.opt_text("live_version")?,
        previous_release_id: r.opt_i64("previous_release_id")?,
        previous_version: r.opt_text("previous_version")?,
        desired: r.opt_text("desired")?,
    })
}

/// Every environment of the project that has had a deployment, by name.
pub async fn environments(
    ex: &mut impl Executor,
    project_id: i64,
) -> Result<Vec<EnvironmentRecord>, StoreError> {
    q(
        "SELECT project_id, name, live_release_id, live_version, previous_release_id, \
       previous_version, desired FROM deploy_environments WHERE project_id = $1 ORDER BY name",
    )
    .bind(project_id)
    .fetch_all(ex)
    .await?
    .iter()
    .map(env_from)
    .collect()
}

/// Every environment of every project with a desired state (restored at start).
pub async fn all_desired(ex: &mut impl Executor) -> Result<Vec<EnvironmentRecord>, StoreError> {
    q(
        "SELECT project_id, name, live_release_id, live_version, previous_release_id, \
       previous_version, desired FROM deploy_environments WHERE desired IS NOT NULL",
    )
    .fetch_all(ex)
    .await?
    .iter()
    .map(env_from)
    .collect()
}

/// Forgets an environment's live state (a review environment torn down).
pub async fn clear_environment(
    ex: &mut impl Executor,
    project_id: i64,
    name: &str,
) -> Result<(), StoreError> {
    q("DELETE FROM deploy_environments WHERE project_id = $1 AND name = $2")
        .bind(project_id)
        .bind(name)
        .execute(ex)
        .await?;
    Ok(())
}
