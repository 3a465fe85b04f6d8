//! In-app notifications: who should hear about a change to an item.
//!
//! The `plan-notifications` consumer reads the ledger and writes `plan_notifications` rows:
//!
//! - `assigned`: an item was created with, or changed to, a user as assignee;
//! - `mentioned`: a comment, or a new or changed description, names `@user` (project members
//!   and instance admins only; a description mention counts only when it is new);
//! - `state_changed` / `commented`: an item the user watches was transitioned or commented on.
//!
//! The actor never hears about their own change. Each (user, event, kind) is written at most
//! once, so a redelivered event adds nothing; a user mentioned in a comment does not also get
//! `commented` for it.

use ouro_core::events as ev;
use ouro_core::{ErrorCode, Event, OuroError};
use ouro_store::projects::Project;
use ouro_store::{Executor, Page, PageReq, Row, Store, StoreError, q};
use schemars::JsonSchema;
use serde::Serialize;

use crate::items;

pub const CONSUMER: &str = "plan-notifications";

pub const ASSIGNED: &str = "assigned";
pub const MENTIONED: &str = "mentioned";
pub const STATE_CHANGED: &str = "state_changed";
pub const COMMENTED: &str = "commented";
/// Change requests (Code): the author hears about reviews, merges and refused merges by others.
pub const CR_REVIEWED: &str = "cr_reviewed";
pub const CR_MERGED: &str = "cr_merged";
pub const CR_MERGE_REFUSED: &str = "cr_merge_refused";
/// A comment on a change request the user opened or commented in (mentions are `mentioned`).
pub const CR_COMMENTED: &str = "cr_commented";
/// A user was asked to review a change request.
pub const CR_REVIEW_REQUESTED: &str = "cr_review_requested";

/// One notification of the signed-in user.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Notification {
    pub id: i64,
    /// `assigned`, `mentioned`, `state_changed` or `commented`.
    pub kind: String,
    /// The project's slug.
    pub project: String,
    /// The item's key, e.g. `DEMO-42`.
    pub item: String,
    /// The item's current title, or null when it was deleted since.
    pub title: Option<String>,
    /// Who caused it, e.g. `user:alice`.
    pub actor: String,
    /// The ledger event it comes from.
    pub event_seq: i64,
    pub read: bool,
    #[serde(with = "ouro_core::time::serde_ms")]
    #[schemars(with = "String")]
    pub created_at: i64,
}

impl Notification {
    /// A short sentence for lists: "user:alice assigned you DEMO-3".
    pub fn summary(&self) -> String {
        let who = self.actor.strip_prefix("user:").unwrap_or(&self.actor);
        let what = match self.kind.as_str() {
            ASSIGNED => "assigned you",
            MENTIONED => "mentioned you on",
            STATE_CHANGED => "changed the state of",
            COMMENTED => "commented on",
            CR_REVIEWED => "reviewed your change request",
            CR_MERGED => "merged your change request",
            CR_MERGE_REFUSED => "could not merge your change request",
            CR_COMMENTED => "commented on change request",
            CR_REVIEW_REQUESTED => "asked for your review on",
            _ => "changed",
        };
        format!("{who} {what} {}", self.item)
    }

    /// Where the notification points: the item, or the change request (`item` is then
    /// `repo!number`).
    pub fn url(&self) -> String {
        match self.item.split_once('!') {
            Some((repo, number)) => format!(
                "/projects/{}/code/{repo}/change-requests/{number}",
                self.project
            ),
            None => format!("/projects/{}/plan/items/{}", self.project, self.item),
        }
    }
}

fn not_found(id: i64) -> OuroError {
    OuroError::new(
        ErrorCode::NotificationNotFound,
        format!("notification {id} does not exist"),
    )
}

fn from_row(r: &Row) -> Result<Notification, StoreError> {
    Ok(Notification {
        id: r.i64("id")?,
        kind: r.text("kind")?,
        project: r.text("slug")?,
        item: r.text("item_key")?,
        title: r.opt_text("title")?,
        actor: r.text("actor")?,
        event_seq: r.i64("event_seq")?,
        read: r.opt_i64("read_at")?.is_some(),
        created_at: r.i64("created_at")?,
    })
}

const SELECT: &str = "SELECT n.*, p.slug, i.title FROM plan_notifications n \
     JOIN projects p ON p.id = n.project_id \
     LEFT JOIN items i ON i.project_id = n.project_id AND i.key = n.item_key";

/// The user's notifications, newest first; the cursor is the last id seen.
pub async fn list(
    ex: &mut impl Executor,
    user_id: i64,
    unread_only: bool,
    page: PageReq,
) -> Result<Page<Notification>, StoreError> {
    let unread = if unread_only {
        " AND n.read_at IS NULL"
    } else {
        ""
    };
    let before = if page.after > 0 { page.after } else { i64::MAX };
    let rows = q(format!(
        "{SELECT} WHERE n.user_id = $1 AND n.id < $2{unread} ORDER BY n.id DESC LIMIT $3"
    ))
    .bind(user_id)
    .bind(before)
    .bind(page.limit + 1)
    .fetch_all(ex)
    .await?;
    let items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(page.finish(items, |n| n.id))
}

/// How many unread notifications the user has (one indexed count).
pub async fn unread_count(ex: &mut impl Executor, user_id: i64) -> Result<i64, StoreError> {
    q("SELECT COUNT(*) AS n FROM plan_notifications WHERE user_id = $1 AND read_at IS NULL")
        .bind(user_id)
        .fetch_one(ex)
        .await?
        .i64("n")
}

/// Marks one of the user's notifications read; someone else's is `notification.not_found`.
pub async fn mark_read(store: &Store, user_id: i64, id: i64) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let found = q("SELECT id FROM plan_notifications WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .fetch_optional(&mut tx)
        .await?;
    if found.is_none() {
        return Err(not_found(id).into());
    }
    q("UPDATE plan_notifications SET read_at = $1 WHERE id = $2 AND read_at IS NULL")
        .bind(ouro_core::time::now_ms())
        .bind(id)
        .execute(&mut tx)
        .await?;
    tx.commit().await
}

/// Marks all of the user's notifications read; returns how many were unread.
pub async fn mark_all_read(store: &Store, user_id: i64) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    let n = q("UPDATE plan_notifications SET read_at = $1 WHERE user_id = $2 AND read_at IS NULL")
        .bind(ouro_core::time::now_ms())
        .bind(user_id)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// The ledger consumer that writes notifications.
pub struct Notifier;

impl ouro_store::consumers::Consumer for Notifier {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    fn handle<'a>(
        &'a self,
        store: &'a Store,
        event: &'a Event,
    ) -> ouro_store::consumers::BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move { notify(store, event).await.map_err(OuroError::from) })
    }
}

/// A user who may be notified in the project: a member or an instance admin, not disabled.
async fn recipient(
    ex: &mut impl Executor,
    project_id: i64,
    name: &str,
) -> Result<Option<i64>, StoreError> {
    q(
        "SELECT u.id FROM users u WHERE u.name = $1 AND u.disabled = FALSE AND (u.is_admin = TRUE \
       OR EXISTS (SELECT 1 FROM members m WHERE m.project_id = $2 AND m.user_id = u.id))",
    )
    .bind(name)
    .bind(project_id)
    .fetch_optional(ex)
    .await?
    .map(|r| r.i64("id"))
    .transpose()
}

async fn watchers(ex: &mut impl Executor, item_id: i64) -> Result<Vec<i64>, StoreError> {
    q(
        "SELECT w.user_id FROM item_watchers w JOIN users u ON u.id = w.user_id \
       WHERE w.item_id = $1 AND u.disabled = FALSE ORDER BY w.user_id",
    )
    .bind(item_id)
    .fetch_all(ex)
    .await?
    .iter()
    .map(|r| r.i64("user_id"))
    .collect()
}

fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// A change request's author is told about reviews, merges and refused merges that others did.
async fn notify_cr(store: &Store, e: &Event) -> Result<(), StoreError> {
    if e.kind == ev::CR_COMMENTED.name {
        return notify_cr_comment(store, e).await;
    }
    let kind = match e.kind.as_str() {
        k if k == ev::CR_REVIEWED.name => CR_REVIEWED,
        k if k == ev::CR_MERGED.name => CR_MERGED,
        k if k == ev::CR_MERGE_REFUSED.name => CR_MERGE_REFUSED,
        k if k == ev::CR_REVIEW_REQUESTED.name => CR_REVIEW_REQUESTED,
        _ => return Ok(()),
    };
    let p = &e.payload;
    // Who hears: the requested reviewer, or else the author.
    let to = if kind == CR_REVIEW_REQUESTED {
        str_at(p, &["reviewer"])
    } else {
        str_at(p, &["author"])
    };
    let (Some(slug), Some(author), Some(repo), Some(number)) = (
        e.project.as_deref(),
        to,
        str_at(p, &["repo"]),
        p.get("number").and_then(|n| n.as_i64()),
    ) else {
        return Ok(());
    };
    if e.actor.strip_prefix("user:") == Some(author) {
        return Ok(());
    }
    let mut c = store.read().await?;
    let Some(project) = ouro_store::projects::by_slug(&mut c, slug).await? else {
        return Ok(());
    };
    let Some(uid) = recipient(&mut c, project.id, author).await? else {
        return Ok(());
    };
    drop(c);
    write(
        store,
        &project,
        &format!("{repo}!{number}"),
        e,
        &[(uid, kind)],
    )
    .await
}

/// A comment on a change request: people `@mentioned` in it hear `mentioned`; the author of the
/// change request and earlier participants of the thread (`payload.participants`) hear
/// `cr_commented`. Never the commenter.
async fn notify_cr_comment(store: &Store, e: &Event) -> Result<(), StoreError> {
    let p = &e.payload;
    let (Some(slug), Some(repo), Some(number)) = (
        e.project.as_deref(),
        str_at(p, &["repo"]),
        p.get("number").and_then(|n| n.as_i64()),
    ) else {
        return Ok(());
    };
    let actor = e.actor.strip_prefix("user:");
    let mut c = store.read().await?;
    let Some(project) = ouro_store::projects::by_slug(&mut c, slug).await? else {
        return Ok(());
    };
    let mut out: Vec<(i64, &'static str)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mentioned = crate::markdown::mentions(str_at(p, &["body"]).unwrap_or(""));
    let mut others: Vec<String> = str_at(p, &["author"])
        .map(str::to_string)
        .into_iter()
        .collect();
    if let Some(list) = p.get("participants").and_then(|v| v.as_array()) {
        others.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    let all = mentioned
        .iter()
        .map(|n| (n, MENTIONED))
        .chain(others.iter().map(|n| (n, CR_COMMENTED)));
    for (name, kind) in all {
        if Some(name.as_str()) == actor || seen.contains(name) {
            continue;
        }
        seen.push(name.clone());
        if let Some(uid) = recipient(&mut c, project.id, name).await? {
            out.push((uid, kind));
        }
    }
    drop(c);
    if out.is_empty() {
        return Ok(());
    }
    write(store, &project, &format!("{repo}!{number}"), e, &out).await
}

async fn notify(store: &Store, e: &Event) -> Result<(), StoreError> {
    if e.kind.starts_with("cr.") {
        return notify_cr(store, e).await;
    }
    let kinds = [
        ev::ITEM_CREATED.name,
        ev::ITEM_UPDATED.name,
        ev::ITEM_TRANSITIONED.name,
        ev::ITEM_COMMENTED.name,
    ];
    if !kinds.contains(&e.kind.as_str()) {
        return Ok(());
    }
    let (Some(slug), Some(key)) = (e.project.as_deref(), str_at(&e.payload, &["key"])) else {
        return Ok(());
    };
    let mut c = store.read().await?;
    let Some(project) = ouro_store::projects::by_slug(&mut c, slug).await? else {
        return Ok(());
    };
    let Some(item) = items::get(&mut c, project.id, key).await? else {
        return Ok(()); // deleted since: nothing to point at
    };
    let actor_name = e.actor.strip_prefix("user:");
    // (user id, kind), each user once per kind.
    let mut out: Vec<(i64, &'static str)> = Vec::new();
    let add = |uid: i64, kind: &'static str, out: &mut Vec<(i64, &'static str)>| {
        if !out.contains(&(uid, kind)) {
            out.push((uid, kind));
        }
    };
    let mut mentioned: Vec<String> = Vec::new();
    let p = &e.payload;
    let mut assignee: Option<&str> = None;
    if e.kind == ev::ITEM_CREATED.name {
        assignee = str_at(p, &["assignee"]);
        match p.get("mentions").and_then(|m| m.as_array()) {
            Some(names) => {
                mentioned = names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect();
            }
            // Events written before the payload named the mentions: the item's description is
            // the created one only while the item is unchanged.
            None if item.version == 1 => {
                mentioned = crate::markdown::mentions(&item.description);
            }
            None => {}
        }
    } else if e.kind == ev::ITEM_UPDATED.name {
        assignee = str_at(p, &["changes", "assignee", "new"]);
        if let Some(new) = str_at(p, &["changes", "description", "new"]) {
            let old = crate::markdown::mentions(
                str_at(p, &["changes", "description", "old"]).unwrap_or(""),
            );
            mentioned = crate::markdown::mentions(new)
                .into_iter()
                .filter(|m| !old.contains(m))
                .collect();
        }
    } else if e.kind == ev::ITEM_COMMENTED.name {
        mentioned = crate::markdown::mentions(str_at(p, &["body"]).unwrap_or(""));
    }
    if let Some(a) = assignee
        && Some(a) != actor_name
        && let Some(uid) = recipient(&mut c, project.id, a).await?
    {
        add(uid, ASSIGNED, &mut out);
    }
    let mut mentioned_ids = Vec::new();
    for m in &mentioned {
        if Some(m.as_str()) == actor_name {
            continue;
        }
        if let Some(uid) = recipient(&mut c, project.id, m).await? {
            mentioned_ids.push(uid);
            add(uid, MENTIONED, &mut out);
        }
    }
    let watch_kind = if e.kind == ev::ITEM_TRANSITIONED.name {
        Some(STATE_CHANGED)
    } else if e.kind == ev::ITEM_COMMENTED.name {
        Some(COMMENTED)
    } else {
        None
    };
    if let Some(kind) = watch_kind {
        let actor_id = match actor_name {
            Some(n) => ouro_store::accounts::user_by_name(&mut c, n)
                .await?
                .map(|u| u.id),
            None => None,
        };
        for uid in watchers(&mut c, item.id).await? {
            if Some(uid) != actor_id && !mentioned_ids.contains(&uid) {
                add(uid, kind, &mut out);
            }
        }
    }
    drop(c);
    if out.is_empty() {
        return Ok(());
    }
    write(store, &project, &item.key, e, &out).await
}

async fn write(
    store: &Store,
    project: &Project,
    key: &str,
    e: &Event,
    out: &[(i64, &'static str)],
) -> Result<(), StoreError> {
    let now = ouro_core::time::now_ms();
    let mut tx = store.begin().await?;
    for (uid, kind) in out {
        q("INSERT INTO plan_notifications (user_id, project_id, item_key, kind, actor, event_seq, \
           created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING")
        .bind(*uid)
        .bind(project.id)
        .bind(key)
        .bind(*kind)
        .bind(e.actor.as_str())
        .bind(e.seq)
        .bind(now)
        .execute(&mut tx)
        .await?;
    }
    tx.commit().await
}
