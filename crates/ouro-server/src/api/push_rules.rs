//! Code: a repository's push rules (protected branches, secret scanning rules, size limits),
//! read and changed by maintainers. The checks themselves run in the pre-receive stage of
//! `crate::git_http`.

use axum::extract::State;
use axum::http::Method;
use ouro_code::push_rules::{self, ProtectedBranch, PushRules, PushRulesUpdate};
use ouro_code::repos;
use ouro_core::{Permission, Role};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let rules = "/api/v1/projects/{slug}/repos/{name}/push-rules";
    let branches = "/api/v1/projects/{slug}/repos/{name}/protected-branches";
    reg.route(Method::GET, rules, Permission::Project(Role::Maintainer), get_rules)
        .doc(
            "code",
            "The repository's push rules: protected branches (the built-in default while none were saved), disabled secret scanning rules, size limits",
        )
        .response::<PushRules>(200);
    reg.route(Method::PUT, rules, Permission::Project(Role::Maintainer), put_rules)
        .doc(
            "code",
            "Save push rules; omitted protected_branches or disabled_secret_rules keep their values, the limits are replaced (null: the server's). 422 with the field",
        )
        .request::<PushRulesUpdate>()
        .response::<PushRules>(200);
    reg.route(Method::GET, branches, Permission::Project(Role::Maintainer), get_branches)
        .doc(
            "code",
            "The protected branches in effect (the default branch, maintainers only, while none were saved)",
        )
        .response::<Vec<ProtectedBranch>>(200);
    reg.route(Method::PUT, branches, Permission::Project(Role::Maintainer), put_branches)
        .doc(
            "code",
            "Replace the protected branches (an empty list protects nothing); first matching pattern decides",
        )
        .request::<Vec<ProtectedBranch>>()
        .response::<Vec<ProtectedBranch>>(200);
    let tags = "/api/v1/projects/{slug}/repos/{name}/protected-tags";
    reg.route(Method::GET, tags, Permission::Project(Role::Maintainer), get_tags)
        .doc(
            "code",
            "The protected tag patterns (`v*`): creating a matching tag needs maintainer; nobody may move or delete one by a push",
        )
        .response::<Vec<String>>(200);
    reg.route(Method::PUT, tags, Permission::Project(Role::Maintainer), put_tags)
        .doc(
            "code",
            "Replace the protected tag patterns (a JSON list of globs; an empty list protects none). 422 with the field",
        )
        .request::<Vec<String>>()
        .response::<Vec<String>>(200);
}

async fn get_tags(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<String>>> {
    let r = repo(&st, &ctx, &name).await?;
    Ok(Json(
        push_rules::load(&mut st.store.read().await?, &r)
            .await?
            .protected_tags,
    ))
}

async fn put_tags(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<Vec<String>>,
) -> ApiResult<Json<Vec<String>>> {
    let r = repo(&st, &ctx, &name).await?;
    let slug = ctx.project()?.slug.clone();
    // Only the tags change; the limits stay as saved.
    let current = push_rules::load(&mut st.store.read().await?, &r).await?;
    let update = PushRulesUpdate {
        protected_branches: None,
        disabled_secret_rules: None,
        max_push_bytes: current.max_push_bytes,
        max_file_bytes: current.max_file_bytes,
        protected_tags: Some(body),
    };
    Ok(Json(
        push_rules::save(&st.store, &r, &slug, &ctx.actor(), &update)
            .await?
            .protected_tags,
    ))
}

async fn repo(st: &AppState, ctx: &Ctx, name: &str) -> ApiResult<repos::Repo> {
    let p = ctx.project()?;
    Ok(repos::get(&mut st.store.read().await?, p.id, name).await?)
}

async fn get_rules(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<PushRules>> {
    let r = repo(&st, &ctx, &name).await?;
    Ok(Json(
        push_rules::load(&mut st.store.read().await?, &r).await?,
    ))
}

async fn put_rules(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<PushRulesUpdate>,
) -> ApiResult<Json<PushRules>> {
    let r = repo(&st, &ctx, &name).await?;
    let slug = ctx.project()?.slug.clone();
    Ok(Json(
        push_rules::save(&st.store, &r, &slug, &ctx.actor(), &body).await?,
    ))
}

async fn get_branches(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<ProtectedBranch>>> {
    let r = repo(&st, &ctx, &name).await?;
    Ok(Json(
        push_rules::load(&mut st.store.read().await?, &r)
            .await?
            .protected_branches,
    ))
}

async fn put_branches(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<Vec<ProtectedBranch>>,
) -> ApiResult<Json<Vec<ProtectedBranch>>> {
    let r = repo(&st, &ctx, &name).await?;
    let slug = ctx.project()?.slug.clone();
    // Only the branches change; the limits stay as saved.
    let current = push_rules::load(&mut st.store.read().await?, &r).await?;
    let update = PushRulesUpdate {
        protected_branches: Some(body),
        disabled_secret_rules: None,
        max_push_bytes: current.max_push_bytes,
        max_file_bytes: current.max_file_bytes,
        protected_tags: None,
    };
    Ok(Json(
        push_rules::save(&st.store, &r, &slug, &ctx.actor(), &update)
            .await?
            .protected_branches,
    ))
}
