//! Build: pipeline variables and secrets of a project. Thin: the rules live in
//! `ouro_build::secrets`. Listing names is for developers, setting and deleting for maintainers;
//! a secret's value is never returned.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use ouro_build::secrets::{self, Entry, Kind};
use ouro_core::{OuroError, Permission, Role};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let dev = Permission::Project(Role::Developer);
    let maint = Permission::Project(Role::Maintainer);
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/variables",
        dev,
        list_vars,
    )
    .doc(
        "build",
        "The project's pipeline variables with their values, scope and who changed them: `{\"variables\": [...]}`",
    )
    .response::<VarList>(200);
    reg.route(
        Method::PUT,
        "/api/v1/projects/{slug}/variables/{name}",
        maint,
        put_var,
    )
    .doc(
        "build",
        "Set a pipeline variable for every environment or one (`environment`) → 201 when created, 200 when replaced; 422 build.invalid_variable_name / build.invalid_variable_value",
    )
    .request::<SetValue>()
    .response::<Entry>(200);
    reg.route(
        Method::DELETE,
        "/api/v1/projects/{slug}/variables/{name}",
        maint,
        delete_var,
    )
    .doc(
        "build",
        "Delete a pipeline variable → 204; 404 build.variable_not_found",
    )
    .query(
        "environment",
        "The environment it is scoped to; omit for the project-wide one",
    );
    reg.route(
        Method::GET,
        "/api/v1/projects/{slug}/secrets",
        dev,
        list_secrets,
    )
    .doc(
        "build",
        "The project's pipeline secrets: names, scope and who changed them, never the values: `{\"secrets\": [...]}`",
    )
    .response::<SecretList>(200);
    reg.route(
        Method::PUT,
        "/api/v1/projects/{slug}/secrets/{name}",
        maint,
        put_secret,
    )
    .doc(
        "build",
        "Set a pipeline secret (stored encrypted, never returned) for every environment or one → 201 when created, 200 when replaced; 422 when shorter than 6 bytes (it could not be masked)",
    )
    .request::<SetValue>()
    .response::<Entry>(200);
    reg.route(
        Method::DELETE,
        "/api/v1/projects/{slug}/secrets/{name}",
        maint,
        delete_secret,
    )
    .doc(
        "build",
        "Delete a pipeline secret → 204; 404 build.variable_not_found",
    )
    .query(
        "environment",
        "The environment it is scoped to; omit for the project-wide one",
    );
}

/// The project's variables.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VarList {
    pub variables: Vec<Entry>,
}

/// The project's secrets (no values).
#[derive(Debug, Serialize, JsonSchema)]
pub struct SecretList {
    pub secrets: Vec<Entry>,
}

/// A new value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetValue {
    /// At most 64 KiB; a secret at least 6 bytes.
    pub value: String,
    /// The environment it applies to; omitted or empty for every environment.
    #[serde(default)]
    pub environment: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct EnvQuery {
    environment: Option<String>,
}

/// Sets `name` of `kind` in the caller's project: (entry, created).
pub async fn set_value(
    st: &AppState,
    ctx: &Ctx,
    kind: Kind,
    name: &str,
    environment: &str,
    value: &str,
) -> Result<(Entry, bool), OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    Ok(secrets::set(
        &st.store,
        &st.secrets,
        &ctx.actor(),
        p.id,
        &p.slug,
        kind,
        name,
        environment,
        value,
    )
    .await?)
}

/// Deletes `name` of `kind` (scoped to `environment`, `""` for project-wide).
pub async fn delete_value(
    st: &AppState,
    ctx: &Ctx,
    kind: Kind,
    name: &str,
    environment: &str,
) -> Result<(), OuroError> {
    let p = ctx.project().map_err(|e| e.0)?;
    secrets::validate_environment(environment)?;
    Ok(secrets::delete(
        &st.store,
        &ctx.actor(),
        p.id,
        &p.slug,
        kind,
        name,
        environment,
    )
    .await?)
}

async fn list_vars(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<VarList>> {
    let p = ctx.project()?;
    let variables = secrets::list(&mut st.store.read().await?, p.id, Kind::Variable).await?;
    Ok(Json(VarList { variables }))
}

async fn list_secrets(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Json<SecretList>> {
    let p = ctx.project()?;
    let secrets = secrets::list(&mut st.store.read().await?, p.id, Kind::Secret).await?;
    Ok(Json(SecretList { secrets }))
}

async fn put(
    st: AppState,
    ctx: Ctx,
    kind: Kind,
    name: String,
    body: SetValue,
) -> ApiResult<(StatusCode, Json<Entry>)> {
    let env = body.environment.unwrap_or_default();
    let (entry, created) = set_value(&st, &ctx, kind, &name, env.trim(), &body.value).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(entry)))
}

async fn put_var(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<SetValue>,
) -> ApiResult<(StatusCode, Json<Entry>)> {
    put(st, ctx, Kind::Variable, name, body).await
}

async fn put_secret(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<SetValue>,
) -> ApiResult<(StatusCode, Json<Entry>)> {
    put(st, ctx, Kind::Secret, name, body).await
}

async fn delete_var(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Query(q): Query<EnvQuery>,
) -> ApiResult<StatusCode> {
    let env = q.environment.unwrap_or_default();
    delete_value(&st, &ctx, Kind::Variable, &name, env.trim()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_secret(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Query(q): Query<EnvQuery>,
) -> ApiResult<StatusCode> {
    let env = q.environment.unwrap_or_default();
    delete_value(&st, &ctx, Kind::Secret, &name, env.trim()).await?;
    Ok(StatusCode::NO_CONTENT)
}
