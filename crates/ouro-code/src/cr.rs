//! Change requests: a source branch proposed into a target branch of the same repository, the
//! reviews it got, the statuses of its head commit, and the merge gate that decides whether Ouro
//! may merge it. Ouro merges itself, as the merging user: `git merge-tree --write-tree` (no
//! worktree; conflicts are found without touching anything), `git commit-tree`, then a
//! compare-and-swap `git update-ref` of the target under the repository's push lock, so a server
//! killed mid-merge leaves the target either as it was or merged, never half-merged.

use std::path::Path;

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::{Executor, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::git::{self, GitError};
use crate::repos::Repo;

pub const MAX_TITLE: usize = 200;
pub const MAX_DESCRIPTION: usize = 64 * 1024;

/// A change request as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ChangeRequest {
    #[serde(skip)]
    pub id: i64,
    #[serde(skip)]
    pub repo_id: i64,
    /// Per repository, never reused.
    pub number: i64,
    pub title: String,
    /// Markdown.
    pub description: String,
    pub source: String,
    pub target: String,
    /// `open`, `merged` or `closed`.
    pub state: String,
    pub draft: bool,
    pub author: Option<String>,
    /// The source branch's commit when the change request last saw it.
    pub head: String,
    pub merge_commit: Option<String>,
    pub merged_by: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub merged_at: Option<i64>,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub updated_at: i64,
    /// Send it back with an edit; a stale version gets 409.
    pub version: i64,
    /// Free-form labels, sorted.
    pub labels: Vec<String>,
    /// Requested reviewers with the state of their latest review, by name.
    pub reviewers: Vec<crate::cr_meta::RequestedReviewer>,
}

/// Opening a change request.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChangeRequest {
    /// The branch with the change.
    pub source: String,
    /// The branch it should go into.
    pub target: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// A draft cannot be merged until it is marked ready.
    #[serde(default)]
    pub draft: bool,
    /// Labels (1 to 50 characters each).
    #[serde(default)]
    pub labels: Vec<String>,
    /// User names asked to review (project members with at least the developer role, not the
    /// author); each is notified.
    #[serde(default)]
    pub reviewers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    RequestChanges,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::RequestChanges => "request_changes",
        }
    }
}

/// Submitting a review.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReview {
    pub verdict: Verdict,
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Review {
    pub reviewer: String,
    /// `approve` or `request_changes`.
    pub verdict: String,
    pub body: String,
    /// The head commit the review was given on.
    pub head: String,
    /// Dismissed by new commits (when the merge rules say so).
    pub dismissed: bool,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

/// A status posted for a commit (by a person, a tool or a pipeline).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStatus {
    /// The check's name, e.g. `ci/build` (1 to 100 characters); a newer status of the same name
    /// replaces the visible one.
    pub name: String,
    pub state: StatusState,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct CommitStatus {
    pub sha: String,
    pub name: String,
    /// `pending`, `success`, `failure` or `error`.
    pub state: String,
    pub url: Option<String>,
    pub description: Option<String>,
    pub creator: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MergeMethod {
    /// A merge commit with both parents.
    Merge,
    /// One commit with the whole change on top of the target.
    Squash,
    /// Move the target to the source's head; refused when the target has moved on.
    FastForward,
}

impl MergeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMethod::Merge => "merge",
            MergeMethod::Squash => "squash",
            MergeMethod::FastForward => "fast_forward",
        }
    }

    fn parse(s: &str) -> MergeMethod {
        match s {
            "squash" => MergeMethod::Squash,
            "fast_forward" => MergeMethod::FastForward,
            _ => MergeMethod::Merge,
        }
    }
}

/// A repository's merge gate and method (they apply to every target branch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRules {
    pub merge_method: MergeMethod,
    /// Approvals needed from people other than the author (0 to 20).
    pub required_approvals: u32,
    /// Status names that must be `success` on the head commit.
    #[serde(default)]
    pub required_checks: Vec<String>,
    /// New commits on the source dismiss earlier approvals.
    #[serde(default)]
    pub dismiss_stale_approvals: bool,
    /// Every comment thread must be resolved before merging (gate condition `threads`).
    #[serde(default)]
    pub require_resolved_threads: bool,
}

impl Default for MergeRules {
    fn default() -> Self {
        MergeRules {
            merge_method: MergeMethod::Merge,
            required_approvals: 1,
            required_checks: Vec::new(),
            dismiss_stale_approvals: true,
            require_resolved_threads: false,
        }
    }
}

/// One condition of the merge gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Condition {
    /// Stable: `open`, `draft`, `approvals`, `changes_requested`, `checks`, `threads` (only
    /// when the rules require resolved threads), `conflicts`, `fast_forward`, `source`.
    pub id: String,
    pub met: bool,
    pub message: String,
}

/// Whether the change request may merge now, and why (every condition, met or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Gate {
    pub mergeable: bool,
    pub merge_method: MergeMethod,
    /// The target-branch pattern whose merge rules applied; `null`: the repository default
    /// (see [`crate::branch_rules`]).
    pub rules_pattern: Option<String>,
    pub conditions: Vec<Condition>,
}

fn cr_not_found(number: i64) -> OuroError {
    OuroError::new(
        ErrorCode::CrNotFound,
        format!("change request !{number} does not exist in this repository"),
    )
}

fn git_failed(e: &GitError) -> OuroError {
    OuroError::new(ErrorCode::GitFailed, "a git command failed on the server")
        .with_details(json!({"git": e.to_string()}))
}

const SELECT: &str = "SELECT c.*, a.name AS author_name, m.name AS merged_by_name \
    FROM code_change_requests c LEFT JOIN users a ON a.id = c.author_id \
    LEFT JOIN users m ON m.id = c.merged_by";

fn from_row(r: &Row) -> Result<ChangeRequest, StoreError> {
    Ok(ChangeRequest {
        id: r.i64("id")?,
        repo_id: r.i64("repo_id")?,
        number: r.i64("number")?,
        title: r.text("title")?,
        description: r.text("description")?,
        source: r.text("source")?,
        target: r.text("target")?,
        state: r.text("state")?,
        draft: r.bool("draft")?,
        author: r.opt_text("author_name")?,
        head: r.text("head_id")?,
        merge_commit: r.opt_text("merge_commit")?,
        merged_by: r.opt_text("merged_by_name")?,
        merged_at: r.opt_i64("merged_at")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
        version: r.i64("version")?,
        labels: Vec::new(),
        reviewers: Vec::new(),
    })
}

fn validate_branch_name(field: &str, name: &str) -> Result<(), OuroError> {
    let ok = !name.is_empty()
        && name.len() <= 250
        && !name.starts_with('-')
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name
            .chars()
            .any(|c| c.is_control() || " ~^:?*[\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(OuroError::field(
            field,
            format!("{name:?} is not a valid branch name"),
        ))
    }
}

/// A repository's change requests, newest first; `state` filters (`open`, `merged`, `closed`).
/// More filters (label, author, reviewer, draft): [`crate::cr_meta::list`].
pub async fn list(
    ex: &mut impl Executor,
    repo_id: i64,
    state: Option<&str>,
) -> Result<Vec<ChangeRequest>, StoreError> {
    let filter = crate::cr_meta::ListFilter {
        state: state.map(str::to_string),
        ..Default::default()
    };
    crate::cr_meta::list(ex, repo_id, &filter).await
}

/// The shared SELECT of change requests (joined with author and merger names), for filters.
pub(crate) fn select_sql() -> &'static str {
    SELECT
}

pub(crate) fn row_to_cr(r: &Row) -> Result<ChangeRequest, StoreError> {
    from_row(r)
}

/// One change request by number.
pub async fn get(
    ex: &mut impl Executor,
    repo_id: i64,
    number: i64,
) -> Result<ChangeRequest, StoreError> {
    let mut cr = q(format!("{SELECT} WHERE c.repo_id = $1 AND c.number = $2"))
        .bind(repo_id)
        .bind(number)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| StoreError::from(cr_not_found(number)))?;
    crate::cr_meta::fill(ex, &mut cr).await?;
    Ok(cr)
}

pub(crate) fn event(
    kind: ouro_core::EventKind,
    actor: &Actor,
    repo: &Repo,
    slug: &str,
    cr: &ChangeRequest,
    extra: serde_json::Value,
) -> NewEvent {
    let mut payload = json!({
        "repo": repo.name,
        "number": cr.number,
        "title": cr.title,
        "source": cr.source,
        "target": cr.target,
        "head": cr.head,
        "state": cr.state,
        "author": cr.author,
        "url": format!("/projects/{slug}/code/{}/change-requests/{}", repo.name, cr.number),
    });
    if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    NewEvent::new(kind, actor, cr.id, payload).in_project(repo.project_id, slug)
}

/// Opens a change request from `source` into `target` (both existing branches, different).
pub async fn open(
    store: &Store,
    root: &Path,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    new: &NewChangeRequest,
) -> Result<ChangeRequest, StoreError> {
    let title = new.title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE {
        return Err(OuroError::field("title", "the title must be 1 to 200 characters").into());
    }
    let description = new.description.clone().unwrap_or_default();
    if description.len() > MAX_DESCRIPTION {
        return Err(
            OuroError::field("description", "the description is longer than 64 KiB").into(),
        );
    }
    validate_branch_name("source", &new.source)?;
    validate_branch_name("target", &new.target)?;
    if new.source == new.target {
        return Err(OuroError::field("target", "the target must differ from the source").into());
    }
    let dir = repo.dir(root);
    let refs = git::refs(&dir).await.map_err(|e| git_failed(&e))?;
    let branch_head = |b: &str| refs.get(&format!("refs/heads/{b}")).cloned();
    let head = branch_head(&new.source).ok_or_else(|| {
        OuroError::field(
            "source",
            format!("there is no branch {:?} in {}", new.source, repo.name),
        )
    })?;
    let Some(target_head) = branch_head(&new.target) else {
        return Err(OuroError::field(
            "target",
            format!("there is no branch {:?} in {}", new.target, repo.name),
        )
        .into());
    };
    if head == target_head || is_ancestor(&dir, &head, &target_head).await? {
        return Err(OuroError::field(
            "source",
            format!(
                "nothing to merge: every commit of {} is already in {}",
                new.source, new.target
            ),
        )
        .into());
    }
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let number =
        q("SELECT COALESCE(MAX(number), 0) + 1 AS n FROM code_change_requests WHERE repo_id = $1")
            .bind(repo.id)
            .fetch_one(&mut tx)
            .await?
            .i64("n")?;
    let id = q(
        "INSERT INTO code_change_requests (repo_id, number, title, description, source, target, \
         state, draft, author_id, head_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8, $9, $10, $10) RETURNING id",
    )
    .bind(repo.id)
    .bind(number)
    .bind(title)
    .bind(description.as_str())
    .bind(new.source.as_str())
    .bind(new.target.as_str())
    .bind(new.draft)
    .bind(actor.user_id())
    .bind(head.as_str())
    .bind(now)
    .fetch_one(&mut tx)
    .await?
    .i64("id")?;
    let labels = crate::cr_meta::clean_labels(&new.labels)?;
    crate::cr_meta::write_labels(&mut tx, id, &labels).await?;
    let author_id = actor.user_id();
    let added =
        crate::cr_meta::write_reviewers(&mut tx, repo, id, author_id, author_id, &new.reviewers)
            .await?;
    let cr = get(&mut tx, repo.id, number).await?;
    debug_assert_eq!(cr.id, id);
    tx.append(event(
        ev::CR_OPENED,
        actor,
        repo,
        slug,
        &cr,
        json!({"description": description, "draft": new.draft, "labels": cr.labels,
               "reviewers": added}),
    ))
    .await?;
    for reviewer in &added {
        tx.append(event(
            ev::CR_REVIEW_REQUESTED,
            actor,
            repo,
            slug,
            &cr,
            json!({"reviewer": reviewer}),
        ))
        .await?;
    }
    tx.commit().await?;
    Ok(cr)
}

/// Brings open change requests of `repo` up to date with their source branches: a moved source
/// gets the new head, stale approvals dismissed (when the rules say so) and `cr.updated`.
/// Every open change request is looked at; after a push use [`refresh_branches`].
pub async fn refresh(
    store: &Store,
    root: &Path,
    repo: &Repo,
    slug: &str,
) -> Result<usize, StoreError> {
    refresh_some(store, root, repo, slug, None).await
}

/// [`refresh`] limited to the open change requests whose source or target is one of
/// `branches` (short names, without `refs/heads/`): what a push that moved those branches can
/// have changed. Nothing else is read or written; without such change requests no git process
/// runs at all. The refs are read once (one `git for-each-ref`) for all of them.
pub async fn refresh_branches(
    store: &Store,
    root: &Path,
    repo: &Repo,
    slug: &str,
    branches: &std::collections::BTreeSet<String>,
) -> Result<usize, StoreError> {
    refresh_some(store, root, repo, slug, Some(branches)).await
}

async fn refresh_some(
    store: &Store,
    root: &Path,
    repo: &Repo,
    slug: &str,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Result<usize, StoreError> {
    let mut open = list(&mut store.read().await?, repo.id, Some("open")).await?;
    if let Some(only) = only {
        open.retain(|cr| only.contains(&cr.source) || only.contains(&cr.target));
    }
    if open.is_empty() {
        return Ok(0);
    }
    let dir = repo.dir(root);
    let refs = git::refs(&dir).await.map_err(|e| git_failed(&e))?;
    let landed = landed(store, &dir, repo, slug, &refs, &open).await?;
    let moved: Vec<(ChangeRequest, Option<String>)> = open
        .into_iter()
        .filter(|cr| !landed.contains(&cr.id))
        .filter_map(|cr| {
            let now = refs.get(&format!("refs/heads/{}", cr.source)).cloned();
            (now.as_deref() != Some(cr.head.as_str())).then_some((cr, now))
        })
        .collect();
    if moved.is_empty() {
        return Ok(0);
    }
    // The rule set of each target (per-branch patterns, else the repository default).
    let mut dismiss: std::collections::BTreeMap<String, bool> = Default::default();
    {
        let mut conn = store.read().await?;
        for (cr, _) in &moved {
            if !dismiss.contains_key(&cr.target) {
                let e = crate::branch_rules::effective(&mut conn, repo.id, &cr.target).await?;
                dismiss.insert(cr.target.clone(), e.rules.dismiss_stale_approvals);
            }
        }
    }
    let mut tx = store.begin().await?;
    let mut n = 0;
    for (cr, head) in moved {
        // A deleted source keeps the last head it had; the gate reports the missing branch.
        let Some(head) = head else { continue };
        let swapped = q(
            "UPDATE code_change_requests SET head_id = $1, updated_at = $2, version = version + 1 \
           WHERE id = $3 AND head_id = $4",
        )
        .bind(head.as_str())
        .bind(ouro_core::time::now_ms())
        .bind(cr.id)
        .bind(cr.head.as_str())
        .execute(&mut tx)
        .await?;
        // Another refresh (a page view racing the push's own) got there first: one event only.
        if swapped == 0 {
            continue;
        }
        let mut dismissed = 0;
        if dismiss.get(&cr.target).copied().unwrap_or(true) {
            dismissed = q("UPDATE code_cr_reviews SET dismissed = TRUE WHERE cr_id = $1 AND dismissed = FALSE \
                 AND verdict = 'approve'")
            .bind(cr.id)
            .execute(&mut tx)
            .await?;
        }
        let updated = get(&mut tx, repo.id, cr.number).await?;
        tx.append(event(
            ev::CR_UPDATED,
            &Actor::System("code"),
            repo,
            slug,
            &updated,
            json!({"old_head": cr.head, "approvals_dismissed": dismissed}),
        ))
        .await?;
        n += 1;
    }
    tx.commit().await?;
    Ok(n)
}

/// Marks merged the open change requests whose head is already in their target: merged by a
/// push, or by a merge whose ref moved before the server could record it (a crash between
/// `update-ref` and the database). Returns their ids.
async fn landed(
    store: &Store,
    dir: &Path,
    repo: &Repo,
    slug: &str,
    refs: &std::collections::BTreeMap<String, String>,
    open: &[ChangeRequest],
) -> Result<Vec<i64>, StoreError> {
    let mut done = Vec::new();
    for cr in open {
        let Some(target) = refs.get(&format!("refs/heads/{}", cr.target)) else {
            continue;
        };
        let in_target = target == &cr.head || is_ancestor(dir, &cr.head, target).await?;
        if !in_target {
            continue;
        }
        let now = ouro_core::time::now_ms();
        let mut tx = store.begin().await?;
        let n = q("UPDATE code_change_requests SET state = 'merged', merge_commit = $1, merged_at = $2,              updated_at = $2, version = version + 1 WHERE id = $3 AND state = 'open'")
        .bind(target.as_str())
        .bind(now)
        .bind(cr.id)
        .execute(&mut tx)
        .await?;
        if n == 1 {
            let merged = get(&mut tx, repo.id, cr.number).await?;
            tx.append(event(
                ev::CR_MERGED,
                &Actor::System("code"),
                repo,
                slug,
                &merged,
                json!({"merge_commit": target, "detected": true}),
            ))
            .await?;
        }
        tx.commit().await?;
        done.push(cr.id);
    }
    Ok(done)
}

/// The reviews of a change request, oldest first.
pub async fn reviews(ex: &mut impl Executor, cr_id: i64) -> Result<Vec<Review>, StoreError> {
    let rows = q("SELECT r.*, u.name AS reviewer_name FROM code_cr_reviews r JOIN users u ON u.id = r.reviewer_id \
         WHERE r.cr_id = $1 ORDER BY r.id")
    .bind(cr_id)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Review {
                reviewer: r.text("reviewer_name")?,
                verdict: r.text("verdict")?,
                body: r.text("body")?,
                head: r.text("head_id")?,
                dismissed: r.bool("dismissed")?,
                created_at: r.i64("created_at")?,
            })
        })
        .collect()
}

/// Submits a review. The author cannot approve their own change request.
pub async fn review(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    number: i64,
    new: &NewReview,
) -> Result<Review, StoreError> {
    let Some(user) = actor.user_id() else {
        return Err(OuroError::new(ErrorCode::Forbidden, "reviews need a signed-in user").into());
    };
    let body = new.body.clone().unwrap_or_default();
    if body.len() > MAX_DESCRIPTION {
        return Err(OuroError::field("body", "the review is longer than 64 KiB").into());
    }
    let mut tx = store.begin().await?;
    let cr = get(&mut tx, repo.id, number).await?;
    if cr.state != "open" {
        return Err(OuroError::field(
            "verdict",
            format!("change request !{number} is {}", cr.state),
        )
        .into());
    }
    let author_id = q("SELECT author_id FROM code_change_requests WHERE id = $1")
        .bind(cr.id)
        .fetch_one(&mut tx)
        .await?
        .opt_i64("author_id")?;
    if new.verdict == Verdict::Approve && author_id == Some(user) {
        return Err(OuroError::field(
            "verdict",
            "you opened this change request, so you cannot approve it; ask another member",
        )
        .into());
    }
    let now = ouro_core::time::now_ms();
    q(
        "INSERT INTO code_cr_reviews (cr_id, reviewer_id, verdict, body, head_id, created_at) \
       VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(cr.id)
    .bind(user)
    .bind(new.verdict.as_str())
    .bind(body.as_str())
    .bind(cr.head.as_str())
    .bind(now)
    .execute(&mut tx)
    .await?;
    tx.append(event(
        ev::CR_REVIEWED,
        actor,
        repo,
        slug,
        &cr,
        json!({"verdict": new.verdict.as_str(), "body": body}),
    ))
    .await?;
    tx.commit().await?;
    Ok(Review {
        reviewer: match actor {
            Actor::User { name, .. } => name.clone(),
            other => other.label(),
        },
        verdict: new.verdict.as_str().into(),
        body,
        head: cr.head,
        dismissed: false,
        created_at: now,
    })
}

fn valid_sha(sha: &str) -> bool {
    sha.len() == 40
        && sha
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Posts a status for a commit of the repository.
pub async fn post_status(
    store: &Store,
    root: &Path,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    sha: &str,
    new: &NewStatus,
) -> Result<CommitStatus, StoreError> {
    if !valid_sha(sha) {
        return Err(
            OuroError::field("sha", "a commit id is 40 lowercase hexadecimal digits").into(),
        );
    }
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(|c| c.is_control()) {
        return Err(
            OuroError::field("name", "the name must be 1 to 100 printable characters").into(),
        );
    }
    for (field, v, max) in [
        ("url", &new.url, 2000),
        ("description", &new.description, 1000),
    ] {
        if v.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(OuroError::field(field, format!("at most {max} characters")).into());
        }
    }
    if let Some(u) = &new.url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        return Err(OuroError::field("url", "the URL must start with https:// or http://").into());
    }
    let dir = repo.dir(root);
    let kind = git::run(&["-C", &dir.to_string_lossy(), "cat-file", "-t", sha]).await;
    if kind.map(|k| k.trim() != "commit").unwrap_or(true) {
        return Err(OuroError::new(
            ErrorCode::CommitNotFound,
            format!("there is no commit {sha} in {}", repo.name),
        )
        .into());
    }
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    q("INSERT INTO code_commit_statuses (repo_id, sha, name, state, url, description, creator_id, created_at) \
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
    .bind(repo.id)
    .bind(sha)
    .bind(name)
    .bind(new.state.as_str())
    .bind(new.url.clone())
    .bind(new.description.clone())
    .bind(actor.user_id())
    .bind(now)
    .execute(&mut tx)
    .await?;
    tx.append(
        NewEvent::new(
            ev::CODE_STATUS,
            actor,
            repo.id,
            json!({"repo": repo.name, "sha": sha, "name": name, "state": new.state.as_str(),
                   "url": new.url, "description": new.description}),
        )
        .in_project(repo.project_id, slug),
    )
    .await?;
    tx.commit().await?;
    Ok(CommitStatus {
        sha: sha.into(),
        name: name.into(),
        state: new.state.as_str().into(),
        url: new.url.clone(),
        description: new.description.clone(),
        creator: match actor {
            Actor::User { name, .. } => Some(name.clone()),
            _ => None,
        },
        created_at: now,
    })
}

/// The latest status per name of a commit, by name.
pub async fn statuses(
    ex: &mut impl Executor,
    repo_id: i64,
    sha: &str,
) -> Result<Vec<CommitStatus>, StoreError> {
    let rows = q("SELECT s.*, u.name AS creator_name FROM code_commit_statuses s \
         LEFT JOIN users u ON u.id = s.creator_id \
         WHERE s.repo_id = $1 AND s.sha = $2 AND s.id = (SELECT MAX(t.id) FROM code_commit_statuses t \
           WHERE t.repo_id = s.repo_id AND t.sha = s.sha AND t.name = s.name) ORDER BY s.name")
    .bind(repo_id)
    .bind(sha)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(CommitStatus {
                sha: r.text("sha")?,
                name: r.text("name")?,
                state: r.text("state")?,
                url: r.opt_text("url")?,
                description: r.opt_text("description")?,
                creator: r.opt_text("creator_name")?,
                created_at: r.i64("created_at")?,
            })
        })
        .collect()
}

/// A repository's merge rules (defaults when none were saved).
pub async fn rules(ex: &mut impl Executor, repo_id: i64) -> Result<MergeRules, StoreError> {
    let Some(r) = q("SELECT * FROM code_merge_rules WHERE repo_id = $1")
        .bind(repo_id)
        .fetch_optional(ex)
        .await?
    else {
        return Ok(MergeRules::default());
    };
    Ok(MergeRules {
        merge_method: MergeMethod::parse(&r.text("merge_method")?),
        required_approvals: r.i64("required_approvals")?.clamp(0, 20) as u32,
        required_checks: serde_json::from_str(&r.text("required_checks")?).unwrap_or_default(),
        dismiss_stale_approvals: r.bool("dismiss_stale_approvals")?,
        require_resolved_threads: r.bool("require_resolved_threads")?,
    })
}

/// Checks a rule set and returns it normalised (check names trimmed, sorted, deduplicated).
/// Shared by the repository default ([`set_rules`]) and the per-branch rule sets
/// ([`crate::branch_rules::set`]).
pub fn normalize_rules(new: &MergeRules) -> Result<MergeRules, OuroError> {
    if new.required_approvals > 20 {
        return Err(OuroError::field("required_approvals", "at most 20"));
    }
    let mut checks: Vec<String> = new
        .required_checks
        .iter()
        .map(|c| c.trim().to_string())
        .collect();
    if checks
        .iter()
        .any(|c| c.is_empty() || c.chars().count() > 100)
        || checks.len() > 50
    {
        return Err(OuroError::field(
            "required_checks",
            "up to 50 names of 1 to 100 characters",
        ));
    }
    checks.sort();
    checks.dedup();
    Ok(MergeRules {
        required_checks: checks,
        ..new.clone()
    })
}

/// Saves a repository's merge rules.
pub async fn set_rules(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    new: &MergeRules,
) -> Result<MergeRules, StoreError> {
    let rules = normalize_rules(new)?;
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    q("DELETE FROM code_merge_rules WHERE repo_id = $1")
        .bind(repo.id)
        .execute(&mut tx)
        .await?;
    q(
        "INSERT INTO code_merge_rules (repo_id, merge_method, required_approvals, required_checks, \
       dismiss_stale_approvals, require_resolved_threads, updated_at) \
       VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(repo.id)
    .bind(rules.merge_method.as_str())
    .bind(i64::from(rules.required_approvals))
    .bind(serde_json::to_string(&rules.required_checks).unwrap_or_else(|_| "[]".into()))
    .bind(rules.dismiss_stale_approvals)
    .bind(rules.require_resolved_threads)
    .bind(now)
    .execute(&mut tx)
    .await?;
    tx.append(
        NewEvent::new(
            ev::REPO_SETTINGS_CHANGED,
            actor,
            repo.id,
            json!({"repo": repo.name, "merge_rules": rules}),
        )
        .in_project(repo.project_id, slug),
    )
    .await?;
    tx.commit().await?;
    Ok(rules)
}

/// What a trial merge of `head` into `base` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trial {
    /// Merges cleanly into this tree.
    Clean(String),
    /// These paths conflict.
    Conflicts(Vec<String>),
    /// The branches share no history.
    Unrelated,
}

/// A trial merge with `git merge-tree --write-tree` (writes objects, touches no ref or worktree).
pub async fn trial_merge(dir: &Path, base: &str, head: &str) -> Result<Trial, OuroError> {
    let out = git::command(&[
        "-C",
        &dir.to_string_lossy(),
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        base,
        head,
    ])
    .output()
    .await
    .map_err(|e| OuroError::new(ErrorCode::GitFailed, format!("cannot run git: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => Ok(Trial::Clean(
            stdout.lines().next().unwrap_or("").trim().to_string(),
        )),
        Some(1) => Ok(Trial::Conflicts(
            stdout
                .lines()
                .skip(1)
                .map(|l| l.to_string())
                .filter(|l| !l.is_empty())
                .collect(),
        )),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("unrelated histories") {
                Ok(Trial::Unrelated)
            } else {
                Err(
                    OuroError::new(ErrorCode::GitFailed, "a trial merge failed on the server")
                        .with_details(json!({"git": err.trim()})),
                )
            }
        }
    }
}

async fn is_ancestor(dir: &Path, a: &str, b: &str) -> Result<bool, OuroError> {
    let st = git::command(&[
        "-C",
        &dir.to_string_lossy(),
        "merge-base",
        "--is-ancestor",
        a,
        b,
    ])
    .status()
    .await
    .map_err(|e| OuroError::new(ErrorCode::GitFailed, format!("cannot run git: {e}")))?;
    Ok(st.success())
}

fn cond(id: &str, met: bool, message: impl Into<String>) -> Condition {
    Condition {
        id: id.into(),
        met,
        message: message.into(),
    }
}

/// Evaluates the merge gate of a change request as it is now (after [`refresh`]).
pub async fn gate(
    store: &Store,
    root: &Path,
    repo: &Repo,
    cr: &ChangeRequest,
) -> Result<Gate, StoreError> {
    let mut conn = store.read().await?;
    let applied = crate::branch_rules::effective(&mut conn, repo.id, &cr.target).await?;
    let rules = applied.rules;
    let reviews = reviews(&mut conn, cr.id).await?;
    let statuses = statuses(&mut conn, repo.id, &cr.head).await?;
    let unresolved = if rules.require_resolved_threads {
        crate::cr_comments::unresolved(&mut conn, cr.id).await?
    } else {
        0
    };
    drop(conn);
    let dir = repo.dir(root);
    let mut c = Vec::new();
    c.push(cond(
        "open",
        cr.state == "open",
        if cr.state == "open" {
            "the change request is open".to_string()
        } else {
            format!("the change request is {}", cr.state)
        },
    ));
    c.push(cond(
        "draft",
        !cr.draft,
        if cr.draft {
            "it is a draft: mark it ready first"
        } else {
            "it is ready for review"
        },
    ));
    // The latest review of each reviewer counts; dismissed ones do not.
    let mut latest: std::collections::BTreeMap<&str, &Review> = Default::default();
    for r in reviews.iter().filter(|r| !r.dismissed) {
        latest.insert(r.reviewer.as_str(), r);
    }
    let approvals = latest
        .values()
        .filter(|r| r.verdict == "approve" && Some(r.reviewer.as_str()) != cr.author.as_deref())
        .count();
    let need = rules.required_approvals as usize;
    c.push(cond(
        "approvals",
        approvals >= need,
        format!("{approvals} of {need} required approval(s)"),
    ));
    let blocking: Vec<&str> = latest
        .values()
        .filter(|r| r.verdict == "request_changes")
        .map(|r| r.reviewer.as_str())
        .collect();
    c.push(cond(
        "changes_requested",
        blocking.is_empty(),
        if blocking.is_empty() {
            "no changes requested".to_string()
        } else {
            format!("changes requested by {}", blocking.join(", "))
        },
    ));
    let mut missing = Vec::new();
    for name in &rules.required_checks {
        match statuses.iter().find(|s| &s.name == name) {
            Some(s) if s.state == "success" => {}
            Some(s) => missing.push(format!("{name} is {}", s.state)),
            None => missing.push(format!("{name} has not reported")),
        }
    }
    c.push(cond(
        "checks",
        missing.is_empty(),
        if missing.is_empty() {
            format!(
                "{} required check(s) passed on {}",
                rules.required_checks.len(),
                short(&cr.head)
            )
        } else {
            format!(
                "required checks on {}: {}",
                short(&cr.head),
                missing.join("; ")
            )
        },
    ));
    if rules.require_resolved_threads {
        c.push(cond(
            "threads",
            unresolved == 0,
            match unresolved {
                0 => "every comment thread is resolved".to_string(),
                1 => "1 unresolved thread".to_string(),
                n => format!("{n} unresolved threads"),
            },
        ));
    }
    let refs = git::refs(&dir).await.map_err(|e| git_failed(&e))?;
    let source = refs.get(&format!("refs/heads/{}", cr.source));
    let target = refs.get(&format!("refs/heads/{}", cr.target));
    match (source, target) {
        (Some(_), Some(target)) => {
            match trial_merge(&dir, target, &cr.head).await? {
                Trial::Clean(_) => c.push(cond("conflicts", true, "no conflicts with the target")),
                Trial::Conflicts(paths) => c.push(cond(
                    "conflicts",
                    false,
                    format!("conflicts with {} in: {}", cr.target, paths.join(", ")),
                )),
                Trial::Unrelated => c.push(cond(
                    "conflicts",
                    false,
                    format!(
                        "{} and {} share no history (unrelated histories)",
                        cr.source, cr.target
                    ),
                )),
            }
            if rules.merge_method == MergeMethod::FastForward {
                let ff = is_ancestor(&dir, target, &cr.head).await?;
                c.push(cond(
                    "fast_forward",
                    ff,
                    if ff {
                        format!("{} can fast-forward", cr.target)
                    } else {
                        format!(
                            "{} has moved on: update {} from it first",
                            cr.target, cr.source
                        )
                    },
                ));
            }
        }
        _ => c.push(cond(
            "source",
            false,
            format!(
                "branch {} is gone",
                if source.is_none() {
                    &cr.source
                } else {
                    &cr.target
                }
            ),
        )),
    }
    Ok(Gate {
        mergeable: c.iter().all(|c| c.met),
        merge_method: rules.merge_method,
        rules_pattern: applied.pattern,
        conditions: c,
    })
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

fn blocked(gate: &Gate) -> OuroError {
    let unmet: Vec<&Condition> = gate.conditions.iter().filter(|c| !c.met).collect();
    let list = unmet
        .iter()
        .map(|c| c.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    OuroError::new(
        ErrorCode::MergeBlocked,
        format!("the merge gate is not passed: {list}"),
    )
    .with_details(json!({"conditions": unmet}))
}

/// Options of a merge.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeOptions {
    /// Delete the source branch after the merge.
    #[serde(default)]
    pub delete_source: bool,
}

/// The person Ouro writes into a merge commit.
pub struct Identity {
    pub name: String,
    pub email: String,
}

/// Merges a change request through its gate, as `who`. 409 `code.merge_blocked` lists every
/// unmet condition; the target moving during the merge is refused the same way.
#[allow(clippy::too_many_arguments)]
pub async fn merge(
    store: &Store,
    root: &Path,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    who: &Identity,
    number: i64,
    opts: &MergeOptions,
) -> Result<ChangeRequest, StoreError> {
    let dir = repo.dir(root);
    let lock = crate::push::lock(&dir);
    let _guard = lock.lock().await;
    let cr = get(&mut store.read().await?, repo.id, number).await?;
    let branches = [cr.source.clone(), cr.target.clone()].into_iter().collect();
    refresh_branches(store, root, repo, slug, &branches).await?;
    let cr = get(&mut store.read().await?, repo.id, number).await?;
    let g = gate(store, root, repo, &cr).await?;
    if !g.mergeable {
        // The refusal is recorded (the author is notified, webhooks see it), then returned.
        let unmet: Vec<&Condition> = g.conditions.iter().filter(|c| !c.met).collect();
        let mut tx = store.begin().await?;
        tx.append(event(
            ev::CR_MERGE_REFUSED,
            actor,
            repo,
            slug,
            &cr,
            json!({"conditions": unmet}),
        ))
        .await?;
        tx.commit().await?;
        return Err(blocked(&g).into());
    }
    let before = git::refs(&dir).await.map_err(|e| git_failed(&e))?;
    let target_ref = format!("refs/heads/{}", cr.target);
    let Some(old) = before.get(&target_ref).cloned() else {
        return Err(blocked(&g).into());
    };
    let d = dir.to_string_lossy().to_string();
    let new = match g.merge_method {
        MergeMethod::FastForward => cr.head.clone(),
        method => {
            let Trial::Clean(tree) = trial_merge(&dir, &old, &cr.head).await? else {
                return Err(blocked(&g).into());
            };
            let message = match method {
                MergeMethod::Squash => {
                    format!("{} (!{})\n\n{}", cr.title, cr.number, cr.description.trim())
                }
                _ => format!(
                    "Merge change request !{} from {} into {}\n\n{}",
                    cr.number, cr.source, cr.target, cr.title
                ),
            };
            let mut args = vec!["-C", &d, "commit-tree", &tree, "-p", &old];
            if method == MergeMethod::Merge {
                args.extend(["-p", &cr.head]);
            }
            args.extend(["-m", message.trim_end()]);
            let mut c = git::command(&args);
            c.env("GIT_AUTHOR_NAME", &who.name)
                .env("GIT_AUTHOR_EMAIL", &who.email)
                .env("GIT_COMMITTER_NAME", &who.name)
                .env("GIT_COMMITTER_EMAIL", &who.email);
            let out = c.output().await.map_err(|e| {
                OuroError::new(ErrorCode::GitFailed, format!("cannot run git: {e}"))
            })?;
            if !out.status.success() {
                return Err(OuroError::new(
                    ErrorCode::GitFailed,
                    "writing the merge commit failed",
                )
                .with_details(json!({"git": String::from_utf8_lossy(&out.stderr).trim()}))
                .into());
            }
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    // Compare-and-swap: the target moves only if it is still where the gate saw it.
    let msg = format!("ouro: merge !{} by {}", cr.number, who.name);
    let mut up = git::command(&["-C", &d, "update-ref", "-m", &msg, &target_ref, &new, &old]);
    up.env("GIT_COMMITTER_NAME", &who.name)
        .env("GIT_COMMITTER_EMAIL", &who.email);
    let st = up
        .output()
        .await
        .map_err(|e| OuroError::new(ErrorCode::GitFailed, format!("cannot run git: {e}")))?;
    if !st.status.success() {
        return Err(OuroError::new(
            ErrorCode::MergeBlocked,
            format!("{} moved while merging; look at the change request again", cr.target),
        )
        .with_details(json!({"conditions": [cond("target_moved", false, format!("{} moved during the merge", cr.target))]}))
        .into());
    }
    if opts.delete_source {
        let source_ref = format!("refs/heads/{}", cr.source);
        let mut del = git::command(&["-C", &d, "update-ref", "-d", &source_ref, &cr.head]);
        del.env("GIT_COMMITTER_NAME", &who.name)
            .env("GIT_COMMITTER_EMAIL", &who.email);
        let _ = del.output().await;
    }
    let after = git::refs(&dir).await.map_err(|e| git_failed(&e))?;
    crate::push::record(store, &dir, repo, slug, actor, &before, &after).await?;
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    q(
        "UPDATE code_change_requests SET state = 'merged', merge_commit = $1, merged_by = $2, \
       merged_at = $3, updated_at = $3, version = version + 1 WHERE id = $4",
    )
    .bind(new.as_str())
    .bind(actor.user_id())
    .bind(now)
    .bind(cr.id)
    .execute(&mut tx)
    .await?;
    let merged = get(&mut tx, repo.id, number).await?;
    tx.append(event(
        ev::CR_MERGED,
        actor,
        repo,
        slug,
        &merged,
        json!({"merge_commit": new, "method": g.merge_method.as_str(), "target_old": old,
               "source_deleted": opts.delete_source}),
    ))
    .await?;
    tx.commit().await?;
    Ok(merged)
}

/// Closes (`open = false`) or reopens a change request.
pub async fn set_open(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    number: i64,
    open: bool,
) -> Result<ChangeRequest, StoreError> {
    let mut tx = store.begin().await?;
    let cr = get(&mut tx, repo.id, number).await?;
    let (from, to) = if open {
        ("closed", "open")
    } else {
        ("open", "closed")
    };
    if cr.state != from {
        return Err(OuroError::new(
            ErrorCode::StaleVersion,
            format!("change request !{number} is {}, not {from}", cr.state),
        )
        .into());
    }
    let now = ouro_core::time::now_ms();
    q("UPDATE code_change_requests SET state = $1, closed_at = $2, updated_at = $3, version = version + 1 \
       WHERE id = $4")
    .bind(to)
    .bind(if open { None } else { Some(now) })
    .bind(now)
    .bind(cr.id)
    .execute(&mut tx)
    .await?;
    let cr = get(&mut tx, repo.id, number).await?;
    let kind = if open { ev::CR_UPDATED } else { ev::CR_CLOSED };
    tx.append(event(
        kind,
        actor,
        repo,
        slug,
        &cr,
        json!({"reopened": open}),
    ))
    .await?;
    tx.commit().await?;
    Ok(cr)
}
