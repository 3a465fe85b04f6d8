//! Comments on change requests. Every comment belongs to a thread (`code_cr_threads`): a thread
//! is about the whole change request, or anchored on one line of its diff (path, side `old` or
//! `new`, line number, and the head commit it was written on). A reply (`reply_to` names any
//! comment of a thread) joins that thread. Threads are resolved and unresolved by developers;
//! the merge gate can require all of them to be resolved (`MergeRules::require_resolved_threads`).
//!
//! A line thread keeps the line's text from when it was written; once a later push changes that
//! line (or takes it out of the diff) the thread is *outdated*: it is kept and still listed, but
//! no longer shown under a line of the diff.

use std::collections::BTreeMap;
use std::path::Path;

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_store::{Executor, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::browse;
use crate::cr::{self, ChangeRequest};
use crate::diff::{self, DiffOptions, LineKind};
use crate::repos::Repo;

/// The longest comment body, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// One comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Comment {
    pub id: i64,
    pub thread_id: i64,
    /// Null when the author's account was deleted.
    pub author: Option<String>,
    /// Markdown.
    pub body: String,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub edited_at: Option<i64>,
}

/// Where a line thread points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Anchor {
    pub path: String,
    /// `old` (a removed or context line, numbered in the target) or `new` (an added or context
    /// line, numbered in the source).
    pub side: String,
    pub line: u32,
    /// The change request's head commit when the thread was started.
    pub commit: String,
}

/// A thread: its comments oldest first, where it points and whether it is resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Thread {
    pub id: i64,
    /// Null for a comment on the whole change request.
    pub anchor: Option<Anchor>,
    /// The anchored line changed (or left the diff) in a later push.
    pub outdated: bool,
    pub resolved: bool,
    pub resolved_by: Option<String>,
    #[serde(with = "ouro_core::time::serde_ms_opt")]
    #[schemars(with = "Option<String>")]
    pub resolved_at: Option<i64>,
    pub comments: Vec<Comment>,
    #[serde(skip)]
    pub line_text: Option<String>,
}

/// A new comment: on the whole change request, on a diff line (`path`, `side`, `line`), or a
/// reply to a comment (`reply_to`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    /// Markdown, 1 byte to 64 KiB.
    pub body: String,
    /// The file of a line comment (its new path; the old one for a deleted file).
    #[serde(default)]
    pub path: Option<String>,
    /// `old` or `new` (default `new`).
    #[serde(default)]
    pub side: Option<String>,
    /// The line number on that side; the line must be in the change request's diff.
    #[serde(default)]
    pub line: Option<u32>,
    /// Reply in the thread of this comment.
    #[serde(default)]
    pub reply_to: Option<i64>,
}

/// A new body for a comment.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentEdit {
    pub body: String,
}

fn comment_not_found(id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::CommentNotFound,
        format!("comment {id} does not exist on this change request"),
    )
}

fn thread_not_found(id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::ThreadNotFound,
        format!("thread {id} does not exist on this change request"),
    )
}

fn validate_body(body: &str) -> Result<String, OuroError> {
    let b = body.trim_end();
    if b.trim().is_empty() {
        return Err(OuroError::field("body", "the comment is empty"));
    }
    if b.len() > MAX_BODY {
        return Err(OuroError::field(
            "body",
            "the comment is longer than 64 KiB",
        ));
    }
    Ok(b.to_string())
}

fn comment_of(r: &Row) -> Result<Comment, StoreError> {
    Ok(Comment {
        id: r.i64("id")?,
        thread_id: r.i64("thread_id")?,
        author: r.opt_text("author_name")?,
        body: r.text("body")?,
        created_at: r.i64("created_at")?,
        edited_at: r.opt_i64("edited_at")?,
    })
}

const COMMENT_SELECT: &str = "SELECT c.*, u.name AS author_name FROM code_cr_comments c \
     LEFT JOIN users u ON u.id = c.author_id";

async fn comment(ex: &mut impl Executor, cr_id: i64, id: i64) -> Result<Comment, StoreError> {
    q(format!("{COMMENT_SELECT} WHERE c.id = $1 AND c.cr_id = $2"))
        .bind(id)
        .bind(cr_id)
        .fetch_optional(ex)
        .await?
        .as_ref()
        .map(comment_of)
        .transpose()?
        .ok_or_else(|| comment_not_found(id).into())
}

/// Every thread of a change request with its comments, oldest first (`outdated` is not
/// computed here: see [`threads_checked`]).
pub async fn threads(ex: &mut impl Executor, cr_id: i64) -> Result<Vec<Thread>, StoreError> {
    let rows = q("SELECT t.*, u.name AS resolver FROM code_cr_threads t \
         LEFT JOIN users u ON u.id = t.resolved_by WHERE t.cr_id = $1 ORDER BY t.id")
    .bind(cr_id)
    .fetch_all(&mut *ex)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let anchor = match (
            r.opt_text("path")?,
            r.opt_text("side")?,
            r.opt_i64("line")?,
            r.opt_text("commit_id")?,
        ) {
            (Some(path), Some(side), Some(line), Some(commit)) => Some(Anchor {
                path,
                side,
                line: u32::try_from(line).unwrap_or(0),
                commit,
            }),
            _ => None,
        };
        out.push(Thread {
            id: r.i64("id")?,
            anchor,
            outdated: false,
            resolved: r.bool("resolved")?,
            resolved_by: r.opt_text("resolver")?,
            resolved_at: r.opt_i64("resolved_at")?,
            comments: Vec::new(),
            line_text: r.opt_text("line_text")?,
        });
    }
    let comments = q(format!("{COMMENT_SELECT} WHERE c.cr_id = $1 ORDER BY c.id"))
        .bind(cr_id)
        .fetch_all(ex)
        .await?;
    for r in &comments {
        let c = comment_of(r)?;
        if let Some(t) = out.iter_mut().find(|t| t.id == c.thread_id) {
            t.comments.push(c);
        }
    }
    out.retain(|t| !t.comments.is_empty());
    Ok(out)
}

/// How many threads of a change request are unresolved (what the `threads` gate condition counts).
pub async fn unresolved(ex: &mut impl Executor, cr_id: i64) -> Result<i64, StoreError> {
    q(
        "SELECT COUNT(*) AS n FROM code_cr_threads t WHERE t.cr_id = $1 AND t.resolved = FALSE \
       AND EXISTS (SELECT 1 FROM code_cr_comments c WHERE c.thread_id = t.id)",
    )
    .bind(cr_id)
    .fetch_one(ex)
    .await?
    .i64("n")
}

/// The base the change request's diff starts from: the merge base of its target and head.
pub async fn diff_base(dir: &Path, cr: &ChangeRequest) -> Result<Option<String>, OuroError> {
    browse::merge_base(dir, &format!("refs/heads/{}", cr.target), &cr.head).await
}

/// The text of a line of the change request's diff (`side` `old` or `new`), or `None` when the
/// diff does not show that line.
pub async fn line_in_diff(
    dir: &Path,
    base: &str,
    head: &str,
    path: &str,
    side: &str,
    line: u32,
) -> Result<Option<String>, OuroError> {
    let f = match diff::file(dir, base, head, path, &DiffOptions::default()).await {
        Ok(f) => f,
        Err(e) if e.code == ErrorCode::PathNotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(f.hunks
        .iter()
        .flat_map(|h| h.lines.iter())
        .find(|l| match side {
            "old" => l.kind != LineKind::Add && l.old == Some(line),
            _ => l.kind != LineKind::Del && l.new == Some(line),
        })
        .map(|l| l.text.clone()))
}

/// [`threads`] with `outdated` computed against the change request's diff as it is now.
pub async fn threads_checked(
    store: &Store,
    root: &Path,
    repo: &Repo,
    cr: &ChangeRequest,
) -> Result<Vec<Thread>, StoreError> {
    let mut list = threads(&mut store.read().await?, cr.id).await?;
    if cr.state == "merged" || list.iter().all(|t| t.anchor.is_none()) {
        return Ok(list);
    }
    let dir = repo.dir(root);
    let base = diff_base(&dir, cr).await?;
    let mut cache: BTreeMap<(String, String, u32), Option<String>> = BTreeMap::new();
    for t in list.iter_mut() {
        let Some(a) = &t.anchor else { continue };
        if a.commit == cr.head {
            continue;
        }
        let key = (a.path.clone(), a.side.clone(), a.line);
        let now = match cache.get(&key) {
            Some(v) => v.clone(),
            None => {
                let v = match &base {
                    Some(base) => {
                        line_in_diff(&dir, base, &cr.head, &a.path, &a.side, a.line).await?
                    }
                    None => None,
                };
                cache.insert(key, v.clone());
                v
            }
        };
        t.outdated = now.is_none() || now != t.line_text;
    }
    Ok(list)
}

/// Adds a comment: a new thread (on the change request, or on a diff line) or a reply.
pub async fn add(
    store: &Store,
    root: &Path,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    number: i64,
    new: &NewComment,
) -> Result<Comment, StoreError> {
    let Some(user) = actor.user_id() else {
        return Err(OuroError::new(ErrorCode::Forbidden, "comments need a signed-in user").into());
    };
    let body = validate_body(&new.body)?;
    let c = cr::get(&mut store.read().await?, repo.id, number).await?;
    let anchored = new.path.is_some() || new.line.is_some() || new.side.is_some();
    // (path, side, line, text) of a line comment, checked against the diff as it is now.
    let mut anchor: Option<(String, String, u32, String)> = None;
    if anchored {
        if new.reply_to.is_some() {
            return Err(OuroError::field(
                "reply_to",
                "a reply joins its thread's line: give either reply_to or path and line",
            )
            .into());
        }
        let Some(path) = new.path.as_deref().filter(|p| !p.trim().is_empty()) else {
            return Err(OuroError::field("path", "a line comment needs the file's path").into());
        };
        let path = browse::validate_path(path)?;
        let side = new.side.as_deref().unwrap_or("new");
        if side != "old" && side != "new" {
            return Err(OuroError::field("side", "the side is `old` or `new`").into());
        }
        let Some(line) = new.line.filter(|l| *l > 0) else {
            return Err(
                OuroError::field("line", "a line comment needs a line number (1 or more)").into(),
            );
        };
        let dir = repo.dir(root);
        let outside = || {
            OuroError::field(
                "line",
                format!("line {line} ({side}) of {path} is not in the change request's diff"),
            )
        };
        if c.state == "merged" {
            return Err(outside().into());
        }
        let Some(base) = diff_base(&dir, &c).await? else {
            return Err(outside().into());
        };
        let f = diff::file(&dir, &base, &c.head, &path, &DiffOptions::default()).await;
        if let Err(e) = &f
            && e.code == ErrorCode::PathNotFound
        {
            return Err(OuroError::field(
                "path",
                format!("{path} is not changed by this change request"),
            )
            .into());
        }
        let Some(text) = line_in_diff(&dir, &base, &c.head, &path, side, line).await? else {
            return Err(outside().into());
        };
        anchor = Some((path, side.to_string(), line, text));
    }
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    let (thread_id, participants) = match new.reply_to {
        Some(to) => {
            let parent = comment(&mut tx, c.id, to).await.map_err(|e| match e {
                StoreError::Domain(o) if o.code == ErrorCode::CommentNotFound => {
                    StoreError::Domain(OuroError::field(
                        "reply_to",
                        format!("comment {to} does not exist on this change request"),
                    ))
                }
                other => other,
            })?;
            let names: Vec<String> = q(
                "SELECT DISTINCT u.name FROM code_cr_comments c JOIN users u ON u.id = c.author_id \
                 WHERE c.thread_id = $1 AND c.author_id <> $2 ORDER BY u.name",
            )
            .bind(parent.thread_id)
            .bind(user)
            .fetch_all(&mut tx)
            .await?
            .iter()
            .map(|r| r.text("name"))
            .collect::<Result<_, _>>()?;
            (parent.thread_id, names)
        }
        None => {
            let (path, side, line, text) = match &anchor {
                Some((p, s, l, t)) => (
                    Some(p.as_str()),
                    Some(s.as_str()),
                    Some(i64::from(*l)),
                    Some(t.as_str()),
                ),
                None => (None, None, None, None),
            };
            let id = q(
                "INSERT INTO code_cr_threads (cr_id, path, side, line, commit_id, line_text, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(c.id)
            .bind(path)
            .bind(side)
            .bind(line)
            .bind(anchor.as_ref().map(|_| c.head.as_str()))
            .bind(text)
            .bind(now)
            .fetch_one(&mut tx)
            .await?
            .i64("id")?;
            (id, Vec::new())
        }
    };
    let id = q(
        "INSERT INTO code_cr_comments (thread_id, cr_id, author_id, body, created_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(thread_id)
    .bind(c.id)
    .bind(user)
    .bind(body.as_str())
    .bind(now)
    .fetch_one(&mut tx)
    .await?
    .i64("id")?;
    // The thread's anchor, for the event (a reply repeats its thread's).
    let anchor_json = q("SELECT path, side, line, commit_id FROM code_cr_threads WHERE id = $1")
        .bind(thread_id)
        .fetch_one(&mut tx)
        .await
        .and_then(|r| {
            Ok(match r.opt_text("path")? {
                Some(path) => json!({"path": path, "side": r.opt_text("side")?,
                                     "line": r.opt_i64("line")?, "commit": r.opt_text("commit_id")?}),
                None => serde_json::Value::Null,
            })
        })?;
    tx.append(cr::event(
        ev::CR_COMMENTED,
        actor,
        repo,
        slug,
        &c,
        json!({"comment_id": id, "thread_id": thread_id, "reply": new.reply_to.is_some(),
               "anchor": anchor_json, "body": body, "participants": participants}),
    ))
    .await?;
    let out = comment(&mut tx, c.id, id).await?;
    tx.commit().await?;
    Ok(out)
}

/// Changes the body of a comment; only its author may.
pub async fn edit(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    number: i64,
    id: i64,
    edit: &CommentEdit,
) -> Result<Comment, StoreError> {
    let body = validate_body(&edit.body)?;
    let mut tx = store.begin().await?;
    let c = cr::get(&mut tx, repo.id, number).await?;
    let old = comment(&mut tx, c.id, id).await?;
    let author_id = q("SELECT author_id FROM code_cr_comments WHERE id = $1")
        .bind(id)
        .fetch_one(&mut tx)
        .await?
        .opt_i64("author_id")?;
    if author_id.is_none() || author_id != actor.user_id() {
        return Err(
            OuroError::new(ErrorCode::Forbidden, "only the author can edit a comment").into(),
        );
    }
    if old.body == body {
        return Ok(old);
    }
    q("UPDATE code_cr_comments SET body = $1, edited_at = $2 WHERE id = $3")
        .bind(body.as_str())
        .bind(ouro_core::time::now_ms())
        .bind(id)
        .execute(&mut tx)
        .await?;
    tx.append(cr::event(
        ev::CR_COMMENT_CHANGED,
        actor,
        repo,
        slug,
        &c,
        json!({"action": "edited", "comment_id": id, "thread_id": old.thread_id, "body": body}),
    ))
    .await?;
    let out = comment(&mut tx, c.id, id).await?;
    tx.commit().await?;
    Ok(out)
}

/// Deletes a comment: its author may, and so may maintainers (`moderator`). A thread left
/// without comments goes with its last one.
pub async fn delete(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    number: i64,
    id: i64,
    moderator: bool,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let c = cr::get(&mut tx, repo.id, number).await?;
    let old = comment(&mut tx, c.id, id).await?;
    let author_id = q("SELECT author_id FROM code_cr_comments WHERE id = $1")
        .bind(id)
        .fetch_one(&mut tx)
        .await?
        .opt_i64("author_id")?;
    let own = author_id.is_some() && author_id == actor.user_id();
    if !own && !moderator {
        return Err(OuroError::new(
            ErrorCode::Forbidden,
            "only the author or a maintainer can delete a comment",
        )
        .into());
    }
    q("DELETE FROM code_cr_comments WHERE id = $1")
        .bind(id)
        .execute(&mut tx)
        .await?;
    let left = q("SELECT COUNT(*) AS n FROM code_cr_comments WHERE thread_id = $1")
        .bind(old.thread_id)
        .fetch_one(&mut tx)
        .await?
        .i64("n")?;
    if left == 0 {
        q("DELETE FROM code_cr_threads WHERE id = $1")
            .bind(old.thread_id)
            .execute(&mut tx)
            .await?;
    }
    tx.append(cr::event(
        ev::CR_COMMENT_CHANGED,
        actor,
        repo,
        slug,
        &c,
        json!({"action": "deleted", "comment_id": id, "thread_id": old.thread_id,
               "thread_deleted": left == 0}),
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Resolves (`resolved = true`) or unresolves a thread. Doing what is already so changes
/// nothing and records nothing.
pub async fn set_resolved(
    store: &Store,
    repo: &Repo,
    slug: &str,
    actor: &Actor,
    number: i64,
    thread_id: i64,
    resolved: bool,
) -> Result<Thread, StoreError> {
    let mut tx = store.begin().await?;
    let c = cr::get(&mut tx, repo.id, number).await?;
    let Some(row) = q("SELECT resolved FROM code_cr_threads WHERE id = $1 AND cr_id = $2")
        .bind(thread_id)
        .bind(c.id)
        .fetch_optional(&mut tx)
        .await?
    else {
        return Err(thread_not_found(thread_id).into());
    };
    if row.bool("resolved")? != resolved {
        let now = ouro_core::time::now_ms();
        q("UPDATE code_cr_threads SET resolved = $1, resolved_by = $2, resolved_at = $3 WHERE id = $4")
            .bind(resolved)
            .bind(if resolved { actor.user_id() } else { None })
            .bind(if resolved { Some(now) } else { None })
            .bind(thread_id)
            .execute(&mut tx)
            .await?;
        tx.append(cr::event(
            ev::CR_THREAD_RESOLVED,
            actor,
            repo,
            slug,
            &c,
            json!({"thread_id": thread_id, "resolved": resolved}),
        ))
        .await?;
    }
    let t = threads(&mut tx, c.id)
        .await?
        .into_iter()
        .find(|t| t.id == thread_id)
        .ok_or_else(|| thread_not_found(thread_id))?;
    tx.commit().await?;
    Ok(t)
}
