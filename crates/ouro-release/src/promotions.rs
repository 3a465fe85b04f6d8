//! Promotion requests (tables `release_promotions`, `release_approvals`,
//! `release_environment_settings`).
//!
//! - The promotion path is `.ouro/environments.yml` at the release's commit, else the YAML kept in
//!   the project settings ([`put_settings`]). The requested environment's configuration is copied
//!   into the promotion row, so re-evaluating needs no git and a later settings edit does not
//!   change an open request.
//! - [`request`]: only a published release; the environment must exist; the one in front of it
//!   (`after`) must have a succeeded promotion of this release. Until the Deploy phase exists,
//!   "succeeded" means *approved*. A failing gate (the release's checks) refuses the request
//!   with 409 and every gate's state.
//! - A promotion is `requested` until every gate passes (then `approved`) or an approver rejects
//!   it (`rejected`). Gates are re-evaluated on each decision and by [`reevaluate`] (the server
//!   runs it periodically and when a promotion is viewed), so a wait timer ending or a window
//!   opening moves it on.
//! - Each change appends its events in the same transaction: `promotion.requested`,
//!   `approval.requested` (the environment needs approvals), `approval.decided`,
//!   `promotion.approved`, `promotion.rejected`.

use std::collections::BTreeSet;
use std::path::Path;

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError, Role};
use ouro_store::{Executor, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use crate::environments::{self, Config, Environment};
use crate::gates::{self, Decision, GateState, GateStatus, PromotionFacts, ReleaseFacts};

/// Who re-evaluates promotions on a timer.
pub const ACTOR: Actor = Actor::System("promotions");
/// At most this many characters in an approval comment.
pub const MAX_COMMENT: usize = 2000;

/// One approval or rejection.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct ApprovalRecord {
    pub user: String,
    /// `approve` or `reject`.
    pub decision: String,
    pub comment: String,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub at: i64,
}

/// A promotion request with its gates (as last evaluated) and decisions.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Promotion {
    pub id: i64,
    pub release: String,
    pub environment: String,
    /// `requested`, `approved` or `rejected`.
    pub state: String,
    pub requested_by: String,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub requested_at: i64,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub decided_at: Option<i64>,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// Where the environment's configuration came from: `.ouro/environments.yml` or `settings`.
    pub config_source: String,
    pub gates: Vec<GateState>,
    pub approvals: Vec<ApprovalRecord>,
}

/// The release columns promotions need.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseRef {
    pub id: i64,
    pub project_id: i64,
    pub repo_id: i64,
    pub version: String,
    pub sha: String,
    pub state: String,
    pub build_run_id: Option<i64>,
    pub test_summary: Option<String>,
    pub publisher: Option<String>,
}

fn domain(code: ErrorCode, message: impl Into<String>) -> StoreError {
    StoreError::Domain(OuroError::new(code, message))
}

fn release_from(r: &Row) -> Result<ReleaseRef, StoreError> {
    Ok(ReleaseRef {
        id: r.i64("id")?,
        project_id: r.i64("project_id")?,
        repo_id: r.i64("repo_id")?,
        version: r.text("version")?,
        sha: r.text("sha")?,
        state: r.text("state")?,
        build_run_id: r.opt_i64("build_run_id")?,
        test_summary: r.opt_text("test_summary")?,
        publisher: r.opt_text("publisher")?,
    })
}

const RELEASE_SQL: &str = "SELECT r.id, r.project_id, r.repo_id, r.version, r.sha, r.state, \
     r.build_run_id, r.test_summary, u.name AS publisher FROM release_releases r \
     LEFT JOIN users u ON u.id = r.published_by";

/// The release `version` of the project (404 `release.not_found`).
pub async fn release(
    ex: &mut impl Executor,
    project_id: i64,
    version: &str,
) -> Result<ReleaseRef, StoreError> {
    q(format!(
        "{RELEASE_SQL} WHERE r.project_id = $1 AND r.version = $2"
    ))
    .bind(project_id)
    .bind(version)
    .fetch_optional(ex)
    .await?
    .map(|r| release_from(&r))
    .transpose()?
    .ok_or_else(|| {
        domain(
            ErrorCode::ReleaseNotFound,
            format!("no release `{version}` in this project"),
        )
    })
}

async fn release_by_id(ex: &mut impl Executor, id: i64) -> Result<ReleaseRef, StoreError> {
    release_from(
        &q(format!("{RELEASE_SQL} WHERE r.id = $1"))
            .bind(id)
            .fetch_one(ex)
            .await?,
    )
}

async fn slug_of(ex: &mut impl Executor, project_id: i64) -> Result<String, StoreError> {
    q("SELECT slug FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(ex)
        .await?
        .text("slug")
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// The project settings' environments YAML, if any.
pub async fn settings_yaml(
    ex: &mut impl Executor,
    project_id: i64,
) -> Result<Option<String>, StoreError> {
    q("SELECT config FROM release_environment_settings WHERE project_id = $1")
        .bind(project_id)
        .fetch_optional(ex)
        .await?
        .map(|r| r.text("config"))
        .transpose()
}

fn invalid(diags: &[ouro_build::Diagnostic]) -> OuroError {
    let lines: Vec<String> = diags.iter().map(|d| d.one_line()).collect();
    OuroError::new(
        ErrorCode::EnvironmentsInvalid,
        format!(
            "the environments are invalid: {}",
            lines.first().cloned().unwrap_or_default()
        ),
    )
    .with_details(json!({ "diagnostics": lines }))
}

/// Replaces the project settings' environments (validated first: 422
/// `release.environments_invalid` with every diagnostic) and appends
/// `release.environments_updated`. An empty text removes them.
pub async fn put_settings(
    store: &Store,
    project_id: i64,
    actor: &Actor,
    user_id: Option<i64>,
    yaml: &str,
    now: i64,
) -> Result<Option<Config>, OuroError> {
    let config = if yaml.trim().is_empty() {
        None
    } else {
        Some(environments::parse(environments::SETTINGS_FILE, yaml).map_err(|d| invalid(&d))?)
    };
    let mut tx = store.begin().await?;
    let slug = slug_of(&mut tx, project_id).await?;
    q("DELETE FROM release_environment_settings WHERE project_id = $1")
        .bind(project_id)
        .execute(&mut tx)
        .await?;
    if config.is_some() {
        q(
            "INSERT INTO release_environment_settings (project_id, config, updated_by, updated_at) \
           VALUES ($1, $2, $3, $4)",
        )
        .bind(project_id)
        .bind(yaml)
        .bind(user_id)
        .bind(now)
        .execute(&mut tx)
        .await?;
    }
    let names: Vec<&str> = config
        .iter()
        .flat_map(|c| c.environments.iter().map(|e| e.name.as_str()))
        .collect();
    tx.append(
        NewEvent::new(
            ev::ENVIRONMENTS_UPDATED,
            actor,
            project_id,
            json!({ "environments": names }),
        )
        .in_project(project_id, &slug),
    )
    .await?;
    tx.commit().await?;
    Ok(config)
}

/// `.ouro/environments.yml` at `sha` in the bare repository `dir` (`None`: no such file, or no
/// such commit, e.g. a release row pointing at a commit that is gone).
pub async fn file_at(dir: &Path, sha: &str) -> Result<Option<Vec<u8>>, OuroError> {
    read_at(dir, sha, environments::FILE).await
}

/// The file `path` at commit `sha` in the bare repository `dir`, read in process (`None`: no
/// such repository, commit or file). A file that cannot be read is an internal error, logged.
async fn read_at(dir: &Path, sha: &str, path: &'static str) -> Result<Option<Vec<u8>>, OuroError> {
    if sha.is_empty() || sha.len() > 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let (d, s) = (dir.to_path_buf(), sha.to_string());
    let read = tokio::task::spawn_blocking(move || ouro_code::git::file_at(&d, &s, path)).await;
    match read {
        Ok(Ok(found)) => Ok(found),
        // No repository (yet) or an unknown commit: as `git ls-tree` failing, nothing there.
        Ok(Err(e)) if e.what != "cat-file" => Ok(None),
        Ok(Err(e)) => {
            tracing::warn!(error = %e.message, file = path, "reading a file of the release's commit failed");
            Err(OuroError::internal())
        }
        Err(e) => {
            tracing::warn!(error = %e, file = path, "reading a file of the release's commit failed");
            Err(OuroError::internal())
        }
    }
}

/// Whether the release's commit declares services (`.ouro/services.yml`), i.e. Deploy deploys
/// its approved promotions.
async fn has_services(repos_root: &Path, rel: &ReleaseRef) -> bool {
    let dir = ouro_code::repos::dir(repos_root, rel.project_id, rel.repo_id);
    matches!(
        read_at(&dir, &rel.sha, ".ouro/services.yml").await,
        Ok(Some(_))
    )
}

/// The promotion path of a release: the file at its commit, else the project settings; with
/// its source (`.ouro/environments.yml` or `settings`).
pub async fn config_for(
    store: &Store,
    repos_root: &Path,
    rel: &ReleaseRef,
) -> Result<(Config, String), OuroError> {
    let dir = ouro_code::repos::dir(repos_root, rel.project_id, rel.repo_id);
    if let Some(bytes) = file_at(&dir, &rel.sha).await? {
        let text = String::from_utf8(bytes).map_err(|_| {
            invalid(&[ouro_build::Diagnostic::error(
                environments::FILE,
                1,
                1,
                environments::ENV_SYNTAX,
                "the file is not valid UTF-8".into(),
            )])
        })?;
        let config = environments::parse(environments::FILE, &text).map_err(|d| invalid(&d))?;
        return Ok((config, environments::FILE.to_string()));
    }
    project_config(store, rel.project_id).await
}

/// The project settings' promotion path (404 `release.environments_not_configured`).
pub async fn project_config(store: &Store, project_id: i64) -> Result<(Config, String), OuroError> {
    let yaml = settings_yaml(&mut store.read().await?, project_id).await?;
    let Some(yaml) = yaml else {
        return Err(OuroError::new(
            ErrorCode::EnvironmentsNotConfigured,
            format!(
                "no environments: add {} to the repository or define them in the project settings",
                environments::FILE
            ),
        ));
    };
    let config =
        environments::parse(environments::SETTINGS_FILE, &yaml).map_err(|d| invalid(&d))?;
    Ok((config, "settings".to_string()))
}

// ---------------------------------------------------------------------------------------------
// Facts for the gates

/// What the checks gates know of the release's pipeline run, from Test's stored results
/// (`ouro_test::results::run_tests`: the last attempt of each reporting job); without any, from
/// the release's `test_summary` (`totals.failed`/`totals.errored`, `gate_passed`), written by
/// `releases::test_summary` from the same function when the release was made.
pub async fn release_facts(
    ex: &mut impl Executor,
    rel: &ReleaseRef,
) -> Result<ReleaseFacts, StoreError> {
    let mut facts = ReleaseFacts {
        publisher: rel.publisher.clone(),
        ..Default::default()
    };
    if let Some(run) = rel.build_run_id {
        let t = ouro_test::results::run_tests(ex, rel.project_id, run).await?;
        if !t.jobs.is_empty() {
            facts.failed_tests = Some(t.totals.failed + t.totals.errored);
            facts.quality_gate_passed = t
                .jobs
                .iter()
                .filter_map(|j| j.gate.as_ref().map(|g| g.passed))
                .reduce(|a, b| a && b);
            return Ok(facts);
        }
    }
    if let Some(v) = rel
        .test_summary
        .as_deref()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
    {
        let n = |k: &str| v.pointer(k).and_then(|x| x.as_u64());
        if let Some(f) = n("/totals/failed") {
            facts.failed_tests = Some(f + n("/totals/errored").unwrap_or(0));
        }
        facts.quality_gate_passed = v.get("gate_passed").and_then(|x| x.as_bool());
    }
    Ok(facts)
}

/// The user names that may approve under `env`'s approvals: project members with at least the
/// role of each group named in `from`, and the users named there.
pub async fn eligible(
    ex: &mut impl Executor,
    project_id: i64,
    env: &Environment,
) -> Result<BTreeSet<String>, StoreError> {
    let Some(a) = &env.approvals else {
        return Ok(BTreeSet::new());
    };
    let members = q(
        "SELECT u.name, m.role FROM members m JOIN users u ON u.id = m.user_id \
                     WHERE m.project_id = $1 AND u.disabled = FALSE",
    )
    .bind(project_id)
    .fetch_all(ex)
    .await?;
    let mut out = BTreeSet::new();
    for f in &a.from {
        match environments::group_role(f) {
            Some(min) => {
                for m in &members {
                    let role = Role::parse(&m.text("role")?).unwrap_or(Role::Viewer);
                    if role >= min {
                        out.insert(m.text("name")?);
                    }
                }
            }
            None => {
                out.insert(f.clone());
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Reading promotions

const PROMOTION_SQL: &str = "SELECT p.*, r.version, u.name AS requester FROM release_promotions p \
     JOIN release_releases r ON r.id = p.release_id JOIN users u ON u.id = p.requested_by";

async fn approvals_of(ex: &mut impl Executor, id: i64) -> Result<Vec<ApprovalRecord>, StoreError> {
    q(
        "SELECT u.name, a.decision, a.comment, a.created_at FROM release_approvals a \
       JOIN users u ON u.id = a.user_id WHERE a.promotion_id = $1 ORDER BY a.id",
    )
    .bind(id)
    .fetch_all(ex)
    .await?
    .iter()
    .map(|r| {
        Ok(ApprovalRecord {
            user: r.text("name")?,
            decision: r.text("decision")?,
            comment: r.text("comment")?,
            at: r.i64("created_at")?,
        })
    })
    .collect()
}

async fn promotion_from(ex: &mut impl Executor, r: &Row) -> Result<Promotion, StoreError> {
    let id = r.i64("id")?;
    Ok(Promotion {
        id,
        release: r.text("version")?,
        environment: r.text("environment")?,
        state: r.text("state")?,
        requested_by: r.text("requester")?,
        requested_at: r.i64("requested_at")?,
        decided_at: r.opt_i64("decided_at")?,
        reason: r.opt_text("reason")?,
        config_source: r.text("config_source")?,
        gates: serde_json::from_str(&r.text("gates")?).unwrap_or_default(),
        approvals: approvals_of(ex, id).await?,
    })
}

/// One promotion of the project (404 `release.promotion_not_found`).
pub async fn get(
    ex: &mut impl Executor,
    project_id: i64,
    id: i64,
) -> Result<Promotion, StoreError> {
    let row = q(format!(
        "{PROMOTION_SQL} WHERE p.project_id = $1 AND p.id = $2"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(ex)
    .await?
    .ok_or_else(|| {
        domain(
            ErrorCode::PromotionNotFound,
            format!("no promotion {id} in this project"),
        )
    })?;
    promotion_from(ex, &row).await
}

/// Every promotion of a release, oldest first.
pub async fn list(ex: &mut impl Executor, release_id: i64) -> Result<Vec<Promotion>, StoreError> {
    let rows = q(format!(
        "{PROMOTION_SQL} WHERE p.release_id = $1 ORDER BY p.id"
    ))
    .bind(release_id)
    .fetch_all(ex)
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        out.push(promotion_from(ex, r).await?);
    }
    Ok(out)
}

/// Where releases are on the path: per environment, the newest approved promotion and the open
/// ones (release version, promotion id, state, time).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Placement {
    pub release: String,
    pub promotion: i64,
    pub state: String,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub at: i64,
}

/// Per environment name: the newest approved promotion and the open ones.
pub async fn placements(
    ex: &mut impl Executor,
    project_id: i64,
    environment: &str,
) -> Result<Vec<Placement>, StoreError> {
    let rows = q(
        "SELECT p.id, p.state, p.requested_at, p.decided_at, r.version \
                  FROM release_promotions p JOIN release_releases r ON r.id = p.release_id \
                  WHERE p.project_id = $1 AND p.environment = $2 AND p.state <> 'rejected' \
                  ORDER BY p.id DESC",
    )
    .bind(project_id)
    .bind(environment)
    .fetch_all(ex)
    .await?;
    let mut out = Vec::new();
    let mut seen_approved = false;
    for r in &rows {
        let state = r.text("state")?;
        if state == "approved" {
            if seen_approved {
                continue;
            }
            seen_approved = true;
        }
        out.push(Placement {
            release: r.text("version")?,
            promotion: r.i64("id")?,
            at: r.opt_i64("decided_at")?.unwrap_or(r.i64("requested_at")?),
            state,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Evaluating

/// The approved promotion of `release_id` to `environment`, when it was decided.
/// When release `release_id` succeeded in `environment`: its promotion was approved and, when
/// Deploy deployed it, the deployment succeeded (then the time of the deployment). `Err` with
/// the deployment's state while it is deploying or failed.
/// `deploys`: the release's commit declares services, so an approval is followed by a
/// deployment and only that deployment's success counts.
async fn succeeded_at(
    ex: &mut impl Executor,
    release_id: i64,
    environment: &str,
    deploys: bool,
) -> Result<Result<Option<i64>, String>, StoreError> {
    let row = q(
        "SELECT decided_at, deploy_state, deployed_at FROM release_promotions \
         WHERE release_id = $1 AND environment = $2 AND state = 'approved'",
    )
    .bind(release_id)
    .bind(environment)
    .fetch_optional(ex)
    .await?;
    let Some(r) = row else {
        return Ok(Ok(None));
    };
    Ok(match r.opt_text("deploy_state")?.as_deref() {
        None if deploys => Err("waiting to start".to_string()),
        None => Ok(r.opt_i64("decided_at")?),
        Some("deployed") => Ok(r.opt_i64("deployed_at")?),
        Some(other) => Err(other.to_string()),
    })
}

async fn decisions_of(ex: &mut impl Executor, id: i64) -> Result<Vec<Decision>, StoreError> {
    Ok(approvals_of(ex, id)
        .await?
        .into_iter()
        .map(|a| Decision {
            user: a.user,
            approve: a.decision == "approve",
        })
        .collect())
}

/// Everything the gates of one stored promotion need.
struct Context {
    env: Environment,
    release: ReleaseRef,
    facts: ReleaseFacts,
    promotion: PromotionFacts,
    eligible: BTreeSet<String>,
}

async fn context(ex: &mut impl Executor, row: &Row) -> Result<Context, StoreError> {
    let env: Environment = serde_json::from_str(&row.text("env_config")?)
        .map_err(|e| StoreError::Decode(format!("promotion env_config: {e}")))?;
    let release = release_by_id(ex, row.i64("release_id")?).await?;
    let facts = release_facts(ex, &release).await?;
    let eligible = eligible(ex, release.project_id, &env).await?;
    Ok(Context {
        promotion: PromotionFacts {
            requested_by: row.text("requester")?,
            requested_at: row.i64("requested_at")?,
        },
        env,
        release,
        facts,
        eligible,
    })
}

async fn evaluate_with(
    ex: &mut impl Executor,
    c: &Context,
    promotion_id: i64,
    now: i64,
) -> Result<Vec<GateState>, StoreError> {
    let decisions = decisions_of(ex, promotion_id).await?;
    let previous = match &c.env.after {
        Some(a) => succeeded_at(ex, c.release.id, a, false)
            .await?
            .ok()
            .flatten(),
        None => None,
    };
    Ok(gates::evaluate(
        &c.env,
        &c.facts,
        &c.promotion,
        &decisions,
        &c.eligible,
        previous,
        now,
    ))
}

/// Stores the gates and moves a requested promotion on: approved when every gate passed,
/// rejected when the approvals gate failed or the release was withdrawn. Returns the new state.
async fn settle(
    ex: &mut ouro_store::Tx,
    c: &Context,
    promotion_id: i64,
    slug: &str,
    actor: &Actor,
    gates_now: &[GateState],
    now: i64,
) -> Result<String, StoreError> {
    let gates_json = serde_json::to_string(gates_now).unwrap_or_else(|_| "[]".into());
    let rejection = if c.release.state != "published" {
        Some(format!("the release is {} now", c.release.state))
    } else {
        gates_now
            .iter()
            .find(|g| g.name == "approvals" && g.status == GateStatus::Failed)
            .map(|g| g.detail.clone())
    };
    let new_state = match (&rejection, gates::overall(gates_now)) {
        (Some(_), _) => "rejected",
        (None, GateStatus::Passed) => "approved",
        _ => "requested",
    };
    let changed = q(
        "UPDATE release_promotions SET gates = $1, state = $2, decided_at = $3, \
                     reason = $4 WHERE id = $5 AND state = 'requested'",
    )
    .bind(gates_json)
    .bind(new_state)
    .bind((new_state != "requested").then_some(now))
    .bind(rejection.clone())
    .bind(promotion_id)
    .execute(ex)
    .await?;
    if changed == 1 && new_state != "requested" {
        let kind = if new_state == "approved" {
            ev::PROMOTION_APPROVED
        } else {
            ev::PROMOTION_REJECTED
        };
        ex.append(
            NewEvent::new(
                kind,
                actor,
                promotion_id,
                json!({"promotion": promotion_id, "release": c.release.version,
                       "environment": c.env.name, "gates": gates_now, "reason": rejection}),
            )
            .in_project(c.release.project_id, slug),
        )
        .await?;
    }
    Ok(new_state.to_string())
}

// ---------------------------------------------------------------------------------------------
// Changing promotions

/// Who acts: a user of the project.
#[derive(Clone, Debug)]
pub struct User<'a> {
    pub id: i64,
    pub name: &'a str,
}

impl User<'_> {
    fn actor(&self) -> Actor {
        Actor::User {
            id: self.id,
            name: self.name.to_string(),
        }
    }
}

/// Requests the promotion of release `version` to `environment` (see the module doc for the
/// rules). When every gate already passes the promotion is approved at once.
pub async fn request(
    store: &Store,
    repos_root: &Path,
    project_id: i64,
    version: &str,
    environment: &str,
    user: &User<'_>,
    now: i64,
) -> Result<Promotion, OuroError> {
    let rel = release(&mut store.read().await?, project_id, version).await?;
    if rel.state != "published" {
        return Err(OuroError::new(
            ErrorCode::PromotionNotPublished,
            format!(
                "release {} is {}: only published releases can be promoted",
                rel.version, rel.state
            ),
        ));
    }
    let (config, source) = config_for(store, repos_root, &rel).await?;
    let Some(env) = config.get(environment).cloned() else {
        let names: Vec<&str> = config
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        return Err(OuroError::new(
            ErrorCode::EnvironmentNotFound,
            format!(
                "no environment `{environment}` (the path is {})",
                names.join(" -> ")
            ),
        )
        .with_details(json!({"field": "environment", "environments": names})));
    };
    let actor = user.actor();
    let deploys = has_services(repos_root, &rel).await;
    let mut tx = store.begin().await?;
    let slug = slug_of(&mut tx, project_id).await?;
    let previous = match &env.after {
        Some(a) => match succeeded_at(&mut tx, rel.id, a, deploys).await? {
            Ok(Some(at)) => Some(at),
            Ok(None) => {
                return Err(OuroError::new(
                    ErrorCode::PromotionOutOfOrder,
                    format!(
                        "release {} cannot go to `{}` before `{a}` succeeded (the promotion to `{a}` is not approved)",
                        rel.version, env.name
                    ),
                )
                .with_details(json!({"after": a})));
            }
            Err(state) => {
                return Err(OuroError::new(
                    ErrorCode::PromotionOutOfOrder,
                    format!(
                        "release {} cannot go to `{}` before `{a}` succeeded (its deployment to `{a}` is {state})",
                        rel.version, env.name
                    ),
                )
                .with_details(json!({"after": a, "deployment": state})));
            }
        },
        None => None,
    };
    let facts = release_facts(&mut tx, &rel).await?;
    let eligible = eligible(&mut tx, project_id, &env).await?;
    let pfacts = PromotionFacts {
        requested_by: user.name.to_string(),
        requested_at: now,
    };
    let gates_now = gates::evaluate(&env, &facts, &pfacts, &[], &eligible, previous, now);
    if let Some(g) = gates_now.iter().find(|g| g.status == GateStatus::Failed) {
        return Err(OuroError::new(
            ErrorCode::PromotionGateFailed,
            format!(
                "release {} cannot go to `{}`: gate `{}` fails: {}",
                rel.version, env.name, g.name, g.detail
            ),
        )
        .with_details(json!({ "gates": gates_now })));
    }
    let inserted = q(
        "INSERT INTO release_promotions (project_id, release_id, environment, state, \
                      env_config, config_source, gates, requested_by, requested_at) \
                      VALUES ($1, $2, $3, 'requested', $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(project_id)
    .bind(rel.id)
    .bind(env.name.as_str())
    .bind(serde_json::to_string(&env).unwrap_or_default())
    .bind(source.as_str())
    .bind(serde_json::to_string(&gates_now).unwrap_or_else(|_| "[]".into()))
    .bind(user.id)
    .bind(now)
    .fetch_one(&mut tx)
    .await;
    let id = ouro_store::on_unique(inserted, || {
        OuroError::new(
            ErrorCode::PromotionExists,
            format!(
                "release {} already has an open or approved promotion to `{}`",
                rel.version, env.name
            ),
        )
    })?
    .i64("id")?;
    tx.append(
        NewEvent::new(
            ev::PROMOTION_REQUESTED,
            &actor,
            id,
            json!({"promotion": id, "release": rel.version, "environment": env.name,
                   "source": source, "gates": gates_now}),
        )
        .in_project(project_id, &slug),
    )
    .await?;
    if let Some(a) = &env.approvals {
        tx.append(
            NewEvent::new(
                ev::APPROVAL_REQUESTED,
                &actor,
                id,
                json!({"promotion": id, "release": rel.version, "environment": env.name,
                       "required": a.required, "from": a.from,
                       "no_self_approval": a.no_self_approval}),
            )
            .in_project(project_id, &slug),
        )
        .await?;
    }
    let c = Context {
        env,
        release: rel,
        facts,
        promotion: pfacts,
        eligible,
    };
    settle(&mut tx, &c, id, &slug, &actor, &gates_now, now).await?;
    let p = get(&mut tx, project_id, id).await?;
    tx.commit().await?;
    Ok(p)
}

/// Records `user`'s approval (or rejection) of promotion `id` with a comment, then re-evaluates
/// its gates. 403 `release.approval_not_allowed` when the user may not decide (not an approver,
/// or self-approval forbidden), 409 when it is closed or the user already decided.
pub async fn decide(
    store: &Store,
    project_id: i64,
    id: i64,
    user: &User<'_>,
    approve: bool,
    comment: &str,
    now: i64,
) -> Result<Promotion, OuroError> {
    let comment = comment.trim();
    if comment.chars().count() > MAX_COMMENT {
        return Err(OuroError::field(
            "comment",
            format!("the comment has more than {MAX_COMMENT} characters"),
        ));
    }
    let actor = user.actor();
    let mut tx = store.begin().await?;
    let slug = slug_of(&mut tx, project_id).await?;
    let row = q(format!(
        "{PROMOTION_SQL} WHERE p.project_id = $1 AND p.id = $2"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(&mut tx)
    .await?
    .ok_or_else(|| {
        OuroError::new(
            ErrorCode::PromotionNotFound,
            format!("no promotion {id} in this project"),
        )
    })?;
    let state = row.text("state")?;
    if state != "requested" {
        return Err(OuroError::new(
            ErrorCode::PromotionClosed,
            format!("promotion {id} is already {state}"),
        ));
    }
    let c = context(&mut tx, &row).await?;
    gates::may_approve(&c.env, &c.facts, &c.promotion, &c.eligible, user.name)
        .map_err(|why| OuroError::new(ErrorCode::ApprovalNotAllowed, why))?;
    let decision = if approve { "approve" } else { "reject" };
    let inserted = q(
        "INSERT INTO release_approvals (promotion_id, user_id, decision, comment, created_at) \
                      VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(user.id)
    .bind(decision)
    .bind(comment)
    .bind(now)
    .execute(&mut tx)
    .await;
    ouro_store::on_unique(inserted, || {
        OuroError::new(
            ErrorCode::ApprovalDuplicate,
            format!("{} already decided on promotion {id}", user.name),
        )
    })?;
    tx.append(
        NewEvent::new(
            ev::APPROVAL_DECIDED,
            &actor,
            id,
            json!({"promotion": id, "release": c.release.version, "environment": c.env.name,
                   "decision": decision, "comment": comment}),
        )
        .in_project(project_id, &slug),
    )
    .await?;
    let gates_now = evaluate_with(&mut tx, &c, id, now).await?;
    settle(&mut tx, &c, id, &slug, &actor, &gates_now, now).await?;
    let p = get(&mut tx, project_id, id).await?;
    tx.commit().await?;
    Ok(p)
}

/// Re-evaluates every requested promotion (of one project, or all), storing the gates and
/// approving those whose gates all pass now. Returns how many changed state.
pub async fn reevaluate(
    store: &Store,
    project_id: Option<i64>,
    now: i64,
) -> Result<usize, OuroError> {
    let ids: Vec<(i64, i64)> = q("SELECT id, project_id FROM release_promotions \
                                  WHERE state = 'requested' AND ($1 = 0 OR project_id = $1) ORDER BY id")
    .bind(project_id.unwrap_or(0))
    .fetch_all(&mut store.read().await?)
    .await?
    .iter()
    .map(|r| Ok((r.i64("id")?, r.i64("project_id")?)))
    .collect::<Result<_, StoreError>>()?;
    let mut changed = 0;
    for (id, pid) in ids {
        let mut tx = store.begin().await?;
        let row = q(format!(
            "{PROMOTION_SQL} WHERE p.id = $1 AND p.state = 'requested'"
        ))
        .bind(id)
        .fetch_optional(&mut tx)
        .await?;
        let Some(row) = row else { continue };
        let slug = slug_of(&mut tx, pid).await?;
        let c = context(&mut tx, &row).await?;
        let gates_now = evaluate_with(&mut tx, &c, id, now).await?;
        if settle(&mut tx, &c, id, &slug, &ACTOR, &gates_now, now).await? != "requested" {
            changed += 1;
        }
        tx.commit().await?;
    }
    Ok(changed)
}

// ---------------------------------------------------------------------------------------------
// What Deploy did with a promotion

/// Follows Deploy's events for approved promotions (the ledger consumer `release.deployments`):
/// a promotion's `deploy_state` becomes `deploying`, `deployed` (with the time) or `failed`, so
/// the next environment waits for the deployment, not only the approval; and when the project
/// enabled `auto_promote`, a succeeded deployment requests the release's promotion to the
/// environments after that one (as the user who requested this promotion).
pub struct DeployTracker {
    pub repos_root: std::path::PathBuf,
}

impl ouro_store::consumers::Consumer for DeployTracker {
    fn name(&self) -> &'static str {
        "release.deployments"
    }

    fn handle<'a>(
        &'a self,
        store: &'a Store,
        event: &'a ouro_core::Event,
    ) -> ouro_store::consumers::BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move {
            let state = match event.kind.as_str() {
                k if k == ev::DEPLOYMENT_STARTED.name => "deploying",
                k if k == ev::DEPLOYMENT_SUCCEEDED.name => "deployed",
                k if k == ev::DEPLOYMENT_FAILED.name || k == ev::DEPLOYMENT_ROLLED_BACK.name => {
                    "failed"
                }
                _ => return Ok(()),
            };
            // Only deployments of a promotion (not rollbacks, manual or review deployments).
            let Some(promotion) = event.payload.get("promotion").and_then(|v| v.as_i64()) else {
                return Ok(());
            };
            if event.payload.get("kind").and_then(|v| v.as_str()) != Some("deploy") {
                return Ok(());
            }
            let mut tx = store.begin().await?;
            q("UPDATE release_promotions SET deploy_state = $1, deployed_at = $2 WHERE id = $3")
                .bind(state)
                .bind((state == "deployed").then_some(event.time))
                .bind(promotion)
                .execute(&mut tx)
                .await?;
            tx.commit().await?;
            if state == "deployed" {
                self.promote_next(store, promotion).await?;
            }
            Ok(())
        })
    }
}

impl DeployTracker {
    async fn promote_next(&self, store: &Store, promotion: i64) -> Result<(), OuroError> {
        let row = q(
            "SELECT p.project_id, p.environment, p.requested_by, u.name AS requester, r.version \
             FROM release_promotions p JOIN release_releases r ON r.id = p.release_id \
             JOIN users u ON u.id = p.requested_by WHERE p.id = $1",
        )
        .bind(promotion)
        .fetch_optional(&mut store.read().await?)
        .await?;
        let Some(row) = row else { return Ok(()) };
        let project_id = row.i64("project_id")?;
        if !crate::settings::get(&mut store.read().await?, project_id)
            .await?
            .auto_promote
        {
            return Ok(());
        }
        let version = row.text("version")?;
        let from = row.text("environment")?;
        let rel = release(&mut store.read().await?, project_id, &version).await?;
        let (config, _) = config_for(store, &self.repos_root, &rel).await?;
        let user = User {
            id: row.i64("requested_by")?,
            name: &row.text("requester")?,
        };
        for next in config
            .environments
            .iter()
            .filter(|e| e.after.as_deref() == Some(from.as_str()))
        {
            match request(
                store,
                &self.repos_root,
                project_id,
                &version,
                &next.name,
                &user,
                ouro_core::time::now_ms(),
            )
            .await
            {
                Ok(_) => {}
                // Already requested (by someone, or an earlier delivery of this event), or a
                // gate fails: the promotion page shows why; nothing to retry.
                Err(e) => tracing::info!(release = %version, environment = %next.name,
                    reason = %e.message, "the next environment's promotion was not requested"),
            }
        }
        Ok(())
    }
}
