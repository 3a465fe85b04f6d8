//! Pipeline variables and secrets, per project and optionally per environment
//! (`build_variables`).
//!
//! - Two kinds share one table and one set of rules: a **variable** is stored and shown in plain
//!   text; a **secret** is sealed with the instance key ([`SecretBox`], ChaCha20-Poly1305) before
//!   it reaches the database and is never returned after it was set: listings carry the name,
//!   the scope and who changed it when, never the value.
//! - Names are `[A-Z_][A-Z0-9_]*`, at most [`MAX_NAME`] characters; names starting with `OURO_`
//!   are reserved for what Ouro itself sets. Values are at most [`MAX_VALUE`] bytes; a secret
//!   shorter than [`crate::mask::MIN_SECRET_LEN`] bytes is refused because it could not be masked
//!   in job logs without garbling them.
//! - Scope: `environment` is an environment name, or empty for every environment. For a job,
//!   values scoped to its environment override project-wide ones of the same name ([`for_job`]).
//! - Every change appends `build.variable_changed` or `build.secret_changed` (action `set` or
//!   `deleted`, name, environment; never the value) in the same transaction: the audit trail.
//!   Setting an existing name replaces its value and keeps its `created_at` (last write wins).
//!
//! For the runner: call [`for_job`] with `trusted` from [`is_trusted`] (a run for a change
//! request whose author is not at least a developer of the project gets no secrets), then
//! [`JobVars::apply`] to put the values into the expression [`Context`] (`secrets` and `vars`),
//! [`JobVars::mask_set`] for the log masker, and [`JobVars::env_under`] for the job's
//! environment variables (variables only: secrets reach a step only through `${{ secrets.X }}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError, Role};
use ouro_store::crypto::SecretBox;
use ouro_store::{Executor, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use crate::expr::Context;
use crate::mask::{MIN_SECRET_LEN, MaskError, SecretSet};

/// Longest name, in characters.
pub const MAX_NAME: usize = 100;
/// Largest value, in bytes (64 KiB).
pub const MAX_VALUE: usize = 64 * 1024;
/// Longest environment name, in characters.
pub const MAX_ENVIRONMENT: usize = 64;
/// The reserved name prefix.
pub const RESERVED_PREFIX: &str = "OURO_";

/// A plain variable or a sealed secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Variable,
    Secret,
}

impl Kind {
    /// The stored form (`var`, `secret`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Variable => "var",
            Kind::Secret => "secret",
        }
    }

    /// For messages: `variable` or `secret`.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Variable => "variable",
            Kind::Secret => "secret",
        }
    }

    fn event(self) -> ouro_core::EventKind {
        match self {
            Kind::Variable => ev::VARIABLE_CHANGED,
            Kind::Secret => ev::SECRET_CHANGED,
        }
    }
}

/// A variable or secret as listed. `value` is set for variables only.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Entry {
    pub name: String,
    /// The environment it applies to; empty for every environment.
    pub environment: String,
    /// The value of a plain variable; absent for a secret (never returned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Who set it first (a ledger actor label, e.g. `user:alice`).
    pub created_by: String,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    /// Who set it last.
    pub updated_by: String,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub updated_at: i64,
}

/// What a job gets: variables and (for a trusted run) secrets, environment overrides applied.
#[derive(Clone, Default, PartialEq)]
pub struct JobVars {
    pub vars: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for JobVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobVars")
            .field("vars", &self.vars)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl JobVars {
    /// `ctx` with the `secrets` and `vars` expression contexts set from these values.
    pub fn apply(&self, ctx: Context) -> Context {
        ctx.with_secrets(self.secrets.clone())
            .with_vars(self.vars.clone())
    }

    /// The log mask for the secrets (raw, URL-encoded and base64 forms are all masked).
    pub fn mask_set(&self) -> Result<Arc<SecretSet>, MaskError> {
        SecretSet::new(self.secrets.values())
    }

    /// The job's environment variables: the variables, with `env` (the job's own environment,
    /// from the pipeline file) layered on top. Secrets are not exported.
    pub fn env_under(&self, env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = self.vars.clone();
        out.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
}

/// Checks a name: `[A-Z_][A-Z0-9_]*`, at most [`MAX_NAME`], not `OURO_*`.
pub fn validate_name(name: &str) -> Result<(), OuroError> {
    let err = |msg: String| {
        OuroError::new(ErrorCode::InvalidVariableName, msg).with_details(json!({"field": "name"}))
    };
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_');
    if !ok_first
        || !name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        let shown: String = name.chars().take(40).collect();
        return Err(err(format!(
            "invalid name {shown:?}: use capital letters, digits and _, not starting with a digit (like DEPLOY_TOKEN)"
        )));
    }
    if name.len() > MAX_NAME {
        return Err(err(format!("a name is at most {MAX_NAME} characters")));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(err(format!(
            "names starting with {RESERVED_PREFIX} are reserved for the variables Ouro sets"
        )));
    }
    Ok(())
}

/// Checks a value for `kind`: at most [`MAX_VALUE`] bytes; a secret at least
/// [`MIN_SECRET_LEN`] bytes.
pub fn validate_value(kind: Kind, value: &str) -> Result<(), OuroError> {
    let err = |msg: String| {
        OuroError::new(ErrorCode::InvalidVariableValue, msg).with_details(json!({"field": "value"}))
    };
    if value.len() > MAX_VALUE {
        return Err(err(format!(
            "a value is at most {} KiB ({} bytes given)",
            MAX_VALUE / 1024,
            value.len()
        )));
    }
    if kind == Kind::Secret && value.len() < MIN_SECRET_LEN {
        return Err(err(format!(
            "a secret must be at least {MIN_SECRET_LEN} bytes: a shorter value could not be masked in job logs \
             (every occurrence of it would have to be hidden); store it as a variable if it is not secret"
        )));
    }
    Ok(())
}

/// Checks an environment name: empty (every environment) or letters, digits, `-`, `_`, `.`,
/// at most [`MAX_ENVIRONMENT`] characters.
pub fn validate_environment(env: &str) -> Result<(), OuroError> {
    if env.len() > MAX_ENVIRONMENT
        || !env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || env.starts_with(['-', '.'])
    {
        return Err(OuroError::field(
            "environment",
            format!(
                "an environment name is letters, digits, -, _ and . (at most {MAX_ENVIRONMENT} characters), or empty for every environment"
            ),
        ));
    }
    Ok(())
}

fn entry_from(r: &Row, kind: Kind) -> Result<Entry, StoreError> {
    Ok(Entry {
        name: r.text("name")?,
        environment: r.text("environment")?,
        value: match kind {
            Kind::Variable => Some(r.text("value")?),
            Kind::Secret => None,
        },
        created_by: r.text("created_by")?,
        created_at: r.i64("created_at")?,
        updated_by: r.text("updated_by")?,
        updated_at: r.i64("updated_at")?,
    })
}

/// The project's variables or secrets, by name then environment. Secret values are not read.
pub async fn list(
    ex: &mut impl Executor,
    project_id: i64,
    kind: Kind,
) -> Result<Vec<Entry>, StoreError> {
    q(
        "SELECT * FROM build_variables WHERE project_id = $1 AND kind = $2 \
       ORDER BY name, environment",
    )
    .bind(project_id)
    .bind(kind.as_str())
    .fetch_all(ex)
    .await?
    .iter()
    .map(|r| entry_from(r, kind))
    .collect()
}

/// Sets a variable or secret (validated; a secret is sealed with `sbox`). Returns the entry and
/// whether it was created (false: an existing value was replaced).
#[allow(clippy::too_many_arguments)]
pub async fn set(
    store: &Store,
    sbox: &SecretBox,
    actor: &Actor,
    project_id: i64,
    slug: &str,
    kind: Kind,
    name: &str,
    environment: &str,
    value: &str,
) -> Result<(Entry, bool), StoreError> {
    validate_name(name)?;
    validate_environment(environment)?;
    validate_value(kind, value)?;
    let stored = match kind {
        Kind::Variable => value.to_string(),
        Kind::Secret => sbox.seal(value),
    };
    let now = ouro_core::time::now_ms();
    let who = actor.label();
    let mut tx = store.begin().await?;
    let existing = q(
        "SELECT id FROM build_variables WHERE project_id = $1 AND kind = $2 \
                      AND environment = $3 AND name = $4",
    )
    .bind(project_id)
    .bind(kind.as_str())
    .bind(environment)
    .bind(name)
    .fetch_optional(&mut tx)
    .await?;
    let (id, created) = match existing {
        Some(r) => {
            let id = r.i64("id")?;
            q("UPDATE build_variables SET value = $1, updated_by = $2, updated_at = $3 WHERE id = $4")
                .bind(stored)
                .bind(who.clone())
                .bind(now)
                .bind(id)
                .execute(&mut tx)
                .await?;
            (id, false)
        }
        None => {
            let id = q(
                "INSERT INTO build_variables (project_id, kind, environment, name, value, \
                 created_by, created_at, updated_by, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $7) RETURNING id",
            )
            .bind(project_id)
            .bind(kind.as_str())
            .bind(environment)
            .bind(name)
            .bind(stored)
            .bind(who.clone())
            .bind(now)
            .fetch_one(&mut tx)
            .await?
            .i64("id")?;
            (id, true)
        }
    };
    tx.append(
        NewEvent::new(
            kind.event(),
            actor,
            id,
            json!({"action": "set", "name": name, "environment": environment,
                   "created": created}),
        )
        .in_project(project_id, slug),
    )
    .await?;
    let row = q("SELECT * FROM build_variables WHERE id = $1")
        .bind(id)
        .fetch_one(&mut tx)
        .await?;
    let entry = entry_from(&row, kind)?;
    tx.commit().await?;
    Ok((entry, created))
}

/// Deletes a variable or secret; `build.variable_not_found` when there is none of that name in
/// that environment (`""` = the project-wide one).
pub async fn delete(
    store: &Store,
    actor: &Actor,
    project_id: i64,
    slug: &str,
    kind: Kind,
    name: &str,
    environment: &str,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let row = q(
        "DELETE FROM build_variables WHERE project_id = $1 AND kind = $2 AND environment = $3 \
         AND name = $4 RETURNING id",
    )
    .bind(project_id)
    .bind(kind.as_str())
    .bind(environment)
    .bind(name)
    .fetch_optional(&mut tx)
    .await?;
    let Some(row) = row else {
        let shown: String = name.chars().take(100).collect();
        let scope = if environment.is_empty() {
            "for all environments".to_string()
        } else {
            format!("for environment {environment:?}")
        };
        return Err(OuroError::new(
            ErrorCode::VariableNotFound,
            format!("there is no {} {shown:?} {scope}", kind.noun()),
        )
        .into());
    };
    tx.append(
        NewEvent::new(
            kind.event(),
            actor,
            row.i64("id")?,
            json!({"action": "deleted", "name": name, "environment": environment}),
        )
        .in_project(project_id, slug),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The variables and secrets a job of `project_id` running in `environment` (None: no
/// environment) gets: project-wide values, overridden by the environment's. With
/// `trusted == false` (a run for a change request whose author is not at least a developer)
/// `secrets` is empty. A secret that no longer opens (the instance key changed) is left out and
/// logged.
pub async fn for_job(
    ex: &mut impl Executor,
    sbox: &SecretBox,
    project_id: i64,
    environment: Option<&str>,
    trusted: bool,
) -> Result<JobVars, StoreError> {
    let env = environment.unwrap_or("");
    let rows = q(
        "SELECT kind, environment, name, value FROM build_variables \
         WHERE project_id = $1 AND (environment = '' OR environment = $2) \
         ORDER BY environment, name",
    )
    .bind(project_id)
    .bind(env)
    .fetch_all(ex)
    .await?;
    // '' sorts first, so environment-scoped values are inserted last and win.
    let mut out = JobVars::default();
    for r in &rows {
        let (kind, name) = (r.text("kind")?, r.text("name")?);
        if kind == Kind::Variable.as_str() {
            out.vars.insert(name, r.text("value")?);
        } else if kind == Kind::Secret.as_str() && trusted {
            match sbox.open(&r.text("value")?) {
                Some(v) => {
                    out.secrets.insert(name, v);
                }
                None => tracing::warn!(
                    project_id,
                    secret = %name,
                    "a pipeline secret cannot be decrypted with the instance key; set it again"
                ),
            }
        }
    }
    Ok(out)
}

/// Whether user `user_name` may give a run secrets in `project_id`: an instance admin or a
/// member with at least the developer role. Unknown or disabled users are not trusted.
pub async fn is_trusted(
    ex: &mut impl Executor,
    project_id: i64,
    user_name: &str,
) -> Result<bool, StoreError> {
    let row = q("SELECT u.is_admin, u.disabled, m.role FROM users u \
                 LEFT JOIN members m ON m.user_id = u.id AND m.project_id = $1 WHERE u.name = $2")
    .bind(project_id)
    .bind(user_name)
    .fetch_optional(ex)
    .await?;
    let Some(r) = row else { return Ok(false) };
    if r.bool("disabled")? {
        return Ok(false);
    }
    if r.bool("is_admin")? {
        return Ok(true);
    }
    Ok(r.opt_text("role")?
        .and_then(|s| Role::parse(&s))
        .is_some_and(|role| role >= Role::Developer))
}

/// [`is_trusted`] for a ledger actor label (`user:alice`); other actors (`system:*`) are
/// trusted: they are Ouro itself (a push by a member, a schedule).
pub async fn is_trusted_actor(
    ex: &mut impl Executor,
    project_id: i64,
    actor_label: &str,
) -> Result<bool, StoreError> {
    match actor_label.strip_prefix("user:") {
        Some(name) => is_trusted(ex, project_id, name).await,
        None => Ok(actor_label != "anonymous"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["A", "_X", "DEPLOY_TOKEN", "A1_2", "OURO"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "1A", "A-B", "A B", "OURO_X", "É"] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidVariableName, "{bad}");
            assert_eq!(e.details.unwrap()["field"], "name");
        }
        assert!(validate_name(&"A".repeat(MAX_NAME)).is_ok());
        assert!(validate_name(&"A".repeat(MAX_NAME + 1)).is_err());
    }

    #[test]
    fn values() {
        assert!(validate_value(Kind::Variable, "").is_ok());
        assert!(validate_value(Kind::Variable, "x").is_ok());
        let e = validate_value(Kind::Secret, "12345").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidVariableValue);
        assert!(e.message.contains("masked"), "{}", e.message);
        assert!(validate_value(Kind::Secret, "123456").is_ok());
        assert!(validate_value(Kind::Variable, &"x".repeat(MAX_VALUE)).is_ok());
        assert!(validate_value(Kind::Secret, &"x".repeat(MAX_VALUE + 1)).is_err());
    }

    #[test]
    fn environments() {
        for ok in ["", "prod", "staging-eu.1", "a_b"] {
            assert!(validate_environment(ok).is_ok(), "{ok}");
        }
        for bad in ["-x", ".x", "a b", "a/b", &"e".repeat(65)] {
            assert!(validate_environment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn job_vars_apply_to_context_mask_and_env() {
        let jv = JobVars {
            vars: [("REGION".to_string(), "eu".to_string())].into(),
            secrets: [("TOKEN".to_string(), "tok-123456".to_string())].into(),
        };
        let ctx = jv.apply(Context::new());
        let t = crate::expr::parse_template("${{ vars.REGION }}/${{ secrets.TOKEN }}").unwrap();
        assert_eq!(t.render(&ctx).unwrap(), "eu/tok-123456");
        let set = jv.mask_set().unwrap();
        assert_eq!(set.mask_all(b"x tok-123456 y"), b"x *** y".to_vec());
        let env = jv.env_under(&[("REGION".to_string(), "us".to_string())].into());
        assert_eq!(env["REGION"], "us");
        assert!(!env.contains_key("TOKEN"));
        assert!(!format!("{jv:?}").contains("tok-123456"));
    }
}
