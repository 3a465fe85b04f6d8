//! Code: change requests, reviews, commit statuses, merge rules and the merge itself.
//! Thin: the gate and the merge live in `ouro_code::cr`.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ouro_code::branch_rules::{self, BranchMergeRules};
use ouro_code::cr::{
    self, ChangeRequest, CommitStatus, Gate, Identity, MergeOptions, MergeRules, NewChangeRequest,
    NewReview, NewStatus, Review,
};
use ouro_code::cr_meta::{self, CrPatch, ListFilter};
use ouro_code::repos::{self, Repo};
use ouro_core::{Permission, Role};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::repos::repos_root;
use crate::error::ApiResult;
use crate::extract::{Ctx, Json, Path, Query};
use crate::registry::Registry;

pub fn register(reg: &mut Registry) {
    let base = "/api/v1/projects/{slug}/repos/{name}/change-requests";
    let one = "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}";
    reg.route(Method::GET, base, Permission::Project(Role::Viewer), list)
        .doc("code", "A repository's change requests, newest first")
        .query("state", "Only `open`, `merged` or `closed` ones")
        .query("label", "Only those with this label")
        .query("author", "Only those opened by this user")
        .query(
            "reviewer",
            "Only those where this user is a requested reviewer",
        )
        .query("draft", "`true`: only drafts; `false`: only ready ones")
        .response::<Vec<ChangeRequest>>(200);
    reg.route(Method::POST, base, Permission::Project(Role::Developer), open)
        .doc(
            "code",
            "Open a change request from `source` into `target` (branches of this repository) → 201 with `number`",
        )
        .request::<NewChangeRequest>()
        .response::<ChangeRequest>(201);
    reg.route(Method::GET, one, Permission::Project(Role::Viewer), show)
        .doc(
            "code",
            "One change request with its reviews, the head commit's statuses and the merge gate (every condition, met or not)",
        )
        .response::<CrView>(200);
    reg.route(Method::PATCH, one, Permission::Project(Role::Developer), edit)
        .doc(
            "code",
            "Edit any of `title`, `description`, `draft` (false = ready for review), `labels` and `reviewers` (full sets); send `version` to get 409 when it changed since",
        )
        .request::<CrPatch>()
        .response::<ChangeRequest>(200);
    let label = "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}/labels/{label}";
    reg.route(
        Method::POST,
        label,
        Permission::Project(Role::Developer),
        add_label,
    )
    .doc("code", "Add one label (1 to 50 characters)")
    .response::<ChangeRequest>(200);
    reg.route(
        Method::DELETE,
        label,
        Permission::Project(Role::Developer),
        remove_label,
    )
    .doc("code", "Remove one label")
    .response::<ChangeRequest>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}/reviews",
        Permission::Project(Role::Developer),
        review,
    )
    .doc(
        "code",
        "Review: `{\"verdict\": \"approve\"}` or `request_changes`, optional `body`; the author cannot approve",
    )
    .request::<NewReview>()
    .response::<Review>(201);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}/merge",
        Permission::Project(Role::Developer),
        merge,
    )
    .doc(
        "code",
        "Merge through the gate → 200; 409 code.merge_blocked lists the unmet conditions in `details.conditions`",
    )
    .request::<MergeOptions>()
    .response::<ChangeRequest>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}/close",
        Permission::Project(Role::Developer),
        close,
    )
    .doc("code", "Close without merging")
    .response::<ChangeRequest>(200);
    reg.route(
        Method::POST,
        "/api/v1/projects/{slug}/repos/{name}/change-requests/{number}/reopen",
        Permission::Project(Role::Developer),
        reopen,
    )
    .doc("code", "Reopen a closed change request")
    .response::<ChangeRequest>(200);
    let statuses = "/api/v1/projects/{slug}/repos/{name}/commits/{sha}/statuses";
    reg.route(
        Method::POST,
        statuses,
        Permission::Project(Role::Developer),
        post_status,
    )
    .doc(
        "code",
        "Post a status for a commit: `{\"name\", \"state\": pending|success|failure|error, \"url\"?, \"description\"?}` → 201",
    )
    .request::<NewStatus>()
    .response::<CommitStatus>(201);
    reg.route(
        Method::GET,
        statuses,
        Permission::Project(Role::Viewer),
        list_statuses,
    )
    .doc("code", "The latest status of each name for a commit")
    .response::<Vec<CommitStatus>>(200);
    let rules = "/api/v1/projects/{slug}/repos/{name}/merge-rules";
    reg.route(
        Method::GET,
        rules,
        Permission::Project(Role::Viewer),
        get_rules,
    )
    .doc("code", "The repository's merge method and gate")
    .response::<MergeRules>(200);
    reg.route(
        Method::PUT,
        rules,
        Permission::Project(Role::Maintainer),
        put_rules,
    )
    .doc(
        "code",
        "Set the merge method (merge, squash, fast_forward), required approvals and checks, and whether new commits dismiss approvals",
    )
    .request::<MergeRules>()
    .response::<MergeRules>(200);
    let branches = "/api/v1/projects/{slug}/repos/{name}/merge-rules/branches";
    reg.route(
        Method::GET,
        branches,
        Permission::Project(Role::Viewer),
        list_branch_rules,
    )
    .doc(
        "code",
        "Merge rules per target-branch pattern, most specific first (a change request uses the most specific matching pattern, else the repository default of `.../merge-rules`)",
    )
    .response::<Vec<BranchMergeRules>>(200);
    let one_branch = "/api/v1/projects/{slug}/repos/{name}/merge-rules/branches/{pattern}";
    reg.route(
        Method::PUT,
        one_branch,
        Permission::Project(Role::Maintainer),
        put_branch_rules,
    )
    .doc(
        "code",
        "Create or replace the merge rules of a target-branch pattern (URL-encoded: `release%2F*`); the body is a merge rule set as for `.../merge-rules`",
    )
    .request::<MergeRules>()
    .response::<BranchMergeRules>(200);
    reg.route(
        Method::DELETE,
        one_branch,
        Permission::Project(Role::Maintainer),
        delete_branch_rules,
    )
    .doc(
        "code",
        "Delete the merge rules of a target-branch pattern → 204 (its branches fall back to a less specific pattern or the repository default); 404 code.merge_rules_not_found",
    );
}

/// A change request with what decides its merge.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CrView {
    #[serde(flatten)]
    pub cr: ChangeRequest,
    pub reviews: Vec<Review>,
    /// The latest status of each name on the head commit.
    pub statuses: Vec<CommitStatus>,
    pub gate: Gate,
    /// The comment threads (on the change request and on diff lines), oldest first, with
    /// `outdated` computed against the diff as it is now.
    pub threads: Vec<ouro_code::cr_comments::Thread>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    label: Option<String>,
    author: Option<String>,
    reviewer: Option<String>,
    draft: Option<String>,
}

async fn repo_of(st: &AppState, ctx: &Ctx, name: &str) -> ApiResult<Repo> {
    let p = ctx.project()?;
    Ok(repos::get(&mut st.store.read().await?, p.id, name).await?)
}

/// The merging user as git writes them.
pub fn identity(ctx: &Ctx) -> Identity {
    let name = ctx
        .principal
        .as_ref()
        .map(|p| p.user.name.clone())
        .unwrap_or_else(|| "ouro".into());
    Identity {
        email: format!("{name}@users.ouro"),
        name,
    }
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<ChangeRequest>>> {
    let repo = repo_of(&st, &ctx, &name).await?;
    let state = q
        .state
        .as_deref()
        .filter(|s| matches!(*s, "open" | "merged" | "closed"));
    let draft = match q.draft.as_deref() {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(ouro_core::OuroError::field("draft", "draft is `true` or `false`").into());
        }
    };
    let filter = ListFilter {
        state: state.map(str::to_string),
        label: q.label,
        author: q.author,
        reviewer: q.reviewer,
        draft,
    };
    Ok(Json(
        cr_meta::list(&mut st.store.read().await?, repo.id, &filter).await?,
    ))
}

async fn edit(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    Json(body): Json<CrPatch>,
) -> ApiResult<Json<ChangeRequest>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        cr_meta::update(&st.store, &repo, &p.slug, &ctx.actor(), number, &body).await?,
    ))
}

async fn add_label(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number, label)): Path<(String, String, i64, String)>,
) -> ApiResult<Json<ChangeRequest>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        cr_meta::add_label(&st.store, &repo, &p.slug, &ctx.actor(), number, &label).await?,
    ))
}

async fn remove_label(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number, label)): Path<(String, String, i64, String)>,
) -> ApiResult<Json<ChangeRequest>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        cr_meta::remove_label(&st.store, &repo, &p.slug, &ctx.actor(), number, &label).await?,
    ))
}

async fn open(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<NewChangeRequest>,
) -> ApiResult<impl IntoResponse> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    let c = cr::open(
        &st.store,
        &repos_root(&st),
        &repo,
        &p.slug,
        &ctx.actor(),
        &body,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// The view of one change request (after bringing it up to date with its source branch).
pub async fn view(st: &AppState, slug: &str, repo: &Repo, number: i64) -> ApiResult<CrView> {
    let root = repos_root(st);
    // Only this change request's branches matter here.
    let c = cr::get(&mut st.store.read().await?, repo.id, number).await?;
    let branches = [c.source, c.target].into_iter().collect();
    cr::refresh_branches(&st.store, &root, repo, slug, &branches).await?;
    let mut conn = st.store.read().await?;
    let c = cr::get(&mut conn, repo.id, number).await?;
    let reviews = cr::reviews(&mut conn, c.id).await?;
    let statuses = cr::statuses(&mut conn, repo.id, &c.head).await?;
    drop(conn);
    let gate = cr::gate(&st.store, &root, repo, &c).await?;
    let threads = ouro_code::cr_comments::threads_checked(&st.store, &root, repo, &c).await?;
    Ok(CrView {
        cr: c,
        reviews,
        statuses,
        gate,
        threads,
    })
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
) -> ApiResult<Json<CrView>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(view(&st, &p.slug, &repo, number).await?))
}

async fn review(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    Json(body): Json<NewReview>,
) -> ApiResult<impl IntoResponse> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    let r = cr::review(&st.store, &repo, &p.slug, &ctx.actor(), number, &body).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

async fn merge(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ChangeRequest>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    // The body is optional (`curl -X POST .../merge` merges with the defaults).
    let opts: MergeOptions = if body.iter().all(u8::is_ascii_whitespace) {
        MergeOptions::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ouro_core::OuroError::new(
                ouro_core::ErrorCode::MalformedJson,
                format!("the body is not valid merge options: {e}"),
            )
        })?
    };
    let merged = cr::merge(
        &st.store,
        &repos_root(&st),
        &repo,
        &p.slug,
        &ctx.actor(),
        &identity(&ctx),
        number,
        &opts,
    )
    .await?;
    Ok(Json(merged))
}

async fn close(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
) -> ApiResult<Json<ChangeRequest>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        cr::set_open(&st.store, &repo, &p.slug, &ctx.actor(), number, false).await?,
    ))
}

async fn reopen(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, number)): Path<(String, String, i64)>,
) -> ApiResult<Json<ChangeRequest>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        cr::set_open(&st.store, &repo, &p.slug, &ctx.actor(), number, true).await?,
    ))
}

async fn post_status(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, sha)): Path<(String, String, String)>,
    Json(body): Json<NewStatus>,
) -> ApiResult<impl IntoResponse> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    let s = cr::post_status(
        &st.store,
        &repos_root(&st),
        &repo,
        &p.slug,
        &ctx.actor(),
        &sha,
        &body,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(s)))
}

async fn list_statuses(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, sha)): Path<(String, String, String)>,
) -> ApiResult<Json<Vec<CommitStatus>>> {
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        cr::statuses(&mut st.store.read().await?, repo.id, &sha).await?,
    ))
}

async fn get_rules(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<MergeRules>> {
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(cr::rules(&mut st.store.read().await?, repo.id).await?))
}

async fn put_rules(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
    Json(body): Json<MergeRules>,
) -> ApiResult<Json<MergeRules>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        cr::set_rules(&st.store, &repo, &p.slug, &ctx.actor(), &body).await?,
    ))
}

async fn list_branch_rules(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<BranchMergeRules>>> {
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        branch_rules::list(&mut st.store.read().await?, repo.id).await?,
    ))
}

async fn put_branch_rules(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, pattern)): Path<(String, String, String)>,
    Json(body): Json<MergeRules>,
) -> ApiResult<Json<BranchMergeRules>> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    Ok(Json(
        branch_rules::set(&st.store, &repo, &p.slug, &ctx.actor(), &pattern, &body).await?,
    ))
}

async fn delete_branch_rules(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((_, name, pattern)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let p = ctx.project()?;
    let repo = repo_of(&st, &ctx, &name).await?;
    branch_rules::delete(&st.store, &repo, &p.slug, &ctx.actor(), &pattern).await?;
    Ok(StatusCode::NO_CONTENT)
}
