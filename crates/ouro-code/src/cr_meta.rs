//! What people say about a change request besides its code: labels, requested reviewers, the
//! title and description, and the draft flag; plus the list filters that use them.
//!
//! Every edit goes through [`update`]: one transaction, optimistic concurrency on the change
//! request's `version`, one `cr.updated` event carrying the new title and description (so Plan's
//! links follow the text) and one `cr.review_requested` per newly requested reviewer (Plan's
//! notifier tells them).

use std::collections::BTreeSet;

use ouro_core::events as ev;
use ouro_core::{Actor, OuroError, Role};
use ouro_store::{Executor, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cr::{self, ChangeRequest, MAX_DESCRIPTION, MAX_TITLE};
use crate::repos::Repo;

/// The longest label, in characters.
pub const MAX_LABEL: usize = 50;
/// At most this many labels and this many requested reviewers per change request.
pub const MAX_LABELS: usize = 50;
pub const MAX_REVIEWERS: usize = 20;

/// A requested reviewer and where their review stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RequestedReviewer {
    pub user: String,
    /// `pending`, `approved` or `changes_requested` (from their latest review that was not
    /// dismissed).
    pub state: String,
}

/// Editing a change request: every field is optional; `labels` and `reviewers` are full sets
/// (what is not listed is removed).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrPatch {
    #[serde(default)]
    pub title: Option<String>,
    /// Markdown.
    #[serde(default)]
    pub description: Option<String>,
    /// `false` marks a draft ready for review; `true` converts it back to a draft.
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// User names.
    #[serde(default)]
    pub reviewers: Option<Vec<String>>,
    /// The version you read; if the change request changed since, the edit is refused with 409.
    #[serde(default)]
    pub version: Option<i64>,
}

/// List filters; all given ones must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct ListFilter {
    /// `open`, `merged` or `closed`.
    #[serde(default)]
    pub state: Option<String>,
    /// Has this label.
    #[serde(default)]
    pub label: Option<String>,
    /// Opened by this user.
    #[serde(default)]
    pub author: Option<String>,
    /// This user is a requested reviewer.
    #[serde(default)]
    pub reviewer: Option<String>,
    #[serde(default)]
    pub draft: Option<bool>,
}

enum P {
    T(String),
    B(bool),
}

/// A repository's change requests matching `filter`, newest first, with labels and reviewers.
pub async fn list(
    ex: &mut impl Executor,
    repo_id: i64,
    filter: &ListFilter,
) -> Result<Vec<ChangeRequest>, StoreError> {
    let mut sql = format!("{} WHERE c.repo_id = $1", cr::select_sql());
    let mut params = Vec::new();
    let next = |params: &mut Vec<P>, p: P| {
        params.push(p);
        format!("${}", params.len() + 1)
    };
    if let Some(s) = filter.state.as_deref().filter(|s| !s.is_empty()) {
        let n = next(&mut params, P::T(s.to_string()));
        sql.push_str(&format!(" AND c.state = {n}"));
    }
    if let Some(l) = filter
        .label
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let n = next(&mut params, P::T(l.to_string()));
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM code_cr_labels l WHERE l.cr_id = c.id AND l.name = {n})"
        ));
    }
    if let Some(a) = filter
        .author
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let n = next(&mut params, P::T(a.to_string()));
        sql.push_str(&format!(" AND a.name = {n}"));
    }
    if let Some(r) = filter
        .reviewer
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let n = next(&mut params, P::T(r.to_string()));
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM code_cr_reviewers r JOIN users ru ON ru.id = r.user_id \
             WHERE r.cr_id = c.id AND ru.name = {n})"
        ));
    }
    if let Some(d) = filter.draft {
        let n = next(&mut params, P::B(d));
        sql.push_str(&format!(" AND c.draft = {n}"));
    }
    sql.push_str(" ORDER BY c.number DESC");
    let mut query = q(sql).bind(repo_id);
    for p in params {
        query = match p {
            P::T(t) => query.bind(t),
            P::B(b) => query.bind(b),
        };
    }
    let rows = query.fetch_all(&mut *ex).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut c = cr::row_to_cr(r)?;
        fill(&mut *ex, &mut c).await?;
        out.push(c);
    }
    Ok(out)
}

/// Loads the labels and requested reviewers of `cr`.
pub async fn fill(ex: &mut impl Executor, cr: &mut ChangeRequest) -> Result<(), StoreError> {
    cr.labels = q("SELECT name FROM code_cr_labels WHERE cr_id = $1 ORDER BY name")
        .bind(cr.id)
        .fetch_all(&mut *ex)
        .await?
        .iter()
        .map(|r| r.text("name"))
        .collect::<Result<_, _>>()?;
    cr.reviewers = q(
        "SELECT u.name, (SELECT v.verdict FROM code_cr_reviews v WHERE v.cr_id = r.cr_id \
           AND v.reviewer_id = r.user_id AND v.dismissed = FALSE ORDER BY v.id DESC LIMIT 1) \
           AS verdict \
         FROM code_cr_reviewers r JOIN users u ON u.id = r.user_id WHERE r.cr_id = $1 \
         ORDER BY u.name",
    )
    .bind(cr.id)
    .fetch_all(&mut *ex)
    .await?
    .iter()
    .map(|r| {
        let state = match r.opt_text("verdict")?.as_deref() {
            Some("approve") => "approved",
            Some("request_changes") => "changes_requested",
            _ => "pending",
        };
        Ok(RequestedReviewer {
            user: r.text("name")?,
            state: state.into(),
        })
    })
    .collect::<Result<_, StoreError>>()?;
    Ok(())
}

/// Validates one label: trimmed, 1 to 50 characters, no control characters.
pub fn clean_label(label: &str) -> Result<String, OuroError> {
    let l = label.trim();
    if l.is_empty() || l.chars().count() > MAX_LABEL || l.chars().any(char::is_control) {
        return Err(OuroError::field(
            "labels",
            format!(
                "{l:?} is not a valid label: labels are 1 to {MAX_LABEL} characters without control characters"
            ),
        ));
    }
    Ok(l.to_string())
}

/// Validates, trims, sorts and deduplicates labels.
pub fn clean_labels(labels: &[String]) -> Result<Vec<String>, OuroError> {
    let set: BTreeSet<String> = labels
        .iter()
        .map(|l| clean_label(l))
        .collect::<Result<_, _>>()?;
    if set.len() > MAX_LABELS {
        return Err(OuroError::field(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    Ok(set.into_iter().collect())
}

/// Replaces the labels of change request `cr_id`.
pub async fn write_labels(
    ex: &mut impl Executor,
    cr_id: i64,
    labels: &[String],
) -> Result<(), StoreError> {
    q("DELETE FROM code_cr_labels WHERE cr_id = $1")
        .bind(cr_id)
        .execute(&mut *ex)
        .await?;
    for l in labels {
        q("INSERT INTO code_cr_labels (cr_id, name) VALUES ($1, $2)")
            .bind(cr_id)
            .bind(l.as_str())
            .execute(&mut *ex)
            .await?;
    }
    Ok(())
}

/// Resolves a reviewer name: a project member with at least the developer role, not the author.
async fn reviewer_id(
    ex: &mut impl Executor,
    project_id: i64,
    author_id: Option<i64>,
    name: &str,
) -> Result<i64, StoreError> {
    let row = q(
        "SELECT u.id, m.role FROM users u JOIN members m ON m.user_id = u.id AND m.project_id = $1 \
         WHERE u.name = $2 AND u.disabled = FALSE",
    )
    .bind(project_id)
    .bind(name)
    .fetch_optional(&mut *ex)
    .await?;
    let Some(row) = row else {
        return Err(OuroError::field(
            "reviewers",
            format!("{name:?} is not a member of this project"),
        )
        .into());
    };
    let role = Role::parse(&row.text("role")?).unwrap_or(Role::Viewer);
    if role < Role::Developer {
        return Err(OuroError::field(
            "reviewers",
            format!(
                "{name} is a {}: reviewers need at least the developer role",
                role.as_str()
            ),
        )
        .into());
    }
    let id = row.i64("id")?;
    if Some(id) == author_id {
        return Err(OuroError::field(
            "reviewers",
            format!("{name} opened this change request and cannot review it"),
        )
        .into());
    }
    Ok(id)
}

/// Makes `names` the requested reviewers of change request `cr_id`; returns the names that
/// were newly requested (sorted), for `cr.review_requested` events.
pub async fn write_reviewers(
    ex: &mut impl Executor,
    repo: &Repo,
    cr_id: i64,
    author_id: Option<i64>,
    requested_by: Option<i64>,
    names: &[String],
) -> Result<Vec<String>, StoreError> {
    let wanted: BTreeSet<&str> = names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .collect();
    if wanted.len() > MAX_REVIEWERS {
        return Err(
            OuroError::field("reviewers", format!("at most {MAX_REVIEWERS} reviewers")).into(),
        );
    }
    let mut ids = Vec::new();
    for name in &wanted {
        ids.push((
            *name,
            reviewer_id(&mut *ex, repo.project_id, author_id, name).await?,
        ));
    }
    let current: Vec<i64> = q("SELECT user_id FROM code_cr_reviewers WHERE cr_id = $1")
        .bind(cr_id)
        .fetch_all(&mut *ex)
        .await?
        .iter()
        .map(|r| r.i64("user_id"))
        .collect::<Result<_, _>>()?;
    for old in &current {
        if !ids.iter().any(|(_, id)| id == old) {
            q("DELETE FROM code_cr_reviewers WHERE cr_id = $1 AND user_id = $2")
                .bind(cr_id)
                .bind(*old)
                .execute(&mut *ex)
                .await?;
        }
    }
    let now = ouro_core::time::now_ms();
    let mut added = Vec::new();
    for (name, id) in ids {
        if current.contains(&id) {
            continue;
        }
        q(
            "INSERT INTO code_cr_reviewers (cr_id, user_id, requested_by, created_at) \
           VALUES ($1, $2, $3, $4)",
        )
        .bind(cr_id)
        .bind(id)
        .bind(requested_by)
        .bind(now)
        .execute(&mut *ex)
        .await?;
        added.push(name.to_string());
    }
    Ok(added)
}

/// Edits a change request (see [`CrPatch`]). A stale `version` gets 409
/// `conflict.stale_version`; a draft flag can change only while the change request is open.
pub async fn update(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    number: i64,
    patch: &CrPatch,
) -> Result<ChangeRequest, StoreError> {
    let mut tx = store.begin().await?;
    let cur = cr::get(&mut tx, repo.id, number).await?;
    if let Some(v) = patch.version
        && v != cur.version
    {
        return Err(OuroError::stale_version("change request", cur.version).into());
    }
    let title = match &patch.title {
        Some(t) => {
            let t = t.trim();
            if t.is_empty() || t.chars().count() > MAX_TITLE {
                return Err(
                    OuroError::field("title", "the title must be 1 to 200 characters").into(),
                );
            }
            t.to_string()
        }
        None => cur.title.clone(),
    };
    let description = match &patch.description {
        Some(d) if d.len() > MAX_DESCRIPTION => {
            return Err(
                OuroError::field("description", "the description is longer than 64 KiB").into(),
            );
        }
        Some(d) => d.clone(),
        None => cur.description.clone(),
    };
    let draft = patch.draft.unwrap_or(cur.draft);
    if draft != cur.draft && cur.state != "open" {
        return Err(OuroError::field(
            "draft",
            format!("change request !{number} is {}", cur.state),
        )
        .into());
    }
    let labels = match &patch.labels {
        Some(l) => Some(clean_labels(l)?),
        None => None,
    };
    let mut changed: Vec<&str> = Vec::new();
    if title != cur.title {
        changed.push("title");
    }
    if description != cur.description {
        changed.push("description");
    }
    if draft != cur.draft {
        changed.push("draft");
    }
    let now = ouro_core::time::now_ms();
    let n = q(
        "UPDATE code_change_requests SET title = $1, description = $2, draft = $3, \
         updated_at = $4, version = version + 1 WHERE id = $5 AND version = $6",
    )
    .bind(title.as_str())
    .bind(description.as_str())
    .bind(draft)
    .bind(now)
    .bind(cur.id)
    .bind(cur.version)
    .execute(&mut tx)
    .await?;
    if n != 1 {
        return Err(OuroError::stale_version("change request", cur.version + 1).into());
    }
    if let Some(labels) = &labels
        && *labels != cur.labels
    {
        write_labels(&mut tx, cur.id, labels).await?;
        changed.push("labels");
    }
    let mut added = Vec::new();
    if let Some(names) = &patch.reviewers {
        let author_id = q("SELECT author_id FROM code_change_requests WHERE id = $1")
            .bind(cur.id)
            .fetch_one(&mut tx)
            .await?
            .opt_i64("author_id")?;
        added = write_reviewers(&mut tx, repo, cur.id, author_id, actor.user_id(), names).await?;
        let before: Vec<&str> = cur.reviewers.iter().map(|r| r.user.as_str()).collect();
        let mut after: Vec<String> = names
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        after.sort();
        after.dedup();
        if after != before {
            changed.push("reviewers");
        }
    }
    let updated = cr::get(&mut tx, repo.id, number).await?;
    let mut extra = json!({
        "description": updated.description,
        "draft": updated.draft,
        "labels": updated.labels,
        "reviewers": updated.reviewers.iter().map(|r| r.user.as_str()).collect::<Vec<_>>(),
        "changed": changed,
    });
    if changed.contains(&"draft") {
        extra["ready"] = json!(!updated.draft);
    }
    if changed.contains(&"title") {
        extra["old_title"] = json!(cur.title);
    }
    tx.append(cr::event(
        ev::CR_UPDATED,
        actor,
        repo,
        slug,
        &updated,
        extra,
    ))
    .await?;
    for reviewer in &added {
        tx.append(cr::event(
            ev::CR_REVIEW_REQUESTED,
            actor,
            repo,
            slug,
            &updated,
            json!({"reviewer": reviewer}),
        ))
        .await?;
    }
    tx.commit().await?;
    Ok(updated)
}

/// Adds one label (no version needed; adding one it has already changes nothing).
pub async fn add_label(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    number: i64,
    label: &str,
) -> Result<ChangeRequest, StoreError> {
    let label = clean_label(label)?;
    let cur = cr::get(&mut store.read().await?, repo.id, number).await?;
    if cur.labels.contains(&label) {
        return Ok(cur);
    }
    let mut labels = cur.labels.clone();
    labels.push(label);
    let patch = CrPatch {
        labels: Some(labels),
        version: Some(cur.version),
        ..Default::default()
    };
    update(store, repo, slug, actor, number, &patch).await
}

/// Removes one label (removing one it does not have changes nothing).
pub async fn remove_label(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    number: i64,
    label: &str,
) -> Result<ChangeRequest, StoreError> {
    let cur = cr::get(&mut store.read().await?, repo.id, number).await?;
    let label = label.trim();
    if !cur.labels.iter().any(|l| l == label) {
        return Ok(cur);
    }
    let labels: Vec<String> = cur.labels.iter().filter(|l| *l != label).cloned().collect();
    let patch = CrPatch {
        labels: Some(labels),
        version: Some(cur.version),
        ..Default::default()
    };
    update(store, repo, slug, actor, number, &patch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_trimmed_sorted_deduplicated_and_validated() {
        let got = clean_labels(&["  bug".into(), "area/ui".into(), "bug ".into()]).unwrap();
        assert_eq!(got, vec!["area/ui".to_string(), "bug".to_string()]);
        assert!(clean_labels(&["".into()]).is_err());
        assert!(clean_labels(&["a\u{7}b".into()]).is_err());
        assert!(clean_labels(&["x".repeat(51)]).is_err());
        assert!(clean_labels(&["é".repeat(50)]).is_ok());
        let e = clean_label("bad\nlabel").unwrap_err();
        assert_eq!(e.code, ouro_core::ErrorCode::ValidationFailed);
    }
}
